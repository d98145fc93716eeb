/* model_direct.c — direct-load plans (see model_direct.h). */
#include "mem/model_direct.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct md_part {
    struct wstream_plan plan;
    int first, n;            /* items[first .. first+n) */
};

struct model_direct_plan {
    const char **files;
    struct wstream_item *items;   /* (n) in file order */
    struct md_part part[MODEL_DIRECT_PARTS_MAX];
    int n_parts;
    uint64_t bytes;
};

static int shard_of(const struct model *m, const void *p, uint64_t len, uint64_t *off)
{
    for (int i = 0; i < m->n_shards; i++) {
        const uint8_t *b = m->shards[i].map;
        if ((const uint8_t *)p >= b + m->shards[i].data_offset && (const uint8_t *)p + len <= b + m->shards[i].map_bytes) {
            *off = (uint64_t)((const uint8_t *)p - b);
            return i;
        }
    }
    return -1;
}

static int item_cmp(const void *a, const void *b)
{
    const struct wstream_item *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int items_build(struct model_direct_plan *p, const struct model *m, const struct model_direct_dst *d, int n,
                       struct bora_err *err)
{
    for (int i = 0; i < n; i++) {
        const struct wtensor *w = d[i].w;
        uint64_t len = (uint64_t)(w->rows * w->cols) * bora_dtype_size(w->dtype), off = 0;
        int s = w->data ? shard_of(m, w->data, len, &off) : -1;
        if (s < 0)
            return bora_errf(err, -EINVAL, "direct load: tensor %d (%lld × %lld) does not lie in a mapped shard", i,
                             (long long)w->rows, (long long)w->cols);
        if (d[i].row_bytes * (uint64_t)w->rows != len || d[i].pitch < d[i].row_bytes)
            return bora_errf(err, -EINVAL,
                             "direct load: tensor %d: %lld rows of %llu bytes (pitch %llu) do not hold its %llu bytes", i,
                             (long long)w->rows, (unsigned long long)d[i].row_bytes, (unsigned long long)d[i].pitch,
                             (unsigned long long)len);
        p->items[i] = (struct wstream_item){ .file = s, .offset = off, .len = len, .group = 0, .dst = d[i].dst,
                                             .row_bytes = d[i].pitch == d[i].row_bytes ? 0 : d[i].row_bytes,
                                             .dst_pitch = d[i].pitch };
        p->bytes += len;
    }
    qsort(p->items, (size_t)n, sizeof *p->items, item_cmp);
    return 0;
}

static void parts_split(struct model_direct_plan *p, const struct model *m, int n, int n_parts)
{
    if (n_parts > n)
        n_parts = n > 0 ? n : 1;
    uint64_t acc = 0;
    int k = 0;
    p->part[0].first = 0;
    for (int i = 0; i < n; i++) {
        acc += p->items[i].len;
        p->part[k].n++;
        /* close part k once it reached its share, leaving at least one tensor per later part */
        if (k + 1 < n_parts && acc * (uint64_t)n_parts >= p->bytes * (uint64_t)(k + 1) && n - 1 - i >= n_parts - 1 - k) {
            k++;
            p->part[k].first = i + 1;
        }
    }
    p->n_parts = k + 1;
    for (int j = 0; j < p->n_parts; j++)
        p->part[j].plan = (struct wstream_plan){ .files = p->files, .n_files = m->n_shards,
                                                 .items = p->items + p->part[j].first, .n_items = p->part[j].n,
                                                 .n_groups = 1 };
}

int model_direct_plan_build(struct model_direct_plan **out, const struct model *m, const struct model_direct_dst *d,
                            int n, int n_parts, struct bora_err *err)
{
    *out = NULL;
    if (n_parts < 1 || n_parts > MODEL_DIRECT_PARTS_MAX || n < 0)
        return bora_errf(err, -EINVAL, "direct load: %d parts (1..%d) of %d tensors", n_parts, MODEL_DIRECT_PARTS_MAX, n);
    struct model_direct_plan *p = calloc(1, sizeof *p);
    if (p) {
        p->files = calloc((size_t)(m->n_shards > 0 ? m->n_shards : 1), sizeof *p->files);
        p->items = calloc((size_t)(n > 0 ? n : 1), sizeof *p->items);
    }
    if (!p || !p->files || !p->items) {
        model_direct_plan_free(p);
        return bora_errf(err, -ENOMEM, "direct load: out of memory");
    }
    for (int i = 0; i < m->n_shards; i++)
        p->files[i] = m->shards[i].path;
    int rc = items_build(p, m, d, n, err);
    if (rc) {
        model_direct_plan_free(p);
        return rc;
    }
    parts_split(p, m, n, n_parts);
    *out = p;
    return 0;
}

int model_direct_plan_parts(const struct model_direct_plan *p)
{
    return p->n_parts;
}

const struct wstream_plan *model_direct_plan_part(const struct model_direct_plan *p, int i)
{
    return i >= 0 && i < p->n_parts ? &p->part[i].plan : NULL;
}

uint64_t model_direct_plan_bytes(const struct model_direct_plan *p)
{
    return p->bytes;
}

void model_direct_plan_free(struct model_direct_plan *p)
{
    if (!p)
        return;
    free(p->files);
    free(p->items);
    free(p);
}

bool model_direct_all_mapped(const struct model *m, const struct model_direct_dst *d, int n)
{
    for (int i = 0; i < n; i++) {
        const struct wtensor *w = d[i].w;
        uint64_t off;
        if (!w->data || shard_of(m, w->data, (uint64_t)(w->rows * w->cols) * bora_dtype_size(w->dtype), &off) < 0)
            return false;
    }
    return true;
}

int model_direct_split_before(const struct model *m, struct model_direct_dst *d, int n, int shard, uint64_t off)
{
    struct model_direct_dst *tmp = malloc((size_t)(n > 0 ? n : 1) * sizeof *tmp);
    if (!tmp)
        return 0;   /* nothing counts as before: every tensor is read from the disk */
    int k = 0, j = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            const struct wtensor *w = d[i].w;
            uint64_t len = (uint64_t)(w->rows * w->cols) * bora_dtype_size(w->dtype), at = 0;
            int s = w->data ? shard_of(m, w->data, len, &at) : -1;
            bool before = s >= 0 && (s < shard || (s == shard && at + len <= off));
            if (before == (pass == 0))
                tmp[j++] = d[i];
            k += pass == 0 && before;
        }
    memcpy(d, tmp, (size_t)n * sizeof *d);
    free(tmp);
    return k;
}

