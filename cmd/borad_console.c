/* borad_console.c — the console_ops borad supplies: status from the generator and the
 * dataplane, the decoder's requests (list, cancel by id), drain/resume as a pause of new
 * requests, reload as a new generator swapped in at a request boundary, shutdown as SIGTERM,
 * the model's shapes and bytes, and a running copy of the config whose live keys `config set`
 * changes and hands to the dataplane. */
#include "common/log.h"
#include "cmd/borad_console.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/borad.h"
#include "console/console.h"
#include "console/console_server.h"
#include "dataplane/gen_engine.h"
#include "model/model.h"

struct borad_console {
    struct console c;
    struct console_ops ops;
    struct console_server *srv;
    pthread_mutex_t lock;               /* guards cfg, backend, precision, kv_cache */
    struct bora_config cfg;             /* the running config (live keys change it) */
    struct bora_config start_cfg;       /* as borad started: the model settings `reload` uses */
    struct dp_server *s;
    pthread_mutex_t gen_lock;           /* guards reading *g against a reload's swap */
    pthread_mutex_t reload_lock;        /* one reload at a time */
    const struct generator *g;          /* the decoder's generator (its contents swap on reload) */
    char backend[32], precision[32], kv_cache[16];   /* of the generator serving now */
    char dir[CONSOLE_TEXT_MAX];
    char model_dir[4096];
    _Atomic bool stopping;
    _Atomic bool reloading;
};

/* Caches what status reports about g (bc->lock held; g not being swapped). */
static void describe_generator(struct borad_console *bc, const struct generator *g)
{
    static const char *const precisions[] = { "auto", "bf16", "fp8" };
    const struct model *m = gen_engine_model(g);
    snprintf(bc->backend, sizeof bc->backend, "%s", gen_engine_backend(g));
    snprintf(bc->kv_cache, sizeof bc->kv_cache, "%s", gen_engine_kv(g));
    snprintf(bc->precision, sizeof bc->precision, "%s",
             m ? bora_dtype_name(m->linear_dtype) : precisions[bc->cfg.model.precision % 3]);
}

/* The console's shutdown or a signal's drain (dp_server_stop): borad is on its way out. */
static bool shutting_down(struct borad_console *bc)
{
    return atomic_load(&bc->stopping) || dp_server_stopping(bc->s);
}

static int op_status(void *ctx, struct console_status *o, struct bora_err *err)
{
    (void)err;
    struct borad_console *bc = ctx;
    snprintf(o->model, sizeof o->model, "%s", bc->dir);
    pthread_mutex_lock(&bc->lock);
    snprintf(o->backend, sizeof o->backend, "%s", bc->backend);
    snprintf(o->precision, sizeof o->precision, "%s", bc->precision);
    snprintf(o->kv_cache, sizeof o->kv_cache, "%s", bc->kv_cache);
    pthread_mutex_unlock(&bc->lock);
    o->state = shutting_down(bc) ? CONSOLE_STATE_STOPPING
             : atomic_load(&bc->reloading) ? CONSOLE_STATE_RELOADING
             : dp_server_paused(bc->s) ? CONSOLE_STATE_DRAINING : CONSOLE_STATE_SERVING;
    /* weights lost under the server (a checkpoint cut short): up, answering, but every request
     * fails until the file is sound again and the model is reopened. Not checked while a reload
     * holds gen_lock (its swap waits for the running request; the state reads 'reloading' then) */
    if (pthread_mutex_trylock(&bc->gen_lock) == 0) {
        const struct model *m = gen_engine_model(bc->g);
        const char *cut = m ? model_damaged(m) : NULL;
        if (cut) {
            snprintf(o->problem, sizeof o->problem, "every request fails: a checkpoint file was cut short or "
                     "rewritten while serving; rename a sound copy over it, then 'reload': %s", cut);
            if (o->state == CONSOLE_STATE_SERVING)
                o->state = CONSOLE_STATE_FAILING;
        }
        pthread_mutex_unlock(&bc->gen_lock);
    }
    dp_server_counts(bc->s, &o->queued, &o->running);
    return 0;
}

