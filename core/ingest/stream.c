/*
 * stream - see stream.h.
 *
 * Each queue slot keeps the event, its arrival time (for lag), its
 * source id and ack callback, and its delivery attempts. An OK event
 * leaves the queue for the list of events in flight (stream_flight) until
 * its apply reports, and flights commit (publish, ack) in the order they
 * started, so subscribers hear a stream's updates in order even when a
 * younger event's effects are durable first (write-back journal vs an L3
 * commit); a failed delivery goes back to the head of the queue
 * and the stream waits out a back-off (lib/backoff.h, full jitter) on one
 * timer, so the retried event is delivered again before the events that
 * followed it. Queue slots are shared by queued and in-flight events
 * (stream_used), so putting an event back always finds room. Rates are a
 * moving average refreshed by a 1 s timer, so the hot path only
 * increments. Dedup memory is dedup.c's.
 */
#include "ingest/stream.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/backoff.h"
#include "lib/dict.h"
#include "lib/jsonpath.h"
#include "ingest/chain.h"
#include "ingest/durable.h"
#include "ingest/filter.h"
#include "host/host.h"
#include "host/output.h"
#include "lib/log.h"
#include "event/clock.h"
#include "event/loop.h"
#include "ingest/source_redis.h"
#include "ingest/statsd.h"
#include "ingest/stream_prefetch.h"

#define STREAM_DEAD_RING 64     /* dead letters kept without a source */
#define STREAM_MAX_INFLIGHT 256 /* events whose effects are in flight */
#define STREAM_DEDUP_MAX 1000000
#define STREAM_QUEUE_DEFAULT 10000

typedef struct stream_item {
    json_t *body;
    int64_t received_us; /* wall clock */
    const char *source;  /* static string */
    char *id;            /* source id or NULL */
    sophia_stream_ack_fn ack;
    void *ack_arg;
    int attempts;        /* deliveries that did not commit */
} stream_item;

/* An OK event whose actions are being applied (host.h): the contexts of
 * every chain link that said OK (chain.h), applied and committed as one. */
typedef struct stream_flight {
    struct sophia_stream *st;
    stream_item it;
    sophia_chain_run run;
    size_t left; /* its contexts' applies not reported yet */
    char *did;  /* dedup id, added on commit */
    int staged; /* a context holds staged plugin state */
    int done;   /* every apply reported; rc the first failure */
    int rc;
    struct stream_flight *next; /* the next younger */
} stream_flight;

/* A committed event whose ack waits for the correlators' state change
 * it made to be durable (host/correlate.h): until the ticket the commit
 * hook gave is reported by sophia_streams_durable. Oldest first. */
typedef struct stream_wait {
    stream_item it;
    uint64_t ticket;
    struct stream_wait *next;
} stream_wait;

/* A dead letter kept in memory (streams without a source that has one). */
typedef struct stream_dead {
    json_t *body;
    char *id, *why;
    int attempts;
    int64_t at_us;
} stream_dead;

struct sophia_stream {
    char *name;
    const struct sophia_streams *owner; /* its commit hook */
    sophia_chain *chain; /* its processors (chain.h) */
    /* streams.<name>.outputs: their instances and, on the daemon's loop,
     * their runners (host/output.h), which each OK event's context
     * delivers to before it commits. */
    sophia_instance **out_inst;
    sophia_output **outs;
    size_t nouts;
    stream_item *q;
    size_t head, len, cap;
    size_t batch;
    sophia_stream_stats st;
    uint64_t processed_at_tick;
    struct event *drain_ev; /* the owner's, shared by all streams */
    sophia_filter *filter;
    char *dedup_key;
    sophia_dedup *dedup;
    sophia_source_redis *redis;
    struct sophia_loop *live_loop; /* its owner's, once its sources run */
    sophia_clock clock;            /* arrival and dedup times, once a turn */
    sophia_statsd *statsd;
    int want_redis, want_statsd; /* configured (and started) sources */
    int want_durable;            /* ingest appends to Redis first */
    int closing;                 /* the shutdown drain began */
    stream_flight *flights, *flights_tail; /* in flight, oldest first */
    size_t nflight, staged_inflight, max_inflight;
    int failing;  /* a flight failed: the rest report, then all go back */
    int wait_did; /* the head's dedup id is in flight: wait for a commit */
    size_t max_attempts;
    double retry_base, retry_cap;
    struct event *retry_ev;      /* pending while waiting out a back-off */
    int64_t paused_until_us;     /* monotonic end of that wait */
    unsigned long long rng;      /* jitter draws */
    stream_dead dead[STREAM_DEAD_RING];
    size_t dead_head, dead_n;
    sophia_stream_prefetch *pf; /* the head's reads before process() */
    stream_wait *waits, *waits_tail; /* acks held for the correlators */
    size_t nwait; /* counted with the flights against max_inflight */
};

struct sophia_streams {
    sophia_stream **v;
    size_t n;
    sophia_dict *by_name;
    struct event *drain_ev;
    struct event *tick_ev;
    struct sophia_loop *live_loop; /* the daemon's, else NULL (a probe) */
    sophia_stream_commit_fn on_commit; /* NULL: no correlator listens */
    void *commit_arg;
};

/* ----------------------------------------------------------- streams */

