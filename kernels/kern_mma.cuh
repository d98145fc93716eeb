/* kern_mma.cuh — tensor-core helpers shared by the attention kernels on mma.sync (flash.cu for
 * prefill, attention.cu for decode with large query groups): 16-byte async copies, ldmatrix,
 * the bf16 m16n8k16 MMA, packing and base-2 exponentials. Internal to kernels/. */
#ifndef BORA_KERNELS_KERN_MMA_CUH
#define BORA_KERNELS_KERN_MMA_CUH

#include <cuda_bf16.h>
#include <math.h>
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

/* Sets to −inf the scores of a 16-row tile s[NJ][4] (the MMA's C layout: keys k0 + 8j + 2·tq (+1),
 * rows q0 for elements 0, 1 and q1 for 2, 3) whose key a row may not see: past the row's own
 * position, at or past kend, or `window` or more positions back (window > 0). */
template <int NJ>
__device__ __forceinline__ void fa_mask_tile(float (&s)[NJ][4], int k0, int tq, int q0, int q1, int kend, int window)
{
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int kp = k0 + j * 8 + 2 * tq + (e & 1);
            const int q = e < 2 ? q0 : q1;
            const bool ok = kp <= q && kp < kend && (window <= 0 || q - kp < window);
            if (!ok)
                s[j][e] = -INFINITY;
        }
}

/* One step of the base-2 online softmax on a 16-row tile of scores s[NJ][4] in the MMA's C
 * layout (elements 0, 1 in row g, 2, 3 in row g + 8; a row's other columns in the quad's lanes):
 * updates the rows' running maxima m0 / m1 and sums l0 / l1, turns s into exp2(s − max) and sets
 * a0 / a1 to the factors the rows' output accumulators must be scaled by (0 while a row has
 * seen nothing but −inf). */
template <int NJ>
__device__ __forceinline__ void fa_softmax_step(float (&s)[NJ][4], float &m0, float &m1, float &l0, float &l1,
                                                float &a0, float &a1)
{
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
        mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float u0 = n0 == -INFINITY ? 0.f : n0, u1 = n1 == -INFINITY ? 0.f : n1;
    a0 = fa_exp2(m0 - u0);   /* m = -inf → 0 */
    a1 = fa_exp2(m1 - u1);
    m0 = n0;
    m1 = n1;
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int j = 0; j < NJ; j++) {
        s[j][0] = fa_exp2(s[j][0] - u0);
        s[j][1] = fa_exp2(s[j][1] - u0);
        s[j][2] = fa_exp2(s[j][2] - u1);
        s[j][3] = fa_exp2(s[j][3] - u1);
        ps0 += s[j][0] + s[j][1];
        ps1 += s[j][2] + s[j][3];
    }
    l0 = l0 * a0 + ps0;
    l1 = l1 * a1 + ps1;
}

#endif
