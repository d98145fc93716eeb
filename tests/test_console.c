/* test_console.c — the operator console: metrics registry (buckets, quantiles against exact
 * nearest-rank, concurrent writers, tokens/s window), the interpreter against a test double,
 * Prometheus text checked by an independent parser, and the UNIX socket server.
 * `test_console --serve CONFIG [--synthetic N VALUES_FILE]` runs the console on the double
 * for the end-to-end scripts (tests/e2e_console*.sh) until `shutdown`. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "console/console.h"
#include "console/console_server.h"
#include "console/metrics.h"
#include "tests/support/console_double.h"

/* ---- helpers ---- */

static uint64_t lcg_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 17;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Exact nearest-rank quantile of sorted v[n]. */
static uint64_t exact_quantile(const uint64_t *v, size_t n, double q)
{
    size_t rank = (size_t)ceil(q * (double)n);
    return v[(rank ? rank : 1) - 1];
}

struct fixture {
    struct console_double d;
    struct metrics m;
    struct console c;
};

static struct fixture *fx_new(void)
{
    struct fixture *f = aligned_alloc(METRICS_CACHE_LINE, sizeof *f);
    assert_non_null(f);
    memset(f, 0, sizeof *f);
    console_double_init(&f->d, NULL);
    metrics_init(&f->m);
    console_init(&f->c, &f->d.ops, &f->m);
    return f;
}

static void fx_free(struct fixture *f)
{
    console_double_fini(&f->d);
    free(f);
}

/* Runs a line; returns its output (caller frees) and the rc in *rc. */
static char *run(struct fixture *f, const char *line, bool json, int *rc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    *rc = console_exec_line(&f->c, line, json, out);
    fclose(out);
    return text;
}

static json_t *run_json(struct fixture *f, const char *line, int want_rc)
{
    int rc;
    char *t = run(f, line, true, &rc);
    json_error_t e;
    json_t *o = json_loads(t, 0, &e);
    if (!o)
        fail_msg("'%s' gave no JSON: %s (%s)", line, t, e.text);
    assert_int_equal(rc, want_rc);
    free(t);
    return o;
}

/* ---- metrics ---- */

static void test_hist_buckets(void **state)
{
    (void)state;
    uint64_t seed = 1;
    unsigned prev = 0;
    for (uint64_t v = 0; v < 5000; v++) {       /* contiguous: every value in its bucket */
        unsigned b = metrics_hist_bucket(v);
        assert_true(metrics_hist_lower(b) <= v && v <= metrics_hist_upper(b));
        assert_true(b >= prev);
        assert_true(b == prev || metrics_hist_lower(b) == metrics_hist_upper(prev) + 1);
        prev = b;
    }
    for (int i = 0; i < 100000; i++) {
        uint64_t v = lcg_next(&seed) >> (lcg_next(&seed) % 40);
        unsigned b = metrics_hist_bucket(v);
        assert_true(b < METRICS_HIST_BUCKETS);
        if (v < (1ull << METRICS_HIST_TOP_LOG2)) {
            assert_true(metrics_hist_lower(b) <= v && v <= metrics_hist_upper(b));
            /* width at most 1/8 of the lower bound */
            assert_true((metrics_hist_upper(b) - metrics_hist_lower(b)) * 8 <= metrics_hist_lower(b) || b < 16);
        }
    }
}

static void test_quantiles_match_exact(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct metrics_snapshot *s = calloc(1, sizeof *s);
    struct metrics_shard *sh = metrics_shard_claim(m, "t");
    enum { N = 1000 };
    uint64_t v[N], seed = 7;
    for (int i = 0; i < N; i++) {
        v[i] = 50 + lcg_next(&seed) % 200000;   /* 50 us .. 200 ms */
        metrics_hist_record(sh, METRICS_E2E, v[i]);
    }
    qsort(v, N, sizeof v[0], cmp_u64);
    metrics_snapshot_take(m, s, 0);
    assert_int_equal(s->hist[METRICS_E2E].count, N);
    const double qs[] = { 0.01, 0.5, 0.9, 0.99, 1.0 };
    for (size_t i = 0; i < BORA_ARRAY_LEN(qs); i++) {
        uint64_t x = exact_quantile(v, N, qs[i]), got = metrics_hist_quantile(&s->hist[METRICS_E2E], qs[i]);
        assert_true(x <= got);
        assert_true(got <= metrics_hist_upper(metrics_hist_bucket(x)));
    }
    assert_int_equal(metrics_hist_quantile(&s->hist[METRICS_TTFT], 0.5), 0);   /* empty */
    free(s);
    metrics_destroy(m);
}

