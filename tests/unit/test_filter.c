/*
 * test_filter - stream filters from YAML: every operator, AND semantics,
 * dotted paths into objects and arrays, and FILE:LINE:COL errors for bad
 * filters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "conf/config.h"
#include "ingest/filter.h"

static sophia_conf *load(const char *yaml, sophia_diag *d)
{
    sophia_diag_init(d);
    return sophia_conf_load_string("/t/f.yaml", yaml, strlen(yaml), d);
}

/* A filter of one stream whose predicates are `preds` (YAML flow list). */
static int matches(const char *preds, const char *event)
{
    char yaml[2048];
    snprintf(yaml, sizeof(yaml), "streams:\n  s:\n    processor: p\n    filter: %s\n",
             preds);
    sophia_diag d;
    sophia_conf *c = load(yaml, &d);
    assert_int_equal(d.count, 0);
    assert_int_equal(c->nstreams, 1);
    const char *err = NULL;
    sophia_filter *f = sophia_filter_new(c->streams[0].filter,
                                         c->streams[0].nfilter, &err);
    assert_null(err);
    json_t *ev = json_loads(event, 0, NULL);
    assert_non_null(ev);
    int m = sophia_filter_match(f, ev);
    json_decref(ev);
    sophia_filter_free(f);
    sophia_conf_free(c);
    sophia_diag_free(&d);
    return m;
}

static void test_equals_and_not_equals(void **u)
{
    (void)u;
    assert_true(matches("[{path: event.type, equals: message}]", "{\"event\":{\"type\":\"message\"}}"));
    assert_false(matches("[{path: event.type, equals: message}]", "{\"event\":{\"type\":\"app_mention\"}}"));
    assert_false(matches("[{path: event.type, equals: message}]", "{}"));
    assert_true(matches("[{path: n, equals: 3}]", "{\"n\":3.0}"));
    assert_true(matches("[{path: ok, equals: true}]", "{\"ok\":true}"));
    assert_true(matches("[{path: x, not_equals: a}]", "{}"));
    assert_false(matches("[{path: x, not_equals: a}]", "{\"x\":\"a\"}"));
}

static void test_in_exists_numbers(void **u)
{
    (void)u;
    assert_true(matches("[{path: c, in: [C1, C2]}]", "{\"c\":\"C2\"}"));
    assert_false(matches("[{path: c, in: [C1, C2]}]", "{\"c\":\"C3\"}"));
    assert_true(matches("[{path: c, not_in: [C1]}]", "{\"c\":\"C3\"}"));
    assert_true(matches("[{path: a.b, exists: true}]", "{\"a\":{\"b\":0}}"));
    assert_false(matches("[{path: a.b, exists: true}]", "{\"a\":{\"b\":null}}"));
    assert_true(matches("[{path: a.b, exists: false}]", "{\"a\":{}}"));
    assert_true(matches("[{path: v, gt: 100}]", "{\"v\":100.5}"));
    assert_false(matches("[{path: v, gt: 100}]", "{\"v\":100}"));
    assert_true(matches("[{path: v, gte: 100}]", "{\"v\":100}"));
    assert_true(matches("[{path: v, lt: 0}]", "{\"v\":-1}"));
    assert_true(matches("[{path: v, lte: 5}]", "{\"v\":\"5\"}"));
    assert_false(matches("[{path: v, lte: 5}]", "{\"v\":\"five\"}"));
    assert_true(matches("[{path: rows.1.ID, equals: b}]", "{\"rows\":[{\"ID\":\"a\"},{\"ID\":\"b\"}]}"));
}

static void test_regex_and_conjunction(void **u)
{
    (void)u;
    assert_true(matches("[{path: t, matches: \"churn|cancel\"}]", "{\"t\":\"wants to cancel\"}"));
    assert_false(matches("[{path: t, matches: \"^churn\"}]", "{\"t\":\"Churn now\"}"));
    assert_true(matches("[{path: t, matches: \"^churn\", icase: true}]", "{\"t\":\"Churn now\"}"));
    assert_true(matches("[{path: n, matches: \"^4[0-9]$\"}]", "{\"n\":42}"));
    const char *both = "[{path: a, equals: x}, {path: b, gt: 1}]";
    assert_true(matches(both, "{\"a\":\"x\",\"b\":2}"));
    assert_false(matches(both, "{\"a\":\"x\",\"b\":1}"));
    assert_false(matches(both, "{\"a\":\"y\",\"b\":2}"));
}

static void test_errors_have_positions(void **u)
{
    (void)u;
    sophia_diag d;
    const char *yaml = "streams:\n  s:\n    processor: p\n    filter:\n"
                       "      - {path: a, matches: \"(\"}\n"
                       "      - {path: b, bogus: 1}\n"
                       "      - {path: c, gt: lots}\n"
                       "      - {equals: 1}\n"
                       "      - {path: e, in: x}\n";
    sophia_conf *c = load(yaml, &d);
    assert_int_equal(d.count, 5);
    assert_non_null(strstr(d.lines[0], "f.yaml:5:"));
    assert_non_null(strstr(d.lines[0], "bad regular expression"));
    assert_non_null(strstr(d.lines[1], "f.yaml:6:"));
    assert_non_null(strstr(d.lines[1], "unexpected key 'bogus'"));
    assert_non_null(strstr(d.lines[2], "not a number"));
    assert_non_null(strstr(d.lines[3], "no 'path'"));
    assert_non_null(strstr(d.lines[4], "sequence"));
    assert_int_equal(c->streams[0].nfilter, 0);
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

static void test_no_filter_passes_all(void **u)
{
    (void)u;
    const char *err = "x";
    assert_null(sophia_filter_new(NULL, 0, &err));
    assert_null(err);
    json_t *ev = json_object();
    assert_true(sophia_filter_match(NULL, ev));
    json_decref(ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_and_not_equals),
        cmocka_unit_test(test_in_exists_numbers),
        cmocka_unit_test(test_regex_and_conjunction),
        cmocka_unit_test(test_errors_have_positions),
        cmocka_unit_test(test_no_filter_passes_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
