/* console_stats.c — the figures of `stats`, `stats watch` and `metrics`: a metrics snapshot
 * written as text, as JSON, and in the Prometheus text exposition format (0.0.4). */
#include "console/console_int.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

/* jemalloc's mallctl when the process has jemalloc (borad, boractl); NULL otherwise
 * (test binaries link libbora.a without -ljemalloc). */
extern int mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
    __attribute__((weak));

int console_host_memory(uint64_t *allocated, uint64_t *resident)
{
    if (!mallctl)
        return -ENOSYS;
    uint64_t epoch = 1;
    size_t len = sizeof epoch;
    size_t a = 0, r = 0, la = sizeof a, lr = sizeof r;
    /* "epoch" refreshes the cached statistics before they are read */
    if (mallctl("epoch", &epoch, &len, &epoch, sizeof epoch) ||
        mallctl("stats.allocated", &a, &la, NULL, 0) ||
        mallctl("stats.resident", &r, &lr, NULL, 0))
        return -ENOSYS;
    *allocated = a;
    *resident = r;
    return 0;
}

static const char *const hist_key[METRICS_HISTS] = { "ttft_us", "e2e_us", "queue_wait_us" };

static uint64_t queue_depth(const struct metrics_snapshot *s)
{
    uint64_t in = s->counter[METRICS_QUEUE_IN], out = s->counter[METRICS_QUEUE_OUT];
    return in > out ? in - out : 0;
}

static uint64_t requests_total(const struct metrics_snapshot *s)
{
    uint64_t n = 0;
    for (int i = 0; i < METRICS_OUTCOMES; i++)
        n += s->outcome[i];
    return n;
}

static double ratio(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0;
}

/* ---- JSON ---- */

static json_t *hist_json(const struct metrics_hist_snap *h)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:f}", "count", (json_int_t)h->count,
                     "p50", (json_int_t)metrics_hist_quantile(h, 0.50),
                     "p90", (json_int_t)metrics_hist_quantile(h, 0.90),
                     "p99", (json_int_t)metrics_hist_quantile(h, 0.99),
                     "sum", (json_int_t)h->sum_us, "mean", ratio(h->sum_us, h->count));
}

json_t *console_stats_json(const struct metrics_snapshot *s)
{
    json_t *o = json_object(), *req = json_object(), *err = json_object(), *dp = json_object();
    json_object_set_new(o, "ok", json_true());   /* as every other --json answer */
    json_object_set_new(o, "uptime_s", json_real((double)s->uptime_ns / 1e9));
    json_object_set_new(req, "total", json_integer((json_int_t)requests_total(s)));
    for (int i = 0; i < METRICS_OUTCOMES; i++)
        json_object_set_new(req, metrics_outcome_name(i), json_integer((json_int_t)s->outcome[i]));
    json_object_set_new(o, "requests", req);
    for (unsigned i = 0; i < METRICS_ERROR_CODES; i++)
        if (s->error_by_code[i])
            json_object_set_new(err, metrics_error_name(i), json_integer((json_int_t)s->error_by_code[i]));
    json_object_set_new(o, "errors", err);
    json_object_set_new(o, "tokens", json_pack("{s:I,s:I,s:I,s:I}",
        "prompt", (json_int_t)s->counter[METRICS_PROMPT_TOKENS],
        "completion", (json_int_t)s->counter[METRICS_COMPLETION_TOKENS],
        "cached", (json_int_t)s->counter[METRICS_CACHED_TOKENS],
        "decoded", (json_int_t)s->counter[METRICS_DECODE_TOKENS]));
    json_object_set_new(o, "prefix_cache", json_pack("{s:I,s:I,s:f,s:f}",
        "lookups", (json_int_t)s->counter[METRICS_PREFIX_LOOKUPS],
        "hits", (json_int_t)s->counter[METRICS_PREFIX_HITS],
        "hit_rate", ratio(s->counter[METRICS_PREFIX_HITS], s->counter[METRICS_PREFIX_LOOKUPS]),
        "token_hit_rate", ratio(s->counter[METRICS_CACHED_TOKENS], s->counter[METRICS_PROMPT_TOKENS])));
    json_object_set_new(o, "decode_tokens_per_s", json_pack("{s:f,s:f}",
        "last_minute", metrics_rate_recent(s), "since_start", metrics_rate_total(s)));
    for (int h = 0; h < METRICS_HISTS; h++)
        json_object_set_new(o, hist_key[h], hist_json(&s->hist[h]));
    json_object_set_new(o, "queue_depth", json_integer((json_int_t)queue_depth(s)));
    json_object_set_new(o, "gpu_memory", s->gauge[METRICS_GPU_MEM_TOTAL]
        ? json_pack("{s:I,s:I}", "used", (json_int_t)s->gauge[METRICS_GPU_MEM_USED],
                    "total", (json_int_t)s->gauge[METRICS_GPU_MEM_TOTAL])
        : json_null());
    uint64_t a, r;
    json_object_set_new(o, "host_memory", console_host_memory(&a, &r) == 0
        ? json_pack("{s:I,s:I}", "allocated", (json_int_t)a, "resident", (json_int_t)r)
        : json_null());
    for (int t = 0; t < METRICS_TRANSPORTS; t++) {
        json_t *x = json_object();
        for (int k = 0; k < METRICS_DP_KINDS; k++)
            json_object_set_new(x, metrics_dp_name(k), json_integer((json_int_t)s->dp[t][k]));
        json_object_set_new(dp, metrics_transport_name(t), x);
    }
    json_object_set_new(o, "dataplane", dp);
    return o;
}