static void item_clear(stream_item *it)
{
    json_decref(it->body);
    free(it->id);
    it->body = NULL;
    it->id = NULL;
}

/* Freeing a source may run the loop a little (source_redis flushes its
 * last XACKs): nothing may start this stream's processing then, so the
 * kick and the back-off go first and the flights are cancelled before. */
static void stream_free(sophia_stream *st)
{
    if (!st)
        return;
    st->drain_ev = NULL; /* stream_kick: no-op from now on */
    if (st->retry_ev)
        event_del(st->retry_ev);
    while (st->waits) { /* committed, not acked: delivered again */
        stream_wait *w = st->waits;
        st->waits = w->next;
        item_clear(&w->it);
        free(w);
    }
    while (st->flights) { /* their reports are cancelled; no ack */
        stream_flight *f = st->flights;
        st->flights = f->next;
        sophia_chain_run_free(&f->run);
        item_clear(&f->it);
        free(f->did);
        free(f);
    }
    for (size_t i = 0; i < st->dead_n; i++) {
        stream_dead *d = &st->dead[(st->dead_head + i) % STREAM_DEAD_RING];
        json_decref(d->body);
        free(d->id);
        free(d->why);
    }
    if (st->retry_ev)
        event_free(st->retry_ev);
    sophia_source_redis_free(st->redis);
    sophia_statsd_free(st->statsd);
    for (size_t i = 0; i < st->len; i++)
        item_clear(&st->q[(st->head + i) % st->cap]);
    sophia_filter_free(st->filter);
    sophia_chain_free(st->chain);
    sophia_stream_prefetch_free(st->pf);
    sophia_dedup_free(st->dedup);
    free(st->dedup_key);
    free(st->out_inst);
    free(st->outs);
    free(st->q);
    free(st->name);
    free(st);
}

static void on_retry_due(evutil_socket_t fd, short what, void *arg);

static void stream_set_retry(sophia_stream *st, const sophia_conf_stream *cs)
{
    st->max_attempts = cs->max_attempts ? cs->max_attempts : 3;
    st->retry_base = cs->retry_base > 0 ? cs->retry_base : 0.1;
    st->retry_cap = cs->retry_cap > 0 ? cs->retry_cap : 10;
}

/* Resolves cs->outputs in `plugins`: each must name an output instance.
 * On the daemon's loop (`live`) their runners are made too. 0, or -1 with
 * each bad name in diag (NULL: quiet) and the stream unchanged. */
static int stream_set_outputs(sophia_stream *st, const sophia_conf *c,
                              const sophia_conf_stream *cs,
                              const sophia_plugin_set *plugins, int live,
                              sophia_diag *diag)
{
    size_t n = cs->noutputs;
    sophia_instance **in = calloc(n ? n : 1, sizeof(*in));
    sophia_output **outs = calloc(n ? n : 1, sizeof(*outs));
    int bad = !in || !outs;
    for (size_t i = 0; in && outs && i < n; i++) { /* every bad name said */
        in[i] = sophia_plugin_set_find(plugins, cs->outputs[i]);
        if (!in[i] || in[i]->desc->kind != SOPHIA_KIND_OUTPUT) {
            if (diag)
                sophia_diag_add(diag, c->file, cs->outputs_pos[2 * i],
                                cs->outputs_pos[2 * i + 1],
                                "stream '%s': output '%s' is not a loaded "
                                "output instance%s%s%s", cs->name,
                                cs->outputs[i], in[i] ? " (it is a " : "",
                                in[i] ? sophia_plugin_kind_name(in[i]->desc->kind)
                                      : "",
                                in[i] ? ")" : "");
            bad = 1;
        } else if (live && !(outs[i] = sophia_host_output(in[i]))) {
            bad = 1;
        }
    }
    if (bad) {
        free(in);
        free(outs);
        return -1;
    }
    free(st->out_inst);
    free(st->outs);
    st->out_inst = in;
    st->outs = outs;
    st->nouts = live ? n : 0;
    /* Room for every output's batches out at once: a window smaller than
     * batch x max_inflight would leave slots idle while events wait. */
    st->max_inflight = STREAM_MAX_INFLIGHT;
    for (size_t i = 0; i < st->nouts; i++) {
        size_t w = sophia_output_window(outs[i]);
        if (w > st->max_inflight)
            st->max_inflight = w;
    }
    return 0;
}

