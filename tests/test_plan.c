/* test_plan.c — the GPU memory arithmetic (kernels/plan.c) against independently known figures:
 * Mistral-7B-v0.3's published parameter count, its 128 KiB/token bf16 KV cache, and the fit
 * verdicts `bora plan` and the CUDA engine's refusal share. CPU only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/attn_shape.h"
#include "kernels/plan.h"

#define MISTRAL_7B_V03_PARAMS 7248023552ull   /* as published for Mistral-7B-v0.3 (vocab 32768) */

static const struct plan_dtypes BF16 = { BORA_DT_BF16, BORA_DT_BF16, BORA_DT_BF16, false };
static const struct plan_dtypes FP8 = { BORA_DT_F8_E4M3, BORA_DT_BF16, BORA_DT_BF16, false };

static void test_7b_bytes(void **st)
{
    (void)st;
    const struct model_config *c = plan_preset_find("mistral-7b");
    assert_non_null(c);
    struct plan_layout l;
    assert_int_equal(plan_layout_compute(c, &BF16, 8192, &l, NULL), 0);
    const uint64_t V = 32768, D = 4096, L = 32;
    /* norms are held as fp32 (4 bytes), everything else bf16; a step reads one embedding row */
    uint64_t norm_params = L * 2 * D + D;
    uint64_t expect = 2 * (MISTRAL_7B_V03_PARAMS - V * D - norm_params) + 4 * norm_params + 2 * D;
    assert_int_equal(l.step_weight_bytes, expect);
    /* the arena holds all weights (with the whole embedding), aligned, plus row scales */
    uint64_t held = 2 * (MISTRAL_7B_V03_PARAMS - norm_params) + 4 * norm_params;
    assert_true(l.weight_bytes >= held);
    assert_true(l.weight_bytes < held + 64ull * 1024 * 1024);
    /* 2 (K, V) × 32 layers × 8 heads × 128 × 2 bytes = 128 KiB per token */
    assert_int_equal(l.kv_bytes_per_key, 131072);
    assert_int_equal(l.kv_bytes, 131072ull * 8192);
    assert_int_equal(plan_kv_step_bytes(c, &l, 99), 100ull * 131072);
    assert_true(l.act_bytes < 4u << 20);
    assert_int_equal(l.total % PLAN_ALIGN, 0);
    assert_int_equal(l.layers % PLAN_ALIGN, 0);
    assert_int_equal(l.layer_stride % PLAN_ALIGN, 0);
}

static void test_fp8_halves_linear(void **st)
{
    (void)st;
    const struct model_config *c = plan_preset_find("mistral-small-24b");
    struct plan_layout b, f;
    assert_int_equal(plan_layout_compute(c, &BF16, 4096, &b, NULL), 0);
    assert_int_equal(plan_layout_compute(c, &FP8, 4096, &f, NULL), 0);
    /* linear weights halve; embedding and head stay bf16; fp8 adds 4 bytes per row of scales */
    uint64_t head = 131072ull * 5120 * 2;   /* output head, read whole each step */
    uint64_t lin_b = b.step_weight_bytes - head, lin_f = f.step_weight_bytes - head;
    assert_true(lin_f * 2 > lin_b);
    assert_true(lin_f * 2 < lin_b + lin_b / 100);
    assert_int_equal(b.kv_bytes, f.kv_bytes);
}

static void test_fit_verdicts(void **st)
{
    (void)st;
    const struct model_config *c = plan_preset_find("mistral-medium-3.5");
    const struct plan_gpu *h200 = plan_gpu_find("h200"), *h100 = plan_gpu_find("h100");
    assert_non_null(h200);
    assert_non_null(h100);
    struct plan_layout f, b;
    struct bora_err err = { "" };
    assert_int_equal(plan_layout_compute(c, &FP8, 8192, &f, NULL), 0);
    assert_int_equal(plan_layout_compute(c, &BF16, 8192, &b, NULL), 0);
    assert_int_equal(plan_check_fit(&f, 8192, h200->mem_bytes, &err), 0);      /* ~132 GB in ~150 */
    assert_int_equal(plan_check_fit(&b, 8192, h200->mem_bytes, &err), -ENOMEM); /* ~254 GB */
    assert_non_null(strstr(err.msg, "GB"));
    assert_non_null(strstr(err.msg, "8192 tokens"));
    assert_non_null(strstr(err.msg, "available"));
    assert_int_equal(plan_check_fit(&f, 8192, h100->mem_bytes, &err), -ENOMEM);
}

