/*
 * memory - the store's life: its SQL, start-up (schema, index load or
 * build from the rows), readiness (operations that wait for the index),
 * and freeing. The index itself (tombstones, saving, background rebuild)
 * is in memory_index.c, the write path in memory_store.c, retrieval in
 * memory_search.c, consolidation in memory_consolidate.c, the figures in
 * memory_stats.c; memory.h describes the design they share.
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
#include <time.h>
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
#include "lib/paths.h"
#include "event/loop.h"

#define MEM_MAX_DEFERRED 1000
/* A word in at least this share of the live rows (and at least
 * MEM_COMMON_MIN of them) is left out of the full-text leg. */
#define MEM_COMMON_SHARE "0.02"
#define MEM_COMMON_MIN "1000"
#define MEM_COMMON_REFRESH_S 600
/* The text search configuration of questions: english stemming, stop
 * words dropped, accents folded when the unaccent extension is there
 * (schema_sql). */
#define MEM_TS_CONFIG "sophia_english"
/* What the tsv is made with: the same, stop words kept (a stemmer without
 * a stop list, MEM_TS_STEM), so a synonym phrase keeps its small words:
 * "asked for" was the lexeme "ask" alone, which matched every "asked
 * about" and found a call for "what feature did X request". Questions'
 * words go through MEM_TS_CONFIG still (a stop word says nothing alone),
 * and the stemmer is the same, so the lexemes are too. */
#define MEM_TS_INDEX "sophia_english_all"
#define MEM_TS_STEM "sophia_english_stem"
/* What is indexed of a text (and asked of a question): the text with "%"
 * spelt out, which the parser drops, so "18% off" matches "percent off"
 * (the synonym list's way to say discount); and a hyphen between a letter
 * or digit and a digit made a space, which the parser reads as a minus
 * sign otherwise: "INC-9584" gave the lexeme "-9584", which "incident
 * 9584" never matched (nor "2026-12-02" its "12"). For snprintf formats
 * ("%%"). MEM_TS_MARK is a part of it only this version has (schema_sql
 * recomputes a tsv without it). */
#define MEM_TS_MARK "(?<=[[:alnum:]])-(?=[0-9])"
#define MEM_TS_TEXT(x)                                                       \
    "regexp_replace(replace(" x ", '%%', ' percent '), '" MEM_TS_MARK        \
    "', ' ', 'g')"
/* Typo tolerance: only words of this many letters, no digits, replaced by
 * known words of this many letters one slip away, or at least this
 * similar (pg_trgm's trigram similarity; a swapped pair in a 6-letter
 * word scores ~0.27, in a 5-letter stem 0.2). */
#define MEM_FUZZY_MIN_LEN "4"
#define MEM_FUZZY_MIN_SIM "0.25"
/* A corrected word weighs its similarity times this (at most 1): a word
 * the store has never seen is most likely a slip of its nearest one, and
 * at similarity alone (~0.4) the account name lost to two common words.
 * Up to MEM_FUZZY_CANDIDATES nearest words are tried (ties are common
 * in short names). Tuned on the evaluation's tuning split. */
#ifndef MEM_FUZZY_GAIN
#define MEM_FUZZY_GAIN "1.75"
#endif
#define MEM_FUZZY_CANDIDATES "10"
/* A word one slip away from an unknown one weighs this (see words_fuzzy):
 * a little under the question's own words. */
#ifndef MEM_FUZZY_SLIP
#define MEM_FUZZY_SLIP "0.9"
#endif
#define MEM_SYN_FILE "memory_synonyms.txt"

/* ------------------------------------------------------------- SQL */

/* Whether words a and b are one slip apart (words_fuzzy). */
#define MEM_SLIP(a, b)                                                        \
    "EXISTS (SELECT 1 FROM generate_series(0, length(" a ")) i, "            \
    "generate_series(0, length(" b ")) j WHERE i + j > 0 AND CASE WHEN i = " \
    "0 THEN " a " ELSE overlay(" a " PLACING '' FROM i FOR 1) END = CASE "   \
    "WHEN j = 0 THEN " b " ELSE overlay(" b " PLACING '' FROM j FOR 1) END)"
/* The known words nearest to w by trigrams (words_fuzzy). */
#define MEM_NEAREST(w)                                                        \
    "(SELECT v.word FROM %1$s_words v WHERE length(v.word) >= "              \
    MEM_FUZZY_MIN_LEN " ORDER BY v.word <-> " w " LIMIT "                    \
    MEM_FUZZY_CANDIDATES ")"

/* fmt with %1$s = the table, %2$s = `part`. */
static char *fmt_fts(const char *fmt, const char *t, const char *part)
{
    size_t n = strlen(fmt) + 8 * strlen(t) + strlen(part) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, t, part);
    return s;
}

static char *fmt_sql(const char *fmt, const char *t)
{
    size_t n = strlen(fmt) + 8 * strlen(t) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, t, t, t, t, t, t, t, t);
    return s;
}

/* The context filter (memory_priv.h). */
#define CTX_FILTER(n) MEM_CTX_FILTER(n)
/* The scope filter: $A user_id, $B agent_id, $C session_id, NULL = any.
 * Queries are planned with their values (unnamed statements), so a set
 * one uses its index. */
#define SCOPE_FILTER(p, a, b, c)                                              \
    "($" #a "::text IS NULL OR " p "user_id = $" #a ") AND ($" #b "::text "  \
    "IS NULL OR " p "agent_id = $" #b ") AND ($" #c "::text IS NULL OR " p   \
    "session_id = $" #c ")"

