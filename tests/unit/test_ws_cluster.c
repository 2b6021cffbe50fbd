/*
 * test_ws_cluster - the cluster transport against the harness's real
 * Redis: two cluster nodes in one process, an L1 invalidation broadcast
 * by one reaches the other's hook (and not its own), once per key or tag
 * however often a loop turn names it, a malformed URL is
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
#include "ws/ws.h"

typedef struct seen {
    int calls, tags;
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
    s->tags += is_tag != 0;
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

static int got_two(void *arg)
{
    return ((seen *)arg)->calls > 1;
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
    ready_a = sophia_cluster_new(base, url, "unit-a", NULL);
    ready_b = sophia_cluster_new(base, url, "unit-b", NULL);
    assert_non_null(ready_a);
    assert_non_null(ready_b);
    sophia_cluster_on_invalidate(ready_a, hook, &s);
    sophia_cluster_on_invalidate(ready_b, hook, &s);
    run_until(base, both_ready, NULL);
    assert_true(both_ready(NULL));
    /* unit-b sends, in one loop turn, the tag three times and the key of
     * the same name twice: one message each */
    for (int i = 0; i < 3; i++)
        assert_int_equal(sophia_cluster_broadcast_invalidate(ready_b, s.want, 1), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(sophia_cluster_broadcast_invalidate(ready_b, s.want, 0), 0);
    run_until(base, got_two, &s);
    struct timeval tv = {0, 100000}; /* and nothing more arrives */
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    assert_int_equal(s.calls, 2); /* unit-a got them; unit-b skipped its own */
    assert_int_equal(s.tags, 1);
    assert_string_equal(s.what, s.want);
    assert_int_equal(s.is_tag, 0); /* in the order first named */
    sophia_cluster_free(ready_b);
    assert_int_equal(sophia_cluster_broadcast_invalidate(NULL, "k", 0), -1);
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

/* What the cluster handed its sink: the router's side, recorded. */
typedef struct sunk {
    int routes, seq_asks;
    char type[32], topic[64];
    uint64_t seq;
    size_t ntopics;
} sunk;

static void sink_route(void *arg, const char *type, const char *const *topics,
                       const uint64_t *seqs, size_t ntopics,
                       const char *dashboard_id, json_t *data)
{
    sunk *k = arg;
    (void)dashboard_id;
    (void)data;
    if (strcmp(topics[0], k->topic) != 0)
        return; /* another test's publish on the shared Redis */
    k->routes++;
    k->ntopics = ntopics;
    k->seq = seqs[0];
    snprintf(k->type, sizeof(k->type), "%s", type);
}

static uint64_t sink_topic_seq(void *arg, const char *topic)
{
    sunk *k = arg;
    if (strcmp(topic, k->topic) == 0)
        k->seq_asks++;
    return 0;
}

static int routed(void *arg)
{
    return ((sunk *)arg)->routes > 0;
}

static int one_ready(void *arg)
{
    return sophia_cluster_ready(arg);
}

/* A publish comes back from the channel to the sink the router gave,
 * with the seq Redis assigned; the sink was asked for the seq floor. */
static void test_publish_reaches_sink(void **state)
{
    (void)state;
    const char *url = getenv("SOPHIA_REDIS_URL");
    assert_non_null(url);
    struct event_base *base = event_base_new();
    sunk k = {0};
    snprintf(k.topic, sizeof(k.topic), "unit:sink:%d", (int)getpid());
    sophia_cluster_sink sink = {sink_route, sink_topic_seq, &k};
    sophia_cluster *c = sophia_cluster_new(base, url, "unit-sink", &sink);
    assert_non_null(c);
    run_until(base, one_ready, c);
    assert_true(sophia_cluster_ready(c));
    const char *topics[] = {k.topic};
    json_t *data = json_pack("{s:i}", "value", 7);
    assert_int_equal(sophia_cluster_publish(c, "metric", topics, 1, NULL, data), 0);
    json_decref(data);
    run_until(base, routed, &k);
    assert_int_equal(k.routes, 1);
    assert_int_equal(k.seq_asks, 1);
    assert_int_equal(k.ntopics, 1);
    assert_string_equal(k.type, "metric");
    assert_true(k.seq > 0);
    sophia_cluster_free(c);
    event_base_free(base);
}

typedef struct called {
    int n;
    uint64_t client;
    sophia_ws_router *r;
} called;

static void method(sophia_ws_router *r, uint64_t client, const char *id,
                   json_t *params, void *arg)
{
    called *k = arg;
    (void)id;
    (void)params;
    k->n++;
    k->client = client;
    k->r = r;
}

static const char request[] =
    "{\"type\":\"request\",\"id\":\"r1\",\"method\":\"cache.get\","
    "\"params\":{\"key\":\"k\"}}";

/* Methods belong to the router they were registered with. */
static void test_methods(void **state)
{
    (void)state;
    called k = {0};
    sophia_ws_router *a = sophia_ws_router_new(NULL, NULL, 0);
    sophia_ws_router *b = sophia_ws_router_new(NULL, NULL, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(sophia_ws_register_method(a, "cache.get", method, &k), 0);
    assert_int_equal(sophia_ws_register_method(a, "cache.get", method, &k), -1);
    assert_int_equal(sophia_ws_register_method(a, "history", method, &k), -1);
    assert_int_equal(sophia_ws_register_method(a, "latest", method, &k), -1);
    assert_int_equal(sophia_ws_register_method(NULL, "x", method, &k), -1);
    assert_int_equal(sophia_ws_register_method(a, "stats", method, &k), 0);
    sophia_ws_unregister_method(a, "stats");

    sophia_ws_client *ca = sophia_ws_open(a, NULL), *cb = sophia_ws_open(b, NULL);
    sophia_ws_feed(cb, request, strlen(request));
    assert_int_equal(k.n, 0); /* b has no cache.get: unknown_method */
    assert_int_equal(sophia_ws_queued(cb), 1);
    sophia_ws_feed(ca, request, strlen(request));
    assert_int_equal(k.n, 1);
    assert_ptr_equal(k.r, a);
    assert_int_equal(sophia_ws_queued(ca), 0); /* the method answers */
    assert_int_equal(sophia_ws_respond(a, k.client, "r1", json_object()), 0);
    assert_int_equal(sophia_ws_queued(ca), 1);

    sophia_ws_unregister_method(a, "cache.get");
    assert_int_equal(sophia_ws_register_method(a, "cache.get", method, &k), 0);
    /* answers to clients that are gone (or never were) are dropped */
    assert_int_equal(sophia_ws_respond(a, 42, "r1", json_object()), -1);
    assert_int_equal(sophia_ws_respond_error(a, 42, "r1", "x", "y"), -1);
    assert_int_equal(sophia_ws_respond(NULL, 1, "r1", json_object()), -1);
    sophia_ws_closed(ca);
    sophia_ws_closed(cb);
    sophia_ws_router_free(a);
    sophia_ws_router_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalidation_reaches_other_node),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_publish_reaches_sink),
        cmocka_unit_test(test_methods),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
