/* test_wstream.c — the io_uring weight streamer and the pinned pool: odd item sizes and offsets
 * arrive byte-exactly (O_DIRECT on the build directory's filesystem, buffered on tmpfs), short
 * reads are resubmitted, EAGAIN retried, a refused O_DIRECT read falls back to buffered, an
 * injected error names file and offset, truncation is refused, groups complete in order, a sink
 * that holds buffers gets them recycled only once released, and a model streamed this way
 * computes the same logits as the mapped one (and is left whole after a failed load). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem/model_stream.h"
#include "mem/pinned.h"
#include "mem/wstream.h"
#include "model/default_model.h"
#include "model/engine.h"

#define FILE_BYTES (3u * 1024 * 1024 + 777)   /* not a multiple of the alignment */
#define N_ITEMS 40
#define N_GROUPS 5

static char direct_path[1200], tmpfs_path[512], build_tmp[1200];   /* build_tmp: BUILD/tmp, on disk */
static uint8_t *ref;   /* the file's bytes */

static uint64_t rng(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void write_bytes(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    (void)state;
    ref = malloc(FILE_BYTES);
    if (!ref)
        return -1;
    uint64_t s = 42;
    for (size_t i = 0; i < FILE_BYTES; i++)
        ref[i] = (uint8_t)(rng(&s) >> 56);
    /* a file on disk, not tmpfs (O_DIRECT): BUILD/tmp of the build this binary is in */
    char exe[1100];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    char *cut = strstr(exe, "/tests/");
    if (cut)
        *cut = 0;
    else
        snprintf(exe, sizeof exe, "build");
    snprintf(build_tmp, sizeof build_tmp, "%s/tmp", exe);
    mkdir(build_tmp, 0755);
    snprintf(direct_path, sizeof direct_path, "%s/tmp/wstream-%d.bin", exe, (int)getpid());
    /* tmpfs when there is one (/dev/shm), else /tmp */
    struct stat st;
    snprintf(tmpfs_path, sizeof tmpfs_path, "%s/bora-wstream-%d.bin", stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp",
             (int)getpid());
    write_bytes(direct_path, ref, FILE_BYTES);
    write_bytes(tmpfs_path, ref, FILE_BYTES);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(direct_path);
    unlink(tmpfs_path);
    free(ref);
    return 0;
}

/* Whether this filesystem takes O_DIRECT opens (the streamer must then use it). */
static bool direct_possible(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* A plan of N_ITEMS ranges at odd offsets with odd lengths (1 byte, 0 bytes, several MB-ish
 * spans across buffer boundaries, the file's last byte), each with its own destination. */
struct plan_fix {
    const char *files[1];
    struct wstream_item items[N_ITEMS];
    struct wstream_plan plan;
    uint8_t *dst[N_ITEMS];
};

static void plan_make(struct plan_fix *p, const char *path, uint64_t seed)
{
    p->files[0] = path;
    uint64_t off = 3;
    for (int i = 0; i < N_ITEMS; i++) {
        uint64_t len = i == 1 ? 1 : i == 2 ? 0 : 1 + rng(&seed) % 100001;
        if (i == N_ITEMS - 1)
            len = FILE_BYTES - off;              /* up to the last byte */
        else
            off += rng(&seed) % 5000;             /* gaps, some larger than nothing */
        if (off + len > FILE_BYTES)
            len = FILE_BYTES - off;
        p->items[i] = (struct wstream_item){ .file = 0, .offset = off, .len = len, .group = i * N_GROUPS / N_ITEMS };
        p->dst[i] = malloc(len + 1);
        memset(p->dst[i], 0xee, len + 1);
        p->items[i].dst = p->dst[i];
        off += len;
    }
    p->plan = (struct wstream_plan){ .files = p->files, .n_files = 1, .items = p->items, .n_items = N_ITEMS,
                                     .n_groups = N_GROUPS };
}

static void plan_check(const struct plan_fix *p)
{
    for (int i = 0; i < N_ITEMS; i++) {
        const struct wstream_item *it = &p->items[i];
        if (it->len)
            assert_memory_equal(p->dst[i], ref + it->offset, it->len);
        assert_int_equal(p->dst[i][it->len], 0xee);   /* nothing written past the item */
    }
}

static void plan_free(struct plan_fix *p)
{
    for (int i = 0; i < N_ITEMS; i++)
        free(p->dst[i]);
}

static uint64_t plan_bytes(const struct plan_fix *p)
{
    uint64_t n = 0;
    for (int i = 0; i < N_ITEMS; i++)
        n += p->items[i].len;
    return n;
}

/* Runs the plan over path with opts; returns the run's code, *st its stats, err its message. */
static int run_plan(const char *path, const struct wstream_opts *o, struct wstream_stats *st, struct bora_err *err,
                    bool check)
{
    struct plan_fix p;
    plan_make(&p, path, 7);
    struct wstream *ws;
    int rc = wstream_open(&ws, &p.plan, o, err);
    if (!rc) {
        rc = wstream_run(ws, &wstream_sink_memcpy, err);
        wstream_stats_get(ws, st);
        if (!rc && check) {
            plan_check(&p);
            assert_int_equal(st->bytes_delivered, plan_bytes(&p));
            assert_int_equal(wstream_groups_ready(ws), N_GROUPS);
        }
        wstream_close(ws);
    }
    plan_free(&p);
    return rc;
}

static void test_direct_exact(void **state)
{
    (void)state;
    size_t sizes[] = { 4096, 3 * 4096, 64 * 1024, 1u << 20 };   /* buffer (= read) sizes */
    for (size_t i = 0; i < BORA_ARRAY_LEN(sizes); i++) {
        struct wstream_opts o = { .qd = 16, .buf_bytes = sizes[i] };
        struct wstream_stats st;
        struct bora_err err = { "" };
        assert_int_equal(run_plan(direct_path, &o, &st, &err, true), 0);
        assert_int_equal(st.direct_files, direct_possible(direct_path) ? 1 : 0);
        assert_true(st.reads >= FILE_BYTES / sizes[i] / 2);
    }
}

static void test_buffered_exact(void **state)
{
    (void)state;
    struct wstream_opts o = { .qd = 20, .buf_bytes = 5000, .direct = WSTREAM_DIRECT_OFF };   /* 5000 → 8192 */
    struct wstream_stats st;
    struct bora_err err = { "" };
    assert_int_equal(run_plan(tmpfs_path, &o, &st, &err, true), 0);
    assert_int_equal(st.buffered_files, 1);
    assert_int_equal(st.direct_files, 0);
}

static void test_short_reads(void **state)
{
    (void)state;
    /* buffered: odd short reads; O_DIRECT: short reads of whole blocks */
    struct wstream_fault f1 = { .file = -1, .short_read = 1001 };
    struct wstream_opts o1 = { .qd = 16, .buf_bytes = 65536, .direct = WSTREAM_DIRECT_OFF, .fault = &f1 };
    struct wstream_stats st;
    struct bora_err err = { "" };
    assert_int_equal(run_plan(tmpfs_path, &o1, &st, &err, true), 0);
    assert_true(st.short_reads > 100);
    struct wstream_fault f2 = { .file = -1, .short_read = 3 * 4096 };
    struct wstream_opts o2 = { .qd = 16, .buf_bytes = 65536, .fault = &f2 };
    assert_int_equal(run_plan(direct_path, &o2, &st, &err, true), 0);
    assert_true(st.short_reads > 10);
}

static void test_eagain_retried(void **state)
{
    (void)state;
    struct wstream_fault f = { .file = 0, .offset = 1234567, .err = EAGAIN, .times = 3 };
    struct wstream_opts o = { .qd = 16, .buf_bytes = 65536, .fault = &f };
    struct wstream_stats st;
    struct bora_err err = { "" };
    assert_int_equal(run_plan(direct_path, &o, &st, &err, true), 0);
    assert_int_equal(st.retries, 3);
}

static void test_direct_refused_falls_back(void **state)
{
    (void)state;
    if (!direct_possible(direct_path))
        skip();   /* loud: cmocka reports it */
    struct wstream_fault f = { .file = 0, .offset = 20000, .err = EINVAL, .times = 1 };
    struct wstream_opts o = { .qd = 16, .buf_bytes = 8192, .fault = &f };
    struct wstream_stats st;
    struct bora_err err = { "" };
    assert_int_equal(run_plan(direct_path, &o, &st, &err, true), 0);
    assert_int_equal(st.buffered_files, 1);
}

static void test_error_names_file_and_offset(void **state)
{
    (void)state;
    const char *paths[] = { direct_path, tmpfs_path };
    for (int k = 0; k < 2; k++) {
        const uint64_t at = 2000003;
        struct wstream_fault f = { .file = 0, .offset = at, .err = EIO };
        struct wstream_opts o = { .qd = 16, .buf_bytes = 65536, .fault = &f, .direct = k ? WSTREAM_DIRECT_OFF : 0 };
        struct wstream_stats st;
        struct bora_err err = { "" };
        assert_int_equal(run_plan(paths[k], &o, &st, &err, false), -EIO);
        assert_non_null(strstr(err.msg, paths[k]));
        const char *p = strstr(err.msg, "read of ");
        assert_non_null(p);
        unsigned long long n, off;
        assert_int_equal(sscanf(p, "read of %llu bytes at offset %llu", &n, &off), 2);
        assert_true(off <= at && at < off + n);   /* the failing read covers the bad byte */
        assert_non_null(strstr(err.msg, strerror(EIO)));
    }
}

static void test_truncated_refused(void **state)
{
    (void)state;
    char path[sizeof direct_path + 8];
    snprintf(path, sizeof path, "%s.trunc", direct_path);
    write_bytes(path, ref, FILE_BYTES - 100);
    struct wstream_stats st;
    struct bora_err err = { "" };
    struct wstream_opts o = { .qd = 16 };
    /* the plan reaches the original end: refused at open */
    assert_int_equal(run_plan(path, &o, &st, &err, false), -EINVAL);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "truncated"));
    /* truncated after open: the read hits the end of the file early */
    write_bytes(path, ref, FILE_BYTES);
    struct plan_fix p;
    plan_make(&p, path, 7);
    struct wstream *ws;
    assert_int_equal(wstream_open(&ws, &p.plan, &o, &err), 0);
    assert_int_equal(truncate(path, 2u << 20), 0);
    assert_int_equal(wstream_run(ws, &wstream_sink_memcpy, &err), -EINVAL);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "truncated"));
    wstream_close(ws);
    plan_free(&p);
    unlink(path);
}

