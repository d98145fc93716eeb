/* model.h — a Mistral checkpoint opened as published (Hugging Face or Mistral native layout):
 * its configuration and its weights as tensors that point into mmap'd files (or into buffers
 * the model owns after on-load quantization). Both engine backends read this. */
#ifndef BORA_MODEL_MODEL_H
#define BORA_MODEL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "model/safetensors.h"

#define MODEL_MAX_SHARDS 256

enum model_arch { MODEL_ARCH_MISTRAL = 0, MODEL_ARCH_MINISTRAL3 };
enum model_layout { MODEL_LAYOUT_HF = 0, MODEL_LAYOUT_NATIVE };
enum model_precision { MODEL_PRECISION_AUTO = 0, MODEL_PRECISION_BF16, MODEL_PRECISION_FP8 };
enum rope_kind { ROPE_DEFAULT = 0, ROPE_YARN };

struct model_config {
    enum model_arch arch;
    enum model_layout layout;
    int dim;              /* hidden size */
    int n_layers;
    int n_heads;          /* query heads */
    int n_kv_heads;
    int head_dim;
    int hidden_dim;       /* FFN intermediate size */
    int vocab_size;
    int max_pos;          /* max_position_embeddings (0 if unknown) */
    int sliding_window;   /* 0 = full attention; else query i sees keys j with i - j < W */
    bool tied;            /* output head shares the embedding matrix */
    float norm_eps;
    /* RoPE */
    enum rope_kind rope;
    double rope_theta;
    bool rope_interleaved;   /* native layout: rotate pairs (2i, 2i+1) instead of (i, i + d/2) */
    double yarn_factor, yarn_beta_fast, yarn_beta_slow, yarn_mscale, yarn_mscale_all_dim;
    int yarn_orig_max;       /* original_max_position_embeddings */
    /* Ministral-3 query scaling: q *= 1 + qscale_beta * ln(1 + floor(pos / qscale_orig_max)) */
    double qscale_beta;      /* 0 = off */
    int qscale_orig_max;
    int bos_id, eos_id;
    bool fp8;             /* the config declares FP8 e4m3 linear weights: Hugging Face quantization_config
                           * (quant_method "fp8"), Mistral native quantization.qformat_weight "fp8_e4m3".
                           * What a load uses is the weights' dtype; this serves a config read alone */
};

/* A weight as the engines see it: rows × cols, row-major, dequantized value
 * w[r][c] = elem(r, c) × scale × (row_scale ? row_scale[r] : 1). */
struct wtensor {
    enum bora_dtype dtype;
    const void *data;
    int64_t rows, cols;      /* vectors (norms) have rows = 1 */
    float scale;             /* per-tensor scale; 1 when none */
    const float *row_scale;  /* (rows) per-output-row scales, or NULL */
};

struct layer_weights {
    struct wtensor attn_norm;   /* (1, dim) */
    struct wtensor wq;          /* (n_heads*head_dim, dim), HF row order (or native if rope_interleaved) */
    struct wtensor wk;          /* (n_kv_heads*head_dim, dim) */
    struct wtensor wv;          /* (n_kv_heads*head_dim, dim) */
    struct wtensor wo;          /* (dim, n_heads*head_dim) */
    struct wtensor ffn_norm;    /* (1, dim) */
    struct wtensor w_gate;      /* (hidden_dim, dim)   HF gate_proj / native w1 */
    struct wtensor w_up;        /* (hidden_dim, dim)   HF up_proj   / native w3 */
    struct wtensor w_down;      /* (dim, hidden_dim)   HF down_proj / native w2 */
};

