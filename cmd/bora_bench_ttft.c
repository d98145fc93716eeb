/* bora_bench_ttft.c — `bora bench ttft`: time to first token of a preset's shape with random
 * weights generated on the GPU: from prompt ids on the host through the chunked batched prefill,
 * the output head and the sampler to the first id on the host; median of several runs, with the
 * prefill throughput (tokens/s) and the model FLOP rate achieved (TFLOP/s). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/bora_bench.h"
#include "kernels/plan.h"
#include "model/engine.h"

#ifdef BORA_CUDA
#include "kernels/engine_cuda.h"
#include "kernels/kernels.h"
#include "kernels/prefill_run.h"
#endif

#define TTFT_MAX_PROMPTS 16
#define TTFT_WARMUP 2              /* untimed runs per prompt length (algorithm choice, first launches) */
#define TTFT_RUNS_DEFAULT 7
#define TTFT_SEED 0x77f7ULL
#define TTFT_BUDGET_7B_2048_MS 30.0   /* issue #5: mistral-7b FP8 at 2,048 tokens (goal 23) */
#define TTFT_BUDGET_7B_128_MS 5.0

struct ttft_opts {
    const char *preset;
    enum model_precision precision;
    int prompts[TTFT_MAX_PROMPTS], n_prompts;
    int runs, chunk;
    int cached;                    /* prompt tokens already in the KV cache (prefix-cache hit) */
    bool json, profile;
    enum engine_kv kv;             /* the KV cache's element type */
};

static const char ttft_usage[] =
    "usage: bora bench ttft --preset NAME [--precision fp8|bf16] [--kv bf16|fp8] [--prompt N,N,...] [--cached N]\n"
    "                       [--runs N] [--chunk N] [--json] [--profile]\n"
    "       (defaults: --precision fp8 --prompt 128,512,2048,8192 --runs 7 --chunk 2048;\n"
    "        --cached N: the prompt's first N tokens are in the KV cache already, a prefix-cache hit)\n";

static int ttft_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || errno || v < lo || v > hi) {
        fprintf(stderr, "bora bench ttft: %s: expected an integer in [%d, %d] (got '%s')\n", opt, lo, hi, s);
        return -EINVAL;
    }
    *out = (int)v;
    return (int)(end - s);
}

static int ttft_prompts(struct ttft_opts *o, const char *s)
{
    o->n_prompts = 0;
    for (const char *p = s;;) {
        if (o->n_prompts == TTFT_MAX_PROMPTS) {
            fprintf(stderr, "bora bench ttft: --prompt: at most %d lengths\n", TTFT_MAX_PROMPTS);
            return -EINVAL;
        }
        char one[32];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof one) {
            fprintf(stderr, "bora bench ttft: --prompt: bad list '%s' (expected N,N,...)\n", s);
            return -EINVAL;
        }
        memcpy(one, p, len);
        one[len] = 0;
        int used = ttft_int("--prompt", one, 2, 1 << 20, &o->prompts[o->n_prompts++]);
        if (used < 0)
            return used;
        if ((size_t)used != len) {
            fprintf(stderr, "bora bench ttft: --prompt: '%s' is not a number\n", one);
            return -EINVAL;
        }
        if (!p[len])
            return 0;
        p += len + 1;
    }
}

static int ttft_parse(struct ttft_opts *o, int argc, char **argv)
{
    *o = (struct ttft_opts){ .precision = MODEL_PRECISION_FP8, .prompts = { 128, 512, 2048, 8192 }, .n_prompts = 4,
                             .runs = TTFT_RUNS_DEFAULT, .chunk = 0 };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json") || !strcmp(a, "--profile")) {
            *(a[2] == 'j' ? &o->json : &o->profile) = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bora bench ttft: %s needs a value\n%s", a, ttft_usage);
            return -EINVAL;
        }
        i++;
        int rc = 0;
        if (!strcmp(a, "--preset"))
            o->preset = v;
        else if (!strcmp(a, "--precision")) {
            if (model_precision_parse(v, &o->precision) || o->precision == MODEL_PRECISION_AUTO) {
                fprintf(stderr, "bora bench ttft: --precision: expected fp8 or bf16 (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--kv")) {
            if (engine_kv_parse(v, &o->kv)) {
                fprintf(stderr, "bora bench ttft: --kv: expected bf16 or fp8 (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--prompt"))
            rc = ttft_prompts(o, v);
        else if (!strcmp(a, "--runs"))
            rc = ttft_int(a, v, 1, 1000, &o->runs);
        else if (!strcmp(a, "--chunk"))
            rc = ttft_int(a, v, 16, 1 << 20, &o->chunk);
        else if (!strcmp(a, "--cached"))
            rc = ttft_int(a, v, 0, 1 << 20, &o->cached);
        else {
            fprintf(stderr, "bora bench ttft: unknown option '%s'\n%s", a, ttft_usage);
            return -EINVAL;
        }
        if (rc < 0)
            return rc;
    }
    for (int i = 0; i < o->n_prompts; i++)
        if (o->prompts[i] < o->cached + 2) {
            fprintf(stderr, "bora bench ttft: --prompt %d: at least 2 tokens beyond the %d cached ones\n", o->prompts[i],
                    o->cached);
            return -EINVAL;
        }
    if (!o->preset || !plan_preset_find(o->preset)) {
        fprintf(stderr, "bora bench ttft: --preset: %s '%s'\n%s", o->preset ? "unknown preset" : "missing",
                o->preset ? o->preset : "", ttft_usage);
        return -EINVAL;
    }
    return 0;
}

