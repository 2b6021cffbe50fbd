/*
 * test_replay - the range a replay is given (ingest/replay.h): Redis ids
 * pass as they are, RFC 3339 times become the millisecond id Redis gives
 * entries added then, and anything else is refused saying what is
 * accepted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ingest/replay.h"

static void expect_id(const char *in, const char *want)
{
    char out[64], why[200] = "";
    if (sophia_replay_parse_id(in, out, sizeof(out), why, sizeof(why)) < 0)
        fail_msg("'%s' refused: %s", in, why);
    assert_string_equal(out, want);
}

static void expect_refused(const char *in)
{
    char out[64], why[200] = "";
    assert_int_equal(sophia_replay_parse_id(in, out, sizeof(out), why,
                                            sizeof(why)), -1);
    assert_non_null(strstr(why, in[0] ? "RFC 3339" : "empty"));
}

static void test_redis_ids(void **state)
{
    (void)state;
    expect_id("-", "-");
    expect_id("+", "+");
    expect_id("1796203840204", "1796203840204");
    expect_id("1796203840204-7", "1796203840204-7");
}

static void test_times(void **state)
{
    (void)state;
    expect_id("1970-01-01T00:00:00Z", "0");
    expect_id("2024-01-20T10:30:00Z", "1705746600000");
    expect_id("2024-01-20T10:30:00.25Z", "1705746600250");
    expect_id("2024-01-20T10:30:00.123456Z", "1705746600123");
    expect_id("2024-01-20T12:30:00+02:00", "1705746600000");
    expect_id("2024-01-20T05:30:00-05:00", "1705746600000");
}

static void test_refused(void **state)
{
    (void)state;
    expect_refused("");
    expect_refused("yesterday");
    expect_refused("12-");
    expect_refused("12-3-4");
    expect_refused("2024-01-20 10:30:00Z");
    expect_refused("2024-01-20T10:30:00");
    expect_refused("2024-13-20T10:30:00Z");
    expect_refused("2024-01-20T10:30:00.Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_ids),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
