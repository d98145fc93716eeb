/* model.c — opens a Mistral checkpoint directory (HF or native layout), maps its safetensors
 * shards, binds every weight by name with shape and dtype checks, and optionally converts
 * linear weights (BF16 → FP8 e4m3 with per-row scales, or FP8 → BF16). */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model.h"

#define CONFIG_MAX_BYTES (16u << 20)

const char *model_arch_name(enum model_arch a)
{
    return a == MODEL_ARCH_MINISTRAL3 ? "Ministral3ForCausalLM" : "MistralForCausalLM";
}

const char *model_precision_name(enum model_precision p)
{
    return p == MODEL_PRECISION_FP8 ? "fp8" : p == MODEL_PRECISION_BF16 ? "bf16" : "auto";
}

int model_precision_parse(const char *s, enum model_precision *out)
{
    if (!strcmp(s, "auto"))
        *out = MODEL_PRECISION_AUTO;
    else if (!strcmp(s, "bf16"))
        *out = MODEL_PRECISION_BF16;
    else if (!strcmp(s, "fp8"))
        *out = MODEL_PRECISION_FP8;
    else
        return -EINVAL;
    return 0;
}

/* What is at path: 0 a regular file (or a link to one); -ENOENT nothing at all; else an error
 * that says what is wrong (a dangling symlink — a Hugging Face cache snapshot whose blob is
 * gone —, a directory, a FIFO or a device), so a file that is there but unusable is never
 * mistaken for an absent one. */
static int probe_file(const char *path, struct bora_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? -ENOENT : bora_errf(err, -errno, "%s: %s", path, strerror(errno));
    const bool link = S_ISLNK(st.st_mode);
    if (stat(path, &st) < 0)   /* -ENOENT is kept for "nothing there" */
        return bora_errf(err, errno == ENOENT ? -EINVAL : -errno, "%s: %s%s", path,
                         link && errno == ENOENT ? "dangling symlink: " : "", strerror(errno));
    if (!S_ISREG(st.st_mode))
        return bora_errf(err, -EINVAL, "%s: not a regular file (%s)", path,
                         S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
    return 0;
}

/* Reads a whole small file into a NUL-terminated malloc'd buffer. Opened non-blocking and
 * checked to be a regular file before any read, so a FIFO put in its place cannot hang. */
static int read_file(const char *path, char **buf, size_t *len, struct bora_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return bora_errf(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        close(fd);
        return S_ISREG(st.st_mode) ? bora_errf(err, -e, "%s: cannot stat: %s", path, strerror(e))
                                   : bora_errf(err, -EINVAL, "%s: not a regular file", path);
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);   /* a regular file: reads as usual */
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return bora_errf(err, -ENOMEM, "%s: out of memory", path);
    }
    int rc = 0;
    char *b = NULL;
    if (fseek(f, 0, SEEK_END) < 0) {
        rc = bora_errf(err, -errno, "%s: cannot seek: %s", path, strerror(errno));
        goto out;
    }
    long n = ftell(f);
    if (n < 0 || (unsigned long)n > CONFIG_MAX_BYTES) {
        rc = bora_errf(err, -EINVAL, "%s: size %ld is not that of a config file", path, n);
        goto out;
    }
    rewind(f);
    b = malloc((size_t)n + 1);
    if (!b) {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory", path);
        goto out;
    }
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        rc = bora_errf(err, -EIO, "%s: read failed", path);
        free(b);
        b = NULL;
        goto out;
    }
    b[n] = 0;
    *buf = b;
    *len = (size_t)n;
out:
    fclose(f);
    return rc;
}

static int own(struct model *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o)
            return -ENOMEM;
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

static const struct st_tensor *find_tensor(const struct model *m, const char *name, int *shard)
{
    for (int i = 0; i < m->n_shards; i++) {
        const struct st_tensor *t = st_find(&m->shards[i], name);
        if (t) {
            if (shard)
                *shard = i;
            return t;
        }
    }
    return NULL;
}

/* Opens the shards: from model.safetensors.index.json when present, else every
 * file matching the layout's pattern. */
