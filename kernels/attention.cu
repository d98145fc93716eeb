/* attention.cu — decode attention for one new token (flash-decoding): blocks (kv head, split)
 * each score a slice of the cached keys for all query heads of their group (GQA), keep the
 * unnormalised softmax-weighted sum of values with its max and sum, and the last block of each
 * kv head to finish combines the slices. RoPE, the Ministral-3 query scale and the KV-cache
 * write of the new token are fused in. Budget: 2 × n_kv × head_dim × 2 bytes per attended key at
 * streaming bandwidth (≈ 1–3 % of a decode step's bytes). */
#include <math.h>

#include "kernels/kern_util.cuh"
#include "kernels/kern_rope.cuh"

#define ATTN_THREADS 256
#define ATTN_WARPS (ATTN_THREADS / 32)
#define ATTN_MIN_CHUNK 64   /* keys per split below which fewer splits are used */
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

/* Shared memory (floats): q G*hd | scores G*chunk_max | red WARPS*G*hd | ml 2G | cm G*n_split | cw G*n_split */
template <int GM, int LPK>
__global__ void __launch_bounds__(ATTN_THREADS, 2)
attn_kernel(struct attn_params p)
{
    extern __shared__ float sm[];
    __shared__ int s_last;
    constexpr int KPW = 32 / LPK;            /* keys per warp step */
    constexpr int STEP = ATTN_WARPS * KPW;   /* keys per block step */
    const int hd = LPK * 8;
    const int g = blockIdx.x, s = blockIdx.y;
    const int G = p.n_heads / p.n_kv;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    float *q_s = sm;
    float *sc = q_s + G * hd;
    float *red = sc + G * p.chunk_max;
    float *ml = red + ATTN_WARPS * G * hd;
    float *cm = ml + 2 * G;
    float *cw = cm + G * p.n_split;

    kern_grid_launch_next();
    kern_grid_wait();
    const int pos = *p.pos;
    const int start = p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
    const int len = pos - start + 1;
    int n_eff = (len + ATTN_MIN_CHUNK - 1) / ATTN_MIN_CHUNK;
    if (n_eff > p.n_split)
        n_eff = p.n_split;
    const int chunk = (len + n_eff - 1) / n_eff;
    const int j0 = start + s * chunk;
    int j1 = j0 + chunk;
    if (j1 > pos + 1)
        j1 = pos + 1;
    const int n = s < n_eff ? j1 - j0 : 0;
    const int q_dim = p.n_heads * hd, kv_dim = p.n_kv * hd;
    const int half = hd / 2;
    uint16_t *kc = p.kc + (size_t)g * p.max_ctx * hd;
    uint16_t *vc = p.vc + (size_t)g * p.max_ctx * hd;
    if (tid == 0 && n > 1) {   /* stream this slice of the cache into L2 during the prologue */
        kern_prefetch_bulk(kc + (size_t)j0 * hd, (uint32_t)((n - 1) * hd * 2));
        kern_prefetch_bulk(vc + (size_t)j0 * hd, (uint32_t)((n - 1) * hd * 2));
    }

    /* rotated, scaled queries of this group */
    const float qs = kern_query_scale(&p.rope, pos) * p.softmax_scale;
    for (int i = tid; i < G * half; i += ATTN_THREADS) {
        int h = i / half, k = i % half, a, b;
        kern_rope_pair(&p.rope, hd, k, &a, &b);
        float c, sn;
        kern_rope_cs(&p.rope, pos, k, &c, &sn);
        const float *q = p.qkv + (size_t)(g * G + h) * hd;
        float x0 = q[a], x1 = q[b];
        q_s[h * hd + a] = (x0 * c - x1 * sn) * qs;
        q_s[h * hd + b] = (x0 * sn + x1 * c) * qs;
    }
    /* the block whose slice holds pos writes the new key (rotated) and value */
    if (n > 0 && pos < j1) {
        const float *k = p.qkv + q_dim + (size_t)g * hd;
        const float *v = p.qkv + q_dim + kv_dim + (size_t)g * hd;
        for (int k2 = tid; k2 < half; k2 += ATTN_THREADS) {
            int a, b;
            kern_rope_pair(&p.rope, hd, k2, &a, &b);
            float c, sn;
            kern_rope_cs(&p.rope, pos, k2, &c, &sn);
            float x0 = k[a], x1 = k[b];
            kc[(size_t)pos * hd + a] = kern_f32_to_bf16(x0 * c - x1 * sn);
            kc[(size_t)pos * hd + b] = kern_f32_to_bf16(x0 * sn + x1 * c);
        }
        for (int d = tid; d < hd; d += ATTN_THREADS)
            vc[(size_t)pos * hd + d] = kern_f32_to_bf16(v[d]);
    }
    __syncthreads();

    const int sub = lane / LPK, dl = (lane % LPK) * 8;
    /* scores, ATTN_KEY_UNROLL key loads in flight per lane */
    for (int base = warp * KPW; base < n; base += STEP * ATTN_KEY_UNROLL) {
        uint4 kv[ATTN_KEY_UNROLL];
#pragma unroll
        for (int u = 0; u < ATTN_KEY_UNROLL; u++) {
            int j = base + u * STEP + sub;
            kv[u] = j < n ? *(const uint4 *)(kc + (size_t)(j0 + j) * hd + dl) : make_uint4(0, 0, 0, 0);
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
    __syncthreads();
    /* softmax pieces per head */
    for (int h = warp; h < G; h += ATTN_WARPS) {
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
    __syncthreads();
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
                vv[u] = j < n ? *(const uint4 *)(vc + (size_t)(j0 + j) * hd + dl) : make_uint4(0, 0, 0, 0);
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
    __syncthreads();
    float *part = attn_part(p, s);
    if (s < n_eff) {
        for (int i = tid; i < G * hd; i += ATTN_THREADS) {
            float v = 0.f;
#pragma unroll
            for (int w = 0; w < ATTN_WARPS; w++)
                v += red[w * G * hd + i];
            part[(size_t)g * G * hd + i] = v;
        }
        for (int h = tid; h < G; h += ATTN_THREADS) {
            part[q_dim + g * G + h] = n > 0 ? ml[2 * h] : -INFINITY;
            part[q_dim + p.n_heads + g * G + h] = n > 0 ? ml[2 * h + 1] : 0.f;
        }
    }
    /* the last block of this kv head combines the splits */
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        int prev = atomicAdd(&p.counters[g], 1);
        s_last = prev == p.n_split - 1;
        if (s_last)
            p.counters[g] = 0;
    }
    __syncthreads();
    if (!s_last)
        return;
    __threadfence();
    for (int i = tid; i < G * n_eff; i += ATTN_THREADS) {   /* gather every split's max and sum */
        int h = i / n_eff, t = i % n_eff, qh = g * G + h;
        const float *pt = attn_part(p, t);
        cm[h * p.n_split + t] = __ldcg(pt + q_dim + qh);
        cw[h * p.n_split + t] = __ldcg(pt + q_dim + p.n_heads + qh);
    }
    __syncthreads();
    for (int h = tid; h < G; h += ATTN_THREADS) {   /* weight of each split: e^(m_t - M) / Σ */
        float M = -INFINITY, den = 0.f;
        for (int t = 0; t < n_eff; t++)
            M = fmaxf(M, cm[h * p.n_split + t]);
        for (int t = 0; t < n_eff; t++) {
            float mt = cm[h * p.n_split + t];
            float f = mt == -INFINITY ? 0.f : __expf(mt - M);
            den += f * cw[h * p.n_split + t];
            cm[h * p.n_split + t] = f;
        }
        for (int t = 0; t < n_eff; t++)
            cw[h * p.n_split + t] = cm[h * p.n_split + t] / den;
    }
    __syncthreads();
    /* each thread sums ATTN_COMBINE_EPT outputs, ATTN_COMBINE_SPLITS splits at a time: all
     * those loads in flight together */
    for (int b = 0; b < G * hd; b += ATTN_THREADS * ATTN_COMBINE_EPT) {
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
                    int i = b + k * ATTN_THREADS + tid;
                    o[dt][k] = t0 + dt < n_eff && i < G * hd
                                   ? __ldcg(attn_part(p, t0 + dt) + (size_t)g * G * hd + i) : 0.f;
                }
#pragma unroll
            for (int dt = 0; dt < ATTN_COMBINE_SPLITS; dt++)
#pragma unroll
                for (int k = 0; k < ATTN_COMBINE_EPT; k++) {
                    int i = b + k * ATTN_THREADS + tid;
                    if (t0 + dt < n_eff && i < G * hd)
                        num[k] += cw[(i / hd) * p.n_split + t0 + dt] * o[dt][k];
                }
        }
#pragma unroll
        for (int k = 0; k < ATTN_COMBINE_EPT; k++) {
            int i = b + k * ATTN_THREADS + tid;
            if (i < G * hd)
                p.out[(size_t)g * G * hd + i] = num[k];
        }
    }
}

