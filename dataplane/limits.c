/* limits.c — allow-list matching and the per-client token buckets of limits.h. */
#include "dataplane/limits.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* The address as 16 bytes (IPv4 as ::ffff:a.b.c.d) and whether it is IPv4. */
static bool addr_bytes(const struct sockaddr *sa, uint8_t out[16], bool *v4)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (sa->sa_family == AF_INET) {
        memcpy(out, mapped, 12);
        memcpy(out + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *v4 = true;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        *v4 = memcmp(out, mapped, 12) == 0;
        return true;
    }
    return false;
}

static bool prefix_eq(const uint8_t *a, const uint8_t *b, uint32_t bits)
{
    uint32_t full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full))
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

bool dp_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family == AF_INET && b->sa_family == AF_INET)   /* the common case, without copies */
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    uint8_t x[16], y[16];
    bool v4;
    return addr_bytes(a, x, &v4) && addr_bytes(b, y, &v4) && !memcmp(x, y, 16);
}

bool dp_allow_match(const struct dp_cidr *allow, uint32_t n, const struct sockaddr *sa)
{
    if (n == 0)
        return true;
    uint8_t ip[16];
    bool v4;
    if (!addr_bytes(sa, ip, &v4))
        return false;
    for (uint32_t i = 0; i < n; i++) {
        const struct dp_cidr *c = &allow[i];
        if (c->family == AF_INET && v4 && prefix_eq(ip + 12, c->addr, c->prefix))
            return true;
        if (c->family == AF_INET6 && prefix_eq(ip, c->addr, c->prefix))
            return true;
    }
    return false;
}

int dp_rate_init(struct dp_rate *r, uint32_t per_s, struct bora_err *err)
{
    r->per_s = per_s;              /* the table exists even when off: the rate is live */
    r->slots = calloc(DP_RATE_SLOTS, sizeof *r->slots);
    if (!r->slots)
        return bora_errf(err, -ENOMEM, "dataplane: cannot allocate the rate-limit table");
    return 0;
}

void dp_rate_fini(struct dp_rate *r)
{
    free(r->slots);
    r->slots = NULL;
}

static uint32_t ip_hash(const uint8_t ip[16])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 16; i++)
        h = (h ^ ip[i]) * 0x100000001b3ull;
    return (uint32_t)(h ^ (h >> 32));
}

bool dp_rate_take(struct dp_rate *r, const struct sockaddr *sa, uint64_t now_us)
{
    if (!r->per_s)
        return true;
    uint8_t ip[16];
    bool v4;
    if (!addr_bytes(sa, ip, &v4))
        return true;
    enum { PROBE = 8 };
    uint32_t at = ip_hash(ip) & (DP_RATE_SLOTS - 1);
    struct dp_rate_slot *slot = NULL, *oldest = NULL;
    for (uint32_t k = 0; k < PROBE; k++) {
        struct dp_rate_slot *s = &r->slots[(at + k) & (DP_RATE_SLOTS - 1)];
        if (s->last_us && !memcmp(s->ip, ip, 16)) {
            slot = s;
            break;
        }
        if (!oldest || s->last_us < oldest->last_us)
            oldest = s;
    }
    if (!slot) {                    /* new client (or an evicted one): a full bucket */
        slot = oldest;
        memcpy(slot->ip, ip, 16);
        slot->tokens = r->per_s;
        slot->last_us = now_us ? now_us : 1;
    }
    double refill = (double)(now_us - slot->last_us) * r->per_s / 1e6;
    slot->tokens = slot->tokens + refill > r->per_s ? r->per_s : slot->tokens + refill;
    slot->last_us = now_us ? now_us : 1;
    if (slot->tokens < 1.0)
        return false;
    slot->tokens -= 1.0;
    return true;
}
