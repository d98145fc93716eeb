/* sample.cu — on-GPU choice of the next token, so only its id crosses to the host: greedy
 * argmax (lowest id on ties) or temperature + top-k + top-p. A top-k up to KERN_SAMPLE_MAX_K:
 * its candidates found by bins of the logits' distance from the largest (a radix select where a
 * bin is crowded), a bitonic sort, the nucleus cut and one uniform draw hashed from seed and
 * position; ties at the k-th key go to the lowest ids. A larger top-k, or none: the same cuts
 * made exactly over the whole vocabulary with the weights in 2^-44 fixed point, so every sum is
 * an integer and the same logits give the same id on every run (sample_exact). One block of
 * 1,024 threads; every pass over the logits keeps SAMPLE_B loads a thread in flight. Measured on
 * the H200 at vocab 131,072 (bench_sampler, docs/PERFORMANCE.md): greedy 7.5 µs, temperature
 * alone 25 µs, top-k 50 58 µs, top-p 0.9 94 µs (budget 30 µs: the last two over it). */
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

/* The inclusive prefix sum of v over the lanes of a warp (lane 0 first); every lane calls it. */
template <typename T>
__device__ __forceinline__ T sample_warp_incl(T v)
{
    const int lane = threadIdx.x & 31;
    for (int o = 1; o < 32; o <<= 1) {
        const T t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o)
            v += t;
    }
    return v;
}

/* The passes below read every logit; one load at a time they would wait on L2 for each (a
 * block on one SM): these helpers keep SAMPLE_B loads of a thread in flight. */
#define SAMPLE_B 8
/* Every lane of a warp calls f(i, logits[i], valid) together (so f may vote), for this thread's
 * ids i ≡ threadIdx.x modulo blockDim.x; valid is false past the vocabulary. */
template <typename F>
__device__ __forceinline__ void sample_each_warp(const float *logits, int vocab, F f)
{
    for (int base = threadIdx.x; base - (int)(threadIdx.x & 31) < vocab; base += SAMPLE_B * blockDim.x) {
        float v[SAMPLE_B];
#pragma unroll
        for (int k = 0; k < SAMPLE_B; k++) {
            const int i = base + k * blockDim.x;
            v[k] = i < vocab ? logits[i] : 0.f;
        }
#pragma unroll
        for (int k = 0; k < SAMPLE_B; k++)
            f(base + k * blockDim.x, v[k], base + k * (int)blockDim.x < vocab);
    }
}
/* f(i, logits[i]) for this thread's ids. */
template <typename F>
__device__ __forceinline__ void sample_each(const float *logits, int vocab, F f)
{
    sample_each_warp(logits, vocab, [&](int i, float l, bool valid) {
        if (valid)
            f(i, l);
    });
}

/* x[k] = logits[b + 32 k + lane] for k < SAMPLE_B (0 past the vocabulary): a warp's batch of a
 * tile, every load in flight at once. */
__device__ __forceinline__ void sample_load_warp(const float *logits, int vocab, int b, float (&x)[SAMPLE_B])
{
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < SAMPLE_B; k++) {
        const int i = b + 32 * k + lane;
        x[k] = i < vocab ? logits[i] : 0.f;
    }
}

/* The key of the K-th largest logit: a radix select in three passes of 11, 11 and 10 bits
 * (SAMPLE_BINS counters); *s_remaining is left holding how many logits with exactly that key
 * belong to the K largest. Every thread returns the key. */
