/* decoder.c — the decoder thread: takes requests from the intake ring, counts their prompt
 * tokens and answers ACCEPTED (with the queue position), keeps them in a FIFO, and decodes one
 * at a time through the generator, pushing TOKEN / DONE / ERROR frames to the response ring.
 * Between steps it checks cancel flags, deadlines and the drain state of every request it
 * holds, so a queued request ends as soon as it is cancelled or expires. Also between steps it
 * answers the console's requests (list, cancel by id, swap the generator once idle). */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "dataplane/server_int.h"

/* a TOKEN frame with one id and the longest text a step returns, signed, fits an event's slot */
_Static_assert(DP_FRAME_SLOT >= BWP_HDR_SIZE + 4 + 4 + GEN_TEXT_MAX + BWP_TRAILER_SIZE,
               "a TOKEN frame fits DP_FRAME_SLOT");

#define DEC_INTAKE_BURST 32

struct decoder {
    struct dp_shared *sh;
    struct dp_req **fifo;          /* (queue_depth + 1: with none decoding, the next too) waiting requests, oldest first */
    uint32_t fifo_n;
    struct dp_req *cur;            /* decoding now, or NULL */
    struct dp_event ev;            /* scratch event being built */
    struct metrics_shard *ms;      /* the decoder's metrics shard (NULL = none) */
    uint32_t ctl_done;             /* last console request answered (sh->ctl.done_seq) */
    uint32_t swap_done;            /* last generator swap done (sh->ctl.swap_done) */
    struct dp_req *starting;       /* the request whose prefill runs (its stop callback's subject) */
};

static void set_cur(struct decoder *d, struct dp_req *r)
{
    d->cur = r;
    /* relaxed: a figure for the console's status, nothing hangs on it */
    atomic_store_explicit(&d->sh->n_running, r ? 1u : 0u, memory_order_relaxed);
}

