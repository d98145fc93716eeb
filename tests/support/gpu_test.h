/* gpu_test.h — what the kernel-level GPU tests (gpu_kernels, gpu_prefill) share: a seeded
 * xorshift generator so every run draws the same data, the GPU check that skips loudly, a call
 * check that fails with the error's text, and device buffers filled from the host. */
#ifndef BORA_TESTS_SUPPORT_GPU_TEST_H
#define BORA_TESTS_SUPPORT_GPU_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sets the generator's state (non-zero); each test program seeds it once, before its tests. */
void gt_seed(uint64_t state);
/* Uniform in [-1, 1), 24 bits of resolution. */
float gt_frand(void);

#ifdef BORA_CUDA
/* true when a CUDA device answers; otherwise prints "SKIP (no GPU): reason" and returns false. */
bool gt_gpu_ready(void);
/* Device buffer of `bytes`, filled from h when h is not NULL; fails the test on error. */
void *gt_upload(const void *h, size_t bytes);
/* Waits for the device, then copies `bytes` from d to h; fails the test on error. */
void gt_download(void *h, const void *d, size_t bytes);

/* Skips the current cmocka test (loudly) without a GPU. */
#define NEED_GPU()             \
    do {                       \
        if (!gt_gpu_ready()) { \
            skip();            \
            return;            \
        }                      \
    } while (0)

/* Runs a bora call that takes E (a struct bora_err *) and fails the test with its message
 * unless it returns 0. */
#define OK(call)                                         \
    do {                                                 \
        struct bora_err err_ = { "" };                   \
        int rc_ = (call);                                \
        if (rc_)                                         \
            fail_msg("%s: %d %s", #call, rc_, err_.msg); \
    } while (0)
#define E (&err_)
#endif

#endif
