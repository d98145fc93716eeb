/* bora_coldstart.c — `bora coldstart` (routed from `bora bench coldstart`): writes a synthetic
 * checkpoint of a preset's shape, drops the page cache, and measures side by side the raw
 * io_uring read bandwidth of that file, process start → weights resident → first token of a
 * prompt with the streamer, and the same with the naive loader (mmap, per-tensor copies from
 * pageable memory); then the same warm. Budget: streamed first token ≤ 1.15 × bytes ÷ raw + 0.3 s. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "common/env.h"
#include "kernels/model_load_cuda.h"
#include "mem/jemalloc_stats.h"
#include "mem/model_stream.h"
#include "mem/pinned.h"
#include "mem/wstream.h"
#include "model/engine.h"
#include "model/model.h"

#define CS_BUDGET_FACTOR 1.15     /* × (file bytes ÷ raw read bandwidth) */
#define CS_BUDGET_SLACK_S 0.3     /* seconds */
#define CS_GEN_CHUNK (8u << 20)   /* bytes generated per write */

struct cs_preset {
    const char *name;
    int dim, layers, heads, kv_heads, head_dim, hidden, vocab;
};

static const struct cs_preset presets[] = {
    { "tiny", 256, 4, 8, 2, 32, 768, 32768 },
    { "small", 1024, 8, 16, 4, 64, 3584, 32768 },
    { "mistral-7b", 4096, 32, 32, 8, 128, 14336, 32768 },
};

struct cs_opts {
    const struct cs_preset *p;
    bool fp8, json, no_drop, no_warm;
    const char *dir;
    int prompt, qd;
    size_t buf_bytes;
    enum engine_backend backend;
    double t_main;   /* child: when its main reached the subcommand (now_s) */
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t xs(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return *s = x;
}

/* ---- the synthetic checkpoint ---- */

struct cs_tensor {
    char name[96];
    int64_t rows, cols;   /* rows 0: vector */
    int kind;             /* 0 bf16 random, 1 bf16 ones, 2 fp8 random, 3 f32 scale */
};

static int cs_tensors(const struct cs_opts *o, struct cs_tensor **out)
{
    const struct cs_preset *p = o->p;
    struct cs_tensor *t = calloc((size_t)(16 * p->layers + 4), sizeof *t);
    if (!t)
        return -ENOMEM;
    int n = 0;
    const int lin = o->fp8 ? 2 : 0;
    t[n++] = (struct cs_tensor){ "model.embed_tokens.weight", p->vocab, p->dim, 0 };
    for (int l = 0; l < p->layers; l++) {
        const struct { const char *n; int64_t r, c; int k; } s[] = {
            { "input_layernorm", 0, p->dim, 1 },
            { "self_attn.q_proj", (int64_t)p->heads * p->head_dim, p->dim, lin },
            { "self_attn.k_proj", (int64_t)p->kv_heads * p->head_dim, p->dim, lin },
            { "self_attn.v_proj", (int64_t)p->kv_heads * p->head_dim, p->dim, lin },
            { "self_attn.o_proj", p->dim, (int64_t)p->heads * p->head_dim, lin },
            { "post_attention_layernorm", 0, p->dim, 1 },
            { "mlp.gate_proj", p->hidden, p->dim, lin },
            { "mlp.up_proj", p->hidden, p->dim, lin },
            { "mlp.down_proj", p->dim, p->hidden, lin },
        };
        for (size_t k = 0; k < BORA_ARRAY_LEN(s); k++) {
            snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.%s.weight", l, s[k].n);
            t[n].rows = s[k].r, t[n].cols = s[k].c, t[n].kind = s[k].k;
            n++;
            if (s[k].k == 2) {
                snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.%s.weight_scale_inv", l, s[k].n);
                t[n].kind = 3;
                n++;
            }
        }
    }
    t[n++] = (struct cs_tensor){ "model.norm.weight", 0, p->dim, 1 };
    t[n++] = (struct cs_tensor){ "lm_head.weight", p->vocab, p->dim, 0 };
    *out = t;
    return n;
}

static uint64_t cs_bytes(const struct cs_tensor *t)
{
    if (t->kind == 3)
        return 4;
    return (uint64_t)(t->rows ? t->rows : 1) * (uint64_t)t->cols * (t->kind == 2 ? 1 : 2);
}

/* Fills n bytes of tensor kind k (BF16 ±2^-7..2^-6, FP8 e4m3 codes without NaN, |v| < 2). */
static void cs_fill(uint8_t *b, size_t n, int k, uint64_t *seed, float scale)
{
    if (k == 3) {
        memcpy(b, &scale, 4);
        return;
    }
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t r = xs(seed);
        if (k == 2)
            r &= 0xbfbfbfbfbfbfbfbfull;                                  /* exponent ≤ 7: finite, small */
        else if (k == 0)
            r = (r & 0x807f807f807f807full) | 0x3c003c003c003c00ull;   /* bf16 of magnitude ~2^-7 */
        else
            r = 0x3f803f803f803f80ull;                                   /* bf16 1.0 */
        memcpy(b + i, &r, 8);
    }
}

