/* gen_engine.c — the generator vtable over model + engine + sampler: prepare counts and checks
 * the prompt, start prefills it, each step samples one id from the last logits (running the
 * engine for the previous token first, so the last token of a request costs no forward). */
#include "dataplane/gen_engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/bwp.h"
#include "model/sampler.h"

struct gen_engine {
    struct model *m;
    struct engine *e;
    struct sampler s;
    float *logits;                 /* (vocab) logits of the last position run */
    int32_t *ids;                  /* (max_ctx) prompt scratch */
    int pos;                       /* tokens in the KV cache */
    int32_t pending;               /* sampled id not yet run through the engine, or -1 */
    bool ignore_eos;
};

/* Token ids of rq into ge->ids; -EINVAL / -E2BIG with a message. */
static int prompt_ids(struct gen_engine *ge, const struct gen_request *rq, int *n, struct bora_err *err)
{
    if (rq->prompt_kind != 2)
        return bora_errf(err, -EINVAL, "this server has no tokenizer yet: send token ids (prompt_kind 2)");
    uint32_t count = rq->prompt_len / 4;
    if (count >= (uint32_t)ge->e->max_ctx)
        return bora_errf(err, -E2BIG, "prompt of %u tokens does not fit the context of %d tokens",
                         count, ge->e->max_ctx);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t id = bwp_rd32(rq->prompt + 4 * i);
        if (id >= (uint32_t)ge->m->cfg.vocab_size)
            return bora_errf(err, -EINVAL, "token id %u is outside the vocabulary (%d)", id,
                             ge->m->cfg.vocab_size);
        ge->ids[i] = (int32_t)id;
    }
    *n = (int)count;
    return 0;
}

static int ge_prepare(struct generator *g, const struct gen_request *rq, uint32_t *prompt_tokens,
                      struct bora_err *err)
{
    struct gen_engine *ge = g->impl;
    int n = 0;
    int rc = prompt_ids(ge, rq, &n, err);
    if (rc < 0)
        return rc;
    *prompt_tokens = (uint32_t)n;
    return 0;
}

static int ge_start(struct generator *g, const struct gen_request *rq, uint32_t *prompt_tokens,
                    uint32_t *cached_tokens, struct bora_err *err)
{
    struct gen_engine *ge = g->impl;
    int n = 0;
    int rc = prompt_ids(ge, rq, &n, err);
    if (rc < 0)
        return rc;
    struct sampler_params sp = { .temperature = rq->temperature, .top_p = rq->top_p,
                                 .top_k = rq->top_k, .seed = rq->seed };
    if (sampler_reset(&ge->s, &sp) < 0)
        return bora_errf(err, -EINVAL, "sampling parameters refused by the sampler");
    engine_reset(ge->e);
    rc = engine_forward(ge->e, ge->ids, n, 0, ge->logits);
    if (rc < 0)
        return bora_errf(err, -EIO, "engine prefill of %d tokens failed: %s", n, strerror(-rc));
    ge->pos = n;
    ge->pending = -1;
    ge->ignore_eos = rq->ignore_eos;
    *prompt_tokens = (uint32_t)n;
    *cached_tokens = 0;
    return 0;
}

static int ge_step(struct generator *g, struct gen_token *out, struct bora_err *err)
{
    struct gen_engine *ge = g->impl;
    if (ge->pending >= 0) {
        if (ge->pos >= ge->e->max_ctx)
            return GEN_EOS;                    /* context full: the sequence stops here */
        int rc = engine_forward(ge->e, &ge->pending, 1, ge->pos, ge->logits);
        if (rc < 0)
            return bora_errf(err, -EIO, "engine decode at position %d failed: %s", ge->pos, strerror(-rc));
        ge->pos++;
    }
    int32_t id = sampler_sample(&ge->s, ge->logits);
    if (id == ge->m->cfg.eos_id && !ge->ignore_eos)
        return GEN_EOS;
    ge->pending = id;
    out->id = (uint32_t)id;
    out->text_len = 0;                         /* text deltas come with the tokenizer */
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
    if (ge->e)
        engine_close(ge->e);
    if (ge->m)
        model_close(ge->m);
    free(ge->logits);
    free(ge->ids);
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
    struct engine_opts eo = { .backend = o->backend, .max_ctx = o->max_ctx, .n_threads = o->n_threads };
    if ((rc = engine_open(&ge->e, ge->m, &eo, err)) < 0)
        goto err;
    struct sampler_params sp = { .temperature = 0, .top_p = 1 };
    if ((rc = sampler_init(&ge->s, ge->m->cfg.vocab_size, &sp)) < 0) {
        bora_errf(err, rc, "sampler: cannot allocate %d candidates", ge->m->cfg.vocab_size);
        goto err;
    }
    ge->logits = malloc(sizeof *ge->logits * (size_t)ge->m->cfg.vocab_size);
    ge->ids = malloc(sizeof *ge->ids * (size_t)ge->e->max_ctx);
    if (!ge->logits || !ge->ids) {
        rc = bora_errf(err, -ENOMEM, "out of memory for logits and prompt ids");
        goto err;
    }
    g->vocab_size = (uint32_t)ge->m->cfg.vocab_size;
    g->max_ctx = (uint32_t)ge->e->max_ctx;
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
