/* safetensors.c — validates safetensors headers (pure, fuzzed) and maps files read-only.
 * The header is JSON: {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}. */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[BORA_DT_COUNT] = {
    [BORA_DT_F32] = { "F32", 4 },
    [BORA_DT_F16] = { "F16", 2 },
    [BORA_DT_BF16] = { "BF16", 2 },
    [BORA_DT_F8_E4M3] = { "F8_E4M3", 1 },
};

/* dtypes that may appear in a checkpoint but that bora does not compute with */
static const struct {
    const char *name;
    size_t size;
} other_dtypes[] = {
    { "F64", 8 }, { "I64", 8 }, { "U64", 8 }, { "I32", 4 }, { "U32", 4 }, { "I16", 2 },
    { "U16", 2 }, { "I8", 1 }, { "U8", 1 }, { "BOOL", 1 }, { "F8_E5M2", 1 },
};

size_t bora_dtype_size(enum bora_dtype dt)
{
    return dt < BORA_DT_COUNT ? dtype_info[dt].size : 0;
}

const char *bora_dtype_name(enum bora_dtype dt)
{
    return dt < BORA_DT_COUNT ? dtype_info[dt].name : "?";
}

/* Returns the element size, or 0 if the name is unknown; *dt = BORA_DT_COUNT for dtypes
 * that are known to the format but not computed with by bora. */
static size_t dtype_lookup(const char *s, enum bora_dtype *dt)
{
    for (int i = 0; i < BORA_DT_COUNT; i++)
        if (!strcmp(s, dtype_info[i].name)) {
            *dt = (enum bora_dtype)i;
            return dtype_info[i].size;
        }
    for (size_t i = 0; i < BORA_ARRAY_LEN(other_dtypes); i++)
        if (!strcmp(s, other_dtypes[i].name)) {
            *dt = BORA_DT_COUNT;
            return other_dtypes[i].size;
        }
    return 0;
}

