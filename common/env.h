/* env.h — integer settings read from the environment (A/B and diagnostic knobs such as
 * BORA_MEGA_FLAGS): a value that is not a whole decimal number in range is not silently read
 * as 0, as atoi would; it is reported through bora_log (warn) naming the variable, and the
 * default is used instead. */
#ifndef BORA_COMMON_ENV_H
#define BORA_COMMON_ENV_H

#include <stdbool.h>

/* Parses s as a whole decimal integer in [lo, hi] (leading and trailing blanks allowed, a sign
 * allowed, nothing else): true and *out set, or false and *out untouched. Fuzzable: any s. */
bool bora_parse_int(const char *s, long lo, long hi, long *out);

/* The integer in environment variable `name`: def when it is unset or empty; def with a warning
 * naming the variable and its value when it is not a whole number in [lo, hi]. */
long bora_env_int(const char *name, long def, long lo, long hi);

#endif
