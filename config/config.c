/* config.c — reads bora's INI file with inih, applies defaults, validates every key and the
 * rules between keys, and reports each problem as "file:line: key 'section.key': what (got 'v')".
 * inih (Debian build) gives its handler no line number, so we feed it through our own reader,
 * which counts lines, also catches what inih would only flag by number, and strips leading
 * blanks so that inih's multi-line continuation never glues two lines together. */
#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_keys.h"

/* ---- defaults ---- */

void config_defaults(struct bora_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->model.backend = CONFIG_BACKEND_AUTO;
    cfg->model.precision = CONFIG_PRECISION_AUTO;
    cfg->model.max_ctx = 0;
    cfg->model.prefix_cache = true;

    cfg->engine.threads = 0;
    cfg->engine.tensor_parallel = 1;
    cfg->engine.prefill_chunk = 2048;
    cfg->engine.kv_dtype = CONFIG_KV_BF16;

    cfg->dataplane.udp = (struct config_endpoint){ .family = AF_INET, .host = "127.0.0.1", .port = 7474 };
    cfg->dataplane.tcp = (struct config_endpoint){ .family = AF_INET, .host = "127.0.0.1", .port = 7474 };
    cfg->dataplane.dpdk_port = 7474;
    cfg->dataplane.rate_limit = 0;
    cfg->dataplane.max_conns_per_addr = 0;

    cfg->limits.queue_depth = 64;
    cfg->limits.max_prompt_bytes = 65536;
    cfg->limits.max_tokens = 512;
    cfg->limits.request_timeout_ms = 60000;
    cfg->limits.shutdown_grace_ms = 10000;

    snprintf(cfg->console.socket, sizeof cfg->console.socket, "%s", "/run/bora/console.sock");
    cfg->console.socket_mode = 0600;
    cfg->console.baud = 115200;
    cfg->console.max_login_failures = 5;
    cfg->console.idle_timeout_s = 900;
    cfg->console.log_level = CONFIG_LOG_INFO;
}

/* ---- messages ---- */

/* Copies a value for a message: printable ASCII kept, other bytes as \xNN, long ones cut. */
static void quote_value(const char *v, char *out, size_t n)
{
    size_t at = 0;
    for (; *v && at + 8 < n; v++) {
        unsigned char c = (unsigned char)*v;
        if (at >= 80) {
            memcpy(out + at, "...", 3);
            at += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\')
            out[at++] = (char)c;
        else
            at += (size_t)snprintf(out + at, n - at, "\\x%02x", c);
    }
    out[at] = 0;
}

struct parse_ctx {
    struct bora_config *cfg;
    struct config_diag *diag;
    const char *name;              /* for messages */
    const char *p, *end;           /* unread text */
    int line;                      /* of the line inih is handling */
    int n_errors;                  /* found so far (also without diag) */
    int first_syntax_line;         /* first line our reader found malformed; 0 = none */
    int section_line[8];           /* where each known section was opened; 0 = not yet */
    int key_line[CONFIG_KEYS_MAX]; /* where each key was set; 0 = not set */
    bool key_bad[CONFIG_KEYS_MAX]; /* its value was rejected (rules on it are moot) */
};

__attribute__((format(printf, 3, 4)))
static void diag_add(struct parse_ctx *c, int line, const char *fmt, ...)
{
    struct config_diag *d = c->diag;
    c->n_errors++;
    if (!d)
        return;
    if (d->n_errors < CONFIG_DIAG_MAX) {
        char *m = d->msg[d->n_errors];
        size_t at = (size_t)(line > 0 ? snprintf(m, BORA_ERR_MSG_MAX, "%s:%d: ", c->name, line)
                                      : snprintf(m, BORA_ERR_MSG_MAX, "%s: ", c->name));
        va_list ap;
        va_start(ap, fmt);
        if (at < BORA_ERR_MSG_MAX)
            vsnprintf(m + at, BORA_ERR_MSG_MAX - at, fmt, ap);
        va_end(ap);
    }
    d->n_errors++;
}

static int section_index(const char *name)
{
    for (int i = 0; config_sections[i]; i++)
        if (!strcmp(config_sections[i], name))
            return i;
    return -1;
}

/* Levenshtein distance of two short names (bounded by inih's 50-byte names). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= 64 || lb >= 64)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest key of the section, or NULL when nothing is close. */
static const char *suggest_key(const char *section, const char *name)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < config_n_keys; i++) {
        if (strcmp(config_keys[i].section, section))
            continue;
        size_t d = edit_distance(config_keys[i].name, name);
        if (d < best_d) {
            best_d = d;
            best = config_keys[i].full;
        }
    }
    return best;
}

