/*
 * test_statsd - DogStatsD line parsing: the sample lines, sample rates,
 * tags and the dashboard tag, skipped lines and malformed ones.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>


#include "ingest/statsd.h"


static json_t *parse(const char *line, int *skip, char *err)
{
    return sophia_statsd_parse_line(line, strlen(line), skip, err, 128);
}

static void test_sample_lines(void **u)
{
    (void)u;
    int skip;
    char err[128];
    json_t *p = parse("api.requests:1|c|#service:api,env:prod", &skip, err);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "metric")), "api.requests");
    assert_string_equal(json_string_value(json_object_get(p, "type")), "counter");
    assert_int_equal(json_integer_value(json_object_get(p, "value")), 1);
    json_t *l = json_object_get(p, "labels");
    assert_string_equal(json_string_value(json_object_get(l, "service")), "api");
    assert_string_equal(json_string_value(json_object_get(l, "env")), "prod");
    json_decref(p);

    p = parse("api.latency_ms:23.5|ms|@0.5|#service:api", &skip, err);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "timer");
    assert_true(json_real_value(json_object_get(p, "value")) == 23.5);
    assert_true(json_real_value(json_object_get(p, "sample_rate")) == 0.5);
    json_decref(p);

    p = parse("active_users:1250|g|#dashboard:executive", &skip, err);
    assert_string_equal(json_string_value(json_object_get(p, "dashboard_id")), "executive");
    assert_null(json_object_get(p, "labels"));
    json_decref(p);
}

static void test_counter_scaled_by_rate(void **u)
{
    (void)u;
    int skip;
    char err[128];
    json_t *p = parse("hits:3|c|@0.25", &skip, err);
    assert_int_equal(json_integer_value(json_object_get(p, "value")), 12);
    json_decref(p);
    p = parse("h:7|h", &skip, err);
    assert_string_equal(json_string_value(json_object_get(p, "type")), "histogram");
    json_decref(p);
    p = parse("u:alice|s", &skip, err);
    assert_string_equal(json_string_value(json_object_get(json_object_get(p, "labels"), "member")), "alice");
    json_decref(p);
}

static void test_skips_and_errors(void **u)
{
    (void)u;
    int skip;
    char err[128];
    assert_null(parse("", &skip, err));
    assert_true(skip);
    assert_null(parse("_e{5,4}:title|text", &skip, err));
    assert_true(skip);
    assert_null(parse("_sc|svc|0", &skip, err));
    assert_true(skip);
    const char *bad[] = {"novalue", "x:1", "x:1|zz", "x:abc|c", "x:1|c|@2", ":1|c"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_null(parse(bad[i], &skip, err));
        assert_false(skip);
        assert_true(err[0] != '\0');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_lines),
        cmocka_unit_test(test_counter_scaled_by_rate),
        cmocka_unit_test(test_skips_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
