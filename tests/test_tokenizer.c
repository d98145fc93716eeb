/* test_tokenizer.c — SentencePiece BPE against the ids the real sentencepiece library produced
 * (tests/data/tokenizers/cases), decoding and the streaming detokenizer, the HF tokenizer.json
 * loader, a hand-built .model with hand-computed encodings, and bad input of every kind. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "model/sentencepiece.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#define TOK_DIR "tests/data/tokenizers"
#define V1_PATH TOK_DIR "/tokenizer.model.v1"
#define V3_PATH TOK_DIR "/tokenizer.model.v3"
#define MAX_IDS 4096

static struct tokenizer *open_ok(const char *path)
{
    struct tokenizer *t = NULL;
    struct bora_err err = { "" };
    int rc = tokenizer_open(&t, path, &err);
    if (rc)
        fail_msg("%s: %s", path, err.msg);
    return t;
}

static json_t *load_cases(const char *v)
{
    char path[256];
    snprintf(path, sizeof path, TOK_DIR "/cases/mistral_%s_cases.json", v);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!root)
        fail_msg("%s: %s", path, je.text);
    return root;
}

static size_t ids_from_json(json_t *arr, int32_t *ids)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) ids[i] = (int32_t)json_integer_value(v);
    return json_array_size(arr);
}

static void assert_ids_equal(const char *what, const int32_t *got, size_t n_got, const int32_t *exp, size_t n_exp)
{
    if (n_got != n_exp || memcmp(got, exp, n_exp * sizeof *exp)) {
        fprintf(stderr, "%s: got %zu ids, expected %zu\n  got:", what, n_got, n_exp);
        for (size_t i = 0; i < n_got && i < 24; i++) fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n  exp:");
        for (size_t i = 0; i < n_exp && i < 24; i++) fprintf(stderr, " %d", exp[i]);
        fprintf(stderr, "\n");
        fail();
    }
}

/* decode(ids) through tokenizer_decode and through the streaming detokenizer; both must agree. */
static size_t decode_both(const struct tokenizer *t, const int32_t *ids, size_t n, char *out, size_t cap)
{
    size_t len = 0;
    assert_int_equal(tokenizer_decode(t, ids, n, out, cap, &len), 0);
    char *stream = malloc(cap);
    size_t sl = 0, k;
    struct detok d;
    detok_init(&d, t);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(detok_push(&d, ids[i], stream + sl, cap - sl, &k), 0);
        sl += k;
    }
    assert_int_equal(detok_flush(&d, stream + sl, cap - sl, &k), 0);
    sl += k;
    assert_int_equal(sl, len);
    assert_memory_equal(stream, out, len);
    free(stream);
    return len;
}

/* ---- the reference cases ---------------------------------------------------------------- */

static void run_cases(const char *v, const char *path)
{
    struct tokenizer *t = open_ok(path);
    json_t *root = load_cases(v);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 70);
    int32_t *ids = malloc(MAX_IDS * sizeof *ids), *exp = malloc(MAX_IDS * sizeof *exp);
    char *text = malloc(1 << 16);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *js = json_object_get(c, "text");
        const char *s = json_string_value(js);
        size_t len = json_string_length(js), n = 0, ne;
        struct bora_err err = { "" };
        char what[128];
        snprintf(what, sizeof what, "%s/%s", v, name);
        assert_int_equal(tokenizer_encode(t, s, len, false, ids, MAX_IDS, &n, &err), 0);
        ne = ids_from_json(json_object_get(c, "ids"), exp);
        assert_ids_equal(what, ids, n, exp, ne);
        /* pieces, as the reference printed them */
        json_t *pieces = json_object_get(c, "pieces");
        assert_int_equal(json_array_size(pieces), n);
        for (size_t k = 0; k < n; k++) {
            size_t pl;
            const char *p = tokenizer_piece(t, ids[k], &pl);
            json_t *jp = json_array_get(pieces, k);
            assert_int_equal(pl, json_string_length(jp));
            assert_memory_equal(p, json_string_value(jp), pl);
        }
        assert_int_equal(tokenizer_encode(t, s, len, true, ids, MAX_IDS, &n, &err), 0);
        ne = ids_from_json(json_object_get(c, "ids_with_bos"), exp);
        assert_ids_equal(what, ids, n, exp, ne);
        /* round trip: SentencePiece decodes these back to the text (no normalization, valid UTF-8) */
        size_t dl = decode_both(t, exp, ne, text, 1 << 16);
        if (dl != len || memcmp(text, s, len))
            fail_msg("%s: decode gives '%.*s'", what, (int)dl, text);
    }
    free(ids);
    free(exp);
    free(text);
    json_decref(root);
    tokenizer_close(t);
}

static void test_cases_v1(void **state) { (void)state; run_cases("v1", V1_PATH); }
static void test_cases_v3(void **state) { (void)state; run_cases("v3", V3_PATH); }

