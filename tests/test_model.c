/* test_model.c — checkpoint loading and its failure modes (truncated or lying safetensors,
 * missing or misshapen tensors, bad config values, unknown architectures and dtypes), the
 * scalar conversions, RoPE/YaRN constants and the sampler. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/default_model.h"
#include "model/engine.h"
#include "model/model.h"
#include "model/sampler.h"
#include "tests/support/fixtures.h"

/* ---- helpers: a scratch model directory with a chosen config and safetensors file ---- */

static char tmpdir[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/bora-test-model-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd);
}

/* base with its first `from` replaced by `to`, into out (n bytes); from must occur in base. */
static void splice(char *out, size_t n, const char *base, const char *from, const char *to)
{
    const char *at = strstr(base, from);
    assert_non_null(at);
    snprintf(out, n, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
}

static void write_file(const char *name, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

/* A safetensors file from a header (padded) and `data_bytes` bytes of `fill`. */
static void write_st_fill(const char *name, const char *header, size_t data_bytes, uint64_t lie_hlen, unsigned char fill)
{
    size_t hl = strlen(header), pad = (8 - hl % 8) % 8;
    size_t total = 8 + hl + pad + data_bytes;
    unsigned char *b = malloc(total);
    assert_non_null(b);
    uint64_t h64 = lie_hlen ? lie_hlen : hl + pad;
    memcpy(b, &h64, 8);
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', pad);
    memset(b + 8 + hl + pad, fill, data_bytes);
    write_file(name, b, total);
    free(b);
}

/* The same with data bytes of 0x3c (BF16 0.0115). */
static void write_st(const char *name, const char *header, size_t data_bytes, uint64_t lie_hlen)
{
    write_st_fill(name, header, data_bytes, lie_hlen, 0x3c);
}

/* A 1-layer model: dim 8, 2 heads of 4, 1 kv head, ffn 16, vocab 32. */
static const char tiny_config[] =
    "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,"
    "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"intermediate_size\":16,\"vocab_size\":32,"
    "\"rms_norm_eps\":1e-5,\"rope_theta\":10000.0,\"tie_word_embeddings\":false}";

struct spec {
    const char *name;
    int r, c;   /* r = 0: vector */
};
static const struct spec tiny_tensors[] = {
    { "model.embed_tokens.weight", 32, 8 },
    { "model.norm.weight", 0, 8 },
    { "lm_head.weight", 32, 8 },
    { "model.layers.0.input_layernorm.weight", 0, 8 },
    { "model.layers.0.self_attn.q_proj.weight", 8, 8 },
    { "model.layers.0.self_attn.k_proj.weight", 4, 8 },
    { "model.layers.0.self_attn.v_proj.weight", 4, 8 },
    { "model.layers.0.self_attn.o_proj.weight", 8, 8 },
    { "model.layers.0.post_attention_layernorm.weight", 0, 8 },
    { "model.layers.0.mlp.gate_proj.weight", 16, 8 },
    { "model.layers.0.mlp.up_proj.weight", 16, 8 },
    { "model.layers.0.mlp.down_proj.weight", 8, 16 },
};

/* Builds the tiny model's header; `skip` omits one tensor, `bad` gets shape [r+1, c],
 * `dtype_of_bad` replaces its dtype. Returns the data size. */
static size_t tiny_header(char *h, size_t cap, const char *skip, const char *bad, const char *dtype_of_bad)
{
    size_t off = 0, n = 0;
    n += (size_t)snprintf(h + n, cap - n, "{");
    bool first = true;
    for (size_t i = 0; i < sizeof tiny_tensors / sizeof *tiny_tensors; i++) {
        const struct spec *s = &tiny_tensors[i];
        if (skip && !strcmp(skip, s->name))
            continue;
        bool isbad = bad && !strcmp(bad, s->name);
        int r = s->r + (isbad && !dtype_of_bad ? 1 : 0);
        const char *dt = isbad && dtype_of_bad ? dtype_of_bad : "BF16";
        size_t es = !strcmp(dt, "I64") ? 8 : !strcmp(dt, "F8_E4M3") ? 1 : 2;
        size_t bytes = (size_t)(r ? r : 1) * (size_t)s->c * es;
        if (s->r)
            n += (size_t)snprintf(h + n, cap - n, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%d,%d],\"data_offsets\":[%zu,%zu]}",
                                  first ? "" : ",", s->name, dt, r, s->c, off, off + bytes);
        else
            n += (size_t)snprintf(h + n, cap - n, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%d],\"data_offsets\":[%zu,%zu]}",
                                  first ? "" : ",", s->name, dt, s->c, off, off + bytes);
        first = false;
        off += bytes;
    }
    snprintf(h + n, cap - n, "}");
    return off;
}

/* Opens tmpdir and expects failure with a message containing every given fragment. */
static void expect_open_error(int want_rc, const char *frag1, const char *frag2)
{
    struct model *m = NULL;
    struct bora_err err = { "" };
    int rc = model_open(&m, tmpdir, NULL, &err);
    if (rc != want_rc || (frag1 && !strstr(err.msg, frag1)) || (frag2 && !strstr(err.msg, frag2)))
        fail_msg("model_open: rc %d (want %d), message '%s' (want '%s' and '%s')", rc, want_rc, err.msg,
                 frag1 ? frag1 : "", frag2 ? frag2 : "");
    assert_null(m);
}

static void test_tiny_model_loads_and_runs(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, NULL, NULL, NULL);
    write_file("config.json", tiny_config, strlen(tiny_config));
    write_st("model.safetensors", h, data, 0);
    struct model *m;
    struct bora_err err = { "" };
    assert_int_equal(model_open(&m, tmpdir, NULL, &err), 0);
    assert_int_equal(m->cfg.head_dim, 4);
    assert_int_equal(m->cfg.n_kv_heads, 1);
    struct engine *e;
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 8 };
    assert_int_equal(engine_open(&e, m, &eo, &err), 0);
    float lg[32];
    int32_t ids[3] = { 1, 5, 7 };
    assert_int_equal(engine_forward(e, ids, 3, 0, lg), 0);
    for (int i = 0; i < 32; i++)
        assert_true(isfinite(lg[i]));
    int32_t bad = 32;   /* out of vocabulary */
    assert_int_equal(engine_forward(e, &bad, 1, 3, lg), -EINVAL);
    assert_int_equal(engine_forward(e, ids, 3, 7, lg), -EINVAL);   /* past max_ctx */
    assert_string_equal(engine_backend_why(e), "");               /* the CPU was asked for */
    engine_close(e);
    /* AUTO: CUDA where it can run, else the CPU with the reason (no device, no CUDA build,
     * an unsupported GPU) kept for the daemon's banner */
    eo.backend = ENGINE_BACKEND_AUTO;
    assert_int_equal(engine_open(&e, m, &eo, &err), 0);
    if (!strcmp(engine_backend_name(e), "cpu")) {
        assert_true(strstr(engine_backend_why(e), "CUDA") != NULL);
    } else {
        assert_string_equal(engine_backend_name(e), "cuda");
        assert_string_equal(engine_backend_why(e), "");
    }
    engine_close(e);
    model_close(m);
}