struct writer_arg {
    struct metrics *m;
    int n;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    char name[16];
    snprintf(name, sizeof name, "w%p", p);
    struct metrics_shard *sh = metrics_shard_claim(a->m, name);
    for (int i = 0; i < a->n; i++) {
        struct metrics_done d = { METRICS_DONE_MAX_TOKENS, 5, 1, 3, 10, 100 + (uint32_t)i % 7, 1000, false };
        metrics_request_done(sh, &d);
        metrics_count(sh, METRICS_QUEUE_IN, 1);
        metrics_count(sh, METRICS_QUEUE_OUT, 1);
        metrics_dp_count(sh, METRICS_UDP, METRICS_RX, 1);
        if (i % 10 == 0)
            metrics_request_error(sh, 4);
    }
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct metrics_snapshot *s = calloc(1, sizeof *s);
    enum { T = 4, N = 200000 };
    pthread_t th[T];
    struct writer_arg a[T];
    for (int i = 0; i < T; i++) {
        a[i] = (struct writer_arg){ m, N };
        assert_int_equal(pthread_create(&th[i], NULL, writer, &a[i]), 0);
    }
    uint64_t last = 0;
    for (int k = 0; k < 50; k++) {          /* snapshots while writing: never go backwards */
        metrics_snapshot_take(m, s, 0);
        assert_true(s->outcome[METRICS_DONE_MAX_TOKENS] >= last);
        last = s->outcome[METRICS_DONE_MAX_TOKENS];
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    metrics_snapshot_take(m, s, 0);
    assert_int_equal(s->n_shards, T);
    assert_int_equal(s->outcome[METRICS_DONE_MAX_TOKENS], (uint64_t)T * N);
    assert_int_equal(s->counter[METRICS_PROMPT_TOKENS], (uint64_t)T * N * 5);
    assert_int_equal(s->counter[METRICS_COMPLETION_TOKENS], (uint64_t)T * N * 3);
    assert_int_equal(s->hist[METRICS_TTFT].count, (uint64_t)T * N);
    assert_int_equal(s->error_by_code[4], (uint64_t)T * (N / 10));
    assert_int_equal(s->dp[METRICS_UDP][METRICS_RX], (uint64_t)T * N);
    /* the shards are cache-line aligned and do not share lines */
    assert_int_equal((uintptr_t)&m->shard[1] % METRICS_CACHE_LINE, 0);
    assert_int_equal(sizeof(struct metrics_shard) % METRICS_CACHE_LINE, 0);
    free(s);
    metrics_destroy(m);
}

static void test_shard_limit(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    for (int i = 0; i < METRICS_SHARDS_MAX; i++)
        assert_non_null(metrics_shard_claim(m, "a-very-long-thread-name-that-is-cut"));
    assert_null(metrics_shard_claim(m, "one too many"));
    assert_int_equal(strlen(m->shard[0].name), METRICS_SHARD_NAME - 1);
    metrics_count(NULL, METRICS_QUEUE_IN, 1);    /* a thread without a shard keeps no figures */
    metrics_destroy(m);
}

static void test_rate_window(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct metrics_snapshot *s = calloc(1, sizeof *s);
    const uint64_t S = 1000000000ull, t0 = 1000 * S;
    m->start_ns = t0;
    struct metrics_shard *sh = metrics_shard_claim(m, "decoder");
    for (uint64_t sec = 0; sec < 120; sec++)      /* 10 tok/s for a minute, then 100 tok/s */
        metrics_tokens_decoded(sh, sec < 60 ? 10 : 100, t0 + sec * S + S / 2);
    metrics_snapshot_take(m, s, t0 + 119 * S + S / 2);
    assert_int_equal(s->counter[METRICS_DECODE_TOKENS], 60 * 10 + 60 * 100);
    assert_int_equal(s->tokens_last_window, 60 * 100);        /* only the last 60 seconds */
    double r = metrics_rate_recent(s);
    assert_true(r > 95 && r < 105);
    assert_true(fabs(metrics_rate_total(s) - 6600.0 / 119.5) < 0.01);
    free(s);
    metrics_destroy(m);
}

/* ---- interpreter ---- */

static void test_split(void **state)
{
    (void)state;
    char line[] = "  config set \"dataplane.allow\" '10.0.0.0/8, 192.0.2.7'  ";
    char *argv[8];
    assert_int_equal(console_split(line, argv, 8), 4);
    assert_string_equal(argv[0], "config");
    assert_string_equal(argv[2], "dataplane.allow");
    assert_string_equal(argv[3], "10.0.0.0/8, 192.0.2.7");
    char bad[] = "cancel \"12";
    assert_int_equal(console_split(bad, argv, 8), -EINVAL);
    char many[] = "a b c d e f g h i";
    assert_int_equal(console_split(many, argv, 8), -EINVAL);
    char empty[] = " \t ";
    assert_int_equal(console_split(empty, argv, 8), 0);
}

static void test_help_and_unknown(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    int rc;
    char *t = run(f, "help", false, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    const char *cmds[] = { "status", "stats", "requests", "cancel", "model", "config show", "config set",
                           "drain", "resume", "reload", "log level", "metrics", "shutdown" };
    for (size_t i = 0; i < BORA_ARRAY_LEN(cmds); i++)
        if (!strstr(t, cmds[i]))
            fail_msg("help does not mention '%s'", cmds[i]);
    free(t);
    t = run(f, "frobnicate now", false, &rc);
    assert_int_equal(rc, CONSOLE_USAGE);
    assert_non_null(strstr(t, "unknown command 'frobnicate'"));
    free(t);
    json_t *o = run_json(f, "frobnicate", CONSOLE_USAGE);
    assert_true(json_is_false(json_object_get(o, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(o, "error")), "frobnicate"));
    json_decref(o);
    /* words that are not UTF-8, or that the message cuts inside a character, still get a JSON
     * answer: the bad bytes become U+FFFD (they once made the answer an empty line) */
    o = run_json(f, "c\x80nfig", CONSOLE_USAGE);
    assert_true(json_is_false(json_object_get(o, "ok")));
    assert_non_null(strstr(json_string_value(json_object_get(o, "error")), "c\xef\xbf\xbdnfig"));
    json_decref(o);
    char cut[160] = "cancel x";
    for (int i = 0; i < 60; i++)
        strcat(cut, "\xc3\xa9");              /* é: '%.100s' cuts the 50th in half */
    o = run_json(f, cut, CONSOLE_USAGE);
    assert_true(json_is_false(json_object_get(o, "ok")));
    json_decref(o);
    t = run(f, "", false, &rc);                 /* a blank line does nothing */
    assert_int_equal(rc, CONSOLE_OK);
    assert_string_equal(t, "");
    free(t);
    t = run(f, "quit", false, &rc);
    assert_int_equal(rc, CONSOLE_QUIT);
    free(t);
    t = run(f, "exit now", false, &rc);   /* a stray word: a usage error, the session kept */
    assert_int_equal(rc, CONSOLE_USAGE);
    assert_non_null(strstr(t, "usage: exit (no arguments)"));
    free(t);
    {   /* a control sequence in an unknown word is not echoed to the terminal */
        int rc2;
        char *u = run(f, "\x1b[2J\x1b]0;x\x07", false, &rc2);
        assert_int_equal(rc2, CONSOLE_USAGE);
        assert_null(strchr(u, 0x1b));
        assert_null(strchr(u, 0x07));
        assert_non_null(strstr(u, "unknown command '?[2J?]0;x?'"));
        free(u);
    }
    {   /* commands without arguments refuse a stray word instead of ignoring it */
        const char *stray[] = { "status extra", "requests foo", "metrics foo", "help extra", "model x" };
        for (size_t k = 0; k < BORA_ARRAY_LEN(stray); k++) {
            int rc3;
            char *u = run(f, stray[k], false, &rc3);
            assert_int_equal(rc3, CONSOLE_USAGE);
            assert_non_null(strstr(u, "(no arguments)"));
            free(u);
        }
    }
    fx_free(f);
}

static void test_status(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    json_t *o = run_json(f, "status", CONSOLE_OK);
    assert_string_equal(json_string_value(json_object_get(o, "model")), "test-double");
    assert_string_equal(json_string_value(json_object_get(o, "backend")), "cpu");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "serving");
    assert_string_equal(json_string_value(json_object_get(o, "kv_cache")), "fp8");
    assert_int_equal(json_integer_value(json_object_get(o, "queued")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "running")), 1);
    assert_true(json_real_value(json_object_get(o, "uptime_s")) >= 0);
    json_decref(o);
    int rc;
    char *t = run(f, "status", false, &rc);
    assert_non_null(strstr(t, "precision  bf16"));
    assert_non_null(strstr(t, "kv cache   fp8"));
    assert_non_null(strstr(t, "uptime"));
    free(t);
    fx_free(f);
}

