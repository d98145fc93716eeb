/* ring.h — bounded lock-free FIFO of fixed-size elements with rte_ring semantics: multi- or
 * single-producer enqueue, single-consumer dequeue, burst calls that return how many they moved.
 * The request ring is MP/SC (every transport enqueues, the decoder dequeues); each response ring
 * is SP/SC (decoder → one transport). The API mirrors rte_ring_*_burst_elem so a DPDK build may
 * back it with rte_ring without touching callers.
 * Budget: one burst ≈ one CAS + one acquire/release pair + element copies (< 50 ns for 32 ptrs). */
#ifndef BORA_DATAPLANE_RING_H
#define BORA_DATAPLANE_RING_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/err.h"

#define RING_CACHE_LINE 64
#define RING_SP_ENQ   0x1u     /* single producer (else multi-producer, CAS on the head) */

struct ring {
    /* read-only after init */
    uint32_t size, mask;         /* slots (power of two) */
    uint32_t esize;              /* bytes per element (multiple of 4) */
    uint32_t flags;
    uint8_t *elems;              /* (size, esize) owned */
    /* producer side: head claimed by producers, tail published to the consumer */
    alignas(RING_CACHE_LINE) _Atomic uint32_t prod_head;
    _Atomic uint32_t prod_tail;
    /* consumer side */
    alignas(RING_CACHE_LINE) _Atomic uint32_t cons_head;
    _Atomic uint32_t cons_tail;
    alignas(RING_CACHE_LINE) char pad_;
};

/* Allocates a ring of at least `count` slots (rounded up to a power of two) of esize bytes.
 * Errors: -EINVAL (count 0 or > 2^30, esize 0 or not a multiple of 4), -ENOMEM.
 * Thread: init/fini by the owner before/after every other use. */
int ring_init(struct ring *r, uint32_t count, uint32_t esize, uint32_t flags, struct bora_err *err);
void ring_fini(struct ring *r);

/* Copies up to n elements from objs into the ring; returns how many were enqueued (0 when
 * full). MP-safe unless RING_SP_ENQ. Never blocks beyond waiting for earlier producers to
 * publish (a few ns). */
unsigned ring_enqueue_burst(struct ring *r, const void *objs, unsigned n);
/* Copies up to n elements out into objs; returns how many. Single consumer only. */
unsigned ring_dequeue_burst(struct ring *r, void *objs, unsigned n);
/* Elements in the ring now (a snapshot; exact only when producers and consumer are idle). */
unsigned ring_count(const struct ring *r);
static inline unsigned ring_capacity(const struct ring *r) { return r->size; }

#endif
