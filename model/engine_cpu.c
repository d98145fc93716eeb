/* engine_cpu.c — the CPU reference backend: plain fp32 arithmetic over weights dequantized on
 * the fly (BF16, F16, F32, FP8 e4m3 × scales), an fp32 KV cache, OpenMP across the cores.
 * Prompts run in blocks of up to CPU_BLOCK tokens (each weight row is read once per block);
 * decode is the same code with a block of one. Work is split across the cores by a small
 * fork-join pool (common/tpool.h). Every GPU kernel is tested against this file. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/tpool.h"
#include "model/engine.h"

#define CPU_BLOCK 32   /* tokens per prefill block (bounds the scratch memory) */

struct cpu_state {
    float *x, *xb, *xb2;       /* (CPU_BLOCK, dim) residual stream and scratch */
    float *q;                  /* (CPU_BLOCK, n_heads*head_dim) */
    float *att_out;            /* (CPU_BLOCK, n_heads*head_dim) */
    float *hb, *hb2;           /* (CPU_BLOCK, hidden_dim) */
    float *scores;             /* (n_threads, max_ctx) attention scores */
    float *wrow;               /* (n_threads, max(dim, hidden_dim, q_dim)) dequantized weight row */
    float *norm_w;             /* (dim) scratch for norm weights */
    float *kcache, *vcache;    /* (n_layers, max_ctx, kv_dim) */
    size_t wrow_len;
    float e4m3_lut[256];       /* FP8 e4m3 code → value */
    int n_threads;
    struct tpool *pool;
};

/* Dequantizes row r of w into out (no scales applied). */
static void load_row(const struct cpu_state *s, const struct wtensor *w, int64_t r, float *out)
{
    const int64_t n = w->cols;
    switch (w->dtype) {
    case BORA_DT_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + r * n;
        for (int64_t c = 0; c < n; c++) {
            uint32_t u = (uint32_t)p[c] << 16;
            memcpy(&out[c], &u, 4);
        }
        break;
    }
    case BORA_DT_F8_E4M3: {
        const uint8_t *p = (const uint8_t *)w->data + r * n;
        for (int64_t c = 0; c < n; c++)
            out[c] = s->e4m3_lut[p[c]];
        break;
    }
    case BORA_DT_F32:
        memcpy(out, (const float *)w->data + r * n, (size_t)n * sizeof *out);
        break;
    case BORA_DT_F16: {
        const uint16_t *p = (const uint16_t *)w->data + r * n;
        for (int64_t c = 0; c < n; c++)
            out[c] = bora_f16_to_f32(p[c]);
        break;
    }
    default:
        memset(out, 0, (size_t)n * sizeof *out);
    }
}

struct matmul_job {
    const struct cpu_state *s;
    const struct wtensor *w;
    const float *x;
    int n;
    float *out;
    int64_t ld_out;
};

static void matmul_part(void *ctx, int64_t r0, int64_t r1, int tid)
{
    const struct matmul_job *j = ctx;
    const struct wtensor *w = j->w;
    const int64_t cols = w->cols;
    float *row = j->s->wrow + (size_t)tid * j->s->wrow_len;
    for (int64_t r = r0; r < r1; r++) {
        load_row(j->s, w, r, row);
        const float scale = w->scale * (w->row_scale ? w->row_scale[r] : 1.0f);
        for (int t = 0; t < j->n; t++) {
            const float *xt = j->x + (size_t)t * cols;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t c = 0; c < cols; c++)
                acc += row[c] * xt[c];
            j->out[(size_t)t * j->ld_out + r] = acc * scale;
        }
    }
}

/* out[t][r] = Σ_c W[r][c] · x[t][c] for t < n (x rows of w->cols, out rows of ld_out). */
static void matmul(const struct cpu_state *s, const struct wtensor *w, const float *x, int n, float *out, int64_t ld_out)
{
    struct matmul_job j = { s, w, x, n, out, ld_out };
    tpool_run(s->pool, w->rows, matmul_part, &j);
}

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = w[i] * (x[i] * inv);
}