/* "udp 10.0.0.7:4242", "tcp [::1]:5000 #3", "dpdk 10.0.0.9:4000" */
static void client_name(const struct dp_req_info *r, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    bool v6 = r->from.ss_family == AF_INET6;
    if (r->from.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&r->from;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else if (v6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&r->from;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
    }
    int k = snprintf(buf, n, v6 ? "%s [%s]:%u" : "%s %s:%u", metrics_transport_name(r->transport), ip, port);
    if (r->conn && k > 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, " #%u", r->conn - 1);
}

static int op_requests(void *ctx, struct console_request *out, size_t cap, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    struct dp_req_info *r = malloc(sizeof *r * DP_LIST_MAX);
    if (!r)
        return bora_errf(err, -ENOMEM, "requests: out of memory");
    uint32_t total = 0;
    int rc = dp_server_requests(bc->s, r, DP_LIST_MAX, &total, err);
    if (rc == 0) {
        size_t n = total < cap ? total : cap;
        n = n < DP_LIST_MAX ? n : DP_LIST_MAX;
        for (size_t i = 0; i < n; i++) {
            out[i] = (struct console_request){ .id = r[i].rid, .running = r[i].running, .age_us = r[i].age_us,
                                               .prompt_tokens = r[i].prompt_tokens,
                                               .completion_tokens = r[i].completion_tokens };
            client_name(&r[i], out[i].client, sizeof out[i].client);
        }
        rc = (int)total;
    }
    free(r);
    return rc;
}

static int op_cancel(void *ctx, uint64_t id, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    uint32_t n = 0;
    int rc = dp_server_cancel(bc->s, id, &n, err);
    if (rc < 0)
        return rc;
    if (n == 0)
        return bora_errf(err, -ENOENT, "cancel: no queued or running request has id %llu", (unsigned long long)id);
    bora_log(BORA_LOG_INFO, "console: cancelled request %llu (%u client%s)", (unsigned long long)id, n,
            n == 1 ? "" : "s");
    return 0;
}

/* Opens the model again (same directory and settings) beside the serving one, then has the
 * decoder swap it in once the running request is done; the old one is closed after. */
static int op_reload(void *ctx, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    if (shutting_down(bc))
        return bora_errf(err, -ESHUTDOWN, "reload: borad is shutting down");
    if (pthread_mutex_trylock(&bc->reload_lock))
        return bora_errf(err, -EBUSY, "reload: a reload is already running");
    atomic_store(&bc->reloading, true);
    struct generator ng;
    struct bora_err e = { "" };
    int rc = borad_generator_open(&bc->start_cfg, bc->model_dir, &ng, &e);
    if (rc < 0) {
        bora_errf(err, rc, "reload: model %s: %s; the old model keeps serving", bc->model_dir, e.msg);
    } else if (gen_engine_has_tokenizer(bc->g) && !gen_engine_has_tokenizer(&ng)) {
        /* a tokenizer file missing mid-update would leave every text request failing */
        rc = bora_errf(err, -ENOENT, "reload: model %s: no tokenizer file found (tokenizer.model, tokenizer.json or "
                       "tekken.json), and the serving model has one: not swapped, the old model keeps serving",
                       bc->model_dir);
        ng.ops->close(&ng);
    } else {
        pthread_mutex_lock(&bc->gen_lock);
        rc = dp_server_swap_generator(bc->s, &ng, err);   /* ng now holds the old one */
        if (rc == 0) {
            pthread_mutex_lock(&bc->lock);
            describe_generator(bc, bc->g);
            pthread_mutex_unlock(&bc->lock);
        }
        pthread_mutex_unlock(&bc->gen_lock);
        ng.ops->close(&ng);
    }
    atomic_store(&bc->reloading, false);
    pthread_mutex_unlock(&bc->reload_lock);
    if (rc == 0)
        bora_log(BORA_LOG_INFO, "console: model %s reloaded", bc->model_dir);
    else
        bora_log(BORA_LOG_ERROR, "console: %s", err->msg);
    return rc;
}

static int op_drain(void *ctx, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    if (dp_server_paused(bc->s))
        return bora_errf(err, -EALREADY, "drain: already draining ('resume' accepts again)");
    dp_server_pause(bc->s, true);
    bora_log(BORA_LOG_INFO, "console: drain: new requests get SHUTTING_DOWN; queued and running ones go on");
    return 0;
}

static int op_resume(void *ctx, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    if (shutting_down(bc))
        return bora_errf(err, -ESHUTDOWN, "resume: borad is shutting down");
    if (!dp_server_paused(bc->s))
        return bora_errf(err, -EALREADY, "resume: not draining");
    dp_server_pause(bc->s, false);
    bora_log(BORA_LOG_INFO, "console: resume: accepting requests again");
    return 0;
}

static int op_shutdown(void *ctx, struct bora_err *err)
{
    (void)err;
    struct borad_console *bc = ctx;
    atomic_store(&bc->stopping, true);
    bora_log(BORA_LOG_INFO, "console: shutdown: draining, then exiting");
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

static void vram_add(struct console_model *o, const char *category, uint64_t bytes)
{
    if (o->n_vram < CONSOLE_VRAM_MAX) {
        snprintf(o->vram[o->n_vram].category, sizeof o->vram[o->n_vram].category, "%s", category);
        o->vram[o->n_vram++].bytes = bytes;
    }
}

/* Before the console reads its registry: the GPU memory gauges from the driver (the engine's
 * allocations are fixed at open, other processes' are not). Nothing on the CPU backend. */
static void op_refresh(void *ctx)
{
    struct borad_console *bc = ctx;
    struct engine_mem mem;
    pthread_mutex_lock(&bc->gen_lock);     /* a reload does not close the engine under us */
    int rc = gen_engine_memory(bc->g, &mem);
    pthread_mutex_unlock(&bc->gen_lock);
    if (rc == 0) {
        metrics_gauge_set(bc->c.metrics, METRICS_GPU_MEM_USED, mem.device_used);
        metrics_gauge_set(bc->c.metrics, METRICS_GPU_MEM_TOTAL, mem.device_total);
    }
}

static int model_describe(struct borad_console *bc, struct console_model *o, struct bora_err *err)
{
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
    /* VRAM by category (the CPU backend holds none: the list stays empty) */
    struct engine_mem mem;
    if (gen_engine_memory(bc->g, &mem) == 0) {
        vram_add(o, "weights", mem.weights);
        vram_add(o, "kv_cache", mem.kv_cache);
        vram_add(o, "activations", mem.activations);
        vram_add(o, "prefill", mem.workspace);
        vram_add(o, "gpu_used_all", mem.device_used);
        vram_add(o, "gpu_total", mem.device_total);
    }
    return 0;
}

static int op_model(void *ctx, struct console_model *o, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    pthread_mutex_lock(&bc->gen_lock);     /* waits while a reload swaps the model */
    int rc = model_describe(bc, o, err);
    pthread_mutex_unlock(&bc->gen_lock);
    return rc;
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

/* Sets key on a copy of the running config; a [dataplane] or [limits] key goes to the dataplane
 * (which may refuse it) before the copy becomes the running config. */
static int op_config_apply(void *ctx, const char *key, const char *value, struct bora_err *err)
{
    struct borad_console *bc = ctx;
    struct bora_config *next = malloc(sizeof *next);
    if (!next)
        return bora_errf(err, -ENOMEM, "config set: out of memory");
    pthread_mutex_lock(&bc->lock);
    *next = bc->cfg;
    int rc = config_set(next, key, value, err);
    if (!rc && (!strncmp(key, "dataplane.", 10) || !strncmp(key, "limits.", 7))) {
        struct dp_config dc = { 0 };
        struct dp_cidr allow[DP_ALLOW_MAX];
        borad_dp_live(next, &dc, allow);
        rc = dp_server_set_policy(bc->s, &dc, err);
    }
    if (!rc)
        bc->cfg = *next;
    const int next_level = next->console.log_level;
    char shown[1024] = "";   /* the value as stored, as the console's reply shows it */
    if (!rc && config_get(next, key, shown, sizeof shown) < 0)
        shown[0] = 0;
    pthread_mutex_unlock(&bc->lock);
    free(next);
    if (!rc && !strcmp(key, "console.log_level"))
        bora_log_set_level(next_level);
    if (!rc)
        bora_log(BORA_LOG_INFO, "console: %s = %s", key,
                 strstr(key, "password") || strstr(key, "psk") ? "(hidden)" : shown[0] ? shown : value);
    return rc;
}

static void borad_console_free(struct borad_console *bc)
{
    pthread_mutex_destroy(&bc->lock);
    pthread_mutex_destroy(&bc->gen_lock);
    pthread_mutex_destroy(&bc->reload_lock);
    free(bc);
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
    pthread_mutex_init(&bc->gen_lock, NULL);
    pthread_mutex_init(&bc->reload_lock, NULL);
    bc->cfg = bc->start_cfg = *cfg;
    bc->s = s;
    bc->g = g;
    describe_generator(bc, g);
    /* what status and model show: the built-in default says what it is, as the banner does */
    int nd = snprintf(bc->dir, sizeof bc->dir, "%s%s", cfg->model.path[0] ? "" : "built-in default (random weights, "
                      "not a trained model): ", dir);
    (void)nd;
    snprintf(bc->model_dir, sizeof bc->model_dir, "%s", dir);
    bc->ops = (struct console_ops){
        .ctx = bc, .status = op_status, .requests = op_requests, .cancel = op_cancel, .model = op_model,
        .drain = op_drain, .resume = op_resume, .reload = op_reload, .shutdown = op_shutdown,
        .config_read = op_config_read, .config_apply = op_config_apply, .refresh = op_refresh,
    };
    console_init(&bc->c, &bc->ops, m);
    struct bora_err err = { "" };
    int rc = console_server_start(&bc->srv, &bc->c, &bc->cfg.console, &err);
    if (rc) {
        fprintf(stderr, "borad: %s\n", err.msg);
        borad_console_free(bc);
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
    borad_console_free(bc);
}