uint64_t dp_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t dp_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void dp_decoder_kick(struct dp_shared *sh)
{
    /* Dekker with the decoder's park: our ring enqueue (release) then this fence, against its
     * store of dec_sleeping then fence then ring check. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&sh->dec_sleeping, memory_order_relaxed)) {
        uint64_t one = 1;
        ssize_t rc = write(sh->dec_efd, &one, sizeof one);
        (void)rc;
    }
}

/* ---- response events ---- */

static void io_kick(struct dp_port *p)
{
    /* Dekker with the transport's sleep: resp enqueue, fence, load sleeping */
    atomic_thread_fence(memory_order_seq_cst);
    if (p->efd >= 0 && atomic_load_explicit(&p->sleeping, memory_order_relaxed)) {
        uint64_t one = 1;
        ssize_t rc = write(p->efd, &one, sizeof one);
        (void)rc;
    }
}

static void push_event(struct decoder *d, struct dp_req *r, uint32_t len, uint32_t flags)
{
    d->ev.req = r;
    d->ev.len = len;
    d->ev.flags = flags;
    unsigned spins = 0;
    while (ring_enqueue_burst(&r->port->resp, &d->ev, 1) == 0) {   /* transport behind: wait */
        io_kick(r->port);
        if (++spins > 64)
            sched_yield();
    }
}

static bool silent(const struct dp_req *r)
{
    /* acquire pairs with the io thread's release store of cancel */
    return atomic_load_explicit(&r->cancel, memory_order_acquire) == DP_SILENT;
}

static void send_accepted(struct decoder *d, struct dp_req *r, uint32_t position)
{
    size_t n = 0;
    if (!silent(r))
        n = bwp_build_accepted(d->ev.frame, DP_FRAME_SLOT, r->rid, r->seq++, position,
                               r->prompt_tokens, d->sh->key, dp_now_us());
    push_event(d, r, (uint32_t)n, 0);
}

static void send_token(struct decoder *d, struct dp_req *r, const struct gen_token *t)
{
    size_t n = 0;
    if (!silent(r))
        n = bwp_build_token(d->ev.frame, DP_FRAME_SLOT, r->rid, r->seq++, &t->id,
                            r->want_ids ? 1 : 0, t->text, t->text_len, d->sh->key, dp_now_us());
    push_event(d, r, (uint32_t)n, 0);
}

/* An accepted request has ended (its last frame is queued): its place is free. */
static void held_release(struct decoder *d)
{
    /* release pairs with the transports' CAS (acq_rel) reserving a place */
    atomic_fetch_sub_explicit(&d->sh->n_held, 1, memory_order_release);
}

static void finish_done(struct decoder *d, struct dp_req *r, uint8_t finish)
{
    uint64_t now = dp_mono_us();
    struct bwp_done done = {
        .finish = finish,
        .prompt_tokens = r->prompt_tokens,
        .cached_tokens = r->cached_tokens,
        .completion_tokens = r->completion_tokens,
        .queue_us = (uint32_t)((r->t_start_us ? r->t_start_us : now) - r->t_accept_us),
        .ttft_us = r->t_first_us ? (uint32_t)(r->t_first_us - r->t_accept_us) : 0,
        .total_us = (uint32_t)(now - r->t_accept_us),
    };
    if (bora_log_on(BORA_LOG_DEBUG))
        bora_log(BORA_LOG_DEBUG, "request %llu: done (%s): prompt %u tokens (%u cached), completion %u, queue %u us, "
                 "ttft %u us, total %u us", (unsigned long long)r->rid, bwp_finish_name(finish), done.prompt_tokens,
                 done.cached_tokens, done.completion_tokens, done.queue_us, done.ttft_us, done.total_us);
    struct metrics_done md = { finish, done.prompt_tokens, done.cached_tokens, done.completion_tokens,
                               done.queue_us, done.ttft_us, done.total_us,
                               r->t_start_us && d->sh->gen->prefix_cache };
    metrics_request_done(d->ms, &md);
    size_t n = 0;
    if (!silent(r))
        n = bwp_build_done(d->ev.frame, DP_FRAME_SLOT, r->rid, r->seq++, &done, d->sh->key,
                           dp_now_us());
    struct dp_port *port = r->port;     /* r is the transport's once its last event is out */
    push_event(d, r, (uint32_t)n, DP_EV_LAST);
    held_release(d);
    io_kick(port);
}

static void finish_error(struct decoder *d, struct dp_req *r, uint16_t code, const char *msg)
{
    size_t n = 0;
    metrics_request_error(d->ms, code);
    bora_log(code == BWP_E_INTERNAL ? BORA_LOG_WARN : BORA_LOG_DEBUG, "request %llu: %s: %s",
             (unsigned long long)r->rid, bwp_code_name(code), msg);
    if (!silent(r))
        n = bwp_build_error(d->ev.frame, DP_FRAME_SLOT, r->rid, r->seq++, code, msg, d->sh->key,
                            dp_now_us());
    struct dp_port *port = r->port;     /* r is the transport's once its last event is out */
    push_event(d, r, (uint32_t)n, DP_EV_LAST);
    held_release(d);
    io_kick(port);
}

/* A request leaves the waiting list (it starts, or ends while waiting): the queue's figure. Its
 * place in n_held is released only when it ends (finish_done, finish_error). */
static void queue_out(struct decoder *d)
{
    metrics_count(d->ms, METRICS_QUEUE_OUT, 1);
}

/* Why a held request must end now (0 = keep going), as a DONE finish code + 1. */
static int end_reason(const struct decoder *d, const struct dp_req *r, uint64_t now)
{
    if (atomic_load_explicit(&r->cancel, memory_order_acquire) != DP_RUN)
        return BWP_FINISH_CANCELLED + 1;
    if (now >= r->deadline_us)
        return BWP_FINISH_DEADLINE + 1;
    /* acquire pairs with the io thread's release store when the grace period is over */
    if (atomic_load_explicit(&d->sh->shutdown_now, memory_order_acquire))
        return BWP_FINISH_SHUTDOWN + 1;
    return 0;
}

/* ---- intake: new requests get their token count and ACCEPTED ---- */

static uint16_t prepare_error_code(int rc)
{
    return rc == -EINVAL ? BWP_E_BAD_PARAMS : rc == -E2BIG ? BWP_E_TOO_LARGE : BWP_E_INTERNAL;
}

static void admit(struct decoder *d, struct dp_req *r)
{
    struct bora_err err = { "" };
    r->seq = 0;
    r->prompt_tokens = r->cached_tokens = r->completion_tokens = 0;
    r->t_start_us = r->t_first_us = 0;
    uint32_t n_tok = 0;
    int rc = d->sh->gen->ops->prepare(d->sh->gen, &r->rq, &n_tok, &err);
    if (rc < 0) {
        queue_out(d);
        finish_error(d, r, prepare_error_code(rc), err.msg);
        return;
    }
    r->prompt_tokens = n_tok;
    /* 0 = decoding now; the first waiting request is 1 (rule 11); one in its prefill is decoding */
    uint32_t position = d->cur || d->starting ? d->fifo_n + 1 : d->fifo_n;
    send_accepted(d, r, position);
    d->fifo[d->fifo_n++] = r;
}

static bool intake(struct decoder *d)
{
    struct dp_req *batch[DEC_INTAKE_BURST];
    unsigned n = ring_dequeue_burst(&d->sh->intake, batch, DEC_INTAKE_BURST);
    metrics_count(d->ms, METRICS_QUEUE_IN, n);
    for (unsigned i = 0; i < n; i++)
        admit(d, batch[i]);
    return n > 0;
}

/* Ends every waiting request that was cancelled, expired, or is cut off by the drain. */
static void sweep(struct decoder *d, uint64_t now)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < d->fifo_n; i++) {
        struct dp_req *r = d->fifo[i];
        int why = end_reason(d, r, now);
        if (why) {
            queue_out(d);
            finish_done(d, r, (uint8_t)(why - 1));
        } else {
            d->fifo[keep++] = r;
        }
    }
    d->fifo_n = keep;
}

