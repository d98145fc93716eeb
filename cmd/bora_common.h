/* bora_common.h — option parsing and model/engine setup shared by bora's subcommands. */
#ifndef BORA_CMD_COMMON_H
#define BORA_CMD_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "model/engine.h"
#include "model/model.h"
#include "model/sampler.h"

#define RUN_MAX_IDS 65536

struct run_opts {
    const char *model_dir;        /* NULL with --default until resolved */
    bool is_default;
    char default_dir[4096];
    int32_t ids[RUN_MAX_IDS];
    int n_ids;
    const char *prompt, *chat_file, *out;
    int n_tokens;
    struct sampler_params sp;
    bool ignore_eos, json;
    enum engine_backend backend;
    enum model_precision precision;
    int max_ctx;
    enum engine_kv kv;            /* --kv bf16|fp8 */
};

/* Parses argv[1..] (argv[0] is the subcommand). Prints the problem and usage to stderr and
 * returns -EINVAL on a bad option. "--default" (or MODEL_DIR "default") selects the built-in model. */
int run_opts_parse(struct run_opts *o, int argc, char **argv, const char *usage);
/* Opens the model named by o (generating the default model if asked); prints errors. */
int open_model(struct run_opts *o, struct model **m);
/* Opens an engine with room for at least `tokens` positions; prints errors. */
int open_engine(const struct run_opts *o, const struct model *m, int tokens, struct engine **e);
/* Parses "1,3,7694" into ids; -EINVAL naming the bad element. */
int parse_id_list(const char *s, int32_t *ids, int cap, int *n);
/* Runs `bora generate` with these options: prompt → engine → sampler → stdout. */
int generate_run(struct run_opts *o);

#endif
