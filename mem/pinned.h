/* pinned.h — the pinned host pool: page-locked memory for staging buffers and host copies of
 * weights, so that disk DMA (O_DIRECT) and host→device copies run at full speed. CUDA builds
 * use cudaHostAlloc (when a device is present); otherwise posix_memalign + mlock, falling back
 * to pageable memory, with a note that says so, when RLIMIT_MEMLOCK refuses. */
#ifndef BORA_MEM_PINNED_H
#define BORA_MEM_PINNED_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

#define PINNED_ALIGN 4096          /* every block is aligned to this (O_DIRECT), bytes */
#define PINNED_MAX_BLOCKS 4096     /* live blocks per pool */

enum pinned_kind {
    PINNED_CUDA = 0,     /* cudaHostAlloc: DMA-able by the GPU */
    PINNED_MLOCK,        /* posix_memalign + mlock */
    PINNED_PAGEABLE,     /* mlock refused: plain memory (slower copies; see pinned_pool_note) */
};

struct pinned_opts {
    bool host_only;      /* never use CUDA, even when built with it and a device is present */
    size_t limit;        /* most bytes the pool hands out; 0 = no limit */
};

struct pinned_stats {
    size_t bytes_in_use, bytes_peak;
    int blocks;
    enum pinned_kind kind;    /* what the most recent allocation got */
};

struct pinned_pool;

/* Opens a pool. With BORA_CUDA and a visible device the blocks come from cudaHostAlloc;
 * otherwise from posix_memalign + mlock. Errors: -ENOMEM. Caller owns *out. */
int pinned_pool_open(struct pinned_pool **out, const struct pinned_opts *opts, struct bora_err *err);
/* Frees every block still allocated, then the pool. */
void pinned_pool_close(struct pinned_pool *p);

/* A block of `bytes` (PINNED_ALIGN-aligned, uninitialised). Thread: any (the pool locks).
 * Errors (NULL + message): -ENOMEM (no memory, over the limit, PINNED_MAX_BLOCKS), -EIO (a
 * CUDA call failed; the message names it, file and line). */
void *pinned_alloc(struct pinned_pool *p, size_t bytes, struct bora_err *err);
/* Returns a block to the system. NULL is ignored; a pointer not from this pool is ignored. */
void pinned_free(struct pinned_pool *p, void *ptr);

void pinned_stats_get(struct pinned_pool *p, struct pinned_stats *out);
/* "" or one line saying why memory is not pinned (e.g. RLIMIT_MEMLOCK and how to raise it). */
const char *pinned_pool_note(struct pinned_pool *p);
const char *pinned_kind_name(enum pinned_kind k);

/* Adapters for wstream_opts.buf_alloc / buf_free (ctx = the pool). */
void *pinned_alloc_cb(void *pool, size_t bytes);
void pinned_free_cb(void *pool, void *ptr);

#endif
