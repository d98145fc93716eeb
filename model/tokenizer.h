/* tokenizer.h — the one tokenizer API of bora: text ⇄ token ids for Mistral models, whatever
 * the file kind (SentencePiece tokenizer.model, Hugging Face tokenizer.json, Tekken tekken.json),
 * a streaming detokenizer for generated ids, and the instruct chat template. */
#ifndef BORA_MODEL_TOKENIZER_H
#define BORA_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Opaque; immutable after tokenizer_open except for an internal encode scratch that is
 * taken with an atomic flag (overlapping encodes on one tokenizer stay correct: the second
 * one allocates its own scratch). */
struct tokenizer;

/* ---- open / close ---------------------------------------------------------------------- */

/* path: a model directory (looks for tekken.json, tokenizer.model*, tokenizer.json in that
 * order) or a tokenizer file (kind by content: protobuf → SentencePiece, JSON with "token_bytes"
 * and "pattern" → Tekken, other JSON with "model" or "added_tokens" → Hugging Face; a file
 * named *.json is always read as JSON, after a UTF-8 byte order mark if it has one). The
 * caller owns *out.
 * Errors: -ENOENT (no tokenizer in the directory / no such file), -EINVAL (malformed file:
 * message names the file and the offset or key; an empty file; duplicate ids; a Tekken file
 * without <s>, </s>, [INST] or [/INST], or whose pattern can match the empty string),
 * -ENOTSUP (a kind or option bora does not implement, e.g. Unigram models, a normalization
 * charsmap, a tokenizer.json normalizer or pre_tokenizer other than Mistral's), -ENOMEM. */
int tokenizer_open(struct tokenizer **out, const char *path, struct bora_err *err);
/* tokenizer_open for a model whose vocabulary has model_vocab ids: also -EINVAL (and *out NULL)
 * where the tokenizer has more tokens than that, as its ids would index past the model's rows.
 * How every command that serves a checkpoint opens the checkpoint's tokenizer. */
int tokenizer_open_for(struct tokenizer **out, const char *path, int model_vocab, struct bora_err *err);
void tokenizer_close(struct tokenizer *t);

int tokenizer_vocab_size(const struct tokenizer *t);
int32_t tokenizer_bos_id(const struct tokenizer *t);
int32_t tokenizer_eos_id(const struct tokenizer *t);
/* Id of a piece by its exact vocabulary string (e.g. "[INST]"), or -1. Not for hot paths. */
int32_t tokenizer_piece_id(const struct tokenizer *t, const char *piece);
/* The vocabulary string of id (not NUL-terminated; *len set), or NULL if out of range. */
const char *tokenizer_piece(const struct tokenizer *t, int32_t id, size_t *len);
/* True for ids that decode to nothing (BOS, EOS, [INST], ...). */
bool tokenizer_is_control(const struct tokenizer *t, int32_t id);

/* ---- encode ---------------------------------------------------------------------------- */

/* Longest text tokenizer_encode accepts, in bytes (-E2BIG beyond). */
#define TOKENIZER_MAX_TEXT (64u << 20)

/* Encodes text (len bytes, need not be NUL-terminated; must be valid UTF-8, NUL bytes are
 * ordinary characters); bos: prepend BOS. Writes up to cap ids (ids may be NULL when cap is 0).
 * Returns 0 and *n_out; -ENOSPC with *n_out = ids needed (the first cap ids are written);
 * -EINVAL for invalid UTF-8 (message gives the byte offset); -E2BIG; -ENOMEM.
 * Thread: any; no allocation in steady state (scratch kept in the tokenizer).
 * Budget: 200 µs for a 2,048-token prompt (bench/bench_tokenizer.c). */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool bos,
                     int32_t *ids, size_t cap, size_t *n_out, struct bora_err *err);

/* ---- decode ---------------------------------------------------------------------------- */

/* Full decode to UTF-8, as SentencePiece decodes: the dummy-prefix space of the first piece is
 * dropped, control tokens are omitted, byte tokens are reassembled into UTF-8 and every byte
 * that does not form a valid sequence becomes U+FFFD. Writes up to cap bytes (no NUL).
 * Returns 0 and *n_out; -ENOSPC with *n_out = bytes needed; -EINVAL for an id out of range. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char *out,
                     size_t cap, size_t *n_out);

/* Streaming detokenizer: caller-owned state, no allocation. Each id maps to its bytes; bytes
 * that may still start a UTF-8 sequence are held until it is complete, so every delta is
 * whole code points. Concatenated deltas + detok_flush == tokenizer_decode(all ids). */
