/* borad.c — the appliance daemon's entry: parses the command line, loads and validates the
 * config, then hands over to borad_run (cmd/borad_run.c). Exit status: 0 ok, 1 failure, 2 usage. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cmd/borad.h"
#include "common/env.h"
#include "common/log.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "config/config.h"
#include "console/console_server.h"

struct borad_args {
    const char *config;     /* -c FILE; NULL = built-in defaults */
    const char *check;      /* --check-config FILE */
    int help;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: borad [-c FILE] [--check-config FILE] [--help]\n"
            "  -c, --config FILE     run with the settings of FILE (INI; see config/bora.ini)\n"
            "  --check-config FILE   validate FILE, print every problem, exit 0 if it is ok\n"
            "  -h, --help            show this help\n"
            "Without -c, borad runs with the built-in defaults.\n");
}

/* Returns 0, or 2 after printing what is wrong with the command line. */
static int args_parse(int argc, char **argv, struct borad_args *a)
{
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            a->help = 1;
        } else if (!strcmp(s, "-c") || !strcmp(s, "--config") || !strcmp(s, "--check-config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "borad: option '%s' needs a FILE\n", s);
                return 2;
            }
            const char **slot = strcmp(s, "--check-config") ? &a->config : &a->check;
            if (*slot) {
                fprintf(stderr, "borad: one %s FILE only ('%s' and '%s')\n", s, *slot, argv[i + 1]);
                return 2;
            }
            *slot = argv[++i];
        } else {
            fprintf(stderr, "borad: unknown argument '%s' (try 'borad --help')\n", s);
            return 2;
        }
    }
    return 0;
}

static void diag_print(const struct config_diag *d)
{
    int shown = d->n_errors < CONFIG_DIAG_MAX ? d->n_errors : CONFIG_DIAG_MAX;
    for (int i = 0; i < shown; i++)
        fprintf(stderr, "%s\n", d->msg[i]);
    if (d->n_errors > shown)
        fprintf(stderr, "... and %d more errors\n", d->n_errors - shown);
}

/* Loads path into cfg; prints every problem. Returns 0 or 1. */
static int load(const char *path, struct bora_config *cfg, struct config_diag *d)
{
    if (config_load(cfg, path, d) == 0)
        return 0;
    diag_print(d);
    return 1;
}

/* "FILE:LINE" where the file set key, "FILE" for a key it left at its default. */
static const char *where(const char *file, const struct bora_config *cfg, const char *key, char *buf, size_t n)
{
    const int line = config_key_line(cfg, key);
    if (line > 0)
        snprintf(buf, n, "%s:%d", file, line);
    else
        snprintf(buf, n, "%s", file);
    return buf;
}

/* --check-config: [model] path must name a checkpoint borad could open: its config, the headers,
 * names, dtypes and shapes of every tensor (model_open maps the shards, it reads no weights) and
 * its tokenizer. Prints the problem and returns 1. */
static int model_dir_problem(const struct bora_config *cfg, const char *file)
{
    const char *dir = cfg->model.path;
    struct stat st;
    char p[4200], w[4200];
    const char *problem = NULL;
    if (stat(dir, &st) != 0)
        problem = strerror(errno);
    else if (!S_ISDIR(st.st_mode))
        problem = "not a directory (name the checkpoint's folder)";
    else {
        snprintf(p, sizeof p, "%s/config.json", dir);
        const bool hf = access(p, R_OK) == 0;
        snprintf(p, sizeof p, "%s/params.json", dir);
        if (!hf && access(p, R_OK) != 0)
            problem = "neither config.json nor params.json is there";
    }
    struct bora_err err = { "" };
    if (!problem) {   /* as borad will open it; AUTO: no FP8 quantization for a check */
        struct model *m = NULL;
        const struct model_open_opts mo = { .precision = MODEL_PRECISION_AUTO };
        if (model_open(&m, dir, &mo, &err) != 0) {
            problem = err.msg;
        } else {
            struct tokenizer *t = NULL;
            if (m->tokenizer_path[0] && tokenizer_open_for(&t, m->tokenizer_path, m->cfg.vocab_size, &err) != 0)
                problem = err.msg;
            tokenizer_close(t);
            model_close(m);
        }
        if (!problem)
            return 0;
    }
    fprintf(stderr, "%s: key 'model.path': %s (got '%s')\n", where(file, cfg, "model.path", w, sizeof w), problem, dir);
    return 1;
}

struct check_where {
    const char *file;
    const struct bora_config *cfg;
};

