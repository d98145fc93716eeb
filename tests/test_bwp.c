/* test_bwp.c — the BWP/1 codec against protocol.md: byte-exact layouts written out from the
 * tables, every ERROR code the parser decides, every edge rule, rule-1 ordering, AUTH with an
 * independent HMAC, and truncations of every frame type. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "dataplane/bwp.h"

#define NOW 1700000000000000ull   /* a fixed "server clock" in µs */

static const struct bwp_limits LIM = { .max_prompt_bytes = 1000, .max_tokens = 256, .vocab_size = 32768 };

static struct bwp_generate gen_text(const char *s)
{
    struct bwp_generate g = { .max_tokens = 16, .prompt_kind = 0, .options = 0, .temperature = 0,
                              .top_p = 1, .top_k = 0, .seed = 7, .deadline_ms = 0,
                              .prompt_len = (uint32_t)strlen(s), .prompt = (const uint8_t *)s };
    return g;
}

static struct bwp_verdict parse(const uint8_t *b, size_t n, enum bwp_transport tr,
                                const struct bwp_limits *lim, struct bwp_client_frame *f)
{
    return bwp_parse_client(b, n, tr, lim, NULL, 1, NOW, f);
}

/* Builds a GENERATE and returns its verdict on UDP. A verdict's message may live in its frame
 * (why): the frames rotate over 4, so the last four verdicts' messages stay readable. */
static struct bwp_verdict gen_verdict(const struct bwp_generate *g, const struct bwp_limits *lim)
{
    static uint8_t buf[4096];
    static struct bwp_client_frame fs[4];
    static unsigned k;
    size_t n = bwp_build_generate(buf, sizeof buf, 42, g, NULL, 0);
    assert_true(n > 0);
    return parse(buf, n, BWP_UDP, lim, &fs[k++ % 4]);
}

/* The verdict's ERROR message, as the transports read it (the pointer may be into *v). */
static const char *vmsg(const struct bwp_verdict *v)
{
    static char buf[512];
    const char *m = bwp_verdict_msg(v, buf, sizeof buf);
    return m ? m : "";
}

static void expect(struct bwp_verdict v, uint16_t code, uint64_t rid)
{
    if (v.code != code)
        fail_msg("expected %s, got %s (%s)", bwp_code_name(code), bwp_code_name(v.code), vmsg(&v));
    if (code) {
        assert_true(v.answer);
        assert_int_equal(v.request_id, rid);
        assert_true(vmsg(&v)[0] != 0);
    }
}

/* ---- layouts ---- */

static void test_header_layout(void **s)
{
    (void)s;
    uint8_t b[24];
    bwp_put_header(b, 0x82, 1, 0x01020304, 0x0a0b0c0d, 0x1122334455667788ull);
    const uint8_t want[24] = { 'B', 'W', 'P', '1', 0x82, 1, 0, 0, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a,
                               0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 };
    assert_memory_equal(b, want, 24);
}

static void test_generate_layout(void **s)
{
    (void)s;
    struct bwp_generate g = { .max_tokens = 0x0102, .prompt_kind = 1, .options = 3,
                              .temperature = 1.0f, .top_p = 0.5f, .top_k = 40, .seed = 0x0807060504030201ull,
                              .deadline_ms = 1000, .prompt_len = 7,
                              .prompt = (const uint8_t *)"\x01\x02\x00\x00\x00hi" };
    uint8_t b[128];
    size_t n = bwp_build_generate(b, sizeof b, 5, &g, NULL, 0);
    assert_int_equal(n, 24 + 32 + 7);
    const uint8_t fixed[32] = { 0x02, 0x01, 1, 3, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x3f,
                                40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0xe8, 0x03, 0, 0, 7, 0, 0, 0 };
    assert_memory_equal(b + 24, fixed, 32);
    assert_int_equal(b[4], 0x01);
    assert_int_equal(bwp_rd32(b + 8), 39);
    assert_int_equal(bwp_rd32(b + 12), 0);
    struct bwp_client_frame f;
    struct bwp_limits lim = LIM;
    lim.max_tokens = 65535;
    expect(parse(b, n, BWP_UDP, &lim, &f), BWP_OK, 5);
    assert_int_equal(f.gen.max_tokens, 0x0102);
    assert_int_equal(f.gen.prompt_kind, 1);
    assert_true(f.gen.top_p == 0.5f);
    assert_int_equal(f.gen.top_k, 40);
    assert_int_equal(f.gen.seed, 0x0807060504030201ull);
    assert_int_equal(f.gen.deadline_ms, 1000);
}

