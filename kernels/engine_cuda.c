/* engine_cuda.c — the CUDA engine backend: one device arena (weights as stored, FP8 with its
 * scales or BF16; bf16 KV cache; fp32 activations) laid out by plan.c, and the whole decode step
 * (embedding, per layer 4 GEMVs + attention, head, sampling) captured once into a CUDA graph
 * that reads its position and token from device memory, so every step replays it. Prompts run
 * one token per replay. Budget per step: plan_layout.step_weight_bytes + KV bytes at ≥ 90 % of
 * the streaming-read bandwidth. */
#ifdef BORA_CUDA
#include "kernels/engine_cuda.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/env.h"
#include "common/log.h"
#include "kernels/cuda_check.h"
#include "kernels/kernels.h"
#include "kernels/prefill.h"
#include "kernels/prefill_run.h"


struct cuda_impl {
    uint64_t pf_bytes;              /* the prefill workspace's device bytes (0: none) */
    int (*tune_stop)(void *ctx);    /* engine_cuda_prepare's stop, while it runs; NULL otherwise */
    void *tune_ctx;
    bool fault_next;                /* engine_cuda_fault_next: the next forward meets a CUDA error */
    struct plan_layout lay;
    uint8_t *arena;                 /* device, lay.total bytes */
    cudaStream_t stream;
    cudaGraphExec_t graph;          /* NULL until captured; the step below position alt_from */
    cudaGraphExec_t graph_alt;      /* NULL, or the other schedule's step, from position alt_from on */
    int alt_from;
    struct kern_state *h_in;        /* pinned: state uploaded before a run */
    struct kern_state *h_out;       /* pinned: state copied back by the graph */
    int32_t *h_ids;                 /* pinned (max_ctx) */
    float *h_logits;                /* pinned (vocab) */
    struct plan_dtypes dt;
    int variant[ENGINE_CUDA_GEMV_KINDS];   /* GEMV launch shape per kind, chosen at open */
    float tuned_us[ENGINE_CUDA_GEMV_KINDS];
    struct bora_err last;
    struct prefill_run *pf;         /* batched prefill of prompts (n > 1) */
    struct kern_device dev;
    bool mega;                      /* graph runs the layers as one persistent kernel (decode_mega.cu) */
    struct kern_mega_args mega_args;
    int *d_sync;                    /* its phase counters */
    char mega_why[sizeof(struct bora_err)];   /* why the persistent kernel is off ("" when on) */
    char mega_desc[512];                      /* its layout in words when it applies ("" otherwise) */
    bool prepared;                  /* engine_cuda_prepare done: open_finish has nothing left */
    const struct sampler_params *samp;   /* set_state's sampling settings while cuda_forward_sample
                                          * runs; NULL: greedy */
};

static enum bora_dtype gpu_dtype(enum bora_dtype d)
{
    return d == BORA_DT_F8_E4M3 ? BORA_DT_F8_E4M3 : BORA_DT_BF16;
}

static struct cuda_impl *impl_of(const struct engine *e) { return (struct cuda_impl *)e->impl; }
static uint8_t *at(struct cuda_impl *s, size_t off) { return s->arena + off; }
static uint8_t *layer_at(struct cuda_impl *s, int l, size_t off)
{
    return s->arena + s->lay.layers + (size_t)l * s->lay.layer_stride + off;
}

/* ---- upload ---- */

/* w's combined scale of row r at h_rs[r × rs_step]. */
static void fill_rs(const struct wtensor *w, float *h_rs, int rs_step)
{
    for (int64_t r = 0; r < w->rows; r++)
        h_rs[r * rs_step] = w->scale * (w->row_scale ? w->row_scale[r] : 1.0f);
}

/* Copies w's rows into dst (row r at dst + r × pitch) as dtype `want`, converting F32/F16/BF16
 * to BF16 on the host when needed; writes w's combined scale per row at rs[r × rs_step]. */
static int upload_rows(const struct wtensor *w, enum bora_dtype want, uint8_t *dst, size_t pitch,
                       float *h_rs, int rs_step, const char *what, struct bora_err *err)
{
    if (gpu_dtype(w->dtype) != want)
        return bora_errf(err, -EINVAL, "%s: dtype %s differs from the other linear weights (%s)", what,
                         bora_dtype_name(w->dtype), bora_dtype_name(want));
    size_t row_bytes = (size_t)w->cols * bora_dtype_size(want);
    if (h_rs)
        fill_rs(w, h_rs, rs_step);
    if (w->dtype == want) {
        CUDA_CHECK(cudaMemcpy2D(dst, pitch, w->data, row_bytes, row_bytes, (size_t)w->rows,
                            cudaMemcpyHostToDevice));
        return 0;
    }
    uint16_t *tmp = malloc((size_t)w->rows * row_bytes);
    if (!tmp)
        return bora_errf(err, -ENOMEM, "%s: no host memory to convert to BF16", what);
    size_t n = (size_t)w->rows * (size_t)w->cols;
    for (size_t i = 0; i < n; i++) {
        float f = w->dtype == BORA_DT_F32 ? ((const float *)w->data)[i]
                                          : bora_f16_to_f32(((const uint16_t *)w->data)[i]);
        tmp[i] = bora_f32_to_bf16(f);
    }
    cudaError_t ce = cudaMemcpy2D(dst, pitch, tmp, row_bytes, row_bytes, (size_t)w->rows,
                                  cudaMemcpyHostToDevice);
    free(tmp);
    CUDA_CHECK(ce);
    return 0;
}

static int upload_f32(void *dst, const float *src, size_t n, struct bora_err *err)
{
    CUDA_CHECK(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice));
    return 0;
}

/* A norm vector (any dtype) as fp32. */
static int upload_norm(void *dst, const struct wtensor *w, struct bora_err *err)
{
    float *tmp = malloc((size_t)w->cols * sizeof(float));
    if (!tmp)
        return bora_errf(err, -ENOMEM, "no host memory for a norm");
    wtensor_row_f32(w, 0, tmp);
    int rc = upload_f32(dst, tmp, (size_t)w->cols, err);
    free(tmp);
    return rc;
}

static int upload_layer(struct cuda_impl *s, const struct model *m, int l, float *h_rs,
                        struct bora_err *err)
{
    const struct layer_weights *L = &m->layers[l];
    const struct model_config *c = &m->cfg;
    const enum bora_dtype dt = s->dt.linear;
    const size_t eb = bora_dtype_size(dt);
    const size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    char what[64];
    int rc;
    uint8_t *qkv = layer_at(s, l, s->lay.l_qkv);
    snprintf(what, sizeof what, "layer %d wq", l);
    if ((rc = upload_rows(&L->wq, dt, qkv, dim * eb, h_rs, 1, what, err)))
        return rc;
    snprintf(what, sizeof what, "layer %d wk", l);
    if ((rc = upload_rows(&L->wk, dt, qkv + q_dim * dim * eb, dim * eb, h_rs + q_dim, 1, what, err)))
        return rc;
    snprintf(what, sizeof what, "layer %d wv", l);
    if ((rc = upload_rows(&L->wv, dt, qkv + (q_dim + kv_dim) * dim * eb, dim * eb, h_rs + q_dim + kv_dim, 1,
                          what, err)))
        return rc;
    if ((rc = upload_f32(layer_at(s, l, s->lay.l_qkv_rs), h_rs, q_dim + 2 * kv_dim, err)))
        return rc;
    snprintf(what, sizeof what, "layer %d wo", l);
    if ((rc = upload_rows(&L->wo, dt, layer_at(s, l, s->lay.l_wo), q_dim * eb, h_rs, 1, what, err)) ||
        (rc = upload_f32(layer_at(s, l, s->lay.l_wo_rs), h_rs, dim, err)))
        return rc;
    uint8_t *gu = layer_at(s, l, s->lay.l_gu);
    snprintf(what, sizeof what, "layer %d gate", l);
    if ((rc = upload_rows(&L->w_gate, dt, gu, 2 * dim * eb, h_rs, 2, what, err)))
        return rc;
    snprintf(what, sizeof what, "layer %d up", l);
    if ((rc = upload_rows(&L->w_up, dt, gu + dim * eb, 2 * dim * eb, h_rs + 1, 2, what, err)) ||
        (rc = upload_f32(layer_at(s, l, s->lay.l_gu_rs), h_rs, 2 * hid, err)))
        return rc;
    snprintf(what, sizeof what, "layer %d down", l);
    if ((rc = upload_rows(&L->w_down, dt, layer_at(s, l, s->lay.l_down), hid * eb, h_rs, 1, what, err)) ||
        (rc = upload_f32(layer_at(s, l, s->lay.l_down_rs), h_rs, dim, err)))
        return rc;
    if ((rc = upload_norm(layer_at(s, l, s->lay.l_attn_norm), &L->attn_norm, err)) ||
        (rc = upload_norm(layer_at(s, l, s->lay.l_ffn_norm), &L->ffn_norm, err)))
        return rc;
    return 0;
}

/* Uploads in the order a streamed load delivers (embeddings, layers, then final norm and head),
 * waiting for each part with engine_layer_ready so a cold start overlaps reading and copying. */
