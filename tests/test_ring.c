/* test_ring.c — the MP/SC and SP/SC rings and the object pool: FIFO order, capacity, wrap-around,
 * bursts that stop at full/empty, and 4 producer threads against one consumer (every item
 * arrives once, each producer's items in order). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/pool.h"
#include "dataplane/ring.h"

static void test_ring_init_errors(void **s)
{
    (void)s;
    struct ring r;
    struct bora_err e;
    assert_int_equal(ring_init(&r, 0, 8, 0, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "count"));
    assert_int_equal(ring_init(&r, 8, 6, 0, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "element size"));
    assert_int_equal(ring_init(&r, 5, 8, 0, &e), 0);
    assert_int_equal(ring_capacity(&r), 8);
    ring_fini(&r);
}

static void test_ring_fifo_wrap(void **s)
{
    (void)s;
    struct ring r;
    assert_int_equal(ring_init(&r, 8, 12, RING_SP_ENQ, NULL), 0);
    uint32_t in[30][3], out[30][3];
    for (uint32_t i = 0; i < 30; i++) { in[i][0] = i; in[i][1] = i * 3; in[i][2] = ~i; }
    uint32_t next_in = 0, next_out = 0;
    for (int round = 0; round < 20; round++) {     /* uneven bursts force every wrap position */
        unsigned want = (unsigned)(round % 5) + 1;
        if (next_in + want > 30) want = 30 - next_in;
        next_in += ring_enqueue_burst(&r, in[next_in], want);
        unsigned got = ring_dequeue_burst(&r, out[next_out], (unsigned)(round % 3) + 1);
        for (unsigned k = 0; k < got; k++)
            assert_memory_equal(out[next_out + k], in[next_out + k], 12);
        next_out += got;
    }
    assert_int_equal(ring_count(&r), next_in - next_out);
    ring_fini(&r);
}

static void test_ring_full_empty(void **s)
{
    (void)s;
    struct ring r;
    assert_int_equal(ring_init(&r, 4, sizeof(void *), 0, NULL), 0);
    void *p[6] = { (void *)1, (void *)2, (void *)3, (void *)4, (void *)5, (void *)6 }, *q[6];
    assert_int_equal(ring_dequeue_burst(&r, q, 6), 0);
    assert_int_equal(ring_enqueue_burst(&r, p, 6), 4);     /* stops at full */
    assert_int_equal(ring_enqueue_burst(&r, p + 4, 1), 0);
    assert_int_equal(ring_count(&r), 4);
    assert_int_equal(ring_dequeue_burst(&r, q, 6), 4);
    for (int i = 0; i < 4; i++) assert_ptr_equal(q[i], p[i]);
    ring_fini(&r);
}

#define N_PROD 3
#define PER_PROD 50000
struct prod_arg { struct ring *r; uint32_t id; };

static void *producer(void *a)
{
    struct prod_arg *pa = a;
    uint64_t batch[8];
    for (uint32_t i = 0; i < PER_PROD;) {
        unsigned n = 1 + i % 8;
        if (i + n > PER_PROD) n = PER_PROD - i;
        for (unsigned k = 0; k < n; k++) batch[k] = (uint64_t)pa->id << 32 | (i + k);
        unsigned done = 0;
        while (done < n) done += ring_enqueue_burst(pa->r, batch + done, n - done);
        i += n;
    }
    return NULL;
}

static void test_ring_mpsc_threads(void **s)
{
    (void)s;
    struct ring r;
    assert_int_equal(ring_init(&r, 256, 8, 0, NULL), 0);
    pthread_t t[N_PROD];
    struct prod_arg args[N_PROD];
    for (uint32_t i = 0; i < N_PROD; i++) {
        args[i] = (struct prod_arg){ &r, i };
        assert_int_equal(pthread_create(&t[i], NULL, producer, &args[i]), 0);
    }
    uint32_t next[N_PROD] = { 0 };
    uint64_t total = 0, buf[32];
    while (total < (uint64_t)N_PROD * PER_PROD) {
        unsigned n = ring_dequeue_burst(&r, buf, 32);
        for (unsigned k = 0; k < n; k++) {
            uint32_t id = (uint32_t)(buf[k] >> 32), seq = (uint32_t)buf[k];
            assert_true(id < N_PROD);
            assert_int_equal(seq, next[id]);
            next[id]++;
        }
        total += n;
    }
    for (int i = 0; i < N_PROD; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(next[i], PER_PROD);
    }
    assert_int_equal(ring_count(&r), 0);
    ring_fini(&r);
}

static void test_pool(void **s)
{
    (void)s;
    struct pool p;
    struct bora_err e;
    assert_int_equal(pool_init(&p, 0, 10, &e), -EINVAL);
    assert_int_equal(pool_init(&p, 3, 100, &e), 0);
    assert_int_equal(p.obj_size, 128);
    void *a = pool_get(&p), *b = pool_get(&p), *c = pool_get(&p);
    assert_non_null(a); assert_non_null(b); assert_non_null(c);
    assert_null(pool_get(&p));                   /* exhausted: NULL, never malloc */
    assert_int_equal(pool_in_use(&p), 3);
    assert_true(a != b && b != c && a != c);
    assert_int_equal(((uintptr_t)a) % 64, 0);
    assert_ptr_equal(pool_at(&p, pool_index(&p, b)), b);
    pool_put(&p, b);
    assert_ptr_equal(pool_get(&p), b);
    pool_put(&p, a); pool_put(&p, b); pool_put(&p, c);
    assert_int_equal(pool_in_use(&p), 0);
    pool_fini(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_init_errors),
        cmocka_unit_test(test_ring_fifo_wrap),
        cmocka_unit_test(test_ring_full_empty),
        cmocka_unit_test(test_ring_mpsc_threads),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
