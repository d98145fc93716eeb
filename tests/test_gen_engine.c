/* test_gen_engine.c — the engine-backed generator (dataplane/gen_engine.c) on a golden fixture,
 * on the CPU backend and, with a GPU, the CUDA backend: the prefix cache. A generator with the
 * cache on and one with it off serve the same requests (ids prompts, greedy); the ids they
 * produce must be equal, and the cached one must report exactly the positions it could reuse:
 * the longest common prefix of the new prompt and the ids whose keys and values the engine
 * holds (the last prompt plus every completion token that was run through it), never the
 * prompt's last token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/bwp.h"
#include "dataplane/gen_engine.h"
#include "model/default_model.h"
#include "model/tokenizer.h"
#include "tests/support/fixtures.h"

#define MAX_IDS 128

struct pair {
    struct generator on, off;
    struct fixture f;
};

static int setup(void **state, enum engine_backend backend)
{
    char dir[4096];
    if (!fixture_find("mistral-tiny-bf16", dir, sizeof dir)) {
        fprintf(stderr, "SKIP: fixture mistral-tiny-bf16 not found\n");
        *state = NULL;
        return 0;
    }
    struct pair *p = calloc(1, sizeof *p);
    if (!p || fixture_load(&p->f, dir))
        return -1;
    struct bora_err err = { "" };
    struct gen_engine_opts o = { .model_dir = dir, .backend = backend, .max_ctx = 256,
                                 .n_threads = 2, .prefix_cache = true };
    int rc = gen_engine_open(&p->on, &o, &err);
    if (rc == -ENODEV && backend == ENGINE_BACKEND_CUDA) {
        fprintf(stderr, "SKIP: CUDA backend: %s\n", err.msg);
        fixture_free(&p->f);
        free(p);
        *state = NULL;
        return 0;
    }
    if (rc) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    o.prefix_cache = false;
    if (gen_engine_open(&p->off, &o, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    *state = p;
    return 0;
}

static int setup_cpu(void **state)
{
    return setup(state, ENGINE_BACKEND_CPU);
}

static int setup_cuda(void **state)
{
    return setup(state, ENGINE_BACKEND_CUDA);
}

static int teardown(void **state)
{
    struct pair *p = *state;
    if (p) {
        p->on.ops->close(&p->on);
        p->off.ops->close(&p->off);
        fixture_free(&p->f);
        free(p);
    }
    return 0;
}

/* prepare of a prompt (as the decoder does at admission), which start may reuse. */
static void prepare_ids(struct generator *g, const int32_t *ids, int n)
{
    uint8_t prompt[4 * MAX_IDS];
    for (int i = 0; i < n; i++)
        bwp_wr32(prompt + 4 * i, (uint32_t)ids[i]);
    struct gen_request rq = { .prompt_kind = 2, .prompt = prompt, .prompt_len = 4 * (uint32_t)n, .top_p = 1 };
    struct bora_err err = { "" };
    uint32_t n_tok = 0;
    assert_int_equal(g->ops->prepare(g, &rq, &n_tok, &err), 0);
    assert_int_equal(n_tok, n);
}

/* One greedy request of n ids for k tokens, as the decoder drives it; returns cached_tokens. */
static uint32_t run(struct generator *g, const int32_t *ids, int n, int k, int32_t *out)
{
    uint8_t prompt[4 * MAX_IDS];
    assert_true(n <= MAX_IDS);
    for (int i = 0; i < n; i++)
        bwp_wr32(prompt + 4 * i, (uint32_t)ids[i]);
    struct gen_request rq = { .prompt_kind = 2, .prompt = prompt, .prompt_len = 4 * (uint32_t)n,
                              .max_tokens = (uint16_t)k, .ignore_eos = true, .temperature = 0, .top_p = 1 };
    struct bora_err err = { "" };
    uint32_t n_tok = 0, cached = 12345;
    int rc = g->ops->start(g, &rq, &n_tok, &cached, &err);
    if (rc)
        fail_msg("start: %s", err.msg);
    assert_int_equal(n_tok, n);
    for (int i = 0; i < k; i++) {
        struct gen_token t;
        assert_int_equal(g->ops->step(g, &t, &err), GEN_TOKEN);
        out[i] = (int32_t)t.id;
    }
    g->ops->finish(g);
    return cached;
}

