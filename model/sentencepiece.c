/* sentencepiece.c — SentencePiece BPE: reads tokenizer.model (protobuf ModelProto) with a small
 * strict wire-format reader and encodes as sentencepiece's bpe_model.cc does: normalize (dummy
 * ▁ prefix, spaces → ▁), split into characters and user-defined pieces, merge the adjacent pair
 * whose joined piece has the highest score (leftmost on ties) until none is in the vocabulary,
 * then map leftovers to byte tokens. O(n log n) with a binary heap; no allocation once warm. */
#include "model/sentencepiece.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/touch.h"

#define SP_SCRATCH_KEEP_BYTES (8u << 20)   /* scratch above this is freed after the call */
#define SP_MAX_PIECE_BYTES 4096u          /* longest vocabulary piece accepted */
#define SP_CACHE_SLOTS 8192u              /* word cache: direct-mapped slots (power of two) */
#define SP_CACHE_WORD_MAX 48u             /* longest word (normalized bytes) kept in the cache */
#define SP_CACHE_BYTES (256u << 10)       /* word bytes held; the cache is cleared when full */
#define SP_CACHE_IDS (64u << 10)          /* ids held */
#define SP_SMALL_WORD 16                  /* words of up to this many symbols merge without a heap */
#define SP_SCRATCH_INITIAL_TEXT (16u << 10)  /* text bytes the scratch is sized (and faulted in) for at open */

struct sp_sym {
    uint32_t start, len;   /* bytes of the normalized text */
    int32_t prev, next;    /* neighbours in the live list, -1 at the ends */
    int32_t id;            /* piece id of the text, -1 if not in the vocabulary */
    bool freeze;           /* user-defined piece: never merged */
};

struct sp_pair {
    float score;
    int32_t left, right;   /* symbol indices */
    uint32_t size;         /* bytes of the joined piece when pushed */
    int32_t id;            /* the joined piece */
};

#define SP_PAIR_EMPTY UINT64_MAX
#define SP_PAIR_ID_BITS 21
#define SP_PAIR_ID_MASK ((1u << SP_PAIR_ID_BITS) - 1)

/* Words already encoded (the encoding of a word depends only on its bytes): most words of a
 * prompt repeat, and a hit costs a hash and a compare instead of a BPE run. */
struct sp_cache_ent {
    uint64_t h;              /* 0 = empty */
    uint32_t boff, ioff;     /* into bytes / ids */
    uint16_t blen, n;
};

struct sp_cache {
    struct sp_cache_ent *slot;   /* SP_CACHE_SLOTS */
    char *bytes;                 /* SP_CACHE_BYTES */
    int32_t *ids;                /* SP_CACHE_IDS */
    uint32_t nb, ni;
};

struct sp_scratch {
    char *norm;            size_t norm_cap;
    struct sp_sym *sym;    size_t sym_cap;
    struct sp_pair *heap;  size_t heap_cap;
};

struct sp_model {
    const struct tokenizer *t;
    float *score;             /* (n) */
    uint8_t *type;            /* (n) enum sp_type */
    uint8_t *merge_ok;        /* (n) 1 if the piece may result from a merge */
    uint8_t *word_self;       /* (n) 1 if a word of the piece's bytes encodes to the piece alone;
                                 NULL unless split_words */
    int32_t *ht;              /* open-addressing piece → id, -1 empty; ht_mask + 1 slots */
    uint32_t ht_mask;
    int32_t byte_id[256];     /* <0xNN> ids, -1 if absent */
    int32_t ascii_id[128];    /* id of each one-byte piece, -1 if absent */
    /* (left id, right id) → joined id for every split of every mergeable piece; NULL when some
       piece holds a character that is not itself a piece (then pairs are looked up by text) */
    uint64_t *pair;           /* left << 42 | right << 21 | joined, SP_PAIR_EMPTY (ids < 2^21) */
    uint32_t pair_mask, pair_shift;
    bool split_words;         /* no mergeable piece has ▁ after another character: merges never
                                 cross "x▁", so each word is merged on its own */
    int32_t *user_ids;        /* user-defined pieces, matched longest-first in text */
    size_t n_user;
    uint8_t user_first[32];   /* bitmap of first bytes of user-defined pieces */
    bool add_dummy_prefix, remove_extra_ws, escape_ws, byte_fallback;
    atomic_flag busy;         /* scratch and cache in use */
    struct sp_scratch scratch;
    struct sp_cache cache;
};

/* ---- piece hash table ------------------------------------------------------------------- */

static inline uint32_t sp_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 29));
}

static inline int32_t sp_lookup(const struct sp_model *m, const char *p, size_t n)
{
    const struct tokenizer *t = m->t;
    uint32_t i = sp_hash((const uint8_t *)p, n) & m->ht_mask;
    for (;;) {
        int32_t id = m->ht[i];
        if (id < 0)
            return -1;
        uint32_t off = t->piece_off[id];
        if (t->piece_off[id + 1] - off == n && !memcmp(t->piece_str + off, p, n))
            return id;
        i = (i + 1) & m->ht_mask;
    }
}

/* ---- encoder ---------------------------------------------------------------------------- */

