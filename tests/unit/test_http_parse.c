/*
 * test_http_parse - the request head and chunked decoder of http_parse.h:
 * what must parse, what RFC 9112 says a server must refuse (the request
 * smuggling shapes above all), and a chunked body fed one byte at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http/http_parse.h"

static char buf[32768];
static char err[160];
static sophia_http_head h;

static int parse(const char *head)
{
    size_t n = strlen(head);
    memcpy(buf, head, n + 1);
    return sophia_http_head_parse(buf, n, &h, err, sizeof(err));
}

static void test_simple_get(void **state)
{
    (void)state;
    assert_int_equal(parse("GET /api/cache/a%20b?x=1 HTTP/1.1\r\n"
                           "Host: 127.0.0.1:8080\r\nX-Thing:   spaced  \r\n\r\n"), 0);
    assert_int_equal(h.method, SOPHIA_HTTP_GET);
    assert_string_equal(h.target, "/api/cache/a%20b?x=1");
    assert_int_equal(h.minor, 1);
    assert_int_equal(h.content_length, -1);
    assert_true(h.keep_alive);
    assert_string_equal(sophia_http_head_get(&h, "host"), "127.0.0.1:8080");
    assert_string_equal(sophia_http_head_get(&h, "x-thing"), "spaced");
    assert_null(sophia_http_head_get(&h, "content-type"));
}

static void test_framing(void **state)
{
    (void)state;
    assert_int_equal(parse("POST /i HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"), 0);
    assert_int_equal(h.content_length, 12);
    assert_int_equal(parse("POST /i HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"), 0);
    assert_true(h.chunked);
    assert_int_equal(parse("GET / HTTP/1.0\r\n\r\n"), 0);
    assert_false(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0);
    assert_true(h.keep_alive);
    assert_int_equal(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"), 0);
    assert_false(h.keep_alive);
    assert_int_equal(parse("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                           "Upgrade: websocket\r\n\r\n"), 0);
    assert_true(h.upgrade_ws);
    assert_int_equal(parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"), 0);
    assert_true(h.expect_continue);
    /* Leading empty lines between pipelined requests are skipped. */
    assert_int_equal(parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
}

static void test_smuggling_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *head;
        int status;
    } bad[] = {
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400},
        {"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = parse(bad[i].head);
        if (st != bad[i].status)
            fail_msg("case %zu: got %d (%s), want %d", i, st, err, bad[i].status);
        assert_true(err[0] != '\0');
    }
}

static void test_limits_and_forms(void **state)
{
    (void)state;
    char big[SOPHIA_HTTP_MAX_TARGET + 64];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    snprintf(big + SOPHIA_HTTP_MAX_TARGET + 10, 40, " HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(parse(big), 414);
    char many[8192] = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < SOPHIA_HTTP_MAX_HEADERS; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "X-%d: v\r\n", i);
    strcat(many, "\r\n");
    assert_int_equal(parse(many), 431);
    assert_int_equal(parse("GET http://Example.com:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n"), 0);
    assert_string_equal(h.authority, "Example.com:81");
    assert_string_equal(h.target, "/p?q");
    assert_int_equal(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(h.method, SOPHIA_HTTP_OPTIONS);
    assert_int_equal(parse("BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(h.method, SOPHIA_HTTP_OTHER);
}

static void test_pct_decode(void **state)
{
    (void)state;
    char s[64];
    size_t n;
    strcpy(s, "a%41%2541+b");
    n = strlen(s);
    assert_int_equal(sophia_http_pct_decode(s, &n, 0), 0);
    assert_string_equal(s, "aA%41+b"); /* once, and '+' kept in paths */
    strcpy(s, "q=a+b%2Bc");
    n = strlen(s);
    assert_int_equal(sophia_http_pct_decode(s, &n, 1), 0);
    assert_string_equal(s, "q=a b+c");
    strcpy(s, "v%0d%0aX");
    n = strlen(s);
    assert_int_equal(sophia_http_pct_decode(s, &n, 0), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(s, "v\r\nX", 4);
    const char *bad[] = {"a%00b", "a%zz", "a%4", "%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        strcpy(s, bad[i]);
        n = strlen(s);
        assert_int_equal(sophia_http_pct_decode(s, &n, 0), -1);
    }
}

/* Feeds `in` to a fresh decoder `step` bytes at a time. */
static int chunked(const char *in, size_t step, char *out, size_t *out_len,
                   size_t *consumed)
{
    sophia_http_chunked c = {0};
    size_t len = strlen(in), at = 0;
    int rc = 0;
    *out_len = 0;
    while (at < len && rc == 0) {
        size_t n = len - at < step ? len - at : step, used = 0;
        rc = sophia_http_chunked_feed(&c, in + at, n, &used, out, out_len);
        at += used;
    }
    *consumed = at;
    return rc;
}

static void test_chunked(void **state)
{
    (void)state;
    const char *body = "5;name=v\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                       "0\r\nTrailer: x\r\n\r\nGET /next";
    char out[128];
    size_t olen, used;
    for (size_t step = 1; step <= strlen(body); step++) {
        assert_int_equal(chunked(body, step, out, &olen, &used), 1);
        assert_int_equal(olen, 31);
        assert_memory_equal(out, "helloabcdefghijklmnopqrstuvwxyz", 31);
        /* it stops at the end of the body: the next request is not eaten */
        assert_string_equal(body + used, "GET /next");
    }
    const char *bad[] = {"x\r\n", "5\r\nhelloX\r\n", "5\nhello\r\n", ";\r\n",
                         "FFFFFFFFFFFFFFFFF\r\n", "5\r\nhello\r\n0\r\nbad\n\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(chunked(bad[i], 1, out, &olen, &used), -1);
    assert_int_equal(chunked("5\r\nhel", 2, out, &olen, &used), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_smuggling_shapes),
        cmocka_unit_test(test_limits_and_forms),
        cmocka_unit_test(test_pct_decode),
        cmocka_unit_test(test_chunked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
