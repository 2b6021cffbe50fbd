/*
 * test_cache_zstd - compression of large values in L2 and L3 (issue 22):
 * the stored form (cache_zstd.h) on its own, and through a real cache
 * against the harness's Redis and PostgreSQL (SOPHIA_REDIS_URL,
 * SOPHIA_PG_URL; unset is a failure, never a skip) with old plain entries
 * written straight into both servers beside new compressed ones.
 *
 * The outside looks (hiredis, libpq, blocking, on their own connections)
 * are what an operator or an older node would see: the stored bytes. The
 * reads through the cache are what every caller sees: plain JSON, equal
 * to what was written, whichever form a tier holds.
 */
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
#include "cache/cache_zstd.h"
#include "conf/config.h"
#include "lib/diag.h"
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

/* Database 9, as test_cache: away from the integration daemons' journal. */
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

/* A JSON document of about `size` bytes, records like the samples'
 * cached ones (ids, names, stages, amounts), `seed` making it unique. */
static char *json_doc(size_t size, int seed)
{
    size_t cap = size + 256, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s, cap, "{\"seed\":%d,\"deals\":[", seed);
    for (int i = 0; n < size; i++)
        n += (size_t)snprintf(s + n, cap - n,
                              "%s{\"id\":\"%d-%d\",\"stage\":\"%s\","
                              "\"amount\":%d,\"owner\":\"rep%d\"}",
                              i ? "," : "", seed, i,
                              i % 3 ? "appointmentscheduled" : "closedwon",
                              (i * 7919) % 100000, i % 13);
    snprintf(s + n, cap - n, "]}");
    return s;
}

/* {"p":"aaa..."} of exactly `size` bytes (>= 8). */
static char *padded(size_t size)
{
    char *s = malloc(size + 1);
    memset(s, 'a', size);
    memcpy(s, "{\"p\":\"", 6);
    memcpy(s + size - 2, "\"}", 3);
    return s;
}

/* ------------------------------------------------------ the stored form */

static void test_pack_threshold_and_round_trip(void **state)
{
    (void)state;
    char err[200];
    sophia_zstd *z = sophia_zstd_new(1024, 3, NULL, 0, err, sizeof(err));
    assert_non_null(z);
    char *doc = json_doc(4000, 1);
    size_t len = strlen(doc);
    const char *out, *back;
    size_t olen, blen;
    char *owned, *plain;
    /* At the threshold: plain, the caller's own bytes. */
    assert_int_equal(sophia_zstd_pack(z, doc, 1024, &out, &olen, &owned), 0);
    assert_ptr_equal(out, doc);
    assert_int_equal(olen, 1024);
    assert_null(owned);
    /* Above it: the mark, the format, a smaller frame. */
    assert_int_equal(sophia_zstd_pack(z, doc, len, &out, &olen, &owned), 0);
    assert_non_null(owned);
    assert_int_equal(out[0], '\0');
    assert_int_equal(out[1], '\1');
    assert_true(olen < len / 2);
    assert_true(sophia_zstd_packed(out, olen));
    assert_int_equal(sophia_zstd_unpack(z, out, olen, &back, &blen, &plain),
                     0);
    assert_int_equal(blen, len);
    assert_memory_equal(back, doc, len);
    free(plain);
    /* A reader without a handle reads it too (no dictionary involved). */
    assert_int_equal(
        sophia_zstd_unpack(NULL, out, olen, &back, &blen, &plain), 0);
    assert_memory_equal(back, doc, len);
    free(plain);
    free(owned);
    /* Plain JSON is never taken for packed, whatever it starts with. */
    const char *plains[] = {"{\"a\":1}", "[1]", "\"s\"", " {}", "42"};
    for (size_t i = 0; i < sizeof(plains) / sizeof(*plains); i++) {
        assert_false(sophia_zstd_packed(plains[i], strlen(plains[i])));
        assert_int_equal(sophia_zstd_unpack(z, plains[i], strlen(plains[i]),
                                            &back, &blen, &plain),
                         0);
        assert_ptr_equal(back, plains[i]);
        assert_null(plain);
    }
    sophia_zstd_stats st;
    sophia_zstd_get_stats(z, &st);
    assert_int_equal(st.packed, 1);
    assert_int_equal(st.unpacked, 1);
    free(doc);
    sophia_zstd_free(z);
}

