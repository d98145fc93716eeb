/* test_server.c — a real dp_server on loopback (UDP and TCP) with the test generator, driven
 * by a client built from protocol.md: streaming, interleaving, every ERROR the server decides
 * (BAD_FRAME, BAD_VERSION, TOO_LARGE, BUSY, AUTH, BAD_PARAMS, DUPLICATE, INTERNAL,
 * SHUTTING_DOWN), CANCEL, deadlines, RESEND, half-close, connection close, PONG, and the drain. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <fcntl.h>

#include <cmocka.h>

#include "dataplane/server_int.h"
#include "tests/support/bwp_test.h"
#include "tests/support/gen_test.h"

#define T_MS 5000   /* generous per-step timeout */

static struct test_srv SRV;

static int setup_default(void **s)
{
    (void)s;
    struct dp_config c = test_srv_config();
    return test_srv_start(&SRV, &c);
}

static int teardown_default(void **s)
{
    (void)s;
    return test_srv_stop(&SRV) == 0 ? 0 : -1;
}

/* The text gen_test emits for a kind-0 prompt, independently recomputed. */
static void expected_text(const char *prompt, uint32_t n, char *out, size_t cap)
{
    struct gen_request rq = { .prompt = (const uint8_t *)prompt, .prompt_len = (uint32_t)strlen(prompt) };
    size_t at = 0;
    out[0] = 0;
    for (uint32_t i = 0; i < n; i++)
        at += (size_t)snprintf(out + at, cap - at, "w%u ", gen_test_token_id(&rq, i));
}

static void check_clean(const struct test_req *r)
{
    assert_false(r->bad_seq);
    assert_false(r->after_end);
    assert_true(r->ended);
}

/* ---- streaming ---- */

static void stream_one(bool tcp, uint8_t options)
{
    struct bwp_conn c = test_srv_conn(&SRV, tcp);
    struct test_req r = { .rid = 77 };
    assert_int_equal(test_send_text(&c, 77, "hello", 5, options, 0, NULL), 0);
    assert_int_equal(test_collect(&c, &r, 1, T_MS, NULL), 1);
    check_clean(&r);
    assert_true(r.accepted);
    assert_int_equal(r.queue_position, 0);
    assert_int_equal(r.prompt_tokens, 6);          /* gen_test: bytes + BOS */
    assert_true(r.done);
    assert_int_equal(r.d.finish, BWP_FINISH_MAX_TOKENS);
    assert_int_equal(r.d.prompt_tokens, 6);
    assert_int_equal(r.d.completion_tokens, 5);
    assert_int_equal(r.n_tokens, 5);
    assert_int_equal(r.next_seq, 7);               /* ACCEPTED + 5 TOKEN + DONE */
    assert_true(r.d.ttft_us > 0 && r.d.ttft_us <= r.d.total_us);
    char want[256];
    expected_text("hello", 5, want, sizeof want);
    assert_string_equal(r.text, want);
    assert_int_equal(r.n_ids, options & BWP_OPT_IDS ? 5 : 0);
    if (options & BWP_OPT_IDS) {
        struct gen_request rq = { .prompt = (const uint8_t *)"hello", .prompt_len = 5 };
        for (uint32_t i = 0; i < 5; i++)
            assert_int_equal(r.ids[i], gen_test_token_id(&rq, i));
    }
    bwp_conn_close(&c);
}

static void test_stream_udp(void **s) { (void)s; stream_one(false, 0); stream_one(false, BWP_OPT_IDS); }
static void test_stream_tcp(void **s) { (void)s; stream_one(true, 0); stream_one(true, BWP_OPT_IDS); }

static void test_tcp_interleaved(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[6] = { { .rid = 1 }, { .rid = 2 }, { .rid = 3 }, { .rid = 4 }, { .rid = 5 }, { .rid = 6 } };
    /* all six frames in one write: the server must split the stream into frames */
    uint8_t buf[2048];
    size_t at = 0;
    for (int i = 0; i < 6; i++) {
        char p[32];
        snprintf(p, sizeof p, "prompt %d", i);
        struct bwp_generate g = { .max_tokens = (uint16_t)(2 + i), .top_p = 1,
                                  .prompt_len = (uint32_t)strlen(p), .prompt = (const uint8_t *)p };
        at += bwp_build_generate(buf + at, sizeof buf - at, r[i].rid, &g, NULL, 0);
    }
    assert_int_equal(bwp_conn_send(&c, buf, at), 0);
    assert_int_equal(test_collect(&c, r, 6, T_MS, NULL), 6);
    for (int i = 0; i < 6; i++) {
        check_clean(&r[i]);
        assert_true(r[i].done);
        assert_int_equal(r[i].d.completion_tokens, 2 + i);
        char p[32], want[256];
        snprintf(p, sizeof p, "prompt %d", i);
        expected_text(p, 2 + (uint32_t)i, want, sizeof want);
        assert_string_equal(r[i].text, want);
    }
    /* nobody waits behind more requests than arrived before it (exact positions: busy test) */
    for (int i = 0; i < 6; i++)
        assert_true(r[i].queue_position <= (uint32_t)i);
    bwp_conn_close(&c);
}

static void test_eos_and_ignore_eos(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    struct test_req r[2] = { { .rid = 10 }, { .rid = 11 } };
    test_send_text(&c, 10, "x eos=3", 50, 0, 0, NULL);
    test_send_text(&c, 11, "x eos=3", 6, BWP_OPT_IGNORE_EOS, 0, NULL);
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    check_clean(&r[0]);
    assert_int_equal(r[0].d.finish, BWP_FINISH_EOS);
    assert_int_equal(r[0].d.completion_tokens, 3);     /* EOS neither sent nor counted */
    assert_int_equal(r[0].n_tokens, 3);
    check_clean(&r[1]);
    assert_int_equal(r[1].d.finish, BWP_FINISH_MAX_TOKENS);
    assert_int_equal(r[1].n_tokens, 6);
    bwp_conn_close(&c);
}

static void test_utf8_deltas(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    struct test_req r = { .rid = 12 };
    test_send_text(&c, 12, "utf8", 4, 0, 0, NULL);
    assert_int_equal(test_collect(&c, &r, 1, T_MS, NULL), 1);
    check_clean(&r);
    assert_int_equal(r.n_tokens, 4);                   /* one TOKEN per token, even empty ones */
    assert_string_equal(r.text, "\xc3\xa9\xc3\xa9");
    bwp_conn_close(&c);
}

/* ---- cancel, deadline, queue, busy, duplicate, pong ---- */

static void test_cancel(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    uint8_t buf[512];
    struct bwp_server_frame f;
    /* cancelling an unknown id has no answer: the next frame is the PONG */
    size_t n = bwp_build_simple(buf, sizeof buf, BWP_CANCEL, 999, NULL, 0);
    bwp_conn_send(&c, buf, n);
    n = bwp_build_simple(buf, sizeof buf, BWP_PING, 998, NULL, 0);
    bwp_conn_send(&c, buf, n);
    assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
    assert_int_equal(f.h.type, BWP_PONG);
    assert_int_equal(f.h.request_id, 998);
    assert_int_equal(f.h.seq, 0);
    assert_int_equal(f.u.pong.flags & BWP_PONG_LOADED, BWP_PONG_LOADED);
    /* a running request ends with DONE(cancelled) */
    struct test_req r = { .rid = 20 };
    test_send_text(&c, 20, "sleep=10", 500, 0, 0, NULL);
    while (r.n_tokens < 2) {
        assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
        test_apply(&r, 1, &f);
    }
    n = bwp_build_simple(buf, sizeof buf, BWP_CANCEL, 20, NULL, 0);
    bwp_conn_send(&c, buf, n);
    bwp_conn_send(&c, buf, n);                         /* idempotent */
    assert_int_equal(test_collect(&c, &r, 1, T_MS, NULL), 1);
    check_clean(&r);
    assert_int_equal(r.d.finish, BWP_FINISH_CANCELLED);
    assert_true(r.d.completion_tokens >= 2 && r.d.completion_tokens < 500);
    assert_int_equal(r.d.completion_tokens, r.n_tokens);
    bwp_conn_close(&c);
}

/* A long prefill stops as soon as its request is cancelled or expires: DONE(cancelled) or
 * DONE(deadline) within a few ms, not at the prefill's end (3 s here). */
static void test_stop_during_prefill(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    uint8_t buf[512];
    struct bwp_server_frame f;
    struct test_req r = { .rid = 25 };
    test_send_text(&c, 25, "prefill=3000", 5, 0, 0, NULL);
    while (!r.accepted) {
        assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
        test_apply(&r, 1, &f);
    }
    test_sleep_ms(100);                                     /* its prefill is running */
    size_t n = bwp_build_simple(buf, sizeof buf, BWP_CANCEL, 25, NULL, 0);
    bwp_conn_send(&c, buf, n);
    assert_int_equal(test_collect(&c, &r, 1, T_MS, NULL), 1);
    check_clean(&r);
    assert_int_equal(r.d.finish, BWP_FINISH_CANCELLED);
    assert_int_equal(r.d.completion_tokens, 0);
    assert_true(r.d.total_us < 2000000);
    struct test_req d = { .rid = 26 };
    test_send_text(&c, 26, "prefill=3000", 5, 0, 200, NULL);   /* deadline 200 ms */
    assert_int_equal(test_collect(&c, &d, 1, T_MS, NULL), 1);
    check_clean(&d);
    assert_int_equal(d.d.finish, BWP_FINISH_DEADLINE);
    assert_true(d.d.total_us >= 200000 && d.d.total_us < 2000000);
    stream_one(true, 0);                               /* the server goes on serving */
    bwp_conn_close(&c);
}

