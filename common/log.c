/* log.c — see log.h. */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int log_level = BORA_LOG_INFO;
static char log_name[32] = "bora";

void bora_log_set_name(const char *name)
{
    if (name && *name)
        snprintf(log_name, sizeof log_name, "%s", name);
}

void bora_log_set_level(int level)
{
    if (level < BORA_LOG_ERROR)
        level = BORA_LOG_ERROR;
    if (level > BORA_LOG_DEBUG)
        level = BORA_LOG_DEBUG;
    /* relaxed: a filter, nothing else is published with it */
    atomic_store_explicit(&log_level, level, memory_order_relaxed);
}

int bora_log_level(void)
{
    return atomic_load_explicit(&log_level, memory_order_relaxed);
}

int bora_log_on(int level)
{
    return level <= bora_log_level();
}

void bora_log(int level, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    if (!bora_log_on(level))
        return;
    char line[1024];
    int n = snprintf(line, sizeof line, "%s: %s: ", log_name, names[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(2, line, len);   /* one write: lines from threads do not interleave */
    (void)w;
}
