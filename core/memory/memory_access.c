/*
 * memory_access - access patterns as memories, and cache warming from them
 * (the seed's "frequent dashboard access -> remember -> pre-warm cache").
 *
 * Recording. A read that names who reads (POST /api/cache/access with
 * keys, dashboard and/or user, or the WS request cache.get from a
 * JWT-authenticated client: user = its subject, dashboard from params; an
 * HTTP GET never records, it must have no side effect) is counted on the
 * loop in a small table keyed by the pattern {dashboard, user, key}.
 * Every MEM_ACC_FLUSH_S the counts go to
 * PostgreSQL: a pattern already remembered gets access_count += n and
 * last_access = now(); a pattern read at least MEM_ACC_MIN_READS times
 * becomes a memory of type `access_pattern` with that context (content
 * "dashboard D (user U) reads cache key K", so memory search can answer
 * "what does D read?"), through the normal store path: embedded, indexed,
 * subject to consolidators (decay retention `access_pattern:30d` forgets
 * what nobody reads any more). Single reads wait in the table (bounded by
 * MEM_ACC_MAX; beyond it new patterns are dropped and counted).
 *
 * Warming. Once after start (when the memory store is ready and the cache
 * tiers are reachable) the MEM_ACC_WARM_START most read patterns' keys are
 * read through the cache, which promotes them from L2/L3 into L1; and the
 * first time a dashboard (or user) reads in this run - it just connected -
 * its own MEM_ACC_WARM_ONE most read keys are warmed the same way. So
 * what a dashboard reads often is in L1 before it asks.
 *
 * Lifetime: the memory store is freed before the cache, so a warm read in
 * flight must not point at the store: warm operations hold a reference to
 * the small mem_access block instead, which outlives the store until the
 * last of them answers.
 */
#include "memory/memory_priv.h"

#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "cache/cache.h"
#include "lib/log.h"

#define MEM_ACC_FLUSH_S 2
#define MEM_ACC_MIN_READS 2
#define MEM_ACC_MAX 10000
#define MEM_ACC_WARM_START 256
#define MEM_ACC_WARM_ONE 64
#define MEM_ACC_IMPORTANCE 0.3

struct mem_access {
    sophia_memory *m; /* NULL once the store is gone */
    int refs;
    json_t *pending; /* pattern json -> reads not yet written */
    json_t *known;   /* pattern json -> id (0 while being stored) */
    json_t *seen;    /* "d:D" / "u:U" -> true: read in this run */
    struct event *tick;
    int started_warm, flushing;
    char *sql_bump, *sql_find, *sql_top, *sql_top_of;
    uint64_t reads, remembered, dropped, warmed, warm_runs;
};

static void acc_unref(mem_access *a)
{
    if (--a->refs > 0)
        return;
    json_decref(a->pending);
    json_decref(a->known);
    json_decref(a->seen);
    free(a->sql_bump);
    free(a->sql_find);
    free(a->sql_top);
    free(a->sql_top_of);
    free(a);
}

/* ------------------------------------------------------------ warming */

typedef struct warm_op {
    mem_access *a;
    size_t left, found;
} warm_op;

static void warm_part(warm_op *w)
{
    if (--w->left)
        return;
    mem_access *a = w->a;
    if (a->m) {
        a->warmed += w->found;
        a->warm_runs++;
        if (w->found)
            sophia_info("memory", "msg=\"cache warmed from access patterns\" keys=%zu",
                        w->found);
    }
    acc_unref(a);
    free(w);
}

static void on_warm_get(void *arg, int rc, const char *val, size_t len, int tier)
{
    (void)val;
    (void)len;
    warm_op *w = arg;
    w->found += rc == 0 && tier != SOPHIA_CACHE_L1;
    warm_part(w);
}

