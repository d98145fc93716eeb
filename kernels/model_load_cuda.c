/* model_load_cuda.c — weights from the shards straight into the CUDA arena (see model_load_cuda.h). */
#include "kernels/model_load_cuda.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef BORA_CUDA
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/mman.h>
#include <time.h>

#include "kernels/engine_cuda.h"
#include "kernels/wstream_cuda.h"
#include "mem/model_direct.h"
#include "mem/wstream.h"

/* Staging buffers, one way: each its own aligned host block, page-locked for the GPU
 * (cudaHostRegister), so the async copies are true DMA and O_DIRECT / io_uring registration
 * see ordinary pages. */
static void *stage_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    void *p = NULL;
    if (posix_memalign(&p, WSTREAM_ALIGN, bytes))
        return NULL;
    if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
        cudaGetLastError();
        free(p);
        return NULL;
    }
    return p;
}

static void stage_free(void *ctx, void *p)
{
    (void)ctx;
    cudaHostUnregister(p);
    free(p);
}

/* The other way: one mapping per reader (2 MiB aligned, transparent huge pages asked for),
 * registered once and carved into the buffers. Registration costs about a millisecond per
 * MiB of 4 KiB pages, which is why a buffered reader keeps few buffers. */
#define STAGE_HUGE (2u << 20)

struct stage_block {
    uint8_t *map, *base;
    size_t map_bytes, bytes, used;
    bool registered;
};

static int block_open(struct stage_block *b, size_t bytes, bool huge, struct bora_err *err)
{
    memset(b, 0, sizeof *b);
    b->bytes = (bytes + STAGE_HUGE - 1) & ~(size_t)(STAGE_HUGE - 1);
    b->map_bytes = b->bytes + STAGE_HUGE;
    void *m = mmap(NULL, b->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        b->map = NULL;
        return bora_errf(err, -errno, "direct load: %zu bytes of staging: %s", b->map_bytes, strerror(errno));
    }
    b->map = m;
    b->base = (uint8_t *)(((uintptr_t)m + STAGE_HUGE - 1) & ~(uintptr_t)(STAGE_HUGE - 1));
    if (huge)
        madvise(b->base, b->bytes, MADV_HUGEPAGE);   /* advice: refused, the pages stay small */
    cudaError_t ce = cudaHostRegister(b->base, b->bytes, cudaHostRegisterDefault);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        return bora_errf(err, -ENOMEM, "direct load: cudaHostRegister of %zu bytes of staging: %s", b->bytes,
                         cudaGetErrorString(ce));
    }
    b->registered = true;
    return 0;
}

static void block_close(struct stage_block *b)
{
    if (b->registered)
        cudaHostUnregister(b->base);
    if (b->map)
        munmap(b->map, b->map_bytes);
    memset(b, 0, sizeof *b);
}

static void *block_carve(void *ctx, size_t bytes)
{
    struct stage_block *b = ctx;
    if (bytes > b->bytes - b->used)
        return NULL;
    void *p = b->base + b->used;
    b->used += bytes;
    return p;
}

static void block_keep(void *ctx, void *p)
{
    (void)ctx, (void)p;   /* block_close frees the block */
}

struct reader {
    atomic_int *running;   /* readers on their own thread still reading (prepare_engine's stop) */
    const struct wstream_plan *plan;
    struct wstream_opts wo;
    int stage;             /* model_load_cuda_opts.stage */
    struct wstream_stats st;
    struct bora_err err;
    int rc;
    pthread_t th;
    bool started;
};

