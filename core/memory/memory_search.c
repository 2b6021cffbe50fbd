/*
 * memory_search - hybrid retrieval; memory.h documents the ranking.
 *
 * One search is a job with two legs that run at once: the vector leg
 * (embed the query and search faiss, on a worker) and the text leg (the
 * full-text query, on PostgreSQL). When both are back, one more query
 * fetches the candidate rows with the context filter applied, and the
 * scoring - a few hundred multiply-adds - runs on the loop. Returned
 * memories get their access stats bumped by a fire-and-forget UPDATE.
 */
#include "memory/memory_priv.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sophia/sdk.h>

#include "lib/log.h"
#include "event/loop.h"

/* Question words the vector leg leaves out: the hashing embedder has no
 * idf, so "what did", "how much does" weighed as much as the account
 * name and pulled questions toward memories that share their phrasing.
 * Stored vectors keep them (a query-side choice: nothing to re-embed). */
static const char *const stop_words[] = {
    "a", "about", "an", "and", "are", "at", "be", "by", "did", "do", "does",
    "for", "from", "how", "in", "is", "it", "much", "of", "on", "or", "our",
    "should", "that", "the", "their", "them", "they", "this", "to", "us",
    "was", "we", "were", "what", "when", "where", "which", "who", "why",
    "with", "yet"};

static int is_stop(const char *w, size_t n)
{
    for (size_t i = 0; i < sizeof(stop_words) / sizeof(stop_words[0]); i++)
        if (strlen(stop_words[i]) == n && !strncasecmp(stop_words[i], w, n))
            return 1;
    return 0;
}

/* The question without its stop words (the whole question when that
 * would leave nothing). */
static char *vector_text(const char *q)
{
    size_t len = strlen(q), o = 0;
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len;) {
        size_t s = i;
        while (i < len && (isalnum((unsigned char)q[i]) || (unsigned char)q[i] >= 0x80 ||
                           q[i] == '-' || q[i] == '\''))
            i++;
        if (i == s) {
            i++;
            continue;
        }
        if (is_stop(q + s, i - s))
            continue;
        memcpy(out + o, q + s, i - s);
        o += i - s;
        out[o++] = ' ';
    }
    if (o == 0) {
        memcpy(out, q, len + 1);
        return out;
    }
    out[o - 1] = '\0';
    return out;
}

typedef struct cand {
    int64_t id;
    float vector;  /* cosine with the query */
    double text;   /* the text leg's idf sum, 0 when not a text match */
    int vrank, trank; /* 1-based among survivors; 0 = not in that list */
    double score, rrf, recency, importance, frequency;
    json_t *row;   /* result object without scores */
} cand;

typedef struct search_job {
    sophia_memory *m;
    char *q;      /* the text leg's words: the question minus synonyms */
    char *qx;     /* the synonym concepts (mem_syn_expand; "" for none) */
    char *qv;     /* what the vector leg embeds: the question, no stop words */
    size_t k;
    int legs;      /* SOPHIA_MEM_LEG_* bits: which lists are fused */
    char *filter; /* jsonb text */
    char *scope[3]; /* user_id, agent_id, session_id; NULL = any */
    int filtered;
    float *qvec;  /* the question's vector (vector_work), or NULL */
    int qdim;
    unsigned gen, rows_gen; /* embedder swaps seen by the leg, by the rows */
    int64_t *vids;
    float *vsc;
    size_t nv, kv;
    int64_t *tids;
    double *tsc;
    size_t nt;
    int running; /* legs still running */
    int err;
    char msg[200];
    int64_t t0;
    sophia_memory_search_cb cb;
    void *arg;
} search_job;

static void job_free(search_job *j)
{
    free(j->q);
    free(j->qx);
    free(j->qv);
    free(j->filter);
    for (int i = 0; i < 3; i++)
        free(j->scope[i]);
    free(j->qvec);
    free(j->vids);
    free(j->vsc);
    free(j->tids);
    free(j->tsc);
    free(j);
}

static void finish(search_job *j, const json_t *results, int err,
                   const char *msg)
{
    sophia_memory *m = j->m;
    if (err) {
        m->search_errors++;
    } else {
        m->searches++;
        m->lat_us[m->lat_pos] = (double)(sophia_now_mono_us() - j->t0);
        m->lat_pos = (m->lat_pos + 1) % MEM_LAT_RING;
        if (m->nlat < MEM_LAT_RING)
            m->nlat++;
    }
    if (j->cb)
        j->cb(j->arg, results, err, msg);
    job_free(j);
}

/* ------------------------------------------------------------ scoring */

static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->id < y->id ? 1 : x->id > y->id ? -1 : 0;
}

static cand *find_cand(cand *c, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].id == id)
            return &c[i];
    return NULL;
}