#define SAMPLE_BINS 2048
__device__ uint32_t sample_select(const float *logits, int vocab, int K, unsigned *hist, uint32_t *s_prefix,
                                  int *s_remaining)
{
    const int lane = threadIdx.x & 31;
    uint32_t prefix = 0, mask = 0;
    __syncthreads();   /* hist, *s_remaining: every earlier reader done (callers read them just before) */
    if (threadIdx.x == 0)
        *s_remaining = K;
    for (int pass = 0; pass < 3; pass++) {
        const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0, nb = pass == 2 ? 1024 : 2048;
        const uint32_t dm = (uint32_t)nb - 1;
        for (int i = threadIdx.x; i < nb; i += blockDim.x)
            hist[i] = 0;
        __syncthreads();
        sample_each(logits, vocab, [&](int, float l) {   /* 11-bit digits: few lanes share a counter */
            const uint32_t k = sample_key(l);
            if ((k & mask) == prefix)
                atomicAdd(&hist[(k >> shift) & dm], 1u);
        });
        __syncthreads();
        if (threadIdx.x < 32) {   /* the bin, from the top, where the count reaches what is left */
            const int rem = *s_remaining;
            int run = 0, bin = 0, before = -1;
            for (int top = nb - 1; top >= 0 && before < 0; top -= 32) {
                const int b = top - lane, c = b >= 0 ? (int)hist[b] : 0;
                const int incl = sample_warp_incl(c);
                const unsigned hit = __ballot_sync(0xffffffffu, b >= 0 && run + incl >= rem);
                if (hit) {
                    const int first = __ffs(hit) - 1;
                    bin = top - first;
                    before = run + __shfl_sync(0xffffffffu, incl - c, first);
                }
                run += __shfl_sync(0xffffffffu, incl, 31);
            }
            if (before < 0)   /* not reached (fewer logits than K): the lowest bin, as the count allows */
                before = run - (int)hist[0];
            if (lane == 0) {
                *s_remaining = rem - before;
                *s_prefix = prefix | ((uint32_t)bin << shift);
            }
        }
        __syncthreads();
        prefix = *s_prefix;
        mask |= dm << shift;
    }
    return prefix;
}

/* The ids with pred(i) into cval / cidx (logit, id), at most KERN_SAMPLE_MAX_K of them, in no
 * particular order; returns how many have it (more than were stored when over the capacity). */
template <typename P>
__device__ int sample_gather(const float *logits, int vocab, P pred, float *cval, int *cidx, int *s_cnt)
{
    const int lane = threadIdx.x & 31;
    if (threadIdx.x == 0)
        *s_cnt = 0;
    __syncthreads();
    sample_each_warp(logits, vocab, [&](int i, float l, bool valid) {
        const bool take = valid && pred(i, l);
        const unsigned m = __ballot_sync(0xffffffffu, take);
        if (m) {   /* the warp's slots in one atomic */
            const int leader = __ffs(m) - 1;
            int slot = 0;
            if (lane == leader)
                slot = atomicAdd(s_cnt, __popc(m));
            slot = __shfl_sync(0xffffffffu, slot, leader) + __popc(m & ((1u << lane) - 1));
            if (take && slot < KERN_SAMPLE_MAX_K) {
                cval[slot] = l;
                cidx[slot] = i;
            }
        }
    });
    __syncthreads();
    return *s_cnt;
}

/* Sorts cval / cidx [0, n) by decreasing key then increasing id (bitonic; the rest padded to sort last). */
__device__ void sample_sort(float *cval, int *cidx, int n)
{
    for (int i = n + threadIdx.x; i < KERN_SAMPLE_MAX_K; i += blockDim.x) {   /* NaN: the lowest key, so last */
        cval[i] = __int_as_float(0x7fffffff);
        cidx[i] = 0x7fffffff;
    }
    __syncthreads();
    for (int size = 2; size <= KERN_SAMPLE_MAX_K; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < KERN_SAMPLE_MAX_K; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool desc = (i & size) == 0;
                    const float a = cval[i], b = cval[j];
                    const uint32_t ka = sample_key(a), kb = sample_key(b);
                    const int ia = cidx[i], ib = cidx[j];
                    const bool a_first = ka > kb || (ka == kb && ia < ib);
                    if (a_first != desc) {
                        cval[i] = b;
                        cval[j] = a;
                        cidx[i] = ib;
                        cidx[j] = ia;
                    }
                }
            }
            __syncthreads();
        }
    }
}

/* Bins of x = (top - logit) · log2(e) / T ≥ 0, SAMPLE_BPU to a unit of x (a factor of 2 in a
 * token's weight): the bin never decreases as the logit decreases, so the k largest logits or a
 * nucleus end in one bin, and only that bin's tokens need sorting. NaN and x past the range: the
 * last bin. */
#define SAMPLE_BPU 32
#define SAMPLE_NEAR (16 * SAMPLE_BPU)   /* the bins of weights down to 2^-16 of the largest */
__device__ __forceinline__ int sample_bin(float l, float top, float k2)
{
    const float x = (top - l) * k2 * (float)SAMPLE_BPU;
    return x < (float)(SAMPLE_BINS - 1) ? (int)x : SAMPLE_BINS - 1;
}

