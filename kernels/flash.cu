/* flash.cu — prefill attention on tensor cores (flash-attention 2 style): a block takes 64 queries
 * of one head (narrow: 4 warps × 16 rows, Q fragments in registers) or 128 (wide: 4 warps × 32
 * rows, Q in shared memory, each K/V fragment feeding two mma; chosen when the grid still fills
 * the GPU twice over), walks the 64-key tiles of its kv head that any of them may see
 * (causal, sliding window; GQA by head / group), double-buffers K and V tiles in shared memory
 * with cp.async, computes S = Q Kᵀ and O += P V with bf16 mma.sync (fp32 accumulation) and keeps
 * an online softmax in base 2, so no n × n matrix exists anywhere. For head_dim 128 (every
 * Mistral model) and grids of at least a block an SM, a third kernel does the same on Hopper's
 * warpgroup MMA (wgmma): 128 queries a block in two warpgroups, over 128-key tiles that a producer
 * warp's TMA copies feed (where the driver has no tensor maps, those grids take the wide or narrow
 * kernel). Few queries over a long cache (a
 * turn after a cached conversation) split the narrow blocks' keys, and fa_combine merges the
 * splits (flash-decoding). Budget: see prefill.h
 * (≥ 250 TFLOP/s at n = 2048, head_dim 128, counting 4 · hd FLOP per visible query-key pair). */
#include <cuda.h>
#include <cuda_bf16.h>
#include <math.h>

#include "kernels/kern_mma.cuh"
#include "kernels/kern_tma.cuh"
#include "kernels/kern_util.cuh"
#include "kernels/prefill.h"

#define FA_WARPS 4              /* warps per block of the narrow kernel, 16 query rows each */
#define FA_BK 64                /* keys per tile */
/* blocks per SM: 256 threads at ≤ 255 registers fit once, 128 threads twice (3 would cap
 * registers at 168: spills at head_dim 128) */
#define FA_MIN_BLOCKS(W) ((W) >= 8 ? 1 : 2)
#define FA_PAD 8                /* bf16 elements of padding per smem row (keeps ldmatrix conflict-free) */

struct fa_params {
    const uint16_t *q, *kc, *vc;
    uint16_t *out;
    int n, pos0, max_ctx, n_heads, n_kv, window;
    /* key splits (narrow kernel): with splits > 1, block z of a query tile takes the z-th of
       `splits` equal shares of its key tiles and writes its unnormalised rows to part_o (splits,
       n, n_heads, D) and their running maximum and sum to part_ml (splits, n, n_heads, 2), which
       fa_combine merges */
    int splits;
    float *part_o, *part_ml;
};

/* The key tiles (of bk keys) that query rows [t_first, t_first + bq) of the chunk may see: from
 * the window's start (or key 0) to the last row's own position; tile index = key / bk. */
__device__ __forceinline__ void fa_key_tiles(const struct fa_params &p, int t_first, int bq, int bk, int *tile0,
                                             int *tile1)
{
    const int t_last = min(p.n, t_first + bq) - 1;
    const int kmin = p.window > 0 ? max(0, p.pos0 + t_first - p.window + 1) : 0;
    *tile0 = kmin / bk;
    *tile1 = (p.pos0 + t_last) / bk;
}

/* Loads keys [k0, k0 + FA_BK) of one kv head (rows ≥ kend zero-filled) into a (FA_BK, D + FA_PAD) tile. */
template <int D, int W>
__device__ __forceinline__ void fa_load_tile(uint16_t *tile, const uint16_t *base, int k0, int kend)
{
    constexpr int CH = D / 8;   /* 16-byte chunks per row */
#pragma unroll
    for (int i = threadIdx.x; i < FA_BK * CH; i += W * 32) {
        const int r = i / CH, ch = i % CH, key = k0 + r;
        const bool ok = key < kend;
        fa_cp16(tile + r * (D + FA_PAD) + ch * 8, base + (size_t)(ok ? key : 0) * D + ch * 8, ok);
    }
}

