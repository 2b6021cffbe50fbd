/*
 * memory_crud - one memory at a time and by scope (the mem0-like API):
 * get, list (filters + keyset pagination), patch (re-embedding a changed
 * content), delete, and forgetting a scope (every row of a user, agent or
 * session, with its index entries and the in-process copies).
 *
 * Why it is built this way. Reads are one PostgreSQL query each. A list
 * pages by id (newest first, `id < cursor`), never by OFFSET, so page N
 * costs what page 1 does and rows stored meanwhile never shift a page.
 * A patch of the content follows the store's path (embed on a worker,
 * UPDATE on the loop, index on a worker); a Flat index replaces the
 * vector in place, an HNSW one (which cannot remove) gets the new vector
 * added under the same id and the old entry becomes superseded: searches
 * only take candidate ids from faiss and score them with the row's stored
 * embedding, so the old entry is harmless until the next rebuild leaves
 * it out (mem_index_replace). Deletion removes the rows in one statement,
 * then the live ones from the index (tombstones on HNSW); forgetting a
 * scope also starts a rebuild so the vectors leave the index, not only
 * its results, and drops the scope's access patterns held in memory.
 */
#include "memory/memory_priv.h"

#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "lib/log.h"

/* %1$s = the table. */
static char *fmt_t(const char *fmt, const char *t)
{
    size_t n = strlen(fmt) + 8 * strlen(t) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, t);
    return s;
}

#define SCOPE_IS(p, a, b, c)                                                  \
    "($" #a "::text IS NULL OR " p "user_id = $" #a ") AND ($" #b "::text "  \
    "IS NULL OR " p "agent_id = $" #b ") AND ($" #c "::text IS NULL OR " p   \
    "session_id = $" #c ")"
#define CTX_IS(n) MEM_CTX_FILTER(n)

int mem_crud_sql(mem_sql *q, const char *t)
{
    q->get = fmt_t("SELECT " MEM_COLS_HEAD ", NULL::bytea, " MEM_COLS_SCOPE
                   " FROM %1$s WHERE id = $1::bigint AND consolidated_into IS NULL", t);
    /* $1..$3 scope, $4 type, $5 context filter, $6 cursor, $7 limit */
    q->list = fmt_t("SELECT " MEM_COLS_HEAD ", NULL::bytea, " MEM_COLS_SCOPE
                    " FROM %1$s WHERE consolidated_into IS NULL AND "
                    SCOPE_IS("", 1, 2, 3) " AND ($4::text IS NULL OR memory_type "
                    "= $4) AND " CTX_IS(5) " AND ($6::bigint IS NULL OR id < "
                    "$6::bigint) ORDER BY id DESC LIMIT $7::int", t);
    /* $2..$6 new content, type, context, importance, embedding (NULL =
     * unchanged), $7 a re-embed's vector with a new embedding; the old type comes back for the type counts, and a new
     * content's words join the typo vocabulary like a store's. */
    q->patch = fmt_t("WITH o AS (SELECT id, memory_type AS old_type, content AS "
                     "old_content, context AS old_context, importance AS "
                     "old_importance FROM %1$s WHERE id = $1::bigint AND "
                     "consolidated_into IS NULL FOR UPDATE), h AS (INSERT INTO "
                     "%1$s_history (memory_id, event, detail) SELECT id, 'updated', "
                     "jsonb_strip_nulls(jsonb_build_object('content', $2::text, "
                     "'old_content', CASE WHEN $2::text IS NOT NULL THEN old_content "
                     "END, 'memory_type', $3::text, 'old_memory_type', CASE WHEN "
                     "$3::text IS NOT NULL THEN old_type END, 'context', $4::jsonb, "
                     "'old_context', CASE WHEN $4::jsonb IS NOT NULL THEN old_context "
                     "END, 'importance', $5::real, 'old_importance', CASE WHEN "
                     "$5::real IS NOT NULL THEN old_importance END)) FROM o), u AS (UPDATE %1$s t SET content = COALESCE($2::text, "
                     "t.content), memory_type = COALESCE($3::text, t.memory_type), "
                     "context = COALESCE($4::jsonb, t.context), importance = "
                     "COALESCE($5::real, t.importance), embedding = "
                     "COALESCE($6::bytea, t.embedding), embedding_next = CASE "
                     "WHEN $6::bytea IS NULL THEN t.embedding_next ELSE "
                     "$7::bytea END FROM o WHERE t.id = o.id "
                     "RETURNING t.*, o.old_type), v AS (INSERT INTO %1$s_words "
                     "SELECT DISTINCT w.lexeme FROM u, unnest(u.tsv) w WHERE "
                     "$2::text IS NOT NULL AND " MEM_NOT_STOP("w.lexeme") " ON "
                     "CONFLICT DO NOTHING) SELECT "
                     MEM_COLS_HEAD ", NULL::bytea, " MEM_COLS_SCOPE ", old_type "
                     "FROM u", t);
    /* $1 one id (or NULL), $2..$4 a scope; merged rows go too (their
     * content is the user's as well). live = 1: it is in the index. One
     * memory deleted leaves a `deleted` event in its history; a forgotten
     * scope takes its history along (it holds the contents). */
    q->del_scope = fmt_t("WITH x AS (DELETE FROM %1$s WHERE ($1::bigint IS NULL "
                         "OR id = $1::bigint) AND " SCOPE_IS("", 2, 3, 4) " RETURNING "
                         "id, memory_type, (consolidated_into IS NULL)::int AS live), "
                         "h AS (INSERT INTO %1$s_history (memory_id, event, detail) "
                         "SELECT id, 'deleted', '{\"by\":\"api\"}' FROM x WHERE "
                         "$1::bigint IS NOT NULL), hd AS (DELETE FROM %1$s_history "
                         "WHERE $1::bigint IS NULL AND memory_id IN (SELECT id FROM "
                         "x)) SELECT id, memory_type, live FROM x", t);
    q->history = fmt_t("SELECT event, extract(epoch FROM at)::float8, detail::text "
                       "FROM %1$s_history WHERE memory_id = $1::bigint ORDER BY seq", t);
    return q->get && q->list && q->patch && q->del_scope && q->history ? 0 : -1;
}

