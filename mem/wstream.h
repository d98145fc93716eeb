/* wstream.h — the io_uring weight streamer: reads a plan of file ranges (tensors in layer order)
 * with O_DIRECT at a queue depth of 16 or more into registered, pinned staging buffers and hands
 * each filled buffer's pieces to a sink (memcpy into host memory, or a host→device copy on a
 * stream), recycling a buffer when the sink reports it free. Budget: ≥ 95 % of the raw read
 * bandwidth of the same file at the same settings (bench/bench_wstream prints both). */
#ifndef BORA_MEM_WSTREAM_H
#define BORA_MEM_WSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define WSTREAM_QD_MIN 16                   /* queue depth floor (reads in flight) */
#define WSTREAM_QD_DEFAULT 32
#define WSTREAM_BUF_BYTES_DEFAULT (1u << 20) /* staging buffer = one read, bytes */
#define WSTREAM_ALIGN 4096                  /* O_DIRECT offset/length/address alignment, bytes */
#define WSTREAM_GAP_MAX (256u << 10)        /* items closer than this in a file are read as one extent */
#define WSTREAM_RETRY_MAX 64                /* -EAGAIN / -EINTR resubmissions of one read */

/* One range of a file to load. Items of one group (a layer) become "resident" together. */
struct wstream_item {
    int file;            /* index into wstream_plan.files */
    uint64_t offset;     /* first byte in the file */
    uint64_t len;        /* bytes (0 allowed) */
    int group;           /* 0 .. plan.n_groups-1; the pipelined start waits on groups in order */
    void *dst;           /* destination: host memory (memcpy sink) or device memory (CUDA sink) */
    /* Optional pitched destination (CUDA sink): bytes row r of the item land at
     * dst + r * dst_pitch; row_bytes = 0 means contiguous. */
    uint64_t row_bytes, dst_pitch;
    void *user;          /* sink-defined (e.g. quantization target) */
};

struct wstream_plan {
    const char *const *files;
    int n_files;
    const struct wstream_item *items;   /* in the order they should arrive */
    int n_items;
    int n_groups;
};

/* A piece of one item that is now in staging memory. */
struct wstream_chunk {
    const struct wstream_item *item;
    int item_index;
    uint64_t item_off;     /* offset of these bytes within the item */
    const void *data;      /* staging (pinned) memory, valid until buffer `buf` is released */
    size_t len;
    int buf;               /* staging buffer index */
};

/* Where the bytes go. Called only from the thread running wstream_run. */
struct wstream_sink {
    void *ctx;
    /* Consumes one chunk (e.g. memcpy, or queue an async copy). 0 or -errno with a message. */
    int (*on_chunk)(void *ctx, const struct wstream_chunk *c, struct bora_err *err);
    /* Every chunk of buffer `buf` was handed over. Returns 1 if the buffer is free again at
     * once, 0 if the sink still reads it (it then reports through buf_poll), or -errno.
     * NULL: free at once. */
    int (*buf_done)(void *ctx, int buf, struct bora_err *err);
    /* Polls (wait = false) or waits for buffer `buf`: 1 free, 0 busy, -errno. NULL: always 1. */
    int (*buf_poll)(void *ctx, int buf, bool wait, struct bora_err *err);
    /* All chunks were handed over: completes every queued copy. NULL: nothing to do. */
    int (*flush)(void *ctx, struct bora_err *err);
};

enum wstream_direct { WSTREAM_DIRECT_AUTO = 0, WSTREAM_DIRECT_OFF };

/* Test hook (not a global): a read of `file` whose range covers `offset` completes with
 * -err, `times` times (0 = every time). short_read > 0 cuts every completion to at most that
 * many bytes (exercises resubmission). */
struct wstream_fault {
    int file;            /* -1: no error injection */
    uint64_t offset;
    int err;             /* positive errno, e.g. EIO, EAGAIN, EINVAL */
    int times;
    uint32_t short_read;
};

struct wstream_opts {
    int qd;                    /* reads in flight; 0 = WSTREAM_QD_DEFAULT; raised to WSTREAM_QD_MIN */
    size_t buf_bytes;          /* 0 = WSTREAM_BUF_BYTES_DEFAULT; rounded up to WSTREAM_ALIGN */
    int n_bufs;                /* staging buffers; 0 = qd + qd/2 (room for copies in flight); never more
                                * than the plan's reads need */
    enum wstream_direct direct;
    /* Staging memory provider (pinned pool); NULL = posix_memalign. Must return
     * WSTREAM_ALIGN-aligned memory. */
    void *(*buf_alloc)(void *ctx, size_t bytes);
    void (*buf_free)(void *ctx, void *p);
    void *buf_ctx;
    const struct wstream_fault *fault;   /* NULL in production */
};

struct wstream_stats {
    uint64_t bytes_read;       /* bytes the reads returned (incl. alignment padding) */
    uint64_t bytes_delivered;  /* bytes handed to the sink (Σ item len) */
    uint64_t reads, short_reads, retries;
    int direct_files;          /* files read with O_DIRECT */
    int buffered_files;        /* files read through the page cache (O_DIRECT refused) */
    bool registered;           /* staging buffers registered with io_uring (read_fixed) */
    double seconds;            /* wall time of wstream_run */
};

struct wstream;

/* Opens the plan's files (O_DIRECT where allowed), checks that every item lies inside its
 * file, allocates the staging buffers and the ring. The plan (and the file names) must outlive
 * the stream. Errors: -errno of open/fstat naming the file, -EINVAL (an item past the end of
 * its file: "FILE: truncated: N bytes, tensor range ends at M"; bad plan), -ENOMEM, -errno of
 * io_uring_queue_init. Caller owns *out; free with wstream_close. */
int wstream_open(struct wstream **out, const struct wstream_plan *plan, const struct wstream_opts *opts,
                 struct bora_err *err);

/* Reads every item and hands it to the sink; returns when all is delivered and flushed.
 * Thread: one thread (any). Errors: -errno of a read ("FILE: read of N bytes at offset O
 * failed: ..."), -EINVAL ("FILE: ends at byte E, expected data up to D (truncated)"), the
 * sink's errors. After a failure, wait_group callers are woken with the same code. Run once. */
int wstream_run(struct wstream *ws, const struct wstream_sink *sink, struct bora_err *err);

/* Runs wstream_run on a new thread (the sink must outlive it); wstream_join waits for that
 * thread and returns its result with its message. Errors of start: -errno of pthread_create. */
int wstream_start(struct wstream *ws, const struct wstream_sink *sink, struct bora_err *err);
int wstream_join(struct wstream *ws, struct bora_err *err);

/* Blocks until every item of group g (and of every group before it) is delivered and its
 * buffers released by the sink, or the run failed. Thread: any. Returns 0, or the run's error. */
int wstream_wait_group(struct wstream *ws, int g);
/* Groups resident so far (0 .. n_groups), without blocking. Thread: any. */
int wstream_groups_ready(struct wstream *ws);

void wstream_stats_get(struct wstream *ws, struct wstream_stats *out);
void wstream_close(struct wstream *ws);

/* The memcpy sink: chunk → item->dst + item_off (host memory). */
extern const struct wstream_sink wstream_sink_memcpy;

#endif