static int scratch_reserve(struct sp_scratch *s, size_t text_len)
{
    size_t nn = 3 * text_len + 3, ns = text_len + 2, nh = 3 * ns + 4;
    if (s->norm_cap < nn) {
        char *p = realloc(s->norm, nn);
        if (!p) return -ENOMEM;
        s->norm = p; s->norm_cap = nn;
    }
    if (s->sym_cap < ns) {
        struct sp_sym *p = realloc(s->sym, ns * sizeof *p);
        if (!p) return -ENOMEM;
        s->sym = p; s->sym_cap = ns;
    }
    if (s->heap_cap < nh) {
        struct sp_pair *p = realloc(s->heap, nh * sizeof *p);
        if (!p) return -ENOMEM;
        s->heap = p; s->heap_cap = nh;
    }
    return 0;
}

static void scratch_free(struct sp_scratch *s)
{
    free(s->norm);
    free(s->sym);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static size_t scratch_bytes(const struct sp_scratch *s)
{
    return s->norm_cap + s->sym_cap * sizeof *s->sym + s->heap_cap * sizeof *s->heap;
}

/* Normalizes text into out (cap ≥ 3 len + 3): dummy prefix, spaces → ▁, optional collapsing. */
static size_t sp_normalize(const struct sp_model *m, const char *text, size_t len, char *out)
{
    size_t a = 0, b = len;
    if (m->remove_extra_ws) {
        while (a < b && text[a] == ' ') a++;
        while (b > a && text[b - 1] == ' ') b--;
    }
    if (a == b)
        return 0;
    size_t n = 0;
    if (m->add_dummy_prefix) {
        memcpy(out, "\xE2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = a; i < b; i++) {
        char c = text[i];
        if (c == ' ') {
            if (m->remove_extra_ws && i > a && text[i - 1] == ' ')
                continue;
            if (m->escape_ws) {
                memcpy(out + n, "\xE2\x96\x81", 3);
                n += 3;
                continue;
            }
        }
        out[n++] = c;
    }
    return n;
}

static size_t utf8_len_lead(uint8_t c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Longest user-defined piece at p (n bytes left), or 0. */
static size_t sp_user_match(const struct sp_model *m, const char *p, size_t n)
{
    uint8_t c = (uint8_t)p[0];
    if (!(m->user_first[c >> 3] & (1u << (c & 7))))
        return 0;
    size_t best = 0;
    for (size_t i = 0; i < m->n_user; i++) {
        size_t l;
        const char *u = tokenizer_piece(m->t, m->user_ids[i], &l);
        if (l > best && l <= n && !memcmp(u, p, l))
            best = l;
    }
    return best;
}

static inline bool pair_before(const struct sp_pair *a, const struct sp_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(struct sp_pair *h, size_t *n, struct sp_pair v)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!pair_before(&v, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static struct sp_pair heap_pop(struct sp_pair *h, size_t *n)
{
    struct sp_pair top = h[0], v = h[--(*n)];
    size_t i = 0, cnt = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= cnt)
            break;
        if (c + 1 < cnt && pair_before(&h[c + 1], &h[c]))
            c++;
        if (!pair_before(&h[c], &v))
            break;
        h[i] = h[c];
        i = c;
    }
    if (cnt)
        h[i] = v;
    return top;
}

static inline uint32_t pair_slot(const struct sp_model *m, uint64_t key)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> m->pair_shift);
}

static inline int32_t pair_lookup(const struct sp_model *m, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << SP_PAIR_ID_BITS | (uint32_t)b;
    for (uint32_t i = pair_slot(m, key);; i = (i + 1) & m->pair_mask) {
        uint64_t e = m->pair[i];
        if (e >> SP_PAIR_ID_BITS == key)
            return (int32_t)(e & SP_PAIR_ID_MASK);
        if (e == SP_PAIR_EMPTY)
            return -1;
    }
}

/* The piece that symbols l and r (adjacent) join into, or -1. */
static inline int32_t pair_join(const struct sp_model *m, const char *norm, const struct sp_sym *sym,
                                int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || sym[l].freeze || sym[r].freeze)
        return -1;
    if (m->pair)
        return sym[l].id < 0 || sym[r].id < 0 ? -1 : pair_lookup(m, sym[l].id, sym[r].id);
    int32_t id = sp_lookup(m, norm + sym[l].start, sym[l].len + sym[r].len);
    return id >= 0 && m->merge_ok[id] ? id : -1;
}

static inline void try_pair(const struct sp_model *m, const char *norm, const struct sp_sym *sym,
                            int32_t l, int32_t r, struct sp_pair *heap, size_t *nh)
{
    int32_t id = pair_join(m, norm, sym, l, r);
    if (id >= 0)
        heap_push(heap, nh, (struct sp_pair){ m->score[id], l, r, sym[l].len + sym[r].len, id });
}

static int sp_emit(const struct sp_model *m, int32_t id, const char *p, size_t n, int32_t *ids,
                   size_t cap, size_t *k)
{
    if (id >= 0 && id != m->t->unk_id) {
        if (*k < cap) ids[*k] = id;
        (*k)++;
        return 0;
    }
    if (!m->byte_fallback) {
        if (*k < cap) ids[*k] = m->t->unk_id;
        (*k)++;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t b = m->byte_id[(uint8_t)p[i]];
        if (b < 0)
            b = m->t->unk_id;
        if (*k < cap) ids[*k] = b;
        (*k)++;
    }
    return 0;
}