static void test_requests_and_cancel(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    json_t *o = run_json(f, "requests --json", CONSOLE_OK);   /* --json last works too */
    json_t *a = json_object_get(o, "requests");
    assert_int_equal(json_array_size(a), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "id")), 101);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 1), "age_us")), 120000);
    json_decref(o);
    int rc;
    char *t = run(f, "requests", false, &rc);
    assert_non_null(strstr(t, "2500.0"));          /* age in ms */
    assert_non_null(strstr(t, "3 requests"));
    free(t);
    t = run(f, "cancel 102", false, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.cancels, 1);
    assert_int_equal(f->d.n_req, 2);
    free(t);
    t = run(f, "cancel 102", false, &rc);          /* gone now: the daemon's message */
    assert_int_equal(rc, CONSOLE_ERROR);
    assert_non_null(strstr(t, "no request 102"));
    free(t);
    t = run(f, "cancel 0103", false, &rc);         /* decimal, as listed: a leading zero is not octal */
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.cancels, 2);
    free(t);
    /* a client's id past INT64_MAX is listed as the number it is (jansson's integers are signed),
     * in JSON as in text, and cancels as listed */
    f->d.req[0].id = UINT64_MAX;
    f->d.req[0].client[0] = '"';   /* a string with a quote beside it stays a string */
    t = run(f, "requests --json", true, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    assert_non_null(strstr(t, "{\"id\":18446744073709551615,\"client\":\"\\\""));
    assert_null(strstr(t, "u0001"));
    free(t);
    t = run(f, "requests", false, &rc);
    assert_non_null(strstr(t, "18446744073709551615 "));
    free(t);
    t = run(f, "cancel 18446744073709551615", false, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.cancels, 3);
    free(t);
    const char *bad[] = { "cancel", "cancel abc", "cancel -3", "cancel 0", "cancel 1 2", "cancel 0x65", "cancel +101" };
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++) {
        t = run(f, bad[i], false, &rc);
        assert_int_equal(rc, CONSOLE_USAGE);
        assert_non_null(strstr(t, "error:"));
        free(t);
    }
    fx_free(f);
}

