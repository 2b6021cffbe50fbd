/*
 * cache_priv - what the cache's files share (cache.c: versions, strategy,
 * reads, puts, invalidation, lifecycle; cache_warm.c: write-back replay,
 * hot keys and warming; cache_stats.c: the figures). Not for other modules:
 * they use cache.h.
 */
#ifndef SOPHIA_CACHE_PRIV_H
#define SOPHIA_CACHE_PRIV_H

#include <event2/event.h>
#include <stdint.h>

#include "cache/cache.h"
#include "cache/cache_l1.h"
#include "cache/cache_l2.h"
#include "cache/cache_l3.h"
#include "cache/cache_wb.h"
#include "lib/dict.h"
#include "lib/histogram.h"
#include "plugin/plugin.h"
#include "event/clock.h"
#include "event/redis.h"

#define CACHE_MAX_TAG 400
#define HOT_KEY "sophia:hot"
#define HOT_RECORD_S 10
#define HOT_TRACK 64
#define HOT_KEEP "-1001" /* the zset keeps the top 1000 */
#define WARM_AT_START 256
#define XFETCH_BETA 1.0
#define ALL_TIERS (SOPHIA_TIER_L1 | SOPHIA_TIER_L2 | SOPHIA_TIER_L3)


typedef struct tier_stats {
    uint64_t hits, misses, errors, writes, skipped;
    sophia_hist lat; /* lookup latency, µs */
} tier_stats;

typedef struct waiter {
    sophia_cache_get_cb cb;
    void *arg;
} waiter;

typedef struct flight {
    sophia_cache *c;
    char *key;
    waiter *w;
    size_t nw, capw;
    sophia_cache_loader loader;
    void *loader_arg;
    int64_t t0; /* mono µs when this tier's lookup started */
    int stale;  /* invalidated while out: answer, do not promote */
} flight;

struct sophia_cache {
    struct event_base *base;
    sophia_l1 *l1;
    sophia_redis *l2; /* NULL = disabled */
    sophia_l3 *l3;    /* NULL = disabled */
    sophia_wb *wb;    /* NULL without Redis (no journal) */
    sophia_zstd *zstd; /* cache.compress, for L2 and L3 (cache_zstd.h) */
    sophia_cache_inval_fn on_inval; /* tells the cluster, or NULL */
    void *on_inval_arg;
    double default_ttl, l1_ttl;
    int64_t l1_cap_us; /* cache.l1.ttl in µs */
    int64_t l2_max_ttl_ms; /* cache.l2.ttl; 0 = no cap */
    uint64_t last_version;
    sophia_clock clock; /* put paths: read once per loop turn */
    char *write_def;
    char **prefixes, **prefix_inst;
    size_t nprefixes;
    /* The instances those names resolved to in the bound plugin set
     * (NULL: none usable, write through); index nprefixes is the default. */
    const sophia_instance **resolved;
    sophia_dict *flights;
    struct event *hot_ev;
    int warmed;
    int closing;
    unsigned warned_strategy;
    unsigned l1_timed;
    uint64_t rng;       /* XFetch's coin */
    uint64_t refreshes; /* early refreshes started */
    tier_stats t1, t2, t3, tl;
    sophia_hist put_lat; /* put to acknowledgement, µs */
    uint64_t puts, put_errors, dels, tag_invalidations;
};

/* cache_warm.c: the write-back journal's replay hook, and the timer that
 * records hot keys and warms L1 once the tiers are up. */
void cache_on_replayed(void *arg, const char *key, const char *val,
                       size_t len, int64_t expires_ms,
                       const char *const *tags);
void cache_on_hot_tick(evutil_socket_t fd, short what, void *arg);

#endif
