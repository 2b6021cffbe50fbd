/*
 * test_stream - the dedup window streams and the Slack hook share: ids
 * seen inside the window, expiry by time, the size bound, re-adds; and
 * the commit pipeline on a real cache (Redis + PostgreSQL from the test
 * harness): events whose processor stages state are applied one after
 * another, each seeing every earlier change, and acknowledged only once
 * their write-through put is committed in L3.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <unistd.h>

#include "cache/cache.h"
#include "host/host.h"
#include "ingest/stream.h"
#include "lib/redis_url.h"

#include "../common/loop_wait.h"


static void test_window(void **u)
{
    (void)u;
    sophia_dedup *d = sophia_dedup_new(10, 100);
    int64_t t = 1000000000;
    assert_false(sophia_dedup_seen(d, "a", t));
    sophia_dedup_add(d, "a", t);
    assert_true(sophia_dedup_seen(d, "a", t + 9999999));
    assert_false(sophia_dedup_seen(d, "a", t + 10000000));
    assert_int_equal(sophia_dedup_size(d), 0);
    sophia_dedup_free(d);
}

static void test_bound_and_readd(void **u)
{
    (void)u;
    sophia_dedup *d = sophia_dedup_new(3600, 3);
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "e%d", i);
        sophia_dedup_add(d, id, 1);
    }
    assert_int_equal(sophia_dedup_size(d), 3);
    assert_false(sophia_dedup_seen(d, "e0", 2));
    assert_true(sophia_dedup_seen(d, "e4", 2));
    /* a re-add refreshes the id; the old node expiring must not drop it */
    sophia_dedup *w = sophia_dedup_new(10, 100);
    sophia_dedup_add(w, "x", 0);
    sophia_dedup_add(w, "x", 5000000);
    assert_true(sophia_dedup_seen(w, "x", 12000000));
    assert_false(sophia_dedup_seen(w, "x", 15000000));
    sophia_dedup_free(w);
    sophia_dedup_free(d);
}

/* ------------------------------------------- ordering with staged state */

static const char *env_url(const char *name)
{
    const char *u = getenv(name);
    if (!u || !*u)
        fail_msg("%s is not set: the test harness exports it (a throwaway "
                 "server); this test does not skip without it", name);
    return u;
}

typedef struct acks {
    int n;
    char order[64][16];
    sophia_stream *st;
} acks;

static void on_ack(void *arg, const char *id, const json_t *body,
                   const char *why)
{
    (void)body;
    acks *a = arg;
    assert_null(why);
    snprintf(a->order[a->n++ % 64], 16, "%s", id);
}

static bool all_acked(void *arg)
{
    return ((acks *)arg)->n == 20;
}

static bool tiers_up(void *arg)
{
    const char *e;
    return sophia_cache_l3_state(arg, &e) == 1;
}

/* The value committed in L3 for `key`, or NULL (caller frees). */
static char *l3_value(PGconn *pg, const char *key)
{
    const char *params[] = {key};
    PGresult *r = PQexecParams(pg, "SELECT convert_from(value, 'UTF8') FROM sophia_cache WHERE key = $1",
                               1, NULL, params, NULL, NULL, 0);
    char *v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                  ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

static void test_staged_events_in_order(void **u)
{
    (void)u;
    char pfx[48], yaml[1024];
    snprintf(pfx, sizeof(pfx), "ts%d:%ld:", (int)getpid(), (long)time(NULL));
    snprintf(yaml, sizeof(yaml),
             "plugins:\n"
             "  path: [\"%s\"]\n"
             "  instances:\n"
             "    f: {plugin: failer, options: {stage: yes, sleep: no, "
             "cache_prefix: \"%s\"}}\n"
             "streams:\n"
             "  s: {processor: f}\n",
             SOPHIA_TEST_PLUGIN_DIR "/../test-plugins", pfx);
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *c = sophia_conf_load_string("/tmp/t.yaml", yaml, strlen(yaml), &d);
    sophia_diag_print(&d, stderr);
    assert_non_null(c);
    free(c->pg_url);
    c->pg_url = strdup(env_url("SOPHIA_PG_URL"));
    free(c->redis_url);
    c->redis_url = NULL; /* L1 + L3: every put waits for PostgreSQL */
    /* Plugins first: they are tried in a child process (fork), before
     * this process holds any connection. */
    assert_int_equal(sophia_plugin_system_init(), 0);
    sophia_host_rt *rt = sophia_host_rt_new();
    assert_non_null(rt);
    sophia_plugin_set *ps = sophia_plugin_set_load(c, sophia_host_rt_table(rt),
                                                   &d);
    sophia_diag_print(&d, stderr);
    assert_non_null(ps);
    struct event_base *base = event_base_new();
    sophia_cache *cache = sophia_cache_new(c, base);
    assert_non_null(cache);
    run_until(base, tiers_up, cache, 15000, "L3 up");
    sophia_host_set_env(rt, &(sophia_host_env){cache, NULL, NULL});
    sophia_streams *ss = sophia_streams_new(c, ps, NULL, base, &d);
    assert_int_equal(d.count, 0);
    sophia_stream *st = sophia_streams_find(ss, "s");
    acks a = {.st = st};
    char id[16];
    for (int i = 0; i < 20; i++) { /* all queued before the loop runs */
        json_t *ev = json_pack("{s:i}", "n", i);
        snprintf(id, sizeof(id), "e%d", i);
        assert_int_equal(sophia_stream_accept_one(st, ev, "test", id, on_ack, &a), 0);
        json_decref(ev);
    }
    /* While the first event's put waits for L3, nothing else starts: at
     * most one is ever in flight (a fast PostgreSQL may already have
     * committed it within this pass, so the queue may be one shorter). */
    event_base_loop(base, EVLOOP_NONBLOCK);
    sophia_stream_stats s;
    sophia_stream_get_stats(st, &s);
    assert_true(s.inflight <= 1);
    assert_int_equal(s.queued + s.inflight + s.processed, 20);
    run_until(base, all_acked, &a, 15000, "20 events acked");
    PGconn *pg = PQconnectdb(env_url("SOPHIA_PG_URL"));
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    for (int i = 0; i < 20; i++) {
        char key[96];
        snprintf(id, sizeof(id), "e%d", i);
        assert_string_equal(a.order[i], id); /* acked in order */
        snprintf(key, sizeof(key), "%s%d", pfx, i);
        char *v = l3_value(pg, key); /* in L3 before its ack */
        assert_non_null(v);
        json_t *j = json_loads(v, 0, NULL);
        /* each event saw exactly the events before it committed */
        assert_int_equal(json_integer_value(json_object_get(j, "seen")), i);
        json_decref(j);
        free(v);
    }
    PQfinish(pg);
    sophia_stream_get_stats(st, &s);
    assert_int_equal(s.processed, 20);
    assert_int_equal(s.inflight, 0);
    sophia_streams_free(ss);
    sophia_host_set_env(rt, NULL);
    sophia_cache_free(cache);
    sophia_plugin_set_free(ps);
    sophia_host_rt_free(rt);
    sophia_conf_free(c);
    sophia_diag_free(&d);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_bound_and_readd),
        cmocka_unit_test(test_staged_events_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
