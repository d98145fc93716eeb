/* kern_attn.cuh — the body of decode attention for one (kv head, split) work item, shared by the
 * standalone flash-decoding kernel (attention.cu) and the persistent decode kernel
 * (decode_mega.cu): NT threads (tid 0..NT-1) of one block work on it and synchronise with named
 * barrier `bar` (0 = the whole block). Internal to kernels/. */
#ifndef BORA_KERNELS_KERN_ATTN_CUH
#define BORA_KERNELS_KERN_ATTN_CUH

#include <math.h>

#include "kernels/attn_shape.h"
#include "kernels/kern_util.cuh"
#include "kernels/kern_rope.cuh"

/* Barrier `id` over `n` threads (id 0 with n = blockDim.x is __syncthreads). */
__device__ __forceinline__ void attn_bar(int id, int n)
{
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(n) : "memory");
}

#define ATTN_KEY_UNROLL 4   /* key loads in flight per lane */
#define ATTN_COMBINE_EPT 6     /* outputs per thread in the combine */
#define ATTN_COMBINE_SPLITS 8  /* splits whose partials are loaded together */

struct attn_params {
    const float *qkv;
    uint16_t *kc, *vc;
    float *out, *part;
    int *counters;
    const int *pos;
    int max_ctx, n_heads, n_kv, hd, window, n_split, chunk_max;
    int blocks;             /* tensor-core variant (attention.cu): blocks to aim at, all kv heads */
    float softmax_scale;
    struct kern_rope rope;
};

__device__ __forceinline__ void attn_unpack8(uint4 v, float f[8])
{
    f[0] = kern_bf16_lo(v.x); f[1] = kern_bf16_hi(v.x);
    f[2] = kern_bf16_lo(v.y); f[3] = kern_bf16_hi(v.y);
    f[4] = kern_bf16_lo(v.z); f[5] = kern_bf16_hi(v.z);
    f[6] = kern_bf16_lo(v.w); f[7] = kern_bf16_hi(v.w);
}

/* Partial layout per split s: o (n_heads*hd) then m (n_heads) then l (n_heads). */
__device__ __forceinline__ float *attn_part(const struct attn_params &p, int s)
{
    return p.part + (size_t)s * (size_t)p.n_heads * (p.hd + 2);
}

/* Stage ST of the reduce-scatter of d[GM] over LPK lanes (offsets LPK/2, LPK/4, ..., 1): while a
 * lane holds more than one head, partners swap halves; then plain butterflies. Compile-time
 * indices only, so d stays in registers. */
