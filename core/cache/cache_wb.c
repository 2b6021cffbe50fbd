/*
 * cache_wb - see cache_wb.h for the contract.
 *
 * An entry's life: dirty (in `dirty`, coalescing later puts of its key) ->
 * flushing (sent to L3, in `flushing` so reads still find it) -> committed
 * (journal ids XDEL'd, freed). An entry is flushed only once every XADD
 * for it was answered, so its journal ids are all known when it commits.
 *
 * Replayed entries (journal leftovers of a previous run) go to L3 only,
 * through the same version guard; once committed the cache drops the key
 * from L1 and L2, so the next read takes whatever L3 holds - the replayed
 * value, or a newer one written meanwhile. They are never served from the
 * dirty set, for the same reason.
 *
 * Only a previous run's entries are replayed: the id of this process's
 * first XADD is remembered, and the replay (an XRANGE on the same Redis
 * connection, so that id is known before any XRANGE answer that could
 * contain it) stops there. Without that, a put acknowledged while the
 * start-up replay still waited for L3, and already flushed by the time the
 * XRANGE ran, was replayed as a stranger: its value dropped from L2. The
 * replay's end flushes the replayed entries only; this run's own keep
 * their strategy's interval.
 */
#include "cache/cache_wb.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sophia/sdk.h>

#include "cache/cache_l2.h"
#include "lib/dict.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "lib/stream_ids.h"
#include "event/loop.h"

#define WB_REPLAY_POLL_MS 200
#define WB_REPLAY_COUNT "500"

typedef struct wb_entry {
    sophia_wb *wb;
    char *key;
    char *val;
    size_t len, cap; /* cap: val's allocation */
    int64_t expires_ms;
    char **tags; /* NULL-terminated, each malloc'd */
    uint64_t version;
    unsigned tiers;
    char **ids;
    size_t nids;
    unsigned pending_acks; /* XADDs not yet answered (or not yet sent) */
    struct journal_req *open; /* gathering this turn's puts, unsent */
    int orphan;            /* forgotten while acks were pending */
    int replay;
} wb_entry;

typedef struct wb_waiter {
    sophia_wb_done_cb cb;
    void *arg;
} wb_waiter;

struct sophia_wb {
    struct event_base *base;
    sophia_redis *r;
    sophia_l3 *l3;
    sophia_wb_replay_cb replay;
    void *replay_arg;
    sophia_dict *dirty;    /* key -> entry */
    sophia_dict *flushing; /* key -> newest entry in flight */
    size_t nflushing;
    double interval_s;
    size_t batch, max_dirty;
    struct event *timer, *kick, *replay_ev;
    int replay_done;
    char replay_from[64];
    sophia_xid own; /* first journal id written by this process */
    int own_known;
    wb_waiter *waiters;
    size_t nwaiters;
    struct journal_req *open; /* requests to send at the end of the turn */
    struct event *jsend;      /* ...which is when this runs */
    int closing;
    int64_t l2_max_ttl_ms; /* cache.l2.ttl; 0 = none */
    sophia_zstd *zstd;     /* cache.compress, for the L2 copy */
    json_t *dead_ring;     /* dead letters Redis could not take */
    sophia_wb_stats st;
};

/* One XADD of an entry's value and the puts it acknowledges: every put
 * of that key in the turn before it was sent (see cache_wb.h). */
typedef struct journal_req {
    wb_entry *e;
    wb_waiter *w;
    size_t nw, capw;
    struct journal_req *next; /* in wb->open until sent */
} journal_req;

static void journal_answer(journal_req *q, int rc)
{
    for (size_t i = 0; i < q->nw; i++)
        q->w[i].cb(q->w[i].arg, rc);
    free(q->w);
    free(q);
}

static void wb_kick(sophia_wb *wb)
{
    event_active(wb->kick, EV_TIMEOUT, 0);
}

static char **tags_dup(const char *const *tags)
{
    size_t n = 0;
    while (tags && tags[n])
        n++;
    char **v = calloc(n + 1, sizeof(*v));
    for (size_t i = 0; v && i < n; i++)
        if (!(v[i] = strdup(tags[i]))) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return NULL;
        }
    return v;
}

