/* hf_tokenizer.c — loads a Hugging Face tokenizer.json holding a SentencePiece-style BPE
 * vocabulary (Mistral's HF repositories) into the SentencePiece encoder: merge rank → score,
 * added tokens → control / user-defined pieces, <0xNN> → byte tokens, Prepend("▁") → dummy prefix.
 * Normalizers and pre-tokenizers other than Mistral's are refused rather than ignored. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "model/sentencepiece.h"

#define HF_MAX_VOCAB (1 << 22)   /* ids above this are refused */

struct hf_vocab {
    int32_t n;
    const char **piece;
    uint32_t *len;
    float *score;
    uint8_t *type, *mergeable;
};

static void hf_vocab_free(struct hf_vocab *v)
{
    free(v->piece); free(v->len); free(v->score); free(v->type); free(v->mergeable);
}

static int hf_vocab_alloc(struct hf_vocab *v, int32_t n)
{
    v->n = n;
    v->piece = calloc((size_t)n, sizeof *v->piece);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->score = calloc((size_t)n, sizeof *v->score);
    v->type = calloc((size_t)n, 1);
    v->mergeable = calloc((size_t)n, 1);
    return v->piece && v->len && v->score && v->type && v->mergeable ? 0 : -ENOMEM;
}

/* Largest id in model.vocab and added_tokens, or -1 with a message. */
static int32_t hf_max_id(json_t *vocab, json_t *added, const char *name, struct bora_err *err)
{
    json_int_t max = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= HF_MAX_VOCAB)
            return bora_errf(err, -EINVAL, "%s: model.vocab[\"%s\"] is not an id in 0..%d", name, k, HF_MAX_VOCAB - 1);
        if (json_integer_value(v) > max)
            max = json_integer_value(v);
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= HF_MAX_VOCAB
            || !json_is_string(json_object_get(v, "content")))
            return bora_errf(err, -EINVAL, "%s: added_tokens[%zu] needs an id and a content", name, i);
        if (json_integer_value(id) > max)
            max = json_integer_value(id);
    }
    return (int32_t)max;
}

static int hf_set(struct hf_vocab *hv, int32_t id, json_t *str, uint8_t type)
{
    hv->piece[id] = json_string_value(str);
    hv->len[id] = (uint32_t)json_string_length(str);
    hv->type[id] = type;
    return 0;
}

/* Pieces and types from model.vocab, then added_tokens (special → control, else user-defined).
 * An id may be given twice only with the same content: Mistral's files repeat their control
 * tokens in added_tokens with the id and content of model.vocab. */
static int hf_fill(struct hf_vocab *hv, json_t *vocab, json_t *added, const char *unk,
                   bool byte_fallback, const char *name, struct bora_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (hv->piece[id])
            return bora_errf(err, -EINVAL, "%s: id %d defined twice (model.vocab \"%.40s\" and "
                             "\"%.40s\")", name, id, hv->piece[id], k);
        hv->piece[id] = k;
        hv->len[id] = (uint32_t)strlen(k);
        bool is_byte = byte_fallback && hv->len[id] == 6 && !strncmp(k, "<0x", 3) && k[5] == '>';
        hv->type[id] = unk && !strcmp(k, unk) ? SP_UNKNOWN : is_byte ? SP_BYTE : SP_NORMAL;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        json_t *c = json_object_get(v, "content");
        if (hv->piece[id] && (hv->len[id] != json_string_length(c)
                              || memcmp(hv->piece[id], json_string_value(c), hv->len[id])))
            return bora_errf(err, -EINVAL, "%s: id %d defined twice (\"%.40s\" and added_tokens[%zu] "
                             "\"%.40s\")", name, id, hv->piece[id], i, json_string_value(c));
        bool special = json_is_true(json_object_get(v, "special"));
        uint8_t ty = unk && !strcmp(json_string_value(c), unk) ? SP_UNKNOWN
                   : special ? SP_CONTROL : SP_USER_DEFINED;
        hf_set(hv, id, c, ty);
    }
    return 0;
}