static int open_shards(struct model *m, struct bora_err *err)
{
    char path[4200];
    glob_t g = { 0 };
    int rc = 0;
    const char *pattern = m->cfg.layout == MODEL_LAYOUT_HF ? "model*.safetensors" : "consolidated*.safetensors";
    snprintf(path, sizeof path, "%s/%s", m->dir, pattern);
    int gr = glob(path, 0, NULL, &g);
    if (gr == GLOB_NOMATCH || g.gl_pathc == 0) {
        globfree(&g);
        return bora_errf(err, -ENOENT, "%s: no %s file", m->dir, pattern);
    }
    if (gr != 0) {
        globfree(&g);
        return bora_errf(err, -EIO, "%s: cannot list %s", m->dir, pattern);
    }
    if (g.gl_pathc > MODEL_MAX_SHARDS) {
        globfree(&g);
        return bora_errf(err, -EINVAL, "%s: %zu shards, more than %d", m->dir, g.gl_pathc, MODEL_MAX_SHARDS);
    }
    m->shards = calloc(g.gl_pathc, sizeof *m->shards);
    if (!m->shards) {
        globfree(&g);
        return bora_errf(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < g.gl_pathc; i++) {
        rc = st_open(&m->shards[i], g.gl_pathv[i], err);
        if (rc)
            break;
        m->n_shards++;
    }
    globfree(&g);
    if (rc)
        return rc;
    /* a tensor in two shards (a stale single-file checkpoint beside a sharded one): which is meant? */
    for (int i = 1; i < m->n_shards; i++)
        for (int k = 0; k < m->shards[i].n_tensors; k++)
            for (int j = 0; j < i; j++)
                if (st_find(&m->shards[j], m->shards[i].tensors[k].name))
                    return bora_errf(err, -EINVAL, "%s: tensor '%s' is in both %s and %s", m->dir,
                                     m->shards[i].tensors[k].name, m->shards[j].path, m->shards[i].path);
    /* a sharded checkpoint's index must agree with the shards found */
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", m->dir);
    int have_index = m->cfg.layout == MODEL_LAYOUT_HF ? probe_file(path, err) : -ENOENT;
    if (have_index != -ENOENT && have_index != 0)
        return have_index;
    if (have_index == 0) {
        char *text = NULL;
        size_t tlen = 0;
        if ((rc = read_file(path, &text, &tlen, err)))
            return rc;
        json_error_t jerr;
        json_t *idx = json_loadb(text, tlen, JSON_REJECT_DUPLICATES, &jerr);
        free(text);
        if (!idx)
            return bora_errf(err, -EINVAL, "%s: not valid JSON: %s (line %d)", path, jerr.text, jerr.line);
        json_t *wm = json_object_get(idx, "weight_map");
        const char *name;
        json_t *file;
        if (!json_is_object(wm))
            rc = bora_errf(err, -EINVAL, "%s: key 'weight_map': missing or not an object", path);
        else
            json_object_foreach(wm, name, file) {
                int shard;
                if (!json_is_string(file)) {
                    rc = bora_errf(err, -EINVAL, "%s: weight_map['%s'] is not a file name", path, name);
                    break;
                }
                bool listed = false;   /* the shard it names was found */
                for (int i = 0; i < m->n_shards && !listed; i++) {
                    const char *b = strrchr(m->shards[i].path, '/');
                    listed = !strcmp(b ? b + 1 : m->shards[i].path, json_string_value(file));
                }
                if (!listed) {
                    rc = bora_errf(err, -ENOENT, "%s: shard %s (of tensor '%s') is not in %s", path,
                                   json_string_value(file), name, m->dir);
                    break;
                }
                if (!find_tensor(m, name, &shard)) {
                    rc = bora_errf(err, -EINVAL, "%s: tensor '%s' listed in %s is not in any shard", path, name,
                                   json_string_value(file));
                    break;
                }
                const char *base = strrchr(m->shards[shard].path, '/');
                if (strcmp(base ? base + 1 : m->shards[shard].path, json_string_value(file))) {
                    rc = bora_errf(err, -EINVAL, "%s: tensor '%s' is listed in %s but found in %s", path, name,
                                   json_string_value(file), m->shards[shard].path);
                    break;
                }
            }
        json_decref(idx);
    }
    return rc;
}

/* Binds a weight by name: checks presence, dtype and shape; reads its FP8 scale if any. */
static int bind(struct model *m, struct wtensor *w, const char *name, int64_t rows, int64_t cols, bool vector,
                struct bora_err *err)
{
    int shard;
    const struct st_tensor *t = find_tensor(m, name, &shard);
    if (!t)
        return bora_errf(err, -EINVAL, "%s: tensor '%s' is missing", m->dir, name);
    const char *file = m->shards[shard].path;
    if (t->dtype >= BORA_DT_COUNT)
        return bora_errf(err, -EINVAL, "%s: tensor '%s': dtype %s is not one of BF16, F16, F32, F8_E4M3", file, name,
                         t->dtype_name);
    bool ok = vector ? (t->n_dims == 1 && t->shape[0] == cols)
                     : (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        char got[128] = "[", *p = got + 1;
        for (int d = 0; d < t->n_dims && p < got + 100; d++)
            p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        snprintf(p, (size_t)(got + sizeof got - p), "]");
        if (vector)
            return bora_errf(err, -EINVAL, "%s: tensor '%s': shape %s, expected [%lld]", file, name, got, (long long)cols);
        return bora_errf(err, -EINVAL, "%s: tensor '%s': shape %s, expected [%lld, %lld]", file, name, got,
                         (long long)rows, (long long)cols);
    }
    size_t es = bora_dtype_size(t->dtype);
    w->dtype = t->dtype;
    w->rows = vector ? 1 : rows;
    w->cols = cols;
    w->scale = 1.0f;
    w->row_scale = NULL;
    w->data = t->data;
    if ((uintptr_t)t->data % es) {   /* misaligned in the file: keep an aligned copy */
        void *c = aligned_alloc(64, ((t->end - t->begin) + 63) & ~(size_t)63);
        if (!c || own(m, c)) {
            free(c);
            return bora_errf(err, -ENOMEM, "out of memory copying '%s'", name);
        }
        memcpy(c, t->data, t->end - t->begin);
        w->data = c;
    }
    /* the dequantizing scale: Hugging Face's X.weight_scale_inv, or Mistral native's
     * X.qscale_weight (the same values: w = w_fp8 × scale in both) */
    char sname[200];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    const struct st_tensor *s = find_tensor(m, sname, NULL);
    const size_t nl = strlen(name);
    if (!s && nl > 7 && !strcmp(name + nl - 7, ".weight")) {
        snprintf(sname, sizeof sname, "%.*s.qscale_weight", (int)(nl - 7), name);
        if (!(s = find_tensor(m, sname, NULL)))
            snprintf(sname, sizeof sname, "%s_scale_inv", name);   /* the name the messages give */
    }
    if (s && t->dtype != BORA_DT_F8_E4M3)
        return bora_errf(err, -EINVAL, "%s: tensor '%s' is %s, not FP8, but '%s' is there: a scale for weights "
                         "that are not FP8 would not be applied", file, name, bora_dtype_name(t->dtype), sname);
    if (t->dtype == BORA_DT_F8_E4M3) {
        if (!s)
            return bora_errf(err, -EINVAL, "%s: FP8 tensor '%s' has no '%s'", file, name, sname);
        int64_t n = 1;
        for (int d = 0; d < s->n_dims; d++)
            n *= s->shape[d];
        if (s->dtype >= BORA_DT_COUNT || s->dtype == BORA_DT_F8_E4M3)
            return bora_errf(err, -EINVAL, "%s: tensor '%s': a scale must be BF16, F16 or F32, not %s", file, sname,
                             s->dtype >= BORA_DT_COUNT ? "an integer or unknown dtype" : "F8_E4M3");
        /* per tensor: [] or [1]; per row: [rows] or [rows, 1] (a block grid [2, 64] is neither) */
        const bool per_tensor = n == 1 && s->n_dims <= 1;
        const bool per_row = (s->n_dims == 1 && s->shape[0] == rows) ||
                             (s->n_dims == 2 && s->shape[0] == rows && s->shape[1] == 1);
        if (!per_tensor && !per_row) {
            char got[96] = "[", *q = got + 1;
            for (int d = 0; d < s->n_dims && q < got + 70; d++)
                q += snprintf(q, (size_t)(got + sizeof got - q), "%s%lld", d ? ", " : "", (long long)s->shape[d]);
            snprintf(q, (size_t)(got + sizeof got - q), "]");
            return bora_errf(err, -EINVAL, "%s: tensor '%s': shape %s is neither one scale ([] or [1]) nor one per row ([%lld] or [%lld, 1])",
                             file, sname, got, (long long)rows, (long long)rows);
        }
        float *sc = malloc((size_t)n * sizeof *sc);
        if (!sc || own(m, sc)) {
            free(sc);
            return bora_errf(err, -ENOMEM, "out of memory");
        }
        struct wtensor sw = { .dtype = s->dtype, .data = s->data, .rows = 1, .cols = n, .scale = 1.0f };
        wtensor_row_f32(&sw, 0, sc);
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(sc[i]) || sc[i] <= 0)
                return bora_errf(err, -EINVAL, "%s: tensor '%s': scale %lld is %g, not a positive number", file, sname,
                                 (long long)i, sc[i]);
        if (n == 1)
            w->scale = sc[0];
        else
            w->row_scale = sc;
    }
    return 0;
}