static int upload_model(struct engine *e, struct cuda_impl *s, const struct model *m, struct bora_err *err)
{
    const struct model_config *c = &m->cfg;
    size_t max_rows = (size_t)c->vocab_size;
    size_t r2 = (size_t)c->n_heads * c->head_dim + 2 * (size_t)c->n_kv_heads * c->head_dim;
    if (r2 > max_rows)
        max_rows = r2;
    if (2 * (size_t)c->hidden_dim > max_rows)
        max_rows = 2 * (size_t)c->hidden_dim;
    float *h_rs = malloc(max_rows * sizeof(float));
    if (!h_rs)
        return bora_errf(err, -ENOMEM, "no host memory for row scales");
    int rc = engine_layer_ready(e, -1);
    if (rc)
        bora_errf(err, rc, "embeddings did not arrive: %s", strerror(-rc));
    if (!rc)
        rc = upload_rows(&m->tok_emb, s->dt.emb, at(s, s->lay.emb),
                         (size_t)c->dim * bora_dtype_size(s->dt.emb), h_rs, 1, "token embedding", err);
    if (!rc)
        rc = upload_f32(at(s, s->lay.emb_rs), h_rs, (size_t)c->vocab_size, err);
    for (int l = 0; !rc && l < c->n_layers; l++) {
        if ((rc = engine_layer_ready(e, l)))
            bora_errf(err, rc, "layer %d did not arrive: %s", l, strerror(-rc));
        else
            rc = upload_layer(s, m, l, h_rs, err);
    }
    if (!rc && (rc = engine_layer_ready(e, c->n_layers)))
        bora_errf(err, rc, "the output head did not arrive: %s", strerror(-rc));
    if (!rc && !c->tied) {
        rc = upload_rows(&m->output, s->dt.out, at(s, s->lay.out),
                         (size_t)c->dim * bora_dtype_size(s->dt.out), h_rs, 1, "output head", err);
        if (!rc)
            rc = upload_f32(at(s, s->lay.out_rs), h_rs, (size_t)c->vocab_size, err);
    }
    if (!rc)
        rc = upload_norm(at(s, s->lay.norm), &m->norm, err);
    free(h_rs);
    if (!rc)
        rc = upload_f32(at(s, s->lay.inv_freq), m->rope_inv_freq, (size_t)c->head_dim / 2, err);
    return rc;
}

/* Random weights on the GPU: values uniform with variance 1/cols (unit-scale outputs). */
static int fill_mat(uint8_t *w, float *rs, enum bora_dtype dt, size_t rows, size_t cols, uint64_t seed,
                    struct bora_err *err)
{
    float amp = sqrtf(3.0f / (float)cols);
    int rc;
    if (dt == BORA_DT_F8_E4M3) {
        if ((rc = kern_fill_random(w, dt, rows * cols, 1.0f, seed, err)))
            return rc;
        return kern_fill_f32(rs, rows, amp, err);
    }
    if ((rc = kern_fill_random(w, dt, rows * cols, amp, seed, err)))
        return rc;
    return kern_fill_f32(rs, rows, 1.0f, err);
}

static int fill_synthetic(struct cuda_impl *s, const struct model *m, uint64_t seed, struct bora_err *err)
{
    const struct model_config *c = &m->cfg;
    const size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    int rc;
    if ((rc = kern_fill_random(at(s, s->lay.emb), s->dt.emb, V * dim, 1.0f, seed++, err)) ||
        (rc = kern_fill_f32((float *)at(s, s->lay.emb_rs), V, 1.0f, err)))
        return rc;
    if (!c->tied && (rc = fill_mat(at(s, s->lay.out), (float *)at(s, s->lay.out_rs), s->dt.out, V, dim,
                                   seed++, err)))
        return rc;
    if ((rc = kern_fill_f32((float *)at(s, s->lay.norm), dim, 1.0f, err)))
        return rc;
    for (int l = 0; l < c->n_layers; l++) {
        const enum bora_dtype dt = s->dt.linear;
        if ((rc = fill_mat(layer_at(s, l, s->lay.l_qkv), (float *)layer_at(s, l, s->lay.l_qkv_rs), dt,
                           q_dim + 2 * kv_dim, dim, seed++, err)) ||
            (rc = fill_mat(layer_at(s, l, s->lay.l_wo), (float *)layer_at(s, l, s->lay.l_wo_rs), dt, dim,
                           q_dim, seed++, err)) ||
            (rc = fill_mat(layer_at(s, l, s->lay.l_gu), (float *)layer_at(s, l, s->lay.l_gu_rs), dt, 2 * hid,
                           dim, seed++, err)) ||
            (rc = fill_mat(layer_at(s, l, s->lay.l_down), (float *)layer_at(s, l, s->lay.l_down_rs), dt, dim,
                           hid, seed++, err)) ||
            (rc = kern_fill_f32((float *)layer_at(s, l, s->lay.l_attn_norm), dim, 1.0f, err)) ||
            (rc = kern_fill_f32((float *)layer_at(s, l, s->lay.l_ffn_norm), dim, 1.0f, err)))
            return rc;
    }
    /* a "prefilled" cache: attention over it reads real-looking values */
    const bool kv8 = s->dt.kv_fp8;
    if ((rc = kern_fill_random(at(s, s->lay.kv), kv8 ? BORA_DT_F8_E4M3 : BORA_DT_BF16, s->lay.kv_bytes / (kv8 ? 1 : 2),
                               1.0f, seed++, err)))
        return rc;
    if ((rc = upload_f32(at(s, s->lay.inv_freq), m->rope_inv_freq, (size_t)c->head_dim / 2, err)))
        return rc;
    return kern_sync(err);
}

/* ---- the decode step ---- */

/* The GEMV of `kind` (enum engine_cuda_gemv) in layer l. */
static struct kern_gemv_args gemv_of(struct engine *e, int kind, int l)
{
    struct cuda_impl *s = impl_of(e);
    const struct model_config *c = &e->model->cfg;
    const struct plan_layout *L = &s->lay;
    const int dim = c->dim, hid = c->hidden_dim, V = c->vocab_size;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int *cnt = (int *)at(s, L->counters) + (size_t)l * (4 + c->n_kv_heads);
    struct kern_gemv_args g = { 0 };
    g.norm_eps = c->norm_eps;
    g.variant = s->variant[kind];
    switch (kind) {
    case ENGINE_CUDA_GEMV_QKV:
        g.m = (struct kern_mat){ s->dt.linear, layer_at(s, l, L->l_qkv), q_dim + 2 * kv_dim, dim, 1.0f,
                                 (const float *)layer_at(s, l, L->l_qkv_rs) };
        g.x = (float *)at(s, L->x), g.y = (float *)at(s, L->qkv), g.mode = KERN_GEMV_STORE;
        g.norm_w = (const float *)layer_at(s, l, L->l_attn_norm), g.counter = cnt;
        break;
    case ENGINE_CUDA_GEMV_WO:
        g.m = (struct kern_mat){ s->dt.linear, layer_at(s, l, L->l_wo), dim, q_dim, 1.0f,
                                 (const float *)layer_at(s, l, L->l_wo_rs) };
        g.x = (float *)at(s, L->att), g.y = (float *)at(s, L->x), g.mode = KERN_GEMV_ADD, g.counter = cnt + 1;
        break;
    case ENGINE_CUDA_GEMV_GATE_UP:
        g.m = (struct kern_mat){ s->dt.linear, layer_at(s, l, L->l_gu), 2 * hid, dim, 1.0f,
                                 (const float *)layer_at(s, l, L->l_gu_rs) };
        g.x = (float *)at(s, L->x), g.y = (float *)at(s, L->h), g.mode = KERN_GEMV_SWIGLU;
        g.norm_w = (const float *)layer_at(s, l, L->l_ffn_norm), g.counter = cnt + 2;
        break;
    case ENGINE_CUDA_GEMV_DOWN:
        g.m = (struct kern_mat){ s->dt.linear, layer_at(s, l, L->l_down), dim, hid, 1.0f,
                                 (const float *)layer_at(s, l, L->l_down_rs) };
        g.x = (float *)at(s, L->h), g.y = (float *)at(s, L->x), g.mode = KERN_GEMV_ADD, g.counter = cnt + 3;
        break;
    default: /* head */
        g.m = c->tied ? (struct kern_mat){ s->dt.emb, at(s, L->emb), V, dim, 1.0f, (const float *)at(s, L->emb_rs) }
                      : (struct kern_mat){ s->dt.out, at(s, L->out), V, dim, 1.0f, (const float *)at(s, L->out_rs) };
        g.x = (float *)at(s, L->x), g.y = (float *)at(s, L->logits), g.mode = KERN_GEMV_STORE;
        g.norm_w = (const float *)at(s, L->norm);
        g.counter = (int *)at(s, L->counters) + (size_t)c->n_layers * (4 + c->n_kv_heads);
        break;
    }
    return g;
}

/* Like graph_ms (below), with launch i (from 0, warm-ups not counted) of alt instead of x from
 * i = alt_from on (alt NULL: never). */
static int graph_ms_alt(cudaStream_t st, cudaGraphExec_t x, cudaGraphExec_t alt, int alt_from, int warm,
                        int launches, int tries, float *ms, struct bora_err *err)
{
    cudaEvent_t e0 = NULL, e1 = NULL;
    cudaError_t ce = cudaSuccess;
    for (int i = 0; i < warm && ce == cudaSuccess; i++)
        ce = cudaGraphLaunch(x, st);
    if (ce == cudaSuccess)
        ce = cudaEventCreate(&e0);
    if (ce == cudaSuccess)
        ce = cudaEventCreate(&e1);
    float best = 1e30f;
    for (int t = 0; t < tries && ce == cudaSuccess; t++) {
        float m = 0;
        ce = cudaEventRecord(e0, st);
        for (int i = 0; i < launches && ce == cudaSuccess; i++)
            ce = cudaGraphLaunch(alt && i >= alt_from ? alt : x, st);
        if (ce == cudaSuccess)
            ce = cudaEventRecord(e1, st);
        if (ce == cudaSuccess)
            ce = cudaEventSynchronize(e1);
        if (ce == cudaSuccess)
            ce = cudaEventElapsedTime(&m, e0, e1);
        if (ce == cudaSuccess && m < best)
            best = m;
    }
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    CUDA_CHECK(ce);
    *ms = best;
    return 0;
}

/* Device time of `launches` back-to-back replays of x on stream st, after `warm` untimed
 * replays; *ms = the shortest of `tries` such runs (milliseconds for all `launches`). */
static int graph_ms(cudaStream_t st, cudaGraphExec_t x, int warm, int launches, int tries, float *ms,
                    struct bora_err *err)
{
    return graph_ms_alt(st, x, NULL, INT_MAX, warm, launches, tries, ms, err);
}


