/* gpu_prefill.c — the prefill kernels against plain C references (double accumulation) on odd
 * sizes: cuBLASLt GEMM (FP8, BF16) and its CUDA-core fallback, residual add + RMSNorm + per-token
 * FP8 quantization, SwiGLU + quantization, QKV scaling + RoPE + KV write, and flash attention
 * (head_dim 16–128, GQA, sliding window, a cached prefix, NaN rows past the chunk that must stay
 * unseen), embedding. Skips loudly without a GPU or without a CUDA build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "tests/support/gpu_test.h"

#ifdef BORA_CUDA
#include "kernels/kernels.h"
#include "kernels/prefill.h"

/* GEMM output is bf16 (2^-9 relative rounding); fp32 or fast-FP8 accumulation over ≤ 200 terms
 * adds ≤ 1e-5 of the row's magnitude: 2^-8 relative plus 1e-3 of max|y| holds both. */
#define TOL_GEMM_REL (1.0 / 256)
#define TOL_GEMM_ABS 1e-3
/* e4m3 keeps 3 mantissa bits: a quantized value is within 2^-4 relative of its input, plus the
 * subnormal step (2^-9 of the scale) near zero. */
#define TOL_E4M3_REL (1.0 / 16)
/* Attention: q, K, V, P in bf16 (2^-9 each); outputs are convex combinations of V rows, so the
 * error is bounded by a few 2^-9 of max|v|. */
#define TOL_ATTN 8e-3

static uint16_t *rand_bf16(size_t n, float amp)
{
    uint16_t *p = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        p[i] = bora_f32_to_bf16(gt_frand() * amp);
    return p;
}
static uint8_t *rand_e4m3(size_t n, float amp)
{
    uint8_t *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = bora_f32_to_e4m3(gt_frand() * amp);
    return p;
}
static float *rand_f32(size_t n, float lo, float hi)
{
    float *p = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * (gt_frand() * 0.5f + 0.5f);
    return p;
}
static double elem(enum bora_dtype dt, const void *p, size_t i)
{
    return dt == BORA_DT_F8_E4M3 ? bora_e4m3_to_f32(((const uint8_t *)p)[i])
                                 : bora_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* ---- GEMM ---- */

/* cap: rows x and y have room for (kern_gemm_args.cap_n; 0 = n): with cap > n a new bucket's
 * algorithm is chosen at a larger n on the same buffers, then checked and used at n. */
static void check_gemm_cap(struct kern_gemm *g, enum bora_dtype dt, int rows, int cols, int n, int cap, int want_path)
{
    const size_t es = dt == BORA_DT_F8_E4M3 ? 1 : 2;
    void *hw = dt == BORA_DT_F8_E4M3 ? (void *)rand_e4m3((size_t)rows * cols, 400)
                                     : (void *)rand_bf16((size_t)rows * cols, 2);
    void *hx = dt == BORA_DT_F8_E4M3 ? (void *)rand_e4m3((size_t)n * cols, 448)
                                     : (void *)rand_bf16((size_t)n * cols, 2);
    const int room = cap > n ? cap : n;
    void *dw = gt_upload(hw, (size_t)rows * cols * es), *dx = gt_upload(NULL, (size_t)room * cols * es);
    uint16_t *dy = gt_upload(NULL, (size_t)room * rows * 2), *hy = malloc((size_t)n * rows * 2);
    {
        struct bora_err err_ = { "" };
        if (kern_copy_h2d(dx, hx, (size_t)n * cols * es, E))
            fail_msg("upload x: %s", err_.msg);
    }
    struct kern_gemm_args a = { dt, dw, dx, dy, rows, cols, n, cap };
    OK(kern_gemm_run(g, &a, NULL, E));
    OK(kern_gemm_run(g, &a, NULL, E));   /* second call: cached algorithm */
    if (want_path >= 0 && kern_gemm_last_path(g) != want_path)
        fail_msg("gemm %s %d×%d×%d: path %d, expected %d", bora_dtype_name(dt), rows, cols, n, kern_gemm_last_path(g),
                 want_path);
    gt_download(hy, dy, (size_t)n * rows * 2);
    double *ref = malloc((size_t)n * rows * sizeof *ref), mx = 0;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int c = 0; c < cols; c++)
                s += elem(dt, hw, (size_t)r * cols + c) * elem(dt, hx, (size_t)t * cols + c);
            ref[(size_t)t * rows + r] = s;
            mx = fmax(mx, fabs(s));
        }
    for (size_t i = 0; i < (size_t)n * rows; i++) {
        double y = bora_bf16_to_f32(hy[i]);
        if (fabs(y - ref[i]) > TOL_GEMM_REL * fabs(ref[i]) + TOL_GEMM_ABS * mx)
            fail_msg("gemm %s %d×%d×%d (path %d): y[%zu] = %g, reference %g", bora_dtype_name(dt), rows, cols, n,
                     kern_gemm_last_path(g), i, y, ref[i]);
    }
    printf("  gemm %s %d×%d×%d%s via %s: ok\n", bora_dtype_name(dt), rows, cols, n, cap > n ? " (room for more)" : "",
           kern_gemm_last_path(g) ? "cuBLASLt" : "fallback");
    free(ref);
    free(hw);
    free(hx);
    free(hy);
    kern_free(dw);
    kern_free(dx);
    kern_free(dy);
}