static int build_sql(mem_sql *q, const char *t)
{
    /* A store also adds its new words to <table>_words (the typo
     * vocabulary), in the same statement. */
    q->insert = fmt_sql("WITH i AS (INSERT INTO %s (content, memory_type, "
                        "context, importance, embedding, user_id, agent_id, "
                        "session_id, embedding_next) VALUES ($1, $2, $3::jsonb, "
                        "$4::real, $5::bytea, $6, $7, $8, $9::bytea) RETURNING "
                        "id, tsv), v "
                        "AS (INSERT INTO %s_words SELECT DISTINCT u.lexeme FROM "
                        "i, unnest(i.tsv) u WHERE " MEM_NOT_STOP("u.lexeme")
                        " ON CONFLICT DO NOTHING), h AS (INSERT "
                        "INTO %s_history (memory_id, event, detail) SELECT id, "
                        "'created', jsonb_build_object('content', $1::text, "
                        "'memory_type', $2::text, 'context', $3::jsonb, "
                        "'importance', $4::real) FROM i) SELECT id FROM i", t);
    /* The text leg: the query's words, stemmed and unaccented
     * (MEM_TS_CONFIG), minus the table's most common words (<table>_stats,
     * refreshed by q->common: they match a large part of the table and say
     * little - the vector leg covers them), each weighted by its inverse
     * document frequency (BM25's idf, counted through the GIN index:
     * exact, and cheap for the uncommon words left), summed per row. A
     * plain OR ranked by ts_rank_cd has no idf: "Vamel QBR date" ranked
     * every QBR note alike. fts_fuzzy also replaces a word the store has
     * never seen by a known word one slip away or its nearest (pg_trgm
     * over <table>_words): typo tolerance. Synonym groups are terms of
     * their own (fts_fmt). $4: live rows. */
    const char *words_exact =
        "fx AS (SELECT ql.w, 1.0::float8 AS sim FROM ql), ";
    /* A word the store has never seen: of the nearest known words by
     * trigrams, one a single slip away (a letter dropped, doubled,
     * changed, or two swapped: some one-letter deletion of each is the
     * same - symmetric delete, as spelling correctors do) is taken first;
     * trigrams alone rank a swap in a short name below unrelated words
     * ("satkr": "sale" 0.22, "stakr" 0.20). Both the word's lexeme and
     * the word as typed are compared: the stemmer mangles a misspelt name
     * ("Stemned" is the lexeme "stemn", two slips from "stemend"; as typed
     * it is one). */
    const char *words_fuzzy =
        "fx AS (SELECT ql.w, 1.0::float8 AS sim FROM ql WHERE EXISTS (SELECT "
        "1 FROM %1$s_words v WHERE v.word = ql.w) UNION ALL SELECT c.word, "
        "CASE WHEN c.slip THEN " MEM_FUZZY_SLIP " ELSE least(1.0, "
        MEM_FUZZY_GAIN " * c.sim) END::float8 FROM ql CROSS JOIN LATERAL "
        "(SELECT COALESCE((SELECT lower(t.token) FROM ts_debug('"
        MEM_TS_CONFIG "', " MEM_TS_TEXT("$1") ") t WHERE t.lexemes[1] = "
        "ql.w LIMIT 1), ql.w) AS raw) r CROSS JOIN LATERAL "
        "(SELECT n.word, greatest(similarity(n.word, ql.w), similarity("
        "n.word, r.raw)) AS sim, " MEM_SLIP("n.word", "ql.w") " OR "
        MEM_SLIP("n.word", "r.raw") " AS slip FROM ("
        MEM_NEAREST("ql.w") " UNION " MEM_NEAREST("r.raw") ") n ORDER BY 3 "
        "DESC, 2 DESC LIMIT 1) c WHERE "
        "length(ql.w) >= " MEM_FUZZY_MIN_LEN " AND ql.w !~ '[0-9]' AND NOT "
        "EXISTS (SELECT 1 FROM %1$s_words v WHERE v.word = ql.w) AND (c.slip "
        "OR c.sim >= " MEM_FUZZY_MIN_SIM ")), ";
    /* $1: the question's words (the synonyms' members blanked out), $5:
     * its synonym concepts, one line per member (memory_synonyms.c). A
     * concept is the OR of its members' phrases, scored once, with the
     * idf of every row it matches; a member whose words are all common
     * is left out of it. */
    const char *fts_fmt =
        "WITH cw AS (SELECT COALESCE((SELECT common FROM %1$s_stats WHERE k "
        "= 1), '{}') AS c), ql AS (SELECT u.lexeme AS w FROM unnest("
        "to_tsvector('" MEM_TS_CONFIG "', " MEM_TS_TEXT("$1") ")) u, cw WHERE u.lexeme <> ALL(cw.c)), "
        "%2$s"
        "sa AS (SELECT split_part(l, E'\\t', 1) AS g, split_part(l, E'\\t', 2) "
        "AS t FROM unnest(string_to_array($5, E'\\n')) l WHERE l <> ''), sq AS "
        "(SELECT sa.g, to_tsquery('" MEM_TS_INDEX "', sa.t) AS q FROM sa, cw "
        "WHERE NOT (tsvector_to_array(to_tsvector('" MEM_TS_CONFIG "', sa.t)) "
        "<@ cw.c)), "
        "d AS (SELECT max(fx.sim) AS sim, to_tsquery('simple', "
        "quote_literal(fx.w)) AS q FROM fx GROUP BY fx.w UNION ALL SELECT "
        "1.0, string_agg('(' || sq.q::text || ')', ' | ')::tsquery FROM sq "
        "WHERE numnode(sq.q) > 0 GROUP BY sq.g), df AS MATERIALIZED (SELECT "
        "d.q, "
        "d.sim, (SELECT count(*) FROM %1$s x WHERE x.tsv @@ d.q AND "
        "x.consolidated_into IS NULL)::float8 AS n FROM d), s AS (SELECT t.id, "
        "sum(df.sim * ln(1 + (greatest($4::float8, df.n) - df.n + 0.5) / "
        "(df.n + 0.5))) AS score FROM df JOIN %1$s t ON t.tsv @@ df.q WHERE "
        "t.consolidated_into IS NULL AND " CTX_FILTER(2) " AND "
        SCOPE_FILTER("t.", 6, 7, 8) " GROUP BY t.id) "
        "SELECT id, score::float8 FROM s ORDER BY 2 DESC, id DESC LIMIT $3::int";
    q->fts = fmt_fts(fts_fmt, t, words_exact);
    char *fz = fmt_fts(words_fuzzy, t, "");
    q->fts_fuzzy = fz ? fmt_fts(fts_fmt, t, fz) : NULL;
    free(fz);
    /* One ts_stat pass: the common words, and every word into
     * <table>_words (which stores keep current; this fills it for rows
     * stored before it existed). */
    q->common = fmt_sql("WITH s AS (SELECT word, ndoc FROM ts_stat('SELECT tsv "
                        "FROM %s WHERE consolidated_into IS NULL')), v AS (INSERT "
                        "INTO %s_words SELECT word FROM s WHERE " MEM_NOT_STOP("word")
                        " ON CONFLICT DO NOTHING) "
                        "INSERT INTO %s_stats SELECT 1, ARRAY(SELECT word FROM s "
                        "WHERE ndoc >= greatest(" MEM_COMMON_MIN ", (SELECT "
                        "count(*) FROM %s WHERE consolidated_into IS NULL) * "
                        MEM_COMMON_SHARE ")) ON CONFLICT (k) DO UPDATE SET "
                        "common = excluded.common", t);
    q->rows = fmt_sql("SELECT " MEM_COLS_HEAD ", embedding, " MEM_COLS_SCOPE
                      " FROM %s WHERE id = ANY($1::bigint[]) AND "
                      "consolidated_into IS NULL AND " CTX_FILTER(2) " AND "
                      SCOPE_FILTER("", 3, 4, 5), t);
    /* from a re-embed's swap until its vectors are moved into `embedding`
     * (memory_reembed.c) */
    q->rows_next = fmt_sql("SELECT " MEM_COLS_HEAD ", COALESCE(embedding_next, "
                           "embedding), " MEM_COLS_SCOPE " FROM %s WHERE id = "
                           "ANY($1::bigint[]) AND consolidated_into IS NULL AND "
                           CTX_FILTER(2) " AND " SCOPE_FILTER("", 3, 4, 5), t);
    q->touch = fmt_sql("UPDATE %s SET last_access = now(), access_count = "
                       "access_count + 1 WHERE id = ANY($1::bigint[])", t);
    /* Every change also leaves an event in <table>_history, in the same
     * statement (memory_crud.c reads it). */
    q->feedback = fmt_sql("WITH u AS (UPDATE %s SET importance = CASE WHEN "
                          "$2::bool THEN importance + 0.2 * (1 - importance) ELSE "
                          "importance * 0.8 END, feedback = feedback + CASE WHEN "
                          "$2::bool THEN 1 ELSE -1 END WHERE id = $1::bigint AND "
                          "consolidated_into IS NULL RETURNING id, importance), h "
                          "AS (INSERT INTO %s_history (memory_id, event, detail) "
                          "SELECT id, 'feedback', jsonb_build_object('useful', "
                          "$2::bool, 'importance', importance) FROM u) SELECT "
                          "importance::float8 FROM u", t);
    q->count = fmt_sql("SELECT count(*) FROM %s WHERE consolidated_into IS NULL", t);
    q->types = fmt_sql("SELECT memory_type, count(*) FROM %s WHERE "
                       "consolidated_into IS NULL GROUP BY 1", t);
    q->all = fmt_sql("SELECT id, embedding FROM %s WHERE consolidated_into "
                     "IS NULL ORDER BY id", t);
    q->ids = fmt_sql("SELECT id FROM %s WHERE consolidated_into IS NULL AND "
                     "octet_length(embedding) = $1::int ORDER BY id", t);
    q->catchup = fmt_sql("SELECT id, embedding FROM %s WHERE consolidated_into "
                         "IS NULL AND octet_length(embedding) = $2::int AND (id "
                         "= ANY($1::bigint[]) OR id IN (SELECT memory_id FROM "
                         "%s_history WHERE event = 'updated' AND at > now() - "
                         "$3::int * interval '1 second')) ORDER BY id", t);
    /* A consolidation run: the next $1 live memories after the cursor $2
     * (memory_consolidate.c), the rows of their neighbours (in the batch
     * or not: one query), and the cursor itself, one row per instance. */
#define BATCH_SQL(vec)                                                        \
    "SELECT " MEM_COLS_HEAD ", " vec ", " MEM_COLS_SCOPE ", extract(epoch "   \
    "FROM decayed_at)::float8 FROM %s WHERE consolidated_into IS NULL AND "   \
    "id > $2::bigint ORDER BY id LIMIT $1::int"
    q->batch = fmt_sql(BATCH_SQL("embedding"), t);
    /* A consolidator with neighbors: 0 searches nothing: PostgreSQL sends,
     * and a worker decodes, no vectors (hex, 3 KB a row at dim 384). */
    q->batch_novec = fmt_sql(BATCH_SQL("NULL::bytea"), t);
#undef BATCH_SQL
    q->nbrows = fmt_sql("SELECT id, memory_type, context::text, "
                        "octet_length(content), importance::float8, "
                        MEM_COLS_SCOPE " FROM %s WHERE id = ANY($1::bigint[]) "
                        "AND consolidated_into IS NULL", t);
    q->cons_load = fmt_sql("SELECT after_id, passes, pass_started, last_pass_s "
                           "FROM %s_cons WHERE instance = $1", t);
    q->cons_save = fmt_sql("INSERT INTO %s_cons (instance, after_id, passes, "
                           "pass_started, last_pass_s) VALUES ($1, $2::bigint, "
                           "$3::bigint, $4::float8, $5::float8) ON CONFLICT "
                           "(instance) DO UPDATE SET after_id = excluded.after_id, "
                           "passes = excluded.passes, pass_started = "
                           "excluded.pass_started, last_pass_s = "
                           "excluded.last_pass_s", t);
    /* One statement, so a merge is all or nothing: the CTE marks the
     * dropped row (only while the kept one is live and in the same scope:
     * user_id, agent_id and session_id alike, whatever a plugin asks), the
     * outer UPDATE folds its counts into the kept one. $3: the instance,
     * in both memories' history, as for an expiry ($2). */
    q->merge_keep = fmt_sql("WITH d AS (UPDATE %s SET consolidated_into = "
                            "$1::bigint WHERE id = $2::bigint AND "
                            "consolidated_into IS NULL AND EXISTS (SELECT 1 FROM "
                            "%s k WHERE k.id = $1::bigint AND k.consolidated_into "
                            "IS NULL AND k.user_id IS NOT DISTINCT FROM %s.user_id "
                            "AND k.agent_id IS NOT DISTINCT FROM %s.agent_id AND "
                            "k.session_id IS NOT DISTINCT FROM %s.session_id) "
                            "RETURNING access_count, importance, "
                            "last_access, memory_type, id) , k AS (UPDATE %s k SET "
                            "access_count = k.access_count + d.access_count, "
                            "importance = greatest(k.importance, d.importance), "
                            "last_access = greatest(k.last_access, d.last_access) "
                            "FROM d WHERE k.id = $1::bigint RETURNING k.id, d.id AS "
                            "did, d.memory_type), h AS (INSERT INTO %s_history "
                            "(memory_id, event, detail) SELECT did, 'merged', "
                            "jsonb_build_object('into', id, 'by', $3::text) FROM k "
                            "UNION ALL SELECT id, 'merged', jsonb_build_object("
                            "'absorbed', did, 'by', $3::text) FROM k) SELECT "
                            "memory_type FROM k", t);
    q->expire = fmt_sql("WITH x AS (DELETE FROM %s WHERE id = $1::bigint "
                        "RETURNING id, memory_type), h AS (INSERT INTO %s_history "
                        "(memory_id, event, detail) SELECT id, 'deleted', "
                        "jsonb_build_object('by', 'consolidator', 'instance', "
                        "$2::text) FROM x) SELECT memory_type FROM x", t);
    /* A consolidator's write-back (host->memory_set_importance): the
     * importance, the time it was decayed to (so the next decay counts
     * only the time since), and a history event. $3: the instance. */
    q->set_importance = fmt_sql("WITH u AS (UPDATE %s SET importance = "
                                "$2::real, decayed_at = now() WHERE id = $1::bigint "
                                "AND consolidated_into IS NULL RETURNING id, "
                                "importance), h AS (INSERT INTO %s_history "
                                "(memory_id, event, detail) SELECT id, 'decayed', "
                                "jsonb_build_object('importance', importance, 'by', "
                                "$3::text) FROM u) SELECT id FROM u", t);
    char **all[] = {&q->insert, &q->fts, &q->fts_fuzzy, &q->rows, &q->rows_next,
                    &q->touch, &q->feedback,
                    &q->count, &q->types, &q->all, &q->ids, &q->catchup, &q->batch, &q->batch_novec, &q->merge_keep,
                    &q->expire, &q->common, &q->nbrows, &q->cons_load,
                    &q->cons_save, &q->set_importance};
    if (mem_crud_sql(q, t) < 0)
        return -1;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!*all[i])
            return -1;
    return 0;
}