static void tags_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static void entry_free(wb_entry *e)
{
    free(e->key);
    free(e->val);
    tags_free(e->tags);
    for (size_t i = 0; i < e->nids; i++)
        free(e->ids[i]);
    free(e->ids);
    free(e);
}

/* ids grows in powers of two from 4: a hot key gathers one id per put
 * between flushes, thousands of them at a high rate. */
static int entry_add_id(wb_entry *e, const char *id, size_t len)
{
    size_t n = e->nids;
    if (n == 0 || (n >= 4 && (n & (n - 1)) == 0)) {
        char **v = realloc(e->ids, (n ? n * 2 : 4) * sizeof(*v));
        if (!v)
            return SOPHIA_ENOMEM;
        e->ids = v;
    }
    char **v = e->ids;
    if (!(v[e->nids] = strndup(id, len)))
        return SOPHIA_ENOMEM;
    e->nids++;
    return 0;
}

/* XDEL in one command; a failure leaves them for a harmless replay. */
static void journal_del_ids(sophia_wb *wb, char **ids, size_t nids)
{
    if (!nids || !wb->r || !sophia_redis_up(wb->r))
        return;
    size_t argc = nids + 2;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    if (argv && lens) {
        argv[0] = "XDEL";
        argv[1] = SOPHIA_WB_JOURNAL;
        lens[0] = 4;
        lens[1] = strlen(SOPHIA_WB_JOURNAL);
        for (size_t i = 0; i < nids; i++) {
            argv[i + 2] = ids[i];
            lens[i + 2] = strlen(ids[i]);
        }
        sophia_redis_command(wb->r, NULL, NULL, (int)argc, argv, lens);
    }
    free(argv);
    free(lens);
}

static void journal_del(sophia_wb *wb, wb_entry *e)
{
    journal_del_ids(wb, e->ids, e->nids);
}

static void check_waiters(sophia_wb *wb)
{
    if (!wb->nwaiters || sophia_dict_size(wb->dirty) || wb->nflushing)
        return;
    wb_waiter *w = wb->waiters;
    size_t n = wb->nwaiters;
    wb->waiters = NULL;
    wb->nwaiters = 0;
    for (size_t i = 0; i < n; i++)
        w[i].cb(w[i].arg, 0);
    free(w);
}

/* --------------------------------------------------------- dead letters */

/* One dead letter on its way to SOPHIA_WB_DEAD: the entry's journal ids
 * (XDEL'd once the XADD is answered) and its ring form (kept if not). */
typedef struct dead_req {
    sophia_wb *wb;
    char **ids;
    size_t nids;
    json_t *ring;
} dead_req;

static char *tags_join(char **tags)
{
    size_t tl = 1;
    for (size_t i = 0; tags && tags[i]; i++)
        tl += strlen(tags[i]) + 1;
    char *t = malloc(tl), *w = t;
    if (!t)
        return NULL;
    *w = '\0';
    for (size_t i = 0; tags && tags[i]; i++) {
        if (i)
            *w++ = '\x1f';
        w = stpcpy(w, tags[i]);
    }
    return t;
}

static void ring_push(sophia_wb *wb, json_t *entry)
{
    if (!entry)
        return;
    if (json_array_size(wb->dead_ring) >= SOPHIA_WB_DEAD_RING)
        json_array_remove(wb->dead_ring, 0);
    json_array_append_new(wb->dead_ring, entry);
    wb->st.dead_ring++;
}

/* The ring's form of a dead letter (a value cut at
 * SOPHIA_WB_DEAD_VALUE_MAX bytes). */
static json_t *dead_json(const wb_entry *e, const char *ttl,
                         const char *state, const char *msg, int64_t at_ms)
{
    size_t vl = e->len < SOPHIA_WB_DEAD_VALUE_MAX ? e->len
                                                   : SOPHIA_WB_DEAD_VALUE_MAX;
    json_t *tags = json_array();
    for (size_t i = 0; tags && e->tags && e->tags[i]; i++)
        json_array_append_new(tags, json_string(e->tags[i]));
    return json_pack("{s:s,s:o*,s:b,s:o,s:s,s:I,s:s,s:s,s:I}", "key", e->key,
                     "value", json_stringn(e->val, vl), "value_truncated",
                     vl < e->len, "tags", tags, "ttl_s", ttl, "version",
                     (json_int_t)e->version, "sqlstate", state, "error", msg,
                     "at_ms", (json_int_t)at_ms);
}

