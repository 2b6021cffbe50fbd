/*
 * host_json - see host_json.h. Moved out of host.c so that the table's
 * JSON half (pure functions over jansson) and its action half (the
 * context, publishing, the cache) change independently.
 */
#include "host/host_json.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "lib/jsonpath.h"
#include "lib/jsonw.h"

#define J(v) ((json_t *)(v))
#define CJ(v) ((const json_t *)(v))

/* ----------------------------------------------------------- JSON read */

sophia_json_type host_json_type(const sophia_json *v)
{
    switch (v ? json_typeof(CJ(v)) : JSON_NULL) {
    case JSON_OBJECT:
        return SOPHIA_JSON_OBJECT;
    case JSON_ARRAY:
        return SOPHIA_JSON_ARRAY;
    case JSON_STRING:
        return SOPHIA_JSON_STRING;
    case JSON_INTEGER:
    case JSON_REAL:
        return SOPHIA_JSON_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE:
        return SOPHIA_JSON_BOOL;
    default:
        return v ? SOPHIA_JSON_NULL : SOPHIA_JSON_MISSING;
    }
}

const sophia_json *host_json_get(const sophia_json *v, const char *path)
{
    return (const sophia_json *)sophia_json_path(CJ(v), path);
}

const char *host_json_string(const sophia_json *v)
{
    return json_string_value(CJ(v));
}

double host_json_number(const sophia_json *v, double def)
{
    return json_is_number(CJ(v)) ? json_number_value(CJ(v)) : def;
}

int host_json_bool(const sophia_json *v, int def)
{
    return json_is_boolean(CJ(v)) ? json_is_true(CJ(v)) : def;
}

size_t host_json_size(const sophia_json *v)
{
    if (json_is_array(CJ(v)))
        return json_array_size(CJ(v));
    return json_is_object(CJ(v)) ? json_object_size(CJ(v)) : 0;
}

const sophia_json *host_json_at(const sophia_json *v, size_t i)
{
    return (const sophia_json *)json_array_get(CJ(v), i);
}

const char *host_json_key_at(const sophia_json *v, size_t i,
                                    const sophia_json **value)
{
    /* jansson keeps insertion order; walking is O(i), fine for the small
     * objects events carry. */
    const char *key;
    json_t *val;
    size_t k = 0;
    json_object_foreach(J(v), key, val) {
        if (k++ == i) {
            if (value)
                *value = (const sophia_json *)val;
            return key;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------- JSON build */

sophia_json *host_json_object(void) { return (sophia_json *)json_object(); }
sophia_json *host_json_array(void) { return (sophia_json *)json_array(); }
sophia_json *host_json_str(const char *s) { return (sophia_json *)json_string(s); }
sophia_json *host_json_num(double d) { return (sophia_json *)json_real(d); }
sophia_json *host_json_int(int64_t i) { return (sophia_json *)json_integer(i); }
sophia_json *host_json_bool_new(int b) { return (sophia_json *)json_boolean(b); }

sophia_json *host_json_copy(const sophia_json *v)
{
    return (sophia_json *)json_deep_copy(CJ(v));
}

int host_json_set(sophia_json *obj, const char *key, sophia_json *value)
{
    return json_object_set_new(J(obj), key, J(value)) ? SOPHIA_EINVAL : 0;
}

int host_json_append(sophia_json *arr, sophia_json *value)
{
    return json_array_append_new(J(arr), J(value)) ? SOPHIA_EINVAL : 0;
}

void host_json_free(sophia_json *v)
{
    json_decref(J(v));
}

char *host_json_dump(const sophia_json *v)
{
    return sophia_json_encode(CJ(v), NULL); /* = json_dumps, faster */
}

sophia_json *host_json_parse(const char *text)
{
    return text ? (sophia_json *)json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
}

void host_free(void *p)
{
    free(p);
}

/* ------------------------------------------------------- since SDK 1.1 */

/* One key, taken as it is: "a.b" is the member named "a.b", never a path,
 * so a map keyed by ids that contain dots can be read back. */
const sophia_json *host_json_get_key(const sophia_json *obj, const char *key)
{
    if (!json_is_object(CJ(obj)) || !key)
        return NULL;
    return (const sophia_json *)json_object_get(CJ(obj), key);
}

int host_json_del(sophia_json *obj, const char *key)
{
    if (!json_is_object(J(obj)) || !key)
        return SOPHIA_EINVAL;
    return json_object_del(J(obj), key) == 0 ? 0 : SOPHIA_ENOENT;
}

/* jansson's object iterator, one step per call: NULL starts, the returned
 * position continues, NULL is the end. json_key_at walks from the start
 * each time (O(i)); this is O(1) a step. */
void *host_json_iter(const sophia_json *obj, void *it, const char **key,
                     const sophia_json **value)
{
    if (!json_is_object(CJ(obj)))
        return NULL;
    void *next = it ? json_object_iter_next(J(obj), it)
                    : json_object_iter(J(obj));
    if (next) {
        if (key)
            *key = json_object_iter_key(next);
        if (value)
            *value = (const sophia_json *)json_object_iter_value(next);
    }
    return next;
}

/* ------------------------------------------------------- since SDK 1.4 */

size_t host_json_write(const sophia_json *v, char *buf, size_t cap)
{
    return sophia_json_write(CJ(v), buf, cap);
}
