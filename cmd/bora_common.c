/* bora_common.c — shared option parsing, model and engine setup, and the generate loop. */
#include "cmd/bora_common.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/default_model.h"
#include "model/tokenizer.h"

int parse_id_list(const char *s, int32_t *ids, int cap, int *n)
{
    *n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "bora: --ids: '%s' is not a comma-separated list of token ids\n", s);
            return -EINVAL;
        }
        if (*n == cap) {
            fprintf(stderr, "bora: --ids: more than %d ids\n", cap);
            return -EINVAL;
        }
        ids[(*n)++] = (int32_t)v;
        if (*end == ',' && !end[1]) {
            fprintf(stderr, "bora: --ids: a trailing ',' (an id is missing)\n");
            return -EINVAL;
        }
        s = *end ? end + 1 : end;
    }
    if (!*n) {
        fprintf(stderr, "bora: --ids: empty list\n");
        return -EINVAL;
    }
    return 0;
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "bora: %s: expected a number in [%g, %g] (got '%s')\n", opt, lo, hi, s);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* Whether the command's usage text lists the option (as "[-n N]", "(--ids LIST |", " --out FILE"):
 * a command refuses the shared options it does not use instead of ignoring them. */
static bool usage_lists(const char *usage, const char *opt)
{
    const size_t n = strlen(opt);
    for (const char *p = usage; (p = strstr(p, opt)); p += n) {
        const char before = p == usage ? ' ' : p[-1], after = p[n];
        if ((before == ' ' || before == '[' || before == '(' || before == '|') &&
            (after == ' ' || after == ']' || after == ')' || after == '|' || after == 0))
            return true;
    }
    return false;
}

