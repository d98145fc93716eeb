/* kernels.h — the plain-C boundary of bora's CUDA kernels for single-request decode: FP8/BF16
 * GEMV (with fused RMSNorm, residual add or SwiGLU epilogues), RoPE, flash-decoding attention,
 * embedding, sampling, random fill and a streaming-read bandwidth probe.
 *
 * Conventions: every pointer named d_* or documented "device" is device memory; activations are
 * fp32; the KV cache is bf16; weights are BF16 or FP8 e4m3 (w = q × scale × row_scale[r]).
 * Every function returns 0 or -EIO (a CUDA call or launch failed; the message names the call,
 * file and line) or -EINVAL (unsupported shape; the message names it). Launches are asynchronous
 * on `stream` (NULL = legacy default stream) and use programmatic dependent launch, so they may
 * be captured into a CUDA graph. Thread: any host thread, one stream at a time per buffer.
 * Defined only when built with CUDA (BORA_CUDA); callers guard with #ifdef BORA_CUDA. */
#ifndef BORA_KERNELS_KERNELS_H
#define BORA_KERNELS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {   /* the project headers below have no C++ guards of their own */
#endif
#include "common/err.h"
#include "model/safetensors.h"

struct CUstream_st;   /* cudaStream_t */

/* Flash-decoding: blocks of attention per layer aimed at (kv heads × splits ≈ this). */
#define KERN_ATTN_MAX_GROUP 16          /* query heads per kv head */
#define KERN_MEGA_AHEAD 2               /* persistent decode, attention on attn_item: stages issued ahead
                                         * of a phase barrier (H200, 7B FP8, 2026-11-29: 0 / 1 / 2 / 3 / ring
                                         * → 65.6 / 68.1 / 68.9 / 68.0 / 66.1 %; on the kernel of 2026-11-30:
                                         * 1 / 2 / 3 → 69.3-70.2 / 68.3-68.7 / 67.7-67.8 %, BF16 82.1-82.8 /
                                         * 81.4-82.0 / 80.8-81.4 %, Medium 3.5 89.1-89.2 / 89.5 %; with x and
                                         * qkv tagged only wo and down are held, 2026-12-01, ms/token 0 / 1 /
                                         * 2 / 3 → FP8 2.68-2.69 / 2.65-2.66 / 2.64 / 2.64, BF16 4.11-4.12 /
                                         * 4.085 / 4.076-4.078 / 4.106; Small 24B, 2026-12-01 18:43 UTC, 2 /
                                         * never → FP8 6.63 / 6.63, BF16 11.54 / 11.61) */
#define KERN_MEGA_AHEAD_AUTO (-1000)    /* kern_mega_args.ahead: the default — producers never held where
                                         * the attention runs on the tensor cores (every input a tagged
                                         * word, so a hold is only a poll: H200 2026-12-01 18:42 UTC,
                                         * never / 8 / 2 → 7B FP8 2.404 / 2.428 / 2.448 ms, BF16 3.97-3.98 /
                                         * 4.00-4.01 / 4.01-4.03), KERN_MEGA_AHEAD where it runs on attn_item */
#define KERN_SAMPLE_MAX_K 1024          /* a top-k up to this sorts its candidates; larger, or off: exact over the vocabulary */

struct kern_device {
    char name[256];
    int sm_count;
    int cc_major, cc_minor;
    size_t total_bytes, free_bytes;
    size_t l2_bytes;
    int smem_optin;           /* shared memory a block may opt in to (bytes) */
    int index;                /* the CUDA device number */
};

/* Fills *d for the current device. -ENODEV when no GPU is usable (message says why). */
int kern_device_query(struct kern_device *d, struct bora_err *err);
/* Free and total bytes of device `index` as the driver counts them (every process), from any
 * host thread. -EIO. */
int kern_device_mem(int index, size_t *free_bytes, size_t *total_bytes, struct bora_err *err);

/* Thin checked wrappers so C code (engine, tests, bench) needs no CUDA headers. */
int kern_malloc(void **d_ptr, size_t bytes, struct bora_err *err);
void kern_free(void *d_ptr);
int kern_host_alloc(void **h_ptr, size_t bytes, struct bora_err *err);   /* pinned */
void kern_host_free(void *h_ptr);
int kern_copy_h2d(void *d_dst, const void *h_src, size_t bytes, struct bora_err *err);
int kern_copy_d2h(void *h_dst, const void *d_src, size_t bytes, struct bora_err *err);
int kern_memset(void *d_ptr, int byte, size_t bytes, struct bora_err *err);
int kern_sync(struct bora_err *err);

/* A weight matrix in device memory: rows × cols row-major, BF16 or F8_E4M3;
 * value = elem × scale × (row_scale ? row_scale[r] : 1). */
