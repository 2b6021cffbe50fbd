/*
 * memory_priv - the memory store's internals, shared by memory.c (SQL,
 * start-up, readiness), memory_index.c (the faiss index, tombstones,
 * saving, rebuild), memory_store.c (store, feedback), memory_search.c
 * (retrieval), memory_crud.c (one memory, lists, scope deletion),
 * memory_consolidate.c (consolidator plugins),
 * memory_access.c (access patterns) and memory_stats.c (figures). Not
 * for other modules.
 */
#ifndef SOPHIA_MEMORY_PRIV_H
#define SOPHIA_MEMORY_PRIV_H

#include <pthread.h>
#include <stdatomic.h>

#include <event2/event.h>
#include <faiss/c_api/Index_c.h>

#include "memory/memory.h"
#include "memory/faiss_shim.h"
#include "event/pg.h"
#include "event/worker.h"

#define MEM_LAT_RING 1024

typedef enum mem_state { MEM_LOADING = 0, MEM_READY, MEM_FAILED } mem_state;

/* An operation that waits for the index to be loaded. */
typedef struct mem_deferred {
    void (*start)(void *op);
    void (*fail)(void *op, int err, const char *msg);
    void *op;
    struct mem_deferred *next;
} mem_deferred;

typedef struct mem_consolidator {
    struct sophia_memory *m;
    sophia_instance *inst;
    const sophia_conf_consolidate *cc;
    struct event *timer;
    size_t new_since; /* memories stored since the last run started */
    int running;
    /* The cursor (memory_consolidate.c; <table>_cons in PostgreSQL): a run
     * looks at the next batch of live memories with ids after after_id;
     * after the last one it wraps to 0, and a pass is complete. */
    int loaded; /* read from PostgreSQL (before the first run) */
    int64_t after_id;
    uint64_t passes;
    double pass_started; /* wall clock, s; 0 = no pass under way */
    double last_pass_s;  /* the last complete pass took; 0 = none yet */
} mem_consolidator;

typedef struct mem_access mem_access; /* memory_access.c */
typedef struct mem_reembed mem_reembed; /* memory_reembed.c */
typedef struct mem_syn mem_syn;       /* memory_synonyms.c */

typedef struct mem_sql {
    char *insert, *fts, *fts_fuzzy, *rows, *rows_next, *touch, *feedback, *count, *types, *all, *ids, *catchup;
    char *batch, *batch_novec, *merge_keep, *expire, *common;
    /* memory_consolidate.c: neighbours' rows, the cursor, a decay */
    char *nbrows, *cons_load, *cons_save, *set_importance;
    /* memory_crud.c */
    char *get, *list, *patch, *del_scope, *history;
} mem_sql;

/* A lexeme of the tsv that is not an English stop word: the tsv keeps
 * stop words (memory.c, MEM_TS_INDEX) for phrases, the typo vocabulary
 * (<table>_words) does not, so no unknown word is "corrected" into one. */
#define MEM_NOT_STOP(x) "ts_lexize('english_stem', " x ") <> '{}'"

/* A memory as rows/get/list select it: MEM_COLS_HEAD (columns 0..8), the
 * embedding or NULL (9), MEM_COLS_SCOPE (10..12); mem_row_json reads it. */
#define MEM_COLS_HEAD                                                         \
    "id, content, memory_type, context::text, importance::float8, "          \
    "extract(epoch FROM created_at)::float8, extract(epoch FROM "            \
    "last_access)::float8, access_count, feedback"
#define MEM_COLS_SCOPE "user_id, agent_id, session_id"

/* The context filter: $N is a jsonb object KEY -> a scalar (the context
 * value's text must equal its text) or an object of operators: "in" (an
 * array of strings: the value's text is one of them) and "gt", "gte",
 * "lt", "lte" (a number: the value must be a JSON number; or an ISO 8601
 * date string: the value must be a string starting YYYY-MM-DD, compared
 * as text, so one format and time zone). A row passes when every key
 * does; a missing key fails. sophia_memory_check_filter says what is
 * valid. */
