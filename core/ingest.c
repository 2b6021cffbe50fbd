/*
 * ingest - see ingest.h.
 */
#include "ingest.h"

#include <stdio.h>
#include <string.h>

static size_t skip_ws(const char *s, size_t len, size_t pos)
{
    while (pos < len && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' ||
                         s[pos] == '\r'))
        pos++;
    return pos;
}

static json_t *fail(sophia_parse_error *err, const char *body, size_t off,
                    const char *text, json_t *events)
{
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (body[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(err->text, sizeof(err->text), "%s", text);
    err->line = line;
    err->column = col;
    err->offset = off;
    json_decref(events);
    return NULL;
}

/* Appends `v` (an object, or an array of objects) to events; takes v. */
static int add_value(json_t *events, json_t *v, char *why, size_t whylen)
{
    if (json_is_object(v)) {
        json_array_append_new(events, v);
        return 0;
    }
    if (!json_is_array(v)) {
        snprintf(why, whylen, "expected a JSON object or an array of objects");
        json_decref(v);
        return -1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_object(e)) {
            snprintf(why, whylen, "array element %zu is not a JSON object", i);
            json_decref(v);
            return -1;
        }
    }
    json_array_extend(events, v);
    json_decref(v);
    return 0;
}

json_t *sophia_ingest_parse(const char *body, size_t len,
                            sophia_parse_error *err)
{
    json_t *events = json_array();
    size_t pos = skip_ws(body, len, 0);
    if (pos == len)
        return fail(err, body, pos, "empty body: expected JSON", events);
    while (pos < len) {
        json_error_t je;
        json_t *v = json_loadb(body + pos, len - pos,
                               JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        if (!v) {
            size_t at = pos + (je.position > 0 ? (size_t)je.position - 1 : 0);
            return fail(err, body, at < len ? at : len, je.text, events);
        }
        char why[200];
        if (add_value(events, v, why, sizeof(why)) < 0)
            return fail(err, body, pos, why, events);
        pos = skip_ws(body, len, pos + (size_t)je.position);
    }
    return events;
}
