/*
 * dict - see dict.h.
 */
#include "lib/dict.h"

#include <stdlib.h>
#include <string.h>

typedef struct dict_entry {
    struct dict_entry *next;
    uint64_t hash;
    void *val;
    char key[];
} dict_entry;

struct sophia_dict {
    dict_entry **buckets;
    size_t mask;
    size_t count;
    sophia_hash_key key; /* copied at creation: the hash never changes */
};

sophia_dict *sophia_dict_new(void)
{
    return sophia_dict_new_keyed(sophia_hash_process_key());
}

sophia_dict *sophia_dict_new_keyed(const sophia_hash_key *key)
{
    sophia_dict *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->key = *key;
    d->mask = 15;
    d->buckets = calloc(d->mask + 1, sizeof(*d->buckets));
    if (!d->buckets) {
        free(d);
        return NULL;
    }
    return d;
}

void sophia_dict_free(sophia_dict *d, void (*free_val)(void *))
{
    if (!d)
        return;
    for (size_t i = 0; i <= d->mask; i++) {
        dict_entry *e = d->buckets[i];
        while (e) {
            dict_entry *next = e->next;
            if (free_val)
                free_val(e->val);
            free(e);
            e = next;
        }
    }
    free(d->buckets);
    free(d);
}

static dict_entry **find(const sophia_dict *d, const char *key, uint64_t h)
{
    dict_entry **pp = &d->buckets[h & d->mask];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

void *sophia_dict_get(const sophia_dict *d, const char *key)
{
    if (!d->count) /* no key to hash: a table that is mostly empty (the
                    * cache's reads in flight, asked at every put) */
        return NULL;
    dict_entry *e = *find(d, key, sophia_hash_keyed(&d->key, key, strlen(key)));
    return e ? e->val : NULL;
}

static void grow(sophia_dict *d)
{
    size_t mask = d->mask * 2 + 1;
    dict_entry **b = calloc(mask + 1, sizeof(*b));
    if (!b)
        return; /* stay at the old size: slower, still correct */
    for (size_t i = 0; i <= d->mask; i++) {
        dict_entry *e = d->buckets[i];
        while (e) {
            dict_entry *next = e->next;
            e->next = b[e->hash & mask];
            b[e->hash & mask] = e;
            e = next;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->mask = mask;
}

void *sophia_dict_set(sophia_dict *d, const char *key, void *val)
{
    size_t len = strlen(key);
    uint64_t h = sophia_hash_keyed(&d->key, key, len);
    dict_entry **pp = find(d, key, h);
    if (*pp) {
        void *old = (*pp)->val;
        (*pp)->val = val;
        return old;
    }
    dict_entry *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return NULL;
    e->next = NULL;
    e->hash = h;
    e->val = val;
    memcpy(e->key, key, len + 1);
    *pp = e;
    if (++d->count > d->mask)
        grow(d);
    return NULL;
}

void *sophia_dict_del(sophia_dict *d, const char *key)
{
    if (!d->count)
        return NULL;
    dict_entry **pp = find(d, key, sophia_hash_keyed(&d->key, key, strlen(key)));
    dict_entry *e = *pp;
    if (!e)
        return NULL;
    void *val = e->val;
    *pp = e->next;
    free(e);
    d->count--;
    return val;
}

size_t sophia_dict_size(const sophia_dict *d)
{
    return d->count;
}

void sophia_dict_each(const sophia_dict *d,
                      void (*fn)(const char *key, void *val, void *arg),
                      void *arg)
{
    for (size_t i = 0; i <= d->mask; i++)
        for (dict_entry *e = d->buckets[i]; e; e = e->next)
            fn(e->key, e->val, arg);
}