static int by_vector(const void *a, const void *b)
{
    const cand *x = *(const cand *const *)a, *y = *(const cand *const *)b;
    return x->vector < y->vector ? 1 : x->vector > y->vector ? -1 : 0;
}

/* Ranks count only candidates that survived the filter, so a
 * filtered-out neighbour never pushes a real one down, and equal scores
 * share a rank ("1224"): the text leg scores whole words, so many rows
 * tie, and which of them came first says nothing - the other leg decides.
 * The vector rank is over every candidate's cosine (each row's stored
 * embedding), not only faiss' k*4: a text match just outside the vector
 * list is ranked too, instead of losing to the ones inside it. */
static void assign_ranks(search_job *j, cand *c, size_t n)
{
    int r = 0, seen = 0;
    double last = 0;
    cand **order = (j->legs & SOPHIA_MEM_LEG_VECTOR) ? malloc((n ? n : 1) * sizeof(*order)) : NULL;
    if (order) {
        for (size_t i = 0; i < n; i++)
            order[i] = &c[i];
        qsort(order, n, sizeof(*order), by_vector);
        for (size_t i = 0; i < n; i++) {
            if (!r || order[i]->vector != last)
                r = (int)i + 1;
            last = order[i]->vector;
            order[i]->vrank = r;
        }
        free(order);
    }
    r = seen = 0;
    for (size_t i = 0; i < j->nt; i++) {
        cand *x = find_cand(c, n, j->tids[i]);
        if (x && !x->trank) {
            seen++;
            if (!r || j->tsc[i] != last)
                r = seen;
            last = j->tsc[i];
            x->trank = r;
            x->text = j->tsc[i];
        }
    }
}

/* Each candidate's cosine with the query, from its stored embedding. A
 * search whose rows were read across a re-embed's swap (the stored
 * vectors are another embedder's than the question's) takes faiss' own
 * scores for its vector list instead, 0 for the rest. */
static void cand_vector(search_job *j, cand *x, PGresult *res, int i)
{
    x->vector = 0;
    if (!j->qvec)
        return;
    if (j->gen != j->rows_gen) {
        for (size_t k = 0; k < j->nv; k++)
            if (j->vids[k] == x->id)
                x->vector = j->vsc[k];
        return;
    }
    float *v = malloc((size_t)j->qdim * sizeof(float));
    if (v && mem_decode_vec(PQgetvalue(res, i, 9), v, j->qdim) == 0)
        x->vector = sophia_embed_dot(v, j->qvec, j->qdim);
    free(v);
}

static void score(search_job *j, cand *x, PGresult *res, int i, double now)
{
    const double rrf_max = (SOPHIA_MEM_RRF_W_VECTOR + SOPHIA_MEM_RRF_W_TEXT) /
                           (SOPHIA_MEM_RRF_K + 1);
    double rrf = 0;
    if (x->vrank)
        rrf += SOPHIA_MEM_RRF_W_VECTOR / (SOPHIA_MEM_RRF_K + x->vrank);
    if (x->trank)
        rrf += SOPHIA_MEM_RRF_W_TEXT / (SOPHIA_MEM_RRF_K + x->trank);
    double age = now - atof(PQgetvalue(res, i, 5));
    x->rrf = rrf / rrf_max;
    x->recency = pow(0.5, (age > 0 ? age : 0) / j->m->conf->memory.half_life);
    x->importance = atof(PQgetvalue(res, i, 4));
    double ac = atof(PQgetvalue(res, i, 7));
    x->frequency = fmin(1.0, log1p(ac > 0 ? ac : 0) / log(101.0));
    x->score = SOPHIA_MEM_W_RRF * x->rrf + SOPHIA_MEM_W_RECENCY * x->recency +
               SOPHIA_MEM_W_IMPORTANCE * x->importance +
               SOPHIA_MEM_W_FREQUENCY * x->frequency;
}

static json_t *result_json(cand *x)
{
    json_t *r = x->row;
    x->row = NULL;
    json_object_set_new(r, "score", json_real(x->score));
    json_object_set_new(
        r, "score_parts",
        json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "rrf", x->rrf, "vector",
                  (double)x->vector, "text", x->text, "recency", x->recency,
                  "importance", x->importance, "frequency", x->frequency));
    return r;
}

static void touch(search_job *j, const int64_t *ids, size_t n)
{
    if (!n)
        return;
    char *arr = mem_id_array(ids, n);
    const char *vals[1] = {arr};
    if (arr)
        sophia_pg_query(j->m->pg, j->m->sql.touch, 1, vals, NULL, NULL, NULL, NULL);
    free(arr);
}

