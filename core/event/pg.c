/*
 * pg - see pg.h for the contract.
 *
 * Why pipeline mode: the cache writes many small independent upserts. Sent
 * one at a time, each costs a full round trip before the next may leave;
 * pipelined, a burst leaves in one go and the server works through it while
 * results stream back. Each query gets its own Sync (PQpipelineSync), which
 * keeps the semantics of one-at-a-time: an error aborts only its own
 * statement, every statement commits on its own, and libpq hands back its
 * results in order: result(s), NULL, PGRES_PIPELINE_SYNC (no NULL follows a
 * sync). A callback fires on the sync, not on the first result, because the
 * implicit transaction commits at the Sync: a COMMAND_OK seen before it is
 * not yet durable, and the cache's "never drop a write" needs the durable
 * point. libpq 15's PQpipelineSync flushes each time (PQsendPipelineSync is
 * 17+), so a burst still costs one send() per query but no round trips.
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
 * Sending never happens inside sophia_pg_query: it queues and activates a
 * "kick" event, so callbacks never run re-entrantly inside a caller, and a
 * burst of queries queued in one callback leaves together.
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
#include "lib/backoff.h"
#include "lib/log.h"

#define PG_BACKOFF_MIN_S 0.1
#define PG_BACKOFF_MAX_S 5.0
#define PG_CONNECT_TIMEOUT_S 10
#define PG_ERR_LEN 512
#define PG_MAX_PARAMS 65535 /* the protocol's Int16 parameter count */

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

typedef enum pg_state { PG_WAIT, PG_CONNECTING, PG_SETUP, PG_UP } pg_state;

typedef enum pg_kind {
    OP_QUERY,    /* user: PQsendQueryParams */
    OP_PREPARED, /* user: PQsendQueryPrepared */
    OP_PREPARE,  /* internal: PQsendPrepare of a registered statement */
    OP_SCHEMA,   /* internal: one schema statement */
} pg_kind;

typedef struct pg_stmt {
    char *name;
    char *sql;
    int nparams;
    uint64_t gen; /* connection generation it is prepared on; 0 = none */
} pg_stmt;

typedef struct pg_op {
    struct pg_op *next;
    pg_kind kind;
    bool setup;   /* part of the connect sequence */
    bool retried; /* OP_SCHEMA: already re-sent after a catalog race */
    int nparams;
    int result_format;
    const char *sql; /* OP_QUERY (copied below), OP_SCHEMA (static) */
    pg_stmt *stmt;   /* OP_PREPARED, OP_PREPARE */
    const char **values;
    int *lengths;
    int *formats;
    sophia_pg_cb cb;
    void *arg;
    PGresult *res; /* kept until the Sync arrives */
} pg_op;

typedef struct pg_fifo {
    pg_op *head;
    pg_op *tail;
    size_t n;
} pg_fifo;

struct sophia_pg {
    struct event_base *base;
    char *conninfo;
    int connect_timeout_s;
    PGconn *conn;
    pg_state state;
    uint64_t gen; /* bumped per established connection */
    struct event *rev; /* read (or, while connecting, the polled direction) */
    struct event *wev; /* write, added only while PQflush has output left */
    bool write_wanted;
    struct event *retry_timer;
    struct event *connect_timer;
    struct event *kick;
    bool kick_pending;
    bool closing;
    sophia_backoff backoff; /* reconnect schedule, with jitter */
    bool ever_up;
    bool down_logged;
    unsigned attempts; /* failed attempts since the link was last up */
    int64_t down_since_ms;
    size_t setup_left;
    pg_fifo queue;    /* user queries not yet sent */
    pg_fifo setup;    /* connect sequence not yet sent */
    pg_fifo inflight; /* sent, awaiting their Sync, in order */
    size_t queue_max;
    pg_stmt **stmts;
    size_t nstmts;
    char last_error[PG_ERR_LEN];
    char fatal[PG_ERR_LEN]; /* FATAL notice from the server, if any */
    sophia_pg_stats st;
};

static void pg_fail(sophia_pg *p, const char *reason);
static void pg_pump(sophia_pg *p);

/* ------------------------------------------------------------- helpers */