static inline bool starts_with_space(const char *p, uint32_t n)
{
    return n >= 3 && (uint8_t)p[0] == 0xE2 && (uint8_t)p[1] == 0x96 && (uint8_t)p[2] == 0x81;
}

/* Splits the normalized text into symbols: user-defined pieces (frozen) and characters. */
static int32_t sp_symbols(const struct sp_model *m, const char *norm, size_t nlen, struct sp_sym *sym)
{
    int32_t ns = 0;
    for (size_t i = 0; i < nlen;) {
        size_t l = sp_user_match(m, norm + i, nlen - i);
        bool freeze = l > 0;
        int32_t id;
        if (freeze) {
            id = sp_lookup(m, norm + i, l);
        } else {
            uint8_t c = (uint8_t)norm[i];
            l = utf8_len_lead(c);
            if (l > nlen - i)
                l = nlen - i;
            id = c < 0x80 ? m->ascii_id[c] : sp_lookup(m, norm + i, l);
        }
        sym[ns] = (struct sp_sym){ (uint32_t)i, (uint32_t)l, ns - 1, ns + 1, id, freeze };
        ns++;
        i += l;
    }
    return ns;
}

/* sp_merge_run for a short word: the best pair is found by a scan of the live symbols (the same
 * choice as the heap's: highest score, leftmost on ties), cheaper than a heap at this size. */
static void sp_merge_small(const struct sp_model *m, const char *norm, struct sp_sym *sym, int32_t a,
                           int32_t b)
{
    int32_t join[SP_SMALL_WORD];   /* piece joining symbol a+i with its next, or -1 */
    for (int32_t i = a; i < b; i++)
        join[i - a] = i + 1 < b ? pair_join(m, norm, sym, i, i + 1) : -1;
    for (;;) {
        int32_t best = -1;
        float best_score = 0;
        for (int32_t i = a; i >= 0; i = sym[i].next) {
            int32_t j = join[i - a];
            if (j >= 0 && (best < 0 || m->score[j] > best_score)) {
                best = i;
                best_score = m->score[j];
            }
        }
        if (best < 0)
            return;
        struct sp_sym *L = &sym[best], *R = &sym[L->next];
        L->len += R->len;
        L->id = join[best - a];
        L->next = R->next;
        if (R->next >= 0)
            sym[R->next].prev = best;
        R->len = 0;
        join[best - a] = pair_join(m, norm, sym, best, L->next);
        if (L->prev >= 0)
            join[L->prev - a] = pair_join(m, norm, sym, L->prev, best);
    }
}

/* Merges symbols [a, b) (a linked run) until no adjacent pair joins into a piece. */
static void sp_merge_run(const struct sp_model *m, const char *norm, struct sp_sym *sym, int32_t a,
                         int32_t b, struct sp_pair *heap)
{
    if (b - a <= SP_SMALL_WORD) {
        sp_merge_small(m, norm, sym, a, b);
        return;
    }
    size_t nh = 0;
    for (int32_t i = a; i + 1 < b; i++)
        try_pair(m, norm, sym, i, i + 1, heap, &nh);
    while (nh) {
        struct sp_pair top = heap_pop(heap, &nh);
        struct sp_sym *L = &sym[top.left], *R = &sym[top.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != top.size || L->next != top.right)
            continue;   /* stale: one side has changed since the pair was pushed */
        L->len += R->len;
        L->id = top.id;
        L->next = R->next;
        if (R->next >= 0)
            sym[R->next].prev = top.left;
        R->len = 0;
        try_pair(m, norm, sym, L->prev, top.left, heap, &nh);
        try_pair(m, norm, sym, top.left, L->next, heap, &nh);
    }
}

static inline uint64_t word_hash(const char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
    return h | 1;   /* never 0 (empty) */
}

static const struct sp_cache_ent *cache_find(const struct sp_cache *c, uint64_t h, const char *p,
                                             size_t n)
{
    const struct sp_cache_ent *e = &c->slot[h & (SP_CACHE_SLOTS - 1)];
    if (e->h == h && e->blen == n && !memcmp(c->bytes + e->boff, p, n))
        return e;
    return NULL;
}

static void cache_put(struct sp_cache *c, uint64_t h, const char *p, size_t n, const int32_t *ids,
                      size_t k)
{
    if (k > SP_CACHE_WORD_MAX * 4)
        return;
    if (c->nb + n > SP_CACHE_BYTES || c->ni + k > SP_CACHE_IDS) {   /* full: start over */
        memset(c->slot, 0, SP_CACHE_SLOTS * sizeof *c->slot);
        c->nb = c->ni = 0;
    }
    struct sp_cache_ent *e = &c->slot[h & (SP_CACHE_SLOTS - 1)];
    memcpy(c->bytes + c->nb, p, n);
    memcpy(c->ids + c->ni, ids, k * sizeof *ids);
    *e = (struct sp_cache_ent){ h, c->nb, c->ni, (uint16_t)n, (uint16_t)k };
    c->nb += (uint32_t)n;
    c->ni += (uint32_t)k;
}