static void test_server_layouts(void **s)
{
    (void)s;
    uint8_t b[256];
    size_t n = bwp_build_accepted(b, sizeof b, 9, 0, 3, 17, NULL, 0);
    assert_int_equal(n, 32);
    const uint8_t acc[8] = { 3, 0, 0, 0, 17, 0, 0, 0 };
    assert_int_equal(b[4], 0x81);
    assert_int_equal(bwp_rd32(b + 8), 8);
    assert_memory_equal(b + 24, acc, 8);

    uint32_t id = 0x01020304;
    n = bwp_build_token(b, sizeof b, 9, 4, &id, 1, "ab", 2, NULL, 0);
    assert_int_equal(n, 24 + 4 + 4 + 2);
    const uint8_t tok[10] = { 1, 0, 2, 0, 4, 3, 2, 1, 'a', 'b' };
    assert_int_equal(b[4], 0x82);
    assert_int_equal(bwp_rd32(b + 12), 4);
    assert_memory_equal(b + 24, tok, 10);

    n = bwp_build_pong(b, sizeof b, 9, 5, 3, NULL, 0);
    const uint8_t pong[8] = { 5, 0, 0, 0, 3, 0, 0, 0 };
    assert_int_equal(n, 32);
    assert_int_equal(b[4], 0x83);
    assert_int_equal(bwp_rd32(b + 12), 0);
    assert_memory_equal(b + 24, pong, 8);

    struct bwp_done d = { .finish = 1, .prompt_tokens = 2, .cached_tokens = 3, .completion_tokens = 4,
                          .queue_us = 5, .ttft_us = 6, .total_us = 7 };
    n = bwp_build_done(b, sizeof b, 9, 8, &d, NULL, 0);
    assert_int_equal(n, 24 + 28);
    const uint8_t done[28] = { 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0 };
    assert_int_equal(b[4], 0x84);
    assert_memory_equal(b + 24, done, 28);

    n = bwp_build_error(b, sizeof b, 9, 0, 7, "dup", NULL, 0);
    const uint8_t err[7] = { 7, 0, 3, 0, 'd', 'u', 'p' };
    assert_int_equal(n, 31);
    assert_int_equal(b[4], 0x85);
    assert_memory_equal(b + 24, err, 7);

    n = bwp_build_resend(b, sizeof b, 9, 0x11223344, NULL, 0);
    assert_int_equal(n, 28);
    assert_int_equal(b[4], 0x04);
    assert_int_equal(bwp_rd32(b + 24), 0x11223344);
    /* every builder refuses a too-small buffer */
    assert_int_equal(bwp_build_accepted(b, 31, 9, 0, 0, 0, NULL, 0), 0);
    assert_int_equal(bwp_build_done(b, 51, 9, 0, &d, NULL, 0), 0);
    assert_int_equal(bwp_build_token(b, 33, 9, 0, &id, 1, "ab", 2, NULL, 0), 0);
}

static void test_server_parse_roundtrip(void **s)
{
    (void)s;
    uint8_t b[256];
    struct bwp_server_frame f;
    uint32_t id = 77;
    size_t n = bwp_build_token(b, sizeof b, 3, 2, &id, 1, "xyz", 3, NULL, 0);
    assert_int_equal(bwp_parse_server(b, n, NULL, false, &f), 0);
    assert_int_equal(f.u.token.n_ids, 1);
    assert_int_equal(bwp_rd32(f.u.token.ids), 77);
    assert_memory_equal(f.u.token.text, "xyz", 3);
    assert_int_equal(bwp_parse_server(b, n - 1, NULL, false, &f), -EBADMSG);
    n = bwp_build_pong(b, sizeof b, 3, 4, 2, NULL, 0);
    assert_int_equal(bwp_parse_server(b, n, NULL, false, &f), 0);
    assert_int_equal(f.u.pong.queue_depth, 4);
    assert_int_equal(f.u.pong.flags, 2);
    b[0] = 'X';
    assert_int_equal(bwp_parse_server(b, n, NULL, false, &f), -EPROTO);
}

/* ---- rules 2–6 ---- */

static void test_rule2_unanswerable(void **s)
{
    (void)s;
    uint8_t b[64];
    struct bwp_client_frame f;
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 5, NULL, 0);
    for (size_t k = 0; k < 24; k++) {          /* every datagram under 24 bytes: silence */
        struct bwp_verdict v = parse(b, k, BWP_UDP, &LIM, &f);
        assert_int_not_equal(v.code, BWP_OK);
        assert_false(v.answer);
    }
    b[2] = 'Q';                                /* magic not BWP+digit */
    struct bwp_verdict v = parse(b, n, BWP_UDP, &LIM, &f);
    assert_false(v.answer);
    v = parse(b, n, BWP_TCP, &LIM, &f);        /* TCP: BAD_FRAME rid 0 then close */
    expect(v, BWP_E_BAD_FRAME, 0);
    assert_true(v.close);
    b[2] = 'P'; b[3] = 'x';
    assert_false(parse(b, n, BWP_UDP, &LIM, &f).answer);
    /* the stream is judged on its first 4 bytes */
    struct bwp_verdict sv;
    assert_int_equal(bwp_stream_need(b, 3, &sv), 0);
    assert_int_equal(bwp_stream_need(b, 4, &sv), SIZE_MAX);
    expect(sv, BWP_E_BAD_FRAME, 0);
    assert_true(sv.close);
}

static void test_rule3_version(void **s)
{
    (void)s;
    uint8_t b[64];
    struct bwp_client_frame f;
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 0x55, NULL, 0);
    b[3] = '2';
    struct bwp_verdict v = parse(b, n, BWP_UDP, &LIM, &f);
    expect(v, BWP_E_BAD_VERSION, 0x55);
    assert_false(v.close);
    v = parse(b, n, BWP_TCP, &LIM, &f);
    expect(v, BWP_E_BAD_VERSION, 0x55);
    assert_true(v.close);
    struct bwp_verdict sv;
    assert_int_equal(bwp_stream_need(b, 23, &sv), 0);
    assert_int_equal(bwp_stream_need(b, 24, &sv), SIZE_MAX);
    expect(sv, BWP_E_BAD_VERSION, 0x55);
    b[3] = '1';
    assert_int_equal(bwp_stream_need(b, 24, &sv), 24);
}