#define MEM_CTX_RANGE(op, cmp)                                                \
    "(NOT f.value ? '" op "' OR CASE WHEN jsonb_typeof(f.value->'" op "') = " \
    "'number' THEN jsonb_typeof(context->f.key) = 'number' AND "             \
    "(context->f.key)::numeric " cmp " (f.value->>'" op "')::numeric ELSE "  \
    "jsonb_typeof(context->f.key) = 'string' AND (context->>f.key) ~ "       \
    "'^[0-9]{4}-[0-9]{2}-[0-9]{2}' AND (context->>f.key) " cmp " "           \
    "(f.value->>'" op "') END)"
#define MEM_CTX_FILTER(n)                                                     \
    "NOT EXISTS (SELECT 1 FROM jsonb_each($" #n "::jsonb) f WHERE NOT "      \
    "COALESCE(CASE WHEN jsonb_typeof(f.value) <> 'object' THEN "             \
    "(context->>f.key) = (f.value #>> '{}') ELSE (context ? f.key) AND "     \
    "(NOT f.value ? 'in' OR (context->>f.key) IN (SELECT "                   \
    "jsonb_array_elements_text(f.value->'in'))) AND "                        \
    MEM_CTX_RANGE("gt", ">") " AND " MEM_CTX_RANGE("gte", ">=") " AND "      \
    MEM_CTX_RANGE("lt", "<") " AND " MEM_CTX_RANGE("lte", "<=") " END, "     \
    "false))"

struct sophia_memory {
    const sophia_conf *conf;
    struct event_base *base;
    sophia_pg *pg;
    sophia_pg *pg_maint; /* slow maintenance queries (common words) */
    sophia_workers *pool;
    char *index_path;
    mem_sql sql;

    /* The index: workers read and write it under `lock`. */
    pthread_rwlock_t lock;
    /* The embedder that made the index's vectors (and the `embedding`
     * column's), which searches embed questions with: changed only under
     * the write lock, so a worker holding the lock may use it. NULL while
     * no loaded embedder made them (a restart with another embedder whose
     * old one is gone): the vector leg is off until the re-embed is done.
     * `dim` is the index's: atomic, as the loop reads it without the
     * lock (a consolidation batch decodes its vectors at it) while a
     * swap may change it. `gen` counts swaps (memory_reembed.c). */
    sophia_embedder *emb;
    _Atomic int dim;
    unsigned gen;
    /* A re-embed's target: the next embedder and its index, filled by the
     * pass while `index` serves; NULL when none runs. */
    sophia_embedder *next;
    FaissIndex *nix;
    int nix_hnsw;
    char index_id[SOPHIA_EMBED_ID_MAX]; /* the saved index file's tag */
    FaissIndex *index;
    int hnsw;
    sophia_faiss_adder *adder; /* one add's scratch (faiss_shim.h), any index */
    int64_t *tomb; /* sorted removed ids (HNSW, or any index while rebuilding) */
    size_t ntomb, tomb_cap;
    size_t nsuper; /* entries superseded by a patch (mem_index_replace) */
    int rebuilding; /* a rebuild is copying: removals tombstone, storage only grows */
    atomic_int stop; /* shutting down: a running rebuild gives up */

    /* Loop thread only from here on. */
    mem_state state;
    char fail_msg[256];
    mem_deferred *deferred, *deferred_tail;
    size_t ndeferred;
    int saving, dirty;
    atomic_llong save_us; /* the last save's duration (worker writes) */
    struct event *save_ev;
    struct event *common_ev; /* refreshes <table>_stats (common words) */
    int common_busy;         /* a refresh is queued or running */
    int freeing;
    int fuzzy; /* pg_trgm is there: the text leg uses sql.fts_fuzzy */

    int rebuild_running; /* loop's view: one rebuild at a time */
    int purge_wanted;    /* a forget asked for a rebuild while one ran */
    size_t tombstones;   /* loop's copy of ntomb, for stats */

    mem_consolidator *cons;
    size_t ncons;
    sophia_memory_cons_runner cons_run; /* NULL: runs fail (no host) */
    void *cons_run_arg;
    mem_access *acc;
    mem_syn *syn; /* query expansion; NULL = none */
    mem_reembed *re; /* the embedder's life: identity, fits, re-embeds */
    /* Searches read COALESCE(embedding_next, embedding): set from a swap
     * until the move of the new vectors into `embedding` commits. */
    int col_next;
    sophia_cache *cache; /* what access patterns warm; may be NULL */

    json_t *by_type; /* memory_type -> live count */
    int64_t live;
    uint64_t stores, store_errors, searches, search_errors, feedbacks;
    uint64_t consolidations, merged, expired, rebuilds;
    double lat_us[MEM_LAT_RING];
    size_t nlat, lat_pos;
};

