/*
 * dedup - see dedup.h.
 *
 * A hash of id -> time plus a FIFO of ids in insertion order: with one
 * window per table, insertion order is expiry order, so expiry pops from
 * the front and every operation is O(1) amortized.
 */
#include "ingest/dedup.h"

#include <stdlib.h>
#include <string.h>

#include "lib/dict.h"

typedef struct dedup_node {
    char *id;
    int64_t at_us;
    struct dedup_node *next;
} dedup_node;

struct sophia_dedup {
    sophia_dict *ids; /* id -> dedup_node */
    dedup_node *head, *tail;
    int64_t window_us;
    size_t n, max;
};

sophia_dedup *sophia_dedup_new(double window_s, size_t max)
{
    sophia_dedup *d = calloc(1, sizeof(*d));
    if (!d || !(d->ids = sophia_dict_new())) {
        free(d);
        return NULL;
    }
    d->window_us = (int64_t)(window_s * 1e6);
    d->max = max ? max : 1;
    return d;
}

static void dedup_pop(sophia_dedup *d)
{
    dedup_node *e = d->head;
    d->head = e->next;
    if (!d->head)
        d->tail = NULL;
    if (sophia_dict_get(d->ids, e->id) == e)
        sophia_dict_del(d->ids, e->id);
    free(e->id);
    free(e);
    d->n--;
}

static void dedup_expire(sophia_dedup *d, int64_t now_us)
{
    while (d->head && (now_us - d->head->at_us >= d->window_us || d->n > d->max))
        dedup_pop(d);
}

void sophia_dedup_free(sophia_dedup *d)
{
    if (!d)
        return;
    while (d->head)
        dedup_pop(d);
    sophia_dict_free(d->ids, NULL);
    free(d);
}

int sophia_dedup_seen(sophia_dedup *d, const char *id, int64_t now_us)
{
    dedup_expire(d, now_us);
    dedup_node *e = sophia_dict_get(d->ids, id);
    return e && now_us - e->at_us < d->window_us;
}

void sophia_dedup_add(sophia_dedup *d, const char *id, int64_t now_us)
{
    dedup_node *e = calloc(1, sizeof(*e));
    if (!e || !(e->id = strdup(id))) {
        free(e);
        return;
    }
    e->at_us = now_us;
    sophia_dict_set(d->ids, id, e); /* a re-add points at the newest node */
    if (d->tail)
        d->tail->next = e;
    else
        d->head = e;
    d->tail = e;
    d->n++;
    dedup_expire(d, now_us);
}

size_t sophia_dedup_size(const sophia_dedup *d)
{
    return sophia_dict_size(d->ids);
}
