/* sampler.c — temperature / top-k / top-p sampling over logits with a seeded xorshift128+. */
#include "model/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Candidates whose logit is this far (in units of temperature) below the maximum have
 * probability < e^-40 relative to the top token and are dropped. */
#define SAMPLER_LOGIT_WINDOW 40.0f

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t next_u64(struct sampler *s)
{
    uint64_t a = s->rng[0], b = s->rng[1];
    s->rng[0] = b;
    a ^= a << 23;
    s->rng[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    return s->rng[1] + b;
}

static double next_unit(struct sampler *s)
{
    return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0);   /* [0, 1) */
}

static int check(const struct sampler_params *p)
{
    if (!isfinite(p->temperature) || p->temperature < 0)
        return -EINVAL;
    if (!(p->top_p > 0 && p->top_p <= 1))
        return -EINVAL;
    return 0;
}

int sampler_reset(struct sampler *s, const struct sampler_params *p)
{
    if (check(p))
        return -EINVAL;
    s->p = *p;
    uint64_t x = p->seed;
    s->rng[0] = splitmix64(&x);
    s->rng[1] = splitmix64(&x);
    return 0;
}

int sampler_init(struct sampler *s, int vocab, const struct sampler_params *p)
{
    memset(s, 0, sizeof *s);
    if (vocab <= 0 || check(p))
        return -EINVAL;
    const size_t nb = ((size_t)vocab + SAMPLER_BLOCK - 1) / SAMPLER_BLOCK;
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    s->w = aligned_alloc(64, nb * SAMPLER_BLOCK * sizeof *s->w);
    s->bsum = malloc(nb * sizeof *s->bsum);
    if (!s->cand || !s->w || !s->bsum) {
        sampler_fini(s);
        return -ENOMEM;
    }
    s->vocab = vocab;
    return sampler_reset(s, p);
}

void sampler_fini(struct sampler *s)
{
    free(s->cand);
    free(s->w);
    free(s->bsum);
    s->cand = NULL;
    s->w = NULL;
    s->bsum = NULL;
}

/* Two passes, each without a loop-carried dependence through memory: the largest value over
 * eight independent lanes (NaN never wins a comparison), then its first index. */
int32_t sampler_argmax(const float *logits, int n)
{
    float m[8] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            m[j] = logits[i + j] > m[j] ? logits[i + j] : m[j];
    for (; i < n; i++)
        m[0] = logits[i] > m[0] ? logits[i] : m[0];
    float mx = m[0];
    for (int j = 1; j < 8; j++)
        mx = m[j] > mx ? m[j] : mx;
    for (i = 0; i < n; i++)
        if (logits[i] == mx)
            return i;
    return 0;   /* every value NaN */
}

/* Candidate order: larger p first, then lower id (a strict order: ids are distinct). */
static inline bool better(const struct sampler_cand *x, const struct sampler_cand *y)
{
    return x->p > y->p || (x->p == y->p && x->id < y->id);
}

static inline void swap_cand(struct sampler_cand *a, struct sampler_cand *b)
{
    struct sampler_cand t = *a;
    *a = *b;
    *b = t;
}

