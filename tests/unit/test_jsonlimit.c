/*
 * test_jsonlimit - the nesting pre-scan: depth counted over arrays and
 * objects, strings and escapes skipped, several texts back to back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/jsonlimit.h"

static size_t deep(const char *s, size_t max)
{
    return sophia_json_too_deep(s, strlen(s), max);
}

static void test_depth(void **state)
{
    (void)state;
    assert_int_equal(deep("", 1), 0);
    assert_int_equal(deep("{\"a\":[1,2]}", 2), 0);
    assert_int_equal(deep("{\"a\":[1,2]}", 1), 6); /* 1 + offset of '[' */
    assert_int_equal(deep("[[[]]]", 3), 0);
    assert_int_equal(deep("[[[]]]", 2), 3);
    /* siblings do not add up; NDJSON lines neither */
    assert_int_equal(deep("[[],[],[]]\n[[]]\n{\"x\":{}}", 2), 0);
}

static void test_strings_skipped(void **state)
{
    (void)state;
    assert_int_equal(deep("[\"[[[[{{{{\"]", 1), 0);
    assert_int_equal(deep("[\"\\\"[[[\"]", 1), 0);     /* escaped quote */
    assert_int_equal(deep("[\"\\\\\",[]]", 1), 7);     /* escaped backslash */
}

static void test_unbalanced(void **state)
{
    (void)state;
    assert_int_equal(deep("]]]]][[", 2), 0); /* closers do not go below 0 */
    assert_int_equal(deep("]]]]][[[", 2), 8);
}

static void test_huge(void **state)
{
    (void)state;
    size_t n = 1000000;
    char *s = malloc(n);
    assert_non_null(s);
    memset(s, '[', n);
    assert_int_equal(sophia_json_too_deep(s, n, SOPHIA_JSON_MAX_DEPTH),
                     SOPHIA_JSON_MAX_DEPTH + 1);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_strings_skipped),
        cmocka_unit_test(test_unbalanced),
        cmocka_unit_test(test_huge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