static void test_specials(void **state)
{
    (void)state;
    struct tokenizer *t1 = open_ok(V1_PATH), *t3 = open_ok(V3_PATH);
    json_t *r1 = load_cases("v1"), *r3 = load_cases("v3");
    assert_int_equal(tokenizer_vocab_size(t1), 32000);
    assert_int_equal(tokenizer_vocab_size(t3), 32768);
    json_t *sp3 = json_object_get(r3, "special_tokens");
    assert_int_equal(tokenizer_bos_id(t3), json_integer_value(json_object_get(sp3, "bos")));
    assert_int_equal(tokenizer_eos_id(t3), json_integer_value(json_object_get(sp3, "eos")));
    assert_int_equal(tokenizer_bos_id(t1), 1);
    assert_int_equal(tokenizer_eos_id(t1), 2);
    assert_int_equal(tokenizer_piece_id(t3, "[INST]"), 3);
    assert_int_equal(tokenizer_piece_id(t3, "[/INST]"), 4);
    assert_int_equal(tokenizer_piece_id(t3, "<0x00>"), 771);
    assert_int_equal(tokenizer_piece_id(t1, "<0x00>"), 3);
    assert_int_equal(tokenizer_piece_id(t3, "no such piece"), -1);
    assert_true(tokenizer_is_control(t3, 3));
    assert_false(tokenizer_is_control(t3, 1027));
    /* control tokens are never produced from text: "[INST]" is spelled out */
    int32_t ids[16];
    size_t n;
    assert_int_equal(tokenizer_encode(t3, "[INST]", 6, false, ids, 16, &n, NULL), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(ids[i], 3);
    json_decref(r1);
    json_decref(r3);
    tokenizer_close(t1);
    tokenizer_close(t3);
}

/* v3's USER_DEFINED pieces ([REFERENCE_DOC_n]) are matched verbatim in text. */
static void test_user_defined(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    int32_t ids[32];
    size_t n;
    int32_t ref = tokenizer_piece_id(t, "[REFERENCE_DOC_1]");
    assert_true(ref >= 751 && ref <= 770);
    const char *s = "see [REFERENCE_DOC_1] here";
    assert_int_equal(tokenizer_encode(t, s, strlen(s), false, ids, 32, &n, NULL), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= ids[i] == ref;
    assert_true(found);
    char out[64];
    size_t dl = decode_both(t, ids, n, out, sizeof out);
    assert_int_equal(dl, strlen(s));
    assert_memory_equal(out, s, dl);
    tokenizer_close(t);
}

static void test_dir_open(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(TOK_DIR);   /* has tokenizer.model.v3 and .v1: v3 wins */
    assert_int_equal(tokenizer_vocab_size(t), 32768);
    tokenizer_close(t);
    struct bora_err err = { "" };
    char tmp[] = "/tmp/bora_tok_XXXXXX";
    assert_non_null(mkdtemp(tmp));
    assert_int_equal(tokenizer_open(&t, tmp, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "tokenizer.model"));
    /* present but unusable: a FIFO (the open must not wait for a writer) or a dangling link is
     * named, not skipped for the next candidate */
    char p[64];
    snprintf(p, sizeof p, "%s/tokenizer.model", tmp);
    assert_int_equal(mkfifo(p, 0600), 0);
    alarm(20);
    assert_int_equal(tokenizer_open(&t, tmp, &err), -EINVAL);
    alarm(0);
    assert_non_null(strstr(err.msg, "tokenizer.model: not a regular file"));
    unlink(p);
    snprintf(p, sizeof p, "%s/tekken.json", tmp);
    assert_int_equal(symlink("/nonexistent/blob", p), 0);
    assert_int_equal(tokenizer_open(&t, tmp, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "tekken.json"));
    unlink(p);
    rmdir(tmp);
    assert_int_equal(tokenizer_open(&t, "/nonexistent/tokenizer.model", &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/tokenizer.model"));
    /* for a model: a tokenizer with more tokens than the model has rows is refused, naming both */
    assert_int_equal(tokenizer_open_for(&t, V3_PATH, 32767, &err), -EINVAL);
    assert_null(t);
    assert_non_null(strstr(err.msg, "tokenizer has 32768 tokens, the model only 32767"));
    assert_int_equal(tokenizer_open_for(&t, V3_PATH, 32768, &err), 0);
    assert_int_equal(tokenizer_vocab_size(t), 32768);
    tokenizer_close(t);
}

/* v7 (tokenizer.model.v7) opens; it has v3's normal pieces, so plain text encodes as in the v3
 * reference cases; [SYSTEM_PROMPT] is a control token. */
static void test_v7_model(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(TOK_DIR "/v7/tokenizer.model.v7");
    assert_int_equal(tokenizer_vocab_size(t), 32768);
    assert_true(tokenizer_is_control(t, tokenizer_piece_id(t, "[SYSTEM_PROMPT]")));
    json_t *root = load_cases("v3");
    size_t i;
    json_t *c;
    int32_t ids[MAX_IDS], exp[MAX_IDS];
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        json_t *js = json_object_get(c, "text");
        size_t n, ne = ids_from_json(json_object_get(c, "ids_with_bos"), exp);
        assert_int_equal(tokenizer_encode(t, json_string_value(js), json_string_length(js), true, ids, MAX_IDS, &n, NULL), 0);
        assert_ids_equal(json_string_value(json_object_get(c, "name")), ids, n, exp, ne);
    }
    json_decref(root);
    tokenizer_close(t);
}

/* ---- encode edge cases ------------------------------------------------------------------ */

static void test_enospc(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    const char *s = "Hello, world! How are you today?";
    int32_t full[64], part[4];
    size_t n, m;
    assert_int_equal(tokenizer_encode(t, s, strlen(s), true, full, 64, &n, NULL), 0);
    assert_int_equal(n, 10);
    assert_int_equal(tokenizer_encode(t, s, strlen(s), true, part, 4, &m, NULL), -ENOSPC);
    assert_int_equal(m, n);
    assert_memory_equal(part, full, sizeof part);
    assert_int_equal(tokenizer_encode(t, s, strlen(s), true, NULL, 0, &m, NULL), -ENOSPC);
    assert_int_equal(m, n);
    char out[8];
    size_t dl;
    assert_int_equal(tokenizer_decode(t, full, n, out, sizeof out, &dl), -ENOSPC);
    assert_int_equal(dl, strlen(s));
    int32_t bad = 40000;
    assert_int_equal(tokenizer_decode(t, &bad, 1, out, sizeof out, &dl), -EINVAL);
    tokenizer_close(t);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    static const struct { const char *s; size_t len, at; } bad[] = {
        { "ab\x80", 3, 2 },                 /* lone continuation byte */
        { "\xC0\x80", 2, 0 },               /* overlong NUL */
        { "x\xED\xA0\x80", 4, 1 },          /* UTF-16 surrogate */
        { "ok \xE2\x82", 5, 3 },            /* truncated at the end */
        { "\xF5\x80\x80\x80", 4, 0 },       /* past U+10FFFF */
        { "\xFF", 1, 0 },
    };
    int32_t ids[16];
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++) {
        struct bora_err err = { "" };
        size_t n;
        assert_int_equal(tokenizer_encode(t, bad[i].s, bad[i].len, false, ids, 16, &n, &err), -EINVAL);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", bad[i].at);
        if (!strstr(err.msg, want))
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, want);
    }
    tokenizer_close(t);
}

/* NUL bytes are ordinary characters (byte fallback <0x00>), also in the middle of a long text. */
static void test_nul_bytes(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    const char s[] = "a\0b\0\0c";
    int32_t ids[16];
    size_t n;
    assert_int_equal(tokenizer_encode(t, s, sizeof s - 1, false, ids, 16, &n, NULL), 0);
    int32_t nul = tokenizer_piece_id(t, "<0x00>");
    size_t nuls = 0;
    for (size_t i = 0; i < n; i++)
        nuls += ids[i] == nul;
    assert_int_equal(nuls, 3);
    char out[16];
    size_t dl = decode_both(t, ids, n, out, sizeof out);
    assert_int_equal(dl, sizeof s - 1);
    assert_memory_equal(out, s, dl);
    tokenizer_close(t);
}

/* 1 MB of spaces: finishes, and decodes back to exactly the input. */
static void test_megabyte_of_spaces(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    size_t len = 1 << 20, n = 0;
    char *s = malloc(len), *out = malloc(len + 16);
    memset(s, ' ', len);
    assert_int_equal(tokenizer_encode(t, s, len, false, NULL, 0, &n, NULL), -ENOSPC);
    assert_true(n > 0 && n < len);
    int32_t *ids = malloc(n * sizeof *ids);
    size_t m;
    assert_int_equal(tokenizer_encode(t, s, len, false, ids, n, &m, NULL), 0);
    assert_int_equal(m, n);
    size_t dl = decode_both(t, ids, n, out, len + 16);
    assert_int_equal(dl, len);
    assert_memory_equal(out, s, len);
    /* the scratch was released (above the keep limit) and encoding still works */
    assert_int_equal(tokenizer_encode(t, "  x", 3, false, ids, n, &m, NULL), 0);
    free(ids);
    free(s);
    free(out);
    tokenizer_close(t);
}

/* Random text from a mixed alphabet: decode(encode(x)) == x, and encoding is the same on the
 * second call (served from the word cache) as on the first. */
static void test_random_round_trip(void **state)
{
    (void)state;
    static const char *const alphabet[] = {
        "a", "e", "t", "s", " ", " ", " ", "\n", "\t", "0", "7", ",", ".", "é", "ß", "ж", "镇",
        "🦙", "\xF4\x8F\xBF\xBF", "\r", "'", "<", "0x", "[", "INST", "]", "the", "ing",
    };
    struct tokenizer *t = open_ok(V3_PATH), *t1 = open_ok(V1_PATH);
    uint64_t seed = 42;
    char text[512], out[1024];
    int32_t ids[1024], again[1024];
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = 0;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int words = (int)(seed >> 58);
        for (int w = 0; w < words; w++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const char *a = alphabet[(seed >> 33) % BORA_ARRAY_LEN(alphabet)];
            memcpy(text + len, a, strlen(a));
            len += strlen(a);
        }
        struct tokenizer *tk = iter & 1 ? t1 : t;
        size_t n, n2;
        assert_int_equal(tokenizer_encode(tk, text, len, iter & 2, ids, 1024, &n, NULL), 0);
        assert_int_equal(tokenizer_encode(tk, text, len, iter & 2, again, 1024, &n2, NULL), 0);
        assert_ids_equal("cache", again, n2, ids, n);
        size_t dl = decode_both(tk, ids, n, out, sizeof out);
        if (dl != len || memcmp(out, text, len))
            fail_msg("round trip of '%.*s' gave '%.*s'", (int)len, text, (int)dl, out);
    }
    tokenizer_close(t);
    tokenizer_close(t1);
}

