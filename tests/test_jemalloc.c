/* test_jemalloc.c — the jemalloc accessors: without jemalloc in the process (test binaries do
 * not link it) they report -ENOTSUP and "not jemalloc"; the same binary re-run with
 * LD_PRELOAD=libjemalloc.so.2 sees malloc resolve into jemalloc, and an 8 MiB malloc shows in
 * its counters. tests/e2e_jemalloc.sh checks the real executables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mem/jemalloc_stats.h"

/* Runs in the LD_PRELOAD'ed child: 0 when everything holds, else the number of the failed check. */
static int preloaded_checks(void)
{
    struct jemalloc_stats s;
    char line[512];
    if (!jemalloc_is_allocator(NULL))
        return 10;
    if (jemalloc_stats_get(&s))
        return 11;
    size_t before = s.allocated;
    volatile char *p = malloc(8u << 20);
    if (!p)
        return 12;
    p[0] = 1;
    if (jemalloc_stats_get(&s) || s.allocated < before + (8u << 20))
        return 13;
    jemalloc_stats_line(line, sizeof line);
    if (!strstr(line, "allocator: jemalloc") || !strstr(line, "resident"))
        return 14;
    free((void *)p);
    return 0;
}

static void test_absent(void **state)
{
    (void)state;
    if (dlsym(RTLD_DEFAULT, "mallctl"))
        skip();   /* loud: this test binary was linked with jemalloc */
    struct jemalloc_stats s;
    char line[512];
    assert_int_equal(jemalloc_stats_get(&s), -ENOTSUP);
    assert_false(jemalloc_is_allocator(NULL));
    jemalloc_stats_line(line, sizeof line);
    assert_non_null(strstr(line, "not jemalloc"));
}

static void test_preloaded(void **state)
{
    (void)state;
    if (access("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", R_OK) && access("/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", R_OK) &&
        !getenv("LD_LIBRARY_PATH"))
        skip();   /* loud: no libjemalloc.so.2 to preload */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("LD_PRELOAD", "libjemalloc.so.2", 1);
        execl("/proc/self/exe", "test_jemalloc", "--preloaded", (char *)NULL);
        _exit(99);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--preloaded"))
        return preloaded_checks();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_preloaded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