/* Times `reps` launches of one GEMV kind captured in a graph, rotating over layers so the
 * weights come from memory, not L2; *us = microseconds per launch. */
static int time_gemv(struct engine *e, int kind, int reps, float *us, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const int nl = kind == ENGINE_CUDA_GEMV_HEAD ? 1 : e->model->cfg.n_layers;
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    int rc = 0;
    CUDA_CHECK(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeRelaxed));
    for (int i = 0; i < reps && !rc; i++) {
        struct kern_gemv_args a = gemv_of(e, kind, i % nl);
        /* back-to-back launches may overlap (PDL): each takes its own work counter */
        a.counter = (int *)at(s, s->lay.counters) + s->lay.n_counters - PLAN_TUNE_COUNTERS + i % PLAN_TUNE_COUNTERS;
        rc = kern_gemv(&a, (struct CUstream_st *)s->stream, err);
    }
    cudaError_t ce = cudaStreamEndCapture(s->stream, &g);
    if (rc) {
        if (g)
            cudaGraphDestroy(g);
        return rc;
    }
    CUDA_CHECK(ce);
    ce = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    CUDA_CHECK(ce);
    float best = 0;
    rc = graph_ms(s->stream, x, 1, 1, 2, &best, err);
    cudaGraphExecDestroy(x);
    if (rc)
        return rc;
    *us = best * 1e3f / (float)reps;
    return 0;
}

/* Picks, for each GEMV kind, the launch shape that runs fastest on this model's matrices. */
static int tune_gemv(struct engine *e, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const int nv = kern_gemv_variants();
    for (int k = 0; k < ENGINE_CUDA_GEMV_KINDS; k++) {
        int best_v = 0;
        float best = 1e30f;
        for (int v = 0; v < nv; v++) {
            s->variant[k] = v;
            float us = 0;
            struct bora_err tmp;
            int rc = time_gemv(e, k, k == ENGINE_CUDA_GEMV_HEAD ? 4 : 16, &us, &tmp);
            if (rc == -EINVAL)
                continue;   /* this shape does not apply (e.g. odd rows per warp for SwiGLU) */
            if (rc)
                return bora_errf(err, rc, "tuning GEMV kind %d variant %d: %s", k, v, tmp.msg);
            if (us < best) {
                best = us;
                best_v = v;
            }
        }
        s->variant[k] = best_v;
        s->tuned_us[k] = best;
    }
    return 0;
}

static struct kern_mat mat(struct cuda_impl *s, uint8_t *w, uint8_t *rs, enum bora_dtype dt, int rows,
                           int cols)
{
    /* BF16 weights whose scales are all 1 skip the scale read */
    struct kern_mat k = { dt, w, rows, cols, 1.0f, (const float *)rs };
    (void)s;
    return k;
}

/* Final norm + output head on the decode activation x → logits; then, if sample, the sampler. */
static int enqueue_head(struct engine *e, bool sample, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const struct plan_layout *L = &s->lay;
    struct CUstream_st *st = (struct CUstream_st *)s->stream;
    int rc;
    struct kern_gemv_args g = gemv_of(e, ENGINE_CUDA_GEMV_HEAD, 0);
    if ((rc = kern_gemv(&g, st, err)))
        return rc;
    if (sample && (rc = kern_sample((float *)at(s, L->logits), e->model->cfg.vocab_size,
                                    (struct kern_state *)at(s, L->state), NULL, at(s, L->sample_work), st, err)))
        return rc;
    return 0;
}

/* The attention of layer l. */
static struct kern_attn_args attn_of(struct engine *e, int l)
{
    struct cuda_impl *s = impl_of(e);
    const struct model_config *c = &e->model->cfg;
    const struct plan_layout *L = &s->lay;
    uint8_t *kc = at(s, L->kv + (size_t)l * L->kv_layer_stride);
    int *cnt = (int *)at(s, L->counters) + (size_t)l * (4 + c->n_kv_heads);
    struct kern_rope rope = { (const float *)at(s, L->inv_freq), e->model->rope_attn_factor,
                              c->rope_interleaved, (float)c->qscale_beta, c->qscale_orig_max };
    struct kern_attn_args a = {
        .qkv = (float *)at(s, L->qkv), .k_cache = (uint16_t *)kc,
        .v_cache = (uint16_t *)(kc + L->kv_layer_stride / 2), .kv_fp8 = s->dt.kv_fp8, .out = (float *)at(s, L->att),
        .partial = (float *)at(s, L->partial), .counters = cnt + 4,
        .d_pos = &((struct kern_state *)at(s, L->state))->pos, .max_ctx = e->max_ctx, .n_heads = c->n_heads,
        .n_kv = c->n_kv_heads, .head_dim = c->head_dim, .window = c->sliding_window, .n_split = L->n_split,
        .sm_count = s->dev.sm_count, .rope = rope,
    };
    return a;
}

/* marks (diagnostics, not while capturing): events recorded after the embedding, the layers,
 * the head, the sampler and the copy of the result (engine_cuda_step_profile). */
static int enqueue_step(struct engine *e, struct bora_err *err, cudaEvent_t *marks)
{
    struct cuda_impl *s = impl_of(e);
    const struct model_config *c = &e->model->cfg;
    const struct plan_layout *L = &s->lay;
    const int dim = c->dim, V = c->vocab_size;
    struct CUstream_st *st = (struct CUstream_st *)s->stream;
    float *x = (float *)at(s, L->x), *logits = (float *)at(s, L->logits);
    struct kern_state *state = (struct kern_state *)at(s, L->state);
    int rc;

    struct kern_mat emb = mat(s, at(s, L->emb), at(s, L->emb_rs), s->dt.emb, V, dim);
    if ((rc = kern_embed(x, &emb, state, (int32_t *)at(s, L->tokens), st, err)))
        return rc;
    if (marks)
        CUDA_CHECK(cudaEventRecord(marks[0], s->stream));
    if (s->mega && (rc = kern_decode_layers(&s->mega_args, st, err)))
        return rc;
    for (int l = 0; !s->mega && l < c->n_layers; l++) {
        struct kern_gemv_args g = gemv_of(e, ENGINE_CUDA_GEMV_QKV, l);
        if ((rc = kern_gemv(&g, st, err)))
            return rc;
        struct kern_attn_args a = attn_of(e, l);
        if ((rc = kern_attention(&a, st, err)))
            return rc;
        for (int k = ENGINE_CUDA_GEMV_WO; k <= ENGINE_CUDA_GEMV_DOWN; k++) {
            g = gemv_of(e, k, l);
            if ((rc = kern_gemv(&g, st, err)))
                return rc;
        }
    }
    if (marks)
        CUDA_CHECK(cudaEventRecord(marks[1], s->stream));
    struct kern_gemv_args g = gemv_of(e, ENGINE_CUDA_GEMV_HEAD, 0);
    if ((rc = kern_gemv(&g, st, err)))
        return rc;
    if (marks)
        CUDA_CHECK(cudaEventRecord(marks[2], s->stream));
    /* the sampler also writes the state to s->h_out (pinned): no copy node after it */
    if ((rc = kern_sample(logits, V, state, s->h_out, at(s, L->sample_work), st, err)))
        return rc;
    if (marks)
        CUDA_CHECK(cudaEventRecord(marks[3], s->stream));
    if (marks)
        CUDA_CHECK(cudaEventRecord(marks[4], s->stream));
    return 0;
}

/* Captures the decode step into *dst (replacing what is there) with the persistent kernel
 * (mega) or the per-kernel schedule; s->mega is left as mega. */
static int capture_to(struct engine *e, bool mega, cudaGraphExec_t *dst, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    cudaGraph_t g = NULL;
    if (*dst) {
        cudaGraphExecDestroy(*dst);
        *dst = NULL;
    }
    s->mega = mega;
    CUDA_CHECK(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeRelaxed));
    int rc = enqueue_step(e, err, NULL);
    cudaError_t ce = cudaStreamEndCapture(s->stream, &g);
    if (rc) {
        if (g)   /* the capture ended with a graph: it is not kept */
            cudaGraphDestroy(g);
        return rc;
    }
    CUDA_CHECK(ce);
    ce = cudaGraphInstantiate(dst, g, 0);
    cudaGraphDestroy(g);
    CUDA_CHECK(ce);
    return 0;
}

/* The decode step for the token at position pos. */
static cudaGraphExec_t graph_at(const struct cuda_impl *s, int pos)
{
    return s->graph_alt && pos >= s->alt_from ? s->graph_alt : s->graph;
}

/* Device ms of n decode steps from position pos, each with the step graph of its position. */
static int steps_ms(struct cuda_impl *s, int pos, int n, float *ms, struct bora_err *err)
{
    if (!s->graph_alt || pos >= s->alt_from)
        return graph_ms(s->stream, graph_at(s, pos), 0, n, 1, ms, err);
    return graph_ms_alt(s->stream, s->graph, s->graph_alt, s->alt_from - pos, 0, n, 1, ms, err);
}

/* Uploads the state (pos, fed_end, greedy) and the fed ids. */
static int set_state(struct cuda_impl *s, const int32_t *ids, int n, int pos, struct bora_err *err)
{
    struct kern_state *d = (struct kern_state *)at(s, s->lay.state);
    memset(s->h_in, 0, sizeof *s->h_in);
    s->h_in->pos = pos;
    s->h_in->fed_end = pos + n;
    s->h_in->temperature = s->samp ? s->samp->temperature : 0.0f;
    s->h_in->top_p = s->samp ? s->samp->top_p : 1.0f;
    /* top_k ≥ the vocabulary is no cut, as 0 is (kern_sample) */
    s->h_in->top_k = s->samp && s->samp->top_k <= INT32_MAX ? (int32_t)s->samp->top_k : 0;
    s->h_in->seed = s->samp ? (uint32_t)(s->samp->seed ^ (s->samp->seed >> 32)) : 0;
    if (ids) {
        memcpy(s->h_ids, ids, (size_t)n * sizeof *ids);
        CUDA_CHECK(cudaMemcpyAsync(at(s, s->lay.tokens) + (size_t)pos * 4, s->h_ids, (size_t)n * 4,
                               cudaMemcpyHostToDevice, s->stream));
    }
    CUDA_CHECK(cudaMemcpyAsync(d, s->h_in, sizeof *d, cudaMemcpyHostToDevice, s->stream));
    return 0;
}

