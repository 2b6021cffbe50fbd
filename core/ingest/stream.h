/*
 * stream - named streams: a bounded queue of accepted events per stream,
 * drained on the loop into the stream's processor plugin.
 *
 * Acceptance is all-or-nothing per request: a body of N events is queued
 * only if all N fit, so a 503 never leaves half a body accepted. The
 * queue is drained a batch per stream per loop turn, so ingest, WebSocket
 * traffic and timers interleave with processing under load.
 *
 * The path of one event (SPEC §11): dedup (an id at `dedup_key` seen
 * inside `dedup_window` is skipped) -> filter (filter.h) -> processor, or
 * a chain of them (chain.h: its links' contexts act as one) ->
 * the core applies the queued actions (host.h: asynchronously, one
 * report once every effect is durable where its strategy says) -> commit
 * (the processor's staged state, the dedup id) -> ack. Sources that need
 * to know the outcome (Redis Streams and durable ingest: XACK only once
 * the effects are durable) pass an ack callback with each event; it runs
 * at most once per event: why NULL once it is processed / dropped /
 * filtered / duplicate, or why = the reason once it is dead (the source
 * puts it in its dead letter and acknowledges it). An event whose stream
 * is freed first (shutdown, reload) is never acked: a Redis-fed one stays
 * pending and comes back.
 *
 * A delivery that does not commit - the processor said RETRY, or an
 * effect could not be taken now (write-back set or L3 queue full, a tier
 * down) - is delivered again after an exponential back-off with full
 * jitter (`retry_base`, `retry_cap`), ahead of the events that followed
 * it; after `max_attempts` deliveries, or at once for a processor ERROR,
 * it goes to the dead letter: the source's Redis stream (source_redis.h)
 * when it came from one, else a ring of the last 64 in
 * memory (sophia_stream_dead_json). Its staged state is discarded.
 *
 * Outputs (streams.<name>.outputs, host/output.h): an OK event's record
 * and its alerts' are delivered to each output as effects of its context,
 * so its ack waits for them too; an output that is down keeps its events
 * in flight (retried by the output's runner, not by the stream) until the
 * in-flight bound and then the queue hold the stream back: 503 at the
 * door, a durable stream's entries left pending in Redis. A reload that
 * replaces an output recalls the events waiting on it, as for a processor.
 *
 * Ordering: while an event with staged state (host->stage) has effects in
 * flight, the stream starts no other, so process() always sees every
 * earlier change applied. Events commit (publishes, ack) in the order
 * they were processed. Events without staged state overlap, at most
 * 256 per stream; queue_size bounds queued plus in flight.
 *
 * Sources other than HTTP (Redis Streams, StatsD) are owned by their
 * stream and started with it when the streams are built on the server's
 * own loop (not for the validation pass of `--check`).
 */
#ifndef SOPHIA_STREAM_H
#define SOPHIA_STREAM_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "conf/config.h"
#include "host/output.h"
#include "ingest/dedup.h"
#include "lib/statdef.h"
#include "plugin/plugin.h"

typedef struct sophia_stream sophia_stream;
typedef struct sophia_streams sophia_streams;

typedef struct sophia_stream_stats {
    uint64_t received;   /* accepted into the queue */
    uint64_t processed;  /* processor returned OK and actions applied */
    uint64_t dropped;    /* processor returned DROP */
    uint64_t failed;     /* dead-lettered: ERROR, or out of attempts */
    uint64_t retried;    /* deliveries that will be tried again */
    uint64_t effect_failures; /* applies that reported an error */
    uint64_t dead;       /* dead letters, by reason below */
    uint64_t dead_error, dead_retry, dead_effect; /* processor ERROR, out of
                          * attempts after RETRY / after effect failures */
    uint64_t rejected;   /* refused at the door: queue full */
    uint64_t refused_early; /* requests refused at their head, the queue
                          * full before a body was read: their events
                          * are not known, so not in `rejected` */
    uint64_t filtered;   /* did not pass the stream's filter */
    uint64_t duplicates; /* id already seen inside the dedup window */
    size_t queued;       /* waiting now */
    size_t inflight;     /* events whose effects are in flight */
    double retry_wait_ms; /* left of the back-off being waited out */
    size_t capacity;
    double rate;         /* processed per second, 10 s moving average */
    double lag_ms;       /* age of the oldest queued event */
} sophia_stream_stats;

/* Called at most once per event that was accepted with it; see above.
 * why: NULL = done, else dead with that reason (body borrowed). */
typedef void (*sophia_stream_ack_fn)(void *arg, const char *id,
                                     const json_t *body, const char *why);

struct event_base;
struct sophia_loop;

/* Builds every stream of `c`, bound to its processor in `plugins`.
 * `live` is the daemon's own loop when these are its streams: sources
 * (which bind and connect) start only for streams built on its base,
 * never for a validation pass (`--check`, a reload's prepare), which
 * passes NULL and a probe base. */
sophia_streams *sophia_streams_new(const sophia_conf *c,
                                   const sophia_plugin_set *plugins,
                                   struct sophia_loop *live,
                                   struct event_base *base, sophia_diag *diag);
/* The loop `st`'s sources run on (its owner's `live`), NULL when none. */
struct sophia_loop *sophia_stream_live_loop(const sophia_stream *st);
void sophia_streams_free(sophia_streams *s);
/* Reload: makes `s` the streams of `c` bound to `plugins` (validated
 * before, e.g. by a sophia_streams_new on a probe base). A stream that
 * stays keeps its queue, dedup memory and sources and gets its new
 * processor instance and filter; a new one is created; one that is gone
 * is drained first (by its current processor, so call this while the
 * old plugin set is still loaded) and freed. 0, or -1 when out of memory
 * (then `s` is unchanged). */
