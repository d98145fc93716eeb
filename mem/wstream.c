/* wstream.c — the io_uring weight streamer (see wstream.h): the plan is cut into extents
 * (neighbouring items of one file), each extent into aligned reads of one staging buffer;
 * reads complete in any order, their pieces go to the sink, and a buffer is reused when the
 * sink has released it. Groups become resident when all their bytes went through the sink. */
#include "mem/wstream.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum ws_buf_state { BUF_FREE = 0, BUF_READING, BUF_HELD };

struct ws_file {
    const char *path;
    int fd;
    bool direct;
    uint64_t size;
};

/* Neighbouring items of one file, read as one aligned range. */
struct ws_extent {
    int file;
    uint64_t begin, end;      /* aligned read range [begin, end) */
    uint64_t need_end;        /* end of the last item's bytes */
    int first, last;          /* items [first, last), sorted by offset */
};

struct ws_buf {
    uint8_t *mem;             /* buf_bytes, WSTREAM_ALIGN-aligned */
    enum ws_buf_state state;
    int ext;
    uint64_t off;             /* file offset of mem[0] */
    size_t len, done;         /* bytes asked, bytes received */
    int attempts;
    bool direct;              /* submitted on an O_DIRECT descriptor */
    int *groups;              /* groups of the chunks handed over from this buffer */
    int n_groups, cap_groups;
};

