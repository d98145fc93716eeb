/* engine_cpu.c — the CPU reference backend: plain fp32 arithmetic over weights dequantized on
 * the fly (BF16, F16, F32, FP8 e4m3 × scales), an fp32 KV cache, OpenMP across the cores.
 * Every GPU kernel is tested against this file; clarity first, then speed. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine.h"

struct cpu_state {
    float *x, *xb, *xb2;       /* (dim) residual stream and scratch */
    float *q;                  /* (n_heads*head_dim) */
    float *k, *v;              /* (kv_dim) */
    float *att;                /* (n_heads, max_ctx) attention scores */
    float *hb, *hb2;           /* (hidden_dim) */
    float *kcache, *vcache;    /* (n_layers, max_ctx, kv_dim) */
    float e4m3_lut[256];       /* FP8 e4m3 code → value */
    int n_threads;
};

/* out[r] = Σ_c W[r][c] · x[c] for every row of w (dequantized on the fly). */
static void matvec(const struct cpu_state *s, const struct wtensor *w, const float *x, float *out)
{
    const int64_t rows = w->rows, cols = w->cols;
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
    for (int64_t r = 0; r < rows; r++) {
        float acc = 0.0f;
        switch (w->dtype) {
        case BORA_DT_BF16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
#pragma omp simd reduction(+ : acc)
            for (int64_t c = 0; c < cols; c++) {
                uint32_t u = (uint32_t)p[c] << 16;
                float f;
                memcpy(&f, &u, 4);
                acc += f * x[c];
            }
            break;
        }
        case BORA_DT_F8_E4M3: {
            const uint8_t *p = (const uint8_t *)w->data + r * cols;
            for (int64_t c = 0; c < cols; c++)
                acc += s->e4m3_lut[p[c]] * x[c];
            break;
        }
        case BORA_DT_F32: {
            const float *p = (const float *)w->data + r * cols;
#pragma omp simd reduction(+ : acc)
            for (int64_t c = 0; c < cols; c++)
                acc += p[c] * x[c];
            break;
        }
        case BORA_DT_F16: {
            const uint16_t *p = (const uint16_t *)w->data + r * cols;
            for (int64_t c = 0; c < cols; c++)
                acc += bora_f16_to_f32(p[c]) * x[c];
            break;
        }
        default:
            break;
        }
        out[r] = acc * w->scale * (w->row_scale ? w->row_scale[r] : 1.0f);
    }
}

static void rmsnorm(float *out, const float *x, const struct wtensor *w, int n, float eps)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    float wrow[n];
    wtensor_row_f32(w, 0, wrow);
    for (int i = 0; i < n; i++)
        out[i] = wrow[i] * (x[i] * inv);
}

/* Rotates each head of v (n_heads × head_dim) by position pos. HF layout pairs (i, i + d/2);
 * native layout pairs (2i, 2i + 1). cos and sin carry the YaRN attention factor. */
static void rope(const struct model *m, float *v, int n_heads, int pos)
{
    const int hd = m->cfg.head_dim, half = hd / 2;
    for (int i = 0; i < half; i++) {
        float ang = (float)pos * m->rope_inv_freq[i];
        float c = cosf(ang) * m->rope_attn_factor, s = sinf(ang) * m->rope_attn_factor;
        for (int h = 0; h < n_heads; h++) {
            float *p = v + h * hd;
            int a = m->cfg.rope_interleaved ? 2 * i : i, b = m->cfg.rope_interleaved ? 2 * i + 1 : i + half;
            float x0 = p[a], x1 = p[b];
            p[a] = x0 * c - x1 * s;
            p[b] = x0 * s + x1 * c;
        }
    }
}

static void embed(const struct model *m, int32_t id, float *x)
{
    wtensor_row_f32(&m->tok_emb, id, x);
}

