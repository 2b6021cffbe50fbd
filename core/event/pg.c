/*
 * pg - the connection of a sophia_pg: connecting, losing it, reconnecting,
 * the schema and statements set up on each new link, the handle's
 * lifecycle. See pg.h for the contract; the query pipeline that runs on
 * the link (queue, sending, results, callbacks) is pg_query.c.
 *
 * States: WAIT (no connection, retry timer armed) -> CONNECTING (one-shot
 * events follow PQconnectPoll; the socket may change between steps, e.g.
 * another address of the host, so the event is rebuilt every step) ->
 * SETUP (connected, pipeline on; schema + statement preparation go first,
 * from a private queue) -> UP (the user queue flows). Any failure returns
 * to WAIT: the in-flight queries get a NULL result, the queued ones stay.
 * One timer bounds CONNECTING + SETUP so a server that accepts and then
 * hangs (a lock held on the table) cannot keep us "almost up" forever.
 *
 * Logging: one warn when the link goes down (first failed attempt or loss)
 * and one when it comes back; the attempts in between are debug lines.
 * Server notices go through our logger instead of libpq's default stderr
 * printer; a FATAL one (e.g. "terminating connection due to administrator
 * command") is kept as the reason for the drop that follows.
 */
#include "event/pg.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <sophia/sdk.h>

#include "event/loop.h"
#include "event/pg_priv.h"
#include "lib/backoff.h"
#include "lib/log.h"

#define PG_BACKOFF_MIN_S 0.1
#define PG_BACKOFF_MAX_S 5.0
#define PG_CONNECT_TIMEOUT_S 10

/* Run on every (re)connect, in order. IF NOT EXISTS makes them idempotent;
 * two daemons racing can still collide in the catalogs (see pg_is_race). */
static const char *const pg_schema_sql[] = {
    "CREATE TABLE IF NOT EXISTS sophia_cache ("
    "key text PRIMARY KEY, "
    "value bytea NOT NULL, "
    "tags text[] NOT NULL DEFAULT '{}', "
    "expires_at timestamptz, "
    "version bigint NOT NULL DEFAULT 0, "
    "updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS sophia_cache_tags ON sophia_cache "
    "USING GIN (tags)",
    "CREATE INDEX IF NOT EXISTS sophia_cache_expires ON sophia_cache "
    "(expires_at)",
};
#define PG_NSCHEMA (sizeof(pg_schema_sql) / sizeof(pg_schema_sql[0]))

/* Extra connection defaults placed before the user's conninfo, which can
 * override them: keepalives notice a silently dead peer in ~1 min instead
 * of the kernel's 2 h, and the server sees who we are. */
static const char *const pg_kw[] = {"keepalives_idle", "keepalives_interval",
                                    "keepalives_count",
                                    "fallback_application_name", "dbname",
                                    NULL};
static const char *const pg_kw_defaults[] = {"30", "10", "3", "sophiad"};

/* ------------------------------------------------------------- helpers */

static int64_t pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq messages span lines ("...failed: Connection refused\n\tIs the
 * server running..."); logs and /healthz want one line. */
void pg_oneline(char *dst, size_t len, const char *src)
{
    size_t o = 0;
    bool space = false;
    for (; src && *src && o + 1 < len; src++) {
        if (*src == '\n' || *src == '\t' || *src == '\r' || *src == ' ') {
            space = o > 0;
            continue;
        }
        if (space && o + 2 < len)
            dst[o++] = ' ';
        space = false;
        dst[o++] = *src;
    }
    dst[o] = '\0';
}

static bool res_state_is(const PGresult *res, const char *state)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s && strcmp(s, state) == 0;
}

/* Two daemons running CREATE ... IF NOT EXISTS at once: the loser fails on
 * a catalog unique index (23505) or sees the object appear (42P07, 42710).
 * The object then exists; re-running the statement confirms it. */
static bool pg_is_race(const PGresult *res)
{
    return res_state_is(res, "23505") || res_state_is(res, "42P07") ||
           res_state_is(res, "42710");
}

/* --------------------------------------------------------------- events */

