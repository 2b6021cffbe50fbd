/*
 * test_pg - the PostgreSQL connection against a real server named by
 * SOPHIA_PG_URL (the test harness starts a throwaway one; unset is a
 * failure, never a skip).
 *
 * Every test drives a real event_base and bounds each wait with a timer, so
 * a hang is a failure with the name of what never happened. The server is
 * shared with other tests: rows use keys unique to this process, and the
 * concurrent-setup test works in a schema of its own (search_path) so it can
 * create sophia_cache from scratch without touching anyone's table.
 * Blocking libpq calls appear only on the test's own admin connection.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <libpq-fe.h>
#include <sophia/sdk.h>

#include "event/pg.h"
#include "event/pg_pool.h"

#include "../common/loop_wait.h"

#define WAIT_MS 15000

/* ------------------------------------------------------------- helpers */

static const char *pg_url(void)
{
    const char *u = getenv("SOPHIA_PG_URL");
    if (!u || !*u)
        fail_msg("SOPHIA_PG_URL is not set: it must name a throwaway "
                 "PostgreSQL database (libpq conninfo or URI), e.g. "
                 "postgresql://postgres@127.0.0.1:55432/sophia. The test "
                 "harness exports it; this test does not skip without it.");
    return u;
}

static bool is_up(void *arg)
{
    return sophia_pg_up(arg);
}

static bool is_down(void *arg)
{
    return !sophia_pg_up(arg);
}

static bool flag_set(void *arg)
{
    return *(bool *)arg;
}

/* One query's outcome, copied out of the callback. */
typedef struct qres {
    bool done;
    bool null_res;
    ExecStatusType status;
    int ntuples;
    bool has_err;
    char err[512];
    char cell[256]; /* row 0, column 0, text */
    int calls;
} qres;

static void on_qres(void *arg, PGresult *res, const char *err)
{
    qres *q = arg;
    q->calls++;
    q->done = true;
    q->null_res = res == NULL;
    q->has_err = err != NULL;
    snprintf(q->err, sizeof(q->err), "%s", err ? err : "");
    if (!res)
        return;
    q->status = PQresultStatus(res);
    q->ntuples = PQntuples(res);
    if (q->ntuples > 0 && PQnfields(res) > 0)
        snprintf(q->cell, sizeof(q->cell), "%s", PQgetvalue(res, 0, 0));
}

static bool q_done(void *arg)
{
    return ((qres *)arg)->done;
}

/* Queues sql (text params) and runs the loop until its callback. */
static void run_query(struct event_base *base, sophia_pg *p, const char *sql,
                      int n, const char *const *vals, qres *q)
{
    memset(q, 0, sizeof(*q));
    assert_int_equal(sophia_pg_query(p, sql, n, vals, NULL, NULL, on_qres, q),
                     0);
    run_until(base, q_done, q, WAIT_MS, sql);
}

static void expect_ok(const qres *q)
{
    if (q->null_res || q->has_err)
        fail_msg("query failed: null=%d err=%s", q->null_res, q->err);
}

static sophia_pg *connect_up(struct event_base *base, const char *conninfo)
{
    sophia_pg *p = sophia_pg_new(base, conninfo);
    assert_non_null(p);
    run_until(base, is_up, p, WAIT_MS, "connection up");
    return p;
}

static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* Blocking admin connection, test side only. */
static PGconn *admin_connect(void)
{
    PGconn *c = PQconnectdb(pg_url());
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("admin connection failed: %s", PQerrorMessage(c));
    PQsetNoticeProcessor(c, quiet_notice, NULL); /* "...skipping" chatter */
    return c;
}

