/*
 * output - see output.h.
 *
 * A runner's records wait in one FIFO; each batch is cut from its head
 * when one of the runner's max_inflight slots is free, and a failed batch
 * is delivered again as it was - same records, same text - in its slot.
 * With one slot, a receiver sees records in the order they came; with
 * more, a retried batch lands after later ones. A batch is the call
 * deliver() is given, the only thing the plugin holds, and it outlives a
 * released runner (call->o = NULL).
 */
#include "host/output.h"
#include "host/host_priv.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "event/loop.h"
#include "lib/backoff.h"
#include "lib/log.h"

typedef struct out_item {
    struct out_item *next;
    json_t *rec;
    char *text;   /* its compact JSON, made once: a batch's text joins them */
    size_t bytes;
    void (*done)(void *arg, int rc); /* NULL: a detached alert's record */
    void *arg;
} out_item;

/* A batch out, or waiting out its back-off to go again: it is the call
 * deliver() is given, so it outlives a released runner (o = NULL) until
 * the plugin reports it. */
struct sophia_output_call {
    sophia_output_call *next; /* the runner's batches out */
    sophia_output *o;         /* NULL once its runner was released */
    out_item *items;
    size_t n;
    json_t *records; /* the batch as delivered */
    char *text;
    unsigned attempt; /* failed deliveries so far */
    int busy;         /* deliver() in progress */
    struct event *retry_ev;
};

struct sophia_output {
    sophia_output *next; /* the runtime's list */
    sophia_host_rt *rt;
    sophia_instance *inst;
    sophia_output_params p;
    out_item *head, *tail; /* queued */
    size_t queued, queued_bytes, queued_detached;
    sophia_output_call *out; /* batches out, at most p.max_inflight */
    size_t nout;
    struct event *flush_ev;
    int flush_due; /* a partial batch waited flush_interval */
    unsigned long long rng;
    uint64_t delivered, batches, retries, failed, dropped;
};

static void kick(sophia_output *o);

static void defaults(sophia_output_params *p)
{
    *p = (sophia_output_params){.struct_size = sizeof(*p),
                                .batch = 100,
                                .batch_bytes = 1 << 20,
                                .flush_interval = 0.2,
                                .retry_base = 0.2,
                                .retry_cap = 30,
                                /* the contract before max_inflight: a
                                 * plugin that does not raise it gets one
                                 * deliver() at a time */
                                .max_inflight = 1};
}

/* The plugin's params() may say anything: keep what is usable. */
static void sane(sophia_output_params *p)
{
    sophia_output_params d;
    defaults(&d);
    if (!p->batch)
        p->batch = d.batch;
    if (!p->batch_bytes)
        p->batch_bytes = d.batch_bytes;
    if (!(p->flush_interval >= 0 && p->flush_interval <= 60))
        p->flush_interval = d.flush_interval;
    if (!(p->retry_base > 0 && p->retry_base <= 3600))
        p->retry_base = d.retry_base;
    if (!(p->retry_cap >= p->retry_base && p->retry_cap <= 86400))
        p->retry_cap = p->retry_base > d.retry_cap ? p->retry_base : d.retry_cap;
    if (!p->max_inflight || p->max_inflight > SOPHIA_OUTPUT_MAX_INFLIGHT)
        p->max_inflight = p->max_inflight ? SOPHIA_OUTPUT_MAX_INFLIGHT : 1;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_output *o = arg;
    o->flush_due = 1;
    kick(o);
}

sophia_output *sophia_host_output(sophia_instance *inst)
{
    sophia_host_rt *rt = sophia_host_rt_of(inst);
    const sophia_output_ops *ops =
        inst ? sophia_plugin_output_ops(inst->desc) : NULL;
    if (!rt || !rt->tbase || !ops || inst->desc->kind != SOPHIA_KIND_OUTPUT)
        return NULL;
    for (sophia_output *o = rt->outputs; o; o = o->next)
        if (o->inst == inst)
            return o;
    sophia_output *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->rt = rt;
    o->inst = inst;
    o->rng = (unsigned long long)(uintptr_t)o ^ (unsigned long long)sophia_now_wall_us();
    o->flush_ev = evtimer_new(rt->tbase, on_flush, o);
    if (!o->flush_ev) {
        free(o);
        return NULL;
    }
    defaults(&o->p);
    if (ops->struct_size >= offsetof(sophia_output_ops, params) + sizeof(void *) &&
        ops->params)
        ops->params(inst->state, &o->p);
    sane(&o->p);
    inst->release = sophia_host_release;
    o->next = rt->outputs;
    rt->outputs = o;
    return o;
}