struct model {
    struct model_config cfg;
    char dir[4096];
    char tokenizer_path[4096];   /* tokenizer file found in dir ("" if none) */
    struct wtensor tok_emb;      /* (vocab, dim) */
    struct wtensor norm;         /* (1, dim) */
    struct wtensor output;       /* (vocab, dim); same data as tok_emb when tied */
    struct layer_weights *layers;  /* (n_layers) */
    float *rope_inv_freq;        /* (head_dim/2) inverse frequencies, YaRN applied */
    float rope_attn_factor;      /* multiplies cos and sin (YaRN mscale; 1 otherwise) */
    enum bora_dtype linear_dtype;   /* dtype of the linear layers after load */
    uint64_t n_params;
    uint64_t weight_bytes;       /* bytes of all weights as held for compute */
    /* storage */
    struct st_file *shards;
    int n_shards;
    void **owned;                /* buffers allocated at load (quantized weights, scales) */
    int n_owned, cap_owned;
};

struct model_open_opts {
    enum model_precision precision;   /* FP8: quantize BF16/F16/F32 linear weights to e4m3, one scale per row */
};

/* Reads and parses dir's config.json (Hugging Face) or else params.json (Mistral native): a regular
 * file (a FIFO, a directory or a dangling link in its place is refused, never read) of at most
 * 16 MiB. fp8 (may be NULL): whether the config declares FP8 weights (cfg->fp8: a Hugging
 * Face quantization_config with quant_method "fp8", a native quantization.qformat_weight "fp8_e4m3"). The weights are not looked at. Errors as model_open's: -ENOENT
 * neither file, -EINVAL a bad value or file (the message names the file and key), -ENOMEM. */
int model_config_read(const char *dir, struct model_config *cfg, bool *fp8, struct bora_err *err);

/* Opens a model directory: HF (config.json + model*.safetensors [+ index]) or Mistral native
 * (params.json + consolidated*.safetensors). Validates every tensor's presence, dtype and
 * shape. Errors: -ENOENT (directory or required file missing), -EINVAL (bad config value,
 * missing or misshapen tensor, unsupported architecture or dtype; message names the file and
 * the key or tensor), -ENOMEM. Caller owns *out; free with model_close. Not thread-safe
 * while opening; a loaded model is read-only and may be shared by threads. */
int model_open(struct model **out, const char *dir, const struct model_open_opts *opts,
               struct bora_err *err);
void model_close(struct model *m);

/* The path of a checkpoint file that a read of its mapping found cut short since the model
 * was opened (st_damaged: truncated or rewritten in place), or NULL. The weights read from it
 * came back as zeros; every result computed since is wrong and the model must be reopened
 * from a sound file. Thread: any; one atomic load per shard, no system call. */
const char *model_damaged(const struct model *m);

/* Human-readable names. */
const char *model_arch_name(enum model_arch a);
const char *model_precision_name(enum model_precision p);
/* Parses "auto" | "bf16" | "fp8"; -EINVAL otherwise. */
int model_precision_parse(const char *s, enum model_precision *out);

/* Pure parsers of the two config formats (fuzzable). `what` names the file in messages. */
int model_config_parse_hf(const char *json, size_t len, const char *what,
                          struct model_config *cfg, struct bora_err *err);
int model_config_parse_native(const char *json, size_t len, const char *what,
                              struct model_config *cfg, struct bora_err *err);

/* Fills inv_freq[head_dim/2] and *attn_factor from cfg (default RoPE or YaRN as transformers 5). */
void model_rope_init(const struct model_config *cfg, float *inv_freq, float *attn_factor);
/* Ministral-3 query scale at absolute position pos (1.0 when off). */
float model_query_scale(const struct model_config *cfg, int pos);

/* Element conversions shared by the backends. */
float bora_bf16_to_f32(uint16_t h);
uint16_t bora_f32_to_bf16(float f);   /* round to nearest even */
float bora_f16_to_f32(uint16_t h);
float bora_e4m3_to_f32(uint8_t v);
uint8_t bora_f32_to_e4m3(float f);    /* saturating to ±448, round to nearest even */

/* Loads one row of a weight as fp32 (dequantized, scales applied). */
void wtensor_row_f32(const struct wtensor *w, int64_t row, float *out);

#endif