/* A sink that holds every buffer and copies only when polled: a buffer reused before its
 * release would corrupt the destination. */
struct held_sink {
    struct wstream_chunk pending[256][8];
    int n_pending[256];
    int polls;
};

static int held_on_chunk(void *ctx, const struct wstream_chunk *c, struct bora_err *err)
{
    struct held_sink *h = ctx;
    if (h->n_pending[c->buf] == 8)
        return bora_errf(err, -ENOSPC, "test sink: too many chunks in one buffer");
    h->pending[c->buf][h->n_pending[c->buf]++] = *c;
    return 0;
}

static int held_buf_done(void *ctx, int buf, struct bora_err *err)
{
    (void)ctx, (void)buf, (void)err;
    return 0;
}

static int held_buf_poll(void *ctx, int buf, bool wait, struct bora_err *err)
{
    (void)err;
    struct held_sink *h = ctx;
    if (!wait && ++h->polls % 3)
        return 0;   /* "copy still running" */
    for (int i = 0; i < h->n_pending[buf]; i++) {
        const struct wstream_chunk *c = &h->pending[buf][i];
        memcpy((uint8_t *)c->item->dst + c->item_off, c->data, c->len);
    }
    h->n_pending[buf] = 0;
    return 1;
}

static void test_held_buffers_and_groups(void **state)
{
    (void)state;
    struct plan_fix p;
    plan_make(&p, direct_path, 7);
    static struct held_sink h;
    memset(&h, 0, sizeof h);
    struct wstream_sink sink = { .ctx = &h, .on_chunk = held_on_chunk, .buf_done = held_buf_done,
                                 .buf_poll = held_buf_poll };
    struct wstream_opts o = { .qd = 16, .buf_bytes = 16384, .n_bufs = 20 };
    struct wstream *ws;
    struct bora_err err = { "" };
    assert_int_equal(wstream_open(&ws, &p.plan, &o, &err), 0);
    assert_int_equal(wstream_start(ws, &sink, &err), 0);
    for (int g = 0; g < N_GROUPS; g++) {
        assert_int_equal(wstream_wait_group(ws, g), 0);
        assert_true(wstream_groups_ready(ws) > g);
        for (int i = 0; i < N_ITEMS; i++)   /* a resident group is complete */
            if (p.items[i].group <= g && p.items[i].len)
                assert_memory_equal(p.dst[i], ref + p.items[i].offset, p.items[i].len);
    }
    assert_int_equal(wstream_join(ws, &err), 0);
    plan_check(&p);
    wstream_close(ws);
    plan_free(&p);
}