#define CS_MARKER ".bora-coldstart"   /* in a directory this command made: it may write there again */

/* --dir is overwritten with a synthetic checkpoint: it must be new, empty, or one this command
 * made before (its marker file). A real checkpoint given by mistake is refused, not replaced. */
static int scratch_dir(const char *dir)
{
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/" CS_MARKER, dir);
    if (mkdir(dir, 0755) < 0) {
        if (errno != EEXIST) {
            fprintf(stderr, "bora coldstart: %s: cannot create directory: %s\n", dir, strerror(errno));
            return -1;
        }
        if (access(marker, F_OK) != 0) {
            DIR *d = opendir(dir);
            if (!d) {
                fprintf(stderr, "bora coldstart: %s: %s\n", dir, strerror(errno));
                return -1;
            }
            const struct dirent *e;
            const char *held = NULL;
            while (!held && (e = readdir(d)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                    held = e->d_name;
            if (held) {
                fprintf(stderr, "bora coldstart: %s: not empty (it holds '%s') and not a directory bora coldstart made: "
                                "it would be overwritten with a synthetic checkpoint; give a new or empty directory\n",
                        dir, held);
                closedir(d);
                return -1;
            }
            closedir(d);
        }
    }
    FILE *f = fopen(marker, "w");
    if (!f) {
        fprintf(stderr, "bora coldstart: %s: cannot create: %s\n", marker, strerror(errno));
        return -1;
    }
    fputs("bora coldstart scratch directory: its checkpoint is synthetic and rewritten at every run\n", f);
    fclose(f);
    return 0;
}

static int write_config(const struct cs_opts *o)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", o->dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bora coldstart: %s: cannot create: %s\n", path, strerror(errno));
        return -errno;
    }
    const struct cs_preset *p = o->p;
    fprintf(f,
            "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\",\n"
            " \"_comment\": \"bora coldstart synthetic checkpoint (%s): random weights\",\n"
            " \"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,\n"
            " \"num_key_value_heads\": %d, \"head_dim\": %d, \"intermediate_size\": %d, \"vocab_size\": %d,\n"
            " \"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0,\n"
            " \"sliding_window\": null, \"tie_word_embeddings\": false, \"bos_token_id\": 1, \"eos_token_id\": 2}\n",
            p->name, p->dim, p->layers, p->heads, p->kv_heads, p->head_dim, p->hidden, p->vocab);
    return fclose(f) ? -EIO : 0;
}