static sophia_stream *stream_new(const sophia_conf *c,
                                 const sophia_conf_stream *cs,
                                 const sophia_plugin_set *plugins, int live,
                                 struct event_base *base, sophia_diag *diag)
{
    char why[300];
    sophia_chain *chain = sophia_chain_new(cs, plugins, why, sizeof(why));
    if (!chain) {
        sophia_diag_add(diag, c->file, cs->line, cs->col, "stream '%s': %s",
                        cs->name, why);
        return NULL;
    }
    sophia_stream *st = calloc(1, sizeof(*st));
    if (!st) {
        sophia_chain_free(chain);
        return NULL;
    }
    st->name = strdup(cs->name);
    st->chain = chain;
    sophia_clock_init(&st->clock, base);
    st->cap = cs->queue_size ? cs->queue_size : STREAM_QUEUE_DEFAULT;
    st->batch = cs->batch_size ? cs->batch_size : 256;
    st->q = calloc(st->cap, sizeof(*st->q));
    st->st.capacity = st->cap;
    st->max_inflight = STREAM_MAX_INFLIGHT;
    stream_set_retry(st, cs);
    st->rng = (unsigned long long)sophia_now_wall_us() ^ (uintptr_t)st;
    st->retry_ev = evtimer_new(base, on_retry_due, st);
    const char *err = NULL;
    st->filter = sophia_filter_new(cs->filter, cs->nfilter, &err);
    if (err)
        sophia_diag_add(diag, c->file, cs->line, cs->col,
                        "stream '%s': filter: %s", cs->name, err);
    if (cs->dedup_key) {
        st->dedup_key = strdup(cs->dedup_key);
        st->dedup = sophia_dedup_new(cs->dedup_window, STREAM_DEDUP_MAX);
    }
    int outs_bad = stream_set_outputs(st, c, cs, plugins, live, diag) < 0;
    if (!st->name || !st->q || err || !st->retry_ev || outs_bad ||
        (cs->dedup_key && (!st->dedup_key || !st->dedup))) {
        stream_free(st);
        return NULL;
    }
    return st;
}

/* The event's dedup id as text, or NULL when it has none. */
static const char *dedup_id(const sophia_stream *st, const stream_item *it,
                            char *buf, size_t len)
{
    if (!st->dedup)
        return NULL;
    const json_t *v = sophia_json_path(it->body, st->dedup_key);
    if (!v || json_is_null(v) || sophia_json_scalar_text(v, buf, len))
        return NULL;
    return buf;
}

/* ------------------------------------------------ the commit pipeline */

static void stream_kick(sophia_stream *st)
{
    /* A zero timer, not event_active: see on_drain. Already pending
     * (each event that settles inside a drain kicks): nothing to move,
     * and event_add would redo the timer heap for every event. */
    struct timeval now = {0, 0};
    if (st->drain_ev && !evtimer_pending(st->drain_ev, NULL))
        event_add(st->drain_ev, &now);
}

/* The source's ack: done (why NULL) or dead (why says so). */
static void item_ack(stream_item *it, const char *why)
{
    if (it->ack)
        it->ack(it->ack_arg, it->id, it->body, why);
}

static void dead_ring_put(sophia_stream *st, stream_item *it, const char *why)
{
    stream_dead *d = &st->dead[(st->dead_head + st->dead_n) % STREAM_DEAD_RING];
    if (st->dead_n == STREAM_DEAD_RING) { /* full: the oldest goes */
        d = &st->dead[st->dead_head];
        st->dead_head = (st->dead_head + 1) % STREAM_DEAD_RING;
        st->dead_n--;
        json_decref(d->body);
        free(d->id);
        free(d->why);
    }
    d->body = json_incref(it->body);
    d->id = it->id ? strdup(it->id) : NULL;
    d->why = strdup(why);
    d->attempts = it->attempts;
    d->at_us = sophia_now_wall_us();
    st->dead_n++;
}

/* Out of attempts, or a processor ERROR: the event leaves the stream for
 * its dead letter - the source's (a Redis stream) when it has one, else
 * the ring - and counts as failed. The item is the caller's to clear. */
static void dead_letter(sophia_stream *st, stream_item *it, const char *why,
                        uint64_t *reason_count)
{
    st->st.failed++;
    st->st.dead++;
    (*reason_count)++;
    sophia_warn("stream", "msg=\"event dead-lettered\" stream=%s id=%s "
                "attempts=%d reason=\"%s\"", st->name, it->id ? it->id : "-",
                it->attempts, why);
    if (it->ack)
        item_ack(it, why);
    else
        dead_ring_put(st, it, why);
}

/* The stream starts nothing for a back-off after `failures` failed
 * deliveries of its head event. One wait per burst: a pass in which many
 * events fail together (a full write-back set refuses them all) waits
 * once, drawn for the first failure, not the longest of many draws. */
static void stream_pause(sophia_stream *st, unsigned failures)
{
    if (evtimer_pending(st->retry_ev, NULL))
        return;
    double wait = sophia_backoff_full(st->retry_base, st->retry_cap, failures,
                                      sophia_backoff_rand(&st->rng));
    st->paused_until_us = sophia_now_mono_us() + (int64_t)(wait * 1e6);
    struct timeval tv = sophia_timeval(wait);
    evtimer_add(st->retry_ev, &tv);
}

/* Puts an event back at the head of the queue: flights count as queued
 * (stream_used), so there is always room. */
static void requeue(sophia_stream *st, stream_item *it)
{
    st->head = (st->head + st->cap - 1) % st->cap;
    st->q[st->head] = *it;
    st->len++;
}

/* A delivery that did not commit: again after a back-off, at the head of
 * the queue (the stream waits for it, so later events do not overtake it
 * for good), or to the dead letter once max_attempts deliveries failed.
 * Returns 1 when the item went back into the queue (ownership moved). */
static int retry_or_dead(sophia_stream *st, stream_item *it, const char *why,
                         uint64_t *reason_count)
{
    if (++it->attempts >= (int)st->max_attempts) {
        char msg[300];
        snprintf(msg, sizeof(msg), "%s (%d attempts)", why, it->attempts);
        dead_letter(st, it, msg, reason_count);
        return 0;
    }
    st->st.retried++;
    requeue(st, it);
    stream_pause(st, (unsigned)it->attempts);
    return 1;
}

