/* bora_model.c — `bora info`, `bora logits` and `bora generate`: open a checkpoint, run the
 * engine, print what it computed. Shared option parsing lives in cmd/bora_common.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/bora_common.h"
#include "cmd/cli.h"
#include "model/engine.h"
#include "model/tokenizer.h"
#include "model/sampler.h"

int cmd_info(int argc, char **argv)
{
    struct run_opts o;
    if (run_opts_parse(&o, argc, argv, "info MODEL_DIR|default [--precision bf16|fp8]"))
        return 2;
    if (!o.model_dir && !o.is_default) {
        fprintf(stderr, "bora: info: no MODEL_DIR\nusage: bora info MODEL_DIR|default [--precision bf16|fp8]\n");
        return 2;
    }
    struct model *m;
    if (open_model(&o, &m))
        return 1;
    const struct model_config *c = &m->cfg;
    printf("model:         %s%s\n", m->dir, o.is_default ? " (built-in default: random weights, not a trained model)" : "");
    printf("architecture:  %s (%s layout)\n", model_arch_name(c->arch), c->layout == MODEL_LAYOUT_HF ? "Hugging Face" : "Mistral native");
    printf("layers:        %d\n", c->n_layers);
    printf("hidden:        %d   ffn: %d   vocab: %d\n", c->dim, c->hidden_dim, c->vocab_size);
    printf("heads:         %d query / %d key-value, head_dim %d\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("rope:          %s, theta %g%s", c->rope == ROPE_YARN ? "YaRN" : "default", c->rope_theta,
           c->rope_interleaved ? ", interleaved rows" : "");
    if (c->rope == ROPE_YARN)
        printf(", factor %g, original %d, attention factor %.7g", c->yarn_factor, c->yarn_orig_max, m->rope_attn_factor);
    printf("\n");
    if (c->qscale_beta > 0)
        printf("query scale:   1 + %g·ln(1 + ⌊pos/%d⌋)\n", c->qscale_beta, c->qscale_orig_max);
    printf("sliding window:%s%d\n", " ", c->sliding_window);
    printf("tied head:     %s\n", c->tied ? "yes" : "no");
    printf("max positions: %d\n", c->max_pos);
    printf("dtypes:        embeddings %s, linear %s, output %s\n", bora_dtype_name(m->tok_emb.dtype),
           bora_dtype_name(m->linear_dtype), bora_dtype_name(m->output.dtype));
    printf("parameters:    %llu (%.3f B)\n", (unsigned long long)m->n_params, m->n_params / 1e9);
    printf("weight bytes:  %llu (%.2f GiB)\n", (unsigned long long)m->weight_bytes, m->weight_bytes / (double)(1ull << 30));
    if (m->tokenizer_path[0]) {   /* opened, so a corrupt one is named here and not at the first prompt */
        struct tokenizer *t = NULL;
        struct bora_err err = { "" };
        if (tokenizer_open_for(&t, m->tokenizer_path, m->cfg.vocab_size, &err) != 0) {
            fflush(stdout);
            fprintf(stderr, "bora: %s\n", err.msg);
            model_close(m);
            return 1;
        }
        printf("tokenizer:     %s (%d tokens)\n", m->tokenizer_path, tokenizer_vocab_size(t));
        tokenizer_close(t);
    } else {
        printf("tokenizer:     (none found)\n");
    }
    model_close(m);
    return 0;
}

int cmd_logits(int argc, char **argv)
{
    struct run_opts o;
    const char *usage = "logits MODEL_DIR --ids 1,3,7694 [--backend cpu|cuda] [--precision bf16|fp8] [--kv bf16|fp8] --out FILE|-";
    if (run_opts_parse(&o, argc, argv, usage))
        return 2;
    if ((!o.model_dir && !o.is_default) || !o.n_ids || !o.out) {
        fprintf(stderr, "usage: bora %s\n", usage);
        return 2;
    }
    struct model *m;
    struct engine *e;
    if (open_model(&o, &m))
        return 1;
    if (open_engine(&o, m, o.n_ids, &e)) {
        model_close(m);
        return 1;
    }
    int rc = 1;
    const size_t V = (size_t)m->cfg.vocab_size;
    float *logits = malloc((size_t)o.n_ids * V * sizeof *logits);
    FILE *f = NULL;
    if (!logits) {
        fprintf(stderr, "bora: out of memory for %d × %zu logits\n", o.n_ids, V);
        goto out;
    }
    for (int i = 0; i < o.n_ids; i++)
        if (o.ids[i] >= m->cfg.vocab_size) {
            fprintf(stderr, "bora: --ids: token id %d is outside the vocabulary (%d)\n", o.ids[i], m->cfg.vocab_size);
            goto out;
        }
    int r = engine_forward_all(e, o.ids, o.n_ids, 0, logits);
    if (r) {
        fprintf(stderr, "bora: engine failed: %s\n", engine_error_text(e, r));
        goto out;
    }
    f = strcmp(o.out, "-") ? fopen(o.out, "wb") : stdout;   /* "-": standard output, as tokenize --file - reads stdin */
    if (!f || fwrite(logits, sizeof *logits, (size_t)o.n_ids * V, f) != (size_t)o.n_ids * V) {
        fprintf(stderr, "bora: %s: cannot write: %s\n", o.out, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f && (f == stdout ? fflush(f) : fclose(f)) && !rc) {
        fprintf(stderr, "bora: %s: write failed: %s\n", o.out, strerror(errno));
        rc = 1;
    }
    free(logits);
    engine_close(e);
    model_close(m);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    struct run_opts o;
    const char *usage = "generate MODEL_DIR|default (--ids LIST | --prompt TEXT | --chat FILE) [-n N] [--temperature T] "
                        "[--top-k K] [--top-p P] [--seed S] [--ignore-eos] [--backend cpu|cuda] "
                        "[--precision bf16|fp8] [--kv bf16|fp8] [--ctx N] [--json]";
    if (run_opts_parse(&o, argc, argv, usage))
        return 2;
    if (!o.model_dir && !o.is_default) {
        fprintf(stderr, "bora: generate: no MODEL_DIR\nusage: bora %s\n", usage);
        return 2;
    }
    if (!o.prompt && !o.chat_file && !o.n_ids) {
        fprintf(stderr, "bora: generate: no prompt (--prompt, --chat or --ids)\nusage: bora %s\n", usage);
        return 2;
    }
    return generate_run(&o) ? 1 : 0;
}

int cmd_run_default(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr, "bora: run-default takes no arguments (got '%s'); for options, use "
                        "'bora generate default ...'\n", argv[1]);
        return 2;
    }
    char *args[] = { "generate", "--default", "--prompt",
                     "Hello! My order #4512 has not arrived yet. Can you help me?", "-n", "32", NULL };
    struct run_opts o;
    if (run_opts_parse(&o, 6, args, ""))
        return 2;
    return generate_run(&o) ? 1 : 0;
}