/* ---- the line reader inih pulls from ---- */

/* inih's own search: the first of chars, stopping at a ';' that follows a blank. */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
    bool was_space = false;
    while (*s && !strchr(chars, *s) && !(was_space && *s == ';')) {
        was_space = *s == ' ' || *s == '\t' || *s == '\r';
        s++;
    }
    return s;
}

static void mark_syntax(struct parse_ctx *c)
{
    if (!c->first_syntax_line)
        c->first_syntax_line = c->line;
}

static void check_section_line(struct parse_ctx *c, const char *line)
{
    char got[128], name[64];
    const char *close = find_chars_or_comment(line + 1, "]");
    quote_value(line, got, sizeof got);
    if (*close != ']') {
        mark_syntax(c);
        diag_add(c, c->line, "section header without ']' (got '%s')", got);
        return;
    }
    const char *rest = close + 1;
    rest += strspn(rest, " \t\r");
    if (*rest && *rest != ';' && *rest != '#')
        diag_add(c, c->line, "text after the section header (got '%s')", got);
    size_t len = (size_t)(close - line - 1);
    if (len >= sizeof name)
        len = sizeof name - 1;
    memcpy(name, line + 1, len);
    name[len] = 0;
    int s = section_index(name);
    quote_value(name, got, sizeof got);
    if (s < 0)
        diag_add(c, c->line, "section '%s': unknown section (expected model, engine, dataplane, "
                 "limits or console)", got);
    else if (c->section_line[s])
        diag_add(c, c->line, "section '%s': repeated (first opened on line %d)", got,
                 c->section_line[s]);
    else
        c->section_line[s] = c->line;
}

/* Flags what inih would reject by number only, with a message of its own. */
static void check_line(struct parse_ctx *c, const char *line)
{
    char got[128];
    if (!*line || *line == ';' || *line == '#' || *line == '\r')
        return;
    if (*line == '[') {
        check_section_line(c, line);
        return;
    }
    const char *sep = find_chars_or_comment(line, "=:");
    if (*sep != '=' && *sep != ':') {
        mark_syntax(c);
        quote_value(line, got, sizeof got);
        diag_add(c, c->line, "expected 'key = value', '[section]' or a comment (got '%s')", got);
    }
}

