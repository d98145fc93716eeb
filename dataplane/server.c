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
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "common/log.h"
#include "dataplane/server_int.h"

#define TAG_EFD     0u
#define TAG_UDP     1u
#define TAG_LISTEN  2u
#define TAG_CONN0   3u
#define EV_BURST    64

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
    bool skip_mac;                 /* … whose AUTH trailer is being checked on the way */
    uint64_t skip_rid;
    bool skip_gen;                 /* … and it is a GENERATE (its ERROR refuses a request) */
    uint64_t partial_since;        /* dp_mono_us when the unfinished frame began; 0 = none */
    uint64_t stall_since;          /* dp_mono_us when a send last found the socket full; 0 = flowing */
    struct bwp_mac_stream mac;
    uint8_t *rbuf; size_t rlen;    /* (rcap) */
    uint8_t *wbuf; size_t woff, wlen;   /* (DP_TCP_WBUF_BYTES) */
    struct sockaddr_storage addr;  /* the client's address (allow list, rate limit) */
};

struct dp_server {
    struct dp_shared sh;
    struct bwp_key key;
    struct dp_port port;           /* the kernel sockets' requests */
    struct dp_dpdk *dpdk;          /* the DPDK port, or NULL */
    int ep, udp_fd, tcp_fd, io_efd;
    int udp_port, tcp_port;
    struct dp_conn *conns;         /* (DP_TCP_MAX_CONNS) */
    size_t rcap;                   /* TCP read buffer bytes */
    uint32_t *dirty;               /* (DP_TCP_MAX_CONNS) connections with output to flush */
    uint32_t n_dirty;
    uint8_t *ubuf;                 /* (DP_UDP_BATCH, 65536) */
    struct mmsghdr msgs[DP_UDP_BATCH];
    struct iovec iov[DP_UDP_BATCH];
    struct sockaddr_storage uaddr[DP_UDP_BATCH];
    struct mmsghdr utx[DP_UDP_BATCH];          /* outgoing datagrams of this loop turn */
    struct iovec utx_iov[DP_UDP_BATCH];
    struct sockaddr_storage utx_addr[DP_UDP_BATCH];
    uint8_t utx_buf[DP_UDP_BATCH][DP_FRAME_SLOT];
    uint32_t n_utx;
    _Atomic uint32_t stop;         /* set by dp_server_stop (any thread, signal handler) */
    bool draining;
    uint64_t drain_start_us;
    uint64_t tcp_conns;
    uint64_t frame_timeout_us;     /* dp_config.tcp_frame_timeout_ms */
    uint64_t next_partial_check;   /* dp_mono_us of the next sweep for stalled frames */
    int spare_fd;                  /* a descriptor held back: out of descriptors, accept closes with it */
    uint64_t fd_warn_us;           /* dp_mono_us of the last out-of-descriptors warning */
    uint64_t listen_paused_until;  /* dp_mono_us: the listener is disarmed until then (0 = armed) */
    uint32_t pol_seen;             /* sh.pol_gen the open connections were last checked against */
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
    /* TCP: rebind while old connections sit in TIME_WAIT. Not UDP: there SO_REUSEADDR lets a
     * second daemon bind the same port and silently take its traffic. */
    if (type == SOCK_STREAM)
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
    if ((!c->udp || !*c->udp) && (!c->tcp || !*c->tcp) && !c->dpdk)
        return bora_errf(err, -EINVAL, "dataplane: neither udp, tcp nor dpdk is configured");
    if (c->queue_depth < 1 || c->queue_depth > (1u << 20))
        return bora_errf(err, -EINVAL, "dataplane: queue_depth %u is not 1..1048576", c->queue_depth);
    if (c->max_tokens < 1 || c->max_tokens > 65535)
        return bora_errf(err, -EINVAL, "dataplane: max_tokens %u is not 1..65535", c->max_tokens);
    if (c->max_prompt_bytes < 1 || c->max_prompt_bytes > (64u << 20))
        return bora_errf(err, -EINVAL, "dataplane: max_prompt_bytes %u is not 1..64 MiB",
                         c->max_prompt_bytes);
    if (c->n_allow > DP_ALLOW_MAX)
        return bora_errf(err, -EINVAL, "dataplane: %u allow-list entries (at most %d)", c->n_allow, DP_ALLOW_MAX);
    if (c->key && c->key->len > BWP_KEY_MAX)
        return bora_errf(err, -EINVAL, "dataplane: AUTH key longer than %d bytes", BWP_KEY_MAX);
    return 0;
}

static void port_send(struct dp_port *p, const struct dp_peer *peer, const uint8_t *frame, size_t len);
static void port_request_started(struct dp_port *p, const struct dp_peer *peer);
static void port_request_ended(struct dp_port *p, const struct dp_peer *peer);
static void port_close_peer(struct dp_port *p, const struct dp_peer *peer);
static void port_end_peer(struct dp_port *p, const struct dp_peer *peer);
static const struct dp_port_ops kernel_port_ops = {
    .send = port_send, .request_started = port_request_started, .request_ended = port_request_ended,
    .close_peer = port_close_peer,
    .end_peer = port_end_peer,
};

/* The live part of cfg as a policy (limits from base: key, vocabulary). */
void dp_policy_fill(struct dp_policy *pol, const struct dp_config *cfg, const struct bwp_limits *base)
{
    pol->lim = *base;
    pol->lim.max_prompt_bytes = cfg->max_prompt_bytes;
    pol->lim.max_tokens = cfg->max_tokens;
    pol->request_timeout_ms = cfg->request_timeout_ms;
    pol->shutdown_grace_ms = cfg->shutdown_grace_ms;
    pol->rate_limit = cfg->rate_limit;
    pol->max_conns_per_addr = cfg->max_conns_per_addr;
    pol->n_allow = cfg->n_allow;
    if (cfg->n_allow)
        memcpy(pol->allow, cfg->allow, sizeof *pol->allow * cfg->n_allow);
}