#ifdef BORA_CUDA
static int ttft_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs TTFT_WARMUP + runs prefills of n random ids, the first `cached` of them put in the KV
 * cache once beforehand (untimed) and the rest timed; *median and *min in ms, *first0 the first
 * warm-up's (the first prompt of this length since the engine opened). */
static int ttft_measure(struct engine *e, int n, int cached, int runs, double *median, double *min, double *first0,
                        int32_t *first, struct bora_err *err)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    double *ms = malloc((size_t)runs * sizeof *ms);
    if (!ids || !ms) {
        free(ids);
        free(ms);
        return bora_errf(err, -ENOMEM, "no host memory for %d ids", n);
    }
    uint64_t x = TTFT_SEED + (uint64_t)n;
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)e->model->cfg.vocab_size);
    }
    int rc = 0;
    double t;
    if (cached > 0 && (rc = engine_forward(e, ids, cached, 0, NULL)) < 0)
        bora_errf(err, rc, "prefill of the %d cached tokens failed", cached);
    for (int r = 0; !rc && r < TTFT_WARMUP; r++) {
        rc = engine_cuda_ttft(e, ids + cached, n - cached, cached, first, &t, err);
        if (r == 0)
            *first0 = t;
    }
    for (int r = 0; !rc && r < runs; r++)
        rc = engine_cuda_ttft(e, ids + cached, n - cached, cached, first, &ms[r], err);
    if (!rc) {
        qsort(ms, (size_t)runs, sizeof *ms, ttft_cmp);
        *median = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
        *min = ms[0];
    }
    free(ids);
    free(ms);
    return rc;
}

/* One more prefill with CUDA events around every launch: where the time goes. */
static int ttft_profile(struct engine *e, int n, bool json, struct bora_err *err)
{
    struct prefill_run *p = engine_cuda_prefill(e);
    double ms[PREFILL_PROF_KINDS], t, sum = 0;
    int32_t first;
    int rc = prefill_run_profile(p, true, err);
    if (!rc)
        rc = ttft_measure(e, n, 0, 1, &t, &t, &t, &first, err);
    prefill_run_profile_read(p, ms);
    prefill_run_profile(p, false, err);
    if (rc)
        return rc;
    /* ttft_measure ran warm-up + 1 prefills with events: per prefill */
    for (int k = 0; k < PREFILL_PROF_KINDS; k++)
        sum += ms[k] /= TTFT_WARMUP + 1;
    if (json) {
        printf("{\"bench\":\"ttft_profile\",\"prompt\":%d", n);
        for (int k = 0; k < PREFILL_PROF_KINDS; k++)
            printf(",\"%s_ms\":%.3f", prefill_prof_name(k), ms[k]);
        printf(",\"sum_ms\":%.3f}\n", sum);
        return 0;
    }
    printf("    profile (device time per prefill, events around each launch):");
    for (int k = 0; k < PREFILL_PROF_KINDS; k++)
        printf(" %s %.3f ms;", prefill_prof_name(k), ms[k]);
    printf(" sum %.3f ms\n", sum);
    return 0;
}