static void test_drain_resume_reload_shutdown(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    int rc;
    free(run(f, "drain", false, &rc));
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.state, CONSOLE_STATE_DRAINING);
    json_t *o = run_json(f, "status", CONSOLE_OK);
    assert_string_equal(json_string_value(json_object_get(o, "state")), "draining");
    json_decref(o);
    char *t = run(f, "drain", false, &rc);         /* refused by the daemon: its message */
    assert_int_equal(rc, CONSOLE_ERROR);
    assert_non_null(strstr(t, "drain: not possible"));
    free(t);
    free(run(f, "resume", false, &rc));
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.state, CONSOLE_STATE_SERVING);
    free(run(f, "reload", false, &rc));
    assert_int_equal(f->d.reloads, 1);
    free(run(f, "drain now", false, &rc));
    assert_int_equal(rc, CONSOLE_USAGE);
    assert_false(atomic_load(&f->d.shutdown));
    o = run_json(f, "shutdown", CONSOLE_OK);
    assert_true(json_is_true(json_object_get(o, "ok")));
    json_decref(o);
    assert_true(atomic_load(&f->d.shutdown));
    fx_free(f);
}

static void test_no_ops(void **state)
{
    (void)state;
    struct console c;
    console_init(&c, NULL, NULL);
    const char *cmds[] = { "status", "requests", "cancel 5", "model", "drain", "config show",
                           "config set limits.max_tokens 9" };
    for (size_t i = 0; i < BORA_ARRAY_LEN(cmds); i++) {
        char *t = NULL;
        size_t n;
        FILE *out = open_memstream(&t, &n);
        assert_int_equal(console_exec_line(&c, cmds[i], false, out), CONSOLE_ERROR);
        fclose(out);
        assert_non_null(strstr(t, "not supported"));
        free(t);
    }
}

static void test_model(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    json_t *o = run_json(f, "model", CONSOLE_OK);
    json_t *t0 = json_array_get(json_object_get(o, "tensors"), 0);
    assert_string_equal(json_string_value(json_object_get(t0, "dtype")), "bf16");
    assert_int_equal(json_integer_value(json_array_get(json_object_get(t0, "shape"), 1)), 64);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "vram"), "weights")), 16384);
    json_decref(o);
    int rc;
    char *t = run(f, "model", false, &rc);
    assert_non_null(strstr(t, "64 x 64"));
    free(t);
    fx_free(f);
}

static void test_config(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    struct bora_err e;
    assert_int_equal(config_set(&f->d.cfg, "console.password_hash",
                                "$argon2id$v=19$m=65536,t=2,p=1$CtlTUlw9ShNMUqzvNqn3Ug$9XP+f5P9pCK+K4csW0xLxqMTvREBPCPBgRe71nWlWoo", &e), 0);
    int rc;
    char *t = run(f, "config show", false, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    assert_non_null(strstr(t, "max_tokens = 512"));
    assert_null(strstr(t, "$argon2id"));            /* secrets never shown */
    free(t);
    json_t *o = run_json(f, "config show", CONSOLE_OK);
    json_t *cfg = json_object_get(o, "config");
    assert_string_equal(json_string_value(json_object_get(cfg, "limits.max_tokens")), "512");
    assert_null(strstr(json_string_value(json_object_get(cfg, "console.password_hash")), "argon2"));
    bool live_found = false;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(o, "live"), i, v)
        live_found |= !strcmp(json_string_value(v), "limits.max_tokens");
    assert_true(live_found);
    json_decref(o);

    t = run(f, "config set limits.max_tokens 128", false, &rc);   /* live: applied */
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.cfg.limits.max_tokens, 128);
    assert_string_equal(f->d.last_key, "limits.max_tokens");
    free(t);
    t = run(f, "config set limits.max_tokens 0", false, &rc);     /* validated as at start-up */
    assert_int_equal(rc, CONSOLE_ERROR);
    assert_non_null(strstr(t, "limits.max_tokens"));
    assert_non_null(strstr(t, "'0'"));
    assert_int_equal(f->d.cfg.limits.max_tokens, 128);
    free(t);
    t = run(f, "config set limits.queue_depth 8", false, &rc);    /* not live */
    assert_int_equal(rc, CONSOLE_ERROR);
    assert_non_null(strstr(t, "not live"));
    assert_int_equal(f->d.cfg.limits.queue_depth, 64);
    free(t);
    t = run(f, "config set nope.key 1", false, &rc);
    assert_int_equal(rc, CONSOLE_USAGE);
    assert_non_null(strstr(t, "unknown key 'nope.key'"));
    free(t);
    t = run(f, "config set dataplane.allow 10.0.0.0/8, 192.0.2.7", false, &rc);   /* words joined */
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.cfg.dataplane.n_allow, 2);
    free(t);
    t = run(f, "config set \x1b[2J\a 1", false, &rc);   /* the key echoed without its control bytes */
    assert_int_equal(rc, CONSOLE_USAGE);
    assert_non_null(strstr(t, "unknown key '?[2J?'"));
    free(t);
    t = run(f, "config set dataplane.allow", false, &rc);   /* no value: refused, the list kept */
    assert_int_equal(rc, CONSOLE_USAGE);
    assert_non_null(strstr(t, "no VALUE"));
    assert_int_equal(f->d.cfg.dataplane.n_allow, 2);
    free(t);
    t = run(f, "log level debug", false, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    assert_int_equal(f->d.cfg.console.log_level, CONFIG_LOG_DEBUG);
    free(t);
    t = run(f, "log level loud", false, &rc);
    assert_int_equal(rc, CONSOLE_ERROR);
    assert_non_null(strstr(t, "console.log_level"));
    free(t);
    free(run(f, "config frob", false, &rc));
    assert_int_equal(rc, CONSOLE_USAGE);
    fx_free(f);
}