size_t sophia_output_window(const sophia_output *o)
{
    size_t w = o->p.batch * o->p.max_inflight;
    return w / o->p.max_inflight != o->p.batch || w > SOPHIA_OUTPUT_MAX_WINDOW
               ? SOPHIA_OUTPUT_MAX_WINDOW
               : w;
}

/* 0, or SOPHIA_ENOMEM with `it` and `rec` freed. */
static int item_init(out_item *it, json_t *rec, void (*done)(void *, int),
                     void *arg)
{
    *it = (out_item){.rec = rec, .done = done, .arg = arg,
                     .text = json_dumps(rec, JSON_COMPACT | JSON_ENCODE_ANY)};
    if (!it->text) {
        json_decref(rec);
        free(it);
        return SOPHIA_ENOMEM;
    }
    it->bytes = strlen(it->text);
    return 0;
}

static void enqueue(sophia_output *o, out_item *it)
{
    if (o->tail)
        o->tail->next = it;
    else
        o->head = it;
    o->tail = it;
    o->queued++;
    o->queued_bytes += it->bytes;
    if (!it->done)
        o->queued_detached++;
    kick(o);
}

void sophia_output_submit(sophia_output *o, json_t *rec,
                          void (*done)(void *arg, int rc), void *arg)
{
    out_item *it = malloc(sizeof(*it));
    if (!it) {
        json_decref(rec);
        done(arg, SOPHIA_ENOMEM);
        return;
    }
    if (item_init(it, rec, done, arg) < 0) {
        done(arg, SOPHIA_ENOMEM);
        return;
    }
    enqueue(o, it);
}

int sophia_output_submit_detached(sophia_output *o, json_t *rec)
{
    out_item *it = o->queued_detached < SOPHIA_OUTPUT_DETACHED_MAX
                       ? malloc(sizeof(*it))
                       : NULL;
    if (!it) { /* the bound: no event waits on it, so nothing pushes back */
        json_decref(rec);
        o->dropped++;
        sophia_warn("output", "msg=\"alert dropped: queue of alerts raised "
                    "outside an event is full\" instance=%s max=%d",
                    o->inst->name, SOPHIA_OUTPUT_DETACHED_MAX);
        return SOPHIA_EBUSY;
    }
    if (item_init(it, rec, NULL, NULL) < 0)
        return SOPHIA_ENOMEM;
    enqueue(o, it);
    return 0;
}

