/* prefill.cu — the row kernels of a prefill chunk (one block per token; SwiGLU several tokens a
 * block where its scales fit in registers): embedding, residual add
 * + RMSNorm + activation quantization, QKV scaling + RoPE + KV-cache write, SwiGLU +
 * quantization. Rows whose length is a multiple of 8 take the vector kernels: 16-byte loads,
 * several in flight per thread, the row kept in shared memory between the reduction and the
 * quantization so global memory is read once; other lengths take plain scalar kernels.
 * Budget ≈ bytes moved at ≥ 60 % of the streaming-read bandwidth (≈ 0.5 µs per MB of rows). */
#include <cuda_bf16.h>
#include <math.h>

#include "kernels/kern_util.cuh"
#include "kernels/kern_rope.cuh"
#include "kernels/prefill.h"

#define PF_THREADS 256
#define PF_VEC_THREADS 256
#define PF_UNROLL 4          /* 16-byte loads in flight per thread in the vector kernels */
#define PF_SMEM_DEFAULT (32 * 1024)   /* above this, raise the kernel's dynamic shared-memory limit (48 KB minus static) */

__device__ __forceinline__ float pf_block_max(float v, float *scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = kern_warp_max(v);
    __syncthreads();
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.f;
    return kern_warp_max(t);
}