template <int GM, int LPK, int ST>
__device__ __forceinline__ void attn_reduce_scatter(float (&d)[GM], int lane, int &hbase)
{
    constexpr int o = LPK >> (ST + 1);
    constexpr int c = GM >> ST;
    if constexpr (o >= 1) {
        const bool up = (lane & o) != 0;
        if constexpr (c > 1) {
#pragma unroll
            for (int i = 0; i < c / 2; i++) {
                float send = up ? d[i] : d[i + c / 2];
                float keep = up ? d[i + c / 2] : d[i];
                d[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
            }
            hbase += up ? c / 2 : 0;
        } else {
            d[0] += __shfl_xor_sync(0xffffffffu, d[0], o);
        }
        attn_reduce_scatter<GM, LPK, ST + 1>(d, lane, hbase);
    }
}

/* Keys per split at least: ATTN_MIN_CHUNK, or fewer when NT threads load fewer keys in one
 * pass (so a split's keys and values are each one round trip). */
template <int LPK, int NT>
__device__ __forceinline__ constexpr int attn_min_chunk()
{
    return (NT / 32) * (32 / LPK) * ATTN_KEY_UNROLL < ATTN_MIN_CHUNK ? (NT / 32) * (32 / LPK) * ATTN_KEY_UNROLL
                                                                   : ATTN_MIN_CHUNK;
}

/* The weight of split `lane` of one head among n_eff splits whose maxima m and sums l the lanes
 * hold (a warp per head, a lane per split): e^(m - M) / Σ_t e^(m_t - M) l_t, M the largest m.
 * Every lane of the warp calls it; lanes ≥ n_eff get 0 and contribute nothing. */
__device__ __forceinline__ float attn_split_weight(float m, float l, int lane, int n_eff)
{
    if (lane >= n_eff) {
        m = -INFINITY;
        l = 0.f;
    }
    const float M = kern_warp_max(m);
    const float f = lane < n_eff && m != -INFINITY ? __expf(m - M) : 0.f;
    const float den = kern_warp_sum(f * l);
    return lane < n_eff ? f / den : 0.f;
}

/* The keys split s of a kv head attends for the token at pos: [*j0, *j0 + n) with n returned
 * (0 for splits beyond the *n_eff the context needs); *j1 = min(j0 + chunk, pos + 1). */
__device__ __forceinline__ int attn_slice(const struct attn_params &p, int pos, int s, int *j0, int *j1, int *n_eff,
                                          int minc = ATTN_MIN_CHUNK)
{
    const int start = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
    const int len = pos - start + 1;
    int ne = (len + minc - 1) / minc;
    if (ne > p.n_split)
        ne = p.n_split;
    const int chunk = (len + ne - 1) / ne;
    *j0 = start + s * chunk;
    *j1 = *j0 + chunk < pos + 1 ? *j0 + chunk : pos + 1;
    *n_eff = ne;
    return s < ne ? *j1 - *j0 : 0;
}

/* tr (diagnostics): %globaltimer at the item's steps, by thread 0 */
#define ATTN_TR(i)                                                         \
    do {                                                                   \
        if (tr && tid == 0) {                                              \
            unsigned long long t_;                                         \
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_));          \
            tr[i] = t_;                                                    \
        }                                                                  \
    } while (0)

/* A word of the persistent kernel's tagged qkv (tag << 32 | float bits), read whole. */
__device__ __forceinline__ unsigned long long attn_ld_word(const unsigned long long *a)
{
    unsigned long long v;
    asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(v) : "l"(a) : "memory");
    return v;
}

/* The item's prologue: the rotated, scaled queries of kv group g into q_s (G × hd floats); the item
 * whose slice [.., j1) holds pos also writes the new key (rotated) and value into the cache.
 * Every load first, then the math: one round trip. The caller synchronises before reading q_s
 * or the new cache row. TG: q, k and v come from qt, the qkv as tagged words (same indices), each
 * loaded again until its tag is at least qtag (the persistent kernel, which then needs no barrier
 * between its qkv phase and the attention); with qt NULL, as without TG. */
