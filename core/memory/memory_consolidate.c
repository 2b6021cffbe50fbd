/*
 * memory_consolidate - running consolidator plugins over the memory store.
 *
 * Each instance walks the whole store with a cursor: a run looks at the
 * next `batch` live memories by id after it, and after the last memory
 * the cursor wraps to the start, which completes a pass. The cursor, the
 * passes completed and the last pass's duration are kept in
 * <table>_cons, so a restart goes on where it was. A run has five steps,
 * none of which blocks the loop:
 *  1. loop: fetch the batch from PostgreSQL (the cursor too, before the
 *     first run);
 *  2. worker: the batch's rows into JSON and its vectors decoded, then for
 *     each one its `neighbors` nearest live memories across the whole
 *     faiss index (one batched search under the read lock) - the
 *     CPU-heavy part, done by the host so plugins stay simple;
 *  3. loop, then worker: the neighbours' rows (type, context, scope,
 *     content length) from PostgreSQL, so a plugin can judge a neighbour
 *     outside its batch, into JSON and onto each batch row on a worker
 *     (the search and 3 are skipped with neighbors: 0). The loop only
 *     copies each result (PQcopyResult) for the worker;
 *  4. loop: call the plugin's run(state, ctx)
 *     through the runner the host registered (sophia_memory_set_cons_runner,
 *     host/consolidate_run.c: memory sits below the host and does not call
 *     it); the plugin reads host->memory_batch(ctx) and queues memory_merge /
 *     memory_expire / memory_set_importance (and any other action);
 *  5. loop + worker: apply each merge, expiry or importance (a decay
 *     written back) in PostgreSQL, then remove
 *     the dropped ids from the index in one worker job, and save it later;
 *     then move the cursor past the batch and save it.
 * Ingest and search go on meanwhile; a memory stored during a pass is part
 * of it when its id is still ahead of the cursor. One run per instance at
 * a time: a schedule that fires while its previous run is still going is
 * skipped. A run that fails leaves the cursor where it was.
 *
 * Schedules come from memory.consolidate.<instance>: `every` (a timer)
 * and/or `after_new` (count of memories stored since the last run).
 */
#include "memory/memory_priv.h"

#include "memory/faiss_shim.h"

#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>
#include <sophia/sdk.h>

#include "lib/log.h"
#include "event/loop.h"

#define MEM_CONS_MIN_COS 0.5f
/* HNSW breadth of a run's neighbour search (at least `neighbors`). A
 * consolidator looks at memories close to each other - dedup's are at
 * cosine >= 0.92 - which a narrow search finds as surely as the store's
 * efSearch (memory.h), tuned for recall@10 of loose queries; and this
 * search is most of a pass's CPU (tests/bench/consolidate.sh). */
#define MEM_CONS_EF_SEARCH 32

typedef struct cons_run {
    sophia_memory *m;
    mem_consolidator *c;
    size_t n, limit;
    size_t k; /* neighbours per memory (memory.consolidate.*.neighbors) */
    int end; /* the batch reached the last memory: the pass completes */
    int64_t *ids; /* ascending, as the batch is read */
    float *vecs;
    int dim;     /* of vecs: the index's when the batch was read */
    int64_t *nb_ids; /* n * k, -1 = none */
    float *nb_cos;
    PGresult *res; /* the batch's or the neighbours' rows, copied for the worker */
    json_t *batch;
    json_t *nbrows; /* "id" -> a neighbour's row, from PostgreSQL */
    json_t *ops;
    size_t pending; /* PostgreSQL statements in flight */
    int64_t *removed;
    size_t nremoved;
    size_t tombs; /* after the removal (stats) */
    int rebuild;  /* enough tombstones for a background rebuild */
    uint64_t merged, expired, decayed;
} cons_run;

static void run_free(cons_run *r)
{
    if (r->res)
        PQclear(r->res);
    free(r->ids);
    free(r->vecs);
    free(r->nb_ids);
    free(r->nb_cos);
    free(r->removed);
    json_decref(r->batch);
    json_decref(r->nbrows);
    json_decref(r->ops);
    free(r);
}

static double wall_s(void)
{
    return (double)sophia_now_wall_us() / 1e6;
}

/* ------------------------------------------------------- the cursor */

static void on_cursor_saved(void *arg, PGresult *res, const char *err)
{
    sophia_memory *m = arg;
    if (err && res && !m->freeing)
        sophia_warn("memory", "msg=\"consolidation cursor not saved\" error=\"%s\"", err);
}

