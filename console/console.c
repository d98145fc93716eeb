/* console.c — the command interpreter every way in shares (socket, serial, SSH): splits a
 * line, runs the command against struct console_ops and the metrics, writes text or JSON. */
#include "console/console_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

void console_init(struct console *c, const struct console_ops *ops, struct metrics *m)
{
    c->ops = ops;
    c->metrics = m;
    c->start_ns = m ? m->start_ns : metrics_now_ns();
}

int console_split(char *line, char **argv, int cap)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p)
            return n;
        if (n == cap)
            return -EINVAL;
        char q = (*p == '"' || *p == '\'') ? *p++ : 0;
        argv[n++] = p;
        if (q) {
            char *e = strchr(p, q);
            if (!e)
                return -EINVAL;
            *e = 0;
            p = e + 1;
        } else {
            while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
                p++;
            if (*p)
                *p++ = 0;
        }
    }
}

/* ---- answers ---- */

/* Bytes of the well-formed UTF-8 sequence at s (RFC 3629: no overlongs, surrogates or code
 * points above U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s)
{
    const unsigned c = s[0];
    if (c < 0x80)
        return 1;
    const size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

/* s as JSON can carry it: each byte that does not start a well-formed UTF-8 sequence becomes
 * U+FFFD (an operator's word may be anything, and a message cut at a byte count may end
 * inside a character). Returns s itself when it is clean, else buf. */
static const char *utf8_clean(const char *s, char *buf, size_t cap)
{
    size_t i = 0, o = 0, k;
    while (s[i] && (k = utf8_seq((const unsigned char *)s + i)))
        i += k;
    if (!s[i])
        return s;
    for (i = 0; s[i] && o + 4 < cap;) {
        k = utf8_seq((const unsigned char *)s + i);
        if (k) {
            if (o + k >= cap)
                break;
            memcpy(buf + o, s + i, k);
            o += k, i += k;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3, i++;
        }
    }
    buf[o] = 0;
    return buf;
}

/* One JSON answer line. o is NULL when json_pack refused a string that is not UTF-8 (a model
 * path in another encoding): the line still says so as JSON, never an empty line. */
static void json_out(FILE *out, json_t *o)
{
    if (!o)
        o = json_pack("{s:b,s:s}", "ok", 0, "error", "the answer holds text that is not UTF-8 and cannot be sent as JSON");
    json_dumpf(o, out, JSON_COMPACT | JSON_ENSURE_ASCII);
    fputc('\n', out);
    json_decref(o);
}

static int fail(FILE *out, bool json, int rc, const char *msg)
{
    /* the operator's words may come back in it: no control byte reaches their terminal */
    char safe[3 * BORA_ERR_MSG_MAX + 256], clean[3 * BORA_ERR_MSG_MAX + 256];
    size_t n = 0;
    for (const unsigned char *q = (const unsigned char *)msg; *q && n + 1 < sizeof safe; q++)
        safe[n++] = *q < 0x20 || *q == 0x7f ? '?' : (char)*q;
    safe[n] = 0;
    if (json)
        json_out(out, json_pack("{s:b,s:s}", "ok", 0, "error", utf8_clean(safe, clean, sizeof clean)));
    else
        fprintf(out, "error: %s\n", safe);
    return rc;
}

static int ok(FILE *out, bool json, const char *msg)
{
    char clean[3 * BORA_ERR_MSG_MAX + 256];
    if (json)
        json_out(out, json_pack("{s:b,s:s}", "ok", 1, "message", utf8_clean(msg, clean, sizeof clean)));
    else
        fprintf(out, "%s\n", msg);
    return CONSOLE_OK;
}

