/*
 * jsonw - a fast compact JSON writer for jansson values.
 *
 * The event path encodes every update at least twice (the L1 value, the
 * WebSocket frame), and json_dumps() was a third of the daemon's CPU
 * under ingest load: per container it builds a "%p" key with snprintf and
 * puts it in a hash table to detect cycles, and it emits each token
 * through a callback into a growing buffer. This writer walks the tree
 * directly into one buffer, bounds depth instead of tracking parents (a
 * jansson tree built through our APIs has no cycles; a depth cap turns a
 * pathological one into an error, not a stack overflow), formats integers
 * by hand and keeps snprintf only for reals.
 *
 * The output is byte-for-byte what json_dumps(v, JSON_COMPACT |
 * JSON_ENCODE_ANY) produces (tests/unit/test_jsonw.c compares them on
 * generated trees), so a caller can switch without any reader noticing:
 * reals as "%.17g" with ".0" added to integral values and the exponent
 * trimmed, strings escaped the same way, object keys in insertion order.
 *
 * sophia_jsonw_append() writes into a caller-owned buffer, so a message
 * envelope (e.g. a WebSocket frame around an already encoded `data`) can
 * be built without a second copy.
 */
#ifndef SOPHIA_JSONW_H
#define SOPHIA_JSONW_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sophia_jsonw {
    char *p;      /* malloc'd, NUL-terminated once anything was written */
    size_t len;   /* bytes written, without the NUL */
    size_t cap;
    int failed;   /* out of memory or too deep: the text is unusable */
    int fixed;    /* p is the caller's, cap bytes: never grown or freed */
} sophia_jsonw;

/* Nesting deeper than this is refused (failed = 1). */
#define SOPHIA_JSONW_MAX_DEPTH 512

/* Appends the compact encoding of `v`; 0, or -1 (and w->failed). */
int sophia_jsonw_append(sophia_jsonw *w, const json_t *v);
/* Appends raw bytes (envelope punctuation, pre-encoded parts). */
int sophia_jsonw_raw(sophia_jsonw *w, const char *s, size_t n);
/* `v` in decimal into buf (at least 21 bytes), NUL-terminated; its
 * length. For hot paths that would otherwise snprintf one number. */
size_t sophia_fmt_u64(char *buf, uint64_t v);
/* Appends `v` in decimal (a sequence number, a count). */
int sophia_jsonw_u64(sophia_jsonw *w, uint64_t v);
/* Appends `s` as a JSON string literal, quotes included. */
int sophia_jsonw_str(sophia_jsonw *w, const char *s, size_t n);
/* Takes the text (malloc'd, caller frees) and resets `w`; NULL when
 * failed. *len (optional) gets its length. */
char *sophia_jsonw_take(sophia_jsonw *w, size_t *len);
/* Empties `w` for reuse, keeping its buffer. */
void sophia_jsonw_clear(sophia_jsonw *w);
/* Frees what `w` holds and resets it. */
void sophia_jsonw_reset(sophia_jsonw *w);

/* v's compact encoding into buf (cap bytes, NUL-terminated) like
 * snprintf: its length, which is >= cap when buf was too small (buf's
 * content is then of no use); 0 when v cannot be encoded. No allocation
 * when it fits. */
size_t sophia_json_write(const json_t *v, char *buf, size_t cap);
/* json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY), faster: malloc'd text
 * (free()), or NULL when out of memory or nested too deep. */
char *sophia_json_encode(const json_t *v, size_t *len);

#endif
