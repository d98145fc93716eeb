/* gemv.cu — the decode GEMV: y = W x for BF16 or FP8 e4m3 weights (per-tensor and per-row
 * scales), fp32 x and accumulation, with fused RMSNorm on x and store / residual-add / SwiGLU
 * epilogues. This is where decode time goes: budget ≥ 90 % of the streaming-read bandwidth.
 *
 * Shape: blocks keep x (normalised) in shared memory in a swizzled layout (conflict-free 16-byte
 * reads); each warp takes units of RR rows from an atomic counter (balanced to one unit) and
 * streams them with 16-byte loads, UU vectors per row in flight, warp-shuffle reduction;
 * optionally a bulk L2 prefetch runs PF iterations ahead. Several shapes (variants) exist: the
 * engine times them on its own matrices at open and keeps the fastest (kern_gemv_variants). */
#include "kernels/kern_util.cuh"


/* A variant: rows per warp, vectors per row per iteration, threads, blocks per SM, L2 prefetch
 * distance (iterations, 0 = none), FP8 decode (0 hardware cvt, 1 integer bit moves). */
/* PF = -1: the pipelined kernel (next batch loaded while this one is used; first batch in
 * flight before the wait for the previous kernel). */
#define GEMV_VARIANTS(X)       \
    X(0, 4, 2, 512, 1, -1, 0)  \
    X(1, 2, 2, 512, 1, -1, 0)  \
    X(2, 4, 1, 512, 1, -1, 0)  \
    X(3, 2, 2, 512, 2, -1, 0)  \
    X(4, 4, 1, 512, 2, -1, 0)  \
    X(5, 2, 1, 512, 2, -1, 0)  \
    X(6, 4, 2, 512, 1, 0, 0)   \
    X(7, 2, 4, 512, 2, 0, 0)   \
    X(8, 4, 4, 256, 2, 0, 1)

/* Bulk-prefetches chunk `chunk` (CH bytes of each row) of the RR rows of `unit` into L2. */
template <int RR, int CH>
__device__ __forceinline__ void gemv_prefetch(const uint8_t *w, size_t row_bytes, int rows, int n_units,
                                              int unit, int chunk, int lane)
{
    if (lane >= RR || unit >= n_units)
        return;
    int r = unit * RR + lane;
    size_t off = (size_t)chunk * CH;
    if (r < rows && off < row_bytes) {
        size_t len = row_bytes - off < CH ? row_bytes - off : CH;
        kern_prefetch_bulk(w + (size_t)r * row_bytes + off, (uint32_t)len);
    }
}

/* Units: warp w first takes unit w (no atomic before its first loads), then asks the counter:
 * unit = total_warps + atomicAdd(counter, 1). The last grab of the launch resets the counter. */
__device__ __forceinline__ int gemv_last_grab(int n_units, int total_warps)
{
    int extra = n_units > total_warps ? n_units - total_warps : 0;
    int grabbing = n_units < total_warps ? n_units : total_warps;
    return extra + grabbing - 1;
}

__device__ __forceinline__ int gemv_grab(int *counter, int n_units, int total_warps)
{
    int lane = threadIdx.x & 31, v = 0;
    if (lane == 0) {
        v = atomicAdd(counter, 1);
        if (v == gemv_last_grab(n_units, total_warps))
            *counter = 0;
    }
    return total_warps + __shfl_sync(0xffffffffu, v, 0);
}

__device__ __forceinline__ int gemv_first_unit(void)
{
    return blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
}

/* Loads x (optionally rms-normalised) into shared memory: element c lives at float4 slot
 * (k × nvec + c / EPV), lane k = (c % EPV) / 4, so that lane-consecutive vectors read
 * consecutive float4s. swz = false stores it linearly. */
template <int EPV>
__device__ __forceinline__ int gemv_xidx(int c, int nvec, bool swz)
{
    if (!swz)
        return c;
    int q = c / EPV, r = c % EPV;
    return (((r >> 2) * nvec + q) << 2) + (r & 3);
}

/* Before the wait: the norm weights (they do not depend on the previous kernel) into nw_s. */
__device__ __forceinline__ void gemv_load_norm(float *nw_s, const float *norm_w, int cols)
{
    if (norm_w)
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            nw_s[c] = norm_w[c];
}

