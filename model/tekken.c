/* tekken.c — the Tekken tokenizer: loads tekken.json (jansson, libsodium base64, PCRE2 JIT),
 * encodes with tiktoken's algorithm (regex split, lowest-rank-leftmost pair merging) and decodes
 * byte-level tokens back to UTF-8. See tekken.h for the contract. */
#include "model/tekken.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pcre2.h>
#include <stdatomic.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TEKKEN_SIMPLE_MERGE_MAX 48          /* bytes: longer pieces use the heap merge */
#define TEKKEN_JIT_STACK_START  (32 << 10)  /* bytes */
#define TEKKEN_JIT_STACK_MAX    (8 << 20)   /* bytes */
#define TEKKEN_MAX_VOCAB        (1 << 24)   /* ids: sanity bound on default_vocab_size */
#define TEKKEN_MAX_TOKEN_BYTES  65535       /* bytes: one token (16-bit length in the table) */
#define TEKKEN_NO_RANK          UINT32_MAX

/* Unicode White_Space (what tiktoken's Rust regex means by \s), as PCRE2 class contents.
 * PCRE2's own \s adds U+180E, which Unicode dropped from White_Space in 6.3. */
#define TEKKEN_WS_CLASS "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
                        "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

/* mistral-common's Tekkenizer.DEPRECATED_SPECIAL_TOKENS: used when a file lists none. */
static const char *const tekken_default_specials[] = {
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
};

/* One slot of the bytes → rank table: the token's first 8 bytes are kept inline, so most
 * lookups (tokens of ≤ 8 bytes) touch one cache line and never the token store. */
struct tekken_slot {
    uint64_t head;      /* first min(len, 8) bytes, little-endian, zero-padded */
    uint32_t rank;      /* TEKKEN_NO_RANK when empty */
    uint32_t len_tag;   /* len | (hash >> 48) << 16 */
};

/* Encoder scratch, grown on demand and kept (one thread at a time). */
struct tekken_work {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    size_t cap;                      /* entries in each array below */
    uint32_t *start;                 /* (cap) part start offsets */
    uint32_t *rank;                  /* (cap) rank of the pair starting at each part */
    uint32_t *prank;                 /* (cap) rank of each part (heap: TEKKEN_NO_RANK = merged away) */
    uint32_t *next, *prev;           /* (cap) heap merge: linked list of parts */
    uint64_t *heap;                  /* (3 * cap) rank << 32 | left part: lowest rank, leftmost */
};

struct tekken {
    int32_t n_special;               /* ids below this are special tokens */
    int32_t n_ranks;                 /* BPE ranks kept */
    uint8_t *blob;                   /* all token bytes, rank order */
    uint32_t *off;                   /* (n_ranks + 1) offsets into blob */
    uint32_t max_token_len;          /* bytes */
    struct tekken_slot *slots;       /* (mask + 1) open addressing: bytes → rank */
    uint64_t mask;
    char **special_name;             /* (n_special) */
    uint8_t *special_control;        /* (n_special) 1 = is_control */
    int32_t bos, eos, unk;
    char version[16];
    char *name;                      /* the file, for run-time messages (match limit) */
    pcre2_code *re;
    bool jit;
    size_t simple_max;               /* bytes: simple merge up to this piece length */
    atomic_flag w_busy;              /* set while an encode uses w */
    struct tekken_work w;
};

/* ---- bytes → rank hash table ----------------------------------------------------------------- */

