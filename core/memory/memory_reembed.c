/*
 * memory_reembed - the embedder's life in the store: which embedder made
 * the stored vectors, fitting one that learns from the store, and the
 * background re-embed when the embedder changes.
 *
 * Identity. Every embedder has an id (embed.h) naming all its vectors
 * depend on. <table>_embedder (k, v) records the id of the vectors in
 * the `embedding` column ('id'), the fitted model as text ('model'), the
 * id of the embedder it belongs to ('model_for') and the live rows it was
 * fitted on ('fit_rows'); the index file carries the id of its vectors in
 * <index_path>.embedder. A table from before 1.2 has no such row: its
 * vectors are the built-in hashing's at memory.dim, which is also what a
 * configuration without memory.embedder uses.
 *
 * Which embedder serves. `want` is the configured embedder (memory.embedder,
 * else the built-in), with its stored model when it has one. If its id is
 * the stored one, it serves. Otherwise the embedder that made the stored
 * vectors serves, when it can be found (the built-in hashing, or an
 * embedder instance still in plugins.instances), and the store is
 * re-embedded with `want`; when it cannot (a restart with another
 * embedder), the vector leg is off until the re-embed is done: searches
 * are answered by the full-text leg alone.
 *
 * The re-embed (a "pass"), on the loop and the worker pool:
 *  1. worker: a new empty index `nix` for the next embedder, beside the
 *     serving one (m->next, m->nix, under the write lock).
 *  2. pages of RE_PAGE live rows in id order: the loop reads them, a
 *     worker embeds them with the next embedder and adds them to nix, the
 *     loop writes the vectors to the `embedding_next` column. Stores and
 *     patches meanwhile embed with both embedders (mem_vecs) and write
 *     both columns and both indexes; removals leave both.
 *  3. when a page comes back empty and no store embedded with the old
 *     embedder alone is still in flight: worker, under the write lock,
 *     nix becomes the index and the next embedder the serving one.
 *  4. loop: one statement moves embedding_next into `embedding` and
 *     records the new id (and model) in <table>_embedder. Until it
 *     commits, searches read COALESCE(embedding_next, embedding).
 * Searches go on against the old index and embedder until step 3; a
 * search that straddles it takes faiss' own scores for its vector list
 * (memory_search.c). A change of `want` during a pass ends it (the next
 * page sees it) and starts one for the new target.
 *
 * Fitting. An embedder with fit (SDK 1.2) is fitted on the newest
 * RE_FIT_SAMPLE live texts once the store has RE_FIT_MIN rows, and again
 * each time the live rows doubled since; each new model is a new id,
 * hence a pass.
 */
#include "memory/memory_priv.h"

#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <sophia/sdk.h>

#include "lib/log.h"
#include "event/loop.h"

#define RE_PAGE 256
#define RE_FIT_MIN 64
#define RE_FIT_SAMPLE 20000

typedef enum re_phase {
    RE_IDLE = 0,
    RE_FIT,  /* sampling or fitting */
    RE_PASS, /* filling the next index */
    RE_SWAP, /* swapping, then moving the column */
} re_phase;

struct mem_reembed {
    sophia_memory *m;
    const sophia_plugin_set *plugins;
    char *name;                /* memory.embedder; NULL = built in */
    sophia_embedder *base;     /* the configured embedder, no model */
    sophia_embedder *want;     /* base, or base with a model */
    sophia_embedder *serving;  /* = m->emb (loop's reference) */
    sophia_embedder *next;     /* = m->next (loop's reference) */
    char stored[SOPHIA_EMBED_ID_MAX]; /* what `embedding` holds */
    char *stored_model;
    char model_for[SOPHIA_EMBED_ID_MAX];
    int64_t fit_rows;
    re_phase phase;
    int waiting; /* a pass at its end waits for single stores */
    int64_t last_id;
    size_t done, total;
    int64_t t_start;
    size_t single; /* stores in flight embedded without `next` */
    unsigned gen;  /* swaps the loop has seen (m->gen's copy) */
    uint64_t reembeds, fits;
    char error[200];
    int64_t *removed; /* sorted, under m->lock: removed during the pass */
    size_t nremoved, cap;
    void (*boot_cont)(void *);
    void *boot_arg;
    char *sql_meta, *sql_clear, *sql_page, *sql_fill, *sql_move, *sql_sample;
};

/* ------------------------------------------------------ references */

/* An embedder the loop hands to a job is held until the job ends, so a
 * swap never frees one a worker still uses (loop thread only). */
static sophia_embedder *mem_emb_get(sophia_embedder *e)
{
    if (e)
        e->refs++;
    return e;
}

static void mem_emb_put(sophia_embedder *e)
{
    if (e && --e->refs == 0)
        sophia_embedder_free(e);
}

