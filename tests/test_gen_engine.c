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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prefix_reuse, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_prefix_reuse, setup_cuda, teardown),
        cmocka_unit_test_setup_teardown(test_stop_mid_prefill, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_context_full, setup_cpu, teardown),
        cmocka_unit_test_setup_teardown(test_context_full, setup_cuda, teardown),
    };
    return cmocka_run_group_tests_name("gen_engine", tests, NULL, NULL);
}