template <int D, int W>
__global__ void __launch_bounds__(W * 32, FA_MIN_BLOCKS(W)) fa_kernel(struct fa_params p)
{
    constexpr int BQ = W * 16;   /* queries per block */
    extern __shared__ __align__(16) uint16_t fa_sm[];
    constexpr int LD = D + FA_PAD;
    constexpr int KS = D / 16;   /* k-steps over the head dimension */
    constexpr int ND = D / 8;    /* 8-wide output tiles */
    uint16_t *ks = fa_sm, *vs = fa_sm + 2 * FA_BK * LD;

    kern_grid_launch_next();
    kern_grid_wait();
    /* heads vary fastest and query tiles go from the last (most keys) down, so the blocks
     * dispatched first are the longest of every head (longest-first scheduling) */
    const int qt = gridDim.y - 1 - blockIdx.y;
    const int h = blockIdx.x, G = p.n_heads / p.n_kv, kvh = h / G;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int hd_all = p.n_heads * D;
    const int t_first = qt * BQ;
    const int kend = p.pos0 + p.n;                /* cache rows written so far */
    int tile0, tile1;
    fa_key_tiles(p, t_first, BQ, FA_BK, &tile0, &tile1);
    if (p.splits > 1) {   /* this block's share of the key tiles (maybe none) */
        const int per = (tile1 - tile0 + p.splits) / p.splits;
        tile0 += blockIdx.z * per;
        tile1 = min(tile1, tile0 + per - 1);
    }
    const uint16_t *kbase = p.kc + (size_t)kvh * p.max_ctx * D;
    const uint16_t *vbase = p.vc + (size_t)kvh * p.max_ctx * D;

    fa_load_tile<D, W>(ks, kbase, tile0 * FA_BK, kend);
    fa_load_tile<D, W>(vs, vbase, tile0 * FA_BK, kend);
    fa_cp_commit();

    /* this warp's 16 query rows as A fragments (rows ≥ n read as zero) */
    const int r0 = t_first + warp * 16 + g, r1 = r0 + 8;
    uint32_t qa[KS][4];
#pragma unroll
    for (int s = 0; s < KS; s++) {
        const int c = s * 16 + 2 * tq;
        const uint16_t *q0 = p.q + (size_t)r0 * hd_all + (size_t)h * D + c;
        const uint16_t *q1 = p.q + (size_t)r1 * hd_all + (size_t)h * D + c;
        qa[s][0] = r0 < p.n ? *(const uint32_t *)q0 : 0u;
        qa[s][1] = r1 < p.n ? *(const uint32_t *)q1 : 0u;
        qa[s][2] = r0 < p.n ? *(const uint32_t *)(q0 + 8) : 0u;
        qa[s][3] = r1 < p.n ? *(const uint32_t *)(q1 + 8) : 0u;
    }
    const int qp0 = p.pos0 + r0, qp1 = p.pos0 + r1;

    float o[ND][4];
#pragma unroll
    for (int d = 0; d < ND; d++)
        o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

    for (int tile = tile0; tile <= tile1; tile++) {
        const int buf = (tile - tile0) & 1;
        if (tile < tile1) {
            fa_load_tile<D, W>(ks + (buf ^ 1) * FA_BK * LD, kbase, (tile + 1) * FA_BK, kend);
            fa_load_tile<D, W>(vs + (buf ^ 1) * FA_BK * LD, vbase, (tile + 1) * FA_BK, kend);
            fa_cp_commit();
            fa_cp_wait<1>();
        } else {
            fa_cp_wait<0>();
        }
        __syncthreads();
        const uint16_t *kt = ks + buf * FA_BK * LD, *vt = vs + buf * FA_BK * LD;
        const int k0 = tile * FA_BK;
        /* a tile none of this warp's rows sees (past its diagonal, before its window, or rows
         * past n) leaves m, l and o as they are: skip its arithmetic, keep the barriers */
        const int wq0 = p.pos0 + t_first + warp * 16;   /* first query position of this warp */
        if (k0 > wq0 + 15 || t_first + warp * 16 >= p.n ||
            (p.window > 0 && wq0 - (k0 + FA_BK - 1) >= p.window)) {
            __syncthreads();
            continue;
        }

        /* S = Q Kᵀ : 16 rows × 64 keys per warp, 8 tiles of 8 keys */
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
        const int mat = lane >> 3, mr = lane & 7;
#pragma unroll
        for (int ksx = 0; ksx < KS; ksx++) {
#pragma unroll
            for (int jp = 0; jp < 4; jp++) {
                uint32_t b[4];
                fa_ldsm_x4(b, kt + (jp * 16 + mr + (mat >> 1) * 8) * LD + ksx * 16 + (mat & 1) * 8);
                fa_mma(s[2 * jp], qa[ksx], b[0], b[1]);
                fa_mma(s[2 * jp + 1], qa[ksx], b[2], b[3]);
            }
        }
        /* mask where the tile crosses the diagonal or the window edge */
        const bool need_mask = k0 + FA_BK - 1 > p.pos0 + t_first + warp * 16 ||
                               (p.window > 0 && p.pos0 + t_first + warp * 16 + 15 - k0 >= p.window) ||
                               k0 + FA_BK > kend;
        if (need_mask)
            fa_mask_tile<8>(s, k0, tq, qp0, qp1, kend, p.window);
        /* online softmax (base 2: q carries log2 e) */
        float a0, a1;
        fa_softmax_step<8>(s, m0, m1, l0, l1, a0, a1);
#pragma unroll
        for (int d = 0; d < ND; d++) {
            o[d][0] *= a0;
            o[d][1] *= a0;
            o[d][2] *= a1;
            o[d][3] *= a1;
        }
        /* O += P V */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            uint32_t pa[4];
            pa[0] = fa_pack(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = fa_pack(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = fa_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = fa_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t b[4];
                fa_ldsm_x4_t(b, vt + (kk * 16 + mr + (mat & 1) * 8) * LD + dp * 16 + (mat >> 1) * 8);
                fa_mma(o[2 * dp], pa, b[0], b[1]);
                fa_mma(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads();   /* the next iteration's load overwrites the other buffer's twin */
    }

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    if (p.splits > 1) {   /* this split's rows as they are, for fa_combine */
        fa_cp_wait<0>();   /* a split with no tiles leaves its first loads unwaited */
        const size_t z0 = ((size_t)blockIdx.z * p.n + r0) * p.n_heads + h, z1 = z0 + (size_t)8 * p.n_heads;
#pragma unroll
        for (int d = 0; d < ND; d++) {
            const int c = d * 8 + 2 * tq;
            if (r0 < p.n)
                *(float2 *)(p.part_o + z0 * D + c) = make_float2(o[d][0], o[d][1]);
            if (r1 < p.n)
                *(float2 *)(p.part_o + z1 * D + c) = make_float2(o[d][2], o[d][3]);
        }
        if (tq == 0 && r0 < p.n)
            *(float2 *)(p.part_ml + 2 * z0) = make_float2(m0, l0);
        if (tq == 0 && r1 < p.n)
            *(float2 *)(p.part_ml + 2 * z1) = make_float2(m1, l1);
        return;
    }
    const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
    for (int d = 0; d < ND; d++) {
        const int c = h * D + d * 8 + 2 * tq;
        if (r0 < p.n)
            *(uint32_t *)(p.out + (size_t)r0 * hd_all + c) = fa_pack(o[d][0] * i0, o[d][1] * i0);
        if (r1 < p.n)
            *(uint32_t *)(p.out + (size_t)r1 * hd_all + c) = fa_pack(o[d][2] * i1, o[d][3] * i1);
    }
}

/* Merges the key splits of query t, head h (one block of D threads each): the splits' maxima and
 * sums give each split's weight 2^(m_z - M) / L, and the row is the weighted sum of their
 * unnormalised rows (0 for a row no split saw a key for). */
__global__ void fa_combine(struct fa_params p, int D)
{
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    const size_t stride = (size_t)p.n * p.n_heads, row = (size_t)t * p.n_heads + h;
    float mx = -INFINITY;
    for (int z = 0; z < p.splits; z++)
        mx = fmaxf(mx, p.part_ml[2 * (z * stride + row)]);
    float sum = 0.f, acc = 0.f;
    if (mx != -INFINITY)
        for (int z = 0; z < p.splits; z++) {
            const float2 ml = *(const float2 *)(p.part_ml + 2 * (z * stride + row));
            const float w = fa_exp2(ml.x - mx);   /* 2^-inf = 0: a split that saw nothing */
            sum += ml.y * w;
            acc += p.part_o[(z * stride + row) * D + d] * w;
        }
    p.out[row * D + d] = kern_f32_to_bf16(sum > 0.f ? acc / sum : 0.f);
}

/* The wide variant: 4 warps × 32 query rows (two 16-row m-tiles per warp, so every K and V
 * fragment read from shared memory feeds two mma), Q staged in shared memory and read back per
 * k-step by ldmatrix (registers go to the two accumulator sets instead). */
#define FA2_WARPS 4
#define FA2_MT 2
#define FA2_BQ (FA2_WARPS * 16 * FA2_MT)

template <int D>
__global__ void __launch_bounds__(FA2_WARPS * 32, 2) fa2_kernel(struct fa_params p)
{
    extern __shared__ __align__(16) uint16_t fa_sm[];
    constexpr int LD = D + FA_PAD;
    constexpr int KS = D / 16;
    constexpr int ND = D / 8;
    constexpr int MT = FA2_MT;
    uint16_t *qs = fa_sm, *ks = fa_sm + FA2_BQ * LD, *vs = ks + 2 * FA_BK * LD;

    kern_grid_launch_next();
    kern_grid_wait();
    const int qt = gridDim.y - 1 - blockIdx.y;
    const int h = blockIdx.x, G = p.n_heads / p.n_kv, kvh = h / G;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int hd_all = p.n_heads * D;
    const int t_first = qt * FA2_BQ;
    const int kend = p.pos0 + p.n;
    int tile0, tile1;
    fa_key_tiles(p, t_first, FA2_BQ, FA_BK, &tile0, &tile1);
    const uint16_t *kbase = p.kc + (size_t)kvh * p.max_ctx * D;
    const uint16_t *vbase = p.vc + (size_t)kvh * p.max_ctx * D;

    {   /* Q rows t_first .. t_first + FA2_BQ - 1 of head h (rows ≥ n zero-filled) */
        constexpr int CH = D / 8;
        for (int i = threadIdx.x; i < FA2_BQ * CH; i += FA2_WARPS * 32) {
            const int r = i / CH, ch = i % CH, t = t_first + r;
            const bool ok = t < p.n;
            fa_cp16(qs + r * LD + ch * 8, p.q + (size_t)(ok ? t : 0) * hd_all + (size_t)h * D + ch * 8, ok);
        }
    }
    fa_load_tile<D, FA2_WARPS>(ks, kbase, tile0 * FA_BK, kend);
    fa_load_tile<D, FA2_WARPS>(vs, vbase, tile0 * FA_BK, kend);
    fa_cp_commit();

    const int wrow = warp * 16 * MT;   /* this warp's first row within the block */
    int qp[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        qp[mt][0] = p.pos0 + t_first + wrow + mt * 16 + g;
        qp[mt][1] = qp[mt][0] + 8;
    }
    float o[MT][ND][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int d = 0; d < ND; d++)
            o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.f;
    }
    const int mat = lane >> 3, mr = lane & 7;
    const int wq0 = p.pos0 + t_first + wrow;   /* first query position of this warp */

    for (int tile = tile0; tile <= tile1; tile++) {
        const int buf = (tile - tile0) & 1;
        if (tile < tile1) {
            fa_load_tile<D, FA2_WARPS>(ks + (buf ^ 1) * FA_BK * LD, kbase, (tile + 1) * FA_BK, kend);
            fa_load_tile<D, FA2_WARPS>(vs + (buf ^ 1) * FA_BK * LD, vbase, (tile + 1) * FA_BK, kend);
            fa_cp_commit();
            fa_cp_wait<1>();
        } else {
            fa_cp_wait<0>();
        }
        __syncthreads();
        const uint16_t *kt = ks + buf * FA_BK * LD, *vt = vs + buf * FA_BK * LD;
        const int k0 = tile * FA_BK;
        if (k0 > wq0 + 16 * MT - 1 || t_first + wrow >= p.n ||
            (p.window > 0 && wq0 - (k0 + FA_BK - 1) >= p.window)) {
            __syncthreads();
            continue;
        }

        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < 8; j++)
                s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
        for (int ksx = 0; ksx < KS; ksx++) {
            uint32_t qf[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                fa_ldsm_x4(qf[mt], qs + (wrow + mt * 16 + (lane & 15)) * LD + ksx * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int jp = 0; jp < 4; jp++) {
                uint32_t b[4];
                fa_ldsm_x4(b, kt + (jp * 16 + mr + (mat >> 1) * 8) * LD + ksx * 16 + (mat & 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    fa_mma(s[mt][2 * jp], qf[mt], b[0], b[1]);
                    fa_mma(s[mt][2 * jp + 1], qf[mt], b[2], b[3]);
                }
            }
        }
        const bool need_mask = k0 + FA_BK - 1 > wq0 ||
                               (p.window > 0 && wq0 + 16 * MT - 1 - k0 >= p.window) || k0 + FA_BK > kend;
        uint32_t pa[MT][4][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            if (need_mask)
                fa_mask_tile<8>(s[mt], k0, tq, qp[mt][0], qp[mt][1], kend, p.window);
            float a0, a1;
            fa_softmax_step<8>(s[mt], m[mt][0], m[mt][1], l[mt][0], l[mt][1], a0, a1);
#pragma unroll
            for (int d = 0; d < ND; d++) {
                o[mt][d][0] *= a0;
                o[mt][d][1] *= a0;
                o[mt][d][2] *= a1;
                o[mt][d][3] *= a1;
            }
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                pa[mt][kk][0] = fa_pack(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][kk][1] = fa_pack(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][kk][2] = fa_pack(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][kk][3] = fa_pack(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
        }
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
#pragma unroll
            for (int dp = 0; dp < ND / 2; dp++) {
                uint32_t b[4];
                fa_ldsm_x4_t(b, vt + (kk * 16 + mr + (mat & 1) * 8) * LD + dp * 16 + (mat >> 1) * 8);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    fa_mma(o[mt][2 * dp], pa[mt][kk], b[0], b[1]);
                    fa_mma(o[mt][2 * dp + 1], pa[mt][kk], b[2], b[3]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float l0 = l[mt][0], l1 = l[mt][1];
        l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
        l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
        l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
        const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
        const int r0 = t_first + wrow + mt * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int d = 0; d < ND; d++) {
            const int c = h * D + d * 8 + 2 * tq;
            if (r0 < p.n)
                *(uint32_t *)(p.out + (size_t)r0 * hd_all + c) = fa_pack(o[mt][d][0] * i0, o[mt][d][1] * i0);
            if (r1 < p.n)
                *(uint32_t *)(p.out + (size_t)r1 * hd_all + c) = fa_pack(o[mt][d][2] * i1, o[mt][d][3] * i1);
        }
    }
}

template <int D>
static int fa2_launch(const struct fa_params &p, cudaStream_t s, struct bora_err *err)
{
    const size_t smem = (size_t)(FA2_BQ + 4 * FA_BK) * (D + FA_PAD) * sizeof(uint16_t);
    CUDA_CHECK(cudaFuncSetAttribute(fa2_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    if ((p.n + FA2_BQ - 1) / FA2_BQ > 65535)
        return bora_errf(err, -EINVAL, "prefill attention: %d queries in one launch", p.n);
    dim3 grid(p.n_heads, (p.n + FA2_BQ - 1) / FA2_BQ);
    CUDA_CHECK(kern_launch(fa2_kernel<D>, grid, dim3(FA2_WARPS * 32), smem, s, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

template <int D, int W>
static int fa_launch(const struct fa_params &p, cudaStream_t s, struct bora_err *err)
{
    constexpr int BQ = W * 16;
    const size_t smem = (size_t)4 * FA_BK * (D + FA_PAD) * sizeof(uint16_t);
    CUDA_CHECK(cudaFuncSetAttribute(fa_kernel<D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    if ((p.n + BQ - 1) / BQ > 65535)
        return bora_errf(err, -EINVAL, "prefill attention: %d queries in one launch", p.n);
    dim3 grid(p.n_heads, (p.n + BQ - 1) / BQ, p.splits > 1 ? p.splits : 1);
    CUDA_CHECK(kern_launch(fa_kernel<D, W>, grid, dim3(W * 32), smem, s, p));
    if (p.splits > 1)
        CUDA_CHECK(kern_launch(fa_combine, dim3(p.n, p.n_heads), dim3(D), 0, s, p, D));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}


/* ---- Hopper: warpgroup MMA (wgmma) ----
 * For head_dim 128 (every Mistral model): a block's two warpgroups take 64 queries each of one
 * head. S = Q Kᵀ is a wgmma with Q and K from shared memory, O += P V one with P from registers
 * (the S accumulators packed to bf16 are already its A fragments) and V from shared memory. Q, K
 * and V tiles are stored in the 128-byte-swizzled layout wgmma's descriptors name (and the TMA
 * copies write): 64 elements (128 bytes) of a row per region, 16-byte chunk c of row r at chunk
 * c ^ (r mod 8). K-major for Q and K (head dimension contiguous), MN-major for V (transposed
 * operand). */
#define FW_BQ 128                /* queries per block: two warpgroups of 64 */
#define FW_TILE_BYTES (64 * 256) /* 64 queries × 128 bf16: two 8 KiB regions of 64 rows × 128 bytes */

/* Shared-memory matrix descriptor: start address, leading and stride byte offsets, 128-byte swizzle. */
__device__ __forceinline__ uint64_t fw_desc(const void *p, uint32_t lbo, uint32_t sbo)
{
    const uint64_t a = fa_smem_addr(p);
    return ((a & 0x3FFFF) >> 4) | ((uint64_t)((lbo & 0x3FFFF) >> 4) << 16) | ((uint64_t)((sbo & 0x3FFFF) >> 4) << 32) |
           (1ull << 62);
}

__device__ __forceinline__ void fw_fence(void) { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void fw_commit(void) { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void fw_wait0(void) { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

/* The 64 fp32 accumulators of a m64n128 wgmma as asm operands %0..%63. */
#define FW_ACC64(d)                                                                                  \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), \
    "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
    "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), \
    "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
    "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), \
    "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), \
    "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), \
    "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
    "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), \
    "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), \
    "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

/* d (64 × 128 fp32) += A (64 × 16 bf16 in registers, the m16n8k16 A layout per warp)
 *                     · B (16 × 128, desc b, MN-major). */
__device__ __forceinline__ void fw_mma_rs(float (&d)[64], const uint32_t (&a)[4], uint64_t b)
{
    asm volatile("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16\n"
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n"
                 " %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,\n"
                 " %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,\n"
                 " %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},\n"
                 "{%64, %65, %66, %67}, %68, 1, 1, 1, 1;\n"
                 : FW_ACC64(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

#define FW_V_SBO 1024            /* V's descriptor (MN-major): bytes between groups of 8 keys (the
                                    test fails with it and the regions' offset swapped) */

/* ---- the wgmma kernel, fed by a TMA producer warp (FlashAttention-3's shape) ----
 * Two consumer warpgroups take 64 queries each over 128-key tiles: S = Q Kᵀ is a m64n128k16 wgmma,
 * O += P V a m64n128k16 with P from registers. A ninth warp produces: one lane issues the
 * tensor-memory-accelerator copies of Q and of each K and V tile into a ring of FT_STAGES stages,
 * counted on mbarriers (full: the bytes landed; empty: the eight consumer warps are done with the
 * stage), so the warpgroups run independently of each other instead of meeting at a block
 * barrier every tile. The copies write the 128-byte-swizzled layout above, and the tensor maps'
 * bounds (the chunk's queries, the keys up to pos0 + n) zero-fill what lies past them. One block an
 * SM: 288 threads, 166 registers each (ptxas allots up to 168 to a block of this size), 160 KiB of
 * shared memory. It replaced a kernel of 64-key tiles that every thread loaded with cp.async, two
 * blocks an SM meeting at a block barrier each tile (in git history before 2026-11-30 23:30 UTC),
 * H200 2026-11-30: attention of a 2,048-token 7B FP8 prefill 3.92 → 3.05 ms (22:44 UTC), the
 * same accuracy on every test case. Tried and slower:
 * - FA3's pipeline inside a warpgroup (tile t's Q Kᵀ in flight with t − 1's P V; 384 threads with
 *   setmaxnreg): 3.35 ms against 3.22 for the same kernel without it (22:47 UTC);
 * - a persistent grid, one block an SM walking its tiles heaviest first with Q double-buffered:
 *   3.14 ms against 3.07 for a block a tile (22:51 UTC);
 * - FA3's ping-pong, the warpgroups taking turns at issuing their MMAs through two named
 *   barriers: 3.09 ms against 3.05, TTFT the same (23:05 UTC). */
#define FT_BK 128                 /* keys per tile */
#define FT_THREADS 288            /* two consumer warpgroups and the producer warp */
#define FT_KV_BYTES (FT_BK * 256) /* a 128 × 128 bf16 tile: two 16 KiB regions of 128 rows × 128 bytes */
#define FT_V_LBO (FT_BK * 128)    /* V's descriptor: bytes between its 64-column regions */
/* K/V stages: two and three measured the same (attention 3.05 ms a 2,048-token 7B prefill, H200
 * 22:44 UTC), so two, leaving 160 KiB of shared memory in use. */
#define FT_STAGES 2

struct ft_maps {
    CUtensorMap q;    /* (n_heads · 128, n) bf16, box 64 × 64 */
    CUtensorMap k;    /* (128, pos0 + n, n_kv) bf16 with row stride max_ctx, box 64 × 128 × 1 */
    CUtensorMap v;
};

static constexpr size_t ft_smem(int stages)
{
    return 1024 + 2 * FW_TILE_BYTES + (size_t)stages * 2 * FT_KV_BYTES + 8 + (size_t)stages * 24;
}

__device__ __forceinline__ void ft_tma_2d(void *dst, const CUtensorMap *map, int c0, int c1, uint64_t *bar)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];"
                 ::"r"(fa_smem_addr(dst)), "l"(map), "r"(c0), "r"(c1), "r"(fa_smem_addr(bar))
                 : "memory");
}

__device__ __forceinline__ void ft_tma_3d(void *dst, const CUtensorMap *map, int c0, int c1, int c2, uint64_t *bar)
{
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];"
                 ::"r"(fa_smem_addr(dst)), "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(fa_smem_addr(bar))
                 : "memory");
}

/* d (64 × 128 fp32 over the warpgroup) = (acc ? d : 0) + A (64 × 16, desc a) · B (16 × 128, desc b),
 * both K-major. */
__device__ __forceinline__ void ft_mma_ss(float (&d)[64], uint64_t a, uint64_t b, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16\n"
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,\n"
                 " %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,\n"
                 " %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,\n"
                 " %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},\n"
                 "%64, %65, p, 1, 1, 0, 0;\n}\n"
                 : FW_ACC64(d)
                 : "l"(a), "l"(b), "r"(acc));
}

/* Pins accumulator registers at this point of the program: the compiler must not move their
 * reads or writes across the wgmma waits around it (CUTLASS's warpgroup_fence_operand). */
template <int N>
__device__ __forceinline__ void ft_fence_operands(float (&r)[N])
{
#pragma unroll
    for (int i = 0; i < N; i++)
        asm volatile("" : "+f"(r[i])::"memory");
}

template <int STAGES>
__global__ void __launch_bounds__(FT_THREADS, 1)
    ft_kernel(const __grid_constant__ struct ft_maps maps, struct fa_params p)
{
    constexpr int D = 128;
    extern __shared__ __align__(16) uint8_t ft_raw[];
    uint8_t *sm = (uint8_t *)(((uintptr_t)ft_raw + 1023) & ~(uintptr_t)1023);
    uint8_t *qs = sm, *kv = sm + 2 * FW_TILE_BYTES;   /* stage s: K at kv + 2s·FT_KV_BYTES, V after it */
    uint64_t *qbar = (uint64_t *)(kv + (size_t)STAGES * 2 * FT_KV_BYTES);
    uint64_t *full_k = qbar + 1, *full_v = full_k + STAGES, *empty = full_v + STAGES;

    const int qt = gridDim.y - 1 - blockIdx.y;
    const int h = blockIdx.x, G = p.n_heads / p.n_kv, kvh = h / G;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t_first = qt * FW_BQ;
    const int kend = p.pos0 + p.n;
    int tile0, tile1;
    fa_key_tiles(p, t_first, FW_BQ, FT_BK, &tile0, &tile1);
    const int nwg = t_first + 64 < p.n ? 2 : 1;   /* warpgroups with queries */

    if (threadIdx.x == 0) {
        mbar_init(qbar, 1);
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&full_k[s], 1);
            mbar_init(&full_v[s], 1);
            mbar_init(&empty[s], 8);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    kern_grid_launch_next();
    kern_grid_wait();

    if (warp == 8) {   /* the producer */
        if (lane == 0) {
            mbar_expect_tx(qbar, (uint32_t)nwg * FW_TILE_BYTES);
            for (int w = 0; w < nwg; w++)
                for (int half = 0; half < 2; half++)
                    ft_tma_2d(qs + w * FW_TILE_BYTES + half * (FW_TILE_BYTES / 2), &maps.q, h * D + half * 64,
                              t_first + w * 64, qbar);
            for (int tile = tile0; tile <= tile1; tile++) {
                const int i = tile - tile0, s = i % STAGES;
                if (i >= STAGES)
                    mbar_wait(&empty[s], (uint32_t)((i / STAGES - 1) & 1));
                uint8_t *kt = kv + (size_t)s * 2 * FT_KV_BYTES, *vt = kt + FT_KV_BYTES;
                mbar_expect_tx(&full_k[s], FT_KV_BYTES);
                for (int half = 0; half < 2; half++)
                    ft_tma_3d(kt + half * (FT_KV_BYTES / 2), &maps.k, half * 64, tile * FT_BK, kvh, &full_k[s]);
                mbar_expect_tx(&full_v[s], FT_KV_BYTES);
                for (int half = 0; half < 2; half++)
                    ft_tma_3d(vt + half * (FT_KV_BYTES / 2), &maps.v, half * 64, tile * FT_BK, kvh, &full_v[s]);
            }
        }
        return;
    }

    /* the consumers: warpgroup wg, its warp `w4` of four */
    const int wg = warp >> 2, w4 = warp & 3;
    const int g = lane >> 2, tq = lane & 3;
    const int hd_all = p.n_heads * D;
    const int wrow = wg * 64 + w4 * 16;         /* this warp's first row in the block */
    const int qp0 = p.pos0 + t_first + wrow + g, qp1 = qp0 + 8;
    const int wq0 = p.pos0 + t_first + wg * 64; /* this warpgroup's first query position */
    const bool has_q = wg < nwg;
    float o[64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        o[i] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    const uint8_t *qw = qs + wg * FW_TILE_BYTES;
    if (has_q)
        mbar_wait(qbar, 0);

    for (int tile = tile0; tile <= tile1; tile++) {
        const int i = tile - tile0, s = i % STAGES;
        const uint32_t ph = (uint32_t)((i / STAGES) & 1);
        const uint8_t *kt = kv + (size_t)s * 2 * FT_KV_BYTES, *vt = kt + FT_KV_BYTES;
        const int k0 = tile * FT_BK;
        mbar_wait(&full_k[s], ph);
        if (!has_q || k0 > wq0 + 63 || (p.window > 0 && wq0 - (k0 + FT_BK - 1) >= p.window)) {
            mbar_wait(&full_v[s], ph);   /* the stage's phase completes before it is released */
            if (lane == 0)
                mbar_arrive(&empty[s]);
            continue;
        }
        float sacc[64];
        fw_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
            ft_mma_ss(sacc, fw_desc(qw + (kk >> 2) * (FW_TILE_BYTES / 2) + (kk & 3) * 32, 16, 1024),
                      fw_desc(kt + (kk >> 2) * (FT_KV_BYTES / 2) + (kk & 3) * 32, 16, 1024), kk);
        fw_commit();
        fw_wait0();
        ft_fence_operands(sacc);
        float (&sc)[16][4] = *reinterpret_cast<float (*)[16][4]>(sacc);
        const bool need_mask = k0 + FT_BK - 1 > wq0 || (p.window > 0 && wq0 + 63 - k0 >= p.window) ||
                               k0 + FT_BK > kend;
        if (need_mask)
            fa_mask_tile<16>(sc, k0, tq, qp0, qp1, kend, p.window);
        float a0, a1;
        fa_softmax_step<16>(sc, m0, m1, l0, l1, a0, a1);
#pragma unroll
        for (int d = 0; d < 16; d++) {
            o[4 * d + 0] *= a0;
            o[4 * d + 1] *= a0;
            o[4 * d + 2] *= a1;
            o[4 * d + 3] *= a1;
        }
        uint32_t pa[8][4];
#pragma unroll
        for (int kk = 0; kk < 8; kk++) {
            pa[kk][0] = fa_pack(sc[2 * kk][0], sc[2 * kk][1]);
            pa[kk][1] = fa_pack(sc[2 * kk][2], sc[2 * kk][3]);
            pa[kk][2] = fa_pack(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            pa[kk][3] = fa_pack(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
        }
        mbar_wait(&full_v[s], ph);
        ft_fence_operands(o);   /* the rescale and P's packing stay before wgmma.fence */
#pragma unroll
        for (int kk = 0; kk < 8; kk++)
            asm volatile("" : "+r"(pa[kk][0]), "+r"(pa[kk][1]), "+r"(pa[kk][2]), "+r"(pa[kk][3])::"memory");
        fw_fence();
#pragma unroll
        for (int kk = 0; kk < 8; kk++)
            fw_mma_rs(o, pa[kk], fw_desc(vt + kk * 16 * 128, FT_V_LBO, FW_V_SBO));
        fw_commit();
        fw_wait0();
        ft_fence_operands(o);
        if (lane == 0)
            mbar_arrive(&empty[s]);
    }
    if (!has_q)
        return;

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
    const int r0 = t_first + wrow + g, r1 = r0 + 8;
#pragma unroll
    for (int d = 0; d < 16; d++) {
        const int c = h * D + d * 8 + 2 * tq;
        if (r0 < p.n)
            *(uint32_t *)(p.out + (size_t)r0 * hd_all + c) = fa_pack(o[4 * d] * i0, o[4 * d + 1] * i0);
        if (r1 < p.n)
            *(uint32_t *)(p.out + (size_t)r1 * hd_all + c) = fa_pack(o[4 * d + 2] * i1, o[4 * d + 3] * i1);
    }
}

static kern_tmap_encode_fn ft_lookup(void)
{
    void *f = NULL;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
        (void)cudaGetLastError();
        f = NULL;
    }
    return (kern_tmap_encode_fn)f;
}

kern_tmap_encode_fn kern_tmap_encoder(void)
{
    static const kern_tmap_encode_fn fn = ft_lookup();   /* looked up once (thread-safe static initialisation) */
    return fn;
}

/* A bf16 tensor map of `rank` dims (innermost first; strides in bytes of dims 1..rank-1) with
 * 128-byte swizzled boxes; what lies past dims reads as zero. */
static int ft_map(CUtensorMap *m, const void *base, int rank, const cuuint64_t *dims, const cuuint64_t *strides,
                  const cuuint32_t *box, const char *what, struct bora_err *err)
{
    kern_tmap_encode_fn enc = kern_tmap_encoder();
    if (!enc)
        return bora_errf(err, -EIO, "prefill attention: the driver has no cuTensorMapEncodeTiled");
    const cuuint32_t one[3] = { 1, 1, 1 };
    CUresult r = enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, (cuuint32_t)rank, (void *)base, dims, strides, box, one,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return bora_errf(err, -EIO, "prefill attention: tensor map of %s refused (CUresult %d)", what, (int)r);
    return 0;
}

/* The TMA kernel reads q, K and V through tensor maps: 16-byte aligned bases and rows. */
static bool ft_usable(const struct fa_params &p)
{
    return ((uintptr_t)p.q | (uintptr_t)p.kc | (uintptr_t)p.vc) % 16 == 0 && kern_tmap_encoder() != NULL;
}

template <int STAGES>
static int ft_launch(const struct fa_params &p, cudaStream_t s, struct bora_err *err)
{
    constexpr int D = 128;
    struct ft_maps maps;
    const cuuint64_t qd[2] = { (cuuint64_t)p.n_heads * D, (cuuint64_t)p.n };
    const cuuint64_t qs[1] = { (cuuint64_t)p.n_heads * D * 2 };
    const cuuint32_t qb[2] = { 64, 64 };
    const cuuint64_t kd[3] = { D, (cuuint64_t)(p.pos0 + p.n), (cuuint64_t)p.n_kv };
    const cuuint64_t ks[2] = { D * 2, (cuuint64_t)p.max_ctx * D * 2 };
    const cuuint32_t kb[3] = { 64, FT_BK, 1 };
    int rc;
    if ((rc = ft_map(&maps.q, p.q, 2, qd, qs, qb, "q", err)) || (rc = ft_map(&maps.k, p.kc, 3, kd, ks, kb, "K", err)) ||
        (rc = ft_map(&maps.v, p.vc, 3, kd, ks, kb, "V", err)))
        return rc;
    CUDA_CHECK(cudaFuncSetAttribute(ft_kernel<STAGES>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)ft_smem(STAGES)));
    if ((p.n + FW_BQ - 1) / FW_BQ > 65535)
        return bora_errf(err, -EINVAL, "prefill attention: %d queries in one launch", p.n);
    dim3 grid(p.n_heads, (p.n + FW_BQ - 1) / FW_BQ);
    CUDA_CHECK(kern_launch(ft_kernel<STAGES>, grid, dim3(FT_THREADS), ft_smem(STAGES), s, maps, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* Key splits for the narrow kernel: a->splits when set, else (automatic, with a workspace) enough
 * that the query tiles × splits fill the GPU twice, each split at least FA_SPLIT_MIN_TILES key
 * tiles long and all of them fitting the workspace; 1 = none. Few queries over a long cache (a
 * chat turn after a cached conversation, the last layer's one row) otherwise leave most SMs
 * idle while n_heads blocks walk every key. */
#define FA_SPLIT_MIN_TILES 4
#define FA_SPLIT_MAX 32

static int fa_splits(const struct kern_pf_attn_args *a, int sms)
{
    const long row_bytes = (long)a->n * a->n_heads * (a->head_dim * 4 + 8);   /* a split's rows */
    const long fit = a->work ? (long)(a->work_bytes / (size_t)row_bytes) : 0;
    if (a->splits >= 1)
        return a->splits <= fit ? a->splits : 1;
    const long blocks = (long)a->n_heads * ((a->n + FA_WARPS * 16 - 1) / (FA_WARPS * 16));
    long span = (a->pos0 + a->n + FA_BK - 1) / FA_BK;   /* key tiles of the longest query tile */
    if (a->window > 0 && span > (a->window + FA_WARPS * 16) / FA_BK + 2)
        span = (a->window + FA_WARPS * 16) / FA_BK + 2;
    long want = (2L * sms + blocks - 1) / blocks;
    if (want > span / FA_SPLIT_MIN_TILES)
        want = span / FA_SPLIT_MIN_TILES;
    if (want > fit)
        want = fit;
    if (want > FA_SPLIT_MAX)
        want = FA_SPLIT_MAX;
    return want >= 2 ? (int)want : 1;
}

extern "C" int kern_pf_attention(const struct kern_pf_attn_args *a, struct CUstream_st *stream, struct bora_err *err)
{
    if (a->n_kv <= 0 || a->n_heads % a->n_kv)
        return bora_errf(err, -EINVAL, "prefill attention: %d query heads not a multiple of %d kv heads", a->n_heads,
                         a->n_kv);
    if (a->n <= 0 || a->pos0 < 0 || a->pos0 + a->n > a->max_ctx)
        return bora_errf(err, -EINVAL, "prefill attention: %d queries at %d outside the %d-token cache", a->n, a->pos0,
                         a->max_ctx);
    struct fa_params p;
    p.q = a->q;
    p.kc = a->k_cache;
    p.vc = a->v_cache;
    p.out = a->out;
    p.n = a->n;
    p.pos0 = a->pos0;
    p.max_ctx = a->max_ctx;
    p.n_heads = a->n_heads;
    p.n_kv = a->n_kv;
    p.window = a->window;
    p.splits = 1;
    p.part_o = p.part_ml = NULL;
    cudaStream_t s = (cudaStream_t)stream;
    if (a->splits < 0 || (a->splits > 1 && !a->work))
        return bora_errf(err, -EINVAL, "prefill attention: %d key splits%s", a->splits,
                         a->splits > 1 ? " without a workspace" : "");
    if (a->tile < KERN_PF_ATTN_AUTO || a->tile > KERN_PF_ATTN_WGMMA)
        return bora_errf(err, -EINVAL, "prefill attention: block shape %d (0 auto, 1 narrow, 2 wide, 3 wgmma)",
                         a->tile);
    int tile = a->tile;
    const int sms = kern_sm_count();
    if (tile == KERN_PF_ATTN_AUTO) {
        const long wide_blocks = (long)a->n_heads * ((a->n + FA2_BQ - 1) / FA2_BQ);
        tile = wide_blocks >= 2L * sms ? KERN_PF_ATTN_WIDE : KERN_PF_ATTN_NARROW;
        if (a->head_dim == 128 && wide_blocks >= sms && ft_usable(p))   /* a block an SM: the wgmma blocks */
            tile = KERN_PF_ATTN_WGMMA;
    }
    if (tile == KERN_PF_ATTN_WGMMA) {
        if (a->head_dim != 128)
            return bora_errf(err, -EINVAL, "prefill attention: the wgmma blocks need head_dim 128 (got %d)",
                             a->head_dim);
        if (!kern_tmap_encoder())
            return bora_errf(err, -ENOTSUP, "prefill attention: the wgmma blocks need the driver's "
                                            "cuTensorMapEncodeTiled, which this driver does not offer");
        if (!ft_usable(p))
            return bora_errf(err, -EINVAL, "prefill attention: the wgmma blocks need 16-byte aligned q, K and V");
        return ft_launch<FT_STAGES>(p, s, err);
    }
    if (tile == KERN_PF_ATTN_WIDE) {
        switch (a->head_dim) {
        case 16: return fa2_launch<16>(p, s, err);
        case 32: return fa2_launch<32>(p, s, err);
        case 64: return fa2_launch<64>(p, s, err);
        case 128: return fa2_launch<128>(p, s, err);
        }
    } else {
        p.splits = fa_splits(a, sms);
        if (p.splits > 1) {
            p.part_o = a->work;
            p.part_ml = a->work + (size_t)p.splits * a->n * a->n_heads * a->head_dim;
        }
        switch (a->head_dim) {
        case 16: return fa_launch<16, FA_WARPS>(p, s, err);
        case 32: return fa_launch<32, FA_WARPS>(p, s, err);
        case 64: return fa_launch<64, FA_WARPS>(p, s, err);
        case 128: return fa_launch<128, FA_WARPS>(p, s, err);
        }
    }
    return bora_errf(err, -EINVAL, "prefill attention: head_dim %d not supported (16, 32, 64, 128)", a->head_dim);
}
