/* server_int.h — internals shared by server.c (kernel sockets' io thread), dpdk_port.c (its poll
 * thread), port.c (what every transport does with frames), decoder.c (the decoder thread) and
 * flows.c (request flow table and RESEND frame log). Not a public API. */
#ifndef BORA_DATAPLANE_SERVER_INT_H
#define BORA_DATAPLANE_SERVER_INT_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "dataplane/bwp.h"
#include "dataplane/generator.h"
#include "dataplane/limits.h"
#include "dataplane/pool.h"
#include "dataplane/ring.h"
#include "dataplane/server.h"
#include "console/metrics.h"

/* Tunables (units in the names). */
#define DP_FRAME_SLOT        384        /* bytes of one server frame in a response event */
#define DP_RESP_RING_SLOTS   4096       /* response events between the decoder and a transport */
#define DP_POOL_SLACK        256        /* request objects beyond queue_depth + 1 (in transit) */
#define DP_RETAIN_FLOWS      8192       /* finished UDP requests kept for RESEND */
#define DP_RETAIN_US         5000000ull /* 5 s after DONE (rule 14) */
#define DP_LOG_BYTES         (16u << 20)/* RESEND frame log */
#define DP_REPLAY_SLOTS      262144     /* AUTH replay window entries (8 MiB): 30 s of ≈ 5,000
                                         * authenticated frames a second before "window full" */
#define DP_TCP_MAX_CONNS     1024
#define DP_TCP_WBUF_BYTES    (1u << 20) /* per connection; a client that lets it fill is dropped */
#define DP_UDP_BATCH         32         /* datagrams per recvmmsg */
#define DP_IDLE_WAIT_MS      100        /* io thread housekeeping period when idle */
#define DP_RESEND_PER_S      4096       /* frames RESEND may send again to one client address a second
                                         * (and at once): a forged source cannot turn 56-byte RESENDs
                                         * into an unbounded stream at a victim (UDP reflection) */
#define DP_FD_EXTRA          256        /* descriptors beyond the TCP slots: sockets, model files, console */
#define DP_FD_WARN_MS        10000      /* out of descriptors: one warning per this period */
#define DP_LISTEN_PAUSE_MS   100        /* … and no way to accept-and-close: the listener rests this long */
#define DP_ACCEPT_BURST      64         /* connections accepted (or refused) per wake-up of the listener:
                                         * a connect flood cannot keep the io thread from the others */
#define DP_CLOSE_DRAIN_READS 16         /* 4 KiB reads of unread input before a TCP close */
#define DP_EXIT_FLUSH_MS     2000       /* at exit, what write buffers still hold goes out this long at most */
#define DP_TCP_FRAME_TIMEOUT_MS 30000u  /* a frame begun and not finished this long: BAD_FRAME, close */
#define DP_DECODER_IDLE_MS   50
#define DP_IO_SPIN_US        50         /* io thread polls (no sleep) this long after activity */
#define DP_DECODER_SPIN_US   50         /* decoder polls the intake ring before parking */
#define DP_POLICY_READERS    4          /* transport threads that read the live policy */
#define DP_CTL_WAIT_MS       10000      /* console: longest wait for the decoder's answer */

enum dp_cancel { DP_RUN = 0, DP_CANCELLED = 1, DP_SILENT = 2 };

/* A peer: UDP address, or TCP connection (conn index + 1, generation). */
struct dp_peer {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } a;
    socklen_t alen;                /* 0 for TCP */
    uint32_t conn;                 /* TCP: index + 1; 0 for UDP */
    uint32_t conn_gen;
};

/* One request: a pool object of its port, owned by the transport thread until enqueued, then by
 * the decoder until its last response event, then by the transport, which returns it. */
