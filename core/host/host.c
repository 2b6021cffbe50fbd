/*
 * host - see host.h. The JSON members of the table are in host_json.c.
 *
 * What the functions act on is the runtime (host_priv.h) reached from
 * the instance or context they are given, never a file-scope variable;
 * the one exception is the three SDK 1.0 reads that name neither (see
 * sdk10_rt below).
 */
#include "host/host.h"
#include "host/host_json.h"
#include "host/host_priv.h"
#include "host/host_text.h"
#include "host/output.h"
#include "host/prefetch.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "lib/dict.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "lib/strv.h"
#include "event/loop.h"
#include "memory/memory.h"
#include "ws/ws.h"

#define J(v) ((json_t *)(v))
#define CJ(v) ((const json_t *)(v))

typedef enum action_kind {
    ACT_PUBLISH,
    ACT_CACHE_PUT,
    ACT_CACHE_DEL,
    ACT_CACHE_DEL_TAG,
    ACT_EMIT /* an event for the chain's next link: no effect */
} action_kind;

typedef struct action {
    action_kind kind;
    const char *type; /* update type name: a literal, or type_own */
    char *type_own;
    char *topic;     /* extra topic, or cache key / tag */
    char *dashboard; /* or NULL */
    char *severity;  /* alerts only */
    json_t *data;    /* update data, or cache value (NULL when text) */
    char *text;      /* or the same as JSON text (SDK 1.4's *_text) */
    size_t tlen;
    const char *metric; /* a text "metric" update's "metric" member, in
                         * text's block after the text, or NULL */
    double ttl;
    char **tags;     /* NULL-terminated copy, in block */
    void *block;     /* a cache put's key, tags and text, or a text update's
                      * text, topic, dashboard and metric: one allocation */
} action;

/* A state change staged with host->stage, or applied at once with
 * host->stage_undoable (`undo` set, `applied` once it ran). SDK 1.1. */
typedef struct staged {
    void (*apply)(void *state, void *change);
    void (*undo)(void *state, void *change);
    void (*release)(void *change); /* stage's discard, or undoable's release */
    void *change;
    int applied;
} staged;

/* A plugin counter's addition, made at the commit (host_counter_add). */
typedef struct ctx_count {
    double *slot;
    double delta;
} ctx_count;

#define CTX_COUNTS 2
#define CTX_STAGED 2
/* Actions kept in the context itself: a processor's few per event (a
 * metric point makes two) cost no allocation of their own. */
#define CTX_ACTIONS 4
/* Bytes kept in the context for its actions' blocks (ctx_alloc). */
#define CTX_ROOM 256

struct sophia_ctx {
    sophia_instance *inst;
    const char *stream;
    action *v;
    size_t n, cap;
    staged *sv; /* applied by sophia_ctx_commit, else discarded on free */
    size_t sn, scap;
    staged sv_inline[CTX_STAGED]; /* sv until more are staged */
    ctx_count counts[CTX_COUNTS];
    size_t ncounts;
    size_t held; /* of them, changes waiting for the commit to apply */
    void *mem; /* memory actions and consolidator batch (memory_host.c) */
    void *pre; /* prefetch answers (host_prefetch.c) */
    void *outs; /* its outputs and its event's record (output.c) */
    sophia_apply *apply; /* in progress, reports to it until cancelled */
    int published;       /* its publishes went out */
    size_t room_used; /* bytes of room handed out (ctx_alloc) */
    /* Last, and not cleared by sophia_ctx_new: each slot is cleared as
     * ctx_push hands it out, room as ctx_alloc does. */
    action v_inline[CTX_ACTIONS]; /* v until more are pushed */
    _Alignas(16) char room[CTX_ROOM]; /* its actions' first small blocks */
};

/* n bytes for one of the context's actions (a block, freed with it):
 * from its room while that lasts, else malloc. A metric point's cache
 * put fits, and then costs no malloc and no free of its own. */
static void *ctx_alloc(sophia_ctx *ctx, size_t n)
{
    size_t at = ctx->room_used;
    if (n <= CTX_ROOM && ((n + 15) & ~(size_t)15) <= CTX_ROOM - at) {
        ctx->room_used = at + ((n + 15) & ~(size_t)15);
        return ctx->room + at;
    }
    return malloc(n);
}

/* Frees what ctx_alloc gave, unless it is in the room (which goes with
 * the context). */
static void ctx_free_block(sophia_ctx *ctx, void *p)
{
    uintptr_t u = (uintptr_t)p, r = (uintptr_t)ctx->room;
    if (u - r >= CTX_ROOM)
        free(p);
}

/* SDK 1.0's cache_peek, cache_get and memory_search take no self and
 * no context (a frozen ABI), so nothing in the call says which runtime
 * they read from: they use the runtime that last set an environment (the
 * daemon has one). Everything else is routed by its self or context;
 * 1.1's cache_get_ex and memory_search_ex replace these two reads. */
static sophia_host_rt *sdk10_rt;

/* The runtime of an instance loaded with a runtime's table. */
sophia_host_rt *sophia_host_rt_of(const sophia_instance *inst)
{
    if (!inst || !inst->host || inst->host == sophia_host_table())
        return NULL;
    /* the table is the runtime's first member (host_priv.h) */
    return (sophia_host_rt *)(void *)(uintptr_t)inst->host;
}

static sophia_host_rt *ctx_rt(const sophia_ctx *ctx)
{
    return ctx ? sophia_host_rt_of(ctx->inst) : NULL;
}

/* -------------------------------------------------------------- logging */

