/* gen_engine.c — the generator vtable over model + engine + sampler: prepare counts and checks
 * the prompt, start prefills it and picks the first id, each step runs the previous id and
 * picks the next (engine_forward_next: on the GPU's own sampler when the backend has one, else
 * on the host from the logits), so the last token of a request costs no forward.
 *
 * Prefix cache: the engine holds one sequence. kv_ids remembers which token ids its KV cache
 * holds at positions [0, n_kv): the last prompt and every completion token run through the
 * engine. A new prompt that starts with the same ids (a customer-service bot's system prompt
 * and conversation so far) is prefilled only from where it differs: positions before that keep
 * their keys and values. The prompt's last token always runs, for its logits. A prompt that
 * shares only its first token (BOS) counts as no reuse. */
#include "dataplane/gen_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dataplane/bwp.h"
#include "kernels/model_load_cuda.h"
#ifdef BORA_CUDA
#include "kernels/engine_cuda.h"
#include "kernels/prefill_run.h"
#endif
#include "model/sampler.h"
#include "model/tokenizer.h"

_Static_assert(GEN_TEXT_MAX >= DETOK_MAX_DELTA + 9, "a push and the last token's flush fit a token's text");

#define GE_MAX_MESSAGES 1024       /* chat messages in one prompt */

struct gen_engine {
    struct model *m;
    struct engine *e;
    struct sampler s;
    float *logits;                 /* (vocab) host sampling scratch */
    int32_t next;                  /* the id picked after the last position run */
    int32_t *ids;                  /* (max_ctx) the prompt being started or decoded */
    int32_t *prep_ids;             /* (max_ctx) prepare's scratch: prepare runs between prefill blocks
                                    * too (the decoder admits requests then), so never into ids */
    int pos;                       /* tokens in the KV cache */
    int32_t *kv_ids;               /* (max_ctx) ids whose keys and values the cache holds */
    int n_kv;                      /* ... at positions [0, n_kv) */
    bool prefix_cache;
    int32_t pending;               /* sampled id not yet run through the engine, or -1 */
    bool ignore_eos;
    int32_t eos_id;
    uint32_t produced, max_tokens; /* tokens of this request so far, its limit */
    struct tokenizer *tok;         /* NULL when the checkpoint has none (ids only) */
    struct detok detok;
    struct chat_message *msgs;     /* (GE_MAX_MESSAGES) scratch for kind-1 prompts */
    char load_note[256];           /* how the weights reached the engine, the prefill chunk (banner) */
    /* prep_ids[0, prep_n) hold the tokens of the last prompt prepare counted, whose keyed hash is
     * prep_key: start takes them (the two buffers swap) instead of tokenizing the same prompt again */
    uint8_t hash_key[crypto_shorthash_KEYBYTES];
    uint64_t prep_key;             /* SipHash of its bytes under hash_key (random per open) */
    uint32_t prep_len;
    uint8_t prep_kind;
    int prep_n;                    /* -1: prep_ids hold no prepared prompt */
};

static uint64_t prompt_key(const struct gen_engine *ge, const struct gen_request *rq)
{
    uint8_t out[crypto_shorthash_BYTES];
    crypto_shorthash(out, rq->prompt, rq->prompt_len, ge->hash_key);
    uint64_t k;
    memcpy(&k, out, sizeof k);
    return k;
}

/* Kind-1 messages → ids (dst) with the model's chat template. */
static int encode_chat(struct gen_engine *ge, const struct gen_request *rq, int32_t *dst, size_t *n,
                       struct bora_err *err)
{
    const uint8_t *p = rq->prompt, *end = p + rq->prompt_len, *text;
    uint8_t role;
    uint32_t len;
    size_t k = 0;
    while (bwp_msg_next(&p, end, &role, &text, &len) > 0) {
        if (k == GE_MAX_MESSAGES)
            return bora_errf(err, -EINVAL, "more than %d chat messages", GE_MAX_MESSAGES);
        ge->msgs[k++] = (struct chat_message){ .role = role, .text = (const char *)text, .len = len };
    }
    return chat_encode_messages(ge->tok, ge->msgs, k, dst, (size_t)ge->e->max_ctx, n, err);
}

