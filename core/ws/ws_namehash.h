/*
 * ws_namehash - the cheap hash behind the router's direct-mapped caches of
 * recently used names (ws_topic_get's topics, ws_latest's (topic, metric)
 * pairs), which answer before a dict's keyed hash.
 *
 * Eight bytes a step (the last step overlapping the one before, so no
 * byte-wise tail) where FNV-1a took one: a topic name of 12-20 bytes is
 * two or three multiplies instead of 12-20. Unkeyed, which is safe only
 * because of how the caches use it: every slot is checked by name, so a
 * made-up name can make them miss, never answer wrong. Take a slot from
 * the top bits (ws_namehash_slot): a multiply carries every input bit
 * upwards, not down.
 */
#ifndef SOPHIA_WS_NAMEHASH_H
#define SOPHIA_WS_NAMEHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define WS_NAMEHASH_MUL 0x9e3779b97f4a7c15ull

/* Folds the n bytes of s into h. */
static inline uint64_t ws_namehash_n(uint64_t h, const char *s, size_t n)
{
    uint64_t w;
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            h = (h ^ (unsigned char)s[i]) * WS_NAMEHASH_MUL;
        return (h ^ n) * WS_NAMEHASH_MUL;
    }
    const char *last = s + n - 8;
    for (; s < last; s += 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * WS_NAMEHASH_MUL;
        h ^= h >> 32; /* the next step's low bits see this one's high */
    }
    memcpy(&w, last, 8);
    return (h ^ w ^ n) * WS_NAMEHASH_MUL;
}

/* Folds NUL-ended s into h. */
static inline uint64_t ws_namehash(uint64_t h, const char *s)
{
    return ws_namehash_n(h, s, strlen(s));
}

/* A slot of a 2^bits-slot cache. */
static inline size_t ws_namehash_slot(uint64_t h, unsigned bits)
{
    return (size_t)(h >> (64 - bits));
}

#endif
