/*
 * memory - the contextual memory store (SPEC §8): rows in PostgreSQL,
 * vectors in a faiss index, hybrid retrieval, feedback and consolidation.
 *
 * Where things live. A memory is one row of `memory.table` (default
 * sophia_memory): content, memory_type, context jsonb, importance,
 * created_at, last_access, access_count, feedback, consolidated_into,
 * the scope user_id / agent_id / session_id (indexed text, NULL = unset;
 * added to older tables at start and filled from their context) and
 * its embedding (float32 bytea), plus a generated tsvector with a GIN index
 * for full-text search (a store also adds its new words to <table>_words,
 * the typo vocabulary). Its vector is also in a faiss IDMap2 index over
 * inner product ("IDMap2,Flat", or "IDMap2,HNSW32,Flat" at and above
 * memory.hnsw_threshold rows with memory.index: auto) whose ids are the
 * PostgreSQL ids; its vectors sit in the shim's Flat storage with AVX2
 * distance code (core/memory/faiss_shim.h). HNSW uses M = 32, efConstruction 160,
 * efSearch 128 (recall@10 vs exact in bench_memory). The index is saved
 * to memory.index_path (after changes, at most every few seconds, and at
 * shutdown) and reloaded at start; when the file is missing, unreadable
 * or stale (its size differs from the table's live row count, its kind
 * is not what memory.index asks for at that size, or its vectors are
 * another embedder's) it is rebuilt from the stored embeddings. HNSW cannot delete: removed ids become tombstones
 * filtered out of results. When they reach memory.rebuild_removed_pct of
 * the index, or with `auto` when a Flat index reaches the threshold, a
 * worker builds a new index from the live vectors while searches and
 * stores go on against the old one, and swaps it in (memory.c, "background
 * rebuild").
 *
 * Embedders. Vectors come from the embedder memory.embedder names (an
 * SDK 1.2 plugin instance) or the built-in feature hashing (embed.h).
 * Stored vectors and the index file carry the embedder's id; another id
 * (a reload or restart with another embedder, a newly fitted model) is
 * re-embedded in the background into a second index while the first one
 * serves, then swapped in (memory_reembed.c).
 *
 * Threads. The loop thread owns everything but the index, which worker
 * threads (core/event/worker.c) search and change under a rwlock: embedding a
 * text, faiss search, adds, saves and rebuilds all run on the pool, and
 * their results come back on the loop. PostgreSQL is reached through
 * core/event/pg.c, non-blocking on the loop. So the loop never waits on a search.
 *
 * Until the index is loaded, stores and searches wait in a bounded list and
 * start once it is ready (503 beyond the bound).
 *
 * Retrieval (sophia_memory_search) is hybrid. The question's synonym
 * groups are found first with the list share/memory_synonyms.txt (data,
 * read at start; memory_synonyms.c). Candidates: the k*4 nearest vectors
 * (k*20 when a context filter is given, since the filter is applied after
 * faiss) and the k*4 best full-text matches. The text leg (memory.c)
 * takes the question's words through the sophia_english text search
 * configuration (english stemming, accents folded by the unaccent
 * extension when installed, "%" read as "percent", a hyphen before a
 * digit as a space: "INC-9584" has the word 9584), drops words found in
 * >= 2% of the rows (and >= 1,000 of them; the list is refreshed from
 * ts_stat every 10 minutes, so queries of very common words stay cheap;
 * the vector leg covers those), replaces a word the store has never seen
 * by a known word one slip away (a letter dropped, doubled, changed or
 * two swapped, among its 10 nearest by pg_trgm over <table>_words, when
 * installed; its stem or the word as typed: weight 0.9), else by its
 * nearest at trigram similarity >=
 * 0.25 (weight min(1, 1.75 x similarity)), and scores each row by the sum
 * of its matching words' idf (BM25's, counted through the GIN index). A
 * synonym group the question names is one more term: any member matches
 * (a phrase as a phrase, stop words included: the stored tsvector keeps
 * them, sophia_english_all), it counts once with the idf of all the rows it
 * matches, and the member's words leave the word list. Context
 * filters (text equality, `in`, ranges on numbers and ISO dates:
 * sophia_memory_check_filter) and the scope drop candidates before
 * ranking. Ranks are over the surviving candidates, equal scores sharing
 * a rank; the vector rank orders every candidate by its cosine with the
 * question. They are fused with weighted reciprocal rank fusion, k and
 * weights tuned on the tuning split of tests/bench/memory_eval:
 *   rrf = 1 / (3 + vector rank) + 10 / (3 + text rank)   (rank from 1)
 * The final score, in 0..1, is the documented blend
 *   score = 0.70 * rrf / (11/4)                  relevance, 1 = first in both
 *         + 0.10 * 0.5 ^ (age / memory.half_life) recency (age since created)
 *         + 0.15 * importance                    0..1, moved by feedback
 *         + 0.05 * min(1, ln(1 + access_count) / ln(101))   frequency
 * and each result carries score_parts {rrf, vector (cosine), text (idf
 * sum), recency, importance, frequency}. Returned memories get
 * last_access = now() and access_count + 1. sophia_memory_search_legs
 * runs one leg alone (the evaluation's baseline; no access counted).
 *
 * Every change leaves an event in <table>_history, in the statement that
 * makes it (created, updated, feedback, merged, deleted, decayed).
 *
 * One memory and scopes (memory_crud.c): get, a keyset-paged list, patch
 * (a new content is embedded again; on HNSW the new vector is added under
 * the same id and the old entry superseded until a rebuild), delete, and
 * forgetting a scope (rows, index entries with a purge rebuild, the
 * access patterns held in memory).
 *
 * Feedback: useful moves importance a fifth of the way to 1, not useful a
 * fifth of the way to 0 (so it stays in 0..1), and counts in `feedback`.
 *
 * Loop-thread API; callbacks always run later, on the loop.
 */