static void check_gemm(struct kern_gemm *g, enum bora_dtype dt, int rows, int cols, int n, int want_path)
{
    check_gemm_cap(g, dt, rows, cols, n, 0, want_path);
}

static void test_gemm(void **st)
{
    (void)st;
    NEED_GPU();
    struct kern_gemm *g;
    OK(kern_gemm_create(&g, E));
    check_gemm(g, BORA_DT_F8_E4M3, 96, 80, 37, 1);
    check_gemm(g, BORA_DT_F8_E4M3, 256, 64, 1, -1);
    check_gemm(g, BORA_DT_BF16, 72, 88, 29, 1);
    check_gemm(g, BORA_DT_F8_E4M3, 40, 72, 19, 0);   /* not a multiple of 16: fallback */
    /* token counts of one bucket share an algorithm: chosen at the bucket's top (300 → 320
     * rows of room) or at the first n, then reused at other n of the bucket */
    check_gemm_cap(g, BORA_DT_F8_E4M3, 256, 512, 300, 400, 1);
    check_gemm_cap(g, BORA_DT_F8_E4M3, 256, 512, 270, 400, 1);
    check_gemm(g, BORA_DT_F8_E4M3, 256, 512, 290, 1);
    check_gemm(g, BORA_DT_BF16, 128, 256, 600, 1);
    check_gemm(g, BORA_DT_BF16, 128, 256, 520, 1);
    kern_gemm_force_fallback(g, true);
    check_gemm(g, BORA_DT_F8_E4M3, 96, 80, 70, 0);
    check_gemm(g, BORA_DT_BF16, 72, 88, 65, 0);
    kern_gemm_force_fallback(g, false);
    struct bora_err err = { "" };
    struct kern_gemm_args bad = { BORA_DT_F32, NULL, NULL, NULL, 16, 16, 1, 0 };
    assert_int_equal(kern_gemm_run(g, &bad, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "F32"));
    kern_gemm_destroy(g);
}

/* ---- row kernels ---- */

/* Checks that row t of an FP8 activation (q, scale) matches ref within e4m3 precision and that
 * the scale is max|ref| / 448. */
static void check_quant_row(const uint8_t *q, float scale, const double *ref, int cols, const char *what, int t)
{
    double amax = 0;
    for (int c = 0; c < cols; c++)
        amax = fmax(amax, fabs(ref[c]));
    if (fabs(scale - amax / KERN_FP8_MAX) > 1e-5 * amax / KERN_FP8_MAX + 1e-30)
        fail_msg("%s row %d: scale %g, expected max|x|/448 = %g", what, t, scale, amax / KERN_FP8_MAX);
    for (int c = 0; c < cols; c++) {
        double v = bora_e4m3_to_f32(q[c]) * scale;
        if (fabs(v - ref[c]) > TOL_E4M3_REL * fabs(ref[c]) + scale / 256.0)
            fail_msg("%s row %d col %d: %g, reference %g", what, t, c, v, ref[c]);
    }
}

