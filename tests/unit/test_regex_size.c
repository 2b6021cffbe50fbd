/*
 * test_regex_size - the estimate of a regular expression's compiled size
 * that keeps regcomp from expanding repetitions of repetitions (a 100-byte
 * config pattern took fuzz_config past 2 GB): plain patterns are small,
 * repeats multiply, and every input ends.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/regex_size.h"

#define LIM SOPHIA_REGEX_MAX_NODES

static void test_plain_patterns_are_small(void **u)
{
    (void)u;
    assert_int_equal(sophia_regex_size("", LIM), 0);
    assert_int_equal(sophia_regex_size("abc", LIM), 3);
    assert_true(sophia_regex_size("^(foo|bar)[0-9]{1,5}$", LIM) < 40);
    assert_true(sophia_regex_size("[[:alpha:]_][[:alnum:]_]*", LIM) < 10);
    assert_true(sophia_regex_size("[]a]+\\.x", LIM) < 10);
    assert_true(sophia_regex_size("a{,3}{", LIM) < 10); /* plain braces */
    assert_true(sophia_regex_size("[a-z]{1,255}", LIM) < 300);
}

static void test_repeats_multiply(void **u)
{
    (void)u;
    assert_true(sophia_regex_size("x{1000}", LIM) >= 1000);
    assert_int_equal(sophia_regex_size("(a{200}){200}", LIM), LIM + 1);
    assert_true(sophia_regex_size("(a{100}){100}", LIM) > 10000); /* under */
    assert_int_equal(sophia_regex_size("((a{30}){30}){30}", LIM), LIM + 1);
    assert_int_equal(sophia_regex_size("P++++++++++++++++++++++++", LIM), LIM + 1);
    assert_int_equal(sophia_regex_size("a{32767}", LIM), LIM + 1);
    /* fuzz_config's: a hundred '+' after a letter */
    char p[160] = "matchP";
    memset(p + 6, '+', 100);
    assert_int_equal(sophia_regex_size(p, LIM), LIM + 1);
}

/* Unbalanced or cut-off patterns still end (regcomp refuses them). */
static void test_every_input_ends(void **u)
{
    (void)u;
    const char *odd[] = {"(((", ")))", "[", "[[:", "a{", "a{9", "a{1,", "\\"};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        assert_true(sophia_regex_size(odd[i], LIM) <= LIM + 1);
    char deep[80]; /* past the 64 groups it follows */
    memset(deep, '(', 78);
    deep[78] = 'a';
    deep[79] = '\0';
    assert_int_equal(sophia_regex_size(deep, LIM), LIM + 1);
    char *rnd = malloc(4097);
    unsigned x = 7;
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + round % 4096;
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            rnd[i] = "ab()[]{},*+?|\\:^0123456789"[(x >> 16) % 26];
        }
        rnd[n] = '\0';
        assert_true(sophia_regex_size(rnd, LIM) <= LIM + 1);
    }
    free(rnd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_patterns_are_small),
        cmocka_unit_test(test_repeats_multiply),
        cmocka_unit_test(test_every_input_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
