/*
 * test_cache - the tiered cache against the real Redis and PostgreSQL the
 * harness starts (SOPHIA_REDIS_URL, SOPHIA_PG_URL; unset is a failure,
 * never a skip): promotion, TTL per tier, tags across tiers, single
 * flight, write-back through the journal, the L3 version guard, and the
 * small codecs underneath.
 *
 * Each test builds its own cache on its own event_base and drives the
 * loop until what it waits for happened, with a deadline. Keys and tags
 * carry this process's pid so tests sharing the servers never collide.
 * Direct looks into Redis and PostgreSQL use their own blocking clients
 * (hiredis, libpq) on separate connections, as an outside observer would.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <sophia/sdk.h>

#include "cache/cache.h"
#include "cache/cache_l2.h"
#include "cache/cache_l3.h"
#include "cache/cache_wb.h"
#include "conf/config.h"
#include "lib/histogram.h"
#include "event/pg.h"
#include "event/redis.h"
#include "lib/redis_url.h"

#include "../common/loop_wait.h"


#define WAIT_MS 15000
#define ALL (SOPHIA_TIER_L1 | SOPHIA_TIER_L2 | SOPHIA_TIER_L3)

static char pfx[32];

static const char *env_url(const char *name)
{
    const char *u = getenv(name);
    if (!u || !*u)
        fail_msg("%s is not set: the test harness exports it (a throwaway "
                 "server); this test does not skip without it", name);
    return u;
}

/* The harness's Redis, but database 9: the write-back journal replays
 * every entry it finds at start, and integration daemons running beside
 * this test keep theirs in database 0. */
static const char *redis_url(void)
{
    static char url[300];
    sophia_redis_url u;
    char why[200];
    if (sophia_redis_url_parse(env_url("SOPHIA_REDIS_URL"), &u, why,
                               sizeof(why)) < 0)
        fail_msg("SOPHIA_REDIS_URL: %s", why);
    snprintf(url, sizeof(url), "redis://%s:%d/9", u.host, u.port);
    sophia_redis_url_clear(&u);
    return url;
}

static const char *k(const char *name)
{
    static char buf[8][128];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s%s", pfx, name);
    return buf[i];
}

/* ---------------------------------------------------------- the fixture */

typedef struct fx {
    struct event_base *base;
    sophia_conf *conf;
    sophia_cache *c;
} fx;

static bool tiers_up(void *arg)
{
    const char *e;
    sophia_cache *c = arg;
    return sophia_cache_l2_state(c, &e) == 1 &&
           sophia_cache_l3_state(c, &e) == 1;
}

static sophia_cache *fx_cache(fx *f)
{
    sophia_cache *c = sophia_cache_new(f->conf, f->base);
    assert_non_null(c);
    run_until(f->base, tiers_up, c, WAIT_MS, "L2 and L3 up");
    return c;
}

static void fx_open(fx *f, const char *yaml)
{
    sophia_diag d;
    sophia_diag_init(&d);
    f->base = event_base_new();
    f->conf = sophia_conf_load_string("/tmp/t.yaml", yaml, strlen(yaml), &d);
    assert_int_equal(d.count, 0);
    sophia_diag_free(&d);
    free(f->conf->redis_url);
    free(f->conf->pg_url);
    f->conf->redis_url = strdup(redis_url());
    f->conf->pg_url = strdup(env_url("SOPHIA_PG_URL"));
    f->c = fx_cache(f);
}

static void fx_close(fx *f)
{
    sophia_cache_free(f->c);
    sophia_conf_free(f->conf);
    event_base_free(f->base);
}

/* One get's outcome. */
typedef struct got {
    bool done;
    int rc, tier, calls;
    char val[256];
} got;

static void on_got(void *arg, int rc, const char *val, size_t len, int tier)
{
    got *g = arg;
    g->done = true;
    g->calls++;
    g->rc = rc;
    g->tier = tier;
    snprintf(g->val, sizeof(g->val), "%.*s", (int)len, val ? val : "");
}

static bool got_done(void *arg)
{
    return ((got *)arg)->done;
}

static got get(fx *f, sophia_cache *c, const char *key)
{
    got g = {0};
    assert_int_equal(sophia_cache_get(c, key, NULL, NULL, on_got, &g), 0);
    run_until(f->base, got_done, &g, WAIT_MS, key);
    return g;
}

typedef struct acked {
    bool done;
    int rc;
} acked;

static void on_ack(void *arg, int rc)
{
    acked *a = arg;
    a->done = true;
    a->rc = rc;
}