/* The state every transport and the decoder share: policy, intake ring, decoder FIFO. */
static int shared_init(struct dp_server *s, const struct dp_config *cfg, struct generator *gen,
                       struct bora_err *err)
{
    struct dp_shared *sh = &s->sh;
    if (cfg->key && cfg->key->len) {
        s->key = *cfg->key;
        sh->key = &s->key;
    }
    sh->lim = (struct bwp_limits){ .max_prompt_bytes = cfg->max_prompt_bytes, .max_tokens = cfg->max_tokens,
                                   .vocab_size = gen->vocab_size, .max_ctx = gen->max_ctx, .key = sh->key };
    dp_policy_fill(&sh->pol_slot[0], cfg, &sh->lim);
    atomic_store_explicit(&sh->policy, &sh->pol_slot[0], memory_order_release);  /* before any thread */
    sh->queue_depth = cfg->queue_depth;
    sh->gen = gen;
    atomic_store_explicit(&sh->gen_loaded, gen->loaded, memory_order_relaxed);
    sh->ctl.list = calloc(DP_LIST_MAX, sizeof *sh->ctl.list);
    if (!sh->ctl.list)
        return bora_errf(err, -ENOMEM, "dataplane: out of memory");
    sh->metrics = cfg->metrics;
    int rc = ring_init(&sh->intake, cfg->queue_depth + 1 + DP_POOL_SLACK, sizeof(struct dp_req *), 0, err);
    if (rc < 0)
        return rc;
    sh->fifo = calloc(cfg->queue_depth + 1, sizeof *sh->fifo);
    if (!sh->fifo)
        return bora_errf(err, -ENOMEM, "dataplane: cannot allocate the decoder's queue");
    sh->dec_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sh->dec_efd < 0)
        return bora_errf(err, -errno, "dataplane: the decoder's eventfd: %s", strerror(errno));
    return 0;
}

/* Descriptors for every TCP slot: the soft open-file limit is raised toward the hard one (the
 * usual soft 1024 would run out about a dozen connections before the 1024 slots), and one
 * descriptor is held back so that, out of descriptors all the same, a new connection can be
 * accepted and closed at once instead of waking the loop again and again. */
static void tcp_fd_budget(struct dp_server *s)
{
    const rlim_t want = DP_TCP_MAX_CONNS + DP_FD_EXTRA;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        const rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        const bool set = setrlimit(RLIMIT_NOFILE, &rl) == 0;
        if (!set || rl.rlim_cur < want)
            bora_log(BORA_LOG_WARN, "dataplane: the open-file limit is %llu (hard %llu), below the %llu that %d TCP "
                     "connections need; connections beyond it are closed at once (raise it: ulimit -n, LimitNOFILE=)",
                     (unsigned long long)(set ? rl.rlim_cur : old), (unsigned long long)rl.rlim_max,
                     (unsigned long long)want, DP_TCP_MAX_CONNS);
    }
    s->spare_fd = eventfd(0, EFD_CLOEXEC);   /* any descriptor will do; an eventfd needs no file */
}

/* Out of descriptors (or of kernel memory) and no spare to accept-and-close with: the listener is
 * disarmed for DP_LISTEN_PAUSE_MS (level-triggered, it would wake the loop at once, for ever);
 * partial_tick arms it again. Connections wait in the backlog meanwhile. */