/* Two threads encoding with one tokenizer: one holds the shared scratch and word cache, the other
 * falls back to a private scratch; both must get the reference ids every time. */
struct conc_arg {
    const struct tokenizer *t;
    json_t *cases;
    int failures;
};

static void *conc_worker(void *p)
{
    struct conc_arg *a = p;
    int32_t *ids = malloc(MAX_IDS * sizeof *ids), *exp = malloc(MAX_IDS * sizeof *exp);
    for (int rep = 0; rep < 20; rep++) {
        size_t i;
        json_t *c;
        json_array_foreach(a->cases, i, c) {
            json_t *js = json_object_get(c, "text");
            size_t n, ne = ids_from_json(json_object_get(c, "ids"), exp);
            if (tokenizer_encode(a->t, json_string_value(js), json_string_length(js), false, ids, MAX_IDS, &n, NULL)
                || n != ne || memcmp(ids, exp, n * sizeof *ids))
                a->failures++;
        }
    }
    free(ids);
    free(exp);
    return NULL;
}

static void test_concurrent_encode(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    json_t *root = load_cases("v3");
    struct conc_arg a[2] = { { t, json_object_get(root, "cases"), 0 }, { t, json_object_get(root, "cases"), 0 } };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(a[0].failures, 0);
    assert_int_equal(a[1].failures, 0);
    json_decref(root);
    tokenizer_close(t);
}