static void test_window_caps_kv_reads(void **st)
{
    (void)st;
    struct model_config c = *plan_preset_find("mistral-7b");
    c.sliding_window = 4096;
    struct plan_layout l;
    assert_int_equal(plan_layout_compute(&c, &BF16, 32768, &l, NULL), 0);
    assert_int_equal(plan_kv_step_bytes(&c, &l, 30000), 4096ull * 131072);
    assert_int_equal(plan_kv_step_bytes(&c, &l, 100), 101ull * 131072);
    assert_int_equal(plan_attn_splits(8, 32768, 4096), 33);   /* ceil(264 / 8) */
    assert_int_equal(plan_attn_splits(8, 10, 0), 10);   /* never more splits than keys */
}

static void test_rejects_bad_shapes(void **st)
{
    (void)st;
    struct model_config c = *plan_preset_find("mistral-7b");
    struct plan_layout l;
    struct bora_err err = { "" };
    c.n_kv_heads = 7;
    assert_int_equal(plan_layout_compute(&c, &BF16, 512, &l, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "kv heads 7"));
    c = *plan_preset_find("mistral-7b");
    c.dim = 0;
    assert_int_equal(plan_layout_compute(&c, &BF16, 512, &l, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "dim 0"));
    struct plan_dtypes f32 = { BORA_DT_F32, BORA_DT_BF16, BORA_DT_BF16, false };
    assert_int_equal(plan_layout_compute(plan_preset_find("mistral-7b"), &f32, 512, &l, &err), -EINVAL);
    assert_int_equal(plan_layout_compute(plan_preset_find("mistral-7b"), &BF16, 0, &l, &err), -EINVAL);
    assert_null(plan_preset_find("mistral-huge"));
    assert_null(plan_gpu_find("a100"));
    assert_string_equal(plan_preset_name(0), "mistral-7b");
    assert_null(plan_preset_name(4));
}

/* The prefill workspace, summed by hand from what a 2,048-token chunk of Mistral 7B holds: the
 * residual stream (fp32), FP8 activations as wide as the FFN, per-token scales, the widest GEMM
 * output in bf16 (gate/up: 2 × 14,336), queries and attention output (bf16), 16 MiB of key-split
 * scratch, a fault flag; plus cuBLASLt's 32 MiB. */
static void test_prefill_workspace(void **st)
{
    (void)st;
    const struct model_config *c = plan_preset_find("mistral-7b");
    struct plan_prefill p;
    plan_prefill_layout(c, BORA_DT_F8_E4M3, false, 8192, 2048, &p);
    const uint64_t x = 2048ull * 4096 * 4, act = 2048ull * 14336, sc = 2048ull * 4,
                   raw = 2048ull * 2 * 14336 * 2, q = 2048ull * 4096 * 2;
    assert_int_equal(p.chunk, 2048);
    assert_int_equal(p.ws_bytes, x + act + sc + raw + q + q + (16u << 20) + 256);
    assert_int_equal(p.total, p.ws_bytes + (32u << 20));
    assert_int_equal(p.raw, x + act + sc);
    assert_int_equal(p.bad, p.ws_bytes - 256);
    struct plan_prefill b;   /* BF16 activations take two bytes */
    plan_prefill_layout(c, BORA_DT_BF16, false, 8192, 2048, &b);
    assert_int_equal(b.ws_bytes, p.ws_bytes + act);
    /* a chunk is never longer than the context, nor shorter than the minimum */
    plan_prefill_layout(c, BORA_DT_F8_E4M3, false, 300, 2048, &b);
    assert_int_equal(b.chunk, 300);
    plan_prefill_layout(c, BORA_DT_F8_E4M3, false, 8192, 3, &b);
    assert_int_equal(b.chunk, PLAN_PREFILL_CHUNK_MIN);
    /* the engine's fallback: a quarter of the chunk while the workspace does not fit */
    assert_int_equal(plan_prefill_next(2048), 512);
    assert_int_equal(plan_prefill_next(128), 32);
    assert_int_equal(plan_prefill_next(32), 0);   /* 8 would be below the minimum */
    plan_prefill_fit(c, BORA_DT_F8_E4M3, false, 8192, p.total, &b);
    assert_int_equal(b.chunk, 2048);
    plan_prefill_fit(c, BORA_DT_F8_E4M3, false, 8192, p.total - 1, &b);
    assert_int_equal(b.chunk, 512);
    plan_prefill_fit(c, BORA_DT_F8_E4M3, false, 8192, 50ull << 20, &b);   /* a 32-token chunk needs about 51 MiB */
    assert_int_equal(b.chunk, 0);
    assert_int_equal(b.total, 0);
    plan_prefill_layout(c, BORA_DT_F8_E4M3, false, 8192, 32, &p);
    plan_prefill_fit(c, BORA_DT_F8_E4M3, false, 8192, p.total, &b);
    assert_int_equal(b.chunk, 32);   /* 2048, 512, 128, 32: the last the engine tries */
    plan_prefill_layout(c, BORA_DT_F8_E4M3, false, 8192, 16, &p);
    plan_prefill_fit(c, BORA_DT_F8_E4M3, false, 8192, p.total, &b);
    assert_int_equal(b.chunk, 0);    /* 16 is not on the way down */
}

