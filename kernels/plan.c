/* plan.c — the arena layout and byte counts behind the CUDA engine's refusal check and
 * `bora plan`; presets and the GPU table. Pure arithmetic, no GPU. */
#include "kernels/plan.h"
#include "kernels/attn_shape.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static size_t align_up(size_t v) { return (v + PLAN_ALIGN - 1) / PLAN_ALIGN * PLAN_ALIGN; }

/* Takes n bytes at *cur, returns their offset. */
static size_t take(size_t *cur, uint64_t n)
{
    size_t off = *cur;
    *cur = align_up(*cur + (size_t)n);
    return off;
}

static int elem_bytes(enum bora_dtype dt)
{
    return dt == BORA_DT_F8_E4M3 ? 1 : dt == BORA_DT_BF16 ? 2 : 0;
}

int plan_attn_splits(int n_kv, int max_ctx, int window)
{
    int len = window > 0 && window < max_ctx ? window : max_ctx;
    int s = (PLAN_ATTN_TARGET_BLOCKS + n_kv - 1) / n_kv;
    if (s > len)
        s = len;
    return s < 1 ? 1 : s;
}

int plan_attn_splits_for(const struct model_config *c, int max_ctx)
{
    int s = plan_attn_splits(c->n_kv_heads, max_ctx, c->sliding_window);
    const int G = c->n_kv_heads > 0 ? c->n_heads / c->n_kv_heads : 1, hd = c->head_dim;
    /* the attention that runs is attn_item (kern_attention's own test), whose scores buffer grows
     * with the keys a split holds */
    if (attn_on_tensor_cores(G, hd))
        return s;
    const int len = c->sliding_window > 0 && c->sliding_window < max_ctx ? c->sliding_window : max_ctx;
    size_t f = attn_smem_bytes(G, hd, attn_chunk_max(max_ctx, c->sliding_window, s), s, ATTN_ITEM_THREADS);
    /* more splits shrink the scores but grow the per-split combine arrays: stop where it fits, or
     * where one more split stops helping (then no count fits), or at the grid's y limit */
    while (f > ATTN_ITEM_SMEM_MAX && s < len && s < 65535) {
        const size_t g = attn_smem_bytes(G, hd, attn_chunk_max(max_ctx, c->sliding_window, s + 1), s + 1,
                                         ATTN_ITEM_THREADS);
        if (g >= f)
            break;
        s++;
        f = g;
    }
    return f <= ATTN_ITEM_SMEM_MAX ? s : -1;
}

int plan_switch_position(double a_lo, double b_lo, double a_hi, double b_hi, int lo, int hi, bool *a_first)
{
    const double d0 = a_lo - b_lo, d1 = a_hi - b_hi;   /* <= 0: A at least as fast */
    *a_first = d0 <= 0;
    if ((d0 <= 0) == (d1 <= 0) || hi <= lo)
        return INT_MAX;
    /* the crossing of the two lines, then the first position past it */
    const double x = (double)lo + (double)(hi - lo) * d0 / (d0 - d1);
    int at = (int)x + 1;
    return at <= lo ? lo + 1 : at > hi ? hi : at;
}

size_t plan_attn_partial_floats(int n_heads, int head_dim, int n_split)
{
    return (size_t)n_split * (size_t)n_heads * (size_t)(head_dim + 2);
}

static int check_cfg(const struct model_config *c, const struct plan_dtypes *dt, int max_ctx,
                     struct bora_err *err)
{
    if (c->dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->hidden_dim <= 0 || c->vocab_size <= 0)
        return bora_errf(err, -EINVAL, "plan: non-positive dimension (dim %d layers %d heads %d/%d "
                         "head_dim %d hidden %d vocab %d)", c->dim, c->n_layers, c->n_heads,
                         c->n_kv_heads, c->head_dim, c->hidden_dim, c->vocab_size);
    if (c->head_dim % 2 || c->n_heads % c->n_kv_heads)
        return bora_errf(err, -EINVAL, "plan: head_dim %d must be even and heads %d a multiple of kv heads %d",
                         c->head_dim, c->n_heads, c->n_kv_heads);
    if (max_ctx <= 0)
        return bora_errf(err, -EINVAL, "plan: context %d tokens", max_ctx);
    if (!elem_bytes(dt->linear) || !elem_bytes(dt->emb) || (!c->tied && !elem_bytes(dt->out)))
        return bora_errf(err, -EINVAL, "plan: weights must be BF16 or F8_E4M3 on the GPU");
    return 0;
}

int plan_layout_compute(const struct model_config *c, const struct plan_dtypes *dt, int max_ctx,
                        struct plan_layout *o, struct bora_err *err)
{
    int rc = check_cfg(c, dt, max_ctx, err);
    if (rc)
        return rc;
    memset(o, 0, sizeof *o);
    const uint64_t dim = (uint64_t)c->dim, hd = (uint64_t)c->head_dim, hid = (uint64_t)c->hidden_dim;
    const uint64_t q_dim = (uint64_t)c->n_heads * hd, kv_dim = (uint64_t)c->n_kv_heads * hd;
    const uint64_t qkv_rows = q_dim + 2 * kv_dim, vocab = (uint64_t)c->vocab_size;
    const int le = elem_bytes(dt->linear);
    size_t cur = 0;

