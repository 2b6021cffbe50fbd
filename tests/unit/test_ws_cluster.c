/*
 * test_ws_cluster - the cluster transport against the harness's real
 * Redis: two cluster nodes in one process, an L1 invalidation broadcast
 * by one reaches the other's hook (and not its own), a malformed URL is
 * refused, and method registration rules. Needs SOPHIA_REDIS_URL (the
 * harness exports it; this test fails rather than skips without it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "cluster/cluster.h"
#include "daemon/server.h"
#include "ws/ws.h"

sophia_server *sophia_srv; /* unit tests run without a server */

typedef struct seen {
    int calls;
    char what[64];
    int is_tag;
    char want[64]; /* only this one counts */
} seen;

/* Daemons of the integration tests may share the Redis (they are a
 * cluster by default): what they invalidate is not ours to count. */
static void hook(const char *key_or_tag, int is_tag, void *arg)
{
    seen *s = arg;
    if (strcmp(key_or_tag, s->want) != 0)
        return;
    s->calls++;
    snprintf(s->what, sizeof(s->what), "%s", key_or_tag);
    s->is_tag = is_tag;
}

static void run_until(struct event_base *base, int (*done)(void *), void *arg)
{
    for (int i = 0; i < 300 && !done(arg); i++) {
        struct timeval tv = {0, 10000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

static sophia_cluster *ready_a, *ready_b;
static int both_ready(void *arg)
{
    (void)arg;
    return sophia_cluster_ready(ready_a) && sophia_cluster_ready(ready_b);
}

static int got_one(void *arg)
{
    return ((seen *)arg)->calls > 0;
}

static void test_invalidation_reaches_other_node(void **state)
{
    (void)state;
    const char *url = getenv("SOPHIA_REDIS_URL");
    assert_non_null(url);
    assert_true(*url);
    struct event_base *base = event_base_new();
    seen s = {0};
    snprintf(s.want, sizeof(s.want), "user_data_%d", (int)getpid());
    sophia_cluster_on_invalidate(hook, &s);
    ready_a = sophia_cluster_new(base, url, "unit-a", NULL);
    ready_b = sophia_cluster_new(base, url, "unit-b", NULL);
    assert_non_null(ready_a);
    assert_non_null(ready_b);
    run_until(base, both_ready, NULL);
    assert_true(both_ready(NULL));
    /* the newest node is the one the cache talks to: unit-b sends */
    assert_int_equal(sophia_cluster_broadcast_invalidate(s.want, 1), 0);
    run_until(base, got_one, &s);
    struct timeval tv = {0, 100000}; /* and nothing more arrives */
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    assert_int_equal(s.calls, 1); /* unit-a got it; unit-b skipped its own */
    assert_string_equal(s.what, s.want);
    assert_int_equal(s.is_tag, 1);
    sophia_cluster_on_invalidate(NULL, NULL);
    sophia_cluster_free(ready_b);
    assert_int_equal(sophia_cluster_broadcast_invalidate("k", 0), -1);
    sophia_cluster_free(ready_a);
    event_base_free(base);
}

static void test_bad_url(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_null(sophia_cluster_new(base, "http://nope", NULL, NULL));
    event_base_free(base);
}

static void method(uint64_t client, const char *id, json_t *params, void *arg)
{
    (void)client;
    (void)id;
    (void)params;
    (void)arg;
}

static void test_methods(void **state)
{
    (void)state;
    assert_int_equal(sophia_ws_register_method("cache.get", method, NULL), 0);
    assert_int_equal(sophia_ws_register_method("cache.get", method, NULL), -1);
    assert_int_equal(sophia_ws_register_method("stats", method, NULL), -1);
    assert_int_equal(sophia_ws_register_method("history", method, NULL), -1);
    sophia_ws_unregister_method("cache.get");
    assert_int_equal(sophia_ws_register_method("cache.get", method, NULL), 0);
    sophia_ws_unregister_method("cache.get");
    /* answers to clients that are gone (or never were) are dropped */
    assert_int_equal(sophia_ws_respond(42, "r1", json_object()), -1);
    assert_int_equal(sophia_ws_respond_error(42, "r1", "x", "y"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalidation_reaches_other_node),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
