/* prefill_run.c — chunked prefill over the CUDA engine's arena: per chunk, embedding, then per
 * layer QKV GEMM → scales + RoPE + KV write → flash attention → (quantize) → O GEMM → residual +
 * norm + quantize → gate/up GEMM → SwiGLU + quantize → down GEMM → residual (+ the next layer's
 * norm). Only K and V of the last layer matter for all but the prompt's last token, so the last
 * layer stops after the KV write in every chunk but the last, and runs one row there.
 * Budget: FLOPs / (≈ 1.3 PFLOP/s FP8) plus the row kernels' bytes at streaming bandwidth. */
#ifdef BORA_CUDA
#include "kernels/prefill_run.h"

#include <cuda_runtime_api.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda_check.h"
#include "kernels/prefill.h"


#define LOG2E 1.4426950408889634
#define PROF_PAIRS 4096   /* timed launches per prefill when profiling */

struct prefill_prof {
    cudaEvent_t ev[2 * PROF_PAIRS];
    int kind[PROF_PAIRS];
    int n;
    cudaError_t rec;     /* the first failed cudaEventRecord (cudaSuccess: none), reported by prof_collect */
    double ms[PREFILL_PROF_KINDS];
};

struct prefill_run {
    struct prefill_model m;
    int chunk;
    uint64_t ws_bytes;
    struct kern_gemm *gemm;
    uint8_t *ws;          /* device: the regions below, one allocation */
    float *x;             /* (chunk, dim) fp32 residual stream */
    void *act;            /* (chunk, max(dim, q_dim, hidden)) e4m3 or bf16: next GEMM's input */
    float *act_scale;     /* (chunk) per-token scales of act (FP8) */
    uint16_t *raw;        /* (chunk, max(qkv rows, 2 hidden, dim)) bf16 GEMM output */
    uint16_t *q, *att;    /* (chunk, q_dim) bf16 */
    float *attn_work;     /* KERN_PF_ATTN_WORK_BYTES: attention's key splits */
    int *bad;             /* device int: an id outside the vocabulary was met */
    uint16_t *kv16;       /* FP8 KV cache: one layer's K then V widened to bf16 (the flash attention's
                           * input), each n_kv × max_ctx × head_dim; NULL with a BF16 cache */
    struct prefill_prof *prof;   /* NULL unless profiling */
};

static void prof_begin(struct prefill_run *p, struct CUstream_st *st)
{
    if (p->prof && p->prof->n < PROF_PAIRS) {
        const cudaError_t e = cudaEventRecord(p->prof->ev[2 * p->prof->n], (cudaStream_t)st);
        if (e != cudaSuccess && p->prof->rec == cudaSuccess)
            p->prof->rec = e;
    }
}
static void prof_end(struct prefill_run *p, int kind, struct CUstream_st *st)
{
    if (p->prof && p->prof->n < PROF_PAIRS) {
        const cudaError_t e = cudaEventRecord(p->prof->ev[2 * p->prof->n + 1], (cudaStream_t)st);
        if (e != cudaSuccess && p->prof->rec == cudaSuccess)
            p->prof->rec = e;
        p->prof->kind[p->prof->n++] = kind;
    }
}
static int prof_collect(struct prefill_run *p, struct CUstream_st *st, struct bora_err *err)
{
    struct prefill_prof *f = p->prof;
    if (!f)
        return 0;
    if (f->rec != cudaSuccess)
        return bora_errf(err, -EIO, "prefill profile: cudaEventRecord: %s", cudaGetErrorString(f->rec));
    CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)st));
    for (int i = 0; i < f->n; i++) {
        float t = 0;
        CUDA_CHECK(cudaEventElapsedTime(&t, f->ev[2 * i], f->ev[2 * i + 1]));
        f->ms[f->kind[i]] += t;
    }
    f->n = 0;
    return 0;
}

