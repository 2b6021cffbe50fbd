/*
 * stream - see stream.h.
 *
 * Each queue slot keeps the event, its arrival time (for lag) and its
 * delivery attempts (RETRY puts it back at the tail, up to
 * STREAM_MAX_ATTEMPTS, then it counts as failed). Rates are a moving
 * average refreshed by a 1 s timer, so the hot path only increments.
 */
#include "stream.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "dict.h"
#include "host.h"
#include "log.h"
#include "loop.h"

#define STREAM_MAX_ATTEMPTS 3

typedef struct stream_item {
    json_t *body;
    int64_t received_us; /* wall clock */
    const char *source;  /* static string */
    int attempts;
} stream_item;

struct sophia_stream {
    char *name;
    sophia_instance *proc;
    stream_item *q;
    size_t head, len, cap;
    size_t batch;
    sophia_stream_stats st;
    uint64_t processed_at_tick;
    struct event *drain_ev; /* the owner's, shared by all streams */
};

struct sophia_streams {
    sophia_stream **v;
    size_t n;
    sophia_dict *by_name;
    struct event *drain_ev;
    struct event *tick_ev;
};

static void stream_free(sophia_stream *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->len; i++)
        json_decref(st->q[(st->head + i) % st->cap].body);
    free(st->q);
    free(st->name);
    free(st);
}

static sophia_stream *stream_new(const sophia_conf *c,
                                 const sophia_conf_stream *cs,
                                 const sophia_plugin_set *plugins,
                                 sophia_diag *diag)
{
    sophia_instance *inst = sophia_plugin_set_find(plugins, cs->processor);
    if (!inst || inst->desc->kind != SOPHIA_KIND_PROCESSOR) {
        sophia_diag_add(diag, c->file, cs->line, cs->col,
                        "stream '%s': '%s' is not a loaded processor instance",
                        cs->name, cs->processor);
        return NULL;
    }
    sophia_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->name = strdup(cs->name);
    st->proc = inst;
    st->cap = cs->queue_size ? cs->queue_size : 10000;
    st->batch = cs->batch_size ? cs->batch_size : 256;
    st->q = calloc(st->cap, sizeof(*st->q));
    st->st.capacity = st->cap;
    if (!st->name || !st->q) {
        stream_free(st);
        return NULL;
    }
    return st;
}

static void process_one(sophia_stream *st, stream_item *it)
{
    sophia_event ev = {
        .struct_size = sizeof(ev),
        .stream = st->name,
        .id = NULL,
        .source = it->source,
        .body = (const sophia_json *)it->body,
        .received_us = it->received_us,
    };
    sophia_ctx *ctx = sophia_ctx_new(st->proc, st->name);
    sophia_verdict v = ctx ? st->proc->desc->processor->process(st->proc->state,
                                                                &ev, ctx)
                           : SOPHIA_PROCESS_RETRY;
    switch (v) {
    case SOPHIA_PROCESS_OK:
        sophia_ctx_apply(ctx);
        st->st.processed++;
        break;
    case SOPHIA_PROCESS_DROP:
        st->st.dropped++;
        break;
    case SOPHIA_PROCESS_RETRY:
        if (++it->attempts < STREAM_MAX_ATTEMPTS && st->len < st->cap) {
            st->st.retried++;
            st->q[(st->head + st->len++) % st->cap] = *it;
            it->body = NULL; /* ownership moved back into the queue */
            break;
        }
        st->st.failed++; /* out of attempts */
        break;
    default:
        st->st.failed++;
        break;
    }
    sophia_ctx_free(ctx);
    json_decref(it->body);
}

/* Processes up to `max` events; returns how many remain. */
static size_t stream_drain(sophia_stream *st, size_t max)
{
    for (size_t n = 0; n < max && st->len; n++) {
        stream_item it = st->q[st->head];
        st->head = (st->head + 1) % st->cap;
        st->len--;
        process_one(st, &it);
    }
    return st->len;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_streams *s = arg;
    size_t left = 0;
    for (size_t i = 0; i < s->n; i++)
        left += stream_drain(s->v[i], s->v[i]->batch);
    if (left) /* let other events run before the next batch */
        event_active(s->drain_ev, EV_TIMEOUT, 0);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_streams *s = arg;
    for (size_t i = 0; i < s->n; i++) {
        sophia_stream *st = s->v[i];
        double now = (double)(st->st.processed - st->processed_at_tick);
        st->st.rate = st->st.rate * 0.9 + now * 0.1;
        st->processed_at_tick = st->st.processed;
    }
}

sophia_streams *sophia_streams_new(const sophia_conf *c,
                                   const sophia_plugin_set *plugins,
                                   struct event_base *base, sophia_diag *diag)
{
    sophia_streams *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->by_name = sophia_dict_new();
    s->v = calloc(c->nstreams ? c->nstreams : 1, sizeof(*s->v));
    s->drain_ev = event_new(base, -1, 0, on_drain, s);
    s->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, s);
    if (!s->by_name || !s->v || !s->drain_ev || !s->tick_ev) {
        sophia_streams_free(s);
        return NULL;
    }
    for (size_t i = 0; i < c->nstreams; i++) {
        sophia_stream *st = stream_new(c, &c->streams[i], plugins, diag);
        if (!st)
            continue;
        st->drain_ev = s->drain_ev;
        s->v[s->n++] = st;
        sophia_dict_set(s->by_name, st->name, st);
    }
    struct timeval sec = {1, 0};
    event_add(s->tick_ev, &sec);
    return s;
}

void sophia_streams_free(sophia_streams *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        stream_free(s->v[i]);
    if (s->drain_ev)
        event_free(s->drain_ev);
    if (s->tick_ev)
        event_free(s->tick_ev);
    sophia_dict_free(s->by_name, NULL);
    free(s->v);
    free(s);
}

sophia_stream *sophia_streams_find(const sophia_streams *s, const char *name)
{
    return sophia_dict_get(s->by_name, name);
}

size_t sophia_streams_count(const sophia_streams *s)
{
    return s->n;
}

sophia_stream *sophia_streams_at(const sophia_streams *s, size_t i)
{
    return i < s->n ? s->v[i] : NULL;
}

size_t sophia_streams_pending(const sophia_streams *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->v[i]->len;
    return n;
}

void sophia_streams_drain(sophia_streams *s)
{
    for (size_t i = 0; i < s->n; i++)
        stream_drain(s->v[i], SIZE_MAX);
}

const char *sophia_stream_name(const sophia_stream *st)
{
    return st->name;
}

int sophia_stream_accept(sophia_stream *st, json_t *const *events, size_t n,
                         const char *source)
{
    if (st->cap - st->len < n) {
        st->st.rejected += n;
        return SOPHIA_EBUSY;
    }
    int64_t now = sophia_now_wall_us();
    for (size_t i = 0; i < n; i++) {
        stream_item *it = &st->q[(st->head + st->len++) % st->cap];
        it->body = json_incref(events[i]);
        it->received_us = now;
        it->source = source;
        it->attempts = 0;
    }
    st->st.received += n;
    event_active(st->drain_ev, EV_TIMEOUT, 0);
    return 0;
}

void sophia_stream_get_stats(const sophia_stream *st, sophia_stream_stats *out)
{
    *out = st->st;
    out->queued = st->len;
    out->lag_ms = st->len ? (double)(sophia_now_wall_us() -
                                     st->q[st->head].received_us) / 1000.0
                          : 0.0;
}
