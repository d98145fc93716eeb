/* server.h — the BWP/1 appliance server over kernel sockets: one io thread (epoll) serving a
 * UDP socket and a TCP listener with many interleaved requests per connection, one decoder
 * thread running a generator one request at a time, joined by an MP/SC request ring and an
 * SP/SC response ring. Implements protocol.md: RESEND retention, DUPLICATE, BUSY, PONG,
 * CANCEL, deadlines, AUTH, FORBIDDEN (allow list, checked first on every frame that names a
 * request), RATE_LIMITED (per client address, checked on GENERATE after DUPLICATE and before
 * SHUTTING_DOWN/BUSY), and the SIGTERM drain.
 * Budget (DESIGN.md): parse + enqueue + response ≤ 5 µs of io-thread work per request. */
#ifndef BORA_DATAPLANE_SERVER_H
#define BORA_DATAPLANE_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"
#include "dataplane/bwp.h"
#include "dataplane/dpdk_port.h"
#include "dataplane/generator.h"
#include "dataplane/limits.h"

#define DP_ALLOW_MAX 64                /* CIDRs in an allow list */

struct dp_config {
    const char *udp;               /* "HOST:PORT" to bind, NULL or "" = no UDP (port 0: any) */
    const char *tcp;               /* "HOST:PORT" to listen, NULL or "" = no TCP */
    uint32_t queue_depth;          /* requests waiting (not decoding) before BUSY, ≥ 1 */
    uint32_t max_prompt_bytes;     /* prompt_len limit (TOO_LARGE) */
    uint32_t max_tokens;           /* max_tokens limit (BAD_PARAMS) */
    uint32_t request_timeout_ms;   /* deadline when a GENERATE says 0 */
    uint32_t shutdown_grace_ms;    /* drain: time queued/running requests get to finish */
    const struct bwp_key *key;     /* pre-shared AUTH key, NULL = none */
    const struct dp_cidr *allow;   /* clients allowed (others get FORBIDDEN); n_allow 0 = all */
    uint32_t n_allow;              /* ≤ DP_ALLOW_MAX */
    uint32_t rate_limit;           /* GENERATEs per second per client address; 0 = off */
    uint32_t max_conns_per_addr;   /* TCP connections open from one client address (others get
                                    * ERROR BUSY, request_id 0, at connect); 0 = off */
    const struct dp_dpdk_config *dpdk;  /* a DPDK port besides the sockets; NULL = none */
    struct metrics *metrics;       /* console metrics registry (outlives the server), NULL = none */
    uint32_t tcp_frame_timeout_ms; /* a TCP frame must arrive whole this long after its first
                                    * byte, or BAD_FRAME and the connection closes; 0 = default
                                    * (DP_TCP_FRAME_TIMEOUT_MS) */
};

/* Live counters (read by snapshot; each written by one thread). */
struct dp_stats {
    uint64_t rx_frames, tx_frames, accepted, rejected, done, errors, resent, tcp_conns;
};

struct dp_server;

#define DP_LIST_MAX 256                /* requests one dp_server_requests answer lists */

/* One request the decoder holds, as dp_server_requests reports it. */
struct dp_req_info {
    uint64_t rid;                      /* request_id as the client chose it */
    uint8_t transport;                 /* enum metrics_transport: UDP, TCP, DPDK */
    bool running;                      /* false = queued */
    uint32_t conn;                     /* TCP: connection index + 1 */
    struct sockaddr_storage from;      /* the client's address (family 0 = unknown) */
    uint64_t age_us;                   /* since ACCEPTED */
    uint32_t prompt_tokens, completion_tokens;
};

/* Binds the sockets and allocates every pool, ring and table (no allocation afterwards
 * except per TCP connection buffers at accept). gen is borrowed and used by the decoder
 * thread only. Errors: -EINVAL (bad address or limit; message names it), -EADDRINUSE and
 * other socket errors (message names the address), -ENOMEM. Caller owns *out. */