static void cursor_save(sophia_memory *m, const mem_consolidator *c)
{
    char after[24], passes[24], started[32], last[32];
    snprintf(after, sizeof(after), "%lld", (long long)c->after_id);
    snprintf(passes, sizeof(passes), "%llu", (unsigned long long)c->passes);
    snprintf(started, sizeof(started), "%.6f", c->pass_started);
    snprintf(last, sizeof(last), "%.6f", c->last_pass_s);
    const char *vals[5] = {c->cc->instance, after, passes,
                           c->pass_started > 0 ? started : NULL,
                           c->last_pass_s > 0 ? last : NULL};
    sophia_pg_query(m->pg, m->sql.cons_save, 5, vals, NULL, NULL,
                    on_cursor_saved, m);
}

/* Past the batch; after the last memory, back to the start. */
static void cursor_advance(cons_run *r)
{
    mem_consolidator *c = r->c;
    if (r->n)
        c->after_id = r->ids[r->n - 1];
    if (r->end) {
        c->after_id = 0;
        c->passes++;
        c->last_pass_s = c->pass_started > 0 ? wall_s() - c->pass_started : 0;
        c->pass_started = 0;
        /* A small store wraps at every run: said at info only when a
         * pass is long enough to be worth a line. */
        sophia_log(c->last_pass_s >= 60 ? SOPHIA_LVL_INFO : SOPHIA_LVL_DEBUG,
                   "memory", "msg=\"consolidation pass complete\" instance=%s "
                   "passes=%llu seconds=%.3f", c->cc->instance,
                   (unsigned long long)c->passes, c->last_pass_s);
    }
    cursor_save(r->m, c);
}

static void run_end(cons_run *r, const char *why)
{
    if (r->m->freeing) { /* m->cons is already gone: nothing to count or save */
        run_free(r);
        return;
    }
    if (why)
        sophia_warn("memory", "msg=\"consolidation failed\" instance=%s error=\"%s\"",
                    r->c->cc->instance, why);
    r->c->running = 0;
    r->m->consolidations++;
    r->m->merged += r->merged;
    r->m->expired += r->expired;
    if (r->nremoved)
        mem_mark_dirty(r->m);
    if (!why) {
        sophia_debug("memory", "msg=\"consolidated\" instance=%s looked_at=%zu "
                     "merged=%llu expired=%llu decayed=%llu", r->c->cc->instance,
                     r->n, (unsigned long long)r->merged,
                     (unsigned long long)r->expired, (unsigned long long)r->decayed);
        cursor_advance(r);
    }
    run_free(r);
}

/* ------------------------------------------------- step 5: applying */

static void remove_work(void *arg)
{
    cons_run *r = arg;
    r->tombs = mem_index_remove(r->m, r->removed, r->nremoved, &r->rebuild);
}

static void remove_done(void *arg, int cancelled)
{
    cons_run *r = arg;
    sophia_memory *m = r->m;
    int rebuild = !cancelled && r->rebuild;
    if (!cancelled)
        m->tombstones = r->tombs;
    run_end(r, cancelled ? "shutting down" : NULL);
    if (rebuild)
        mem_rebuild(m);
}

static void op_applied(cons_run *r)
{
    if (--r->pending > 0)
        return;
    if (!r->nremoved || r->m->freeing ||
        sophia_workers_submit(r->m->pool, remove_work, remove_done, r) != 0)
        run_end(r, r->m->freeing ? "shutting down" : NULL);
}

typedef struct op_arg {
    cons_run *r;
    int64_t id; /* the id that leaves the index (not for an importance) */
    int merge;
} op_arg;

/* An importance written back: the row stays, so nothing leaves the
 * index. */
static void on_importance(void *arg, PGresult *res, const char *err)
{
    op_arg *a = arg;
    if (res && !err && PQntuples(res) == 1)
        a->r->decayed++;
    else if (err && res)
        sophia_warn("memory", "msg=\"consolidation step failed\" id=%lld error=\"%s\"",
                    (long long)a->id, err);
    op_applied(a->r);
    free(a);
}

