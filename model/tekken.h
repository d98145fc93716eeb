/* tekken.h — Mistral's Tekken tokenizer (tekken.json: NeMo, Ministral, Mistral Small 3.x, Devstral,
 * Medium 3.5): tiktoken-style byte-level BPE behind a PCRE2 pre-tokenizer, special tokens by id only,
 * decoding, and a streaming detokenizer that holds a token's bytes until they form whole UTF-8. */
#ifndef BORA_MODEL_TEKKEN_H
#define BORA_MODEL_TEKKEN_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Budget: encoding a 2,048-token prompt ≤ 300 µs (bench/bench_tekken.c prints the figure).
 * Merging is O(n log n) in a piece's length n (a 10,000-byte word takes about 1 ms). */

/* decode / detok flags */
#define TEKKEN_DECODE_CONTROL 1u /* write special tokens' names ("[INST]") instead of omitting them */
#define TEKKEN_DECODE_RAW     2u /* pass invalid UTF-8 bytes through unchanged (default: U+FFFD each) */

struct tekken;

/* ---- lifetime -------------------------------------------------------------------------------- */

/* Reads a tekken.json file. On success *out owns a tokenizer that the caller frees with
 * tekken_close. The vocabulary is cut to config.default_vocab_size − default_num_special_tokens
 * ranks (as mistral-common does); token_str fields are accepted and ignored; a missing
 * special_tokens list means mistral-common's 20 deprecated ones; unnamed special ids are
 * "<SPECIAL_n>". A leading UTF-8 byte order mark is skipped. Errors (message in err names the
 * file and the problem):
 *   -ENOENT/-EIO etc. file unreadable;  -EINVAL JSON syntax (truncated file), missing or
 *   mistyped key, bad base64, duplicate or out-of-range rank, duplicate token bytes, ranks
 *   0..255 not the 256 single bytes, too few vocab entries, pattern rejected by PCRE2, empty
 *   or able to match the empty string; -ENOMEM. Any thread; the result is independent of every
 *   other tokenizer. The file name is kept for run-time messages. */
int tekken_open(struct tekken **out, const char *path, struct bora_err *err);

/* Same, from the JSON text in json[0..len) (not kept); name is used in messages. */
int tekken_open_buffer(struct tekken **out, const char *json, size_t len, const char *name,
                       struct bora_err *err);

/* Frees everything; NULL is a no-op. */
void tekken_close(struct tekken *tk);

/* ---- encoding -------------------------------------------------------------------------------- */

/* Encodes text[0..len) (no BOS): splits it with config.pattern (PCRE2, UTF + Unicode properties,
 * \s = Unicode White_Space as in tiktoken), then byte-level BPE on each piece; id = rank +
 * num_special. Special tokens never come from text. Invalid UTF-8 bytes are encoded one byte
 * token each. Writes at most cap ids to ids and returns the total number of ids the text
 * encodes to (so a return > cap means the output was cut: call again with a bigger buffer).
 * Errors: -ENOMEM (growing the scratch for an unusually long piece), -EOVERFLOW (more than
 * LONG_MAX ids, not reachable in practice), -EIO (PCRE2 match failure, e.g. JIT stack or match
 * limit of a backtracking pattern; message names the tokenizer file and the PCRE2 error).
 * Any thread: uses the tokenizer's scratch (no allocation in the steady state), taken with an
 * atomic flag; an overlapping call allocates its own. */
long tekken_encode(struct tekken *tk, const char *text, size_t len, int32_t *ids, size_t cap,
                   struct bora_err *err);

/* Pre-tokenizer only (for tests and tools): writes the end offset of each piece of text (bytes
 * left over between matches, i.e. invalid UTF-8, come out as one piece per byte) to ends,
 * at most cap, and returns how many pieces there are. Errors as tekken_encode. */
long tekken_split(struct tekken *tk, const char *text, size_t len, size_t *ends, size_t cap,
                  struct bora_err *err);

/* For tests, before any concurrent use: pieces of up to n bytes use the simple rescanning
 * merge (as tiktoken does), longer ones the heap merge (default n = 48). Both give identical
 * ids. */
void tekken_merge_threshold_set(struct tekken *tk, size_t n);

/* ---- vocabulary ------------------------------------------------------------------------------ */

int32_t tekken_vocab_size(const struct tekken *tk);   /* num_special + number of BPE ranks */
int32_t tekken_num_special(const struct tekken *tk);  /* default_num_special_tokens (1000) */
int32_t tekken_bos_id(const struct tekken *tk);       /* "<s>" (1), or -ENOENT */
int32_t tekken_eos_id(const struct tekken *tk);       /* "</s>" (2), or -ENOENT */
int32_t tekken_unk_id(const struct tekken *tk);       /* "<unk>" (0), or -ENOENT */
const char *tekken_version(const struct tekken *tk);  /* config.version ("v3", "v7"...) or "" */

/* The id of the special token named name ("[INST]" → 3), or -ENOENT. Any thread. */
int32_t tekken_special_find(const struct tekken *tk, const char *name);

/* 1 if id is a special token (id < num_special), 0 if an ordinary byte-level token,
 * -EINVAL if id is out of range. */
int tekken_token_is_special(const struct tekken *tk, int32_t id);

/* 1 if id is a special token marked is_control in tekken.json (all of NeMo's are), else 0. */
int tekken_token_is_control(const struct tekken *tk, int32_t id);

/* The bytes of token id (*len set): a BPE token's raw bytes (possibly part of a UTF-8
 * sequence), or a special token's name. NULL if id is out of range. Pointer valid until
 * tekken_close. Any thread. */
const uint8_t *tekken_token_bytes(const struct tekken *tk, int32_t id, size_t *len);

/* ---- decoding -------------------------------------------------------------------------------- */

/* Decodes ids[0..n) to UTF-8 text as mistral-common does (invalid sequences become U+FFFD per
 * maximal subpart unless TEKKEN_DECODE_RAW; special tokens omitted unless TEKKEN_DECODE_CONTROL;
 * a special token ends an unfinished UTF-8 sequence of the tokens before it). Writes at most cap bytes (no NUL) and
 * returns the full length, like snprintf. Errors: -EINVAL an id out of range (message names
 * its index and value). Any thread. */
long tekken_decode(const struct tekken *tk, const int32_t *ids, size_t n, unsigned flags,
                   char *out, size_t cap, struct bora_err *err);

/* Streaming detokenizer: feed ids one at a time, get text as soon as it is whole UTF-8.
 * Caller-owned value, one per stream; init before use, no cleanup needed. */
struct tekken_detok {
    unsigned flags;     /* TEKKEN_DECODE_* */
    uint8_t held[4];    /* bytes of an unfinished UTF-8 sequence */
    uint8_t n_held;
};

void tekken_detok_init(struct tekken_detok *d, unsigned flags);

/* Adds token id; writes the text it completes (0 bytes while a sequence is unfinished) to
 * out and returns its length. cap ≥ tekken_detok_out_max(tk) always suffices.
 * Errors (stream state unchanged): -EINVAL id out of range, -ENOSPC cap too small. */
long tekken_detok_push(const struct tekken *tk, struct tekken_detok *d, int32_t id,
                       char *out, size_t cap, struct bora_err *err);

/* Ends the stream: writes what is still held (as U+FFFD, or raw) and returns its length
 * (≤ 12 bytes; -ENOSPC if cap is smaller than needed). */
long tekken_detok_flush(struct tekken_detok *d, char *out, size_t cap);

/* Largest output one tekken_detok_push can produce. */
size_t tekken_detok_out_max(const struct tekken *tk);

#endif