int dp_server_open(struct dp_server **out, const struct dp_config *cfg, struct generator *gen,
                   struct bora_err *err);
/* Starts the decoder thread and runs the io loop in the calling thread until a stop request
 * has drained (rule 16). Returns 0, or a negative errno on a fatal socket error. */
int dp_server_run(struct dp_server *s, struct bora_err *err);
/* Asks the server to drain and stop. Async-signal-safe; any thread. */
void dp_server_stop(struct dp_server *s);
/* Frees everything; the server must not be running. */
void dp_server_close(struct dp_server *s);
/* Ports actually bound (useful when the config asked for port 0); 0 when off. */
int dp_server_udp_port(const struct dp_server *s);
int dp_server_tcp_port(const struct dp_server *s);
/* Console drain/resume: while paused, new GENERATEs get SHUTTING_DOWN and everything
 * accepted goes on; unlike dp_server_stop, the server keeps running. Any thread. */
void dp_server_pause(struct dp_server *s, bool paused);
bool dp_server_paused(const struct dp_server *s);
/* Whether dp_server_stop was called (a signal or the console's shutdown): draining to exit. Any thread. */
bool dp_server_stopping(const struct dp_server *s);
/* Live policy (config keys marked live): max_prompt_bytes, max_tokens, request_timeout_ms,
 * shutdown_grace_ms, allow/n_allow and rate_limit of cfg are applied to every frame from now on,
 * max_conns_per_addr to every TCP connection that arrives from now on (other fields are ignored). max_prompt_bytes may not exceed the start-up value (buffers are
 * sized by it). Console threads only (it waits for in-flight frames to leave the old policy).
 * Errors: -EINVAL with a message naming the value. */
int dp_server_set_policy(struct dp_server *s, const struct dp_config *cfg, struct bora_err *err);
/* Requests waiting (not decoding) and decoding now (0 or 1). Any thread, no waiting. */
void dp_server_counts(const struct dp_server *s, uint32_t *queued, uint32_t *running);
/* The requests the decoder holds, running one first then the queue in order: up to cap into
 * out, *total = how many there are. The decoder answers between steps. Console threads only.
 * Errors: -ETIMEDOUT (no answer within DP_CTL_WAIT_MS), -EBUSY (an earlier timed-out request
 * is still unanswered), -ESHUTDOWN (decoder gone). */
int dp_server_requests(struct dp_server *s, struct dp_req_info *out, size_t cap, uint32_t *total,
                       struct bora_err *err);
/* Cancels every running or queued request whose request_id is rid, whatever its client (each
 * ends with DONE(cancelled), as a client CANCEL: rule 13); *n = how many. Console threads only.
 * Errors: as dp_server_requests. */
int dp_server_cancel(struct dp_server *s, uint64_t rid, uint32_t *n, struct bora_err *err);
/* Swaps the decoder's generator for *g at a request boundary: the running request finishes
 * first, queued ones wait (and are then decoded by the new one); *g receives the old
 * generator, for the caller to close. The new one must accept the same prompts (same model
 * directory). Console threads only; waits as long as the running request takes.
 * Errors: -ESHUTDOWN (decoder gone; *g unchanged). */
int dp_server_swap_generator(struct dp_server *s, struct generator *g, struct bora_err *err);
/* Snapshot of the kernel sockets' counters (UDP and TCP; the DPDK port keeps its own); any thread,
 * while the server runs too (each counter whole, the set as of a moment or so ago). */
void dp_server_stats(const struct dp_server *s, struct dp_stats *out);
/* The DPDK port, or NULL when none is configured. */
const struct dp_dpdk *dp_server_dpdk(const struct dp_server *s);

/* Parses "HOST:PORT" / "[V6]:PORT" into a socket address. Pure; -EINVAL with a message. */
struct sockaddr_storage;
int dp_addr_parse(const char *s, struct sockaddr_storage *out, unsigned *len, struct bora_err *err);

#endif