#define NEED_OP(c, op, out, json) \
    do { if (!(c)->ops || !(c)->ops->op) return fail(out, json, CONSOLE_ERROR, #op " is not supported by this daemon"); } while (0)

/* ---- commands ---- */

static const char *const help_lines[] = {
    "help                      this list",
    "status                    model, backend, precision, KV cache, uptime, state",
    "stats [watch]             metrics (watch: refresh every second until a key is pressed)",
    "requests                  queued and running requests, with age",
    "cancel ID                 cancel request ID",
    "model                     shapes, dtypes, bytes, VRAM by category",
    "config show               the running configuration (secrets hidden)",
    "config set KEY VALUE      change a live key (validated as at start-up)",
    "drain | resume            stop / start accepting new requests",
    "reload                    reopen the model; queued requests are kept",
    "log level L               error | warn | info | debug",
    "metrics                   Prometheus text exposition format",
    "shutdown                  stop the daemon (as SIGTERM)",
    "quit                      end this session",
    "Put --json first (or last) for machine-readable output.",
};

static int cmd_help(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    (void)c, (void)argc, (void)argv;
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < BORA_ARRAY_LEN(help_lines); i++)
            json_array_append_new(a, json_string(help_lines[i]));
        json_out(out, json_pack("{s:b,s:o}", "ok", 1, "commands", a));
    } else {
        for (size_t i = 0; i < BORA_ARRAY_LEN(help_lines); i++)
            fprintf(out, "%s\n", help_lines[i]);
    }
    return CONSOLE_OK;
}

static const char *state_name(int s)
{
    static const char *const n[] = { "starting", "serving", "draining", "reloading", "stopping", "failing" };
    return s >= 0 && s < (int)BORA_ARRAY_LEN(n) ? n[s] : "unknown";
}

static int cmd_status(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    (void)argc, (void)argv;
    NEED_OP(c, status, out, json);
    struct console_status st = { 0 };
    struct bora_err err = { { 0 } };
    if (c->ops->status(c->ops->ctx, &st, &err))
        return fail(out, json, CONSOLE_ERROR, err.msg);
    double up = (double)(metrics_now_ns() - c->start_ns) / 1e9;
    if (json) {
        st.problem[sizeof st.problem - 1] = 0;
        json_t *problem = st.problem[0] ? json_string(st.problem) : NULL;   /* NULL too: a path not UTF-8 */
        if (!problem)
            problem = json_null();
        json_out(out, json_pack("{s:b,s:s,s:s,s:s,s:s,s:f,s:s,s:i,s:i,s:o}", "ok", 1, "model", st.model,
                                "backend", st.backend, "precision", st.precision, "kv_cache", st.kv_cache,
                                "uptime_s", up,
                                "state", state_name(st.state), "queued", (int)st.queued,
                                "running", (int)st.running, "problem", problem));
    } else {
        fprintf(out, "model      %s\nbackend    %s\nprecision  %s\nkv cache   %s\nuptime     %.1f s\n"
                "state      %s\nrequests   %u queued, %u running\n", st.model, st.backend,
                st.precision, st.kv_cache, up, state_name(st.state), st.queued, st.running);
        if (st.problem[0])
            fprintf(out, "problem    %.*s\n", (int)sizeof st.problem, st.problem);
    }
    return CONSOLE_OK;
}

void console_snapshot(struct console *c, struct metrics_snapshot *s)
{
    if (c->ops && c->ops->refresh)
        c->ops->refresh(c->ops->ctx);
    if (c->metrics)
        metrics_snapshot_take(c->metrics, s, 0);
    else
        memset(s, 0, sizeof *s);
}

static int cmd_stats(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "watch")))
        return fail(out, json, CONSOLE_USAGE, "usage: stats [watch]");
    if (argc == 2)
        return CONSOLE_WATCH;
    struct metrics_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return fail(out, json, CONSOLE_ERROR, "out of memory");
    console_snapshot(c, s);
    if (json)
        json_out(out, console_stats_json(s));
    else
        console_stats_text(s, out);
    free(s);
    return CONSOLE_OK;
}

static int cmd_metrics(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    (void)argc, (void)argv, (void)json;
    struct metrics_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return fail(out, json, CONSOLE_ERROR, "out of memory");
    console_snapshot(c, s);
    console_prometheus(c, s, out);   /* the exposition format is the machine form */
    free(s);
    return CONSOLE_OK;
}