/* Emits the ids of word [a, b): from the cache, or by merging (then cached). */
static void sp_encode_word(const struct sp_model *m, struct sp_cache *cache, const char *norm,
                           struct sp_sym *sym, int32_t a, int32_t b, struct sp_pair *heap,
                           int32_t *ids, size_t cap, size_t *k)
{
    const char *w = norm + sym[a].start;
    size_t wl = sym[b - 1].start + sym[b - 1].len - sym[a].start;
    bool cacheable = cache && wl <= SP_CACHE_WORD_MAX && !sym[a].freeze && !sym[b - 1].freeze;
    uint64_t h = 0;
    if (cacheable) {
        h = word_hash(w, wl);
        const struct sp_cache_ent *e = cache_find(cache, h, w, wl);
        if (e) {
            for (size_t i = 0; i < e->n; i++, (*k)++)
                if (*k < cap)
                    ids[*k] = cache->ids[e->ioff + i];
            return;
        }
    }
    if (cacheable && m->word_self && b - a > 1) {   /* a word met for the first time */
        int32_t id = sp_lookup(m, w, wl);
        if (id >= 0 && m->word_self[id]) {
            if (*k < cap)
                ids[*k] = id;
            cache_put(cache, h, w, wl, &id, 1);
            (*k)++;
            return;
        }
    }
    sym[a].prev = -1;
    sym[b - 1].next = -1;
    sp_merge_run(m, norm, sym, a, b, heap);
    size_t k0 = *k;
    for (int32_t i = a; i >= 0; i = sym[i].next)
        sp_emit(m, sym[i].id, norm + sym[i].start, sym[i].len, ids, cap, k);
    if (cacheable && *k <= cap)
        cache_put(cache, h, w, wl, ids + k0, *k - k0);
}

static int sp_encode_with(const struct sp_model *m, struct sp_scratch *s, struct sp_cache *cache,
                          const char *text, size_t len, int32_t *ids, size_t cap, size_t *n_out)
{
    int rc = scratch_reserve(s, len);
    if (rc)
        return rc;
    const char *norm = s->norm;
    size_t nlen = sp_normalize(m, text, len, s->norm);
    struct sp_sym *sym = s->sym;
    int32_t ns = sp_symbols(m, norm, nlen, sym);
    size_t k = 0;
    for (int32_t a = 0, b; a < ns; a = b) {
        b = a + 1;
        if (m->split_words)   /* a word ends before a ▁ that follows another character */
            while (b < ns && !(starts_with_space(norm + sym[b].start, sym[b].len)
                               && !starts_with_space(norm + sym[b - 1].start, sym[b - 1].len)))
                b++;
        else
            b = ns;
        sp_encode_word(m, m->split_words ? cache : NULL, norm, sym, a, b, s->heap, ids, cap, &k);
    }
    *n_out = k;
    return k > cap ? -ENOSPC : 0;
}

static int sp_encode(const struct tokenizer *t, const char *text, size_t len, int32_t *ids,
                     size_t cap, size_t *n_out, struct bora_err *err)
{
    struct sp_model *m = t->impl;
    int rc;
    if (!atomic_flag_test_and_set_explicit(&m->busy, memory_order_acquire)) {
        rc = sp_encode_with(m, &m->scratch, m->cache.slot ? &m->cache : NULL, text, len, ids, cap, n_out);
        if (scratch_bytes(&m->scratch) > SP_SCRATCH_KEEP_BYTES)
            scratch_free(&m->scratch);
        atomic_flag_clear_explicit(&m->busy, memory_order_release);   /* pairs with the acquire above */
    } else {   /* another thread is encoding with this tokenizer: use a private scratch */
        struct sp_scratch s = { 0 };
        rc = sp_encode_with(m, &s, NULL, text, len, ids, cap, n_out);
        scratch_free(&s);
    }
    if (rc == -ENOMEM)
        bora_errf(err, rc, "out of memory encoding %zu bytes", len);
    return rc;
}

static void sp_destroy(struct tokenizer *t)
{
    struct sp_model *m = t->impl;
    if (!m)
        return;
    free(m->score);
    free(m->type);
    free(m->merge_ok);
    free(m->word_self);
    free(m->ht);
    free(m->user_ids);
    free(m->pair);
    free(m->cache.slot);
    free(m->cache.bytes);
    free(m->cache.ids);
    scratch_free(&m->scratch);
    free(m);
    t->impl = NULL;
}

/* ---- building --------------------------------------------------------------------------- */

static int parse_byte_piece(const char *p, uint32_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(p, "<0x", 3) || p[5] != '>')
        return -1;
    const char *h = strchr(hex, p[3]), *l = strchr(hex, p[4]);
    if (!p[3] || !p[4] || !h || !l)
        return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