static void on_dead(void *arg, redisReply *rep)
{
    dead_req *d = arg;
    if (rep && rep->type == REDIS_REPLY_STRING) {
        journal_del_ids(d->wb, d->ids, d->nids); /* now in the dead stream */
        json_decref(d->ring);
    } else {
        ring_push(d->wb, d->ring); /* still in the journal: next start */
    }
    for (size_t i = 0; i < d->nids; i++)
        free(d->ids[i]);
    free(d->ids);
    free(d);
}

/* L3 refused e for good: to the dead-letter stream (or the ring), never
 * retried, never just dropped. Takes e's journal ids. */
static void dead_letter(sophia_wb *wb, wb_entry *e)
{
    const char *state = "", *msg = wb->l3 ? sophia_l3_last_error(wb->l3,
                                                                 &state)
                                          : "";
    int64_t now = sophia_now_wall_us() / 1000;
    char exp[32], ttl[32], ver[32], at[32], q[600];
    snprintf(exp, sizeof(exp), "%" PRId64, e->expires_ms);
    if (e->expires_ms)
        snprintf(ttl, sizeof(ttl), "%.3f",
                 e->expires_ms > now ? (double)(e->expires_ms - now) / 1e3
                                     : 0.0);
    else
        snprintf(ttl, sizeof(ttl), "none");
    snprintf(ver, sizeof(ver), "%" PRIu64, e->version);
    snprintf(at, sizeof(at), "%" PRId64, now);
    wb->st.dead++;
    sophia_error("cache", "msg=\"write-back entry refused for good by L3, "
                 "dead-lettered\" key=%s sqlstate=%s stream=%s err=%s",
                 e->key, *state ? state : "-", SOPHIA_WB_DEAD,
                 sophia_log_quote(msg, q, sizeof(q)));
    dead_req *d = calloc(1, sizeof(*d));
    json_t *ring = dead_json(e, ttl, state, msg, now);
    char *t = tags_join(e->tags);
    int rc = SOPHIA_ENOMEM;
    if (d && t && !wb->closing && wb->r && sophia_redis_up(wb->r)) {
        d->wb = wb;
        d->ids = e->ids;
        d->nids = e->nids;
        d->ring = ring;
        const char *argv[] = {"XADD", SOPHIA_WB_DEAD, "*", "key", e->key,
                              "value", e->val, "tags", t, "expires_ms", exp,
                              "ttl_s", ttl, "version", ver, "sqlstate", state,
                              "error", msg, "at_ms", at};
        size_t lens[21];
        for (int i = 0; i < 21; i++)
            lens[i] = i == 6 ? e->len : strlen(argv[i]);
        rc = sophia_redis_command(wb->r, on_dead, d, 21, argv, lens);
    }
    free(t);
    if (rc == 0) {
        e->ids = NULL; /* d owns them now */
        e->nids = 0;
        return;
    }
    free(d);
    ring_push(wb, ring); /* the journal keeps it for the next start */
}

json_t *sophia_wb_dead_ring_json(const sophia_wb *wb)
{
    return json_deep_copy(wb->dead_ring);
}

/* ---------------------------------------------------------------- flush */

static void on_committed(void *arg, int rc)
{
    wb_entry *e = arg;
    sophia_wb *wb = e->wb;
    if (rc == 0)
        journal_del(wb, e);
    else if (rc == SOPHIA_EIO) /* refused for good (cache_l3.h) */
        dead_letter(wb, e);
    if (sophia_dict_get(wb->flushing, e->key) == e)
        sophia_dict_del(wb->flushing, e->key);
    wb->nflushing--;
    wb->st.flushed += rc == 0;
    if (e->replay && rc == 0 && !wb->closing && wb->replay)
        wb->replay(wb->replay_arg, e->key, NULL, 0, 0, NULL);
    entry_free(e);
    if (!wb->closing)
        check_waiters(wb);
}