/* An integer option: digits only (no fraction, no sign, no hex), within [lo, hi]. */
static int parse_int(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || s[0] == '-' || s[0] == '+' || v < lo || v > hi) {
        fprintf(stderr, "bora: %s: expected a whole number from %ld to %ld (got '%s')\n", opt, lo, hi, s);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int run_opts_parse(struct run_opts *o, int argc, char **argv, const char *usage)
{
    static const char *const known[] = { "--default", "--ignore-eos", "--json", "--ids", "--prompt", "--chat", "--out",
                                         "-n", "--temperature", "--top-k", "--top-p", "--seed", "--ctx", "--backend",
                                         "--precision", "--kv" };
    const char *given[sizeof known / sizeof *known] = { 0 };   /* each option once */
    memset(o, 0, offsetof(struct run_opts, ids));
    o->n_ids = 0;
    o->prompt = o->chat_file = o->out = NULL;
    o->n_tokens = 32;
    o->sp = (struct sampler_params){ .temperature = 0, .top_p = 1, .top_k = 0, .seed = 0 };
    o->ignore_eos = o->json = false;
    o->backend = ENGINE_BACKEND_AUTO;
    o->precision = MODEL_PRECISION_AUTO;
    o->max_ctx = 0;
    o->kv = ENGINE_KV_BF16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
        long l;
        bool takes = true;
        if (a[0] == '-' && strcmp(a, "-h") && strcmp(a, "--help")) {
            size_t k = 0;
            while (k < sizeof known / sizeof *known && strcmp(a, known[k]))
                k++;
            if (k == sizeof known / sizeof *known || (*usage && !usage_lists(usage, a) && strcmp(a, "--default"))) {
                fprintf(stderr, "bora: unknown option '%s'\nusage: bora %s\n", a, usage);
                return -EINVAL;
            }
            if (given[k]) {
                fprintf(stderr, "bora: %s given twice\nusage: bora %s\n", a, usage);
                return -EINVAL;
            }
            given[k] = a;
        }
        if (!strcmp(a, "--default")) {
            o->is_default = true;
            takes = false;
        } else if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            takes = false;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
            takes = false;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: bora %s\n", usage);
            exit(0);
        } else if (a[0] != '-') {
            if (o->model_dir || o->is_default) {
                fprintf(stderr, "bora: unexpected argument '%s'\nusage: bora %s\n", a, usage);
                return -EINVAL;
            }
            if (!strcmp(a, "default"))
                o->is_default = true;
            else
                o->model_dir = a;
            takes = false;
        }
        if (!takes)
            continue;
        if (!v) {
            fprintf(stderr, "bora: %s needs a value\nusage: bora %s\n", a, usage);
            return -EINVAL;
        }
        i++;
        if (!strcmp(a, "--ids")) {
            if (parse_id_list(v, o->ids, RUN_MAX_IDS, &o->n_ids))
                return -EINVAL;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--chat")) {
            o->chat_file = v;
        } else if (!strcmp(a, "--out")) {
            o->out = v;
        } else if (!strcmp(a, "-n")) {
            if (parse_int(a, v, 1, 1 << 20, &l))
                return -EINVAL;
            o->n_tokens = (int)l;
        } else if (!strcmp(a, "--temperature")) {
            if (parse_num(a, v, 0, 100, &d))
                return -EINVAL;
            o->sp.temperature = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            if (parse_int(a, v, 0, 1 << 24, &l))
                return -EINVAL;
            o->sp.top_k = (uint32_t)l;
        } else if (!strcmp(a, "--top-p")) {
            if (parse_num(a, v, 1e-9, 1, &d))
                return -EINVAL;
            o->sp.top_p = (float)d;
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            o->sp.seed = strtoull(v, &end, 10);
            if (end == v || *end || errno || v[0] == '-' || v[0] == '+') {
                fprintf(stderr, "bora: --seed: expected an unsigned integer (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--ctx")) {
            if (parse_int(a, v, 1, 1 << 24, &l))
                return -EINVAL;
            o->max_ctx = (int)l;
        } else if (!strcmp(a, "--backend")) {
            if (engine_backend_parse(v, &o->backend)) {
                fprintf(stderr, "bora: --backend: expected auto, cpu or cuda (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--kv")) {
            if (engine_kv_parse(v, &o->kv)) {
                fprintf(stderr, "bora: --kv: expected bf16 or fp8 (got '%s')\n", v);
                return -EINVAL;
            }
        } else if (!strcmp(a, "--precision")) {
            if (model_precision_parse(v, &o->precision)) {
                fprintf(stderr, "bora: --precision: expected auto, bf16 or fp8 (got '%s')\n", v);
                return -EINVAL;
            }
        } else {
            fprintf(stderr, "bora: unknown option '%s'\nusage: bora %s\n", a, usage);
            return -EINVAL;
        }
    }
    /* one prompt: text, a chat file or ids */
    if ((o->prompt != NULL) + (o->chat_file != NULL) + (o->n_ids > 0) > 1) {
        fprintf(stderr, "bora: give one of --prompt, --chat and --ids\nusage: bora %s\n", usage);
        return -EINVAL;
    }
    if (o->prompt && !o->prompt[0]) {
        fprintf(stderr, "bora: --prompt: empty (a request needs at least one character)\n");
        return -EINVAL;
    }
    return 0;
}

int open_model(struct run_opts *o, struct model **m)
{
    struct bora_err err = { "" };
    if (o->is_default) {
        if (default_model_ensure(o->default_dir, sizeof o->default_dir, &err)) {
            fprintf(stderr, "bora: %s\n", err.msg);
            return -1;
        }
        o->model_dir = o->default_dir;
        fprintf(stderr, "bora: using the built-in default model (random weights, not a trained model: its text is gibberish)\n");
    }
    struct model_open_opts mo = { .precision = o->precision };
    int rc = model_open(m, o->model_dir, &mo, &err);
    if (rc)
        fprintf(stderr, "bora: %s\n", err.msg);
    if (rc && o->is_default && strstr(err.msg, o->default_dir))   /* a file of the cached copy refused: damaged
                                                                    * from outside (it is written once, atomically) */
        fprintf(stderr, "bora: the built-in model's cached copy in %s is damaged; delete that folder and the next "
                        "run generates it again\n", o->default_dir);
    return rc;
}

int open_engine(const struct run_opts *o, const struct model *m, int tokens, struct engine **e)
{
    struct bora_err err = { "" };
    struct engine_opts eo = { .backend = o->backend, .max_ctx = o->max_ctx, .kv = o->kv };
    const int model_ctx = m->cfg.max_pos;   /* max_position_embeddings (0: not stated) */
    if (eo.max_ctx == 0 && model_ctx > 0 && tokens > model_ctx) {   /* never past the model silently */
        fprintf(stderr, "bora: %d tokens (the prompt and -n) are more than the model's context of %d "
                        "(max_position_embeddings); lower -n, or give --ctx N to run past it anyway\n",
                tokens, model_ctx);
        return -EINVAL;
    }
    if (eo.max_ctx > 0 && model_ctx > 0 && eo.max_ctx > model_ctx)
        fprintf(stderr, "bora: note: --ctx %d is past the model's context of %d (max_position_embeddings): "
                        "positions past it are outside what the model was trained on\n", eo.max_ctx, model_ctx);
    if (eo.max_ctx == 0 && tokens > 4096)
        eo.max_ctx = tokens;
    int rc = engine_open(e, m, &eo, &err);
    if (rc) {
        fprintf(stderr, "bora: cannot start the %s engine: %s\n",
                o->backend == ENGINE_BACKEND_CUDA ? "cuda" : o->backend == ENGINE_BACKEND_CPU ? "cpu" : "auto", err.msg);
        return rc;
    }
    if ((*e)->max_ctx < tokens) {
        fprintf(stderr, "bora: %d tokens do not fit the engine's context of %d\n", tokens, (*e)->max_ctx);
        engine_close(*e);
        return -EINVAL;
    }
    return 0;
}

/* Reads a whole file (for --chat); NULL with a message on failure. */
static char *slurp(const char *path, size_t *len)
{
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "bora: %s: not a regular file%s\n", path, S_ISDIR(st.st_mode) ? " (a directory)" : "");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bora: %s: cannot open: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        char *nb = realloc(b, cap *= 2);
        if (!nb)
            free(b);
        b = nb;
    }
    if (!b || ferror(f)) {
        fprintf(stderr, "bora: %s: cannot read\n", path);
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = n;
    return b;
}

