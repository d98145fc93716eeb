/* bench_tekken.c — times Tekken encoding of a 2,048-token prompt (budget 300 µs, tekken.h): a
 * customer-service prompt of repeated snippets, and one that never repeats (pseudo-random words,
 * so every piece needs its own lookups and merges), plus the worst case of a 10,000-byte word;
 * on the NeMo vocabulary in tests/data. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/tekken.h"

#define NEMO_JSON   "tests/data/tokenizers/tekken-nemo-240718.json"
#define PROMPT_IDS  2048
#define BUDGET_US   300.0
#define REPEATS     2000

/* Mixed prose, code, numbers and non-Latin text, repeated until it encodes to ≥ 2,048 ids. */
static const char *const snippets[] = {
    "The quick brown fox jumps over the lazy dog, and then it wanders off into the forest. ",
    "Customer: my order #48213 hasn't arrived since 2024-03-17; can you check the status?\n",
    "int main(void) {\n\tfor (int i = 0; i < 10; i++)\n\t\tprintf(\"%d\\n\", i);\n}\n",
    "Le service client répond en français, auf Deutsch und auch auf Español: ¿qué tal? ",
    "東京の天気は晴れです。 Привет, как дела? مرحبا بالعالم 😀\n\n",
};

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median µs of REPEATS encodes of text (*best: the fastest, what an unloaded core does). */
static double time_encode(struct tekken *tk, const char *text, size_t len, int32_t *ids,
                          size_t cap, long *n_ids, double *best)
{
    static double t[REPEATS];
    for (int r = 0; r < REPEATS; r++) {
        double t0 = now_us();
        *n_ids = tekken_encode(tk, text, len, ids, cap, NULL);
        t[r] = now_us() - t0;
    }
    qsort(t, REPEATS, sizeof *t, cmp_double);
    *best = t[0];
    return t[REPEATS / 2];
}

int main(void)
{
    struct tekken *tk;
    struct bora_err err;
    double t0 = now_us();
    if (tekken_open(&tk, NEMO_JSON, &err)) {
        fprintf(stderr, "bench_tekken: %s\n", err.msg);
        return 1;
    }
    printf("tekken: load %s: %.0f ms\n", NEMO_JSON, (now_us() - t0) / 1e3);
    static char text[64 * 1024];
    static int32_t ids[16384];
    size_t len = 0;
    for (int i = 0; tekken_encode(tk, text, len, NULL, 0, NULL) < PROMPT_IDS; i++) {
        const char *s = snippets[i % (int)(sizeof snippets / sizeof *snippets)];
        memcpy(text + len, s, strlen(s));
        len += strlen(s);
    }
    long n;
    double best, us = time_encode(tk, text, len, ids, 16384, &n, &best);
    printf("tekken: encode %ld-token prompt (%zu bytes): %.1f µs median, %.1f µs best (budget %.0f µs "
           "for 2048) %s\n", n, len, us, best, BUDGET_US,
           us * PROMPT_IDS / n <= BUDGET_US ? "OK" : "OVER BUDGET");
    /* a prompt that never repeats: pseudo-random words of 1-4 syllables, punctuation, digits */
    static const char *const syl[] = { "ka", "ren", "to", "mi", "sal", "ver", "qu", "io", "ne",
        "bra", "st", "el", "um", "ox", "pha", "dri", "ght", "au", "zy", "ce", "lo", "tion" };
    uint64_t rs = 0x2545F4914F6CDD1Dull;
    len = 0;
    while (tekken_encode(tk, text, len, NULL, 0, NULL) < PROMPT_IDS && len < sizeof text - 64) {
        for (int w = 0; w < 16; w++) {
            rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
            text[len++] = ' ';
            for (int k = 0; k < 1 + (int)(rs % 4); k++) {
                const char *x = syl[(rs >> (8 + 5 * k)) % (sizeof syl / sizeof *syl)];
                memcpy(text + len, x, strlen(x));
                len += strlen(x);
            }
            if (rs % 11 == 0) text[len++] = ',';
            if (rs % 29 == 0) len += (size_t)sprintf(text + len, " %u", (unsigned)(rs % 100000));
        }
        text[len++] = '.';
    }
    us = time_encode(tk, text, len, ids, 16384, &n, &best);
    printf("tekken: encode %ld-token never-repeating prompt (%zu bytes): %.1f µs median, %.1f µs best "
           "(budget %.0f µs for 2048) %s\n", n, len, us, best, BUDGET_US,
           us * PROMPT_IDS / n <= BUDGET_US ? "OK" : "OVER BUDGET");
    static char word[10000];
    for (size_t i = 0; i < sizeof word; i++)
        word[i] = (char)('a' + (i * 7919 + i / 13) % 26);
    us = time_encode(tk, word, sizeof word, ids, 16384, &n, &best);
    printf("tekken: encode a 10,000-byte word (%ld ids): %.1f µs median, %.1f µs best\n", n, us, best);
    tekken_close(tk);
    return 0;
}