static int check_ids(const struct engine *e, const int32_t *ids, int n, int pos, struct bora_err *err)
{
    if (n <= 0 || pos < 0 || pos + n > e->max_ctx)
        return bora_errf(err, -EINVAL, "positions %d..%d outside the %d-token cache", pos, pos + n, e->max_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->model->cfg.vocab_size)
            return bora_errf(err, -EINVAL, "token id %d at prompt index %d outside the vocabulary (%d)", ids[i], i,
                             e->model->cfg.vocab_size);
    return 0;
}

/* Between prefill chunks: the engine's stop callback (engine_set_stop). */
static int prefill_stop(void *ctx)
{
    const struct engine *e = ctx;
    return e->stop ? e->stop(e->stop_ctx) : 0;
}

/* Prompt of n > 1 tokens: ids → chunked prefill → head (→ sampler when sample). Asynchronous. */
static int enqueue_prefill(struct engine *e, const int32_t *ids, int n, int pos, bool sample, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    int32_t *d_ids = (int32_t *)at(s, s->lay.tokens) + pos;
    memcpy(s->h_ids, ids, (size_t)n * sizeof *ids);
    CUDA_CHECK(cudaMemcpyAsync(d_ids, s->h_ids, (size_t)n * 4, cudaMemcpyHostToDevice, s->stream));
    /* the state as after a decode step at the last prompt position: the sampler draws for it */
    int rc = set_state(s, NULL, 1, pos + n - 1, err);
    if (rc)
        return rc;
    if ((rc = prefill_run_tokens(s->pf, d_ids, n, pos, (struct CUstream_st *)s->stream, prefill_stop, e, err)))
        return rc;
    return enqueue_head(e, sample, err);
}

/* engine_cuda_fault_next's error: a real CUDA API failure (an invalid-argument copy) after the
 * forward's work is queued, as a device or driver error would surface. */
static int fault_point(struct cuda_impl *s, struct bora_err *err)
{
    if (!s->fault_next)
        return 0;
    s->fault_next = false;
    CUDA_CHECK(cudaMemcpyAsync(NULL, s->h_ids, 4, cudaMemcpyHostToDevice, s->stream));
    return 0;
}

static int run_prefill(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    struct cuda_impl *s = impl_of(e);
    struct bora_err *err = &s->last;
    const size_t V = (size_t)e->model->cfg.vocab_size;
    int rc = enqueue_prefill(e, ids, n, pos, false, err);
    if (rc || (rc = fault_point(s, err)))
        return rc;
    if (logits)
        CUDA_CHECK(cudaMemcpyAsync(s->h_logits, at(s, s->lay.logits), V * 4, cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    if (logits)
        memcpy(logits, s->h_logits, V * 4);
    return 0;
}

/* A failed call before (a non-sticky error: the engine stays usable) leaves its code as the
 * runtime's "last error", which the next launch check would report as its own: forget it. */
static void forget_last_error(void)
{
    (void)cudaGetLastError();
}

static int run_tokens(struct engine *e, const int32_t *ids, int n, int pos, float *logits, bool all)
{
    struct cuda_impl *s = impl_of(e);
    struct bora_err *err = &s->last;
    const size_t V = (size_t)e->model->cfg.vocab_size;
    err->msg[0] = 0;
    forget_last_error();
    int rc = check_ids(e, ids, n, pos, err);
    if (rc)
        return rc;
    if (n > 1 && !all && s->pf)
        return run_prefill(e, ids, n, pos, logits);
    rc = set_state(s, ids, n, pos, err);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        CUDA_CHECK(cudaGraphLaunch(graph_at(s, pos + i), s->stream));
        if (logits && (all || i == n - 1)) {
            CUDA_CHECK(cudaMemcpyAsync(s->h_logits, at(s, s->lay.logits), V * 4, cudaMemcpyDeviceToHost,
                                   s->stream));
            CUDA_CHECK(cudaStreamSynchronize(s->stream));
            memcpy(logits + (all ? (size_t)i * V : 0), s->h_logits, V * 4);
        }
    }
    if ((rc = fault_point(s, err)))
        return rc;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    if (s->h_out->error == KERN_STATE_BAD_ID)   /* non-finite logits are the caller's to see here */
        return bora_errf(err, -EINVAL, "a token id outside the vocabulary reached the GPU");
    return 0;
}

static int cuda_forward(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    return run_tokens(e, ids, n, pos, logits, false);
}

/* The tokens, then the next id from the graph's own sampler (kern_sample) under sp: the prefill
 * path samples after its head, the step graph after every position (the last one counts). */
static int cuda_forward_sample(struct engine *e, const int32_t *ids, int n, int pos, const struct sampler_params *sp,
                               int32_t *id)
{
    struct cuda_impl *s = impl_of(e);
    struct bora_err *err = &s->last;
    err->msg[0] = 0;
    forget_last_error();
    int rc = check_ids(e, ids, n, pos, err);
    if (rc)
        return rc;
    s->samp = sp;   /* read by set_state only, in this call */
    cudaError_t ce = cudaSuccess;
    if (n > 1 && s->pf) {
        rc = enqueue_prefill(e, ids, n, pos, true, err);
        if (!rc && (ce = cudaMemcpyAsync(s->h_out, at(s, s->lay.state), sizeof *s->h_out, cudaMemcpyDeviceToHost,
                                         s->stream)) != cudaSuccess)
            rc = bora_errf(err, -EIO, "copy of the sampled id: %s", cudaGetErrorString(ce));
    } else if (!(rc = set_state(s, ids, n, pos, err))) {
        for (int i = 0; !rc && i < n; i++)
            if ((ce = cudaGraphLaunch(graph_at(s, pos + i), s->stream)) != cudaSuccess)
                rc = bora_errf(err, -EIO, "decode graph at position %d: %s", pos + i, cudaGetErrorString(ce));
    }
    s->samp = NULL;
    if (rc)
        return rc;
    if ((rc = fault_point(s, err)))
        return rc;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));   /* the sampler wrote s->h_out (pinned mirror) */
    if (s->h_out->error == KERN_STATE_BAD_ID)
        return bora_errf(err, -EINVAL, "a token id outside the vocabulary reached the GPU");
    if (s->h_out->error == KERN_STATE_NONFINITE)
        return bora_errf(err, -EDOM, "%s at position %d", engine_error_text(e, -EDOM), s->h_out->pos - 1);
    *id = s->h_out->sampled;
    return 0;
}

static int cuda_forward_all(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    return run_tokens(e, ids, n, pos, logits, true);
}

static void cuda_reset(struct engine *e)
{
    (void)e;   /* positions restart at 0; cache entries are written before they are read */
}

/* Layer `layer`'s K and V rows at pos (bf16 or e4m3 on the GPU) as floats. */
static int cuda_kv_read(struct engine *e, int layer, int pos, float *k, float *v)
{
    struct cuda_impl *s = impl_of(e);
    struct bora_err *err = &s->last;
    const struct model_config *c = &e->model->cfg;
    const int hd = c->head_dim;
    if (layer < 0 || layer >= c->n_layers || pos < 0 || pos >= e->max_ctx)
        return bora_errf(err, -EINVAL, "kv_read: layer %d position %d outside %d layers × %d positions", layer, pos,
                         c->n_layers, e->max_ctx);
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    const uint8_t *kc = at(s, s->lay.kv + (size_t)layer * s->lay.kv_layer_stride);
    const uint8_t *vc = kc + s->lay.kv_layer_stride / 2;
    uint16_t row[512];
    const uint8_t *row8 = (const uint8_t *)row;
    if (hd > 512)
        return bora_errf(err, -EINVAL, "kv_read: head_dim %d", hd);
    const size_t eb = s->dt.kv_fp8 ? 1 : 2;
    for (int h = 0; h < c->n_kv_heads; h++) {
        size_t off = ((size_t)h * e->max_ctx + pos) * hd * eb;
        for (int kv = 0; kv < 2; kv++) {
            float *out = kv ? v : k;
            CUDA_CHECK(cudaMemcpy(row, (kv ? vc : kc) + off, (size_t)hd * eb, cudaMemcpyDeviceToHost));
            for (int d = 0; d < hd; d++)
                out[h * hd + d] = eb == 1 ? bora_e4m3_to_f32(row8[d]) : bora_bf16_to_f32(row[d]);
        }
    }
    return 0;
}

static void cuda_close(struct engine *e)
{
    struct cuda_impl *s = impl_of(e);
    if (!s)
        return;
    prefill_run_close(s->pf);
    if (s->graph)
        cudaGraphExecDestroy(s->graph);
    if (s->graph_alt)
        cudaGraphExecDestroy(s->graph_alt);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    kern_free(s->arena);
    kern_free(s->d_sync);
    kern_host_free(s->h_in);
    kern_host_free(s->h_out);
    kern_host_free(s->h_ids);
    kern_host_free(s->h_logits);
    free(s);
    e->impl = NULL;
}

static int cuda_memory(const struct engine *e, struct engine_mem *out)
{
    const struct cuda_impl *s = e->impl;
    size_t fr = 0, tot = 0;
    struct bora_err err = { "" };
    if (kern_device_mem(s->dev.index, &fr, &tot, &err))
        return -EIO;
    out->weights = s->lay.weight_bytes, out->kv_cache = s->lay.kv_bytes, out->activations = s->lay.act_bytes;
    out->workspace = s->pf_bytes;
    out->device_used = tot - fr, out->device_total = tot;
    return 0;
}

static const struct engine_ops cuda_ops = {
    .name = "cuda",
    .forward = cuda_forward,
    .forward_all = cuda_forward_all,
    .reset = cuda_reset,
    .close = cuda_close,
    .kv_read = cuda_kv_read,
    .forward_sample = cuda_forward_sample,
    .last_error = engine_cuda_last_error,
    .memory = cuda_memory,
};