/* ---- streaming detokenizer -------------------------------------------------------------- */

static void push_expect(struct detok *d, int32_t id, const char *want)
{
    char out[64];
    size_t n;
    assert_int_equal(detok_push(d, id, out, sizeof out, &n), 0);
    if (n != strlen(want) || memcmp(out, want, n))
        fail_msg("id %d: delta '%.*s', expected '%s'", id, (int)n, out, want);
}

static void test_detok_stream(void **state)
{
    (void)state;
    struct tokenizer *t = open_ok(V3_PATH);
    int32_t ids[16];
    size_t n;
    /* "🦙" = ▁ + <0xF0> <0x9F> <0xA6> <0x99>: nothing until the 4th byte */
    assert_int_equal(tokenizer_encode(t, "🦙", 4, true, ids, 16, &n, NULL), 0);
    assert_int_equal(n, 6);
    struct detok d;
    detok_init(&d, t);
    push_expect(&d, ids[0], "");       /* BOS */
    push_expect(&d, ids[1], "");       /* dummy-prefix ▁ dropped */
    push_expect(&d, ids[2], "");
    push_expect(&d, ids[3], "");
    push_expect(&d, ids[4], "");
    push_expect(&d, ids[5], "🦙");
    /* only the first piece loses its space */
    int32_t hello = tokenizer_piece_id(t, "▁Hello");
    push_expect(&d, hello, " Hello");
    /* a byte that cannot start a sequence: U+FFFD at once; an incomplete one followed by text:
       U+FFFD then the text; an incomplete one at the end: U+FFFD on flush */
    int32_t xff = tokenizer_piece_id(t, "<0xFF>"), xe2 = tokenizer_piece_id(t, "<0xE2>");
    int32_t x82 = tokenizer_piece_id(t, "<0x82>");
    push_expect(&d, xff, "\xEF\xBF\xBD");
    push_expect(&d, xe2, "");
    push_expect(&d, hello, "\xEF\xBF\xBD Hello");
    push_expect(&d, xe2, "");
    push_expect(&d, x82, "");
    char out[64];
    size_t k;
    /* -ENOSPC leaves the state as it was */
    assert_int_equal(detok_flush(&d, out, 2, &k), -ENOSPC);
    assert_int_equal(k, 6);
    assert_int_equal(detok_flush(&d, out, sizeof out, &k), 0);
    assert_int_equal(k, 6);
    assert_memory_equal(out, "\xEF\xBF\xBD\xEF\xBF\xBD", 6);
    assert_int_equal(detok_push(&d, -1, out, sizeof out, &k), -EINVAL);
    assert_int_equal(detok_push(&d, 32768, out, sizeof out, &k), -EINVAL);
    /* <unk> decodes to sentencepiece's " ⁇ " */
    detok_init(&d, t);
    push_expect(&d, 0, " \xE2\x81\x87 ");
    /* a piece that does not fit: -ENOSPC, then the same push succeeds with room */
    detok_init(&d, t);
    push_expect(&d, hello, "Hello");
    assert_int_equal(detok_push(&d, hello, out, 3, &k), -ENOSPC);
    assert_int_equal(k, 6);
    push_expect(&d, hello, " Hello");
    tokenizer_close(t);
}

/* ---- a hand-built .model ---------------------------------------------------------------- */

struct pbw {
    uint8_t b[4096];
    size_t n;
};

