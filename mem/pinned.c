/* pinned.c — the pinned host pool (see pinned.h): a locked list of blocks, each from
 * cudaHostAlloc or posix_memalign + mlock. */
#include "mem/pinned.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#ifdef BORA_CUDA
#include <cuda_runtime.h>
#endif

struct pinned_block {
    void *ptr;
    size_t bytes;
    enum pinned_kind kind;
};

struct pinned_pool {
    pthread_mutex_t mu;
    struct pinned_opts o;
    bool use_cuda;
    struct pinned_block blocks[PINNED_MAX_BLOCKS];
    int n_blocks;
    struct pinned_stats st;
    char note[256];
};

const char *pinned_kind_name(enum pinned_kind k)
{
    return k == PINNED_CUDA ? "cudaHostAlloc" : k == PINNED_MLOCK ? "mlock" : "pageable";
}

int pinned_pool_open(struct pinned_pool **out, const struct pinned_opts *opts, struct bora_err *err)
{
    struct pinned_pool *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p)
        return bora_errf(err, -ENOMEM, "pinned pool: out of memory");
    if (opts)
        p->o = *opts;
    pthread_mutex_init(&p->mu, NULL);
    p->st.kind = PINNED_MLOCK;
#ifdef BORA_CUDA
    int n = 0;
    cudaError_t ce = p->o.host_only ? cudaSuccess : cudaGetDeviceCount(&n);
    p->use_cuda = !p->o.host_only && ce == cudaSuccess && n > 0;
    if (!p->o.host_only && !p->use_cuda)
        snprintf(p->note, sizeof p->note, "no CUDA device (%s): host memory is mlock'd, not cudaHostAlloc'd",
                 ce == cudaSuccess ? "count 0" : cudaGetErrorString(ce));
    if (p->use_cuda)
        p->st.kind = PINNED_CUDA;
#endif
    *out = p;
    return 0;
}

/* Takes memory of the pool's kind; *kind says what it got. NULL + message on failure. */
static void *block_get(struct pinned_pool *p, size_t bytes, enum pinned_kind *kind, struct bora_err *err)
{
    void *m = NULL;
#ifdef BORA_CUDA
    if (p->use_cuda) {
        cudaError_t ce = cudaHostAlloc(&m, bytes, cudaHostAllocPortable);
        if (ce != cudaSuccess) {
            bora_errf(err, ce == cudaErrorMemoryAllocation ? -ENOMEM : -EIO,
                      "cudaHostAlloc(%zu bytes): %s (%s:%d)", bytes, cudaGetErrorString(ce), __FILE__, __LINE__);
            return NULL;
        }
        *kind = PINNED_CUDA;
        return m;
    }
#endif
    if (posix_memalign(&m, PINNED_ALIGN, bytes)) {
        bora_errf(err, -ENOMEM, "pinned pool: cannot allocate %zu bytes", bytes);
        return NULL;
    }
    *kind = PINNED_MLOCK;
    if (mlock(m, bytes) < 0) {
        int e = errno;
        *kind = PINNED_PAGEABLE;
        if (!p->note[0]) {
            struct rlimit rl = { 0, 0 };
            getrlimit(RLIMIT_MEMLOCK, &rl);
            snprintf(p->note, sizeof p->note,
                     "mlock of %zu bytes refused (%s; RLIMIT_MEMLOCK %llu KiB): using pageable memory, "
                     "raise it with `ulimit -l unlimited` or LimitMEMLOCK=infinity",
                     bytes, strerror(e), rl.rlim_cur == RLIM_INFINITY ? 0ull : (unsigned long long)rl.rlim_cur >> 10);
        }
    }
    return m;
}

static void block_put(const struct pinned_block *b)
{
#ifdef BORA_CUDA
    if (b->kind == PINNED_CUDA) {
        cudaFreeHost(b->ptr);   /* nothing to do on failure: the context is going away */
        return;
    }
#endif
    if (b->kind == PINNED_MLOCK)
        munlock(b->ptr, b->bytes);
    free(b->ptr);
}

void *pinned_alloc(struct pinned_pool *p, size_t bytes, struct bora_err *err)
{
    if (bytes == 0)
        bytes = 1;
    bytes = (bytes + PINNED_ALIGN - 1) & ~(size_t)(PINNED_ALIGN - 1);
    pthread_mutex_lock(&p->mu);
    void *m = NULL;
    if (p->n_blocks == PINNED_MAX_BLOCKS) {
        bora_errf(err, -ENOMEM, "pinned pool: more than %d blocks", PINNED_MAX_BLOCKS);
        goto out;
    }
    if (p->o.limit && p->st.bytes_in_use + bytes > p->o.limit) {
        bora_errf(err, -ENOMEM, "pinned pool: %zu bytes asked, %zu of the %zu-byte limit in use", bytes,
                  p->st.bytes_in_use, p->o.limit);
        goto out;
    }
    enum pinned_kind kind;
    m = block_get(p, bytes, &kind, err);
    if (!m)
        goto out;
    p->blocks[p->n_blocks++] = (struct pinned_block){ m, bytes, kind };
    p->st.bytes_in_use += bytes;
    if (p->st.bytes_in_use > p->st.bytes_peak)
        p->st.bytes_peak = p->st.bytes_in_use;
    p->st.blocks = p->n_blocks;
    p->st.kind = kind;
out:
    pthread_mutex_unlock(&p->mu);
    return m;
}

void pinned_free(struct pinned_pool *p, void *ptr)
{
    if (!ptr)
        return;
    pthread_mutex_lock(&p->mu);
    for (int i = p->n_blocks - 1; i >= 0; i--)
        if (p->blocks[i].ptr == ptr) {
            block_put(&p->blocks[i]);
            p->st.bytes_in_use -= p->blocks[i].bytes;
            p->blocks[i] = p->blocks[--p->n_blocks];
            p->st.blocks = p->n_blocks;
            break;
        }
    pthread_mutex_unlock(&p->mu);
}

void pinned_stats_get(struct pinned_pool *p, struct pinned_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->st;
    pthread_mutex_unlock(&p->mu);
}

const char *pinned_pool_note(struct pinned_pool *p)
{
    return p->note;
}

void pinned_pool_close(struct pinned_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_blocks; i++)
        block_put(&p->blocks[i]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void *pinned_alloc_cb(void *pool, size_t bytes)
{
    return pinned_alloc(pool, bytes, NULL);
}

void pinned_free_cb(void *pool, void *ptr)
{
    pinned_free(pool, ptr);
}