static void free_sql(mem_sql *q)
{
    free(q->insert);
    free(q->fts);
    free(q->fts_fuzzy);
    free(q->rows);
    free(q->rows_next);
    free(q->touch);
    free(q->feedback);
    free(q->count);
    free(q->types);
    free(q->all);
    free(q->ids);
    free(q->catchup);
    free(q->batch);
    free(q->batch_novec);
    free(q->merge_keep);
    free(q->expire);
    free(q->common);
    free(q->nbrows);
    free(q->cons_load);
    free(q->cons_save);
    free(q->set_importance);
    mem_crud_sql_free(q);
}

/* Ends a block that creates a shared text search object: made by another
 * table's (or another sophiad's) start already is fine. */
#define MEM_TS_EXISTS                                                         \
    "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;"

/* The schema, in order. The extensions are best effort (a role that may
 * not create them still gets a store, and on_exts says what is missing);
 * the text search configurations are shared by every table, created once
 * (copies of english, with unaccent when it is there; MEM_TS_INDEX with a
 * stemmer that keeps stop words). A table whose tsv predates MEM_TS_INDEX
 * or MEM_TS_TEXT gets it recomputed:
 * dropping the generated column drops its index, which is re-created. */
#define MEM_SCHEMA_STEPS 16
static void schema_sql(const char *t, char *buf, size_t n, int which)
{
    switch (which) {
    case 0:
        snprintf(buf, n, "DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS unaccent; "
                 "EXCEPTION WHEN OTHERS THEN NULL; END $$");
        break;
    case 1:
        snprintf(buf, n, "DO $$ BEGIN CREATE EXTENSION IF NOT EXISTS pg_trgm; "
                 "EXCEPTION WHEN OTHERS THEN NULL; END $$");
        break;
    case 2:
        snprintf(buf, n, "DO $$ DECLARE ua boolean := EXISTS (SELECT 1 FROM "
                 "pg_extension WHERE extname = 'unaccent'); BEGIN BEGIN CREATE "
                 "TEXT SEARCH CONFIGURATION " MEM_TS_CONFIG " (COPY = english); "
                 "IF ua THEN ALTER TEXT SEARCH CONFIGURATION " MEM_TS_CONFIG
                 " ALTER MAPPING FOR hword, hword_part, word WITH unaccent, "
                 "english_stem; END IF; " MEM_TS_EXISTS " BEGIN CREATE TEXT "
                 "SEARCH DICTIONARY " MEM_TS_STEM " (TEMPLATE = snowball, "
                 "Language = english); " MEM_TS_EXISTS " BEGIN CREATE TEXT "
                 "SEARCH CONFIGURATION " MEM_TS_INDEX " (COPY = english); ALTER "
                 "TEXT SEARCH CONFIGURATION " MEM_TS_INDEX " ALTER MAPPING FOR "
                 "asciiword, asciihword, hword_asciipart WITH " MEM_TS_STEM "; "
                 "IF ua THEN ALTER TEXT SEARCH CONFIGURATION " MEM_TS_INDEX
                 " ALTER MAPPING FOR hword, hword_part, word WITH unaccent, "
                 MEM_TS_STEM "; ELSE ALTER TEXT SEARCH CONFIGURATION "
                 MEM_TS_INDEX " ALTER MAPPING FOR hword, hword_part, word WITH "
                 MEM_TS_STEM "; END IF; " MEM_TS_EXISTS " END $$");
        break;
    case 3:
        snprintf(buf, n,
                 "CREATE TABLE IF NOT EXISTS %s (id bigserial PRIMARY KEY, "
                 "content text NOT NULL, memory_type text NOT NULL, context "
                 "jsonb NOT NULL DEFAULT '{}', importance real NOT NULL "
                 "DEFAULT 0.5, created_at timestamptz NOT NULL DEFAULT now(), "
                 "last_access timestamptz NOT NULL DEFAULT now(), access_count "
                 "bigint NOT NULL DEFAULT 0, feedback integer NOT NULL DEFAULT "
                 "0, consolidated_into bigint NULL, embedding bytea NOT NULL, "
                 "tsv tsvector GENERATED ALWAYS AS (to_tsvector('" MEM_TS_INDEX
                 "', " MEM_TS_TEXT("content") ")) STORED)", t);
        break;
    case 4:
        snprintf(buf, n, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attrdef d "
                 "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = "
                 "d.adnum WHERE d.adrelid = '%s'::regclass AND a.attname = 'tsv' "
                 "AND pg_get_expr(d.adbin, d.adrelid) LIKE '%%" MEM_TS_INDEX
                 "%% percent %%" MEM_TS_MARK "%%') THEN ALTER TABLE %s DROP COLUMN IF EXISTS tsv; ALTER TABLE %s ADD "
                 "COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('"
                 MEM_TS_INDEX "', " MEM_TS_TEXT("content") ")) STORED; END IF; "
                 "END $$", t, t, t);
        break;
    case 5:
        snprintf(buf, n, "CREATE INDEX IF NOT EXISTS %s_tsv ON %s USING gin (tsv)",
                 t, t);
        break;
    case 6:
        snprintf(buf, n, "CREATE TABLE IF NOT EXISTS %s_stats (k int PRIMARY "
                 "KEY, common text[] NOT NULL)", t);
        break;
    case 7:
        snprintf(buf, n, "CREATE TABLE IF NOT EXISTS %s_words (word text "
                 "PRIMARY KEY)", t);
        break;
    case 8:
        snprintf(buf, n, "CREATE INDEX IF NOT EXISTS %s_context ON %s USING "
                 "gin (context jsonb_path_ops)", t, t);
        break;
    case 9:
        /* The scope columns, added to a table made before them and filled
         * from the context keys of the same names, once. */
        snprintf(buf, n, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute "
                 "WHERE attrelid = '%s'::regclass AND attname = 'user_id' AND "
                 "NOT attisdropped) THEN ALTER TABLE %s ADD COLUMN user_id text, "
                 "ADD COLUMN agent_id text, ADD COLUMN session_id text; UPDATE %s "
                 "SET user_id = context->>'user_id', agent_id = context->>"
                 "'agent_id', session_id = context->>'session_id' WHERE context "
                 "?| ARRAY['user_id', 'agent_id', 'session_id']; END IF; END $$",
                 t, t, t);
        break;
    case 12:
        /* A re-embed's vectors before they move into `embedding`. */
        snprintf(buf, n, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS "
                 "embedding_next bytea", t);
        break;
    case 13:
        /* Which embedder made `embedding` (memory_reembed.c). */
        snprintf(buf, n, "CREATE TABLE IF NOT EXISTS %s_embedder (k text "
                 "PRIMARY KEY, v text)", t);
        break;
    case 11:
        /* The history of changes; a table made before it gets each live
         * memory's creation, so every memory has one. */
        snprintf(buf, n, "DO $$ BEGIN IF to_regclass('%s_history') IS NULL THEN "
                 "CREATE TABLE %s_history (seq bigserial PRIMARY KEY, memory_id "
                 "bigint NOT NULL, event text NOT NULL, at timestamptz NOT NULL "
                 "DEFAULT now(), detail jsonb NOT NULL DEFAULT '{}'); CREATE INDEX "
                 "%s_history_mem ON %s_history (memory_id, seq); INSERT INTO "
                 "%s_history (memory_id, event, at, detail) SELECT id, 'created', "
                 "created_at, jsonb_build_object('content', content, 'memory_type', "
                 "memory_type, 'context', context, 'importance', importance) FROM "
                 "%s WHERE consolidated_into IS NULL ORDER BY id; END IF; END $$",
                 t, t, t, t, t, t);
        break;
    case 14:
        /* Each consolidator instance's cursor (memory_consolidate.c), so
         * its passes go on where they were after a restart. */
        snprintf(buf, n, "CREATE TABLE IF NOT EXISTS %s_cons (instance text "
                 "PRIMARY KEY, after_id bigint NOT NULL DEFAULT 0, passes bigint "
                 "NOT NULL DEFAULT 0, pass_started float8, last_pass_s float8)", t);
        break;
    case 15:
        /* When a consolidator last wrote a decayed importance back
         * (host->memory_set_importance); NULL = never. */
        snprintf(buf, n, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS decayed_at "
                 "timestamptz", t);
        break;
    default:
        snprintf(buf, n, "DO $$ BEGIN CREATE INDEX IF NOT EXISTS %s_user ON %s "
                 "(user_id, id); CREATE INDEX IF NOT EXISTS %s_agent ON %s "
                 "(agent_id, id); CREATE INDEX IF NOT EXISTS %s_session ON %s "
                 "(session_id, id); END $$", t, t, t, t, t, t);
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

/* ---------------------------------------------------- ready / deferred */

static void on_common_done(void *arg, PGresult *res, const char *err)
{
    (void)res;
    (void)err;
    ((sophia_memory *)arg)->common_busy = 0;
}

/* Which words are too common for the text leg (q->fts): now and every
 * MEM_COMMON_REFRESH_S. ts_stat reads every tsvector (~0.7 s at 100k
 * rows), so it runs on a connection of its own, never ahead of searches.
 * Queued even while that connection is still coming up (the store can be
 * ready first), but one at a time, so a long outage queues one. */
static void on_common_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_memory *m = arg;
    if (m->state != MEM_READY || m->freeing || m->common_busy)
        return;
    if (sophia_pg_query(m->pg_maint, m->sql.common, 0, NULL, NULL, NULL,
                        on_common_done, m) == 0)
        m->common_busy = 1;
}

static void set_ready(sophia_memory *m)
{
    m->state = MEM_READY;
    struct timeval tv = {MEM_COMMON_REFRESH_S, 0};
    if (m->common_ev && !evtimer_pending(m->common_ev, NULL)) {
        event_add(m->common_ev, &tv);
        on_common_timer(-1, 0, m);
    }
    mem_re_kick(m); /* a re-embed first, so waiting stores embed for it too */
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
    char legacy_id[SOPHIA_EMBED_ID_MAX]; /* a file without tag: the 1.1 hashing's */
    int64_t count;
    int loaded; /* the file matched */
    FaissIndex *ix; /* the file read, until checked against the table's ids */
    int hnsw;
    long age_s; /* since the file was saved */
    mem_file_check chk;
    int checked;
    int64_t *ids;
    float *vecs;
    size_t n;
    char msg[256];
} boot_job;

static void boot_free(boot_job *b)
{
    if (b->ix)
        faiss_Index_free(b->ix);
    mem_file_check_free(&b->chk);
    free(b->ids);
    free(b->vecs);
    free(b);
}

static void boot_fail(boot_job *b, const char *why)
{
    if (!b->m->freeing)
        set_failed(b->m, why);
    boot_free(b);
}

/* Sets the store's efSearch when the index (under its IDMap2) is HNSW. */
static int is_hnsw_index(FaissIndex *ix)
{
    return sophia_faiss_hnsw_set(ix, 0, SOPHIA_MEM_HNSW_EF_SEARCH) == 0;
}

/* Reads the saved index into b->ix when it fits the store (embedder,
 * dimension) and the kind memory.index asks for at this size - otherwise
 * b->msg says why and the caller rebuilds. Its ids are checked against
 * the table's next (check_work), and what it lacks added (adopt_work). */
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
    mem_index_tune(ix);
    char tag[SOPHIA_EMBED_ID_MAX];
    if (mem_index_tag_read(m, tag, sizeof(tag)) < 0)
        snprintf(tag, sizeof(tag), "%s", b->legacy_id); /* a 1.1 file */
    if (strcmp(tag, mem_re_index_id(m))) {
        snprintf(b->msg, sizeof(b->msg), "embedder: the file's vectors are "
                 "%s's, the table's %s's", tag, mem_re_index_id(m));
    } else if (faiss_Index_d(ix) != m->dim) {
        snprintf(b->msg, sizeof(b->msg), "the file's vectors have dim %d, "
                 "the store's %d", faiss_Index_d(ix), m->dim);
    } else if (hnsw != mem_want_hnsw(m, b->count)) {
        snprintf(b->msg, sizeof(b->msg), "index kind: the file is %s, %lld rows "
                 "want %s", hnsw ? "hnsw" : "flat", (long long)b->count,
                 hnsw ? "flat" : "hnsw");
    } else {
        struct stat st;
        b->ix = ix;
        b->hnsw = hnsw;
        b->age_s = stat(m->index_path, &st) == 0 ? (long)(time(NULL) - st.st_mtime) : 0;
        return;
    }
    faiss_Index_free(ix);
}