static void test_missing_tensor(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, "model.layers.0.mlp.up_proj.weight", NULL, NULL);
    write_file("config.json", tiny_config, strlen(tiny_config));
    write_st("model.safetensors", h, data, 0);
    expect_open_error(-EINVAL, "model.layers.0.mlp.up_proj.weight", "missing");
}

static void test_misshapen_tensor(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, NULL, "model.layers.0.self_attn.k_proj.weight", NULL);
    write_file("config.json", tiny_config, strlen(tiny_config));
    write_st("model.safetensors", h, data, 0);
    expect_open_error(-EINVAL, "k_proj.weight': shape [5, 8], expected [4, 8]", "model.safetensors");
}

static void test_unsupported_dtype(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, NULL, "model.norm.weight", "I64");
    write_file("config.json", tiny_config, strlen(tiny_config));
    write_st("model.safetensors", h, data, 0);
    expect_open_error(-EINVAL, "model.norm.weight", "dtype I64 is not one of");
    data = tiny_header(h, sizeof h, NULL, "model.norm.weight", "Q4_K");
    write_st("model.safetensors", h, data, 0);
    expect_open_error(-EINVAL, "unknown dtype 'Q4_K'", NULL);
}

static void test_truncated_file(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, NULL, NULL, NULL);
    write_file("config.json", tiny_config, strlen(tiny_config));
    write_st("model.safetensors", h, data - 10, 0);   /* the last tensor runs past the end */
    expect_open_error(-EINVAL, "runs past the end", "mlp.down_proj.weight");
    write_file("model.safetensors", "\x10\0\0", 3);   /* shorter than the length prefix */
    expect_open_error(-EINVAL, "truncated", "model.safetensors");
}

static void test_lying_header(void **state)
{
    (void)state;
    write_file("config.json", tiny_config, strlen(tiny_config));
    /* header length larger than the file */
    write_st("model.safetensors", "{}", 0, 1u << 20);
    expect_open_error(-EINVAL, "header length", "does not fit");
    /* shape × dtype size disagrees with the byte range */
    write_st("model.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4,4],\"data_offsets\":[0,30]}}", 32, 0);
    expect_open_error(-EINVAL, "shape × dtype size is 32 bytes but data_offsets span 30", NULL);
    /* overlapping tensors */
    write_st("model.safetensors",
             "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[4,12]}}", 12, 0);
    expect_open_error(-EINVAL, "overlap", NULL);
    /* not JSON */
    write_st("model.safetensors", "{\"a\": [1, 2", 0, 0);
    expect_open_error(-EINVAL, "not valid JSON", NULL);
    /* negative offsets, huge shapes */
    write_st("model.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[-8,0]}}", 8, 0);
    expect_open_error(-EINVAL, "bad data_offsets", NULL);
    write_st("model.safetensors",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, 0);
    expect_open_error(-EINVAL, "overflows", NULL);
}

static void test_bad_config(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, NULL, NULL, NULL);
    write_st("model.safetensors", h, data, 0);
    static const struct {
        const char *json, *frag1, *frag2;
    } cases[] = {
        { "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":8}", "unsupported architecture 'LlamaForCausalLM'", "config.json" },
        { "{\"hidden_size\":8}", "key 'architectures'", "missing" },
        { "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":-8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"vocab_size\":32}",
          "key 'hidden_size'", "got '-8'" },
        { "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":\"one\",\"num_attention_heads\":2,\"intermediate_size\":16,\"vocab_size\":32}",
          "key 'num_hidden_layers'", "\"one\"" },
        { "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"num_key_value_heads\":3,\"intermediate_size\":16,\"vocab_size\":32}",
          "not a multiple of 3 key/value heads", NULL },
        { "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"vocab_size\":32,\"rms_norm_eps\":0}",
          "key 'rms_norm_eps'", NULL },
        { "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"vocab_size\":32,\"rope_parameters\":{\"rope_type\":\"dynamic\"}}",
          "rope type 'dynamic'", NULL },
        { "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":8,\"num_hidden_layers\":1,\"num_attention_heads\":2,\"intermediate_size\":16,\"vocab_size\":32,\"quantization_config\":{\"quant_method\":\"awq\"}}",
          "quant_method", "'awq'" },
        { "[1,2,3]", "not a JSON object", NULL },
        { "{\"architectures\":[\"MistralForCausalLM\"", "not valid JSON", "line" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file("config.json", cases[i].json, strlen(cases[i].json));
        expect_open_error(-EINVAL, cases[i].frag1, cases[i].frag2);
    }
}

static void test_missing_files(void **state)
{
    (void)state;
    struct model *m;
    struct bora_err err = { "" };
    assert_int_equal(model_open(&m, "/nonexistent/bora-model", NULL, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/bora-model"));
    expect_open_error(-ENOENT, "neither config.json", NULL);   /* empty directory */
    write_file("config.json", tiny_config, strlen(tiny_config));
    expect_open_error(-ENOENT, "no model*.safetensors", NULL);
}

static void test_sharded_index(void **state)
{
    (void)state;
    char h[8192];
    size_t data = tiny_header(h, sizeof h, NULL, NULL, NULL);
    write_file("config.json", tiny_config, strlen(tiny_config));
    write_st("model-00001-of-00001.safetensors", h, data, 0);
    const char *idx = "{\"weight_map\":{\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}";
    write_file("model.safetensors.index.json", idx, strlen(idx));
    expect_open_error(-ENOENT, "shard model-00002-of-00002.safetensors (of tensor 'lm_head.weight') is not in", NULL);
    idx = "{\"weight_map\":{\"lm_head.weight\":\"model-00001-of-00001.safetensors\"}}";
    write_file("model.safetensors.index.json", idx, strlen(idx));
    struct model *m;
    struct bora_err err = { "" };
    assert_int_equal(model_open(&m, tmpdir, NULL, &err), 0);
    model_close(m);
}

/* Appends tensor `name` of `dtype` (es bytes an element) and shape `dims` ("2,4") of n elements. */
static void add_tensor_as(char *h, size_t cap, size_t *data, const char *name, const char *dtype, size_t es,
                          const char *dims, size_t n_el)
{
    size_t n = strlen(h) - 1;
    snprintf(h + n, cap - n, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}}", name, dtype,
             dims, *data, *data + es * n_el);
    *data += es * n_el;
}

