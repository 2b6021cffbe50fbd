/*
 * ws_latest - see ws_latest.h.
 *
 * Two levels of sophia_dict; every entry carries a stamp from one counter,
 * which orders a topic's metrics for ws_latest_get and picks what makes
 * room when a bound is reached (a linear scan, only on a new name past the
 * bound, over at most a few hundred entries).
 *
 * A put is one per metric point, mostly for the same few topic and metric
 * names again and again, and the two dicts' keyed hashes cost more than
 * the rest of it: a direct-mapped cache of recent (topic, metric) pairs,
 * indexed by a cheap hash of both names (ws_namehash.h), answers first.
 * Made-up names can only make it miss, never wrong: a slot is checked by
 * both names, and the cache is emptied whenever an entry or topic goes.
 */
#include "ws/ws_latest.h"

#include <stdlib.h>
#include <string.h>

#include "lib/dict.h"
#include "ws/ws_namehash.h"

#define LATEST_RECENT_BITS 6
#define LATEST_RECENT (1u << LATEST_RECENT_BITS)

typedef struct latest_entry {
    ws_msg *m;
    uint64_t stamp;
    char metric[];
} latest_entry;

typedef struct latest_topic {
    sophia_dict *metrics; /* metric -> latest_entry */
    uint64_t stamp;       /* of its newest entry */
    int64_t updated_ms;
    char name[];
} latest_topic;

typedef struct latest_recent {
    latest_topic *t;
    latest_entry *e;
} latest_recent;

struct ws_latest {
    sophia_dict *topics; /* topic -> latest_topic */
    size_t max_topics, max_metrics;
    uint64_t stamp;
    latest_recent recent[LATEST_RECENT];
};

static void entry_free(void *p)
{
    latest_entry *e = p;
    ws_msg_unref(e->m);
    free(e);
}

static void topic_free(void *p)
{
    latest_topic *t = p;
    sophia_dict_free(t->metrics, entry_free);
    free(t);
}

ws_latest *ws_latest_new(size_t max_topics, size_t max_metrics)
{
    ws_latest *l = calloc(1, sizeof(*l));
    if (!l || !(l->topics = sophia_dict_new())) {
        free(l);
        return NULL;
    }
    l->max_topics = max_topics ? max_topics : WS_LATEST_TOPICS;
    l->max_metrics = max_metrics ? max_metrics : WS_LATEST_METRICS;
    return l;
}

void ws_latest_free(ws_latest *l)
{
    if (!l)
        return;
    sophia_dict_free(l->topics, topic_free);
    free(l);
}

/* ---- making room: the entry with the smallest stamp ----------------- */

typedef struct oldest {
    const char *key;
    uint64_t stamp;
} oldest;

static void find_oldest_topic(const char *key, void *val, void *arg)
{
    oldest *o = arg;
    const latest_topic *t = val;
    if (!o->key || t->stamp < o->stamp) {
        o->key = key;
        o->stamp = t->stamp;
    }
}

static void find_oldest_entry(const char *key, void *val, void *arg)
{
    oldest *o = arg;
    const latest_entry *e = val;
    if (!o->key || e->stamp < o->stamp) {
        o->key = key;
        o->stamp = e->stamp;
    }
}

/* Deletes the oldest entry of d, freeing it with fn; the recent cache
 * may point at it, so it is emptied. */
static void drop_oldest(ws_latest *l, sophia_dict *d,
                        void (*find)(const char *, void *, void *),
                        void (*fn)(void *))
{
    oldest o = {NULL, 0};
    sophia_dict_each(d, find, &o);
    if (o.key)
        fn(sophia_dict_del(d, o.key));
    memset(l->recent, 0, sizeof(l->recent));
}

static latest_topic *topic_for(ws_latest *l, const char *topic)
{
    latest_topic *t = sophia_dict_get(l->topics, topic);
    if (t)
        return t;
    if (sophia_dict_size(l->topics) >= l->max_topics)
        drop_oldest(l, l->topics, find_oldest_topic, topic_free);
    size_t len = strlen(topic);
    t = calloc(1, sizeof(*t) + len + 1);
    if (!t || !(t->metrics = sophia_dict_new())) {
        free(t);
        return NULL;
    }
    memcpy(t->name, topic, len + 1);
    sophia_dict_set(l->topics, topic, t);
    return t;
}