/* Back to dirty after L3 refused (queue full): merged into a newer dirty
 * entry of the same key when there is one, so its ids are not lost. */
static void unflush(sophia_wb *wb, wb_entry *e)
{
    if (sophia_dict_get(wb->flushing, e->key) == e)
        sophia_dict_del(wb->flushing, e->key);
    wb->nflushing--;
    wb_entry *newer = sophia_dict_get(wb->dirty, e->key);
    if (!newer) {
        sophia_dict_set(wb->dirty, e->key, e);
        return;
    }
    for (size_t i = 0; i < e->nids; i++)
        entry_add_id(newer, e->ids[i], strlen(e->ids[i]));
    entry_free(e);
}

/* 0 sent, SOPHIA_EBUSY when L3 pushed back (the entry is dirty again). */
static int flush_one(sophia_wb *wb, wb_entry *e)
{
    sophia_dict_del(wb->dirty, e->key);
    sophia_dict_set(wb->flushing, e->key, e);
    wb->nflushing++;
    if ((e->tiers & SOPHIA_TIER_L2) && !e->replay && wb->r)
        sophia_l2_set(wb->r, wb->zstd, e->key, e->val, e->len,
                      sophia_tier_expiry(e->expires_ms, wb->l2_max_ttl_ms,
                                         sophia_now_wall_us() / 1000),
                      (const char *const *)e->tags, NULL, NULL);
    if (!(e->tiers & SOPHIA_TIER_L3) || !wb->l3) {
        on_committed(e, 0);
        return 0;
    }
    int rc = sophia_l3_put(wb->l3, e->key, e->val, e->len, e->expires_ms,
                           (const char *const *)e->tags, e->version,
                           on_committed, e);
    if (rc == 0)
        return 0;
    unflush(wb, e);
    return SOPHIA_EBUSY;
}

typedef struct pick {
    wb_entry **v;
    size_t n, max;
    int replay_only;
} pick;

static void pick_ready(const char *key, void *val, void *arg)
{
    (void)key;
    pick *p = arg;
    wb_entry *e = val;
    if (p->n < p->max && e->pending_acks == 0 && (e->replay || !p->replay_only))
        p->v[p->n++] = e;
}

/* Sends every dirty entry whose journal acks are in (only the replayed
 * ones with replay_only), `batch` at a time. */
static void wb_flush_some(sophia_wb *wb, int replay_only)
{
    for (;;) {
        size_t want = wb->batch;
        pick p = {malloc(want * sizeof(wb_entry *)), 0, want, replay_only};
        if (!p.v)
            return;
        sophia_dict_each(wb->dirty, pick_ready, &p);
        int busy = 0;
        for (size_t i = 0; i < p.n && !busy; i++)
            busy = flush_one(wb, p.v[i]) != 0;
        free(p.v);
        if (busy || p.n < want)
            break;
    }
    check_waiters(wb);
}

static void wb_flush_now(sophia_wb *wb)
{
    wb_flush_some(wb, 0);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    wb_flush_now(arg);
}

/* ------------------------------------------------------------------ put */

static void on_journal(void *arg, redisReply *rep)
{
    journal_req *q = arg;
    wb_entry *e = q->e;
    sophia_wb *wb = e->wb;
    int rc = rep && rep->type == REDIS_REPLY_STRING ? 0 : SOPHIA_EUNAVAIL;
    if (rc == 0) {
        entry_add_id(e, rep->str, rep->len);
        if (!wb->own_known)
            wb->own_known = !sophia_xid_parse(rep->str, &wb->own);
    }
    e->pending_acks--;
    if (e->orphan && e->pending_acks == 0) {
        journal_del(wb, e);
        entry_free(e);
    } else if (rc == 0) {
        wb->st.journaled++;
    }
    journal_answer(q, rc);
    if (!wb->closing && (wb->nwaiters || sophia_dict_size(wb->dirty) >= wb->batch))
        wb_kick(wb);
}

