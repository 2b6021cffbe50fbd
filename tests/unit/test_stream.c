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

/* A stream `s` over the failer processor with `option` (stage or
 * undoable) on, its cache L1 + L3. */
typedef struct rig {
    char pfx[48];
    sophia_diag d;
    sophia_conf *c;
    sophia_plugin_set *ps;
    struct event_base *base;
    sophia_cache *cache;
    sophia_streams *ss;
    sophia_stream *st;
    sophia_host_rt *rt; /* what the plugins are loaded with */
} rig;

static void rig_up_stream(rig *r, const char *option, const char *stream_extra)
{
    char yaml[1024];
    snprintf(r->pfx, sizeof(r->pfx), "ts%d:%ld:%s:", (int)getpid(),
             (long)time(NULL), option);
    snprintf(yaml, sizeof(yaml),
             "plugins:\n"
             "  path: [\"%s\"]\n"
             "  instances:\n"
             "    f: {plugin: failer, options: {%s: yes, sleep: no, "
             "cache_prefix: \"%s\"}}\n"
             "streams:\n"
             "  s: {processor: f%s}\n",
             SOPHIA_TEST_PLUGIN_DIR "/../test-plugins", option, r->pfx,
             stream_extra);
    sophia_diag_init(&r->d);
    r->c = sophia_conf_load_string("/tmp/t.yaml", yaml, strlen(yaml), &r->d);
    sophia_diag_print(&r->d, stderr);
    assert_non_null(r->c);
    free(r->c->pg_url);
    r->c->pg_url = strdup(env_url("SOPHIA_PG_URL"));
    free(r->c->redis_url);
    r->c->redis_url = NULL; /* L1 + L3: every put waits for PostgreSQL */
    /* Plugins first: they are tried in a child process (fork), before
     * this process holds any connection. */
    assert_int_equal(sophia_plugin_system_init(), 0);
    r->rt = sophia_host_rt_new();
    assert_non_null(r->rt);
    r->ps = sophia_plugin_set_load(r->c, sophia_host_rt_table(r->rt), &r->d);
    sophia_diag_print(&r->d, stderr);
    assert_non_null(r->ps);
    r->base = event_base_new();
    r->cache = sophia_cache_new(r->c, r->base);
    assert_non_null(r->cache);
    run_until(r->base, tiers_up, r->cache, 15000, "L3 up");
    sophia_host_set_env(r->rt, &(sophia_host_env){.cache = r->cache});
    r->ss = sophia_streams_new(r->c, r->ps, NULL, r->base, &r->d);
    assert_int_equal(r->d.count, 0);
    r->st = sophia_streams_find(r->ss, "s");
}

static void rig_up(rig *r, const char *option)
{
    rig_up_stream(r, option, "");
}

static void rig_down(rig *r)
{
    sophia_streams_free(r->ss);
    sophia_host_set_env(r->rt, NULL);
    sophia_cache_free(r->cache);
    sophia_plugin_set_free(r->ps);
    sophia_host_rt_free(r->rt);
    sophia_conf_free(r->c);
    sophia_diag_free(&r->d);
    event_base_free(r->base);
}

/* Queues events e0..e19 before the loop runs; `retry_once` marks e5. */
static void queue_20(rig *r, acks *a, int retry_once)
{
    char id[16];
    for (int i = 0; i < 20; i++) {
        json_t *ev = json_pack("{s:i}", "n", i);
        if (retry_once && i == 5)
            json_object_set_new(ev, "retry_once", json_true());
        snprintf(id, sizeof(id), "e%d", i);
        assert_int_equal(sophia_stream_accept_one(r->st, ev, "test", id, on_ack, a), 0);
        json_decref(ev);
    }
}

/* Every event acked in order, in L3 before its ack, and each saw exactly
 * the events before it committed. */
static void assert_committed_in_order(rig *r, acks *a)
{
    run_until(r->base, all_acked, a, 15000, "20 events acked");
    PGconn *pg = PQconnectdb(env_url("SOPHIA_PG_URL"));
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    for (int i = 0; i < 20; i++) {
        char key[96], id[16];
        snprintf(id, sizeof(id), "e%d", i);
        assert_string_equal(a->order[i], id);
        snprintf(key, sizeof(key), "%s%d", r->pfx, i);
        char *v = l3_value(pg, key);
        assert_non_null(v);
        json_t *j = json_loads(v, 0, NULL);
        assert_int_equal(json_integer_value(json_object_get(j, "seen")), i);
        json_decref(j);
        free(v);
    }
    PQfinish(pg);
    sophia_stream_stats s;
    sophia_stream_get_stats(r->st, &s);
    assert_int_equal(s.processed, 20);
    assert_int_equal(s.inflight, 0);
}

