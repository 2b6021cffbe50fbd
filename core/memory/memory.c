/*
 * memory - the store: start-up (schema, index load or rebuild), storing,
 * feedback, index persistence and statistics. Retrieval is in
 * memory_search.c, consolidation in memory_consolidate.c; memory.h
 * describes the design they share.
 *
 * Every multi-step operation is a heap "job" that moves between the loop
 * (PostgreSQL via pg.c) and the worker pool (embedding, faiss), each step a
 * callback that either continues or finishes the job with an error. While
 * the store is being freed every step finishes with SOPHIA_EUNAVAIL.
 */
#include "memory/memory_priv.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <sophia/sdk.h>

#include "memory/faiss_shim.h"
#include "lib/log.h"
#include "event/loop.h"

#define MEM_MAX_DEFERRED 1000
#define MEM_SAVE_DELAY_S 2
#define MEM_REBUILD_CHUNK 1024 /* vectors copied per read-lock hold */
#define MEM_DEFAULT_IMPORTANCE 0.5
#define MEM_FTS_SCAN "500" /* full-text matches ranked per search */
/* A word in at least this share of the live rows (and at least
 * MEM_COMMON_MIN of them) is left out of the full-text leg. */
#define MEM_COMMON_SHARE "0.02"
#define MEM_COMMON_MIN "1000"
#define MEM_COMMON_REFRESH_S 600

/* ------------------------------------------------------------- SQL */

static char *fmt_sql(const char *fmt, const char *t)
{
    size_t n = strlen(fmt) + 8 * strlen(t) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, t, t, t, t, t, t, t, t);
    return s;
}

/* The context filter: $N is a jsonb object KEY -> text value. */
#define CTX_FILTER(n)                                                         \
    "NOT EXISTS (SELECT 1 FROM jsonb_each_text($" #n "::jsonb) f "           \
    "WHERE (context->>f.key) IS DISTINCT FROM f.value)"

static int build_sql(mem_sql *q, const char *t)
{
    q->insert = fmt_sql("INSERT INTO %s (content, memory_type, context, "
                        "importance, embedding) VALUES ($1, $2, $3::jsonb, "
                        "$4::real, $5::bytea) RETURNING id", t);
    /* The query's stemmed words OR-ed (recall: a paraphrase shares some
     * words, not all), minus the table's most common words (<table>_stats,
     * refreshed by q->common): those match a large part of the table, so
     * PostgreSQL would build a bitmap of most rows and rank thousands for
     * little signal - the vector leg covers them. A query of common words
     * only has no text leg. Ranking is over at most MEM_FTS_SCAN matches. */
    q->fts = fmt_sql("WITH w AS (SELECT string_agg(u.lexeme, ' ') AS s FROM "
                     "unnest(to_tsvector('english', $1)) u WHERE u.lexeme <> "
                     "ALL(COALESCE((SELECT common FROM %s_stats WHERE k = 1), "
                     "'{}'))), q AS (SELECT to_tsquery('simple', replace("
                     "plainto_tsquery('simple', w.s)::text, ' & ', ' | ')) AS q "
                     "FROM w), m AS (SELECT id, tsv FROM %s, q WHERE tsv @@ q.q "
                     "AND consolidated_into IS NULL AND " CTX_FILTER(2) " LIMIT "
                     MEM_FTS_SCAN ") SELECT m.id, ts_rank_cd(m.tsv, q.q)::float8 "
                     "FROM m, q ORDER BY 2 DESC, m.id DESC LIMIT $3::int", t);
    q->common = fmt_sql("INSERT INTO %s_stats SELECT 1, ARRAY(SELECT word FROM "
                        "ts_stat('SELECT tsv FROM %s WHERE consolidated_into IS "
                        "NULL') WHERE ndoc >= greatest(" MEM_COMMON_MIN ", (SELECT "
                        "count(*) FROM %s WHERE consolidated_into IS NULL) * "
                        MEM_COMMON_SHARE ")) ON CONFLICT (k) DO UPDATE SET "
                        "common = excluded.common", t);
    q->rows = fmt_sql("SELECT id, content, memory_type, context::text, "
                      "importance::float8, extract(epoch FROM created_at)::float8, "
                      "extract(epoch FROM last_access)::float8, access_count, "
                      "feedback, embedding FROM %s WHERE id = ANY($1::bigint[]) "
                      "AND consolidated_into IS NULL AND " CTX_FILTER(2), t);
    q->touch = fmt_sql("UPDATE %s SET last_access = now(), access_count = "
                       "access_count + 1 WHERE id = ANY($1::bigint[])", t);
    q->feedback = fmt_sql("UPDATE %s SET importance = CASE WHEN $2::bool THEN "
                          "importance + 0.2 * (1 - importance) ELSE importance "
                          "* 0.8 END, feedback = feedback + CASE WHEN $2::bool "
                          "THEN 1 ELSE -1 END WHERE id = $1::bigint AND "
                          "consolidated_into IS NULL RETURNING importance::float8", t);
    q->count = fmt_sql("SELECT count(*) FROM %s WHERE consolidated_into IS NULL", t);
    q->types = fmt_sql("SELECT memory_type, count(*) FROM %s WHERE "
                       "consolidated_into IS NULL GROUP BY 1", t);
    q->all = fmt_sql("SELECT id, embedding FROM %s WHERE consolidated_into "
                     "IS NULL ORDER BY id", t);
    q->batch = fmt_sql("SELECT id, content, memory_type, context::text, "
                       "importance::float8, extract(epoch FROM created_at)::float8, "
                       "extract(epoch FROM last_access)::float8, access_count, "
                       "feedback, embedding FROM %s WHERE consolidated_into IS "
                       "NULL ORDER BY id LIMIT $1::int", t);
    /* One statement, so a merge is all or nothing: the CTE marks the
     * dropped row (only while the kept one is live), the outer UPDATE folds
     * its counts into the kept one. */
    q->merge_keep = fmt_sql("WITH d AS (UPDATE %s SET consolidated_into = "
                            "$1::bigint WHERE id = $2::bigint AND "
                            "consolidated_into IS NULL AND EXISTS (SELECT 1 FROM "
                            "%s k WHERE k.id = $1::bigint AND k.consolidated_into "
                            "IS NULL) RETURNING access_count, importance, "
                            "last_access, memory_type) UPDATE %s k SET "
                            "access_count = k.access_count + d.access_count, "
                            "importance = greatest(k.importance, d.importance), "
                            "last_access = greatest(k.last_access, d.last_access) "
                            "FROM d WHERE k.id = $1::bigint RETURNING d.memory_type", t);
    q->expire = fmt_sql("DELETE FROM %s WHERE id = $1::bigint RETURNING memory_type", t);
    char **all[] = {&q->insert, &q->fts, &q->rows, &q->touch, &q->feedback,
                    &q->count, &q->types, &q->all, &q->batch, &q->merge_keep,
                    &q->expire, &q->common};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!*all[i])
            return -1;
    return 0;
}

