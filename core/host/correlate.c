/*
 * correlate - see correlate.h. This file: the dispatch, building and
 * reloading; their state in Redis is correlate_persist.c's.
 *
 * Correlators are few (a handful per daemon) and listen to a few streams
 * each, so the commit hook walks them all and compares stream names: no
 * table to keep in step across reloads. One 1 s tick drives the reads
 * still owed at start-up, what timers changed, writes to try again and
 * the 1.2 snapshots; a correlator's own windows are its timers
 * (host->timer_add).
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
#include "host/correlate_priv.h"
#include "host/host.h"
#include "lib/log.h"

#define CORR_SNAPSHOT_EVERY 30.0 /* seconds, correlators.<i>.snapshot_every */
#define CORR_LOAD_WAIT_US (10 * 1000000LL) /* then it starts empty */
#define CORR_BUFFER_MAX 100000 /* events held while the snapshot loads */

/* ------------------------------------------------------------ helpers */

static int corr_has_op(const corr *c, size_t off)
{
    return c->ops && c->ops->struct_size >= off + sizeof(void *);
}

int corr_can_export(const corr *c)
{
    return corr_has_op(c, offsetof(sophia_correlator_ops, export_state)) &&
           c->ops->export_state;
}

int corr_can_import(const corr *c)
{
    return corr_has_op(c, offsetof(sophia_correlator_ops, import_state)) &&
           c->ops->import_state;
}

corr *corr_find(sophia_correlate *k, const char *instance)
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
    sophia_dict_free(c->dirty, corr_change_free);
    c->dirty = NULL;
}

/* ----------------------------------------------------------- observe */

/* observe() in a context of its own, then (per key) what it changed into
 * the instance's pending writes, tagged with the event's ticket. */
static size_t observe(sophia_correlate *k, corr *c, const sophia_event *ev,
                      uint64_t ticket)
{
    sophia_ctx *ctx = sophia_ctx_new(c->inst, NULL);
    size_t changed = 0;
    if (!ctx) {
        c->st.failed++;
        return 0;
    }
    sophia_ctx_enter(ctx);
    int rc = c->ops->observe(c->inst->state, ev, ctx);
    sophia_ctx_leave(ctx);
    c->st.observed++;
    if (c->per_key)
        changed = corr_persist_changes(k, c, ticket);
    if (rc == 0) {
        c->st.alerts += sophia_ctx_count_updates(ctx, "alert");
        sophia_ctx_apply_detached(ctx); /* like a timer's */
    } else {
        c->st.failed++;
        sophia_ctx_free(ctx);
    }
    return changed;
}

static int listens(const corr *c, const char *stream)
{
    for (size_t i = 0; i < c->nstreams; i++)
        if (!strcmp(c->streams[i], stream))
            return 1;
    return 0;
}

/* 0 when the event could not be held (it is then not observed). */
static int hold(corr *c, const sophia_event *ev, uint64_t ticket)
{
    if (c->nheld == c->capheld) {
        size_t cap = c->capheld ? c->capheld * 2 : 64;
        held_event *g = cap <= CORR_BUFFER_MAX
                            ? realloc(c->held, cap * sizeof(*g)) : NULL;
        if (!g) {
            c->st.missed++;
            return 0;
        }
        c->held = g;
        c->capheld = cap;
    }
    held_event *h = &c->held[c->nheld++];
    *h = (held_event){.body = json_incref((json_t *)ev->body),
                      .stream = strdup(ev->stream),
                      .id = ev->id ? strdup(ev->id) : NULL,
                      .source = ev->source, .received_us = ev->received_us,
                      .ticket = ticket};
    return 1;
}

/* The event's ticket is handed out first, so that what it changes (or
 * its place in the start-up buffer) carries it; it is returned only if
 * something now waits on it, else the event is acked at once. */
