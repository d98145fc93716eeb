/* tpool.c — fork-join pool: a generation counter publishes each job (release), workers take
 * their part and count down `pending` (acq_rel); the caller waits for zero (acquire). */
#include "common/tpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct tpool_worker {
    struct tpool *pool;
    int tid;
    pthread_t thread;
};

struct tpool {
    int n_threads;
    /* the current job, written by the caller before bumping `gen` */
    tpool_fn fn;
    void *ctx;
    int64_t n;
    _Alignas(64) atomic_uint gen;        /* job generation; partner: workers' acquire loads */
    _Alignas(64) atomic_int pending;     /* workers still running the job; partner: caller's wait */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t job_cv, done_cv;
    struct tpool_worker *workers;
};

static void part(const struct tpool *p, int tid, int64_t *b, int64_t *e)
{
    int64_t q = p->n / p->n_threads, r = p->n % p->n_threads;
    *b = tid * q + (tid < r ? tid : r);
    *e = *b + q + (tid < r ? 1 : 0);
}

static void *worker_main(void *arg)
{
    struct tpool_worker *w = arg;
    struct tpool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_acquire)) {
            if (++spins < TPOOL_SPIN)
                continue;
            pthread_mutex_lock(&p->mu);
            while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
                   !atomic_load_explicit(&p->stop, memory_order_acquire))
                pthread_cond_wait(&p->job_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            return NULL;
        seen = g;
        int64_t b, e;
        part(p, w->tid, &b, &e);
        if (b < e)
            p->fn(p->ctx, b, e, w->tid);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

int tpool_create(struct tpool **out, int n_threads)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > TPOOL_MAX_THREADS)
        return -EINVAL;
    struct tpool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->job_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        free(p);
        return -ENOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        p->workers[i] = (struct tpool_worker){ .pool = p, .tid = i };
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i])) {
            p->n_threads = i;   /* join those started */
            tpool_destroy(p);
            return -EAGAIN;
        }
    }
    *out = p;
    return 0;
}

void tpool_destroy(struct tpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, true, memory_order_release);
    pthread_cond_broadcast(&p->job_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->job_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->workers);
    free(p);
}

int tpool_threads(const struct tpool *p)
{
    return p->n_threads;
}

void tpool_run(struct tpool *p, int64_t n, tpool_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (p->n_threads == 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->job_cv);
    pthread_mutex_unlock(&p->mu);
    int64_t b, e;
    part(p, 0, &b, &e);
    if (b < e)
        fn(ctx, b, e, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < TPOOL_SPIN)
            continue;
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
