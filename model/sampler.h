/* sampler.h — picks the next token from a row of logits: greedy, temperature, top-k, top-p,
 * seeded and deterministic (same seed, same logits ⇒ same ids on every run and machine). */
#ifndef BORA_MODEL_SAMPLER_H
#define BORA_MODEL_SAMPLER_H

#include <stdint.h>

struct sampler_params {
    float temperature;   /* 0 = greedy */
    float top_p;         /* (0, 1]; 1 = off */
    uint32_t top_k;      /* 0 = off */
    uint64_t seed;
};

struct sampler_cand {
    float p;
    int32_t id;
};

struct sampler {
    struct sampler_params p;
    uint64_t rng[2];             /* xorshift128+ state */
    int vocab;
    struct sampler_cand *cand;   /* (vocab) scratch, allocated once */
    float *w;                    /* (vocab rounded up to SAMPLER_BLOCK) scratch: unnormalised weights */
    float *bsum;                 /* (vocab / SAMPLER_BLOCK, rounded up) scratch: their sums by block */
};
#define SAMPLER_BLOCK 64         /* weights summed together for the draw's first walk */

/* Allocates scratch for `vocab` candidates. Errors: -ENOMEM, -EINVAL (vocab ≤ 0 or a
 * parameter out of range: temperature < 0 or not finite, top_p outside (0, 1]). */
int sampler_init(struct sampler *s, int vocab, const struct sampler_params *p);
/* Restarts the random sequence with new parameters (no allocation). Same errors as init. */
int sampler_reset(struct sampler *s, const struct sampler_params *p);
void sampler_fini(struct sampler *s);

/* Returns the chosen id. logits is read-only. Greedy ties go to the lowest id. */
int32_t sampler_sample(struct sampler *s, const float *logits);

/* Index of the largest value (lowest index on ties). */
int32_t sampler_argmax(const float *logits, int n);

#endif