static int cmd_requests(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    (void)argc, (void)argv;
    NEED_OP(c, requests, out, json);
    struct console_request *r = calloc(CONSOLE_REQUESTS_MAX, sizeof *r);
    struct bora_err err = { { 0 } };
    if (!r)
        return fail(out, json, CONSOLE_ERROR, "out of memory");
    int n = c->ops->requests(c->ops->ctx, r, CONSOLE_REQUESTS_MAX, &err);
    if (n < 0) {
        free(r);
        return fail(out, json, CONSOLE_ERROR, err.msg);
    }
    int shown = n < CONSOLE_REQUESTS_MAX ? n : CONSOLE_REQUESTS_MAX;
    if (json) {
        /* ids are any u64 a client picked; jansson's integers stop at INT64_MAX, so a larger id goes
         * in as a string "\u0001DIGITS" and its digits replace it in the text (no other string here
         * holds a control byte: the client is borad's own peer description) */
        json_t *a = json_array();
        for (int i = 0; i < shown; i++) {
            char big[24];
            snprintf(big, sizeof big, "\001%" PRIu64, r[i].id);
            json_t *id = r[i].id <= (uint64_t)INT64_MAX ? json_integer((json_int_t)r[i].id) : json_string(big);
            json_array_append_new(a, json_pack("{s:o,s:s,s:s,s:I,s:i,s:i}", "id", id,
                "client", r[i].client, "state", r[i].running ? "running" : "queued",
                "age_us", (json_int_t)r[i].age_us, "prompt_tokens", (int)r[i].prompt_tokens,
                "completion_tokens", (int)r[i].completion_tokens));
        }
        json_t *o = json_pack("{s:b,s:i,s:o}", "ok", 1, "total", n, "requests", a);
        char *txt = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        json_decref(o);
        if (!txt) {
            json_out(out, NULL);
        } else {
            const char *p = txt, *q;
            while ((q = strstr(p, "\"\\u0001"))) {
                fwrite(p, 1, (size_t)(q - p), out);
                q += 7;
                const size_t d = strspn(q, "0123456789");
                fwrite(q, 1, d, out);
                p = q + d + (q[d] == '"');
            }
            fputs(p, out);
            fputc('\n', out);
            free(txt);
        }
    } else {
        fprintf(out, "%-20s %-8s %10s %8s %8s  %s\n", "ID", "STATE", "AGE_MS", "PROMPT", "TOKENS", "CLIENT");
        for (int i = 0; i < shown; i++)
            fprintf(out, "%-20" PRIu64 " %-8s %10.1f %8u %8u  %s\n", r[i].id,
                    r[i].running ? "running" : "queued", (double)r[i].age_us / 1e3,
                    r[i].prompt_tokens, r[i].completion_tokens, r[i].client);
        fprintf(out, "%d request%s", n, n == 1 ? "" : "s");
        fprintf(out, n > shown ? " (first %d shown)\n" : "\n", shown);
    }
    free(r);
    return CONSOLE_OK;
}

static int cmd_cancel(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    if (argc != 2)
        return fail(out, json, CONSOLE_USAGE, "usage: cancel ID");
    NEED_OP(c, cancel, out, json);
    char *end;
    errno = 0;
    unsigned long long id = strtoull(argv[1], &end, 10);   /* ids are decimal, as listed: 010 is 10 */
    if (errno || *end || argv[1][0] < '0' || argv[1][0] > '9' || !id) {
        char msg[160];
        snprintf(msg, sizeof msg, "cancel: '%.100s' is not a request id (a positive integer)", argv[1]);
        return fail(out, json, CONSOLE_USAGE, msg);
    }
    struct bora_err err = { { 0 } };
    if (c->ops->cancel(c->ops->ctx, id, &err))
        return fail(out, json, CONSOLE_ERROR, err.msg);
    char msg[64];
    snprintf(msg, sizeof msg, "cancelled %llu", id);
    return ok(out, json, msg);
}

static json_t *shape_json(const struct console_tensor *t)
{
    json_t *a = json_array();
    for (int d = 0; d < t->ndim && d < 4; d++)
        json_array_append_new(a, json_integer(t->shape[d]));
    return a;
}