#define DETOK_MAX_DELTA 256  /* an out buffer this large fits any single push of the Mistral
                                vocabularies (longest piece + held bytes); -ENOSPC otherwise */
struct detok {
    const struct tokenizer *t;
    uint8_t pend[4];     /* bytes of an incomplete UTF-8 sequence */
    uint8_t n_pend;
    bool at_start;       /* no non-control piece seen yet: the next one loses its dummy space */
};
void detok_init(struct detok *d, const struct tokenizer *t);
/* Writes the text made complete by id (may be empty). Returns 0 and *n_out; -ENOSPC with
 * *n_out = bytes needed and the state unchanged (call again with a larger buffer);
 * -EINVAL for an id out of range (state unchanged). */
int detok_push(struct detok *d, int32_t id, char *out, size_t cap, size_t *n_out);
/* End of stream: held bytes become U+FFFD each. Same returns as detok_push. */
int detok_flush(struct detok *d, char *out, size_t cap, size_t *n_out);

/* ---- chat ------------------------------------------------------------------------------ */

/* Roles 0 system, 1 user, 2 assistant, 3 tool (BWP/1 numbering). */
enum chat_role { CHAT_ROLE_SYSTEM = 0, CHAT_ROLE_USER = 1, CHAT_ROLE_ASSISTANT = 2, CHAT_ROLE_TOOL = 3 };
struct chat_message {
    int role;
    const char *text;    /* UTF-8, len bytes; for a tool message: the result text */
    size_t len;
};

/* Encodes a conversation in the model's instruct format (mistral-common v3 when the
 * vocabulary has the [INST] control token, v1 otherwise; v7 for a Tekken tokenizer whose
 * config.version is v7 or later or absent; -ENOTSUP for a SentencePiece vocabulary with
 * [SYSTEM_PROMPT]): BOS, [INST] user [/INST],
 * assistant text + EOS, all system messages joined by "\n\n" before the last user message
 * (v3; before the first in v1), tool messages as [TOOL_RESULTS] text [/TOOL_RESULTS].
 * v7: as v3, but each system message is [SYSTEM_PROMPT] text [/SYSTEM_PROMPT] where it
 * stands, never inside a user message; a tool message is [TOOL_RESULTS] call id [TOOL_CONTENT]
 * content [/TOOL_RESULTS]; an assistant message may have text before its [TOOL_CALLS].
 * Returns 0 and *n_out; -ENOSPC with *n_out = ids needed; -EINVAL (unknown role, no user
 * message, invalid UTF-8, an order of roles mistral-common's validator refuses — a tool result
 * not after an assistant message or another result, a system message after an assistant's or a
 * tool result, a user message after a tool result, a plain assistant message last: message says
 * which message); -ENOMEM. Thread: any. */
int chat_encode_messages(const struct tokenizer *t, const struct chat_message *m, size_t n,
                         int32_t *ids, size_t cap, size_t *n_out, struct bora_err *err);

/* The order of a conversation's roles, as chat_encode_messages checks it (mistral-common's
 * validator; needs no tokenizer, so a transport can check a request before it queues it):
 * chat_order_step for message i (≥ 1) after one of role prev, then chat_order_end for all n
 * (a user message somewhere; no assistant message last unless it is a prefix to continue).
 * 0, or -EINVAL with the message chat_encode_messages gives. Thread: any. */
int chat_order_step(size_t i, int prev, int role, struct bora_err *err);
int chat_order_end(size_t n, bool has_user, int last_role, bool last_prefix, struct bora_err *err);

/* A mistral-common ChatCompletionRequest as JSON ({"messages": [...], "tools": [...]}, with
 * assistant "tool_calls" and tool "tool_call_id"; a final assistant message with "prefix": true
 * is continued, without EOS) → ids, exactly as mistral-common's v3 or v7
 * instruct tokenizer does (tools, tool calls and results re-serialised as
 * Python's json.dumps does). Returns as chat_encode_messages; -EINVAL names the JSON problem
 * (position or key); -ENOTSUP for tools with a v1 vocabulary. Allocates (jansson). */
int chat_encode_request_json(const struct tokenizer *t, const char *json, size_t len,
                             int32_t *ids, size_t cap, size_t *n_out, struct bora_err *err);

#endif