/* Loads x into shared memory in one pass, then (with a norm) scales it there by
 * rsqrt(mean(x^2) + eps) × norm_w: element c lives at float4 slot (k × nvec + c / EPV),
 * k = (c % EPV) / 4, so lane-consecutive vectors read consecutive float4s (swz), else linear. */
template <int EPV>
__device__ void gemv_load_x(float *xs, const float *x, int cols, const float *nw_s, bool norm, float eps,
                            bool swz, float *scratch)
{
    int nvec = cols / EPV;
    float ss = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = x[c];
        ss += v * v;
        xs[gemv_xidx<EPV>(c, nvec, swz)] = v;
    }
    if (norm) {
        ss = kern_block_sum(ss, scratch);   /* synchronizes the block */
        float rstd = rsqrtf(ss / (float)cols + eps);
        for (int c = threadIdx.x; c < cols; c += blockDim.x)
            xs[gemv_xidx<EPV>(c, nvec, swz)] *= rstd * nw_s[c];
    }
    __syncthreads();
}

__device__ __forceinline__ float gemv_scale(float scale, const float *row_scale, int r)
{
    return row_scale ? scale * row_scale[r] : scale;
}

/* post: multiplies every sum (undoes the 2^-8 of the integer FP8 decode). */
template <int MODE, int RR>
__device__ __forceinline__ void gemv_store(float *y, const float (&acc)[RR], int r0, int rows,
                                           float scale, const float *row_scale, float post)
{
    if (MODE == KERN_GEMV_SWIGLU) {
#pragma unroll
        for (int i = 0; i + 1 < RR; i += 2) {
            if (r0 + i + 1 < rows) {
                float g = acc[i] * post * gemv_scale(scale, row_scale, r0 + i);
                float u = acc[i + 1] * post * gemv_scale(scale, row_scale, r0 + i + 1);
                y[(r0 + i) >> 1] = g / (1.f + __expf(-g)) * u;
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < RR; i++) {
            if (r0 + i < rows) {
                float v = acc[i] * post * gemv_scale(scale, row_scale, r0 + i);
                if (MODE == KERN_GEMV_ADD)
                    y[r0 + i] += v;
                else
                    y[r0 + i] = v;
            }
        }
    }
}

/* Four e4m3 bytes → two f16x2 words holding value × 2^-8 (integer ops only): bytes (0, 1) and
 * (2, 3). e4m3 is f16 with one exponent bit fewer: magnitude << 7, sign kept. */
__device__ __forceinline__ void gemv_e4m3x4_f16(uint32_t w, uint32_t &lo, uint32_t &hi)
{
    uint32_t p = __byte_perm(w, 0, 0x1404), q = __byte_perm(w, 0, 0x3424);
    lo = ((p >> 1) & 0x3fff3fffu) | (p & 0x80008000u);
    hi = ((q >> 1) & 0x3fff3fffu) | (q & 0x80008000u);
}

/* dot of one 16-byte weight vector with x already in registers (xv: 4 float4 for FP8, 2 for BF16). */
template <int FP8, int CVT>
__device__ __forceinline__ float gemv_dot_x(uint4 w, const float4 (&xv)[4])
{
    const uint32_t ww[4] = {w.x, w.y, w.z, w.w};
    float s = 0.f;
    if (FP8 && CVT == 0) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float2 a = kern_e4m3x2(ww[k]);
            float2 b = kern_e4m3x2(ww[k] >> 16);
            s = fmaf(a.x, xv[k].x, s);
            s = fmaf(a.y, xv[k].y, s);
            s = fmaf(b.x, xv[k].z, s);
            s = fmaf(b.y, xv[k].w, s);
        }
    } else if (FP8) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t lo, hi;
            gemv_e4m3x4_f16(ww[k], lo, hi);
            float2 a = __half22float2(*reinterpret_cast<__half2 *>(&lo));
            float2 b = __half22float2(*reinterpret_cast<__half2 *>(&hi));
            s = fmaf(a.x, xv[k].x, s);
            s = fmaf(a.y, xv[k].y, s);
            s = fmaf(b.x, xv[k].z, s);
            s = fmaf(b.y, xv[k].w, s);
        }
    } else {
#pragma unroll
        for (int k = 0; k < 2; k++) {
            s = fmaf(kern_bf16_lo(ww[2 * k]), xv[k].x, s);
            s = fmaf(kern_bf16_hi(ww[2 * k]), xv[k].y, s);
            s = fmaf(kern_bf16_lo(ww[2 * k + 1]), xv[k].z, s);
            s = fmaf(kern_bf16_hi(ww[2 * k + 1]), xv[k].w, s);
        }
    }
    return s;
}

