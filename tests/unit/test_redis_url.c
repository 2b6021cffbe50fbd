/*
 * test_redis_url - the one Redis URL parser: hosts, ports, databases,
 * credentials (requirepass and ACL forms, percent-decoding), each kind of
 * bad URL with its message, the redacted form used in logs, and bad URLs
 * in YAML or the environment refused at config load with their position
 * and without the password.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf/config.h"
#include "lib/diag.h"
#include "lib/redis_url.h"


static void good(const char *url, const char *host, int port, int db,
                 const char *user, const char *password)
{
    sophia_redis_url u;
    char err[200] = "";
    if (sophia_redis_url_parse(url, &u, err, sizeof(err)) != 0)
        fail_msg("%s: refused: %s", url, err);
    assert_string_equal(u.host, host);
    assert_int_equal(u.port, port);
    assert_int_equal(u.db, db);
    if (user)
        assert_string_equal(u.user, user);
    else
        assert_null(u.user);
    if (password)
        assert_string_equal(u.password, password);
    else
        assert_null(u.password);
    sophia_redis_url_clear(&u);
}

static void bad(const char *url, const char *want)
{
    sophia_redis_url u;
    char err[200] = "";
    if (sophia_redis_url_parse(url, &u, err, sizeof(err)) == 0)
        fail_msg("%s: accepted", url);
    if (!strstr(err, want))
        fail_msg("%s: message \"%s\" lacks \"%s\"", url, err, want);
    assert_null(u.host);
    assert_null(u.password);
}

static void test_good_urls(void **s)
{
    (void)s;
    good("redis://127.0.0.1:6379/0", "127.0.0.1", 6379, 0, NULL, NULL);
    good("redis://cache.internal", "cache.internal", 6379, 0, NULL, NULL);
    good("redis://h:7000", "h", 7000, 0, NULL, NULL);
    good("redis://h/", "h", 6379, 0, NULL, NULL);
    good("REDIS://h:1/15", "h", 1, 15, NULL, NULL);
    good("redis://[::1]:6380/2", "::1", 6380, 2, NULL, NULL);
    good("redis://[::1]", "::1", 6379, 0, NULL, NULL);
    good("redis://:s3cret@h:6379/1", "h", 6379, 1, NULL, "s3cret");
}

static void test_credentials(void **s)
{
    (void)s;
    good("redis://:s3cret@h:6379/1", "h", 6379, 1, NULL, "s3cret");
    good("redis://app:s3cret@h:6379/1", "h", 6379, 1, "app", "s3cret");
    /* percent-decoding of both parts */
    good("redis://a%40b:p%40ss%3Aw%2Frd%25@h/0", "h", 6379, 0, "a@b",
         "p@ss:w/rd%");
    /* the last '@' ends the credentials: unescaped '@', ':' and '/' in a
     * password still parse */
    good("redis://u:p@s:s/w@h:1/2", "h", 1, 2, "u", "p@s:s/w");
    good("redis://:a?b#c@h", "h", 6379, 0, NULL, "a?b#c");
}

static void test_bad_urls(void **s)
{
    (void)s;
    bad("", "empty URL");
    bad("http://h:6379", "not a redis:// URL");
    bad("h:6379", "not a redis:// URL");
    bad("rediss://h:6380", "TLS");
    bad("redis://", "no host");
    bad("redis://:6379/0", "no host");
    bad("redis://h:0", "port '0' is not a number in 1..65535");
    bad("redis://h:65536", "port '65536'");
    bad("redis://h:80x/0", "port '80x'");
    bad("redis://h:/0", "port ''");
    bad("redis://h:6379/x", "database '/x' is not a number >= 0");
    bad("redis://h:6379/-1", "database '/-1'");
    bad("redis://h:6379/0?password=x", "query parameters");
    bad("redis://::1:6379", "no host");
    bad("redis://h:1:2", "port '1:2'");
    bad("redis://[::1:6379", "without ']'");
    bad("redis://[::1]x", "unexpected 'x'");
    bad("redis://s3cret@h", "have no ':'");
    bad("redis://user:@h", "password before '@' is empty");
    bad("redis://:p%4@h", "bad percent-escape");
    bad("redis://:p%zz@h", "bad percent-escape");
    bad("redis://:p%00@h", "bad percent-escape");
    bad("redis://u%G1:p@h", "user name has a bad percent-escape");
}