/* Converts a linear weight to FP8 e4m3 with one scale per row (absmax / 448). */
static int quantize_fp8(struct model *m, struct wtensor *w)
{
    uint8_t *q = aligned_alloc(64, ((size_t)(w->rows * w->cols) + 63) & ~(size_t)63);
    float *rs = malloc((size_t)w->rows * sizeof *rs);
    if (!q || !rs || own(m, q) || own(m, rs)) {
        free(q);
        free(rs);
        return -ENOMEM;
    }
    int bad = 0;
#pragma omp parallel
    {
        float *row = malloc((size_t)w->cols * sizeof *row);
        if (!row) {
#pragma omp atomic write
            bad = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < w->rows; r++) {
            if (!row)
                continue;
            wtensor_row_f32(w, r, row);
            float amax = 0;
            for (int64_t c = 0; c < w->cols; c++)
                amax = fmaxf(amax, fabsf(row[c]));
            float s = amax > 0 ? amax / 448.0f : 1.0f;
            rs[r] = s;
            for (int64_t c = 0; c < w->cols; c++)
                q[r * w->cols + c] = bora_f32_to_e4m3(row[c] / s);
        }
        free(row);
    }
    if (bad)
        return -ENOMEM;
    w->dtype = BORA_DT_F8_E4M3;
    w->data = q;
    w->scale = 1.0f;
    w->row_scale = rs;
    return 0;
}

