/* attention.cu — decode attention for one new token (flash-decoding): blocks (kv head, split)
 * each score a slice of the cached keys for all query heads of their group (GQA), keep the
 * unnormalised softmax-weighted sum of values with its max and sum, and the last block of each
 * kv head to finish combines the slices. RoPE, the Ministral-3 query scale and the KV-cache
 * write of the new token are fused in. Budget: 2 × n_kv × head_dim × 2 bytes per attended key at
 * streaming bandwidth (≈ 1–3 % of a decode step's bytes). */
#include "kernels/kern_attn.cuh"
#include "kernels/kern_mma.cuh"

#define ATTN_THREADS 256
#define AMMA_WARPS 4                    /* tensor-core variant: warps per block, 16 keys of a tile each */
#define AMMA_BK (AMMA_WARPS * 16)       /* keys per tile */
#define AMMA_PAD 8                      /* bf16 elements of padding per tile row (ldmatrix without conflicts) */
#define AMMA_STAGES 4                   /* K/V tiles in flight per block (cp.async pipeline) */

template <int GM, int LPK>
__global__ void __launch_bounds__(ATTN_THREADS, 2)
attn_kernel(struct attn_params p)
{
    extern __shared__ float sm[];
    __shared__ int s_last;
    kern_grid_launch_next();
    kern_grid_wait();
    attn_item<GM, LPK, ATTN_THREADS>(p, p.kc, p.vc, p.counters, blockIdx.x, blockIdx.y, *p.pos, sm, &s_last,
                                     threadIdx.x, 0);
}

