/* control.c — the console's handles on a running server (console threads only; they may block):
 * the live policy (immutable struct dp_policy swapped RCU-style, readers hold hazards), and
 * requests the decoder answers between steps (list, cancel by id, swap the generator). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "dataplane/server_int.h"

#define CTL_POLL_NS 100000         /* console thread: check for the decoder's answer every 100 µs */

static void ctl_nap(void)
{
    struct timespec ts = { 0, CTL_POLL_NS };
    nanosleep(&ts, NULL);
}

/* ---- live policy ---- */

static int policy_check(const struct dp_shared *sh, const struct dp_config *c, struct bora_err *err)
{
    if (c->max_tokens < 1 || c->max_tokens > 65535)
        return bora_errf(err, -EINVAL, "limits.max_tokens: %u is not 1..65535", c->max_tokens);
    if (c->max_prompt_bytes < 1)
        return bora_errf(err, -EINVAL, "limits.max_prompt_bytes: must be at least 1");
    if (c->max_prompt_bytes > sh->lim.max_prompt_bytes)
        return bora_errf(err, -EINVAL, "limits.max_prompt_bytes: %u is over %u, the value borad started with (buffers "
                         "were sized at start; restart borad to raise it)", c->max_prompt_bytes, sh->lim.max_prompt_bytes);
    if (c->n_allow > DP_ALLOW_MAX)
        return bora_errf(err, -EINVAL, "dataplane.allow: %u entries (at most %d)", c->n_allow, DP_ALLOW_MAX);
    return 0;
}

static bool policy_in_use(struct dp_shared *sh, const struct dp_policy *pol)
{
    for (uint32_t i = 0; i < sh->n_readers; i++)
        /* seq_cst pairs with dp_policy_enter's store and re-load */
        if (atomic_load_explicit(&sh->hazard[i].p, memory_order_seq_cst) == pol)
            return true;
    return false;
}

/* Publishes a copy of *next; returns once no reader uses the old one (its slot is then spare). */
static void policy_publish(struct dp_shared *sh, const struct dp_policy *next)
{
    const struct dp_policy *old = atomic_load_explicit(&sh->policy, memory_order_relaxed);
    struct dp_policy *spare = old == &sh->pol_slot[0] ? &sh->pol_slot[1] : &sh->pol_slot[0];
    *spare = *next;
    /* seq_cst (a release) pairs with dp_policy_enter's acquire/seq_cst loads */
    atomic_store_explicit(&sh->policy, spare, memory_order_seq_cst);
    /* release: the sweep that sees the new generation reads the new policy (partner: partial_tick) */
    atomic_fetch_add_explicit(&sh->pol_gen, 1, memory_order_release);
    while (policy_in_use(sh, old))     /* a reader holds it for one frame at most */
        ctl_nap();
}

int dp_server_set_policy(struct dp_server *s, const struct dp_config *cfg, struct bora_err *err)
{
    struct dp_shared *sh = dp_server_shared(s);
    int rc = policy_check(sh, cfg, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&sh->pol_lock);
    struct dp_policy next;
    /* the key and vocabulary stay those of the current policy */
    dp_policy_fill(&next, cfg, &atomic_load_explicit(&sh->policy, memory_order_relaxed)->lim);
    policy_publish(sh, &next);
    pthread_mutex_unlock(&sh->pol_lock);
    return 0;
}

/* A new vocabulary and context for kind-2 prompt checks (after a generator swap). */
static void policy_set_vocab(struct dp_shared *sh, uint32_t vocab_size, uint32_t max_ctx)
{
    pthread_mutex_lock(&sh->pol_lock);
    struct dp_policy next = *atomic_load_explicit(&sh->policy, memory_order_relaxed);
    if (next.lim.vocab_size != vocab_size || next.lim.max_ctx != max_ctx) {
        next.lim.vocab_size = vocab_size;
        next.lim.max_ctx = max_ctx;
        policy_publish(sh, &next);
    }
    pthread_mutex_unlock(&sh->pol_lock);
}

/* ---- requests to the decoder ---- */

static bool ctl_answered(struct dp_ctl *c, uint32_t seq)
{
    /* acquire pairs with the decoder's release store after answering */
    return atomic_load_explicit(&c->done_seq, memory_order_acquire) == seq;
}

/* Posts the request whose arguments are in sh->ctl (ctl_lock held) and waits DP_CTL_WAIT_MS
 * at most for the answer. */
