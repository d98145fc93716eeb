/* server.c — the io thread of the kernel-socket server: epoll over one UDP socket, one TCP
 * listener and its connections; validates frames (bwp.c), answers PING/errors itself, hands
 * GENERATEs to the decoder through the intake ring, and sends what the decoder puts on the
 * response ring (logging UDP frames for RESEND). Also setup, the drain, and teardown. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <sodium.h>

#include "dataplane/server_int.h"

#define TAG_EFD     0u
#define TAG_UDP     1u
#define TAG_LISTEN  2u
#define TAG_CONN0   3u
#define EV_BURST    64
#define TX_CAP      (BWP_HDR_SIZE + 4 + 256 + BWP_TRAILER_SIZE)

struct dp_conn {
    int fd;                        /* -1 when closed */
    uint32_t gen;                  /* bumped at each reuse of the slot */
    bool used;                     /* slot holds a connection (open, or closed with live requests) */
    bool rd_eof;                   /* client half-closed: no more reading */
    bool closing;                  /* close once the output is flushed */
    bool want_out;                 /* EPOLLOUT armed */
    bool dirty;                    /* on the flush list */
    uint32_t n_live;               /* requests in flight on this connection */
    uint64_t skip;                 /* bytes of an oversize frame still to discard */
    uint8_t *rbuf; size_t rlen;    /* (rcap) */
    uint8_t *wbuf; size_t woff, wlen;   /* (DP_TCP_WBUF_BYTES) */
};

struct dp_server {
    struct dp_shared sh;
    struct bwp_limits lim;
    struct bwp_key key;
    uint32_t request_timeout_ms, shutdown_grace_ms;
    struct pool reqs;
    struct dp_flows flows;
    struct bwp_replay replay;
    struct bwp_replay_slot *replay_slots;
    int ep, udp_fd, tcp_fd;
    int udp_port, tcp_port;
    struct dp_conn *conns;         /* (DP_TCP_MAX_CONNS) */
    size_t rcap;                   /* TCP read buffer bytes */
    uint32_t *dirty;               /* (DP_TCP_MAX_CONNS) connections with output to flush */
    uint32_t n_dirty;
    uint8_t *ubuf;                 /* (DP_UDP_BATCH, 65536) */
    struct mmsghdr msgs[DP_UDP_BATCH];
    struct iovec iov[DP_UDP_BATCH];
    struct sockaddr_storage uaddr[DP_UDP_BATCH];
    uint8_t tx[TX_CAP];
    struct dp_event evs[EV_BURST];
    _Atomic uint32_t stop;         /* set by dp_server_stop (any thread, signal handler) */
    _Atomic uint32_t paused;       /* console drain: store release (any thread), load acquire (io) */
    struct metrics_shard *ms;      /* io thread's metrics shard (NULL = none) */
    bool draining;
    uint64_t drain_start_us;
    uint32_t n_live;               /* requests in flight */
    struct dp_stats stats;
    pthread_t decoder;
};

/* ---- addresses ---- */

int dp_addr_parse(const char *s, struct sockaddr_storage *out, unsigned *len, struct bora_err *err)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return bora_errf(err, -EINVAL, "address '%s': expected HOST:PORT", s);
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && colon[-1] == ']') { s++; hl -= 2; }
    if (hl >= sizeof host)
        return bora_errf(err, -EINVAL, "address '%s': host too long", s);
    memcpy(host, s, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return bora_errf(err, -EINVAL, "address '%s': port '%s' is not 0..65535", s, colon + 1);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_flags = AI_NUMERICSERV }, *ai;
    char ps[8];
    snprintf(ps, sizeof ps, "%ld", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc)
        return bora_errf(err, -EINVAL, "address '%s': %s", s, gai_strerror(rc));
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    *len = (unsigned)ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static int bound_port(int fd)
{
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
        return 0;
    return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                         : ((struct sockaddr_in *)&a)->sin_port);
}