static sophia_ctx *flight_ctx(const stream_flight *f, size_t i)
{
    return sophia_chain_run_ctx(&f->run, i);
}

static void flight_free(stream_flight *f)
{
    sophia_chain_run_free(&f->run); /* discards what was not committed */
    free(f->did);
    free(f);
}

/* Unlinks the oldest flight. */
static stream_flight *flight_pop(sophia_stream *st)
{
    stream_flight *f = st->flights;
    st->flights = f->next;
    if (!st->flights)
        st->flights_tail = NULL;
    st->nflight--;
    if (f->staged)
        st->staged_inflight--;
    return f;
}

/* Holds `it` (moved) until `ticket` is durable; 0 when out of memory
 * (then it is acked at once, as before correlators were an effect). */
static int wait_push(sophia_stream *st, stream_item *it, uint64_t ticket)
{
    stream_wait *w = malloc(sizeof(*w));
    if (!w)
        return 0;
    *w = (stream_wait){.it = *it, .ticket = ticket};
    if (st->waits_tail)
        st->waits_tail->next = w;
    else
        st->waits = w;
    st->waits_tail = w;
    st->nwait++;
    return 1;
}

/* Acks the held events whose ticket is at most `upto`; 1 if any. */
static int wait_release(sophia_stream *st, uint64_t upto)
{
    int any = 0;
    while (st->waits && st->waits->ticket <= upto) {
        stream_wait *w = st->waits;
        if (!(st->waits = w->next))
            st->waits_tail = NULL;
        st->nwait--;
        item_ack(&w->it, NULL);
        item_clear(&w->it);
        free(w);
        any = 1;
    }
    return any;
}

/* The oldest flight's effects are durable: publishes, staged state,
 * dedup id; then its ack, or, when a correlator's state change for it
 * is still being written, its place among the acks that wait. */
static void flight_commit(sophia_stream *st)
{
    stream_flight *f = flight_pop(st);
    for (size_t i = 0; i < f->run.n; i++) /* in link order */
        sophia_ctx_commit(flight_ctx(f, i));
    if (f->did)
        sophia_dedup_add(st->dedup, f->did, sophia_now_wall_us());
    st->st.processed++;
    uint64_t ticket = 0;
    if (st->owner && st->owner->on_commit) {
        sophia_event ev = {.struct_size = sizeof(ev), .stream = st->name,
                           .id = f->it.id, .source = f->it.source,
                           .body = (const sophia_json *)f->it.body,
                           .received_us = f->it.received_us};
        ticket = st->owner->on_commit(st->owner->commit_arg, &ev);
    }
    if (!ticket || !f->it.ack || !wait_push(st, &f->it, ticket)) {
        item_ack(&f->it, NULL);
        item_clear(&f->it);
    }
    flight_free(f);
}

/* The oldest flight failed and every flight has reported: it and all
 * younger ones go back to the head of the queue in their order, so none
 * commits (publishes) ahead of it. The younger ones' effects are applied
 * again on their next delivery; only the failed ones count an attempt. */
static void flights_requeue(sophia_stream *st)
{
    stream_flight *rev = NULL; /* youngest first: the oldest ends at the head */
    st->failing = st->wait_did = 0;
    while (st->flights) {
        stream_flight *f = flight_pop(st);
        f->next = rev;
        rev = f;
    }
    while (rev) {
        stream_flight *f = rev;
        rev = f->next;
        if (f->rc == 0) {
            requeue(st, &f->it);
        } else {
            char why[128];
            st->st.effect_failures++;
            snprintf(why, sizeof(why), "effect not durable: %s",
                     sophia_host_table()->strerror(f->rc));
            if (!retry_or_dead(st, &f->it, why, &st->st.dead_effect))
                item_clear(&f->it);
        }
        flight_free(f);
    }
}

static int flights_all_done(const sophia_stream *st)
{
    for (const stream_flight *f = st->flights; f; f = f->next)
        if (!f->done)
            return 0;
    return 1;
}

/* Every apply of a flight reported. Events commit in the order they
 * started, so subscribers hear a stream's updates in order: a younger
 * event that is durable first waits for the older ones, and when the
 * oldest failed, the stream waits for every flight to report and puts
 * them all back. */
static void on_applied(void *arg, int rc)
{
    stream_flight *f = arg;
    sophia_stream *st = f->st;
    if (rc && !f->rc)
        f->rc = rc;
    if (--f->left)
        return; /* another link's effects are still out */
    f->done = 1;
    rc = f->rc;
    if (rc) { /* refused or failed: start nothing more until the back-off */
        st->failing = 1;
        stream_pause(st, (unsigned)f->it.attempts + 1);
    }
    st->wait_did = 0; /* a flight settles, or all go back */
    while (st->flights && st->flights->done && st->flights->rc == 0)
        flight_commit(st);
    if (st->flights && st->flights->done && flights_all_done(st))
        flights_requeue(st);
    /* Only with events waiting: stream_drain starts none from an empty
     * queue, and a zero timer costs the loop an epoll_wait (one a POST). */
    if (st->len)
        stream_kick(st);
}

