/* pool.h — fixed pool of equal-sized objects carved from one allocation at start, so the hot
 * path never calls malloc: get/put are O(1) pushes and pops on an index stack.
 * Thread: one owner thread calls get and put (each transport has its own pool). */
#ifndef BORA_DATAPLANE_POOL_H
#define BORA_DATAPLANE_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct pool {
    uint8_t *mem;          /* (n, obj_size) bytes, cache-line aligned, zeroed at init */
    size_t obj_size;       /* bytes per object, rounded up to 64 */
    uint32_t n;            /* objects */
    uint32_t n_free;
    uint32_t *free_stack;  /* (n) indices of free objects; top at n_free - 1 */
};

/* Allocates n objects of obj_size bytes. Errors: -EINVAL (n or obj_size 0), -ENOMEM. */
int pool_init(struct pool *p, uint32_t n, size_t obj_size, struct bora_err *err);
void pool_fini(struct pool *p);
/* Returns a free object (contents as its last user left them), or NULL when all are in use. */
void *pool_get(struct pool *p);
/* Returns obj (which must come from p and be in use) to the pool. */
void pool_put(struct pool *p, void *obj);
/* Index of obj in 0..n-1, and the object at an index. */
uint32_t pool_index(const struct pool *p, const void *obj);
void *pool_at(const struct pool *p, uint32_t i);
static inline uint32_t pool_in_use(const struct pool *p) { return p->n - p->n_free; }

#endif