#ifndef SOPHIA_MEMORY_H
#define SOPHIA_MEMORY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache/cache.h"
#include "conf/config.h"
#include "memory/embed.h"
#include "plugin/plugin.h"
#include <sophia/sdk.h>

struct event_base;
typedef struct sophia_memory sophia_memory;

/* Score weights (see above); exported for tests and the README. */
#define SOPHIA_MEM_W_RRF 0.70
#define SOPHIA_MEM_W_RECENCY 0.10
#define SOPHIA_MEM_W_IMPORTANCE 0.15
#define SOPHIA_MEM_W_FREQUENCY 0.05
/* Reciprocal rank fusion: k and each list's weight, tuned on the tuning
 * split of tests/bench/memory_eval (--tune). A small k keeps first and
 * second apart (k = 60 made them 1.6% apart, less than the frequency
 * part, so popular memories outranked the relevant one). */
#define SOPHIA_MEM_RRF_K 3
#define SOPHIA_MEM_RRF_W_VECTOR 1.0
#define SOPHIA_MEM_RRF_W_TEXT 10.0
#define SOPHIA_MEM_MAX_K 100
#define SOPHIA_MEM_MAX_TYPE 64
/* HNSW graph degree and breadths: at 100k, efConstruction 160 + efSearch
 * 128 gave recall@10 0.958 (efConstruction 80: 0.929); see bench_memory. */
#define SOPHIA_MEM_HNSW_M 32
#define SOPHIA_MEM_HNSW_EF_CONSTRUCTION 160
#define SOPHIA_MEM_HNSW_EF_SEARCH 128

/* NULL when PostgreSQL is disabled (no memory store) or on failure. The
 * plugin set is where memory.consolidate finds its instances (may be
 * NULL). The cache is what access patterns warm (may be NULL: no
 * warming); it must outlive the store. */
sophia_memory *sophia_memory_new(const sophia_conf *c, struct event_base *base,
                                 const sophia_plugin_set *plugins,
                                 sophia_cache *cache);
/* Saves the index (blocking; shutdown only) and releases everything;
 * pending callbacks get err = SOPHIA_EUNAVAIL. */
