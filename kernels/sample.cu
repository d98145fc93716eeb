/* sample.cu — on-GPU choice of the next token, so only its id crosses to the host: greedy
 * argmax (lowest id on ties) or temperature + top-k + top-p. A top-k up to KERN_SAMPLE_MAX_K:
 * its candidates found by bins of the logits' distance from the largest (a radix select where a
 * bin is crowded), a bitonic sort, the nucleus cut and one uniform draw hashed from seed and
 * position; ties at the k-th key go to the lowest ids. A larger top-k, or none: the same cuts
 * made exactly over the whole vocabulary with the weights in 2^-44 fixed point, so every sum is
 * an integer and the same logits give the same id on every run (sample_exact). Every pass over
 * the logits keeps SAMPLE_B loads a thread in flight. With a workspace the passes run on a grid
 * of 1,024-thread blocks, one per SAMPLE_SLICE logits, that meet between passes
 * (sample_grid_kernel); without, one block does everything (sample_kernel); both draw the same
 * ids. Measured on the H200 at vocab 131,072 (bench_sampler, docs/PERFORMANCE.md), grid / one
 * block: greedy 5.6 / 8.4 µs, temperature alone 12.6 / 25.4, top-k 50 20.5 / 47.6, top-p 0.9
 * 23.9 / 80.0, top-k 5,000 28.8 / 83.6; flat logits (T 1.5, top-p 0.95) 47.3 / 164 (budget
 * 30 µs: the last one over it). */
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

/* Leaves the largest logit in sv[0] and its id in si[0] (0x7fffffff when every logit is NaN),
 * *bad (shared) nonzero if any logit is NaN or infinite, and returns the id. */
__device__ int sample_block_max(const float *l, int vocab, float *sv, int *si, int *bad)
{
    float best = -INFINITY;
    int bi = 0x7fffffff;
    float chk = 0.f;   /* x · 0 is 0 for every finite x, NaN for NaN and ±inf: NaN iff one is not finite */
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
                chk = fmaf(v[k].x, 0.f, fmaf(v[k].y, 0.f, fmaf(v[k].z, 0.f, fmaf(v[k].w, 0.f, chk))));
            }
        }
    }
    for (int i = 4 * n4 + threadIdx.x; i < vocab; i += blockDim.x) {
        sample_take(l[i], i, &best, &bi);
        chk = fmaf(l[i], 0.f, chk);
    }
    const int any_bad = __syncthreads_or(chk != chk);
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
    }
    __syncthreads();   /* every warp's sv / si read */
    if (threadIdx.x == 0) {
        sv[0] = best;
        si[0] = bi;
        *bad = any_bad;
    }
    __syncthreads();
    return si[0];
}

/* The argmax's id (0 when every logit is NaN); *bad as sample_block_max's. */
__device__ int sample_argmax(const float *l, int vocab, float *sv, int *si, int *bad)
{
    const int bi = sample_block_max(l, vocab, sv, si, bad);
    return bi == 0x7fffffff ? 0 : bi;
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

#define SAMPLE_BINS 2048

/* ---- what the blocks of a grid share (the grid kernel, further below) ----
 *
 * Each block takes a slice of the vocabulary (SAMPLE_SLICE logits, the last one shorter) for every
 * pass over the logits. Between passes the blocks meet at a barrier in the workspace (all of the
 * grid is resident: at most SAMPLE_MAX_GRID blocks, no more than the GPU's SMs). The one-block
 * helpers below take a workspace too (NULL: one block over everything): with one, each counts
 * or sums its slice, adds that into the workspace, meets the others and reads the grid's totals
 * back, so every block reaches the same cut. */
#define SAMPLE_SLICE 4096
#define SAMPLE_MAX_GRID 128

struct sample_work {
    unsigned bar_count, pad0[31];   /* the barrier: arrivals, then (own line) its generation */
    unsigned bar_gen, pad1[31];
    float pmax[SAMPLE_MAX_GRID];    /* each block's largest logit and its id */
    int pid[SAMPLE_MAX_GRID];
    int pbad[SAMPLE_MAX_GRID];      /* each block's slice holds a logit that is not a finite number */
    unsigned long long psum[SAMPLE_MAX_GRID];   /* each block's weight of the nucleus */
    unsigned hist[SAMPLE_BINS];                 /* token counts by bin */
    unsigned long long hist64[SAMPLE_BINS];     /* weights of the near bins */
    unsigned long long hist64b[SAMPLE_BINS];    /* weights of every bin (a nucleus reaching far) */
    unsigned long long total, far;
    int cnt[2];                                 /* candidates gathered: the top-k's bin, the nucleus's */
    int found[2];                               /* sample_find_grid's answers: the top-k's, the nucleus's */
    unsigned rh[3][SAMPLE_BINS];                /* sample_select's counts, by pass */
    unsigned long long wh[4][256];              /* sample_cut_by_weight's weights, by pass */
    float cval[KERN_SAMPLE_MAX_K];
    int cidx[KERN_SAMPLE_MAX_K];
};
static_assert(sizeof(struct sample_work) <= KERN_SAMPLE_WORK_BYTES, "KERN_SAMPLE_WORK_BYTES too small");

/* Every block of the grid meets here: what each wrote before is visible to all after. The
 * counter is back at 0 once all have arrived; the generation only grows. */
__device__ void sample_grid_sync(struct sample_work *w)
{
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned g;
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(g) : "l"(&w->bar_gen) : "memory");
        __threadfence();
        if (atomicAdd(&w->bar_count, 1u) == gridDim.x - 1) {
            atomicExch(&w->bar_count, 0u);
            __threadfence();
            atomicAdd(&w->bar_gen, 1u);
        } else {
            unsigned now;
            do
                asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(&w->bar_gen) : "memory");
            while (now == g);
        }
        __threadfence();
    }
    __syncthreads();
}

