/*
 * jsonpath - the one dotted-path lookup into a JSON value ("a.b.0.c":
 * object keys, array indexes), for a stream's dedup_key and filters and
 * for plugins (host->json_get). One rule everywhere: a segment is at most
 * 255 bytes, an array index is decimal digits only, and a key with no dot
 * in it is looked up as it is, whatever its length.
 */
#ifndef SOPHIA_JSONPATH_H
#define SOPHIA_JSONPATH_H

#include <jansson.h>

/* The value at `path` in `v` (borrowed), or NULL when absent. An empty
 * path is `v` itself. */
const json_t *sophia_json_path(const json_t *v, const char *path);

#endif
