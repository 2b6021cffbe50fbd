/*
 * accept - taking a body's events into a stream, and saying how it went.
 *
 * The one way in for POST /ingest/{stream} and the webhooks. A stream
 * takes events into its memory queue, or, when it is durable (durable.h),
 * appends them to its Redis Stream first; either way all of a body or
 * none of it. The ingest layer knows nothing of HTTP: it reports a
 * verdict through a callback, and the caller (core/http/api_ingest.c)
 * words the answer. So the request never travels below the http layer.
 *
 * A verdict says what happened and what kind of refusal it was, not what
 * to send: `retry_after_s > 0` means "unavailable now, retry later" (the
 * http layer answers 503 with Retry-After), 0 on a refusal means the
 * daemon failed (500).
 */
#ifndef SOPHIA_ACCEPT_H
#define SOPHIA_ACCEPT_H

#include <jansson.h>
#include <stddef.h>

#include "ingest/ingest.h"

struct sophia_stream;

typedef enum sophia_accept_outcome {
    SOPHIA_ACCEPTED = 0,        /* every event is in: queued, or in Redis */
    SOPHIA_REFUSED_FULL,        /* the queue (memory) or the backlog
                                 * (durable) cannot take them all */
    SOPHIA_REFUSED_UNAVAILABLE, /* durable: its Redis Stream cannot be
                                 * written now */
    SOPHIA_REFUSED_NOT_STARTED, /* durable: its Redis source did not start */
    SOPHIA_REFUSED_NOMEM        /* out of memory */
} sophia_accept_outcome;

typedef struct sophia_accept_verdict {
    sophia_accept_outcome outcome;
    size_t n;           /* events offered; all of them when accepted */
    int durable;        /* 1: the stream appends to Redis first */
    int retry_after_s;  /* > 0: a retry after that long may succeed */
    const char *stream; /* the stream's name */
    const char *key;    /* durable and started: the Redis Stream key */
} sophia_accept_verdict;

/* Called exactly once per sophia_accept*, possibly before it returns;
 * `v` is valid during the call only. */
typedef void (*sophia_accept_fn)(void *arg, const sophia_accept_verdict *v);

/* Offers the events of `events` (a JSON array, borrowed) to `st`;
 * `source` is "http", "hook", ... */
void sophia_accept(struct sophia_stream *st, json_t *events,
                   const char *source, sophia_accept_fn done, void *arg);
/* The same for events parsed from `body` with their texts' `spans`
 * (sophia_ingest_parse_spans; NULL: not known), which a durable stream
 * appends as they are instead of encoding the events again. */
void sophia_accept_body(struct sophia_stream *st, json_t *events,
                        const char *body, const sophia_ingest_span *spans,
                        const char *source, sophia_accept_fn done, void *arg);
/* One event with a source id (a memory stream keeps it with the event;
 * see sophia_stream_accept_one). A memory stream's refusal is always
 * SOPHIA_REFUSED_FULL with retry_after_s 1. */
void sophia_accept_one(struct sophia_stream *st, json_t *ev,
                       const char *source, const char *id,
                       sophia_accept_fn done, void *arg);
/* At a request's head, before its body is read: 1 when `st` could take
 * an event now; else 0 and *v the refusal any body would get (n 0: how
 * many events is not known yet), so a full stream answers 503 without
 * reading and parsing what it would refuse (counted as refused_early). */
int sophia_accept_has_room(struct sophia_stream *st, sophia_accept_verdict *v);

#endif
