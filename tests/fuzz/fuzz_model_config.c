/* fuzz_model_config.c — fuzz target for the two model config parsers, model_config_parse_hf
 * (config.json) and model_config_parse_native (params.json), which model_open calls on the
 * file's bytes. The first input byte picks the mode: 1 mod 4 = the rest is spliced into a
 * valid config.json as extra members (later keys replace earlier ones, so single values reach
 * validation), 2 mod 4 = the same for params.json, else the whole input goes to both.
 * Checks: an error is -EINVAL with a message that names the file; a config that parses holds
 * every bound the parser promises, parses the same again, and gives RoPE tables. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

#define FUZZ_ROPE_HALF_MAX 4096   /* head_dim/2 above this skips model_rope_init (cost) */

static const char hf_base[] =
    "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":16,\"intermediate_size\":128,"
    "\"vocab_size\":1000,\"max_position_embeddings\":4096,\"rms_norm_eps\":1e-5,\"rope_theta\":1e6";
static const char native_base[] =
    "{\"dim\":64,\"n_layers\":2,\"head_dim\":16,\"hidden_dim\":128,\"n_heads\":4,\"n_kv_heads\":2,"
    "\"norm_eps\":1e-5,\"vocab_size\":1000,\"rope_theta\":1e6";

static const char *const seeds[] = {
    /* whole inputs ('{' is 3 mod 4) */
    "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":4,\"num_attention_heads\":4,"
    "\"num_key_value_heads\":2,\"head_dim\":32,\"intermediate_size\":192,\"vocab_size\":32768,\"rope_theta\":1e6,"
    "\"sliding_window\":null,\"tie_word_embeddings\":true,\"bos_token_id\":1,\"eos_token_id\":2}",
    "{\"architectures\":[\"Ministral3ForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":1,\"num_attention_heads\":4,"
    "\"intermediate_size\":8,\"vocab_size\":32,\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":16,"
    "\"original_max_position_embeddings\":32,\"llama_4_scaling_beta\":0.1,\"beta_fast\":32,\"beta_slow\":1,"
    "\"mscale\":1,\"mscale_all_dim\":1,\"rope_theta\":1e6}}",
    "{\"architectures\":[\"Mistral3ForConditionalGeneration\"],\"tie_word_embeddings\":false,\"text_config\":"
    "{\"model_type\":\"ministral3\",\"hidden_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":8,"
    "\"num_key_value_heads\":2,\"head_dim\":16,\"intermediate_size\":256,\"vocab_size\":4096,"
    "\"max_position_embeddings\":262144,\"rope_scaling\":{\"type\":\"yarn\",\"original_max_position_embeddings\":16384}},"
    "\"quantization_config\":{\"quant_method\":\"fp8\",\"weight_block_size\":null}}",
    "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":4096.0,\"num_hidden_layers\":32,"
    "\"num_attention_heads\":32,\"num_key_value_heads\":8,\"intermediate_size\":14336,\"vocab_size\":32768,"
    "\"rms_norm_eps\":1e-05,\"rope_theta\":1000000.0,\"max_position_embeddings\":32768,"
    "\"quantization_config\":{\"quant_method\":\"fp8\",\"weight_block_size\":[128,128]}}",
    "{\"dim\":64,\"n_layers\":4,\"head_dim\":16,\"hidden_dim\":192,\"n_heads\":4,\"n_kv_heads\":2,\"norm_eps\":1e-5,"
    "\"vocab_size\":32768,\"rope_theta\":1e6,\"sliding_window\":16,\"tied_embeddings\":true,\"max_seq_len\":8192}",
    "{\"dim\":5120,\"n_layers\":40,\"head_dim\":128,\"hidden_dim\":32768,\"n_heads\":32,\"n_kv_heads\":8,"
    "\"norm_eps\":1e-5,\"vocab_size\":131072,\"rope_theta\":1e6,\"yarn\":{\"factor\":16,"
    "\"original_max_position_embeddings\":16384,\"beta\":32,\"alpha\":1},"
    "\"llama_4_scaling\":{\"beta\":0.1,\"original_max_position_embeddings\":16384},\"sliding_window\":[4096,null]}",
    /* '1': members spliced into hf_base; '2': into native_base */
    "1\"head_dim\":null,\"num_key_value_heads\":3",
    "1\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":0.5,\"original_max_position_embeddings\":0}",
    "1\"rope_scaling\":{\"rope_type\":\"linear\"},\"rope_theta\":1e13",
    "1\"architectures\":[\"LlamaForCausalLM\"],\"bos_token_id\":1000",
    "1\"text_config\":{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":1e15,\"vocab_size\":2}",
    "1\"rope_theta\":1,\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4,\"beta_fast\":0,\"beta_slow\":0,"
    "\"original_max_position_embeddings\":1,\"mscale\":0}",
    "1\"hidden_size\":131072,\"num_attention_heads\":1,\"head_dim\":null",
    "1\"hidden_size\":1e9,\"head_dim\":17,\"rope_theta\":\"1e6\"",
    "1\"rope_parameters\":5,\"quantization_config\":{\"quant_method\":\"gptq\"}",
    "[{\"dim\":64}]",
    "2\"yarn\":{\"factor\":1,\"original_max_position_embeddings\":1},\"rope_theta\":1",
    "2\"llama_4_scaling\":{\"beta\":100,\"original_max_position_embeddings\":1},\"sliding_window\":1",
    "2\"n_kv_heads\":null,\"head_dim\":null,\"dim\":66,\"n_heads\":3",
    "2\"norm_eps\":0,\"tied_embeddings\":1,\"max_seq_len\":-1.5",
};

