/*
 * cache_l1 - the in-process first tier of the cache: a bounded map from
 * NUL-terminated string keys to opaque byte strings (the core stores
 * serialized JSON), with a TTL and a few tags per entry.
 *
 * Bounded by entry count and by bytes (key + value + per-entry overhead);
 * when either bound is exceeded S3-FIFO picks what goes (see cache_l1.c for
 * why S3-FIFO). Invalidation works by key and by tag; invalidating a tag
 * touches only the entries carrying it.
 *
 * Time is whatever monotonic microsecond clock the caller uses: every call
 * that can observe expiry takes `now_us`, so tests drive time by hand.
 *
 * Not thread-safe, by design: the cache belongs to the event-loop thread and
 * a hit must cost a hash, a probe and a compare, not a lock. Worker threads
 * that want a value go through the loop.
 *
 * Borrowing: a value returned by a hit points into the cache and stays
 * valid until the next call on this cache other than a hitting
 * sophia_l1_get / sophia_l1_lookup, sophia_l1_get_stats or
 * sophia_l1_generation. Copy it if you need it longer.
 */
#ifndef SOPHIA_CACHE_L1_H
#define SOPHIA_CACHE_L1_H

#include <stddef.h>
#include <stdint.h>

#include <sophia/sdk.h>

/* Most tags one entry may carry; more is SOPHIA_EINVAL. */
#define SOPHIA_L1_MAX_TAGS 16

typedef struct sophia_l1 sophia_l1;

typedef struct sophia_l1_stats {
    uint64_t hits;
    uint64_t misses;        /* includes lookups that found an expired entry */
    uint64_t evictions;     /* removed to respect a bound */
    uint64_t expirations;   /* removed because their TTL passed */
    uint64_t inserts;       /* successful puts, new keys and overwrites */
    uint64_t invalidations; /* removed by sophia_l1_del / _invalidate_tag */
    uint64_t rejections;    /* puts refused as too big */
    size_t entries;         /* current */
    size_t bytes;           /* current, as charged against max_bytes */
    size_t max_entries;
    size_t max_bytes;
    size_t small_entries; /* in the probationary FIFO */
    size_t main_entries;  /* in the main FIFO */
} sophia_l1_stats;

/* What a hit returns; `val` is borrowed (see the header comment). */
typedef struct sophia_l1_hit {
    const void *val;
    size_t len;
    int64_t expires_us; /* 0 = never */
    uint64_t version;   /* sophia_l1_generation() at the time of the put */
} sophia_l1_hit;

/* NULL when out of memory or when either bound is 0. */
sophia_l1 *sophia_l1_new(size_t max_entries, size_t max_bytes);
void sophia_l1_free(sophia_l1 *c);

/*
 * Stores a copy of `val` under `key`, replacing any previous value (and its
 * tags). `expires_us` is an absolute time on the caller's clock, 0 = never;
 * an already expired put is accepted and simply never hits. `tags` is a
 * NULL-terminated array or NULL; duplicates are ignored. Returns 0,
 * SOPHIA_EINVAL (NULL key, too many tags), SOPHIA_ETOOBIG (entry would be
 * more than max_bytes/8) or SOPHIA_ENOMEM. On any error the key is absent
 * afterwards: a failed replacement must not leave the stale value served.
 */
int sophia_l1_put(sophia_l1 *c, const char *key, const void *val, size_t len,
                  int64_t expires_us, const char *const *tags, int64_t now_us);

/*
 * The absolute L1 expiry (caller's monotonic clock, µs) of an entry that
 * expires at wall-clock `expires_ms` (0 = never), when L1 keeps entries at
 * most `cap_us`: now_mono_us + min(time left, cap_us). Saturating: no
 * input, however far in the future or past, overflows; an expiry beyond
 * INT64_MAX µs is INT64_MAX (never reached), one already past is now (it
 * never hits). A non-positive cap keeps nothing.
 */
int64_t sophia_l1_expiry(int64_t expires_ms, int64_t now_wall_ms,
                         int64_t now_mono_us, int64_t cap_us);

/* 0 on a hit (fills *val and *len, either may be NULL), SOPHIA_ENOENT on a
 * miss or an expired entry. Allocates nothing. */
int sophia_l1_get(sophia_l1 *c, const char *key, int64_t now_us,
                  const void **val, size_t *len);
/* sophia_l1_get with the entry's expiry and version as well. */
int sophia_l1_lookup(sophia_l1 *c, const char *key, int64_t now_us,
                     sophia_l1_hit *out);

/* 0 when the key was present, SOPHIA_ENOENT otherwise. */
int sophia_l1_del(sophia_l1 *c, const char *key);
/* Removes every entry carrying `tag`; returns how many. */
size_t sophia_l1_invalidate_tag(sophia_l1 *c, const char *tag);
/* Removes everything (counted as invalidations). */
void sophia_l1_clear(sophia_l1 *c);

/*
 * Removes expired entries, examining at most `budget` hash slots from where
 * the previous call stopped, so a loop timer can reclaim memory held by keys
 * nobody asks for again without a pause. Returns how many were removed.
 */
size_t sophia_l1_sweep(sophia_l1 *c, int64_t now_us, size_t budget);

/*
 * Up to `max` live keys, most frequently accessed recently first (access
 * counts are halved every few times max_entries accesses so old popularity
 * fades). Keys are borrowed like values. For cache warming. Returns the
 * number written to `keys`.
 */
size_t sophia_l1_hottest(sophia_l1 *c, int64_t now_us, const char **keys,
                         size_t max);

/* (Not `sophia_l1_stats`: that name is the struct's typedef.) */
void sophia_l1_get_stats(const sophia_l1 *c, sophia_l1_stats *out);
/* A counter bumped by every put; entries record it as their version, so a
 * caller can tell whether a key was rewritten since it last looked. */
uint64_t sophia_l1_generation(const sophia_l1 *c);

#endif
