/* hf_tokenizer.c — loads a Hugging Face tokenizer.json holding a SentencePiece-style BPE
 * vocabulary (Mistral's HF repositories) into the SentencePiece encoder: merge rank → score,
 * added tokens → control / user-defined pieces, <0xNN> → byte tokens, Prepend("▁") → dummy prefix. */
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

/* Prepend("▁") in the normalizer or a Metaspace pre-tokenizer that prepends ⇒ dummy prefix. */
static bool hf_dummy_prefix(json_t *root)
{
    char *s = json_dumps(json_object_get(root, "normalizer"), JSON_COMPACT);
    char *p = json_dumps(json_object_get(root, "pre_tokenizer"), JSON_COMPACT);
    bool yes = (s && strstr(s, "\"Prepend\"")) ||
               (p && strstr(p, "\"Metaspace\"") && !strstr(p, "\"prepend_scheme\":\"never\"")
                && !strstr(p, "\"add_prefix_space\":false"));
    free(s);
    free(p);
    return yes;
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
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        int32_t id = (int32_t)json_integer_value(v);
        hv.piece[id] = k;
        hv.len[id] = (uint32_t)strlen(k);
        bool is_byte = byte_fallback && hv.len[id] == 6 && !strncmp(k, "<0x", 3) && k[5] == '>';
        hv.type[id] = unk && !strcmp(k, unk) ? SP_UNKNOWN : is_byte ? SP_BYTE : SP_NORMAL;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        json_t *c = json_object_get(v, "content");
        bool special = json_is_true(json_object_get(v, "special"));
        uint8_t ty = unk && !strcmp(json_string_value(c), unk) ? SP_UNKNOWN
                   : special ? SP_CONTROL : SP_USER_DEFINED;
        hf_set(&hv, id, c, ty);
    }
    for (int32_t id = 0; id < hv.n; id++)
        if (!hv.piece[id] || hv.len[id] == 0) {
            rc = bora_errf(err, -EINVAL, "%s: id %d has no piece", name, id);
            goto out;
        }
    if ((rc = hf_merges(&hv, vocab, merges, name, err)) != 0)
        goto out;
    json_t *bos = json_object_get(vocab, "<s>"), *eos = json_object_get(vocab, "</s>");
    json_t *unkid = unk ? json_object_get(vocab, unk) : NULL;
    struct sp_build b = {
        .n = hv.n, .piece = hv.piece, .len = hv.len, .score = hv.score, .type = hv.type,
        .mergeable = hv.mergeable,
        .unk_id = unkid ? (int32_t)json_integer_value(unkid) : -1,
        .bos_id = bos ? (int32_t)json_integer_value(bos) : -1,
        .eos_id = eos ? (int32_t)json_integer_value(eos) : -1,
        .add_dummy_prefix = hf_dummy_prefix(root), .remove_extra_ws = false, .escape_ws = true,
        .byte_fallback = byte_fallback,
    };
    /* added tokens may also define <s>, </s> */
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
