/* borad_run.c — the appliance's server: loads the model into the engine, opens the kernel
 * UDP/TCP dataplane from the config, prints a banner saying how to talk to it, serves until
 * SIGTERM/SIGINT, then drains (protocol.md rule 16) and returns 0. */
#include <errno.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "cmd/borad.h"
#include "cmd/borad_console.h"
#include "dataplane/gen_engine.h"
#include "dataplane/server.h"
#include "model/default_model.h"

struct signal_waiter {
    sigset_t set;
    struct dp_server *s;
};

/* Waits for SIGTERM/SIGINT (blocked in every thread) and starts the drain. */
static void *signal_thread(void *arg)
{
    struct signal_waiter *w = arg;
    int sig = 0;
    if (sigwait(&w->set, &sig) == 0 && sig != SIGUSR1) {
        fprintf(stderr, "borad: %s: draining (new requests get SHUTTING_DOWN)\n",
                sig == SIGTERM ? "SIGTERM" : "SIGINT");
        dp_server_stop(w->s);
    }
    return NULL;
}

static void endpoint_spec(const struct config_endpoint *ep, char *buf, size_t n)
{
    if (!ep->family)
        buf[0] = 0;
    else
        snprintf(buf, n, ep->family == AF_INET6 ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
}

int borad_build_problems(const struct bora_config *cfg, void (*report)(void *ctx, const char *key, const char *msg),
                         void *ctx)
{
    int n = 0;
    if (cfg->dataplane.dpdk[0] && !dp_dpdk_available()) {
        char msg[BORA_ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "key 'dataplane.dpdk': this build has no DPDK port (build with libdpdk-dev "
                                  "installed, or clear it to serve over kernel UDP/TCP) (got '%s')", cfg->dataplane.dpdk);
        report(ctx, "dataplane.dpdk", msg);
        n++;
    }
#ifndef BORA_CUDA
    if (cfg->model.backend == CONFIG_BACKEND_CUDA) {
        report(ctx, "model.backend", "key 'model.backend': this build has no CUDA backend (build with nvcc: make "
                                     "CUDA=1; or use auto or cpu) (got 'cuda')");
        n++;
    }
#endif
    return n;
}

static void start_report(void *ctx, const char *key, const char *msg)
{
    (void)ctx;
    (void)key;
    fprintf(stderr, "borad: %s\n", msg);
}

int borad_generator_open(const struct bora_config *cfg, const char *dir, struct generator *g,
                         struct bora_err *err)
{
    static const enum engine_backend backends[] = { ENGINE_BACKEND_AUTO, ENGINE_BACKEND_CPU, ENGINE_BACKEND_CUDA };
    static const enum model_precision precisions[] = { MODEL_PRECISION_AUTO, MODEL_PRECISION_BF16, MODEL_PRECISION_FP8 };
    struct gen_engine_opts o = {
        .model_dir = dir, .backend = backends[cfg->model.backend % 3],
        .precision = precisions[cfg->model.precision % 3], .max_ctx = (int)cfg->model.max_ctx,
        .n_threads = (int)cfg->engine.threads, .prefix_cache = cfg->model.prefix_cache,
        .prefill_chunk = (int)cfg->engine.prefill_chunk,
        .kv = cfg->engine.kv_dtype == CONFIG_KV_FP8 ? ENGINE_KV_FP8 : ENGINE_KV_BF16,
    };
    return gen_engine_open(g, &o, err);
}

void borad_dp_live(const struct bora_config *cfg, struct dp_config *dc, struct dp_cidr allow[DP_ALLOW_MAX])
{
    uint32_t n_allow = cfg->dataplane.n_allow < DP_ALLOW_MAX ? cfg->dataplane.n_allow : DP_ALLOW_MAX;
    for (uint32_t i = 0; i < n_allow; i++) {
        allow[i].family = cfg->dataplane.allow[i].family;
        memcpy(allow[i].addr, cfg->dataplane.allow[i].addr, 16);
        allow[i].prefix = cfg->dataplane.allow[i].prefix;
    }
    dc->allow = allow;
    dc->n_allow = n_allow;
    dc->rate_limit = cfg->dataplane.rate_limit;
    dc->max_conns_per_addr = cfg->dataplane.max_conns_per_addr;
    dc->max_prompt_bytes = cfg->limits.max_prompt_bytes;
    dc->max_tokens = cfg->limits.max_tokens;
    dc->request_timeout_ms = cfg->limits.request_timeout_ms;
    dc->shutdown_grace_ms = cfg->limits.shutdown_grace_ms;
}

static int open_generator(const struct bora_config *cfg, struct generator *g, char *dir, size_t cap)
{
    struct bora_err err = { "" };
    if (cfg->model.path[0]) {
        snprintf(dir, cap, "%s", cfg->model.path);
    } else if (default_model_ensure(dir, cap, &err) < 0) {
        fprintf(stderr, "borad: built-in default model: %s\n", err.msg);
        return -1;
    }
    if (borad_generator_open(cfg, dir, g, &err) < 0) {
        fprintf(stderr, "borad: model %s: %s\n", dir, err.msg);
        if (!cfg->model.path[0] && strstr(err.msg, dir))   /* a file of the cached copy refused, not the GPU */
            fprintf(stderr, "borad: that is the built-in model's cached copy, damaged; delete the folder and the next "
                            "start generates it again\n");
        return -1;
    }
    return 0;
}

static void banner(const struct bora_config *cfg, const struct generator *g, const char *dir,
                   const char *udp, const char *tcp, const struct dp_server *s)
{
    const struct model *m = gen_engine_model(g);
    fprintf(stderr, "borad: serving %s%s (%s, vocab %u, context %u, %s KV cache, backend %s)\n", dir,
            cfg->model.path[0] ? "" : " [built-in default: random weights, not a trained model]",
            model_arch_name(m->cfg.arch), g->vocab_size, g->max_ctx, gen_engine_kv(g), gen_engine_backend(g));
    if (gen_engine_load_note(g)[0])
        fprintf(stderr, "borad: %s\n", gen_engine_load_note(g));
    if (gen_engine_backend_why(g)[0])
        fprintf(stderr, "borad: not on a GPU: %s\n", gen_engine_backend_why(g));
    fprintf(stderr, "borad: BWP/1 on udp %s, tcp %s%s — talk to it with:\n", udp[0] ? udp : "off",
            tcp[0] ? tcp : "off", cfg->dataplane.psk_len ? " (AUTH: pre-shared key required)" : "");
    if (dp_server_dpdk(s)) {
        char ip[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &cfg->dataplane.dpdk_ip, ip, sizeof ip);
        fprintf(stderr, "borad: BWP/1 over DPDK on %s:%u (port MAC %s, polled by its own thread)\n", ip,
                cfg->dataplane.dpdk_port, dp_dpdk_mac(dp_server_dpdk(s)));
    }
    const char *ep = udp[0] ? udp : tcp;
    /* the bora beside this borad, so the lines can be pasted as they are */
    char bora[1100] = "bora", exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(bora, sizeof bora, "%s/bora", exe);
            if (access(bora, X_OK) != 0)
                snprintf(bora, sizeof bora, "bora");
        }
    }
    if (m->tokenizer_path[0])
        fprintf(stderr, "  %s client --%s %s --prompt 'Hello! Where is my order?' -n 16\n", bora,
                udp[0] ? "udp" : "tcp", ep);
    fprintf(stderr, "  %s client --%s %s --ids 1,1032,1049 -n 16 --json\n", bora, udp[0] ? "udp" : "tcp", ep);
    fprintf(stderr, "  (protocol: docs/CLIENTS.md; SIGTERM drains and exits 0)\n");
}