static void test_pinned_pool(void **state)
{
    (void)state;
    struct pinned_pool *pool;
    struct bora_err err = { "" };
    struct pinned_opts po = { .host_only = true, .limit = 1u << 20 };
    assert_int_equal(pinned_pool_open(&pool, &po, &err), 0);
    void *a = pinned_alloc(pool, 5000, &err), *b = pinned_alloc(pool, 4096, &err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal((uintptr_t)a % PINNED_ALIGN, 0);
    struct pinned_stats st;
    pinned_stats_get(pool, &st);
    assert_int_equal(st.bytes_in_use, 8192 + 4096);
    assert_int_equal(st.blocks, 2);
    assert_true(st.kind == PINNED_MLOCK || (st.kind == PINNED_PAGEABLE && pinned_pool_note(pool)[0]));
    assert_null(pinned_alloc(pool, 1u << 20, &err));   /* over the limit */
    assert_non_null(strstr(err.msg, "limit"));
    pinned_free(pool, a);
    pinned_stats_get(pool, &st);
    assert_int_equal(st.bytes_in_use, 4096);
    /* staging buffers from the pool */
    struct wstream_opts o = { .qd = 16, .buf_bytes = 16384, .buf_alloc = pinned_alloc_cb, .buf_free = pinned_free_cb,
                              .buf_ctx = pool };
    struct wstream_stats ws;
    assert_int_equal(run_plan(direct_path, &o, &ws, &err, true), 0);
    pinned_stats_get(pool, &st);
    assert_int_equal(st.bytes_in_use, 4096);   /* all staging returned */
    pinned_pool_close(pool);
}

/* ---- a model through the streamer ---- */

static char model_dir[512];

static void model_dir_make(void)
{
    if (model_dir[0])
        return;
    snprintf(model_dir, sizeof model_dir, "%.400s/wstream-model-%d", build_tmp, (int)getpid());   /* any BUILD */
    struct bora_err err;
    assert_int_equal(default_model_write(model_dir, &err), 0);
}

static void model_dir_rm(void)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", model_dir);
    assert_int_equal(system(cmd), 0);
}

