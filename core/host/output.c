/*
 * output - see output.h.
 *
 * A runner's records wait in one FIFO; the batch being delivered (or
 * waiting out its back-off) is cut from its head, and a failed batch is
 * delivered again as it was - same records, same text - before anything
 * queued after it, so a receiver sees records in the order they came.
 * One deliver() at a time per runner; its call is the only thing the
 * plugin holds, and it outlives a released runner (call->o = NULL).
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
    size_t bytes; /* of its compact JSON */
    void (*done)(void *arg, int rc);
    void *arg;
} out_item;

struct sophia_output_call {
    sophia_output *o; /* NULL once its runner was released */
    json_t *records;  /* what deliver() borrows, freed with the call */
    char *text;
};

struct sophia_output {
    sophia_output *next; /* the runtime's list */
    sophia_host_rt *rt;
    sophia_instance *inst;
    sophia_output_params p;
    out_item *head, *tail; /* queued */
    size_t queued, queued_bytes;
    out_item *batch;       /* being delivered, or waiting to be again */
    size_t nbatch;
    json_t *records;       /* the batch as delivered */
    char *text;
    sophia_output_call *call; /* deliver() in progress */
    unsigned attempt;         /* failed deliveries of the batch */
    struct event *flush_ev, *retry_ev;
    int flush_due; /* a partial batch waited flush_interval */
    unsigned long long rng;
    uint64_t delivered, batches, retries, failed;
};

static void kick(sophia_output *o);

