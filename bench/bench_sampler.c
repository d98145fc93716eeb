/* bench_sampler.c — the host sampler (model/sampler.c), which the CPU backend runs on every token's
 * logits (a GPU samples inside its decode graph):
 * µs per sampled token at Mistral's vocabularies (32,768 and Tekken's 131,072) for greedy,
 * temperature alone, temperature + top-p and temperature + top-k. Budget: 120 µs a token,
 * 5 % of a 7B FP8 decode step on the H200 (2.4 ms), so sampling never shows in tokens/s.
 * The logits are synthetic but shaped like a model's: a normal body and a few strong tokens.
 * Built with CUDA and run on a GPU, it then times the GPU sampler (kern_sample, which the CUDA
 * engine runs inside its decode graph) on the same logits: µs per token, budget 30 µs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "model/sampler.h"
#ifdef BORA_CUDA
#include "kernels/kernels.h"
#endif

#define BENCH_BUDGET_US 120.0
#define BENCH_ITERS 400
#define BENCH_GPU_BUDGET_US 30.0
#define BENCH_GPU_LAUNCHES 200

static const int bench_vocabs[] = { 32768, 131072 };   /* Mistral's and Tekken's */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x >> 11;
}

/* Standard normal body (σ 2.5) with 8 tokens lifted by 6–13. */
static void fill(float *lg, int vocab, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < vocab; i++) {
        double u1 = (lcg(&x) + 1.0) / 9007199254740993.0, u2 = lcg(&x) / 9007199254740992.0;
        lg[i] = (float)(2.5 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    }
    for (int k = 0; k < 8; k++)
        lg[lcg(&x) % (uint64_t)vocab] += 6.0f + (float)k;
}

#ifdef BORA_CUDA
/* kern_sample launched BENCH_GPU_LAUNCHES times back to back on device-resident logits; the mean
 * µs per launch (launches queue behind each other, so this is the kernel's time, not the
 * launch latency), with its workspace (the grid of blocks the engine runs) and without (one
 * block). 0 when there is no GPU; -1 on a CUDA error (printed). */
static int bench_gpu_time(const float *dl, int V, struct kern_state *ds, const struct kern_state *s, void *work,
                          double *us, struct bora_err *err)
{
    if (kern_copy_h2d(ds, s, sizeof *s, err) || kern_sample(dl, V, ds, NULL, work, NULL, err) || kern_sync(err))
        return -1;   /* one warm-up */
    const double t0 = now_us();
    for (int i = 0; i < BENCH_GPU_LAUNCHES; i++)
        if (kern_sample(dl, V, ds, NULL, work, NULL, err))
            return -1;
    if (kern_sync(err))
        return -1;
    *us = (now_us() - t0) / BENCH_GPU_LAUNCHES;
    return 0;
}