int sophia_streams_rebind(sophia_streams *s, const sophia_conf *c,
                          const sophia_plugin_set *plugins,
                          struct event_base *base, sophia_diag *diag);

/* Reload, before the old instances hand their state over: each stream
 * whose processor or output instance `next` replaces puts its in-flight
 * events back at the head of its queue (staged changes discarded,
 * undoable ones undone), so the old instance exports only committed state
 * and the new one processes those events again. */
void sophia_streams_recall(sophia_streams *s, const sophia_plugin_set *next);

/* Called with each event that commits (processed: every effect durable),
 * once, right after its commit and before its ack; `ev` and its body are
 * borrowed for the call (take a reference to keep the body). The event
 * is the one the stream took in, not what its processors emitted. The
 * daemon hands the correlators' dispatch here (host/correlate.h); NULL
 * fn: nothing is called (and acks held for a ticket are given).
 *
 * The hook returns 0, or a ticket: what the event changed in the hook's
 * own state is an effect of it too, not durable yet, so its ack waits
 * until sophia_streams_durable reports a number at least the ticket
 * (tickets grow; one report covers every ticket up to it). Such held
 * acks count against the stream's in-flight bound, so a hook that
 * cannot make its changes durable holds the stream back like an output
 * that is down; a stream freed first never acks them (a Redis-fed event
 * comes back). Events without an ack callback are not held. */
typedef uint64_t (*sophia_stream_commit_fn)(void *arg,
                                            const sophia_event *ev);
void sophia_streams_on_commit(sophia_streams *s, sophia_stream_commit_fn fn,
                              void *arg);
/* Every ticket up to `upto` is durable: their events are acked. */
void sophia_streams_durable(sophia_streams *s, uint64_t upto);

/* A sophia_alert_route_fn (host/output.h), arg the streams: an alert
 * raised outside an event by `inst` goes to the outputs of every stream
 * whose chain runs it (a processor's timer); an instance no stream runs
 * (a consolidator, a correlator) to the outputs of every stream. Each
 * output once. */
size_t sophia_streams_alert_outputs(void *arg, const sophia_instance *inst,
                                    sophia_output **out, size_t max);

sophia_stream *sophia_streams_find(const sophia_streams *s, const char *name);
size_t sophia_streams_count(const sophia_streams *s);
sophia_stream *sophia_streams_at(const sophia_streams *s, size_t i);
/* Events waiting in all queues. */
size_t sophia_streams_pending(const sophia_streams *s);
/* Appends to `down` (a JSON array) the name of each configured source
 * that is not working now ("redis:<stream>", "statsd:<stream>"), for
 * /healthz; returns how many. */
size_t sophia_streams_sources_down(const sophia_streams *s, json_t *down);
/* Starts everything queued that may start now (shutdown drain); the rest
 * follows on the loop. sophia_streams_pending counts queued and in
 * flight, so the caller can wait for zero. */
void sophia_streams_drain(sophia_streams *s);

const char *sophia_stream_name(const sophia_stream *st);
/* 1 once the shutdown drain began (sources stop reading new entries). */
int sophia_stream_closing(const sophia_stream *st);
/* Queues `n` events (takes a reference to each) or none: returns 0 or
 * SOPHIA_EBUSY when they do not all fit. `source` is "http", ... */
int sophia_stream_accept(sophia_stream *st, json_t *const *events, size_t n,
                         const char *source);
/* Queues one event with a source id and an ack callback (may be NULL);
 * takes a reference to `ev`. 0 or SOPHIA_EBUSY. */
int sophia_stream_accept_one(sophia_stream *st, json_t *ev, const char *source,
                             const char *id, sophia_stream_ack_fn ack,
                             void *ack_arg);
/* 1 when HTTP and webhook ingest must append to Redis first (durable.h);
 * *du is then the appender, or NULL when it could not start. */
struct sophia_durable;
int sophia_stream_durable(const sophia_stream *st, struct sophia_durable **du);
/* Free queue slots now (sources pause reading when this is low). */
size_t sophia_stream_room(const sophia_stream *st);
/* Counts events a source refused for lack of room (e.g. StatsD). */
void sophia_stream_count_rejected(sophia_stream *st, size_t n);
/* Counts a request refused at its head (sophia_accept_has_room). */
void sophia_stream_count_refused_early(sophia_stream *st);
void sophia_stream_get_stats(const sophia_stream *st, sophia_stream_stats *out);
/* The dead letters kept in memory, oldest first: [{id, reason, attempts,
 * at_ms, event}] (new reference). */
json_t *sophia_stream_dead_json(const sophia_stream *st);
/* The stream's non-HTTP sources for /api/stats: {"redis":{…},"statsd":{…}}
 * (only those configured; an empty object when none). */
json_t *sophia_stream_sources_json(const sophia_stream *st);
/* The stream's StatsD source, or NULL when it has none (running). */
struct sophia_statsd;
const struct sophia_statsd *sophia_stream_statsd(const sophia_stream *st);

/* stream_stats.c: each figure of sophia_stream_stats declared once
 * (lib/statdef.h). The /api/stats `streams` object ({name: {...}}, new
 * reference), and the sophia_stream_* and sophia_statsd_* lines of
 * /metrics, one sample per stream (stream="name"). `s` may be NULL. */
extern const sophia_statdef sophia_stream_statdefs[];
extern const size_t sophia_stream_nstatdefs;
json_t *sophia_streams_stats_json(const sophia_streams *s);
void sophia_streams_write_prom(const sophia_streams *s, FILE *f);

#endif
