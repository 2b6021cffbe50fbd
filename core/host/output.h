/*
 * output - the host side of output plugins (SDK 1.2, sophia_output_ops):
 * one runner per output instance, which batches the records streams hand
 * it, calls the plugin's deliver() with up to max_inflight batches at a
 * time (sophia_output_params; 1 unless the plugin raises it), and retries
 * each batch that failed after its own exponential back-off with full
 * jitter (lib/backoff.h), as Fluent Bit's engine does for its output
 * plugins: the plugin only says how one batch goes out, the core owns
 * batching and retries (and, through host->http_request / redis_command
 * / pg_query, the connections: event/upstream.h).
 *
 * Delivery is an effect of the event's contexts (host.h): a stream hands
 * them its outputs (sophia_ctx_set_outputs) when its processors said OK,
 * and sophia_ctx_apply submits a record of each event that left them
 * (ingest/chain.h), and one per alert they raised for it, to each output;
 * the applies report only once every output delivered them, so the event
 * commits and is acknowledged (XACK) only then: at least once. Batches
 * may be delivered out of order when more than one is out (one is retried
 * while a later one went); the stream still commits and acknowledges its
 * events in order. A batch that fails with a transient error is retried
 * forever, keeping its slot, while its events stay in flight: once every
 * slot holds a failing batch no new one is cut, the stream stops starting
 * new events at its in-flight bound, its queue fills and ingest answers
 * 503 (a durable stream keeps them in Redis), so a long outage is
 * backpressure, never a silent loss. A batch the receiver refuses for
 * good (output_done with EINVAL, EPERM, ETOOBIG, EPARSE) fails its
 * records' applies: their events are retried by their streams and go to
 * the dead letter after max_attempts.
 *
 * A runner lives as long as its instance: sophia_host_release (before
 * fini, and when a reload retires the instance) ends what it still holds
 * with SOPHIA_EUNAVAIL - the stream that waited has recalled those events
 * already, or is gone - and a deliver() still in progress then reports
 * into nothing.
 *
 * Alerts raised outside an event (a timer, a consolidation run, a
 * correlator: sophia_ctx_apply_detached) have no event to acknowledge:
 * their records are queued with sophia_output_submit_detached and retried
 * like the rest, but nothing waits on them, so nothing pushes back; at
 * most SOPHIA_OUTPUT_DETACHED_MAX of them wait per runner, and one more is
 * dropped (counted in `dropped`, logged). A daemon that stops loses what
 * is still queued.
 */
#ifndef SOPHIA_OUTPUT_H
#define SOPHIA_OUTPUT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "host/host.h"

typedef struct sophia_output sophia_output;

/* The most deliver() calls in progress at once per output, whatever a
 * plugin asks for. */
#define SOPHIA_OUTPUT_MAX_INFLIGHT 64
/* The most events a stream keeps in flight for its outputs' batches. */
#define SOPHIA_OUTPUT_MAX_WINDOW 4096
/* Alert records raised outside an event that wait per output, at most. */
#define SOPHIA_OUTPUT_DETACHED_MAX 10000

/* The runner of output instance `inst`, made on first use on its
 * runtime's loop (sophia_host_timers_bind); NULL when `inst` is not an
 * output, has no runtime or loop (a validation pass), or out of memory. */
sophia_output *sophia_host_output(sophia_instance *inst);
/* The records `o` can have out at once (batch x max_inflight), at most
 * SOPHIA_OUTPUT_MAX_WINDOW: how many events its streams keep in flight. */
size_t sophia_output_window(const sophia_output *o);
/* Queues `rec` (taken) for delivery; done(arg, rc) runs once, later, with
 * 0 once a deliver() took it, or the error it failed with for good. */
void sophia_output_submit(sophia_output *o, json_t *rec,
                          void (*done)(void *arg, int rc), void *arg);

