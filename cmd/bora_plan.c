/* bora_plan.c — `bora plan`: will a model fit on a GPU, and what decode speed does its memory
 * bandwidth allow, in FP8 and in BF16: arithmetic over the model's configuration (the same layout
 * the CUDA engine allocates, kernels/plan.c), after the checkpoint's checks where its weights are
 * there; no GPU needed except for --gpu local. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "kernels/plan.h"
#include "model/default_model.h"
#include "model/engine.h"
#include "model/model.h"

#ifdef BORA_CUDA
#include "kernels/kernels.h"
#endif

#define PLAN_DEFAULT_CTX 8192

static const char plan_usage[] =
    "usage: bora plan (MODEL_DIR | --preset NAME) [--precision fp8|bf16] [--ctx N] [--kv bf16|fp8]\n"
    "                 [--gpu h200|h100|l40s|rtx4090|local]\n"
    "exit status: 0 the chosen precision fits, 1 it does not (or an error), 2 usage\n";

/* The model in dir, for planning. With weight files there (any *.safetensors): the checkpoint is
 * opened and checked as a load checks it (model_open: headers, every tensor's presence, dtype and
 * shape, FP8 scales, the tokenizer; the weights themselves are mapped, not read), and FP8 comes
 * from the linear weights' dtype. With none (a config downloaded alone, to size a deployment
 * before fetching the weights): config.json / params.json alone, and *config_only is set. */
static int plan_read_model(const char *dir, struct model_config *cfg, bool *fp8_ckpt, bool *config_only,
                           struct bora_err *err)
{
    bool weights = false;
    DIR *d = opendir(dir);
    if (!d)
        return bora_errf(err, -errno, "%s: cannot open model directory: %s", dir, strerror(errno));
    struct dirent *e;
    errno = 0;
    while (!weights && (e = readdir(d))) {
        const size_t n = strlen(e->d_name);
        weights = n > 12 && !strcmp(e->d_name + n - 12, ".safetensors");
    }
    const int rd = weights ? 0 : errno;
    closedir(d);
    if (rd)
        return bora_errf(err, -rd, "%s: cannot list model directory: %s", dir, strerror(rd));
    *config_only = !weights;
    if (!weights)
        return model_config_read(dir, cfg, fp8_ckpt, err);
    struct model *m = NULL;
    int rc = model_open(&m, dir, NULL, err);
    if (rc)
        return rc;
    *cfg = m->cfg;
    *fp8_ckpt = m->linear_dtype == BORA_DT_F8_E4M3;
    model_close(m);
    return 0;
}

static int plan_gpu(const char *name, struct plan_gpu *g, struct bora_err *err)
{
    if (strcmp(name, "local")) {
        const struct plan_gpu *k = plan_gpu_find(name);
        if (!k)
            return bora_errf(err, -EINVAL, "--gpu: unknown GPU '%s' (h200, h100, l40s, rtx4090, local)", name);
        *g = *k;
        return 0;
    }
#ifdef BORA_CUDA
    struct kern_device d;
    int rc = kern_device_query(&d, err);
    if (rc)
        return rc;
    static char gname[300];   /* set once, read by this command only */
    snprintf(gname, sizeof gname, "local: %s", d.name);
    *g = (struct plan_gpu){ gname, d.free_bytes, 0, d.cc_major * 10 + d.cc_minor };
    void *buf;
    size_t bytes = 1ull << 30;
    if ((rc = kern_malloc(&buf, bytes, err)))
        return rc;
    rc = kern_fill_random(buf, BORA_DT_BF16, bytes / 2, 1.0f, 3, err);
    if (!rc)
        rc = kern_bandwidth_read(buf, bytes, 5, &g->read_gbps, err);
    kern_free(buf);
    return rc;
#else
    return bora_errf(err, -ENODEV, "--gpu local: built without CUDA; name a GPU (h200, h100, l40s, rtx4090)");
#endif
}

struct plan_col {
    struct plan_layout l;
    struct plan_prefill pf;  /* the prefill workspace the engine would take (or needs, when !fits) */
    int pf_want;             /* the chunk it would like: PLAN_PREFILL_CHUNK, clamped as a chunk is */
    uint64_t step_bytes;     /* weights + KV at a full context */
    uint64_t need;           /* arena + CUDA reserve + prefill workspace */
    bool fits;
};

static int plan_one(const struct model_config *c, enum bora_dtype lin, bool kv8, int ctx, const struct plan_gpu *g,
                    struct plan_col *col, struct bora_err *err)
{
    struct plan_dtypes dt = { lin, BORA_DT_BF16, BORA_DT_BF16, kv8 };
    int rc = plan_layout_compute(c, &dt, ctx, &col->l, err);
    if (rc)
        return rc;
    col->step_bytes = col->l.step_weight_bytes + plan_kv_step_bytes(c, &col->l, ctx - 1);
    struct bora_err tmp;
    col->fits = plan_check_fit(&col->l, ctx, g->mem_bytes, &tmp) == 0;
    /* the arena is refused if it does not fit; the prefill workspace beside it shrinks instead */
    plan_prefill_layout(c, lin, kv8, ctx, PLAN_PREFILL_CHUNK, &col->pf);
    col->pf_want = col->pf.chunk;
    if (col->fits)
        plan_prefill_fit(c, lin, kv8, ctx, g->mem_bytes - col->l.total - PLAN_CUDA_RESERVE, &col->pf);
    col->need = col->l.total + PLAN_CUDA_RESERVE + col->pf.total;
    return 0;
}

