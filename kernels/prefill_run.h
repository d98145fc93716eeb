/* prefill_run.h — chunked prefill of one sequence over the CUDA engine's arena (kernels/plan.h):
 * a prompt of n tokens runs in chunks of at most `chunk` tokens, each chunk through every layer
 * as GEMMs + row kernels + flash attention (kernels/prefill.h), writing K and V for every
 * position and leaving the last token's final hidden state (before the final norm) in the
 * arena's decode activation x, where the engine's output head picks it up.
 * Thread: the engine's thread; one runner per engine. Built only with CUDA (BORA_CUDA). */
#ifndef BORA_KERNELS_PREFILL_RUN_H
#define BORA_KERNELS_PREFILL_RUN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "kernels/kernels.h"
#include "kernels/plan.h"
#include "model/model.h"

#define PREFILL_CHUNK_DEFAULT PLAN_PREFILL_CHUNK   /* tokens per chunk; the workspace it takes is
                                                    * plan_prefill_layout's (≈ 0.26 GB for 7B) */
#define PREFILL_CHUNK_MIN PLAN_PREFILL_CHUNK_MIN

struct prefill_run;

/* What the runner reads: the engine's arena and how it is laid out. Borrowed; must outlive it. */
struct prefill_model {
    const struct model_config *cfg;
    const struct plan_layout *lay;
    const struct plan_dtypes *dt;
    uint8_t *arena;                 /* device */
    int max_ctx;
    float rope_attn_factor;
};

/* Allocates the workspace for chunks of `chunk` tokens (clamped to [PREFILL_CHUNK_MIN, max_ctx])
 * and a cuBLASLt context. Caller owns *out. Errors: -ENOMEM (message gives the bytes), -EIO. */
int prefill_run_open(struct prefill_run **out, const struct prefill_model *m, int chunk, struct bora_err *err);
void prefill_run_close(struct prefill_run *p);
int prefill_run_chunk_size(const struct prefill_run *p);
/* Device bytes of its workspace. */
uint64_t prefill_run_workspace_bytes(const struct prefill_run *p);
/* The GEMM context (the bench reads which path ran). */
struct kern_gemm *prefill_run_gemm(struct prefill_run *p);

/* Chooses and times the GEMM algorithm of each of a layer's four matrix shapes for every bucket
 * of token counts a chunk can hold (kern_gemm_bucket), smallest first, so that no prompt pays
 * that on its first use of a bucket (a 2,048-token 7B FP8 prompt: ≈ 32 GEMM passes of a layer,
 * ≈ 20 ms). Reads layer 0's weights whatever they hold (only the launches' times matter) and
 * writes only the workspace; synchronizes the stream. stop (may be NULL) is asked before each
 * bucket: non-zero leaves the rest to their first prompts. Errors: -EIO. */
int prefill_run_tune(struct prefill_run *p, struct CUstream_st *stream, int (*stop)(void *ctx), void *stop_ctx,
                     struct bora_err *err);

/* Runs tokens d_ids[0..n) (device, already validated) at positions pos..pos+n-1 on `stream`.
 * Between chunks it waits for the previous chunk and returns -ECANCELED if stop (may be NULL)
 * returns non-zero; the cache then holds the finished chunks. Errors: -EINVAL (pos + n >
 * max_ctx), -EIO, -ECANCELED. */
int prefill_run_tokens(struct prefill_run *p, const int32_t *d_ids, int n, int pos, struct CUstream_st *stream,
                       int (*stop)(void *ctx), void *stop_ctx, struct bora_err *err);

/* Optional per-kind timing (bench --profile): CUDA events around every launch, summed after
 * each prefill. Kinds: */
enum prefill_prof_kind {
    PREFILL_PROF_GEMM_QKV, PREFILL_PROF_GEMM_O, PREFILL_PROF_GEMM_GU, PREFILL_PROF_GEMM_DOWN,
    PREFILL_PROF_ATTN, PREFILL_PROF_ROW_QKV, PREFILL_PROF_ROW_QUANT, PREFILL_PROF_ROW_NORM,
    PREFILL_PROF_ROW_SWIGLU, PREFILL_PROF_KINDS
};
const char *prefill_prof_name(int kind);
/* on: creates the events (-EIO); off: destroys them. */
int prefill_run_profile(struct prefill_run *p, bool on, struct bora_err *err);
/* Milliseconds per kind summed over the prefills since the last read (zeroed by the read). */
void prefill_run_profile_read(struct prefill_run *p, double ms[PREFILL_PROF_KINDS]);

/* FLOPs of a prefill of n tokens after pos cached ones: 2 × linear weights per token plus
 * 4 × head_dim per visible (query, key) pair per head, plus the output head for one token. */
double prefill_flops(const struct model_config *cfg, int n, int pos);

#endif
