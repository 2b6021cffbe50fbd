/*
 * proc_util.h - small helpers the bundled processors share: string
 * duplication, JSON building that tolerates allocation failure, a bounded
 * string-keyed table for per-instance state, and the SDK 1.1 staging
 * helpers every processor uses for its own state.
 *
 * Header-only (static inline) so each plugin stays one self-contained .so
 * that depends on sdk.h and libc alone. The table is deliberately simple:
 * chained buckets of a fixed power-of-two size plus insertion-order
 * eviction once `max` entries are held, so a processor fed an unbounded
 * stream of ids (calls, channels, deals) keeps bounded memory. Its bucket
 * hash is SipHash-1-3 keyed with a per-process random seed (getrandom):
 * keys come from peers (channel ids, deal ids, message ids), and with an
 * unkeyed hash a peer could put them all in one bucket. pu_fnv stays
 * unkeyed for fingerprints that must be the same in every process (they
 * are exported across a reload).
 *
 * State and the verdict (SDK 1.1, issue 17): a processor never changes its
 * own state inside process(). It reads the committed state, computes the
 * new values, and hands them to host->stage; the host applies them when
 * the event's effects commit and discards them otherwise (RETRY, ERROR, an
 * effect refused). pu_require_stage is the init-time check; pu_seen_* is a
 * bounded "already applied" set whose additions are staged that way.
 */
#ifndef SOPHIA_PROC_UTIL_H
#define SOPHIA_PROC_UTIL_H

#include <sophia/sdk.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static inline char *pu_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

/* json_set that also accepts a NULL value (allocation failure upstream). */
static inline int pu_set(const sophia_host *h, sophia_json *obj,
                         const char *key, sophia_json *v)
{
    if (!obj || !v) {
        if (v)
            h->json_free(v);
        return SOPHIA_ENOMEM;
    }
    return h->json_set(obj, key, v);
}

static inline int pu_set_str(const sophia_host *h, sophia_json *obj,
                             const char *key, const char *s)
{
    return s ? pu_set(h, obj, key, h->json_str(s)) : 0;
}

/* The string at `path`, or NULL. */
static inline const char *pu_str(const sophia_host *h, const sophia_json *v,
                                 const char *path)
{
    return h->json_string(h->json_get(v, path));
}

/* Case-insensitive substring search. */
static inline const char *pu_strcasestr(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    if (!n)
        return hay;
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return NULL;
}

/* FNV-1a: unkeyed, the same in every process; for fingerprints only. */
static inline uint64_t pu_fnv(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The per-process SipHash key: from getrandom, else (no entropy yet, a
 * seccomp filter) from the clock, pid and an address, which still keeps a
 * remote peer from predicting it. Set once; the loop thread is the only
 * caller. */
static inline const uint64_t *pu_seed(void)
{
    static uint64_t key[2];
    static int ready;
    if (!ready) {
        if (getrandom(key, sizeof(key), GRND_NONBLOCK) != (ssize_t)sizeof(key)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^
                     (uint64_t)(uintptr_t)&ready;
            key[1] = (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
        }
        ready = 1;
    }
    return key;
}

#define PU_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define PU_SIPROUND                                                           \
    do {                                                                      \
        v0 += v1; v1 = PU_ROTL(v1, 13); v1 ^= v0; v0 = PU_ROTL(v0, 32);       \
        v2 += v3; v3 = PU_ROTL(v3, 16); v3 ^= v2;                             \
        v0 += v3; v3 = PU_ROTL(v3, 21); v3 ^= v0;                             \
        v2 += v1; v1 = PU_ROTL(v1, 17); v1 ^= v2; v2 = PU_ROTL(v2, 32);       \
    } while (0)

/* SipHash-1-3 of s[0..len) under the per-process key: the table's bucket
 * hash. */
static inline uint64_t pu_hash(const char *s, size_t len)
{
    const uint64_t *k = pu_seed();
    uint64_t v0 = 0x736f6d6570736575ULL ^ k[0], v1 = 0x646f72616e646f6dULL ^ k[1],
             v2 = 0x6c7967656e657261ULL ^ k[0], v3 = 0x7465646279746573ULL ^ k[1];
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8); /* little-endian hosts; any order is a hash */
        v3 ^= m;
        PU_SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    PU_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    PU_SIPROUND;
    PU_SIPROUND;
    PU_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---------------------------------------------------- bounded table */

typedef struct pu_entry {
    char *key;
    void *val;
    struct pu_entry *next;      /* bucket chain */
    struct pu_entry *older, *newer; /* insertion order */
} pu_entry;

typedef struct pu_table {
    pu_entry **b;
    size_t nb, n, max;
    pu_entry *oldest, *newest;
    void (*free_val)(void *);
} pu_table;

static inline int pu_table_init(pu_table *t, size_t max,
                                void (*free_val)(void *))
{
    memset(t, 0, sizeof(*t));
    t->nb = 1024;
    while (t->nb < max && t->nb < (1u << 20))
        t->nb <<= 1;
    t->b = calloc(t->nb, sizeof(*t->b));
    t->max = max ? max : 1;
    t->free_val = free_val;
    return t->b ? 0 : SOPHIA_ENOMEM;
}

static inline pu_entry **pu_slot(pu_table *t, const char *key)
{
    pu_entry **p = &t->b[pu_hash(key, strlen(key)) & (t->nb - 1)];
    while (*p && strcmp((*p)->key, key))
        p = &(*p)->next;
    return p;
}

static inline void *pu_table_get(pu_table *t, const char *key)
{
    pu_entry *e = *pu_slot(t, key);
    return e ? e->val : NULL;
}

static inline void pu_table_del(pu_table *t, const char *key)
{
    pu_entry **p = pu_slot(t, key), *e = *p;
    if (!e)
        return;
    *p = e->next;
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    if (t->free_val)
        t->free_val(e->val);
    free(e->key);
    free(e);
    t->n--;
}

/* Inserts (or replaces) and takes `val`; evicts the oldest past max. */
static inline int pu_table_put(pu_table *t, const char *key, void *val)
{
    pu_entry **p = pu_slot(t, key);
    if (*p) {
        if (t->free_val && (*p)->val != val)
            t->free_val((*p)->val);
        (*p)->val = val;
        return 0;
    }
    pu_entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = pu_strdup(key))) {
        free(e);
        if (t->free_val)
            t->free_val(val);
        return SOPHIA_ENOMEM;
    }
    e->val = val;
    *p = e;
    e->older = t->newest;
    if (t->newest)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
    if (++t->n > t->max)
        pu_table_del(t, t->oldest->key);
    return 0;
}