static int cmp_better(const void *a, const void *b)
{
    const struct sampler_cand *x = a, *y = b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

/* Partitions c[lo, hi) around the median of its first, middle and last elements: returns a
 * with c[lo, a) better than c[a] and c[a + 1, hi) worse. Deterministic (same input, same order). */
static int partition(struct sampler_cand *c, int lo, int hi)
{
    int m = lo + (hi - lo) / 2, l = lo, r = hi - 1;
    if (better(&c[m], &c[l]))
        swap_cand(&c[m], &c[l]);
    if (better(&c[r], &c[l]))
        swap_cand(&c[r], &c[l]);
    if (better(&c[r], &c[m]))
        swap_cand(&c[r], &c[m]);   /* c[l] ≥ c[m] ≥ c[r]: c[m] the median */
    swap_cand(&c[m], &c[hi - 1]);
    const struct sampler_cand pv = c[hi - 1];
    int a = lo;
    for (int i = lo; i < hi - 1; i++)
        if (better(&c[i], &pv))
            swap_cand(&c[i], &c[a++]);
    swap_cand(&c[a], &c[hi - 1]);
    return a;
}

/* Partition rounds before a range is sorted instead: a bad run of pivots (logits shaped
 * against the median of three) cannot make the selection quadratic. */
static int round_limit(int n)
{
    int r = 8;
    while (n > 1) {
        n >>= 1;
        r += 2;
    }
    return r;
}

/* The nucleus: moves the best candidates to c[0, m) and returns the smallest m whose mass
 * (c[i].p, unnormalised weights) reaches target, as a sort by `better` would find it; expected
 * O(n), only the last few candidates at the cut are sorted. */
static int nucleus(struct sampler_cand *c, int n, double target)
{
    int lo = 0, hi = n;   /* c[0, lo) are better than all of c[lo, n) and weigh acc < target */
    double acc = 0;
    int rounds = round_limit(n);
    while (hi - lo > 32) {
        if (--rounds < 0) {   /* sort what is left and walk it */
            qsort(c + lo, (size_t)(hi - lo), sizeof *c, cmp_better);
            for (int i = lo; i < hi; i++) {
                acc += c[i].p;
                if (acc >= target)
                    return i + 1;
            }
            return hi;
        }
        int a = partition(c, lo, hi);
        double mass = 0;
        for (int i = lo; i <= a; i++)
            mass += c[i].p;
        if (acc + mass >= target) {
            hi = a + 1;   /* the cut lies in c[lo, a] */
        } else {
            acc += mass;
            lo = a + 1;
        }
    }
    for (int i = lo + 1; i < hi; i++) {   /* insertion sort of the few left */
        struct sampler_cand x = c[i];
        int j = i;
        for (; j > lo && better(&x, &c[j - 1]); j--)
            c[j] = c[j - 1];
        c[j] = x;
    }
    for (int i = lo; i < hi; i++) {
        acc += c[i].p;
        if (acc >= target)
            return i + 1;
    }
    return hi;
}

/* Eight lanes at a time (GCC vector extensions): AVX2 where the CPU has it (a clone chosen at
 * load time), else two SSE2 (x86-64) or NEON (aarch64) halves. Every path runs the same IEEE
 * operations (no fused multiply-add: ISO C's contraction is off), so the same seed gives the same
 * ids on every machine. */
typedef float sv8f __attribute__((vector_size(32)));
typedef int32_t sv8i __attribute__((vector_size(32)));

/* w = e^((l - mx) / t) where that exponent d is above -SAMPLER_LOGIT_WINDOW, else 0 (NaN too).
 * e^d: d = n ln 2 + r with n the nearest integer to d log2 e (ln 2 in two parts, Cody and Waite,
 * so r keeps its bits), e^r by its Taylor polynomial of degree 6 on |r| ≤ ln 2 / 2, 2^n as a
 * float's exponent bits. Relative error ≤ 2.5e-7 against exp in double, measured over 4e7 points
 * of (-40, 0]. A macro, not a function: no vector arguments (their ABI differs with AVX). */
#define SAMPLER_W8(w, l)                                                                            \
    do {                                                                                            \
        /* a division where 1/t overflows (t below ≈ 3e-39: the best token's 0 · ∞ would be NaN) */ \
        const sv8f d_ = divide ? ((l) - mx) / t : ((l) - mx) * inv_t;                               \
        const sv8i keep_ = d_ > -SAMPLER_LOGIT_WINDOW; /* false for NaN */                          \
        sv8i di_;                                                                                   \
        memcpy(&di_, &d_, sizeof di_);                                                              \
        di_ &= keep_;                                                                               \
        sv8f dk_;                                                                                   \
        memcpy(&dk_, &di_, sizeof dk_);                                                             \
        /* > 0 before the -128: truncation rounds to nearest */                                    \
        const sv8i n_ = __builtin_convertvector(dk_ * 1.44269504088896341f + 128.5f, sv8i) - 128;   \
        const sv8f nf_ = __builtin_convertvector(n_, sv8f);                                         \
        const sv8f r_ = (dk_ - nf_ * 0.693145751953125f) - nf_ * 1.428606765330187e-6f;             \
        sv8f p_ = r_ * (1.0f / 720) + (1.0f / 120);                                                 \
        p_ = p_ * r_ + (1.0f / 24);                                                                 \
        p_ = p_ * r_ + (1.0f / 6);                                                                  \
        p_ = p_ * r_ + 0.5f;                                                                        \
        p_ = p_ * r_ + 1.0f;                                                                        \
        p_ = p_ * r_ + 1.0f;                                                                        \
        const sv8i e_ = (n_ + 127) << 23; /* 2^n as a float's bits (n ≥ -58) */                   \
        sv8f two_n_;                                                                                \
        memcpy(&two_n_, &e_, sizeof two_n_);                                                        \
        p_ *= two_n_;                                                                               \
        sv8i wi_;                                                                                   \
        memcpy(&wi_, &p_, sizeof wi_);                                                              \
        wi_ &= keep_;                                                                               \
        memcpy(&(w), &wi_, sizeof(w));                                                              \
    } while (0)

/* An ifunc resolver runs before ThreadSanitizer's runtime is up: a TSan build takes the default. */
#if defined(__SANITIZE_THREAD__)
#define SAMPLER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SAMPLER_TSAN 1
#endif
#endif

/* w[i] = e^((logits[i] - mx) / t) (SAMPLER_W8) for every i < vocab (0 past it, up to the block),
 * and each block's sum. Returns the sum of all. */
#ifndef SAMPLER_TSAN
__attribute__((target_clones("avx2", "default")))
#endif
static double sampler_weights(struct sampler *s, const float *logits, float mx, float t)
{
    const int V = s->vocab, nb = (V + SAMPLER_BLOCK - 1) / SAMPLER_BLOCK, full = V / SAMPLER_BLOCK;
    const float inv_t = 1.0f / t;
    const int divide = !isfinite(inv_t);
    double total = 0;
    for (int b = 0; b < nb; b++) {
        sv8f acc = { 0 };
        const int i0 = b * SAMPLER_BLOCK;
        for (int i = i0; i < i0 + SAMPLER_BLOCK; i += 8) {
            sv8f l, w;
            if (b < full) {
                memcpy(&l, logits + i, sizeof l);
            } else {   /* the last, partial block: -inf past the vocabulary gives weight 0 */
                for (int j = 0; j < 8; j++)
                    l[j] = i + j < V ? logits[i + j] : -INFINITY;
            }
            SAMPLER_W8(w, l);
            memcpy(s->w + i, &w, sizeof w);
            acc += w;
        }
        s->bsum[b] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        total += s->bsum[b];
    }
    return total;
}

/* The k best weights (by `better`: larger, then lower id) into c[0, k), in heap order: a min-heap
 * whose root is the worst of those kept; one comparison for most of the vocabulary. Returns how
 * many were kept (fewer than k when fewer weights are non-zero). */
static int sampler_top_k(const float *w, int V, struct sampler_cand *c, int k)
{
    int n = 0;
    for (int i = 0; i < V; i++) {
        const float x = w[i];
        if (!(x > 0))
            continue;
        if (n < k) {   /* sift up */
            int j = n++;
            while (j > 0 && x <= c[(j - 1) / 2].p) {   /* equal weights: the later (higher) id is worse */
                c[j] = c[(j - 1) / 2];
                j = (j - 1) / 2;
            }
            c[j] = (struct sampler_cand){ x, i };
        } else if (x > c[0].p) {   /* better than the worst kept (a tie loses: its id is higher) */
            const struct sampler_cand nc = { x, i };
            int j = 0;
            for (;;) {   /* sift down from the root while a child is worse than the new one */
                int a = 2 * j + 1;
                if (a >= k)
                    break;
                if (a + 1 < k && better(&c[a], &c[a + 1]))
                    a++;                           /* the worse child */
                if (!better(&nc, &c[a]))
                    break;
                c[j] = c[a];
                j = a;
            }
            c[j] = nc;
        }
    }
    return n;
}

/* One draw among c[0, n) weighted by c[i].p, walking them in order. */
static int32_t sampler_draw_cand(struct sampler *s, const struct sampler_cand *c, int n, double sum)
{
    double r = next_unit(s) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (r < acc)
            return c[i].id;
    }
    return c[n - 1].id;
}