static void test_pack_off_incompressible_and_corrupt(void **state)
{
    (void)state;
    char err[200];
    const char *out, *back;
    size_t olen, blen;
    char *owned, *plain;
    char *doc = json_doc(3000, 2);
    size_t len = strlen(doc);
    /* Level 0: nothing packed. */
    sophia_zstd *off = sophia_zstd_new(16, 0, NULL, 0, err, sizeof(err));
    assert_int_equal(sophia_zstd_pack(off, doc, len, &out, &olen, &owned), 0);
    assert_ptr_equal(out, doc);
    assert_null(owned);
    /* Bytes zstd cannot shrink (a JSON string of random hex would shrink;
     * random bytes do not) stay plain. */
    sophia_zstd *z = sophia_zstd_new(16, 3, NULL, 0, err, sizeof(err));
    char rnd[2048];
    for (size_t i = 0; i < sizeof(rnd); i++)
        rnd[i] = (char)(rand() & 0xff);
    rnd[0] = '"';
    assert_int_equal(
        sophia_zstd_pack(z, rnd, sizeof(rnd), &out, &olen, &owned), 0);
    assert_ptr_equal(out, rnd);
    assert_null(owned);
    sophia_zstd_stats st;
    sophia_zstd_get_stats(z, &st);
    assert_int_equal(st.kept_plain, 1);
    /* A corrupt frame, an unknown format byte, a lone mark: errors. */
    assert_int_equal(sophia_zstd_pack(z, doc, len, &out, &olen, &owned), 0);
    assert_non_null(owned);
    owned[olen - 3] ^= 0x5a;
    assert_int_equal(sophia_zstd_unpack(z, owned, olen, &back, &blen, &plain),
                     SOPHIA_EPARSE);
    owned[1] = '\7';
    assert_int_equal(sophia_zstd_unpack(z, owned, olen, &back, &blen, &plain),
                     SOPHIA_EPARSE);
    assert_int_equal(sophia_zstd_unpack(z, "\0", 1, &back, &blen, &plain),
                     SOPHIA_EPARSE);
    assert_null(plain);
    sophia_zstd_get_stats(z, &st);
    assert_int_equal(st.failed, 3);
    free(owned);
    free(doc);
    sophia_zstd_free(z);
    sophia_zstd_free(off);
}

/* A dictionary trained from sample values: smaller frames for small
 * values, and a reader without it refuses them instead of guessing. */