/* The first min(n, 8) bytes of p as a little-endian word, without a libc call. */
static inline uint64_t tekken_head(const uint8_t *p, size_t n)
{
    uint64_t v;
    if (n >= 8) {
        memcpy(&v, p, 8);
        return v;
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        return (uint64_t)a | (uint64_t)b << (8 * (n - 4));   /* overlap ORs equal bytes */
    }
    v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t tekken_hash(const uint8_t *p, size_t n, uint64_t head)
{
    uint64_t h = (head ^ (n * 0x9E3779B97F4A7C15ull)) * 0xFF51AFD7ED558CCDull;
    for (size_t i = 8; i < n; i += 8) {
        h ^= h >> 32;
        h = (h ^ tekken_head(p + i, n - i < 8 ? n - i : 8)) * 0xC4CEB9FE1A85EC53ull;
    }
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h;
}

static inline bool tekken_bytes_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (n > 16)
        return !memcmp(a, b, n);
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* The slot holding bytes p[0..n) or the empty slot where they would go. */
static inline struct tekken_slot *tekken_slot_find(const struct tekken *tk, const uint8_t *p,
                                                   size_t n, uint64_t *head_out, uint32_t *lt_out)
{
    uint64_t head = tekken_head(p, n), h = tekken_hash(p, n, head);
    uint32_t lt = (uint32_t)n | (uint32_t)(h >> 48) << 16;
    *head_out = head;
    *lt_out = lt;
    for (uint64_t i = h & tk->mask;; i = (i + 1) & tk->mask) {
        struct tekken_slot *s = &tk->slots[i];
        if (s->rank == TEKKEN_NO_RANK)
            return s;
        if (s->len_tag == lt && s->head == head &&
            (n <= 8 || tekken_bytes_equal(tk->blob + tk->off[s->rank] + 8, p + 8, n - 8)))
            return s;
    }
}

/* Rank of bytes p[0..n), or TEKKEN_NO_RANK. */
static inline uint32_t tekken_rank_of(const struct tekken *tk, const uint8_t *p, size_t n)
{
    if (unlikely(n > tk->max_token_len))
        return TEKKEN_NO_RANK;
    uint64_t head;
    uint32_t lt;
    return tekken_slot_find(tk, p, n, &head, &lt)->rank;
}

/* Inserts rank; returns the rank already holding the same bytes, or TEKKEN_NO_RANK. */
static uint32_t tekken_table_insert(struct tekken *tk, uint32_t rank)
{
    const uint8_t *p = tk->blob + tk->off[rank];
    size_t n = tk->off[rank + 1] - tk->off[rank];
    uint64_t head;
    uint32_t lt;
    struct tekken_slot *s = tekken_slot_find(tk, p, n, &head, &lt);
    if (s->rank != TEKKEN_NO_RANK)
        return s->rank;
    s->head = head;
    s->rank = rank;
    s->len_tag = lt;
    return TEKKEN_NO_RANK;
}

/* ---- loading --------------------------------------------------------------------------------- */

static int tekken_json_int(json_t *obj, const char *key, long long lo, long long hi,
                           long long *out, const char *name, struct bora_err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return bora_errf(err, -EINVAL, "%s: config.%s missing or not an integer", name, key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return bora_errf(err, -EINVAL, "%s: config.%s = %lld out of range [%lld, %lld]",
                         name, key, x, lo, hi);
    *out = x;
    return 0;
}

/* Rewrites \s and \S so that they mean Unicode White_Space (tiktoken) rather than PCRE2's
 * set, which also holds U+180E. Returns a malloc'd pattern or NULL (ENOMEM). */
static char *tekken_pattern_rewrite(const char *pat)
{
    size_t n = strlen(pat);
    char *out = malloc(n * (sizeof TEKKEN_WS_CLASS + 4) + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[++i];
            const char *rep = NULL;
            if (d == 's')
                rep = in_class ? TEKKEN_WS_CLASS : "[" TEKKEN_WS_CLASS "]";
            else if (d == 'S')
                rep = in_class ? "\\S\\x{180E}" : "[^" TEKKEN_WS_CLASS "]";
            if (rep) {
                size_t r = strlen(rep);
                memcpy(out + o, rep, r);
                o += r;
            } else {
                out[o++] = c;
                out[o++] = d;
            }
            continue;
        }
        out[o++] = c;
        if (!in_class && c == '[') {
            in_class = true;
            if (i + 1 < n && pat[i + 1] == '^')
                out[o++] = pat[++i];
            if (i + 1 < n && pat[i + 1] == ']')      /* leading ] is literal */
                out[o++] = pat[++i];
        } else if (in_class && c == '[' && i + 1 < n && pat[i + 1] == ':') {
            const char *e = strstr(pat + i + 2, ":]");  /* POSIX class [:alpha:] */
            if (e) {
                size_t len = (size_t)(e + 2 - (pat + i + 1));
                memcpy(out + o, pat + i + 1, len);
                o += len;
                i += len;
            }
        } else if (in_class && c == ']') {
            in_class = false;
        }
    }
    out[o] = 0;
    return out;
}

static void tekken_work_fini(struct tekken_work *w)
{
    pcre2_match_data_free(w->md);
    pcre2_match_context_free(w->mctx);
    pcre2_jit_stack_free(w->jit_stack);
    free(w->start);
    free(w->rank);
    free(w->prank);
    free(w->next);
    free(w->prev);
    free(w->heap);
    memset(w, 0, sizeof *w);
}

/* Match data and JIT stack for one encoding thread; arrays grow later. 0 or -ENOMEM. */
static int tekken_work_init(struct tekken_work *w, bool jit)
{
    memset(w, 0, sizeof *w);
    w->md = pcre2_match_data_create(1, NULL);
    w->mctx = pcre2_match_context_create(NULL);
    if (jit && w->mctx) {
        w->jit_stack = pcre2_jit_stack_create(TEKKEN_JIT_STACK_START, TEKKEN_JIT_STACK_MAX, NULL);
        if (w->jit_stack)
            pcre2_jit_stack_assign(w->mctx, NULL, w->jit_stack);
    }
    if (!w->md || !w->mctx || (jit && !w->jit_stack)) {
        tekken_work_fini(w);
        return -ENOMEM;
    }
    return 0;
}

/* The pattern must be non-empty and unable to match the empty string: an empty match makes
 * no progress, so the walk would cut the text into single bytes and encode each alone. */
static int tekken_compile(struct tekken *tk, const char *pattern, const char *name,
                          struct bora_err *err)
{
    if (!pattern[0])
        return bora_errf(err, -EINVAL, "%s: config.pattern is empty", name);
    char *pat = tekken_pattern_rewrite(pattern);
    if (!pat)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    int ec;
    PCRE2_SIZE eo;
    tk->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                           PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &ec, &eo, NULL);
    free(pat);
    if (!tk->re) {
        char msg[256];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
        return bora_errf(err, -EINVAL, "%s: config.pattern rejected by PCRE2 near \"%.20s\": %s",
                         name, pattern + (eo < strlen(pattern) ? eo : strlen(pattern)), msg);
    }
    uint32_t min_len = 0;
    if (pcre2_pattern_info(tk->re, PCRE2_INFO_MINLENGTH, &min_len) != 0 || min_len == 0)
        return bora_errf(err, -EINVAL, "%s: config.pattern \"%.40s\" can match the empty string",
                         name, pattern);
    tk->jit = pcre2_jit_compile(tk->re, PCRE2_JIT_COMPLETE) == 0;
    if (tekken_work_init(&tk->w, tk->jit))
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    return 0;
}

