/*
 * memory_consolidate - running consolidator plugins over the memory store.
 *
 * A run has four steps, none of which blocks the loop:
 *  1. loop: fetch the live memories (oldest first, at most
 *     MEM_CONS_BATCH rows) from PostgreSQL;
 *  2. worker: for each one, its nearest live neighbours in the faiss index
 *     (one batched search under the read lock) - the CPU-heavy part, done
 *     by the host so plugins stay simple;
 *  3. loop: build the batch as JSON and call the plugin's run(state, ctx);
 *     it reads host->memory_batch(ctx) and queues memory_merge /
 *     memory_expire (and any other action);
 *  4. loop + worker: apply each merge or expiry in PostgreSQL, then remove
 *     the dropped ids from the index in one worker job, and save it later.
 * Ingest and search go on meanwhile; a memory stored during a run is
 * simply not part of it. One run per instance at a time: a schedule that
 * fires while its previous run is still going is skipped.
 *
 * Schedules come from memory.consolidate.<instance>: `every` (a timer)
 * and/or `after_new` (count of memories stored since the last run).
 */
#include "memory/memory_priv.h"

#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/Index_c.h>
#include <sophia/sdk.h>

#include "host/host.h"
#include "lib/log.h"
#include "event/loop.h"

#define MEM_CONS_BATCH 5000
#define MEM_CONS_NEIGHBORS 8
#define MEM_CONS_MIN_COS 0.5f

typedef struct cons_run {
    sophia_memory *m;
    mem_consolidator *c;
    size_t n;
    int64_t *ids;
    float *vecs;
    int64_t *nb_ids; /* n * NEIGHBORS, -1 = none */
    float *nb_cos;
    json_t *batch;
    json_t *ops;
    size_t pending; /* PostgreSQL statements in flight */
    int64_t *removed;
    size_t nremoved;
    size_t tombs; /* after the removal (stats) */
    int rebuild;  /* enough tombstones for a background rebuild */
    uint64_t merged, expired;
} cons_run;

static void run_free(cons_run *r)
{
    free(r->ids);
    free(r->vecs);
    free(r->nb_ids);
    free(r->nb_cos);
    free(r->removed);
    json_decref(r->batch);
    json_decref(r->ops);
    free(r);
}

static void run_end(cons_run *r, const char *why)
{
    if (why && !r->m->freeing)
        sophia_warn("memory", "msg=\"consolidation failed\" instance=%s error=\"%s\"",
                    r->c->cc->instance, why);
    r->c->running = 0;
    r->m->consolidations++;
    r->m->merged += r->merged;
    r->m->expired += r->expired;
    if (r->nremoved)
        mem_mark_dirty(r->m);
    if (!why)
        sophia_debug("memory", "msg=\"consolidated\" instance=%s looked_at=%zu "
                     "merged=%llu expired=%llu", r->c->cc->instance, r->n,
                     (unsigned long long)r->merged, (unsigned long long)r->expired);
    run_free(r);
}

/* ------------------------------------------------- step 4: applying */

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
    int64_t id; /* the id that leaves the index */
    int merge;
} op_arg;

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
        int merge = !strcmp(json_string_value(json_object_get(op, "op")), "merge");
        char a1[24], a2[24];
        int64_t keep = json_integer_value(json_object_get(op, "keep"));
        int64_t id = json_integer_value(json_object_get(op, merge ? "drop" : "id"));
        snprintf(a1, sizeof(a1), "%lld", (long long)(merge ? keep : id));
        snprintf(a2, sizeof(a2), "%lld", (long long)id);
        const char *vals[2] = {a1, a2};
        op_arg *a = calloc(1, sizeof(*a));
        if (!a)
            break;
        a->r = r;
        a->id = id;
        a->merge = merge;
        if (sophia_pg_query(r->m->pg, merge ? r->m->sql.merge_keep : r->m->sql.expire,
                            merge ? 2 : 1, vals, NULL, NULL, on_op, a) == 0)
            r->pending++;
        else
            free(a);
    }
    op_applied(r);
}

/* --------------------------------------------- step 3: the plugin */

static json_t *neighbors_json(cons_run *r, size_t i)
{
    json_t *a = json_array();
    for (size_t k = 0; k < MEM_CONS_NEIGHBORS; k++) {
        int64_t id = r->nb_ids[i * MEM_CONS_NEIGHBORS + k];
        float cos = r->nb_cos[i * MEM_CONS_NEIGHBORS + k];
        if (id < 0 || id == r->ids[i] || cos < MEM_CONS_MIN_COS)
            continue;
        json_array_append_new(a, json_pack("{s:I,s:f}", "id", (json_int_t)id,
                                           "cosine", (double)cos));
    }
    return a;
}