/* Writes DIR/model.safetensors unless one of the right size is there. Returns its size or -errno. */
static int64_t write_checkpoint(const struct cs_opts *o)
{
    struct cs_tensor *t;
    int n = cs_tensors(o, &t);
    if (n < 0)
        return n;
    size_t hcap = (size_t)n * 200 + 256, hl = 0;
    char *h = malloc(hcap);
    uint8_t *buf = aligned_alloc(64, CS_GEN_CHUNK);
    int64_t rc = -ENOMEM;
    FILE *f = NULL;
    if (!h || !buf)
        goto out;
    hl += (size_t)snprintf(h, hcap, "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"bora coldstart\"}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const char *dt = t[i].kind == 2 ? "F8_E4M3" : t[i].kind == 3 ? "F32" : "BF16";
        char shape[64];
        if (t[i].kind == 3)
            snprintf(shape, sizeof shape, "[]");
        else if (t[i].rows)
            snprintf(shape, sizeof shape, "[%lld,%lld]", (long long)t[i].rows, (long long)t[i].cols);
        else
            snprintf(shape, sizeof shape, "[%lld]", (long long)t[i].cols);
        hl += (size_t)snprintf(h + hl, hcap - hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                               t[i].name, dt, shape, (unsigned long long)off, (unsigned long long)(off + cs_bytes(&t[i])));
        off += cs_bytes(&t[i]);
    }
    hl += (size_t)snprintf(h + hl, hcap - hl, "}");
    while (hl % 8)
        h[hl++] = ' ';
    const int64_t total = (int64_t)(8 + hl + off);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", o->dir);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size == total) {
        if (!o->json)
            fprintf(stderr, "bora coldstart: reusing %s (%.2f GB)\n", path, total / 1e9);
        rc = total;
        goto out;
    }
    fprintf(stderr, "bora coldstart: writing %s (%.2f GB of random weights)\n", path, total / 1e9);
    f = fopen(path, "wb");
    uint64_t hl64 = hl, seed = 0x626f7261ull;
    if (!f || fwrite(&hl64, 8, 1, f) != 1 || fwrite(h, 1, hl, f) != hl) {
        fprintf(stderr, "bora coldstart: %s: cannot write: %s\n", path, strerror(errno));
        rc = -EIO;
        goto out;
    }
    const float scale = o->fp8 ? 1.0f / sqrtf((float)o->p->dim) : 1.0f;
    for (int i = 0; i < n; i++)
        for (uint64_t left = cs_bytes(&t[i]); left;) {
            size_t k = left < CS_GEN_CHUNK ? (size_t)left : CS_GEN_CHUNK;
            cs_fill(buf, (k + 7) & ~(size_t)7, t[i].kind, &seed, scale);
            if (fwrite(buf, 1, k, f) != k) {
                fprintf(stderr, "bora coldstart: %s: write failed (disk full?)\n", path);
                rc = -EIO;
                goto out;
            }
            left -= k;
        }
    if (fflush(f) || fsync(fileno(f))) {
        rc = -EIO;
        goto out;
    }
    rc = total;
out:
    if (f && fclose(f) && rc >= 0)
        rc = -EIO;
    free(t);
    free(h);
    free(buf);
    return rc;
}

/* ---- page cache ---- */

/* Drops the file's cached pages: the whole page cache when root, else posix_fadvise. */
static const char *drop_cache(const char *path)
{
    sync();
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f && fputs("1\n", f) >= 0 && fclose(f) == 0)
        return "drop_caches";
    if (f)
        fclose(f);
    return "fadvise DONTNEED";
}

/* ---- (a) raw read bandwidth ---- */

static int null_chunk(void *ctx, const struct wstream_chunk *c, struct bora_err *err)
{
    (void)err;
    *(uint64_t *)ctx += c->len;
    return 0;
}

static int raw_read(const struct cs_opts *o, const char *path, uint64_t bytes, bool direct, double *gbs)
{
    const char *files[] = { path };
    struct wstream_item it = { .file = 0, .offset = 0, .len = bytes, .group = 0 };
    struct wstream_plan plan = { files, 1, &it, 1, 1 };
    struct wstream_opts wo = { .qd = o->qd, .buf_bytes = o->buf_bytes, .direct = direct ? 0 : WSTREAM_DIRECT_OFF };
    uint64_t got = 0;
    struct wstream_sink sink = { .ctx = &got, .on_chunk = null_chunk };
    struct wstream *ws;
    struct bora_err err;
    int rc = wstream_open(&ws, &plan, &wo, &err);
    if (!rc)
        rc = wstream_run(ws, &sink, &err);
    if (rc) {
        fprintf(stderr, "bora coldstart: raw read: %s\n", err.msg);
        wstream_close(ws);
        return rc;
    }
    struct wstream_stats st;
    wstream_stats_get(ws, &st);
    *gbs = (double)got / st.seconds / 1e9;
    wstream_close(ws);
    return 0;
}