static int open_socket(const char *spec, int type, struct bora_err *err)
{
    struct sockaddr_storage a;
    unsigned alen;
    int rc = dp_addr_parse(spec, &a, &alen, err);
    if (rc < 0)
        return rc;
    int fd = socket(a.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return bora_errf(err, -errno, "%s socket for %s: %s", type == SOCK_DGRAM ? "UDP" : "TCP",
                         spec, strerror(errno));
    int one = 1, big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (type == SOCK_DGRAM) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    }
    if (bind(fd, (struct sockaddr *)&a, alen) < 0 || (type == SOCK_STREAM && listen(fd, 512) < 0)) {
        rc = -errno;
        close(fd);
        return bora_errf(err, rc, "%s %s: %s", type == SOCK_DGRAM ? "UDP bind" : "TCP listen", spec,
                         strerror(-rc));
    }
    return fd;
}

static int ep_add(int ep, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event e = { .events = events, .data.u64 = tag };
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

static int ep_mod(int ep, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event e = { .events = events, .data.u64 = tag };
    return epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
}

/* ---- open / close ---- */

static int check_config(const struct dp_config *c, struct bora_err *err)
{
    if ((!c->udp || !*c->udp) && (!c->tcp || !*c->tcp))
        return bora_errf(err, -EINVAL, "dataplane: neither udp nor tcp is configured");
    if (c->queue_depth < 1 || c->queue_depth > (1u << 20))
        return bora_errf(err, -EINVAL, "dataplane: queue_depth %u is not 1..1048576", c->queue_depth);
    if (c->max_tokens < 1 || c->max_tokens > 65535)
        return bora_errf(err, -EINVAL, "dataplane: max_tokens %u is not 1..65535", c->max_tokens);
    if (c->max_prompt_bytes < 1 || c->max_prompt_bytes > (64u << 20))
        return bora_errf(err, -EINVAL, "dataplane: max_prompt_bytes %u is not 1..64 MiB",
                         c->max_prompt_bytes);
    if (c->key && c->key->len > BWP_KEY_MAX)
        return bora_errf(err, -EINVAL, "dataplane: AUTH key longer than %d bytes", BWP_KEY_MAX);
    return 0;
}

int dp_server_open(struct dp_server **out, const struct dp_config *cfg, struct generator *gen,
                   struct bora_err *err)
{
    int rc = check_config(cfg, err);
    if (rc < 0)
        return rc;
    if (sodium_init() < 0)
        return bora_errf(err, -ENOSYS, "dataplane: libsodium failed to initialise");
    struct dp_server *s = calloc(1, sizeof *s);
    if (!s)
        return bora_errf(err, -ENOMEM, "dataplane: out of memory");
    s->ep = s->udp_fd = s->tcp_fd = s->sh.io_efd = s->sh.dec_efd = -1;
    if (cfg->key && cfg->key->len) {
        s->key = *cfg->key;
        s->sh.key = &s->key;
    }
    s->lim = (struct bwp_limits){ .max_prompt_bytes = cfg->max_prompt_bytes, .max_tokens = cfg->max_tokens,
                                  .vocab_size = gen->vocab_size, .key = s->sh.key };
    s->request_timeout_ms = cfg->request_timeout_ms;
    s->shutdown_grace_ms = cfg->shutdown_grace_ms;
    s->sh.queue_depth = cfg->queue_depth;
    s->sh.gen = gen;
    s->sh.metrics = cfg->metrics;
    uint32_t n_req = cfg->queue_depth + 1 + DP_POOL_SLACK;
    s->rcap = bwp_frame_max(&s->lim) + (64u << 10);
    if ((rc = pool_init(&s->reqs, n_req, sizeof(struct dp_req) + cfg->max_prompt_bytes, err)) < 0 ||
        (rc = ring_init(&s->sh.intake, n_req, sizeof(struct dp_req *), 0, err)) < 0 ||
        (rc = ring_init(&s->sh.resp, DP_RESP_RING_SLOTS, sizeof(struct dp_event), RING_F_SP_ENQ, err)) < 0 ||
        (rc = dp_flows_init(&s->flows, n_req + DP_RETAIN_FLOWS, err)) < 0)
        goto err;
    rc = -ENOMEM;
    s->sh.fifo = calloc(cfg->queue_depth + 1, sizeof *s->sh.fifo);
    s->replay_slots = malloc(sizeof *s->replay_slots * DP_REPLAY_SLOTS);
    s->conns = calloc(DP_TCP_MAX_CONNS, sizeof *s->conns);
    s->dirty = calloc(DP_TCP_MAX_CONNS, sizeof *s->dirty);
    s->ubuf = malloc((size_t)DP_UDP_BATCH * 65536);
    if (!s->sh.fifo || !s->replay_slots || !s->conns || !s->dirty || !s->ubuf) {
        bora_errf(err, rc, "dataplane: out of memory");
        goto err;
    }
    bwp_replay_init(&s->replay, s->replay_slots, DP_REPLAY_SLOTS);
    for (int i = 0; i < DP_TCP_MAX_CONNS; i++)
        s->conns[i].fd = -1;
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->sh.io_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->sh.dec_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->ep < 0 || s->sh.io_efd < 0 || s->sh.dec_efd < 0) {
        rc = -errno;
        bora_errf(err, rc, "dataplane: epoll/eventfd: %s", strerror(errno));
        goto err;
    }
    ep_add(s->ep, s->sh.io_efd, EPOLLIN, TAG_EFD);
    if (cfg->udp && *cfg->udp) {
        if ((rc = s->udp_fd = open_socket(cfg->udp, SOCK_DGRAM, err)) < 0)
            goto err;
        s->udp_port = bound_port(s->udp_fd);
        ep_add(s->ep, s->udp_fd, EPOLLIN, TAG_UDP);
    }
    if (cfg->tcp && *cfg->tcp) {
        if ((rc = s->tcp_fd = open_socket(cfg->tcp, SOCK_STREAM, err)) < 0)
            goto err;
        s->tcp_port = bound_port(s->tcp_fd);
        ep_add(s->ep, s->tcp_fd, EPOLLIN, TAG_LISTEN);
    }
    for (int i = 0; i < DP_UDP_BATCH; i++) {
        s->iov[i] = (struct iovec){ s->ubuf + (size_t)i * 65536, 65536 };
        s->msgs[i].msg_hdr = (struct msghdr){ .msg_name = &s->uaddr[i], .msg_iov = &s->iov[i], .msg_iovlen = 1 };
    }
    *out = s;
    return 0;
err:
    dp_server_close(s);
    return rc;
}

