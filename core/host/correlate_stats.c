/*
 * correlate_stats - each figure of a correlator instance (correlate.h's
 * sophia_correlate_stats) declared once, for /api/stats `correlators`
 * and /metrics (lib/statdef.h): one object, and one sample, per instance.
 */
#include <stdlib.h>

#include "host/correlate_priv.h"
#include "lib/statdef.h"

#define OFF(f) offsetof(sophia_correlate_stats, f)

static const sophia_statdef corr_statdefs[] = {
    SOPHIA_STATDEF("observed", "sophia_correlator_events_observed_total",
                   "counter", NULL, "Events given to a correlator's observe().",
                   OFF(observed)),
    SOPHIA_STATDEF("failed", "sophia_correlator_events_failed_total",
                   "counter", NULL, "observe() calls that returned an error.",
                   OFF(failed)),
    SOPHIA_STATDEF("missed", "sophia_correlator_events_missed_total",
                   "counter", NULL,
                   "Events not observed: the start-up buffer was full.",
                   OFF(missed)),
    SOPHIA_STATDEF("alerts", "sophia_correlator_alerts_total", "counter",
                   NULL, "Alerts a correlator's observe() raised.",
                   OFF(alerts)),
    SOPHIA_STATDEF("open_keys", "sophia_correlator_open_keys", "gauge", NULL,
                   "Keys in the correlator's Redis hash (per-key "
                   "persistence; 0 otherwise).",
                   OFF(open_keys), .kind = SOPHIA_STAT_I64),
    SOPHIA_STATDEF("persist_writes", "sophia_correlator_persist_writes_total",
                   "counter", NULL,
                   "State writes answered: pipelined batches (per key) or "
                   "snapshots (whole state).",
                   OFF(writes)),
    SOPHIA_STATDEF("persist_keys_written",
                   "sophia_correlator_persist_keys_written_total", "counter",
                   NULL, "Keys set in Redis by those writes.",
                   OFF(keys_written)),
    SOPHIA_STATDEF("persist_keys_deleted",
                   "sophia_correlator_persist_keys_deleted_total", "counter",
                   NULL, "Keys deleted from Redis (closed, expired, evicted).",
                   OFF(keys_deleted)),
    SOPHIA_STATDEF("persist_bytes", "sophia_correlator_persist_bytes_total",
                   "counter", NULL, "State bytes written to Redis.",
                   OFF(bytes)),
    SOPHIA_STATDEF("persist_errors", "sophia_correlator_persist_errors_total",
                   "counter", NULL, "State writes that failed (sent again).",
                   OFF(errors)),
    SOPHIA_STATDEF("last_persist_ms", "sophia_correlator_last_persist_seconds",
                   "gauge", NULL,
                   "The last write: batch sent to answered (per key), or "
                   "export_state on the loop (whole state).",
                   OFF(last_persist_ms), .kind = SOPHIA_STAT_DOUBLE,
                   .scale = 1e-3),
    SOPHIA_STATDEF("dirty", "sophia_correlator_dirty_keys", "gauge", NULL,
                   "Keys changed and not sent to Redis yet.", OFF(dirty),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("per_key", NULL, NULL, NULL,
                   "Persisted key by key (SDK 1.3), else whole state.",
                   OFF(per_key), .kind = SOPHIA_STAT_BOOL),
    SOPHIA_STATDEF("restoring", "sophia_correlator_restoring", "gauge", NULL,
                   "1 while its state is read from Redis at start-up (its "
                   "events wait).",
                   OFF(restoring), .kind = SOPHIA_STAT_BOOL),
};

#define NDEFS (sizeof(corr_statdefs) / sizeof(corr_statdefs[0]))

static sophia_correlate_stats stats_of(const corr *c)
{
    sophia_correlate_stats st = c->st;
    st.dirty = c->dirty ? sophia_dict_size(c->dirty) : 0;
    st.restoring = c->loading;
    return st;
}

json_t *sophia_correlate_stats_json(const sophia_correlate *k)
{
    json_t *all = json_object();
    for (size_t i = 0; all && k && i < k->n; i++) {
        sophia_correlate_stats st = stats_of(&k->v[i]);
        json_object_set_new(all, k->v[i].inst->name,
                            sophia_statdef_json(corr_statdefs, NDEFS, &st));
    }
    return all;
}

void sophia_correlate_write_prom(const sophia_correlate *k, FILE *f)
{
    static const char *const label[] = {"instance"};
    size_t n = k ? k->n : 0;
    sophia_correlate_stats *st = calloc(n ? n : 1, sizeof(*st));
    const char **names = calloc(n ? n : 1, sizeof(*names));
    sophia_stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!st || !names || !rows)
        n = 0; /* out of memory: the heads alone */
    for (size_t i = 0; i < n; i++) {
        st[i] = stats_of(&k->v[i]);
        names[i] = k->v[i].inst->name;
        rows[i] = (sophia_stat_row){&names[i], &st[i]};
    }
    sophia_statdef_prom_family(f, corr_statdefs, NDEFS, label, 1, rows, n);
    free(st);
    free(names);
    free(rows);
}
