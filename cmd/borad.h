/* borad.h — the pieces of the borad executable: main (cmd/borad.c) parses the command line
 * and loads the config; borad_run (cmd/borad_run.c) is the server the dataplane plugs in. */
#ifndef BORA_CMD_BORAD_H
#define BORA_CMD_BORAD_H

#include "common/err.h"
#include "config/config.h"
#include "dataplane/generator.h"
#include "dataplane/server.h"

/* Runs the appliance with a validated config until it is told to stop (SIGTERM).
 * Called once, from main's thread; cfg stays valid and unchanged for the whole call.
 * Returns the process exit status (0 after a clean shutdown). */
int borad_run(const struct bora_config *cfg);

/* What cfg asks for that this build lacks (a DPDK port, the CUDA backend): each problem reported
 * once as report(ctx, key, "key 'KEY': problem"). Returns how many; --check-config and the start
 * both refuse a config with any. Pure apart from report. */
int borad_build_problems(const struct bora_config *cfg, void (*report)(void *ctx, const char *key, const char *msg),
                         void *ctx);

/* Opens the generator of cfg's [model] and [engine] settings over the checkpoint in dir (at
 * start, and again for the console's `reload`). Any thread. Errors: those of gen_engine_open,
 * with the message in err. */
int borad_generator_open(const struct bora_config *cfg, const char *dir, struct generator *g,
                         struct bora_err *err);
/* Fills the dataplane's live settings (limits, allow list into allow, rate limit) from cfg;
 * dc's other fields are left alone. Pure. */
void borad_dp_live(const struct bora_config *cfg, struct dp_config *dc, struct dp_cidr allow[DP_ALLOW_MAX]);

#endif
