/* borad_console.c — the console_ops borad supplies: status from the generator and the
 * dataplane, drain/resume as a pause of new requests, shutdown as SIGTERM, the model's
 * shapes and bytes, and a running copy of the config that `config set` changes. */
#include "cmd/borad_console.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console/console.h"
#include "console/console_server.h"
#include "dataplane/gen_engine.h"
#include "model/model.h"

struct borad_console {
    struct console c;
    struct console_ops ops;
    struct console_server *srv;
    pthread_mutex_t lock;               /* guards cfg */
    struct bora_config cfg;             /* the running config (live keys change it) */
    struct dp_server *s;
    const struct generator *g;
    char dir[CONSOLE_TEXT_MAX];
    _Atomic bool stopping;
};

static int op_status(void *ctx, struct console_status *o, struct bora_err *err)
{
    (void)err;
    struct borad_console *bc = ctx;
    static const char *const precisions[] = { "auto", "bf16", "fp8" };
    const struct model *m = gen_engine_model(bc->g);
    snprintf(o->model, sizeof o->model, "%s", bc->dir);
    snprintf(o->backend, sizeof o->backend, "%s", gen_engine_backend(bc->g));
    snprintf(o->precision, sizeof o->precision, "%s",
             m ? bora_dtype_name(m->linear_dtype) : precisions[bc->cfg.model.precision % 3]);
    o->state = atomic_load(&bc->stopping) ? CONSOLE_STATE_STOPPING
             : dp_server_paused(bc->s) ? CONSOLE_STATE_DRAINING : CONSOLE_STATE_SERVING;
    struct metrics_snapshot *s = malloc(sizeof *s);
    if (s && bc->c.metrics) {
        metrics_snapshot_take(bc->c.metrics, s, 0);
        uint64_t in = s->counter[METRICS_QUEUE_IN], out = s->counter[METRICS_QUEUE_OUT];
        o->queued = in > out ? (uint32_t)(in - out) : 0;
    }
    free(s);
    return 0;
}

static int op_drain(void *ctx, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    if (dp_server_paused(bc->s))
        return bora_errf(err, -EALREADY, "drain: already draining ('resume' accepts again)");
    dp_server_pause(bc->s, true);
    return 0;
}

static int op_resume(void *ctx, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    if (atomic_load(&bc->stopping))
        return bora_errf(err, -ESHUTDOWN, "resume: borad is shutting down");
    if (!dp_server_paused(bc->s))
        return bora_errf(err, -EALREADY, "resume: not draining");
    dp_server_pause(bc->s, false);
    return 0;
}

static int op_shutdown(void *ctx, struct bora_err *err)
{
    (void)err;
    struct borad_console *bc = ctx;
    atomic_store(&bc->stopping, true);
    dp_server_stop(bc->s);          /* as SIGTERM: drain (rule 16), then borad_run returns */
    return 0;
}