static void free_sql(mem_sql *q)
{
    free(q->insert);
    free(q->fts);
    free(q->rows);
    free(q->touch);
    free(q->feedback);
    free(q->count);
    free(q->types);
    free(q->all);
    free(q->batch);
    free(q->merge_keep);
    free(q->expire);
    free(q->common);
}

static void schema_sql(const char *t, char *buf, size_t n, int which)
{
    switch (which) {
    case 0:
        snprintf(buf, n,
                 "CREATE TABLE IF NOT EXISTS %s (id bigserial PRIMARY KEY, "
                 "content text NOT NULL, memory_type text NOT NULL, context "
                 "jsonb NOT NULL DEFAULT '{}', importance real NOT NULL "
                 "DEFAULT 0.5, created_at timestamptz NOT NULL DEFAULT now(), "
                 "last_access timestamptz NOT NULL DEFAULT now(), access_count "
                 "bigint NOT NULL DEFAULT 0, feedback integer NOT NULL DEFAULT "
                 "0, consolidated_into bigint NULL, embedding bytea NOT NULL, "
                 "tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', "
                 "content)) STORED)", t);
        break;
    case 1:
        snprintf(buf, n, "CREATE INDEX IF NOT EXISTS %s_tsv ON %s USING gin (tsv)",
                 t, t);
        break;
    case 2:
        snprintf(buf, n, "CREATE TABLE IF NOT EXISTS %s_stats (k int PRIMARY "
                 "KEY, common text[] NOT NULL)", t);
        break;
    default:
        snprintf(buf, n, "CREATE INDEX IF NOT EXISTS %s_context ON %s USING "
                 "gin (context jsonb_path_ops)", t, t);
        break;
    }
}

