/* engine_cuda.h — what the CUDA backend offers beyond the engine vtable: a synthetic model with
 * random weights generated on the GPU (benchmarks of shapes too large to hold on the host), a
 * timed greedy decode run, and the last device error. Built only with CUDA (BORA_CUDA). */
#ifndef BORA_KERNELS_ENGINE_CUDA_H
#define BORA_KERNELS_ENGINE_CUDA_H

#include <stdio.h>
#include <stdint.h>

#include "common/err.h"
#include <stdbool.h>

#include "kernels/plan.h"
#include "mem/model_direct.h"
#include "model/engine.h"

/* Like engine_cuda_open, but e->model's tensors carry only dtype and shape (data NULL): the
 * weights, scales and KV cache are filled with random values on the GPU from seed. The norm
 * weights are 1 and RoPE uses e->model->rope_inv_freq. Same errors as engine_cuda_open. */
int engine_cuda_open_synthetic(struct engine *e, uint64_t seed, struct bora_err *err);

/* Direct loading (a loader writes the matrices into the arena itself):
 * engine_cuda_open_deferred is engine_cuda_open up to the allocated arena (nothing uploaded;
 * e->ops set, so engine_close works); engine_cuda_weight_dsts then fills out[0..n) with every
 * matrix's device destination (row r at dst + r × pitch; gate/up rows interleave, q/k/v
 * follow each other) and returns n (7 n_layers + 2 at most, tied: one fewer), or -ENOTSUP when
 * a matrix is stored as another dtype than the arena's (then finish with streamed = false,
 * which uploads from the host tensors as engine_cuda_open does). engine_cuda_open_finish
 * writes row scales, norms and the RoPE table from the host (streamed = true) and tunes and
 * captures. Errors: those of engine_cuda_open; on failure of open_deferred / open_finish the
 * backend is closed (e->ops NULL: free e, do not engine_close it). */
int engine_cuda_open_deferred(struct engine *e, struct bora_err *err);
int engine_cuda_weight_dsts(struct engine *e, struct model_direct_dst *out, int cap, struct bora_err *err);
int engine_cuda_open_finish(struct engine *e, bool streamed, struct bora_err *err);
/* Optional, between engine_cuda_open_deferred and engine_cuda_open_finish(streamed = true):
 * everything open_finish does that needs the arena but not the matrices' values (row scales,
 * norms and RoPE from the host, GEMV tuning — it times launches only — graph capture, prefill
 * workspace), so it may run on one thread while others still copy the matrices into the arena
 * on their own non-blocking streams; open_finish then only synchronizes. Thread: the one that
 * calls open_finish afterwards. Errors: those of open_finish; the engine stays open (close it
 * with e->ops->close once the copies have stopped). */
/* stop (may be NULL), polled between the prefill GEMM buckets it times (prefill_run_tune):
 * non-zero leaves the buckets not yet timed to their first prompts (a warm page cache streams
 * the weights faster than all are timed, and the first token should not wait for it). */
int engine_cuda_prepare(struct engine *e, int (*stop)(void *ctx), void *stop_ctx, struct bora_err *err);

/* Runs n greedy decode steps from position pos (token `first` at pos), each step fed the id
 * the previous one chose on the GPU, launched back to back; *ms = elapsed device time.
 * *last = the id chosen by the last step. Errors: -EINVAL (pos + n > max_ctx), -EIO. */
int engine_cuda_decode_timed(struct engine *e, int32_t first, int pos, int n, double *ms,
                             int32_t *last, struct bora_err *err);

/* Diagnostics of the persistent decode kernel: runs the layers of one step at position pos with
 * its trace on and prints to f where the time of a layer goes (each phase's wait, input load
 * and stream, averaged over blocks and layers; the producer's time blocked on a full ring).
 * -ENOTSUP when the persistent kernel does not take this model. */
int engine_cuda_mega_trace(struct engine *e, int pos, FILE *f, struct bora_err *err);

