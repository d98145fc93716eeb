/* sampler.c — temperature / top-k / top-p sampling over logits with a seeded xorshift128+. */
#include "model/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Candidates whose logit is this far (in units of temperature) below the maximum have
 * probability < e^-40 relative to the top token and are dropped before sorting. */
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

int32_t sampler_argmax(const float *logits, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

static int cmp_desc(const void *a, const void *b)
{
    const struct sampler_cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);   /* deterministic order on ties */
}

int32_t sampler_sample(struct sampler *s, const float *logits)
{
    if (s->p.temperature == 0.0f || s->p.top_k == 1)
        return sampler_argmax(logits, s->vocab);
    const float t = s->p.temperature;
    const float mx = logits[sampler_argmax(logits, s->vocab)];
    int n = 0;
    for (int i = 0; i < s->vocab; i++)
        if ((mx - logits[i]) / t < SAMPLER_LOGIT_WINDOW) {
            s->cand[n].id = i;
            s->cand[n].p = (logits[i] - mx) / t;   /* log-probability up to a constant */
            n++;
        }
    qsort(s->cand, (size_t)n, sizeof *s->cand, cmp_desc);
    if (s->p.top_k > 0 && (uint32_t)n > s->p.top_k)
        n = (int)s->p.top_k;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        s->cand[i].p = expf(s->cand[i].p);
        sum += s->cand[i].p;
    }
    if (s->p.top_p < 1.0f) {   /* smallest prefix whose mass reaches top_p */
        double acc = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += s->cand[i].p / sum;
            if (acc >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
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