/* Applies an OK event's actions; it stays in flight until they report.
 * On failure to even start, the event is retried. */
static void start_apply(sophia_stream *st, stream_item *it,
                        sophia_chain_run *run, const char *did)
{
    stream_flight *f = calloc(1, sizeof(*f));
    if (!f || (did && !(f->did = strdup(did)))) {
        free(f);
        sophia_chain_run_free(run);
        if (!retry_or_dead(st, it, "out of memory", &st->st.dead_effect))
            item_clear(it);
        return;
    }
    f->st = st;
    f->it = *it;
    f->run = *run;
    f->left = run->n + 1; /* + a hold until every apply started */
    for (size_t i = 0; i < run->n; i++)
        f->staged |= sophia_ctx_has_staged(flight_ctx(f, i));
    if (st->flights_tail)
        st->flights_tail->next = f;
    else
        st->flights = f;
    st->flights_tail = f;
    st->nflight++;
    if (f->staged)
        st->staged_inflight++;
    for (size_t i = 0; i < f->run.n; i++)
        sophia_ctx_apply(flight_ctx(f, i), on_applied, f); /* may report */
    on_applied(f, 0); /* the hold: the flight may settle now */
}

static void on_prefetched(void *arg)
{
    stream_kick(arg);
}

/* Hands an OK run's contexts the stream's outputs (host/output.h): the
 * last link's the events that left the chain, each its own alerts. 0, or
 * -1 when out of memory. */
static int run_set_outputs(const sophia_stream *st,
                           const sophia_chain_run *run, const sophia_event *ev)
{
    for (size_t i = 0; st->nouts && i < run->n; i++) {
        int last = i + 1 == run->n;
        if (sophia_ctx_set_outputs(sophia_chain_run_ctx(run, i), st->outs,
                                   st->nouts, ev,
                                   last ? sophia_chain_run_left(run) : NULL,
                                   last ? run->nleft : 0) < 0)
            return -1;
    }
    return 0;
}

/* Whether an event with dedup id `did` is in flight: a second copy then
 * waits for it to settle, and is a duplicate if it committed. */
static int did_in_flight(const sophia_stream *st, const char *did)
{
    for (const stream_flight *f = st->flights; f; f = f->next)
        if (f->did && !strcmp(f->did, did))
            return 1;
    return 0;
}

/* Runs the processor on one event, which the stream no longer holds in
 * its queue: acked at once when skipped or dropped, in flight when OK,
 * back in the queue or dead otherwise. */
static void process_one(sophia_stream *st, stream_item *it)
{
    char idbuf[512];
    int64_t now = sophia_clock_wall_us(&st->clock);
    const char *did = dedup_id(st, it, idbuf, sizeof(idbuf));
    if (did && did_in_flight(st, did)) {
        requeue(st, it);
        st->wait_did = 1;
        return;
    }
    if (did && sophia_dedup_seen(st->dedup, did, now)) {
        st->st.duplicates++;
    } else if (!sophia_filter_match(st->filter, it->body)) {
        st->st.filtered++;
    } else {
        sophia_event ev = {
            .struct_size = sizeof(ev),
            .stream = st->name,
            .id = it->id,
            .source = it->source,
            .body = (const sophia_json *)it->body,
            .received_us = it->received_us,
        };
        sophia_ctx *ctx;
        if (sophia_stream_prefetch_ctx(&st->pf, sophia_chain_first(st->chain),
                                       st->name, &ev, on_prefetched, st,
                                       &ctx) == 1) {
            requeue(st, it); /* it waits for its reads, at the head */
            return;
        }
        sophia_chain_run run = {0}; /* staged state discarded unless OK */
        sophia_verdict v = ctx ? sophia_chain_process(st->chain, st->name, &ev,
                                                      ctx, &run)
                               : SOPHIA_PROCESS_RETRY;
        if (v == SOPHIA_PROCESS_OK && run_set_outputs(st, &run, &ev) < 0) {
            sophia_chain_run_free(&run);
            v = SOPHIA_PROCESS_RETRY; /* out of memory: again later */
        }
        if (v == SOPHIA_PROCESS_OK) {
            start_apply(st, it, &run, did);
            return;
        }
        if (v == SOPHIA_PROCESS_RETRY) {
            if (!retry_or_dead(st, it, "processor retry", &st->st.dead_retry))
                item_clear(it);
            return;
        }
        if (v != SOPHIA_PROCESS_DROP) {
            dead_letter(st, it, "processor error", &st->st.dead_error);
            item_clear(it);
            return;
        }
        if (run.filtered) /* by a filter link of the chain */
            st->st.filtered++;
        else
            st->st.dropped++;
        if (did)
            sophia_dedup_add(st->dedup, did, now);
    }
    item_ack(it, NULL);
    item_clear(it);
}

/* Whether the stream may hand its next event to the processor now: not
 * while waiting out a back-off or for a failed flight's younger ones to
 * report, not while an event with staged state has effects in flight (so
 * process() always sees every earlier change applied), not while the
 * head's twin is in flight, not while the head's prefetch reads are out
 * (stream_prefetch.h), and not beyond max_inflight events in flight. */