/* ---------------------------------------------------------- helpers */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int mem_decode_vec(const char *hex, float *out, int dim)
{
    size_t want = (size_t)dim * sizeof(float);
    if (!hex || hex[0] != '\\' || hex[1] != 'x' || strlen(hex + 2) != 2 * want)
        return -1;
    unsigned char *b = (unsigned char *)out;
    for (size_t i = 0; i < want; i++) {
        int hi = hexval(hex[2 + 2 * i]), lo = hexval(hex[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        b[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

char *mem_id_array(const int64_t *ids, size_t n)
{
    size_t cap = 2 + n * 21 + 1;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t o = 0;
    s[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "%s%lld", i ? "," : "",
                              (long long)ids[i]);
    s[o++] = '}';
    s[o] = '\0';
    return s;
}

void mem_count_type(sophia_memory *m, const char *type, int delta)
{
    json_t *v = json_object_get(m->by_type, type);
    json_int_t n = (v ? json_integer_value(v) : 0) + delta;
    if (n <= 0)
        json_object_del(m->by_type, type);
    else
        json_object_set_new(m->by_type, type, json_integer(n));
    m->live += delta;
}

/* ------------------------------------------------------------ index */

/* The store's own distance code (see faiss_shim.h) and HNSW breadths. */
static void index_tune(FaissIndex *ix)
{
    sophia_faiss_accelerate(ix, 1);
    sophia_faiss_hnsw_set(ix, SOPHIA_MEM_HNSW_EF_CONSTRUCTION,
                          SOPHIA_MEM_HNSW_EF_SEARCH);
}

static FaissIndex *index_new(int dim, int hnsw)
{
    FaissIndex *ix = NULL;
    char desc[64] = "IDMap2,Flat";
    if (hnsw)
        snprintf(desc, sizeof(desc), "IDMap2,HNSW%d,Flat", SOPHIA_MEM_HNSW_M);
    if (faiss_index_factory(&ix, dim, desc, METRIC_INNER_PRODUCT) != 0) {
        sophia_error("memory", "msg=\"faiss index_factory failed\" error=\"%s\"",
                     faiss_get_last_error());
        return NULL;
    }
    index_tune(ix);
    return ix;
}

static int want_hnsw(const sophia_memory *m, int64_t n)
{
    const char *k = m->conf->memory.index;
    if (!strcmp(k, "hnsw"))
        return 1;
    if (!strcmp(k, "flat"))
        return 0;
    return n >= (int64_t)m->conf->memory.hnsw_threshold;
}

int mem_is_tomb(const sophia_memory *m, int64_t id)
{
    size_t lo = 0, hi = m->ntomb;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->tomb[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->ntomb && m->tomb[lo] == id;
}

static void tomb_add(sophia_memory *m, int64_t id)
{
    if (mem_is_tomb(m, id))
        return;
    if (m->ntomb == m->tomb_cap) {
        size_t cap = m->tomb_cap ? m->tomb_cap * 2 : 64;
        int64_t *v = realloc(m->tomb, cap * sizeof(*v));
        if (!v)
            return;
        m->tomb = v;
        m->tomb_cap = cap;
    }
    size_t i = m->ntomb;
    while (i > 0 && m->tomb[i - 1] > id) {
        m->tomb[i] = m->tomb[i - 1];
        i--;
    }
    m->tomb[i] = id;
    m->ntomb++;
}

/* Enough tombstones for memory.rebuild_removed_pct? Caller holds the lock. */
static int tombs_want_rebuild(const sophia_memory *m)
{
    size_t pct = m->conf->memory.rebuild_removed_pct;
    idx_t total = m->index ? faiss_Index_ntotal(m->index) : 0;
    return pct > 0 && m->ntomb > 0 && total > 0 &&
           (double)m->ntomb * 100.0 >= (double)pct * (double)total;
}

size_t mem_index_remove(sophia_memory *m, const int64_t *ids, size_t n,
                        int *rebuild)
{
    pthread_rwlock_wrlock(&m->lock);
    if (m->hnsw || m->rebuilding) {
        /* HNSW cannot delete; a rebuild in progress copies storage by
         * position, so nothing may move under it either. */
        for (size_t i = 0; i < n; i++)
            tomb_add(m, ids[i]);
    } else if (m->index && n) {
        FaissIDSelectorBatch *sel = NULL;
        if (faiss_IDSelectorBatch_new(&sel, n, ids) == 0) {
            faiss_Index_remove_ids(m->index, (FaissIDSelector *)sel, NULL);
            faiss_IDSelector_free((FaissIDSelector *)sel);
        }
    }
    size_t nt = m->ntomb;
    *rebuild = tombs_want_rebuild(m);
    pthread_rwlock_unlock(&m->lock);
    return nt;
}

/* Saves to a temporary file, then renames: a crash mid-write never leaves
 * a truncated index where the next start would read it. */
static int index_save(sophia_memory *m)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", m->index_path);
    pthread_rwlock_rdlock(&m->lock);
    int rc = m->index ? faiss_write_index_fname(m->index, tmp) : -1;
    pthread_rwlock_unlock(&m->lock);
    if (rc == 0 && rename(tmp, m->index_path) == 0)
        return 0;
    sophia_warn("memory", "msg=\"cannot save index\" path=%s error=\"%s\"",
                m->index_path, rc ? faiss_get_last_error() : strerror(errno));
    unlink(tmp);
    return -1;
}

static void save_work(void *arg)
{
    index_save(arg);
}

static void save_done(void *arg, int cancelled)
{
    sophia_memory *m = arg;
    (void)cancelled;
    m->saving = 0;
    if (m->dirty && !m->freeing)
        mem_mark_dirty(m); /* changed while saving: once more, later */
}

static void on_save_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_memory *m = arg;
    if (m->saving || m->freeing || !m->dirty)
        return;
    m->dirty = 0;
    m->saving = 1;
    if (sophia_workers_submit(m->pool, save_work, save_done, m) != 0)
        m->saving = 0;
}

void mem_mark_dirty(sophia_memory *m)
{
    m->dirty = 1;
    if (!m->saving && !evtimer_pending(m->save_ev, NULL)) {
        struct timeval tv = {MEM_SAVE_DELAY_S, 0};
        evtimer_add(m->save_ev, &tv);
    }
}

/* ----------------------------------------------- background rebuild */

/* HNSW cannot delete, so removed ids stay in the graph as tombstones that
 * every search skips; and with memory.index: auto a Flat index that grew
 * past hnsw_threshold should become HNSW. Both are fixed by building a
 * new index from the live vectors, on a worker, while searches and stores
 * keep using the old one:
 *
 *  1. Under the write lock: set `rebuilding` (from now on removals only
 *     tombstone, so the old storage never moves) and copy the tombstones
 *     as they are (t0): those entries are left out.
 *  2. Repeatedly, under the read lock, copy the next MEM_REBUILD_CHUNK
 *     entries of the old index (position order), then add the ones not in
 *     t0 to the new index with no lock held. Stores that land meanwhile
 *     are appended to the old storage and picked up by a later chunk.
 *  3. Under the write lock: copy what is still new, swap the indexes, and
 *     keep as tombstones only those removed since step 1 (tomb - t0); a
 *     Flat result deletes them for real instead.
 *
 * Searches wait only for step 3's catch-up (a few chunks at most); the old
 * index is freed after the lock is released. */

typedef struct rebuild_job {
    sophia_memory *m;
    int hnsw;
    FaissIndex *ix;
    int64_t *t0;
    size_t nt0;
    float *vecs;
    idx_t *ids;
    idx_t copied;
    size_t rows, removed, tombs_after;
    int ok, again;
    char msg[256];
    int64_t t_start;
} rebuild_job;

static int in_sorted(const int64_t *v, size_t n, int64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo] == id;
}

/* Copies up to MEM_REBUILD_CHUNK entries from j->copied into the buffers;
 * caller holds the lock. Returns how many, or -1 on a faiss error. */
static idx_t rebuild_copy(rebuild_job *j)
{
    idx_t total = faiss_Index_ntotal(j->m->index);
    idx_t n = total - j->copied;
    if (n > MEM_REBUILD_CHUNK)
        n = MEM_REBUILD_CHUNK;
    if (n > 0 && sophia_faiss_copy(j->m->index, j->copied, n, j->vecs, j->ids) != 0)
        return -1;
    return n;
}

/* Adds the copied entries that are not t0 tombstones to the new index. */
static int rebuild_add(rebuild_job *j, idx_t n)
{
    idx_t keep = 0;
    int dim = j->m->dim;
    for (idx_t i = 0; i < n; i++) {
        if (in_sorted(j->t0, j->nt0, j->ids[i]))
            continue;
        if (keep != i) {
            j->ids[keep] = j->ids[i];
            memmove(j->vecs + (size_t)keep * dim, j->vecs + (size_t)i * dim,
                    (size_t)dim * sizeof(float));
        }
        keep++;
    }
    j->copied += n;
    j->rows += (size_t)keep;
    return keep ? faiss_Index_add_with_ids(j->ix, keep, j->vecs, j->ids) : 0;
}

/* Step 3, under the write lock: the new tombstones are tomb - t0. */
static void rebuild_swap(rebuild_job *j)
{
    sophia_memory *m = j->m;
    size_t o = 0;
    for (size_t i = 0; i < m->ntomb; i++)
        if (!in_sorted(j->t0, j->nt0, m->tomb[i]))
            m->tomb[o++] = m->tomb[i];
    m->ntomb = o;
    j->removed = j->nt0;
    if (!j->hnsw && o) {
        FaissIDSelectorBatch *sel = NULL;
        if (faiss_IDSelectorBatch_new(&sel, o, m->tomb) == 0) {
            faiss_Index_remove_ids(j->ix, (FaissIDSelector *)sel, NULL);
            faiss_IDSelector_free((FaissIDSelector *)sel);
            m->ntomb = 0;
        }
    }
    FaissIndex *old = m->index;
    m->index = j->ix;
    m->hnsw = j->hnsw;
    j->ix = old; /* freed by the caller, outside the lock */
    j->tombs_after = m->ntomb;
    j->again = tombs_want_rebuild(m);
}

static void rebuild_work(void *arg)
{
    rebuild_job *j = arg;
    sophia_memory *m = j->m;
    pthread_rwlock_wrlock(&m->lock);
    m->rebuilding = 1;
    j->nt0 = m->ntomb;
    j->t0 = malloc((j->nt0 ? j->nt0 : 1) * sizeof(*j->t0));
    if (j->t0 && j->nt0)
        memcpy(j->t0, m->tomb, j->nt0 * sizeof(*j->t0));
    pthread_rwlock_unlock(&m->lock);
    if (!j->t0 || !j->vecs || !j->ids || !(j->ix = index_new(m->dim, j->hnsw))) {
        snprintf(j->msg, sizeof(j->msg), "out of memory or faiss error");
        goto out;
    }
    for (;;) {
        if (atomic_load(&m->stop)) {
            snprintf(j->msg, sizeof(j->msg), "shutting down");
            goto out;
        }
        pthread_rwlock_rdlock(&m->lock);
        idx_t n = rebuild_copy(j);
        pthread_rwlock_unlock(&m->lock);
        if (n < 0 || rebuild_add(j, n) != 0) {
            snprintf(j->msg, sizeof(j->msg), "%s", faiss_get_last_error());
            goto out;
        }
        if (n < MEM_REBUILD_CHUNK)
            break; /* caught up: the rest (if any) under the write lock */
    }
    pthread_rwlock_wrlock(&m->lock);
    idx_t n;
    while ((n = rebuild_copy(j)) > 0 && rebuild_add(j, n) == 0)
        ;
    if (n == 0) {
        rebuild_swap(j);
        j->ok = 1;
    } else {
        snprintf(j->msg, sizeof(j->msg), "%s", faiss_get_last_error());
    }
    m->rebuilding = 0;
    pthread_rwlock_unlock(&m->lock);
    if (j->ok)
        return; /* j->ix is the old index now */
out:
    pthread_rwlock_wrlock(&m->lock);
    m->rebuilding = 0;
    pthread_rwlock_unlock(&m->lock);
}

static void rebuild_done(void *arg, int cancelled)
{
    rebuild_job *j = arg;
    sophia_memory *m = j->m;
    if (j->ix)
        faiss_Index_free(j->ix);
    if (!cancelled && j->ok) {
        m->rebuilds++;
        m->tombstones = j->tombs_after;
        sophia_info("memory", "msg=\"index rebuilt in the background\" rows=%zu "
                    "left_out=%zu kind=%s ms=%.0f", j->rows, j->removed,
                    j->hnsw ? "hnsw" : "flat",
                    (double)(sophia_now_mono_us() - j->t_start) / 1000.0);
        if (!m->freeing)
            mem_mark_dirty(m);
    } else if (!cancelled && !m->freeing) {
        sophia_warn("memory", "msg=\"background index rebuild failed\" error=\"%s\"",
                    j->msg);
    }
    m->rebuild_running = 0;
    int again = !cancelled && j->ok && j->again;
    free(j->t0);
    free(j->vecs);
    free(j->ids);
    free(j);
    if (again)
        mem_rebuild(m); /* enough was removed while it ran */
}

void mem_rebuild(sophia_memory *m)
{
    if (m->rebuild_running || m->freeing || m->state != MEM_READY)
        return;
    rebuild_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->m = m;
    /* auto: the kind the live count asks for; flat/hnsw: as configured */
    j->hnsw = want_hnsw(m, m->live);
    j->vecs = malloc((size_t)MEM_REBUILD_CHUNK * (size_t)m->dim * sizeof(float));
    j->ids = malloc(MEM_REBUILD_CHUNK * sizeof(*j->ids));
    j->t_start = sophia_now_mono_us();
    if (sophia_workers_submit(m->pool, rebuild_work, rebuild_done, j) != 0) {
        free(j->vecs);
        free(j->ids);
        free(j);
        return;
    }
    m->rebuild_running = 1;
}

/* ---------------------------------------------------- ready / deferred */

/* Which words are too common for the text leg (q->fts): now and every
 * MEM_COMMON_REFRESH_S. ts_stat reads every tsvector (~0.7 s at 100k
 * rows), so it runs on a connection of its own, never ahead of searches. */
static void on_common_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_memory *m = arg;
    if (m->state == MEM_READY && !m->freeing && sophia_pg_up(m->pg_maint))
        sophia_pg_query(m->pg_maint, m->sql.common, 0, NULL, NULL, NULL, NULL, NULL);
}

static void set_ready(sophia_memory *m)
{
    m->state = MEM_READY;
    struct timeval tv = {MEM_COMMON_REFRESH_S, 0};
    if (m->common_ev && !evtimer_pending(m->common_ev, NULL)) {
        event_add(m->common_ev, &tv);
        on_common_timer(-1, 0, m);
    }
    mem_deferred *d = m->deferred;
    m->deferred = m->deferred_tail = NULL;
    m->ndeferred = 0;
    while (d) {
        mem_deferred *next = d->next;
        d->start(d->op);
        free(d);
        d = next;
    }
}

static void fail_deferred(sophia_memory *m, int err, const char *msg)
{
    mem_deferred *d = m->deferred;
    m->deferred = m->deferred_tail = NULL;
    m->ndeferred = 0;
    while (d) {
        mem_deferred *next = d->next;
        d->fail(d->op, err, msg);
        free(d);
        d = next;
    }
}

static void set_failed(sophia_memory *m, const char *why)
{
    m->state = MEM_FAILED;
    snprintf(m->fail_msg, sizeof(m->fail_msg), "%s", why);
    sophia_error("memory", "msg=\"memory store unavailable\" reason=\"%s\"", why);
    fail_deferred(m, SOPHIA_EUNAVAIL, m->fail_msg);
}

int mem_when_ready(sophia_memory *m, void (*start)(void *),
                   void (*fail)(void *, int, const char *), void *op)
{
    if (m->state == MEM_READY) {
        start(op);
        return 0;
    }
    if (m->state == MEM_FAILED || m->ndeferred >= MEM_MAX_DEFERRED)
        return SOPHIA_EUNAVAIL;
    /* Still loading because PostgreSQL is unreachable: say so now rather
     * than hold the request until it comes back. */
    sophia_pg_stats ps;
    sophia_pg_get_stats(m->pg, &ps);
    if (!ps.up && ps.connect_failures > 0)
        return SOPHIA_EUNAVAIL;
    mem_deferred *d = calloc(1, sizeof(*d));
    if (!d)
        return SOPHIA_ENOMEM;
    d->start = start;
    d->fail = fail;
    d->op = op;
    if (m->deferred_tail)
        m->deferred_tail->next = d;
    else
        m->deferred = d;
    m->deferred_tail = d;
    m->ndeferred++;
    return 0;
}

/* ----------------------------------------------------------- start-up */

typedef struct boot_job {
    sophia_memory *m;
    int64_t count;
    int loaded; /* the file matched */
    int64_t *ids;
    float *vecs;
    size_t n;
    char msg[256];
} boot_job;

static void boot_fail(boot_job *b, const char *why)
{
    if (!b->m->freeing)
        set_failed(b->m, why);
    free(b->ids);
    free(b->vecs);
    free(b);
}

/* Sets the store's efSearch when the index (under its IDMap2) is HNSW. */
static int is_hnsw_index(FaissIndex *ix)
{
    return sophia_faiss_hnsw_set(ix, 0, SOPHIA_MEM_HNSW_EF_SEARCH) == 0;
}

/* Reads the saved index; b->loaded only when it matches the table (row
 * count, dimension) and the kind memory.index asks for at this size -
 * otherwise b->msg says why and the caller rebuilds. */
static void load_work(void *arg)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    if (access(m->index_path, R_OK) != 0)
        return;
    FaissIndex *ix = NULL;
    if (faiss_read_index_fname(m->index_path, 0, &ix) != 0) {
        snprintf(b->msg, sizeof(b->msg), "%s", faiss_get_last_error());
        return;
    }
    int hnsw = is_hnsw_index(ix);
    index_tune(ix);
    if (faiss_Index_d(ix) != m->dim || faiss_Index_ntotal(ix) != b->count) {
        snprintf(b->msg, sizeof(b->msg), "stale: %lld vectors of dim %d, "
                 "table has %lld rows, dim %d", (long long)faiss_Index_ntotal(ix),
                 faiss_Index_d(ix), (long long)b->count, m->dim);
    } else if (hnsw != want_hnsw(m, b->count)) {
        snprintf(b->msg, sizeof(b->msg), "index kind: the file is %s, %lld rows "
                 "want %s", hnsw ? "hnsw" : "flat", (long long)b->count,
                 hnsw ? "flat" : "hnsw");
    } else {
        pthread_rwlock_wrlock(&m->lock);
        m->index = ix;
        m->hnsw = hnsw;
        pthread_rwlock_unlock(&m->lock);
        b->loaded = 1;
        return;
    }
    faiss_Index_free(ix);
}

static void build_work(void *arg)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    int hnsw = want_hnsw(m, (int64_t)b->n);
    FaissIndex *ix = index_new(m->dim, hnsw);
    if (!ix || (b->n && faiss_Index_add_with_ids(ix, (idx_t)b->n, b->vecs,
                                                 (const idx_t *)b->ids) != 0)) {
        snprintf(b->msg, sizeof(b->msg), "index build failed: %s",
                 faiss_get_last_error() ? faiss_get_last_error() : "?");
        if (ix)
            faiss_Index_free(ix);
        return;
    }
    pthread_rwlock_wrlock(&m->lock);
    m->index = ix;
    m->hnsw = hnsw;
    pthread_rwlock_unlock(&m->lock);
    index_save(m);
    b->loaded = 1;
}

