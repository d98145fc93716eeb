/* fixtures.h — test helpers: find the golden fixtures (in-repo copy first, then ../shared),
 * read reference.json and logits.f32. Used by the CPU and GPU golden tests. */
#ifndef BORA_TESTS_SUPPORT_FIXTURES_H
#define BORA_TESTS_SUPPORT_FIXTURES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FIX_MAX_CASES 8

/* The golden fixtures every backend test runs (../shared/fixtures): one list, so a new fixture
 * reaches the CPU, CUDA and prefill tests together. */
#define FIX_N_MODELS 5
extern const char *const fix_models[FIX_N_MODELS];
#define FIX_TOPK 8

struct fix_case {
    int32_t *prompt, *greedy;       /* prompt ids; reference greedy continuation */
    int n_prompt, n_greedy;
    float *margin;                  /* (n_prompt + n_greedy) top1 margins */
    int32_t *topk_ids;              /* (n_prompt + n_greedy, FIX_TOPK) */
    float *topk_logits;
    int *full_pos;                  /* positions whose full rows are in logits.f32 */
    int n_full;
    const float *full;              /* (n_full, vocab) into fixture's logits buffer */
};

struct fixture {
    char dir[4096];
    int vocab;
    struct fix_case cases[FIX_MAX_CASES];
    int n_cases;
    float *logits;                  /* whole logits.f32 */
};

/* Looks for fixture `name` in tests/data/fixtures, then $BORA_SHARED/fixtures, then
 * ../shared/fixtures. Returns false if absent (the caller skips loudly). */
bool fixture_find(const char *name, char *dir, size_t cap);
/* Loads reference.json and logits.f32; 0 or -errno (prints the problem). */
int fixture_load(struct fixture *f, const char *dir);
void fixture_free(struct fixture *f);

/* Largest |a[i] - b[i]| over n values; and largest |b[i]|. */
float fix_max_abs_diff(const float *a, const float *b, size_t n);
float fix_max_abs(const float *a, size_t n);

/* Length of the prefix of a greedy run that must match the reference: stops before the
 * first step whose predicting position has a top-1 margin below min_margin. */
int fix_greedy_trusted(const struct fix_case *c, float min_margin);

#endif
