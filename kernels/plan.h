/* plan.h — GPU memory arithmetic shared by `bora plan` and the CUDA engine: where every weight,
 * the KV cache and the activations live in the one device arena, how many bytes that is, and how
 * many bytes a decode step reads. Plain C, no GPU needed; pure functions over a model_config.
 * Also the named model presets (bench, plan) and the GPU table (plan). */
#ifndef BORA_KERNELS_PLAN_H
#define BORA_KERNELS_PLAN_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "model/model.h"

#define PLAN_ALIGN 256                  /* bytes; every region starts on this boundary */
#define PLAN_ATTN_TARGET_BLOCKS 264     /* attention blocks per layer at most (2 per SM on an H200) */
#define PLAN_TUNE_COUNTERS 64
#define PLAN_CUDA_RESERVE (768ull << 20)   /* bytes kept free for the CUDA context, graphs and the
                                            * cuBLAS handles (cuBLASLt's workspace: PLAN_GEMM_WORKSPACE) */

/* Element types as held on the GPU (BF16 or F8_E4M3 for matrices). */
struct plan_dtypes {
    enum bora_dtype linear;   /* q k v o gate up down */
    enum bora_dtype emb;      /* token embedding */
    enum bora_dtype out;      /* output head (ignored when cfg->tied) */
    bool kv_fp8;              /* the KV cache in e4m3, one byte an element (else bf16, two) */
};

/* Byte offsets into the arena. Per-layer regions are at layers + l × layer_stride + l_*;
 * the K cache of layer l at kv + l × kv_layer_stride, its V cache half a stride further. */
struct plan_layout {
    size_t emb, emb_rs, out, out_rs, norm, inv_freq;
    size_t layers, layer_stride;
    size_t l_qkv, l_qkv_rs, l_wo, l_wo_rs, l_gu, l_gu_rs, l_down, l_down_rs, l_attn_norm, l_ffn_norm;
    size_t kv, kv_layer_stride;
    size_t x, qkv, att, h, logits, partial, counters, tokens, state;
    size_t sample_work;          /* the sampler's workspace (KERN_SAMPLE_WORK_BYTES) */
    int n_split;                 /* attention splits per kv head; -1: no count fits the decode attention's
                                  * shared memory at this context (plan_attn_splits_for), which
                                  * plan_check_fit refuses (the partials are sized for plan_attn_splits) */
    int n_counters;              /* ints at counters: per layer 4 GEMV + n_kv attention, 1 for the
                                  * head, then PLAN_TUNE_COUNTERS for timing launches at open */
    uint64_t weight_bytes;       /* weights, scales, norms, RoPE table */
    uint64_t kv_bytes;
    uint64_t act_bytes;          /* activations and workspace */
    uint64_t total;              /* arena size */
    uint64_t step_weight_bytes;  /* weight bytes one decode step reads (one embedding row) */
    uint64_t kv_bytes_per_key;   /* KV bytes a step reads per attended position */
};

/* Computes the layout for cfg with dtypes dt and a KV cache of max_ctx tokens.
 * Errors: -EINVAL (non-positive dimension, head_dim odd, heads not a multiple of kv heads,
 * dtype other than BF16/F8_E4M3; message names it). A context the decode attention cannot split
 * is not an error here (n_split -1): plan_check_fit refuses it after the bytes, so a context far
 * beyond the GPU is refused with the bytes it needs. */
int plan_layout_compute(const struct model_config *cfg, const struct plan_dtypes *dt, int max_ctx,
                        struct plan_layout *out, struct bora_err *err);

/* KV bytes a decode step at position pos reads (sliding window honoured). */
uint64_t plan_kv_step_bytes(const struct model_config *cfg, const struct plan_layout *l, int pos);

/* Attention splits per kv head and the scratch they need (floats). */
int plan_attn_splits(int n_kv, int max_ctx, int window);
/* The splits the engine uses (plan_layout_compute's n_split): plan_attn_splits, and more where the
 * attention runs on attn_item (groups the tensor-core attention does not take: attn_on_tensor_cores)
 * and its shared memory for the keys of one split would pass ATTN_ITEM_SMEM_MAX (7B's groups of 4
 * past ≈ 380,000 tokens, were a config to declare them); -1 when no count fits (then
 * plan_check_fit refuses the context with -EINVAL). The cache's type does not enter: both
 * attentions take either. */
int plan_attn_splits_for(const struct model_config *cfg, int max_ctx);
/* Which decode schedule to run where, from step times of schedule A and B measured at positions
 * lo < hi (ms; assumed linear in the position between them, as attention is): returns the
 * position from which the schedule that is slower at lo takes over (INT_MAX: never), and sets
 * *a_first when A is the faster (or equal) at lo. Ties go to A. */
int plan_switch_position(double a_lo, double b_lo, double a_hi, double b_hi, int lo, int hi, bool *a_first);
size_t plan_attn_partial_floats(int n_heads, int head_dim, int n_split);

/* Refusal check shared with the engine: 0 if total + PLAN_CUDA_RESERVE fits in avail_bytes,
 * else -ENOMEM with "needs X GB (weights W, KV K for N tokens, activations A) but the GPU has
 * Y GB free"; then -EINVAL where the layout has no attention split count (n_split -1: "no split
 * of the keys fits ... a shorter context fits"). */
int plan_check_fit(const struct plan_layout *l, int max_ctx, uint64_t avail_bytes, struct bora_err *err);

/* ---- the prefill workspace (kernels/prefill_run.c allocates it beside the arena) ----
 * A prompt is prefilled in chunks of up to PLAN_PREFILL_CHUNK tokens. The runner's workspace
 * holds, for one chunk: the residual stream (fp32), the quantized activations and their per-token
 * scales, the GEMMs' raw bf16 output (the widest of qkv, gate/up and the residual), the queries
 * and the attention output (bf16), the flash attention's key-split scratch and a fault flag, and
 * with an FP8 KV cache one layer's keys and values widened to bf16 for the flash attention (the
 * whole context: n_kv × max_ctx × head_dim × 2 × 2 bytes); the cuBLASLt context adds its own
 * workspace. A GPU without room for it takes chunks a quarter as
 * large (plan_prefill_fit); with room for none, prompts run one decode step per token. */
#define PLAN_PREFILL_CHUNK 2048
#define PLAN_PREFILL_CHUNK_MIN 16
#define PLAN_PF_ATTN_WORK (16ull << 20)   /* the flash attention's key-split scratch */
#define PLAN_GEMM_WORKSPACE (32ull << 20) /* cuBLASLt's workspace */

struct plan_prefill {
    int chunk;                 /* tokens a chunk holds; 0: no workspace (token by token) */
    size_t x, act, scale, raw, q, att, work, bad;   /* byte offsets into the runner's workspace */
    size_t kv16;               /* FP8 KV cache: one layer's K then V in bf16 (max_ctx rows a head) */
    uint64_t kv16_bytes;       /* its size (0 with a BF16 cache) */
    uint64_t ws_bytes;         /* the runner's workspace */
    uint64_t total;            /* ws_bytes + PLAN_GEMM_WORKSPACE: what a prefill adds on the GPU */
};

/* The chunk tried after `chunk` when its workspace does not fit: a quarter of it, 0 once that
 * would be below PLAN_PREFILL_CHUNK_MIN (the engine's and plan_prefill_fit's sequence: 2,048, 512,
 * 128, 32). */
static inline int plan_prefill_next(int chunk)
{
    return chunk / 4 >= PLAN_PREFILL_CHUNK_MIN ? chunk / 4 : 0;
}

/* The workspace for chunks of `chunk` tokens: at most max_ctx, at least PLAN_PREFILL_CHUNK_MIN
 * (which wins when max_ctx is below it). */
void plan_prefill_layout(const struct model_config *cfg, enum bora_dtype linear, bool kv_fp8, int max_ctx, int chunk,
                         struct plan_prefill *out);

/* The chunk the CUDA engine settles on with its default [engine] prefill_chunk when `avail` bytes
 * are left beside the arena (and its CUDA reserve): PLAN_PREFILL_CHUNK, then plan_prefill_next
 * while the workspace does not fit (each no longer than max_ctx); out->chunk 0 (total 0) if none
 * fits. An estimate at the boundary: the driver rounds each of the two allocations up a little. */
void plan_prefill_fit(const struct model_config *cfg, enum bora_dtype linear, bool kv_fp8, int max_ctx, uint64_t avail,
                      struct plan_prefill *out);

/* Named shapes: mistral-7b, ministral-8b, mistral-small-24b, mistral-medium-3.5. NULL if unknown. */
const struct model_config *plan_preset_find(const char *name);
const char *plan_preset_name(int i);   /* i-th preset name, NULL past the end */

struct plan_gpu {
    const char *name;
    uint64_t mem_bytes;     /* usable device memory */
    double read_gbps;       /* streaming-read bandwidth, GB/s (measured where noted, else datasheet × 0.95) */
    int cc;                 /* compute capability × 10 (90 = Hopper) */
};
/* The compute capability (× 10) bora's CUDA backend needs: its kernels are built for sm_90a. */
#define PLAN_CUDA_CC_MIN 90
const struct plan_gpu *plan_gpu_find(const char *name);
const char *plan_gpu_name(int i);

#endif
