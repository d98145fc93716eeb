/* bora_bench.c — `bora bench decode`: single-request decode speed of a model shape with random
 * weights generated on the GPU, next to the streaming-read bandwidth measured in the same run;
 * `bora bench gemv`: the GEMV alone on each matrix shape of a preset. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmd/bora_bench.h"
#include "cmd/cli.h"
#include "kernels/plan.h"
#include "model/engine.h"
#include "model/model.h"

#ifdef BORA_CUDA
#include "kernels/engine_cuda.h"
#include "kernels/kernels.h"
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#endif

#define BENCH_BW_BYTES (8ull << 30)   /* buffer for the streaming-read probe (device.md's 8 GiB) */
#define BENCH_BW_ITERS 9
#define BENCH_WARMUP 8                /* decode steps before timing */
#define BENCH_REPEATS 3               /* timed runs; the median is reported */
#define BENCH_SEED 0x5eedULL

struct bench_opts {
    const char *preset;
    enum model_precision precision;
    int ctx, tokens;
    int layers;           /* 0: the preset's; else fewer layers (profiling) */
    bool json;
    enum engine_kv kv;    /* decode: the KV cache's element type */
};

static const char bench_usage[] =
    "usage: bora bench decode --preset NAME [--precision fp8|bf16] [--kv bf16|fp8] [--ctx N] [--tokens N] [--layers N]\n"
    "                         [--json]\n"
    "       bora bench gemv --preset NAME [--precision fp8|bf16]\n"
    "       bora bench ttft --preset NAME [--precision fp8|bf16] [--kv bf16|fp8] [--prompt N,N,...] [--runs N] [--chunk N] [--json]\n"
    "       bora bench coldstart ...   (see bora coldstart)\n"
    "presets: mistral-7b ministral-8b mistral-small-24b mistral-medium-3.5\n";

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "bora bench: %s: expected an integer in [%d, %d] (got '%s')\n", opt, lo, hi, s);
        return -EINVAL;
    }
    *out = (int)v;
    return 0;
}

static int bench_parse(struct bench_opts *o, int argc, char **argv)
{
    *o = (struct bench_opts){ NULL, MODEL_PRECISION_FP8, 512, 128, 0, false, ENGINE_KV_BF16 };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            o->json = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bora bench: %s needs a value\n%s", a, bench_usage);
            return -EINVAL;
        }
        i++;
        if (!strcmp(a, "--preset")) {
            o->preset = v;
        } else if (!strcmp(a, "--precision")) {
            if (model_precision_parse(v, &o->precision) || o->precision == MODEL_PRECISION_AUTO) {
                fprintf(stderr, "bora bench: --precision: expected fp8 or bf16 (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--kv")) {
            if (engine_kv_parse(v, &o->kv)) {
                fprintf(stderr, "bora bench: --kv: expected bf16 or fp8 (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--ctx")) {
            if (parse_int(a, v, 1, 1 << 20, &o->ctx))
                return -EINVAL;
        } else if (!strcmp(a, "--layers")) {
            if (parse_int(a, v, 1, 1000, &o->layers))
                return -EINVAL;
        } else if (!strcmp(a, "--tokens")) {
            if (parse_int(a, v, 1, 100000, &o->tokens))
                return -EINVAL;
        } else {
            fprintf(stderr, "bora bench: unknown option '%s'\n%s", a, bench_usage);
            return -EINVAL;
        }
    }
    if (!o->preset || !plan_preset_find(o->preset)) {
        if (o->preset)
            fprintf(stderr, "bora bench: --preset: unknown preset '%s'\n%s", o->preset, bench_usage);
        else
            fprintf(stderr, "bora bench: --preset NAME is required\n%s", bench_usage);
        return -EINVAL;
    }
    return 0;
}

