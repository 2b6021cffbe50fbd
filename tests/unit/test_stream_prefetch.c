/*
 * test_stream_prefetch - a stream whose processor has a prefetch (SDK
 * 1.1; the bundled crm) on a real cache (the harness's PostgreSQL as L3,
 * no Redis, so a read that misses L1 waits for PostgreSQL):
 *
 *   - while the head event's read is out, nothing is processed and the
 *     events behind it wait in the queue; then all are processed and
 *     acknowledged in order, and crm took its previous stage from the
 *     record only L3 held (the committed state says so);
 *   - with L3 down a miss is not believed: every delivery is a RETRY, and
 *     after max_attempts the event is dead-lettered, none processed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <stdlib.h>
#include <unistd.h>

#include "cache/cache.h"
#include "host/host.h"
#include "ingest/stream.h"

#include "../common/loop_wait.h"

typedef struct acks {
    int n, dead;
    char order[16][32];
    char why[200];
} acks;

static void on_ack(void *arg, const char *id, const json_t *body,
                   const char *why)
{
    (void)body;
    acks *a = arg;
    snprintf(a->order[a->n++ % 16], 32, "%s", id);
    if (why) {
        a->dead++;
        snprintf(a->why, sizeof(a->why), "%s", why);
    }
}

typedef struct rig {
    char prefix[64];
    sophia_diag d;
    sophia_conf *c;
    sophia_plugin_set *ps;
    struct event_base *base;
    sophia_cache *cache;
    sophia_streams *ss;
    sophia_stream *st;
    acks a;
    sophia_host_rt *rt; /* what the plugins are loaded with */
} rig;