struct kern_mat {
    enum bora_dtype dtype;
    const void *w;
    int rows, cols;
    float scale;
    const float *row_scale;   /* (rows) device, or NULL */
};

enum kern_gemv_mode {
    KERN_GEMV_STORE = 0,   /* y[r] = (W x)[r] */
    KERN_GEMV_ADD,         /* y[r] += (W x)[r] (residual add) */
    KERN_GEMV_SWIGLU,      /* rows interleave gate/up: y[i] = silu((Wx)[2i]) × (Wx)[2i+1] */
};

struct kern_gemv_args {
    struct kern_mat m;
    const float *x;           /* (cols) fp32 device */
    float *y;                 /* (rows, or rows/2 for SWIGLU) fp32 device */
    enum kern_gemv_mode mode;
    const float *norm_w;      /* non-NULL: x is replaced by rmsnorm(x) × norm_w (cols) first */
    float norm_eps;
    int *counter;             /* device int, 0 before the first launch; the kernel leaves it 0 */
    int variant;              /* launch shape, 0 .. kern_gemv_variants() - 1 (0: a safe default) */
};

/* Number of GEMV launch shapes; callers may time them on their matrices and keep the fastest.
 * A variant with odd rows per warp refuses SWIGLU with -EINVAL. */
int kern_gemv_variants(void);

/* y = W x (see modes). Budget: reads rows × cols × elem bytes once at ≥ 90 % of streaming read
 * bandwidth for cols % 16 == 0 (fp8) / % 8 == 0 (bf16); other widths take a slower path.
 * -EINVAL for an unsupported dtype, SWIGLU with odd rows, or cols beyond shared memory. */
int kern_gemv(const struct kern_gemv_args *a, struct CUstream_st *stream, struct bora_err *err);

/* y = rmsnorm(x) × w over n elements (fp32). y may equal x. */
int kern_rmsnorm(float *y, const float *x, const float *w, int n, float eps,
                 struct CUstream_st *stream, struct bora_err *err);

struct kern_rope {
    const float *inv_freq;    /* (head_dim/2) device */
    float attn_factor;        /* multiplies cos and sin (YaRN mscale) */
    bool interleaved;         /* rotate (2i, 2i+1) instead of (i, i + d/2) */
    float qscale_beta;        /* Ministral-3: q *= 1 + beta ln(1 + floor(pos / orig)); 0 = off */
    int qscale_orig_max;
};

/* Rotates n_heads vectors of head_dim in place at position *d_pos; with is_query, also applies
 * the Ministral-3 query scale. */
int kern_rope_apply(float *vec, int n_heads, int head_dim, const int *d_pos, const struct kern_rope *r,
                    bool is_query, struct CUstream_st *stream, struct bora_err *err);

/* Decode attention for one new token at position *d_pos, split across blocks along the sequence
 * and combined by the last block of each kv head (flash-decoding). Reads raw (un-rotated) q, k, v
 * from qkv, applies RoPE (and query scaling), writes k, v into the cache at *d_pos (bf16, or e4m3
 * with kv_fp8), and
 * writes softmax(q k^T / sqrt(hd)) v over keys j with pos - j < window (all when window = 0).
 * Budget: reads 2 × n_kv × hd × 2 bytes per attended key. */
struct kern_attn_args {
    const float *qkv;         /* q (n_heads*hd) | k (n_kv*hd) | v (n_kv*hd), fp32 device */
    uint16_t *k_cache;        /* (n_kv, max_ctx, hd) bf16 device, this layer (e4m3 bytes with kv_fp8) */
    uint16_t *v_cache;
    bool kv_fp8;              /* the cache holds e4m3 (kern_f32_to_e4m3 of each key and value) */
    float *out;               /* (n_heads*hd) fp32 device */
    float *partial;           /* plan_attn_partial_floats() fp32 device scratch */
    int *counters;            /* (n_kv) device ints, 0 before the first launch; left 0 */
    const int *d_pos;
    int max_ctx, n_heads, n_kv, head_dim, window;
    int n_split;              /* the layout's (plan_attn_splits_for, kernels/plan.h) */
    int sm_count;             /* the device's SMs (kern_device): groups > 4 heads split for one block each */
    struct kern_rope rope;
};
int kern_attention(const struct kern_attn_args *a, struct CUstream_st *stream, struct bora_err *err);

