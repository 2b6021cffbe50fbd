/*
 * cache_stats - the cache's figures, each declared once (lib/statdef.h):
 * per tier hits, misses, errors and latency, the write-back set, and each
 * tier's state. /api/stats (an object per tier) and the sophia_cache_*
 * families of /metrics (a sample per tier, tier="l1") are both written
 * from the tables below; the loader and put figures are /api/stats only.
 */
#include "cache/cache_priv.h"

#include "event/pg_pool.h"
#include "lib/statdef.h"

#include <stddef.h>
#include <string.h>

/* ---------------------------------------------------------------- stats */

int sophia_cache_l2_state(const sophia_cache *c, const char **err)
{
    if (!c->l2) {
        *err = "disabled";
        return -1;
    }
    *err = sophia_redis_last_error(c->l2);
    return sophia_redis_up(c->l2);
}

int sophia_cache_l3_state(const sophia_cache *c, const char **err)
{
    if (!c->l3) {
        *err = "disabled";
        return -1;
    }
    sophia_pg_pool *pp = sophia_l3_pool(c->l3);
    *err = sophia_pg_pool_last_error(pp);
    return sophia_pg_pool_up(pp);
}

/* -------------------------------------------------------------- figures */

/* One tier's figures, the same struct for the three (a figure a tier does
 * not have is left out of its row by `only`). */
typedef struct tier_figs {
    uint64_t hits, misses;
    double hit_rate;
    uint64_t entries, bytes, evictions, errors, writes;
    double p50_us, p99_us;
    uint64_t expirations, max_entries, max_bytes, skipped;
    int up;
} tier_figs;

#define L1 1u
#define L23 6u
#define OFF(f) offsetof(tier_figs, f)

/* In /metrics order: a name's sample for each tier, then the next. */
static const sophia_statdef tier_defs[] = {
    SOPHIA_STATDEF("hits", "sophia_cache_hits_total", "counter", NULL,
                   "Cache hits per tier.", OFF(hits)),
    SOPHIA_STATDEF("misses", "sophia_cache_misses_total", "counter", NULL,
                   "Cache misses per tier.", OFF(misses)),
    SOPHIA_STATDEF("hit_rate", "sophia_cache_hit_ratio", "gauge", NULL,
                   "Hits over lookups per tier.", OFF(hit_rate),
                   .kind = SOPHIA_STAT_DOUBLE, .fmt = "%.15g"),
    SOPHIA_STATDEF("entries", "sophia_cache_entries", "gauge", NULL,
                   "Entries per tier.", OFF(entries), .only = L1),
    SOPHIA_STATDEF("bytes", "sophia_cache_bytes", "gauge", NULL,
                   "Bytes per tier.", OFF(bytes), .only = L1),
    SOPHIA_STATDEF("evictions", "sophia_cache_evictions_total", "counter", NULL,
                   "Entries evicted to respect a bound.", OFF(evictions), .only = L1),
    SOPHIA_STATDEF("errors", "sophia_cache_errors_total", "counter", NULL,
                   "Failed lookups per tier.", OFF(errors), .only = L23),
    SOPHIA_STATDEF("writes", "sophia_cache_writes_total", "counter", NULL,
                   "Writes that reached the tier.", OFF(writes)),
    SOPHIA_STATDEF("p50_us", "sophia_cache_latency_us", "summary",
                   "quantile=\"0.5\"", "Lookup latency per tier, microseconds.",
                   OFF(p50_us), .kind = SOPHIA_STAT_DOUBLE, .fmt = "%.6g"),
    SOPHIA_STATDEF("p99_us", "sophia_cache_latency_us", "summary",
                   "quantile=\"0.99\"", NULL, OFF(p99_us),
                   .kind = SOPHIA_STAT_DOUBLE, .fmt = "%.6g"),
    SOPHIA_STATDEF("expirations", NULL, NULL, NULL, NULL, OFF(expirations), .only = L1),
    SOPHIA_STATDEF("max_entries", NULL, NULL, NULL, NULL, OFF(max_entries), .only = L1),
    SOPHIA_STATDEF("max_bytes", NULL, NULL, NULL, NULL, OFF(max_bytes), .only = L1),
    SOPHIA_STATDEF("skipped_down", NULL, NULL, NULL, NULL, OFF(skipped), .only = L23),
};