/* Converts a weight to BF16 (scales folded in). */
static int convert_bf16(struct model *m, struct wtensor *w)
{
    uint16_t *o = aligned_alloc(64, ((size_t)(w->rows * w->cols) * 2 + 63) & ~(size_t)63);
    if (!o || own(m, o)) {
        free(o);
        return -ENOMEM;
    }
#pragma omp parallel
    {
        float *row = malloc((size_t)w->cols * sizeof *row);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < w->rows; r++) {
            if (!row)
                continue;
            wtensor_row_f32(w, r, row);
            for (int64_t c = 0; c < w->cols; c++)
                o[r * w->cols + c] = bora_f32_to_bf16(row[c]);
        }
        free(row);
    }
    w->dtype = BORA_DT_BF16;
    w->data = o;
    w->scale = 1.0f;
    w->row_scale = NULL;
    return 0;
}

static struct wtensor *linear(struct layer_weights *l, int i)
{
    struct wtensor *t[] = { &l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down };
    return i < 7 ? t[i] : NULL;
}

/* A layer's tensors (without the layer prefix and ".weight"): Hugging Face and Mistral native
 * names, in the order bind_all binds them. */
static const struct {
    const char *hf, *native;
} layer_names[] = {
    { "input_layernorm", "attention_norm" }, { "self_attn.q_proj", "attention.wq" },
    { "self_attn.k_proj", "attention.wk" },   { "self_attn.v_proj", "attention.wv" },
    { "self_attn.o_proj", "attention.wo" },   { "post_attention_layernorm", "ffn_norm" },
    { "mlp.gate_proj", "feed_forward.w1" },   { "mlp.up_proj", "feed_forward.w3" },
    { "mlp.down_proj", "feed_forward.w2" },
};

/* HF checkpoints may nest the decoder under a prefix (multimodal wrappers). */
static const char *hf_prefix(const struct model *m)
{
    static const char *const prefixes[] = { "model.", "language_model.model.", "model.language_model." };
    char name[256];
    for (size_t i = 0; i < BORA_ARRAY_LEN(prefixes); i++) {
        snprintf(name, sizeof name, "%sembed_tokens.weight", prefixes[i]);
        if (find_tensor(m, name, NULL))
            return prefixes[i];
    }
    return prefixes[0];
}