static void on_rows(void *arg, PGresult *res, const char *err)
{
    search_job *j = arg;
    if (!res || err) {
        finish(j, NULL, SOPHIA_EUNAVAIL, err ? err : "closed");
        return;
    }
    size_t n = (size_t)PQntuples(res);
    cand *c = calloc(n ? n : 1, sizeof(*c));
    int64_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    if (!c || !ids) {
        free(c);
        free(ids);
        finish(j, NULL, SOPHIA_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        c[i].id = atoll(PQgetvalue(res, (int)i, 0));
        cand_vector(j, &c[i], res, (int)i);
    }
    assign_ranks(j, c, n);
    double now = (double)sophia_now_wall_us() / 1e6;
    for (size_t i = 0; i < n; i++) {
        score(j, &c[i], res, (int)i, now);
        c[i].row = mem_row_json(res, (int)i);
    }
    qsort(c, n, sizeof(*c), cand_cmp);
    json_t *out = json_array();
    size_t nout = n < j->k ? n : j->k;
    for (size_t i = 0; i < n; i++) {
        if (i < nout) {
            ids[i] = c[i].id;
            json_array_append_new(out, result_json(&c[i]));
        }
        json_decref(c[i].row);
    }
    if (j->legs == SOPHIA_MEM_LEGS_ALL) /* one leg alone is a diagnostic */
        touch(j, ids, nout);
    free(c);
    free(ids);
    finish(j, out, 0, NULL);
    json_decref(out);
}

/* ---------------------------------------------------------- the legs */

static void fetch_rows(search_job *j)
{
    if (j->m->freeing) {
        finish(j, NULL, SOPHIA_EUNAVAIL, "shutting down");
        return;
    }
    size_t n = 0;
    int64_t *all = malloc((j->nv + j->nt + 1) * sizeof(*all));
    if (!all) {
        finish(j, NULL, SOPHIA_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < j->nv; i++)
        all[n++] = j->vids[i];
    for (size_t i = 0; i < j->nt; i++)
        all[n++] = j->tids[i];
    char *arr = mem_id_array(all, n);
    free(all);
    const char *vals[5] = {arr, j->filter, j->scope[0], j->scope[1], j->scope[2]};
    j->rows_gen = mem_re_gen(j->m);
    const char *sql = j->m->col_next ? j->m->sql.rows_next : j->m->sql.rows;
    int rc = arr ? sophia_pg_query(j->m->pg, sql, 5, vals, NULL, NULL, on_rows, j)
                 : SOPHIA_ENOMEM;
    free(arr);
    if (rc)
        finish(j, NULL, rc, "PostgreSQL queue full");
}

static void leg_done(search_job *j)
{
    if (--j->running > 0)
        return;
    if (j->err)
        finish(j, NULL, j->err, j->msg);
    else
        fetch_rows(j);
}

static void vector_work(void *arg)
{
    search_job *j = arg;
    sophia_memory *m = j->m;
    /* The embedder and the index change together under the write lock
     * (a re-embed's swap): one read lock gives a matching pair. No
     * embedder (after a restart with another one, until the re-embed is
     * done): no vector list. */
    pthread_rwlock_rdlock(&m->lock);
    j->gen = m->gen;
    if (!m->emb) {
        pthread_rwlock_unlock(&m->lock);
        return;
    }
    j->qdim = m->emb->dim;
    j->qvec = calloc((size_t)j->qdim, sizeof(float));
    if (!j->qvec || sophia_embed(m->emb, j->qv, strlen(j->qv), j->qvec) != 0) {
        pthread_rwlock_unlock(&m->lock);
        j->err = SOPHIA_ENOMEM;
        return;
    }
    idx_t nt = m->index ? faiss_Index_ntotal(m->index) : 0;
    size_t k = j->kv < (size_t)nt ? j->kv : (size_t)nt;
    idx_t *labels = malloc((k ? k : 1) * sizeof(*labels));
    if (k && labels &&
        faiss_Index_search(m->index, 1, j->qvec, (idx_t)k, j->vsc, labels) == 0) {
        for (size_t i = 0; i < k; i++)
            if (labels[i] >= 0 && !mem_is_tomb(m, labels[i])) {
                j->vsc[j->nv] = j->vsc[i];
                j->vids[j->nv++] = labels[i];
            }
    }
    pthread_rwlock_unlock(&m->lock);
    free(labels);
}

static void vector_done(void *arg, int cancelled)
{
    search_job *j = arg;
    if (cancelled && !j->err) {
        j->err = SOPHIA_EUNAVAIL;
        snprintf(j->msg, sizeof(j->msg), "shutting down");
    }
    leg_done(j);
}

static void on_text(void *arg, PGresult *res, const char *err)
{
    search_job *j = arg;
    if (!res || err) {
        /* A text leg that fails (e.g. PostgreSQL down mid-query) fails the
         * search: the rows come from PostgreSQL too. */
        j->err = SOPHIA_EUNAVAIL;
        snprintf(j->msg, sizeof(j->msg), "%s", err ? err : "closed");
    } else {
        size_t n = (size_t)PQntuples(res);
        j->tids = malloc((n ? n : 1) * sizeof(*j->tids));
        j->tsc = malloc((n ? n : 1) * sizeof(*j->tsc));
        for (size_t i = 0; j->tids && j->tsc && i < n; i++) {
            j->tids[i] = atoll(PQgetvalue(res, (int)i, 0));
            j->tsc[i] = atof(PQgetvalue(res, (int)i, 1));
            j->nt++;
        }
    }
    leg_done(j);
}

static void search_start(void *op)
{
    search_job *j = op;
    sophia_memory *m = j->m;
    char lim[24], live[24];
    snprintf(lim, sizeof(lim), "%zu", j->k * 4);
    snprintf(live, sizeof(live), "%lld", (long long)m->live);
    const char *vals[8] = {j->q, j->filter, lim, live, j->qx,
                           j->scope[0], j->scope[1], j->scope[2]};
    j->t0 = sophia_now_mono_us();
    j->running = 2;
    if (!(j->legs & SOPHIA_MEM_LEG_TEXT))
        j->running--;
    else if (sophia_pg_query(m->pg, m->fuzzy ? m->sql.fts_fuzzy : m->sql.fts, 8,
                             vals, NULL, NULL, on_text, j)) {
        finish(j, NULL, SOPHIA_EBUSY, "PostgreSQL queue full");
        return;
    }
    if (!(j->legs & SOPHIA_MEM_LEG_VECTOR))
        leg_done(j); /* no qvec: score_parts.vector is 0 */
    else if (sophia_workers_submit(m->pool, vector_work, vector_done, j) != 0) {
        j->err = SOPHIA_EUNAVAIL;
        snprintf(j->msg, sizeof(j->msg), "shutting down");
        leg_done(j);
    }
}

static void search_fail(void *op, int err, const char *msg)
{
    finish(op, NULL, err, msg);
}

int sophia_memory_search(sophia_memory *m, const char *query, size_t k,
                         const json_t *filter, sophia_memory_search_cb cb,
                         void *arg)
{
    return sophia_memory_search_legs(m, query, k, filter, SOPHIA_MEM_LEGS_ALL,
                                     cb, arg);
}

int sophia_memory_search_legs(sophia_memory *m, const char *query, size_t k,
                              const json_t *filter, int legs,
                              sophia_memory_search_cb cb, void *arg)
{
    return sophia_memory_search_scoped(m, query, k, filter, NULL, legs, cb, arg);
}

/* Copies the scope's set fields; -1 when out of memory. */
static int copy_scope(search_job *j, const sophia_memory_scope *s)
{
    const char *f[3] = {s ? s->user_id : NULL, s ? s->agent_id : NULL,
                        s ? s->session_id : NULL};
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        j->scope[i] = f[i] ? strdup(f[i]) : NULL;
        bad |= f[i] && !j->scope[i];
        j->filtered |= f[i] != NULL;
    }
    return bad ? -1 : 0;
}

int sophia_memory_search_scoped(sophia_memory *m, const char *query, size_t k,
                                const json_t *filter,
                                const sophia_memory_scope *scope, int legs,
                                sophia_memory_search_cb cb, void *arg)
{
    char why[200];
    if (!query || k < 1 || k > SOPHIA_MEM_MAX_K || !(legs & SOPHIA_MEM_LEGS_ALL) ||
        (legs & ~SOPHIA_MEM_LEGS_ALL) || sophia_memory_check_filter(filter, why, sizeof(why)))
        return SOPHIA_EINVAL;
    search_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->m = m;
    j->k = k;
    j->legs = legs;
    j->cb = cb;
    j->arg = arg;
    j->filtered = filter && json_object_size(filter) > 0;
    int bad = copy_scope(j, scope);
    j->kv = k * (j->filtered ? 20 : 4);
    /* The synonyms go to the text leg only: on the tuning split, adding
     * them to the embedded text made the vector leg worse (recall@1 0.40
     * -> 0.21). */
    j->qx = mem_syn_expand(m->syn, query, &j->q);
    j->qv = vector_text(query);
    j->filter = filter ? json_dumps(filter, JSON_COMPACT) : strdup("{}");
    j->vids = malloc(j->kv * sizeof(*j->vids));
    j->vsc = malloc(j->kv * sizeof(*j->vsc));
    int rc = SOPHIA_ENOMEM;
    if (!bad && j->q && j->qx && j->qv && j->filter && j->vids && j->vsc)
        rc = mem_when_ready(m, search_start, search_fail, j);
    if (rc)
        job_free(j);
    return rc;
}