static void test_staged_events_in_order(void **u)
{
    (void)u;
    rig r;
    rig_up(&r, "stage");
    acks a = {.st = r.st};
    queue_20(&r, &a, 0);
    /* While the first event's put waits for L3, nothing else starts: at
     * most one is ever in flight (a fast PostgreSQL may already have
     * committed it within this pass, so the queue may be one shorter). */
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    sophia_stream_stats s;
    sophia_stream_get_stats(r.st, &s);
    assert_true(s.inflight <= 1);
    assert_int_equal(s.queued + s.inflight + s.processed, 20);
    assert_committed_in_order(&r, &a);
    rig_down(&r);
}

/* State changed with stage_undoable: the stream does not wait for one
 * event's puts before the next process(), and a RETRY undoes the retried
 * event's change, so every event still sees exactly the ones before it. */
static void test_undoable_events_overlap(void **u)
{
    (void)u;
    rig r;
    rig_up(&r, "undoable");
    acks a = {.st = r.st};
    queue_20(&r, &a, 1);
    /* One pass: e0..e4 start in one drain, before any PostgreSQL answer
     * can be read (with stage only e0 would have), then e5's RETRY pauses
     * the stream; later in the pass an answer may commit one. */
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    sophia_stream_stats s;
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.queued, 15);
    assert_int_equal(s.inflight + s.processed, 5);
    assert_committed_in_order(&r, &a);
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.retried, 1);
    rig_down(&r);
}

static bool n_acked(void *arg)
{
    return ((acks *)arg)->n == 2;
}

/* Two copies of one event, the second arriving while the first is in
 * flight: it waits, and is a duplicate once the first committed (without
 * the wait both would be processed: neither had committed when the other
 * was checked). */
static void test_twin_waits_for_in_flight(void **u)
{
    (void)u;
    rig r;
    rig_up_stream(&r, "undoable", ", dedup_key: id");
    acks a = {.st = r.st};
    for (int i = 0; i < 2; i++) {
        json_t *ev = json_pack("{s:i, s:s}", "n", 0, "id", "twin");
        assert_int_equal(sophia_stream_accept_one(r.st, ev, "test", "e", on_ack, &a), 0);
        json_decref(ev);
    }
    run_until(r.base, n_acked, &a, 15000, "both copies acked");
    sophia_stream_stats s;
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.processed, 1);
    assert_int_equal(s.duplicates, 1);
    rig_down(&r);
}

/* A reload replacing the processor while events are in flight: they go
 * back to the queue, their changes undone, so the state the old instance
 * would hand over holds only committed events, and each is processed
 * again (here by the same instance: it must see the count it had). */
static void test_recall_before_hand_over(void **u)
{
    (void)u;
    rig r;
    rig_up(&r, "undoable");
    acks a = {.st = r.st};
    queue_20(&r, &a, 0);
    /* All 20 start in one drain; a fast PostgreSQL may commit some
     * before the loop goes idle (it runs every callback that becomes
     * active), the rest are in flight. */
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    sophia_stream_stats s;
    sophia_stream_get_stats(r.st, &s);
    size_t flying = s.inflight;
    sophia_plugin_set *next = sophia_plugin_set_load(r.c, sophia_host_rt_table(r.rt),
                                                     &r.d);
    assert_non_null(next);
    sophia_streams_recall(r.ss, r.ps); /* the same instance: nothing moves */
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.inflight, flying);
    sophia_streams_recall(r.ss, next);
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.inflight, 0);
    assert_int_equal(s.queued + s.processed, 20);
    assert_committed_in_order(&r, &a);
    sophia_plugin_set_free(next);
    rig_down(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_bound_and_readd),
        cmocka_unit_test(test_staged_events_in_order),
        cmocka_unit_test(test_undoable_events_overlap),
        cmocka_unit_test(test_twin_waits_for_in_flight),
        cmocka_unit_test(test_recall_before_hand_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
