/* config_keys.c — every config key: its place in struct bora_config, its range, and the
 * functions that check its text and write it back. Adding a key = one table line + field. */
#include "config/config_keys.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* ---- field access ---- */

static uint32_t *field_u32(const struct config_key *k, struct bora_config *cfg)
{
    return (uint32_t *)((char *)cfg + k->off);
}
static const uint32_t *cfield_u32(const struct config_key *k, const struct bora_config *cfg)
{
    return (const uint32_t *)((const char *)cfg + k->off);
}
static int *field_int(const struct config_key *k, struct bora_config *cfg)
{
    return (int *)((char *)cfg + k->off);
}
static int cfield_int(const struct config_key *k, const struct bora_config *cfg)
{
    return *(const int *)((const char *)cfg + k->off);
}

static int out_str(char *out, size_t n, const char *s)
{
    size_t len = strlen(s);
    if (len >= n)
        return -ENOSPC;
    memcpy(out, s, len + 1);
    return (int)len;
}

/* ---- integers ---- */

/* Strict decimal: digits only, no sign or blanks, overflow detected. */
static int parse_decimal(const char *v, uint64_t limit, uint64_t *out)
{
    uint64_t x = 0;
    if (!*v)
        return -EINVAL;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -EINVAL;
        x = x * 10 + (uint64_t)(*v - '0');
        if (x > limit)
            return -ERANGE;
    }
    *out = x;
    return 0;
}

static int parse_uint(const struct config_key *k, const char *v, struct bora_config *cfg,
                      char *why, size_t why_n)
{
    uint64_t x;
    int rc = parse_decimal(v, UINT32_MAX, &x);
    if (rc == 0 && (x < k->min || x > k->max))
        rc = -ERANGE;
    if (rc == -ERANGE) {
        snprintf(why, why_n, "out of range %u..%u", k->min, k->max);
        return -EINVAL;
    }
    if (rc) {
        snprintf(why, why_n, "must be an integer in %u..%u", k->min, k->max);
        return -EINVAL;
    }
    *field_u32(k, cfg) = (uint32_t)x;
    return 0;
}

static int format_uint(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    int len = snprintf(out, n, "%u", *cfield_u32(k, cfg));
    return len < 0 || (size_t)len >= n ? -ENOSPC : len;
}

static int parse_pow2(const struct config_key *k, const char *v, struct bora_config *cfg,
                      char *why, size_t why_n)
{
    uint64_t x;
    if (parse_decimal(v, UINT32_MAX, &x) || x < k->min || x > k->max || (x & (x - 1))) {
        snprintf(why, why_n, "must be a power of two in %u..%u", k->min, k->max);
        return -EINVAL;
    }
    *field_u32(k, cfg) = (uint32_t)x;
    return 0;
}

static const uint32_t standard_bauds[] = {
    1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600,
};

static int parse_baud(const struct config_key *k, const char *v, struct bora_config *cfg,
                      char *why, size_t why_n)
{
    uint64_t x;
    if (parse_decimal(v, UINT32_MAX, &x) == 0)
        for (size_t i = 0; i < BORA_ARRAY_LEN(standard_bauds); i++)
            if (x == standard_bauds[i]) {
                *field_u32(k, cfg) = (uint32_t)x;
                return 0;
            }
    snprintf(why, why_n, "must be a standard rate (1200, 2400, 4800, 9600, 19200, 38400, "
             "57600, 115200, 230400, 460800, 921600)");
    return -EINVAL;
}

/* Permission bits in octal ("600" or "0600"); others may never write the socket. */
static int parse_octal_mode(const struct config_key *k, const char *v, struct bora_config *cfg,
                            char *why, size_t why_n)
{
    uint32_t x = 0;
    size_t len = strlen(v);
    bool ok = len >= 1 && len <= 4;
    for (size_t i = 0; ok && i < len; i++) {
        ok = v[i] >= '0' && v[i] <= '7';
        x = x * 8 + (uint32_t)(v[i] - '0');
    }
    if (!ok || x > 0777) {
        snprintf(why, why_n, "must be octal permission bits 0000..0777");
        return -EINVAL;
    }
    if (x & 0002) {
        snprintf(why, why_n, "must not be writable by others (o+w)");
        return -EINVAL;
    }
    *field_u32(k, cfg) = x;
    return 0;
}

