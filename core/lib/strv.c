/*
 * strv - see strv.h.
 */
#include "lib/strv.h"

#include <stdlib.h>
#include <string.h>

char **sophia_strv_dup(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    char **out = calloc(n + 1, sizeof(*out));
    for (size_t i = 0; out && i < n; i++) {
        if (!(out[i] = strdup(v[i]))) {
            sophia_strv_free(out);
            return NULL;
        }
    }
    return out;
}

void sophia_strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}
