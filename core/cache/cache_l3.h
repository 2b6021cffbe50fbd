/*
 * cache_l3 - the PostgreSQL tier of the cache, over a small pool of pg.c
 * connections (pg_pool.c) and the sophia_cache table (key, value bytea,
 * tags text[] GIN, expires_at, version). Statements are prepared once per
 * connection. Writes are routed by key, so the writes to one key stay in
 * issue order on one connection; a read of a key with uncommitted writes
 * queues behind them on that connection (it sees them), any other read
 * goes to the least busy connection; a tag invalidation runs on every
 * connection, so it is ordered against every later read. A read whose
 * connection is down skips the tier; a write waits for its connection.
 *
 * Every write carries a version (the cache's monotonic counter) and is an
 * upsert guarded by `WHERE sophia_cache.version < EXCLUDED.version`, so a
 * write retried after a dropped connection, which pg.c queues behind newer
 * ones, can never overwrite a newer value. Deletes are the same upsert of a
 * tombstone (empty value, already expired) so they are ordered by version
 * too; a timer removes rows that expired more than ten minutes ago, longer
 * than any retry stays queued.
 *
 * "Never dropped": a write that fails because the connection went away
 * (pg.c answers NULL) is sent again, as many times as it takes, on the
 * same connection; while the link is down pg.c holds it in its bounded
 * queue, and when that queue is
 * full the caller gets SOPHIA_EBUSY at once (backpressure) instead of an
 * unbounded backlog. The done callback runs once the write committed.
 *
 * A write the server refuses is classified by its SQLSTATE class
 * (sophia_l3_sqlstate_permanent): a permanent error - 22 data exception,
 * 23 integrity violation, 42 syntax or access rule, 54 program limit (a
 * key too big for the index) - will fail however often it is sent, so the
 * done callback gets SOPHIA_EIO at once, with the SQLSTATE and message in
 * sophia_l3_last_error (the write-back dead-letters it). Any other class
 * (08 connection, 40 rollback/deadlock, 53 resources, 55 lock, 57
 * operator intervention, 58 system, XX internal, ...) is transient: the
 * write is sent again after a back-off that doubles from 100 ms to 10 s.
 *
 * Large values (cache.compress, cache_zstd.h): with a zstd handle set, a
 * put stores a value above the threshold as its packed form and a get
 * hands back the plain value whichever form the row holds. The column is
 * already bytea, so packed bytes go in as they are: no migration, and
 * rows written before (plain JSON bytes) stay readable beside new ones.
 * A bytea never needed base64 here, and a text or jsonb column could not
 * hold a NUL at all, which is also why the mark cannot collide.
 */
#ifndef SOPHIA_CACHE_L3_H
#define SOPHIA_CACHE_L3_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_zstd.h"
#include "event/pg_pool.h"

struct event_base;
typedef struct sophia_l3 sophia_l3;

typedef void (*sophia_l3_get_cb)(void *arg, int rc, const char *val,
                                 size_t len, int64_t expires_ms,
                                 const char *const *tags);
typedef void (*sophia_l3_done_cb)(void *arg, int rc);

typedef struct sophia_l3_stats {
    uint64_t writes;     /* committed */
    uint64_t retries;    /* re-sent after a lost connection */
    uint64_t failed;     /* refused for good by the server (logged) */
    uint64_t backoffs;   /* re-sent after a transient server error */
    size_t pending;      /* accepted, not yet committed */
} sophia_l3_stats;

/* Takes `pool` (freed with l3, even on failure; NULL gives NULL) and
 * registers the statements on every connection. */
sophia_l3 *sophia_l3_new(sophia_pg_pool *pool, struct event_base *base);
void sophia_l3_free(sophia_l3 *l3);
/* The connections, for health and stats. */
sophia_pg_pool *sophia_l3_pool(const sophia_l3 *l3);

/* rc 0 hit, SOPHIA_ENOENT miss (or expired), other errors. */
int sophia_l3_get(sophia_l3 *l3, const char *key, sophia_l3_get_cb cb,
                  void *arg);
/* expires_ms wall clock, 0 = never. cb may be NULL. */
int sophia_l3_put(sophia_l3 *l3, const char *key, const char *val,
                  size_t len, int64_t expires_ms, const char *const *tags,
                  uint64_t version, sophia_l3_done_cb cb, void *arg);
int sophia_l3_del(sophia_l3 *l3, const char *key, uint64_t version,
                  sophia_l3_done_cb cb, void *arg);
int sophia_l3_del_tag(sophia_l3 *l3, const char *tag, uint64_t version,
                      sophia_l3_done_cb cb, void *arg);
void sophia_l3_get_stats(const sophia_l3 *l3, sophia_l3_stats *out);
/* 1 when a write failing with this SQLSTATE can never succeed (see the
 * top of this file); NULL or malformed counts as permanent too, since
 * there is nothing to wait for. */
int sophia_l3_sqlstate_permanent(const char *sqlstate);
/* During a done callback with rc SOPHIA_EIO: the server's SQLSTATE and
 * one-line message (borrowed, valid for the callback). */
const char *sophia_l3_last_error(const sophia_l3 *l3, const char **sqlstate);

/* cache.l3.ttl: every put keeps its row at most max_ttl_ms (0 = no cap,
 * the entry's own expiry). */
void sophia_l3_set_max_ttl(sophia_l3 *l3, int64_t max_ttl_ms);
/* cache.compress: the handle puts pack with and gets unpack with
 * (borrowed, outlives l3; NULL = store plain, read either form). */
void sophia_l3_set_zstd(sophia_l3 *l3, sophia_zstd *z);

/* A tier's expiry (wall ms, 0 = never) for an entry expiring at
 * expires_ms when the tier keeps entries at most max_ttl_ms (0 = no cap):
 * the per-tier TTL rule of cache.h, shared by every tier's writer. */
static inline int64_t sophia_tier_expiry(int64_t expires_ms,
                                         int64_t max_ttl_ms, int64_t now_ms)
{
    if (max_ttl_ms <= 0)
        return expires_ms;
    int64_t cap = now_ms + max_ttl_ms;
    return expires_ms && expires_ms < cap ? expires_ms : cap;
}

/* {"a","b"} with quotes and backslashes escaped; malloc'd. */
char *sophia_l3_array_literal(const char *const *items);

#endif