static int format_octal(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    int len = snprintf(out, n, "%04o", *cfield_u32(k, cfg));
    return len < 0 || (size_t)len >= n ? -ENOSPC : len;
}

/* ---- enums and switches ---- */

static int parse_enum(const struct config_key *k, const char *v, struct bora_config *cfg,
                      char *why, size_t why_n)
{
    for (int i = 0; k->names[i]; i++)
        if (!strcmp(v, k->names[i])) {
            *field_int(k, cfg) = i;
            return 0;
        }
    size_t at = (size_t)snprintf(why, why_n, "must be one of");
    for (int i = 0; k->names[i] && at < why_n; i++)
        at += (size_t)snprintf(why + at, why_n - at, "%s %s", i ? "," : "", k->names[i]);
    return -EINVAL;
}

static int format_enum(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    return out_str(out, n, k->names[cfield_int(k, cfg)]);
}

static int parse_onoff(const struct config_key *k, const char *v, struct bora_config *cfg,
                       char *why, size_t why_n)
{
    bool *b = (bool *)((char *)cfg + k->off);
    if (!strcmp(v, "on") || !strcmp(v, "off")) {
        *b = !strcmp(v, "on");
        return 0;
    }
    snprintf(why, why_n, "must be on or off");
    return -EINVAL;
}

static int format_onoff(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    return out_str(out, n, *(const bool *)((const char *)cfg + k->off) ? "on" : "off");
}

/* ---- strings ---- */

/* What every string must satisfy to survive an INI round trip. */
static int check_text(const char *v, size_t max, char *why, size_t why_n)
{
    size_t len = strlen(v);
    if (len > max) {
        snprintf(why, why_n, "too long (%zu bytes, at most %zu)", len, max);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(why, why_n, "contains a control character");
            return -EINVAL;
        }
        if (c == ';' && (i == 0 || v[i - 1] == ' ' || v[i - 1] == '\t')) {
            snprintf(why, why_n, "has a ';' at the start or after a blank, which starts an INI comment");
            return -EINVAL;
        }
    }
    if (len && (v[0] == ' ' || v[len - 1] == ' ' || v[0] == '\t' || v[len - 1] == '\t')) {
        snprintf(why, why_n, "has leading or trailing blanks");
        return -EINVAL;
    }
    return 0;
}

static size_t str_max(const struct config_key *k)
{
    return k->size - 1 < CONFIG_VALUE_MAX ? k->size - 1 : CONFIG_VALUE_MAX;
}

static void store_str(const struct config_key *k, struct bora_config *cfg, const char *v)
{
    char *dst = (char *)cfg + k->off;
    snprintf(dst, k->size, "%s", v);
}

static int parse_str(const struct config_key *k, const char *v, struct bora_config *cfg,
                     char *why, size_t why_n)
{
    if (check_text(v, str_max(k), why, why_n))
        return -EINVAL;
    store_str(k, cfg, v);
    return 0;
}

static int format_str(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    return out_str(out, n, (const char *)cfg + k->off);
}

static int parse_serial(const struct config_key *k, const char *v, struct bora_config *cfg,
                        char *why, size_t why_n)
{
    if (check_text(v, str_max(k), why, why_n))
        return -EINVAL;
    if (*v && (strncmp(v, "/dev/", 5) || !v[5] || strstr(v, "/.."))) {
        snprintf(why, why_n, "must be a device under /dev/ (e.g. /dev/ttyS0) or empty");
        return -EINVAL;
    }
    store_str(k, cfg, v);
    return 0;
}

