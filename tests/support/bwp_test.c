/* bwp_test.c — loopback server harness and client-side request bookkeeping of bwp_test.h. */
#include "tests/support/bwp_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/support/gen_test.h"

struct dp_config test_srv_config(void)
{
    struct dp_config c = {
        .udp = "127.0.0.1:0", .tcp = "127.0.0.1:0", .queue_depth = 8, .max_prompt_bytes = 4096,
        .max_tokens = 512, .request_timeout_ms = 30000, .shutdown_grace_ms = 5000,
    };
    return c;
}

struct bwp_conn test_srv_conn(const struct test_srv *v, bool tcp)
{
    struct bwp_conn c;
    struct bora_err err;
    if (bwp_conn_open(&c, tcp ? v->tcp : v->udp, tcp, &err) < 0)
        fail_msg("connect to %s: %s", tcp ? v->tcp : v->udp, err.msg);
    return c;
}

void test_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* What the server thread reads and writes: its own heap block, not the test_srv (tests save and
 * restore SRV around a private server, and the thread may start after that memset) */
struct test_srv_run {
    struct dp_server *s;
    int rc;
};

static void *srv_thread(void *arg)
{
    struct test_srv_run *run = arg;
    struct bora_err err;
    run->rc = dp_server_run(run->s, &err);
    if (run->rc < 0)
        fprintf(stderr, "test server: %s\n", err.msg);
    return NULL;
}

int test_srv_start(struct test_srv *v, const struct dp_config *cfg)
{
    memset(v, 0, sizeof *v);
    if (!(v->g = calloc(1, sizeof *v->g)))
        return -ENOMEM;
    int rc = gen_test_init(v->g);
    if (rc < 0) {
        free(v->g);
        v->g = NULL;
        return rc;
    }
    struct bora_err err;
    rc = dp_server_open(&v->s, cfg, v->g, &err);
    if (rc < 0) {
        fprintf(stderr, "test server: %s\n", err.msg);
        gen_test_close(v->g);
        free(v->g);
        v->g = NULL;
        return rc;
    }
    snprintf(v->udp, sizeof v->udp, "127.0.0.1:%d", dp_server_udp_port(v->s));
    snprintf(v->tcp, sizeof v->tcp, "127.0.0.1:%d", dp_server_tcp_port(v->s));
    v->run = calloc(1, sizeof *v->run);
    rc = v->run ? 0 : -ENOMEM;
    if (!rc) {
        v->run->s = v->s;
        rc = -pthread_create(&v->t, NULL, srv_thread, v->run);
    }
    if (rc) {
        free(v->run);
        v->run = NULL;
        test_srv_close(v);
    }
    return rc;
}

int test_srv_join(struct test_srv *v)
{
    pthread_join(v->t, NULL);
    int rc = v->run->rc;
    free(v->run);
    v->run = NULL;
    return rc;
}

void test_srv_close(struct test_srv *v)
{
    dp_server_close(v->s);
    gen_test_close(v->g);
    free(v->g);
    v->s = NULL;
    v->g = NULL;
}

int test_srv_stop(struct test_srv *v)
{
    dp_server_stop(v->s);
    int rc = test_srv_join(v);
    test_srv_close(v);
    return rc;
}

int test_send_text(struct bwp_conn *c, uint64_t rid, const char *prompt, uint16_t max_tokens,
                   uint8_t options, uint32_t deadline_ms, const struct bwp_key *key)
{
    uint8_t buf[8192];
    struct bwp_generate g = { .max_tokens = max_tokens, .options = options, .top_p = 1,
                              .deadline_ms = deadline_ms, .prompt_len = (uint32_t)strlen(prompt),
                              .prompt = (const uint8_t *)prompt };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    size_t n = bwp_build_generate(buf, sizeof buf, rid, &g, key,
                                  (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
    return n ? bwp_conn_send(c, buf, n) : -EMSGSIZE;
}

int test_recv(struct bwp_conn *c, uint8_t *buf, size_t cap, struct bwp_server_frame *f,
              int timeout_ms, const struct bwp_key *key)
{
    long n = bwp_conn_recv(c, buf, cap, timeout_ms);
    if (n <= 0)
        return (int)n;
    int rc = bwp_parse_server(buf, (size_t)n, key, key != NULL, f);
    return rc < 0 ? rc : 1;
}

int test_apply(struct test_req *reqs, int n, const struct bwp_server_frame *f)
{
    int i = 0;
    while (i < n && reqs[i].rid != f->h.request_id)
        i++;
    if (i == n)
        return -1;
    struct test_req *r = &reqs[i];
    if (r->ended)
        r->after_end = true;
    if (f->h.seq != r->next_seq)
        r->bad_seq = true;
    r->next_seq = f->h.seq + 1;
    switch (f->h.type) {
    case BWP_ACCEPTED:
        if (f->h.seq != 0)
            r->bad_seq = true;
        r->accepted = true;
        r->queue_position = f->u.accepted.queue_position;
        r->prompt_tokens = f->u.accepted.prompt_tokens;
        break;
    case BWP_TOKEN:
        if (!r->accepted)
            r->bad_seq = true;
        r->n_tokens++;
        for (uint16_t k = 0; k < f->u.token.n_ids && r->n_ids < 1024; k++)
            r->ids[r->n_ids++] = bwp_rd32(f->u.token.ids + 4 * k);
        if (r->text_len + f->u.token.text_len < sizeof r->text) {
            memcpy(r->text + r->text_len, f->u.token.text, f->u.token.text_len);
            r->text_len += f->u.token.text_len;
            r->text[r->text_len] = 0;
        }
        break;
    case BWP_DONE:
        r->done = true;
        r->ended = true;
        r->d = f->u.done;
        break;
    case BWP_ERROR:
        r->error = f->u.error.code;
        snprintf(r->error_msg, sizeof r->error_msg, "%.*s", (int)f->u.error.msg_len, f->u.error.msg);
        r->ended = true;
        break;
    default:
        break;
    }
    return i;
}

int test_collect(struct bwp_conn *c, struct test_req *reqs, int n, int timeout_ms,
                 const struct bwp_key *key)
{
    uint8_t buf[4096];
    struct bwp_server_frame f;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int ended = 0;
        for (int i = 0; i < n; i++)
            ended += reqs[i].ended;
        if (ended == n)
            return n;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long left = timeout_ms - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            return ended;
        int rc = test_recv(c, buf, sizeof buf, &f, (int)left, key);
        if (rc < 0)
            return ended;
        if (rc > 0)
            test_apply(reqs, n, &f);
    }
}

long test_rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * 4;
}
