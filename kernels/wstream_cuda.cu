// wstream_cuda.cu — the streamer's CUDA sink (see wstream_cuda.h): async host→device copies on
// one copy stream, an event per staging buffer, BF16→FP8 row quantization as items complete.
// Budget: copies run at the pinned H2D rate (~55 GB/s on the H200), far above the disk, so the
// stream stays disk-bound; a quantized item costs one extra read+write of its BF16 bytes in HBM.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "kernels/wstream_cuda.h"
}
#include "kernels/cuda_check.h"


#define WSC_QUANT_THREADS 256

struct wstream_cuda_sink {
    cudaStream_t stream;
    cudaEvent_t *ev;        // (n_bufs)
    int n_bufs;
    uint64_t *item_done;    // (n_items) bytes copied per item
    int n_items;
    int quantized;
};

// One block per row: absmax → scale = absmax / 448 → e4m3 codes (saturating, round to nearest).
__global__ void wsc_quant_rows(const __nv_bfloat16 *src, int64_t cols, uint8_t *q, uint64_t q_pitch, float *rs)
{
    __shared__ float red[WSC_QUANT_THREADS];
    const int64_t r = blockIdx.x;
    const __nv_bfloat16 *row = src + r * cols;
    float m = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        m = fmaxf(m, fabsf(__bfloat162float(row[c])));
    red[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s)
            red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    const float scale = red[0] > 0.0f ? red[0] / 448.0f : 1.0f;
    if (threadIdx.x == 0)
        rs[r] = scale;
    uint8_t *qr = q + r * q_pitch;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        qr[c] = (uint8_t)__nv_cvt_float_to_fp8(__bfloat162float(row[c]) / scale, __NV_SATFINITE, __NV_E4M3);
}

static int wsc_copy(struct wstream_cuda_sink *s, const struct wstream_chunk *c, struct bora_err *err)
{
    const struct wstream_item *it = c->item;
    if (!it->row_bytes || it->row_bytes == it->dst_pitch) {
        CUDA_CHECK(cudaMemcpyAsync((uint8_t *)it->dst + c->item_off, c->data, c->len, cudaMemcpyHostToDevice, s->stream));
        return 0;
    }
    // pitched destination: partial first row, whole rows as one 2D copy, partial last row
    uint64_t off = c->item_off, left = c->len;
    const uint8_t *src = (const uint8_t *)c->data;
    while (left) {
        uint64_t r = off / it->row_bytes, in = off % it->row_bytes;
        uint8_t *d = (uint8_t *)it->dst + r * it->dst_pitch + in;
        if (in == 0 && left >= it->row_bytes) {
            uint64_t rows = left / it->row_bytes;
            CUDA_CHECK(cudaMemcpy2DAsync(d, it->dst_pitch, src, it->row_bytes, it->row_bytes, rows,
                                        cudaMemcpyHostToDevice, s->stream));
            uint64_t n = rows * it->row_bytes;
            src += n, off += n, left -= n;
            continue;
        }
        uint64_t n = it->row_bytes - in < left ? it->row_bytes - in : left;
        CUDA_CHECK(cudaMemcpyAsync(d, src, n, cudaMemcpyHostToDevice, s->stream));
        src += n, off += n, left -= n;
    }
    return 0;
}

static int wsc_on_chunk(void *ctx, const struct wstream_chunk *c, struct bora_err *err)
{
    struct wstream_cuda_sink *s = (struct wstream_cuda_sink *)ctx;
    int rc = wsc_copy(s, c, err);
    if (rc)
        return rc;
    if (c->item_index < 0 || c->item_index >= s->n_items)
        return bora_errf(err, -EINVAL, "wstream cuda sink: item %d outside the plan of %d", c->item_index, s->n_items);
    s->item_done[c->item_index] += c->len;
    const struct wstream_cuda_quant *qz = (const struct wstream_cuda_quant *)c->item->user;
    if (qz && s->item_done[c->item_index] == c->item->len) {   // all bytes queued on this stream: quantize after them
        wsc_quant_rows<<<(unsigned)qz->rows, WSC_QUANT_THREADS, 0, s->stream>>>(
            (const __nv_bfloat16 *)c->item->dst, qz->cols, qz->q, qz->q_pitch, qz->row_scale);
        CUDA_CHECK(cudaGetLastError());
        s->quantized++;
    }
    return 0;
}

