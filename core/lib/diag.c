/*
 * diag - see diag.h. A growable array of formatted lines; nothing clever.
 */
#include "lib/diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void sophia_diag_init(sophia_diag *d)
{
    memset(d, 0, sizeof(*d));
}

void sophia_diag_free(sophia_diag *d)
{
    for (size_t i = 0; i < d->count; i++)
        free(d->lines[i]);
    free(d->lines);
    memset(d, 0, sizeof(*d));
}

void sophia_diag_add(sophia_diag *d, const char *file, int line, int col,
                     const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **lines = realloc(d->lines, cap * sizeof(*lines));
        if (!lines)
            return;
        d->lines = lines;
        d->cap = cap;
    }
    size_t n = strlen(msg) + (file ? strlen(file) : 1) + 48;
    char *s = malloc(n);
    if (!s)
        return;
    snprintf(s, n, "%s:%d:%d: %s", file ? file : "-", line, col, msg);
    d->lines[d->count++] = s;
}

void sophia_diag_print(const sophia_diag *d, FILE *out)
{
    for (size_t i = 0; i < d->count; i++)
        fprintf(out, "%s\n", d->lines[i]);
}

char *sophia_diag_join(const sophia_diag *d)
{
    if (d->count == 0)
        return NULL;
    size_t n = 1;
    for (size_t i = 0; i < d->count; i++)
        n += strlen(d->lines[i]) + 1;
    char *s = malloc(n), *p = s;
    if (!s)
        return NULL;
    for (size_t i = 0; i < d->count; i++) {
        size_t l = strlen(d->lines[i]);
        memcpy(p, d->lines[i], l);
        p += l;
        *p++ = i + 1 < d->count ? '\n' : '\0';
    }
    return s;
}