static void build_done(void *arg, int cancelled)
{
    boot_job *b = arg;
    if (cancelled || !b->loaded) {
        boot_fail(b, cancelled ? "shutting down" : b->msg);
        return;
    }
    sophia_info("memory", "msg=\"index rebuilt\" rows=%zu kind=%s path=%s",
                b->n, b->m->hnsw ? "hnsw" : "flat", b->m->index_path);
    b->m->rebuilds++;
    set_ready(b->m);
    free(b->ids);
    free(b->vecs);
    free(b);
}

static int copy_rows(boot_job *b, PGresult *res, int dim)
{
    size_t n = (size_t)PQntuples(res), vb = (size_t)dim * sizeof(float);
    b->ids = malloc((n ? n : 1) * sizeof(*b->ids));
    b->vecs = malloc((n ? n : 1) * vb);
    if (!b->ids || !b->vecs)
        return -1;
    for (size_t i = 0; i < n; i++) {
        /* binary results: int8 big-endian, bytea raw */
        const unsigned char *p = (const unsigned char *)PQgetvalue(res, (int)i, 0);
        uint64_t v = 0;
        for (int k = 0; k < 8; k++)
            v = v << 8 | p[k];
        if ((size_t)PQgetlength(res, (int)i, 1) != vb)
            continue; /* another dim: skipped (the row is still searchable by text) */
        b->ids[b->n] = (int64_t)v;
        memcpy(b->vecs + b->n * (size_t)dim, PQgetvalue(res, (int)i, 1), vb);
        b->n++;
    }
    return 0;
}