static bool ack_done(void *arg)
{
    return ((acked *)arg)->done;
}

static void put_plan(fx *f, const char *key, const char *val, double ttl,
                     const char *const *tags, unsigned sync, unsigned deferred,
                     unsigned inv)
{
    acked a = {0};
    assert_int_equal(sophia_cache_put_plan(f->c, key, val, strlen(val), ttl,
                                           tags, sync, deferred, inv, on_ack,
                                           &a),
                     0);
    run_until(f->base, ack_done, &a, WAIT_MS, "put acknowledged");
    assert_int_equal(a.rc, 0);
}

/* An outside look at L3 (blocking libpq on the test's own connection). */
static char *pg_value(const char *key)
{
    PGconn *conn = PQconnectdb(env_url("SOPHIA_PG_URL"));
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    const char *vals[1] = {key};
    PGresult *r = PQexecParams(conn,
                               "SELECT convert_from(value, 'UTF8') FROM "
                               "sophia_cache WHERE key = $1 AND (expires_at "
                               "IS NULL OR expires_at > now())",
                               1, NULL, vals, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *v = PQntuples(r) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    PQfinish(conn);
    return v;
}

static redisContext *redis_sync(void)
{
    sophia_redis_url u;
    assert_int_equal(sophia_redis_url_parse(redis_url(), &u, NULL, 0), 0);
    redisContext *rc = redisConnect(u.host, u.port);
    int db = u.db;
    sophia_redis_url_clear(&u);
    assert_true(rc && !rc->err);
    redisReply *r = redisCommand(rc, "SELECT %d", db);
    freeReplyObject(r);
    return rc;
}

static long long journal_entries_for(const char *key)
{
    redisContext *rc = redis_sync();
    redisReply *r = redisCommand(rc, "XRANGE %s - +", SOPHIA_WB_JOURNAL);
    long long n = 0;
    for (size_t i = 0; r && i < r->elements; i++) {
        redisReply *kv = r->element[i]->element[1];
        for (size_t j = 0; j + 1 < kv->elements; j += 2)
            if (!strcmp(kv->element[j]->str, "k") &&
                !strcmp(kv->element[j + 1]->str, key))
                n++;
    }
    freeReplyObject(r);
    redisFree(rc);
    return n;
}

/* ---------------------------------------------------------------- tests */

static const char base_yaml[] = "cache: {l1: {max_entries: 1000, ttl: 60}}\n";

static void test_promotion_l2_to_l1(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    /* In L2 and L3 only. */
    put_plan(&f, k("p2"), "\"two\"", 30, NULL,
             SOPHIA_TIER_L2 | SOPHIA_TIER_L3, 0, SOPHIA_TIER_L1);
    got g = get(&f, f.c, k("p2"));
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.tier, SOPHIA_CACHE_L2);
    assert_string_equal(g.val, "\"two\"");
    g = get(&f, f.c, k("p2"));
    assert_int_equal(g.tier, SOPHIA_CACHE_L1); /* promoted */
    fx_close(&f);
}

static void test_promotion_l3_to_l2_and_l1(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    put_plan(&f, k("p3"), "{\"n\":3}", 30, NULL, SOPHIA_TIER_L3, 0,
             SOPHIA_TIER_L1 | SOPHIA_TIER_L2);
    got g = get(&f, f.c, k("p3"));
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.tier, SOPHIA_CACHE_L3);
    assert_string_equal(g.val, "{\"n\":3}");
    assert_int_equal(get(&f, f.c, k("p3")).tier, SOPHIA_CACHE_L1);
    /* A second cache (empty L1) finds it in L2 now. */
    sophia_cache *c2 = fx_cache(&f);
    g = get(&f, c2, k("p3"));
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.tier, SOPHIA_CACHE_L2);
    sophia_cache_free(c2);
    fx_close(&f);
}

static void test_ttl_per_tier(void **state)
{
    (void)state;
    fx f;
    /* L1 keeps entries at most 0.3 s; the entry itself lives 1.5 s. */
    fx_open(&f, "cache: {l1: {ttl: 300ms}}\n");
    put_plan(&f, k("ttl"), "1", 1.5, NULL, ALL, 0, 0);
    assert_int_equal(get(&f, f.c, k("ttl")).tier, SOPHIA_CACHE_L1);
    run_for(f.base, 500);
    got g = get(&f, f.c, k("ttl")); /* L1 expired, L2 still has it */
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.tier, SOPHIA_CACHE_L2);
    run_for(f.base, 1300);
    g = get(&f, f.c, k("ttl")); /* gone from every tier */
    assert_int_equal(g.rc, SOPHIA_ENOENT);
    char *v = pg_value(k("ttl"));
    assert_null(v);
    fx_close(&f);
}