struct wstream {
    const struct wstream_plan *plan;
    struct wstream_opts o;
    struct ws_file *files;
    struct ws_extent *ext;
    int n_ext;
    struct ws_buf *bufs;
    int n_bufs;
    size_t buf_bytes;
    struct io_uring ring;
    bool ring_ok;
    int inflight, to_submit;
    int cur_ext;              /* read cursor: next read starts at cur_off of extent cur_ext */
    uint64_t cur_off;
    uint64_t *group_left;     /* (n_groups) bytes not yet handed to the sink */
    int *group_pending;       /* (n_groups) chunks whose buffer the sink still holds */
    int fault_hits;
    struct wstream_stats st;
    const struct wstream_sink *sink;
    /* progress seen by other threads (wstream_wait_group) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int ready;         /* groups resident; written under mu, read anywhere */
    int run_rc;
    bool finished;
    /* wstream_start */
    pthread_t thread;
    bool thread_ok;
    const struct wstream_sink *thread_sink;
    int thread_rc;
    struct bora_err thread_err;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t align_down(uint64_t x) { return x & ~(uint64_t)(WSTREAM_ALIGN - 1); }
static uint64_t align_up(uint64_t x) { return (x + WSTREAM_ALIGN - 1) & ~(uint64_t)(WSTREAM_ALIGN - 1); }

/* ---- opening ---- */

static int open_file(struct ws_file *f, const char *path, bool try_direct, struct bora_err *err)
{
    f->path = path;
    f->fd = -1;
    if (try_direct) {
        f->fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT | O_NONBLOCK);   /* a FIFO cannot hang */
        f->direct = f->fd >= 0;
    }
    if (f->fd < 0 && (!try_direct || errno == EINVAL))   /* EINVAL: the filesystem refuses O_DIRECT */
        f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0)
        return bora_errf(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return bora_errf(err, -errno, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return bora_errf(err, -EINVAL, "%s: not a regular file", path);
    /* a regular file: blocking again (io_uring answers -EAGAIN on a non-blocking one rather
     * than waiting for the disk) */
    if (fcntl(f->fd, F_SETFL, fcntl(f->fd, F_GETFL) & ~O_NONBLOCK) < 0)
        return bora_errf(err, -errno, "%s: fcntl: %s", path, strerror(errno));
    f->size = (uint64_t)st.st_size;
    if (!f->direct)
        posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

/* Switches f to buffered reads (O_DIRECT refused at read time), keeping its descriptor number:
 * reads in flight hold their own reference to the old open file. */
static int file_go_buffered(struct ws_file *f, struct bora_err *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return bora_errf(err, -errno, "%s: cannot reopen without O_DIRECT: %s", f->path, strerror(errno));
    if (dup3(fd, f->fd, O_CLOEXEC) < 0) {
        int e = errno;
        close(fd);
        return bora_errf(err, -e, "%s: dup3: %s", f->path, strerror(e));
    }
    close(fd);
    f->direct = false;
    posix_fadvise(f->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return 0;
}

static int check_plan(const struct wstream_plan *p, struct bora_err *err)
{
    if (p->n_files <= 0 || p->n_items < 0 || p->n_groups < 0 || (p->n_items && !p->items))
        return bora_errf(err, -EINVAL, "wstream: empty or malformed plan");
    for (int i = 0; i < p->n_items; i++) {
        const struct wstream_item *it = &p->items[i];
        if (it->file < 0 || it->file >= p->n_files || it->group < 0 || it->group >= p->n_groups)
            return bora_errf(err, -EINVAL, "wstream: item %d names file %d / group %d outside the plan", i,
                             it->file, it->group);
        if (it->offset + it->len < it->offset)
            return bora_errf(err, -EINVAL, "wstream: item %d: range overflows", i);
    }
    return 0;
}

/* Cuts the plan into extents: runs of items of one file in increasing, non-overlapping order
 * with gaps under WSTREAM_GAP_MAX. */
static int build_extents(struct wstream *ws, struct bora_err *err)
{
    const struct wstream_plan *p = ws->plan;
    ws->ext = calloc((size_t)(p->n_items ? p->n_items : 1), sizeof *ws->ext);
    if (!ws->ext)
        return bora_errf(err, -ENOMEM, "wstream: out of memory");
    struct ws_extent *e = NULL;
    for (int i = 0; i < p->n_items; i++) {
        const struct wstream_item *it = &p->items[i];
        uint64_t end = it->offset + it->len;
        if (it->len == 0) {
            if (e)
                e->last = i + 1;
            continue;
        }
        if (e && e->file == it->file && it->offset >= e->need_end && it->offset - e->need_end <= WSTREAM_GAP_MAX) {
            e->need_end = end;
            e->last = i + 1;
            continue;
        }
        e = &ws->ext[ws->n_ext++];
        *e = (struct ws_extent){ .file = it->file, .begin = align_down(it->offset), .need_end = end,
                                 .first = i, .last = i + 1 };
    }
    for (int x = 0; x < ws->n_ext; x++)
        ws->ext[x].end = align_up(ws->ext[x].need_end);
    return 0;
}

static int alloc_bufs(struct wstream *ws, struct bora_err *err)
{
    ws->bufs = calloc((size_t)ws->n_bufs, sizeof *ws->bufs);
    struct iovec *iov = calloc((size_t)ws->n_bufs, sizeof *iov);
    if (!ws->bufs || !iov) {
        free(iov);
        return bora_errf(err, -ENOMEM, "wstream: out of memory");
    }
    for (int i = 0; i < ws->n_bufs; i++) {
        void *m = NULL;
        if (ws->o.buf_alloc)
            m = ws->o.buf_alloc(ws->o.buf_ctx, ws->buf_bytes);
        else if (posix_memalign(&m, WSTREAM_ALIGN, ws->buf_bytes))
            m = NULL;
        if (!m || (uintptr_t)m % WSTREAM_ALIGN) {
            if (m && ws->o.buf_free)
                ws->o.buf_free(ws->o.buf_ctx, m);
            else
                free(m);
            free(iov);
            return bora_errf(err, -ENOMEM, "wstream: cannot allocate %d aligned staging buffers of %zu bytes", ws->n_bufs,
                             ws->buf_bytes);
        }
        ws->bufs[i].mem = m;
        iov[i] = (struct iovec){ m, ws->buf_bytes };
    }
    /* registration pins the pages once (read_fixed); refused (RLIMIT_MEMLOCK) → plain reads */
    ws->st.registered = io_uring_register_buffers(&ws->ring, iov, (unsigned)ws->n_bufs) == 0;
    free(iov);
    return 0;
}

int wstream_open(struct wstream **out, const struct wstream_plan *plan, const struct wstream_opts *opts,
                 struct bora_err *err)
{
    *out = NULL;
    int rc = check_plan(plan, err);
    if (rc)
        return rc;
    struct wstream *ws = calloc(1, sizeof *ws);
    if (!ws)
        return bora_errf(err, -ENOMEM, "wstream: out of memory");
    ws->plan = plan;
    if (opts)
        ws->o = *opts;
    if (ws->o.qd <= 0)
        ws->o.qd = WSTREAM_QD_DEFAULT;
    if (ws->o.qd < WSTREAM_QD_MIN)
        ws->o.qd = WSTREAM_QD_MIN;
    ws->buf_bytes = align_up(ws->o.buf_bytes ? ws->o.buf_bytes : WSTREAM_BUF_BYTES_DEFAULT);
    ws->n_bufs = ws->o.n_bufs > 0 ? ws->o.n_bufs : ws->o.qd + ws->o.qd / 2;
    pthread_mutex_init(&ws->mu, NULL);
    pthread_cond_init(&ws->cv, NULL);
    ws->files = calloc((size_t)plan->n_files, sizeof *ws->files);
    ws->group_left = calloc((size_t)plan->n_groups + 1, sizeof *ws->group_left);
    ws->group_pending = calloc((size_t)plan->n_groups + 1, sizeof *ws->group_pending);
    if (!ws->files || !ws->group_left || !ws->group_pending) {
        rc = bora_errf(err, -ENOMEM, "wstream: out of memory");
        goto err;
    }
    for (int i = 0; i < plan->n_files; i++)
        ws->files[i].fd = -1;
    for (int i = 0; i < plan->n_files; i++)
        if ((rc = open_file(&ws->files[i], plan->files[i], ws->o.direct != WSTREAM_DIRECT_OFF, err)))
            goto err;
    for (int i = 0; i < plan->n_items; i++) {
        const struct wstream_item *it = &plan->items[i];
        const struct ws_file *f = &ws->files[it->file];
        if (it->offset + it->len > f->size) {
            rc = bora_errf(err, -EINVAL, "%s: truncated: %llu bytes, tensor range ends at %llu", f->path,
                           (unsigned long long)f->size, (unsigned long long)(it->offset + it->len));
            goto err;
        }
        ws->group_left[it->group] += it->len;
    }
    if ((rc = build_extents(ws, err)))
        goto err;
    uint64_t reads = 0;   /* a small plan needs fewer buffers (each is pinned and registered) */
    for (int x = 0; x < ws->n_ext; x++)
        reads += (ws->ext[x].end - ws->ext[x].begin + ws->buf_bytes - 1) / ws->buf_bytes;
    if ((uint64_t)ws->n_bufs > reads)
        ws->n_bufs = reads ? (int)reads : 1;
    if ((rc = io_uring_queue_init((unsigned)ws->o.qd, &ws->ring, 0)) < 0) {
        rc = bora_errf(err, rc, "wstream: io_uring_queue_init(%d): %s", ws->o.qd, strerror(-rc));
        goto err;
    }
    ws->ring_ok = true;
    if ((rc = alloc_bufs(ws, err)))
        goto err;
    *out = ws;
    return 0;
err:
    wstream_close(ws);
    return rc;
}

/* ---- progress ---- */

/* Advances the count of resident groups (monotonic) and wakes waiters. */
static void groups_advance(struct wstream *ws)
{
    int r = atomic_load_explicit(&ws->ready, memory_order_relaxed);
    int n = r;
    while (n < ws->plan->n_groups && ws->group_left[n] == 0 && ws->group_pending[n] == 0)
        n++;
    if (n == r)
        return;
    pthread_mutex_lock(&ws->mu);
    atomic_store_explicit(&ws->ready, n, memory_order_release);   /* pairs with wstream_groups_ready */
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
}

static void buf_release(struct wstream *ws, struct ws_buf *b)
{
    for (int i = 0; i < b->n_groups; i++)
        ws->group_pending[b->groups[i]]--;
    b->n_groups = 0;
    b->state = BUF_FREE;
    groups_advance(ws);
}

static int buf_note_group(struct ws_buf *b, int g)
{
    if (b->n_groups == b->cap_groups) {
        int cap = b->cap_groups ? 2 * b->cap_groups : 16;
        int *p = realloc(b->groups, (size_t)cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        b->groups = p;
        b->cap_groups = cap;
    }
    b->groups[b->n_groups++] = g;
    return 0;
}

/* A free buffer (releasing held ones the sink has finished with), or -1. */
static int buf_take(struct wstream *ws, struct bora_err *err, int *rc)
{
    for (int i = 0; i < ws->n_bufs; i++)
        if (ws->bufs[i].state == BUF_FREE)
            return i;
    for (int i = 0; i < ws->n_bufs; i++) {
        struct ws_buf *b = &ws->bufs[i];
        if (b->state != BUF_HELD)
            continue;
        int r = ws->sink->buf_poll ? ws->sink->buf_poll(ws->sink->ctx, i, false, err) : 1;
        if (r < 0) {
            *rc = r;
            return -1;
        }
        if (r) {
            buf_release(ws, b);
            return i;
        }
    }
    return -1;
}

/* ---- reads ---- */

static int submit_read(struct wstream *ws, int idx, struct bora_err *err)
{
    struct ws_buf *b = &ws->bufs[idx];
    struct ws_file *f = &ws->files[ws->ext[b->ext].file];
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ws->ring);
    if (!sqe)
        return bora_errf(err, -EBUSY, "wstream: submission queue full (%d in flight)", ws->inflight);
    b->direct = f->direct;
    if (ws->st.registered)
        io_uring_prep_read_fixed(sqe, f->fd, b->mem + b->done, (unsigned)(b->len - b->done), b->off + b->done, idx);
    else
        io_uring_prep_read(sqe, f->fd, b->mem + b->done, (unsigned)(b->len - b->done), b->off + b->done);
    io_uring_sqe_set_data64(sqe, (uint64_t)idx);
    b->state = BUF_READING;
    ws->inflight++;
    ws->to_submit++;
    ws->st.reads++;
    return 0;
}

/* Starts the next read of the cursor into buffer idx. */
static int issue_next(struct wstream *ws, int idx, struct bora_err *err)
{
    struct ws_extent *e = &ws->ext[ws->cur_ext];
    if (ws->cur_off < e->begin)
        ws->cur_off = e->begin;
    struct ws_buf *b = &ws->bufs[idx];
    b->ext = ws->cur_ext;
    b->off = ws->cur_off;
    b->len = e->end - ws->cur_off < ws->buf_bytes ? (size_t)(e->end - ws->cur_off) : ws->buf_bytes;
    b->done = 0;
    b->attempts = 0;
    ws->cur_off += b->len;
    if (ws->cur_off >= e->end) {
        ws->cur_ext++;
        ws->cur_off = 0;
    }
    return submit_read(ws, idx, err);
}

/* Hands the pieces of the items that buffer idx covers to the sink. */
static int deliver(struct wstream *ws, int idx, struct bora_err *err)
{
    struct ws_buf *b = &ws->bufs[idx];
    const struct ws_extent *e = &ws->ext[b->ext];
    const uint64_t lo = b->off, hi = b->off + b->done;
    int rc;
    for (int i = e->first; i < e->last; i++) {
        const struct wstream_item *it = &ws->plan->items[i];
        if (it->offset >= hi)
            break;
        uint64_t s = it->offset > lo ? it->offset : lo, t = it->offset + it->len < hi ? it->offset + it->len : hi;
        if (it->len == 0 || s >= t)
            continue;
        struct wstream_chunk c = { .item = it, .item_index = i, .item_off = s - it->offset,
                                   .data = b->mem + (s - lo), .len = (size_t)(t - s), .buf = idx };
        if ((rc = ws->sink->on_chunk(ws->sink->ctx, &c, err)))
            return rc;
        if (buf_note_group(b, it->group))
            return bora_errf(err, -ENOMEM, "wstream: out of memory");
        ws->group_left[it->group] -= c.len;
        ws->group_pending[it->group]++;
        ws->st.bytes_delivered += c.len;
    }
    rc = ws->sink->buf_done ? ws->sink->buf_done(ws->sink->ctx, idx, err) : 1;
    if (rc < 0)
        return rc;
    if (rc)
        buf_release(ws, b);
    else
        b->state = BUF_HELD;
    return 0;
}

/* Applies the test hook to a completion. */
static int fault_apply(struct wstream *ws, const struct ws_buf *b, int res)
{
    const struct wstream_fault *f = ws->o.fault;
    if (!f)
        return res;
    uint64_t at = b->off + b->done;
    if (f->file >= 0 && f->err && ws->ext[b->ext].file == f->file && f->offset >= at && f->offset < b->off + b->len &&
        (f->times == 0 || ws->fault_hits < f->times)) {
        ws->fault_hits++;
        return -f->err;
    }
    if (res > 0 && f->short_read && (uint32_t)res > f->short_read)
        return (int)f->short_read;
    return res;
}

static int on_complete(struct wstream *ws, int idx, int res, struct bora_err *err)
{
    struct ws_buf *b = &ws->bufs[idx];
    const struct ws_extent *e = &ws->ext[b->ext];
    struct ws_file *f = &ws->files[e->file];
    const uint64_t need = e->need_end < b->off + b->len ? e->need_end : b->off + b->len;
    ws->inflight--;
    res = fault_apply(ws, b, res);
    if (res == -EAGAIN || res == -EINTR) {
        if (++b->attempts > WSTREAM_RETRY_MAX)
            return bora_errf(err, res, "%s: read of %zu bytes at offset %llu: still %s after %d retries", f->path,
                             b->len - b->done, (unsigned long long)(b->off + b->done), strerror(-res), WSTREAM_RETRY_MAX);
        ws->st.retries++;
        return submit_read(ws, idx, err);
    }
    if (res == -EINVAL && b->direct) {   /* O_DIRECT refused at read time: go through the page cache */
        int rc = f->direct ? file_go_buffered(f, err) : 0;
        return rc ? rc : submit_read(ws, idx, err);
    }
    if (res < 0)
        return bora_errf(err, res, "%s: read of %zu bytes at offset %llu failed: %s", f->path, b->len - b->done,
                         (unsigned long long)(b->off + b->done), strerror(-res));
    if (res == 0 && b->off + b->done < need)
        return bora_errf(err, -EINVAL, "%s: ends at byte %llu, expected data up to %llu (truncated)", f->path,
                         (unsigned long long)(b->off + b->done), (unsigned long long)need);
    b->done += (size_t)res;
    ws->st.bytes_read += (uint64_t)res;
    if (b->off + b->done < need) {   /* short read: ask for the rest (O_DIRECT: from an aligned offset) */
        ws->st.short_reads++;
        if (b->direct) {
            size_t before = b->done - (size_t)res;
            b->done = (size_t)align_down(b->done);
            if (b->done <= before && ++b->attempts > WSTREAM_RETRY_MAX)
                return bora_errf(err, -EIO, "%s: O_DIRECT reads at offset %llu make no progress", f->path,
                                 (unsigned long long)(b->off + b->done));
        }
        return submit_read(ws, idx, err);
    }
    if (b->off + b->done > need)
        b->done = (size_t)(need - b->off);   /* alignment padding past the items */
    return deliver(ws, idx, err);
}

/* Waits for at least one completion and handles all that are ready. */
static int reap(struct wstream *ws, struct bora_err *err)
{
    struct io_uring_cqe *cqe;
    int rc = io_uring_wait_cqe(&ws->ring, &cqe);
    if (rc == -EINTR)
        return 0;
    if (rc < 0)
        return bora_errf(err, rc, "wstream: io_uring_wait_cqe: %s", strerror(-rc));
    do {
        int idx = (int)io_uring_cqe_get_data64(cqe), res = cqe->res;
        io_uring_cqe_seen(&ws->ring, cqe);
        if ((rc = on_complete(ws, idx, res, err)))
            return rc;
    } while (io_uring_peek_cqe(&ws->ring, &cqe) == 0);
    return 0;
}

/* After a failure: lets every read in flight land before the buffers can be freed. */
static void drain(struct wstream *ws)
{
    if (ws->to_submit)
        io_uring_submit(&ws->ring);
    while (ws->inflight > 0) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&ws->ring, &cqe) < 0)
            break;
        io_uring_cqe_seen(&ws->ring, cqe);
        ws->inflight--;
    }
}