static void tcp_listen_pause(struct dp_server *s, uint64_t now)
{
    if (ep_mod(s->ep, s->tcp_fd, 0, TAG_LISTEN) == 0)
        s->listen_paused_until = now + 1000ull * DP_LISTEN_PAUSE_MS;
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
    s->ep = s->udp_fd = s->tcp_fd = s->io_efd = s->sh.dec_efd = s->spare_fd = -1;
    pthread_mutex_init(&s->sh.pol_lock, NULL);
    pthread_mutex_init(&s->sh.ctl_lock, NULL);
    pthread_mutex_init(&s->sh.swap_lock, NULL);
    if ((rc = shared_init(s, cfg, gen, err)) < 0)
        goto err;
    s->io_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    if (s->ep < 0 || s->io_efd < 0) {
        rc = bora_errf(err, -errno, "dataplane: epoll/eventfd: %s", strerror(errno));
        goto err;
    }
    if ((rc = dp_port_init(&s->port, &s->sh, &kernel_port_ops, s, s->io_efd, err)) < 0)
        goto err;
    s->rcap = bwp_frame_max(&s->sh.lim) + (64u << 10);
    s->frame_timeout_us = 1000ull * (cfg->tcp_frame_timeout_ms ? cfg->tcp_frame_timeout_ms : DP_TCP_FRAME_TIMEOUT_MS);
    s->conns = calloc(DP_TCP_MAX_CONNS, sizeof *s->conns);
    for (int i = 0; s->conns && i < DP_TCP_MAX_CONNS; i++)
        s->conns[i].fd = -1;          /* before any way out: dp_server_close walks them */
    s->dirty = calloc(DP_TCP_MAX_CONNS, sizeof *s->dirty);
    s->ubuf = malloc((size_t)DP_UDP_BATCH * 65536);
    if (!s->conns || !s->dirty || !s->ubuf) {
        rc = bora_errf(err, -ENOMEM, "dataplane: out of memory");
        goto err;
    }
    if (cfg->tcp && *cfg->tcp)
        tcp_fd_budget(s);
    if (ep_add(s->ep, s->io_efd, EPOLLIN, TAG_EFD) < 0) {
        rc = bora_errf(err, -errno, "dataplane: epoll_ctl (wake-up eventfd): %s", strerror(errno));
        goto err;
    }
    if (cfg->udp && *cfg->udp) {
        if ((rc = s->udp_fd = open_socket(cfg->udp, SOCK_DGRAM, err)) < 0)
            goto err;
        s->udp_port = bound_port(s->udp_fd);
        if (ep_add(s->ep, s->udp_fd, EPOLLIN, TAG_UDP) < 0) {
            rc = bora_errf(err, -errno, "dataplane: epoll_ctl (UDP %s): %s", cfg->udp, strerror(errno));
            goto err;
        }
    }
    if (cfg->tcp && *cfg->tcp) {
        if ((rc = s->tcp_fd = open_socket(cfg->tcp, SOCK_STREAM, err)) < 0)
            goto err;
        s->tcp_port = bound_port(s->tcp_fd);
        if (ep_add(s->ep, s->tcp_fd, EPOLLIN, TAG_LISTEN) < 0) {
            rc = bora_errf(err, -errno, "dataplane: epoll_ctl (TCP %s): %s", cfg->tcp, strerror(errno));
            goto err;
        }
    }
    for (int i = 0; i < DP_UDP_BATCH; i++) {
        s->iov[i] = (struct iovec){ s->ubuf + (size_t)i * 65536, 65536 };
        s->msgs[i].msg_hdr = (struct msghdr){ .msg_name = &s->uaddr[i], .msg_iov = &s->iov[i], .msg_iovlen = 1 };
    }
    if (cfg->dpdk && (rc = dp_dpdk_open(&s->dpdk, &s->sh, cfg->dpdk, err)) < 0)
        goto err;
    *out = s;
    return 0;
err:
    dp_server_close(s);
    return rc;
}

/* Reads away up to reads × 4 KiB of what the peer sent and nobody will read: a close over unread
 * input sends a reset, which discards what the kernel still holds for the peer (the last frames,
 * an ERROR, a DONE). */
static void tcp_drain_input(int fd, int reads)
{
    uint8_t sink[4096];
    for (int i = 0; i < reads && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
        ;
}

/* A TCP close that ends with FIN after what was sent: half-close, read away input, close. */
static void tcp_close_gently(int fd, int reads)
{
    shutdown(fd, SHUT_WR);
    tcp_drain_input(fd, reads);
    close(fd);
}

void dp_server_close(struct dp_server *s)
{
    if (!s)
        return;
    for (int i = 0; s->conns && i < DP_TCP_MAX_CONNS; i++) {
        if (s->conns[i].fd >= 0)
            tcp_close_gently(s->conns[i].fd, 16 * DP_CLOSE_DRAIN_READS);
        free(s->conns[i].rbuf);
        free(s->conns[i].wbuf);
    }
    dp_dpdk_close(s->dpdk);
    int fds[] = { s->ep, s->udp_fd, s->tcp_fd, s->io_efd, s->sh.dec_efd, s->spare_fd };
    for (size_t i = 0; i < BORA_ARRAY_LEN(fds); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    dp_port_fini(&s->port);
    ring_fini(&s->sh.intake);
    free(s->sh.fifo);
    free(s->sh.ctl.list);
    pthread_mutex_destroy(&s->sh.pol_lock);
    pthread_mutex_destroy(&s->sh.ctl_lock);
    pthread_mutex_destroy(&s->sh.swap_lock);
    free(s->conns);
    free(s->dirty);
    free(s->ubuf);
    free(s);
}

int dp_server_udp_port(const struct dp_server *s) { return s->udp_port; }
const struct dp_dpdk *dp_server_dpdk(const struct dp_server *s) { return s->dpdk; }
int dp_server_tcp_port(const struct dp_server *s) { return s->tcp_port; }

struct dp_shared *dp_server_shared(struct dp_server *s) { return &s->sh; }

_Static_assert(sizeof(struct dp_stats) == 8 * sizeof(uint64_t), "dp_server_stats copies every counter");

void dp_server_stats(const struct dp_server *s, struct dp_stats *out)
{
    const struct dp_stats *st = &s->port.stats;   /* the io thread writes them (dp_stat_inc) */
    *out = (struct dp_stats){
        .rx_frames = __atomic_load_n(&st->rx_frames, __ATOMIC_RELAXED),
        .tx_frames = __atomic_load_n(&st->tx_frames, __ATOMIC_RELAXED),
        .accepted = __atomic_load_n(&st->accepted, __ATOMIC_RELAXED),
        .rejected = __atomic_load_n(&st->rejected, __ATOMIC_RELAXED),
        .done = __atomic_load_n(&st->done, __ATOMIC_RELAXED),
        .errors = __atomic_load_n(&st->errors, __ATOMIC_RELAXED),
        .resent = __atomic_load_n(&st->resent, __ATOMIC_RELAXED),
        .tcp_conns = __atomic_load_n(&s->tcp_conns, __ATOMIC_RELAXED),
    };
}

void dp_server_pause(struct dp_server *s, bool paused)
{
    atomic_store_explicit(&s->sh.paused, paused, memory_order_release);   /* partner: port.c draining() */
}

void dp_server_counts(const struct dp_server *s, uint32_t *queued, uint32_t *running)
{
    /* relaxed: figures for the console (partners: port.c's CAS, the decoder's stores) */
    *queued = dp_waiting(&s->sh);
    *running = atomic_load_explicit(&s->sh.n_running, memory_order_relaxed);
}

bool dp_server_paused(const struct dp_server *s)
{
    return atomic_load_explicit(&s->sh.paused, memory_order_acquire);
}

bool dp_server_stopping(const struct dp_server *s)
{
    return atomic_load_explicit(&s->stop, memory_order_acquire) != 0;   /* partner: dp_server_stop */
}

void dp_server_stop(struct dp_server *s)
{
    /* release pairs with the io loop's acquire load */
    atomic_store_explicit(&s->stop, 1, memory_order_release);
    uint64_t one = 1;
    ssize_t rc = write(s->io_efd, &one, sizeof one);
    (void)rc;
}

/* ---- output ---- */

static void conn_kill(struct dp_server *s, uint32_t ci);
static void flush_udp(struct dp_server *s);

static void conn_mark_dirty(struct dp_server *s, uint32_t ci)
{
    if (!s->conns[ci].dirty) {
        s->conns[ci].dirty = true;
        s->dirty[s->n_dirty++] = ci;
    }
}

/* A frame that finds the client's output buffer full is the console's `tcp drop` (one frame;
 * what the buffer still held goes with the connection, whose requests are cancelled). */
static void tcp_append(struct dp_server *s, uint32_t ci, const uint8_t *frame, size_t len)
{
    struct dp_conn *c = &s->conns[ci];
    if (c->fd < 0)
        return;
    if (c->woff + c->wlen + len > DP_TCP_WBUF_BYTES) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen);
        c->woff = 0;
        if (c->wlen + len > DP_TCP_WBUF_BYTES) {   /* the client stopped reading: drop it */
            metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_DROP, 1);
            conn_kill(s, ci);
            return;
        }
    }
    memcpy(c->wbuf + c->woff + c->wlen, frame, len);
    c->wlen += len;
    conn_mark_dirty(s, ci);
}

