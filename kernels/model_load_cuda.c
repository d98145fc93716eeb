/* model_load_cuda.c — weights from the shards straight into the CUDA arena (see model_load_cuda.h). */
#include "kernels/model_load_cuda.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef BORA_CUDA
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
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
    return NULL;
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
static int prepare_engine(struct engine *e, int warm_tokens, struct bora_err *err)
{
    int rc = engine_cuda_prepare(e, err);
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

/* Runs every part on its own thread while this one prepares the engine (unless lo->serial);
 * first error wins, the readers' before the preparation's. */
static int stream_parts(struct engine *e, const struct model_direct_plan *p, const struct wstream_opts *wo,
                        const struct model_load_cuda_opts *lo, struct model_load_cuda_stats *st, struct bora_err *err)
{
    const int n = model_direct_plan_parts(p);
    struct reader r[MODEL_DIRECT_PARTS_MAX];
    memset(r, 0, sizeof r);
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        r[i].plan = model_direct_plan_part(p, i);
        r[i].wo = *wo;
        r[i].stage = lo->stage;
        if ((lo->serial && i == 0) || pthread_create(&r[i].th, NULL, reader_run, &r[i]))
            continue;
        r[i].started = true;
    }
    struct bora_err perr = { "" };
    int prc = 0;
    if (!lo->serial) {
        prc = prepare_engine(e, lo->warm_tokens, &perr);
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
        if (r[i].st.buffered_files)
            st->direct = false;
    }
    st->seconds = now_s() - t0;
    if (!rc && prc) {
        rc = prc;
        *err = perr;
    }
    return rc;
}

static int load(struct engine *e, const struct model *m, const struct model_load_cuda_opts *lo,
                struct model_load_cuda_stats *st, struct bora_err *err)
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
    bool buffered = lo->mode == MODEL_LOAD_CUDA_BUFFERED || (lo->mode == MODEL_LOAD_CUDA_AUTO && model_direct_cached(m));
    int parts = lo->parts > 0 ? lo->parts : buffered ? MODEL_LOAD_CUDA_PARTS_CACHED : 1;
    if (parts > MODEL_DIRECT_PARTS_MAX)
        parts = MODEL_DIRECT_PARTS_MAX;
    struct model_direct_plan *p = NULL;
    int rc = model_direct_plan_build(&p, m, d, n, parts, err);
    if (!rc) {
        struct wstream_opts wo = { .qd = lo->qd, .buf_bytes = lo->buf_bytes,
                                   .direct = buffered ? WSTREAM_DIRECT_OFF : WSTREAM_DIRECT_AUTO,
                                   .buf_alloc = stage_alloc, .buf_free = stage_free };
        int qd = wo.qd > 0 ? wo.qd : WSTREAM_QD_DEFAULT;
        if (qd < WSTREAM_QD_MIN)
            qd = WSTREAM_QD_MIN;
        /* page-cache reads complete at submission: a few buffers cover the copies in flight,
         * and each one costs a registration with CUDA and io_uring */
        wo.n_bufs = lo->bufs > 0 ? lo->bufs : buffered ? MODEL_LOAD_CUDA_BUFS_CACHED : qd + qd / 2;
        st->streamed = true;
        st->direct = !buffered;
        st->parts = model_direct_plan_parts(p);
        st->bufs = wo.n_bufs;
        rc = stream_parts(e, p, &wo, lo, st, err);
    }
    model_direct_plan_free(p);
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
    e->model = m;
    e->n_threads = o ? o->n_threads : 0;
    e->layers_ready = m->cfg.n_layers;
    e->max_ctx = o && o->max_ctx > 0 ? o->max_ctx : 4096;
    if ((!o || o->max_ctx <= 0) && m->cfg.max_pos > 0 && m->cfg.max_pos < e->max_ctx)
        e->max_ctx = m->cfg.max_pos;
    double t0 = now_s();
    cudaFree(NULL);   /* the context: timed apart from the arena (an error shows at the next call) */
    st->ctx_s = now_s() - t0;
    int rc = engine_cuda_open_deferred(e, err);
    st->open_s = now_s() - t0;
    if (!rc && (rc = load(e, m, lo, st, err)) && e->ops)
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