/* Rotates each head of v (n_heads × head_dim) by position pos. HF layout pairs (i, i + d/2);
 * native layout pairs (2i, 2i + 1). cos and sin carry the YaRN attention factor. */
static void rope(const struct model *m, float *v, int n_heads, int pos)
{
    const int hd = m->cfg.head_dim, half = hd / 2;
    const bool il = m->cfg.rope_interleaved;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * m->rope_inv_freq[i];
        float c = cosf(ang) * m->rope_attn_factor, s = sinf(ang) * m->rope_attn_factor;
        for (int h = 0; h < n_heads; h++) {
            float *p = v + h * hd;
            int a = il ? 2 * i : i, b = il ? 2 * i + 1 : i + half;
            float x0 = p[a], x1 = p[b];
            p[a] = x0 * c - x1 * s;
            p[b] = x0 * s + x1 * c;
        }
    }
}

struct attn_job {
    struct engine *e;
    const float *kc, *vc;
    int pos;
};

/* (token, head) pairs [i0, i1) of the block. */
static void attention_part(void *ctx, int64_t i0, int64_t i1, int tid)
{
    const struct attn_job *j = ctx;
    struct engine *e = j->e;
    const struct model_config *c = &e->model->cfg;
    struct cpu_state *s = e->impl;
    const int hd = c->head_dim, kv_dim = c->n_kv_heads * hd, qd = c->n_heads * hd, group = c->n_heads / c->n_kv_heads;
    const float inv_sqrt = 1.0f / sqrtf((float)hd);
    float *sc = s->scores + (size_t)tid * e->max_ctx;
    for (int64_t i = i0; i < i1; i++) {
        const int t = (int)(i / c->n_heads), h = (int)(i % c->n_heads), p = j->pos + t;
        const int start = c->sliding_window > 0 && p - c->sliding_window + 1 > 0 ? p - c->sliding_window + 1 : 0;
        const float *qh = s->q + (size_t)t * qd + h * hd;
        const int kvh = h / group;
        float mx = -INFINITY;
        for (int k = start; k <= p; k++) {
            const float *kk = j->kc + (size_t)k * kv_dim + kvh * hd;
            float d = 0.0f;
            for (int x = 0; x < hd; x++)
                d += qh[x] * kk[x];
            sc[k] = d * inv_sqrt;
            mx = fmaxf(mx, sc[k]);
        }
        float sum = 0.0f;
        for (int k = start; k <= p; k++) {
            sc[k] = expf(sc[k] - mx);
            sum += sc[k];
        }
        float *out = s->att_out + (size_t)t * qd + h * hd;
        memset(out, 0, (size_t)hd * sizeof *out);
        for (int k = start; k <= p; k++) {
            const float a = sc[k] / sum, *vk = j->vc + (size_t)k * kv_dim + kvh * hd;
            for (int x = 0; x < hd; x++)
                out[x] += a * vk[x];
        }
    }
}

/* Causal attention of n queries at positions pos.. over the cache (which already holds
 * their own keys and values). Sliding window W: query p sees keys j with p - j < W. */
static void attention(struct engine *e, const float *kc, const float *vc, int n, int pos)
{
    struct attn_job j = { e, kc, vc, pos };
    struct cpu_state *s = e->impl;
    tpool_run(s->pool, (int64_t)n * e->model->cfg.n_heads, attention_part, &j);
}

/* n ≤ CPU_BLOCK tokens through every layer; leaves their final hidden states in s->x.
 * Waits for each layer's weights on a pipelined cold start. */
