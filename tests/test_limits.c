/* test_limits.c — allow-list matching (IPv4, IPv6, mapped, partial-byte prefixes), the per-client
 * token bucket with a controlled clock, and the flow table's RESEND retention rules
 * (last 256 frames, 5 s after DONE, log overwrite, eviction of the oldest finished request). */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dataplane/limits.h"
#include "dataplane/server_int.h"

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(9) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static struct sockaddr_in6 v6(const char *ip)
{
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(9) };
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    return a;
}

static struct dp_cidr cidr(int family, const char *ip, uint32_t prefix)
{
    struct dp_cidr c = { .family = family, .prefix = prefix };
    inet_pton(family, ip, c.addr);
    return c;
}

static void test_allow(void **s)
{
    (void)s;
    struct dp_cidr list[3] = { cidr(AF_INET, "10.0.0.0", 8), cidr(AF_INET, "192.168.4.0", 22),
                               cidr(AF_INET6, "fd00::", 8) };
    struct { const char *ip; bool v6, ok; } cases[] = {
        { "10.1.2.3", false, true }, { "11.0.0.1", false, false }, { "192.168.7.255", false, true },
        { "192.168.8.0", false, false }, { "192.168.3.255", false, false }, { "fd12::1", true, true },
        { "fe80::1", true, false }, { "::ffff:10.9.9.9", true, true }, { "::ffff:11.9.9.9", true, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_in a4;
        struct sockaddr_in6 a6;
        const struct sockaddr *sa;
        if (cases[i].v6) { a6 = v6(cases[i].ip); sa = (const struct sockaddr *)&a6; }
        else { a4 = v4(cases[i].ip); sa = (const struct sockaddr *)&a4; }
        if (dp_allow_match(list, 3, sa) != cases[i].ok)
            fail_msg("%s: expected %s", cases[i].ip, cases[i].ok ? "allowed" : "refused");
    }
    struct sockaddr_in any = v4("203.0.113.5");
    assert_true(dp_allow_match(list, 0, (const struct sockaddr *)&any));   /* empty list: all */
    struct dp_cidr all4 = cidr(AF_INET, "0.0.0.0", 0);
    assert_true(dp_allow_match(&all4, 1, (const struct sockaddr *)&any));
}

/* max_conns_per_addr counts connections by host: the port does not matter, an IPv4 address and its
 * IPv4-mapped IPv6 form are one host, anything but IPv4/IPv6 is nobody's. */
static void test_same_host(void **s)
{
    (void)s;
    struct sockaddr_in a = v4("10.0.0.1"), a2 = v4("10.0.0.1"), b = v4("10.0.0.2");
    a2.sin_port = htons(40000);
    struct sockaddr_in6 m = v6("::ffff:10.0.0.1"), x = v6("fd00::1"), y = v6("fd00::1"), z = v6("fd00::2");
    assert_true(dp_same_host((const struct sockaddr *)&a, (const struct sockaddr *)&a2));
    assert_false(dp_same_host((const struct sockaddr *)&a, (const struct sockaddr *)&b));
    assert_true(dp_same_host((const struct sockaddr *)&a, (const struct sockaddr *)&m));
    assert_true(dp_same_host((const struct sockaddr *)&m, (const struct sockaddr *)&a2));
    assert_true(dp_same_host((const struct sockaddr *)&x, (const struct sockaddr *)&y));
    assert_false(dp_same_host((const struct sockaddr *)&x, (const struct sockaddr *)&z));
    assert_false(dp_same_host((const struct sockaddr *)&x, (const struct sockaddr *)&a));
    struct sockaddr u = { .sa_family = AF_UNIX };
    assert_false(dp_same_host(&u, &u));
}

static void test_rate(void **s)
{
    (void)s;
    struct dp_rate r;
    assert_int_equal(dp_rate_init(&r, 10, NULL), 0);
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
    uint64_t t = 1000000;
    int ok = 0;
    for (int i = 0; i < 15; i++)
        ok += dp_rate_take(&r, (const struct sockaddr *)&a, t);
    assert_int_equal(ok, 10);                       /* burst = one second's worth */
    assert_true(dp_rate_take(&r, (const struct sockaddr *)&b, t));   /* per client */
    assert_false(dp_rate_take(&r, (const struct sockaddr *)&a, t + 50000));
    assert_true(dp_rate_take(&r, (const struct sockaddr *)&a, t + 100000));   /* 1 token per 100 ms */
    assert_false(dp_rate_take(&r, (const struct sockaddr *)&a, t + 100000));
    ok = 0;
    for (int i = 0; i < 20; i++)                    /* refill caps at the burst */
        ok += dp_rate_take(&r, (const struct sockaddr *)&a, t + 60000000);
    assert_int_equal(ok, 10);
    dp_rate_fini(&r);
    assert_int_equal(dp_rate_init(&r, 0, NULL), 0);   /* off */
    assert_true(dp_rate_take(&r, (const struct sockaddr *)&a, t));
    dp_rate_fini(&r);
}

static void put_frame(struct dp_flows *t, struct dp_flow *f, uint32_t payload)
{
    static uint8_t fr[4096];
    bwp_put_header(fr, BWP_TOKEN, 0, payload, f->n_frames, f->rid);
    dp_flows_log(t, f, fr, BWP_HDR_SIZE + payload);
}

static void test_flows_retention(void **s)
{
    (void)s;
    struct dp_flows t;
    assert_int_equal(dp_flows_init(&t, 4, NULL), 0);
    struct dp_peer p = { .alen = sizeof(struct sockaddr_in) };
    p.a.in = v4("127.0.0.1");
    struct dp_flow *f = dp_flows_add(&t, &p, 1);
    assert_non_null(f);
    assert_ptr_equal(dp_flows_find(&t, &p, 1), f);
    assert_null(dp_flows_find(&t, &p, 2));
    for (int i = 0; i < 300; i++)
        put_frame(&t, f, 8);
    uint32_t len;
    assert_null(dp_flows_frame(&t, f, 43, &len));   /* only the last 256 are kept */
    const uint8_t *fr = dp_flows_frame(&t, f, 44, &len);
    assert_non_null(fr);
    assert_int_equal(len, 32);
    assert_int_equal(bwp_rd32(fr + 12), 44);
    assert_non_null(dp_flows_frame(&t, f, 299, &len));
    assert_null(dp_flows_frame(&t, f, 300, &len));
    /* DONE: kept 5 s, then gone */
    dp_flows_done(&t, f, 1000, true);
    dp_flows_expire(&t, 1000 + DP_RETAIN_US - 1);
    assert_non_null(dp_flows_find(&t, &p, 1));
    dp_flows_expire(&t, 1000 + DP_RETAIN_US);
    assert_null(dp_flows_find(&t, &p, 1));
    /* a full table evicts the oldest finished request, never a live one */
    struct dp_flow *fl[4];
    for (int i = 0; i < 4; i++)
        fl[i] = dp_flows_add(&t, &p, 10 + (uint64_t)i);
    assert_null(dp_flows_add(&t, &p, 20));          /* all live */
    dp_flows_done(&t, fl[2], 5, true);
    dp_flows_done(&t, fl[1], 6, true);
    assert_non_null(dp_flows_add(&t, &p, 21));
    assert_null(dp_flows_find(&t, &p, 12));         /* the older DONE went */
    assert_non_null(dp_flows_find(&t, &p, 11));
    /* the log overwrites old frames: a frame whose bytes were reused is not resent */
    struct dp_flow *g = dp_flows_find(&t, &p, 10);
    put_frame(&t, g, 100);
    assert_non_null(dp_flows_frame(&t, g, 0, &len));
    struct dp_flow *h = dp_flows_find(&t, &p, 13);
    for (uint32_t written = 0; written < DP_LOG_BYTES + 8192; written += 4000)
        put_frame(&t, h, 4000 - BWP_HDR_SIZE);
    assert_null(dp_flows_frame(&t, g, 0, &len));
    assert_non_null(dp_flows_frame(&t, h, h->n_frames - 1, &len));
    dp_flows_fini(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allow),
        cmocka_unit_test(test_same_host),
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_flows_retention),
    };
    return cmocka_run_group_tests_name("limits", tests, NULL, NULL);
}
