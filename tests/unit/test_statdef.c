/*
 * test_statdef - one declaration per figure: the HTTP table written as
 * /api/stats JSON and as /metrics text is byte for byte what the two
 * hand-written serializers it replaced produced (kept below as the
 * reference), with and without outer labels, for distinct values so a
 * swapped offset shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http.h"
#include "lib/statdef.h"


static const sophia_http_stats H = {
    .connections = 4, .connections_refused = 5, .body_bytes = 6,
    .refused = 3, .upgrades = 7, .requests = 1, .errors = 2,
    .tls_handshakes_ok = 8, .tls_handshakes_failed = 9};

/* The /api/stats "http" object as api.c built it by hand. */
static json_t *old_json(const sophia_http_stats *h)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "requests",
                     (json_int_t)h->requests, "errors", (json_int_t)h->errors,
                     "refused", (json_int_t)h->refused, "connections",
                     (json_int_t)h->connections, "connections_refused",
                     (json_int_t)h->connections_refused, "body_bytes",
                     (json_int_t)h->body_bytes, "upgrades", (json_int_t)h->upgrades,
                     "tls_handshakes_ok", (json_int_t)h->tls_handshakes_ok,
                     "tls_handshakes_failed", (json_int_t)h->tls_handshakes_failed);
}

/* The sophia_http_* lines of /metrics as api.c wrote them by hand. */
static const char OLD_PROM[] =
    "# HELP sophia_http_requests_total HTTP requests answered.\n"
    "# TYPE sophia_http_requests_total counter\n"
    "sophia_http_requests_total 1\n"
    "# HELP sophia_http_errors_total HTTP requests answered 4xx or 5xx.\n"
    "# TYPE sophia_http_errors_total counter\n"
    "sophia_http_errors_total 2\n"
    "# HELP sophia_http_refused_total HTTP requests refused from their head, "
    "before any body byte was read.\n"
    "# TYPE sophia_http_refused_total counter\n"
    "sophia_http_refused_total 3\n"
    "# HELP sophia_http_connections Open HTTP connections (WebSockets not included).\n"
    "# TYPE sophia_http_connections gauge\n"
    "sophia_http_connections 4\n"
    "# HELP sophia_http_connections_refused_total Connections refused over "
    "server.max_connections.\n"
    "# TYPE sophia_http_connections_refused_total counter\n"
    "sophia_http_connections_refused_total 5\n"
    "# HELP sophia_http_body_bytes Request body bytes buffered right now "
    "(bounded by server.max_body_total).\n"
    "# TYPE sophia_http_body_bytes gauge\n"
    "sophia_http_body_bytes 6\n"
    "# HELP sophia_http_tls_handshakes_total server.tls connections whose "
    "handshake completed (ok) or that closed before (failed).\n"
    "# TYPE sophia_http_tls_handshakes_total counter\n"
    "sophia_http_tls_handshakes_total{result=\"ok\"} 8\n"
    "sophia_http_tls_handshakes_total{result=\"failed\"} 9\n";

static char *prom(const sophia_statdef *d, size_t n, const void *st,
                  const char *labels)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sophia_statdef_prom(f, d, n, st, labels);
    fclose(f);
    return buf;
}

static void test_http_json_unchanged(void **u)
{
    (void)u;
    json_t *a = old_json(&H);
    json_t *b = sophia_statdef_json(sophia_http_statdefs, sophia_http_nstatdefs, &H);
    char *sa = json_dumps(a, JSON_COMPACT), *sb = json_dumps(b, JSON_COMPACT);
    assert_string_equal(sa, sb); /* same keys, values and order */
    free(sa);
    free(sb);
    json_decref(a);
    json_decref(b);
}

static void test_http_prom_unchanged(void **u)
{
    (void)u;
    char *p = prom(sophia_http_statdefs, sophia_http_nstatdefs, &H, NULL);
    assert_string_equal(p, OLD_PROM);
    free(p);
}

static void test_outer_labels(void **u)
{
    (void)u;
    typedef struct { uint64_t a, b, c; } S;
    static const sophia_statdef d[] = {
        {"a", "x_total", "counter", NULL, "A.", offsetof(S, a)},
        {"b", "y_total", "counter", "k=\"1\"", "B.", offsetof(S, b)},
        {"c", "y_total", "counter", "k=\"2\"", NULL, offsetof(S, c)},
    };
    S s = {10, 20, 30};
    char *p = prom(d, 3, &s, "stream=\"s\"");
    assert_string_equal(p, "# HELP x_total A.\n# TYPE x_total counter\n"
                           "x_total{stream=\"s\"} 10\n"
                           "# HELP y_total B.\n# TYPE y_total counter\n"
                           "y_total{stream=\"s\",k=\"1\"} 20\n"
                           "y_total{stream=\"s\",k=\"2\"} 30\n");
    free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_json_unchanged),
        cmocka_unit_test(test_http_prom_unchanged),
        cmocka_unit_test(test_outer_labels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
