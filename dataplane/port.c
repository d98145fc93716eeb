/* port.c — what every transport does with frames, whatever carries them (kernel UDP/TCP,
 * DPDK): admission (allow list), validation (bwp.c), PING, CANCEL, RESEND, the GENERATE path
 * into the decoder's intake ring (DUPLICATE, RATE_LIMITED, SHUTTING_DOWN, BUSY), and sending
 * what the decoder answers, logging UDP frames for RESEND. One transport thread per port. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/server_int.h"

int dp_port_init(struct dp_port *p, struct dp_shared *sh, const struct dp_port_ops *ops, void *owner,
                 int efd, struct bora_err *err)
{
    memset(p, 0, sizeof *p);
    p->ops = ops;
    p->owner = owner;
    p->sh = sh;
    p->efd = efd;
    if (sh->n_readers >= DP_POLICY_READERS)
        return bora_errf(err, -EINVAL, "dataplane: more than %d transports", DP_POLICY_READERS);
    p->hz = &sh->hazard[sh->n_readers++];
    uint32_t n_req = sh->queue_depth + 1 + DP_POOL_SLACK;
    int rc;
    if ((rc = pool_init(&p->reqs, n_req, sizeof(struct dp_req) + sh->lim.max_prompt_bytes, err)) < 0 ||
        (rc = ring_init(&p->resp, DP_RESP_RING_SLOTS, sizeof(struct dp_event), RING_SP_ENQ, err)) < 0 ||
        (rc = dp_flows_init(&p->flows, n_req + DP_RETAIN_FLOWS, err)) < 0 ||
        (rc = dp_rate_init(&p->rate, 0, err)) < 0 ||
        (rc = dp_rate_init(&p->resend_rate, DP_RESEND_PER_S, err)) < 0)
        goto err;
    p->replay_slots = malloc(sizeof *p->replay_slots * DP_REPLAY_SLOTS);
    if (!p->replay_slots) {
        rc = bora_errf(err, -ENOMEM, "dataplane: cannot allocate the AUTH replay window");
        goto err;
    }
    bwp_replay_init(&p->replay, p->replay_slots, DP_REPLAY_SLOTS);
    return 0;
err:
    dp_port_fini(p);
    return rc;
}

void dp_port_fini(struct dp_port *p)
{
    pool_fini(&p->reqs);
    ring_fini(&p->resp);
    dp_flows_fini(&p->flows);
    dp_rate_fini(&p->rate);
    dp_rate_fini(&p->resend_rate);
    free(p->replay_slots);
    p->replay_slots = NULL;
}

static enum metrics_transport peer_transport(const struct dp_port *p, const struct dp_peer *peer)
{
    return peer->conn ? METRICS_TCP : p->mt;
}

static void send_frame(struct dp_port *p, const struct dp_peer *peer, const uint8_t *frame, size_t len)
{
    dp_stat_inc(&p->stats.tx_frames);
    metrics_dp_count(p->ms, peer_transport(p, peer), METRICS_TX, 1);
    p->ops->send(p, peer, frame, len);
}

void dp_port_error(struct dp_port *p, const struct dp_peer *peer, uint64_t rid, uint16_t code,
                   const char *msg, bool no_trailer, bool request)
{
    size_t n = bwp_build_error(p->tx, sizeof p->tx, rid, 0, code, msg, no_trailer ? NULL : p->sh->key,
                               dp_now_us());
    dp_stat_inc(&p->stats.errors);
    if (request)
        metrics_request_error(p->ms, code);
    else
        metrics_frame_error(p->ms, code);
    send_frame(p, peer, p->tx, n);
    /* rule 14: an ERROR that replaces ACCEPTED is the request's last frame, retained for RESEND
     * like a DONE (UDP). Not an unauthenticated one (AUTH: anyone could fill the table with
     * forged ids) nor FORBIDDEN (that address's RESEND is refused too); never over a request
     * in flight under the same id (rule 8: the error concerns that frame only). */
    if (request && n && !peer->conn && !no_trailer && code != BWP_E_FORBIDDEN && code != BWP_E_AUTH) {
        struct dp_flow *fl = dp_flows_find(&p->flows, peer, rid);
        if (fl && fl->state == DP_FLOW_LIVE)
            return;
        if (fl)
            dp_flows_release(&p->flows, fl);              /* a finished request's id reused */
        if ((fl = dp_flows_add(&p->flows, peer, rid))) {
            dp_flows_log(&p->flows, fl, p->tx, (uint32_t)n);
            dp_flows_done(&p->flows, fl, dp_mono_us(), true);
        }
    }
}