void dp_server_close(struct dp_server *s)
{
    if (!s)
        return;
    for (int i = 0; s->conns && i < DP_TCP_MAX_CONNS; i++) {
        if (s->conns[i].fd >= 0)
            close(s->conns[i].fd);
        free(s->conns[i].rbuf);
        free(s->conns[i].wbuf);
    }
    int fds[] = { s->ep, s->udp_fd, s->tcp_fd, s->sh.io_efd, s->sh.dec_efd };
    for (size_t i = 0; i < BORA_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pool_fini(&s->reqs);
    ring_fini(&s->sh.intake);
    ring_fini(&s->sh.resp);
    dp_flows_fini(&s->flows);
    free(s->sh.fifo);
    free(s->replay_slots);
    free(s->conns);
    free(s->dirty);
    free(s->ubuf);
    free(s);
}

int dp_server_udp_port(const struct dp_server *s) { return s->udp_port; }
int dp_server_tcp_port(const struct dp_server *s) { return s->tcp_port; }

void dp_server_stats(const struct dp_server *s, struct dp_stats *out)
{
    *out = s->stats;
}

void dp_server_pause(struct dp_server *s, bool paused)
{
    atomic_store_explicit(&s->paused, paused, memory_order_release);   /* partner: accept path */
}

bool dp_server_paused(const struct dp_server *s)
{
    return atomic_load_explicit(&s->paused, memory_order_acquire);
}

void dp_server_stop(struct dp_server *s)
{
    /* release pairs with the io loop's acquire load */
    atomic_store_explicit(&s->stop, 1, memory_order_release);
    uint64_t one = 1;
    ssize_t rc = write(s->sh.io_efd, &one, sizeof one);
    (void)rc;
}

/* ---- output ---- */

static void conn_kill(struct dp_server *s, uint32_t ci);

static void conn_mark_dirty(struct dp_server *s, uint32_t ci)
{
    if (!s->conns[ci].dirty) {
        s->conns[ci].dirty = true;
        s->dirty[s->n_dirty++] = ci;
    }
}

static void tcp_append(struct dp_server *s, uint32_t ci, const uint8_t *frame, size_t len)
{
    struct dp_conn *c = &s->conns[ci];
    if (c->fd < 0)
        return;
    if (c->woff + c->wlen + len > DP_TCP_WBUF_BYTES) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen);
        c->woff = 0;
        if (c->wlen + len > DP_TCP_WBUF_BYTES) {   /* the client stopped reading: drop it */
            conn_kill(s, ci);
            return;
        }
    }
    memcpy(c->wbuf + c->woff + c->wlen, frame, len);
    c->wlen += len;
    conn_mark_dirty(s, ci);
}