struct dp_req {
    /* written by the io thread before enqueue; read-only afterwards */
    uint64_t rid;
    struct dp_port *port;          /* the transport that owns it (and gets its frames) */
    uint32_t flow;                 /* flow index in port->flows */
    struct gen_request rq;         /* rq.prompt points at prompt[] below */
    uint64_t t_accept_us;
    uint64_t deadline_us;          /* absolute */
    bool want_ids;
    uint8_t transport;             /* enum metrics_transport (TCP for a TCP peer) */
    uint32_t conn;                 /* TCP: connection index + 1; 0 otherwise */
    union {                        /* the client's address (console `requests`) */
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } from;
    /* cancel: stored (release) by the io thread, loaded (acquire) by the decoder every step */
    _Atomic uint32_t cancel;       /* enum dp_cancel */
    /* decoder-owned */
    uint32_t seq;                  /* next frame's seq */
    uint32_t prompt_tokens, cached_tokens, completion_tokens;
    uint64_t t_start_us, t_first_us;
    alignas(8) uint8_t prompt[];   /* (max_prompt_bytes) */
};

#define DP_EV_LAST 0x1u            /* the request's final frame: the io thread frees it */

/* One response event (decoder → io thread): a built frame for req's peer. */
struct dp_event {
    struct dp_req *req;
    uint32_t flags;                /* DP_EV_* */
    uint32_t len;                  /* frame bytes (0: nothing to send, e.g. silent cancel) */
    uint8_t frame[DP_FRAME_SLOT];
};

enum dp_flow_state { DP_FLOW_FREE = 0, DP_FLOW_LIVE, DP_FLOW_DONE };

/* A request as the io thread tracks it: in flight (LIVE) or finished and retained (DONE). */
struct dp_flow {
    struct dp_peer peer;
    uint64_t rid;
    uint32_t hnext;                /* hash chain: flow index + 1, 0 = end */
    uint32_t lnext, lprev;         /* done FIFO (index + 1) */
    uint8_t state;
    struct dp_req *req;            /* LIVE */
    uint64_t done_us;
    uint32_t n_frames;             /* frames sent so far (next seq) */
    uint64_t pos[BWP_RESEND_KEEP]; /* log position of frame seq at pos[seq % KEEP] (UDP) */
};

/* io-thread state of flows and retained frames. */
struct dp_flows {
    struct dp_flow *f;             /* (n) */
    uint32_t n, n_free;
    uint32_t *free_stack;          /* (n) */
    uint32_t *buckets;             /* (n_buckets) flow index + 1 */
    uint32_t n_buckets;            /* power of two */
    uint32_t done_head, done_tail; /* FIFO of DONE flows, oldest first (index + 1) */
    uint8_t *log;                  /* (DP_LOG_BYTES) frames as sent */
    uint64_t log_head;             /* bytes ever written (monotonic) */
};

int dp_flows_init(struct dp_flows *t, uint32_t n, struct bora_err *err);
void dp_flows_fini(struct dp_flows *t);
/* Finds the flow of (peer, rid), any state but FREE; NULL if none. */
struct dp_flow *dp_flows_find(struct dp_flows *t, const struct dp_peer *p, uint64_t rid);
/* New LIVE flow (an existing DONE flow of the same key must have been released). Evicts the
 * oldest DONE flow when none is free; NULL when every flow is LIVE. */
struct dp_flow *dp_flows_add(struct dp_flows *t, const struct dp_peer *p, uint64_t rid);
/* LIVE → DONE (kept for RESEND until now + DP_RETAIN_US), or freed when keep is false. */
void dp_flows_done(struct dp_flows *t, struct dp_flow *f, uint64_t now_us, bool keep);
void dp_flows_release(struct dp_flows *t, struct dp_flow *f);
/* Frees DONE flows older than DP_RETAIN_US. */
void dp_flows_expire(struct dp_flows *t, uint64_t now_us);
/* Appends a sent frame to the log as the flow's next seq (UDP). */
void dp_flows_log(struct dp_flows *t, struct dp_flow *f, const uint8_t *frame, uint32_t len);
/* Frame seq of f if still retained: pointer and *len; NULL otherwise. */
const uint8_t *dp_flows_frame(const struct dp_flows *t, const struct dp_flow *f, uint32_t seq,
                              uint32_t *len);
static inline uint32_t dp_flows_index(const struct dp_flows *t, const struct dp_flow *f)
{
    return (uint32_t)(f - t->f);
}