static void test_deadline(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[2] = { { .rid = 30 }, { .rid = 31 } };
    test_send_text(&c, 30, "sleep=20", 500, 0, 150, NULL);
    test_send_text(&c, 31, "queued", 5, 0, 50, NULL);      /* expires while waiting */
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    check_clean(&r[0]);
    assert_int_equal(r[0].d.finish, BWP_FINISH_DEADLINE);
    assert_true(r[0].d.total_us >= 150000);
    assert_true(r[0].d.total_us < 1000000);
    check_clean(&r[1]);
    assert_int_equal(r[1].queue_position, 1);
    assert_int_equal(r[1].d.finish, BWP_FINISH_DEADLINE);
    assert_int_equal(r[1].d.completion_tokens, 0);
    assert_int_equal(r[1].d.ttft_us, 0);                   /* no TOKEN sent */
    assert_true(r[1].d.queue_us >= 50000);                 /* whole time in the queue */
    assert_true(r[1].d.queue_us <= r[1].d.total_us);
    bwp_conn_close(&c);
}

/* The DONE timing figures against what the requests did, not against themselves: a request that
 * starts at once waited (almost) nothing in the queue; one queued behind a ~150 ms request waited
 * that long; its 100 ms prefill counts towards its TTFT (accepted to first token), not its queue
 * wait; and queue ≤ TTFT ≤ total. Bounds are loose (a shared CI machine), the gaps they tell
 * apart are 100 ms wide. */
static void test_timing_figures(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[2] = { { .rid = 36 }, { .rid = 37 } };
    test_send_text(&c, 36, "sleep=30", 5, 0, 0, NULL);        /* 5 steps of 30 ms */
    test_send_text(&c, 37, "prefill=100", 2, 0, 0, NULL);     /* waits, then a 100 ms prefill */
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    for (int i = 0; i < 2; i++) {
        check_clean(&r[i]);
        assert_true(r[i].done);
        if (!(r[i].d.queue_us <= r[i].d.ttft_us && r[i].d.ttft_us <= r[i].d.total_us))
            fail_msg("rid %llu: queue %u, ttft %u, total %u us", (unsigned long long)r[i].rid, r[i].d.queue_us,
                     r[i].d.ttft_us, r[i].d.total_us);
    }
    assert_int_equal(r[1].queue_position, 1);
    assert_true(r[0].d.total_us >= 150000);
    if (r[0].d.queue_us >= 100000)   /* it started at once: not its whole life in the queue */
        fail_msg("first request: queue %u us of total %u us", r[0].d.queue_us, r[0].d.total_us);
    if (r[1].d.queue_us < 100000)    /* behind ~150 ms of the first */
        fail_msg("second request: queue %u us, behind a request of %u us", r[1].d.queue_us, r[0].d.total_us);
    if (r[1].d.ttft_us < r[1].d.queue_us + 100000)   /* + its 100 ms prefill */
        fail_msg("second request: ttft %u us, queue %u us, prefill 100 ms", r[1].d.ttft_us, r[1].d.queue_us);
    bwp_conn_close(&c);
}

static void test_busy_queue_pong_duplicate(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    uint8_t buf[512];
    struct bwp_server_frame f;
    enum { N = 10 };   /* 1 decoding + 8 waiting (queue_depth) + 1 refused */
    struct test_req r[N];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        r[i].rid = 100 + (uint64_t)i;
        test_send_text(&c, r[i].rid, "sleep=30", 400, 0, 0, NULL);
        if (i == 0) {   /* let the first reach the decoder */
            while (!r[0].accepted) {
                assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
                test_apply(r, N, &f);
            }
        }
    }
    /* the 10th gets BUSY; the others are ACCEPTED with positions 0, 1, 2 … 8 */
    while (!r[N - 1].ended || !r[N - 2].accepted) {
        assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
        test_apply(r, N, &f);
    }
    assert_int_equal(r[N - 1].error, BWP_E_BUSY);
    assert_false(r[N - 1].accepted);
    for (int i = 0; i < N - 1; i++)
        assert_int_equal(r[i].queue_position, (uint32_t)i);
    /* the queue is full, yet a prompt the context cannot hold (kind 2: counted at the parser) and a
     * conversation the chat template refuses get TOO_LARGE and BAD_PARAMS, not BUSY: rule 1 puts
     * those checks first */
    {
        static uint8_t ids[4 * GEN_TEST_CTX];
        for (int i = 0; i < GEN_TEST_CTX; i++)
            bwp_wr32(ids + 4 * i, 5);
        struct bwp_generate g = { .max_tokens = 4, .prompt_kind = 2, .top_p = 1, .prompt_len = sizeof ids,
                                  .prompt = ids };
        uint8_t fb[4 * GEN_TEST_CTX + 128];
        bwp_conn_send(&c, fb, bwp_build_generate(fb, sizeof fb, 901, &g, NULL, 0));
        static const uint8_t sys_only[] = { 0, 1, 0, 0, 0, 's' };
        g = (struct bwp_generate){ .max_tokens = 4, .prompt_kind = 1, .top_p = 1, .prompt_len = sizeof sys_only,
                                   .prompt = sys_only };
        bwp_conn_send(&c, fb, bwp_build_generate(fb, sizeof fb, 902, &g, NULL, 0));
        bool large = false, params = false;
        while (!large || !params) {
            assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
            if (f.h.type == BWP_ERROR && f.h.request_id == 901) {
                assert_int_equal(f.u.error.code, BWP_E_TOO_LARGE);
                large = true;
            } else if (f.h.type == BWP_ERROR && f.h.request_id == 902) {
                assert_int_equal(f.u.error.code, BWP_E_BAD_PARAMS);
                params = true;
            } else {
                test_apply(r, N, &f);
            }
        }
    }
    /* PONG counts the waiting requests, not the one decoding */
    size_t n = bwp_build_simple(buf, sizeof buf, BWP_PING, 555, NULL, 0);
    bwp_conn_send(&c, buf, n);
    /* DUPLICATE: the second GENERATE for 101 concerns only that frame (seq 0) */
    test_send_text(&c, 101, "again", 3, 0, 0, NULL);
    bool pong = false, dup = false;
    while (!pong || !dup) {
        assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
        if (f.h.type == BWP_PONG) {
            assert_int_equal(f.u.pong.queue_depth, 8);
            pong = true;
        } else if (f.h.type == BWP_ERROR && f.h.request_id == 101) {
            assert_int_equal(f.u.error.code, BWP_E_DUPLICATE);
            assert_int_equal(f.h.seq, 0);
            dup = true;
        } else {
            test_apply(r, N, &f);
        }
    }
    /* cancel everything; each ends with exactly one DONE(cancelled) */
    for (int i = 0; i < N - 1; i++) {
        n = bwp_build_simple(buf, sizeof buf, BWP_CANCEL, r[i].rid, NULL, 0);
        bwp_conn_send(&c, buf, n);
    }
    assert_int_equal(test_collect(&c, r, N, T_MS, NULL), N);
    for (int i = 0; i < N - 1; i++) {
        check_clean(&r[i]);
        assert_int_equal(r[i].d.finish, BWP_FINISH_CANCELLED);
    }
    bwp_conn_close(&c);
}

/* Rule 11 and BUSY when the requests arrive together at an idle server (one TCP segment): the one
 * about to decode is not counted as waiting, so queue_depth (8) wait behind it before BUSY, and a
 * PING in the same segment as a lone GENERATE reports 0 waiting. */
