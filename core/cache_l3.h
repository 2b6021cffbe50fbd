/*
 * cache_l3 - the PostgreSQL tier of the cache, over pg.c's connection and
 * its sophia_cache table (key, value bytea, tags text[] GIN, expires_at,
 * version).
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
 * (pg.c answers NULL) is sent again, as many times as it takes; while the
 * link is down pg.c holds it in its bounded queue, and when that queue is
 * full the caller gets SOPHIA_EBUSY at once (backpressure) instead of an
 * unbounded backlog. The done callback runs once the write committed.
 */
#ifndef SOPHIA_CACHE_L3_H
#define SOPHIA_CACHE_L3_H

#include <stddef.h>
#include <stdint.h>

#include "pg.h"

struct event_base;
typedef struct sophia_l3 sophia_l3;

typedef void (*sophia_l3_get_cb)(void *arg, int rc, const char *val,
                                 size_t len, int64_t expires_ms,
                                 const char *const *tags);
typedef void (*sophia_l3_done_cb)(void *arg, int rc);

typedef struct sophia_l3_stats {
    uint64_t writes;     /* committed */
    uint64_t retries;    /* re-sent after a lost connection */
    uint64_t failed;     /* refused by the server (logged) */
    size_t pending;      /* accepted, not yet committed */
} sophia_l3_stats;

/* Takes `pg` (freed with l3, even on failure) and registers the
 * statements on it. */
sophia_l3 *sophia_l3_new(sophia_pg *pg, struct event_base *base);
void sophia_l3_free(sophia_l3 *l3);
/* The connection, for health and stats. */
sophia_pg *sophia_l3_pg(const sophia_l3 *l3);

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

/* {"a","b"} with quotes and backslashes escaped; malloc'd. */
char *sophia_l3_array_literal(const char *const *items);

#endif