static int cmd_model(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    (void)argc, (void)argv;
    NEED_OP(c, model, out, json);
    struct console_model *m = calloc(1, sizeof *m);
    struct bora_err err = { { 0 } };
    if (!m)
        return fail(out, json, CONSOLE_ERROR, "out of memory");
    if (c->ops->model(c->ops->ctx, m, &err)) {
        free(m);
        return fail(out, json, CONSOLE_ERROR, err.msg);
    }
    if (json) {
        json_t *t = json_array(), *v = json_object();
        for (int i = 0; i < m->n_tensors && i < CONSOLE_TENSORS_MAX; i++)
            json_array_append_new(t, json_pack("{s:s,s:s,s:o,s:i,s:I}", "name", m->tensor[i].name,
                "dtype", m->tensor[i].dtype, "shape", shape_json(&m->tensor[i]),
                "count", (int)m->tensor[i].count, "bytes", (json_int_t)m->tensor[i].bytes));
        for (int i = 0; i < m->n_vram && i < CONSOLE_VRAM_MAX; i++)
            json_object_set_new(v, m->vram[i].category, json_integer((json_int_t)m->vram[i].bytes));
        json_out(out, json_pack("{s:b,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:I,s:I,s:o,s:o}",
            "ok", 1, "name", m->name, "arch", m->arch, "n_layers", (int)m->n_layers, "dim", (int)m->dim,
            "hidden_dim", (int)m->hidden_dim, "n_heads", (int)m->n_heads, "n_kv_heads", (int)m->n_kv_heads,
            "head_dim", (int)m->head_dim, "vocab", (int)m->vocab, "max_ctx", (int)m->max_ctx,
            "n_params", (json_int_t)m->n_params, "weight_bytes", (json_int_t)m->weight_bytes,
            "tensors", t, "vram", v));
    } else {
        fprintf(out, "model      %s (%s)\nshape      %u layers, dim %u, hidden %u, heads %u/%u kv, "
                "head_dim %u, vocab %u, max_ctx %u\nparams     %" PRIu64 " (%.1f MiB of weights)\n",
                m->name, m->arch, m->n_layers, m->dim, m->hidden_dim, m->n_heads, m->n_kv_heads,
                m->head_dim, m->vocab, m->max_ctx, m->n_params, (double)m->weight_bytes / (1 << 20));
        for (int i = 0; i < m->n_tensors && i < CONSOLE_TENSORS_MAX; i++) {
            const struct console_tensor *t = &m->tensor[i];
            char shape[96] = "";
            size_t len = 0;
            for (int d = 0; d < t->ndim && d < 4; d++)
                len += (size_t)snprintf(shape + len, sizeof shape - len, d ? " x %lld" : "%lld",
                                        (long long)t->shape[d]);
            fprintf(out, "  %-36s %-6s %-22s x%-4u %10.2f MiB\n", t->name, t->dtype, shape, t->count,
                    (double)t->bytes / (1 << 20));
        }
        for (int i = 0; i < m->n_vram && i < CONSOLE_VRAM_MAX; i++)
            fprintf(out, "vram %-16s %10.2f MiB\n", m->vram[i].category, (double)m->vram[i].bytes / (1 << 20));
    }
    free(m);
    return CONSOLE_OK;
}

static int simple_op(struct console *c, int (*op)(void *, struct bora_err *), const char *name,
                     const char *done, bool json, FILE *out)
{
    if (!c->ops || !op) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s is not supported by this daemon", name);
        return fail(out, json, CONSOLE_ERROR, msg);
    }
    struct bora_err err = { { 0 } };
    if (op(c->ops->ctx, &err))
        return fail(out, json, CONSOLE_ERROR, err.msg);
    return ok(out, json, done);
}