/* Decodes base64 token_bytes of vocab[i] into blob at *used. */
static int tekken_vocab_entry(struct tekken *tk, json_t *e, size_t i, size_t *used,
                              size_t blob_cap, uint32_t *rank_of_entry, const char *name,
                              struct bora_err *err)
{
    json_t *r = json_object_get(e, "rank"), *b = json_object_get(e, "token_bytes");
    if (!json_is_object(e) || !json_is_integer(r) || !json_is_string(b))
        return bora_errf(err, -EINVAL, "%s: vocab[%zu] needs an integer \"rank\" and a string "
                         "\"token_bytes\"", name, i);
    long long rank = json_integer_value(r);
    if (rank < 0 || rank >= tk->n_ranks)
        return bora_errf(err, -EINVAL, "%s: vocab[%zu]: rank %lld out of range (vocabulary "
                         "cut to %d ranks)", name, i, rank, tk->n_ranks);
    const char *s = json_string_value(b);
    size_t slen = json_string_length(b), got = 0;
    if (blob_cap - *used < slen ||
        sodium_base642bin(tk->blob + *used, blob_cap - *used, s, slen, NULL, &got, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return bora_errf(err, -EINVAL, "%s: vocab[%zu] (rank %lld): token_bytes \"%.40s\" is "
                         "not valid base64", name, i, rank, s);
    if (got == 0 || got > TEKKEN_MAX_TOKEN_BYTES)
        return bora_errf(err, -EINVAL, "%s: vocab[%zu] (rank %lld): token_bytes of %zu bytes (1 to %d "
                         "allowed)", name, i, rank, got, TEKKEN_MAX_TOKEN_BYTES);
    if (rank < 256 && (got != 1 || tk->blob[*used] != rank))
        return bora_errf(err, -EINVAL, "%s: vocab[%zu]: rank %lld must be the single byte 0x%02llx",
                         name, i, rank, rank);
    *rank_of_entry = (uint32_t)rank;
    *used += got;
    return 0;
}

/* Fills blob/off from vocab[0..n_ranks): entries may come in any order, ranks must be unique. */
static int tekken_load_vocab(struct tekken *tk, json_t *vocab, const char *name,
                             struct bora_err *err)
{
    size_t n = (size_t)tk->n_ranks, blob_cap = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *b = json_object_get(json_array_get(vocab, i), "token_bytes");
        blob_cap += json_is_string(b) ? json_string_length(b) : 0;
    }
    uint8_t *tmp = malloc(blob_cap + 1);
    uint32_t *ent_off = malloc((n + 1) * sizeof *ent_off);   /* per entry, in file order */
    uint32_t *ent_rank = malloc((n + 1) * sizeof *ent_rank);
    uint32_t *entry_of = malloc((n + 1) * sizeof *entry_of); /* rank → entry */
    tk->blob = tmp;
    tk->off = malloc((n + 1) * sizeof *tk->off);
    int rc = -ENOMEM;
    if (!tmp || !ent_off || !ent_rank || !entry_of || !tk->off) {
        bora_errf(err, rc, "%s: out of memory", name);
        goto out;
    }
    memset(entry_of, 0xff, (n + 1) * sizeof *entry_of);
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        ent_off[i] = (uint32_t)used;
        rc = tekken_vocab_entry(tk, json_array_get(vocab, i), i, &used, blob_cap, &ent_rank[i],
                                name, err);
        if (rc)
            goto out;
        if (entry_of[ent_rank[i]] != UINT32_MAX) {
            rc = bora_errf(err, -EINVAL, "%s: duplicate rank %u (vocab[%u] and vocab[%zu])", name,
                           ent_rank[i], entry_of[ent_rank[i]], i);
            goto out;
        }
        entry_of[ent_rank[i]] = (uint32_t)i;
    }
    ent_off[n] = (uint32_t)used;
    /* n unique ranks in [0, n): every rank is present. Lay the bytes out in rank order. */
    tk->blob = malloc(used + 1);
    if (!tk->blob) {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory", name);
        goto out;
    }
    size_t o = 0;
    for (size_t r = 0; r < n; r++) {
        uint32_t e = entry_of[r], len = ent_off[e + 1] - ent_off[e];
        tk->off[r] = (uint32_t)o;
        memcpy(tk->blob + o, tmp + ent_off[e], len);
        o += len;
        if (len > tk->max_token_len)
            tk->max_token_len = len;
    }
    tk->off[n] = (uint32_t)o;
    rc = 0;
out:
    if (tk->blob != tmp)
        free(tmp);
    free(ent_off);
    free(ent_rank);
    free(entry_of);
    return rc;
}

static int tekken_build_table(struct tekken *tk, const char *name, struct bora_err *err)
{
    uint64_t size = 1024;
    while (size < (uint64_t)tk->n_ranks * 2)
        size <<= 1;
    tk->mask = size - 1;
    tk->slots = malloc(size * sizeof *tk->slots);
    if (!tk->slots)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    memset(tk->slots, 0xff, size * sizeof *tk->slots);
    for (int32_t r = 0; r < tk->n_ranks; r++) {
        uint32_t dup = tekken_table_insert(tk, (uint32_t)r);
        if (dup != TEKKEN_NO_RANK)
            return bora_errf(err, -EINVAL, "%s: ranks %u and %d have the same token bytes",
                             name, dup, r);
    }
    return 0;
}

static int tekken_special_set(struct tekken *tk, int32_t id, const char *s, bool control,
                              const char *name, struct bora_err *err)
{
    if (tk->special_name[id])
        return bora_errf(err, -EINVAL, "%s: special token id %d listed twice", name, id);
    for (int32_t j = 0; j < tk->n_special; j++)
        if (tk->special_name[j] && !strcmp(tk->special_name[j], s))
            return bora_errf(err, -EINVAL, "%s: special token \"%s\" listed twice (ids %d and %d)",
                             name, s, j, id);
    tk->special_name[id] = strdup(s);
    tk->special_control[id] = control;
    return tk->special_name[id] ? 0 : bora_errf(err, -ENOMEM, "%s: out of memory", name);
}