/* Records n requests with known figures; returns the e2e values (sorted) in v. */
static void record_requests(struct metrics *m, uint64_t *v, int n)
{
    struct metrics_shard *dec = metrics_shard_claim(m, "decoder");
    struct metrics_shard *io = metrics_shard_claim(m, "udp");
    uint64_t seed = 3;
    for (int i = 0; i < n; i++) {
        uint32_t ttft = 200 + (uint32_t)(lcg_next(&seed) % 5000);
        uint32_t total = ttft + (uint32_t)(lcg_next(&seed) % 100000);
        struct metrics_done d = { i % 3 ? METRICS_DONE_MAX_TOKENS : METRICS_DONE_STOP, 10, i % 2 ? 4 : 0, 20,
                                  50, ttft, total, true };   /* a lookup; a hit when tokens were cached */
        metrics_count(io, METRICS_QUEUE_IN, 1);
        metrics_count(dec, METRICS_QUEUE_OUT, 1);
        metrics_tokens_decoded(dec, 20, metrics_now_ns());
        metrics_request_done(dec, &d);
        metrics_dp_count(io, METRICS_UDP, METRICS_RX, 1);
        metrics_dp_count(io, METRICS_UDP, METRICS_TX, 22);
        v[i] = total;
    }
    metrics_count(io, METRICS_QUEUE_IN, 2);    /* two still waiting */
    metrics_request_error(io, 4);
    metrics_request_error(io, 6);
    metrics_request_error(io, 6);
    metrics_dp_count(io, METRICS_TCP, METRICS_MALFORMED, 1);
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
}

static void test_stats(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    enum { N = 300 };
    uint64_t v[N];
    record_requests(&f->m, v, N);
    json_t *o = run_json(f, "stats", CONSOLE_OK);
    json_t *req = json_object_get(o, "requests");
    assert_int_equal(json_integer_value(json_object_get(req, "total")), N + 3);
    assert_int_equal(json_integer_value(json_object_get(req, "stop")), N / 3);
    assert_int_equal(json_integer_value(json_object_get(req, "max_tokens")), N - N / 3);
    assert_int_equal(json_integer_value(json_object_get(req, "error")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "errors"), "BAD_PARAMS")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "errors"), "BUSY")), 1);
    json_t *tok = json_object_get(o, "tokens");
    assert_int_equal(json_integer_value(json_object_get(tok, "prompt")), N * 10);
    assert_int_equal(json_integer_value(json_object_get(tok, "completion")), N * 20);
    assert_int_equal(json_integer_value(json_object_get(tok, "cached")), N / 2 * 4);
    assert_true(fabs(json_real_value(json_object_get(json_object_get(o, "prefix_cache"), "hit_rate")) - 0.5) < 1e-9);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "prefix_cache"), "lookups")), N);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "prefix_cache"), "hits")), N / 2);
    assert_int_equal(json_integer_value(json_object_get(o, "queue_depth")), 2);
    json_t *e2e = json_object_get(o, "e2e_us");
    assert_int_equal(json_integer_value(json_object_get(e2e, "count")), N);
    const char *pk[] = { "p50", "p90", "p99" };
    const double pq[] = { 0.5, 0.9, 0.99 };
    for (int i = 0; i < 3; i++) {
        uint64_t x = exact_quantile(v, N, pq[i]);
        uint64_t got = (uint64_t)json_integer_value(json_object_get(e2e, pk[i]));
        /* docs/CONSOLE.md: "a reported pN is the upper edge of the bucket that holds the exact
         * nearest-rank pN" — that edge, not merely a value between the two */
        if (got != metrics_hist_upper(metrics_hist_bucket(x)))
            fail_msg("%s: got %llu, exact %llu, its bucket's upper edge %llu", pk[i], (unsigned long long)got,
                     (unsigned long long)x, (unsigned long long)metrics_hist_upper(metrics_hist_bucket(x)));
    }
    uint64_t vsum = 0;
    for (int i = 0; i < N; i++)
        vsum += v[i];
    assert_int_equal(json_integer_value(json_object_get(e2e, "sum")), vsum);
    assert_true(fabs(json_real_value(json_object_get(e2e, "mean")) - (double)vsum / N) < 1e-6);
    /* cached / prompt tokens: N/2 requests with 4 cached of 10 */
    assert_true(fabs(json_real_value(json_object_get(json_object_get(o, "prefix_cache"), "token_hit_rate")) - 0.2) < 1e-9);
    char line[256];   /* the text form shows the same figures */
    snprintf(line, sizeof line, "end-to-end       n %d  p50 %lld  p90 %lld  p99 %lld  mean %.0f (us)", N,
             (long long)json_integer_value(json_object_get(e2e, "p50")),
             (long long)json_integer_value(json_object_get(e2e, "p90")),
             (long long)json_integer_value(json_object_get(e2e, "p99")), (double)vsum / N);
    {
        int trc;
        char *tt = run(f, "stats", false, &trc);
        if (!strstr(tt, line))
            fail_msg("text stats lack '%s':\n%s", line, tt);
        assert_non_null(strstr(tt, "of prompt tokens"));
        assert_non_null(strstr(tt, "20.0 % of prompt tokens"));
        free(tt);
    }
    assert_true(json_real_value(json_object_get(json_object_get(o, "decode_tokens_per_s"), "last_minute")) > 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(o, "dataplane"), "udp"), "tx")), N * 22);
    assert_true(json_is_null(json_object_get(o, "host_memory")));   /* tests have no jemalloc */
    assert_true(json_is_null(json_object_get(o, "gpu_memory")));
    assert_true(json_is_true(json_object_get(o, "ok")));   /* like every --json answer */
    json_decref(o);
    metrics_gauge_set(&f->m, METRICS_GPU_MEM_TOTAL, 141ull << 30);
    metrics_gauge_set(&f->m, METRICS_GPU_MEM_USED, 20ull << 30);
    int rc;
    char *t = run(f, "stats", false, &rc);
    assert_non_null(strstr(t, "20.00 GiB used of 141.00 GiB"));
    assert_non_null(strstr(t, "host memory      n/a"));
    assert_non_null(strstr(t, "BAD_PARAMS 2"));
    free(t);
    free(run(f, "stats watch", false, &rc));
    assert_int_equal(rc, CONSOLE_WATCH);
    free(run(f, "stats often", false, &rc));
    assert_int_equal(rc, CONSOLE_USAGE);
    uint64_t a, r;
    assert_int_equal(console_host_memory(&a, &r), -ENOSYS);
    fx_free(f);
}