/* memory.c */
int mem_when_ready(sophia_memory *m, void (*start)(void *),
                   void (*fail)(void *, int, const char *), void *op);
void mem_mark_dirty(sophia_memory *m);
void mem_count_type(sophia_memory *m, const char *type, int delta);
/* Removes ids from the index (or tombstones them); worker thread.
 * Returns the tombstone count after; *rebuild = 1 when they are enough
 * for memory.rebuild_removed_pct (hand it to mem_rebuild on the loop). */
size_t mem_index_remove(sophia_memory *m, const int64_t *ids, size_t n,
                        int *rebuild);
/* A text's vectors: for the serving index (e, v) and, while a re-embed
 * fills the next one, for that (en, vn). Either embedder may be NULL
 * (then its vector is too). The loop takes them (mem_vecs_begin, holds
 * both embedders), a worker embeds, the loop ends them. */
typedef struct mem_vecs {
    sophia_embedder *e, *en;
    float *v, *vn;
} mem_vecs;
int mem_vecs_begin(sophia_memory *m, mem_vecs *p); /* 0 or -1 (memory) */
int mem_vecs_embed(mem_vecs *p, const char *text); /* worker; 0 or -1 */
void mem_vecs_end(sophia_memory *m, mem_vecs *p);
/* Loop, when writing the row: what goes into `embedding` (of the
 * embedder serving now; empty bytea, length 0, when none of p's) and
 * into `embedding_next` (of a re-embed's target, NULL when none). */
void mem_vecs_columns(const sophia_memory *m, const mem_vecs *p,
                      const float **emb, int *emb_len, const float **next,
                      int *next_len);
/* Worker, under the write lock: puts `id` into the index (and the next
 * one) with the vector its embedder made, added, or replacing the old one
 * when `replace`. 0, or -1 on a faiss error. An embedder swapped in since
 * the vectors were made (twice over) leaves the id out of the vector leg
 * until the next re-embed or rebuild from PostgreSQL. */
int mem_vecs_index(sophia_memory *m, int64_t id, const mem_vecs *p,
                   int replace);
/* Gives `id` a new vector in `ix` (caller holds the write lock; 0 or
 * -1). Flat: replaced in place. HNSW, or while a rebuild copies: added
 * again under the same id, the old entry superseded (left out by the next
 * rebuild; counted with the tombstones toward
 * memory.rebuild_removed_pct). */
int mem_index_replace(sophia_memory *m, FaissIndex *ix, int hnsw, int64_t id,
                      const float *vec);
/* Adds `id`'s vector to `ix` (the index or a re-embed's); caller holds
 * the write lock. 0, or -1 on a faiss error. */
int mem_index_add(sophia_memory *m, FaissIndex *ix, int64_t id, const float *vec);
/* memory_index.c: a new empty index (flat or HNSW, tuned); whether `n`
 * live memories want HNSW; writing the index file (worker, under the
 * read lock; 0 or -1); the save timer's callback (m->save_ev). */
FaissIndex *mem_index_new(int dim, int hnsw);
void mem_index_tune(FaissIndex *ix);
/* Adds n vectors in one go on memory.workers OpenMP threads (the index at
 * start, a rebuild's chunks; worker thread). 0, or a faiss error code. */
int mem_index_bulk_add(const sophia_memory *m, FaissIndex *ix, size_t n,
                       const float *vecs, const int64_t *ids);
int mem_want_hnsw(const sophia_memory *m, int64_t n);
int mem_index_save(sophia_memory *m);
/* The index file's embedder tag (<index_path>.embedder): 0 or -1. */
int mem_index_tag_write(sophia_memory *m, const char *id);
int mem_index_tag_read(const sophia_memory *m, char *id, size_t n);
void mem_on_save_timer(evutil_socket_t fd, short what, void *arg);
/* A saved index against the table's live ids (sorted), at start: the
 * file's ids the table no longer has (HNSW cannot delete, so a file saved
 * after removals keeps them) become tombstones again, and the live ids it
 * has no vector for (stored after its last save: a crash) are added from
 * PostgreSQL, so the file is reused instead of the graph built again.
 * mem_index_check (worker) sorts the ids out; the caller reads the
 * missing rows' vectors (and those updated since the save) and
 * mem_index_adopt (worker) adds them and installs the index, taking
 * c->tombs (c->rebuild: hand it to mem_rebuild once ready). 0, or -1 (out of memory, a faiss error; the caller frees ix). */
