/* bench_wstream.c — read bandwidth of one file three ways: plain read() of 4 MiB blocks, the
 * io_uring streamer with O_DIRECT (queue depth, read size as given), and the streamer through
 * the page cache; each after dropping the file's cached pages (posix_fadvise DONTNEED).
 * Budget: the O_DIRECT streamer ≥ the plain read() figure on the same file.
 * usage: bench_wstream [FILE] [--qd N] [--buf BYTES]   (no FILE: a 256 MiB file under build/tmp) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mem/wstream.h"

#define BW_PLAIN_BLOCK (4u << 20)
#define BW_DEFAULT_FILE_BYTES (256u << 20)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void uncache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

static double plain_read(const char *path, uint64_t *bytes)
{
    int fd = open(path, O_RDONLY);
    char *b = malloc(BW_PLAIN_BLOCK);
    if (fd < 0 || !b) {
        fprintf(stderr, "bench_wstream: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    double t0 = now_s();
    ssize_t n;
    *bytes = 0;
    while ((n = read(fd, b, BW_PLAIN_BLOCK)) > 0)
        *bytes += (uint64_t)n;
    double dt = now_s() - t0;
    close(fd);
    free(b);
    return dt;
}

static int count_chunk(void *ctx, const struct wstream_chunk *c, struct bora_err *err)
{
    (void)err;
    *(uint64_t *)ctx += c->len;
    return 0;
}

static double streamed(const char *path, uint64_t size, int qd, size_t buf, bool direct, struct wstream_stats *st)
{
    const char *files[] = { path };
    struct wstream_item it = { .file = 0, .offset = 0, .len = size, .group = 0 };
    struct wstream_plan plan = { files, 1, &it, 1, 1 };
    struct wstream_opts o = { .qd = qd, .buf_bytes = buf, .direct = direct ? WSTREAM_DIRECT_AUTO : WSTREAM_DIRECT_OFF };
    uint64_t got = 0;
    struct wstream_sink sink = { .ctx = &got, .on_chunk = count_chunk };
    struct wstream *ws;
    struct bora_err err;
    if (wstream_open(&ws, &plan, &o, &err) || wstream_run(ws, &sink, &err)) {
        fprintf(stderr, "bench_wstream: %s\n", err.msg);
        exit(1);
    }
    wstream_stats_get(ws, st);
    wstream_close(ws);
    return st->seconds;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int qd = WSTREAM_QD_DEFAULT;
    size_t buf = WSTREAM_BUF_BYTES_DEFAULT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--qd") && i + 1 < argc)
            qd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--buf") && i + 1 < argc)
            buf = (size_t)atoll(argv[++i]);
        else if (argv[i][0] != '-')
            path = argv[i];
        else {
            fprintf(stderr, "usage: bench_wstream [FILE] [--qd N] [--buf BYTES]\n");
            return 2;
        }
    }
    char tmp[256] = "";
    if (!path) {
        mkdir("build", 0755);
        mkdir("build/tmp", 0755);
        snprintf(tmp, sizeof tmp, "build/tmp/bench_wstream-%d.bin", (int)getpid());
        FILE *f = fopen(tmp, "wb");
        char *b = calloc(1, BW_PLAIN_BLOCK);
        for (unsigned i = 0; f && b && i < BW_DEFAULT_FILE_BYTES / BW_PLAIN_BLOCK; i++) {
            memset(b, (int)i, BW_PLAIN_BLOCK);
            fwrite(b, 1, BW_PLAIN_BLOCK, f);
        }
        if (!f || !b || fclose(f)) {
            fprintf(stderr, "bench_wstream: cannot write %s\n", tmp);
            return 1;
        }
        free(b);
        path = tmp;
    }
    struct stat sb;
    if (stat(path, &sb) < 0) {
        fprintf(stderr, "bench_wstream: %s: %s\n", path, strerror(errno));
        return 1;
    }
    uint64_t size = (uint64_t)sb.st_size, n;
    struct wstream_stats st;
    uncache(path);
    double tp = plain_read(path, &n);
    printf("%-44s %8.2f GB/s  (%.3f GB in %.3f s)\n", "plain read(), 4 MiB blocks, cold", n / tp / 1e9, n / 1e9, tp);
    uncache(path);
    double td = streamed(path, size, qd, buf, true, &st);
    char what[96];
    snprintf(what, sizeof what, "io_uring %s qd %d, %zu KiB%s, cold", st.direct_files ? "O_DIRECT" : "buffered(!)", qd,
             buf >> 10, st.registered ? " fixed" : "");
    printf("%-44s %8.2f GB/s  (%llu reads, %llu short, %llu retries)\n", what, size / td / 1e9,
           (unsigned long long)st.reads, (unsigned long long)st.short_reads, (unsigned long long)st.retries);
    uncache(path);
    double tb = streamed(path, size, qd, buf, false, &st);
    printf("%-44s %8.2f GB/s\n", "io_uring buffered, cold", size / tb / 1e9);
    double tw = streamed(path, size, qd, buf, false, &st);
    printf("%-44s %8.2f GB/s\n", "io_uring buffered, warm (page cache)", size / tw / 1e9);
    printf("budget: O_DIRECT streamer ≥ plain read(): %.2f vs %.2f GB/s: %s\n", size / td / 1e9, n / tp / 1e9,
           size / td >= n / tp ? "met" : "NOT met");
    if (tmp[0])
        unlink(tmp);
    return 0;
}