static void test_tags_across_tiers(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    char tag[64];
    snprintf(tag, sizeof(tag), "%suser_data", pfx);
    const char *tags[] = {tag, NULL};
    put_plan(&f, k("ta"), "\"a\"", 30, tags, ALL, 0, 0);
    put_plan(&f, k("tb"), "\"b\"", 30, tags, ALL, 0, 0);
    put_plan(&f, k("tc"), "\"c\"", 30, NULL, ALL, 0, 0);
    acked a = {0};
    assert_int_equal(sophia_cache_invalidate_tag_async(f.c, tag, on_ack, &a),
                     0);
    run_until(f.base, ack_done, &a, WAIT_MS, "tag invalidated");
    assert_int_equal(a.rc, 0);
    assert_int_equal(get(&f, f.c, k("ta")).rc, SOPHIA_ENOENT);
    sophia_cache *c2 = fx_cache(&f); /* nothing in L2 or L3 either */
    assert_int_equal(get(&f, c2, k("tb")).rc, SOPHIA_ENOENT);
    got g = get(&f, c2, k("tc"));
    assert_int_equal(g.rc, 0);
    assert_string_equal(g.val, "\"c\"");
    sophia_cache_free(c2);
    char *v = pg_value(k("tb"));
    assert_null(v);
    fx_close(&f);
}

/* ------------------------------------------------------------ single flight */

typedef struct slow_loader {
    struct event_base *base;
    int calls;
    sophia_cache_load_done done;
    void *token;
    struct event *ev;
} slow_loader;

static void on_load_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    slow_loader *l = arg;
    l->done(l->token, 0, "\"loaded\"", 8, 30, NULL);
}

static void loader(void *arg, const char *key, sophia_cache_load_done done,
                   void *token)
{
    (void)key;
    slow_loader *l = arg;
    l->calls++;
    l->done = done;
    l->token = token;
    struct timeval tv = {0, 50000};
    evtimer_add(l->ev, &tv);
}

#define N_GETS 50

typedef struct many {
    got g[N_GETS];
} many;

static bool all_done(void *arg)
{
    many *m = arg;
    for (int i = 0; i < N_GETS; i++)
        if (!m->g[i].done)
            return false;
    return true;
}

static void test_single_flight(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    slow_loader l = {f.base, 0, NULL, NULL, NULL};
    l.ev = evtimer_new(f.base, on_load_timer, &l);
    many m;
    memset(&m, 0, sizeof(m));
    for (int i = 0; i < N_GETS; i++)
        assert_int_equal(sophia_cache_get(f.c, k("sf"), loader, &l, on_got,
                                          &m.g[i]),
                         0);
    run_until(f.base, all_done, &m, WAIT_MS, "every get answered");
    assert_int_equal(l.calls, 1);
    for (int i = 0; i < N_GETS; i++) {
        assert_int_equal(m.g[i].rc, 0);
        assert_int_equal(m.g[i].calls, 1);
        assert_int_equal(m.g[i].tier, SOPHIA_CACHE_LOADER);
        assert_string_equal(m.g[i].val, "\"loaded\"");
    }
    /* The loaded value went to every tier. */
    assert_int_equal(get(&f, f.c, k("sf")).tier, SOPHIA_CACHE_L1);
    run_for(f.base, 300);
    char *v = pg_value(k("sf"));
    assert_non_null(v);
    assert_string_equal(v, "\"loaded\"");
    free(v);
    event_free(l.ev);
    fx_close(&f);
}

static void test_early_refresh(void **state)
{
    (void)state;
    fx f;
    /* L1 keeps a value 400 ms; a load costs ~50 ms. */
    fx_open(&f, "cache: {l1: {max_entries: 1000, ttl: 400ms}}\n");
    slow_loader l = {f.base, 0, NULL, NULL, NULL};
    l.ev = evtimer_new(f.base, on_load_timer, &l);
    got g = {0};
    assert_int_equal(sophia_cache_get(f.c, k("xf"), loader, &l, on_got, &g), 0);
    run_until(f.base, got_done, &g, WAIT_MS, "first load");
    assert_int_equal(l.calls, 1);
    /* A hot key read every 10 ms for 1.2 s (three L1 lifetimes): XFetch
     * reloads it from L1 hits before L1 drops it, so nearly every read is
     * an L1 hit (a refresh that starts late still costs one miss now and
     * then; without XFetch there would be one per lifetime and no early
     * refresh at all). */
    int misses = 0;
    for (int i = 0; i < 120; i++) {
        got h = {0};
        assert_int_equal(sophia_cache_get(f.c, k("xf"), loader, &l, on_got, &h),
                         0);
        run_until(f.base, got_done, &h, WAIT_MS, "get");
        misses += h.tier != SOPHIA_CACHE_L1;
        run_for(f.base, 10);
    }
    assert_true(l.calls >= 3); /* refreshed, more than once */
    assert_true(misses <= 2);
    json_t *s = sophia_cache_stats_json(f.c);
    assert_true(json_integer_value(json_object_get(
                    json_object_get(s, "loader"), "early_refreshes")) >= 2);
    json_decref(s);
    event_free(l.ev);
    fx_close(&f);
}

