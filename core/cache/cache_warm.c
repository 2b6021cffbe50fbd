/*
 * cache_warm - the cache's write-back glue and warming: the journal's
 * replay hook (a replayed entry drops what L1/L2 hold for its key),
 * flushing the dirty set at shutdown, recording the hottest L1 keys in
 * Redis every HOT_RECORD_S, and at start warming L1 from what earlier runs
 * recorded, once Redis (and L3) are up.
 */
#include "cache/cache_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/loop.h"
#include "event/pg_pool.h"
#include "lib/log.h"

/* ------------------------------------------------ write-back and warming */

/* A replayed journal entry reached L3: drop what L1/L2 hold for the key so
 * the next read sees L3's winner. */
void cache_on_replayed(void *arg, const char *key, const char *val,
                        size_t len, int64_t expires_ms,
                        const char *const *tags)
{
    (void)val;
    (void)len;
    (void)expires_ms;
    (void)tags;
    sophia_cache *c = arg;
    sophia_l1_del(c->l1, key);
    if (c->l2)
        sophia_l2_del(c->l2, key, NULL, NULL);
}

typedef struct flush_op {
    unsigned left;
    int rc;
    sophia_cache_done_cb done;
    void *arg;
} flush_op;

static void flush_part(void *arg, int rc)
{
    flush_op *f = arg;
    if (rc && !f->rc)
        f->rc = rc;
    if (--f->left)
        return;
    f->done(f->arg, f->rc);
    free(f);
}

static void on_hot_recorded(void *arg, redisReply *rep)
{
    (void)rep;
    flush_part(arg, 0);
}

static int record_hot(sophia_cache *c, sophia_redis_cb cb, void *arg);

/* Shutdown: the hot keys are recorded (for the next start's warming) and
 * the write-back set is flushed; done when Redis answered and L3 committed. */
void sophia_cache_flush(sophia_cache *c, sophia_cache_done_cb done, void *arg)
{
    flush_op *f = malloc(sizeof(*f));
    if (!f) {
        done(arg, SOPHIA_ENOMEM);
        return;
    }
    f->left = 1;
    f->rc = 0;
    f->done = done;
    f->arg = arg;
    if (record_hot(c, on_hot_recorded, f) == 0)
        f->left++;
    if (c->wb) {
        f->left++;
        sophia_wb_flush(c->wb, flush_part, f);
    }
    flush_part(f, 0);
}

/* Adds this period's hottest L1 keys to the sophia:hot zset, weighted by
 * rank, and trims it, so warming follows recent popularity. cb (may be
 * NULL) rides on the last command; returns 0 when it was sent. */
static int record_hot(sophia_cache *c, sophia_redis_cb cb, void *arg)
{
    if (!sophia_redis_up(c->l2))
        return SOPHIA_EUNAVAIL;
    const char *keys[HOT_TRACK];
    size_t n = sophia_l1_hottest(c->l1, sophia_now_mono_us(), keys,
                                 HOT_TRACK);
    for (size_t i = 0; i < n; i++) {
        char w[16];
        snprintf(w, sizeof(w), "%zu", HOT_TRACK - i);
        const char *argv[4] = {"ZINCRBY", HOT_KEY, w, keys[i]};
        size_t lens[4] = {7, strlen(HOT_KEY), strlen(w), strlen(keys[i])};
        sophia_redis_command(c->l2, NULL, NULL, 4, argv, lens);
    }
    const char *argv[4] = {"ZREMRANGEBYRANK", HOT_KEY, "0", HOT_KEEP};
    size_t lens[4] = {15, strlen(HOT_KEY), 1, strlen(HOT_KEEP)};
    return sophia_redis_command(c->l2, cb, arg, 4, argv, lens);
}

typedef struct warm_op {
    sophia_cache *c;
    size_t left, found;
    sophia_cache_done_cb done;
    void *arg;
} warm_op;

static void warm_part(warm_op *w)
{
    if (--w->left)
        return;
    if (w->done)
        w->done(w->arg, (int)w->found);
    free(w);
}

static void on_warm_get(void *arg, int rc, const char *val, size_t len,
                        int tier)
{
    (void)val;
    (void)len;
    (void)tier;
    warm_op *w = arg;
    w->found += rc == 0;
    warm_part(w);
}

static void on_hot_keys(void *arg, redisReply *rep)
{
    warm_op *w = arg;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY &&
                       i < rep->elements && !w->c->closing;
         i++) {
        const redisReply *k = rep->element[i];
        if (k->type != REDIS_REPLY_STRING)
            continue;
        w->left++;
        if (sophia_cache_get(w->c, k->str, NULL, NULL, on_warm_get, w) != 0)
            w->left--;
    }
    warm_part(w);
}

void sophia_cache_warm(sophia_cache *c, size_t n, sophia_cache_done_cb done,
                       void *arg)
{
    warm_op *w = calloc(1, sizeof(*w));
    char stop[24];
    snprintf(stop, sizeof(stop), "%zu", n ? n - 1 : 0);
    const char *argv[4] = {"ZREVRANGE", HOT_KEY, "0", stop};
    size_t lens[4] = {9, strlen(HOT_KEY), 1, strlen(stop)};
    if (!w || !n || !sophia_redis_up(c->l2) ||
        sophia_redis_command(c->l2, on_hot_keys, w, 4, argv, lens) != 0) {
        free(w);
        if (done)
            done(arg, 0);
        return;
    }
    w->c = c;
    w->left = 1;
    w->done = done;
    w->arg = arg;
}

static void on_warmed(void *arg, int found)
{
    (void)arg;
    if (found > 0)
        sophia_info("cache", "msg=\"L1 warmed\" keys=%d", found);
}

/* Every HOT_RECORD_S: record the hot keys; the first time Redis is up (and
 * L3 too, when configured), warm L1 from what previous runs recorded. */
void cache_on_hot_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_cache *c = arg;
    if (!c->warmed && sophia_redis_up(c->l2) &&
        (!c->l3 || sophia_pg_pool_up(sophia_l3_pool(c->l3)))) {
        c->warmed = 1;
        sophia_cache_warm(c, WARM_AT_START, on_warmed, c);
        struct timeval tv = {HOT_RECORD_S, 0}; /* from polling to recording */
        event_add(c->hot_ev, &tv);
        return;
    }
    if (!c->warmed)
        return;
    record_hot(c, NULL, NULL);
}
