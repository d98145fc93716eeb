/* test_control.c — dataplane/control.c on a real loopback server: the list of held requests,
 * cancel by id (DONE(cancelled), protocol.md rule 13), the live policy (max_tokens, prompt bytes,
 * allow list, timeout, rate), and the generator swap at a request boundary keeping the queue. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "console/metrics.h"
#include "tests/support/bwp_test.h"
#include "tests/support/gen_test.h"

#define T_MS 5000   /* generous per-step timeout */

static struct test_srv SRV;
static struct metrics *MS;   /* the console's registry, as borad gives the server one */

static int setup(void **s)
{
    (void)s;
    struct dp_config c = test_srv_config();
    if (!(MS = metrics_create()))
        return -1;
    c.metrics = MS;
    return test_srv_start(&SRV, &c);
}

static int teardown(void **s)
{
    (void)s;
    int rc = test_srv_stop(&SRV);
    metrics_destroy(MS);
    return rc == 0 ? 0 : -1;
}

/* Counter c of the registry now. */
static uint64_t counter(enum metrics_counter c)
{
    static struct metrics_snapshot snap;   /* large: off the stack */
    metrics_snapshot_take(MS, &snap, 0);
    return snap.counter[c];
}

/* Reads frames into r until it has n_tokens tokens. */
static void read_tokens(struct bwp_conn *c, struct test_req *r, uint32_t n_tokens)
{
    uint8_t buf[1024];
    struct bwp_server_frame f;
    while (r->n_tokens < n_tokens) {
        assert_int_equal(test_recv(c, buf, sizeof buf, &f, T_MS, NULL), 1);
        test_apply(r, 1, &f);
    }
}

/* dp_server_requests until it lists want requests (the intake ring is drained between steps). */
static uint32_t list_until(struct dp_req_info *out, uint32_t want)
{
    struct bora_err err;
    uint32_t total = 0;
    for (int i = 0; i < 500; i++) {
        assert_int_equal(dp_server_requests(SRV.s, out, DP_LIST_MAX, &total, &err), 0);
        if (total == want)
            return total;
        test_sleep_ms(2);
    }
    fail_msg("requests: %u listed, expected %u", total, want);
    return total;
}

/* ---- requests and cancel ---- */