/* A user or group: a portable name ([a-z_][a-z0-9_-]*, at most 32) or a numeric id. */
static int parse_account(const struct config_key *k, const char *v, struct bora_config *cfg,
                         char *why, size_t why_n)
{
    size_t len = strlen(v);
    bool numeric = len > 0 && strspn(v, "0123456789") == len;
    bool name = len > 0 && len < CONFIG_NAME_MAX && !(v[0] >= '0' && v[0] <= '9') && v[0] != '-'
        && strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_-") == len;
    uint64_t id;
    if (numeric && parse_decimal(v, UINT32_MAX - 1, &id))
        numeric = false;
    if (len && !numeric && !name) {
        snprintf(why, why_n, "must be a user/group name ([a-z_][a-z0-9_-]*, at most %d) "
                 "or a numeric id", CONFIG_NAME_MAX - 1);
        return -EINVAL;
    }
    if (numeric) {   /* stored as the number: leading zeros could push it past the field */
        char num[24];
        snprintf(num, sizeof num, "%llu", (unsigned long long)id);
        store_str(k, cfg, num);
        return 0;
    }
    store_str(k, cfg, v);
    return 0;
}

static int parse_socket_path(const struct config_key *k, const char *v, struct bora_config *cfg,
                             char *why, size_t why_n)
{
    if (check_text(v, str_max(k), why, why_n))
        return -EINVAL;
    if (*v && v[strlen(v) - 1] == '/') {
        snprintf(why, why_n, "must name a socket file, not a directory");
        return -EINVAL;
    }
    store_str(k, cfg, v);
    return 0;
}

static int parse_pwhash(const struct config_key *k, const char *v, struct bora_config *cfg,
                        char *why, size_t why_n)
{
    if (check_text(v, str_max(k), why, why_n))
        return -EINVAL;
    /* needs_rehash answers -1 for anything that is not a crypto_pwhash_str() string. */
    if (*v && (strlen(v) >= crypto_pwhash_STRBYTES || sodium_init() < 0 ||
               crypto_pwhash_str_needs_rehash(v, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                              crypto_pwhash_MEMLIMIT_INTERACTIVE) < 0)) {
        snprintf(why, why_n, "must be a libsodium crypto_pwhash_str() string "
                 "(\"$argon2id$v=19$m=...\") or empty");
        return -EINVAL;
    }
    store_str(k, cfg, v);
    return 0;
}

/* ---- addresses ---- */

static int parse_port_text(const char *v, uint32_t *port)
{
    uint64_t x;
    if (parse_decimal(v, 65535, &x) || x == 0)
        return -EINVAL;
    *port = (uint32_t)x;
    return 0;
}

/* "IPv4:PORT" or "[IPv6]:PORT"; "" = off. */
static int parse_endpoint(const struct config_key *k, const char *v, struct bora_config *cfg,
                          char *why, size_t why_n)
{
    struct config_endpoint ep = { 0 };
    char host[CONFIG_HOST_MAX + 2];
    unsigned char bin[16];
    const char *colon;
    if (*v) {
        if (v[0] == '[') {
            const char *close = strchr(v, ']');
            colon = close && close[1] == ':' ? close + 1 : NULL;
            ep.family = AF_INET6;
            if (colon && (size_t)(close - v - 1) < sizeof host) {
                memcpy(host, v + 1, (size_t)(close - v - 1));
                host[close - v - 1] = 0;
            } else {
                colon = NULL;
            }
        } else {
            colon = strrchr(v, ':');
            ep.family = AF_INET;
            if (colon && (size_t)(colon - v) < sizeof host) {
                memcpy(host, v, (size_t)(colon - v));
                host[colon - v] = 0;
            } else {
                colon = NULL;
            }
        }
        if (!colon || inet_pton(ep.family, host, bin) != 1) {
            snprintf(why, why_n, "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty");
            return -EINVAL;
        }
        if (parse_port_text(colon + 1, &ep.port)) {
            snprintf(why, why_n, "port must be 1..65535");
            return -EINVAL;
        }
        inet_ntop(ep.family, bin, ep.host, sizeof ep.host);
    }
    memcpy((char *)cfg + k->off, &ep, sizeof ep);
    return 0;
}

static int format_endpoint(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    const struct config_endpoint *ep = (const void *)((const char *)cfg + k->off);
    int len = !ep->family ? snprintf(out, n, "%s", "")
        : ep->family == AF_INET6 ? snprintf(out, n, "[%s]:%u", ep->host, ep->port)
        : snprintf(out, n, "%s:%u", ep->host, ep->port);
    return len < 0 || (size_t)len >= n ? -ENOSPC : len;
}