/* ---- (b), (c): a child process from exec to first token ---- */

struct cs_result {
    double host_s, resident_s, first_s;   /* since the parent's fork */
    int token;
    char how[160];
};

static int layer_wait(void *ctx, int layer)
{
    return model_stream_wait_layer(ctx, layer);
}

/* The prompt of the children: id 1, then pseudo-random ids. Returns the greedy first token. */
static int prompt_first(const struct cs_opts *o, struct engine *e, int *best, struct bora_err *err)
{
    const int V = e->model->cfg.vocab_size;
    int32_t *ids = malloc((size_t)o->prompt * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    int rc = 0;
    if (!ids || !logits)
        rc = bora_errf(err, -ENOMEM, "out of memory");
    uint64_t s = 12345;
    for (int i = 0; !rc && i < o->prompt; i++)
        ids[i] = i ? 3 + (int32_t)(xs(&s) % (uint64_t)(V - 3)) : 1;
    if (!rc && (rc = engine_forward(e, ids, o->prompt, 0, logits)))
        bora_errf(err, rc, "engine forward: %s", strerror(-rc));
    *best = 0;
    for (int i = 1; !rc && i < V; i++)
        if (logits[i] > logits[*best])
            *best = i;
    free(ids);
    free(logits);
    return rc;
}

/* The streamed child on CUDA: the matrices go from the file straight into the arena
 * (kernels/model_load_cuda.h); takes m. */
static int child_direct(const struct cs_opts *o, struct model *m, double t0)
{
    struct bora_err err = { "" };
    struct engine *e = NULL;
    struct model_load_cuda_stats st;
    struct model_load_cuda_opts lo = { .qd = o->qd, .buf_bytes = o->buf_bytes };
    /* tuning knobs (defaults: model_load_cuda's): readers, staging buffers per reader, the
     * engine prepared after the stream instead of during it, the cold prefetch, staging (0
     * huge-page block, 1 block, 2 each buffer), a warm-up prompt's tokens */
    lo.parts = (int)bora_env_int("BORA_COLDSTART_PARTS", 0, 0, 256);
    lo.bufs = (int)bora_env_int("BORA_COLDSTART_BUFS", 0, 0, 256);
    lo.serial = bora_env_int("BORA_COLDSTART_SERIAL", 0, 0, INT_MAX) != 0;
    lo.prefetch = bora_env_int("BORA_COLDSTART_PREFETCH", lo.prefetch, 0, INT_MAX) != 0;
    lo.stage = (enum model_load_cuda_stage)bora_env_int("BORA_COLDSTART_STAGE", MODEL_LOAD_CUDA_STAGE_HUGE,
                                                        MODEL_LOAD_CUDA_STAGE_HUGE, MODEL_LOAD_CUDA_STAGE_EACH);
    lo.warm_tokens = (int)bora_env_int("BORA_COLDSTART_WARM", 0, -1, 1 << 20);   /* < 2 (-1): no warm-up */
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CUDA, .max_ctx = o->prompt + 16 };
    double t_host = now_s() - t0;
    int best = 0, rc = model_load_cuda(&e, m, &eo, &lo, &st, &err);
    double t_res = now_s() - t0;
    if (!rc)
        rc = prompt_first(o, e, &best, &err);
    if (rc) {
        fprintf(stderr, "bora coldstart (stream): %s\n", err.msg);
        engine_close(e);
        model_close(m);
        return 1;
    }
    double t_first = now_s() - t0;
    fprintf(stderr, "coldstart direct: start→model %.3f s (exec and loading to main %.3f s), CUDA open %.3f s "
            "(context %.3f s; %.2f GB prefetched meanwhile), stream %.3f s (%d reader(s) × %d buffers; engine prepared "
            "meanwhile in %.3f s), finish %.3f s, prompt %.3f s\n", t_host, o->t_main - t0, st.open_s, st.ctx_s,
            st.prefetched / 1e9, st.seconds, st.parts, st.bufs, st.prepare_s, st.finish_s, t_first - t_res);
    if (getenv("BORA_COLDSTART_TWICE")) {   /* diagnosis: the same prompt again, first-use costs paid */
        double t2 = now_s();
        int again = 0;
        if (!prompt_first(o, e, &again, &err))
            fprintf(stderr, "coldstart direct: the prompt again %.3f s (token %d, first %d)\n", now_s() - t2, again, best);
    }
    char how[160];
    if (st.streamed)
        snprintf(how, sizeof how, "direct,%s,%s,x%d,%.2fGB/s", st.direct ? "O_DIRECT" : "buffered",
                 st.registered ? "fixed" : "plain", st.parts, st.seconds > 0 ? st.bytes / st.seconds / 1e9 : 0.0);
    else
        snprintf(how, sizeof how, "host-upload(conversion)");
    printf("RESULT %.6f %.6f %.6f %d %s/%s\n", t_host, t_res, t_first, best, engine_backend_name(e), how);
    fflush(stdout);
    engine_close(e);
    model_close(m);
    return 0;
}