static int sp_index(struct sp_model *m, const struct sp_build *b, const char *name,
                    struct bora_err *err)
{
    uint32_t slots = 64;
    while (slots < 2u * (uint32_t)b->n)
        slots <<= 1;
    m->ht = malloc(slots * sizeof *m->ht);
    m->user_ids = malloc((size_t)b->n * sizeof *m->user_ids);
    if (!m->ht || !m->user_ids)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    memset(m->ht, 0xff, slots * sizeof *m->ht);
    m->ht_mask = slots - 1;
    for (int i = 0; i < 256; i++)
        m->byte_id[i] = -1;
    for (int32_t i = 0; i < b->n; i++) {
        if (sp_lookup(m, b->piece[i], b->len[i]) >= 0)
            return bora_errf(err, -EINVAL, "%s: piece %d '%.*s' is defined twice", name, i,
                             (int)b->len[i], b->piece[i]);
        uint32_t h = sp_hash((const uint8_t *)b->piece[i], b->len[i]) & m->ht_mask;
        while (m->ht[h] >= 0)
            h = (h + 1) & m->ht_mask;
        m->ht[h] = i;
        if (b->type[i] == SP_BYTE) {
            int v = parse_byte_piece(b->piece[i], b->len[i]);
            if (v < 0)
                return bora_errf(err, -EINVAL, "%s: byte piece %d '%.*s' is not <0xNN>", name, i,
                                 (int)b->len[i], b->piece[i]);
            m->byte_id[v] = i;
        }
        if (b->type[i] == SP_USER_DEFINED) {
            uint8_t c = (uint8_t)b->piece[i][0];
            m->user_ids[m->n_user++] = i;
            m->user_first[c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    }
    return 0;
}

static bool piece_chars_known(const struct sp_model *m, const char *p, uint32_t n)
{
    for (uint32_t i = 0; i < n;) {
        uint32_t l = (uint32_t)utf8_len_lead((uint8_t)p[i]);
        if (l > n - i || sp_lookup(m, p + i, l) < 0)
            return false;
        i += l;
    }
    return true;
}

/* ▁ only in the leading run of the piece (so no merge joins "x" and "▁y"). */
static bool space_only_leading(const char *p, uint32_t n)
{
    uint32_t i = 0;
    while (starts_with_space(p + i, n - i))
        i += 3;
    for (; i + 3 <= n; i++)
        if (starts_with_space(p + i, n - i))
            return false;
    return true;
}

static void pair_insert(struct sp_model *m, int32_t a, int32_t b, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)a << SP_PAIR_ID_BITS | (uint32_t)b;
    uint32_t i = pair_slot(m, key);
    while (m->pair[i] != SP_PAIR_EMPTY && m->pair[i] >> SP_PAIR_ID_BITS != key)
        i = (i + 1) & m->pair_mask;
    m->pair[i] = key << SP_PAIR_ID_BITS | (uint32_t)id;
}

/* Calls fn(m, left, right, joined) for every split of every mergeable piece into two pieces. */
static size_t pairs_walk(struct sp_model *m, const struct sp_build *b, bool insert)
{
    size_t count = 0;
    for (int32_t i = 0; i < b->n; i++) {
        if (!m->merge_ok[i])
            continue;
        const char *p = b->piece[i];
        uint32_t n = b->len[i];
        for (uint32_t k = (uint32_t)utf8_len_lead((uint8_t)p[0]); k < n;
             k += (uint32_t)utf8_len_lead((uint8_t)p[k])) {
            int32_t l = sp_lookup(m, p, k), r = sp_lookup(m, p + k, n - k);
            if (l < 0 || r < 0)
                continue;
            count++;
            if (insert)
                pair_insert(m, l, r, i);
        }
    }
    return count;
}

/* The (left, right) → joined table; dropped (text lookups instead) if a piece holds a character
 * that is not a piece, since such a character's symbol has no id to look a pair up by. */
static int sp_pairs_build(struct sp_model *m, const struct sp_build *b, const char *name,
                          struct bora_err *err)
{
    bool exact = true;
    m->split_words = m->escape_ws;
    for (int i = 0; i < 128; i++) {
        char c = (char)i;
        m->ascii_id[i] = sp_lookup(m, &c, 1);
    }
    for (int32_t i = 0; i < b->n; i++) {
        if (!m->merge_ok[i])
            continue;
        exact = exact && piece_chars_known(m, b->piece[i], b->len[i]);
        m->split_words = m->split_words && space_only_leading(b->piece[i], b->len[i]);
    }
    if (!exact || b->n > (int32_t)SP_PAIR_ID_MASK)
        return 0;
    size_t count = pairs_walk(m, b, false);
    uint32_t bits = 10;
    while ((1ull << bits) < 2 * (uint64_t)count + 2)
        bits++;
    m->pair_mask = (1u << bits) - 1;
    m->pair_shift = 64 - bits;
    m->pair = malloc(((size_t)m->pair_mask + 1) * sizeof *m->pair);
    if (!m->pair)
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    memset(m->pair, 0xff, ((size_t)m->pair_mask + 1) * sizeof *m->pair);
    pairs_walk(m, b, true);
    return 0;
}

/* Per-piece arrays: scores, types, mergeability, attributes and byte values. */
static int sp_pieces_fill(struct tokenizer *t, struct sp_model *m, const struct sp_build *b,
                          uint8_t *byte_val)
{
    size_t n = (size_t)b->n;
    m->score = malloc(n * sizeof *m->score);
    m->type = malloc(n);
    m->merge_ok = malloc(n);
    t->piece_attr = calloc(n, 1);
    if (!m->score || !m->type || !m->merge_ok || !t->piece_attr)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint8_t ty = b->type[i];
        m->score[i] = b->score[i];
        m->type[i] = ty;
        bool normal = ty == SP_NORMAL || ty == SP_USER_DEFINED || ty == SP_UNUSED;
        m->merge_ok[i] = normal && (!b->mergeable || b->mergeable[i]);
        t->piece_attr[i] = ty == SP_CONTROL ? TOK_ATTR_CONTROL : ty == SP_BYTE ? TOK_ATTR_BYTE
                         : ty == SP_UNKNOWN ? TOK_ATTR_UNKNOWN : ty == SP_USER_DEFINED ? TOK_ATTR_USER : 0;
        if (ty == SP_BYTE) {
            int v = parse_byte_piece(b->piece[i], b->len[i]);
            byte_val[i] = (uint8_t)(v < 0 ? 0 : v);
        }
    }
    return 0;
}