/* ---- text ---- */

static void bytes_text(char *buf, size_t n, uint64_t b)
{
    if (b >= (1ull << 30))
        snprintf(buf, n, "%.2f GiB", (double)b / (1ull << 30));
    else
        snprintf(buf, n, "%.1f MiB", (double)b / (1ull << 20));
}

static void hist_text(FILE *out, const char *label, const struct metrics_hist_snap *h)
{
    fprintf(out, "%-16s n %llu  p50 %llu  p90 %llu  p99 %llu  mean %.0f (us)\n", label,
            (unsigned long long)h->count,
            (unsigned long long)metrics_hist_quantile(h, 0.50),
            (unsigned long long)metrics_hist_quantile(h, 0.90),
            (unsigned long long)metrics_hist_quantile(h, 0.99), ratio(h->sum_us, h->count));
}

void console_stats_text(const struct metrics_snapshot *s, FILE *out)
{
    fprintf(out, "%-16s %.1f s\n", "uptime", (double)s->uptime_ns / 1e9);
    fprintf(out, "%-16s total %llu:", "requests", (unsigned long long)requests_total(s));
    for (int i = 0; i < METRICS_OUTCOMES; i++)
        fprintf(out, " %s %llu", metrics_outcome_name(i), (unsigned long long)s->outcome[i]);
    fprintf(out, "\n%-16s", "errors");
    int any = 0;
    for (unsigned i = 0; i < METRICS_ERROR_CODES; i++)
        if (s->error_by_code[i])
            any = fprintf(out, " %s %llu", metrics_error_name(i), (unsigned long long)s->error_by_code[i]);
    fprintf(out, "%s\n", any ? "" : " none");
    fprintf(out, "%-16s prompt %llu  completion %llu  cached %llu\n", "tokens",
            (unsigned long long)s->counter[METRICS_PROMPT_TOKENS],
            (unsigned long long)s->counter[METRICS_COMPLETION_TOKENS],
            (unsigned long long)s->counter[METRICS_CACHED_TOKENS]);
    fprintf(out, "%-16s hit rate %.1f %% (%llu of %llu lookups), %.1f %% of prompt tokens\n",
            "prefix cache", 100 * ratio(s->counter[METRICS_PREFIX_HITS], s->counter[METRICS_PREFIX_LOOKUPS]),
            (unsigned long long)s->counter[METRICS_PREFIX_HITS],
            (unsigned long long)s->counter[METRICS_PREFIX_LOOKUPS],
            100 * ratio(s->counter[METRICS_CACHED_TOKENS], s->counter[METRICS_PROMPT_TOKENS]));
    fprintf(out, "%-16s %.1f tok/s last minute, %.1f tok/s since start\n", "decode",
            metrics_rate_recent(s), metrics_rate_total(s));
    hist_text(out, "ttft", &s->hist[METRICS_TTFT]);
    hist_text(out, "end-to-end", &s->hist[METRICS_E2E]);
    fprintf(out, "%-16s depth %llu\n", "queue", (unsigned long long)queue_depth(s));
    hist_text(out, "queue wait", &s->hist[METRICS_QUEUE_WAIT]);
    char a[32], b[32];
    if (s->gauge[METRICS_GPU_MEM_TOTAL]) {
        bytes_text(a, sizeof a, s->gauge[METRICS_GPU_MEM_USED]);
        bytes_text(b, sizeof b, s->gauge[METRICS_GPU_MEM_TOTAL]);
        fprintf(out, "%-16s %s used of %s\n", "gpu memory", a, b);
    } else {
        fprintf(out, "%-16s none (no GPU engine)\n", "gpu memory");
    }
    uint64_t al, re;
    if (console_host_memory(&al, &re) == 0) {
        bytes_text(a, sizeof a, al);
        bytes_text(b, sizeof b, re);
        fprintf(out, "%-16s %s allocated, %s resident (jemalloc)\n", "host memory", a, b);
    } else {
        fprintf(out, "%-16s n/a (no jemalloc)\n", "host memory");
    }
    for (int t = 0; t < METRICS_TRANSPORTS; t++) {
        fprintf(out, "%-16s", t ? "" : "dataplane");
        fprintf(out, " %-5s", metrics_transport_name(t));
        for (int k = 0; k < METRICS_DP_KINDS; k++)
            fprintf(out, " %s %llu", metrics_dp_name(k), (unsigned long long)s->dp[t][k]);
        fputc('\n', out);
    }
}