static int pick_dtypes(const struct model *m, bool kv_fp8, struct plan_dtypes *dt)
{
    dt->linear = gpu_dtype(m->layers[0].wq.dtype);
    dt->emb = gpu_dtype(m->tok_emb.dtype);
    dt->out = m->cfg.tied ? dt->emb : gpu_dtype(m->output.dtype);
    dt->kv_fp8 = kv_fp8;
    return 0;
}

static int open_prefill(struct engine *e, int chunk, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    struct prefill_model pm = { &e->model->cfg, &s->lay, &s->dt, s->arena, e->max_ctx, e->model->rope_attn_factor };
    prefill_run_close(s->pf);
    s->pf = NULL;
    s->pf_bytes = 0;
    int rc = prefill_run_open(&s->pf, &pm, chunk, err);
    if (!rc)
        s->pf_bytes = prefill_run_workspace_bytes(s->pf) + KERN_GEMM_WORKSPACE;
    const char *tune = getenv("BORA_PREFILL_TUNE");   /* "0": each bucket timed at its first prompt (A/B) */
    if (!rc && !(tune && !strcmp(tune, "0")) &&
        (rc = prefill_run_tune(s->pf, (struct CUstream_st *)s->stream, s->tune_stop, s->tune_ctx, err))) {
        prefill_run_close(s->pf);
        s->pf = NULL;
    }
    return rc;
}

/* Device checks, the arena, pinned host buffers and the stream; no weights yet. Closes the
 * engine (e->ops NULL) on failure. */
static int open_arena(struct engine *e, struct bora_err *err)
{
    const struct model *m = e->model;
    const struct model_config *c = &m->cfg;
    struct kern_device dev;
    int rc = kern_device_query(&dev, err);
    if (rc)
        return rc;
    if (dev.cc_major * 10 + dev.cc_minor < PLAN_CUDA_CC_MIN)
        return bora_errf(err, -ENODEV,
                         "GPU %s has compute capability %d.%d; bora's CUDA backend needs %d.%d (Hopper: H100, H200); "
                         "use the CPU backend",
                         dev.name, dev.cc_major, dev.cc_minor, PLAN_CUDA_CC_MIN / 10, PLAN_CUDA_CC_MIN % 10);
    struct cuda_impl *s = calloc(1, sizeof *s);
    if (!s)
        return bora_errf(err, -ENOMEM, "out of memory");
    e->impl = s;
    e->ops = &cuda_ops;
    s->dev = dev;
    pick_dtypes(m, e->kv == ENGINE_KV_FP8, &s->dt);
    if ((rc = plan_layout_compute(c, &s->dt, e->max_ctx, &s->lay, err)) ||
        (rc = plan_check_fit(&s->lay, e->max_ctx, dev.free_bytes, err)))
        goto fail;
    if ((rc = kern_malloc((void **)&s->arena, s->lay.total, err)))
        goto fail;
    if ((rc = kern_host_alloc((void **)&s->h_in, sizeof *s->h_in, err)) ||
        (rc = kern_host_alloc((void **)&s->h_out, sizeof *s->h_out, err)) ||
        (rc = kern_host_alloc((void **)&s->h_ids, (size_t)e->max_ctx * 4, err)) ||
        (rc = kern_host_alloc((void **)&s->h_logits, (size_t)c->vocab_size * 4, err)))
        goto fail;
    memset(s->h_out, 0, sizeof *s->h_out);
    if (cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking) != cudaSuccess) {
        rc = bora_errf(err, -EIO, "cudaStreamCreateWithFlags failed (%s:%d)", __FILE__, __LINE__);
        goto fail;
    }
    return 0;
fail:
    cuda_close(e);
    e->ops = NULL;
    return rc;
}

/* The persistent decode kernel's arguments and counters; s->mega when it takes this model and
 * GPU (choose_step then decides whether it runs). BORA_MEGA_CB / _NS / _FLAGS / _DEBUG are
 * diagnostics for kernel work (docs/PERFORMANCE_GPU.md), never needed in service. */
static int setup_mega(struct engine *e, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const struct model_config *c = &e->model->cfg;
    const struct plan_layout *L = &s->lay;
    struct kern_attn_args at0 = attn_of(e, 0);
    struct kern_mega_args *a = &s->mega_args;
    *a = (struct kern_mega_args){
        .dtype = s->dt.linear, .layers = at(s, L->layers), .layer_stride = L->layer_stride,
        .l_qkv = L->l_qkv, .l_qkv_rs = L->l_qkv_rs, .l_wo = L->l_wo, .l_wo_rs = L->l_wo_rs,
        .l_gu = L->l_gu, .l_gu_rs = L->l_gu_rs, .l_down = L->l_down, .l_down_rs = L->l_down_rs,
        .l_attn_norm = L->l_attn_norm, .l_ffn_norm = L->l_ffn_norm,
        .kv = at(s, L->kv), .kv_layer_stride = L->kv_layer_stride,
        .x = (float *)at(s, L->x), .qkv = (float *)at(s, L->qkv), .att = (float *)at(s, L->att),
        .h = (float *)at(s, L->h), .partial = (float *)at(s, L->partial),
        .d_pos = at0.d_pos, .n_layers = c->n_layers, .dim = c->dim, .hidden = c->hidden_dim,
        .n_heads = c->n_heads, .n_kv = c->n_kv_heads, .head_dim = c->head_dim, .max_ctx = e->max_ctx,
        .window = c->sliding_window, .n_split = L->n_split, .eps = c->norm_eps, .rope = at0.rope,
        .sm_count = s->dev.sm_count, .smem_optin = s->dev.smem_optin,
        /* tuning experiments (A/B); a value that is not a number in range is reported and ignored */
        .cb_max = (int)bora_env_int("BORA_MEGA_CB", 0, 0, 1 << 20),
        .ns_max = (int)bora_env_int("BORA_MEGA_NS", 0, 0, 1 << 10),
        .blocks_max = (int)bora_env_int("BORA_MEGA_BLOCKS", 0, 0, 1 << 16),
        .flags = (int)bora_env_int("BORA_MEGA_FLAGS", 0, 0, INT_MAX),
        .ahead = (int)bora_env_int("BORA_MEGA_AHEAD", KERN_MEGA_AHEAD_AUTO, INT_MIN, 1 << 16),   /* < 0: never held */
        .debug = (int)bora_env_int("BORA_MEGA_DEBUG", 0, 0, INT_MAX),   /* diagnostics: wrong results */
        .kv_fp8 = s->dt.kv_fp8,
    };
    if (a->debug && !kern_mega_diag())
        return bora_errf(err, -EINVAL, "BORA_MEGA_DEBUG=%d: the persistent decode kernel was built without its "
                         "diagnostic switches (build with make MEGA_DIAG=1, or unset it)", a->debug);
    s->mega = false;
    s->mega_desc[0] = 0;
    kern_free(s->d_sync);
    s->d_sync = NULL;
    struct bora_err why = { 0 };
    int rc = kern_mega_check(a, &why);
    if (rc == -ENOTSUP) {
        snprintf(s->mega_why, sizeof s->mega_why, "%s", why.msg);
        return 0;
    }
    if (rc)
        return bora_errf(err, rc, "%s", why.msg);
    if ((rc = kern_malloc((void **)&s->d_sync, kern_mega_sync_ints(c->n_layers, c->n_kv_heads, c->dim, c->hidden_dim, c->n_heads, c->head_dim) * sizeof(int), err)))
        return rc;
    a->sync = s->d_sync;
    s->mega = true;
    s->mega_why[0] = 0;
    if (kern_mega_describe(a, s->mega_desc, sizeof s->mega_desc, &why))
        s->mega_desc[0] = 0;
    return 0;
}

/* ms per decode step of graph x: a warm-up replay, then n timed, from position pos. */
static int time_step(struct engine *e, cudaGraphExec_t x, int pos, int n, float *ms, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    int32_t tok = 1;
    int rc = set_state(s, &tok, 1, pos, err);
    if (rc)
        return rc;
    if ((rc = graph_ms(s->stream, x, 1, n, 1, ms, err)))
        return rc;
    *ms /= (float)n;
    return 0;
}

/* Captures the decode step. With the persistent kernel available, both schedules are captured
 * and timed on this model and GPU, at the first position and near the end of the cache (the
 * persistent kernel gains most when the context is short; attention grows with it): the faster
 * at each end is kept, and where they differ the engine switches at the position where the
 * timings cross (linear in the position between the two). BORA_DECODE=kernels or =persistent
 * asks for one; BORA_DECODE_SWITCH=N forces persistent below position N and the per-kernel
 * step from N on (tests). */