/* The encode scratch and the word cache, faulted in now rather than on the first request. */
static int sp_scratch_init(struct sp_model *m)
{
    if (scratch_reserve(&m->scratch, SP_SCRATCH_INITIAL_TEXT))
        return -ENOMEM;
    m->cache.slot = calloc(SP_CACHE_SLOTS, sizeof *m->cache.slot);
    m->cache.bytes = calloc(SP_CACHE_BYTES, 1);
    m->cache.ids = calloc(SP_CACHE_IDS, sizeof *m->cache.ids);
    if (!m->cache.slot || !m->cache.bytes || !m->cache.ids)
        return -ENOMEM;
    bora_fault_in(m->scratch.norm, m->scratch.norm_cap);
    bora_fault_in(m->scratch.sym, m->scratch.sym_cap * sizeof *m->scratch.sym);
    bora_fault_in(m->scratch.heap, m->scratch.heap_cap * sizeof *m->scratch.heap);
    bora_fault_in(m->cache.slot, SP_CACHE_SLOTS * sizeof *m->cache.slot);
    bora_fault_in(m->cache.bytes, SP_CACHE_BYTES);
    bora_fault_in(m->cache.ids, SP_CACHE_IDS * sizeof *m->cache.ids);
    return 0;
}

/* Marks the pieces that a word of the same bytes encodes to, alone. Such a word, the first time
 * a prompt has it, costs one lookup instead of a BPE run. (tiktoken takes a token's own text to
 * be that token without a check; in SentencePiece's order of merges a piece's text can end as
 * other pieces, so each piece is checked here by running the merges on its text.) */
static int sp_word_self_build(struct sp_model *m, const struct sp_build *b)
{
    if (!m->split_words)
        return 0;
    m->word_self = calloc((size_t)b->n, 1);
    if (!m->word_self)
        return -ENOMEM;
    /* split_words: every mergeable piece has ▁ only in its leading run, so its text is one word
     * as sp_encode_with splits words */
    struct sp_sym *sym = m->scratch.sym;   /* sized for SP_SCRATCH_INITIAL_TEXT bytes */
    for (int32_t i = 0; i < b->n; i++) {
        if (!m->merge_ok[i] || b->len[i] > SP_CACHE_WORD_MAX)
            continue;
        const char *p = b->piece[i];
        int32_t ns = sp_symbols(m, p, b->len[i], sym);
        if (ns < 2 || sym[0].freeze || sym[ns - 1].freeze)
            continue;
        sym[0].prev = -1;
        sym[ns - 1].next = -1;
        sp_merge_run(m, p, sym, 0, ns, m->scratch.heap);
        m->word_self[i] = sym[0].next < 0 && sym[0].id == i;
    }
    return 0;
}

int sp_tokenizer_create(struct tokenizer **out, const struct sp_build *b, const char *name,
                        struct bora_err *err)
{
    *out = NULL;
    int rc;
    if (b->n <= 0 || b->unk_id < 0 || b->unk_id >= b->n)
        return bora_errf(err, -EINVAL, "%s: the vocabulary has no unknown piece", name);
    struct tokenizer *t = calloc(1, sizeof *t);
    struct sp_model *m = calloc(1, sizeof *m);
    uint8_t *byte_val = calloc((size_t)b->n, 1);
    if (!t || !m || !byte_val) {
        free(t); free(m); free(byte_val);
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    }
    *t = (struct tokenizer){ .kind = TOKENIZER_SENTENCEPIECE, .n_vocab = b->n, .bos_id = b->bos_id,
                             .eos_id = b->eos_id, .unk_id = b->unk_id,
                             .strip_first_space = b->add_dummy_prefix || b->remove_extra_ws,
                             .encode = sp_encode, .destroy = sp_destroy, .impl = m };
    m->t = t;
    atomic_flag_clear(&m->busy);
    m->add_dummy_prefix = b->add_dummy_prefix;
    m->remove_extra_ws = b->remove_extra_ws;
    m->escape_ws = b->escape_ws;
    m->byte_fallback = b->byte_fallback;
    if ((rc = sp_pieces_fill(t, m, b, byte_val)) != 0) {
        rc = bora_errf(err, rc, "%s: out of memory", name);
        goto err;
    }
    if ((rc = tokenizer_tables_build(t, b->piece, b->len, byte_val, true, name, err)) != 0)
        goto err;
    if ((rc = sp_index(m, b, name, err)) != 0 || (rc = sp_pairs_build(m, b, name, err)) != 0)
        goto err;
    if ((rc = sp_scratch_init(m)) != 0 || (rc = sp_word_self_build(m, b)) != 0) {
        rc = bora_errf(err, rc, "%s: out of memory", name);
        goto err;
    }
    free(byte_val);
    *out = t;
    return 0;
err:
    free(byte_val);
    tokenizer_close(t);
    return rc;
}