/* One token through every layer; leaves the final hidden state (pre-norm) in s->x. */
static void step(struct engine *e, int32_t id, int pos)
{
    const struct model *m = e->model;
    const struct model_config *c = &m->cfg;
    struct cpu_state *s = e->impl;
    const int dim = c->dim, hd = c->head_dim, kv_dim = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    const float qs = model_query_scale(c, pos), inv_sqrt = 1.0f / sqrtf((float)hd);
    const int start = c->sliding_window > 0 && pos - c->sliding_window + 1 > 0 ? pos - c->sliding_window + 1 : 0;
    embed(m, id, s->x);
    for (int l = 0; l < c->n_layers; l++) {
        const struct layer_weights *w = &m->layers[l];
        float *kc = s->kcache + (size_t)l * e->max_ctx * kv_dim, *vc = s->vcache + (size_t)l * e->max_ctx * kv_dim;
        rmsnorm(s->xb, s->x, &w->attn_norm, dim, c->norm_eps);
        matvec(s, &w->wq, s->xb, s->q);
        matvec(s, &w->wk, s->xb, kc + (size_t)pos * kv_dim);
        matvec(s, &w->wv, s->xb, vc + (size_t)pos * kv_dim);
        rope(m, s->q, c->n_heads, pos);
        rope(m, kc + (size_t)pos * kv_dim, c->n_kv_heads, pos);
        if (qs != 1.0f)
            for (int i = 0; i < c->n_heads * hd; i++)
                s->q[i] *= qs;
#pragma omp parallel for schedule(static) num_threads(s->n_threads)
        for (int h = 0; h < c->n_heads; h++) {
            const float *qh = s->q + h * hd;
            float *att = s->att + (size_t)h * e->max_ctx;
            const int kvh = h / group;
            float mx = -INFINITY;
            for (int t = start; t <= pos; t++) {
                const float *kt = kc + (size_t)t * kv_dim + kvh * hd;
                float d = 0.0f;
                for (int i = 0; i < hd; i++)
                    d += qh[i] * kt[i];
                att[t] = d * inv_sqrt;
                mx = fmaxf(mx, att[t]);
            }
            float sum = 0.0f;
            for (int t = start; t <= pos; t++) {
                att[t] = expf(att[t] - mx);
                sum += att[t];
            }
            float *out = s->xb2 + h * hd;   /* xb2 is sized for n_heads*head_dim */
            memset(out, 0, (size_t)hd * sizeof *out);
            for (int t = start; t <= pos; t++) {
                const float a = att[t] / sum, *vt = vc + (size_t)t * kv_dim + kvh * hd;
                for (int i = 0; i < hd; i++)
                    out[i] += a * vt[i];
            }
        }
        matvec(s, &w->wo, s->xb2, s->xb);
        for (int i = 0; i < dim; i++)
            s->x[i] += s->xb[i];
        rmsnorm(s->xb, s->x, &w->ffn_norm, dim, c->norm_eps);
        matvec(s, &w->w_gate, s->xb, s->hb);
        matvec(s, &w->w_up, s->xb, s->hb2);
        for (int i = 0; i < c->hidden_dim; i++) {
            float g = s->hb[i];
            s->hb[i] = g / (1.0f + expf(-g)) * s->hb2[i];
        }
        matvec(s, &w->w_down, s->hb, s->xb);
        for (int i = 0; i < dim; i++)
            s->x[i] += s->xb[i];
    }
}

static void head(struct engine *e, float *logits)
{
    struct cpu_state *s = e->impl;
    rmsnorm(s->xb, s->x, &e->model->norm, e->model->cfg.dim, e->model->cfg.norm_eps);
    matvec(s, &e->model->output, s->xb, logits);
}

static int cpu_forward(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    for (int i = 0; i < n; i++)
        step(e, ids[i], pos + i);
    if (logits)
        head(e, logits);
    return 0;
}

static int cpu_forward_all(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    const size_t V = (size_t)e->model->cfg.vocab_size;
    for (int i = 0; i < n; i++) {
        step(e, ids[i], pos + i);
        head(e, logits + (size_t)i * V);
    }
    return 0;
}

static void cpu_reset(struct engine *e)
{
    (void)e;   /* positions restart at 0; stale cache entries are overwritten before use */
}

static void cpu_close(struct engine *e)
{
    struct cpu_state *s = e->impl;
    if (!s)
        return;
    free(s->x);
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
};

int engine_cpu_open(struct engine *e, struct bora_err *err)
{
    const struct model_config *c = &e->model->cfg;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t scratch = 2 * c->dim + qd /*xb2*/ + qd + 2 * kvd + (size_t)c->n_heads * e->max_ctx + 2 * c->hidden_dim;
    const size_t cache = (size_t)c->n_layers * e->max_ctx * kvd;
    struct cpu_state *s = calloc(1, sizeof *s);
    if (!s)
        return bora_errf(err, -ENOMEM, "out of memory");
    e->impl = s;
    s->x = calloc(scratch + c->dim, sizeof(float));
    s->kcache = calloc(cache, sizeof(float));
    s->vcache = calloc(cache, sizeof(float));
    if (!s->x || !s->kcache || !s->vcache) {
        cpu_close(e);
        return bora_errf(err, -ENOMEM, "CPU engine: cannot allocate %.1f MiB for a %d-token KV cache",
                         2.0 * cache * 4 / (1 << 20), e->max_ctx);
    }
    float *p = s->x + c->dim;
    s->xb = p, p += c->dim;
    s->xb2 = p, p += qd;
    s->q = p, p += qd;
    s->k = p, p += kvd;
    s->v = p, p += kvd;
    s->att = p, p += (size_t)c->n_heads * e->max_ctx;
    s->hb = p, p += c->hidden_dim;
    s->hb2 = p;
    for (int i = 0; i < 256; i++)
        s->e4m3_lut[i] = bora_e4m3_to_f32((uint8_t)i);
    s->n_threads = omp_get_num_procs();
    e->ops = &cpu_ops;
    return 0;
}