/* The same for a BF16 vector of c elements. */
static void add_tensor(char *h, size_t cap, size_t *data, const char *name, int c)
{
    char dims[16];
    snprintf(dims, sizeof dims, "%d", c);
    add_tensor_as(h, cap, data, name, "BF16", 2, dims, (size_t)c);
}

/* The text decoder of a multimodal checkpoint (Mistral3ForConditionalGeneration) under either
 * prefix transformers saves it with, its head where that version puts it, beside a vision tower:
 * the same model, the same logits. */
static void test_multimodal_prefixes(void **state)
{
    (void)state;
    char h[8192], hp[8192];
    const size_t data = tiny_header(h, sizeof h, NULL, NULL, NULL);
    static const struct { const char *pre, *head; } v[] = {
        { "", "lm_head.weight" },
        { "model.language_model.", "lm_head.weight" },
        { "language_model.model.", "language_model.lm_head.weight" },
    };
    float ref[32];
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        /* every "model.X" name becomes PRE + "X"; the head is renamed; a vision tensor is added */
        size_t n = 0;
        for (const char *c = h; *c;) {
            if (*v[i].pre && !strncmp(c, "\"model.", 7)) {
                n += (size_t)snprintf(hp + n, sizeof hp - n, "\"%s", v[i].pre);
                c += 7;
            } else if (!strncmp(c, "\"lm_head.weight\"", 16)) {
                n += (size_t)snprintf(hp + n, sizeof hp - n, "\"%s\"", v[i].head);
                c += 16;
            } else {
                hp[n++] = *c++;
            }
            assert_true(n < sizeof hp - 64);
        }
        hp[n] = 0;
        size_t db = data;
        if (*v[i].pre)
            add_tensor(hp, sizeof hp, &db, "model.vision_tower.transformer.layers.0.attention.q_proj.weight", 8);
        write_file("config.json", tiny_config, strlen(tiny_config));
        write_st("model.safetensors", hp, db, 0);
        struct model *m = NULL;
        struct bora_err err = { "" };
        if (model_open(&m, tmpdir, NULL, &err))
            fail_msg("prefix '%s', head '%s': %s", v[i].pre, v[i].head, err.msg);
        struct engine *e;
        struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 8 };
        assert_int_equal(engine_open(&e, m, &eo, &err), 0);
        float lg[32];
        const int32_t ids[2] = { 1, 5 };
        assert_int_equal(engine_forward(e, ids, 2, 0, lg), 0);
        if (i == 0)
            memcpy(ref, lg, sizeof ref);
        else
            assert_memory_equal(lg, ref, sizeof ref);
        engine_close(e);
        model_close(m);
    }
}

/* An FP8 weight's scale: one, or one per row, in a float dtype. */
static void test_fp8_scales(void **state)
{
    (void)state;
    static const struct { const char *dtype; size_t es; const char *dims; size_t n; const char *says; } cases[] = {
        { "F32", 4, "", 1, NULL },                 /* one scale, shape [] */
        { "F32", 4, "8,1", 8, NULL },              /* one per row, [rows, 1] */
        { "BF16", 2, "8", 8, NULL },               /* one per row, [rows] */
        { "F32", 4, "2,4", 8, "shape [2, 4] is neither one scale" },
        { "I16", 2, "8", 8, "a scale must be BF16, F16 or F32" },
    };
    write_file("config.json", tiny_config, strlen(tiny_config));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char h[8192];
        size_t data = tiny_header(h, sizeof h, NULL, "model.layers.0.self_attn.q_proj.weight", "F8_E4M3");
        add_tensor_as(h, sizeof h, &data, "model.layers.0.self_attn.q_proj.weight_scale_inv", cases[i].dtype, cases[i].es,
                      cases[i].dims, cases[i].n);
        write_st("model.safetensors", h, data, 0);
        if (cases[i].says) {
            expect_open_error(-EINVAL, cases[i].says, "q_proj.weight_scale_inv");
        } else {
            struct model *m = NULL;
            struct bora_err err = { "" };
            if (model_open(&m, tmpdir, NULL, &err))
                fail_msg("scale %s [%s]: %s", cases[i].dtype, cases[i].dims, err.msg);
            model_close(m);
        }
    }
    /* Mistral's native name for the same scale (X.qscale_weight, the values of X.weight_scale_inv):
     * the same logits */
    float lg[2][32];
    for (int k = 0; k < 2; k++) {
        char h[8192];
        size_t data = tiny_header(h, sizeof h, NULL, "model.layers.0.self_attn.q_proj.weight", "F8_E4M3");
        add_tensor_as(h, sizeof h, &data,
                      k ? "model.layers.0.self_attn.q_proj.qscale_weight" : "model.layers.0.self_attn.q_proj.weight_scale_inv",
                      "F32", 4, "", 1);
        write_st("model.safetensors", h, data, 0);
        struct model *m = NULL;
        struct bora_err err = { "" };
        if (model_open(&m, tmpdir, NULL, &err))
            fail_msg("scale named %s: %s", k ? "qscale_weight" : "weight_scale_inv", err.msg);
        struct engine *e;
        struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 8 };
        assert_int_equal(engine_open(&e, m, &eo, &err), 0);
        const int32_t ids[2] = { 1, 5 };
        assert_int_equal(engine_forward(e, ids, 2, 0, lg[k]), 0);
        engine_close(e);
        model_close(m);
    }
    assert_memory_equal(lg[0], lg[1], sizeof lg[0]);
}

/* Files that are there but are not files, checkpoints whose bytes or tensors do not add up,
 * configs that say what bora would compute differently, and weights that are not numbers. */