static void w_varint(struct pbw *w, uint64_t v)
{
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        w->b[w->n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
}

static void w_bytes(struct pbw *w, uint32_t field, const void *p, size_t n)
{
    w_varint(w, field << 3 | 2);
    w_varint(w, n);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

static void w_piece(struct pbw *w, const char *piece, float score, int type)
{
    struct pbw s = { .n = 0 };
    w_bytes(&s, 1, piece, strlen(piece));
    w_varint(&s, 2 << 3 | 5);
    memcpy(s.b + s.n, &score, 4);
    s.n += 4;
    w_varint(&s, 3 << 3 | 0);
    w_varint(&s, (uint64_t)type);
    w_bytes(w, 1, s.b, s.n);
}

/* ids: 0 <unk> 1 <s> 2 </s> 3 a 4 b 5 c 6 d 7 ab(-1) 8 bc(-1) 9 cd(-0.5) 10 <0xC3> 11 <0xA9>
 * 12 ▁ 13 ▁a(-2) 14 [X] (user-defined); normalizer: add_dummy_prefix per argument. */
static void build_model(struct pbw *w, bool dummy_prefix, int model_type)
{
    w->n = 0;
    w_piece(w, "<unk>", 0, SP_UNKNOWN);
    w_piece(w, "<s>", 0, SP_CONTROL);
    w_piece(w, "</s>", 0, SP_CONTROL);
    w_piece(w, "a", -10, SP_NORMAL);
    w_piece(w, "b", -10, SP_NORMAL);
    w_piece(w, "c", -10, SP_NORMAL);
    w_piece(w, "d", -10, SP_NORMAL);
    w_piece(w, "ab", -1, SP_NORMAL);
    w_piece(w, "bc", -1, SP_NORMAL);
    w_piece(w, "cd", -0.5f, SP_NORMAL);
    w_piece(w, "<0xC3>", 0, SP_BYTE);
    w_piece(w, "<0xA9>", 0, SP_BYTE);
    w_piece(w, "▁", -10, SP_NORMAL);
    w_piece(w, "▁a", -2, SP_NORMAL);
    w_piece(w, "[X]", 0, SP_USER_DEFINED);
    struct pbw tr = { .n = 0 }, no = { .n = 0 };
    w_varint(&tr, 3 << 3);  w_varint(&tr, (uint64_t)model_type);
    w_varint(&tr, 35 << 3); w_varint(&tr, 1);            /* byte_fallback */
    w_bytes(w, 2, tr.b, tr.n);
    w_bytes(&no, 1, "identity", 8);
    w_varint(&no, 3 << 3);  w_varint(&no, dummy_prefix);
    w_varint(&no, 4 << 3);  w_varint(&no, 0);            /* remove_extra_whitespaces */
    w_bytes(w, 3, no.b, no.n);
}

static void expect_enc(const struct tokenizer *t, const char *s, const int32_t *want, size_t n_want)
{
    int32_t ids[32];
    size_t n;
    struct bora_err err = { "" };
    assert_int_equal(tokenizer_encode(t, s, strlen(s), false, ids, 32, &n, &err), 0);
    assert_ids_equal(s, ids, n, want, n_want);
}

static void test_hand_model(void **state)
{
    (void)state;
    static struct pbw w;
    struct tokenizer *t;
    struct bora_err err = { "" };
    build_model(&w, false, 2);
    assert_int_equal(tokenizer_open_mem(&t, w.b, w.n, "hand.model", &err), 0);
    assert_int_equal(tokenizer_vocab_size(t), 15);
    expect_enc(t, "abc", (int32_t[]){ 7, 5 }, 2);       /* ab and bc tie: leftmost merges */
    expect_enc(t, "bcd", (int32_t[]){ 4, 9 }, 2);       /* cd scores higher than bc */
    expect_enc(t, "abcd", (int32_t[]){ 7, 9 }, 2);
    expect_enc(t, "é", (int32_t[]){ 10, 11 }, 2);       /* byte fallback */
    expect_enc(t, "z", (int32_t[]){ 0 }, 1);            /* no byte piece for 'z': <unk> */
    expect_enc(t, "a[X]b", (int32_t[]){ 3, 14, 4 }, 3); /* user-defined piece, never merged */
    expect_enc(t, "a a", (int32_t[]){ 3, 13 }, 2);      /* space → ▁, ▁a merges */
    tokenizer_close(t);
    build_model(&w, true, 2);
    assert_int_equal(tokenizer_open_mem(&t, w.b, w.n, "hand.model", &err), 0);
    expect_enc(t, "ab", (int32_t[]){ 12, 7 }, 2);       /* ab (-1) merges before ▁a (-2) */
    tokenizer_close(t);
    build_model(&w, false, 1);
    assert_int_equal(tokenizer_open_mem(&t, w.b, w.n, "hand.model", &err), -ENOTSUP);
    assert_non_null(strstr(err.msg, "not BPE"));
}

/* The real v3 SentencePiece file into buf (it is under 1 MiB); its length. */
static size_t read_v3(uint8_t *buf, size_t cap)
{
    FILE *f = fopen(V3_PATH, "rb");
    assert_non_null(f);
    size_t len = fread(buf, 1, cap, f);
    fclose(f);
    assert_true(len > 0 && len < cap);
    return len;
}

/* Truncations and corruptions of the real v3 file: an error with a message, never a crash. */
static void test_corrupt_model(void **state)
{
    (void)state;
    static uint8_t buf[1 << 20];
    const size_t len = read_v3(buf, sizeof buf);
    struct tokenizer *t;
    struct bora_err err;
    size_t cuts[] = { 0, 1, 2, 3, 7, 100, 1001, 50000, 300001, len - 1 };
    for (size_t i = 0; i < BORA_ARRAY_LEN(cuts); i++) {
        err.msg[0] = 0;
        int rc = tokenizer_open_mem(&t, buf, cuts[i], "cut.model", &err);
        if (rc == 0) {
            tokenizer_close(t);
            if (cuts[i] != 0)
                continue;   /* a cut between two whole fields is a valid, smaller model */
        }
        assert_true(rc < 0);
        assert_non_null(strstr(err.msg, "cut.model"));
    }
    struct { const char *bytes; size_t n; const char *msg; } bad[] = {
        { "\x0a\x80", 2, "cut short (file truncated?) (truncated varint at byte 2 of 2)" },
        { "\x0a\x05" "ab", 4, "cut short (file truncated?) (length past the end at byte 2 of 4)" },
        { "\x0b\x00", 2, "not a SentencePiece model (corrupt, or another kind of file) (unsupported wire type" },
        { "../../data/tokenizers/tokenizer.model.v3", 40, "not a SentencePiece model" },   /* a link stored as text */
        /* a piece (nested message) whose field runs past the piece, in a file that goes on: corrupt,
         * not cut, and the size is the file's */
        { "\x0a\x03\x0a\x05" "a" "\x12\x00\x12\x00", 9, "not a SentencePiece model (corrupt, or another kind of file) (length past the end at byte 4 of 9)" },
        { "\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, "varint" },
        { "\x0a\x02\x0a\x00", 4, "piece 0 is empty" },
        { "\x0a\x04\x0a\x02\xc3\x28", 6, "not valid UTF-8" },
        { "", 0, "empty file" },
        { "\x12\x00", 2, "no pieces" },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++) {
        err.msg[0] = 0;
        assert_true(tokenizer_open_mem(&t, (const uint8_t *)bad[i].bytes, bad[i].n, "bad.model", &err) < 0);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
    }
    /* flipped bytes all over the file: whatever opens must still encode safely */
    uint64_t seed = 7;
    for (int iter = 0; iter < 40; iter++) {
        static uint8_t mut[1 << 20];
        memcpy(mut, buf, len);
        for (int k = 0; k < 8; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            mut[(seed >> 20) % len] = (uint8_t)(seed >> 8);
        }
        if (tokenizer_open_mem(&t, mut, len, "mut.model", &err) == 0) {
            int32_t ids[64];
            size_t n;
            tokenizer_encode(t, "Hello wörld 🦙", 15, true, ids, 64, &n, NULL);
            tokenizer_close(t);
        }
    }
}

/* D17: a model cut between two pieces has no trainer_spec (it follows the pieces): that is a
 * truncated file, not a Unigram model (the TrainerSpec default). */
static void test_truncated_at_piece(void **state)
{
    (void)state;
    static uint8_t buf[1 << 20];
    const size_t len = read_v3(buf, sizeof buf);
    size_t cuts[] = { 1, 1000, 32768 };   /* after this many pieces (v3 has 32,768) */
    for (size_t c = 0; c < BORA_ARRAY_LEN(cuts); c++) {
        size_t off = 0;
        for (size_t k = 0; k < cuts[c]; k++) {   /* field 1 (0x0a), varint length, payload */
            assert_int_equal(buf[off], 0x0a);
            size_t n = 0, shift = 0, i = off + 1;
            do {
                n |= (size_t)(buf[i] & 0x7f) << shift;
                shift += 7;
            } while (buf[i++] & 0x80);
            off = i + n;
            assert_true(off < len);
        }
        struct tokenizer *t = NULL;
        struct bora_err err = { "" };
        assert_int_equal(tokenizer_open_mem(&t, buf, off, "cut.model", &err), -EINVAL);
        assert_null(t);
        if (!strstr(err.msg, "cut.model") || !strstr(err.msg, "trainer_spec missing")
            || !strstr(err.msg, "truncated"))
            fail_msg("cut after %zu pieces: '%s'", cuts[c], err.msg);
    }
}

/* ---- Hugging Face tokenizer.json -------------------------------------------------------- */

struct scored { int32_t id; float score; };

static int by_score(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    return x->score > y->score ? -1 : x->score < y->score ? 1 : x->id - y->id;
}

/* Writes the v3 vocabulary as a tokenizer.json: vocab, merges (every split of each normal piece
 * into two pieces, by descending piece score), added_tokens for control/unknown/user pieces. */
static void write_hf_json(const struct tokenizer *sp, const char *path)
{
    json_t *root = json_object(), *model = json_object(), *vocab = json_object();
    json_t *merges = json_array(), *added = json_array();
    int32_t n = tokenizer_vocab_size(sp);
    struct scored *order = malloc((size_t)n * sizeof *order);
    size_t no = 0;
    for (int32_t i = 0; i < n; i++) {
        size_t l;
        const char *p = tokenizer_piece(sp, i, &l);
        char key[256];
        assert_true(l < sizeof key);
        memcpy(key, p, l);
        key[l] = 0;
        float score;
        int type;
        assert_int_equal(sp_piece_info(sp, i, &score, &type), 0);
        json_object_set_new(vocab, key, json_integer(i));
        if (type == SP_CONTROL || type == SP_UNKNOWN || type == SP_USER_DEFINED) {
            json_t *a = json_object();
            json_object_set_new(a, "id", json_integer(i));
            json_object_set_new(a, "content", json_stringn(p, l));
            json_object_set_new(a, "special", json_boolean(type != SP_USER_DEFINED));
            json_array_append_new(added, a);
        }
        if (type == SP_NORMAL)
            order[no++] = (struct scored){ i, score };
    }
    qsort(order, no, sizeof *order, by_score);
    char left[256], right[256];
    for (size_t k = 0; k < no; k++) {
        size_t l;
        const char *p = tokenizer_piece(sp, order[k].id, &l);
        for (size_t cut = 1; cut < l; cut++) {
            if (((uint8_t)p[cut] & 0xC0) == 0x80)
                continue;
            memcpy(left, p, cut); left[cut] = 0;
            memcpy(right, p + cut, l - cut); right[l - cut] = 0;
            if (!json_object_get(vocab, left) || !json_object_get(vocab, right))
                continue;
            char m[520];
            snprintf(m, sizeof m, "%s %s", left, right);
            json_array_append_new(merges, json_string(m));
        }
    }
    free(order);
    json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "unk_token", json_string("<unk>"));
    json_object_set_new(model, "byte_fallback", json_true());
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", merges);
    json_object_set_new(root, "added_tokens", added);
    json_t *norm = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers",
                             "type", "Prepend", "prepend", "▁", "type", "Replace", "pattern", "String", " ",
                             "content", "▁");
    json_object_set_new(root, "normalizer", norm);
    json_object_set_new(root, "model", model);
    assert_int_equal(json_dump_file(root, path, JSON_COMPACT), 0);
    json_decref(root);
}

static void test_hf_json_same_as_model(void **state)
{
    (void)state;
    struct tokenizer *sp = open_ok(V3_PATH);
    char dir[] = "/tmp/bora_hf_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_hf_json(sp, path);
    struct tokenizer *hf = open_ok(dir);   /* directory with only tokenizer.json */
    assert_int_equal(tokenizer_vocab_size(hf), 32768);
    assert_int_equal(tokenizer_bos_id(hf), 1);
    assert_int_equal(tokenizer_eos_id(hf), 2);
    json_t *root = load_cases("v3");
    size_t i;
    json_t *c;
    int32_t a[MAX_IDS], b[MAX_IDS];
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        json_t *js = json_object_get(c, "text");
        size_t na, nb;
        assert_int_equal(tokenizer_encode(hf, json_string_value(js), json_string_length(js), true, a, MAX_IDS, &na, NULL), 0);
        size_t ne = ids_from_json(json_object_get(c, "ids_with_bos"), b);
        assert_ids_equal(json_string_value(json_object_get(c, "name")), a, na, b, ne);
        assert_int_equal(tokenizer_encode(sp, json_string_value(js), json_string_length(js), true, b, MAX_IDS, &nb, NULL), 0);
        assert_ids_equal("hf vs model", a, na, b, nb);
    }
    /* chat control tokens are found in added_tokens */
    assert_true(tokenizer_is_control(hf, tokenizer_piece_id(hf, "[INST]")));
    json_decref(root);
    unlink(path);
    rmdir(dir);
    tokenizer_close(hf);
    tokenizer_close(sp);
}