/* Top-p alone: the smallest set of the best weights whose mass reaches target, as a sort by
 * `better` would find it, without one. Weights in (0, 1] are ordered as their bits are, so a
 * histogram of their exponents (4 interleaved copies: no chain through one counter) finds the
 * exponent e at which the mass from the top reaches the target; every weight of a larger exponent
 * is in, those of exponent e are ordered by nucleus() and taken until the target. The draw walks
 * the larger ones in id order, then e's in that order. */
static inline int w_exponent(float w)   /* a float's biased exponent (0 for 0) */
{
    uint32_t u;
    memcpy(&u, &w, sizeof u);
    return (int)(u >> 23) & 255;
}

static int32_t sampler_top_p(struct sampler *s, double total)
{
    const int V = s->vocab;
    const float *w = s->w;
    double mass[4][128];
    memset(mass, 0, sizeof mass);
    for (int i = 0; i < V; i++)   /* weights ≤ 1: exponents ≤ 127; 0 for the zero weights */
        mass[i & 3][w_exponent(w[i]) & 127] += w[i];
    const double target = (double)s->p.top_p * total;
    double above = 0;
    int e = 127;
    for (; e > 0; e--) {
        const double m = (mass[0][e] + mass[1][e]) + (mass[2][e] + mass[3][e]);
        if (above + m >= target || e == 1)
            break;
        above += m;
    }
    /* exponent e's weights, then the prefix of them that reaches the target */
    int m = 0;
    for (int i = 0; i < V; i++)
        if (w_exponent(w[i]) == e)   /* e ≥ 1: not the zero weights */
            s->cand[m++] = (struct sampler_cand){ w[i], i };
    const int n = m > 0 ? nucleus(s->cand, m, target - above) : 0;
    double sum = above;
    for (int i = 0; i < n; i++)
        sum += s->cand[i].p;
    double r = next_unit(s) * sum, acc = 0;
    int32_t last = -1;
    for (int i = 0; i < V; i++) {
        if (w_exponent(w[i]) > e) {
            acc += w[i];
            last = i;
            if (r < acc)
                return i;
        }
    }
    for (int i = 0; i < n; i++) {
        acc += s->cand[i].p;
        if (r < acc)
            return s->cand[i].id;
    }
    return n > 0 ? s->cand[n - 1].id : last;
}

