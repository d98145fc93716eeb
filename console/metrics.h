/* metrics.h — the appliance's live figures, kept without locks: each hot thread (transport
 * loop, decoder) claims its own cache-line-aligned shard and is the only writer of it; the
 * console sums every shard into a snapshot. Exported as text, JSON and Prometheus by console/.
 *
 * Budget: one counter update is a relaxed load + store on a line only its thread writes
 * (~1 ns, no atomic RMW, no false sharing); a request's completion is ~8 updates. */
#ifndef BORA_CONSOLE_METRICS_H
#define BORA_CONSOLE_METRICS_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_SHARDS_MAX   16     /* threads that may write metrics */
#define METRICS_SHARD_NAME   24     /* bytes of a shard's name, terminator included */
#define METRICS_CACHE_LINE   64     /* bytes */
#define METRICS_RATE_SLOTS   64     /* one-second slots of the tokens/s ring (>= window) */
#define METRICS_RATE_WINDOW_S 60    /* "last minute" of decode tokens/s */
#define METRICS_ERROR_CODES  12     /* BWP/1 ERROR codes 1..11 (index 0 unused) */

/* Histogram of integer microseconds, log-linear: exact below 16 us, then 8 buckets per
 * power of two, so a bucket is at most 1/8 (12.5 %) of its lower bound wide. Values at or
 * above 2^METRICS_HIST_TOP_LOG2 us (~38 h) land in the last bucket. */
#define METRICS_HIST_SUB       8
#define METRICS_HIST_TOP_LOG2  37
#define METRICS_HIST_BUCKETS   (METRICS_HIST_SUB * (METRICS_HIST_TOP_LOG2 - 2))

/* How a request ended: the DONE finish codes of BWP/1, then ERROR (see error_by_code). */
enum metrics_outcome {
    METRICS_DONE_STOP = 0, METRICS_DONE_MAX_TOKENS, METRICS_DONE_CANCELLED,
    METRICS_DONE_DEADLINE, METRICS_DONE_SHUTDOWN, METRICS_OUTCOME_ERROR,
    METRICS_OUTCOMES
};

enum metrics_transport { METRICS_UDP = 0, METRICS_TCP, METRICS_DPDK, METRICS_TRANSPORTS };
enum metrics_dp { METRICS_RX = 0, METRICS_TX, METRICS_DROP, METRICS_MALFORMED, METRICS_DP_KINDS };

enum metrics_hist { METRICS_TTFT = 0, METRICS_E2E, METRICS_QUEUE_WAIT, METRICS_HISTS };

enum metrics_counter {
    METRICS_PROMPT_TOKENS = 0,   /* prompt tokens of finished requests */
    METRICS_CACHED_TOKENS,       /* of which served from the prefix cache */
    METRICS_COMPLETION_TOKENS,   /* tokens generated (finished requests) */
    METRICS_DECODE_TOKENS,       /* tokens generated, counted as they are sampled */
    METRICS_PREFIX_LOOKUPS,      /* prefix-cache lookups */
    METRICS_PREFIX_HITS,         /* lookups that reused at least one token */
    METRICS_QUEUE_IN,            /* requests enqueued */
    METRICS_QUEUE_OUT,           /* requests taken by the decoder (or dropped from the queue) */
    METRICS_COUNTERS
};

/* Gauges: one writer each (whoever owns the figure), last value wins. */
enum metrics_gauge { METRICS_GPU_MEM_USED = 0, METRICS_GPU_MEM_TOTAL, METRICS_GAUGES };

struct metrics_rate_slot {
    _Atomic uint64_t sec;     /* CLOCK_MONOTONIC second this slot counts; partner: reader */
    _Atomic uint64_t n;       /* tokens sampled in that second */
};

/* One writer thread's figures. Written only by the thread that claimed it (relaxed
 * load + store), read by anyone with relaxed loads. */
struct metrics_shard {
    alignas(METRICS_CACHE_LINE) char name[METRICS_SHARD_NAME];
    _Atomic uint64_t counter[METRICS_COUNTERS];
    _Atomic uint64_t outcome[METRICS_OUTCOMES];
    _Atomic uint64_t error_by_code[METRICS_ERROR_CODES];
    _Atomic uint64_t dp[METRICS_TRANSPORTS][METRICS_DP_KINDS];
    struct metrics_rate_slot rate[METRICS_RATE_SLOTS];
    struct metrics_hist_data {
        _Atomic uint64_t bucket[METRICS_HIST_BUCKETS];
        _Atomic uint64_t sum_us;
        _Atomic uint64_t count;
    } hist[METRICS_HISTS];
};

/* The registry: created once by borad before its threads start, outlives them. */
struct metrics {
    struct metrics_shard shard[METRICS_SHARDS_MAX];
    _Atomic uint32_t n_shards;                 /* claimed shards; partner: metrics_snapshot_take */
    _Atomic uint64_t gauge[METRICS_GAUGES];
    uint64_t start_ns;                         /* CLOCK_MONOTONIC at metrics_init */
};

/* The figures of one request that ended with DONE (the same numbers DONE carries). */
struct metrics_done {
    int finish;                  /* enum metrics_outcome, 0..4 */
    uint32_t prompt_tokens, cached_tokens, completion_tokens;
    uint32_t queue_us, ttft_us, total_us;   /* ttft_us 0 = no token was sent (not recorded) */
    bool prefix_lookup;          /* the request started with a prefix-cache lookup (a hit when
                                  * cached_tokens > 0) */
};

