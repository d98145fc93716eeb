/* test_config.c — the config file: defaults, the shipped config/bora.ini, every key's bad
 * values (exact "file:line: key" messages), syntax, unknown names, duplicates, rules between
 * keys, config_set/get/is_live, and the config_dump → config_parse round trip. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "config/config.h"

static struct config_diag diag;   /* 16 KiB, shared by the tests (they run one at a time) */

static int parse_str(struct bora_config *cfg, const char *text)
{
    return config_parse(cfg, "t.ini", text, strlen(text), &diag);
}

/* Every key's text in a and b is the same. */
static void assert_same_config(const struct bora_config *a, const struct bora_config *b)
{
    char va[512], vb[512];
    const char *k;
    for (size_t i = 0; (k = config_key_name(i)); i++) {
        assert_true(config_get(a, k, va, sizeof va) >= 0);
        assert_true(config_get(b, k, vb, sizeof vb) >= 0);
        if (strcmp(va, vb))
            fail_msg("key %s: '%s' != '%s'", k, va, vb);
    }
}

static void test_defaults_valid(void **state)
{
    (void)state;
    struct bora_config cfg;
    struct bora_err err = { "" };
    config_defaults(&cfg);
    assert_int_equal(config_validate(&cfg, &err), 0);
    /* the defaults the task and protocol.md name */
    assert_int_equal(cfg.limits.queue_depth, 64);
    assert_int_equal(cfg.limits.max_tokens, 512);
    assert_int_equal(cfg.limits.max_prompt_bytes, 65536);
    assert_int_equal(cfg.limits.request_timeout_ms, 60000);
    assert_int_equal(cfg.limits.shutdown_grace_ms, 10000);
    assert_int_equal(cfg.console.socket_mode, 0600);
    assert_string_equal(cfg.model.path, "");
    char v[64];
    assert_int_equal(config_get(&cfg, "dataplane.udp", v, sizeof v), 14);
    assert_string_equal(v, "127.0.0.1:7474");
    config_get(&cfg, "dataplane.tcp", v, sizeof v);
    assert_string_equal(v, "127.0.0.1:7474");
    config_get(&cfg, "dataplane.dpdk", v, sizeof v);
    assert_string_equal(v, "");
    /* an empty file is the defaults */
    struct bora_config parsed;
    assert_int_equal(parse_str(&parsed, ""), 0);
    assert_int_equal(diag.n_errors, 0);
    assert_same_config(&cfg, &parsed);
}

static void test_shipped_ini_is_defaults(void **state)
{
    (void)state;
    struct bora_config cfg, def;
    int rc = config_load(&cfg, "config/bora.ini", &diag);
    if (rc)
        fail_msg("config/bora.ini: %d errors, first: %s", diag.n_errors, diag.msg[0]);
    assert_int_equal(diag.n_errors, 0);
    config_defaults(&def);
    assert_same_config(&cfg, &def);
    /* and it sets every key explicitly: each "name =" line appears once */
    FILE *f = fopen("config/bora.ini", "r");
    assert_non_null(f);
    char line[256];
    size_t n_keys = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] != ';' && line[0] != '[' && strchr(line, '='))
            n_keys++;
    fclose(f);
    size_t n = 0;
    while (config_key_name(n))
        n++;
    assert_int_equal(n_keys, n);
}

/* One bad value per row: the file puts it on line 4 of its section. */
struct bad_case {
    const char *key;     /* section.key */
    const char *value;   /* as written in the file */
    const char *why;     /* expected middle of the message */
};