static void test_bad_files_and_tensors(void **state)
{
    (void)state;
    char h[8192], p[600];
    size_t data = tiny_header(h, sizeof h, NULL, NULL, NULL);
    struct model *m = NULL;
    struct bora_err err = { "" };
    alarm(30);   /* a FIFO that blocked the open would hang the test: fail it instead */
    /* config.json a FIFO, a directory, a dangling link: each named, none taken for "absent" */
    snprintf(p, sizeof p, "%s/config.json", tmpdir);
    assert_int_equal(mkfifo(p, 0600), 0);
    expect_open_error(-EINVAL, "config.json: not a regular file (a FIFO)", NULL);
    unlink(p);
    assert_int_equal(mkdir(p, 0700), 0);
    expect_open_error(-EINVAL, "config.json: not a regular file (a directory)", NULL);
    rmdir(p);
    assert_int_equal(symlink("/nonexistent/blob", p), 0);
    expect_open_error(-EINVAL, "config.json: dangling symlink", NULL);
    unlink(p);
    write_file("config.json", tiny_config, strlen(tiny_config));
    /* the weights a FIFO */
    snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
    assert_int_equal(mkfifo(p, 0600), 0);
    expect_open_error(-EINVAL, "model.safetensors: not a regular file", NULL);
    unlink(p);
    /* a tokenizer file present but broken is an error, not a fallback to the next one */
    write_st("model.safetensors", h, data, 0);
    snprintf(p, sizeof p, "%s/tekken.json", tmpdir);
    assert_int_equal(symlink("/nonexistent/blob", p), 0);
    expect_open_error(-EINVAL, "tekken.json: dangling symlink", NULL);
    unlink(p);
    /* the data area must be tiled exactly: trailing bytes, and an empty tensor hiding an overlap */
    write_st("model.safetensors", h, data + 64, 0);
    expect_open_error(-EINVAL, "the last 64 data bytes belong to no tensor", "an entry missing from the header");
    write_st("model.safetensors",
             "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
             "\"e\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[6,6]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[6,14]}}", 14, 0);
    expect_open_error(-EINVAL, "overlap", NULL);
    write_st("model.safetensors", "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]}}", 16, 0);
    expect_open_error(-EINVAL, "data bytes [0, 8) before tensor 'a' belong to no tensor", NULL);
    /* a gap between two tensors (an entry dropped from the header, its bytes left) names both */
    write_st("model.safetensors",
             "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}", 24, 0);
    expect_open_error(-EINVAL, "data bytes [8, 16) between tensors 'a' and 'b' belong to no tensor (no header entry", NULL);
    /* a bias, and a layer the config does not have */
    char hb[8192];
    size_t db = data;
    snprintf(hb, sizeof hb, "%s", h);
    add_tensor(hb, sizeof hb, &db, "model.layers.0.self_attn.q_proj.bias", 8);
    write_st("model.safetensors", hb, db, 0);
    expect_open_error(-EINVAL, "q_proj.bias': a bias", NULL);
    db = data;
    snprintf(hb, sizeof hb, "%s", h);
    add_tensor(hb, sizeof hb, &db, "model.layers.1.input_layernorm.weight", 8);
    write_st("model.safetensors", hb, db, 0);
    expect_open_error(-EINVAL, "is of layer 1, but the config has 1 layers", NULL);
    /* a layer weight Mistral's decoder does not have (a query norm, a LoRA adapter), and layer
     * indices spelled otherwise than bora names layers (a second copy of a layer, or none):
     * refused, named */
    static const struct { const char *name, *says; } stray[] = {
        { "model.layers.0.self_attn.q_norm.weight", "a weight that Mistral's decoder does not have" },
        { "model.layers.0.mlp.down_proj.lora_A.weight", "a weight that Mistral's decoder does not have" },
        { "model.layers.00.input_layernorm.weight", "layer index '00' is not a layer's name" },
        { "model.layers.-1.input_layernorm.weight", "layer index '-1' is not a layer's name" },
        { "model.layers.1a.input_layernorm.weight", "layer index '1a' is not a layer's name" },
        { "model.layers.0x0.input_layernorm.weight", "layer index '0x0' is not a layer's name" },
        { "model.layers.x.input_layernorm.weight", "layer index 'x' is not a layer's name" },
        { "model.layers.0", "layer index '0' is not a layer's name" },
    };
    for (size_t i = 0; i < sizeof stray / sizeof *stray; i++) {
        db = data;
        snprintf(hb, sizeof hb, "%s", h);
        add_tensor(hb, sizeof hb, &db, stray[i].name, 8);
        write_st("model.safetensors", hb, db, 0);
        expect_open_error(-EINVAL, stray[i].name, stray[i].says);
    }
    /* a scale beside a weight that is not FP8: bora would not apply it */
    db = data;
    snprintf(hb, sizeof hb, "%s", h);
    add_tensor_as(hb, sizeof hb, &db, "model.layers.0.self_attn.q_proj.weight_scale_inv", "F32", 4, "", 1);
    write_st("model.safetensors", hb, db, 0);
    expect_open_error(-EINVAL, "is BF16, not FP8, but 'model.layers.0.self_attn.q_proj.weight_scale_inv' is there",
                      NULL);
    /* a tied config beside a stored head: a byte-for-byte copy of the embedding is fine, another
     * matrix is a disagreement (bytes 8 + header, then embed_tokens 512 and norm 16: the head's first) */
    char tied[sizeof tiny_config + 8];
    snprintf(tied, sizeof tied, "%s", tiny_config);
    memcpy(strstr(tied, "false}"), "true} ", 6);
    write_file("config.json", tied, strlen(tied));
    write_st("model.safetensors", h, data, 0);
    assert_int_equal(model_open(&m, tmpdir, NULL, &err), 0);
    model_close(m);
    m = NULL;
    {
        size_t hl = strlen(h), at = 8 + hl + (8 - hl % 8) % 8 + 512 + 16;
        snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
        FILE *f = fopen(p, "r+b");
        assert_non_null(f);
        assert_int_equal(fseek(f, (long)at, SEEK_SET), 0);
        assert_int_equal(fputc(0x40, f), 0x40);
        fclose(f);
    }
    expect_open_error(-EINVAL, "ties the output head to the embedding (tie_word_embeddings), but the checkpoint stores "
                      "its own 'lm_head.weight', which differs", NULL);
    write_file("config.json", tiny_config, strlen(tiny_config));
    db = data;   /* tensors outside the layers (a vision encoder) are left alone */
    snprintf(hb, sizeof hb, "%s", h);
    add_tensor(hb, sizeof hb, &db, "vision_tower.patch_conv.weight", 8);
    write_st("model.safetensors", hb, db, 0);
    assert_int_equal(model_open(&m, tmpdir, NULL, &err), 0);
    model_close(m);
    /* and so are a layer's extras that do not change the decoder: a stored RoPE table, an
     * activation scale */
    db = data;
    snprintf(hb, sizeof hb, "%s", h);
    add_tensor(hb, sizeof hb, &db, "model.layers.0.self_attn.rotary_emb.inv_freq", 8);
    add_tensor(hb, sizeof hb, &db, "model.layers.0.self_attn.q_proj.input_scale", 8);
    write_st("model.safetensors", hb, db, 0);
    if (model_open(&m, tmpdir, NULL, &err))
        fail_msg("a layer's extras refused: %s", err.msg);
    model_close(m);
    /* the same tensor in two shards */
    write_st("model.safetensors", h, data, 0);
    write_st("model-00001-of-00001.safetensors", h, data, 0);
    expect_open_error(-EINVAL, "tensor 'model.embed_tokens.weight' is in both", NULL);
    snprintf(p, sizeof p, "%s/model-00001-of-00001.safetensors", tmpdir);
    unlink(p);
    /* config values bora would compute differently, or cannot tell apart */
    static const struct { const char *from, *to, *says; } cfg[] = {
        { "\"rms_norm_eps\"", "\"hidden_act\":\"gelu\",\"rms_norm_eps\"", "key 'hidden_act': only 'silu'" },
        { "\"rms_norm_eps\"", "\"hidden_size\":16,\"rms_norm_eps\"", "duplicate object key" },
        { "\"rms_norm_eps\"", "\"rope_scaling\":{\"rope_type\":5},\"rms_norm_eps\"", "'rope_parameters.rope_type': must be a string" },
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char c[1024];
        splice(c, sizeof c, tiny_config, cfg[i].from, cfg[i].to);
        write_file("config.json", c, strlen(c));
        expect_open_error(-EINVAL, cfg[i].says, "config.json");
    }
    write_file("config.json", tiny_config, strlen(tiny_config));
    /* NaN weights (BF16 0xffff) load, but the first step says so instead of emitting id 0 */
    write_st_fill("model.safetensors", h, data, 0, 0xff);
    assert_int_equal(model_open(&m, tmpdir, NULL, &err), 0);
    struct engine *e;
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 8 };
    assert_int_equal(engine_open(&e, m, &eo, &err), 0);
    struct sampler s;
    struct sampler_params sp = { .temperature = 0, .top_p = 1, .seed = 1 };
    assert_int_equal(sampler_init(&s, 32, &sp), 0);
    float lg[32];
    int32_t ids[2] = { 1, 5 }, id = -1;
    assert_int_equal(engine_forward_next(e, ids, 2, 0, &s, lg, &id), -EDOM);
    assert_non_null(strstr(engine_error_text(e, -EDOM), "a logit that is not a finite number"));
    engine_close(e);
    model_close(m);
    /* one NaN row of the head (a corrupt checkpoint): the other logits are finite, but the step
     * fails rather than choosing among them; the same model without it answers */
    write_st("model.safetensors", h, data, 0);
    for (int bad = 1; bad >= 0; bad--) {
        if (bad) {   /* the head's row 7 (bytes 8 + header, embed_tokens 512, norm 16, 7 rows of 16) */
            size_t hl = strlen(h), at = 8 + hl + (8 - hl % 8) % 8 + 512 + 16 + 7 * 16;
            snprintf(p, sizeof p, "%s/model.safetensors", tmpdir);
            FILE *f = fopen(p, "r+b");
            assert_non_null(f);
            assert_int_equal(fseek(f, (long)at, SEEK_SET), 0);
            assert_int_equal(fputc(0xff, f), 0xff);
            assert_int_equal(fputc(0xff, f), 0xff);   /* BF16 0xffff: NaN */
            fclose(f);
        }
        assert_int_equal(model_open(&m, tmpdir, NULL, &err), 0);
        assert_int_equal(engine_open(&e, m, &eo, &err), 0);
        id = -1;
        const int rc = engine_forward_next(e, ids, 2, 0, &s, lg, &id);
        if (bad) {
            assert_int_equal(rc, -EDOM);
            assert_true(isnan(lg[7]) && isfinite(lg[6]) && isfinite(lg[8]));
        } else {
            assert_int_equal(rc, 0);
            assert_true(id >= 0 && id < 32);
        }
        engine_close(e);
        model_close(m);
        write_st("model.safetensors", h, data, 0);
    }
    sampler_fini(&s);
    alarm(0);
}