static int journal_add(sophia_wb *wb, wb_entry *e, journal_req *q)
{
    char exp[24], ver[24], tiers[24]; /* by hand: this runs per put */
    sophia_fmt_u64(exp, e->expires_ms > 0 ? (uint64_t)e->expires_ms : 0);
    sophia_fmt_u64(ver, e->version);
    sophia_fmt_u64(tiers, e->tiers);
    size_t tl = 0;
    for (size_t i = 0; e->tags[i]; i++)
        tl += strlen(e->tags[i]) + 1;
    char *t = malloc(tl + 1), *w = t;
    if (!t)
        return SOPHIA_ENOMEM;
    for (size_t i = 0; e->tags[i]; i++) {
        if (i)
            *w++ = '\x1f';
        w = stpcpy(w, e->tags[i]);
    }
    *w = '\0';
    const char *argv[] = {"XADD", SOPHIA_WB_JOURNAL, "*", "k", e->key, "v",
                          e->val, "e", exp, "t", t, "n", ver, "m", tiers};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = i == 6 ? e->len : strlen(argv[i]);
    int rc = sophia_redis_command(wb->r, on_journal, q, 15, argv, lens);
    free(t);
    return rc;
}

/* 1 when `have` holds the same tags as `tags`, in the same order. */
static int tags_same(char *const *have, const char *const *tags)
{
    size_t i = 0;
    for (; have[i] && tags && tags[i]; i++)
        if (strcmp(have[i], tags[i]) != 0)
            return 0;
    return !have[i] && (!tags || !tags[i]);
}

/* The entry's new value. The puts a dirty entry coalesces are nearly
 * always one series' next values: same tags, a value that fits the
 * buffer the last one had, so neither is allocated again. */
static int entry_set(wb_entry *e, const char *val, size_t len,
                     int64_t expires_ms, const char *const *tags,
                     uint64_t version, unsigned tiers)
{
    char *v = e->val && len <= e->cap ? e->val : malloc(len ? len : 1);
    char **t = e->tags && tags_same(e->tags, tags) ? e->tags : tags_dup(tags);
    if (!v || !t) {
        if (v != e->val)
            free(v);
        if (t != e->tags)
            tags_free(t);
        return SOPHIA_ENOMEM;
    }
    memcpy(v, val, len);
    if (v != e->val) {
        free(e->val);
        e->val = v;
        e->cap = len ? len : 1;
    }
    if (t != e->tags) {
        tags_free(e->tags);
        e->tags = t;
    }
    e->len = len;
    e->expires_ms = expires_ms;
    e->version = version;
    e->tiers |= tiers;
    return 0;
}

/* Sends the turn's XADDs, one per entry put in it, with its newest
 * value. A request that cannot be sent answers its puts with the error. */
static void journal_send_open(sophia_wb *wb)
{
    journal_req *q = wb->open;
    wb->open = NULL;
    while (q) {
        journal_req *next = q->next;
        wb_entry *e = q->e;
        e->open = NULL;
        int rc = wb->r && !wb->closing ? journal_add(wb, e, q) : SOPHIA_EUNAVAIL;
        if (rc) {
            e->pending_acks--;
            journal_answer(q, rc);
            if (e->orphan && e->pending_acks == 0)
                entry_free(e); /* forgotten meanwhile: nothing journaled */
        }
        q = next;
    }
}

static void on_jsend(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    journal_send_open(arg);
}

/* The entry's request of this turn, opened (and counted as a pending
 * ack, so no flush takes the entry before it is answered) if needed. */
static journal_req *journal_open(sophia_wb *wb, wb_entry *e)
{
    if (e->open)
        return e->open;
    journal_req *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->e = e;
    q->next = wb->open;
    wb->open = q;
    e->open = q;
    e->pending_acks++;
    event_active(wb->jsend, EV_TIMEOUT, 0);
    return q;
}

static int journal_wait(journal_req *q, sophia_wb_done_cb cb, void *arg)
{
    if (q->nw == q->capw) {
        size_t cap = q->capw ? q->capw * 2 : 2;
        wb_waiter *w = realloc(q->w, cap * sizeof(*w));
        if (!w)
            return SOPHIA_ENOMEM;
        q->w = w;
        q->capw = cap;
    }
    q->w[q->nw++] = (wb_waiter){cb, arg};
    return 0;
}