/* One part: its own ring, staging buffers, copy stream. */
static void *reader_run(void *arg)
{
    struct reader *r = arg;
    struct wstream *ws = NULL;
    struct wstream_cuda_sink *cs = NULL;
    struct wstream_sink sink;
    struct stage_block blk = { 0 };
    int n_bufs = r->wo.n_bufs;
    if (r->stage != MODEL_LOAD_CUDA_STAGE_EACH) {
        size_t buf = r->wo.buf_bytes ? r->wo.buf_bytes : WSTREAM_BUF_BYTES_DEFAULT;
        buf = (buf + WSTREAM_ALIGN - 1) & ~(size_t)(WSTREAM_ALIGN - 1);
        r->rc = block_open(&blk, (size_t)n_bufs * buf, r->stage == MODEL_LOAD_CUDA_STAGE_HUGE, &r->err);
        r->wo.buf_alloc = block_carve, r->wo.buf_free = block_keep, r->wo.buf_ctx = &blk;
    }
    if (!r->rc)
        r->rc = wstream_open(&ws, r->plan, &r->wo, &r->err);
    if (!r->rc)
        r->rc = wstream_cuda_sink_open(&cs, n_bufs, r->plan->n_items, &r->err);
    if (!r->rc) {
        wstream_cuda_sink_bind(cs, &sink);
        r->rc = wstream_run(ws, &sink, &r->err);
    }
    if (ws)
        wstream_stats_get(ws, &r->st);
    wstream_cuda_sink_close(cs);
    wstream_close(ws);
    block_close(&blk);
    if (r->running)
        atomic_fetch_sub(r->running, 1);
    return NULL;
}

/* prepare_engine's stop: every reader thread is done, so the first token waits for the
 * preparation only from here on. */
