/* pool.c — the fixed object pool of pool.h: one aligned slab plus an index stack. */
#include "dataplane/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int pool_init(struct pool *p, uint32_t n, size_t obj_size, struct bora_err *err)
{
    memset(p, 0, sizeof *p);
    if (n == 0 || obj_size == 0)
        return bora_errf(err, -EINVAL, "pool: %u objects of %zu bytes is empty", n, obj_size);
    p->obj_size = (obj_size + 63) & ~(size_t)63;
    p->mem = aligned_alloc(64, p->obj_size * n);
    p->free_stack = malloc(sizeof *p->free_stack * n);
    if (!p->mem || !p->free_stack) {
        pool_fini(p);
        return bora_errf(err, -ENOMEM, "pool: cannot allocate %u objects of %zu bytes", n, obj_size);
    }
    memset(p->mem, 0, p->obj_size * n);
    p->n = n;
    for (uint32_t i = 0; i < n; i++)
        p->free_stack[i] = n - 1 - i;   /* object 0 on top */
    p->n_free = n;
    return 0;
}

void pool_fini(struct pool *p)
{
    free(p->mem);
    free(p->free_stack);
    p->mem = NULL;
    p->free_stack = NULL;
    p->n = p->n_free = 0;
}

void *pool_get(struct pool *p)
{
    if (p->n_free == 0)
        return NULL;
    return p->mem + p->obj_size * p->free_stack[--p->n_free];
}

void pool_put(struct pool *p, void *obj)
{
    p->free_stack[p->n_free++] = pool_index(p, obj);
}

uint32_t pool_index(const struct pool *p, const void *obj)
{
    return (uint32_t)(((const uint8_t *)obj - p->mem) / p->obj_size);
}

void *pool_at(const struct pool *p, uint32_t i)
{
    return p->mem + p->obj_size * i;
}