const char *prefill_prof_name(int kind)
{
    static const char *const names[PREFILL_PROF_KINDS] = { "gemm qkv", "gemm o", "gemm gate/up", "gemm down",
                                                           "attention", "qkv rope+kv",
                                                           "attn quant", "add+norm+quant",
                                                           "swiglu+quant" };
    return kind >= 0 && kind < PREFILL_PROF_KINDS ? names[kind] : "?";
}

int prefill_run_profile(struct prefill_run *p, bool on, struct bora_err *err)
{
    if (p->prof) {
        for (int i = 0; i < 2 * PROF_PAIRS; i++)
            cudaEventDestroy(p->prof->ev[i]);
        free(p->prof);
        p->prof = NULL;
    }
    if (!on)
        return 0;
    struct prefill_prof *f = calloc(1, sizeof *f);
    if (!f)
        return bora_errf(err, -ENOMEM, "prefill profile: no host memory");
    for (int i = 0; i < 2 * PROF_PAIRS; i++)
        if (cudaEventCreate(&f->ev[i]) != cudaSuccess) {
            for (int j = 0; j < i; j++)
                cudaEventDestroy(f->ev[j]);
            free(f);
            return bora_errf(err, -EIO, "prefill profile: cudaEventCreate failed");
        }
    p->prof = f;
    return 0;
}

void prefill_run_profile_read(struct prefill_run *p, double ms[PREFILL_PROF_KINDS])
{
    for (int k = 0; k < PREFILL_PROF_KINDS; k++) {
        ms[k] = p->prof ? p->prof->ms[k] : 0;
        if (p->prof)
            p->prof->ms[k] = 0;
    }
}