__device__ __forceinline__ uint8_t pf_to_e4m3(float v)
{
    return (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}

__device__ __forceinline__ float pf_raw(const struct kern_raw &r, int rows, int t, int c, float ts)
{
    return kern_bf16(r.raw[(size_t)t * rows + c]) * r.w_scale[c] * ts;
}

/* Writes row t of out from the values f(c) for c < cols: FP8 with a per-token scale (two passes
 * over f), BF16 in one. `scratch` holds 32 floats. */
template <typename F>
__device__ __forceinline__ void pf_store_row(const struct kern_act &out, int t, int cols, F f, float *scratch)
{
    if (out.dtype == BORA_DT_BF16) {
        uint16_t *o = (uint16_t *)out.q + (size_t)t * cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            o[c] = kern_f32_to_bf16(f(c));
        return;
    }
    float amax = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        amax = fmaxf(amax, fabsf(f(c)));
    amax = pf_block_max(amax, scratch);
    const float s = amax > 0.f ? amax / KERN_FP8_MAX : 1.f;
    const float inv = 1.f / s;
    uint8_t *o = (uint8_t *)out.q + (size_t)t * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        o[c] = pf_to_e4m3(f(c) * inv);
    if (threadIdx.x == 0)
        out.scale[t] = s;
}


/* silu(g) = g · sigmoid(g) with the hardware's exp2 and reciprocal (2 ulp): an IEEE division is
 * a dozen instructions, and SwiGLU's issue rate is one of its limits. For g below ≈ -88 the
 * denominator is infinite and the result 0, silu's limit. */
__device__ __forceinline__ float pf_silu(float g)
{
    return __fdividef(g, 1.f + __expf(-g));
}

/* ---- vector helpers (8 elements = one 16-byte bf16 load) ---- */

__device__ __forceinline__ void pf_unpack8(uint4 v, float f[8])
{
    f[0] = kern_bf16_lo(v.x); f[1] = kern_bf16_hi(v.x);
    f[2] = kern_bf16_lo(v.y); f[3] = kern_bf16_hi(v.y);
    f[4] = kern_bf16_lo(v.z); f[5] = kern_bf16_hi(v.z);
    f[6] = kern_bf16_lo(v.w); f[7] = kern_bf16_hi(v.w);
}
__device__ __forceinline__ uint32_t pf_bf2(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);   /* round to nearest even, lo in the low half */
    return *reinterpret_cast<uint32_t *>(&v);
}
__device__ __forceinline__ uint4 pf_pack8(const float f[8])
{
    return make_uint4(pf_bf2(f[0], f[1]), pf_bf2(f[2], f[3]), pf_bf2(f[4], f[5]), pf_bf2(f[6], f[7]));
}
__device__ __forceinline__ uint32_t pf_e4m3x2(float lo, float hi)
{
    return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(lo, hi), __NV_SATFINITE, __NV_E4M3);
}
__device__ __forceinline__ void pf_ld8f(const float *p, float f[8])
{
    float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void pf_st8f(float *p, const float f[8])
{
    ((float4 *)p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    ((float4 *)p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}

/* SwiGLU of one 8-group: gate/up pairs a (outputs 0..3) and b (4..7) as the GEMM left them, w the
 * 16 per-column scales, ts the token's scale; h = silu(gate) × up, and amax takes their largest |h|. */
__device__ __forceinline__ void pf_swiglu8(uint4 ra, uint4 rb, const float w[16], float ts, float h[8], float &amax)
{
    float a[8], b[8];
    pf_unpack8(ra, a);
    pf_unpack8(rb, b);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float g0 = a[2 * i] * w[2 * i] * ts, u0 = a[2 * i + 1] * w[2 * i + 1] * ts;
        float g1 = b[2 * i] * w[8 + 2 * i] * ts, u1 = b[2 * i + 1] * w[8 + 2 * i + 1] * ts;
        h[i] = pf_silu(g0) * u0;
        h[4 + i] = pf_silu(g1) * u1;
    }
#pragma unroll
    for (int i = 0; i < 8; i++)
        amax = fmaxf(amax, fabsf(h[i]));
}

/* Writes row t of out from the row in shared memory (cols % 8 == 0; each thread reads back the
 * 8-groups it wrote, so no barrier is needed before the block reduction inside). */
__device__ __forceinline__ void pf_finish_row(const struct kern_act &out, int t, int cols, const float *row,
                                              float amax, float *scratch)
{
    const int n8 = cols / 8;
    if (out.dtype == BORA_DT_BF16) {
        uint4 *o = (uint4 *)((uint16_t *)out.q + (size_t)t * cols);
        for (int c8 = threadIdx.x; c8 < n8; c8 += blockDim.x) {
            float f[8];
            pf_ld8f(row + 8 * c8, f);
            o[c8] = pf_pack8(f);
        }
        return;
    }
    amax = pf_block_max(amax, scratch);
    const float s = amax > 0.f ? amax / KERN_FP8_MAX : 1.f, inv = 1.f / s;
    uint2 *o = (uint2 *)((uint8_t *)out.q + (size_t)t * cols);
    for (int c8 = threadIdx.x; c8 < n8; c8 += blockDim.x) {
        float f[8];
        pf_ld8f(row + 8 * c8, f);
        uint32_t lo = pf_e4m3x2(f[0] * inv, f[1] * inv) | (pf_e4m3x2(f[2] * inv, f[3] * inv) << 16);
        uint32_t hi = pf_e4m3x2(f[4] * inv, f[5] * inv) | (pf_e4m3x2(f[6] * inv, f[7] * inv) << 16);
        o[c8] = make_uint2(lo, hi);
    }
    if (threadIdx.x == 0)
        out.scale[t] = s;
}

/* ---- register-resident rows: each thread keeps its NPT 8-groups (c8 = threadIdx.x + k ·
 * blockDim.x) in registers between the reduction and the store, so there is no shared-memory
 * round trip and no shared memory limiting the blocks per SM; all NPT loads go out before the
 * first use. For rows of at most NPT · 8 · PF_VEC_THREADS elements. */

#define PF_REG_MAX 8   /* largest NPT instantiated */

template <int NPT>
__device__ __forceinline__ void pf_finish_row_reg(const struct kern_act &out, int t, int n8, float v[NPT][8],
                                                  float amax, float *scratch)
{
    if (out.dtype == BORA_DT_BF16) {
        uint4 *o = (uint4 *)((uint16_t *)out.q + (size_t)t * n8 * 8);
#pragma unroll
        for (int k = 0; k < NPT; k++) {
            const int c8 = threadIdx.x + k * blockDim.x;
            if (c8 < n8)
                o[c8] = pf_pack8(v[k]);
        }
        return;
    }
    amax = pf_block_max(amax, scratch);
    const float s = amax > 0.f ? amax / KERN_FP8_MAX : 1.f, inv = 1.f / s;
    uint2 *o = (uint2 *)((uint8_t *)out.q + (size_t)t * n8 * 8);
#pragma unroll
    for (int k = 0; k < NPT; k++) {
        const int c8 = threadIdx.x + k * blockDim.x;
        if (c8 < n8) {
            const float *f = v[k];
            uint32_t lo = pf_e4m3x2(f[0] * inv, f[1] * inv) | (pf_e4m3x2(f[2] * inv, f[3] * inv) << 16);
            uint32_t hi = pf_e4m3x2(f[4] * inv, f[5] * inv) | (pf_e4m3x2(f[6] * inv, f[7] * inv) << 16);
            o[c8] = make_uint2(lo, hi);
        }
    }
    if (threadIdx.x == 0)
        out.scale[t] = s;
}

template <int NPT>
__global__ void pf_add_norm_quant_reg(float *x, struct kern_raw delta, const float *norm_w, float eps,
                                      struct kern_act out, int dim)
{
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, n8 = dim / 8;
    float *xr = x + (size_t)t * dim;
    const float ts = delta.t_scale ? delta.t_scale[t] : 1.f;
    const uint4 *raw = delta.raw ? (const uint4 *)(delta.raw + (size_t)t * dim) : NULL;
    float v[NPT][8];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < NPT; k++) {
        const int c8 = threadIdx.x + k * blockDim.x;
        if (c8 < n8) {
            pf_ld8f(xr + 8 * c8, v[k]);
            if (raw) {
                float r[8], w[8];
                pf_unpack8(raw[c8], r);
                pf_ld8f(delta.w_scale + 8 * c8, w);
#pragma unroll
                for (int i = 0; i < 8; i++)
                    v[k][i] += r[i] * w[i] * ts;
                pf_st8f(xr + 8 * c8, v[k]);
            }
#pragma unroll
            for (int i = 0; i < 8; i++)
                ss += v[k][i] * v[k][i];
        }
    }
    if (!norm_w)
        return;
    ss = kern_block_sum(ss, scratch);
    const float rstd = rsqrtf(ss / (float)dim + eps);
    float amax = 0.f;
#pragma unroll
    for (int k = 0; k < NPT; k++) {
        const int c8 = threadIdx.x + k * blockDim.x;
        if (c8 < n8) {
            float w[8];
            pf_ld8f(norm_w + 8 * c8, w);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                v[k][i] = v[k][i] * rstd * w[i];
                amax = fmaxf(amax, fabsf(v[k][i]));
            }
        }
    }
    pf_finish_row_reg<NPT>(out, t, n8, v, amax, scratch);
}

