/* wstream_cuda.h — the streamer's CUDA sink: each chunk in pinned staging memory is copied to
 * its device destination with cudaMemcpyAsync on a copy stream, one event per staging buffer
 * tells the streamer when the buffer may be refilled, and BF16 items marked for it are
 * quantized to FP8 e4m3 (one scale per row) on the GPU as soon as all their bytes landed.
 * Plain C boundary; the implementation is mem/wstream_cuda.cu, to move under kernels/ once the
 * CUDA engine is merged (the Makefile compiles only the .cu files of kernels/). */
#ifndef BORA_MEM_WSTREAM_CUDA_H
#define BORA_MEM_WSTREAM_CUDA_H

#include <stdint.h>

#include "common/err.h"
#include "mem/wstream.h"

/* Put in wstream_item.user for a BF16 item to be stored as FP8: the item's bytes go to
 * item.dst (a device BF16 scratch of rows × cols), then q (device, rows × cols e4m3, row r at
 * q + r × q_pitch) and row_scale (device, rows floats: w = q × row_scale[r]) are written. */
struct wstream_cuda_quant {
    uint8_t *q;
    uint64_t q_pitch;
    float *row_scale;
    int64_t rows, cols;
};

struct wstream_cuda_sink;

/* Creates the copy stream and n_bufs events (n_bufs = the wstream's staging buffers) for a
 * plan of n_items items. Errors: -EIO naming the CUDA call, file and line; -ENOMEM.
 * Thread: the sink is used by the thread running wstream_run only. */
int wstream_cuda_sink_open(struct wstream_cuda_sink **out, int n_bufs, int n_items, struct bora_err *err);
/* Fills *sink with the callbacks (ctx = s). */
void wstream_cuda_sink_bind(struct wstream_cuda_sink *s, struct wstream_sink *sink);
/* Bytes copied host→device so far and the copy stream's busy time are not tracked here;
 * this returns the number of items quantized on the GPU. */
int wstream_cuda_sink_quantized(const struct wstream_cuda_sink *s);
/* Synchronizes and frees the stream and events. */
void wstream_cuda_sink_close(struct wstream_cuda_sink *s);

#endif