int sophia_wb_put(sophia_wb *wb, const char *key, const char *val,
                  size_t len, int64_t expires_ms, const char *const *tags,
                  uint64_t version, unsigned tiers, sophia_wb_done_cb cb,
                  void *arg)
{
    if (!wb || !sophia_redis_up(wb->r))
        return SOPHIA_EUNAVAIL;
    wb_entry *e = sophia_dict_get(wb->dirty, key);
    if (!e && sophia_dict_size(wb->dirty) + wb->nflushing >= wb->max_dirty) {
        wb->st.refused++;
        wb_kick(wb);
        return SOPHIA_EBUSY;
    }
    int fresh = !e;
    if (fresh && (e = calloc(1, sizeof(*e)))) {
        e->wb = wb;
        e->key = strdup(key);
    }
    if (!e || !e->key) {
        if (e)
            entry_free(e);
        return SOPHIA_ENOMEM;
    }
    int shared = e->open != NULL;
    journal_req *q = journal_open(wb, e);
    int rc = q ? entry_set(e, val, len, expires_ms, tags, version, tiers)
               : SOPHIA_ENOMEM;
    if (rc == 0)
        rc = journal_wait(q, cb, arg);
    if (rc && fresh) { /* only this put's request: withdraw it */
        if (q) {
            wb->open = q->next; /* opened last, so first in the list */
            free(q->w);
            free(q);
        }
        entry_free(e);
        return rc;
    }
    if (rc)
        return rc; /* the entry keeps the value; its other puts their ack */
    e->replay = 0;
    if (fresh)
        sophia_dict_set(wb->dirty, key, e);
    else
        wb->st.coalesced++;
    wb->st.journal_shared += shared;
    return 0;
}

int sophia_wb_lookup(sophia_wb *wb, const char *key, const char **val,
                     size_t *len, int64_t *expires_ms)
{
    wb_entry *e = wb ? sophia_dict_get(wb->dirty, key) : NULL;
    if (!e && wb)
        e = sophia_dict_get(wb->flushing, key);
    if (!e || e->replay)
        return SOPHIA_ENOENT;
    *val = e->val;
    *len = e->len;
    *expires_ms = e->expires_ms;
    return 0;
}

static void forget_entry(sophia_wb *wb, wb_entry *e)
{
    sophia_dict_del(wb->dirty, e->key);
    if (e->pending_acks) {
        e->orphan = 1; /* freed by its last journal answer */
        return;
    }
    journal_del(wb, e);
    entry_free(e);
}

void sophia_wb_forget(sophia_wb *wb, const char *key)
{
    if (!wb)
        return;
    wb_entry *e = sophia_dict_get(wb->dirty, key);
    if (e)
        forget_entry(wb, e);
    /* In flight: its L3 write is older than whatever superseded it and
     * loses on version; just stop serving it. */
    sophia_dict_del(wb->flushing, key);
}

typedef struct tag_pick {
    const char *tag;
    wb_entry **v;
    size_t n;
} tag_pick;

static int has_tag(const wb_entry *e, const char *tag)
{
    for (size_t i = 0; e->tags && e->tags[i]; i++)
        if (!strcmp(e->tags[i], tag))
            return 1;
    return 0;
}

static void pick_tagged(const char *key, void *val, void *arg)
{
    (void)key;
    tag_pick *p = arg;
    if (has_tag(val, p->tag))
        p->v[p->n++] = val;
}

void sophia_wb_forget_tag(sophia_wb *wb, const char *tag)
{
    if (!wb)
        return;
    size_t n = sophia_dict_size(wb->dirty) + sophia_dict_size(wb->flushing);
    tag_pick p = {tag, malloc((n ? n : 1) * sizeof(wb_entry *)), 0};
    if (!p.v)
        return;
    sophia_dict_each(wb->dirty, pick_tagged, &p);
    size_t ndirty = p.n;
    sophia_dict_each(wb->flushing, pick_tagged, &p);
    for (size_t i = 0; i < p.n; i++) {
        if (i < ndirty)
            forget_entry(wb, p.v[i]);
        else
            sophia_dict_del(wb->flushing, p.v[i]->key);
    }
    free(p.v);
}