/* dst[0, n) = src[0, n), read from L2 (other blocks wrote it), by the whole block. */
template <typename T>
__device__ __forceinline__ void sample_pull(T *dst, const T *src, int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        dst[i] = __ldcg(src + i);
    __syncthreads();
}

/* The key of the K-th largest logit: a radix select in three passes of 11, 11 and 10 bits
 * (SAMPLE_BINS counters); *s_remaining is left holding how many logits with exactly that key
 * belong to the K largest. Every thread returns the key. With w, logits is this block's slice
 * and the counts are the grid's. */
__device__ uint32_t sample_select(const float *logits, int vocab, int K, unsigned *hist, uint32_t *s_prefix,
                                  int *s_remaining, struct sample_work *w = nullptr)
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
        if (w) {   /* a slice: the grid's counts */
            for (int i = threadIdx.x; i < nb; i += blockDim.x)
                if (hist[i])
                    atomicAdd(&w->rh[pass][i], hist[i]);
            sample_grid_sync(w);
            sample_pull(hist, w->rh[pass], nb);
        }
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

/* The ids lo + i of the slice (logits + lo, n of them) with pred(lo + i, logit) appended, with
 * their logits, to cval / cidx at slots counted by *cnt (shared or global memory; one atomic a
 * warp), in no particular order; at most KERN_SAMPLE_MAX_K of them are stored. */
template <typename P>
__device__ void sample_gather_to(const float *sl, int n, int lo, P pred, float *cval, int *cidx, int *cnt)
{
    const int lane = threadIdx.x & 31;
    sample_each_warp(sl, n, [&](int i, float l, bool valid) {
        const bool take = valid && pred(lo + i, l);
        const unsigned m = __ballot_sync(0xffffffffu, take);
        if (m) {   /* the warp's slots in one atomic */
            const int leader = __ffs(m) - 1;
            int slot = 0;
            if (lane == leader)
                slot = atomicAdd(cnt, __popc(m));
            slot = __shfl_sync(0xffffffffu, slot, leader) + __popc(m & ((1u << lane) - 1));
            if (take && slot < KERN_SAMPLE_MAX_K) {
                cval[slot] = l;
                cidx[slot] = lo + i;
            }
        }
    });
}

/* Sorts cval / cidx [0, n) by decreasing key then increasing id (bitonic over the power of two
 * at or above n, the rest padded to sort last; n ≤ KERN_SAMPLE_MAX_K). */