/* GPU memory is sampled, not counted: the console asks the daemon to refresh its gauges before
 * stats and metrics read them; without a GPU engine stats says so. */
static void test_gpu_memory_refresh(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    int rc;
    char *t = run(f, "stats", false, &rc);
    assert_non_null(strstr(t, "gpu memory       none (no GPU engine)"));
    free(t);
    assert_int_equal(f->d.refreshes, 1);
    f->d.gauges = &f->m;
    f->d.gpu_total = 80ull << 30, f->d.gpu_used = 30ull << 30;
    t = run(f, "stats", false, &rc);
    assert_non_null(strstr(t, "30.00 GiB used of 80.00 GiB"));
    free(t);
    f->d.gpu_used = 31ull << 30;   /* the next read sees the driver's new figure */
    t = run(f, "metrics", false, &rc);
    assert_true(prom_value(t, "bora_gpu_memory_bytes{kind=\"used\"}") == (double)(31ull << 30));
    assert_true(prom_value(t, "bora_gpu_memory_bytes{kind=\"total\"}") == (double)(80ull << 30));
    free(t);
    json_t *o = json_loads(t = run(f, "stats", true, &rc), 0, NULL);
    free(t);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "gpu_memory"), "used")), 31ll << 30);
    json_decref(o);
    assert_int_equal(f->d.refreshes, 4);
    fx_free(f);
}

static void test_prometheus(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    enum { N = 200 };
    uint64_t v[N];
    record_requests(&f->m, v, N);
    metrics_gauge_set(&f->m, METRICS_GPU_MEM_TOTAL, 1000);
    int rc, samples = 0;
    char *t = run(f, "metrics", false, &rc);
    assert_int_equal(rc, CONSOLE_OK);
    char why[256] = "";
    if (prom_check(t, why, sizeof why, &samples))
        fail_msg("metrics is not Prometheus text: %s", why);
    assert_true(samples > 50);
    assert_int_equal((int)prom_value(t, "bora_request_duration_seconds_count"), N);
    assert_int_equal((int)prom_value(t, "bora_request_duration_seconds_bucket{le=\"+Inf\"}"), N);
    assert_int_equal((int)prom_value(t, "bora_requests_total{outcome=\"error\"}"), 3);
    assert_int_equal((int)prom_value(t, "bora_gpu_memory_bytes{kind=\"total\"}"), 1000);
    assert_true(prom_value(t, "bora_errors_total{code=\"OTHER\"}") >= 0);   /* every code stats shows */
    assert_int_equal((int)prom_value(t, "bora_dataplane_frames_total{transport=\"tcp\",event=\"malformed\"}"), 1);
    /* the bucket at the exact median's upper edge holds at least half */
    double sum = prom_value(t, "bora_request_duration_seconds_sum");
    uint64_t exact = 0;
    for (int i = 0; i < N; i++)
        exact += v[i];
    assert_true(fabs(sum - (double)exact / 1e6) < 1e-5);
    /* every finite bucket holds exactly the recorded values at or below its le */
    int n_le = 0;
    const char *series = "bora_request_duration_seconds_bucket{le=\"";
    for (const char *p = strstr(t, series); p; p = strstr(p + 1, series)) {
        const char *q = p + strlen(series);
        if (*q == '+')
            continue;
        double le = strtod(q, NULL);
        const char *sp = strchr(q, ' ');
        assert_non_null(sp);
        long long cum = strtoll(sp + 1, NULL, 10), want = 0;
        for (int i = 0; i < N; i++)
            want += (double)v[i] <= le * 1e6 + 0.5;
        if (cum != want)
            fail_msg("bucket le=%g: %lld, but %lld recorded values are <= it", le, cum, want);
        n_le++;
    }
    assert_true(n_le > 10);
    free(t);
    /* the checker itself rejects what the format forbids */
    const char *bad[] = {
        "# TYPE x counter\n9x 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"+Inf\"} 5\nh_count 5\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_count 5\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 6\nh_count 5\n",
        "x 1\n",
        "# TYPE x counter\nx one\n",
        "# TYPE x counter\nx 1",
    };
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad); i++)
        if (!prom_check(bad[i], why, sizeof why, NULL))
            fail_msg("checker accepted bad input %zu", i);
    fx_free(f);
}