template <int GM, int LPK, int NT, bool TG = false, bool K8 = false>
__device__ __forceinline__ void attn_prologue(const struct attn_params &p, uint16_t *kc, uint16_t *vc, int g,
                                              int pos, int j1, int n, float *q_s, int tid,
                                              const unsigned long long *qt = nullptr, unsigned qtag = 0)
{
    const int hd = LPK * 8;
    const int G = p.n_heads / p.n_kv;
    const int q_dim = p.n_heads * hd, kv_dim = p.n_kv * hd;
    const int half = hd / 2;
    const float qs = kern_query_scale(&p.rope, pos) * p.softmax_scale;
    constexpr int QI = (GM * LPK * 4 + NT - 1) / NT, KI = (LPK * 4 + NT - 1) / NT, VI = (LPK * 8 + NT - 1) / NT;
    const bool writer = n > 0 && pos < j1;
    const float *kn = p.qkv + q_dim + (size_t)g * hd, *vn = p.qkv + q_dim + kv_dim + (size_t)g * hd;
    float q0[QI], q1[QI], qf[QI], k0[KI], k1[KI], kf[KI], vn_[VI];
    if (TG && qt) {   /* every word again until all carry the tag (one round trip once they do) */
        unsigned long long wq0[QI], wq1[QI], wk0[KI], wk1[KI], wv[VI];
        const unsigned long long *kw = qt + q_dim + (size_t)g * hd, *vw = qt + q_dim + kv_dim + (size_t)g * hd;
        for (;;) {
            const unsigned long long all = ~0ull;
            unsigned low = 0xffffffffu;
#pragma unroll
            for (int u = 0; u < QI; u++) {
                const int i = tid + u * NT;
                wq0[u] = wq1[u] = all;
                if (i < G * half) {
                    int a, b;
                    kern_rope_pair(&p.rope, hd, i % half, &a, &b);
                    const unsigned long long *q = qt + (size_t)(g * G + i / half) * hd;
                    wq0[u] = attn_ld_word(q + a);
                    wq1[u] = attn_ld_word(q + b);
                }
            }
#pragma unroll
            for (int u = 0; u < KI; u++) {
                const int k2 = tid + u * NT;
                wk0[u] = wk1[u] = all;
                if (writer && k2 < half) {
                    int a, b;
                    kern_rope_pair(&p.rope, hd, k2, &a, &b);
                    wk0[u] = attn_ld_word(kw + a);
                    wk1[u] = attn_ld_word(kw + b);
                }
            }
#pragma unroll
            for (int u = 0; u < VI; u++) {
                const int d = tid + u * NT;
                wv[u] = writer && d < hd ? attn_ld_word(vw + d) : all;
            }
#pragma unroll
            for (int u = 0; u < QI; u++)
                low = min(low, min((unsigned)(wq0[u] >> 32), (unsigned)(wq1[u] >> 32)));
#pragma unroll
            for (int u = 0; u < KI; u++)
                low = min(low, min((unsigned)(wk0[u] >> 32), (unsigned)(wk1[u] >> 32)));
#pragma unroll
            for (int u = 0; u < VI; u++)
                low = min(low, (unsigned)(wv[u] >> 32));
            if (low >= qtag)
                break;
        }
#pragma unroll
        for (int u = 0; u < QI; u++) {
            q0[u] = __uint_as_float((unsigned)wq0[u]);
            q1[u] = __uint_as_float((unsigned)wq1[u]);
            qf[u] = tid + u * NT < G * half ? p.rope.inv_freq[(tid + u * NT) % half] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < KI; u++) {
            k0[u] = __uint_as_float((unsigned)wk0[u]);
            k1[u] = __uint_as_float((unsigned)wk1[u]);
            kf[u] = writer && tid + u * NT < half ? p.rope.inv_freq[tid + u * NT] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < VI; u++)
            vn_[u] = __uint_as_float((unsigned)wv[u]);
    } else {
#pragma unroll
        for (int u = 0; u < QI; u++) {
            const int i = tid + u * NT;
            q0[u] = q1[u] = qf[u] = 0.f;
            if (i < G * half) {
                int a, b;
                kern_rope_pair(&p.rope, hd, i % half, &a, &b);
                const float *q = p.qkv + (size_t)(g * G + i / half) * hd;
                q0[u] = __ldcg(q + a);   /* written by other blocks (persistent kernel) */
                q1[u] = __ldcg(q + b);
                qf[u] = p.rope.inv_freq[i % half];
            }
        }
#pragma unroll
        for (int u = 0; u < KI; u++) {
            const int k2 = tid + u * NT;
            k0[u] = k1[u] = kf[u] = 0.f;
            if (writer && k2 < half) {
                int a, b;
                kern_rope_pair(&p.rope, hd, k2, &a, &b);
                k0[u] = __ldcg(kn + a);
                k1[u] = __ldcg(kn + b);
                kf[u] = p.rope.inv_freq[k2];
            }
        }
#pragma unroll
        for (int u = 0; u < VI; u++) {
            const int d = tid + u * NT;
            vn_[u] = writer && d < hd ? __ldcg(vn + d) : 0.f;
        }
    }
#pragma unroll
    for (int u = 0; u < QI; u++) {
        const int i = tid + u * NT;
        if (i < G * half) {
            const int h = i / half, k = i % half;
            int a, b;
            kern_rope_pair(&p.rope, hd, k, &a, &b);
            float c, sn;
            kern_rope_cs_f(&p.rope, pos, qf[u], &c, &sn);
            q_s[h * hd + a] = (q0[u] * c - q1[u] * sn) * qs;
            q_s[h * hd + b] = (q0[u] * sn + q1[u] * c) * qs;
        }
    }
    if (writer) {
#pragma unroll
        for (int u = 0; u < KI; u++) {
            const int k2 = tid + u * NT;
            if (k2 < half) {
                int a, b;
                kern_rope_pair(&p.rope, hd, k2, &a, &b);
                float c, sn;
                kern_rope_cs_f(&p.rope, pos, kf[u], &c, &sn);
                kern_kv_put<K8>(kc, (size_t)pos * hd + a, k0[u] * c - k1[u] * sn);
                kern_kv_put<K8>(kc, (size_t)pos * hd + b, k0[u] * sn + k1[u] * c);
            }
        }
#pragma unroll
        for (int u = 0; u < VI; u++) {
            const int d = tid + u * NT;
            if (d < hd)
                kern_kv_put<K8>(vc, (size_t)pos * hd + d, vn_[u]);
        }
    }
}

