/* test_tpool.c — the fork-join pool covers every index exactly once, for ranges smaller and
 * larger than the pool, across many back-to-back jobs (the engine issues thousands a second). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/tpool.h"

struct job {
    atomic_int *hits;
    int n_threads;
    atomic_int bad_tid;
};

static void mark(void *ctx, int64_t b, int64_t e, int tid)
{
    struct job *j = ctx;
    if (tid < 0 || tid >= j->n_threads)
        atomic_store(&j->bad_tid, 1);
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&j->hits[i], 1);
}

static void test_covers_each_index_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 5; threads++) {
        struct tpool *p;
        assert_int_equal(tpool_create(&p, threads), 0);
        assert_int_equal(tpool_threads(p), threads);
        static atomic_int hits[1000];
        struct job j = { hits, threads, 0 };
        for (int round = 0; round < 2000; round++) {
            int n = 1 + round % 997;
            memset(hits, 0, sizeof hits);
            tpool_run(p, n, mark, &j);
            for (int i = 0; i < n; i++)
                if (atomic_load(&hits[i]) != 1)
                    fail_msg("threads %d, n %d: index %d hit %d times", threads, n, i, atomic_load(&hits[i]));
            for (int i = n; i < 1000; i++)
                assert_int_equal(atomic_load(&hits[i]), 0);
        }
        assert_int_equal(atomic_load(&j.bad_tid), 0);
        tpool_run(p, 0, mark, &j);   /* empty range: no call */
        tpool_destroy(p);
    }
}

static void test_bad_sizes(void **state)
{
    (void)state;
    struct tpool *p;
    assert_int_equal(tpool_create(&p, 0), -EINVAL);
    assert_int_equal(tpool_create(&p, TPOOL_MAX_THREADS + 1), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_covers_each_index_once),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