static void tensor_add(struct console_model *o, const char *name, const struct wtensor *w, uint32_t count)
{
    if (o->n_tensors >= CONSOLE_TENSORS_MAX || !w->data)
        return;
    struct console_tensor *t = &o->tensor[o->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", bora_dtype_name(w->dtype));
    t->ndim = w->rows == 1 ? 1 : 2;
    t->shape[0] = w->rows == 1 ? w->cols : w->rows;
    t->shape[1] = w->cols;
    t->count = count;
    t->bytes = (uint64_t)w->rows * (uint64_t)w->cols * bora_dtype_size(w->dtype) * count;
}

static int op_model(void *ctx, struct console_model *o, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    const struct model *m = gen_engine_model(bc->g);
    if (!m)
        return bora_errf(err, -ENODEV, "model: no model is loaded");
    const struct model_config *c = &m->cfg;
    snprintf(o->name, sizeof o->name, "%s", bc->dir);
    snprintf(o->arch, sizeof o->arch, "%s", model_arch_name(c->arch));
    o->n_layers = (uint32_t)c->n_layers, o->dim = (uint32_t)c->dim, o->hidden_dim = (uint32_t)c->hidden_dim;
    o->n_heads = (uint32_t)c->n_heads, o->n_kv_heads = (uint32_t)c->n_kv_heads;
    o->head_dim = (uint32_t)c->head_dim, o->vocab = (uint32_t)c->vocab_size;
    o->max_ctx = bc->g->max_ctx, o->n_params = m->n_params, o->weight_bytes = m->weight_bytes;
    uint32_t L = (uint32_t)c->n_layers;
    tensor_add(o, "tok_embeddings", &m->tok_emb, 1);
    if (L) {
        const struct layer_weights *l = &m->layers[0];
        tensor_add(o, "layers.*.attention_norm", &l->attn_norm, L);
        tensor_add(o, "layers.*.attention.wq", &l->wq, L);
        tensor_add(o, "layers.*.attention.wk", &l->wk, L);
        tensor_add(o, "layers.*.attention.wv", &l->wv, L);
        tensor_add(o, "layers.*.attention.wo", &l->wo, L);
        tensor_add(o, "layers.*.ffn_norm", &l->ffn_norm, L);
        tensor_add(o, "layers.*.feed_forward.w1 (gate)", &l->w_gate, L);
        tensor_add(o, "layers.*.feed_forward.w3 (up)", &l->w_up, L);
        tensor_add(o, "layers.*.feed_forward.w2 (down)", &l->w_down, L);
    }
    tensor_add(o, "norm", &m->norm, 1);
    if (!c->tied)
        tensor_add(o, "output", &m->output, 1);
    /* the CPU backend holds no VRAM; the CUDA backend reports through the GPU gauges */
    return 0;
}

static int op_config_read(void *ctx, struct bora_config *out, struct bora_err *err)
{
    (void)err;
    struct borad_console *bc = ctx;
    pthread_mutex_lock(&bc->lock);
    *out = bc->cfg;
    pthread_mutex_unlock(&bc->lock);
    return 0;
}

static int op_config_apply(void *ctx, const char *key, const char *value, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    pthread_mutex_lock(&bc->lock);
    int rc = config_set(&bc->cfg, key, value, err);
    pthread_mutex_unlock(&bc->lock);
    if (!rc)
        fprintf(stderr, "borad: console: %s = %s\n", key,
                strstr(key, "password") || strstr(key, "psk") ? "(hidden)" : value);
    return rc;
}

int borad_console_start(struct borad_console **out, const struct bora_config *cfg, struct metrics *m,
                        struct dp_server *s, const struct generator *g, const char *dir)
{
    *out = NULL;
    if (!cfg->console.socket[0] && !cfg->console.serial[0])
        return 0;
    struct borad_console *bc = calloc(1, sizeof *bc);
    if (!bc) {
        fprintf(stderr, "borad: console: out of memory\n");
        return -ENOMEM;
    }
    pthread_mutex_init(&bc->lock, NULL);
    bc->cfg = *cfg;
    bc->s = s;
    bc->g = g;
    snprintf(bc->dir, sizeof bc->dir, "%s", dir);
    bc->ops = (struct console_ops){
        .ctx = bc, .status = op_status, .model = op_model, .drain = op_drain, .resume = op_resume,
        .shutdown = op_shutdown, .config_read = op_config_read, .config_apply = op_config_apply,
    };
    console_init(&bc->c, &bc->ops, m);
    struct bora_err err = { "" };
    int rc = console_server_start(&bc->srv, &bc->c, &bc->cfg.console, &err);
    if (rc) {
        fprintf(stderr, "borad: %s\n", err.msg);
        pthread_mutex_destroy(&bc->lock);
        free(bc);
        return rc;
    }
    fprintf(stderr, "borad: console on %s%s%s (boractl --socket %s)\n",
            cfg->console.socket[0] ? cfg->console.socket : "", cfg->console.socket[0] && cfg->console.serial[0] ? " and " : "",
            cfg->console.serial[0] ? cfg->console.serial : "", cfg->console.socket[0] ? cfg->console.socket : "-");
    *out = bc;
    return 0;
}

void borad_console_stop(struct borad_console *bc)
{
    if (!bc)
        return;
    console_server_stop(bc->srv);
    pthread_mutex_destroy(&bc->lock);
    free(bc);
}
