/* config.h — bora's run-time settings: the INI file (parsed with inih), its defaults, and
 * validation whose messages name the file, line, key and bad value. Every other module
 * reads its settings from a `struct bora_config`; nothing else parses configuration. */
#ifndef BORA_CONFIG_CONFIG_H
#define BORA_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

/* Limits of the representation (not tunables: they bound what the file can say). */
#define CONFIG_VALUE_MAX     180   /* bytes of any string value (an INI line is at most 197) */
#define CONFIG_HOST_MAX      46    /* INET6_ADDRSTRLEN */
#define CONFIG_PSK_MIN       16    /* bytes of pre-shared key (32 hex digits) */
#define CONFIG_PSK_MAX       64    /* bytes (128 hex digits) */
#define CONFIG_ALLOW_MAX     16    /* CIDRs in dataplane.allow */
#define CONFIG_SOCKET_MAX    108   /* sizeof(sun_path), terminator included */
#define CONFIG_NAME_MAX      33    /* user/group name, terminator included */
#define CONFIG_KEY_LINES     64    /* per-key line slots (at least config_keys.h CONFIG_KEYS_MAX) */
#define CONFIG_DIAG_MAX      32    /* messages kept by struct config_diag */
#define CONFIG_FILE_MAX      (1u << 20) /* bytes of a config file */

enum config_backend   { CONFIG_BACKEND_AUTO, CONFIG_BACKEND_CPU, CONFIG_BACKEND_CUDA };
enum config_precision { CONFIG_PRECISION_AUTO, CONFIG_PRECISION_BF16, CONFIG_PRECISION_FP8 };
enum config_kv_dtype  { CONFIG_KV_BF16, CONFIG_KV_FP8 };
enum config_log_level { CONFIG_LOG_ERROR, CONFIG_LOG_WARN, CONFIG_LOG_INFO, CONFIG_LOG_DEBUG };

/* A listening address; family 0 means "off" (empty value in the file). */
struct config_endpoint {
    int family;                   /* AF_INET, AF_INET6, or 0 = off */
    char host[CONFIG_HOST_MAX];   /* numeric address as inet_ntop writes it, no brackets */
    uint32_t port;                /* 1..65535 */
};

/* One entry of an allow list: addresses whose first `prefix` bits equal addr's. */
struct config_cidr {
    int family;                   /* AF_INET or AF_INET6 */
    uint8_t addr[16];             /* network byte order; IPv4 uses the first 4 bytes */
    uint32_t prefix;              /* 0..32 (IPv4) or 0..128 (IPv6); host bits are zero */
};

struct bora_config {
    struct config_model {
        char path[CONFIG_VALUE_MAX + 1];  /* checkpoint folder or file; "" = built-in default model */
        int backend;                      /* enum config_backend */
        int precision;                    /* enum config_precision (weights on the GPU) */
        uint32_t max_ctx;                 /* tokens; 0 = the model's own maximum */
        bool prefix_cache;                /* reuse KV of a shared prompt prefix */
    } model;
    struct config_engine {
        uint32_t threads;                 /* CPU threads; 0 = one per core */
        uint32_t tensor_parallel;         /* GPUs: 1, 2, 4 or 8 */
        uint32_t prefill_chunk;           /* tokens per prefill step */
        int kv_dtype;                     /* enum config_kv_dtype */
    } engine;
    struct config_dataplane {
        struct config_endpoint udp;       /* kernel UDP socket */
        struct config_endpoint tcp;       /* kernel TCP listener */
        char dpdk[CONFIG_VALUE_MAX + 1];  /* EAL arguments; "" = no DPDK port */
        uint32_t dpdk_ip;                 /* IPv4 of the DPDK port, network byte order; 0 = unset */
        uint32_t dpdk_port;               /* UDP port served on the DPDK port */
        uint8_t psk[CONFIG_PSK_MAX];      /* HMAC key of BWP/1 AUTH */
        uint32_t psk_len;                 /* bytes; 0 = no AUTH */
        struct config_cidr allow[CONFIG_ALLOW_MAX];
        uint32_t n_allow;                 /* 0 = every client allowed */
        uint32_t rate_limit;              /* requests/s per client; 0 = off */
        uint32_t max_conns_per_addr;      /* TCP connections open from one client address; 0 = off */
    } dataplane;
    struct config_limits {
        uint32_t queue_depth;             /* requests waiting (BUSY beyond) */
        uint32_t max_prompt_bytes;        /* prompt_len limit (TOO_LARGE beyond) */
        uint32_t max_tokens;              /* GENERATE max_tokens limit (BAD_PARAMS beyond) */
        uint32_t request_timeout_ms;      /* deadline when the client sends 0 */
        uint32_t shutdown_grace_ms;       /* SIGTERM: time left to running requests */
    } limits;
    struct config_console {
        char socket[CONFIG_SOCKET_MAX];   /* UNIX socket path; "" = none */
        uint32_t socket_mode;             /* permission bits, never writable by others */
        char socket_owner[CONFIG_NAME_MAX]; /* user name or uid; "" = the process's */
        char socket_group[CONFIG_NAME_MAX]; /* group name or gid; "" = the process's */
        char serial[CONFIG_VALUE_MAX + 1];  /* /dev/tty...; "" = no serial console */
        uint32_t baud;                    /* serial line speed, a standard rate */
        char password_hash[CONFIG_VALUE_MAX + 1]; /* crypto_pwhash_str() string; "" = none set */
        uint32_t max_login_failures;      /* failed logins before the line is locked */
        uint32_t idle_timeout_s;          /* a socket session silent this long is closed; 0 = never */
        int log_level;                    /* enum config_log_level */
    } console;
    /* the line of the parsed file that set each key (config_keys.h order); 0 for a default or a
     * key config_set changed since. Read with config_key_line(). */
    uint32_t key_line[CONFIG_KEY_LINES];
};