/* The entry for metric in t, made when new; NULL when out of memory. */
static latest_entry *entry_for(ws_latest *l, latest_topic *t,
                               const char *metric)
{
    latest_entry *e = sophia_dict_get(t->metrics, metric);
    if (e)
        return e;
    if (sophia_dict_size(t->metrics) >= l->max_metrics)
        drop_oldest(l, t->metrics, find_oldest_entry, entry_free);
    size_t len = strlen(metric);
    if (!(e = calloc(1, sizeof(*e) + len + 1)))
        return NULL;
    memcpy(e->metric, metric, len + 1);
    sophia_dict_set(t->metrics, metric, e);
    return e;
}

void ws_latest_put(ws_latest *l, const char *topic, const char *metric,
                   ws_msg *m, int64_t wall_ms)
{
    ws_latest_put_hashed(l, topic, ws_namehash(0, topic), metric,
                         strlen(metric), m, wall_ms);
}

void ws_latest_put_hashed(ws_latest *l, const char *topic, uint64_t topic_hash,
                          const char *metric, size_t metric_len, ws_msg *m,
                          int64_t wall_ms)
{
    if (!l)
        return;
    uint64_t h = ws_namehash_n(topic_hash, metric, metric_len);
    latest_recent *rs = &l->recent[ws_namehash_slot(h, LATEST_RECENT_BITS)];
    latest_topic *t = rs->t;
    latest_entry *e = rs->e;
    if (!t || strcmp(t->name, topic) != 0 || strcmp(e->metric, metric) != 0) {
        if (!(t = topic_for(l, topic)) || !(e = entry_for(l, t, metric)))
            return;
        *rs = (latest_recent){t, e};
    }
    ws_msg_unref(e->m); /* NULL for a new entry */
    m->refs++;
    e->m = m;
    e->stamp = t->stamp = ++l->stamp;
    t->updated_ms = wall_ms;
}

typedef struct gather {
    latest_entry **v;
    size_t n;
} gather;

static void gather_entry(const char *key, void *val, void *arg)
{
    (void)key;
    gather *g = arg;
    g->v[g->n++] = val;
}

static int by_stamp(const void *a, const void *b)
{
    const latest_entry *x = *(latest_entry *const *)a, *y = *(latest_entry *const *)b;
    return x->stamp < y->stamp ? -1 : x->stamp > y->stamp;
}

size_t ws_latest_get(const ws_latest *l, const char *topic, ws_msg ***out)
{
    const latest_topic *t = l ? sophia_dict_get(l->topics, topic) : NULL;
    size_t n = t ? sophia_dict_size(t->metrics) : 0;
    gather g = {n ? calloc(n, sizeof(*g.v)) : NULL, 0};
    ws_msg **msgs = n ? calloc(n, sizeof(*msgs)) : NULL;
    *out = NULL;
    if (!g.v || !msgs) {
        free(g.v);
        free(msgs);
        return 0;
    }
    sophia_dict_each(t->metrics, gather_entry, &g);
    qsort(g.v, g.n, sizeof(*g.v), by_stamp);
    for (size_t i = 0; i < g.n; i++)
        msgs[i] = g.v[i]->m;
    free(g.v);
    *out = msgs;
    return g.n;
}

typedef struct each_ctx {
    void (*fn)(const char *, size_t, int64_t, void *);
    void *arg;
} each_ctx;

static void each_topic(const char *key, void *val, void *arg)
{
    const each_ctx *c = arg;
    const latest_topic *t = val;
    c->fn(key, sophia_dict_size(t->metrics), t->updated_ms, c->arg);
}

void ws_latest_each(const ws_latest *l,
                    void (*fn)(const char *topic, size_t metrics,
                               int64_t updated_ms, void *arg),
                    void *arg)
{
    each_ctx c = {fn, arg};
    if (l)
        sophia_dict_each(l->topics, each_topic, &c);
}

size_t ws_latest_topics(const ws_latest *l)
{
    return l ? sophia_dict_size(l->topics) : 0;
}