/* Queues `rec` (taken), an alert raised outside an event: nobody is told
 * how it went. 0, or SOPHIA_EBUSY when SOPHIA_OUTPUT_DETACHED_MAX of them
 * wait already (dropped, counted) / SOPHIA_ENOMEM. */
int sophia_output_submit_detached(sophia_output *o, json_t *rec);

/* Where the alerts `inst` raises outside an event go: route fills
 * out[0..max) with distinct runners and returns how many. Given by the
 * daemon at wiring time (the streams know which outputs follow which
 * instance); NULL: nowhere. */
typedef size_t (*sophia_alert_route_fn)(void *arg, const sophia_instance *inst,
                                        sophia_output **out, size_t max);
void sophia_host_set_alert_route(sophia_host_rt *rt, sophia_alert_route_fn fn,
                                 void *arg);
/* host.c, as a context applied outside an event commits (a timer's, a
 * consolidation run's, a correlator's): each alert it raised, as a record
 * {"type":"alert","stream":null,"event_id":null,"instance":<name>,
 * "alert":...}, to each output the route names (submit_detached). */
void sophia_output_ctx_detached(sophia_ctx *ctx);

/* host->output_done. */
void sophia_host_output_done(sophia_output_call *call, int rc);

/* Part of sophia_host_release: ends `inst`'s runner, if any. */
void sophia_host_outputs_release(sophia_instance *inst);
/* Shutdown: ends every runner of `rt` (before its loop goes). */
void sophia_host_outputs_free(sophia_host_rt *rt);

/* One runner's figures (output_stats.c declares each for lib/statdef.h). */
typedef struct sophia_output_stats {
    uint64_t delivered; /* records a deliver() took */
    uint64_t batches;   /* deliver() calls, retries included */
    uint64_t retries;   /* of them, a failed batch again */
    uint64_t failed;    /* records refused for good (or out of memory) */
    uint64_t dropped;   /* alerts raised outside an event, queue full */
    size_t queued;      /* records waiting for a batch */
    size_t inflight;    /* batches out or waiting to go again */
    size_t in_batch;    /* their records */
    size_t attempt;     /* failed deliveries of the most tried of them */
} sophia_output_stats;
/* The runners of `rt`, in no set order: the i-th one's instance name and
 * figures; 0 past the end. */
size_t sophia_host_outputs_count(const sophia_host_rt *rt);
int sophia_host_output_stats_at(const sophia_host_rt *rt, size_t i,
                                const char **instance,
                                sophia_output_stats *out);
/* output_stats.c: /api/stats `outputs` ({instance: {delivered, ...}},
 * new reference) and the sophia_output_* lines of /metrics, one sample
 * per instance (instance="name"). */
json_t *sophia_host_outputs_stats_json(const sophia_host_rt *rt);
void sophia_host_outputs_write_prom(const sophia_host_rt *rt, FILE *f);

/* host.c's side: the records a context hands its outputs. The context
 * keeps `outs` (borrowed: a stream's runners), and a record for each of
 * `events` (the events that left the stream's processors on behalf of
 * `ev`, whose id, source and arrival they carry), built now;
 * sophia_ctx_apply submits them and one record per alert the context
 * queued to each output (sophia_output_ctx_apply). */
int sophia_ctx_set_outputs(sophia_ctx *ctx, sophia_output *const *outs,
                           size_t n, const sophia_event *ev,
                           json_t *const *events, size_t nevents);
void sophia_output_ctx_apply(sophia_ctx *ctx, sophia_apply *ap);
void sophia_output_ctx_free(sophia_ctx *ctx);
/* host.c: the context's slot for the above, and its alerts' data in the
 * order they were raised (*i starts at 0; NULL at the end). */
void **sophia_ctx_output_slot(sophia_ctx *ctx);
/* host.c: the instance whose callback the context is for. */
sophia_instance *sophia_ctx_instance(const sophia_ctx *ctx);
const json_t *sophia_ctx_next_alert(const sophia_ctx *ctx, size_t *i);

#endif