static void test_requests_and_cancel(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[2] = { { .rid = 40 }, { .rid = 41 } };
    test_send_text(&c, 40, "sleep=10", 500, 0, 0, NULL);
    read_tokens(&c, &r[0], 2);                       /* running now */
    test_send_text(&c, 41, "queued", 5, 0, 0, NULL);
    struct dp_req_info info[DP_LIST_MAX];
    list_until(info, 2);
    assert_int_equal(info[0].rid, 40);
    assert_true(info[0].running);
    assert_int_equal(info[0].transport, METRICS_TCP);
    assert_true(info[0].conn > 0);
    assert_int_equal(info[0].from.ss_family, AF_INET);
    const struct sockaddr_in *a = (const struct sockaddr_in *)&info[0].from;
    assert_int_equal(ntohl(a->sin_addr.s_addr), INADDR_LOOPBACK);
    assert_true(ntohs(a->sin_port) != 0);
    assert_int_equal(info[0].prompt_tokens, 9);      /* gen_test: bytes + BOS */
    assert_true(info[0].completion_tokens >= 2 && info[0].completion_tokens < 500);
    assert_int_equal(info[1].rid, 41);
    assert_false(info[1].running);
    assert_int_equal(info[1].prompt_tokens, 7);
    assert_int_equal(info[1].completion_tokens, 0);
    assert_true(info[0].age_us >= info[1].age_us && info[0].age_us < 10000000);
    uint32_t queued, running;
    dp_server_counts(SRV.s, &queued, &running);
    assert_int_equal(queued, 1);
    assert_int_equal(running, 1);
    /* cancel by id: unknown → 0, queued and running → 1 each, then DONE(cancelled) */
    struct bora_err err;
    uint32_t n = 99;
    assert_int_equal(dp_server_cancel(SRV.s, 999, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(dp_server_cancel(SRV.s, 41, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(dp_server_cancel(SRV.s, 40, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    for (int i = 0; i < 2; i++) {
        assert_true(r[i].done && !r[i].bad_seq && !r[i].after_end);
        assert_int_equal(r[i].d.finish, BWP_FINISH_CANCELLED);
    }
    assert_true(r[0].d.completion_tokens >= 2 && r[0].d.completion_tokens < 500);
    assert_int_equal(r[1].d.completion_tokens, 0);
    list_until(info, 0);
    dp_server_counts(SRV.s, &queued, &running);
    assert_int_equal(queued + running, 0);
    bwp_conn_close(&c);
}

/* Frames into r (n requests) until cond holds. */
#define RECV_UNTIL(c, r, n, cond)                                                   \
    do {                                                                            \
        uint8_t b_[1024];                                                           \
        struct bwp_server_frame f_;                                                 \
        while (!(cond)) {                                                           \
            assert_int_equal(test_recv(c, b_, sizeof b_, &f_, T_MS, NULL), 1);      \
            test_apply(r, n, &f_);                                                  \
        }                                                                           \
    } while (0)

/* A request whose prefill is running (3 s here) is listed as running and cancelled by id at once:
 * the decoder answers the console between prefill blocks. Requests that arrive meanwhile are
 * admitted there too: ACCEPTED with their places (1, 2), counted and listed as waiting, and
 * cancelled by id while the prefill still runs (before, they sat in the intake ring until it
 * ended: no ACCEPTED, 0 waiting on the console, no cancel by id). */
static void test_cancel_during_prefill(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req all[3] = { { .rid = 60 }, { .rid = 61 }, { .rid = 62 } };
    test_send_text(&c, 60, "prefill=3000", 5, 0, 0, NULL);
    struct dp_req_info info[DP_LIST_MAX];
    for (int i = 0; i < 500; i++) {   /* admitted (queued) first, then its prefill starts */
        list_until(info, 1);
        if (info[0].running)
            break;
        test_sleep_ms(2);
    }
    assert_int_equal(info[0].rid, 60);
    assert_true(info[0].running);
    uint32_t queued = 9, running = 9;   /* the console's status counts it as running from its prefill on */
    dp_server_counts(SRV.s, &queued, &running);
    assert_int_equal(queued, 0);
    assert_int_equal(running, 1);
    const uint64_t in0 = counter(METRICS_QUEUE_IN), out0 = counter(METRICS_QUEUE_OUT);
    test_send_text(&c, 61, "waiting", 5, 0, 0, NULL);
    test_send_text(&c, 62, "waiting too", 5, 0, 0, NULL);
    RECV_UNTIL(&c, all, 3, all[1].accepted && all[2].accepted);
    assert_int_equal(all[1].queue_position, 1);
    assert_int_equal(all[2].queue_position, 2);
    assert_int_equal(all[1].prompt_tokens, 8);   /* gen_test: bytes + BOS */
    list_until(info, 3);
    assert_true(info[0].running && info[0].rid == 60);
    assert_true(!info[1].running && info[1].rid == 61 && !info[2].running && info[2].rid == 62);
    dp_server_counts(SRV.s, &queued, &running);
    assert_int_equal(queued, 2);
    assert_int_equal(running, 1);
    /* the console's queue figure (queue in - queue out) agrees */
    assert_int_equal(counter(METRICS_QUEUE_IN) - in0, 2);
    assert_int_equal(counter(METRICS_QUEUE_OUT) - out0, 0);
    struct bora_err err;
    uint32_t n = 0;
    assert_int_equal(dp_server_cancel(SRV.s, 61, &n, &err), 0);
    assert_int_equal(n, 1);
    RECV_UNTIL(&c, all, 3, all[1].ended);
    assert_true(all[1].done && all[1].d.finish == BWP_FINISH_CANCELLED);
    assert_false(all[0].ended);                   /* the prefill still runs */
    assert_int_equal(dp_server_cancel(SRV.s, 62, &n, &err), 0);   /* still waiting: before 60 ends */
    assert_int_equal(n, 1);
    assert_int_equal(dp_server_cancel(SRV.s, 60, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(test_collect(&c, all, 3, T_MS, NULL), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(all[i].done && !all[i].bad_seq && !all[i].after_end);
        assert_int_equal(all[i].d.finish, BWP_FINISH_CANCELLED);
        assert_int_equal(all[i].d.completion_tokens, 0);
    }
    assert_true(all[0].d.total_us < 2000000);
    list_until(info, 0);
    bwp_conn_close(&c);
}

/* The same id from two clients: both are cancelled. */
static void test_cancel_every_client(void **s)
{
    (void)s;
    struct bwp_conn c[2] = { test_srv_conn(&SRV, false), test_srv_conn(&SRV, true) };
    struct test_req r[2] = { { .rid = 7 }, { .rid = 7 } };
    test_send_text(&c[0], 7, "sleep=10", 500, 0, 0, NULL);
    read_tokens(&c[0], &r[0], 1);
    test_send_text(&c[1], 7, "sleep=10", 500, 0, 0, NULL);
    struct dp_req_info info[DP_LIST_MAX];
    list_until(info, 2);
    assert_int_equal(info[0].transport, METRICS_UDP);
    assert_int_equal(info[1].transport, METRICS_TCP);
    struct bora_err err;
    uint32_t n = 0;
    assert_int_equal(dp_server_cancel(SRV.s, 7, &n, &err), 0);
    assert_int_equal(n, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(test_collect(&c[i], &r[i], 1, T_MS, NULL), 1);
        assert_int_equal(r[i].d.finish, BWP_FINISH_CANCELLED);
        bwp_conn_close(&c[i]);
    }
}

/* ---- live policy ---- */

static uint16_t outcome(struct bwp_conn *c, uint64_t rid, const char *prompt, uint16_t max_tokens)
{
    struct test_req r = { .rid = rid };
    test_send_text(c, rid, prompt, max_tokens, 0, 0, NULL);
    assert_int_equal(test_collect(c, &r, 1, T_MS, NULL), 1);
    return r.error ? r.error : (uint16_t)(100 + r.d.finish);
}

static void test_live_policy(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    struct dp_config cfg = test_srv_config();
    struct bora_err err;
    cfg.max_tokens = 4;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 1, "x", 8), BWP_E_BAD_PARAMS);
    assert_int_equal(outcome(&c, 2, "x", 4), 100 + BWP_FINISH_MAX_TOKENS);
    /* buffers were sized at open: a larger prompt limit is refused, a smaller one applies */
    struct dp_config big = cfg;
    big.max_prompt_bytes = test_srv_config().max_prompt_bytes + 1;
    assert_int_equal(dp_server_set_policy(SRV.s, &big, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "max_prompt_bytes"));
    big.max_tokens = 0;
    big.max_prompt_bytes = 4;
    assert_int_equal(dp_server_set_policy(SRV.s, &big, &err), -EINVAL);
    cfg.max_prompt_bytes = 4;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 3, "12345", 2), BWP_E_TOO_LARGE);
    assert_int_equal(outcome(&c, 4, "1234", 2), 100 + BWP_FINISH_MAX_TOKENS);
    /* allow list */
    struct dp_cidr ten = { .family = AF_INET, .addr = { 10 }, .prefix = 8 };
    cfg.allow = &ten;
    cfg.n_allow = 1;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 5, "x", 2), BWP_E_FORBIDDEN);
    cfg.n_allow = 0;
    cfg.max_prompt_bytes = test_srv_config().max_prompt_bytes;
    /* default deadline */
    cfg.request_timeout_ms = 300;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 6, "sleep=20", 2), 100 + BWP_FINISH_MAX_TOKENS);
    cfg.max_tokens = 500;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 7, "sleep=20", 500), 100 + BWP_FINISH_DEADLINE);
    /* rate limit: one a second, burst one */
    cfg.rate_limit = 1;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 8, "x", 2), 100 + BWP_FINISH_MAX_TOKENS);
    assert_int_equal(outcome(&c, 9, "x", 2), BWP_E_RATE_LIMITED);
    cfg.rate_limit = 0;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    assert_int_equal(outcome(&c, 10, "x", 2), 100 + BWP_FINISH_MAX_TOKENS);
    bwp_conn_close(&c);
}

