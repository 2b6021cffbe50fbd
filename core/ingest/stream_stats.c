/*
 * stream_stats - the streams' figures, each declared once (lib/statdef.h):
 * the /api/stats `streams` object and the sophia_stream_* and
 * sophia_statsd_* families of /metrics are both written from the tables
 * below, one row per stream. Only the public accessors of stream.h are
 * used, so the queue's code (stream.c) does not carry its exposition.
 *
 * The table is in /metrics order (a name's samples for every stream,
 * then the next name); /api/stats keys follow it, then the non-figure
 * members (sources, dead_reasons, dead_letters).
 */
#include "ingest/stream.h"

#include <stddef.h>
#include <stdlib.h>

#include "ingest/statsd.h"

#define OFF(f) offsetof(sophia_stream_stats, f)
#define COUNTER(key, name, help, f) \
    SOPHIA_STATDEF(key, name, "counter", NULL, help, OFF(f))

const sophia_statdef sophia_stream_statdefs[] = {
    COUNTER("received", "sophia_stream_events_received_total",
            "Events accepted into the stream queue.", received),
    COUNTER("processed", "sophia_stream_events_processed_total",
            "Events processed with their actions applied.", processed),
    COUNTER("dropped", "sophia_stream_events_dropped_total",
            "Events the processor dropped.", dropped),
    COUNTER("failed", "sophia_stream_events_failed_total",
            "Events that failed processing.", failed),
    COUNTER("rejected", "sophia_stream_events_rejected_total",
            "Events refused because the queue was full.", rejected),
    COUNTER("refused_early", "sophia_stream_requests_refused_early_total",
            "Requests refused at their head, the queue full before their "
            "body was read (their events are not in rejected).", refused_early),
    COUNTER("filtered", "sophia_stream_events_filtered_total",
            "Events the stream's filter left out.", filtered),
    COUNTER("duplicates", "sophia_stream_events_duplicate_total",
            "Events skipped as duplicates inside the dedup window.", duplicates),
    COUNTER("retried", "sophia_stream_events_retried_total",
            "Deliveries that did not commit and will be tried again.", retried),
    COUNTER("dead", "sophia_stream_dead_letters_total",
            "Events sent to the stream's dead letter.", dead),
    SOPHIA_STATDEF("effect_failures", NULL, NULL, NULL, NULL, OFF(effect_failures)),
    SOPHIA_STATDEF("queued", "sophia_stream_queue_depth", "gauge", NULL,
     "Events waiting in the stream queue.", OFF(queued), .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("capacity", NULL, NULL, NULL, NULL, OFF(capacity),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("inflight", "sophia_stream_inflight", "gauge", NULL,
     "Events whose effects are not durable yet.", OFF(inflight),
     .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("retry_wait_ms", NULL, NULL, NULL, NULL, OFF(retry_wait_ms),
     .kind = SOPHIA_STAT_DOUBLE),
    SOPHIA_STATDEF("lag_ms", "sophia_stream_lag_seconds", "gauge", NULL,
     "Age of the oldest queued event.", OFF(lag_ms), .kind = SOPHIA_STAT_DOUBLE,
     .scale = 1e-3, .fmt = "%.6f"),
    SOPHIA_STATDEF("rate", "sophia_stream_rate", "gauge", NULL,
     "Events processed per second (10 s average).", OFF(rate),
     .kind = SOPHIA_STAT_DOUBLE, .fmt = "%.3f"),
};

const size_t sophia_stream_nstatdefs =
    sizeof(sophia_stream_statdefs) / sizeof(sophia_stream_statdefs[0]);

/* The `dead_reasons` object: the dead letters split by why. */
static const sophia_statdef dead_reasons[] = {
    SOPHIA_STATDEF("processor_error", NULL, NULL, NULL, NULL, OFF(dead_error)),
    SOPHIA_STATDEF("retry_exhausted", NULL, NULL, NULL, NULL, OFF(dead_retry)),
    SOPHIA_STATDEF("effect_exhausted", NULL, NULL, NULL, NULL, OFF(dead_effect)),
};

#define NDEFS(t) (sizeof(t) / sizeof((t)[0]))

/* A field added to sophia_stream_stats without a line above fails here
 * (every field is 8 bytes: uint64_t, size_t or double). */
_Static_assert(NDEFS(sophia_stream_statdefs) + NDEFS(dead_reasons) ==
                   sizeof(sophia_stream_stats) / sizeof(uint64_t),
               "every sophia_stream_stats field is declared once above");

static json_t *stream_json(const sophia_stream *st)
{
    sophia_stream_stats s;
    sophia_stream_get_stats(st, &s);
    json_t *o = sophia_statdef_json(sophia_stream_statdefs,
                                    sophia_stream_nstatdefs, &s);
    json_object_set_new(o, "sources", sophia_stream_sources_json(st));
    json_object_set_new(o, "dead_reasons",
                        sophia_statdef_json(dead_reasons, NDEFS(dead_reasons), &s));
    json_object_set_new(o, "dead_letters", sophia_stream_dead_json(st));
    return o;
}

json_t *sophia_streams_stats_json(const sophia_streams *s)
{
    json_t *o = json_object();
    for (size_t i = 0; s && i < sophia_streams_count(s); i++) {
        const sophia_stream *st = sophia_streams_at(s, i);
        json_object_set_new(o, sophia_stream_name(st), stream_json(st));
    }
    return o;
}

static const char *const stream_label[] = {"stream"};

/* The StatsD sources' family: a row for each stream that has one. */
static void write_statsd(const sophia_streams *s, FILE *f, size_t n,
                         const char **names, sophia_stat_row *rows)
{
    sophia_statsd_stats *st = calloc(n ? n : 1, sizeof(*st));
    size_t k = 0;
    for (size_t i = 0; st && i < n; i++) {
        const sophia_stream *one = sophia_streams_at(s, i);
        const struct sophia_statsd *sd = sophia_stream_statsd(one);
        if (!sd)
            continue;
        sophia_statsd_get_stats(sd, &st[k]);
        names[k] = sophia_stream_name(one);
        rows[k] = (sophia_stat_row){&names[k], &st[k]};
        k++;
    }
    sophia_statdef_prom_family(f, sophia_statsd_statdefs, sophia_statsd_nstatdefs,
                               stream_label, 1, rows, k);
    free(st);
}

void sophia_streams_write_prom(const sophia_streams *s, FILE *f)
{
    size_t n = s ? sophia_streams_count(s) : 0;
    sophia_stream_stats *st = calloc(n ? n : 1, sizeof(*st));
    const char **names = calloc(n ? n : 1, sizeof(*names));
    sophia_stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!st || !names || !rows)
        n = 0; /* out of memory: the heads alone */
    for (size_t i = 0; i < n; i++) {
        const sophia_stream *one = sophia_streams_at(s, i);
        sophia_stream_get_stats(one, &st[i]);
        names[i] = sophia_stream_name(one);
        rows[i] = (sophia_stat_row){&names[i], &st[i]};
    }
    sophia_statdef_prom_family(f, sophia_stream_statdefs, sophia_stream_nstatdefs,
                               stream_label, 1, rows, n);
    write_statsd(s, f, n, names, rows);
    free(st);
    free(names);
    free(rows);
}
