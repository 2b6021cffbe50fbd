/*
 * statdef - see statdef.h.
 */
#include "lib/statdef.h"

#include <stdint.h>
#include <string.h>

static uint64_t value_of(const sophia_statdef *d, const void *stats)
{
    uint64_t v;
    memcpy(&v, (const char *)stats + d->off, sizeof(v));
    return v;
}

json_t *sophia_statdef_json(const sophia_statdef *defs, size_t n,
                            const void *stats)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        if (defs[i].json)
            json_object_set_new(o, defs[i].json,
                                json_integer((json_int_t)value_of(&defs[i], stats)));
    return o;
}

void sophia_statdef_prom(FILE *f, const sophia_statdef *defs, size_t n,
                         const void *stats, const char *labels)
{
    const char *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const sophia_statdef *d = &defs[i];
        if (!d->prom)
            continue;
        if (!prev || strcmp(prev, d->prom) != 0)
            fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", d->prom, d->help,
                    d->prom, d->type);
        prev = d->prom;
        int l1 = labels && *labels, l2 = d->label != NULL;
        fprintf(f, "%s%s%s%s%s%s %llu\n", d->prom, l1 || l2 ? "{" : "",
                l1 ? labels : "", l1 && l2 ? "," : "", l2 ? d->label : "",
                l1 || l2 ? "}" : "", (unsigned long long)value_of(d, stats));
    }
}