static int cmp_begin(const void *a, const void *b)
{
    const struct st_tensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

static int parse_entry(const char *what, const char *name, json_t *v, uint64_t data_bytes,
                       struct st_tensor *t, struct bora_err *err)
{
    if (strlen(name) >= sizeof t->name)
        return bora_errf(err, -EINVAL, "%s: tensor name too long (%zu bytes)", what, strlen(name));
    strcpy(t->name, name);
    if (!json_is_object(v))
        return bora_errf(err, -EINVAL, "%s: tensor '%s': entry is not an object", what, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return bora_errf(err, -EINVAL, "%s: tensor '%s': missing or non-string 'dtype'", what, name);
    size_t esize = dtype_lookup(json_string_value(jd), &t->dtype);
    if (esize)
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", json_string_value(jd));
    if (!esize)
        return bora_errf(err, -EINVAL, "%s: tensor '%s': unknown dtype '%s'", what, name,
                         json_string_value(jd));
    if (!json_is_array(js) || json_array_size(js) > ST_MAX_DIMS)
        return bora_errf(err, -EINVAL, "%s: tensor '%s': 'shape' must be an array of at most %d sizes",
                         what, name, ST_MAX_DIMS);
    t->n_dims = (int)json_array_size(js);
    uint64_t n_elems = 1;
    for (int d = 0; d < t->n_dims; d++) {
        json_t *e = json_array_get(js, (size_t)d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return bora_errf(err, -EINVAL, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                             what, name, d);
        t->shape[d] = json_integer_value(e);
        if (t->shape[d] && n_elems > UINT64_MAX / (uint64_t)t->shape[d])
            return bora_errf(err, -EINVAL, "%s: tensor '%s': shape overflows", what, name);
        n_elems *= (uint64_t)t->shape[d];
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return bora_errf(err, -EINVAL, "%s: tensor '%s': 'data_offsets' must be [begin, end]", what, name);
    json_int_t b = json_integer_value(json_array_get(jo, 0)), e = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || e < b)
        return bora_errf(err, -EINVAL, "%s: tensor '%s': bad data_offsets [%lld, %lld]", what, name,
                         (long long)b, (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end > data_bytes)
        return bora_errf(err, -EINVAL,
                         "%s: tensor '%s': data [%llu, %llu) runs past the end of the data (%llu bytes; file truncated?)",
                         what, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)data_bytes);
    if (n_elems > UINT64_MAX / esize || n_elems * esize != t->end - t->begin)
        return bora_errf(err, -EINVAL, "%s: tensor '%s': shape × dtype size is %llu bytes but data_offsets span %llu",
                         what, name, (unsigned long long)(n_elems * esize),
                         (unsigned long long)(t->end - t->begin));
    t->data = NULL;
    return 0;
}

int st_parse_header(const char *buf, size_t hdr_len, uint64_t data_bytes, const char *what,
                    struct st_tensor **out, int *n_out, struct bora_err *err)
{
    *out = NULL;
    *n_out = 0;
    json_error_t jerr;
    json_t *root = json_loadb(buf, hdr_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bora_errf(err, -EINVAL, "%s: header is not valid JSON (%s at byte %d)", what, jerr.text,
                         jerr.position);
    int rc = 0;
    struct st_tensor *ts = NULL;
    if (!json_is_object(root)) {
        rc = bora_errf(err, -EINVAL, "%s: header is not a JSON object", what);
        goto err;
    }
    size_t cap = json_object_size(root);
    ts = calloc(cap ? cap : 1, sizeof *ts);
    if (!ts) {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory for %zu tensors", what, cap);
        goto err;
    }
    int n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) {
                rc = bora_errf(err, -EINVAL, "%s: __metadata__ is not an object", what);
                goto err;
            }
            continue;
        }
        rc = parse_entry(what, key, val, data_bytes, &ts[n], err);
        if (rc)
            goto err;
        n++;
    }
    /* As the safetensors format requires (and its reference library checks): the tensors tile
     * the data area exactly — in offset order each begins where the one before ended, the
     * first at 0 and the last at its end. So no two share bytes (an empty tensor between them
     * changes nothing) and no byte is unaccounted for. */
    struct st_tensor *sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) {
        rc = bora_errf(err, -ENOMEM, "%s: out of memory", what);
        goto err;
    }
    memcpy(sorted, ts, (size_t)n * sizeof *ts);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_begin);
    uint64_t expect = 0;
    const char *prev = NULL;   /* the last non-empty tensor so far */
    for (int i = 0; i < n && !rc; i++) {
        if (sorted[i].begin < expect)
            rc = bora_errf(err, -EINVAL, "%s: tensors '%s' and '%s' overlap", what, prev, sorted[i].name);
        else if (sorted[i].begin > expect && prev)
            rc = bora_errf(err, -EINVAL, "%s: data bytes [%llu, %llu) between tensors '%s' and '%s' belong to no tensor "
                           "(no header entry covers them: an entry missing from the header, or wrong data_offsets)",
                           what, (unsigned long long)expect, (unsigned long long)sorted[i].begin, prev, sorted[i].name);
        else if (sorted[i].begin > expect)
            rc = bora_errf(err, -EINVAL, "%s: data bytes [%llu, %llu) before tensor '%s' belong to no tensor "
                           "(no header entry covers them: an entry missing from the header, or wrong data_offsets)",
                           what, (unsigned long long)expect, (unsigned long long)sorted[i].begin, sorted[i].name);
        if (sorted[i].end > sorted[i].begin) {
            expect = sorted[i].end;
            prev = sorted[i].name;
        }
    }
    if (!rc && expect != data_bytes)
        rc = bora_errf(err, -EINVAL, "%s: the last %llu data bytes belong to no tensor (the data area is %llu bytes, "
                       "the last tensor, '%s', ends at %llu: an entry missing from the header, or bytes appended)",
                       what, (unsigned long long)(data_bytes - expect), (unsigned long long)data_bytes,
                       prev ? prev : "(none)", (unsigned long long)expect);
    free(sorted);
    if (rc)
        goto err;
    json_decref(root);
    *out = ts;
    *n_out = n;
    return 0;
err:
    free(ts);
    json_decref(root);
    return rc;
}

/* Small tensors (norms, FP8 scales) lie scattered between the matrices and are read at open:
 * on a cold page cache each would be one synchronous disk round trip (hundreds for a 7B FP8
 * checkpoint: over a second on a network disk). Asking for all of them at once lets the disk
 * serve them in parallel. Advisory: failures are ignored. */
#define ST_SMALL_TENSOR_BYTES (1u << 20)