static void test_rule4_size(void **s)
{
    (void)s;
    uint8_t b[128];
    struct bwp_client_frame f;
    struct bwp_generate g = gen_text("hello");
    size_t n = bwp_build_generate(b, sizeof b, 8, &g, NULL, 0);
    expect(parse(b, n - 1, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 8);
    b[n] = 0;
    expect(parse(b, n + 1, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 8);
    expect(parse(b, 24, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 8);
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_OK, 8);
}

static void test_rule5_rid0(void **s)
{
    (void)s;
    uint8_t b[64];
    struct bwp_client_frame f;
    size_t n = bwp_build_simple(b, sizeof b, BWP_CANCEL, 0, NULL, 0);
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 0);
    expect(parse(b, n, BWP_TCP, &LIM, &f), BWP_E_BAD_FRAME, 0);
}

static void test_rule6_reserved_flags_options(void **s)
{
    (void)s;
    uint8_t b[128];
    struct bwp_client_frame f;
    size_t n = bwp_build_simple(b, sizeof b, BWP_PING, 3, NULL, 0);
    b[6] = 1;
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 3);
    b[6] = 0; b[7] = 0x80;
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 3);
    b[7] = 0;
    for (int bit = 1; bit < 8; bit++) {
        b[5] = (uint8_t)(1 << bit);
        expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 3);
    }
    b[5] = 0;
    bwp_wr32(b + 12, 999);                     /* seq in a client frame is ignored */
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_OK, 3);
    struct bwp_generate g = gen_text("x");
    for (int bit = 2; bit < 8; bit++) {
        g.options = (uint8_t)(1 << bit);
        expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    }
    g.options = 3;
    expect(gen_verdict(&g, &LIM), BWP_OK, 42);
}

static void test_unknown_types(void **s)
{
    (void)s;
    uint8_t b[64];
    struct bwp_client_frame f;
    const uint8_t bad[] = { 0x00, 0x05, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0xff };
    for (size_t i = 0; i < sizeof bad; i++) {
        size_t n = bwp_build_simple(b, sizeof b, bad[i], 4, NULL, 0);
        expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 4);
    }
}

static void test_payload_sizes(void **s)
{
    (void)s;
    uint8_t b[128] = { 0 };
    struct bwp_client_frame f;
    bwp_put_header(b, BWP_CANCEL, 0, 1, 0, 6);
    expect(parse(b, 25, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 6);
    bwp_put_header(b, BWP_PING, 0, 4, 0, 6);
    expect(parse(b, 28, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 6);
    for (uint32_t len = 0; len < 9; len++) {
        bwp_put_header(b, BWP_RESEND, 0, len, 0, 6);
        expect(parse(b, 24 + len, BWP_UDP, &LIM, &f), len == 4 ? BWP_OK : BWP_E_BAD_FRAME, 6);
    }
    for (uint32_t len = 0; len < 9; len++) {   /* rule 14: RESEND on TCP is ignored, payload and all */
        bwp_put_header(b, BWP_RESEND, 0, len, 0, 6);
        expect(parse(b, 24 + len, BWP_TCP, &LIM, &f), BWP_OK, 6);
    }
    bwp_put_header(b, BWP_RESEND, 0, 4, 0, 6);
    bwp_wr32(b + 24, 12);
    expect(parse(b, 28, BWP_UDP, &LIM, &f), BWP_OK, 6);
    assert_int_equal(f.from_seq, 12);
    /* GENERATE: fixed part truncated, prompt_len disagreeing */
    struct bwp_generate g = gen_text("abc");
    size_t n = bwp_build_generate(b, sizeof b, 6, &g, NULL, 0);
    for (uint32_t len = 0; len < 35; len++) {
        bwp_wr32(b + 8, len);
        struct bwp_verdict v = parse(b, 24 + len, BWP_UDP, &LIM, &f);
        expect(v, BWP_E_BAD_FRAME, 6);
    }
    bwp_wr32(b + 8, 35);
    bwp_wr32(b + 24 + 28, 2);
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 6);
    bwp_wr32(b + 24 + 28, 3);
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_OK, 6);
}

/* ---- rule 7 ---- */