static void check_add_norm_quant(int dim, int n)
{
    const float eps = 1e-5f;
    float *x = rand_f32((size_t)n * dim, -3, 3), *ws = rand_f32(dim, 0.5f, 1.5f), *ts = rand_f32(n, 0.1f, 2);
    float *nw = rand_f32(dim, 0.2f, 2);
    uint16_t *raw = rand_bf16((size_t)n * dim, 4);
    float *dx = gt_upload(x, (size_t)n * dim * 4), *dws = gt_upload(ws, dim * 4), *dts = gt_upload(ts, n * 4);
    float *dnw = gt_upload(nw, dim * 4), *dsc = gt_upload(NULL, n * 4);
    uint16_t *draw = gt_upload(raw, (size_t)n * dim * 2);
    uint8_t *dq = gt_upload(NULL, (size_t)n * dim * 2);
    struct kern_raw delta = { draw, dws, dts };
    struct kern_act out = { BORA_DT_F8_E4M3, dq, dsc };
    OK(kern_pf_add_norm_quant(dx, &delta, dnw, eps, &out, n, dim, NULL, E));
    float *hx = malloc((size_t)n * dim * 4), *hs = malloc(n * 4);
    uint8_t *hq = malloc((size_t)n * dim * 2);
    gt_download(hx, dx, (size_t)n * dim * 4);
    gt_download(hq, dq, (size_t)n * dim);
    gt_download(hs, dsc, n * 4);
    double *ref = malloc(dim * sizeof *ref);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int c = 0; c < dim; c++) {
            size_t i = (size_t)t * dim + c;
            double v = x[i] + (double)bora_bf16_to_f32(raw[i]) * ws[c] * ts[t];
            if (fabs(hx[i] - v) > 1e-5 * fabs(v) + 1e-6)
                fail_msg("residual row %d col %d: %g, reference %g", t, c, hx[i], v);
            ref[c] = v;
            ss += v * v;
        }
        double rstd = 1.0 / sqrt(ss / dim + eps);
        for (int c = 0; c < dim; c++)
            ref[c] = ref[c] * rstd * nw[c];
        check_quant_row(hq + (size_t)t * dim, hs[t], ref, dim, "norm+quant", t);
    }
    /* BF16 output, no residual: rmsnorm of the updated x */
    struct kern_act ob = { BORA_DT_BF16, dq, NULL };
    OK(kern_pf_add_norm_quant(dx, NULL, dnw, eps, &ob, n, dim, NULL, E));
    uint16_t *hb = malloc((size_t)n * dim * 2);
    gt_download(hb, dq, (size_t)n * dim * 2);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int c = 0; c < dim; c++)
            ss += (double)hx[(size_t)t * dim + c] * hx[(size_t)t * dim + c];
        double rstd = 1.0 / sqrt(ss / dim + eps);
        for (int c = 0; c < dim; c++) {
            double r = hx[(size_t)t * dim + c] * rstd * nw[c], v = bora_bf16_to_f32(hb[(size_t)t * dim + c]);
            if (fabs(v - r) > fabs(r) / 128 + 1e-6)
                fail_msg("norm bf16 row %d col %d: %g, reference %g", t, c, v, r);
        }
    }
    struct bora_err err = { "" };
    struct kern_act bad = { BORA_DT_F8_E4M3, dq, NULL };
    assert_int_equal(kern_pf_add_norm_quant(dx, NULL, dnw, eps, &bad, n, dim, NULL, &err), -EINVAL);
    free(x), free(ws), free(ts), free(nw), free(raw), free(hx), free(hs), free(hq), free(ref), free(hb);
    kern_free(dx), kern_free(dws), kern_free(dts), kern_free(dnw), kern_free(dsc), kern_free(draw), kern_free(dq);
}

/* Multiples of 8 up to 8 · 256 · 8 take the register kernels (200, 4096, 6144, 12288: 1, 2, 4
 * and 8 groups per thread; 700 tokens fill the GPU several times over), 20480 the shared-memory
 * one; 203 the scalar one. */