static void on_all_rows(void *arg, PGresult *res, const char *err)
{
    boot_job *b = arg;
    if (!res || err) {
        boot_fail(b, err ? err : "closed");
        return;
    }
    if (copy_rows(b, res, b->m->dim) < 0 ||
        sophia_workers_submit(b->m->pool, build_work, build_done, b) != 0)
        boot_fail(b, "out of memory");
}

static void load_done(void *arg, int cancelled)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    if (cancelled || m->freeing) {
        boot_fail(b, "shutting down");
        return;
    }
    if (b->loaded) {
        sophia_info("memory", "msg=\"index loaded\" rows=%lld kind=%s path=%s",
                    (long long)b->count, m->hnsw ? "hnsw" : "flat", m->index_path);
        set_ready(m);
        free(b);
        return;
    }
    sophia_info("memory", "msg=\"rebuilding index from PostgreSQL\" path=%s "
                "reason=\"%s\"", m->index_path, b->msg[0] ? b->msg : "no index file");
    if (sophia_pg_query_fmt(m->pg, m->sql.all, 0, NULL, NULL, NULL, 1,
                            on_all_rows, b) != 0)
        boot_fail(b, "cannot query PostgreSQL");
}

static void on_types(void *arg, PGresult *res, const char *err)
{
    sophia_memory *m = arg;
    if (!res || err)
        return;
    for (int i = 0; i < PQntuples(res); i++)
        json_object_set_new(m->by_type, PQgetvalue(res, i, 0),
                            json_integer(atoll(PQgetvalue(res, i, 1))));
}