static void test_rule7_too_large(void **s)
{
    (void)s;
    static uint8_t big[2048], b[4096];
    memset(big, 'a', sizeof big);
    struct bwp_client_frame f;
    struct bwp_generate g = gen_text("");
    g.prompt = big;
    g.prompt_len = 1000;
    expect(gen_verdict(&g, &LIM), BWP_OK, 42);
    g.prompt_len = 1001;
    struct bwp_verdict lv = gen_verdict(&g, &LIM);
    expect(lv, BWP_E_TOO_LARGE, 42);
    char why[128];   /* the ERROR names the limit it was judged by */
    assert_string_equal(bwp_verdict_msg(&lv, why, sizeof why), "prompt_len over the server's limit (max_prompt_bytes 1000)");
    /* kind 2 ids counted as bytes */
    struct bwp_limits lim = LIM;
    lim.vocab_size = 0;
    g.prompt_kind = 2;
    g.prompt_len = 1004;
    expect(gen_verdict(&g, &lim), BWP_E_TOO_LARGE, 42);
    /* UDP: a header whose length cannot fit one datagram */
    bwp_put_header(b, BWP_GENERATE, 0, 70000, 0, 42);
    expect(parse(b, 100, BWP_UDP, &LIM, &f), BWP_E_TOO_LARGE, 42);
    /* rule 7 names only prompt_len and the datagram: over UDP a CANCEL with 2,000 bytes of
     * payload is malformed (BAD_FRAME), and so is a GENERATE whose length exceeds its prompt */
    bwp_put_header(b, BWP_CANCEL, 0, 2000, 0, 42);
    expect(parse(b, 24 + 2000, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 42);
    g = gen_text("hi");
    size_t gn = bwp_build_generate(b, sizeof b, 42, &g, NULL, 0);
    bwp_wr32(b + 8, bwp_rd32(b + 8) + 1100);
    expect(parse(b, gn + 1100, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 42);
    /* on TCP a frame over the limit is TOO_LARGE (the stream reader skips it) */
    bwp_put_header(b, BWP_CANCEL, 0, 2000, 0, 42);
    expect(parse(b, 24 + 2000, BWP_TCP, &LIM, &f), BWP_E_TOO_LARGE, 42);
    /* TCP oversize: skipped up to 16 MiB, closed beyond */
    bwp_put_header(b, BWP_GENERATE, 0, 16u << 20, 0, 42);
    struct bwp_verdict v = bwp_parse_oversize(b, &LIM);
    expect(v, BWP_E_TOO_LARGE, 42);
    assert_false(v.close);
    bwp_put_header(b, BWP_GENERATE, 0, (16u << 20) + 1, 0, 42);
    v = bwp_parse_oversize(b, &LIM);
    expect(v, BWP_E_TOO_LARGE, 42);
    assert_true(v.close);
    assert_string_equal(bwp_verdict_msg(&v, why, sizeof why), "frame over the server's size limit (max_prompt_bytes 1000)");
    v = (struct bwp_verdict){ .code = BWP_E_BAD_FRAME, .msg = "x", .limit = 5 };   /* other codes: as they are */
    assert_ptr_equal(bwp_verdict_msg(&v, why, sizeof why), v.msg);
    assert_int_equal(bwp_frame_max(&LIM), 24 + 32 + 1000 + 40);
}

/* ---- rule 10 and BAD_PARAMS ---- */

/* The parser is pure (DESIGN.md): a verdict's message lives in the caller's frame, not in a
 * buffer the next parse reuses. Two refusals with numbers, kept side by side, each keep their own. */
static void test_verdicts_independent(void **s)
{
    (void)s;
    struct bwp_generate g = gen_text("hi");
    g.max_tokens = 300;
    struct bwp_verdict a = gen_verdict(&g, &LIM);
    g.max_tokens = 400;
    struct bwp_verdict b = gen_verdict(&g, &LIM);
    expect(a, BWP_E_BAD_PARAMS, 42);
    expect(b, BWP_E_BAD_PARAMS, 42);
    char wa[512], wb[512];
    assert_string_equal(bwp_verdict_msg(&a, wa, sizeof wa), "max_tokens 300 over the server limit of 256");
    assert_string_equal(bwp_verdict_msg(&b, wb, sizeof wb), "max_tokens 400 over the server limit of 256");
    /* the same for the chat order (message 1 and message 2 named) and the context check */
    const uint8_t two_asst[] = { 1, 1, 0, 0, 0, 'h', 2, 1, 0, 0, 0, 'a', 2, 1, 0, 0, 0, 'b', 3, 1, 0, 0, 0, 't', 3, 1, 0, 0, 0, 'u', 0, 1, 0, 0, 0, 's' };
    g = gen_text("hi");
    g.prompt_kind = BWP_PROMPT_CHAT;
    g.prompt = two_asst;
    g.prompt_len = sizeof two_asst;           /* message 5 (system after tool) is out of order */
    a = gen_verdict(&g, &LIM);
    g.prompt_len = 18;                        /* user, assistant, assistant: ends with an assistant */
    b = gen_verdict(&g, &LIM);
    expect(a, BWP_E_BAD_PARAMS, 42);
    expect(b, BWP_E_BAD_PARAMS, 42);
    assert_non_null(strstr(bwp_verdict_msg(&a, wa, sizeof wa), "message 5: a system message cannot follow"));
    assert_non_null(strstr(bwp_verdict_msg(&b, wb, sizeof wb), "message 2: the conversation ends with an assistant"));
}

static void test_rule10_params(void **s)
{
    (void)s;
    struct bwp_generate g = gen_text("hi");
    g.max_tokens = 0;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    g.max_tokens = 257;
    struct bwp_verdict v = gen_verdict(&g, &LIM);
    expect(v, BWP_E_BAD_PARAMS, 42);
    assert_string_equal(vmsg(&v), "max_tokens 257 over the server limit of 256");   /* the client learns the limit */
    g.max_tokens = 256;
    expect(gen_verdict(&g, &LIM), BWP_OK, 42);
    const float bad_t[] = { -0.001f, NAN, INFINITY, -INFINITY };
    for (size_t i = 0; i < 4; i++) {
        g = gen_text("hi");
        g.temperature = bad_t[i];
        expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    }
    const float bad_p[] = { 0.0f, -0.5f, 1.0001f, NAN, INFINITY };
    for (size_t i = 0; i < 5; i++) {
        g = gen_text("hi");
        g.top_p = bad_p[i];
        expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    }
    g = gen_text("hi");
    g.top_p = 1e-6f;
    g.temperature = 2.0f;
    g.top_k = 0xffffffffu;
    expect(gen_verdict(&g, &LIM), BWP_OK, 42);
    for (int k = 3; k < 256; k += 50) {
        g = gen_text("hi");
        g.prompt_kind = (uint8_t)k;
        expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    }
    g = gen_text("");
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    g.prompt_kind = 1;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    g.prompt_kind = 2;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
}

static void test_chat_prompts(void **s)
{
    (void)s;
    struct bwp_generate g = gen_text("");
    g.prompt_kind = 1;
    const uint8_t ok[] = { 0, 2, 0, 0, 0, 'h', 'i', 1, 0, 0, 0, 0, 2, 1, 0, 0, 0, 'x', 3, 1, 0, 0, 0, 'y' };
    g.prompt = ok;
    g.prompt_len = sizeof ok;
    expect(gen_verdict(&g, &LIM), BWP_OK, 42);
    /* the conversation's order, as the chat template checks it (mistral-common's validator), is
     * BAD_PARAMS here, in rule 1's place, not after a queue place (where BUSY could come first):
     * a tool result after a user message, no user message, an assistant message last */
    const uint8_t tool_after_user[] = { 1, 1, 0, 0, 0, 'h', 3, 1, 0, 0, 0, 'x' };
    const uint8_t no_user[] = { 0, 1, 0, 0, 0, 's' };
    const uint8_t assistant_last[] = { 1, 1, 0, 0, 0, 'h', 2, 1, 0, 0, 0, 'a' };
    const struct { const uint8_t *p; uint32_t n; const char *says; } order[] = {
        { tool_after_user, sizeof tool_after_user, "message 1: a tool message cannot follow a user message" },
        { no_user, sizeof no_user, "the conversation has no user message" },
        { assistant_last, sizeof assistant_last, "message 1: the conversation ends with an assistant message" },
    };
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        g.prompt = order[i].p;
        g.prompt_len = order[i].n;
        struct bwp_verdict v = gen_verdict(&g, &LIM);
        expect(v, BWP_E_BAD_PARAMS, 42);
        assert_non_null(strstr(vmsg(&v), order[i].says));
    }
    const uint8_t role4[] = { 4, 1, 0, 0, 0, 'h' };
    g.prompt = role4; g.prompt_len = sizeof role4;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    const uint8_t trunc[] = { 1, 5, 0, 0, 0, 'h' };
    g.prompt = trunc; g.prompt_len = sizeof trunc;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_FRAME, 42);
    const uint8_t short_hdr[] = { 1, 0, 0, 0, 0, 2, 0 };
    g.prompt = short_hdr; g.prompt_len = sizeof short_hdr;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_FRAME, 42);
    const uint8_t bad_utf8[] = { 1, 2, 0, 0, 0, 0xc3, 0x28 };
    g.prompt = bad_utf8; g.prompt_len = sizeof bad_utf8;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_FRAME, 42);
    /* BAD_FRAME wins over BAD_PARAMS (role 9 and invalid UTF-8) */
    const uint8_t both[] = { 9, 1, 0, 0, 0, 0xff };
    g.prompt = both; g.prompt_len = sizeof both;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_FRAME, 42);
    /* the iterator */
    const uint8_t *p = ok, *text;
    uint8_t role;
    uint32_t len;
    assert_int_equal(bwp_msg_next(&p, ok + sizeof ok, &role, &text, &len), 1);
    assert_int_equal(role, 0);
    assert_int_equal(len, 2);
    assert_int_equal(bwp_msg_next(&p, ok + sizeof ok, &role, &text, &len), 1);
    assert_int_equal(len, 0);
    assert_int_equal(bwp_msg_next(&p, ok + sizeof ok, &role, &text, &len), 1);
    assert_int_equal(role, 2);
    assert_int_equal(bwp_msg_next(&p, ok + sizeof ok, &role, &text, &len), 1);
    assert_int_equal(role, 3);
    assert_int_equal(bwp_msg_next(&p, ok + sizeof ok, &role, &text, &len), 0);
}

