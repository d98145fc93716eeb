/* test_golden.c — the CPU engine against the logits Hugging Face transformers computed for
 * every golden fixture: logits within 1e-3 × max|logit| at every position, greedy ids equal
 * up to the first reference near-tie (margin < 1e-2), and the converted-precision paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine.h"
#include "model/sampler.h"
#include "tests/support/fixtures.h"

/* The reference and the CPU engine both compute in fp32 over the same stored weights. */
#define TOL_EXACT 1e-3f
/* FP8 e4m3 has 3 mantissa bits: a per-row-scaled weight carries a relative rounding error of
 * up to 2^-4 (RMS ≈ 2^-4/√3 ≈ 3.6 %). The fixtures' dot products are only 64–192 long, so
 * these errors average out less than in a real model; measured worst over all positions of
 * all fixtures: 9.5e-2 × max|logit|. The bound leaves 1.6×; a wrong scale or rounding mode
 * lands at O(1). */
#define TOL_FP8 1.5e-1f
/* Converting FP8 weights to BF16 (8 mantissa bits) rounds each weight by ≤ 2^-9 relative. */
#define TOL_BF16_FROM_FP8 1e-2f
#define NEAR_TIE 1e-2f
/* FP8 KV cache: every cached key and value rounded to e4m3 (3 mantissa bits, relative error up
 * to 2^-4, no scale), over BF16 weights the reference used as they are. Each score and each output
 * averages over head_dim (16–64 here) such errors. Measured worst over all positions of all
 * fixtures: 6.3e-2 × max|logit| (mistral-tiny-fp8); the bound leaves 1.6×. A cache that is not
 * rounded stays within it (kv_fp8_cache_holds_e4m3 catches that); the wrong element type or a
 * lost saturation lands at O(1). */
#define TOL_KV_FP8 1e-1f
#define NEAR_TIE_KV_FP8 0.5f
/* After quantization the greedy path may legitimately diverge where the margin is small. */
#define NEAR_TIE_FP8 0.5f

struct golden {
    const char *name;
    enum model_precision precision;
    float tol;
    float near_tie;
    int split;   /* > 0: the sequence runs as [0, split) then [split, n) (a cache hit's resume) */
    enum engine_kv kv;
};

static bool load(const struct golden *g, struct fixture *f, struct model **m, struct engine **e)
{
    char dir[4096];
    if (!fixture_find(g->name, dir, sizeof dir)) {
        fprintf(stderr, "SKIP: fixture %s not found (tests/data/fixtures, $BORA_SHARED/fixtures, ../shared/fixtures)\n", g->name);
        return false;
    }
    assert_int_equal(fixture_load(f, dir), 0);
    struct bora_err err = { "" };
    struct model_open_opts mo = { .precision = g->precision };
    int rc = model_open(m, dir, &mo, &err);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_int_equal((*m)->cfg.vocab_size, f->vocab);
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 256, .kv = g->kv };
    rc = engine_open(e, *m, &eo, &err);
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    assert_int_equal(rc, 0);
    return true;
}

/* Teacher-forced logits of prompt + reference continuation vs the reference rows and top-k. */
static void test_logits(void **state)
{
    const struct golden *g = *state;
    struct fixture f;
    struct model *m;
    struct engine *e;
    if (!load(g, &f, &m, &e)) {
        skip();
        return;
    }
    const size_t V = (size_t)f.vocab;
    float worst = 0;
    for (int ci = 0; ci < f.n_cases; ci++) {
        const struct fix_case *c = &f.cases[ci];
        int n = c->n_prompt + c->n_greedy;
        int32_t *ids = malloc((size_t)n * sizeof *ids);
        float *lg = malloc((size_t)n * V * sizeof *lg);
        assert_non_null(ids);
        assert_non_null(lg);
        memcpy(ids, c->prompt, (size_t)c->n_prompt * sizeof *ids);
        memcpy(ids + c->n_prompt, c->greedy, (size_t)c->n_greedy * sizeof *ids);
        engine_reset(e);
        if (g->split > 0 && g->split < n) {   /* a prefix, then the rest from an unaligned position */
            assert_int_equal(engine_forward_all(e, ids, g->split, 0, lg), 0);
            assert_int_equal(engine_forward_all(e, ids + g->split, n - g->split, g->split, lg + (size_t)g->split * V), 0);
        } else {
            assert_int_equal(engine_forward_all(e, ids, n, 0, lg), 0);
        }
        for (int k = 0; k < c->n_full; k++) {
            const float *ref = c->full + (size_t)k * V, *got = lg + (size_t)c->full_pos[k] * V;
            float rel = fix_max_abs_diff(got, ref, V) / fix_max_abs(ref, V);
            worst = fmaxf(worst, rel);
            if (rel > g->tol)
                fail_msg("%s case %d position %d: max |Δlogit| = %.3g × max|logit| > %.0e", g->name, ci,
                         c->full_pos[k], rel, g->tol);
        }
        for (int p = 0; p < n; p++) {
            const float *tl = c->topk_logits + p * FIX_TOPK;
            float mx = fix_max_abs(tl, FIX_TOPK);
            for (int k = 0; k < FIX_TOPK; k++) {
                float rel = fabsf(lg[(size_t)p * V + (size_t)c->topk_ids[p * FIX_TOPK + k]] - tl[k]) / mx;
                worst = fmaxf(worst, rel);
                if (rel > g->tol)
                    fail_msg("%s case %d position %d top-%d: |Δ| = %.3g × max > %.0e", g->name, ci, p, k, rel, g->tol);
            }
        }
        free(ids);
        free(lg);
    }
    printf("  %s (%s, %s KV): worst |Δlogit| / max|logit| = %.2e (tolerance %.0e)\n", g->name,
           model_precision_name(g->precision), engine_kv_name(g->kv), worst, g->tol);
    engine_close(e);
    model_close(m);
    fixture_free(&f);
}

