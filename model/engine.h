/* engine.h — the inference engine boundary: one API, two backends (CPU reference, CUDA).
 * An engine holds one sequence's KV cache and runs a loaded model one request at a time. */
#ifndef BORA_MODEL_ENGINE_H
#define BORA_MODEL_ENGINE_H

#include <stdint.h>

#include "common/err.h"
#include "model/model.h"
#include "model/sampler.h"

enum engine_backend { ENGINE_BACKEND_AUTO = 0, ENGINE_BACKEND_CPU, ENGINE_BACKEND_CUDA };
/* How the KV cache stores keys and values. FP8: e4m3, each element rounded to nearest even from
 * the float the forward computes, saturating at ±448 (no scale): half the bytes of BF16. */
enum engine_kv { ENGINE_KV_BF16 = 0, ENGINE_KV_FP8 };

struct engine_opts {
    enum engine_backend backend;
    int max_ctx;          /* KV cache capacity in tokens (0: min(model max_pos, 4096)) */
    int n_threads;        /* CPU backend threads (0: all cores) */
    enum engine_kv kv;    /* KV cache element type (BF16 default). The CPU backend keeps floats and
                           * rounds each cached key and value through e4m3 under FP8, so it is the
                           * reference the CUDA backend's FP8 cache is tested against. */
    /* Optional, for a pipelined cold start: called before the engine first reads layer l's
     * weights (l = -1: embeddings; l = n_layers: final norm and head), in increasing l, from
     * the thread running the forward; returns 0 or -errno, which fails that forward. A backend
     * that copies the weights at open (CUDA) calls it for each part as it uploads it. */
    int (*layer_wait)(void *ctx, int layer);
    void *layer_wait_ctx;
};

struct engine;

/* Backend vtable (implemented by engine_cpu.c and the CUDA backend). */
/* Device memory of an engine on a GPU, bytes. */
struct engine_mem {
    uint64_t weights, kv_cache, activations;   /* the engine's arena, by region */
    uint64_t workspace;                        /* prefill workspace and GEMM scratch */
    uint64_t device_used, device_total;        /* the whole device as the driver counts it (every
                                                * process; the CUDA context and libraries too) */
};

struct engine_ops {
    const char *name;
    /* Runs n tokens at positions pos..pos+n-1, writing their K/V; if logits is not NULL,
     * writes the last position's vocab_size logits there. */
    int (*forward)(struct engine *e, const int32_t *ids, int n, int pos, float *logits);
    /* Like forward, but writes logits for every one of the n positions (n × vocab). */
    int (*forward_all)(struct engine *e, const int32_t *ids, int n, int pos, float *logits);
    void (*reset)(struct engine *e);
    void (*close)(struct engine *e);
    /* Optional (NULL: -ENOTSUP): copies layer `layer`'s cached key and value rows at `pos`
     * (n_kv_heads*head_dim floats each, after RoPE) into k and v. For tests. */
    int (*kv_read)(struct engine *e, int layer, int pos, float *k, float *v);
    /* Optional (NULL: the host samples from forward's logits): runs the tokens like forward and
     * picks the next id for the last position with the backend's own sampler under sp (the draw
     * is a function of sp->seed and the position), so no logits cross to the host. */
    int (*forward_sample)(struct engine *e, const int32_t *ids, int n, int pos, const struct sampler_params *sp,
                          int32_t *id);
    /* Optional: the message of the last failed forward (which call, file, line), or "". */
    const char *(*last_error)(const struct engine *e);
    /* Optional (NULL: -ENODEV): device memory, see engine_memory. */
    int (*memory)(const struct engine *e, struct engine_mem *out);
};

struct engine {
    const struct engine_ops *ops;
    const struct model *model;    /* borrowed; must outlive the engine */
    int max_ctx;
    int n_threads;                /* from engine_opts (0: all cores) */
    enum engine_kv kv;            /* from engine_opts */
    int (*layer_wait)(void *ctx, int layer);   /* from engine_opts, or NULL */
    void *layer_wait_ctx;
    int layers_ready;             /* highest layer confirmed by layer_wait */
    void *impl;                   /* backend state */
    char backend_why[224];        /* AUTO fell back to the CPU: why CUDA was not used ("" otherwise) */
    int (*stop)(void *ctx);       /* engine_set_stop: checked between prefill blocks, or NULL */
    void *stop_ctx;
    char stale[4400];             /* the message of a forward failed by a damaged checkpoint file (-ESTALE) */
};

