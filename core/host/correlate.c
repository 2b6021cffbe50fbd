/*
 * correlate - see correlate.h.
 *
 * Correlators are few (a handful per daemon) and listen to a few streams
 * each, so the commit hook walks them all and compares stream names: no
 * table to keep in step across reloads. One 1 s tick drives the snapshot
 * reads still owed at start-up and the periodic writes; a correlator's
 * own windows are its timers (host->timer_add).
 */
#include "host/correlate.h"

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "event/loop.h"
#include "event/redis.h"
#include "host/host.h"
#include "lib/log.h"

#define CORR_SNAPSHOT_EVERY 30.0 /* seconds, correlators.<i>.snapshot_every */
#define CORR_LOAD_WAIT_US (10 * 1000000LL) /* then it starts empty */
#define CORR_BUFFER_MAX 100000 /* events held while the snapshot loads */

/* An event that came while the instance's snapshot was being read. */
typedef struct held_event {
    json_t *body;
    char *stream, *id;
    const char *source; /* a static string (stream.h) */
    int64_t received_us;
} held_event;

typedef struct corr {
    sophia_instance *inst;
    const sophia_correlator_ops *ops;
    char **streams;
    size_t nstreams;
    int snapshot;          /* written to and read from Redis */
    double every;          /* seconds between writes */
    int64_t next_write_us; /* monotonic */
    int loading;           /* the start-up read has not answered yet */
    int reading;           /* that read is out */
    held_event *held;
    size_t nheld, capheld;
    uint64_t observed, failed, missed;
    uint64_t observed_at_write; /* nothing new since: no snapshot due */
} corr;

struct sophia_correlate {
    corr *v;
    size_t n;
    struct event_base *base;
    struct event *tick;
    sophia_redis *redis; /* NULL: no snapshots */
    char *redis_url;
    char node[128];
    int64_t started_us;
    size_t writes_out; /* snapshot writes not answered yet */
    int closing;
};

/* ------------------------------------------------------------ helpers */

static int corr_has_op(const corr *c, size_t off)
{
    return c->ops && c->ops->struct_size >= off + sizeof(void *);
}

static int can_export(const corr *c)
{
    return corr_has_op(c, offsetof(sophia_correlator_ops, export_state)) &&
           c->ops->export_state;
}

static int can_import(const corr *c)
{
    return corr_has_op(c, offsetof(sophia_correlator_ops, import_state)) &&
           c->ops->import_state;
}

static corr *corr_find(sophia_correlate *k, const char *instance)
{
    for (size_t i = 0; k && i < k->n; i++)
        if (!strcmp(k->v[i].inst->name, instance))
            return &k->v[i];
    return NULL;
}

static void held_clear(corr *c)
{
    for (size_t i = 0; i < c->nheld; i++) {
        json_decref(c->held[i].body);
        free(c->held[i].stream);
        free(c->held[i].id);
    }
    free(c->held);
    c->held = NULL;
    c->nheld = c->capheld = 0;
}

static void corr_clear(corr *c)
{
    for (size_t i = 0; i < c->nstreams; i++)
        free(c->streams[i]);
    free(c->streams);
    held_clear(c);
}

/* ----------------------------------------------------------- observe */

static void observe(corr *c, const sophia_event *ev)
{
    sophia_ctx *ctx = sophia_ctx_new(c->inst, NULL);
    if (!ctx) {
        c->failed++;
        return;
    }
    sophia_ctx_enter(ctx);
    int rc = c->ops->observe(c->inst->state, ev, ctx);
    sophia_ctx_leave(ctx);
    c->observed++;
    if (rc == 0) {
        sophia_ctx_apply_detached(ctx); /* like a timer's */
        return;
    }
    c->failed++;
    sophia_ctx_free(ctx);
}

static int listens(const corr *c, const char *stream)
{
    for (size_t i = 0; i < c->nstreams; i++)
        if (!strcmp(c->streams[i], stream))
            return 1;
    return 0;
}

