/* model_stream.h — loads a model's weights through the io_uring streamer: every tensor that
 * model_open left pointing into a mmap'd shard is read, in layer order, into one host block
 * (pinned pool) and the model's tensors are re-pointed at it, layer by layer as they land, so
 * the first request can start on layer 0 while later layers still arrive. */
#ifndef BORA_MEM_MODEL_STREAM_H
#define BORA_MEM_MODEL_STREAM_H

#include "common/err.h"
#include "mem/pinned.h"
#include "mem/wstream.h"
#include "model/model.h"

struct model_stream;

/* Plans the reads of m's mapped tensors (group 0: embeddings; group 1 + l: layer l; group
 * n_layers + 1: final norm and output head), takes the host block (from pool, or
 * posix_memalign when pool is NULL) and starts the streamer on its own thread. m is not
 * modified until model_stream_wait_layer / model_stream_finish. Errors: those of
 * wstream_open (file, truncation), -ENOMEM. Caller owns *out. */
int model_stream_begin(struct model_stream **out, struct model *m, struct pinned_pool *pool,
                       const struct wstream_opts *wo, struct bora_err *err);

/* Waits until layer `layer` (-1: embeddings; n_layers: final norm + head) and all before it
 * are resident, then re-points their tensors at the host block. Thread: the one that uses m.
 * Errors: the run's error code (the message comes from model_stream_finish). */
int model_stream_wait_layer(struct model_stream *ms, int layer);

/* Waits for the whole run. Success: every tensor points into the host block. Failure: every
 * tensor points back into the mapped shards and the host block is freed (nothing is left
 * half-loaded); the message names the file and offset. st (may be NULL) gets the stats. */
int model_stream_finish(struct model_stream *ms, struct wstream_stats *st, struct bora_err *err);

/* Frees the plan and the host block: call after model_close (the tensors point into it). */
void model_stream_close(struct model_stream *ms);

/* begin + finish. */
int model_stream_weights(struct model_stream **out, struct model *m, struct pinned_pool *pool,
                         const struct wstream_opts *wo, struct wstream_stats *st, struct bora_err *err);

/* Bytes of the host block (Σ streamed tensors, each 64-byte aligned). */
size_t model_stream_bytes(const struct model_stream *ms);

#endif
