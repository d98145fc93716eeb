/* limits.h — per-client admission for the dataplane: the allow list (CIDRs → FORBIDDEN) and a
 * token-bucket request rate per client address (→ RATE_LIMITED), in fixed tables with no
 * allocation after init. Thread: one transport thread owns a struct dp_rate. */
#ifndef BORA_DATAPLANE_LIMITS_H
#define BORA_DATAPLANE_LIMITS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/err.h"

#define DP_RATE_SLOTS 4096          /* clients tracked at once (least recent evicted) */

/* Addresses whose first `prefix` bits equal addr's (network byte order, IPv4 in addr[0..3]). */
struct dp_cidr {
    int family;                     /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint32_t prefix;
};

/* True when sa matches one of allow[0..n) (an IPv4-mapped IPv6 address matches IPv4 CIDRs);
 * n == 0 allows everyone. Pure. */
bool dp_allow_match(const struct dp_cidr *allow, uint32_t n, const struct sockaddr *sa);

/* True when a and b are the same client address, whatever their ports (an IPv4 address and its
 * IPv4-mapped IPv6 form are the same); false for any other family. Pure. */
bool dp_same_host(const struct sockaddr *a, const struct sockaddr *b);

struct dp_rate_slot {
    uint8_t ip[16];
    uint64_t last_us;               /* 0 = empty */
    double tokens;
};
struct dp_rate {
    uint32_t per_s;                 /* requests per second per client; 0 = off */
    struct dp_rate_slot *slots;     /* (DP_RATE_SLOTS) */
};

/* per_s 0 disables; the table is allocated either way, so the owner may change per_s later
 * (a live config change) without allocating. Errors: -ENOMEM. */
int dp_rate_init(struct dp_rate *r, uint32_t per_s, struct bora_err *err);
void dp_rate_fini(struct dp_rate *r);
/* Takes one request from sa's bucket (capacity per_s, refilled per_s a second): true if
 * allowed, false when the client is over its rate. */
bool dp_rate_take(struct dp_rate *r, const struct sockaddr *sa, uint64_t now_us);

#endif