static int parse_ipv4(const struct config_key *k, const char *v, struct bora_config *cfg,
                      char *why, size_t why_n)
{
    struct in_addr a = { 0 };
    if (*v && (inet_pton(AF_INET, v, &a) != 1 || a.s_addr == 0)) {
        snprintf(why, why_n, "must be a non-zero IPv4 address (dotted quad) or empty");
        return -EINVAL;
    }
    *field_u32(k, cfg) = a.s_addr;
    return 0;
}

static int format_ipv4(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    struct in_addr a = { .s_addr = *cfield_u32(k, cfg) };
    char buf[INET_ADDRSTRLEN] = "";
    if (a.s_addr)
        inet_ntop(AF_INET, &a, buf, sizeof buf);
    return out_str(out, n, buf);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int parse_psk(const struct config_key *k, const char *v, struct bora_config *cfg,
                     char *why, size_t why_n)
{
    (void)k;
    struct config_dataplane *dp = &cfg->dataplane;
    size_t len = strlen(v);
    uint8_t key[CONFIG_PSK_MAX];
    bool ok = len == 0 || (len % 2 == 0 && len >= 2 * CONFIG_PSK_MIN && len <= 2 * CONFIG_PSK_MAX);
    for (size_t i = 0; ok && i < len; i += 2) {
        int hi = hex_digit(v[i]), lo = hex_digit(v[i + 1]);
        ok = hi >= 0 && lo >= 0;
        if (ok)
            key[i / 2] = (uint8_t)(hi << 4 | lo);
    }
    if (!ok) {
        snprintf(why, why_n, "must be %d..%d hex digits (an even count) or empty",
                 2 * CONFIG_PSK_MIN, 2 * CONFIG_PSK_MAX);
        return -EINVAL;
    }
    memcpy(dp->psk, key, len / 2);
    dp->psk_len = (uint32_t)(len / 2);
    return 0;
}

static int format_psk(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    (void)k;
    const struct config_dataplane *dp = &cfg->dataplane;
    if (2 * (size_t)dp->psk_len >= n)
        return -ENOSPC;
    for (uint32_t i = 0; i < dp->psk_len; i++)
        snprintf(out + 2 * i, 3, "%02x", dp->psk[i]);
    out[2 * dp->psk_len] = 0;
    return (int)(2 * dp->psk_len);
}

/* One "ADDR[/PREFIX]" entry; host bits must be zero. */
static int parse_one_cidr(const char *item, struct config_cidr *c, char *why, size_t why_n)
{
    char addr[CONFIG_HOST_MAX];
    const char *slash = strchr(item, '/');
    size_t alen = slash ? (size_t)(slash - item) : strlen(item);
    uint64_t prefix;
    memset(c, 0, sizeof *c);
    if (alen == 0 || alen >= sizeof addr)
        goto bad;
    memcpy(addr, item, alen);
    addr[alen] = 0;
    c->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(c->family, addr, c->addr) != 1)
        goto bad;
    uint32_t bits = c->family == AF_INET ? 32 : 128;
    if (!slash)
        prefix = bits;
    else if (parse_decimal(slash + 1, bits, &prefix))
        goto bad;
    c->prefix = (uint32_t)prefix;
    for (uint32_t b = c->prefix; b < bits; b++)
        if (c->addr[b / 8] & (0x80u >> (b % 8))) {
            snprintf(why, why_n, "'%s' has host bits set beyond /%u", item, c->prefix);
            return -EINVAL;
        }
    return 0;
bad:
    snprintf(why, why_n, "'%.60s' is not ADDR or ADDR/PREFIX (IPv4 /0..32, IPv6 /0..128)", item);
    return -EINVAL;
}