static void build_work(void *arg)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    int hnsw = mem_want_hnsw(m, (int64_t)b->n);
    FaissIndex *ix = mem_index_new(m->dim, hnsw);
    if (!ix || mem_index_bulk_add(m, ix, b->n, b->vecs, b->ids) != 0) {
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
    mem_index_save(m);
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
    boot_free(b);
}

/* A binary result's int8: big-endian. */
static int64_t pg_int8(const PGresult *res, int row)
{
    const unsigned char *p = (const unsigned char *)PQgetvalue(res, row, 0);
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v = v << 8 | p[k];
    return (int64_t)v;
}

/* Binary results: id int8, embedding bytea raw. */
static int copy_rows(boot_job *b, PGresult *res, int dim)
{
    size_t n = (size_t)PQntuples(res), vb = (size_t)dim * sizeof(float);
    b->ids = malloc((n ? n : 1) * sizeof(*b->ids));
    b->vecs = malloc((n ? n : 1) * vb);
    if (!b->ids || !b->vecs)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if ((size_t)PQgetlength(res, (int)i, 1) != vb)
            continue; /* another dim: skipped (the row is still searchable by text) */
        b->ids[b->n] = pg_int8(res, (int)i);
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

static void rebuild_start(boot_job *b)
{
    sophia_memory *m = b->m;
    sophia_info("memory", "msg=\"rebuilding index from PostgreSQL\" path=%s "
                "reason=\"%s\"", m->index_path, b->msg[0] ? b->msg : "no index file");
    if (b->ix)
        faiss_Index_free(b->ix);
    b->ix = NULL;
    free(b->ids);
    b->ids = NULL;
    b->n = 0;
    if (sophia_pg_query_fmt(m->pg, m->sql.all, 0, NULL, NULL, NULL, 1,
                            on_all_rows, b) != 0)
        boot_fail(b, "cannot query PostgreSQL");
}

static void adopt_work(void *arg)
{
    boot_job *b = arg;
    if (mem_index_adopt(b->m, b->ix, b->hnsw, &b->chk, b->n, b->vecs, b->ids) == 0) {
        b->ix = NULL; /* the store's now */
        b->loaded = 1;
    } else {
        snprintf(b->msg, sizeof(b->msg), "cannot add the file's missing "
                 "vectors: %s", faiss_get_last_error() ? faiss_get_last_error() : "?");
    }
}

static void adopt_done(void *arg, int cancelled)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    if (cancelled || m->freeing) {
        boot_fail(b, "shutting down");
        return;
    }
    if (!b->loaded) {
        rebuild_start(b);
        return;
    }
    sophia_info("memory", "msg=\"index loaded\" rows=%lld kind=%s "
                "tombstones=%zu added=%zu path=%s", (long long)b->count,
                m->hnsw ? "hnsw" : "flat", m->ntomb, b->n, m->index_path);
    m->tombstones = m->ntomb;
    if (b->n)
        mem_mark_dirty(m);
    set_ready(m);
    if (b->chk.rebuild)
        mem_rebuild(m); /* the old graph serves meanwhile */
    boot_free(b);
}