/* -------------------------------------------------------------- write-back */

static bool wb_idle(void *arg)
{
    json_t *s = sophia_cache_stats_json(arg);
    json_t *wb = json_object_get(s, "write_back");
    bool idle = json_integer_value(json_object_get(wb, "dirty")) == 0 &&
                json_integer_value(json_object_get(wb, "flushing")) == 0;
    json_decref(s);
    return idle;
}

static void test_write_back_journal_then_flush(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    put_plan(&f, k("wb"), "\"v1\"", 30, NULL, SOPHIA_TIER_L1,
             SOPHIA_TIER_L2 | SOPHIA_TIER_L3, 0);
    put_plan(&f, k("wb"), "\"v2\"", 30, NULL, SOPHIA_TIER_L1,
             SOPHIA_TIER_L2 | SOPHIA_TIER_L3, 0);
    /* Acknowledged: in the journal (twice), served from L1 at once. */
    got g = get(&f, f.c, k("wb"));
    assert_string_equal(g.val, "\"v2\"");
    acked a = {0};
    sophia_cache_flush(f.c, on_ack, &a);
    run_until(f.base, ack_done, &a, WAIT_MS, "flush");
    run_until(f.base, wb_idle, f.c, WAIT_MS, "write-back idle");
    char *v = pg_value(k("wb"));
    assert_non_null(v);
    assert_string_equal(v, "\"v2\""); /* coalesced: the latest */
    free(v);
    run_for(f.base, 200); /* XDEL is fire-and-forget */
    assert_int_equal(journal_entries_for(k("wb")), 0);
    fx_close(&f);
}

static long long wb_stat(sophia_cache *c, const char *name)
{
    json_t *s = sophia_cache_stats_json(c);
    long long v = json_integer_value(
        json_object_get(json_object_get(s, "write_back"), name));
    json_decref(s);
    return v;
}

static bool all_acked(void *arg)
{
    acked *a = arg;
    return a[0].done && a[1].done && a[2].done;
}

/* Puts of one key in one loop turn share one XADD of the newest value,
 * and each is acknowledged by it; a put in a later turn has its own. */
static void test_write_back_one_xadd_per_turn(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    long long journaled = wb_stat(f.c, "journaled");
    long long shared = wb_stat(f.c, "journal_shared");
    acked a[3] = {{0}};
    const char *vals[3] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(sophia_cache_put_plan(f.c, k("turn"), vals[i], 1, 30,
                                               NULL, SOPHIA_TIER_L1,
                                               SOPHIA_TIER_L2 | SOPHIA_TIER_L3,
                                               0, on_ack, &a[i]),
                         0);
    assert_false(a[0].done); /* nothing is acknowledged before the XADD */
    run_until(f.base, all_acked, a, WAIT_MS, "three puts acknowledged");
    for (int i = 0; i < 3; i++)
        assert_int_equal(a[i].rc, 0);
    assert_int_equal(wb_stat(f.c, "journaled") - journaled, 1);
    assert_int_equal(wb_stat(f.c, "journal_shared") - shared, 2);
    put_plan(&f, k("turn"), "4", 30, NULL, SOPHIA_TIER_L1,
             SOPHIA_TIER_L2 | SOPHIA_TIER_L3, 0);
    assert_int_equal(wb_stat(f.c, "journaled") - journaled, 2);
    acked fl = {0};
    sophia_cache_flush(f.c, on_ack, &fl);
    run_until(f.base, ack_done, &fl, WAIT_MS, "flush");
    run_until(f.base, wb_idle, f.c, WAIT_MS, "write-back idle");
    char *v = pg_value(k("turn"));
    assert_non_null(v);
    assert_string_equal(v, "4");
    free(v);
    fx_close(&f);
}