static void admin_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        fail_msg("admin query failed: %s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

static void admin_terminate(const char *pid)
{
    PGconn *c = admin_connect();
    const char *v[1] = {pid};
    PGresult *r = PQexecParams(c, "SELECT pg_terminate_backend($1::int)", 1,
                               NULL, v, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    PQfinish(c);
}

static void unique_key(char *buf, size_t len, const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(buf, len, "test_pg:%s:%d:%lld.%09ld", what, (int)getpid(),
             (long long)ts.tv_sec, ts.tv_nsec);
}

/* ------------------------------------------------------------- tests */

static void test_connects_and_reports_up(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_pg *p = sophia_pg_new(base, pg_url());
    assert_non_null(p);
    assert_false(sophia_pg_up(p)); /* sophia_pg_new must not block */
    run_until(base, is_up, p, WAIT_MS, "connection up");
    assert_string_equal(sophia_pg_last_error(p), "");

    qres q;
    run_query(base, p, "SELECT 1 + 1", 0, NULL, &q);
    expect_ok(&q);
    assert_int_equal(q.status, PGRES_TUPLES_OK);
    assert_string_equal(q.cell, "2");

    sophia_pg_stats st;
    sophia_pg_get_stats(p, &st);
    assert_int_equal(st.up, 1);
    assert_int_equal(st.queries_sent, 1);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.reconnects, 0);
    assert_int_equal(st.queue_depth, 0);
    sophia_pg_free(p);
    event_base_free(base);
}

static void test_rejects_bad_arguments(void **state)
{
    (void)state;
    assert_null(sophia_pg_new(NULL, "host=127.0.0.1"));
    struct event_base *base = event_base_new();
    assert_null(sophia_pg_new(base, NULL));
    assert_null(sophia_pg_new(base, "")); /* empty = L3 disabled */
    assert_null(sophia_pg_new(base, "host=127.0.0.1 nosuchoption=1"));
    assert_null(sophia_pg_new(base, "postgresql://[broken"));

    sophia_pg *p = sophia_pg_new(base, pg_url());
    assert_non_null(p);
    const char *v[1] = {"x"};
    const int fmt[1] = {1};
    assert_int_equal(sophia_pg_query(p, NULL, 0, NULL, NULL, NULL, NULL, NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(sophia_pg_query(p, "SELECT $1", 1, NULL, NULL, NULL,
                                     NULL, NULL),
                     SOPHIA_EINVAL);
    /* binary parameter without a length */
    assert_int_equal(sophia_pg_query(p, "SELECT $1", 1, v, NULL, fmt, NULL,
                                     NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(sophia_pg_query_fmt(p, "SELECT 1", 0, NULL, NULL, NULL,
                                         2, NULL, NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(sophia_pg_query_prepared(p, "never_registered", 0, NULL,
                                              NULL, NULL, 0, NULL, NULL),
                     SOPHIA_ENOENT);
    assert_int_equal(sophia_pg_prepare(p, "s1", "SELECT 1", 0), 0);
    assert_int_equal(sophia_pg_prepare(p, "s1", "SELECT 1", 0), 0);
    assert_int_equal(sophia_pg_prepare(p, "s1", "SELECT 2", 0),
                     SOPHIA_EINVAL);
    sophia_pg_free(p);
    event_base_free(base);
}

static void test_schema_exists(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_pg *p = connect_up(base, pg_url());

    qres q;
    run_query(base, p,
              "SELECT string_agg(column_name || ':' || data_type, ',' "
              "ORDER BY ordinal_position) FROM information_schema.columns "
              "WHERE table_schema = current_schema() "
              "AND table_name = 'sophia_cache'",
              0, NULL, &q);
    expect_ok(&q);
    assert_string_equal(q.cell,
                        "key:text,value:bytea,tags:ARRAY,"
                        "expires_at:timestamp with time zone,"
                        "version:bigint,"
                        "updated_at:timestamp with time zone");

    run_query(base, p,
              "SELECT string_agg(indexname, ',' ORDER BY indexname) "
              "FROM pg_indexes WHERE schemaname = current_schema() "
              "AND tablename = 'sophia_cache'",
              0, NULL, &q);
    expect_ok(&q);
    assert_string_equal(q.cell,
                        "sophia_cache_expires,sophia_cache_pkey,"
                        "sophia_cache_tags");

    run_query(base, p,
              "SELECT indexdef LIKE '%USING gin (tags)%' FROM pg_indexes "
              "WHERE schemaname = current_schema() "
              "AND indexname = 'sophia_cache_tags'",
              0, NULL, &q);
    expect_ok(&q);
    assert_string_equal(q.cell, "t");
    sophia_pg_free(p);
    event_base_free(base);
}

/* Binary SELECT of value and version, checked against expectations. */
typedef struct binq {
    bool done;
    bool ok;
    unsigned char val[64];
    int len;
    char tags[64];
} binq;

static void on_binq(void *arg, PGresult *res, const char *err)
{
    binq *b = arg;
    b->done = true;
    b->ok = res && !err && PQntuples(res) == 1;
    if (!b->ok)
        return;
    b->len = PQgetlength(res, 0, 0);
    if (b->len > 0 && b->len <= (int)sizeof(b->val))
        memcpy(b->val, PQgetvalue(res, 0, 0), (size_t)b->len);
}

static bool binq_done(void *arg)
{
    return ((binq *)arg)->done;
}

#define UPSERT_SQL                                                            \
    "INSERT INTO sophia_cache (key, value, tags, version) "                   \
    "VALUES ($1, $2, $3::text[], 1) "                                         \
    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "                \
    "tags = EXCLUDED.tags, version = sophia_cache.version + 1, "             \
    "updated_at = now()"

static void upsert(struct event_base *base, sophia_pg *p, const char *key,
                   const unsigned char *val, int len, const char *tags)
{
    const char *v[3] = {key, (const char *)val, tags};
    const int lens[3] = {0, len, 0};
    const int fmts[3] = {0, 1, 0};
    qres q = {0};
    assert_int_equal(
        sophia_pg_query(p, UPSERT_SQL, 3, v, lens, fmts, on_qres, &q), 0);
    run_until(base, q_done, &q, WAIT_MS, "upsert");
    expect_ok(&q);
    assert_int_equal(q.status, PGRES_COMMAND_OK);
}

static void test_upsert_bytea_roundtrip(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_pg *p = connect_up(base, pg_url());
    char key[128];
    unique_key(key, sizeof(key), "bytea");

    /* NUL, high bytes and a quote: only a binary parameter keeps them. */
    const unsigned char v1[] = {0x00, 0x01, 0xff, '\'', 0x80, 0x00, 'z'};
    const unsigned char v2[] = {0xde, 0xad, 0x00, 0xbe, 0xef};
    upsert(base, p, key, v1, (int)sizeof(v1), "{a,b}");
    upsert(base, p, key, v2, (int)sizeof(v2), "{user_data}");

    /* text result: bytea arrives hex-escaped */
    const char *k[1] = {key};
    qres q;
    run_query(base, p,
              "SELECT value::text || '|' || version || '|' || "
              "array_to_string(tags, ',') FROM sophia_cache WHERE key = $1",
              1, k, &q);
    expect_ok(&q);
    assert_int_equal(q.ntuples, 1);
    assert_string_equal(q.cell, "\\xdead00beef|2|user_data");

    /* binary result: the raw bytes */
    binq b = {0};
    assert_int_equal(sophia_pg_query_fmt(p,
                                         "SELECT value FROM sophia_cache "
                                         "WHERE key = $1",
                                         1, k, NULL, NULL, 1, on_binq, &b),
                     0);
    run_until(base, binq_done, &b, WAIT_MS, "binary select");
    assert_true(b.ok);
    assert_int_equal(b.len, (int)sizeof(v2));
    assert_memory_equal(b.val, v2, sizeof(v2));

    /* the same through a prepared statement, binary both ways */
    assert_int_equal(sophia_pg_prepare(p, "test_get_value",
                                       "SELECT value FROM sophia_cache "
                                       "WHERE key = $1",
                                       1),
                     0);
    memset(&b, 0, sizeof(b));
    assert_int_equal(sophia_pg_query_prepared(p, "test_get_value", 1, k, NULL,
                                              NULL, 1, on_binq, &b),
                     0);
    run_until(base, binq_done, &b, WAIT_MS, "prepared select");
    assert_true(b.ok);
    assert_memory_equal(b.val, v2, sizeof(v2));

    run_query(base, p, "DELETE FROM sophia_cache WHERE key = $1", 1, k, &q);
    expect_ok(&q);
    sophia_pg_free(p);
    event_base_free(base);
}

/* Many queries, queued before the connection is even up. */
enum { MANY = 3000 };

typedef struct order_ctx {
    int next;      /* index expected next */
    int bad;       /* out-of-order or wrong value */
    size_t max_inflight;
    sophia_pg *p;
} order_ctx;

typedef struct order_item {
    order_ctx *ctx;
    int idx;
} order_item;

static void on_order(void *arg, PGresult *res, const char *err)
{
    order_item *it = arg;
    order_ctx *c = it->ctx;
    sophia_pg_stats st;
    sophia_pg_get_stats(c->p, &st);
    if (st.in_flight > c->max_inflight)
        c->max_inflight = st.in_flight;
    if (!res || err || it->idx != c->next ||
        atoi(PQgetvalue(res, 0, 0)) != it->idx * 7)
        c->bad++;
    c->next++;
}

static bool order_done(void *arg)
{
    return ((order_ctx *)arg)->next == MANY;
}

static void test_many_queued_complete_in_order(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_pg *p = sophia_pg_new(base, pg_url());
    assert_non_null(p);
    order_ctx c = {0, 0, 0, p};
    order_item *items = calloc(MANY, sizeof(*items));
    assert_non_null(items);
    for (int i = 0; i < MANY; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *v[1] = {num};
        items[i] = (order_item){&c, i};
        assert_int_equal(sophia_pg_query(p, "SELECT $1::int * 7", 1, v, NULL,
                                         NULL, on_order, &items[i]),
                         0);
    }
    sophia_pg_stats st;
    sophia_pg_get_stats(p, &st);
    assert_int_equal(st.queue_depth, MANY);
    assert_int_equal(st.queries_sent, 0); /* nothing leaves synchronously */

    run_until(base, order_done, &c, 60000, "all queued queries");
    assert_int_equal(c.bad, 0);
    assert_true(c.max_inflight <= SOPHIA_PG_PIPELINE_MAX);
    assert_true(c.max_inflight > 1); /* they really were pipelined */
    sophia_pg_get_stats(p, &st);
    assert_int_equal(st.queries_sent, MANY);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.queue_depth, 0);
    sophia_pg_free(p);
    event_base_free(base);
    free(items);
}

/* A failing statement is answered with its error; its neighbours in the
 * same pipeline are not affected (one Sync per query). */
static void test_error_does_not_spill_over(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_pg *p = connect_up(base, pg_url());
    qres a = {0}, b = {0}, c = {0};
    assert_int_equal(sophia_pg_query(p, "SELECT 'a'", 0, NULL, NULL, NULL,
                                     on_qres, &a),
                     0);
    assert_int_equal(sophia_pg_query(p, "SELECT * FROM no_such_table_xyz", 0,
                                     NULL, NULL, NULL, on_qres, &b),
                     0);
    assert_int_equal(sophia_pg_query(p, "SELECT 'c'", 0, NULL, NULL, NULL,
                                     on_qres, &c),
                     0);
    run_until(base, q_done, &c, WAIT_MS, "third query");
    assert_true(a.done && b.done);
    expect_ok(&a);
    assert_string_equal(a.cell, "a");
    assert_false(b.null_res); /* a real result, not a connection failure */
    assert_true(b.has_err);
    assert_int_equal(b.status, PGRES_FATAL_ERROR);
    assert_non_null(strstr(b.err, "no_such_table_xyz"));
    expect_ok(&c);
    assert_string_equal(c.cell, "c");
    sophia_pg_stats st;
    sophia_pg_get_stats(p, &st);
    assert_int_equal(st.errors, 1);
    assert_true(sophia_pg_up(p));
    sophia_pg_free(p);
    event_base_free(base);
}

/* A port nothing listens on: bind an ephemeral port, then close it. */
static int dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

typedef struct ticker {
    struct event *ev;
    int ticks;
} ticker;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ((ticker *)arg)->ticks++;
}

static void on_elapsed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

static void test_unreachable_stays_down_without_blocking(void **state)
{
    (void)state;
    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d dbname=sophia user=postgres", dead_port());
    struct event_base *base = event_base_new();
    sophia_pg *p = sophia_pg_new(base, conninfo);
    assert_non_null(p);

    /* A 10 ms timer must keep firing while connections are attempted. */
    ticker tk = {0};
    tk.ev = event_new(base, -1, EV_PERSIST, on_tick, &tk);
    struct timeval ten = {0, 10000};
    event_add(tk.ev, &ten);

    qres q = {0};
    assert_int_equal(sophia_pg_query(p, "SELECT 1", 0, NULL, NULL, NULL,
                                     on_qres, &q),
                     0);
    bool elapsed = false;
    struct event *t = evtimer_new(base, on_elapsed, &elapsed);
    struct timeval span = {0, 800000};
    evtimer_add(t, &span);
    run_until(base, flag_set, &elapsed, 5000, "800 ms of loop time");
    event_free(t);
    event_free(tk.ev);

    assert_true(tk.ticks >= 40); /* ~80 expected; the loop never stalled */
    assert_false(sophia_pg_up(p));
    assert_false(q.done); /* waits for a connection, not failed */
    const char *err = sophia_pg_last_error(p);
    assert_true(strlen(err) > 0);
    assert_non_null(strstr(err, "refused"));
    sophia_pg_stats st;
    sophia_pg_get_stats(p, &st);
    /* Retried, but backing off: waits are drawn with decorrelated jitter
     * between the 100 ms base and 3x the previous wait (lib/backoff.h),
     * so 800 ms hold at least 2 attempts (0, then <= 300 ms) and at most
     * 9 (one per 100 ms); a retry loop without back-off makes hundreds. */
    assert_true(st.connect_failures >= 2 && st.connect_failures <= 9);
    assert_int_equal(st.queue_depth, 1);
    assert_int_equal(st.queries_sent, 0);

    /* the bound: queued + in flight */
    sophia_pg_set_queue_max(p, 5);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sophia_pg_query(p, "SELECT 1", 0, NULL, NULL, NULL,
                                         NULL, NULL),
                         0);
    assert_int_equal(sophia_pg_query(p, "SELECT 1", 0, NULL, NULL, NULL,
                                     on_qres, &q),
                     SOPHIA_EBUSY);
    assert_false(q.done);

    /* freeing answers what is still queued, so callers can let go */
    sophia_pg_free(p);
    assert_true(q.done);
    assert_int_equal(q.calls, 1);
    assert_true(q.null_res);
    assert_string_equal(q.err, "closed");
    event_base_free(base);
}

static void test_reconnects_after_backend_terminated(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_pg *p = connect_up(base, pg_url());
    assert_int_equal(sophia_pg_prepare(p, "test_add",
                                       "SELECT $1::int + $2::int", 2),
                     0);
    qres pid1;
    run_query(base, p, "SELECT pg_backend_pid()", 0, NULL, &pid1);
    expect_ok(&pid1);

    /* (a) a query in flight when the backend dies gets NULL + a reason */
    qres sleeper = {0};
    assert_int_equal(sophia_pg_query(p, "SELECT pg_sleep(30)", 0, NULL, NULL,
                                     NULL, on_qres, &sleeper),
                     0);
    sophia_pg_stats st;
    for (int i = 0; i < 100; i++) { /* until it is on the wire */
        event_base_loop(base, EVLOOP_NONBLOCK);
        sophia_pg_get_stats(p, &st);
        if (st.in_flight == 1)
            break;
    }
    assert_int_equal(st.in_flight, 1);
    admin_terminate(pid1.cell);
    run_until(base, q_done, &sleeper, WAIT_MS, "in-flight query to fail");
    assert_true(sleeper.null_res);
    assert_true(sleeper.has_err);
    assert_true(strlen(sleeper.err) > 0);
    assert_false(sophia_pg_up(p)); /* backing off before the reconnect */
    assert_true(strlen(sophia_pg_last_error(p)) > 0);

    /* (b) queued while down: runs after the automatic reconnect */
    qres after = {0};
    assert_int_equal(sophia_pg_query(p, "SELECT pg_backend_pid()", 0, NULL,
                                     NULL, NULL, on_qres, &after),
                     0);
    run_until(base, q_done, &after, WAIT_MS, "query after reconnect");
    expect_ok(&after);
    assert_string_not_equal(after.cell, pid1.cell);
    assert_true(sophia_pg_up(p));
    assert_string_equal(sophia_pg_last_error(p), "");

    /* the prepared statement was prepared again on the new connection */
    const char *v[2] = {"40", "2"};
    qres add = {0};
    assert_int_equal(sophia_pg_query_prepared(p, "test_add", 2, v, NULL, NULL,
                                              0, on_qres, &add),
                     0);
    run_until(base, q_done, &add, WAIT_MS, "prepared after reconnect");
    expect_ok(&add);
    assert_string_equal(add.cell, "42");

    /* (c) killed while idle: noticed without any traffic, reconnected */
    admin_terminate(after.cell);
    run_until(base, is_down, p, WAIT_MS, "idle connection loss noticed");
    run_until(base, is_up, p, WAIT_MS, "reconnect after idle loss");
    run_query(base, p, "SELECT 'again'", 0, NULL, &add);
    expect_ok(&add);
    assert_string_equal(add.cell, "again");

    sophia_pg_get_stats(p, &st);
    assert_int_equal(st.reconnects, 2);
    assert_int_equal(st.connect_failures, 2);
    assert_true(st.errors >= 1);
    sophia_pg_free(p);
    event_base_free(base);
}

/* ----------------------------------------- concurrent schema creation */

/* The harness URL as a keyword=value string, minus the `skip` keywords
 * (space-separated, each followed by a space), plus `extra`. */
static void build_conninfo(char *buf, size_t len, const char *skip,
                           const char *extra)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(pg_url(), &err);
    if (!opts)
        fail_msg("cannot parse SOPHIA_PG_URL: %s", err ? err : "?");
    size_t o = 0;
    for (PQconninfoOption *op = opts; op->keyword; op++) {
        char kw[64];
        snprintf(kw, sizeof(kw), "%s ", op->keyword);
        if (!op->val || strstr(skip, kw))
            continue;
        o += (size_t)snprintf(buf + o, len - o, "%s='", op->keyword);
        for (const char *s = op->val; *s && o + 4 < len; s++) {
            if (*s == '\'' || *s == '\\')
                buf[o++] = '\\';
            buf[o++] = *s;
        }
        o += (size_t)snprintf(buf + o, len - o, "' ");
        assert_true(o < len);
    }
    snprintf(buf + o, len - o, "%s", extra);
    PQconninfoFree(opts);
}

/* ------------------------------------ a server that is late to answer */

/* A TCP front for the real server: first it accepts and says nothing (a
 * server that hangs during startup), then it forwards byte for byte. */
typedef struct fwd {
    struct event_base *base;
    struct evconnlistener *lis;
    struct sockaddr_storage target;
    int target_len;
    bool forward;
    int held[16];
    int nheld;
    int pairs; /* open forwarded connections */
} fwd;

static void fwd_read(struct bufferevent *bev, void *ctx)
{
    bufferevent_write_buffer(ctx, bufferevent_get_input(bev));
}

typedef struct fwd_pair {
    fwd *f;
    struct bufferevent *a, *b;
} fwd_pair;

static void fwd_event(struct bufferevent *bev, short what, void *ctx)
{
    (void)bev;
    fwd_pair *fp = ctx;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    bufferevent_free(fp->a);
    bufferevent_free(fp->b);
    fp->f->pairs--;
    free(fp);
}

static void fwd_read_a(struct bufferevent *bev, void *ctx)
{
    fwd_read(bev, ((fwd_pair *)ctx)->b);
}

static void fwd_read_b(struct bufferevent *bev, void *ctx)
{
    fwd_read(bev, ((fwd_pair *)ctx)->a);
}

static void fwd_accept(struct evconnlistener *l, evutil_socket_t fd,
                       struct sockaddr *addr, int alen, void *arg)
{
    (void)l;
    (void)addr;
    (void)alen;
    fwd *f = arg;
    if (!f->forward) {
        assert_true(f->nheld < 16);
        f->held[f->nheld++] = fd;
        return;
    }
    fwd_pair *fp = calloc(1, sizeof(*fp));
    assert_non_null(fp);
    fp->f = f;
    fp->a = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    fp->b = bufferevent_socket_new(f->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(fp->a, fwd_read_a, NULL, fwd_event, fp);
    bufferevent_setcb(fp->b, fwd_read_b, NULL, fwd_event, fp);
    bufferevent_enable(fp->a, EV_READ | EV_WRITE);
    bufferevent_enable(fp->b, EV_READ | EV_WRITE);
    assert_int_equal(bufferevent_socket_connect(
                         fp->b, (struct sockaddr *)&f->target, f->target_len),
                     0);
    f->pairs++;
}

/* Where the real server is, as the admin connection found it. */
static void fwd_target(fwd *f)
{
    PGconn *c = admin_connect();
    const char *host = PQhost(c);
    const char *port = PQport(c);
    memset(&f->target, 0, sizeof(f->target));
    if (host[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&f->target;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%s", host,
                 port);
        f->target_len = (int)sizeof(*un);
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
        assert_int_equal(getaddrinfo(host, port, &hints, &ai), 0);
        memcpy(&f->target, ai->ai_addr, ai->ai_addrlen);
        f->target_len = (int)ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    PQfinish(c);
}

static int fwd_start(fwd *f, struct event_base *base)
{
    memset(f, 0, sizeof(*f));
    f->base = base;
    fwd_target(f);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->lis = evconnlistener_new_bind(base, fwd_accept, f,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                     16, (struct sockaddr *)&a, sizeof(a));
    assert_non_null(f->lis);
    socklen_t len = sizeof(a);
    getsockname(evconnlistener_get_fd(f->lis), (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

static bool fwd_closed(void *arg)
{
    return ((fwd *)arg)->pairs == 0;
}

static bool timed_out(void *arg)
{
    return strstr(sophia_pg_last_error(arg), "timeout") != NULL;
}

static void test_late_server_connect_timeout_then_queue_runs(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    fwd f;
    int port = fwd_start(&f, base);
    char extra[128], conninfo[2048];
    snprintf(extra, sizeof(extra),
             "host=127.0.0.1 port=%d connect_timeout=2", port);
    build_conninfo(conninfo, sizeof(conninfo),
                   "host hostaddr port connect_timeout ", extra);

    sophia_pg *p = sophia_pg_new(base, conninfo);
    assert_non_null(p);
    qres q = {0};
    const char *v[1] = {"queued while down"};
    assert_int_equal(sophia_pg_query(p, "SELECT $1::text", 1, v, NULL, NULL,
                                     on_qres, &q),
                     0);
    /* the server accepts but never answers: the attempt must time out */
    run_until(base, timed_out, p, 6000, "connect timeout");
    assert_false(sophia_pg_up(p));
    assert_false(q.done);
    assert_true(f.nheld >= 1);

    /* now the server answers: the reconnect runs the queued query */
    f.forward = true;
    run_until(base, q_done, &q, WAIT_MS, "queued query after server came");
    expect_ok(&q);
    assert_string_equal(q.cell, "queued while down");
    assert_true(sophia_pg_up(p));
    sophia_pg_stats st;
    sophia_pg_get_stats(p, &st);
    assert_true(st.connect_failures >= 1);
    assert_int_equal(st.reconnects, 0); /* the first connection, if late */

    sophia_pg_free(p);
    run_until(base, fwd_closed, &f, WAIT_MS, "forwarded connection closed");
    evconnlistener_free(f.lis);
    for (int i = 0; i < f.nheld; i++)
        close(f.held[i]);
    event_base_free(base);
}

static bool all_up(void *arg)
{
    sophia_pg **ps = arg;
    for (int i = 0; i < 4; i++)
        if (!sophia_pg_up(ps[i]))
            return false;
    return true;
}

static void test_concurrent_schema_setup(void **state)
{
    (void)state;
    char schema[64], sql[160], conninfo[2048];
    snprintf(schema, sizeof(schema), "test_pg_race_%d", (int)getpid());
    PGconn *admin = admin_connect();
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", schema);
    admin_exec(admin, sql);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", schema);
    admin_exec(admin, sql);
    snprintf(sql, sizeof(sql), "options='-c search_path=%s'", schema);
    build_conninfo(conninfo, sizeof(conninfo), "options ", sql);

    /* Four daemons starting at once race on CREATE ... IF NOT EXISTS. */
    struct event_base *base = event_base_new();
    sophia_pg *ps[4];
    for (int i = 0; i < 4; i++) {
        ps[i] = sophia_pg_new(base, conninfo);
        assert_non_null(ps[i]);
    }
    run_until(base, all_up, ps, WAIT_MS, "four connections up");
    for (int i = 0; i < 4; i++) {
        sophia_pg_stats st;
        sophia_pg_get_stats(ps[i], &st);
        assert_int_equal(st.connect_failures, 0); /* the race was absorbed */
    }

    qres q;
    run_query(base, ps[0],
              "SELECT count(*) FROM pg_indexes WHERE schemaname = "
              "current_schema() AND tablename = 'sophia_cache'",
              0, NULL, &q);
    expect_ok(&q);
    assert_string_equal(q.cell, "3");
    run_query(base, ps[3], "SELECT current_schema()", 0, NULL, &q);
    expect_ok(&q);
    assert_string_equal(q.cell, schema);

    for (int i = 0; i < 4; i++)
        sophia_pg_free(ps[i]);
    event_base_free(base);
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", schema);
    admin_exec(admin, sql);
    PQfinish(admin);
}

/* ------------------------------------------------------------- pg_pool */

static bool pool_all_up(void *arg)
{
    return sophia_pg_pool_nup(arg) == sophia_pg_pool_size(arg);
}

/* Runs `name` (no parameters) with `route` on the pool; the first cell. */
static void pool_query(struct event_base *base, sophia_pg_pool *pp,
                       const char *route, qres *q)
{
    memset(q, 0, sizeof(*q));
    assert_int_equal(sophia_pg_pool_query_prepared(pp, route, "pool_pid", 0,
                                                   NULL, NULL, NULL, 0,
                                                   on_qres, q),
                     0);
    run_until(base, q_done, q, WAIT_MS, "pool query");
    expect_ok(q);
}

static bool pool_degraded(void *arg)
{
    return sophia_pg_pool_nup(arg) < sophia_pg_pool_size(arg);
}

static int distinct(char pids[][256], int n)
{
    int d = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = !strcmp(pids[i], pids[j]);
        d += !seen;
    }
    return d;
}

static bool all_done(void *arg)
{
    qres *q = arg;
    for (int i = 0; i < 30; i++)
        if (!q[i].done)
            return false;
    return true;
}

static void test_pool_routes_and_survives_a_lost_connection(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_null(sophia_pg_pool_new(base, pg_url(), 0));
    assert_null(sophia_pg_pool_new(base, pg_url(), SOPHIA_PG_POOL_MAX + 1));
    assert_null(sophia_pg_pool_new(base, "", 2));
    sophia_pg_pool *pp = sophia_pg_pool_new(base, pg_url(), 3);
    assert_non_null(pp);
    assert_int_equal(sophia_pg_pool_size(pp), 3);
    assert_int_equal(sophia_pg_pool_prepare(pp, "pool_pid",
                                            "SELECT pg_backend_pid()", 0),
                     0);
    run_until(base, pool_all_up, pp, WAIT_MS, "every pool connection up");
    assert_string_equal(sophia_pg_pool_last_error(pp), "");

    /* One route, one connection (one backend), every time. */
    qres a, q;
    pool_query(base, pp, "key:a", &a);
    for (int i = 0; i < 5; i++) {
        pool_query(base, pp, "key:a", &q);
        assert_string_equal(q.cell, a.cell);
    }
    /* Routes spread over every connection. */
    static char pids[30][256];
    for (int i = 0; i < 30; i++) {
        char route[32];
        snprintf(route, sizeof(route), "key:%d", i);
        pool_query(base, pp, route, &q);
        snprintf(pids[i], sizeof(pids[i]), "%s", q.cell);
    }
    assert_int_equal(distinct(pids, 30), 3);
    /* Unrouted queries queued together go to the least busy: all three. */
    static qres burst[30];
    memset(burst, 0, sizeof(burst));
    for (int i = 0; i < 30; i++)
        assert_int_equal(sophia_pg_pool_query_prepared(pp, NULL, "pool_pid",
                                                       0, NULL, NULL, NULL, 0,
                                                       on_qres, &burst[i]),
                         0);
    run_until(base, all_done, burst, WAIT_MS, "unrouted burst");
    for (int i = 0; i < 30; i++) {
        expect_ok(&burst[i]);
        snprintf(pids[i], sizeof(pids[i]), "%s", burst[i].cell);
    }
    assert_int_equal(distinct(pids, 30), 3);

    /* The connection of "key:a" dies: the pool stays up on the others, a
     * write routed there waits for its reconnect and runs on a new backend
     * with the statement prepared again. */
    admin_terminate(a.cell);
    run_until(base, pool_degraded, pp, WAIT_MS, "the idle loss noticed");
    assert_true(sophia_pg_pool_up(pp));
    assert_true(strlen(sophia_pg_pool_last_error(pp)) > 0);
    pool_query(base, pp, "key:a", &q);
    assert_string_not_equal(q.cell, a.cell);
    run_until(base, pool_all_up, pp, WAIT_MS, "pool back to full strength");

    sophia_pg_stats st;
    sophia_pg_pool_get_stats(pp, &st);
    assert_true(st.up);
    assert_true(st.queries_sent >= 67);
    assert_int_equal(st.reconnects, 1);
    assert_int_equal(st.queue_depth, 0);
    sophia_pg_pool_free(pp);
    event_base_free(base);
}

int main(void)
{
    if (!getenv("SOPHIA_PG_URL") || !*getenv("SOPHIA_PG_URL"))
        fprintf(stderr, "test_pg: SOPHIA_PG_URL is not set; the tests that "
                        "need a server will fail (deliberately, not skip)\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connects_and_reports_up),
        cmocka_unit_test(test_rejects_bad_arguments),
        cmocka_unit_test(test_schema_exists),
        cmocka_unit_test(test_upsert_bytea_roundtrip),
        cmocka_unit_test(test_many_queued_complete_in_order),
        cmocka_unit_test(test_error_does_not_spill_over),
        cmocka_unit_test(test_unreachable_stays_down_without_blocking),
        cmocka_unit_test(test_reconnects_after_backend_terminated),
        cmocka_unit_test(test_late_server_connect_timeout_then_queue_runs),
        cmocka_unit_test(test_concurrent_schema_setup),
        cmocka_unit_test(test_pool_routes_and_survives_a_lost_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
