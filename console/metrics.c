/* metrics.c — per-thread metric shards: claiming, histogram buckets, the tokens/s ring,
 * and the snapshot that sums every shard for the console. */
#include "console/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NS_PER_S 1000000000ull

uint64_t metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof *m);
    m->start_ns = metrics_now_ns();
}

struct metrics *metrics_create(void)
{
    struct metrics *m = aligned_alloc(METRICS_CACHE_LINE, sizeof *m);
    if (m)
        metrics_init(m);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    free(m);
}

struct metrics_shard *metrics_shard_claim(struct metrics *m, const char *name)
{
    if (!m)
        return NULL;
    /* an RMW, as several threads may start at once; the shard is zero from metrics_init */
    uint32_t i = atomic_fetch_add_explicit(&m->n_shards, 1, memory_order_acq_rel);
    if (i >= METRICS_SHARDS_MAX) {
        atomic_fetch_sub_explicit(&m->n_shards, 1, memory_order_acq_rel);
        return NULL;
    }
    struct metrics_shard *s = &m->shard[i];
    size_t n = name ? strlen(name) : 0;
    if (n >= METRICS_SHARD_NAME)
        n = METRICS_SHARD_NAME - 1;
    if (n)
        memcpy(s->name, name, n);
    s->name[n] = 0;
    return s;
}

/* ---- histogram buckets ---- */

unsigned metrics_hist_bucket(uint64_t v)
{
    if (v < METRICS_HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);        /* >= 3 */
    if (e >= METRICS_HIST_TOP_LOG2)
        return METRICS_HIST_BUCKETS - 1;
    return METRICS_HIST_SUB * (e - 2) + (unsigned)((v >> (e - 3)) & (METRICS_HIST_SUB - 1));
}

uint64_t metrics_hist_lower(unsigned b)
{
    if (b < METRICS_HIST_SUB)
        return b;
    unsigned e = b / METRICS_HIST_SUB + 2, sub = b % METRICS_HIST_SUB;
    return (uint64_t)(METRICS_HIST_SUB + sub) << (e - 3);
}

uint64_t metrics_hist_upper(unsigned b)
{
    if (b < METRICS_HIST_SUB)
        return b;
    unsigned e = b / METRICS_HIST_SUB + 2;
    return metrics_hist_lower(b) + (1ull << (e - 3)) - 1;
}

void metrics_hist_record(struct metrics_shard *s, enum metrics_hist h, uint64_t v)
{
    if (!s)
        return;
    struct metrics_hist_data *d = &s->hist[h];
    metrics_add_(&d->bucket[metrics_hist_bucket(v)], 1);
    metrics_add_(&d->sum_us, v);
    metrics_add_(&d->count, 1);
}

uint64_t metrics_hist_quantile(const struct metrics_hist_snap *h, double q)
{
    uint64_t total = 0;
    for (unsigned b = 0; b < METRICS_HIST_BUCKETS; b++)
        total += h->bucket[b];
    if (!total)
        return 0;
    double r = ceil(q * (double)total);
    uint64_t rank = r < 1 ? 1 : r > (double)total ? total : (uint64_t)r;
    uint64_t seen = 0;
    for (unsigned b = 0; b < METRICS_HIST_BUCKETS; b++) {
        seen += h->bucket[b];
        if (seen >= rank)
            return metrics_hist_upper(b);
    }
    return metrics_hist_upper(METRICS_HIST_BUCKETS - 1);
}

/* ---- tokens/s ring ---- */

void metrics_tokens_decoded(struct metrics_shard *s, uint64_t n, uint64_t now_ns)
{
    if (!s)
        return;
    uint64_t sec = now_ns / NS_PER_S;
    struct metrics_rate_slot *slot = &s->rate[sec % METRICS_RATE_SLOTS];
    if (atomic_load_explicit(&slot->sec, memory_order_relaxed) != sec) {
        /* reuse the slot for a new second: clear n, then publish sec (release);
         * partner: the acquire load of sec in metrics_snapshot_take */
        atomic_store_explicit(&slot->n, 0, memory_order_relaxed);
        atomic_store_explicit(&slot->sec, sec, memory_order_release);
    }
    metrics_add_(&slot->n, n);
    metrics_add_(&s->counter[METRICS_DECODE_TOKENS], n);
}

double metrics_rate_total(const struct metrics_snapshot *s)
{
    double t = (double)s->uptime_ns / 1e9;
    return t > 0 ? (double)s->counter[METRICS_DECODE_TOKENS] / t : 0;
}

double metrics_rate_recent(const struct metrics_snapshot *s)
{
    /* the window is the current (partial) second and the METRICS_RATE_WINDOW_S - 1 before */
    double win = (double)(METRICS_RATE_WINDOW_S - 1) + (double)(s->now_ns % NS_PER_S) / 1e9;
    double up = (double)s->uptime_ns / 1e9;
    if (up < win)
        win = up;
    return win > 0 ? (double)s->tokens_last_window / win : 0;
}

/* ---- requests ---- */