/* Opens an engine for model m. AUTO picks CUDA when built with it and a GPU is present,
 * else CPU. Errors: -ENODEV (CUDA asked for, none available / not built in), -ENOMEM
 * (KV cache or weights do not fit; message gives bytes needed and available), -EINVAL.
 * Caller owns *out; thread: one thread uses an engine at a time. */
int engine_open(struct engine **out, const struct model *m, const struct engine_opts *o,
                struct bora_err *err);
void engine_close(struct engine *e);

/* Prefill / decode: tokens at pos.. must follow what the cache holds (pos = tokens so far).
 * logits (vocab_size floats, may be NULL) receives the last position's logits.
 * Errors: -EINVAL (pos + n > max_ctx, id out of range), -EIO (device failure), -ESTALE (a
 * checkpoint file the weights are read from was cut short under the engine: model_damaged;
 * every later forward fails the same way). */
int engine_forward(struct engine *e, const int32_t *ids, int n, int pos, float *logits);
/* Runs tokens like engine_forward and picks the next id under s's parameters: on the backend's
 * own sampler when it has one (the CUDA backend: on the GPU, only the id crosses; its random
 * draw hashes the seed and the position, and top-k / top-p work within its 1,024 best
 * candidates), else on the host from the logits with s (logits: vocab_size floats of scratch).
 * Greedy picks the same id either way (the largest logit, lowest id on ties). Errors: as
 * engine_forward, and -EDOM when the chosen id's logit is not finite (every logit NaN, or an
 * infinite one: NaN or infinite weights or activations; engine_error_text says so). */
int engine_forward_next(struct engine *e, const int32_t *ids, int n, int pos, struct sampler *s, float *logits,
                        int32_t *id);
/* One row of logits per position (n × vocab_size floats). */
int engine_forward_all(struct engine *e, const int32_t *ids, int n, int pos, float *logits);
/* Forgets the sequence (the cache is overwritten from position 0 next). */
void engine_reset(struct engine *e);
/* Reads one cached K/V row (see engine_ops.kv_read). Errors: -ENOTSUP, -EINVAL. */
int engine_kv_read(struct engine *e, int layer, int pos, float *k, float *v);
const char *engine_backend_name(const struct engine *e);
/* A long prompt's prefill checks stop(ctx) between its blocks (CPU) or chunks (CUDA) and ends
 * with -ECANCELED when it returns non-zero; the cache then holds the positions done. stop runs
 * on the forward's thread; NULL removes it. */
void engine_set_stop(struct engine *e, int (*stop)(void *ctx), void *ctx);
/* What the last failed forward reported (a CUDA backend names the call, file and line), or "". */
const char *engine_last_error(const struct engine *e);
/* *out for an engine on a GPU; -ENODEV on the CPU backend (no device memory). Thread: any,
 * while another runs the engine (it reads what open fixed and asks the driver); -EIO if the
 * driver does not answer. */
int engine_memory(const struct engine *e, struct engine_mem *out);
/* The text for a forward's error rc: the backend's own message for a backend failure (-EIO),
 * the damaged file's path and what to do for -ESTALE, else strerror (a message from an earlier failure would be stale). */
const char *engine_error_text(const struct engine *e, int rc);
/* Backend AUTO that ended on the CPU: the reason CUDA was not used (no device, built without
 * CUDA, a GPU the CUDA backend does not support); "" when the backend was chosen explicitly. */
const char *engine_backend_why(const struct engine *e);
int engine_backend_parse(const char *s, enum engine_backend *out);
/* "bf16" / "fp8" ↔ enum engine_kv (-EINVAL for anything else). */
int engine_kv_parse(const char *s, enum engine_kv *out);
const char *engine_kv_name(enum engine_kv kv);

/* For backends and loaders that allocate an engine themselves (kernels/model_load_cuda.c): fills
 * *e from m and o as engine_open does before it picks a backend (every field from o, defaults where
 * o is NULL or leaves one 0). Errors: -EINVAL (o->kv not an enum engine_kv). */
int engine_init(struct engine *e, const struct model *m, const struct engine_opts *o, struct bora_err *err);
/* The KV cache's element type the engine holds (engine_opts.kv as opened). */
enum engine_kv engine_kv(const struct engine *e);

/* For backends: makes sure layer l's weights are resident (see engine_opts.layer_wait). */
int engine_layer_ready(struct engine *e, int layer);

/* Backend constructors (used by engine_open). */
int engine_cpu_open(struct engine *e, struct bora_err *err);
int engine_cuda_open(struct engine *e, struct bora_err *err);   /* -ENODEV without CUDA */

#endif