static void test_busy_burst_at_idle(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    uint8_t seg[16384], buf[512];
    struct bwp_server_frame f;
    size_t at = 0;
    struct bwp_generate g = { .max_tokens = 400, .top_p = 1, .prompt_len = 8, .prompt = (const uint8_t *)"sleep=30" };
    /* a lone GENERATE and a PING together */
    at += bwp_build_generate(seg + at, sizeof seg - at, 90, &g, NULL, 0);
    at += bwp_build_simple(seg + at, sizeof seg - at, BWP_PING, 91, NULL, 0);
    assert_int_equal(bwp_conn_send(&c, seg, at), 0);
    struct test_req r0 = { .rid = 90 };
    bool pong = false;
    while (!pong || !r0.accepted) {
        assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
        if (f.h.type == BWP_PONG) {
            assert_int_equal(f.u.pong.queue_depth, 0);
            pong = true;
        } else {
            test_apply(&r0, 1, &f);
        }
    }
    assert_int_equal(r0.queue_position, 0);
    size_t n = bwp_build_simple(buf, sizeof buf, BWP_CANCEL, 90, NULL, 0);
    bwp_conn_send(&c, buf, n);
    assert_int_equal(test_collect(&c, &r0, 1, T_MS, NULL), 1);
    check_clean(&r0);
    /* ten GENERATEs together: 1 decoding + 8 waiting, the tenth BUSY */
    enum { N = 10 };
    struct test_req r[N];
    memset(r, 0, sizeof r);
    at = 0;
    for (int i = 0; i < N; i++) {
        r[i].rid = 200 + (uint64_t)i;
        at += bwp_build_generate(seg + at, sizeof seg - at, r[i].rid, &g, NULL, 0);
    }
    assert_int_equal(bwp_conn_send(&c, seg, at), 0);
    while (!r[N - 1].ended || !r[N - 2].accepted) {
        assert_int_equal(test_recv(&c, buf, sizeof buf, &f, T_MS, NULL), 1);
        test_apply(r, N, &f);
    }
    for (int i = 0; i < N - 1; i++)
        if (!r[i].accepted || r[i].queue_position != (uint32_t)i)
            fail_msg("request %d: accepted %d, position %u, error %u", i, r[i].accepted, r[i].queue_position,
                     r[i].error);
    assert_int_equal(r[N - 1].error, BWP_E_BUSY);
    for (int i = 0; i < N - 1; i++) {
        n = bwp_build_simple(buf, sizeof buf, BWP_CANCEL, r[i].rid, NULL, 0);
        bwp_conn_send(&c, buf, n);
    }
    assert_int_equal(test_collect(&c, r, N, T_MS, NULL), N);
    bwp_conn_close(&c);
}

/* ---- ERROR codes over the wire ---- */

/* A private server with cfg in SRV's place, so that the helpers which talk to SRV talk to it;
 * the shared one keeps running behind it and is SRV again after private_end. */
static struct test_srv private_begin(const struct dp_config *cfg)
{
    struct test_srv saved = SRV;
    assert_int_equal(test_srv_start(&SRV, cfg), 0);
    return saved;
}

static void private_end(struct test_srv saved)
{
    assert_int_equal(test_srv_stop(&SRV), 0);
    SRV = saved;
}

static void expect_error(struct bwp_conn *c, uint64_t rid, uint16_t code)
{
    uint8_t buf[512];
    struct bwp_server_frame f;
    assert_int_equal(test_recv(c, buf, sizeof buf, &f, T_MS, NULL), 1);
    if (f.h.type != BWP_ERROR || f.u.error.code != code)
        fail_msg("rid %llu: expected ERROR %s, got type 0x%x code %s", (unsigned long long)rid,
                 bwp_code_name(code), f.h.type, f.h.type == BWP_ERROR ? bwp_code_name(f.u.error.code) : "-");
    assert_int_equal(f.h.request_id, rid);
    assert_int_equal(f.h.seq, 0);
    assert_true(f.u.error.msg_len > 0);
}

static void ping_pong(struct bwp_conn *c, uint64_t rid)
{
    uint8_t buf[512];
    struct bwp_server_frame f;
    size_t n = bwp_build_simple(buf, sizeof buf, BWP_PING, rid, NULL, 0);
    assert_int_equal(bwp_conn_send(c, buf, n), 0);
    assert_int_equal(test_recv(c, buf, sizeof buf, &f, T_MS, NULL), 1);
    assert_int_equal(f.h.type, BWP_PONG);
    assert_int_equal(f.h.request_id, rid);
}

static void test_errors_udp(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    uint8_t b[8192];
    size_t n;
    /* unanswerable: short datagram, bad magic → silence (the PONG comes next) */
    bwp_conn_send(&c, (const uint8_t *)"BWP1", 4);
    n = bwp_build_simple(b, sizeof b, BWP_PING, 1, NULL, 0);
    b[0] = 'X';
    bwp_conn_send(&c, b, n);
    ping_pong(&c, 2);
    /* BAD_VERSION */
    n = bwp_build_simple(b, sizeof b, BWP_PING, 3, NULL, 0);
    b[3] = '7';
    bwp_conn_send(&c, b, n);
    expect_error(&c, 3, BWP_E_BAD_VERSION);
    /* BAD_FRAME: wrong datagram size, request_id 0, reserved */
    struct bwp_generate g = { .max_tokens = 4, .top_p = 1, .prompt_len = 2, .prompt = (const uint8_t *)"hi" };
    n = bwp_build_generate(b, sizeof b, 4, &g, NULL, 0);
    bwp_conn_send(&c, b, n - 1);
    expect_error(&c, 4, BWP_E_BAD_FRAME);
    n = bwp_build_simple(b, sizeof b, BWP_PING, 0, NULL, 0);
    bwp_conn_send(&c, b, n);
    expect_error(&c, 0, BWP_E_BAD_FRAME);
    /* TOO_LARGE: prompt over max_prompt_bytes (4096) */
    static uint8_t big[5000];
    memset(big, 'a', sizeof big);
    g.prompt = big;
    g.prompt_len = 4097;
    n = bwp_build_generate(b, sizeof b, 5, &g, NULL, 0);
    bwp_conn_send(&c, b, n);
    {   /* the message names the limit */
        uint8_t eb[512];
        struct bwp_server_frame ef;
        assert_int_equal(test_recv(&c, eb, sizeof eb, &ef, T_MS, NULL), 1);
        assert_int_equal(ef.h.type, BWP_ERROR);
        assert_int_equal(ef.u.error.code, BWP_E_TOO_LARGE);
        assert_int_equal(ef.h.request_id, 5);
        const char want[] = "prompt_len over the server's limit (max_prompt_bytes 4096)";
        assert_int_equal(ef.u.error.msg_len, sizeof want - 1);
        assert_memory_equal(ef.u.error.msg, want, sizeof want - 1);
    }
    /* BAD_PARAMS: max_tokens over the limit; prepare refusing the prompt */
    g.prompt = (const uint8_t *)"hi";
    g.prompt_len = 2;
    g.max_tokens = 513;
    n = bwp_build_generate(b, sizeof b, 6, &g, NULL, 0);
    bwp_conn_send(&c, b, n);
    expect_error(&c, 6, BWP_E_BAD_PARAMS);
    test_send_text(&c, 7, "bad=prepare", 4, 0, 0, NULL);
    expect_error(&c, 7, BWP_E_BAD_PARAMS);
    /* kind-2 id ≥ vocab */
    uint8_t ids[8];
    bwp_wr32(ids, 5);
    bwp_wr32(ids + 4, GEN_TEST_VOCAB);
    g = (struct bwp_generate){ .max_tokens = 4, .prompt_kind = 2, .top_p = 1, .prompt_len = 8, .prompt = ids };
    n = bwp_build_generate(b, sizeof b, 8, &g, NULL, 0);
    bwp_conn_send(&c, b, n);
    expect_error(&c, 8, BWP_E_BAD_PARAMS);
    /* AUTH: a trailer on a server without a key */
    struct bwp_key key = { .bytes = "k", .len = 1 };
    n = bwp_build_simple(b, sizeof b, BWP_PING, 9, &key, 1);
    bwp_conn_send(&c, b, n);
    expect_error(&c, 9, BWP_E_AUTH);
    /* INTERNAL: the generator fails at start (after ACCEPTED) or mid-stream */
    struct test_req r[2] = { { .rid = 10 }, { .rid = 11 } };
    test_send_text(&c, 10, "fail=start", 4, 0, 0, NULL);
    test_send_text(&c, 11, "fail=step", 8, 0, 0, NULL);
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    check_clean(&r[0]);
    check_clean(&r[1]);
    assert_true(r[0].accepted);
    assert_int_equal(r[0].error, BWP_E_INTERNAL);
    assert_int_equal(r[1].n_tokens, 2);
    assert_int_equal(r[1].error, BWP_E_INTERNAL);
    assert_false(r[1].done);
    /* the appliance keeps serving */
    stream_one(false, 0);
    bwp_conn_close(&c);
}

static void expect_closed(struct bwp_conn *c)
{
    uint8_t buf[512];
    long n = bwp_conn_recv(c, buf, sizeof buf, T_MS);
    assert_true(n == -EPIPE || n == -ECONNRESET);
}