static int64_t pg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq messages span lines ("...failed: Connection refused\n\tIs the
 * server running..."); logs and /healthz want one line. */
static void pg_oneline(char *dst, size_t len, const char *src)
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

static void fifo_push(pg_fifo *f, pg_op *op)
{
    op->next = NULL;
    if (f->tail)
        f->tail->next = op;
    else
        f->head = op;
    f->tail = op;
    f->n++;
}

static pg_op *fifo_pop(pg_fifo *f)
{
    pg_op *op = f->head;
    if (!op)
        return NULL;
    f->head = op->next;
    if (!f->head)
        f->tail = NULL;
    f->n--;
    op->next = NULL;
    return op;
}

static bool op_internal(const pg_op *op)
{
    return op->kind == OP_PREPARE || op->kind == OP_SCHEMA;
}

static void op_free(pg_op *op)
{
    PQclear(op->res);
    free(op);
}

static bool res_ok(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

static bool res_is_fatal(const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    return sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC"));
}

static const char *res_err(const PGresult *res, char *buf, size_t len)
{
    pg_oneline(buf, len, PQresultErrorMessage(res));
    if (!*buf)
        snprintf(buf, len, "%s", PQresStatus(PQresultStatus(res)));
    return buf;
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

/* ----------------------------------------------------------- query ops */

static int op_check(int nparams, const char *const *values,
                    const int *lengths, const int *formats, int rfmt)
{
    if (nparams < 0 || nparams > PG_MAX_PARAMS || (nparams && !values) ||
        (rfmt != 0 && rfmt != 1))
        return SOPHIA_EINVAL;
    for (int i = 0; i < nparams; i++) {
        if (!values[i] || !formats || formats[i] == 0)
            continue;
        if (formats[i] != 1 || !lengths || lengths[i] < 0)
            return SOPHIA_EINVAL;
    }
    return 0;
}

static size_t param_len(int i, const char *const *values, const int *lengths,
                        const int *formats)
{
    if (!values[i])
        return 0;
    if (formats && formats[i] == 1)
        return (size_t)lengths[i];
    return strlen(values[i]) + 1;
}

/* One allocation: the op, its parameter arrays, the SQL and the values. */
static pg_op *op_new(pg_kind kind, const char *sql, int nparams,
                     const char *const *values, const int *lengths,
                     const int *formats, int rfmt)
{
    size_t n = (size_t)nparams;
    size_t sqllen = kind == OP_QUERY ? strlen(sql) + 1 : 0;
    size_t data = 0;
    for (int i = 0; i < nparams; i++)
        data += param_len(i, values, lengths, formats);
    size_t arrays = n * (sizeof(char *) + 2 * sizeof(int));
    pg_op *op = calloc(1, sizeof(*op) + arrays + sqllen + data);
    if (!op)
        return NULL;
    op->kind = kind;
    op->nparams = nparams;
    op->result_format = rfmt;
    op->values = (const char **)(op + 1);
    op->lengths = (int *)(op->values + n);
    op->formats = op->lengths + n;
    char *w = (char *)(op->formats + n);
    if (sqllen) {
        memcpy(w, sql, sqllen);
        op->sql = w;
        w += sqllen;
    } else {
        op->sql = sql;
    }
    for (int i = 0; i < nparams; i++) {
        size_t len = param_len(i, values, lengths, formats);
        op->formats[i] = formats ? formats[i] : 0;
        op->lengths[i] = (int)(op->formats[i] ? len : 0);
        op->values[i] = values[i] ? w : NULL;
        if (len)
            memcpy(w, values[i], len);
        w += len;
    }
    return op;
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

static void pg_kick(sophia_pg *p)
{
    if (p->state != PG_UP || p->kick_pending)
        return;
    p->kick_pending = true;
    event_active(p->kick, EV_TIMEOUT, 0);
}

/* Writes out what libpq buffered; asks for EV_WRITE while some is left.
 * Returns -1 when that failed the connection. */
static int pg_flush(sophia_pg *p)
{
    int r = PQflush(p->conn);
    if (r < 0) {
        pg_fail(p, PQerrorMessage(p->conn));
        return -1;
    }
    if (r > 0 && !p->write_wanted)
        event_add(p->wev, NULL);
    else if (r == 0 && p->write_wanted)
        event_del(p->wev);
    p->write_wanted = r > 0;
    return 0;
}

/* ------------------------------------------------------------ delivery */

static void pg_deliver(sophia_pg *p, pg_op *op, PGresult *res,
                       const char *reason)
{
    char buf[PG_ERR_LEN];
    const char *err = NULL;
    if (!res)
        err = reason && *reason ? reason : "connection lost";
    else if (!res_ok(res))
        err = res_err(res, buf, sizeof(buf));
    if (err)
        p->st.errors++;
    if (op->cb)
        op->cb(op->arg, res, err);
    PQclear(res);
    free(op);
}

/* An op that never got its Sync: its own error (say the FATAL the server
 * sent before closing) explains more than the generic reason. */
static void pg_abort_op(sophia_pg *p, pg_op *op, const char *reason)
{
    char buf[PG_ERR_LEN];
    if (op_internal(op)) {
        op_free(op);
        return;
    }
    if (op->res && !res_ok(op->res))
        reason = res_err(op->res, buf, sizeof(buf));
    PQclear(op->res);
    op->res = NULL;
    pg_deliver(p, op, NULL, reason);
}

static void pg_abort_fifo(sophia_pg *p, pg_fifo *f, const char *reason)
{
    pg_op *op;
    while ((op = fifo_pop(f)))
        pg_abort_op(p, op, reason);
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
static void pg_fail(sophia_pg *p, const char *reason)
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

static void pg_setup_done(sophia_pg *p, pg_op *op, PGresult *res)
{
    /* q holds a quoted error or "schema setup failed: " + an error */
    char buf[PG_ERR_LEN], q[PG_ERR_LEN + 32];
    if (op->kind == OP_SCHEMA && !res_ok(res) && pg_is_race(res) &&
        !op->retried) {
        pg_op *again = op_new(OP_SCHEMA, op->sql, 0, NULL, NULL, NULL, 0);
        if (again) {
            sophia_debug("pg", "msg=\"schema creation raced, re-running\" "
                               "err=%s",
                         sophia_log_quote(res_err(res, buf, sizeof(buf)), q,
                                          sizeof(q)));
            again->setup = again->retried = true;
            fifo_push(&p->setup, again);
            return;
        }
    }
    if (op->kind == OP_SCHEMA && !res_ok(res)) {
        snprintf(q, sizeof(q), "schema setup failed: %s",
                 res_err(res, buf, sizeof(buf)));
        pg_fail(p, q);
        return;
    }
    if (op->kind == OP_PREPARE) {
        if (res_ok(res) || res_state_is(res, "42P05")) /* already there */
            op->stmt->gen = p->gen;
        else
            sophia_error("pg", "msg=\"prepare failed\" name=%s err=%s",
                         sophia_log_quote(op->stmt->name, q, sizeof(q)),
                         res_err(res, buf, sizeof(buf)));
    }
    if (op->setup && --p->setup_left == 0 && p->state == PG_SETUP)
        pg_up(p);
}

/* The Sync of the head in-flight op arrived: it is complete. */
static void pg_complete(sophia_pg *p, pg_op *op)
{
    PGresult *res = op->res;
    op->res = NULL;
    if (!op_internal(op)) {
        pg_deliver(p, op, res, "no result");
        return;
    }
    pg_setup_done(p, op, res);
    PQclear(res);
    free(op);
}

static int pg_queue_setup(sophia_pg *p)
{
    p->setup_left = 0;
    for (size_t i = 0; i < PG_NSCHEMA + p->nstmts; i++) {
        pg_op *op = i < PG_NSCHEMA
                        ? op_new(OP_SCHEMA, pg_schema_sql[i], 0, NULL, NULL,
                                 NULL, 0)
                        : op_new(OP_PREPARE, NULL, 0, NULL, NULL, NULL, 0);
        if (!op)
            return -1;
        if (i >= PG_NSCHEMA)
            op->stmt = p->stmts[i - PG_NSCHEMA];
        op->setup = true;
        fifo_push(&p->setup, op);
        p->setup_left++;
    }
    return 0;
}

/* ------------------------------------------------------ sending, reading */

static int pg_send(sophia_pg *p, pg_op *op)
{
    int ok = 0;
    switch (op->kind) {
    case OP_QUERY:
    case OP_SCHEMA:
        ok = PQsendQueryParams(p->conn, op->sql, op->nparams, NULL,
                               op->values, op->lengths, op->formats,
                               op->result_format);
        break;
    case OP_PREPARED:
        ok = PQsendQueryPrepared(p->conn, op->stmt->name, op->nparams,
                                 op->values, op->lengths, op->formats,
                                 op->result_format);
        break;
    case OP_PREPARE:
        ok = PQsendPrepare(p->conn, op->stmt->name, op->stmt->sql,
                           op->stmt->nparams, NULL);
        break;
    }
    return ok && PQpipelineSync(p->conn);
}

/* Sends from the queue the state allows, up to the pipeline depth. */
static void pg_pump(sophia_pg *p)
{
    if (p->state != PG_SETUP && p->state != PG_UP)
        return;
    pg_fifo *q = p->state == PG_UP ? &p->queue : &p->setup;
    bool sent = false;
    while (q->head && p->inflight.n < SOPHIA_PG_PIPELINE_MAX) {
        pg_op *op = fifo_pop(q);
        if (op->kind == OP_PREPARE && op->stmt->gen == p->gen) {
            op_free(op); /* the connect sequence already prepared it */
            continue;
        }
        /* In flight even if sending fails: the caller then gets NULL and
         * decides; putting it back could loop on a query libpq refuses. */
        fifo_push(&p->inflight, op);
        if (!op_internal(op))
            p->st.queries_sent++;
        if (!pg_send(p, op)) {
            pg_fail(p, PQerrorMessage(p->conn));
            return;
        }
        sent = true;
    }
    if (sent)
        pg_flush(p);
}

/* Keeps the result that tells the most: the first error, else the first.
 * A FATAL one also becomes the reason for the disconnect that follows. */
static void pg_keep(sophia_pg *p, pg_op *op, PGresult *r)
{
    if (res_is_fatal(r))
        pg_oneline(p->fatal, sizeof(p->fatal), PQresultErrorMessage(r));
    if (!op->res || (res_ok(op->res) && !res_ok(r))) {
        PQclear(op->res);
        op->res = r;
    } else {
        PQclear(r);
    }
}

/* Takes every result libpq can give without blocking. Stops when the
 * connection failed (the caller checks p->conn / PQstatus). */
static void pg_drain(sophia_pg *p)
{
    int nulls = 0;
    while (p->conn && p->inflight.head && !PQisBusy(p->conn)) {
        /* Once the link is bad libpq would only invent errors (and try to
         * wait on a closed socket); the caller fails what is in flight. */
        if (PQstatus(p->conn) == CONNECTION_BAD)
            return;
        PGresult *r = PQgetResult(p->conn);
        if (!r) {
            if (++nulls > 1) /* defensive: never spin */
                return;
            continue;
        }
        nulls = 0;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            pg_complete(p, fifo_pop(&p->inflight));
        } else {
            pg_keep(p, p->inflight.head, r);
        }
    }
}

static void pg_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    int ok = PQconsumeInput(p->conn);
    pg_drain(p);
    if (!p->conn)
        return;
    if (!ok || PQstatus(p->conn) == CONNECTION_BAD) {
        /* Parse what arrived before the EOF: a server closing an idle
         * link says why in a FATAL message, which reaches pg_on_notice. */
        (void)PQisBusy(p->conn);
        pg_fail(p, PQerrorMessage(p->conn));
        return;
    }
    if (p->write_wanted && pg_flush(p) < 0)
        return;
    pg_pump(p);
}

static void pg_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    if (pg_flush(p) == 0)
        pg_pump(p);
}

static void pg_on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    p->kick_pending = false;
    pg_pump(p);
}

/* ----------------------------------------------------------- connecting */

static void pg_on_notice(void *arg, const PGresult *res)
{
    sophia_pg *p = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[PG_ERR_LEN], q[PG_ERR_LEN + 16];
    pg_oneline(msg, sizeof(msg), PQresultErrorMessage(res));
    sev = sev ? sev : "";
    if (res_is_fatal(res))
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

/* --------------------------------------------------------------- queries */

static int pg_admit(const sophia_pg *p)
{
    if (p->closing)
        return SOPHIA_EUNAVAIL;
    if (p->queue.n + p->inflight.n >= p->queue_max)
        return SOPHIA_EBUSY;
    return 0;
}

static void pg_enqueue(sophia_pg *p, pg_op *op, sophia_pg_cb cb, void *arg)
{
    op->cb = cb;
    op->arg = arg;
    fifo_push(&p->queue, op);
    pg_kick(p);
}

int sophia_pg_query_fmt(sophia_pg *p, const char *sql, int nparams,
                        const char *const *values, const int *lengths,
                        const int *formats, int result_format,
                        sophia_pg_cb cb, void *arg)
{
    if (!p || !sql)
        return SOPHIA_EINVAL;
    int rc = op_check(nparams, values, lengths, formats, result_format);
    if (rc == 0)
        rc = pg_admit(p);
    if (rc != 0)
        return rc;
    pg_op *op = op_new(OP_QUERY, sql, nparams, values, lengths, formats,
                       result_format);
    if (!op)
        return SOPHIA_ENOMEM;
    pg_enqueue(p, op, cb, arg);
    return 0;
}

int sophia_pg_query(sophia_pg *p, const char *sql, int nparams,
                    const char *const *values, const int *lengths,
                    const int *formats, sophia_pg_cb cb, void *arg)
{
    return sophia_pg_query_fmt(p, sql, nparams, values, lengths, formats, 0,
                               cb, arg);
}

static pg_stmt *pg_find_stmt(const sophia_pg *p, const char *name)
{
    for (size_t i = 0; i < p->nstmts; i++)
        if (!strcmp(p->stmts[i]->name, name))
            return p->stmts[i];
    return NULL;
}

static pg_stmt *pg_add_stmt(sophia_pg *p, const char *name, const char *sql,
                            int nparams)
{
    pg_stmt **grown = realloc(p->stmts, (p->nstmts + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    p->stmts = grown;
    pg_stmt *s = calloc(1, sizeof(*s));
    if (s) {
        s->name = strdup(name);
        s->sql = strdup(sql);
        s->nparams = nparams;
    }
    if (!s || !s->name || !s->sql) {
        if (s) {
            free(s->name);
            free(s->sql);
        }
        free(s);
        return NULL;
    }
    p->stmts[p->nstmts++] = s;
    return s;
}

int sophia_pg_prepare(sophia_pg *p, const char *name, const char *sql,
                      int nparams)
{
    if (!p || !name || !*name || !sql || nparams < 0 ||
        nparams > PG_MAX_PARAMS)
        return SOPHIA_EINVAL;
    pg_stmt *s = pg_find_stmt(p, name);
    if (s)
        return strcmp(s->sql, sql) ? SOPHIA_EINVAL : 0;
    int rc = pg_admit(p);
    if (rc != 0)
        return rc;
    pg_op *op = op_new(OP_PREPARE, NULL, 0, NULL, NULL, NULL, 0);
    if (!op || !(op->stmt = pg_add_stmt(p, name, sql, nparams))) {
        free(op);
        return SOPHIA_ENOMEM;
    }
    /* Queued in order with user queries so the ones queued after it find
     * it prepared; skipped if a (re)connect sequence got there first. */
    pg_enqueue(p, op, NULL, NULL);
    return 0;
}

int sophia_pg_query_prepared(sophia_pg *p, const char *name, int nparams,
                             const char *const *values, const int *lengths,
                             const int *formats, int result_format,
                             sophia_pg_cb cb, void *arg)
{
    if (!p || !name)
        return SOPHIA_EINVAL;
    pg_stmt *s = pg_find_stmt(p, name);
    if (!s)
        return SOPHIA_ENOENT;
    int rc = op_check(nparams, values, lengths, formats, result_format);
    if (rc == 0)
        rc = pg_admit(p);
    if (rc != 0)
        return rc;
    pg_op *op = op_new(OP_PREPARED, NULL, nparams, values, lengths, formats,
                       result_format);
    if (!op)
        return SOPHIA_ENOMEM;
    op->stmt = s;
    pg_enqueue(p, op, cb, arg);
    return 0;
}
