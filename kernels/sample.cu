/* sample.cu — on-GPU choice of the next token, so only its id crosses to the host: greedy
 * argmax (lowest id on ties) or temperature + top-k + top-p within KERN_SAMPLE_MAX_K candidates
 * (radix select of the k-th largest logit, bitonic sort, nucleus cut, one uniform draw hashed
 * from seed and position). One block; budget ≈ 5 µs greedy, ≈ 30 µs sampled at vocab 131072. */
#include <math.h>

#include "kernels/kern_util.cuh"

#define SAMPLE_THREADS 1024

__device__ __forceinline__ uint32_t sample_key(float f)
{
    if (isnan(f))
        return 0;
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float sample_uniform(uint32_t seed, int pos)
{
    uint64_t z = ((uint64_t)seed << 32) ^ (uint64_t)(uint32_t)pos;
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.f / 16777216.f);
}

/* Block argmax; ties go to the lowest index, NaNs never win. The logits are read as float4s, eight a
 * thread in flight at once (one round trip through L2 for vocab ≤ 32 × blockDim.x), not one
 * dependent load after another. */
#define SAMPLE_U 8
__device__ __forceinline__ void sample_take(float v, int i, float *best, int *bi)
{
    if (v > *best || (v == *best && i < *bi)) {
        *best = v;
        *bi = i;
    }
}