static void set_ref(sophia_embedder **slot, sophia_embedder *e)
{
    mem_emb_get(e);
    mem_emb_put(*slot);
    *slot = e;
}

static int same_id(const sophia_embedder *a, const char *id)
{
    return a && !strcmp(a->id, id);
}

/* The id without its model part (what a model is "for"). */
static void base_id(const sophia_embedder *e, char *out, size_t n)
{
    snprintf(out, n, "%s", e->id);
    char *mpart = e->model ? strrchr(out, '/') : NULL;
    if (mpart)
        *mpart = '\0';
}

/* ----------------------------------------------------------- vectors */

int mem_vecs_begin(sophia_memory *m, mem_vecs *p)
{
    mem_reembed *re = m->re;
    memset(p, 0, sizeof(*p));
    p->e = mem_emb_get(re->serving);
    p->en = mem_emb_get(re->next);
    if (!p->en)
        re->single++;
    if (p->e)
        p->v = malloc((size_t)p->e->dim * sizeof(float));
    if (p->en)
        p->vn = malloc((size_t)p->en->dim * sizeof(float));
    return (p->e && !p->v) || (p->en && !p->vn) ? -1 : 0;
}

int mem_vecs_embed(mem_vecs *p, const char *text)
{
    size_t len = strlen(text);
    if (p->e && sophia_embed(p->e, text, len, p->v) != 0)
        return -1;
    if (p->en && sophia_embed(p->en, text, len, p->vn) != 0)
        return -1;
    return 0;
}

static void pass_page(mem_reembed *re);

void mem_vecs_end(sophia_memory *m, mem_vecs *p)
{
    mem_reembed *re = m->re;
    if (!p->en && re->single > 0 && --re->single == 0 && re->waiting &&
        !m->freeing) {
        re->waiting = 0;
        pass_page(re); /* the pass's end waited for this store */
    }
    mem_emb_put(p->e);
    mem_emb_put(p->en);
    free(p->v);
    free(p->vn);
    memset(p, 0, sizeof(*p));
}

void mem_vecs_columns(const sophia_memory *m, const mem_vecs *p,
                      const float **emb, int *emb_len, const float **next,
                      int *next_len)
{
    const mem_reembed *re = m->re;
    *emb = NULL;
    *next = NULL;
    *emb_len = *next_len = 0;
    if (p->e && p->e == re->serving) {
        *emb = p->v;
        *emb_len = p->e->dim * (int)sizeof(float);
        if (p->en && p->en == re->next) {
            *next = p->vn;
            *next_len = p->en->dim * (int)sizeof(float);
        }
    } else if (p->en && p->en == re->serving) { /* swapped since */
        *emb = p->vn;
        *emb_len = p->en->dim * (int)sizeof(float);
    } else if (p->en && p->en == re->next) { /* nothing serves yet */
        *next = p->vn;
        *next_len = p->en->dim * (int)sizeof(float);
    }
}

static int index_put(sophia_memory *m, FaissIndex *ix, int hnsw, int64_t id,
                     const float *v, int replace)
{
    if (replace)
        return mem_index_replace(m, ix, hnsw, id, v);
    return mem_index_add(m, ix, id, v);
}

int mem_vecs_index(sophia_memory *m, int64_t id, const mem_vecs *p,
                   int replace)
{
    int rc = 0;
    const float *v = m->emb && p->e == m->emb    ? p->v
                     : m->emb && p->en == m->emb ? p->vn /* swapped since */
                                                 : NULL;
    if (v && m->index)
        rc |= index_put(m, m->index, m->hnsw, id, v, replace);
    if (m->nix && p->en && p->en == m->next)
        rc |= index_put(m, m->nix, m->nix_hnsw, id, p->vn, replace);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------- SQL */

static char *sql_of(const char *fmt, const char *t)
{
    size_t n = strlen(fmt) + 8 * strlen(t) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, t, t, t, t, t, t, t, t);
    return s;
}

static int build_sql(mem_reembed *re, const char *t)
{
    re->sql_meta = sql_of("SELECT k, v FROM %s_embedder", t);
    re->sql_clear = sql_of("UPDATE %s SET embedding_next = NULL WHERE "
                           "embedding_next IS NOT NULL", t);
    re->sql_page = sql_of("SELECT id, content FROM %s WHERE id > $1::bigint "
                          "AND consolidated_into IS NULL ORDER BY id LIMIT "
                          "$2::int", t);
    /* $1 the page's ids, $2 their vectors end to end ($3 bytes each). */
    re->sql_fill = sql_of("UPDATE %s t SET embedding_next = substring("
                          "$2::bytea FROM ((v.o - 1) * $3::int + 1)::int FOR "
                          "$3::int) FROM unnest($1::bigint[]) WITH ORDINALITY "
                          "v(id, o) WHERE t.id = v.id", t);
    /* One statement: the vectors and their id change together. */
    re->sql_move = sql_of("WITH u AS (UPDATE %s SET embedding = embedding_next, "
                          "embedding_next = NULL WHERE embedding_next IS NOT "
                          "NULL RETURNING 1), k AS (INSERT INTO %s_embedder "
                          "(k, v) VALUES ('id', $1), ('model', $2), "
                          "('model_for', $3), ('fit_rows', $4) ON CONFLICT (k) "
                          "DO UPDATE SET v = excluded.v) SELECT count(*) FROM u", t);
    re->sql_sample = sql_of("SELECT content FROM %s WHERE consolidated_into IS "
                            "NULL ORDER BY id DESC LIMIT $1::int", t);
    return re->sql_meta && re->sql_clear && re->sql_page && re->sql_fill &&
                   re->sql_move && re->sql_sample
               ? 0
               : -1;
}

