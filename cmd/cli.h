/* cli.h — the subcommands of the `bora` executable; each lives in cmd/bora_*.c and returns
 * the process exit status (0 ok, 1 failure, 2 usage). Messages go to stderr. */
#ifndef BORA_CMD_CLI_H
#define BORA_CMD_CLI_H

int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_run_default(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_encode(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_passwd(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench_coldstart(int argc, char **argv);   /* cmd/bora_coldstart.c; `bora bench coldstart` */

#endif
