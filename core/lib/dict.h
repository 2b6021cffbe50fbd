/*
 * dict - a string-keyed hash table of pointers for the core's indexes
 * (topics, streams, ...). Chained buckets, power-of-two sizes, grows at
 * load 1; keys are copied. Not for the L1 cache, which has its own table
 * tuned for allocation-free hits. Keys are hashed with sophia_hash
 * (hash.h: SipHash keyed per process), so clients choosing topic names or
 * event ids cannot pile them into one bucket.
 */
#ifndef SOPHIA_DICT_H
#define SOPHIA_DICT_H

#include <stddef.h>
#include <stdint.h>

#include "lib/hash.h"

typedef struct sophia_dict sophia_dict;

sophia_dict *sophia_dict_new(void);
/* A dict hashing under `key` instead of the process key (tests). */
sophia_dict *sophia_dict_new_keyed(const sophia_hash_key *key);
/* Frees the table; `free_val` (may be NULL) is called on each value. */
void sophia_dict_free(sophia_dict *d, void (*free_val)(void *));
void *sophia_dict_get(const sophia_dict *d, const char *key);
/* Inserts or replaces; returns the previous value (or NULL). */
void *sophia_dict_set(sophia_dict *d, const char *key, void *val);
/* Removes; returns the value (or NULL). */
void *sophia_dict_del(sophia_dict *d, const char *key);
size_t sophia_dict_size(const sophia_dict *d);

/* Visits every entry; the callback must not modify the dict. */
void sophia_dict_each(const sophia_dict *d,
                      void (*fn)(const char *key, void *val, void *arg),
                      void *arg);

#endif