static void hold(corr *c, const sophia_event *ev)
{
    if (c->nheld == c->capheld) {
        size_t cap = c->capheld ? c->capheld * 2 : 64;
        held_event *g = cap <= CORR_BUFFER_MAX
                            ? realloc(c->held, cap * sizeof(*g)) : NULL;
        if (!g) {
            c->missed++;
            return;
        }
        c->held = g;
        c->capheld = cap;
    }
    held_event *h = &c->held[c->nheld++];
    *h = (held_event){.body = json_incref((json_t *)ev->body),
                      .stream = strdup(ev->stream),
                      .id = ev->id ? strdup(ev->id) : NULL,
                      .source = ev->source, .received_us = ev->received_us};
}

void sophia_correlate_on_commit(void *arg, const sophia_event *ev)
{
    sophia_correlate *k = arg;
    for (size_t i = 0; k && i < k->n; i++) {
        corr *c = &k->v[i];
        if (!listens(c, ev->stream))
            continue;
        if (c->loading)
            hold(c, ev);
        else
            observe(c, ev);
    }
}

/* The snapshot is in (or will not come): the held events, in order. */
static void loaded(corr *c)
{
    c->loading = c->reading = 0;
    for (size_t i = 0; i < c->nheld; i++) {
        const held_event *h = &c->held[i];
        sophia_event ev = {.struct_size = sizeof(ev), .stream = h->stream,
                           .id = h->id, .source = h->source,
                           .body = (const sophia_json *)h->body,
                           .received_us = h->received_us};
        observe(c, &ev);
    }
    held_clear(c);
}

/* ------------------------------------------------------------ snapshots */

static void snapshot_key(const sophia_correlate *k, const corr *c,
                         char *buf, size_t n)
{
    snprintf(buf, n, "sophia:correlator:%s:%s", k->node, c->inst->name);
}

/* What a GET of the snapshot answers; the arg names the instance, so a
 * reload meanwhile finds the one of that name (or none). */
typedef struct load_req {
    sophia_correlate *k;
    char *instance;
} load_req;

static void import_text(corr *c, const char *json, const char *why)
{
    int rc = can_import(c) ? c->ops->import_state(c->inst->state, json)
                           : SOPHIA_EINVAL;
    if (rc)
        sophia_warn("correlate", "msg=\"state refused; starting empty\" instance=%s from=%s rc=%d",
                    c->inst->name, why, rc);
    else
        sophia_info("correlate", "msg=\"state restored\" instance=%s from=%s bytes=%zu",
                    c->inst->name, why, strlen(json));
}

static void on_loaded(void *arg, redisReply *reply)
{
    load_req *q = arg;
    corr *c = q->k->closing ? NULL : corr_find(q->k, q->instance);
    free(q->instance);
    free(q);
    if (!c || !c->loading)
        return;
    c->reading = 0;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        return; /* down or refused: the tick asks again */
    if (reply->type == REDIS_REPLY_STRING)
        import_text(c, reply->str, "snapshot");
    loaded(c);
}

static void load_snapshot(sophia_correlate *k, corr *c)
{
    char key[512];
    load_req *q = calloc(1, sizeof(*q));
    snapshot_key(k, c, key, sizeof(key));
    if (!q || !(q->instance = strdup(c->inst->name))) {
        free(q);
        return;
    }
    q->k = k;
    const char *argv[] = {"GET", key};
    const size_t len[] = {3, strlen(key)};
    if (sophia_redis_command(k->redis, on_loaded, q, 2, argv, len) == 0) {
        c->reading = 1;
        return;
    }
    free(q->instance);
    free(q);
}

static void on_written(void *arg, redisReply *reply)
{
    sophia_correlate *k = arg;
    k->writes_out--;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        sophia_warn("correlate", "msg=\"snapshot not written\" error=%s",
                    reply ? reply->str : "redis unavailable");
}

