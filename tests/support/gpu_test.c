/* gpu_test.c — see gpu_test.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "tests/support/gpu_test.h"

static uint64_t gt_state = 0x243f6a8885a308d3ull;

void gt_seed(uint64_t state)
{
    gt_state = state ? state : 0x243f6a8885a308d3ull;
}

float gt_frand(void)
{
    gt_state ^= gt_state << 13;
    gt_state ^= gt_state >> 7;
    gt_state ^= gt_state << 17;
    return (float)((gt_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

#ifdef BORA_CUDA
#include "kernels/kernels.h"

bool gt_gpu_ready(void)
{
    struct kern_device d;
    struct bora_err err = { "" };
    if (kern_device_query(&d, &err)) {
        fprintf(stderr, "SKIP (no GPU): %s\n", err.msg);
        return false;
    }
    return true;
}

void *gt_upload(const void *h, size_t bytes)
{
    void *d = NULL;
    struct bora_err err = { "" };
    if (kern_malloc(&d, bytes, &err) || (h && kern_copy_h2d(d, h, bytes, &err)))
        fail_msg("upload %zu bytes: %s", bytes, err.msg);
    return d;
}

void gt_download(void *h, const void *d, size_t bytes)
{
    struct bora_err err = { "" };
    if (kern_sync(&err) || kern_copy_d2h(h, d, bytes, &err))
        fail_msg("download: %s", err.msg);
}
#endif
