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
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    if (!s->cand)
        return -ENOMEM;
    s->vocab = vocab;
    return sampler_reset(s, p);
}

void sampler_fini(struct sampler *s)
{
    free(s->cand);
    s->cand = NULL;
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

/* Moves the k best of c[0, n) to c[0, k) (in no particular order); O(n) expected, O(n log n)
 * at worst. */
static void select_best(struct sampler_cand *c, int n, int k)
{
    int lo = 0, hi = n, rounds = round_limit(n);
    while (hi - lo > 1) {
        if (--rounds < 0) {
            qsort(c + lo, (size_t)(hi - lo), sizeof *c, cmp_better);
            return;
        }
        int a = partition(c, lo, hi);
        if (a == k || a + 1 == k)
            return;
        if (a > k)
            hi = a;
        else
            lo = a + 1;
    }
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

/* Temperature, then top-k, then top-p over the candidates within SAMPLER_LOGIT_WINDOW of the
 * best, then one draw. No sort of the whole vocabulary: top-k and top-p select their sets in
 * expected linear time, and the draw walks the kept set in a fixed order (the distribution does
 * not depend on the order; the order depends only on the logits, so a seed still reproduces). */
int32_t sampler_sample(struct sampler *s, const float *logits)
{
    if (s->p.temperature == 0.0f || s->p.top_k == 1)
        return sampler_argmax(logits, s->vocab);
    const float t = s->p.temperature;
    const float mx = logits[sampler_argmax(logits, s->vocab)];
    int n = 0;
    for (int i = 0; i < s->vocab; i++) {
        /* log-probability up to a constant, ≤ 0; a division, not a multiplication by 1/t, which
         * overflows for t below ≈ 3e-39 (the best token's 0 · ∞ would be NaN) */
        const float d = (logits[i] - mx) / t;
        if (d > -SAMPLER_LOGIT_WINDOW) {
            s->cand[n].id = i;
            s->cand[n].p = d;
            n++;
        }
    }
    if (n == 0)   /* no finite best (every logit NaN or -inf, or +inf ones): the greedy pick */
        return sampler_argmax(logits, s->vocab);
    if (s->p.top_k > 0 && (uint32_t)n > s->p.top_k) {
        select_best(s->cand, n, (int)s->p.top_k);
        n = (int)s->p.top_k;
    }
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->cand[i].p = expf(s->cand[i].p);
        sum += s->cand[i].p;
    }
    if (s->p.top_p < 1.0f) {   /* the smallest set of the best whose mass reaches top_p */
        n = nucleus(s->cand, n, (double)s->p.top_p * sum);
        sum = 0;
        for (int i = 0; i < n; i++)
            sum += s->cand[i].p;
    }
    double r = next_unit(s) * sum, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->cand[i].p;
        if (r < acc)
            return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}