/* The child: loads with `mode` ("stream" or "naive"), runs the prompt, prints one RESULT line. */
static int child_run(const struct cs_opts *o, const char *mode, double t0)
{
    struct bora_err err = { "" };
    struct model *m = NULL;
    struct engine *e = NULL;
    struct pinned_pool *pool = NULL;
    struct model_stream *ms = NULL;
    int rc = model_open(&m, o->dir, NULL, &err);
    double t_host = 0;
    char how[160] = "";
    if (rc)
        goto fail;
    const bool stream = !strcmp(mode, "stream");
    if (stream && o->backend == ENGINE_BACKEND_CUDA)
        return child_direct(o, m, t0);
    if (stream) {
        /* pipelined: the prompt's first block runs each layer as soon as it is resident */
        struct wstream_opts wo = { .qd = o->qd, .buf_bytes = o->buf_bytes };
        /* The host block is ordinary memory: pinning the whole checkpoint would cost more than
         * it saves (the reads land in the streamer's own registered staging buffers, and the
         * engine copies each layer to the GPU as soon as it is complete). */
        if ((rc = model_stream_begin(&ms, m, NULL, &wo, &err)))
            goto fail;
    } else {
        /* naive: the engine copies from the mapping; on the CPU, copy every tensor (pageable) */
        snprintf(how, sizeof how, "mmap");
    }
    t_host = now_s() - t0;
    struct engine_opts eo = { .backend = o->backend, .max_ctx = o->prompt + 16 };
    if (stream) {
        eo.layer_wait = layer_wait;
        eo.layer_wait_ctx = ms;
    }
    if ((rc = engine_open(&e, m, &eo, &err))) {
        if (stream) {
            struct bora_err ferr = { "" };
            if (model_stream_finish(ms, NULL, &ferr))
                err = ferr;   /* the load's own message names the file and offset */
        }
        goto fail;
    }
    if (!strcmp(mode, "naive") && !strcmp(engine_backend_name(e), "cpu")) {
        volatile uint8_t sum = 0;   /* fault every page of the mapping in */
        for (int i = 0; i < m->n_shards; i++)
            for (size_t b = 0; b < m->shards[i].map_bytes; b += 4096)
                sum += ((const uint8_t *)m->shards[i].map)[b];
        (void)sum;
    }
    double t_res = now_s() - t0;   /* the streamed path sets it again when the load completes */
    const int V = m->cfg.vocab_size;
    int32_t *ids = malloc((size_t)o->prompt * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!ids || !logits) {
        rc = bora_errf(&err, -ENOMEM, "out of memory");
        goto fail;
    }
    uint64_t s = 12345;
    ids[0] = 1;
    for (int i = 1; i < o->prompt; i++)
        ids[i] = 3 + (int32_t)(xs(&s) % (uint64_t)(V - 3));
    rc = engine_forward(e, ids, o->prompt, 0, logits);
    if (stream) {
        struct wstream_stats st;
        struct bora_err ferr = { "" };
        int frc = model_stream_finish(ms, &st, &ferr);
        if (frc) {
            err = ferr;
            rc = frc;
            goto fail;
        }
        /* CUDA holds every weight once engine_open returns; the CPU once the stream ends */
        if (strcmp(engine_backend_name(e), "cuda"))
            t_res = now_s() - t0;
        snprintf(how, sizeof how, "host,%s,%s,%.2fGB/s,pipelined",
                 st.direct_files ? "O_DIRECT" : "buffered", st.registered ? "fixed" : "plain",
                 st.bytes_read / st.seconds / 1e9);
    }
    if (rc) {
        bora_errf(&err, rc, "engine forward: %s", strerror(-rc));
        goto fail;
    }
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    double t_first = now_s() - t0;
    printf("RESULT %.6f %.6f %.6f %d %s/%s\n", t_host, t_res, t_first, best, engine_backend_name(e), how);
    fflush(stdout);
    free(ids);
    free(logits);
    engine_close(e);
    model_close(m);
    model_stream_close(ms);
    pinned_pool_close(pool);
    return 0;
fail:
    fprintf(stderr, "bora coldstart (%s): %s\n", mode, err.msg);
    engine_close(e);
    model_close(m);
    model_stream_close(ms);
    pinned_pool_close(pool);
    return 1;
}