int cmd_plan(int argc, char **argv)
{
    static char default_dir[4096];   /* "default": the built-in default model's folder */
    const char *dir = NULL, *preset = NULL, *gpu = "h200";
    enum model_precision prec = MODEL_PRECISION_AUTO;
    int ctx = PLAN_DEFAULT_CTX;
    bool ctx_given = false, kv8 = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' || !a[1]) {
            if (dir) {
                fprintf(stderr, "bora plan: one model directory only ('%s' and '%s')\n%s", dir, a, plan_usage);
                return 2;
            }
            dir = a;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bora plan: %s needs a value\n%s", a, plan_usage);
            return 2;
        }
        i++;
        if (!strcmp(a, "--preset")) {
            preset = v;
        } else if (!strcmp(a, "--precision")) {
            if (model_precision_parse(v, &prec) || prec == MODEL_PRECISION_AUTO) {
                fprintf(stderr, "bora plan: --precision: expected fp8 or bf16 (got '%s')\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--ctx")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (end == v || *end || n < 1 || n > (1 << 24)) {
                fprintf(stderr, "bora plan: --ctx: expected tokens in [1, %d] (got '%s')\n", 1 << 24, v);
                return 2;
            }
            ctx = (int)n;
            ctx_given = true;
        } else if (!strcmp(a, "--kv")) {
            enum engine_kv kv;
            if (engine_kv_parse(v, &kv)) {
                fprintf(stderr, "bora plan: --kv: expected bf16 or fp8 (got '%s')\n", v);
                return 2;
            }
            kv8 = kv == ENGINE_KV_FP8;
        } else if (!strcmp(a, "--gpu")) {
            gpu = v;
        } else {
            fprintf(stderr, "bora plan: unknown option '%s'\n%s", a, plan_usage);
            return 2;
        }
    }
    if (!dir == !preset) {
        fprintf(stderr, "bora plan: give a MODEL_DIR or --preset NAME (one of them)\n%s", plan_usage);
        return 2;
    }
    struct bora_err err = { "" };
    struct model_config cfg;
    bool fp8_ckpt = false, config_only = false;
    if (preset) {
        const struct model_config *p = plan_preset_find(preset);
        if (!p) {
            fprintf(stderr, "bora plan: --preset: unknown preset '%s' (mistral-7b, ministral-8b, "
                            "mistral-small-24b, mistral-medium-3.5)\n", preset);
            return 2;
        }
        cfg = *p;
    } else if (!strcmp(dir, "default") && default_model_ensure(default_dir, sizeof default_dir, &err)) {
        fprintf(stderr, "bora plan: %s\n", err.msg);
        return 1;
    } else if (plan_read_model(!strcmp(dir, "default") ? default_dir : dir, &cfg, &fp8_ckpt, &config_only, &err)) {
        fprintf(stderr, "bora plan: %s\n", err.msg);
        return 1;
    }
    if (prec == MODEL_PRECISION_AUTO)
        prec = fp8_ckpt || preset ? MODEL_PRECISION_FP8 : MODEL_PRECISION_BF16;
    /* a model directory says how long its context is: plan for that unless --ctx says otherwise */
    const bool past_model = cfg.max_pos > 0 && ctx > cfg.max_pos;
    if (past_model && !ctx_given)
        ctx = cfg.max_pos;
    struct plan_gpu g;
    struct plan_col col[2];   /* fp8, bf16 */
    if (plan_gpu(gpu, &g, &err) && strstr(err.msg, "unknown GPU")) {   /* a bad option: usage (2) */
        fprintf(stderr, "bora plan: %s\n", err.msg);
        return 2;
    }
    if (plan_gpu(gpu, &g, &err) || plan_one(&cfg, BORA_DT_F8_E4M3, kv8, ctx, &g, &col[0], &err) ||
        plan_one(&cfg, BORA_DT_BF16, kv8, ctx, &g, &col[1], &err)) {
        fprintf(stderr, "bora plan: %s\n", err.msg);
        return 1;
    }
    printf("plan  %s  (%d layers, dim %d, %d/%d heads x %d, ffn %d, vocab %d)\n", preset ? preset : dir,
           cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.hidden_dim, cfg.vocab_size);
    if (dir)
        printf("model %s\n", config_only ? "its configuration only: no *.safetensors there, the weights are not checked"
                                          : fp8_ckpt ? "checkpoint checked as a load checks it; FP8 weights"
                                                     : "checkpoint checked as a load checks it");
    printf("GPU   %s: %.1f GB, streaming read %.0f GB/s;  KV cache for %d tokens (%s)%s\n\n", g.name,
           g.mem_bytes / 1e9, g.read_gbps, ctx, kv8 ? "fp8" : "bf16",
           past_model && !ctx_given ? ", the model's context"
           : past_model ? ", more than the model's context" : "");
    printf("%-34s %14s %14s\n", "weights in", "fp8", "bf16");
