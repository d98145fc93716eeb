/* fuzz_tekken.c — fuzz target for the Tekken loader and encoder: never a crash, every load error
 * names the file, and decode(encode(x)) == x byte for byte. The first input byte picks the mode:
 * odd = encoder (rest = text, NeMo vocabulary); 2 mod 4 = loader on the rest as tekken.json;
 * 0 mod 4 = loader on a small valid tekken.json with the rest written over it at the offset
 * given by the next two bytes (reaches base64, rank and pattern checks past the driver's
 * 4 KiB input limit). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "model/tekken.h"

#define NEMO_JSON "tests/data/tokenizers/tekken-nemo-240718.json"
#define MAX_IDS   8192

/* A small valid tekken.json: 256 byte ranks + a few merges, 10 special ids. */
static const char *tiny_json(void)
{
    static char buf[32 * 1024];
    if (buf[0])
        return buf;
    static const char *const extra[] = { "ab", "bc", "abc", "  ", "\xc3\xa9", "th", "the" };
    size_t n_extra = sizeof extra / sizeof *extra;
    size_t o = (size_t)snprintf(buf, sizeof buf, "{\"config\":{\"pattern\":\"[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
        "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n/]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\","
        "\"default_vocab_size\":%zu,\"default_num_special_tokens\":10,\"version\":\"v7\"},\"vocab\":[",
        266 + n_extra);
    for (size_t r = 0; r < 256 + n_extra; r++) {
        unsigned char b = (unsigned char)r;
        const unsigned char *bin = r < 256 ? &b : (const unsigned char *)extra[r - 256];
        size_t blen = r < 256 ? 1 : strlen(extra[r - 256]);
        char b64[64];
        sodium_bin2base64(b64, sizeof b64, bin, blen, sodium_base64_VARIANT_ORIGINAL);
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s{\"rank\":%zu,\"token_bytes\":\"%s\","
                              "\"token_str\":null}", r ? "," : "", r, b64);
    }
    snprintf(buf + o, sizeof buf - o, "],\"special_tokens\":[{\"rank\":0,\"token_str\":\"<unk>\","
             "\"is_control\":true},{\"rank\":1,\"token_str\":\"<s>\",\"is_control\":true}]}");
    return buf;
}

/* Splice seeds: mode 0, 16-bit offset, bytes to write there (offsets into tiny_json()). */
static const char *const splice_seeds[] = {
    "\x00\x00\x15ZZ",          /* pattern */
    "\x00\x01\x20\"rank\":3",   /* duplicate/out-of-order ranks around entry 6 */
    "\x00\x02\x00*",           /* base64 */
    "\x00\x00\x01x",           /* JSON syntax */
    "\x00\x30\x00]}",          /* truncated vocab */
};

static const char *const text_seeds[] = {
    "\x01Hello, how are you?",
    "\x01" "abc\xff\xfe  \t\n\r\n 12345 \xe2\x82 caf\xc3\xa9 \xf0\x9f\x98\x8d!!",
    "\x01\xe1\xa0\x8e\xe1\xa0\x8e! \xc2\x85\xef\xbb\xbfword  \xef\xbb\xbf  next",
    "\x01#include <stdio.h>\nint main(void) { return 0; }\n",
};

size_t fuzz_seed_input(int i, const uint8_t **data)
{
    static const uint8_t plain_json[] = "\x02{\"config\":{\"pattern\":\"\\\\s+\",\"default_vocab_size\""
        ":300,\"default_num_special_tokens\":10},\"vocab\":[{\"rank\":0,\"token_bytes\":\"AA==\"}]}";
    int n_splice = (int)(sizeof splice_seeds / sizeof *splice_seeds);
    int n_text = (int)(sizeof text_seeds / sizeof *text_seeds);
    if (i == 0) {
        *data = plain_json;
        return sizeof plain_json - 1;
    }
    if (i - 1 < n_splice) {
        *data = (const uint8_t *)splice_seeds[i - 1];
        return 3 + strlen(splice_seeds[i - 1] + 3);
    }
    if (i - 1 - n_splice < n_text) {
        *data = (const uint8_t *)text_seeds[i - 1 - n_splice];
        return strlen(text_seeds[i - 1 - n_splice]);
    }
    return 0;
}

/* Encode, then decode raw and through the streaming detokenizer: both must give text back. */
static void check_roundtrip(struct tekken *tk, const char *text, size_t len)
{
    static int32_t ids[MAX_IDS];
    static char out[MAX_IDS * 4 + 64];
    long n = tekken_encode(tk, text, len, ids, MAX_IDS, NULL);
    if (n < 0 || n > MAX_IDS || (size_t)n > len)
        abort();
    long m = tekken_decode(tk, ids, (size_t)n, TEKKEN_DECODE_RAW, out, sizeof out, NULL);
    if (m != (long)len || memcmp(out, text, len))
        abort();
    struct tekken_detok d;
    tekken_detok_init(&d, 0);
    size_t o = 0;
    for (long i = 0; i < n; i++) {
        long k = tekken_detok_push(tk, &d, ids[i], out + o, sizeof out - o, NULL);
        if (k < 0)
            abort();
        o += (size_t)k;
    }
    long k = tekken_detok_flush(&d, out + o, sizeof out - o);
    if (k < 0)
        abort();
    static char full[MAX_IDS * 4 + 64];
    long f = tekken_decode(tk, ids, (size_t)n, 0, full, sizeof full, NULL);
    if (f != (long)(o + (size_t)k) || memcmp(full, out, (size_t)f))
        abort();
}

static struct tekken *encoder(void)
{
    static struct tekken *tk;
    if (!tk && tekken_open(&tk, NEMO_JSON, NULL)) {
        const char *t = tiny_json();
        if (tekken_open_buffer(&tk, t, strlen(t), "tiny", NULL))
            abort();
        fprintf(stderr, "fuzz_tekken: %s not found, fuzzing the encoder on a tiny vocabulary\n",
                NEMO_JSON);
    }
    return tk;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        check_roundtrip(encoder(), text, len);
        return 0;
    }
    static char json[64 * 1024];
    if (!(data[0] & 2)) {                            /* splice into the tiny file */
        if (len < 2)
            return 0;
        size_t base = strlen(tiny_json()), at = ((size_t)data[1] << 8 | data[2 % size]) % base;
        memcpy(json, tiny_json(), base);
        size_t k = len - 2 < base - at ? len - 2 : base - at;
        memcpy(json + at, text + 2, k);
        text = json;
        len = base;
    }
    struct tekken *tk;
    struct bora_err err;
    if (tekken_open_buffer(&tk, text, len, "fuzz.json", &err) == 0) {
        static const char probe[] = "the abc  \xc3\xa9\xff 12";
        check_roundtrip(tk, probe, sizeof probe - 1);
        tekken_close(tk);
    } else if (!err.msg[0] || !strstr(err.msg, "fuzz.json")) {
        abort();                                     /* every error names the file */
    }
    return 0;
}