static int readers_done(void *ctx)
{
    return atomic_load((atomic_int *)ctx) == 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* While the readers run: the engine's preparation (kernels/engine_cuda.h), then an optional
 * throw-away prompt that loads the prefill kernels (its results are garbage: the weights are
 * still arriving; the real prompt rewrites every cache entry it reads). */
static int prepare_engine(struct engine *e, int warm_tokens, atomic_int *running, struct bora_err *err)
{
    int rc = engine_cuda_prepare(e, readers_done, running, err);
    if (rc || warm_tokens < 2)
        return rc;
    if (warm_tokens > e->max_ctx)
        warm_tokens = e->max_ctx;
    int32_t *ids = malloc((size_t)warm_tokens * sizeof *ids);
    if (!ids)
        return bora_errf(err, -ENOMEM, "direct load: out of memory");
    for (int i = 0; i < warm_tokens; i++)
        ids[i] = 1 + i % (e->model->cfg.vocab_size - 1);
    rc = e->ops->forward(e, ids, warm_tokens, 0, NULL);
    free(ids);
    if (rc)
        return bora_errf(err, rc, "direct load: warm-up prompt: %s", engine_cuda_last_error(e));
    return 0;
}

/* A set of readers: a plan's parts with one set of stream options. */
struct reader_set {
    const struct model_direct_plan *plan;
    struct wstream_opts wo;
};

/* Runs every part of every set on its own thread while this one prepares the engine (unless
 * lo->serial); first error wins, the readers' before the preparation's. */
static int stream_parts(struct engine *e, const struct reader_set *sets, int n_sets,
                        const struct model_load_cuda_opts *lo, struct model_load_cuda_stats *st, struct bora_err *err)
{
    struct reader r[MODEL_DIRECT_PARTS_MAX + 1];
    memset(r, 0, sizeof r);
    atomic_int running = 0;
    int n = 0;
    double t0 = now_s();
    for (int k = 0; k < n_sets; k++)
        for (int i = 0; i < model_direct_plan_parts(sets[k].plan) && n < MODEL_DIRECT_PARTS_MAX + 1; i++, n++) {
            r[n].plan = model_direct_plan_part(sets[k].plan, i);
            r[n].wo = sets[k].wo;
            r[n].stage = lo->stage;
            r[n].running = &running;
            atomic_fetch_add(&running, 1);
            if ((lo->serial && n == 0) || pthread_create(&r[n].th, NULL, reader_run, &r[n])) {
                atomic_fetch_sub(&running, 1);
                r[n].running = NULL;
                continue;
            }
            r[n].started = true;
        }
    st->parts = n;
    struct bora_err perr = { "" };
    int prc = 0;
    if (!lo->serial) {
        prc = prepare_engine(e, lo->warm_tokens ? lo->warm_tokens : MODEL_LOAD_CUDA_WARM_TOKENS, &running, &perr);
        st->prepare_s = now_s() - t0;
        st->prepared = prc == 0;
    }
    for (int i = 0; i < n; i++)
        if (!r[i].started)
            reader_run(&r[i]);   /* no thread (or serial): run it here, in turn */
    int rc = 0;
    st->registered = true;
    for (int i = 0; i < n; i++) {
        if (r[i].started)
            pthread_join(r[i].th, NULL);
        if (r[i].rc && !rc) {
            rc = r[i].rc;
            *err = r[i].err;
        }
        st->bytes += r[i].st.bytes_delivered;
        st->registered = st->registered && r[i].st.registered;
        st->direct = st->direct || r[i].st.direct_files > 0;
    }
    st->seconds = now_s() - t0;
    if (!rc && prc) {
        rc = prc;
        *err = perr;
    }
    return rc;
}

/* Cold start: while the CUDA context and the arena are made, a thread reads the shards from
 * their first tensor on, in file order, through the page cache (4 MiB at a time) until told
 * to stop; the tensors it covered then go to buffered readers and only the rest to O_DIRECT. */
#define PREFETCH_CHUNK (4u << 20)

struct prefetch {
    const struct model *m;
    atomic_bool stop;
    int shard;            /* progress: shard, byte offset reached (read after the join) */
    uint64_t off;
    uint64_t bytes;
    pthread_t th;
    bool started;
};

static void *prefetch_run(void *arg)
{
    struct prefetch *pf = arg;
    uint8_t *buf = malloc(PREFETCH_CHUNK);
    for (int s = 0; buf && s < pf->m->n_shards; s++) {
        const struct st_file *sh = &pf->m->shards[s];
        int fd = open(sh->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        pf->shard = s, pf->off = 0;
        uint64_t at = 0;
        bool done = false;
        while (!atomic_load_explicit(&pf->stop, memory_order_relaxed)) {
            ssize_t r = pread(fd, buf, PREFETCH_CHUNK, (off_t)at);
            if (r <= 0) {
                done = r == 0;   /* the shard's end; an error ends the prefetch where it is */
                break;
            }
            at += (uint64_t)r;
            pf->off = at, pf->bytes += (uint64_t)r;
        }
        close(fd);
        if (!done)
            break;
        pf->shard = s + 1, pf->off = 0;
    }
    free(buf);
    return NULL;
}

static void prefetch_start(struct prefetch *pf, const struct model *m)
{
    memset(pf, 0, sizeof *pf);
    pf->m = m;
    atomic_init(&pf->stop, false);
    pf->started = pthread_create(&pf->th, NULL, prefetch_run, pf) == 0;
}

/* Stops and joins the prefetch; *shard / *off: how far it got (0, 0 when it never ran). */
static void prefetch_stop(struct prefetch *pf)
{
    if (!pf->started)
        return;
    atomic_store_explicit(&pf->stop, true, memory_order_relaxed);
    pthread_join(pf->th, NULL);
    pf->started = false;
}

static int load(struct engine *e, const struct model *m, const struct model_load_cuda_opts *lo, bool buffered,
                struct prefetch *pf, struct model_load_cuda_stats *st, struct bora_err *err)
{
    const int cap = 7 * m->cfg.n_layers + 2;
    struct model_direct_dst *d = calloc((size_t)cap, sizeof *d);
    if (!d)
        return bora_errf(err, -ENOMEM, "direct load: out of memory");
    struct bora_err derr = { "" };
    int n = engine_cuda_weight_dsts(e, d, cap, &derr);
    if (n == -ENOTSUP || (n >= 0 && !model_direct_all_mapped(m, d, n))) {
        free(d);
        return engine_cuda_open_finish(e, false, err);   /* conversions: through the host */
    }
    if (n < 0) {
        *err = derr;
        free(d);
        return n;
    }
    /* cold: what the prefetch put in the page cache goes to buffered readers, the rest to O_DIRECT */
    int k = buffered ? n : 0;
    if (!buffered && pf->bytes)
        k = model_direct_split_before(m, d, n, pf->shard, pf->off);
    st->prefetched = pf->bytes;
    int qd = lo->qd > 0 ? lo->qd : WSTREAM_QD_DEFAULT;
    if (qd < WSTREAM_QD_MIN)
        qd = WSTREAM_QD_MIN;
    struct reader_set sets[2];
    struct model_direct_plan *plans[2] = { NULL, NULL };
    int n_sets = 0, rc = 0;
    for (int side = 0; side < 2 && !rc; side++) {
        const bool cached = side == 0;
        const int first = cached ? 0 : k, cnt = cached ? k : n - k;
        if (cnt == 0)
            continue;
        int parts = cached ? (lo->parts > 0 ? lo->parts : MODEL_LOAD_CUDA_PARTS_CACHED) : k == 0 && lo->parts > 0 ? lo->parts : 1;
        if (parts > MODEL_DIRECT_PARTS_MAX)
            parts = MODEL_DIRECT_PARTS_MAX;
        if ((rc = model_direct_plan_build(&plans[side], m, d + first, cnt, parts, err)))
            break;
        /* page-cache reads complete at submission: a few buffers cover the copies in flight,
         * and each one costs a registration with CUDA and io_uring */
        sets[n_sets++] = (struct reader_set){
            .plan = plans[side],
            .wo = { .qd = lo->qd, .buf_bytes = lo->buf_bytes, .direct = cached ? WSTREAM_DIRECT_OFF : WSTREAM_DIRECT_AUTO,
                    .buf_alloc = stage_alloc, .buf_free = stage_free,
                    .n_bufs = lo->bufs > 0 ? lo->bufs : cached ? MODEL_LOAD_CUDA_BUFS_CACHED : qd + qd / 2 },
        };
        st->bufs = sets[n_sets - 1].wo.n_bufs;
    }
    if (!rc) {
        st->streamed = true;
        rc = stream_parts(e, sets, n_sets, lo, st, err);
    }
    model_direct_plan_free(plans[0]);
    model_direct_plan_free(plans[1]);
    free(d);
    if (rc)
        return rc;
    double t0 = now_s();
    rc = engine_cuda_open_finish(e, true, err);
    st->finish_s = now_s() - t0;
    return rc;
}

int model_load_cuda(struct engine **out, const struct model *m, const struct engine_opts *o,
                    const struct model_load_cuda_opts *lo, struct model_load_cuda_stats *st, struct bora_err *err)
{
    *out = NULL;
    struct model_load_cuda_opts dflt = { 0 };
    struct model_load_cuda_stats st_local;
    if (!lo)
        lo = &dflt;
    if (!st)
        st = &st_local;
    memset(st, 0, sizeof *st);
    struct engine *e = calloc(1, sizeof *e);
    if (!e)
        return bora_errf(err, -ENOMEM, "out of memory");
    /* every option as engine_open takes it (the KV cache's type included), except a layer_wait:
     * this loader streams the weights itself, before the engine's first forward */
    struct engine_opts eo = o ? *o : (struct engine_opts){ 0 };
    eo.layer_wait = NULL;
    eo.layer_wait_ctx = NULL;
    int rc0 = engine_init(e, m, &eo, err);
    if (rc0) {
        free(e);
        return rc0;
    }
    bool buffered = lo->mode == MODEL_LOAD_CUDA_BUFFERED || (lo->mode == MODEL_LOAD_CUDA_AUTO && model_direct_cached(m));
    struct prefetch pf = { 0 };
    if (!buffered && lo->prefetch)
        prefetch_start(&pf, m);
    double t0 = now_s();
    cudaFree(NULL);   /* the context: timed apart from the arena (an error shows at the next call) */
    st->ctx_s = now_s() - t0;
    int rc = engine_cuda_open_deferred(e, err);
    st->open_s = now_s() - t0;
    prefetch_stop(&pf);
    if (!rc && (rc = load(e, m, lo, buffered, &pf, st, err)) && e->ops)
        e->ops->close(e);   /* a load error after the arena: the backend is still open */
    if (rc) {
        free(e);
        return rc;
    }
    *out = e;
    return 0;
}
#else
int model_load_cuda(struct engine **out, const struct model *m, const struct engine_opts *o,
                    const struct model_load_cuda_opts *lo, struct model_load_cuda_stats *st, struct bora_err *err)
{
    (void)m, (void)o, (void)lo, (void)st;
    *out = NULL;
    return bora_errf(err, -ENODEV, "this build has no CUDA backend (make CUDA=1)");
}
#endif