template <int NPT>
__global__ void pf_quant_reg(const uint16_t *in, struct kern_act out, int cols)
{
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, n8 = cols / 8;
    const uint4 *r = (const uint4 *)(in + (size_t)t * cols);
    float v[NPT][8];
    float amax = 0.f;
#pragma unroll
    for (int k = 0; k < NPT; k++) {
        const int c8 = threadIdx.x + k * blockDim.x;
        if (c8 < n8) {
            pf_unpack8(r[c8], v[k]);
#pragma unroll
            for (int i = 0; i < 8; i++)
                amax = fmaxf(amax, fabsf(v[k][i]));
        }
    }
    pf_finish_row_reg<NPT>(out, t, n8, v, amax, scratch);
}

/* The instance of a register-resident kernel (k1, k2, k4, k8 = NPT 1, 2, 4, 8) whose NPT covers
 * n8 groups per row at PF_VEC_THREADS threads, or nullptr when the row is longer. */
template <typename F>
static F pf_pick_reg(int n8, F k1, F k2, F k4, F k8)
{
    const int need = (n8 + PF_VEC_THREADS - 1) / PF_VEC_THREADS;
    return need <= 1 ? k1 : need <= 2 ? k2 : need <= 4 ? k4 : need <= PF_REG_MAX ? k8 : nullptr;
}

static int pf_smem_for(const void *k, size_t bytes, struct bora_err *err)
{
    if (bytes > 200 * 1024)
        return bora_errf(err, -EINVAL, "prefill: a row of %zu bytes does not fit in shared memory", bytes);
    if (bytes > PF_SMEM_DEFAULT)
        CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 0;
}

__global__ void pf_add_norm_quant_vec(float *x, struct kern_raw delta, const float *norm_w, float eps,
                                      struct kern_act out, int dim)
{
    extern __shared__ float4 pf_row4[];
    float *row = (float *)pf_row4;
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, n8 = dim / 8;
    float *xr = x + (size_t)t * dim;
    const float ts = delta.t_scale ? delta.t_scale[t] : 1.f;
    const uint4 *raw = delta.raw ? (const uint4 *)(delta.raw + (size_t)t * dim) : NULL;
    float ss = 0.f;
#pragma unroll 4
    for (int c8 = threadIdx.x; c8 < n8; c8 += blockDim.x) {
        float v[8];
        pf_ld8f(xr + 8 * c8, v);
        if (raw) {
            float r[8], w[8];
            pf_unpack8(raw[c8], r);
            pf_ld8f(delta.w_scale + 8 * c8, w);
#pragma unroll
            for (int i = 0; i < 8; i++)
                v[i] += r[i] * w[i] * ts;
            pf_st8f(xr + 8 * c8, v);
        }
#pragma unroll
        for (int i = 0; i < 8; i++)
            ss += v[i] * v[i];
        pf_st8f(row + 8 * c8, v);
    }
    if (!norm_w)
        return;
    ss = kern_block_sum(ss, scratch);
    const float rstd = rsqrtf(ss / (float)dim + eps);
    float amax = 0.f;
    for (int c8 = threadIdx.x; c8 < n8; c8 += blockDim.x) {
        float v[8], w[8];
        pf_ld8f(row + 8 * c8, v);
        pf_ld8f(norm_w + 8 * c8, w);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            v[i] = v[i] * rstd * w[i];
            amax = fmaxf(amax, fabsf(v[i]));
        }
        pf_st8f(row + 8 * c8, v);
    }
    pf_finish_row(out, t, dim, row, amax, scratch);
}

__global__ void pf_quant_vec(const uint16_t *in, struct kern_act out, int cols)
{
    extern __shared__ float4 pf_row4[];
    float *row = (float *)pf_row4;
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, n8 = cols / 8;
    const uint4 *r = (const uint4 *)(in + (size_t)t * cols);
    float amax = 0.f;
#pragma unroll 4
    for (int c8 = threadIdx.x; c8 < n8; c8 += blockDim.x) {
        float v[8];
        pf_unpack8(r[c8], v);
#pragma unroll
        for (int i = 0; i < 8; i++)
            amax = fmaxf(amax, fabsf(v[i]));
        pf_st8f(row + 8 * c8, v);
    }
    pf_finish_row(out, t, cols, row, amax, scratch);
}

