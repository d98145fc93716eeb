/* default_model.c — generates the built-in default model (see default_model.h). */
#include "model/default_model.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "model/model.h"

/* Mistral's v3 SentencePiece model (Apache-2.0, model/default/LICENCE.mistral-common). */
__asm__(".section .rodata\n"
        ".balign 16\n"
        ".global bora_default_tokenizer\n"
        "bora_default_tokenizer:\n"
        ".incbin \"model/default/tokenizer.model.v3\"\n"
        ".global bora_default_tokenizer_end\n"
        "bora_default_tokenizer_end:\n"
        ".previous\n");
extern const unsigned char bora_default_tokenizer[], bora_default_tokenizer_end[];

/* Shape: Mistral-7B's architecture, scaled down (runs instantly on a CPU). */
static const struct synth_spec default_spec = {
    .ministral3 = false, .dim = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 2, .head_dim = 32,
    .hidden_dim = 768, .vocab = 32768, .max_pos = 4096, .seed = 0x626f7261ull /* "bora" */,
};
#define DM_INIT_STD 0.05

static uint64_t rng_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct dm_tensor {
    char name[96];
    int64_t rows, cols;   /* rows = 0: a vector of cols */
    bool ones;            /* norm weights */
};

static int write_all(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -EIO;
}

