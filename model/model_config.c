/* model_config.c — parses HF config.json and Mistral params.json into struct model_config
 * (pure functions over a buffer, fuzzed), validates every value, and derives the RoPE tables. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "model/model.h"

/* Upper bounds that reject garbage before it reaches an allocation. */
#define CFG_MAX_DIM        (1 << 17)
#define CFG_MAX_LAYERS     1024
#define CFG_MAX_HEADS      1024
#define CFG_MAX_HEAD_DIM   1024
#define CFG_MAX_VOCAB      (1 << 22)
#define CFG_MAX_HIDDEN     (1 << 20)

/* Reads an optional integer key: absent or null leaves *out. Errors name the key and value. */
static int get_int(json_t *o, const char *key, const char *what, int lo, int hi, bool required,
                   int *out, struct bora_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return bora_errf(err, -EINVAL, "%s: key '%s': missing", what, key);
        return 0;
    }
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 1e15) {
        double d = json_real_value(v);
        if (d < lo || d > hi)
            return bora_errf(err, -EINVAL, "%s: key '%s': must be in [%d, %d] (got '%g')", what, key, lo, hi, d);
        *out = (int)d;
        return 0;
    }
    if (!json_is_integer(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        int rc = bora_errf(err, -EINVAL, "%s: key '%s': must be an integer (got '%.60s')", what, key,
                           s ? s : "?");
        free(s);
        return rc;
    }
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return bora_errf(err, -EINVAL, "%s: key '%s': must be in [%d, %d] (got '%lld')", what, key, lo, hi,
                         (long long)i);
    *out = (int)i;
    return 0;
}

static int get_num(json_t *o, const char *key, const char *what, double lo, double hi, bool required,
                   double *out, struct bora_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            return bora_errf(err, -EINVAL, "%s: key '%s': missing", what, key);
        return 0;
    }
    if (!json_is_number(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        int rc = bora_errf(err, -EINVAL, "%s: key '%s': must be a number (got '%.60s')", what, key, s ? s : "?");
        free(s);
        return rc;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return bora_errf(err, -EINVAL, "%s: key '%s': must be in [%g, %g] (got '%g')", what, key, lo, hi, d);
    *out = d;
    return 0;
}

static int get_bool(json_t *o, const char *key, const char *what, bool *out, struct bora_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return bora_errf(err, -EINVAL, "%s: key '%s': must be true or false", what, key);
    *out = json_is_true(v);
    return 0;
}

static json_t *load(const char *json, size_t len, const char *what, struct bora_err *err, int *rc)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);   /* a key twice: which one is meant? */
    if (!root) {
        *rc = bora_errf(err, -EINVAL, "%s: not valid JSON: %s (line %d, column %d)", what, jerr.text, jerr.line,
                        jerr.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *rc = bora_errf(err, -EINVAL, "%s: top level is not a JSON object", what);
        return NULL;
    }
    return root;
}

static void defaults(struct model_config *c)
{
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0;
    c->bos_id = 1;
    c->eos_id = 2;
    c->yarn_beta_fast = 32;
    c->yarn_beta_slow = 1;
    c->yarn_mscale = 1;
}