static void test_errors_tcp(void **s)
{
    (void)s;
    uint8_t b[8192];
    size_t n;
    /* bad magic: ERROR BAD_FRAME with request_id 0, then close */
    struct bwp_conn c = test_srv_conn(&SRV, true);
    bwp_conn_send(&c, (const uint8_t *)"HTTP/1.1 GET /", 14);
    expect_error(&c, 0, BWP_E_BAD_FRAME);
    expect_closed(&c);
    bwp_conn_close(&c);
    /* the stream ends inside a header (rule 2): ERROR BAD_FRAME with request_id 0, then close */
    c = test_srv_conn(&SRV, true);
    bwp_conn_send(&c, (const uint8_t *)"BWP1\x03\x00", 6);
    shutdown(c.fd, SHUT_WR);
    expect_error(&c, 0, BWP_E_BAD_FRAME);
    expect_closed(&c);
    bwp_conn_close(&c);
    /* ... inside a frame's payload after a good one: the good one is answered, the truncated
     * one gets BAD_FRAME with its header's id */
    c = test_srv_conn(&SRV, true);
    n = bwp_build_simple(b, sizeof b, BWP_PING, 40, NULL, 0);
    bwp_put_header(b + n, BWP_RESEND, 0, 4, 0, 41);
    bwp_conn_send(&c, b, n + 24 + 2);
    shutdown(c.fd, SHUT_WR);
    {
        uint8_t rb[512];
        struct bwp_server_frame f;
        assert_int_equal(test_recv(&c, rb, sizeof rb, &f, T_MS, NULL), 1);
        assert_int_equal(f.h.type, BWP_PONG);
    }
    expect_error(&c, 41, BWP_E_BAD_FRAME);
    expect_closed(&c);
    bwp_conn_close(&c);
    /* wrong version: BAD_VERSION with the header's id, then close */
    c = test_srv_conn(&SRV, true);
    n = bwp_build_simple(b, sizeof b, BWP_PING, 44, NULL, 0);
    b[3] = '2';
    bwp_conn_send(&c, b, n);
    expect_error(&c, 44, BWP_E_BAD_VERSION);
    expect_closed(&c);
    bwp_conn_close(&c);
    /* oversize ≤ 16 MiB: TOO_LARGE, payload skipped, connection stays usable */
    c = test_srv_conn(&SRV, true);
    uint32_t len = 300000;
    bwp_put_header(b, BWP_GENERATE, 0, len, 0, 45);
    bwp_conn_send(&c, b, 24);
    memset(b, 0xee, sizeof b);
    for (uint32_t sent = 0; sent < len; sent += 8192)
        bwp_conn_send(&c, b, len - sent < 8192 ? len - sent : 8192);
    expect_error(&c, 45, BWP_E_TOO_LARGE);
    ping_pong(&c, 46);
    /* a malformed CANCEL for a running request concerns only that frame */
    struct test_req r = { .rid = 47 };
    test_send_text(&c, 47, "sleep=5", 6, 0, 0, NULL);
    bwp_put_header(b, BWP_CANCEL, 0, 2, 0, 47);
    b[24] = b[25] = 0;
    bwp_conn_send(&c, b, 26);
    uint8_t fb[512];
    struct bwp_server_frame f;
    bool err_seen = false;
    while (!r.ended) {
        assert_int_equal(test_recv(&c, fb, sizeof fb, &f, T_MS, NULL), 1);
        if (f.h.type == BWP_ERROR && f.u.error.code == BWP_E_BAD_FRAME) {   /* not the request's end */
            assert_int_equal(f.u.error.code, BWP_E_BAD_FRAME);
            err_seen = true;
            continue;
        }
        test_apply(&r, 1, &f);
    }
    assert_true(err_seen);
    check_clean(&r);
    assert_int_equal(r.d.finish, BWP_FINISH_MAX_TOKENS);
    /* RESEND is ignored on TCP: the PONG is the next frame */
    n = bwp_build_resend(b, sizeof b, 47, 0, NULL, 0);
    bwp_conn_send(&c, b, n);
    ping_pong(&c, 48);
    /* over 16 MiB: TOO_LARGE, then close */
    bwp_put_header(b, BWP_GENERATE, 0, (16u << 20) + 1, 0, 49);
    bwp_conn_send(&c, b, 24);
    expect_error(&c, 49, BWP_E_TOO_LARGE);
    expect_closed(&c);
    bwp_conn_close(&c);
}

/* ---- RESEND, half-close, connection close ---- */

static void test_resend_udp(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    uint8_t frames[16][512], b[512];
    long lens[16];
    test_send_text(&c, 60, "resend me", 6, BWP_OPT_IDS, 0, NULL);
    int n = 0;
    for (;;) {   /* ACCEPTED, 6 TOKEN, DONE */
        lens[n] = bwp_conn_recv(&c, frames[n], 512, T_MS);
        assert_true(lens[n] > 0);
        if (frames[n++][4] == BWP_DONE)
            break;
    }
    assert_int_equal(n, 8);
    size_t m = bwp_build_resend(b, sizeof b, 60, 3, NULL, 0);
    bwp_conn_send(&c, b, m);
    for (int i = 3; i < 8; i++) {            /* the same bytes again, from seq 3 on */
        uint8_t got[512];
        long k = bwp_conn_recv(&c, got, sizeof got, T_MS);
        assert_int_equal(k, lens[i]);
        assert_memory_equal(got, frames[i], (size_t)k);
    }
    /* RESEND past the end, or of an unknown id: nothing (the PONG comes next) */
    m = bwp_build_resend(b, sizeof b, 60, 8, NULL, 0);
    bwp_conn_send(&c, b, m);
    m = bwp_build_resend(b, sizeof b, 61, 0, NULL, 0);
    bwp_conn_send(&c, b, m);
    ping_pong(&c, 62);
    /* an ERROR that replaced ACCEPTED is retained too (rule 14): max_tokens 0 is BAD_PARAMS */
    struct bwp_generate g0 = { .max_tokens = 0, .prompt_kind = 0, .top_p = 1, .prompt = (const uint8_t *)"x",
                               .prompt_len = 1 };
    m = bwp_build_generate(b, sizeof b, 63, &g0, NULL, 0);
    bwp_conn_send(&c, b, m);
    uint8_t err1[512], err2[512];
    long e1 = bwp_conn_recv(&c, err1, sizeof err1, T_MS);
    assert_true(e1 > 0);
    assert_int_equal(err1[4], BWP_ERROR);
    m = bwp_build_resend(b, sizeof b, 63, 0, NULL, 0);
    bwp_conn_send(&c, b, m);
    long e2 = bwp_conn_recv(&c, err2, sizeof err2, T_MS);
    assert_int_equal(e2, e1);
    assert_memory_equal(err1, err2, (size_t)e1);
    /* the id may be reused once its request is done */
    struct test_req r = { .rid = 60 };
    test_send_text(&c, 60, "again", 2, 0, 0, NULL);
    assert_int_equal(test_collect(&c, &r, 1, T_MS, NULL), 1);
    check_clean(&r);
    assert_true(r.done);
    bwp_conn_close(&c);
}

static void test_tcp_half_close(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r = { .rid = 70 };
    test_send_text(&c, 70, "sleep=5", 10, 0, 0, NULL);
    assert_int_equal(bwp_conn_shutdown_write(&c), 0);   /* does not cancel */
    assert_int_equal(test_collect(&c, &r, 1, T_MS, NULL), 1);
    check_clean(&r);
    assert_int_equal(r.d.finish, BWP_FINISH_MAX_TOKENS);
    assert_int_equal(r.n_tokens, 10);
    expect_closed(&c);                                   /* then the server closes */
    bwp_conn_close(&c);
}

static void test_tcp_close_cancels(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, true);
    test_send_text(&c, 80, "sleep=50", 500, 0, 0, NULL);   /* would take 25 s */
    test_send_text(&c, 81, "sleep=50", 500, 0, 0, NULL);
    uint8_t b[512];
    struct bwp_server_frame f;
    assert_int_equal(test_recv(&c, b, sizeof b, &f, T_MS, NULL), 1);
    bwp_conn_close(&c);                                    /* cancels both silently */
    test_sleep_ms(200);
    struct bwp_conn d = test_srv_conn(&SRV, false);
    struct test_req r = { .rid = 82 };
    test_send_text(&d, 82, "next", 3, 0, 0, NULL);
    assert_int_equal(test_collect(&d, &r, 1, 2000, NULL), 1);
    check_clean(&r);
    assert_int_equal(r.queue_position, 0);                 /* the decoder was free again */
    bwp_conn_close(&d);
}

/* A frame stalled mid-way for longer than the frame timeout: BAD_FRAME naming its request,
 * then the connection closes. A frame trickled in byte by byte that completes in time, and a
 * connection idle between frames, are served. */