typedef struct mem_file_check {
    int64_t *tombs, *missing;
    size_t ntomb, nmissing, nsuper, nfile;
    int rebuild; /* enough tombstones for memory.rebuild_removed_pct */
} mem_file_check;
int mem_index_check(FaissIndex *ix, const int64_t *live, size_t nlive,
                    mem_file_check *c);
int mem_index_adopt(sophia_memory *m, FaissIndex *ix, int hnsw,
                    mem_file_check *c, size_t n, const float *vecs,
                    const int64_t *ids);
void mem_file_check_free(mem_file_check *c);
/* Starts a background rebuild of the index unless one runs; loop thread. */
void mem_rebuild(sophia_memory *m);
/* Is `id` a tombstone? Caller holds the lock. */
int mem_is_tomb(const sophia_memory *m, int64_t id);
/* Decodes PostgreSQL's text form of bytea ("\x0a1b...") into dim floats. */
int mem_decode_vec(const char *hex, float *out, int dim);
/* "{1,2,3}" for an id list, malloc'd. */
char *mem_id_array(const int64_t *ids, size_t n);

/* memory_crud.c: its SQL (in build_sql; -1 when out of memory), and one
 * selected row as the API's memory object (no scores). */
int mem_crud_sql(mem_sql *q, const char *table);
void mem_crud_sql_free(mem_sql *q);
json_t *mem_row_json(PGresult *res, int i);

/* memory_access.c: access patterns -> cache warming */
int mem_access_init(sophia_memory *m);
void mem_access_free(sophia_memory *m); /* before pg is freed */
/* Its figures (memory_stats.c declares them); -1, all zero, when access
 * patterns are off. */
typedef struct mem_access_stats {
    uint64_t reads, remembered;
    size_t pending;
    uint64_t dropped, warmed, warm_runs;
} mem_access_stats;
int mem_access_get_stats(const sophia_memory *m, mem_access_stats *out);
/* Drops what the access table holds of a user (NULL: no one) and of the
 * given memory ids (deleted), so nothing of them is written back. */
void mem_access_forget(sophia_memory *m, const char *user, const int64_t *ids,
                       size_t n);

/* memory_synonyms.c: the synonym file (NULL + err on a bad file), how
 * many groups it has, and a query's concepts: for every group the query
 * names, one line per member, "<group number>\t<tsquery phrase>", e.g.
 * "3\tprice <-> cut" (malloc'd, "" for none; NULL s is fine), and in
 * *rest the query with the members it named blanked out. NULL (and *rest
 * NULL) only when out of memory. */
mem_syn *mem_syn_load(const char *path, char *err, size_t errlen);
void mem_syn_free(mem_syn *s);
size_t mem_syn_groups(const mem_syn *s);
char *mem_syn_expand(const mem_syn *s, const char *query, char **rest);

/* memory_reembed.c: the embedder's life (see there). */
int mem_re_init(sophia_memory *m, const sophia_plugin_set *plugins);
void mem_re_free(sophia_memory *m); /* after the pool is stopped */
/* Boot: after the count, decides which embedder serves and whether the
 * saved index is its; then calls cont(b) on the loop. */
void mem_re_boot(sophia_memory *m, void (*cont)(void *), void *b);
/* The id the saved index file must carry to be loaded as is. */
const char *mem_re_index_id(const sophia_memory *m);
/* Ids leaving the index while a re-embed fills m->nix leave it too
 * (worker, under the write lock). */
void mem_re_removed(sophia_memory *m, const int64_t *ids, size_t n);
int mem_re_running(const sophia_memory *m);
/* Embedder swaps the loop has seen (memory_search.c's rows check). */
unsigned mem_re_gen(const sophia_memory *m);
/* Starts what is due (a re-embed, a fit) when nothing else runs. */
void mem_re_kick(sophia_memory *m);
json_t *mem_re_stats(const sophia_memory *m);

/* memory_consolidate.c */
int mem_cons_init(sophia_memory *m, const sophia_plugin_set *plugins);
void mem_cons_free(sophia_memory *m);
void mem_cons_on_store(sophia_memory *m);

#endif