static int bind_all(struct model *m, struct bora_err *err)
{
    const struct model_config *c = &m->cfg;
    const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    bool hf = c->layout == MODEL_LAYOUT_HF;
    char n[256];
    int rc;
    const char *pre = hf ? hf_prefix(m) : "";
    snprintf(n, sizeof n, hf ? "%sembed_tokens.weight" : "%stok_embeddings.weight", pre);
    if ((rc = bind(m, &m->tok_emb, n, c->vocab_size, c->dim, false, err)))
        return rc;
    snprintf(n, sizeof n, "%snorm.weight", pre);
    if ((rc = bind(m, &m->norm, n, 1, c->dim, true, err)))
        return rc;
    /* the head: Mistral3ForConditionalGeneration as older transformers saved it keeps it under
     * its language model (language_model.model. → language_model.lm_head), as newer ones save it
     * at the top (model.language_model. → lm_head), as a causal LM does */
    const char *on = !hf ? "output.weight" : !strcmp(pre, "language_model.model.") ? "language_model.lm_head.weight"
                                                                                   : "lm_head.weight";
    if (c->tied) {
        m->output = m->tok_emb;
        /* a stored head must be the embedding itself (a copy some exporters keep), else the
         * config and the checkpoint disagree about which matrix produces the logits */
        snprintf(n, sizeof n, hf ? "%sembed_tokens.weight" : "%stok_embeddings.weight", pre);
        const struct st_tensor *h = find_tensor(m, on, NULL), *e = find_tensor(m, n, NULL);
        if (h && (!e || h->dtype != e->dtype || h->n_dims != e->n_dims || h->end - h->begin != e->end - e->begin ||
                  memcmp(h->shape, e->shape, sizeof h->shape) || memcmp(h->data, e->data, h->end - h->begin)))
            return bora_errf(err, -EINVAL, "%s: the config ties the output head to the embedding (%s), but the "
                             "checkpoint stores its own '%s', which differs from '%s'", m->dir,
                             hf ? "tie_word_embeddings" : "tied_embeddings", on, n);
    } else {
        if ((rc = bind(m, &m->output, on, c->vocab_size, c->dim, false, err)))
            return rc;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers)
        return bora_errf(err, -ENOMEM, "out of memory");
    for (int i = 0; i < c->n_layers; i++) {
        struct layer_weights *l = &m->layers[i];
        struct {
            struct wtensor *w;
            int64_t rows, cols;
            bool vec;
        } map[] = {
            { &l->attn_norm, 1, c->dim, true },   { &l->wq, q, c->dim, false },
            { &l->wk, kv, c->dim, false },        { &l->wv, kv, c->dim, false },
            { &l->wo, c->dim, q, false },         { &l->ffn_norm, 1, c->dim, true },
            { &l->w_gate, c->hidden_dim, c->dim, false }, { &l->w_up, c->hidden_dim, c->dim, false },
            { &l->w_down, c->dim, c->hidden_dim, false },
        };
        _Static_assert(BORA_ARRAY_LEN(map) == BORA_ARRAY_LEN(layer_names), "one name pair per layer tensor");
        for (size_t k = 0; k < BORA_ARRAY_LEN(map); k++) {
            if (hf)
                snprintf(n, sizeof n, "%slayers.%d.%s.weight", pre, i, layer_names[k].hf);
            else
                snprintf(n, sizeof n, "layers.%d.%s.weight", i, layer_names[k].native);
            if ((rc = bind(m, map[k].w, n, map[k].rows, map[k].cols, map[k].vec, err)))
                return rc;
        }
    }
    return 0;
}

/* Tensors bind_all did not take that say the config and the checkpoint disagree: a layer past
 * the config's last (a config that keeps only part of the model), a bias on a layer's matrix
 * or norm, or any other weight of a layer (a `.weight` bora does not bind: a query/key norm,
 * a LoRA adapter, a mixture of experts' router or experts). Mistral's decoder has none of these:
 * bora would leave them out and compute something else. Tensors outside the layers (a vision
 * encoder of a multimodal checkpoint) and per-layer extras with no effect on the text decoder
 * (FP8 activation / KV scales such as `input_scale`, `qscale_act`, `k_scale`, a stored RoPE
 * table `rotary_emb.inv_freq`) are left alone. */
