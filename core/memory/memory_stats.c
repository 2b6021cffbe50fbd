/*
 * memory_stats - the store's figures, each declared once (lib/statdef.h):
 * the /api/stats `memory` object and the sophia_memory_* lines of
 * /metrics are both written from the tables below, over a snapshot taken
 * on the loop (mem_figs). Three tables because /metrics puts the access
 * figures between the store's counters and the search latency; the
 * per-type counts are a family with one row per memory_type.
 */
#include "memory/memory_priv.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lib/statdef.h"

/* The loop's counters, copied with the latency quantiles made. */
typedef struct mem_figs {
    int64_t live;
    uint64_t stores, store_errors, searches, search_errors, feedbacks;
    uint64_t consolidations, merged, expired, rebuilds;
    size_t tombstones;
    int rebuilding;
    double p50_us, p99_us;
} mem_figs;

#define OFF(f) offsetof(mem_figs, f)
#define COUNTER(key, name, help, f)                                          \
    SOPHIA_STATDEF(key, name, "counter", NULL, help, OFF(f))
#define JSON_ONLY(key, f, ...) SOPHIA_STATDEF(key, NULL, NULL, NULL, NULL, OFF(f), __VA_ARGS__)

static const sophia_statdef store_figs[] = {
    JSON_ONLY("count", live, .kind = SOPHIA_STAT_I64),
    COUNTER("stores", "sophia_memory_stores_total", "Memories stored.", stores),
    JSON_ONLY("store_errors", store_errors),
    COUNTER("searches", "sophia_memory_searches_total",
            "Memory searches answered.", searches),
    JSON_ONLY("search_errors", search_errors),
    COUNTER("feedback", "sophia_memory_feedback_total", "Feedback calls.",
            feedbacks),
    COUNTER("consolidations", "sophia_memory_consolidations_total",
            "Consolidator runs.", consolidations),
    COUNTER("merged", "sophia_memory_merged_total",
            "Memories merged into another.", merged),
    COUNTER("expired", "sophia_memory_expired_total",
            "Memories expired by retention.", expired),
    COUNTER("rebuilds", "sophia_memory_index_rebuilds_total",
            "Index builds (start and background).", rebuilds),
    JSON_ONLY("tombstones", tombstones, .kind = SOPHIA_STAT_SIZE),
    JSON_ONLY("rebuilding", rebuilding, .kind = SOPHIA_STAT_BOOL),
};

#define STR_(x) #x
#define STR(x) STR_(x)

static const sophia_statdef latency_figs[] = {
    SOPHIA_STATDEF("p50_us", "sophia_memory_search_seconds", "gauge",
                   "quantile=\"0.5\"",
                   "Search latency quantiles (last " STR(MEM_LAT_RING) " searches).",
                   OFF(p50_us), .kind = SOPHIA_STAT_DOUBLE, .scale = 1e-6,
                   .fmt = "%.6f"),
    SOPHIA_STATDEF("p99_us", "sophia_memory_search_seconds", "gauge",
                   "quantile=\"0.99\"", NULL, OFF(p99_us),
                   .kind = SOPHIA_STAT_DOUBLE, .scale = 1e-6, .fmt = "%.6f"),
};

#undef OFF
#define OFF(f) offsetof(mem_access_stats, f)

/* The `access` object ({} when access patterns are off). */
static const sophia_statdef access_figs[] = {
    COUNTER("reads", "sophia_memory_access_reads_total",
            "Cache reads naming a dashboard or user.", reads),
    JSON_ONLY("remembered", remembered),
    JSON_ONLY("pending", pending, .kind = SOPHIA_STAT_SIZE),
    JSON_ONLY("dropped", dropped),
    COUNTER("warmed", "sophia_memory_access_warmed_total",
            "Keys promoted into L1 by access-pattern warming.", warmed),
    JSON_ONLY("warm_runs", warm_runs),
};

/* Per memory_type: sophia_memory_count{type="..."}. */
static const sophia_statdef type_figs[] = {
    SOPHIA_STATDEF(NULL, "sophia_memory_count", "gauge", NULL,
                   "Live memories per type.", 0, .kind = SOPHIA_STAT_I64),
};

