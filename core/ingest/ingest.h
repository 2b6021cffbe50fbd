/*
 * ingest - turning an HTTP body into events.
 *
 * A body is one JSON object, a JSON array of objects, or NDJSON (objects
 * one after another, separated by whitespace). Parsing is all-or-nothing:
 * any error rejects the whole body, with the line, column and byte offset
 * where it was found, so a client can fix and resend it without wondering
 * which half got in. A fast in-place parser builds the jansson values
 * of valid bodies; anything else goes to jansson, which words the error.
 */
#ifndef SOPHIA_INGEST_H
#define SOPHIA_INGEST_H

#include <jansson.h>
#include <stddef.h>

typedef struct sophia_parse_error {
    char text[200];
    int line;      /* 1-based */
    int column;    /* 1-based, in bytes */
    size_t offset; /* 0-based byte offset */
} sophia_parse_error;

/* Where one event's JSON text is in its body: body[off, off + len). */
typedef struct sophia_ingest_span {
    size_t off, len;
} sophia_ingest_span;

/* Returns a new JSON array holding every event, or NULL with *err set. */
json_t *sophia_ingest_parse(const char *body, size_t len,
                            sophia_parse_error *err);
/* The same, and when `spans` is given: *spans = a malloc'd array with
 * each event's text in the body (a JSON text on its own that parses to
 * that event), or NULL when the body took the jansson path (or out of
 * memory). A durable stream appends that text instead of encoding the
 * event again (durable.c). */
json_t *sophia_ingest_parse_spans(const char *body, size_t len,
                                  sophia_parse_error *err,
                                  sophia_ingest_span **spans);
/* The fast path of sophia_ingest_parse alone (see ingest.c): the events of
 * a valid body, or NULL when it gives up - an invalid body, or one it
 * leaves to jansson. Exposed for tests. */
json_t *sophia_ingest_parse_fast(const char *body, size_t len);
/* With each event's span (see sophia_ingest_parse_spans), or NULL. */
json_t *sophia_ingest_parse_fast_spans(const char *body, size_t len,
                                       sophia_ingest_span **spans);

#endif
