/*
 * cache_stats - the cache's figures for /api/stats (and, read back from
 * that document, /metrics): per tier hits, misses, errors and latency, the
 * write-back set, and each tier's state.
 */
#include "cache/cache_priv.h"

#include "event/pg_pool.h"

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

static json_t *tier_json(const tier_stats *t, uint64_t hits, uint64_t misses)
{
    uint64_t n = hits + misses;
    return json_pack("{s:I,s:I,s:f,s:f,s:f,s:I}", "hits", (json_int_t)hits,
                     "misses", (json_int_t)misses, "hit_rate",
                     n ? (double)hits / (double)n : 0.0, "p50_us",
                     sophia_hist_quantile(&t->lat, 0.5), "p99_us",
                     sophia_hist_quantile(&t->lat, 0.99), "writes",
                     (json_int_t)t->writes);
}

static void set_status(json_t *o, int state, const char *err)
{
    json_object_set_new(o, "status", json_string(state < 0   ? "disabled"
                                                 : state ? "up"
                                                         : "down"));
    if (state == 0)
        json_object_set_new(o, "error", json_string(err));
}

static void set_int(json_t *o, const char *k, uint64_t v)
{
    json_object_set_new(o, k, json_integer((json_int_t)v));
}

static json_t *l1_json(const sophia_cache *c)
{
    sophia_l1_stats s;
    sophia_l1_get_stats(c->l1, &s);
    json_t *o = tier_json(&c->t1, s.hits, s.misses);
    set_int(o, "entries", s.entries);
    set_int(o, "bytes", s.bytes);
    set_int(o, "evictions", s.evictions);
    set_int(o, "expirations", s.expirations);
    set_int(o, "max_entries", s.max_entries);
    set_int(o, "max_bytes", s.max_bytes);
    set_status(o, 1, "");
    return o;
}

static json_t *l2_json(const sophia_cache *c)
{
    const char *err = "";
    int state = sophia_cache_l2_state(c, &err);
    json_t *o = tier_json(&c->t2, c->t2.hits, c->t2.misses);
    set_status(o, state, err);
    set_int(o, "errors", c->t2.errors);
    set_int(o, "skipped_down", c->t2.skipped);
    if (c->l2) {
        sophia_redis_stats rs;
        sophia_redis_get_stats(c->l2, &rs);
        set_int(o, "reconnects", rs.reconnects);
        set_int(o, "pending", rs.pending);
    }
    return o;
}

static json_t *l3_json(const sophia_cache *c)
{
    const char *err = "";
    int state = sophia_cache_l3_state(c, &err);
    json_t *o = tier_json(&c->t3, c->t3.hits, c->t3.misses);
    set_status(o, state, err);
    set_int(o, "errors", c->t3.errors);
    set_int(o, "skipped_down", c->t3.skipped);
    if (c->l3) {
        sophia_l3_stats ls;
        sophia_pg_stats ps;
        sophia_l3_get_stats(c->l3, &ls);
        sophia_pg_pool *pp = sophia_l3_pool(c->l3);
        sophia_pg_pool_get_stats(pp, &ps);
        set_int(o, "writes", ls.writes);
        set_int(o, "write_retries", ls.retries);
        set_int(o, "write_failures", ls.failed);
        set_int(o, "write_backoffs", ls.backoffs);
        set_int(o, "writes_pending", ls.pending);
        set_int(o, "queue_depth", ps.queue_depth);
        set_int(o, "reconnects", ps.reconnects);
        set_int(o, "connections", sophia_pg_pool_size(pp));
        set_int(o, "connections_up", sophia_pg_pool_nup(pp));
    }
    return o;
}

static json_t *wb_json(const sophia_cache *c)
{
    sophia_wb_stats w = {0};
    if (c->wb)
        sophia_wb_get_stats(c->wb, &w);
    return json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o}",
                     "enabled", c->wb != NULL, "dirty", (json_int_t)w.dirty,
                     "flushing", (json_int_t)w.flushing, "journaled",
                     (json_int_t)w.journaled, "coalesced",
                     (json_int_t)w.coalesced, "flushed", (json_int_t)w.flushed,
                     "replayed", (json_int_t)w.replayed, "refused",
                     (json_int_t)w.refused, "dead", (json_int_t)w.dead,
                     "dead_letters",
                     c->wb ? sophia_wb_dead_ring_json(c->wb) : json_array());
}

json_t *sophia_cache_stats_json(const sophia_cache *c)
{
    json_t *loader = json_pack(
        "{s:I,s:I,s:I,s:I,s:f,s:f}", "calls", (json_int_t)c->tl.writes,
        "early_refreshes", (json_int_t)c->refreshes, "loaded",
        (json_int_t)c->tl.hits, "failed", (json_int_t)c->tl.misses, "p50_us",
        sophia_hist_quantile(&c->tl.lat, 0.5), "p99_us",
        sophia_hist_quantile(&c->tl.lat, 0.99));
    json_t *puts = json_pack(
        "{s:I,s:I,s:f,s:f,s:I,s:I}", "count", (json_int_t)c->puts, "errors",
        (json_int_t)c->put_errors, "ack_p50_us",
        sophia_hist_quantile(&c->put_lat, 0.5), "ack_p99_us",
        sophia_hist_quantile(&c->put_lat, 0.99), "deletes",
        (json_int_t)c->dels, "tag_invalidations",
        (json_int_t)c->tag_invalidations);
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:I}", "l1", l1_json(c), "l2",
                     l2_json(c), "l3", l3_json(c), "loader", loader,
                     "write_back", wb_json(c), "puts", puts, "inflight",
                     (json_int_t)sophia_dict_size(c->flights));
}