#define RANGE(lo, hi) "out of range " #lo ".." #hi
#define INTEGER(lo, hi) "must be an integer in " #lo ".." #hi
static const struct bad_case bad_cases[] = {
    { "model.path", "/m\x01x", "contains a control character" },
    { "model.backend", "gpu", "must be one of auto, cpu, cuda" },
    { "model.backend", "CPU", "must be one of auto, cpu, cuda" },
    { "model.backend", "", "must be one of auto, cpu, cuda" },
    { "model.precision", "fp16", "must be one of auto, bf16, fp8" },
    { "model.max_ctx", "-1", INTEGER(0, 1048576) },
    { "model.max_ctx", "12x", INTEGER(0, 1048576) },
    { "model.max_ctx", "", INTEGER(0, 1048576) },
    { "model.max_ctx", "1048577", RANGE(0, 1048576) },
    { "model.prefix_cache", "yes", "must be on or off" },
    { "engine.threads", "257", RANGE(0, 256) },
    { "engine.threads", "0x10", INTEGER(0, 256) },
    { "engine.threads", "99999999999999999999", RANGE(0, 256) },
    { "engine.tensor_parallel", "0", "must be a power of two in 1..8" },
    { "engine.tensor_parallel", "3", "must be a power of two in 1..8" },
    { "engine.tensor_parallel", "16", "must be a power of two in 1..8" },
    { "engine.prefill_chunk", "15", RANGE(16, 65536) },
    { "engine.prefill_chunk", "65537", RANGE(16, 65536) },
    { "engine.kv_dtype", "fp16", "must be one of bf16, fp8" },
    { "dataplane.udp", "1.2.3.4", "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty" },
    { "dataplane.udp", "localhost:7474", "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty" },
    { "dataplane.udp", "1.2.3.256:1", "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty" },
    { "dataplane.udp", "::1:7474", "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty" },
    { "dataplane.udp", "[::1]7474", "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty" },
    { "dataplane.udp", "1.2.3.4:0", "port must be 1..65535" },
    { "dataplane.udp", "1.2.3.4:65536", "port must be 1..65535" },
    { "dataplane.tcp", "[::1]:x", "port must be 1..65535" },
    { "dataplane.tcp", "[1.2.3.4]:80", "must be IPv4:PORT or [IPv6]:PORT (numeric) or empty" },
    { "dataplane.dpdk", "-l 2\x7f", "contains a control character" },
    { "dataplane.dpdk_ip", "1.2.3", "must be a non-zero IPv4 address (dotted quad) or empty" },
    { "dataplane.dpdk_ip", "0.0.0.0", "must be a non-zero IPv4 address (dotted quad) or empty" },
    { "dataplane.dpdk_ip", "::1", "must be a non-zero IPv4 address (dotted quad) or empty" },
    { "dataplane.dpdk_port", "0", RANGE(1, 65535) },
    { "dataplane.dpdk_port", "65536", RANGE(1, 65535) },
    { "dataplane.psk", "abc", "must be 32..128 hex digits (an even count) or empty" },
    { "dataplane.psk", "000102030405060708090a0b0c0d0e", "must be 32..128 hex digits (an even count) or empty" },
    { "dataplane.psk", "zz0102030405060708090a0b0c0d0e0f", "must be 32..128 hex digits (an even count) or empty" },
    { "dataplane.allow", "10.0.0.1/8", "'10.0.0.1/8' has host bits set beyond /8" },
    { "dataplane.allow", "10.0.0.0/33", "'10.0.0.0/33' is not ADDR or ADDR/PREFIX (IPv4 /0..32, IPv6 /0..128)" },
    { "dataplane.allow", "::1/129", "'::1/129' is not ADDR or ADDR/PREFIX (IPv4 /0..32, IPv6 /0..128)" },
    { "dataplane.allow", "10.0.0.0/8,", "has an empty entry" },
    { "dataplane.allow", "10.0.0.0/8, ,1.2.3.4", "has an empty entry" },
    { "dataplane.allow", "host.example", "'host.example' is not ADDR or ADDR/PREFIX (IPv4 /0..32, IPv6 /0..128)" },
    { "dataplane.rate_limit", "1000001", RANGE(0, 1000000) },
    { "dataplane.max_conns_per_addr", "1025", RANGE(0, 1024) },
    { "limits.queue_depth", "0", RANGE(1, 65536) },
    { "limits.queue_depth", "65537", RANGE(1, 65536) },
    { "limits.max_prompt_bytes", "15", RANGE(16, 16777216) },
    { "limits.max_prompt_bytes", "16777217", RANGE(16, 16777216) },
    { "limits.max_tokens", "0", RANGE(1, 32768) },
    { "limits.max_tokens", "32769", RANGE(1, 32768) },
    { "limits.max_tokens", "4294967296", RANGE(1, 32768) },
    { "limits.max_tokens", "+5", INTEGER(1, 32768) },
    { "limits.max_tokens", "5 tokens", INTEGER(1, 32768) },
    { "limits.request_timeout_ms", "0", RANGE(1, 3600000) },
    { "limits.request_timeout_ms", "3600001", RANGE(1, 3600000) },
    { "limits.shutdown_grace_ms", "600001", RANGE(0, 600000) },
    { "console.socket", "/run/", "must name a socket file, not a directory" },
    { "console.socket",
      "/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "too long (108 bytes, at most 107)" },
    { "console.socket_mode", "0666", "must not be writable by others (o+w)" },
    { "console.socket_mode", "0800", "must be octal permission bits 0000..0777" },
    { "console.socket_mode", "1777", "must be octal permission bits 0000..0777" },
    { "console.socket_mode", "", "must be octal permission bits 0000..0777" },
    { "console.socket_owner", "Root", "must be a user/group name ([a-z_][a-z0-9_-]*, at most 32) or a numeric id" },
    { "console.socket_owner", "1abc", "must be a user/group name ([a-z_][a-z0-9_-]*, at most 32) or a numeric id" },
    { "console.socket_group", "a b", "must be a user/group name ([a-z_][a-z0-9_-]*, at most 32) or a numeric id" },
    { "console.serial", "ttyS0", "must be a device under /dev/ (e.g. /dev/ttyS0) or empty" },
    { "console.serial", "/dev/", "must be a device under /dev/ (e.g. /dev/ttyS0) or empty" },
    { "console.baud", "1234", "must be a standard rate (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)" },
    { "console.baud", "0", "must be a standard rate (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)" },
    { "console.password_hash", "nope", "must be a libsodium crypto_pwhash_str() string (\"$argon2id$v=19$m=...\") or empty" },
    { "console.password_hash", "$argon2id$v=19$m=65536,t=2,p=1$", "must be a libsodium crypto_pwhash_str() string (\"$argon2id$v=19$m=...\") or empty" },
    { "console.max_login_failures", "0", RANGE(1, 1000) },
    { "console.max_login_failures", "1001", RANGE(1, 1000) },
    { "console.log_level", "trace", "must be one of error, warn, info, debug" },
    { "console.idle_timeout_s", "604801", RANGE(0, 604800) },
    { "console.idle_timeout_s", "-1", INTEGER(0, 604800) },
};

/* The value as the message quotes it: control bytes as \xNN, cut after 80 bytes with "...". */
static void quoted(const char *v, char *out)
{
    for (const char *start = out; *v; v++) {
        if (out - start >= 80) {
            out += sprintf(out, "...");
            break;
        }
        unsigned char c = (unsigned char)*v;
        out += c < 0x20 || c == 0x7f ? sprintf(out, "\\x%02x", c) : sprintf(out, "%c", c);
    }
    *out = 0;
}

static void test_bad_values_named(void **state)
{
    (void)state;
    struct bora_config cfg, def;
    config_defaults(&def);
    for (size_t i = 0; i < BORA_ARRAY_LEN(bad_cases); i++) {
        const struct bad_case *bc = &bad_cases[i];
        char section[32], text[512], want[1024], got[300], dv[256], v[256];
        const char *dot = strchr(bc->key, '.');
        snprintf(section, sizeof section, "%.*s", (int)(dot - bc->key), bc->key);
        snprintf(text, sizeof text, "[%s]\n\n; comment\n%s = %s\n", section, dot + 1, bc->value);
        quoted(bc->value, got);
        snprintf(want, sizeof want, "t.ini:4: key '%s': %s (got '%s')", bc->key, bc->why, got);
        if (parse_str(&cfg, text) != -EINVAL)
            fail_msg("case %zu (%s = %s) was accepted", i, bc->key, bc->value);
        if (diag.n_errors != 1 || strcmp(diag.msg[0], want))
            fail_msg("case %zu: %d errors, first:\n  %s\nwanted:\n  %s", i, diag.n_errors,
                     diag.msg[0], want);
        /* the bad value left the key at its default */
        config_get(&cfg, bc->key, v, sizeof v);
        config_get(&def, bc->key, dv, sizeof dv);
        assert_string_equal(v, dv);
    }
    /* every key has at least one bad case */
    const char *k;
    for (size_t i = 0; (k = config_key_name(i)); i++) {
        size_t hits = 0;
        for (size_t j = 0; j < BORA_ARRAY_LEN(bad_cases); j++)
            hits += !strcmp(bad_cases[j].key, k);
        if (!hits)
            fail_msg("no bad-value case for %s", k);
    }
}

static void test_good_values_accepted(void **state)
{
    (void)state;
    struct bora_config cfg;
    char hash[crypto_pwhash_STRBYTES], text[2048], v[256];
    assert_true(sodium_init() >= 0);
    assert_int_equal(crypto_pwhash_str(hash, "secret", 6, crypto_pwhash_OPSLIMIT_MIN,
                                       crypto_pwhash_MEMLIMIT_MIN), 0);
    snprintf(text, sizeof text,
             "\xEF\xBB\xBF[model]\r\npath = /srv/models/Mistral-7B ; inline comment\r\n"
             "backend = cpu\nprecision = fp8\nmax_ctx = 32768\nprefix_cache = off\n"
             "  [engine]\n  threads = 16\ntensor_parallel = 1\nkv_dtype = bf16\n"
             "[dataplane]\nudp = [::]:9000\ntcp =\ndpdk = -l 2-3 -a 0000:3b:00.0\n"
             "dpdk_ip = 192.0.2.10\ndpdk_port = 65535\n"
             "psk = 000102030405060708090A0B0C0D0E0F\n"
             "allow = 10.0.0.0/8, fd00::/8,192.0.2.7\nrate_limit = 1000\n"
             "[limits]\nmax_tokens: 32768\n"
             "[console]\nsocket = \nsocket_mode = 660\nsocket_owner = bora\nsocket_group = 1000\n"
             "serial = /dev/ttyS0\nbaud = 9600\npassword_hash = %s\nlog_level = debug\n", hash);
    int rc = parse_str(&cfg, text);
    if (rc)
        fail_msg("%d errors, first: %s", diag.n_errors, diag.msg[0]);
    assert_string_equal(cfg.model.path, "/srv/models/Mistral-7B");
    assert_int_equal(cfg.model.backend, CONFIG_BACKEND_CPU);
    assert_false(cfg.model.prefix_cache);
    assert_int_equal(cfg.engine.threads, 16);
    assert_int_equal(cfg.dataplane.udp.port, 9000);
    assert_string_equal(cfg.dataplane.udp.host, "::");
    assert_int_equal(cfg.dataplane.tcp.family, 0);
    assert_int_equal(cfg.dataplane.psk_len, 16);
    assert_int_equal(cfg.dataplane.psk[10], 0x0a);
    assert_int_equal(cfg.dataplane.n_allow, 3);
    assert_int_equal(cfg.dataplane.allow[1].prefix, 8);
    assert_int_equal(cfg.dataplane.allow[2].prefix, 32);
    config_get(&cfg, "dataplane.allow", v, sizeof v);
    assert_string_equal(v, "10.0.0.0/8,fd00::/8,192.0.2.7/32");
    config_get(&cfg, "dataplane.dpdk_ip", v, sizeof v);
    assert_string_equal(v, "192.0.2.10");
    assert_int_equal(cfg.limits.max_tokens, 32768);
    assert_int_equal(cfg.console.socket_mode, 0660);
    assert_string_equal(cfg.console.socket, "");
    assert_string_equal(cfg.console.password_hash, hash);
    assert_int_equal(crypto_pwhash_str_verify(cfg.console.password_hash, "secret", 6), 0);
    /* a numeric id is kept as the number: leading zeros can neither change the account nor be cut
     * to a prefix of the field (54 digits were stored as 32 zeros, uid 0) */
    assert_string_equal(cfg.console.socket_group, "1000");
    struct bora_err err = { "" };
    assert_int_equal(config_set(&cfg, "console.socket_owner",
                                "000000000000000000000000000000000000000000000000001000", &err), 0);
    assert_string_equal(cfg.console.socket_owner, "1000");
    assert_int_equal(config_set(&cfg, "console.socket_group", "0", &err), 0);
    assert_string_equal(cfg.console.socket_group, "0");
}

static void test_line_numbers_and_syntax(void **state)
{
    (void)state;
    struct bora_config cfg;
    char longline[300];
    memset(longline, 'x', sizeof longline);
    memcpy(longline, "path = ", 7);
    longline[250] = 0;
    char text[1024];
    snprintf(text, sizeof text,
             "; header\r\n"                    /* 1 */
             "[model]\r\n"                     /* 2 */
             "max_ctx = 7x\r\n"                /* 3 */
             "\r\n"                            /* 4 */
             "just words\r\n"                  /* 5 */
             "%s\r\n"                          /* 6 */
             "[engine\r\n"                     /* 7 */
             "[limits] trailing\n"             /* 8 */
             "max_tokens = 9\n",               /* 9 */
             longline);
    assert_int_equal(parse_str(&cfg, text), -EINVAL);
    assert_int_equal(diag.n_errors, 5);
    assert_string_equal(diag.msg[0], "t.ini:3: key 'model.max_ctx': must be an integer in 0..1048576 (got '7x')");
    assert_string_equal(diag.msg[1], "t.ini:5: expected 'key = value', '[section]' or a comment (got 'just words')");
    assert_string_equal(diag.msg[2], "t.ini:6: line too long (250 bytes, at most 197)");
    assert_string_equal(diag.msg[3], "t.ini:7: section header without ']' (got '[engine')");
    assert_string_equal(diag.msg[4], "t.ini:8: text after the section header (got '[limits] trailing')");
    assert_int_equal(cfg.limits.max_tokens, 9);   /* the rest of the file still counts */

    static const char nul[] = "[limits]\nmax_tokens = 1\0 2\n";
    assert_int_equal(config_parse(&cfg, "n.ini", nul, sizeof nul - 1, &diag), -EINVAL);
    assert_int_equal(diag.n_errors, 1);
    assert_string_equal(diag.msg[0], "n.ini:2: line contains a NUL byte");
}

static void test_unknown_names(void **state)
{
    (void)state;
    struct bora_config cfg;
    assert_int_equal(parse_str(&cfg, "[modle]\npath = /x\nbackend = cpu\n[limits]\nmax_tokenz = 5\n"
                                     "colour = red\n"), -EINVAL);
    assert_int_equal(diag.n_errors, 3);   /* the keys of an unknown section are not repeated */
    assert_string_equal(diag.msg[0], "t.ini:1: section 'modle': unknown section (expected model, "
                        "engine, dataplane, limits or console)");
    assert_string_equal(diag.msg[1], "t.ini:5: key 'limits.max_tokenz': unknown key "
                        "(did you mean 'limits.max_tokens'?) (got '5')");
    assert_string_equal(diag.msg[2], "t.ini:6: key 'limits.colour': unknown key (got 'red')");
    assert_int_equal(parse_str(&cfg, "\nmax_tokens = 5\n"), -EINVAL);
    assert_string_equal(diag.msg[0], "t.ini:2: key 'max_tokens': outside any section (got '5')");
}

static void test_duplicates(void **state)
{
    (void)state;
    struct bora_config cfg;
    assert_int_equal(parse_str(&cfg, "[limits]\nmax_tokens = 5\n\nmax_tokens = 6\n[model]\n[limits]\n"), -EINVAL);
    assert_int_equal(diag.n_errors, 2);
    assert_string_equal(diag.msg[0], "t.ini:4: key 'limits.max_tokens': duplicate, first set on line 2 (got '6')");
    assert_string_equal(diag.msg[1], "t.ini:6: section 'limits': repeated (first opened on line 1)");
    assert_int_equal(cfg.limits.max_tokens, 5);
}

static void test_rules_between_keys(void **state)
{
    (void)state;
    struct bora_config cfg;
    assert_int_equal(parse_str(&cfg, "[dataplane]\n\ndpdk = -l 2\n"), -EINVAL);
    assert_int_equal(diag.n_errors, 1);
    assert_string_equal(diag.msg[0], "t.ini:3: key 'dataplane.dpdk_ip': required when dataplane.dpdk is set (got '')");
    assert_int_equal(parse_str(&cfg, "[model]\nbackend = cpu\n[engine]\ntensor_parallel = 2\n"), -EINVAL);
    assert_int_equal(diag.n_errors, 1);
    assert_string_equal(diag.msg[0], "t.ini:4: key 'engine.tensor_parallel': must be 1 with model.backend = cpu (got '2')");
    /* reserved by the format, not built: refused with the reason, on any backend */
    assert_int_equal(parse_str(&cfg, "[model]\nbackend = cuda\n[engine]\ntensor_parallel = 2\n"), -EINVAL);
    assert_int_equal(diag.n_errors, 1);
    assert_non_null(strstr(diag.msg[0], "t.ini:4: key 'engine.tensor_parallel': must be 1: this build serves a model from one GPU"));
    /* an FP8 KV cache is built: taken on any backend */
    assert_int_equal(parse_str(&cfg, "[model]\nbackend = cuda\n[engine]\nkv_dtype = fp8\n"), 0);
    assert_int_equal(diag.n_errors, 0);
    assert_int_equal(cfg.engine.kv_dtype, CONFIG_KV_FP8);
}

/* config_key_line: where the parsed file set each key, for messages about it made later */
static void test_key_lines(void **state)
{
    (void)state;
    struct bora_config cfg;
    struct bora_err err = { "" };
    assert_int_equal(parse_str(&cfg, "; a comment\n\n[limits]\nmax_tokens = 100\n\n[console]\n"
                                     "  baud = 9600\n[model]\npath = /m\n"), 0);
    assert_int_equal(config_key_line(&cfg, "limits.max_tokens"), 4);
    assert_int_equal(config_key_line(&cfg, "console.baud"), 7);
    assert_int_equal(config_key_line(&cfg, "model.path"), 9);
    assert_int_equal(config_key_line(&cfg, "limits.queue_depth"), 0);   /* the default */
    assert_int_equal(config_key_line(&cfg, "limits.nope"), -ENOENT);
    assert_int_equal(config_set(&cfg, "limits.max_tokens", "50", &err), 0);
    assert_int_equal(config_key_line(&cfg, "limits.max_tokens"), 0);   /* no longer the file's */
    assert_int_equal(config_key_line(&cfg, "console.baud"), 7);
    assert_int_equal(parse_str(&cfg, "[limits]\nmax_tokens = 0\n"), -EINVAL);   /* a bad value's line too */
    assert_int_equal(config_key_line(&cfg, "limits.max_tokens"), 2);
    assert_int_equal(config_key_line(&cfg, "console.baud"), 0);          /* a new parse starts over */
}

static void test_set_get_live(void **state)
{
    (void)state;
    struct bora_config cfg, before;
    struct bora_err err = { "" };
    char v[64];
    config_defaults(&cfg);
    assert_int_equal(config_set(&cfg, "limits.max_tokens", "  100 ", &err), 0);
    assert_int_equal(cfg.limits.max_tokens, 100);
    assert_int_equal(config_get(&cfg, "limits.max_tokens", v, sizeof v), 3);
    assert_string_equal(v, "100");
    assert_int_equal(config_get(&cfg, "limits.max_tokens", v, 3), -ENOSPC);
    assert_int_equal(config_get(&cfg, "limits.nope", v, sizeof v), -ENOENT);

    before = cfg;
    assert_int_equal(config_set(&cfg, "limits.max_tokens", "0", &err), -EINVAL);
    assert_string_equal(err.msg, "key 'limits.max_tokens': out of range 1..32768 (got '0')");
    assert_int_equal(config_set(&cfg, "limits.max_tokenz", "5", &err), -ENOENT);
    assert_string_equal(err.msg, "key 'limits.max_tokenz': unknown key (got '5')");
    assert_int_equal(config_set(&cfg, "console.serial", "/dev/tty\nS0", &err), -EINVAL);
    assert_string_equal(err.msg, "key 'console.serial': contains a control character (got '/dev/tty\\x0aS0')");
    assert_int_equal(config_set(&cfg, "model.path", "/m ;x", &err), -EINVAL);
    assert_string_equal(err.msg, "key 'model.path': has a ';' at the start or after a blank, "
                        "which starts an INI comment (got '/m ;x')");
    assert_int_equal(config_set(&cfg, "model.path", ";x", &err), -EINVAL);
    assert_int_equal(config_set(&cfg, "dataplane.dpdk", "-l 2", &err), -EINVAL);
    assert_string_equal(err.msg, "key 'dataplane.dpdk_ip': required when dataplane.dpdk is set (got '')");
    assert_memory_equal(&cfg, &before, sizeof cfg);   /* failed sets change nothing */

    assert_int_equal(config_set(&cfg, "dataplane.dpdk_ip", "10.1.2.3", &err), 0);
    assert_int_equal(config_set(&cfg, "dataplane.dpdk", "-l 2", &err), 0);
    assert_int_equal(config_set(&cfg, "model.backend", "cpu", &err), 0);
    assert_int_equal(config_set(&cfg, "engine.tensor_parallel", "2", &err), -EINVAL);
    assert_string_equal(err.msg, "key 'engine.tensor_parallel': must be 1 with model.backend = cpu (got '2')");

    assert_int_equal(config_key_is_live("limits.max_tokens"), 1);
    assert_int_equal(config_key_is_live("console.log_level"), 1);
    assert_int_equal(config_key_is_live("dataplane.allow"), 1);
    assert_int_equal(config_key_is_live("model.path"), 0);
    assert_int_equal(config_key_is_live("dataplane.udp"), 0);
    assert_int_equal(config_key_is_live("limits.queue_depth"), 0);
    assert_int_equal(config_key_is_live("nope.nope"), -ENOENT);
}

static int dump_to_string(const struct bora_config *cfg, unsigned flags, char **text, size_t *len)
{
    FILE *f = open_memstream(text, len);
    assert_non_null(f);
    int rc = config_dump(cfg, f, flags);
    fclose(f);
    return rc;
}

static void test_dump_round_trip(void **state)
{
    (void)state;
    static const char *const sets[][2] = {
        { "model.path", "/srv/m/Ministral-8B" }, { "model.backend", "cuda" },
        { "model.precision", "fp8" }, { "model.max_ctx", "131072" }, { "model.prefix_cache", "off" },
        { "engine.threads", "8" }, { "engine.tensor_parallel", "1" }, { "engine.prefill_chunk", "512" },
        { "engine.kv_dtype", "bf16" }, { "dataplane.udp", "[2001:db8::1]:7000" }, { "dataplane.tcp", "" },
        { "dataplane.dpdk_ip", "192.0.2.1" }, { "dataplane.dpdk", "-l 4-5 --file-prefix=bora" },
        { "dataplane.dpdk_port", "9999" },
        { "dataplane.psk", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff" },
        { "dataplane.allow", "10.0.0.0/8, 2001:db8::/32" }, { "dataplane.rate_limit", "50" },
        { "dataplane.max_conns_per_addr", "8" }, { "limits.queue_depth", "1024" }, { "limits.max_prompt_bytes", "1000000" },
        { "limits.max_tokens", "2048" }, { "limits.request_timeout_ms", "5000" },
        { "limits.shutdown_grace_ms", "0" }, { "console.socket", "/tmp/bora.sock" },
        { "console.socket_mode", "0640" }, { "console.socket_owner", "bora" },
        { "console.socket_group", "adm" }, { "console.serial", "/dev/ttyUSB0" },
        { "console.baud", "921600" }, { "console.max_login_failures", "3" },
        { "console.log_level", "warn" }, { "console.idle_timeout_s", "0" },
    };
    struct bora_config cfg, back, def;
    struct bora_err err = { "" };
    config_defaults(&cfg);
    config_defaults(&def);
    for (size_t i = 0; i < BORA_ARRAY_LEN(sets); i++)
        if (config_set(&cfg, sets[i][0], sets[i][1], &err))
            fail_msg("set %s: %s", sets[i][0], err.msg);
    char hash[crypto_pwhash_STRBYTES];
    assert_int_equal(crypto_pwhash_str(hash, "pw", 2, crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN), 0);
    assert_int_equal(config_set(&cfg, "console.password_hash", hash, &err), 0);

    char *text;
    size_t len;
    assert_int_equal(dump_to_string(&cfg, CONFIG_DUMP_SECRETS, &text, &len), 0);
    if (config_parse(&back, "dump", text, len, &diag))
        fail_msg("%s\n%d errors, first: %s", text, diag.n_errors, diag.msg[0]);
    assert_same_config(&cfg, &back);
    assert_memory_equal(back.dataplane.psk, cfg.dataplane.psk, 32);
    free(text);

    /* without secrets: the psk and the hash are only mentioned, and read back as unset */
    assert_int_equal(dump_to_string(&cfg, 0, &text, &len), 0);
    assert_non_null(strstr(text, "; psk = (set, hidden)\n"));
    assert_null(strstr(text, "00112233"));
    assert_null(strstr(text, hash));
    assert_int_equal(config_parse(&back, "dump", text, len, &diag), 0);
    assert_int_equal(back.dataplane.psk_len, 0);
    assert_string_equal(back.console.password_hash, "");
    free(text);

    /* the defaults round-trip too */
    assert_int_equal(dump_to_string(&def, 0, &text, &len), 0);
    assert_int_equal(config_parse(&back, "dump", text, len, &diag), 0);
    assert_same_config(&def, &back);
    free(text);
}

static void test_load_errors(void **state)
{
    (void)state;
    struct bora_config cfg;
    assert_int_equal(config_load(&cfg, "tests/data/config/does-not-exist.ini", &diag), -ENOENT);
    assert_int_equal(diag.n_errors, 1);
    assert_string_equal(diag.msg[0], "tests/data/config/does-not-exist.ini: cannot open: No such file or directory");
    assert_int_equal(config_load(&cfg, "tests/data/config", &diag), -EISDIR);
    assert_string_equal(diag.msg[0], "tests/data/config: not a regular file (a directory)");
    /* a FIFO is refused at once, not read until some writer comes; a device too */
    char dir[] = "/tmp/bora-test-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char fpath[64];
    snprintf(fpath, sizeof fpath, "%s/fifo.ini", dir);
    assert_int_equal(mkfifo(fpath, 0600), 0);
    alarm(10);   /* a load that waited for a writer would hang here: fail instead */
    assert_int_equal(config_load(&cfg, fpath, &diag), -EINVAL);
    alarm(0);
    char want[128];
    snprintf(want, sizeof want, "%s: not a regular file (a FIFO)", fpath);
    assert_string_equal(diag.msg[0], want);
    unlink(fpath);
    rmdir(dir);
    assert_int_equal(config_load(&cfg, "/dev/null", &diag), -EINVAL);
    assert_string_equal(diag.msg[0], "/dev/null: not a regular file (a device or socket)");
    assert_int_equal(config_load(&cfg, "tests/data/config/bad.ini", &diag), -EINVAL);
    assert_true(diag.n_errors >= 3);
    assert_string_equal(diag.msg[0], "tests/data/config/bad.ini:4: key 'limits.max_tokens': out of range 1..32768 (got '40000')");
    /* more errors than the diag keeps: all counted, the first CONFIG_DIAG_MAX kept */
    char text[4096] = "[limits]\n";
    for (int i = 0; i < CONFIG_DIAG_MAX + 10; i++)
        strcat(text, "bogus = 1\n");
    assert_int_equal(parse_str(&cfg, text), -EINVAL);
    assert_int_equal(diag.n_errors, CONFIG_DIAG_MAX + 10);
    assert_string_equal(diag.msg[CONFIG_DIAG_MAX - 1], "t.ini:33: key 'limits.bogus': unknown key (got '1')");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_valid),
        cmocka_unit_test(test_shipped_ini_is_defaults),
        cmocka_unit_test(test_bad_values_named),
        cmocka_unit_test(test_good_values_accepted),
        cmocka_unit_test(test_line_numbers_and_syntax),
        cmocka_unit_test(test_unknown_names),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_rules_between_keys),
        cmocka_unit_test(test_key_lines),
        cmocka_unit_test(test_set_get_live),
        cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