static size_t max3(size_t a, size_t b, size_t c)
{
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

_Static_assert(KERN_GEMM_WORKSPACE == PLAN_GEMM_WORKSPACE, "plan.h counts cuBLASLt's workspace");
_Static_assert(KERN_PF_ATTN_WORK_BYTES == PLAN_PF_ATTN_WORK, "plan.h counts the attention's scratch");

int prefill_run_open(struct prefill_run **out, const struct prefill_model *m, int chunk, struct bora_err *err)
{
    *out = NULL;
    struct plan_prefill lay;   /* the same arithmetic as `bora plan` */
    plan_prefill_layout(m->cfg, m->dt->linear, m->dt->kv_fp8, m->max_ctx, chunk, &lay);
    chunk = lay.chunk;
    struct prefill_run *p = calloc(1, sizeof *p);
    if (!p)
        return bora_errf(err, -ENOMEM, "prefill: no host memory");
    p->m = *m;
    p->chunk = chunk;
    const size_t total = lay.ws_bytes;
    int rc = kern_malloc((void **)&p->ws, total, err);
    if (rc) {
        (void)cudaGetLastError();   /* an allocation failure must not surface at the next launch check */
        free(p);
        return bora_errf(err, rc, "prefill: %zu MB of workspace for %d-token chunks: %s", total >> 20, chunk,
                         err->msg);
    }
    p->ws_bytes = total;
    p->x = (float *)(p->ws + lay.x);
    p->act = p->ws + lay.act;
    p->act_scale = (float *)(p->ws + lay.scale);
    p->raw = (uint16_t *)(p->ws + lay.raw);
    p->q = (uint16_t *)(p->ws + lay.q);
    p->att = (uint16_t *)(p->ws + lay.att);
    p->attn_work = (float *)(p->ws + lay.work);
    p->bad = (int *)(p->ws + lay.bad);
    p->kv16 = lay.kv16_bytes ? (uint16_t *)(p->ws + lay.kv16) : NULL;
    /* the copy starts as zeros, once: the flash attention reads no row that was neither widened nor
     * written in its layer (the widening starts at the first key tile a query may see), and if a
     * change ever made it, the masked row would hold zeros, not a NaN that survives the masking */
    if ((rc = kern_memset(p->bad, 0, 4, err)) || (p->kv16 && (rc = kern_memset(p->kv16, 0, lay.kv16_bytes, err))) ||
        (rc = kern_gemm_create(&p->gemm, err))) {
        prefill_run_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

void prefill_run_close(struct prefill_run *p)
{
    if (!p)
        return;
    prefill_run_profile(p, false, NULL);
    kern_gemm_destroy(p->gemm);
    kern_free(p->ws);
    free(p);
}

int prefill_run_chunk_size(const struct prefill_run *p) { return p->chunk; }
uint64_t prefill_run_workspace_bytes(const struct prefill_run *p) { return p->ws_bytes; }
struct kern_gemm *prefill_run_gemm(struct prefill_run *p) { return p->gemm; }

static uint8_t *L_at(const struct prefill_run *p, int l, size_t off)
{
    return p->m.arena + p->m.lay->layers + (size_t)l * p->m.lay->layer_stride + off;
}

static int gemm(struct prefill_run *p, int kind, const void *w, const void *x, int rows, int cols, int n,
                struct CUstream_st *st, struct bora_err *err)
{
    struct kern_gemm_args a = { p->m.dt->linear, w, x, p->raw, rows, cols, n, p->chunk };
    prof_begin(p, st);
    int rc = kern_gemm_run(p->gemm, &a, st, err);
    prof_end(p, kind, st);
    return rc;
}

int prefill_run_tune(struct prefill_run *p, struct CUstream_st *st, int (*stop)(void *ctx), void *stop_ctx,
                     struct bora_err *err)
{
    const struct model_config *c = p->m.cfg;
    const struct plan_layout *L = p->m.lay;
    const int dim = c->dim, hid = c->hidden_dim, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    const struct { int kind; size_t off; int rows, cols; } mat[] = {
        { PREFILL_PROF_GEMM_QKV, L->l_qkv, qd + 2 * kvd, dim },
        { PREFILL_PROF_GEMM_O, L->l_wo, dim, qd },
        { PREFILL_PROF_GEMM_GU, L->l_gu, 2 * hid, dim },
        { PREFILL_PROF_GEMM_DOWN, L->l_down, dim, hid },
    };
    const size_t ae = p->m.dt->linear == BORA_DT_F8_E4M3 ? 1 : 2;
    int rc = kern_memset(p->act, 0, (size_t)p->chunk * max3(dim, qd, hid) * ae, err);
    for (int n = 1; !rc && n <= p->chunk && !(stop && stop(stop_ctx));) {
        const int b = kern_gemm_bucket(n), at = b < p->chunk ? b : p->chunk;
        for (size_t i = 0; !rc && i < sizeof mat / sizeof *mat; i++)
            rc = gemm(p, mat[i].kind, L_at(p, 0, mat[i].off), p->act, mat[i].rows, mat[i].cols, at, st, err);
        n = b + 1;
    }
    if (!rc)
        CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)st));
    return rc;
}

/* A row kernel or attention launch, timed when profiling. */
#define TIMED(kind, call)                  \
    do {                                   \
        prof_begin(p, st);                 \
        int rc_ = (call);                  \
        prof_end(p, (kind), st);           \
        if (rc_)                           \
            return rc_;                    \
    } while (0)

/* One layer for n tokens at pos0 whose normalized, quantized input is in p->act. rows_out:
 * 0 = stop after the KV write, 1 = only the last token goes on, else all. */
static int run_layer(struct prefill_run *p, int l, int n, int pos0, int rows_out, struct CUstream_st *st,
                     struct bora_err *err)
{
    const struct model_config *c = p->m.cfg;
    const struct plan_layout *L = p->m.lay;
    const bool fp8 = p->m.dt->linear == BORA_DT_F8_E4M3;
    const int dim = c->dim, hd = c->head_dim, hid = c->hidden_dim;
    const int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    const struct kern_act A = { p->m.dt->linear, p->act, fp8 ? p->act_scale : NULL };
    float *ts = fp8 ? p->act_scale : NULL;
    int rc;