uint64_t dp_peer_key(const struct dp_peer *peer)
{
    if (peer->conn)
        return 1ull << 63 | (uint64_t)peer->conn << 32 | peer->conn_gen;
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *b = (const uint8_t *)&peer->a;
    for (socklen_t i = 0; i < peer->alen; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h & ~(1ull << 63);
}

/* Reserves a place (BUSY when queue_depth are waiting behind the one decoding or about to). */
static bool reserve_waiting(struct dp_shared *sh)
{
    uint32_t n = atomic_load_explicit(&sh->n_held, memory_order_relaxed);
    do {
        if (n >= sh->queue_depth + 1)
            return false;
        /* acq_rel pairs with the decoder's release fetch_sub */
    } while (!atomic_compare_exchange_weak_explicit(&sh->n_held, &n, n + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

static bool draining(const struct dp_shared *sh)
{
    /* acquire pairs with the io thread's release store when SIGTERM is seen, and with
     * dp_server_pause's release store (console drain) */
    return atomic_load_explicit(&sh->draining, memory_order_acquire) != 0 ||
           atomic_load_explicit(&sh->paused, memory_order_acquire) != 0;
}

/* The client's address and transport, for the console's `requests`. */
static void fill_client(struct dp_port *p, struct dp_req *r, const struct dp_peer *peer,
                        const struct sockaddr *from)
{
    r->transport = (uint8_t)peer_transport(p, peer);
    r->conn = peer->conn;
    size_t n = !from ? 0 : from->sa_family == AF_INET ? sizeof r->from.in
             : from->sa_family == AF_INET6 ? sizeof r->from.in6 : 0;
    r->from.sa.sa_family = AF_UNSPEC;
    if (n)
        memcpy(&r->from, from, n);
}

static void fill_request(struct dp_port *p, const struct dp_policy *pol, struct dp_req *r,
                         struct dp_flow *fl, const struct bwp_generate *g)
{
    r->rid = fl->rid;
    r->port = p;
    r->flow = dp_flows_index(&p->flows, fl);
    memcpy(r->prompt, g->prompt, g->prompt_len);
    r->rq = (struct gen_request){ .prompt_kind = g->prompt_kind, .prompt = r->prompt,
                                  .prompt_len = g->prompt_len, .max_tokens = g->max_tokens,
                                  .ignore_eos = g->options & BWP_OPT_IGNORE_EOS,
                                  .temperature = g->temperature, .top_p = g->top_p,
                                  .top_k = g->top_k, .seed = g->seed };
    r->want_ids = g->options & BWP_OPT_IDS;
    r->t_accept_us = dp_mono_us();
    r->deadline_us = r->t_accept_us + 1000ull * (g->deadline_ms ? g->deadline_ms : pol->request_timeout_ms);
    atomic_store_explicit(&r->cancel, DP_RUN, memory_order_relaxed);   /* published by the enqueue */
}

static void on_generate(struct dp_port *p, const struct dp_policy *pol, const struct dp_peer *peer,
                        const struct sockaddr *from, const struct bwp_client_frame *f)
{
    uint64_t rid = f->h.request_id;
    struct dp_flow *fl = dp_flows_find(&p->flows, peer, rid);
    if (fl && fl->state == DP_FLOW_LIVE) {
        dp_port_error(p, peer, rid, BWP_E_DUPLICATE, "request_id already in flight", false,
                      false);   /* rule 8: concerns this frame, not a request */
        return;
    }
    p->rate.per_s = pol->rate_limit;                      /* live: the table is always there */
    if (!dp_rate_take(&p->rate, from, dp_mono_us())) {
        dp_port_error(p, peer, rid, BWP_E_RATE_LIMITED, "over this client's request rate; retry later", false, true);
        return;
    }
    if (draining(p->sh)) {
        dp_port_error(p, peer, rid, BWP_E_SHUTTING_DOWN, "server is draining; not accepted", false, true);
        return;
    }
    if (!reserve_waiting(p->sh)) {
        dp_port_error(p, peer, rid, BWP_E_BUSY, "request queue full; retry later", false, true);
        return;
    }
    if (fl)
        dp_flows_release(&p->flows, fl);                  /* a finished request's id reused */
    struct dp_req *r = pool_get(&p->reqs);
    fl = r ? dp_flows_add(&p->flows, peer, rid) : NULL;
    if (!fl) {
        if (r)
            pool_put(&p->reqs, r);
        atomic_fetch_sub_explicit(&p->sh->n_held, 1, memory_order_release);
        dp_port_error(p, peer, rid, BWP_E_BUSY, "no request slot free; retry later", false, true);
        return;
    }
    fill_request(p, pol, r, fl, &f->gen);
    fill_client(p, r, peer, from);
    fl->req = r;
    atomic_store_explicit(&p->n_live, dp_port_live(p) + 1, memory_order_relaxed);
    dp_stat_inc(&p->stats.accepted);
    if (p->ops->request_started)
        p->ops->request_started(p, peer);
    /* cannot fail: the ring holds more than queue_depth + 1, and n_held bounds what is in it */
    ring_enqueue_burst(&p->sh->intake, &r, 1);
    dp_decoder_kick(p->sh);
}

static void on_resend(struct dp_port *p, const struct dp_peer *peer, const struct sockaddr *from,
                      const struct bwp_client_frame *f)
{
    if (peer->conn)
        return;                                           /* rule 14: UDP only */
    struct dp_flow *fl = dp_flows_find(&p->flows, peer, f->h.request_id);
    if (!fl)
        return;
    for (uint32_t seq = f->from_seq; seq < fl->n_frames; seq++) {
        uint32_t len;
        const uint8_t *fr = dp_flows_frame(&p->flows, fl, seq, &len);
        if (fr) {
            if (!dp_rate_take(&p->resend_rate, from, dp_mono_us()))
                return;                       /* over the address's rate: lost, as a datagram can be */
            dp_stat_inc(&p->stats.resent);
            send_frame(p, peer, fr, len);
        }
    }
}

static void port_frame(struct dp_port *p, const struct dp_policy *pol, const struct dp_peer *peer,
                       const struct sockaddr *from, const uint8_t *buf, size_t n);

void dp_port_frame(struct dp_port *p, const struct dp_peer *peer, const struct sockaddr *from,
                   const uint8_t *buf, size_t n)
{
    const struct dp_policy *pol = dp_policy_enter(p->hz, p->sh);
    port_frame(p, pol, peer, from, buf, n);
    dp_policy_exit(p->hz);
}

static void port_frame(struct dp_port *p, const struct dp_policy *pol, const struct dp_peer *peer,
                       const struct sockaddr *from, const uint8_t *buf, size_t n)
{
    struct dp_shared *sh = p->sh;
    struct bwp_client_frame f;
    dp_stat_inc(&p->stats.rx_frames);
    metrics_dp_count(p->ms, peer_transport(p, peer), METRICS_RX, 1);
    if (pol->n_allow && !dp_allow_match(pol->allow, pol->n_allow, from)) {
        dp_stat_inc(&p->stats.rejected);
        /* answered only when the frame names a request (rule 2 still applies) */
        if (n >= BWP_HDR_SIZE && !memcmp(buf, "BWP1", 4) && bwp_rd64(buf + 16) != 0)
            dp_port_error(p, peer, bwp_rd64(buf + 16), BWP_E_FORBIDDEN, "client address not allowed", false,
                          dp_frame_is_generate(buf, n));
        /* TCP: the address was allowed when it connected (tcp_accept refuses the others). It
         * reads nothing more; what it has running finishes, then the connection closes */
        if (peer->conn && p->ops->end_peer)
            p->ops->end_peer(p, peer);
        return;
    }
    struct bwp_verdict v = bwp_parse_client(buf, n, peer->conn ? BWP_TCP : BWP_UDP, &pol->lim,
                                            sh->key ? &p->replay : NULL, dp_peer_key(peer),
                                            sh->key ? dp_now_us() : 0, &f);
    if (v.code) {
        dp_stat_inc(&p->stats.rejected);
        metrics_dp_count(p->ms, peer_transport(p, peer), METRICS_MALFORMED, 1);
        char why[128];   /* bwp_verdict_msg: a static message and a limit */
        if (v.answer)
            dp_port_error(p, peer, v.request_id, v.code, bwp_verdict_msg(&v, why, sizeof why), v.no_trailer,
                          dp_frame_is_generate(buf, n));
        if (v.close && peer->conn && p->ops->close_peer)
            p->ops->close_peer(p, peer);
        return;
    }
    switch (f.h.type) {
    case BWP_GENERATE:
        on_generate(p, pol, peer, from, &f);
        break;
    case BWP_CANCEL: {
        struct dp_flow *fl = dp_flows_find(&p->flows, peer, f.h.request_id);
        if (fl && fl->state == DP_FLOW_LIVE)   /* release pairs with the decoder's acquire */
            atomic_store_explicit(&fl->req->cancel, DP_CANCELLED, memory_order_release);
        break;
    }
    case BWP_PING: {
        /* relaxed: a flag for the client, no data hangs on it (partner: decoder's swap) */
        uint32_t flags = (atomic_load_explicit(&sh->gen_loaded, memory_order_relaxed) ? BWP_PONG_LOADED : 0) | (draining(sh) ? BWP_PONG_DRAINING : 0);
        size_t m = bwp_build_pong(p->tx, sizeof p->tx, f.h.request_id,
                                  dp_waiting(sh), flags,
                                  sh->key, dp_now_us());
        send_frame(p, peer, p->tx, m);
        break;
    }
    case BWP_RESEND:
        on_resend(p, peer, from, &f);
        break;
    }
}

static void on_event(struct dp_port *p, struct dp_event *ev, uint64_t now)
{
    struct dp_req *r = ev->req;
    struct dp_flow *fl = &p->flows.f[r->flow];
    if (ev->len) {
        send_frame(p, &fl->peer, ev->frame, ev->len);
        if (!fl->peer.conn)
            dp_flows_log(&p->flows, fl, ev->frame, ev->len);
    }
    if (ev->flags & DP_EV_LAST) {
        dp_stat_inc(&p->stats.done);
        if (p->ops->request_ended)
            p->ops->request_ended(p, &fl->peer);
        dp_flows_done(&p->flows, fl, now, fl->peer.conn == 0);
        pool_put(&p->reqs, r);
        atomic_store_explicit(&p->n_live, dp_port_live(p) - 1, memory_order_relaxed);
    }
}

bool dp_port_responses(struct dp_port *p)
{
    bool any = false;
    unsigned n;
    uint64_t now = dp_mono_us();
    while ((n = ring_dequeue_burst(&p->resp, p->evs, DP_PORT_EV_BURST)) > 0) {
        any = true;
        for (unsigned i = 0; i < n; i++)
            on_event(p, &p->evs[i], now);
    }
    return any;
}

void dp_port_cancel_conn(struct dp_port *p, uint32_t conn, uint32_t conn_gen)
{
    for (uint32_t i = 0; i < p->flows.n; i++) {
        struct dp_flow *fl = &p->flows.f[i];
        if (fl->state == DP_FLOW_LIVE && fl->peer.conn == conn && fl->peer.conn_gen == conn_gen)
            atomic_store_explicit(&fl->req->cancel, DP_SILENT, memory_order_release);
    }
}

void dp_port_tick(struct dp_port *p, uint64_t now_us)
{
    dp_flows_expire(&p->flows, now_us);
}