/* Whether this block holds the last split of kv group g to finish (all NT threads call it, after
 * writing their partials; all get the same answer). One thread fences for the block after the
 * barrier (release of every thread's partials before the count; acquire of the other splits'
 * after it) and resets the counter for the next layer. */
template <int NT>
__device__ __forceinline__ bool attn_last_split(int *counters, int g, int n_eff, int *s_last_p, int tid, int bar)
{
    attn_bar(bar, NT);
    if (tid == 0) {
        __threadfence();
        int prev = atomicAdd(&counters[g], 1);
        *s_last_p = prev == n_eff - 1;
        if (*s_last_p) {
            counters[g] = 0;
            __threadfence();
        }
    }
    attn_bar(bar, NT);
    return *s_last_p != 0;
}

/* The item's end, once its partial (o, m, l of split s) is written: the last split of kv group g
 * to finish combines every split into p.out (and the largest |output| into *amax). cm and cw
 * hold G × n_split floats each; s_last_p is one shared int. All NT threads call it. */
template <int GM, int LPK, int NT>
__device__ __forceinline__ void attn_finish(const struct attn_params &p, int *counters, int g, int n_eff, float *cm,
                                            float *cw, int *s_last_p, int tid, int bar, int *amax,
                                            unsigned long long *tr)
{
    constexpr int ATTN_WARPS_ = NT / 32;
    const int hd = LPK * 8;
    const int G = p.n_heads / p.n_kv;
    const int q_dim = p.n_heads * hd;
    const int lane = tid & 31, warp = tid >> 5;
    /* the last block of this kv head combines the splits; the others read through L2 */
    const bool last = attn_last_split<NT>(counters, g, n_eff, s_last_p, tid, bar);
    ATTN_TR(5);
    if (!last)
        return;
    /* few splits and one element block (short contexts): every split's outputs are loaded
     * together with the maxima and sums below, in one round trip */
    constexpr int FEPT = (GM * LPK * 8 + NT - 1) / NT;
    constexpr int FSPL = FEPT <= 2 ? 16 : FEPT <= 3 ? 12 : 0;
    const bool fast = FSPL > 0 && n_eff <= FSPL && G * hd <= NT * FEPT;
    /* a warp per head, a lane per split: the maxima and sums are loaded first (volatile loads
     * keep that order), then the outputs, so both are in flight before either is used */
    const bool one = n_eff <= 32 && G <= ATTN_WARPS_;
    float m1 = -INFINITY, l1 = 0.f;
    if (one && warp < G && lane < n_eff) {
        const float *pt = attn_part(p, lane);
        m1 = kern_ldcg_v(pt + q_dim + g * G + warp);
        l1 = kern_ldcg_v(pt + q_dim + p.n_heads + g * G + warp);
    }
    float of[FSPL > 0 ? FSPL : 1][FEPT];
    if (FSPL > 0 && fast) {
#pragma unroll
        for (int t = 0; t < (FSPL > 0 ? FSPL : 1); t++)
#pragma unroll
            for (int k = 0; k < FEPT; k++) {
                const int i = k * NT + tid;
                of[t][k] = t < n_eff && i < G * hd ? kern_ldcg_v(attn_part(p, t) + (size_t)g * G * hd + i) : 0.f;
            }
    }
    if (one && warp < G) {
        const float wt = attn_split_weight(m1, l1, lane, n_eff);
        if (lane < n_eff)
            cw[warp * p.n_split + lane] = wt;
    }
    /* the same for more splits or more heads than warps: every maximum and sum loaded first, in
     * one pass over the block (one round trip instead of one per head a warp takes) */
    if (!one) {
        for (int i = tid; i < G * n_eff; i += NT) {
            const int h = i / n_eff, t = i % n_eff;
            const float *pt = attn_part(p, t);
            cm[h * p.n_split + t] = __ldcg(pt + q_dim + g * G + h);
            cw[h * p.n_split + t] = __ldcg(pt + q_dim + p.n_heads + g * G + h);
        }
        attn_bar(bar, NT);
    }
    for (int h = warp; !one && h < G; h += ATTN_WARPS_) {
        float M = -INFINITY;
        for (int t = lane; t < n_eff; t += 32)
            M = fmaxf(M, cm[h * p.n_split + t]);
        M = kern_warp_max(M);
        float den = 0.f;
        for (int t = lane; t < n_eff; t += 32) {
            const float mt = cm[h * p.n_split + t];
            const float f = mt == -INFINITY ? 0.f : __expf(mt - M);
            den += f * cw[h * p.n_split + t];
            cm[h * p.n_split + t] = f;
        }
        den = kern_warp_sum(den);
        for (int t = lane; t < n_eff; t += 32)
            cw[h * p.n_split + t] = cm[h * p.n_split + t] / den;
    }
    ATTN_TR(6);
    attn_bar(bar, NT);
    ATTN_TR(7);
    if (FSPL > 0 && fast) {
        float mx = 0.f;
#pragma unroll
        for (int k = 0; k < FEPT; k++) {
            const int i = k * NT + tid;
            if (i < G * hd) {
                float num = 0.f;
#pragma unroll
                for (int t = 0; t < (FSPL > 0 ? FSPL : 1); t++)
                    if (t < n_eff)
                        num += cw[(i / hd) * p.n_split + t] * of[t][k];
                p.out[(size_t)g * G * hd + i] = num;
                mx = fmaxf(mx, fabsf(num));
            }
        }
        if (amax) {
            mx = kern_warp_max(mx);
            if ((tid & 31) == 0)
                atomicMax(amax, __float_as_int(mx));
        }
        ATTN_TR(8);
        return;
    }
    /* each thread sums ATTN_COMBINE_EPT outputs, ATTN_COMBINE_SPLITS splits at a time: all
     * those loads in flight together */
    for (int b = 0; b < G * hd; b += NT * ATTN_COMBINE_EPT) {
        float num[ATTN_COMBINE_EPT];
#pragma unroll
        for (int k = 0; k < ATTN_COMBINE_EPT; k++)
            num[k] = 0.f;
        for (int t0 = 0; t0 < n_eff; t0 += ATTN_COMBINE_SPLITS) {
            float o[ATTN_COMBINE_SPLITS][ATTN_COMBINE_EPT];
#pragma unroll
            for (int dt = 0; dt < ATTN_COMBINE_SPLITS; dt++)
#pragma unroll
                for (int k = 0; k < ATTN_COMBINE_EPT; k++) {
                    int i = b + k * NT + tid;
                    o[dt][k] = t0 + dt < n_eff && i < G * hd
                                   ? __ldcg(attn_part(p, t0 + dt) + (size_t)g * G * hd + i) : 0.f;
                }
#pragma unroll
            for (int dt = 0; dt < ATTN_COMBINE_SPLITS; dt++)
#pragma unroll
                for (int k = 0; k < ATTN_COMBINE_EPT; k++) {
                    int i = b + k * NT + tid;
                    if (t0 + dt < n_eff && i < G * hd)
                        num[k] += cw[(i / hd) * p.n_split + t0 + dt] * o[dt][k];
                }
        }
        float mx = 0.f;
#pragma unroll
        for (int k = 0; k < ATTN_COMBINE_EPT; k++) {
            int i = b + k * NT + tid;
            if (i < G * hd) {
                p.out[(size_t)g * G * hd + i] = num[k];
                mx = fmaxf(mx, fabsf(num[k]));
            }
        }
        if (amax) {   /* the largest |output|, for a reader that scales it (persistent kernel) */
            mx = kern_warp_max(mx);
            if ((tid & 31) == 0)
                atomicMax(amax, __float_as_int(mx));
        }
    }
    ATTN_TR(8);
}

