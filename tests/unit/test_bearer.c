/*
 * test_bearer - the one reader of `Authorization: Bearer <token>`
 * (lib/bearer.h): the scheme in any case, the token as given, and every
 * other value refused rather than guessed at.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/bearer.h"

static void test_token(void **state)
{
    (void)state;
    const char *h = "Bearer abc.def";
    assert_ptr_equal(sophia_bearer_token(h), h + 7); /* into the header */
    assert_string_equal(sophia_bearer_token("bearer t"), "t");
    assert_string_equal(sophia_bearer_token("BEARER t"), "t");
    /* the rest of the value, spaces and all: the caller compares it */
    assert_string_equal(sophia_bearer_token("Bearer  t "), " t ");
    assert_string_equal(sophia_bearer_token("Bearer "), "");
}

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {"", "Bearer", "Bearerabc", "Basic dXNlcjpwdw==",
                         " Bearer t", "Bearer\tt", "Token t", NULL};
    for (int i = 0; bad[i]; i++)
        assert_null(sophia_bearer_token(bad[i]));
    assert_null(sophia_bearer_token(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