static void on_op(void *arg, PGresult *res, const char *err)
{
    op_arg *a = arg;
    cons_run *r = a->r;
    if (res && !err && PQntuples(res) == 1) {
        mem_count_type(r->m, PQgetvalue(res, 0, 0), -1);
        r->removed[r->nremoved++] = a->id;
        if (a->merge)
            r->merged++;
        else
            r->expired++;
    } else if (err && res) {
        sophia_warn("memory", "msg=\"consolidation step failed\" id=%lld error=\"%s\"",
                    (long long)a->id, err);
    }
    free(a);
    op_applied(r);
}

static void apply_ops(cons_run *r)
{
    size_t n = json_array_size(r->ops), i;
    json_t *op;
    r->removed = malloc((n ? n : 1) * sizeof(*r->removed));
    r->pending = 1; /* held until every statement is queued */
    if (!r->removed) { /* out of memory: apply nothing */
        json_decref(r->ops);
        r->ops = json_array();
    }
    json_array_foreach(r->ops, i, op) {
        const char *kind = json_string_value(json_object_get(op, "op"));
        int merge = !strcmp(kind, "merge"), imp = !strcmp(kind, "importance");
        char a1[24], a2[32];
        int64_t keep = json_integer_value(json_object_get(op, "keep"));
        int64_t id = json_integer_value(json_object_get(op, merge ? "drop" : "id"));
        snprintf(a1, sizeof(a1), "%lld", (long long)(merge ? keep : id));
        if (imp)
            snprintf(a2, sizeof(a2), "%.9g",
                     json_real_value(json_object_get(op, "importance")));
        else
            snprintf(a2, sizeof(a2), "%lld", (long long)id);
        const char *vals[3] = {a1, merge || imp ? a2 : r->c->cc->instance,
                               r->c->cc->instance};
        const char *sql = merge ? r->m->sql.merge_keep
                          : imp ? r->m->sql.set_importance : r->m->sql.expire;
        op_arg *a = calloc(1, sizeof(*a));
        if (!a)
            break;
        a->r = r;
        a->id = id;
        a->merge = merge;
        if (sophia_pg_query(r->m->pg, sql, merge || imp ? 3 : 2, vals, NULL, NULL,
                            imp ? on_importance : on_op, a) == 0)
            r->pending++;
        else
            free(a);
    }
    op_applied(r);
}

/* --------------------------------------------- step 4: the plugin */

/* Each neighbour with its row (memory_type, context, content_len,
 * importance, scope); one gone since the search (merged, expired) is
 * left out. */
static json_t *neighbors_json(cons_run *r, size_t i)
{
    json_t *a = json_array();
    for (size_t k = 0; k < r->k; k++) {
        int64_t id = r->nb_ids[i * r->k + k];
        float cos = r->nb_cos[i * r->k + k];
        char key[24];
        snprintf(key, sizeof(key), "%lld", (long long)id);
        json_t *row = id >= 0 ? json_object_get(r->nbrows, key) : NULL;
        if (!row || id == r->ids[i] || cos < MEM_CONS_MIN_COS)
            continue;
        json_t *e = json_pack("{s:I,s:f}", "id", (json_int_t)id, "cosine", (double)cos);
        json_object_update(e, row);
        json_array_append_new(a, e);
    }
    return a;
}

static void call_plugin(cons_run *r)
{
    sophia_instance *in = r->c->inst;
    if (!in) { /* removed by a reload while this run read its batch */
        run_end(r, "the consolidator instance is no longer loaded");
        return;
    }
    if (!r->m->cons_run) {
        run_end(r, "no consolidator runner registered");
        return;
    }
    int rc = r->m->cons_run(r->m->cons_run_arg, in, r->batch, &r->ops);
    if (rc == SOPHIA_ENOMEM && !r->ops) {
        run_end(r, "out of memory");
        return;
    }
    if (rc != 0) {
        run_end(r, "the plugin's run() failed; nothing applied");
        return;
    }
    apply_ops(r);
}

/* ------------------------------------- step 3: the neighbours' rows */

static json_t *opt_text(PGresult *res, int i, int col)
{
    return PQgetisnull(res, i, col) ? json_null() : json_string(PQgetvalue(res, i, col));
}

/* On a worker: the neighbours' rows as JSON, and each batch row's
 * neighbours from them. */