static void test_tcp_stalled_frame(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    cfg.tcp_frame_timeout_ms = 800;
    struct test_srv saved = private_begin(&cfg);
    uint8_t b[512];
    struct bwp_server_frame f;
    struct bwp_conn stalled = test_srv_conn(&SRV, true), slow = test_srv_conn(&SRV, true), idle = test_srv_conn(&SRV, true);
    struct bwp_generate g = { .max_tokens = 2, .prompt_kind = BWP_PROMPT_TEXT, .top_p = 1.0f,
                              .prompt = (const uint8_t *)"hello", .prompt_len = 5 };
    size_t n = bwp_build_generate(b, sizeof b, 91, &g, NULL, 0);
    assert_int_equal(bwp_conn_send(&stalled, b, n - 3), 0);   /* all but the last 3 bytes */
    n = bwp_build_simple(b, sizeof b, BWP_PING, 92, NULL, 0);
    for (size_t i = 0; i < n; i++) {                          /* 24 bytes in ≈ 240 ms */
        assert_int_equal(bwp_conn_send(&slow, b + i, 1), 0);
        test_sleep_ms(10);
    }
    assert_int_equal(test_recv(&slow, b, sizeof b, &f, T_MS, NULL), 1);
    assert_int_equal(f.h.type, BWP_PONG);
    assert_int_equal(f.h.request_id, 92);
    expect_error(&stalled, 91, BWP_E_BAD_FRAME);
    expect_closed(&stalled);
    test_sleep_ms(900);                                            /* idle past the timeout: not a frame */
    n = bwp_build_simple(b, sizeof b, BWP_PING, 93, NULL, 0);
    assert_int_equal(bwp_conn_send(&idle, b, n), 0);
    assert_int_equal(test_recv(&idle, b, sizeof b, &f, T_MS, NULL), 1);
    assert_int_equal(f.h.type, BWP_PONG);
    bwp_conn_close(&stalled);
    bwp_conn_close(&slow);
    bwp_conn_close(&idle);
    private_end(saved);
}

/* An oversize frame being skipped (TOO_LARGE answered at its header) is a frame like any other
 * for the frame timeout: its bytes trickled in do not restart the clock. */
static void test_tcp_oversize_trickle(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    cfg.tcp_frame_timeout_ms = 500;
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn c = test_srv_conn(&SRV, true);
    uint8_t b[512];
    bwp_put_header(b, BWP_GENERATE, 0, 100000, 0, 95);     /* over the 4096-byte prompt limit */
    assert_int_equal(bwp_conn_send(&c, b, BWP_HDR_SIZE), 0);
    expect_error(&c, 95, BWP_E_TOO_LARGE);
    for (int i = 0; i < 30; i++) {                         /* a byte every 40 ms for 1.2 s */
        (void)bwp_conn_send(&c, b, 1);                     /* fails once the server has closed */
        test_sleep_ms(40);
    }
    /* the timeout's BAD_FRAME came while the bytes were still trickling: no request named (the
     * frame was answered), then the connection closes */
    struct bwp_server_frame f;
    assert_int_equal(test_recv(&c, b, sizeof b, &f, 200, NULL), 1);   /* already there (the last byte went 40 ms ago) */
    assert_int_equal(f.h.type, BWP_ERROR);
    assert_int_equal(f.u.error.code, BWP_E_BAD_FRAME);
    assert_int_equal(f.h.request_id, 0);
    expect_closed(&c);
    bwp_conn_close(&c);
    private_end(saved);
}

/* RESEND sends frames again at most DP_RESEND_PER_S a second to one client address (a bucket of
 * as many): a forged source address cannot turn one 56-byte RESEND after another into an
 * unbounded stream at a victim. Counted at the server (the client's socket would drop some). */
static void test_resend_rate(void **s)
{
    (void)s;
    struct bwp_conn c = test_srv_conn(&SRV, false);
    uint8_t b[512];
    test_send_text(&c, 64, "rate", 6, 0, 0, NULL);        /* ACCEPTED, 6 TOKEN, DONE */
    for (int i = 0; i < 8; i++)
        assert_true(bwp_conn_recv(&c, b, sizeof b, T_MS) > 0);
    assert_int_equal(b[4], BWP_DONE);
    struct dp_stats st0, st1;
    dp_server_stats(SRV.s, &st0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const int n_resend = 2 * DP_RESEND_PER_S / 8 + 1;      /* asks for twice the bucket */
    for (int i = 0; i < n_resend; i++) {
        size_t m = bwp_build_resend(b, sizeof b, 64, 0, NULL, 0);
        bwp_conn_send(&c, b, m);
    }
    /* the PING comes after them: once it is answered, every RESEND was handled */
    size_t m = bwp_build_simple(b, sizeof b, BWP_PING, 65, NULL, 0);
    bwp_conn_send(&c, b, m);
    for (;;) {
        long k = bwp_conn_recv(&c, b, sizeof b, T_MS);
        assert_true(k > 0);
        if (b[4] == BWP_PONG)
            break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    dp_server_stats(SRV.s, &st1);
    const double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    const uint64_t sent = st1.resent - st0.resent, cap = DP_RESEND_PER_S + (uint64_t)(DP_RESEND_PER_S * dt) + 8;
    if (sent > cap || sent < DP_RESEND_PER_S / 2)
        fail_msg("%llu frames sent again for %d RESENDs of 8 in %.3f s; the rate allows %llu",
                 (unsigned long long)sent, n_resend, dt, (unsigned long long)cap);
    bwp_conn_close(&c);
}

/* The ERROR with request_id 0 a connection refused at connect gets; its message must hold `has`. */
static void expect_refused(struct bwp_conn *c, uint16_t code, const char *has)
{
    uint8_t buf[512];
    struct bwp_server_frame f;
    assert_int_equal(test_recv(c, buf, sizeof buf, &f, T_MS, NULL), 1);
    assert_int_equal(f.h.type, BWP_ERROR);
    assert_int_equal(f.u.error.code, code);
    assert_int_equal(f.h.request_id, 0);
    char msg[300];
    snprintf(msg, sizeof msg, "%.*s", (int)f.u.error.msg_len, f.u.error.msg);
    if (!strstr(msg, has))
        fail_msg("refusal '%s' does not say '%s'", msg, has);
    expect_closed(c);
}

/* [dataplane] max_conns_per_addr: a connection past the cap from one address is told BUSY
 * (request_id 0) and closed before it takes a slot; a closed connection frees its place; a live
 * change applies to new connections. With every slot taken, a new connection is told BUSY too,
 * not closed without a word. */
static void test_conns_per_addr(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    cfg.max_conns_per_addr = 2;
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn a = test_srv_conn(&SRV, true), b = test_srv_conn(&SRV, true);
    ping_pong(&a, 1);
    ping_pong(&b, 2);
    struct bwp_conn c = test_srv_conn(&SRV, true);
    expect_refused(&c, BWP_E_BUSY, "2 TCP connections held by this address (max_conns_per_addr 2)");
    bwp_conn_close(&c);
    ping_pong(&b, 3);                                  /* the two admitted ones are unharmed */
    bwp_conn_close(&a);                                /* frees a place once the server sees it */
    struct bwp_conn d;
    for (int tries = 0;; tries++) {
        d = test_srv_conn(&SRV, true);
        uint8_t buf[512];
        struct bwp_server_frame f;
        size_t n = bwp_build_simple(buf, sizeof buf, BWP_PING, 4, NULL, 0);
        assert_int_equal(bwp_conn_send(&d, buf, n), 0);
        assert_int_equal(test_recv(&d, buf, sizeof buf, &f, T_MS, NULL), 1);
        if (f.h.type == BWP_PONG)
            break;
        assert_int_equal(f.h.type, BWP_ERROR);         /* the close not seen yet: refused */
        assert_int_equal(f.h.request_id, 0);
        assert_int_equal(f.u.error.code, BWP_E_BUSY);
        assert_true(tries < 100);
        bwp_conn_close(&d);
        test_sleep_ms(20);
    }
    struct bora_err err;
    cfg.max_conns_per_addr = 0;                        /* live: no limit for new connections */
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    struct bwp_conn e = test_srv_conn(&SRV, true);
    ping_pong(&e, 5);
    bwp_conn_close(&b);
    bwp_conn_close(&d);
    bwp_conn_close(&e);
    struct dp_stats st;
    dp_server_stats(SRV.s, &st);
    assert_int_equal(st.tcp_conns, 4);                 /* a, b, d and e: the refused ones took none */
    private_end(saved);
}

/* With every slot taken, a new connection is told BUSY, not closed without a word. This process
 * holds both ends of 1,024 connections: it needs an open-file limit of about 2,200. */
static void test_conns_all_slots(void **s)
{
    (void)s;
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    const rlim_t need = 2 * DP_TCP_MAX_CONNS + 256;
    if (old.rlim_max != RLIM_INFINITY && old.rlim_max < need) {
        print_message("the hard open-file limit (%llu) is below the %llu descriptors this test holds\n",
                      (unsigned long long)old.rlim_max, (unsigned long long)need);
        skip();
    }
    struct rlimit more = { .rlim_cur = old.rlim_cur >= need ? old.rlim_cur : need, .rlim_max = old.rlim_max };
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &more), 0);
    struct dp_config cfg = test_srv_config();
    struct test_srv saved = private_begin(&cfg);
    static struct bwp_conn all[DP_TCP_MAX_CONNS];
    for (int i = 0; i < DP_TCP_MAX_CONNS; i++)
        all[i] = test_srv_conn(&SRV, true);
    ping_pong(&all[DP_TCP_MAX_CONNS - 1], 6);          /* the last one was admitted */
    struct bwp_conn full = test_srv_conn(&SRV, true);
    expect_refused(&full, BWP_E_BUSY, "no TCP connection slot free (1024 in use)");
    bwp_conn_close(&full);
    for (int i = 0; i < DP_TCP_MAX_CONNS; i++)
        bwp_conn_close(&all[i]);
    private_end(saved);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* An address the allow list stops allowing while it has a TCP connection open: its next frame
 * is FORBIDDEN, nothing more is read, the request it has running finishes (nothing accepted is
 * lost), then the connection closes; a new connection from it is refused at once. */
static void test_forbidden_while_connected(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn c = test_srv_conn(&SRV, true), idle = test_srv_conn(&SRV, true);
    struct test_req r[2] = { { .rid = 40 }, { .rid = 41 } };
    test_send_text(&c, 40, "sleep=30", 10, 0, 0, NULL);   /* ≈ 300 ms */
    uint8_t b[512];
    struct bwp_server_frame f;
    assert_int_equal(test_recv(&c, b, sizeof b, &f, T_MS, NULL), 1);
    test_apply(r, 2, &f);
    assert_true(r[0].accepted);
    struct dp_cidr only_ten = { .family = AF_INET, .addr = { 10 }, .prefix = 8 };
    cfg.allow = &only_ten;
    cfg.n_allow = 1;
    struct bora_err err;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    /* a PING and a GENERATE in one write, at once: the PING is FORBIDDEN if it is read before the
     * io thread's sweep (≤ 100 ms) ends the connection, else not read at all; the GENERATE behind
     * it is never read (neither answered nor started) */
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 41, NULL, 0);
    struct bwp_generate g = { .max_tokens = 2, .prompt_kind = BWP_PROMPT_TEXT, .top_p = 1.0f,
                              .prompt = (const uint8_t *)"hi", .prompt_len = 2 };
    n += bwp_build_generate(b + n, sizeof b - n, 42, &g, NULL, 0);
    assert_int_equal(bwp_conn_send(&c, b, n), 0);
    /* an idle connection from it is told and closed without a frame of its own: refused
     * addresses cannot keep the slots they opened while allowed */
    expect_error(&idle, 0, BWP_E_FORBIDDEN);
    expect_closed(&idle);
    bwp_conn_close(&idle);
    /* the running request finishes in full (nothing accepted is lost), then the connection closes */
    int rc;
    while ((rc = test_recv(&c, b, sizeof b, &f, T_MS, NULL)) == 1) {
        if (f.h.request_id == 42)
            fail_msg("request 42 was read after its address was refused (frame type 0x%x)", f.h.type);
        test_apply(r, 2, &f);
    }
    assert_true(rc == -EPIPE || rc == -ECONNRESET);        /* closed, not a timeout */
    assert_true(r[1].error == 0 || r[1].error == BWP_E_FORBIDDEN);
    assert_true(r[0].done);
    assert_int_equal(r[0].n_tokens, 10);
    assert_int_equal(r[0].d.finish, BWP_FINISH_MAX_TOKENS);
    bwp_conn_close(&c);
    struct bwp_conn d = test_srv_conn(&SRV, true);
    expect_error(&d, 0, BWP_E_FORBIDDEN);
    expect_closed(&d);
    bwp_conn_close(&d);
    private_end(saved);
}

