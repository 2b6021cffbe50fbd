/*
 * memory_store - the write path: validating a memory, storing it (embed on
 * a worker, INSERT on the loop, add to the index on a worker, then the
 * type counts, the consolidators' tally and a deferred index save), and
 * feedback. Each store is a heap job that moves between the loop and the
 * pool as memory.c describes; a store that arrives before the index is
 * loaded waits in mem_when_ready's queue.
 */
#include "memory/memory_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "lib/log.h"

#define MEM_DEFAULT_IMPORTANCE 0.5

/* ---------------------------------------------------------- validation */

static const char *check_context(const json_t *ctx)
{
    if (!json_is_object(ctx))
        return "context must be a JSON object of key -> string, number or boolean";
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ctx, k, v) {
        if (!*k || strlen(k) > 128)
            return "context keys must be 1..128 characters";
        if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v))
            return "context values must be strings, numbers or booleans";
    }
    return NULL;
}

const char *sophia_memory_check(const sophia_memory *m, const json_t *content,
                                const json_t *memory_type,
                                const json_t *context, const json_t *importance,
                                char *buf, size_t buflen)
{
    if (!json_is_string(content))
        return "content is required and must be a string";
    size_t len = json_string_length(content);
    const char *s = json_string_value(content);
    size_t blank = strspn(s, " \t\r\n");
    if (len == 0 || blank == len)
        return "content must not be empty";
    if (len > m->conf->memory.max_content) {
        snprintf(buf, buflen, "content is %zu bytes; the limit is %zu "
                 "(memory.max_content)", len, m->conf->memory.max_content);
        return buf;
    }
    if (memchr(s, '\0', len))
        return "content must not contain NUL characters";
    if (memory_type && !json_is_string(memory_type))
        return "memory_type must be a string (e.g. fact, event, insight, user_preference)";
    if (memory_type && (json_string_length(memory_type) == 0 ||
                        json_string_length(memory_type) > SOPHIA_MEM_MAX_TYPE))
        return "memory_type must be 1..64 characters";
    if (context && !json_is_null(context)) {
        const char *e = check_context(context);
        if (e)
            return e;
    }
    if (importance && !json_is_null(importance) &&
        (!json_is_number(importance) || json_number_value(importance) < 0 ||
         json_number_value(importance) > 1))
        return "importance must be a number from 0 to 1";
    return NULL;
}

/* NULL when v is absent, null or a good scope value; else the message. */
static const char *check_one_scope(const json_t *v, const char *name)
{
    if (!v || json_is_null(v))
        return NULL;
    if (json_is_string(v) && json_string_length(v) >= 1 &&
        json_string_length(v) <= SOPHIA_MEM_MAX_SCOPE &&
        !memchr(json_string_value(v), '\0', json_string_length(v)))
        return NULL;
    return name[0] == 'u'   ? "user_id must be a string of 1..128 bytes"
           : name[0] == 'a' ? "agent_id must be a string of 1..128 bytes"
                            : "session_id must be a string of 1..128 bytes";
}

const char *sophia_memory_check_scope(const json_t *user_id, const json_t *agent_id,
                                      const json_t *session_id)
{
    const char *e = check_one_scope(user_id, "user_id");
    if (!e)
        e = check_one_scope(agent_id, "agent_id");
    if (!e)
        e = check_one_scope(session_id, "session_id");
    return e;
}