static int ttft_run(const struct ttft_opts *o)
{
    struct bora_err err = { "" };
    struct kern_device dev;
    if (kern_device_query(&dev, &err)) {
        fprintf(stderr, "bora bench ttft: %s\n", err.msg);
        return 1;
    }
    int max_prompt = 0;
    for (int i = 0; i < o->n_prompts; i++)
        max_prompt = o->prompts[i] > max_prompt ? o->prompts[i] : max_prompt;
    struct model m;
    if (bench_synthetic_model(&m, o->preset, o->precision, 0)) {
        fprintf(stderr, "bora bench ttft: out of memory\n");
        return 1;
    }
    struct engine e = { .model = &m, .max_ctx = max_prompt + 1, .kv = o->kv };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = engine_cuda_open_synthetic(&e, TTFT_SEED, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double open_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (!rc && o->chunk)
        rc = engine_cuda_set_prefill_chunk(&e, o->chunk, &err);
    if (rc) {
        fprintf(stderr, "bora bench ttft: %s: %s\n", o->preset, err.msg);
        if (e.ops)
            e.ops->close(&e);
        bench_synthetic_free(&m);
        return 1;
    }
    const char *prec = o->precision == MODEL_PRECISION_FP8 ? "fp8" : "bf16";
    const int chunk = o->chunk ? o->chunk : PREFILL_CHUNK_DEFAULT;
    if (!o->json)
        printf("bench ttft  %s %s, %s KV  chunk %d, median of %d runs  on %s  (engine open %.0f ms: weights generated, "
               "kernels and every GEMM bucket timed)\n", o->preset, prec, engine_kv_name(o->kv), chunk, o->runs, dev.name,
               open_ms);
    int status = 0;
    for (int i = 0; i < o->n_prompts; i++) {
        const int n = o->prompts[i];
        double med = 0, mn = 0, first_ms = 0;
        int32_t first = -1;
        rc = ttft_measure(&e, n, o->cached, o->runs, &med, &mn, &first_ms, &first, &err);
        if (rc) {
            fprintf(stderr, "bora bench ttft: %s %d tokens: %s\n", o->preset, n, err.msg);
            status = 1;
            break;
        }
        const double flops = prefill_flops(&m.cfg, n - o->cached, o->cached);
        const double tflops = flops / (med * 1e-3) / 1e12, tps = (n - o->cached) / (med * 1e-3);
        const char *path = engine_cuda_prefill_path(&e) ? "cublaslt" : "fallback";
        if (o->json) {
            printf("{\"bench\":\"ttft\",\"preset\":\"%s\",\"precision\":\"%s\",\"kv\":\"%s\",\"prompt\":%d,\"cached\":%d,\"chunk\":%d,"
                   "\"runs\":%d,\"gpu\":\"%s\",\"ttft_ms\":%.3f,\"ttft_min_ms\":%.3f,\"prefill_tok_per_s\":%.0f,"
                   "\"ttft_first_ms\":%.3f,\"open_ms\":%.1f,\"flop\":%.4e,\"tflops\":%.1f,\"gemm\":\"%s\",\"first_id\":%d}\n",
                   o->preset, prec, engine_kv_name(o->kv), n, o->cached, chunk, o->runs, dev.name, med, mn, tps, first_ms, open_ms, flops, tflops, path,
                   first);
        } else {
            printf("  prompt %6d", n);
            if (o->cached)
                printf(" (%d cached)", o->cached);
            printf("  TTFT %8.3f ms (min %8.3f, first %8.3f)  %9.0f tok/s  %7.1f TFLOP/s  (%s GEMMs)", med, mn,
                   first_ms, tps, tflops, path);
            if (!o->cached && !strcmp(o->preset, "mistral-7b") && o->precision == MODEL_PRECISION_FP8 && o->kv == ENGINE_KV_BF16 &&
                (n == 2048 || n == 128))
                printf("  budget <= %.0f ms", n == 2048 ? TTFT_BUDGET_7B_2048_MS : TTFT_BUDGET_7B_128_MS);
            printf("\n");
        }
        if (o->profile && (rc = ttft_profile(&e, n, o->json, &err))) {
            fprintf(stderr, "bora bench ttft: profile: %s\n", err.msg);
            status = 1;
        }
        fflush(stdout);
    }
    e.ops->close(&e);
    bench_synthetic_free(&m);
    return status;
}
#endif

int cmd_bench_ttft(int argc, char **argv)
{
    struct ttft_opts o;
    if (ttft_parse(&o, argc, argv))
        return 2;
#ifdef BORA_CUDA
    return ttft_run(&o);
#else
    fprintf(stderr, "bora bench ttft: built without CUDA (rebuild with nvcc available or CUDA=1)\n");
    return 1;
#endif
}
