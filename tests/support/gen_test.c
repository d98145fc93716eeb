/* gen_test.c — the test-only generator of gen_test.h. */
#include "tests/support/gen_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dataplane/bwp.h"

struct gen_test {
    struct gen_request rq;
    uint32_t i;            /* tokens produced */
    long eos_after;        /* -1: never */
    long sleep_ms;
    bool fail_step, utf8;
};

static long knob(const struct gen_request *rq, const char *name)
{
    if (rq->prompt_kind != 0)
        return -1;
    char buf[512];
    size_t n = rq->prompt_len < sizeof buf - 1 ? rq->prompt_len : sizeof buf - 1;
    memcpy(buf, rq->prompt, n);
    buf[n] = 0;
    const char *p = strstr(buf, name);
    return p ? strtol(p + strlen(name), NULL, 10) : -1;
}

static bool has(const struct gen_request *rq, const char *word)
{
    char buf[512];
    size_t n = rq->prompt_len < sizeof buf - 1 ? rq->prompt_len : sizeof buf - 1;
    memcpy(buf, rq->prompt, n);
    buf[n] = 0;
    return rq->prompt_kind == 0 && strstr(buf, word) != NULL;
}

static uint32_t count_tokens(const struct gen_request *rq)
{
    if (rq->prompt_kind == 2)
        return rq->prompt_len / 4;
    if (rq->prompt_kind == 1) {
        const uint8_t *p = rq->prompt, *end = p + rq->prompt_len, *text;
        uint8_t role;
        uint32_t len, n = 1;
        while (bwp_msg_next(&p, end, &role, &text, &len) > 0)
            n += 2 + len;
        return n;
    }
    return rq->prompt_len + 1;
}

uint32_t gen_test_token_id(const struct gen_request *rq, uint32_t i)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t k = 0; k < rq->prompt_len; k++)
        h = (h ^ rq->prompt[k]) * 1099511628211ull;
    if (rq->temperature > 0)
        h ^= rq->seed * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t)(i + 1) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    uint32_t id = (uint32_t)(h % (GEN_TEST_VOCAB - 3)) + 3;   /* never EOS by chance */
    return id;
}

static int t_prepare(struct generator *g, const struct gen_request *rq, uint32_t *n, struct bora_err *err)
{
    (void)g;
    if (has(rq, "bad=prepare"))
        return bora_errf(err, -EINVAL, "gen_test: prompt refused by prepare");
    *n = count_tokens(rq);
    return 0;
}

static int t_start(struct generator *g, const struct gen_request *rq, uint32_t *n, uint32_t *cached,
                   struct bora_err *err)
{
    struct gen_test *t = g->impl;
    if (has(rq, "fail=start"))
        return bora_errf(err, -EIO, "gen_test: start failed on request");
    /* "prefill=MS": a prefill that takes MS ms, asking rq->stop every millisecond as the
     * engine does between blocks */
    for (long ms = knob(rq, "prefill="); ms > 0; ms--) {
        if (rq->stop && rq->stop(rq->stop_ctx))
            return bora_errf(err, -ECANCELED, "gen_test: prefill stopped");
        struct timespec ts = { 0, 1000000L };
        nanosleep(&ts, NULL);
    }
    t->rq = *rq;
    t->i = 0;
    t->eos_after = knob(rq, "eos=");
    t->sleep_ms = knob(rq, "sleep=");
    t->fail_step = has(rq, "fail=step");
    t->utf8 = has(rq, "utf8");
    *n = count_tokens(rq);
    *cached = 0;
    return 0;
}

static int t_step(struct generator *g, struct gen_token *out, struct bora_err *err)
{
    struct gen_test *t = g->impl;
    if (t->sleep_ms > 0) {
        struct timespec ts = { t->sleep_ms / 1000, (t->sleep_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    if (t->fail_step && t->i == 2)
        return bora_errf(err, -EIO, "gen_test: step failed");
    if (t->eos_after >= 0 && t->i == (uint32_t)t->eos_after && !t->rq.ignore_eos)
        return GEN_EOS;
    out->id = gen_test_token_id(&t->rq, t->i);
    if (t->utf8) {      /* "é" split over two tokens: the first carries no complete sequence */
        out->text_len = (t->i % 2 == 0) ? 0 : 2;
        memcpy(out->text, "\xc3\xa9", 2);
    } else {
        out->text_len = (uint16_t)snprintf(out->text, sizeof out->text, "w%u ", out->id);
    }
    t->i++;
    return GEN_TOKEN;
}

static void t_finish(struct generator *g) { (void)g; }
static void t_close(struct generator *g) { gen_test_close(g); }

static const struct generator_ops gen_test_ops = {
    .name = "gen_test", .prepare = t_prepare, .start = t_start, .step = t_step,
    .finish = t_finish, .close = t_close,
};

int gen_test_init(struct generator *g)
{
    memset(g, 0, sizeof *g);
    g->impl = calloc(1, sizeof(struct gen_test));
    if (!g->impl)
        return -ENOMEM;
    g->ops = &gen_test_ops;
    g->vocab_size = GEN_TEST_VOCAB;
    g->max_ctx = GEN_TEST_CTX;
    g->loaded = true;
    return 0;
}

void gen_test_close(struct generator *g)
{
    free(g->impl);
    g->impl = NULL;
}