/* The live policy every transport applies (config keys marked live). A published policy is
 * immutable; dp_server_set_policy writes the spare one of two and swaps the pointer (RCU
 * style), then waits until no reader's hazard names the old one before it may be reused. */
struct dp_policy {
    struct bwp_limits lim;         /* max_prompt_bytes ≤ the start-up one (buffers), max_tokens, vocab */
    struct dp_cidr allow[DP_ALLOW_MAX];
    uint32_t n_allow;              /* 0 = everyone */
    uint32_t request_timeout_ms;
    uint32_t rate_limit;           /* GENERATEs per second per client address; 0 = off */
    uint32_t max_conns_per_addr;   /* TCP connections from one address; 0 = off (new ones only) */
    uint32_t shutdown_grace_ms;
};

/* One reader's hazard: the policy it is using now, or NULL (own cache line). */
struct dp_hazard {
    alignas(64) _Atomic(const struct dp_policy *) p;
};

/* Console → decoder requests, served between decode steps (decoder.c). Console threads
 * serialise on sh->ctl_lock / sh->swap_lock (the decoder never locks); arguments and answers
 * are written before the release store of a *_seq / *_done and read after the partner's
 * acquire. A swap has its own slot: it waits for the running request, lists and cancels don't. */
enum dp_ctl_op { DP_CTL_LIST = 1, DP_CTL_CANCEL };

struct dp_ctl {
    alignas(64) _Atomic uint32_t req_seq;   /* console: release after writing args; decoder: acquire */
    alignas(64) _Atomic uint32_t done_seq;  /* decoder: release after answering; console: acquire */
    alignas(64) _Atomic uint32_t swap_seq;  /* console: release after setting swap_gen; decoder: acquire */
    alignas(64) _Atomic uint32_t swap_done; /* decoder: release after swapping; console: acquire */
    _Atomic uint32_t closed;                /* decoder: seq_cst when it exits; console: seq_cst */
    /* arguments */
    int op;                                 /* enum dp_ctl_op */
    uint64_t rid;                           /* CANCEL */
    struct generator *swap_gen;             /* the new generator; receives the old one */
    /* answers */
    int rc;
    uint32_t total;                         /* LIST: requests held; CANCEL: requests cancelled */
    struct dp_req_info *list;               /* (DP_LIST_MAX) LIST answer */
};

/* Shared by the transport threads and the decoder thread. */
struct dp_shared {
    struct ring intake;            /* struct dp_req * (MP/SC): transports → decoder */
    /* n_held: requests accepted and not yet ended (waiting, about to start, or decoding), at
     * most queue_depth + 1: one decodes (or starts next) and queue_depth wait (rule 11). A
     * transport reserves a place with a CAS (acq_rel) before enqueueing; the decoder releases
     * it (fetch_sub, release) as it sends the request's last frame. Waiting = n_held - 1. */
    alignas(64) _Atomic uint32_t n_held;
    alignas(64) _Atomic uint32_t draining;     /* io → decoder: SIGTERM seen (release/acquire) */
    _Atomic uint32_t paused;                   /* console drain: release by dp_server_pause, acquire by ports */
    _Atomic uint32_t shutdown_now;             /* io → decoder: grace over, end everything */
    _Atomic uint32_t quit;                     /* io → decoder: exit the thread */
    alignas(64) _Atomic uint32_t dec_sleeping; /* decoder parked (Dekker with intake) */
    int dec_efd;                               /* eventfd waking the decoder */
    uint32_t queue_depth;
    const struct bwp_key *key;                 /* NULL = no AUTH */
    struct generator *gen;                     /* decoder's (swapped by DP_CTL_SWAP) */
    _Atomic uint32_t gen_loaded;               /* PONG bit 0: decoder release, ports relaxed */
    alignas(64) _Atomic uint32_t n_running;    /* 0/1 decoding now: decoder relaxed store, console relaxed load */
    struct dp_req **fifo;                      /* (queue_depth + 1, n_held's bound) decoder's waiting list */
    /* start-up limits: buffer sizes (pool objects, TCP read buffers) and the AUTH key */
    struct bwp_limits lim;
    /* live policy: published by dp_server_set_policy (release), read through dp_policy_enter */
    alignas(64) _Atomic(const struct dp_policy *) policy;
    _Atomic uint32_t pol_gen;      /* bumped after each publish (release); the io thread's sweep
                                    * re-checks open TCP connections against a new allow list */
    struct dp_policy pol_slot[2];
    struct dp_hazard hazard[DP_POLICY_READERS];
    uint32_t n_readers;                        /* hazards handed out (at open, one thread) */
    struct dp_ctl ctl;
    /* Console threads only; the decoder and the transports never lock. Order: swap_lock, then
     * pol_lock (a swap publishes the new vocabulary); pol_lock holders take no other lock. */
    pthread_mutex_t pol_lock;                  /* one policy writer at a time */
    pthread_mutex_t ctl_lock;                  /* one list/cancel at a time */
    pthread_mutex_t swap_lock;                 /* one generator swap at a time */
    struct metrics *metrics;                   /* console registry; each thread claims a shard */
};