uint64_t sophia_correlate_on_commit(void *arg, const sophia_event *ev)
{
    sophia_correlate *k = arg;
    if (!k)
        return 0;
    uint64_t ticket = ++k->seq;
    int waits = 0;
    for (size_t i = 0; i < k->n; i++) {
        corr *c = &k->v[i];
        if (!listens(c, ev->stream))
            continue;
        if (c->loading)
            waits |= hold(c, ev, c->per_key ? ticket : 0) && c->per_key;
        else
            waits |= observe(k, c, ev, ticket) > 0;
    }
    if (!waits)
        corr_notify(k); /* nothing of it pending: the watermark may pass */
    return waits ? ticket : 0;
}

void sophia_correlate_on_durable(sophia_correlate *k,
                                 sophia_correlate_durable_fn fn, void *arg)
{
    if (!k)
        return;
    k->durable_fn = fn;
    k->durable_arg = arg;
}

/* The state is in (or will not come): the held events, in order. */
void corr_loaded(sophia_correlate *k, corr *c)
{
    c->loading = c->reading = 0;
    for (size_t i = 0; i < c->nheld; i++) {
        const held_event *h = &c->held[i];
        sophia_event ev = {.struct_size = sizeof(ev), .stream = h->stream,
                           .id = h->id, .source = h->source,
                           .body = (const sophia_json *)h->body,
                           .received_us = h->received_us};
        observe(k, c, &ev, h->ticket);
    }
    held_clear(c);
    corr_notify(k);
}

void corr_import_text(corr *c, const char *json, const char *why)
{
    int rc = corr_can_import(c) ? c->ops->import_state(c->inst->state, json)
                                : SOPHIA_EINVAL;
    if (rc)
        sophia_warn("correlate", "msg=\"state refused; starting empty\" instance=%s from=%s rc=%d",
                    c->inst->name, why, rc);
    else
        sophia_info("correlate", "msg=\"state restored\" instance=%s from=%s bytes=%zu",
                    c->inst->name, why, strlen(json));
}

void sophia_correlate_snapshot_all(sophia_correlate *k)
{
    for (size_t i = 0; k && i < k->n; i++)
        if (k->v[i].per_key)
            corr_persist_changes(k, &k->v[i], 0);
        else
            corr_write_snapshot(k, &k->v[i]);
    if (k)
        corr_flush(k);
}

size_t sophia_correlate_writes_pending(const sophia_correlate *k)
{
    size_t n = k ? k->writes_out : 0;
    for (size_t i = 0; k && i < k->n; i++)
        n += k->v[i].dirty ? sophia_dict_size(k->v[i].dirty) : 0;
    return n;
}

