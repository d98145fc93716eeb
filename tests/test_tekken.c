/* test_tekken.c — the Tekken tokenizer against the reference cases (ids from js-tiktoken/tiktoken on
 * the NeMo vocabulary), hand-worked merges on tiny vocabularies, streaming detokenization, every
 * kind of broken tekken.json, and Tekken behind the tokenizer front with the v3/v7 chat formats
 * (checked against mistral-common's v3 token files of the chat samples). */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "model/tekken.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#define NEMO_JSON  "tests/data/tokenizers/tekken-nemo-240718.json"
#define NEMO_CASES "tests/data/tokenizers/cases/tekken_nemo_cases.json"
#define SP_V3      "tests/data/tokenizers/tokenizer.model.v3"
#define CHAT_DIR   "tests/data/chat-samples"
#define MAX_IDS    4096

struct fixture {
    struct tekken *tk;
    json_t *cases;   /* the "cases" array */
};

static int group_setup(void **state)
{
    static struct fixture f;
    struct bora_err err = { "" };
    if (tekken_open(&f.tk, NEMO_JSON, &err)) {
        fprintf(stderr, "test_tekken: %s\n", err.msg);
        return -1;
    }
    json_error_t je;
    json_t *root = json_load_file(NEMO_CASES, JSON_ALLOW_NUL, &je);
    if (!root) {
        fprintf(stderr, "test_tekken: %s: %s\n", NEMO_CASES, je.text);
        return -1;
    }
    f.cases = json_incref(json_object_get(root, "cases"));
    json_decref(root);
    *state = &f;
    return 0;
}

static int group_teardown(void **state)
{
    struct fixture *f = *state;
    if (!f)
        return 0;
    tekken_close(f->tk);
    json_decref(f->cases);
    return 0;
}

/* Copies a JSON array of integers into ids; returns its length. */
static size_t json_ids(json_t *arr, int32_t *ids, size_t cap)
{
    size_t n = json_array_size(arr);
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return n;
}

static long encode(struct tekken *tk, const char *text, size_t len, int32_t *ids)
{
    struct bora_err err = { "" };
    long n = tekken_encode(tk, text, len, ids, MAX_IDS, &err);
    if (n < 0)
        fail_msg("encode: %s", err.msg);
    assert_true(n <= MAX_IDS);
    return n;
}

/* ---- reference cases ------------------------------------------------------------------------- */

static void test_cases_encode(void **state)
{
    struct fixture *f = *state;
    size_t i, checked = 0;
    json_t *c;
    assert_true(json_array_size(f->cases) >= 75);
    json_array_foreach(f->cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t want[MAX_IDS], got[MAX_IDS], want_bos[MAX_IDS];
        size_t nw = json_ids(json_object_get(c, "ids"), want, MAX_IDS);
        size_t nb = json_ids(json_object_get(c, "ids_with_bos"), want_bos, MAX_IDS);
        long n = encode(f->tk, text, len, got);
        size_t d = 0;
        while (d < nw && d < (size_t)n && got[d] == want[d])
            d++;
        if ((size_t)n != nw || d != nw)
            fail_msg("case %s: %ld ids, want %zu; first difference at index %zu",
                     json_string_value(json_object_get(c, "name")), n, nw, d);
        /* BOS form: <s> then the same ids */
        assert_int_equal(nb, nw + 1);
        assert_int_equal(want_bos[0], tekken_bos_id(f->tk));
        assert_memory_equal(want_bos + 1, got, nw * sizeof *got);
        checked++;
    }
    assert_int_equal(checked, json_array_size(f->cases));
}

static void test_cases_decode(void **state)
{
    struct fixture *f = *state;
    size_t i;
    json_t *c;
    static char out[1 << 16];
    json_array_foreach(f->cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t ids[MAX_IDS];
        size_t n = json_ids(json_object_get(c, "ids_with_bos"), ids, MAX_IDS);
        struct bora_err err = { "" };
        long m = tekken_decode(f->tk, ids, n, 0, out, sizeof out, &err);
        assert_int_equal(m, (long)len);              /* <s> omitted */
        assert_memory_equal(out, text, len);
        m = tekken_decode(f->tk, ids, n, TEKKEN_DECODE_CONTROL, out, sizeof out, &err);
        assert_int_equal(m, (long)len + 3);          /* "<s>" written */
        assert_memory_equal(out, "<s>", 3);
    }
}

/* The streaming detokenizer gives the same text, only whole UTF-8 per push, and is actually
 * made to hold bytes by some case (tokens that end inside a sequence). */
static void test_cases_stream(void **state)
{
    struct fixture *f = *state;
    size_t i, held_somewhere = 0;
    json_t *c;
    static char out[1 << 16];
    char delta[1024];
    assert_true(tekken_detok_out_max(f->tk) <= sizeof delta);
    json_array_foreach(f->cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t ids[MAX_IDS];
        size_t n = json_ids(json_object_get(c, "ids_with_bos"), ids, MAX_IDS), o = 0;
        struct tekken_detok d;
        tekken_detok_init(&d, 0);
        for (size_t k = 0; k < n; k++) {
            long m = tekken_detok_push(f->tk, &d, ids[k], delta, sizeof delta, NULL);
            assert_true(m >= 0);
            held_somewhere += d.n_held > 0;
            /* every delta is valid UTF-8 on its own: decoding it again changes nothing */
            memcpy(out + o, delta, (size_t)m);
            o += (size_t)m;
        }
        long m = tekken_detok_flush(&d, out + o, sizeof out - o);
        assert_int_equal(m, 0);
        assert_int_equal(o, len);
        assert_memory_equal(out, text, len);
    }
    assert_true(held_somewhere > 0);
}

/* Both merge loops give the tiktoken answer on every case and on long generated words. */
static void test_merge_heap_equals_simple(void **state)
{
    struct fixture *f = *state;
    size_t i;
    json_t *c;
    static int32_t a[MAX_IDS], b[MAX_IDS];
    tekken_merge_threshold_set(f->tk, 0);          /* heap for every piece */
    json_array_foreach(f->cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int32_t want[MAX_IDS];
        size_t nw = json_ids(json_object_get(c, "ids"), want, MAX_IDS);
        assert_int_equal(encode(f->tk, text, len, a), (long)nw);
        assert_memory_equal(a, want, nw * sizeof *a);
    }
    char word[3000];
    uint64_t s = 12345;
    for (int round = 0; round < 20; round++) {
        size_t len = 100 + (size_t)round * 140;
        for (size_t k = 0; k < len; k++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            word[k] = "abcdeilnorstu"[s % (round % 2 ? 13 : 4)];
        }
        tekken_merge_threshold_set(f->tk, 0);
        long na = encode(f->tk, word, len, a);
        tekken_merge_threshold_set(f->tk, 1u << 20);   /* simple for every piece */
        long nb = encode(f->tk, word, len, b);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, (size_t)na * sizeof *a);
    }
    tekken_merge_threshold_set(f->tk, 48);
}

