/* kern_rope.cuh — RoPE as the kernels apply it: which pair of a head a frequency rotates
 * (rotate-half or interleaved), its cos/sin at a position (YaRN via inv_freq and attn_factor),
 * and the Ministral-3 query scale. Internal to kernels/. */
#ifndef BORA_KERNELS_KERN_ROPE_CUH
#define BORA_KERNELS_KERN_ROPE_CUH

#include "kernels/kernels.h"

__device__ __forceinline__ void kern_rope_pair(const struct kern_rope *r, int hd, int k, int *a, int *b)
{
    if (r->interleaved) {
        *a = 2 * k;
        *b = 2 * k + 1;
    } else {
        *a = k;
        *b = k + hd / 2;
    }
}

/* cos and sin of position pos at the frequency f = r->inv_freq[k], attention factor applied. */
__device__ __forceinline__ void kern_rope_cs_f(const struct kern_rope *r, int pos, float f, float *c, float *s)
{
    float ang = (float)pos * f;
    float sv, cv;
    sincosf(ang, &sv, &cv);
    *c = cv * r->attn_factor;
    *s = sv * r->attn_factor;
}

__device__ __forceinline__ void kern_rope_cs(const struct kern_rope *r, int pos, int k, float *c, float *s)
{
    kern_rope_cs_f(r, pos, r->inv_freq[k], c, s);
}

__device__ __forceinline__ float kern_query_scale(const struct kern_rope *r, int pos)
{
    if (r->qscale_beta == 0.f || r->qscale_orig_max <= 0)
        return 1.f;
    return 1.f + r->qscale_beta * logf(1.f + floorf((float)pos / (float)r->qscale_orig_max));
}

#endif