/* merges: "a b" strings or ["a", "b"] pairs; the merged piece gets score -rank. */
static int hf_merges(struct hf_vocab *hv, json_t *vocab, json_t *merges, const char *name,
                     struct bora_err *err)
{
    size_t i;
    json_t *m;
    char buf[1024];
    json_array_foreach(merges, i, m) {
        size_t n = 0;
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            size_t sl = json_string_length(m);
            if (!sp || sl >= sizeof buf)
                return bora_errf(err, -EINVAL, "%s: model.merges[%zu] is not \"left right\"", name, i);
            memcpy(buf, s, (size_t)(sp - s));
            n = (size_t)(sp - s);
            memcpy(buf + n, sp + 1, sl - n - 1);
            n = sl - 1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0))
                   && json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            size_t la = json_string_length(a), lb = json_string_length(b);
            if (la + lb >= sizeof buf)
                return bora_errf(err, -EINVAL, "%s: model.merges[%zu] is too long", name, i);
            memcpy(buf, json_string_value(a), la);
            memcpy(buf + la, json_string_value(b), lb);
            n = la + lb;
        } else {
            return bora_errf(err, -EINVAL, "%s: model.merges[%zu] is neither a string nor a pair", name, i);
        }
        buf[n] = 0;
        json_t *id = json_object_get(vocab, buf);
        if (!id)
            return bora_errf(err, -EINVAL, "%s: model.merges[%zu] makes '%s', not in the vocabulary", name, i, buf);
        int32_t k = (int32_t)json_integer_value(id);
        if (!hv->mergeable[k]) {
            hv->mergeable[k] = 1;
            hv->score[k] = -(float)i;
        }
    }
    return 0;
}

/* ---- normalizer and pre_tokenizer ------------------------------------------------------- */

/* bora's encoder does what Mistral's SentencePiece-style tokenizer.json files ask for, in
 * either of the two spellings they are published with:
 *   normalizer Sequence [Prepend "▁", Replace " " → "▁"], pre_tokenizer null (older files);
 *   normalizer null, pre_tokenizer Metaspace "▁", prepend_scheme "first", split false (newer).
 * Anything else (ByteLevel, NFKC, Split, a Metaspace that splits words, ...) would be encoded
 * wrongly, so it is refused (-ENOTSUP, naming the component). *dummy_prefix: ▁ is prepended. */
#define HF_SPACE "\xE2\x96\x81"   /* ▁ U+2581 */
#define HF_SUPPORTED "bora implements Mistral's: normalizer Sequence [Prepend \"" HF_SPACE "\", " \
                     "Replace \" \" with \"" HF_SPACE "\"], or pre_tokenizer Metaspace with " \
                     "prepend_scheme \"first\" and split false"

static bool hf_str_is(json_t *o, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v && !strcmp(v, want);
}

static const char *hf_type(json_t *o)
{
    const char *t = json_string_value(json_object_get(o, "type"));
    return t ? t : json_is_object(o) ? "(no type)" : "(not an object)";
}

static int hf_normalizer(json_t *norm, const char *name, bool *dummy_prefix, struct bora_err *err)
{
    json_t *list = json_object_get(norm, "normalizers");
    if (!hf_str_is(norm, "type", "Sequence") || !json_is_array(list))
        return bora_errf(err, -ENOTSUP, "%s: normalizer %s is not supported (%s)", name,
                         hf_type(norm), HF_SUPPORTED);
    bool replace = false;
    size_t i;
    json_t *n;
    json_array_foreach(list, i, n) {
        json_t *pat = json_object_get(n, "pattern");
        if (hf_str_is(n, "type", "Prepend") && hf_str_is(n, "prepend", HF_SPACE) && !*dummy_prefix) {
            *dummy_prefix = true;
        } else if (hf_str_is(n, "type", "Replace") && hf_str_is(pat, "String", " ")
                   && json_object_size(pat) == 1 && hf_str_is(n, "content", HF_SPACE) && !replace) {
            replace = true;
        } else {
            return bora_errf(err, -ENOTSUP, "%s: normalizer Sequence[%zu] %s is not supported (%s)",
                             name, i, hf_type(n), HF_SUPPORTED);
        }
    }
    if (!replace)
        return bora_errf(err, -ENOTSUP, "%s: the normalizer does not replace \" \" with \"" HF_SPACE
                         "\" (%s)", name, HF_SUPPORTED);
    return 0;
}

static int hf_pre_tokenizer(json_t *pre, const char *name, bool *dummy_prefix, struct bora_err *err)
{
    json_t *repl = json_object_get(pre, "replacement");
    if (!hf_str_is(pre, "type", "Metaspace"))
        return bora_errf(err, -ENOTSUP, "%s: pre_tokenizer %s is not supported (%s)", name,
                         hf_type(pre), HF_SUPPORTED);
    if (repl && !hf_str_is(pre, "replacement", HF_SPACE))
        return bora_errf(err, -ENOTSUP, "%s: pre_tokenizer Metaspace with a replacement other than "
                         "\"" HF_SPACE "\" is not supported", name);
    if (!hf_str_is(pre, "prepend_scheme", "first"))
        return bora_errf(err, -ENOTSUP, "%s: pre_tokenizer Metaspace needs prepend_scheme \"first\" "
                         "(%s)", name, HF_SUPPORTED);
    if (!json_is_false(json_object_get(pre, "split")))
        return bora_errf(err, -ENOTSUP, "%s: pre_tokenizer Metaspace that splits words (split not "
                         "false) is not supported (%s)", name, HF_SUPPORTED);
    *dummy_prefix = true;
    return 0;
}