static void port_send(struct dp_port *port, const struct dp_peer *p, const uint8_t *frame, size_t len)
{
    struct dp_server *s = port->owner;
    if (p->conn) {
        if (s->conns[p->conn - 1].gen == p->conn_gen)
            tcp_append(s, p->conn - 1, frame, len);
        return;
    }
    if (len > DP_FRAME_SLOT) {
        ssize_t rc = sendto(s->udp_fd, frame, len, MSG_DONTWAIT, &p->a.sa, p->alen);
        if (unlikely(rc < 0))
            metrics_dp_count(port->ms, METRICS_UDP, METRICS_DROP, 1);
        return;
    }
    /* batched: one sendmmsg per loop turn (or per DP_UDP_BATCH frames) */
    uint32_t i = s->n_utx++;
    memcpy(s->utx_buf[i], frame, len);
    memcpy(&s->utx_addr[i], &p->a, p->alen);
    s->utx_iov[i] = (struct iovec){ s->utx_buf[i], len };
    s->utx[i].msg_hdr = (struct msghdr){ .msg_name = &s->utx_addr[i], .msg_namelen = p->alen,
                                         .msg_iov = &s->utx_iov[i], .msg_iovlen = 1 };
    if (s->n_utx == DP_UDP_BATCH)
        flush_udp(s);
}

/* Sends the batched UDP frames. Loss is the client's to repair (RESEND): a full socket
 * buffer drops like the network would. */
static void flush_udp(struct dp_server *s)
{
    uint32_t off = 0;
    while (off < s->n_utx) {
        int k = sendmmsg(s->udp_fd, s->utx + off, s->n_utx - off, MSG_DONTWAIT);
        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                off++;                           /* this datagram was refused (e.g. no route): skip it */
                metrics_dp_count(s->port.ms, METRICS_UDP, METRICS_DROP, 1);
            } else {
                break;
            }
            continue;
        }
        off += (uint32_t)k;
    }
    if (off < s->n_utx)                          /* socket buffer full: dropped like the network would */
        metrics_dp_count(s->port.ms, METRICS_UDP, METRICS_DROP, s->n_utx - off);
    s->n_utx = 0;
}

static void port_request_started(struct dp_port *port, const struct dp_peer *peer)
{
    struct dp_server *s = port->owner;
    if (peer->conn)
        s->conns[peer->conn - 1].n_live++;
}

static void port_request_ended(struct dp_port *port, const struct dp_peer *peer)
{
    struct dp_server *s = port->owner;
    if (!peer->conn)
        return;
    struct dp_conn *c = &s->conns[peer->conn - 1];
    c->n_live--;
    if (c->fd < 0 && c->n_live == 0)
        c->used = false;                          /* slot free for a new connection */
    else if (c->fd >= 0 && c->rd_eof && c->n_live == 0)
        conn_mark_dirty(s, peer->conn - 1);       /* flush, then close */
}

static void port_close_peer(struct dp_port *port, const struct dp_peer *peer)
{
    struct dp_server *s = port->owner;
    if (s->conns[peer->conn - 1].gen == peer->conn_gen)
        s->conns[peer->conn - 1].closing = true;
}

/* As if the client had half-closed (rule 15): nothing more is read, its live requests finish,
 * then the connection closes (flush_conn). Used for an address the allow list now refuses. */
static void port_end_peer(struct dp_port *port, const struct dp_peer *peer)
{
    struct dp_server *s = port->owner;
    const uint32_t ci = peer->conn - 1;
    struct dp_conn *c = &s->conns[ci];
    if (c->gen != peer->conn_gen || c->fd < 0 || c->rd_eof)
        return;
    c->rd_eof = true;                /* tcp_parse stops at it and drops the unread bytes */
    ep_mod(s->ep, c->fd, c->want_out ? EPOLLOUT : 0, TAG_CONN0 + ci);
    conn_mark_dirty(s, ci);
}