/* crm on stream `s` (2 attempts, short back-off) over L1 + L3 at pg_url. */
static void rig_up(rig *r, const char *pg_url, int want_l3)
{
    char yaml[1024];
    memset(r, 0, sizeof(*r));
    snprintf(r->prefix, sizeof(r->prefix), "tsp%d:%ld:", (int)getpid(),
             (long)time(NULL));
    snprintf(yaml, sizeof(yaml),
             "plugins:\n"
             "  path: [\"%s\"]\n"
             "  instances:\n"
             "    c: {plugin: crm, options: {cache_prefix: \"%s\"}}\n"
             "streams:\n"
             "  s: {processor: c, max_attempts: 2, retry_base: 0.01, "
             "retry_cap: 0.05}\n",
             SOPHIA_TEST_PLUGIN_DIR, r->prefix);
    sophia_diag_init(&r->d);
    r->c = sophia_conf_load_string("/tmp/t.yaml", yaml, strlen(yaml), &r->d);
    sophia_diag_print(&r->d, stderr);
    assert_non_null(r->c);
    free(r->c->pg_url);
    r->c->pg_url = strdup(pg_url);
    free(r->c->redis_url);
    r->c->redis_url = NULL;
    assert_int_equal(sophia_plugin_system_init(), 0);
    r->rt = sophia_host_rt_new();
    assert_non_null(r->rt);
    r->ps = sophia_plugin_set_load(r->c, sophia_host_rt_table(r->rt), &r->d);
    sophia_diag_print(&r->d, stderr);
    assert_non_null(r->ps);
    r->base = event_base_new();
    r->cache = sophia_cache_new(r->c, r->base);
    assert_non_null(r->cache);
    for (int i = 0; i < 750; i++) { /* the first connection settles */
        const char *e;
        if (sophia_cache_l3_state(r->cache, &e) == want_l3)
            break;
        run_for(r->base, 20);
    }
    const char *e;
    assert_int_equal(sophia_cache_l3_state(r->cache, &e), want_l3);
    sophia_host_set_env(r->rt, &(sophia_host_env){.cache = r->cache});
    r->ss = sophia_streams_new(r->c, r->ps, NULL, r->base, &r->d);
    assert_int_equal(r->d.count, 0);
    r->st = sophia_streams_find(r->ss, "s");
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

static void queue_stage(rig *r, int event_id, const char *deal,
                        const char *stage)
{
    char id[32];
    json_t *ev = json_pack("{s:i, s:s, s:s, s:s, s:s}", "eventId", event_id,
                           "subscriptionType", "deal.propertyChange",
                           "objectId", deal, "propertyName", "dealstage",
                           "propertyValue", stage);
    snprintf(id, sizeof(id), "e%d", event_id);
    assert_int_equal(sophia_stream_accept_one(r->st, ev, "test", id, on_ack,
                                              &r->a),
                     0);
    json_decref(ev);
}

static bool acked(void *arg)
{
    return ((acks *)arg)->n >= 3;
}

static bool dead_lettered(void *arg)
{
    return ((acks *)arg)->dead > 0;
}

static void on_put(void *arg, int rc)
{
    *(int *)arg = rc == 0 ? 1 : -1;
}

static bool put_done(void *arg)
{
    return *(int *)arg != 0;
}

static void test_head_waits_for_its_read(void **u)
{
    (void)u;
    rig r;
    const char *pg = getenv("SOPHIA_PG_URL");
    if (!pg || !*pg)
        fail_msg("SOPHIA_PG_URL is not set: the test harness exports it");
    rig_up(&r, pg, 1);
    /* another node committed the deal at "qualified": only L3 has it */
    char key[128];
    const char *rec = "{\"source\":\"hubspot\",\"object\":\"deal\","
                      "\"id\":\"7\",\"stage\":\"qualified\"}";
    snprintf(key, sizeof(key), "%sdeal:hubspot:7", r.prefix);
    int put = 0;
    assert_int_equal(sophia_cache_put_plan(r.cache, key, rec, strlen(rec), 60,
                                           NULL, SOPHIA_TIER_L3, 0,
                                           SOPHIA_TIER_L1, on_put, &put),
                     0);
    run_until(r.base, put_done, &put, 15000, "the record in L3");
    assert_int_equal(put, 1);

    queue_stage(&r, 1, "7", "presentationscheduled");
    queue_stage(&r, 2, "7", "contractsent");
    queue_stage(&r, 3, "7", "closedwon");
    /* One pass: the head's read went to PostgreSQL. While it is out,
     * nothing is processed or in flight and all three wait in the queue.
     * (A pass runs every callback that becomes active in it, so a fast
     * server can answer the read, and the head commit, within the pass -
     * seen once in CI; then there is no waiting state to look at.) */
    event_base_loop(r.base, EVLOOP_NONBLOCK);
    sophia_stream_stats s;
    sophia_stream_get_stats(r.st, &s);
    if (s.processed == 0 && s.inflight == 0)
        assert_int_equal(s.queued, 3);
    assert_int_equal(s.queued + s.inflight + s.processed, 3);

    run_until(r.base, acked, &r.a, 15000, "three events acked");
    assert_int_equal(r.a.dead, 0);
    assert_string_equal(r.a.order[0], "e1");
    assert_string_equal(r.a.order[1], "e2");
    assert_string_equal(r.a.order[2], "e3");
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.processed, 3);
    assert_int_equal(s.retried, 0);
    rig_down(&r);
}

static void test_tier_down_is_retry_then_dead(void **u)
{
    (void)u;
    rig r;
    rig_up(&r, "postgresql://postgres@127.0.0.1:1/none", 0);
    queue_stage(&r, 1, "8", "closedwon");
    run_until(r.base, dead_lettered, &r.a, 15000, "the event dead-lettered");
    assert_int_equal(r.a.n, 1);
    assert_non_null(strstr(r.a.why, "processor retry"));
    assert_non_null(strstr(r.a.why, "2 attempts"));
    sophia_stream_stats s;
    sophia_stream_get_stats(r.st, &s);
    assert_int_equal(s.processed, 0);
    assert_int_equal(s.retried, 1);
    rig_down(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_waits_for_its_read),
        cmocka_unit_test(test_tier_down_is_retry_then_dead),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sophia_plugin_system_shutdown();
    return rc;
}