template <int GM, int LPK>
static int attn_launch(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    int G = p.n_heads / p.n_kv;
    size_t smem = sizeof(float) * ((size_t)G * p.hd + (size_t)G * p.chunk_max +
                                   (size_t)ATTN_WARPS * G * p.hd + 2 * (size_t)G + 2 * (size_t)G * p.n_split);
    if (smem > 200 * 1024)
        return bora_errf(err, -EINVAL, "attention: %zu bytes of shared memory needed (chunk %d keys)",
                         smem, p.chunk_max);
    auto k = attn_kernel<GM, LPK>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, 100));
    CUDA_CHECK(kern_launch(k, dim3(p.n_kv, p.n_split), dim3(ATTN_THREADS), smem, s, p));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}

template <int GM>
static int attn_launch_hd(const struct attn_params &p, cudaStream_t s, struct bora_err *err)
{
    switch (p.hd) {
    case 16: return attn_launch<GM, 2>(p, s, err);
    case 32: return attn_launch<GM, 4>(p, s, err);
    case 64: return attn_launch<GM, 8>(p, s, err);
    case 128: return attn_launch<GM, 16>(p, s, err);
    case 256: return attn_launch<GM, 32>(p, s, err);
    }
    return bora_errf(err, -EINVAL, "attention: head_dim %d not supported (16, 32, 64, 128, 256)", p.hd);
}

