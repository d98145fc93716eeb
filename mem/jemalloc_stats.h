/* jemalloc_stats.h — jemalloc as the process allocator of borad and bora: whether malloc really
 * is jemalloc's, and its statistics for the console. mallctl is looked up at run time
 * (dlsym), so libbora.a links into programs without -ljemalloc (tests), which get -ENOTSUP. */
#ifndef BORA_MEM_JEMALLOC_STATS_H
#define BORA_MEM_JEMALLOC_STATS_H

#include <stdbool.h>
#include <stddef.h>

struct jemalloc_stats {
    size_t allocated;   /* bytes the application holds */
    size_t active;      /* bytes in active pages */
    size_t resident;    /* bytes of physically resident data pages */
    size_t mapped;      /* bytes in mapped chunks */
    size_t retained;    /* bytes kept mapped but returned to the OS */
};

/* Refreshes jemalloc's stats epoch and reads them. Thread: any. Errors: -ENOTSUP (no mallctl
 * in the process), -EIO (a mallctl call failed). */
int jemalloc_stats_get(struct jemalloc_stats *out);

/* True when the process's malloc is jemalloc's (malloc and mallctl live in one object).
 * *lib (may be NULL) gets the file that defines malloc. Thread: any. */
bool jemalloc_is_allocator(const char **lib);

/* One line: "allocator jemalloc 5.3.0 (libjemalloc.so.2): allocated 1.2 MiB, active ..., resident ...",
 * or "allocator glibc malloc (...)" when jemalloc is not the allocator. Returns snprintf's count. */
int jemalloc_stats_line(char *buf, size_t cap);

#endif