#ifdef BORA_CUDA
/* A model whose tensors carry shape and dtype only (the engine fills them on the GPU). */
int bench_synthetic_model(struct model *m, const char *preset, enum model_precision p, int layers)
{
    memset(m, 0, sizeof *m);
    m->cfg = *plan_preset_find(preset);
    if (layers > 0 && layers < m->cfg.n_layers)
        m->cfg.n_layers = layers;
    const struct model_config *c = &m->cfg;
    enum bora_dtype lin = p == MODEL_PRECISION_FP8 ? BORA_DT_F8_E4M3 : BORA_DT_BF16;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->rope_inv_freq = calloc((size_t)c->head_dim / 2, sizeof(float));
    if (!m->layers || !m->rope_inv_freq)
        return -ENOMEM;
    model_rope_init(c, m->rope_inv_freq, &m->rope_attn_factor);
    const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
#define T(w, dt, r, cl) (w) = (struct wtensor){ dt, NULL, r, cl, 1.0f, NULL }
    T(m->tok_emb, BORA_DT_BF16, c->vocab_size, c->dim);
    T(m->output, BORA_DT_BF16, c->vocab_size, c->dim);   /* FP8 checkpoints keep the head in BF16 */
    T(m->norm, BORA_DT_F32, 1, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        struct layer_weights *L = &m->layers[l];
        T(L->attn_norm, BORA_DT_F32, 1, c->dim);
        T(L->ffn_norm, BORA_DT_F32, 1, c->dim);
        T(L->wq, lin, q, c->dim);
        T(L->wk, lin, kv, c->dim);
        T(L->wv, lin, kv, c->dim);
        T(L->wo, lin, c->dim, q);
        T(L->w_gate, lin, c->hidden_dim, c->dim);
        T(L->w_up, lin, c->hidden_dim, c->dim);
        T(L->w_down, lin, c->dim, c->hidden_dim);
    }
#undef T
    m->linear_dtype = lin;
    return 0;
}

void bench_synthetic_free(struct model *m)
{
    free(m->layers);
    free(m->rope_inv_freq);
}

/* The GPU's streaming-read ceiling in this run: the faster of two readers (kernels.h), each
 * the median of BENCH_BW_ITERS reads of 8 GiB of random data. */
struct read_bw {
    double loads, bulk, best;
};

static int measure_bandwidth(struct read_bw *bw, struct bora_err *err)
{
    void *buf;
    int rc = kern_malloc(&buf, BENCH_BW_BYTES, err);
    if (rc)
        return rc;
    rc = kern_fill_random(buf, BORA_DT_BF16, BENCH_BW_BYTES / 2, 1.0f, 7, err);
    if (!rc)
        rc = kern_bandwidth_read_detail(buf, BENCH_BW_BYTES, BENCH_BW_ITERS, &bw->loads, &bw->bulk, err);
    kern_free(buf);
    bw->best = bw->loads > bw->bulk ? bw->loads : bw->bulk;
    return rc;
}

/* The SM clock while the timed decode runs, sampled every 10 ms from NVML (the driver's
 * libnvidia-ml, opened at run time: without it the bench prints no clock). The same binary
 * reads several points apart on GPUs of one model whose clocks differ under load: this says
 * which kind of machine a figure came from. */
enum { NVML_SM_CLOCK = 1 };
struct clock_probe {
    void *lib, *dev;
    int (*get)(void *, int, unsigned *);
    pthread_t thread;
    atomic_int stop;
    bool running;
    unsigned min, rated;
    double sum;
    int n;
};

static void *clock_sample(void *arg)
{
    struct clock_probe *c = arg;
    const struct timespec tick = { 0, 10 * 1000 * 1000 };
    while (!atomic_load(&c->stop)) {
        unsigned mhz = 0;
        if (c->get(c->dev, NVML_SM_CLOCK, &mhz) == 0 && mhz) {
            c->min = c->n && c->min < mhz ? c->min : mhz;
            c->sum += mhz;
            c->n++;
        }
        nanosleep(&tick, NULL);
    }
    return NULL;
}