/* Refused by a live allow list while half a frame sits unread: the frame is dropped with the rest
 * of the input, not timed out (a BAD_FRAME and a close would cancel the running request), and the
 * request finishes in full. */
static void test_refused_with_partial_frame(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    cfg.tcp_frame_timeout_ms = 300;
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[1] = { { .rid = 50 } };
    test_send_text(&c, 50, "sleep=100", 10, 0, 0, NULL);   /* ≈ 1 s, three frame timeouts */
    uint8_t b[512];
    struct bwp_server_frame f;
    assert_int_equal(test_recv(&c, b, sizeof b, &f, T_MS, NULL), 1);
    test_apply(r, 1, &f);
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 51, NULL, 0);
    assert_int_equal(bwp_conn_send(&c, b, n / 2), 0);      /* half a frame */
    test_sleep_ms(50);
    struct dp_cidr only_ten = { .family = AF_INET, .addr = { 10 }, .prefix = 8 };
    cfg.allow = &only_ten;
    cfg.n_allow = 1;
    struct bora_err err;
    assert_int_equal(dp_server_set_policy(SRV.s, &cfg, &err), 0);
    int rc, stray = 0;
    while ((rc = test_recv(&c, b, sizeof b, &f, T_MS, NULL)) == 1) {
        if (f.h.type == BWP_ERROR && f.h.request_id == 0)
            stray = f.u.error.code;                        /* checked once the server is stopped */
        test_apply(r, 1, &f);
    }
    bwp_conn_close(&c);
    const int stop_rc = test_srv_stop(&SRV);
    SRV = saved;
    if (stray)
        fail_msg("ERROR %d with request_id 0 on a connection with a request running", stray);
    assert_true(rc == -EPIPE || rc == -ECONNRESET);        /* closed after the request, not a timeout */
    assert_true(r[0].done);
    assert_int_equal(r[0].n_tokens, 10);
    assert_int_equal(stop_rc, 0);
}

/* A client that reads slower than the server writes still gets everything when the server stops:
 * the drain ends when the last request has handed over its frames, and what the write buffer
 * still holds then goes out before the exit (it was closed away: the request's DONE was lost). */
struct slow_reader { int fd; uint8_t *buf; size_t n, cap; };

static void *slow_read(void *arg)
{
    struct slow_reader *r = arg;
    while (r->n < r->cap) {
        ssize_t k = recv(r->fd, r->buf + r->n, r->cap - r->n, 0);
        if (k <= 0)
            break;
        r->n += (size_t)k;
    }
    return NULL;
}

/* The bytes the server's kernel holds for the client at local port lport (ss's Send-Q), or -1. */
static long server_sendq(int sport, int lport)
{
    char cmd[160], line[512];
    snprintf(cmd, sizeof cmd, "ss -tnH state established '( sport = :%d and dport = :%d )' 2>/dev/null", sport, lport);
    FILE *p = popen(cmd, "r");
    long q = -1, rq;
    if (p && fgets(line, sizeof line, p) && sscanf(line, "%ld %ld", &rq, &q) != 2)
        q = -1;
    if (p)
        pclose(p);
    return q;
}

static void test_exit_flushes_slow_reader(void **s)
{
    (void)s;
    if (system("ss -V >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIPPED: test_exit_flushes_slow_reader needs ss (iproute2) to see the server's send queue\n");
        skip();
    }
    struct dp_config cfg = test_srv_config();
    struct test_srv saved = private_begin(&cfg);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int small = 4096;                                      /* a small window: the server's frames queue */
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    const int sport = dp_server_tcp_port(SRV.s);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)sport) };
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct sockaddr_in me;
    socklen_t ml = sizeof me;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&me, &ml), 0);
    const int lport = ntohs(me.sin_port);
    enum { BATCH = 2000 };
    static uint8_t out[BATCH * 2 * 24 + 512];
    size_t n = 0;
    for (int i = 0; i < 2 * BATCH; i++)
        n += bwp_build_simple(out + n, sizeof out - n, BWP_PING, 1000, NULL, 0);
    const size_t half = n / 2;
    if (server_sendq(sport, lport) < 0) {                 /* ss there, but it cannot see sockets */
        fprintf(stderr, "SKIPPED: test_exit_flushes_slow_reader: ss shows no send queue for the connection\n");
        close(fd);
        test_srv_stop(&SRV);
        SRV = saved;
        skip();
    }
    long pings = 0, last = -2, q;
    /* PINGs until the server's kernel send queue stops growing: it is full, and the PONGs of
     * the next PINGs stay in borad's own write buffer */
    for (int round = 0; round < 400 && (q = server_sendq(sport, lport)) != last; round++) {
        last = q;
        assert_int_equal(send(fd, out, half, MSG_NOSIGNAL), (ssize_t)half);
        pings += BATCH;
        test_sleep_ms(50);
    }
    assert_true(last > 0);
    assert_int_equal(send(fd, out, n, MSG_NOSIGNAL), (ssize_t)n);   /* 128 KB of PONGs wait in borad */
    pings += 2 * BATCH;
    struct bwp_generate g = { .max_tokens = 3, .prompt_kind = BWP_PROMPT_TEXT, .top_p = 1.0f,
                              .prompt = (const uint8_t *)"tail", .prompt_len = 4 };
    size_t gn = bwp_build_generate(out, sizeof out, 9, &g, NULL, 0);
    assert_int_equal(send(fd, out, gn, MSG_NOSIGNAL), (ssize_t)gn);
    test_sleep_ms(300);                                    /* the request ends; its frames wait behind the PONGs */
    struct slow_reader r = { .fd = fd, .cap = (size_t)pings * 32 + (1u << 20) };
    r.buf = malloc(r.cap);
    assert_non_null(r.buf);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_read, &r), 0);   /* reads from now on */
    const int stop_rc = test_srv_stop(&SRV);               /* drains, exits, closes */
    SRV = saved;                                           /* before any check: the group teardown stops SRV */
    pthread_join(t, NULL);
    assert_int_equal(stop_rc, 0);
    long pongs = 0;
    bool done = false;
    for (size_t off = 0; off + BWP_HDR_SIZE <= r.n;) {
        struct bwp_server_frame f;
        size_t len = BWP_HDR_SIZE + bwp_rd32(r.buf + off + 8);
        if (off + len > r.n || bwp_parse_server(r.buf + off, len, NULL, false, &f) < 0)
            break;
        pongs += f.h.type == BWP_PONG;
        done = done || (f.h.type == BWP_DONE && f.h.request_id == 9);
        off += len;
    }
    if (pongs != pings || !done)
        fail_msg("after the stop the client read %ld of %ld PONGs and %s request 9's DONE (%zu bytes; the "
                 "server's send queue held %ld)", pongs, pings, done ? "" : "not", r.n, last);
    free(r.buf);
    close(fd);
}