static int tekken_load_specials(struct tekken *tk, json_t *list, const char *name,
                                struct bora_err *err)
{
    tk->special_name = calloc((size_t)tk->n_special, sizeof *tk->special_name);
    tk->special_control = calloc((size_t)tk->n_special, 1);
    if (!tk->special_name || !tk->special_control)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    int rc = 0;
    if (!list) {
        for (size_t i = 0; i < BORA_ARRAY_LEN(tekken_default_specials) && !rc; i++)
            if ((int32_t)i < tk->n_special)
                rc = tekken_special_set(tk, (int32_t)i, tekken_default_specials[i], true, name, err);
    } else if (!json_is_array(list)) {
        return bora_errf(err, -EINVAL, "%s: special_tokens is not an array", name);
    } else {
        for (size_t i = 0; i < json_array_size(list) && !rc; i++) {
            json_t *e = json_array_get(list, i);
            json_t *r = json_object_get(e, "rank"), *s = json_object_get(e, "token_str");
            json_t *c = json_object_get(e, "is_control");
            if (!json_is_integer(r) || !json_is_string(s) || (c && !json_is_boolean(c)))
                return bora_errf(err, -EINVAL, "%s: special_tokens[%zu] needs an integer \"rank\", "
                                 "a string \"token_str\" and a boolean \"is_control\"", name, i);
            long long id = json_integer_value(r);
            if (id < 0 || id >= tk->n_special)
                return bora_errf(err, -EINVAL, "%s: special_tokens[%zu]: rank %lld out of range "
                                 "[0, %d)", name, i, id, tk->n_special);
            rc = tekken_special_set(tk, (int32_t)id, json_string_value(s),
                                    !c || json_is_true(c), name, err);
        }
    }
    for (int32_t i = 0; i < tk->n_special && !rc; i++) {
        if (tk->special_name[i])
            continue;
        char buf[32];
        snprintf(buf, sizeof buf, "<SPECIAL_%d>", i);
        rc = tekken_special_set(tk, i, buf, true, name, err);
    }
    return rc;
}

static int tekken_load(struct tekken *tk, json_t *root, const char *name, struct bora_err *err)
{
    json_t *config = json_object_get(root, "config");
    json_t *vocab = json_object_get(root, "vocab");
    json_t *pattern = json_object_get(config, "pattern");
    if (!json_is_object(config))
        return bora_errf(err, -EINVAL, "%s: \"config\" missing or not an object", name);
    if (!json_is_string(pattern))
        return bora_errf(err, -EINVAL, "%s: config.pattern missing or not a string", name);
    if (!json_is_array(vocab))
        return bora_errf(err, -EINVAL, "%s: \"vocab\" missing or not an array", name);
    long long vsize, nspec;
    int rc = tekken_json_int(config, "default_vocab_size", 257, TEKKEN_MAX_VOCAB, &vsize, name, err);
    if (rc)
        return rc;
    rc = tekken_json_int(config, "default_num_special_tokens", 3, vsize - 256, &nspec, name, err);
    if (rc)
        return rc;
    json_t *ver = json_object_get(config, "version");
    snprintf(tk->version, sizeof tk->version, "%s", json_is_string(ver) ? json_string_value(ver) : "");
    tk->n_special = (int32_t)nspec;
    tk->n_ranks = (int32_t)(vsize - nspec);
    if (json_array_size(vocab) < (size_t)tk->n_ranks)
        return bora_errf(err, -EINVAL, "%s: vocab has %zu entries, fewer than default_vocab_size − "
                         "default_num_special_tokens = %d (truncated file?)", name,
                         json_array_size(vocab), tk->n_ranks);
    if ((rc = tekken_load_vocab(tk, vocab, name, err)) ||
        (rc = tekken_build_table(tk, name, err)) ||
        (rc = tekken_load_specials(tk, json_object_get(root, "special_tokens"), name, err)) ||
        (rc = tekken_compile(tk, json_string_value(pattern), name, err)))
        return rc;
    tk->bos = tekken_special_find(tk, "<s>");
    tk->eos = tekken_special_find(tk, "</s>");
    tk->unk = tekken_special_find(tk, "<unk>");
    return 0;
}

static int tekken_open_json(struct tekken **out, json_t *root, const char *name,
                            struct bora_err *err)
{
    *out = NULL;
    struct tekken *tk = calloc(1, sizeof *tk);
    if (!tk)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    tk->simple_max = TEKKEN_SIMPLE_MERGE_MAX;
    atomic_flag_clear(&tk->w_busy);
    tk->name = strdup(name);
    int rc = tk->name ? tekken_load(tk, root, name, err)
                      : bora_errf(err, -ENOMEM, "%s: out of memory", name);
    if (rc) {
        tekken_close(tk);
        return rc;
    }
    *out = tk;
    return 0;
}

static int tekken_json_error(const json_error_t *je, const char *name, struct bora_err *err)
{
    return bora_errf(err, -EINVAL, "%s: JSON error at line %d column %d: %s", name, je->line,
                     je->column, je->text);
}

