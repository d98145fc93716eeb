/* console_double.c — the stand-in daemon behind console tests, and a Prometheus text
 * checker written from the exposition format rules (independent of console_stats.c). */
#include "tests/support/console_double.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int d_status(void *ctx, struct console_status *o, struct bora_err *err)
{
    (void)err;
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    snprintf(o->model, sizeof o->model, "%s", d->cfg.model.path[0] ? d->cfg.model.path : "test-double");
    snprintf(o->backend, sizeof o->backend, "cpu");
    snprintf(o->precision, sizeof o->precision, "bf16");
    snprintf(o->kv_cache, sizeof o->kv_cache, "fp8");
    o->state = d->state;
    o->queued = o->running = 0;
    for (int i = 0; i < d->n_req; i++)
        *(d->req[i].running ? &o->running : &o->queued) += 1;
    pthread_mutex_unlock(&d->lock);
    return 0;
}

static int d_requests(void *ctx, struct console_request *o, size_t cap, struct bora_err *err)
{
    (void)err;
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    int n = d->n_req;
    for (int i = 0; i < n && (size_t)i < cap; i++)
        o[i] = d->req[i];
    pthread_mutex_unlock(&d->lock);
    return n;
}

static int d_cancel(void *ctx, uint64_t id, struct bora_err *err)
{
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    for (int i = 0; i < d->n_req; i++)
        if (d->req[i].id == id) {
            d->req[i] = d->req[--d->n_req];
            d->cancels++;
            pthread_mutex_unlock(&d->lock);
            return 0;
        }
    pthread_mutex_unlock(&d->lock);
    return bora_errf(err, -ENOENT, "cancel: no request %llu (queued or running)", (unsigned long long)id);
}

static int d_model(void *ctx, struct console_model *m, struct bora_err *err)
{
    (void)ctx, (void)err;
    snprintf(m->name, sizeof m->name, "double");
    snprintf(m->arch, sizeof m->arch, "MistralForCausalLM");
    m->n_layers = 2, m->dim = 64, m->hidden_dim = 128, m->n_heads = 4, m->n_kv_heads = 2;
    m->head_dim = 16, m->vocab = 1000, m->max_ctx = 512;
    m->n_tensors = 1;
    snprintf(m->tensor[0].name, sizeof m->tensor[0].name, "layers.*.attention.wq");
    snprintf(m->tensor[0].dtype, sizeof m->tensor[0].dtype, "bf16");
    m->tensor[0].ndim = 2, m->tensor[0].shape[0] = 64, m->tensor[0].shape[1] = 64;
    m->tensor[0].count = 2, m->tensor[0].bytes = 2 * 64 * 64 * 2;
    m->weight_bytes = m->tensor[0].bytes, m->n_params = 2 * 64 * 64;
    m->n_vram = 1;
    snprintf(m->vram[0].category, sizeof m->vram[0].category, "weights");
    m->vram[0].bytes = m->weight_bytes;
    return 0;
}

static int set_state(struct console_double *d, int from, int to, const char *what, struct bora_err *err)
{
    pthread_mutex_lock(&d->lock);
    int ok = d->state == from;
    if (ok)
        d->state = to;
    pthread_mutex_unlock(&d->lock);
    return ok ? 0 : bora_errf(err, -EALREADY, "%s: not possible in this state", what);
}

