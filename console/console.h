/* console.h — the operator console: one command interpreter shared by every way in (UNIX
 * socket + boractl, serial line, SSH via boractl), and the small interface through which it
 * reads and steers the daemon (struct console_ops, supplied by borad). */
#ifndef BORA_CONSOLE_CONSOLE_H
#define BORA_CONSOLE_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "config/config.h"
#include "console/metrics.h"

#define CONSOLE_LINE_MAX      1024   /* bytes of one command line */
#define CONSOLE_PASSWORD_MAX  256    /* bytes of an operator password at most (bora passwd, the serial login) */
#define CONSOLE_ARGS_MAX      16     /* words of one command */
#define CONSOLE_TEXT_MAX      192    /* bytes of a name in a report */
#define CONSOLE_PROBLEM_MAX   4400   /* bytes of status's problem line: a sentence and a whole path */
#define CONSOLE_REQUESTS_MAX  256    /* requests listed by `requests` */
#define CONSOLE_TENSORS_MAX   32     /* tensor groups listed by `model` */
#define CONSOLE_VRAM_MAX      8      /* VRAM categories listed by `model` */
#define CONSOLE_WATCH_MS      1000   /* `stats watch` refresh period */

/* ---- what the daemon reports ---- */

enum console_state { CONSOLE_STATE_STARTING = 0, CONSOLE_STATE_SERVING, CONSOLE_STATE_DRAINING,
                     CONSOLE_STATE_RELOADING, CONSOLE_STATE_STOPPING,
                     CONSOLE_STATE_FAILING };   /* up, but every request fails: problem says why */

struct console_status {
    char model[CONSOLE_TEXT_MAX];       /* model path or name */
    char backend[32];                   /* "cpu", "cuda" */
    char precision[32];                 /* "bf16", "fp8", ... */
    char kv_cache[16];                  /* the KV cache's element type: "bf16", "fp8" */
    int state;                          /* enum console_state */
    char problem[CONSOLE_PROBLEM_MAX];  /* failing: what is wrong, what mends it, then the file ("" otherwise) */
    uint32_t queued, running;           /* requests waiting; being decoded */
};

struct console_request {
    uint64_t id;                        /* request_id as the client chose it */
    char client[64];                    /* "udp 10.0.0.7:4242", "tcp #3" */
    bool running;                       /* false = queued */
    uint64_t age_us;                    /* since ACCEPTED */
    uint32_t prompt_tokens, completion_tokens;
};

struct console_tensor {                 /* one tensor, or a group of like tensors */
    char name[CONSOLE_TEXT_MAX];        /* "layers.*.attention.wq" */
    char dtype[16];                     /* "bf16", "e4m3" */
    int64_t shape[4];
    int ndim;
    uint32_t count;                     /* tensors in the group */
    uint64_t bytes;                     /* of the whole group */
};

struct console_vram {
    char category[32];                  /* "weights", "kv_cache", "activations", ... */
    uint64_t bytes;
};

struct console_model {
    char name[CONSOLE_TEXT_MAX];
    char arch[32];
    uint32_t n_layers, dim, hidden_dim, n_heads, n_kv_heads, head_dim, vocab, max_ctx;
    uint64_t n_params, weight_bytes;
    struct console_tensor tensor[CONSOLE_TENSORS_MAX];
    int n_tensors;
    struct console_vram vram[CONSOLE_VRAM_MAX];
    int n_vram;
};

/* The daemon's side. Every callback runs on a console thread (never on a hot thread),
 * possibly on two console threads at once (socket and serial): the daemon serialises what
 * needs it. Each returns 0 or -errno with a message in err (err is never NULL). NULL
 * callbacks answer "not supported". ctx is passed back unchanged. */
struct console_ops {
    void *ctx;
    int (*status)(void *ctx, struct console_status *out, struct bora_err *err);
    /* Fills up to cap requests, queued and running; returns how many exist (may be > cap). */
    int (*requests)(void *ctx, struct console_request *out, size_t cap, struct bora_err *err);
    int (*cancel)(void *ctx, uint64_t id, struct bora_err *err);         /* -ENOENT: no such id */
    int (*model)(void *ctx, struct console_model *out, struct bora_err *err);
    int (*drain)(void *ctx, struct bora_err *err);     /* stop accepting; queued ones go on */
    int (*resume)(void *ctx, struct bora_err *err);    /* accept again */
    int (*reload)(void *ctx, struct bora_err *err);    /* reopen the model; queue kept */
    int (*shutdown)(void *ctx, struct bora_err *err);  /* as SIGTERM; returns at once */
    /* Copies the running config into out (the console reads keys from the copy). */
    int (*config_read)(void *ctx, struct bora_config *out, struct bora_err *err);
    /* Applies a live key (already checked with config_key_is_live and config_set on a
     * copy). -EINVAL with a message when the daemon refuses it. */
    int (*config_apply)(void *ctx, const char *key, const char *value, struct bora_err *err);
    /* Optional: called before stats, each `stats watch` refresh and metrics read the registry,
     * so the daemon can update the gauges it samples rather than counts (GPU memory). */
    void (*refresh)(void *ctx);
};

/* The interpreter: shared, read-only after console_init, used by every console thread. */
struct console {
    const struct console_ops *ops;
    struct metrics *metrics;            /* may be NULL: stats then say so */
    uint64_t start_ns;                  /* CLOCK_MONOTONIC when the daemon started */
};

/* How one command went. */
enum console_rc {
    CONSOLE_OK = 0,
    CONSOLE_ERROR = 1,       /* the command failed; the message was written */
    CONSOLE_USAGE = 2,       /* unknown command or bad arguments; the message was written */
    CONSOLE_WATCH = 3,       /* `stats watch`: the caller runs console_watch on its line */
    CONSOLE_QUIT = 4,        /* `quit`/`exit`: the session ends */
};

void console_init(struct console *c, const struct console_ops *ops, struct metrics *m);

/* Splits line into words (blanks separate; "double" or 'single' quotes group; no escapes)
 * in place. Returns the number of words, or -EINVAL (unbalanced quote, too many words). */
int console_split(char *line, char **argv, int cap);

/* Runs one command: argv[0] is the command (a leading "--json" word turns on JSON).
 * Writes the answer (text, or one JSON value per line with json) to out. Thread-safe.
 * Returns enum console_rc. */
int console_exec(struct console *c, int argc, char **argv, bool json, FILE *out);

/* console_split + console_exec on a copy of line (a blank line is CONSOLE_OK, no output). */
int console_exec_line(struct console *c, const char *line, bool json, FILE *out);

/* `stats watch`: writes the stats every CONSOLE_WATCH_MS (text: after a clear-screen
 * sequence; JSON: one object per line) to out, flushing each time, until a byte arrives on
 * in_fd (consumed), in_fd hangs up, or *stop becomes true (stop may be NULL).
 * Returns 0, or -EIO when writing failed. */
int console_watch(struct console *c, int in_fd, FILE *out, bool json, const _Atomic bool *stop);

/* Writes the metrics in Prometheus text exposition format (version 0.0.4). */
void console_prometheus(struct console *c, const struct metrics_snapshot *s, FILE *out);

/* Host memory from jemalloc ("stats.allocated", "stats.resident" after "epoch"), through
 * the weak/dlsym'd mallctl. Returns 0, or -ENOSYS when the process has no jemalloc. */
int console_host_memory(uint64_t *allocated, uint64_t *resident);

#endif