__global__ void pf_swiglu_quant_vec(struct kern_raw gu, struct kern_act out, int hid)
{
    extern __shared__ float4 pf_row4[];
    float *row = (float *)pf_row4;
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, n8 = hid / 8;
    const float ts = gu.t_scale ? gu.t_scale[t] : 1.f;
    const uint4 *r = (const uint4 *)(gu.raw + (size_t)t * 2 * hid);
    float amax = 0.f;
#pragma unroll 4
    for (int c8 = threadIdx.x; c8 < n8; c8 += blockDim.x) {
        const uint4 ra = r[2 * c8], rb = r[2 * c8 + 1];
        float w[16], h[8];
        pf_ld8f(gu.w_scale + 16 * c8, w);
        pf_ld8f(gu.w_scale + 16 * c8 + 8, w + 8);
        pf_swiglu8(ra, rb, w, ts, h, amax);
        pf_st8f(row + 8 * c8, h);
    }
    pf_finish_row(out, t, hid, row, amax, scratch);
}

/* SwiGLU + quantization, several tokens a block: each thread keeps the per-column scales of its NG
 * 8-groups (c8 = threadIdx.x + k · PF_SWT) in registers for the block's tokens, instead of every
 * token's block reading them again (8 bytes an output, the L1 pipe's main load in the one-token
 * kernel), and loads the next token's gate/up row while this one is reduced and quantized. One
 * block an SM, each walking n / SMs tokens. Same arithmetic per element as pf_swiglu_quant_vec,
 * so the same output bits. H200 23:09 UTC, 7B FP8 at 2,048 tokens: 1.96 ms a prefill against
 * 2.50 for pf_swiglu_quant_vec (which Medium 3.5's 28,672 columns still take: two 8-groups a
 * thread already fill the 64 registers of a 1,024-thread block, with a 16-byte spill). It must
 * run with PF_SWT threads: pf_finish_row reads the row back with a stride of blockDim.x. The same
 * scheme for the residual add + RMSNorm (512 threads, two blocks an SM) was slower there: 2.12 ms
 * against 1.84 (23:12 UTC), the blocks' tokens walked one after another; so was a norm block of two tokens
 * side by side, reading the scales and weights once for both (2.01 against 1.82, 23:18 UTC). */
#define PF_SWT 1024   /* threads */

template <int NG>
__global__ void __launch_bounds__(PF_SWT, 1) pf_swiglu_quant_tok(struct kern_raw gu, struct kern_act out, int hid,
                                                                 int n, int tpb)
{
    extern __shared__ float4 pf_row4[];
    float *row = (float *)pf_row4;
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int n8 = hid / 8, t0 = blockIdx.x * tpb, t1 = min(n, t0 + tpb);
    float w[NG][16];
#pragma unroll
    for (int k = 0; k < NG; k++) {
        const int c8 = threadIdx.x + k * PF_SWT;
        if (c8 < n8) {
            pf_ld8f(gu.w_scale + 16 * c8, w[k]);
            pf_ld8f(gu.w_scale + 16 * c8 + 8, w[k] + 8);
        }
    }
    uint4 ra[NG], rb[NG];
    auto load = [&](int t) {
        const uint4 *r = (const uint4 *)(gu.raw + (size_t)t * 2 * hid);
#pragma unroll
        for (int k = 0; k < NG; k++) {
            const int c8 = threadIdx.x + k * PF_SWT;
            if (c8 < n8) {
                ra[k] = r[2 * c8];
                rb[k] = r[2 * c8 + 1];
            }
        }
    };
    if (t0 < t1)
        load(t0);
    for (int t = t0; t < t1; t++) {
        const float ts = gu.t_scale ? gu.t_scale[t] : 1.f;
        float amax = 0.f;
#pragma unroll
        for (int k = 0; k < NG; k++) {
            const int c8 = threadIdx.x + k * PF_SWT;
            if (c8 < n8) {
                float h[8];
                pf_swiglu8(ra[k], rb[k], w[k], ts, h, amax);
                pf_st8f(row + 8 * c8, h);
            }
        }
        if (t + 1 < t1)
            load(t + 1);
        /* reads back only this thread's 8-groups, so the next token's writes need no barrier */
        pf_finish_row(out, t, hid, row, amax, scratch);
    }
}

/* ---- embedding ---- */

__global__ void pf_embed_kernel(float *x, struct kern_mat emb, const int32_t *ids, int *bad)
{
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, cols = emb.cols;
    const int id = ids[t];
    float *xr = x + (size_t)t * cols;
    if (id < 0 || id >= emb.rows) {
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            xr[c] = 0.f;
        if (threadIdx.x == 0)
            *bad = 1;
        return;
    }
    const float s = emb.scale * (emb.row_scale ? emb.row_scale[id] : 1.f);
    if (emb.dtype == BORA_DT_F8_E4M3) {
        const uint8_t *w = (const uint8_t *)emb.w + (size_t)id * cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            xr[c] = kern_e4m3(w[c]) * s;
    } else {
        const uint16_t *w = (const uint16_t *)emb.w + (size_t)id * cols;
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            xr[c] = kern_bf16(w[c]) * s;
    }
}

