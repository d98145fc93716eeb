/* model_stream.c — a model's weights through the streamer (see model_stream.h). */
#include "mem/model_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mem/model_direct.h"

#define MS_TENSOR_ALIGN 64   /* bytes; each tensor's start in the host block */

struct ms_entry {
    struct wtensor *w;        /* the tensor re-pointed */
    const void *orig;         /* its mmap'd data */
};

struct model_stream {
    struct model *m;
    struct wstream *ws;
    struct wstream_plan plan;
    const char **files;
    struct wstream_item *items;
    struct ms_entry *ent;     /* (n_items) */
    int n;
    uint8_t *block;
    size_t bytes;
    struct pinned_pool *pool;
    int bound;                /* groups re-pointed so far */
    bool finished;
};

/* The shard that maps p, or -1 (tensor copied or converted at load: not streamed). */
static int shard_of(const struct model *m, const void *p)
{
    for (int i = 0; i < m->n_shards; i++) {
        const uint8_t *b = m->shards[i].map;
        if ((const uint8_t *)p >= b + m->shards[i].data_offset && (const uint8_t *)p < b + m->shards[i].map_bytes)
            return i;
    }
    return -1;
}

static void add(struct model_stream *ms, struct wtensor *w, int group)
{
    int s = shard_of(ms->m, w->data);
    if (s < 0)
        return;
    size_t len = (size_t)(w->rows * w->cols) * bora_dtype_size(w->dtype);
    ms->items[ms->n] = (struct wstream_item){
        .file = s, .offset = (uint64_t)((const uint8_t *)w->data - (const uint8_t *)ms->m->shards[s].map),
        .len = len, .group = group, .dst = (void *)ms->bytes };   /* offset now, pointer once allocated */
    ms->ent[ms->n] = (struct ms_entry){ w, w->data };
    ms->bytes += (len + MS_TENSOR_ALIGN - 1) & ~(size_t)(MS_TENSOR_ALIGN - 1);
    ms->n++;
}

static int plan_build(struct model_stream *ms, struct bora_err *err)
{
    struct model *m = ms->m;
    const int L = m->cfg.n_layers, cap = 9 * L + 3;
    ms->files = calloc((size_t)m->n_shards, sizeof *ms->files);
    ms->items = calloc((size_t)cap, sizeof *ms->items);
    ms->ent = calloc((size_t)cap, sizeof *ms->ent);
    if (!ms->files || !ms->items || !ms->ent)
        return bora_errf(err, -ENOMEM, "model stream: out of memory");
    for (int i = 0; i < m->n_shards; i++)
        ms->files[i] = m->shards[i].path;
    add(ms, &m->tok_emb, 0);
    for (int l = 0; l < L; l++) {
        struct layer_weights *w = &m->layers[l];
        struct wtensor *t[] = { &w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo,
                                &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down };
        for (size_t k = 0; k < BORA_ARRAY_LEN(t); k++)
            add(ms, t[k], 1 + l);
    }
    add(ms, &m->norm, L + 1);
    if (!m->cfg.tied)
        add(ms, &m->output, L + 1);
    ms->plan = (struct wstream_plan){ .files = ms->files, .n_files = m->n_shards, .items = ms->items,
                                      .n_items = ms->n, .n_groups = L + 2 };
    return 0;
}

int model_stream_begin(struct model_stream **out, struct model *m, struct pinned_pool *pool,
                       const struct wstream_opts *wo, struct bora_err *err)
{
    *out = NULL;
    struct model_stream *ms = calloc(1, sizeof *ms);
    if (!ms)
        return bora_errf(err, -ENOMEM, "model stream: out of memory");
    ms->m = m;
    ms->pool = pool;
    int rc = plan_build(ms, err);
    if (rc)
        goto err;
    if (pool)
        ms->block = pinned_alloc(pool, ms->bytes ? ms->bytes : 1, err);
    else if (posix_memalign((void **)&ms->block, PINNED_ALIGN, ms->bytes ? ms->bytes : 1))
        ms->block = NULL;
    if (!ms->block) {
        rc = -ENOMEM;
        if (!pool)
            bora_errf(err, rc, "model stream: cannot allocate %zu bytes for the weights", ms->bytes);
        goto err;
    }
    for (int i = 0; i < ms->n; i++)
        ms->items[i].dst = ms->block + (uintptr_t)ms->items[i].dst;
    struct wstream_opts o = wo ? *wo : (struct wstream_opts){ 0 };
    if (o.direct == WSTREAM_DIRECT_AUTO && model_direct_cached(m))
        o.direct = WSTREAM_DIRECT_OFF;
    if ((rc = wstream_open(&ms->ws, &ms->plan, &o, err)) || (rc = wstream_start(ms->ws, &wstream_sink_memcpy, err)))
        goto err;
    *out = ms;
    return 0;
err:
    model_stream_close(ms);
    return rc;
}

/* Re-points the tensors of groups [bound, upto). Tied heads share the embedding's data. */
static void bind_groups(struct model_stream *ms, int upto)
{
    for (int i = 0; i < ms->n; i++)
        if (ms->items[i].group >= ms->bound && ms->items[i].group < upto)
            ms->ent[i].w->data = ms->items[i].dst;
    if (ms->m->cfg.tied)
        ms->m->output.data = ms->m->tok_emb.data;
    if (upto > ms->bound)
        ms->bound = upto;
}

int model_stream_wait_layer(struct model_stream *ms, int layer)
{
    int g = layer + 1;
    if (g < ms->bound)
        return 0;
    int rc = wstream_wait_group(ms->ws, g);
    if (!rc)
        bind_groups(ms, g + 1);
    return rc;
}

int model_stream_finish(struct model_stream *ms, struct wstream_stats *st, struct bora_err *err)
{
    int rc = wstream_join(ms->ws, err);
    if (st)
        wstream_stats_get(ms->ws, st);
    ms->finished = true;
    if (!rc) {
        bind_groups(ms, ms->plan.n_groups);
        return 0;
    }
    for (int i = 0; i < ms->n; i++)   /* nothing half-loaded: back to the mapped shards */
        ms->ent[i].w->data = ms->ent[i].orig;
    if (ms->m->cfg.tied)
        ms->m->output.data = ms->m->tok_emb.data;
    ms->bound = 0;
    if (ms->pool)
        pinned_free(ms->pool, ms->block);
    else
        free(ms->block);
    ms->block = NULL;
    return rc;
}

int model_stream_weights(struct model_stream **out, struct model *m, struct pinned_pool *pool,
                         const struct wstream_opts *wo, struct wstream_stats *st, struct bora_err *err)
{
    int rc = model_stream_begin(out, m, pool, wo, err);
    if (rc)
        return rc;
    rc = model_stream_finish(*out, st, err);
    if (rc) {
        model_stream_close(*out);
        *out = NULL;
    }
    return rc;
}

size_t model_stream_bytes(const struct model_stream *ms)
{
    return ms->bytes;
}

void model_stream_close(struct model_stream *ms)
{
    if (!ms)
        return;
    wstream_close(ms->ws);   /* joins a run still going */
    if (ms->pool)
        pinned_free(ms->pool, ms->block);
    else
        free(ms->block);
    free(ms->files);
    free(ms->items);
    free(ms->ent);
    free(ms);
}
