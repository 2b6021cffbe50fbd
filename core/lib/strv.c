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

size_t sophia_strv_packed_size_n(size_t n, const size_t *lens)
{
    size_t bytes = (n + 1) * sizeof(char *) + n;
    for (size_t i = 0; i < n; i++)
        bytes += lens[i];
    return bytes;
}

char **sophia_strv_pack_n(void *mem, const char *const *v, size_t n,
                          const size_t *lens)
{
    char **out = mem, *o = (char *)(out + n + 1);
    for (size_t i = 0; i < n; i++) {
        memcpy(o, v[i], lens[i] + 1);
        out[i] = o;
        o += lens[i] + 1;
    }
    out[n] = NULL;
    return out;
}
