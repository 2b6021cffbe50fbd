/*
 * stream_ids - see stream_ids.h.
 */
#include "lib/stream_ids.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/dict.h"

typedef struct sid {
    sophia_xid id;
    int live; /* 0 once removed, until the head passes it */
} sid;

struct sophia_stream_ids {
    sid *ring;      /* cap (a power of two) slots; [head, head+len) by id */
    size_t head, len, cap;
    size_t live;       /* of the ring's slots */
    sophia_dict *rest; /* ids that did not sort after the ring's last */
};

sophia_stream_ids *sophia_stream_ids_new(void)
{
    sophia_stream_ids *s = calloc(1, sizeof(*s));
    if (s && !(s->rest = sophia_dict_new())) {
        free(s);
        s = NULL;
    }
    return s;
}

void sophia_stream_ids_free(sophia_stream_ids *s)
{
    if (!s)
        return;
    sophia_dict_free(s->rest, NULL);
    free(s->ring);
    free(s);
}

/* A canonical decimal (no sign, no leading zero) up to `stop`; the byte
 * after it, or NULL. Canonical, so one id has one text and the ring's
 * numbers stand for the dict's strings. */
static const char *number(const char *p, char stop, uint64_t *out)
{
    uint64_t v = 0;
    const char *start = p;
    for (; (unsigned)(*p - '0') <= 9; p++) /* no division a digit */
        if (__builtin_mul_overflow(v, 10, &v) ||
            __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
            return NULL;
    if (p == start || *p != stop || (*start == '0' && p - start > 1))
        return NULL;
    *out = v;
    return p;
}

int sophia_xid_parse(const char *s, sophia_xid *out)
{
    const char *p = s ? number(s, '-', &out->ms) : NULL;
    return p && number(p + 1, '\0', &out->seq) ? 0 : -1;
}

static int parse(const char *id, sid *out)
{
    return sophia_xid_parse(id, &out->id);
}

static int cmp(const sid *a, const sid *b)
{
    return sophia_xid_cmp(a->id, b->id);
}

static sid *slot(const sophia_stream_ids *s, size_t i)
{
    return &s->ring[(s->head + i) & (s->cap - 1)];
}

/* The ring's slot holding `id`, or NULL. Nearly always the head (acks
 * come in order), else a binary search. */
static sid *find(const sophia_stream_ids *s, const sid *id)
{
    if (!s->len || cmp(id, slot(s, 0)) < 0 || cmp(id, slot(s, s->len - 1)) > 0)
        return NULL;
    if (cmp(id, slot(s, 0)) == 0)
        return slot(s, 0);
    size_t lo = 0, hi = s->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp(slot(s, mid), id);
        if (c == 0)
            return slot(s, mid);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The live slots into a ring of n >= live slots (removed ones dropped). */
static int regrow(sophia_stream_ids *s, size_t n)
{
    sid *v = malloc(n * sizeof(*v));
    if (!v)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < s->len; i++)
        if (slot(s, i)->live)
            v[k++] = *slot(s, i);
    free(s->ring);
    s->ring = v;
    s->cap = n;
    s->head = 0;
    s->len = k;
    return 0;
}

int sophia_stream_ids_add(sophia_stream_ids *s, const char *id)
{
    sid v;
    if (parse(id, &v) || (s->len && cmp(&v, slot(s, s->len - 1)) <= 0))
        return sophia_dict_set(s->rest, id, s), 0; /* s: any non-NULL */
    if (s->len == s->cap && regrow(s, s->cap ? s->cap * 2 : 64) < 0)
        return -1;
    v.live = 1;
    *slot(s, s->len++) = v;
    s->live++;
    return 0;
}

int sophia_stream_ids_has(const sophia_stream_ids *s, const char *id)
{
    sid v, *at;
    if (!parse(id, &v) && (at = find(s, &v)) && at->live)
        return 1;
    return sophia_dict_get(s->rest, id) != NULL;
}

void sophia_stream_ids_del(sophia_stream_ids *s, const char *id)
{
    sid v, *at;
    if (parse(id, &v) || !(at = find(s, &v)) || !at->live) {
        sophia_dict_del(s->rest, id);
        return;
    }
    at->live = 0;
    s->live--;
    while (s->len && !slot(s, 0)->live) { /* the head passes removed ones */
        s->head = (s->head + 1) & (s->cap - 1);
        s->len--;
    }
    /* A head never acknowledged (an event retried for long) holds every
     * later slot: compact when removed ones are most of the ring. */
    if (s->len > 1024 && s->len - s->live > 2 * s->live)
        regrow(s, s->cap); /* out of memory: stays as it is */
}

size_t sophia_stream_ids_size(const sophia_stream_ids *s)
{
    return s->live + sophia_dict_size(s->rest);
}
