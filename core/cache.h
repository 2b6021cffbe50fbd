/*
 * cache - the tiered cache as the rest of the core sees it: L1 in process,
 * L2 Redis, L3 PostgreSQL.
 *
 * This is the foundation's cut: puts land in L1 and, when Redis is up, in
 * L2 (SET ... PX), so the latest value survives an L1 eviction; L3 keeps a
 * live connection and its schema, and reports health. The read-through
 * path, write strategies, tag sets in L2/L3 and the durable L3 write queue
 * are the cache issue's work and grow behind this same interface.
 */
#ifndef SOPHIA_CACHE_H
#define SOPHIA_CACHE_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"

struct event_base;
typedef struct sophia_cache sophia_cache;

sophia_cache *sophia_cache_new(const sophia_conf *c, struct event_base *base);
void sophia_cache_free(sophia_cache *c);

/* ttl_s <= 0 uses cache.l1.ttl. tags: NULL-terminated or NULL. */
int sophia_cache_put(sophia_cache *c, const char *key, const char *val,
                     size_t len, double ttl_s, const char *const *tags);
/* L1 only; *val is borrowed until the next cache call. 0 or SOPHIA_ENOENT. */
int sophia_cache_peek(sophia_cache *c, const char *key, const char **val,
                      size_t *len);
int sophia_cache_del(sophia_cache *c, const char *key);
size_t sophia_cache_invalidate_tag(sophia_cache *c, const char *tag);

/* Tier health: -1 disabled, 0 down, 1 up; *err says why when down. */
int sophia_cache_l2_state(const sophia_cache *c, const char **err);
int sophia_cache_l3_state(const sophia_cache *c, const char **err);

/* {"l1":{...},"l2":{...},"l3":{...}} for /api/stats. */
json_t *sophia_cache_stats_json(const sophia_cache *c);

#endif