static void host_log(sophia_self *self, sophia_log_level level,
                     const char *fmt, ...)
{
    if ((int)level < (int)sophia_log_get_level())
        return;
    char msg[2048], q[2100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sophia_log((sophia_log_lvl)level, "plugin", "instance=%s msg=%s",
               self ? self->name : "-", sophia_log_quote(msg, q, sizeof(q)));
}

static const char *host_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
#define XX(name, val, str)                                                    \
    case val:                                                                 \
        return str;
        SOPHIA_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

/* ------------------------------------------------------------- actions */

/* memset(p, 0, n) for a small struct, in parts of at most 64 bytes:
 * gcc writes those as a few vector stores, where one memset of an
 * action (104 bytes) became rep stos, which starts slowly and which
 * callgrind counts a word at a time (about 40 instructions). */
static inline void clear_small(void *p, size_t n)
{
    char *c = p;
    for (; n > 64; c += 64, n -= 64)
        memset(c, 0, 64);
    memset(c, 0, n);
}

static action *ctx_push(sophia_ctx *ctx, action_kind kind)
{
    if (!ctx)
        return NULL;
    if (ctx->n == ctx->cap) {
        size_t cap = ctx->cap * 2;
        action *v = ctx->v == ctx->v_inline ? malloc(cap * sizeof(*v))
                                            : realloc(ctx->v, cap * sizeof(*v));
        if (!v)
            return NULL;
        if (ctx->v == ctx->v_inline)
            memcpy(v, ctx->v_inline, sizeof(ctx->v_inline));
        ctx->v = v;
        ctx->cap = cap;
    }
    action *a = &ctx->v[ctx->n++];
    clear_small(a, sizeof(*a));
    a->kind = kind;
    return a;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static const char *const update_names[] = {"metric", "alert", "notification",
                                           "data"};

static int host_emit(sophia_ctx *ctx, sophia_json *event)
{
    action *a = event ? ctx_push(ctx, ACT_EMIT) : NULL;
    if (!a) {
        json_decref(J(event));
        return event && ctx ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    }
    a->data = J(event);
    return 0;
}

const sophia_json *sophia_ctx_emitted(const sophia_ctx *ctx, size_t *cursor)
{
    while (ctx && *cursor < ctx->n)
        if (ctx->v[(*cursor)++].kind == ACT_EMIT)
            return (const sophia_json *)ctx->v[*cursor - 1].data;
    return NULL;
}

static int host_publish(sophia_ctx *ctx, sophia_update_type type,
                        const char *topic, const char *dashboard_id,
                        sophia_json *data)
{
    if ((unsigned)type > SOPHIA_UPDATE_DATA) {
        json_decref(J(data));
        return SOPHIA_EINVAL;
    }
    action *a = ctx_push(ctx, ACT_PUBLISH);
    if (!a) {
        json_decref(J(data));
        return SOPHIA_ENOMEM;
    }
    a->type = update_names[type];
    a->topic = dup_or_null(topic);
    a->dashboard = dup_or_null(dashboard_id);
    a->data = data ? J(data) : json_object();
    return 0;
}

static int host_alert(sophia_ctx *ctx, const char *alert_type,
                      const char *severity, const char *message,
                      sophia_json *data)
{
    json_t *d = data && json_is_object(J(data)) ? J(data) : json_object();
    if (data && d != J(data)) {
        json_object_set_new(d, "details", J(data));
    }
    json_object_set_new(d, "alert_type", json_string(alert_type ? alert_type : "system"));
    json_object_set_new(d, "message", json_string(message ? message : ""));
    json_object_set_new(d, "severity", json_string(severity ? severity : "info"));
    action *a = ctx_push(ctx, ACT_PUBLISH);
    if (!a) {
        json_decref(d);
        return SOPHIA_ENOMEM;
    }
    a->type = "alert";
    a->severity = strdup(severity ? severity : "info");
    a->data = d;
    return 0;
}

/* A cache put's key, tags and (given as text) value copied into one
 * block, freed as one: the tags' vector (lib/strv.h), then the key
 * and the text, with HOST_TEXT_PAD after it (host_text_check_padded
 * reads the copy). Three to five allocations a put before, for every
 * event of a plugin that caches what it sees; now none when the block
 * fits the context's room (ctx_alloc). */
static int put_block(sophia_ctx *ctx, action *a, const char *key, size_t klen,
                     const char *const *tags, size_t ntags, const size_t *tlens,
                     const char *text, size_t tlen)
{
    size_t tb = sophia_strv_packed_size_n(ntags, tlens), kl = klen + 1;
    char *block = ctx_alloc(ctx, tb + kl + (text ? tlen + HOST_TEXT_PAD : 0));
    if (!block)
        return -1;
    a->tags = sophia_strv_pack_n(block, tags, ntags, tlens);
    a->topic = memcpy(block + tb, key, kl);
    if (text) {
        a->text = memcpy(block + tb + kl, text, tlen);
        memset(a->text + tlen, 0, HOST_TEXT_PAD);
        a->tlen = tlen;
    }
    a->block = block;
    return 0;
}

/* cache_put and cache_put_text: `value` (taken) or `text` (copied, and
 * checked in its copy). The key's and tags' checks measure them, so the
 * copy needs no strlen of its own. */
static int push_cache_put(sophia_ctx *ctx, const char *key, json_t *value,
                          const char *text, size_t tlen, double ttl_s,
                          const char *const *tags)
{
    /* The same key, tag and ttl rules as a PUT (ttl <= 0 = the default),
     * told now rather than failing the event when it is applied. */
    char why[96];
    size_t klen, tlens[SOPHIA_L1_MAX_TAGS];
    int ntags;
    if (!key || sophia_cache_key_check_len(key, why, sizeof(why), &klen) ||
        (ntags = sophia_cache_tags_measure(tags, tlens)) < 0 ||
        isnan(ttl_s) || ttl_s > SOPHIA_CACHE_MAX_TTL) {
        json_decref(value);
        return SOPHIA_EINVAL;
    }
    action *a = ctx_push(ctx, ACT_CACHE_PUT);
    if (!a ||
        put_block(ctx, a, key, klen, tags, (size_t)ntags, tlens, text, tlen)) {
        if (a)
            ctx->n--; /* the slot is the last one: given back */
        json_decref(value);
        return SOPHIA_ENOMEM;
    }
    if (text && host_text_check_padded(a->text, tlen, NULL)) {
        ctx_free_block(ctx, a->block);
        ctx->n--;
        return SOPHIA_EINVAL;
    }
    a->data = text ? NULL : value ? value : json_null();
    a->ttl = ttl_s;
    return 0;
}

static int host_cache_put(sophia_ctx *ctx, const char *key, sophia_json *value,
                          double ttl_s, const char *const *tags)
{
    return push_cache_put(ctx, key, J(value), NULL, 0, ttl_s, tags);
}

/* ---- SDK 1.4: data and values given as JSON text ------------------- */

/* A metric update's "metric" member, which the router keys dashboards'
 * latest values and slow clients' coalescing by, into `out` (room for
 * len + 1 bytes): the bytes between the quotes where they need no
 * decoding, else jansson's reading (no longer than the text: escapes
 * only shrink). a->metric stays NULL when there is none. */
static void put_metric(action *a, char *out, const char *json, size_t len,
                       const host_text_member *m)
{
    if (!m->escaped) {
        if (m->at) {
            memcpy(out, m->at, m->len);
            out[m->len] = '\0';
            a->metric = out;
        }
        return;
    }
    json_t *v = json_loadb(json, len, JSON_DECODE_ANY, NULL);
    json_t *s = json_object_get(v, "metric");
    if (json_is_string(s) && json_string_length(s) <= len) {
        memcpy(out, json_string_value(s), json_string_length(s) + 1);
        a->metric = out;
    }
    json_decref(v);
}

/* A text update's text, topic, dashboard and metric are one allocation,
 * its block: one malloc and one free an update, where there were three.
 * The text is copied first, with HOST_TEXT_PAD after it, and checked in
 * its copy (host_text_check_padded); the metric's room is the most it
 * can take, as it is known only once the text is read. */
static int host_publish_text(sophia_ctx *ctx, sophia_update_type type,
                             const char *topic, const char *dashboard_id,
                             const char *json, size_t len)
{
    host_text_member m = {.key = "metric"};
    int metric = type == SOPHIA_UPDATE_METRIC;
    if ((unsigned)type > SOPHIA_UPDATE_DATA || !ctx || !json)
        return SOPHIA_EINVAL;
    size_t tl = topic ? strlen(topic) + 1 : 0;
    size_t dl = dashboard_id ? strlen(dashboard_id) + 1 : 0;
    char *block = malloc(len + HOST_TEXT_PAD + tl + dl + (metric ? len + 1 : 0));
    if (!block)
        return SOPHIA_ENOMEM;
    memcpy(block, json, len);
    memset(block + len, 0, HOST_TEXT_PAD);
    if (host_text_check_padded(block, len, metric ? &m : NULL)) {
        free(block);
        return SOPHIA_EINVAL;
    }
    if (type == SOPHIA_UPDATE_ALERT) { /* outputs read alerts as values */
        json_t *v = json_loadb(block, len, JSON_DECODE_ANY, NULL);
        free(block);
        return host_publish(ctx, type, topic, dashboard_id, (sophia_json *)v);
    }
    action *a = ctx_push(ctx, ACT_PUBLISH);
    if (!a) {
        free(block);
        return SOPHIA_ENOMEM;
    }
    a->type = update_names[type];
    a->block = block;
    a->text = block;
    a->tlen = len;
    char *o = block + len + HOST_TEXT_PAD;
    if (topic) {
        a->topic = memcpy(o, topic, tl);
        o += tl;
    }
    if (dashboard_id) {
        a->dashboard = memcpy(o, dashboard_id, dl);
        o += dl;
    }
    if (metric)
        put_metric(a, o, json, len, &m);
    return 0;
}

static int host_cache_put_text(sophia_ctx *ctx, const char *key,
                               const char *json, size_t len, double ttl_s,
                               const char *const *tags)
{
    if (!ctx || !json)
        return SOPHIA_EINVAL;
    return push_cache_put(ctx, key, NULL, json, len, ttl_s, tags);
}

static int push_key_action(sophia_ctx *ctx, action_kind kind, const char *s)
{
    action *a = s ? ctx_push(ctx, kind) : NULL;
    if (!a)
        return s ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    a->topic = strdup(s);
    return 0;
}

static int host_cache_invalidate(sophia_ctx *ctx, const char *key)
{
    return push_key_action(ctx, ACT_CACHE_DEL, key);
}

static int host_cache_invalidate_tag(sophia_ctx *ctx, const char *tag)
{
    return push_key_action(ctx, ACT_CACHE_DEL_TAG, tag);
}

/* Room for one more staged change, or -1. */
static int staged_reserve(sophia_ctx *ctx)
{
    if (ctx->sn < ctx->scap)
        return 0;
    size_t cap = ctx->scap * 2;
    staged *v = ctx->sv == ctx->sv_inline ? malloc(cap * sizeof(*v))
                                          : realloc(ctx->sv, cap * sizeof(*v));
    if (!v)
        return -1;
    if (ctx->sv == ctx->sv_inline)
        memcpy(v, ctx->sv_inline, sizeof(ctx->sv_inline));
    ctx->sv = v;
    ctx->scap = cap;
    return 0;
}

/* A change applied at the commit; `hold`: process() must see it, so the
 * stream waits for this event (sophia_ctx_has_staged). */
static int ctx_stage(sophia_ctx *ctx, void (*apply)(void *, void *),
                     void (*discard)(void *), void *change, int hold)
{
    if (!ctx || !apply || staged_reserve(ctx) < 0) {
        if (discard)
            discard(change);
        return ctx && apply ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    }
    ctx->sv[ctx->sn++] = (staged){apply, NULL, discard, change, 0};
    ctx->held += hold != 0;
    return 0;
}

static int host_stage(sophia_ctx *ctx, void (*apply)(void *, void *),
                      void (*discard)(void *), void *change)
{
    return ctx_stage(ctx, apply, discard, change, 1);
}

/* Applied now in a stream event's context, so the stream need not wait
 * for this event's effects before the next process() (ingest/stream.c);
 * a timer's or consolidator's context runs beside the streams, where an
 * undo could not restore what younger events built on, so there it waits
 * for the commit like stage. */
static int host_stage_undoable(sophia_ctx *ctx, void (*apply)(void *, void *),
                               void (*undo)(void *, void *),
                               void (*release)(void *), void *change)
{
    if (!ctx || !apply || !undo || staged_reserve(ctx) < 0) {
        if (release)
            release(change);
        return ctx && apply && undo ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    }
    staged *v = &ctx->sv[ctx->sn++];
    *v = (staged){apply, undo, release, change, 0};
    if (ctx->stream && ctx->inst) {
        apply(ctx->inst->state, change);
        v->applied = 1;
    } else {
        ctx->held++;
    }
    return 0;
}

/* An update with a severity (so also to alerts and alerts:<severity>),
 * for alert_ex (host_alert.c). Takes `data`. */
int sophia_ctx_push_update(sophia_ctx *ctx, const char *type,
                           const char *severity, const char *topic,
                           const char *dashboard_id, sophia_json *data)
{
    action *a = ctx_push(ctx, ACT_PUBLISH);
    if (!a) {
        json_decref(J(data));
        return ctx ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
    }
    a->type = a->type_own = strdup(type);
    a->severity = dup_or_null(severity);
    a->topic = dup_or_null(topic);
    a->dashboard = dup_or_null(dashboard_id);
    a->data = data ? J(data) : json_object();
    return 0;
}

size_t sophia_ctx_count_updates(const sophia_ctx *ctx, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; ctx && i < ctx->n; i++)
        n += ctx->v[i].kind == ACT_PUBLISH && ctx->v[i].type &&
             !strcmp(ctx->v[i].type, type);
    return n;
}

/* ---------------------------------------------------- reads, counters */

static sophia_json *host_cache_peek(const char *key)
{
    const char *val;
    size_t len;
    if (!sdk10_rt || !sdk10_rt->env.cache ||
        sophia_cache_peek(sdk10_rt->env.cache, key, &val, &len) != 0)
        return NULL;
    return (sophia_json *)json_loadb(val, len, JSON_DECODE_ANY, NULL);
}

/* 1 when `key` is who + 0x1f + name, who being wl bytes: compared in
 * place, as building the key to compare (a strlen and two memcpy calls)
 * cost more, and by libc's compares, as a byte loop over both cost more
 * still. strncmp stops at who's end, so who need not be measured: when
 * the first wl bytes match, who has at least wl. */
static int counter_key_is(const char *key, size_t wl, const char *who,
                          const char *name)
{
    return key[0] == who[0] && !strncmp(key, who, wl) && !who[wl] &&
           !strcmp(key + wl + 1, name);
}

/* The runtime's counter `name` of `self` (created at 0), or NULL. It
 * lives as long as the runtime, so a context may keep the pointer. */
static double *counter_slot(sophia_self *self, const char *name)
{
    char key[512];
    sophia_host_rt *rt = sophia_host_rt_of(self);
    const char *who = self ? self->name : "-";
    for (size_t i = 0; rt && i < HOST_COUNTER_HITS; i++)
        if (rt->counter_hits[i].slot &&
            counter_key_is(rt->counter_hits[i].key, rt->counter_hits[i].wl,
                           who, name))
            return rt->counter_hits[i].slot; /* before the dict's keyed hash */
    size_t wl = strlen(who);
    size_t nl = strlen(name);
    if (wl + nl + 2 > sizeof(key))
        return NULL; /* no such names: instance and counter names are short */
    memcpy(key, who, wl); /* every count looks its slot up: no snprintf */
    key[wl] = '\x1f';
    memcpy(key + wl + 1, name, nl);
    key[wl + 1 + nl] = '\0';
    if (!rt || (!rt->counters && !(rt->counters = sophia_dict_new())))
        return NULL;
    double *v = sophia_dict_get(rt->counters, key);
    if (!v && (v = calloc(1, sizeof(*v))))
        sophia_dict_set(rt->counters, key, v);
    if (v && wl + nl + 2 <= sizeof(rt->counter_hits[0].key)) {
        unsigned k = rt->counter_next++ % HOST_COUNTER_HITS;
        memcpy(rt->counter_hits[k].key, key, wl + nl + 2);
        rt->counter_hits[k].wl = wl;
        rt->counter_hits[k].slot = v;
    }
    return v;
}

/* A count made during a callback with a context (process, a timer's, a
 * consolidator run) moves with it: counted when it commits, never for an
 * event that goes back and comes again. A context keeps a few counts
 * inline (a processor counts one or two things an event); more are
 * staged like any change. */
static void count_apply(void *state, void *change)
{
    (void)state;
    ctx_count *c = change;
    *c->slot += c->delta;
    free(c);
}

static void host_counter_add(sophia_self *self, const char *name, double delta)
{
    sophia_ctx *ctx = self ? self->running : NULL;
    double *slot = counter_slot(self, name);
    if (!slot)
        return;
    if (!ctx) {
        *slot += delta;
        return;
    }
    for (size_t i = 0; i < ctx->ncounts; i++)
        if (ctx->counts[i].slot == slot) {
            ctx->counts[i].delta += delta;
            return;
        }
    if (ctx->ncounts < CTX_COUNTS) {
        ctx->counts[ctx->ncounts++] = (ctx_count){slot, delta};
        return;
    }
    ctx_count *c = malloc(sizeof(*c));
    if (c) {
        *c = (ctx_count){slot, delta};
        ctx_stage(ctx, count_apply, free, c, 0);
    }
}

typedef struct counter_visit {
    void (*fn)(const char *, const char *, double, void *);
    void *arg;
} counter_visit;

static void visit_counter(const char *key, void *val, void *arg)
{
    counter_visit *cv = arg;
    char inst[256];
    const char *sep = strchr(key, '\x1f');
    snprintf(inst, sizeof(inst), "%.*s", (int)(sep - key), key);
    cv->fn(inst, sep + 1, *(double *)val, cv->arg);
}

void sophia_host_counters_each(const sophia_host_rt *rt,
                               void (*fn)(const char *, const char *, double,
                                          void *),
                               void *arg)
{
    counter_visit cv = {fn, arg};
    if (rt && rt->counters)
        sophia_dict_each(rt->counters, visit_counter, &cv);
}

static int64_t host_now_us(void)
{
    return sophia_now_wall_us();
}

typedef struct host_get {
    void (*cb)(void *arg, int rc, const sophia_json *value);
    void *arg;
    sophia_host_rt *rt;
} host_get;

/* Plugin callbacks the host still owes (cache_get, memory_search): a
 * reload keeps retired plugin code loaded until this is back to zero. */
void sophia_host_callback_begin(sophia_host_rt *rt)
{
    if (rt)
        rt->callbacks_pending++;
}

void sophia_host_callback_end(sophia_host_rt *rt)
{
    if (rt && rt->callbacks_pending)
        rt->callbacks_pending--;
}

size_t sophia_host_callbacks_pending(const sophia_host_rt *rt)
{
    return rt ? rt->callbacks_pending : 0;
}

static void on_host_get(void *arg, int rc, const char *val, size_t len,
                        int tier)
{
    (void)tier;
    host_get *g = arg;
    json_t *v = rc == 0 ? json_loadb(val, len, JSON_DECODE_ANY, NULL) : NULL;
    if (rc == 0 && !v)
        v = json_stringn(val, len); /* not JSON: hand it over as a string */
    sophia_host_rt *rt = g->rt;
    g->cb(g->arg, rc, (const sophia_json *)v);
    json_decref(v);
    free(g);
    sophia_host_callback_end(rt);
}

int sophia_host_rt_cache_get(sophia_host_rt *rt, const char *key,
                             void (*cb)(void *arg, int rc,
                                        const sophia_json *v),
                             void *arg)
{
    if (!key || !cb)
        return SOPHIA_EINVAL;
    if (!rt || !rt->env.cache)
        return SOPHIA_EUNAVAIL;
    host_get *g = malloc(sizeof(*g));
    if (!g)
        return SOPHIA_ENOMEM;
    *g = (host_get){cb, arg, rt};
    sophia_host_callback_begin(rt); /* before: cb may run inside the call */
    int rc = sophia_cache_get(rt->env.cache, key, NULL, NULL, on_host_get,
                              g);
    if (rc) {
        free(g);
        sophia_host_callback_end(rt);
    }
    return rc;
}

static int host_cache_get(const char *key,
                          void (*cb)(void *arg, int rc, const sophia_json *v),
                          void *arg)
{
    return sophia_host_rt_cache_get(sdk10_rt, key, cb, arg);
}

static const sophia_host host_table = {
    .struct_size = sizeof(sophia_host),
    .abi_major = SOPHIA_SDK_VERSION_MAJOR,
    .abi_minor = SOPHIA_SDK_VERSION_MINOR,
    .log = host_log,
    .strerror = host_strerror,
    .opt_string = sophia_opts_string,
    .opt_int = sophia_opts_int,
    .opt_double = sophia_opts_double,
    .opt_bool = sophia_opts_bool,
    .opt_list_len = sophia_opts_list_len,
    .opt_list_item = sophia_opts_list_item,
    .json_type = host_json_type,
    .json_get = host_json_get,
    .json_string = host_json_string,
    .json_number = host_json_number,
    .json_bool = host_json_bool,
    .json_size = host_json_size,
    .json_at = host_json_at,
    .json_key_at = host_json_key_at,
    .json_object = host_json_object,
    .json_array = host_json_array,
    .json_str = host_json_str,
    .json_num = host_json_num,
    .json_int = host_json_int,
    .json_bool_new = host_json_bool_new,
    .json_copy = host_json_copy,
    .json_set = host_json_set,
    .json_append = host_json_append,
    .json_free = host_json_free,
    .json_dump = host_json_dump,
    .free = host_free,
    .publish = host_publish,
    .alert = host_alert,
    .cache_put = host_cache_put,
    .cache_invalidate = host_cache_invalidate,
    .cache_invalidate_tag = host_cache_invalidate_tag,
    .cache_peek = host_cache_peek,
    .counter_add = host_counter_add,
    .now_us = host_now_us,
    .cache_get = host_cache_get,
    .memory_store = sophia_memory_host_store,
    .memory_search = sophia_memory_host_search,
    .memory_batch = sophia_memory_host_batch,
    .memory_merge = sophia_memory_host_merge,
    .memory_expire = sophia_memory_host_expire,
    .json_parse = host_json_parse,
    .stage = host_stage,
    .stage_undoable = host_stage_undoable,
    .json_get_key = host_json_get_key,
    .json_del = host_json_del,
    .json_iter = host_json_iter,
    .alert_ex = sophia_host_alert_ex,
    .timer_add = sophia_host_timer_add,
    .timer_del = sophia_host_timer_del,
    .cache_get_ex = sophia_host_cache_get_ex,
    .memory_search_ex = sophia_host_memory_search_ex,
    .prefetch = sophia_host_prefetch,
    .prefetched = sophia_host_prefetched,
    .emit = host_emit,
    .output_done = sophia_host_output_done,
    .http_request = sophia_host_http_request,
    .redis_command = sophia_host_redis_command,
    .pg_query = sophia_host_pg_query,
    .hmac_sha256_hex = sophia_host_hmac_sha256_hex,
    .memory_set_importance = sophia_memory_host_set_importance,
    .json_write = host_json_write,
    .publish_text = host_publish_text,
    .cache_put_text = host_cache_put_text,
};

const sophia_host *sophia_host_table(void)
{
    return &host_table;
}

sophia_host_rt *sophia_host_rt_new(void)
{
    sophia_host_rt *rt = calloc(1, sizeof(*rt));
    if (rt)
        rt->table = host_table;
    return rt;
}

sophia_host *sophia_host_rt_table(sophia_host_rt *rt)
{
    return rt ? &rt->table : NULL;
}

void sophia_host_rt_free(sophia_host_rt *rt)
{
    if (!rt)
        return;
    sophia_host_timers_bind(rt, NULL);
    sophia_dict_free(rt->counters, free);
    if (sdk10_rt == rt)
        sdk10_rt = NULL;
    free(rt);
}

void sophia_host_set_env(sophia_host_rt *rt, const sophia_host_env *e)
{
    if (!rt)
        return;
    rt->env = e ? *e : (sophia_host_env){0};
    sdk10_rt = rt;
}

const sophia_host_env *sophia_host_ctx_env(const sophia_ctx *ctx)
{
    static const sophia_host_env none;
    const sophia_host_rt *rt = ctx_rt(ctx);
    return rt ? &rt->env : &none;
}

sophia_host_rt *sophia_host_sdk10_rt(void)
{
    return sdk10_rt;
}

/* ------------------------------------------------------------- context */

void sophia_ctx_enter(sophia_ctx *ctx)
{
    if (ctx->inst)
        ctx->inst->running = ctx;
}

void sophia_ctx_leave(sophia_ctx *ctx)
{
    if (ctx->inst)
        ctx->inst->running = NULL;
}

sophia_verdict sophia_ctx_process(sophia_ctx *ctx, const sophia_event *ev)
{
    sophia_ctx_enter(ctx);
    sophia_verdict v = ctx->inst->desc->processor->process(ctx->inst->state,
                                                           ev, ctx);
    sophia_ctx_leave(ctx);
    return v;
}

sophia_ctx *sophia_ctx_new(sophia_instance *inst, const char *stream)
{
    /* malloc, and clear all but the inline actions: calloc cleared the
     * whole context, most of it action slots never used. */
    sophia_ctx *ctx = malloc(sizeof(*ctx));
    if (ctx) {
        memset(ctx, 0, offsetof(sophia_ctx, v_inline));
        ctx->inst = inst;
        ctx->stream = stream;
        ctx->v = ctx->v_inline;
        ctx->cap = CTX_ACTIONS;
        ctx->sv = ctx->sv_inline;
        ctx->scap = CTX_STAGED;
    }
    return ctx;
}

/* Appends prefix+name as the next topic in buf; 0, or -1 when full. Runs
 * for every publish, so memcpy rather than snprintf (which was 2% of the
 * daemon's CPU under ingest). */
static int add_topic(const char *prefix, const char *name, const char **out,
                     size_t *n, char *buf, size_t buflen, size_t *off)
{
    size_t pl = strlen(prefix), nl = name ? strlen(name) : 0;
    if (pl + nl + 1 > buflen - *off)
        return -1;
    char *t = buf + *off;
    memcpy(t, prefix, pl);
    if (nl) /* memcpy from NULL is undefined even for 0 bytes ("alerts") */
        memcpy(t + pl, name, nl);
    t[pl + nl] = '\0';
    out[(*n)++] = t;
    *off += pl + nl + 1;
    return 0;
}

size_t sophia_update_topics(const char *type, const char *dashboard_id,
                            const char *stream, const char *severity,
                            const char *extra, const char **out, char *buf,
                            size_t buflen)
{
    size_t n = 0, off = 0;
    if (add_topic("updates:", type, out, &n, buf, buflen, &off) < 0 ||
        (dashboard_id && add_topic("dashboard:", dashboard_id, out, &n, buf,
                                   buflen, &off) < 0) ||
        (stream &&
         add_topic("stream:", stream, out, &n, buf, buflen, &off) < 0) ||
        (severity &&
         (add_topic("alerts", NULL, out, &n, buf, buflen, &off) < 0 ||
          add_topic("alerts:", severity, out, &n, buf, buflen, &off) < 0)))
        return n;
    if (extra)
        add_topic("", extra, out, &n, buf, buflen, &off);
    return n;
}

/* 1 when a and b are both NULL or the same text. */
static int same_text(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

/* The kept topics were built for a's type: by address for a constant
 * name (update_names, "alert"; an owned one is never kept by address,
 * as its address may come back for another text), else by text. */
static int same_type(const host_pub_topics *m, const action *a)
{
    return (m->type && m->type == a->type) || strcmp(m->v[0] + 8, a->type) == 0;
}

/* Update a's topics as sophia_update_topics gives them, into v and buf;
 * *n of them. The usual update, with no severity and no extra topic,
 * comes from the runtime's host_pub_topics instead, built again only when
 * its type, dashboard or stream differ from the last one's: a stream's
 * updates one after the other go to the same few topics, and building
 * the names was about 440 instructions a publish, comparing them about
 * 60. */
static const char *const *publish_topics(sophia_host_rt *rt, const action *a,
                                         const char *stream, const char **v,
                                         char *buf, size_t buflen, size_t *n)
{
    host_pub_topics *m = &rt->pub_topics;
    if (a->severity || a->topic || !a->type) {
        *n = sophia_update_topics(a->type, a->dashboard, stream, a->severity,
                                  a->topic, v, buf, buflen);
        return v;
    }
    if (m->n && same_type(m, a) && same_text(m->dash, a->dashboard) &&
        same_text(m->stream, stream)) {
        *n = m->n;
        return m->v;
    }
    *n = sophia_update_topics(a->type, a->dashboard, stream, NULL, NULL, m->v,
                              m->buf, sizeof(m->buf));
    /* kept only whole: a name the buffer cut off is built each time */
    m->n = *n == (size_t)(1 + !!a->dashboard + !!stream) ? *n : 0;
    if (m->n) {
        m->type = a->type_own ? NULL : a->type;
        m->dash = a->dashboard ? m->v[1] + 10 : NULL; /* after "dashboard:" */
        m->stream = stream ? m->v[m->n - 1] + 7 : NULL; /* after "stream:" */
    }
    return m->v;
}

static void apply_publish(sophia_ctx *ctx, action *a)
{
    sophia_host_rt *rt = ctx_rt(ctx);
    const char *v[6];
    char buf[1024];
    size_t n;
    const char *const *topics =
        publish_topics(rt, a, ctx->stream, v, buf, sizeof(buf), &n);
    if (a->text)
        sophia_ws_publish_text(rt->env.ws, a->type, topics, n, a->dashboard,
                               a->metric, a->text, a->tlen);
    else
        sophia_ws_publish(rt->env.ws, a->type, topics, n, a->dashboard,
                          a->data);
}

/* One sophia_ctx_apply in progress: `left` effects not yet reported plus
 * one held by sophia_ctx_apply itself while it starts them, so an effect
 * that reports before the call returns cannot end the apply early. It
 * lives apart from the context: effects may outlive a cancelled context
 * (sophia_ctx_free sets done to NULL), and their reports still land here. */
struct sophia_apply {
    unsigned left;
    int rc; /* the first error */
    sophia_ctx_done_fn done;
    void *arg;
    sophia_ctx *ctx; /* NULL once cancelled */
    sophia_host_rt *rt; /* its context's runtime, or NULL */
};

void sophia_apply_begin(sophia_apply *ap)
{
    ap->left++;
}

/* Once per context: at sophia_ctx_commit, or at once for an apply
 * nobody waits for. */
static void apply_publishes(sophia_ctx *ctx)
{
    if (ctx->published)
        return;
    ctx->published = 1;
    sophia_host_rt *rt = ctx_rt(ctx);
    for (size_t i = 0; rt && rt->env.ws && i < ctx->n; i++)
        if (ctx->v[i].kind == ACT_PUBLISH)
            apply_publish(ctx, &ctx->v[i]);
}

void sophia_apply_end(void *arg, int rc)
{
    sophia_apply *ap = arg;
    if (rc && !ap->rc)
        ap->rc = rc;
    if (--ap->left)
        return;
    if (ap->ctx)
        ap->ctx->apply = NULL;
    if (ap->done)
        ap->done(ap->arg, ap->rc);
    sophia_host_rt *rt = ap->rt;
    free(ap);
    sophia_host_callback_end(rt); /* done may have run plugin code (commit) */
}

/* Starts one effect whose report comes through sophia_apply_end; a
 * refusal now (EBUSY, EINVAL...) is reported at once. */
static void apply_cache_put(sophia_apply *ap, action *a)
{
    size_t len = a->tlen;
    char *s = a->text ? NULL : sophia_json_encode(a->data, &len);
    const char *v = a->text ? a->text : s; /* the cache copies it */
    sophia_apply_begin(ap);
    /* key and tags checked at the plugin's call (push_cache_put) */
    int rc = v ? sophia_cache_put_checked_async(ap->rt->env.cache, a->topic,
                                                v, len, a->ttl,
                                                (const char *const *)a->tags,
                                                sophia_apply_end, ap)
               : SOPHIA_ENOMEM;
    free(s);
    if (rc)
        sophia_apply_end(ap, rc);
}

static void apply_cache_del(sophia_apply *ap, action *a)
{
    sophia_apply_begin(ap);
    int rc = a->kind == ACT_CACHE_DEL
                 ? sophia_cache_del_async(ap->rt->env.cache, a->topic,
                                          sophia_apply_end, ap)
                 : sophia_cache_invalidate_tag_async(ap->rt->env.cache, a->topic,
                                                     sophia_apply_end, ap);
    if (rc)
        sophia_apply_end(ap, rc);
}

void sophia_ctx_apply(sophia_ctx *ctx, sophia_ctx_done_fn done, void *arg)
{
    sophia_apply *ap = malloc(sizeof(*ap)); /* filled in below */
    if (!ap) {
        if (done)
            done(arg, SOPHIA_ENOMEM);
        return;
    }
    sophia_host_rt *rt = ctx_rt(ctx);
    *ap = (sophia_apply){.left = 1, .done = done, .arg = arg, .ctx = ctx,
                         .rt = rt};
    /* Until it reports, the context may still commit or discard staged
     * changes: plugin code a reload must keep loaded (host.h). */
    sophia_host_callback_begin(rt);
    ctx->apply = ap;
    if (!done) /* nobody waits: publish at once, as before the contract */
        apply_publishes(ctx);
    for (size_t i = 0; i < ctx->n; i++) {
        action *a = &ctx->v[i];
        switch (a->kind) {
        case ACT_PUBLISH: /* at the commit, once the rest is durable */
        case ACT_EMIT:    /* the chain's business (ingest/chain.h) */
            break;
        case ACT_CACHE_PUT:
            if (rt && rt->env.cache)
                apply_cache_put(ap, a);
            break;
        case ACT_CACHE_DEL:
        case ACT_CACHE_DEL_TAG:
            if (rt && rt->env.cache)
                apply_cache_del(ap, a);
            break;
        }
    }
    sophia_memory_ctx_apply(ctx, ap);
    sophia_output_ctx_apply(ctx, ap);
    sophia_apply_end(ap, 0); /* the hold taken above */
}

void sophia_ctx_commit(sophia_ctx *ctx)
{
    apply_publishes(ctx);
    void *state = ctx->inst ? ctx->inst->state : NULL;
    for (size_t i = 0; i < ctx->sn; i++) {
        staged *v = &ctx->sv[i];
        if (!v->applied)
            v->apply(state, v->change);
        if (v->undo && v->release) /* stage's apply took the change */
            v->release(v->change);
    }
    ctx->sn = ctx->held = 0;
    for (size_t i = 0; i < ctx->ncounts; i++)
        *ctx->counts[i].slot += ctx->counts[i].delta;
    ctx->ncounts = 0;
}

static void on_detached_applied(void *arg, int rc)
{
    sophia_ctx *ctx = arg;
    if (rc == 0) {
        /* no event to hold back: its alerts go to outputs as it commits */
        sophia_output_ctx_detached(ctx);
        sophia_ctx_commit(ctx);
    }
    sophia_ctx_free(ctx); /* discards what did not commit */
}

void sophia_ctx_apply_detached(sophia_ctx *ctx)
{
    sophia_ctx_apply(ctx, on_detached_applied, ctx);
}

int sophia_ctx_has_staged(const sophia_ctx *ctx)
{
    return ctx && ctx->held > 0;
}

void sophia_ctx_free(sophia_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->apply) { /* its effects go on; nobody is told any more */
        ctx->apply->done = NULL;
        ctx->apply->ctx = NULL;
    }
    for (size_t i = ctx->sn; i--;) { /* never committed: newest first */
        staged *v = &ctx->sv[i];
        if (v->applied)
            v->undo(ctx->inst->state, v->change);
        if (v->release)
            v->release(v->change);
    }
    if (ctx->sv != ctx->sv_inline)
        free(ctx->sv);
    for (size_t i = 0; i < ctx->n; i++) {
        action *a = &ctx->v[i];
        json_decref(a->data);
        if (a->block) { /* a cache put's key, tags and text, or a text
                         * update's text, topic and dashboard: nothing
                         * else of it was allocated (free(NULL) is a call) */
            ctx_free_block(ctx, a->block);
            continue;
        }
        free(a->type_own);
        free(a->severity);
        free(a->dashboard);
        free(a->topic);
        free(a->text);
    }
    sophia_memory_ctx_free(ctx);
    sophia_prefetch_ctx_free(ctx);
    sophia_output_ctx_free(ctx);
    if (ctx->v != ctx->v_inline)
        free(ctx->v);
    free(ctx);
}

void **sophia_ctx_memory_slot(sophia_ctx *ctx)
{
    return ctx ? &ctx->mem : NULL;
}

void **sophia_ctx_prefetch_slot(sophia_ctx *ctx)
{
    return ctx ? &ctx->pre : NULL;
}

sophia_instance *sophia_ctx_instance(const sophia_ctx *ctx)
{
    return ctx ? ctx->inst : NULL;
}

void **sophia_ctx_output_slot(sophia_ctx *ctx)
{
    return ctx ? &ctx->outs : NULL;
}

const json_t *sophia_ctx_next_alert(const sophia_ctx *ctx, size_t *i)
{
    for (; ctx && *i < ctx->n; (*i)++) {
        const action *a = &ctx->v[*i];
        if (a->kind == ACT_PUBLISH && a->type && !strcmp(a->type, "alert")) {
            (*i)++;
            return a->data;
        }
    }
    return NULL;
}

/* ------------------------------------------------ actions as JSON (SDK) */

/* What sophia_ctx_apply would do, as data: sophia-plugin-test prints it
 * and tests assert on it. Topics are computed exactly as apply_publish
 * computes them, so the output shows where an update would really go. */
/* An action's data or value as a value: its text read back when it came
 * as text (a new reference either way). */
static json_t *action_value(const action *a)
{
    if (a->text)
        return json_loadb(a->text, a->tlen, JSON_DECODE_ANY, NULL);
    return a->data ? json_incref(a->data) : json_null();
}

static json_t *publish_json(const sophia_ctx *ctx, const action *a)
{
    const char *topics[6];
    char buf[1024];
    size_t n = sophia_update_topics(a->type, a->dashboard, ctx->stream,
                                    a->severity, a->topic, topics, buf,
                                    sizeof(buf));
    json_t *t = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(t, json_string(topics[i]));
    json_t *o = json_object();
    json_object_set_new(o, "action", json_string(a->severity ? "alert"
                                                             : "publish"));
    json_object_set_new(o, "type", json_string(a->type));
    json_object_set_new(o, "topics", t);
    if (a->dashboard)
        json_object_set_new(o, "dashboard_id", json_string(a->dashboard));
    json_object_set_new(o, "data", action_value(a));
    return o;
}

static json_t *cache_put_json(const action *a)
{
    json_t *tags = json_array();
    for (size_t k = 0; a->tags && a->tags[k]; k++)
        json_array_append_new(tags, json_string(a->tags[k]));
    return json_pack("{s:s, s:s, s:o, s:f, s:o}", "action", "cache_put",
                     "key", a->topic, "value", action_value(a), "ttl", a->ttl,
                     "tags", tags);
}

static json_t *action_json(const sophia_ctx *ctx, const action *a)
{
    switch (a->kind) {
    case ACT_PUBLISH:
        return publish_json(ctx, a);
    case ACT_CACHE_PUT:
        return cache_put_json(a);
    case ACT_CACHE_DEL:
        return json_pack("{s:s, s:s}", "action", "cache_invalidate", "key",
                         a->topic);
    case ACT_CACHE_DEL_TAG:
        return json_pack("{s:s, s:s}", "action", "cache_invalidate_tag",
                         "tag", a->topic);
    case ACT_EMIT:
        return json_pack("{s:s, s:O}", "action", "emit", "event", a->data);
    default: /* a kind added later without a case here: still visible */
        return json_pack("{s:s, s:i}", "action", "unknown", "kind",
                         (int)a->kind);
    }
}

sophia_json *sophia_ctx_actions_json(const sophia_ctx *ctx)
{
    json_t *arr = json_array();
    for (size_t i = 0; ctx && arr && i < ctx->n; i++) {
        json_t *o = action_json(ctx, &ctx->v[i]);
        if (o)
            json_array_append_new(arr, o);
    }
    return (sophia_json *)arr;
}