/* dot of one 16-byte weight vector with the matching x from shared memory. */
template <int FP8, int CVT>
__device__ __forceinline__ float gemv_dot(uint4 w, const float4 *xs, int vi, int nvec)
{
    const uint32_t ww[4] = {w.x, w.y, w.z, w.w};
    float s = 0.f;
    if (FP8 && CVT == 0) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 xv = xs[k * nvec + vi];
            float2 a = kern_e4m3x2(ww[k]);
            float2 b = kern_e4m3x2(ww[k] >> 16);
            s = fmaf(a.x, xv.x, s);
            s = fmaf(a.y, xv.y, s);
            s = fmaf(b.x, xv.z, s);
            s = fmaf(b.y, xv.w, s);
        }
    } else if (FP8) {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 xv = xs[k * nvec + vi];
            uint32_t lo, hi;
            gemv_e4m3x4_f16(ww[k], lo, hi);
            float2 a = __half22float2(*reinterpret_cast<__half2 *>(&lo));
            float2 b = __half22float2(*reinterpret_cast<__half2 *>(&hi));
            s = fmaf(a.x, xv.x, s);
            s = fmaf(a.y, xv.y, s);
            s = fmaf(b.x, xv.z, s);
            s = fmaf(b.y, xv.w, s);
        }
    } else {
#pragma unroll
        for (int k = 0; k < 2; k++) {
            float4 xv = xs[k * nvec + vi];
            s = fmaf(kern_bf16_lo(ww[2 * k]), xv.x, s);
            s = fmaf(kern_bf16_hi(ww[2 * k]), xv.y, s);
            s = fmaf(kern_bf16_lo(ww[2 * k + 1]), xv.z, s);
            s = fmaf(kern_bf16_hi(ww[2 * k + 1]), xv.w, s);
        }
    }
    return s;
}

template <int FP8, int MODE, int RR, int UU, int TH, int BPS, int PF, int CVT>
__global__ void __launch_bounds__(TH, BPS)
gemv_vec_kernel(const uint8_t *__restrict__ w, int rows, int cols, float scale,
                const float *__restrict__ row_scale, const float *x, float *y,
                const float *__restrict__ norm_w, float eps, int *counter)
{
    extern __shared__ float4 xs4[];
    __shared__ float scratch[32];
    constexpr int EPV = FP8 ? 16 : 8;
    constexpr int CH = 32 * UU * 16;
    const int nvec = cols / EPV;
    const size_t row_bytes = (size_t)cols * (FP8 ? 1 : 2);
    const int lane = threadIdx.x & 31;
    const int n_units = (rows + RR - 1) / RR;
    const int total_warps = gridDim.x * (blockDim.x >> 5);
    const int n_chunks = (int)((row_bytes + CH - 1) / CH);

    float *nw_s = (float *)xs4 + cols;
    kern_grid_launch_next();
    int unit = gemv_first_unit();
    /* weights do not depend on the previous kernel: start streaming them now */
#pragma unroll
    for (int c = 0; c < PF; c++)
        gemv_prefetch<RR, CH>(w, row_bytes, rows, n_units, unit, c, lane);
    gemv_load_norm(nw_s, norm_w, cols);
    kern_grid_wait();
    gemv_load_x<EPV>((float *)xs4, x, cols, nw_s, norm_w != NULL, eps, true, scratch);

    while (unit < n_units) {
        int next = gemv_grab(counter, n_units, total_warps);
        const int r0 = unit * RR;
        const uint8_t *base = w + (size_t)r0 * row_bytes;
        float acc[RR];
#pragma unroll
        for (int i = 0; i < RR; i++)
            acc[i] = 0.f;
        int it = 0;
        for (int v0 = lane; v0 < nvec + lane; v0 += 32 * UU, it++) {
            if (PF) {   /* keep the prefetch stream PF chunks ahead, into the next unit */
                int t = it + PF;
                if (t < n_chunks)
                    gemv_prefetch<RR, CH>(w, row_bytes, rows, n_units, unit, t, lane);
                else
                    gemv_prefetch<RR, CH>(w, row_bytes, rows, n_units, next, t - n_chunks, lane);
            }
            uint4 wv[UU][RR];
#pragma unroll
            for (int u = 0; u < UU; u++)
#pragma unroll
                for (int i = 0; i < RR; i++) {
                    int vi = v0 + u * 32;
                    if (vi < nvec && r0 + i < rows)
                        wv[u][i] = kern_ld_stream(base + (size_t)i * row_bytes + (size_t)vi * 16);
                    else
                        wv[u][i] = make_uint4(0, 0, 0, 0);
                }
#pragma unroll
            for (int u = 0; u < UU; u++) {
                int vi = v0 + u * 32;
                if (vi < nvec) {
#pragma unroll
                    for (int i = 0; i < RR; i++)
                        acc[i] += gemv_dot<FP8, CVT>(wv[u][i], xs4, vi, nvec);
                }
            }
        }
#pragma unroll
        for (int i = 0; i < RR; i++)
            acc[i] = kern_warp_sum(acc[i]);
        if (lane == 0)
            gemv_store<MODE, RR>(y, acc, r0, rows, scale, row_scale, FP8 && CVT ? 256.f : 1.f);
        unit = next;
    }
}