/* Writes the partial of split s of kv group g from nws per-warp slices of sums in red (G × hd
 * floats each) and the heads' maxima and sums in ml: as f32 sums (attn_finish and the combining
 * load of decode_mega.cu read them) or, half_out, as o / l of every head scaled by 2^e so the
 * item's largest magnitude lies in [2^13, 2^14) (no f16 overflow whatever the values), in f16
 * pairs in the first G hd / 2 floats of the kv group's o, e (as a float) after the n_heads hd / 2
 * floats of o, and m and l as before. n: keys of the split. q_s (the item's queries, no longer
 * needed) is scratch for one float a warp. All NT threads call it. */
template <int GM, int LPK, int NT, int NWS>
__device__ __forceinline__ void attn_part_out(const struct attn_params &p, int g, int s, int n, const float *red,
                                              const float *ml, float *q_s, int tid, int bar, bool half_out)
{
    constexpr int ATTN_WARPS_ = NT / 32;
    const int hd = LPK * 8;
    const int G = p.n_heads / p.n_kv;
    const int q_dim = p.n_heads * hd;
    const int lane = tid & 31, warp = tid >> 5;
    float *part = attn_part(p, s);
    if (half_out) {
        constexpr int PP = (GM * LPK * 4 + NT - 1) / NT;   /* pairs of outputs a thread */
        float2 ov[PP];
        float mx = 0.f;
#pragma unroll
        for (int k = 0; k < PP; k++) {
            const int i2 = tid + k * NT;
            ov[k] = make_float2(0.f, 0.f);
            if (i2 < G * hd / 2) {
#pragma unroll
                for (int w = 0; w < NWS; w++) {
                    ov[k].x += red[w * G * hd + 2 * i2];
                    ov[k].y += red[w * G * hd + 2 * i2 + 1];
                }
                const float l = ml[2 * (2 * i2 / hd) + 1];
                const float il = l > 0.f ? 1.f / l : 0.f;
                ov[k].x *= il;
                ov[k].y *= il;
                mx = fmaxf(mx, fmaxf(fabsf(ov[k].x), fabsf(ov[k].y)));
            }
        }
        mx = kern_warp_max(mx);
        if (lane == 0)
            q_s[warp] = mx;
        attn_bar(bar, NT);
        mx = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS_; w++)
            mx = fmaxf(mx, q_s[w]);
        const int e = kern_scale_exp(mx);
        const float sf = ldexpf(1.f, e);
        __half2 *po = (__half2 *)part + (size_t)g * G * hd / 2;
#pragma unroll
        for (int k = 0; k < PP; k++) {
            const int i2 = tid + k * NT;
            if (i2 < G * hd / 2)
                po[i2] = __floats2half2_rn(ov[k].x * sf, ov[k].y * sf);
        }
        if (tid == 0)
            part[q_dim / 2 + g] = (float)e;
    } else {
        for (int i = tid; i < G * hd; i += NT) {
            float v = 0.f;
#pragma unroll
            for (int w = 0; w < NWS; w++)
                v += red[w * G * hd + i];
            part[(size_t)g * G * hd + i] = v;
        }
    }
    for (int h = tid; h < G; h += NT) {
        part[q_dim + g * G + h] = n > 0 ? ml[2 * h] : -INFINITY;
        part[q_dim + p.n_heads + g * G + h] = n > 0 ? ml[2 * h + 1] : 0.f;
    }
}