int tekken_open(struct tekken **out, const char *path, struct bora_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO cannot hang the open */
    if (fd < 0)
        return bora_errf(err, -errno, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return bora_errf(err, -EINVAL, "%s: not a regular file", path);
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return bora_errf(err, -ENOMEM, "%s: out of memory", path);
    }
    unsigned char bom[3];                            /* skip a UTF-8 byte order mark */
    if (fread(bom, 1, 3, f) != 3 || bom[0] != 0xEF || bom[1] != 0xBB || bom[2] != 0xBF)
        rewind(f);
    json_error_t je;
    json_t *root = json_loadf(f, JSON_ALLOW_NUL, &je);
    int rd_err = ferror(f);
    fclose(f);
    if (rd_err) {
        json_decref(root);
        return bora_errf(err, -EIO, "%s: read error", path);
    }
    if (!root)
        return tekken_json_error(&je, path, err);
    int rc = tekken_open_json(out, root, path, err);
    json_decref(root);
    return rc;
}

int tekken_open_buffer(struct tekken **out, const char *json, size_t len, const char *name,
                       struct bora_err *err)
{
    *out = NULL;
    if (len >= 3 && !memcmp(json, "\xEF\xBB\xBF", 3)) {   /* skip a UTF-8 byte order mark */
        json += 3;
        len -= 3;
    }
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &je);
    if (!root)
        return tekken_json_error(&je, name, err);
    int rc = tekken_open_json(out, root, name, err);
    json_decref(root);
    return rc;
}

void tekken_close(struct tekken *tk)
{
    if (!tk)
        return;
    free(tk->blob);
    free(tk->off);
    free(tk->slots);
    for (int32_t i = 0; tk->special_name && i < tk->n_special; i++)
        free(tk->special_name[i]);
    free(tk->special_name);
    free(tk->special_control);
    pcre2_code_free(tk->re);
    tekken_work_fini(&tk->w);
    free(tk->name);
    free(tk);
}

/* ---- BPE merging ----------------------------------------------------------------------------- */

static int tekken_work_reserve(struct tekken_work *w, size_t n)
{
    if (likely(n <= w->cap))
        return 0;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < n)
        cap *= 2;
    uint32_t *a = realloc(w->start, cap * sizeof *a);
    if (a) w->start = a;
    uint32_t *b = realloc(w->rank, cap * sizeof *b);
    if (b) w->rank = b;
    uint32_t *c = realloc(w->next, cap * sizeof *c);
    if (c) w->next = c;
    uint32_t *d = realloc(w->prev, cap * sizeof *d);
    if (d) w->prev = d;
    uint32_t *e = realloc(w->prank, cap * sizeof *e);
    if (e) w->prank = e;
    uint64_t *h = realloc(w->heap, 3 * cap * sizeof *h);   /* pushes ≤ n + 2 per merge */
    if (h) w->heap = h;
    if (!a || !b || !c || !d || !e || !h)
        return -ENOMEM;
    w->cap = cap;
    return 0;
}

struct tekken_out {
    int32_t *ids;
    size_t cap;
    size_t n;
};

static inline void tekken_out_put(struct tekken_out *o, int32_t id)
{
    if (likely(o->n < o->cap))
        o->ids[o->n] = id;
    o->n++;
}

/* Starts a lookup of p[0..n): returns its hash and prefetches its slot, so that independent
 * lookups overlap their cache misses. Finish with tekken_rank_probed. */
static inline uint64_t tekken_probe(const struct tekken *tk, const uint8_t *p, size_t n)
{
    uint64_t h = tekken_hash(p, n, tekken_head(p, n));
    __builtin_prefetch(&tk->slots[h & tk->mask]);
    return h;
}

static inline uint32_t tekken_rank_probed(const struct tekken *tk, const uint8_t *p, size_t n,
                                          uint64_t h)
{
    if (unlikely(n > tk->max_token_len))
        return TEKKEN_NO_RANK;
    uint64_t head = tekken_head(p, n);
    uint32_t lt = (uint32_t)n | (uint32_t)(h >> 48) << 16;
    for (uint64_t i = h & tk->mask;; i = (i + 1) & tk->mask) {
        const struct tekken_slot *s = &tk->slots[i];
        if (s->rank == TEKKEN_NO_RANK)
            return TEKKEN_NO_RANK;
        if (s->len_tag == lt && s->head == head &&
            (n <= 8 || tekken_bytes_equal(tk->blob + tk->off[s->rank] + 8, p + 8, n - 8)))
            return s->rank;
    }
}

/* tiktoken's byte_pair_merge: rank[i] is the rank of part i joined with the next part; each
 * step merges the lowest (leftmost on ties) and rescans. Parts are a linked list over their
 * start offsets (no moving of arrays). O(n·merges); used for short pieces only. */
static void tekken_merge_simple(const struct tekken *tk, const uint8_t *p, size_t n,
                                struct tekken_work *w, struct tekken_out *o)
{
    uint32_t *next = w->next, *rank = w->rank, *prank = w->prank;
    uint64_t *h = w->heap;                  /* the heap is not used here: pair hashes */
    for (size_t i = 0; i < n; i++) {
        next[i] = (uint32_t)i + 1;
        prank[i] = p[i];                    /* ranks 0..255 are the single bytes */
    }
    for (size_t i = 0; i + 1 < n; i++)      /* all first lookups at once: misses overlap */
        h[i] = tekken_probe(tk, p + i, 2);
    for (size_t i = 0; i + 1 < n; i++)
        rank[i] = tekken_rank_probed(tk, p + i, 2, h[i]);
    rank[n - 1] = TEKKEN_NO_RANK;
    for (;;) {
        uint32_t best = TEKKEN_NO_RANK, bi = 0, bprev = UINT32_MAX;
        for (uint32_t i = 0, prev = UINT32_MAX; i < n; prev = i, i = next[i])
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
                bprev = prev;
            }
        if (best == TEKKEN_NO_RANK)
            break;
        prank[bi] = best;                   /* merge bi with the next part */
        next[bi] = next[next[bi]];
        uint32_t e = next[bi];              /* re-rank the pairs at bi and before it */
        uint64_t h1 = e < n ? tekken_probe(tk, p + bi, next[e] - bi) : 0;
        uint64_t h0 = bprev != UINT32_MAX ? tekken_probe(tk, p + bprev, e - bprev) : 0;
        rank[bi] = e < n ? tekken_rank_probed(tk, p + bi, next[e] - bi, h1) : TEKKEN_NO_RANK;
        if (bprev != UINT32_MAX)
            rank[bprev] = tekken_rank_probed(tk, p + bprev, e - bprev, h0);
    }
    for (uint32_t i = 0; i < n; i = next[i])
        tekken_out_put(o, (int32_t)prank[i] + tk->n_special);
}