/* A bad URL's message never holds its password. */
static void test_messages_hide_password(void **s)
{
    (void)s;
    const char *urls[] = {"redis://u:TOPSECRET@h:99999/0",
                          "redis://u:TOPSECRET@h:1/x",
                          "redis://u:TOP%zzSECRET@h"};
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        sophia_redis_url u;
        char err[200];
        assert_int_equal(sophia_redis_url_parse(urls[i], &u, err, sizeof(err)), -1);
        assert_null(strstr(err, "SECRET"));
    }
}

static void test_redact(void **s)
{
    (void)s;
    char b[256];
    assert_string_equal(sophia_redis_url_redact("redis://app:s3cret@h:7/2", b, sizeof(b)),
                        "redis://app:***@h:7/2");
    assert_string_equal(sophia_redis_url_redact("redis://:s3cret@h", b, sizeof(b)),
                        "redis://:***@h:6379/0");
    assert_string_equal(sophia_redis_url_redact("redis://h", b, sizeof(b)),
                        "redis://h:6379/0");
    assert_string_equal(sophia_redis_url_redact("redis://[::1]:1/0", b, sizeof(b)),
                        "redis://[::1]:1/0");
    /* unparseable: everything before the last '@' and any query masked */
    assert_string_equal(sophia_redis_url_redact("redis://u:s3cret@h:0", b, sizeof(b)),
                        "redis://***@h:0");
    assert_string_equal(sophia_redis_url_redact("redis://h/0?password=s3cret", b, sizeof(b)),
                        "redis://h/0?***");
    assert_string_equal(sophia_redis_url_redact("s3cret@h", b, sizeof(b)), "***@h");
    assert_null(strstr(sophia_redis_url_redact("rediss://u:s3cret@h", b, sizeof(b)),
                       "s3cret"));
}

/* At config load: FILE:LINE:COL, the path, the redacted URL, the reason. */
static void test_config_refuses_bad_urls(void **s)
{
    (void)s;
    unsetenv("SOPHIA_REDIS_URL");
    unsetenv("SOPHIA_CLUSTER_REDIS_URL");
    const char *y = "redis:\n"
                    "  url: \"redis://app:TOPSECRET@h:99999/0\"\n"
                    "cluster:\n"
                    "  redis: redis://h:6379/zero\n";
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *c = sophia_conf_load_string("t.yaml", y, strlen(y), &d);
    assert_non_null(c);
    assert_int_equal(d.count, 2);
    assert_string_equal(d.lines[0],
                        "t.yaml:2:8: redis.url: redis://***@h:99999/0: port "
                        "'99999' is not a number in 1..65535");
    assert_string_equal(d.lines[1],
                        "t.yaml:4:10: cluster.redis: redis://h:6379/zero: "
                        "database '/zero' is not a number >= 0");
    assert_null(c->redis_url);
    sophia_conf_free(c);
    sophia_diag_free(&d);

    /* good ones load, credentials and all */
    const char *ok = "redis:\n  url: \"redis://app:p%40ss@h:6379/1\"\n";
    sophia_diag_init(&d);
    c = sophia_conf_load_string("t.yaml", ok, strlen(ok), &d);
    assert_int_equal(d.count, 0);
    assert_string_equal(c->redis_url, "redis://app:p%40ss@h:6379/1");
    /* from the environment: no position, the variable named */
    setenv("SOPHIA_REDIS_URL", "redis://TOPSECRET@h", 1);
    sophia_conf_apply_env(c, NULL);
    sophia_conf_validate(c, &d);
    unsetenv("SOPHIA_REDIS_URL");
    assert_true(d.count >= 1);
    assert_non_null(strstr(d.lines[0], "t.yaml:0:0: redis.url (or SOPHIA_REDIS_URL): "
                                       "redis://***@h: credentials before '@' "
                                       "have no ':'"));
    for (size_t i = 0; i < d.count; i++)
        assert_null(strstr(d.lines[i], "TOPSECRET"));
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_urls),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_bad_urls),
        cmocka_unit_test(test_messages_hide_password),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_config_refuses_bad_urls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