/* A 10,000-byte word must not take quadratic time (budget: well under a second; the
 * quadratic loop takes seconds on such input). */
static void test_long_word_fast(void **state)
{
    struct fixture *f = *state;
    enum { LEN = 10000 };
    static char word[LEN];
    static int32_t ids[LEN];
    uint64_t s = 99;
    for (size_t k = 0; k < LEN; k++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        word[k] = (char)('a' + s % 26);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct bora_err err;
    long n = tekken_encode(f->tk, word, LEN, ids, LEN, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(n > 0 && n < LEN);
    assert_true(ms < 200.0);
    /* and it decodes back */
    static char out[LEN];
    assert_int_equal(tekken_decode(f->tk, ids, (size_t)n, 0, out, LEN, &err), LEN);
    assert_memory_equal(out, word, LEN);
}

/* ---- invalid UTF-8, special tokens, whitespace ------------------------------------------------ */

static void test_invalid_utf8_bytewise(void **state)
{
    struct fixture *f = *state;
    const char text[] = "ab\xff" "cd\xc3(\xe2\x82";     /* 0xFF, a cut 2-byte and 3-byte seq */
    int32_t ids[64], ab[8], cd[8];
    long n = encode(f->tk, text, sizeof text - 1, ids);
    long nab = encode(f->tk, "ab", 2, ab), ncd = encode(f->tk, "cd", 2, cd);
    long nl = encode(f->tk, "(", 1, cd + 4);
    assert_int_equal(nl, 1);
    /* ab | 0xFF | cd | 0xC3 | ( | 0xE2 | 0x82: invalid bytes alone, byte id = byte + 1000 */
    assert_int_equal(n, nab + 1 + ncd + 1 + 1 + 2);
    assert_memory_equal(ids, ab, (size_t)nab * sizeof *ids);
    assert_int_equal(ids[nab], 0xFF + 1000);
    assert_memory_equal(ids + nab + 1, cd, (size_t)ncd * sizeof *ids);
    assert_int_equal(ids[nab + 1 + ncd], 0xC3 + 1000);
    assert_int_equal(ids[nab + 2 + ncd], cd[4]);
    assert_int_equal(ids[n - 2], 0xE2 + 1000);
    assert_int_equal(ids[n - 1], 0x82 + 1000);
    char out[64];
    assert_int_equal(tekken_decode(f->tk, ids, (size_t)n, TEKKEN_DECODE_RAW, out, sizeof out, NULL),
                     (long)sizeof text - 1);
    assert_memory_equal(out, text, sizeof text - 1);
    /* Python's errors="replace": one U+FFFD per maximal subpart (E2 82 is one) */
    const char want[] = "ab\xef\xbf\xbd" "cd\xef\xbf\xbd(\xef\xbf\xbd";
    assert_int_equal(tekken_decode(f->tk, ids, (size_t)n, 0, out, sizeof out, NULL),
                     (long)sizeof want - 1);
    assert_memory_equal(out, want, sizeof want - 1);
}

static void test_specials(void **state)
{
    struct fixture *f = *state;
    struct tekken *tk = f->tk;
    assert_int_equal(tekken_vocab_size(tk), 131072);
    assert_int_equal(tekken_num_special(tk), 1000);
    assert_int_equal(tekken_bos_id(tk), 1);
    assert_int_equal(tekken_eos_id(tk), 2);
    assert_int_equal(tekken_unk_id(tk), 0);
    assert_int_equal(tekken_special_find(tk, "[INST]"), 3);
    assert_int_equal(tekken_special_find(tk, "[/INST]"), 4);
    assert_int_equal(tekken_special_find(tk, "[TOOL_CALLS]"), 9);
    assert_int_equal(tekken_special_find(tk, "[SYSTEM_PROMPT]"), 17);
    assert_int_equal(tekken_special_find(tk, "[/SYSTEM_PROMPT]"), 18);
    assert_int_equal(tekken_special_find(tk, "<SPECIAL_999>"), 999);
    assert_int_equal(tekken_special_find(tk, "[NOPE]"), -ENOENT);
    assert_int_equal(tekken_token_is_special(tk, 3), 1);
    assert_int_equal(tekken_token_is_special(tk, 1000), 0);
    assert_int_equal(tekken_token_is_special(tk, 131072), -EINVAL);
    assert_int_equal(tekken_token_is_special(tk, -1), -EINVAL);
    assert_int_equal(tekken_token_is_control(tk, 17), 1);
    assert_int_equal(tekken_token_is_control(tk, 1500), 0);
    size_t len;
    const uint8_t *b = tekken_token_bytes(tk, 3, &len);
    assert_int_equal(len, 6);
    assert_memory_equal(b, "[INST]", 6);
    b = tekken_token_bytes(tk, 1000 + 'A', &len);     /* byte tokens: rank = byte */
    assert_int_equal(len, 1);
    assert_int_equal(b[0], 'A');
    assert_null(tekken_token_bytes(tk, 131072, &len));
    assert_string_equal(tekken_version(tk), "v3");
    /* "Hello, how are you?" from the data README */
    int32_t ids[16];
    const int32_t want[] = { 22177, 1044, 2606, 1584, 1636, 1063 };
    assert_int_equal(encode(tk, "Hello, how are you?", 19, ids), 6);
    assert_memory_equal(ids, want, sizeof want);
    /* an id out of range is an error naming it */
    struct bora_err err = { "" };
    int32_t bad[] = { 1000, 131072 };
    char out[16];
    assert_int_equal(tekken_decode(tk, bad, 2, 0, out, sizeof out, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "ids[1] = 131072"));
}

/* U+180E is not White_Space (tiktoken), though PCRE2's \s includes it: "\u180E\u180E!" is
 * one ` ?[^\s\p{L}\p{N}]+` piece, not three \s pieces. U+0085 is White_Space. */
static void test_whitespace_180e_0085(void **state)
{
    struct fixture *f = *state;
    size_t ends[8];
    const char mvs[] = "\xe1\xa0\x8e\xe1\xa0\x8e!";
    assert_int_equal(tekken_split(f->tk, mvs, sizeof mvs - 1, ends, 8, NULL), 1);
    assert_int_equal(ends[0], sizeof mvs - 1);
    /* "a\u0085\u0085b": \s+(?!\S) takes the first NEL; the letter alternative's optional
     * [^\r\n\p{L}\p{N}] prefix takes the second: a | NEL | NEL b */
    const char nel[] = "a\xc2\x85\xc2\x85" "b";
    assert_int_equal(tekken_split(f->tk, nel, sizeof nel - 1, ends, 8, NULL), 3);
    assert_int_equal(ends[0], 1);
    assert_int_equal(ends[1], 3);
    assert_int_equal(ends[2], 6);
    /* and "a\u0085\u0085" at the end: a | NEL NEL (one \s+ piece) */
    assert_int_equal(tekken_split(f->tk, nel, 5, ends, 8, NULL), 2);
    assert_int_equal(ends[1], 5);
}

static void test_stream_split_utf8(void **state)
{
    struct fixture *f = *state;
    /* "é" as two byte tokens, then "€" as three: nothing comes out until each is whole */
    char out[64];
    struct tekken_detok d;
    tekken_detok_init(&d, 0);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xC3, out, sizeof out, NULL), 0);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xA9, out, sizeof out, NULL), 2);
    assert_memory_equal(out, "\xc3\xa9", 2);
    /* a special token between the bytes ends the sequence, as mistral-common decodes runs of
     * ordinary tokens apart: U+FFFD, nothing for [INST], U+FFFD */
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xC3, out, sizeof out, NULL), 0);
    assert_int_equal(tekken_detok_push(f->tk, &d, 3, out, sizeof out, NULL), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xA9, out, sizeof out, NULL), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xE2, out, sizeof out, NULL), 0);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0x82, out, sizeof out, NULL), 0);
    /* too small a buffer: -ENOSPC and nothing lost */
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xAC, out, 2, NULL), -ENOSPC);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xAC, out, sizeof out, NULL), 3);
    assert_memory_equal(out, "\xe2\x82\xac", 3);
    /* an unfinished sequence broken by ASCII: U+FFFD then the letter */
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xF0, out, sizeof out, NULL), 0);
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 'x', out, sizeof out, NULL), 4);
    assert_memory_equal(out, "\xef\xbf\xbdx", 4);
    /* held at the end: flush gives U+FFFD */
    assert_int_equal(tekken_detok_push(f->tk, &d, 1000 + 0xE2, out, sizeof out, NULL), 0);
    assert_int_equal(tekken_detok_flush(&d, out, sizeof out), 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    /* control names on request */
    tekken_detok_init(&d, TEKKEN_DECODE_CONTROL);
    assert_int_equal(tekken_detok_push(f->tk, &d, 3, out, sizeof out, NULL), 6);
    assert_memory_equal(out, "[INST]", 6);
    assert_int_equal(tekken_detok_push(f->tk, &d, -5, out, sizeof out, NULL), -EINVAL);
}