static void clock_start(struct clock_probe *c)
{
    memset(c, 0, sizeof *c);
    char bus[32];
    int dev;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetPCIBusId(bus, sizeof bus, dev) != cudaSuccess)
        return;
    if (!(c->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL)))
        return;
    int (*init)(void) = (int (*)(void))dlsym(c->lib, "nvmlInit_v2");
    int (*by_bus)(const char *, void **) =
        (int (*)(const char *, void **))dlsym(c->lib, "nvmlDeviceGetHandleByPciBusId_v2");
    int (*rated)(void *, int, unsigned *) =
        (int (*)(void *, int, unsigned *))dlsym(c->lib, "nvmlDeviceGetMaxClockInfo");
    c->get = (int (*)(void *, int, unsigned *))dlsym(c->lib, "nvmlDeviceGetClockInfo");
    if (!init || !by_bus || !rated || !c->get || init() != 0 || by_bus(bus, &c->dev) != 0) {
        dlclose(c->lib);
        c->lib = NULL;
        return;
    }
    rated(c->dev, NVML_SM_CLOCK, &c->rated);
    c->running = pthread_create(&c->thread, NULL, clock_sample, c) == 0;
}

static void clock_stop(struct clock_probe *c)
{
    if (c->running) {
        atomic_store(&c->stop, 1);
        pthread_join(c->thread, NULL);
        c->running = false;
    }
    if (c->lib) {
        int (*shutdown)(void) = (int (*)(void))dlsym(c->lib, "nvmlShutdown");
        if (shutdown)
            shutdown();
        dlclose(c->lib);
        c->lib = NULL;
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench_decode(const struct bench_opts *o)
{
    struct bora_err err = { "" };
    struct kern_device dev;
    struct read_bw rb = { 0, 0, 0 };
    int rc = kern_device_query(&dev, &err);
    if (!rc)
        rc = measure_bandwidth(&rb, &err);
    const double bw = rb.best;
    if (rc) {
        fprintf(stderr, "bora bench: %s\n", err.msg);
        return 1;
    }
    struct model m;
    if (bench_synthetic_model(&m, o->preset, o->precision, o->layers)) {
        fprintf(stderr, "bora bench: out of memory\n");
        return 1;
    }
    struct engine e = { .model = &m, .max_ctx = o->ctx + o->tokens, .kv = o->kv };
    size_t free0 = dev.free_bytes;
    rc = engine_cuda_open_synthetic(&e, BENCH_SEED, &err);
    if (rc) {
        fprintf(stderr, "bora bench: %s: %s\n", o->preset, err.msg);
        bench_synthetic_free(&m);
        return 1;
    }
    struct kern_device after;
    kern_device_query(&after, &err);
    const struct plan_layout *lay = engine_cuda_layout(&e);
    double ms_runs[BENCH_REPEATS], ms = 0;
    int32_t last = 0;
    int warm = o->tokens < BENCH_WARMUP ? o->tokens : BENCH_WARMUP;
    rc = engine_cuda_decode_timed(&e, 1, o->ctx, warm, &ms, &last, &err);
    struct clock_probe clk;
    clock_start(&clk);
    for (int r = 0; !rc && r < BENCH_REPEATS; r++) {
        rc = engine_cuda_decode_timed(&e, 1, o->ctx, o->tokens, &ms, &last, &err);
        ms_runs[r] = ms / o->tokens;
    }
    clock_stop(&clk);
    const double clk_mean = clk.n ? clk.sum / clk.n : 0;
    if (rc) {
        fprintf(stderr, "bora bench: decode: %s\n", err.msg);
        e.ops->close(&e);
        bench_synthetic_free(&m);
        return 1;
    }
    if (getenv("BORA_MEGA_TRACE") && engine_cuda_mega_trace(&e, o->ctx + o->tokens / 2, stderr, &err))
        fprintf(stderr, "bora bench: %s\n", err.msg);   /* (the message starts with "trace:") */
    if (getenv("BORA_STEP_PROFILE") && engine_cuda_step_profile(&e, o->ctx, o->tokens, stderr, &err))
        fprintf(stderr, "bora bench: step profile: %s\n", err.msg);
    float attn_us = 0;
    if (engine_cuda_time_attention(&e, o->ctx + o->tokens / 2, &attn_us, &err))
        fprintf(stderr, "bora bench: attention timing: %s\n", err.msg);
    qsort(ms_runs, BENCH_REPEATS, sizeof ms_runs[0], cmp_d);
    double ms_tok = ms_runs[BENCH_REPEATS / 2];
    uint64_t kv = 0;
    for (int p = o->ctx; p < o->ctx + o->tokens; p++)
        kv += plan_kv_step_bytes(&m.cfg, lay, p);
    double kv_tok = (double)kv / o->tokens;
    double bytes = (double)lay->step_weight_bytes + kv_tok;
    double gbps = bytes / (ms_tok * 1e-3) / 1e9;
    double used = (double)(after.total_bytes - after.free_bytes);
    const char *prec = o->precision == MODEL_PRECISION_FP8 ? "fp8" : "bf16";
    static const char *const kinds[] = { "qkv", "wo", "gate_up", "down", "head" };
    char shapes[256] = "";
    for (int k = 0, n = 0; k < ENGINE_CUDA_GEMV_KINDS && n < (int)sizeof shapes; k++) {
        float us = 0;
        int v = engine_cuda_gemv_choice(&e, k, &us);
        n += snprintf(shapes + n, sizeof shapes - (size_t)n, "%s%s v%d %.1fus", k ? ", " : "", kinds[k], v, us);
    }
    snprintf(shapes + strlen(shapes), sizeof shapes - strlen(shapes), ", attention %.1fus", attn_us);
    const char *why = "";
    const char *path = engine_cuda_decode_path(&e, o->ctx, &why);
    if (o->json) {
        printf("{\"bench\":\"decode\",\"preset\":\"%s\",\"precision\":\"%s\",\"kv\":\"%s\",\"ctx\":%d,\"tokens\":%d,"
               "\"gpu\":\"%s\",\"bytes_per_token\":%.0f,\"weight_bytes_per_token\":%llu,"
               "\"kv_bytes_per_token\":%.0f,\"ms_per_token\":%.4f,\"tok_per_s\":%.1f,\"gbps\":%.1f,"
               "\"read_bw_gbps\":%.1f,\"read_bw_loads_gbps\":%.1f,\"read_bw_bulk_gbps\":%.1f,"
               "\"pct_of_read_bw\":%.1f,\"gpu_mem_used_bytes\":%.0f,"
               "\"arena_bytes\":%llu,\"last_id\":%d,\"path\":\"%s\",\"persistent_layout\":\"%s\",\"gemv\":\"%s\","
               "\"sm_clock_mhz_mean\":%.0f,\"sm_clock_mhz_min\":%u,\"sm_clock_mhz_max\":%u}\n",
               o->preset, prec, engine_kv_name(o->kv), o->ctx, o->tokens, dev.name, bytes,
               (unsigned long long)lay->step_weight_bytes, kv_tok, ms_tok, 1e3 / ms_tok, gbps, bw,
               rb.loads, rb.bulk, 100.0 * gbps / bw, used, (unsigned long long)lay->total, last, path,
               engine_cuda_mega_layout(&e), shapes, clk_mean, clk.min,
               clk.rated);
    } else {
        printf("bench decode  %s %s, %s KV  ctx %d, %d tokens  on %s\n", o->preset, prec, engine_kv_name(o->kv), o->ctx,
               o->tokens, dev.name);
        printf("  bytes/token     %.3f GB (weights %.3f GB + KV %.3f GB)\n", bytes / 1e9,
               lay->step_weight_bytes / 1e9, kv_tok / 1e9);
        printf("  ms/token        %.3f\n", ms_tok);
        printf("  tok/s           %.1f\n", 1e3 / ms_tok);
        printf("  GB/s            %.1f\n", gbps);
        printf("  read bandwidth  %.1f GB/s (8 GiB streaming read, same run: 16-byte loads %.1f, bulk copies %.1f)\n",
               bw, rb.loads, rb.bulk);
        printf("  %% of read bw    %.1f %%   (budget >= 90 %%)\n", 100.0 * gbps / bw);
        printf("  GPU memory used %.2f GB (arena %.2f GB; %.2f GB free before)\n", used / 1e9,
               lay->total / 1e9, free0 / 1e9);
        printf("  decode path     %s%s%s\n", path, *why ? ": " : "", why);
        if (*engine_cuda_mega_layout(&e))
            printf("  persistent      %s\n", engine_cuda_mega_layout(&e));
        printf("  GEMV shapes     %s\n", shapes);
        if (clk.n)
            printf("  SM clock        %.0f MHz mean, %u lowest, during the timed runs (%u MHz the GPU's maximum)\n",
                   clk_mean, clk.min, clk.rated);
        else
            printf("  SM clock        not read (no NVML)\n");
    }
    e.ops->close(&e);
    bench_synthetic_free(&m);
    return 0;
}

/* GB/s of `iters` GEMVs captured in one graph (as in the engine), rotating over `copies`
 * matrices so that the weights come from memory; the best of 3 timed replays. */
static int gemv_rate(enum bora_dtype dt, uint8_t *w, size_t mb, int copies, int rows, int cols,
                     enum kern_gemv_mode mode, int variant, float *x, float *y, float *rs, int *cnt,
                     double *gbps, struct bora_err *err)
{
    const int iters = 64;
    cudaStream_t stream = NULL;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = 0;
    if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        rc = bora_errf(err, -EIO, "stream/event creation failed");
    if (!rc && cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) != cudaSuccess)
        rc = bora_errf(err, -EIO, "cudaStreamBeginCapture failed");
    for (int it = 0; !rc && it < iters; it++) {
        struct kern_gemv_args g = { .m = { dt, w + (size_t)(it % copies) * mb, rows, cols, 1.0f, rs },
                                    .x = x, .y = y, .mode = mode, .counter = cnt + it % 64, .variant = variant };
        rc = kern_gemv(&g, (struct CUstream_st *)stream, err);
    }
    if (stream && cudaStreamEndCapture(stream, &graph) != cudaSuccess && !rc)
        rc = bora_errf(err, -EIO, "cudaStreamEndCapture failed");
    if (!rc && cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess)
        rc = bora_errf(err, -EIO, "cudaGraphInstantiate failed");
    double best = 0;
    for (int rep = 0; !rc && rep < 4; rep++) {
        float ms = 0;
        if (cudaEventRecord(e0, stream) != cudaSuccess || cudaGraphLaunch(exec, stream) != cudaSuccess ||
            cudaEventRecord(e1, stream) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
            cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess) {
            rc = bora_errf(err, -EIO, "graph launch failed: %s", cudaGetErrorString(cudaGetLastError()));
            break;
        }
        double g = (double)mb * iters / (ms * 1e-3) / 1e9;
        if (rep > 0 && g > best)   /* rep 0 is the warm-up */
            best = g;
    }
    if (exec)
        cudaGraphExecDestroy(exec);
    if (graph)
        cudaGraphDestroy(graph);
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    if (stream)
        cudaStreamDestroy(stream);
    *gbps = best;
    return rc;
}

/* GEMV alone on each matrix shape of a preset, rotating over copies that exceed the L2. */
static int bench_gemv(const struct bench_opts *o)
{
    const struct model_config *c = plan_preset_find(o->preset);
    struct bora_err err = { "" };
    enum bora_dtype dt = o->precision == MODEL_PRECISION_FP8 ? BORA_DT_F8_E4M3 : BORA_DT_BF16;
    const int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    struct { const char *name; int rows, cols; enum kern_gemv_mode mode; } shapes[] = {
        { "qkv", q + 2 * kv, c->dim, KERN_GEMV_STORE },
        { "wo", c->dim, q, KERN_GEMV_ADD },
        { "gate_up", 2 * c->hidden_dim, c->dim, KERN_GEMV_SWIGLU },
        { "down", c->dim, c->hidden_dim, KERN_GEMV_ADD },
    };
    struct read_bw rb;
    struct kern_device dev;
    if (kern_device_query(&dev, &err) || measure_bandwidth(&rb, &err)) {   /* no GPU: said as decode says it */
        fprintf(stderr, "bora bench: %s\n", err.msg);
        return 1;
    }
    const double bw = rb.best;
    printf("bench gemv  %s %s  (read bandwidth %.1f GB/s)\n", o->preset, dt == BORA_DT_BF16 ? "bf16" : "fp8", bw);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        size_t mb = (size_t)shapes[si].rows * shapes[si].cols * bora_dtype_size(dt);
        int copies = (int)((1ull << 30) / mb) + 1;
        if (copies > 64)
            copies = 64;
        uint8_t *w = NULL;
        float *x = NULL, *y = NULL, *rs = NULL;
        int *cnt = NULL;
        int rc = kern_malloc((void **)&w, mb * copies, &err);
        if (!rc) rc = kern_malloc((void **)&x, (size_t)shapes[si].cols * 4, &err);
        if (!rc) rc = kern_malloc((void **)&y, (size_t)shapes[si].rows * 4, &err);
        if (!rc) rc = kern_malloc((void **)&rs, (size_t)shapes[si].rows * 4, &err);
        if (!rc) rc = kern_malloc((void **)&cnt, 64 * sizeof(int), &err);
        if (!rc) rc = kern_fill_random(w, dt, mb * copies / bora_dtype_size(dt), 1.0f, 11, &err);
        if (!rc) rc = kern_fill_random(x, BORA_DT_F32, (size_t)shapes[si].cols, 1.0f, 12, &err);
        if (!rc) rc = kern_fill_f32(rs, (size_t)shapes[si].rows, 0.01f, &err);
        if (!rc) rc = kern_memset(cnt, 0, 64 * sizeof(int), &err);
        printf("  %-8s %6d x %-6d %7.1f MB:", shapes[si].name, shapes[si].rows, shapes[si].cols, mb / 1e6);
        for (int v = 0; !rc && v < kern_gemv_variants(); v++) {
            double g = 0;
            rc = gemv_rate(dt, w, mb, copies, shapes[si].rows, shapes[si].cols, shapes[si].mode, v, x, y, rs, cnt,
                           &g, &err);
            if (rc == -EINVAL) {   /* shape not valid for this mode */
                rc = 0;
                printf("   v%d    -  ", v);
                continue;
            }
            printf("   v%d %4.1f%%", v, 100 * g / bw);
        }
        printf("\n");
        if (rc)
            fprintf(stderr, "bora bench gemv: %s: %s\n", shapes[si].name, err.msg);
        kern_free(w);
        kern_free(x);
        kern_free(y);
        kern_free(rs);
        kern_free(cnt);
        if (rc)
            return 1;
    }
    return 0;
}
#endif

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "ttft"))
        return cmd_bench_ttft(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "coldstart"))
        return cmd_bench_coldstart(argc - 1, argv + 1);
    if (argc < 2 || (strcmp(argv[1], "decode") && strcmp(argv[1], "gemv"))) {
        fprintf(stderr, "%s", bench_usage);
        return 2;
    }
    struct bench_opts o;
    if (bench_parse(&o, argc, argv))
        return 2;
#ifdef BORA_CUDA
    return !strcmp(argv[1], "decode") ? bench_decode(&o) : bench_gemv(&o);
#else
    fprintf(stderr, "bora bench: built without CUDA (rebuild with nvcc available or CUDA=1)\n");
    return 1;
#endif
}