void mem_crud_sql_free(mem_sql *q)
{
    free(q->get);
    free(q->list);
    free(q->patch);
    free(q->del_scope);
    free(q->history);
}

static json_t *text_or_null(PGresult *res, int i, int col)
{
    return PQgetisnull(res, i, col) ? json_null() : json_string(PQgetvalue(res, i, col));
}

json_t *mem_row_json(PGresult *res, int i)
{
    json_t *ctx = json_loads(PQgetvalue(res, i, 3), 0, NULL);
    return json_pack("{s:I,s:s,s:s,s:o,s:f,s:I,s:f,s:f,s:I,s:o,s:o,s:o}", "id",
                     (json_int_t)atoll(PQgetvalue(res, i, 0)), "content",
                     PQgetvalue(res, i, 1), "memory_type", PQgetvalue(res, i, 2),
                     "context", ctx ? ctx : json_object(), "importance",
                     atof(PQgetvalue(res, i, 4)), "access_count",
                     (json_int_t)atoll(PQgetvalue(res, i, 7)), "created_at",
                     atof(PQgetvalue(res, i, 5)), "last_access",
                     atof(PQgetvalue(res, i, 6)), "feedback",
                     (json_int_t)atoll(PQgetvalue(res, i, 8)), "user_id",
                     text_or_null(res, i, 10), "agent_id", text_or_null(res, i, 11),
                     "session_id", text_or_null(res, i, 12));
}

/* ------------------------------------------------------------- reads */

typedef struct read_job {
    sophia_memory_get_cb get_cb;
    sophia_memory_list_cb list_cb;
    size_t limit;
    void *arg;
} read_job;

static void on_get(void *arg, PGresult *res, const char *err)
{
    read_job *j = arg;
    if (!res || err) {
        j->get_cb(j->arg, NULL, res ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL, err ? err : "closed");
    } else if (PQntuples(res) == 0) {
        j->get_cb(j->arg, NULL, 0, NULL);
    } else {
        json_t *o = mem_row_json(res, 0);
        j->get_cb(j->arg, o, o ? 0 : SOPHIA_ENOMEM, o ? NULL : "out of memory");
        json_decref(o);
    }
    free(j);
}

/* One statement with the memory's id as $1, answered through `done`. */
static int read_by_id(sophia_memory *m, const char *sql, int64_t id,
                      sophia_pg_cb done, sophia_memory_get_cb cb, void *arg)
{
    if (m->state == MEM_FAILED)
        return SOPHIA_EUNAVAIL;
    read_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->get_cb = cb;
    j->arg = arg;
    char ids[24];
    snprintf(ids, sizeof(ids), "%lld", (long long)id);
    const char *vals[1] = {ids};
    int rc = sophia_pg_query(m->pg, sql, 1, vals, NULL, NULL, done, j);
    if (rc)
        free(j);
    return rc;
}