static inline void pu_table_free(pu_table *t)
{
    while (t->oldest)
        pu_table_del(t, t->oldest->key);
    free(t->b);
    t->b = NULL;
}

/* ------------------------------------------------ state and the verdict */

/* init's check that the host can stage state changes (SDK 1.1); logs why
 * not and returns SOPHIA_EABI, or 0. */
static inline int pu_require_stage(const sophia_host *h, sophia_self *self,
                                   const char *plugin)
{
    if (h && h->abi_major == SOPHIA_SDK_VERSION_MAJOR &&
        SOPHIA_HOST_HAS(h, stage) && h->stage)
        return 0;
    if (h && h->log)
        h->log(self, SOPHIA_LOG_ERROR, "%s needs a host with SDK 1.1 "
               "(host->stage: its state moves with the event's verdict); "
               "this host provides SDK %u.%u", plugin, (unsigned)h->abi_major,
               (unsigned)h->abi_minor);
    return SOPHIA_EABI;
}

/* A key to add to a pu_table of "already applied" ids once the event
 * commits. */
typedef struct pu_seen_add {
    pu_table *t;
    char key[];
} pu_seen_add;

static inline void pu_seen_apply(void *state, void *change)
{
    pu_seen_add *a = change;
    (void)state;
    pu_table_put(a->t, a->key, (void *)1);
    free(a);
}

/* Stages adding `key` to `t` (a table with free_val NULL). 0 or an error
 * (then the event must not go OK: a redelivery would not be recognised). */
static inline int pu_seen_stage(const sophia_host *h, sophia_ctx *ctx,
                                pu_table *t, const char *key)
{
    size_t n = strlen(key) + 1;
    pu_seen_add *a = malloc(sizeof(*a) + n);
    if (!a)
        return SOPHIA_ENOMEM;
    a->t = t;
    memcpy(a->key, key, n);
    return h->stage(ctx, pu_seen_apply, free, a);
}

/* The set's keys, oldest first, as a JSON array (NULL on no memory). */
static inline sophia_json *pu_seen_export(const sophia_host *h,
                                          const pu_table *t)
{
    sophia_json *a = h->json_array();
    for (const pu_entry *e = t->oldest; a && e; e = e->newer)
        if (h->json_append(a, h->json_str(e->key))) {
            h->json_free(a);
            return NULL;
        }
    return a;
}

/* Adds the strings of array `a` to the set, oldest first. */
static inline int pu_seen_import(const sophia_host *h, pu_table *t,
                                 const sophia_json *a)
{
    for (size_t i = 0; i < h->json_size(a); i++) {
        const char *k = h->json_string(h->json_at(a, i));
        if (k && pu_table_put(t, k, (void *)1))
            return SOPHIA_ENOMEM;
    }
    return 0;
}

/* A host with json_parse (import_state needs it). */
static inline int pu_has_parse(const sophia_host *h)
{
    return SOPHIA_HOST_HAS(h, json_parse) && h->json_parse;
}

#endif
