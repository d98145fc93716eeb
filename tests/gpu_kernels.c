/* gpu_kernels.c — each CUDA kernel against a plain C reference (double accumulation) on odd
 * sizes: GEMV (FP8 per-row and per-tensor scales, BF16; vector and any-width paths; fused
 * RMSNorm, residual add, SwiGLU), RMSNorm, RoPE, attention (GQA, sliding window, YaRN factor,
 * interleaved pairs, query scaling, several splits), embedding and sampling. Skips loudly
 * without a GPU or without a CUDA build. */
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
#include "kernels/plan.h"

/* fp32 accumulation over ≤ 1040 terms vs double: rounding ≤ ~1e-6 relative; 1e-4 is loose
 * enough for any summation order and tight enough to catch a wrong element or scale. */
#define TOL_F32 1e-4
/* Attention keeps K and V in bf16 (8-bit mantissa); the reference rounds the same way, but a
 * cos/sin differing in the last bit can flip one rounding: ≤ 2^-8 relative in one element. */
#define TOL_ATTN 2e-3
/* Groups of more than 4 query heads run on the tensor cores (attention.cu): q and the softmax
 * weights are rounded to bf16 (2^-9 relative) before the products; the outputs are convex
 * combinations of V rows, so the error stays within a few 2^-9 of max|v| over the attended
 * values (of every kv head), which is the scale this bound is taken against (max|output| can be
 * well below it at early positions, where few keys are averaged). */
#define TOL_ATTN_MMA 8e-3

static double max_abs_d(const double *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

static void check_close(const char *what, const float *got, const double *ref, size_t n, double tol)
{
    double mx = max_abs_d(ref, n), worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            fail_msg("%s[%zu] = %g (not finite)", what, i, got[i]);
        double d = fabs(got[i] - ref[i]);
        if (d > worst) {
            worst = d;
            wi = i;
        }
    }
    printf("  %s: %zu values, max |err| / max|ref| = %.2e\n", what, n, worst / mx);
    if (worst > tol * mx)
        fail_msg("%s[%zu] = %.7g, reference %.7g (tolerance %.0e x %.3g)", what, wi, got[wi], ref[wi], tol, mx);
}

/* ---- GEMV ---- */

struct gemv_case {
    enum bora_dtype dt;
    int rows, cols;
    bool row_scale, norm;
    enum kern_gemv_mode mode;
};

static void run_gemv(const struct gemv_case *t)
{
    const size_t R = (size_t)t->rows, C = (size_t)t->cols, eb = bora_dtype_size(t->dt);
    uint8_t *w = malloc(R * C * eb);
    float *wf = malloc(R * C * sizeof(float)), *x = malloc(C * 4), *nw = malloc(C * 4), *rs = malloc(R * 4);
    float *y0 = malloc(R * 4), *y = malloc(R * 4);
    double *ref = malloc(R * sizeof(double));
    assert_non_null(ref);
    for (size_t i = 0; i < R * C; i++) {
        float v = gt_frand() * (t->dt == BORA_DT_F8_E4M3 ? 400.0f : 1.0f);
        if (t->dt == BORA_DT_F8_E4M3) {
            w[i] = bora_f32_to_e4m3(v);
            wf[i] = bora_e4m3_to_f32(w[i]);
        } else {
            uint16_t b = bora_f32_to_bf16(v);
            memcpy(w + 2 * i, &b, 2);
            wf[i] = bora_bf16_to_f32(b);
        }
    }
    const float scale = t->dt == BORA_DT_F8_E4M3 ? 1.0f / 448.0f : 1.0f;
    for (size_t i = 0; i < C; i++) {
        x[i] = gt_frand() * 3.0f;
        nw[i] = 0.5f + gt_frand() * 0.4f;
    }
    for (size_t r = 0; r < R; r++) {
        rs[r] = t->row_scale ? 0.5f + gt_frand() * 0.25f : 1.0f;
        y0[r] = gt_frand();
    }
    /* reference in double */
    double inv = 1.0;
    if (t->norm) {
        double ss = 0;
        for (size_t c = 0; c < C; c++)
            ss += (double)x[c] * x[c];
        inv = 1.0 / sqrt(ss / C + 1e-5);
    }
    double *acc = calloc(R, sizeof(double));
    for (size_t r = 0; r < R; r++) {
        for (size_t c = 0; c < C; c++)
            acc[r] += (double)wf[r * C + c] * (t->norm ? (float)(x[c] * inv) * nw[c] : x[c]);
        acc[r] *= (double)scale * rs[r];
    }
    size_t n_out = t->mode == KERN_GEMV_SWIGLU ? R / 2 : R;
    for (size_t i = 0; i < n_out; i++) {
        if (t->mode == KERN_GEMV_SWIGLU) {
            double g = acc[2 * i], u = acc[2 * i + 1];
            ref[i] = g / (1.0 + exp(-g)) * u;
        } else {
            ref[i] = acc[i] + (t->mode == KERN_GEMV_ADD ? y0[i] : 0.0);
        }
    }
    void *dw = gt_upload(w, R * C * eb);
    float *dx = gt_upload(x, C * 4), *dnw = gt_upload(nw, C * 4), *drs = gt_upload(rs, R * 4);
    float *dy = gt_upload(y0, R * 4);
    int *cnt = gt_upload(NULL, sizeof(int));
    OK(kern_memset(cnt, 0, sizeof(int), E));
    struct kern_gemv_args a = { .m = { t->dt, dw, t->rows, t->cols, scale, t->row_scale ? drs : NULL },
                                .x = dx, .y = dy, .mode = t->mode, .norm_w = t->norm ? dnw : NULL,
                                .norm_eps = 1e-5f, .counter = cnt };
    /* every launch shape, twice each: the work counter must come back to 0 for the second
     * launch (ADD: y reset first) */
    for (int rep = 0; rep < 2 * kern_gemv_variants(); rep++) {
        a.variant = rep / 2;
        if (t->mode == KERN_GEMV_SWIGLU) {   /* shapes with odd rows per warp refuse SwiGLU */
            struct bora_err e2 = { "" };
            OK(kern_copy_h2d(dy, y0, R * 4, E));
            int rc = kern_gemv(&a, NULL, &e2);
            if (rc == -EINVAL)
                continue;
            assert_int_equal(rc, 0);
        }
        OK(kern_copy_h2d(dy, y0, R * 4, E));
        OK(kern_gemv(&a, NULL, E));
        gt_download(y, dy, n_out * 4);
        char what[128];
        snprintf(what, sizeof what, "gemv %s %dx%d%s%s mode %d variant %d run %d", bora_dtype_name(t->dt),
                 t->rows, t->cols, t->row_scale ? " row-scale" : "", t->norm ? " +norm" : "", (int)t->mode,
                 a.variant, rep % 2);
        check_close(what, y, ref, n_out, TOL_F32);
        int c_after;
        gt_download(&c_after, cnt, sizeof c_after);
        assert_int_equal(c_after, 0);
    }
    kern_free(dw), kern_free(dx), kern_free(dnw), kern_free(drs), kern_free(dy), kern_free(cnt);
    free(w), free(wf), free(x), free(nw), free(rs), free(y0), free(y), free(ref), free(acc);
}