/* Loads one batch: vectors v0 + u*32 (u < UU) of the RR rows starting at row r0. */
template <int RR, int UU>
__device__ __forceinline__ void gemv_load_batch(uint4 (&b)[UU][RR], const uint8_t *w, size_t row_bytes, int rows,
                                                int nvec, int r0, int v0)
{
#pragma unroll
    for (int u = 0; u < UU; u++)
#pragma unroll
        for (int i = 0; i < RR; i++) {
            int vi = v0 + u * 32;
            b[u][i] = vi < nvec && r0 + i < rows
                          ? kern_ld_stream(w + (size_t)(r0 + i) * row_bytes + (size_t)vi * 16)
                          : make_uint4(0, 0, 0, 0);
        }
}

/* Pipelined: a warp walks (unit, iteration) pairs, loading the next batch before using the
 * current one; it asks for its next unit one unit ahead and reads the answer only when needed. */
template <int FP8, int MODE, int RR, int UU, int TH, int BPS, int CVT>
__global__ void __launch_bounds__(TH, BPS)
gemv_pipe_kernel(const uint8_t *__restrict__ w, int rows, int cols, float scale,
                 const float *__restrict__ row_scale, const float *x, float *y,
                 const float *__restrict__ norm_w, float eps, int *counter)
{
    extern __shared__ float4 xs4[];
    __shared__ float scratch[32];
    constexpr int EPV = FP8 ? 16 : 8;
    const int nvec = cols / EPV;
    const size_t row_bytes = (size_t)cols * (FP8 ? 1 : 2);
    const int lane = threadIdx.x & 31;
    const int n_units = (rows + RR - 1) / RR;
    const int total_warps = gridDim.x * (blockDim.x >> 5);
    const int n_it = (nvec + 32 * UU - 1) / (32 * UU);

    float *nw_s = (float *)xs4 + cols;
    kern_grid_launch_next();
    int cu = gemv_first_unit();
    int raw = 0;   /* lane 0: the pending grab for the unit after cu */
    uint4 A[UU][RR];
    if (cu < n_units) {   /* weights do not depend on the previous kernel: first batch now */
        gemv_load_batch<RR, UU>(A, w, row_bytes, rows, nvec, cu * RR, lane);
        if (lane == 0)
            raw = atomicAdd(counter, 1);
    }
    gemv_load_norm(nw_s, norm_w, cols);
    kern_grid_wait();
    gemv_load_x<EPV>((float *)xs4, x, cols, nw_s, norm_w != NULL, eps, true, scratch);

    float acc[RR];
#pragma unroll
    for (int i = 0; i < RR; i++)
        acc[i] = 0.f;
    int ci = 0;
    while (cu < n_units) {
        uint4 B[UU][RR];
        int su = cu, si = ci + 1;
        if (si == n_it) {   /* the next batch starts the next unit: collect the pending grab */
            if (lane == 0 && raw == gemv_last_grab(n_units, total_warps))
                *counter = 0;
            su = total_warps + __shfl_sync(0xffffffffu, raw, 0);
            si = 0;
        }
        if (su < n_units)
            gemv_load_batch<RR, UU>(B, w, row_bytes, rows, nvec, su * RR, si * 32 * UU + lane);
        if (si == 0 && su < n_units && lane == 0)
            raw = atomicAdd(counter, 1);   /* ask one unit ahead */
        const int v0 = ci * 32 * UU + lane;
#pragma unroll
        for (int u = 0; u < UU; u++) {
            int vi = v0 + u * 32;
            if (vi < nvec) {
                float4 xv[4];   /* x for this vector, read once for all RR rows */
#pragma unroll
                for (int k = 0; k < (FP8 ? 4 : 2); k++)
                    xv[k] = xs4[k * nvec + vi];
#pragma unroll
                for (int i = 0; i < RR; i++)
                    acc[i] += gemv_dot_x<FP8, CVT>(A[u][i], xv);
            }
        }
        if (ci + 1 == n_it) {
#pragma unroll
            for (int i = 0; i < RR; i++)
                acc[i] = kern_warp_sum(acc[i]);
            if (lane == 0)
                gemv_store<MODE, RR>(y, acc, cu * RR, rows, scale, row_scale, FP8 && CVT ? 256.f : 1.f);
#pragma unroll
            for (int i = 0; i < RR; i++)
                acc[i] = 0.f;
        }
#pragma unroll
        for (int u = 0; u < UU; u++)
#pragma unroll
            for (int i = 0; i < RR; i++)
                A[u][i] = B[u][i];
        cu = su;
        ci = si;
    }
}