static void tick_one(sophia_correlate *k, corr *c, int64_t now)
{
    if (c->loading && !c->reading && !strcmp(c->cursor, "0") &&
        now - c->load_since_us > CORR_LOAD_WAIT_US) {
        sophia_warn("correlate", "msg=\"no state read (redis down?); starting empty\" instance=%s",
                    c->inst->name);
        corr_loaded(k, c);
    } else if (c->loading && !c->reading) {
        corr_load(k, c);
    } else if (!c->loading && c->per_key) {
        corr_persist_changes(k, c, 0); /* what its timers changed */
        if (!c->writing && sophia_dict_size(c->dirty)) /* a failed write */
            corr_flush(k);
    } else if (!c->loading && c->snapshot && now >= c->next_write_us &&
               c->st.observed != c->observed_at_write) {
        /* export_state runs on the loop: not for an unchanged state */
        c->next_write_us = now + (int64_t)(c->every * 1e6);
        c->observed_at_write = c->st.observed;
        corr_write_snapshot(k, c);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_correlate *k = arg;
    int64_t now = sophia_now_mono_us();
    for (size_t i = 0; i < k->n; i++)
        tick_one(k, &k->v[i], now);
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
    c->per_key = c->snapshot &&
                 corr_has_op(c, offsetof(sophia_correlator_ops, import_key)) &&
                 c->ops->export_changes && c->ops->import_key;
    c->st.per_key = c->per_key;
    snprintf(c->cursor, sizeof(c->cursor), "0");
    if (c->per_key && !(c->dirty = sophia_dict_new()))
        return -1;
    c->every = cc->snapshot_every > 0 ? cc->snapshot_every
                                      : CORR_SNAPSHOT_EVERY;
    c->next_write_us = sophia_now_mono_us() + (int64_t)(c->every * 1e6);
    if (!(c->streams = calloc(cc->nstreams + 1, sizeof(*c->streams))))
        return -1;
    for (size_t i = 0; i < cc->nstreams; i++)
        if (!(c->streams[c->nstreams++] = strdup(cc->streams[i].name)))
            return -1;
    corr_persist_track(c);
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
    for (size_t i = 0; i < k->n; i++) {
        k->v[i].load_since_us = k->started_us;
        if ((k->v[i].loading = k->v[i].snapshot && k->redis))
            corr_load(k, &k->v[i]); /* at once; the tick asks again */
    }
    struct timeval sec = {1, 0};
    k->tick = event_new(k->base, -1, EV_PERSIST, on_tick, k);
    k->flush_ev = evtimer_new(k->base, corr_on_flush, k);
    return k->tick && k->flush_ev && event_add(k->tick, &sec) == 0 ? 0 : -1;
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
    if (k->flush_ev)
        event_free(k->flush_ev);
    sophia_redis_free(k->redis); /* fails what is out, with NULL */
    free(k->redis_url);
    free_corrs(k->v, k->n);
    free(k);
}

/* -------------------------------------------------------------- reload */

/* The per-key writes `was` owes move to `c` (its last changes first):
 * the batch out finds `c` by name when it answers. */
static void take_writes(sophia_correlate *k, corr *c, corr *was)
{
    if (was->per_key && !was->loading)
        corr_persist_changes(k, was, 0);
    if (!c->per_key || !was->per_key)
        return; /* a plugin without them now: nothing to write to */
    sophia_dict_free(c->dirty, corr_change_free);
    c->dirty = was->dirty;
    was->dirty = NULL;
    c->dirty_lo = was->dirty_lo;
    c->writing = was->writing;
    c->out_lo = was->out_lo;
    memcpy(c->cursor, was->cursor, sizeof(c->cursor));
}

/* What `was` carried moves to `c`: its state when the instance was
 * replaced (export_state/import_state whole, on the loop: a reload is
 * rare, and README gives its cost), its pending writes, held events and
 * unfinished start-up read either way. */
static void take_over(sophia_correlate *k, corr *c, corr *was)
{
    take_writes(k, c, was);
    int replaced = c->inst != was->inst && !was->loading;
    /* Both per key and Redis up: the new instance reads the hash (once
     * the old one's last changes are written), a page per turn, instead
     * of a whole export and import on the loop (seconds at 100k keys). */
    int reread = replaced && c->per_key && was->per_key && k->redis &&
                 sophia_redis_up(k->redis);
    if (replaced && !reread && corr_can_export(was)) {
        char *json = was->ops->export_state(was->inst->state);
        if (json)
            corr_import_text(c, json, "reload");
        sophia_host_table()->free(json);
    }
    int per_key = c->st.per_key;
    c->st = was->st;
    c->st.per_key = per_key;
    c->observed_at_write = was->st.observed;
    c->loading = was->loading || reread;
    c->reading = was->reading;
    c->load_since_us = reread ? sophia_now_mono_us() : was->load_since_us;
    if (reread) {
        snprintf(c->cursor, sizeof(c->cursor), "0");
        c->st.open_keys = 0; /* counted again by the read */
    }
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
            take_over(k, &nk.v[i], was);
        else
            nk.v[i].loading = 0; /* a new correlator starts empty */
    }
    free_corrs(k->v, k->n);
    k->v = nk.v;
    k->n = nk.n;
    return k;
}