static int cmd_control(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    if (argc != 1) {
        char msg[64];
        snprintf(msg, sizeof msg, "usage: %s (no arguments)", argv[0]);
        return fail(out, json, CONSOLE_USAGE, msg);
    }
    const struct console_ops *o = c->ops;
    if (!strcmp(argv[0], "drain"))
        return simple_op(c, o ? o->drain : NULL, "drain", "draining: new requests are refused", json, out);
    if (!strcmp(argv[0], "resume"))
        return simple_op(c, o ? o->resume : NULL, "resume", "serving: new requests are accepted", json, out);
    if (!strcmp(argv[0], "reload"))
        return simple_op(c, o ? o->reload : NULL, "reload", "model reloaded", json, out);
    return simple_op(c, o ? o->shutdown : NULL, "shutdown", "shutting down", json, out);
}

/* ---- config ---- */

static bool key_secret(const char *key)
{
    return !strcmp(key, "dataplane.psk") || !strcmp(key, "console.password_hash");
}

static int config_show(struct console *c, const struct bora_config *cfg, bool json, FILE *out)
{
    (void)c;
    if (!json) {
        if (config_dump(cfg, out, 0))
            return fail(out, json, CONSOLE_ERROR, "config show: writing failed");
        return CONSOLE_OK;
    }
    json_t *o = json_object(), *live = json_array();
    char val[CONFIG_VALUE_MAX + 64];
    const char *k;
    for (size_t i = 0; (k = config_key_name(i)); i++) {
        if (key_secret(k))
            json_object_set_new(o, k, config_get(cfg, k, val, sizeof val) > 0 ? json_string("(set, hidden)")
                                                                               : json_string(""));
        else if (config_get(cfg, k, val, sizeof val) >= 0)
            json_object_set_new(o, k, json_string(val));
        if (config_key_is_live(k) == 1)
            json_array_append_new(live, json_string(k));
    }
    json_out(out, json_pack("{s:b,s:o,s:o}", "ok", 1, "config", o, "live", live));
    return CONSOLE_OK;
}

/* Checks and applies one live key: known, live, valid on the running config, accepted. */
static int config_change(struct console *c, const char *key, const char *value, bool json, FILE *out)
{
    char msg[BORA_ERR_MSG_MAX + 64];
    int live = config_key_is_live(key);
    if (live < 0) {
        snprintf(msg, sizeof msg, "config set: unknown key '%.100s' (see 'config show')", key);
        return fail(out, json, CONSOLE_USAGE, msg);
    }
    if (!live) {
        snprintf(msg, sizeof msg, "config set: key '%.100s' is not live: change it in the file and restart borad", key);
        return fail(out, json, CONSOLE_ERROR, msg);
    }
    if (!c->ops || !c->ops->config_read || !c->ops->config_apply)
        return fail(out, json, CONSOLE_ERROR, "config set is not supported by this daemon");
    struct bora_config *cfg = malloc(sizeof *cfg);
    struct bora_err err = { { 0 } };
    int rc = CONSOLE_ERROR;
    if (!cfg)
        return fail(out, json, CONSOLE_ERROR, "out of memory");
    if (c->ops->config_read(c->ops->ctx, cfg, &err) ||
        config_set(cfg, key, value, &err) ||          /* validated as at start-up */
        c->ops->config_apply(c->ops->ctx, key, value, &err)) {
        rc = fail(out, json, CONSOLE_ERROR, err.msg);
    } else {
        char now[CONFIG_VALUE_MAX + 64];
        config_get(cfg, key, now, sizeof now);
        snprintf(msg, sizeof msg, "%s = %s", key, key_secret(key) ? "(set, hidden)" : now);
        rc = ok(out, json, msg);
    }
    free(cfg);
    return rc;
}

/* Joins argv[from..argc) with single blanks into buf (a value may hold blanks). */
static void join_words(char *buf, size_t n, int argc, char **argv, int from)
{
    size_t len = 0;
    buf[0] = 0;
    for (int i = from; i < argc && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, i > from ? " %s" : "%s", argv[i]);
}

