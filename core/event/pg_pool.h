/*
 * pg_pool - a small fixed set of pg.c connections to one server, for the
 * L3 cache tier.
 *
 * One pipelined connection is served by one PostgreSQL backend, i.e. one
 * server core at most; a few connections let the server work on several
 * queries at once while each link keeps pg.c's pipelining, ordering and
 * reconnect rules. Every connection is an independent sophia_pg: it
 * connects, backs off and reconnects on its own, and a named statement is
 * registered on each of them, so it is prepared once per connection (and
 * again after that connection's reconnect).
 *
 * Routing: a query with a `route` string (a cache key) always goes to the
 * same connection (hash of the route), so the queries for one key run in
 * the order they were issued, exactly as on one connection, and a write
 * retried after its connection dropped waits for that same connection. A
 * query without a route goes to the connection with the fewest queued +
 * in-flight queries among those up (ties: the lowest index, so a quiet
 * pool keeps using one warm backend). What must be ordered against every
 * key (a tag invalidation) is sent on every connection by the caller
 * (sophia_pg_pool_conn).
 *
 * Health: the pool is up while at least one connection is up (reads can be
 * served); last_error is the first down connection's reason.
 *
 * Loop-thread only; not thread-safe.
 */
#ifndef SOPHIA_PG_POOL_H
#define SOPHIA_PG_POOL_H

#include <stddef.h>

#include "event/pg.h"

typedef struct sophia_pg_pool sophia_pg_pool;

#define SOPHIA_PG_POOL_DEFAULT 4
#define SOPHIA_PG_POOL_MAX 64

/* Starts n (1..SOPHIA_PG_POOL_MAX) connections and returns at once. NULL
 * under the same conditions as sophia_pg_new, or n out of range. The queue
 * bound (SOPHIA_PG_QUEUE_MAX) is shared out between the connections. */
sophia_pg_pool *sophia_pg_pool_new(struct event_base *base,
                                   const char *conninfo, size_t n);
/* Frees every connection: their queued and in-flight queries get
 * cb(arg, NULL, "closed"). */
void sophia_pg_pool_free(sophia_pg_pool *pp);

size_t sophia_pg_pool_size(const sophia_pg_pool *pp);
/* Connection i (0 <= i < size), for tests and per-connection stats. */
sophia_pg *sophia_pg_pool_conn(const sophia_pg_pool *pp, size_t i);
/* 1 when at least one connection is up, else 0 (also for NULL). */
int sophia_pg_pool_up(const sophia_pg_pool *pp);
/* How many connections are up. */
size_t sophia_pg_pool_nup(const sophia_pg_pool *pp);
/* Why (the first down connection is) down; "" when all are up. */
const char *sophia_pg_pool_last_error(const sophia_pg_pool *pp);
/* Counters and depths summed over the connections; up as pool_up. */
void sophia_pg_pool_get_stats(const sophia_pg_pool *pp, sophia_pg_stats *out);

/* sophia_pg_prepare on every connection. */
int sophia_pg_pool_prepare(sophia_pg_pool *pp, const char *name,
                           const char *sql, int nparams);
/* The connection `route` picks (see above); never NULL for a pool. */
sophia_pg *sophia_pg_pool_pick(const sophia_pg_pool *pp, const char *route);
/* sophia_pg_query_prepared on the connection `route` picks. */
int sophia_pg_pool_query_prepared(sophia_pg_pool *pp, const char *route,
                                  const char *name, int nparams,
                                  const char *const *values,
                                  const int *lengths, const int *formats,
                                  int result_format, sophia_pg_cb cb,
                                  void *arg);

#endif