/* A minimal hand-made tokenizer.json, merges given as pairs (the newer HF format). */
static void test_hf_json_minimal(void **state)
{
    (void)state;
    const char *json =
        "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
        "  {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}],"
        " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"},"
        "  {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]},"
        " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true,"
        "  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x21>\": 3, \"\xe2\x96\x81\": 4, \"h\": 5, \"i\": 6,"
        "   \"hi\": 7, \"\xe2\x96\x81hi\": 8},"
        "  \"merges\": [[\"h\", \"i\"], [\"\xe2\x96\x81\", \"hi\"]]}}";
    struct tokenizer *t;
    struct bora_err err = { "" };
    assert_int_equal(tokenizer_open_mem(&t, (const uint8_t *)json, strlen(json), "mini.json", &err), 0);
    expect_enc(t, "hi hi!", (int32_t[]){ 8, 8, 3 }, 3);
    expect_enc(t, "ih", (int32_t[]){ 4, 6, 5 }, 3);
    char out[16];
    size_t dl = decode_both(t, (int32_t[]){ 1, 8, 8, 3 }, 4, out, sizeof out);
    assert_int_equal(dl, 6);
    assert_memory_equal(out, "hi hi!", 6);
    tokenizer_close(t);
    /* malformed: the message names the problem */
    const char *bad[][2] = {
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a a\"]}}", "not in the vocabulary" },
        { "{\"model\": {\"type\": \"Unigram\"}}", "BPE" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}", "model.vocab[\"a\"]" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}, \"merges\": []}}", "id 0 has no piece" },
        { "{\"model\": {", "line 1" },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++) {
        assert_true(tokenizer_open_mem(&t, (const uint8_t *)bad[i][0], strlen(bad[i][0]), "bad.json", &err) < 0);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i][1]);
    }
}