static int cmd_config(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    if (argc == 2 && !strcmp(argv[1], "show")) {
        if (!c->ops || !c->ops->config_read)
            return fail(out, json, CONSOLE_ERROR, "config show is not supported by this daemon");
        struct bora_config *cfg = malloc(sizeof *cfg);
        struct bora_err err = { { 0 } };
        if (!cfg)
            return fail(out, json, CONSOLE_ERROR, "out of memory");
        int rc = c->ops->config_read(c->ops->ctx, cfg, &err) ? fail(out, json, CONSOLE_ERROR, err.msg)
                                                            : config_show(c, cfg, json, out);
        free(cfg);
        return rc;
    }
    if (argc >= 4 && !strcmp(argv[1], "set")) {
        char value[CONSOLE_LINE_MAX];
        join_words(value, sizeof value, argc, argv, 3);
        return config_change(c, argv[2], value, json, out);
    }
    if (argc == 3 && !strcmp(argv[1], "set")) {   /* a forgotten value is not an empty one: "" says that */
        char m[CONSOLE_LINE_MAX + 64];
        snprintf(m, sizeof m, "config set %s: no VALUE (\"\" sets an empty value)", argv[2]);
        return fail(out, json, CONSOLE_USAGE, m);
    }
    return fail(out, json, CONSOLE_USAGE, "usage: config show | config set KEY VALUE");
}

static int cmd_log(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    if (argc != 3 || strcmp(argv[1], "level"))
        return fail(out, json, CONSOLE_USAGE, "usage: log level error|warn|info|debug");
    return config_change(c, "console.log_level", argv[2], json, out);
}

static int cmd_quit(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    (void)c, (void)argc, (void)argv, (void)json, (void)out;
    return CONSOLE_QUIT;
}

static const struct {
    const char *name;
    int (*fn)(struct console *c, int argc, char **argv, bool json, FILE *out);
    bool bare;   /* takes no arguments: a stray word is a usage error, not ignored */
} commands[] = {
    { "help", cmd_help, true }, { "status", cmd_status, true }, { "stats", cmd_stats, false },
    { "requests", cmd_requests, true }, { "cancel", cmd_cancel, false }, { "model", cmd_model, true },
    { "config", cmd_config, false }, { "drain", cmd_control, false }, { "resume", cmd_control, false },
    { "reload", cmd_control, false }, { "shutdown", cmd_control, false }, { "log", cmd_log, false },
    { "metrics", cmd_metrics, true }, { "quit", cmd_quit, true }, { "exit", cmd_quit, true },
};

int console_exec(struct console *c, int argc, char **argv, bool json, FILE *out)
{
    /* "--json" may come first or last */
    while (argc > 0 && !strcmp(argv[0], "--json")) {
        json = true;
        argv++, argc--;
    }
    while (argc > 0 && !strcmp(argv[argc - 1], "--json")) {
        json = true;
        argc--;
    }
    if (argc == 0)
        return fail(out, json, CONSOLE_USAGE, "no command (try 'help')");
    for (size_t i = 0; i < BORA_ARRAY_LEN(commands); i++)
        if (!strcmp(argv[0], commands[i].name)) {
            if (commands[i].bare && argc > 1) {
                char msg[64];
                snprintf(msg, sizeof msg, "usage: %s (no arguments)", commands[i].name);
                return fail(out, json, CONSOLE_USAGE, msg);
            }
            return commands[i].fn(c, argc, argv, json, out);
        }
    char msg[160];   /* (fail shows its control bytes as '?') */
    snprintf(msg, sizeof msg, "unknown command '%.100s' (try 'help')", argv[0]);
    return fail(out, json, CONSOLE_USAGE, msg);
}

int console_exec_line(struct console *c, const char *line, bool json, FILE *out)
{
    char buf[CONSOLE_LINE_MAX];
    char *argv[CONSOLE_ARGS_MAX];
    size_t len = strlen(line);
    if (len >= sizeof buf)
        return fail(out, json, CONSOLE_USAGE, "command line too long");
    memcpy(buf, line, len + 1);
    int n = console_split(buf, argv, CONSOLE_ARGS_MAX);
    if (n < 0)
        return fail(out, json, CONSOLE_USAGE, "unbalanced quote or too many words");
    if (n == 0)
        return CONSOLE_OK;
    return console_exec(c, n, argv, json, out);
}