static void nbrows_work(void *arg)
{
    cons_run *r = arg;
    PGresult *res = r->res;
    for (int i = 0; i < PQntuples(res); i++) {
        json_t *ctx = json_loads(PQgetvalue(res, i, 2), 0, NULL);
        json_object_set_new(
            r->nbrows, PQgetvalue(res, i, 0),
            json_pack("{s:s,s:o,s:I,s:f,s:o,s:o,s:o}", "memory_type",
                      PQgetvalue(res, i, 1), "context", ctx ? ctx : json_object(),
                      "content_len", (json_int_t)atoll(PQgetvalue(res, i, 3)),
                      "importance", atof(PQgetvalue(res, i, 4)), "user_id",
                      opt_text(res, i, 5), "agent_id", opt_text(res, i, 6),
                      "session_id", opt_text(res, i, 7)));
    }
    size_t i;
    json_t *row;
    json_array_foreach(r->batch, i, row)
        json_object_set_new(row, "neighbors", neighbors_json(r, i));
}

static void nbrows_done(void *arg, int cancelled)
{
    cons_run *r = arg;
    PQclear(r->res);
    r->res = NULL;
    if (cancelled || r->m->freeing)
        run_end(r, "shutting down");
    else
        call_plugin(r);
}

/* The rows are copied (a memcpy's work; the result is the pg client's
 * only during this call) and turned into JSON on a worker: ~0.2 s of CPU
 * per 1,000 memories the loop does not spend. */
static void on_nbrows(void *arg, PGresult *res, const char *err)
{
    cons_run *r = arg;
    if (!res || err) {
        run_end(r, err ? err : "closed");
        return;
    }
    if (r->m->freeing) {
        run_end(r, "shutting down");
        return;
    }
    r->res = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    if (!r->res)
        run_end(r, "out of memory");
    else if (sophia_workers_submit(r->m->pool, nbrows_work, nbrows_done, r) != 0)
        run_end(r, "shutting down");
}

static int id_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* The distinct neighbour ids, sorted into `out` (n * k long). */
static size_t neighbor_ids(const cons_run *r, int64_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n * r->k; i++)
        if (r->nb_ids[i] >= 0 && r->nb_cos[i] >= MEM_CONS_MIN_COS)
            out[k++] = r->nb_ids[i];
    qsort(out, k, sizeof(*out), id_cmp);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || out[u - 1] != out[i])
            out[u++] = out[i];
    return u;
}

static void fetch_nbrows(cons_run *r)
{
    size_t nk = r->n * r->k;
    int64_t *ids = malloc((nk > 0 ? nk : 1) * sizeof(*ids));
    char *arr = ids ? mem_id_array(ids, neighbor_ids(r, ids)) : NULL;
    r->nbrows = json_object();
    free(ids);
    const char *vals[1] = {arr};
    if (!arr || !r->nbrows)
        run_end(r, "out of memory");
    else if (sophia_pg_query(r->m->pg, r->m->sql.nbrows, 1, vals, NULL, NULL,
                             on_nbrows, r) != 0)
        run_end(r, "cannot query PostgreSQL");
    free(arr);
}

/* ------------------------------------------- step 2: neighbours */

/* Across the whole index, not only the batch: a duplicate is found
 * however far apart the two were stored. */
static void neighbors_work(void *arg)
{
    cons_run *r = arg;
    sophia_memory *m = r->m;
    size_t total = r->n * r->k;
    for (size_t i = 0; i < total; i++)
        r->nb_ids[i] = -1;
    int ef = r->k > MEM_CONS_EF_SEARCH ? (int)r->k : MEM_CONS_EF_SEARCH;
    pthread_rwlock_rdlock(&m->lock);
    if (m->index && r->n && faiss_Index_d(m->index) == r->dim &&
        sophia_faiss_search_ef(m->index, (idx_t)r->n, r->vecs, (idx_t)r->k,
                               r->nb_cos, (idx_t *)r->nb_ids, ef) == 0) {
        for (size_t i = 0; i < total; i++)
            if (r->nb_ids[i] >= 0 && mem_is_tomb(m, r->nb_ids[i]))
                r->nb_ids[i] = -1;
    }
    pthread_rwlock_unlock(&m->lock);
}

/* ---------------------------------------------- step 1: the rows */

