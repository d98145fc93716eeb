/* ring.c — the MP/SC and SP/SC element ring of ring.h (the rte_ring head/tail algorithm in C11
 * atomics). Producers claim [prod_head, +n) then publish prod_tail in claim order; the consumer
 * reads up to prod_tail and publishes cons_tail, which producers read to find free space. */
#include "dataplane/ring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

int ring_init(struct ring *r, uint32_t count, uint32_t esize, uint32_t flags, struct bora_err *err)
{
    memset(r, 0, sizeof *r);
    if (count == 0 || count > (1u << 30))
        return bora_errf(err, -EINVAL, "ring: count %u out of range 1..2^30", count);
    if (esize == 0 || esize % 4)
        return bora_errf(err, -EINVAL, "ring: element size %u is not a positive multiple of 4", esize);
    uint32_t size = 1;
    while (size < count)
        size <<= 1;
    r->elems = aligned_alloc(RING_CACHE_LINE, ((size_t)size * esize + RING_CACHE_LINE - 1) &
                                                  ~(size_t)(RING_CACHE_LINE - 1));
    if (!r->elems)
        return bora_errf(err, -ENOMEM, "ring: cannot allocate %u × %u bytes", size, esize);
    r->size = size;
    r->mask = size - 1;
    r->esize = esize;
    r->flags = flags;
    return 0;
}

void ring_fini(struct ring *r)
{
    free(r->elems);
    r->elems = NULL;
}

static void copy_in(struct ring *r, uint32_t at, const uint8_t *src, unsigned n)
{
    uint32_t i = at & r->mask;
    uint32_t first = r->size - i < n ? r->size - i : n;
    memcpy(r->elems + (size_t)i * r->esize, src, (size_t)first * r->esize);
    if (first < n)
        memcpy(r->elems, src + (size_t)first * r->esize, (size_t)(n - first) * r->esize);
}

static void copy_out(const struct ring *r, uint32_t at, uint8_t *dst, unsigned n)
{
    uint32_t i = at & r->mask;
    uint32_t first = r->size - i < n ? r->size - i : n;
    memcpy(dst, r->elems + (size_t)i * r->esize, (size_t)first * r->esize);
    if (first < n)
        memcpy(dst + (size_t)first * r->esize, r->elems, (size_t)(n - first) * r->esize);
}

unsigned ring_enqueue_burst(struct ring *r, const void *objs, unsigned n)
{
    uint32_t head, free_n;
    if (r->flags & RING_SP_ENQ) {
        head = atomic_load_explicit(&r->prod_head, memory_order_relaxed);
        /* acquire pairs with the consumer's release of cons_tail: its reads of these slots are done */
        free_n = r->size - (head - atomic_load_explicit(&r->cons_tail, memory_order_acquire));
        if (n > free_n)
            n = free_n;
        if (n == 0)
            return 0;
        atomic_store_explicit(&r->prod_head, head + n, memory_order_relaxed);
    } else {
        /* acquire, here and in the CAS: head is read before cons_tail. Read the other way round,
         * other producers and the consumer could both move on in between, head - cons_tail would
         * exceed the size and free_n wrap (a weakly ordered CPU; DPDK's C11 ring does the same) */
        head = atomic_load_explicit(&r->prod_head, memory_order_acquire);
        do {
            /* acquire pairs with the consumer's release store of cons_tail */
            free_n = r->size - (head - atomic_load_explicit(&r->cons_tail, memory_order_acquire));
            if (n > free_n)
                n = free_n;
            if (n == 0)
                return 0;
            /* claiming slots publishes nothing: that is prod_tail's release */
        } while (!atomic_compare_exchange_weak_explicit(&r->prod_head, &head, head + n,
                                                        memory_order_acquire, memory_order_acquire));
    }
    copy_in(r, head, objs, n);
    /* earlier claimers publish first; the acquire pairs with their release of prod_tail */
    while (atomic_load_explicit(&r->prod_tail, memory_order_acquire) != head)
        cpu_relax();
    /* release pairs with the consumer's acquire load of prod_tail: the copied slots are visible */
    atomic_store_explicit(&r->prod_tail, head + n, memory_order_release);
    return n;
}

unsigned ring_dequeue_burst(struct ring *r, void *objs, unsigned n)
{
    uint32_t head = atomic_load_explicit(&r->cons_head, memory_order_relaxed);
    /* acquire pairs with the producers' release store of prod_tail */
    uint32_t avail = atomic_load_explicit(&r->prod_tail, memory_order_acquire) - head;
    if (n > avail)
        n = avail;
    if (n == 0)
        return 0;
    copy_out(r, head, objs, n);
    atomic_store_explicit(&r->cons_head, head + n, memory_order_relaxed);
    /* release pairs with the producers' acquire load of cons_tail: slots may be reused */
    atomic_store_explicit(&r->cons_tail, head + n, memory_order_release);
    return n;
}

unsigned ring_count(const struct ring *r)
{
    /* relaxed snapshot: both sides are monotonic, the difference is a hint for figures only */
    uint32_t prod = atomic_load_explicit(&r->prod_tail, memory_order_relaxed);
    uint32_t cons = atomic_load_explicit(&r->cons_tail, memory_order_relaxed);
    uint32_t c = prod - cons;
    return c > r->size ? 0 : c;
}
