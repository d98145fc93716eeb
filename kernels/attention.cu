/* attention.cu — decode attention for one new token (flash-decoding): blocks (kv head, split)
 * each score a slice of the cached keys for all query heads of their group (GQA), keep the
 * unnormalised softmax-weighted sum of values with its max and sum, and the last block of each
 * kv head to finish combines the slices. RoPE, the Ministral-3 query scale and the KV-cache
 * write of the new token are fused in. An FP8 (e4m3) cache is read 8 elements a load and widened
 * to bf16 in registers (attn_item), or, on the tensor cores, copied as e4m3 tiles and widened in
 * shared memory.
 * Budget: 2 × n_kv × head_dim × 2 bytes (1 in FP8) per attended key at streaming bandwidth (≈ 1–3 %
 * of a decode step's bytes). */
#include "kernels/kern_attn.cuh"
#include "kernels/kern_attn_mma.cuh"

#define ATTN_THREADS ATTN_ITEM_THREADS   /* plan.c sizes the splits for it */
#define AMMA_STAGES 4                   /* tensor-core variant: K/V tiles in flight per block (cp.async pipeline) */

template <int GM, int LPK, bool K8>
__global__ void __launch_bounds__(ATTN_THREADS, 2)
attn_kernel(struct attn_params p)
{
    extern __shared__ float sm[];
    __shared__ int s_last;
    kern_grid_launch_next();
    kern_grid_wait();
    attn_item<GM, LPK, ATTN_THREADS, true, false, K8>(p, p.kc, p.vc, p.counters, blockIdx.x, blockIdx.y, *p.pos, sm,
                                                      &s_last, threadIdx.x, 0);
}

template <int GM, int LPK, bool K8>
static int attn_launch(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    int G = p.n_heads / p.n_kv;
    size_t smem = attn_smem_bytes(G, p.hd, p.chunk_max, p.n_split, ATTN_THREADS);
    if (smem > ATTN_ITEM_SMEM_MAX)   /* the engine's splits (plan_attn_splits_for) keep it within, or
                                      * plan_check_fit refused the context */
        return bora_errf(err, -EINVAL, "attention: %zu bytes of shared memory needed (chunk %d keys, %d splits)",
                         smem, p.chunk_max, p.n_split);
    auto k = attn_kernel<GM, LPK, K8>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CUDA_CHECK(kern_launch(k, dim3(p.n_kv, p.n_split), dim3(ATTN_THREADS), smem, s, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* Decode attention on the tensor cores for large query groups (kern_attn_mma.cuh): block (kv
 * head g, split s) of four warps, an AMMA_STAGES-deep tile pipeline, splits sized for about one
 * block per SM. */
template <int D, bool K8>
__global__ void __launch_bounds__(AMMA_KW * 32, 1) attn_mma_kernel(struct attn_params p)
{
    extern __shared__ __align__(16) uint8_t am_sm[];
    __shared__ int s_last;
    kern_grid_launch_next();
    kern_grid_wait();
    attn_mma_item<D, 1, AMMA_KW * 32, AMMA_STAGES, false, false, K8>(p, p.kc, p.vc, p.counters, blockIdx.x,
                                                                     blockIdx.y, *p.pos, am_sm, &s_last,
                                                                     threadIdx.x, 0);
}

template <int D, bool K8>
static int attn_mma_launch(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    const int G = p.n_heads / p.n_kv;
    const size_t smem = attn_mma_smem_bytes(D, AMMA_STAGES, G, p.n_split, K8);
    if (smem > 200 * 1024)
        return bora_errf(err, -EINVAL, "attention: %zu bytes of shared memory needed (%d splits)", smem, p.n_split);
    auto k = attn_mma_kernel<D, K8>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CUDA_CHECK(kern_launch(k, dim3(p.n_kv, p.n_split), dim3(AMMA_KW * 32), smem, s, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

template <int GM, bool K8>
static int attn_launch_hd(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    switch (p.hd) {
    case 16: return attn_launch<GM, 2, K8>(p, s, err);
    case 32: return attn_launch<GM, 4, K8>(p, s, err);
    case 64: return attn_launch<GM, 8, K8>(p, s, err);
    case 128: return attn_launch<GM, 16, K8>(p, s, err);
    case 256: return attn_launch<GM, 32, K8>(p, s, err);
    }
    return bora_errf(err, -EINVAL, "attention: head_dim %d not supported (16, 32, 64, 128, 256)", p.hd);
}

extern "C" int kern_attention(const struct kern_attn_args *a, struct CUstream_st *stream,
                              struct bora_err *err)
{
    if (a->n_kv <= 0 || a->n_heads % a->n_kv)
        return bora_errf(err, -EINVAL, "attention: %d query heads not a multiple of %d kv heads",
                         a->n_heads, a->n_kv);
    int G = a->n_heads / a->n_kv;
    if (G > KERN_ATTN_MAX_GROUP)
        return bora_errf(err, -EINVAL, "attention: group of %d query heads per kv head (max %d)", G,
                         KERN_ATTN_MAX_GROUP);
    if (a->n_split < 1 || a->sm_count < 1)
        return bora_errf(err, -EINVAL, "attention: n_split %d, sm_count %d", a->n_split, a->sm_count);
    struct attn_params p;
    p.qkv = a->qkv;
    p.kc = a->k_cache;
    p.vc = a->v_cache;
    p.out = a->out;
    p.part = a->partial;
    p.counters = a->counters;
    p.pos = a->d_pos;
    p.max_ctx = a->max_ctx;
    p.n_heads = a->n_heads;
    p.n_kv = a->n_kv;
    p.hd = a->head_dim;
    p.window = a->window;
    p.n_split = a->n_split;
    p.chunk_max = attn_chunk_max(a->max_ctx, a->window, a->n_split);
    p.softmax_scale = 1.f / sqrtf((float)a->head_dim);
    p.rope = a->rope;
    p.blocks = a->sm_count;   /* blocks the tensor-core variant aims at: one per SM */
    cudaStream_t s = (cudaStream_t)stream;
    if (attn_on_tensor_cores(G, p.hd)) {   /* large groups (plan_attn_splits_for asks the same) */
        if (a->kv_fp8)   /* e4m3 tiles widened in shared memory */
            return p.hd == 128 ? attn_mma_launch<128, true>(p, s, err) : attn_mma_launch<64, true>(p, s, err);
        return p.hd == 128 ? attn_mma_launch<128, false>(p, s, err) : attn_mma_launch<64, false>(p, s, err);
    }
    if (a->kv_fp8) {   /* an e4m3 cache: attn_item widens 8 elements a load */
        if (G <= 4)
            return attn_launch_hd<4, true>(p, s, err);
        if (G <= 8)
            return attn_launch_hd<8, true>(p, s, err);
        return attn_launch_hd<16, true>(p, s, err);
    }
    if (G <= 4)
        return attn_launch_hd<4, false>(p, s, err);
    if (G <= 8)
        return attn_launch_hd<8, false>(p, s, err);
    return attn_launch_hd<16, false>(p, s, err);
}
