/*
 * test_router - the HTTP route table: exact paths beat prefixes, longer
 * prefixes beat shorter ones, methods filter, the first of equals wins,
 * and an unmatched request finds nothing (so the front door answers 404).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http/router.h"


static void h_a(sophia_http_req *r, void *arg) { (void)r; (void)arg; }

static int tags[6]; /* each route's arg: the index says which matched */

static sophia_http_router *table(void)
{
    const sophia_http_route routes[] = {
        {SOPHIA_HTTP_GET, "/api/stats", 0, h_a, NULL, &tags[0]},
        {SOPHIA_HTTP_ANY, "/api/", SOPHIA_ROUTE_PREFIX, h_a, NULL, &tags[1]},
        {SOPHIA_HTTP_ANY, "/api/cache/", SOPHIA_ROUTE_PREFIX, h_a, NULL, &tags[2]},
        {SOPHIA_HTTP_GET, "/", SOPHIA_ROUTE_PREFIX, h_a, NULL, &tags[3]},
        {SOPHIA_HTTP_POST, "/hooks/gong", 0, h_a, NULL, &tags[4]},
        {SOPHIA_HTTP_POST, "/hooks/gong", 0, h_a, NULL, &tags[5]},
    };
    sophia_http_router *rt = sophia_http_router_new();
    assert_non_null(rt);
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        assert_int_equal(sophia_http_route_add(rt, &routes[i]), 0);
    return rt;
}

static int tag(const sophia_http_router *rt, sophia_http_method m,
               const char *path)
{
    const sophia_http_route *r = sophia_http_router_match(rt, m, path);
    return r ? (int)((const int *)r->arg - tags) : -1;
}

static void test_match(void **u)
{
    (void)u;
    sophia_http_router *rt = table();
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/api/stats"), 0);
    /* the exact route is GET only: a POST falls to the /api/ prefix */
    assert_int_equal(tag(rt, SOPHIA_HTTP_POST, "/api/stats"), 1);
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/api/statsX"), 1);
    /* the longer prefix wins, whatever the order of registration */
    assert_int_equal(tag(rt, SOPHIA_HTTP_DELETE, "/api/cache/k"), 2);
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/api/cache/"), 2);
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/api/cache"), 1);
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/index.html"), 3);
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/"), 3);
    /* the first of two equal routes */
    assert_int_equal(tag(rt, SOPHIA_HTTP_POST, "/hooks/gong"), 4);
    /* nothing takes these: 404 */
    assert_int_equal(tag(rt, SOPHIA_HTTP_PUT, "/hooks/gong"), -1);
    assert_int_equal(tag(rt, SOPHIA_HTTP_POST, "/"), -1);
    assert_int_equal(tag(rt, SOPHIA_HTTP_GET, "/hooks/gong"), 3);
    sophia_http_router_free(rt);
}

static void test_empty(void **u)
{
    (void)u;
    sophia_http_router *rt = sophia_http_router_new();
    assert_null(sophia_http_router_match(rt, SOPHIA_HTTP_GET, "/"));
    assert_null(sophia_http_router_match(NULL, SOPHIA_HTTP_GET, "/"));
    sophia_http_router_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