/* The persistent decode kernel (decode_mega.cu): every layer of one decode step — rmsnorm, qkv,
 * attention (as kern_attention, RoPE and the cache write included), wo + residual, rmsnorm,
 * gate/up + SwiGLU, down + residual — in one launch of one block per SM that streams the
 * weights through shared memory without stopping at phase boundaries. Layer l's matrices and
 * their per-row scales (w = q × rs[row]) are at layers + l × layer_stride + l_*, laid out as the
 * engine's arena (q|k|v rows back to back; gate/up rows interleaved); layer l's K cache at
 * kv + l × kv_layer_stride and its V cache half a stride further. x (dim) is read at the start
 * and holds the residual stream at the end. Budget: the layers' weight bytes at ≥ 90 % of the
 * streaming-read bandwidth. -ENOTSUP (message says why) for shapes it does not take: callers
 * then run the per-kernel step. */
struct kern_mega_args {
    enum bora_dtype dtype;                      /* BF16 or F8_E4M3 */
    const uint8_t *layers;
    size_t layer_stride;
    size_t l_qkv, l_qkv_rs, l_wo, l_wo_rs, l_gu, l_gu_rs, l_down, l_down_rs, l_attn_norm, l_ffn_norm;
    uint8_t *kv;
    size_t kv_layer_stride;
    float *x, *qkv, *att, *h, *partial;         /* activations as the per-kernel step uses them */
    int *sync;                                  /* kern_mega_sync_ints() ints, device, 16-byte aligned (some
                                                 * are read as 64-bit words); zeroed per launch */
    const int *d_pos;
    int n_layers, dim, hidden, n_heads, n_kv, head_dim, max_ctx, window, n_split;
    float eps;
    struct kern_rope rope;
    int sm_count, smem_optin;                   /* from kern_device: SMs, shared bytes per block */
    int cb_max;                                 /* bytes of a row per pipeline stage at most (0: 2048, or
                                                 * 2,560 for rows 2,048 does not divide, as 5,120) */
    int ns_max;                                 /* pipeline stages at most (0: as many as fit) */
    int blocks_max;                             /* blocks of the grid (0: kern_mega_blocks chooses) */
    int flags;                                  /* A/B variants (decode_mega.cu MEGA_F_*); 0 = default */
    int ahead;                                  /* stages of a phase issued before the phase it waits on
                                                 * is done everywhere (< 0: as many as the ring holds;
                                                 * KERN_MEGA_AHEAD_AUTO: the default, what the engine
                                                 * passes) */
    int debug;                                  /* diagnostics only (decode_mega.cu MEGA_DBG_*); 0
                                                 * unless kern_mega_diag() */
    unsigned long long *trace;                  /* NULL, or kern_mega_trace_slots() device slots:
                                                 * timestamps; NULL unless kern_mega_diag() */
    bool kv_fp8;                                /* the KV cache holds e4m3 (as kern_attn_args.kv_fp8): taken
                                                 * for head_dim 128 (the tensor-core attention where it
                                                 * runs, attn_item for the other groups of up to 4) */
};
/* Ints of kern_mega_args.sync for this shape: the phase counters, the splits' counters, the
 * published maxima, the halves' slots, then x, qkv and the attention's output as 64-bit tagged words
 * and h as 32-bit ones. */
size_t kern_mega_sync_ints(int n_layers, int n_kv, int dim, int hidden, int n_heads, int head_dim);
/* Slots of the trace (per block and layer: the consumers' phase boundaries, then the producer's
 * time blocked on a full ring for each matrix; decode_mega.cu TR_*). Diagnostics. */
size_t kern_mega_trace_slots(int n_layers, int sm_count);
/* 1 where the persistent kernel was built with its diagnostics (make MEGA_DIAG=1: the trace and
 * the debug switches), else 0: kern_mega_check and the launch then refuse a non-zero debug or a
 * trace with -EINVAL (the fast build has no code for them). */
int kern_mega_diag(void);
int kern_mega_check(const struct kern_mega_args *a, struct bora_err *err);
/* Host arithmetic, for tests: the schedule a's layout would run keeps its invariants. For every
 * block the producer's walk of (layer, matrix, group, column stage) is the consumers' (as
 * decode_mega.cu's mega_consume walks it), stage by stage; every stage of every group of every
 * matrix is streamed by exactly one block; a group dealt in halves is a block's first item of the
 * matrix (first half) and another's last (second half). 0; -EPROTO naming the first violation;
 * -ENOMEM; -ENOTSUP as kern_mega_check. */
int kern_mega_schedule_check(const struct kern_mega_args *a, struct bora_err *err);
/* The layout kern_decode_layers would run for a, in words (grid, shared memory, ring), into buf
 * (n bytes, cut to fit); -ENOTSUP as kern_mega_check. */
int kern_mega_describe(const struct kern_mega_args *a, char *buf, size_t n, struct bora_err *err);
/* The grid the kernel runs: blocks_max when set (at most sm_count), else the count of at most
 * sm_count blocks that balances the matrices' 16-row groups best (decode_mega.cu). */
