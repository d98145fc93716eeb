/* log.h — run-time messages with a level an operator can change while borad runs
 * (`log level L` on the console): error, warn, info, debug. Lines go to stderr as
 * "PROGRAM: LEVEL: text" (PROGRAM "bora" unless the program set its name: borad does); a message
 * above the current level costs one relaxed atomic load. Thread-safe (one write per line). */
#ifndef BORA_COMMON_LOG_H
#define BORA_COMMON_LOG_H

enum bora_log_level { BORA_LOG_ERROR = 0, BORA_LOG_WARN, BORA_LOG_INFO, BORA_LOG_DEBUG };

/* Sets the level (values outside the range are clamped); default BORA_LOG_INFO. */
void bora_log_set_level(int level);
int bora_log_level(void);
/* Whether a message at `level` would be written. */
int bora_log_on(int level);
/* The program name lines start with (at most 31 bytes kept; NULL or "" leaves it). Call it before
 * any thread logs. */
void bora_log_set_name(const char *name);
void bora_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