static int ctl_call(struct dp_shared *sh, const char *what, struct bora_err *err)
{
    struct dp_ctl *c = &sh->ctl;
    uint32_t seq = atomic_load_explicit(&c->req_seq, memory_order_relaxed) + 1;
    /* seq_cst: a release of the arguments for the decoder's acquire, and ordered before our
     * load of closed (partner: the decoder's seq_cst store of closed when it exits) */
    atomic_store_explicit(&c->req_seq, seq, memory_order_seq_cst);
    dp_decoder_kick(sh);
    uint64_t until = dp_mono_us() + 1000ull * DP_CTL_WAIT_MS;
    for (;;) {
        if (ctl_answered(c, seq))
            return c->rc;
        if (atomic_load_explicit(&c->closed, memory_order_seq_cst))
            return ctl_answered(c, seq) ? c->rc
                 : bora_errf(err, -ESHUTDOWN, "%s: the decoder has stopped", what);
        if (dp_mono_us() > until)
            return bora_errf(err, -ETIMEDOUT, "%s: the decoder did not answer within %d ms", what,
                             DP_CTL_WAIT_MS);
        ctl_nap();
    }
}

/* Takes the request slot: ctl_lock, and the previous request (one that timed out) answered. */
static int ctl_begin(struct dp_shared *sh, const char *what, struct bora_err *err)
{
    pthread_mutex_lock(&sh->ctl_lock);
    uint32_t last = atomic_load_explicit(&sh->ctl.req_seq, memory_order_relaxed);
    uint64_t until = dp_mono_us() + 1000ull * DP_CTL_WAIT_MS;
    while (!ctl_answered(&sh->ctl, last)) {
        bool closed = atomic_load_explicit(&sh->ctl.closed, memory_order_seq_cst);
        if (closed || dp_mono_us() > until) {
            pthread_mutex_unlock(&sh->ctl_lock);
            return closed ? bora_errf(err, -ESHUTDOWN, "%s: the decoder has stopped", what)
                          : bora_errf(err, -EBUSY, "%s: the decoder is still busy with an earlier request", what);
        }
        ctl_nap();
    }
    return 0;
}

int dp_server_requests(struct dp_server *s, struct dp_req_info *out, size_t cap, uint32_t *total,
                       struct bora_err *err)
{
    struct dp_shared *sh = dp_server_shared(s);
    int rc = ctl_begin(sh, "requests", err);
    if (rc < 0)
        return rc;
    sh->ctl.op = DP_CTL_LIST;
    rc = ctl_call(sh, "requests", err);
    if (rc == 0) {
        *total = sh->ctl.total;
        size_t n = sh->ctl.total < DP_LIST_MAX ? sh->ctl.total : DP_LIST_MAX;
        memcpy(out, sh->ctl.list, sizeof *out * (n < cap ? n : cap));
    }
    pthread_mutex_unlock(&sh->ctl_lock);
    return rc;
}

int dp_server_cancel(struct dp_server *s, uint64_t rid, uint32_t *n, struct bora_err *err)
{
    struct dp_shared *sh = dp_server_shared(s);
    int rc = ctl_begin(sh, "cancel", err);
    if (rc < 0)
        return rc;
    sh->ctl.op = DP_CTL_CANCEL;
    sh->ctl.rid = rid;
    rc = ctl_call(sh, "cancel", err);
    if (rc == 0)
        *n = sh->ctl.total;
    pthread_mutex_unlock(&sh->ctl_lock);
    return rc;
}

static bool swap_done(struct dp_ctl *c, uint32_t seq)
{
    /* acquire pairs with the decoder's release store after swapping */
    return atomic_load_explicit(&c->swap_done, memory_order_acquire) == seq;
}

int dp_server_swap_generator(struct dp_server *s, struct generator *g, struct bora_err *err)
{
    struct dp_shared *sh = dp_server_shared(s);
    struct dp_ctl *c = &sh->ctl;
    pthread_mutex_lock(&sh->swap_lock);
    c->swap_gen = g;
    uint32_t seq = atomic_load_explicit(&c->swap_seq, memory_order_relaxed) + 1;
    /* seq_cst: a release of swap_gen for the decoder's acquire, ordered before our load of
     * closed (partner: the decoder's seq_cst store of closed) */
    atomic_store_explicit(&c->swap_seq, seq, memory_order_seq_cst);
    dp_decoder_kick(sh);
    int rc = 0;
    /* no time-out: once posted, the decoder may swap at any moment (after the running request) */
    while (!swap_done(c, seq)) {
        if (atomic_load_explicit(&c->closed, memory_order_seq_cst) && !swap_done(c, seq)) {
            rc = bora_errf(err, -ESHUTDOWN, "reload: the decoder has stopped");
            break;
        }
        ctl_nap();
    }
    /* under swap_lock: once it is released, another console thread's swap may be rewriting
     * *sh->gen on the decoder (lock order swap_lock, then pol_lock) */
    if (rc == 0)
        policy_set_vocab(sh, sh->gen->vocab_size, sh->gen->max_ctx);
    pthread_mutex_unlock(&sh->swap_lock);
    return rc;
}