static void test_add_norm_quant(void **st)
{
    (void)st;
    NEED_GPU();
    check_add_norm_quant(200, 13);
    check_add_norm_quant(203, 13);
    check_add_norm_quant(4096, 13);
    check_add_norm_quant(4096, 700);
    check_add_norm_quant(6144, 13);
    check_add_norm_quant(6144, 700);
    check_add_norm_quant(12288, 13);
    check_add_norm_quant(20480, 13);
}

/* with_ts false: the GEMM result has no per-token scale (kern_raw.t_scale NULL, read as 1). */
static void check_swiglu_quant_ts(int hid, int n, bool with_ts)
{
    uint16_t *raw = rand_bf16((size_t)n * 2 * hid, 3);
    float *ws = rand_f32(2 * hid, 0.5f, 1.5f), *ts = rand_f32(n, 0.2f, 2);
    if (!with_ts)
        for (int t = 0; t < n; t++)
            ts[t] = 1;
    uint16_t *draw = gt_upload(raw, (size_t)n * 2 * hid * 2);
    float *dws = gt_upload(ws, 2 * hid * 4), *dts = gt_upload(ts, n * 4), *dsc = gt_upload(NULL, n * 4);
    uint8_t *dq = gt_upload(NULL, (size_t)n * hid);
    uint16_t *dq2 = gt_upload(NULL, (size_t)n * hid * 2);
    struct kern_raw gu = { draw, dws, with_ts ? dts : NULL };
    struct kern_act out = { BORA_DT_F8_E4M3, dq, dsc }, ob = { BORA_DT_BF16, dq2, NULL };
    OK(kern_pf_swiglu_quant(&gu, &out, n, hid, NULL, E));
    OK(kern_pf_swiglu_quant(&gu, &ob, n, hid, NULL, E));   /* BF16 output (BF16 weights) */
    uint8_t *hq = malloc((size_t)n * hid);
    uint16_t *hb = malloc((size_t)n * hid * 2);
    float *hs = malloc(n * 4);
    gt_download(hq, dq, (size_t)n * hid);
    gt_download(hb, dq2, (size_t)n * hid * 2);
    gt_download(hs, dsc, n * 4);
    double *ref = malloc(hid * sizeof *ref);
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < hid; i++) {
            size_t b = (size_t)t * 2 * hid + 2 * i;
            double gt = bora_bf16_to_f32(raw[b]) * ws[2 * i] * ts[t];
            double up = bora_bf16_to_f32(raw[b + 1]) * ws[2 * i + 1] * ts[t];
            ref[i] = gt / (1 + exp(-gt)) * up;
            /* bf16: each value rounded once, so within half a bf16 step (and silu's 2 ulp) */
            double v = bora_bf16_to_f32(hb[(size_t)t * hid + i]);
            if (fabs(v - ref[i]) > fabs(ref[i]) / 256 + 1e-6)
                fail_msg("swiglu bf16 hid %d row %d col %d: %g, reference %g", hid, t, i, v, ref[i]);
        }
        check_quant_row(hq + (size_t)t * hid, hs[t], ref, hid, "swiglu+quant", t);
    }
    free(raw), free(ws), free(ts), free(hq), free(hs), free(ref), free(hb);
    kern_free(dq2);
    kern_free(draw), kern_free(dws), kern_free(dts), kern_free(dsc), kern_free(dq);
}

static void check_swiglu_quant(int hid, int n)
{
    check_swiglu_quant_ts(hid, n, true);
}

/* 150: the scalar kernel; multiples of 8 up to 16,384 the kernel of several tokens a block (152,
 * 4104, 14336 (7B); with 700 or 1,000 tokens each block walks several, its scales kept in
 * registers), larger ones the vector kernel of one token a block (28672 (Medium 3.5), 32776).
 * Every case checks FP8 and BF16 output; three also without the per-token scale. */
