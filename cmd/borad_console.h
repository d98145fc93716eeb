/* borad_console.h — borad's side of the operator console: the struct console_ops that read
 * and steer the running dataplane, and the console threads' start and stop. */
#ifndef BORA_CMD_BORAD_CONSOLE_H
#define BORA_CMD_BORAD_CONSOLE_H

#include "config/config.h"
#include "console/metrics.h"
#include "dataplane/generator.h"
#include "dataplane/server.h"

struct borad_console;

/* Starts the console ways in of cfg->console (nothing when neither socket nor serial is
 * set) over server s, generator g (model in dir; `reload` has the decoder swap its contents
 * for a newly opened one) and registry m, all of which outlive it.
 * Called from borad_run's thread. Returns 0 with *out set (NULL when no console is
 * configured), or -errno after printing what is wrong. */
int borad_console_start(struct borad_console **out, const struct bora_config *cfg, struct metrics *m,
                        struct dp_server *s, const struct generator *g, const char *dir);
/* Stops the console threads and frees bc (NULL is fine). */
void borad_console_stop(struct borad_console *bc);

#endif