int sophia_memory_get(sophia_memory *m, int64_t id, sophia_memory_get_cb cb,
                      void *arg)
{
    return read_by_id(m, m->sql.get, id, on_get, cb, arg);
}

static void on_list(void *arg, PGresult *res, const char *err)
{
    read_job *j = arg;
    if (!res || err) {
        j->list_cb(j->arg, NULL, 0, res ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL,
                   err ? err : "closed");
        free(j);
        return;
    }
    /* One row more than asked says whether there is a next page. */
    size_t n = (size_t)PQntuples(res);
    size_t shown = n > j->limit ? j->limit : n;
    json_t *a = json_array();
    for (size_t i = 0; i < shown; i++)
        json_array_append_new(a, mem_row_json(res, (int)i));
    int64_t next = n > j->limit && shown ? atoll(PQgetvalue(res, (int)shown - 1, 0)) : 0;
    j->list_cb(j->arg, a, next, 0, NULL);
    json_decref(a);
    free(j);
}

int sophia_memory_list(sophia_memory *m, const sophia_memory_list_q *q,
                       sophia_memory_list_cb cb, void *arg)
{
    char why[200];
    if (q->limit < 1 || q->limit > SOPHIA_MEM_MAX_LIST ||
        sophia_memory_check_filter(q->filter, why, sizeof(why)))
        return SOPHIA_EINVAL;
    if (m->state == MEM_FAILED)
        return SOPHIA_EUNAVAIL;
    read_job *j = calloc(1, sizeof(*j));
    char *filter = q->filter ? json_dumps(q->filter, JSON_COMPACT) : strdup("{}");
    if (!j || !filter) {
        free(j);
        free(filter);
        return SOPHIA_ENOMEM;
    }
    j->list_cb = cb;
    j->arg = arg;
    j->limit = q->limit;
    char before[24], lim[24];
    snprintf(before, sizeof(before), "%lld", (long long)q->before);
    snprintf(lim, sizeof(lim), "%zu", q->limit + 1);
    const char *vals[7] = {q->scope.user_id, q->scope.agent_id, q->scope.session_id,
                           q->memory_type, filter, q->before > 0 ? before : NULL, lim};
    int rc = sophia_pg_query(m->pg, m->sql.list, 7, vals, NULL, NULL, on_list, j);
    free(filter);
    if (rc)
        free(j);
    return rc;
}

static void on_history(void *arg, PGresult *res, const char *err)
{
    read_job *j = arg;
    if (!res || err) {
        j->get_cb(j->arg, NULL, res ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL, err ? err : "closed");
        free(j);
        return;
    }
    json_t *a = PQntuples(res) ? json_array() : NULL;
    for (int i = 0; a && i < PQntuples(res); i++) {
        json_t *d = json_loads(PQgetvalue(res, i, 2), 0, NULL);
        json_array_append_new(a, json_pack("{s:s,s:f,s:o}", "event",
                                           PQgetvalue(res, i, 0), "at",
                                           atof(PQgetvalue(res, i, 1)), "detail",
                                           d ? d : json_object()));
    }
    j->get_cb(j->arg, a, 0, NULL);
    json_decref(a);
    free(j);
}

int sophia_memory_history(sophia_memory *m, int64_t id, sophia_memory_get_cb cb,
                          void *arg)
{
    return read_by_id(m, m->sql.history, id, on_history, cb, arg);
}

/* ------------------------------------------------------------- patch */

typedef struct patch_job {
    sophia_memory *m;
    int64_t id;
    char *content, *type, *context;
    char importance[32]; /* "" = unchanged */
    mem_vecs vecs;       /* the new content's embeddings */
    int began;           /* vecs taken (patch_start) */
    int ok;
    json_t *out;         /* the patched memory */
    sophia_memory_get_cb cb;
    void *arg;
} patch_job;

static void patch_finish(patch_job *j, const json_t *out, int err, const char *msg)
{
    if (j->cb)
        j->cb(j->arg, out, err, msg);
    json_decref(j->out);
    free(j->content);
    free(j->type);
    free(j->context);
    if (j->began)
        mem_vecs_end(j->m, &j->vecs);
    free(j);
}