/* Reads every key of the result (column 0) through the cache. */
static void on_top_keys(void *arg, PGresult *res, const char *err)
{
    mem_access *a = arg;
    sophia_cache *c = a->m ? a->m->cache : NULL;
    warm_op *w = res && !err && c ? calloc(1, sizeof(*w)) : NULL;
    if (w) {
        w->a = a;
        w->left = 1;
        a->refs++;
        for (int i = 0; i < PQntuples(res); i++) {
            w->left++;
            if (sophia_cache_get(c, PQgetvalue(res, i, 0), NULL, NULL,
                                 on_warm_get, w) != 0)
                w->left--;
        }
        warm_part(w);
    }
    acc_unref(a);
}

static void warm_query(mem_access *a, const char *sql, int n, const char *ctx)
{
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", n);
    const char *vals[2] = {lim, ctx};
    a->refs++;
    if (sophia_pg_query(a->m->pg, sql, ctx ? 2 : 1, vals, NULL, NULL,
                        on_top_keys, a) != 0)
        acc_unref(a);
}

/* The cache's tiers that exist are up (or being skipped for good). */
static int cache_ready(const sophia_memory *m)
{
    sophia_cache *c = m->cache;
    const char *e;
    return c && sophia_cache_l2_state(c, &e) != 0 && sophia_cache_l3_state(c, &e) != 0;
}

/* A dashboard or user reads for the first time in this run. */
static void warm_newcomer(mem_access *a, const char *field, const char *who)
{
    char seen[300];
    snprintf(seen, sizeof(seen), "%c:%s", field[0], who);
    if (json_object_get(a->seen, seen) || json_object_size(a->seen) >= MEM_ACC_MAX)
        return;
    json_object_set_new(a->seen, seen, json_true());
    json_t *ctx = json_pack("{s:s}", field, who);
    char *s = ctx ? json_dumps(ctx, JSON_COMPACT) : NULL;
    if (s)
        warm_query(a, a->sql_top_of, MEM_ACC_WARM_ONE, s);
    free(s);
    json_decref(ctx);
}

/* ------------------------------------------------------------ recording */

static json_t *pattern(const char *key, const char *dashboard, const char *user)
{
    json_t *p = json_pack("{s:s}", "key", key);
    if (p && dashboard)
        json_object_set_new(p, "dashboard", json_string(dashboard));
    if (p && user)
        json_object_set_new(p, "user", json_string(user));
    return p;
}

void sophia_memory_note_access(sophia_memory *m, const char *key,
                               const char *dashboard, const char *user)
{
    if (!m || !m->acc || !key || (!dashboard && !user) || m->freeing)
        return;
    if ((dashboard && (!*dashboard || strlen(dashboard) > 128)) ||
        (user && (!*user || strlen(user) > 128)))
        return;
    mem_access *a = m->acc;
    json_t *p = pattern(key, dashboard, user);
    char *s = p ? json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(p);
    if (!s)
        return;
    a->reads++;
    json_t *n = json_object_get(a->pending, s);
    if (n)
        json_integer_set(n, json_integer_value(n) + 1);
    else if (json_object_size(a->pending) < MEM_ACC_MAX)
        json_object_set_new(a->pending, s, json_integer(1));
    else
        a->dropped++;
    free(s);
    if (m->state == MEM_READY && a->started_warm) {
        if (dashboard)
            warm_newcomer(a, "dashboard", dashboard);
        if (user)
            warm_newcomer(a, "user", user);
    }
}

typedef struct flush_op {
    mem_access *a;
    char *pattern;
    json_int_t n;
} flush_op;

static void flush_op_free(flush_op *f)
{
    acc_unref(f->a);
    free(f->pattern);
    free(f);
}

static void on_bumped(void *arg, PGresult *res, const char *err)
{
    flush_op_free(arg);
    (void)res;
    (void)err;
}