/* Checks relations between the fields once every key is read. */
static int validate(struct model_config *c, const char *what, struct bora_err *err)
{
    if (c->head_dim == 0) {
        if (c->dim % c->n_heads)
            return bora_errf(err, -EINVAL, "%s: hidden size %d is not a multiple of the %d heads and no head_dim is given",
                             what, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    if (c->head_dim % 2)
        return bora_errf(err, -EINVAL, "%s: key 'head_dim': must be even for RoPE (got '%d')", what, c->head_dim);
    if (c->n_kv_heads == 0)
        c->n_kv_heads = c->n_heads;
    if (c->n_heads % c->n_kv_heads)
        return bora_errf(err, -EINVAL, "%s: %d attention heads are not a multiple of %d key/value heads", what,
                         c->n_heads, c->n_kv_heads);
    if (c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size)
        return bora_errf(err, -EINVAL, "%s: bos/eos ids (%d, %d) outside the vocabulary (%d)", what, c->bos_id,
                         c->eos_id, c->vocab_size);
    if (c->rope == ROPE_YARN) {
        if (c->yarn_factor < 1.0)
            return bora_errf(err, -EINVAL, "%s: YaRN factor must be ≥ 1 (got '%g')", what, c->yarn_factor);
        if (c->yarn_orig_max <= 0)
            return bora_errf(err, -EINVAL, "%s: YaRN needs original_max_position_embeddings > 0", what);
        /* the correction range divides by log(rope_theta) and by each beta */
        if (!(c->rope_theta > 1.0))
            return bora_errf(err, -EINVAL, "%s: YaRN needs rope_theta > 1 (got '%g')", what, c->rope_theta);
        if (!(c->yarn_beta_fast > 0) || !(c->yarn_beta_slow > 0))
            return bora_errf(err, -EINVAL, "%s: YaRN beta_fast and beta_slow (params.json: beta, alpha) must be > 0 (got '%g', '%g')",
                             what, c->yarn_beta_fast, c->yarn_beta_slow);
    }
    return 0;
}

/* rope_parameters (transformers 5) or rope_scaling (transformers 4) object. */
static int parse_rope_object(json_t *rp, const char *what, struct model_config *c, bool *theta_set,
                             struct bora_err *err)
{
    int rc;
    if (!json_is_object(rp))
        return bora_errf(err, -EINVAL, "%s: key 'rope_parameters': must be an object", what);
    if (json_object_get(rp, "rope_theta")) {
        if ((rc = get_num(rp, "rope_theta", what, 1.0, 1e12, false, &c->rope_theta, err)))
            return rc;
        *theta_set = true;
    }
    json_t *t = json_object_get(rp, "rope_type");
    const char *tkey = "rope_type";
    if (!t) {
        t = json_object_get(rp, "type");
        tkey = "type";
    }
    if (t && !json_is_null(t) && !json_is_string(t))
        return bora_errf(err, -EINVAL, "%s: key 'rope_parameters.%s': must be a string", what, tkey);
    const char *type = json_is_string(t) ? json_string_value(t) : "default";
    if (!strcmp(type, "default")) {
        c->rope = ROPE_DEFAULT;
    } else if (!strcmp(type, "yarn")) {
        c->rope = ROPE_YARN;
        c->yarn_factor = 0;
        if ((rc = get_num(rp, "factor", what, 1.0, 1e6, false, &c->yarn_factor, err)) ||
            (rc = get_int(rp, "original_max_position_embeddings", what, 1, 1 << 30, false, &c->yarn_orig_max, err)) ||
            (rc = get_num(rp, "beta_fast", what, 0, 1e6, false, &c->yarn_beta_fast, err)) ||
            (rc = get_num(rp, "beta_slow", what, 0, 1e6, false, &c->yarn_beta_slow, err)) ||
            (rc = get_num(rp, "mscale", what, 0, 1e6, false, &c->yarn_mscale, err)) ||
            (rc = get_num(rp, "mscale_all_dim", what, 0, 1e6, false, &c->yarn_mscale_all_dim, err)))
            return rc;
        if (c->yarn_factor == 0 && c->yarn_orig_max > 0 && c->max_pos > 0)
            c->yarn_factor = (double)c->max_pos / c->yarn_orig_max;   /* only when factor is absent */
    } else {
        return bora_errf(err, -EINVAL, "%s: rope type '%s' is not supported (default or yarn)", what, type);
    }
    if (json_object_get(rp, "llama_4_scaling_beta")) {
        if ((rc = get_num(rp, "llama_4_scaling_beta", what, 0, 100, false, &c->qscale_beta, err)))
            return rc;
        c->qscale_orig_max = c->yarn_orig_max;
        if ((rc = get_int(rp, "original_max_position_embeddings", what, 1, 1 << 30, false, &c->qscale_orig_max, err)))
            return rc;
    }
    return 0;
}

int model_config_parse_hf(const char *json, size_t len, const char *what, struct model_config *c,
                          struct bora_err *err)
{
    int rc = 0;
    json_t *root = load(json, len, what, err, &rc);
    if (!root)
        return rc;
    defaults(c);
    c->layout = MODEL_LAYOUT_HF;
    json_t *o = root;
    json_t *arch = json_object_get(root, "architectures");
    const char *aname = NULL;
    if (json_is_array(arch) && json_array_size(arch) > 0 && json_is_string(json_array_get(arch, 0)))
        aname = json_string_value(json_array_get(arch, 0));
    /* multimodal wrappers keep the decoder's settings in text_config */
    json_t *tc = json_object_get(root, "text_config");
    if (json_is_object(tc)) {
        o = tc;
        json_t *ta = json_object_get(tc, "architectures");
        if (json_is_array(ta) && json_is_string(json_array_get(ta, 0)))
            aname = json_string_value(json_array_get(ta, 0));
        else if (json_is_string(json_object_get(tc, "model_type")) &&
                 !strcmp(json_string_value(json_object_get(tc, "model_type")), "ministral3"))
            aname = "Ministral3ForCausalLM";
    }
    if (!aname) {
        rc = bora_errf(err, -EINVAL, "%s: key 'architectures': missing (expected MistralForCausalLM or Ministral3ForCausalLM)", what);
        goto out;
    }
    if (!strcmp(aname, "MistralForCausalLM"))
        c->arch = MODEL_ARCH_MISTRAL;
    else if (!strcmp(aname, "Ministral3ForCausalLM"))
        c->arch = MODEL_ARCH_MINISTRAL3;
    else {
        rc = bora_errf(err, -EINVAL, "%s: key 'architectures': unsupported architecture '%s' (supported: MistralForCausalLM, Ministral3ForCausalLM)",
                       what, aname);
        goto out;
    }
    double eps = 1e-5;
    if ((rc = get_int(o, "hidden_size", what, 1, CFG_MAX_DIM, true, &c->dim, err)) ||
        (rc = get_int(o, "num_hidden_layers", what, 1, CFG_MAX_LAYERS, true, &c->n_layers, err)) ||
        (rc = get_int(o, "num_attention_heads", what, 1, CFG_MAX_HEADS, true, &c->n_heads, err)) ||
        (rc = get_int(o, "num_key_value_heads", what, 1, CFG_MAX_HEADS, false, &c->n_kv_heads, err)) ||
        (rc = get_int(o, "head_dim", what, 2, CFG_MAX_HEAD_DIM, false, &c->head_dim, err)) ||
        (rc = get_int(o, "intermediate_size", what, 1, CFG_MAX_HIDDEN, true, &c->hidden_dim, err)) ||
        (rc = get_int(o, "vocab_size", what, 2, CFG_MAX_VOCAB, true, &c->vocab_size, err)) ||
        (rc = get_int(o, "max_position_embeddings", what, 1, 1 << 30, false, &c->max_pos, err)) ||
        (rc = get_int(o, "sliding_window", what, 1, 1 << 30, false, &c->sliding_window, err)) ||
        (rc = get_int(o, "bos_token_id", what, 0, CFG_MAX_VOCAB, false, &c->bos_id, err)) ||
        (rc = get_int(o, "eos_token_id", what, 0, CFG_MAX_VOCAB, false, &c->eos_id, err)) ||
        (rc = get_num(o, "rms_norm_eps", what, 1e-12, 1.0, false, &eps, err)) ||
        (rc = get_bool(o, "tie_word_embeddings", what, &c->tied, err)))
        goto out;
    if (!json_object_get(o, "tie_word_embeddings") && o != root &&
        (rc = get_bool(root, "tie_word_embeddings", what, &c->tied, err)))
        goto out;
    c->norm_eps = (float)eps;
    bool theta_set = false;
    if (json_object_get(o, "rope_theta")) {
        if ((rc = get_num(o, "rope_theta", what, 1.0, 1e12, false, &c->rope_theta, err)))
            goto out;
        theta_set = true;
    }
    /* the activation: Mistral's MLP is SwiGLU, silu(gate) × up; anything else would be computed wrong */
    json_t *act = json_object_get(o, "hidden_act");
    if (act && !json_is_null(act) &&
        (!json_is_string(act) || (strcmp(json_string_value(act), "silu") && strcmp(json_string_value(act), "swish")))) {
        rc = bora_errf(err, -EINVAL, "%s: key 'hidden_act': only 'silu' is supported (got '%s')", what,
                       json_is_string(act) ? json_string_value(act) : "not a string");
        goto out;
    }
    json_t *rp = json_object_get(o, "rope_parameters");
    if (!rp || json_is_null(rp))
        rp = json_object_get(o, "rope_scaling");
    if (rp && !json_is_null(rp) && (rc = parse_rope_object(rp, what, c, &theta_set, err)))
        goto out;
    if (c->arch == MODEL_ARCH_MINISTRAL3 && c->qscale_beta > 0 && c->qscale_orig_max <= 0) {
        rc = bora_errf(err, -EINVAL, "%s: llama_4_scaling_beta needs original_max_position_embeddings", what);
        goto out;
    }
    json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q)) {
        json_t *m = json_object_get(q, "quant_method");
        if (!json_is_string(m) || strcmp(json_string_value(m), "fp8")) {
            rc = bora_errf(err, -EINVAL, "%s: key 'quantization_config.quant_method': only 'fp8' is supported (got '%s')",
                           what, json_is_string(m) ? json_string_value(m) : "?");
            goto out;
        }
        json_t *bs = json_object_get(q, "weight_block_size");
        if (bs && !json_is_null(bs)) {
            rc = bora_errf(err, -EINVAL, "%s: key 'quantization_config.weight_block_size': block-wise FP8 scales are not supported (per-tensor or per-row only)", what);
            goto out;
        }
        c->fp8 = true;
    }
    rc = validate(c, what, err);
out:
    json_decref(root);
    return rc;
}

