/*
 * diag - collected configuration problems, each as `FILE:LINE:COL: message`.
 *
 * Validation keeps going after the first problem so an operator sees every
 * mistake in one run of `sophiad --check`; callers add to a diag and print
 * it once at the end.
 */
#ifndef SOPHIA_DIAG_H
#define SOPHIA_DIAG_H

#include <stddef.h>
#include <stdio.h>

typedef struct sophia_diag {
    char **lines;
    size_t count;
    size_t cap;
} sophia_diag;

void sophia_diag_init(sophia_diag *d);
void sophia_diag_free(sophia_diag *d);
/* Adds "file:line:col: message"; line/col are 1-based (0 = unknown). */
void sophia_diag_add(sophia_diag *d, const char *file, int line, int col,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void sophia_diag_print(const sophia_diag *d, FILE *out);
/* All lines joined with "\n" (caller frees), or NULL when empty. */
char *sophia_diag_join(const sophia_diag *d);

#endif