static void flush_conn(struct dp_server *s, uint32_t ci)
{
    struct dp_conn *c = &s->conns[ci];
    while (c->fd >= 0 && c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->woff += (size_t)n;
            c->wlen -= (size_t)n;
            c->stall_since = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->stall_since)
                c->stall_since = dp_mono_us();
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
            dp_port_frame(&s->port, &p, (const struct sockaddr *)&s->uaddr[i], s->iov[i].iov_base, s->msgs[i].msg_len);
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
    tcp_close_gently(c->fd, DP_CLOSE_DRAIN_READS);
    c->fd = -1;
    c->wlen = c->woff = c->rlen = 0;
    c->skip = 0;
    c->skip_mac = false;
    if (c->n_live) {                 /* rule 15: closing cancels its requests silently */
        dp_port_cancel_conn(&s->port, ci + 1, c->gen);
    } else {
        c->used = false;
    }
}

/* A connection refused when it arrives, before it takes a slot or a buffer: one ERROR with
 * request_id 0 (no frame named a request yet), then closed. FORBIDDEN: the allow list; BUSY: no
 * connection slot free, or its address has max_conns_per_addr open. */
static void tcp_refuse(struct dp_server *s, int fd, uint8_t code, const char *why)
{
    uint8_t b[DP_PORT_TX_CAP];
    size_t n = bwp_build_error(b, sizeof b, 0, 0, code, why, s->sh.key, dp_now_us());
    dp_stat_inc(&s->port.stats.rejected);
    dp_stat_inc(&s->port.stats.errors);
    metrics_frame_error(s->port.ms, code);
    if (n)
        (void)send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT);   /* a fresh socket's buffer takes it */
    tcp_close_gently(fd, DP_CLOSE_DRAIN_READS);
}

static void tcp_accept(struct dp_server *s)
{
    for (int burst = 0; burst < DP_ACCEPT_BURST; burst++) {   /* level-triggered: the rest next turn */
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        int fd = accept4(s->tcp_fd, (struct sockaddr *)&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* out of descriptors: the connection would wait in the backlog, and the listening
                 * socket wake the loop at once, forever. Accept it with the spare and close it. */
                const int e = errno;
                const uint64_t now = dp_mono_us();
                if (now - s->fd_warn_us > 1000ull * DP_FD_WARN_MS || !s->fd_warn_us) {
                    unsigned open_conns = 0;
                    for (uint32_t i = 0; i < DP_TCP_MAX_CONNS; i++)
                        open_conns += s->conns[i].fd >= 0;
                    bora_log(BORA_LOG_WARN, "dataplane: cannot accept a TCP connection (%s) with %u open; new "
                             "connections are closed at once until descriptors are free", strerror(e), open_conns);
                    s->fd_warn_us = now;
                }
                if (s->spare_fd < 0)          /* lost to another thread last time: try again */
                    s->spare_fd = eventfd(0, EFD_CLOEXEC);
                if (s->spare_fd < 0 || (e != EMFILE && e != ENFILE)) {   /* closing one frees no memory */
                    tcp_listen_pause(s, now);
                    return;
                }
                close(s->spare_fd);
                fd = accept4(s->tcp_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0)
                    close(fd);
                s->spare_fd = eventfd(0, EFD_CLOEXEC);   /* may fail: another thread took the number */
                if (fd < 0) {
                    tcp_listen_pause(s, now);
                    return;
                }
                continue;
            }
            return;                   /* EAGAIN: the backlog is empty */
        }
        const struct dp_policy *pol = dp_policy_enter(s->port.hz, &s->sh);
        const bool refused = pol->n_allow && !dp_allow_match(pol->allow, pol->n_allow, (const struct sockaddr *)&addr);
        const uint32_t per_addr = pol->max_conns_per_addr;
        dp_policy_exit(s->port.hz);
        if (refused) {
            tcp_refuse(s, fd, BWP_E_FORBIDDEN, "client address not allowed");
            continue;
        }
        uint32_t ci = DP_TCP_MAX_CONNS, same = 0;   /* the first free slot; this address's open ones */
        for (uint32_t i = 0; i < DP_TCP_MAX_CONNS; i++) {
            if (!s->conns[i].used) {
                ci = ci < i ? ci : i;
                if (!per_addr)
                    break;                    /* no cap: the first free slot is all it needs */
            } else if (per_addr &&   /* closed ones whose requests still finish hold their slot too */
                       dp_same_host((const struct sockaddr *)&s->conns[i].addr, (const struct sockaddr *)&addr)) {
                same++;
            }
        }
        if (per_addr && same >= per_addr) {
            char why[96];
            snprintf(why, sizeof why, "%u TCP connections held by this address (max_conns_per_addr %u)",
                     same, per_addr);
            tcp_refuse(s, fd, BWP_E_BUSY, why);
            continue;
        }
        if (ci == DP_TCP_MAX_CONNS) {
            char why[64];
            snprintf(why, sizeof why, "no TCP connection slot free (%d in use)", DP_TCP_MAX_CONNS);
            tcp_refuse(s, fd, BWP_E_BUSY, why);
            continue;
        }
        struct dp_conn *c = &s->conns[ci];
        if (!c->rbuf)                 /* freed again by the sweep once the slot is closed */
            c->rbuf = malloc(s->rcap);
        if (!c->wbuf)
            c->wbuf = malloc(DP_TCP_WBUF_BYTES);
        if (!c->rbuf || !c->wbuf) {
            bora_log(BORA_LOG_WARN, "dataplane: out of memory for a TCP connection's buffers; refused");
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        c->addr = addr;
        c->gen++;
        c->used = true;
        c->rd_eof = c->closing = c->want_out = c->dirty = false;
        c->n_live = 0;
        c->skip = 0;
        c->skip_mac = false;
        c->partial_since = c->stall_since = 0;
        c->rlen = c->woff = c->wlen = 0;
        if (ep_add(s->ep, fd, EPOLLIN, TAG_CONN0 + ci) < 0) {
            bora_log(BORA_LOG_WARN, "dataplane: epoll_ctl for a TCP connection: %s; refused", strerror(errno));
            c->used = false;
            c->fd = -1;
            close(fd);
            continue;
        }
        dp_stat_inc(&s->tcp_conns);
    }
}

