/* fuzz_console.c — fuzz target for the operator console's interpreter (console_exec_line →
 * console_split → console_exec; console_watch for `stats watch`) over a stand-in daemon whose
 * ops never sleep, block or exit. The first input byte picks the mode (see mode bits below),
 * the rest is command lines split on '\n'. Checks that each rc agrees with its line and that
 * each answer has the promised form (text errors, JSON objects with "ok"). */
#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "console/console.h"
#include "console/metrics.h"

/* ---- the stand-in daemon (reset for every input; never sleeps, blocks or exits) ---- */

enum fuzz_daemon_kind { FD_WORKING = 0, FD_BOUNDARY, FD_FAILING, FD_NONE };

#define FD_REQUESTS 3

struct fuzz_daemon {
    int kind;                          /* enum fuzz_daemon_kind */
    int state;                         /* enum console_state */
    struct console_request req[FD_REQUESTS];
    int n_req;
    struct bora_config cfg;            /* the "running" config */
};

static int fd_fail(struct bora_err *err, const char *what)
{
    return bora_errf(err, -EIO, "fuzz daemon: %s failed", what);
}

static int fd_status(void *ctx, struct console_status *o, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "status");
    snprintf(o->backend, sizeof o->backend, "cpu");
    snprintf(o->precision, sizeof o->precision, "bf16");
    if (d->kind == FD_BOUNDARY) {      /* longest name (valid UTF-8), unknown state, extremes */
        for (size_t i = 0; i < (sizeof o->model - 1) / 2; i++)
            memcpy(o->model + 2 * i, "\xc3\xa9", 2);
        o->model[(sizeof o->model - 1) / 2 * 2] = 0;
        o->state = -1;
        o->queued = o->running = UINT32_MAX;
        return 0;
    }
    snprintf(o->model, sizeof o->model, "fuzz-model");
    o->state = d->state;
    o->queued = o->running = 0;
    for (int i = 0; i < d->n_req; i++)
        *(d->req[i].running ? &o->running : &o->queued) += 1;
    return 0;
}

static int fd_requests(void *ctx, struct console_request *o, size_t cap, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "requests");
    if (d->kind == FD_BOUNDARY) {      /* more than the console shows, extreme figures */
        for (size_t i = 0; i < cap; i++) {
            o[i] = (struct console_request){ UINT64_MAX - i, "", i & 1, UINT64_MAX, UINT32_MAX, UINT32_MAX };
            memset(o[i].client, 'c', sizeof o[i].client - 1);
        }
        return (int)cap + 1000;
    }
    for (int i = 0; i < d->n_req && (size_t)i < cap; i++)
        o[i] = d->req[i];
    return d->n_req;
}

static int fd_cancel(void *ctx, uint64_t id, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "cancel");
    for (int i = 0; i < d->n_req; i++)
        if (d->req[i].id == id) {
            d->req[i] = d->req[--d->n_req];
            return 0;
        }
    return bora_errf(err, -ENOENT, "cancel: no request %llu (queued or running)", (unsigned long long)id);
}

