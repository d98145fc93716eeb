/* log.h — borad's run-time messages with a level an operator can change while it runs
 * (`log level L` on the console): error, warn, info, debug. Lines go to stderr as
 * "borad: LEVEL: text"; a message above the current level costs one relaxed atomic load.
 * Thread-safe (one write per line). */
#ifndef BORA_COMMON_LOG_H
#define BORA_COMMON_LOG_H

enum bora_log_level { BORA_LOG_ERROR = 0, BORA_LOG_WARN, BORA_LOG_INFO, BORA_LOG_DEBUG };

/* Sets the level (values outside the range are clamped); default BORA_LOG_INFO. */
void bora_log_set_level(int level);
int bora_log_level(void);
/* Whether a message at `level` would be written. */
int bora_log_on(int level);
void bora_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
