/* console_int.h — internal to console/: the stats writers shared by the interpreter and
 * `stats watch`. */
#ifndef BORA_CONSOLE_CONSOLE_INT_H
#define BORA_CONSOLE_CONSOLE_INT_H

#include <jansson.h>
#include <stdlib.h>

#include "console/console.h"

/* Fills s from c's registry (zeros without one), after the daemon's refresh. */
void console_snapshot(struct console *c, struct metrics_snapshot *s);
/* A new JSON object with every figure of s (caller decrefs). */
json_t *console_stats_json(const struct metrics_snapshot *s);
/* The figures of s as aligned text lines. */
void console_stats_text(const struct metrics_snapshot *s, FILE *out);

#endif