/* The vectors the file lacks, or has older ones of. */
static void on_catchup(void *arg, PGresult *res, const char *err)
{
    boot_job *b = arg;
    if (!res || err) {
        boot_fail(b, err ? err : "closed");
        return;
    }
    free(b->ids);
    b->ids = NULL;
    b->n = 0;
    if (copy_rows(b, res, b->m->dim) < 0 ||
        sophia_workers_submit(b->m->pool, adopt_work, adopt_done, b) != 0)
        boot_fail(b, "out of memory");
}

static void check_work(void *arg)
{
    boot_job *b = arg;
    b->checked = mem_index_check(b->ix, b->ids, b->n, &b->chk) == 0;
    if (!b->checked)
        snprintf(b->msg, sizeof(b->msg), "out of memory checking the file");
}

/* Asks PostgreSQL for the rows the file has no vector for, and for those
 * updated since it was saved (by PostgreSQL's clock: the file's age, and
 * a minute to spare). */
static void check_done(void *arg, int cancelled)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    if (cancelled || m->freeing) {
        boot_fail(b, "shutting down");
        return;
    }
    if (!b->checked) {
        rebuild_start(b);
        return;
    }
    char bytes[16], age[24];
    snprintf(bytes, sizeof(bytes), "%d", m->dim * (int)sizeof(float));
    snprintf(age, sizeof(age), "%ld", b->age_s + 60);
    char *ids = mem_id_array(b->chk.missing, b->chk.nmissing);
    const char *vals[3] = {ids, bytes, age};
    if (!ids || sophia_pg_query_fmt(m->pg, m->sql.catchup, 3, vals, NULL, NULL,
                                    1, on_catchup, b) != 0)
        boot_fail(b, "cannot query PostgreSQL");
    free(ids);
}