static int block(struct engine *e, const int32_t *ids, int n, int pos)
{
    int rc;
    const struct model *m = e->model;
    const struct model_config *c = &m->cfg;
    struct cpu_state *s = e->impl;
    const int dim = c->dim, hd = c->head_dim, kv_dim = c->n_kv_heads * hd, qd = c->n_heads * hd, hid = c->hidden_dim;
    if ((rc = engine_layer_ready(e, -1)))
        return rc;
    for (int t = 0; t < n; t++)
        wtensor_row_f32(&m->tok_emb, ids[t], s->x + (size_t)t * dim);
    for (int l = 0; l < c->n_layers; l++) {
        if ((rc = engine_layer_ready(e, l)))
            return rc;
        const struct layer_weights *w = &m->layers[l];
        float *kc = s->kcache + (size_t)l * e->max_ctx * kv_dim, *vc = s->vcache + (size_t)l * e->max_ctx * kv_dim;
        wtensor_row_f32(&w->attn_norm, 0, s->norm_w);
        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, s->norm_w, dim, c->norm_eps);
        matmul(s, &w->wq, s->xb, n, s->q, qd);
        matmul(s, &w->wk, s->xb, n, kc + (size_t)pos * kv_dim, kv_dim);
        matmul(s, &w->wv, s->xb, n, vc + (size_t)pos * kv_dim, kv_dim);
        for (int t = 0; t < n; t++) {
            float *qt = s->q + (size_t)t * qd;
            rope(m, qt, c->n_heads, pos + t);
            rope(m, kc + (size_t)(pos + t) * kv_dim, c->n_kv_heads, pos + t);
            const float qs = model_query_scale(c, pos + t);
            if (qs != 1.0f)
                for (int i = 0; i < qd; i++)
                    qt[i] *= qs;
        }
        if (e->kv == ENGINE_KV_FP8)   /* the cache holds what an e4m3 cache would give back */
            for (size_t i = (size_t)pos * kv_dim; i < (size_t)(pos + n) * kv_dim; i++) {
                kc[i] = bora_e4m3_to_f32(bora_f32_to_e4m3(kc[i]));
                vc[i] = bora_e4m3_to_f32(bora_f32_to_e4m3(vc[i]));
            }
        attention(e, kc, vc, n, pos);
        matmul(s, &w->wo, s->att_out, n, s->xb, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];
        wtensor_row_f32(&w->ffn_norm, 0, s->norm_w);
        for (int t = 0; t < n; t++)
            rmsnorm(s->xb + (size_t)t * dim, s->x + (size_t)t * dim, s->norm_w, dim, c->norm_eps);
        matmul(s, &w->w_gate, s->xb, n, s->hb, hid);
        matmul(s, &w->w_up, s->xb, n, s->hb2, hid);
        for (size_t i = 0; i < (size_t)n * hid; i++) {
            float g = s->hb[i];
            s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i];
        }
        matmul(s, &w->w_down, s->hb, n, s->xb, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];
    }
    return 0;
}

/* Logits of the block's rows [t0, n) into logits (one vocab row each). */
static int head(struct engine *e, int t0, int n, float *logits)
{
    struct cpu_state *s = e->impl;
    int rc = engine_layer_ready(e, e->model->cfg.n_layers);
    if (rc)
        return rc;
    const int dim = e->model->cfg.dim;
    wtensor_row_f32(&e->model->norm, 0, s->norm_w);
    for (int t = t0; t < n; t++)
        rmsnorm(s->xb + (size_t)(t - t0) * dim, s->x + (size_t)t * dim, s->norm_w, dim, e->model->cfg.norm_eps);
    matmul(s, &e->model->output, s->xb, n - t0, logits, e->model->cfg.vocab_size);
    return 0;
}

static int cpu_forward(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    int rc = 0;
    for (int i = 0; i < n && !rc; i += CPU_BLOCK) {
        if (i > 0 && e->stop && e->stop(e->stop_ctx))
            return -ECANCELED;   /* positions before pos + i are in the cache */
        int b = n - i < CPU_BLOCK ? n - i : CPU_BLOCK;
        rc = block(e, ids + i, b, pos + i);
        if (!rc && logits && i + b == n)
            rc = head(e, b - 1, b, logits);
    }
    return rc;
}

