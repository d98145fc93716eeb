/* bora.c — the `bora` tool: run a prompt, dump logits, tokenize, plan VRAM, benchmark, and
 * act as a protocol client. This file only dispatches to the subcommands in cmd/bora_*.c. */
#include <stdio.h>
#include <string.h>

#include "cmd/cli.h"

struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
};

static const struct subcommand subcommands[] = {
    /* one line per subcommand; keep sorted by topic */
    /* @@SUBCOMMANDS@@ */
    { "bench", cmd_bench, "bench decode|gemv --preset NAME [--precision fp8|bf16] [--kv bf16|fp8] [--ctx N] [--tokens N] [--layers N] [--json]\n"
                          "  bench ttft --preset NAME [--precision fp8|bf16] [--kv bf16|fp8] [--prompt N,N,...] [--cached N] [--runs N] [--chunk N] [--profile] [--json]" },
    { "plan", cmd_plan, "plan (MODEL_DIR | --preset NAME) [--precision fp8|bf16] [--ctx N] [--kv bf16|fp8] [--gpu h200|h100|l40s|rtx4090|local]" },
    { "passwd", cmd_passwd, "passwd [--stdin]                    make the operator password hash for [console] password_hash" },
    { "client", cmd_client, "client (--udp|--tcp) HOST:PORT (--prompt TEXT | --chat FILE | --ids LIST) [-n N] [--temperature T] [--top-k K]\n"
                            "         [--top-p P] [--seed S] [--ignore-eos] [--deadline-ms MS] [--key HEX] [--timeout-ms MS] [--json]" },
    { "coldstart", cmd_bench_coldstart, "coldstart --preset tiny|small|mistral-7b --dir DIR [--precision fp8|bf16] [--prompt N] [--backend B]\n"
                                        "         [--qd N] [--buf BYTES] [--no-drop] [--no-warm] [--json]    |    coldstart --alloc" },
    { "info", cmd_info, "info MODEL_DIR|default              architecture, shapes, dtypes, parameters, bytes" },
    { "logits", cmd_logits, "logits MODEL_DIR --ids LIST --out FILE [--backend B] [--precision P] [--kv bf16|fp8]" },
    { "generate", cmd_generate, "generate MODEL_DIR|default (--ids LIST | --prompt TEXT | --chat FILE) [-n N] [--temperature T] [--top-k K]\n"
                                "         [--top-p P] [--seed S] [--ignore-eos] [--backend B] [--precision P] [--kv bf16|fp8] [--ctx N] [--json]" },
    { "synth", cmd_synth, "synth DIR [--arch mistral|ministral3] [--layers N] [--dim N] [--hidden N] [--heads N] [--kv-heads N]\n"
                          "         [--head-dim N] [--vocab N] [--max-pos N] [--seed N] [--tokenizer FILE]   a small random-weight checkpoint" },
    { "run-default", cmd_run_default, "run-default                         generate from the built-in default model" },
    { "tokenize", cmd_tokenize, "tokenize MODEL_DIR|TOKENIZER_FILE (--text TEXT | --file F) [--bos]" },
    { "detokenize", cmd_detokenize, "detokenize MODEL_DIR|TOKENIZER_FILE ID..." },
    { "chat-encode", cmd_chat_encode, "chat-encode MODEL_DIR|TOKENIZER_FILE REQUEST.json" },
    { NULL, NULL, NULL },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: bora COMMAND [ARGS]\n\ncommands:\n");
    for (const struct subcommand *s = subcommands; s->name; s++)
        fprintf(f, "  %s\n", s->usage);
}

static const struct subcommand *find(const char *name)
{
    for (const struct subcommand *s = subcommands; s->name; s++)
        if (!strcmp(name, s->name))
            return s;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "help") && find(argv[2])) {   /* bora help CMD */
        printf("usage: bora %s\n", find(argv[2])->usage);
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const struct subcommand *s = find(argv[1]);
    if (s) {
        /* -h / --help anywhere: the command's usage on stdout, exit 0, before it parses anything */
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
                printf("usage: bora %s\n", s->usage);
                return 0;
            }
        return s->fn(argc - 1, argv + 1);
    }
    fprintf(stderr, "bora: unknown command '%s' (try 'bora help')\n", argv[1]);
    return 2;
}