/* ------------------------------------------------------ which embedder */

/* The configured embedder of `c` in `plugins`, without a model; NULL
 * with *why when the instance is missing or no embedder. */
static sophia_embedder *configured(const char *name, int dim,
                                   const sophia_plugin_set *plugins,
                                   const char **why)
{
    *why = "out of memory or a bad memory.dim";
    if (!name)
        return sophia_embed_hashing_new(dim);
    sophia_instance *in = sophia_plugin_set_find(plugins, name);
    if (!in) {
        *why = "is not a loaded plugin instance";
        return NULL;
    }
    return sophia_embedder_of(in, why);
}

/* `e` with the stored model, when there is one made for `e`: a new
 * embedder (refs 0), or NULL. */
static sophia_embedder *with_stored_model(mem_reembed *re,
                                          const sophia_embedder *e)
{
    if (!e || !re->stored_model || !sophia_embed_can_fit(e) ||
        strcmp(re->model_for, e->id))
        return NULL;
    void *model = sophia_embed_model_import(e, re->stored_model);
    sophia_embedder *w = model ? sophia_embedder_with_model(e, model) : NULL;
    if (!w)
        sophia_warn("memory", "msg=\"the stored embedder model was refused; "
                    "fitting again\" embedder=%s", e->id);
    return w;
}

/* want = base with its stored model, or base. */
static void set_want(mem_reembed *re)
{
    sophia_embedder *w = with_stored_model(re, re->base);
    set_ref(&re->want, w ? w : re->base);
}

/* The embedder that made vectors of `id`, if it is at hand: the
 * built-in hashing, or an embedder instance of the plugin set. */
static sophia_embedder *find_maker(mem_reembed *re, const char *id)
{
    int dim = 0;
    if (sscanf(id, "hashing/%*[^/]/%d/", &dim) == 1) {
        sophia_embedder *h = sophia_embed_hashing_new(dim);
        if (same_id(h, id))
            return h;
        sophia_embedder_free(h);
    }
    for (size_t i = 0; re->plugins && i < re->plugins->count; i++) {
        const char *why;
        sophia_instance *in = re->plugins->items[i];
        if (in->desc->kind != SOPHIA_KIND_EMBEDDER)
            continue;
        sophia_embedder *e = sophia_embedder_of(in, &why);
        sophia_embedder *w = with_stored_model(re, e);
        if (same_id(w, id)) {
            sophia_embedder_free(e);
            return w;
        }
        sophia_embedder_free(w);
        if (same_id(e, id))
            return e;
        sophia_embedder_free(e);
    }
    return NULL;
}

/* The dimension an id names (its third field), 0 when it names none. */
static int id_dim(const char *id)
{
    int dim = 0;
    return sscanf(id, "%*[^/]/%*[^/]/%d/", &dim) == 1 ? dim : 0;
}

/* --------------------------------------------------------------- boot */

static void on_meta_put(void *arg, PGresult *res, const char *err)
{
    sophia_memory *m = arg;
    if (err && res && !m->freeing)
        sophia_warn("memory", "msg=\"cannot record the embedder\" error=\"%s\"", err);
}

static void choose(mem_reembed *re, int64_t count)
{
    sophia_memory *m = re->m;
    if (!re->stored[0]) { /* before 1.2, or a new table */
        sophia_embedder *legacy = sophia_embed_hashing_new((int)m->conf->memory.dim);
        snprintf(re->stored, sizeof(re->stored), "%s",
                 count > 0 && legacy ? legacy->id : re->base->id);
        sophia_embedder_free(legacy);
        const char *vals[4] = {re->stored, NULL, NULL, "0"};
        sophia_pg_query(m->pg, re->sql_move, 4, vals, NULL, NULL, on_meta_put, m);
    }
    set_want(re);
    sophia_embedder *s = same_id(re->want, re->stored) ? mem_emb_get(re->want)
                                                       : mem_emb_get(find_maker(re, re->stored));
    re->serving = s;
    pthread_rwlock_wrlock(&m->lock);
    m->emb = s;
    m->dim = s ? s->dim : id_dim(re->stored) ? id_dim(re->stored) : re->want->dim;
    snprintf(m->index_id, sizeof(m->index_id), "%s", re->stored);
    pthread_rwlock_unlock(&m->lock);
    if (re->fit_rows == 0 && re->want->model)
        re->fit_rows = count;
    sophia_info("memory", "msg=\"embedder\" want=%s stored=%s serving=%s",
                re->want->id, re->stored, s ? s->id : "none (text leg only "
                "until re-embedded)");
}