extern "C" int kern_pf_embed(float *x, const struct kern_mat *emb, const int32_t *d_ids, int n, int *d_bad,
                             struct CUstream_st *stream, struct bora_err *err)
{
    if (emb->dtype != BORA_DT_F8_E4M3 && emb->dtype != BORA_DT_BF16)
        return bora_errf(err, -EINVAL, "prefill embed: dtype %s", bora_dtype_name(emb->dtype));
    if (n <= 0)
        return bora_errf(err, -EINVAL, "prefill embed: %d tokens", n);
    CUDA_CHECK(kern_launch(pf_embed_kernel, dim3(n), dim3(PF_THREADS), 0, (cudaStream_t)stream, x, *emb, d_ids, d_bad));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- residual add + RMSNorm + quantization ---- */

__global__ void pf_add_norm_quant_kernel(float *x, struct kern_raw delta, const float *norm_w, float eps,
                                         struct kern_act out, int dim)
{
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x;
    float *xr = x + (size_t)t * dim;
    const float ts = delta.t_scale ? delta.t_scale[t] : 1.f;
    float ss = 0.f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        float v = xr[c];
        if (delta.raw) {
            v += pf_raw(delta, dim, t, c, ts);
            xr[c] = v;
        }
        ss += v * v;
    }
    if (!norm_w)
        return;
    ss = kern_block_sum(ss, scratch);
    const float rstd = rsqrtf(ss / (float)dim + eps);
    pf_store_row(out, t, dim, [&](int c) { return xr[c] * rstd * norm_w[c]; }, scratch);
}

static int pf_check_act(const struct kern_act *a, const char *what, struct bora_err *err)
{
    if (a->dtype == BORA_DT_BF16)
        return 0;
    if (a->dtype == BORA_DT_F8_E4M3 && a->scale)
        return 0;
    return bora_errf(err, -EINVAL, "%s: activations must be BF16 or F8_E4M3 with scales (got %s%s)", what,
                     bora_dtype_name(a->dtype), a->scale ? "" : " without scales");
}