int sp_piece_info(const struct tokenizer *t, int32_t id, float *score, int *type)
{
    if ((t->kind != TOKENIZER_SENTENCEPIECE && t->kind != TOKENIZER_HF_JSON) || id < 0 || id >= t->n_vocab)
        return -EINVAL;
    const struct sp_model *m = t->impl;
    *score = m->score[id];
    *type = m->type[id];
    return 0;
}

/* ---- protobuf wire format --------------------------------------------------------------- */

struct pb {
    const uint8_t *base, *p, *end;   /* end: this message's (a nested one ends before the file) */
    const char *name;
    struct bora_err *err;
    const uint8_t *file_end;
};

static int pb_fail(struct pb *r, const char *what)
{
    /* the user's terms first: what the file is not, then the parser's detail */
    const size_t at = (size_t)(r->p - r->base), size = (size_t)(r->file_end - r->base);
    /* running out of bytes means a cut file only at the top level: inside a nested message the
     * file goes on, so the message's own length is wrong */
    const bool cut = r->end == r->file_end && (!strncmp(what, "truncated", 9) || !strcmp(what, "length past the end"));
    return bora_errf(r->err, -EINVAL, "%s: %s (%s at byte %zu of %zu)", r->name,
                     cut ? "a SentencePiece model cut short (file truncated?)"
                         : "not a SentencePiece model (corrupt, or another kind of file)",
                     what, at, size);
}

static int pb_varint(struct pb *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end)
            return pb_fail(r, "truncated varint");
        uint8_t c = *r->p++;
        if (shift == 63 && c > 1)
            return pb_fail(r, "varint overflows 64 bits");
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return pb_fail(r, "varint longer than 10 bytes");
}

/* Reads one field key and, for LEN fields, the payload bounds; skips other payloads into *v. */
struct pb_field {
    uint32_t num, wire;
    uint64_t v;                 /* varint / fixed value */
    const uint8_t *data;        /* LEN payload */
    size_t len;
};

static int pb_next(struct pb *r, struct pb_field *f)
{
    uint64_t key;
    int rc = pb_varint(r, &key);
    if (rc)
        return rc;
    f->num = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    f->data = NULL;   /* no payload unless LEN (wire type 2) */
    f->len = 0;
    if (f->num == 0 || key >> 32)
        return pb_fail(r, "bad field number");
    switch (f->wire) {
    case 0:
        return pb_varint(r, &f->v);
    case 1:
    case 5: {
        size_t n = f->wire == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n)
            return pb_fail(r, "truncated fixed-width field");
        f->v = 0;
        for (size_t i = 0; i < n; i++)
            f->v |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return 0;
    }
    case 2:
        if ((rc = pb_varint(r, &f->v)) != 0)
            return rc;
        if (f->v > (uint64_t)(r->end - r->p))
            return pb_fail(r, "length past the end");
        f->data = r->p;
        f->len = (size_t)f->v;
        r->p += f->len;
        return 0;
    default:
        return pb_fail(r, "unsupported wire type");
    }
}

static struct pb pb_sub(const struct pb *r, const struct pb_field *f)
{
    return (struct pb){ r->base, f->data, f->data + f->len, r->name, r->err, r->file_end };
}

struct sp_read {
    struct sp_build b;
    const char **piece;
    uint32_t *len;
    float *score;
    uint8_t *type;
    size_t cap;
    uint64_t model_type;
    bool has_trainer;
};

static int read_piece(struct pb *r, struct sp_read *s)
{
    if ((size_t)s->b.n == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 1024;
        const char **p = realloc(s->piece, nc * sizeof *p);
        if (p) s->piece = p;
        uint32_t *l = realloc(s->len, nc * sizeof *l);
        if (l) s->len = l;
        float *sc = realloc(s->score, nc * sizeof *sc);
        if (sc) s->score = sc;
        uint8_t *ty = realloc(s->type, nc);
        if (ty) s->type = ty;
        if (!p || !l || !sc || !ty)
            return bora_errf(r->err, -ENOMEM, "%s: out of memory", r->name);
        s->cap = nc;
    }
    int32_t i = s->b.n;
    const char *piece = NULL;
    size_t plen = 0;
    float score = 0;
    uint64_t type = SP_NORMAL;
    struct pb_field f;
    while (r->p < r->end) {
        int rc = pb_next(r, &f);
        if (rc)
            return rc;
        if (f.num == 1 && f.wire == 2) { piece = (const char *)f.data; plen = f.len; }
        else if (f.num == 2 && f.wire == 5) { uint32_t u = (uint32_t)f.v; memcpy(&score, &u, 4); }
        else if (f.num == 3 && f.wire == 0) type = f.v;
        else if (f.num <= 3) return pb_fail(r, "piece field with the wrong wire type");
    }
    if (!piece || plen == 0 || plen > SP_MAX_PIECE_BYTES)
        return bora_errf(r->err, -EINVAL, "%s: piece %d is empty, missing or too long", r->name, i);
    if (utf8_validate((const uint8_t *)piece, plen) != plen)
        return bora_errf(r->err, -EINVAL, "%s: piece %d is not valid UTF-8", r->name, i);
    if (type < SP_NORMAL || type > SP_BYTE)
        return bora_errf(r->err, -EINVAL, "%s: piece %d has unknown type %llu", r->name, i,
                         (unsigned long long)type);
    if (!isfinite(score))
        return bora_errf(r->err, -EINVAL, "%s: piece %d has a non-finite score", r->name, i);
    s->piece[i] = piece;
    s->len[i] = (uint32_t)plen;
    s->score[i] = score;
    s->type[i] = (uint8_t)type;
    s->b.n++;
    return 0;
}