static void test_swiglu_quant(void **st)
{
    (void)st;
    NEED_GPU();
    check_swiglu_quant(150, 9);
    check_swiglu_quant(152, 9);
    check_swiglu_quant(152, 1000);
    check_swiglu_quant(4104, 9);
    check_swiglu_quant(14336, 9);
    check_swiglu_quant(14336, 700);
    check_swiglu_quant(28672, 9);
    check_swiglu_quant(28672, 400);
    check_swiglu_quant(32776, 9);
    check_swiglu_quant_ts(150, 9, false);   /* no per-token scale, each kernel */
    check_swiglu_quant_ts(14336, 700, false);
    check_swiglu_quant_ts(28672, 9, false);
}

/* Attention output (bf16) → per-token FP8: 136 takes the vector kernel, 130 the scalar one. */
static void check_quant(int cols)
{
    const int n = 11;
    uint16_t *in = rand_bf16((size_t)n * cols, 5);
    in[3] = bora_f32_to_bf16(0.0f);
    for (int c = 0; c < cols; c++)   /* one all-zero row: scale 1, zeros */
        in[(size_t)4 * cols + c] = 0;
    uint16_t *din = gt_upload(in, (size_t)n * cols * 2);
    uint8_t *dq = gt_upload(NULL, (size_t)n * cols);
    float *dsc = gt_upload(NULL, n * 4), *hs = malloc(n * 4);
    struct kern_act out = { BORA_DT_F8_E4M3, dq, dsc };
    OK(kern_pf_quant(din, &out, n, cols, NULL, E));
    uint8_t *hq = malloc((size_t)n * cols);
    gt_download(hq, dq, (size_t)n * cols);
    gt_download(hs, dsc, n * 4);
    double *ref = malloc(cols * sizeof *ref);
    for (int t = 0; t < n; t++) {
        for (int c = 0; c < cols; c++)
            ref[c] = bora_bf16_to_f32(in[(size_t)t * cols + c]);
        if (t == 4) {
            assert_true(hs[t] == 1.0f);
            for (int c = 0; c < cols; c++)
                assert_true(bora_e4m3_to_f32(hq[(size_t)t * cols + c]) == 0.0f);
            continue;
        }
        check_quant_row(hq + (size_t)t * cols, hs[t], ref, cols, "quant", t);
    }
    free(in), free(hs), free(hq), free(ref);
    kern_free(din), kern_free(dq), kern_free(dsc);
}

static void test_quant(void **st)
{
    (void)st;
    NEED_GPU();
    check_quant(136);     /* register kernel, 1 group per thread */
    check_quant(130);     /* scalar */
    check_quant(4096);    /* register kernel, 2 groups per thread (attention output of 7B) */
    check_quant(16400);   /* past the register kernels: shared memory */
}

/* ---- QKV post + attention ---- */

struct attn_case {
    int hd, n_heads, n_kv, n, pos0, window, max_ctx;
    bool interleaved;
    float qscale_beta;
};