static int choose_step(struct engine *e, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const char *want = getenv("BORA_DECODE");
    const long sw = bora_env_int("BORA_DECODE_SWITCH", 0, 0, INT_MAX);
    if (want && *want && strcmp(want, "kernels") && strcmp(want, "persistent")) {
        bora_log(BORA_LOG_WARN, "BORA_DECODE=\"%s\" is neither \"kernels\" nor \"persistent\"; choosing by timing", want);
        want = NULL;
    }
    const bool avail = s->mega;
    int rc;
    if (s->graph_alt) {
        cudaGraphExecDestroy(s->graph_alt);
        s->graph_alt = NULL;
    }
    s->alt_from = INT_MAX;
    if (want && strcmp(want, "kernels") == 0) {
        snprintf(s->mega_why, sizeof s->mega_why, "BORA_DECODE=kernels");
        return capture_to(e, false, &s->graph, err);
    }
    if (!avail || (want && strcmp(want, "persistent") == 0))
        return capture_to(e, avail, &s->graph, err);
    if (sw > 0) {
        s->alt_from = (int)sw;
        snprintf(s->mega_why, sizeof s->mega_why, "BORA_DECODE_SWITCH=%d", s->alt_from);
        if ((rc = capture_to(e, false, &s->graph_alt, err)))
            return rc;
        return capture_to(e, true, &s->graph, err);
    }
    const int n = e->max_ctx - 2 < 4 ? e->max_ctx - 2 : 4;
    if (n < 1)
        return capture_to(e, true, &s->graph, err);
    const int lo = 0, hi = e->max_ctx - n - 1;
    float tp0 = 0, tk0 = 0, tp1 = 0, tk1 = 0;
    cudaGraphExec_t gp = NULL, gk = NULL;
    struct bora_err why = { "" };
    if ((rc = capture_to(e, true, &gp, &why)) || (rc = time_step(e, gp, lo, n, &tp0, &why)) ||
        (hi > 64 && (rc = time_step(e, gp, hi, n, &tp1, &why)))) {
        /* e.g. a cooperative launch refused on a GPU shared with other work: keep serving. The
         * refused launch stays the runtime's last error until read: clear it, or the next
         * launch's check would report it again. */
        (void)cudaGetLastError();
        if (gp)
            cudaGraphExecDestroy(gp);
        snprintf(s->mega_why, sizeof s->mega_why, "the persistent kernel failed at open: %s", why.msg);
        bora_log(BORA_LOG_WARN, "cuda engine: %s; using the per-kernel decode step", s->mega_why);
        return capture_to(e, false, &s->graph, err);
    }
    if ((rc = capture_to(e, false, &gk, err)) || (rc = time_step(e, gk, lo, n, &tk0, err)) ||
        (hi > 64 && (rc = time_step(e, gk, hi, n, &tk1, err)))) {
        cudaGraphExecDestroy(gp);
        if (gk)
            cudaGraphExecDestroy(gk);
        return rc;
    }
    if (hi <= 64) {
        tp1 = tp0;
        tk1 = tk0;
    }
    if (s->graph)
        cudaGraphExecDestroy(s->graph);
    bool p_lo;
    const int from = plan_switch_position(tp0, tk0, tp1, tk1, lo, hi, &p_lo);
    s->graph = p_lo ? gp : gk;
    s->mega = p_lo;
    if (from == INT_MAX) {
        cudaGraphExecDestroy(p_lo ? gk : gp);
        snprintf(s->mega_why, sizeof s->mega_why,
                 "timed %.3f / %.3f ms per step at positions %d / %d vs %.3f / %.3f ms for the %s", p_lo ? tp0 : tk0,
                 p_lo ? tp1 : tk1, lo, hi, p_lo ? tk0 : tp0, p_lo ? tk1 : tp1,
                 p_lo ? "per-kernel step" : "persistent kernel");
        return 0;
    }
    s->graph_alt = p_lo ? gk : gp;
    s->alt_from = from;
    snprintf(s->mega_why, sizeof s->mega_why,
             "%s below position %d, then %s (timed persistent %.3f / %.3f ms, per-kernel %.3f / %.3f ms at "
             "positions %d / %d)", p_lo ? "persistent" : "per-kernel", s->alt_from, p_lo ? "per-kernel" : "persistent",
             tp0, tp1, tk0, tk1, lo, hi);
    return 0;
}

/* Activations zeroed, GEMVs tuned, the step captured, the prefill workspace. Needs the arena,
 * not the weights' values (tuning only times launches). Leaves the engine open on failure. */
static int tail_work(struct engine *e, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    int rc;
    if ((rc = kern_memset(at(s, s->lay.x), 0, s->lay.counters - s->lay.x, err)) ||
        (rc = kern_memset(at(s, s->lay.counters), 0, (size_t)s->lay.n_counters * 4, err)) ||
        (rc = kern_memset(at(s, s->lay.state), 0, sizeof(struct kern_state), err)) ||
        (rc = kern_memset(at(s, s->lay.sample_work), 0, KERN_SAMPLE_WORK_BYTES, err)) ||
        (rc = kern_memset(at(s, s->lay.tokens), 0, (size_t)e->max_ctx * 4, err)) ||
        (rc = kern_sync(err)) || (rc = setup_mega(e, err)) || (rc = tune_gemv(e, err)) ||
        (rc = choose_step(e, err)))
        return rc;
    /* a GPU too full for the prefill workspace takes smaller chunks, at worst none (prompts
     * then run one decode step per token); `bora plan` predicts this with plan_prefill_fit */
    for (int chunk = PREFILL_CHUNK_DEFAULT; chunk; chunk = plan_prefill_next(chunk)) {
        rc = open_prefill(e, chunk, err);
        if (rc != -ENOMEM)
            break;
    }
    if (rc == -ENOMEM) {
        bora_log(BORA_LOG_WARN, "cuda engine: no memory for a prefill workspace; prompts run token by token: %s", err->msg);
        err->msg[0] = 0;
        rc = 0;
    }
    return rc;
}

/* After the weights are in the arena: tail_work; closes the engine on failure. */
static int open_tail(struct engine *e, struct bora_err *err)
{
    int rc = tail_work(e, err);
    if (rc) {
        cuda_close(e);
        e->ops = NULL;
    }
    return rc;
}

static int open_common(struct engine *e, bool synthetic, uint64_t seed, struct bora_err *err)
{
    int rc = open_arena(e, err);
    if (rc)
        return rc;
    struct cuda_impl *s = impl_of(e);
    rc = synthetic ? fill_synthetic(s, e->model, seed, err) : upload_model(e, s, e->model, err);
    if (rc) {
        cuda_close(e);
        e->ops = NULL;
        return rc;
    }
    return open_tail(e, err);
}

int engine_cuda_open(struct engine *e, struct bora_err *err)
{
    return open_common(e, false, 0, err);
}

int engine_cuda_open_deferred(struct engine *e, struct bora_err *err)
{
    return open_arena(e, err);
}

/* One matrix's destination; -ENOTSUP when its dtype is not the arena's (needs conversion). */
static int wdst(struct model_direct_dst *d, const struct wtensor *w, enum bora_dtype want, uint8_t *dst,
                size_t pitch, int group)
{
    if (w->dtype != want || !w->data)
        return -ENOTSUP;
    *d = (struct model_direct_dst){ .w = w, .dst = dst, .row_bytes = (uint64_t)w->cols * bora_dtype_size(want),
                                    .pitch = pitch, .group = group };
    return 0;
}

int engine_cuda_weight_dsts(struct engine *e, struct model_direct_dst *out, int cap, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const struct model *m = e->model;
    const struct model_config *c = &m->cfg;
    const enum bora_dtype dt = s->dt.linear;
    const size_t eb = bora_dtype_size(dt), dim = (size_t)c->dim;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    const int need = 7 * c->n_layers + 2;
    if (cap < need)
        return bora_errf(err, -EINVAL, "weight destinations: room for %d, the model has %d matrices", cap, need);
    int n = 0, rc = wdst(&out[n++], &m->tok_emb, s->dt.emb, at(s, s->lay.emb), dim * bora_dtype_size(s->dt.emb), 0);
    for (int l = 0; !rc && l < c->n_layers; l++) {
        const struct layer_weights *L = &m->layers[l];
        uint8_t *qkv = layer_at(s, l, s->lay.l_qkv), *gu = layer_at(s, l, s->lay.l_gu);
        if ((rc = wdst(&out[n++], &L->wq, dt, qkv, dim * eb, 1 + l)) ||
            (rc = wdst(&out[n++], &L->wk, dt, qkv + q_dim * dim * eb, dim * eb, 1 + l)) ||
            (rc = wdst(&out[n++], &L->wv, dt, qkv + (q_dim + kv_dim) * dim * eb, dim * eb, 1 + l)) ||
            (rc = wdst(&out[n++], &L->wo, dt, layer_at(s, l, s->lay.l_wo), q_dim * eb, 1 + l)) ||
            (rc = wdst(&out[n++], &L->w_gate, dt, gu, 2 * dim * eb, 1 + l)) ||
            (rc = wdst(&out[n++], &L->w_up, dt, gu + dim * eb, 2 * dim * eb, 1 + l)) ||
            (rc = wdst(&out[n++], &L->w_down, dt, layer_at(s, l, s->lay.l_down), (size_t)c->hidden_dim * eb, 1 + l)))
            break;
    }
    if (!rc && !c->tied)
        rc = wdst(&out[n++], &m->output, s->dt.out, at(s, s->lay.out), dim * bora_dtype_size(s->dt.out),
                  c->n_layers + 1);
    if (rc)
        return bora_errf(err, rc, "a matrix is stored as another dtype than the GPU holds it: load through the host");
    return n;
}

/* Everything but the matrices: row scales, norms, RoPE table (host-side values, small). */
static int upload_small(struct cuda_impl *s, const struct model *m, struct bora_err *err)
{
    const struct model_config *c = &m->cfg;
    const size_t V = (size_t)c->vocab_size, dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    const size_t q_dim = (size_t)c->n_heads * c->head_dim, kv_dim = (size_t)c->n_kv_heads * c->head_dim;
    size_t max_rows = V > 2 * hid ? V : 2 * hid;
    if (q_dim + 2 * kv_dim > max_rows)
        max_rows = q_dim + 2 * kv_dim;
    float *h = malloc(max_rows * sizeof *h);
    if (!h)
        return bora_errf(err, -ENOMEM, "no host memory for row scales");
    fill_rs(&m->tok_emb, h, 1);
    int rc = upload_f32(at(s, s->lay.emb_rs), h, V, err);
    for (int l = 0; !rc && l < c->n_layers; l++) {
        const struct layer_weights *L = &m->layers[l];
        fill_rs(&L->wq, h, 1);
        fill_rs(&L->wk, h + q_dim, 1);
        fill_rs(&L->wv, h + q_dim + kv_dim, 1);
        if ((rc = upload_f32(layer_at(s, l, s->lay.l_qkv_rs), h, q_dim + 2 * kv_dim, err)))
            break;
        fill_rs(&L->wo, h, 1);
        if ((rc = upload_f32(layer_at(s, l, s->lay.l_wo_rs), h, dim, err)))
            break;
        fill_rs(&L->w_gate, h, 2);
        fill_rs(&L->w_up, h + 1, 2);
        if ((rc = upload_f32(layer_at(s, l, s->lay.l_gu_rs), h, 2 * hid, err)))
            break;
        fill_rs(&L->w_down, h, 1);
        if ((rc = upload_f32(layer_at(s, l, s->lay.l_down_rs), h, dim, err)) ||
            (rc = upload_norm(layer_at(s, l, s->lay.l_attn_norm), &L->attn_norm, err)) ||
            (rc = upload_norm(layer_at(s, l, s->lay.l_ffn_norm), &L->ffn_norm, err)))
            break;
    }
    if (!rc && !c->tied) {
        fill_rs(&m->output, h, 1);
        rc = upload_f32(at(s, s->lay.out_rs), h, V, err);
    }
    free(h);
    if (!rc)
        rc = upload_norm(at(s, s->lay.norm), &m->norm, err);
    if (!rc)
        rc = upload_f32(at(s, s->lay.inv_freq), m->rope_inv_freq, (size_t)c->head_dim / 2, err);
    return rc;
}