static void defaults(sophia_output_params *p)
{
    *p = (sophia_output_params){.struct_size = sizeof(*p),
                                .batch = 100,
                                .batch_bytes = 1 << 20,
                                .flush_interval = 0.2,
                                .retry_base = 0.2,
                                .retry_cap = 30};
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
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kick(arg);
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
    o->retry_ev = evtimer_new(rt->tbase, on_retry, o);
    if (!o->flush_ev || !o->retry_ev) {
        if (o->flush_ev)
            event_free(o->flush_ev);
        if (o->retry_ev)
            event_free(o->retry_ev);
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

void sophia_output_submit(sophia_output *o, json_t *rec,
                          void (*done)(void *arg, int rc), void *arg)
{
    out_item *it = calloc(1, sizeof(*it));
    if (!it) {
        json_decref(rec);
        done(arg, SOPHIA_ENOMEM);
        return;
    }
    *it = (out_item){.rec = rec, .done = done, .arg = arg,
                     .bytes = json_dumpb(rec, NULL, 0, JSON_COMPACT)};
    if (o->tail)
        o->tail->next = it;
    else
        o->head = it;
    o->tail = it;
    o->queued++;
    o->queued_bytes += it->bytes;
    kick(o);
}

/* Ends a list of items: each one's done(rc), then it goes. */
static void items_end(out_item *it, int rc)
{
    while (it) {
        out_item *next = it->next;
        json_decref(it->rec);
        it->done(it->arg, rc);
        free(it);
        it = next;
    }
}

static void batch_clear(sophia_output *o)
{
    json_decref(o->records);
    free(o->text);
    o->records = NULL;
    o->text = NULL;
    o->batch = NULL;
    o->nbatch = 0;
}

/* Cuts the next batch from the queue's head: up to p.batch records and
 * p.batch_bytes of JSON (a bigger record goes alone). */
static int batch_cut(sophia_output *o)
{
    size_t bytes = 0;
    out_item **tail = &o->batch;
    o->records = json_array();
    while (o->head && o->nbatch < o->p.batch &&
           (!o->nbatch || bytes + o->head->bytes <= o->p.batch_bytes)) {
        out_item *it = o->head;
        o->head = it->next;
        if (!o->head)
            o->tail = NULL;
        it->next = NULL;
        *tail = it;
        tail = &it->next;
        o->queued--;
        o->queued_bytes -= it->bytes;
        bytes += it->bytes;
        o->nbatch++;
        json_array_append(o->records, it->rec);
    }
    o->text = o->records ? json_dumps(o->records, JSON_COMPACT) : NULL;
    return o->text ? 0 : SOPHIA_ENOMEM;
}

static void deliver(sophia_output *o)
{
    sophia_output_call *call = calloc(1, sizeof(*call));
    if (!call) {
        o->attempt++;
        struct timeval tv = sophia_timeval(o->p.retry_base);
        evtimer_add(o->retry_ev, &tv);
        return;
    }
    call->o = o;
    o->call = call;
    o->batches++;
    sophia_output_batch b = {.struct_size = sizeof(b),
                             .records = (const sophia_json *)o->records,
                             .json = o->text,
                             .json_len = strlen(o->text),
                             .count = o->nbatch,
                             .attempt = o->attempt};
    sophia_plugin_output_ops(o->inst->desc)->deliver(o->inst->state, &b, call);
}

/* Whether a partial batch should go now rather than wait for more. */
static int batch_full(const sophia_output *o)
{
    return o->queued >= o->p.batch || o->queued_bytes >= o->p.batch_bytes;
}

/* Starts the next delivery when nothing is in progress or waiting. */
static void kick(sophia_output *o)
{
    if (o->call || evtimer_pending(o->retry_ev, NULL))
        return;
    if (o->batch) { /* a failed batch, its back-off over */
        o->retries++;
        deliver(o);
        return;
    }
    if (!o->head)
        return;
    if (!batch_full(o) && o->p.flush_interval > 0 && !o->flush_due) {
        if (!evtimer_pending(o->flush_ev, NULL)) { /* wait for more */
            struct timeval tv = sophia_timeval(o->p.flush_interval);
            evtimer_add(o->flush_ev, &tv);
        }
        return;
    }
    o->flush_due = 0;
    event_del(o->flush_ev);
    if (batch_cut(o) < 0) {
        out_item *b = o->batch;
        o->failed += o->nbatch;
        batch_clear(o);
        items_end(b, SOPHIA_ENOMEM);
        return;
    }
    deliver(o);
}

static int permanent(int rc)
{
    return rc == SOPHIA_EINVAL || rc == SOPHIA_EPERM ||
           rc == SOPHIA_ETOOBIG || rc == SOPHIA_EPARSE;
}

static void call_free(sophia_output_call *call)
{
    json_decref(call->records);
    free(call->text);
    free(call);
}

void sophia_host_output_done(sophia_output_call *call, int rc)
{
    if (!call)
        return;
    sophia_output *o = call->o;
    if (!o) { /* its runner was released meanwhile */
        call_free(call);
        return;
    }
    free(call);
    o->call = NULL;
    if (rc && !permanent(rc)) {
        o->attempt++;
        double wait = sophia_backoff_full(o->p.retry_base, o->p.retry_cap,
                                          o->attempt,
                                          sophia_backoff_rand(&o->rng));
        sophia_warn("output", "msg=\"delivery failed, will retry\" instance=%s "
                    "records=%zu attempt=%u error=\"%s\" wait_s=%.3f",
                    o->inst->name, o->nbatch, o->attempt,
                    o->rt->table.strerror(rc), wait);
        struct timeval tv = sophia_timeval(wait);
        evtimer_add(o->retry_ev, &tv);
        return;
    }
    out_item *b = o->batch;
    size_t n = o->nbatch;
    batch_clear(o);
    o->attempt = 0;
    if (rc) {
        o->failed += n;
        sophia_warn("output", "msg=\"batch refused\" instance=%s records=%zu "
                    "error=\"%s\"", o->inst->name, n,
                    o->rt->table.strerror(rc));
    } else {
        o->delivered += n;
    }
    items_end(b, rc);
    kick(o);
}

static void runner_free(sophia_output *o)
{
    event_free(o->flush_ev);
    event_free(o->retry_ev);
    out_item *b = o->batch, *q = o->head;
    if (o->call) { /* the plugin still borrows the batch */
        o->call->o = NULL;
        o->call->records = o->records;
        o->call->text = o->text;
        o->records = NULL;
        o->text = NULL;
    }
    batch_clear(o);
    o->head = o->tail = NULL;
    items_end(b, SOPHIA_EUNAVAIL);
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
                                 .queued = o->queued,
                                 .in_batch = o->nbatch,
                                 .attempt = o->attempt};
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
