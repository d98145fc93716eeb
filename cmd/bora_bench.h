/* bora_bench.h — what the bench subcommands share: the synthetic model of a preset (shapes and
 * dtypes only; the CUDA engine fills the weights on the GPU) and the ttft subcommand. */
#ifndef BORA_CMD_BORA_BENCH_H
#define BORA_CMD_BORA_BENCH_H

#include "model/model.h"

/* Fills m with preset's shapes (only its first `layers` layers when 0 < layers < all), linear
 * weights in p's dtype, no data. -ENOMEM. Free with bench_synthetic_free. */
int bench_synthetic_model(struct model *m, const char *preset, enum model_precision p, int layers);
void bench_synthetic_free(struct model *m);

/* `bora bench ttft ...` (argv[1] == "ttft"); returns the exit status. */
int cmd_bench_ttft(int argc, char **argv);

#endif