/* ---- generator swap ---- */

static _Atomic uint32_t counted_steps;
static int (*gen_test_step)(struct generator *, struct gen_token *, struct bora_err *);

static int counting_step(struct generator *g, struct gen_token *out, struct bora_err *err)
{
    atomic_fetch_add_explicit(&counted_steps, 1, memory_order_relaxed);
    return gen_test_step(g, out, err);
}

static void test_swap_keeps_queue(void **s)
{
    (void)s;
    struct generator ng;
    assert_int_equal(gen_test_init(&ng), 0);
    static struct generator_ops counting_ops;
    counting_ops = *ng.ops;
    gen_test_step = ng.ops->step;
    counting_ops.step = counting_step;
    ng.ops = &counting_ops;
    void *old_impl = SRV.g->impl, *new_impl = ng.impl;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[2] = { { .rid = 50 }, { .rid = 51 } };
    test_send_text(&c, 50, "sleep=10", 20, 0, 0, NULL);
    read_tokens(&c, &r[0], 1);
    test_send_text(&c, 51, "x", 3, 0, 0, NULL);
    struct dp_req_info info[DP_LIST_MAX];
    list_until(info, 2);
    struct bora_err err;
    /* returns once the running request is done; the queued one is then decoded by ng */
    assert_int_equal(dp_server_swap_generator(SRV.s, &ng, &err), 0);
    uint32_t total = 0;
    assert_int_equal(dp_server_requests(SRV.s, info, DP_LIST_MAX, &total, &err), 0);
    for (uint32_t i = 0; i < total; i++)
        assert_int_not_equal(info[i].rid, 50);
    assert_ptr_equal(ng.impl, old_impl);            /* the old one came back, to be closed */
    assert_ptr_equal(SRV.g->impl, new_impl);
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    assert_int_equal(r[0].d.finish, BWP_FINISH_MAX_TOKENS);
    assert_int_equal(r[0].d.completion_tokens, 20);
    assert_int_equal(r[1].d.finish, BWP_FINISH_MAX_TOKENS);
    assert_int_equal(r[1].d.completion_tokens, 3);
    assert_int_equal(r[1].queue_position, 1);
    assert_int_equal(atomic_load(&counted_steps), 3);   /* only the queued one ran on ng */
    gen_test_close(&ng);
    bwp_conn_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_and_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_during_prefill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_every_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_keeps_queue, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
