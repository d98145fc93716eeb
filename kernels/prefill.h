/* prefill.h — the plain-C boundary of bora's batched prefill kernels: a prompt chunk of n tokens
 * runs through each layer as tensor-core GEMMs (cuBLASLt, FP8 e4m3 or BF16) joined by fused
 * row kernels (residual add + RMSNorm + activation quantization, QKV scaling + RoPE + KV write,
 * SwiGLU + quantization) and a flash-attention kernel over the cached prefix plus the chunk.
 *
 * Scaling scheme (FP8 models). Weights are e4m3 with one fp32 scale per output row (per-tensor
 * scales arrive as equal rows). Activations are quantized on the fly per token: row t of an
 * activation matrix becomes q[t][c] = e4m3_satfinite(a[t][c] / s[t]) with s[t] = max_c |a[t][c]| / 448
 * (s = 1 for an all-zero row). The GEMM runs with unit scales into a bf16 matrix of raw sums,
 * and the row kernel that consumes it applies y[t][r] = raw[t][r] × w_scale[r] × s[t] in fp32 while
 * it does its own work, so no pass exists only to scale. BF16 models use the same kernels with
 * bf16 activations and no token scale (s = NULL ≡ 1).
 *
 * Conventions as kernels.h: d_* and "device" pointers are device memory, launches are
 * asynchronous on `stream`, every function returns 0, -EINVAL (shape or dtype not supported;
 * the message names it) or -EIO (a CUDA or cuBLASLt call failed; the message names the call).
 * Thread: one host thread per kern_gemm context and per set of buffers at a time.
 * Defined only when built with CUDA (BORA_CUDA). */
#ifndef BORA_KERNELS_PREFILL_H
#define BORA_KERNELS_PREFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KERN_FP8_MAX 448.0f                  /* largest finite e4m3 magnitude */
#define KERN_GEMM_WORKSPACE (32u << 20)      /* bytes of cuBLASLt workspace, allocated once */
#define KERN_GEMM_CACHE 128                  /* shapes × n buckets whose algorithm is remembered */
#define KERN_GEMM_FP8_FAST_ACCUM 1           /* Hopper FP8 fast accumulation (≈ 10 % faster) */

/* ---- GEMM ---- */

struct kern_gemm;   /* cuBLASLt handle, workspace, per-shape algorithm cache */

/* Creates a GEMM context on the current device (workspace of KERN_GEMM_WORKSPACE bytes).
 * Caller owns *out and frees it with kern_gemm_destroy. -EIO, -ENOMEM. */
int kern_gemm_create(struct kern_gemm **out, struct bora_err *err);
void kern_gemm_destroy(struct kern_gemm *g);

struct kern_gemm_args {
    enum bora_dtype dtype;   /* F8_E4M3 (both operands e4m3) or BF16 (both bf16) */
    const void *w;           /* (rows, cols) row-major device: weights as stored, no scales */
    const void *x;           /* (n, cols) row-major device: activations */
    uint16_t *y;             /* (n, rows) row-major bf16 device: y[t][r] = Σ_c w[r][c] x[t][c] */
    int rows, cols, n;
    int cap_n;               /* rows x and y have room for (≥ n; 0: n): a new n bucket's algorithm is
                              * then timed at min(bucket top, cap_n), the rows past n as scratch */
};

/* y = x wᵀ (raw sums, no scales) on tensor cores through cuBLASLt; the algorithm is chosen the
 * first time a shape (rows, cols, dtype and a bucket of n: powers of two up to 256, then
 * quarter octaves, ≤ 25 % wide) is seen and remembered (KERN_GEMM_CACHE of them; later ones ask the
 * heuristic each time); another n of the same bucket reuses it after one cublasLtMatmulAlgoCheck
 * (its own plan if cuBLASLt refuses). On a stream that is not capturing, the heuristic's first 8
 * candidates are timed on the call's own operands at the bucket's top n (at least 16; one stream
 * synchronization and about a millisecond per shape at 64 tokens, once per shape and bucket) and
 * the fastest kept; otherwise the heuristic's first. The engine has every bucket chosen when it
 * opens (prefill_run_tune), so prompts find them chosen. Shapes
 * cuBLASLt refuses (FP8 needs cols % 16 == 0 and rows % 16 == 0) run a plain tiled CUDA-core
 * kernel instead. Budget: ≥ 1.2 PFLOP/s FP8, ≥ 600 TFLOP/s BF16 at n ≥ 512 on an H200. No
 * allocation after the first call of a shape. */