int borad_run(const struct bora_config *cfg)
{
    bora_log_set_level(cfg->console.log_level);   /* config enum = log levels, error..debug */
    if (borad_build_problems(cfg, start_report, NULL))   /* refused rather than ignored */
        return 1;
    struct signal_waiter w;
    sigemptyset(&w.set);
    sigaddset(&w.set, SIGTERM);
    sigaddset(&w.set, SIGINT);
    sigaddset(&w.set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &w.set, NULL);      /* before any thread starts */
    /* A peer that goes away (a console session closed mid-answer, `stats watch` killed, a TCP
     * client gone) is that session's EPIPE, never the daemon's death. */
    signal(SIGPIPE, SIG_IGN);
    struct generator g;
    char dir[4096];
    if (open_generator(cfg, &g, dir, sizeof dir) < 0)
        return 1;
    char udp[96], tcp[96];
    endpoint_spec(&cfg->dataplane.udp, udp, sizeof udp);
    endpoint_spec(&cfg->dataplane.tcp, tcp, sizeof tcp);
    struct bwp_key key = { .len = cfg->dataplane.psk_len };
    memcpy(key.bytes, cfg->dataplane.psk, cfg->dataplane.psk_len);
    struct dp_cidr allow[DP_ALLOW_MAX];
    struct dp_config dc = {
        .udp = udp, .tcp = tcp, .queue_depth = cfg->limits.queue_depth, .key = key.len ? &key : NULL,
    };
    borad_dp_live(cfg, &dc, allow);
    struct dp_dpdk_config dpdk = { .eal_args = cfg->dataplane.dpdk, .ip = cfg->dataplane.dpdk_ip,
                                   .udp_port = (uint16_t)cfg->dataplane.dpdk_port };
    if (cfg->dataplane.dpdk[0])
        dc.dpdk = &dpdk;
    struct metrics *metrics = metrics_create();        /* console figures, lock-free */
    dc.metrics = metrics;
    struct bora_err err = { "" };
    struct dp_server *s;
    if (!metrics || dp_server_open(&s, &dc, &g, &err) < 0) {
        fprintf(stderr, "borad: %s\n", metrics ? err.msg : "out of memory");
        metrics_destroy(metrics);
        g.ops->close(&g);
        return 1;
    }
    struct borad_console *con;
    if (borad_console_start(&con, cfg, metrics, s, &g, dir) < 0) {
        dp_server_close(s);
        metrics_destroy(metrics);
        g.ops->close(&g);
        return 1;
    }
    banner(cfg, &g, dir, udp, tcp, s);
    w.s = s;
    pthread_t sig_t;
    int rc = pthread_create(&sig_t, NULL, signal_thread, &w);
    if (rc) {
        fprintf(stderr, "borad: cannot start the signal thread: %s\n", strerror(rc));
        borad_console_stop(con);
        dp_server_close(s);
        metrics_destroy(metrics);
        g.ops->close(&g);
        return 1;
    }
    rc = dp_server_run(s, &err);
    if (rc < 0)
        fprintf(stderr, "borad: dataplane: %s\n", err.msg);
    if (dp_server_dpdk(s)) {
        struct dp_dpdk_stats st;
        dp_dpdk_stats(dp_server_dpdk(s), &st);
        fprintf(stderr, "borad: dpdk port: %llu packets in, %llu out, %llu ARP replies, %llu bad checksums, "
                "%llu fragments, %llu reassembled\n", (unsigned long long)st.rx_pkts, (unsigned long long)st.tx_pkts,
                (unsigned long long)st.arp_replies, (unsigned long long)st.bad_cksum,
                (unsigned long long)st.fragments, (unsigned long long)st.reassembled);
    }
    pthread_kill(sig_t, SIGUSR1);                   /* release the waiter if no signal came */
    pthread_join(sig_t, NULL);
    borad_console_stop(con);
    dp_server_close(s);
    metrics_destroy(metrics);
    g.ops->close(&g);
    if (rc == 0)
        fprintf(stderr, "borad: drained, exiting\n");
    return rc < 0 ? 1 : 0;
}
