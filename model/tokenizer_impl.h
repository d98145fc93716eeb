/* tokenizer_impl.h — what a tokenizer kind (SentencePiece, HF tokenizer.json, Tekken) fills in
 * behind the public front of tokenizer.h. Internal to model/: not for other modules.
 * A kind provides an encode function and a per-id table of decoded bytes + attributes; the
 * front does BOS, decoding, streaming detokenization and the chat template from those. */
#ifndef BORA_MODEL_TOKENIZER_IMPL_H
#define BORA_MODEL_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "model/tokenizer.h"

enum tokenizer_kind { TOKENIZER_SENTENCEPIECE = 1, TOKENIZER_HF_JSON, TOKENIZER_TEKKEN };

/* Per-id attributes (piece_attr). */
enum {
    TOK_ATTR_CONTROL = 1 << 0,     /* decodes to nothing, never produced from text */
    TOK_ATTR_BYTE = 1 << 1,        /* byte-fallback token <0xNN>: one raw byte */
    TOK_ATTR_UNKNOWN = 1 << 2,     /* <unk> */
    TOK_ATTR_LEAD_SPACE = 1 << 3,  /* decoded bytes start with the (dummy-prefix) space */
    TOK_ATTR_USER = 1 << 4,        /* user-defined: matched verbatim in text */
};

/* Control tokens of the instruct formats (chat_id[], -1 when the vocabulary lacks them). */
enum chat_tok {
    CHAT_TOK_INST, CHAT_TOK_INST_END, CHAT_TOK_TOOL_CALLS, CHAT_TOK_AVAILABLE_TOOLS,
    CHAT_TOK_AVAILABLE_TOOLS_END, CHAT_TOK_TOOL_RESULTS, CHAT_TOK_TOOL_RESULTS_END,
    CHAT_TOK_SYSTEM_PROMPT, CHAT_TOK_SYSTEM_PROMPT_END, CHAT_TOK_TOOL_CONTENT,   /* v7 and later */
    CHAT_TOK_COUNT
};

struct tokenizer {
    enum tokenizer_kind kind;
    int32_t n_vocab;
    int32_t bos_id, eos_id, unk_id;          /* -1 if absent */
    bool strip_first_space;                  /* decode drops the leading space of the first piece */
    bool utf8_maximal_subpart;               /* invalid UTF-8 → one U+FFFD per maximal subpart
                                                (Python) instead of one per byte (SentencePiece) */
    /* vocabulary strings as in the file (SentencePiece: with ▁), for tokenizer_piece() */
    uint32_t *piece_off;                     /* (n_vocab + 1) offsets into piece_str */
    char *piece_str;
    /* decoded bytes of each id (▁ → space, <0xNN> → the byte, control → empty) */
    uint32_t *dec_off;                       /* (n_vocab + 1) offsets into dec_bytes */
    uint8_t *dec_bytes;
    uint8_t *piece_attr;                     /* (n_vocab) TOK_ATTR_* */
    int32_t chat_id[CHAT_TOK_COUNT];         /* filled by the front after the kind opened */
    bool chat_v7;                            /* set by the kind: instruct format v7 (system
                                                messages as [SYSTEM_PROMPT] blocks in place,
                                                tool results as id [TOOL_CONTENT] content) */

    /* kind hooks: encode without BOS; destroy frees impl */
    int (*encode)(const struct tokenizer *t, const char *text, size_t len, int32_t *ids,
                  size_t cap, size_t *n_out, struct bora_err *err);
    void (*destroy)(struct tokenizer *t);
    void *impl;
};

/* Builds piece_off/piece_str/dec_off/dec_bytes from the kind's pieces; pieces[i] of lens[i].
 * dec(i) is computed by the front: control/unknown per attr, byte tokens from byte_val[i],
 * others with "▁" replaced by a space when sp_spaces. Returns 0; -ENOMEM; -EOVERFLOW; or
 * -EMSGSIZE for a piece whose streamed text could exceed DETOK_MAX_DELTA (the message, under
 * name, names the token). */
int tokenizer_tables_build(struct tokenizer *t, const char *const *pieces, const uint32_t *lens,
                           const uint8_t *byte_val, bool sp_spaces, const char *name, struct bora_err *err);
void tokenizer_tables_free(struct tokenizer *t);

/* tokenizer_open on a file already in memory (buf: len bytes, NUL after them not required;
 * owned by the caller); name is used in messages, and a name ending in ".json" means JSON.
 * Pure apart from allocation; the fuzz targets call it. */
int tokenizer_open_mem(struct tokenizer **out, const uint8_t *buf, size_t len, const char *name,
                       struct bora_err *err);

/* Kind constructors (buf: the whole file, owned by the caller; name for messages). */
int sentencepiece_open(struct tokenizer **out, const uint8_t *buf, size_t len, const char *name,
                       struct bora_err *err);
int hfjson_open(struct tokenizer **out, const char *buf, size_t len, const char *name,
                struct bora_err *err);
int tekken_tokenizer_open(struct tokenizer **out, const char *buf, size_t len, const char *name,
                          struct bora_err *err);   /* model/tekken_tokenizer.c */

/* UTF-8 helpers (strict: no overlongs, surrogates or code points past U+10FFFF). */
/* Length of the valid sequence at s (n bytes available): >0 complete, 0 if s[0..n) is a
 * proper prefix of a valid sequence, -k if invalid with a maximal valid prefix of k-1 bytes. */
int utf8_seq(const uint8_t *s, size_t n);
/* Offset of the first invalid byte, or len if the whole text is valid. */
size_t utf8_validate(const uint8_t *s, size_t len);

#endif