/* The table's live ids with a vector of the index's dimension, sorted. */
static void on_ids(void *arg, PGresult *res, const char *err)
{
    boot_job *b = arg;
    if (!res || err) {
        boot_fail(b, err ? err : "closed");
        return;
    }
    size_t n = (size_t)PQntuples(res);
    b->ids = malloc((n ? n : 1) * sizeof(*b->ids));
    if (!b->ids) {
        boot_fail(b, "out of memory");
        return;
    }
    for (b->n = 0; b->n < n; b->n++)
        b->ids[b->n] = pg_int8(res, (int)b->n);
    if (sophia_workers_submit(b->m->pool, check_work, check_done, b) != 0)
        boot_fail(b, "worker pool unavailable");
}

static void load_done(void *arg, int cancelled)
{
    boot_job *b = arg;
    sophia_memory *m = b->m;
    if (cancelled || m->freeing) {
        boot_fail(b, "shutting down");
        return;
    }
    if (!b->ix) {
        rebuild_start(b);
        return;
    }
    char bytes[16];
    snprintf(bytes, sizeof(bytes), "%d", m->dim * (int)sizeof(float));
    const char *vals[1] = {bytes};
    if (sophia_pg_query_fmt(m->pg, m->sql.ids, 1, vals, NULL, NULL, 1,
                            on_ids, b) != 0)
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

static void load_start(void *arg)
{
    boot_job *b = arg;
    if (b->m->freeing)
        boot_fail(b, "shutting down");
    else if (sophia_workers_submit(b->m->pool, load_work, load_done, b) != 0)
        boot_fail(b, "worker pool unavailable");
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
    mem_re_boot(b->m, load_start, b); /* which embedder, then the index */
}

static void on_schema(void *arg, PGresult *res, const char *err)
{
    sophia_memory *m = arg;
    if (err && res && !m->freeing)
        sophia_error("memory", "msg=\"schema statement failed\" error=\"%s\"", err);
}

/* What the extensions allow. Missing ones are said once, at start: the
 * store works without them, with less (no accent folding; no typo
 * tolerance in the text leg). */
static void on_exts(void *arg, PGresult *res, const char *err)
{
    sophia_memory *m = arg;
    if (!res || err || m->freeing)
        return;
    int unaccent = 0, trgm = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        unaccent |= !strcmp(PQgetvalue(res, i, 0), "unaccent");
        trgm |= !strcmp(PQgetvalue(res, i, 0), "pg_trgm");
    }
    if (!unaccent)
        sophia_warn("memory", "msg=\"PostgreSQL extension unaccent is not "
                    "installed (postgresql-contrib): full-text search does not "
                    "fold accents\"");
    if (!trgm) {
        sophia_warn("memory", "msg=\"PostgreSQL extension pg_trgm is not "
                    "installed (postgresql-contrib): full-text search has no "
                    "typo tolerance\"");
        return;
    }
    char sql[512];
    snprintf(sql, sizeof(sql), "CREATE INDEX IF NOT EXISTS %s_words_trgm ON "
             "%s_words USING gist (word gist_trgm_ops)", m->conf->memory.table,
             m->conf->memory.table);
    sophia_pg_query(m->pg, sql, 0, NULL, NULL, NULL, on_schema, m);
    m->fuzzy = 1;
}

