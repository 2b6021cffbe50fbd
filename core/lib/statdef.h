/*
 * statdef - one declaration per figure, both outputs generated from it.
 *
 * A module keeps its figures in a plain struct and declares each field
 * once in a table: its /api/stats key, its Prometheus name, type and
 * help, where it lives in the struct and its C type. /api/stats and
 * /metrics are then written from the same table, so a figure cannot be
 * added to one and forgotten in the other, or named twice differently
 * by hand. This is how Prometheus client libraries work: a metric is
 * declared once and every exposition is made from the declaration.
 *
 * Several fields may share one Prometheus name with a label each (e.g.
 * result="ok" / result="failed"): consecutive rows with the same `prom`
 * get one HELP/TYPE head. A row without `prom` is in /api/stats only; one
 * without `json` in /metrics only; one without `type` has no head at all
 * (samples whose name is made at run time, e.g. plugin counters).
 *
 * A labelled family (one sample per stream, per cache tier, per plugin
 * instance) is the same table written over a list of rows, each its
 * label values and its own struct: sophia_statdef_prom_family writes
 * each name's head once, then a sample per row. /api/stats writes each
 * row's struct as its own object (sophia_statdef_json_row).
 *
 * The JSON value is the field as it is (an integer, a real, a boolean);
 * `scale` and `fmt` shape the /metrics value only, where Prometheus
 * wants base units (seconds) and the existing lines have their digits.
 */
#ifndef SOPHIA_STATDEF_H
#define SOPHIA_STATDEF_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* The C type of the field at `off`. 0 is uint64_t, so a table that does
 * not say stays what it was. */
typedef enum sophia_stat_kind {
    SOPHIA_STAT_U64 = 0,
    SOPHIA_STAT_SIZE,   /* size_t */
    SOPHIA_STAT_I64,    /* int64_t (a gauge that may go below zero) */
    SOPHIA_STAT_DOUBLE, /* double: a JSON real */
    SOPHIA_STAT_BOOL,   /* int: JSON true/false, /metrics 1/0 */
} sophia_stat_kind;

typedef struct sophia_statdef {
    const char *json;  /* /api/stats key, or NULL */
    const char *prom;  /* Prometheus name, or NULL */
    const char *type;  /* "counter", "gauge", "summary"; NULL: no head */
    const char *label; /* `name="value"` told apart under `prom`, or NULL */
    const char *help;  /* HELP text (on the first row of a name) */
    size_t off;        /* offsetof the field in the stats struct */
    sophia_stat_kind kind;
    double scale;      /* /metrics value = field * scale; 0: as is */
    const char *fmt;   /* /metrics printf format of a real value (a
                        * DOUBLE, or any scaled field); NULL: "%.17g" */
    unsigned only;     /* family rows that have this figure: bit i = row
                        * i (rows past 31 always); 0 = every row
                        * (e.g. entries only for L1) */
} sophia_statdef;

/* A row, the fields after `off` designated when set (.kind =, .scale =,
 * .fmt =, .only =): the others are zero, and -Wextra does not take a
 * shorter positional initializer for a forgotten field. */
#define SOPHIA_STATDEF(json_, prom_, type_, label_, help_, off_, ...)        \
    {.json = (json_), .prom = (prom_), .type = (type_), .label = (label_), \
     .help = (help_), .off = (off_), __VA_ARGS__}

/* One row of a labelled family: a value for each of the family's label
 * names (escaped when written), and the struct the table reads. */
typedef struct sophia_stat_row {
    const char *const *values;
    const void *stats;
} sophia_stat_row;

/* {"json key": value, ...} in table order (a new reference). */
json_t *sophia_statdef_json(const sophia_statdef *defs, size_t n,
                            const void *stats);
/* The same for row `row` of a family: figures whose `only` leaves it out
 * are not in the object. */
json_t *sophia_statdef_json_row(const sophia_statdef *defs, size_t n,
                                const void *stats, size_t row);
/* The /metrics lines; `labels` (e.g. `stream="s"`, or NULL) is put in
 * front of each row's own label. */
void sophia_statdef_prom(FILE *f, const sophia_statdef *defs, size_t n,
                         const void *stats, const char *labels);
/* A labelled family: for each name in `defs` (consecutive rows with the
 * same `prom`), its HELP/TYPE head, then for each of `rows` that has them
 * its samples, labelled names[0]="values[0]",... then the row's own
 * label. The head is written with no rows too, as the exposition of an
 * empty set. */
void sophia_statdef_prom_family(FILE *f, const sophia_statdef *defs, size_t n,
                                const char *const *names, size_t nnames,
                                const sophia_stat_row *rows, size_t nrows);
/* A label value as the text format wants it inside quotes. */
void sophia_statdef_escape(FILE *f, const char *s);

#endif