static int stream_can_start(const sophia_stream *st)
{
    return st->len && !st->staged_inflight && !st->failing && !st->wait_did &&
           st->nflight + st->nwait < st->max_inflight &&
           !evtimer_pending(st->retry_ev, NULL) &&
           !sophia_stream_prefetch_waiting(st->pf);
}

/* Processes up to `max` events. */
static void stream_drain(sophia_stream *st, size_t max)
{
    for (size_t n = 0; n < max && stream_can_start(st); n++) {
        stream_item it = st->q[st->head];
        st->head = (st->head + 1) % st->cap;
        st->len--;
        process_one(st, &it);
    }
}

static void on_retry_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_kick(arg);
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_streams *s = arg;
    size_t left = 0;
    for (size_t i = 0; i < s->n; i++)
        stream_drain(s->v[i], s->v[i]->batch);
    for (size_t i = 0; i < s->n; i++) /* after all: one may unblock another */
        left += stream_can_start(s->v[i]) ? s->v[i]->len : 0;
    if (left) { /* let other events run before the next batch */
        /* Not event_active: libevent runs events activated during its
         * active pass in that same pass, so a busy stream would starve
         * sockets and signals. A zero timer waits for the next poll. */
        struct timeval now = {0, 0};
        event_add(s->drain_ev, &now);
    } else {
        /* The batch's flights kicked it as each settled; none can start
         * now, and whatever lets one start kicks again (a flight that
         * settles, the retry timer, a prefetch), so the zero timer would
         * only cost an epoll_wait (one a POST). */
        event_del(s->drain_ev);
    }
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

sophia_loop *sophia_stream_live_loop(const sophia_stream *st)
{
    return st->live_loop;
}

/* Whether streams built on `base` are the daemon's own (not a
 * validation pass's). */
static int stream_live(const sophia_streams *s, struct event_base *base)
{
    return s->live_loop && base == sophia_loop_base(s->live_loop);
}

/* Sources listen and connect, so they start only on the server's own
 * loop: the validation pass (`--check`, and prepare() before start)
 * builds streams on a probe base and must not bind or connect. */
static void start_sources(const sophia_streams *s, sophia_stream *st,
                          const sophia_conf *c, const sophia_conf_stream *cs,
                          struct event_base *base)
{
    if (!stream_live(s, base))
        return;
    st->live_loop = s->live_loop;
    /* A durable stream (durable.h) reads back what ingest appended
     * through a Redis source on its key, configured or default. */
    st->want_durable = sophia_durable_enabled(c, cs);
    st->want_redis = cs->redis.key != NULL || st->want_durable;
    st->want_statsd = cs->statsd_listen != NULL;
    if (st->want_redis)
        st->redis = sophia_source_redis_new(st, c, cs, base);
    if (cs->statsd_listen)
        st->statsd = sophia_statsd_new(st, cs->statsd_listen, cs->statsd_allow,
                                       cs->nstatsd_allow, base);
}

sophia_streams *sophia_streams_new(const sophia_conf *c,
                                   const sophia_plugin_set *plugins,
                                   struct sophia_loop *live,
                                   struct event_base *base, sophia_diag *diag)
{
    sophia_streams *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->live_loop = live;
    s->by_name = sophia_dict_new();
    s->v = calloc(c->nstreams ? c->nstreams : 1, sizeof(*s->v));
    s->drain_ev = event_new(base, -1, 0, on_drain, s);
    s->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, s);
    if (!s->by_name || !s->v || !s->drain_ev || !s->tick_ev) {
        sophia_streams_free(s);
        return NULL;
    }
    for (size_t i = 0; i < c->nstreams; i++) {
        sophia_stream *st = stream_new(c, &c->streams[i], plugins,
                                       stream_live(s, base), base, diag);
        if (!st)
            continue;
        st->drain_ev = s->drain_ev;
        st->owner = s;
        s->v[s->n++] = st;
        sophia_dict_set(s->by_name, st->name, st);
        start_sources(s, st, c, &c->streams[i], base);
    }
    struct timeval sec = {1, 0};
    event_add(s->tick_ev, &sec);
    return s;
}

/* A stream removed by a reload: every queued event goes to the processor
 * now, back-off and ordering aside (its in-flight applies are cancelled
 * when it is freed: their Redis entries stay pending, redelivered). */
static void stream_drain_all(sophia_stream *st)
{
    event_del(st->retry_ev);
    for (size_t n = st->len; n-- && st->len;) { /* once each: a retry */
        stream_item it = st->q[st->head];      /* comes back to the head */
        st->head = (st->head + 1) % st->cap;
        st->len--;
        process_one(st, &it);
        if (st->len && st->q[st->head].body == it.body)
            break; /* it came back: the rest stays queued, freed with it */
    }
}

/* Whether `next` replaces one of the stream's outputs: the old runner
 * ends what it holds when its instance retires, so the events waiting on
 * it go back and reach the new one. */
static int outputs_replaced(const sophia_stream *st,
                            const sophia_plugin_set *next)
{
    for (size_t i = 0; i < st->nouts; i++)
        if (sophia_plugin_set_find(next, st->out_inst[i]->name) !=
            st->out_inst[i])
            return 1;
    return 0;
}

void sophia_streams_recall(sophia_streams *s, const sophia_plugin_set *next)
{
    for (size_t i = 0; i < s->n; i++) {
        sophia_stream *st = s->v[i];
        if (st->flights && (sophia_chain_replaced(st->chain, next) ||
                            outputs_replaced(st, next))) {
            flights_requeue(st);
            stream_kick(st);
        }
    }
}