static int check_unused(const struct model *m, struct bora_err *err)
{
    const bool hf = m->cfg.layout == MODEL_LAYOUT_HF;
    char lp[96];
    snprintf(lp, sizeof lp, "%slayers.", hf ? hf_prefix(m) : "");
    const size_t lpn = strlen(lp);
    for (int i = 0; i < m->n_shards; i++)
        for (int k = 0; k < m->shards[i].n_tensors; k++) {
            const char *name = m->shards[i].tensors[k].name;
            if (strncmp(name, lp, lpn))
                continue;
            /* the index: the whole segment up to the next '.', in canonical decimal ("1a", "0x0",
             * "00", "-1" and a name with no segment after it are no layer's) */
            const char *ix = name + lpn;
            const char *end = strchr(ix, '.');
            if (!end)
                end = ix + strlen(ix);
            const size_t dn = strspn(ix, "0123456789");
            if (end == ix || dn != (size_t)(end - ix) || *end != '.' || (*ix == '0' && dn > 1) || dn > 9)
                return bora_errf(err, -EINVAL, "%s: tensor '%s': layer index '%.*s' is not a layer's name (%s0. to "
                                 "%s%d.)", m->shards[i].path, name, (int)(end - ix), ix, lp, lp, m->cfg.n_layers - 1);
            const long layer = strtol(ix, NULL, 10);
            if (layer >= m->cfg.n_layers)
                return bora_errf(err, -EINVAL, "%s: tensor '%s' is of layer %.*s, but the config has %d layers",
                                 m->shards[i].path, name, (int)(end - ix), ix, m->cfg.n_layers);
            const size_t nl = strlen(name);
            if (nl > 5 && !strcmp(name + nl - 5, ".bias"))
                return bora_errf(err, -EINVAL, "%s: tensor '%s': a bias, which Mistral models do not have and bora "
                                 "does not apply", m->shards[i].path, name);
            const char *sfx = end + 1;   /* after "layers.N." */
            const size_t sl = strlen(sfx);
            if (sl > 7 && !strcmp(sfx + sl - 7, ".weight")) {
                bool bound = false;
                for (size_t n = 0; n < BORA_ARRAY_LEN(layer_names) && !bound; n++) {
                    const char *want = hf ? layer_names[n].hf : layer_names[n].native;
                    bound = strlen(want) == sl - 7 && !strncmp(sfx, want, sl - 7);
                }
                if (!bound)
                    return bora_errf(err, -EINVAL, "%s: tensor '%s': a weight that Mistral's decoder does not have "
                                     "(a %s layer has %s); bora would not apply it", m->shards[i].path, name,
                                     hf ? "Hugging Face" : "native",
                                     hf ? "input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, "
                                          "mlp.{gate,up,down}_proj"
                                        : "attention_norm, attention.{wq,wk,wv,wo}, ffn_norm, feed_forward.{w1,w2,w3}");
            }
        }
    return 0;
}

static uint64_t wbytes(const struct wtensor *w)
{
    return (uint64_t)(w->rows * w->cols) * bora_dtype_size(w->dtype) + (w->row_scale ? (uint64_t)w->rows * 4 : 0);
}

static void account(struct model *m)
{
    const struct model_config *c = &m->cfg;
    m->n_params = (uint64_t)m->tok_emb.rows * m->tok_emb.cols + (uint64_t)c->dim;
    m->weight_bytes = wbytes(&m->tok_emb) + wbytes(&m->norm);
    if (!c->tied) {
        m->n_params += (uint64_t)m->output.rows * m->output.cols;
        m->weight_bytes += wbytes(&m->output);
    }
    for (int i = 0; i < c->n_layers; i++) {
        struct layer_weights *l = &m->layers[i];
        m->n_params += 2 * (uint64_t)c->dim;
        m->weight_bytes += wbytes(&l->attn_norm) + wbytes(&l->ffn_norm);
        for (int k = 0; k < 7; k++) {
            m->n_params += (uint64_t)(linear(l, k)->rows * linear(l, k)->cols);
            m->weight_bytes += wbytes(linear(l, k));
        }
    }
    m->linear_dtype = m->layers[0].wq.dtype;
}

/* The first tokenizer file present, in order of preference. One that is present but unusable
 * (a dangling link, a FIFO) is an error, not a reason to fall back to the next. */