/* ---- tiny vocabularies: hand-worked merges and broken files ----------------------------------- */

/* Builds a tekken.json text: 256 byte ranks then extra[] (ranks 256...), n_special specials
 * declared by default_num_special_tokens; pattern and a raw JSON fragment for special_tokens
 * (NULL: key left out). Caller frees. */
static char *tiny_json(const char *pattern, const char *const *extra, size_t n_extra,
                       int vocab_size, const char *specials, const char *vocab_tail)
{
    size_t cap = 64 * 1024;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t o = (size_t)snprintf(s, cap, "{\"config\":{\"pattern\":\"%s\",\"default_vocab_size\":%d,"
                                "\"default_num_special_tokens\":10,\"version\":\"v3\"},\"vocab\":[",
                                pattern, vocab_size);
    for (size_t r = 0; r < 256 + n_extra; r++) {
        unsigned char b = (unsigned char)r;
        const unsigned char *bin = r < 256 ? &b : (const unsigned char *)extra[r - 256];
        size_t blen = r < 256 ? 1 : strlen(extra[r - 256]);
        char b64[256];
        sodium_bin2base64(b64, sizeof b64, bin, blen, sodium_base64_VARIANT_ORIGINAL);
        o += (size_t)snprintf(s + o, cap - o, "%s{\"rank\":%zu,\"token_bytes\":\"%s\",\"token_str\":%s}",
                              r ? "," : "", r, b64, r % 2 ? "null" : "\"x\"");
    }
    o += (size_t)snprintf(s + o, cap - o, "%s]", vocab_tail ? vocab_tail : "");
    if (specials)
        o += (size_t)snprintf(s + o, cap - o, ",\"special_tokens\":%s", specials);
    snprintf(s + o, cap - o, "}");
    return s;
}

#define SIMPLE_PAT "[a-z]+|\\\\s+|[^a-z\\\\s]+"

static void test_tiny_merges(void **state)
{
    (void)state;
    /* ranks: ab 256, bc 257, abc 258, cd 259, "d" is byte 100 */
    const char *extra[] = { "ab", "bc", "abc", "cd" };
    char *js = tiny_json(SIMPLE_PAT, extra, 4, 10 + 260, NULL, NULL);
    struct tekken *tk;
    struct bora_err err = { "" };
    int rc = tekken_open_buffer(&tk, js, strlen(js), "tiny", &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(tekken_vocab_size(tk), 270);
    /* default specials when the list is left out */
    assert_int_equal(tekken_special_find(tk, "[INST]"), 3);
    assert_int_equal(tekken_special_find(tk, "<SPECIAL_9>"), -ENOENT);   /* 9 = [TOOL_CALLS] */
    assert_int_equal(tekken_special_find(tk, "[TOOL_CALLS]"), 9);
    int32_t ids[16];
    /* abcd: pairs ab=256 bc=257 cd=259 → ab first; then ab+c = abc 258 vs cd 259 → abc; d */
    assert_int_equal(tekken_encode(tk, "abcd", 4, ids, 16, &err), 2);
    assert_int_equal(ids[0], 10 + 258);
    assert_int_equal(ids[1], 10 + 'd');
    /* bcd: bc=257 < cd=259 → bc, d */
    assert_int_equal(tekken_encode(tk, "bcd", 3, ids, 16, &err), 2);
    assert_int_equal(ids[0], 10 + 257);
    assert_int_equal(ids[1], 10 + 'd');
    /* abab: ab(0) and ab(2) tie → leftmost first; both merge; no "abab" token */
    assert_int_equal(tekken_encode(tk, "abab", 4, ids, 16, &err), 2);
    assert_int_equal(ids[0], 10 + 256);
    assert_int_equal(ids[1], 10 + 256);
    /* cap smaller than the result: total returned, first cap written */
    ids[1] = -7;
    assert_int_equal(tekken_encode(tk, "ab cd", 5, ids, 1, &err), 3);
    assert_int_equal(ids[0], 10 + 256);
    assert_int_equal(ids[1], -7);
    /* the heap merge agrees on a long word */
    char w[600];
    for (int i = 0; i < 600; i++)
        w[i] = "abcd"[(i * 7 + i / 3) % 4];
    int32_t a[600], b[600];
    long na = tekken_encode(tk, w, 600, a, 600, &err);
    tekken_merge_threshold_set(tk, 0);
    long nb = tekken_encode(tk, w, 600, b, 600, &err);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, (size_t)na * sizeof *a);
    tekken_close(tk);
    free(js);
}