/* Any width: one warp per 4 rows, element loads, x linear in shared memory. */
template <int FP8, int MODE>
__global__ void __launch_bounds__(256)
gemv_scalar_kernel(const uint8_t *__restrict__ w, int rows, int cols, float scale,
                   const float *__restrict__ row_scale, const float *x, float *y,
                   const float *__restrict__ norm_w, float eps)
{
    extern __shared__ float4 xs4[];
    __shared__ float scratch[32];
    const float *xs = (const float *)xs4;
    float *nw_s = (float *)xs4 + cols;
    kern_grid_launch_next();
    gemv_load_norm(nw_s, norm_w, cols);
    kern_grid_wait();
    gemv_load_x<1>((float *)xs4, x, cols, nw_s, norm_w != NULL, eps, false, scratch);
    const int lane = threadIdx.x & 31;
    const int r0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * 4;
    if (r0 >= rows)
        return;
    float acc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        acc[i] = 0.f;
        if (r0 + i >= rows)
            continue;
        for (int c = lane; c < cols; c += 32) {
            size_t e = (size_t)(r0 + i) * cols + c;
            float wv = FP8 ? kern_e4m3(w[e]) : kern_bf16(((const uint16_t *)w)[e]);
            acc[i] = fmaf(wv, xs[c], acc[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
        acc[i] = kern_warp_sum(acc[i]);
    if (lane == 0)
        gemv_store<MODE, 4>(y, acc, r0, rows, scale, row_scale, 1.f);
}

template <typename K>
static int gemv_launch_k(K k, const struct kern_gemv_args *a, cudaStream_t s, int grid, int th, struct bora_err *err)
{
    const struct kern_mat *m = &a->m;
    size_t smem = (size_t)m->cols * sizeof(float) * (a->norm_w ? 2 : 1);
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CUDA_CHECK(kern_launch(k, dim3(grid), dim3(th), smem, s, (const uint8_t *)m->w, m->rows, m->cols, m->scale,
                       m->row_scale, a->x, a->y, a->norm_w, a->norm_eps, a->counter));
    return 0;
}

template <int FP8, int MODE, int RR, int UU, int TH, int BPS, int PF, int CVT>
static int gemv_launch_vec(const struct kern_gemv_args *a, cudaStream_t s, int sms, struct bora_err *err)
{
    int units = (a->m.rows + RR - 1) / RR, wpb = TH / 32;
    int grid = (units + wpb - 1) / wpb;
    if (grid > sms * BPS)
        grid = sms * BPS;
    if constexpr (PF < 0)
        return gemv_launch_k(gemv_pipe_kernel<FP8, MODE, RR, UU, TH, BPS, CVT>, a, s, grid, TH, err);
    else
        return gemv_launch_k(gemv_vec_kernel<FP8, MODE, RR, UU, TH, BPS, PF, CVT>, a, s, grid, TH, err);
}

template <int FP8, int MODE>
static int gemv_launch(const struct kern_gemv_args *a, cudaStream_t s, struct bora_err *err)
{
    const struct kern_mat *m = &a->m;
    size_t smem = (size_t)m->cols * sizeof(float) * (a->norm_w ? 2 : 1);
    int epv = FP8 ? 16 : 8;
    bool vec = m->cols % epv == 0 && ((uintptr_t)m->w & 15) == 0;
    int dev, sms;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    if (vec) {
        int v = a->variant;
#define GEMV_CASE(id, RR, UU, TH, BPS, PF, CVT)                                                 \
    case id:                                                                                    \
        if (MODE == KERN_GEMV_SWIGLU && RR % 2)                                                 \
            return bora_errf(err, -EINVAL, "gemv: variant %d has odd rows per warp (swiglu)", id); \
        if (gemv_launch_vec<FP8, MODE, RR, UU, TH, BPS, PF, CVT>(a, s, sms, err))               \
            return -EIO;                                                                        \
        break;
        switch (v) {
            GEMV_VARIANTS(GEMV_CASE)
        default:
            return bora_errf(err, -EINVAL, "gemv: no variant %d", v);
        }
#undef GEMV_CASE
    } else {
        auto k = gemv_scalar_kernel<FP8, MODE>;
        CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        int rows_per_block = 8 * 4;
        int grid = (m->rows + rows_per_block - 1) / rows_per_block;
        CUDA_CHECK(kern_launch(k, dim3(grid), dim3(256), smem, s, (const uint8_t *)m->w, m->rows,
                           m->cols, m->scale, m->row_scale, a->x, a->y, a->norm_w, a->norm_eps));
    }
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

#define GEMV_COUNT(id, RR, UU, TH, BPS, PF, CVT) +1
extern "C" int kern_gemv_variants(void) { return 0 GEMV_VARIANTS(GEMV_COUNT); }
#undef GEMV_COUNT

extern "C" int kern_gemv(const struct kern_gemv_args *a, struct CUstream_st *stream,
                         struct bora_err *err)
{
    const struct kern_mat *m = &a->m;
    if (m->rows <= 0 || m->cols <= 0)
        return bora_errf(err, -EINVAL, "gemv: bad shape %d x %d", m->rows, m->cols);
    if ((size_t)m->cols * sizeof(float) * (a->norm_w ? 2 : 1) > 200 * 1024)
        return bora_errf(err, -EINVAL, "gemv: %d columns%s exceed shared memory (max %d)", m->cols,
                         a->norm_w ? " with a fused norm" : "", a->norm_w ? 100 * 1024 / 4 : 200 * 1024 / 4);
    if (a->mode == KERN_GEMV_SWIGLU && m->rows % 2)
        return bora_errf(err, -EINVAL, "gemv: swiglu needs an even row count, got %d", m->rows);
    if (!a->counter)
        return bora_errf(err, -EINVAL, "gemv: no work counter");
    cudaStream_t s = (cudaStream_t)stream;
    bool fp8 = m->dtype == BORA_DT_F8_E4M3;
    if (!fp8 && m->dtype != BORA_DT_BF16)
        return bora_errf(err, -EINVAL, "gemv: weight dtype %s not supported (BF16 or F8_E4M3)",
                         bora_dtype_name(m->dtype));
    switch (a->mode) {
    case KERN_GEMV_STORE:
        return fp8 ? gemv_launch<1, KERN_GEMV_STORE>(a, s, err) : gemv_launch<0, KERN_GEMV_STORE>(a, s, err);
    case KERN_GEMV_ADD:
        return fp8 ? gemv_launch<1, KERN_GEMV_ADD>(a, s, err) : gemv_launch<0, KERN_GEMV_ADD>(a, s, err);
    case KERN_GEMV_SWIGLU:
        return fp8 ? gemv_launch<1, KERN_GEMV_SWIGLU>(a, s, err) : gemv_launch<0, KERN_GEMV_SWIGLU>(a, s, err);
    }
    return bora_errf(err, -EINVAL, "gemv: bad mode %d", (int)a->mode);
}
