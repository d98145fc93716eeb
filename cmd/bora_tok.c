/* bora_tok.c — `bora tokenize`, `bora detokenize`, `bora chat-encode`: the tokenizer and the
 * chat template from the command line (JSON arrays of ids on stdout, messages on stderr). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/cli.h"
#include "model/default_model.h"
#include "model/tokenizer.h"

#define TOK_MAX_INPUT (64u << 20)   /* bytes read from a --file or REQUEST.json */

static int read_all(const char *path, char **buf, size_t *len)
{
    struct stat st;
    if (strcmp(path, "-") && stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "bora: %s: not a regular file%s\n", path, S_ISDIR(st.st_mode) ? " (a directory)" : "");
        return -1;
    }
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "bora: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        if (cap >= TOK_MAX_INPUT) {
            fprintf(stderr, "bora: %s: larger than %u bytes\n", path, TOK_MAX_INPUT);
            free(b);
            b = NULL;
            break;
        }
        char *nb = realloc(b, cap * 2);
        if (!nb) { free(b); b = NULL; break; }
        b = nb;
        cap *= 2;
    }
    bool bad = ferror(f);
    if (f != stdin)
        fclose(f);
    if (!b || bad) {
        if (bad) fprintf(stderr, "bora: %s: read error\n", path);
        free(b);
        return -1;
    }
    *buf = b;
    *len = n;
    return 0;
}

/* path: a model directory, a tokenizer file, or "default" (the built-in default model's). */
static int open_tok(const char *path, struct tokenizer **t)
{
    struct bora_err err = { "" };
    static char dflt[4096];   /* this command's only model */
    if (!strcmp(path, "default")) {
        if (default_model_ensure(dflt, sizeof dflt, &err)) {
            fprintf(stderr, "bora: %s\n", err.msg);
            return -1;
        }
        path = dflt;
    }
    int rc = tokenizer_open(t, path, &err);
    if (rc) {
        fprintf(stderr, "bora: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void print_ids(const int32_t *ids, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++)
        printf(i ? ", %d" : "%d", ids[i]);
    puts("]");
}

/* Runs fn with a growing id buffer until it fits; prints the ids. */
typedef int (*encode_fn)(const struct tokenizer *t, const void *arg, int32_t *ids, size_t cap,
                         size_t *n, struct bora_err *err);

/* src: the input file an error is about (chat-encode's REQUEST.json), or NULL. */
static int encode_print(const struct tokenizer *t, encode_fn fn, const void *arg, const char *src)
{
    size_t cap = 4096, n = 0;
    struct bora_err err = { "" };
    for (int tries = 0; tries < 2; tries++) {
        int32_t *ids = malloc(cap * sizeof *ids);
        if (!ids) {
            fprintf(stderr, "bora: out of memory for %zu ids\n", cap);
            return 1;
        }
        int rc = fn(t, arg, ids, cap, &n, &err);
        if (rc == 0)
            print_ids(ids, n);
        free(ids);
        if (rc == 0)
            return 0;
        if (rc != -ENOSPC) {
            fprintf(stderr, "bora: %s%s%s\n", src ? src : "", src ? ": " : "", err.msg);
            return 1;
        }
        cap = n;
    }
    fprintf(stderr, "bora: id count changed between calls\n");
    return 1;
}

struct text_arg {
    const char *text;
    size_t len;
    bool bos;
};

static int encode_text(const struct tokenizer *t, const void *arg, int32_t *ids, size_t cap,
                       size_t *n, struct bora_err *err)
{
    const struct text_arg *a = arg;
    return tokenizer_encode(t, a->text, a->len, a->bos, ids, cap, n, err);
}

static int encode_request(const struct tokenizer *t, const void *arg, int32_t *ids, size_t cap,
                          size_t *n, struct bora_err *err)
{
    const struct text_arg *a = arg;
    return chat_encode_request_json(t, a->text, a->len, ids, cap, n, err);
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *file = NULL;
    bool bos = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "--file") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--bos")) bos = true;
        else if (!model && argv[i][0] != '-') model = argv[i];
        else {
            const bool no_value = (!strcmp(argv[i], "--text") || !strcmp(argv[i], "--file")) && i + 1 == argc;
            fprintf(stderr, no_value ? "bora tokenize: %s needs a value\n" : "bora tokenize: unexpected argument '%s'\n",
                    argv[i]);
            return 2;
        }
    }
    if (!model || !!text == !!file) {
        fprintf(stderr, "usage: bora tokenize MODEL_DIR|TOKENIZER_FILE (--text TEXT | --file F) [--bos]\n");
        return 2;
    }
    struct tokenizer *t;
    if (open_tok(model, &t))
        return 1;
    char *buf = NULL;
    struct text_arg a = { text, text ? strlen(text) : 0, bos };
    int rc = 1;
    if (file) {
        if (read_all(file, &buf, &a.len))
            goto out;
        a.text = buf;
    }
    rc = encode_print(t, encode_text, &a, NULL);
out:
    free(buf);
    tokenizer_close(t);
    return rc;
}

static int parse_id(const char *s, int32_t *id)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT32_MAX)
        return -1;
    *id = (int32_t)v;
    return 0;
}

int cmd_detokenize(int argc, char **argv)
{
    if (argc < 3) {   /* no ids: nothing to decode is a usage error, not an empty line */
        fprintf(stderr, "usage: bora detokenize MODEL_DIR|TOKENIZER_FILE ID...\n");
        return 2;
    }
    struct tokenizer *t;
    if (open_tok(argv[1], &t))
        return 1;
    struct detok d;
    detok_init(&d, t);
    char out[DETOK_MAX_DELTA];
    size_t n;
    int rc = 0;
    for (int i = 2; i < argc && rc == 0; i++) {
        int32_t id;
        if (parse_id(argv[i], &id) || id >= tokenizer_vocab_size(t)) {
            fprintf(stderr, "bora detokenize: '%s' is not an id in 0..%d\n", argv[i],
                    tokenizer_vocab_size(t) - 1);
            rc = 1;
            break;
        }
        if (detok_push(&d, id, out, sizeof out, &n)) {
            fprintf(stderr, "bora detokenize: id %d decodes to more than %zu bytes\n", id, sizeof out);
            rc = 1;
            break;
        }
        fwrite(out, 1, n, stdout);
    }
    if (rc == 0 && detok_flush(&d, out, sizeof out, &n) == 0)
        fwrite(out, 1, n, stdout);
    if (rc == 0)
        putchar('\n');
    tokenizer_close(t);
    return rc;
}

int cmd_chat_encode(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bora chat-encode MODEL_DIR|TOKENIZER_FILE REQUEST.json\n");
        return 2;
    }
    struct tokenizer *t;
    if (open_tok(argv[1], &t))
        return 1;
    char *buf;
    struct text_arg a = { NULL, 0, false };
    int rc = 1;
    if (read_all(argv[2], &buf, &a.len) == 0) {
        a.text = buf;
        rc = encode_print(t, encode_request, &a, argv[2]);
        free(buf);
    }
    tokenizer_close(t);
    return rc;
}
