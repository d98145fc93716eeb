/* tpool.h — a small fork-join thread pool for the CPU engine: one call splits a range across
 * the workers and returns when every part is done. Idle workers spin briefly and then sleep
 * on a condition variable, so an idle engine leaves the cores to the I/O threads (OpenMP's
 * default spinning starved them on small machines). */
#ifndef BORA_COMMON_TPOOL_H
#define BORA_COMMON_TPOOL_H

#include <stdint.h>

/* Spin iterations before a waiting thread sleeps (≈ tens of microseconds). */
#define TPOOL_SPIN 20000
#define TPOOL_MAX_THREADS 256

struct tpool;

/* fn handles [begin, end) of the range; tid in [0, n_threads) (0 = the calling thread). */
typedef void (*tpool_fn)(void *ctx, int64_t begin, int64_t end, int tid);

/* Creates a pool of n_threads (≥ 1; the caller counts as one, so n_threads - 1 workers are
 * started). Errors: -EINVAL, -ENOMEM, -EAGAIN (thread creation failed). */
int tpool_create(struct tpool **out, int n_threads);
/* Joins the workers. Must not run concurrently with tpool_run. */
void tpool_destroy(struct tpool *p);
int tpool_threads(const struct tpool *p);

/* Splits [0, n) into one contiguous part per thread and runs fn on each; returns when all
 * are done. One thread at a time may call it (the pool is not reentrant). No allocation. */
void tpool_run(struct tpool *p, int64_t n, tpool_fn fn, void *ctx);

#endif