/* The same request on both generators: equal ids; the cached count of the "on" one. */
static uint32_t both(struct pair *p, const int32_t *ids, int n, int k, int32_t *out)
{
    int32_t off_ids[MAX_IDS];
    assert_int_equal(run(&p->off, ids, n, k, off_ids), 0);
    uint32_t cached = run(&p->on, ids, n, k, out);
    for (int i = 0; i < k; i++)
        assert_int_equal(out[i], off_ids[i]);
    return cached;
}

static void test_prefix_reuse(void **state)
{
    struct pair *p = *state;
    if (!p)
        skip();
    assert_true(p->on.prefix_cache);
    assert_false(p->off.prefix_cache);
    const struct fix_case *c = &p->f.cases[0];
    const int n = c->n_prompt;
    assert_true(n >= 4 && n + 16 <= MAX_IDS);
    int32_t a[8], b[8], ids[MAX_IDS];

    /* first request: nothing cached; the fixture's greedy reference up to its first near-tie */
    assert_int_equal(both(p, c->prompt, n, 5, a), 0);
    for (int i = 0; i < 5 && i < c->n_greedy && c->margin[n + i - 1] >= 1e-2f; i++)
        assert_int_equal(a[i], c->greedy[i]);

    /* the conversation goes on: prompt + the 5 tokens sent + one more. The engine ran the
     * first 4 of them (the 5th was sampled and sent, never run): n + 4 positions reused */
    memcpy(ids, c->prompt, sizeof *ids * (size_t)n);
    memcpy(ids + n, a, sizeof a[0] * 5);
    ids[n + 5] = c->prompt[1];
    assert_int_equal(both(p, ids, n + 6, 6, b), (uint32_t)n + 4);

    /* the same prompt again: all of it is cached but its last token, which runs for logits */
    int32_t again[8];
    assert_int_equal(both(p, ids, n + 6, 6, again), (uint32_t)n + 5);
    assert_memory_equal(again, b, sizeof again[0] * 6);

    /* a shorter prompt that the cache covers: again all but its last token */
    assert_int_equal(both(p, c->prompt, n / 2, 3, a), (uint32_t)(n / 2 - 1));

    /* a prompt that differs at its first token reuses nothing; prepared before start (the
     * tokens prepare found are reused), or after another prompt was prepared (they are not) */
    memcpy(ids, c->prompt, sizeof *ids * (size_t)n);
    ids[0] = c->prompt[0] == 1 ? 2 : 1;
    prepare_ids(&p->on, ids, n);
    assert_int_equal(both(p, ids, n, 4, a), 0);
    prepare_ids(&p->on, c->prompt, n);                 /* not the prompt that starts next */
    int32_t a2[8];
    assert_int_equal(run(&p->on, ids, n, 4, a2), n - 1);
    assert_memory_equal(a2, a, sizeof a[0] * 4);

    /* one that differs in the middle reuses what comes before */
    ids[0] = c->prompt[0];
    assert_int_equal(both(p, ids, n, 4, a), 0);   /* ids[0] changed back: the cache held the other */
    /* one that shares only its first token (BOS for text and chat prompts) reuses nothing: it
     * is no hit of the cache */
    int32_t bos_only[MAX_IDS];
    memcpy(bos_only, ids, sizeof *ids * (size_t)n);
    bos_only[1] = ids[1] == 5 ? 6 : 5;
    assert_int_equal(both(p, bos_only, n, 4, a), 0);
    assert_int_equal(both(p, ids, n, 4, a), 0);   /* and back: again only the first token shared */
    ids[n / 2] = ids[n / 2] == 5 ? 6 : 5;
    assert_int_equal(both(p, ids, n, 4, a), (uint32_t)(n / 2));
}

static int stop_calls;
static int stop_now(void *ctx)
{
    (void)ctx;
    return ++stop_calls >= 1;
}

/* The prefill stops when the request's stop callback says so (between the CPU engine's 32-token
 * blocks), start returns -ECANCELED, and the next request is served as if nothing had happened:
 * no position the stopped prefill left half-done is reused. */