extern "C" int kern_pf_add_norm_quant(float *x, const struct kern_raw *delta, const float *norm_w, float eps,
                                      const struct kern_act *out, int n, int dim, struct CUstream_st *stream,
                                      struct bora_err *err)
{
    struct kern_raw d = { 0, 0, 0 };
    struct kern_act o = { BORA_DT_BF16, 0, 0 };
    if (delta)
        d = *delta;
    if (norm_w) {
        int rc = pf_check_act(out, "prefill norm", err);
        if (rc)
            return rc;
        o = *out;
    }
    if (n <= 0 || dim <= 0)
        return bora_errf(err, -EINVAL, "prefill norm: %d rows of %d", n, dim);
    auto kreg = pf_pick_reg(dim / 8, pf_add_norm_quant_reg<1>, pf_add_norm_quant_reg<2>, pf_add_norm_quant_reg<4>,
                            pf_add_norm_quant_reg<8>);
    if (dim % 8 == 0 && kreg) {
        CUDA_CHECK(kern_launch(kreg, dim3(n), dim3(PF_VEC_THREADS), 0, (cudaStream_t)stream, x, d, norm_w, eps, o, dim));
    } else if (dim % 8 == 0) {
        const size_t smem = (size_t)dim * 4;
        int rc = pf_smem_for((const void *)pf_add_norm_quant_vec, smem, err);
        if (rc)
            return rc;
        CUDA_CHECK(kern_launch(pf_add_norm_quant_vec, dim3(n), dim3(PF_VEC_THREADS), smem, (cudaStream_t)stream, x, d,
                           norm_w, eps, o, dim));
    } else {
        CUDA_CHECK(kern_launch(pf_add_norm_quant_kernel, dim3(n), dim3(PF_THREADS), 0, (cudaStream_t)stream, x, d,
                           norm_w, eps, o, dim));
    }
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- quantization of bf16 rows ---- */

__global__ void pf_quant_kernel(const uint16_t *in, struct kern_act out, int cols)
{
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x;
    const uint16_t *r = in + (size_t)t * cols;
    pf_store_row(out, t, cols, [&](int c) { return kern_bf16(r[c]); }, scratch);
}

extern "C" int kern_pf_quant(const uint16_t *in, const struct kern_act *out, int n, int cols,
                             struct CUstream_st *stream, struct bora_err *err)
{
    int rc = pf_check_act(out, "prefill quant", err);
    if (rc)
        return rc;
    if (n <= 0 || cols <= 0)
        return bora_errf(err, -EINVAL, "prefill quant: %d rows of %d", n, cols);
    auto kreg = pf_pick_reg(cols / 8, pf_quant_reg<1>, pf_quant_reg<2>, pf_quant_reg<4>, pf_quant_reg<8>);
    if (cols % 8 == 0 && kreg) {
        CUDA_CHECK(kern_launch(kreg, dim3(n), dim3(PF_VEC_THREADS), 0, (cudaStream_t)stream, in, *out, cols));
    } else if (cols % 8 == 0) {
        const size_t smem = (size_t)cols * 4;
        if ((rc = pf_smem_for((const void *)pf_quant_vec, smem, err)))
            return rc;
        CUDA_CHECK(kern_launch(pf_quant_vec, dim3(n), dim3(PF_VEC_THREADS), smem, (cudaStream_t)stream, in, *out, cols));
    } else {
        CUDA_CHECK(kern_launch(pf_quant_kernel, dim3(n), dim3(PF_THREADS), 0, (cudaStream_t)stream, in, *out, cols));
    }
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- QKV: scales, RoPE, query scale, KV write ---- */

struct pf_qkv_params {
    struct kern_raw qkv;
    uint16_t *q_out, *kc, *vc;
    uint8_t *kc8, *vc8;   /* an FP8 cache (kc / vc then get its values widened), or NULL */
    int pos0, max_ctx, n_heads, n_kv, hd;
    float q_mult;
    struct kern_rope rope;
};

/* One cached element: bf16 at c16[i], or with an FP8 cache e4m3 at c8[i] and its exact widening
 * at c16[i]. */
__device__ __forceinline__ void pf_kv_put(uint16_t *c16, uint8_t *c8, size_t i, float v)
{
    if (c8) {
        const uint8_t e = kern_f32_to_e4m3(v);
        c8[i] = e;
        c16[i] = (uint16_t)(__float_as_uint(kern_e4m3(e)) >> 16);
    } else {
        c16[i] = kern_f32_to_bf16(v);
    }
}

/* Eight consecutive cached elements (i a multiple of 8), as pf_kv_put. */
__device__ __forceinline__ void pf_kv_put8(uint16_t *c16, uint8_t *c8, size_t i, const float v[8])
{
    if (c8) {
        uint32_t lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            lo |= (uint32_t)kern_f32_to_e4m3(v[k]) << (8 * k);
            hi |= (uint32_t)kern_f32_to_e4m3(v[4 + k]) << (8 * k);
        }
        const uint2 e = make_uint2(lo, hi);
        *(uint2 *)(c8 + i) = e;
        *(uint4 *)(c16 + i) = kern_e4m3x8_to_bf16x8(e);
    } else {
        *(uint4 *)(c16 + i) = pf_pack8(v);
    }
}

__global__ void pf_qkv_post_kernel(struct pf_qkv_params p)
{
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, pos = p.pos0 + t, hd = p.hd, half = hd / 2;
    const int qd = p.n_heads * hd, kvd = p.n_kv * hd, rows = qd + 2 * kvd;
    const float ts = p.qkv.t_scale ? p.qkv.t_scale[t] : 1.f;
    const float qs = kern_query_scale(&p.rope, pos) * p.q_mult;
    uint16_t *qo = p.q_out + (size_t)t * qd;
    for (int i = threadIdx.x; i < (p.n_heads + p.n_kv) * half; i += blockDim.x) {
        const int h = i / half, k = i % half;
        int a, b;
        kern_rope_pair(&p.rope, hd, k, &a, &b);
        float c, s;
        kern_rope_cs(&p.rope, pos, k, &c, &s);
        const int base = h * hd;   /* q heads then k heads: k rows follow q rows */
        const float x0 = pf_raw(p.qkv, rows, t, base + a, ts), x1 = pf_raw(p.qkv, rows, t, base + b, ts);
        const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        if (h < p.n_heads) {
            qo[base + a] = kern_f32_to_bf16(y0 * qs);
            qo[base + b] = kern_f32_to_bf16(y1 * qs);
        } else {
            const size_t r = ((size_t)(h - p.n_heads) * p.max_ctx + pos) * hd;
            pf_kv_put(p.kc, p.kc8, r + a, y0);
            pf_kv_put(p.kc, p.kc8, r + b, y1);
        }
    }
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
        const int h = i / hd, d = i % hd;
        pf_kv_put(p.vc, p.vc8, ((size_t)h * p.max_ctx + pos) * hd + d, pf_raw(p.qkv, rows, t, qd + kvd + i, ts));
    }
}

