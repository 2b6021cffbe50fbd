/*
 * test_ratelimit - the token bucket behind server.rate_limit: burst, refill
 * rate, Retry-After, separate callers, and a table that stays bounded
 * however many callers come by.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "http/ratelimit.h"


#define S 1000000 /* µs */

static sophia_ratelimit *rl; /* the test's own, made in main */

static int setup(void **state)
{
    (void)state;
    sophia_ratelimit_reset(rl);
    return 0;
}

static void test_burst_then_rate(void **state)
{
    (void)state;
    uint64_t refused = sophia_ratelimit_refused(rl);
    for (int i = 0; i < 5; i++)
        assert_int_equal(sophia_ratelimit_take(rl, "a", 2, 5, 10 * S), 0);
    assert_int_equal(sophia_ratelimit_take(rl, "a", 2, 5, 10 * S), 1);
    assert_int_equal(sophia_ratelimit_refused(rl), refused + 1);
    /* 2/s: one request's worth after 0.5 s, not before */
    assert_int_equal(sophia_ratelimit_take(rl, "a", 2, 5, 10 * S + S / 4), 1);
    assert_int_equal(sophia_ratelimit_take(rl, "a", 2, 5, 10 * S + S / 2), 0);
    /* idle for long: back to the burst, never above it */
    for (int i = 0; i < 5; i++)
        assert_int_equal(sophia_ratelimit_take(rl, "a", 2, 5, 100 * S), 0);
    assert_int_not_equal(sophia_ratelimit_take(rl, "a", 2, 5, 100 * S), 0);
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(sophia_ratelimit_take(rl, "slow", 0.1, 1, 0), 0);
    assert_int_equal(sophia_ratelimit_take(rl, "slow", 0.1, 1, 0), 10);
    assert_int_equal(sophia_ratelimit_take(rl, "slow", 0.1, 1, 5 * S), 5);
}

static void test_callers_apart(void **state)
{
    (void)state;
    assert_int_equal(sophia_ratelimit_take(rl, "t:x", 1, 1, 0), 0);
    assert_int_not_equal(sophia_ratelimit_take(rl, "t:x", 1, 1, 0), 0);
    assert_int_equal(sophia_ratelimit_take(rl, "t:y", 1, 1, 0), 0);
    assert_int_equal(sophia_ratelimit_take(rl, "ip:127.0.0.1", 1, 1, 0), 0);
}

/* 100,000 one-off callers: the table sweeps instead of growing, and a
 * busy caller's empty bucket survives the sweeps of idle ones. */
static void test_many_callers_bounded(void **state)
{
    (void)state;
    assert_int_equal(sophia_ratelimit_take(rl, "busy", 1, 1, 0), 0);
    char name[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        assert_int_equal(sophia_ratelimit_take(rl, name, 1, 1, (int64_t)i * 100), 0);
        if (i % 997 == 0) /* keeps "busy" drained */
            sophia_ratelimit_take(rl, "busy", 1, 1, (int64_t)i * 100);
    }
    assert_int_not_equal(sophia_ratelimit_take(rl, "busy", 1, 1, 10 * S), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_burst_then_rate, setup),
        cmocka_unit_test_setup(test_retry_after, setup),
        cmocka_unit_test_setup(test_callers_apart, setup),
        cmocka_unit_test_setup(test_many_callers_bounded, setup),
    };
    rl = sophia_ratelimit_new();
    if (!rl)
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sophia_ratelimit_free(rl);
    return rc;
}
