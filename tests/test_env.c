/* test_env.c — integer settings from the environment (common/env.h): whole decimal numbers in
 * range are taken; anything else (text, trailing garbage, overflow, out of range) is refused by
 * the parser and, read from the environment, falls back to the default with a warning on stderr
 * that names the variable and its value, with the program's name (common/log.h) in front. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/env.h"
#include "common/log.h"

static void test_parse_accepts(void **state)
{
    (void)state;
    long v = -1;
    assert_true(bora_parse_int("0", 0, 10, &v));
    assert_int_equal(v, 0);
    assert_true(bora_parse_int(" 1048576 ", 0, INT_MAX, &v));
    assert_int_equal(v, 1048576);
    assert_true(bora_parse_int("-1000", -1000, 5, &v));
    assert_int_equal(v, -1000);
    assert_true(bora_parse_int("+7", 0, 10, &v));
    assert_int_equal(v, 7);
    assert_true(bora_parse_int("010", 0, 100, &v));   /* decimal, not octal */
    assert_int_equal(v, 10);
    assert_true(bora_parse_int("10", 0, 10, &v));   /* both bounds are in range */
    assert_int_equal(v, 10);
    assert_true(bora_parse_int("0", 0, 10, &v));
    assert_int_equal(v, 0);
    assert_true(bora_parse_int("-1", -1, 1 << 20, &v));   /* BORA_COLDSTART_WARM=-1: no warm-up */
    assert_int_equal(v, -1);
}

static void test_parse_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = { NULL, "", "  ", "abc", "12abc", "1.5", "0x10", "- 3",
                                       "99999999999999999999999", "11", "-1", "1 2", "1\n2" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        long v = 42;
        assert_false(bora_parse_int(bad[i], 0, 10, &v));
        assert_int_equal(v, 42);   /* untouched */
    }
}

/* Runs bora_env_int(name, def, lo, hi) with fd 2 sent to a file; returns the value and leaves what
 * was written in out. */
static long env_captured(const char *name, long def, long lo, long hi, char *out, size_t cap)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    fflush(stderr);
    const int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fileno(f), 2), 2);
    const long v = bora_env_int(name, def, lo, hi);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    rewind(f);
    const size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    return v;
}

static void test_env_values(void **state)
{
    (void)state;
    char log[512];
    unsetenv("BORA_TEST_KNOB");
    assert_int_equal(env_captured("BORA_TEST_KNOB", -1000, -1000, 64, log, sizeof log), -1000);
    assert_string_equal(log, "");
    setenv("BORA_TEST_KNOB", "", 1);
    assert_int_equal(env_captured("BORA_TEST_KNOB", 3, 0, 64, log, sizeof log), 3);
    assert_string_equal(log, "");
    setenv("BORA_TEST_KNOB", "8", 1);
    assert_int_equal(env_captured("BORA_TEST_KNOB", 3, 0, 64, log, sizeof log), 8);
    assert_string_equal(log, "");
}

static void test_env_bad_value_warns(void **state)
{
    (void)state;
    char log[512];
    bora_log_set_level(BORA_LOG_INFO);
    setenv("BORA_TEST_KNOB", "1o24", 1);   /* a typo atoi would have read as 1 */
    assert_int_equal(env_captured("BORA_TEST_KNOB", 0, 0, INT_MAX, log, sizeof log), 0);
    assert_non_null(strstr(log, "bora: warn: BORA_TEST_KNOB=\"1o24\" is not a whole number in [0, 2147483647]; using 0"));
    setenv("BORA_TEST_KNOB", "65", 1);   /* out of range */
    bora_log_set_name("borad");
    assert_int_equal(env_captured("BORA_TEST_KNOB", 2, 0, 64, log, sizeof log), 2);
    assert_non_null(strstr(log, "borad: warn: BORA_TEST_KNOB=\"65\""));
    bora_log_set_name("");   /* "" keeps the name */
    assert_int_equal(env_captured("BORA_TEST_KNOB", 2, 0, 64, log, sizeof log), 2);
    assert_non_null(strstr(log, "borad: warn: "));
    bora_log_set_name("bora");
    bora_log_set_level(BORA_LOG_ERROR);   /* a warning below the level is not written */
    assert_int_equal(env_captured("BORA_TEST_KNOB", 2, 0, 64, log, sizeof log), 2);
    assert_string_equal(log, "");
    bora_log_set_level(BORA_LOG_INFO);
    unsetenv("BORA_TEST_KNOB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_env_values),
        cmocka_unit_test(test_env_bad_value_warns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
