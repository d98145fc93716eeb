/* misc.cu — the small kernels of a decode step (RMSNorm, RoPE, SwiGLU, residual add, embedding
 * lookup), random fill for synthetic models, the streaming-read bandwidth probe, and checked
 * wrappers over the CUDA runtime so C callers need no CUDA headers. Each of these moves a few
 * KB per token; their budget is launch latency (≈ 2 µs), not bandwidth. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kern_util.cuh"
#include "kernels/kern_rope.cuh"
#include "kernels/kern_tma.cuh"

extern "C" int kern_device_query(struct kern_device *d, struct bora_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        return bora_errf(err, -ENODEV, "no CUDA device: %s",
                         e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0");
    int dev;
    CUDA_CHECK(cudaGetDevice(&dev));
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", p.name);
    d->sm_count = p.multiProcessorCount;
    d->cc_major = p.major;
    d->cc_minor = p.minor;
    d->l2_bytes = (size_t)p.l2CacheSize;
    d->smem_optin = (int)p.sharedMemPerBlockOptin;
    d->index = dev;
    CUDA_CHECK(cudaMemGetInfo(&d->free_bytes, &d->total_bytes));
    return 0;
}

extern "C" int kern_device_mem(int index, size_t *free_bytes, size_t *total_bytes, struct bora_err *err)
{
    CUDA_CHECK(cudaSetDevice(index));   /* this thread's current device; the engine's stays its own */
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return 0;
}

extern "C" int kern_malloc(void **d_ptr, size_t bytes, struct bora_err *err)
{
    cudaError_t e = cudaMalloc(d_ptr, bytes);
    if (e != cudaSuccess) {
        *d_ptr = NULL;
        return bora_errf(err, e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO,
                         "cudaMalloc(%zu bytes): %s (%s:%d)", bytes, cudaGetErrorString(e),
                         __FILE__, __LINE__);
    }
    return 0;
}
extern "C" void kern_free(void *d_ptr) { if (d_ptr) cudaFree(d_ptr); }
extern "C" int kern_host_alloc(void **h_ptr, size_t bytes, struct bora_err *err)
{
    CUDA_CHECK(cudaMallocHost(h_ptr, bytes));
    return 0;
}
extern "C" void kern_host_free(void *h_ptr) { if (h_ptr) cudaFreeHost(h_ptr); }
extern "C" int kern_copy_h2d(void *d_dst, const void *h_src, size_t bytes, struct bora_err *err)
{
    CUDA_CHECK(cudaMemcpy(d_dst, h_src, bytes, cudaMemcpyHostToDevice));
    return 0;
}
extern "C" int kern_copy_d2h(void *h_dst, const void *d_src, size_t bytes, struct bora_err *err)
{
    CUDA_CHECK(cudaMemcpy(h_dst, d_src, bytes, cudaMemcpyDeviceToHost));
    return 0;
}
extern "C" int kern_memset(void *d_ptr, int byte, size_t bytes, struct bora_err *err)
{
    CUDA_CHECK(cudaMemset(d_ptr, byte, bytes));
    return 0;
}
extern "C" int kern_sync(struct bora_err *err)
{
    CUDA_CHECK(cudaDeviceSynchronize());
    return 0;
}