/* console_server_check's report: "FILE:LINE: key 'console.serial': ..." */
static void check_report(void *ctx, const char *key, const char *msg)
{
    const struct check_where *cw = ctx;
    char w[4200];
    fprintf(stderr, "%s: %s\n", where(cw->file, cw->cfg, key, w, sizeof w), msg);
}

static void endpoint_text(const struct config_endpoint *ep, char *buf, size_t n)
{
    if (!ep->family)
        snprintf(buf, n, "off");
    else
        snprintf(buf, n, ep->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
}

static void summary_print(const struct bora_config *cfg, const char *source)
{
    static const char *const backends[] = { "auto", "cpu", "cuda" };
    char udp[80], tcp[80];
    endpoint_text(&cfg->dataplane.udp, udp, sizeof udp);
    endpoint_text(&cfg->dataplane.tcp, tcp, sizeof tcp);
    fprintf(stderr, "borad: config %s\n", source);
    fprintf(stderr, "  model    %s (backend %s, max_ctx %u)\n",
            cfg->model.path[0] ? cfg->model.path : "(built-in default)",
            backends[cfg->model.backend], cfg->model.max_ctx);
    fprintf(stderr, "  listen   udp %s, tcp %s, dpdk %s, auth %s\n", udp, tcp,
            cfg->dataplane.dpdk[0] ? "on" : "off", cfg->dataplane.psk_len ? "psk" : "off");
    fprintf(stderr, "  limits   queue %u, prompt %u bytes, %u tokens, timeout %u ms\n",
            cfg->limits.queue_depth, cfg->limits.max_prompt_bytes, cfg->limits.max_tokens,
            cfg->limits.request_timeout_ms);
    fprintf(stderr, "  console  socket %s, serial %s\n",
            cfg->console.socket[0] ? cfg->console.socket : "off",
            cfg->console.serial[0] ? cfg->console.serial : "off");
}

int main(int argc, char **argv)
{
    struct borad_args a = { 0 };
    static struct config_diag diag;   /* 16 KiB: kept off the stack */
    struct bora_config cfg;
    int rc = args_parse(argc, argv, &a);
    if (rc || a.help) {
        usage(rc ? stderr : stdout);
        return rc;
    }
    bora_log_set_name("borad");
    /* the kernels' diagnostic switches are for `bora bench`; one of them makes answers wrong */
    {   /* any value but 0 refuses to serve, a malformed one too (the engine would warn and ignore it) */
        const char *dbg = getenv("BORA_MEGA_DEBUG");
        long dv = 0;
        if (dbg && *dbg && (!bora_parse_int(dbg, 0, INT_MAX, &dv) || dv)) {
            fprintf(stderr, "borad: BORA_MEGA_DEBUG=%s is set: a decode-kernel diagnostic that makes every answer "
                            "wrong; unset it to serve\n", dbg);
            return 1;
        }
    }
    static const char *const tuning[] = { "BORA_MEGA_CB", "BORA_MEGA_NS", "BORA_MEGA_BLOCKS", "BORA_MEGA_FLAGS",
                                          "BORA_MEGA_AHEAD", "BORA_MEGA_TRACE", "BORA_DECODE", "BORA_DECODE_SWITCH",
                                          "BORA_PREFILL_TUNE" };
    for (size_t i = 0; i < sizeof tuning / sizeof *tuning; i++)
        if (getenv(tuning[i]))
            fprintf(stderr, "borad: note: %s=%s is set (a tuning experiment for bora bench; decode speed may "
                            "differ from the documented figures)\n", tuning[i], getenv(tuning[i]));
    if (a.check) {   /* every problem: the file's, then what it names that the machine lacks */
        int bad = 0;
        rc = config_load(&cfg, a.check, &diag);
        if (rc) {
            diag_print(&diag);
            struct stat st;
            if (rc != -EINVAL || stat(a.check, &st) != 0 || !S_ISREG(st.st_mode))   /* not read: nothing parsed */
                return 1;
            bad = 1;             /* cfg holds the defaults and every valid key: check those too */
        }
        if (cfg.model.path[0] && model_dir_problem(&cfg, a.check))
            bad = 1;
        struct check_where cw = { a.check, &cfg };
        if (borad_build_problems(&cfg, check_report, &cw))   /* what this build lacks */
            bad = 1;
        if (console_server_check(&cfg.console, check_report, &cw))   /* what the start would refuse */
            bad = 1;
        if (bad)
            return 1;
        printf("%s: ok\n", a.check);
        return 0;
    }
    if (a.config && load(a.config, &cfg, &diag))
        return 1;
    if (!a.config)
        config_defaults(&cfg);
    summary_print(&cfg, a.config ? a.config : "(built-in defaults)");
    return borad_run(&cfg);
}
