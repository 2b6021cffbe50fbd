/*
 * host_prefetch - see prefetch.h.
 *
 * The answers live in the context (its prefetch slot), so they go with
 * the event: process() reads them with host->prefetched, and whoever
 * frees the context frees them. The plugin's prefetch callback runs on a
 * context of its own whose other actions are dropped, so naming keys can
 * never queue an effect; the named keys then move to the event's context.
 *
 * Each key is read with sophia_cache_get (L1 -> write-back dirty set ->
 * L2 -> L3, promoting a lower tier's hit). The cache skips a tier that is
 * down and answers SOPHIA_ENOENT, which would make a processor believe
 * the value never existed (crm: no transition published); so a miss is
 * believed only when the lowest configured tier is up, and is otherwise
 * SOPHIA_EUNAVAIL: the event is retried once the tier is back.
 *
 * A context freed while reads are out (its stream went, a reload) leaves
 * the set orphaned; the last answer frees it and tells nobody.
 */
#include "host/prefetch.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "host/host.h"
#include "host/host_priv.h" /* sophia_host_ctx_env */
#include "lib/log.h"

#define PREFETCH_MAX_KEYS 64

typedef struct prefetch_set {
    json_t *want;   /* the keys named, in order (array of strings) */
    json_t *found;  /* key -> value read */
    json_t *missed; /* key -> true: no tier holds it */
    int collecting; /* inside the plugin's prefetch callback */
    size_t pending; /* reads out, plus one while they are being started */
    int rc;         /* the first failure */
    int orphan;     /* its context went: freed by the last answer */
    sophia_cache *cache;
    sophia_prefetch_done_fn done;
    void *arg;
} prefetch_set;

typedef struct prefetch_read {
    prefetch_set *s;
    size_t i; /* index into want */
} prefetch_read;

static void set_free(prefetch_set *s)
{
    if (!s)
        return;
    json_decref(s->want);
    json_decref(s->found);
    json_decref(s->missed);
    free(s);
}

static prefetch_set *set_new(void)
{
    prefetch_set *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->want = json_array();
    s->found = json_object();
    s->missed = json_object();
    if (!s->want || !s->found || !s->missed) {
        set_free(s);
        return NULL;
    }
    return s;
}

static prefetch_set *set_of(sophia_ctx *ctx)
{
    void **slot = ctx ? sophia_ctx_prefetch_slot(ctx) : NULL;
    return slot ? *slot : NULL;
}

void sophia_prefetch_ctx_free(sophia_ctx *ctx)
{
    void **slot = sophia_ctx_prefetch_slot(ctx);
    prefetch_set *s = slot ? *slot : NULL;
    if (!s)
        return;
    *slot = NULL;
    if (s->pending) { /* answers still coming: the last one frees it */
        s->orphan = 1;
        s->done = NULL;
    } else {
        set_free(s);
    }
}

/* ------------------------------------------------------ the table members */

int sophia_host_prefetch(sophia_ctx *ctx, const char *key)
{
    prefetch_set *s = set_of(ctx);
    char why[128];
    if (!s || !s->collecting || !key ||
        sophia_cache_key_check(key, why, sizeof(why)))
        return SOPHIA_EINVAL;
    size_t i;
    json_t *k;
    json_array_foreach(s->want, i, k) {
        if (!strcmp(json_string_value(k), key))
            return 0; /* read once */
    }
    if (json_array_size(s->want) >= PREFETCH_MAX_KEYS)
        return SOPHIA_ETOOBIG;
    return json_array_append_new(s->want, json_string(key)) ? SOPHIA_ENOMEM
                                                             : 0;
}

int sophia_host_prefetched(sophia_ctx *ctx, const char *key,
                           const sophia_json **value)
{
    prefetch_set *s = set_of(ctx);
    if (value)
        *value = NULL;
    if (!s || s->collecting || !key || !value)
        return SOPHIA_EINVAL;
    const json_t *v = json_object_get(s->found, key);
    if (v) {
        *value = (const sophia_json *)v;
        return 0;
    }
    return json_object_get(s->missed, key) ? SOPHIA_ENOENT : SOPHIA_EINVAL;
}

/* ------------------------------------------------------------ the reads */

int sophia_prefetch_wanted(const sophia_instance *inst)
{
    const sophia_processor_ops *ops =
        inst && inst->desc->kind == SOPHIA_KIND_PROCESSOR
            ? inst->desc->processor
            : NULL;
    return ops && inst->desc->abi_minor >= 1 &&
           ops->struct_size >= offsetof(sophia_processor_ops, prefetch) +
                                   sizeof(ops->prefetch) &&
           ops->prefetch;
}

/* A miss is true when the lowest configured tier could be asked: the
 * cache skips a tier that is down and reports a miss all the same. */
static int miss_is_true(const sophia_cache *c)
{
    const char *why;
    int l3 = sophia_cache_l3_state(c, &why);
    if (l3 >= 0)
        return l3 == 1;
    return sophia_cache_l2_state(c, &why) != 0;
}

static void set_fail(prefetch_set *s, const char *key, int rc)
{
    if (!s->rc)
        s->rc = rc;
    sophia_warn("prefetch", "msg=\"prefetch read failed: event retried\" "
                "key=\"%.200s\" error=%d", key, rc);
}