static int spawn(const struct cs_opts *o, const char *mode, struct cs_result *r)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -errno;
    char t0s[64], prompt[32], qd[32], buf[32];
    const char *be = o->backend == ENGINE_BACKEND_CPU ? "cpu" : o->backend == ENGINE_BACKEND_CUDA ? "cuda" : "auto";
    snprintf(prompt, sizeof prompt, "%d", o->prompt);
    snprintf(qd, sizeof qd, "%d", o->qd);
    snprintf(buf, sizeof buf, "%zu", o->buf_bytes);
    double t0 = now_s();
    snprintf(t0s, sizeof t0s, "%.9f", t0);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/proc/self/exe", "bora", "coldstart", "--child", mode, t0s, "--dir", o->dir, "--prompt", prompt,
              "--qd", qd, "--buf", buf, "--backend", be, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[512] = "";
    FILE *f = fdopen(fds[0], "r");
    bool ok = f && fgets(line, sizeof line, f);
    if (f)
        fclose(f);
    int st;
    waitpid(pid, &st, 0);
    if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) ||
        sscanf(line, "RESULT %lf %lf %lf %d %159s", &r->host_s, &r->resident_s, &r->first_s, &r->token, r->how) != 5) {
        fprintf(stderr, "bora coldstart: the %s child failed\n", mode);
        return -EIO;
    }
    return 0;
}

/* ---- the command ---- */

static const char *usage_text =
    "coldstart --preset tiny|small|mistral-7b --dir DIR [--precision fp8|bf16] [--prompt N] [--backend B]\n"
    "          [--qd N] [--buf BYTES] [--no-drop] [--no-warm] [--json]    |    coldstart --alloc";

