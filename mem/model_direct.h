/* model_direct.h — plans for loading a model's matrices straight from its shards into their
 * final (device) places: one destination per tensor (row r at dst + r × pitch), turned into
 * one or more wstream plans that cover contiguous file ranges of about equal size, so that
 * several readers (threads) can each stream one part. Pure: no I/O besides mincore. */
#ifndef BORA_MEM_MODEL_DIRECT_H
#define BORA_MEM_MODEL_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "mem/wstream.h"
#include "model/model.h"

#define MODEL_DIRECT_PARTS_MAX 32

/* Where one tensor's bytes go (as stored in the checkpoint, no conversion). */
struct model_direct_dst {
    const struct wtensor *w;   /* its data must point into one of the model's mapped shards */
    void *dst;                 /* row r at dst + r × pitch */
    uint64_t row_bytes;        /* bytes of one stored row (cols × dtype size) */
    uint64_t pitch;            /* ≥ row_bytes; = row_bytes: contiguous */
    int group;                 /* caller's grouping (0 embeddings, 1 + l layers, …); kept as is */
};

struct model_direct_plan;

/* Builds n_parts (1..MODEL_DIRECT_PARTS_MAX, fewer when there are fewer tensors) plans over
 * d[0..n), in file order, each a run of whole tensors of about total ÷ n_parts bytes. Every
 * plan has one group (0). Errors: -EINVAL naming the tensor (data outside every shard, pitch
 * below the row, rows × row_bytes ≠ its bytes), -ENOMEM. d and m must outlive the plan. */
int model_direct_plan_build(struct model_direct_plan **out, const struct model *m, const struct model_direct_dst *d,
                            int n, int n_parts, struct bora_err *err);
int model_direct_plan_parts(const struct model_direct_plan *p);
const struct wstream_plan *model_direct_plan_part(const struct model_direct_plan *p, int i);
/* Σ bytes of the tensors. */
uint64_t model_direct_plan_bytes(const struct model_direct_plan *p);
void model_direct_plan_free(struct model_direct_plan *p);

/* True when every d[i].w's bytes lie in one of m's mapped shards (false: some tensor was
 * converted at load, e.g. BF16 → FP8, and lives in host memory: load it through the host). */
bool model_direct_all_mapped(const struct model *m, const struct model_direct_dst *d, int n);

/* Reorders d[0..n) so that the tensors lying entirely before byte `off` of shard `shard` (or in
 * an earlier shard) come first, each side keeping its order; returns how many come first.
 * For a load that read a prefix of the files into the page cache (buffered readers take the
 * first k, an O_DIRECT reader the rest). Tensors outside every shard count as after. */
int model_direct_split_before(const struct model *m, struct model_direct_dst *d, int n, int shard, uint64_t off);

/* True when ≥ 90 % of every shard's pages are in the page cache (then buffered reads from
 * memory beat O_DIRECT, which would go to the disk again). */
bool model_direct_cached(const struct model *m);

/* A wstream sink for host memory that honours row_bytes/dst_pitch (tests, CPU staging). */
extern const struct wstream_sink model_direct_sink_host;

#endif