void sophia_memory_free(sophia_memory *m);

/* 1 once the index is loaded and PostgreSQL is up. */
int sophia_memory_ready(const sophia_memory *m);
const sophia_conf *sophia_memory_conf(const sophia_memory *m);

/* Who a memory belongs to (mem0's user_id / agent_id / session_id):
 * indexed columns of the table, returned with every memory and enforced
 * as filters by search, list and scope deletion. NULL = not set (store) or
 * any (filters). Values are 1..SOPHIA_MEM_MAX_SCOPE bytes. */
#define SOPHIA_MEM_MAX_SCOPE 128
typedef struct sophia_memory_scope {
    const char *user_id, *agent_id, *session_id;
} sophia_memory_scope;
/* NULL when fine, else a 400 message naming the field (e.g. "user_id
 * must be a string of 1..128 bytes"); each may be NULL or JSON null. */
const char *sophia_memory_check_scope(const json_t *user_id,
                                      const json_t *agent_id,
                                      const json_t *session_id);

/* err: 0 or a negative sophia_errno; msg says why. */
typedef void (*sophia_memory_store_cb)(void *arg, int64_t id, int err,
                                       const char *msg);
/* `context` is borrowed (an object of scalars; NULL = {}); importance < 0
 * means the default 0.5. Input must be valid (sophia_memory_check). */
int sophia_memory_store(sophia_memory *m, const char *content,
                        const char *memory_type, const json_t *context,
                        double importance, sophia_memory_store_cb cb,
                        void *arg);
/* The same with a scope (may be NULL; copied). A field left NULL is taken
 * from the context's string value of the same key, if any, so plugins
 * that store {"user_id": ...} in the context get the column too. */
int sophia_memory_store_scoped(sophia_memory *m, const char *content,
                               const char *memory_type, const json_t *context,
                               double importance,
                               const sophia_memory_scope *scope,
                               sophia_memory_store_cb cb, void *arg);

/* A context filter (search, list): an object KEY -> a scalar (equality
 * of the context value's text) or an operator object {"in": [..] (1..
 * SOPHIA_MEM_MAX_IN values), "gt"/"gte"/"lt"/"lte": a number or an ISO
 * 8601 date string}; every key must hold. NULL when fine, else a 400
 * message naming the key (static text, or written into buf). Search and
 * list answer SOPHIA_EINVAL for a bad one. */
#define SOPHIA_MEM_MAX_IN 100
const char *sophia_memory_check_filter(const json_t *filter, char *buf,
                                       size_t buflen);

/* results: a borrowed array of result objects, best first (NULL on error). */
typedef void (*sophia_memory_search_cb)(void *arg, const json_t *results,
                                        int err, const char *msg);
/* filter: borrowed context filter (NULL = none); k in 1..MAX_K. */
int sophia_memory_search(sophia_memory *m, const char *query, size_t k,
                         const json_t *filter, sophia_memory_search_cb cb,
                         void *arg);

/* The same search with only some of its lists (an OR of these bits): one
 * leg alone is how tests/bench/memory_eval compares fusion with each leg.
 * The score is computed the same way, from the lists searched. */
#define SOPHIA_MEM_LEG_VECTOR 1
#define SOPHIA_MEM_LEG_TEXT 2
#define SOPHIA_MEM_LEGS_ALL 3
int sophia_memory_search_legs(sophia_memory *m, const char *query, size_t k,
                              const json_t *filter, int legs,
                              sophia_memory_search_cb cb, void *arg);
/* Only memories of that scope (NULL or NULL fields = any) are candidates;
 * the vector leg then looks k*20 deep, as with a context filter. */
int sophia_memory_search_scoped(sophia_memory *m, const char *query, size_t k,
                                const json_t *filter,
                                const sophia_memory_scope *scope, int legs,
                                sophia_memory_search_cb cb, void *arg);