static int find_tokenizer(struct model *m, struct bora_err *err)
{
    static const char *const names[] = { "tekken.json",        "tokenizer.model",    "tokenizer.model.v7",
                                         "tokenizer.model.v3", "tokenizer.model.v2", "tokenizer.model.v1",
                                         "tokenizer.json" };   /* as tokenizer.c's dir_find */
    for (size_t i = 0; i < BORA_ARRAY_LEN(names); i++) {
        int n = snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s/%s", m->dir, names[i]);
        if (n <= 0 || (size_t)n >= sizeof m->tokenizer_path)
            continue;
        int rc = probe_file(m->tokenizer_path, err);
        if (rc == 0)
            return 0;
        if (rc != -ENOENT) {
            m->tokenizer_path[0] = 0;
            return rc;
        }
    }
    m->tokenizer_path[0] = 0;
    return 0;
}

int model_config_read(const char *dir, struct model_config *cfg, bool *fp8, struct bora_err *err)
{
    char path[4200], *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = probe_file(path, err);
    const bool hf = rc == 0;
    if (rc && rc != -ENOENT)
        return rc;
    if (!hf) {
        snprintf(path, sizeof path, "%s/params.json", dir);
        rc = probe_file(path, err);
        if (rc == -ENOENT)
            return bora_errf(err, -ENOENT, "%s: neither config.json (Hugging Face) nor params.json (Mistral) found", dir);
        if (rc)
            return rc;
    }
    if ((rc = read_file(path, &buf, &len, err)))
        return rc;
    rc = hf ? model_config_parse_hf(buf, len, path, cfg, err) : model_config_parse_native(buf, len, path, cfg, err);
    if (fp8)
        *fp8 = !rc && cfg->fp8;
    free(buf);
    return rc;
}

int model_open(struct model **out, const char *dir, const struct model_open_opts *opts, struct bora_err *err)
{
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) < 0)
        return bora_errf(err, -errno, "%s: cannot open model directory: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return bora_errf(err, -ENOTDIR, "%s: not a directory", dir);
    struct model *m = calloc(1, sizeof *m);
    if (!m)
        return bora_errf(err, -ENOMEM, "out of memory");
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    int rc = model_config_read(dir, &m->cfg, NULL, err);
    if (rc)
        goto err;
    if ((rc = open_shards(m, err)) || (rc = bind_all(m, err)) || (rc = check_unused(m, err)))
        goto err;
    enum model_precision p = opts ? opts->precision : MODEL_PRECISION_AUTO;
    for (int i = 0; i < m->cfg.n_layers && p != MODEL_PRECISION_AUTO; i++)
        for (int k = 0; k < 7; k++) {
            struct wtensor *w = linear(&m->layers[i], k);
            if (p == MODEL_PRECISION_FP8 && w->dtype != BORA_DT_F8_E4M3)
                rc = quantize_fp8(m, w);
            else if (p == MODEL_PRECISION_BF16 && w->dtype != BORA_DT_BF16)
                rc = convert_bf16(m, w);
            if (rc) {
                rc = bora_errf(err, rc, "%s: out of memory converting layer %d to %s", dir, i, model_precision_name(p));
                goto err;
            }
        }
    m->rope_inv_freq = malloc((size_t)(m->cfg.head_dim / 2) * sizeof(float));
    if (!m->rope_inv_freq) {
        rc = bora_errf(err, -ENOMEM, "out of memory");
        goto err;
    }
    model_rope_init(&m->cfg, m->rope_inv_freq, &m->rope_attn_factor);
    account(m);
    if ((rc = find_tokenizer(m, err)))
        goto err;
    const char *cut = model_damaged(m);   /* a shard cut short while the checks above read it */
    if (cut) {
        rc = bora_errf(err, -ESTALE, "%s: the file was cut short while bora read it (truncated or rewritten during the load)",
                       cut);
        goto err;
    }
    *out = m;
    return 0;
err:
    model_close(m);
    return rc;
}

const char *model_damaged(const struct model *m)
{
    for (int i = 0; i < m->n_shards; i++)
        if (st_damaged(&m->shards[i]))
            return m->shards[i].path;
    return NULL;
}

void model_close(struct model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_shards; i++)
        st_close(&m->shards[i]);
    free(m->shards);
    for (int i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m);
}