/* Greedy decoding token by token (prefill, then one decode step per token). */
static void test_greedy(void **state)
{
    const struct golden *g = *state;
    struct fixture f;
    struct model *m;
    struct engine *e;
    if (!load(g, &f, &m, &e)) {
        skip();
        return;
    }
    float *lg = malloc((size_t)f.vocab * sizeof *lg);
    assert_non_null(lg);
    int checked = 0;
    for (int ci = 0; ci < f.n_cases; ci++) {
        const struct fix_case *c = &f.cases[ci];
        int trusted = fix_greedy_trusted(c, g->near_tie);
        engine_reset(e);
        assert_int_equal(engine_forward(e, c->prompt, c->n_prompt, 0, lg), 0);
        for (int k = 0; k < trusted; k++) {
            int32_t id = sampler_argmax(lg, f.vocab);
            if (id != c->greedy[k])
                fail_msg("%s case %d step %d: greedy id %d, reference %d (margin %.3g)", g->name, ci, k, id,
                         c->greedy[k], c->margin[c->n_prompt - 1 + k]);
            assert_int_equal(engine_forward(e, &id, 1, c->n_prompt + k, lg), 0);
            checked++;
        }
    }
    printf("  %s (%s, %s KV): %d greedy tokens equal to the reference\n", g->name, model_precision_name(g->precision),
           engine_kv_name(g->kv), checked);
    assert_true(checked > 0);
    free(lg);
    engine_close(e);
    model_close(m);
    fixture_free(&f);
}

/* A prompt run as one batched prefill gives the same last-position logits and the same KV
 * cache as the same prompt fed one token at a time (only the summation grouping differs). */
#define TOL_PREFILL 1e-5f

static void test_prefill_matches_stepwise(void **state)
{
    const struct golden *g = *state;
    struct fixture f;
    struct model *m;
    struct engine *e1, *e2;
    if (!load(g, &f, &m, &e1)) {
        skip();
        return;
    }
    struct bora_err err;
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 256, .kv = g->kv };
    assert_int_equal(engine_open(&e2, m, &eo, &err), 0);
    const struct model_config *c = &m->cfg;
    const size_t V = (size_t)f.vocab, kvd = (size_t)c->n_kv_heads * c->head_dim;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b);
    float *k1 = malloc(kvd * sizeof *k1), *v1 = malloc(kvd * sizeof *v1), *k2 = malloc(kvd * sizeof *k2),
          *v2 = malloc(kvd * sizeof *v2);
    for (int ci = 0; ci < f.n_cases; ci++) {
        const struct fix_case *fc = &f.cases[ci];
        engine_reset(e1);
        engine_reset(e2);
        assert_int_equal(engine_forward(e1, fc->prompt, fc->n_prompt, 0, a), 0);
        for (int p = 0; p < fc->n_prompt; p++)
            assert_int_equal(engine_forward(e2, &fc->prompt[p], 1, p, p + 1 == fc->n_prompt ? b : NULL), 0);
        float rel = fix_max_abs_diff(a, b, V) / fix_max_abs(b, V);
        if (rel > TOL_PREFILL)
            fail_msg("%s case %d: prefill vs stepwise logits differ by %.3g × max", g->name, ci, rel);
        for (int l = 0; l < c->n_layers; l++)
            for (int p = 0; p < fc->n_prompt; p++) {
                assert_int_equal(engine_kv_read(e1, l, p, k1, v1), 0);
                assert_int_equal(engine_kv_read(e2, l, p, k2, v2), 0);
                float dk = fix_max_abs_diff(k1, k2, kvd), dv = fix_max_abs_diff(v1, v2, kvd);
                if (dk > TOL_PREFILL * fix_max_abs(k2, kvd) || dv > TOL_PREFILL * fix_max_abs(v2, kvd))
                    fail_msg("%s case %d layer %d position %d: KV differs (k %.3g, v %.3g)", g->name, ci, l, p, dk, dv);
            }
    }
    free(a), free(b), free(k1), free(v1), free(k2), free(v2);
    engine_close(e2);
    engine_close(e1);
    model_close(m);
    fixture_free(&f);
}