static void write_snapshot(sophia_correlate *k, corr *c)
{
    if (!k->redis || !c->snapshot || c->loading || !can_export(c))
        return;
    char *json = c->ops->export_state(c->inst->state);
    if (!json)
        return;
    char key[512];
    snapshot_key(k, c, key, sizeof(key));
    const char *argv[] = {"SET", key, json};
    const size_t len[] = {3, strlen(key), strlen(json)};
    if (sophia_redis_command(k->redis, on_written, k, 3, argv, len) == 0)
        k->writes_out++;
    sophia_host_table()->free(json); /* the SDK's rule: host->free */
}

void sophia_correlate_snapshot_all(sophia_correlate *k)
{
    for (size_t i = 0; k && i < k->n; i++)
        write_snapshot(k, &k->v[i]);
}

size_t sophia_correlate_writes_pending(const sophia_correlate *k)
{
    return k ? k->writes_out : 0;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_correlate *k = arg;
    int64_t now = sophia_now_mono_us();
    for (size_t i = 0; i < k->n; i++) {
        corr *c = &k->v[i];
        if (c->loading && now - k->started_us > CORR_LOAD_WAIT_US) {
            sophia_warn("correlate", "msg=\"no snapshot read (redis down?); starting empty\" instance=%s",
                        c->inst->name);
            loaded(c);
        } else if (c->loading && !c->reading) {
            load_snapshot(k, c);
        } else if (!c->loading && c->snapshot && now >= c->next_write_us &&
                   c->observed != c->observed_at_write) {
            /* export_state runs on the loop: not for an unchanged state */
            c->next_write_us = now + (int64_t)(c->every * 1e6);
            c->observed_at_write = c->observed;
            write_snapshot(k, c);
        }
    }
}

/* -------------------------------------------------------------- build */

/* The instance `cc` names, when it is a loaded correlator (else why). */
static sophia_instance *check_one(const sophia_conf *c,
                                  const sophia_conf_correlator *cc,
                                  const sophia_plugin_set *plugins,
                                  sophia_diag *diag)
{
    sophia_instance *in = sophia_plugin_set_find(plugins, cc->instance);
    if (in && sophia_plugin_correlator(in->desc))
        return in;
    if (in)
        sophia_diag_add(diag, c->file, cc->line, cc->col,
                        "correlators.%s: instance '%s' is a %s (plugin '%s'), "
                        "not a correlator",
                        cc->instance, cc->instance,
                        sophia_plugin_kind_name(in->desc->kind), in->module);
    return NULL;
}

static int corr_init(corr *c, const sophia_conf *conf,
                     const sophia_conf_correlator *cc, sophia_instance *in)
{
    c->inst = in;
    c->ops = sophia_plugin_correlator(in->desc);
    c->snapshot = !cc->snapshot_off && conf->redis_url;
    c->every = cc->snapshot_every > 0 ? cc->snapshot_every
                                      : CORR_SNAPSHOT_EVERY;
    c->next_write_us = sophia_now_mono_us() + (int64_t)(c->every * 1e6);
    if (!(c->streams = calloc(cc->nstreams + 1, sizeof(*c->streams))))
        return -1;
    for (size_t i = 0; i < cc->nstreams; i++)
        if (!(c->streams[c->nstreams++] = strdup(cc->streams[i].name)))
            return -1;
    return 0;
}

/* The correlators of `conf` over `plugins` into k->v; -1 on a problem. */
static int build(sophia_correlate *k, const sophia_conf *conf,
                 const sophia_plugin_set *plugins, sophia_diag *diag)
{
    int bad = 0;
    k->v = calloc(conf->ncorrelators + 1, sizeof(*k->v));
    if (!k->v)
        return -1;
    for (size_t i = 0; i < conf->ncorrelators; i++) {
        const sophia_conf_correlator *cc = &conf->correlators[i];
        sophia_instance *in = check_one(conf, cc, plugins, diag);
        corr *c = &k->v[k->n];
        if (!in) {
            bad = 1;
        } else if (corr_init(c, conf, cc, in) < 0) {
            corr_clear(c);
            bad = 1;
        } else {
            k->n++;
        }
    }
    return bad ? -1 : 0;
}

static void free_corrs(corr *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        corr_clear(&v[i]);
    free(v);
}

