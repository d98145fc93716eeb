/* sentencepiece.h — SentencePiece BPE (Mistral v1/v2/v3/v7 tokenizer.model) as a tokenizer
 * kind: a strict protobuf reader for ModelProto and the score-ordered BPE encoder with byte
 * fallback, dummy ▁ prefix and user-defined pieces. Internal to model/ (use tokenizer.h). */
#ifndef BORA_MODEL_SENTENCEPIECE_H
#define BORA_MODEL_SENTENCEPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "model/tokenizer_impl.h"

/* ModelProto.SentencePiece.Type */
enum sp_type { SP_NORMAL = 1, SP_UNKNOWN = 2, SP_CONTROL = 3, SP_USER_DEFINED = 4, SP_UNUSED = 5, SP_BYTE = 6 };

/* A vocabulary to build the encoder from (the .model reader and the HF JSON loader fill it).
 * All arrays have n entries and stay owned by the caller. */
struct sp_build {
    int32_t n;
    const char *const *piece;   /* UTF-8, spaces as ▁ */
    const uint32_t *len;
    const float *score;         /* higher merges first */
    const uint8_t *type;        /* enum sp_type */
    const uint8_t *mergeable;   /* NULL: every NORMAL/USER_DEFINED/UNUSED piece may result from a
                                   merge (SentencePiece); else only those with mergeable[i] (HF) */
    int32_t unk_id, bos_id, eos_id;   /* -1 if absent */
    bool add_dummy_prefix, remove_extra_ws, escape_ws, byte_fallback;
};

/* Builds a SentencePiece-kind tokenizer (caller owns *out). Errors: -EINVAL (duplicate piece,
 * bad byte piece, id out of range: message names it), -ENOMEM. */
int sp_tokenizer_create(struct tokenizer **out, const struct sp_build *b, const char *name,
                        struct bora_err *err);

/* Parses a serialized ModelProto (buf of len bytes) into a tokenizer. Pure; fuzzed.
 * Errors: -EINVAL (truncated varint, length past the end, bad wire type, bad piece: the message
 * gives name and byte offset; no trainer_spec, as in a file cut after a piece), -ENOTSUP (not
 * BPE, a normalization charsmap, whitespace as suffix), -ENOMEM. */
int sentencepiece_open(struct tokenizer **out, const uint8_t *buf, size_t len, const char *name,
                       struct bora_err *err);

/* Score and enum sp_type of a piece of a SentencePiece-kind tokenizer (for tests and tools).
 * Returns 0, or -EINVAL if t is another kind or id is out of range. */
int sp_piece_info(const struct tokenizer *t, int32_t id, float *score, int *type);

#endif