static void test_stop_mid_prefill(void **state)
{
    struct pair *p = *state;
    if (!p)
        skip();
    if (strcmp(gen_engine_backend(&p->on), "cpu")) {
        fprintf(stderr, "SKIP: the stop test needs a prompt over one prefill chunk (CPU blocks of 32 here)\n");
        skip();
    }
    const struct fix_case *c = &p->f.cases[0];
    int32_t ids[100], a[4], b[4];
    for (int i = 0; i < 100; i++)
        ids[i] = c->prompt[i % c->n_prompt];
    uint8_t prompt[400];
    for (int i = 0; i < 100; i++)
        bwp_wr32(prompt + 4 * i, (uint32_t)ids[i]);
    struct gen_request rq = { .prompt_kind = 2, .prompt = prompt, .prompt_len = 400, .max_tokens = 4,
                              .ignore_eos = true, .top_p = 1, .stop = stop_now };
    struct bora_err err = { "" };
    uint32_t n_tok = 0, cached = 0;
    assert_int_equal(both(p, ids, 50, 4, a), 0);      /* the cache holds ids[0, 50) and 3 more */
    stop_calls = 0;
    assert_int_equal(p->on.ops->start(&p->on, &rq, &n_tok, &cached, &err), -ECANCELED);
    assert_int_equal(stop_calls, 1);                  /* after the first block, positions 50..81 */
    assert_non_null(strstr(err.msg, "stopped"));
    /* the counts a DONE reports are set though it stopped: the prompt, and the 50 positions its
     * start took from the cache (they stay there: the next request below reuses them) */
    assert_int_equal(n_tok, 100);
    assert_int_equal(cached, 50);
    p->on.ops->finish(&p->on);
    /* the 50 positions before the stopped prefill are still good; the block it wrote is not
     * counted: ids as without the cache */
    assert_int_equal(both(p, ids, 100, 4, a), 50);
    assert_int_equal(both(p, ids, 100, 4, b), 99);
    assert_memory_equal(a, b, sizeof a);
}

/* A prompt that leaves the context 6 positions: 7 tokens (the last one needs no position of its
 * own), then GEN_LENGTH, not GEN_EOS, even with EOS ignored (the decoder reports it as DONE with
 * finish max_tokens, a length limit, so a client does not take it for the model's stop). */
static void test_context_full(void **state)
{
    struct pair *p = *state;
    if (!p)
        skip();
    const struct fix_case *c = &p->f.cases[0];
    enum { N = 250 };
    uint8_t prompt[4 * N];
    for (int i = 0; i < N; i++)
        bwp_wr32(prompt + 4 * i, (uint32_t)c->prompt[i % c->n_prompt]);
    struct gen_request rq = { .prompt_kind = 2, .prompt = prompt, .prompt_len = sizeof prompt, .max_tokens = 16,
                              .ignore_eos = true, .top_p = 1 };
    struct bora_err err = { "" };
    uint32_t n_tok = 0, cached = 0;
    struct generator *g = &p->off;
    if (g->ops->start(g, &rq, &n_tok, &cached, &err))
        fail_msg("start: %s", err.msg);
    assert_int_equal(n_tok, N);
    struct gen_token t;
    for (int i = 0; i < 256 - N + 1; i++)
        assert_int_equal(g->ops->step(g, &t, &err), GEN_TOKEN);
    assert_int_equal(g->ops->step(g, &t, &err), GEN_LENGTH);
    g->ops->finish(g);
}

/* ---- text held at the end: a model whose greedy next token depends on the current one only ---- */

enum { MK_VOCAB = 32768, MK_D = 64, MK_DEFAULT = 1032 };
#define MK_BYTE(b) (771 + (b))   /* Mistral v3: the byte-fallback piece <0xNN> */

struct mk_succ {
    const int32_t (*succ)[2];    /* token → its greedy successor */
    int n;
};

/* The weights of a one-layer Mistral whose every layer weight is 0 (the residual stream is the
 * embedding): token t's embedding is one-hot at its class (its index in succ + 1, or 0), and the
 * head maps class c to succ's successor (class 0 to MK_DEFAULT), so greedy decoding walks succ.
 * (synth_model_write's weight hook; norms 1.) */
static float mk_weight(void *ctx, const char *name, int64_t r, int64_t c)
{
    const struct mk_succ *m = ctx;
    if (strstr(name, "norm"))
        return 1.f;
    if (!strcmp(name, "model.embed_tokens.weight")) {
        int cls = 0;
        for (int i = 0; i < m->n && !cls; i++)
            cls = m->succ[i][0] == r ? i + 1 : 0;
        return c == cls ? 1.f : 0.f;
    }
    if (!strcmp(name, "lm_head.weight"))
        return c == 0 ? (r == MK_DEFAULT ? 10.f : 0.f) : c <= m->n && m->succ[c - 1][1] == r ? 10.f : 0.f;
    return 0.f;
}

