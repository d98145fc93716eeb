/* generator.h — what the decoder thread needs from a model: a vtable that counts a prompt's
 * tokens, starts a sequence (tokenize + prefill), produces one token (id + UTF-8 text delta)
 * per step, and abandons a sequence. The dataplane depends only on this; gen_engine.c backs it
 * with the engine, sampler and tokenizer, and tests back it with tests/support generators.
 * Thread: every call comes from the one decoder thread, one request at a time. */
#ifndef BORA_DATAPLANE_GENERATOR_H
#define BORA_DATAPLANE_GENERATOR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define GEN_TEXT_MAX 272           /* bytes of text delta one step may return: a detokenizer push
                                    * (at most DETOK_MAX_DELTA, 256, which every tokenizer is checked
                                    * against at load) and, on a request's last token, the held bytes'
                                    * flush (at most 3 × U+FFFD, 9) */

/* One request's prompt and sampling parameters (prompt bytes as on the wire, borrowed). */
struct gen_request {
    uint8_t prompt_kind;           /* 0 text (BOS added), 1 chat messages (template), 2 u32 ids */
    const uint8_t *prompt;
    uint32_t prompt_len;           /* bytes */
    uint16_t max_tokens;           /* the decoder stops at this count; passed for planning */
    bool ignore_eos;               /* EOS is an ordinary token */
    float temperature, top_p;      /* 0 = greedy; 1 = off */
    uint32_t top_k;                /* 0 = off */
    uint64_t seed;
    /* Optional: start's prefill calls stop(stop_ctx) between blocks of the prompt and gives up
     * with -ECANCELED when it returns non-zero (cancelled, past its deadline, shutting down). */
    int (*stop)(void *stop_ctx);
    void *stop_ctx;
};

/* One generated token. */
struct gen_token {
    uint32_t id;
    uint16_t text_len;             /* complete UTF-8 sequences only; may be 0 */
    char text[GEN_TEXT_MAX];
};

enum gen_step_result { GEN_EOS = 0, GEN_TOKEN = 1, GEN_LENGTH = 2 };

struct generator;
struct generator_ops {
    const char *name;
    /* Tokenizes rq (as start would) to count its tokens, without touching the sequence being
     * decoded. Errors: -EINVAL (prompt unusable: an id out of range, invalid UTF-8, no
     * tokenizer for text; message says why → BAD_PARAMS), -E2BIG (longer than the context →
     * TOO_LARGE), other (→ INTERNAL). */
    int (*prepare)(struct generator *g, const struct gen_request *rq, uint32_t *prompt_tokens,
                   struct bora_err *err);
    /* Starts the sequence of rq (tokenize, prefix cache, prefill). *cached_tokens = prompt
     * tokens whose keys and values were reused from the sequence before (not computed again).
     * Errors as prepare, plus -EIO (engine failure), -ECANCELED (rq->stop said so; the prompt
     * and cached counts are set then too, as the prompt was read and the cache looked up).
     * rq->stop runs between prefill blocks and may call prepare for other requests (the decoder
     * admits new ones there): prepare must not disturb the prompt being prefilled. */
    int (*start)(struct generator *g, const struct gen_request *rq, uint32_t *prompt_tokens,
                 uint32_t *cached_tokens, struct bora_err *err);
    /* Samples the next token: GEN_TOKEN with *out filled, GEN_EOS (EOS sampled and not
     * ignored: nothing to send), GEN_LENGTH (the context is full: no position is left for the
     * token before; nothing to send), or a negative error (-EIO: engine failure, or a token's
     * text that does not fit text[], which a checked tokenizer never produces). */
    int (*step)(struct generator *g, struct gen_token *out, struct bora_err *err);
    /* Ends the current sequence (after EOS, max_tokens, cancel, deadline, error). */
    void (*finish)(struct generator *g);
    void (*close)(struct generator *g);
};

struct generator {
    const struct generator_ops *ops;
    uint32_t vocab_size;           /* kind-2 ids must be below this (0 = unknown) */
    uint32_t max_ctx;              /* tokens of context (prompt + completion); 0 = unknown */
    bool loaded;                   /* PONG flags bit 0 */
    bool prefix_cache;             /* start looks up a cached prefix (counted by the console) */
    void *impl;
};

#endif
