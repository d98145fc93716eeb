/* model_load_cuda.h — the direct cold-start path: a CUDA engine whose weight matrices are
 * streamed from the checkpoint's shards straight into the device arena (io_uring into pinned,
 * registered staging buffers → cudaMemcpyAsync on a copy stream; one copy, no host block).
 * Cold page cache: one O_DIRECT stream (opt-in: while the CUDA context and the arena are made,
 * a thread reads the files' start into the page cache; buffered readers then take what it
 * covered and the O_DIRECT stream the rest). Mostly cached: several buffered readers on their own threads, each over a
 * contiguous part of the file, so the page-cache copy runs in parallel. Either way the engine
 * is prepared (scales, GEMV tuning, graph capture, prefill workspace) on the calling thread
 * while the readers run. Staging: one pinned block per reader, few buffers when buffered.
 * Budget: first token ≤ 1.15 × file bytes ÷ raw read bandwidth + 0.3 s; warm < 1 s (7.5 GB). */
#ifndef BORA_KERNELS_MODEL_LOAD_CUDA_H
#define BORA_KERNELS_MODEL_LOAD_CUDA_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "model/engine.h"
#include "model/model.h"

#define MODEL_LOAD_CUDA_PARTS_CACHED 8   /* readers when the file is mostly in the page cache */
#define MODEL_LOAD_CUDA_BUFS_CACHED 8    /* staging buffers per buffered reader */
#define MODEL_LOAD_CUDA_WARM_TOKENS 64   /* warm-up prompt during the stream: loads the prefill
                                          * kernels (its GEMM bucket is timed by then, or by it) */

enum model_load_cuda_mode { MODEL_LOAD_CUDA_AUTO = 0, MODEL_LOAD_CUDA_DIRECT, MODEL_LOAD_CUDA_BUFFERED };
/* Staging memory per reader: one block with huge pages asked for (default), one block of small
 * pages, or each buffer registered on its own. */
enum model_load_cuda_stage { MODEL_LOAD_CUDA_STAGE_HUGE = 0, MODEL_LOAD_CUDA_STAGE_BLOCK, MODEL_LOAD_CUDA_STAGE_EACH };

struct model_load_cuda_opts {
    int qd;                          /* per reader; 0 = WSTREAM_QD_DEFAULT */
    size_t buf_bytes;                /* 0 = WSTREAM_BUF_BYTES_DEFAULT */
    enum model_load_cuda_mode mode;  /* AUTO: buffered when mincore says mostly cached */
    int parts;                       /* buffered readers (0 = MODEL_LOAD_CUDA_PARTS_CACHED); O_DIRECT
                                      * readers when nothing was prefetched (0 = 1) */
    int bufs;                        /* staging buffers per reader; 0 = MODEL_LOAD_CUDA_BUFS_CACHED
                                      * buffered, qd + qd/2 direct */
    enum model_load_cuda_stage stage;
    bool serial;                     /* prepare the engine after the stream, not during it */
    bool prefetch;                   /* cold: read the files' start into the page cache while the
                                      * context is made (opt-in: no gain measured yet) */
    int warm_tokens;                 /* a throw-away prompt of this many tokens during the stream
                                      * loads the prefill kernels; 0 = MODEL_LOAD_CUDA_WARM_TOKENS,
                                      * < 2 (e.g. -1) none */
};

struct model_load_cuda_stats {
    bool streamed;         /* false: a dtype needed conversion; weights went through the host */
    bool direct;           /* some reader used O_DIRECT (else all buffered) */
    uint64_t prefetched;   /* cold: bytes read into the page cache while the context was made */
    bool registered;       /* staging buffers registered with io_uring (all readers) */
    int parts;             /* readers, buffered and O_DIRECT together */
    uint64_t bytes;        /* bytes delivered to the GPU */
    double seconds;        /* wall time of the streaming (all readers) */
    int bufs;              /* staging buffers per reader */
    double ctx_s;          /* CUDA context (part of open_s) */
    double open_s;         /* CUDA context, device, arena, stream (before the first read) */
    bool prepared;         /* the engine was prepared while the weights streamed */
    double prepare_s;      /* its time (scales, norms, RoPE, GEMV tuning, graph, prefill workspace,
                            * warm-up prompt), overlapped with the stream */
    double finish_s;       /* after the stream: the rest (serial: all of the above) */
};

/* Opens a CUDA engine for m (o: max_ctx; backend and layer_wait ignored) with its matrices
 * streamed directly into the arena; the rest (scales, norms, RoPE) comes from the host tensors.
 * Falls back to the host upload (as engine_cuda_open) when a matrix needs a conversion or was
 * converted at model_open (it then lives in host memory, not in a shard).
 * Errors: those of engine_cuda_open; of wstream_open / wstream_run (file, offset); -ENODEV
 * without a CUDA build. st may be NULL. Caller owns *out (engine_close). */
int model_load_cuda(struct engine **out, const struct model *m, const struct engine_opts *o,
                    const struct model_load_cuda_opts *lo, struct model_load_cuda_stats *st, struct bora_err *err);

#endif
