/* fuzz_safetensors.c — fuzz target for the safetensors header parser and both model config
 * parsers (pure functions over untrusted bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/safetensors.h"

#define CFG_FUZZ_HALF_MAX 512

static const char *const seeds[] = {
    "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
    "\"b\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[8,12]}}",
    "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":4,\"num_attention_heads\":4,"
    "\"num_key_value_heads\":2,\"head_dim\":32,\"intermediate_size\":192,\"vocab_size\":32768,\"rope_theta\":1e6}",
    "{\"architectures\":[\"Ministral3ForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":1,\"num_attention_heads\":4,"
    "\"intermediate_size\":8,\"vocab_size\":32,\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":16,"
    "\"original_max_position_embeddings\":32,\"llama_4_scaling_beta\":0.1}}",
    "{\"dim\":64,\"n_layers\":4,\"head_dim\":16,\"hidden_dim\":192,\"n_heads\":4,\"n_kv_heads\":2,\"norm_eps\":1e-5,"
    "\"vocab_size\":32768,\"rope_theta\":1e6,\"sliding_window\":16}",
};

size_t fuzz_seed_input(int i, const uint8_t **data)
{
    if (i < 0 || (size_t)i >= sizeof seeds / sizeof *seeds)
        return 0;
    *data = (const uint8_t *)seeds[i];
    return strlen(seeds[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_tensor *t;
    int n;
    struct bora_err err;
    if (st_parse_header((const char *)data, size, 64, "fuzz", &t, &n, &err) == 0)
        free(t);
    struct model_config c;
    if (model_config_parse_hf((const char *)data, size, "fuzz", &c, &err) == 0) {
        float inv[CFG_FUZZ_HALF_MAX], af;
        if (c.head_dim / 2 <= CFG_FUZZ_HALF_MAX)
            model_rope_init(&c, inv, &af);
    }
    model_config_parse_native((const char *)data, size, "fuzz", &c, &err);
    return 0;
}