/* Out of file descriptors, a connection the server cannot take is closed at once (it was left
 * in the backlog, the listening socket waking the loop without end). */
static void test_tcp_out_of_fds(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    struct test_srv saved = private_begin(&cfg);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int reserve = open("/dev/null", O_RDONLY | O_CLOEXEC), top = reserve;
    assert_true(reserve >= 0);
    for (int i = 0; i < 8; i++) {                          /* the highest descriptor in use, about */
        int fd = dup(reserve);
        if (fd > top)
            top = fd;
        close(fd);
    }
    struct rlimit low = { .rlim_cur = (rlim_t)top + 24, .rlim_max = old.rlim_max };
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    struct bwp_conn cs[64];
    int n = 0;
    struct bora_err err;
    while (n < 64 && bwp_conn_open(&cs[n], SRV.tcp, true, &err) == 0)
        n++;                                              /* until this process has no descriptor left */
    assert_true(n > 0 && n < 64);
    test_sleep_ms(100);
    close(reserve);                                        /* one descriptor, taken at once by a client */
    struct bwp_conn last;
    int rc, tries = 0;
    while ((rc = bwp_conn_open(&last, SRV.tcp, true, &err)) == -EMFILE && n > 0 && tries++ < 4)
        bwp_conn_close(&cs[--n]);                          /* the server took it first: free another */
    assert_int_equal(rc, 0);
    uint8_t b[64];
    size_t m = bwp_build_simple(b, sizeof b, BWP_PING, 7, NULL, 0);
    (void)bwp_conn_send(&last, b, m);
    if (tries == 0) {
        expect_closed(&last);                              /* not a PONG, not a timeout */
    } else {                                               /* the server may have had a descriptor */
        long k = bwp_conn_recv(&last, b, sizeof b, T_MS);
        assert_true(k == -EPIPE || k == -ECONNRESET || (k > 0 && b[4] == BWP_PONG));
    }
    bwp_conn_close(&last);
    for (int i = 0; i < n; i++) {                          /* each was served or closed: none hangs */
        uint8_t got[64];
        m = bwp_build_simple(b, sizeof b, BWP_PING, 100 + (uint64_t)i, NULL, 0);
        (void)bwp_conn_send(&cs[i], b, m);
        long k = bwp_conn_recv(&cs[i], got, sizeof got, T_MS);
        if (!(k == -EPIPE || k == -ECONNRESET || (k > 0 && got[4] == BWP_PONG)))
            fail_msg("connection %d of %d: %ld (type 0x%x)", i, n, k, k > 0 ? got[4] : 0);
        bwp_conn_close(&cs[i]);
    }
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    struct bwp_conn ok = test_srv_conn(&SRV, true);        /* and the server serves again */
    ping_pong(&ok, 8);
    bwp_conn_close(&ok);
    private_end(saved);
}

/* ---- AUTH on a keyed server ---- */

static void test_auth_server(void **s)
{
    (void)s;
    struct bwp_key key = { .len = 32 };
    memcpy(key.bytes, "0123456789abcdef0123456789abcdef", 32);
    struct dp_config cfg = test_srv_config();
    cfg.key = &key;
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn c = test_srv_conn(&SRV, false);
    uint8_t b[512];
    struct bwp_server_frame f;
    /* unsigned frame: AUTH, answered without trailer */
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 1, NULL, 0);
    bwp_conn_send(&c, b, n);
    long k = bwp_conn_recv(&c, b, sizeof b, T_MS);
    assert_true(k > 0);
    assert_int_equal(bwp_parse_server(b, (size_t)k, NULL, false, &f), 0);
    assert_int_equal(f.u.error.code, BWP_E_AUTH);
    assert_int_equal(f.h.flags & BWP_FLAG_AUTH, 0);
    /* signed request: every answer carries a valid trailer */
    struct test_req r = { .rid = 2 };
    test_send_text(&c, 2, "signed", 3, 0, 0, &key);
    assert_int_equal(test_collect(&c, &r, 1, T_MS, &key), 1);
    check_clean(&r);
    assert_true(r.done);
    assert_int_equal(r.n_tokens, 3);
    /* a replayed frame: AUTH */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    n = bwp_build_simple(b, sizeof b, BWP_PING, 3, &key, now);
    bwp_conn_send(&c, b, n);
    bwp_conn_send(&c, b, n);
    uint8_t fb[512];
    assert_int_equal(test_recv(&c, fb, sizeof fb, &f, T_MS, &key), 1);
    assert_int_equal(f.h.type, BWP_PONG);
    k = bwp_conn_recv(&c, fb, sizeof fb, T_MS);
    assert_int_equal(bwp_parse_server(fb, (size_t)k, NULL, false, &f), 0);
    assert_int_equal(f.u.error.code, BWP_E_AUTH);
    /* a stale timestamp: AUTH */
    n = bwp_build_simple(b, sizeof b, BWP_PING, 4, &key, now - 31000000ull);
    bwp_conn_send(&c, b, n);
    k = bwp_conn_recv(&c, fb, sizeof fb, T_MS);
    assert_int_equal(bwp_parse_server(fb, (size_t)k, NULL, false, &f), 0);
    assert_int_equal(f.u.error.code, BWP_E_AUTH);
    bwp_conn_close(&c);
    /* TCP: an oversize frame is skipped, its trailer checked on the way (AUTH before TOO_LARGE) */
    static uint8_t big[5000], fb2[8192];
    memset(big, 'z', sizeof big);
    struct bwp_generate g = { .max_tokens = 2, .top_p = 1, .prompt_len = sizeof big, .prompt = big };
    struct bwp_key wrong = key;
    wrong.bytes[3] ^= 1;
    for (int bad = 0; bad < 2; bad++) {
        struct bwp_conn t = test_srv_conn(&SRV, true);
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        n = bwp_build_generate(fb2, sizeof fb2, 50, &g, bad ? &wrong : &key, now);
        bwp_conn_send(&t, fb2, n);
        k = bwp_conn_recv(&t, fb, sizeof fb, T_MS);
        assert_true(k > 0);
        assert_int_equal(bwp_parse_server(fb, (size_t)k, bad ? NULL : &key, false, &f), 0);
        assert_int_equal(f.u.error.code, bad ? BWP_E_AUTH : BWP_E_TOO_LARGE);
        assert_int_equal(f.h.request_id, 50);
        n = bwp_build_simple(fb2, sizeof fb2, BWP_PING, 51, &key, now + 1);   /* still open */
        bwp_conn_send(&t, fb2, n);
        assert_int_equal(test_recv(&t, fb, sizeof fb, &f, T_MS, &key), 1);
        assert_int_equal(f.h.type, BWP_PONG);
        bwp_conn_close(&t);
    }
    /* ... and when the stream ends before its trailer: ERROR AUTH (unsigned), not silence */
    {
        struct bwp_conn t = test_srv_conn(&SRV, true);
        n = bwp_build_generate(fb2, sizeof fb2, 52, &g, &key, now);
        bwp_conn_send(&t, fb2, n - 100);
        shutdown(t.fd, SHUT_WR);
        k = bwp_conn_recv(&t, fb, sizeof fb, T_MS);
        assert_true(k > 0);
        assert_int_equal(bwp_parse_server(fb, (size_t)k, &key, true, &f), 0);
        assert_int_equal(f.h.type, BWP_ERROR);
        assert_int_equal(f.u.error.code, BWP_E_AUTH);
        assert_int_equal(f.h.request_id, 52);
        bwp_conn_close(&t);
    }
    private_end(saved);
}

/* ---- allow list and rate limit ---- */

