/*
 * cache - the tiered cache as the rest of the core sees it: L1 in process
 * (cache_l1.c), L2 Redis (cache_l2.c), L3 PostgreSQL (cache_l3.c), and
 * write-back (cache_wb.c) behind write strategies chosen per key prefix.
 *
 * Reads: L1 -> dirty write-back entries -> L2 -> L3 -> loader, promoting a
 * lower tier's hit into the tiers above it. Concurrent misses for one key
 * share one "flight": the first starts the walk down the tiers, the rest
 * wait on its list, so the loader runs once per key however many ask. A
 * key invalidated while its flight is out is answered but not promoted
 * (the answer may be older than the invalidation). A get that passes a
 * loader and hits L1 may also start an early refresh (XFetch): the closer
 * the entry is to expiry, relative to what a load costs, the likelier one
 * hit reloads it in the background, so hot keys rarely miss at all.
 *
 * Writes: a put asks the write strategy (a write_strategy plugin, chosen
 * by the longest matching cache.write.prefixes entry, else
 * cache.write.default, else built-in write-through) which tiers to write
 * before acknowledging (sync), which later (deferred: write-back through
 * the journal) and which to invalidate. L1 is always written at once.
 * Every write gets a version from one monotonic counter (wall-clock µs,
 * strictly increasing), which orders writes in L3 whatever retries do.
 *
 * Degradation: L2 down -> skipped for reads and writes (a put does not
 * wait for it); L3 down -> reads skip it, writes wait in pg.c's bounded
 * queue and are retried until committed (a write-through put is
 * acknowledged only then); queue full -> SOPHIA_EBUSY (HTTP 503).
 *
 * All on the loop thread. Callbacks may run before the call returns (an
 * L1 hit, a put that only touches L1).
 */
#ifndef SOPHIA_CACHE_H
#define SOPHIA_CACHE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache/cache_l1.h"
#include "conf/config.h"
#include "plugin/plugin.h"

struct event_base;
typedef struct sophia_cache sophia_cache;

/* Which tier answered a get. */
enum { SOPHIA_CACHE_L1 = 1, SOPHIA_CACHE_L2, SOPHIA_CACHE_L3,
       SOPHIA_CACHE_LOADER };

typedef void (*sophia_cache_done_cb)(void *arg, int rc);
/* rc 0: val/len borrowed for the call, tier says where it came from. */
typedef void (*sophia_cache_get_cb)(void *arg, int rc, const char *val,
                                    size_t len, int tier);
/* A loader ends by calling done(token, ...) once, now or later: rc 0 with
 * the value (copied; ttl_s <= 0 = default; tags NULL-terminated or NULL),
 * or an error (SOPHIA_ENOENT: no such value). */
typedef void (*sophia_cache_load_done)(void *token, int rc, const char *val,
                                       size_t len, double ttl_s,
                                       const char *const *tags);
typedef void (*sophia_cache_loader)(void *loader_arg, const char *key,
                                    sophia_cache_load_done done, void *token);

/* Keys: 1..SOPHIA_CACHE_MAX_KEY bytes of valid UTF-8 without control
 * bytes (0x00-0x1f, 0x7f). Every tier stores exactly these bytes (an L3
 * text primary key holds them easily; Redis any). */
#define SOPHIA_CACHE_MAX_KEY 1024

/* 0 when `key` is a valid cache key; otherwise -1 with what is wrong and
 * at which byte in why (e.g. "byte 3 is a control byte (0x0d)"). The one
 * check behind every entry point: HTTP, WebSocket, plugins. */
int sophia_cache_key_check(const char *key, char *why, size_t why_len);
/* sophia_cache_key_check, and the key's length into *len when valid. */
int sophia_cache_key_check_len(const char *key, char *why, size_t why_len,
                               size_t *len);
/* 1 when ttl_s is a positive finite number of seconds no larger than
 * SOPHIA_CACHE_MAX_TTL. */
int sophia_cache_ttl_ok(double ttl_s);
/* 1 when `tags` (NULL-terminated, or NULL) are valid: each 1 to
 * 400 bytes without '\n' or 0x1f, at most SOPHIA_L1_MAX_TAGS of them. */
int sophia_cache_tags_ok(const char *const *tags);
/* sophia_cache_tags_ok that also measures: the number of tags with each
 * one's length in lens, or -1 when they are not valid. */
int sophia_cache_tags_measure(const char *const *tags,
                              size_t lens[SOPHIA_L1_MAX_TAGS]);

sophia_cache *sophia_cache_new(const sophia_conf *c, struct event_base *base);
void sophia_cache_free(sophia_cache *c);
/* Resolves cache.write.default and each cache.write.prefixes instance in
 * `plugins` (logging the names that are not write_strategy instances).
 * Called once the set is loaded and again on every reload, before the old
 * set is retired: the cache keeps pointers to the instances. Until then,
 * and with plugins NULL, every put writes through. c may be NULL. */