static int d_drain(void *ctx, struct bora_err *err)
{
    return set_state(ctx, CONSOLE_STATE_SERVING, CONSOLE_STATE_DRAINING, "drain", err);
}
static int d_resume(void *ctx, struct bora_err *err)
{
    return set_state(ctx, CONSOLE_STATE_DRAINING, CONSOLE_STATE_SERVING, "resume", err);
}
static int d_reload(void *ctx, struct bora_err *err)
{
    (void)err;
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    d->reloads++;
    pthread_mutex_unlock(&d->lock);
    return 0;
}
static int d_shutdown(void *ctx, struct bora_err *err)
{
    (void)err;
    struct console_double *d = ctx;
    atomic_store_explicit(&d->shutdown, true, memory_order_release);
    return 0;
}
static int d_config_read(void *ctx, struct bora_config *out, struct bora_err *err)
{
    (void)err;
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    *out = d->cfg;
    pthread_mutex_unlock(&d->lock);
    return 0;
}
static int d_config_apply(void *ctx, const char *key, const char *value, struct bora_err *err)
{
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    int rc = config_set(&d->cfg, key, value, err);
    if (!rc) {
        snprintf(d->last_key, sizeof d->last_key, "%s", key);
        snprintf(d->last_value, sizeof d->last_value, "%s", value);
    }
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static void d_refresh(void *ctx)
{
    struct console_double *d = ctx;
    pthread_mutex_lock(&d->lock);
    d->refreshes++;
    if (d->gauges && d->gpu_total) {
        metrics_gauge_set(d->gauges, METRICS_GPU_MEM_USED, d->gpu_used);
        metrics_gauge_set(d->gauges, METRICS_GPU_MEM_TOTAL, d->gpu_total);
    }
    pthread_mutex_unlock(&d->lock);
}

void console_double_init(struct console_double *d, const struct bora_config *cfg)
{
    memset(d, 0, sizeof *d);
    pthread_mutex_init(&d->lock, NULL);
    if (cfg)
        d->cfg = *cfg;
    else
        config_defaults(&d->cfg);
    d->state = CONSOLE_STATE_SERVING;
    static const struct console_request r[] = {
        { 101, "udp 127.0.0.1:5000", true, 2500000, 12, 40 },
        { 102, "tcp #3", false, 120000, 7, 0 },
        { 103, "udp 127.0.0.1:5001", false, 5000, 9, 0 },
    };
    memcpy(d->req, r, sizeof r);
    d->n_req = 3;
    d->ops = (struct console_ops){ d, d_status, d_requests, d_cancel, d_model, d_drain, d_resume,
                                   d_reload, d_shutdown, d_config_read, d_config_apply, d_refresh };
}

void console_double_fini(struct console_double *d)
{
    pthread_mutex_destroy(&d->lock);
}

/* ---- Prometheus text checker ---- */

static bool name_ok(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

static int bad(char *why, size_t n, int line, const char *what)
{
    snprintf(why, n, "line %d: %s", line, what);
    return -1;
}

struct prom_family {
    char name[128], type[16];
    bool help, samples;
    double last_le, last_bucket, inf;
    bool have_inf;
};

/* Parses labels "{a=\"x\",b=\"y\"}" at *p; stores le's value if present. 0 or -1. */
static int labels_parse(const char **p, char *le, size_t le_n)
{
    const char *s = *p;
    le[0] = 0;
    if (*s != '{')
        return 0;
    s++;
    while (*s != '}') {
        const char *k = s;
        while (isalnum((unsigned char)*s) || *s == '_')
            s++;
        if (s == k || !name_ok(k, (size_t)(s - k)) || *s != '=' || s[1] != '"')
            return -1;
        bool is_le = s - k == 2 && !strncmp(k, "le", 2);
        s += 2;
        const char *v = s;
        while (*s && *s != '"')
            s += *s == '\\' && s[1] ? 2 : 1;
        if (*s != '"')
            return -1;
        if (is_le)
            snprintf(le, le_n, "%.*s", (int)(s - v), v);
        s++;
        if (*s == ',')
            s++;
        else if (*s != '}')
            return -1;
    }
    *p = s + 1;
    return 0;
}

static double value_parse(const char *s, bool *ok)
{
    char *end;
    if (!strcmp(s, "+Inf"))
        return INFINITY;
    if (!strcmp(s, "-Inf"))
        return -INFINITY;
    if (!strcmp(s, "NaN"))
        return NAN;
    double v = strtod(s, &end);
    *ok = end != s && *end == 0;
    return v;
}

/* Checks one sample line against the current family f. */
static int sample_check(struct prom_family *f, const char *l, int ln, char *why, size_t wn)
{
    const char *p = l;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
        p++;
    size_t nlen = (size_t)(p - l);
    if (!name_ok(l, nlen))
        return bad(why, wn, ln, "bad metric name");
    char le[64];
    if (labels_parse(&p, le, sizeof le) || *p != ' ')
        return bad(why, wn, ln, "bad labels or missing value");
    bool ok = true;
    double v = value_parse(p + 1, &ok);
    if (!ok)
        return bad(why, wn, ln, "bad value");
    size_t fl = strlen(f->name);
    if (!f->type[0] || nlen < fl || strncmp(l, f->name, fl))
        return bad(why, wn, ln, "sample outside its # TYPE family");
    const char *suffix = l + fl;
    size_t slen = nlen - fl;
    if (strcmp(f->type, "histogram")) {
        if (slen)
            return bad(why, wn, ln, "sample name differs from its family");
    } else if (slen == 7 && !strncmp(suffix, "_bucket", 7)) {
        bool lok = true;
        double b = value_parse(le, &lok);
        if (!le[0] || !lok)
            return bad(why, wn, ln, "histogram bucket without a numeric le label");
        if (f->samples && (b <= f->last_le || v < f->last_bucket))
            return bad(why, wn, ln, "histogram buckets not increasing in le or not cumulative");
        f->last_le = b, f->last_bucket = v;
        if (isinf(b))
            f->have_inf = true, f->inf = v;
    } else if (slen == 6 && !strncmp(suffix, "_count", 6)) {
        if (!f->have_inf || f->inf != v)
            return bad(why, wn, ln, "histogram _count differs from the +Inf bucket (or no +Inf)");
    } else if (!(slen == 4 && !strncmp(suffix, "_sum", 4))) {
        return bad(why, wn, ln, "histogram sample is not _bucket, _sum or _count");
    }
    f->samples = true;
    return 0;
}

int prom_check(const char *text, char *why, size_t wn, int *n_samples)
{
    struct prom_family f = { .last_le = -INFINITY };
    char seen[64][128];
    int n_seen = 0, ln = 0, samples = 0;
    const char *p = text;
    if (!*text)
        return bad(why, wn, 0, "empty exposition");
    while (*p) {
        const char *e = strchr(p, '\n');
        if (!e)
            return bad(why, wn, ln + 1, "last line has no newline");
        char l[512];
        snprintf(l, sizeof l, "%.*s", (int)(e - p), p);
        p = e + 1;
        ln++;
        if (!strncmp(l, "# HELP ", 7) || !strncmp(l, "# TYPE ", 7)) {
            char name[128] = "", rest[256] = "";
            if (sscanf(l + 7, "%127s %255[^\n]", name, rest) < 1 || !name_ok(name, strlen(name)))
                return bad(why, wn, ln, "bad metric name in HELP/TYPE");
            if (strcmp(name, f.name)) {
                for (int i = 0; i < n_seen; i++)
                    if (!strcmp(seen[i], name))
                        return bad(why, wn, ln, "metric family appears twice");
                if (f.type[0] && !strcmp(f.type, "histogram") && !f.have_inf)
                    return bad(why, wn, ln, "previous histogram has no +Inf bucket");
                f = (struct prom_family){ .last_le = -INFINITY };
                snprintf(f.name, sizeof f.name, "%s", name);
                if (n_seen < 64)
                    snprintf(seen[n_seen++], 128, "%s", name);
            }
            if (l[2] == 'T') {
                if (f.samples || f.type[0])
                    return bad(why, wn, ln, "TYPE after samples or twice");
                if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
                    strcmp(rest, "summary") && strcmp(rest, "untyped"))
                    return bad(why, wn, ln, "unknown TYPE");
                snprintf(f.type, sizeof f.type, "%.15s", rest);   /* one of the names above */
            }
            continue;
        }
        if (l[0] == '#' || !l[0])
            continue;
        if (sample_check(&f, l, ln, why, wn))
            return -1;
        samples++;
    }
    if (n_samples)
        *n_samples = samples;
    return 0;
}

double prom_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, series, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}
