/* borad_run.c — stand-in for the server loop until the dataplane lands: the dataplane
 * replaces this file with the real borad_run (transports, decoder thread, console). */
#include <stdio.h>

#include "cmd/borad.h"

int borad_run(const struct bora_config *cfg)
{
    (void)cfg;
    fprintf(stderr, "borad: configuration is valid, but the server is not built yet "
            "(the dataplane is a later task); exiting\n");
    return 1;
}