int kern_gemm_run(struct kern_gemm *g, const struct kern_gemm_args *a, struct CUstream_st *stream,
                  struct bora_err *err);
/* The bucket of token counts n belongs to, as its largest count: 16, 32, 64, 128, 256, then
 * quarter octaves (320, 384, 448, 512, 640, … 2,048, 2,560, …). n ≥ 1. */
int kern_gemm_bucket(int n);
/* Forces the CUDA-core kernel (tests) or lets cuBLASLt choose again (default). */
void kern_gemm_force_fallback(struct kern_gemm *g, bool on);
/* 1 if the last kern_gemm_run used cuBLASLt, 0 if the fallback kernel. */
int kern_gemm_last_path(const struct kern_gemm *g);

/* ---- row kernels over n tokens ---- */

/* Activations handed to a GEMM: e4m3 with a per-token scale, or bf16 (scale NULL). */
struct kern_act {
    enum bora_dtype dtype;   /* F8_E4M3 or BF16 */
    void *q;                 /* (n, cols) device */
    float *scale;            /* (n) device for F8_E4M3; NULL for BF16 */
};

/* A GEMM result waiting for its scales: value[t][r] = raw[t][r] × w_scale[r] × (t_scale ? t_scale[t] : 1). */
struct kern_raw {
    const uint16_t *raw;     /* (n, rows) bf16 device */
    const float *w_scale;    /* (rows) device */
    const float *t_scale;    /* (n) device or NULL */
};

/* x[t] = dequantized row ids[t] of emb (fp32, n × emb->cols). An id outside [0, emb->rows) gives
 * a zero row and sets *d_bad to 1 (device int). */
int kern_pf_embed(float *x, const struct kern_mat *emb, const int32_t *d_ids, int n, int *d_bad,
                  struct CUstream_st *stream, struct bora_err *err);

/* For each token t < n: if delta.raw, x[t] += scaled delta (residual add); then if norm_w,
 * out[t] = quantize(rmsnorm(x[t]) × norm_w) (see the scheme above). dim = row length. */
int kern_pf_add_norm_quant(float *x, const struct kern_raw *delta, const float *norm_w, float eps,
                           const struct kern_act *out, int n, int dim, struct CUstream_st *stream,
                           struct bora_err *err);

/* Quantizes n rows of bf16 `in` (n × cols) into out (per-token scale for FP8, copy for BF16). */
int kern_pf_quant(const uint16_t *in, const struct kern_act *out, int n, int cols,
                  struct CUstream_st *stream, struct bora_err *err);

/* From the QKV GEMM result (rows q | k | v per token, n_heads/n_kv heads of head_dim): q is
 * scaled, rotated for position pos0 + t, multiplied by the Ministral-3 query scale and by
 * q_mult, and stored bf16 in q_out (n, n_heads, hd); k (rotated) and v are stored bf16 into the
 * caches (n_kv, max_ctx, hd) at positions pos0 + t. With k8_cache / v8_cache (an FP8 KV cache,
 * same shape, one byte an element) each key and value goes there as e4m3 (rounded from the
 * float), and k_cache / v_cache (the flash attention's bf16 copy) get that e4m3 value widened. */
struct kern_qkv_post_args {
    struct kern_raw qkv;
    uint16_t *q_out;
    uint16_t *k_cache, *v_cache;
    uint8_t *k8_cache, *v8_cache;   /* NULL: a BF16 cache */
    int n, pos0, max_ctx, n_heads, n_kv, head_dim;
    float q_mult;
    struct kern_rope rope;
};
int kern_pf_qkv_post(const struct kern_qkv_post_args *a, struct CUstream_st *stream, struct bora_err *err);

/* From the gate/up GEMM result with rows interleaved (2i gate, 2i+1 up): h[t][i] =
 * silu(gate) × up, quantized into out (n × hid). */
