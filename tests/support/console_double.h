/* console_double.h — a stand-in daemon for console tests: implements struct console_ops
 * over a fake state (a few requests, a config copy, drain/resume/shutdown flags) and
 * records what the console asked, so tests can check the commands reached the daemon. */
#ifndef BORA_TESTS_SUPPORT_CONSOLE_DOUBLE_H
#define BORA_TESTS_SUPPORT_CONSOLE_DOUBLE_H

#include <pthread.h>
#include <stdatomic.h>

#include "console/console.h"

#define DOUBLE_REQUESTS 4

struct console_double {
    pthread_mutex_t lock;                /* guards everything below */
    struct bora_config cfg;              /* the "running" config */
    int state;                           /* enum console_state */
    struct console_request req[DOUBLE_REQUESTS];
    int n_req;
    int reloads, cancels;
    char last_key[64], last_value[CONFIG_VALUE_MAX + 1];
    _Atomic bool shutdown;               /* set by the shutdown command */
    struct metrics *gauges;              /* refresh sets the GPU gauges here when gpu_total != 0 */
    uint64_t gpu_used, gpu_total;
    int refreshes;
    struct console_ops ops;
};

/* Fills d with defaults (cfg = config_defaults + cfg_or_null's copy), 3 requests
 * (ids 101 running, 102 and 103 queued), state SERVING. */
void console_double_init(struct console_double *d, const struct bora_config *cfg_or_null);
void console_double_fini(struct console_double *d);

/* Checks text as Prometheus text exposition (0.0.4): HELP/TYPE lines, metric and label
 * names, values, histogram buckets cumulative with +Inf equal to _count. Returns 0, or -1
 * with the offending line and why in why. Counts samples into *n_samples (may be NULL). */
int prom_check(const char *text, char *why, size_t why_n, int *n_samples);

/* The value of the sample whose line starts with `series ` (e.g. 'x_count' or
 * 'x_bucket{le="+Inf"}'); -1 if absent. */
double prom_value(const char *text, const char *series);

#endif