static void on_count(void *arg, PGresult *res, const char *err)
{
    boot_job *b = arg;
    if (!res || err) {
        boot_fail(b, err ? err : "closed");
        return;
    }
    b->count = atoll(PQgetvalue(res, 0, 0));
    b->m->live = b->count;
    if (sophia_workers_submit(b->m->pool, load_work, load_done, b) != 0)
        boot_fail(b, "worker pool unavailable");
}

static void on_schema(void *arg, PGresult *res, const char *err)
{
    sophia_memory *m = arg;
    if (err && res && !m->freeing)
        sophia_error("memory", "msg=\"schema statement failed\" error=\"%s\"", err);
}

static int boot(sophia_memory *m)
{
    boot_job *b = calloc(1, sizeof(*b));
    if (!b)
        return -1;
    b->m = m;
    char sql[1024];
    for (int i = 0; i < 4; i++) {
        schema_sql(m->conf->memory.table, sql, sizeof(sql), i);
        sophia_pg_query(m->pg, sql, 0, NULL, NULL, NULL, on_schema, m);
    }
    sophia_pg_query(m->pg, m->sql.types, 0, NULL, NULL, NULL, on_types, m);
    if (sophia_pg_query(m->pg, m->sql.count, 0, NULL, NULL, NULL, on_count, b)) {
        free(b);
        return -1;
    }
    return 0;
}

