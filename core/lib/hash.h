/*
 * hash - the core's hash functions, all of them: a keyed one for every
 * table whose keys a client chooses (dict: topics, streams, dedup windows,
 * in-flight maps; the L1 cache; the rate limiter; the L3 connection
 * router), and a stable one for values that must hash the same in every
 * process and after every restart (the embedder's features).
 *
 * SipHash-1-3 (as Redis's dict uses) keyed with 128 random bits read once
 * per process from getrandom(2) (/dev/urandom only where the kernel has no
 * getrandom, ENOSYS). Without a secret key, anyone who can choose keys -
 * topic names, cache keys, event ids, bearer tokens - can send thousands
 * that land in one bucket and turn every lookup into a list walk.
 *
 * The stable hash is the opposite trade: no secret, so the same text gives
 * the same vector on every node and after a restart (stored vectors and
 * saved indexes depend on it). Never use it for a table over client keys.
 */
#ifndef SOPHIA_HASH_H
#define SOPHIA_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct sophia_hash_key {
    uint64_t k0, k1;
} sophia_hash_key;

/* The process key, read on first use (thread-safe) and never changed. */
const sophia_hash_key *sophia_hash_process_key(void);

/* SipHash-1-3 of data under the process key. */
uint64_t sophia_hash(const void *data, size_t len);

/* SipHash-1-3 under an explicit key (tables that keep their own copy of
 * the key, and tests comparing two keys). */
uint64_t sophia_hash_keyed(const sophia_hash_key *key, const void *data,
                           size_t len);

/* FNV-1a from `seed`, finished with murmur3's fmix64 (FNV's low bits mix
 * poorly for short keys). Unkeyed and fixed forever: test_embed pins what
 * it yields through the embedder's fingerprint. */
uint64_t sophia_hash_stable(uint64_t seed, const void *data, size_t len);

#endif