void sophia_cache_bind_plugins(sophia_cache *c, const sophia_plugin_set *plugins);

/* --- reads --- */
int sophia_cache_get(sophia_cache *c, const char *key,
                     sophia_cache_loader loader, void *loader_arg,
                     sophia_cache_get_cb cb, void *arg);
/* L1 only; *val is borrowed until the next cache call. 0 or SOPHIA_ENOENT. */
int sophia_cache_peek(sophia_cache *c, const char *key, const char **val,
                      size_t *len);

/* --- writes --- */
/* Through the key's write strategy; done(arg, rc) once acknowledged.
 * ttl_s <= 0: the longest configured tier ttl; each tier keeps the entry
 * at most its own cache.lN.ttl (per-tier TTLs, cache.c). tags:
 * NULL-terminated or NULL. Returns 0 (done will run, maybe already ran)
 * or an error (done not called):
 * SOPHIA_EINVAL (bad key or tag, NaN ttl or one over
 * SOPHIA_CACHE_MAX_TTL), SOPHIA_EBUSY (backpressure). */
int sophia_cache_put_async(sophia_cache *c, const char *key, const char *val,
                           size_t len, double ttl_s, const char *const *tags,
                           sophia_cache_done_cb done, void *arg);
/* sophia_cache_put_async for a key and tags the caller checked
 * (sophia_cache_key_check, sophia_cache_tags_ok): the host checks a
 * plugin's at its call, where a refusal can still be told. */
int sophia_cache_put_checked_async(sophia_cache *c, const char *key,
                                   const char *val, size_t len, double ttl_s,
                                   const char *const *tags,
                                   sophia_cache_done_cb done, void *arg);
/* The mechanism under a strategy, with the plan given (tests, benchmarks). */
int sophia_cache_put_plan(sophia_cache *c, const char *key, const char *val,
                          size_t len, double ttl_s, const char *const *tags,
                          unsigned sync, unsigned deferred,
                          unsigned invalidate, sophia_cache_done_cb done,
                          void *arg);
/* Fire-and-forget put through the strategy (processors' actions). */
int sophia_cache_put(sophia_cache *c, const char *key, const char *val,
                     size_t len, double ttl_s, const char *const *tags);
/* Name of the strategy instance a key's puts go through. */
const char *sophia_cache_strategy_for(const sophia_cache *c, const char *key);

/* --- invalidation, every tier (and the cluster hook) --- */
int sophia_cache_del_async(sophia_cache *c, const char *key,
                           sophia_cache_done_cb done, void *arg);
int sophia_cache_invalidate_tag_async(sophia_cache *c, const char *tag,
                                      sophia_cache_done_cb done, void *arg);
int sophia_cache_del(sophia_cache *c, const char *key);
size_t sophia_cache_invalidate_tag(sophia_cache *c, const char *tag);

/* Cluster: drop a key (or every key of a tag) from this node's L1 only,
 * on receipt of another node's invalidation. c may be NULL. */
void sophia_cache_l1_invalidate_local(sophia_cache *c, const char *key_or_tag,
                                      int is_tag);
/* Called after every local invalidation (del, tag, and the invalidations
 * a put implies), so the daemon can tell the cluster and other nodes drop
 * theirs. fn NULL: nobody to tell. */
typedef void (*sophia_cache_inval_fn)(void *arg, const char *key_or_tag,
                                      int is_tag);
void sophia_cache_on_invalidate(sophia_cache *c, sophia_cache_inval_fn fn,
                                void *arg);

/* --- write-back, warming --- */
/* Flushes write-back entries to L2/L3; done once committed (shutdown). */
void sophia_cache_flush(sophia_cache *c, sophia_cache_done_cb done,
                        void *arg);
/* Loads up to n of the keys read most recently (kept in the Redis zset
 * sophia:hot) into L1; done(arg, how many were found). */
void sophia_cache_warm(sophia_cache *c, size_t n, sophia_cache_done_cb done,
                       void *arg);

/* Tier health: -1 disabled, 0 down, 1 up; *err says why when down. */
int sophia_cache_l2_state(const sophia_cache *c, const char **err);
int sophia_cache_l3_state(const sophia_cache *c, const char **err);

/* {"l1":{...},"l2":{...},"l3":{...},"loader":{...},"write_back":{...}}. */
json_t *sophia_cache_stats_json(const sophia_cache *c);
/* The sophia_cache_* lines of /metrics (cache_stats.c). */
void sophia_cache_write_prom(const sophia_cache *c, FILE *f);

#endif