static int run_loop(struct wstream *ws, struct bora_err *err)
{
    int rc = 0;
    for (;;) {
        while (ws->inflight < ws->o.qd && ws->cur_ext < ws->n_ext) {
            int b = buf_take(ws, err, &rc);
            if (rc)
                return rc;
            if (b < 0)
                break;
            if ((rc = issue_next(ws, b, err)))
                return rc;
        }
        if (ws->to_submit) {
            int n = io_uring_submit(&ws->ring);
            if (n < 0)
                return bora_errf(err, n, "wstream: io_uring_submit: %s", strerror(-n));
            ws->to_submit = 0;
        }
        if (ws->inflight == 0) {
            if (ws->cur_ext >= ws->n_ext)
                return 0;
            for (int i = 0; i < ws->n_bufs; i++)   /* every buffer is held: wait for the first */
                if (ws->bufs[i].state == BUF_HELD) {
                    int r = ws->sink->buf_poll ? ws->sink->buf_poll(ws->sink->ctx, i, true, err) : 1;
                    if (r < 0)
                        return r;
                    if (r)
                        buf_release(ws, &ws->bufs[i]);
                    break;
                }
            continue;
        }
        if ((rc = reap(ws, err)))
            return rc;
    }
}

/* Releases every held buffer once the sink has flushed. */
static int release_all(struct wstream *ws, struct bora_err *err)
{
    int rc = ws->sink->flush ? ws->sink->flush(ws->sink->ctx, err) : 0;
    for (int i = 0; i < ws->n_bufs; i++)
        if (ws->bufs[i].state == BUF_HELD) {
            int r = ws->sink->buf_poll ? ws->sink->buf_poll(ws->sink->ctx, i, true, err) : 1;
            if (r < 0 && !rc)
                rc = r;
            buf_release(ws, &ws->bufs[i]);
        }
    return rc;
}