static int fd_model(void *ctx, struct console_model *m, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "model");
    snprintf(m->name, sizeof m->name, "fuzz-model");
    snprintf(m->arch, sizeof m->arch, "MistralForCausalLM");
    m->n_layers = 2, m->dim = 64, m->hidden_dim = 128, m->n_heads = 4, m->n_kv_heads = 2;
    m->head_dim = 16, m->vocab = 1000, m->max_ctx = 512;
    m->n_tensors = 1, m->n_vram = 1;
    snprintf(m->tensor[0].name, sizeof m->tensor[0].name, "layers.*.attention.wq");
    snprintf(m->tensor[0].dtype, sizeof m->tensor[0].dtype, "bf16");
    m->tensor[0].ndim = 2, m->tensor[0].shape[0] = 64, m->tensor[0].shape[1] = 64;
    m->tensor[0].count = 2, m->tensor[0].bytes = 2 * 64 * 64 * 2;
    m->weight_bytes = m->tensor[0].bytes, m->n_params = 2 * 64 * 64;
    snprintf(m->vram[0].category, sizeof m->vram[0].category, "weights");
    m->vram[0].bytes = m->weight_bytes;
    if (d->kind == FD_BOUNDARY) {      /* counts past the arrays, widest shapes, longest names */
        m->n_layers = m->dim = m->vocab = UINT32_MAX;
        m->n_params = m->weight_bytes = UINT64_MAX;
        m->n_tensors = CONSOLE_TENSORS_MAX + 7;
        m->n_vram = CONSOLE_VRAM_MAX + 3;
        for (int i = 0; i < CONSOLE_TENSORS_MAX; i++) {
            struct console_tensor *t = &m->tensor[i];
            memset(t->name, 'n', sizeof t->name - 1);
            memset(t->dtype, 'd', sizeof t->dtype - 1);
            t->ndim = 9;
            for (int k = 0; k < 4; k++)
                t->shape[k] = k & 1 ? INT64_MAX : INT64_MIN;
            t->count = UINT32_MAX;
            t->bytes = UINT64_MAX;
        }
        for (int i = 0; i < CONSOLE_VRAM_MAX; i++) {
            memset(m->vram[i].category, 'v', sizeof m->vram[i].category - 1);
            m->vram[i].bytes = UINT64_MAX;
        }
    }
    return 0;
}

static int fd_set_state(struct fuzz_daemon *d, int from, int to, const char *what, struct bora_err *err)
{
    if (d->kind == FD_FAILING)
        return fd_fail(err, what);
    if (d->state != from)
        return bora_errf(err, -EALREADY, "%s: not possible in this state", what);
    d->state = to;
    return 0;
}

static int fd_drain(void *ctx, struct bora_err *err)
{
    return fd_set_state(ctx, CONSOLE_STATE_SERVING, CONSOLE_STATE_DRAINING, "drain", err);
}

static int fd_resume(void *ctx, struct bora_err *err)
{
    return fd_set_state(ctx, CONSOLE_STATE_DRAINING, CONSOLE_STATE_SERVING, "resume", err);
}

static int fd_reload(void *ctx, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    return d->kind == FD_FAILING ? fd_fail(err, "reload") : 0;   /* nothing to reopen */
}

static int fd_shutdown(void *ctx, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "shutdown");
    d->state = CONSOLE_STATE_STOPPING;   /* as borad: returns at once, nothing exits */
    return 0;
}

static int fd_config_read(void *ctx, struct bora_config *out, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "config_read");
    *out = d->cfg;
    return 0;
}

static int fd_config_apply(void *ctx, const char *key, const char *value, struct bora_err *err)
{
    struct fuzz_daemon *d = ctx;
    if (d->kind == FD_FAILING)
        return fd_fail(err, "config_apply");
    /* the console validated it on a copy of the same config: it must be accepted again */
    if (config_set(&d->cfg, key, value, err))
        abort();
    return 0;
}

static const struct console_ops null_ops;   /* every callback NULL */

static void daemon_reset(struct fuzz_daemon *d, int kind)
{
    static struct bora_config defaults;
    static int have_defaults;
    if (!have_defaults) {
        config_defaults(&defaults);
        have_defaults = 1;
    }
    d->kind = kind;
    d->state = CONSOLE_STATE_SERVING;
    d->req[0] = (struct console_request){ 101, "udp 127.0.0.1:5000", true, 2500000, 12, 40 };
    d->req[1] = (struct console_request){ 102, "tcp #3", false, 120000, 7, 0 };
    d->req[2] = (struct console_request){ 103, "udp [::1]:5001", false, 5000, 9, 0 };
    d->n_req = FD_REQUESTS;
    d->cfg = defaults;
}

/* ---- the metrics registry: filled once, read-only afterwards ---- */