/* ---- decoding ---- */

static void ctl_answer(struct decoder *d);

/* Called by the generator between prefill blocks: new requests are admitted (ACCEPTED with their
 * place, counted as waiting, listed, cancellable), waiting ones that were cancelled or expired
 * end, the console's list and cancel are answered (a long prefill is listed as running and can
 * be cancelled by id), and the prompt stops as soon as its request is cancelled, expires or is
 * cut off by the drain, not at its end. Before, a long prefill held every new request in the
 * intake ring: no ACCEPTED, a queue of 0 on the console, and no cancel by id until it ended. */
static int prefill_should_stop(void *ctx)
{
    struct decoder *d = ctx;
    const uint64_t now = dp_mono_us();
    intake(d);
    sweep(d, now);
    ctl_answer(d);
    return d->starting && end_reason(d, d->starting, now) != 0;
}

static void start_next(struct decoder *d)
{
    struct dp_req *r = d->fifo[0];
    memmove(d->fifo, d->fifo + 1, sizeof *d->fifo * --d->fifo_n);
    queue_out(d);
    r->t_start_us = dp_mono_us();
    struct bora_err err = { "" };
    uint32_t n_tok = r->prompt_tokens, cached = 0;
    r->rq.stop = prefill_should_stop;
    r->rq.stop_ctx = d;
    d->starting = r;
    /* running from its prefill on: the console's status counts it (relaxed, as in set_cur) */
    atomic_store_explicit(&d->sh->n_running, 1u, memory_order_relaxed);
    int rc = d->sh->gen->ops->start(d->sh->gen, &r->rq, &n_tok, &cached, &err);
    d->starting = NULL;
    if (rc < 0) {
        atomic_store_explicit(&d->sh->n_running, 0u, memory_order_relaxed);
        d->sh->gen->ops->finish(d->sh->gen);
        const int why = end_reason(d, r, dp_mono_us());
        if (rc == -ECANCELED && why) {   /* stopped mid-prefill: it ends as if it had been waiting */
            r->prompt_tokens = n_tok;
            r->cached_tokens = cached;   /* what its start took from the cache (and left there) */
            finish_done(d, r, (uint8_t)(why - 1));
            return;
        }
        finish_error(d, r, BWP_E_INTERNAL, err.msg[0] ? err.msg : "generator failed to start");
        return;
    }
    r->prompt_tokens = n_tok;
    r->cached_tokens = cached;
    set_cur(d, r);
}

static void end_current(struct decoder *d, uint8_t finish)
{
    d->sh->gen->ops->finish(d->sh->gen);
    finish_done(d, d->cur, finish);
    set_cur(d, NULL);
}

