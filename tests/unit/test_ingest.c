/*
 * test_ingest - body parsing: object, array, NDJSON; errors with position;
 * all-or-nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "ingest.h"

static json_t *parse(const char *s, sophia_parse_error *e)
{
    memset(e, 0, sizeof(*e));
    return sophia_ingest_parse(s, strlen(s), e);
}

static void test_single_object(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    json_t *v = parse("  {\"metric\":\"a\",\"value\":1}\n", &e);
    assert_non_null(v);
    assert_int_equal(json_array_size(v), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(v, 0), "metric")), "a");
    json_decref(v);
}

static void test_array_and_ndjson(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    json_t *v = parse("[{\"a\":1},{\"a\":2}]", &e);
    assert_int_equal(json_array_size(v), 2);
    json_decref(v);
    v = parse("{\"a\":1}\n{\"a\":2}\r\n\n{\"a\":3}", &e);
    assert_int_equal(json_array_size(v), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 2), "a")), 3);
    json_decref(v);
    /* An array line inside NDJSON is flattened too. */
    v = parse("{\"a\":1}\n[{\"a\":2},{\"a\":3}]\n", &e);
    assert_int_equal(json_array_size(v), 3);
    json_decref(v);
}

static void test_error_position(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    const char *body = "{\"a\":1}\n{\"a\":2}\n{\"a\": x}\n";
    assert_null(parse(body, &e));
    assert_int_equal(e.line, 3);
    assert_int_equal(e.column, 7);
    assert_int_equal(e.offset, strlen("{\"a\":1}\n{\"a\":2}\n{\"a\": "));
    assert_true(strlen(e.text) > 0);
}

static void test_rejects_non_objects(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    assert_null(parse("42", &e));
    assert_non_null(strstr(e.text, "object"));
    assert_null(parse("[{\"a\":1}, \"x\"]", &e));
    assert_non_null(strstr(e.text, "element 1"));
    assert_null(parse("   \n ", &e));
    assert_non_null(strstr(e.text, "empty"));
    assert_null(parse("{\"a\":1} trailing", &e));
    assert_int_equal(e.line, 1);
    assert_null(parse("{\"a\":1", &e));
}

static void test_embedded_nul_is_an_error(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    const char body[] = "{\"a\":1}\0{\"b\":2}";
    assert_null(sophia_ingest_parse(body, sizeof(body) - 1, &e));
    assert_int_equal(e.offset, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_object),
        cmocka_unit_test(test_array_and_ndjson),
        cmocka_unit_test(test_error_position),
        cmocka_unit_test(test_rejects_non_objects),
        cmocka_unit_test(test_embedded_nul_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
