/* config_keys.h — internal to config/: the table of every key (section, name, where it
 * lives in struct bora_config, how its text is checked and written back, whether it is live). */
#ifndef BORA_CONFIG_CONFIG_KEYS_H
#define BORA_CONFIG_CONFIG_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct config_key;

/* Parses the text v into cfg. Returns 0, or -EINVAL with what is wrong in why
 * (a phrase without the value, e.g. "must be an integer in 1..8"). */
typedef int (*config_parse_fn)(const struct config_key *k, const char *v,
                               struct bora_config *cfg, char *why, size_t why_n);
/* Writes the text form into out; returns its length or -ENOSPC. */
typedef int (*config_format_fn)(const struct config_key *k, const struct bora_config *cfg,
                                char *out, size_t n);

struct config_key {
    const char *section;          /* "limits" */
    const char *name;             /* "max_tokens" */
    const char *full;             /* "limits.max_tokens" */
    config_parse_fn parse;
    config_format_fn format;
    size_t off;                   /* of the field in struct bora_config */
    size_t size;                  /* of the field (strings: buffer bytes) */
    uint32_t min, max;            /* integers: inclusive range */
    const char *const *names;     /* enums: names by value, NULL-terminated */
    bool live;                    /* a running borad applies it at once */
    bool secret;                  /* hidden by config_dump without CONFIG_DUMP_SECRETS */
    const char *help;             /* one line for config_dump */
};

#define CONFIG_KEYS_MAX 64   /* bound on the table, for per-key arrays */

extern const struct config_key config_keys[];
extern const size_t config_n_keys;
extern const char *const config_sections[]; /* NULL-terminated, in file order */

/* Looks a key up by section and name, or by "section.key"; NULL if unknown. */
const struct config_key *config_key_find(const char *section, const char *name);
const struct config_key *config_key_find_full(const char *full);

#endif