static void test_forbidden_and_rate_limited(void **s)
{
    (void)s;
    struct dp_cidr only_ten = { .family = AF_INET, .addr = { 10 }, .prefix = 8 };
    struct dp_config cfg = test_srv_config();
    cfg.allow = &only_ten;
    cfg.n_allow = 1;
    struct test_srv saved = private_begin(&cfg);
    {                                                 /* 127.0.0.1 is not in 10/8 */
        struct bwp_conn c = test_srv_conn(&SRV, false);
        test_send_text(&c, 5, "hi", 2, 0, 0, NULL);
        expect_error(&c, 5, BWP_E_FORBIDDEN);
        uint8_t b[64];
        size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 6, NULL, 0);
        bwp_conn_send(&c, b, n);
        expect_error(&c, 6, BWP_E_FORBIDDEN);
        bwp_conn_close(&c);
    }
    /* TCP: refused when it connects (one ERROR FORBIDDEN, request_id 0, then closed), so a
     * refused address cannot take the connection slots; more than there are slots, in turn */
    for (int i = 0; i < DP_TCP_MAX_CONNS + 8; i++) {
        struct bwp_conn c = test_srv_conn(&SRV, true);
        if (i % 256 == 0 || i >= DP_TCP_MAX_CONNS) {
            expect_error(&c, 0, BWP_E_FORBIDDEN);
            expect_closed(&c);
        }
        bwp_conn_close(&c);
    }
    struct dp_stats st;
    dp_server_stats(SRV.s, &st);
    assert_int_equal(st.tcp_conns, 0);                /* none took a slot */
    assert_int_equal(test_srv_stop(&SRV), 0);
    struct dp_cidr loop = { .family = AF_INET, .addr = { 127 }, .prefix = 8 };
    cfg.allow = &loop;
    cfg.rate_limit = 4;                               /* 4 requests a second, burst 4 */
    assert_int_equal(test_srv_start(&SRV, &cfg), 0);
    struct bwp_conn c = test_srv_conn(&SRV, false);
    struct test_req r[8];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 8; i++) {
        r[i].rid = 10 + (uint64_t)i;
        test_send_text(&c, r[i].rid, "x", 1, 0, 0, NULL);
    }
    assert_int_equal(test_collect(&c, r, 8, T_MS, NULL), 8);
    int limited = 0, done = 0;
    for (int i = 0; i < 8; i++) {
        check_clean(&r[i]);
        limited += r[i].error == BWP_E_RATE_LIMITED;
        done += r[i].done;
    }
    assert_int_equal(done, 4);
    assert_int_equal(limited, 4);
    test_sleep_ms(600);                                    /* refilled: two more tokens */
    struct test_req again = { .rid = 30 };
    test_send_text(&c, 30, "x", 1, 0, 0, NULL);
    assert_int_equal(test_collect(&c, &again, 1, T_MS, NULL), 1);
    assert_true(again.done);
    bwp_conn_close(&c);
    private_end(saved);
}

/* ---- drain ---- */

/* A second server on a port in use is refused, UDP included (SO_REUSEADDR there would let it
 * bind and silently take the first one's traffic). */
static void test_port_in_use(void **s)
{
    (void)s;
    struct generator g;
    assert_int_equal(gen_test_init(&g), 0);
    struct dp_server *two = NULL;
    struct bora_err err = { "" };
    struct dp_config c = test_srv_config();
    c.udp = SRV.udp;
    c.tcp = NULL;
    assert_int_equal(dp_server_open(&two, &c, &g, &err), -EADDRINUSE);
    assert_non_null(strstr(err.msg, SRV.udp));
    assert_null(two);
    c.udp = NULL;
    c.tcp = SRV.tcp;
    assert_int_equal(dp_server_open(&two, &c, &g, &err), -EADDRINUSE);
    assert_non_null(strstr(err.msg, SRV.tcp));
    gen_test_close(&g);
    stream_one(false, 0);   /* the first server still has its traffic */
}

static void test_drain_finishes_queued(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn c = test_srv_conn(&SRV, false);
    struct test_req r[3] = { { .rid = 1 }, { .rid = 2 }, { .rid = 3 } };
    test_send_text(&c, 1, "sleep=10", 10, 0, 0, NULL);
    test_send_text(&c, 2, "sleep=10", 10, 0, 0, NULL);
    uint8_t b[512];
    struct bwp_server_frame f;
    while (!r[1].accepted) {
        assert_int_equal(test_recv(&c, b, sizeof b, &f, T_MS, NULL), 1);
        test_apply(r, 3, &f);
    }
    dp_server_stop(SRV.s);
    test_sleep_ms(20);
    test_send_text(&c, 3, "late", 3, 0, 0, NULL);          /* new: SHUTTING_DOWN */
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 9, NULL, 0);
    bwp_conn_send(&c, b, n);
    bool pong = false;
    while (!(r[0].ended && r[1].ended && r[2].ended && pong)) {
        assert_int_equal(test_recv(&c, b, sizeof b, &f, T_MS, NULL), 1);
        if (f.h.type == BWP_PONG) {
            assert_int_equal(f.u.pong.flags & BWP_PONG_DRAINING, BWP_PONG_DRAINING);
            pong = true;
            continue;
        }
        test_apply(r, 3, &f);
    }
    assert_int_equal(r[2].error, BWP_E_SHUTTING_DOWN);
    for (int i = 0; i < 2; i++) {                          /* both served in full */
        check_clean(&r[i]);
        assert_int_equal(r[i].d.finish, BWP_FINISH_MAX_TOKENS);
        assert_int_equal(r[i].n_tokens, 10);
    }
    assert_int_equal(test_srv_join(&SRV), 0);
    test_srv_close(&SRV);
    bwp_conn_close(&c);
    SRV = saved;
}

static void test_drain_grace_expires(void **s)
{
    (void)s;
    struct dp_config cfg = test_srv_config();
    cfg.shutdown_grace_ms = 100;
    struct test_srv saved = private_begin(&cfg);
    struct bwp_conn c = test_srv_conn(&SRV, true);
    struct test_req r[2] = { { .rid = 1 }, { .rid = 2 } };
    test_send_text(&c, 1, "sleep=50", 500, 0, 0, NULL);
    test_send_text(&c, 2, "sleep=50", 500, 0, 0, NULL);
    uint8_t b[512];
    struct bwp_server_frame f;
    while (!r[1].accepted) {
        assert_int_equal(test_recv(&c, b, sizeof b, &f, T_MS, NULL), 1);
        test_apply(r, 2, &f);
    }
    dp_server_stop(SRV.s);
    assert_int_equal(test_collect(&c, r, 2, T_MS, NULL), 2);
    for (int i = 0; i < 2; i++) {
        check_clean(&r[i]);
        assert_int_equal(r[i].d.finish, BWP_FINISH_SHUTDOWN);
    }
    assert_true(r[0].n_tokens < 500);
    assert_int_equal(test_srv_join(&SRV), 0);
    test_srv_close(&SRV);
    bwp_conn_close(&c);
    SRV = saved;
}

/* The client over TCP against a peer that is not a BWP/1 server (an HTTP server's answer): the
 * stream is refused as not BWP/1 (-EPROTO) at its first bytes, not read as a frame whose length
 * field is "400 " (which reported "Message too long"). */
static void test_client_not_bwp(void **state)
{
    (void)state;
    const int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(ls >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    assert_int_equal(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(ls, 1), 0);
    assert_int_equal(getsockname(ls, (struct sockaddr *)&a, &al), 0);
    char hp[64];
    snprintf(hp, sizeof hp, "127.0.0.1:%u", ntohs(a.sin_port));
    struct bwp_conn c;
    struct bora_err err = { "" };
    assert_int_equal(bwp_conn_open(&c, hp, true, &err), 0);
    const int fd = accept(ls, NULL, NULL);   /* connected already: in the backlog */
    assert_true(fd >= 0);
    static const char http[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(write(fd, http, sizeof http - 1), (ssize_t)(sizeof http - 1));
    uint8_t buf[512];
    assert_int_equal(bwp_conn_recv(&c, buf, sizeof buf, T_MS), -EPROTO);
    bwp_conn_close(&c);
    close(fd);
    close(ls);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_not_bwp),
        cmocka_unit_test(test_stream_udp),
        cmocka_unit_test(test_stream_tcp),
        cmocka_unit_test(test_tcp_interleaved),
        cmocka_unit_test(test_eos_and_ignore_eos),
        cmocka_unit_test(test_utf8_deltas),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_stop_during_prefill),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_timing_figures),
        cmocka_unit_test(test_busy_queue_pong_duplicate),
        cmocka_unit_test(test_busy_burst_at_idle),
        cmocka_unit_test(test_errors_udp),
        cmocka_unit_test(test_errors_tcp),
        cmocka_unit_test(test_resend_udp),
        cmocka_unit_test(test_tcp_half_close),
        cmocka_unit_test(test_tcp_close_cancels),
        cmocka_unit_test(test_tcp_stalled_frame),
        cmocka_unit_test(test_tcp_oversize_trickle),
        cmocka_unit_test(test_resend_rate),
        cmocka_unit_test(test_forbidden_while_connected),
        cmocka_unit_test(test_conns_per_addr),
        cmocka_unit_test(test_conns_all_slots),
        cmocka_unit_test(test_refused_with_partial_frame),
        cmocka_unit_test(test_tcp_out_of_fds),
        cmocka_unit_test(test_exit_flushes_slow_reader),
        cmocka_unit_test(test_auth_server),
        cmocka_unit_test(test_forbidden_and_rate_limited),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_drain_finishes_queued),
        cmocka_unit_test(test_drain_grace_expires),
    };
    return cmocka_run_group_tests_name("server", tests, setup_default, teardown_default);
}