static void send_to_peer(struct dp_server *s, const struct dp_peer *p, const uint8_t *frame, size_t len)
{
    s->stats.tx_frames++;
    metrics_dp_count(s->ms, p->conn ? METRICS_TCP : METRICS_UDP, METRICS_TX, 1);
    if (p->conn) {
        if (s->conns[p->conn - 1].gen == p->conn_gen)
            tcp_append(s, p->conn - 1, frame, len);
        return;
    }
    /* UDP loss is the client's to repair (RESEND); a full socket buffer drops like the network */
    ssize_t rc = sendto(s->udp_fd, frame, len, MSG_DONTWAIT, &p->a.sa, p->alen);
    if (unlikely(rc < 0))
        metrics_dp_count(s->ms, METRICS_UDP, METRICS_DROP, 1);
}

static void send_error(struct dp_server *s, const struct dp_peer *p, uint64_t rid, uint16_t code,
                       const char *msg, bool no_trailer)
{
    size_t n = bwp_build_error(s->tx, sizeof s->tx, rid, 0, code, msg, no_trailer ? NULL : s->sh.key,
                               dp_now_us());
    s->stats.errors++;
    if (code == BWP_E_DUPLICATE)        /* rule 8: concerns this frame, not a request */
        metrics_frame_error(s->ms, code);
    else
        metrics_request_error(s->ms, code);
    send_to_peer(s, p, s->tx, n);
}

static void flush_conn(struct dp_server *s, uint32_t ci)
{
    struct dp_conn *c = &s->conns[ci];
    while (c->fd >= 0 && c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->woff += (size_t)n;
            c->wlen -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                c->want_out = true;
                ep_mod(s->ep, c->fd, (c->rd_eof || c->closing ? 0 : EPOLLIN) | EPOLLOUT, TAG_CONN0 + ci);
            }
            return;
        }
        conn_kill(s, ci);
        return;
    }
    if (c->fd < 0)
        return;
    c->woff = 0;
    if (c->want_out) {
        c->want_out = false;
        ep_mod(s->ep, c->fd, c->rd_eof || c->closing ? 0 : EPOLLIN, TAG_CONN0 + ci);
    }
    if (c->closing || (c->rd_eof && c->n_live == 0))
        conn_kill(s, ci);
}

static void flush_dirty(struct dp_server *s)
{
    for (uint32_t i = 0; i < s->n_dirty; i++) {
        uint32_t ci = s->dirty[i];
        s->conns[ci].dirty = false;
        flush_conn(s, ci);
    }
    s->n_dirty = 0;
}

/* ---- requests ---- */