/* Ends a list of items: each one's done(rc), then it goes. */
static void items_end(out_item *it, int rc)
{
    while (it) {
        out_item *next = it->next;
        json_decref(it->rec);
        free(it->text);
        if (it->done)
            it->done(it->arg, rc);
        free(it);
        it = next;
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg);

/* The JSON array of the first n items from `it` (their texts: `bytes`),
 * as json_dumps would write it, without serializing them again. */
static char *batch_text(const out_item *it, size_t n, size_t bytes)
{
    char *text = malloc(bytes + n + 2), *p = text; /* [ , ... ] and NUL */
    if (!text)
        return NULL;
    *p++ = '[';
    for (size_t i = 0; i < n; i++, it = it->next) {
        if (i)
            *p++ = ',';
        memcpy(p, it->text, it->bytes);
        p += it->bytes;
    }
    *p++ = ']';
    *p = 0;
    return text;
}

/* Cuts the next batch from the queue's head: up to p.batch records and
 * p.batch_bytes of JSON (a bigger record goes alone). NULL: out of
 * memory, the queue as it was. */
static sophia_output_call *batch_cut(sophia_output *o)
{
    sophia_output_call *b = calloc(1, sizeof(*b));
    json_t *records = json_array();
    struct event *ev = b ? evtimer_new(o->rt->tbase, on_retry, b) : NULL;
    size_t bytes = 0, n = 0;
    for (out_item *it = o->head;
         ev && records && it && n < o->p.batch &&
         (!n || bytes + it->bytes <= o->p.batch_bytes);
         it = it->next, n++) {
        if (json_array_append(records, it->rec) < 0)
            break;
        bytes += it->bytes;
    }
    char *text = n ? batch_text(o->head, n, bytes) : NULL;
    if (!text) {
        if (ev)
            event_free(ev);
        json_decref(records);
        free(b);
        return NULL;
    }
    *b = (sophia_output_call){.o = o, .items = o->head, .n = n,
                              .records = records, .text = text,
                              .retry_ev = ev};
    out_item **tail = &o->head;
    for (size_t i = 0; i < n; i++) {
        out_item *it = *tail;
        o->queued--;
        o->queued_bytes -= it->bytes;
        if (!it->done)
            o->queued_detached--;
        tail = &it->next;
    }
    o->head = *tail;
    *tail = NULL;
    if (!o->head)
        o->tail = NULL;
    b->next = o->out;
    o->out = b;
    o->nout++;
    return b;
}

static void batch_free(sophia_output_call *b)
{
    if (b->retry_ev)
        event_free(b->retry_ev);
    json_decref(b->records);
    free(b->text);
    free(b);
}

/* Takes `b` off its runner's list of batches out. */
static void batch_unlink(sophia_output *o, sophia_output_call *b)
{
    for (sophia_output_call **pp = &o->out; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            o->nout--;
            return;
        }
}

static void deliver(sophia_output_call *b)
{
    sophia_output *o = b->o;
    b->busy = 1;
    o->batches++;
    sophia_output_batch ob = {.struct_size = sizeof(ob),
                              .records = (const sophia_json *)b->records,
                              .json = b->text,
                              .json_len = strlen(b->text),
                              .count = b->n,
                              .attempt = b->attempt};
    sophia_plugin_output_ops(o->inst->desc)->deliver(o->inst->state, &ob, b);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_output_call *b = arg;
    b->o->retries++;
    deliver(b);
}

/* Whether a partial batch should go now rather than wait for more. */
static int batch_full(const sophia_output *o)
{
    return o->queued >= o->p.batch || o->queued_bytes >= o->p.batch_bytes;
}

/* Starts deliveries while a slot is free and records wait. A failed
 * batch keeps its slot while it waits out its back-off, so an outage
 * fills the slots and stops new batches: the events wait in flight. */
static void kick(sophia_output *o)
{
    while (o->head && o->nout < o->p.max_inflight) {
        if (!batch_full(o) && o->p.flush_interval > 0 && !o->flush_due) {
            if (!evtimer_pending(o->flush_ev, NULL)) { /* wait for more */
                struct timeval tv = sophia_timeval(o->p.flush_interval);
                evtimer_add(o->flush_ev, &tv);
            }
            return;
        }
        o->flush_due = 0;
        event_del(o->flush_ev);
        sophia_output_call *b = batch_cut(o);
        if (!b) { /* out of memory: the head's records fail now */
            out_item *it = o->head;
            o->head = it->next;
            if (!o->head)
                o->tail = NULL;
            it->next = NULL;
            o->queued--;
            o->queued_bytes -= it->bytes;
            if (!it->done)
                o->queued_detached--;
            o->failed++;
            items_end(it, SOPHIA_ENOMEM);
            continue;
        }
        deliver(b);
    }
}

static int permanent(int rc)
{
    return rc == SOPHIA_EINVAL || rc == SOPHIA_EPERM ||
           rc == SOPHIA_ETOOBIG || rc == SOPHIA_EPARSE;
}

void sophia_host_output_done(sophia_output_call *b, int rc)
{
    if (!b)
        return;
    sophia_output *o = b->o;
    b->busy = 0;
    if (!o) { /* its runner was released meanwhile */
        batch_free(b);
        return;
    }
    if (rc && !permanent(rc)) {
        b->attempt++;
        double wait = sophia_backoff_full(o->p.retry_base, o->p.retry_cap,
                                          b->attempt,
                                          sophia_backoff_rand(&o->rng));
        sophia_warn("output", "msg=\"delivery failed, will retry\" instance=%s "
                    "records=%zu attempt=%u error=\"%s\" wait_s=%.3f",
                    o->inst->name, b->n, b->attempt,
                    o->rt->table.strerror(rc), wait);
        struct timeval tv = sophia_timeval(wait);
        evtimer_add(b->retry_ev, &tv);
        return;
    }
    batch_unlink(o, b);
    out_item *items = b->items;
    size_t n = b->n;
    batch_free(b);
    if (rc) {
        o->failed += n;
        sophia_warn("output", "msg=\"batch refused\" instance=%s records=%zu "
                    "error=\"%s\"", o->inst->name, n,
                    o->rt->table.strerror(rc));
    } else {
        o->delivered += n;
    }
    items_end(items, rc);
    kick(o);
}

static void runner_free(sophia_output *o)
{
    event_free(o->flush_ev);
    while (o->out) {
        sophia_output_call *b = o->out;
        o->out = b->next;
        out_item *items = b->items;
        if (b->busy) { /* the plugin still borrows the batch */
            b->o = NULL;
            b->items = NULL;
            event_free(b->retry_ev);
            b->retry_ev = NULL;
        } else {
            batch_free(b);
        }
        items_end(items, SOPHIA_EUNAVAIL);
    }
    out_item *q = o->head;
    o->head = o->tail = NULL;
    items_end(q, SOPHIA_EUNAVAIL);
    free(o);
}

void sophia_host_outputs_release(sophia_instance *inst)
{
    sophia_host_rt *rt = sophia_host_rt_of(inst);
    for (sophia_output **pp = rt ? &rt->outputs : NULL; pp && *pp;
         pp = &(*pp)->next)
        if ((*pp)->inst == inst) {
            sophia_output *o = *pp;
            *pp = o->next;
            runner_free(o);
            return;
        }
}

void sophia_host_outputs_free(sophia_host_rt *rt)
{
    while (rt && rt->outputs) {
        sophia_output *o = rt->outputs;
        rt->outputs = o->next;
        runner_free(o);
    }
}

size_t sophia_host_outputs_count(const sophia_host_rt *rt)
{
    size_t n = 0;
    for (const sophia_output *o = rt ? rt->outputs : NULL; o; o = o->next)
        n++;
    return n;
}

int sophia_host_output_stats_at(const sophia_host_rt *rt, size_t i,
                                const char **instance,
                                sophia_output_stats *out)
{
    const sophia_output *o = rt ? rt->outputs : NULL;
    while (o && i--)
        o = o->next;
    if (!o)
        return 0;
    *instance = o->inst->name;
    *out = (sophia_output_stats){.delivered = o->delivered,
                                 .batches = o->batches,
                                 .retries = o->retries,
                                 .failed = o->failed,
                                 .dropped = o->dropped,
                                 .queued = o->queued,
                                 .inflight = o->nout};
    for (const sophia_output_call *b = o->out; b; b = b->next) {
        out->in_batch += b->n;
        if (b->attempt > out->attempt)
            out->attempt = b->attempt;
    }
    return 1;
}

/* ------------------------------------------------ a context's records */

typedef struct ctx_outs {
    sophia_output **v;
    size_t n;
    json_t *events; /* the records of the events, an array */
    const char *stream; /* the stream's name: outlives its contexts */
    char *id;           /* the event's source id, or NULL */
} ctx_outs;

/* The record of one event that left the processors on behalf of `ev`. */
static json_t *event_record(const sophia_event *ev, json_t *event)
{
    return json_pack("{s:s,s:s,s:s?,s:s,s:I,s:O}", "type", "event", "stream",
                     ev->stream, "id", ev->id, "source",
                     ev->source ? ev->source : "http", "received_ms",
                     (json_int_t)(ev->received_us / 1000), "event", event);
}

int sophia_ctx_set_outputs(sophia_ctx *ctx, sophia_output *const *outs,
                           size_t n, const sophia_event *ev,
                           json_t *const *events, size_t nevents)
{
    void **slot = sophia_ctx_output_slot(ctx);
    if (!slot || !n)
        return 0;
    ctx_outs *co = calloc(1, sizeof(*co));
    json_t *recs = json_array();
    int bad = !co || !recs || !(co->v = malloc(n * sizeof(*co->v))) ||
              (ev->id && !(co->id = strdup(ev->id)));
    for (size_t i = 0; !bad && i < nevents; i++)
        bad = json_array_append_new(recs, event_record(ev, events[i])) < 0;
    if (bad) {
        if (co) {
            free(co->v);
            free(co->id);
        }
        free(co);
        json_decref(recs);
        return SOPHIA_ENOMEM;
    }
    memcpy(co->v, outs, n * sizeof(*co->v));
    co->n = n;
    co->events = recs;
    co->stream = ev->stream;
    sophia_output_ctx_free(ctx);
    *slot = co;
    return 0;
}

static void submit_all(ctx_outs *co, sophia_apply *ap, json_t *rec)
{
    for (size_t i = 0; i < co->n; i++) {
        sophia_apply_begin(ap);
        /* shared: a record is never changed once made */
        sophia_output_submit(co->v[i], json_incref(rec), sophia_apply_end, ap);
    }
}

void sophia_output_ctx_apply(sophia_ctx *ctx, sophia_apply *ap)
{
    void **slot = sophia_ctx_output_slot(ctx);
    ctx_outs *co = slot ? *slot : NULL;
    if (!co)
        return;
    for (size_t i = 0; i < json_array_size(co->events); i++)
        submit_all(co, ap, json_array_get(co->events, i));
    size_t i = 0;
    for (const json_t *a; (a = sophia_ctx_next_alert(ctx, &i));) {
        json_t *rec = json_pack("{s:s,s:s,s:s?,s:o}", "type", "alert",
                                "stream", co->stream, "event_id", co->id,
                                "alert", json_deep_copy(a));
        if (rec)
            submit_all(co, ap, rec);
        json_decref(rec);
    }
}

void sophia_host_set_alert_route(sophia_host_rt *rt, sophia_alert_route_fn fn,
                                 void *arg)
{
    if (!rt)
        return;
    rt->alert_route = fn;
    rt->alert_route_arg = arg;
}

#define ROUTE_MAX 64 /* outputs one detached alert reaches, at most */

void sophia_output_ctx_detached(sophia_ctx *ctx)
{
    size_t i = 0;
    const json_t *a = sophia_ctx_next_alert(ctx, &i);
    sophia_instance *inst = a ? sophia_ctx_instance(ctx) : NULL;
    sophia_host_rt *rt = sophia_host_rt_of(inst);
    sophia_output *outs[ROUTE_MAX];
    size_t n = rt && rt->alert_route
                   ? rt->alert_route(rt->alert_route_arg, inst, outs, ROUTE_MAX)
                   : 0;
    for (; a && n; a = sophia_ctx_next_alert(ctx, &i)) {
        json_t *rec = json_pack("{s:s,s:n,s:n,s:s,s:o}", "type", "alert",
                                "stream", "event_id", "instance", inst->name,
                                "alert", json_deep_copy(a));
        for (size_t k = 0; rec && k < n; k++)
            sophia_output_submit_detached(outs[k], json_incref(rec));
        json_decref(rec);
    }
}

void sophia_output_ctx_free(sophia_ctx *ctx)
{
    void **slot = sophia_ctx_output_slot(ctx);
    ctx_outs *co = slot ? *slot : NULL;
    if (!co)
        return;
    json_decref(co->events);
    free(co->id);
    free(co->v);
    free(co);
    *slot = NULL;
}