/* Requests waiting (rule 11: not the one decoding or about to start), for PONG and the console
 * (relaxed: a figure; partners: the transports' CAS, the decoder's release). */
static inline uint32_t dp_waiting(const struct dp_shared *sh)
{
    const uint32_t n = atomic_load_explicit(&sh->n_held, memory_order_relaxed);
    return n > 0 ? n - 1 : 0;
}

/* The policy for one frame: publishes it as this reader's hazard, re-checking that it is still
 * current (seq_cst store then load, partner: dp_server_set_policy's seq_cst store and hazard
 * scan). Call dp_policy_exit when done with it; never keep it across frames. */
static inline const struct dp_policy *dp_policy_enter(struct dp_hazard *h, struct dp_shared *sh)
{
    const struct dp_policy *pol = atomic_load_explicit(&sh->policy, memory_order_acquire);
    for (;;) {
        atomic_store_explicit(&h->p, pol, memory_order_seq_cst);
        const struct dp_policy *now = atomic_load_explicit(&sh->policy, memory_order_seq_cst);
        if (now == pol)
            return pol;
        pol = now;
    }
}
static inline void dp_policy_exit(struct dp_hazard *h)
{
    /* release: our reads of the policy happen before the writer sees NULL (acquire scan) */
    atomic_store_explicit(&h->p, NULL, memory_order_release);
}

/* The server's shared state (control.c reaches it through this). */
struct dp_shared *dp_server_shared(struct dp_server *s);
/* The live fields of cfg as a policy; base gives the rest of the limits (key, vocabulary). */
void dp_policy_fill(struct dp_policy *pol, const struct dp_config *cfg, const struct bwp_limits *base);

/* ---- a transport's request handling (port.c), shared by kernel sockets and DPDK ---- */

struct dp_port;
struct dp_port_ops {
    /* Sends (or queues) one frame to peer. */
    void (*send)(struct dp_port *p, const struct dp_peer *peer, const uint8_t *frame, size_t len);
    /* A request of peer was accepted into the intake ring. May be NULL. */
    void (*request_started)(struct dp_port *p, const struct dp_peer *peer);
    /* A request of peer ended (its last frame was handed to send). May be NULL. */
    void (*request_ended)(struct dp_port *p, const struct dp_peer *peer);
    /* A frame asked for the connection to be closed (TCP rules 2, 3). May be NULL. */
    void (*close_peer)(struct dp_port *p, const struct dp_peer *peer);
    /* The connection is to end as if half-closed: no more frames are read from it, its live
     * requests finish, then it closes (FORBIDDEN). May be NULL. */
    void (*end_peer)(struct dp_port *p, const struct dp_peer *peer);
};

#define DP_PORT_EV_BURST 64
#define DP_PORT_TX_CAP   (BWP_HDR_SIZE + 4 + 256 + BWP_TRAILER_SIZE)

