/* cuda_check.h — the one checked-call macro of bora's CUDA code (C and CUDA sources alike):
 * a failing runtime call returns -EIO from the enclosing function with "call: error text
 * (file:line)" in its `struct bora_err *err`. Include after <cuda_runtime_api.h>. */
#ifndef BORA_KERNELS_CUDA_CHECK_H
#define BORA_KERNELS_CUDA_CHECK_H

#include <errno.h>

#include "common/err.h"

#define CUDA_CHECK(call)                                                                        \
    do {                                                                                        \
        cudaError_t e_ = (call);                                                                \
        if (e_ != cudaSuccess)                                                                  \
            return bora_errf(err, -EIO, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_),        \
                             __FILE__, __LINE__);                                               \
    } while (0)

#endif
