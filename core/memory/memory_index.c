/*
 * memory_index - the faiss index: making it (flat or HNSW), removals and
 * their tombstones, saving it to memory.index_path a moment after it
 * changed, and the background rebuild that copies the live vectors into
 * a fresh index while searches go on. Workers read and write the index
 * under m->lock; the rebuild holds the read lock a chunk at a time and
 * takes the write lock only to swap (see rebuild_swap).
 */
#include "memory/memory_priv.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "memory/faiss_shim.h"
#include "lib/log.h"
#include "event/loop.h"

#define MEM_SAVE_DELAY_S 2
#define MEM_SAVE_SHARE 20 /* saving at most ~1/20 of the time */
#define MEM_REBUILD_CHUNK 1024 /* vectors copied per read-lock hold */

/* The store's own distance code (see faiss_shim.h) and HNSW breadths. */
void mem_index_tune(FaissIndex *ix)
{
    sophia_faiss_accelerate(ix, 1);
    sophia_faiss_hnsw_set(ix, SOPHIA_MEM_HNSW_EF_CONSTRUCTION,
                          SOPHIA_MEM_HNSW_EF_SEARCH);
}

FaissIndex *mem_index_new(int dim, int hnsw)
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
    mem_index_tune(ix);
    return ix;
}

/* A graph build is the one long faiss call with no other faiss work
 * waiting behind it on this thread, so it gets a team as large as the
 * pool (searches on the other workers share the cores with it meanwhile);
 * single stores and searches stay on one thread each. */
int mem_index_bulk_add(const sophia_memory *m, FaissIndex *ix, size_t n,
                       const float *vecs, const int64_t *ids)
{
    if (!n)
        return 0;
    return sophia_faiss_add_parallel(ix, (idx_t)n, vecs, (const idx_t *)ids,
                                     (int)m->conf->memory.workers);
}

int mem_want_hnsw(const sophia_memory *m, int64_t n)
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

/* Removes ids from a flat index: 0, or -1 when faiss could not. */
static int ids_remove(FaissIndex *ix, const int64_t *ids, size_t n)
{
    FaissIDSelectorBatch *sel = NULL;
    if (faiss_IDSelectorBatch_new(&sel, n, ids) != 0)
        return -1;
    int rc = faiss_Index_remove_ids(ix, (FaissIDSelector *)sel, NULL);
    faiss_IDSelector_free((FaissIDSelector *)sel);
    return rc == 0 ? 0 : -1;
}

/* Enough tombstones for memory.rebuild_removed_pct? Caller holds the lock. */
static int tombs_want_rebuild(const sophia_memory *m)
{
    size_t pct = m->conf->memory.rebuild_removed_pct;
    idx_t total = m->index ? faiss_Index_ntotal(m->index) : 0;
    size_t gone = m->ntomb + m->nsuper;
    return pct > 0 && gone > 0 && total > 0 &&
           (double)gone * 100.0 >= (double)pct * (double)total;
}

int mem_index_add(sophia_memory *m, FaissIndex *ix, int64_t id, const float *vec)
{
    return sophia_faiss_add_one(ix, m->adder, vec, id) == 0 ? 0 : -1;
}

int mem_index_replace(sophia_memory *m, FaissIndex *ix, int hnsw, int64_t id,
                      const float *vec)
{
    idx_t one = id;
    int rc = -1;
    int main_ix = ix == m->index;
    if (!hnsw && !(main_ix && m->rebuilding)) {
        ids_remove(ix, &one, 1);
        rc = mem_index_add(m, ix, id, vec);
    } else {
        /* IDMap2 maps the id to its newest entry; sophia_faiss_copy skips
         * the older one, so a rebuild leaves it out. */
        rc = mem_index_add(m, ix, id, vec);
        m->nsuper += rc == 0 && main_ix;
    }
    return rc;
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
        ids_remove(m->index, ids, n);
    }
    if (m->nix && n)
        mem_re_removed(m, ids, n);
    size_t nt = m->ntomb;
    *rebuild = tombs_want_rebuild(m);
    pthread_rwlock_unlock(&m->lock);
    return nt;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The file's live ids, sorted (superseded entries dropped and counted). */
