/*
 * test_ws_config - the websocket: and cluster: sections of sophia.yaml:
 * every key parsed with its unit, defaults, and clear errors for bad
 * values (positions included).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf/config.h"

static sophia_conf *load(const char *yaml, sophia_diag *d)
{
    sophia_diag_init(d);
    sophia_conf *c = sophia_conf_load_string("t.yaml", yaml, strlen(yaml), d);
    assert_non_null(c);
    sophia_conf_validate(c, d);
    return c;
}

static void test_all_keys(void **state)
{
    (void)state;
    sophia_diag d;
    sophia_conf *c = load("websocket:\n"
                          "  history: 16\n"
                          "  history_age: 2m\n"
                          "  ping_interval: 250ms\n"
                          "  pong_timeout: 3s\n"
                          "  auth_timeout: 1s\n"
                          "  max_connections: 50\n"
                          "  max_subscriptions: 8\n"
                          "  max_message: 4KiB\n"
                          "  coalesce_at: 10\n"
                          "  origins: [\"https://a.example\", \"https://b.example\"]\n"
                          "  max_topics: 500\n"
                          "  jwt:\n"
                          "    require_exp: false\n"
                          "    issuer: https://id.example\n"
                          "    audience: sophia\n"
                          "cluster:\n"
                          "  redis: redis://127.0.0.1:6379/0\n"
                          "  node_id: n1\n",
                          &d);
    assert_int_equal(d.count, 0);
    assert_int_equal(c->ws.history, 16);
    assert_true(c->ws.history_age == 120.0);
    assert_true(c->ws.ping_interval == 0.25);
    assert_true(c->ws.pong_timeout == 3.0);
    assert_true(c->ws.auth_timeout == 1.0);
    assert_int_equal(c->ws.max_connections, 50);
    assert_int_equal(c->ws.max_subscriptions, 8);
    assert_int_equal(c->ws.max_message, 4096);
    assert_int_equal(c->ws.coalesce_at, 10);
    assert_int_equal(c->ws.norigins, 2);
    assert_string_equal(c->ws.origins[1], "https://b.example");
    assert_int_equal(c->ws.max_topics, 500);
    assert_int_equal(c->ws.jwt_require_exp, 0);
    assert_string_equal(c->ws.jwt_issuer, "https://id.example");
    assert_string_equal(c->ws.jwt_audience, "sophia");
    assert_string_equal(c->cluster.redis, "redis://127.0.0.1:6379/0");
    assert_string_equal(c->cluster.node_id, "n1");
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

static void test_defaults(void **state)
{
    (void)state;
    sophia_diag d;
    sophia_conf *c = load("log:\n  level: info\n", &d);
    assert_int_equal(d.count, 0);
    assert_true(c->ws.ping_interval == 25.0);
    assert_int_equal(c->ws.max_subscriptions, 256);
    assert_int_equal(c->ws.max_message, 64 * 1024);
    assert_int_equal(c->ws.max_topics, 100000);
    assert_int_equal(c->ws.jwt_require_exp, 1);
    assert_null(c->ws.jwt_issuer);
    assert_null(c->ws.jwt_audience);
    assert_null(c->cluster.redis);
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

static void test_errors(void **state)
{
    (void)state;
    sophia_diag d;
    sophia_conf *c = load("websocket:\n"
                          "  origins: https://a.example\n"
                          "  ping_interval: soon\n"
                          "  max_subscriptions: 0\n"
                          "cluster:\n"
                          "  redis: http://x\n"
                          "  nodes: 3\n",
                          &d);
    assert_int_equal(d.count, 5);
    assert_non_null(strstr(d.lines[0], "t.yaml:2:12: websocket.origins: expected a sequence"));
    assert_non_null(strstr(d.lines[1], "t.yaml:3:18: websocket.ping_interval: 'soon' is not a duration"));
    assert_non_null(strstr(d.lines[2], "t.yaml:4:22: websocket.max_subscriptions"));
    /* a bad Redis URL is refused at load, with its position */
    assert_non_null(strstr(d.lines[3], "t.yaml:6:10: cluster.redis: http://x: not a redis:// URL"));
    assert_non_null(strstr(d.lines[4], "unknown key 'nodes' in cluster"));
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_keys),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
