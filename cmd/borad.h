/* borad.h — the pieces of the borad executable: main (cmd/borad.c) parses the command line
 * and loads the config; borad_run (cmd/borad_run.c) is the server the dataplane plugs in. */
#ifndef BORA_CMD_BORAD_H
#define BORA_CMD_BORAD_H

#include "config/config.h"

/* Runs the appliance with a validated config until it is told to stop (SIGTERM).
 * Called once, from main's thread; cfg stays valid and unchanged for the whole call.
 * Returns the process exit status (0 after a clean shutdown). */
int borad_run(const struct bora_config *cfg);

#endif