static void st_prefetch_small(const struct st_file *f)
{
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < f->n_tensors; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if (t->end - t->begin > ST_SMALL_TENSOR_BYTES || t->end == t->begin)
            continue;
        uintptr_t a = (uintptr_t)t->data & ~(page - 1);
        uintptr_t b = (uintptr_t)t->data + (t->end - t->begin);
        (void)madvise((void *)a, b - a, MADV_WILLNEED);
    }
}

/* ---- the SIGBUS guard (see safetensors.h) ----
 * One slot per open mapping. A slot is free while lo == 0 and hi == 0; st_open claims it by a
 * compare-exchange of lo from 0 to UINTPTR_MAX (matches no address), then publishes hi and lo;
 * st_close retires it in the reverse order. The handler reads lo, hi, then lo again (acquire),
 * and acts only on a slot whose two lo reads agree and are neither 0 nor UINTPTR_MAX, with
 * lo <= a < hi: a slot half claimed, half retired or reclaimed between the reads matches nothing
 * (a stale lo with a new hi would otherwise span from address 0). */
static struct st_guard_slot {
    _Atomic uintptr_t lo, hi;   /* the mapping [lo, hi); partner: the handler's loads */
    atomic_bool hit;            /* a read found the file cut short; partner: st_damaged */
} st_guard[ST_GUARD_SLOTS];
static struct sigaction st_guard_prev;   /* the SIGBUS action ours replaced; written under st_guard_mu
                                          * before ours is installed */
static uintptr_t st_guard_page;          /* page size, set before the first install */
static pthread_mutex_t st_guard_mu = PTHREAD_MUTEX_INITIALIZER;