static int write_safetensors(const char *path, struct dm_tensor *t, int n, const struct synth_spec *sp,
                             struct bora_err *err)
{
    size_t hcap = (size_t)n * 160 + 64;
    char *h = malloc(hcap);
    FILE *f = NULL;
    uint16_t *buf = NULL;
    int rc = 0;
    if (!h)
        return bora_errf(err, -ENOMEM, "out of memory");
    size_t hl = 0;
    uint64_t off = 0;
    hl += (size_t)snprintf(h + hl, hcap - hl, "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"bora default model v%d\"}",
                           DEFAULT_MODEL_VERSION);
    for (int i = 0; i < n; i++) {
        uint64_t bytes = (uint64_t)(t[i].rows ? t[i].rows : 1) * t[i].cols * 2;
        if (t[i].rows)
            hl += (size_t)snprintf(h + hl, hcap - hl, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld,%lld],\"data_offsets\":[%llu,%llu]}",
                                   t[i].name, (long long)t[i].rows, (long long)t[i].cols, (unsigned long long)off,
                                   (unsigned long long)(off + bytes));
        else
            hl += (size_t)snprintf(h + hl, hcap - hl, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[%lld],\"data_offsets\":[%llu,%llu]}",
                                   t[i].name, (long long)t[i].cols, (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    hl += (size_t)snprintf(h + hl, hcap - hl, "}");
    while (hl % 8)
        h[hl++] = ' ';
    f = fopen(path, "wb");
    if (!f) {
        rc = bora_errf(err, -errno, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    uint64_t hl64 = hl;
    if (write_all(f, &hl64, 8) || write_all(f, h, hl)) {
        rc = bora_errf(err, -EIO, "%s: write failed", path);
        goto out;
    }
    uint64_t seed = sp->seed;
    const double a = DM_INIT_STD * 1.7320508075688772;   /* uniform(-a, a) has this std */
    int64_t maxc = 0;
    for (int i = 0; i < n; i++)
        maxc = t[i].cols > maxc ? t[i].cols : maxc;
    buf = malloc((size_t)maxc * 2);
    if (!buf) {
        rc = bora_errf(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        int64_t rows = t[i].rows ? t[i].rows : 1;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < t[i].cols; c++) {
                if (sp->weight) {
                    buf[c] = bora_f32_to_bf16(sp->weight(sp->weight_ctx, t[i].name, r, c));
                    continue;
                }
                double u = (double)(rng_next(&seed) >> 11) / 9007199254740992.0;
                buf[c] = bora_f32_to_bf16(t[i].ones ? 1.0f : (float)((2 * u - 1) * a));
            }
            if (write_all(f, buf, (size_t)t[i].cols * 2)) {
                rc = bora_errf(err, -EIO, "%s: write failed (disk full?)", path);
                goto out;
            }
        }
    }
out:
    if (f && fclose(f) && !rc)
        rc = bora_errf(err, -EIO, "%s: write failed", path);
    free(buf);
    free(h);
    return rc;
}

static int write_text(const char *path, const void *p, size_t n, struct bora_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return bora_errf(err, -errno, "%s: cannot create: %s", path, strerror(errno));
    int rc = write_all(f, p, n);
    if (fclose(f) || rc)
        return bora_errf(err, -EIO, "%s: write failed", path);
    return 0;
}

static int copy_file(const char *from, const char *to, struct bora_err *err)
{
    FILE *in = fopen(from, "rb");
    if (!in)
        return bora_errf(err, -errno, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        int e = errno;
        fclose(in);
        return bora_errf(err, -e, "%s: cannot create: %s", to, strerror(e));
    }
    char buf[1 << 16];
    size_t n;
    int rc = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            rc = bora_errf(err, -EIO, "%s: write failed", to);
            break;
        }
    if (ferror(in))
        rc = bora_errf(err, -EIO, "%s: read failed", from);
    fclose(in);
    if (fclose(out) && !rc)
        rc = bora_errf(err, -EIO, "%s: write failed", to);
    return rc;
}

int synth_model_write(const char *dir, const struct synth_spec *sp, struct bora_err *err)
{
    if (sp->dim <= 0 || sp->n_layers <= 0 || sp->n_heads <= 0 || sp->n_kv_heads <= 0 || sp->n_heads % sp->n_kv_heads ||
        sp->head_dim <= 0 || sp->head_dim % 2 || sp->hidden_dim <= 0 || sp->vocab < 32 || sp->max_pos <= 0)
        return bora_errf(err, -EINVAL, "synthetic model: inconsistent shape");
    if (mkdir(dir, 0755) < 0)
        return bora_errf(err, -errno, "%s: cannot create directory: %s", dir, strerror(errno));
    char path[4200], cfg[2048], rope[512];
    if (sp->ministral3)
        snprintf(rope, sizeof rope,
                 "  \"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 1000000.0, \"factor\": 16.0,\n"
                 "    \"original_max_position_embeddings\": %d, \"beta_fast\": 32.0, \"beta_slow\": 1.0, \"mscale\": 1.0,\n"
                 "    \"mscale_all_dim\": 0.0, \"llama_4_scaling_beta\": 0.1},\n", sp->max_pos / 16 > 0 ? sp->max_pos / 16 : 1);
    else
        snprintf(rope, sizeof rope, "  \"rope_theta\": 1000000.0,\n");
    int n = snprintf(cfg, sizeof cfg,
                     "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n"
                     "  \"_comment\": \"generated by bora: random weights, not a trained model\",\n"
                     "  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                     "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"intermediate_size\": %d,\n"
                     "  \"vocab_size\": %d,\n  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": 1e-05,\n%s"
                     "  \"sliding_window\": null,\n  \"tie_word_embeddings\": false,\n"
                     "  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"torch_dtype\": \"bfloat16\"\n}\n",
                     sp->ministral3 ? "Ministral3ForCausalLM" : "MistralForCausalLM", sp->ministral3 ? "ministral3" : "mistral",
                     sp->dim, sp->n_layers, sp->n_heads, sp->n_kv_heads, sp->head_dim, sp->hidden_dim, sp->vocab, sp->max_pos,
                     rope);
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = write_text(path, cfg, (size_t)n, err);
    if (rc)
        return rc;
    if (sp->tokenizer_path) {
        const char *base = strrchr(sp->tokenizer_path, '/');
        base = base ? base + 1 : sp->tokenizer_path;
        snprintf(path, sizeof path, "%s/%s", dir,
                 strstr(base, "tekken") ? "tekken.json" : strstr(base, ".json") ? "tokenizer.json" : "tokenizer.model");
        rc = copy_file(sp->tokenizer_path, path, err);
    } else if (sp->vocab >= SYNTH_V3_VOCAB) {
        snprintf(path, sizeof path, "%s/tokenizer.model", dir);
        rc = write_text(path, bora_default_tokenizer, (size_t)(bora_default_tokenizer_end - bora_default_tokenizer), err);
    }
    if (rc)
        return rc;
    int nt = 3 + 9 * sp->n_layers;
    struct dm_tensor *t = calloc((size_t)nt, sizeof *t);
    if (!t)
        return bora_errf(err, -ENOMEM, "out of memory");
    int k = 0;
    const int64_t D = sp->dim, Q = (int64_t)sp->n_heads * sp->head_dim, KV = (int64_t)sp->n_kv_heads * sp->head_dim,
                  H = sp->hidden_dim;
    t[k++] = (struct dm_tensor){ "model.embed_tokens.weight", sp->vocab, D, false };
    for (int l = 0; l < sp->n_layers; l++) {
        const struct { const char *n; int64_t r, c; bool ones; } spec[] = {
            { "input_layernorm", 0, D, true },
            { "self_attn.q_proj", Q, D, false },
            { "self_attn.k_proj", KV, D, false },
            { "self_attn.v_proj", KV, D, false },
            { "self_attn.o_proj", D, Q, false },
            { "post_attention_layernorm", 0, D, true },
            { "mlp.gate_proj", H, D, false },
            { "mlp.up_proj", H, D, false },
            { "mlp.down_proj", D, H, false },
        };
        for (size_t s = 0; s < BORA_ARRAY_LEN(spec); s++) {
            snprintf(t[k].name, sizeof t[k].name, "model.layers.%d.%s.weight", l, spec[s].n);
            t[k].rows = spec[s].r;
            t[k].cols = spec[s].c;
            t[k].ones = spec[s].ones;
            k++;
        }
    }
    t[k++] = (struct dm_tensor){ "model.norm.weight", 0, D, true };
    t[k++] = (struct dm_tensor){ "lm_head.weight", sp->vocab, D, false };
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rc = write_safetensors(path, t, k, sp, err);
    free(t);
    return rc;
}

int default_model_write(const char *dir, struct bora_err *err)
{
    return synth_model_write(dir, &default_spec, err);
}

static int mkdirs(char *p)
{
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                *s = '/';
                return -errno;
            }
            *s = '/';
        }
    return mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
}