/* ---- one memory, lists, scopes (memory_crud.c) ----
 * memory: a borrowed object {id, content, memory_type, context,
 * importance, access_count, created_at, last_access, feedback, user_id,
 * agent_id, session_id}; NULL with err 0 = no live memory with that id. */
typedef void (*sophia_memory_get_cb)(void *arg, const json_t *memory, int err,
                                     const char *msg);
int sophia_memory_get(sophia_memory *m, int64_t id, sophia_memory_get_cb cb,
                      void *arg);

/* A page of live memories, newest first. `before` is the previous page's
 * `next` (0 = from the newest); next = 0 on the last page. */
#define SOPHIA_MEM_MAX_LIST 1000
typedef struct sophia_memory_list_q {
    sophia_memory_scope scope;
    const char *memory_type; /* NULL = any */
    const json_t *filter;    /* a context filter, as search's; NULL = none */
    int64_t before;
    size_t limit; /* 1..SOPHIA_MEM_MAX_LIST */
} sophia_memory_list_q;
typedef void (*sophia_memory_list_cb)(void *arg, const json_t *memories,
                                      int64_t next, int err, const char *msg);
int sophia_memory_list(sophia_memory *m, const sophia_memory_list_q *q,
                       sophia_memory_list_cb cb, void *arg);

/* A patch: NULL / importance < 0 = unchanged. A new content is embedded
 * again and replaces the memory's vector in the index. Input must be
 * valid (sophia_memory_check). cb gets the memory as it is now. */
typedef struct sophia_memory_change {
    const char *content, *memory_type;
    const json_t *context; /* replaces the whole context */
    double importance;
} sophia_memory_change;
int sophia_memory_patch(sophia_memory *m, int64_t id,
                        const sophia_memory_change *c, sophia_memory_get_cb cb,
                        void *arg);

/* deleted: rows removed (0 = no such memory / nothing in the scope). */
typedef void (*sophia_memory_delete_cb)(void *arg, size_t deleted, int err,
                                        const char *msg);
/* Removes the row (merged or not) and its index entry. */
int sophia_memory_delete(sophia_memory *m, int64_t id,
                         sophia_memory_delete_cb cb, void *arg);
/* Forgets a scope (at least one field set, else SOPHIA_EINVAL): every row
 * that matches all the fields set, their index entries (and a rebuild, so
 * an HNSW graph and the index file drop the vectors too), and the access
 * patterns of that user_id held in memory. */
int sophia_memory_forget(sophia_memory *m, const sophia_memory_scope *scope,
                         sophia_memory_delete_cb cb, void *arg);

/* The stored changes of a memory, oldest first (memory: an array of
 * {event, at, detail}; NULL with err 0 when it has none: unknown id, or
 * its scope was forgotten). Events: created {content, memory_type,
 * context, importance}; updated {the new values, old_*}; feedback
 * {useful, importance}; merged {into: id} on the dropped one, {absorbed:
 * id} on the kept one; deleted {by: api|consolidator}. */
int sophia_memory_history(sophia_memory *m, int64_t id, sophia_memory_get_cb cb,
                          void *arg);

/* found: 1 when the memory exists; importance: its new value. */
typedef void (*sophia_memory_feedback_cb)(void *arg, int found,
                                          double importance, int err,
                                          const char *msg);
int sophia_memory_feedback(sophia_memory *m, int64_t id, int useful,
                           sophia_memory_feedback_cb cb, void *arg);

/* Validates a memory as a client sent it; NULL when fine, else a message
 * for a 400 (static text, or written into buf). */
const char *sophia_memory_check(const sophia_memory *m, const json_t *content,
                                const json_t *memory_type,
                                const json_t *context,
                                const json_t *importance,
                                char *buf, size_t buflen);

/* A cache read by a dashboard and/or user, as the caller vouches (POST
 * /api/cache/access, an authenticated WS cache.get; never an HTTP GET).
 * Either may be NULL; both NULL = not counted: counted toward an `access_pattern` memory, whose keys
 * are warmed into L1 at start and when that dashboard or user first
 * reads (memory_access.c). NULL m is fine. */