/* Warp 0: the first bin at which the running sum of h[0..] reaches want, and the sum before it
 * (the last bin and the sum before it when never). Written to *s_bin / *s_before. */
template <typename H>
__device__ void sample_bin_reach(const H *h, H want, int *s_bin, H *s_before)
{
    const int lane = threadIdx.x & 31;
    if (threadIdx.x >= 32)
        return;
    H run = 0;
    int bin = SAMPLE_BINS - 1;
    H before = 0;
    bool found = false;
    for (int b0 = 0; b0 < SAMPLE_BINS && !found; b0 += 32) {
        const H c = h[b0 + lane];
        const H incl = sample_warp_incl(c);
        const unsigned hit = __ballot_sync(0xffffffffu, run + incl >= want);
        if (hit) {
            const int first = __ffs(hit) - 1;
            bin = b0 + first;
            before = run + __shfl_sync(0xffffffffu, incl - c, first);
            found = true;
        }
        run += __shfl_sync(0xffffffffu, incl, 31);
    }
    if (!found)
        before = run - h[SAMPLE_BINS - 1];
    if (lane == 0) {
        *s_bin = bin;
        *s_before = before;
    }
}

/* Tokens counted by bin into hist; then *s_bin: the bin holding the K-th largest logit, *s_before:
 * how many lie in the bins before it. Every thread sees both on return. */
__device__ __forceinline__ void sample_count_bins(const float *logits, int vocab, int K, float top, float k2,
                                                  unsigned *hist, int *s_bin, unsigned *s_before)
{
    for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
        hist[i] = 0;
    __syncthreads();
    sample_each(logits, vocab, [&](int, float l) { atomicAdd(&hist[sample_bin(l, top, k2)], 1u); });
    __syncthreads();
    sample_bin_reach<unsigned>(hist, (unsigned)K, s_bin, s_before);
    __syncthreads();
}

/* Path A's candidates: the K (≤ KERN_SAMPLE_MAX_K) largest logits, sorted, into cval / cidx, ties
 * at the K-th key by lowest id, by a count over the bins of top; returns K, or -1 when the K-th
 * largest shares its bin with too many (the caller selects by radix instead). */
__device__ int sample_top_binned(const float *logits, int vocab, int K, float top, float k2, unsigned *hist,
                                 int *s_bin, unsigned *s_before, int *s_cnt, float *cval, int *cidx)
{
    sample_count_bins(logits, vocab, K, top, k2, hist, s_bin, s_before);
    const int bin = *s_bin;
    if (*s_before + hist[bin] > KERN_SAMPLE_MAX_K)
        return -1;
    const int n = sample_gather(logits, vocab, [&](int, float l) { return sample_bin(l, top, k2) <= bin; }, cval,
                                cidx, s_cnt);
    sample_sort(cval, cidx, n);
    return K;
}

/* ---- exact sampling over the whole vocabulary (top-k off or above KERN_SAMPLE_MAX_K) ----
 *
 * A token's weight is 2^((logit - top) · log2(e) / T) (ex2.approx; T the temperature) in units of
 * 2^-44, truncated (tokens below ≈ e^-30 of the top one weigh 0); integer sums do not depend on the
 * order of the additions. The candidates C are the top-k (ties at the k-th key: lowest ids first),
 * or every token with top-k off. The nucleus N is the shortest run of C, in order of decreasing
 * logit then increasing id, whose weight reaches ceil(top_p · weight(C)) (all of C with top_p
 * 1). The draw is the first token of N, in id order, at which the running weight passes
 * floor(u · weight(N)), u the uniform of (seed, position): each token of N is drawn with
 * probability weight / weight(N). The nucleus is found among the 1,024 largest logits when it
 * lies there (peaked logits: nearly always), else by a radix select on the weights. */
#define SAMPLE_MAX_TILES 256

struct sample_cut {
    float top, k2;           /* the largest logit; log2(e) / T */
    uint32_t k_key, n_key;   /* keys of the top-k's and the nucleus's last members */
    int k_last, n_last;      /* ids of the last members among those with exactly that key */
    bool k_all, n_all;       /* no top-k cut (every token a candidate); no nucleus cut */
};