static void test_vocab_cut(void **state)
{
    (void)state;
    /* 4 extra ranks in the file but default_vocab_size leaves room for 2 (ab, bc): abc
     * (rank 258) must never be produced. */
    const char *extra[] = { "ab", "bc", "abc", "cd" };
    char *js = tiny_json(SIMPLE_PAT, extra, 4, 10 + 258, "[{\"rank\":0,\"token_str\":\"<unk>\","
                         "\"is_control\":true},{\"rank\":1,\"token_str\":\"<s>\",\"is_control\":true},"
                         "{\"rank\":2,\"token_str\":\"</s>\",\"is_control\":true}]", NULL);
    struct tekken *tk;
    struct bora_err err = { "" };
    int rc = tekken_open_buffer(&tk, js, strlen(js), "tiny", &err);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(tekken_vocab_size(tk), 268);
    assert_int_equal(tekken_special_find(tk, "[INST]"), -ENOENT);
    assert_int_equal(tekken_special_find(tk, "<SPECIAL_3>"), 3);
    int32_t ids[8];
    assert_int_equal(tekken_encode(tk, "abc", 3, ids, 8, &err), 2);   /* ab, c */
    assert_int_equal(ids[0], 10 + 256);
    assert_int_equal(ids[1], 10 + 'c');
    tekken_close(tk);
    free(js);
}

/* Opens js and expects -EINVAL with a message containing want. */
static void expect_bad(const char *js, size_t len, const char *want)
{
    struct tekken *tk = (struct tekken *)1;
    struct bora_err err = { "" };
    int rc = tekken_open_buffer(&tk, js, len, "bad.json", &err);
    if (rc != -EINVAL || !strstr(err.msg, want) || !strstr(err.msg, "bad.json"))
        fail_msg("want -EINVAL with \"%s\", got %d \"%s\"", want, rc, err.msg);
    assert_null(tk);
}

static void test_bad_files(void **state)
{
    (void)state;
    const char *extra[] = { "ab", "bc" };
    char *js = tiny_json(SIMPLE_PAT, extra, 2, 268, NULL, NULL);
    expect_bad(js, strlen(js) / 2, "JSON error");                          /* truncated */
    free(js);
    js = tiny_json(SIMPLE_PAT, extra, 2, 268, NULL, NULL);
    char *p = strstr(js, "\"rank\":257");                                   /* duplicate rank */
    memcpy(p, "\"rank\":256", 10);
    expect_bad(js, strlen(js), "duplicate rank 256");
    free(js);
    js = tiny_json(SIMPLE_PAT, extra, 2, 268, NULL, NULL);
    p = strstr(js, "\"token_bytes\":\"YWI=\"");                              /* "ab" */
    assert_non_null(p);
    memcpy(p + 15, "Y*I=", 4);
    expect_bad(js, strlen(js), "not valid base64");
    free(js);
    js = tiny_json("[a-z", extra, 2, 268, NULL, NULL);                      /* bad pattern */
    expect_bad(js, strlen(js), "rejected by PCRE2");
    free(js);
    js = tiny_json(SIMPLE_PAT, extra, 2, 269, NULL, NULL);                  /* too few entries */
    expect_bad(js, strlen(js), "vocab has 258 entries");
    free(js);
    js = tiny_json(SIMPLE_PAT, extra, 2, 268, NULL, NULL);                  /* rank 65 ≠ 'A' */
    p = strstr(js, "\"token_bytes\":\"QQ==\"");
    memcpy(p + 15, "Qg==", 4);
    expect_bad(js, strlen(js), "rank 65 must be the single byte 0x41");
    free(js);
    const char *dup[] = { "ab", "ab" };
    js = tiny_json(SIMPLE_PAT, dup, 2, 268, NULL, NULL);                    /* same bytes twice */
    expect_bad(js, strlen(js), "ranks 256 and 257 have the same token bytes");
    free(js);
    js = tiny_json(SIMPLE_PAT, extra, 2, 268, "[{\"rank\":12,\"token_str\":\"<x>\"}]", NULL);
    expect_bad(js, strlen(js), "special_tokens[0]: rank 12 out of range");
    free(js);
    js = tiny_json(SIMPLE_PAT, extra, 2, 268, "[{\"rank\":1,\"token_str\":\"<s>\"},"
                   "{\"rank\":2,\"token_str\":\"<s>\"}]", NULL);
    expect_bad(js, strlen(js), "special token \"<s>\" listed twice");
    free(js);
    const char *small[][2] = {
        { "{\"vocab\":[]}", "\"config\" missing" },
        { "{\"config\":{\"pattern\":\"x\"},\"vocab\":[]}", "default_vocab_size missing" },
        { "{\"config\":{\"pattern\":\"x\"},\"vocab\":{}}", "\"vocab\" missing or not an array" },
        { "{\"config\":{\"pattern\":1},\"vocab\":[]}", "config.pattern missing" },
        { "{\"config\":{\"pattern\":\"x\",\"default_vocab_size\":100},\"vocab\":[]}",
          "default_vocab_size = 100 out of range" },
        { "[1,2", "JSON error" },
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++)
        expect_bad(small[i][0], strlen(small[i][0]), small[i][1]);
    /* missing file */
    struct tekken *tk;
    struct bora_err err = { "" };
    assert_int_equal(tekken_open(&tk, "tests/data/tokenizers/no-such-tekken.json", &err), -ENOENT);
    assert_non_null(strstr(err.msg, "no-such-tekken.json"));
}

/* ---- behind the tokenizer front ----------------------------------------------------------------- */

