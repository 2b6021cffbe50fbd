/*
 * pg - one libpq connection on the loop, for the L3 cache tier (and any
 * other core module that keeps rows in PostgreSQL).
 *
 * Everything is non-blocking: connecting is PQconnectStart + PQconnectPoll
 * driven by libevent events on PQsocket(), queries are parameterized only
 * (PQsendQueryParams / PQsendQueryPrepared) and results are read with
 * PQconsumeInput + PQgetResult when the socket is readable. The one
 * exception libpq imposes: a host *name* in the conninfo is resolved with a
 * blocking getaddrinfo() when a connection attempt starts; give `hostaddr`
 * (or an IP in `host`) where that matters.
 *
 * Queries run in order on one connection in libpq pipeline mode, each
 * followed by its own Sync, so one failing statement never aborts its
 * neighbours and each is its own implicit transaction. Up to
 * SOPHIA_PG_PIPELINE_MAX are on the wire at once; the rest wait in a bounded
 * queue. A callback runs only once the server's Sync reply (ReadyForQuery)
 * arrived, i.e. after the statement's implicit transaction committed.
 *
 * Failure contract, which the cache's "writes are retried, never dropped"
 * rests on:
 *  - queued while the connection is down: the query waits and is sent after
 *    the reconnect;
 *  - in flight when the connection drops: cb(arg, NULL, err). The statement
 *    may or may not have been committed; the caller retries (so writes must
 *    be idempotent, and an upsert that can race its own retry should carry
 *    a version guard such as `WHERE sophia_cache.version < EXCLUDED.version`,
 *    because a retried write is queued behind writes made after it).
 *  - sophia_pg_free: every query still queued or in flight gets
 *    cb(arg, NULL, "closed") so callers can release `arg`.
 * Callbacks always run from the loop, never from inside sophia_pg_query.
 *
 * The connection reconnects by itself with exponential backoff (100 ms
 * doubling to 5 s) and, on every (re)connect, creates the sophia_cache table
 * and its indexes (IF NOT EXISTS) and re-prepares registered statements
 * before reporting up and sending queued queries.
 *
 * Loop-thread only; not thread-safe.
 */
#ifndef SOPHIA_PG_H
#define SOPHIA_PG_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

struct event_base;
typedef struct sophia_pg sophia_pg;

/* Default bound on queued + in-flight queries; beyond it SOPHIA_EBUSY. */
#define SOPHIA_PG_QUEUE_MAX 10000
/* Queries on the wire at once (pipeline depth). */
#define SOPHIA_PG_PIPELINE_MAX 256

/*
 * res: the statement's result; NULL when the connection failed before its
 * Sync arrived (retry) or the handle is being freed. err: NULL when res is
 * PGRES_COMMAND_OK / PGRES_TUPLES_OK, else a one-line message. Both are
 * valid only during the call: pg_query.c PQclear()s res after the callback
 * returns, so the callback must not. A callback may queue new queries; it
 * must not free the sophia_pg.
 */
typedef void (*sophia_pg_cb)(void *arg, PGresult *res, const char *err);

typedef struct sophia_pg_stats {
    int up;
    uint64_t queries_sent;     /* user queries written (a retry counts again) */
    uint64_t errors;           /* user queries that ended in error or NULL */
    uint64_t connect_failures; /* failed attempts + established links lost */
    uint64_t reconnects;       /* connections established after the first */
    size_t queue_depth;        /* queued + in flight */
    size_t in_flight;
} sophia_pg_stats;

/*
 * Starts connecting to `conninfo` (keyword=value string or postgresql://
 * URI) and returns at once. NULL when conninfo is NULL/empty (L3 disabled),
 * malformed (logged), or on out of memory. `connect_timeout` in conninfo
 * bounds each attempt (default 10 s).
 */
sophia_pg *sophia_pg_new(struct event_base *base, const char *conninfo);
void sophia_pg_free(sophia_pg *p);

/* 1 when connected and the schema is ready, else 0 (also for NULL). */
int sophia_pg_up(const sophia_pg *p);
/* Why the connection is down, for /healthz and logs; "" when up. */
const char *sophia_pg_last_error(const sophia_pg *p);
void sophia_pg_get_stats(const sophia_pg *p, sophia_pg_stats *out);
/* Changes the queue bound (default SOPHIA_PG_QUEUE_MAX); n >= 1. */
void sophia_pg_set_queue_max(sophia_pg *p, size_t n);

/*
 * Queues `sql` with nparams parameters ($1..$n). values[i] NULL is SQL
 * NULL; formats NULL or formats[i] == 0 is text (NUL-terminated), 1 is
 * binary (lengths[i] bytes; lengths required then). Everything is copied:
 * the caller's buffers may go away on return. Results come in text format;
 * sophia_pg_query_fmt takes result_format 1 for binary results.
 * cb may be NULL. Returns 0, SOPHIA_EBUSY (queue full; cb not called),
 * SOPHIA_EINVAL, SOPHIA_ENOMEM, or SOPHIA_EUNAVAIL while being freed.
 */
int sophia_pg_query(sophia_pg *p, const char *sql, int nparams,
                    const char *const *values, const int *lengths,
                    const int *formats, sophia_pg_cb cb, void *arg);
int sophia_pg_query_fmt(sophia_pg *p, const char *sql, int nparams,
                        const char *const *values, const int *lengths,
                        const int *formats, int result_format,
                        sophia_pg_cb cb, void *arg);

/*
 * Registers a named statement; it is prepared once per connection (now if
 * up, in order with the queue; on every reconnect before queued queries
 * run). Parameter types are inferred by the server. Registering the same
 * name with the same text again is a no-op; with different text,
 * SOPHIA_EINVAL. A statement the server rejects is logged and its queries
 * fail with the server's "does not exist" error.
 */
int sophia_pg_prepare(sophia_pg *p, const char *name, const char *sql,
                      int nparams);
/* As sophia_pg_query_fmt for a registered statement; SOPHIA_ENOENT when
 * `name` was never registered. */
int sophia_pg_query_prepared(sophia_pg *p, const char *name, int nparams,
                             const char *const *values, const int *lengths,
                             const int *formats, int result_format,
                             sophia_pg_cb cb, void *arg);

#endif