static void st_guard_handler(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    uintptr_t a = (uintptr_t)si->si_addr;
    if (si->si_code == BUS_ADRERR) {
        for (int i = 0; i < ST_GUARD_SLOTS; i++) {
            const uintptr_t lo = atomic_load_explicit(&st_guard[i].lo, memory_order_acquire);
            const uintptr_t hi = atomic_load_explicit(&st_guard[i].hi, memory_order_acquire);
            if (lo == 0 || lo == UINTPTR_MAX || lo != atomic_load_explicit(&st_guard[i].lo, memory_order_acquire) ||
                a < lo || a >= hi)
                continue;
            /* zeros from the faulting page to the mapping's end: one fault per damaged file,
             * not one per page; the reader goes on and its caller checks st_damaged */
            uintptr_t pg = a & ~(st_guard_page - 1);
            if (mmap((void *)pg, hi - pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
                break;
            atomic_store_explicit(&st_guard[i].hit, true, memory_order_release);
            errno = saved;
            return;
        }
    }
    /* not a guarded mapping: what would have happened without the guard. SIG_DFL and SIG_IGN
     * share the storage of both handler fields, so they are tested first, whatever the flags. */
    void (*const h)(int) = st_guard_prev.sa_handler;
    if (h != SIG_DFL && h != SIG_IGN) {
        if (st_guard_prev.sa_flags & SA_SIGINFO)   /* it may leave by siglongjmp, as DPDK's does */
            st_guard_prev.sa_sigaction(sig, si, uc);
        else
            h(sig);
    } else {
        /* the default action (an ignored SIGBUS cannot be ignored after a fault either): a fault
         * runs its access again and ends the process; a SIGBUS sent by kill() or raise() has no
         * access to run again, so it is raised anew and delivered once this handler returns */
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        sigemptyset(&dfl.sa_mask);
        sigaction(SIGBUS, &dfl, NULL);
        if (si->si_code <= 0)
            raise(SIGBUS);
    }
    errno = saved;
}

/* Installs the handler unless it is the one installed now (a library that installed its own
 * since, e.g. a test harness, gets chained behind ours). Returns whether it is installed. A
 * library whose handler in turn passes foreign faults back to ours would make the two call each
 * other; none that bora links does (DPDK's leaves by siglongjmp and restores the one before it). */
static bool st_guard_arm(void)
{
    pthread_mutex_lock(&st_guard_mu);
    struct sigaction cur;
    bool on = sigaction(SIGBUS, NULL, &cur) == 0;
    if (on && !((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == st_guard_handler)) {
        st_guard_page = (uintptr_t)sysconf(_SC_PAGESIZE);
        st_guard_prev = cur;
        struct sigaction sa = { .sa_sigaction = st_guard_handler, .sa_flags = SA_SIGINFO };
        sigemptyset(&sa.sa_mask);
        on = sigaction(SIGBUS, &sa, NULL) == 0;
    }
    pthread_mutex_unlock(&st_guard_mu);
    return on;
}

/* Registers f's mapping (f->guard = slot + 1); 0, or -EMFILE when every slot is taken. Without the handler (sigaction
 * refused) the file is opened unguarded, as before the guard existed. */
static int st_guard_add(struct st_file *f)
{
    f->guard = 0;
    if (!st_guard_arm())
        return 0;
    for (int i = 0; i < ST_GUARD_SLOTS; i++) {
        uintptr_t zero = 0;
        if (atomic_load_explicit(&st_guard[i].hi, memory_order_relaxed) != 0 ||
            !atomic_compare_exchange_strong_explicit(&st_guard[i].lo, &zero, UINTPTR_MAX, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        atomic_store_explicit(&st_guard[i].hit, false, memory_order_relaxed);
        atomic_store_explicit(&st_guard[i].hi, (uintptr_t)f->map + f->map_bytes, memory_order_release);
        atomic_store_explicit(&st_guard[i].lo, (uintptr_t)f->map, memory_order_release);
        f->guard = i + 1;
        return 0;
    }
    return -EMFILE;
}

static void st_guard_remove(struct st_file *f)
{
    if (f->guard <= 0)
        return;
    struct st_guard_slot *g = &st_guard[f->guard - 1];
    atomic_store_explicit(&g->lo, UINTPTR_MAX, memory_order_release);
    atomic_store_explicit(&g->hi, 0, memory_order_release);
    atomic_store_explicit(&g->lo, 0, memory_order_release);
    f->guard = 0;
}

bool st_damaged(const struct st_file *f)
{
    return f->guard > 0 && atomic_load_explicit(&st_guard[f->guard - 1].hit, memory_order_acquire);
}

int st_open(struct st_file *f, const char *path, struct bora_err *err)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    snprintf(f->path, sizeof f->path, "%s", path);
    int rc;
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO in its place cannot hang */
    if (f->fd < 0)
        return bora_errf(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) < 0) {
        rc = bora_errf(err, -errno, "%s: cannot stat: %s", path, strerror(errno));
        goto err;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = bora_errf(err, -EINVAL, "%s: not a regular file", path);
        goto err;
    }
    if (fcntl(f->fd, F_SETFL, fcntl(f->fd, F_GETFL) & ~O_NONBLOCK) < 0) {   /* a regular file: blocking again */
        rc = bora_errf(err, -errno, "%s: fcntl: %s", path, strerror(errno));
        goto err;
    }
    if (st.st_size < 8) {
        rc = bora_errf(err, -EINVAL, "%s: truncated: %lld bytes, a safetensors file has at least 8",
                       path, (long long)st.st_size);
        goto err;
    }
    f->map_bytes = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_bytes, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        rc = bora_errf(err, -errno, "%s: mmap failed: %s", path, strerror(errno));
        goto err;
    }
    if ((rc = st_guard_add(f))) {
        rc = bora_errf(err, rc, "%s: more than %d checkpoint files open at once", path, ST_GUARD_SLOTS);
        goto err;
    }
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);   /* little-endian host assumed (x86-64, aarch64) */
    if (hlen > ST_HEADER_MAX_BYTES || hlen > f->map_bytes - 8) {
        rc = bora_errf(err, -EINVAL, "%s: header length %llu does not fit the file (%zu bytes)%s", path,
                       (unsigned long long)hlen, f->map_bytes,
                       hlen > ST_HEADER_MAX_BYTES ? " or exceeds the 100 MB limit" : "; truncated?");
        goto err;
    }
    f->data_offset = 8 + hlen;
    rc = st_parse_header((const char *)f->map + 8, hlen, f->map_bytes - f->data_offset, path,
                         &f->tensors, &f->n_tensors, err);
    if (rc)
        goto err;
    for (int i = 0; i < f->n_tensors; i++)
        f->tensors[i].data = (const char *)f->map + f->data_offset + f->tensors[i].begin;
    st_prefetch_small(f);
    return 0;
err:
    st_close(f);
    return rc;
}

void st_close(struct st_file *f)
{
    st_guard_remove(f);
    if (f->map)
        munmap(f->map, f->map_bytes);
    if (f->fd >= 0)
        close(f->fd);
    free(f->tensors);
    f->map = NULL;
    f->fd = -1;
    f->tensors = NULL;
    f->n_tensors = 0;
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}