static void pg_drop_events(sophia_pg *p)
{
    if (p->rev)
        event_free(p->rev);
    if (p->wev)
        event_free(p->wev);
    p->rev = p->wev = NULL;
    p->write_wanted = false;
}

static void pg_close_conn(sophia_pg *p)
{
    pg_drop_events(p);
    evtimer_del(p->connect_timer);
    if (p->conn)
        PQfinish(p->conn);
    p->conn = NULL;
}

/* ------------------------------------------------------- state changes */

static void pg_log_down(sophia_pg *p, bool was_up, const char *why,
                        unsigned retry_ms)
{
    char q[PG_ERR_LEN + 16];
    sophia_log_quote(why, q, sizeof(q));
    if (was_up)
        sophia_warn("pg", "msg=\"connection lost\" err=%s retry_ms=%u", q,
                    retry_ms);
    else if (!p->down_logged)
        sophia_warn("pg", "msg=\"connect failed\" err=%s retry_ms=%u", q,
                    retry_ms);
    else
        sophia_debug("pg", "msg=\"connect failed\" attempt=%u err=%s",
                     p->attempts, q);
    if (!p->down_logged)
        p->down_since_ms = pg_now_ms();
    p->down_logged = true;
}

/* The link is gone (or never came): back to WAIT with the retry armed,
 * in-flight queries answered with NULL, queued ones kept. */
void pg_fail(sophia_pg *p, const char *reason)
{
    char why[PG_ERR_LEN];
    pg_oneline(why, sizeof(why), p->fatal[0] ? p->fatal : reason);
    if (!*why)
        snprintf(why, sizeof(why), "connection failed");
    bool was_up = p->state == PG_UP;
    pg_close_conn(p);
    p->state = PG_WAIT;
    p->attempts++;
    p->st.connect_failures++;
    snprintf(p->last_error, sizeof(p->last_error), "%s", why);
    double wait = sophia_backoff_next(&p->backoff);
    pg_log_down(p, was_up, why, (unsigned)(wait * 1000));

    struct timeval tv = sophia_timeval(wait);
    evtimer_add(p->retry_timer, &tv);
    pg_abort_fifo(p, &p->setup, why);
    pg_abort_fifo(p, &p->inflight, why);
}

static void pg_up(sophia_pg *p)
{
    evtimer_del(p->connect_timer);
    p->state = PG_UP;
    sophia_backoff_reset(&p->backoff);
    p->last_error[0] = '\0';
    if (p->ever_up)
        p->st.reconnects++;
    if (p->down_logged)
        sophia_warn("pg",
                    "msg=\"connection restored\" down_ms=%lld attempts=%u",
                    (long long)(pg_now_ms() - p->down_since_ms), p->attempts);
    else
        sophia_info("pg", "msg=connected");
    p->ever_up = true;
    p->down_logged = false;
    p->attempts = 0;
}

/* ------------------------------------------------------- connect setup */

void pg_setup_done(sophia_pg *p, pg_op *op, PGresult *res)
{
    /* q holds a quoted error or "schema setup failed: " + an error */
    char buf[PG_ERR_LEN], q[PG_ERR_LEN + 32];
    if (op->kind == OP_SCHEMA && !pg_res_ok(res) && pg_is_race(res) &&
        !op->retried) {
        pg_op *again = pg_op_new(OP_SCHEMA, op->sql, 0, NULL, NULL, NULL, 0);
        if (again) {
            sophia_debug("pg", "msg=\"schema creation raced, re-running\" "
                               "err=%s",
                         sophia_log_quote(pg_res_err(res, buf, sizeof(buf)),
                                          q, sizeof(q)));
            again->setup = again->retried = true;
            pg_fifo_push(&p->setup, again);
            return;
        }
    }
    if (op->kind == OP_SCHEMA && !pg_res_ok(res)) {
        snprintf(q, sizeof(q), "schema setup failed: %s",
                 pg_res_err(res, buf, sizeof(buf)));
        pg_fail(p, q);
        return;
    }
    if (op->kind == OP_PREPARE) {
        if (pg_res_ok(res) || res_state_is(res, "42P05")) /* already there */
            op->stmt->gen = p->gen;
        else
            sophia_error("pg", "msg=\"prepare failed\" name=%s err=%s",
                         sophia_log_quote(op->stmt->name, q, sizeof(q)),
                         pg_res_err(res, buf, sizeof(buf)));
    }
    if (op->setup && --p->setup_left == 0 && p->state == PG_SETUP)
        pg_up(p);
}