/* A 4-ary min-heap of 64-bit keys: half the depth of a binary heap, and the four children
 * share a cache line or two, which matters once a piece's heap outgrows the caches. */
#define TEKKEN_HEAP_D 4

static inline void tekken_heap_push(uint64_t *h, size_t *n, uint64_t key)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / TEKKEN_HEAP_D;
        if (h[parent] <= key)
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = key;
}

static inline uint64_t tekken_heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = TEKKEN_HEAP_D * i + 1, best = c;
        if (c >= *n)
            break;
        size_t end = c + TEKKEN_HEAP_D < *n ? c + TEKKEN_HEAP_D : *n;
        for (size_t k = c + 1; k < end; k++)
            if (h[k] < h[best])
                best = k;
        if (h[best] >= last)
            break;
        h[i] = h[best];
        i = best;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Computes the rank of the pair (part l, its right neighbour) into cur[l] and pushes it if the
 * joined bytes are a token. Parts are named by their start offset; a part's end is the start
 * of its right neighbour (or n). */
static inline void tekken_heap_pair(const struct tekken *tk, const uint8_t *p, size_t n,
                                    struct tekken_work *w, size_t *hn, uint32_t l)
{
    uint32_t r = w->next[l];
    uint32_t rank = r < n ? tekken_rank_of(tk, p + l, w->next[r] - l) : TEKKEN_NO_RANK;
    w->rank[l] = rank;
    if (rank != TEKKEN_NO_RANK)
        tekken_heap_push(w->heap, hn, (uint64_t)rank << 32 | l);
}

/* Same result as tekken_merge_simple in O(n log n): a min-heap of (rank, left start) over a
 * linked list of parts. An entry is stale once its left part died or its pair changed: a
 * pair only grows, and different bytes have different ranks, so a rank that no longer equals
 * the part's current pair rank can never become valid again. */
static void tekken_merge_heap(const struct tekken *tk, const uint8_t *p, size_t n,
                              struct tekken_work *w, struct tekken_out *o)
{
    uint32_t *next = w->next, *prev = w->prev;   /* next[i] = n at the end; prev[0] unused */
    uint32_t *prank = w->prank;                  /* TEKKEN_NO_RANK once merged into its left */
    size_t hn = 0;
    for (uint32_t i = 0; i < n; i++) {
        next[i] = i + 1;
        prev[i] = i ? i - 1 : UINT32_MAX;
        prank[i] = p[i];
    }
    next[n] = (uint32_t)n;                       /* sentinel so next[next[l]] is defined */
    for (uint32_t i = 0; i < n; i++)
        tekken_heap_pair(tk, p, n, w, &hn, i);
    while (hn) {
        uint64_t key = tekken_heap_pop(w->heap, &hn);
        uint32_t l = (uint32_t)key, rank = (uint32_t)(key >> 32);
        if (prank[l] == TEKKEN_NO_RANK || w->rank[l] != rank)
            continue;                            /* stale */
        uint32_t r = next[l];                    /* merge r into l */
        prank[l] = rank;
        prank[r] = TEKKEN_NO_RANK;
        next[l] = next[r];
        if (next[r] < n)
            prev[next[r]] = l;
        tekken_heap_pair(tk, p, n, w, &hn, l);
        if (l > 0)
            tekken_heap_pair(tk, p, n, w, &hn, prev[l]);
    }
    for (uint32_t i = 0; i < n; i = next[i])
        tekken_out_put(o, (int32_t)prank[i] + tk->n_special);
}

static int tekken_encode_piece(const struct tekken *tk, struct tekken_work *w, const uint8_t *p,
                              size_t n, struct tekken_out *o)
{
    uint32_t whole = tekken_rank_of(tk, p, n);   /* tiktoken: a piece that is a token is one */
    if (whole != TEKKEN_NO_RANK) {
        tekken_out_put(o, (int32_t)whole + tk->n_special);
        return 0;
    }
    if (tekken_work_reserve(w, n + 2))
        return -ENOMEM;
    if (n <= tk->simple_max)
        tekken_merge_simple(tk, p, n, w, o);
    else
        tekken_merge_heap(tk, p, n, w, o);
    return 0;
}

/* ---- pre-tokenizer --------------------------------------------------------------------------- */