static struct metrics *registry(void)
{
    static struct metrics m;   /* static: cache-line aligned, as metrics_init requires */
    static int ready;
    if (ready)
        return &m;
    metrics_init(&m);
    struct metrics_shard *s = metrics_shard_claim(&m, "fuzz");
    for (int f = 0; f < 5; f++) {
        struct metrics_done d = { .finish = f, .prompt_tokens = 100u * (unsigned)f,
                                  .cached_tokens = 10u * (unsigned)f, .completion_tokens = 7,
                                  .queue_us = 50, .ttft_us = f ? 900u : 0u,
                                  .total_us = 1000000u * (unsigned)f, .prefix_lookup = f & 1 };
        metrics_request_done(s, &d);
    }
    for (unsigned code = 0; code <= METRICS_ERROR_CODES; code++) {
        metrics_request_error(s, code);
        metrics_frame_error(s, code);
    }
    metrics_hist_record(s, METRICS_TTFT, 0);
    metrics_hist_record(s, METRICS_TTFT, UINT64_MAX);
    metrics_hist_record(s, METRICS_QUEUE_WAIT, 12345);
    metrics_tokens_decoded(s, 1000, metrics_now_ns());
    metrics_count(s, METRICS_QUEUE_IN, 9);
    metrics_count(s, METRICS_QUEUE_OUT, 4);
    for (int t = 0; t < METRICS_TRANSPORTS; t++)
        for (int k = 0; k < METRICS_DP_KINDS; k++)
            metrics_dp_count(s, t, k, (uint64_t)(t * 10 + k));
    metrics_gauge_set(&m, METRICS_GPU_MEM_USED, 3ull << 30);
    metrics_gauge_set(&m, METRICS_GPU_MEM_TOTAL, 141ull << 30);
    ready = 1;
    return &m;
}

/* A pipe whose writer is closed: console_watch sees the hang-up and returns after one frame. */
static int hung_up_fd(void)
{
    static int fd = -1;
    if (fd < 0) {
        int p[2];
        if (pipe(p))
            abort();
        close(p[1]);
        fd = p[0];
    }
    return fd;
}

/* ---- checks ---- */

/* Every line of out[0..n) is a JSON object whose "ok" is want_ok (present unless need_ok is
 * false). */
static void check_json_answer(const char *out, size_t n, bool want_ok, bool need_ok)
{
    if (!n || out[n - 1] != '\n')
        abort();
    for (const char *p = out, *e; p < out + n; p = e + 1) {
        e = memchr(p, '\n', (size_t)(out + n - p));
        json_error_t jerr;
        /* integers as reals: a request id may be any u64 (requests --json writes it as the number it
         * is), past the signed 64-bit integers jansson would otherwise refuse */
        json_t *o = json_loadb(p, (size_t)(e - p), JSON_DECODE_INT_AS_REAL, &jerr);
        json_t *ok = json_object_get(o, "ok");
        bool bad = !json_is_object(o);
        if (!bad && (ok || need_ok))
            bad = !json_is_boolean(ok) || json_is_true(ok) != want_ok;
        if (bad) {
            fprintf(stderr, "fuzz_console: not a JSON answer (ok should be %d): '%.*s'\n", want_ok,
                    (int)(e - p), p);
            abort();
        }
        json_decref(o);
    }
}