static void replace_work(void *arg)
{
    patch_job *j = arg;
    pthread_rwlock_wrlock(&j->m->lock);
    j->ok = mem_vecs_index(j->m, j->id, &j->vecs, 1) == 0;
    pthread_rwlock_unlock(&j->m->lock);
}

static void replaced(void *arg, int cancelled)
{
    patch_job *j = arg;
    if (cancelled || !j->ok) {
        /* The row has the new embedding; the next start's rebuild agrees. */
        patch_finish(j, NULL, SOPHIA_EIO, cancelled ? "shutting down" : "faiss update failed");
        return;
    }
    mem_mark_dirty(j->m);
    patch_finish(j, j->out, 0, NULL);
}

static void on_patched(void *arg, PGresult *res, const char *err)
{
    patch_job *j = arg;
    if (!res || err) {
        patch_finish(j, NULL, res ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL, err ? err : "closed");
        return;
    }
    if (PQntuples(res) == 0) {
        patch_finish(j, NULL, 0, NULL); /* no live memory with that id */
        return;
    }
    j->out = mem_row_json(res, 0);
    const char *old_type = PQgetvalue(res, 0, 13);
    if (strcmp(old_type, PQgetvalue(res, 0, 2)) != 0) {
        mem_count_type(j->m, old_type, -1);
        mem_count_type(j->m, PQgetvalue(res, 0, 2), 1);
    }
    if (!j->began) {
        patch_finish(j, j->out, 0, NULL);
        return;
    }
    if (sophia_workers_submit(j->m->pool, replace_work, replaced, j) != 0)
        patch_finish(j, NULL, SOPHIA_EUNAVAIL, "shutting down");
}

static void patch_query(patch_job *j)
{
    char ids[24];
    snprintf(ids, sizeof(ids), "%lld", (long long)j->id);
    const float *emb = NULL, *next = NULL;
    int elen = 0, nlen = 0;
    if (j->began)
        mem_vecs_columns(j->m, &j->vecs, &emb, &elen, &next, &nlen);
    const char *vals[7] = {ids, j->content, j->type, j->context,
                           j->importance[0] ? j->importance : NULL,
                           j->began ? (emb ? (const char *)emb : "") : NULL,
                           (const char *)next};
    int lens[7] = {0, 0, 0, 0, 0, elen, nlen};
    int fmts[7] = {0, 0, 0, 0, 0, 1, 1};
    int rc = sophia_pg_query(j->m->pg, j->m->sql.patch, 7, vals, lens, fmts,
                             on_patched, j);
    if (rc)
        patch_finish(j, NULL, rc, "PostgreSQL queue full");
}

static void embed_work(void *arg)
{
    patch_job *j = arg;
    j->ok = mem_vecs_embed(&j->vecs, j->content) == 0;
}

static void embedded(void *arg, int cancelled)
{
    patch_job *j = arg;
    if (cancelled || !j->ok || j->m->freeing)
        patch_finish(j, NULL, SOPHIA_EUNAVAIL, "embedding failed or shutting down");
    else
        patch_query(j);
}

static void patch_start(void *op)
{
    patch_job *j = op;
    if (!j->content)
        patch_query(j);
    else if ((j->began = 1, mem_vecs_begin(j->m, &j->vecs)) < 0)
        patch_finish(j, NULL, SOPHIA_ENOMEM, "out of memory");
    else if (sophia_workers_submit(j->m->pool, embed_work, embedded, j) != 0)
        patch_finish(j, NULL, SOPHIA_EUNAVAIL, "shutting down");
}

static void patch_fail(void *op, int err, const char *msg)
{
    patch_finish(op, NULL, err, msg);
}

int sophia_memory_patch(sophia_memory *m, int64_t id, const sophia_memory_change *c,
                        sophia_memory_get_cb cb, void *arg)
{
    patch_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->m = m;
    j->id = id;
    j->cb = cb;
    j->arg = arg;
    int bad = 0;
    if (c->content) {
        j->content = strdup(c->content);
        bad |= !j->content;
    }
    if (c->memory_type)
        bad |= !(j->type = strdup(c->memory_type));
    if (c->context)
        bad |= !(j->context = json_dumps(c->context, JSON_COMPACT));
    if (c->importance >= 0)
        snprintf(j->importance, sizeof(j->importance), "%.6g",
                 c->importance > 1 ? 1.0 : c->importance);
    int rc = bad ? SOPHIA_ENOMEM : mem_when_ready(m, patch_start, patch_fail, j);
    if (rc) {
        j->cb = NULL;
        patch_finish(j, NULL, rc, NULL);
    }
    return rc;
}