    if ((rc = gemm(p, PREFILL_PROF_GEMM_QKV, L_at(p, l, L->l_qkv), p->act, qd + 2 * kvd, dim, n, st, err)))
        return rc;
    uint8_t *kc = p->m.arena + L->kv + (size_t)l * L->kv_layer_stride, *vc = kc + L->kv_layer_stride / 2;
    /* an FP8 cache: the keys and values go there as e4m3 and into the bf16 copy the flash attention
     * reads, whose earlier rows (the cached prefix, from the first key tile a query may see) are
     * widened from the cache first */
    uint16_t *k16 = p->kv16 ? p->kv16 : (uint16_t *)kc;
    uint16_t *v16 = p->kv16 ? p->kv16 + (size_t)kvd * p->m.max_ctx : (uint16_t *)vc;
    if (p->kv16 && rows_out != 0) {   /* (a layer whose attention does not run reads no copy) */
        int lo = c->sliding_window > 0 ? pos0 - c->sliding_window + 1 : 0;
        lo = lo > 0 ? lo / 128 * 128 : 0;   /* the widest key tile (wgmma: 128) */
        TIMED(PREFILL_PROF_ROW_QKV, kern_kv_widen(kc, vc, k16, v16, lo, pos0, p->m.max_ctx, c->n_kv_heads, hd, st, err));
    }
    struct kern_qkv_post_args qa = {
        .qkv = { p->raw, (const float *)L_at(p, l, L->l_qkv_rs), ts },
        .q_out = p->q, .k_cache = k16, .v_cache = v16,
        .k8_cache = p->kv16 ? kc : NULL, .v8_cache = p->kv16 ? vc : NULL,
        .n = n, .pos0 = pos0, .max_ctx = p->m.max_ctx, .n_heads = c->n_heads, .n_kv = c->n_kv_heads,
        .head_dim = hd, .q_mult = (float)(LOG2E / sqrt((double)hd)),
        .rope = { (const float *)(p->m.arena + L->inv_freq), p->m.rope_attn_factor, c->rope_interleaved,
                  (float)c->qscale_beta, c->qscale_orig_max },
    };
    TIMED(PREFILL_PROF_ROW_QKV, kern_pf_qkv_post(&qa, st, err));
    if (rows_out == 0)
        return 0;
    const int r0 = rows_out == 1 ? n - 1 : 0, nr = n - r0;
    struct kern_pf_attn_args aa = {
        .q = p->q + (size_t)r0 * qd, .k_cache = qa.k_cache, .v_cache = qa.v_cache, .out = p->att, .n = nr,
        .pos0 = pos0 + r0, .max_ctx = p->m.max_ctx, .n_heads = c->n_heads, .n_kv = c->n_kv_heads, .head_dim = hd,
        .window = c->sliding_window, .work = p->attn_work, .work_bytes = KERN_PF_ATTN_WORK_BYTES,
    };
    TIMED(PREFILL_PROF_ATTN, kern_pf_attention(&aa, st, err));
    const void *o_in = p->att;
    if (fp8) {
        TIMED(PREFILL_PROF_ROW_QUANT, kern_pf_quant(p->att, &A, nr, qd, st, err));
        o_in = p->act;
    }
    float *x = p->x + (size_t)r0 * dim;
    if ((rc = gemm(p, PREFILL_PROF_GEMM_O, L_at(p, l, L->l_wo), o_in, dim, qd, nr, st, err)))
        return rc;
    struct kern_raw d = { p->raw, (const float *)L_at(p, l, L->l_wo_rs), ts };
    TIMED(PREFILL_PROF_ROW_NORM,
          kern_pf_add_norm_quant(x, &d, (const float *)L_at(p, l, L->l_ffn_norm), c->norm_eps, &A, nr, dim, st, err));
    if ((rc = gemm(p, PREFILL_PROF_GEMM_GU, L_at(p, l, L->l_gu), p->act, 2 * hid, dim, nr, st, err)))
        return rc;
    struct kern_raw gu = { p->raw, (const float *)L_at(p, l, L->l_gu_rs), ts };
    TIMED(PREFILL_PROF_ROW_SWIGLU, kern_pf_swiglu_quant(&gu, &A, nr, hid, st, err));
    if ((rc = gemm(p, PREFILL_PROF_GEMM_DOWN, L_at(p, l, L->l_down), p->act, dim, hid, nr, st, err)))
        return rc;
    d = (struct kern_raw){ p->raw, (const float *)L_at(p, l, L->l_down_rs), ts };
    const float *next_norm = l + 1 < c->n_layers ? (const float *)L_at(p, l + 1, L->l_attn_norm) : NULL;
    TIMED(PREFILL_PROF_ROW_NORM, kern_pf_add_norm_quant(x, &d, next_norm, c->norm_eps, &A, nr, dim, st, err));
    return 0;
}