size_t fuzz_seed_input(int i, const uint8_t **data)
{
    if (i < 0 || (size_t)i >= sizeof seeds / sizeof *seeds)
        return 0;
    *data = (const uint8_t *)seeds[i];
    return strlen(seeds[i]);
}

/* ---- checks ---- */

static void check_error(int rc, const struct bora_err *err)
{
    if (rc != -EINVAL && rc != -ENOMEM)
        abort();
    if (strncmp(err->msg, "fuzz: ", 6)) {
        fprintf(stderr, "fuzz_model_config: message does not name the file: %s\n", err->msg);
        abort();
    }
}

/* Bounds model_open and the engines rely on once a config parsed. */
static void check_config(const struct model_config *c, enum model_layout layout)
{
    if (c->layout != layout || (c->arch != MODEL_ARCH_MISTRAL && c->arch != MODEL_ARCH_MINISTRAL3))
        abort();
    if (c->dim < 1 || c->dim > (1 << 17) || c->n_layers < 1 || c->n_layers > 1024 ||
        c->n_heads < 1 || c->n_heads > 1024 || c->hidden_dim < 1 || c->hidden_dim > (1 << 20) ||
        c->vocab_size < 2 || c->vocab_size > (1 << 22))
        abort();
    if (c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads || c->head_dim < 2 || c->head_dim % 2)
        abort();
    if ((int64_t)c->n_heads * c->head_dim > INT_MAX)   /* q_dim is computed in int */
        abort();
    if (c->bos_id < 0 || c->eos_id < 0 || c->bos_id >= c->vocab_size || c->eos_id >= c->vocab_size)
        abort();
    if (c->max_pos < 0 || c->sliding_window < 0)
        abort();
    if (!(c->norm_eps > 0 && c->norm_eps <= 1) || !(c->rope_theta >= 1 && c->rope_theta <= 1e12))
        abort();
    if (c->rope == ROPE_YARN && (!(c->yarn_factor >= 1) || c->yarn_orig_max <= 0))
        abort();
    if (c->rope != ROPE_DEFAULT && c->rope != ROPE_YARN)
        abort();
    if (!(c->qscale_beta >= 0 && c->qscale_beta <= 100) ||
        (c->arch == MODEL_ARCH_MINISTRAL3 && c->qscale_beta > 0 && c->qscale_orig_max <= 0))
        abort();
}

/* The RoPE tables and query scale come out of any config that parsed: finite and positive
 * (YaRN with beta_fast 0 or rope_theta 1 once parsed and gave NaN tables). */
static void use_config(const struct model_config *c)
{
    static float inv[FUZZ_ROPE_HALF_MAX];
    float af;
    if (c->head_dim / 2 <= FUZZ_ROPE_HALF_MAX) {
        model_rope_init(c, inv, &af);
        for (int i = 0; i < c->head_dim / 2; i++)
            if (!(isfinite(inv[i]) && inv[i] > 0))
                abort();
        if (!(isfinite(af) && af > 0))
            abort();
    }
    static const int pos[] = { 0, 1, 4095, INT_MAX };
    for (size_t i = 0; i < sizeof pos / sizeof *pos; i++)
        if (!(model_query_scale(c, pos[i]) >= 1.0f))
            abort();
}

typedef int (*parse_fn)(const char *, size_t, const char *, struct model_config *, struct bora_err *);

static void parse_one(parse_fn parse, enum model_layout layout, const char *json, size_t len)
{
    struct model_config c, again;
    struct bora_err err = { { 0 } };
    int rc = parse(json, len, "fuzz", &c, &err);
    if (rc) {
        check_error(rc, &err);
        return;
    }
    check_config(&c, layout);
    if (parse(json, len, "fuzz", &again, &err) || memcmp(&c, &again, sizeof c))
        abort();
    use_config(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[sizeof hf_base + 4096 + 8];
    unsigned mode = size ? data[0] & 3 : 0;
    if ((mode == 1 || mode == 2) && size - 1 <= 4096) {
        const char *base = mode == 1 ? hf_base : native_base;
        size_t n = strlen(base);
        memcpy(buf, base, n);
        if (size > 1)
            buf[n++] = ',';
        memcpy(buf + n, data + 1, size - 1);
        n += size - 1;
        buf[n++] = '}';
        parse_one(mode == 1 ? model_config_parse_hf : model_config_parse_native,
                  mode == 1 ? MODEL_LAYOUT_HF : MODEL_LAYOUT_NATIVE, buf, n);
        return 0;
    }
    parse_one(model_config_parse_hf, MODEL_LAYOUT_HF, (const char *)data, size);
    parse_one(model_config_parse_native, MODEL_LAYOUT_NATIVE, (const char *)data, size);
    return 0;
}