static void on_meta(void *arg, PGresult *res, const char *err)
{
    mem_reembed *re = arg;
    sophia_memory *m = re->m;
    for (int i = 0; res && !err && i < PQntuples(res); i++) {
        const char *k = PQgetvalue(res, i, 0), *v = PQgetvalue(res, i, 1);
        if (PQgetisnull(res, i, 1))
            continue;
        if (!strcmp(k, "id"))
            snprintf(re->stored, sizeof(re->stored), "%s", v);
        else if (!strcmp(k, "model") && *v)
            re->stored_model = strdup(v);
        else if (!strcmp(k, "model_for"))
            snprintf(re->model_for, sizeof(re->model_for), "%s", v);
        else if (!strcmp(k, "fit_rows"))
            re->fit_rows = atoll(v);
    }
    if (!m->freeing) {
        /* what an unfinished pass left (the next pass writes it again),
         * before choose() may record the id with sql_move */
        sophia_pg_query(m->pg, re->sql_clear, 0, NULL, NULL, NULL, NULL, NULL);
        choose(re, m->live);
    }
    re->boot_cont(re->boot_arg);
}

void mem_re_boot(sophia_memory *m, void (*cont)(void *), void *b)
{
    mem_reembed *re = m->re;
    re->boot_cont = cont;
    re->boot_arg = b;
    if (sophia_pg_query(m->pg, re->sql_meta, 0, NULL, NULL, NULL, on_meta, re))
        cont(b); /* the queue is full: the count's failure path follows */
}

const char *mem_re_index_id(const sophia_memory *m)
{
    return m->re->stored;
}

/* ---------------------------------------------------------- the pass */

typedef struct page_job {
    mem_reembed *re;
    sophia_embedder *e; /* held */
    size_t n;
    int64_t *ids;
    char **texts;
    size_t *lens;
    float *vecs;
    int ok;
} page_job;

static void page_job_free(page_job *j)
{
    for (size_t i = 0; i < j->n; i++)
        free(j->texts[i]);
    mem_emb_put(j->e);
    free(j->texts);
    free(j->lens);
    free(j->ids);
    free(j->vecs);
    free(j);
}

static void pass_fail(mem_reembed *re, const char *why);
static void pass_swap(mem_reembed *re);

