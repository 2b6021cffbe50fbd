/*
 * test_origin - the same-origin rule of origin.h: what counts as the
 * server's own page, the allow-list, and the strings an attacker would
 * try to slip past a naive prefix or suffix compare.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ws/origin.h"

#define SAME(o, h) sophia_origin_allowed((o), (h), NULL, 0)

static void test_no_origin(void **state)
{
    (void)state;
    /* curl, SDKs: no Origin at all */
    assert_true(SAME(NULL, "127.0.0.1:8080"));
    assert_true(SAME("", "127.0.0.1:8080"));
    assert_true(SAME(NULL, NULL));
}

static void test_same_origin(void **state)
{
    (void)state;
    assert_true(SAME("http://127.0.0.1:8080", "127.0.0.1:8080"));
    assert_true(SAME("https://127.0.0.1:8080", "127.0.0.1:8080"));
    assert_true(SAME("http://localhost:8080", "localhost:8080"));
    /* host names are case-insensitive, and so is the scheme */
    assert_true(SAME("HTTP://LocalHost:8080", "localhost:8080"));
    assert_true(SAME("http://localhost:8080", "LOCALHOST:8080"));
    /* IPv6 literals keep their brackets in both headers */
    assert_true(SAME("http://[::1]:8080", "[::1]:8080"));
    assert_true(SAME("http://[::1]", "[::1]:80"));
    assert_false(SAME("http://[::1]:8080", "[::2]:8080"));
    assert_false(SAME("http://[::1]:8080", "[::1]:8081"));
}

static void test_default_ports(void **state)
{
    (void)state;
    assert_true(SAME("http://example.com", "example.com"));
    assert_true(SAME("http://example.com:80", "example.com"));
    assert_true(SAME("http://example.com", "example.com:80"));
    assert_true(SAME("https://example.com", "example.com:443"));
    assert_true(SAME("https://example.com:443", "example.com"));
    /* the default belongs to the scheme: https is not port 80 */
    assert_false(SAME("https://example.com", "example.com:80"));
    assert_false(SAME("http://example.com", "example.com:443"));
    assert_false(SAME("http://example.com:8080", "example.com"));
    assert_false(SAME("http://example.com", "example.com:8080"));
}

static void test_other_origins(void **state)
{
    (void)state;
    /* different names for one machine are different origins */
    assert_false(SAME("http://localhost:8080", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1:8080", "localhost:8080"));
    assert_false(SAME("http://evil.com", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1:8081", "127.0.0.1:8080"));
    /* unknown Host: only the list can help */
    assert_false(SAME("http://127.0.0.1:8080", NULL));
    assert_false(SAME("http://127.0.0.1:8080", ""));
}

static void test_tricks(void **state)
{
    (void)state;
    /* sandboxed frames and file:// pages */
    assert_false(SAME("null", "127.0.0.1:8080"));
    assert_false(SAME("null", "null"));
    /* suffix and prefix attacks */
    assert_false(SAME("http://127.0.0.1:8080.evil.com", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1.evil.com:8080", "127.0.0.1:8080"));
    assert_false(SAME("http://evil.com/127.0.0.1:8080", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1:8080@evil.com", "127.0.0.1:8080"));
    assert_false(SAME("http://evil.com@127.0.0.1:8080", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1:8080/", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1:8080/x", "127.0.0.1:8080"));
    assert_false(SAME("http://127.0.0.1:", "127.0.0.1:"));
    assert_false(SAME("http://127.0.0.1:8080x", "127.0.0.1:8080x"));
    assert_false(SAME("http://127.0.0.1:99999", "127.0.0.1:99999"));
    assert_false(SAME("http://:8080", ":8080"));
    assert_false(SAME("http://", ""));
    assert_false(SAME("http://[::1]x", "[::1]x"));
    /* schemes other than http(s) never match the server's own page */
    assert_false(SAME("ws://127.0.0.1:8080", "127.0.0.1:8080"));
    assert_false(SAME("file://127.0.0.1:8080", "127.0.0.1:8080"));
    assert_false(SAME("127.0.0.1:8080", "127.0.0.1:8080"));
    /* a bad Host does not match a good Origin */
    assert_false(SAME("http://127.0.0.1:8080", "127.0.0.1:8080/x"));
    assert_false(SAME("http://a", "a b"));
}

static void test_allow_list(void **state)
{
    (void)state;
    char *list[] = {"https://app.example.com", "http://localhost:3000"};
    assert_true(sophia_origin_allowed("https://app.example.com", "127.0.0.1:8080", list, 2));
    assert_true(sophia_origin_allowed("HTTPS://APP.example.com", "127.0.0.1:8080", list, 2));
    assert_true(sophia_origin_allowed("http://localhost:3000", "127.0.0.1:8080", list, 2));
    /* exact entries only: no prefixes, suffixes or other ports */
    assert_false(sophia_origin_allowed("https://app.example.com.evil.com", "x", list, 2));
    assert_false(sophia_origin_allowed("https://app.example.co", "x", list, 2));
    assert_false(sophia_origin_allowed("http://localhost:3001", "x", list, 2));
    assert_false(sophia_origin_allowed("http://app.example.com", "x", list, 2));
    assert_false(sophia_origin_allowed("null", "x", list, 2));
    /* the list adds to same-origin, it does not replace it */
    assert_true(sophia_origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", list, 2));

    char *any[] = {"https://a", "*"};
    assert_true(sophia_origin_allowed("http://evil.com", "127.0.0.1:8080", any, 2));
    assert_true(sophia_origin_allowed("null", "127.0.0.1:8080", any, 2));
    char *nul[] = {"null"};
    assert_true(sophia_origin_allowed("null", "127.0.0.1:8080", nul, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_origin),
        cmocka_unit_test(test_same_origin),
        cmocka_unit_test(test_default_ports),
        cmocka_unit_test(test_other_origins),
        cmocka_unit_test(test_tricks),
        cmocka_unit_test(test_allow_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
