/*
 * stream - named streams: a bounded queue of accepted events per stream,
 * drained on the loop into the stream's processor plugin.
 *
 * Acceptance is all-or-nothing per request: a body of N events is queued
 * only if all N fit, so a 503 never leaves half a body accepted. The
 * queue is drained a batch per stream per loop turn, so ingest, WebSocket
 * traffic and timers interleave with processing under load.
 */
#ifndef SOPHIA_STREAM_H
#define SOPHIA_STREAM_H

#include <jansson.h>
#include <stdint.h>

#include "config.h"
#include "plugin.h"

typedef struct sophia_stream sophia_stream;
typedef struct sophia_streams sophia_streams;

typedef struct sophia_stream_stats {
    uint64_t received;   /* accepted into the queue */
    uint64_t processed;  /* processor returned OK and actions applied */
    uint64_t dropped;    /* processor returned DROP */
    uint64_t failed;     /* ERROR, or RETRY past the attempt limit */
    uint64_t retried;
    uint64_t rejected;   /* refused at the door: queue full */
    size_t queued;       /* waiting now */
    size_t capacity;
    double rate;         /* processed per second, 10 s moving average */
    double lag_ms;       /* age of the oldest queued event */
} sophia_stream_stats;

struct event_base;

/* Builds every stream of `c`, bound to its processor in `plugins`. */
sophia_streams *sophia_streams_new(const sophia_conf *c,
                                   const sophia_plugin_set *plugins,
                                   struct event_base *base, sophia_diag *diag);
void sophia_streams_free(sophia_streams *s);

sophia_stream *sophia_streams_find(const sophia_streams *s, const char *name);
size_t sophia_streams_count(const sophia_streams *s);
sophia_stream *sophia_streams_at(const sophia_streams *s, size_t i);
/* Events waiting in all queues. */
size_t sophia_streams_pending(const sophia_streams *s);
/* Processes everything queued now, synchronously (shutdown drain). */
void sophia_streams_drain(sophia_streams *s);

const char *sophia_stream_name(const sophia_stream *st);
/* Queues `n` events (takes a reference to each) or none: returns 0 or
 * SOPHIA_EBUSY when they do not all fit. `source` is "http", ... */
int sophia_stream_accept(sophia_stream *st, json_t *const *events, size_t n,
                         const char *source);
void sophia_stream_get_stats(const sophia_stream *st, sophia_stream_stats *out);

#endif