int model_config_parse_native(const char *json, size_t len, const char *what, struct model_config *c,
                              struct bora_err *err)
{
    int rc = 0;
    json_t *root = load(json, len, what, err, &rc);
    if (!root)
        return rc;
    defaults(c);
    c->layout = MODEL_LAYOUT_NATIVE;
    c->arch = MODEL_ARCH_MISTRAL;
    c->rope_interleaved = true;
    double eps = 1e-5;
    c->rope_theta = 10000.0;
    if ((rc = get_int(root, "dim", what, 1, CFG_MAX_DIM, true, &c->dim, err)) ||
        (rc = get_int(root, "n_layers", what, 1, CFG_MAX_LAYERS, true, &c->n_layers, err)) ||
        (rc = get_int(root, "n_heads", what, 1, CFG_MAX_HEADS, true, &c->n_heads, err)) ||
        (rc = get_int(root, "n_kv_heads", what, 1, CFG_MAX_HEADS, false, &c->n_kv_heads, err)) ||
        (rc = get_int(root, "head_dim", what, 2, CFG_MAX_HEAD_DIM, false, &c->head_dim, err)) ||
        (rc = get_int(root, "hidden_dim", what, 1, CFG_MAX_HIDDEN, true, &c->hidden_dim, err)) ||
        (rc = get_int(root, "vocab_size", what, 2, CFG_MAX_VOCAB, true, &c->vocab_size, err)) ||
        (rc = get_int(root, "max_seq_len", what, 1, 1 << 30, false, &c->max_pos, err)) ||
        (rc = get_num(root, "norm_eps", what, 1e-12, 1.0, false, &eps, err)) ||
        (rc = get_num(root, "rope_theta", what, 1.0, 1e12, false, &c->rope_theta, err)) ||
        (rc = get_bool(root, "tied_embeddings", what, &c->tied, err)))
        goto out;
    c->norm_eps = (float)eps;
    json_t *sw = json_object_get(root, "sliding_window");
    if (json_is_array(sw)) {
        rc = bora_errf(err, -EINVAL, "%s: key 'sliding_window': per-layer windows are not supported", what);
        goto out;
    }
    if ((rc = get_int(root, "sliding_window", what, 1, 1 << 30, false, &c->sliding_window, err)))
        goto out;
    /* blocks that change what the weights compute: bora would load the dense part and answer
     * with something else */
    static const struct { const char *key, *why; } unsupported[] = {
        { "moe", "a mixture of experts (Mixtral-style), which bora does not compute" },
        { "lora", "LoRA adapters, which bora does not apply (merge them into the weights first)" },
    };
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        json_t *v = json_object_get(root, unsupported[i].key);
        if (v && !json_is_null(v)) {
            rc = bora_errf(err, -EINVAL, "%s: key '%s': %s", what, unsupported[i].key, unsupported[i].why);
            goto out;
        }
    }
    json_t *y = json_object_get(root, "yarn");
    if (y && !json_is_null(y) && !json_is_object(y)) {
        rc = bora_errf(err, -EINVAL, "%s: key 'yarn': must be an object", what);
        goto out;
    }
    if (json_is_object(y)) {
        c->rope = ROPE_YARN;
        c->arch = MODEL_ARCH_MINISTRAL3;
        if ((rc = get_num(y, "factor", what, 1.0, 1e6, true, &c->yarn_factor, err)) ||
            (rc = get_int(y, "original_max_position_embeddings", what, 1, 1 << 30, true, &c->yarn_orig_max, err)) ||
            (rc = get_num(y, "beta", what, 0, 1e6, false, &c->yarn_beta_fast, err)) ||
            (rc = get_num(y, "alpha", what, 0, 1e6, false, &c->yarn_beta_slow, err)))
            goto out;
    }
    /* FP8 as Mistral publishes it natively: "quantization": {"qformat_weight": "fp8_e4m3",
     * "qscheme_act": ...} (the activation scheme is for the activations, which bora keeps wide) */
    json_t *qn = json_object_get(root, "quantization");
    if (qn && !json_is_null(qn)) {
        json_t *qf = json_is_object(qn) ? json_object_get(qn, "qformat_weight") : NULL;
        if (!json_is_string(qf) || strcmp(json_string_value(qf), "fp8_e4m3")) {
            rc = bora_errf(err, -EINVAL, "%s: key 'quantization.qformat_weight': only 'fp8_e4m3' is supported (got %s%s%s)",
                           what, json_is_string(qf) ? "'" : "", json_is_string(qf) ? json_string_value(qf)
                           : !json_is_object(qn) ? "a 'quantization' that is not an object" : "none",
                           json_is_string(qf) ? "'" : "");
            goto out;
        }
        c->fp8 = true;
    }
    json_t *l4 = json_object_get(root, "llama_4_scaling");
    if (json_is_object(l4)) {
        if ((rc = get_num(l4, "beta", what, 0, 100, true, &c->qscale_beta, err)) ||
            (rc = get_int(l4, "original_max_position_embeddings", what, 1, 1 << 30, true, &c->qscale_orig_max, err)))
            goto out;
    }
    rc = validate(c, what, err);
