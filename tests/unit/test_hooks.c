/*
 * test_hooks - Slack's v0 request signature: a known-good vector, a
 * tampered body, a wrong secret, the 300 s window both ways, missing and
 * malformed headers. Gong's shared secret: where it may come from and
 * that ?key= is refused unless allowed. Slack's retry filter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>


#include "ingest/hooks.h"

/* Slack's documented example (api.slack.com/authentication/verifying-requests-from-slack). */

static const char *SECRET = "8f742231b10e8888abcd99yyyzzz85a5";
static const char *BODY =
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    "channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    "command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
    "commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id="
    "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
static const char *TS = "1531420618";
static const char *SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

static void test_known_vector(void **u)
{
    (void)u;
    assert_int_equal(sophia_slack_verify(SECRET, TS, SIG, BODY, strlen(BODY), 1531420618),
                     SOPHIA_SLACK_OK);
}

static void test_bad_signatures(void **u)
{
    (void)u;
    char body[1024];
    snprintf(body, sizeof(body), "%s", BODY);
    body[5] ^= 1;
    assert_int_equal(sophia_slack_verify(SECRET, TS, SIG, body, strlen(body), 1531420618),
                     SOPHIA_SLACK_BAD);
    assert_int_equal(sophia_slack_verify("other", TS, SIG, BODY, strlen(BODY), 1531420618),
                     SOPHIA_SLACK_BAD);
    assert_int_equal(sophia_slack_verify(SECRET, TS, "v0=abc", BODY, strlen(BODY), 1531420618),
                     SOPHIA_SLACK_BAD);
}

static void test_window(void **u)
{
    (void)u;
    assert_int_equal(sophia_slack_verify(SECRET, TS, SIG, BODY, strlen(BODY), 1531420618 + 300),
                     SOPHIA_SLACK_OK);
    assert_int_equal(sophia_slack_verify(SECRET, TS, SIG, BODY, strlen(BODY), 1531420618 + 301),
                     SOPHIA_SLACK_STALE);
    assert_int_equal(sophia_slack_verify(SECRET, TS, SIG, BODY, strlen(BODY), 1531420618 - 301),
                     SOPHIA_SLACK_STALE);
    assert_int_equal(sophia_slack_verify(SECRET, "15x", SIG, BODY, strlen(BODY), 15),
                     SOPHIA_SLACK_STALE);
}

static void test_missing(void **u)
{
    (void)u;
    assert_int_equal(sophia_slack_verify(SECRET, NULL, SIG, BODY, strlen(BODY), 0),
                     SOPHIA_SLACK_MISSING);
    assert_int_equal(sophia_slack_verify(SECRET, TS, "", BODY, strlen(BODY), 0),
                     SOPHIA_SLACK_MISSING);
}

static void test_gong(void **u)
{
    (void)u;
    const char *s = "gong-secret";
    assert_int_equal(sophia_gong_verify(s, "Bearer gong-secret", NULL, NULL, 0),
                     SOPHIA_GONG_OK);
    assert_int_equal(sophia_gong_verify(s, "bearer gong-secret", NULL, NULL, 0),
                     SOPHIA_GONG_OK);
    assert_int_equal(sophia_gong_verify(s, NULL, "gong-secret", NULL, 0),
                     SOPHIA_GONG_OK);
    assert_int_equal(sophia_gong_verify(s, "Bearer gong-secreT", NULL, NULL, 0),
                     SOPHIA_GONG_BAD);
    assert_int_equal(sophia_gong_verify(s, NULL, "gong-secret-", NULL, 0),
                     SOPHIA_GONG_BAD);
    assert_int_equal(sophia_gong_verify(s, "Basic eDp5", NULL, NULL, 0),
                     SOPHIA_GONG_BAD);
    assert_int_equal(sophia_gong_verify(s, NULL, NULL, NULL, 1), SOPHIA_GONG_BAD);
    /* ?key= only when allowed; a header wins over it either way */
    assert_int_equal(sophia_gong_verify(s, NULL, NULL, "gong-secret", 0),
                     SOPHIA_GONG_QUERY_OFF);
    assert_int_equal(sophia_gong_verify(s, NULL, NULL, "gong-secret", 1),
                     SOPHIA_GONG_OK);
    assert_int_equal(sophia_gong_verify(s, NULL, "wrong", "gong-secret", 1),
                     SOPHIA_GONG_BAD);
}

static void test_slack_retry_filter(void **u)
{
    (void)u;
    const int64_t S = 1000000;
    sophia_slack_filter *f = sophia_slack_filter_new();
    assert_non_null(f);
    assert_int_equal(sophia_slack_seen(f, 60, "Ev1", 10 * S), 0);
    sophia_slack_remember(f, "Ev1", 10 * S);
    assert_int_equal(sophia_slack_seen(f, 60, "Ev1", 20 * S), 1);
    assert_int_equal(sophia_slack_seen(f, 60, "Ev2", 20 * S), 0);
    assert_int_equal(sophia_slack_seen(f, 60, NULL, 20 * S), 0);
    assert_int_equal(sophia_slack_seen(f, 60, "Ev1", 71 * S), 0); /* window over */
    /* each filter is its own: another one has seen nothing */
    sophia_slack_filter *g = sophia_slack_filter_new();
    sophia_slack_remember(f, "Ev3", 80 * S);
    assert_int_equal(sophia_slack_seen(g, 60, "Ev3", 81 * S), 0);
    assert_int_equal(sophia_slack_seen(f, 60, "Ev3", 81 * S), 1);
    assert_int_equal(sophia_slack_seen(NULL, 60, "Ev3", 81 * S), -1);
    sophia_slack_filter_free(g);
    sophia_slack_filter_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vector),
        cmocka_unit_test(test_bad_signatures),
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_gong),
        cmocka_unit_test(test_slack_retry_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