static char *reader_next(char *str, int num, void *stream)
{
    struct parse_ctx *c = stream;
    if (c->p >= c->end)
        return NULL;
    const char *s = c->p;
    const char *nl = memchr(s, '\n', (size_t)(c->end - s));
    const char *e = nl ? nl : c->end;
    c->p = nl ? nl + 1 : c->end;
    c->line++;
    if (c->line == 1 && e - s >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
        s += 3;                                  /* UTF-8 byte order mark */
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;                                     /* no multi-line values */
    while (e > s && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
        e--;                                     /* CRLF files */
    str[0] = 0;
    if (memchr(s, 0, (size_t)(e - s))) {
        diag_add(c, c->line, "line contains a NUL byte");
        return str;
    }
    if (e - s > num - 3) {
        diag_add(c, c->line, "line too long (%td bytes, at most %d)", e - s, num - 3);
        return str;
    }
    memcpy(str, s, (size_t)(e - s));
    str[e - s] = 0;
    check_line(c, str);
    return str;
}

/* ---- the key handler inih calls ---- */

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct parse_ctx *c = user;
    char got[128], why[256];
    quote_value(value, got, sizeof got);
    if (!*section) {
        quote_value(name, why, sizeof why);
        diag_add(c, c->line, "key '%s': outside any section (got '%s')", why, got);
        return 1;
    }
    if (section_index(section) < 0)
        return 1;                                /* reported with the section header */
    const struct config_key *k = config_key_find(section, name);
    if (!k) {
        const char *hint = suggest_key(section, name);
        quote_value(name, why, sizeof why);
        diag_add(c, c->line, "key '%s.%s': unknown key%s%s%s (got '%s')", section, why,
                 hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "", got);
        return 1;
    }
    size_t i = (size_t)(k - config_keys);
    if (c->key_line[i]) {
        diag_add(c, c->line, "key '%s': duplicate, first set on line %d (got '%s')", k->full,
                 c->key_line[i], got);
        return 1;
    }
    c->key_line[i] = c->line;
    if (k->parse(k, value, c->cfg, why, sizeof why)) {
        c->key_bad[i] = true;
        diag_add(c, c->line, "key '%s': %s (got '%s')", k->full, why, got);
    }
    return 1;
}

/* ---- rules between keys ---- */

struct config_rule {
    const char *key;       /* the key the message names */
    const char *cause;     /* the key whose value makes the rule apply */
    bool (*broken)(const struct bora_config *cfg);
    const char *why;
};

static bool dpdk_without_ip(const struct bora_config *cfg)
{
    return cfg->dataplane.dpdk[0] && !cfg->dataplane.dpdk_ip;
}

static bool no_listener(const struct bora_config *cfg)
{
    return !cfg->dataplane.udp.family && !cfg->dataplane.tcp.family && !cfg->dataplane.dpdk[0];
}

static bool tp_on_cpu(const struct bora_config *cfg)
{
    return cfg->engine.tensor_parallel > 1 && cfg->model.backend == CONFIG_BACKEND_CPU;
}

/* Settings the format reserves that this build does not implement: refused, not ignored. */
static bool tp_not_built(const struct bora_config *cfg)
{
    return cfg->engine.tensor_parallel > 1 && cfg->model.backend != CONFIG_BACKEND_CPU;
}

static const struct config_rule config_rules[] = {
    { "dataplane.dpdk_ip", "dataplane.dpdk", dpdk_without_ip, "required when dataplane.dpdk is set" },
    { "dataplane.udp", "dataplane.tcp", no_listener,
      "udp, tcp and dpdk are all off: borad would have nothing to serve on (set at least one)" },
    { "engine.tensor_parallel", "model.backend", tp_on_cpu, "must be 1 with model.backend = cpu" },
    { "engine.tensor_parallel", "engine.tensor_parallel", tp_not_built,
      "must be 1: this build serves a model from one GPU (tensor parallelism is not implemented)" },
};

static void rule_got(const struct bora_config *cfg, const char *key, char *got, size_t n)
{
    char v[CONFIG_VALUE_MAX * 2 + 8];
    if (config_get(cfg, key, v, sizeof v) < 0)
        v[0] = 0;
    quote_value(v, got, n);
}

static void check_rules_in_file(struct parse_ctx *c)
{
    for (size_t r = 0; r < BORA_ARRAY_LEN(config_rules); r++) {
        const struct config_rule *rule = &config_rules[r];
        if (!rule->broken(c->cfg))
            continue;
        const struct config_key *k = config_key_find_full(rule->key);
        const struct config_key *cause = config_key_find_full(rule->cause);
        if (c->key_bad[k - config_keys] || c->key_bad[cause - config_keys])
            continue;
        int line = c->key_line[k - config_keys];
        if (!line)
            line = c->key_line[cause - config_keys];
        char got[128];
        rule_got(c->cfg, rule->key, got, sizeof got);
        diag_add(c, line, "key '%s': %s (got '%s')", rule->key, rule->why, got);
    }
}

int config_validate(const struct bora_config *cfg, struct bora_err *err)
{
    for (size_t r = 0; r < BORA_ARRAY_LEN(config_rules); r++) {
        const struct config_rule *rule = &config_rules[r];
        if (rule->broken(cfg)) {
            char got[128];
            rule_got(cfg, rule->key, got, sizeof got);
            return bora_errf(err, -EINVAL, "key '%s': %s (got '%s')", rule->key, rule->why, got);
        }
    }
    return 0;
}

/* ---- parsing a text and a file ---- */

_Static_assert(CONFIG_KEYS_MAX <= CONFIG_KEY_LINES, "raise CONFIG_KEY_LINES");

int config_parse(struct bora_config *cfg, const char *name, const char *text, size_t len,
                 struct config_diag *diag)
{
    struct parse_ctx c = { .cfg = cfg, .diag = diag, .name = name ? name : "(config)",
                           .p = text, .end = text + len };
    if (diag)
        diag->n_errors = 0;
    config_defaults(cfg);
    int rc = ini_parse_stream(reader_next, &c, on_pair, &c);
    if (rc < 0)
        diag_add(&c, 0, "the INI reader failed (%d)", rc);
    else if (rc > 0 && rc != c.first_syntax_line)
        diag_add(&c, rc, "syntax error");
    check_rules_in_file(&c);
    for (size_t i = 0; i < CONFIG_KEYS_MAX; i++)
        cfg->key_line[i] = c.key_line[i] > 0 ? (uint32_t)c.key_line[i] : 0;
    return c.n_errors ? -EINVAL : 0;
}

static int read_file(const char *path, char **text, size_t *len, struct config_diag *diag)
{
    struct parse_ctx c = { .diag = diag, .name = path };
    /* O_NONBLOCK: a FIFO is refused below instead of waiting for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        diag_add(&c, 0, "cannot open: %s", strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (S_ISREG(st.st_mode))
            diag_add(&c, 0, "cannot read: %s", strerror(e));
        else
            diag_add(&c, 0, "not a regular file (%s)", S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                                                        : "a device or socket");
        close(fd);
        return S_ISREG(st.st_mode) ? -e : S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        diag_add(&c, 0, "cannot open: %s", strerror(e));
        return -e;
    }
    char *buf = malloc(CONFIG_FILE_MAX + 1);
    errno = 0;
    size_t n = buf ? fread(buf, 1, CONFIG_FILE_MAX + 1, f) : 0;
    int rc = !buf ? -ENOMEM : ferror(f) ? -(errno ? errno : EIO) : n > CONFIG_FILE_MAX ? -EFBIG : 0;
    fclose(f);
    if (rc) {
        diag_add(&c, 0, "cannot read: %s", rc == -EFBIG ? "file larger than 1 MiB" : strerror(-rc));
        free(buf);
        return rc;
    }
    *text = buf;
    *len = n;
    return 0;
}

int config_load(struct bora_config *cfg, const char *path, struct config_diag *diag)
{
    char *text;
    size_t len;
    if (diag)
        diag->n_errors = 0;
    config_defaults(cfg);
    int rc = read_file(path, &text, &len, diag);
    if (rc)
        return rc;
    rc = config_parse(cfg, path, text, len, diag);
    free(text);
    return rc;
}

/* ---- single keys ---- */

int config_set(struct bora_config *cfg, const char *key, const char *value, struct bora_err *err)
{
    const struct config_key *k = config_key_find_full(key);
    char got[128], why[256], v[CONFIG_VALUE_MAX + 1];
    quote_value(value, got, sizeof got);
    if (!k) {
        quote_value(key, why, sizeof why);
        return bora_errf(err, -ENOENT, "key '%s': unknown key (got '%s')", why, got);
    }
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len > CONFIG_VALUE_MAX)
        return bora_errf(err, -EINVAL, "key '%s': too long (%zu bytes, at most %d) (got '%s')",
                         k->full, len, CONFIG_VALUE_MAX, got);
    memcpy(v, value, len);
    v[len] = 0;
    struct bora_config next = *cfg;
    if (k->parse(k, v, &next, why, sizeof why))
        return bora_errf(err, -EINVAL, "key '%s': %s (got '%s')", k->full, why, got);
    int rc = config_validate(&next, err);
    if (rc)
        return rc;
    next.key_line[k - config_keys] = 0;   /* no longer what the file said */
    *cfg = next;
    return 0;
}

int config_key_line(const struct bora_config *cfg, const char *key)
{
    const struct config_key *k = config_key_find_full(key);
    return k ? (int)cfg->key_line[k - config_keys] : -ENOENT;
}

int config_get(const struct bora_config *cfg, const char *key, char *buf, size_t n)
{
    const struct config_key *k = config_key_find_full(key);
    if (!k)
        return -ENOENT;
    if (!n)
        return -ENOSPC;
    return k->format(k, cfg, buf, n);
}

int config_key_is_live(const char *key)
{
    const struct config_key *k = config_key_find_full(key);
    return k ? k->live : -ENOENT;
}

const char *config_key_name(size_t i)
{
    return i < config_n_keys ? config_keys[i].full : NULL;
}

/* ---- writing an INI ---- */

int config_dump(const struct bora_config *cfg, FILE *f, unsigned flags)
{
    const char *section = "";
    char v[CONFIG_VALUE_MAX * 2 + 8];
    fprintf(f, "; bora configuration\n");
    for (size_t i = 0; i < config_n_keys; i++) {
        const struct config_key *k = &config_keys[i];
        if (strcmp(section, k->section)) {
            section = k->section;
            fprintf(f, "\n[%s]\n", section);
        }
        if (k->format(k, cfg, v, sizeof v) < 0)
            return -EIO;
        fprintf(f, "; %s%s\n", k->help, k->live ? " (live)" : "");
        if (k->secret && *v && !(flags & CONFIG_DUMP_SECRETS))
            fprintf(f, "; %s = (set, hidden)\n", k->name);
        else
            fprintf(f, "%s =%s%s\n", k->name, *v ? " " : "", v);
    }
    return fflush(f) || ferror(f) ? -EIO : 0;
}