static int cpu_forward_all(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    const size_t V = (size_t)e->model->cfg.vocab_size;
    int rc = 0;
    for (int i = 0; i < n && !rc; i += CPU_BLOCK) {
        int b = n - i < CPU_BLOCK ? n - i : CPU_BLOCK;
        rc = block(e, ids + i, b, pos + i);
        if (!rc)
            rc = head(e, 0, b, logits + (size_t)i * V);
    }
    return rc;
}

static void cpu_reset(struct engine *e)
{
    (void)e;   /* positions restart at 0; stale cache entries are overwritten before use */
}

static int cpu_kv_read(struct engine *e, int layer, int pos, float *k, float *v)
{
    const struct cpu_state *s = e->impl;
    const size_t kvd = (size_t)e->model->cfg.n_kv_heads * e->model->cfg.head_dim;
    const size_t off = ((size_t)layer * e->max_ctx + (size_t)pos) * kvd;
    memcpy(k, s->kcache + off, kvd * sizeof *k);
    memcpy(v, s->vcache + off, kvd * sizeof *v);
    return 0;
}

static void cpu_close(struct engine *e)
{
    struct cpu_state *s = e->impl;
    if (!s)
        return;
    tpool_destroy(s->pool);
    free(s->x);
    free(s->scores);
    free(s->wrow);
    free(s->kcache);
    free(s->vcache);
    free(s);
    e->impl = NULL;
}

static const struct engine_ops cpu_ops = {
    .name = "cpu",
    .forward = cpu_forward,
    .forward_all = cpu_forward_all,
    .reset = cpu_reset,
    .close = cpu_close,
    .kv_read = cpu_kv_read,
};

int engine_cpu_open(struct engine *e, struct bora_err *err)
{
    const struct model_config *c = &e->model->cfg;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t B = CPU_BLOCK;
    /* xb must also hold the head's input rows and the down projection's output */
    const size_t scratch = B * (3 * (size_t)c->dim + 2 * qd + 2 * (size_t)c->hidden_dim) + (size_t)c->dim;
    const size_t cache = (size_t)c->n_layers * e->max_ctx * kvd;
    struct cpu_state *s = calloc(1, sizeof *s);
    if (!s)
        return bora_errf(err, -ENOMEM, "out of memory");
    e->impl = s;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->n_threads = e->n_threads > 0 ? e->n_threads : cores > 0 ? (int)cores : 1;
    if (s->n_threads > TPOOL_MAX_THREADS)
        s->n_threads = TPOOL_MAX_THREADS;
    int prc = tpool_create(&s->pool, s->n_threads);
    if (prc) {
        cpu_close(e);
        return bora_errf(err, prc, "CPU engine: cannot start %d threads", s->n_threads);
    }
    size_t wl = (size_t)c->dim;
    if ((size_t)c->hidden_dim > wl)
        wl = (size_t)c->hidden_dim;
    if (qd > wl)
        wl = qd;
    s->wrow_len = (wl + 15) & ~(size_t)15;
    s->x = calloc(scratch, sizeof(float));
    s->scores = calloc((size_t)s->n_threads * e->max_ctx, sizeof(float));
    s->wrow = calloc((size_t)s->n_threads * s->wrow_len, sizeof(float));
    s->kcache = calloc(cache, sizeof(float));
    s->vcache = calloc(cache, sizeof(float));
    if (!s->x || !s->scores || !s->wrow || !s->kcache || !s->vcache) {
        cpu_close(e);
        return bora_errf(err, -ENOMEM, "CPU engine: cannot allocate %.1f MiB for a %d-token KV cache",
                         2.0 * cache * 4 / (1 << 20), e->max_ctx);
    }
    float *p = s->x + B * c->dim;
    s->xb = p, p += B * c->dim;
    s->xb2 = p, p += B * c->dim;
    s->q = p, p += B * qd;
    s->att_out = p, p += B * qd;
    s->hb = p, p += B * c->hidden_dim;
    s->hb2 = p, p += B * c->hidden_dim;
    s->norm_w = p;
    for (int i = 0; i < 256; i++)
        s->e4m3_lut[i] = bora_e4m3_to_f32((uint8_t)i);
    e->ops = &cpu_ops;
    return 0;
}