static int format_cidrs_of(const struct config_dataplane *dp, char *out, size_t n)
{
    size_t at = 0;
    out[0] = 0;
    for (uint32_t i = 0; i < dp->n_allow; i++) {
        char a[CONFIG_HOST_MAX];
        inet_ntop(dp->allow[i].family, dp->allow[i].addr, a, sizeof a);
        int len = snprintf(out + at, n - at, "%s%s/%u", i ? "," : "", a, dp->allow[i].prefix);
        if (len < 0 || (size_t)len >= n - at)
            return -ENOSPC;
        at += (size_t)len;
    }
    return (int)at;
}

static int parse_cidrs(const struct config_key *k, const char *v, struct bora_config *cfg,
                       char *why, size_t why_n)
{
    (void)k;
    struct config_dataplane dp = cfg->dataplane;
    char item[CONFIG_VALUE_MAX + 1];
    dp.n_allow = 0;
    while (*v) {
        size_t len = strcspn(v, ",");
        const char *s = v, *e = v + len;
        while (s < e && (*s == ' ' || *s == '\t')) s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (s == e || (size_t)(e - s) >= sizeof item || dp.n_allow == CONFIG_ALLOW_MAX) {
            snprintf(why, why_n, s == e ? "has an empty entry"
                     : dp.n_allow == CONFIG_ALLOW_MAX ? "has more than 16 entries" : "has an entry too long");
            return -EINVAL;
        }
        memcpy(item, s, (size_t)(e - s));
        item[e - s] = 0;
        if (parse_one_cidr(item, &dp.allow[dp.n_allow++], why, why_n))
            return -EINVAL;
        v += len;
        if (*v == ',' && !*++v) {
            snprintf(why, why_n, "has an empty entry");
            return -EINVAL;
        }
    }
    char canon[CONFIG_VALUE_MAX + 1];
    if (format_cidrs_of(&dp, canon, sizeof canon) < 0) {
        snprintf(why, why_n, "too long once written as ADDR/PREFIX (at most %d bytes)", CONFIG_VALUE_MAX);
        return -EINVAL;
    }
    cfg->dataplane = dp;
    return 0;
}

static int format_cidrs(const struct config_key *k, const struct bora_config *cfg, char *out, size_t n)
{
    (void)k;
    return format_cidrs_of(&cfg->dataplane, out, n);
}

/* ---- the table ---- */

static const char *const backend_names[]   = { "auto", "cpu", "cuda", NULL };
static const char *const precision_names[] = { "auto", "bf16", "fp8", NULL };
static const char *const kv_names[]        = { "bf16", "fp8", NULL };
static const char *const level_names[]     = { "error", "warn", "info", "debug", NULL };

const char *const config_sections[] = { "model", "engine", "dataplane", "limits", "console", NULL };

#define AT(sec, fld) .off = offsetof(struct bora_config, sec.fld), \
                     .size = sizeof(((struct bora_config *)0)->sec.fld)
#define KEY(sec, fld) .section = #sec, .name = #fld, .full = #sec "." #fld, AT(sec, fld)
#define UINT(lo, hi)  .parse = parse_uint, .format = format_uint, .min = (lo), .max = (hi)
#define ENUM(n)       .parse = parse_enum, .format = format_enum, .names = (n)
#define STR(fn)       .parse = (fn), .format = format_str

