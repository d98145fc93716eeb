/* gen_engine.h — the product's generator: a model checkpoint run by the engine (CPU or CUDA
 * backend) with the seeded sampler, behind the dataplane's generator vtable. Prompts of kind 2
 * (token ids) are used as given; kinds 0 (BOS + text) and 1 (chat template) go through the checkpoint's
 * tokenizer; TOKEN text comes from the streaming detokenizer. */
#ifndef BORA_DATAPLANE_GEN_ENGINE_H
#define BORA_DATAPLANE_GEN_ENGINE_H

#include "common/err.h"
#include "dataplane/generator.h"
#include "model/engine.h"
#include "model/model.h"

struct gen_engine_opts {
    const char *model_dir;             /* checkpoint directory */
    enum engine_backend backend;
    enum model_precision precision;
    int max_ctx;                       /* 0 = engine default */
    enum engine_kv kv;                 /* KV cache element type (engine_opts.kv) */
    int n_threads;                     /* CPU backend threads (0 = all) */
    bool prefix_cache;                 /* reuse the KV cache of the longest prefix a new prompt
                                        * shares with the tokens already in it */
    int prefill_chunk;                 /* CUDA backend: prompt tokens per prefill chunk (0 = the
                                        * engine's default); the CPU backend ignores it */
};

/* Loads the model and opens the engine; fills g (g->impl owned; g->ops->close frees it).
 * Errors: those of model_open / engine_open (message names the file or the backend), -ENOMEM.
 * Thread: open from one thread; afterwards g is used by the decoder thread only. */
int gen_engine_open(struct generator *g, const struct gen_engine_opts *o, struct bora_err *err);
/* The loaded model (for banners); NULL before open. */
const struct model *gen_engine_model(const struct generator *g);
const char *gen_engine_backend(const struct generator *g);
/* The KV cache's element type the opened engine holds: "bf16" or "fp8" ("none" before open). */
const char *gen_engine_kv(const struct generator *g);
/* How the weights reached the GPU (direct stream or host conversion); "" on the CPU. */
const char *gen_engine_load_note(const struct generator *g);
/* Why backend AUTO did not use CUDA ("" when it did, or the backend was chosen). */
const char *gen_engine_backend_why(const struct generator *g);
/* Whether text prompts can be served (the checkpoint has a tokenizer). */
bool gen_engine_has_tokenizer(const struct generator *g);
/* The engine's device memory (engine_memory): -ENODEV on the CPU backend. Thread: any (the
 * caller keeps g from being closed meanwhile). */
int gen_engine_memory(const struct generator *g, struct engine_mem *out);

#endif