/* Diagnostics: n decode steps from position pos enqueued without the graph, with events between
 * the step's parts (embedding, layers, head, sampler, copy of the result); prints the mean
 * device time of each to f. Errors: -EINVAL (positions), -EIO. */
int engine_cuda_step_profile(struct engine *e, int pos, int n, FILE *f, struct bora_err *err);

/* Prompts (forward with n > 1) run as a batched prefill in chunks of this many tokens (default
 * PREFILL_CHUNK_DEFAULT, kernels/prefill_run.h); reallocates the prefill workspace.
 * Errors: -EINVAL (below PREFILL_CHUNK_MIN), -ENOMEM. Not while a forward runs. */
int engine_cuda_set_prefill_chunk(struct engine *e, int tokens, struct bora_err *err);
/* Test hook: the next forward meets a real CUDA error (an invalid-argument copy after its work
 * is queued). It must fail with -EIO naming the call, and the engine must serve the next forward
 * as if nothing happened (issue #4: "a CUDA error fails the request ... leaves the engine usable"). */
void engine_cuda_fault_next(struct engine *e);
/* Time to first token: from ids[0..n) on the host (n ≥ 2, positions pos..pos+n-1, after the
 * pos tokens the cache already holds: a prefix-cache hit when pos > 0) through prefill, final
 * norm, output head and the greedy sampler to the first id on the host; *ms is wall time.
 * Errors: -EINVAL (bad ids, n < 2, pos + n > max_ctx), -EIO. */
int engine_cuda_ttft(struct engine *e, const int32_t *ids, int n, int pos, int32_t *first, double *ms,
                     struct bora_err *err);
/* The engine's prefill runner (profiling, GEMM path; kernels/prefill_run.h). */
struct prefill_run *engine_cuda_prefill(struct engine *e);
/* 1 if the last prefill GEMM ran on cuBLASLt, 0 if on the CUDA-core fallback. */
int engine_cuda_prefill_path(struct engine *e);
/* The GEMVs of a decode step, by kind; the engine times every launch shape of each at open. */
enum engine_cuda_gemv {
    ENGINE_CUDA_GEMV_QKV = 0, ENGINE_CUDA_GEMV_WO, ENGINE_CUDA_GEMV_GATE_UP, ENGINE_CUDA_GEMV_DOWN,
    ENGINE_CUDA_GEMV_HEAD, ENGINE_CUDA_GEMV_KINDS
};
/* The chosen launch shape (kern_gemv variant) of a kind and its time per launch in µs. */
int engine_cuda_gemv_choice(const struct engine *e, int kind, float *us);

/* Times the attention of every layer at position pos (graph of n_layers launches, best of 2
 * replays): *us per layer. Overwrites the cache entry at pos. Errors: -EINVAL, -EIO. */
int engine_cuda_time_attention(struct engine *e, int pos, float *us, struct bora_err *err);

/* The arena layout the engine uses. */
const struct plan_layout *engine_cuda_layout(const struct engine *e);
/* The decode schedule the engine runs for the token at position pos: "persistent" (every layer
 * in one persistent kernel) or "kernels" (a kernel per GEMV and attention); *why (if why) says
 * why (the timings that chose it, or why the persistent kernel does not apply). At open both
 * are timed at the first position and near the end of the cache; the faster at each end is
 * kept, and where they differ the engine switches schedule at the position where the timings
 * cross (the per-kernel step also when the persistent kernel fails to launch, e.g. on a GPU
 * shared with other work). BORA_DECODE=kernels or =persistent in the environment picks one. */
const char *engine_cuda_decode_path(const struct engine *e, int pos, const char **why);
/* The persistent kernel's layout in words (grid, shared memory, ring stages), "" when it does not
 * apply to this model and GPU. */
const char *engine_cuda_mega_layout(const struct engine *e);
/* Message of the last failure of forward/forward_all ("" if none). */
const char *engine_cuda_last_error(const struct engine *e);

#endif