int engine_cuda_prepare(struct engine *e, int (*stop)(void *ctx), void *stop_ctx, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    int rc = upload_small(s, e->model, err);
    s->tune_stop = stop, s->tune_ctx = stop_ctx;
    if (!rc)
        rc = tail_work(e, err);
    s->tune_stop = NULL, s->tune_ctx = NULL;
    s->prepared = rc == 0;
    return rc;
}

int engine_cuda_open_finish(struct engine *e, bool streamed, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    if (streamed && s->prepared) {
        int rc = kern_sync(err);   /* the tuning's launches; the copies finished before */
        if (rc) {
            cuda_close(e);
            e->ops = NULL;
        }
        return rc;
    }
    int rc = streamed ? upload_small(s, e->model, err) : upload_model(e, s, e->model, err);
    if (rc) {
        cuda_close(e);
        e->ops = NULL;
        return rc;
    }
    return open_tail(e, err);
}

int engine_cuda_open_synthetic(struct engine *e, uint64_t seed, struct bora_err *err)
{
    return open_common(e, true, seed, err);
}

int engine_cuda_decode_timed(struct engine *e, int32_t first, int pos, int n, double *ms, int32_t *last,
                             struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    if (n <= 0 || pos < 0 || pos + n > e->max_ctx)
        return bora_errf(err, -EINVAL, "decode: positions %d..%d outside the %d-token cache", pos, pos + n,
                         e->max_ctx);
    int rc = set_state(s, &first, 1, pos, err);
    if (rc)
        return rc;
    float t = 0;
    if ((rc = steps_ms(s, pos, n, &t, err)))
        return rc;
    *ms = t;
    *last = s->h_out->sampled;
    return 0;
}

int engine_cuda_step_profile(struct engine *e, int pos, int n, FILE *f, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    if (n <= 0 || pos < 0 || pos + n > e->max_ctx)
        return bora_errf(err, -EINVAL, "profile: positions %d..%d outside the %d-token cache", pos, pos + n,
                         e->max_ctx);
    enum { K = 6 };   /* start, then after: embedding, layers, head, sampler, copy */
    cudaEvent_t *ev = calloc((size_t)n * K, sizeof *ev);
    if (!ev)
        return bora_errf(err, -ENOMEM, "profile: out of memory");
    int rc = 0, made = 0;
    for (; made < n * K && !rc; made++)
        if (cudaEventCreate(&ev[made]) != cudaSuccess)
            rc = bora_errf(err, -EIO, "profile: %s", cudaGetErrorString(cudaGetLastError()));
    const int32_t first = 1;
    if (!rc)
        rc = set_state(s, &first, 1, pos, err);
    const bool mega = s->mega;
    if (!rc) {
        s->mega = engine_cuda_decode_path(e, pos, NULL)[0] == 'p';
        for (int i = 0; i < n && !rc; i++) {   /* enqueued back to back, as the graph replays are */
            if (cudaEventRecord(ev[i * K], s->stream) != cudaSuccess)
                rc = bora_errf(err, -EIO, "profile: %s", cudaGetErrorString(cudaGetLastError()));
            else
                rc = enqueue_step(e, err, ev + i * K + 1);
        }
        s->mega = mega;
    }
    if (!rc && cudaStreamSynchronize(s->stream) != cudaSuccess)
        rc = bora_errf(err, -EIO, "profile: %s", cudaGetErrorString(cudaGetLastError()));
    if (!rc) {
        double part[K - 1] = { 0 }, step = 0;
        float ms;
        for (int i = 1; i < n; i++) {   /* the first step pays the launches' warm-up */
            for (int k = 0; k < K - 1; k++)
                if (cudaEventElapsedTime(&ms, ev[i * K + k], ev[i * K + k + 1]) == cudaSuccess)
                    part[k] += ms;
            if (i + 1 < n && cudaEventElapsedTime(&ms, ev[i * K], ev[(i + 1) * K]) == cudaSuccess)
                step += ms;
        }
        const double d = n - 1;
        fprintf(f, "step profile (%d steps from position %d, launched without a graph, µs per step): embedding %.1f, "
                   "layers (%s) %.1f, head %.1f, sampler %.1f, copy %.1f; start to start %.1f\n", n - 1, pos,
                part[0] * 1e3 / d, mega ? "persistent" : "per-kernel", part[1] * 1e3 / d, part[2] * 1e3 / d,
                part[3] * 1e3 / d, part[4] * 1e3 / d, n > 2 ? step * 1e3 / (n - 2) : 0.);
    }
    for (int i = 0; i < made; i++)
        cudaEventDestroy(ev[i]);
    free(ev);
    return rc;
}

const struct plan_layout *engine_cuda_layout(const struct engine *e)
{
    return &impl_of(e)->lay;
}

/* Pearson correlation of x and y over n values (0 when either is constant). */
static double trace_corr(const double *x, const double *y, int n)
{
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        mx += x[i] / n;
        my += y[i] / n;
    }
    for (int i = 0; i < n; i++) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : 0;
}

/* Is a phase's skew the same blocks (SMs) in every layer? For gate/up and down: each block's
 * stream time (from its input loaded to its end) and its lateness at the end (against the
 * layer's first block), averaged over the even and over the odd layers; the spread of the
 * blocks' means, the correlation of the two halves (near 1: the same SMs are slow in every
 * layer) and the slowest blocks with their SMs. h: the trace (n slots a block and layer). */
static void trace_blocks(FILE *f, const unsigned long long *h, int nl, int nb, int n, int sm_slot)
{
    /* decode_mega.cu TR_GU_LOAD, TR_GU and TR_DOWN_LOAD, TR_DOWN: each phase's stream */
    static const struct { const char *name; int from, to; } ph[2] = { { "gate/up", 10, 11 }, { "down", 13, 14 } };
    double *v = calloc((size_t)nb * 4, sizeof *v);
    int *ord = malloc(sizeof *ord * nb);
    if (!v || !ord) {
        free(v);
        free(ord);
        return;
    }
    for (int k = 0; k < 2; k++) {
        double *dur[2] = { v, v + nb }, *late[2] = { v + 2 * nb, v + 3 * nb };
        memset(v, 0, sizeof *v * nb * 4);
        int cnt[2] = { 0, 0 };
        for (int l = 0; l < nl; l++) {
            unsigned long long first = ~0ull;
            for (int b = 0; b < nb; b++) {
                const unsigned long long end = h[((size_t)b * nl + l) * n + ph[k].to];
                first = end < first ? end : first;
            }
            for (int b = 0; b < nb; b++) {
                const unsigned long long *t = h + ((size_t)b * nl + l) * n;
                dur[l & 1][b] += (double)(t[ph[k].to] - t[ph[k].from]) / 1e3;
                late[l & 1][b] += (double)(t[ph[k].to] - first) / 1e3;
            }
            cnt[l & 1]++;
        }
        double lo = 1e30, hi = 0;
        for (int b = 0; b < nb; b++) {
            for (int i = 0; i < 2; i++) {
                dur[i][b] /= cnt[i] ? cnt[i] : 1;
                late[i][b] /= cnt[i] ? cnt[i] : 1;
            }
            const double m = (dur[0][b] + dur[1][b]) / 2;
            lo = m < lo ? m : lo;
            hi = m > hi ? m : hi;
            ord[b] = b;
        }
        for (int i = 1; i < nb; i++)   /* latest first, by mean lateness */
            for (int j = i; j > 0 && late[0][ord[j]] + late[1][ord[j]] > late[0][ord[j - 1]] + late[1][ord[j - 1]]; j--) {
                const int t = ord[j];
                ord[j] = ord[j - 1];
                ord[j - 1] = t;
            }
        fprintf(f, "  %s by block: stream time %.2f-%.2f us (block means), even/odd layers r = %.2f; lateness at "
                   "its end r = %.2f; latest (SM: us):", ph[k].name, lo, hi, trace_corr(dur[0], dur[1], nb),
                trace_corr(late[0], late[1], nb));
        for (int i = 0; i < 6 && i < nb; i++)
            fprintf(f, " %llu: %.2f", h[((size_t)ord[i] * nl) * n + sm_slot], (late[0][ord[i]] + late[1][ord[i]]) / 2);
        fprintf(f, "\n");
    }
    free(v);
    free(ord);
}