/* Every message of one parse, in line order: the first CONFIG_DIAG_MAX are kept,
 * n_errors counts them all. Each reads "FILE:LINE: key 'section.key': what (got 'value')". */
struct config_diag {
    int n_errors;
    char msg[CONFIG_DIAG_MAX][BORA_ERR_MSG_MAX];
};

/* Fills cfg with the defaults (which config/bora.ini spells out). Cannot fail. */
void config_defaults(struct bora_config *cfg);

/* Parses an INI text of len bytes (need not be NUL-terminated; may hold any bytes) over
 * the defaults into cfg. name labels messages (the file name). Pure: no I/O, no global
 * state (beyond libsodium's one-time sodium_init); any thread. Reports every problem into diag (may be NULL): syntax errors, unknown
 * sections and keys, duplicates, bad values, contradictions between keys.
 * Returns 0, or -EINVAL when anything was wrong (cfg then holds defaults + valid keys). */
int config_parse(struct bora_config *cfg, const char *name, const char *text, size_t len,
                 struct config_diag *diag);

/* Reads the file at path and parses it as config_parse does.
 * Returns 0, -EINVAL (bad content, see diag), or -errno when the file cannot be read
 * (-EFBIG over CONFIG_FILE_MAX); then diag holds one "path: cannot open|read: why" message. */
int config_load(struct bora_config *cfg, const char *path, struct config_diag *diag);

/* Checks the rules that tie keys together (e.g. dpdk needs dpdk_ip) on a whole config.
 * Returns 0 or -EINVAL with "key 'section.key': what" in err. */
int config_validate(const struct bora_config *cfg, struct bora_err *err);

/* Sets one key, named "section.key", from its text form, as the file would. The value
 * is trimmed of surrounding blanks. cfg changes only if the whole result is valid.
 * Caller serialises access to cfg. Returns 0, -ENOENT (unknown key) or -EINVAL (bad
 * value), with "key 'section.key': what (got 'value')" in err. Any key can be set; the
 * console must ask config_key_is_live() whether the running daemon honours it. */
int config_set(struct bora_config *cfg, const char *key, const char *value, struct bora_err *err);

/* The line of the file parsed into cfg that set key ("section.key"): > 0, 0 when the key has
 * its default or was set by config_set since, -ENOENT for an unknown key. */
int config_key_line(const struct bora_config *cfg, const char *key);

/* Writes the text form of one key into buf (NUL-terminated). Returns the length,
 * -ENOENT (unknown key) or -ENOSPC (buf too small). Secrets are written too. */
int config_get(const struct bora_config *cfg, const char *key, char *buf, size_t n);

/* 1 if a running borad applies a new value of key at once, 0 if it needs a restart,
 * -ENOENT if there is no such key. */
int config_key_is_live(const char *key);

/* The i-th key ("section.key") in file order, or NULL past the last; for listings. */
const char *config_key_name(size_t i);

/* Writes cfg as an INI file that config_parse reads back to the same config.
 * Without CONFIG_DUMP_SECRETS, psk and password_hash are written as comments
 * ("; psk = (set, hidden)"), so the text is safe to show an operator.
 * Returns 0 or -EIO when writing to f failed. */
#define CONFIG_DUMP_SECRETS 1u
int config_dump(const struct bora_config *cfg, FILE *f, unsigned flags);

#endif