/* <dir of the YAML file>/data/memory.index unless configured. */
static char *default_index_path(const sophia_conf *c)
{
    if (c->memory.index_path)
        return strdup(c->memory.index_path);
    const char *file = c->file ? c->file : "./x";
    const char *slash = strrchr(file, '/');
    int dlen = slash ? (int)(slash - file) : 1;
    char buf[4096];
    snprintf(buf, sizeof(buf), "%.*s/data/memory.index", dlen, slash ? file : ".");
    return strdup(buf);
}

static void make_parent_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        mkdir(dir, 0755); /* one level, like nginx's temp paths */
    }
}

/* The pool already runs searches side by side: faiss must not start an
 * OpenMP team inside each one (on 2 cores that only adds hand-offs and
 * spinning threads to every search). */
static void pool_thread_init(void *arg)
{
    (void)arg;
    sophia_faiss_set_threads(1);
}

sophia_memory *sophia_memory_new(const sophia_conf *c, struct event_base *base,
                                 const sophia_plugin_set *plugins,
                                 sophia_cache *cache)
{
    if (!c->pg_url || !*c->pg_url)
        return NULL;
    sophia_memory *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->conf = c;
    m->base = base;
    m->cache = cache;
    m->dim = (int)c->memory.dim;
    pthread_rwlock_init(&m->lock, NULL);
    m->by_type = json_object();
    m->index_path = default_index_path(c);
    m->emb = sophia_embed_hashing_new(m->dim);
    m->save_ev = evtimer_new(base, on_save_timer, m);
    m->common_ev = event_new(base, -1, EV_PERSIST, on_common_timer, m);
    if (!m->index_path || !m->emb || !m->save_ev || !m->by_type ||
        build_sql(&m->sql, c->memory.table) < 0 ||
        !(m->pool = sophia_workers_new(base, (unsigned)c->memory.workers, "memory",
                                       pool_thread_init, NULL)) ||
        !(m->pg = sophia_pg_new(base, c->pg_url)) ||
        !(m->pg_maint = sophia_pg_new(base, c->pg_url)) || boot(m) < 0 ||
        mem_cons_init(m, plugins) < 0 || mem_access_init(m) < 0) {
        sophia_error("memory", "msg=\"cannot start the memory store\"");
        sophia_memory_free(m);
        return NULL;
    }
    make_parent_dir(m->index_path);
    return m;
}

