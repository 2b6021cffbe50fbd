/*
 * proc_util.h - small helpers the bundled processors share: string
 * duplication, JSON building that tolerates allocation failure, and a
 * bounded string-keyed table for per-instance state.
 *
 * Header-only (static inline) so each plugin stays one self-contained .so
 * that depends on sdk.h and libc alone. The table is deliberately simple:
 * chained buckets of a fixed power-of-two size plus insertion-order
 * eviction once `max` entries are held, so a processor fed an unbounded
 * stream of ids (calls, channels, deals) keeps bounded memory.
 */
#ifndef SOPHIA_PROC_UTIL_H
#define SOPHIA_PROC_UTIL_H

#include <sophia/sdk.h>

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static inline uint64_t pu_hash(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
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

#endif