static void test_write_back_replay(void **state)
{
    (void)state;
    /* A journal entry left by a "crashed" daemon reaches L3 on start. */
    redisContext *rc = redis_sync();
    char ver[32];
    snprintf(ver, sizeof(ver), "%lld", (long long)time(NULL) * 1000000);
    redisReply *r = redisCommand(rc, "XADD %s * k %s v %s e 0 t %s n %s m 6",
                                 SOPHIA_WB_JOURNAL, k("replay"), "\"crash\"",
                                 "", ver);
    assert_true(r && r->type == REDIS_REPLY_STRING);
    freeReplyObject(r);
    redisFree(rc);
    fx f;
    fx_open(&f, base_yaml);
    run_for(f.base, 400);
    run_until(f.base, wb_idle, f.c, WAIT_MS, "replay flushed");
    char *v = pg_value(k("replay"));
    assert_non_null(v);
    assert_string_equal(v, "\"crash\"");
    free(v);
    run_for(f.base, 200);
    assert_int_equal(journal_entries_for(k("replay")), 0);
    fx_close(&f);
}

/* ---------------------------------------------------------- L3 versioning */

typedef struct l3_reads {
    int answered, hits, misses, other;
    char last[64];
} l3_reads;

static void on_l3_read(void *arg, int rc, const char *val, size_t len,
                       int64_t expires_ms, const char *const *tags)
{
    (void)expires_ms;
    (void)tags;
    l3_reads *r = arg;
    r->answered++;
    r->hits += rc == 0;
    r->misses += rc == SOPHIA_ENOENT;
    r->other += rc != 0 && rc != SOPHIA_ENOENT;
    if (rc == 0)
        snprintf(r->last, sizeof(r->last), "%.*s", (int)len, val);
}

typedef struct want_n {
    l3_reads *r;
    int n;
} want_n;

static bool reads_done(void *arg)
{
    want_n *w = arg;
    return w->r->answered >= w->n;
}

static bool pool_full(void *arg)
{
    sophia_pg_pool *pp = sophia_l3_pool(arg);
    return sophia_pg_pool_nup(pp) == sophia_pg_pool_size(pp);
}

/* With several connections a read must still see what was issued before
 * it, without waiting for the acknowledgement: a write to its key, and a
 * tag invalidation (which runs on every connection). */
static void test_l3_pool_reads_follow_earlier_writes(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_l3 *l3 = sophia_l3_new(
        sophia_pg_pool_new(base, env_url("SOPHIA_PG_URL"), 3), base);
    assert_non_null(l3);
    run_until(base, pool_full, l3, WAIT_MS, "three connections up");
    char tag[96], name[32];
    snprintf(tag, sizeof(tag), "%sorder-tag", pfx);
    const char *tags[] = {tag, NULL};
    enum { N = 12 };
    acked a[N];
    memset(a, 0, sizeof(a));
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "ord%d", i);
        assert_int_equal(sophia_l3_put(l3, k(name), "\"v\"", 3, 0, tags, 100,
                                       on_ack, &a[i]),
                         0);
    }
    run_until(base, ack_done, &a[N - 1], WAIT_MS, "tagged writes");
    /* Not waited for: the reads queued next must still miss. */
    assert_int_equal(sophia_l3_del_tag(l3, tag, 200, NULL, NULL), 0);
    l3_reads r = {0};
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "ord%d", i);
        assert_int_equal(sophia_l3_get(l3, k(name), on_l3_read, &r), 0);
    }
    want_n w = {&r, N};
    run_until(base, reads_done, &w, WAIT_MS, "reads after the invalidation");
    assert_int_equal(r.misses, N);
    /* A write not yet acknowledged is seen by the read issued after it. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(sophia_l3_put(l3, k("ryw"), "\"x\"", 3, 0, NULL, 300,
                                   NULL, NULL),
                     0);
    assert_int_equal(sophia_l3_get(l3, k("ryw"), on_l3_read, &r), 0);
    w.n = 1;
    run_until(base, reads_done, &w, WAIT_MS, "read your write");
    assert_int_equal(r.hits, 1);
    assert_string_equal(r.last, "\"x\"");
    sophia_l3_free(l3);
    event_base_free(base);
}

static void test_l3_version_guard(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    /* Several connections: writes to one key must still keep their order
     * (they are routed to one connection), which the guard relies on. */
    sophia_l3 *l3 = sophia_l3_new(
        sophia_pg_pool_new(base, env_url("SOPHIA_PG_URL"), 3), base);
    assert_non_null(l3);
    acked a = {0}, b = {0};
    assert_int_equal(sophia_l3_put(l3, k("ver"), "\"new\"", 5, 0, NULL, 20,
                                   on_ack, &a),
                     0);
    assert_int_equal(sophia_l3_put(l3, k("ver"), "\"old\"", 5, 0, NULL, 10,
                                   on_ack, &b),
                     0);
    run_until(base, ack_done, &b, WAIT_MS, "both writes");
    assert_true(a.done);
    char *v = pg_value(k("ver"));
    assert_string_equal(v, "\"new\"");
    free(v);
    /* A delete older than the value loses too; a newer one wins. */
    acked d = {0};
    assert_int_equal(sophia_l3_del(l3, k("ver"), 15, on_ack, &d), 0);
    run_until(base, ack_done, &d, WAIT_MS, "old delete");
    v = pg_value(k("ver"));
    assert_non_null(v);
    free(v);
    memset(&d, 0, sizeof(d));
    assert_int_equal(sophia_l3_del(l3, k("ver"), 30, on_ack, &d), 0);
    run_until(base, ack_done, &d, WAIT_MS, "new delete");
    assert_null(pg_value(k("ver")));
    sophia_l3_free(l3);
    event_base_free(base);
}

