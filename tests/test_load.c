/* test_load.c — load on a real dp_server over loopback: 16 concurrent clients, 10,000 requests
 * over UDP and 10,000 over TCP (max_tokens 2, a queue of 16 so BUSY happens). Every request
 * ends in exactly one DONE or ERROR (BUSY), none is lost, frames of a request arrive in seq
 * order, and the process's resident memory stays flat after warm-up. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tests/support/bwp_test.h"

#define N_CLIENTS 16
#define WINDOW    4           /* requests in flight per client */
#define RETRY_MS  200

struct lreq {
    uint64_t rid;
    uint32_t next_seq;
    uint8_t ends;             /* DONE or ERROR frames seen */
    bool accepted, busy, bad, done;
    uint64_t sent_us;
};

struct client {
    struct test_srv *srv;
    bool tcp;
    int n;                    /* requests to send */
    int id;
    /* results */
    int done, busy, other_err, bad, lost, dup_end;
};

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void send_gen(struct bwp_conn *c, struct lreq *r)
{
    test_send_text(c, r->rid, "load", 2, 0, 0, NULL);
    r->sent_us = mono_us();
}

static void on_frame(struct client *cl, struct lreq *reqs, int n, const struct bwp_server_frame *f,
                     struct bwp_conn *c)
{
    uint64_t idx = f->h.request_id - ((uint64_t)cl->id << 32) - 1;
    if (idx >= (uint64_t)n)
        return;
    struct lreq *r = &reqs[idx];
    if (f->h.type == BWP_ERROR && f->u.error.code == BWP_E_DUPLICATE)
        return;                               /* our retransmitted GENERATE */
    if (r->ends) {                            /* anything after the end */
        if (f->h.seq >= r->next_seq)
            cl->dup_end++;
        return;
    }
    if (f->h.seq < r->next_seq)
        return;                               /* a resent copy */
    if (f->h.seq > r->next_seq) {             /* gap: ask again (UDP) */
        uint8_t b[64];
        size_t m = bwp_build_resend(b, sizeof b, r->rid, r->next_seq, NULL, 0);
        bwp_conn_send(c, b, m);
        return;
    }
    r->next_seq++;
    r->sent_us = mono_us();
    if (f->h.type == BWP_ACCEPTED)
        r->accepted = true;
    if (f->h.type == BWP_DONE) {
        r->ends++;
        r->done = true;
    }
    if (f->h.type == BWP_ERROR) {
        r->ends++;
        r->busy = f->u.error.code == BWP_E_BUSY;
        if (!r->busy)
            r->bad = true;
    }
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    struct bwp_conn c;
    struct bora_err err;
    if (bwp_conn_open(&c, cl->tcp ? cl->srv->tcp : cl->srv->udp, cl->tcp, &err) < 0) {
        cl->lost = cl->n;
        return NULL;
    }
    struct lreq *reqs = calloc((size_t)cl->n, sizeof *reqs);
    int sent = 0, ended = 0;
    uint8_t buf[2048];
    struct bwp_server_frame f;
    uint64_t start = mono_us();
    while (ended < cl->n && mono_us() - start < 60000000u) {
        while (sent < cl->n && sent - ended < WINDOW) {
            reqs[sent].rid = ((uint64_t)cl->id << 32) + (uint64_t)sent + 1;
            send_gen(&c, &reqs[sent++]);
        }
        int rc = test_recv(&c, buf, sizeof buf, &f, RETRY_MS, NULL);
        if (rc > 0) {
            on_frame(cl, reqs, sent, &f, &c);
        } else if (rc == 0 && !cl->tcp) {     /* silence: repair the oldest open requests */
            uint64_t now = mono_us();
            for (int i = 0; i < sent; i++) {
                struct lreq *r = &reqs[i];
                if (r->ends || now - r->sent_us < 1000 * RETRY_MS)
                    continue;
                if (!r->accepted && r->next_seq == 0)
                    send_gen(&c, r);
                uint8_t b[64];
                size_t m = bwp_build_resend(b, sizeof b, r->rid, r->next_seq, NULL, 0);
                bwp_conn_send(&c, b, m);
            }
        } else if (rc < 0) {
            break;
        }
        ended = 0;
        for (int i = 0; i < sent; i++)
            ended += reqs[i].ends > 0;
    }
    /* a short quiet period: no request may get a second end */
    while (test_recv(&c, buf, sizeof buf, &f, 50, NULL) > 0)
        on_frame(cl, reqs, sent, &f, &c);
    for (int i = 0; i < cl->n; i++) {
        if (!reqs[i].ends) cl->lost++;
        if (reqs[i].done) cl->done++;
        if (reqs[i].busy) cl->busy++;
        if (reqs[i].bad) cl->other_err++;
        if (reqs[i].ends > 1) cl->dup_end++;
    }
    free(reqs);
    bwp_conn_close(&c);
    return NULL;
}

static void run_load(struct test_srv *srv, bool tcp, int total, int *done, int *busy)
{
    pthread_t t[N_CLIENTS];
    struct client cl[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i] = (struct client){ .srv = srv, .tcp = tcp, .n = total / N_CLIENTS, .id = i + 1 };
        assert_int_equal(pthread_create(&t[i], NULL, client_main, &cl[i]), 0);
    }
    *done = *busy = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(cl[i].lost, 0);
        assert_int_equal(cl[i].dup_end, 0);
        assert_int_equal(cl[i].other_err, 0);
        assert_int_equal(cl[i].done + cl[i].busy, cl[i].n);
        *done += cl[i].done;
        *busy += cl[i].busy;
    }
}

static void test_load_udp_tcp(void **s)
{
    (void)s;
    struct test_srv srv;
    struct dp_config cfg = test_srv_config();
    cfg.queue_depth = 16;
    assert_int_equal(test_srv_start(&srv, &cfg), 0);
    int done, busy;
    run_load(&srv, false, 1600, &done, &busy);        /* warm-up: connections, buffers */
    run_load(&srv, true, 1600, &done, &busy);
    long rss0 = test_rss_kib();
    uint64_t t0 = mono_us();
    run_load(&srv, false, 10000, &done, &busy);
    uint64_t t1 = mono_us();
    printf("# UDP: 10000 requests, %d DONE, %d BUSY, %.0f req/s\n", done, busy, 1e4 / ((t1 - t0) / 1e6));
    assert_true(done > 0);
    int busy_udp = busy;
    run_load(&srv, true, 10000, &done, &busy);
    uint64_t t2 = mono_us();
    printf("# TCP: 10000 requests, %d DONE, %d BUSY, %.0f req/s\n", done, busy, 1e4 / ((t2 - t1) / 1e6));
    assert_true(done > 0);
    long rss1 = test_rss_kib();
    printf("# RSS %ld KiB after warm-up, %ld KiB after 20000 requests\n", rss0, rss1);
    assert_true(rss1 - rss0 < 2048);                  /* flat: under 2 MiB of drift */
    assert_true(busy_udp + busy > 0);                 /* 64 in flight vs a queue of 16: BUSY seen */
    assert_int_equal(test_srv_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_load_udp_tcp) };
    return cmocka_run_group_tests_name("load", tests, NULL, NULL);
}
