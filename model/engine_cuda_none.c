/* engine_cuda_none.c — the CUDA backend's constructor when bora is built without CUDA. */
#ifndef BORA_CUDA
#include <errno.h>

#include "model/engine.h"

int engine_cuda_open(struct engine *e, struct bora_err *err)
{
    (void)e;
    return bora_errf(err, -ENODEV, "this bora was built without CUDA (rebuild with nvcc available or CUDA=1)");
}
#endif