static int wsc_buf_done(void *ctx, int buf, struct bora_err *err)
{
    struct wstream_cuda_sink *s = (struct wstream_cuda_sink *)ctx;
    if (buf < 0 || buf >= s->n_bufs)
        return bora_errf(err, -EINVAL, "wstream cuda sink: buffer %d of %d", buf, s->n_bufs);
    CUDA_CHECK(cudaEventRecord(s->ev[buf], s->stream));
    return 0;   // held until the event completes
}

static int wsc_buf_poll(void *ctx, int buf, bool wait, struct bora_err *err)
{
    struct wstream_cuda_sink *s = (struct wstream_cuda_sink *)ctx;
    cudaError_t e = wait ? cudaEventSynchronize(s->ev[buf]) : cudaEventQuery(s->ev[buf]);
    if (e == cudaSuccess)
        return 1;
    if (e == cudaErrorNotReady)
        return 0;
    return bora_errf(err, -EIO, "%s(buffer %d): %s (%s:%d)", wait ? "cudaEventSynchronize" : "cudaEventQuery", buf,
                     cudaGetErrorString(e), __FILE__, __LINE__);
}

static int wsc_flush(void *ctx, struct bora_err *err)
{
    struct wstream_cuda_sink *s = (struct wstream_cuda_sink *)ctx;
    CUDA_CHECK(cudaStreamSynchronize(s->stream));
    return 0;
}

extern "C" int wstream_cuda_sink_open(struct wstream_cuda_sink **out, int n_bufs, int n_items, struct bora_err *err)
{
    *out = NULL;
    struct wstream_cuda_sink *s = (struct wstream_cuda_sink *)calloc(1, sizeof *s);
    if (!s)
        return bora_errf(err, -ENOMEM, "wstream cuda sink: out of memory");
    s->ev = (cudaEvent_t *)calloc((size_t)(n_bufs > 0 ? n_bufs : 1), sizeof *s->ev);
    s->item_done = (uint64_t *)calloc((size_t)(n_items > 0 ? n_items : 1), sizeof *s->item_done);
    s->n_items = n_items;
    if (!s->ev || !s->item_done) {
        wstream_cuda_sink_close(s);
        return bora_errf(err, -ENOMEM, "wstream cuda sink: out of memory");
    }
    cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
    for (int i = 0; e == cudaSuccess && i < n_bufs; i++) {
        e = cudaEventCreateWithFlags(&s->ev[i], cudaEventDisableTiming);
        if (e == cudaSuccess)
            s->n_bufs = i + 1;
    }
    if (e != cudaSuccess) {
        wstream_cuda_sink_close(s);
        return bora_errf(err, -EIO, "wstream cuda sink: creating the copy stream and %d events: %s (%s:%d)", n_bufs,
                         cudaGetErrorString(e), __FILE__, __LINE__);
    }
    *out = s;
    return 0;
}

extern "C" void wstream_cuda_sink_bind(struct wstream_cuda_sink *s, struct wstream_sink *sink)
{
    memset(sink, 0, sizeof *sink);
    sink->ctx = s;
    sink->on_chunk = wsc_on_chunk;
    sink->buf_done = wsc_buf_done;
    sink->buf_poll = wsc_buf_poll;
    sink->flush = wsc_flush;
}

extern "C" int wstream_cuda_sink_quantized(const struct wstream_cuda_sink *s)
{
    return s->quantized;
}

extern "C" void wstream_cuda_sink_close(struct wstream_cuda_sink *s)
{
    if (!s)
        return;
    if (s->stream) {
        cudaStreamSynchronize(s->stream);   // nothing to report: closing
        cudaStreamDestroy(s->stream);
    }
    for (int i = 0; i < s->n_bufs; i++)
        cudaEventDestroy(s->ev[i]);
    free(s->ev);
    free(s->item_done);
    free(s);
}
