/*
 * cache_l2 - the Redis tier of the cache: how entries, their expiry and
 * their tags are laid out in Redis, on top of redis.c's connection.
 *
 * Layout: the entry for key K lives at `sophia:c:K` as one string, an
 * envelope `<expires_ms> <tag>\x1f<tag>...\n<value>` set with `SET ... PX`,
 * so one GET returns everything a promotion into L1 needs (absolute
 * expiry, tags) without a second round trip. Each tag T is a Redis set
 * `sophia:tag:T` of the full Redis keys carrying it; invalidating a tag
 * runs one small Lua script that deletes the members and the set at once,
 * so no reader sees half of a tag gone. Stale members (keys that expired
 * on their own) are harmless: deleting a missing key is a no-op.
 *
 * A put is pipelined (SET, then one SADD per tag) on the one connection;
 * the callback rides on the last command, which Redis answers after the
 * ones before it. While Redis is down every call returns SOPHIA_EUNAVAIL
 * at once: the tier is skipped, never waited for.
 *
 * Large values: get and set take the cache's zstd handle (cache_zstd.h;
 * NULL: store plain, still read compressed). The envelope's value is the
 * stored form - plain JSON, or the packed frame for values above
 * cache.compress.threshold - and a get hands its callback the plain value
 * either way, so an entry written before compression existed, or by a
 * node with it off, reads the same. Only the value is packed: the header
 * (expiry, tags) stays text, and the binary frame after the first '\n' is
 * safe there (Redis strings are binary, the header ends at that '\n').
 */
#ifndef SOPHIA_CACHE_L2_H
#define SOPHIA_CACHE_L2_H

#include <stddef.h>
#include <stdint.h>

#include "cache/cache_zstd.h"
#include "event/redis.h"

#define SOPHIA_L2_PREFIX "sophia:c:"
#define SOPHIA_L2_TAG_PREFIX "sophia:tag:"

/* rc 0 hit (val/tags borrowed for the call), SOPHIA_ENOENT miss, or an
 * error (SOPHIA_EUNAVAIL, SOPHIA_EIO). expires_ms: wall clock, 0 never. */
typedef void (*sophia_l2_get_cb)(void *arg, int rc, const char *val,
                                 size_t len, int64_t expires_ms,
                                 const char *const *tags);
/* rc 0 done, else why not. */
typedef void (*sophia_l2_done_cb)(void *arg, int rc);

/* Each returns 0 (the callback will run from the loop) or an error with
 * no callback. */
int sophia_l2_get(sophia_redis *r, sophia_zstd *z, const char *key,
                  sophia_l2_get_cb cb, void *arg);
int sophia_l2_set(sophia_redis *r, sophia_zstd *z, const char *key,
                  const char *val, size_t len, int64_t expires_ms,
                  const char *const *tags, sophia_l2_done_cb cb, void *arg);
int sophia_l2_del(sophia_redis *r, const char *key, sophia_l2_done_cb cb,
                  void *arg);
int sophia_l2_del_tag(sophia_redis *r, const char *tag, sophia_l2_done_cb cb,
                      void *arg);

/* Envelope codec, exposed for tests. encode: malloc'd, *out_len set.
 * decode: 0 or SOPHIA_EPARSE; *tags malloc'd NULL-terminated (free with
 * free(), one block), *val points into buf. */
char *sophia_l2_encode(const char *val, size_t len, int64_t expires_ms,
                       const char *const *tags, size_t *out_len);
int sophia_l2_decode(const char *buf, size_t len, const char **val,
                     size_t *vlen, int64_t *expires_ms, char ***tags);

#endif
