/*
 * test_backoff - the exponential back-off with jitter (lib/backoff.h):
 * the plain schedule doubles and stops at the cap, full jitter stays
 * inside [0, plain] and actually spreads, decorrelated jitter stays inside
 * [base, min(cap, 3 * prev)], and the generator is uniform enough that a
 * burst of retries does not land in one instant.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/backoff.h"


static void test_plain_doubles_to_cap(void **u)
{
    (void)u;
    assert_true(sophia_backoff_plain(0.1, 10, 0) == 0);
    assert_true(sophia_backoff_plain(0.1, 10, 1) == 0.1);
    assert_true(sophia_backoff_plain(0.1, 10, 2) == 0.2);
    assert_true(sophia_backoff_plain(0.1, 10, 4) == 0.8);
    assert_true(sophia_backoff_plain(0.1, 10, 8) == 10); /* 12.8 capped */
    assert_true(sophia_backoff_plain(0.1, 10, 4000) == 10); /* no overflow */
    assert_true(sophia_backoff_plain(0, 10, 3) == 0);
    assert_true(sophia_backoff_plain(0.5, 0, 3) == 0.5); /* no cap = base */
}

static void test_full_jitter_bounds_and_spread(void **u)
{
    (void)u;
    assert_true(sophia_backoff_full(0.1, 10, 3, 0) == 0);
    assert_true(sophia_backoff_full(0.1, 10, 3, 0.5) == 0.2);
    assert_true(sophia_backoff_full(0.1, 10, 3, 1.0) < 0.4); /* u clamped */
    unsigned long long rs = 42;
    double lo = 1e9, hi = -1, sum = 0;
    for (int i = 0; i < 10000; i++) {
        double d = sophia_backoff_full(0.1, 10, 5, sophia_backoff_rand(&rs));
        assert_true(d >= 0 && d < 1.6);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        sum += d;
    }
    /* Spread over the whole window, mean near half the plain delay. */
    assert_true(lo < 0.05 && hi > 1.55);
    assert_true(sum / 10000 > 0.75 && sum / 10000 < 0.85);
}

static void test_decorrelated_bounds(void **u)
{
    (void)u;
    assert_true(sophia_backoff_decorrelated(0.1, 10, 0, 0) == 0.1);
    /* first wait: prev counts as base, so the window is [0.1, 0.3] */
    double d = sophia_backoff_decorrelated(0.1, 10, 0, 0.5);
    assert_true(d > 0.199 && d < 0.201);
    unsigned long long rs = 7;
    double prev = 0;
    for (int i = 0; i < 1000; i++) {
        double n = sophia_backoff_decorrelated(0.1, 2, prev,
                                               sophia_backoff_rand(&rs));
        double top = (prev > 0.1 ? prev : 0.1) * 3;
        assert_true(n >= 0.1 && n <= (top < 2 ? top : 2));
        prev = n;
    }
    assert_true(sophia_backoff_decorrelated(0.1, 2, 100, 0.999) <= 2);
}

static void test_rand_uniform(void **u)
{
    (void)u;
    unsigned long long rs = 0; /* replaced by a fixed seed */
    int bins[10] = {0};
    for (int i = 0; i < 100000; i++) {
        double x = sophia_backoff_rand(&rs);
        assert_true(x >= 0 && x < 1);
        bins[(int)(x * 10)]++;
    }
    for (int i = 0; i < 10; i++)
        assert_true(bins[i] > 9000 && bins[i] < 11000);
    assert_true(rs != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_doubles_to_cap),
        cmocka_unit_test(test_full_jitter_bounds_and_spread),
        cmocka_unit_test(test_decorrelated_bounds),
        cmocka_unit_test(test_rand_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