/* A counter of struct dp_stats: one writer (the thread that owns it), read by any thread through
 * dp_server_stats. Relaxed atomic load and store, so a reader sees whole values (plain moves on
 * x86-64: no locked instruction on the hot path). */
static inline void dp_stat_inc(uint64_t *c)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* One transport's requests: its pool, flows, replay window, rate buckets, and the response
 * ring the decoder fills for it. Owned by one transport thread; the decoder only pushes to
 * resp and reads sleeping/efd. */
struct dp_port {
    const struct dp_port_ops *ops;
    void *owner;                   /* the transport */
    struct dp_shared *sh;
    struct dp_hazard *hz;          /* this thread's policy hazard (in sh) */
    struct pool reqs;              /* struct dp_req + prompt */
    struct dp_flows flows;
    struct bwp_replay replay;
    struct bwp_replay_slot *replay_slots;
    struct dp_rate rate;
    struct dp_rate resend_rate;    /* DP_RESEND_PER_S frames per client address */
    struct ring resp;              /* struct dp_event (SP/SC): decoder → this transport */
    /* sleeping: set by the transport before it blocks (Dekker with resp, see io_kick) */
    alignas(64) _Atomic uint32_t sleeping;
    int efd;                       /* eventfd that wakes the transport; -1 = it polls */
    alignas(64) _Atomic uint32_t n_live;   /* requests in flight (written by the owner) */
    struct dp_stats stats;
    struct metrics_shard *ms;      /* owner thread's console metrics shard (NULL = none) */
    enum metrics_transport mt;     /* METRICS_UDP for kernel sockets (TCP peers counted as TCP), METRICS_DPDK */
    uint8_t tx[DP_PORT_TX_CAP];
    struct dp_event evs[DP_PORT_EV_BURST];
};

int dp_port_init(struct dp_port *p, struct dp_shared *sh, const struct dp_port_ops *ops, void *owner,
                 int efd, struct bora_err *err);
void dp_port_fini(struct dp_port *p);
/* Handles one client frame from peer (tcp: a whole frame from the stream); from is the
 * client's address (allow list, rate limit). */
void dp_port_frame(struct dp_port *p, const struct dp_peer *peer, const struct sockaddr *from,
                   const uint8_t *buf, size_t n);
/* Sends an ERROR that concerns only one frame (seq 0, not retained). `request`: it answers a
 * GENERATE, which it refuses (counted as a request that ended in this error); otherwise it
 * answers a frame that is not a request (CANCEL, PING, RESEND, DUPLICATE, unparseable bytes),
 * counted under its code only. */
void dp_port_error(struct dp_port *p, const struct dp_peer *peer, uint64_t rid, uint16_t code,
                   const char *msg, bool no_trailer, bool request);
/* The n bytes at buf start a BWP/1 GENERATE header (magic and type; nothing else checked). */
static inline bool dp_frame_is_generate(const uint8_t *buf, size_t n)
{
    return n > 4 && !memcmp(buf, "BWP1", 4) && buf[4] == BWP_GENERATE;
}
/* Sends what the decoder put on the response ring; true if there was anything. */
bool dp_port_responses(struct dp_port *p);
/* Silently cancels every live request of a TCP connection (rule 15). */
void dp_port_cancel_conn(struct dp_port *p, uint32_t conn, uint32_t conn_gen);
/* The AUTH replay window's name for a peer. */
uint64_t dp_peer_key(const struct dp_peer *peer);
/* Frees retained flows past their time. */
void dp_port_tick(struct dp_port *p, uint64_t now_us);
static inline uint32_t dp_port_live(const struct dp_port *p)
{
    return atomic_load_explicit(&p->n_live, memory_order_relaxed);
}

/* Decoder thread body (decoder.c); arg is struct dp_shared *. */
void *dp_decoder_main(void *arg);
/* Wakes the decoder if it is parked (called by transports after enqueueing). */
void dp_decoder_kick(struct dp_shared *sh);

uint64_t dp_now_us(void);          /* CLOCK_REALTIME µs (the AUTH clock; vDSO, no syscall) */
uint64_t dp_mono_us(void);         /* CLOCK_MONOTONIC µs */

#endif
