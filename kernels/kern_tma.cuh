/* kern_tma.cuh — PTX wrappers of the persistent decode kernel (decode_mega.cu), also used by
 * bench/stream_probe.cu so the probe measures the same instructions: mbarrier, bulk
 * asynchronous copies (TMA) into shared memory, an acquire load, the e4m3 → f16 conversion and
 * the m16n8k16 MMAs. Internal to kernels/. */
#ifndef BORA_KERNELS_KERN_TMA_CUH
#define BORA_KERNELS_KERN_TMA_CUH

#include <cuda.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* cuTensorMapEncodeTiled from the driver, looked up once through the runtime (no link against
 * libcuda; kernels/flash.cu); NULL where the driver lacks it. */
typedef CUresult (*kern_tmap_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                        const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
                                        CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                                        CUtensorMapFloatOOBfill);
kern_tmap_encode_fn kern_tmap_encoder(void);

__device__ __forceinline__ uint32_t mega_smem(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(uint64_t *b, int count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(mega_smem(b)), "r"(count) : "memory");
}

/* A ring of ns stages: full[i] completes on the producer's one arrival (and its copies' bytes),
 * empty[i] on `consumers` warps' arrivals. Thread 0 initialises; then the whole block syncs. */
__device__ __forceinline__ void mbar_ring_init(uint64_t *full, uint64_t *empty, int ns, int consumers)
{
    if (threadIdx.x == 0) {
        for (int i = 0; i < ns; i++) {
            mbar_init(&full[i], 1);
            mbar_init(&empty[i], consumers);
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, uint32_t bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mega_smem(b)), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *b)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(mega_smem(b)) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t *b, uint32_t parity)
{
    asm volatile("{\n"
                 ".reg .pred P1;\n"
                 "WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@!P1 bra WAIT;\n"
                 "}\n" ::"r"(mega_smem(b)),
                 "r"(parity)
                 : "memory");
}

/* bytes (multiple of 16, both ends 16-byte aligned) from global to shared memory; completion
 * counted on barrier b; L2 keeps them under `policy` (weights: evict first, so the stream does
 * not push the KV cache and the activations out of L2). */
__device__ __forceinline__ void mega_bulk_hint(void *dst, const void *src, uint32_t bytes, uint64_t *b, uint64_t policy)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::"r"(
                     mega_smem(dst)),
                 "l"(src), "r"(bytes), "r"(mega_smem(b)), "l"(policy)
                 : "memory");
}


/* bytes (multiple of 16, both ends 16-byte aligned) from global to shared memory; completion
 * counted on barrier b. */
__device__ __forceinline__ void mega_bulk(void *dst, const void *src, uint32_t bytes, uint64_t *b)
{
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     mega_smem(dst)),
                 "l"(src), "r"(bytes), "r"(mega_smem(b))
                 : "memory");
}

/* The box of tensor map m at (x, y, z, w) into shared memory (1 KiB aligned for the 128-byte
 * swizzle), its bytes counted on barrier b; L2 keeps them under `policy`. m lies in parameter
 * (a __grid_constant__ kernel argument), constant or global memory. */
__device__ __forceinline__ void mega_tensor4d_hint(void *dst, const CUtensorMap *m, int x, int y, int z, int w,
                                                   uint64_t *b, uint64_t policy)
{
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint "
                 "[%0], [%1, {%2, %3, %4, %5}], [%6], %7;" ::"r"(mega_smem(dst)),
                 "l"(m), "r"(x), "r"(y), "r"(z), "r"(w), "r"(mega_smem(b)), "l"(policy)
                 : "memory");
}

__device__ __forceinline__ void mega_tensor4d(void *dst, const CUtensorMap *m, int x, int y, int z, int w, uint64_t *b)
{
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(mega_smem(dst)),
                 "l"(m), "r"(x), "r"(y), "r"(z), "r"(w), "r"(mega_smem(b))
                 : "memory");
}

/* Fetches tensor map m into the TMA unit's descriptor cache ahead of its first copy. */
__device__ __forceinline__ void mega_tmap_prefetch(const CUtensorMap *m)
{
    asm volatile("prefetch.tensormap [%0];" ::"l"(m) : "memory");
}

__device__ __forceinline__ int mega_ld_acquire(const int *p)
{
    int v;
    asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ uint32_t mega_e4m3x2(uint32_t two)
{
    uint32_t r;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"((uint16_t)two));
    return r;
}

/* The same for the high two bytes of w, taken as the register's upper half (no shift first). */
__device__ __forceinline__ uint32_t mega_e4m3x2_hi(uint32_t w)
{
    uint32_t r;
    asm("{\n"
        ".reg .b16 lo, hi;\n"
        "mov.b32 {lo, hi}, %1;\n"
        "cvt.rn.f16x2.e4m3x2 %0, hi;\n"
        "}\n"
        : "=r"(r)
        : "r"(w));
    return r;
}

__device__ __forceinline__ void mma_f16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* One thread reads this block's contiguous share of `stages` stages of stage_bytes at p into a
 * ring of ns (≤ 32) stages through bulk copies (L2 evict-first), ns in flight, and discards
 * them: the streaming-read reference (kern_bandwidth_read) and bench/readbw_probe.cu. The
 * ring's barriers sit at sm, the stages from sm + 128. */
__device__ __forceinline__ void kern_bulk_read_share(const uint8_t *p, size_t stages, uint32_t stage_bytes, int ns,
                                                     uint8_t *sm, uint64_t policy)
{
    uint64_t *full = (uint64_t *)sm;
    uint8_t *ring = sm + 128;
    const size_t per = (stages + gridDim.x - 1) / gridDim.x, s0 = blockIdx.x * per;
    const size_t s1 = s0 + per < stages ? s0 + per : stages;
    if (s0 >= s1)
        return;
    for (int i = 0; i < ns; i++)
        mbar_init(&full[i], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    uint32_t parity = 0;
    size_t issued = s0;
    for (int i = 0; i < ns && issued < s1; i++, issued++) {
        mbar_expect_tx(&full[i], stage_bytes);
        mega_bulk_hint(ring + (size_t)i * stage_bytes, p + issued * stage_bytes, stage_bytes, &full[i], policy);
    }
    for (size_t landed = s0, i = 0; landed < s1; landed++, i = (i + 1) % (size_t)ns) {
        mbar_wait(&full[i], (parity >> i) & 1u);
        parity ^= 1u << i;
        if (issued < s1) {
            mbar_expect_tx(&full[i], stage_bytes);
            mega_bulk_hint(ring + (size_t)i * stage_bytes, p + issued * stage_bytes, stage_bytes, &full[i], policy);
            issued++;
        }
    }
}

#endif