/* ------------------------------------------------------------ delete */

typedef struct del_job {
    sophia_memory *m;
    int64_t *ids; /* the live ones: they leave the index */
    size_t nids, deleted, tombs;
    int purge, rebuild;
    char *user; /* forgetting a user: its access patterns go too */
    sophia_memory_delete_cb cb;
    void *arg;
} del_job;

static void del_finish(del_job *j, int err, const char *msg)
{
    if (j->cb)
        j->cb(j->arg, err ? 0 : j->deleted, err, msg);
    free(j->ids);
    free(j->user);
    free(j);
}

static void unindex_work(void *arg)
{
    del_job *j = arg;
    j->tombs = mem_index_remove(j->m, j->ids, j->nids, &j->rebuild);
}

static void unindexed(void *arg, int cancelled)
{
    del_job *j = arg;
    sophia_memory *m = j->m;
    if (cancelled) {
        /* The rows are gone; the next start's count check rebuilds. */
        del_finish(j, SOPHIA_EUNAVAIL, "shutting down");
        return;
    }
    m->tombstones = j->tombs;
    mem_mark_dirty(m);
    /* Forgetting: tombstoned vectors are still in the HNSW graph and its
     * file; a rebuild leaves them out. */
    int rebuild = j->rebuild || (j->purge && j->tombs > 0);
    if (j->purge && j->tombs > 0 && m->rebuild_running)
        m->purge_wanted = 1; /* rebuild_done starts the next one */
    del_finish(j, 0, NULL);
    if (rebuild && !m->freeing)
        mem_rebuild(m);
}

static void on_deleted(void *arg, PGresult *res, const char *err)
{
    del_job *j = arg;
    sophia_memory *m = j->m;
    if (!res || err) {
        del_finish(j, res ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL, err ? err : "closed");
        return;
    }
    size_t n = (size_t)PQntuples(res);
    j->deleted = n;
    j->ids = malloc((n ? n : 1) * sizeof(*j->ids));
    if (!j->ids) {
        del_finish(j, SOPHIA_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (atoi(PQgetvalue(res, (int)i, 2)) != 1)
            continue; /* merged earlier: not indexed, not counted */
        j->ids[j->nids++] = atoll(PQgetvalue(res, (int)i, 0));
        mem_count_type(m, PQgetvalue(res, (int)i, 1), -1);
    }
    mem_access_forget(m, j->user, j->ids, j->nids);
    if (!j->nids) {
        del_finish(j, 0, NULL);
        return;
    }
    if (m->freeing || sophia_workers_submit(m->pool, unindex_work, unindexed, j) != 0)
        del_finish(j, SOPHIA_EUNAVAIL, "shutting down");
}

static int del_run(sophia_memory *m, const char *id, const sophia_memory_scope *s,
                   int purge, sophia_memory_delete_cb cb, void *arg)
{
    if (m->state != MEM_READY)
        return SOPHIA_EUNAVAIL; /* the index must be there to leave it */
    del_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->m = m;
    j->purge = purge;
    j->cb = cb;
    j->arg = arg;
    if (s && s->user_id && !(j->user = strdup(s->user_id))) {
        free(j);
        return SOPHIA_ENOMEM;
    }
    const char *vals[4] = {id, s ? s->user_id : NULL, s ? s->agent_id : NULL,
                           s ? s->session_id : NULL};
    int rc = sophia_pg_query(m->pg, m->sql.del_scope, 4, vals, NULL, NULL,
                             on_deleted, j);
    if (rc) {
        j->cb = NULL;
        del_finish(j, rc, NULL);
    }
    return rc;
}

int sophia_memory_delete(sophia_memory *m, int64_t id, sophia_memory_delete_cb cb,
                         void *arg)
{
    char ids[24];
    snprintf(ids, sizeof(ids), "%lld", (long long)id);
    return del_run(m, ids, NULL, 0, cb, arg);
}

int sophia_memory_forget(sophia_memory *m, const sophia_memory_scope *scope,
                         sophia_memory_delete_cb cb, void *arg)
{
    if (!scope || (!scope->user_id && !scope->agent_id && !scope->session_id))
        return SOPHIA_EINVAL;
    return del_run(m, NULL, scope, 1, cb, arg);
}