extern "C" int kern_attention(const struct kern_attn_args *a, struct CUstream_st *stream,
                              struct bora_err *err)
{
    if (a->n_kv <= 0 || a->n_heads % a->n_kv)
        return bora_errf(err, -EINVAL, "attention: %d query heads not a multiple of %d kv heads",
                         a->n_heads, a->n_kv);
    int G = a->n_heads / a->n_kv;
    if (G > KERN_ATTN_MAX_GROUP)
        return bora_errf(err, -EINVAL, "attention: group of %d query heads per kv head (max %d)", G,
                         KERN_ATTN_MAX_GROUP);
    if (a->n_split < 1)
        return bora_errf(err, -EINVAL, "attention: n_split %d", a->n_split);
    struct attn_params p;
    p.qkv = a->qkv;
    p.kc = a->k_cache;
    p.vc = a->v_cache;
    p.out = a->out;
    p.part = a->partial;
    p.counters = a->counters;
    p.pos = a->d_pos;
    p.max_ctx = a->max_ctx;
    p.n_heads = a->n_heads;
    p.n_kv = a->n_kv;
    p.hd = a->head_dim;
    p.window = a->window;
    p.n_split = a->n_split;
    int len = a->window > 0 && a->window < a->max_ctx ? a->window : a->max_ctx;
    p.chunk_max = (len + a->n_split - 1) / a->n_split;   /* must match the kernel's split rule */
    if (p.chunk_max < ATTN_MIN_CHUNK)
        p.chunk_max = ATTN_MIN_CHUNK;
    p.softmax_scale = 1.f / sqrtf((float)a->head_dim);
    p.rope = a->rope;
    cudaStream_t s = (cudaStream_t)stream;
    if (G <= 4)
        return attn_launch_hd<4>(p, s, err);
    if (G <= 8)
        return attn_launch_hd<8>(p, s, err);
    return attn_launch_hd<16>(p, s, err);
}