static void test_watch(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    int in[2], outp[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(outp), 0);
    FILE *out = fdopen(outp[1], "w");
    assert_int_equal(write(in[1], "qstatus\n", 8), 8);   /* a key already pressed, then the next command */
    assert_int_equal(console_watch(&f->c, in[0], out, true, NULL), 0);
    fclose(out);
    char buf[8192] = "";
    ssize_t n = read(outp[0], buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = 0;
    json_error_t e;
    json_t *o = json_loads(buf, JSON_DISABLE_EOF_CHECK, &e);
    assert_non_null(o);
    assert_non_null(json_object_get(o, "requests"));
    json_decref(o);
    char rest[16];
    fcntl(in[0], F_SETFL, O_NONBLOCK);
    assert_int_equal(read(in[0], rest, sizeof rest), 7);   /* the key consumed, the command left for the reader */
    assert_memory_equal(rest, "status\n", 7);
    close(in[1]);
    close(in[0]);
    close(outp[0]);
    fx_free(f);
}

/* ---- socket server ---- */

static char *sock_cmd(int fd, const char *line, int *rc)
{
    assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    char *buf = calloc(1, 1 << 16);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, (1 << 16) - 1 - len);
        assert_true(n > 0);
        len += (size_t)n;
        char *z = memchr(buf, 0, len);
        if (z && memchr(z, '\n', len - (size_t)(z - buf))) {
            *rc = atoi(z + 1);
            return buf;
        }
    }
}

