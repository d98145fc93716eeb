/* flows.c — the io thread's table of requests keyed by (peer, request_id): in flight (for
 * DUPLICATE and CANCEL) or finished and retained 5 s (for RESEND), plus the byte log of sent
 * UDP frames that RESEND replays. Fixed sizes, allocated once; io thread only. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/touch.h"
#include "dataplane/server_int.h"

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t peer_hash(const struct dp_peer *p)
{
    if (p->conn)
        return mix64((uint64_t)p->conn << 32 | p->conn_gen);
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t *b = (const uint8_t *)&p->a;
    for (socklen_t i = 0; i < p->alen; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static bool peer_eq(const struct dp_peer *x, const struct dp_peer *y)
{
    if (x->conn || y->conn)
        return x->conn == y->conn && x->conn_gen == y->conn_gen;
    return x->alen == y->alen && memcmp(&x->a, &y->a, x->alen) == 0;
}

static uint32_t bucket_of(const struct dp_flows *t, const struct dp_peer *p, uint64_t rid)
{
    return (uint32_t)mix64(peer_hash(p) ^ rid) & (t->n_buckets - 1);
}

int dp_flows_init(struct dp_flows *t, uint32_t n, struct bora_err *err)
{
    memset(t, 0, sizeof *t);
    t->n_buckets = 1;
    while (t->n_buckets < 2 * n)
        t->n_buckets <<= 1;
    t->f = calloc(n, sizeof *t->f);
    t->free_stack = malloc(sizeof *t->free_stack * n);
    t->buckets = calloc(t->n_buckets, sizeof *t->buckets);
    t->log = malloc(DP_LOG_BYTES);
    if (!t->f || !t->free_stack || !t->buckets || !t->log) {
        dp_flows_fini(t);
        return bora_errf(err, -ENOMEM, "dataplane: cannot allocate the flow table (%u flows)", n);
    }
    /* every page resident now, so the resident set is reached at start and stays flat while serving */
    bora_fault_in(t->f, sizeof *t->f * n);
    bora_fault_in(t->log, DP_LOG_BYTES);
    t->n = n;
    for (uint32_t i = 0; i < n; i++)
        t->free_stack[i] = n - 1 - i;
    t->n_free = n;
    return 0;
}

void dp_flows_fini(struct dp_flows *t)
{
    free(t->f);
    free(t->free_stack);
    free(t->buckets);
    free(t->log);
    memset(t, 0, sizeof *t);
}

struct dp_flow *dp_flows_find(struct dp_flows *t, const struct dp_peer *p, uint64_t rid)
{
    for (uint32_t i = t->buckets[bucket_of(t, p, rid)]; i; i = t->f[i - 1].hnext) {
        struct dp_flow *f = &t->f[i - 1];
        if (f->rid == rid && peer_eq(&f->peer, p))
            return f;
    }
    return NULL;
}

static void unlink_hash(struct dp_flows *t, struct dp_flow *f)
{
    uint32_t me = dp_flows_index(t, f) + 1;
    uint32_t *link = &t->buckets[bucket_of(t, &f->peer, f->rid)];
    while (*link && *link != me)
        link = &t->f[*link - 1].hnext;
    if (*link)
        *link = f->hnext;
}

static void unlink_done(struct dp_flows *t, struct dp_flow *f)
{
    if (f->lprev) t->f[f->lprev - 1].lnext = f->lnext; else t->done_head = f->lnext;
    if (f->lnext) t->f[f->lnext - 1].lprev = f->lprev; else t->done_tail = f->lprev;
    f->lnext = f->lprev = 0;
}

void dp_flows_release(struct dp_flows *t, struct dp_flow *f)
{
    if (f->state == DP_FLOW_FREE)
        return;
    unlink_hash(t, f);
    if (f->state == DP_FLOW_DONE)
        unlink_done(t, f);
    f->state = DP_FLOW_FREE;
    f->req = NULL;
    t->free_stack[t->n_free++] = dp_flows_index(t, f);
}

struct dp_flow *dp_flows_add(struct dp_flows *t, const struct dp_peer *p, uint64_t rid)
{
    if (t->n_free == 0) {
        if (!t->done_head)
            return NULL;
        dp_flows_release(t, &t->f[t->done_head - 1]);   /* oldest retained goes first */
    }
    struct dp_flow *f = &t->f[t->free_stack[--t->n_free]];
    f->peer = *p;
    f->rid = rid;
    f->state = DP_FLOW_LIVE;
    f->req = NULL;
    f->n_frames = 0;
    f->done_us = 0;
    f->lnext = f->lprev = 0;
    uint32_t b = bucket_of(t, p, rid);
    f->hnext = t->buckets[b];
    t->buckets[b] = dp_flows_index(t, f) + 1;
    return f;
}

void dp_flows_done(struct dp_flows *t, struct dp_flow *f, uint64_t now_us, bool keep)
{
    if (!keep) {
        dp_flows_release(t, f);
        return;
    }
    f->state = DP_FLOW_DONE;
    f->req = NULL;
    f->done_us = now_us;
    uint32_t me = dp_flows_index(t, f) + 1;
    f->lprev = t->done_tail;
    f->lnext = 0;
    if (t->done_tail) t->f[t->done_tail - 1].lnext = me; else t->done_head = me;
    t->done_tail = me;
}

void dp_flows_expire(struct dp_flows *t, uint64_t now_us)
{
    while (t->done_head) {
        struct dp_flow *f = &t->f[t->done_head - 1];
        if (now_us - f->done_us < DP_RETAIN_US)
            break;
        dp_flows_release(t, f);
    }
}

void dp_flows_log(struct dp_flows *t, struct dp_flow *f, const uint8_t *frame, uint32_t len)
{
    uint64_t at = t->log_head;
    if (at % DP_LOG_BYTES + len > DP_LOG_BYTES)
        at += DP_LOG_BYTES - at % DP_LOG_BYTES;          /* frames never wrap */
    memcpy(t->log + at % DP_LOG_BYTES, frame, len);
    t->log_head = (at + len + 7) & ~7ull;
    f->pos[f->n_frames % BWP_RESEND_KEEP] = at;
    f->n_frames++;
}

const uint8_t *dp_flows_frame(const struct dp_flows *t, const struct dp_flow *f, uint32_t seq,
                              uint32_t *len)
{
    if (seq >= f->n_frames || f->n_frames - seq > BWP_RESEND_KEEP)
        return NULL;
    uint64_t at = f->pos[seq % BWP_RESEND_KEEP];
    if (t->log_head - at > DP_LOG_BYTES)
        return NULL;                                   /* overwritten since */
    const uint8_t *fr = t->log + at % DP_LOG_BYTES;
    *len = BWP_HDR_SIZE + bwp_rd32(fr + 8);
    if (t->log_head - at < *len)
        return NULL;
    return fr;
}