/* Sum of every shard at one moment. Counters are read one by one, so figures written
 * while the snapshot is taken may appear in one and not yet in another. */
struct metrics_snapshot {
    uint64_t now_ns, uptime_ns;
    uint32_t n_shards;
    uint64_t counter[METRICS_COUNTERS];
    uint64_t outcome[METRICS_OUTCOMES];
    uint64_t error_by_code[METRICS_ERROR_CODES];
    uint64_t dp[METRICS_TRANSPORTS][METRICS_DP_KINDS];
    uint64_t gauge[METRICS_GAUGES];
    uint64_t tokens_last_window;     /* decode tokens in the last METRICS_RATE_WINDOW_S s */
    struct metrics_hist_snap {
        uint64_t bucket[METRICS_HIST_BUCKETS];
        uint64_t sum_us, count;
    } hist[METRICS_HISTS];
};

/* ---- set-up (one thread, before the writers start) ---- */

/* Zeroes m and stamps the start time. Cannot fail. m is large (~300 KiB) and must be
 * METRICS_CACHE_LINE-aligned: static, or from metrics_create. */
void metrics_init(struct metrics *m);

/* A new registry (cache-line-aligned allocation, initialised); NULL when out of memory.
 * metrics_destroy frees it once no thread writes or reads it any more. */
struct metrics *metrics_create(void);
void metrics_destroy(struct metrics *m);

/* Gives the calling thread its own shard, named for listings. Any thread, once per
 * writer thread; thread-safe. Returns the shard, or NULL when m is NULL or all
 * METRICS_SHARDS_MAX are taken (the caller then keeps no figures: every writer takes NULL). */
struct metrics_shard *metrics_shard_claim(struct metrics *m, const char *name);

/* ---- hot path (the shard's owner thread only; no locks, no syscalls) ---- */

static inline void metrics_add_(_Atomic uint64_t *a, uint64_t n)
{
    /* single writer: a plain read-modify-write without a locked instruction; the
     * partner is the relaxed load in metrics_snapshot_take */
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void metrics_count(struct metrics_shard *s, enum metrics_counter c, uint64_t n)
{
    if (s)
        metrics_add_(&s->counter[c], n);
}

/* A transport event: rx/tx frames, dropped, malformed. */
static inline void metrics_dp_count(struct metrics_shard *s, enum metrics_transport t,
                                    enum metrics_dp kind, uint64_t n)
{
    if (s)
        metrics_add_(&s->dp[t][kind], n);
}

/* Adds value_us to histogram h. */
void metrics_hist_record(struct metrics_shard *s, enum metrics_hist h, uint64_t value_us);

/* n tokens sampled now (now_ns: CLOCK_MONOTONIC); feeds decode tokens/s. */
void metrics_tokens_decoded(struct metrics_shard *s, uint64_t n, uint64_t now_ns);

/* A request ended with DONE: outcome, token counts, TTFT, end-to-end and queue wait. */
void metrics_request_done(struct metrics_shard *s, const struct metrics_done *d);

/* A request ended with ERROR code (1..11; others are counted as code 0): counted as an
 * outcome and by code. */
void metrics_request_error(struct metrics_shard *s, unsigned code);
/* An ERROR that concerns one frame only (protocol.md rule 8: DUPLICATE, a malformed
 * CANCEL/PING/RESEND): counted by code, not as a request outcome. */
void metrics_frame_error(struct metrics_shard *s, unsigned code);

/* Sets a gauge (one writer per gauge). Any thread. */
void metrics_gauge_set(struct metrics *m, enum metrics_gauge g, uint64_t v);

/* ---- reading (any thread) ---- */

/* Sums every claimed shard into out at now_ns (CLOCK_MONOTONIC; 0 = read the clock). */
void metrics_snapshot_take(struct metrics *m, struct metrics_snapshot *out, uint64_t now_ns);

/* The q-quantile (0 < q <= 1) of a histogram snapshot by nearest rank, as the upper bound of
 * the bucket that holds it: if the exact quantile is x, x <= result <= metrics_hist_upper(x).
 * Returns 0 for an empty histogram. */
uint64_t metrics_hist_quantile(const struct metrics_hist_snap *h, double q);

/* Bucket of a value and the inclusive bounds of a bucket, in microseconds. */
unsigned metrics_hist_bucket(uint64_t value_us);
uint64_t metrics_hist_lower(unsigned bucket);
uint64_t metrics_hist_upper(unsigned bucket);

/* Decode tokens per second: over the last minute (or the uptime when shorter), and
 * since start. */
double metrics_rate_recent(const struct metrics_snapshot *s);
double metrics_rate_total(const struct metrics_snapshot *s);

/* CLOCK_MONOTONIC in ns (vDSO; no syscall). */
uint64_t metrics_now_ns(void);

/* Names for output: "stop", "max_tokens", ...; "udp"; "rx"; "BUSY" (code 4), "?" if unknown. */
const char *metrics_outcome_name(int outcome);
const char *metrics_transport_name(int t);
const char *metrics_dp_name(int kind);
const char *metrics_error_name(unsigned code);

#endif