/* ------------------------------------------------------------ pure parts */

static void test_l2_envelope(void **state)
{
    (void)state;
    const char *tags[] = {"a", "b c", NULL};
    size_t n;
    char *e = sophia_l2_encode("x\ny", 3, 1234, tags, &n);
    const char *val;
    size_t vlen;
    int64_t exp;
    char **t;
    assert_int_equal(sophia_l2_decode(e, n, &val, &vlen, &exp, &t), 0);
    assert_int_equal(vlen, 3);
    assert_memory_equal(val, "x\ny", 3);
    assert_int_equal(exp, 1234);
    assert_string_equal(t[0], "a");
    assert_string_equal(t[1], "b c");
    assert_null(t[2]);
    free(t);
    free(e);
    assert_int_equal(sophia_l2_decode("garbage", 7, &val, &vlen, &exp, &t),
                     SOPHIA_EPARSE);
}

static void test_array_literal(void **state)
{
    (void)state;
    const char *tags[] = {"a\"b", "c\\d", NULL};
    char *s = sophia_l3_array_literal(tags);
    assert_string_equal(s, "{\"a\\\"b\",\"c\\\\d\"}");
    free(s);
    s = sophia_l3_array_literal(NULL);
    assert_string_equal(s, "{}");
    free(s);
}

static void test_histogram(void **state)
{
    (void)state;
    sophia_hist h;
    memset(&h, 0, sizeof(h));
    assert_true(sophia_hist_quantile(&h, 0.5) == 0);
    for (int i = 0; i < 99; i++)
        sophia_hist_record(&h, 10);
    sophia_hist_record(&h, 1000);
    double p50 = sophia_hist_quantile(&h, 0.5);
    double p99 = sophia_hist_quantile(&h, 0.99);
    double p100 = sophia_hist_quantile(&h, 1.0);
    assert_true(p50 >= 10 && p50 < 12);
    assert_true(p99 >= 10 && p99 < 12);
    assert_true(p100 >= 1000 && p100 < 1200);
    sophia_hist_record(&h, 0.1);
    assert_true(sophia_hist_quantile(&h, 0.001) == 1.0);
}