int kern_mega_blocks(const struct kern_mega_args *a);
/* 1 if the persistent kernel runs a's attention on the tensor cores (kern_attn_mma.cuh: groups
 * of more than 4 query heads, head_dim 64 or 128; and FP8 groups of up to 4 with head_dim 128,
 * rows in 2 KiB chunks and no sliding window), 0 if on attn_item. */
int kern_mega_amma(const struct kern_mega_args *a);
int kern_decode_layers(const struct kern_mega_args *a, struct CUstream_st *stream, struct bora_err *err);

/* y[i] = silu(gate[i]) × up[i];  y[i] += x[i]. */
int kern_swiglu(float *y, const float *gate, const float *up, int n, struct CUstream_st *stream,
                struct bora_err *err);
int kern_add(float *y, const float *x, int n, struct CUstream_st *stream, struct bora_err *err);

/* Device-resident decode state, read by the step's kernels so one captured graph serves every
 * position. The embedding takes tokens[pos] while pos < fed_end, else `sampled`, and records it
 * in tokens[pos]; the sampler writes `sampled` and advances pos. */
struct kern_state {
    int32_t pos;
    int32_t fed_end;
    int32_t sampled;
    int32_t top_k;            /* 0 (or ≥ vocab): no top-k cut */
    float temperature;        /* <= 0: greedy (argmax, lowest id on ties) */
    float top_p;              /* (0, 1]; 1 = off */
    uint32_t seed;
    int32_t error;            /* non-zero: KERN_STATE_BAD_ID (the embedding met an id outside the
                               * vocabulary) or KERN_STATE_NONFINITE (a logit is NaN or
                               * infinite: NaN or infinite weights or activations) */
};
enum { KERN_STATE_BAD_ID = 1, KERN_STATE_NONFINITE = 2 };

/* x = dequantized row of emb chosen as described at struct kern_state. */
int kern_embed(float *x, const struct kern_mat *emb, struct kern_state *d_state, int32_t *d_tokens,
               struct CUstream_st *stream, struct bora_err *err);

/* Picks the next id from logits (vocab) per d_state's sampling settings, stores it in
 * d_state->sampled and advances d_state->pos. Temperature ≤ 0: argmax. Otherwise the top_k
 * largest logits (all with top_k 0 or ≥ vocab; ties at the cut: lowest ids), then the shortest
 * run of them by decreasing logit whose probability reaches top_p, and one draw among those with
 * probability ∝ e^(logit / temperature); the uniform hashes (seed, pos). A temperature too small
 * to divide by is greedy; where any logit is NaN or infinite nothing is drawn and d_state->error
 * is KERN_STATE_NONFINITE. h_mirror: NULL, or
 * pinned host memory (kern_host_alloc) the kernel also writes the final state to, so no copy
 * back is needed once the stream is synchronised. d_work: NULL (one block of threads does the
 * whole draw), or KERN_SAMPLE_WORK_BYTES of device memory zeroed once before its first use and
 * then left to the sampler, which keeps it reusable; the passes over the logits are then spread
 * over a block per 4,096 of them. The same logits and state give the same id either way. One
 * d_work serves one stream's samplers at a time. */
#define KERN_SAMPLE_WORK_BYTES (128u << 10)
int kern_sample(const float *logits, int vocab, struct kern_state *d_state, struct kern_state *h_mirror,
                void *d_work, struct CUstream_st *stream, struct bora_err *err);

/* Fills n elements of dtype (BF16, F8_E4M3 or F32) with uniform values in [-amp, amp]
 * (hash of seed and index: no host copy). */
int kern_fill_random(void *d, enum bora_dtype dtype, size_t n, float amp, uint64_t seed,
                     struct bora_err *err);
/* Fills n floats with value. */
int kern_fill_f32(float *d, size_t n, float value, struct bora_err *err);

/* Streaming-read bandwidth: reads `bytes` of d (16-byte aligned, at least 32 KiB) `iters`
 * times (1..64) after two warm-ups with each of two readers — 16-byte streaming loads (8 blocks
 * of 512 threads an SM) and bulk copies (one block an SM, four 32 KiB copies in flight) — and
 * gives each reader's median in GB/s (1e9 bytes/s). Errors: -EINVAL, -EIO. */
int kern_bandwidth_read_detail(const void *d, size_t bytes, int iters, double *loads_gbps, double *bulk_gbps,
                               struct bora_err *err);
/* The faster of the two readers' medians: the ceiling a decode figure is divided by. */
int kern_bandwidth_read(const void *d, size_t bytes, int iters, double *gbps, struct bora_err *err);

#ifdef __cplusplus
}
#endif

#endif