int wstream_run(struct wstream *ws, const struct wstream_sink *sink, struct bora_err *err)
{
    double t0 = now_s();
    ws->sink = sink;
    groups_advance(ws);   /* empty leading groups */
    int rc = run_loop(ws, err);
    if (rc) {
        drain(ws);
        struct bora_err ignored;
        release_all(ws, &ignored);
    } else {
        rc = release_all(ws, err);
    }
    for (int i = 0; i < ws->plan->n_files; i++)
        ws->st.direct_files += ws->files[i].direct, ws->st.buffered_files += !ws->files[i].direct;
    ws->st.seconds = now_s() - t0;
    pthread_mutex_lock(&ws->mu);
    ws->run_rc = rc;
    ws->finished = true;
    pthread_cond_broadcast(&ws->cv);
    pthread_mutex_unlock(&ws->mu);
    return rc;
}

static void *run_thread(void *arg)
{
    struct wstream *ws = arg;
    ws->thread_rc = wstream_run(ws, ws->thread_sink, &ws->thread_err);
    return NULL;
}

int wstream_start(struct wstream *ws, const struct wstream_sink *sink, struct bora_err *err)
{
    ws->thread_sink = sink;
    int rc = pthread_create(&ws->thread, NULL, run_thread, ws);
    if (rc)
        return bora_errf(err, -rc, "wstream: pthread_create: %s", strerror(rc));
    ws->thread_ok = true;
    return 0;
}