/* A stream that stays: new processors, outputs, filter and batch size. */
static int stream_update(sophia_stream *st, const sophia_conf *c,
                         const sophia_conf_stream *cs,
                         const sophia_plugin_set *plugins, int live)
{
    char why[300];
    sophia_chain *chain = sophia_chain_new(cs, plugins, why, sizeof(why));
    const char *err = NULL;
    sophia_filter *f = sophia_filter_new(cs->filter, cs->nfilter, &err);
    if (!chain || err || stream_set_outputs(st, c, cs, plugins, live, NULL) < 0) {
        sophia_chain_free(chain);
        sophia_filter_free(f);
        return -1;
    }
    sophia_filter_free(st->filter);
    st->filter = f;
    sophia_chain_free(st->chain);
    st->chain = chain;
    st->batch = cs->batch_size ? cs->batch_size : 256;
    stream_set_retry(st, cs);
    return 0;
}

int sophia_streams_rebind(sophia_streams *s, const sophia_conf *c,
                          const sophia_plugin_set *plugins,
                          struct event_base *base, sophia_diag *diag)
{
    sophia_stream **v = calloc(c->nstreams ? c->nstreams : 1, sizeof(*v));
    sophia_dict *by_name = sophia_dict_new();
    size_t n = 0;
    if (!v || !by_name) {
        free(v);
        sophia_dict_free(by_name, NULL);
        return -1;
    }
    for (size_t i = 0; i < c->nstreams; i++) {
        const sophia_conf_stream *cs = &c->streams[i];
        sophia_stream *st = sophia_dict_get(s->by_name, cs->name);
        if (st) {
            if (stream_update(st, c, cs, plugins, stream_live(s, base)) < 0)
                sophia_warn("stream", "msg=\"stream kept its old binding\" stream=%s",
                            cs->name);
            if (sophia_durable_enabled(c, cs) != st->want_durable ||
                (cs->queue_size ? cs->queue_size : STREAM_QUEUE_DEFAULT) != st->cap)
                sophia_warn("stream", "msg=\"durable and queue_size changes take "
                            "effect at restart\" stream=%s", cs->name);
            sophia_dict_del(s->by_name, cs->name);
        } else if ((st = stream_new(c, cs, plugins, stream_live(s, base), base,
                                    diag))) {
            st->drain_ev = s->drain_ev;
            st->owner = s;
            start_sources(s, st, c, cs, base);
        }
        if (st) {
            v[n++] = st;
            sophia_dict_set(by_name, st->name, st);
        }
    }
    /* What is left in the old index is gone from the configuration. */
    for (size_t i = 0; i < s->n; i++) {
        sophia_stream *st = s->v[i];
        if (sophia_dict_get(s->by_name, st->name) != st)
            continue;
        stream_drain_all(st);
        stream_free(st);
    }
    sophia_dict_free(s->by_name, NULL);
    free(s->v);
    s->v = v;
    s->n = n;
    s->by_name = by_name;
    if (n)
        event_active(s->drain_ev, EV_TIMEOUT, 0);
    return 0;
}

void sophia_streams_free(sophia_streams *s)
{
    if (!s)
        return;
    /* No drain may run over half-freed streams while a source's free
     * runs the loop (stream_free). */
    if (s->drain_ev)
        event_del(s->drain_ev);
    if (s->tick_ev)
        event_del(s->tick_ev);
    for (size_t i = 0; i < s->n; i++)
        s->v[i]->drain_ev = NULL;
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

void sophia_streams_on_commit(sophia_streams *s, sophia_stream_commit_fn fn,
                              void *arg)
{
    s->on_commit = fn;
    s->commit_arg = arg;
    if (!fn) /* no correlator any more: nothing left to wait for */
        sophia_streams_durable(s, UINT64_MAX);
}

void sophia_streams_durable(sophia_streams *s, uint64_t upto)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (s->v[i]->waits && wait_release(s->v[i], upto))
            stream_kick(s->v[i]); /* room under max_inflight again */
}

/* Adds st's outputs to out[0..*n) that are not there yet. */
static void outs_union(const sophia_stream *st, sophia_output **out,
                       size_t *n, size_t max)
{
    for (size_t i = 0; i < st->nouts; i++) {
        size_t k = 0;
        while (k < *n && out[k] != st->outs[i])
            k++;
        if (k == *n && *n < max)
            out[(*n)++] = st->outs[i];
    }
}

size_t sophia_streams_alert_outputs(void *arg, const sophia_instance *inst,
                                    sophia_output **out, size_t max)
{
    const sophia_streams *s = arg;
    size_t n = 0;
    int runs = 0;
    for (size_t i = 0; s && i < s->n; i++)
        if (sophia_chain_has(s->v[i]->chain, inst)) {
            runs = 1;
            outs_union(s->v[i], out, &n, max);
        }
    for (size_t i = 0; s && !runs && i < s->n; i++)
        outs_union(s->v[i], out, &n, max);
    return n;
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
    for (size_t i = 0; s && i < s->n; i++)
        n += s->v[i]->len + s->v[i]->nflight + s->v[i]->nwait;
    return n;
}