static void logits_of(const struct model *m, float *out)
{
    struct engine *e;
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 16, .n_threads = 1 };
    struct bora_err err;
    assert_int_equal(engine_open(&e, m, &eo, &err), 0);
    const int32_t ids[] = { 1, 1234, 5678, 42, 999 };
    assert_int_equal(engine_forward(e, ids, 5, 0, out), 0);
    engine_close(e);
}

static bool in_shards(const struct model *m, const void *p)
{
    for (int i = 0; i < m->n_shards; i++)
        if ((const uint8_t *)p >= (const uint8_t *)m->shards[i].map &&
            (const uint8_t *)p < (const uint8_t *)m->shards[i].map + m->shards[i].map_bytes)
            return true;
    return false;
}

static void test_model_streamed_same_logits(void **state)
{
    (void)state;
    model_dir_make();
    struct model *m;
    struct bora_err err = { "" };
    assert_int_equal(model_open(&m, model_dir, NULL, &err), 0);
    const size_t V = (size_t)m->cfg.vocab_size;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b);
    logits_of(m, a);
    struct pinned_pool *pool;
    struct pinned_opts po = { .host_only = true };
    assert_int_equal(pinned_pool_open(&pool, &po, &err), 0);
    struct model_stream *ms;
    struct wstream_opts o = { .qd = 16, .buf_bytes = 1u << 20 };
    assert_int_equal(model_stream_begin(&ms, m, pool, &o, &err), 0);
    for (int l = -1; l <= m->cfg.n_layers; l++)   /* layer by layer, as the pipelined start does */
        assert_int_equal(model_stream_wait_layer(ms, l), 0);
    struct wstream_stats st;
    assert_int_equal(model_stream_finish(ms, &st, &err), 0);
    assert_false(in_shards(m, m->tok_emb.data));
    assert_false(in_shards(m, m->layers[m->cfg.n_layers - 1].w_down.data));
    assert_false(in_shards(m, m->output.data));
    assert_true(st.bytes_delivered >= m->weight_bytes - 1024);
    logits_of(m, b);
    assert_memory_equal(a, b, V * sizeof *a);
    model_close(m);
    model_stream_close(ms);
    struct pinned_stats ps;
    pinned_stats_get(pool, &ps);
    assert_int_equal(ps.bytes_in_use, 0);
    pinned_pool_close(pool);
    free(a);
    free(b);
}

static int wait_layer_counting(void *ctx, int layer)
{
    struct model_stream **ms = ctx;
    static int expect = -1;
    if (layer == -1)
        expect = -1;
    assert_int_equal(layer, expect);   /* asked in increasing order, each once */
    expect++;
    return model_stream_wait_layer(*ms, layer);
}

