/*
 * statdef - one declaration per figure, both outputs generated from it.
 *
 * A module keeps its counters in a plain struct of uint64_t and declares
 * each field once in a table: its /api/stats key, its Prometheus name,
 * type and help, and where it lives in the struct. /api/stats and
 * /metrics are then written from the same table, so a figure cannot be
 * added to one and forgotten in the other, or named twice differently
 * by hand. This is how Prometheus client libraries work: a metric is
 * declared once and every exposition is made from the declaration.
 *
 * Several fields may share one Prometheus name with a label each (e.g.
 * result="ok" / result="failed"): consecutive rows with the same `prom`
 * get one HELP/TYPE head. A row without `prom` is in /api/stats only; one
 * without `json` in /metrics only.
 */
#ifndef SOPHIA_STATDEF_H
#define SOPHIA_STATDEF_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

typedef struct sophia_statdef {
    const char *json;  /* /api/stats key, or NULL */
    const char *prom;  /* Prometheus name, or NULL */
    const char *type;  /* "counter" or "gauge" */
    const char *label; /* `name="value"` told apart under `prom`, or NULL */
    const char *help;  /* HELP text (on the first row of a name) */
    size_t off;        /* offsetof the uint64_t in the stats struct */
} sophia_statdef;

/* {"json key": value, ...} in table order (a new reference). */
json_t *sophia_statdef_json(const sophia_statdef *defs, size_t n,
                            const void *stats);
/* The /metrics lines; `labels` (e.g. `stream="s"`, or NULL) is put in
 * front of each row's own label. */
void sophia_statdef_prom(FILE *f, const sophia_statdef *defs, size_t n,
                         const void *stats, const char *labels);

#endif