static void test_front_cases(void **state)
{
    struct fixture *f = *state;
    struct tokenizer *t;
    struct bora_err err = { "" };
    if (tokenizer_open(&t, NEMO_JSON, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(tokenizer_vocab_size(t), 131072);
    assert_int_equal(tokenizer_bos_id(t), 1);
    assert_int_equal(tokenizer_eos_id(t), 2);
    size_t i;
    json_t *c;
    static char out[1 << 16];
    json_array_foreach(f->cases, i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text")), n, m;
        int32_t want[MAX_IDS], got[MAX_IDS];
        size_t nw = json_ids(json_object_get(c, "ids_with_bos"), want, MAX_IDS);
        assert_int_equal(tokenizer_encode(t, text, len, true, got, MAX_IDS, &n, &err), 0);
        assert_int_equal(n, nw);
        assert_memory_equal(got, want, nw * sizeof *got);
        assert_int_equal(tokenizer_decode(t, got, n, out, sizeof out, &m), 0);
        assert_int_equal(m, len);
        assert_memory_equal(out, text, len);
        struct detok d;                       /* the front's streaming detokenizer */
        detok_init(&d, t);
        size_t o = 0;
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(detok_push(&d, got[k], out + o, sizeof out - o, &m), 0);
            o += m;
        }
        assert_int_equal(detok_flush(&d, out + o, sizeof out - o, &m), 0);
        assert_int_equal(o + m, len);
        assert_memory_equal(out, text, len);
    }
    /* a control token ends an unfinished UTF-8 sequence (mistral-common decodes the runs of
     * ordinary tokens apart): é split by [INST] is two U+FFFD */
    const int32_t split[] = { 1000 + 0xC3, 3, 1000 + 0xA9 };
    size_t m;
    assert_int_equal(tokenizer_decode(t, split, 3, out, sizeof out, &m), 0);
    assert_int_equal(m, 6);
    assert_memory_equal(out, "\xef\xbf\xbd\xef\xbf\xbd", 6);
    /* -ENOSPC with the size needed */
    size_t n;
    int32_t one[1];
    assert_int_equal(tokenizer_encode(t, "Hello world!", 12, true, one, 1, &n, &err), -ENOSPC);
    assert_int_equal(n, 4);
    tokenizer_close(t);
}

static void test_front_model_dir(void **state)
{
    (void)state;
    char dir[] = "/tmp/bora-tekken-XXXXXX", link[64], target[4096];
    assert_non_null(mkdtemp(dir));
    assert_non_null(realpath(NEMO_JSON, target));
    snprintf(link, sizeof link, "%s/tekken.json", dir);
    assert_int_equal(symlink(target, link), 0);
    struct tokenizer *t;
    struct bora_err err = { "" };
    int rc = tokenizer_open(&t, dir, &err);
    unlink(link);
    rmdir(dir);
    if (rc)
        fail_msg("%s", err.msg);
    assert_int_equal(tokenizer_piece_id(t, "[INST]"), 3);
    assert_int_equal(tokenizer_piece_id(t, "[SYSTEM_PROMPT]"), 17);
    assert_true(tokenizer_is_control(t, 17));
    assert_true(tokenizer_is_control(t, 999));
    assert_false(tokenizer_is_control(t, 1000));
    size_t len;
    const char *p = tokenizer_piece(t, 1000 + 'A', &len);
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 'A');
    tokenizer_close(t);
}

/* A published tekken.json carries token_str values such as "model": still Tekken, not HF. */
static void test_front_detects_tekken(void **state)
{
    (void)state;
    const char *extra[] = { "ab", "bc" };
    char *js = tiny_json(SIMPLE_PAT, extra, 2, 268, NULL, NULL);
    char *p = strstr(js, "\"token_str\":\"x\"");
    assert_non_null(p);
    size_t len = strlen(js);
    memmove(p + 19, p + 15, len - (size_t)(p + 15 - js) + 1);    /* "x" → "model" */
    memcpy(p + 12, "\"model\"", 7);
    struct tokenizer *t;
    struct bora_err err = { "" };
    if (tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "tiny.json", &err))
        fail_msg("%s", err.msg);
    size_t n;
    int32_t ids[4];
    assert_int_equal(tokenizer_encode(t, "ab", 2, false, ids, 4, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 10 + 256);
    tokenizer_close(t);
    free(js);
    /* a broken Tekken file reports the Tekken problem */
    js = tiny_json(SIMPLE_PAT, extra, 2, 400, NULL, NULL);
    assert_int_equal(tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "short.json", &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "vocab has 258 entries"));
    free(js);
}

/* ---- chat formats ------------------------------------------------------------------------------ */

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

/* One element of a reference conversation: a control token (by name) or a text. */
struct seg {
    char name[32];       /* control token name, or "" for text */
    char *text;
    size_t len;
};

/* Splits mistral-common's v3 ids (SentencePiece vocabulary) into control tokens and texts. */
static size_t ref_segments(struct tokenizer *sp, const int32_t *ids, size_t n, struct seg *seg)
{
    size_t ns = 0, a = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && !tokenizer_is_control(sp, ids[i]))
            continue;
        if (i > a) {                                      /* text ids[a..i) */
            size_t m;
            char *t = malloc(1 << 16);
            assert_int_equal(tokenizer_decode(sp, ids + a, i - a, t, 1 << 16, &m), 0);
            seg[ns++] = (struct seg){ "", t, m };
        }
        if (i < n) {
            size_t l;
            const char *p = tokenizer_piece(sp, ids[i], &l);
            assert_true(l < sizeof seg[ns].name);
            seg[ns] = (struct seg){ "", NULL, 0 };
            memcpy(seg[ns].name, p, l);
            seg[ns++].name[l] = 0;
        }
        a = i + 1;
    }
    return ns;
}

/* The ids the segments make with Tekken: control tokens by name, texts encoded as they are. */
static size_t segments_encode(struct tokenizer *tk, const struct seg *seg, size_t ns, int32_t *ids)
{
    size_t n = 0, m;
    struct bora_err err;
    for (size_t i = 0; i < ns; i++) {
        if (seg[i].name[0]) {
            int32_t id = tokenizer_piece_id(tk, seg[i].name);
            assert_true(id >= 0 && tokenizer_is_control(tk, id));
            ids[n++] = id;
        } else {
            assert_int_equal(tokenizer_encode(tk, seg[i].text, seg[i].len, false, ids + n,
                                              MAX_IDS - n, &m, &err), 0);
            n += m;
        }
    }
    return n;
}

/* What a sample's messages hold for the v7 layout: system texts, tool call ids and results. */
struct sample_info {
    char sys_joined[4096];   /* system texts joined by "\n\n" (v3 puts it before the last user) */
    size_t sys_len;
    const char *sys[8], *tool_id[8], *tool_raw[8];
    size_t n_sys, n_tool;
    json_t *root;
};

static void sample_info_load(struct sample_info *si, const char *json)
{
    memset(si, 0, sizeof *si);
    si->root = json_loads(json, 0, NULL);
    assert_non_null(si->root);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(si->root, "messages"), i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        const char *c = json_string_value(json_object_get(m, "content"));
        if (!strcmp(role, "system")) {
            assert_true(si->n_sys < 8);
            si->sys[si->n_sys++] = c;
            si->sys_len += (size_t)snprintf(si->sys_joined + si->sys_len,
                                            sizeof si->sys_joined - si->sys_len, "%s%s",
                                            si->sys_len ? "\n\n" : "", c);
        } else if (!strcmp(role, "tool")) {
            assert_true(si->n_tool < 8);
            si->tool_id[si->n_tool] = json_string_value(json_object_get(m, "tool_call_id"));
            si->tool_raw[si->n_tool++] = c;
        }
    }
}

