/*
 * pg_query - the query pipeline of a sophia_pg: queries queued, sent on
 * the link pg.c keeps up, their results read back and handed to their
 * callbacks in order. See pg.h for the contract.
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
 * Sending never happens inside sophia_pg_query: it queues and activates a
 * "kick" event, so callbacks never run re-entrantly inside a caller, and a
 * burst of queries queued in one callback leaves together.
 */
#include "event/pg.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sophia/sdk.h>

#include "event/pg_priv.h"

#define PG_MAX_PARAMS 65535 /* the protocol's Int16 parameter count */

/* ------------------------------------------------------ fifos, results */

void pg_fifo_push(pg_fifo *f, pg_op *op)
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

bool pg_res_ok(const PGresult *res)
{
    ExecStatusType s = PQresultStatus(res);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

bool pg_res_is_fatal(const PGresult *res)
{
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    return sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC"));
}

const char *pg_res_err(const PGresult *res, char *buf, size_t len)
{
    pg_oneline(buf, len, PQresultErrorMessage(res));
    if (!*buf)
        snprintf(buf, len, "%s", PQresStatus(PQresultStatus(res)));
    return buf;
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
pg_op *pg_op_new(pg_kind kind, const char *sql, int nparams,
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

/* ------------------------------------------------------------ delivery */

static void pg_deliver(sophia_pg *p, pg_op *op, PGresult *res,
                       const char *reason)
{
    char buf[PG_ERR_LEN];
    const char *err = NULL;
    if (!res)
        err = reason && *reason ? reason : "connection lost";
    else if (!pg_res_ok(res))
        err = pg_res_err(res, buf, sizeof(buf));
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
    if (op->res && !pg_res_ok(op->res))
        reason = pg_res_err(op->res, buf, sizeof(buf));
    PQclear(op->res);
    op->res = NULL;
    pg_deliver(p, op, NULL, reason);
}

void pg_abort_fifo(sophia_pg *p, pg_fifo *f, const char *reason)
{
    pg_op *op;
    while ((op = fifo_pop(f)))
        pg_abort_op(p, op, reason);
}

/* ------------------------------------------------------ sending, reading */

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
void pg_pump(sophia_pg *p)
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
        pg_fifo_push(&p->inflight, op);
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
    if (pg_res_is_fatal(r))
        pg_oneline(p->fatal, sizeof(p->fatal), PQresultErrorMessage(r));
    if (!op->res || (pg_res_ok(op->res) && !pg_res_ok(r))) {
        PQclear(op->res);
        op->res = r;
    } else {
        PQclear(r);
    }
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

void pg_on_read(evutil_socket_t fd, short what, void *arg)
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

void pg_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    if (pg_flush(p) == 0)
        pg_pump(p);
}

void pg_on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_pg *p = arg;
    p->kick_pending = false;
    pg_pump(p);
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
    pg_fifo_push(&p->queue, op);
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
    pg_op *op = pg_op_new(OP_QUERY, sql, nparams, values, lengths, formats,
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
    pg_op *op = pg_op_new(OP_PREPARE, NULL, 0, NULL, NULL, NULL, 0);
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
    pg_op *op = pg_op_new(OP_PREPARED, NULL, nparams, values, lengths, formats,
                          result_format);
    if (!op)
        return SOPHIA_ENOMEM;
    op->stmt = s;
    pg_enqueue(p, op, cb, arg);
    return 0;
}