static int pg_queue_setup(sophia_pg *p)
{
    p->setup_left = 0;
    for (size_t i = 0; i < PG_NSCHEMA + p->nstmts; i++) {
        pg_op *op =
            i < PG_NSCHEMA
                ? pg_op_new(OP_SCHEMA, pg_schema_sql[i], 0, NULL, NULL, NULL,
                            0)
                : pg_op_new(OP_PREPARE, NULL, 0, NULL, NULL, NULL, 0);
        if (!op)
            return -1;
        if (i >= PG_NSCHEMA)
            op->stmt = p->stmts[i - PG_NSCHEMA];
        op->setup = true;
        pg_fifo_push(&p->setup, op);
        p->setup_left++;
    }
    return 0;
}

/* ----------------------------------------------------------- connecting */

static void pg_on_notice(void *arg, const PGresult *res)
{
    sophia_pg *p = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[PG_ERR_LEN], q[PG_ERR_LEN + 16];
    pg_oneline(msg, sizeof(msg), PQresultErrorMessage(res));
    sev = sev ? sev : "";
    if (pg_res_is_fatal(res))
        snprintf(p->fatal, sizeof(p->fatal), "%s", msg);
    sophia_log(strcmp(sev, "WARNING") ? SOPHIA_LVL_DEBUG : SOPHIA_LVL_WARN,
               "pg", "msg=\"server notice\" severity=%s text=%s", sev,
               sophia_log_quote(msg, q, sizeof(q)));
}

static void pg_connected(sophia_pg *p)
{
    if (PQsetnonblocking(p->conn, 1) != 0 || !PQenterPipelineMode(p->conn)) {
        pg_fail(p, PQerrorMessage(p->conn));
        return;
    }
    pg_drop_events(p);
    evutil_socket_t fd = PQsocket(p->conn);
    p->rev = event_new(p->base, fd, EV_READ | EV_PERSIST, pg_on_read, p);
    p->wev = event_new(p->base, fd, EV_WRITE | EV_PERSIST, pg_on_write, p);
    if (!p->rev || !p->wev || event_add(p->rev, NULL) < 0 ||
        pg_queue_setup(p) < 0) {
        pg_fail(p, "out of memory");
        return;
    }
    p->gen++;
    p->state = PG_SETUP;
    pg_pump(p);
}

static void pg_on_connect_io(evutil_socket_t fd, short what, void *arg);

/* Waits for the direction PQconnectPoll asked for, on the current socket. */
static void pg_poll_wait(sophia_pg *p, PostgresPollingStatusType st)
{
    pg_drop_events(p);
    evutil_socket_t fd = PQsocket(p->conn);
    short dir = st == PGRES_POLLING_READING ? EV_READ : EV_WRITE;
    if (fd < 0) {
        pg_fail(p, PQerrorMessage(p->conn));
        return;
    }
    p->rev = event_new(p->base, fd, dir, pg_on_connect_io, p);
    if (!p->rev || event_add(p->rev, NULL) < 0)
        pg_fail(p, "cannot watch the connection socket");
}

static void pg_on_connect_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    PostgresPollingStatusType st = PQconnectPoll(p->conn);
    if (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING)
        pg_poll_wait(p, st);
    else if (st == PGRES_POLLING_OK)
        pg_connected(p);
    else
        pg_fail(p, PQerrorMessage(p->conn));
}

