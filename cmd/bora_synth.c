/* bora_synth.c — `bora synth DIR ...`: writes a small random-weight checkpoint of a chosen
 * shape in the Hugging Face layout, with a chosen tokenizer (for tests and demos). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "model/default_model.h"
#include "model/tokenizer.h"

#define SYNTH_MAX_BYTES 64e9   /* a test model; a real one comes from its publisher */

static int num(const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "bora synth: %s: expected an integer in [%ld, %ld] (got '%s')\n", opt, lo, hi, v ? v : "");
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int cmd_synth(int argc, char **argv)
{
    const char *usage = "synth DIR [--arch mistral|ministral3] [--vocab N] [--dim N] [--layers N] [--heads N] "
                        "[--kv-heads N] [--head-dim N] [--hidden N] [--max-pos N] [--seed N] [--tokenizer FILE]";
    struct synth_spec sp = { .dim = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16,
                             .hidden_dim = 128, .vocab = 32768, .max_pos = 1024, .seed = 1 };
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        int *field = NULL;
        long lo = 1, hi = 1 << 20;
        if (a[0] != '-') {
            if (dir) {
                fprintf(stderr, "bora synth: unexpected argument '%s'\nusage: bora %s\n", a, usage);
                return 2;
            }
            dir = a;
            continue;
        }
        if (!strcmp(a, "--arch")) {
            if (!v || (strcmp(v, "mistral") && strcmp(v, "ministral3"))) {
                fprintf(stderr, "bora synth: --arch: expected mistral or ministral3 (got '%s')\n", v ? v : "");
                return 2;
            }
            sp.ministral3 = !strcmp(v, "ministral3");
            i++;
            continue;
        }
        if (!strcmp(a, "--tokenizer")) {
            if (!v) {
                fprintf(stderr, "bora synth: --tokenizer needs a file\n");
                return 2;
            }
            sp.tokenizer_path = v;
            i++;
            continue;
        }
        if (!strcmp(a, "--seed")) {
            if (num(a, v, 0, 0x7fffffffL, &x))
                return 2;
            sp.seed = (uint64_t)x;
            i++;
            continue;
        }
        if (!strcmp(a, "--vocab")) field = &sp.vocab, lo = 32, hi = 1 << 22;
        else if (!strcmp(a, "--dim")) field = &sp.dim;
        else if (!strcmp(a, "--layers")) field = &sp.n_layers, hi = 256;
        else if (!strcmp(a, "--heads")) field = &sp.n_heads, hi = 256;
        else if (!strcmp(a, "--kv-heads")) field = &sp.n_kv_heads, hi = 256;
        else if (!strcmp(a, "--head-dim")) field = &sp.head_dim, lo = 2, hi = 1024;
        else if (!strcmp(a, "--hidden")) field = &sp.hidden_dim;
        else if (!strcmp(a, "--max-pos")) field = &sp.max_pos, lo = 16;
        else {
            fprintf(stderr, "bora synth: unknown option '%s'\nusage: bora %s\n", a, usage);
            return 2;
        }
        if (num(a, v, lo, hi, &x))
            return 2;
        *field = (int)x;
        i++;
    }
    if (!dir) {
        fprintf(stderr, "bora synth: no DIR\nusage: bora %s\n", usage);
        return 2;
    }
    /* everything that can be wrong is found before the directory is made */
    if (sp.n_heads % sp.n_kv_heads) {
        fprintf(stderr, "bora synth: --heads %d is not a multiple of --kv-heads %d\n", sp.n_heads, sp.n_kv_heads);
        return 2;
    }
    if (sp.head_dim % 2) {
        fprintf(stderr, "bora synth: --head-dim %d: must be even (RoPE rotates pairs)\n", sp.head_dim);
        return 2;
    }
    const double q = (double)sp.n_heads * sp.head_dim, kv = (double)sp.n_kv_heads * sp.head_dim;
    const double bytes = 2.0 * (2.0 * sp.vocab * sp.dim + sp.dim +
                                sp.n_layers * (sp.dim * (q + 2 * kv) + q * sp.dim + 3.0 * sp.dim * sp.hidden_dim + 2.0 * sp.dim));
    if (bytes > SYNTH_MAX_BYTES) {
        fprintf(stderr, "bora synth: that shape is %.1f GB of BF16 weights; synth writes test models of at most %.0f GB\n",
                bytes / 1e9, SYNTH_MAX_BYTES / 1e9);
        return 2;
    }
    struct bora_err err = { "" };
    if (sp.tokenizer_path) {
        struct tokenizer *t;
        if (tokenizer_open(&t, sp.tokenizer_path, &err)) {
            fprintf(stderr, "bora synth: --tokenizer: %s\n", err.msg);
            return 1;
        }
        const int tv = tokenizer_vocab_size(t);
        tokenizer_close(t);
        if (tv > sp.vocab) {
            fprintf(stderr, "bora synth: --tokenizer %s has %d tokens, more than --vocab %d: the model could not take "
                            "its ids (give --vocab %d or more)\n", sp.tokenizer_path, tv, sp.vocab, tv);
            return 2;
        }
    }
    if (synth_model_write(dir, &sp, &err)) {
        fprintf(stderr, "bora synth: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "bora synth: wrote %s (%s, random weights)\n", dir, sp.ministral3 ? "Ministral3ForCausalLM" : "MistralForCausalLM");
    if (!sp.tokenizer_path && sp.vocab < SYNTH_V3_VOCAB)
        fprintf(stderr, "bora synth: no tokenizer written: Mistral's v3 tokenizer has %d tokens, more than --vocab %d; "
                        "the model takes token ids (--ids), or give --tokenizer FILE\n", SYNTH_V3_VOCAB, sp.vocab);
    return 0;
}