int wstream_join(struct wstream *ws, struct bora_err *err)
{
    if (!ws->thread_ok)
        return bora_errf(err, -EINVAL, "wstream: not started");
    pthread_join(ws->thread, NULL);
    ws->thread_ok = false;
    if (ws->thread_rc && err)
        *err = ws->thread_err;
    return ws->thread_rc;
}

int wstream_wait_group(struct wstream *ws, int g)
{
    if (g < 0)
        return 0;
    if (atomic_load_explicit(&ws->ready, memory_order_acquire) > g)   /* pairs with groups_advance */
        return 0;
    pthread_mutex_lock(&ws->mu);
    while (atomic_load_explicit(&ws->ready, memory_order_relaxed) <= g && !ws->finished)
        pthread_cond_wait(&ws->cv, &ws->mu);
    int rc = atomic_load_explicit(&ws->ready, memory_order_relaxed) > g ? 0 : ws->run_rc ? ws->run_rc : -EINVAL;
    pthread_mutex_unlock(&ws->mu);
    return rc;
}

int wstream_groups_ready(struct wstream *ws)
{
    return atomic_load_explicit(&ws->ready, memory_order_acquire);   /* pairs with groups_advance */
}

void wstream_stats_get(struct wstream *ws, struct wstream_stats *out)
{
    *out = ws->st;
}

