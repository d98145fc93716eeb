/* fuzz_sentencepiece.c — fuzz target for the tokenizer parsers and encoder. The first input byte
 * picks the mode: 0 the bytes are a tokenizer file (.model protobuf or tokenizer.json), 1 they are
 * text for the v3 encoder (must round-trip through decode and the streaming detokenizer),
 * 2 they are a chat request JSON. Run from the repository root (reads tests/data). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#define FUZZ_V3 "tests/data/tokenizers/tokenizer.model.v3"
#define FUZZ_MAX_IDS 8192

static struct tokenizer *v3(void)
{
    static struct tokenizer *t;   /* opened once per process; fuzz harness state, not library state */
    static int tried;
    if (!tried) {
        tried = 1;
        struct bora_err err;
        if (tokenizer_open(&t, FUZZ_V3, &err)) {
            fprintf(stderr, "fuzz_sentencepiece: %s (run from the repository root)\n", err.msg);
            exit(1);
        }
    }
    return t;
}

static int32_t ids[FUZZ_MAX_IDS];
static char out[FUZZ_MAX_IDS * 16], stream[FUZZ_MAX_IDS * 16];

static void check_round_trip(const struct tokenizer *t, const uint8_t *s, size_t len)
{
    size_t n, dl, sl = 0, k;
    if (tokenizer_encode(t, (const char *)s, len, true, ids, FUZZ_MAX_IDS, &n, NULL) != 0)
        return;   /* invalid UTF-8: refused, fine */
    if (tokenizer_decode(t, ids, n, out, sizeof out, &dl) != 0)
        __builtin_trap();
    struct detok d;
    detok_init(&d, t);
    for (size_t i = 0; i < n; i++) {
        if (detok_push(&d, ids[i], stream + sl, sizeof stream - sl, &k) != 0)
            __builtin_trap();
        sl += k;
    }
    if (detok_flush(&d, stream + sl, sizeof stream - sl, &k) != 0)
        __builtin_trap();
    sl += k;
    if (sl != dl || memcmp(stream, out, dl))
        __builtin_trap();   /* streaming must equal full decode */
    /* SentencePiece round-trips valid UTF-8 that holds no literal ▁ (U+2581) */
    if (!memmem(s, len, "\xE2\x96\x81", 3) && (dl != len || memcmp(out, s, len)))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1, got;
    struct bora_err err;
    switch (data[0] % 3) {
    case 0: {
        struct tokenizer *t;
        if (tokenizer_open_mem(&t, p, n, "fuzz", &err) == 0) {
            tokenizer_encode(t, "Hello wörld  🦙\n", 18, true, ids, FUZZ_MAX_IDS, &got, NULL);
            tokenizer_decode(t, ids, got < FUZZ_MAX_IDS ? got : FUZZ_MAX_IDS, out, sizeof out, &got);
            tokenizer_close(t);
        }
        break;
    }
    case 1:
        check_round_trip(v3(), p, n);
        break;
    default:
        chat_encode_request_json(v3(), (const char *)p, n, ids, FUZZ_MAX_IDS, &got, &err);
        break;
    }
    return 0;
}

/* Seeds: a small .model, texts that hit byte fallback / spaces / user pieces, a chat request. */
static const uint8_t seed_model[] = {
    0x00,
    0x0a, 0x0e, 0x0a, 0x05, '<', 'u', 'n', 'k', '>', 0x15, 0, 0, 0, 0, 0x18, 0x02,   /* <unk> UNKNOWN */
    0x0a, 0x0c, 0x0a, 0x03, '<', 's', '>', 0x15, 0, 0, 0, 0, 0x18, 0x03,            /* <s> CONTROL */
    0x0a, 0x0a, 0x0a, 0x01, 'a', 0x15, 0, 0, 0x80, 0xbf, 0x18, 0x01,                /* a, -1.0 */
    0x0a, 0x0a, 0x0a, 0x06, '<', '0', 'x', '4', '1', '>', 0x18, 0x06,               /* <0x41> BYTE */
    0x12, 0x05, 0x18, 0x02, 0x98, 0x02, 0x01,                 /* trainer: BPE, byte_fallback */
    0x1a, 0x02, 0x18, 0x01,                                   /* normalizer: add_dummy_prefix */
};

size_t fuzz_seed_input(int i, const uint8_t **data)
{
    static const char *const texts[] = {
        "\x01Hello, world! How are you today?",
        "\x01   spaces   and\ttabs\r\n\xF0\x9F\xA6\x99 caf\xC3\xA9 [REFERENCE_DOC_1] 12345",
        "\x01\xE9\x95\x87\xF4\x8F\xBF\xBF\x00\x01",
        "\x02{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"},"
        " {\"role\": \"assistant\", \"tool_calls\": [{\"id\": \"1\", \"function\": {\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1.5}\"}}]},"
        " {\"role\": \"tool\", \"tool_call_id\": \"1\", \"content\": \"22\"}], \"tools\": [{\"type\": \"function\","
        " \"function\": {\"name\": \"f\", \"parameters\": {}}}]}",
        "\x00{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, \"a\": 1, \"b\": 2, \"ab\": 3}, \"merges\": [\"a b\"]}}",
    };
    if (i == 0) {
        *data = seed_model;
        return sizeof seed_model;
    }
    if (i - 1 < (int)(sizeof texts / sizeof *texts)) {
        *data = (const uint8_t *)texts[i - 1];
        size_t len = strlen(texts[i - 1]);
        return i == 3 ? len + 3 : len ? len : 1;   /* seed 3 carries a NUL byte inside */
    }
    return 0;
}