void sophia_wb_flush(sophia_wb *wb, sophia_wb_done_cb cb, void *arg)
{
    wb_waiter *w = realloc(wb->waiters, (wb->nwaiters + 1) * sizeof(*w));
    if (!w) {
        cb(arg, SOPHIA_ENOMEM);
        return;
    }
    wb->waiters = w;
    w[wb->nwaiters++] = (wb_waiter){cb, arg};
    wb_flush_now(wb);
}

/* --------------------------------------------------------------- replay */

static const redisReply *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING &&
            !strcmp(kv->element[i]->str, name))
            return kv->element[i + 1];
    return NULL;
}

static void replay_entry(sophia_wb *wb, const redisReply *id,
                         const redisReply *kv)
{
    const redisReply *k = field(kv, "k"), *v = field(kv, "v"),
                     *ex = field(kv, "e"), *t = field(kv, "t"),
                     *n = field(kv, "n"), *m = field(kv, "m");
    if (!k || !v || !ex || !t || !n || !m)
        return;
    wb_entry *e = sophia_dict_get(wb->dirty, k->str);
    if (e) { /* written since start: newer; its commit clears this id */
        entry_add_id(e, id->str, id->len);
        return;
    }
    char **tags = NULL;
    const char *val;
    size_t vlen;
    int64_t exp;
    size_t tl = t->len;
    char *env = malloc(32 + tl + 2);
    if (!env)
        return;
    int hl = snprintf(env, 32, "0 ");
    memcpy(env + hl, t->str, tl);
    env[hl + tl] = '\n';
    sophia_l2_decode(env, (size_t)hl + tl + 1, &val, &vlen, &exp, &tags);
    free(env);
    e = calloc(1, sizeof(*e));
    if (e && tags) {
        e->wb = wb;
        e->key = strdup(k->str);
        e->replay = 1;
        if (e->key && entry_set(e, v->str, v->len, strtoll(ex->str, NULL, 10),
                                (const char *const *)tags,
                                strtoull(n->str, NULL, 10),
                                (unsigned)atoi(m->str)) == 0 &&
            entry_add_id(e, id->str, id->len) == 0) {
            sophia_dict_set(wb->dirty, e->key, e);
            wb->st.replayed++;
            e = NULL;
        }
    }
    if (e)
        entry_free(e);
    free(tags);
}

static void replay_next(sophia_wb *wb);

/* Written by this process (at or after its first XADD)? */
static int is_own(const sophia_wb *wb, const redisReply *id)
{
    sophia_xid v;
    return wb->own_known && id->type == REDIS_REPLY_STRING &&
           !sophia_xid_parse(id->str, &v) && sophia_xid_cmp(v, wb->own) >= 0;
}

static void on_replay(void *arg, redisReply *rep)
{
    sophia_wb *wb = arg;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        if (!wb->closing) { /* Redis went away: poll again */
            struct timeval tv = {0, WB_REPLAY_POLL_MS * 1000};
            evtimer_add(wb->replay_ev, &tv);
        }
        return;
    }
    int own = 0;
    for (size_t i = 0; i < rep->elements && !own; i++) {
        const redisReply *it = rep->element[i];
        if (it->type != REDIS_REPLY_ARRAY || it->elements != 2)
            continue;
        own = is_own(wb, it->element[0]);
        if (own)
            break; /* this run's entries: dirty, flushing or committed */
        replay_entry(wb, it->element[0], it->element[1]);
        snprintf(wb->replay_from, sizeof(wb->replay_from), "(%s",
                 it->element[0]->str);
    }
    if (!own && rep->elements == (size_t)atoi(WB_REPLAY_COUNT)) {
        replay_next(wb);
        return;
    }
    wb->replay_done = 1;
    if (wb->st.replayed)
        sophia_info("cache", "msg=\"write-back journal replayed\" entries=%llu",
                    (unsigned long long)wb->st.replayed);
    /* The previous run's leftovers go now; this run's own puts keep their
     * strategy's interval (flushing them here too made an early put's
     * flush time depend on when the start-up replay happened to end). */
    wb_flush_some(wb, 1);
}

static void replay_next(sophia_wb *wb)
{
    const char *argv[6] = {"XRANGE", SOPHIA_WB_JOURNAL, wb->replay_from, "+",
                           "COUNT", WB_REPLAY_COUNT};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    if (sophia_redis_command(wb->r, on_replay, wb, 6, argv, lens) != 0) {
        struct timeval tv = {0, WB_REPLAY_POLL_MS * 1000};
        evtimer_add(wb->replay_ev, &tv);
    }
}