void wstream_close(struct wstream *ws)
{
    if (!ws)
        return;
    if (ws->thread_ok)
        wstream_join(ws, NULL);
    if (ws->ring_ok)
        io_uring_queue_exit(&ws->ring);   /* also unregisters the buffers */
    for (int i = 0; ws->bufs && i < ws->n_bufs; i++) {
        if (ws->bufs[i].mem) {
            if (ws->o.buf_free)
                ws->o.buf_free(ws->o.buf_ctx, ws->bufs[i].mem);
            else
                free(ws->bufs[i].mem);
        }
        free(ws->bufs[i].groups);
    }
    free(ws->bufs);
    for (int i = 0; ws->files && i < ws->plan->n_files; i++)
        if (ws->files[i].fd >= 0)
            close(ws->files[i].fd);
    free(ws->files);
    free(ws->ext);
    free(ws->group_left);
    free(ws->group_pending);
    pthread_cond_destroy(&ws->cv);
    pthread_mutex_destroy(&ws->mu);
    free(ws);
}

/* ---- the memcpy sink ---- */

static int memcpy_on_chunk(void *ctx, const struct wstream_chunk *c, struct bora_err *err)
{
    (void)ctx;
    (void)err;
    const struct wstream_item *it = c->item;
    if (!it->row_bytes || it->row_bytes == it->dst_pitch) {
        memcpy((uint8_t *)it->dst + c->item_off, c->data, c->len);
        return 0;
    }
    /* pitched destination: split at row boundaries */
    uint64_t off = c->item_off, left = c->len;
    const uint8_t *src = c->data;
    while (left) {
        uint64_t r = off / it->row_bytes, in = off % it->row_bytes;
        uint64_t n = it->row_bytes - in < left ? it->row_bytes - in : left;
        memcpy((uint8_t *)it->dst + r * it->dst_pitch + in, src, n);
        src += n, off += n, left -= n;
    }
    return 0;
}

const struct wstream_sink wstream_sink_memcpy = { .on_chunk = memcpy_on_chunk };