/* ---- conversions ---- */

static void test_e4m3_roundtrip(void **state)
{
    (void)state;
    for (int v = 0; v < 256; v++) {
        if ((v & 0x7f) == 0x7f)
            continue;   /* NaN */
        float f = bora_e4m3_to_f32((uint8_t)v);
        uint8_t back = bora_f32_to_e4m3(f);
        if (v == 0x80)
            assert_true(back == 0x80 || back == 0x00);
        else
            assert_int_equal(back, v);
    }
    assert_true(bora_e4m3_to_f32(0x7e) == 448.0f);
    assert_true(bora_e4m3_to_f32(0x01) == ldexpf(1, -9));
    assert_int_equal(bora_f32_to_e4m3(1e6f), 0x7e);     /* saturates */
    assert_int_equal(bora_f32_to_e4m3(-1e6f), 0xfe);
    assert_int_equal(bora_f32_to_e4m3(1.0625f), 0x38);  /* halfway 1 and 1.125 → even (1.0) */
    assert_int_equal(bora_f32_to_e4m3(1.1875f), 0x3a);  /* halfway 1.125 and 1.25 → even (1.25) */
}

static void test_bf16_f16(void **state)
{
    (void)state;
    assert_true(bora_bf16_to_f32(0x3f80) == 1.0f);
    assert_int_equal(bora_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(bora_f32_to_bf16(1.00390625f), 0x3f80);   /* tie → even */
    assert_int_equal(bora_f32_to_bf16(1.01171875f), 0x3f82);   /* tie → even (up) */
    assert_true(bora_f16_to_f32(0x3c00) == 1.0f);
    assert_true(bora_f16_to_f32(0xc000) == -2.0f);
    assert_true(bora_f16_to_f32(0x0001) == ldexpf(1, -24));
    assert_true(isinf(bora_f16_to_f32(0x7c00)));
}

/* YaRN constants from the fixture notes: attention factor 0.1·ln(16) + 1. */
static void test_yarn_constants(void **state)
{
    (void)state;
    const char *cfg = "{\"architectures\":[\"Ministral3ForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":1,"
                      "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,\"intermediate_size\":8,"
                      "\"vocab_size\":32,\"max_position_embeddings\":512,\"rope_parameters\":{\"rope_type\":\"yarn\","
                      "\"rope_theta\":1000000.0,\"factor\":16.0,\"original_max_position_embeddings\":32,"
                      "\"beta_fast\":32.0,\"beta_slow\":1.0,\"mscale\":1.0,\"mscale_all_dim\":0.0,\"llama_4_scaling_beta\":0.1}}";
    struct model_config c;
    struct bora_err err;
    assert_int_equal(model_config_parse_hf(cfg, strlen(cfg), "t", &c, &err), 0);
    float inv[16], af;
    model_rope_init(&c, inv, &af);
    assert_float_equal(af, 1.2772589f, 1e-6);
    assert_float_equal(inv[0], 1.0f, 1e-7);                 /* fastest pair: pure extrapolation */
    assert_float_equal(inv[15], (float)(1.0 / pow(1e6, 30.0 / 32) / 16), 1e-12);   /* slowest: interpolated */
    assert_float_equal(model_query_scale(&c, 31), 1.0f, 0);
    assert_float_equal(model_query_scale(&c, 32), 1.0f + 0.1f * logf(2.0f), 1e-6);
    assert_float_equal(model_query_scale(&c, 100), 1.0f + 0.1f * logf(4.0f), 1e-6);
    /* YaRN settings whose correction range divides by zero are refused with the key named
     * (they parsed before and gave NaN RoPE frequencies) */
    static const struct { const char *from, *to, *says; } bad[] = {
        { "\"beta_fast\":32.0", "\"beta_fast\":0", "beta_fast and beta_slow" },
        { "\"beta_slow\":1.0", "\"beta_slow\":0", "beta_fast and beta_slow" },
        { "\"rope_theta\":1000000.0", "\"rope_theta\":1.0", "rope_theta > 1" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[1024];
        splice(buf, sizeof buf, cfg, bad[i].from, bad[i].to);
        assert_int_equal(model_config_parse_hf(buf, strlen(buf), "t", &c, &err), -EINVAL);
        if (!strstr(err.msg, bad[i].says))
            fail_msg("%s: %s", bad[i].to, err.msg);
    }
    const char *native = "{\"dim\":64,\"n_layers\":1,\"head_dim\":32,\"hidden_dim\":8,\"n_heads\":4,\"n_kv_heads\":2,"
                         "\"norm_eps\":1e-5,\"vocab_size\":32,\"rope_theta\":1.0,"
                         "\"yarn\":{\"factor\":16.0,\"original_max_position_embeddings\":32,\"beta\":32.0,\"alpha\":1.0}}";
    assert_int_equal(model_config_parse_native(native, strlen(native), "params.json", &c, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "rope_theta > 1"));
    /* blocks that change the computation are refused by name; null ones are not blocks */
    const char *dense = "{\"dim\":64,\"n_layers\":1,\"head_dim\":32,\"hidden_dim\":8,\"n_heads\":4,\"n_kv_heads\":2,"
                        "\"norm_eps\":1e-5,\"vocab_size\":32,\"rope_theta\":10000.0%s}";
    static const struct { const char *add, *says; } blk[] = {
        { ",\"moe\":{\"num_experts\":8,\"num_experts_per_tok\":2}", "key 'moe': a mixture of experts" },
        { ",\"lora\":{\"rank\":64}", "key 'lora': LoRA adapters" },
        { ",\"moe\":null,\"lora\":null", NULL },
        { "", NULL },
    };
    for (size_t i = 0; i < sizeof blk / sizeof blk[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, dense, blk[i].add);
        const int rc = model_config_parse_native(buf, strlen(buf), "params.json", &c, &err);
        if (blk[i].says ? rc != -EINVAL || !strstr(err.msg, blk[i].says) : rc != 0)
            fail_msg("%s: rc %d: %s", buf, rc, err.msg);
        assert_false(c.fp8);
    }
    /* FP8 as Mistral declares it natively (params.json "quantization"), and what is refused */
    static const struct { const char *add, *says; } q[] = {
        { ",\"quantization\":{\"qformat_weight\":\"fp8_e4m3\",\"qscheme_act\":\"TENSOR\"}", NULL },
        { ",\"quantization\":{\"qformat_weight\":\"int4\"}", "only 'fp8_e4m3' is supported (got 'int4')" },
        { ",\"quantization\":{\"qscheme_act\":\"TENSOR\"}", "only 'fp8_e4m3' is supported (got none)" },
        { ",\"quantization\":\"fp8\"", "(got a 'quantization' that is not an object)" },
        { ",\"quantization\":null", NULL },
        { ",\"comment\":\"fp8\"", NULL },   /* the text fp8 alone declares nothing */
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, dense, q[i].add);
        const int rc = model_config_parse_native(buf, strlen(buf), "params.json", &c, &err);
        if (q[i].says ? rc != -EINVAL || !strstr(err.msg, q[i].says) : rc != 0)
            fail_msg("%s: rc %d: %s", buf, rc, err.msg);
        if (!q[i].says)
            assert_int_equal(c.fp8, i == 0);
    }
}

/* ---- sampler ---- */

static void test_sampler(void **state)
{
    (void)state;
    float lg[6] = { 0.1f, 2.0f, 1.9f, -1.0f, 2.0f, 0.5f };
    assert_int_equal(sampler_argmax(lg, 6), 1);   /* lowest id on ties */
    struct sampler s;
    struct sampler_params p = { .temperature = 0, .top_p = 1, .top_k = 0, .seed = 7 };
    assert_int_equal(sampler_init(&s, 6, &p), 0);
    assert_int_equal(sampler_sample(&s, lg), 1);
    /* top_k = 2 at high temperature only ever picks the two best (ids 1 and 4) */
    p = (struct sampler_params){ .temperature = 5, .top_p = 1, .top_k = 2, .seed = 7 };
    assert_int_equal(sampler_reset(&s, &p), 0);
    int counts[6] = { 0 };
    for (int i = 0; i < 2000; i++)
        counts[sampler_sample(&s, lg)]++;
    assert_int_equal(counts[1] + counts[4], 2000);
    assert_true(counts[1] > 800 && counts[4] > 800);
    /* temperature 1, no truncation: frequencies follow softmax (±4 sigma with n = 20000) */
    p = (struct sampler_params){ .temperature = 1, .top_p = 1, .top_k = 0, .seed = 11 };
    assert_int_equal(sampler_reset(&s, &p), 0);
    memset(counts, 0, sizeof counts);
    const int N = 20000;
    for (int i = 0; i < N; i++)
        counts[sampler_sample(&s, lg)]++;
    double z = 0;
    for (int i = 0; i < 6; i++)
        z += exp(lg[i]);
    for (int i = 0; i < 6; i++) {
        double pr = exp(lg[i]) / z, sd = sqrt(N * pr * (1 - pr));
        assert_true(fabs(counts[i] - N * pr) < 4 * sd + 1);
    }
    /* inside the set top-k and top-p keep, draws still follow the softmax renormalised over it
     * (±4 sigma, n = 20000): top-k 3; top-p 0.8 alone (the nucleus {1, 4, 2}: 0.30, 0.60, 0.87 of
     * the mass); top-k 4 then top-p 0.9 (0.32, 0.64, 0.93 of the four: again {1, 4, 2}) */
    const struct { uint32_t k; float p; int n_keep; } kept[] = { { 3, 1.0f, 3 }, { 0, 0.8f, 3 }, { 4, 0.9f, 3 } };
    const int keep_ids[3] = { 1, 4, 2 };
    for (size_t c = 0; c < sizeof kept / sizeof kept[0]; c++) {
        p = (struct sampler_params){ .temperature = 1, .top_p = kept[c].p, .top_k = kept[c].k, .seed = 13 + c };
        assert_int_equal(sampler_reset(&s, &p), 0);
        memset(counts, 0, sizeof counts);
        for (int i = 0; i < N; i++)
            counts[sampler_sample(&s, lg)]++;
        double zk = 0;
        for (int j = 0; j < kept[c].n_keep; j++)
            zk += exp(lg[keep_ids[j]]);
        int in_set = 0;
        for (int j = 0; j < kept[c].n_keep; j++) {
            const int id = keep_ids[j];
            double pr = exp(lg[id]) / zk, sd = sqrt(N * pr * (1 - pr));
            in_set += counts[id];
            if (!(fabs(counts[id] - N * pr) < 4 * sd + 1))
                fail_msg("top-k %u top-p %g: id %d drawn %d times of %d, expected %.0f", kept[c].k, (double)kept[c].p, id,
                         counts[id], N, N * pr);
        }
        assert_int_equal(in_set, N);
    }
    p = (struct sampler_params){ .temperature = 1, .top_p = 1, .top_k = 0, .seed = 11 };
    /* same seed ⇒ same sequence */
    int32_t a[50], b[50];
    assert_int_equal(sampler_reset(&s, &p), 0);
    for (int i = 0; i < 50; i++)
        a[i] = sampler_sample(&s, lg);
    assert_int_equal(sampler_reset(&s, &p), 0);
    for (int i = 0; i < 50; i++)
        b[i] = sampler_sample(&s, lg);
    assert_memory_equal(a, b, sizeof a);
    /* top_p small keeps only the most likely */
    p = (struct sampler_params){ .temperature = 1, .top_p = 0.01f, .top_k = 0, .seed = 3 };
    assert_int_equal(sampler_reset(&s, &p), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(sampler_sample(&s, lg), 1);
    /* invalid parameters */
    p.top_p = 0;
    assert_int_equal(sampler_reset(&s, &p), -EINVAL);
    p.top_p = 1;
    p.temperature = -1;
    assert_int_equal(sampler_reset(&s, &p), -EINVAL);
    p.temperature = NAN;
    assert_int_equal(sampler_reset(&s, &p), -EINVAL);
    /* a temperature so small that 1/T overflows still picks the best token */
    p = (struct sampler_params){ .temperature = 1e-40f, .top_p = 0.9f, .top_k = 0, .seed = 3 };
    assert_int_equal(sampler_reset(&s, &p), 0);
    const float one_best[6] = { 0.1f, 2.0f, 1.9f, -1.0f, 1.99f, 0.5f };
    for (int i = 0; i < 20; i++)
        assert_int_equal(sampler_sample(&s, one_best), 1);
    /* no finite best logit (all NaN, or +inf): the greedy pick, never a read outside the scratch */
    float bad[6] = { NAN, NAN, NAN, NAN, NAN, NAN };
    p.temperature = 1;
    assert_int_equal(sampler_reset(&s, &p), 0);
    assert_int_equal(sampler_sample(&s, bad), 0);
    bad[3] = INFINITY;
    assert_int_equal(sampler_sample(&s, bad), 3);
    sampler_fini(&s);
    /* logits shaped against a median-of-three pivot (a peak in the middle, falling off linearly
     * on both sides) at Tekken's vocabulary: every pick among the 40 best, and quickly (the
     * selection falls back to sorting after too many partition rounds) */
    const int V = 131072, mid = V / 2;
    float *big = malloc(sizeof *big * V);
    assert_non_null(big);
    for (int i = 0; i < V; i++)
        big[i] = 20.0f - 0.001f * (float)abs(i - mid);
    p = (struct sampler_params){ .temperature = 0.7f, .top_p = 0.9f, .top_k = 40, .seed = 9 };
    assert_int_equal(sampler_init(&s, V, &p), 0);
    for (int k = 0; k < 20; k++) {
        int id = sampler_sample(&s, big);
        assert_true(abs(id - mid) <= 20);
    }
    p.top_k = 0;   /* top-p alone over a near-flat tail: a large nucleus */
    assert_int_equal(sampler_reset(&s, &p), 0);
    for (int k = 0; k < 5; k++) {
        int id = sampler_sample(&s, big);
        assert_true(id >= 0 && id < V);
    }
    sampler_fini(&s);
    free(big);
}

/* The sets top-k and top-p keep, against a sort of the whole vocabulary in double precision
 * (larger logit first, lower id on ties): every draw lies in the reference set, and with enough
 * draws every member of a small set shows up. Logits of 3,001 ids (not a multiple of the sampler's
 * blocks), many of them tied (integers 0-9), then distinct ones. */
static int ref_order(const void *a, const void *b)
{
    static const float *l;
    if (!b) {   /* set the logits */
        l = a;
        return 0;
    }
    const int x = *(const int *)a, y = *(const int *)b;
    return l[x] > l[y] ? -1 : l[x] < l[y] ? 1 : x - y;
}

static void test_sampler_sets(void **state)
{
    (void)state;
    enum { V = 3001 };
    static float lg[V];
    static int order[V], rank[V];
    for (int pass = 0; pass < 2; pass++) {
        uint64_t x = 12345 + (uint64_t)pass;
        for (int i = 0; i < V; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            lg[i] = pass == 0 ? (float)((x >> 33) % 10) : (float)((double)(x >> 11) / 9007199254740992.0 * 12.0 - 6.0);
            order[i] = i;
        }
        ref_order(lg, NULL);
        qsort(order, V, sizeof *order, ref_order);
        for (int i = 0; i < V; i++)
            rank[order[i]] = i;
        const float T = 0.8f;
        /* top-k 50: the 50 first of the order, ties to the lowest ids */
        struct sampler s;
        struct sampler_params p = { .temperature = T, .top_p = 1, .top_k = 50, .seed = 21 };
        assert_int_equal(sampler_init(&s, V, &p), 0);
        int seen[50] = { 0 };
        for (int k = 0; k < 20000; k++) {
            const int id = sampler_sample(&s, lg);
            assert_true(id >= 0 && id < V);
            if (rank[id] >= 50)
                fail_msg("pass %d: top-k 50 drew id %d of rank %d", pass, id, rank[id]);
            seen[rank[id]] = 1;
        }
        int n_seen = 0;
        for (int i = 0; i < 50; i++)
            n_seen += seen[i];
        if (pass == 0)   /* 50 ties of the largest logit: each drawn about 400 times */
            assert_int_equal(n_seen, 50);
        else
            assert_true(n_seen >= 40);
        /* top-p 0.3 alone and after top-k 200: the shortest prefix of the order reaching the mass */
        for (int with_k = 0; with_k < 2; with_k++) {
            const int kk = with_k ? 200 : V;
            double z = 0, acc = 0;
            for (int i = 0; i < kk; i++)
                z += exp(((double)lg[order[i]] - lg[order[0]]) / T);
            int cut = 0;
            while (cut < kk && acc < (double)0.3f * z)   /* the sampler's float top_p, widened */
                acc += exp(((double)lg[order[cut++]] - lg[order[0]]) / T);
            p = (struct sampler_params){ .temperature = T, .top_p = 0.3f, .top_k = with_k ? 200 : 0, .seed = 5 };
            assert_int_equal(sampler_reset(&s, &p), 0);
            for (int k = 0; k < 5000; k++) {
                const int id = sampler_sample(&s, lg);
                if (rank[id] >= cut)
                    fail_msg("pass %d: top-p 0.3 (top-k %d) drew id %d of rank %d, nucleus %d", pass, kk, id,
                             rank[id], cut);
            }
        }
        sampler_fini(&s);
    }
}

/* The built-in default model is generated deterministically and loads. */
static void test_default_model(void **state)
{
    (void)state;
    char d1[512], d2[512];
    snprintf(d1, sizeof d1, "%s/a", tmpdir);
    snprintf(d2, sizeof d2, "%s/b", tmpdir);
    struct bora_err err = { "" };
    assert_int_equal(default_model_write(d1, &err), 0);
    assert_int_equal(default_model_write(d2, &err), 0);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cmp -s %s/model.safetensors %s/model.safetensors", d1, d2);
    assert_int_equal(system(cmd), 0);
    struct model *m;
    assert_int_equal(model_open(&m, d1, NULL, &err), 0);
    assert_int_equal(m->cfg.vocab_size, 32768);
    assert_non_null(strstr(m->tokenizer_path, "tokenizer.model"));
    model_close(m);
    assert_int_equal(default_model_write(d1, &err), -EEXIST);
}

static void own_sigbus(int sig)
{
    (void)sig;
    _exit(7);
}

/* A child with `handler` as its SIGBUS action (the harness's own out of the way) opens the model
 * at dir, which arms the guard over that action, as in a process of its own; then it either sends
 * itself SIGBUS with kill() or reads a page of a file (at path) truncated under its mapping: a
 * SIGBUS that is not a checkpoint's. Returns its wait status. Exits 2-4: setup failed; 5-6: the
 * read returned (the guard swallowed the fault); SIGALRM: it spun on the fault. */
static int sigbus_child(const char *dir, const char *path, void (*handler)(int), bool by_kill)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGBUS, handler);
        struct model *m;
        struct bora_err err = { "" };
        if (model_open(&m, dir, NULL, &err))
            _exit(2);
        alarm(20);
        if (by_kill) {
            kill(getpid(), SIGBUS);
            _exit(3);   /* survived */
        }
        const long page = sysconf(_SC_PAGESIZE);
        FILE *f = fopen(path, "w+");
        int fd = f ? fileno(f) : -1;
        if (fd < 0 || ftruncate(fd, 4 * page) < 0)
            _exit(3);
        volatile const char *p = mmap(NULL, (size_t)(4 * page), PROT_READ, MAP_SHARED, fd, 0);
        if ((void *)p == MAP_FAILED || ftruncate(fd, 0) < 0)
            _exit(4);
        char c = p[2 * page];
        _exit(c == 0 ? 5 : 6);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    return ws;
}