/* Written over the tiers that are configured (L2, L3) only. */
static const sophia_statdef tier_up_def[] = {
    SOPHIA_STATDEF(NULL, "sophia_cache_tier_up", "gauge", NULL,
                   "1 when the tier is reachable, 0 when down (absent when disabled).",
                   OFF(up), .kind = SOPHIA_STAT_BOOL),
};

typedef struct l2_figs {
    uint64_t reconnects, pending;
} l2_figs;

#undef OFF
#define OFF(f) offsetof(l2_figs, f)

/* /api/stats only, when L2 is configured. */
static const sophia_statdef l2_client_defs[] = {
    SOPHIA_STATDEF("reconnects", NULL, NULL, NULL, NULL, OFF(reconnects)),
    SOPHIA_STATDEF("pending", NULL, NULL, NULL, NULL, OFF(pending)),
};

typedef struct l3_figs {
    sophia_l3_stats ls;
    sophia_pg_stats ps;
    size_t connections, connections_up;
} l3_figs;

#undef OFF
#define OFF(f) offsetof(l3_figs, f)

/* /api/stats only, when L3 is configured (its `writes` are tier_figs'). */
static const sophia_statdef l3_client_defs[] = {
    SOPHIA_STATDEF("write_retries", NULL, NULL, NULL, NULL, OFF(ls.retries)),
    SOPHIA_STATDEF("write_failures", NULL, NULL, NULL, NULL, OFF(ls.failed)),
    SOPHIA_STATDEF("write_backoffs", NULL, NULL, NULL, NULL, OFF(ls.backoffs)),
    SOPHIA_STATDEF("writes_pending", NULL, NULL, NULL, NULL, OFF(ls.pending),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("queue_depth", NULL, NULL, NULL, NULL, OFF(ps.queue_depth),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("reconnects", NULL, NULL, NULL, NULL, OFF(ps.reconnects)),
    SOPHIA_STATDEF("connections", NULL, NULL, NULL, NULL, OFF(connections),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("connections_up", NULL, NULL, NULL, NULL, OFF(connections_up),
                   .kind = SOPHIA_STAT_SIZE),
};

typedef struct wb_figs {
    int enabled;
    sophia_wb_stats w;
    uint64_t unflushed; /* dirty + flushing */
} wb_figs;

#undef OFF
#define OFF(f) offsetof(wb_figs, f)

/* The `write_back` object and its /metrics lines. */
static const sophia_statdef wb_defs[] = {
    SOPHIA_STATDEF("enabled", NULL, NULL, NULL, NULL, OFF(enabled),
                   .kind = SOPHIA_STAT_BOOL),
    SOPHIA_STATDEF("dirty", NULL, NULL, NULL, NULL, OFF(w.dirty), .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("flushing", NULL, NULL, NULL, NULL, OFF(w.flushing),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF(NULL, "sophia_cache_dirty_entries", "gauge", NULL,
                   "Write-back entries not yet in L2/L3.", OFF(unflushed)),
    SOPHIA_STATDEF("journaled", NULL, NULL, NULL, NULL, OFF(w.journaled)),
    SOPHIA_STATDEF("coalesced", NULL, NULL, NULL, NULL, OFF(w.coalesced)),
    SOPHIA_STATDEF("journal_shared", NULL, NULL, NULL, NULL, OFF(w.journal_shared)),
    SOPHIA_STATDEF("flushed", NULL, NULL, NULL, NULL, OFF(w.flushed)),
    SOPHIA_STATDEF("replayed", NULL, NULL, NULL, NULL, OFF(w.replayed)),
    SOPHIA_STATDEF("refused", NULL, NULL, NULL, NULL, OFF(w.refused)),
    SOPHIA_STATDEF("dead", "sophia_cache_writeback_dead_total", "counter", NULL,
                   "Write-back entries L3 refused for good, dead-lettered.", OFF(w.dead)),
};

#define NDEFS(t) (sizeof(t) / sizeof((t)[0]))

static void tier_common(tier_figs *f, const tier_stats *t, uint64_t hits,
                        uint64_t misses)
{
    uint64_t n = hits + misses;
    f->hits = hits;
    f->misses = misses;
    f->hit_rate = n ? (double)hits / (double)n : 0.0;
    f->p50_us = sophia_hist_quantile(&t->lat, 0.5);
    f->p99_us = sophia_hist_quantile(&t->lat, 0.99);
    f->writes = t->writes;
    f->errors = t->errors;
    f->skipped = t->skipped;
}

/* The three tiers' figures; states[i] as sophia_cache_l2_state says
 * (L1 is always up). */
static void tiers_get(const sophia_cache *c, tier_figs f[3], int states[3],
                      const char *errs[3])
{
    memset(f, 0, 3 * sizeof(*f));
    sophia_l1_stats s;
    sophia_l1_get_stats(c->l1, &s);
    tier_common(&f[0], &c->t1, s.hits, s.misses);
    f[0].entries = s.entries;
    f[0].bytes = s.bytes;
    f[0].evictions = s.evictions;
    f[0].expirations = s.expirations;
    f[0].max_entries = s.max_entries;
    f[0].max_bytes = s.max_bytes;
    tier_common(&f[1], &c->t2, c->t2.hits, c->t2.misses);
    tier_common(&f[2], &c->t3, c->t3.hits, c->t3.misses);
    if (c->l3) {
        sophia_l3_stats ls;
        sophia_l3_get_stats(c->l3, &ls);
        f[2].writes = ls.writes;
    }
    states[0] = 1;
    errs[0] = "";
    states[1] = sophia_cache_l2_state(c, &errs[1]);
    states[2] = sophia_cache_l3_state(c, &errs[2]);
    for (int i = 0; i < 3; i++)
        f[i].up = states[i] == 1;
}

static wb_figs wb_get(const sophia_cache *c)
{
    wb_figs w = {c->wb != NULL, {0}, 0};
    if (c->wb)
        sophia_wb_get_stats(c->wb, &w.w);
    w.unflushed = w.w.dirty + w.w.flushing;
    return w;
}

static void set_status(json_t *o, int state, const char *err)
{
    json_object_set_new(o, "status", json_string(state < 0   ? "disabled"
                                                 : state ? "up"
                                                         : "down"));
    if (state == 0)
        json_object_set_new(o, "error", json_string(err));
}

static json_t *tier_json(const sophia_cache *c, const tier_figs *f, int i,
                         int state, const char *err)
{
    json_t *o = sophia_statdef_json_row(tier_defs, NDEFS(tier_defs), f, (size_t)i);
    set_status(o, state, err);
    if (i == 1 && c->l2) {
        sophia_redis_stats rs;
        sophia_redis_get_stats(c->l2, &rs);
        l2_figs l = {rs.reconnects, rs.pending};
        json_object_update_new(o, sophia_statdef_json(l2_client_defs,
                                                      NDEFS(l2_client_defs), &l));
    }
    if (i == 2 && c->l3) {
        l3_figs l = {0};
        sophia_l3_get_stats(c->l3, &l.ls);
        sophia_pg_pool *pp = sophia_l3_pool(c->l3);
        sophia_pg_pool_get_stats(pp, &l.ps);
        l.connections = sophia_pg_pool_size(pp);
        l.connections_up = sophia_pg_pool_nup(pp);
        json_object_update_new(o, sophia_statdef_json(l3_client_defs,
                                                      NDEFS(l3_client_defs), &l));
    }
    return o;
}

static json_t *wb_json(const sophia_cache *c)
{
    wb_figs w = wb_get(c);
    json_t *o = sophia_statdef_json(wb_defs, NDEFS(wb_defs), &w);
    json_object_set_new(o, "dead_letters",
                        c->wb ? sophia_wb_dead_ring_json(c->wb) : json_array());
    return o;
}

static const char *const tier_names[3] = {"l1", "l2", "l3"};
static const char *const tier_label[] = {"tier"};

void sophia_cache_write_prom(const sophia_cache *c, FILE *f)
{
    if (!c)
        return;
    tier_figs t[3];
    int states[3];
    const char *errs[3];
    tiers_get(c, t, states, errs);
    sophia_stat_row rows[3];
    for (int i = 0; i < 3; i++)
        rows[i] = (sophia_stat_row){&tier_names[i], &t[i]};
    sophia_statdef_prom_family(f, tier_defs, NDEFS(tier_defs), tier_label, 1, rows, 3);
    wb_figs w = wb_get(c);
    sophia_statdef_prom(f, wb_defs, NDEFS(wb_defs), &w, NULL);
    sophia_zstd_write_prom(c->zstd, f);
    size_t n = 0; /* L2, L3 when configured */
    for (int i = 1; i < 3; i++)
        if (states[i] >= 0)
            rows[n++] = (sophia_stat_row){&tier_names[i], &t[i]};
    sophia_statdef_prom_family(f, tier_up_def, 1, tier_label, 1, rows, n);
}

/* The read-through loader and the put path: /api/stats only so far (a
 * `prom` name on a row is all it takes to add one to /metrics). */
typedef struct call_figs {
    uint64_t loader_calls, refreshes, loaded, load_failed;
    double load_p50_us, load_p99_us;
    uint64_t puts, put_errors;
    double ack_p50_us, ack_p99_us;
    uint64_t dels, tag_invalidations;
} call_figs;

#undef OFF
#define OFF(f) offsetof(call_figs, f)

static const sophia_statdef loader_defs[] = {
    SOPHIA_STATDEF("calls", NULL, NULL, NULL, NULL, OFF(loader_calls)),
    SOPHIA_STATDEF("early_refreshes", NULL, NULL, NULL, NULL, OFF(refreshes)),
    SOPHIA_STATDEF("loaded", NULL, NULL, NULL, NULL, OFF(loaded)),
    SOPHIA_STATDEF("failed", NULL, NULL, NULL, NULL, OFF(load_failed)),
    SOPHIA_STATDEF("p50_us", NULL, NULL, NULL, NULL, OFF(load_p50_us),
                   .kind = SOPHIA_STAT_DOUBLE),
    SOPHIA_STATDEF("p99_us", NULL, NULL, NULL, NULL, OFF(load_p99_us),
                   .kind = SOPHIA_STAT_DOUBLE),
};

static const sophia_statdef put_defs[] = {
    SOPHIA_STATDEF("count", NULL, NULL, NULL, NULL, OFF(puts)),
    SOPHIA_STATDEF("errors", NULL, NULL, NULL, NULL, OFF(put_errors)),
    SOPHIA_STATDEF("ack_p50_us", NULL, NULL, NULL, NULL, OFF(ack_p50_us),
                   .kind = SOPHIA_STAT_DOUBLE),
    SOPHIA_STATDEF("ack_p99_us", NULL, NULL, NULL, NULL, OFF(ack_p99_us),
                   .kind = SOPHIA_STAT_DOUBLE),
    SOPHIA_STATDEF("deletes", NULL, NULL, NULL, NULL, OFF(dels)),
    SOPHIA_STATDEF("tag_invalidations", NULL, NULL, NULL, NULL,
                   OFF(tag_invalidations)),
};

static call_figs calls_get(const sophia_cache *c)
{
    return (call_figs){c->tl.writes, c->refreshes, c->tl.hits, c->tl.misses,
                       sophia_hist_quantile(&c->tl.lat, 0.5),
                       sophia_hist_quantile(&c->tl.lat, 0.99),
                       c->puts, c->put_errors,
                       sophia_hist_quantile(&c->put_lat, 0.5),
                       sophia_hist_quantile(&c->put_lat, 0.99),
                       c->dels, c->tag_invalidations};
}

json_t *sophia_cache_stats_json(const sophia_cache *c)
{
    call_figs cf = calls_get(c);
    json_t *loader = sophia_statdef_json(loader_defs, NDEFS(loader_defs), &cf);
    json_t *puts = sophia_statdef_json(put_defs, NDEFS(put_defs), &cf);
    tier_figs t[3];
    int states[3];
    const char *errs[3];
    tiers_get(c, t, states, errs);
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:I}", "l1",
                     tier_json(c, &t[0], 0, states[0], errs[0]), "l2",
                     tier_json(c, &t[1], 1, states[1], errs[1]), "l3",
                     tier_json(c, &t[2], 2, states[2], errs[2]), "loader", loader,
                     "write_back", wb_json(c), "puts", puts, "compress",
                     sophia_zstd_stats_json(c->zstd), "inflight",
                     (json_int_t)sophia_dict_size(c->flights));
}