/* ---- RMSNorm ---- */
__global__ void rmsnorm_kernel(float *y, const float *x, const float *w, int n, float eps)
{
    __shared__ float scratch[32];
    kern_grid_launch_next();
    kern_grid_wait();
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss += x[i] * x[i];
    ss = kern_block_sum(ss, scratch);
    float rstd = rsqrtf(ss / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        y[i] = x[i] * rstd * w[i];
}

extern "C" int kern_rmsnorm(float *y, const float *x, const float *w, int n, float eps,
                            struct CUstream_st *stream, struct bora_err *err)
{
    CUDA_CHECK(kern_launch(rmsnorm_kernel, dim3(1), dim3(1024), 0, (cudaStream_t)stream, y, x, w, n, eps));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- RoPE (standalone; attention applies the same rotation in place) ---- */
__global__ void rope_kernel(float *vec, int n_heads, int hd, const int *d_pos, struct kern_rope r,
                            int is_query)
{
    kern_grid_launch_next();
    kern_grid_wait();
    int pos = *d_pos;
    float qs = is_query ? kern_query_scale(&r, pos) : 1.f;
    int half = hd / 2;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_heads * half; i += gridDim.x * blockDim.x) {
        int h = i / half, k = i % half;
        float *v = vec + (size_t)h * hd;
        int a, b;
        kern_rope_pair(&r, hd, k, &a, &b);
        float c, s;
        kern_rope_cs(&r, pos, k, &c, &s);
        float x0 = v[a], x1 = v[b];
        v[a] = (x0 * c - x1 * s) * qs;
        v[b] = (x0 * s + x1 * c) * qs;
    }
}

extern "C" int kern_rope_apply(float *vec, int n_heads, int head_dim, const int *d_pos,
                               const struct kern_rope *r, bool is_query,
                               struct CUstream_st *stream, struct bora_err *err)
{
    if (head_dim % 2)
        return bora_errf(err, -EINVAL, "rope: odd head_dim %d", head_dim);
    int n = n_heads * head_dim / 2, grid = (n + 255) / 256;
    CUDA_CHECK(kern_launch(rope_kernel, dim3(grid), dim3(256), 0, (cudaStream_t)stream, vec, n_heads,
                       head_dim, d_pos, *r, (int)is_query));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- SwiGLU, add ---- */
__global__ void swiglu_kernel(float *y, const float *g, const float *u, int n)
{
    kern_grid_launch_next();
    kern_grid_wait();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = g[i] / (1.f + __expf(-g[i])) * u[i];
}
__global__ void add_kernel(float *y, const float *x, int n)
{
    kern_grid_launch_next();
    kern_grid_wait();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] += x[i];
}
extern "C" int kern_swiglu(float *y, const float *gate, const float *up, int n,
                           struct CUstream_st *stream, struct bora_err *err)
{
    CUDA_CHECK(kern_launch(swiglu_kernel, dim3((n + 255) / 256), dim3(256), 0, (cudaStream_t)stream, y,
                       gate, up, n));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}
extern "C" int kern_add(float *y, const float *x, int n, struct CUstream_st *stream,
                        struct bora_err *err)
{
    CUDA_CHECK(kern_launch(add_kernel, dim3((n + 255) / 256), dim3(256), 0, (cudaStream_t)stream, y, x, n));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- embedding ---- */
__global__ void embed_kernel(float *x, struct kern_mat m, struct kern_state *st, int32_t *tokens)
{
    __shared__ int sid;
    kern_grid_launch_next();
    kern_grid_wait();
    if (threadIdx.x == 0) {
        int pos = st->pos;
        int id = pos < st->fed_end ? tokens[pos] : st->sampled;
        if (id < 0 || id >= m.rows) {
            st->error = KERN_STATE_BAD_ID;
            id = 0;
        }
        if (blockIdx.x == 0)
            tokens[pos] = id;
        sid = id;
    }
    __syncthreads();
    size_t row = (size_t)sid;
    float sc = m.row_scale ? m.scale * m.row_scale[row] : m.scale;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < m.cols; c += gridDim.x * blockDim.x) {
        size_t e = row * m.cols + c;
        float v = m.dtype == BORA_DT_F8_E4M3 ? kern_e4m3(((const uint8_t *)m.w)[e])
                                             : kern_bf16(((const uint16_t *)m.w)[e]);
        x[c] = v * sc;
    }
}

extern "C" int kern_embed(float *x, const struct kern_mat *emb, struct kern_state *d_state,
                          int32_t *d_tokens, struct CUstream_st *stream, struct bora_err *err)
{
    if (emb->dtype != BORA_DT_BF16 && emb->dtype != BORA_DT_F8_E4M3)
        return bora_errf(err, -EINVAL, "embed: dtype %s not supported", bora_dtype_name(emb->dtype));
    int grid = (emb->cols + 255) / 256;
    CUDA_CHECK(kern_launch(embed_kernel, dim3(grid), dim3(256), 0, (cudaStream_t)stream, x, *emb,
                       d_state, d_tokens));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- random fill ---- */
__device__ __forceinline__ uint64_t kern_mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_random_kernel(void *d, int dtype, size_t n, float amp, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t h = kern_mix64(seed ^ (i * 0x632be59bd9b4e019ull));
        float u = ((float)(h >> 40) * (1.f / 16777216.f)) * 2.f - 1.f;   /* [-1, 1) */
        float v = u * amp;
        if (dtype == BORA_DT_F32)
            ((float *)d)[i] = v;
        else if (dtype == BORA_DT_BF16)
            ((uint16_t *)d)[i] = kern_f32_to_bf16(v);
        else
            ((uint8_t *)d)[i] = (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
    }
}

extern "C" int kern_fill_random(void *d, enum bora_dtype dtype, size_t n, float amp, uint64_t seed,
                                struct bora_err *err)
{
    if (dtype != BORA_DT_F32 && dtype != BORA_DT_BF16 && dtype != BORA_DT_F8_E4M3)
        return bora_errf(err, -EINVAL, "fill: dtype %s not supported", bora_dtype_name(dtype));
    if (n == 0)
        return 0;
    size_t blocks = (n + 255) / 256;
    if (blocks > 65536)
        blocks = 65536;
    fill_random_kernel<<<(unsigned)blocks, 256>>>(d, (int)dtype, n, amp, seed);
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

__global__ void fill_f32_kernel(float *d, size_t n, float v)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        d[i] = v;
}
extern "C" int kern_fill_f32(float *d, size_t n, float value, struct bora_err *err)
{
    if (n == 0)
        return 0;
    size_t blocks = (n + 255) / 256;
    if (blocks > 65536)
        blocks = 65536;
    fill_f32_kernel<<<(unsigned)blocks, 256>>>(d, n, value);
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

/* ---- streaming-read bandwidth ----
 * Two readers, each the best of its kind on an H200 (bench/readbw_probe.cu, 2026-11-30, random
 * data, 8 GiB): 16-byte ld.global.cs loads, four in flight a thread, 8 blocks of 512 an SM
 * (4.55 TB/s; the L1::no_allocate + L2 evict-first form of the weight loads read only 4.30),
 * and bulk copies (TMA), one block an SM keeping four 32 KiB copies in flight, each block a
 * contiguous share (4.61 TB/s: the decode kernel's own way of reading its weights). */
__global__ void read_kernel(const uint4 *p, size_t n, unsigned *sink)
{
    uint32_t acc = 0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = __ldcs(p + i), b = __ldcs(p + i + stride);
        uint4 c = __ldcs(p + i + 2 * stride), d = __ldcs(p + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n; i += stride) {
        uint4 a = __ldcs(p + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x12345678u)
        *sink = acc;
}

#define BW_STAGE (32 * 1024)
#define BW_STAGES 4
#define BW_SMEM (128 + BW_STAGES * BW_STAGE)

/* Stages [0, stages) of p, a contiguous share a block, through BW_STAGES bulk copies in flight. */
__global__ void __launch_bounds__(32, 1) read_bulk_kernel(const uint8_t *p, size_t stages)
{
    extern __shared__ __align__(128) uint8_t sm[];
    if (threadIdx.x == 0)
        kern_bulk_read_share(p, stages, BW_STAGE, BW_STAGES, sm, kern_policy_evict_first());
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median GB/s of iters timed runs (after two warm-ups) of one reader over `bytes`. */
static int time_reader(bool bulk, const void *d, size_t bytes, int iters, int sms, unsigned *sink, double *gbps,
                       struct bora_err *err)
{
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    cudaError_t e = cudaEventCreate(&e1);
    if (e != cudaSuccess) {
        cudaEventDestroy(e0);
        return bora_errf(err, -EIO, "bandwidth: %s (%s:%d)", cudaGetErrorString(e), __FILE__, __LINE__);
    }
    const size_t n = bytes / 16, stages = bytes / BW_STAGE;
    const size_t moved = bulk ? stages * BW_STAGE : n * 16;
    double t[64];
    int rc = 0;
    for (int it = -2; it < iters && rc == 0; it++) {
        e = cudaEventRecord(e0);
        if (e == cudaSuccess) {
            if (bulk)
                read_bulk_kernel<<<sms, 32, BW_SMEM>>>((const uint8_t *)d, stages);
            else
                read_kernel<<<sms * 8, 512>>>((const uint4 *)d, n, sink);
            e = cudaGetLastError();
        }
        if (e == cudaSuccess)
            e = cudaEventRecord(e1);
        if (e == cudaSuccess)
            e = cudaEventSynchronize(e1);
        float ms = 0;
        if (e == cudaSuccess)
            e = cudaEventElapsedTime(&ms, e0, e1);
        if (e == cudaSuccess && !(ms > 0))
            e = cudaErrorUnknown;   /* no time measured: the figure would be meaningless */
        if (e != cudaSuccess) {
            rc = bora_errf(err, -EIO, "bandwidth %s reader: %s (%s:%d)", bulk ? "bulk-copy" : "load",
                           cudaGetErrorString(e), __FILE__, __LINE__);
            break;
        }
        if (it >= 0)
            t[it] = (double)moved / (ms * 1e-3) / 1e9;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    if (rc)
        return rc;
    qsort(t, (size_t)iters, sizeof t[0], cmp_double);
    *gbps = t[iters / 2];
    return 0;
}

extern "C" int kern_bandwidth_read_detail(const void *d, size_t bytes, int iters, double *loads_gbps,
                                          double *bulk_gbps, struct bora_err *err)
{
    if (iters < 1 || iters > 64)
        return bora_errf(err, -EINVAL, "bandwidth: iters %d outside 1..64", iters);
    if (bytes < (size_t)BW_STAGE)
        return bora_errf(err, -EINVAL, "bandwidth: %zu bytes (at least %d)", bytes, BW_STAGE);
    if ((uintptr_t)d % 16)
        return bora_errf(err, -EINVAL, "bandwidth: buffer not 16-byte aligned");
    int dev, sms;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CUDA_CHECK(cudaFuncSetAttribute(read_bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, BW_SMEM));
    unsigned *sink;
    CUDA_CHECK(cudaMalloc(&sink, sizeof *sink));
    int rc = time_reader(false, d, bytes, iters, sms, sink, loads_gbps, err);
    if (!rc)
        rc = time_reader(true, d, bytes, iters, sms, sink, bulk_gbps, err);
    const cudaError_t fe = cudaFree(sink);
    if (!rc && fe != cudaSuccess)
        return bora_errf(err, -EIO, "cudaFree (the read probe's sink): %s", cudaGetErrorString(fe));
    return rc;
}

extern "C" int kern_bandwidth_read(const void *d, size_t bytes, int iters, double *gbps, struct bora_err *err)
{
    double loads = 0, bulk = 0;
    int rc = kern_bandwidth_read_detail(d, bytes, iters, &loads, &bulk, err);
    if (!rc)
        *gbps = loads > bulk ? loads : bulk;
    return rc;
}