int kern_pf_swiglu_quant(const struct kern_raw *gu, const struct kern_act *out, int n, int hid,
                         struct CUstream_st *stream, struct bora_err *err);

/* An FP8 KV cache's rows [lo, hi) of every kv head (n_kv, max_ctx, hd, e4m3) widened into
 * k16 / v16 (same shape, bf16), exactly: the flash attention then reads a BF16 cache. Nothing
 * to do when lo ≥ hi. Errors: -EINVAL (rows outside the cache, head_dim not a multiple of 8). */
int kern_kv_widen(const uint8_t *k8, const uint8_t *v8, uint16_t *k16, uint16_t *v16, int lo, int hi, int max_ctx,
                  int n_kv, int head_dim, struct CUstream_st *stream, struct bora_err *err);

/* ---- attention ---- */

/* Scratch the engine gives kern_pf_attention for key splits: enough for 16 splits of 64 queries
 * of 32 heads of 128 (7B), or 5 of Medium 3.5's 96 heads. */
#define KERN_PF_ATTN_WORK_BYTES (16u << 20)

/* Block shapes of kern_pf_attention (kern_pf_attn_args.tile). */
#define KERN_PF_ATTN_AUTO 0     /* head_dim 128 with ≥ 1 wgmma block per multiprocessor: wgmma (where the
                                   driver has tensor maps); else wide when it gives ≥ 2 blocks per
                                   multiprocessor; else narrow (keys split) */
#define KERN_PF_ATTN_NARROW 1   /* 64 queries per block, 4 warps of 16 rows */
#define KERN_PF_ATTN_WIDE 2     /* 128 queries per block, 4 warps of 32 rows (half the shared-memory reads per FLOP) */
#define KERN_PF_ATTN_WGMMA 3    /* 128 queries per block, two warpgroups on Hopper's wgmma over 128-key
                                   tiles that a producer warp's TMA copies feed (head_dim 128, 16-byte
                                   aligned q, K and V) */

/* Causal flash attention (tensor cores, online softmax, no n × n buffer) for n queries at
 * positions pos0..pos0+n-1 over cached keys 0..pos0+n-1 (the chunk's own K/V already written by
 * kern_pf_qkv_post). Query t of head h sees key j when j ≤ pos0 + t and (window == 0 or
 * pos0 + t - j < window); query heads h use kv head h / (n_heads / n_kv). q must carry the
 * softmax scale (1/√hd) × log2(e) (qkv_post's q_mult): scores are in base 2.
 * head_dim ∈ {16, 32, 64, 128}. With a workspace, the narrow blocks of few queries over many
 * keys split the keys across blocks and a second kernel merges them. Errors (-EINVAL): head_dim,
 * group or positions out of range, an unknown block shape, wgmma blocks without head_dim 128,
 * aligned inputs, splits without a workspace; -ENOTSUP: wgmma blocks asked for where the driver
 * has no tensor maps;
 * -EIO: a CUDA call failed or a tensor map was refused (named in err). Budget: ≥ 250 TFLOP/s at
 * n = 2048, hd = 128 on an H200 (measured ≈ 240 wide, ≈ 195 narrow, 2026-11-29; wgmma ≈ 360,
 * 2026-11-30). */
struct kern_pf_attn_args {
    const uint16_t *q;       /* (n, n_heads, hd) bf16 device */
    const uint16_t *k_cache; /* (n_kv, max_ctx, hd) bf16 device, this layer */
    const uint16_t *v_cache;
    uint16_t *out;           /* (n, n_heads, hd) bf16 device */
    int n, pos0, max_ctx, n_heads, n_kv, head_dim, window;
    int tile;                /* KERN_PF_ATTN_*: 0 (auto) unless a test wants one shape */
    float *work;             /* device scratch for key splits, or NULL (no splits) */
    size_t work_bytes;       /* its size: KERN_PF_ATTN_WORK_BYTES is what the engine gives */
    int splits;              /* narrow blocks' key splits: 0 automatic (needs work), 1 none, k ≥ 2 k
                                (falls back to none when k splits do not fit the workspace) */
};
int kern_pf_attention(const struct kern_pf_attn_args *a, struct CUstream_st *stream, struct bora_err *err);

#ifdef __cplusplus
}
#endif

#endif