static void bump(mem_access *a, json_int_t id, json_int_t n, flush_op *f)
{
    char ids[24], ns[24];
    snprintf(ids, sizeof(ids), "%lld", (long long)id);
    snprintf(ns, sizeof(ns), "%lld", (long long)n);
    const char *vals[2] = {ids, ns};
    if (sophia_pg_query(a->m->pg, a->sql_bump, 2, vals, NULL, NULL, on_bumped, f) != 0)
        flush_op_free(f);
}

static void on_stored(void *arg, int64_t id, int err, const char *msg)
{
    (void)msg;
    flush_op *f = arg;
    mem_access *a = f->a;
    if (err || !a->m) {
        json_object_del(a->known, f->pattern); /* try again later */
        flush_op_free(f);
        return;
    }
    a->remembered++;
    json_object_set_new(a->known, f->pattern, json_integer(id));
    bump(a, id, f->n, f);
}

static void remember(flush_op *f)
{
    mem_access *a = f->a;
    json_t *p = json_loads(f->pattern, 0, NULL);
    const char *key = json_string_value(json_object_get(p, "key"));
    const char *d = json_string_value(json_object_get(p, "dashboard"));
    const char *u = json_string_value(json_object_get(p, "user"));
    char text[1024];
    snprintf(text, sizeof(text), "%s%s%s%s%s%sreads cache key %s", d ? "dashboard " : "",
             d ? d : "", d ? " " : "", u ? "(user " : "", u ? u : "", u ? ") " : "",
             key ? key : "?");
    json_object_set_new(a->known, f->pattern, json_integer(0));
    /* The reader is the memory's user_id: forgetting the user forgets it. */
    sophia_memory_scope who = {u, NULL, NULL};
    if (!p || sophia_memory_store_scoped(a->m, text, "access_pattern", p,
                                         MEM_ACC_IMPORTANCE, &who, on_stored, f) != 0) {
        json_object_del(a->known, f->pattern);
        flush_op_free(f);
    }
    json_decref(p);
}

/* Not known here yet: remembered by an earlier run? Else store it when
 * read often enough; else put the count back to wait for more reads. */
static void on_found(void *arg, PGresult *res, const char *err)
{
    flush_op *f = arg;
    mem_access *a = f->a;
    if (!res || err || !a->m) {
        flush_op_free(f);
        return;
    }
    if (PQntuples(res) > 0) {
        json_int_t id = atoll(PQgetvalue(res, 0, 0));
        json_object_set_new(a->known, f->pattern, json_integer(id));
        bump(a, id, f->n, f);
    } else if (f->n >= MEM_ACC_MIN_READS) {
        remember(f);
    } else {
        json_t *n = json_object_get(a->pending, f->pattern);
        if (n)
            json_integer_set(n, json_integer_value(n) + f->n);
        else
            json_object_set_new(a->pending, f->pattern, json_integer(f->n));
        flush_op_free(f);
    }
}

static void flush_one(mem_access *a, const char *pat, json_int_t n)
{
    flush_op *f = calloc(1, sizeof(*f));
    if (!f || !(f->pattern = strdup(pat))) {
        free(f);
        return;
    }
    f->a = a;
    f->n = n;
    a->refs++;
    json_t *id = json_object_get(a->known, pat);
    if (id) {
        bump(a, json_integer_value(id), n, f);
        return;
    }
    const char *vals[1] = {pat};
    if (sophia_pg_query(a->m->pg, a->sql_find, 1, vals, NULL, NULL, on_found, f) != 0)
        flush_op_free(f);
}

static void flush(mem_access *a)
{
    json_t *keep = json_object();
    const char *pat;
    json_t *v;
    json_object_foreach(a->pending, pat, v) {
        json_t *id = json_object_get(a->known, pat);
        if (id && json_integer_value(id) == 0) /* being stored: next time */
            json_object_set(keep, pat, v);
        else
            flush_one(a, pat, json_integer_value(v));
    }
    json_decref(a->pending);
    a->pending = keep;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mem_access *a = arg;
    sophia_memory *m = a->m;
    if (!m || m->freeing || m->state != MEM_READY || !sophia_pg_up(m->pg))
        return;
    if (!a->started_warm && cache_ready(m)) {
        a->started_warm = 1;
        warm_query(a, a->sql_top, MEM_ACC_WARM_START, NULL);
    }
    if (json_object_size(a->pending))
        flush(a);
}