    o->emb = take(&cur, vocab * dim * (uint64_t)elem_bytes(dt->emb));
    o->emb_rs = take(&cur, vocab * 4);
    if (!c->tied) {
        o->out = take(&cur, vocab * dim * (uint64_t)elem_bytes(dt->out));
        o->out_rs = take(&cur, vocab * 4);
    } else {
        o->out = o->emb;
        o->out_rs = o->emb_rs;
    }
    o->norm = take(&cur, dim * 4);
    o->inv_freq = take(&cur, hd / 2 * 4);

    size_t lc = 0;   /* one layer, relative */
    o->l_qkv = take(&lc, qkv_rows * dim * le);
    o->l_qkv_rs = take(&lc, qkv_rows * 4);
    o->l_wo = take(&lc, dim * q_dim * le);
    o->l_wo_rs = take(&lc, dim * 4);
    o->l_gu = take(&lc, 2 * hid * dim * le);
    o->l_gu_rs = take(&lc, 2 * hid * 4);
    o->l_down = take(&lc, dim * hid * le);
    o->l_down_rs = take(&lc, dim * 4);
    o->l_attn_norm = take(&lc, dim * 4);
    o->l_ffn_norm = take(&lc, dim * 4);
    o->layer_stride = lc;
    o->layers = take(&cur, (uint64_t)lc * (uint64_t)c->n_layers);
    o->weight_bytes = cur;

    const uint64_t ke = dt->kv_fp8 ? 1 : 2;
    o->kv_layer_stride = align_up((size_t)(2 * kv_dim * (uint64_t)max_ctx * ke));
    o->kv = take(&cur, (uint64_t)o->kv_layer_stride * (uint64_t)c->n_layers);
    o->kv_bytes = cur - o->weight_bytes;
    o->kv_bytes_per_key = 2 * kv_dim * ke * (uint64_t)c->n_layers;

    o->n_split = plan_attn_splits_for(c, max_ctx);   /* -1: plan_check_fit refuses it, after the bytes */
    const int ns = o->n_split > 0 ? o->n_split : plan_attn_splits(c->n_kv_heads, max_ctx, c->sliding_window);
    o->n_counters = c->n_layers * (4 + c->n_kv_heads) + 1 + PLAN_TUNE_COUNTERS;
    size_t act0 = cur;
    o->x = take(&cur, dim * 4);
    o->qkv = take(&cur, qkv_rows * 4);
    o->att = take(&cur, q_dim * 4);
    o->h = take(&cur, hid * 4);
    o->logits = take(&cur, vocab * 4);
    o->partial = take(&cur, plan_attn_partial_floats(c->n_heads, c->head_dim, ns) * 4);
    o->counters = take(&cur, (uint64_t)o->n_counters * 4);
    o->tokens = take(&cur, (uint64_t)max_ctx * 4);
    o->state = take(&cur, 64);
    o->sample_work = take(&cur, KERN_SAMPLE_WORK_BYTES);
    o->act_bytes = cur - act0;
    o->total = cur;

    /* what one step reads: all matrices and their scales, norms, one embedding row */
    uint64_t per_layer = (qkv_rows * dim + dim * q_dim + 3 * hid * dim) * (uint64_t)le +
                         (le == 1 ? (qkv_rows + dim + 2 * hid + dim) * 4 : 0) + 2 * dim * 4;
    uint64_t head = vocab * dim * (uint64_t)elem_bytes(c->tied ? dt->emb : dt->out) +
                    ((c->tied ? dt->emb : dt->out) == BORA_DT_F8_E4M3 ? vocab * 4 : 0);
    o->step_weight_bytes = per_layer * (uint64_t)c->n_layers + head + dim * 4 +
                           dim * (uint64_t)elem_bytes(dt->emb);
    return 0;
}

uint64_t plan_kv_step_bytes(const struct model_config *c, const struct plan_layout *l, int pos)
{
    uint64_t keys = (uint64_t)pos + 1;
    if (c->sliding_window > 0 && keys > (uint64_t)c->sliding_window)
        keys = (uint64_t)c->sliding_window;
    return keys * l->kv_bytes_per_key;
}

int plan_check_fit(const struct plan_layout *l, int max_ctx, uint64_t avail, struct bora_err *err)
{
    uint64_t need = l->total + PLAN_CUDA_RESERVE;
    if (need <= avail) {
        if (l->n_split < 0)
            return bora_errf(err, -EINVAL,
                             "decode attention over %d tokens: no split of the keys fits the %d KiB of shared "
                             "memory a block has for this model's query groups (a shorter context fits)",
                             max_ctx, ATTN_ITEM_SMEM_MAX / 1024);
        return 0;
    }
    return bora_errf(err, -ENOMEM,
                     "model needs %.2f GB on the GPU (weights %.2f GB, KV cache %.2f GB for %d tokens, "
                     "activations %.3f GB, CUDA reserve %.2f GB) but %.2f GB are available",
                     need / 1e9, l->weight_bytes / 1e9, l->kv_bytes / 1e9, max_ctx, l->act_bytes / 1e9,
                     PLAN_CUDA_RESERVE / 1e9, avail / 1e9);
}