static void test_id_prompts(void **s)
{
    (void)s;
    uint8_t ids[12];
    bwp_wr32(ids, 1); bwp_wr32(ids + 4, 32767); bwp_wr32(ids + 8, 5);
    struct bwp_generate g = gen_text("");
    g.prompt_kind = 2;
    g.prompt = ids;
    g.prompt_len = 12;
    expect(gen_verdict(&g, &LIM), BWP_OK, 42);
    g.prompt_len = 11;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    g.prompt_len = 2;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    bwp_wr32(ids + 4, 32768);
    g.prompt_len = 12;
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_PARAMS, 42);
    struct bwp_limits lim = LIM;
    lim.vocab_size = 0;    /* not checked when unknown */
    expect(gen_verdict(&g, &lim), BWP_OK, 42);
    /* the context: 3 ids fit 4 positions, not 3 (the completion needs one); TOO_LARGE, and before
     * BAD_PARAMS (id 32768 is past the vocabulary), as rule 1 orders them */
    lim.max_ctx = 3;
    struct bwp_verdict v = gen_verdict(&g, &lim);
    expect(v, BWP_E_TOO_LARGE, 42);
    assert_string_equal(vmsg(&v), "prompt of 3 tokens does not fit the context of 3 tokens");
    lim = LIM;
    lim.max_ctx = 3;
    expect(gen_verdict(&g, &lim), BWP_E_TOO_LARGE, 42);
    lim.max_ctx = 4;
    expect(gen_verdict(&g, &lim), BWP_E_BAD_PARAMS, 42);
    bwp_wr32(ids + 4, 5);
    expect(gen_verdict(&g, &lim), BWP_OK, 42);
}