static void step_current(struct decoder *d, uint64_t now)
{
    struct dp_req *r = d->cur;
    int why = end_reason(d, r, now);
    if (why) {
        end_current(d, (uint8_t)(why - 1));
        return;
    }
    struct gen_token tok;
    struct bora_err err = { "" };
    int rc = d->sh->gen->ops->step(d->sh->gen, &tok, &err);
    if (rc < 0) {
        d->sh->gen->ops->finish(d->sh->gen);
        if (d->sh->gen->prefix_cache) {   /* its start looked the prefix up, as a DONE would count */
            metrics_count(d->ms, METRICS_PREFIX_LOOKUPS, 1);
            metrics_count(d->ms, METRICS_PREFIX_HITS, r->cached_tokens > 0);
        }
        finish_error(d, r, BWP_E_INTERNAL, err.msg[0] ? err.msg : "generator step failed");
        set_cur(d, NULL);
        return;
    }
    if (rc == GEN_EOS || rc == GEN_LENGTH) {   /* a full context is a length limit, not a stop */
        end_current(d, rc == GEN_EOS ? BWP_FINISH_EOS : BWP_FINISH_MAX_TOKENS);
        return;
    }
    if (!r->t_first_us)
        r->t_first_us = dp_mono_us();
    r->completion_tokens++;
    metrics_tokens_decoded(d->ms, 1, now * 1000u);   /* now: dp_mono_us of this step */
    send_token(d, r, &tok);
    io_kick(r->port);
    if (r->completion_tokens >= r->rq.max_tokens)
        end_current(d, BWP_FINISH_MAX_TOKENS);
}

/* ---- console requests (struct dp_ctl) ---- */

static bool ctl_pending(const struct decoder *d)
{
    /* relaxed: only a hint to stay awake; ctl_serve loads them again with acquire */
    return atomic_load_explicit(&d->sh->ctl.req_seq, memory_order_relaxed) != d->ctl_done ||
           atomic_load_explicit(&d->sh->ctl.swap_seq, memory_order_relaxed) != d->swap_done;
}

static void ctl_info(struct dp_req_info *o, const struct dp_req *r, bool running, uint64_t now)
{
    memset(o, 0, sizeof *o);
    o->rid = r->rid;
    o->transport = r->transport;
    o->running = running;
    o->conn = r->conn;
    memcpy(&o->from, &r->from, sizeof r->from);
    o->age_us = now > r->t_accept_us ? now - r->t_accept_us : 0;
    o->prompt_tokens = r->prompt_tokens;
    o->completion_tokens = r->completion_tokens;
}

/* The request being decoded, or the one whose prefill runs (the console is also answered
 * between prefill blocks). */
static struct dp_req *running(const struct decoder *d)
{
    return d->cur ? d->cur : d->starting;
}

static void ctl_list(struct decoder *d, struct dp_ctl *c)
{
    uint64_t now = dp_mono_us();
    uint32_t n = 0;
    struct dp_req *run = running(d);
    if (run)
        ctl_info(&c->list[n++], run, true, now);
    for (uint32_t i = 0; i < d->fifo_n && n < DP_LIST_MAX; i++)
        ctl_info(&c->list[n++], d->fifo[i], false, now);
    c->total = (run ? 1 : 0) + d->fifo_n;
}

static uint32_t ctl_cancel_one(struct dp_req *r, uint64_t rid)
{
    uint32_t run = DP_RUN;
    /* relaxed: read back by this thread (end_reason); the io thread only stores CANCELLED or
     * SILENT (release), so the CAS fails only when a client's cancel already landed */
    return r->rid == rid && atomic_compare_exchange_strong_explicit(&r->cancel, &run, DP_CANCELLED,
                                                                    memory_order_relaxed,
                                                                    memory_order_relaxed);
}

static void ctl_cancel(struct decoder *d, struct dp_ctl *c)
{
    uint32_t n = running(d) ? ctl_cancel_one(running(d), c->rid) : 0;
    for (uint32_t i = 0; i < d->fifo_n; i++)
        n += ctl_cancel_one(d->fifo[i], c->rid);
    c->total = n;
}