#define NDEFS(t) (sizeof(t) / sizeof((t)[0]))

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void latency_quantiles(const sophia_memory *m, double *p50, double *p99)
{
    double v[MEM_LAT_RING];
    size_t n = m->nlat;
    memcpy(v, m->lat_us, n * sizeof(double));
    qsort(v, n, sizeof(double), dcmp);
    *p50 = n ? v[(size_t)(0.50 * (double)(n - 1))] : 0;
    *p99 = n ? v[(size_t)(0.99 * (double)(n - 1))] : 0;
}

static mem_figs figs_of(const sophia_memory *m)
{
    mem_figs f = {m->live, m->stores, m->store_errors, m->searches,
                  m->search_errors, m->feedbacks, m->consolidations,
                  m->merged, m->expired, m->rebuilds, m->tombstones,
                  m->rebuild_running, 0, 0};
    latency_quantiles(m, &f.p50_us, &f.p99_us);
    return f;
}

/* Each consolidator's cursor: where its pass is (the last id looked at;
 * 0 = at the start), the passes it completed and the last one's length. */
static json_t *cons_json(const sophia_memory *m)
{
    json_t *o = json_object();
    for (size_t i = 0; i < m->ncons; i++) {
        const mem_consolidator *c = &m->cons[i];
        json_object_set_new(
            o, c->cc->instance,
            json_pack("{s:I,s:I,s:f,s:b,s:b,s:I,s:I}", "position",
                      (json_int_t)c->after_id, "passes", (json_int_t)c->passes,
                      "last_pass_s", c->last_pass_s, "running", c->running,
                      "loaded", c->loaded, "batch",
                      (json_int_t)(c->cc->batch ? c->cc->batch
                                                : SOPHIA_CONF_CONS_BATCH_DEFAULT),
                      "neighbors", (json_int_t)c->cc->neighbors));
    }
    return o;
}

json_t *sophia_memory_stats_json(const sophia_memory *m)
{
    if (!m)
        return json_pack("{s:s}", "status", "disabled");
    mem_figs f = figs_of(m);
    mem_access_stats a;
    int has_access = mem_access_get_stats(m, &a) == 0;
    const char *st = m->state == MEM_READY ? "ready"
                     : m->state == MEM_LOADING ? "loading" : "failed";
    json_t *o = json_pack("{s:s}", "status", st);
    json_object_update_new(o, sophia_statdef_json(store_figs, NDEFS(store_figs), &f));
    json_object_set(o, "by_type", m->by_type);
    json_object_set_new(o, "index", json_string(m->hnsw ? "hnsw" : "flat"));
    json_object_set_new(o, "embedder", mem_re_stats(m));
    json_object_update_new(o, sophia_statdef_json(latency_figs, NDEFS(latency_figs), &f));
    json_object_set_new(o, "consolidators", cons_json(m));
    json_object_set_new(o, "access",
                        has_access ? sophia_statdef_json(access_figs,
                                                         NDEFS(access_figs), &a)
                                   : json_object());
    return o;
}

/* sophia_memory_count: a row per key of by_type. */
static void write_types(const sophia_memory *m, FILE *f)
{
    size_t n = json_object_size(m->by_type), i = 0;
    int64_t *v = calloc(n ? n : 1, sizeof(*v));
    const char **names = calloc(n ? n : 1, sizeof(*names));
    sophia_stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
    const char *k;
    json_t *jv;
    if (v && names && rows)
        json_object_foreach(m->by_type, k, jv) {
            v[i] = (int64_t)json_integer_value(jv);
            names[i] = k;
            rows[i] = (sophia_stat_row){&names[i], &v[i]};
            i++;
        }
    static const char *const label[] = {"type"};
    sophia_statdef_prom_family(f, type_figs, NDEFS(type_figs), label, 1, rows, i);
    free(v);
    free(names);
    free(rows);
}

void sophia_memory_prom(const sophia_memory *m, FILE *f)
{
    if (!m)
        return;
    mem_figs fg = figs_of(m);
    mem_access_stats a;
    mem_access_get_stats(m, &a); /* zeros when off */
    write_types(m, f);
    sophia_statdef_prom(f, store_figs, NDEFS(store_figs), &fg, NULL);
    sophia_statdef_prom(f, access_figs, NDEFS(access_figs), &a, NULL);
    sophia_statdef_prom(f, latency_figs, NDEFS(latency_figs), &fg, NULL);
}