static void test_utf8(void **s)
{
    (void)s;
    struct { const char *s; bool ok; } cases[] = {
        { "plain", true }, { "caf\xc3\xa9", true }, { "\xe2\x82\xac", true }, { "\xf0\x9f\x98\x80", true },
        { "\xc3", false }, { "\xc0\xaf", false }, { "\xe0\x80\xaf", false }, { "\xed\xa0\x80", false },
        { "\xf4\x90\x80\x80", false }, { "\xff", false }, { "\x80", false }, { "\xf0\x9f\x98", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(bwp_utf8_valid((const uint8_t *)cases[i].s, strlen(cases[i].s)), cases[i].ok);
        struct bwp_generate g = gen_text(cases[i].s);
        expect(gen_verdict(&g, &LIM), cases[i].ok ? BWP_OK : BWP_E_BAD_FRAME, 42);
    }
    const uint8_t part[] = { 'a', 0xf0, 0x9f, 0x98 };
    assert_int_equal(bwp_utf8_complete(part, 4), 1);
    assert_int_equal(bwp_utf8_complete(part, 1), 1);
    const uint8_t whole[] = { 'a', 0xf0, 0x9f, 0x98, 0x80 };
    assert_int_equal(bwp_utf8_complete(whole, 5), 5);
}

/* ---- rule 1: ordering ---- */

static void test_rule1_order(void **s)
{
    (void)s;
    static uint8_t big[2048];
    memset(big, 0xff, sizeof big);                  /* invalid UTF-8 */
    struct bwp_generate g = gen_text("");
    g.prompt = big;
    g.max_tokens = 0;                               /* BAD_PARAMS too */
    g.prompt_len = 1001;                            /* TOO_LARGE beats BAD_FRAME and BAD_PARAMS */
    expect(gen_verdict(&g, &LIM), BWP_E_TOO_LARGE, 42);
    g.prompt_len = 10;                              /* BAD_FRAME beats BAD_PARAMS */
    expect(gen_verdict(&g, &LIM), BWP_E_BAD_FRAME, 42);
    /* header (reserved) beats everything after it */
    uint8_t b[4096];
    struct bwp_client_frame f;
    g.prompt_len = 1001;
    size_t n = bwp_build_generate(b, sizeof b, 42, &g, NULL, 0);
    b[6] = 1;
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_FRAME, 42);
    /* version beats reserved */
    b[3] = '3';
    expect(parse(b, n, BWP_UDP, &LIM, &f), BWP_E_BAD_VERSION, 42);
    /* AUTH beats TOO_LARGE: keyed server, frame without trailer */
    struct bwp_key key = { .len = 4 };
    memcpy(key.bytes, "seed", 4);
    struct bwp_limits lim = LIM;
    lim.key = &key;
    b[3] = '1'; b[6] = 0;
    struct bwp_verdict v = parse(b, n, BWP_UDP, &lim, &f);
    expect(v, BWP_E_AUTH, 42);
    assert_true(v.no_trailer);
    /* AUTH beats the header's type and request_id checks (BAD_FRAME, rule 1 "(sizes, fields)"):
     * without a trailer or with a wrong MAC, an unknown type or request_id 0 draws AUTH, unsigned;
     * with a good MAC, BAD_FRAME, signed */
    static struct bwp_replay_slot slots[16];
    struct bwp_replay rp;
    bwp_replay_init(&rp, slots, 16);
    const struct { uint8_t type; uint64_t rid; } odd[] = { { 0x09, 42 }, { BWP_PING, 0 } };
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        n = bwp_build_simple(b, sizeof b, BWP_PING, odd[i].rid, NULL, 0);
        b[4] = odd[i].type;
        v = bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f);
        expect(v, BWP_E_AUTH, odd[i].rid);
        assert_true(v.no_trailer);
        size_t m = bwp_seal(b, n, sizeof b, &key, NOW);
        b[m - 1] ^= 1;                                /* wrong MAC */
        v = bwp_parse_client(b, m, BWP_UDP, &lim, &rp, 1, NOW, &f);
        expect(v, BWP_E_AUTH, odd[i].rid);
        assert_true(v.no_trailer);
        b[m - 1] ^= 1;
        v = bwp_parse_client(b, m, BWP_UDP, &lim, &rp, 1, NOW, &f);
        expect(v, BWP_E_BAD_FRAME, odd[i].rid);
        assert_false(v.no_trailer);
    }
}

/* ---- AUTH ---- */