static int64_t *file_ids(FaissIndex *ix, size_t *n, size_t *nsuper)
{
    idx_t total = faiss_Index_ntotal(ix);
    int64_t *ids = malloc((total ? (size_t)total : 1) * sizeof(*ids));
    if (!ids || sophia_faiss_copy(ix, 0, total, NULL, (idx_t *)ids) != 0) {
        free(ids);
        return NULL;
    }
    size_t o = 0;
    for (idx_t i = 0; i < total; i++)
        if (ids[i] >= 0)
            ids[o++] = ids[i];
    *n = o;
    *nsuper = (size_t)total - o;
    qsort(ids, o, sizeof(*ids), cmp_id);
    return ids;
}

/* Walks the file's ids against the table's: the ids the table no longer
 * has go to the front of `ids` (the tombstones), the live ids the file
 * has no vector for to c->missing. */
static void match_ids(int64_t *ids, size_t n, const int64_t *live,
                      size_t nlive, mem_file_check *c)
{
    size_t i = 0, j = 0;
    c->ntomb = c->nmissing = 0;
    while (i < n || j < nlive) {
        if (j < nlive && (i == n || live[j] < ids[i])) {
            c->missing[c->nmissing++] = live[j++];
        } else if (j < nlive && ids[i] == live[j]) {
            i++;
            j++;
        } else {
            ids[c->ntomb++] = ids[i++];
        }
    }
}

int mem_index_check(FaissIndex *ix, const int64_t *live, size_t nlive,
                    mem_file_check *c)
{
    size_t n = 0;
    memset(c, 0, sizeof(*c));
    c->tombs = file_ids(ix, &n, &c->nsuper);
    c->missing = malloc((nlive ? nlive : 1) * sizeof(*c->missing));
    if (!c->tombs || !c->missing) {
        mem_file_check_free(c);
        return -1;
    }
    c->nfile = n;
    match_ids(c->tombs, n, live, nlive, c);
    return 0;
}

void mem_file_check_free(mem_file_check *c)
{
    free(c->tombs);
    free(c->missing);
    c->tombs = c->missing = NULL;
}

static int is_missing(const mem_file_check *c, int64_t id)
{
    return bsearch(&id, c->missing, c->nmissing, sizeof(id), cmp_id) != NULL;
}

int mem_index_adopt(sophia_memory *m, FaissIndex *ix, int hnsw,
                    mem_file_check *c, size_t n, const float *vecs,
                    const int64_t *ids)
{
    /* Rows the file has an older vector for (updated since it was saved)
     * are added again: HNSW supersedes the old entry, flat drops it. */
    size_t again = 0;
    for (size_t i = 0; i < n; i++)
        again += !is_missing(c, ids[i]);
    if (!hnsw && n)
        ids_remove(ix, ids, n); /* ids it does not have are no-ops */
    if (n && mem_index_bulk_add(m, ix, n, vecs, ids) != 0)
        return -1;
    size_t ntomb = c->ntomb;
    if (!hnsw && ntomb && ids_remove(ix, c->tombs, ntomb) == 0)
        ntomb = 0; /* flat can delete */
    pthread_rwlock_wrlock(&m->lock);
    m->index = ix;
    m->hnsw = hnsw;
    free(m->tomb);
    m->tomb = c->tombs; /* sorted, as m->tomb must be */
    m->ntomb = ntomb;
    m->tomb_cap = c->nfile ? c->nfile : 1;
    m->nsuper = c->nsuper + (hnsw ? again : 0);
    c->rebuild = tombs_want_rebuild(m);
    pthread_rwlock_unlock(&m->lock);
    c->tombs = NULL;
    return 0;
}

/* Saves to a temporary file, then renames: a crash mid-write never leaves
 * a truncated index where the next start would read it. */