static int bench_gpu(void)
{
    struct kern_device d;
    struct bora_err err = { "" };
    if (kern_device_query(&d, &err)) {
        printf("bench_sampler: GPU sampler not timed (no GPU: %s)\n", err.msg);
        return 0;
    }
    static const struct { const char *name; float t, p; int k; } modes[] = {
        { "greedy", 0, 1, 0 },
        { "T 1.0", 1.0f, 1, 0 },
        { "T 0.7, top-p 0.9", 0.7f, 0.9f, 0 },
        { "T 0.7, top-k 50", 0.7f, 1, 50 },
        { "T 1.0, top-k 5000", 1.0f, 1, 5000 },
        { "T 1.5, top-p 0.95", 1.5f, 0.95f, 0 },   /* flat: the nucleus ends past the near bins */
    };
    int over = 0;
    printf("bench_sampler: GPU sampler (kern_sample) on %s, µs per token (mean of %d), budget %.0f µs;\n"
           "  the engine's grid of blocks (a workspace), then one block (none)\n",
           d.name, BENCH_GPU_LAUNCHES, BENCH_GPU_BUDGET_US);
    float *lg = NULL, *dl = NULL;
    struct kern_state *ds = NULL;
    void *work = NULL;
    if (kern_malloc(&work, KERN_SAMPLE_WORK_BYTES, &err) || kern_memset(work, 0, KERN_SAMPLE_WORK_BYTES, &err))
        goto fail;
    for (size_t v = 0; v < sizeof bench_vocabs / sizeof *bench_vocabs; v++) {
        const int V = bench_vocabs[v];
        lg = malloc(sizeof *lg * (size_t)V);
        if (!lg || kern_malloc((void **)&dl, sizeof *lg * (size_t)V, &err) ||
            kern_malloc((void **)&ds, sizeof *ds, &err))
            goto fail;
        fill(lg, V, 7);
        if (kern_copy_h2d(dl, lg, sizeof *lg * (size_t)V, &err))
            goto fail;
        for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
            const struct kern_state s = { .temperature = modes[m].t, .top_p = modes[m].p, .top_k = modes[m].k,
                                          .seed = 1 };
            double grid = 0, one = 0;
            if (bench_gpu_time(dl, V, ds, &s, work, &grid, &err) || bench_gpu_time(dl, V, ds, &s, NULL, &one, &err))
                goto fail;
            over |= grid > BENCH_GPU_BUDGET_US;
            printf("  vocab %6d  %-18s %8.1f µs  %-4s (one block %6.1f µs)\n", V, modes[m].name, grid,
                   grid > BENCH_GPU_BUDGET_US ? "OVER" : "ok", one);
        }
        kern_free(dl);
        kern_free(ds);
        free(lg);
        lg = NULL, dl = NULL, ds = NULL;
    }
    kern_free(work);
    printf("bench_sampler: GPU sampler %s\n", over ? "over budget" : "within budget");
    return 0;
fail:
    printf("bench_sampler: GPU sampler: %s\n", err.msg[0] ? err.msg : "out of memory");
    kern_free(work);
    kern_free(dl);
    kern_free(ds);
    free(lg);
    return -1;
}
#endif

int main(void)
{
    static const struct { const char *name; struct sampler_params p; } modes[] = {
        { "greedy", { 0, 1, 0, 1 } },
        { "T 1.0", { 1.0f, 1, 0, 1 } },
        { "T 0.7, top-p 0.9", { 0.7f, 0.9f, 0, 1 } },
        { "T 0.7, top-k 50", { 0.7f, 1, 50, 1 } },
    };
    int over = 0;
    printf("bench_sampler: host sampler, µs per token (median of %d), budget %.0f µs\n", BENCH_ITERS, BENCH_BUDGET_US);
    for (size_t v = 0; v < sizeof bench_vocabs / sizeof *bench_vocabs; v++) {
        const int V = bench_vocabs[v];
        float *lg = malloc(sizeof *lg * (size_t)V);
        double *t = malloc(sizeof *t * BENCH_ITERS);
        if (!lg || !t)
            return 1;
        for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
            struct sampler s;
            if (sampler_init(&s, V, &modes[m].p))
                return 1;
            long sink = 0;
            for (int i = 0; i < BENCH_ITERS; i++) {
                fill(lg, V, 1000 + (uint64_t)i);   /* new logits each token, outside the timing */
                double t0 = now_us();
                sink += sampler_sample(&s, lg);
                t[i] = now_us() - t0;
            }
            for (int i = 1; i < BENCH_ITERS; i++)   /* insertion sort: small */
                for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
                    double x = t[j];
                    t[j] = t[j - 1];
                    t[j - 1] = x;
                }
            const double med = t[BENCH_ITERS / 2];
            over |= med > BENCH_BUDGET_US;
            printf("  vocab %6d  %-18s %8.1f µs  (p90 %8.1f)  %s   [ids sum %ld]\n", V, modes[m].name, med,
                   t[BENCH_ITERS * 9 / 10], med > BENCH_BUDGET_US ? "OVER" : "ok", sink);
            sampler_fini(&s);
        }
        free(lg);
        free(t);
    }
    printf("bench_sampler: %s\n", over ? "over budget" : "within budget");
#ifdef BORA_CUDA
    if (bench_gpu() < 0)
        return 1;
#endif
    return 0;
}