static void call_plugin(cons_run *r)
{
    sophia_instance *in = r->c->inst;
    size_t i;
    json_t *row;
    if (!in) { /* removed by a reload while this run read its batch */
        run_end(r, "the consolidator instance is no longer loaded");
        return;
    }
    json_array_foreach(r->batch, i, row)
        json_object_set_new(row, "neighbors", neighbors_json(r, i));
    sophia_ctx *ctx = sophia_ctx_new(in, NULL);
    if (!ctx) {
        run_end(r, "out of memory");
        return;
    }
    sophia_memory_ctx_set_batch(ctx, r->batch);
    int rc = in->desc->consolidator->run(in->state, ctx);
    sophia_memory_ctx_set_batch(ctx, NULL);
    r->ops = sophia_memory_ctx_take_ops(ctx);
    if (rc == 0) {
        sophia_ctx_apply(ctx, NULL, NULL); /* its other actions: publish, alerts... */
        sophia_ctx_commit(ctx);
    }
    sophia_ctx_free(ctx);
    if (rc != 0) {
        run_end(r, "the plugin's run() failed; nothing applied");
        return;
    }
    apply_ops(r);
}

/* ------------------------------------------- step 2: neighbours */

static void neighbors_work(void *arg)
{
    cons_run *r = arg;
    sophia_memory *m = r->m;
    size_t total = r->n * MEM_CONS_NEIGHBORS;
    for (size_t i = 0; i < total; i++)
        r->nb_ids[i] = -1;
    pthread_rwlock_rdlock(&m->lock);
    if (m->index && r->n &&
        faiss_Index_search(m->index, (idx_t)r->n, r->vecs, MEM_CONS_NEIGHBORS,
                           r->nb_cos, (idx_t *)r->nb_ids) == 0) {
        for (size_t i = 0; i < total; i++)
            if (r->nb_ids[i] >= 0 && mem_is_tomb(m, r->nb_ids[i]))
                r->nb_ids[i] = -1;
    }
    pthread_rwlock_unlock(&m->lock);
}

static void neighbors_done(void *arg, int cancelled)
{
    cons_run *r = arg;
    if (cancelled || r->m->freeing)
        run_end(r, "shutting down");
    else
        call_plugin(r);
}

/* ---------------------------------------------- step 1: the rows */

static json_t *batch_row(PGresult *res, int i, double now)
{
    json_t *ctx = json_loads(PQgetvalue(res, i, 3), 0, NULL);
    double created = atof(PQgetvalue(res, i, 5));
    return json_pack("{s:I,s:s,s:s,s:o,s:f,s:I,s:I,s:f,s:f,s:f}", "id",
                     (json_int_t)atoll(PQgetvalue(res, i, 0)), "content",
                     PQgetvalue(res, i, 1), "memory_type", PQgetvalue(res, i, 2),
                     "context", ctx ? ctx : json_object(), "importance",
                     atof(PQgetvalue(res, i, 4)), "access_count",
                     (json_int_t)atoll(PQgetvalue(res, i, 7)), "feedback",
                     (json_int_t)atoll(PQgetvalue(res, i, 8)), "created_at",
                     created, "last_access", atof(PQgetvalue(res, i, 6)),
                     "age_s", now - created);
}

static void on_batch(void *arg, PGresult *res, const char *err)
{
    cons_run *r = arg;
    if (!res || err) {
        run_end(r, err ? err : "closed");
        return;
    }
    size_t n = (size_t)PQntuples(res), dim = (size_t)r->m->dim;
    r->ids = malloc((n ? n : 1) * sizeof(*r->ids));
    r->vecs = calloc((n ? n : 1) * dim, sizeof(float));
    r->nb_ids = malloc((n ? n : 1) * MEM_CONS_NEIGHBORS * sizeof(int64_t));
    r->nb_cos = malloc((n ? n : 1) * MEM_CONS_NEIGHBORS * sizeof(float));
    r->batch = json_array();
    if (!r->ids || !r->vecs || !r->nb_ids || !r->nb_cos || !r->batch) {
        run_end(r, "out of memory");
        return;
    }
    double now = (double)sophia_now_wall_us() / 1e6;
    for (size_t i = 0; i < n; i++) {
        r->ids[i] = atoll(PQgetvalue(res, (int)i, 0));
        mem_decode_vec(PQgetvalue(res, (int)i, 9), r->vecs + i * dim, (int)dim);
        json_array_append_new(r->batch, batch_row(res, (int)i, now));
    }
    r->n = n;
    if (sophia_workers_submit(r->m->pool, neighbors_work, neighbors_done, r) != 0)
        run_end(r, "shutting down");
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
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", MEM_CONS_BATCH);
    const char *vals[1] = {lim};
    int rc = sophia_pg_query(m->pg, m->sql.batch, 1, vals, NULL, NULL, on_batch, r);
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