/* Shared memory (floats): q G*hd | scores G*chunk_max | red WARPS*G*hd | ml 2G | cm G*n_split | cw G*n_split.
 * pos: the new token's position (*p.pos, read once by the caller). COMBINE: the last split of
 * the kv head combines the splits into p.out (attn_finish); without, the item ends with its
 * partial written in f16 (attn_part_out's half_out; the caller's barrier orders it) and the
 * reader combines (decode_mega.cu mega_load_att). */
template <int GM, int LPK, int NT, bool COMBINE = true, bool TG = false, bool K8 = false>
__device__ __forceinline__ void attn_item(const struct attn_params &p, uint16_t *kc_l, uint16_t *vc_l,
                                          int *counters, int g, int s, int pos, float *sm, int *s_last_p, int tid,
                                          int bar, int *amax = nullptr, unsigned long long *tr = nullptr,
                                          const unsigned long long *qt = nullptr, unsigned qtag = 0)
{
    constexpr int ATTN_WARPS_ = NT / 32;
    constexpr int KPW = 32 / LPK;            /* keys per warp step */
    constexpr int STEP = ATTN_WARPS_ * KPW;  /* keys per block step */
    const int hd = LPK * 8;
    const int G = p.n_heads / p.n_kv;
    const int lane = tid & 31, warp = tid >> 5;
    float *q_s = sm;
    float *sc = q_s + G * hd;
    float *red = sc + G * p.chunk_max;
    float *ml = red + ATTN_WARPS_ * G * hd;
    float *cm = ml + 2 * G;
    float *cw = cm + G * p.n_split;

    int j0, j1, n_eff;
    const int n = attn_slice(p, pos, s, &j0, &j1, &n_eff, attn_min_chunk<LPK, NT>());
    if (s >= n_eff)   /* a split the context does not need: no work, and not counted below */
        return;
    ATTN_TR(0);
    uint16_t *kc = (uint16_t *)kern_kv_at<K8>(kc_l, (size_t)g * p.max_ctx * hd);   /* K8: e4m3 bytes */
    uint16_t *vc = (uint16_t *)kern_kv_at<K8>(vc_l, (size_t)g * p.max_ctx * hd);
    const int sub = lane / LPK, dl = (lane % LPK) * 8;
    if (tid == 0 && n > 1) {   /* the slice streams into L2 during the prologue */
        kern_prefetch_bulk(kern_kv_at<K8>(kc, (size_t)j0 * hd), (uint32_t)((n - 1) * hd * (K8 ? 1 : 2)));
        kern_prefetch_bulk(kern_kv_at<K8>(vc, (size_t)j0 * hd), (uint32_t)((n - 1) * hd * (K8 ? 1 : 2)));
    }

    attn_prologue<GM, LPK, NT, TG, K8>(p, kc, vc, g, pos, j1, n, q_s, tid, qt, qtag);
    attn_bar(bar, NT);
    ATTN_TR(1);

    /* scores, ATTN_KEY_UNROLL key loads in flight per lane */
    for (int base = warp * KPW; base < n; base += STEP * ATTN_KEY_UNROLL) {
        uint4 kv[ATTN_KEY_UNROLL];
#pragma unroll
        for (int u = 0; u < ATTN_KEY_UNROLL; u++) {
            int j = base + u * STEP + sub;
            kv[u] = j < n ? kern_kv_get8<K8>(kc, (size_t)(j0 + j) * hd + dl) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < ATTN_KEY_UNROLL; u++) {
            int j = base + u * STEP + sub;
            float kf[8];
            attn_unpack8(kv[u], kf);
            float d[GM];   /* this lane's 8-dim part of q_h . k for every head of the group */
#pragma unroll
            for (int h = 0; h < GM; h++) {
                d[h] = 0.f;
                if (h < G) {
                    const float4 *qv = (const float4 *)(q_s + h * hd + dl);
                    float4 a = qv[0], b = qv[1];
                    d[h] = a.x * kf[0] + a.y * kf[1] + a.z * kf[2] + a.w * kf[3] + b.x * kf[4] +
                           b.y * kf[5] + b.z * kf[6] + b.w * kf[7];
                }
            }
            /* reduce-scatter over the LPK lanes of this key: each stage halves the heads a lane
             * holds (GM/2 + GM/4 + ... shuffles instead of GM × log2(LPK)); lanes left with one
             * head finish with plain butterflies */
            int hbase = 0;
            attn_reduce_scatter<GM, LPK, 0>(d, lane, hbase);
            constexpr int LEFT = GM >= LPK ? GM / LPK : 1;   /* heads per lane at the end */
            constexpr int DUP = GM >= LPK ? 0 : LPK / GM - 1; /* lanes holding the same sums */
            if (j < n && ((lane % LPK) & DUP) == 0) {
#pragma unroll
                for (int i = 0; i < LEFT; i++)
                    if (hbase + i < G)
                        sc[(hbase + i) * p.chunk_max + j] = d[i];
            }
        }
    }
    attn_bar(bar, NT);
    ATTN_TR(2);
    /* softmax pieces per head */
    for (int h = warp; h < G; h += ATTN_WARPS_) {
        float m = -INFINITY;
        for (int j = lane; j < n; j += 32)
            m = fmaxf(m, sc[h * p.chunk_max + j]);
        m = kern_warp_max(m);
        float l = 0.f;
        for (int j = lane; j < n; j += 32) {
            float e = __expf(sc[h * p.chunk_max + j] - m);
            sc[h * p.chunk_max + j] = e;
            l += e;
        }
        l = kern_warp_sum(l);
        if (lane == 0) {
            ml[2 * h] = m;
            ml[2 * h + 1] = l;
        }
    }
    attn_bar(bar, NT);
    ATTN_TR(3);
    /* weighted values, HV heads per pass over the slice (bounds the accumulators' registers) */
    constexpr int HV = GM < 8 ? GM : 8;
    for (int h0 = 0; h0 < G; h0 += HV) {
        float acc[HV][8];
#pragma unroll
        for (int h = 0; h < HV; h++)
#pragma unroll
            for (int i = 0; i < 8; i++)
                acc[h][i] = 0.f;
        for (int base = warp * KPW; base < n; base += STEP * ATTN_KEY_UNROLL) {
            uint4 vv[ATTN_KEY_UNROLL];
#pragma unroll
            for (int u = 0; u < ATTN_KEY_UNROLL; u++) {
                int j = base + u * STEP + sub;
                vv[u] = j < n ? kern_kv_get8<K8>(vc, (size_t)(j0 + j) * hd + dl) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < ATTN_KEY_UNROLL; u++) {
                int j = base + u * STEP + sub;
                if (j < n) {
                    float vf[8];
                    attn_unpack8(vv[u], vf);
#pragma unroll
                    for (int h = 0; h < HV; h++) {
                        if (h0 + h >= G)
                            break;
                        float pj = sc[(h0 + h) * p.chunk_max + j];
#pragma unroll
                        for (int i = 0; i < 8; i++)
                            acc[h][i] = fmaf(pj, vf[i], acc[h][i]);
                    }
                }
            }
        }
#pragma unroll
        for (int h = 0; h < HV; h++) {
            if (h0 + h >= G)
                break;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float v = acc[h][i];
#pragma unroll
                for (int o = LPK; o < 32; o <<= 1)
                    v += __shfl_xor_sync(0xffffffffu, v, o);
                if (sub == 0)
                    red[(warp * G + h0 + h) * hd + dl + i] = v;
            }
        }
    }
    attn_bar(bar, NT);
    ATTN_TR(4);
    if (s < n_eff)
        attn_part_out<GM, LPK, NT, ATTN_WARPS_>(p, g, s, n, red, ml, q_s, tid, bar, !COMBINE);
    if constexpr (COMBINE)
        attn_finish<GM, LPK, NT>(p, counters, g, n_eff, cm, cw, s_last_p, tid, bar, amax, tr);
    else
        ATTN_TR(5);
}


/* attn_smem_bytes and attn_chunk_max: kernels/attn_shape.h (kernels/plan.c sizes the splits with them). */

#endif