static void set_answered(prefetch_set *s)
{
    if (--s->pending)
        return;
    if (s->orphan)
        set_free(s);
    else if (s->done) /* NULL while sophia_prefetch_run still holds it */
        s->done(s->arg, s->rc);
}

static void on_read(void *arg, int rc, const char *val, size_t len, int tier)
{
    (void)tier;
    prefetch_read *r = arg;
    prefetch_set *s = r->s;
    const char *key = json_string_value(json_array_get(s->want, r->i));
    free(r);
    if (rc == 0) {
        json_t *v = json_loadb(val, len, JSON_DECODE_ANY, NULL);
        if (!v) /* not JSON: handed over as a string, as cache_get does */
            v = json_stringn(val, len);
        if (!v || json_object_set_new(s->found, key, v))
            set_fail(s, key, SOPHIA_ENOMEM);
    } else if (rc == SOPHIA_ENOENT && !s->orphan && miss_is_true(s->cache)) {
        json_object_set_new(s->missed, key, json_true());
    } else {
        set_fail(s, key, rc == SOPHIA_ENOENT ? SOPHIA_EUNAVAIL : rc);
    }
    set_answered(s);
}

static void start_read(prefetch_set *s, size_t i)
{
    const char *key = json_string_value(json_array_get(s->want, i));
    if (!s->cache) { /* no tier configured: nothing can hold it */
        json_object_set_new(s->missed, key, json_true());
        return;
    }
    prefetch_read *r = malloc(sizeof(*r));
    if (!r) {
        set_fail(s, key, SOPHIA_ENOMEM);
        return;
    }
    *r = (prefetch_read){s, i};
    s->pending++;
    int rc = sophia_cache_get(s->cache, key, NULL, NULL, on_read, r);
    if (rc) { /* on_read not called */
        free(r);
        s->pending--;
        set_fail(s, key, rc);
    }
}

/* The plugin names its keys on a context of its own (its other actions
 * are dropped with it); returns the set, or NULL with *rc set. */
static prefetch_set *collect(sophia_instance *inst, const sophia_event *ev,
                             int *rc)
{
    prefetch_set *s = set_new();
    sophia_ctx *tmp = s ? sophia_ctx_new(inst, NULL) : NULL;
    if (!tmp) {
        set_free(s);
        *rc = SOPHIA_ENOMEM;
        return NULL;
    }
    void **slot = sophia_ctx_prefetch_slot(tmp);
    *slot = s;
    s->collecting = 1;
    sophia_ctx_enter(tmp); /* what it counts goes with tmp: nowhere */
    *rc = inst->desc->processor->prefetch(inst->state, ev, tmp);
    sophia_ctx_leave(tmp);
    s->collecting = 0;
    *slot = NULL;
    sophia_ctx_free(tmp);
    if (*rc) {
        sophia_warn("prefetch", "msg=\"processor prefetch failed: event "
                    "retried\" instance=%s error=%d", inst->name, *rc);
        *rc = *rc < 0 ? *rc : SOPHIA_EINVAL;
        set_free(s);
        return NULL;
    }
    return s;
}

int sophia_prefetch_collect(sophia_instance *inst, sophia_ctx *ctx,
                            const sophia_event *ev)
{
    void **slot = sophia_ctx_prefetch_slot(ctx);
    if (!slot || !sophia_prefetch_wanted(inst))
        return SOPHIA_EINVAL;
    int rc;
    prefetch_set *s = collect(inst, ev, &rc);
    if (!s)
        return rc;
    sophia_prefetch_ctx_free(ctx); /* a context is prefetched once */
    *slot = s;
    return 0;
}

const char *sophia_prefetch_key(sophia_ctx *ctx, size_t i)
{
    prefetch_set *s = set_of(ctx);
    return s ? json_string_value(json_array_get(s->want, i)) : NULL;
}

int sophia_prefetch_answer(sophia_ctx *ctx, const char *key,
                           const sophia_json *value)
{
    prefetch_set *s = set_of(ctx);
    size_t i;
    json_t *k;
    if (!s || !key)
        return SOPHIA_EINVAL;
    json_array_foreach(s->want, i, k) {
        if (strcmp(json_string_value(k), key))
            continue;
        json_object_del(s->found, key);
        json_object_del(s->missed, key);
        return value ? json_object_set_new(s->found, key,
                                           json_deep_copy((const json_t *)value))
                     : json_object_set_new(s->missed, key, json_true());
    }
    return SOPHIA_EINVAL;
}

int sophia_prefetch_run(sophia_instance *inst, sophia_ctx *ctx,
                        const sophia_event *ev, sophia_prefetch_done_fn done,
                        void *arg)
{
    if (!sophia_prefetch_wanted(inst))
        return sophia_ctx_prefetch_slot(ctx) ? 1 : SOPHIA_EINVAL;
    int rc = sophia_prefetch_collect(inst, ctx, ev);
    if (rc)
        return rc;
    prefetch_set *s = set_of(ctx);
    s->cache = sophia_host_ctx_env(ctx)->cache;
    s->pending = 1; /* held while starting: no answer can finish it */
    for (size_t i = 0; i < json_array_size(s->want); i++)
        start_read(s, i);
    if (--s->pending) {
        s->done = done;
        s->arg = arg;
        return 0;
    }
    return s->rc ? s->rc : 1;
}