static int hf_components(json_t *root, const char *name, bool *dummy_prefix, struct bora_err *err)
{
    json_t *norm = json_object_get(root, "normalizer"), *pre = json_object_get(root, "pre_tokenizer");
    bool has_norm = norm && !json_is_null(norm), has_pre = pre && !json_is_null(pre);
    *dummy_prefix = false;
    if (has_norm) {
        int rc = hf_normalizer(norm, name, dummy_prefix, err);
        if (rc == 0 && has_pre)
            rc = bora_errf(err, -ENOTSUP, "%s: pre_tokenizer %s after a normalizer is not supported "
                           "(%s)", name, hf_type(pre), HF_SUPPORTED);
        return rc;
    }
    if (has_pre)
        return hf_pre_tokenizer(pre, name, dummy_prefix, err);
    return bora_errf(err, -ENOTSUP, "%s: neither a normalizer nor a pre_tokenizer maps \" \" to "
                     "\"" HF_SPACE "\" (%s)", name, HF_SUPPORTED);
}

static int hf_build(json_t *root, const char *name, struct tokenizer **out, struct bora_err *err)
{
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model) || !type || strcmp(type, "BPE"))
        return bora_errf(err, -ENOTSUP, "%s: model.type is not \"BPE\"", name);
    if (!json_is_object(vocab) || !json_is_array(merges))
        return bora_errf(err, -EINVAL, "%s: model.vocab (object) and model.merges (array) are required", name);
    if (added && !json_is_array(added))
        return bora_errf(err, -EINVAL, "%s: added_tokens is not an array", name);
    int32_t max = hf_max_id(vocab, added, name, err);
    if (max < 0)
        return max == -1 ? bora_errf(err, -EINVAL, "%s: empty vocabulary", name) : max;
    struct hf_vocab hv = { 0 };
    int rc;
    if (hf_vocab_alloc(&hv, max + 1)) {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory", name);
        goto out;
    }
    bool byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if ((rc = hf_fill(&hv, vocab, added, unk, byte_fallback, name, err)) != 0)
        goto out;
    for (int32_t id = 0; id < hv.n; id++)
        if (!hv.piece[id] || hv.len[id] == 0) {
            rc = bora_errf(err, -EINVAL, "%s: id %d has no piece", name, id);
            goto out;
        }
    if ((rc = hf_merges(&hv, vocab, merges, name, err)) != 0)
        goto out;
    bool dummy_prefix;
    if ((rc = hf_components(root, name, &dummy_prefix, err)) != 0)
        goto out;
    json_t *bos = json_object_get(vocab, "<s>"), *eos = json_object_get(vocab, "</s>");
    json_t *unkid = unk ? json_object_get(vocab, unk) : NULL;
    struct sp_build b = {
        .n = hv.n, .piece = hv.piece, .len = hv.len, .score = hv.score, .type = hv.type,
        .mergeable = hv.mergeable,
        .unk_id = unkid ? (int32_t)json_integer_value(unkid) : -1,
        .bos_id = bos ? (int32_t)json_integer_value(bos) : -1,
        .eos_id = eos ? (int32_t)json_integer_value(eos) : -1,
        .add_dummy_prefix = dummy_prefix, .remove_extra_ws = false, .escape_ws = true,
        .byte_fallback = byte_fallback,
    };
    /* added tokens may also define <s>, </s> */
    size_t i;
    json_t *v;
    json_array_foreach(added, i, v) {
        const char *c = json_string_value(json_object_get(v, "content"));
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        if (!strcmp(c, "<s>")) b.bos_id = id;
        if (!strcmp(c, "</s>")) b.eos_id = id;
        if (unk && !strcmp(c, unk)) b.unk_id = id;
    }
    rc = sp_tokenizer_create(out, &b, name, err);
    if (rc == 0)
        (*out)->kind = TOKENIZER_HF_JSON;
out:
    hf_vocab_free(&hv);
    return rc;
}

int hfjson_open(struct tokenizer **out, const char *buf, size_t len, const char *name,
                struct bora_err *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(buf, len, 0, &je);
    if (!root)
        return bora_errf(err, -EINVAL, "%s: line %d column %d: %s", name, je.line, je.column, je.text);
    int rc = hf_build(root, name, out, err);
    json_decref(root);
    return rc;
}