/* An FP8 KV cache holds exactly what e4m3 can represent (every cached key and value survives
 * a round trip through it unchanged), and not the unrounded floats: at least one cached element
 * of the fixture differs from what the BF16-cache engine holds at the same place. */
static void test_kv_fp8_cache(void **state)
{
    const struct golden *g = *state;
    struct fixture f;
    struct model *m;
    struct engine *e, *e16;
    if (!load(g, &f, &m, &e)) {
        skip();
        return;
    }
    struct bora_err err = { "" };
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 256 };
    assert_int_equal(engine_open(&e16, m, &eo, &err), 0);
    const struct fix_case *c = &f.cases[0];
    const int kvd = m->cfg.n_kv_heads * m->cfg.head_dim;
    assert_int_equal(engine_forward(e, c->prompt, c->n_prompt, 0, NULL), 0);
    assert_int_equal(engine_forward(e16, c->prompt, c->n_prompt, 0, NULL), 0);
    float *k = malloc(4 * (size_t)kvd * sizeof *k), *v = k + kvd, *k16 = v + kvd, *v16 = k16 + kvd;
    assert_non_null(k);
    int differ = 0, nonzero = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int p = 0; p < c->n_prompt; p++) {
            assert_int_equal(engine_kv_read(e, l, p, k, v), 0);
            assert_int_equal(engine_kv_read(e16, l, p, k16, v16), 0);
            for (int i = 0; i < kvd; i++) {
                if (bora_e4m3_to_f32(bora_f32_to_e4m3(k[i])) != k[i] || bora_e4m3_to_f32(bora_f32_to_e4m3(v[i])) != v[i])
                    fail_msg("%s layer %d position %d element %d: %g / %g is not an e4m3 value", g->name, l, p, i,
                             (double)k[i], (double)v[i]);
                differ += k[i] != k16[i] || v[i] != v16[i];
                nonzero += k[i] != 0.f || v[i] != 0.f;
            }
        }
    printf("  %s: %d of %d cached elements rounded by the FP8 cache, %d non-zero\n", g->name, differ,
           m->cfg.n_layers * c->n_prompt * kvd, nonzero);
    assert_true(differ > 0);
    assert_true(nonzero > 0);
    free(k);
    engine_close(e16);
    engine_close(e);
    model_close(m);
    fixture_free(&f);
}

#define N_FIX FIX_N_MODELS

int main(void)
{
    static struct golden exact[N_FIX], conv[N_FIX], split[N_FIX], kv8[N_FIX];
    struct CMUnitTest tests[9 * N_FIX];
    size_t n = 0;
    for (size_t i = 0; i < N_FIX; i++) {
        exact[i] = (struct golden){ fix_models[i], MODEL_PRECISION_AUTO, TOL_EXACT, NEAR_TIE, 0, ENGINE_KV_BF16 };
        bool is_fp8 = strstr(fix_models[i], "fp8") != NULL;
        conv[i] = (struct golden){ fix_models[i], is_fp8 ? MODEL_PRECISION_BF16 : MODEL_PRECISION_FP8,
                                   is_fp8 ? TOL_BF16_FROM_FP8 : TOL_FP8, is_fp8 ? NEAR_TIE : NEAR_TIE_FP8, 0, ENGINE_KV_BF16 };
        tests[n++] = (struct CMUnitTest){ "logits", test_logits, NULL, NULL, &exact[i] };
        tests[n++] = (struct CMUnitTest){ "greedy", test_greedy, NULL, NULL, &exact[i] };
        tests[n++] = (struct CMUnitTest){ "logits_converted", test_logits, NULL, NULL, &conv[i] };
        tests[n++] = (struct CMUnitTest){ "greedy_converted", test_greedy, NULL, NULL, &conv[i] };
        tests[n++] = (struct CMUnitTest){ "prefill_matches_stepwise", test_prefill_matches_stepwise, NULL, NULL, &exact[i] };
        /* 29: not a multiple of the CPU engine's 32-token block nor of YaRN's original context, so
         * blocks [29, 61), [61, 93) straddle positions 32, 64, where the query scale steps */
        split[i] = exact[i];
        split[i].split = 29;
        tests[n++] = (struct CMUnitTest){ "logits_split_prefill", test_logits, NULL, NULL, &split[i] };
        kv8[i] = exact[i];
        kv8[i].kv = ENGINE_KV_FP8;
        kv8[i].tol = TOL_KV_FP8;
        kv8[i].near_tie = NEAR_TIE_KV_FP8;
        tests[n++] = (struct CMUnitTest){ "logits_kv_fp8", test_logits, NULL, NULL, &kv8[i] };
        tests[n++] = (struct CMUnitTest){ "greedy_kv_fp8", test_greedy, NULL, NULL, &kv8[i] };
        tests[n++] = (struct CMUnitTest){ "kv_fp8_cache_holds_e4m3", test_kv_fp8_cache, NULL, NULL, &kv8[i] };
    }
    return _cmocka_run_group_tests("golden", tests, n, NULL, NULL);
}