/* An FP8 KV cache: one byte a cached element, so half the arena's KV region and half the KV bytes
 * a step reads (7B: 32 layers × 2 × 8 heads × 128 = 65,536 elements a token); the weights and
 * activations do not move. The prefill workspace gains one layer's keys and values in bf16 for
 * the whole context (8 × 128 × 8,192 × 2 × 2 bytes), after the fault flag. */
static void test_kv_fp8(void **st)
{
    (void)st;
    const struct model_config *c = plan_preset_find("mistral-7b");
    struct bora_err err = { "" };
    struct plan_layout a, b;
    struct plan_dtypes kv8 = FP8;
    kv8.kv_fp8 = true;
    assert_int_equal(plan_layout_compute(c, &FP8, 8192, &a, &err), 0);
    assert_int_equal(plan_layout_compute(c, &kv8, 8192, &b, &err), 0);
    assert_int_equal(a.kv_bytes_per_key, 65536ull * 2);
    assert_int_equal(b.kv_bytes_per_key, 65536ull);
    assert_int_equal(b.kv_bytes, 65536ull * 8192);
    assert_int_equal(a.kv_bytes, 2 * b.kv_bytes);
    assert_int_equal(b.kv_layer_stride, 2ull * 8 * 128 * 8192);
    assert_int_equal(b.weight_bytes, a.weight_bytes);
    assert_int_equal(b.act_bytes, a.act_bytes);
    assert_int_equal(b.total, a.total - b.kv_bytes);
    assert_int_equal(plan_kv_step_bytes(c, &b, 511), 512ull * 65536);
    struct plan_prefill p, q;
    plan_prefill_layout(c, BORA_DT_F8_E4M3, false, 8192, 2048, &p);
    plan_prefill_layout(c, BORA_DT_F8_E4M3, true, 8192, 2048, &q);
    assert_int_equal(p.kv16_bytes, 0);
    assert_int_equal(q.kv16_bytes, 8ull * 128 * 8192 * 2 * 2);
    assert_int_equal(q.kv16, p.ws_bytes);
    assert_int_equal(q.ws_bytes, p.ws_bytes + q.kv16_bytes);
    assert_int_equal(q.bad, p.bad);
    /* Medium 3.5's groups of 12 run on the tensor cores with either cache: ceil(264 / 8) = 33 splits
     * at any length (the tile pipeline's shared memory does not grow with the keys) */
    const struct model_config *med = plan_preset_find("mistral-medium-3.5");
    struct plan_dtypes m8 = FP8;
    m8.kv_fp8 = true;
    assert_int_equal(plan_attn_splits_for(med, 8192), 33);
    assert_int_equal(plan_attn_splits_for(med, 114000), 33);
    assert_int_equal(plan_layout_compute(med, &m8, 114000, &b, &err), 0);
    assert_int_equal(b.n_split, 33);
    /* 7B's groups of 4 run attn_item, whose scores for one split's keys must fit the block's
     * 200 KiB: 33 splits up to ≈ 380,000 tokens, beyond that the fewest that fit */
    assert_int_equal(plan_attn_splits_for(c, 32768), 33);
    const int s = plan_attn_splits_for(c, 1000000);
    assert_true(s > 33);
    assert_true(attn_smem_bytes(4, 128, attn_chunk_max(1000000, 0, s), s, ATTN_ITEM_THREADS) <= ATTN_ITEM_SMEM_MAX);
    assert_true(attn_smem_bytes(4, 128, attn_chunk_max(1000000, 0, s - 1), s - 1, ATTN_ITEM_THREADS) >
                ATTN_ITEM_SMEM_MAX);
    assert_true(attn_smem_bytes(4, 128, attn_chunk_max(1000000, 0, 33), 33, ATTN_ITEM_THREADS) > ATTN_ITEM_SMEM_MAX);
    assert_int_equal(plan_layout_compute(c, &kv8, 1000000, &b, &err), 0);
    assert_int_equal(b.n_split, s);
    /* groups of 16 of head_dim 256 (a shape a config may declare): past some length no split count
     * fits (the combine's arrays grow with the splits): refused, not sized to thousands of splits.
     * The refusal comes from plan_check_fit, after the bytes: a GPU too small hears the bytes */
    struct model_config wide = *c;
    wide.n_heads = 128;
    wide.head_dim = 256;
    assert_true(plan_attn_splits_for(&wide, 4096) >= 33);
    assert_int_equal(plan_attn_splits_for(&wide, 200000), -1);
    assert_int_equal(plan_layout_compute(&wide, &kv8, 200000, &b, &err), 0);
    assert_int_equal(b.n_split, -1);
    assert_int_equal(plan_check_fit(&b, 200000, b.total + PLAN_CUDA_RESERVE, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "no split of the keys fits"));
    assert_int_equal(plan_check_fit(&b, 200000, b.total / 2, &err), -ENOMEM);
    assert_non_null(strstr(err.msg, "available"));
}