static void node_name(sophia_correlate *k, const sophia_conf *c)
{
    if (c->cluster.node_id && *c->cluster.node_id) {
        snprintf(k->node, sizeof(k->node), "%s", c->cluster.node_id);
        return;
    }
    /* Not cluster's hostname-pid default: a restart must find it again. */
    if (gethostname(k->node, sizeof(k->node) - 1) < 0 || !*k->node)
        snprintf(k->node, sizeof(k->node), "local");
}

static int start_io(sophia_correlate *k, const sophia_conf *c)
{
    node_name(k, c);
    k->started_us = sophia_now_mono_us();
    if (c->redis_url && !(k->redis_url = strdup(c->redis_url)))
        return -1;
    k->redis = c->redis_url ? sophia_redis_new(k->base, c->redis_url) : NULL;
    for (size_t i = 0; i < k->n; i++)
        k->v[i].loading = k->v[i].snapshot && k->redis;
    struct timeval sec = {1, 0};
    k->tick = event_new(k->base, -1, EV_PERSIST, on_tick, k);
    return k->tick && event_add(k->tick, &sec) == 0 ? 0 : -1;
}

sophia_correlate *sophia_correlate_new(const sophia_conf *c,
                                       const sophia_plugin_set *plugins,
                                       struct event_base *base,
                                       sophia_diag *diag)
{
    if (!c->ncorrelators)
        return NULL;
    sophia_correlate *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    k->base = base;
    if (build(k, c, plugins, diag) < 0 || !base ||
        (start_io(k, c) < 0 &&
         (sophia_diag_add(diag, c->file, 0, 0, "correlators: out of memory"),
          1))) {
        sophia_correlate_free(k);
        return NULL;
    }
    return k;
}

void sophia_correlate_free(sophia_correlate *k)
{
    if (!k)
        return;
    k->closing = 1;
    if (k->tick)
        event_free(k->tick);
    sophia_redis_free(k->redis); /* fails what is out, with NULL */
    free(k->redis_url);
    free_corrs(k->v, k->n);
    free(k);
}

/* -------------------------------------------------------------- reload */

/* What `was` carried moves to `c`: its state when the instance was
 * replaced, its held events and unfinished start-up read either way. */
static void take_over(corr *c, corr *was)
{
    if (c->inst != was->inst && can_export(was) && !was->loading) {
        char *json = was->ops->export_state(was->inst->state);
        if (json)
            import_text(c, json, "reload");
        sophia_host_table()->free(json);
    }
    c->observed = c->observed_at_write = was->observed;
    c->failed = was->failed;
    c->missed = was->missed;
    c->loading = was->loading;
    c->reading = was->reading;
    c->next_write_us = was->next_write_us;
    c->held = was->held;
    c->nheld = was->nheld;
    c->capheld = was->capheld;
    was->held = NULL;
    was->nheld = was->capheld = 0;
}

sophia_correlate *sophia_correlate_rebind(sophia_correlate *k,
                                          const sophia_conf *c,
                                          const sophia_plugin_set *next,
                                          struct event_base *base)
{
    sophia_diag d;
    sophia_diag_init(&d);
    if (!k) {
        k = sophia_correlate_new(c, next, base, &d);
        sophia_diag_free(&d);
        return k;
    }
    sophia_correlate nk = {.base = base};
    if (!c->ncorrelators || build(&nk, c, next, &d) < 0) {
        free_corrs(nk.v, nk.n);
        sophia_diag_free(&d);
        if (c->ncorrelators) /* checked before: out of memory */
            return k;
        sophia_correlate_snapshot_all(k);
        sophia_correlate_free(k);
        return NULL;
    }
    sophia_diag_free(&d);
    for (size_t i = 0; i < nk.n; i++) {
        corr *was = corr_find(k, nk.v[i].inst->name);
        if (was)
            take_over(&nk.v[i], was);
        else
            nk.v[i].loading = 0; /* a new correlator starts empty */
    }
    free_corrs(k->v, k->n);
    k->v = nk.v;
    k->n = nk.n;
    return k;
}