static int removed_has(const mem_reembed *re, int64_t id)
{
    size_t lo = 0, hi = re->nremoved;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (re->removed[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < re->nremoved && re->removed[lo] == id;
}

void mem_re_removed(sophia_memory *m, const int64_t *ids, size_t n)
{
    mem_reembed *re = m->re;
    for (size_t i = 0; i < n; i++) {
        if (removed_has(re, ids[i]))
            continue;
        if (re->nremoved == re->cap) {
            size_t cap = re->cap ? re->cap * 2 : 64;
            int64_t *v = realloc(re->removed, cap * sizeof(*v));
            if (!v)
                return;
            re->removed = v;
            re->cap = cap;
        }
        size_t k = re->nremoved++;
        while (k > 0 && re->removed[k - 1] > ids[i]) {
            re->removed[k] = re->removed[k - 1];
            k--;
        }
        re->removed[k] = ids[i];
    }
    if (!m->nix_hnsw) {
        FaissIDSelectorBatch *sel = NULL;
        if (faiss_IDSelectorBatch_new(&sel, n, ids) == 0) {
            faiss_Index_remove_ids(m->nix, (FaissIDSelector *)sel, NULL);
            faiss_IDSelector_free((FaissIDSelector *)sel);
        }
    }
}

static void page_work(void *arg)
{
    page_job *j = arg;
    sophia_memory *m = j->re->m;
    if (sophia_embed_batch(j->e, (const char *const *)j->texts, j->lens, j->n,
                           j->vecs) != 0)
        return;
    pthread_rwlock_wrlock(&m->lock);
    int ok = m->nix && m->next == j->e;
    for (size_t i = 0; ok && i < j->n; i++) {
        if (!removed_has(j->re, j->ids[i]))
            ok = mem_index_add(m, m->nix, j->ids[i],
                               j->vecs + i * (size_t)j->e->dim) == 0;
    }
    pthread_rwlock_unlock(&m->lock);
    j->ok = ok;
}

static void on_fill(void *arg, PGresult *res, const char *err)
{
    mem_reembed *re = arg;
    if (err && res && !re->m->freeing)
        snprintf(re->error, sizeof(re->error), "embedding_next: %s", err);
}

static void page_done(void *arg, int cancelled)
{
    page_job *j = arg;
    mem_reembed *re = j->re;
    sophia_memory *m = re->m;
    if (cancelled || m->freeing) {
        page_job_free(j);
        return;
    }
    if (!j->ok) {
        page_job_free(j);
        pass_fail(re, "embedding or faiss add failed");
        return;
    }
    char *arr = mem_id_array(j->ids, j->n);
    char len[16];
    snprintf(len, sizeof(len), "%d", j->e->dim * (int)sizeof(float));
    const char *vals[3] = {arr, (const char *)j->vecs, len};
    int lens[3] = {0, (int)(j->n * (size_t)j->e->dim * sizeof(float)), 0};
    int fmts[3] = {0, 1, 0};
    if (arr)
        sophia_pg_query(m->pg, re->sql_fill, 3, vals, lens, fmts, on_fill, re);
    free(arr);
    re->last_id = j->ids[j->n - 1];
    re->done += j->n;
    page_job_free(j);
    pass_page(re);
}

/* Copies a page's rows into a job for the worker. */
static page_job *page_job_new(mem_reembed *re, PGresult *res)
{
    size_t n = (size_t)PQntuples(res);
    page_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->re = re;
    j->e = mem_emb_get(re->next);
    j->ids = malloc(n * sizeof(*j->ids));
    j->texts = calloc(n, sizeof(*j->texts));
    j->lens = malloc(n * sizeof(*j->lens));
    j->vecs = malloc(n * (size_t)re->next->dim * sizeof(float));
    int bad = !j->ids || !j->texts || !j->lens || !j->vecs;
    for (size_t i = 0; !bad && i < n; i++, j->n++) {
        j->ids[i] = atoll(PQgetvalue(res, (int)i, 0));
        j->lens[i] = (size_t)PQgetlength(res, (int)i, 1);
        bad = !(j->texts[i] = strdup(PQgetvalue(res, (int)i, 1)));
    }
    if (bad) {
        page_job_free(j);
        return NULL;
    }
    return j;
}

static void on_page(void *arg, PGresult *res, const char *err)
{
    mem_reembed *re = arg;
    sophia_memory *m = re->m;
    if (m->freeing)
        return;
    if (!res || err) {
        pass_fail(re, err ? err : "closed");
        return;
    }
    if (PQntuples(res) == 0) {
        if (re->single)
            re->waiting = 1; /* mem_vecs_end comes back here */
        else
            pass_swap(re);
        return;
    }
    page_job *j = page_job_new(re, res);
    if (!j || sophia_workers_submit(m->pool, page_work, page_done, j) != 0) {
        if (j)
            page_job_free(j);
        pass_fail(re, "out of memory or shutting down");
    }
}

static void pass_page(mem_reembed *re)
{
    sophia_memory *m = re->m;
    if (re->want != re->next) { /* the target changed: start over */
        pass_fail(re, NULL);
        return;
    }
    char last[24], lim[16];
    snprintf(last, sizeof(last), "%lld", (long long)re->last_id);
    snprintf(lim, sizeof(lim), "%d", RE_PAGE);
    const char *vals[2] = {last, lim};
    if (sophia_pg_query(m->pg, re->sql_page, 2, vals, NULL, NULL, on_page, re))
        pass_fail(re, "PostgreSQL queue full");
}

/* Steps 1 and 3 and the abandon of a pass: index work under the lock. */
typedef struct swap_job {
    mem_reembed *re;
    sophia_embedder *e; /* the pass's target (held) */
    FaissIndex *ix;     /* made (begin) or freed after (swap, end) */
    int hnsw, ok;
    size_t tombs;
} swap_job;

static void begin_work(void *arg)
{
    swap_job *j = arg;
    sophia_memory *m = j->re->m;
    j->ix = mem_index_new(j->e->dim, j->hnsw);
    pthread_rwlock_wrlock(&m->lock);
    m->next = j->ix ? j->e : NULL;
    m->nix = j->ix;
    m->nix_hnsw = j->hnsw;
    j->re->nremoved = 0;
    pthread_rwlock_unlock(&m->lock);
    j->ok = j->ix != NULL;
    j->ix = NULL;
}

static void swap_work(void *arg)
{
    swap_job *j = arg;
    sophia_memory *m = j->re->m;
    mem_reembed *re = j->re;
    pthread_rwlock_wrlock(&m->lock);
    j->ix = m->index;
    m->index = m->nix;
    m->hnsw = m->nix_hnsw;
    m->nix = NULL;
    m->emb = m->next;
    m->next = NULL;
    m->dim = m->emb->dim;
    m->gen++;
    snprintf(m->index_id, sizeof(m->index_id), "%s", m->emb->id);
    /* HNSW cannot delete: what left during the pass stays as tombstones
     * (the list is sorted, as m->tomb must be); a flat nix lost them */
    m->ntomb = 0;
    m->nsuper = 0;
    if (m->hnsw && re->nremoved) {
        int64_t *t = m->tomb;
        size_t cap = m->tomb_cap;
        m->tomb = re->removed;
        m->ntomb = re->nremoved;
        m->tomb_cap = re->cap;
        re->removed = t;
        re->cap = cap;
    }
    re->nremoved = 0;
    j->tombs = m->ntomb;
    pthread_rwlock_unlock(&m->lock);
    j->ok = 1;
}

static void end_work(void *arg)
{
    swap_job *j = arg;
    sophia_memory *m = j->re->m;
    pthread_rwlock_wrlock(&m->lock);
    j->ix = m->nix;
    m->nix = NULL;
    m->next = NULL;
    j->re->nremoved = 0;
    pthread_rwlock_unlock(&m->lock);
}

static void swap_job_free(swap_job *j)
{
    if (j->ix)
        faiss_Index_free(j->ix);
    mem_emb_put(j->e);
    free(j);
}

static int submit_swap(mem_reembed *re, void (*work)(void *),
                       void (*done)(void *, int))
{
    swap_job *j = calloc(1, sizeof(*j));
    if (!j)
        return -1;
    j->re = re;
    j->e = mem_emb_get(re->next);
    j->hnsw = mem_want_hnsw(re->m, re->m->live);
    if (sophia_workers_submit(re->m->pool, work, done, j) != 0) {
        swap_job_free(j);
        return -1;
    }
    return 0;
}

static void end_done(void *arg, int cancelled)
{
    swap_job *j = arg;
    mem_reembed *re = j->re;
    swap_job_free(j);
    if (cancelled || re->m->freeing)
        return;
    set_ref(&re->next, NULL);
    re->phase = RE_IDLE;
    mem_re_kick(re->m);
}

/* Ends a pass without a swap; why = NULL: its target was replaced. */
static void pass_fail(mem_reembed *re, const char *why)
{
    if (why) {
        snprintf(re->error, sizeof(re->error), "%s", why);
        sophia_warn("memory", "msg=\"re-embed failed; the old index keeps "
                    "serving\" error=\"%s\"", why);
    }
    re->waiting = 0;
    if (submit_swap(re, end_work, end_done) != 0)
        re->phase = RE_IDLE; /* shutting down */
}

static void on_moved(void *arg, PGresult *res, const char *err)
{
    mem_reembed *re = arg;
    sophia_memory *m = re->m;
    if (m->freeing)
        return;
    if (!res || err) {
        /* the new index serves; a restart finds the old id stored and the
         * old vectors in `embedding`, and re-embeds again */
        snprintf(re->error, sizeof(re->error), "moving the vectors: %s",
                 err ? err : "closed");
        sophia_warn("memory", "msg=\"re-embed: %s\"", re->error);
    } else {
        m->col_next = 0;
        snprintf(re->stored, sizeof(re->stored), "%s", re->serving->id);
    }
    re->reembeds++;
    re->phase = RE_IDLE;
    sophia_info("memory", "msg=\"re-embedded\" embedder=%s rows=%zu ms=%.0f",
                re->serving->id, re->done,
                (double)(sophia_now_mono_us() - re->t_start) / 1000.0);
    mem_mark_dirty(m); /* the index file gets the new vectors and tag */
    mem_re_kick(m);
}

static void swap_done(void *arg, int cancelled)
{
    swap_job *j = arg;
    mem_reembed *re = j->re;
    sophia_memory *m = re->m;
    size_t tombs = j->tombs;
    int ok = j->ok && !cancelled;
    swap_job_free(j);
    if (!ok || m->freeing)
        return;
    set_ref(&re->serving, re->next);
    set_ref(&re->next, NULL);
    re->gen++;
    m->col_next = 1;
    m->tombstones = tombs;
    m->rebuilds++;
    char *model = sophia_embed_model_export(re->serving);
    char rows[24], base[SOPHIA_EMBED_ID_MAX];
    snprintf(rows, sizeof(rows), "%lld", (long long)re->fit_rows);
    base_id(re->serving, base, sizeof(base));
    const char *vals[4] = {re->serving->id, model, model ? base : NULL, rows};
    if (sophia_pg_query(m->pg, re->sql_move, 4, vals, NULL, NULL, on_moved, re))
        on_moved(re, NULL, "PostgreSQL queue full");
    free(model);
}

static void pass_swap(mem_reembed *re)
{
    re->phase = RE_SWAP;
    if (submit_swap(re, swap_work, swap_done) != 0)
        re->phase = RE_IDLE;
}

static void begin_done(void *arg, int cancelled)
{
    swap_job *j = arg;
    mem_reembed *re = j->re;
    int ok = j->ok && !cancelled;
    swap_job_free(j);
    if (re->m->freeing)
        return;
    if (!ok) {
        set_ref(&re->next, NULL);
        re->phase = RE_IDLE;
        snprintf(re->error, sizeof(re->error), "cannot make the new index");
        return;
    }
    pass_page(re);
}

static void pass_start(mem_reembed *re)
{
    sophia_memory *m = re->m;
    set_ref(&re->next, re->want);
    re->phase = RE_PASS;
    re->last_id = 0;
    re->done = 0;
    re->total = (size_t)(m->live > 0 ? m->live : 0);
    re->error[0] = '\0';
    re->t_start = sophia_now_mono_us();
    sophia_info("memory", "msg=\"re-embedding in the background\" from=%s to=%s "
                "rows=%zu", re->serving ? re->serving->id : "none",
                re->want->id, re->total);
    if (submit_swap(re, begin_work, begin_done) != 0) {
        set_ref(&re->next, NULL);
        re->phase = RE_IDLE;
    }
}

/* --------------------------------------------------------------- fit */

typedef struct fit_job {
    mem_reembed *re;
    sophia_embedder *base; /* held */
    size_t n;
    char **texts;
    size_t *lens;
    int64_t live;
    void *model;
} fit_job;

static void fit_work(void *arg)
{
    fit_job *j = arg;
    j->model = sophia_embed_fit(j->base, (const char *const *)j->texts,
                                j->lens, j->n);
}

static void fit_job_free(fit_job *j)
{
    for (size_t i = 0; i < j->n; i++)
        free(j->texts[i]);
    free(j->texts);
    free(j->lens);
    mem_emb_put(j->base);
    free(j);
}

static void fit_done(void *arg, int cancelled)
{
    fit_job *j = arg;
    mem_reembed *re = j->re;
    sophia_memory *m = re->m;
    int live = !cancelled && !m->freeing;
    sophia_embedder *fitted = NULL;
    if (j->model && live && j->base == re->base)
        fitted = sophia_embedder_with_model(j->base, j->model); /* takes it */
    else if (j->model)
        j->base->ops->model_free(j->base->state, j->model);
    if (live) {
        re->fit_rows = j->live; /* even when nothing was learnt: wait */
        re->fits++;
        if (fitted) {
            set_ref(&re->want, fitted);
            sophia_info("memory", "msg=\"embedder fitted\" embedder=%s rows=%zu",
                        fitted->id, j->n);
        }
        re->phase = RE_IDLE;
    }
    fit_job_free(j);
    if (live)
        mem_re_kick(m);
}

static void on_sample(void *arg, PGresult *res, const char *err)
{
    fit_job *j = arg;
    mem_reembed *re = j->re;
    size_t n = res && !err ? (size_t)PQntuples(res) : 0;
    j->texts = calloc(n ? n : 1, sizeof(*j->texts));
    j->lens = calloc(n ? n : 1, sizeof(*j->lens));
    for (size_t i = 0; j->texts && j->lens && i < n; i++) {
        j->texts[j->n] = strdup(PQgetvalue(res, (int)i, 0));
        j->lens[j->n] = (size_t)PQgetlength(res, (int)i, 0);
        j->n += j->texts[j->n] != NULL;
    }
    if (!re->m->freeing && j->n &&
        sophia_workers_submit(re->m->pool, fit_work, fit_done, j) == 0)
        return;
    if (!re->m->freeing) {
        re->phase = RE_IDLE;
        re->fit_rows = j->live; /* not again before the store doubled */
    }
    fit_job_free(j);
}

static void fit_start(mem_reembed *re)
{
    sophia_memory *m = re->m;
    fit_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->re = re;
    j->base = mem_emb_get(re->base);
    j->live = m->live;
    char lim[16];
    snprintf(lim, sizeof(lim), "%d", RE_FIT_SAMPLE);
    const char *vals[1] = {lim};
    re->phase = RE_FIT;
    if (sophia_pg_query(m->pg, re->sql_sample, 1, vals, NULL, NULL, on_sample, j)) {
        re->phase = RE_IDLE;
        mem_emb_put(j->base);
        free(j);
    }
}

static int fit_due(const mem_reembed *re)
{
    int64_t live = re->m->live;
    return sophia_embed_can_fit(re->base) && live >= RE_FIT_MIN &&
           ((!re->want->model && re->fit_rows == 0) ||
            live >= 2 * (re->fit_rows > 0 ? re->fit_rows : RE_FIT_MIN));
}

void mem_re_kick(sophia_memory *m)
{
    mem_reembed *re = m->re;
    if (!re || re->phase != RE_IDLE || m->state != MEM_READY || m->freeing ||
        m->rebuild_running)
        return;
    if (!same_id(re->serving, re->want->id))
        pass_start(re);
    else if (fit_due(re))
        fit_start(re);
}

unsigned mem_re_gen(const sophia_memory *m)
{
    return m->re ? m->re->gen : 0;
}

int mem_re_running(const sophia_memory *m)
{
    return m->re && (m->re->phase == RE_PASS || m->re->phase == RE_SWAP);
}

/* ------------------------------------------------------------ set-up */

int mem_re_init(sophia_memory *m, const sophia_plugin_set *plugins)
{
    mem_reembed *re = calloc(1, sizeof(*re));
    if (!re)
        return -1;
    m->re = re;
    re->m = m;
    re->plugins = plugins;
    const char *name = m->conf->memory.embedder, *why;
    re->name = name ? strdup(name) : NULL;
    re->base = mem_emb_get(configured(name, (int)m->conf->memory.dim, plugins, &why));
    if (!re->base) {
        sophia_error("memory", "msg=\"memory.embedder %s %s\"", name ? name : "",
                     why);
        return -1;
    }
    re->want = mem_emb_get(re->base);
    m->dim = re->base->dim;
    return build_sql(re, m->conf->memory.table);
}

void mem_re_free(sophia_memory *m)
{
    mem_reembed *re = m->re;
    if (!re)
        return;
    m->emb = m->next = NULL;
    set_ref(&re->serving, NULL);
    set_ref(&re->next, NULL);
    set_ref(&re->want, NULL);
    set_ref(&re->base, NULL);
    free(re->name);
    free(re->stored_model);
    free(re->removed);
    free(re->sql_meta);
    free(re->sql_clear);
    free(re->sql_page);
    free(re->sql_fill);
    free(re->sql_move);
    free(re->sql_sample);
    free(re);
    m->re = NULL;
}

int sophia_memory_check_embedder(const sophia_conf *c,
                                 const sophia_plugin_set *plugins,
                                 sophia_diag *d)
{
    const char *name = c->memory.embedder, *why = NULL;
    if (!name || !c->pg_url || !*c->pg_url)
        return 0;
    sophia_embedder *e = configured(name, (int)c->memory.dim, plugins, &why);
    sophia_embedder_free(e);
    if (e)
        return 0;
    sophia_instance *in = sophia_plugin_set_find(plugins, name);
    if (in && in->desc->kind != SOPHIA_KIND_EMBEDDER)
        sophia_diag_add(d, c->file, c->memory.embedder_line, c->memory.embedder_col,
                        "memory.embedder: '%s' is a %s, not an embedder", name,
                        sophia_plugin_kind_name(in->desc->kind));
    else
        sophia_diag_add(d, c->file, c->memory.embedder_line, c->memory.embedder_col,
                        "memory.embedder: '%s' %s", name, why);
    return -1;
}

void sophia_memory_set_embedder(sophia_memory *m, const sophia_conf *c,
                                const sophia_plugin_set *plugins)
{
    if (!m || !m->re)
        return;
    mem_reembed *re = m->re;
    const char *why;
    re->plugins = plugins;
    sophia_embedder *e = configured(c->memory.embedder, (int)m->conf->memory.dim,
                                    plugins, &why);
    if (!e) {
        sophia_warn("memory", "msg=\"memory.embedder %s %s; keeping %s\"",
                    c->memory.embedder ? c->memory.embedder : "", why, re->base->id);
        return;
    }
    if (!strcmp(e->id, re->base->id)) {
        sophia_embedder_free(e); /* the same vectors: nothing to do */
        return;
    }
    free(re->name);
    re->name = c->memory.embedder ? strdup(c->memory.embedder) : NULL;
    set_ref(&re->base, e);
    set_want(re);
    re->fit_rows = 0;
    sophia_info("memory", "msg=\"memory.embedder changed\" embedder=%s", re->want->id);
    mem_re_kick(m);
}

json_t *mem_re_stats(const sophia_memory *m)
{
    const mem_reembed *re = m->re;
    if (!re)
        return json_null();
    /* reembedding: the old embedder serves; swapping: the new one does,
     * its vectors being moved into `embedding` */
    static const char *const phases[] = {"ready", "fitting", "reembedding",
                                         "swapping"};
    json_t *o = json_pack("{s:s?,s:s?,s:s,s:i,s:s,s:I,s:I}", "instance", re->name,
                          "serving", re->serving ? re->serving->id : NULL,
                          "want", re->want->id, "dim", re->want->dim, "state",
                          phases[re->phase], "reembeds", (json_int_t)re->reembeds,
                          "fits", (json_int_t)re->fits);
    if (o && (re->phase == RE_PASS || re->phase == RE_SWAP))
        json_object_set_new(o, "progress",
                            json_pack("{s:I,s:I}", "done", (json_int_t)re->done,
                                      "total", (json_int_t)re->total));
    if (o && re->error[0])
        json_object_set_new(o, "last_error", json_string(re->error));
    return o;
}