static void on_replay_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    replay_next(arg);
}

/* ------------------------------------------------------------ lifecycle */

sophia_wb *sophia_wb_new(struct event_base *base, sophia_redis *r,
                         sophia_l3 *l3, sophia_wb_replay_cb replay,
                         void *replay_arg)
{
    sophia_wb *wb = calloc(1, sizeof(*wb));
    if (!wb)
        return NULL;
    wb->base = base;
    wb->r = r;
    wb->l3 = l3;
    wb->replay = replay;
    wb->replay_arg = replay_arg;
    wb->dirty = sophia_dict_new();
    wb->flushing = sophia_dict_new();
    wb->timer = event_new(base, -1, EV_PERSIST, on_timer, wb);
    wb->kick = event_new(base, -1, 0, on_timer, wb);
    wb->jsend = event_new(base, -1, 0, on_jsend, wb);
    wb->replay_ev = evtimer_new(base, on_replay_poll, wb);
    wb->dead_ring = json_array();
    snprintf(wb->replay_from, sizeof(wb->replay_from), "-");
    if (!wb->dirty || !wb->flushing || !wb->timer || !wb->kick ||
        !wb->jsend || !wb->replay_ev || !wb->dead_ring) {
        sophia_wb_free(wb);
        return NULL;
    }
    sophia_wb_set_params(wb, 0.1, 256, 100000);
    if (r) {
        struct timeval tv = {0, WB_REPLAY_POLL_MS * 1000};
        evtimer_add(wb->replay_ev, &tv);
    }
    return wb;
}

void sophia_wb_set_params(sophia_wb *wb, double interval_s, size_t batch,
                          size_t max_dirty)
{
    if (interval_s > 0 && interval_s != wb->interval_s) {
        wb->interval_s = interval_s;
        struct timeval tv = {(time_t)interval_s,
                             (suseconds_t)((interval_s - (double)(time_t)interval_s) * 1e6)};
        event_add(wb->timer, &tv);
    }
    if (batch)
        wb->batch = batch;
    if (max_dirty)
        wb->max_dirty = max_dirty;
}

void sophia_wb_set_l2_max_ttl(sophia_wb *wb, int64_t max_ttl_ms)
{
    wb->l2_max_ttl_ms = max_ttl_ms > 0 ? max_ttl_ms : 0;
}

void sophia_wb_set_zstd(sophia_wb *wb, sophia_zstd *z)
{
    wb->zstd = z;
}

static void free_dirty(void *v)
{
    wb_entry *e = v;
    if (e->pending_acks)
        e->orphan = 1; /* the journal answer (NULL, at Redis free) frees it */
    else
        entry_free(e);
}

void sophia_wb_close(sophia_wb *wb)
{
    if (!wb)
        return;
    journal_send_open(wb); /* this turn's puts, while Redis is still ours */
    wb->closing = 1;
    wb->r = NULL;
}

void sophia_wb_free(sophia_wb *wb)
{
    if (!wb)
        return;
    wb->closing = 1;
    journal_send_open(wb); /* closing: answered as failed */
    for (size_t i = 0; i < wb->nwaiters; i++)
        wb->waiters[i].cb(wb->waiters[i].arg, SOPHIA_EUNAVAIL);
    free(wb->waiters);
    if (wb->dirty)
        sophia_dict_free(wb->dirty, free_dirty);
    if (wb->flushing)
        sophia_dict_free(wb->flushing, NULL);
    if (wb->timer)
        event_free(wb->timer);
    if (wb->kick)
        event_free(wb->kick);
    if (wb->jsend)
        event_free(wb->jsend);
    if (wb->replay_ev)
        event_free(wb->replay_ev);
    json_decref(wb->dead_ring);
    free(wb);
}

void sophia_wb_get_stats(const sophia_wb *wb, sophia_wb_stats *out)
{
    *out = wb->st;
    out->dirty = sophia_dict_size(wb->dirty);
    out->flushing = wb->nflushing;
}