__device__ __forceinline__ unsigned long long sample_weight(float l, const struct sample_cut &c)
{
    float e;   /* 2^x, x ≤ 0: one special-function instruction, the same result on every run */
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"((l - c.top) * c.k2));
    return l == l ? __float2ull_rz(e * 17592186044416.f) : 0ull;   /* × 2^44, truncated; NaN: 0 */
}

__device__ __forceinline__ bool sample_in_c(uint32_t k, int i, const struct sample_cut &c)
{
    return c.k_all || k > c.k_key || (k == c.k_key && i <= c.k_last);
}

__device__ __forceinline__ bool sample_in_n(uint32_t k, int i, const struct sample_cut &c)
{
    return sample_in_c(k, i, c) && (c.n_all || k > c.n_key || (k == c.n_key && i <= c.n_last));
}

/* The block's sum of v (every thread gets it); red: 32 words of shared memory. */
__device__ unsigned long long sample_sum_u64(unsigned long long v, unsigned long long *red)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();   /* red free from any earlier use */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? red[lane] : 0ull;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* The smallest id i at which the running sum of f(i, logits[i]) over ids 0..i exceeds target
 * (vocab - 1 when it never does): tile sums by every warp, then warp 0 walks the tiles and the
 * tile. With u ≥ 0 the target is floor(u · the sum over every id) instead (a draw: one pass for
 * the total and the tiles). Every thread returns the id. tile: SAMPLE_MAX_TILES words of shared
 * memory; s_out: one word. */
template <typename F>
__device__ int sample_find(const float *logits, int vocab, F f, unsigned long long target, unsigned long long *tile,
                           int *s_out, float u = -1.f)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();   /* tile and s_out free from any earlier use */
    int tw = (vocab + SAMPLE_MAX_TILES - 1) / SAMPLE_MAX_TILES;
    tw = (tw + 32 * SAMPLE_B - 1) / (32 * SAMPLE_B) * (32 * SAMPLE_B);   /* whole batches of a warp */
    const int nt = (vocab + tw - 1) / tw;
    for (int t = warp; t < nt; t += nw) {
        unsigned long long v = 0;
        for (int b = t * tw; b < min(vocab, (t + 1) * tw); b += 32 * SAMPLE_B) {
            float x[SAMPLE_B];
            sample_load_warp(logits, vocab, b, x);
#pragma unroll
            for (int k = 0; k < SAMPLE_B; k++) {
                const int i = b + 32 * k + lane;
                v += i < vocab ? f(i, x[k]) : 0ull;
            }
        }
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0)
            tile[t] = v;
    }
    __syncthreads();
    if (warp == 0) {
        if (u >= 0.f) {
            unsigned long long total = 0;
            for (int t = lane; t < nt; t += 32)
                total += tile[t];
            for (int o = 16; o > 0; o >>= 1)
                total += __shfl_xor_sync(0xffffffffu, total, o);
            target = (unsigned long long)((double)u * (double)total);
            if (target >= total)
                target = total ? total - 1 : 0;
        }
        unsigned long long run = 0;
        int t = nt;
        for (int t0 = 0; t0 < nt; t0 += 32) {   /* the tile where the running sum passes target */
            const unsigned long long c = t0 + lane < nt ? tile[t0 + lane] : 0ull;
            const unsigned long long incl = sample_warp_incl(c);
            const unsigned hit = __ballot_sync(0xffffffffu, t0 + lane < nt && run + incl > target);
            if (hit) {
                const int first = __ffs(hit) - 1;
                t = t0 + first;
                run += __shfl_sync(0xffffffffu, incl - c, first);
                break;
            }
            run += __shfl_sync(0xffffffffu, incl, 31);
        }
        int found = vocab - 1;
        bool done = t >= nt;
        for (int b = t * tw; !done && b < min(vocab, (t + 1) * tw); b += 32 * SAMPLE_B) {
            float x[SAMPLE_B];
            sample_load_warp(logits, vocab, b, x);
#pragma unroll
            for (int k = 0; k < SAMPLE_B; k++) {
                const int i = b + 32 * k + lane;
                const unsigned long long incl = sample_warp_incl(!done && i < vocab ? f(i, x[k]) : 0ull);
                const unsigned hit = __ballot_sync(0xffffffffu, !done && i < vocab && run + incl > target);
                if (hit) {
                    found = b + 32 * k + __ffs(hit) - 1;
                    done = true;
                }
                run += __shfl_sync(0xffffffffu, incl, 31);
            }
        }
        if (lane == 0)
            *s_out = found;
    }
    __syncthreads();
    return *s_out;
}