/* The pipelined start: the engine's first forward waits for each layer as it needs it. */
static void test_model_pipelined_forward(void **state)
{
    (void)state;
    model_dir_make();
    struct model *m;
    struct bora_err err = { "" };
    assert_int_equal(model_open(&m, model_dir, NULL, &err), 0);
    const size_t V = (size_t)m->cfg.vocab_size;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b);
    logits_of(m, a);
    struct pinned_pool *pool;
    struct pinned_opts po = { .host_only = true };
    assert_int_equal(pinned_pool_open(&pool, &po, &err), 0);
    struct model_stream *ms;
    struct wstream_opts o = { .qd = 16, .buf_bytes = 1u << 20 };
    assert_int_equal(model_stream_begin(&ms, m, pool, &o, &err), 0);
    struct engine *e;
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 16, .n_threads = 1,
                              .layer_wait = wait_layer_counting, .layer_wait_ctx = &ms };
    assert_int_equal(engine_open(&e, m, &eo, &err), 0);
    const int32_t ids[] = { 1, 1234, 5678, 42, 999 };
    assert_int_equal(engine_forward(e, ids, 5, 0, b), 0);
    assert_int_equal(e->layers_ready, m->cfg.n_layers);
    assert_int_equal(model_stream_finish(ms, NULL, &err), 0);
    assert_memory_equal(a, b, V * sizeof *a);
    engine_close(e);
    model_close(m);
    model_stream_close(ms);
    pinned_pool_close(pool);
    free(a);
    free(b);
}

static void test_model_failed_load_leaves_model_whole(void **state)
{
    (void)state;
    model_dir_make();
    struct model *m;
    struct bora_err err = { "" };
    assert_int_equal(model_open(&m, model_dir, NULL, &err), 0);
    const size_t V = (size_t)m->cfg.vocab_size;
    float *a = malloc(V * sizeof *a), *b = malloc(V * sizeof *b);
    logits_of(m, a);
    const void *emb = m->tok_emb.data, *down = m->layers[2].w_down.data;
    struct pinned_pool *pool;
    struct pinned_opts po = { .host_only = true };
    assert_int_equal(pinned_pool_open(&pool, &po, &err), 0);
    const uint64_t at = (16u << 20) + (7u << 19);   /* after the 16 MiB embedding: inside layer 2 */
    struct wstream_fault f = { .file = 0, .offset = at, .err = EIO };
    struct wstream_opts o = { .qd = 16, .buf_bytes = 1u << 20, .fault = &f };
    struct model_stream *ms;
    assert_int_equal(model_stream_begin(&ms, m, pool, &o, &err), 0);
    if (model_stream_wait_layer(ms, 0) == 0)   /* early layers may arrive (and be bound) first */
        assert_false(in_shards(m, m->layers[0].wq.data));
    assert_int_equal(model_stream_wait_layer(ms, m->cfg.n_layers), -EIO);
    assert_int_equal(model_stream_finish(ms, NULL, &err), -EIO);
    assert_non_null(strstr(err.msg, "model.safetensors"));
    assert_non_null(strstr(err.msg, "offset"));
    assert_ptr_equal(m->tok_emb.data, emb);   /* back on the mapping */
    assert_ptr_equal(m->layers[2].w_down.data, down);
    assert_true(in_shards(m, m->layers[0].wq.data));
    struct pinned_stats ps;
    pinned_stats_get(pool, &ps);
    assert_int_equal(ps.bytes_in_use, 0);   /* the host copy is gone */
    logits_of(m, b);
    assert_memory_equal(a, b, V * sizeof *a);
    model_stream_close(ms);
    model_close(m);
    pinned_pool_close(pool);
    model_dir_rm();
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direct_exact),
        cmocka_unit_test(test_buffered_exact),
        cmocka_unit_test(test_short_reads),
        cmocka_unit_test(test_eagain_retried),
        cmocka_unit_test(test_direct_refused_falls_back),
        cmocka_unit_test(test_error_names_file_and_offset),
        cmocka_unit_test(test_truncated_refused),
        cmocka_unit_test(test_held_buffers_and_groups),
        cmocka_unit_test(test_pinned_pool),
        cmocka_unit_test(test_model_streamed_same_logits),
        cmocka_unit_test(test_model_pipelined_forward),
        cmocka_unit_test(test_model_failed_load_leaves_model_whole),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