#define ROW(label, fmt, a, b) printf("%-34s " fmt " " fmt "\n", label, a, b)
    ROW("weights (GB)", "%14.2f", col[0].l.weight_bytes / 1e9, col[1].l.weight_bytes / 1e9);
    ROW("KV cache (GB)", "%14.2f", col[0].l.kv_bytes / 1e9, col[1].l.kv_bytes / 1e9);
    ROW("decode activations (GB)", "%14.3f", col[0].l.act_bytes / 1e9, col[1].l.act_bytes / 1e9);
    ROW("prefill workspace (GB)", "%14.2f", col[0].pf.total / 1e9, col[1].pf.total / 1e9);
    ROW("CUDA reserve (GB)", "%14.2f", PLAN_CUDA_RESERVE / 1e9, PLAN_CUDA_RESERVE / 1e9);
    ROW("total needed (GB)", "%14.2f", col[0].need / 1e9, col[1].need / 1e9);
    ROW("fits", "%14s", col[0].fits ? "yes" : "NO", col[1].fits ? "yes" : "NO");
    char chunk_txt[2][24] = { "none", "none" };
    for (int k = 0; k < 2; k++)
        if (col[k].pf.chunk)
            snprintf(chunk_txt[k], sizeof chunk_txt[k], "%d", col[k].pf.chunk);
    ROW("prefill chunk (tokens)", "%14s", chunk_txt[0], chunk_txt[1]);
    ROW("bytes read per token at ctx (GB)", "%14.3f", col[0].step_bytes / 1e9, col[1].step_bytes / 1e9);
    ROW("decode tok/s, bandwidth bound", "%14.1f", g.read_gbps * 1e9 / col[0].step_bytes,
        g.read_gbps * 1e9 / col[1].step_bytes);
    ROW("decode tok/s at 90 % of it", "%14.1f", 0.9 * g.read_gbps * 1e9 / col[0].step_bytes,
        0.9 * g.read_gbps * 1e9 / col[1].step_bytes);
#undef ROW
    if (g.cc < PLAN_CUDA_CC_MIN)
        printf("\nnote: %s has compute capability %d.%d; bora's CUDA backend needs %d.%d (Hopper: H100, H200),\n"
               "      so on this GPU bora would run on its CPU backend. The figures above are the arithmetic only.\n",
               g.name, g.cc / 10, g.cc % 10, PLAN_CUDA_CC_MIN / 10, PLAN_CUDA_CC_MIN % 10);
    const struct plan_col *sel = &col[prec == MODEL_PRECISION_FP8 ? 0 : 1];
    const char *pn = prec == MODEL_PRECISION_FP8 ? "fp8" : "bf16";
    if (sel->fits) {
        printf("\n%s fits: %.2f GB of %.1f GB\n", pn, sel->need / 1e9, g.mem_bytes / 1e9);
        if (sel->pf.chunk < sel->pf_want) {
            const enum bora_dtype lin = prec == MODEL_PRECISION_FP8 ? BORA_DT_F8_E4M3 : BORA_DT_BF16;
            struct plan_prefill full, least;   /* the first and the last chunk the engine tries */
            int last = PLAN_PREFILL_CHUNK;
            while (plan_prefill_next(last))
                last = plan_prefill_next(last);
            plan_prefill_layout(&cfg, lin, kv8, ctx, PLAN_PREFILL_CHUNK, &full);
            plan_prefill_layout(&cfg, lin, kv8, ctx, last, &least);
            if (sel->pf.chunk)
                printf("but the prefill workspace for %d-token chunks (%.2f GB) does not fit beside it: prompts\n"
                       "are prefilled in %d-token chunks, and long prompts wait longer for their first token\n",
                       full.chunk, full.total / 1e9, sel->pf.chunk);
            else
                printf("but no prefill workspace fits beside it (%.2f GB for %d-token chunks, %.2f GB for %d):\n"
                       "prompts run one decode step per token, and their first token comes late\n",
                       full.total / 1e9, full.chunk, least.total / 1e9, least.chunk);
        }
        return 0;
    }
    plan_check_fit(&sel->l, ctx, g.mem_bytes, &err);
    printf("\n%s does not fit: %s\n(and a prefill workspace for %d-token chunks takes %.2f GB more)\n", pn, err.msg,
           sel->pf.chunk, sel->pf.total / 1e9);
    return 1;
}