static json_t *batch_row(PGresult *res, int i, double now)
{
    json_t *ctx = json_loads(PQgetvalue(res, i, 3), 0, NULL);
    double created = atof(PQgetvalue(res, i, 5));
    json_t *row = json_pack("{s:I,s:s,s:s,s:o,s:f,s:I,s:I,s:f,s:f,s:f}", "id",
                            (json_int_t)atoll(PQgetvalue(res, i, 0)), "content",
                            PQgetvalue(res, i, 1), "memory_type", PQgetvalue(res, i, 2),
                            "context", ctx ? ctx : json_object(), "importance",
                            atof(PQgetvalue(res, i, 4)), "access_count",
                            (json_int_t)atoll(PQgetvalue(res, i, 7)), "feedback",
                            (json_int_t)atoll(PQgetvalue(res, i, 8)), "created_at",
                            created, "last_access", atof(PQgetvalue(res, i, 6)),
                            "age_s", now - created);
    json_object_set_new(row, "user_id", opt_text(res, i, 10));
    json_object_set_new(row, "agent_id", opt_text(res, i, 11));
    json_object_set_new(row, "session_id", opt_text(res, i, 12));
    json_object_set_new(row, "decayed_at", PQgetisnull(res, i, 13) ? json_null()
                                           : json_real(atof(PQgetvalue(res, i, 13))));
    return row;
}

/* On a worker: the batch's ids, vectors and JSON rows, then (neighbors
 * > 0) the neighbour search. */
static void batch_work(void *arg)
{
    cons_run *r = arg;
    size_t dim = (size_t)r->dim;
    double now = wall_s();
    for (size_t i = 0; i < r->n; i++) {
        r->ids[i] = atoll(PQgetvalue(r->res, (int)i, 0));
        if (r->k) /* neighbors: 0 read no embeddings (sql.batch_novec) */
            mem_decode_vec(PQgetvalue(r->res, (int)i, 9), r->vecs + i * dim, (int)dim);
        json_t *row = batch_row(r->res, (int)i, now);
        if (!r->k) /* no search: nbrows_work does not run */
            json_object_set_new(row, "neighbors", json_array());
        json_array_append_new(r->batch, row);
    }
    if (r->k)
        neighbors_work(r);
}

static void batch_done(void *arg, int cancelled)
{
    cons_run *r = arg;
    PQclear(r->res);
    r->res = NULL;
    if (cancelled || r->m->freeing)
        run_end(r, "shutting down");
    else if (!r->k) /* neighbors: 0 - no search, no rows to read */
        call_plugin(r);
    else
        fetch_nbrows(r);
}

/* Like on_nbrows: copied here, read on a worker. */
static void on_batch(void *arg, PGresult *res, const char *err)
{
    cons_run *r = arg;
    if (!res || err) {
        run_end(r, err ? err : "closed");
        return;
    }
    size_t n = (size_t)PQntuples(res), dim = (size_t)r->m->dim;
    r->dim = (int)dim; /* a swap may change the index's before the search */
    size_t nk = n * r->k > 0 ? n * r->k : 1;
    r->ids = malloc((n ? n : 1) * sizeof(*r->ids));
    r->vecs = calloc(n && r->k ? n * dim : 1, sizeof(float));
    r->nb_ids = malloc(nk * sizeof(int64_t));
    r->nb_cos = malloc(nk * sizeof(float));
    r->batch = json_array();
    r->res = PQcopyResult(res, PG_COPYRES_ATTRS | PG_COPYRES_TUPLES);
    if (!r->ids || !r->vecs || !r->nb_ids || !r->nb_cos || !r->batch || !r->res) {
        run_end(r, "out of memory");
        return;
    }
    r->n = n;
    r->end = n < r->limit;
    if (sophia_workers_submit(r->m->pool, batch_work, batch_done, r) != 0)
        run_end(r, "shutting down");
}

static int fetch_batch(cons_run *r)
{
    mem_consolidator *c = r->c;
    char lim[24], after[24];
    if (c->after_id == 0 && c->pass_started <= 0)
        c->pass_started = wall_s(); /* a pass begins */
    snprintf(lim, sizeof(lim), "%zu", r->limit);
    snprintf(after, sizeof(after), "%lld", (long long)c->after_id);
    const char *vals[2] = {lim, after};
    return sophia_pg_query(r->m->pg, r->k ? r->m->sql.batch : r->m->sql.batch_novec,
                           2, vals, NULL, NULL, on_batch, r);
}