/* Finds the next piece at or after *off: [*s, *e). Returns 1, 0 at the end, or -EIO. */
static int tekken_next_match(const struct tekken *tk, struct tekken_work *w, const char *text,
                             size_t len, size_t off, size_t *s, size_t *e, struct bora_err *err)
{
    int rc = tk->jit ? pcre2_jit_match(tk->re, (PCRE2_SPTR)text, len, off, 0, w->md, w->mctx)
                     : pcre2_match(tk->re, (PCRE2_SPTR)text, len, off, 0, w->md, w->mctx);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (unlikely(rc < 0)) {
        char msg[160];
        pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
        return bora_errf(err, -EIO, "%s: pre-tokenizer failed at byte %zu: %s", tk->name, off, msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
    *s = ov[0];
    *e = ov[1];
    return 1;
}

/* Calls fn on every piece; bytes between matches (invalid UTF-8) go one byte per piece. */
typedef int (*tekken_piece_fn)(const struct tekken *tk, struct tekken_work *w,
                               const uint8_t *text, size_t s, size_t e, void *ctx);

static int tekken_walk_with(const struct tekken *tk, struct tekken_work *w, const char *text,
                            size_t len, tekken_piece_fn fn, void *ctx, struct bora_err *err)
{
    size_t off = 0;
    while (off < len) {
        size_t s = len, e = len;
        int rc = tekken_next_match(tk, w, text, len, off, &s, &e, err);
        if (rc < 0)
            return rc;
        if (e == s && s < len)                   /* empty match: skip a byte, encoded alone */
            e = s = s + 1;
        for (; off < s; off++)
            if ((rc = fn(tk, w, (const uint8_t *)text, off, off + 1, ctx)))
                return bora_errf(err, rc, "%s: out of memory", tk->name);
        if (e > s && (rc = fn(tk, w, (const uint8_t *)text, s, e, ctx)))
            return bora_errf(err, rc, "%s: out of memory", tk->name);
        off = e > off ? e : off;
    }
    return 0;
}

/* Runs tekken_walk_with on the tokenizer's scratch, or on a private one if another thread
 * holds it (rare: bora encodes on the decoder thread). */
static int tekken_walk(struct tekken *tk, const char *text, size_t len, tekken_piece_fn fn,
                       void *ctx, struct bora_err *err)
{
    if (likely(!atomic_flag_test_and_set_explicit(&tk->w_busy, memory_order_acquire))) {
        int rc = tekken_walk_with(tk, &tk->w, text, len, fn, ctx, err);
        atomic_flag_clear_explicit(&tk->w_busy, memory_order_release); /* pairs with the acquire */
        return rc;
    }
    struct tekken_work w;
    if (tekken_work_init(&w, tk->jit))
        return bora_errf(err, -ENOMEM, "%s: out of memory", tk->name);
    int rc = tekken_walk_with(tk, &w, text, len, fn, ctx, err);
    tekken_work_fini(&w);
    return rc;
}

static int tekken_piece_encode(const struct tekken *tk, struct tekken_work *w, const uint8_t *text,
                               size_t s, size_t e, void *ctx)
{
    return tekken_encode_piece(tk, w, text + s, e - s, ctx);
}

long tekken_encode(struct tekken *tk, const char *text, size_t len, int32_t *ids, size_t cap,
                   struct bora_err *err)
{
    struct tekken_out o = { ids, ids ? cap : 0, 0 };
    int rc = tekken_walk(tk, text, len, tekken_piece_encode, &o, err);
    if (rc)
        return rc;
    if (o.n > LONG_MAX)
        return bora_errf(err, -EOVERFLOW, "%s: too many ids", tk->name);
    return (long)o.n;
}

struct tekken_split_out {
    size_t *ends, cap, n;
};

static int tekken_piece_split(const struct tekken *tk, struct tekken_work *w, const uint8_t *text,
                              size_t s, size_t e, void *ctx)
{
    (void)tk, (void)w, (void)text, (void)s;
    struct tekken_split_out *o = ctx;
    if (o->n < o->cap)
        o->ends[o->n] = e;
    o->n++;
    return 0;
}

long tekken_split(struct tekken *tk, const char *text, size_t len, size_t *ends, size_t cap,
                  struct bora_err *err)
{
    struct tekken_split_out o = { ends, ends ? cap : 0, 0 };
    int rc = tekken_walk(tk, text, len, tekken_piece_split, &o, err);
    return rc ? rc : (long)o.n;
}

void tekken_merge_threshold_set(struct tekken *tk, size_t n)
{
    tk->simple_max = n;
}

/* ---- vocabulary ------------------------------------------------------------------------------ */

int32_t tekken_vocab_size(const struct tekken *tk) { return tk->n_special + tk->n_ranks; }
int32_t tekken_num_special(const struct tekken *tk) { return tk->n_special; }
int32_t tekken_bos_id(const struct tekken *tk) { return tk->bos; }
int32_t tekken_eos_id(const struct tekken *tk) { return tk->eos; }
int32_t tekken_unk_id(const struct tekken *tk) { return tk->unk; }
const char *tekken_version(const struct tekken *tk) { return tk->version; }

int32_t tekken_special_find(const struct tekken *tk, const char *name)
{
    for (int32_t i = 0; i < tk->n_special; i++)
        if (!strcmp(tk->special_name[i], name))
            return i;
    return -ENOENT;
}

int tekken_token_is_special(const struct tekken *tk, int32_t id)
{
    if (id < 0 || id >= tekken_vocab_size(tk))
        return -EINVAL;
    return id < tk->n_special;
}

int tekken_token_is_control(const struct tekken *tk, int32_t id)
{
    return id >= 0 && id < tk->n_special && tk->special_control[id];
}

const uint8_t *tekken_token_bytes(const struct tekken *tk, int32_t id, size_t *len)
{
    if (id < 0 || id >= tekken_vocab_size(tk))
        return NULL;
    if (id < tk->n_special) {
        *len = strlen(tk->special_name[id]);
        return (const uint8_t *)tk->special_name[id];
    }
    uint32_t r = (uint32_t)(id - tk->n_special);
    *len = tk->off[r + 1] - tk->off[r];
    return tk->blob + tk->off[r];
}

/* ---- decoding -------------------------------------------------------------------------------- */

struct tekken_text {
    char *p;
    size_t cap, n;
};

static inline void tekken_text_put(struct tekken_text *t, const uint8_t *b, size_t n)
{
    if (t->n < t->cap)
        memcpy(t->p + t->n, b, n <= t->cap - t->n ? n : t->cap - t->n);
    t->n += n;
}

/* Length of the valid UTF-8 prefix of a sequence starting at lead byte b[0] (1..4; b has n
 * bytes available); sets *need to the full length the lead byte asks for (0 if b[0] can never
 * start a sequence). Limits follow Unicode Table 3-7 (no overlongs, surrogates, > U+10FFFF). */
static size_t tekken_utf8_prefix(const uint8_t *b, size_t n, size_t *need)
{
    uint8_t c = b[0], lo = 0x80, hi = 0xBF;
    if (c < 0x80) { *need = 1; return 1; }
    if (c < 0xC2 || c > 0xF4) { *need = 0; return 0; }
    *need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    size_t k = 1;
    if (k < n && k < *need && b[k] >= lo && b[k] <= hi)
        k++;
    else
        return k;
    while (k < n && k < *need && b[k] >= 0x80 && b[k] <= 0xBF)
        k++;
    return k;
}

/* Writes the whole UTF-8 sequences of held+bytes to t, the invalid ones as U+FFFD per maximal
 * subpart (or raw), and leaves an unfinished tail in held (written out if final). */
static void tekken_utf8_feed(uint8_t held[4], uint8_t *n_held, const uint8_t *bytes, size_t len,
                             bool raw, bool final, struct tekken_text *t)
{
    static const uint8_t fffd[3] = { 0xEF, 0xBF, 0xBD };
    uint8_t old[4];
    size_t nh = *n_held, total = nh + len, pos = 0;
    memcpy(old, held, nh);
    *n_held = 0;
    while (pos < total) {
        uint8_t win[4];
        size_t w = 0;
        for (; w < 4 && pos + w < total; w++)
            win[w] = pos + w < nh ? old[pos + w] : bytes[pos + w - nh];
        size_t need, k = tekken_utf8_prefix(win, w, &need);
        if (k == need && k > 0) {
            tekken_text_put(t, win, k);
        } else if (k > 0 && pos + k == total && !final) {
            memcpy(held, win, k);                /* unfinished at the very end: keep */
            *n_held = (uint8_t)k;
            return;
        } else {
            k = k ? k : 1;
            tekken_text_put(t, raw ? win : fffd, raw ? k : 3);
        }
        pos += k;
    }
}

/* Appends token id to the stream in d. */
static int tekken_detok_add(const struct tekken *tk, struct tekken_detok *d, int32_t id,
                            struct tekken_text *t)
{
    size_t len;
    const uint8_t *b = tekken_token_bytes(tk, id, &len);
    if (!b)
        return -EINVAL;
    if (id < tk->n_special) {
        /* mistral-common decodes each run of ordinary tokens on its own: a special token
         * ends an unfinished sequence (U+FFFD) whether or not its name is written. */
        tekken_utf8_feed(d->held, &d->n_held, NULL, 0, d->flags & TEKKEN_DECODE_RAW, true, t);
        if (d->flags & TEKKEN_DECODE_CONTROL)
            tekken_text_put(t, b, len);
        return 0;
    }
    tekken_utf8_feed(d->held, &d->n_held, b, len, d->flags & TEKKEN_DECODE_RAW, false, t);
    return 0;
}

void tekken_detok_init(struct tekken_detok *d, unsigned flags)
{
    memset(d, 0, sizeof *d);
    d->flags = flags;
}

long tekken_detok_push(const struct tekken *tk, struct tekken_detok *d, int32_t id,
                       char *out, size_t cap, struct bora_err *err)
{
    struct tekken_detok saved = *d;
    struct tekken_text t = { out, cap, 0 };
    if (tekken_detok_add(tk, d, id, &t))
        return bora_errf(err, -EINVAL, "tekken: token id %d out of range [0, %d)", id,
                         tekken_vocab_size(tk));
    if (t.n > cap) {
        *d = saved;
        return bora_errf(err, -ENOSPC, "tekken: detokenizer output needs %zu bytes, have %zu",
                         t.n, cap);
    }
    return (long)t.n;
}

long tekken_detok_flush(struct tekken_detok *d, char *out, size_t cap)
{
    struct tekken_detok saved = *d;
    struct tekken_text t = { out, cap, 0 };
    tekken_utf8_feed(d->held, &d->n_held, NULL, 0, d->flags & TEKKEN_DECODE_RAW, true, &t);
    if (t.n > cap) {
        *d = saved;
        return -ENOSPC;
    }
    return (long)t.n;
}

size_t tekken_detok_out_max(const struct tekken *tk)
{
    size_t m = tk->max_token_len;
    for (int32_t i = 0; i < tk->n_special; i++)
        if (strlen(tk->special_name[i]) > m)
            m = strlen(tk->special_name[i]);
    return 3 * (m + 4) + 12;
}

long tekken_decode(const struct tekken *tk, const int32_t *ids, size_t n, unsigned flags,
                   char *out, size_t cap, struct bora_err *err)
{
    struct tekken_detok d;
    tekken_detok_init(&d, flags);
    struct tekken_text t = { out, out ? cap : 0, 0 };
    for (size_t i = 0; i < n; i++)
        if (tekken_detok_add(tk, &d, ids[i], &t))
            return bora_errf(err, -EINVAL, "tekken: ids[%zu] = %d out of range [0, %d)", i,
                             ids[i], tekken_vocab_size(tk));
    tekken_utf8_feed(d.held, &d.n_held, NULL, 0, flags & TEKKEN_DECODE_RAW, true, &t);
    return (long)t.n;
}
