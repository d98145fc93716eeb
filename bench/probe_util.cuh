/* probe_util.cuh — what the standalone probes (bench/stream_probe.cu, bench/colsplit_probe.cu,
 * bench/cluster_probe.cu) share: error checks, the 16-byte-load bandwidth reference, best-of-n
 * timing, the tensor-map encoder from the driver and tensor copies (the ring's barriers:
 * kernels/kern_tma.cuh, as the decode kernel's). Header
 * only; each probe is one translation unit. */
#ifndef BORA_BENCH_PROBE_UTIL_CUH
#define BORA_BENCH_PROBE_UTIL_CUH

#include <cuda.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kern_tma.cuh"
#include "kernels/kern_util.cuh"

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

__device__ unsigned long long g_sink;   /* keeps the compiler from dropping what a probe reads */

/* The reference: 16-byte streaming loads, grid-stride, four in flight a thread. */
__global__ void k_ref(const uint4 *p, size_t n)
{
    uint4 a = make_uint4(0, 0, 0, 0);
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            v[k] = __ldcs(p + i + k * stride);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            a.x ^= v[k].x;
            a.y ^= v[k].y;
        }
    }
    for (; i < n; i += stride) {
        uint4 v = __ldcs(p + i);
        a.x ^= v.x;
    }
    if ((a.x ^ a.y) == 0x12345678u)
        g_sink = a.x;
}

/* The device's SM count and the shared memory a block may opt in to. */
static inline void probe_device(int *sms, int *smem_optin)
{
    CK(cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, 0));
    CK(cudaDeviceGetAttribute(smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
}

/* A device buffer of bytes, filled with 0x3c (an FP8 / BF16 pattern of finite values). */
static inline uint8_t *probe_buffer(size_t bytes)
{
    void *p;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMemset(p, 0x3c, bytes));
    return (uint8_t *)p;
}

/* The best of reps timed launches (ms), after one warm-up. */
static inline float time_ms(void (*launch)(void *), void *ctx, int reps)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    float best = 1e30f;
    launch(ctx);
    CK(cudaDeviceSynchronize());
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a));
        launch(ctx);
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (ms < best)
            best = ms;
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return best;
}

typedef kern_tmap_encode_fn encode_fn;   /* kernels/kern_tma.cuh's signature */

/* cuTensorMapEncodeTiled from the driver (no link against libcuda; a probe does not link
 * kernels/flash.cu's kern_tmap_encoder, so it looks the function up itself). */
static inline encode_fn tensor_encoder(void)
{
    encode_fn enc = NULL;
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&enc, 12000, cudaEnableDefault, &q));
    return enc;
}

/* The box of tensor map m at (x, y) / (x, y, z) into shared memory, its bytes counted on b. */
__device__ __forceinline__ void tensor2d(void *dst, const CUtensorMap *m, int x, int y, uint64_t *b, uint64_t pol)
{
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint "
                 "[%0], [%1, {%2, %3}], [%4], %5;" ::"r"(mega_smem(dst)),
                 "l"(m), "r"(x), "r"(y), "r"(mega_smem(b)), "l"(pol)
                 : "memory");
}

__device__ __forceinline__ void tensor3d(void *dst, const CUtensorMap *m, int x, int y, int z, uint64_t *b,
                                         uint64_t pol)
{
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint "
                 "[%0], [%1, {%2, %3, %4}], [%5], %6;" ::"r"(mega_smem(dst)),
                 "l"(m), "r"(x), "r"(y), "r"(z), "r"(mega_smem(b)), "l"(pol)
                 : "memory");
}

#endif