static void test_auth(void **s)
{
    (void)s;
    struct bwp_key key = { .len = 32 };
    for (int i = 0; i < 32; i++) key.bytes[i] = (uint8_t)(i * 7 + 1);
    struct bwp_limits lim = LIM;
    lim.key = &key;
    static struct bwp_replay_slot slots[256];
    struct bwp_replay rp;
    bwp_replay_init(&rp, slots, 256);
    uint8_t b[512], c[512];
    struct bwp_client_frame f;
    struct bwp_generate g = gen_text("hi");
    size_t n = bwp_build_generate(b, sizeof b, 11, &g, &key, NOW + 5);
    assert_int_equal(n, 24 + 32 + 2 + 40);
    assert_int_equal(b[5], 1);
    assert_int_equal(bwp_rd32(b + 8), 32 + 2 + 40);
    /* independent check, protocol.md rule 17: the trailer is ts + HMAC-SHA-256(key, the header
     * as sent + the payload before the trailer); the timestamp is not covered */
    uint8_t mac[32];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key.bytes, 32);
    crypto_auth_hmacsha256_update(&st, b, n - 40);
    crypto_auth_hmacsha256_final(&st, mac);
    assert_memory_equal(mac, b + n - 32, 32);
    assert_int_equal(bwp_rd64(b + n - 40), NOW + 5);

    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_OK, 11);
    assert_int_equal(f.gen.prompt_len, 2);
    assert_int_equal(f.auth_ts_us, NOW + 5);
    /* replayed from the same endpoint: AUTH; from another endpoint: fine */
    struct bwp_verdict v = bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW + 10, &f);
    expect(v, BWP_E_AUTH, 11);
    assert_true(v.no_trailer);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 2, NOW, &f), BWP_OK, 11);
    /* any flipped byte of the header, payload or MAC: AUTH */
    for (size_t i = 0; i < n; i += i < 24 ? 1 : 9) {
        if (i >= n - 40 && i < n - 32)
            continue;                                 /* the timestamp: below */
        memcpy(c, b, n);
        c[i] ^= 0x20;
        struct bwp_verdict vf = bwp_parse_client(c, n, BWP_UDP, &lim, &rp, 3, NOW, &f);
        if (i >= 24 || vf.code == BWP_OK)             /* header bytes may fail an earlier check */
            expect(vf, BWP_E_AUTH, i < 24 ? vf.request_id : 11);
    }
    /* the MAC does not cover the timestamp (rule 17): a changed one within 30 s still verifies;
     * only the replay window (endpoint, request_id, timestamp) and the skew guard it */
    memcpy(c, b, n);
    c[n - 40] ^= 0x01;
    expect(bwp_parse_client(c, n, BWP_UDP, &lim, &rp, 3, NOW, &f), BWP_OK, 11);
    expect(bwp_parse_client(c, n, BWP_UDP, &lim, &rp, 3, NOW, &f), BWP_E_AUTH, 11);
    /* wrong key */
    struct bwp_key other = key;
    other.bytes[0] ^= 1;
    n = bwp_build_generate(b, sizeof b, 12, &g, &other, NOW);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_E_AUTH, 12);
    /* timestamps: 30 s away is fine, 30 s + 1 µs is not */
    n = bwp_build_generate(b, sizeof b, 13, &g, &key, NOW - 30000000ull);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_OK, 13);
    n = bwp_build_generate(b, sizeof b, 13, &g, &key, NOW - 30000001ull);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_E_AUTH, 13);
    n = bwp_build_generate(b, sizeof b, 13, &g, &key, NOW + 30000001ull);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_E_AUTH, 13);
    /* missing trailer on a keyed server; trailer on an unkeyed one */
    n = bwp_build_simple(b, sizeof b, BWP_PING, 14, NULL, 0);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_E_AUTH, 14);
    n = bwp_build_simple(b, sizeof b, BWP_PING, 14, &key, NOW);
    expect(bwp_parse_client(b, n, BWP_UDP, &LIM, NULL, 1, NOW, &f), BWP_E_AUTH, 14);
    expect(bwp_parse_client(b, n, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_OK, 14);
    /* AUTH flag with a length too short to hold the trailer */
    bwp_put_header(b, BWP_PING, 1, 10, 0, 15);
    expect(bwp_parse_client(b, 34, BWP_UDP, &lim, &rp, 1, NOW, &f), BWP_E_AUTH, 15);
    /* server frames carry the trailer and parse back with the key, not without it */
    struct bwp_server_frame sf;
    n = bwp_build_accepted(b, sizeof b, 16, 0, 0, 3, &key, NOW);
    assert_int_equal(n, 72);
    assert_int_equal(bwp_parse_server(b, n, &key, true, &sf), 0);
    assert_int_equal(sf.u.accepted.prompt_tokens, 3);
    assert_int_equal(bwp_parse_server(b, n, &other, true, &sf), -EACCES);
    n = bwp_build_accepted(b, sizeof b, 16, 0, 0, 3, NULL, 0);
    assert_int_equal(bwp_parse_server(b, n, &key, true, &sf), -EACCES);
    /* ... except ERROR AUTH, which answers a frame that failed authentication (rule 17) */
    n = bwp_build_error(b, sizeof b, 16, 0, BWP_E_AUTH, "auth MAC wrong", NULL, 0);
    assert_int_equal(bwp_parse_server(b, n, &key, true, &sf), 0);
    assert_int_equal(sf.u.error.code, BWP_E_AUTH);
    n = bwp_build_error(b, sizeof b, 16, 0, BWP_E_BUSY, "busy", NULL, 0);
    assert_int_equal(bwp_parse_server(b, n, &key, true, &sf), -EACCES);
    /* oversize TCP frames on a keyed server */
    bwp_put_header(b, BWP_GENERATE, 0, 5000, 0, 17);
    expect(bwp_parse_oversize(b, &lim), BWP_E_AUTH, 17);
    bwp_put_header(b, BWP_GENERATE, 1, 5000, 0, 17);
    expect(bwp_parse_oversize(b, &lim), BWP_E_TOO_LARGE, 17);
    expect(bwp_parse_oversize(b, &LIM), BWP_E_AUTH, 17);
}