/* A checkpoint file cut short while the CPU engine reads its weights from the mapping: the
 * SIGBUS guard turns what used to end the process into -ESTALE naming the file, for this
 * forward and every later one; a SIGBUS outside a checkpoint's mapping still ends the process. */
static void test_file_cut_under_engine(void **state)
{
    (void)state;
    char d[512], st[600];
    snprintf(d, sizeof d, "%s/m", tmpdir);
    snprintf(st, sizeof st, "%s/model.safetensors", d);
    struct bora_err err = { "" };
    assert_int_equal(default_model_write(d, &err), 0);
    struct stat sb;
    assert_int_equal(stat(st, &sb), 0);
    const long page = sysconf(_SC_PAGESIZE);
    assert_true(sb.st_size > 64 * page);   /* the cut below leaves most weights past the end */
    struct model *m;
    assert_int_equal(model_open(&m, d, NULL, &err), 0);
    assert_null(model_damaged(m));
    struct engine *e;
    struct engine_opts eo = { .backend = ENGINE_BACKEND_CPU, .max_ctx = 16, .n_threads = 2 };
    assert_int_equal(engine_open(&e, m, &eo, &err), 0);
    const int V = m->cfg.vocab_size;
    float *lg = malloc((size_t)V * sizeof *lg);
    assert_non_null(lg);
    int32_t ids[3] = { 1, 1000, 2000 };
    assert_int_equal(engine_forward(e, ids, 3, 0, lg), 0);
    assert_null(model_damaged(m));

    /* cut the file at a page boundary a quarter in: the header and the first tensors stay */
    assert_int_equal(truncate(st, (sb.st_size / 4) & ~(page - 1)), 0);
    engine_reset(e);
    int rc = engine_forward(e, ids, 3, 0, lg);
    assert_int_equal(rc, -ESTALE);
    const char *msg = engine_error_text(e, rc);
    assert_non_null(strstr(msg, st));
    assert_non_null(strstr(msg, "cut short"));
    assert_non_null(model_damaged(m));
    assert_string_equal(model_damaged(m), st);
    /* and so is every later step, sampled or not: the weights are gone */
    struct sampler smp;
    assert_int_equal(sampler_init(&smp, V, &(struct sampler_params){ .temperature = 0, .top_p = 1 }), 0);
    int32_t next;
    assert_int_equal(engine_forward_next(e, ids, 1, 3, &smp, lg, &next), -ESTALE);
    assert_int_equal(engine_forward_all(e, ids, 1, 4, lg), -ESTALE);
    sampler_fini(&smp);
    engine_close(e);
    model_close(m);
    free(lg);

    /* reopening the cut file is refused by the header checks, as any truncated checkpoint */
    assert_int_not_equal(model_open(&m, d, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "truncated"));

    /* a SIGBUS that is not a checkpoint's still ends the process (the guard is installed by now) */
    char other[600];
    snprintf(other, sizeof other, "%s/other", tmpdir);
    snprintf(d, sizeof d, "%s/m2", tmpdir);   /* a sound model for the children to open */
    assert_int_equal(default_model_write(d, &err), 0);
    int ws = sigbus_child(d, other, SIG_DFL, false);   /* a foreign fault: the default action */
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGBUS);
    ws = sigbus_child(d, other, SIG_DFL, true);        /* kill(): no access to run again */
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGBUS);
    ws = sigbus_child(d, other, own_sigbus, false);    /* a handler installed before the guard */
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_multimodal_prefixes, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_tiny_model_loads_and_runs, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_missing_tensor, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_misshapen_tensor, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_unsupported_dtype, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_truncated_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_lying_header, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_config, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_missing_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_sharded_index, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_bad_files_and_tensors, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fp8_scales, setup_dir, teardown_dir),
        cmocka_unit_test(test_e4m3_roundtrip),
        cmocka_unit_test(test_bf16_f16),
        cmocka_unit_test(test_yarn_constants),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_sampler_sets),
        cmocka_unit_test_setup_teardown(test_default_model, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_file_cut_under_engine, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
