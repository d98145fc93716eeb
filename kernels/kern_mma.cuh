/* kern_mma.cuh — tensor-core helpers shared by the attention kernels on mma.sync (flash.cu for
 * prefill, attention.cu for decode with large query groups): 16-byte async copies, ldmatrix,
 * the bf16 m16n8k16 MMA, packing and base-2 exponentials. Internal to kernels/. */
#ifndef BORA_KERNELS_KERN_MMA_CUH
#define BORA_KERNELS_KERN_MMA_CUH

#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ uint32_t fa_smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global → shared, zero-filled when !valid. */
__device__ __forceinline__ void fa_cp16(void *dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(fa_smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void fa_cp_commit(void) { asm volatile("cp.async.commit_group;" ::); }
template <int N>
__device__ __forceinline__ void fa_cp_wait(void) { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void fa_ldsm_x4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(fa_smem_addr(p)));
}
__device__ __forceinline__ void fa_ldsm_x4_t(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(fa_smem_addr(p)));
}

/* c (16 × 8 fp32) += a (16 × 16 bf16, row) · b (16 × 8 bf16, col) */
__device__ __forceinline__ void fa_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Two floats → bf16x2 (round to nearest even), lo in the low half: one instruction. */
__device__ __forceinline__ uint32_t fa_pack(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

/* 2^x, approximate (2 ulp), 2^-inf = 0: one MUFU instruction. */
__device__ __forceinline__ float fa_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

#endif