/* The engine's choice between its two decode schedules from timings at two positions. */
static void test_switch_position(void **st)
{
    (void)st;
    bool a_first = false;
    /* A faster at both ends: never switch */
    assert_int_equal(plan_switch_position(2.0, 3.0, 4.0, 5.0, 0, 1000, &a_first), INT_MAX);
    assert_true(a_first);
    /* B faster at both ends */
    assert_int_equal(plan_switch_position(3.0, 2.0, 5.0, 4.0, 0, 1000, &a_first), INT_MAX);
    assert_false(a_first);
    /* A faster at 0 by 1 ms, slower at 1000 by 3 ms: the lines cross at 250, B from 251 */
    assert_int_equal(plan_switch_position(2.0, 3.0, 7.0, 4.0, 0, 1000, &a_first), 251);
    assert_true(a_first);
    /* the Medium 3.5 figures measured on the H200: persistent 32.171 / 36.898 ms, per-kernel
     * 36.596 / 38.065 ms at positions 0 / 2075: persistent throughout that range */
    assert_int_equal(plan_switch_position(32.171, 36.596, 36.898, 38.065, 0, 2075, &a_first), INT_MAX);
    assert_true(a_first);
    /* B faster first, A later: from where A takes over */
    assert_int_equal(plan_switch_position(5.0, 4.0, 5.0, 6.0, 100, 300, &a_first), 201);
    assert_false(a_first);
    /* ties go to A; degenerate range */
    assert_int_equal(plan_switch_position(1.0, 1.0, 1.0, 1.0, 0, 10, &a_first), INT_MAX);
    assert_true(a_first);
    assert_int_equal(plan_switch_position(1.0, 2.0, 3.0, 2.0, 5, 5, &a_first), INT_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_7b_bytes),
        cmocka_unit_test(test_fp8_halves_linear),
        cmocka_unit_test(test_fit_verdicts),
        cmocka_unit_test(test_prefill_workspace),
        cmocka_unit_test(test_kv_fp8),
        cmocka_unit_test(test_window_caps_kv_reads),
        cmocka_unit_test(test_rejects_bad_shapes),
        cmocka_unit_test(test_switch_position),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