static struct seg seg_text(const char *s, size_t n)
{
    struct seg g = { "", malloc(n + 1), n };
    memcpy(g.text, s, n);
    return g;
}

static struct seg seg_ctl(const char *name)
{
    struct seg g = { "", NULL, 0 };
    snprintf(g.name, sizeof g.name, "%s", name);
    return g;
}

/* Turns mistral-common's v3 layout into the v7 one: each system message as [SYSTEM_PROMPT] text
 * [/SYSTEM_PROMPT] right after <s> (where the samples have them) and no longer before the last
 * user text; each tool result as [TOOL_RESULTS] call id [TOOL_CONTENT] content as given
 * [/TOOL_RESULTS] instead of the v3 JSON. Takes over seg's texts; returns the new count. */
static size_t segments_to_v7(const struct seg *seg, size_t ns, const struct sample_info *si,
                             struct seg *out)
{
    size_t no = 0, stripped = 0, tool = 0;
    assert_string_equal(seg[0].name, "<s>");
    out[no++] = seg[0];
    for (size_t k = 0; k < si->n_sys; k++) {
        out[no++] = seg_ctl("[SYSTEM_PROMPT]");
        out[no++] = seg_text(si->sys[k], strlen(si->sys[k]));
        out[no++] = seg_ctl("[/SYSTEM_PROMPT]");
    }
    for (size_t i = 1; i < ns; i++) {
        struct seg g = seg[i];
        if (!g.name[0] && !strcmp(seg[i - 1].name, "[INST]") && si->sys_len &&
            g.len >= si->sys_len + 2 && !memcmp(g.text, si->sys_joined, si->sys_len) &&
            !memcmp(g.text + si->sys_len, "\n\n", 2)) {
            memmove(g.text, g.text + si->sys_len + 2, g.len - si->sys_len - 2);
            g.len -= si->sys_len + 2;
            stripped++;
        }
        if (!g.name[0] && !strcmp(seg[i - 1].name, "[TOOL_RESULTS]")) {
            assert_true(tool < si->n_tool);
            free(g.text);
            out[no++] = seg_text(si->tool_id[tool], strlen(si->tool_id[tool]));
            out[no++] = seg_ctl("[TOOL_CONTENT]");
            g = seg_text(si->tool_raw[tool], strlen(si->tool_raw[tool]));
            tool++;
        }
        out[no++] = g;
    }
    assert_int_equal(stripped, si->sys_len ? 1 : 0);
    assert_int_equal(tool, si->n_tool);
    return no;
}

/* chat_encode_request_json on every chat sample with tekken.json (version v3 as shipped, or
 * patched to v7) equals mistral-common's v3 layout re-encoded with Tekken (v7: transformed). */
static void check_chat_samples(bool v7)
{
    size_t jlen;
    char *tj = read_file(NEMO_JSON, &jlen);
    if (v7) {
        char *v = strstr(tj, "\"version\":\"v3\"");
        assert_non_null(v);
        v[12] = '7';
    }
    struct tokenizer *tk, *sp;
    struct bora_err err = { "" };
    if (tokenizer_open_mem(&tk, (const uint8_t *)tj, jlen, v7 ? "tekken-v7.json" : NEMO_JSON, &err))
        fail_msg("%s", err.msg);
    free(tj);
    if (tokenizer_open(&sp, SP_V3, &err))
        fail_msg("%s", err.msg);
    static const char *const samples[] = {
        "get_weather_full", "get_weather_no_history", "get_weather_no_system_prompt", "no_tools",
    };
    size_t with_system = 0, with_tools = 0;
    for (size_t s = 0; s < BORA_ARRAY_LEN(samples); s++) {
        char path[256];
        size_t len;
        snprintf(path, sizeof path, CHAT_DIR "/%s/sample.json", samples[s]);
        char *req = read_file(path, &len);
        snprintf(path, sizeof path, CHAT_DIR "/%s/tokens_v3.json", samples[s]);
        json_t *tok = json_load_file(path, 0, NULL);
        static int32_t ref[MAX_IDS], want[MAX_IDS], got[MAX_IDS];
        static struct seg seg3[512], seg7[1024];
        size_t nr = json_ids(json_object_get(tok, "tokens"), ref, MAX_IDS);
        size_t ns = ref_segments(sp, ref, nr, seg3);
        struct seg *seg = seg3;
        struct sample_info si;
        sample_info_load(&si, req);
        with_system += si.n_sys > 0;
        with_tools += si.n_tool > 0;
        if (v7) {
            ns = segments_to_v7(seg3, ns, &si, seg7);
            seg = seg7;
        }
        size_t nw = segments_encode(tk, seg, ns, want), ng;
        int rc = chat_encode_request_json(tk, req, len, got, MAX_IDS, &ng, &err);
        if (rc)
            fail_msg("%s: %s", samples[s], err.msg);
        size_t d = 0;
        while (d < nw && d < ng && got[d] == want[d])
            d++;
        if (ng != nw || d != nw)
            fail_msg("%s (%s): %zu ids, want %zu; first difference at %zu", samples[s],
                     v7 ? "v7" : "v3", ng, nw, d);
        for (size_t i = 0; i < ns; i++)
            free(seg[i].text);
        json_decref(si.root);
        json_decref(tok);
        free(req);
    }
    assert_true(with_system >= 2);
    assert_true(with_tools >= 2);
    tokenizer_close(sp);
    tokenizer_close(tk);
}

static void test_chat_tekken_v3(void **state)
{
    (void)state;
    check_chat_samples(false);
}

static void test_chat_tekken_v7(void **state)
{
    (void)state;
    check_chat_samples(true);
}

/* Appends Tekken ids: a control token by name, or the encoding of a text. */
static void want_ctl(struct tokenizer *t, int32_t *w, size_t *n, const char *name)
{
    w[(*n)++] = tokenizer_piece_id(t, name);
    assert_true(w[*n - 1] >= 0);
}

static void want_text(struct tokenizer *t, int32_t *w, size_t *n, const char *s)
{
    size_t k;
    struct bora_err err;
    assert_int_equal(tokenizer_encode(t, s, strlen(s), false, w + *n, 256 - *n, &k, &err), 0);
    *n += k;
}