static void rope_ref(const struct kern_rope *r, const float *inv_freq, int hd, int pos, double *v)
{
    for (int k = 0; k < hd / 2; k++) {
        int a = r->interleaved ? 2 * k : k, b = r->interleaved ? 2 * k + 1 : k + hd / 2;
        float ang = (float)pos * inv_freq[k];
        double c = cosf(ang) * r->attn_factor, s = sinf(ang) * r->attn_factor;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}

static void check_attention(const struct attn_case *ac)
{
    const int hd = ac->hd, H = ac->n_heads, KV = ac->n_kv, n = ac->n, pos0 = ac->pos0, C = ac->max_ctx;
    const int qd = H * hd, kvd = KV * hd, rows = qd + 2 * kvd, G = H / KV;
    const float q_mult = (float)(1.0 / sqrt(hd) * 1.4426950408889634);
    float *inv_freq = malloc(hd / 2 * 4);
    for (int k = 0; k < hd / 2; k++)
        inv_freq[k] = powf(10000.f, -2.f * k / hd);
    uint16_t *raw = rand_bf16((size_t)n * rows, 2);
    float *ws = rand_f32(rows, 0.5f, 1.5f), *ts = rand_f32(n, 0.5f, 1.5f);
    /* cache: random prefix, NaN past the chunk (must never be read into a result) */
    size_t cache_elems = (size_t)KV * C * hd;
    uint16_t *kc = rand_bf16(cache_elems, 2), *vc = rand_bf16(cache_elems, 2);
    for (int h = 0; h < KV; h++)
        for (int p = pos0 + n; p < C; p++)
            for (int d = 0; d < hd; d++) {
                kc[((size_t)h * C + p) * hd + d] = 0x7fc0;
                vc[((size_t)h * C + p) * hd + d] = 0x7fc0;
            }
    float *dinv = gt_upload(inv_freq, hd / 2 * 4), *dws = gt_upload(ws, rows * 4), *dts = gt_upload(ts, n * 4);
    uint16_t *draw = gt_upload(raw, (size_t)n * rows * 2), *dq = gt_upload(NULL, (size_t)n * qd * 2);
    uint16_t *dkc = gt_upload(kc, cache_elems * 2), *dvc = gt_upload(vc, cache_elems * 2);
    uint16_t *dout = gt_upload(NULL, (size_t)n * qd * 2);
    struct kern_rope rope = { dinv, 1.1f, ac->interleaved, ac->qscale_beta, 16 };
    struct kern_qkv_post_args qa = { { draw, dws, dts }, dq, dkc, dvc, NULL, NULL, n, pos0, C, H, KV, hd, q_mult, rope };
    OK(kern_pf_qkv_post(&qa, NULL, E));
    uint16_t *hkc = malloc(cache_elems * 2), *hvc = malloc(cache_elems * 2), *hout = malloc((size_t)n * qd * 2);
    gt_download(hkc, dkc, cache_elems * 2);
    gt_download(hvc, dvc, cache_elems * 2);

    /* reference: q (bf16 as the kernel stores it), K/V rows of the chunk */
    double *v = malloc(hd * sizeof *v);
    float *q = malloc((size_t)n * qd * 4);
    for (int t = 0; t < n; t++) {
        const int pos = pos0 + t;
        double qs = ac->qscale_beta ? 1 + ac->qscale_beta * log(1 + floor((double)pos / 16)) : 1;
        for (int h = 0; h < H + 2 * KV; h++) {
            for (int d = 0; d < hd; d++) {
                int r = h * hd + d;
                v[d] = bora_bf16_to_f32(raw[(size_t)t * rows + r]) * (double)ws[r] * ts[t];
            }
            if (h < H + KV)
                rope_ref(&rope, inv_freq, hd, pos, v);
            for (int d = 0; d < hd; d++) {
                if (h < H) {
                    q[(size_t)t * qd + h * hd + d] = bora_bf16_to_f32(bora_f32_to_bf16((float)(v[d] * qs * q_mult)));
                    continue;
                }
                uint16_t *cache = h < H + KV ? kc : vc;
                int kh = h < H + KV ? h - H : h - H - KV;
                size_t ci = ((size_t)kh * C + pos) * hd + d;
                cache[ci] = bora_f32_to_bf16((float)v[d]);
                uint16_t got = h < H + KV ? hkc[ci] : hvc[ci];
                double gv = bora_bf16_to_f32(got), rv = bora_bf16_to_f32(cache[ci]);
                if (fabs(gv - rv) > fabs(rv) / 128 + 1e-6)
                    fail_msg("hd %d: %s cache head %d pos %d dim %d: %g, reference %g", hd, h < H + KV ? "K" : "V",
                             kh, pos, d, gv, rv);
            }
        }
    }
    double vmax = 0;
    for (size_t i = 0; i < cache_elems; i++)
        if (vc[i] != 0x7fc0)
            vmax = fmax(vmax, fabs(bora_bf16_to_f32(vc[i])));
    double *sc = malloc((size_t)C * sizeof *sc), *o = malloc(hd * sizeof *o);
    /* every block shape on every case (the automatic choice takes the narrow one at these sizes;
       the wgmma blocks exist for head_dim 128), and the narrow one with its keys split three ways
       and as many ways as it chooses itself */
    static const char *const shape[] = { "auto", "narrow", "wide", "wgmma" };
    static const struct { int tile, splits; } variant[] = {
        { KERN_PF_ATTN_NARROW, 1 }, { KERN_PF_ATTN_WIDE, 1 }, { KERN_PF_ATTN_WGMMA, 1 },
        { KERN_PF_ATTN_NARROW, 3 }, { KERN_PF_ATTN_NARROW, 0 },
    };
    float *dwork = gt_upload(NULL, KERN_PF_ATTN_WORK_BYTES);
    for (size_t vi = 0; vi < sizeof variant / sizeof variant[0]; vi++) {
        const int tile = variant[vi].tile, splits = variant[vi].splits;
        if (tile == KERN_PF_ATTN_WGMMA && hd != 128)
            continue;
        struct kern_pf_attn_args aa = { dq, dkc, dvc, dout, n, pos0, C, H, KV, hd, ac->window, tile,
                                        dwork, KERN_PF_ATTN_WORK_BYTES, splits };
        OK(kern_pf_attention(&aa, NULL, E));
        gt_download(hout, dout, (size_t)n * qd * 2);
        double worst = 0;
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                const int pos = pos0 + t, kh = h / G;
                const int start = ac->window > 0 && pos - ac->window + 1 > 0 ? pos - ac->window + 1 : 0;
                double mx = -INFINITY, l = 0;
                for (int j = start; j <= pos; j++) {
                    double s = 0;
                    for (int d = 0; d < hd; d++)
                        s += (double)q[(size_t)t * qd + h * hd + d] *
                             bora_bf16_to_f32(kc[((size_t)kh * C + j) * hd + d]);
                    sc[j] = s;
                    mx = fmax(mx, s);
                }
                memset(o, 0, hd * sizeof *o);
                for (int j = start; j <= pos; j++) {
                    double p = exp2(sc[j] - mx);
                    l += p;
                    for (int d = 0; d < hd; d++)
                        o[d] += p * bora_bf16_to_f32(vc[((size_t)kh * C + j) * hd + d]);
                }
                for (int d = 0; d < hd; d++) {
                    double got = bora_bf16_to_f32(hout[(size_t)t * qd + h * hd + d]), want = o[d] / l;
                    if (!isfinite(got) || fabs(got - want) > TOL_ATTN * vmax)
                        fail_msg("attention (%s blocks, splits %d) hd %d H %d KV %d n %d pos0 %d window %d: query %d "
                                 "head %d dim %d: %g, reference %g",
                                 shape[tile], splits, hd, H, KV, n, pos0, ac->window, t, h, d,
                                 got, want);
                    worst = fmax(worst, fabs(got - want) / vmax);
                }
            }
        printf("  attention (%-6s, splits %d) hd %3d heads %d/%d n %3d pos0 %3d window %3d: worst %.2e of max|v|\n",
               shape[tile], splits, hd, H, KV, n, pos0, ac->window, worst);
    }
    kern_free(dwork);
    free(inv_freq), free(raw), free(ws), free(ts), free(kc), free(vc), free(hkc), free(hvc), free(hout), free(v);
    free(q), free(sc), free(o);
    kern_free(dinv), kern_free(dws), kern_free(dts), kern_free(draw), kern_free(dq), kern_free(dkc), kern_free(dvc);
    kern_free(dout);
}