/* head_dim % 16 == 0: cos/sin once per token in shared memory, 8 elements per 16-byte access. */
__global__ void pf_qkv_post_vec(struct pf_qkv_params p)
{
    extern __shared__ float4 pf_row4[];
    float *cs = (float *)pf_row4;   /* cos (hd/2) then sin (hd/2) */
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x, pos = p.pos0 + t, hd = p.hd, half = hd / 2;
    const int qd = p.n_heads * hd, kvd = p.n_kv * hd, rows = qd + 2 * kvd;
    for (int k = threadIdx.x; k < half; k += blockDim.x)
        kern_rope_cs(&p.rope, pos, k, &cs[k], &cs[half + k]);
    __syncthreads();
    const float ts = p.qkv.t_scale ? p.qkv.t_scale[t] : 1.f;
    const float qs = kern_query_scale(&p.rope, pos) * p.q_mult;
    const uint16_t *raw = p.qkv.raw + (size_t)t * rows;
    const int iph = p.rope.interleaved ? hd / 8 : half / 8;   /* 8-groups per head */
    const int items = (p.n_heads + p.n_kv) * iph;
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
        const int h = it / iph, j = it % iph, base = h * hd;
        const bool isq = h < p.n_heads;
        const float m = isq ? qs : 1.f;
        const size_t kr = isq ? 0 : ((size_t)(h - p.n_heads) * p.max_ctx + pos) * hd;   /* the key's row */
        uint16_t *dst = isq ? p.q_out + (size_t)t * qd + base : p.kc + kr;
        uint8_t *dst8 = isq || !p.kc8 ? nullptr : p.kc8 + kr;
        if (p.rope.interleaved) {
            float e[8], w[8];
            pf_unpack8(*(const uint4 *)(raw + base + 8 * j), e);
            pf_ld8f(p.qkv.w_scale + base + 8 * j, w);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int k = 4 * j + i;
                const float c = cs[k], s = cs[half + k];
                const float x0 = e[2 * i] * w[2 * i] * ts, x1 = e[2 * i + 1] * w[2 * i + 1] * ts;
                e[2 * i] = (x0 * c - x1 * s) * m;
                e[2 * i + 1] = (x0 * s + x1 * c) * m;
            }
            pf_kv_put8(dst, dst8, 8 * j, e);
        } else {
            const int k0 = 8 * j;
            float a[8], b[8], wa[8], wb[8];
            pf_unpack8(*(const uint4 *)(raw + base + k0), a);
            pf_unpack8(*(const uint4 *)(raw + base + half + k0), b);
            pf_ld8f(p.qkv.w_scale + base + k0, wa);
            pf_ld8f(p.qkv.w_scale + base + half + k0, wb);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float c = cs[k0 + i], s = cs[half + k0 + i];
                const float x0 = a[i] * wa[i] * ts, x1 = b[i] * wb[i] * ts;
                a[i] = (x0 * c - x1 * s) * m;
                b[i] = (x0 * s + x1 * c) * m;
            }
            pf_kv_put8(dst, dst8, k0, a);
            pf_kv_put8(dst, dst8, half + k0, b);
        }
    }
    for (int it = threadIdx.x; it < kvd / 8; it += blockDim.x) {
        const int h = (8 * it) / hd, d = (8 * it) % hd;
        float v[8], w[8];
        pf_unpack8(*(const uint4 *)(raw + qd + kvd + 8 * it), v);
        pf_ld8f(p.qkv.w_scale + qd + kvd + 8 * it, w);
#pragma unroll
        for (int i = 0; i < 8; i++)
            v[i] *= w[i] * ts;
        pf_kv_put8(p.vc, p.vc8, ((size_t)h * p.max_ctx + pos) * hd + d, v);
    }
}