void sophia_memory_free(sophia_memory *m)
{
    if (!m)
        return;
    m->freeing = 1;
    atomic_store(&m->stop, 1);
    mem_cons_free(m);
    mem_access_free(m);
    fail_deferred(m, SOPHIA_EUNAVAIL, "shutting down");
    sophia_workers_free(m->pool); /* finished jobs complete, queued cancel */
    sophia_pg_free(m->pg);        /* queries in flight get "closed" */
    sophia_pg_free(m->pg_maint);
    if (m->index && (m->dirty || m->saving))
        index_save(m);
    if (m->index)
        faiss_Index_free(m->index);
    if (m->save_ev)
        event_free(m->save_ev);
    if (m->common_ev)
        event_free(m->common_ev);
    sophia_embedder_free(m->emb);
    free_sql(&m->sql);
    free(m->index_path);
    free(m->tomb);
    json_decref(m->by_type);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

int sophia_memory_ready(const sophia_memory *m)
{
    return m && m->state == MEM_READY && sophia_pg_up(m->pg);
}

const sophia_conf *sophia_memory_conf(const sophia_memory *m)
{
    return m->conf;
}

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
                                const json_t *context, const json_t *importance)
{
    static char buf[160];
    if (!json_is_string(content))
        return "content is required and must be a string";
    size_t len = json_string_length(content);
    const char *s = json_string_value(content);
    size_t blank = strspn(s, " \t\r\n");
    if (len == 0 || blank == len)
        return "content must not be empty";
    if (len > m->conf->memory.max_content) {
        snprintf(buf, sizeof(buf), "content is %zu bytes; the limit is %zu "
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

/* --------------------------------------------------------------- store */

typedef struct store_job {
    sophia_memory *m;
    char *content, *type, *context;
    char importance[32];
    float *vec;
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
    free(j->vec);
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
    if (!m->freeing)
        mem_cons_on_store(m);
    if (upgrade)
        mem_rebuild(m);
}

static void add_work(void *arg)
{
    store_job *j = arg;
    sophia_memory *m = j->m;
    idx_t id = j->id;
    pthread_rwlock_wrlock(&m->lock);
    j->ok = m->index && faiss_Index_add_with_ids(m->index, 1, j->vec, &id) == 0;
    /* auto: a Flat index that reached hnsw_threshold becomes HNSW */
    j->upgrade = j->ok && !m->hnsw &&
                 want_hnsw(m, (int64_t)faiss_Index_ntotal(m->index) - (int64_t)m->ntomb);
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
    j->ok = sophia_embed(j->m->emb, j->content, strlen(j->content), j->vec) == 0;
}

static void store_embedded(void *arg, int cancelled)
{
    store_job *j = arg;
    if (cancelled || !j->ok || j->m->freeing) {
        store_finish(j, SOPHIA_EUNAVAIL, "embedding failed or shutting down");
        return;
    }
    const char *vals[5] = {j->content, j->type, j->context, j->importance,
                           (const char *)j->vec};
    int lens[5] = {0, 0, 0, 0, j->m->dim * (int)sizeof(float)};
    int fmts[5] = {0, 0, 0, 0, 1};
    int rc = sophia_pg_query(j->m->pg, j->m->sql.insert, 5, vals, lens, fmts,
                             on_inserted, j);
    if (rc)
        store_finish(j, rc, "PostgreSQL queue full");
}

static void store_start(void *op)
{
    store_job *j = op;
    if (sophia_workers_submit(j->m->pool, embed_work, store_embedded, j) != 0)
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
    store_job *j = calloc(1, sizeof(*j));
    if (!j)
        return SOPHIA_ENOMEM;
    j->m = m;
    j->cb = cb;
    j->arg = arg;
    j->content = strdup(content);
    j->type = strdup(memory_type && *memory_type ? memory_type : "fact");
    j->context = context ? json_dumps(context, JSON_COMPACT) : strdup("{}");
    j->vec = malloc((size_t)m->dim * sizeof(float));
    snprintf(j->importance, sizeof(j->importance), "%.6g",
             importance < 0 ? MEM_DEFAULT_IMPORTANCE : importance > 1 ? 1.0 : importance);
    int rc = SOPHIA_ENOMEM;
    if (j->content && j->type && j->context && j->vec)
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

/* --------------------------------------------------------------- stats */

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

json_t *sophia_memory_stats_json(const sophia_memory *m)
{
    if (!m)
        return json_pack("{s:s}", "status", "disabled");
    double p50, p99;
    latency_quantiles(m, &p50, &p99);
    const char *st = m->state == MEM_READY ? "ready"
                     : m->state == MEM_LOADING ? "loading" : "failed";
    return json_pack("{s:s,s:I,s:O,s:s,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:b,s:o}",
                     "status", st, "count", (json_int_t)m->live, "by_type",
                     m->by_type, "index", m->hnsw ? "hnsw" : "flat",
                     "stores", (json_int_t)m->stores, "store_errors",
                     (json_int_t)m->store_errors, "searches",
                     (json_int_t)m->searches, "search_errors",
                     (json_int_t)m->search_errors, "feedback",
                     (json_int_t)m->feedbacks, "p50_us", p50, "p99_us", p99,
                     "consolidations", (json_int_t)m->consolidations, "merged",
                     (json_int_t)m->merged, "expired", (json_int_t)m->expired,
                     "rebuilds", (json_int_t)m->rebuilds, "tombstones",
                     (json_int_t)m->tombstones, "rebuilding", m->rebuild_running,
                     "access", mem_access_stats(m));
}

static uint64_t acc_stat(const sophia_memory *m, const char *name)
{
    json_t *a = mem_access_stats(m);
    uint64_t v = (uint64_t)json_integer_value(json_object_get(a, name));
    json_decref(a);
    return v;
}

void sophia_memory_prom(const sophia_memory *m, FILE *f)
{
    if (!m)
        return;
    double p50, p99;
    latency_quantiles(m, &p50, &p99);
    fputs("# HELP sophia_memory_count Live memories per type.\n"
          "# TYPE sophia_memory_count gauge\n", f);
    const char *k;
    json_t *v;
    json_object_foreach(m->by_type, k, v) {
        fputs("sophia_memory_count{type=\"", f);
        for (const char *p = k; *p; p++) {
            if (*p == '\\' || *p == '"')
                fputc('\\', f);
            fputc(*p == '\n' ? ' ' : *p, f);
        }
        fprintf(f, "\"} %lld\n", (long long)json_integer_value(v));
    }
    const struct {
        const char *name, *help;
        uint64_t v;
    } c[] = {
        {"sophia_memory_stores_total", "Memories stored.", m->stores},
        {"sophia_memory_searches_total", "Memory searches answered.", m->searches},
        {"sophia_memory_feedback_total", "Feedback calls.", m->feedbacks},
        {"sophia_memory_consolidations_total", "Consolidator runs.", m->consolidations},
        {"sophia_memory_merged_total", "Memories merged into another.", m->merged},
        {"sophia_memory_expired_total", "Memories expired by retention.", m->expired},
        {"sophia_memory_index_rebuilds_total", "Index builds (start and background).",
         m->rebuilds},
        {"sophia_memory_access_reads_total", "Cache reads naming a dashboard or user.",
         acc_stat(m, "reads")},
        {"sophia_memory_access_warmed_total",
         "Keys promoted into L1 by access-pattern warming.", acc_stat(m, "warmed")},
    };
    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
        fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", c[i].name,
                c[i].help, c[i].name, c[i].name, (unsigned long long)c[i].v);
    fprintf(f, "# HELP sophia_memory_search_seconds Search latency quantiles "
               "(last %d searches).\n# TYPE sophia_memory_search_seconds gauge\n"
               "sophia_memory_search_seconds{quantile=\"0.5\"} %.6f\n"
               "sophia_memory_search_seconds{quantile=\"0.99\"} %.6f\n",
            MEM_LAT_RING, p50 / 1e6, p99 / 1e6);
}