/* The nucleus's last key and id by a radix select on the weights of C (the heaviest-first run
 * reaching want), for a nucleus beyond the 1,024 largest logits. Weights are added per distinct
 * bucket of a warp, then once per bucket into shared memory. */
__device__ void sample_cut_by_weight(const float *logits, int vocab, struct sample_cut *c, unsigned long long want,
                                     unsigned long long *hist64, unsigned long long *tile, uint32_t *s_prefix,
                                     int *s_out)
{
    __shared__ unsigned long long s_rem;
    uint32_t prefix = 0, mask = 0;
    if (threadIdx.x == 0)
        s_rem = want;
    const int lane = threadIdx.x & 31;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            hist64[i] = 0;
        __syncthreads();
        const struct sample_cut cc = *c;
        sample_each_warp(logits, vocab, [&](int i, float l, bool valid) {
            const uint32_t k = sample_key(l);
            const bool in = valid && (k & mask) == prefix && sample_in_c(k, i, cc);
            const unsigned long long w = in ? sample_weight(l, cc) : 0ull;
            const unsigned bucket = (k >> shift) & 255;
            /* A 64-bit shared atomic per lane would queue the warp on the few buckets the logits'
             * exponents share (these are 8-bit digits): instead, per distinct bucket among the
             * lanes still to add, one lane (the first) adds the whole group's sum. */
            unsigned todo = __ballot_sync(0xffffffffu, in && w);
            while (todo) {
                const int leader = __ffs(todo) - 1;
                const unsigned b = __shfl_sync(0xffffffffu, bucket, leader);
                const unsigned grp = __ballot_sync(0xffffffffu, in && w && bucket == b);
                unsigned long long v = (grp >> lane) & 1 ? w : 0ull;
                for (int o = 16; o > 0; o >>= 1)
                    v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == leader)
                    atomicAdd(&hist64[b], v);
                todo &= ~grp;
            }
        });
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned long long rem = s_rem, cum = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (cum + hist64[b] >= rem)
                    break;
                cum += hist64[b];
            }
            s_rem = rem - cum;
            *s_prefix = prefix | ((uint32_t)b << shift);
        }
        __syncthreads();
        prefix = *s_prefix;
        mask |= 255u << shift;
    }
    c->n_key = prefix;
    const unsigned long long rem = s_rem;
    const struct sample_cut cc = *c;
    c->n_last = sample_find(
        logits, vocab,
        [&](int i, float l) {
            const uint32_t k = sample_key(l);
            return k == cc.n_key && sample_in_c(k, i, cc) ? sample_weight(l, cc) : 0ull;
        },
        rem - 1, tile, s_out);
}

struct sample_smem {   /* the kernel's shared memory */
    float sv[32];
    int si[32];
    unsigned hist[SAMPLE_BINS];
    uint32_t prefix;
    int remaining, cnt, pick, bin;
    unsigned before;
    unsigned long long before64;
    float cval[KERN_SAMPLE_MAX_K];
    int cidx[KERN_SAMPLE_MAX_K];
    unsigned long long hist64[SAMPLE_BINS];
    unsigned long long tile[SAMPLE_MAX_TILES];
};

/* The K (≤ KERN_SAMPLE_MAX_K) largest logits into cval / cidx by radix select, sorted by
 * decreasing key then increasing id, ties at the K-th key by lowest id; returns K (path A's way
 * when the K-th largest shares its bin with too many). */
__device__ int sample_top_sorted(const float *logits, int vocab, int K, struct sample_smem &sm)
{
    const uint32_t prefix = sample_select(logits, vocab, K, sm.hist, &sm.prefix, &sm.remaining);
    const int last = sample_find(logits, vocab, [&](int, float l) { return sample_key(l) == prefix ? 1ull : 0ull; },
                                 (unsigned long long)(sm.remaining - 1), sm.tile, &sm.pick);
    int n = sample_gather(
        logits, vocab,
        [&](int i, float l) {
            const uint32_t k = sample_key(l);
            return k > prefix || (k == prefix && i <= last);
        },
        sm.cval, sm.cidx, &sm.cnt);
    n = n < KERN_SAMPLE_MAX_K ? n : KERN_SAMPLE_MAX_K;
    sample_sort(sm.cval, sm.cidx, n);
    return n;
}