static void pg_start_connect(sophia_pg *p)
{
    const char *values[] = {pg_kw_defaults[0], pg_kw_defaults[1],
                            pg_kw_defaults[2], pg_kw_defaults[3], p->conninfo,
                            NULL};
    p->fatal[0] = '\0';
    p->conn = PQconnectStartParams(pg_kw, values, 1);
    if (!p->conn) {
        pg_fail(p, "out of memory");
        return;
    }
    if (PQstatus(p->conn) == CONNECTION_BAD) {
        pg_fail(p, PQerrorMessage(p->conn));
        return;
    }
    PQsetNoticeReceiver(p->conn, pg_on_notice, p);
    p->state = PG_CONNECTING;
    struct timeval tv = {p->connect_timeout_s, 0};
    evtimer_add(p->connect_timer, &tv);
    /* As if PQconnectPoll had said WRITING: libpq's documented start. */
    pg_poll_wait(p, PGRES_POLLING_WRITING);
}

static void pg_on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_start_connect(arg);
}

static void pg_on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    char why[64];
    snprintf(why, sizeof(why), "timeout after %d s while %s",
             p->connect_timeout_s,
             p->state == PG_SETUP ? "setting up the schema" : "connecting");
    pg_fail(p, why);
}

/* ------------------------------------------------------------ lifecycle */

/* Validates conninfo up front (a typo should fail at startup, not retry
 * forever) and reads connect_timeout, which async libpq leaves to us. */
static int pg_parse_conninfo(sophia_pg *p, const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        char msg[PG_ERR_LEN], q[PG_ERR_LEN + 16];
        pg_oneline(msg, sizeof(msg), err ? err : "out of memory");
        sophia_error("pg", "msg=\"bad conninfo\" err=%s",
                     sophia_log_quote(msg, q, sizeof(q)));
        PQfreemem(err);
        return -1;
    }
    p->connect_timeout_s = PG_CONNECT_TIMEOUT_S;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        int t = o->val && !strcmp(o->keyword, "connect_timeout") ? atoi(o->val)
                                                                 : 0;
        if (t > 0) /* libpq's own rule: less than 2 s means 2 s */
            p->connect_timeout_s = t < 2 ? 2 : t;
    }
    PQconninfoFree(opts);
    return 0;
}

sophia_pg *sophia_pg_new(struct event_base *base, const char *conninfo)
{
    if (!base || !conninfo || !*conninfo)
        return NULL;
    sophia_pg *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->base = base;
    p->queue_max = SOPHIA_PG_QUEUE_MAX;
    sophia_backoff_init(&p->backoff, PG_BACKOFF_MIN_S, PG_BACKOFF_MAX_S,
                        (unsigned long long)(uintptr_t)p);
    p->conninfo = strdup(conninfo);
    p->retry_timer = evtimer_new(base, pg_on_retry, p);
    p->connect_timer = evtimer_new(base, pg_on_connect_timeout, p);
    p->kick = event_new(base, -1, 0, pg_on_kick, p);
    if (!p->conninfo || !p->retry_timer || !p->connect_timer || !p->kick ||
        pg_parse_conninfo(p, conninfo) < 0) {
        sophia_pg_free(p);
        return NULL;
    }
    pg_start_connect(p);
    return p;
}

void sophia_pg_free(sophia_pg *p)
{
    if (!p)
        return;
    p->closing = true;
    pg_close_conn(p);
    pg_abort_fifo(p, &p->setup, "closed");
    pg_abort_fifo(p, &p->inflight, "closed");
    pg_abort_fifo(p, &p->queue, "closed");
    if (p->retry_timer)
        event_free(p->retry_timer);
    if (p->connect_timer)
        event_free(p->connect_timer);
    if (p->kick)
        event_free(p->kick);
    for (size_t i = 0; i < p->nstmts; i++) {
        free(p->stmts[i]->name);
        free(p->stmts[i]->sql);
        free(p->stmts[i]);
    }
    free(p->stmts);
    free(p->conninfo);
    free(p);
}

int sophia_pg_up(const sophia_pg *p)
{
    return p && p->state == PG_UP;
}

const char *sophia_pg_last_error(const sophia_pg *p)
{
    return p ? p->last_error : "";
}

void sophia_pg_get_stats(const sophia_pg *p, sophia_pg_stats *out)
{
    *out = p->st;
    out->up = sophia_pg_up(p);
    out->queue_depth = p->queue.n + p->inflight.n;
    out->in_flight = p->inflight.n;
}

void sophia_pg_set_queue_max(sophia_pg *p, size_t n)
{
    p->queue_max = n ? n : 1;
}