__device__ void sample_sort(float *cval, int *cidx, int n)
{
    int P = 2;
    while (P < n)
        P <<= 1;
    for (int i = n + threadIdx.x; i < P; i += blockDim.x) {   /* NaN: the lowest key, so last */
        cval[i] = __int_as_float(0x7fffffff);
        cidx[i] = 0x7fffffff;
    }
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < P; i += blockDim.x) {
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
 * how many lie in the bins before it. Every thread sees both on return. With w, logits is this
 * block's slice and the counts are the grid's. */
__device__ void sample_count_bins(const float *logits, int vocab, int K, float top, float k2, unsigned *hist,
                                 int *s_bin, unsigned *s_before, struct sample_work *w = nullptr)
{
    for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
        hist[i] = 0;
    __syncthreads();
    sample_each(logits, vocab, [&](int, float l) { atomicAdd(&hist[sample_bin(l, top, k2)], 1u); });
    __syncthreads();
    if (w) {
        for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
            if (hist[i])
                atomicAdd(&w->hist[i], hist[i]);
        sample_grid_sync(w);
        sample_pull(hist, w->hist, SAMPLE_BINS);
    }
    sample_bin_reach<unsigned>(hist, (unsigned)K, s_bin, s_before);
    __syncthreads();
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

/* sample_find over the grid's slices (logits + lo: this block's n, f taking ids within the
 * slice): each block's sum, then the block whose slice holds the target finds the id and leaves
 * it in w->found[slot]; every block returns it (the last id when the sum never exceeds target). */
template <typename F>
__device__ int sample_find_grid(const float *sl, int n, int lo, int vocab, F f, unsigned long long target,
                                struct sample_work *w, int slot, unsigned long long *tile, int *s_out)
{
    unsigned long long mine = 0;
    sample_each(sl, n, [&](int i, float l) { mine += f(i, l); });
    mine = sample_sum_u64(mine, tile);
    if (threadIdx.x == 0) {
        w->psum[blockIdx.x] = mine;
        if (blockIdx.x == 0)
            w->found[slot] = vocab - 1;
    }
    sample_grid_sync(w);
    unsigned long long before = 0;   /* every warp sums the slices before this one */
    for (int b = threadIdx.x & 31; b < (int)blockIdx.x; b += 32)
        before += __ldcg(w->psum + b);
    for (int o = 16; o > 0; o >>= 1)
        before += __shfl_xor_sync(0xffffffffu, before, o);
    if (target >= before && target - before < mine) {   /* the target lies in this slice */
        const int id = lo + sample_find(sl, n, f, target - before, tile, s_out);
        if (threadIdx.x == 0)
            w->found[slot] = id;
    }
    sample_grid_sync(w);
    return __ldcg(&w->found[slot]);
}

/* The nucleus's last key and id by a radix select on the weights of C (the heaviest-first run
 * reaching want), for a nucleus beyond the 1,024 largest logits. Weights are added per distinct
 * bucket of a warp, then once per bucket into shared memory. With w, logits is this block's
 * slice (its first id lo, of vocab in all) and the weights are the grid's. */
__device__ void sample_cut_by_weight(const float *logits, int n, struct sample_cut *c, unsigned long long want,
                                     unsigned long long *hist64, unsigned long long *tile, uint32_t *s_prefix,
                                     int *s_out, struct sample_work *w = nullptr, int lo = 0, int vocab = 0)
{
    __shared__ unsigned long long s_rem;
    uint32_t prefix = 0, mask = 0;
    if (threadIdx.x == 0)
        s_rem = want;
    const int lane = threadIdx.x & 31;
    for (int shift = 24, pass = 0; shift >= 0; shift -= 8, pass++) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x)
            hist64[i] = 0;
        __syncthreads();
        const struct sample_cut cc = *c;
        sample_each_warp(logits, n, [&](int i, float l, bool valid) {
            const uint32_t k = sample_key(l);
            const bool in = valid && (k & mask) == prefix && sample_in_c(k, lo + i, cc);
            const unsigned long long wt = in ? sample_weight(l, cc) : 0ull;
            const unsigned bucket = (k >> shift) & 255;
            /* A 64-bit shared atomic per lane would queue the warp on the few buckets the logits'
             * exponents share (these are 8-bit digits): instead, per distinct bucket among the
             * lanes still to add, one lane (the first) adds the whole group's sum. */
            unsigned pending = __ballot_sync(0xffffffffu, in && wt);
            while (pending) {
                const int leader = __ffs(pending) - 1;
                const unsigned b = __shfl_sync(0xffffffffu, bucket, leader);
                const unsigned grp = __ballot_sync(0xffffffffu, in && wt && bucket == b);
                unsigned long long v = (grp >> lane) & 1 ? wt : 0ull;
                for (int o = 16; o > 0; o >>= 1)
                    v += __shfl_xor_sync(0xffffffffu, v, o);
                if (lane == leader)
                    atomicAdd(&hist64[b], v);
                pending &= ~grp;
            }
        });
        __syncthreads();
        if (w) {   /* a slice: the grid's weights */
            for (int i = threadIdx.x; i < 256; i += blockDim.x)
                if (hist64[i])
                    atomicAdd(&w->wh[pass][i], hist64[i]);
            sample_grid_sync(w);
            sample_pull(hist64, w->wh[pass], 256);
        }
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
    const auto f = [&](int i, float l) {
        const uint32_t k = sample_key(l);
        return k == cc.n_key && sample_in_c(k, lo + i, cc) ? sample_weight(l, cc) : 0ull;
    };
    c->n_last = w ? sample_find_grid(logits, n, lo, vocab, f, rem - 1, w, 1, tile, s_out)
                  : sample_find(logits, n, f, rem - 1, tile, s_out);
}

struct sample_smem {   /* the kernel's shared memory */
    float sv[32];
    int si[32];
    int bad;   /* a logit is NaN or infinite: no choice is made, the step fails */
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

/* The ids with pred(id, logit) (ids from lo: logits is the slice starting there), sorted by
 * decreasing key then increasing id into sm.cval / sm.cidx when there are at most
 * KERN_SAMPLE_MAX_K of them; returns how many have it. With w, the grid's: gathered into the
 * workspace (counted at w->cnt[slot]) and every block holds the same sorted set. */
template <typename P>
__device__ int sample_gather_sorted(const float *sl, int n, int lo, P pred, struct sample_smem &sm,
                                    struct sample_work *w, int slot)
{
    int c;
    if (w) {   /* w->cnt[slot]: zeroed at the kernel's start */
        sample_gather_to(sl, n, lo, pred, w->cval, w->cidx, &w->cnt[slot]);
        sample_grid_sync(w);
        c = __ldcg(&w->cnt[slot]);
        if (c <= KERN_SAMPLE_MAX_K) {
            sample_pull(sm.cval, w->cval, c);
            sample_pull(sm.cidx, w->cidx, c);
        }
    } else {
        if (threadIdx.x == 0)
            sm.cnt = 0;
        __syncthreads();
        sample_gather_to(sl, n, lo, pred, sm.cval, sm.cidx, &sm.cnt);
        __syncthreads();
        c = sm.cnt;
    }
    if (c <= KERN_SAMPLE_MAX_K)
        sample_sort(sm.cval, sm.cidx, c);
    return c;
}

/* sample_find, or with w sample_find_grid (its answer in w->found[slot]). */
template <typename F>
__device__ int sample_find_any(const float *sl, int n, int lo, int vocab, F f, unsigned long long target,
                               struct sample_smem &sm, struct sample_work *w, int slot)
{
    return w ? sample_find_grid(sl, n, lo, vocab, f, target, w, slot, sm.tile, &sm.pick)
             : sample_find(sl, n, f, target, sm.tile, &sm.pick);
}

/* Path A's candidates: the K (≤ KERN_SAMPLE_MAX_K) largest logits into sm.cval / sm.cidx, sorted by
 * decreasing key then increasing id, ties at the K-th key by lowest id; returns K. Found by a count
 * over the bins of top, or, when the K-th largest shares its bin with too many, by a radix select
 * and the ties by id. With w (logits this block's slice, from id lo) over the grid. */
__device__ int sample_top(const float *sl, int n, int lo, int vocab, int K, float top, float k2,
                          struct sample_smem &sm, struct sample_work *w)
{
    sample_count_bins(sl, n, K, top, k2, sm.hist, &sm.bin, &sm.before, w);
    const int bin = sm.bin;
    if (sm.before + sm.hist[bin] <= KERN_SAMPLE_MAX_K) {   /* the bins up to the K-th largest's */
        sample_gather_sorted(sl, n, lo, [&](int, float l) { return sample_bin(l, top, k2) <= bin; }, sm, w, 0);
        return K;
    }
    const uint32_t pk = sample_select(sl, n, K, sm.hist, &sm.prefix, &sm.remaining, w);
    const int last = sample_find_any(sl, n, lo, vocab, [&](int, float l) { return sample_key(l) == pk ? 1ull : 0ull; },
                                     (unsigned long long)(sm.remaining - 1), sm, w, 0);
    const int c = sample_gather_sorted(
        sl, n, lo,
        [&](int i, float l) {
            const uint32_t k = sample_key(l);
            return k > pk || (k == pk && i <= last);
        },
        sm, w, 0);
    return c < K ? c : K;
}

/* Warp 0: the index in the sorted cval [0, n) of the nucleus's last member, the first at which
 * before + the running weight reaches want (n - 1 when never), into *s_pick. */
__device__ void sample_cut_sorted(const float *cval, int n, const struct sample_cut &c, unsigned long long before,
                                  unsigned long long want, int *s_pick)
{
    if (threadIdx.x >= 32)
        return;
    const int lane = threadIdx.x;
    unsigned long long run = before;
    int cut = n - 1;
    for (int b0 = 0; b0 < n; b0 += 32) {
        const int i = b0 + lane;
        const unsigned long long incl = sample_warp_incl(i < n ? sample_weight(cval[i], c) : 0ull);
        const unsigned hit = __ballot_sync(0xffffffffu, i < n && run + incl >= want);
        if (hit) {
            cut = b0 + __ffs(hit) - 1;
            break;
        }
        run += __shfl_sync(0xffffffffu, incl, 31);
    }
    if (lane == 0)
        *s_pick = cut;
}

/* The nucleus's target: ceil(top_p · total), at least 1 and at most total. */
__device__ __forceinline__ unsigned long long sample_want(float top_p, unsigned long long total)
{
    const unsigned long long want = (unsigned long long)ceil((double)top_p * (double)total);
    return want < 1ull ? 1ull : want > total ? total : want;
}

/* Exact temperature / top-k / top-p draw (see above); top: the largest logit, finite. With w,
 * logits is this block's slice (ids from lo, vocab in all) and every pass is the grid's; the block
 * whose slice holds the draw returns its id, the others -1. */
__device__ int sample_exact(const float *sl, int n, int lo, int vocab, int K, float top, float T, float top_p,
                            float u, struct sample_smem &sm, struct sample_work *w)
{
    const float k2 = 1.4426950408889634f / T;
    struct sample_cut c = { top, k2, 0u, 0u, 0, 0, K >= vocab, !(top_p > 0.f && top_p < 1.f) };
    if (!c.k_all) {   /* the top-k: its last key, and its last id among the ties at that key */
        sample_count_bins(sl, n, K, top, k2, sm.hist, &sm.bin, &sm.before, w);
        const int bin = sm.bin, at = K - (int)sm.before;   /* the K-th largest: the at-th of its bin */
        const auto in_bin = [&](int, float l) { return sample_bin(l, top, k2) == bin; };
        const int cnt = sm.hist[bin] <= KERN_SAMPLE_MAX_K ? sample_gather_sorted(sl, n, lo, in_bin, sm, w, 0) : -1;
        if (cnt >= at && cnt <= KERN_SAMPLE_MAX_K) {
            c.k_key = sample_key(sm.cval[at - 1]);
            c.k_last = sm.cidx[at - 1];
        } else {   /* a crowded bin: radix select, then the ties by id */
            c.k_key = sample_select(sl, n, K, sm.hist, &sm.prefix, &sm.remaining, w);
            const uint32_t kk = c.k_key;
            const auto at_key = [&](int, float l) { return sample_key(l) == kk ? 1ull : 0ull; };
            c.k_last = sample_find_any(sl, n, lo, vocab, at_key, (unsigned long long)(sm.remaining - 1), sm, w, 0);
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
        unsigned long long wsum = 0, far = 0;
        sample_each(sl, n, [&](int i, float l) {
            if (sample_in_c(sample_key(l), lo + i, c0)) {
                const unsigned long long wi = sample_weight(l, c0);
                if (wi) {
                    const int b = sample_bin(l, top, k2);
                    if (b < SAMPLE_NEAR)
                        atomicAdd(&sm.hist64[b], wi);
                    else
                        far += wi;
                    wsum += wi;
                }
            }
        });
        unsigned long long total = sample_sum_u64(wsum, sm.tile), far_total = sample_sum_u64(far, sm.tile);
        if (w) {   /* the grid's (the sums' barriers have ordered the near bins' atomics) */
            if (threadIdx.x == 0) {
                atomicAdd(&w->total, total);
                atomicAdd(&w->far, far_total);
            }
            for (int i = threadIdx.x; i < SAMPLE_NEAR; i += blockDim.x)
                if (sm.hist64[i])
                    atomicAdd(&w->hist64[i], sm.hist64[i]);
            sample_grid_sync(w);
            sample_pull(sm.hist64, w->hist64, SAMPLE_NEAR);
            total = __ldcg(&w->total);
            far_total = __ldcg(&w->far);
        }
        if (threadIdx.x == 0)
            sm.hist64[SAMPLE_NEAR] = far_total;
        __syncthreads();
        const unsigned long long want = sample_want(top_p, total);
        sample_bin_reach<unsigned long long>(sm.hist64, want, &sm.bin, &sm.before64);
        __syncthreads();
        if (sm.bin >= SAMPLE_NEAR) {   /* the nucleus reaches the far bins (flat logits): every bin */
            __syncthreads();           /* every thread has read sm.bin */
            for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
                sm.hist64[i] = 0;
            __syncthreads();
            sample_each(sl, n, [&](int i, float l) {
                if (sample_in_c(sample_key(l), lo + i, c0)) {
                    const unsigned long long wi = sample_weight(l, c0);
                    if (wi)
                        atomicAdd(&sm.hist64[sample_bin(l, top, k2)], wi);
                }
            });
            __syncthreads();
            if (w) {
                for (int i = threadIdx.x; i < SAMPLE_BINS; i += blockDim.x)
                    if (sm.hist64[i])
                        atomicAdd(&w->hist64b[i], sm.hist64[i]);
                sample_grid_sync(w);
                sample_pull(sm.hist64, w->hist64b, SAMPLE_BINS);
            }
            sample_bin_reach<unsigned long long>(sm.hist64, want, &sm.bin, &sm.before64);
            __syncthreads();
        }
        const int bin = sm.bin;
        const unsigned long long before = sm.before64;
        /* the nucleus ends in that bin: sort its tokens of C and walk them */
        const int cnt = sample_gather_sorted(
            sl, n, lo,
            [&](int i, float l) { return sample_bin(l, top, k2) == bin && sample_in_c(sample_key(l), i, c0); }, sm,
            w, 1);
        if (cnt <= KERN_SAMPLE_MAX_K) {
            sample_cut_sorted(sm.cval, cnt, c0, before, want, &sm.pick);
            __syncthreads();
            c.n_key = sample_key(sm.cval[sm.pick]);
            c.n_last = sm.cidx[sm.pick];
        } else {   /* a crowded bin (flat or tied logits): radix select on the weights */
            sample_cut_by_weight(sl, n, &c, want, sm.hist64, sm.tile, &sm.prefix, &sm.pick, w, lo, vocab);
        }
        __syncthreads();
    }
    const struct sample_cut cf = c;
    const bool all = cf.k_all && cf.n_all;   /* temperature alone: every token */
    const auto f = [&](int i, float l) {
        return all || sample_in_n(sample_key(l), lo + i, cf) ? sample_weight(l, cf) : 0ull;
    };
    if (!w)
        return sample_find(sl, n, f, 0ull, sm.tile, &sm.pick, u);
    /* the grid's draw: each slice's weight of the nucleus, then the slice holding the target */
    unsigned long long mine = 0;
    sample_each(sl, n, [&](int i, float l) { mine += f(i, l); });
    mine = sample_sum_u64(mine, sm.tile);
    if (threadIdx.x == 0)
        w->psum[blockIdx.x] = mine;
    sample_grid_sync(w);
    if (threadIdx.x < 32) {   /* warp 0: the target, and the weight of the slices before this one */
        unsigned long long total = 0, before = 0;
        for (int b = threadIdx.x; b < (int)gridDim.x; b += 32) {
            const unsigned long long v = __ldcg(w->psum + b);
            total += v;
            before += b < (int)blockIdx.x ? v : 0ull;
        }
        for (int o = 16; o > 0; o >>= 1) {
            total += __shfl_xor_sync(0xffffffffu, total, o);
            before += __shfl_xor_sync(0xffffffffu, before, o);
        }
        unsigned long long target = (unsigned long long)((double)u * (double)total);
        if (target >= total)
            target = total ? total - 1 : 0;
        if (threadIdx.x == 0) {
            sm.before64 = target - before;   /* the target within this slice, when it lies there */
            sm.pick = target >= before && target - before < mine;
        }
    }
    __syncthreads();
    if (!sm.pick)
        return -1;
    const unsigned long long t = sm.before64;
    __syncthreads();
    return lo + sample_find(sl, n, f, t, sm.tile, &sm.pick);
}

/* Path A's nucleus cut and draw over the sorted candidates cval / cidx [0, n), by warp 0 in chunks
 * of 32 (float weights e^((l - top) / T)); the id drawn, seen by every thread. */
__device__ int sample_draw_sorted(struct sample_smem &sm, int n, float top, float T, float top_p, float u)
{
    const float *cval = sm.cval;
    const int *cidx = sm.cidx;
    if (threadIdx.x < 32) {
        int lane = threadIdx.x;
        float total = 0.f;   /* top: cval[0], the largest logit */
        for (int b = 0; b < n; b += 32) {
            int i = b + lane;
            float e = i < n ? __expf((cval[i] - top) / T) : 0.f;
            total += kern_warp_sum(e);
        }
        float want = top_p > 0.f && top_p < 1.f ? top_p * total : total;
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
        float target = u * kept;
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
    return sm.pick;
}

/* The sampling settings of a step, read from the state. */
struct sample_args {
    int pos, K;       /* K: the top-k, the vocabulary with it off */
    float T, top_p, u;
    bool greedy;
};

/* The settings the sampler never writes (temperature, top-k, top-p); with at, also the position
 * and the uniform drawn for it (st->pos: the sampler advances it). */
__device__ struct sample_args sample_args_of(const struct kern_state *st, int vocab, bool at = true)
{
    struct sample_args a;
    a.T = st->temperature;
    a.top_p = st->top_p;
    a.K = st->top_k > 0 && st->top_k < vocab ? st->top_k : vocab;
    /* a temperature too small to divide by: greedy */
    a.greedy = a.T <= 0.f || a.K == 1 || !isfinite(1.4426950408889634f / a.T);
    a.pos = at ? st->pos : 0;
    a.u = at ? sample_uniform(st->seed, a.pos) : 0.f;
    return a;
}

/* The draw (not greedy) of the slice sl (ids from lo; the whole vocabulary without w), top: the
 * largest logit (finite). With w the grid draws; the block holding the id returns it, the
 * others -1. */
__device__ __forceinline__ int sample_draw(const float *sl, int n, int lo, int vocab, const struct sample_args &a,
                                           float top, struct sample_smem &sm, struct sample_work *w)
{
    if (a.K > KERN_SAMPLE_MAX_K)
        return sample_exact(sl, n, lo, vocab, a.K, top, a.T, a.top_p, a.u, sm, w);
    const int k = sample_top(sl, n, lo, vocab, a.K, top, 1.4426950408889634f / a.T, sm, w);
    if (w && blockIdx.x != 0)   /* every block holds the candidates; block 0 draws */
        return -1;
    return sample_draw_sorted(sm, k, top, a.T, a.top_p, a.u);
}

/* Thread 0: the id into the state (and its host mirror), the position advanced; bad: a logit
 * that is not a finite number (the state reports it, the step fails). */
__device__ void sample_finish(const float *logits, int id, int pos, struct kern_state *st, struct kern_state *mirror,
                              int bad)
{
    if (threadIdx.x == 0) {
        if (bad || !isfinite(logits[id]))   /* a NaN or infinite logit: no choice made */
            st->error = KERN_STATE_NONFINITE;
        st->sampled = id;
        st->pos = pos + 1;
        if (mirror)   /* the host's copy, written over the bus (visible once the stream is synchronised) */
            *mirror = *st;
    }
}

__global__ void __launch_bounds__(SAMPLE_THREADS) sample_kernel(const float *logits, int vocab,
                                                                struct kern_state *st, struct kern_state *mirror)
{
    __shared__ struct sample_smem sm;

    kern_grid_launch_next();
    kern_grid_wait();
    const struct sample_args a = sample_args_of(st, vocab);
    int id = sample_argmax(logits, vocab, sm.sv, sm.si, &sm.bad);
    if (!a.greedy && isfinite(logits[id]) && !sm.bad)   /* else no draw: the state reports a non-finite logit */
        id = sample_draw(logits, vocab, 0, vocab, a, logits[id], sm, nullptr);
    sample_finish(logits, id, a.pos, st, mirror, sm.bad);
}

/* ---- the same draws spread over a grid of blocks ----
 *
 * Every pass over the logits (the largest, the counts by bin, the weights by bin, the radix
 * selects, the gathers and the weight sums of the draw) runs on each block's slice, the blocks
 * meeting between passes. The small serial parts (sorting a bin's candidates, walking it) run in
 * every block on the same data, so each reaches the same cut without another meeting. The ids
 * drawn are those of the one-block kernel: the same integer sums, the same sorted candidates
 * (gpu_kernels checks every draw of its tests both ways). */
#define SAMPLE_ALONE_GRID 8   /* up to this many blocks, greedy and temperature alone run on block 0:
                               * one block reads 32,768 logits in one round trip (H200: greedy 4.6
                               * against 5.8 µs, temperature 10.6 against 13.7, bench_sampler) */
__global__ void __launch_bounds__(SAMPLE_THREADS) sample_grid_kernel(const float *logits, int vocab,
                                                                     struct kern_state *st, struct kern_state *mirror,
                                                                     struct sample_work *w)
{
    __shared__ struct sample_smem sm;

    kern_grid_launch_next();
    kern_grid_wait();
    const int g = blockIdx.x, lo = g * SAMPLE_SLICE, n = min(vocab - lo, SAMPLE_SLICE);
    const float *sl = logits + lo;
    const struct sample_args set = sample_args_of(st, vocab, false);
    if ((set.greedy || (set.K >= vocab && !(set.top_p > 0.f && set.top_p < 1.f))) && gridDim.x <= SAMPLE_ALONE_GRID) {
        if (g == 0) {   /* the one-block kernel's way (the others never read the position block 0 writes) */
            const struct sample_args a = sample_args_of(st, vocab);
            int id = sample_argmax(logits, vocab, sm.sv, sm.si, &sm.bad);
            if (!a.greedy && isfinite(logits[id]) && !sm.bad)
                id = sample_draw(logits, vocab, 0, vocab, a, logits[id], sm, nullptr);
            sample_finish(logits, id, a.pos, st, mirror, sm.bad);
        }
        return;
    }
    /* every block reads the position before the first meeting; the block that writes it, after */
    const struct sample_args a = sample_args_of(st, vocab);
    /* the accumulators zeroed for this draw (the last draw's blocks are done with them) */
    for (int i = g * blockDim.x + threadIdx.x; i < SAMPLE_BINS; i += gridDim.x * blockDim.x) {
        w->hist[i] = 0;
        w->hist64[i] = 0;
        w->hist64b[i] = 0;
        w->rh[0][i] = w->rh[1][i] = w->rh[2][i] = 0;
        if (i < 256)
            w->wh[0][i] = w->wh[1][i] = w->wh[2][i] = w->wh[3][i] = 0;
    }
    if (g == 0 && threadIdx.x == 0) {
        w->total = w->far = 0;
        w->cnt[0] = w->cnt[1] = 0;
    }

    /* the largest logit: each slice's, then every block reduces the grid's (ties: lowest id) */
    const int bi = sample_block_max(sl, n, sm.sv, sm.si, &sm.bad);
    if (threadIdx.x == 0) {
        w->pmax[g] = sm.sv[0];
        w->pid[g] = bi == 0x7fffffff ? bi : lo + bi;
        w->pbad[g] = sm.bad;
    }
    sample_grid_sync(w);
    if (threadIdx.x < 32) {
        float best = -INFINITY;
        int id = 0x7fffffff, bad = 0;
        for (int b = threadIdx.x; b < (int)gridDim.x; b += 32) {
            sample_take(__ldcg(w->pmax + b), __ldcg(w->pid + b), &best, &id);
            bad |= __ldcg(w->pbad + b);
        }
        bad = __any_sync(0xffffffffu, bad);
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_xor_sync(0xffffffffu, best, o);
            const int i2 = __shfl_xor_sync(0xffffffffu, id, o);
            sample_take(v2, i2, &best, &id);
        }
        if (threadIdx.x == 0) {
            sm.pick = id == 0x7fffffff ? 0 : id;
            sm.bad = bad;
        }
    }
    __syncthreads();
    const int top_id = sm.pick, bad = sm.bad;
    const float top = logits[top_id];
    if (a.greedy || !isfinite(top) || bad) {   /* greedy, or no draw: the state reports a non-finite logit */
        if (g == 0)
            sample_finish(logits, top_id, a.pos, st, mirror, bad);
        return;
    }
    const int id = sample_draw(sl, n, lo, vocab, a, top, sm, w);
    if (id >= 0)
        sample_finish(logits, id, a.pos, st, mirror, bad);
}

extern "C" int kern_sample(const float *logits, int vocab, struct kern_state *d_state, struct kern_state *h_mirror,
                           void *d_work, struct CUstream_st *stream, struct bora_err *err)
{
    if (vocab <= 0)
        return bora_errf(err, -EINVAL, "sample: vocab %d", vocab);
    const int blocks = (vocab + SAMPLE_SLICE - 1) / SAMPLE_SLICE;
    int dev = 0, sms = 0, per_sm = 0;
    if (d_work && blocks > 1 && blocks <= SAMPLE_MAX_GRID) {
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, sample_grid_kernel, SAMPLE_THREADS, 0));
    }
    /* The grid's blocks wait on each other, so all must be resident: at most one an SM here (a
     * block takes the SM's registers). Nothing in its stream that they wait on waits on them: the
     * kernel before has finished by the first meeting, and the one after can start only once
     * every block of this grid has started (launch_dependents, at its top). Kernels of other
     * streams only delay a block's start while they finish, unless they too wait for blocks not
     * yet resident (the decode kernel's launch is cooperative, so never partly resident); bora
     * runs one decoder, so one sampler, per GPU. */
    if (d_work && blocks > 1 && blocks <= SAMPLE_MAX_GRID && per_sm >= 1 && blocks <= sms)
        CUDA_CHECK(kern_launch(sample_grid_kernel, dim3(blocks), dim3(SAMPLE_THREADS), 0, (cudaStream_t)stream,
                               logits, vocab, d_state, h_mirror, (struct sample_work *)d_work));
    else
        CUDA_CHECK(kern_launch(sample_kernel, dim3(1), dim3(SAMPLE_THREADS), 0, (cudaStream_t)stream, logits, vocab,
                               d_state, h_mirror));
    CUDA_CHECK(cudaGetLastError());
    return 0;
}