static void test_socket_server(void **state)
{
    (void)state;
    struct fixture *f = fx_new();
    char dir[] = "/tmp/bora-console-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct bora_config cfg;
    config_defaults(&cfg);
    snprintf(cfg.console.socket, sizeof cfg.console.socket, "%s/c.sock", dir);
    struct console_server *s = NULL;
    struct bora_err err = { { 0 } };
    assert_int_equal(console_server_start(&s, &f->c, &cfg.console, &err), 0);
    struct stat st;
    assert_int_equal(stat(cfg.console.socket, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
    /* a second daemon on the same socket is refused with a message naming it */
    struct console_server *s2 = NULL;
    assert_int_equal(console_server_start(&s2, &f->c, &cfg.console, &err), -EADDRINUSE);
    assert_non_null(strstr(err.msg, cfg.console.socket));
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", cfg.console.socket);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    int rc;
    char *t = sock_cmd(fd, "status\n", &rc);
    assert_int_equal(rc, CONSOLE_OK);
    assert_non_null(strstr(t, "state      serving"));
    free(t);
    t = sock_cmd(fd, "--json drain\n", &rc);        /* same session, second command */
    assert_int_equal(rc, CONSOLE_OK);
    assert_non_null(strstr(t, "\"ok\":true"));
    assert_int_equal(f->d.state, CONSOLE_STATE_DRAINING);
    free(t);
    t = sock_cmd(fd, "bogus\n", &rc);
    assert_int_equal(rc, CONSOLE_USAGE);
    free(t);
    {   /* the input ends inside a line (`printf resume | socat …`): said, not run */
        int pf = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(connect(pf, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(write(pf, "resume", 6), 6);
        assert_int_equal(shutdown(pf, SHUT_WR), 0);
        char got[256] = "";
        size_t gl = 0;
        for (ssize_t n; (n = read(pf, got + gl, sizeof got - 1 - gl)) > 0;)
            gl += (size_t)n;   /* until the server closes it */
        assert_non_null(strstr(got, "ended inside a line"));
        assert_int_equal(f->d.state, CONSOLE_STATE_DRAINING);   /* the resume did not run */
        close(pf);
    }
    close(fd);
    console_server_stop(s);
    /* a session silent for idle_timeout_s is told so and closed; one that speaks is served */
    cfg.console.idle_timeout_s = 1;
    assert_int_equal(console_server_start(&s, &f->c, &cfg.console, &err), 0);
    cfg.console.idle_timeout_s = 0;   /* the server keeps the configuration it started with: borad's
                                       * is rewritten by every live `config set` while sessions run */
    int quiet = socket(AF_UNIX, SOCK_STREAM, 0), busy = socket(AF_UNIX, SOCK_STREAM, 0);
    struct timeval tv = { .tv_sec = 10 };   /* a session never closed fails the test, not hangs it */
    assert_int_equal(setsockopt(quiet, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    assert_int_equal(connect(quiet, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(connect(busy, (struct sockaddr *)&a, sizeof a), 0);
    for (int i = 0; i < 4; i++) {   /* 1.6 s of commands 0.4 s apart */
        t = sock_cmd(busy, "status\n", &rc);
        assert_int_equal(rc, CONSOLE_OK);
        free(t);
        usleep(400000);
    }
    char got[256] = "";
    size_t gl = 0;
    for (ssize_t n; (n = read(quiet, got + gl, sizeof got - 1 - gl)) > 0;)
        gl += (size_t)n;   /* until the server closes it */
    got[gl] = 0;
    assert_non_null(strstr(got, "console session silent for 1 s: closed"));
    t = sock_cmd(busy, "status\n", &rc);   /* still open: its last command was 0.4 s ago */
    assert_int_equal(rc, CONSOLE_OK);
    free(t);
    close(quiet);
    close(busy);
    console_server_stop(s);
    cfg.console.idle_timeout_s = 900;
    assert_int_equal(stat(cfg.console.socket, &st), -1);      /* removed on stop */
    /* a stale socket file (no listener) is replaced */
    int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(stale, (struct sockaddr *)&a, sizeof a), 0);
    close(stale);
    cfg.console.socket_mode = 0660;
    assert_int_equal(console_server_start(&s, &f->c, &cfg.console, &err), 0);
    assert_int_equal(stat(cfg.console.socket, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);
    console_server_stop(s);
    snprintf(cfg.console.socket_group, sizeof cfg.console.socket_group, "no-such-group-bora");
    assert_int_equal(console_server_start(&s, &f->c, &cfg.console, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "console.socket_group"));
    /* a client that asks and never reads: its session blocks writing once the socket's buffer
     * is full; stopping the server (shutdown, SIGTERM) must not wait for it */
    cfg.console.socket_group[0] = 0;
    assert_int_equal(console_server_start(&s, &f->c, &cfg.console, &err), 0);
    int stall = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(stall, (struct sockaddr *)&a, sizeof a), 0);
    static char many[64 * 8];
    for (int i = 0; i < 64; i++)
        memcpy(many + 8 * i, "metrics\n", 8);
    int before = 0;
    for (int k = 0; k < 8; k++)   /* 512 answers of several KiB: far more than the buffer holds */
        assert_int_equal(write(stall, many, sizeof many), (ssize_t)sizeof many);
    int out_q = 0;
    for (int i = 0; i < 100; i++) {   /* until the server has filled what it can */
        usleep(20000);
        int q = 0;
        (void)ioctl(stall, FIONREAD, &q);
        if (q && q == before)
            break;
        before = q, out_q = q;
    }
    assert_true(out_q > 0);
    alarm(20);   /* a stop that waits for the stalled session would hang here: fail instead */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    console_server_stop(s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    assert_true(t1.tv_sec - t0.tv_sec < 3);
    close(stall);
    rmdir(dir);
    fx_free(f);
}

/* ---- --serve: the console on the double, for the end-to-end scripts ---- */

static int serve(int argc, char **argv)
{
    static struct bora_config cfg;
    static struct config_diag diag;
    static struct fixture f;
    if (argc < 3 || config_load(&cfg, argv[2], &diag)) {
        fprintf(stderr, "test_console --serve CONFIG [--synthetic N VALUES_FILE]: %s\n",
                diag.n_errors ? diag.msg[0] : "bad arguments");
        return 2;
    }
    console_double_init(&f.d, &cfg);
    metrics_init(&f.m);
    console_init(&f.c, &f.d.ops, &f.m);
    if (argc >= 6 && !strcmp(argv[3], "--synthetic")) {
        int n = atoi(argv[4]);
        uint64_t *v = calloc((size_t)n, sizeof *v);
        record_requests(&f.m, v, n);
        FILE *vf = fopen(argv[5], "w");
        for (int i = 0; vf && i < n; i++)
            fprintf(vf, "%llu\n", (unsigned long long)v[i]);
        if (vf)
            fclose(vf);
        free(v);
    }
    struct console_server *s;
    struct bora_err err = { { 0 } };
    if (console_server_start(&s, &f.c, &f.d.cfg.console, &err)) {
        fprintf(stderr, "test_console: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "test_console: serving the console (socket %s, serial %s)\n", cfg.console.socket,
            cfg.console.serial[0] ? cfg.console.serial : "off");
    while (!atomic_load(&f.d.shutdown))
        usleep(20000);
    console_server_stop(s);
    fprintf(stderr, "test_console: shut down (state %d)\n", f.d.state);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "--serve"))
        return serve(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets),
        cmocka_unit_test(test_quantiles_match_exact),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_shard_limit),
        cmocka_unit_test(test_rate_window),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_help_and_unknown),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_requests_and_cancel),
        cmocka_unit_test(test_drain_resume_reload_shutdown),
        cmocka_unit_test(test_no_ops),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_gpu_memory_refresh),
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_socket_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
