/* tekken_tokenizer.c — the Tekken kind behind the tokenizer front (tokenizer.h): opens a
 * tekken.json with model/tekken.c, fills the front's per-id tables (special tokens are control
 * tokens; the others decode to their raw bytes) and hands encoding to tekken_encode. A file
 * without the special tokens the front needs (<s>, </s>, [INST], [/INST]) is refused. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "model/tekken.h"
#include "model/tokenizer_impl.h"

static int tekken_kind_encode(const struct tokenizer *t, const char *text, size_t len, int32_t *ids,
                              size_t cap, size_t *n_out, struct bora_err *err)
{
    long n = tekken_encode(t->impl, text, len, ids, cap, err);
    *n_out = n > 0 ? (size_t)n : 0;
    if (n < 0)
        return (int)n;
    return (size_t)n > cap ? -ENOSPC : 0;
}

static void tekken_kind_destroy(struct tokenizer *t)
{
    tekken_close(t->impl);
    t->impl = NULL;
}

/* mistral-common picks the instruct format from config.version: v7 and later put system
 * prompts in [SYSTEM_PROMPT] blocks; v3 and earlier (NeMo 240718) use the v3 layout. */
static bool tekken_kind_is_v7(const struct tekken *tk)
{
    const char *v = tekken_version(tk);
    if (v[0] != 'v' || v[1] < '0' || v[1] > '9')
        return true;                                 /* absent or unknown: a recent model */
    return atoi(v + 1) >= 7;
}

/* The special tokens the front relies on: BOS for tokenizer_encode(bos) and the chat template,
 * EOS to end assistant turns and generation, [INST]/[/INST] for the instruct format (without
 * them the chat template would fall back to SentencePiece v1 text, which no Tekken model uses).
 * Every published tekken.json has all four (ids 1 to 4). */
static int tekken_kind_check_specials(const struct tekken *tk, const char *name, struct bora_err *err)
{
    static const char *const need[][2] = {
        { "<s>", "BOS" }, { "</s>", "EOS" }, { "[INST]", "the chat template" },
        { "[/INST]", "the chat template" },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(need); i++)
        if (tekken_special_find(tk, need[i][0]) < 0)
            return bora_errf(err, -EINVAL, "%s: special_tokens has no \"%s\" (%s needs it)", name,
                             need[i][0], need[i][1]);
    return 0;
}

static int tekken_kind_tables(struct tokenizer *t, const struct tekken *tk, const char *name, struct bora_err *err)
{
    size_t n = (size_t)t->n_vocab;
    const char **pieces = malloc(n * sizeof *pieces);
    uint32_t *lens = malloc(n * sizeof *lens);
    t->piece_attr = calloc(n, 1);
    int rc = -ENOMEM;
    if (pieces && lens && t->piece_attr) {
        for (int32_t id = 0; id < t->n_vocab; id++) {
            size_t len = 0;
            pieces[id] = (const char *)tekken_token_bytes(tk, id, &len);
            lens[id] = (uint32_t)len;
            if (tekken_token_is_special(tk, id) == 1)
                t->piece_attr[id] = TOK_ATTR_CONTROL;
        }
        rc = tokenizer_tables_build(t, pieces, lens, NULL, false, name, err);   /* no byte-fallback ids */
    } else {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory", name);
    }
    free(pieces);
    free(lens);
    return rc;
}

int tekken_tokenizer_open(struct tokenizer **out, const char *buf, size_t len, const char *name,
                          struct bora_err *err)
{
    *out = NULL;
    struct tekken *tk;
    int rc = tekken_open_buffer(&tk, buf, len, name, err);
    if (rc)
        return rc;
    if ((rc = tekken_kind_check_specials(tk, name, err)) != 0) {
        tekken_close(tk);
        return rc;
    }
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        tekken_close(tk);
        return bora_errf(err, -ENOMEM, "%s: out of memory", name);
    }
    t->kind = TOKENIZER_TEKKEN;
    t->impl = tk;
    t->encode = tekken_kind_encode;
    t->destroy = tekken_kind_destroy;
    t->n_vocab = tekken_vocab_size(tk);
    t->bos_id = tekken_bos_id(tk);                  /* both present: checked above */
    t->eos_id = tekken_eos_id(tk);
    t->unk_id = tekken_unk_id(tk) >= 0 ? tekken_unk_id(tk) : -1;
    t->strip_first_space = false;                    /* no dummy prefix in Tekken */
    t->utf8_maximal_subpart = true;                  /* tiktoken decodes with errors="replace" */
    t->chat_v7 = tekken_kind_is_v7(tk);
    rc = tekken_kind_tables(t, tk, name, err);
    if (rc) {
        tokenizer_close(t);
        return rc;
    }
    *out = t;
    return 0;
}
