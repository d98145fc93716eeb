/* err.h — error reporting shared by every module: -errno returns plus a message buffer
 * that names the thing (file, tensor, key) and the problem, filled by the callee. */
#ifndef BORA_COMMON_ERR_H
#define BORA_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

#define BORA_ERR_MSG_MAX 512

/* A caller-owned message buffer. Library functions that can fail take a
 * `struct bora_err *` (may be NULL) and, when they return a negative code,
 * leave a one-line, human-readable message in it. */
struct bora_err {
    char msg[BORA_ERR_MSG_MAX];
};

/* Formats the message into err (if err is not NULL) and returns code, so a
 * failure can be written `return bora_errf(err, -EINVAL, "%s: ...", path);`. */
int bora_errf(struct bora_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (used when a caller adds context). */
void bora_err_prefix(struct bora_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifndef likely
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

#define BORA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