static struct tokenizer *open_v7(void)
{
    size_t jlen;
    char *tj = read_file(NEMO_JSON, &jlen);
    strstr(tj, "\"version\":\"v3\"")[12] = '7';
    struct tokenizer *t;
    struct bora_err err = { "" };
    if (tokenizer_open_mem(&t, (const uint8_t *)tj, jlen, "tekken-v7.json", &err))
        fail_msg("%s", err.msg);
    free(tj);
    return t;
}

/* v7 with the message API, token by token from the stated layout:
 * <s>[SYSTEM_PROMPT]sys[/SYSTEM_PROMPT]…[INST]user[/INST]assistant</s>[INST]user2[/INST] */
static void test_chat_v7_messages(void **state)
{
    (void)state;
    struct tokenizer *t = open_v7();
    const struct chat_message m[] = {
        { CHAT_ROLE_SYSTEM, "Be brief.", 9 },
        { CHAT_ROLE_SYSTEM, "Answer in French.", 17 },
        { CHAT_ROLE_USER, "Hello, how are you?", 19 },
        { CHAT_ROLE_ASSISTANT, "Fine.  ", 7 },          /* trailing spaces are stripped */
        { CHAT_ROLE_USER, "Bye", 3 },
    };
    int32_t got[256], want[256];
    size_t ng, nw = 0;
    struct bora_err err = { "" };
    assert_int_equal(chat_encode_messages(t, m, 5, got, 256, &ng, &err), 0);
    want[nw++] = 1;
    want_ctl(t, want, &nw, "[SYSTEM_PROMPT]");
    want_text(t, want, &nw, "Be brief.");
    want_ctl(t, want, &nw, "[/SYSTEM_PROMPT]");
    want_ctl(t, want, &nw, "[SYSTEM_PROMPT]");
    want_text(t, want, &nw, "Answer in French.");
    want_ctl(t, want, &nw, "[/SYSTEM_PROMPT]");
    want_ctl(t, want, &nw, "[INST]");
    want_text(t, want, &nw, "Hello, how are you?");
    want_ctl(t, want, &nw, "[/INST]");
    want_text(t, want, &nw, "Fine.");
    want[nw++] = 2;
    want_ctl(t, want, &nw, "[INST]");
    want_text(t, want, &nw, "Bye");
    want_ctl(t, want, &nw, "[/INST]");
    assert_int_equal(want[1], 17);
    assert_int_equal(ng, nw);
    assert_memory_equal(got, want, nw * sizeof *got);
    tokenizer_close(t);
}

/* v7 allows text and tool calls in one assistant message: text, [TOOL_CALLS] JSON, </s>;
 * a tool result is [TOOL_RESULTS] id [TOOL_CONTENT] content [/TOOL_RESULTS]. */