out:
    json_decref(root);
    return rc;
}

static double yarn_mscale(double scale, double k)
{
    return scale <= 1.0 ? 1.0 : 0.1 * k * log(scale) + 1.0;
}

void model_rope_init(const struct model_config *c, float *inv_freq, float *attn_factor)
{
    const int half = c->head_dim / 2;
    const int dim = c->head_dim;
    for (int i = 0; i < half; i++)   /* as transformers: 1 / theta^(2i/dim) computed in fp32 */
        inv_freq[i] = (float)(1.0 / pow(c->rope_theta, (double)(2 * i) / dim));
    *attn_factor = 1.0f;
    if (c->rope != ROPE_YARN)
        return;
    const double L = c->yarn_orig_max, th = c->rope_theta;
    double low = floor(dim * log(L / (c->yarn_beta_fast * 2 * M_PI)) / (2 * log(th)));
    double high = ceil(dim * log(L / (c->yarn_beta_slow * 2 * M_PI)) / (2 * log(th)));
    if (low < 0)
        low = 0;
    if (high > dim - 1)
        high = dim - 1;
    if (low == high)
        high += 0.001;
    for (int i = 0; i < half; i++) {
        double ramp = (i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float extrap = inv_freq[i], interp = (float)(inv_freq[i] / c->yarn_factor);
        inv_freq[i] = (float)(interp * ramp + extrap * (1.0 - ramp));
    }
    if (c->yarn_mscale != 0 && c->yarn_mscale_all_dim != 0)
        *attn_factor = (float)(yarn_mscale(c->yarn_factor, c->yarn_mscale) /
                               yarn_mscale(c->yarn_factor, c->yarn_mscale_all_dim));
    else
        *attn_factor = (float)yarn_mscale(c->yarn_factor, 1.0);
}

float model_query_scale(const struct model_config *c, int pos)
{
    if (c->qscale_beta <= 0 || c->qscale_orig_max <= 0)
        return 1.0f;
    return (float)(1.0 + c->qscale_beta * log(1.0 + floor((double)pos / c->qscale_orig_max)));
}
