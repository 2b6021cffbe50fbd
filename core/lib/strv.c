/*
 * strv - see strv.h.
 */
#include "lib/strv.h"

#include <string.h>

size_t sophia_strv_packed_size(const char *const *v)
{
    size_t n = 0, bytes = 0;
    for (; v && v[n]; n++)
        bytes += strlen(v[n]) + 1;
    return (n + 1) * sizeof(char *) + bytes;
}

char **sophia_strv_pack(void *mem, const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **out = mem, *o = (char *)(out + n + 1);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(v[i]) + 1;
        memcpy(o, v[i], l);
        out[i] = o;
        o += l;
    }
    out[n] = NULL;
    return out;
}
