/* driver.c — runs a libFuzzer-style target (LLVMFuzzerTestOneInput) without libFuzzer:
 * on each file named on the command line, or on --iters N random/mutated inputs (seeded,
 * reproducible with --seed). Lets `make fuzz` and the tests exercise every parser with gcc. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional: a target may provide seed inputs to mutate (weak). */
__attribute__((weak)) size_t fuzz_seed_input(int i, const uint8_t **data);

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

int main(int argc, char **argv)
{
    long iters = 0;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iters") && i + 1 < argc) { iters = atol(argv[++i]); continue; }
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) { seed = strtoull(argv[++i], NULL, 0) | 1; continue; }
        FILE *f = fopen(argv[i], "rb");
        if (!f) { perror(argv[i]); return 1; }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
        if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) { fprintf(stderr, "%s: read failed\n", argv[i]); return 1; }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, (size_t)n);
        free(buf);
        files++;
    }
    enum { MAXLEN = 4096 };
    uint8_t *buf = malloc(MAXLEN);
    if (!buf) return 1;
    int n_seeds = 0;
    if (fuzz_seed_input) { const uint8_t *d; while (fuzz_seed_input(n_seeds, &d)) n_seeds++; }
    for (long it = 0; it < iters; it++) {
        size_t len;
        if (n_seeds && (rng_next(&seed) & 3)) {
            const uint8_t *d;
            len = fuzz_seed_input((int)(rng_next(&seed) % (uint64_t)n_seeds), &d);
            if (len > MAXLEN) len = MAXLEN;
            memcpy(buf, d, len);
            int muts = 1 + (int)(rng_next(&seed) % 8);
            for (int m = 0; m < muts && len; m++) {
                size_t at = rng_next(&seed) % len;
                switch (rng_next(&seed) % 4) {
                case 0: buf[at] = (uint8_t)rng_next(&seed); break;
                case 1: buf[at] ^= (uint8_t)(1u << (rng_next(&seed) % 8)); break;
                case 2: len = at; break;                                  /* truncate */
                default: buf[at] = (uint8_t)"\0\xff\x7f\x80{}[]\":,"[rng_next(&seed) % 12]; break;
                }
            }
        } else {
            len = rng_next(&seed) % 512;
            for (size_t k = 0; k < len; k++) buf[k] = (uint8_t)rng_next(&seed);
        }
        LLVMFuzzerTestOneInput(buf, len);
    }
    free(buf);
    printf("fuzz: %d files, %ld generated inputs, no crash\n", files, iters);
    return 0;
}