/* Exact temperature / top-k / top-p draw (see above); top: the largest logit, finite. */
__device__ int sample_exact(const float *logits, int vocab, int K, float top, float T, float top_p, float u,
                            struct sample_smem &sm)
{
    const float k2 = 1.4426950408889634f / T;
    struct sample_cut c = { top, k2, 0u, 0u, 0, 0, K >= vocab, !(top_p > 0.f && top_p < 1.f) };
    if (!c.k_all) {   /* the top-k: its last key, and its last id among the ties at that key */
        sample_count_bins(logits, vocab, K, top, k2, sm.hist, &sm.bin, &sm.before);
        const int bin = sm.bin, at = K - (int)sm.before;   /* the K-th largest: the at-th of its bin */
        const int n = sm.hist[bin] <= KERN_SAMPLE_MAX_K
                          ? sample_gather(logits, vocab, [&](int, float l) { return sample_bin(l, top, k2) == bin; },
                                          sm.cval, sm.cidx, &sm.cnt)
                          : -1;
        if (n >= at && n <= KERN_SAMPLE_MAX_K) {
            sample_sort(sm.cval, sm.cidx, n);
            c.k_key = sample_key(sm.cval[at - 1]);
            c.k_last = sm.cidx[at - 1];
        } else {   /* a crowded bin: radix select, then the ties by id */
            c.k_key = sample_select(logits, vocab, K, sm.hist, &sm.prefix, &sm.remaining);
            const uint32_t kk = c.k_key;
            c.k_last = sample_find(logits, vocab, [&](int, float l) { return sample_key(l) == kk ? 1ull : 0ull; },
                                   (unsigned long long)(sm.remaining - 1), sm.tile, &sm.pick);
        }
        __syncthreads();
    }
    if (!c.n_all) {
        const struct sample_cut c0 = c;
        /* the weights of C by bin, and their total. Only the bins near the top are counted one by
         * one: the far tokens, many and light, go to one sum per thread, so few threads meet at
         * a 64-bit shared atomic. The far sum stands in bin SAMPLE_NEAR. */
        for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
            sm.hist64[i] = 0;
        __syncthreads();
        unsigned long long w = 0, far = 0;
        sample_each(logits, vocab, [&](int i, float l) {
            if (sample_in_c(sample_key(l), i, c0)) {
                const unsigned long long wi = sample_weight(l, c0);
                if (wi) {
                    const int b = sample_bin(l, top, k2);
                    if (b < SAMPLE_NEAR)
                        atomicAdd(&sm.hist64[b], wi);
                    else
                        far += wi;
                    w += wi;
                }
            }
        });
        const unsigned long long total = sample_sum_u64(w, sm.tile), far_total = sample_sum_u64(far, sm.tile);
        if (threadIdx.x == 0)
            sm.hist64[SAMPLE_NEAR] = far_total;
        __syncthreads();
        unsigned long long want = (unsigned long long)ceil((double)top_p * (double)total);
        want = want < 1ull ? 1ull : want > total ? total : want;
        sample_bin_reach<unsigned long long>(sm.hist64, want, &sm.bin, &sm.before64);
        __syncthreads();
        if (sm.bin >= SAMPLE_NEAR) {   /* the nucleus reaches the far bins (flat logits): every bin */
            __syncthreads();           /* every thread has read sm.bin */
            for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
                sm.hist64[i] = 0;
            __syncthreads();
            sample_each(logits, vocab, [&](int i, float l) {
                if (sample_in_c(sample_key(l), i, c0)) {
                    const unsigned long long wi = sample_weight(l, c0);
                    if (wi)
                        atomicAdd(&sm.hist64[sample_bin(l, top, k2)], wi);
                }
            });
            __syncthreads();
            sample_bin_reach<unsigned long long>(sm.hist64, want, &sm.bin, &sm.before64);
            __syncthreads();
        }
        const int bin = sm.bin;
        const unsigned long long before = sm.before64;
        /* the nucleus ends in that bin: sort its tokens of C and walk them */
        const int n = sample_gather(
            logits, vocab,
            [&](int i, float l) { return sample_bin(l, top, k2) == bin && sample_in_c(sample_key(l), i, c0); },
            sm.cval, sm.cidx, &sm.cnt);
        if (n <= KERN_SAMPLE_MAX_K) {
            sample_sort(sm.cval, sm.cidx, n);
            if (threadIdx.x < 32) {
                const int lane = threadIdx.x;
                unsigned long long run = before;
                int cut = n - 1;
                for (int b0 = 0; b0 < n; b0 += 32) {
                    const int i = b0 + lane;
                    const unsigned long long incl = sample_warp_incl(i < n ? sample_weight(sm.cval[i], c0) : 0ull);
                    const unsigned hit = __ballot_sync(0xffffffffu, i < n && run + incl >= want);
                    if (hit) {
                        cut = b0 + __ffs(hit) - 1;
                        break;
                    }
                    run += __shfl_sync(0xffffffffu, incl, 31);
                }
                if (lane == 0)
                    sm.pick = cut;
            }
            __syncthreads();
            c.n_key = sample_key(sm.cval[sm.pick]);
            c.n_last = sm.cidx[sm.pick];
        } else {   /* a crowded bin (flat or tied logits): radix select on the weights */
            sample_cut_by_weight(logits, vocab, &c, want, sm.hist64, sm.tile, &sm.prefix, &sm.pick);
        }
        __syncthreads();
    }
    const struct sample_cut cf = c;
    const bool all = cf.k_all && cf.n_all;   /* temperature alone: every token */
    return sample_find(
        logits, vocab,
        [&](int i, float l) { return all || sample_in_n(sample_key(l), i, cf) ? sample_weight(l, cf) : 0ull; }, 0ull,
        sm.tile, &sm.pick, u);
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(const float *logits, int vocab,
                                                                struct kern_state *st, struct kern_state *mirror)
{
    __shared__ struct sample_smem sm;