static int run_chunk(struct prefill_run *p, const int32_t *d_ids, int n, int pos0, bool last, struct CUstream_st *st,
                     struct bora_err *err)
{
    const struct model_config *c = p->m.cfg;
    const struct plan_layout *L = p->m.lay;
    const bool fp8 = p->m.dt->linear == BORA_DT_F8_E4M3;
    const struct kern_act A = { p->m.dt->linear, p->act, fp8 ? p->act_scale : NULL };
    struct kern_mat emb = { p->m.dt->emb, p->m.arena + L->emb, c->vocab_size, c->dim, 1.0f,
                            (const float *)(p->m.arena + L->emb_rs) };
    int rc;
    if ((rc = kern_pf_embed(p->x, &emb, d_ids, n, p->bad, st, err)) ||
        (rc = kern_pf_add_norm_quant(p->x, NULL, (const float *)L_at(p, 0, L->l_attn_norm), c->norm_eps, &A, n,
                                     c->dim, st, err)))
        return rc;
    for (int l = 0; l < c->n_layers; l++) {
        int rows_out = l + 1 < c->n_layers ? 2 : last ? 1 : 0;
        if ((rc = run_layer(p, l, n, pos0, rows_out, st, err)))
            return rc;
    }
    if (last)
        CUDA_CHECK(cudaMemcpyAsync(p->m.arena + L->x, p->x + (size_t)(n - 1) * c->dim, (size_t)c->dim * 4,
                               cudaMemcpyDeviceToDevice, (cudaStream_t)st));
    return 0;
}

int prefill_run_tokens(struct prefill_run *p, const int32_t *d_ids, int n, int pos, struct CUstream_st *stream,
                       int (*stop)(void *ctx), void *stop_ctx, struct bora_err *err)
{
    if (n <= 0 || pos < 0 || pos + n > p->m.max_ctx)
        return bora_errf(err, -EINVAL, "prefill: positions %d..%d outside the %d-token cache", pos, pos + n,
                         p->m.max_ctx);
    int rc = 0;
    for (int done = 0; done < n;) {
        const int k = n - done < p->chunk ? n - done : p->chunk;
        const bool last = done + k == n;
        rc = run_chunk(p, d_ids + done, k, pos + done, last, stream, err);
        if (rc)
            return rc;
        done += k;
        if (!last) {
            CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)stream));
            if (stop && stop(stop_ctx))
                return bora_errf(err, -ECANCELED, "prefill cancelled after %d of %d tokens", done, n);
        }
    }
    return prof_collect(p, stream, err);
}

double prefill_flops(const struct model_config *c, int n, int pos)
{
    const double dim = c->dim, qd = (double)c->n_heads * c->head_dim, kvd = (double)c->n_kv_heads * c->head_dim;
    const double per_layer = dim * (qd + 2 * kvd) + qd * dim + 3.0 * c->hidden_dim * dim;
    double pairs = 0;
    for (int t = pos; t < pos + n; t++)
        pairs += c->sliding_window > 0 && t + 1 > c->sliding_window ? c->sliding_window : t + 1;
    return 2.0 * per_layer * c->n_layers * n + 4.0 * c->head_dim * c->n_heads * c->n_layers * pairs +
           2.0 * dim * c->vocab_size;
}
#endif