/* Runs one line and checks the rc and the answer against what the line asks for. */
static void run_line(struct console *c, const char *line, bool json, FILE *out, char **text, size_t *len)
{
    /* the words the interpreter will see, split the same way on a copy */
    char copy[CONSOLE_LINE_MAX];
    char *argv[CONSOLE_ARGS_MAX];
    size_t l = strlen(line);
    int argc = -1;
    if (l < sizeof copy) {
        memcpy(copy, line, l + 1);
        argc = console_split(copy, argv, CONSOLE_ARGS_MAX);
    }
    bool js = json;
    char **av = argv;
    if (argc > 0) {
        while (argc > 0 && !strcmp(av[0], "--json"))
            js = true, av++, argc--;
        while (argc > 0 && !strcmp(av[argc - 1], "--json"))
            js = true, argc--;
    } else if (argc == 0 && l < sizeof copy) {
        argc = -2;   /* blank line */
    }

    fflush(out);
    size_t start = *len;
    int rc = console_exec_line(c, line, json, out);
    fflush(out);
    const char *ans = *text + start;
    size_t n = *len - start;

    if (rc < CONSOLE_OK || rc > CONSOLE_QUIT)
        abort();
    if (argc == -2) {                                    /* blank: nothing to do */
        if (rc != CONSOLE_OK || n)
            abort();
        return;
    }
    bool quit = argc == 1 && (!strcmp(av[0], "quit") || !strcmp(av[0], "exit"));   /* no arguments */
    bool watch = argc == 2 && !strcmp(av[0], "stats") && !strcmp(av[1], "watch");
    if ((rc == CONSOLE_QUIT) != quit || (rc == CONSOLE_WATCH) != watch)
        abort();
    if (argc == -1 && rc != CONSOLE_USAGE)               /* too long, bad quote, too many words */
        abort();
    if (argc == 0 && rc != CONSOLE_USAGE)                /* only --json */
        abort();
    if (quit || watch) {
        if (n)
            abort();
        if (watch) {                                     /* one frame, then the hang-up ends it */
            if (console_watch(c, hung_up_fd(), out, js, NULL))
                abort();
            fflush(out);
            if (*len == start)
                abort();
        }
        return;
    }
    if (!n || (*text)[*len - 1] != '\n')
        abort();
    if (js) {
        bool done = rc == CONSOLE_OK;
        if (!(done && !strcmp(av[0], "metrics")))
            check_json_answer(ans, n, done, true);   /* stats too carries "ok" */
    } else if ((rc == CONSOLE_ERROR || rc == CONSOLE_USAGE) && strncmp(ans, "error: ", 7)) {
        abort();
    }
}

/* ---- seeds ---- */

static const char *const seeds[] = {
    /* '0': working daemon, text */
    "0help\nstatus\nstats\nrequests\nmodel\nmetrics\nconfig show\nquit\nexit now\n",
    "0config set limits.max_tokens 64\nconfig set dataplane.allow 10.0.0.0/8, ::1\n"
    "config set console.log_level debug\nconfig set model.path /x\nconfig set nosuch.key 1\n"
    "config set limits.rate_limit\nconfig set dataplane.psk 00\nconfig\nconfig show extra\nconfig get x\n",
    "0cancel 101\ncancel 101\ncancel 0x66\ncancel 0147\ncancel -1\ncancel 0\n"
    "cancel 18446744073709551616\ncancel 18446744073709551615\ncancel abc\ncancel\ncancel 1 2\n",
    "0drain\ndrain\nresume\nresume\nreload\nreload now\nshutdown\nshutdown\nlog level debug\n"
    "log level loud\nlog\nlog level\nlog levels info\nstatus\n",
    "0stats watch\n--json stats watch\nstats watch now\nstats --json\n--json --json help --json\n"
    "--json\n  \t \r\n\nnosuch\n",
    "0config set dataplane.allow \"10.0.0.0/8,  ::1\"\nhelp 'a b' \"\"\n'unbalanced\n"
    "config set 'limits.max_tokens' ' 12 '\n\tstatus\r\nconfig set limits.request_timeout_ms 1 2 3\n"
    "help a b c d e f g h i j k l m n o\nhelp a b c d e f g h i j k l m n o p\n",
    /* '4': working daemon, JSON */
    "4help\nstatus\nstats\nrequests\nmodel\nmetrics\nconfig show\ncancel 102\ncancel 9\n"
    "config set limits.max_tokens 7\nconfig set limits.max_tokens 0\nlog level warn\ndrain\n",
    "4cancel \xc3\xa9\nconfig set console.log_level \xe2\x82\xac\n\xe2\x82\xac\nlog level \xc3\xa9\n",
    /* '1' / '5': boundary reports */
    "1status\nrequests\nmodel\n--json status\n--json requests\n--json model\n",
    /* '2' / '6': every op fails */
    "2status\nrequests\ncancel 7\nmodel\ndrain\nresume\nreload\nshutdown\nconfig show\n"
    "config set limits.max_tokens 5\nlog level info\n",
    "6status\nrequests\ncancel 7\nmodel\ndrain\nresume\nreload\nshutdown\nconfig show\n"
    "config set limits.max_tokens 5\nlog level info\n",
    /* '3': ops NULL; 's' / 'w': every callback NULL (text / JSON) */
    "3status\nrequests\ncancel 7\nmodel\ndrain\nresume\nreload\nshutdown\nconfig show\n"
    "config set limits.max_tokens 5\nlog level info\nstats\nmetrics\n",
    "sstatus\nrequests\ncancel 7\nmodel\ndrain\nresume\nreload\nshutdown\nconfig show\n"
    "config set limits.max_tokens 5\nlog level info\n",
    "wstatus\nrequests\ncancel 7\nmodel\ndrain\nconfig show\nconfig set limits.max_tokens 5\n",
    /* '8' / '<': no metrics registry */
    "8stats\nmetrics\nstats watch\nstatus\n",
    "<stats\nmetrics\nstats watch\nstatus\n",
};