bool model_direct_cached(const struct model *m)
{
    for (int i = 0; i < m->n_shards; i++) {
        size_t pages = (m->shards[i].map_bytes + 4095) / 4096, in = 0;
        unsigned char *v = malloc(pages ? pages : 1);
        if (!v || mincore(m->shards[i].map, m->shards[i].map_bytes, v) < 0) {
            free(v);
            return false;
        }
        for (size_t k = 0; k < pages; k++)
            in += v[k] & 1;
        free(v);
        if (in * 10 < pages * 9)
            return false;
    }
    return true;
}

static int host_chunk(void *ctx, const struct wstream_chunk *c, struct bora_err *err)
{
    (void)ctx, (void)err;
    const struct wstream_item *it = c->item;
    const uint8_t *src = c->data;
    uint64_t off = c->item_off, left = c->len;
    if (!it->row_bytes) {
        memcpy((uint8_t *)it->dst + off, src, left);
        return 0;
    }
    while (left) {
        uint64_t r = off / it->row_bytes, in = off % it->row_bytes;
        uint64_t k = it->row_bytes - in < left ? it->row_bytes - in : left;
        memcpy((uint8_t *)it->dst + r * it->dst_pitch + in, src, k);
        src += k, off += k, left -= k;
    }
    return 0;
}

const struct wstream_sink model_direct_sink_host = { .on_chunk = host_chunk };
