/*
 * jsonpath - see jsonpath.h.
 */
#include "lib/jsonpath.h"

#include <stdlib.h>
#include <string.h>

const json_t *sophia_json_path(const json_t *v, const char *path)
{
    char seg[256];
    if (path && *path && json_is_object(v) && !strchr(path, '.'))
        return json_object_get(v, path); /* the common case: one key */
    while (v && path && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof(seg))
            return NULL;
        memcpy(seg, path, n);
        seg[n] = '\0';
        path += n + (path[n] == '.');
        if (json_is_object(v)) {
            v = json_object_get(v, seg);
        } else if (json_is_array(v)) {
            char *end;
            unsigned long i = strtoul(seg, &end, 10);
            v = *end || !*seg ? NULL : json_array_get(v, i);
        } else {
            return NULL;
        }
    }
    return v;
}
