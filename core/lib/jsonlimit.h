/*
 * jsonlimit - a cheap pre-scan that refuses JSON nested deeper than a
 * bound before jansson parses it.
 *
 * jansson's parser recurses once per nesting level and only stops at its
 * compiled-in depth of 2048; a body of 100,000 '[' would still build a
 * deep tree for nothing, and code that walks a parsed value recursively
 * (filters, encoders, plugins) would pay for it again. Nobody's events or
 * WebSocket messages nest 64 deep, so ingest bodies and client messages
 * are scanned first: one pass, no allocation, strings skipped (a bracket
 * inside a string is text, an escaped quote does not end one).
 */
#ifndef SOPHIA_JSONLIMIT_H
#define SOPHIA_JSONLIMIT_H

#include <stddef.h>

/* Deepest nesting of arrays/objects an ingest body or WS message may have. */
#define SOPHIA_JSON_MAX_DEPTH 64

/* 0 when no value in `s` (one JSON text, or several back to back as in
 * NDJSON) nests deeper than `max`; else 1 + the byte offset of the first
 * bracket that goes one level too deep. Malformed input is left to the
 * parser: unbalanced closers just do not go below zero. */
size_t sophia_json_too_deep(const char *s, size_t len, size_t max);

#endif