/* Consumes complete frames from the connection's read buffer. */
static void tcp_parse(struct dp_server *s, uint32_t ci)
{
    struct dp_conn *c = &s->conns[ci];
    struct dp_peer p = { .conn = ci + 1, .conn_gen = c->gen };
    size_t off = 0;
    bool done = false;   /* a frame (or an oversize frame's skip) ended: the next one's clock starts */
    char why[128];   /* bwp_verdict_msg: a static message and a limit */
    while (c->fd >= 0 && !c->closing && !c->rd_eof) {   /* rd_eof: ended by dp_port (FORBIDDEN) */
        size_t avail = c->rlen - off;
        if (c->skip) {
            size_t k = c->skip < avail ? (size_t)c->skip : avail;
            if (c->skip_mac)
                bwp_mac_stream_feed(&c->mac, c->rbuf + off, k);
            off += k;
            c->skip -= k;
            if (c->skip)
                break;
            done = true;
            if (c->skip_mac) {                            /* rule 1: AUTH before TOO_LARGE */
                struct bwp_verdict v = bwp_mac_stream_verdict(&c->mac, &s->sh.lim, &s->port.replay,
                                                              dp_peer_key(&p), c->skip_rid, dp_now_us());
                dp_port_error(&s->port, &p, v.request_id, v.code, bwp_verdict_msg(&v, why, sizeof why), v.no_trailer, c->skip_gen);
                c->skip_mac = false;
            }
            continue;
        }
        struct bwp_verdict v;
        size_t need = bwp_stream_need(c->rbuf + off, avail, &v);
        if (need == 0)
            break;
        if (need == SIZE_MAX) {                           /* rules 2, 3 */
            dp_stat_inc(&s->port.stats.rejected);
            metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_RX, 1);
            metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_MALFORMED, 1);
            dp_port_error(&s->port, &p, v.request_id, v.code, bwp_verdict_msg(&v, why, sizeof why), false, false);   /* not a frame */
            c->closing = true;
            break;
        }
        if (need > bwp_frame_max(&s->sh.lim)) {           /* rule 7 */
            v = bwp_parse_oversize(c->rbuf + off, &s->sh.lim);
            dp_stat_inc(&s->port.stats.rejected);
            metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_RX, 1);
            metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_MALFORMED, 1);
            const struct dp_policy *pol = dp_policy_enter(s->port.hz, &s->sh);
            bool refused = pol->n_allow && !dp_allow_match(pol->allow, pol->n_allow, (const struct sockaddr *)&c->addr);
            dp_policy_exit(s->port.hz);
            if (refused)
                v = (struct bwp_verdict){ .code = BWP_E_FORBIDDEN, .answer = v.request_id != 0, .close = v.close,
                                          .no_trailer = false, .request_id = v.request_id,
                                          .msg = "client address not allowed" };
            else if (v.code == BWP_E_TOO_LARGE && !v.close && s->sh.key) {
                bwp_mac_stream_init(&c->mac, s->sh.key, c->rbuf + off);   /* answer once skipped */
                c->skip_mac = true;
                c->skip_rid = v.request_id;
                c->skip_gen = dp_frame_is_generate(c->rbuf + off, avail);
                off += BWP_HDR_SIZE;
                c->skip = need - BWP_HDR_SIZE;
                continue;
            }
            if (v.answer)
                dp_port_error(&s->port, &p, v.request_id, v.code, bwp_verdict_msg(&v, why, sizeof why), v.no_trailer,
                              dp_frame_is_generate(c->rbuf + off, avail));
            if (v.close) {
                c->closing = true;
                break;
            }
            if (refused) {                                /* as in dp_port: read no more */
                port_end_peer(&s->port, &p);
                break;
            }
            c->skip = need;
            continue;
        }
        if (avail < need)
            break;
        dp_port_frame(&s->port, &p, (const struct sockaddr *)&c->addr, c->rbuf + off, need);
        off += need;
        done = true;
    }
    if (c->fd < 0)
        return;
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    if (c->rd_eof) {                 /* ended: nothing more is read; live requests finish, then it closes */
        c->rlen = 0;
        c->skip = 0;
        c->skip_mac = false;
    }
    /* the unfinished frame's clock: it starts with the frame's first byte, and only a frame's
     * end restarts it (the bytes of an oversize frame being skipped do not: a client trickling
     * one would hold its slot for ever) */
    if (c->rlen == 0 && c->skip == 0)
        c->partial_since = 0;
    else if (done || c->partial_since == 0)
        c->partial_since = dp_mono_us();
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
        if (c->rlen == s->rcap)
            return;                  /* cannot happen (a frame fits); never read 0 bytes as EOF */
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, s->rcap - c->rlen, MSG_DONTWAIT);
        if (n > 0) {
            c->rlen += (size_t)n;
            tcp_parse(s, ci);
            continue;
        }
        if (n == 0) {                /* half-close: keep answering (rule 15) */
            c->rd_eof = true;
            if (c->skip && c->skip_mac) {   /* inside a keyed oversize frame: its trailer never came */
                struct dp_peer p = { .conn = ci + 1, .conn_gen = c->gen };
                dp_port_error(&s->port, &p, c->skip_rid, BWP_E_AUTH, "auth trailer truncated by the end of the stream",
                              true, c->skip_gen);
                c->skip = 0;
                c->skip_mac = false;
            }
            if (c->rlen > 0 && !c->skip) {   /* the stream ended inside a frame: it is truncated */
                struct dp_peer p = { .conn = ci + 1, .conn_gen = c->gen };
                const bool named = c->rlen >= BWP_HDR_SIZE && !memcmp(c->rbuf, "BWP1", 4);
                dp_stat_inc(&s->port.stats.rejected);
                metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_RX, 1);
                metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_MALFORMED, 1);
                dp_port_error(&s->port, &p, named ? bwp_rd64(c->rbuf + 16) : 0, BWP_E_BAD_FRAME,
                              named ? "frame truncated by the end of the stream" : "short header at the end of the stream",
                              false, named && dp_frame_is_generate(c->rbuf, c->rlen));
                c->rlen = 0;
                if (!named)
                    c->closing = true;   /* rule 2: too broken to name a request */
            }
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