template <int GM, int LPK>
static int attn_launch(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    int G = p.n_heads / p.n_kv;
    size_t smem = attn_smem_bytes(G, p.hd, p.chunk_max, p.n_split, ATTN_THREADS);
    if (smem > 200 * 1024)
        return bora_errf(err, -EINVAL, "attention: %zu bytes of shared memory needed (chunk %d keys)",
                         smem, p.chunk_max);
    auto k = attn_kernel<GM, LPK>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CUDA_CHECK(kern_launch(k, dim3(p.n_kv, p.n_split), dim3(ATTN_THREADS), smem, s, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* Decode attention on the tensor cores, for large query groups (G > 4 query heads per kv head:
 * Mistral Medium 3.5 has 12, where the per-lane dot products of attn_item are bound by shuffles
 * and shared memory). Block (kv head g, split s) of four warps. The group's heads are the rows
 * of the MMA's A operand (Q in bf16 with log2 e folded in, rows ≥ G zero); each warp scores 16
 * keys of every 64-key tile (S = Q Kᵀ), keeps a base-2 online softmax per head and adds P V for
 * its keys, flash-attention style; K and V tiles stream through an AMMA_STAGES-deep cp.async
 * pipeline, and the splits are sized for about one block per SM. The warps' (max, sum, output)
 * merge in shared memory into the split's partial, which attn_finish combines exactly as
 * attn_item's (same partial layout, maxima in natural-log units). Accuracy: q and the softmax
 * weights in bf16 (tests/gpu_kernels.c states the bound). */
template <int D>
__global__ void __launch_bounds__(AMMA_WARPS * 32, 1) attn_mma_kernel(struct attn_params p)
{
    constexpr int LPK = D / 8, LD = D + AMMA_PAD, KS = D / 16, ND = D / 8, CH = D / 8;
    constexpr int NT = AMMA_WARPS * 32;
    constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;
    extern __shared__ __align__(16) uint8_t am_sm[];
    __shared__ int s_last;
    const int G = p.n_heads / p.n_kv;
    /* tiles: AMMA_STAGES buffers × (K, V) × AMMA_BK × LD bf16 | q_s G·D | cm, cw G·n_split each | wml */
    uint16_t *tiles = (uint16_t *)am_sm;
    float *q_s = (float *)(am_sm + (size_t)2 * AMMA_STAGES * AMMA_BK * LD * 2);
    float *cm = q_s + G * D, *cw = cm + G * p.n_split;
    float *wml = cw + G * p.n_split;   /* [warp][16 rows][max, sum] */
    float *wo = (float *)am_sm;        /* [warp][16 rows][D]: the tiles' space, after the last tile */

    kern_grid_launch_next();
    kern_grid_wait();
    const int g = blockIdx.x, s = blockIdx.y, tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tq = lane & 3;
    const int pos = *p.pos;
    /* splits of whole tiles, about one block per SM (p.blocks in all): every split's tiles stream
     * through the pipeline, and the combine has few partials to read */
    const int start = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
    const int tb = max(1, p.blocks / p.n_kv), per = (pos - start + 1 + tb - 1) / tb;
    int j0, j1, n_eff;
    const int n = attn_slice(p, pos, s, &j0, &j1, &n_eff, max(AMMA_BK, (per + AMMA_BK - 1) / AMMA_BK * AMMA_BK));
    if (s >= n_eff)   /* a split the context does not need: no work, and not counted */
        return;
    uint16_t *kc = p.kc + (size_t)g * p.max_ctx * D, *vc = p.vc + (size_t)g * p.max_ctx * D;
    const int ntiles = n > 0 ? (n + AMMA_BK - 1) / AMMA_BK : 0;
    /* keys [j0 + t·BK, +BK) of K and V into buffer b (keys ≥ j0 + n zero-filled); one commit group
     * per tile slot, empty past the last tile, so the wait below counts the same every time */
    auto load_tile = [&](int t) {
        if (t < ntiles) {
            const int b = t % AMMA_STAGES;
            uint16_t *kt = tiles + (size_t)b * 2 * AMMA_BK * LD, *vt = kt + AMMA_BK * LD;
            for (int i = tid; i < AMMA_BK * CH; i += NT) {
                const int r = i / CH, ch = i % CH, j = t * AMMA_BK + r;
                const bool ok = j < n;
                const size_t src = (size_t)(j0 + (ok ? j : 0)) * D + ch * 8;
                fa_cp16(kt + r * LD + ch * 8, kc + src, ok);
                fa_cp16(vt + r * LD + ch * 8, vc + src, ok);
            }
        }
        fa_cp_commit();
    };
    const bool writer = n > 0 && pos < j1;
    if (!writer)   /* the slice does not hold the new key: its first tiles load during the prologue */
        for (int t = 0; t < AMMA_STAGES - 1; t++)
            load_tile(t);
    attn_prologue<KERN_ATTN_MAX_GROUP, LPK, NT>(p, kc, vc, g, pos, j1, n, q_s, tid);
    if (writer)
        __threadfence();   /* the new key and value reach L2 before cp.async.cg reads them */
    __syncthreads();
    if (writer)
        for (int t = 0; t < AMMA_STAGES - 1; t++)
            load_tile(t);

    uint32_t qa[KS][4];   /* rows gr and gr + 8: heads gr and gr + 8 of the group */
#pragma unroll
    for (int k = 0; k < KS; k++) {
        const int c = k * 16 + 2 * tq;
        const float *q0 = q_s + gr * D + c, *q1 = q_s + (gr + 8) * D + c;
        const bool h0 = gr < G, h1 = gr + 8 < G;
        qa[k][0] = h0 ? fa_pack(q0[0] * LOG2E, q0[1] * LOG2E) : 0u;
        qa[k][1] = h1 ? fa_pack(q1[0] * LOG2E, q1[1] * LOG2E) : 0u;
        qa[k][2] = h0 ? fa_pack(q0[8] * LOG2E, q0[9] * LOG2E) : 0u;
        qa[k][3] = h1 ? fa_pack(q1[8] * LOG2E, q1[9] * LOG2E) : 0u;
    }
    float o[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const int mat = lane >> 3, mr = lane & 7, kw = warp * 16;
    for (int t = 0; t < ntiles; t++) {
        fa_cp_wait<AMMA_STAGES - 2>();   /* tile t has landed (this thread's copies) */
        __syncthreads();                  /* everyone's copies; everyone is done with tile t - 1 */
        load_tile(t + AMMA_STAGES - 1);   /* into tile t - 1's buffer */
        const uint16_t *kt = tiles + (size_t)(t % AMMA_STAGES) * 2 * AMMA_BK * LD, *vt = kt + AMMA_BK * LD;
        if (t * AMMA_BK + kw < n) {   /* this warp's 16 keys hold at least one of the slice */
            float sc[2][4] = { { 0.f, 0.f, 0.f, 0.f }, { 0.f, 0.f, 0.f, 0.f } };
#pragma unroll
            for (int k = 0; k < KS; k++) {
                uint32_t b[4];
                fa_ldsm_x4(b, kt + (kw + mr + (mat >> 1) * 8) * LD + k * 16 + (mat & 1) * 8);
                fa_mma(sc[0], qa[k], b[0], b[1]);
                fa_mma(sc[1], qa[k], b[2], b[3]);
            }
            if (t * AMMA_BK + kw + 16 > n) {
#pragma unroll
                for (int j = 0; j < 2; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (t * AMMA_BK + kw + j * 8 + 2 * tq + (e & 1) >= n)
                            sc[j][e] = -INFINITY;
            }
            float a0, a1;
            fa_softmax_step<2>(sc, m0, m1, l0, l1, a0, a1);
            const uint32_t pa[4] = { fa_pack(sc[0][0], sc[0][1]), fa_pack(sc[0][2], sc[0][3]),
                                     fa_pack(sc[1][0], sc[1][1]), fa_pack(sc[1][2], sc[1][3]) };
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                o[2 * dp][0] *= a0;
                o[2 * dp][1] *= a0;
                o[2 * dp][2] *= a1;
                o[2 * dp][3] *= a1;
                o[2 * dp + 1][0] *= a0;
                o[2 * dp + 1][1] *= a0;
                o[2 * dp + 1][2] *= a1;
                o[2 * dp + 1][3] *= a1;
                uint32_t b[4];
                fa_ldsm_x4_t(b, vt + (kw + mr + (mat & 1) * 8) * LD + dp * 16 + (mat >> 1) * 8);
                fa_mma(o[2 * dp], pa, b[0], b[1]);
                fa_mma(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
    }
    fa_cp_wait<0>();
    __syncthreads();   /* every warp is done with the tiles: their space takes the warps' outputs */
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    /* the warps' (max, sum, output) → the split's partial */
    float *ow = wo + (size_t)warp * 16 * D;
#pragma unroll
    for (int d = 0; d < ND; d++) {
        const int c = d * 8 + 2 * tq;
        ow[gr * D + c] = o[d][0];
        ow[gr * D + c + 1] = o[d][1];
        ow[(gr + 8) * D + c] = o[d][2];
        ow[(gr + 8) * D + c + 1] = o[d][3];
    }
    if (tq == 0) {
        wml[(warp * 16 + gr) * 2] = m0;
        wml[(warp * 16 + gr) * 2 + 1] = l0;
        wml[(warp * 16 + gr + 8) * 2] = m1;
        wml[(warp * 16 + gr + 8) * 2 + 1] = l1;
    }
    __syncthreads();
    const int q_dim = p.n_heads * D;
    float *part = attn_part(p, s);
    for (int i = tid; i < G * D; i += NT) {
        const int h = i / D, d = i % D;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < AMMA_WARPS; w++)
            M = fmaxf(M, wml[(w * 16 + h) * 2]);
        float ov = 0.f, lv = 0.f;
        if (M != -INFINITY) {
#pragma unroll
            for (int w = 0; w < AMMA_WARPS; w++) {
                const float f = fa_exp2(wml[(w * 16 + h) * 2] - M);
                ov += f * wo[((size_t)w * 16 + h) * D + d];
                lv += f * wml[(w * 16 + h) * 2 + 1];
            }
        }
        part[(size_t)g * G * D + i] = ov;
        if (d == 0) {
            part[q_dim + g * G + h] = M == -INFINITY ? -INFINITY : M * LN2;
            part[q_dim + p.n_heads + g * G + h] = lv;
        }
    }
    attn_finish<KERN_ATTN_MAX_GROUP, LPK, NT>(p, p.counters, g, n_eff, cm, cw, &s_last, tid, 0, nullptr, nullptr);
}

template <int D>
static int attn_mma_launch(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    const int G = p.n_heads / p.n_kv;
    const size_t smem = (size_t)2 * AMMA_STAGES * AMMA_BK * (D + AMMA_PAD) * 2 + sizeof(float) * ((size_t)G * D +
                        2 * (size_t)G * p.n_split + AMMA_WARPS * 16 * 2);
    if (smem > 200 * 1024)
        return bora_errf(err, -EINVAL, "attention: %zu bytes of shared memory needed (%d splits)", smem, p.n_split);
    auto k = attn_mma_kernel<D>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CUDA_CHECK(kern_launch(k, dim3(p.n_kv, p.n_split), dim3(AMMA_WARPS * 32), smem, s, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

template <int GM>
static int attn_launch_hd(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    switch (p.hd) {
    case 16: return attn_launch<GM, 2>(p, s, err);
    case 32: return attn_launch<GM, 4>(p, s, err);
    case 64: return attn_launch<GM, 8>(p, s, err);
    case 128: return attn_launch<GM, 16>(p, s, err);
    case 256: return attn_launch<GM, 32>(p, s, err);
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
    if (G > 4 && p.hd == 128)   /* large groups: tensor cores */
        return attn_mma_launch<128>(p, s, err);
    if (G > 4 && p.hd == 64)
        return attn_mma_launch<64>(p, s, err);
    if (G <= 4)
        return attn_launch_hd<4>(p, s, err);
    if (G <= 8)
        return attn_launch_hd<8>(p, s, err);
    return attn_launch_hd<16>(p, s, err);
}