static void test_chat_v7_request(void **state)
{
    (void)state;
    struct tokenizer *t = open_v7();
    const char *req = "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},"
        "{\"role\":\"assistant\",\"content\":\"Let me check. \",\"tool_calls\":[{\"id\":\"abc123def\","
        "\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"abc123def\",\"content\":\"{\\\"t\\\":22}\"}]}";
    int32_t got[256], want[256];
    size_t ng, nw = 0;
    struct bora_err err = { "" };
    if (chat_encode_request_json(t, req, strlen(req), got, 256, &ng, &err))
        fail_msg("%s", err.msg);
    want[nw++] = 1;
    want_ctl(t, want, &nw, "[INST]");
    want_text(t, want, &nw, "Weather?");
    want_ctl(t, want, &nw, "[/INST]");
    want_text(t, want, &nw, "Let me check.");
    want_ctl(t, want, &nw, "[TOOL_CALLS]");
    want_text(t, want, &nw, "[{\"name\": \"get\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abc123def\"}]");
    want[nw++] = 2;
    want_ctl(t, want, &nw, "[TOOL_RESULTS]");
    want_text(t, want, &nw, "abc123def");
    want_ctl(t, want, &nw, "[TOOL_CONTENT]");
    want_text(t, want, &nw, "{\"t\":22}");
    want_ctl(t, want, &nw, "[/TOOL_RESULTS]");
    assert_int_equal(ng, nw);
    assert_memory_equal(got, want, nw * sizeof *got);
    tokenizer_close(t);
    /* the same request is refused with the v3 layout (NeMo as shipped): content + tool_calls */
    if (tokenizer_open(&t, NEMO_JSON, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(chat_encode_request_json(t, req, strlen(req), got, 256, &ng, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "not both"));
    tokenizer_close(t);
}

/* ---- bad input behind the front ------------------------------------------------------------- */

/* D9: a file named *.json is JSON whatever its first byte (a UTF-8 BOM is skipped), and an empty
 * tokenizer file is "empty file", naming it. */
static void test_front_json_name_bom_empty(void **state)
{
    (void)state;
    size_t len;
    char *nemo = read_file(NEMO_JSON, &len);
    char *bom = malloc(len + 3);
    assert_non_null(bom);
    memcpy(bom, "\xEF\xBB\xBF", 3);
    memcpy(bom + 3, nemo, len);
    free(nemo);
    struct tokenizer *t;
    struct bora_err err = { "" };
    if (tokenizer_open_mem(&t, (const uint8_t *)bom, len + 3, "m/tekken.json", &err))
        fail_msg("%s", err.msg);
    static const int32_t hello[] = { 1, 22177, 1044, 2606, 1584, 1636, 1063 };
    int32_t ids[16];
    size_t n;
    assert_int_equal(tokenizer_encode(t, "Hello, how are you?", 19, true, ids, 16, &n, &err), 0);
    assert_int_equal(n, 7);
    assert_memory_equal(ids, hello, sizeof hello);
    tokenizer_close(t);
    struct tekken *tk;                              /* tekken.h skips it too */
    if (tekken_open_buffer(&tk, bom, len + 3, "bom.json", &err))
        fail_msg("%s", err.msg);
    tekken_close(tk);
    free(bom);
    /* not sniffed as protobuf: the JSON parser reports it */
    t = (struct tokenizer *)1;
    assert_int_equal(tokenizer_open_mem(&t, (const uint8_t *)"\x0a\x02\x0a\x00", 4, "x/tekken.json", &err),
                     -EINVAL);
    assert_null(t);
    if (!strstr(err.msg, "x/tekken.json") || !strstr(err.msg, "JSON"))
        fail_msg("%s", err.msg);
    /* an empty tekken.json in a model directory */
    char dir[] = "/tmp/bora-tekken-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tekken.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    int rc = tokenizer_open(&t, dir, &err);
    unlink(path);
    rmdir(dir);
    assert_int_equal(rc, -EINVAL);
    if (!strstr(err.msg, "tekken.json: empty file"))
        fail_msg("%s", err.msg);
}

/* D12: the front needs <s>, </s>, [INST] and [/INST]; a tekken.json without one is refused
 * (the real file with one special token renamed). tekken.h itself still opens it. */
static void test_front_needs_specials(void **state)
{
    (void)state;
    size_t len;
    char *nemo = read_file(NEMO_JSON, &len);
    const char *names[][2] = {
        { "\"token_str\":\"<s>\"", "\"<s>\"" }, { "\"token_str\":\"</s>\"", "\"</s>\"" },
        { "\"token_str\":\"[INST]\"", "\"[INST]\"" }, { "\"token_str\":\"[/INST]\"", "\"[/INST]\"" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = strstr(nemo, names[i][0]);
        assert_non_null(p);
        p[13] = 'X';                                 /* "<s>" → "Xs>", "[INST]" → "XINST]", ... */
        struct tokenizer *t = (struct tokenizer *)1;
        struct bora_err err = { "" };
        int rc = tokenizer_open_mem(&t, (const uint8_t *)nemo, len, "nobos/tekken.json", &err);
        if (rc != -EINVAL || !strstr(err.msg, "nobos/tekken.json") || !strstr(err.msg, names[i][1]))
            fail_msg("%s: got %d '%s'", names[i][1], rc, err.msg);
        assert_null(t);
        struct tekken *tk;
        if (tekken_open_buffer(&tk, nemo, len, "nobos.json", &err))
            fail_msg("%s", err.msg);
        tekken_close(tk);
        p[13] = names[i][0][13];
    }
    free(nemo);
}

/* A piece that could stream more than DETOK_MAX_DELTA bytes in one token's text (each non-ASCII
 * byte may become a 3-byte U+FFFD, and up to 3 held bytes come first: 9 + 3 × 82 = 255 fits,
 * 83 do not) is refused at load, naming the file and the token; one of 82 loads and streams. */
static void test_piece_too_long_to_stream(void **state)
{
    (void)state;
    size_t len;
    char *nemo = read_file(NEMO_JSON, &len);
    const char *key = "\"rank\":100000,\"token_bytes\":\"";
    char *p = strstr(nemo, key);
    assert_non_null(p);
    p += strlen(key);
    char *q = strchr(p, '"');
    assert_non_null(q);
    for (int nb = 82; nb <= 83; nb++) {
        unsigned char bin[83];
        memset(bin, 0xA9, sizeof bin);   /* continuation bytes: each alone is invalid UTF-8 */
        char b64[160];
        sodium_bin2base64(b64, sizeof b64, bin, (size_t)nb, sodium_base64_VARIANT_ORIGINAL);
        size_t n2 = (size_t)(p - nemo) + strlen(b64) + (len - (size_t)(q - nemo));
        char *j = malloc(n2);
        assert_non_null(j);
        memcpy(j, nemo, (size_t)(p - nemo));
        memcpy(j + (p - nemo), b64, strlen(b64));
        memcpy(j + (p - nemo) + strlen(b64), q, len - (size_t)(q - nemo));
        struct tokenizer *t = NULL;
        struct bora_err err = { "" };
        int rc = tokenizer_open_mem(&t, (const uint8_t *)j, n2, "long/tekken.json", &err);
        if (nb == 82) {
            if (rc)
                fail_msg("82 bytes: %s", err.msg);
            /* token 101,000 (rank 100,000 after 1,000 specials) after a held 0xED (a lead byte
             * that 0xA9 cannot continue) streams as 83 × U+FFFD: 249 bytes, within DETOK_MAX_DELTA */
            struct detok d;
            detok_init(&d, t);
            char out[DETOK_MAX_DELTA];
            size_t n = 0;
            const int32_t lead = 1000 + 0xED;
            assert_int_equal(detok_push(&d, lead, out, sizeof out, &n), 0);
            assert_int_equal(n, 0);
            assert_int_equal(detok_push(&d, 101000, out, sizeof out, &n), 0);
            assert_int_equal(n, 3 * 83);
            tokenizer_close(t);
        } else {
            if (rc != -EMSGSIZE || !strstr(err.msg, "long/tekken.json") || !strstr(err.msg, "token 101000"))
                fail_msg("83 bytes: got %d '%s'", rc, err.msg);
            assert_null(t);
        }
        free(j);
    }
    free(nemo);
}

/* D18: a pattern that is empty or can match the empty string is refused at load; a pattern
 * that exceeds PCRE2's match limit fails at encode time with a message naming the file. */
static void test_pattern_checks(void **state)
{
    (void)state;
    const char *extra[] = { "ab", "bc" };
    const char *empty[][2] = {
        { "", "config.pattern is empty" }, { "a*", "can match the empty string" },
        { "(?<=a)", "can match the empty string" }, { "x|", "can match the empty string" },
    };
    for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
        char *js = tiny_json(empty[i][0], extra, 2, 268, NULL, NULL);
        expect_bad(js, strlen(js), empty[i][1]);
        free(js);
    }
    char *js = tiny_json("(a+)+$", extra, 2, 268, NULL, NULL);
    struct tokenizer *t;
    struct bora_err err = { "" };
    if (tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "slow/tekken.json", &err))
        fail_msg("%s", err.msg);
    char text[64];
    memset(text, 'a', 40);
    text[40] = '!';
    int32_t ids[64];
    size_t n;
    assert_int_equal(tokenizer_encode(t, text, 41, false, ids, 64, &n, &err), -EIO);
    if (!strstr(err.msg, "slow/tekken.json: pre-tokenizer failed") || !strstr(err.msg, "limit"))
        fail_msg("%s", err.msg);
    tokenizer_close(t);
    free(js);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_encode),
        cmocka_unit_test(test_cases_decode),
        cmocka_unit_test(test_cases_stream),
        cmocka_unit_test(test_merge_heap_equals_simple),
        cmocka_unit_test(test_long_word_fast),
        cmocka_unit_test(test_invalid_utf8_bytewise),
        cmocka_unit_test(test_specials),
        cmocka_unit_test(test_whitespace_180e_0085),
        cmocka_unit_test(test_stream_split_utf8),
        cmocka_unit_test(test_tiny_merges),
        cmocka_unit_test(test_vocab_cut),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_front_cases),
        cmocka_unit_test(test_front_model_dir),
        cmocka_unit_test(test_front_detects_tekken),
        cmocka_unit_test(test_chat_tekken_v3),
        cmocka_unit_test(test_chat_tekken_v7),
        cmocka_unit_test(test_chat_v7_messages),
        cmocka_unit_test(test_chat_v7_request),
        cmocka_unit_test(test_front_json_name_bom_empty),
        cmocka_unit_test(test_front_needs_specials),
        cmocka_unit_test(test_piece_too_long_to_stream),
        cmocka_unit_test(test_pattern_checks),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