/* Text prompts: BOS + text (kind 0) or the chat template (kind 1). */
static int encode_text(struct gen_engine *ge, const struct gen_request *rq, int32_t *dst, int *n,
                       struct bora_err *err)
{
    if (!ge->tok)
        return bora_errf(err, -EINVAL, "the model has no tokenizer: send token ids (prompt_kind 2)");
    size_t count = 0;
    int rc = rq->prompt_kind == 0
        ? tokenizer_encode(ge->tok, (const char *)rq->prompt, rq->prompt_len, true, dst,
                           (size_t)ge->e->max_ctx, &count, err)
        : encode_chat(ge, rq, dst, &count, err);
    if (rc == -ENOSPC || (rc == 0 && count >= (size_t)ge->e->max_ctx))
        return bora_errf(err, -E2BIG, "prompt of %zu tokens does not fit the context of %d tokens",
                         count, ge->e->max_ctx);
    if (rc == -EINVAL || rc == -E2BIG)
        return rc;                      /* message from the tokenizer names the problem */
    if (rc < 0)
        return bora_errf(err, -EIO, "tokenizer failed: %s", strerror(-rc));
    *n = (int)count;
    return 0;
}

/* Token ids of rq into dst (max_ctx ids); -EINVAL / -E2BIG with a message. */
static int prompt_ids(struct gen_engine *ge, const struct gen_request *rq, int32_t *dst, int *n,
                      struct bora_err *err)
{
    if (rq->prompt_kind != 2)
        return encode_text(ge, rq, dst, n, err);
    uint32_t count = rq->prompt_len / 4;
    if (count >= (uint32_t)ge->e->max_ctx)
        return bora_errf(err, -E2BIG, "prompt of %u tokens does not fit the context of %d tokens",
                         count, ge->e->max_ctx);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t id = bwp_rd32(rq->prompt + 4 * i);
        if (id >= (uint32_t)ge->m->cfg.vocab_size)
            return bora_errf(err, -EINVAL, "token id %u is outside the vocabulary (%d)", id,
                             ge->m->cfg.vocab_size);
        dst[i] = (int32_t)id;
    }
    *n = (int)count;
    return 0;
}

static int ge_prepare(struct generator *g, const struct gen_request *rq, uint32_t *prompt_tokens,
                      struct bora_err *err)
{
    struct gen_engine *ge = g->impl;
    int n = 0;
    ge->prep_n = -1;
    int rc = prompt_ids(ge, rq, ge->prep_ids, &n, err);
    if (rc < 0)
        return rc;
    ge->prep_n = n;
    ge->prep_kind = rq->prompt_kind;
    ge->prep_len = rq->prompt_len;
    ge->prep_key = prompt_key(ge, rq);
    *prompt_tokens = (uint32_t)n;
    return 0;
}