static void test_dictionary(void **state)
{
    (void)state;
    enum { N = 400 };
    char *samples[N], err[300];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        samples[i] = json_doc(1200, i);
        lens[i] = strlen(samples[i]);
    }
    size_t dlen = 0;
    void *dict = sophia_zstd_train((const char *const *)samples, lens, N,
                                   16384, &dlen, err, sizeof(err));
    assert_non_null(dict);
    assert_true(dlen > 0 && dlen <= 16384);
    sophia_zstd *with = sophia_zstd_new(1024, 3, dict, dlen, err, sizeof(err));
    sophia_zstd *without = sophia_zstd_new(1024, 3, NULL, 0, err, sizeof(err));
    assert_non_null(with);
    char *v = json_doc(1500, 9999);
    size_t len = strlen(v), dl, pl, blen;
    const char *dout, *pout, *back;
    char *down, *pown, *plain;
    assert_int_equal(sophia_zstd_pack(with, v, len, &dout, &dl, &down), 0);
    assert_int_equal(sophia_zstd_pack(without, v, len, &pout, &pl, &pown), 0);
    assert_non_null(down);
    assert_non_null(pown);
    assert_true(dl < pl); /* what the dictionary is for */
    assert_int_equal(sophia_zstd_unpack(with, dout, dl, &back, &blen, &plain),
                     0);
    assert_memory_equal(back, v, len);
    free(plain);
    assert_int_equal(
        sophia_zstd_unpack(without, dout, dl, &back, &blen, &plain),
        SOPHIA_EPARSE);
    assert_int_equal(sophia_zstd_unpack(NULL, dout, dl, &back, &blen, &plain),
                     SOPHIA_EPARSE);
    /* Raw bytes are not a dictionary: refused with a reason. */
    assert_null(sophia_zstd_new(1024, 3, "{\"not\":1}", 9, err, sizeof(err)));
    assert_non_null(strstr(err, "not a zstd dictionary"));
    /* From a file, as cache.compress.dictionary loads it. */
    char path[] = "/tmp/test_cache_zstd_dictXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, dict, dlen), (ssize_t)dlen);
    close(fd);
    sophia_zstd *file = sophia_zstd_open(1024, 3, path, err, sizeof(err));
    assert_non_null(file);
    assert_int_equal(sophia_zstd_unpack(file, dout, dl, &back, &blen, &plain),
                     0);
    free(plain);
    sophia_zstd_free(file);
    unlink(path);
    assert_null(sophia_zstd_open(1024, 3, path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    free(down);
    free(pown);
    free(v);
    free(dict);
    sophia_zstd_free(with);
    sophia_zstd_free(without);
    for (int i = 0; i < N; i++)
        free(samples[i]);
}

static void test_config_keys(void **state)
{
    (void)state;
    sophia_diag d;
    sophia_diag_init(&d);
    const char *y = "cache: {compress: {threshold: 4KiB, level: 7}}\n";
    sophia_conf *c = sophia_conf_load_string("/tmp/t.yaml", y, strlen(y), &d);
    assert_int_equal(d.count, 0);
    assert_int_equal(c->compress.threshold, 4096);
    assert_int_equal(c->compress.level, 7);
    assert_null(c->compress.dictionary);
    sophia_conf_free(c);
    c = sophia_conf_load_string("/tmp/t.yaml", "{}\n", 3, &d);
    assert_int_equal(c->compress.threshold, SOPHIA_CONF_COMPRESS_THRESHOLD);
    assert_int_equal(c->compress.level, SOPHIA_CONF_COMPRESS_LEVEL);
    sophia_conf_free(c);
    y = "cache:\n  compress:\n    level: 20\n"
        "    dictionary: no-such-dict.zd\n";
    c = sophia_conf_load_string("/tmp/t.yaml", y, strlen(y), &d);
    assert_int_equal(d.count, 2);
    assert_non_null(strstr(d.lines[0], "t.yaml:3:12: cache.compress.level: "
                                       "'20' is not a zstd level"));
    assert_non_null(strstr(d.lines[1], "cache.compress.dictionary: cannot "
                                       "open '/tmp/no-such-dict.zd'"));
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

/* ------------------------------------------- through the cache, mixed */

typedef struct got {
    bool done;
    int rc, tier;
    char *val;
    size_t len;
} got;

static void on_got(void *arg, int rc, const char *val, size_t len, int tier)
{
    got *g = arg;
    g->done = true;
    g->rc = rc;
    g->tier = tier;
    g->len = len;
    g->val = val ? memcpy(malloc(len + 1), val, len) : NULL;
}

static bool got_done(void *arg)
{
    return ((got *)arg)->done;
}

/* A get with a fresh L1 view: the key is dropped from L1 first. */
static void expect_read(struct event_base *base, sophia_cache *c,
                        const char *key, const char *want, int tier)
{
    got g = {0};
    sophia_cache_l1_invalidate_local(c, key, 0);
    assert_int_equal(sophia_cache_get(c, key, NULL, NULL, on_got, &g), 0);
    run_until(base, got_done, &g, WAIT_MS, key);
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.tier, tier);
    assert_int_equal(g.len, strlen(want));
    assert_memory_equal(g.val, want, g.len);
    free(g.val);
}

static void on_ack(void *arg, int rc)
{
    *(int *)arg = rc + 1;
}

static bool acked(void *arg)
{
    return *(int *)arg != 0;
}

static void put_all(struct event_base *base, sophia_cache *c,
                    const char *key, const char *val)
{
    int a = 0;
    assert_int_equal(sophia_cache_put_plan(c, key, val, strlen(val), 300,
                                           NULL, ALL, 0, 0, on_ack, &a),
                     0);
    run_until(base, acked, &a, WAIT_MS, "put acknowledged");
    assert_int_equal(a, 1);
}

static redisContext *redis_sync(void)
{
    sophia_redis_url u;
    assert_int_equal(sophia_redis_url_parse(redis_url(), &u, NULL, 0), 0);
    redisContext *rc = redisConnect(u.host, u.port);
    int db = u.db;
    sophia_redis_url_clear(&u);
    assert_true(rc && !rc->err);
    freeReplyObject(redisCommand(rc, "SELECT %d", db));
    return rc;
}

/* The value part of the key's L2 envelope, malloc'd (NULL: none). */
static char *redis_stored(const char *key, size_t *len)
{
    redisContext *rc = redis_sync();
    redisReply *r = redisCommand(rc, "GET %s%s", SOPHIA_L2_PREFIX, key);
    char *v = NULL;
    const char *nl = r && r->type == REDIS_REPLY_STRING
                         ? memchr(r->str, '\n', r->len)
                         : NULL;
    if (nl) {
        *len = r->len - (size_t)(nl + 1 - r->str);
        v = memcpy(malloc(*len + 1), nl + 1, *len);
    }
    freeReplyObject(r);
    redisFree(rc);
    return v;
}

/* An entry as a node before compression wrote it: a plain envelope. */
static void redis_put_plain(const char *key, const char *val)
{
    size_t n;
    char *env = sophia_l2_encode(val, strlen(val), 0, NULL, &n);
    redisContext *rc = redis_sync();
    redisReply *r = redisCommand(rc, "SET %s%s %b", SOPHIA_L2_PREFIX, key,
                                 env, n);
    assert_true(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(rc);
    free(env);
}

static void redis_del(const char *key)
{
    redisContext *rc = redis_sync();
    freeReplyObject(redisCommand(rc, "DEL %s%s", SOPHIA_L2_PREFIX, key));
    redisFree(rc);
}

static PGresult *pg_exec(const char *sql, int n, const char *const *vals)
{
    PGconn *conn = PQconnectdb(env_url("SOPHIA_PG_URL"));
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    PGresult *r = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQfinish(conn);
    return r;
}

/* The row's first byte (-1: no row) and length, as stored. */
static int pg_stored(const char *key, size_t *len)
{
    const char *vals[1] = {key};
    PGresult *r = pg_exec("SELECT get_byte(value, 0), octet_length(value) "
                          "FROM sophia_cache WHERE key = $1",
                          1, vals);
    int b = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : -1;
    *len = PQntuples(r) ? (size_t)atoll(PQgetvalue(r, 0, 1)) : 0;
    PQclear(r);
    return b;
}

/* A row as a node before compression wrote it: plain JSON bytes. */
static void pg_put_plain(const char *key, const char *val)
{
    const char *vals[2] = {key, val};
    PQclear(pg_exec("INSERT INTO sophia_cache (key, value, tags, version) "
                    "VALUES ($1, convert_to($2, 'UTF8'), '{}', 1) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
                    "expires_at = NULL, version = 1",
                    2, vals));
}

static bool tiers_up(void *arg)
{
    const char *e;
    return sophia_cache_l2_state(arg, &e) == 1 &&
           sophia_cache_l3_state(arg, &e) == 1;
}

static void test_old_and_new_entries_side_by_side(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_diag d;
    sophia_diag_init(&d);
    const char *y = "cache: {l1: {ttl: 60}}\n"; /* compress: the defaults */
    sophia_conf *conf = sophia_conf_load_string("/tmp/t.yaml", y, strlen(y),
                                                &d);
    assert_int_equal(d.count, 0);
    free(conf->redis_url);
    free(conf->pg_url);
    conf->redis_url = strdup(redis_url());
    conf->pg_url = strdup(env_url("SOPHIA_PG_URL"));
    sophia_cache *c = sophia_cache_new(conf, base);
    run_until(base, tiers_up, c, WAIT_MS, "L2 and L3 up");
    size_t t = conf->compress.threshold, n;
    char *old2 = json_doc(5000, 21), *old3 = json_doc(5000, 31);
    char *big = json_doc(10000, 41), *edge = padded(t), *over = padded(t + 1);

    /* Old entries, written plain behind the cache's back, read as such. */
    redis_put_plain(k("old2"), old2);
    pg_put_plain(k("old3"), old3);
    expect_read(base, c, k("old2"), old2, SOPHIA_CACHE_L2);
    expect_read(base, c, k("old3"), old3, SOPHIA_CACHE_L3);
    /* The L3 hit was promoted into L2: compressed there now. */
    char *s = redis_stored(k("old3"), &n);
    assert_non_null(s);
    assert_true(sophia_zstd_packed(s, n) && n < strlen(old3));
    free(s);

    /* New entries: a large one compressed in both tiers, read back plain
     * from each; the threshold itself stays plain, one byte over not. */
    put_all(base, c, k("big"), big);
    put_all(base, c, k("edge"), edge);
    put_all(base, c, k("over"), over);
    s = redis_stored(k("big"), &n);
    assert_true(s[0] == '\0' && s[1] == '\1' && n < strlen(big) / 2);
    free(s);
    assert_int_equal(pg_stored(k("big"), &n), 0);
    assert_true(n < strlen(big) / 2);
    s = redis_stored(k("edge"), &n);
    assert_int_equal(n, t);
    assert_memory_equal(s, edge, t);
    free(s);
    assert_int_equal(pg_stored(k("edge"), &n), '{');
    assert_int_equal(n, t);
    s = redis_stored(k("over"), &n);
    assert_true(sophia_zstd_packed(s, n));
    free(s);
    assert_int_equal(pg_stored(k("over"), &n), 0);
    expect_read(base, c, k("big"), big, SOPHIA_CACHE_L2);
    expect_read(base, c, k("over"), over, SOPHIA_CACHE_L2);
    redis_del(k("big"));
    expect_read(base, c, k("big"), big, SOPHIA_CACHE_L3);
    expect_read(base, c, k("big"), big, SOPHIA_CACHE_L2); /* re-promoted */

    sophia_cache_free(c);
    sophia_conf_free(conf);
    sophia_diag_free(&d);
    event_base_free(base);
    free(old2);
    free(old3);
    free(big);
    free(edge);
    free(over);
}

int main(void)
{
    snprintf(pfx, sizeof(pfx), "tz%d:", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_threshold_and_round_trip),
        cmocka_unit_test(test_pack_off_incompressible_and_corrupt),
        cmocka_unit_test(test_dictionary),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_old_and_new_entries_side_by_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