/* One greedy request (ids prompt) to its end; the streamed text, the ids, and how it ended. */
static int mk_run(struct generator *g, const int32_t *ids, int n, int max_tokens, bool ignore_eos, char *text,
                  size_t *text_len, int32_t *out, int *n_out)
{
    uint8_t prompt[4 * MAX_IDS];
    for (int i = 0; i < n; i++)
        bwp_wr32(prompt + 4 * i, (uint32_t)ids[i]);
    struct gen_request rq = { .prompt_kind = 2, .prompt = prompt, .prompt_len = 4 * (uint32_t)n,
                              .max_tokens = (uint16_t)max_tokens, .ignore_eos = ignore_eos, .top_p = 1 };
    struct bora_err err = { "" };
    uint32_t n_tok = 0, cached = 0;
    if (g->ops->start(g, &rq, &n_tok, &cached, &err))
        fail_msg("start: %s", err.msg);
    *text_len = 0;
    *n_out = 0;
    int r = GEN_TOKEN;
    while (*n_out < max_tokens) {   /* as the decoder drives it: max_tokens ends it after the last */
        struct gen_token t;
        r = g->ops->step(g, &t, &err);
        if (r != GEN_TOKEN)
            break;
        memcpy(text + *text_len, t.text, t.text_len);
        *text_len += t.text_len;
        out[(*n_out)++] = (int32_t)t.id;
    }
    g->ops->finish(g);
    return r;
}

/* protocol.md (TOKEN): concatenating every delta gives the whole completion, so the last token
 * carries the bytes the detokenizer still holds (U+FFFD each) whatever ends the request: EOS, a
 * full context, max_tokens. Before, only max_tokens flushed them: a completion ending in an
 * incomplete UTF-8 sequence lost its U+FFFD on EOS and on a full context. */