static int ge_start(struct generator *g, const struct gen_request *rq, uint32_t *prompt_tokens,
                    uint32_t *cached_tokens, struct bora_err *err)
{
    struct gen_engine *ge = g->impl;
    int n = 0, rc;
    /* the request prepare counted last (an idle server: the one just admitted) is in prep_ids
     * already: the buffers swap, and prepare's next call writes into what ids was */
    if (ge->prep_n >= 0 && rq->prompt_kind == ge->prep_kind && rq->prompt_len == ge->prep_len &&
        prompt_key(ge, rq) == ge->prep_key) {
        n = ge->prep_n;
        int32_t *t = ge->ids;
        ge->ids = ge->prep_ids;
        ge->prep_ids = t;
    } else if ((rc = prompt_ids(ge, rq, ge->ids, &n, err)) < 0) {
        return rc;
    }
    ge->prep_n = -1;
    struct sampler_params sp = { .temperature = rq->temperature, .top_p = rq->top_p,
                                 .top_k = rq->top_k, .seed = rq->seed };
    if (sampler_reset(&ge->s, &sp) < 0)
        return bora_errf(err, -EINVAL, "sampling parameters refused by the sampler");
    int keep = 0;   /* positions whose keys and values stay */
    if (ge->prefix_cache) {
        const int lim = n - 1 < ge->n_kv ? n - 1 : ge->n_kv;
        while (keep < lim && ge->ids[keep] == ge->kv_ids[keep])
            keep++;
        if (keep == 1)   /* only the first token (BOS, which every text and chat prompt starts with):
                          * nothing worth saving, and not a hit of the cache for the console */
            keep = 0;
    }
    if (keep == 0)
        engine_reset(ge->e);
    ge->n_kv = keep;
    engine_set_stop(ge->e, rq->stop, rq->stop_ctx);
    /* known before the prefill: a request stopped during it still reports (and the console counts)
     * the prompt and the positions it took from the cache, which stay there */
    *prompt_tokens = (uint32_t)n;
    *cached_tokens = (uint32_t)keep;
    rc = engine_forward_next(ge->e, ge->ids + keep, n - keep, keep, &ge->s, ge->logits, &ge->next);
    engine_set_stop(ge->e, NULL, NULL);
    if (rc == -ECANCELED)
        return bora_errf(err, -ECANCELED, "prefill of %d tokens stopped before its end", n - keep);
    if (rc < 0)
        return bora_errf(err, -EIO, "engine prefill of %d tokens at position %d failed: %s", n - keep, keep,
                         engine_error_text(ge->e, rc));
    memcpy(ge->kv_ids + keep, ge->ids + keep, sizeof *ge->ids * (size_t)(n - keep));
    ge->n_kv = n;
    ge->pos = n;
    ge->pending = -1;
    ge->ignore_eos = rq->ignore_eos;
    ge->produced = 0;
    ge->max_tokens = rq->max_tokens;
    if (ge->tok)
        detok_init(&ge->detok, ge->tok);
    return 0;
}

/* Runs the pending id through the engine at the next position: ge->next is then the id after it. */
static int ge_advance(struct gen_engine *ge, struct bora_err *err)
{
    ge->n_kv = ge->pos;   /* until the position is written */
    int rc = engine_forward_next(ge->e, &ge->pending, 1, ge->pos, &ge->s, ge->logits, &ge->next);
    if (rc < 0)
        return bora_errf(err, -EIO, "engine decode at position %d failed: %s", ge->pos, engine_error_text(ge->e, rc));
    ge->kv_ids[ge->pos++] = ge->pending;
    ge->n_kv = ge->pos;
    ge->pending = -1;
    return 0;
}

static int ge_step(struct generator *g, struct gen_token *out, struct bora_err *err)
{
    struct gen_engine *ge = g->impl;
    int rc;
    if (ge->pending >= 0) {
        if (ge->pos >= ge->e->max_ctx)
            return GEN_LENGTH;                 /* context full: the sequence stops here */
        if ((rc = ge_advance(ge, err)) < 0)
            return rc;
    }
    const int32_t id = ge->next;
    if (id == ge->eos_id && !ge->ignore_eos)
        return GEN_EOS;
    ge->pending = id;
    out->id = (uint32_t)id;
    out->text_len = 0;
    if (ge->tok) {
        size_t n = 0, m = 0;
        /* an id past the tokenizer's vocabulary (a checkpoint's padding rows) has no text; a push
         * never exceeds DETOK_MAX_DELTA (tokenizer_tables_build refuses a vocabulary that could) */
        rc = detok_push(&ge->detok, id, out->text, GEN_TEXT_MAX, &n);
        if (rc == -EINVAL)
            n = 0;
        else if (rc < 0)
            return bora_errf(err, -EIO, "token %d's text (%zu bytes) does not fit a token's %d", id, n, GEN_TEXT_MAX);
        /* The request's last token carries what the detokenizer still holds (U+FFFD for each byte
         * of an incomplete UTF-8 sequence), or no delta would (DONE has no text). Whether this
         * token is the last is known now for max_tokens; for EOS and a full context only after
         * the next step, so a token that leaves bytes held (a multi-byte character split over
         * byte tokens: rare) runs that step first, the engine work the next call would do anyway,
         * and goes out one step later. */
        bool last = ++ge->produced == ge->max_tokens;
        if (!last && ge->detok.n_pend) {
            if (ge->pos >= ge->e->max_ctx) {
                last = true;                   /* the next step ends with GEN_LENGTH */
            } else {
                if ((rc = ge_advance(ge, err)) < 0)
                    return rc;
                last = ge->next == ge->eos_id && !ge->ignore_eos;
            }
        }
        if (last && (rc = detok_flush(&ge->detok, out->text + n, GEN_TEXT_MAX - n, &m)) < 0)
            return bora_errf(err, -EIO, "the text held after token %d (%zu bytes) does not fit a token's %zu", id, m,
                             GEN_TEXT_MAX - n);
        out->text_len = (uint16_t)(n + m);
    }
    return GEN_TOKEN;
}

