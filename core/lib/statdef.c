/*
 * statdef - see statdef.h.
 *
 * Every value is read through value_of into one of two shapes, a whole
 * number or a real, so each writer has two cases instead of one per C
 * type: integers print as integers (no rounding of large counters),
 * reals and scaled fields with the declaration's format.
 */
#include "lib/statdef.h"

#include <stdint.h>
#include <string.h>

typedef struct stat_value {
    int real;     /* 1: d holds it, else i (or u when is_u) */
    int boolean;
    int is_u;
    long long i;
    unsigned long long u;
    double d;
} stat_value;

static stat_value value_of(const sophia_statdef *d, const void *stats)
{
    const char *p = (const char *)stats + d->off;
    stat_value v = {0};
    switch (d->kind) {
    case SOPHIA_STAT_SIZE: {
        size_t x;
        memcpy(&x, p, sizeof(x));
        v.u = x;
        v.is_u = 1;
        break;
    }
    case SOPHIA_STAT_I64: {
        int64_t x;
        memcpy(&x, p, sizeof(x));
        v.i = (long long)x;
        break;
    }
    case SOPHIA_STAT_DOUBLE:
        memcpy(&v.d, p, sizeof(v.d));
        v.real = 1;
        break;
    case SOPHIA_STAT_BOOL: {
        int x;
        memcpy(&x, p, sizeof(x));
        v.i = x != 0;
        v.boolean = 1;
        break;
    }
    case SOPHIA_STAT_U64:
    default: {
        uint64_t x;
        memcpy(&x, p, sizeof(x));
        v.u = x;
        v.is_u = 1;
        break;
    }
    }
    return v;
}

static int has_row(const sophia_statdef *d, size_t row)
{
    return d->only == 0 || row >= sizeof(d->only) * 8 || (d->only >> row) & 1u;
}

static json_t *json_value(const sophia_statdef *d, const void *stats)
{
    stat_value v = value_of(d, stats);
    if (v.real)
        return json_real(v.d);
    if (v.boolean)
        return json_boolean(v.i);
    return json_integer(v.is_u ? (json_int_t)v.u : (json_int_t)v.i);
}

json_t *sophia_statdef_json_row(const sophia_statdef *defs, size_t n,
                                const void *stats, size_t row)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        if (defs[i].json && has_row(&defs[i], row))
            json_object_set_new(o, defs[i].json, json_value(&defs[i], stats));
    return o;
}

json_t *sophia_statdef_json(const sophia_statdef *defs, size_t n,
                            const void *stats)
{
    return sophia_statdef_json_row(defs, n, stats, SIZE_MAX);
}

void sophia_statdef_escape(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void write_head(FILE *f, const sophia_statdef *d)
{
    if (d->type)
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", d->prom,
                d->help ? d->help : "", d->prom, d->type);
}

static void write_value(FILE *f, const sophia_statdef *d, const void *stats)
{
    stat_value v = value_of(d, stats);
    if (!v.real && d->scale == 0) {
        if (v.is_u)
            fprintf(f, " %llu\n", v.u);
        else
            fprintf(f, " %lld\n", v.i);
        return;
    }
    double x = v.real ? v.d : v.is_u ? (double)v.u : (double)v.i;
    fputc(' ', f);
    fprintf(f, d->fmt ? d->fmt : "%.17g", d->scale != 0 ? x * d->scale : x);
    fputc('\n', f);
}

/* name{outer,own} value; `outer` is text already, or NULL. */
static void write_sample(FILE *f, const sophia_statdef *d, const void *stats,
                         const char *outer, const char *const *names,
                         const char *const *values, size_t nnames)
{
    int l1 = (outer && *outer) || nnames > 0, l2 = d->label != NULL;
    fputs(d->prom, f);
    if (l1 || l2)
        fputc('{', f);
    if (outer)
        fputs(outer, f);
    for (size_t k = 0; k < nnames; k++) {
        fprintf(f, "%s%s=\"", k ? "," : "", names[k]);
        sophia_statdef_escape(f, values[k]);
        fputc('"', f);
    }
    if (l2)
        fprintf(f, "%s%s", l1 ? "," : "", d->label);
    if (l1 || l2)
        fputc('}', f);
    write_value(f, d, stats);
}

/* How many rows from defs[i] on share its name. */
static size_t group_len(const sophia_statdef *defs, size_t n, size_t i)
{
    size_t j = i + 1;
    while (j < n && defs[j].prom && strcmp(defs[j].prom, defs[i].prom) == 0)
        j++;
    return j - i;
}

void sophia_statdef_prom(FILE *f, const sophia_statdef *defs, size_t n,
                         const void *stats, const char *labels)
{
    for (size_t i = 0; i < n;) {
        if (!defs[i].prom) {
            i++;
            continue;
        }
        size_t g = group_len(defs, n, i);
        write_head(f, &defs[i]);
        for (size_t k = i; k < i + g; k++)
            write_sample(f, &defs[k], stats, labels, NULL, NULL, 0);
        i += g;
    }
}

void sophia_statdef_prom_family(FILE *f, const sophia_statdef *defs, size_t n,
                                const char *const *names, size_t nnames,
                                const sophia_stat_row *rows, size_t nrows)
{
    for (size_t i = 0; i < n;) {
        if (!defs[i].prom) {
            i++;
            continue;
        }
        size_t g = group_len(defs, n, i);
        write_head(f, &defs[i]);
        for (size_t r = 0; r < nrows; r++)
            for (size_t k = i; k < i + g; k++)
                if (has_row(&defs[k], r))
                    write_sample(f, &defs[k], rows[r].stats, NULL, names,
                                 rows[r].values, nnames);
        i += g;
    }
}