static void test_text_held_at_end(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/bora-gen-mk-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    static const int32_t succ[][2] = {
        { 5000, MK_BYTE(0xE4) }, { MK_BYTE(0xE4), 2 },                          /* a lead byte, then EOS */
        { 5001, MK_BYTE(0xE5) }, { MK_BYTE(0xE5), MK_BYTE(0xA5) }, { MK_BYTE(0xA5), MK_BYTE(0xBD) },
        { MK_BYTE(0xBD), 2 },                                                    /* 好 over three tokens, EOS */
        { 5010, MK_BYTE(0xE6) }, { MK_BYTE(0xE6), MK_BYTE(0xE6) },              /* lead bytes for ever */
    };
    struct mk_succ ms = { succ, (int)(sizeof succ / sizeof *succ) };
    const struct synth_spec sp = { .dim = MK_D, .n_layers = 1, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                                   .hidden_dim = 128, .vocab = MK_VOCAB, .max_pos = 4096, .weight = mk_weight,
                                   .weight_ctx = &ms };   /* (the vocabulary: Mistral v3's tokenizer is written) */
    assert_true(ms.n < MK_D);
    char md[600], tp[620];
    snprintf(md, sizeof md, "%s/m", dir);   /* synth_model_write makes its folder */
    struct bora_err err = { "" };
    if (synth_model_write(md, &sp, &err))
        fail_msg("synth_model_write: %s", err.msg);
    struct generator g;
    struct gen_engine_opts o = { .model_dir = md, .backend = ENGINE_BACKEND_CPU, .max_ctx = 16, .n_threads = 2 };
    if (gen_engine_open(&g, &o, &err))
        fail_msg("open: %s", err.msg);
    struct tokenizer *tk = NULL;
    snprintf(tp, sizeof tp, "%s/tokenizer.model", md);
    assert_int_equal(tokenizer_open(&tk, tp, &err), 0);
    char text[512], ref[512];
    size_t tl, rl = 0;
    int32_t ids[MAX_IDS];
    int n;
    /* the mapping: three byte pieces make 好 (the reference decoder agrees) */
    const int32_t hao[] = { MK_BYTE(0xE5), MK_BYTE(0xA5), MK_BYTE(0xBD) };
    assert_int_equal(tokenizer_decode(tk, hao, 3, ref, sizeof ref, &rl), 0);
    assert_int_equal(rl, 3);
    assert_memory_equal(ref, "\xE5\xA5\xBD", 3);
#define MK_CASE(prompt, max_tokens, ignore, want_r, want_n, want_text)                                          \
    do {                                                                                                     \
        const int32_t p_[] = prompt;                                                                         \
        int r_ = mk_run(&g, p_, (int)(sizeof p_ / sizeof *p_), max_tokens, ignore, text, &tl, ids, &n);      \
        assert_int_equal(r_, want_r);                                                                        \
        assert_int_equal(n, want_n);                                                                         \
        assert_int_equal(tl, sizeof(want_text) - 1);                                                         \
        assert_memory_equal(text, want_text, tl);                                                            \
        assert_int_equal(tokenizer_decode(tk, ids, (size_t)n, ref, sizeof ref, &rl), 0);                    \
        assert_int_equal(rl, tl);                                                                            \
        assert_memory_equal(ref, text, tl);                                                                  \
    } while (0)
#define P(...) { __VA_ARGS__ }
    MK_CASE(P(1, 5000), 8, false, GEN_EOS, 1, "\xEF\xBF\xBD");               /* EOS: the lead byte's U+FFFD */
    MK_CASE(P(1, 5001), 8, false, GEN_EOS, 3, "\xE5\xA5\xBD");               /* a whole character, EOS */
    MK_CASE(P(1, 5010), 2, false, GEN_TOKEN, 2, "\xEF\xBF\xBD\xEF\xBF\xBD"); /* max_tokens (as before) */
    /* a full context: 14 prompt tokens in 16 positions, so three tokens (the last without a
     * position of its own) and then GEN_LENGTH */
    MK_CASE(P(1, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 5010), 8, false, GEN_LENGTH, 3,
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    /* EOS ignored is an ordinary token (no text); then the default successor, "▁a" */
    MK_CASE(P(1, 5000), 3, true, GEN_TOKEN, 3, "\xEF\xBF\xBD a");
#undef P
#undef MK_CASE
    tokenizer_close(tk);
    g.ops->close(&g);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* [engine] kv_dtype reaches the engine on every open path (on a GPU the generator streams the
 * weights through model_load_cuda, which builds its engine itself): the generator reports the
 * cache type the engine holds, and on a GPU the FP8 cache's region is half the BF16 one's. */
static void kv_type(enum engine_backend backend)
{
    char dir[4096];
    if (!fixture_find("mistral-tiny-bf16", dir, sizeof dir)) {
        fprintf(stderr, "SKIP: fixture mistral-tiny-bf16 not found\n");
        skip();
    }
    struct bora_err err = { "" };
    struct gen_engine_opts o = { .model_dir = dir, .backend = backend, .max_ctx = 256, .n_threads = 2,
                                 .kv = ENGINE_KV_FP8 };
    struct generator g8 = { 0 }, g16 = { 0 };
    int rc = gen_engine_open(&g8, &o, &err);
    if (rc == -ENODEV && backend == ENGINE_BACKEND_CUDA) {
        fprintf(stderr, "SKIP: CUDA backend: %s\n", err.msg);
        skip();
    }
    if (rc)
        fail_msg("%s", err.msg);
    assert_string_equal(gen_engine_kv(&g8), "fp8");
    o.kv = ENGINE_KV_BF16;
    if (gen_engine_open(&g16, &o, &err))
        fail_msg("%s", err.msg);
    assert_string_equal(gen_engine_kv(&g16), "bf16");
    struct engine_mem m8, m16;
    if (backend == ENGINE_BACKEND_CUDA) {
        assert_int_equal(gen_engine_memory(&g8, &m8), 0);
        assert_int_equal(gen_engine_memory(&g16, &m16), 0);
        printf("  KV cache on the GPU: fp8 %llu bytes, bf16 %llu\n", (unsigned long long)m8.kv_cache,
               (unsigned long long)m16.kv_cache);
        assert_true(m8.kv_cache > 0);
        assert_int_equal(2 * m8.kv_cache, m16.kv_cache);
    } else {
        assert_int_equal(gen_engine_memory(&g8, &m8), -ENODEV);
    }
    g8.ops->close(&g8);
    g16.ops->close(&g16);
}

static void test_kv_type_cpu(void **state)
{
    (void)state;
    kv_type(ENGINE_BACKEND_CPU);
}

static void test_kv_type_cuda(void **state)
{
    (void)state;
    kv_type(ENGINE_BACKEND_CUDA);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prefix_reuse, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_reuse, setup_cuda, teardown),
        cmocka_unit_test_setup_teardown(test_stop_mid_prefill, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_context_full, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_context_full, setup_cuda, teardown),
        cmocka_unit_test(test_text_held_at_end),
        cmocka_unit_test(test_kv_type_cpu),
        cmocka_unit_test(test_kv_type_cuda),
    };
    return cmocka_run_group_tests_name("gen_engine", tests, NULL, NULL);
}