/* Seeds built at run time: lines at and past CONSOLE_LINE_MAX. */
static size_t long_seed(int which, const uint8_t **data)
{
    static char buf[2][CONSOLE_LINE_MAX + 256];
    char *b = buf[which];
    if (!b[0]) {
        size_t o = (size_t)snprintf(b, sizeof buf[0], which ? "4config set dataplane.allow " : "0help x");
        size_t line_end = which ? CONSOLE_LINE_MAX - 1 : CONSOLE_LINE_MAX;   /* longest / too long */
        memset(b + o, which ? '9' : 'x', line_end + 1 - o);
        snprintf(b + line_end + 1, sizeof buf[0] - line_end - 1, "\nstatus\n");
    }
    *data = (const uint8_t *)b;
    return strlen(b);
}

size_t fuzz_seed_input(int i, const uint8_t **data)
{
    size_t n = sizeof seeds / sizeof *seeds;
    if (i >= 0 && (size_t)i < n) {
        *data = (const uint8_t *)seeds[i];
        return strlen(seeds[i]);
    }
    if (i >= 0 && (size_t)i < n + 2)
        return long_seed(i - (int)n, data);
    return 0;
}

/* ---- the target ---- */

/* Mode bits of the first byte: 0-1 the daemon (0 working, 1 reporting boundary figures,
 * 2 every op failing, 3 none: bit 6 clear = ops NULL, set = every callback NULL); 2 JSON
 * for every line; 3 no metrics registry. Nothing outlives an input but the read-only
 * registry and one hung-up pipe. */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned mode = data[0];
    struct fuzz_daemon d;
    daemon_reset(&d, mode & 3);
    struct console_ops ops = { &d, fd_status, fd_requests, fd_cancel, fd_model, fd_drain, fd_resume,
                               fd_reload, fd_shutdown, fd_config_read, fd_config_apply, NULL };
    const struct console_ops *use = d.kind != FD_NONE ? &ops : mode & 0x40 ? &null_ops : NULL;
    bool json = mode & 4;
    struct console c;
    console_init(&c, use, mode & 8 ? NULL : registry());

    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    char *lines = malloc(size);   /* the lines, NUL-terminated in place of each '\n' */
    if (!out || !lines)
        abort();
    memcpy(lines, data + 1, size - 1);
    lines[size - 1] = 0;
    for (char *p = lines, *e; p < lines + size - 1; p = e + 1) {
        e = memchr(p, '\n', (size_t)(lines + size - 1 - p));
        if (!e)
            e = lines + size - 1;
        *e = 0;
        run_line(&c, p, json, out, &text, &len);
    }
    fclose(out);
    free(text);
    free(lines);
    return 0;
}
