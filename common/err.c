/* err.c — formatting helpers for struct bora_err. */
#include "common/err.h"

#include <stdio.h>
#include <string.h>

int bora_errf(struct bora_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void bora_err_prefix(struct bora_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char old[BORA_ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof err->msg - 2)
        return;
    size_t rest = sizeof err->msg - (size_t)n;
    err->msg[n] = ':';
    err->msg[n + 1] = ' ';
    memcpy(err->msg + n + 2, old, rest - 2);
    err->msg[sizeof err->msg - 1] = 0;
}