/* ------------------------------------------------------------ lifecycle */

static char *sql(const char *fmt, const char *t)
{
    size_t n = strlen(fmt) + strlen(t) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, t);
    return s;
}

int mem_access_init(sophia_memory *m)
{
    mem_access *a = calloc(1, sizeof(*a));
    if (!a)
        return -1;
    const char *t = m->conf->memory.table;
    a->m = m;
    a->refs = 1;
    a->pending = json_object();
    a->known = json_object();
    a->seen = json_object();
    a->sql_bump = sql("UPDATE %s SET access_count = access_count + $2::bigint, "
                      "last_access = now() WHERE id = $1::bigint", t);
    a->sql_find = sql("SELECT id FROM %s WHERE memory_type = 'access_pattern' "
                      "AND context = $1::jsonb AND consolidated_into IS NULL "
                      "ORDER BY id LIMIT 1", t);
    a->sql_top = sql("SELECT context->>'key' FROM %s WHERE memory_type = "
                     "'access_pattern' AND consolidated_into IS NULL GROUP BY 1 "
                     "ORDER BY sum(access_count) DESC, 1 LIMIT $1::int", t);
    a->sql_top_of = sql("SELECT context->>'key' FROM %s WHERE memory_type = "
                        "'access_pattern' AND context @> $2::jsonb AND "
                        "consolidated_into IS NULL GROUP BY 1 ORDER BY "
                        "sum(access_count) DESC, 1 LIMIT $1::int", t);
    m->acc = a;
    a->tick = event_new(m->base, -1, EV_PERSIST, on_tick, a);
    struct timeval tv = {MEM_ACC_FLUSH_S, 0};
    if (!a->pending || !a->known || !a->seen || !a->sql_bump || !a->sql_find ||
        !a->sql_top || !a->sql_top_of || !a->tick || event_add(a->tick, &tv) != 0)
        return -1;
    return 0;
}

/* Before the store's PostgreSQL connection closes. */
void mem_access_free(sophia_memory *m)
{
    mem_access *a = m->acc;
    if (!a)
        return;
    if (a->tick)
        event_free(a->tick);
    a->tick = NULL;
    a->m = NULL;
    m->acc = NULL;
    acc_unref(a);
}

/* Is `pat` (a pattern's JSON text) read by `user`? */
static int pattern_of(const char *pat, const char *user)
{
    json_t *p = json_loads(pat, 0, NULL);
    const char *u = json_string_value(json_object_get(p, "user"));
    int yes = u && !strcmp(u, user);
    json_decref(p);
    return yes;
}

static int id_in(json_int_t id, const int64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

void mem_access_forget(sophia_memory *m, const char *user, const int64_t *ids,
                       size_t n)
{
    mem_access *a = m->acc;
    if (!a)
        return;
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(a->known, tmp, k, v) {
        if ((user && pattern_of(k, user)) || id_in(json_integer_value(v), ids, n))
            json_object_del(a->known, k);
    }
    if (!user)
        return;
    json_object_foreach_safe(a->pending, tmp, k, v) {
        if (pattern_of(k, user))
            json_object_del(a->pending, k);
    }
    char seen[160];
    snprintf(seen, sizeof(seen), "u:%s", user);
    json_object_del(a->seen, seen);
}

int mem_access_get_stats(const sophia_memory *m, mem_access_stats *out)
{
    const mem_access *a = m->acc;
    *out = (mem_access_stats){0};
    if (!a)
        return -1;
    *out = (mem_access_stats){a->reads, a->remembered,
                              json_object_size(a->pending), a->dropped,
                              a->warmed, a->warm_runs};
    return 0;
}