static void ge_finish(struct generator *g)
{
    struct gen_engine *ge = g->impl;
    ge->pending = -1;
}

static void ge_close(struct generator *g)
{
    struct gen_engine *ge = g->impl;
    if (!ge)
        return;
    sampler_fini(&ge->s);
    tokenizer_close(ge->tok);
    free(ge->msgs);
    if (ge->e)
        engine_close(ge->e);
    if (ge->m)
        model_close(ge->m);
    free(ge->logits);
    free(ge->ids);
    free(ge->prep_ids);
    free(ge->kv_ids);
    free(ge);
    g->impl = NULL;
}

static const struct generator_ops gen_engine_ops = {
    .name = "engine", .prepare = ge_prepare, .start = ge_start, .step = ge_step,
    .finish = ge_finish, .close = ge_close,
};

int gen_engine_open(struct generator *g, const struct gen_engine_opts *o, struct bora_err *err)
{
    memset(g, 0, sizeof *g);
    struct gen_engine *ge = calloc(1, sizeof *ge);
    if (!ge)
        return bora_errf(err, -ENOMEM, "out of memory");
    g->impl = ge;
    g->ops = &gen_engine_ops;
    struct model_open_opts mo = { .precision = o->precision };
    int rc = model_open(&ge->m, o->model_dir, &mo, err);
    if (rc < 0)
        goto err;
    struct engine_opts eo = { .backend = o->backend, .max_ctx = o->max_ctx, .n_threads = o->n_threads, .kv = o->kv };
    /* On a GPU the weights stream from the shards straight into the device arena (io_uring,
     * O_DIRECT when cold) while the engine is prepared: the cold-start path `bora coldstart`
     * measures. Without a usable GPU, backend auto goes on to engine_open, which says why. */
    rc = -ENODEV;
    if (o->backend != ENGINE_BACKEND_CPU) {
        struct bora_err lerr = { "" };
        struct model_load_cuda_stats st;
        rc = model_load_cuda(&ge->e, ge->m, &eo, NULL, &st, &lerr);
        if (rc == 0 && st.streamed)
            snprintf(ge->load_note, sizeof ge->load_note,
                     "weights streamed into GPU memory: %.2f GB in %.2f s (io_uring, %s, %d reader%s)", st.bytes / 1e9,
                     st.seconds, st.direct ? "O_DIRECT" : "page cache", st.parts, st.parts == 1 ? "" : "s");
        else if (rc == 0)
            snprintf(ge->load_note, sizeof ge->load_note, "weights converted on the host, then copied to the GPU");
        if (rc < 0 && (rc != -ENODEV || o->backend == ENGINE_BACKEND_CUDA)) {
            if (err)
                *err = lerr;
            goto err;
        }
    }
    if (rc < 0 && (rc = engine_open(&ge->e, ge->m, &eo, err)) < 0)
        goto err;
#ifdef BORA_CUDA
    if (o->prefill_chunk > 0 && o->prefill_chunk != PREFILL_CHUNK_DEFAULT && !strcmp(engine_backend_name(ge->e), "cuda") &&
        (rc = engine_cuda_set_prefill_chunk(ge->e, o->prefill_chunk, err)) < 0)
        goto err;
    if (!strcmp(engine_backend_name(ge->e), "cuda")) {   /* the banner says what prompts run as */
        const struct prefill_run *pf = engine_cuda_prefill(ge->e);
        const size_t k = strlen(ge->load_note);
        char chunk[96];
        if (pf)
            snprintf(chunk, sizeof chunk, "prompts prefilled in chunks of %d tokens", prefill_run_chunk_size(pf));
        else
            snprintf(chunk, sizeof chunk, "prompts run token by token (no room for a prefill workspace)");
        snprintf(ge->load_note + k, sizeof ge->load_note - k, "%s%s", k ? "; " : "", chunk);
    }
#endif
    struct sampler_params sp = { .temperature = 0, .top_p = 1 };
    if ((rc = sampler_init(&ge->s, ge->m->cfg.vocab_size, &sp)) < 0) {
        bora_errf(err, rc, "sampler: cannot allocate %d candidates", ge->m->cfg.vocab_size);
        goto err;
    }
    ge->logits = malloc(sizeof *ge->logits * (size_t)ge->m->cfg.vocab_size);
    ge->ids = malloc(sizeof *ge->ids * (size_t)ge->e->max_ctx);
    ge->prep_ids = malloc(sizeof *ge->prep_ids * (size_t)ge->e->max_ctx);
    ge->kv_ids = malloc(sizeof *ge->kv_ids * (size_t)ge->e->max_ctx);
    if (!ge->logits || !ge->ids || !ge->prep_ids || !ge->kv_ids) {
        rc = bora_errf(err, -ENOMEM, "out of memory for logits and prompt ids");
        goto err;
    }
    ge->eos_id = ge->m->cfg.eos_id;
    if (ge->m->tokenizer_path[0]) {
        if ((rc = tokenizer_open_for(&ge->tok, ge->m->tokenizer_path, ge->m->cfg.vocab_size, err)) < 0)
            goto err;
        ge->eos_id = tokenizer_eos_id(ge->tok);
        ge->msgs = malloc(sizeof *ge->msgs * GE_MAX_MESSAGES);
        if (!ge->msgs) {
            rc = bora_errf(err, -ENOMEM, "out of memory");
            goto err;
        }
    }
    ge->prep_n = -1;
    if (sodium_init() < 0) {
        rc = bora_errf(err, -ENOSYS, "libsodium failed to initialise");
        goto err;
    }
    randombytes_buf(ge->hash_key, sizeof ge->hash_key);
    g->vocab_size = (uint32_t)ge->m->cfg.vocab_size;
    g->max_ctx = (uint32_t)ge->e->max_ctx;
    g->prefix_cache = ge->prefix_cache = o->prefix_cache;
    g->loaded = true;
    return 0;
err:
    ge_close(g);
    return rc;
}

const struct model *gen_engine_model(const struct generator *g)
{
    return g->impl ? ((const struct gen_engine *)g->impl)->m : NULL;
}

const char *gen_engine_backend(const struct generator *g)
{
    return g->impl ? engine_backend_name(((const struct gen_engine *)g->impl)->e) : "none";
}

const char *gen_engine_kv(const struct generator *g)
{
    return g->impl ? engine_kv_name(engine_kv(((const struct gen_engine *)g->impl)->e)) : "none";
}

const char *gen_engine_load_note(const struct generator *g)
{
    return g->impl ? ((const struct gen_engine *)g->impl)->load_note : "";
}

bool gen_engine_has_tokenizer(const struct generator *g)
{
    return g->impl && ((const struct gen_engine *)g->impl)->tok;
}

int gen_engine_memory(const struct generator *g, struct engine_mem *out)
{
    return g->impl ? engine_memory(((const struct gen_engine *)g->impl)->e, out) : -ENODEV;
}

const char *gen_engine_backend_why(const struct generator *g)
{
    return g->impl ? engine_backend_why(((const struct gen_engine *)g->impl)->e) : "";
}