static int read_trainer(struct pb *r, struct sp_read *s)
{
    struct pb_field f;
    s->has_trainer = true;
    while (r->p < r->end) {
        int rc = pb_next(r, &f);
        if (rc)
            return rc;
        if (f.wire != 0)
            continue;
        int32_t v32 = (int32_t)(uint32_t)f.v;
        switch (f.num) {
        case 3: s->model_type = f.v; break;
        case 24: if (f.v) return bora_errf(r->err, -ENOTSUP, "%s: treat_whitespace_as_suffix is not supported", r->name); break;
        case 35: s->b.byte_fallback = f.v != 0; break;
        case 40: s->b.unk_id = v32; break;
        case 41: s->b.bos_id = v32; break;
        case 42: s->b.eos_id = v32; break;
        default: break;
        }
    }
    return 0;
}

static int read_normalizer(struct pb *r, struct sp_read *s)
{
    struct pb_field f;
    while (r->p < r->end) {
        int rc = pb_next(r, &f);
        if (rc)
            return rc;
        if (f.num == 2 && f.wire == 2 && f.len > 0)
            return bora_errf(r->err, -ENOTSUP, "%s: normalization rules (precompiled_charsmap) are not supported",
                             r->name);
        if (f.wire != 0)
            continue;
        if (f.num == 3) s->b.add_dummy_prefix = f.v != 0;
        else if (f.num == 4) s->b.remove_extra_ws = f.v != 0;
        else if (f.num == 5) s->b.escape_ws = f.v != 0;
    }
    return 0;
}

static int read_model(struct pb *r, struct sp_read *s)
{
    struct pb_field f;
    while (r->p < r->end) {
        int rc = pb_next(r, &f);
        if (rc)
            return rc;
        if (f.num < 1 || f.num > 3)
            continue;   /* a field this reader does not use */
        if (f.wire != 2)
            return pb_fail(r, "ModelProto field with the wrong wire type");
        struct pb sub = pb_sub(r, &f);
        if (f.num == 1) rc = read_piece(&sub, s);
        else if (f.num == 2) rc = read_trainer(&sub, s);
        else if (f.num == 3) rc = read_normalizer(&sub, s);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_special(struct sp_read *s, const char *name, struct bora_err *err)
{
    int32_t *ids[3] = { &s->b.unk_id, &s->b.bos_id, &s->b.eos_id };
    static const char *const what[3] = { "unk_id", "bos_id", "eos_id" };
    for (int k = 0; k < 3; k++) {
        if (*ids[k] < -1 || *ids[k] >= s->b.n)
            return bora_errf(err, -EINVAL, "%s: %s %d is outside the vocabulary of %d", name,
                             what[k], *ids[k], s->b.n);
    }
    if (s->b.unk_id < 0 || s->type[s->b.unk_id] != SP_UNKNOWN)
        return bora_errf(err, -EINVAL, "%s: unk_id %d is not an UNKNOWN piece", name, s->b.unk_id);
    return 0;
}

int sentencepiece_open(struct tokenizer **out, const uint8_t *buf, size_t len, const char *name,
                       struct bora_err *err)
{
    *out = NULL;
    struct sp_read s = { 0 };
    s.b.unk_id = 0; s.b.bos_id = 1; s.b.eos_id = 2;           /* TrainerSpec defaults */
    s.b.add_dummy_prefix = s.b.remove_extra_ws = s.b.escape_ws = true;   /* NormalizerSpec defaults */
    s.model_type = 1;                                          /* UNIGRAM */
    struct pb r = { buf, buf, buf + len, name, err, buf + len };
    int rc = read_model(&r, &s);
    if (rc)
        goto out;
    if (s.b.n == 0) {
        rc = bora_errf(err, -EINVAL, "%s: no pieces (not a SentencePiece model?)", name);
        goto out;
    }
    if (!s.has_trainer) {   /* pieces come first in the file: a cut between two of them */
        rc = bora_errf(err, -EINVAL, "%s: trainer_spec missing after %d pieces (truncated file?)",
                       name, s.b.n);
        goto out;
    }
    if (s.model_type != 2) {
        rc = bora_errf(err, -ENOTSUP, "%s: model_type %llu is not BPE (2)", name,
                       (unsigned long long)s.model_type);
        goto out;
    }
    if ((rc = check_special(&s, name, err)) != 0)
        goto out;
    s.b.piece = s.piece;
    s.b.len = s.len;
    s.b.score = s.score;
    s.b.type = s.type;
    rc = sp_tokenizer_create(out, &s.b, name, err);
out:
    free(s.piece);
    free(s.len);
    free(s.score);
    free(s.type);
    return rc;
}