/* ---- Prometheus ---- */

static void prom_head(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_hist(FILE *out, const char *name, const char *help, const struct metrics_hist_snap *h)
{
    prom_head(out, name, "histogram", help);
    uint64_t cum = 0;
    unsigned b = 0;
    /* one boundary per power of two: buckets 0..7, then the last bucket of each octave */
    for (unsigned edge = METRICS_HIST_SUB - 1; edge < METRICS_HIST_BUCKETS - 1; edge += METRICS_HIST_SUB) {
        for (; b <= edge; b++)
            cum += h->bucket[b];
        fprintf(out, "%s_bucket{le=\"%.6f\"} %llu\n", name, (double)metrics_hist_upper(edge) / 1e6,
                (unsigned long long)cum);
    }
    for (; b < METRICS_HIST_BUCKETS; b++)
        cum += h->bucket[b];
    fprintf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    fprintf(out, "%s_sum %.6f\n%s_count %llu\n", name, (double)h->sum_us / 1e6, name,
            (unsigned long long)cum);
}

void console_prometheus(struct console *c, const struct metrics_snapshot *s, FILE *out)
{
    (void)c;
    prom_head(out, "bora_uptime_seconds", "gauge", "Seconds since the daemon started.");
    fprintf(out, "bora_uptime_seconds %.3f\n", (double)s->uptime_ns / 1e9);
    prom_head(out, "bora_requests_total", "counter", "Requests ended, by outcome (DONE finish or error).");
    for (int i = 0; i < METRICS_OUTCOMES; i++)
        fprintf(out, "bora_requests_total{outcome=\"%s\"} %llu\n", metrics_outcome_name(i),
                (unsigned long long)s->outcome[i]);
    prom_head(out, "bora_errors_total", "counter",
              "ERROR frames sent, by BWP/1 code (OTHER: a code this build does not know): requests "
              "refused or failed, and frames refused alone (DUPLICATE, a malformed CANCEL, PING or RESEND).");
    for (unsigned i = 0; i < METRICS_ERROR_CODES; i++)
        fprintf(out, "bora_errors_total{code=\"%s\"} %llu\n", metrics_error_name(i),
                (unsigned long long)s->error_by_code[i]);
    static const struct { int idx; const char *name, *help; } counters[] = {
        { METRICS_PROMPT_TOKENS, "bora_prompt_tokens_total", "Prompt tokens of finished requests." },
        { METRICS_CACHED_TOKENS, "bora_cached_tokens_total", "Prompt tokens served from the prefix cache." },
        { METRICS_COMPLETION_TOKENS, "bora_completion_tokens_total", "Completion tokens of finished requests." },
        { METRICS_DECODE_TOKENS, "bora_decode_tokens_total", "Tokens sampled by the decoder." },
        { METRICS_PREFIX_LOOKUPS, "bora_prefix_cache_lookups_total", "Prefix-cache lookups." },
        { METRICS_PREFIX_HITS, "bora_prefix_cache_hits_total", "Prefix-cache lookups that reused tokens." },
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(counters); i++) {
        prom_head(out, counters[i].name, "counter", counters[i].help);
        fprintf(out, "%s %llu\n", counters[i].name, (unsigned long long)s->counter[counters[i].idx]);
    }
    prom_head(out, "bora_decode_tokens_per_second", "gauge", "Decode rate over the last minute.");
    fprintf(out, "bora_decode_tokens_per_second %.3f\n", metrics_rate_recent(s));
    prom_head(out, "bora_queue_depth", "gauge", "Requests waiting for the decoder.");
    fprintf(out, "bora_queue_depth %llu\n", (unsigned long long)queue_depth(s));
    prom_hist(out, "bora_ttft_seconds", "Accepted to first token.", &s->hist[METRICS_TTFT]);
    prom_hist(out, "bora_request_duration_seconds", "Accepted to DONE.", &s->hist[METRICS_E2E]);
    prom_hist(out, "bora_queue_wait_seconds", "Accepted to decoding started.", &s->hist[METRICS_QUEUE_WAIT]);
    if (s->gauge[METRICS_GPU_MEM_TOTAL]) {
        prom_head(out, "bora_gpu_memory_bytes", "gauge", "GPU memory used and total.");
        fprintf(out, "bora_gpu_memory_bytes{kind=\"used\"} %llu\n", (unsigned long long)s->gauge[METRICS_GPU_MEM_USED]);
        fprintf(out, "bora_gpu_memory_bytes{kind=\"total\"} %llu\n", (unsigned long long)s->gauge[METRICS_GPU_MEM_TOTAL]);
    }
    uint64_t a, r;
    if (console_host_memory(&a, &r) == 0) {
        prom_head(out, "bora_host_memory_bytes", "gauge", "Host memory from jemalloc.");
        fprintf(out, "bora_host_memory_bytes{kind=\"allocated\"} %llu\n", (unsigned long long)a);
        fprintf(out, "bora_host_memory_bytes{kind=\"resident\"} %llu\n", (unsigned long long)r);
    }
    prom_head(out, "bora_dataplane_frames_total", "counter", "Dataplane frames by transport and event.");
    for (int t = 0; t < METRICS_TRANSPORTS; t++)
        for (int k = 0; k < METRICS_DP_KINDS; k++)
            fprintf(out, "bora_dataplane_frames_total{transport=\"%s\",event=\"%s\"} %llu\n",
                    metrics_transport_name(t), metrics_dp_name(k), (unsigned long long)s->dp[t][k]);
}

/* ---- stats watch ---- */

int console_watch(struct console *c, int in_fd, FILE *out, bool json, const _Atomic bool *stop)
{
    struct metrics_snapshot *s = malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    int rc = 0;
    while (!stop || !atomic_load_explicit(stop, memory_order_acquire)) {
        console_snapshot(c, s);
        if (json) {
            json_t *o = console_stats_json(s);
            json_dumpf(o, out, JSON_COMPACT);
            fputc('\n', out);
            json_decref(o);
        } else {
            fputs("\033[H\033[2J", out);
            console_stats_text(s, out);
            fputs("(press any key to stop)\n", out);
        }
        if (fflush(out) || ferror(out)) {
            rc = -EIO;
            break;
        }
        struct pollfd p = { .fd = in_fd, .events = POLLIN };
        int n = poll(&p, 1, CONSOLE_WATCH_MS);
        if (n < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (n > 0) {
            char key;   /* one byte: what follows it is the next command line (no read-ahead) */
            if (p.revents & POLLIN)
                (void)!read(in_fd, &key, 1);
            break;
        }
    }
    free(s);
    return rc;
}