void sophia_memory_note_access(sophia_memory *m, const char *key,
                               const char *dashboard, const char *user);

/* Calls a consolidator's run(state, ctx) on `batch` (borrowed) in the
 * host's action context: returns run()'s rc; *ops gets the merges and
 * expiries it queued (new reference); its other actions are applied only
 * when rc == 0. SOPHIA_ENOMEM with *ops NULL: the plugin was not called. The host provides it (host/consolidate_run.h):
 * memory knows how to pick and apply, not how plugins are called. */
typedef int (*sophia_memory_cons_runner)(void *arg, sophia_instance *in,
                                         json_t *batch, json_t **ops);
/* Registered by the daemon's wiring right after sophia_memory_new; until
 * then (tests without plugins) a run ends with an error. NULL m is fine. */
void sophia_memory_set_cons_runner(sophia_memory *m,
                                   sophia_memory_cons_runner fn, void *arg);
/* Runs a consolidator instance now (tests, `after_new`, timers). */
int sophia_memory_consolidate(sophia_memory *m, const char *instance);
/* Reload: points each consolidator at its instance in `plugins` (by the
 * name memory.consolidate gives; none there disables it). NULL m is fine. */
void sophia_memory_rebind(sophia_memory *m, const sophia_plugin_set *plugins);

/* memory.embedder of `c` against `plugins`: 0, or -1 with a
 * file:line:col problem in `d` (no such instance, not an embedder, a
 * dimension out of range). Called where streams check their processors:
 * at start, --check and each reload. */
int sophia_memory_check_embedder(const sophia_conf *c,
                                 const sophia_plugin_set *plugins,
                                 sophia_diag *d);
/* Reload: the embedder `c` configures, from `plugins`. A different one
 * (another instance, other options, another version) starts a background
 * re-embed; searches keep the old index and embedder until it is done
 * (memory_reembed.c). NULL m is fine. */
void sophia_memory_set_embedder(sophia_memory *m, const sophia_conf *c,
                                const sophia_plugin_set *plugins);

/* The /api/stats `memory` object (new reference) and /metrics lines. */
json_t *sophia_memory_stats_json(const sophia_memory *m);
void sophia_memory_prom(const sophia_memory *m, FILE *f);

/* ---- plugin side (memory_host.c) ------------------------------------
 * The sophia_host memory_* entries. Store, merge and expire are actions
 * kept in the callback's sophia_ctx (host.c holds one pointer for us, see
 * sophia_ctx_memory_slot) and applied by sophia_ctx_apply; a consolidator
 * run takes its merges and expiries out first and applies them itself. */
int sophia_memory_host_store(sophia_ctx *ctx, const char *content,
                             const char *memory_type, sophia_json *context,
                             double importance);
int sophia_memory_host_search(const char *query, const sophia_json *filter,
                              size_t k,
                              void (*cb)(void *arg, int rc,
                                         const sophia_json *results),
                              void *arg);
const sophia_json *sophia_memory_host_batch(sophia_ctx *ctx);
int sophia_memory_host_merge(sophia_ctx *ctx, int64_t keep_id, int64_t drop_id);
int sophia_memory_host_expire(sophia_ctx *ctx, int64_t id);
int sophia_memory_host_set_importance(sophia_ctx *ctx, int64_t id,
                                      double importance);
/* sophia_memory_ctx_apply: declared in host/host.h (it takes the apply). */
void sophia_memory_ctx_free(sophia_ctx *ctx);
/* Sets the batch a consolidator sees (borrowed) and returns the queued
 * merges/expiries (new reference: [{"op":"merge","keep":..,"drop":..} |
 * {"op":"expire","id":..}]), removing them from the context. */
void sophia_memory_ctx_set_batch(sophia_ctx *ctx, json_t *batch);
json_t *sophia_memory_ctx_take_ops(sophia_ctx *ctx);

/* Defined in host.c: the context's one pointer reserved for memory. */
void **sophia_ctx_memory_slot(sophia_ctx *ctx);

#endif