/* Swaps in the console's new generator once no request is decoding (queued ones wait). */
static void ctl_swap(struct decoder *d, struct dp_ctl *c)
{
    /* acquire pairs with the console's store of swap_seq after setting swap_gen */
    uint32_t seq = atomic_load_explicit(&c->swap_seq, memory_order_acquire);
    if (seq == d->swap_done || running(d))
        return;
    struct generator old = *d->sh->gen;
    *d->sh->gen = *c->swap_gen;
    *c->swap_gen = old;
    /* relaxed: PONG's flag (see port.c) */
    atomic_store_explicit(&d->sh->gen_loaded, d->sh->gen->loaded, memory_order_relaxed);
    d->swap_done = seq;
    /* release pairs with the console's acquire: the old generator is in *swap_gen */
    atomic_store_explicit(&c->swap_done, seq, memory_order_release);
}

/* Answers a pending LIST or CANCEL (not a swap: that waits for a request boundary). */
static void ctl_answer(struct decoder *d)
{
    struct dp_ctl *c = &d->sh->ctl;
    /* acquire pairs with the console's store of req_seq after writing the arguments */
    uint32_t seq = atomic_load_explicit(&c->req_seq, memory_order_acquire);
    if (seq == d->ctl_done)
        return;
    c->rc = 0;
    if (c->op == DP_CTL_LIST)
        ctl_list(d, c);
    else if (c->op == DP_CTL_CANCEL)
        ctl_cancel(d, c);
    else
        c->rc = -EINVAL;
    d->ctl_done = seq;
    /* release pairs with the console's acquire: the answer is written */
    atomic_store_explicit(&c->done_seq, seq, memory_order_release);
}

/* Answers the console's pending requests: LIST and CANCEL at once, a swap once no request is
 * decoding. Cancelled requests end in the sweep/step that follows. */
static void ctl_serve(struct decoder *d)
{
    ctl_swap(d, &d->sh->ctl);
    ctl_answer(d);
}

/* Polls the intake ring for DP_DECODER_SPIN_US, then parks until it has something or the
 * timeout passes. */
static void park(struct decoder *d, int timeout_ms)
{
    struct dp_shared *sh = d->sh;
    uint64_t until = dp_mono_us() + DP_DECODER_SPIN_US;
    while (dp_mono_us() < until)
        for (int i = 0; i < 64; i++)
            if (ring_count(&sh->intake) || ctl_pending(d))
                return;
    atomic_store_explicit(&sh->dec_sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);   /* pairs with dp_decoder_kick's fence */
    if (ring_count(&sh->intake) == 0 && !ctl_pending(d) &&
        !atomic_load_explicit(&sh->quit, memory_order_acquire)) {
        struct pollfd pfd = { .fd = sh->dec_efd, .events = POLLIN };
        if (poll(&pfd, 1, timeout_ms) > 0) {
            uint64_t v;
            ssize_t rc = read(sh->dec_efd, &v, sizeof v);
            (void)rc;
        }
    }
    atomic_store_explicit(&sh->dec_sleeping, 0, memory_order_relaxed);
}

void *dp_decoder_main(void *arg)
{
    struct dp_shared *sh = arg;
    struct decoder d = { .sh = sh, .fifo = sh->fifo, .ms = metrics_shard_claim(sh->metrics, "decoder") };
    /* acquire pairs with the io thread's release store of quit */
    while (!atomic_load_explicit(&sh->quit, memory_order_acquire)) {
        bool got = intake(&d);
        ctl_serve(&d);
        uint64_t now = dp_mono_us();
        if (d.fifo_n)
            sweep(&d, now);
        if (d.cur)
            step_current(&d, now);
        else if (d.fifo_n)
            start_next(&d);
        else if (!got)
            park(&d, DP_DECODER_IDLE_MS);
    }
    /* seq_cst pairs with the console's load after posting: no request is answered from now on */
    atomic_store_explicit(&sh->ctl.closed, 1, memory_order_seq_cst);
    /* quit comes only once every request has ended; anything left is ended for shutdown */
    while (intake(&d))
        ;
    if (d.cur)
        end_current(&d, BWP_FINISH_SHUTDOWN);
    for (uint32_t i = 0; i < d.fifo_n; i++) {
        queue_out(&d);
        finish_done(&d, d.fifo[i], BWP_FINISH_SHUTDOWN);
    }
    return NULL;
}