static void test_attention(void **st)
{
    (void)st;
    NEED_GPU();
    const struct attn_case cases[] = {
        { 32, 4, 2, 70, 0, 0, 160, false, 0 },      /* two query tiles, no prefix */
        { 32, 4, 2, 37, 45, 0, 100, false, 0.1f },  /* prefix, query scale */
        { 16, 4, 2, 83, 21, 16, 128, true, 0 },     /* sliding window, interleaved pairs */
        { 64, 8, 1, 65, 3, 0, 80, false, 0 },       /* MQA */
        { 128, 8, 2, 130, 70, 0, 256, false, 0 },   /* Mistral head size */
        { 128, 4, 4, 200, 100, 50, 300, false, 0 }, /* window inside the chunk and the prefix */
        { 64, 2, 1, 1, 90, 0, 91, false, 0 },       /* one query */
        { 128, 8, 2, 300, 0, 0, 320, false, 0 },    /* three 128-query blocks, the last partial */
        { 128, 4, 1, 1, 200, 0, 201, false, 0 },    /* one query after a prefix */
        { 128, 12, 1, 260, 40, 0, 320, false, 0 },  /* a group of 12 (Medium 3.5), after a prefix */
        { 128, 4, 2, 256, 0, 100, 256, true, 0 },   /* sliding window across tiles, interleaved pairs */
        { 128, 8, 2, 20, 600, 0, 640, false, 0 },   /* a short turn after a long prefix: keys split */
        { 64, 4, 2, 5, 200, 50, 210, false, 0 },    /* a window of two tiles split three ways: one split empty */
        { 128, 8, 2, 256, 900, 0, 1200, false, 0 }, /* ten 128-key tiles: the wgmma blocks' ring wraps */
        { 128, 4, 1, 384, 500, 300, 900, false, 0 }, /* a window over a long prefix, three query blocks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_attention(&cases[i]);
    struct bora_err err = { "" };
    struct kern_pf_attn_args bad = { NULL, NULL, NULL, NULL, 4, 0, 16, 4, 2, 48, 0, 0, NULL, 0, 0 };
    assert_int_equal(kern_pf_attention(&bad, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "head_dim 48"));
    bad.tile = KERN_PF_ATTN_WGMMA;
    bad.head_dim = 64;
    assert_int_equal(kern_pf_attention(&bad, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "head_dim 128"));
    bad.head_dim = 128;
    bad.tile = 7;
    assert_int_equal(kern_pf_attention(&bad, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "block shape 7"));
    bad.tile = KERN_PF_ATTN_NARROW;
    bad.splits = 4;
    assert_int_equal(kern_pf_attention(&bad, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "without a workspace"));
}

static void test_embed(void **st)
{
    (void)st;
    NEED_GPU();
    const int V = 50, dim = 40, n = 6;
    uint8_t *w = rand_e4m3((size_t)V * dim, 300);
    float *rs = rand_f32(V, 0.01f, 0.1f);
    int32_t ids[6] = { 3, 49, 0, 3, 17, 50 };
    uint8_t *dw = gt_upload(w, (size_t)V * dim);
    float *drs = gt_upload(rs, V * 4), *dx = gt_upload(NULL, (size_t)n * dim * 4);
    int32_t *dids = gt_upload(ids, sizeof ids);
    int zero = 0, *dbad = gt_upload(&zero, 4);
    struct kern_mat emb = { BORA_DT_F8_E4M3, dw, V, dim, 2.0f, drs };
    OK(kern_pf_embed(dx, &emb, dids, n, dbad, NULL, E));
    float *hx = malloc((size_t)n * dim * 4);
    int bad;
    gt_download(hx, dx, (size_t)n * dim * 4);
    gt_download(&bad, dbad, 4);
    for (int t = 0; t < n - 1; t++)
        for (int c = 0; c < dim; c++) {
            float want = bora_e4m3_to_f32(w[(size_t)ids[t] * dim + c]) * 2.0f * rs[ids[t]];
            if (fabsf(hx[(size_t)t * dim + c] - want) > 1e-6f * fabsf(want))
                fail_msg("embed token %d col %d: %g, reference %g", t, c, hx[(size_t)t * dim + c], want);
        }
    assert_int_equal(bad, 1);   /* id 50 is outside the 50-row table */
    for (int c = 0; c < dim; c++)
        assert_true(hx[(size_t)(n - 1) * dim + c] == 0.0f);
    free(w), free(rs), free(hx);
    kern_free(dw), kern_free(drs), kern_free(dx), kern_free(dids), kern_free(dbad);
}

#else
static void test_no_cuda(void **st)
{
    (void)st;
    fprintf(stderr, "SKIP: built without CUDA: GPU prefill kernel tests not run\n");
    skip();
}
#endif

int main(void)
{
#ifdef BORA_CUDA
    gt_seed(0x9e3779b97f4a7c15ull);   /* this program's data, the same every run */
#endif
    const struct CMUnitTest tests[] = {
#ifdef BORA_CUDA
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_add_norm_quant),
        cmocka_unit_test(test_swiglu_quant),
        cmocka_unit_test(test_quant),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_embed),
#else
        cmocka_unit_test(test_no_cuda),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