static void test_bad_input(void **state)
{
    (void)state;
    fx f;
    fx_open(&f, base_yaml);
    got g = {0};
    assert_int_equal(sophia_cache_get(f.c, "", NULL, NULL, on_got, &g),
                     SOPHIA_EINVAL);
    const char *bad[] = {"x\ny", NULL};
    assert_int_equal(sophia_cache_put(f.c, k("bad"), "1", 1, 0, bad),
                     SOPHIA_EINVAL);
    char big[SOPHIA_CACHE_MAX_KEY + 2];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(sophia_cache_put(f.c, big, "1", 1, 0, NULL),
                     SOPHIA_EINVAL);
    /* A plugin's or loader's ttl has the PUT's bound: NaN and more than
     * ten years are refused, not stored to expire at once. */
    assert_int_equal(sophia_cache_put(f.c, k("ttl"), "1", 1, 1e16, NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(sophia_cache_put(f.c, k("ttl"), "1", 1, NAN, NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(sophia_cache_put(f.c, k("ttl"), "1", 1,
                                      SOPHIA_CACHE_MAX_TTL, NULL),
                     0);
    fx_close(&f);
}

/* The one key rule every entry point uses: what is wrong, at which byte. */
static void test_key_check(void **state)
{
    (void)state;
    static const struct {
        const char *key;
        const char *why; /* NULL = valid */
    } cases[] = {
        {"a", NULL},
        {"with space+plus%41/slash", NULL},
        {"caf\xc3\xa9 \xf0\x9f\x98\x80", NULL}, /* é, U+1F600 */
        {"", "the key is empty"},
        {"victim\r\nX", "byte 6 is a control byte (0x0d)"},
        {"tab\there", "byte 3 is a control byte (0x09)"},
        {"del\x7f", "byte 3 is a control byte (0x7f)"},
        {"ab\xff", "byte 2 (0xff) is not valid UTF-8"},
        {"\xc0\xaf", "byte 0 (0xc0) is not valid UTF-8"},        /* overlong */
        {"x\xed\xa0\x80", "byte 1 (0xed) is not valid UTF-8"}, /* surrogate */
        {"\xf4\x90\x80\x80", "byte 0 (0xf4) is not valid UTF-8"}, /* > 10FFFF */
        {"cut\xe2\x82", "byte 3 (0xe2) is not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[96] = "";
        int rc = sophia_cache_key_check(cases[i].key, why, sizeof(why));
        if (!cases[i].why) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, -1);
            assert_string_equal(why, cases[i].why);
        }
    }
    char big[SOPHIA_CACHE_MAX_KEY + 2], why[96];
    memset(big, 'k', SOPHIA_CACHE_MAX_KEY);
    big[SOPHIA_CACHE_MAX_KEY] = '\0';
    assert_int_equal(sophia_cache_key_check(big, why, sizeof(why)), 0);
    big[SOPHIA_CACHE_MAX_KEY] = 'k';
    big[SOPHIA_CACHE_MAX_KEY + 1] = '\0';
    assert_int_equal(sophia_cache_key_check(big, why, sizeof(why)), -1);
    assert_string_equal(why, "the key is longer than 1024 bytes");
    /* TTLs: positive, finite, at most ten years. */
    assert_true(sophia_cache_ttl_ok(0.001));
    assert_true(sophia_cache_ttl_ok(SOPHIA_CACHE_MAX_TTL));
    assert_false(sophia_cache_ttl_ok(SOPHIA_CACHE_MAX_TTL + 1));
    assert_false(sophia_cache_ttl_ok(0));
    assert_false(sophia_cache_ttl_ok(-1));
    assert_false(sophia_cache_ttl_ok(NAN));
    assert_false(sophia_cache_ttl_ok(INFINITY));
    size_t klen = 0;
    assert_int_equal(sophia_cache_key_check_len("caf\xc3\xa9", why, sizeof(why),
                                                &klen), 0);
    assert_int_equal(klen, 5);
    /* read a word at a time: a bad byte at every place of every length
     * around the word sizes is still found */
    static const unsigned char bad[] = {0x01, 0x0a, 0x1f, 0x7f, 0x80, 0xff};
    for (size_t n = 1; n <= 25; n++)
        for (size_t at = 0; at < n; at++)
            for (size_t b = 0; b < sizeof(bad); b++) {
                char k[32];
                memset(k, 'a' + (char)(n % 26), n);
                k[n] = '\0';
                assert_int_equal(sophia_cache_key_check_len(k, why, sizeof(why),
                                                            &klen), 0);
                assert_int_equal(klen, n);
                k[at] = (char)bad[b];
                assert_int_equal(sophia_cache_key_check(k, why, sizeof(why)), -1);
            }
}

/* Tags: 1 to 400 bytes without '\n' or 0x1f (other bytes, control or
 * not, are taken), at most SOPHIA_L1_MAX_TAGS; measured as they are
 * checked. */
static void test_tags_check(void **state)
{
    (void)state;
    size_t lens[SOPHIA_L1_MAX_TAGS];
    const char *ok[] = {"metrics", "dashboard:d0", "t\tab", "caf\xc3\xa9", NULL};
    assert_int_equal(sophia_cache_tags_measure(ok, lens), 4);
    assert_int_equal(lens[0], 7);
    assert_int_equal(lens[1], 12);
    assert_int_equal(lens[2], 4);
    assert_int_equal(lens[3], 5);
    assert_true(sophia_cache_tags_ok(ok));
    assert_true(sophia_cache_tags_ok(NULL));
    assert_int_equal(sophia_cache_tags_measure(NULL, lens), 0);
    static const char *const bad[] = {"", "a\nb", "\n", "x\x1f", "\x1fy"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *v[] = {"fine", bad[i], NULL};
        assert_int_equal(sophia_cache_tags_measure(v, lens), -1);
        assert_false(sophia_cache_tags_ok(v));
    }
    char big[402];
    memset(big, 't', 400);
    big[400] = '\0';
    const char *edge[] = {big, NULL};
    assert_int_equal(sophia_cache_tags_measure(edge, lens), 1);
    assert_int_equal(lens[0], 400);
    big[400] = 't';
    big[401] = '\0';
    assert_false(sophia_cache_tags_ok(edge));
    const char *many[SOPHIA_L1_MAX_TAGS + 2];
    for (size_t i = 0; i <= SOPHIA_L1_MAX_TAGS; i++)
        many[i] = "t";
    many[SOPHIA_L1_MAX_TAGS] = NULL;
    assert_int_equal(sophia_cache_tags_measure(many, lens), SOPHIA_L1_MAX_TAGS);
    many[SOPHIA_L1_MAX_TAGS] = "t";
    many[SOPHIA_L1_MAX_TAGS + 1] = NULL;
    assert_int_equal(sophia_cache_tags_measure(many, lens), -1);
    /* '\n' and 0x1f at every place of every length around the word
     * sizes; other bytes taken */
    for (size_t n = 1; n <= 25; n++)
        for (size_t at = 0; at < n; at++) {
            char t[32];
            memset(t, 't', n);
            t[n] = '\0';
            const char *v[] = {t, NULL};
            t[at] = '\n';
            assert_false(sophia_cache_tags_ok(v));
            t[at] = 0x1f;
            assert_false(sophia_cache_tags_ok(v));
            t[at] = 0x1e;
            assert_int_equal(sophia_cache_tags_measure(v, lens), 1);
            assert_int_equal(lens[0], n);
            t[at] = (char)0x8a; /* '\n' | 0x80 */
            assert_true(sophia_cache_tags_ok(v));
        }
}

/* Which L3 errors the write-back gives up on (dead letters) and which it
 * retries. */
static void test_l3_sqlstate_classes(void **state)
{
    (void)state;
    const char *permanent[] = {"22P05", "22021", "23514", "23505", "42501",
                               "42P01", "54000", NULL, "", "2"};
    const char *transient[] = {"08006", "40001", "40P01", "53300", "55P03",
                               "57P01", "58030", "XX000"};
    for (size_t i = 0; i < sizeof(permanent) / sizeof(*permanent); i++)
        assert_true(sophia_l3_sqlstate_permanent(permanent[i]));
    for (size_t i = 0; i < sizeof(transient) / sizeof(*transient); i++)
        assert_false(sophia_l3_sqlstate_permanent(transient[i]));
}

static void test_config_write_section(void **state)
{
    (void)state;
    const char *y = "plugins:\n  path: [/tmp]\n  instances:\n    wb:\n"
                    "      plugin: write_back\n"
                    "cache:\n  write:\n    default: nope\n"
                    "    prefixes:\n      \"metric:\": wb\n      \"x:\": missing\n";
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *c = sophia_conf_load_string("/tmp/t.yaml", y, strlen(y), &d);
    assert_int_equal(d.count, 0);
    assert_string_equal(c->cache_write.def, "nope");
    assert_int_equal(c->cache_write.nprefixes, 2);
    assert_string_equal(c->cache_write.prefixes[0], "metric:");
    assert_string_equal(c->cache_write.instances[0], "wb");
    sophia_conf_validate(c, &d);
    assert_int_equal(d.count, 2);
    assert_non_null(strstr(d.lines[0], "t.yaml:8:14: cache.write.default: 'nope'"));
    assert_non_null(strstr(d.lines[1], "cache.write.prefixes \"x:\": 'missing'"));
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

int main(void)
{
    snprintf(pfx, sizeof(pfx), "tc%d:", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l2_envelope),
        cmocka_unit_test(test_array_literal),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_key_check),
        cmocka_unit_test(test_tags_check),
        cmocka_unit_test(test_l3_sqlstate_classes),
        cmocka_unit_test(test_config_write_section),
        cmocka_unit_test(test_promotion_l2_to_l1),
        cmocka_unit_test(test_promotion_l3_to_l2_and_l1),
        cmocka_unit_test(test_ttl_per_tier),
        cmocka_unit_test(test_tags_across_tiers),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_early_refresh),
        cmocka_unit_test(test_write_back_journal_then_flush),
        cmocka_unit_test(test_write_back_one_xadd_per_turn),
        cmocka_unit_test(test_write_back_replay),
        cmocka_unit_test(test_l3_version_guard),
        cmocka_unit_test(test_l3_pool_reads_follow_earlier_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