static void test_gemv(void **st)
{
    (void)st;
    NEED_GPU();
    const struct gemv_case cases[] = {
        { BORA_DT_F8_E4M3, 1003, 1040, true, false, KERN_GEMV_STORE },   /* vector path, odd rows */
        { BORA_DT_F8_E4M3, 517, 333, true, true, KERN_GEMV_STORE },      /* any-width path */
        { BORA_DT_F8_E4M3, 4099, 4096, false, true, KERN_GEMV_ADD },     /* per-tensor scale */
        { BORA_DT_F8_E4M3, 1002, 2064, true, true, KERN_GEMV_SWIGLU },
        { BORA_DT_BF16, 1001, 1032, false, true, KERN_GEMV_STORE },
        { BORA_DT_BF16, 77, 75, false, false, KERN_GEMV_ADD },
        { BORA_DT_BF16, 2050, 520, true, false, KERN_GEMV_SWIGLU },
        { BORA_DT_BF16, 3, 14344, false, true, KERN_GEMV_STORE },        /* fewer rows than a block */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_gemv(&cases[i]);
}

static void test_gemv_rejects(void **st)
{
    (void)st;
    NEED_GPU();
    int cnt_h = 0;
    int *cnt = gt_upload(&cnt_h, sizeof cnt_h);
    struct bora_err err = { "" };
    struct kern_gemv_args a = { .m = { BORA_DT_F32, cnt, 4, 4, 1, NULL }, .x = (float *)cnt, .y = (float *)cnt,
                                .counter = cnt };
    assert_int_equal(kern_gemv(&a, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "F32"));
    a.m.dtype = BORA_DT_BF16;
    a.m.rows = 5;
    a.mode = KERN_GEMV_SWIGLU;
    assert_int_equal(kern_gemv(&a, NULL, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "even"));
    kern_free(cnt);
}

/* ---- RMSNorm, SwiGLU, add ---- */
static void test_small_ops(void **st)
{
    (void)st;
    NEED_GPU();
    const int n = 3001;
    float *x = malloc(n * 4), *w = malloc(n * 4), *g = malloc(n * 4), *y = malloc(n * 4);
    double *ref = malloc(n * sizeof(double));
    double ss = 0;
    for (int i = 0; i < n; i++) {
        x[i] = gt_frand() * 5, w[i] = gt_frand(), g[i] = gt_frand() * 4;
        ss += (double)x[i] * x[i];
    }
    float *dx = gt_upload(x, n * 4), *dw = gt_upload(w, n * 4), *dg = gt_upload(g, n * 4), *dy = gt_upload(NULL, n * 4);
    OK(kern_rmsnorm(dy, dx, dw, n, 1e-6f, NULL, E));
    gt_download(y, dy, n * 4);
    for (int i = 0; i < n; i++)
        ref[i] = x[i] / sqrt(ss / n + 1e-6) * w[i];
    check_close("rmsnorm", y, ref, n, TOL_F32);
    OK(kern_swiglu(dy, dg, dx, n, NULL, E));
    gt_download(y, dy, n * 4);
    for (int i = 0; i < n; i++)
        ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * x[i];
    check_close("swiglu", y, ref, n, TOL_F32);
    OK(kern_add(dy, dw, n, NULL, E));
    gt_download(y, dy, n * 4);
    for (int i = 0; i < n; i++)
        ref[i] += w[i];
    check_close("add", y, ref, n, TOL_F32);
    kern_free(dx), kern_free(dw), kern_free(dg), kern_free(dy);
    free(x), free(w), free(g), free(y), free(ref);
}

/* ---- RoPE (reference: the model's own helpers) ---- */
static void rope_ref(double *v, const float *in, int n_heads, int hd, int pos, const float *inv, float af,
                     bool inter, double qs)
{
    for (int h = 0; h < n_heads; h++)
        for (int k = 0; k < hd / 2; k++) {
            int a = inter ? 2 * k : k, b = inter ? 2 * k + 1 : k + hd / 2;
            double ang = (double)pos * inv[k], c = cos(ang) * af, s = sin(ang) * af;
            double x0 = in[h * hd + a], x1 = in[h * hd + b];
            v[h * hd + a] = (x0 * c - x1 * s) * qs;
            v[h * hd + b] = (x0 * s + x1 * c) * qs;
        }
}

static void test_rope(void **st)
{
    (void)st;
    NEED_GPU();
    const int nh = 5, hd = 64, n = nh * hd;
    float inv[32], x[5 * 64], y[5 * 64];
    double ref[5 * 64];
    for (int k = 0; k < hd / 2; k++)
        inv[k] = (float)pow(10000.0, -2.0 * k / hd);
    for (int i = 0; i < n; i++)
        x[i] = gt_frand();
    float *dinv = gt_upload(inv, sizeof inv), *dx = gt_upload(NULL, sizeof x);
    int *dpos = gt_upload(NULL, sizeof(int));
    for (int variant = 0; variant < 2; variant++) {
        int pos = variant ? 1234 : 37;
        bool inter = variant == 1;
        struct kern_rope r = { dinv, variant ? 1.2772589f : 1.0f, inter, variant ? 0.1f : 0.0f, 32 };
        OK(kern_copy_h2d(dpos, &pos, sizeof pos, E));
        OK(kern_copy_h2d(dx, x, sizeof x, E));
        OK(kern_rope_apply(dx, nh, hd, dpos, &r, true, NULL, E));
        gt_download(y, dx, sizeof y);
        double qs = variant ? 1.0 + 0.1 * log(1.0 + floor(pos / 32.0)) : 1.0;
        rope_ref(ref, x, nh, hd, pos, inv, r.attn_factor, inter, qs);
        /* angles up to 1234 rad in fp32: argument error ≤ 1234 × 6e-8 */
        check_close(inter ? "rope interleaved+yarn+qscale" : "rope rotate-half", y, ref, n, 2e-4);
    }
    kern_free(dinv), kern_free(dx), kern_free(dpos);
}

/* ---- attention ---- */
struct attn_case {
    int n_heads, n_kv, hd, max_ctx, window, steps;
    bool inter;
    float af, beta;
    bool kv8;   /* an FP8 (e4m3) cache: attn_item widens it in registers, the tensor cores tile by tile */
    int blocks; /* the blocks the tensor-core attention sizes its splits for (0: the GPU's SMs); n_kv gives
                 * one split a kv head holding every key, so the tile pipeline wraps its buffers */
};

static float bf16_round(float f) { return bora_bf16_to_f32(bora_f32_to_bf16(f)); }

static void run_attention(const struct attn_case *t)
{
    const int q_dim = t->n_heads * t->hd, kv_dim = t->n_kv * t->hd, G = t->n_heads / t->n_kv;
    const int qkv_n = q_dim + 2 * kv_dim;
    const bool mma = G > 4 && (t->hd == 64 || t->hd == 128);   /* kern_attention's tensor-core path */
    const double tol = mma ? TOL_ATTN_MMA : TOL_ATTN;
    float *inv = malloc(t->hd / 2 * 4), *qkv = malloc(qkv_n * 4), *out = malloc(q_dim * 4);
    double *kc = calloc((size_t)t->max_ctx * kv_dim, sizeof(double)), *vc = calloc((size_t)t->max_ctx * kv_dim, sizeof(double));
    double *ref = malloc(q_dim * sizeof(double)), *qr = malloc(q_dim * sizeof(double)), *kr = malloc(kv_dim * sizeof(double));
    double *sc = malloc(t->max_ctx * sizeof(double));
    for (int k = 0; k < t->hd / 2; k++)
        inv[k] = (float)pow(1e6, -2.0 * k / t->hd);
    int n_split = plan_attn_splits(t->n_kv, t->max_ctx, t->window);
    size_t part = plan_attn_partial_floats(t->n_heads, t->hd, n_split);
    float *dinv = gt_upload(inv, t->hd / 2 * 4), *dqkv = gt_upload(NULL, qkv_n * 4), *dout = gt_upload(NULL, q_dim * 4);
    float *dpart = gt_upload(NULL, part * 4);
    uint16_t *dk = gt_upload(NULL, (size_t)t->max_ctx * kv_dim * 2), *dv = gt_upload(NULL, (size_t)t->max_ctx * kv_dim * 2);
    int *dcnt = gt_upload(NULL, t->n_kv * sizeof(int)), *dpos = gt_upload(NULL, sizeof(int));
    OK(kern_memset(dcnt, 0, t->n_kv * sizeof(int), E));
    struct kern_rope r = { dinv, t->af, t->inter, t->beta, 8 };
    struct kern_device dev;
    OK(kern_device_query(&dev, E));
    struct kern_attn_args a = { .qkv = dqkv, .k_cache = dk, .v_cache = dv, .out = dout, .partial = dpart,
                                .counters = dcnt, .d_pos = dpos, .max_ctx = t->max_ctx, .n_heads = t->n_heads,
                                .n_kv = t->n_kv, .head_dim = t->hd, .window = t->window, .n_split = n_split,
                                .sm_count = t->blocks ? t->blocks : dev.sm_count, .rope = r, .kv_fp8 = t->kv8 };
    double worst = 0;
    for (int pos = 0; pos < t->steps; pos++) {
        for (int i = 0; i < qkv_n; i++)
            qkv[i] = gt_frand() * 2;
        OK(kern_copy_h2d(dqkv, qkv, qkv_n * 4, E));
        OK(kern_copy_h2d(dpos, &pos, sizeof pos, E));
        OK(kern_attention(&a, NULL, E));
        gt_download(out, dout, q_dim * 4);
        /* reference: rotate, cache in bf16, softmax over the window */
        double qs = t->beta != 0 ? 1.0 + t->beta * log(1.0 + floor(pos / 8.0)) : 1.0;
        rope_ref(qr, qkv, t->n_heads, t->hd, pos, inv, t->af, t->inter, qs);
        rope_ref(kr, qkv + q_dim, t->n_kv, t->hd, pos, inv, t->af, t->inter, 1.0);
        for (int i = 0; i < kv_dim; i++) {
            kc[(size_t)pos * kv_dim + i] = bf16_round((float)kr[i]);
            vc[(size_t)pos * kv_dim + i] = bf16_round(qkv[q_dim + kv_dim + i]);
        }
        if (t->kv8)   /* the row the kernel cached: e4m3 of the same floats, then the reference's own */
            for (int g = 0; g < t->n_kv; g++) {
                uint8_t row[2][256];
                gt_download(row[0], (uint8_t *)dk + ((size_t)g * t->max_ctx + pos) * t->hd, (size_t)t->hd);
                gt_download(row[1], (uint8_t *)dv + ((size_t)g * t->max_ctx + pos) * t->hd, (size_t)t->hd);
                for (int i = 0; i < t->hd; i++) {
                    const float k = bora_e4m3_to_f32(row[0][i]), v = bora_e4m3_to_f32(row[1][i]);
                    const float kw = bora_e4m3_to_f32(bora_f32_to_e4m3((float)kr[g * t->hd + i]));
                    const float vw = bora_e4m3_to_f32(bora_f32_to_e4m3(qkv[q_dim + kv_dim + g * t->hd + i]));
                    /* v is cached as given: exactly its e4m3; k is rotated in fp32 on the GPU, in double
                     * here, so a value at a rounding boundary may land one e4m3 step (≤ 2^-3) away */
                    if (v != vw || fabsf(k - kw) > 0.125f * fmaxf(fabsf(k), fabsf(kw)) + 1.0f / 512)
                        fail_msg("attention fp8 cache, pos %d head %d element %d: k %g (want %g), v %g (want %g)", pos,
                                 g, i, (double)k, (double)kw, (double)v, (double)vw);
                    kc[(size_t)pos * kv_dim + g * t->hd + i] = k;
                    vc[(size_t)pos * kv_dim + g * t->hd + i] = v;
                }
            }
        int start = t->window > 0 && pos - t->window + 1 > 0 ? pos - t->window + 1 : 0;
        for (int h = 0; h < t->n_heads; h++) {
            int g = h / G;
            double m = -INFINITY, l = 0;
            for (int j = start; j <= pos; j++) {
                double d = 0;
                for (int i = 0; i < t->hd; i++)
                    d += qr[h * t->hd + i] * kc[(size_t)j * kv_dim + g * t->hd + i];
                sc[j] = d / sqrt((double)t->hd);
                m = fmax(m, sc[j]);
            }
            for (int j = start; j <= pos; j++)
                l += sc[j] = exp(sc[j] - m);
            for (int i = 0; i < t->hd; i++) {
                double o = 0;
                for (int j = start; j <= pos; j++)
                    o += sc[j] * vc[(size_t)j * kv_dim + g * t->hd + i];
                ref[h * t->hd + i] = o / l;
            }
        }
        double mx = max_abs_d(ref, q_dim);
        if (mma)   /* TOL_ATTN_MMA's scale: the attended values too */
            for (int j = start; j <= pos; j++)
                mx = fmax(mx, max_abs_d(vc + (size_t)j * kv_dim, kv_dim));
        for (int i = 0; i < q_dim; i++) {
            if (!isfinite(out[i]) || fabs(out[i] - ref[i]) > tol * mx)
                fail_msg("attention heads %d/%d hd %d window %d%s pos %d: out[%d] = %.6g, reference %.6g (scale %.4g)",
                         t->n_heads, t->n_kv, t->hd, t->window, t->kv8 ? " fp8 cache" : "", pos, i, out[i], ref[i],
                         mx);
            worst = fmax(worst, fabs(out[i] - ref[i]) / mx);
        }
    }
    printf("  attention %d/%d heads, hd %d, window %d, %d splits, %s%s%s%s%s: %d steps, max |err| / %s = %.2e\n",
           t->n_heads, t->n_kv, t->hd, t->window, n_split, t->inter ? "interleaved" : "rotate-half",
           t->beta != 0 ? " + qscale" : "", mma ? ", tensor cores" : "", t->kv8 ? ", fp8 cache" : "",
           t->blocks ? ", one split a kv head" : "", t->steps,
           mma ? "max(|ref|, |v|)" : "max|ref|", worst);
    fflush(stdout);
    kern_free(dinv), kern_free(dqkv), kern_free(dout), kern_free(dpart), kern_free(dk), kern_free(dv);
    kern_free(dcnt), kern_free(dpos);
    free(inv), free(qkv), free(out), free(kc), free(vc), free(ref), free(qr), free(kr), free(sc);
}

static void test_attention(void **st)
{
    (void)st;
    NEED_GPU();
    gt_seed(0x13198a2e03707344ull);   /* its own data, the same whether it runs alone (BORA_TEST_FILTER) or not */
    const struct attn_case cases[] = {
        { 8, 2, 128, 300, 0, 300, false, 1.0f, 0.0f, false, 0 },     /* GQA 4, full context, many splits */
        { 4, 1, 32, 200, 37, 120, true, 1.2772589f, 0.1f, false, 0 }, /* MQA, window, interleaved, YaRN, qscale */
        { 12, 1, 64, 90, 0, 90, false, 1.0f, 0.0f, false, 0 },       /* group of 12 (tensor cores) */
        { 24, 2, 128, 600, 0, 600, false, 1.0f, 0.0f, false, 0 },    /* Medium-like: groups of 12, hd 128, tiles + splits */
        { 16, 2, 128, 260, 100, 260, true, 1.2772589f, 0.1f, false, 0 }, /* groups of 8, window, YaRN, qscale */
        { 160, 32, 128, 800, 0, 800, false, 1.0f, 0.0f, false, 0 },  /* groups of 5, many kv heads: splits of 4 tiles */
        { 6, 6, 256, 40, 16, 40, false, 1.0f, 0.0f, false, 0 },      /* no grouping, hd 256, window */
        { 8, 4, 16, 700, 0, 700, true, 1.0f, 0.0f, false, 0 },       /* hd 16, long: 22 splits of 32 keys */
        /* an FP8 cache on attn_item: GQA 4; MQA with a window; groups of 8 of hd 32 */
        { 8, 2, 128, 300, 0, 300, false, 1.0f, 0.0f, true, 0 },
        { 4, 1, 32, 200, 37, 120, true, 1.2772589f, 0.1f, true, 0 },
        { 16, 2, 32, 150, 0, 150, false, 1.0f, 0.0f, true, 0 },
        /* and on the tensor cores (e4m3 tiles widened in shared memory): groups of 12 (Medium-like),
         * of 8 with a window, of 12 of hd 64, of 5 with splits of up to 4 tiles (an H200 gives each of
         * the 32 kv heads 4 blocks) */
        { 24, 2, 128, 600, 0, 600, false, 1.0f, 0.0f, true, 0 },
        { 16, 2, 128, 260, 100, 260, true, 1.2772589f, 0.1f, true, 0 },
        { 12, 1, 64, 90, 0, 90, false, 1.0f, 0.0f, true, 0 },
        { 160, 32, 128, 800, 0, 800, false, 1.0f, 0.0f, true, 0 },
        /* one split a kv head (2 blocks for 2 kv heads): up to 10 tiles through the 4 buffers, bf16
         * and fp8 */
        { 24, 2, 128, 600, 0, 600, false, 1.0f, 0.0f, false, 2 },
        { 24, 2, 128, 600, 0, 600, false, 1.0f, 0.0f, true, 2 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_attention(&cases[i]);
}

/* ---- embedding and sampling ---- */
static void test_embed(void **st)
{
    (void)st;
    NEED_GPU();
    const int V = 37, D = 300;
    uint8_t w[37 * 300];
    float rs[37], x[300];
    double ref[300];
    for (int i = 0; i < V * D; i++)
        w[i] = bora_f32_to_e4m3(gt_frand() * 300);
    for (int r = 0; r < V; r++)
        rs[r] = 0.01f + r * 0.001f;
    struct kern_state s = { .pos = 5, .fed_end = 6 };
    int32_t tokens[8] = { 0, 0, 0, 0, 0, 29, 0, 0 };
    uint8_t *dw = gt_upload(w, sizeof w);
    float *drs = gt_upload(rs, sizeof rs), *dx = gt_upload(NULL, sizeof x);
    struct kern_state *ds = gt_upload(&s, sizeof s);
    int32_t *dt = gt_upload(tokens, sizeof tokens);
    struct kern_mat m = { BORA_DT_F8_E4M3, dw, V, D, 0.5f, drs };
    OK(kern_embed(dx, &m, ds, dt, NULL, E));
    gt_download(x, dx, sizeof x);
    for (int c = 0; c < D; c++)
        ref[c] = bora_e4m3_to_f32(w[29 * D + c]) * 0.5 * rs[29];
    check_close("embed fed id 29", x, ref, D, 1e-6);
    /* past fed_end the sampled id is used and recorded */
    s.pos = 6, s.sampled = 3;
    OK(kern_copy_h2d(ds, &s, sizeof s, E));
    OK(kern_embed(dx, &m, ds, dt, NULL, E));
    gt_download(x, dx, sizeof x);
    gt_download(tokens, dt, sizeof tokens);
    assert_int_equal(tokens[6], 3);
    for (int c = 0; c < D; c++)
        ref[c] = bora_e4m3_to_f32(w[3 * D + c]) * 0.5 * rs[3];
    check_close("embed sampled id 3", x, ref, D, 1e-6);
    kern_free(dw), kern_free(drs), kern_free(dx), kern_free(ds), kern_free(dt);
}

/* The sampler's workspace (zeroed once, as the engine does), for the grid of blocks. */
static void *sample_work(void)
{
    static void *w;
    if (!w) {
        w = gt_upload(NULL, KERN_SAMPLE_WORK_BYTES);
        OK(kern_memset(w, 0, KERN_SAMPLE_WORK_BYTES, E));
    }
    return w;
}

/* One draw by the grid of blocks, then the same state through the one-block kernel: both must
 * leave the same state. Returns the id. */
static int32_t sample_once(float *dl, int V, struct kern_state *ds, struct kern_state s)
{
    struct kern_state out, one;
    OK(kern_copy_h2d(ds, &s, sizeof s, E));
    OK(kern_sample(dl, V, ds, NULL, sample_work(), NULL, E));
    gt_download(&out, ds, sizeof out);
    assert_int_equal(out.pos, s.pos + 1);
    OK(kern_copy_h2d(ds, &s, sizeof s, E));
    OK(kern_sample(dl, V, ds, NULL, NULL, NULL, E));
    gt_download(&one, ds, sizeof one);
    if (one.sampled != out.sampled || one.pos != out.pos || one.error != out.error)
        fail_msg("vocab %d, T %g, top-k %d, top-p %g, pos %d: the grid drew %d (error %d), one block %d (error %d)", V,
                 (double)s.temperature, s.top_k, (double)s.top_p, s.pos, out.sampled, out.error, one.sampled,
                 one.error);
    return out.sampled;
}

static void test_sample(void **st)
{
    (void)st;
    NEED_GPU();
    const int V = 131071;
    float *l = malloc(V * 4);
    for (int i = 0; i < V; i++)
        l[i] = gt_frand() * 4;
    l[77777] = 9.0f;          /* the argmax, tied with a later id */
    l[100000] = 9.0f;
    l[5] = 8.5f, l[60000] = 8.4f, l[123] = 8.3f, l[99] = 8.2f;   /* the rest of the top 6 */
    float *dl = gt_upload(l, V * 4);
    struct kern_state *ds = gt_upload(NULL, sizeof(struct kern_state));
    struct kern_state s = { .pos = 10, .top_p = 1.0f };
    assert_int_equal(sample_once(dl, V, ds, s), 77777);           /* greedy: lowest id on ties */
    s.temperature = 1.0f, s.top_k = 1;
    assert_int_equal(sample_once(dl, V, ds, s), 77777);
    s.top_k = 0, s.top_p = 1e-6f;
    assert_int_equal(sample_once(dl, V, ds, s), 77777);           /* nucleus of one */
    /* top-k 5 at temperature 1: only the 5 largest, each seen, the two 9.0 ones most often */
    const int allowed[5] = { 77777, 100000, 5, 60000, 123 };
    int seen[5] = { 0 };
    s.top_k = 5, s.top_p = 1.0f;
    for (int i = 0; i < 400; i++) {
        s.pos = i, s.seed = 42;
        int32_t id = sample_once(dl, V, ds, s);
        int k = 0;
        while (k < 5 && allowed[k] != id)
            k++;
        if (k == 5)
            fail_msg("top-k 5 drew id %d, outside the 5 largest", id);
        seen[k]++;
    }
    printf("  top-k 5 draws: %d %d %d %d %d\n", seen[0], seen[1], seen[2], seen[3], seen[4]);
    for (int k = 0; k < 5; k++)
        assert_true(seen[k] > 0);
    assert_true(seen[0] > seen[4] && seen[1] > seen[4]);
    /* top-p 0.45 over the top 6 (p ∝ e^9, e^9, e^8.5, e^8.4, e^8.3, e^8.2 → 0.244, 0.244, 0.148,
     * ...): the first id alone is below 0.45, the first two reach 0.488, so only they are drawn */
    s.top_k = 6, s.top_p = 0.45f;
    for (int i = 0; i < 100; i++) {
        s.pos = i, s.seed = 7;
        int32_t id = sample_once(dl, V, ds, s);
        assert_true(id == 77777 || id == 100000);
    }
    /* greedy: the largest logit in the scalar tail past the last float4; then the array one float
     * on (not 16-byte aligned: the scalar path), ids shifted by one */
    l[V - 1] = 10.0f;
    float *dl2 = gt_upload(l, V * 4);
    s = (struct kern_state){ .pos = 10, .top_p = 1.0f };
    assert_int_equal(sample_once(dl2, V, ds, s), V - 1);
    assert_int_equal(sample_once(dl2 + 1, V - 2, ds, s), 77776);
    /* one logit that is not a number (NaN, +inf, -inf), in the float4 body or in the scalar tail:
     * the step fails (KERN_STATE_NONFINITE) on the grid and on one block (sample_once compares
     * them), greedy or drawn, rather than choosing among the rest (a corrupt head row) */
    {
        const float odd_v[3] = { NAN, INFINITY, -INFINITY };
        const int odd_at[2] = { 3, V - 2 };
        for (int vi = 0; vi < 3; vi++)
            for (int ai = 0; ai < 2; ai++)
                for (int t = 0; t < 2; t++) {
                    const float keep = l[odd_at[ai]];
                    l[odd_at[ai]] = odd_v[vi];
                    OK(kern_copy_h2d(dl2, l, V * 4, E));
                    struct kern_state so = { .pos = 10, .temperature = t ? 1.0f : 0.f, .top_p = 1.0f, .seed = 2 }, out;
                    (void)sample_once(dl2, V, ds, so);
                    gt_download(&out, ds, sizeof out);
                    if (out.error != KERN_STATE_NONFINITE)
                        fail_msg("logit %d = %g, T %d: error %d, sampled %d", odd_at[ai], (double)odd_v[vi], t,
                                 out.error, out.sampled);
                    l[odd_at[ai]] = keep;
                }
        OK(kern_copy_h2d(dl2, l, V * 4, E));
        struct kern_state ok = { .pos = 10, .top_p = 1.0f }, out;   /* and finite again: no error */
        assert_int_equal(sample_once(dl2, V, ds, ok), V - 1);
        gt_download(&out, ds, sizeof out);
        assert_int_equal(out.error, 0);
    }
    /* the state mirrored into pinned host memory by the kernel itself */
    struct kern_state *hm = NULL;
    OK(kern_host_alloc((void **)&hm, sizeof *hm, E));
    memset(hm, 0, sizeof *hm);
    OK(kern_copy_h2d(ds, &s, sizeof s, E));
    OK(kern_sample(dl2, V, ds, hm, sample_work(), NULL, E));
    OK(kern_sync(E));
    assert_int_equal(hm->sampled, V - 1);
    assert_int_equal(hm->pos, 11);
    kern_host_free(hm);
    kern_free(dl), kern_free(dl2), kern_free(ds);
    free(l);
}

/* ---- the exact sampler (top-k off or above KERN_SAMPLE_MAX_K), recomputed from kernels.h's
 * contract and sample.cu's stated arithmetic: weights 2^((l - top) log2(e) / T) in 2^-44 units (truncated),
 * candidates sorted by (logit desc, id asc), the top-k, the shortest run reaching
 * ceil(top_p · weight), then the first id (ascending) whose running weight passes
 * floor(u · weight(nucleus)). ---- */
static uint32_t ref_key(float f)
{
    if (isnan(f))
        return 0;
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static const float *ref_sort_l;
static int ref_cmp(const void *a, const void *b)
{
    const int x = *(const int *)a, y = *(const int *)b;
    const uint32_t kx = ref_key(ref_sort_l[x]), ky = ref_key(ref_sort_l[y]);
    return kx != ky ? (kx > ky ? -1 : 1) : (x > y) - (x < y);
}
/* sample.cu's sample_uniform (splitmix64 of seed and position), written out again on purpose: the
 * reference must not share the code it checks */
static float ref_uniform(uint32_t seed, int pos)
{
    uint64_t z = ((uint64_t)seed << 32) ^ (uint64_t)(uint32_t)pos;
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.f / 16777216.f);
}
/* Checks one GPU draw against the reference. The host's exp2f may differ from the device's by
 * an ulp or two in a few weights (≤ 2^-22 relative each), so the id must be the reference's,
 * or its neighbour in the nucleus with the target within 1e-6 of the total weight of the
 * boundary between them; where the nucleus's end lies within 1e-6 of want, a nucleus one token
 * shorter or longer is accepted too. order: ids sorted by ref_cmp. Returns the draw's rank in
 * that order. */
static int check_exact_draw(const float *l, const int *order, int V, const struct kern_state *s, int got)
{
    float top = -INFINITY;
    for (int i = 0; i < V; i++)
        if (l[i] > top)
            top = l[i];
    const int K = s->top_k > 0 && s->top_k < V ? s->top_k : V;
    const float k2 = 1.4426950408889634f / s->temperature;
    uint64_t *w = calloc((size_t)V, sizeof *w);
    unsigned char *in = calloc((size_t)V, 1);
    uint64_t total = 0;
    for (int r = 0; r < K; r++) {
        const int i = order[r];
        w[i] = isnan(l[i]) ? 0 : (uint64_t)(exp2f((l[i] - top) * k2) * 0x1p44f);
        total += w[i];
    }
    int n = K;
    bool edge = false;   /* the nucleus's end within the weights' rounding of want */
    if (s->top_p > 0.f && s->top_p < 1.f) {
        uint64_t want = (uint64_t)ceil((double)s->top_p * (double)total), cum = 0;
        want = want < 1 ? 1 : want > total ? total : want;
        for (n = 0; n < K && cum < want; n++)
            cum += w[order[n]];
        const double tol = 1e-6 * (double)total;
        edge = fabs((double)cum - (double)want) <= tol ||
               (n > 0 && fabs((double)(cum - w[order[n - 1]]) - (double)want) <= tol);
    }
    /* the draw under the nucleus of n_try tokens; an edge nucleus may end one token either way */
    int rank_of_got = -1, want_id = -1;
    bool ok = false;
    for (int d = 0; d < 3 && !ok; d++) {
        const int n_try = n + (d == 0 ? 0 : d == 1 ? -1 : 1);
        if ((d > 0 && !edge) || n_try < 1 || n_try > K)
            continue;
        memset(in, 0, (size_t)V);
        uint64_t mass = 0;
        int rank = -1;
        for (int r = 0; r < n_try; r++) {
            in[order[r]] = 1;
            mass += w[order[r]];
            if (order[r] == got)
                rank = r;
        }
        uint64_t target = (uint64_t)((double)ref_uniform(s->seed, s->pos) * (double)mass);
        if (target >= mass)
            target = mass - 1;
        uint64_t run = 0, lo_got = 0, hi_got = 0;
        int wid = -1;
        for (int i = 0; i < V; i++) {
            if (!in[i])
                continue;
            if (i == got)
                lo_got = run, hi_got = run + w[i];
            run += w[i];
            if (wid < 0 && run > target)
                wid = i;
        }
        const double slack = 1e-6 * (double)mass;
        ok = got == wid ||
             (rank >= 0 && (double)target + slack >= (double)lo_got && (double)target - slack < (double)hi_got);
        if (d == 0)
            rank_of_got = rank, want_id = wid;
        else if (ok)
            rank_of_got = rank;
    }
    if (!ok)
        fail_msg("exact draw (T %g, top-k %d, top-p %g, pos %d): GPU id %d (logit %g, %s), reference id %d (logit %g)",
                 (double)s->temperature, s->top_k, (double)s->top_p, s->pos, got, (double)l[got],
                 rank_of_got >= 0 ? "in the nucleus" : "outside the nucleus", want_id, (double)l[want_id]);
    free(w);
    free(in);
    return rank_of_got;
}

/* Grid draws launched back to back (one workspace, the launches overlapping as programmatic
 * dependent launch lets them), each on its own state with its host mirror: every one leaves the
 * state and the mirror the one-block kernel leaves. */
static void test_sample_back_to_back(void **st)
{
    (void)st;
    NEED_GPU();
    enum { N = 8 };
    const int V = 131072;
    float *l = malloc(V * 4);
    for (int i = 0; i < V; i++)
        l[i] = gt_frand() * 4 + (i % 1000 == 7 ? 6.f : 0.f);
    float *dl = gt_upload(l, V * 4);
    const struct kern_state s[N] = {
        { .pos = 0, .top_p = 1.0f },
        { .pos = 3, .temperature = 1.0f, .top_p = 1.0f, .seed = 11 },
        { .pos = 6, .temperature = 0.7f, .top_p = 0.9f, .seed = 12 },
        { .pos = 9, .temperature = 0.7f, .top_p = 1.0f, .top_k = 50, .seed = 13 },
        { .pos = 12, .temperature = 1.0f, .top_p = 1.0f, .top_k = 5000, .seed = 14 },
        { .pos = 15, .temperature = 1.5f, .top_p = 0.95f, .seed = 15 },
        { .pos = 18, .temperature = 1.0f, .top_p = 0.8f, .top_k = 3000, .seed = 16 },
        { .pos = 21, .temperature = 1.0f, .top_p = 0.5f, .seed = 17 },
    };
    struct kern_state *dsv = gt_upload(NULL, sizeof s), *ds1 = gt_upload(NULL, sizeof *s), *hm = NULL;
    struct kern_state got[N], one;
    OK(kern_host_alloc((void **)&hm, sizeof s, E));
    for (int rep = 0; rep < 4; rep++) {
        memset(hm, 0, sizeof s);
        OK(kern_copy_h2d(dsv, s, sizeof s, E));
        for (int i = 0; i < N; i++)
            OK(kern_sample(dl, V, dsv + i, hm + i, sample_work(), NULL, E));
        gt_download(got, dsv, sizeof got);
        for (int i = 0; i < N; i++) {
            OK(kern_copy_h2d(ds1, s + i, sizeof *s, E));
            OK(kern_sample(dl, V, ds1, NULL, NULL, NULL, E));
            gt_download(&one, ds1, sizeof one);
            if (got[i].sampled != one.sampled || got[i].pos != one.pos || got[i].error != one.error)
                fail_msg("back to back, draw %d: the grid drew %d (pos %d), one block %d (pos %d)", i, got[i].sampled,
                         got[i].pos, one.sampled, one.pos);
            if (hm[i].sampled != one.sampled || hm[i].pos != one.pos)
                fail_msg("back to back, draw %d: the mirror holds %d (pos %d), one block drew %d", i, hm[i].sampled,
                         hm[i].pos, one.sampled);
        }
    }
    kern_host_free(hm);
    kern_free(dl), kern_free(dsv), kern_free(ds1);
    free(l);
}

static int rank_in(const int *order, int V, int id)
{
    for (int r = 0; r < V; r++)
        if (order[r] == id)
            return r;
    return V;
}

/* Top-k off or above 1,024: the draw covers the whole vocabulary, exactly as the contract says. */
static void test_sample_exact(void **st)
{
    (void)st;
    NEED_GPU();
    const int V = 131071;
    float *l = malloc(V * 4), *lt = malloc(V * 4), *lp = malloc(V * 4), *ll = malloc(V * 4);
    int *order = malloc(V * sizeof *order), *order_t = malloc(V * sizeof *order_t), *order_p = malloc(V * sizeof *order_p),
        *order_l = malloc(V * sizeof *order_l);
    for (int i = 0; i < V; i++) {
        l[i] = gt_frand() * 4;                  /* flat: the 1,024 largest carry ≈ 6 % of the weight at T 1 */
        lt[i] = (float)(int)(gt_frand() * 3);   /* five values: ties at every cut */
        lp[i] = l[i] + (i % 437 == 5 ? 12.f : 0.f);   /* peaked: 300 tokens hold ≈ 98 % of the weight */
        ll[i] = l[i];
        order[i] = order_t[i] = order_p[i] = order_l[i] = i;
    }
    ll[100001] = 18.f;   /* lifted: one token holds ≈ 97 % at T 1; a nucleus of 99 % reaches the far bins */
    ref_sort_l = l;
    qsort(order, V, sizeof *order, ref_cmp);
    ref_sort_l = lt;
    qsort(order_t, V, sizeof *order_t, ref_cmp);
    ref_sort_l = lp;
    qsort(order_p, V, sizeof *order_p, ref_cmp);
    ref_sort_l = ll;
    qsort(order_l, V, sizeof *order_l, ref_cmp);
    float *dl = gt_upload(l, V * 4), *dlt = gt_upload(lt, V * 4), *dlp = gt_upload(lp, V * 4),
          *dll = gt_upload(ll, V * 4);
    struct kern_state *ds = gt_upload(NULL, sizeof(struct kern_state));
    /* which: 0 flat, 1 ties, 2 peaked, 3 lifted. The nucleus ends among the 1,024 largest (peaked)
     * or in one bin of a few hundred tokens (flat): sorted there; with the ties its bin holds
     * thousands: the radix select on the weights. Lifted: it ends far from the top, past the bins
     * counted one by one (the pass over every bin). */
    static const struct { float t, p; int k, which; } cases[] = {
        { 1.0f, 1.0f, 0, 0 },    { 0.7f, 0.9f, 0, 0 },      { 1.3f, 1.0f, 5000, 0 }, { 1.0f, 0.5f, 5000, 0 },
        { 1.0f, 0.95f, 131071, 0 }, { 1.0f, 1.0f, 1025, 0 },   { 2.0f, 1e-6f, 0, 0 },   { 1.0f, 1.0f, 3000, 1 },
        { 1.0f, 0.3f, 0, 1 },    { 0.8f, 0.7f, 40000, 1 },  { 1.0f, 0.9f, 0, 2 },    { 0.7f, 0.95f, 2000, 2 },
        { 1.0f, 1.0f, 0, 2 },    { 1.0f, 0.99f, 0, 3 },     { 1.0f, 0.99f, 3000, 3 },
    };
    const float *hl[4] = { l, lt, lp, ll };
    float *dls[4] = { dl, dlt, dlp, dll };
    const int *ord[4] = { order, order_t, order_p, order_l };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int beyond = 0;
        for (int pos = 0; pos < 40; pos++) {
            struct kern_state s = { .pos = pos, .temperature = cases[c].t, .top_p = cases[c].p, .top_k = cases[c].k,
                                    .seed = 42 + (uint32_t)c };
            const int w = cases[c].which, got = sample_once(dls[w], V, ds, s);
            assert_true(got >= 0 && got < V);
            beyond += check_exact_draw(hl[w], ord[w], V, &s, got) >= 1024;
        }
        printf("  exact: T %.1f top-k %6d top-p %-6g %-7s: %d of 40 draws beyond the 1,024 largest\n",
               (double)cases[c].t, cases[c].k, (double)cases[c].p, (const char *[]){ "flat", "ties", "peaked", "lifted" }[cases[c].which],
               beyond);
        if (c == 0)   /* ≈ 94 % of the weight lies beyond them: a sampler limited to 1,024 would draw none */
            assert_true(beyond >= 30);
        if (c == 6)   /* top-p 1e-6: the nucleus is the largest logit alone */
            assert_int_equal(beyond, 0);
    }
    /* top-k up to 1,024 (the sorted path): every draw among the k largest. Flat logits find them
     * by bin; with the five tied values the largest one's bin is crowded and the radix select runs. */
    int *rank = malloc(V * sizeof *rank);
    for (int r = 0; r < V; r++)
        rank[order[r]] = r;
    for (int pos = 0; pos < 40; pos++) {
        struct kern_state s = { .pos = pos, .temperature = 1.0f, .top_p = 1.0f, .top_k = 500, .seed = 9 };
        const int got = sample_once(dl, V, ds, s);
        if (rank[got] >= 500)
            fail_msg("top-k 500 drew id %d, rank %d among the logits", got, rank[got]);
        const int got_t = sample_once(dlt, V, ds, s);   /* the 500 lowest ids among the largest value's ties */
        if (rank_in(order_t, V, got_t) >= 500)
            fail_msg("top-k 500 over tied logits drew id %d (logit %g), not among the 500 lowest ids of the largest",
                     got_t, (double)lt[got_t]);
        s.top_p = 0.5f;
        const int got_p = sample_once(dlp, V, ds, s);
        if (rank_in(order_p, V, got_p) >= 300)
            fail_msg("top-k 500, top-p 0.5 over the peaked logits drew id %d outside the 300 lifted ones", got_p);
    }
    free(rank);
    /* a vocabulary under 1,024 (top-k off is the sorted path there), one of 4,097 (a grid of two
     * blocks, the second with one logit) and one of NaN logits only (five blocks): ids in range,
     * and the NaN one reports it instead of choosing */
    {
        const int Vs = 777;
        float *dsm = gt_upload(l + 1000, Vs * 4);
        int *ord_s = malloc(Vs * sizeof *ord_s);
        for (int i = 0; i < Vs; i++)
            ord_s[i] = i;
        ref_sort_l = l + 1000;
        qsort(ord_s, Vs, sizeof *ord_s, ref_cmp);
        for (int pos = 0; pos < 20; pos++) {
            struct kern_state s = { .pos = pos, .temperature = 1.0f, .top_p = 1.0f, .top_k = 0, .seed = 3 };
            const int a = sample_once(dsm, Vs, ds, s);
            assert_true(a >= 0 && a < Vs && !isnan(l[1000 + a]));
            s.top_k = 10;
            assert_true(rank_in(ord_s, Vs, sample_once(dsm, Vs, ds, s)) < 10);
        }
        /* 4,097 logits: a grid of two blocks, the second holding one logit (the largest, then not) */
        float *odd = malloc(4097 * 4);
        memcpy(odd, l + 5000, 4097 * 4);
        odd[4096] = 20.f;
        float *dodd = gt_upload(odd, 4097 * 4);
        for (int pos = 0; pos < 20; pos++) {
            struct kern_state s = { .pos = pos, .temperature = 1.0f, .top_p = 1.0f, .seed = 5 };
            assert_int_equal(sample_once(dodd, 4097, ds, s), 4096);   /* e^20 against 4,096 × ≤ e^4 */
            s.temperature = 0.f;
            assert_int_equal(sample_once(dodd, 4097, ds, s), 4096);
        }
        for (int pos = 0; pos < 10; pos++) {   /* the grid (not greedy, not temperature alone) */
            struct kern_state s = { .pos = pos, .temperature = 1.0f, .top_p = pos % 2 ? 0.9f : 1.0f, .seed = 5,
                                    .top_k = pos % 3 ? 0 : 10 };
            assert_int_equal(sample_once(dodd, 4097, ds, s), 4096);
        }
        odd[4096] = -20.f;
        OK(kern_copy_h2d(dodd, odd, 4097 * 4, E));
        for (int pos = 0; pos < 20; pos++) {
            struct kern_state s = { .pos = pos, .temperature = 1.0f, .top_p = pos % 2 ? 0.9f : 1.0f, .seed = 5,
                                    .top_k = pos % 3 ? 0 : 10 };
            assert_true(sample_once(dodd, 4097, ds, s) < 4096);   /* grid and one block agree (sample_once) */
        }
        kern_free(dodd);
        free(odd);
        /* 36,865 logits: ten blocks, so greedy and temperature alone run on the grid too; the
         * largest value twice, in the third and in the last (one-logit) slice: the lower id */
        const int V10 = 9 * 4096 + 1;
        float *ten = malloc(V10 * 4);
        memcpy(ten, l + 7, V10 * 4);
        ten[V10 - 1] = ten[9000] = 30.f;
        float *dten = gt_upload(ten, V10 * 4);
        for (int pos = 0; pos < 10; pos++) {
            struct kern_state s = { .pos = pos, .top_p = 1.0f, .seed = 8 };
            assert_int_equal(sample_once(dten, V10, ds, s), 9000);
            s.temperature = 1.0f;   /* e^30 twice against 36,863 × ≤ e^4 */
            const int id = sample_once(dten, V10, ds, s);
            assert_true(id == 9000 || id == V10 - 1);
        }
        kern_free(dten);
        free(ten);
        float *nan_l = malloc(20000 * 4);
        for (int i = 0; i < 20000; i++)
            nan_l[i] = NAN;
        float *dn = gt_upload(nan_l, 20000 * 4);
        for (int k = 0; k < 3; k++) {
            struct kern_state s = { .pos = 1, .temperature = 1.0f, .top_p = 0.9f, .top_k = k == 0 ? 5 : k == 1 ? 0 : 1500 },
                              out;
            assert_true(sample_once(dn, 20000, ds, s) < 20000);
            gt_download(&out, ds, sizeof out);
            assert_true(out.sampled >= 0 && out.sampled < 20000);
            assert_int_equal(out.error, KERN_STATE_NONFINITE);
        }
        kern_free(dsm), kern_free(dn);
        free(ord_s), free(nan_l);
    }
    kern_free(dl), kern_free(dlt), kern_free(dlp), kern_free(dll), kern_free(ds);
    free(l), free(lt), free(lp), free(ll), free(order), free(order_t), free(order_p), free(order_l);
}

static void test_bandwidth_probe(void **st)
{
    (void)st;
    NEED_GPU();
    void *d = gt_upload(NULL, 256u << 20);
    double g = 0, loads = 0, bulk = 0;
    OK(kern_fill_random(d, BORA_DT_BF16, 128u << 20, 1.0f, 1, E));
    OK(kern_bandwidth_read_detail(d, 256u << 20, 3, &loads, &bulk, E));
    OK(kern_bandwidth_read(d, 256u << 20, 3, &g, E));
    printf("  streaming read of 256 MiB: %.0f GB/s (16-byte loads %.0f, bulk copies %.0f)\n", g, loads, bulk);
    assert_true(loads > 100 && loads < 20000);
    assert_true(bulk > 100 && bulk < 20000);
    assert_true(g > 100 && g < 20000);
    /* what the reader cannot take is refused, not timed */
    struct bora_err e2 = { "" };
    assert_int_equal(kern_bandwidth_read(d, 1000, 3, &g, &e2), -EINVAL);
    assert_non_null(strstr(e2.msg, "bytes"));
    assert_int_equal(kern_bandwidth_read((char *)d + 8, 1u << 20, 3, &g, &e2), -EINVAL);
    assert_int_equal(kern_bandwidth_read(d, 1u << 20, 0, &g, &e2), -EINVAL);
    kern_free(d);
}

/* The persistent kernel's shared-memory plan (host arithmetic: no GPU needed) on an H200's limits
 * (132 SMs, 227 KiB a block). Medium 3.5 FP8 keeps h (28,672 values) as hi + lo in 112 KiB and
 * its tensor-core attention takes 110 KiB, so only 3 ring stages fit beside them; with h in f16 (bf16 through L2)
 * the attention's space holds two more; 7B's and Ministral 8B's shapes run that attention and
 * layout too, FP8 and BF16. Small 24B keeps the plain layout (with h as hi only, which deepens its
 * ring: MEGA_H16_BELOW). FP8 on
 * these shapes (2 KiB row chunks everywhere) runs the instance with the stage geometry compiled in,
 * unless BORA_MEGA_FLAGS=1024 asks for the general one. Where a layer streams at least 4 MiB a
 * block (Medium 3.5, not 7B) it reads each stage with one tensor copy into an unpadded 32 KiB slot
 * (BORA_MEGA_FLAGS=8192 forces that, 2048 forbids it: 16 row copies into padded rows, 33 KiB). */
/* The layout of a (on an H200's limits: 132 SMs, 227 KiB a block) into d, printed, which must say want. */
static void mega_describe_has(const char *what, const struct kern_mega_args *a, const char *want, char *d, size_t cap)
{
    struct bora_err err = { "" };
    if (kern_mega_describe(a, d, cap, &err))
        fail_msg("%s: %s", what, err.msg);
    printf("  %s: %s\n", what, d);
    if (!strstr(d, want))
        fail_msg("%s: layout '%s' lacks '%s'", what, d, want);
}

static void mega_layout(const char *what, enum bora_dtype dt, int dim, int hidden, int n_heads, int n_kv,
                        int flags, int ns_max, const char *want, bool union_ring, bool compiled, bool tmap)
{
    struct kern_mega_args a = { .dtype = dt, .n_layers = 88, .dim = dim, .hidden = hidden, .n_heads = n_heads,
                                .n_kv = n_kv, .head_dim = 128, .max_ctx = 8448, .n_split = plan_attn_splits(n_kv, 8448, 0),
                                .eps = 1e-5f, .sm_count = 132, .smem_optin = 232448, .flags = flags,
                                .ns_max = ns_max, .ahead = KERN_MEGA_AHEAD_AUTO };
    char d[512];
    mega_describe_has(what, &a, want, d, sizeof d);
    assert_int_equal(strstr(d, "attention's space") != NULL, union_ring);
    assert_int_equal(strstr(d, "stage geometry compiled in") != NULL, compiled);
    assert_int_equal(strstr(d, "one tensor copy a stage") != NULL, tmap);
    assert_int_equal(strstr(d, "in halves") != NULL, strstr(want, "in halves") != NULL);
    /* x as tagged words between wo / down and their readers, unless FLAGS=32768 (or 8, two passes);
     * qkv too unless FLAGS=65536 (on the tensor-core attention only where qkv's 16-row groups are at
     * least the grid's 128 blocks: every shape here); the tensor-core attention's output too unless
     * FLAGS=262144 */
    const bool tagged = !(flags & (32768 | 8));
    const bool qkv_every_block = (n_heads + 2 * n_kv) * 128 / 16 >= 128;
    assert_non_null(strstr(d, "128 blocks"));
    assert_int_equal(strstr(d, "; x tagged") != NULL, tagged);
    assert_int_equal(strstr(d, ", qkv too") != NULL,
                     tagged && !(flags & 65536) && (!kern_mega_amma(&a) || qkv_every_block));
    assert_int_equal(strstr(d, ", attention output too") != NULL,
                     tagged && !(flags & 262144) && kern_mega_amma(&a));
    /* and h where it goes through L2 in bf16 and no groups go in halves, unless FLAGS=524288 */
    assert_int_equal(strstr(d, ", h too") != NULL,
                     tagged && !(flags & 524288) && strstr(d, "h in bf16") && !strstr(d, "in halves"));
    /* the tensor-core attention: groups of more than 4 heads, and groups of 4 whose rows are all
     * multiples of 2,048 elements (7B, Ministral 8B; FP8 and BF16) unless FLAGS=131072 */
    const bool rows_2k = dim % 2048 == 0 && hidden % 2048 == 0 && n_heads * 128 % 2048 == 0;
    assert_int_equal(kern_mega_amma(&a) != 0, n_heads / n_kv > 4 || (flags & 64) || (rows_2k && !(flags & 131072)));
    /* the producers: never held on the tensor-core attention, KERN_MEGA_AHEAD stages into wo and
     * down on attn_item (KERN_MEGA_AHEAD_AUTO) */
    char held[64];
    snprintf(held, sizeof held, "; producers held %d stages into wo and down", KERN_MEGA_AHEAD);
    assert_int_equal(strstr(d, "; producers never held") != NULL, kern_mega_amma(&a) != 0);
    assert_int_equal(strstr(d, held) != NULL, !kern_mega_amma(&a));
    /* 8,448 positions: splits of more than one tile, so the tensor-core attention keeps three buffers */
    assert_int_equal(strstr(d, "; 3 K/V tile buffers") != NULL, kern_mega_amma(&a) != 0);
}

/* An engine of a short context (every split of the tensor-core attention one tile of 64 keys: at
 * most 64 × 16 = 1,024 positions with 8 kv heads over 128 blocks) keeps two K/V tile buffers, not
 * three, and so one more ring stage outside the attention's space; FLAGS=1048576 keeps three. */
static void mega_layout_short(const char *what, enum bora_dtype dt, int dim, int hidden, int n_heads, int max_ctx,
                              int flags, const char *want)
{
    struct kern_mega_args a = { .dtype = dt, .n_layers = 32, .dim = dim, .hidden = hidden, .n_heads = n_heads,
                                .n_kv = 8, .head_dim = 128, .max_ctx = max_ctx,
                                .n_split = plan_attn_splits(8, max_ctx, 0), .eps = 1e-5f, .sm_count = 132,
                                .smem_optin = 232448, .flags = flags, .ahead = KERN_MEGA_AHEAD_AUTO };
    char d[512];
    mega_describe_has(what, &a, want, d, sizeof d);
}

/* Without MEGA_DIAG=1 the kernel has no code for its trace or its diagnostic switches: asking
 * for either is refused with the build that has them, not silently ignored. A MEGA_DIAG=1 build
 * takes both. (Host code: no GPU needed.) */
static void test_mega_diag(void **st)
{
    (void)st;
    struct kern_mega_args a = { .dtype = BORA_DT_F8_E4M3, .n_layers = 32, .dim = 4096, .hidden = 14336,
                                .n_heads = 32, .n_kv = 8, .head_dim = 128, .max_ctx = 640,
                                .n_split = plan_attn_splits(8, 640, 0), .eps = 1e-5f, .sm_count = 132,
                                .smem_optin = 232448, .ahead = KERN_MEGA_AHEAD_AUTO };
    struct bora_err err = { "" };
    assert_int_equal(kern_mega_check(&a, &err), 0);
    unsigned long long slot;
    for (int k = 0; k < 2; k++) {
        struct kern_mega_args b = a;
        if (k == 0)
            b.debug = 4;
        else
            b.trace = &slot;   /* never written: the check reads only whether it is there */
        err.msg[0] = 0;
        const int rc = kern_mega_check(&b, &err);
        if (kern_mega_diag()) {
            assert_int_equal(rc, 0);
        } else {
            printf("  %s: %s\n", k ? "trace" : "debug", err.msg);
            assert_int_equal(rc, -EINVAL);
            assert_non_null(strstr(err.msg, "MEGA_DIAG=1"));
            assert_non_null(strstr(err.msg, k ? "trace" : "debug"));
        }
    }
}

static void test_mega_layout(void **st)
{
    (void)st;
    mega_layout_short("7B fp8, 640 positions", BORA_DT_F8_E4M3, 4096, 14336, 32, 640,  0,
                      "a ring of 5 stages of 33 KiB (1 in the attention's space; h in bf16); stage geometry compiled in; "
                      "x tagged, qkv too, attention output too, h too; 2 K/V tile buffers; producers never held");
    mega_layout_short("7B fp8, 1,024 positions", BORA_DT_F8_E4M3, 4096, 14336, 32, 1024, 0, "; 2 K/V tile buffers");
    mega_layout_short("7B fp8, 1,025 positions", BORA_DT_F8_E4M3, 4096, 14336, 32, 1025, 0,
                      "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16); stage geometry compiled in; "
                      "x tagged, qkv too, attention output too, h too; 3 K/V tile buffers");
    mega_layout_short("7B fp8, 640 positions, three buffers", BORA_DT_F8_E4M3, 4096, 14336, 32, 640, 1048576,
                      "(2 in the attention's space; h in bf16); stage geometry compiled in; x tagged, qkv too, attention "
                      "output too, h too; 3 K/V tile buffers");
    mega_layout_short("7B bf16, 640 positions", BORA_DT_BF16, 4096, 14336, 32, 640, 0,
                      "(1 in the attention's space; h in bf16); x tagged, qkv too, attention output too, h too; 2 K/V "
                      "tile buffers");
    mega_layout_short("Small 24B fp8, 640 positions (attn_item)", BORA_DT_F8_E4M3, 5120, 32768, 32, 640, 0,
                      "; producers held 2 stages into wo and down");
    mega_layout("Medium 3.5 fp8", BORA_DT_F8_E4M3, 12288, 28672, 96, 8, 0, 0,
                "a ring of 5 stages of 32 KiB (2 in the attention's space; h in bf16)", true, true, true);
    mega_layout("Medium 3.5 fp8, row copies", BORA_DT_F8_E4M3, 12288, 28672, 96, 8, 2048, 0,
                "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16)", true, true, false);
    mega_layout("Medium 3.5 bf16", BORA_DT_BF16, 12288, 28672, 96, 8, 0, 0,
                "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16)", true, false, false);
    /* 7B BF16 too, since the twenty-fifth session: its tensor-core attention with h in bf16 and two
     * of its 5 stages in the attention's space (3 stages without: FLAGS=512) */
    mega_layout("7B bf16", BORA_DT_BF16, 4096, 14336, 32, 8, 0, 0,
                "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16)", true, false, false);
    mega_layout("7B bf16, h as hi + lo", BORA_DT_BF16, 4096, 14336, 32, 8, 512, 0, "a ring of 3 stages of 33 KiB;",
                false, false, false);
    mega_layout("7B bf16 on attn_item", BORA_DT_BF16, 4096, 14336, 32, 8, 131072, 0,
                "a ring of 5 stages of 33 KiB (h in bf16); x tagged, qkv too, h too", false, false, false);
    /* 7B FP8 (groups of 4 heads, 2 KiB row chunks) runs the tensor-core attention too, whose space
     * holds two ring stages beside h in bf16 (kern_mega_amma); it streams 1.8 MB a block a layer,
     * under MEGA_TMAP_MIN_BYTES: row copies unless forced (8192) */
    mega_layout("7B fp8", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 0, 0,
                "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16)", true, true, false);
    /* never the ring in the attention's space (FLAGS=512): h as hi + lo beside the attention, 3 stages */
    mega_layout("7B fp8, h as hi + lo", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 512, 0, "a ring of 3 stages of 33 KiB;",
                false, true, false);
    mega_layout("7B fp8, tensor copies forced", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 8192, 0,
                "a ring of 6 stages of 32 KiB (3 in the attention's space; h in bf16)", true, true, true);
    mega_layout("7B fp8, general instance", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 1024, 0,
                "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16)", true, false, false);
    mega_layout("7B fp8, x through the barriers", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 32768, 0,
                "a ring of 5 stages of 33 KiB (2 in the attention's space; h in bf16); stage geometry compiled in", true,
                true, false);
    /* qkv, the attention's output and h reach the attention, wo and down as tagged words; FLAGS=262144
     * sends the output through the attention's barrier, 65536 qkv, 524288 h */
    mega_layout("7B fp8, tagged inputs", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 0, 0,
                "; x tagged, qkv too, attention output too, h too", true, true, false);
    mega_layout("7B fp8, the attention's output through the barrier", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 262144, 0,
                "; x tagged, qkv too", true, true, false);
    mega_layout("Medium 3.5 fp8, qkv through the barrier", BORA_DT_F8_E4M3, 12288, 28672, 96, 8, 65536, 0,
                "; x tagged, attention output too, h too", true, true, true);
    mega_layout("7B fp8, h through the barrier", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 524288, 0,
                "; x tagged, qkv too, attention output too", true, true, false);
    /* on attn_item (FLAGS=131072), as before the twenty-fourth session: the plain layout with h as
     * hi only, qkv tagged too */
    mega_layout("7B fp8 on attn_item", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 131072, 0,
                "a ring of 5 stages of 33 KiB (h in bf16); stage geometry compiled in; x tagged, qkv too", false, true,
                false);
    mega_layout("7B fp8 on attn_item, h as hi + lo", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 131072 | 512, 0,
                "a ring of 4 stages of 33 KiB;", false, true, false);
    mega_layout("7B fp8 on attn_item, qkv through the barrier", BORA_DT_F8_E4M3, 4096, 14336, 32, 8, 131072 | 65536, 0,
                "a ring of 5 stages of 33 KiB (h in bf16); stage geometry compiled in; x tagged", false, true, false);
    /* Small 24B: rows of 5,120 bytes stream 2,560 bytes a stage (41 KiB slots); h's 32,768 units as
     * hi + lo would take 128 KiB and leave 2 stages, as f16 hi only (bf16 through L2) 3. Its rows
     * take the general instance. Its wo and down have 320 groups of 16 rows over 128 blocks: the 64
     * extra ones go in halves (every block streams 2.5 groups), unless BORA_MEGA_FLAGS=32 keeps
     * them whole. */
    mega_layout("Small 24B fp8", BORA_DT_F8_E4M3, 5120, 32768, 32, 8, 0, 0,
                "a ring of 3 stages of 41 KiB (h in bf16); in halves: 64 groups of wo and 64 of down", false, false, false);
    mega_layout("Small 24B fp8, whole groups (FLAGS=32)", BORA_DT_F8_E4M3, 5120, 32768, 32, 8, 32, 0,
                "a ring of 3 stages of 41 KiB (h in bf16)", false, false, false);
    mega_layout("Small 24B fp8, h as hi + lo (FLAGS=512)", BORA_DT_F8_E4M3, 5120, 32768, 32, 8, 512, 0,
                "a ring of 2 stages of 41 KiB; in halves", false, false, false);
    /* BF16 the same way with h as bf16 hi only: 7B on attn_item 4 → 5 stages (above), Small 24B 2 → 4
     * (rows of 10,240 bytes: 2 KiB stages) */
    mega_layout("Small 24B bf16", BORA_DT_BF16, 5120, 32768, 32, 8, 0, 0,
                "a ring of 4 stages of 33 KiB (h in bf16); in halves: 64 groups of wo and 64 of down", false, false, false);
    /* Ministral 8B on the tensor-core attention gets 6 stages, 3 of them in the attention's space, FP8
     * and BF16 (on attn_item: BF16 5 with h as hi only, its load one round trip, not two; FP8 5, h as
     * hi + lo) */
    mega_layout("Ministral 8B bf16", BORA_DT_BF16, 4096, 12288, 32, 8, 0, 0,
                "a ring of 6 stages of 33 KiB (3 in the attention's space; h in bf16)", true, false, false);
    mega_layout("Ministral 8B bf16 on attn_item", BORA_DT_BF16, 4096, 12288, 32, 8, 131072, 0,
                "a ring of 5 stages of 33 KiB (h in bf16)", false, false, false);
    mega_layout("Ministral 8B fp8", BORA_DT_F8_E4M3, 4096, 12288, 32, 8, 0, 0,
                "a ring of 6 stages of 33 KiB (3 in the attention's space; h in bf16); stage geometry compiled in", true,
                true, false);
    mega_layout("Ministral 8B fp8 on attn_item", BORA_DT_F8_E4M3, 4096, 12288, 32, 8, 131072, 0,
                "a ring of 5 stages of 33 KiB; stage geometry compiled in", false, true, false);
    /* forced (tests): at most 4 stages, one of them in the attention's space */
    mega_layout("96/8 heads, dim 256, fp8, forced", BORA_DT_F8_E4M3, 256, 512, 96, 8, 256, 4,
                "a ring of 4 stages of 33 KiB (1 in the attention's space", true, false, false);
}

/* The persistent kernel's schedule (host arithmetic: no GPU needed): for every block the producer
 * warp and the consumers walk the same stages, and every stage of every matrix is streamed once
 * (kern_mega_schedule_check). Over the presets and over shapes whose 16-row groups the grid does
 * not divide: wo / down in halves (2 x extra <= blocks) or as whole extra groups, grids of 1 to
 * 132 blocks, odd stage counts (832-byte stages of 4,160-byte rows), and the layouts
 * BORA_MEGA_FLAGS forces. */
static void test_mega_schedule(void **st)
{
    (void)st;
    static const struct { int dim, hidden, n_heads, n_kv; } shapes[] = {
        { 4096, 14336, 32, 8 }, { 4096, 12288, 32, 8 }, { 5120, 32768, 32, 8 }, { 12288, 28672, 96, 8 },
        { 5120, 4096, 32, 8 }, { 5120, 2048, 32, 8 }, { 256, 1024, 32, 8 }, { 256, 4032, 32, 8 }, { 2112, 4160, 16, 4 },
    };
    static const int flags[] = { 0, 32, 512, 1024, 131072 };
    int checked = 0, with_halves = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int dt = 0; dt < 2; dt++)
            for (size_t f = 0; f < sizeof flags / sizeof *flags; f++)
                for (int nb = 1; nb <= 132; nb += nb < 8 ? 1 : nb < 96 ? 13 : 4) {
                    struct kern_mega_args a = {
                        .dtype = dt ? BORA_DT_BF16 : BORA_DT_F8_E4M3, .n_layers = 3, .dim = shapes[s].dim,
                        .hidden = shapes[s].hidden, .n_heads = shapes[s].n_heads, .n_kv = shapes[s].n_kv,
                        .head_dim = 128, .max_ctx = 1024, .n_split = plan_attn_splits(shapes[s].n_kv, 1024, 0),
                        .eps = 1e-5f, .sm_count = 132, .smem_optin = 232448, .flags = flags[f], .blocks_max = nb,
                        .ahead = KERN_MEGA_AHEAD_AUTO };
                    struct bora_err err = { "" };
                    char d[512];
                    if (kern_mega_describe(&a, d, sizeof d, &err) == -ENOTSUP)
                        continue;   /* a shape the kernel refuses (it says why elsewhere) */
                    int rc = kern_mega_schedule_check(&a, &err);
                    if (rc)
                        fail_msg("dim %d hidden %d %s flags %d, %d blocks (%s): %s", a.dim, a.hidden,
                                 dt ? "bf16" : "fp8", a.flags, nb, d, err.msg);
                    checked++;
                    with_halves += strstr(d, "in halves") != NULL;
                }
    printf("  %d layouts' schedules checked, %d of them with groups in halves\n", checked, with_halves);
    assert_true(checked > 500);
    assert_true(with_halves > 50);   /* the check covered the halves, not only whole groups */
}
#else
static void test_no_cuda(void **st)
{
    (void)st;
    fprintf(stderr, "SKIP: built without CUDA: GPU kernel tests not run\n");
    skip();
}
#endif

int main(void)
{
#ifdef BORA_CUDA
    gt_seed(0x243f6a8885a308d3ull);   /* this program's data, the same every run */
#endif
    const struct CMUnitTest tests[] = {
#ifdef BORA_CUDA
        cmocka_unit_test(test_gemv),
        cmocka_unit_test(test_gemv_rejects),
        cmocka_unit_test(test_small_ops),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_sample_exact),
        cmocka_unit_test(test_sample_back_to_back),
        cmocka_unit_test(test_bandwidth_probe),
        cmocka_unit_test(test_mega_layout),
        cmocka_unit_test(test_mega_diag),
        cmocka_unit_test(test_mega_schedule),
#else
        cmocka_unit_test(test_no_cuda),
#endif
    };
    /* BORA_TEST_FILTER=test_attention (a cmocka pattern): only the tests so named, for a quick check */
    const char *flt = getenv("BORA_TEST_FILTER");
    if (flt && *flt)
        cmocka_set_test_filter(flt);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
