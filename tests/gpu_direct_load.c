/* gpu_direct_load.c — the direct cold-start path (kernels/model_load_cuda.h) against the
 * normal CUDA engine on the golden fixtures: weights streamed from the file straight into the
 * arena (one O_DIRECT reader; three buffered readers; the engine prepared during or after the
 * stream; a warm-up prompt run while the weights arrive) must give the same logits, bit for bit,
 * for a prompt (prefill) and a decode step; a checkpoint that needs conversion (BF16 → FP8)
 * falls back to the host upload and matches too. Skips loudly without a GPU or a CUDA build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/model_load_cuda.h"
#include "model/engine.h"
#include "model/model.h"
#include "tests/support/fixtures.h"

#ifdef BORA_CUDA
#include "kernels/engine_cuda.h"
#endif

#define CTX 128

/* Prompt logits then one decode step's logits: (2, vocab). */
static void run_ids(struct engine *e, const struct fixture *f, float *out)
{
    const struct fix_case *c = &f->cases[0];
    int n = c->n_prompt < CTX - 1 ? c->n_prompt : CTX - 1;
    assert_int_equal(engine_forward(e, c->prompt, n, 0, out), 0);
    int32_t next = c->greedy && c->n_greedy ? c->greedy[0] : c->prompt[0];
    assert_int_equal(engine_forward(e, &next, 1, n, out + f->vocab), 0);
}

static bool same_gemvs(struct engine *a, struct engine *b)
{
#ifdef BORA_CUDA
    for (int k = 0; k < ENGINE_CUDA_GEMV_KINDS; k++)
        if (engine_cuda_gemv_choice(a, k, NULL) != engine_cuda_gemv_choice(b, k, NULL))
            return false;
#else
    (void)a, (void)b;
#endif
    return true;
}

static void compare(const char *what, struct engine *ref, struct engine *got, const float *a, const float *b, size_t n)
{
    if (same_gemvs(ref, got)) {
        if (memcmp(a, b, n * sizeof *a)) {
            size_t i = 0;
            while (a[i] == b[i])
                i++;
            fail_msg("%s: logit %zu differs: %.9g vs %.9g", what, i, a[i], b[i]);
        }
        return;
    }
    /* the GEMV tuning chose another launch shape (timing noise): same weights, another sum order */
    float d = fix_max_abs_diff(a, b, n);
    fprintf(stderr, "NOTE %s: GEMV shapes differ; max |diff| %.3g\n", what, d);
    assert_true(d < 1e-4f);
}

static void check_fixture(const char *name, enum model_precision prec, bool expect_streamed)
{
    char dir[4096];
    if (!fixture_find(name, dir, sizeof dir)) {
        fprintf(stderr, "SKIP: fixture %s not found\n", name);
        skip();
    }
    struct fixture f;
    assert_int_equal(fixture_load(&f, dir), 0);
    struct bora_err err = { "" };
    struct model *m = NULL;
    struct model_open_opts mo = { .precision = prec };
    if (model_open(&m, dir, &mo, &err))
        fail_msg("%s: %s", name, err.msg);
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CUDA, .max_ctx = CTX };
    struct engine *ref = NULL;
    int rc = engine_open(&ref, m, &eo, &err);
    if (rc == -ENODEV) {
        fprintf(stderr, "SKIP (no GPU): %s\n", err.msg);
        model_close(m);
        fixture_free(&f);
        skip();
    }
    if (rc)
        fail_msg("%s: %s", name, err.msg);
    const size_t n = 2 * (size_t)f.vocab;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    run_ids(ref, &f, a);
    const struct model_load_cuda_opts modes[] = {
        { .mode = MODEL_LOAD_CUDA_DIRECT, .parts = 1, .buf_bytes = 64 << 10, .prefetch = true },   /* prefix + O_DIRECT */
        { .mode = MODEL_LOAD_CUDA_DIRECT, .parts = 1, .buf_bytes = 64 << 10 },
        { .mode = MODEL_LOAD_CUDA_BUFFERED, .parts = 3, .buf_bytes = 64 << 10, .stage = MODEL_LOAD_CUDA_STAGE_BLOCK },
        { 0 },
        /* the engine prepared after the stream; two staging buffers per reader, each its own */
        { .mode = MODEL_LOAD_CUDA_BUFFERED, .parts = 2, .buf_bytes = 64 << 10, .bufs = 2, .serial = true, .warm_tokens = -1,
          .stage = MODEL_LOAD_CUDA_STAGE_EACH },
        /* a warm-up prompt over the whole cache, run while the weights arrive, leaves no trace */
        { .mode = MODEL_LOAD_CUDA_BUFFERED, .parts = 2, .buf_bytes = 64 << 10, .warm_tokens = CTX },
    };
    for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
        struct engine *e = NULL;
        struct model_load_cuda_stats st;
        if (model_load_cuda(&e, m, &eo, &modes[k], &st, &err))
            fail_msg("%s mode %zu: %s", name, k, err.msg);
        assert_int_equal(st.streamed, expect_streamed);
        if (expect_streamed) {
            assert_true(st.bytes > 0);
            assert_true(st.parts >= 1);
        }
        run_ids(e, &f, b);
        char what[128];
        snprintf(what, sizeof what, "%s (%s, mode %zu)", name, model_precision_name(prec), k);
        compare(what, ref, e, a, b, n);
        fprintf(stderr, "%s: %s, %d reader(s), %llu bytes (%llu prefetched) in %.3f s: logits match\n", what,
                st.streamed ? (st.direct ? "O_DIRECT" : "buffered") : "host upload", st.parts,
                (unsigned long long)st.bytes, (unsigned long long)st.prefetched, st.seconds);
        engine_close(e);
    }
    free(a);
    free(b);
    engine_close(ref);
    model_close(m);
    fixture_free(&f);
}

static void test_bf16(void **state)
{
    (void)state;
    check_fixture("mistral-tiny-bf16", MODEL_PRECISION_AUTO, true);
}

static void test_fp8(void **state)
{
    (void)state;
    check_fixture("mistral-tiny-fp8", MODEL_PRECISION_AUTO, true);
}

static void test_tied(void **state)
{
    (void)state;
    check_fixture("mistral-tiny-tied-mqa", MODEL_PRECISION_AUTO, true);
}

static void test_converted_falls_back(void **state)
{
    (void)state;
    check_fixture("mistral-tiny-bf16", MODEL_PRECISION_FP8, false);
}

int main(void)
{
    /* both engines of a comparison run the same decode schedule (no timing choice at open) */
    setenv("BORA_DECODE", "persistent", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_tied),
        cmocka_unit_test(test_converted_falls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