/* ISO 8601 date at the start: YYYY-MM-DD. */
static int is_iso_date(const char *s)
{
    for (int i = 0; i < 10; i++) {
        int want_dash = i == 4 || i == 7;
        if (want_dash ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
            return 0;
    }
    return 1;
}

static const char *check_ops(const char *key, const json_t *ops, char *buf, size_t n)
{
    const char *op;
    json_t *v;
    if (json_object_size(ops) == 0)
        return snprintf(buf, n, "context filter %.128s: an operator object needs "
                        "in, gt, gte, lt or lte", key), buf;
    json_object_foreach((json_t *)ops, op, v) {
        if (!strcmp(op, "in")) {
            size_t i;
            json_t *e;
            if (!json_is_array(v) || json_array_size(v) < 1 ||
                json_array_size(v) > SOPHIA_MEM_MAX_IN)
                return snprintf(buf, n, "context filter %.128s: in must be an array "
                                "of 1..%d values", key, SOPHIA_MEM_MAX_IN), buf;
            json_array_foreach(v, i, e) if (!json_is_string(e) && !json_is_number(e) &&
                                            !json_is_boolean(e))
                return snprintf(buf, n, "context filter %.128s: in values must be "
                                "strings, numbers or booleans", key), buf;
        } else if (!strcmp(op, "gt") || !strcmp(op, "gte") || !strcmp(op, "lt") ||
                   !strcmp(op, "lte")) {
            if (!json_is_number(v) && !(json_is_string(v) && is_iso_date(json_string_value(v))))
                return snprintf(buf, n, "context filter %.128s: %s must be a number or "
                                "an ISO 8601 date (YYYY-MM-DD...)", key, op), buf;
        } else {
            return snprintf(buf, n, "context filter %.128s: unknown operator %.32s "
                            "(in, gt, gte, lt, lte)", key, op), buf;
        }
    }
    return NULL;
}

const char *sophia_memory_check_filter(const json_t *filter, char *buf, size_t n)
{
    const char *k;
    json_t *v;
    if (!filter)
        return NULL;
    if (!json_is_object(filter))
        return "a context filter must be an object of KEY -> value or {operator: value}";
    json_object_foreach((json_t *)filter, k, v) {
        if (!*k || strlen(k) > 128)
            return "context filter keys must be 1..128 characters";
        if (json_is_object(v)) {
            const char *e = check_ops(k, v, buf, n);
            if (e)
                return e;
        } else if (!json_is_string(v) && !json_is_number(v) && !json_is_boolean(v)) {
            snprintf(buf, n, "context filter %.128s: a value must be a string, number, "
                     "boolean or an operator object", k);
            return buf;
        }
    }
    return NULL;
}

/* --------------------------------------------------------------- store */

typedef struct store_job {
    sophia_memory *m;
    char *content, *type, *context;
    char *scope[3]; /* user_id, agent_id, session_id; NULL = not set */
    char importance[32];
    mem_vecs vecs;
    int began; /* vecs taken (store_start) */
    int64_t id;
    int ok, upgrade;
    sophia_memory_store_cb cb;
    void *arg;
} store_job;

static void store_finish(store_job *j, int err, const char *msg)
{
    if (err)
        j->m->store_errors++;
    if (j->cb)
        j->cb(j->arg, err ? 0 : j->id, err, msg);
    free(j->content);
    free(j->type);
    free(j->context);
    for (int i = 0; i < 3; i++)
        free(j->scope[i]);
    if (j->began)
        mem_vecs_end(j->m, &j->vecs);
    free(j);
}

static void store_added(void *arg, int cancelled)
{
    store_job *j = arg;
    sophia_memory *m = j->m;
    if (cancelled || !j->ok) {
        /* The row exists; the next start's count check rebuilds. */
        store_finish(j, SOPHIA_EIO, cancelled ? "shutting down" : "faiss add failed");
        return;
    }
    m->stores++;
    mem_count_type(m, j->type, 1);
    mem_mark_dirty(m);
    int upgrade = j->upgrade;
    store_finish(j, 0, NULL);
    if (!m->freeing) {
        mem_cons_on_store(m);
        mem_re_kick(m); /* a fit once the store grew enough */
    }
    if (upgrade)
        mem_rebuild(m);
}

static void add_work(void *arg)
{
    store_job *j = arg;
    sophia_memory *m = j->m;
    pthread_rwlock_wrlock(&m->lock);
    j->ok = m->index && mem_vecs_index(m, j->id, &j->vecs, 0) == 0;
    /* auto: a Flat index that reached hnsw_threshold becomes HNSW */
    j->upgrade = j->ok && !m->hnsw &&
                 mem_want_hnsw(m, (int64_t)faiss_Index_ntotal(m->index) - (int64_t)m->ntomb);
    pthread_rwlock_unlock(&m->lock);
}

static void on_inserted(void *arg, PGresult *res, const char *err)
{
    store_job *j = arg;
    if (!res || err) {
        store_finish(j, res ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL, err ? err : "closed");
        return;
    }
    j->id = atoll(PQgetvalue(res, 0, 0));
    if (sophia_workers_submit(j->m->pool, add_work, store_added, j) != 0)
        store_finish(j, SOPHIA_EUNAVAIL, "shutting down");
}

static void embed_work(void *arg)
{
    store_job *j = arg;
    j->ok = mem_vecs_embed(&j->vecs, j->content) == 0;
}

static void store_embedded(void *arg, int cancelled)
{
    store_job *j = arg;
    if (cancelled || !j->ok || j->m->freeing) {
        store_finish(j, SOPHIA_EUNAVAIL, "embedding failed or shutting down");
        return;
    }
    const float *emb, *next;
    int elen, nlen;
    mem_vecs_columns(j->m, &j->vecs, &emb, &elen, &next, &nlen);
    const char *vals[9] = {j->content, j->type, j->context, j->importance,
                           emb ? (const char *)emb : "", j->scope[0], j->scope[1],
                           j->scope[2], (const char *)next};
    int lens[9] = {0, 0, 0, 0, elen, 0, 0, 0, nlen};
    int fmts[9] = {0, 0, 0, 0, 1, 0, 0, 0, 1};
    int rc = sophia_pg_query(j->m->pg, j->m->sql.insert, 9, vals, lens, fmts,
                             on_inserted, j);
    if (rc)
        store_finish(j, rc, "PostgreSQL queue full");
}

static void store_start(void *op)
{
    store_job *j = op;
    j->began = 1;
    if (mem_vecs_begin(j->m, &j->vecs) < 0)
        store_finish(j, SOPHIA_ENOMEM, "out of memory");
    else if (sophia_workers_submit(j->m->pool, embed_work, store_embedded, j) != 0)
        store_finish(j, SOPHIA_EUNAVAIL, "shutting down");
}

static void store_fail(void *op, int err, const char *msg)
{
    store_finish(op, err, msg);
}

int sophia_memory_store(sophia_memory *m, const char *content,
                        const char *memory_type, const json_t *context,
                        double importance, sophia_memory_store_cb cb, void *arg)
{
    return sophia_memory_store_scoped(m, content, memory_type, context, importance,
                                      NULL, cb, arg);
}

/* The scope field, else the context's value of that key when it is a
 * valid scope string; 0, or -1 when out of memory. */
static int scope_field(char **out, const char *given, const json_t *context,
                       const char *key)
{
    const json_t *v = json_object_get(context, key);
    if (!given && json_is_string(v) && !check_one_scope(v, key))
        given = json_string_value(v);
    *out = given ? strdup(given) : NULL;
    return given && !*out ? -1 : 0;
}

int sophia_memory_store_scoped(sophia_memory *m, const char *content,
                               const char *memory_type, const json_t *context,
                               double importance, const sophia_memory_scope *scope,
                               sophia_memory_store_cb cb, void *arg)
{
    store_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->m = m;
    j->cb = cb;
    j->arg = arg;
    j->content = strdup(content);
    j->type = strdup(memory_type && *memory_type ? memory_type : "fact");
    j->context = context ? json_dumps(context, JSON_COMPACT) : strdup("{}");
    snprintf(j->importance, sizeof(j->importance), "%.6g",
             importance < 0 ? MEM_DEFAULT_IMPORTANCE : importance > 1 ? 1.0 : importance);
    sophia_memory_scope none = {NULL, NULL, NULL};
    const sophia_memory_scope *s = scope ? scope : &none;
    int bad = scope_field(&j->scope[0], s->user_id, context, "user_id") |
              scope_field(&j->scope[1], s->agent_id, context, "agent_id") |
              scope_field(&j->scope[2], s->session_id, context, "session_id");
    int rc = SOPHIA_ENOMEM;
    if (!bad && j->content && j->type && j->context)
        rc = mem_when_ready(m, store_start, store_fail, j);
    if (rc) {
        j->cb = NULL;
        store_finish(j, rc, NULL);
    }
    return rc;
}

/* ------------------------------------------------------------ feedback */

typedef struct fb_job {
    sophia_memory_feedback_cb cb;
    void *arg;
} fb_job;

static void on_feedback(void *arg, PGresult *res, const char *err)
{
    fb_job *j = arg;
    int found = res && !err && PQntuples(res) == 1;
    double imp = found ? atof(PQgetvalue(res, 0, 0)) : 0;
    if (j->cb)
        j->cb(j->arg, found, imp, res && !err ? 0 : SOPHIA_EUNAVAIL, err);
    free(j);
}

int sophia_memory_feedback(sophia_memory *m, int64_t id, int useful,
                           sophia_memory_feedback_cb cb, void *arg)
{
    if (m->state == MEM_FAILED)
        return SOPHIA_EUNAVAIL;
    fb_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->cb = cb;
    j->arg = arg;
    char ids[32];
    snprintf(ids, sizeof(ids), "%lld", (long long)id);
    const char *vals[2] = {ids, useful ? "true" : "false"};
    int rc = sophia_pg_query(m->pg, m->sql.feedback, 2, vals, NULL, NULL,
                             on_feedback, j);
    if (rc)
        free(j);
    else
        m->feedbacks++;
    return rc;
}