int mem_index_save(sophia_memory *m)
{
    char tmp[4200], id[SOPHIA_EMBED_ID_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp", m->index_path);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_rwlock_rdlock(&m->lock);
    int rc = m->index ? faiss_write_index_fname(m->index, tmp) : -1;
    snprintf(id, sizeof(id), "%s", m->index_id);
    pthread_rwlock_unlock(&m->lock);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_store(&m->save_us, (long long)(t1.tv_sec - t0.tv_sec) * 1000000 +
                                  (t1.tv_nsec - t0.tv_nsec) / 1000);
    if (rc == 0 && mem_index_tag_write(m, id) == 0 && rename(tmp, m->index_path) == 0)
        return 0;
    sophia_warn("memory", "msg=\"cannot save index\" path=%s error=\"%s\"",
                m->index_path, rc ? faiss_get_last_error() : strerror(errno));
    unlink(tmp);
    return -1;
}

/* <index_path>.embedder: the id of the embedder that made the file's
 * vectors (embed.h), written before the index itself is renamed into
 * place, so a file never carries another's tag for long: at worst the
 * tag is newer, and the start rebuilds from PostgreSQL. */
static void tag_path(const sophia_memory *m, char *buf, size_t n)
{
    snprintf(buf, n, "%s.embedder", m->index_path);
}

int mem_index_tag_write(sophia_memory *m, const char *id)
{
    char path[4200], tmp[4300];
    tag_path(m, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int bad = fprintf(f, "%s\n", id) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int mem_index_tag_read(const sophia_memory *m, char *id, size_t n)
{
    char path[4200];
    tag_path(m, path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(id, (int)n, f) != NULL;
    fclose(f);
    id[ok ? strcspn(id, "\n") : 0] = '\0';
    return ok ? 0 : -1;
}

static void save_work(void *arg)
{
    mem_index_save(arg);
}

static void save_done(void *arg, int cancelled)
{
    sophia_memory *m = arg;
    (void)cancelled;
    m->saving = 0;
    if (m->dirty && !m->freeing)
        mem_mark_dirty(m); /* changed while saving: once more, later */
}

void mem_on_save_timer(evutil_socket_t fd, short what, void *arg)
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

/* A change is saved MEM_SAVE_DELAY_S later, or MEM_SAVE_SHARE times the
 * last save's duration when that is longer. A save writes the whole index
 * under the read lock, which holds back every add: at 1M memories ~1.8 GB,
 * seconds each, and saving every 2 s while memories kept coming left the
 * store writing (and adds waiting) nearly all the time. This keeps saving
 * to about 1/MEM_SAVE_SHARE of the time at any size; a crash loses no
 * more than before, as the start adds from PostgreSQL the rows the file
 * has no vector for. */
void mem_mark_dirty(sophia_memory *m)
{
    m->dirty = 1;
    if (!m->saving && !evtimer_pending(m->save_ev, NULL)) {
        long long us = atomic_load(&m->save_us) * MEM_SAVE_SHARE;
        if (us < MEM_SAVE_DELAY_S * 1000000LL)
            us = MEM_SAVE_DELAY_S * 1000000LL;
        struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
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
        if (j->ids[i] < 0 || in_sorted(j->t0, j->nt0, j->ids[i]))
            continue; /* superseded (see mem_index_replace) or removed */
        if (keep != i) {
            j->ids[keep] = j->ids[i];
            memmove(j->vecs + (size_t)keep * dim, j->vecs + (size_t)i * dim,
                    (size_t)dim * sizeof(float));
        }
        keep++;
    }
    j->copied += n;
    j->rows += (size_t)keep;
    return mem_index_bulk_add(j->m, j->ix, (size_t)keep, j->vecs, j->ids);
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
    m->nsuper = 0;
    j->removed = j->nt0;
    if (!j->hnsw && o && ids_remove(j->ix, m->tomb, o) == 0)
        m->ntomb = 0;
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
    if (!j->t0 || !j->vecs || !j->ids || !(j->ix = mem_index_new(m->dim, j->hnsw))) {
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
    /* A forget during the run tombstoned what this run had copied: once
     * more, so those vectors leave the graph too. */
    int again = !cancelled && j->ok && (j->again || (m->purge_wanted && m->tombstones));
    m->purge_wanted = 0;
    free(j->t0);
    free(j->vecs);
    free(j->ids);
    free(j);
    if (again)
        mem_rebuild(m); /* enough was removed while it ran */
    else if (!m->freeing)
        mem_re_kick(m); /* a re-embed waits for rebuilds */
}

void mem_rebuild(sophia_memory *m)
{
    /* A re-embed builds a whole new index anyway (and swaps the dim). */
    if (m->rebuild_running || m->freeing || m->state != MEM_READY ||
        mem_re_running(m))
        return;
    rebuild_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->m = m;
    /* auto: the kind the live count asks for; flat/hnsw: as configured */
    j->hnsw = mem_want_hnsw(m, m->live);
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

