/*
 * pg_pool - see pg_pool.h for the routing and health rules.
 *
 * The pool adds no queue of its own: each query goes straight into one
 * connection's queue, so pg.c's guarantees (ordered per connection, held
 * through outages, callbacks only from the loop, "closed" on free) hold
 * unchanged for whoever uses the pool.
 */
#include "event/pg_pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "lib/hash.h"

struct sophia_pg_pool {
    size_t n;
    sophia_pg *conns[];
};

/* Keyed like every table over client keys, so no one can steer all
 * writes onto one connection. */
static uint64_t route_hash(const char *s)
{
    return sophia_hash(s, strlen(s));
}

sophia_pg_pool *sophia_pg_pool_new(struct event_base *base,
                                   const char *conninfo, size_t n)
{
    if (n < 1 || n > SOPHIA_PG_POOL_MAX)
        return NULL;
    sophia_pg_pool *pp = calloc(1, sizeof(*pp) + n * sizeof(sophia_pg *));
    if (!pp)
        return NULL;
    size_t share = SOPHIA_PG_QUEUE_MAX / n;
    for (; pp->n < n; pp->n++) {
        pp->conns[pp->n] = sophia_pg_new(base, conninfo);
        if (!pp->conns[pp->n]) {
            sophia_pg_pool_free(pp);
            return NULL;
        }
        sophia_pg_set_queue_max(pp->conns[pp->n], share);
    }
    return pp;
}

void sophia_pg_pool_free(sophia_pg_pool *pp)
{
    if (!pp)
        return;
    for (size_t i = 0; i < pp->n; i++)
        sophia_pg_free(pp->conns[i]);
    free(pp);
}

size_t sophia_pg_pool_size(const sophia_pg_pool *pp)
{
    return pp ? pp->n : 0;
}

sophia_pg *sophia_pg_pool_conn(const sophia_pg_pool *pp, size_t i)
{
    return pp && i < pp->n ? pp->conns[i] : NULL;
}

size_t sophia_pg_pool_nup(const sophia_pg_pool *pp)
{
    size_t up = 0;
    for (size_t i = 0; pp && i < pp->n; i++)
        up += sophia_pg_up(pp->conns[i]) != 0;
    return up;
}

int sophia_pg_pool_up(const sophia_pg_pool *pp)
{
    return sophia_pg_pool_nup(pp) > 0;
}

const char *sophia_pg_pool_last_error(const sophia_pg_pool *pp)
{
    for (size_t i = 0; pp && i < pp->n; i++)
        if (!sophia_pg_up(pp->conns[i]))
            return sophia_pg_last_error(pp->conns[i]);
    return "";
}

void sophia_pg_pool_get_stats(const sophia_pg_pool *pp, sophia_pg_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < pp->n; i++) {
        sophia_pg_stats s;
        sophia_pg_get_stats(pp->conns[i], &s);
        out->queries_sent += s.queries_sent;
        out->errors += s.errors;
        out->connect_failures += s.connect_failures;
        out->reconnects += s.reconnects;
        out->queue_depth += s.queue_depth;
        out->in_flight += s.in_flight;
    }
    out->up = sophia_pg_pool_up(pp);
}

int sophia_pg_pool_prepare(sophia_pg_pool *pp, const char *name,
                           const char *sql, int nparams)
{
    if (!pp)
        return SOPHIA_EINVAL;
    for (size_t i = 0; i < pp->n; i++) {
        int rc = sophia_pg_prepare(pp->conns[i], name, sql, nparams);
        if (rc)
            return rc;
    }
    return 0;
}

/* The up connection with the least queued; connection 0 when none is up
 * (the query then waits there for a reconnect, as on one connection). */
static sophia_pg *least_loaded(const sophia_pg_pool *pp)
{
    sophia_pg *best = pp->conns[0];
    size_t best_depth = SIZE_MAX;
    for (size_t i = 0; i < pp->n; i++) {
        if (!sophia_pg_up(pp->conns[i]))
            continue;
        sophia_pg_stats s;
        sophia_pg_get_stats(pp->conns[i], &s);
        if (s.queue_depth < best_depth) {
            best = pp->conns[i];
            best_depth = s.queue_depth;
        }
    }
    return best;
}

sophia_pg *sophia_pg_pool_pick(const sophia_pg_pool *pp, const char *route)
{
    return route ? pp->conns[route_hash(route) % pp->n] : least_loaded(pp);
}

int sophia_pg_pool_query_prepared(sophia_pg_pool *pp, const char *route,
                                  const char *name, int nparams,
                                  const char *const *values,
                                  const int *lengths, const int *formats,
                                  int result_format, sophia_pg_cb cb,
                                  void *arg)
{
    if (!pp)
        return SOPHIA_EINVAL;
    return sophia_pg_query_prepared(sophia_pg_pool_pick(pp, route), name,
                                    nparams, values, lengths, formats,
                                    result_format, cb, arg);
}