/* A new allow list applies to the TCP connections already open too: one from an address it no
 * longer allows is ended as dp_port ends it on a frame (read no more, its requests finish, then
 * closed); an idle one is told first, with ERROR FORBIDDEN and request_id 0 (no frame named a
 * request). Otherwise such connections could keep every slot, idle, for ever. */
static void tcp_recheck_allow(struct dp_server *s)
{
    const struct dp_policy *pol = dp_policy_enter(s->port.hz, &s->sh);
    for (uint32_t ci = 0; pol->n_allow && ci < DP_TCP_MAX_CONNS; ci++) {
        struct dp_conn *c = &s->conns[ci];
        if (c->fd < 0 || c->rd_eof || c->closing ||
            dp_allow_match(pol->allow, pol->n_allow, (const struct sockaddr *)&c->addr))
            continue;
        struct dp_peer p = { .conn = ci + 1, .conn_gen = c->gen };
        dp_stat_inc(&s->port.stats.rejected);
        if (c->n_live == 0)
            dp_port_error(&s->port, &p, 0, BWP_E_FORBIDDEN, "client address not allowed", false, false);
        port_end_peer(&s->port, &p);
        if (c->fd < 0)
            continue;
        c->rlen = 0;                  /* a partial frame will never be read: no frame timeout for it */
        c->skip = 0;
        c->skip_mac = false;
        c->partial_since = 0;
        if (c->n_live == 0) {         /* told; a client that does not read is not waited for */
            flush_conn(s, ci);
            if (c->fd >= 0 && c->wlen)
                conn_kill(s, ci);
        }
    }
    dp_policy_exit(s->port.hz);
}

/* At exit, what the connections' write buffers still hold goes out while their clients read,
 * DP_EXIT_FLUSH_MS at most (the drain ends when the last request has handed over its frames,
 * not when they have left: a client reading slower than the server writes would lose its tail). */
static void tcp_flush_all(struct dp_server *s)
{
    const uint64_t end = dp_mono_us() + 1000ull * DP_EXIT_FLUSH_MS;
    for (;;) {
        bool pending = false;
        for (uint32_t ci = 0; s->conns && ci < DP_TCP_MAX_CONNS; ci++) {
            struct dp_conn *c = &s->conns[ci];
            if (c->fd < 0 || !c->wlen)
                continue;
            tcp_drain_input(c->fd, DP_CLOSE_DRAIN_READS);   /* what a client still sends, meanwhile */
            flush_conn(s, ci);
            pending = pending || (c->fd >= 0 && c->wlen > 0);
        }
        if (!pending || dp_mono_us() >= end)
            return;
        struct timespec ts = { 0, 1000000 };   /* 1 ms: the clients read meanwhile */
        nanosleep(&ts, NULL);
    }
}

/* A connection whose frame has been arriving for longer than the frame timeout (a client that
 * stalled mid-frame, or one that trickles bytes to hold a slot) gets BAD_FRAME and is closed:
 * the stream cannot be resynchronised. Swept every DP_IDLE_WAIT_MS at most. */
