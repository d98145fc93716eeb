/* jemalloc_stats.c — jemalloc checks and stats through mallctl found with dlsym (see header). */
#include "mem/jemalloc_stats.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);   /* jemalloc's signature */

static mallctl_fn find_mallctl(void)
{
    mallctl_fn f;
    void *p = dlsym(RTLD_DEFAULT, "mallctl");
    memcpy(&f, &p, sizeof f);
    return f;
}

static int read_size(mallctl_fn ctl, const char *name, size_t *out)
{
    size_t n = sizeof *out;
    return ctl(name, out, &n, NULL, 0) ? -EIO : 0;
}

int jemalloc_stats_get(struct jemalloc_stats *out)
{
    mallctl_fn ctl = find_mallctl();
    if (!ctl)
        return -ENOTSUP;
    uint64_t epoch = 1;
    size_t n = sizeof epoch;
    if (ctl("epoch", &epoch, &n, &epoch, sizeof epoch))
        return -EIO;
    memset(out, 0, sizeof *out);
    if (read_size(ctl, "stats.allocated", &out->allocated) || read_size(ctl, "stats.active", &out->active) ||
        read_size(ctl, "stats.resident", &out->resident) || read_size(ctl, "stats.mapped", &out->mapped) ||
        read_size(ctl, "stats.retained", &out->retained))
        return -EIO;
    return 0;
}

bool jemalloc_is_allocator(const char **lib)
{
    void *m = dlsym(RTLD_DEFAULT, "malloc"), *c = dlsym(RTLD_DEFAULT, "mallctl");
    Dl_info dm = { 0 }, dc = { 0 };
    if (lib)
        *lib = m && dladdr(m, &dm) && dm.dli_fname ? dm.dli_fname : "?";
    if (!m || !c || !dladdr(m, &dm) || !dladdr(c, &dc))
        return false;
    return dm.dli_fbase == dc.dli_fbase;
}

int jemalloc_stats_line(char *buf, size_t cap)
{
    const char *lib;
    if (!jemalloc_is_allocator(&lib))
        return snprintf(buf, cap, "allocator: not jemalloc (malloc from %s)", lib);
    mallctl_fn ctl = find_mallctl();
    const char *ver = "?";
    size_t n = sizeof ver;
    ctl("version", &ver, &n, NULL, 0);
    struct jemalloc_stats s;
    if (jemalloc_stats_get(&s))
        return snprintf(buf, cap, "allocator: jemalloc %s (%s): stats unavailable", ver, lib);
    const double M = 1.0 / (1 << 20);
    return snprintf(buf, cap,
                    "allocator: jemalloc %s (%s): allocated %.1f MiB, active %.1f MiB, resident %.1f MiB, "
                    "mapped %.1f MiB, retained %.1f MiB",
                    ver, lib, s.allocated * M, s.active * M, s.resident * M, s.mapped * M, s.retained * M);
}