/* ---- the prefill workspace ---- */

static size_t max3(size_t a, size_t b, size_t c)
{
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

void plan_prefill_layout(const struct model_config *c, enum bora_dtype linear, bool kv_fp8, int max_ctx, int chunk,
                         struct plan_prefill *o)
{
    const size_t ctx = max_ctx > 0 ? (size_t)max_ctx : 0;
    if (chunk > max_ctx)
        chunk = max_ctx;
    if (chunk < PLAN_PREFILL_CHUNK_MIN)
        chunk = PLAN_PREFILL_CHUNK_MIN;
    const size_t C = (size_t)chunk, dim = (size_t)c->dim, hid = (size_t)c->hidden_dim;
    const size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    const size_t ae = linear == BORA_DT_F8_E4M3 ? 1 : 2;
    memset(o, 0, sizeof *o);
    o->chunk = chunk;
    o->x = 0;
    o->act = o->x + align_up(C * dim * 4);
    o->scale = o->act + align_up(C * max3(dim, qd, hid) * ae);
    o->raw = o->scale + align_up(C * 4);
    o->q = o->raw + align_up(C * max3(qd + 2 * kvd, 2 * hid, dim) * 2);
    o->att = o->q + align_up(C * qd * 2);
    o->work = o->att + align_up(C * qd * 2);
    o->bad = o->work + align_up(PLAN_PF_ATTN_WORK);
    o->kv16 = o->bad + 256;
    o->kv16_bytes = kv_fp8 ? (uint64_t)kvd * ctx * 2 * 2 : 0;
    o->ws_bytes = o->kv16 + align_up(o->kv16_bytes);
    o->total = o->ws_bytes + PLAN_GEMM_WORKSPACE;
}

void plan_prefill_fit(const struct model_config *c, enum bora_dtype linear, bool kv_fp8, int max_ctx, uint64_t avail,
                      struct plan_prefill *o)
{
    for (int chunk = PLAN_PREFILL_CHUNK; chunk; chunk = plan_prefill_next(chunk)) {
        plan_prefill_layout(c, linear, kv_fp8, max_ctx, chunk, o);
        if (o->total <= avail)
            return;
    }
    memset(o, 0, sizeof *o);
}

/* ---- presets ---- */
struct preset {
    const char *name;
    struct model_config cfg;
};

#define PRESET(nm, L, D, H, KV, HD, FF, V, ARCH)                                               \
    { nm, { .arch = ARCH, .layout = MODEL_LAYOUT_HF, .dim = D, .n_layers = L, .n_heads = H,    \
            .n_kv_heads = KV, .head_dim = HD, .hidden_dim = FF, .vocab_size = V,               \
            .max_pos = 32768, .norm_eps = 1e-5f, .rope = ROPE_DEFAULT, .rope_theta = 1e6,      \
            .bos_id = 1, .eos_id = 2 } }

static const struct preset presets[] = {
    PRESET("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32768, MODEL_ARCH_MISTRAL),
    PRESET("ministral-8b", 36, 4096, 32, 8, 128, 12288, 131072, MODEL_ARCH_MISTRAL),
    PRESET("mistral-small-24b", 40, 5120, 32, 8, 128, 32768, 131072, MODEL_ARCH_MISTRAL),
    PRESET("mistral-medium-3.5", 88, 12288, 96, 8, 128, 28672, 131072, MODEL_ARCH_MINISTRAL3),
};

const struct model_config *plan_preset_find(const char *name)
{
    for (size_t i = 0; i < BORA_ARRAY_LEN(presets); i++)
        if (!strcmp(presets[i].name, name))
            return &presets[i].cfg;
    return NULL;
}

const char *plan_preset_name(int i)
{
    return i >= 0 && (size_t)i < BORA_ARRAY_LEN(presets) ? presets[i].name : NULL;
}

/* Memory as the driver reports it; read bandwidth: H200 measured (device.md), others the
 * datasheet figure × 0.95. */
static const struct plan_gpu gpus[] = {
    { "h200", 143771ull << 20, 4600.0, 90 },
    { "h100", 81559ull << 20, 3350.0 * 0.95, 90 },
    { "l40s", 46068ull << 20, 864.0 * 0.95, 89 },
    { "rtx4090", 24564ull << 20, 1008.0 * 0.95, 89 },
};

const struct plan_gpu *plan_gpu_find(const char *name)
{
    for (size_t i = 0; i < BORA_ARRAY_LEN(gpus); i++)
        if (!strcmp(gpus[i].name, name))
            return &gpus[i];
    return NULL;
}

const char *plan_gpu_name(int i)
{
    return i >= 0 && (size_t)i < BORA_ARRAY_LEN(gpus) ? gpus[i].name : NULL;
}