/* The minimal tokenizer.json of test_hf_json_minimal with the given normalizer, pre_tokenizer,
 * extra model.vocab entries and extra added_tokens (raw JSON fragments). */
static const char *hf_variant(const char *norm, const char *pre, const char *vocab_extra,
                              const char *added_extra)
{
    static char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
             "  {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true}%s],"
             " \"normalizer\": %s, \"pre_tokenizer\": %s,"
             " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"byte_fallback\": true,"
             "  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x21>\": 3, \"\xe2\x96\x81\": 4, \"h\": 5, \"i\": 6,"
             "   \"hi\": 7, \"\xe2\x96\x81hi\": 8%s},"
             "  \"merges\": [[\"h\", \"i\"], [\"\xe2\x96\x81\", \"hi\"]]}}",
             added_extra, norm, pre, vocab_extra);
    return buf;
}

#define HF_NORM_MISTRAL "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"}," \
                        " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]}"
#define HF_PRE_MISTRAL  "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": false}"

/* D10: only the normalizer / pre_tokenizer spellings of Mistral's files are accepted; others
 * (ByteLevel, NFKC, a splitting Metaspace, ...) would mis-tokenize and are refused naming them. */
static void test_hf_json_components(void **state)
{
    (void)state;
    struct tokenizer *t;
    struct bora_err err = { "" };
    const char *ok[][2] = { { HF_NORM_MISTRAL, "null" }, { "null", HF_PRE_MISTRAL } };
    for (size_t i = 0; i < BORA_ARRAY_LEN(ok); i++) {
        const char *js = hf_variant(ok[i][0], ok[i][1], "", "");
        if (tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "ok.json", &err))
            fail_msg("variant %zu: %s", i, err.msg);
        expect_enc(t, "hi hi!", (int32_t[]){ 8, 8, 3 }, 3);
        tokenizer_close(t);
    }
    const char *bad[][3] = {
        { "null", "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}",
          "pre_tokenizer ByteLevel" },
        { "{\"type\": \"NFKC\"}", HF_PRE_MISTRAL, "normalizer NFKC" },
        { "{\"type\": \"NFKC\"}", "null", "normalizer NFKC" },
        { "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"},"
          " {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}, {\"type\": \"NFKC\"}]}",
          "null", "Sequence[2] NFKC" },
        { "null", "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": true}",
          "split" },
        { "null", "{\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"always\", \"split\": false}",
          "prepend_scheme" },
        { "null", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"},"
          " \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false,"
          " \"trim_offsets\": true, \"use_regex\": false}]}", "pre_tokenizer Sequence" },
        { HF_NORM_MISTRAL, "{\"type\": \"ByteLevel\"}", "pre_tokenizer ByteLevel" },
        { "null", "null", "neither a normalizer nor a pre_tokenizer" },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++) {
        const char *js = hf_variant(bad[i][0], bad[i][1], "", "");
        err.msg[0] = 0;
        t = NULL;
        int rc = tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "dir/tokenizer.json", &err);
        if (rc != -ENOTSUP || !strstr(err.msg, "dir/tokenizer.json") || !strstr(err.msg, bad[i][2]))
            fail_msg("case %zu: want -ENOTSUP with '%s', got %d '%s'", i, bad[i][2], rc, err.msg);
        assert_null(t);
    }
}