int engine_cuda_mega_trace(struct engine *e, int pos, FILE *f, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const int nl = e->model->cfg.n_layers, nb = kern_mega_blocks(&s->mega_args);
    enum { N = 29, P = 15, A = 19, SM = 28 };   /* decode_mega.cu MEGA_TR_N, TR_PROD, TR_ATT_ITEM, TR_SMID */
    if (!s->d_sync)
        return bora_errf(err, -ENOTSUP, "trace: the persistent decode kernel is not available");
    if (!kern_mega_diag())
        return bora_errf(err, -ENOTSUP, "trace: the persistent decode kernel was built without its trace "
                         "(build with make MEGA_DIAG=1)");
    if (kern_mega_trace_slots(nl, nb) != (size_t)nl * nb * N)
        return bora_errf(err, -EINVAL, "trace: layout mismatch");
    if (pos < 0 || pos >= e->max_ctx)
        return bora_errf(err, -EINVAL, "trace: position %d outside the %d-token cache", pos, e->max_ctx);
    const size_t n = (size_t)nl * nb * N;
    unsigned long long *d = NULL, *h = calloc(n, sizeof *h);
    if (!h)
        return bora_errf(err, -ENOMEM, "trace: out of memory");
    int rc = set_state(s, NULL, 0, pos, err);
    if (!rc)
        rc = kern_malloc((void **)&d, n * sizeof *d, err);
    struct kern_mega_args a = s->mega_args;
    a.trace = d;
    for (int rep = 0; !rc && rep < 3; rep++)   /* the last of three runs is reported */
        if (!(rc = kern_memset(d, 0, n * sizeof *d, err)))
            rc = kern_decode_layers(&a, (struct CUstream_st *)s->stream, err);
    if (!rc && cudaStreamSynchronize(s->stream) != cudaSuccess)
        rc = bora_errf(err, -EIO, "trace: %s", cudaGetErrorString(cudaGetLastError()));
    if (!rc && cudaMemcpy(h, d, n * sizeof *h, cudaMemcpyDeviceToHost) != cudaSuccess)
        rc = bora_errf(err, -EIO, "trace: copy: %s", cudaGetErrorString(cudaGetLastError()));
    kern_free(d);
    if (rc) {
        free(h);
        return rc;
    }
    static const char *const seg[] = { "wait x", "load x", "qkv", "wait qkv", "attention", "wait att",
                                       "load att", "wo", "wait wo", "load x", "gate/up", "wait gu",
                                       "load h", "down" };
    double sum[14] = { 0 }, prod[4] = { 0 }, spread[14] = { 0 }, att_busy = 0, item[9] = { 0 };
    int att_n = 0, item_n = 0, comb_n = 0;
    unsigned long long t_min = ~0ull, t_max = 0;
    for (int b = 0; b < nb; b++)
        for (int l = 0; l < nl; l++) {
            const unsigned long long *t = h + ((size_t)b * nl + l) * N;
            for (int k = 0; k < 14; k++)
                sum[k] += (double)(t[k + 1] - t[k]);
            for (int m = 0; m < 4; m++)
                prod[m] += (double)t[P + m];
            if (t[5] - t[4] > 1500) {   /* blocks that had attention work */
                att_busy += (double)(t[5] - t[4]);
                att_n++;
            }
            if (t[A]) {   /* half 0's first attention item: from the phase start, then its steps */
                item[0] += (double)(t[A] - t[4]);
                for (int k = 1; k < 6; k++)
                    item[k] += (double)(t[A + k] - t[A + k - 1]);
                item_n++;
                if (t[A + 8] > t[A + 5]) {   /* this item combined: gather, weights, sums */
                    item[6] += (double)(t[A + 6] - t[A + 5]);
                    item[7] += (double)(t[A + 7] - t[A + 6]);
                    item[8] += (double)(t[A + 8] - t[A + 7]);
                    comb_n++;
                }
            }
            if (t[0] < t_min)
                t_min = t[0];
            if (t[14] > t_max)
                t_max = t[14];
        }
    for (int l = 0; l < nl; l++)
        for (int k = 0; k < 14; k++) {
            unsigned long long lo = ~0ull, hi = 0;
            for (int b = 0; b < nb; b++) {
                unsigned long long v = h[((size_t)b * nl + l) * N + k + 1];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            spread[k] += (double)(hi - lo);
        }
    const double per = 1e3 * nl * nb;   /* ns → µs per block-layer */
    double tot = 0;
    fprintf(f, "mega trace at position %d: %d layers x %d blocks, step %.1f us (%.2f us per layer)\n", pos, nl, nb,
            (t_max - t_min) / 1e3, (t_max - t_min) / 1e3 / nl);
    fprintf(f, "  %-10s %9s %12s\n", "segment", "mean us", "spread us");
    for (int k = 0; k < 14; k++) {
        fprintf(f, "  %-10s %9.2f %12.2f\n", seg[k], sum[k] / per, spread[k] / 1e3 / nl);
        tot += sum[k] / per;
    }
    fprintf(f, "  %-10s %9.2f\n", "sum", tot);
    fprintf(f, "  attention on the %d block-layers that had items: %.2f us\n", att_n, att_n ? att_busy / att_n / 1e3 : 0.);
    if (item_n && kern_mega_amma(&s->mega_args))   /* tensor-core items (kern_attn_mma.cuh) */
        fprintf(f, "  attention item (tensor cores, %d items): start %.2f, prologue %.2f, tiles %.2f, merge %.2f, "
                   "partial out %.2f, wait for the kv head's splits %.2f us; its share of the combine (%d): "
                   "loads %.2f, weights %.2f, sums %.2f us\n",
                item_n, item[0] / item_n / 1e3, item[1] / item_n / 1e3, item[2] / item_n / 1e3, item[3] / item_n / 1e3,
                item[4] / item_n / 1e3, item[5] / item_n / 1e3, comb_n, comb_n ? item[6] / comb_n / 1e3 : 0.,
                comb_n ? item[7] / comb_n / 1e3 : 0., comb_n ? item[8] / comb_n / 1e3 : 0.);
    else if (item_n)
        fprintf(f, "  attention item (%d items): start %.2f, q/k/v in %.2f, scores %.2f, softmax %.2f, values %.2f, "
                   "partial out %.2f us; combine (%d): weights %.2f, barrier %.2f, sums %.2f us\n", item_n,
                item[0] / item_n / 1e3, item[1] / item_n / 1e3, item[2] / item_n / 1e3, item[3] / item_n / 1e3,
                item[4] / item_n / 1e3, item[5] / item_n / 1e3, comb_n, comb_n ? item[6] / comb_n / 1e3 : 0.,
                comb_n ? item[7] / comb_n / 1e3 : 0., comb_n ? item[8] / comb_n / 1e3 : 0.);
    fprintf(f, "  producer blocked on a full ring, per layer: qkv %.2f, wo %.2f, gate/up %.2f, down %.2f us\n",
            prod[0] / per, prod[1] / per, prod[2] / per, prod[3] / per);
    trace_blocks(f, h, nl, nb, N, SM);
    free(h);
    return 0;
}

int engine_cuda_time_attention(struct engine *e, int pos, float *us, struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    const int nl = e->model->cfg.n_layers;
    if (pos < 0 || pos >= e->max_ctx)
        return bora_errf(err, -EINVAL, "attention timing: position %d outside the %d-token cache", pos, e->max_ctx);
    int rc = set_state(s, NULL, 0, pos, err);
    if (rc)
        return rc;
    cudaGraph_t g = NULL;
    cudaGraphExec_t x = NULL;
    CUDA_CHECK(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeRelaxed));
    for (int l = 0; l < nl && !rc; l++) {
        struct kern_attn_args a = attn_of(e, l);
        rc = kern_attention(&a, (struct CUstream_st *)s->stream, err);
    }
    cudaError_t ce = cudaStreamEndCapture(s->stream, &g);
    if (rc) {
        if (g)
            cudaGraphDestroy(g);
        return rc;
    }
    CUDA_CHECK(ce);
    ce = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    CUDA_CHECK(ce);
    float best = 0;
    rc = graph_ms(s->stream, x, 1, 1, 2, &best, err);
    cudaGraphExecDestroy(x);
    if (rc)
        return rc;
    *us = best * 1e3f / (float)nl;
    return 0;
}

int engine_cuda_gemv_choice(const struct engine *e, int kind, float *us)
{
    const struct cuda_impl *s = impl_of(e);
    if (kind < 0 || kind >= ENGINE_CUDA_GEMV_KINDS)
        return -EINVAL;
    if (us)
        *us = s->tuned_us[kind];
    return s->variant[kind];
}

const char *engine_cuda_decode_path(const struct engine *e, int pos, const char **why)
{
    const struct cuda_impl *s = impl_of(e);
    if (why)
        *why = s->mega_why;
    const bool alt = s->graph_alt && pos >= s->alt_from;
    return s->mega != alt ? "persistent" : "kernels";
}

const char *engine_cuda_mega_layout(const struct engine *e)
{
    return impl_of(e)->mega_desc;
}

const char *engine_cuda_last_error(const struct engine *e)
{
    return impl_of(e)->last.msg;
}
int engine_cuda_set_prefill_chunk(struct engine *e, int tokens, struct bora_err *err)
{
    if (tokens < PREFILL_CHUNK_MIN)
        return bora_errf(err, -EINVAL, "prefill chunk of %d tokens (at least %d)", tokens, PREFILL_CHUNK_MIN);
    return open_prefill(e, tokens, err);
}

void engine_cuda_fault_next(struct engine *e)
{
    impl_of(e)->fault_next = true;
}

int engine_cuda_ttft(struct engine *e, const int32_t *ids, int n, int pos, int32_t *first, double *ms,
                     struct bora_err *err)
{
    struct cuda_impl *s = impl_of(e);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    forget_last_error();
    int rc = check_ids(e, ids, n, pos, err);
    if (rc)
        return rc;
    if (n < 2)
        return bora_errf(err, -EINVAL, "ttft: a prompt of %d tokens (at least 2)", n);
    if ((rc = enqueue_prefill(e, ids, n, pos, true, err)))
        return rc;
    CUDA_CHECK(cudaMemcpyAsync(s->h_out, at(s, s->lay.state), sizeof *s->h_out, cudaMemcpyDeviceToHost, s->stream));
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    *first = s->h_out->sampled;
    *ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6;
    return 0;
}

struct prefill_run *engine_cuda_prefill(struct engine *e)
{
    return impl_of(e)->pf;
}

int engine_cuda_prefill_path(struct engine *e)
{
    return kern_gemm_last_path(prefill_run_gemm(impl_of(e)->pf));
}
#endif
