/* engine.c — backend selection and the thin public wrappers of the engine API. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/engine.h"

#define ENGINE_DEFAULT_CTX 4096

int engine_backend_parse(const char *s, enum engine_backend *out)
{
    if (!strcmp(s, "auto"))
        *out = ENGINE_BACKEND_AUTO;
    else if (!strcmp(s, "cpu"))
        *out = ENGINE_BACKEND_CPU;
    else if (!strcmp(s, "cuda"))
        *out = ENGINE_BACKEND_CUDA;
    else
        return -EINVAL;
    return 0;
}

int engine_kv_parse(const char *s, enum engine_kv *out)
{
    if (!strcmp(s, "bf16"))
        *out = ENGINE_KV_BF16;
    else if (!strcmp(s, "fp8"))
        *out = ENGINE_KV_FP8;
    else
        return -EINVAL;
    return 0;
}

const char *engine_kv_name(enum engine_kv kv)
{
    return kv == ENGINE_KV_FP8 ? "fp8" : "bf16";
}

int engine_init(struct engine *e, const struct model *m, const struct engine_opts *o, struct bora_err *err)
{
    if (o && o->kv != ENGINE_KV_BF16 && o->kv != ENGINE_KV_FP8)
        return bora_errf(err, -EINVAL, "KV cache type %d: expected bf16 or fp8", (int)o->kv);
    memset(e, 0, sizeof *e);
    e->model = m;
    e->n_threads = o && o->n_threads > 0 ? o->n_threads : 0;
    e->kv = o ? o->kv : ENGINE_KV_BF16;
    e->layer_wait = o ? o->layer_wait : NULL;
    e->layer_wait_ctx = o ? o->layer_wait_ctx : NULL;
    e->layers_ready = e->layer_wait ? -2 : m->cfg.n_layers;
    e->max_ctx = o && o->max_ctx > 0 ? o->max_ctx : ENGINE_DEFAULT_CTX;
    if ((!o || o->max_ctx <= 0) && m->cfg.max_pos > 0 && m->cfg.max_pos < e->max_ctx)
        e->max_ctx = m->cfg.max_pos;
    return 0;
}

enum engine_kv engine_kv(const struct engine *e)
{
    return e->kv;
}

int engine_open(struct engine **out, const struct model *m, const struct engine_opts *o, struct bora_err *err)
{
    *out = NULL;
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return bora_errf(err, -ENOMEM, "out of memory");
    int rc = engine_init(e, m, o, err);
    if (rc) {
        free(e);
        return rc;
    }
    enum engine_backend b = o ? o->backend : ENGINE_BACKEND_AUTO;
    if (b == ENGINE_BACKEND_CUDA) {
        rc = engine_cuda_open(e, err);   /* waits for each layer as it uploads it */
    } else if (b == ENGINE_BACKEND_AUTO) {
        struct bora_err cuda_err;
        rc = engine_cuda_open(e, &cuda_err);
        if (rc == -ENODEV) {
            rc = engine_cpu_open(e, err);
            snprintf(e->backend_why, sizeof e->backend_why, "%.*s", (int)sizeof e->backend_why - 1, cuda_err.msg);
        } else if (rc && err)
            *err = cuda_err;
    } else {
        rc = engine_cpu_open(e, err);
    }
    if (rc) {
        free(e);
        return rc;
    }
    *out = e;
    return 0;
}

void engine_close(struct engine *e)
{
    if (!e)
        return;
    e->ops->close(e);
    free(e);
}

/* A forward that read weights from a checkpoint file cut short under it (the SIGBUS guard gave
 * it zeros, see safetensors.h) fails with -ESTALE, whatever it returned, and so does every
 * forward after it: the weights are gone until the model is reopened. */