/* Temperature, then top-k, then top-p over the candidates within SAMPLER_LOGIT_WINDOW of the
 * best, then one draw. The weights are computed eight at a time into scratch with their sums by
 * block; temperature alone draws by walking the block sums, then one block; top-k keeps its set in
 * a heap; top-p alone finds its cut with a histogram of the weights' exponents. No sort of the
 * vocabulary. The draw walks the kept set in an order fixed by the logits: the distribution does
 * not depend on the order, and a seed reproduces its ids. */
int32_t sampler_sample(struct sampler *s, const float *logits)
{
    if (s->p.temperature == 0.0f || s->p.top_k == 1)
        return sampler_argmax(logits, s->vocab);
    const int V = s->vocab;
    const int32_t best = sampler_argmax(logits, V);
    const float mx = logits[best];
    if (!isfinite(mx))   /* no finite best (every logit NaN or -inf, or +inf ones): the greedy pick */
        return best;
    const double total = sampler_weights(s, logits, mx, s->p.temperature);
    if (!(total > 0))
        return best;
    if (s->p.top_k > 0 && s->p.top_k < (uint32_t)V) {
        int n = sampler_top_k(s->w, V, s->cand, (int)s->p.top_k);
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += s->cand[i].p;
        if (s->p.top_p < 1.0f) {   /* the smallest set of the best whose mass reaches top_p */
            n = nucleus(s->cand, n, (double)s->p.top_p * sum);
            sum = 0;
            for (int i = 0; i < n; i++)
                sum += s->cand[i].p;
        }
        return sampler_draw_cand(s, s->cand, n, sum);
    }
    if (s->p.top_p < 1.0f)
        return sampler_top_p(s, total);
    /* temperature alone: the block, then the weight */
    const int nb = (V + SAMPLER_BLOCK - 1) / SAMPLER_BLOCK;
    double r = next_unit(s) * total, acc = 0;
    int b = 0;
    for (; b < nb - 1; b++) {
        if (r < acc + s->bsum[b])
            break;
        acc += s->bsum[b];
    }
    int32_t last = best;
    for (int i = b * SAMPLER_BLOCK; i < (b + 1) * SAMPLER_BLOCK && i < V; i++) {
        if (s->w[i] > 0) {
            acc += s->w[i];
            last = i;
            if (r < acc)
                return i;
        }
    }
    return last;   /* rounding left r past the block's sum: its last weight */
}
