/* touch.h — fault a buffer's pages in now, not on the first request that uses it.
 * A memset after malloc is not enough: the compiler may fold the pair into calloc, whose fresh
 * pages stay untouched until written. Writes through a volatile pointer cannot be folded. */
#ifndef BORA_COMMON_TOUCH_H
#define BORA_COMMON_TOUCH_H

#include <stddef.h>
#include <stdint.h>

#define BORA_TOUCH_STRIDE 4096   /* the smallest page size borad runs on */

/* Writes one zero byte per page of [p, p + n) and the last byte: the pages become resident and
 * keep their contents elsewhere. To keep a buffer zeroed, allocate it with calloc first. */
static inline void bora_fault_in(void *p, size_t n)
{
    volatile uint8_t *b = p;
    for (size_t i = 0; i < n; i += BORA_TOUCH_STRIDE)
        b[i] = 0;
    if (n)
        b[n - 1] = 0;
}

#endif