const struct config_key config_keys[] = {
    { KEY(model, path), STR(parse_str), .help = "checkpoint folder; empty = built-in default model" },
    { KEY(model, backend), ENUM(backend_names), .help = "auto | cpu | cuda" },
    { KEY(model, precision), ENUM(precision_names), .help = "weights on the GPU: auto | bf16 | fp8" },
    { KEY(model, max_ctx), UINT(0, 1048576), .help = "context tokens; 0 = the model's maximum" },
    { KEY(model, prefix_cache), .parse = parse_onoff, .format = format_onoff, .help = "on | off" },

    { KEY(engine, threads), UINT(0, 256), .help = "CPU threads; 0 = one per core" },
    { KEY(engine, tensor_parallel), .parse = parse_pow2, .format = format_uint, .min = 1, .max = 8,
      .help = "GPUs: 1 (the format takes 2, 4 or 8; this build refuses them)" },
    { KEY(engine, prefill_chunk), UINT(16, 65536), .help = "prompt tokens per GPU prefill step" },
    { KEY(engine, kv_dtype), ENUM(kv_names), .help = "KV cache: bf16 | fp8 (e4m3: half the bytes, twice the context)" },

    { KEY(dataplane, udp), .parse = parse_endpoint, .format = format_endpoint,
      .help = "IPv4:PORT or [IPv6]:PORT; empty = off" },
    { KEY(dataplane, tcp), .parse = parse_endpoint, .format = format_endpoint,
      .help = "IPv4:PORT or [IPv6]:PORT; empty = off" },
    { KEY(dataplane, dpdk), STR(parse_str), .help = "DPDK EAL arguments; empty = off" },
    { KEY(dataplane, dpdk_ip), .parse = parse_ipv4, .format = format_ipv4,
      .help = "IPv4 address of the DPDK port (needed with dpdk)" },
    { KEY(dataplane, dpdk_port), UINT(1, 65535), .help = "UDP port on the DPDK port" },
    { KEY(dataplane, psk), .parse = parse_psk, .format = format_psk, .secret = true,
      .help = "BWP/1 AUTH key, 32..128 hex digits; empty = no AUTH" },
    { KEY(dataplane, allow), .parse = parse_cidrs, .format = format_cidrs, .live = true,
      .help = "comma-separated CIDRs; empty = every client" },
    { KEY(dataplane, rate_limit), UINT(0, 1000000), .live = true,
      .help = "requests/s per client; 0 = off" },
    { KEY(dataplane, max_conns_per_addr), UINT(0, 1024), .live = true,
      .help = "TCP connections open from one client address; 0 = no limit" },

    { KEY(limits, queue_depth), UINT(1, 65536), .help = "requests waiting before BUSY" },
    { KEY(limits, max_prompt_bytes), UINT(16, 16777216), .live = true, .help = "prompt_len limit" },
    { KEY(limits, max_tokens), UINT(1, 32768), .live = true, .help = "max_tokens limit" },
    { KEY(limits, request_timeout_ms), UINT(1, 3600000), .live = true,
      .help = "deadline when a request gives none" },
    { KEY(limits, shutdown_grace_ms), UINT(0, 600000), .live = true,
      .help = "SIGTERM: time left to running requests" },

    { KEY(console, socket), STR(parse_socket_path), .help = "UNIX socket path; empty = none" },
    { KEY(console, socket_mode), .parse = parse_octal_mode, .format = format_octal,
      .help = "octal permission bits; never writable by others" },
    { KEY(console, socket_owner), STR(parse_account), .help = "user name or uid; empty = the daemon's" },
    { KEY(console, socket_group), STR(parse_account), .help = "group name or gid; empty = the daemon's" },
    { KEY(console, serial), STR(parse_serial), .help = "/dev/tty...; empty = no serial console" },
    { KEY(console, baud), .parse = parse_baud, .format = format_uint, .help = "serial line speed" },
    { KEY(console, password_hash), STR(parse_pwhash), .secret = true,
      .help = "libsodium crypto_pwhash_str() string; empty = none set" },
    { KEY(console, max_login_failures), UINT(1, 1000), .live = true,
      .help = "failed logins before the line is locked" },
    { KEY(console, log_level), ENUM(level_names), .live = true, .help = "error | warn | info | debug" },
    { KEY(console, idle_timeout_s), UINT(0, 604800),
      .help = "seconds a silent socket session stays open; 0 = no limit" },
};
const size_t config_n_keys = BORA_ARRAY_LEN(config_keys);
_Static_assert(BORA_ARRAY_LEN(config_keys) <= CONFIG_KEYS_MAX, "raise CONFIG_KEYS_MAX");

const struct config_key *config_key_find(const char *section, const char *name)
{
    for (size_t i = 0; i < config_n_keys; i++)
        if (!strcmp(config_keys[i].section, section) && !strcmp(config_keys[i].name, name))
            return &config_keys[i];
    return NULL;
}

const struct config_key *config_key_find_full(const char *full)
{
    for (size_t i = 0; i < config_n_keys; i++)
        if (!strcmp(config_keys[i].full, full))
            return &config_keys[i];
    return NULL;
}