/* D11: an id given to two different pieces is refused; Mistral's files repeat their control
 * tokens in added_tokens with the same id and content, which stays accepted. */
static void test_hf_json_duplicate_ids(void **state)
{
    (void)state;
    struct tokenizer *t;
    struct bora_err err = { "" };
    const char *js = hf_variant(HF_NORM_MISTRAL, "null", "",
                                ", {\"id\": 7, \"content\": \"hi\", \"special\": false}");
    if (tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "same.json", &err))
        fail_msg("%s", err.msg);
    tokenizer_close(t);
    const char *bad[][2] = {
        { ", \"x\": 6", "" },                                                   /* beside "i": 6 */
        { "", ", {\"id\": 6, \"content\": \"[INST]\", \"special\": true}" },      /* "i" is 6 */
        { "", ", {\"id\": 6, \"content\": \"i\", \"special\": true}, {\"id\": 6, \"content\": \"j\"}" },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++) {
        js = hf_variant(HF_NORM_MISTRAL, "null", bad[i][0], bad[i][1]);
        err.msg[0] = 0;
        t = NULL;
        int rc = tokenizer_open_mem(&t, (const uint8_t *)js, strlen(js), "dup.json", &err);
        if (rc != -EINVAL || !strstr(err.msg, "dup.json: id 6 defined twice"))
            fail_msg("case %zu: got %d '%s'", i, rc, err.msg);
        assert_null(t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_v1),
        cmocka_unit_test(test_cases_v3),
        cmocka_unit_test(test_specials),
        cmocka_unit_test(test_user_defined),
        cmocka_unit_test(test_dir_open),
        cmocka_unit_test(test_v7_model),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_megabyte_of_spaces),
        cmocka_unit_test(test_random_round_trip),
        cmocka_unit_test(test_concurrent_encode),
        cmocka_unit_test(test_detok_stream),
        cmocka_unit_test(test_hand_model),
        cmocka_unit_test(test_corrupt_model),
        cmocka_unit_test(test_hf_json_same_as_model),
        cmocka_unit_test(test_hf_json_minimal),
        cmocka_unit_test(test_truncated_at_piece),
        cmocka_unit_test(test_hf_json_components),
        cmocka_unit_test(test_hf_json_duplicate_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
