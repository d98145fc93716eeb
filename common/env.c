/* env.c — see env.h. */
#include "common/env.h"

#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

bool bora_parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s)
        return false;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return false;
    char *end;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (end == s || errno == ERANGE)
        return false;
    while (isspace((unsigned char)*end))
        end++;
    if (*end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

long bora_env_int(const char *name, long def, long lo, long hi)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return def;
    long v;
    if (bora_parse_int(s, lo, hi, &v))
        return v;
    bora_log(BORA_LOG_WARN, "%s=\"%s\" is not a whole number in [%ld, %ld]; using %ld", name, s, lo, hi, def);
    return def;
}