    kern_grid_launch_next();
    kern_grid_wait();
    const int pos = st->pos;
    const float T = st->temperature;
    const int K = st->top_k > 0 && st->top_k < vocab ? st->top_k : vocab;   /* the top-k, all with it off */
    int id;
    if (T <= 0.f || K == 1 || !isfinite(1.4426950408889634f / T)) {   /* a temperature too small to divide by: greedy */
        id = sample_argmax(logits, vocab, sm.sv, sm.si);
    } else if (K > KERN_SAMPLE_MAX_K) {
        id = sample_argmax(logits, vocab, sm.sv, sm.si);
        const float top = logits[id];
        if (isfinite(top))   /* else no draw: the state reports the non-finite logit below */
            id = sample_exact(logits, vocab, K, top, T, st->top_p, sample_uniform(st->seed, pos), sm);
    } else {
        id = sample_argmax(logits, vocab, sm.sv, sm.si);
        const float top = logits[id];
        if (isfinite(top)) {   /* else no draw: the state reports the non-finite logit below */
            int n = sample_top_binned(logits, vocab, K, top, 1.4426950408889634f / T, sm.hist, &sm.bin, &sm.before,
                                      &sm.cnt, sm.cval, sm.cidx);
            if (n < 0)   /* a crowded bin: radix select */
                n = sample_top_sorted(logits, vocab, K, sm);
            const float *cval = sm.cval;
            const int *cidx = sm.cidx;
            /* nucleus cut and draw, by warp 0 in chunks of 32 */
            if (threadIdx.x < 32) {
                int lane = threadIdx.x;
                float total = 0.f;   /* top: cval[0], the largest logit */
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
                    const float incl = sample_warp_incl(e);
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
                    const float incl = sample_warp_incl(e);
                    unsigned hit = __ballot_sync(0xffffffffu, i < n_keep && run + incl > target);
                    if (hit) {
                        pick = b + __ffs(hit) - 1;
                        done = true;
                    }
                    run += __shfl_sync(0xffffffffu, incl, 31);
                }
                if (lane == 0)
                    sm.pick = cidx[pick];
            }
            __syncthreads();
            id = sm.pick;
        }
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