static int parse(struct cs_opts *o, int argc, char **argv)
{
    *o = (struct cs_opts){ .p = &presets[0], .fp8 = true, .prompt = 512, .qd = WSTREAM_QD_DEFAULT,
                           .buf_bytes = WSTREAM_BUF_BYTES_DEFAULT, .backend = ENGINE_BACKEND_AUTO };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool takes = !strcmp(a, "--preset") || !strcmp(a, "--dir") || !strcmp(a, "--precision") || !strcmp(a, "--prompt") ||
                     !strcmp(a, "--backend") || !strcmp(a, "--qd") || !strcmp(a, "--buf");
        if (takes && !v) {
            fprintf(stderr, "bora coldstart: option '%s' needs a value\nusage: bora %s\n", a, usage_text);
            return -EINVAL;
        }
        if (!strcmp(a, "--preset")) {
            o->p = NULL;
            for (size_t k = 0; k < BORA_ARRAY_LEN(presets); k++)
                if (!strcmp(v, presets[k].name))
                    o->p = &presets[k];
            if (!o->p) {
                fprintf(stderr, "bora coldstart: --preset '%s': not one of tiny, small, mistral-7b\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--dir")) {
            o->dir = v;
        } else if (!strcmp(a, "--precision")) {
            if (strcmp(v, "fp8") && strcmp(v, "bf16")) {
                fprintf(stderr, "bora coldstart: --precision '%s': not fp8 or bf16\n", v);
                return -EINVAL;
            }
            o->fp8 = !strcmp(v, "fp8");
        } else if (!strcmp(a, "--prompt") || !strcmp(a, "--qd") || !strcmp(a, "--buf")) {
            char *end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            const long long hi = !strcmp(a, "--buf") ? (1ll << 30) : !strcmp(a, "--prompt") ? (1ll << 20) : 4096;
            if (end == v || *end || errno || x <= 0 || x > hi) {
                fprintf(stderr, "bora coldstart: %s '%s': expected a whole number from 1 to %lld\n", a, v, hi);
                return -EINVAL;
            }
            if (!strcmp(a, "--prompt"))
                o->prompt = (int)x;
            else if (!strcmp(a, "--qd"))
                o->qd = (int)x;
            else
                o->buf_bytes = (size_t)x;
        } else if (!strcmp(a, "--backend")) {
            if (engine_backend_parse(v, &o->backend)) {
                fprintf(stderr, "bora coldstart: --backend '%s': not auto, cpu or cuda\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--no-drop")) {
            o->no_drop = true;
        } else if (!strcmp(a, "--no-warm")) {
            o->no_warm = true;
        } else {
            fprintf(stderr, "bora coldstart: unknown argument '%s'\nusage: bora %s\n", a, usage_text);
            return -EINVAL;
        }
        i += takes;
    }
    if (!o->dir) {
        fprintf(stderr, "bora coldstart: --dir DIR is required\nusage: bora %s\n", usage_text);
        return -EINVAL;
    }
    return 0;
}

struct cs_round {
    double raw_gbs;
    struct cs_result stream, naive;
};

static int round_run(const struct cs_opts *o, const char *path, uint64_t bytes, bool cold, struct cs_round *r)
{
    int rc;
    if (cold && !o->no_drop)
        drop_cache(path);
    if ((rc = raw_read(o, path, bytes, cold, &r->raw_gbs)))
        return rc;
    if (cold && !o->no_drop)
        drop_cache(path);
    if ((rc = spawn(o, "stream", &r->stream)))
        return rc;
    if (cold && !o->no_drop)
        drop_cache(path);
    return spawn(o, "naive", &r->naive);
}

static void print_text(const struct cs_opts *o, uint64_t bytes, const char *dropped, const struct cs_round *c,
                       const struct cs_round *w, double budget)
{
    printf("coldstart: preset %s, %s, %.3f GB file in %s, prompt %d tokens, qd %d, %zu KiB reads, cache: %s\n",
           o->p->name, o->fp8 ? "fp8" : "bf16", bytes / 1e9, o->dir, o->prompt, o->qd, o->buf_bytes >> 10, dropped);
    printf("%-38s %12s %12s\n", "", "cold", o->no_warm ? "" : "warm");
    printf("%-38s %9.2f GB/s %9.2f GB/s\n", "(a) raw read, io_uring", c->raw_gbs, o->no_warm ? 0 : w->raw_gbs);
    const struct { const char *name; const struct cs_result *a, *b; } rows[] = {
        { "(b) streamer: weights resident", &c->stream, &w->stream },
        { "(c) naive mmap: weights resident", &c->naive, &w->naive },
    };
    for (int i = 0; i < 2; i++) {
        printf("%-38s %10.3f s %10.3f s\n", rows[i].name, rows[i].a->resident_s, o->no_warm ? 0 : rows[i].b->resident_s);
        char n[64];
        snprintf(n, sizeof n, "%.3s     start → first token", rows[i].name);
        printf("%-38s %10.3f s %10.3f s\n", n, rows[i].a->first_s, o->no_warm ? 0 : rows[i].b->first_s);
    }
    printf("streamer path: %s; naive: %s\n", c->stream.how, c->naive.how);
    printf("budget (cold, streamer): ≤ %.2f × %.3f GB ÷ %.2f GB/s + %.1f s = %.3f s → %.3f s: %s\n", CS_BUDGET_FACTOR,
           bytes / 1e9, c->raw_gbs, CS_BUDGET_SLACK_S, budget, c->stream.first_s,
           c->stream.first_s <= budget ? "within" : "OVER");
    if (c->stream.token != c->naive.token)
        printf("WARNING: first tokens differ: streamer %d, naive %d\n", c->stream.token, c->naive.token);
}

static void print_json(const struct cs_opts *o, uint64_t bytes, const char *dropped, const struct cs_round *c,
                       const struct cs_round *w, double budget)
{
    printf("{\"preset\":\"%s\",\"precision\":\"%s\",\"file_bytes\":%llu,\"prompt\":%d,\"qd\":%d,\"read_bytes\":%zu,"
           "\"cache_drop\":\"%s\",\"streamer\":\"%s\",\"naive\":\"%s\",",
           o->p->name, o->fp8 ? "fp8" : "bf16", (unsigned long long)bytes, o->prompt, o->qd, o->buf_bytes, dropped,
           c->stream.how, c->naive.how);
    const struct cs_round *r[2] = { c, w };
    for (int i = 0; i < (o->no_warm ? 1 : 2); i++)
        printf("\"%s\":{\"raw_gbs\":%.4f,\"stream_resident_s\":%.4f,\"stream_first_token_s\":%.4f,"
               "\"naive_resident_s\":%.4f,\"naive_first_token_s\":%.4f},",
               i ? "warm" : "cold", r[i]->raw_gbs, r[i]->stream.resident_s, r[i]->stream.first_s, r[i]->naive.resident_s,
               r[i]->naive.first_s);
    printf("\"budget_s\":%.4f,\"within_budget\":%s,\"tokens_agree\":%s}\n", budget,
           c->stream.first_s <= budget ? "true" : "false", c->stream.token == c->naive.token ? "true" : "false");
}

int cmd_bench_coldstart(int argc, char **argv)
{
    char line[512];
    if (argc == 2 && !strcmp(argv[1], "--alloc")) {
        jemalloc_stats_line(line, sizeof line);
        printf("%s\n", line);
        return 0;
    }
    struct cs_opts o;
    if (argc > 3 && !strcmp(argv[1], "--child")) {
        const double t_main = now_s();
        const char *mode = argv[2];
        double t0 = atof(argv[3]);
        argv[3] = argv[0];   /* parse the rest as usual */
        if (parse(&o, argc - 3, argv + 3))
            return 2;
        o.t_main = t_main;
        return child_run(&o, mode, t0);
    }
    if (parse(&o, argc, argv))
        return 2;
    if (scratch_dir(o.dir))
        return 1;
    if (write_config(&o))
        return 1;
    int64_t bytes = write_checkpoint(&o);
    if (bytes < 0)
        return 1;
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", o.dir);
    const char *dropped = o.no_drop ? "not dropped" : drop_cache(path);
    struct cs_round cold = { 0 }, warm = { 0 };
    if (round_run(&o, path, (uint64_t)bytes, true, &cold))
        return 1;
    if (!o.no_warm && round_run(&o, path, (uint64_t)bytes, false, &warm))
        return 1;
    double budget = CS_BUDGET_FACTOR * (double)bytes / (cold.raw_gbs * 1e9) + CS_BUDGET_SLACK_S;
    if (o.json)
        print_json(&o, (uint64_t)bytes, dropped, &cold, &warm, budget);
    else
        print_text(&o, (uint64_t)bytes, dropped, &cold, &warm, budget);
    jemalloc_stats_line(line, sizeof line);
    fprintf(stderr, "%s\n", line);
    return 0;
}