static int check_files(struct engine *e, int rc)
{
    const char *cut = model_damaged(e->model);
    if (__builtin_expect(cut == NULL, 1))
        return rc;
    snprintf(e->stale, sizeof e->stale,
             "checkpoint file %s was cut short or rewritten while bora served from it (or a page of it "
             "could not be read); its weights are lost (restore the file, then reopen the model: boractl reload, "
             "or restart)", cut);
    return -ESTALE;
}

static int check_ids(const struct engine *e, const int32_t *ids, int n, int pos)
{
    if (n <= 0 || pos < 0 || pos + n > e->max_ctx)
        return -EINVAL;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= e->model->cfg.vocab_size)
            return -EINVAL;
    return 0;
}

int engine_forward(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    int rc = check_ids(e, ids, n, pos);
    return rc ? rc : check_files(e, e->ops->forward(e, ids, n, pos, logits));
}

int engine_forward_next(struct engine *e, const int32_t *ids, int n, int pos, struct sampler *s, float *logits,
                        int32_t *id)
{
    int rc = check_ids(e, ids, n, pos);
    if (rc)
        return rc;
    if (e->ops->forward_sample)
        return check_files(e, e->ops->forward_sample(e, ids, n, pos, &s->p, id));
    if ((rc = check_files(e, e->ops->forward(e, ids, n, pos, logits))))
        return rc;
    /* as the GPU sampler: a logit that is not a finite number (NaN or infinite weights or
     * activations) fails the step rather than choosing among the rest */
    const int V = e->model->cfg.vocab_size;
    uint32_t all_ones = 0;   /* the exponent bits all set: NaN or infinite (a bit test, which no
                              * floating-point optimisation flag can fold away) */
    for (int i = 0; i < V; i++) {
        uint32_t u;
        memcpy(&u, &logits[i], sizeof u);
        all_ones |= (u & 0x7f800000u) == 0x7f800000u;
    }
    if (all_ones)
        return -EDOM;
    *id = sampler_sample(s, logits);
    return 0;
}

int engine_forward_all(struct engine *e, const int32_t *ids, int n, int pos, float *logits)
{
    int rc = check_ids(e, ids, n, pos);
    return rc ? rc : check_files(e, e->ops->forward_all(e, ids, n, pos, logits));
}

void engine_reset(struct engine *e)
{
    e->ops->reset(e);
}

int engine_layer_ready(struct engine *e, int layer)
{
    if (!e->layer_wait)
        return 0;
    while (e->layers_ready < layer) {
        int rc = e->layer_wait(e->layer_wait_ctx, e->layers_ready + 1);
        if (rc)
            return rc;
        e->layers_ready++;
    }
    return 0;
}

int engine_kv_read(struct engine *e, int layer, int pos, float *k, float *v)
{
    if (!e->ops->kv_read)
        return -ENOTSUP;
    if (layer < 0 || layer >= e->model->cfg.n_layers || pos < 0 || pos >= e->max_ctx)
        return -EINVAL;
    return e->ops->kv_read(e, layer, pos, k, v);
}

const char *engine_backend_name(const struct engine *e)
{
    return e->ops->name;
}

void engine_set_stop(struct engine *e, int (*stop)(void *ctx), void *ctx)
{
    e->stop = stop;
    e->stop_ctx = ctx;
}

const char *engine_last_error(const struct engine *e)
{
    return e->ops->last_error ? e->ops->last_error(e) : "";
}

int engine_memory(const struct engine *e, struct engine_mem *out)
{
    memset(out, 0, sizeof *out);
    return e->ops->memory ? e->ops->memory(e, out) : -ENODEV;
}

const char *engine_error_text(const struct engine *e, int rc)
{
    if (rc == -ESTALE && e->stale[0])
        return e->stale;
    if (rc == -EDOM)
        return "the model produced a logit that is not a finite number (NaN or infinite weights or activations)";
    return rc == -EIO && engine_last_error(e)[0] ? engine_last_error(e) : strerror(-rc);
}

const char *engine_backend_why(const struct engine *e)
{
    return e->backend_why;
}