/* The cursor as saved (none yet: the start), then the first batch. */
static void on_cursor(void *arg, PGresult *res, const char *err)
{
    cons_run *r = arg;
    mem_consolidator *c = r->c;
    if (!res || err) {
        run_end(r, err ? err : "closed");
        return;
    }
    if (PQntuples(res) == 1) {
        c->after_id = atoll(PQgetvalue(res, 0, 0));
        c->passes = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        c->pass_started = PQgetisnull(res, 0, 2) ? 0 : atof(PQgetvalue(res, 0, 2));
        c->last_pass_s = PQgetisnull(res, 0, 3) ? 0 : atof(PQgetvalue(res, 0, 3));
    }
    c->loaded = 1;
    if (r->m->freeing || fetch_batch(r) != 0)
        run_end(r, "cannot query PostgreSQL");
}

static int start_run(sophia_memory *m, mem_consolidator *c)
{
    if (!c->inst)
        return SOPHIA_ENOENT; /* its instance went away in a reload */
    if (c->running || m->state != MEM_READY || m->freeing)
        return SOPHIA_EBUSY;
    cons_run *r = calloc(1, sizeof(*r));
    if (!r)
        return SOPHIA_ENOMEM;
    r->m = m;
    r->c = c;
    r->limit = c->cc->batch ? c->cc->batch : SOPHIA_CONF_CONS_BATCH_DEFAULT;
    r->k = c->cc->neighbors;
    const char *vals[1] = {c->cc->instance};
    int rc = c->loaded ? fetch_batch(r)
                       : sophia_pg_query(m->pg, m->sql.cons_load, 1, vals, NULL,
                                         NULL, on_cursor, r);
    if (rc) {
        free(r);
        return rc;
    }
    c->running = 1;
    c->new_since = 0;
    return 0;
}

int sophia_memory_consolidate(sophia_memory *m, const char *instance)
{
    for (size_t i = 0; m && i < m->ncons; i++)
        if (!strcmp(m->cons[i].cc->instance, instance))
            return start_run(m, &m->cons[i]);
    return SOPHIA_ENOENT;
}

/* ------------------------------------------------------- schedules */

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mem_consolidator *c = arg;
    start_run(c->m, c); /* busy (still running, loading): next tick */
}

void mem_cons_on_store(sophia_memory *m)
{
    for (size_t i = 0; i < m->ncons; i++) {
        mem_consolidator *c = &m->cons[i];
        if (c->cc->after_new && ++c->new_since >= c->cc->after_new)
            start_run(m, c);
    }
}

int mem_cons_init(sophia_memory *m, const sophia_plugin_set *plugins)
{
    const sophia_conf *conf = m->conf;
    size_t n = conf->memory.nconsolidate;
    m->cons = calloc(n ? n : 1, sizeof(*m->cons));
    if (!m->cons)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const sophia_conf_consolidate *cc = &conf->memory.consolidate[i];
        sophia_instance *in = plugins ? sophia_plugin_set_find(plugins, cc->instance) : NULL;
        if (!in || in->desc->kind != SOPHIA_KIND_CONSOLIDATOR) {
            sophia_error("memory", "msg=\"memory.consolidate names no consolidator "
                         "plugin instance; ignored\" instance=%s", cc->instance);
            continue;
        }
        mem_consolidator *c = &m->cons[m->ncons++];
        c->m = m;
        c->inst = in;
        c->cc = cc;
        if (cc->every > 0) {
            struct timeval tv = {(time_t)cc->every,
                                 (suseconds_t)((cc->every - (double)(time_t)cc->every) * 1e6)};
            c->timer = event_new(m->base, -1, EV_PERSIST, on_timer, c);
            if (!c->timer || evtimer_add(c->timer, &tv) < 0)
                return -1;
        }
    }
    return 0;
}

void sophia_memory_set_cons_runner(sophia_memory *m,
                                   sophia_memory_cons_runner fn, void *arg)
{
    if (!m)
        return;
    m->cons_run = fn;
    m->cons_run_arg = arg;
}

void sophia_memory_rebind(sophia_memory *m, const sophia_plugin_set *plugins)
{
    for (size_t i = 0; m && i < m->ncons; i++) {
        mem_consolidator *c = &m->cons[i];
        sophia_instance *in = sophia_plugin_set_find(plugins, c->cc->instance);
        c->inst = in && in->desc->kind == SOPHIA_KIND_CONSOLIDATOR ? in : NULL;
    }
}

void mem_cons_free(sophia_memory *m)
{
    for (size_t i = 0; i < m->ncons; i++)
        if (m->cons[i].timer)
            event_free(m->cons[i].timer);
    free(m->cons);
    m->cons = NULL;
    m->ncons = 0;
}