void metrics_request_done(struct metrics_shard *s, const struct metrics_done *d)
{
    if (!s)
        return;
    int f = d->finish >= 0 && d->finish < METRICS_OUTCOME_ERROR ? d->finish : METRICS_DONE_STOP;
    metrics_add_(&s->outcome[f], 1);
    metrics_add_(&s->counter[METRICS_PROMPT_TOKENS], d->prompt_tokens);
    metrics_add_(&s->counter[METRICS_CACHED_TOKENS], d->cached_tokens);
    if (d->prefix_lookup) {
        metrics_add_(&s->counter[METRICS_PREFIX_LOOKUPS], 1);
        if (d->cached_tokens)
            metrics_add_(&s->counter[METRICS_PREFIX_HITS], 1);
    }
    metrics_add_(&s->counter[METRICS_COMPLETION_TOKENS], d->completion_tokens);
    if (d->ttft_us)
        metrics_hist_record(s, METRICS_TTFT, d->ttft_us);
    metrics_hist_record(s, METRICS_E2E, d->total_us);
    metrics_hist_record(s, METRICS_QUEUE_WAIT, d->queue_us);
}

void metrics_request_error(struct metrics_shard *s, unsigned code)
{
    if (!s)
        return;
    metrics_add_(&s->outcome[METRICS_OUTCOME_ERROR], 1);
    metrics_add_(&s->error_by_code[code < METRICS_ERROR_CODES ? code : 0], 1);
}

void metrics_frame_error(struct metrics_shard *s, unsigned code)
{
    if (s)
        metrics_add_(&s->error_by_code[code < METRICS_ERROR_CODES ? code : 0], 1);
}

void metrics_gauge_set(struct metrics *m, enum metrics_gauge g, uint64_t v)
{
    atomic_store_explicit(&m->gauge[g], v, memory_order_relaxed);   /* partner: snapshot */
}

/* ---- snapshot ---- */

static uint64_t ld(_Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);   /* partner: metrics_add_ */
}

static void shard_sum(struct metrics_shard *sh, struct metrics_snapshot *o, uint64_t now_s)
{
    for (int i = 0; i < METRICS_COUNTERS; i++)
        o->counter[i] += ld(&sh->counter[i]);
    for (int i = 0; i < METRICS_OUTCOMES; i++)
        o->outcome[i] += ld(&sh->outcome[i]);
    for (int i = 0; i < METRICS_ERROR_CODES; i++)
        o->error_by_code[i] += ld(&sh->error_by_code[i]);
    for (int t = 0; t < METRICS_TRANSPORTS; t++)
        for (int k = 0; k < METRICS_DP_KINDS; k++)
            o->dp[t][k] += ld(&sh->dp[t][k]);
    for (int i = 0; i < METRICS_RATE_SLOTS; i++) {
        uint64_t sec = atomic_load_explicit(&sh->rate[i].sec, memory_order_acquire);
        if (sec <= now_s && now_s - sec < METRICS_RATE_WINDOW_S)
            o->tokens_last_window += ld(&sh->rate[i].n);
    }
    for (int h = 0; h < METRICS_HISTS; h++) {
        for (int b = 0; b < METRICS_HIST_BUCKETS; b++)
            o->hist[h].bucket[b] += ld(&sh->hist[h].bucket[b]);
        o->hist[h].sum_us += ld(&sh->hist[h].sum_us);
        o->hist[h].count += ld(&sh->hist[h].count);
    }
}

void metrics_snapshot_take(struct metrics *m, struct metrics_snapshot *o, uint64_t now_ns)
{
    memset(o, 0, sizeof *o);
    o->now_ns = now_ns ? now_ns : metrics_now_ns();
    o->uptime_ns = o->now_ns > m->start_ns ? o->now_ns - m->start_ns : 0;
    /* acquire: partner of the acq_rel claim in metrics_shard_claim */
    o->n_shards = atomic_load_explicit(&m->n_shards, memory_order_acquire);
    if (o->n_shards > METRICS_SHARDS_MAX)
        o->n_shards = METRICS_SHARDS_MAX;
    for (uint32_t i = 0; i < o->n_shards; i++)
        shard_sum(&m->shard[i], o, o->now_ns / NS_PER_S);
    for (int g = 0; g < METRICS_GAUGES; g++)
        o->gauge[g] = ld(&m->gauge[g]);
}

/* ---- names ---- */

const char *metrics_outcome_name(int o)
{
    static const char *const n[] = { "stop", "max_tokens", "cancelled", "deadline", "shutdown", "error" };
    return o >= 0 && o < METRICS_OUTCOMES ? n[o] : "?";
}

const char *metrics_transport_name(int t)
{
    static const char *const n[] = { "udp", "tcp", "dpdk" };
    return t >= 0 && t < METRICS_TRANSPORTS ? n[t] : "?";
}

const char *metrics_dp_name(int k)
{
    static const char *const n[] = { "rx", "tx", "drop", "malformed" };
    return k >= 0 && k < METRICS_DP_KINDS ? n[k] : "?";
}

const char *metrics_error_name(unsigned code)
{
    static const char *const n[] = { "OTHER", "BAD_FRAME", "BAD_VERSION", "TOO_LARGE", "BUSY", "AUTH",
                                     "BAD_PARAMS", "DUPLICATE", "INTERNAL", "SHUTTING_DOWN",
                                     "RATE_LIMITED", "FORBIDDEN" };
    return code < METRICS_ERROR_CODES ? n[code] : "?";
}
