/* safetensors.h — reader for the safetensors format (8-byte LE header length, JSON header,
 * raw little-endian data): header parsing is a pure function (fuzzed); files are mmap'd read-only. */
#ifndef BORA_MODEL_SAFETENSORS_H
#define BORA_MODEL_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Largest JSON header accepted (the format's own reference implementation uses 100 MB). */
#define ST_HEADER_MAX_BYTES (100u << 20)
#define ST_MAX_DIMS 8

enum bora_dtype {
    BORA_DT_F32 = 0,
    BORA_DT_F16,
    BORA_DT_BF16,
    BORA_DT_F8_E4M3,
    BORA_DT_COUNT
};

/* Bytes per element of a dtype. */
size_t bora_dtype_size(enum bora_dtype dt);
/* Name as written in safetensors headers ("BF16", "F8_E4M3", ...). */
const char *bora_dtype_name(enum bora_dtype dt);

struct st_tensor {
    char name[160];
    enum bora_dtype dtype;
    char dtype_name[12];      /* as the header spells it (BORA_DT_COUNT: a dtype bora does not compute with) */
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;      /* byte offsets into the data section */
    const void *data;         /* points into the mapping once the file is open; NULL for a parsed header */
};

struct st_file {
    char path[4096];
    int fd;
    void *map;                /* whole file, PROT_READ, MAP_PRIVATE */
    size_t map_bytes;
    size_t data_offset;       /* 8 + header length */
    struct st_tensor *tensors;
    int n_tensors;
    int guard;                /* 1 + the mapping's slot in the SIGBUS guard (see st_damaged); 0: none */
};

/* Parses and validates a header: `buf` holds the JSON header (hdr_len bytes), `data_bytes`
 * is the size of the data section that follows it. Validates dtypes, shapes, that
 * shape × dtype size equals the byte range, that every range lies inside the data
 * section and that ranges do not overlap. On success *out (with *n_out entries) is a malloc'd array the caller frees.
 * Pure (no I/O); `what` names the source in messages. Errors: -EINVAL (malformed, with
 * message), -ENOMEM. */
int st_parse_header(const char *buf, size_t hdr_len, uint64_t data_bytes, const char *what,
                    struct st_tensor **out, int *n_out, struct bora_err *err);

/* Opens and maps `path`, parses its header. Errors: -errno from open/mmap (message names
 * the file), -EINVAL for a malformed or truncated file. Caller owns f, frees with st_close. */
int st_open(struct st_file *f, const char *path, struct bora_err *err);
void st_close(struct st_file *f);

/* A file cut short while mapped (truncated, or rewritten in place: `cp` over it truncates first)
 * makes the first read of a page past its new end raise SIGBUS, which would end the process
 * and every request it holds. st_open therefore installs a SIGBUS handler (again if another
 * handler replaced it since; that one is then called for the faults that are not ours):
 * a fault inside an open st_file's mapping gets zeros mapped from the faulting page to the
 * mapping's end, the read goes on (reading zeros), and the file is marked damaged. Readers
 * check st_damaged after they read (model_damaged, engine forwards) and fail instead of using
 * the zeros. A SIGBUS anywhere else goes to the handler installed before (default: the
 * process ends, as without the guard). Not caught: a cut inside the file's last page (the
 * kernel reads the bytes past the end as zeros without a fault), and a rewrite in place that no
 * read meets while the file is short (its new bytes show through the mapping). A page the disk
 * cannot read (an I/O error) faults the same way and is reported the same way. At most
 * ST_GUARD_SLOTS files are guarded at once; st_open fails with -EMFILE past that. */
#define ST_GUARD_SLOTS 1024

/* True once a read of f's mapping found the file cut short (see above). Thread: any; one
 * atomic load, no system call (safe on the decode path). */
bool st_damaged(const struct st_file *f);

/* Finds a tensor by name; NULL if absent. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);

#endif