/* Turns --prompt (BOS + text, no template) or --chat (the model's chat template) into ids. */
static int encode_prompt(struct run_opts *o, const struct tokenizer *tok)
{
    struct bora_err err = { "" };
    size_t n = 0;
    int rc;
    if (o->prompt) {
        rc = tokenizer_encode(tok, o->prompt, strlen(o->prompt), true, o->ids, RUN_MAX_IDS, &n, &err);
    } else {
        size_t len;
        char *json = slurp(o->chat_file, &len);
        if (!json)
            return -EINVAL;
        rc = chat_encode_request_json(tok, json, len, o->ids, RUN_MAX_IDS, &n, &err);
        free(json);
    }
    if (rc == -ENOSPC)
        fprintf(stderr, "bora: the prompt is longer than %d tokens\n", RUN_MAX_IDS);
    else if (rc)
        fprintf(stderr, "bora: %s: %s\n", o->prompt ? "--prompt" : o->chat_file, err.msg);
    o->n_ids = (int)n;
    return rc;
}

/* Appends s (JSON-escaped) to stdout. */
static void json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

int generate_run(struct run_opts *o)
{
    if (!o->n_ids && !o->prompt && !o->chat_file) {
        fprintf(stderr, "bora: generate needs --ids, --prompt or --chat\n");
        return -EINVAL;
    }
    struct model *m;
    if (open_model(o, &m))
        return -1;
    int rc = -1;
    struct engine *e = NULL;
    struct tokenizer *tok = NULL;
    struct sampler s = { 0 };
    int32_t *out_ids = NULL;
    float *logits = NULL;
    char *text = NULL;
    size_t text_len = 0;
    struct bora_err err = { "" };
    if (m->tokenizer_path[0]) {
        if (tokenizer_open_for(&tok, m->tokenizer_path, m->cfg.vocab_size, &err)) {
            fprintf(stderr, "bora: %s\n", err.msg);
            goto out;
        }
    } else if (o->prompt || o->chat_file) {
        fprintf(stderr, "bora: %s: no tokenizer (tekken.json, tokenizer.model or tokenizer.json) for --prompt/--chat\n", m->dir);
        goto out;
    }
    if ((o->prompt || o->chat_file) && encode_prompt(o, tok))
        goto out;
    for (int i = 0; i < o->n_ids; i++)
        if (o->ids[i] >= m->cfg.vocab_size) {
            fprintf(stderr, "bora: --ids: token id %d is outside the vocabulary (%d)\n", o->ids[i], m->cfg.vocab_size);
            goto out;
        }
    if (open_engine(o, m, o->n_ids + o->n_tokens, &e))
        goto out;
    if (sampler_init(&s, m->cfg.vocab_size, &o->sp)) {
        fprintf(stderr, "bora: bad sampling parameters\n");
        goto out;
    }
    logits = malloc((size_t)m->cfg.vocab_size * sizeof *logits);
    out_ids = malloc((size_t)o->n_tokens * sizeof *out_ids);
    text = malloc((size_t)o->n_tokens * DETOK_MAX_DELTA + DETOK_MAX_DELTA);
    if (!logits || !out_ids || !text) {
        fprintf(stderr, "bora: out of memory\n");
        goto out;
    }
    struct detok d;
    if (tok)
        detok_init(&d, tok);
    int32_t eos = tok ? tokenizer_eos_id(tok) : m->cfg.eos_id;
    /* the same choice of the next id as borad (engine_forward_next: the GPU's sampler on CUDA) */
    int32_t id = -1;
    int r = engine_forward_next(e, o->ids, o->n_ids, 0, &s, logits, &id), n = 0, pos = o->n_ids;
    while (!r && n < o->n_tokens) {
        if (id == eos && !o->ignore_eos)
            break;
        out_ids[n++] = id;
        size_t dn = 0;
        if (tok)
            detok_push(&d, id, text + text_len, DETOK_MAX_DELTA, &dn);
        if (!o->json) {
            if (tok)
                fwrite(text + text_len, 1, dn, stdout);
            else
                printf("%s%d", n > 1 ? " " : "", id);
            fflush(stdout);
        }
        text_len += dn;
        if (n < o->n_tokens) {
            const int32_t prev = id;
            r = engine_forward_next(e, &prev, 1, pos++, &s, logits, &id);
        }
    }
    if (r) {
        fprintf(stderr, "bora: engine failed: %s\n", engine_error_text(e, r));
        goto out;
    }
    if (tok) {
        size_t dn = 0;
        detok_flush(&d, text + text_len, DETOK_MAX_DELTA, &dn);
        if (!o->json)
            fwrite(text + text_len, 1, dn, stdout);
        text_len += dn;
    }
    if (o->json) {
        printf("{\"ids\":[");
        for (int i = 0; i < n; i++)
            printf("%s%d", i ? "," : "", out_ids[i]);
        printf("],\"text\":");
        json_string(text, text_len);
        printf("}\n");
    } else {
        printf("\n");
    }
    rc = 0;
out:
    free(text);
    free(logits);
    free(out_ids);
    sampler_fini(&s);
    tokenizer_close(tok);
    engine_close(e);
    model_close(m);
    return rc;
}