static uint64_t peer_key(const struct dp_peer *p)
{
    if (p->conn)
        return 1ull << 63 | (uint64_t)p->conn << 32 | p->conn_gen;
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *b = (const uint8_t *)&p->a;
    for (socklen_t i = 0; i < p->alen; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h & ~(1ull << 63);
}

/* Reserves a waiting place (BUSY when queue_depth are waiting). */
static bool reserve_waiting(struct dp_server *s)
{
    uint32_t n = atomic_load_explicit(&s->sh.n_waiting, memory_order_relaxed);
    do {
        if (n >= s->sh.queue_depth)
            return false;
        /* acq_rel pairs with the decoder's release fetch_sub */
    } while (!atomic_compare_exchange_weak_explicit(&s->sh.n_waiting, &n, n + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

static void on_generate(struct dp_server *s, const struct dp_peer *p, const struct bwp_client_frame *f)
{
    uint64_t rid = f->h.request_id;
    struct dp_flow *fl = dp_flows_find(&s->flows, p, rid);
    if (fl && fl->state == DP_FLOW_LIVE) {
        send_error(s, p, rid, BWP_E_DUPLICATE, "request_id already in flight", false);
        return;
    }
    /* acquire pairs with dp_server_pause's release */
    if (s->draining || atomic_load_explicit(&s->paused, memory_order_acquire)) {
        send_error(s, p, rid, BWP_E_SHUTTING_DOWN, "server is draining; not accepted", false);
        return;
    }
    if (!reserve_waiting(s)) {
        send_error(s, p, rid, BWP_E_BUSY, "request queue full; retry later", false);
        return;
    }
    if (fl)
        dp_flows_release(&s->flows, fl);                  /* a finished request's id reused */
    struct dp_req *r = pool_get(&s->reqs);
    fl = r ? dp_flows_add(&s->flows, p, rid) : NULL;
    if (!fl) {
        if (r)
            pool_put(&s->reqs, r);
        atomic_fetch_sub_explicit(&s->sh.n_waiting, 1, memory_order_release);
        send_error(s, p, rid, BWP_E_BUSY, "no request slot free; retry later", false);
        return;
    }
    const struct bwp_generate *g = &f->gen;
    r->rid = rid;
    r->flow = dp_flows_index(&s->flows, fl);
    memcpy(r->prompt, g->prompt, g->prompt_len);
    r->rq = (struct gen_request){ .prompt_kind = g->prompt_kind, .prompt = r->prompt,
                                  .prompt_len = g->prompt_len, .max_tokens = g->max_tokens,
                                  .ignore_eos = g->options & BWP_OPT_IGNORE_EOS,
                                  .temperature = g->temperature, .top_p = g->top_p,
                                  .top_k = g->top_k, .seed = g->seed };
    r->want_ids = g->options & BWP_OPT_IDS;
    r->t_accept_us = dp_mono_us();
    r->deadline_us = r->t_accept_us + 1000ull * (g->deadline_ms ? g->deadline_ms : s->request_timeout_ms);
    atomic_store_explicit(&r->cancel, DP_RUN, memory_order_relaxed);   /* published by the enqueue */
    fl->req = r;
    s->n_live++;
    if (p->conn)
        s->conns[p->conn - 1].n_live++;
    s->stats.accepted++;
    /* cannot fail: the ring holds every pool object */
    ring_enqueue_burst(&s->sh.intake, &r, 1);
    dp_decoder_kick(&s->sh);
}

static void on_resend(struct dp_server *s, const struct dp_peer *p, const struct bwp_client_frame *f)
{
    if (p->conn)
        return;                                           /* rule 14: UDP only */
    struct dp_flow *fl = dp_flows_find(&s->flows, p, f->h.request_id);
    if (!fl)
        return;
    for (uint32_t seq = f->from_seq; seq < fl->n_frames; seq++) {
        uint32_t len;
        const uint8_t *fr = dp_flows_frame(&s->flows, fl, seq, &len);
        if (fr) {
            s->stats.resent++;
            send_to_peer(s, p, fr, len);
        }
    }
}

static void on_frame(struct dp_server *s, const struct dp_peer *p, const uint8_t *buf, size_t n)
{
    struct bwp_client_frame f;
    s->stats.rx_frames++;
    metrics_dp_count(s->ms, p->conn ? METRICS_TCP : METRICS_UDP, METRICS_RX, 1);
    struct bwp_verdict v = bwp_parse_client(buf, n, p->conn ? BWP_TCP : BWP_UDP, &s->lim,
                                            s->sh.key ? &s->replay : NULL, peer_key(p),
                                            s->sh.key ? dp_now_us() : 0, &f);
    if (v.code) {
        s->stats.rejected++;
        metrics_dp_count(s->ms, p->conn ? METRICS_TCP : METRICS_UDP, METRICS_MALFORMED, 1);
        if (v.answer)
            send_error(s, p, v.request_id, v.code, v.msg, v.no_trailer);
        if (v.close && p->conn)
            s->conns[p->conn - 1].closing = true;
        return;
    }
    switch (f.h.type) {
    case BWP_GENERATE:
        on_generate(s, p, &f);
        break;
    case BWP_CANCEL: {
        struct dp_flow *fl = dp_flows_find(&s->flows, p, f.h.request_id);
        if (fl && fl->state == DP_FLOW_LIVE)   /* release pairs with the decoder's acquire */
            atomic_store_explicit(&fl->req->cancel, DP_CANCELLED, memory_order_release);
        break;
    }
    case BWP_PING: {
        uint32_t flags = (s->sh.gen->loaded ? BWP_PONG_LOADED : 0) | (s->draining ? BWP_PONG_DRAINING : 0);
        size_t m = bwp_build_pong(s->tx, sizeof s->tx, f.h.request_id,
                                  atomic_load_explicit(&s->sh.n_waiting, memory_order_relaxed), flags,
                                  s->sh.key, dp_now_us());
        send_to_peer(s, p, s->tx, m);
        break;
    }
    case BWP_RESEND:
        on_resend(s, p, &f);
        break;
    }
}

/* ---- response ring ---- */

static void on_event(struct dp_server *s, struct dp_event *ev, uint64_t now)
{
    struct dp_req *r = ev->req;
    struct dp_flow *fl = &s->flows.f[r->flow];
    if (ev->len) {
        send_to_peer(s, &fl->peer, ev->frame, ev->len);
        if (!fl->peer.conn)
            dp_flows_log(&s->flows, fl, ev->frame, ev->len);
    }
    if (ev->flags & DP_EV_LAST) {
        s->stats.done++;
        if (fl->peer.conn) {
            struct dp_conn *c = &s->conns[fl->peer.conn - 1];
            c->n_live--;
            if (c->fd < 0 && c->n_live == 0)
                c->used = false;                          /* slot free for a new connection */
            else if (c->fd >= 0 && c->rd_eof && c->n_live == 0)
                conn_mark_dirty(s, fl->peer.conn - 1);    /* flush, then close */
        }
        dp_flows_done(&s->flows, fl, now, fl->peer.conn == 0);
        pool_put(&s->reqs, r);
        s->n_live--;
    }
}

static bool drain_responses(struct dp_server *s)
{
    bool any = false;
    unsigned n;
    uint64_t now = dp_mono_us();
    while ((n = ring_dequeue_burst(&s->sh.resp, s->evs, EV_BURST)) > 0) {
        any = true;
        for (unsigned i = 0; i < n; i++)
            on_event(s, &s->evs[i], now);
    }
    return any;
}

/* ---- UDP ---- */

static void udp_readable(struct dp_server *s)
{
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < DP_UDP_BATCH; i++)
            s->msgs[i].msg_hdr.msg_namelen = sizeof s->uaddr[i];
        int n = recvmmsg(s->udp_fd, s->msgs, DP_UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++) {
            struct dp_peer p = { .alen = s->msgs[i].msg_hdr.msg_namelen };
            memcpy(&p.a, &s->uaddr[i], p.alen <= sizeof p.a ? p.alen : sizeof p.a);
            on_frame(s, &p, s->iov[i].iov_base, s->msgs[i].msg_len);
        }
        if (n < DP_UDP_BATCH)
            return;
    }
}

/* ---- TCP ---- */

static void conn_kill(struct dp_server *s, uint32_t ci)
{
    struct dp_conn *c = &s->conns[ci];
    if (c->fd < 0)
        return;
    epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->wlen = c->woff = c->rlen = 0;
    c->skip = 0;
    if (c->n_live) {                 /* rule 15: closing cancels its requests silently */
        for (uint32_t i = 0; i < s->flows.n; i++) {
            struct dp_flow *fl = &s->flows.f[i];
            if (fl->state == DP_FLOW_LIVE && fl->peer.conn == ci + 1 && fl->peer.conn_gen == c->gen)
                atomic_store_explicit(&fl->req->cancel, DP_SILENT, memory_order_release);
        }
    } else {
        c->used = false;
    }
}

static void tcp_accept(struct dp_server *s)
{
    for (;;) {
        int fd = accept4(s->tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        uint32_t ci = 0;
        while (ci < DP_TCP_MAX_CONNS && s->conns[ci].used)
            ci++;
        struct dp_conn *c = ci < DP_TCP_MAX_CONNS ? &s->conns[ci] : NULL;
        if (c && !c->rbuf) {
            c->rbuf = malloc(s->rcap);
            c->wbuf = malloc(DP_TCP_WBUF_BYTES);
        }
        if (!c || !c->rbuf || !c->wbuf) {
            close(fd);                /* out of connection slots */
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->gen++;
        c->used = true;
        c->rd_eof = c->closing = c->want_out = c->dirty = false;
        c->n_live = 0;
        c->skip = 0;
        c->rlen = c->woff = c->wlen = 0;
        ep_add(s->ep, fd, EPOLLIN, TAG_CONN0 + ci);
        s->stats.tcp_conns++;
    }
}

/* Consumes complete frames from the connection's read buffer. */
static void tcp_parse(struct dp_server *s, uint32_t ci)
{
    struct dp_conn *c = &s->conns[ci];
    struct dp_peer p = { .conn = ci + 1, .conn_gen = c->gen };
    size_t off = 0;
    while (c->fd >= 0 && !c->closing) {
        size_t avail = c->rlen - off;
        if (c->skip) {
            size_t k = c->skip < avail ? (size_t)c->skip : avail;
            off += k;
            c->skip -= k;
            if (c->skip)
                break;
            continue;
        }
        struct bwp_verdict v;
        size_t need = bwp_stream_need(c->rbuf + off, avail, &v);
        if (need == 0)
            break;
        if (need == SIZE_MAX) {                           /* rules 2, 3 */
            s->stats.rejected++;
            send_error(s, &p, v.request_id, v.code, v.msg, false);
            c->closing = true;
            break;
        }
        if (need > bwp_frame_max(&s->lim)) {              /* rule 7 */
            v = bwp_parse_oversize(c->rbuf + off, &s->lim);
            s->stats.rejected++;
            send_error(s, &p, v.request_id, v.code, v.msg, v.no_trailer);
            if (v.close) {
                c->closing = true;
                break;
            }
            c->skip = need;
            continue;
        }
        if (avail < need)
            break;
        on_frame(s, &p, c->rbuf + off, need);
        off += need;
    }
    if (c->fd < 0)
        return;
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->closing) {
        ep_mod(s->ep, c->fd, EPOLLOUT, TAG_CONN0 + ci);
        c->want_out = true;
        conn_mark_dirty(s, ci);
    }
}

static void tcp_readable(struct dp_server *s, uint32_t ci)
{
    struct dp_conn *c = &s->conns[ci];
    for (int round = 0; round < 16 && c->fd >= 0 && !c->closing && !c->rd_eof; round++) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, s->rcap - c->rlen, MSG_DONTWAIT);
        if (n > 0) {
            c->rlen += (size_t)n;
            tcp_parse(s, ci);
            continue;
        }
        if (n == 0) {                /* half-close: keep answering (rule 15) */
            c->rd_eof = true;
            ep_mod(s->ep, c->fd, c->want_out ? EPOLLOUT : 0, TAG_CONN0 + ci);
            conn_mark_dirty(s, ci);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_kill(s, ci);
        return;
    }
}

static void conn_event(struct dp_server *s, uint32_t ci, uint32_t events)
{
    struct dp_conn *c = &s->conns[ci];
    if (c->fd < 0)
        return;
    if (events & (EPOLLERR | EPOLLHUP)) {
        if (!(events & EPOLLIN)) {
            conn_kill(s, ci);
            return;
        }
    }
    if (events & EPOLLIN)
        tcp_readable(s, ci);
    if (c->fd >= 0 && (events & EPOLLOUT))
        conn_mark_dirty(s, ci);
}

/* ---- the loop ---- */

static void drain_tick(struct dp_server *s, uint64_t now)
{
    /* acquire pairs with dp_server_stop's release */
    if (!s->draining && atomic_load_explicit(&s->stop, memory_order_acquire)) {
        s->draining = true;
        s->drain_start_us = now;
        atomic_store_explicit(&s->sh.draining, 1, memory_order_release);
    }
    if (s->draining && now - s->drain_start_us >= 1000ull * s->shutdown_grace_ms &&
        !atomic_load_explicit(&s->sh.shutdown_now, memory_order_relaxed)) {
        /* release pairs with the decoder's acquire in end_reason */
        atomic_store_explicit(&s->sh.shutdown_now, 1, memory_order_release);
        dp_decoder_kick(&s->sh);
    }
}

static int wait_timeout_ms(struct dp_server *s)
{
    if (s->draining)
        return 10;
    return DP_IDLE_WAIT_MS;
}

int dp_server_run(struct dp_server *s, struct bora_err *err)
{
    struct epoll_event evs[EV_BURST];
    s->ms = metrics_shard_claim(s->sh.metrics, "io");
    int rc = pthread_create(&s->decoder, NULL, dp_decoder_main, &s->sh);
    if (rc)
        return bora_errf(err, -rc, "dataplane: cannot start the decoder thread: %s", strerror(rc));
    for (;;) {
        bool busy = drain_responses(s);
        flush_dirty(s);
        int timeout = 0;
        if (!busy) {
            atomic_store_explicit(&s->sh.io_sleeping, 1, memory_order_relaxed);
            atomic_thread_fence(memory_order_seq_cst);    /* pairs with io_kick's fence */
            if (ring_count(&s->sh.resp) == 0)
                timeout = wait_timeout_ms(s);
        }
        int n = epoll_wait(s->ep, evs, EV_BURST, timeout);
        atomic_store_explicit(&s->sh.io_sleeping, 0, memory_order_relaxed);
        if (n < 0 && errno != EINTR) {
            rc = bora_errf(err, -errno, "dataplane: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_EFD) {
                uint64_t v;
                ssize_t r = read(s->sh.io_efd, &v, sizeof v);
                (void)r;
            } else if (tag == TAG_UDP) {
                udp_readable(s);
            } else if (tag == TAG_LISTEN) {
                tcp_accept(s);            /* also while draining: new requests get SHUTTING_DOWN */
            } else {
                conn_event(s, (uint32_t)(tag - TAG_CONN0), evs[i].events);
            }
        }
        uint64_t now = dp_mono_us();
        dp_flows_expire(&s->flows, now);
        drain_tick(s, now);
        if (s->draining && s->n_live == 0 && ring_count(&s->sh.resp) == 0) {
            drain_responses(s);
            flush_dirty(s);
            rc = 0;
            break;
        }
    }
    atomic_store_explicit(&s->sh.quit, 1, memory_order_release);  /* pairs with the decoder's acquire */
    uint64_t one = 1;
    ssize_t w = write(s->sh.dec_efd, &one, sizeof one);
    (void)w;
    pthread_join(s->decoder, NULL);
    drain_responses(s);
    flush_dirty(s);
    return rc;
}
