/*
 * pg_priv - what the two files of the pg module share (pg.c: the
 * connection, reconnect, setup and lifecycle; pg_query.c: the query queue,
 * sending, results and callbacks). Not for other modules: they use pg.h.
 */
#ifndef SOPHIA_PG_PRIV_H
#define SOPHIA_PG_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>
#include <libpq-fe.h>

#include "event/pg.h"
#include "lib/backoff.h"

#define PG_ERR_LEN 512

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

/* pg.c: the connection */

/* libpq messages span lines; logs and /healthz want one line. */
void pg_oneline(char *dst, size_t len, const char *src);
/* The link is gone (or never came): back to WAIT, the retry armed. */
void pg_fail(sophia_pg *p, const char *reason);
/* A connect-sequence op (schema, prepare) got its Sync. */
void pg_setup_done(sophia_pg *p, pg_op *op, PGresult *res);

/* pg_query.c: the pipeline */

void pg_fifo_push(pg_fifo *f, pg_op *op);
pg_op *pg_op_new(pg_kind kind, const char *sql, int nparams,
                 const char *const *values, const int *lengths,
                 const int *formats, int rfmt);
bool pg_res_ok(const PGresult *res);
bool pg_res_is_fatal(const PGresult *res);
const char *pg_res_err(const PGresult *res, char *buf, size_t len);
/* Answers every op of f with NULL and reason (internal ones just go). */
void pg_abort_fifo(sophia_pg *p, pg_fifo *f, const char *reason);
/* Sends from the queue the state allows, up to the pipeline depth. */
void pg_pump(sophia_pg *p);
/* The libevent callbacks of an established link. */
void pg_on_read(evutil_socket_t fd, short what, void *arg);
void pg_on_write(evutil_socket_t fd, short what, void *arg);
void pg_on_kick(evutil_socket_t fd, short what, void *arg);

#endif