static int boot(sophia_memory *m)
{
    boot_job *b = calloc(1, sizeof(*b));
    sophia_embedder *legacy = sophia_embed_hashing_new((int)m->conf->memory.dim);
    if (!b || !legacy) {
        free(b);
        sophia_embedder_free(legacy);
        return -1;
    }
    b->m = m;
    snprintf(b->legacy_id, sizeof(b->legacy_id), "%s", legacy->id);
    sophia_embedder_free(legacy);
    char sql[2048];
    for (int i = 0; i < MEM_SCHEMA_STEPS; i++) {
        schema_sql(m->conf->memory.table, sql, sizeof(sql), i);
        sophia_pg_query(m->pg, sql, 0, NULL, NULL, NULL, on_schema, m);
    }
    sophia_pg_query(m->pg, "SELECT extname FROM pg_extension WHERE extname IN "
                    "('unaccent', 'pg_trgm')", 0, NULL, NULL, NULL, on_exts, m);
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

/* The synonym list from the share directory (server.share_dir, or the
 * bundled one): data, not code. A missing or bad file leaves retrieval
 * without expansion, and says so. */
static void load_synonyms(sophia_memory *m)
{
    const char *dir = m->conf->server.share_dir ? m->conf->server.share_dir
                                                : sophia_paths_share_dir();
    char path[4096], err[512];
    snprintf(path, sizeof(path), "%s/" MEM_SYN_FILE, dir);
    m->syn = mem_syn_load(path, err, sizeof(err));
    if (!m->syn)
        sophia_warn("memory", "msg=\"no synonym expansion\" reason=\"%s\"", err);
    else
        sophia_info("memory", "msg=\"synonyms loaded\" path=%s groups=%zu", path,
                    mem_syn_groups(m->syn));
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
    pthread_rwlock_init(&m->lock, NULL);
    m->by_type = json_object();
    m->index_path = default_index_path(c);
    load_synonyms(m);
    m->save_ev = evtimer_new(base, mem_on_save_timer, m);
    m->adder = sophia_faiss_adder_new();
    m->common_ev = event_new(base, -1, EV_PERSIST, on_common_timer, m);
    if (!m->index_path || !m->save_ev || !m->by_type || !m->adder ||
        build_sql(&m->sql, c->memory.table) < 0 || mem_re_init(m, plugins) < 0 ||
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
        mem_index_save(m);
    if (m->index)
        faiss_Index_free(m->index);
    if (m->nix)
        faiss_Index_free(m->nix);
    sophia_faiss_adder_free(m->adder);
    mem_re_free(m); /* drops the embedders: a retired plugin unloads */
    if (m->save_ev)
        event_free(m->save_ev);
    if (m->common_ev)
        event_free(m->common_ev);
    mem_syn_free(m->syn);
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
