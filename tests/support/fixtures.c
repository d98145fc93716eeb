/* fixtures.c — loads golden fixtures for tests (see fixtures.h). */
#include "tests/support/fixtures.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const fix_models[FIX_N_MODELS] = {
    "mistral-tiny-bf16", "mistral-tiny-fp8", "mistral-tiny-native-swa", "mistral-tiny-tied-mqa", "ministral3-tiny-yarn",
};

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

bool fixture_find(const char *name, char *dir, size_t cap)
{
    const char *shared = getenv("BORA_SHARED");
    char cand[3][4096];
    snprintf(cand[0], sizeof cand[0], "tests/data/fixtures/%s", name);
    snprintf(cand[1], sizeof cand[1], "%s/fixtures/%s", shared ? shared : "../shared", name);
    snprintf(cand[2], sizeof cand[2], "../shared/fixtures/%s", name);
    for (int i = 0; i < 3; i++)
        if (is_dir(cand[i])) {
            snprintf(dir, cap, "%s", cand[i]);
            return true;
        }
    return false;
}

static int32_t *ids_of(json_t *a, int *n)
{
    *n = (int)json_array_size(a);
    int32_t *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    for (int i = 0; v && i < *n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

int fixture_load(struct fixture *f, const char *dir)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    json_error_t e;
    json_t *r = json_load_file(path, 0, &e);
    if (!r) {
        fprintf(stderr, "%s: %s\n", path, e.text);
        return -EINVAL;
    }
    f->vocab = (int)json_integer_value(json_object_get(r, "vocab_size"));
    json_t *cases = json_object_get(r, "cases");
    size_t total_full = 0;
    for (size_t i = 0; i < json_array_size(cases) && i < FIX_MAX_CASES; i++) {
        json_t *c = json_array_get(cases, i);
        struct fix_case *fc = &f->cases[f->n_cases++];
        fc->prompt = ids_of(json_object_get(c, "prompt_ids"), &fc->n_prompt);
        fc->greedy = ids_of(json_object_get(c, "greedy_ids"), &fc->n_greedy);
        int n = fc->n_prompt + fc->n_greedy;
        json_t *m = json_object_get(c, "top1_margin"), *ti = json_object_get(c, "topk_ids"),
               *tl = json_object_get(c, "topk_logits"), *fp = json_object_get(c, "full_logits_positions");
        fc->margin = calloc((size_t)n, sizeof(float));
        fc->topk_ids = calloc((size_t)n * FIX_TOPK, sizeof(int32_t));
        fc->topk_logits = calloc((size_t)n * FIX_TOPK, sizeof(float));
        fc->n_full = (int)json_array_size(fp);
        fc->full_pos = calloc((size_t)fc->n_full + 1, sizeof(int));
        for (int p = 0; p < n; p++) {
            fc->margin[p] = (float)json_number_value(json_array_get(m, (size_t)p));
            for (int k = 0; k < FIX_TOPK; k++) {
                fc->topk_ids[p * FIX_TOPK + k] = (int32_t)json_integer_value(json_array_get(json_array_get(ti, (size_t)p), (size_t)k));
                fc->topk_logits[p * FIX_TOPK + k] = (float)json_number_value(json_array_get(json_array_get(tl, (size_t)p), (size_t)k));
            }
        }
        for (int p = 0; p < fc->n_full; p++)
            fc->full_pos[p] = (int)json_integer_value(json_array_get(fp, (size_t)p));
        total_full += (size_t)fc->n_full;
    }
    json_decref(r);
    snprintf(path, sizeof path, "%s/logits.f32", dir);
    FILE *lf = fopen(path, "rb");
    if (!lf) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -errno;
    }
    size_t want = total_full * (size_t)f->vocab;
    f->logits = malloc(want * sizeof(float) + 1);
    size_t got = f->logits ? fread(f->logits, sizeof(float), want, lf) : 0;
    fclose(lf);
    if (got != want) {
        fprintf(stderr, "%s: expected %zu floats, read %zu\n", path, want, got);
        return -EINVAL;
    }
    size_t off = 0;
    for (int i = 0; i < f->n_cases; i++) {
        f->cases[i].full = f->logits + off * (size_t)f->vocab;
        off += (size_t)f->cases[i].n_full;
    }
    return 0;
}

void fixture_free(struct fixture *f)
{
    for (int i = 0; i < f->n_cases; i++) {
        struct fix_case *c = &f->cases[i];
        free(c->prompt);
        free(c->greedy);
        free(c->margin);
        free(c->topk_ids);
        free(c->topk_logits);
        free(c->full_pos);
    }
    free(f->logits);
    memset(f, 0, sizeof *f);
}

float fix_max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}

float fix_max_abs(const float *a, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i]));
    return m;
}

int fix_greedy_trusted(const struct fix_case *c, float min_margin)
{
    int k = 0;
    while (k < c->n_greedy && c->margin[c->n_prompt - 1 + k] >= min_margin)
        k++;
    return k;
}
