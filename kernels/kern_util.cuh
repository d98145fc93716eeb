/* kern_util.cuh — shared by the kernel sources in kernels/: the checked-call macro that turns a CUDA
 * failure into -EIO with the call, file and line, the programmatic-dependent-launch helper and
 * small device helpers (bf16/fp8 unpacking, warp reductions). Internal: not part of kernels.h. */
#ifndef BORA_KERNELS_KERN_UTIL_CUH
#define BORA_KERNELS_KERN_UTIL_CUH

#include <cuda_runtime.h>
#include <cuda_fp8.h>
#include <cuda_fp16.h>
#include <errno.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/cuda_check.h"


/* The current device's multiprocessors, for sizing grids on the host; 132 (an H100/H200) when the
 * query fails, which leaves no error pending. */
static inline int kern_sm_count(void)
{
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) !=
                                                   cudaSuccess) {
        (void)cudaGetLastError();
        sms = 132;
    }
    return sms;
}

/* Launches k with programmatic stream serialization allowed: the next kernel may start while
 * this one drains; each kernel calls kern_grid_wait() before it reads what its predecessor wrote. */
template <typename... KArgs, typename... Args>
static inline cudaError_t kern_launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                      cudaStream_t s, Args... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, k, static_cast<KArgs>(args)...);
}

/* Wait for the preceding grid (all its memory visible); every kernel calls it in every block. */
__device__ __forceinline__ void kern_grid_wait(void)
{
    asm volatile("griddepcontrol.wait;" ::: "memory");
}
/* Let the next grid begin launching (its blocks then wait in kern_grid_wait). */
__device__ __forceinline__ void kern_grid_launch_next(void)
{
    asm volatile("griddepcontrol.launch_dependents;" :::);
}

__device__ __forceinline__ float kern_bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float kern_bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ float kern_bf16(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* fp32 → bf16, round to nearest even (NaN kept quiet). */
__device__ __forceinline__ uint16_t kern_f32_to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* Two e4m3 bytes (low byte = first element) → two floats. */
__device__ __forceinline__ float2 kern_e4m3x2(uint32_t two)
{
    __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(two & 0xffffu), __NV_E4M3);
    return __half22float2(*reinterpret_cast<__half2 *>(&h));
}
__device__ __forceinline__ float kern_e4m3(uint8_t b)
{
    __half_raw h = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)b, __NV_E4M3);
    return __half2float(*reinterpret_cast<__half *>(&h));
}

/* fp32 → e4m3, round to nearest even, saturating at ±448 (NaN stays NaN): as bora_f32_to_e4m3. */
__device__ __forceinline__ uint8_t kern_f32_to_e4m3(float f)
{
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}

/* Eight e4m3 bytes (first element in the lowest byte) → eight bf16 (first in the low half of .x),
 * exactly: every e4m3 value is a bf16 value, so the float's top half is it. */
__device__ __forceinline__ uint32_t kern_bf16x2_of(float2 f)
{
    return (__float_as_uint(f.x) >> 16) | (__float_as_uint(f.y) & 0xffff0000u);
}
__device__ __forceinline__ uint4 kern_e4m3x8_to_bf16x8(uint2 v)
{
    return make_uint4(kern_bf16x2_of(kern_e4m3x2(v.x)), kern_bf16x2_of(kern_e4m3x2(v.x >> 16)),
                      kern_bf16x2_of(kern_e4m3x2(v.y)), kern_bf16x2_of(kern_e4m3x2(v.y >> 16)));
}

/* The KV cache's elements: bf16, or e4m3 when K8 (engine kv = fp8). Indices count elements, so
 * one index arithmetic serves both; base pointers may be typed uint16_t * either way. */
template <bool K8>
__device__ __forceinline__ void *kern_kv_at(const void *base, size_t i)
{
    return (void *)((const uint8_t *)base + i * (K8 ? 1 : 2));
}
template <bool K8>
__device__ __forceinline__ void kern_kv_put(void *base, size_t i, float v)
{
    if constexpr (K8)
        ((uint8_t *)base)[i] = kern_f32_to_e4m3(v);
    else
        ((uint16_t *)base)[i] = kern_f32_to_bf16(v);
}
/* Elements i..i+7 (i a multiple of 8) as eight bf16. */
template <bool K8>
__device__ __forceinline__ uint4 kern_kv_get8(const void *base, size_t i)
{
    if constexpr (K8)
        return kern_e4m3x8_to_bf16x8(*(const uint2 *)((const uint8_t *)base + i));
    else
        return *(const uint4 *)((const uint16_t *)base + i);
}

__device__ __forceinline__ float kern_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float kern_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The exponent e that puts |largest| × 2^e in [2^13, 2^14) (0 when largest is 0 or not
 * finite): values scaled by it fit f16 with room to spare (the persistent decode kernel's hi /
 * lo input split, the attention items' f16 partials). */
__device__ __forceinline__ int kern_scale_exp(float largest)
{
    int e = 0;
    if (largest > 0.f && isfinite(largest)) {
        int ex;
        frexpf(largest, &ex);
        e = min(max(14 - ex, -100), 100);
    }
    return e;
}

/* An L2 policy for data read once (weights): evicted first, so a weight stream does not push
 * the KV cache and the activations out of L2. */
__device__ __forceinline__ uint64_t kern_policy_evict_first(void)
{
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    return pol;
}

/* 16-byte streaming load that does not allocate in L1 and is evicted first from L2 (weights
 * are read once per token). */
__device__ __forceinline__ uint4 kern_ld_stream(const void *p)
{
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p), "l"(kern_policy_evict_first()));
    return v;
}

/* A float read through L2 (other SMs' writes) whose place among the loads the compiler keeps. */
__device__ __forceinline__ float kern_ldcg_v(const float *p)
{
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ void kern_prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* Asks the copy engine to bring `bytes` (multiple of 16, 16-byte aligned) into L2: memory
 * parallelism that costs no registers. */
__device__ __forceinline__ void kern_prefetch_bulk(const void *p, uint32_t bytes)
{
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

/* Sum over a block of up to 1024 threads; `scratch` holds 32 floats. All threads get the sum. */
__device__ __forceinline__ float kern_block_sum(float v, float *scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = kern_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.f;
    return kern_warp_sum(t);
}

#endif