/* A skipped oversize frame's trailer, checked while streaming in uneven chunks (rule 1). */
static void test_mac_stream(void **s)
{
    (void)s;
    struct bwp_key key = { .bytes = "stream-key", .len = 10 };
    struct bwp_limits lim = LIM;
    lim.key = &key;
    static uint8_t prompt[3000], b[4096];
    for (size_t i = 0; i < sizeof prompt; i++) prompt[i] = (uint8_t)('a' + i % 26);
    struct bwp_generate g = gen_text("");
    g.prompt = prompt;
    g.prompt_len = sizeof prompt;
    size_t n = bwp_build_generate(b, sizeof b, 77, &g, &key, NOW);
    const size_t chunks[] = { 1, 39, 40, 41, 1000, 7, 3 };
    for (int flip = 0; flip < 3; flip++) {
        if (flip == 1) b[1000] ^= 1;                      /* payload byte */
        if (flip == 2) { b[1000] ^= 1; b[n - 1] ^= 1; }   /* MAC byte */
        struct bwp_mac_stream m;
        bwp_mac_stream_init(&m, &key, b);
        size_t at = 24;
        for (int c = 0; at < n; c++) {
            size_t k = chunks[c % 7];
            if (k > n - at) k = n - at;
            bwp_mac_stream_feed(&m, b + at, k);
            at += k;
        }
        struct bwp_verdict v = bwp_mac_stream_verdict(&m, &lim, NULL, 1, 77, NOW);
        expect(v, flip ? BWP_E_AUTH : BWP_E_TOO_LARGE, 77);
        assert_int_equal(v.no_trailer, flip != 0);
    }
    b[n - 1] ^= 1;
    struct bwp_mac_stream m;                              /* stale timestamp */
    bwp_mac_stream_init(&m, &key, b);
    bwp_mac_stream_feed(&m, b + 24, n - 24);
    expect(bwp_mac_stream_verdict(&m, &lim, NULL, 1, 77, NOW + 31000000ull), BWP_E_AUTH, 77);
    bwp_mac_stream_init(&m, &key, b);                     /* shorter than a trailer */
    bwp_mac_stream_feed(&m, b + 24, 30);
    expect(bwp_mac_stream_verdict(&m, &lim, NULL, 1, 77, NOW), BWP_E_AUTH, 77);
}

static void test_replay_window(void **s)
{
    (void)s;
    static struct bwp_replay_slot slots[64];
    struct bwp_replay rp;
    bwp_replay_init(&rp, slots, 64);
    assert_int_equal(bwp_replay_check(&rp, 1, 1, NOW, NOW), 0);
    assert_int_equal(bwp_replay_check(&rp, 1, 1, NOW, NOW), -EALREADY);
    assert_int_equal(bwp_replay_check(&rp, 1, 1, NOW + 1, NOW), 0);
    assert_int_equal(bwp_replay_check(&rp, 1, 2, NOW, NOW), 0);
    int rc = 0;
    for (uint64_t i = 3; i < 200 && rc == 0; i++)
        rc = bwp_replay_check(&rp, 1, i, NOW, NOW);
    assert_int_equal(rc, -ENOSPC);            /* full of live entries: refuse, never forget */
    /* an entry lives while its timestamp could still be accepted (now ≤ ts + 30 s), no longer */
    assert_int_equal(bwp_replay_check(&rp, 9, 9, NOW + 30000000ull, NOW + 30000000ull), -ENOSPC);
    assert_int_equal(bwp_replay_check(&rp, 9, 9, NOW + 30000001ull, NOW + 30000001ull), 0);
    assert_int_equal(bwp_replay_check(&rp, 1, 1, NOW, NOW + 30000000ull), -EALREADY);   /* NOW + 1 still there */
}

/* Every truncation of a valid frame of every type is refused, never accepted. */
static void test_truncations(void **s)
{
    (void)s;
    uint8_t frames[4][256];
    size_t lens[4];
    struct bwp_generate g = gen_text("trunc");
    lens[0] = bwp_build_generate(frames[0], 256, 21, &g, NULL, 0);
    lens[1] = bwp_build_simple(frames[1], 256, BWP_CANCEL, 21, NULL, 0);
    lens[2] = bwp_build_simple(frames[2], 256, BWP_PING, 21, NULL, 0);
    lens[3] = bwp_build_resend(frames[3], 256, 21, 3, NULL, 0);
    struct bwp_client_frame f;
    for (int t = 0; t < 4; t++) {
        expect(parse(frames[t], lens[t], BWP_UDP, &LIM, &f), BWP_OK, 21);
        for (size_t k = 0; k < lens[t]; k++) {
            struct bwp_verdict v = parse(frames[t], k, BWP_UDP, &LIM, &f);
            assert_int_not_equal(v.code, BWP_OK);
            if (k < 24)
                assert_false(v.answer);
            else
                expect(v, BWP_E_BAD_FRAME, 21);
        }
    }
    /* and as a TCP frame whose length field was cut to match */
    uint8_t b[256];
    memcpy(b, frames[0], lens[0]);
    for (uint32_t len = 0; len < lens[0] - 24; len++) {
        bwp_wr32(b + 8, len);
        expect(parse(b, 24 + len, BWP_TCP, &LIM, &f), BWP_E_BAD_FRAME, 21);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_generate_layout),
        cmocka_unit_test(test_server_layouts),
        cmocka_unit_test(test_server_parse_roundtrip),
        cmocka_unit_test(test_rule2_unanswerable),
        cmocka_unit_test(test_rule3_version),
        cmocka_unit_test(test_rule4_size),
        cmocka_unit_test(test_rule5_rid0),
        cmocka_unit_test(test_rule6_reserved_flags_options),
        cmocka_unit_test(test_unknown_types),
        cmocka_unit_test(test_payload_sizes),
        cmocka_unit_test(test_rule7_too_large),
        cmocka_unit_test(test_rule10_params),
        cmocka_unit_test(test_verdicts_independent),
        cmocka_unit_test(test_chat_prompts),
        cmocka_unit_test(test_id_prompts),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_rule1_order),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_mac_stream),
        cmocka_unit_test(test_replay_window),
        cmocka_unit_test(test_truncations),
    };
    return cmocka_run_group_tests_name("bwp", tests, NULL, NULL);
}
