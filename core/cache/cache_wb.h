/*
 * cache_wb - the write-back machinery: a bounded dirty set in front of L2
 * and L3, made durable by a journal in Redis.
 *
 * A deferred put is acknowledged once its journal entry is in Redis
 * (`XADD sophia:wb:journal`, fields k v e t n m: key, value, expiry ms,
 * tags joined by \x1f, version, tiers). Puts of one key in one loop turn
 * (a batch of events updating the same metric) share one XADD of the
 * newest value, sent at the end of the turn: each of them is acknowledged
 * once a value at least as new as its own is journaled, which is what a
 * replay would restore anyway. The entry then waits in the dirty
 * set, where later puts of the same key coalesce into one write, until a
 * flush (every interval, or when `batch` entries wait) sends it to L2 and
 * L3. Once L3 has committed it, its journal ids are XDEL'd; until then a
 * crash (kill -9) leaves them in the stream and the next start replays the
 * journal into L1 and the dirty set and flushes again. Replays are safe to
 * repeat: each entry keeps its version, and L3 only takes newer versions.
 *
 * Dead letters: an entry L3 refuses for good (a permanent SQLSTATE, see
 * cache_l3.h) would otherwise be retried forever or lost. It is added to
 * the stream `sophia:wb:dead` (fields key, value, tags joined by \x1f,
 * expires_ms, ttl_s left, version, sqlstate, error, at_ms), counted
 * (sophia_cache_writeback_dead_total) and logged; its journal ids are
 * XDEL'd only once that XADD was answered, so it is always in one stream
 * or the other. Without Redis at that moment it goes to a ring of the last
 * SOPHIA_WB_DEAD_RING entries in memory (shown in /api/stats) and stays in
 * the journal, so the next start tries it again. The stream is not
 * trimmed: an operator reads it, repairs, and XDELs.
 *
 * Bounded: at most max_dirty entries wait (dirty + being flushed); a put
 * beyond that gets SOPHIA_EBUSY and a flush is started at once. With Redis
 * down there is no journal, so wb refuses (SOPHIA_EUNAVAIL) and the cache
 * falls back to writing the tiers synchronously.
 */
#ifndef SOPHIA_CACHE_WB_H
#define SOPHIA_CACHE_WB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache_l3.h"
#include "event/redis.h"

#define SOPHIA_WB_JOURNAL "sophia:wb:journal"
#define SOPHIA_WB_DEAD "sophia:wb:dead"
#define SOPHIA_WB_DEAD_RING 32
#define SOPHIA_WB_DEAD_VALUE_MAX 4096 /* bytes of a value the ring keeps */

struct event_base;
typedef struct sophia_wb sophia_wb;

typedef void (*sophia_wb_done_cb)(void *arg, int rc);
/* Called for each replayed entry so the cache can put it in L1. */
typedef void (*sophia_wb_replay_cb)(void *arg, const char *key,
                                    const char *val, size_t len,
                                    int64_t expires_ms,
                                    const char *const *tags);

typedef struct sophia_wb_stats {
    size_t dirty;       /* waiting for a flush */
    size_t flushing;    /* sent, L3 commit pending */
    uint64_t journaled; /* puts acknowledged through the journal */
    uint64_t coalesced; /* puts merged into an entry already dirty */
    uint64_t journal_shared; /* puts acknowledged by another put's XADD */
    uint64_t flushed;   /* entries committed */
    uint64_t replayed;  /* entries read back from the journal at start */
    uint64_t refused;   /* EBUSY: dirty set full */
    uint64_t dead;      /* refused for good by L3: dead-lettered */
    uint64_t dead_ring; /* of those, kept in memory (no Redis) */
} sophia_wb_stats;

/* l2/l3 may be NULL (tier disabled); Redis is needed for the journal. */
sophia_wb *sophia_wb_new(struct event_base *base, sophia_redis *r,
                         sophia_l3 *l3, sophia_wb_replay_cb replay,
                         void *replay_arg);
/* Shutdown, in this order: sophia_wb_close (stop using Redis), free the
 * Redis and L3 connections (their callbacks still find wb), sophia_wb_free.
 * What is still dirty stays in the journal for the next start. */
void sophia_wb_close(sophia_wb *wb);
void sophia_wb_free(sophia_wb *wb);
void sophia_wb_set_params(sophia_wb *wb, double interval_s, size_t batch,
                          size_t max_dirty);
/* cache.l2.ttl: a flushed entry lives in L2 at most max_ttl_ms (0 = its
 * own expiry). L3's cap is sophia_l3's own. */
void sophia_wb_set_l2_max_ttl(sophia_wb *wb, int64_t max_ttl_ms);
/* cache.compress: the handle a flush packs L2's copy with (borrowed).
 * The journal itself keeps values plain. */
void sophia_wb_set_zstd(sophia_wb *wb, sophia_zstd *z);

/* tiers: SOPHIA_TIER_L2 and/or SOPHIA_TIER_L3. cb after the journal. */
int sophia_wb_put(sophia_wb *wb, const char *key, const char *val,
                  size_t len, int64_t expires_ms, const char *const *tags,
                  uint64_t version, unsigned tiers, sophia_wb_done_cb cb,
                  void *arg);
/* The newest value not yet committed to L3, or SOPHIA_ENOENT. */
int sophia_wb_lookup(sophia_wb *wb, const char *key, const char **val,
                     size_t *len, int64_t *expires_ms);
/* Drops pending entries (and their journal entries) superseded by a
 * synchronous write, a delete or a tag invalidation. */
void sophia_wb_forget(sophia_wb *wb, const char *key);
void sophia_wb_forget_tag(sophia_wb *wb, const char *tag);
/* Flushes everything; cb once nothing dirty or in flight is left (or
 * L3 refuses, rc != 0). cb may run before this returns. */
void sophia_wb_flush(sophia_wb *wb, sophia_wb_done_cb cb, void *arg);
void sophia_wb_get_stats(const sophia_wb *wb, sophia_wb_stats *out);
/* The in-memory dead letters, oldest first: [{key, value, value_truncated,
 * tags, ttl_s, version, sqlstate, error, at_ms}]. New reference. */
json_t *sophia_wb_dead_ring_json(const sophia_wb *wb);

#endif