__device__ int sample_argmax(const float *l, int vocab, float *sv, int *si)
{
    float best = -INFINITY;
    int bi = 0x7fffffff;
    const int n4 = (uintptr_t)l % 16 == 0 ? vocab / 4 : 0;
    const float4 *l4 = (const float4 *)l;
    for (int base = threadIdx.x; base < n4; base += SAMPLE_U * blockDim.x) {
        float4 v[SAMPLE_U];
#pragma unroll
        for (int k = 0; k < SAMPLE_U; k++) {
            const int c = base + k * blockDim.x;
            v[k] = c < n4 ? l4[c] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int k = 0; k < SAMPLE_U; k++) {
            const int c = base + k * blockDim.x;
            if (c < n4) {
                sample_take(v[k].x, 4 * c, &best, &bi);
                sample_take(v[k].y, 4 * c + 1, &best, &bi);
                sample_take(v[k].z, 4 * c + 2, &best, &bi);
                sample_take(v[k].w, 4 * c + 3, &best, &bi);
            }
        }
    }
    for (int i = 4 * n4 + threadIdx.x; i < vocab; i += blockDim.x)
        sample_take(l[i], i, &best, &bi);
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, best, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        if (v2 > best || (v2 == best && i2 < bi)) {
            best = v2;
            bi = i2;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < (int)(blockDim.x >> 5) ? sv[lane] : -INFINITY;
        bi = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, best, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            if (v2 > best || (v2 == best && i2 < bi)) {
                best = v2;
                bi = i2;
            }
        }
        if (lane == 0)
            si[0] = bi == 0x7fffffff ? 0 : bi;
    }
    __syncthreads();
    return si[0];
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(const float *logits, int vocab,
                                                                struct kern_state *st, struct kern_state *mirror)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ unsigned hist[256];
    __shared__ uint32_t s_prefix;
    __shared__ int s_remaining, s_cnt, s_tie;
    __shared__ float cval[KERN_SAMPLE_MAX_K];
    __shared__ int cidx[KERN_SAMPLE_MAX_K];
    __shared__ int s_pick;

    kern_grid_launch_next();
    kern_grid_wait();
    const int pos = st->pos;
    const float T = st->temperature;
    int K = st->top_k > 0 && st->top_k < KERN_SAMPLE_MAX_K ? st->top_k : KERN_SAMPLE_MAX_K;
    if (K > vocab)
        K = vocab;
    int id;
    if (T <= 0.f || K == 1) {
        id = sample_argmax(logits, vocab, sv, si);
    } else {
        /* radix select: the key of the K-th largest logit */
        uint32_t prefix = 0, mask = 0;
        if (threadIdx.x == 0)
            s_remaining = K;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = threadIdx.x; i < 256; i += blockDim.x)
                hist[i] = 0;
            __syncthreads();
            for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
                uint32_t k = sample_key(logits[i]);
                if ((k & mask) == prefix)
                    atomicAdd(&hist[(k >> shift) & 255], 1u);
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                int rem = s_remaining, cum = 0, b = 255;
                for (; b > 0; b--) {
                    if (cum + (int)hist[b] >= rem)
                        break;
                    cum += (int)hist[b];
                }
                s_remaining = rem - cum;
                s_prefix = prefix | ((uint32_t)b << shift);
            }
            __syncthreads();
            prefix = s_prefix;
            mask |= 255u << shift;
        }
        /* gather: every key above the threshold, and enough ties */
        if (threadIdx.x == 0) {
            s_cnt = 0;
            s_tie = 0;
        }
        __syncthreads();
        int ties = s_remaining;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            uint32_t k = sample_key(logits[i]);
            bool take = k > prefix;
            if (k == prefix)
                take = atomicAdd(&s_tie, 1) < ties;
            if (take) {
                int slot = atomicAdd(&s_cnt, 1);
                if (slot < KERN_SAMPLE_MAX_K) {
                    cval[slot] = logits[i];
                    cidx[slot] = i;
                }
            }
        }
        __syncthreads();
        int n = s_cnt < KERN_SAMPLE_MAX_K ? s_cnt : KERN_SAMPLE_MAX_K;
        for (int i = n + threadIdx.x; i < KERN_SAMPLE_MAX_K; i += blockDim.x) {
            cval[i] = -INFINITY;
            cidx[i] = 0x7fffffff;
        }
        __syncthreads();
        /* bitonic sort, descending by value then ascending by id */
        for (int size = 2; size <= KERN_SAMPLE_MAX_K; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int i = threadIdx.x; i < KERN_SAMPLE_MAX_K; i += blockDim.x) {
                    int j = i ^ stride;
                    if (j > i) {
                        bool desc = (i & size) == 0;
                        float a = cval[i], b = cval[j];
                        int ia = cidx[i], ib = cidx[j];
                        bool a_first = a > b || (a == b && ia < ib);
                        if (a_first != desc) {
                            cval[i] = b; cval[j] = a;
                            cidx[i] = ib; cidx[j] = ia;
                        }
                    }
                }
                __syncthreads();
            }
        }
        /* nucleus cut and draw, by warp 0 in chunks of 32 */
        if (threadIdx.x < 32) {
            int lane = threadIdx.x;
            float top = cval[0], total = 0.f;
            for (int b = 0; b < n; b += 32) {
                int i = b + lane;
                float e = i < n ? __expf((cval[i] - top) / T) : 0.f;
                total += kern_warp_sum(e);
            }
            float want = st->top_p > 0.f && st->top_p < 1.f ? st->top_p * total : total;
            /* keep the shortest prefix whose mass reaches want */
            float kept = 0.f;
            int n_keep = n;
            for (int b = 0; b < n; b += 32) {
                int i = b + lane;
                float e = i < n ? __expf((cval[i] - top) / T) : 0.f;
                float incl = e;
                for (int o = 1; o < 32; o <<= 1) {
                    float t = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o)
                        incl += t;
                }
                unsigned hit = __ballot_sync(0xffffffffu, i < n && kept + incl >= want);
                if (hit) {
                    int first = __ffs(hit) - 1;
                    n_keep = b + first + 1;
                    kept += __shfl_sync(0xffffffffu, incl, first);
                    break;
                }
                kept += __shfl_sync(0xffffffffu, incl, 31);
            }
            float target = sample_uniform(st->seed, pos) * kept;
            float run = 0.f;
            int pick = n_keep - 1;
            bool done = false;
            for (int b = 0; b < n_keep && !done; b += 32) {
                int i = b + lane;
                float e = i < n_keep ? __expf((cval[i] - top) / T) : 0.f;
                float incl = e;
                for (int o = 1; o < 32; o <<= 1) {
                    float t = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o)
                        incl += t;
                }
                unsigned hit = __ballot_sync(0xffffffffu, i < n_keep && run + incl > target);
                if (hit) {
                    pick = b + __ffs(hit) - 1;
                    done = true;
                }
                run += __shfl_sync(0xffffffffu, incl, 31);
            }
            if (lane == 0)
                s_pick = cidx[pick];
        }
        __syncthreads();
        id = s_pick;
    }
    if (threadIdx.x == 0) {
        if (!isfinite(logits[id]))   /* every logit NaN, or an infinite best: no choice made */
            st->error = KERN_STATE_NONFINITE;
        st->sampled = id;
        st->pos = pos + 1;
        if (mirror)   /* the host's copy, written over the bus (visible once the stream is synchronised) */
            *mirror = *st;
    }
}

extern "C" int kern_sample(const float *logits, int vocab, struct kern_state *d_state, struct kern_state *h_mirror,
                           struct CUstream_st *stream, struct bora_err *err)
{
    if (vocab <= 0)
        return bora_errf(err, -EINVAL, "sample: vocab %d", vocab);
    CUDA_CHECK(kern_launch(sample_kernel, dim3(1), dim3(SAMPLE_THREADS), 0, (cudaStream_t)stream, logits,
                       vocab, d_state, h_mirror));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}