size_t sophia_streams_sources_down(const sophia_streams *s, json_t *down)
{
    size_t n = 0;
    char name[300];
    for (size_t i = 0; s && i < s->n; i++) {
        const sophia_stream *st = s->v[i];
        if (st->want_redis && !sophia_source_redis_up(st->redis)) {
            snprintf(name, sizeof(name), "redis:%s", st->name);
            json_array_append_new(down, json_string(name));
            n++;
        }
        if (st->want_statsd && !st->statsd) {
            snprintf(name, sizeof(name), "statsd:%s", st->name);
            json_array_append_new(down, json_string(name));
            n++;
        }
    }
    return n;
}

void sophia_streams_drain(sophia_streams *s)
{
    for (size_t i = 0; s && i < s->n; i++) {
        s->v[i]->closing = 1;
        stream_drain(s->v[i], SIZE_MAX);
    }
}

const char *sophia_stream_name(const sophia_stream *st)
{
    return st->name;
}

int sophia_stream_closing(const sophia_stream *st)
{
    return st->closing;
}

static void push_item(sophia_stream *st, json_t *ev, const char *source,
                      int64_t now, char *id, sophia_stream_ack_fn ack,
                      void *ack_arg)
{
    stream_item *it = &st->q[(st->head + st->len++) % st->cap];
    it->body = json_incref(ev);
    it->received_us = now;
    it->source = source;
    it->id = id;
    it->ack = ack;
    it->ack_arg = ack_arg;
    it->attempts = 0;
}

/* Queue slots taken: queued events and those in flight (one may come
 * back into the queue). */
static size_t stream_used(const sophia_stream *st)
{
    return st->len + st->nflight;
}

int sophia_stream_accept(sophia_stream *st, json_t *const *events, size_t n,
                         const char *source)
{
    if (st->cap - stream_used(st) < n) {
        st->st.rejected += n;
        return SOPHIA_EBUSY;
    }
    int64_t now = sophia_clock_wall_us(&st->clock);
    for (size_t i = 0; i < n; i++)
        push_item(st, events[i], source, now, NULL, NULL, NULL);
    st->st.received += n;
    if (st->drain_ev) /* NULL while the stream is being freed */
        event_active(st->drain_ev, EV_TIMEOUT, 0);
    return 0;
}

int sophia_stream_accept_one(sophia_stream *st, json_t *ev, const char *source,
                             const char *id, sophia_stream_ack_fn ack,
                             void *ack_arg)
{
    if (stream_used(st) >= st->cap) {
        st->st.rejected++;
        return SOPHIA_EBUSY;
    }
    char *copy = id ? strdup(id) : NULL;
    if (id && !copy)
        return SOPHIA_ENOMEM;
    push_item(st, ev, source, sophia_clock_wall_us(&st->clock), copy, ack,
              ack_arg);
    st->st.received++;
    if (st->drain_ev) /* NULL while the stream is being freed */
        event_active(st->drain_ev, EV_TIMEOUT, 0);
    return 0;
}

int sophia_stream_durable(const sophia_stream *st, struct sophia_durable **du)
{
    *du = sophia_source_redis_durable(st->redis);
    return st->want_durable;
}

size_t sophia_stream_room(const sophia_stream *st)
{
    return st->cap - stream_used(st);
}

void sophia_stream_count_rejected(sophia_stream *st, size_t n)
{
    st->st.rejected += n;
}

void sophia_stream_count_refused_early(sophia_stream *st)
{
    st->st.refused_early++;
}

json_t *sophia_stream_sources_json(const sophia_stream *st)
{
    json_t *o = json_object();
    if (st->redis)
        json_object_set_new(o, "redis", sophia_source_redis_stats_json(st->redis));
    else if (st->want_redis)
        json_object_set_new(o, "redis", json_pack("{s:b}", "up", 0));
    if (st->statsd)
        json_object_set_new(o, "statsd", sophia_statsd_stats_json(st->statsd));
    else if (st->want_statsd)
        json_object_set_new(o, "statsd", json_pack("{s:b}", "up", 0));
    return o;
}

const struct sophia_statsd *sophia_stream_statsd(const sophia_stream *st)
{
    return st->statsd;
}

void sophia_stream_get_stats(const sophia_stream *st, sophia_stream_stats *out)
{
    *out = st->st;
    out->queued = st->len;
    out->inflight = st->nflight;
    out->retry_wait_ms = evtimer_pending(st->retry_ev, NULL)
        ? (double)(st->paused_until_us - sophia_now_mono_us()) / 1000.0
        : 0.0;
    out->lag_ms = st->len ? (double)(sophia_now_wall_us() -
                                     st->q[st->head].received_us) / 1000.0
                          : 0.0;
}

json_t *sophia_stream_dead_json(const sophia_stream *st)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < st->dead_n; i++) {
        const stream_dead *d = &st->dead[(st->dead_head + i) % STREAM_DEAD_RING];
        json_array_append_new(
            a, json_pack("{s:s?,s:s,s:i,s:I,s:O}", "id", d->id, "reason",
                         d->why ? d->why : "?", "attempts", d->attempts,
                         "at_ms", (json_int_t)(d->at_us / 1000), "event",
                         d->body));
    }
    return a;
}