int default_model_ensure(char *out, size_t cap, struct bora_err *err)
{
    char base[4096];
    const char *e;
    if ((e = getenv("BORA_HOME")) && *e)
        snprintf(base, sizeof base, "%s", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && *e)
        snprintf(base, sizeof base, "%s/bora", e);
    else if ((e = getenv("HOME")) && *e)
        snprintf(base, sizeof base, "%s/.cache/bora", e);
    else {
        /* no home: a folder of this user's in /tmp, private, and refused if someone else made it
         * (a model planted there would be served as the default) */
        snprintf(base, sizeof base, "/tmp/bora-%u", (unsigned)getuid());
        if (mkdir(base, 0700) < 0 && errno != EEXIST)
            return bora_errf(err, -errno, "%s: cannot create directory: %s", base, strerror(errno));
        struct stat st;
        if (lstat(base, &st) < 0)
            return bora_errf(err, -errno, "%s: %s", base, strerror(errno));
        if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
            return bora_errf(err, -EPERM,
                             "%s: not a private directory of this user (owner %u, mode %03o); set BORA_HOME or HOME",
                             base, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
    }
    int n = snprintf(out, cap, "%s/default-model-v%d", base, DEFAULT_MODEL_VERSION);
    if (n < 0 || (size_t)n >= cap)
        return bora_errf(err, -ENAMETOOLONG, "%s: path too long", base);
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/model.safetensors", out);
    if (access(probe, R_OK) == 0)
        return 0;
    int rc = mkdirs(base);
    if (rc)
        return bora_errf(err, rc, "%s: cannot create directory: %s", base, strerror(-rc));
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", out, (int)getpid());
    bora_log(BORA_LOG_INFO, "generating the built-in default model (random weights) in %s", out);
    rc = default_model_write(tmp, err);
    if (!rc && rename(tmp, out) < 0 && errno != ENOTEMPTY && errno != EEXIST)
        rc = bora_errf(err, -errno, "%s: cannot rename to %s: %s", tmp, out, strerror(errno));
    if (rc || access(probe, R_OK) == 0) {   /* failed, or another process won the race */
        char cmd[8500];
        snprintf(cmd, sizeof cmd, "%s/config.json", tmp);
        unlink(cmd);
        snprintf(cmd, sizeof cmd, "%s/tokenizer.model", tmp);
        unlink(cmd);
        snprintf(cmd, sizeof cmd, "%s/model.safetensors", tmp);
        unlink(cmd);
        rmdir(tmp);
    }
    return rc;
}