extern "C" int kern_pf_qkv_post(const struct kern_qkv_post_args *a, struct CUstream_st *stream, struct bora_err *err)
{
    if (a->n <= 0 || a->head_dim <= 0 || a->head_dim % 2 || a->n_kv <= 0 || a->pos0 < 0 ||
        a->pos0 + a->n > a->max_ctx)
        return bora_errf(err, -EINVAL, "prefill qkv: %d tokens at %d (cache %d), head_dim %d, %d kv heads", a->n,
                         a->pos0, a->max_ctx, a->head_dim, a->n_kv);
    struct pf_qkv_params p;
    p.qkv = a->qkv;
    p.q_out = a->q_out;
    p.kc = a->k_cache;
    p.vc = a->v_cache;
    p.kc8 = a->k8_cache;
    p.vc8 = a->v8_cache;
    if (!p.kc8 != !p.vc8)
        return bora_errf(err, -EINVAL, "prefill qkv: an FP8 cache needs both its K and its V");
    p.pos0 = a->pos0;
    p.max_ctx = a->max_ctx;
    p.n_heads = a->n_heads;
    p.n_kv = a->n_kv;
    p.hd = a->head_dim;
    p.q_mult = a->q_mult;
    p.rope = a->rope;
    if (p.hd % 16 == 0)
        CUDA_CHECK(kern_launch(pf_qkv_post_vec, dim3(a->n), dim3(PF_VEC_THREADS), (size_t)p.hd * 4, (cudaStream_t)stream,
                           p));
    else
        CUDA_CHECK(kern_launch(pf_qkv_post_kernel, dim3(a->n), dim3(PF_THREADS), 0, (cudaStream_t)stream, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- an FP8 KV cache widened for the flash attention ---- */

/* Thread i: 8 elements of K and of V; rows [lo, hi) of every head. */
__global__ void pf_kv_widen_kernel(const uint8_t *k8, const uint8_t *v8, uint16_t *k16, uint16_t *v16, int lo,
                                   int rows, int max_ctx, int hd, size_t n8)
{
    kern_grid_launch_next();
    kern_grid_wait();
    const size_t per_head = (size_t)rows * hd / 8;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n8; i += (size_t)gridDim.x * blockDim.x) {
        const size_t h = i / per_head, e = (i % per_head) * 8;
        const size_t at = (h * max_ctx + lo) * hd + e;
        const uint2 k = *(const uint2 *)(k8 + at), v = *(const uint2 *)(v8 + at);
        *(uint4 *)(k16 + at) = kern_e4m3x8_to_bf16x8(k);
        *(uint4 *)(v16 + at) = kern_e4m3x8_to_bf16x8(v);
    }
}

extern "C" int kern_kv_widen(const uint8_t *k8, const uint8_t *v8, uint16_t *k16, uint16_t *v16, int lo, int hi,
                             int max_ctx, int n_kv, int head_dim, struct CUstream_st *stream, struct bora_err *err)
{
    if (lo < 0 || hi > max_ctx || n_kv <= 0 || head_dim <= 0 || head_dim % 8)
        return bora_errf(err, -EINVAL, "kv widen: rows [%d, %d) of a %d-row cache, %d kv heads of %d", lo, hi, max_ctx,
                         n_kv, head_dim);
    if (lo >= hi)
        return 0;
    const size_t n8 = (size_t)n_kv * (size_t)(hi - lo) * (size_t)head_dim / 8;
    const int threads = 256;
    const size_t want = (n8 + threads - 1) / threads, cap = (size_t)kern_sm_count() * 8;
    const int blocks = (int)(want < cap ? want : cap);
    CUDA_CHECK(kern_launch(pf_kv_widen_kernel, dim3(blocks), dim3(threads), 0, (cudaStream_t)stream, k8, v8, k16, v16,
                           lo, hi - lo, max_ctx, head_dim, n8));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- SwiGLU + quantization ---- */

__global__ void pf_swiglu_quant_kernel(struct kern_raw gu, struct kern_act out, int hid)
{
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    const int t = blockIdx.x;
    const float ts = gu.t_scale ? gu.t_scale[t] : 1.f;
    const uint32_t *r = (const uint32_t *)(gu.raw + (size_t)t * 2 * hid);
    const float2 *ws = (const float2 *)gu.w_scale;
    pf_store_row(out, t, hid,
                 [&](int i) {
                     uint32_t two = r[i];
                     float2 w = ws[i];
                     float g = kern_bf16_lo(two) * w.x * ts, u = kern_bf16_hi(two) * w.y * ts;
                     return pf_silu(g) * u;
                 },
                 scratch);
}

extern "C" int kern_pf_swiglu_quant(const struct kern_raw *gu, const struct kern_act *out, int n, int hid,
                                    struct CUstream_st *stream, struct bora_err *err)
{
    int rc = pf_check_act(out, "prefill swiglu", err);
    if (rc)
        return rc;
    if (n <= 0 || hid <= 0)
        return bora_errf(err, -EINVAL, "prefill swiglu: %d rows of %d", n, hid);
    if (hid % 8 == 0 && hid / 8 <= 2 * PF_SWT) {
        const size_t smem = (size_t)hid * 4;
        const int sms = kern_sm_count(), tpb = (n + sms - 1) / sms, blocks = (n + tpb - 1) / tpb;
        if (hid / 8 <= PF_SWT) {
            if ((rc = pf_smem_for((const void *)pf_swiglu_quant_tok<1>, smem, err)))
                return rc;
            CUDA_CHECK(kern_launch(pf_swiglu_quant_tok<1>, dim3(blocks), dim3(PF_SWT), smem, (cudaStream_t)stream, *gu,
                                   *out, hid, n, tpb));
        } else {
            if ((rc = pf_smem_for((const void *)pf_swiglu_quant_tok<2>, smem, err)))
                return rc;
            CUDA_CHECK(kern_launch(pf_swiglu_quant_tok<2>, dim3(blocks), dim3(PF_SWT), smem, (cudaStream_t)stream, *gu,
                                   *out, hid, n, tpb));
        }
    } else if (hid % 8 == 0) {
        const size_t smem = (size_t)hid * 4;
        if ((rc = pf_smem_for((const void *)pf_swiglu_quant_vec, smem, err)))
            return rc;
        CUDA_CHECK(kern_launch(pf_swiglu_quant_vec, dim3(n), dim3(PF_VEC_THREADS), smem, (cudaStream_t)stream, *gu, *out,
                           hid));
    } else {
        CUDA_CHECK(kern_launch(pf_swiglu_quant_kernel, dim3(n), dim3(PF_THREADS), 0, (cudaStream_t)stream, *gu, *out,
                           hid));
    }
    CUDA_CHECK(cudaGetLastError());
    return 0;
}