static void partial_tick(struct dp_server *s, uint64_t now)
{
    if (now < s->next_partial_check)
        return;
    s->next_partial_check = now + 1000ull * DP_IDLE_WAIT_MS;
    const uint32_t gen = atomic_load_explicit(&s->sh.pol_gen, memory_order_acquire);   /* partner: policy_publish */
    if (gen != s->pol_seen) {
        s->pol_seen = gen;
        tcp_recheck_allow(s);
    }
    if (s->listen_paused_until && now >= s->listen_paused_until &&
        ep_mod(s->ep, s->tcp_fd, EPOLLIN, TAG_LISTEN) == 0)
        s->listen_paused_until = 0;
    if (s->spare_fd < 0 && s->tcp_fd >= 0)
        s->spare_fd = eventfd(0, EFD_CLOEXEC);
    for (uint32_t ci = 0; ci < DP_TCP_MAX_CONNS; ci++) {
        struct dp_conn *c = &s->conns[ci];
        if (c->fd < 0 && (c->rbuf || c->wbuf)) {   /* a closed connection's buffers go back here, */
            free(c->rbuf);                         /* outside any parse or write that used them */
            free(c->wbuf);
            c->rbuf = c->wbuf = NULL;
            continue;
        }
        if (c->fd >= 0 && c->rd_eof && c->n_live == 0 && c->wlen && c->want_out && c->stall_since &&
            now - c->stall_since >= s->frame_timeout_us) {
            conn_kill(s, ci);         /* ended, and its client has read nothing for a frame timeout */
            continue;
        }
        if (c->fd < 0 || c->closing || c->rd_eof || !c->partial_since || (c->rlen == 0 && c->skip == 0) ||
            now - c->partial_since < s->frame_timeout_us)
            continue;
        struct dp_peer p = { .conn = ci + 1, .conn_gen = c->gen };
        /* the request it names: a frame being received, or an oversize one whose answer waits
         * for its AUTH trailer; an oversize frame already answered (TOO_LARGE) names none */
        uint64_t rid = 0;
        bool request = false;
        if (c->skip == 0 && c->rlen >= BWP_HDR_SIZE && !memcmp(c->rbuf, "BWP1", 4)) {
            rid = bwp_rd64(c->rbuf + 16);
            request = dp_frame_is_generate(c->rbuf, c->rlen);
        } else if (c->skip && c->skip_mac) {
            rid = c->skip_rid;
            request = c->skip_gen;
        }
        dp_stat_inc(&s->port.stats.rejected);
        metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_RX, 1);
        metrics_dp_count(s->port.ms, METRICS_TCP, METRICS_MALFORMED, 1);
        dp_port_error(&s->port, &p, rid, BWP_E_BAD_FRAME, "frame not finished within the server's frame timeout; closing",
                      false, request);
        c->partial_since = 0;
        c->rlen = 0;
        c->skip = 0;
        c->skip_mac = false;
        c->closing = true;
        ep_mod(s->ep, c->fd, EPOLLOUT, TAG_CONN0 + ci);
        c->want_out = true;
        conn_mark_dirty(s, ci);
    }
}

static void drain_tick(struct dp_server *s, uint64_t now)
{
    /* acquire pairs with dp_server_stop's release */
    if (!s->draining && atomic_load_explicit(&s->stop, memory_order_acquire)) {
        s->draining = true;
        s->drain_start_us = now;
        atomic_store_explicit(&s->sh.draining, 1, memory_order_release);
    }
    if (!s->draining || atomic_load_explicit(&s->sh.shutdown_now, memory_order_relaxed))
        return;
    const struct dp_policy *pol = dp_policy_enter(s->port.hz, &s->sh);
    uint64_t grace_us = 1000ull * pol->shutdown_grace_ms;
    dp_policy_exit(s->port.hz);
    if (now - s->drain_start_us >= grace_us) {
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
    uint64_t last_activity = 0;
    s->port.ms = metrics_shard_claim(s->sh.metrics, "io");
    s->port.mt = METRICS_UDP;
    int rc = pthread_create(&s->decoder, NULL, dp_decoder_main, &s->sh);
    if (rc)
        return bora_errf(err, -rc, "dataplane: cannot start the decoder thread: %s", strerror(rc));
    if (s->dpdk && (rc = dp_dpdk_start(s->dpdk, err)) < 0) {
        atomic_store_explicit(&s->sh.quit, 1, memory_order_release);
        pthread_join(s->decoder, NULL);
        return rc;
    }
    for (;;) {
        bool busy = dp_port_responses(&s->port);
        flush_dirty(s);
        flush_udp(s);
        int timeout = 0;
        /* requests in flight and recent activity: poll without sleeping for a while */
        bool spin = dp_port_live(&s->port) > 0 && dp_mono_us() - last_activity < DP_IO_SPIN_US;
        if (busy)
            last_activity = dp_mono_us();
        if (!busy && !spin) {
            atomic_store_explicit(&s->port.sleeping, 1, memory_order_relaxed);
            atomic_thread_fence(memory_order_seq_cst);    /* pairs with io_kick's fence */
            if (ring_count(&s->port.resp) == 0)
                timeout = wait_timeout_ms(s);
        }
        int n = epoll_wait(s->ep, evs, EV_BURST, timeout);
        atomic_store_explicit(&s->port.sleeping, 0, memory_order_relaxed);
        if (n > 0)
            last_activity = dp_mono_us();
        if (n < 0 && errno != EINTR) {
            rc = bora_errf(err, -errno, "dataplane: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == TAG_EFD) {
                uint64_t v;
                ssize_t r = read(s->io_efd, &v, sizeof v);
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
        dp_port_tick(&s->port, now);
        drain_tick(s, now);
        partial_tick(s, now);
        if (s->draining && dp_port_live(&s->port) == 0 && ring_count(&s->port.resp) == 0 &&
            dp_dpdk_live(s->dpdk) == 0) {
            dp_port_responses(&s->port);
            flush_dirty(s);
        flush_udp(s);
            rc = 0;
            break;
        }
    }
    atomic_store_explicit(&s->sh.quit, 1, memory_order_release);  /* pairs with the decoder's acquire */
    uint64_t one = 1;
    ssize_t w = write(s->sh.dec_efd, &one, sizeof one);
    (void)w;
    pthread_join(s->decoder, NULL);
    dp_dpdk_stop(s->dpdk);               /* after the decoder: it sends what is left */
    dp_port_responses(&s->port);
    flush_dirty(s);
    flush_udp(s);
    tcp_flush_all(s);
    return rc;
}
