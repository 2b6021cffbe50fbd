/*
 * output_stats - each figure of an output runner (output.h's
 * sophia_output_stats) declared once, for /api/stats and /metrics
 * (lib/statdef.h): one object, and one sample, per output instance.
 */
#include "host/output.h"

#include <stdlib.h>

#include "lib/statdef.h"

#define OFF(f) offsetof(sophia_output_stats, f)

static const sophia_statdef output_statdefs[] = {
    SOPHIA_STATDEF("delivered", "sophia_output_records_delivered_total",
                   "counter", NULL, "Records an output's deliver() took.",
                   OFF(delivered)),
    SOPHIA_STATDEF("failed", "sophia_output_records_failed_total", "counter",
                   NULL, "Records an output refused for good.", OFF(failed)),
    SOPHIA_STATDEF("dropped", "sophia_output_alerts_dropped_total", "counter",
                   NULL, "Alerts raised outside an event dropped: their "
                   "queue was full.", OFF(dropped)),
    SOPHIA_STATDEF("batches", "sophia_output_batches_total", "counter", NULL,
                   "deliver() calls, retries included.", OFF(batches)),
    SOPHIA_STATDEF("retries", "sophia_output_retries_total", "counter", NULL,
                   "Failed batches delivered again after a back-off.",
                   OFF(retries)),
    SOPHIA_STATDEF("queued", "sophia_output_queued", "gauge", NULL,
                   "Records waiting for a batch.", OFF(queued),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("inflight", "sophia_output_inflight", "gauge", NULL,
                   "Batches out or waiting to go again (max_inflight at "
                   "most).", OFF(inflight), .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("in_batch", "sophia_output_in_batch", "gauge", NULL,
                   "Records of the batches out or waiting to go again.",
                   OFF(in_batch), .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("attempt", "sophia_output_attempt", "gauge", NULL,
                   "Failed deliveries of the most tried batch out.",
                   OFF(attempt), .kind = SOPHIA_STAT_SIZE),
};

#define NDEFS (sizeof(output_statdefs) / sizeof(output_statdefs[0]))

_Static_assert(NDEFS == sizeof(sophia_output_stats) / sizeof(uint64_t),
               "every sophia_output_stats field is declared once above");

json_t *sophia_host_outputs_stats_json(const sophia_host_rt *rt)
{
    json_t *all = json_object();
    const char *name;
    sophia_output_stats st;
    for (size_t i = 0; all && sophia_host_output_stats_at(rt, i, &name, &st); i++)
        json_object_set_new(all, name,
                            sophia_statdef_json(output_statdefs, NDEFS, &st));
    return all;
}

void sophia_host_outputs_write_prom(const sophia_host_rt *rt, FILE *f)
{
    static const char *const label[] = {"instance"};
    size_t n = sophia_host_outputs_count(rt);
    sophia_output_stats *st = calloc(n ? n : 1, sizeof(*st));
    const char **names = calloc(n ? n : 1, sizeof(*names));
    sophia_stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!st || !names || !rows)
        n = 0; /* out of memory: the heads alone */
    for (size_t i = 0; i < n; i++) {
        sophia_host_output_stats_at(rt, i, &names[i], &st[i]);
        rows[i] = (sophia_stat_row){&names[i], &st[i]};
    }
    sophia_statdef_prom_family(f, output_statdefs, NDEFS, label, 1, rows, n);
    free(st);
    free(names);
    free(rows);
}
