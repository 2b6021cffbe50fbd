/*
 * snowflake - the processor for rows read from a Snowflake stream (CDC).
 *
 * An event is {"table": T, "rows": [...]} (or one row carrying "table"),
 * each row holding its columns plus METADATA$ACTION (INSERT / DELETE),
 * METADATA$ISUPDATE and METADATA$ROW_ID, and the offset the reader gave
 * it (`offset_field`, below). Snowflake reports an update as a DELETE of
 * the old image and an INSERT of the new one, both with ISUPDATE true and
 * the same ROW_ID; this processor pairs them (within the event) and
 * applies:
 *   INSERT             -> cache put, `data` update action "insert"
 *   DELETE+INSERT pair -> cache put, action "update" with "previous"; when
 *                         the key columns changed, the old key is
 *                         invalidated first and the update names it
 *                         ("previous_key"), so no reader finds the row
 *                         under a key it no longer has
 *   DELETE             -> cache invalidate, action "delete"
 * Cache keys are `<prefix><table>:<key>`, where <key> joins the values
 * of the table's key columns (`keys` option, "TABLE=COL1,COL2"), else
 * of `default_key`, else the ROW_ID; entries are tagged `snowflake` and
 * `table:<table>`.
 *
 * Redelivery: by the feed's offset, never by content. A Snowflake stream
 * has no per-row sequence of its own (METADATA$ROW_ID names a row, not a
 * change: an update keeps it, and the same values can come back: A, B, A,
 * B), so the reader that consumes the stream numbers its rows: the Kafka
 * connector's RECORD_METADATA.offset (with .partition), or a job that
 * reads the stream in a transaction and numbers rows from the stream's
 * last consumed position. `offset_field` (a dotted path, default
 * `_offset`) names that number: an integer, or its decimal text (offsets
 * past 2^53 do not fit a JSON double). Offsets increase per table, or per
 * table and `partition_field` value when that is set. The instance keeps
 * one high-water mark per such scope: a row whose offset is at or below
 * the committed mark - or below one already taken earlier in the same
 * batch - is a redelivery and is skipped (counter `duplicates`). Rows must
 * therefore reach it in offset order within a scope, which a stream read
 * in order gives. Memory is one mark per scope, at most `max_scopes` (the
 * least recently created goes first; a redelivery of its old rows would
 * then apply again, counted `scopes_evicted`), not one entry per change.
 * A row without an offset is an error naming the row and the field (the
 * batch goes ERROR, dead-lettered with the reason): applying it with no
 * way to recognise its redelivery would publish it twice. `offset_field:
 * ""` turns the marks off (every row applies; at-least-once duplicates).
 *
 * State and the verdict (SDK 1.1): the batch's new marks go to
 * host->stage, so they land only when the event's effects commit. A
 * batch that goes ERROR, or whose effects are refused, moves no mark and
 * its redelivery applies every row. export_state/import_state carry the
 * committed marks (format 2; a format-1 export, the old content set, is
 * accepted and carries nothing).
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../proc_util.h"

#define MD_ACTION "METADATA$ACTION"
#define MD_UPDATE "METADATA$ISUPDATE"
#define MD_ROWID "METADATA$ROW_ID"

typedef struct sf_keys {
    char *table;
    char *cols; /* "A,B" */
} sf_keys;

/* A scope's mark as this batch leaves it (staged at the end). */
typedef struct sf_pending {
    char *scope;
    uint64_t off;
} sf_pending;

typedef struct sf_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *default_key, *default_table;
    char *offset_field, *partition_field;
    double ttl;
    sf_keys *keys;
    size_t nkeys;
    pu_table marks;      /* scope -> uint64_t high-water mark, committed */
    sf_pending *pending; /* marks moved by the event in progress */
    size_t npending, cap;
} sf_state;

/* A mark once the event commits (host->stage's change). */
typedef struct sf_mark_change {
    uint64_t off;
    char scope[];
} sf_mark_change;

/* ------------------------------------------------------------ lifecycle */

static void sf_fini(void *state)
{
    sf_state *st = state;
    if (!st)
        return;
    for (size_t i = 0; i < st->nkeys; i++) {
        free(st->keys[i].table);
        free(st->keys[i].cols);
    }
    free(st->keys);
    free(st->pending);
    pu_table_free(&st->marks);
    free(st->prefix);
    free(st->dashboard);
    free(st->default_key);
    free(st->default_table);
    free(st->offset_field);
    free(st->partition_field);
    free(st);
}

static int parse_keys(sf_state *st, const sophia_opts *opts)
{
    const sophia_host *h = st->host;
    st->nkeys = h->opt_list_len(opts, "keys");
    st->keys = calloc(st->nkeys ? st->nkeys : 1, sizeof(*st->keys));
    if (!st->keys)
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < st->nkeys; i++) {
        const char *spec = h->opt_list_item(opts, "keys", i);
        const char *eq = strchr(spec, '=');
        if (!eq || eq == spec || !eq[1]) {
            h->log(st->self, SOPHIA_LOG_ERROR,
                   "keys entry '%s' is not TABLE=COL[,COL...]", spec);
            return SOPHIA_EINVAL;
        }
        st->keys[i].table = malloc((size_t)(eq - spec) + 1);
        st->keys[i].cols = pu_strdup(eq + 1);
        if (!st->keys[i].table || !st->keys[i].cols)
            return SOPHIA_ENOMEM;
        memcpy(st->keys[i].table, spec, (size_t)(eq - spec));
        st->keys[i].table[eq - spec] = '\0';
    }
    return 0;
}

static int sf_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    if (pu_require_stage(host, self, "snowflake"))
        return SOPHIA_EABI;
    sf_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->prefix = pu_strdup(host->opt_string(opts, "cache_prefix"));
    st->dashboard = pu_strdup(host->opt_string(opts, "dashboard"));
    st->default_key = pu_strdup(host->opt_string(opts, "default_key"));
    st->default_table = pu_strdup(host->opt_string(opts, "default_table"));
    st->offset_field = pu_strdup(host->opt_string(opts, "offset_field"));
    st->partition_field = pu_strdup(host->opt_string(opts, "partition_field"));
    st->ttl = host->opt_double(opts, "ttl");
    int64_t max = host->opt_int(opts, "max_scopes");
    int rc = 0;
    if (max < 1) {
        host->log(self, SOPHIA_LOG_ERROR, "max_scopes must be at least 1");
        rc = SOPHIA_EINVAL;
    }
    if (!rc && (!st->prefix || !st->dashboard || !st->default_key ||
                !st->default_table || !st->offset_field ||
                !st->partition_field ||
                pu_table_init(&st->marks, (size_t)max, free)))
        rc = SOPHIA_ENOMEM;
    if (!rc)
        rc = parse_keys(st, opts);
    if (rc) {
        sf_fini(st);
        return rc;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ------------------------------------------------------------ rows */

static const char *key_cols(const sf_state *st, const char *table)
{
    for (size_t i = 0; i < st->nkeys; i++)
        if (!strcasecmp(st->keys[i].table, table))
            return st->keys[i].cols;
    return *st->default_key ? st->default_key : NULL;
}

/* Scalar column value as text (for keys). */
static int col_text(const sophia_host *h, const sophia_json *row,
                    const char *col, char *out, size_t len)
{
    const sophia_json *v = h->json_get(row, col);
    switch (h->json_type(v)) {
    case SOPHIA_JSON_STRING:
        snprintf(out, len, "%s", h->json_string(v));
        return 0;
    case SOPHIA_JSON_NUMBER:
        snprintf(out, len, "%.17g", h->json_number(v, 0));
        return 0;
    case SOPHIA_JSON_BOOL:
        snprintf(out, len, "%s", h->json_bool(v, 0) ? "true" : "false");
        return 0;
    default:
        return -1;
    }
}

/* "<prefix><table>:<v1>:<v2>" from the key columns, or the ROW_ID. */
static int row_key(const sf_state *st, const char *table,
                   const sophia_json *row, char *out, size_t len)
{
    const sophia_host *h = st->host;
    const char *cols = key_cols(st, table);
    size_t off = (size_t)snprintf(out, len, "%s%s", st->prefix, table);
    if (!cols) {
        const char *rid = pu_str(h, row, MD_ROWID);
        if (!rid)
            return -1;
        snprintf(out + off, len - off, ":%s", rid);
        return 0;
    }
    for (const char *p = cols; *p && off < len;) {
        size_t n = strcspn(p, ",");
        char col[128], val[256];
        snprintf(col, sizeof(col), "%.*s", (int)n, p);
        if (col_text(h, row, col, val, sizeof(val)))
            return -1;
        off += (size_t)snprintf(out + off, len - off, ":%s", val);
        p += n + (p[n] == ',');
    }
    return off < len ? 0 : -1;
}

/* The row without its METADATA$ columns and the reader's offset and
 * partition (they describe the feed, not the row). */
static sophia_json *row_data(const sf_state *st, const sophia_json *row)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    const sophia_json *v;
    const char *k;
    for (size_t i = 0; d && (k = h->json_key_at(row, i, &v)); i++)
        if (strncmp(k, "METADATA$", 9) && strcmp(k, st->offset_field) &&
            strcmp(k, st->partition_field))
            pu_set(h, d, k, h->json_copy(v));
    return d;
}

static int is_update(const sophia_host *h, const sophia_json *row)
{
    const sophia_json *u = h->json_get(row, MD_UPDATE);
    const char *s = h->json_string(u);
    return h->json_bool(u, 0) || (s && !strcasecmp(s, "true"));
}

/* ------------------------------------------------------------ offsets */

/* The row's offset: a non-negative integer, or its decimal text. */
static int row_offset(const sf_state *st, const sophia_json *row,
                      uint64_t *out)
{
    const sophia_host *h = st->host;
    const sophia_json *v = h->json_get(row, st->offset_field);
    const char *s = h->json_string(v);
    char *end;
    if (h->json_type(v) == SOPHIA_JSON_NUMBER) {
        double d = h->json_number(v, -1);
        if (d < 0 || d > 9007199254740992.0 || d != (double)(uint64_t)d)
            return -1;
        *out = (uint64_t)d;
        return 0;
    }
    if (!s || !*s || *s < '0' || *s > '9')
        return -1;
    *out = strtoull(s, &end, 10);
    return *end ? -1 : 0;
}

/* "<table>" or "<table>#<partition>": what one mark covers. */
static void row_scope(const sf_state *st, const char *table,
                      const sophia_json *row, char *out, size_t len)
{
    char part[128];
    if (*st->partition_field &&
        !col_text(st->host, row, st->partition_field, part, sizeof(part)))
        snprintf(out, len, "%s#%s", table, part);
    else
        snprintf(out, len, "%s", table);
}

static sf_pending *pending_of(sf_state *st, const char *scope)
{
    for (size_t i = 0; i < st->npending; i++)
        if (!strcmp(st->pending[i].scope, scope))
            return &st->pending[i];
    return NULL;
}

/* Checks row `i`'s offset against its scope's mark (committed, or moved
 * earlier in this batch) and moves the batch's mark past it: 1 for a new
 * row, 0 for a redelivery, or an error (logged: which row, which field). */
static int take_offset(sf_state *st, const char *table, size_t i,
                       const sophia_json *row)
{
    const sophia_host *h = st->host;
    char scope[400];
    uint64_t off;
    if (!*st->offset_field)
        return 1;
    if (row_offset(st, row, &off)) {
        h->log(st->self, SOPHIA_LOG_WARN, "row %zu of %s: no offset in '%s' "
               "(a non-negative integer or its decimal text)", i, table,
               st->offset_field);
        return SOPHIA_EINVAL;
    }
    row_scope(st, table, row, scope, sizeof(scope));
    sf_pending *p = pending_of(st, scope);
    const uint64_t *mark = pu_table_get(&st->marks, scope);
    if ((p && off <= p->off) || (!p && mark && off <= *mark))
        return 0;
    if (p) {
        p->off = off;
        return 1;
    }
    if (st->npending == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 8;
        sf_pending *v = realloc(st->pending, cap * sizeof(*v));
        if (!v)
            return SOPHIA_ENOMEM;
        st->pending = v;
        st->cap = cap;
    }
    if (!(st->pending[st->npending].scope = pu_strdup(scope)))
        return SOPHIA_ENOMEM;
    st->pending[st->npending++].off = off;
    return 1;
}

static void mark_apply(void *state, void *change)
{
    sf_state *st = state;
    sf_mark_change *c = change;
    uint64_t *m = pu_table_get(&st->marks, c->scope);
    if (m) {
        if (c->off > *m)
            *m = c->off;
    } else if ((m = malloc(sizeof(*m)))) {
        *m = c->off;
        if (st->marks.n == st->marks.max)
            st->host->counter_add(st->self, "scopes_evicted", 1);
        pu_table_put(&st->marks, c->scope, m); /* takes m */
    }
    free(c);
}

/* Stages the batch's marks (all of them, or none on an error) and
 * forgets them: 0, or why the batch must be retried. */
static int stage_marks(sf_state *st, sophia_ctx *ctx, int ok)
{
    int rc = 0;
    for (size_t i = 0; i < st->npending; i++) {
        size_t n = strlen(st->pending[i].scope) + 1;
        sf_mark_change *c = ok && !rc ? malloc(sizeof(*c) + n) : NULL;
        if (ok && !rc && !c)
            rc = SOPHIA_ENOMEM;
        if (c) {
            c->off = st->pending[i].off;
            memcpy(c->scope, st->pending[i].scope, n);
            rc = st->host->stage(ctx, mark_apply, free, c);
        }
        free(st->pending[i].scope);
    }
    st->npending = 0;
    return rc;
}

/* ------------------------------------------------------------ effects */

static int publish_change(const sf_state *st, sophia_ctx *ctx,
                          const char *table, const char *key,
                          const char *action, sophia_json *row,
                          sophia_json *prev, const char *prev_key)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    size_t skip = strlen(st->prefix) + strlen(table) + 1;
    pu_set_str(h, d, "kind", "snowflake_change");
    pu_set_str(h, d, "table", table);
    pu_set_str(h, d, "key", key + skip);
    pu_set_str(h, d, "cache_key", key);
    pu_set_str(h, d, "action", action);
    if (row)
        pu_set(h, d, "row", row);
    if (prev)
        pu_set(h, d, "previous", prev);
    if (prev_key)
        pu_set_str(h, d, "previous_key", prev_key + skip);
    return d ? h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, st->dashboard, d)
             : SOPHIA_ENOMEM;
}

/* Applies one change; `old` is the old image of an update (borrowed). */
static int apply_row(sf_state *st, sophia_ctx *ctx, const char *table,
                     const sophia_json *row, const char *action,
                     const sophia_json *old, int *applied)
{
    const sophia_host *h = st->host;
    char key[600], old_key[600], tag[300];
    sophia_json *data = row_data(st, row);
    if (!data || row_key(st, table, row, key, sizeof(key)) ||
        (old && row_key(st, table, old, old_key, sizeof(old_key)))) {
        h->json_free(data);
        return data ? SOPHIA_EINVAL : SOPHIA_ENOMEM;
    }
    int moved = old && strcmp(key, old_key); /* the key columns changed */
    snprintf(tag, sizeof(tag), "table:%s", table);
    const char *tags[] = {"snowflake", tag, NULL};
    int rc;
    if (!strcmp(action, "delete"))
        rc = h->cache_invalidate(ctx, key);
    else if (!(rc = moved ? h->cache_invalidate(ctx, old_key) : 0))
        rc = h->cache_put(ctx, key, h->json_copy(data), st->ttl, tags);
    if (rc) {
        h->json_free(data);
        return rc;
    }
    if (moved)
        h->counter_add(st->self, "key_changes", 1);
    rc = publish_change(st, ctx, table, key, action, data,
                        old ? row_data(st, old) : NULL, moved ? old_key : NULL);
    if (!rc)
        (*applied)++;
    return rc;
}

/* Index of the INSERT half of an update pair for `rid` after row i. */
static size_t pair_of(const sophia_host *h, const sophia_json *rows, size_t i,
                      const char *rid)
{
    for (size_t k = i + 1; k < h->json_size(rows); k++) {
        const sophia_json *r = h->json_at(rows, k);
        const char *a = pu_str(h, r, MD_ACTION), *id = pu_str(h, r, MD_ROWID);
        if (a && id && !strcasecmp(a, "INSERT") && !strcmp(id, rid) &&
            is_update(h, r))
            return k;
    }
    return (size_t)-1;
}

/* Row i: a redelivery is skipped, an update's DELETE half is held for
 * its INSERT half (prev), the rest applied. */
static int apply_one(sf_state *st, sophia_ctx *ctx, const char *table,
                     const sophia_json *rows, size_t i,
                     const sophia_json **prev, int *applied)
{
    const sophia_host *h = st->host;
    const sophia_json *row = h->json_at(rows, i);
    const char *a = pu_str(h, row, MD_ACTION);
    const char *rid = pu_str(h, row, MD_ROWID);
    if (!a || !rid || h->json_type(row) != SOPHIA_JSON_OBJECT ||
        (strcasecmp(a, "DELETE") && strcasecmp(a, "INSERT")))
        return SOPHIA_EINVAL;
    int fresh = take_offset(st, table, i, row);
    if (fresh <= 0) {
        if (fresh == 0)
            h->counter_add(st->self, "duplicates", 1);
        return fresh;
    }
    if (!strcasecmp(a, "DELETE") && is_update(h, row)) {
        size_t k = pair_of(h, rows, i, rid);
        if (k != (size_t)-1) /* the INSERT half applies the update */
            prev[k] = row;
        return 0;
    }
    if (!strcasecmp(a, "DELETE"))
        return apply_row(st, ctx, table, row, "delete", NULL, applied);
    return apply_row(st, ctx, table, row, is_update(h, row) ? "update"
                                                            : "insert",
                     prev[i], applied);
}

static int apply_rows(sf_state *st, sophia_ctx *ctx, const char *table,
                      const sophia_json *rows, int *applied)
{
    const sophia_host *h = st->host;
    size_t n = h->json_size(rows);
    const sophia_json **prev = calloc(n ? n : 1, sizeof(*prev));
    int rc = prev ? 0 : SOPHIA_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++)
        rc = apply_one(st, ctx, table, rows, i, prev, applied);
    free(prev);
    return rc;
}

static sophia_verdict sf_process(void *state, const sophia_event *ev,
                                 sophia_ctx *ctx)
{
    sf_state *st = state;
    const sophia_host *h = st->host;
    const sophia_json *rows = h->json_get(ev->body, "rows");
    const char *table = pu_str(h, ev->body, "table");
    if (!table && *st->default_table)
        table = st->default_table;
    sophia_json *single = NULL;
    if (!rows && h->json_get(ev->body, MD_ACTION)) {
        single = h->json_array();
        if (single)
            h->json_append(single, h->json_copy(ev->body));
        rows = single;
    }
    if (!table || h->json_type(rows) != SOPHIA_JSON_ARRAY) {
        h->log(st->self, SOPHIA_LOG_WARN, "not a Snowflake stream batch "
               "(needs table and rows[] with METADATA$ACTION)");
        if (single)
            h->json_free(single);
        return SOPHIA_PROCESS_ERROR;
    }
    int applied = 0;
    int rc = apply_rows(st, ctx, table, rows, &applied);
    if (single)
        h->json_free(single);
    /* staging the marks: no memory is worth a retry */
    if (stage_marks(st, ctx, !rc))
        return SOPHIA_PROCESS_RETRY;
    if (rc) {
        h->log(st->self, SOPHIA_LOG_WARN, "bad Snowflake batch for %s: %s "
               "(a row lacks METADATA$ACTION/ROW_ID, its offset or a key "
               "column)", table, h->strerror(rc));
        return SOPHIA_PROCESS_ERROR;
    }
    h->counter_add(st->self, "rows_applied", applied);
    return SOPHIA_PROCESS_OK;
}

/* --------------------------------------------- hot reload hand-over */

/* {"format":2,"marks":[{"scope","offset":"<decimal>"}]}, oldest first
 * (eviction order survives): the committed marks. Decimal text: the SDK
 * reads numbers as doubles. */
static char *sf_export(void *state)
{
    sf_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *doc = h->json_object(), *marks = h->json_array();
    char buf[32];
    for (const pu_entry *e = st->marks.oldest; marks && e; e = e->newer) {
        sophia_json *o = h->json_object();
        snprintf(buf, sizeof(buf), "%llu",
                 (unsigned long long)*(const uint64_t *)e->val);
        pu_set_str(h, o, "scope", e->key);
        pu_set_str(h, o, "offset", buf);
        if (!o || h->json_append(marks, o)) {
            h->json_free(marks);
            marks = NULL;
        }
    }
    pu_set(h, doc, "format", h->json_int(2));
    return pu_export_text(h, doc, pu_set(h, doc, "marks", marks));
}

static int import_marks(sf_state *st, const sophia_json *marks)
{
    const sophia_host *h = st->host;
    for (size_t i = 0; i < h->json_size(marks); i++) {
        const sophia_json *o = h->json_at(marks, i);
        const char *scope = pu_str(h, o, "scope");
        const char *off = pu_str(h, o, "offset");
        char *end;
        uint64_t *m = scope && off ? malloc(sizeof(*m)) : NULL;
        if (!m)
            return scope && off ? SOPHIA_ENOMEM : SOPHIA_EPARSE;
        *m = strtoull(off, &end, 10);
        if (*end || !*off) {
            free(m);
            return SOPHIA_EPARSE;
        }
        if (pu_table_put(&st->marks, scope, m))
            return SOPHIA_ENOMEM;
    }
    return 0;
}

static int sf_import(void *state, const char *json)
{
    sf_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI;
    sophia_json *doc = h->json_parse(json);
    double format = h->json_number(h->json_get(doc, "format"), 0);
    const sophia_json *marks = h->json_get(doc, "marks");
    int rc = SOPHIA_EPARSE;
    if (doc && format == 1) { /* 1.1.0's content set: nothing to carry */
        h->log(st->self, SOPHIA_LOG_INFO, "reload from a content-deduped "
               "snowflake (format 1): no offsets to carry");
        rc = 0;
    } else if (doc && format == 2 &&
               h->json_type(marks) == SOPHIA_JSON_ARRAY) {
        rc = import_marks(st, marks);
    }
    h->json_free(doc);
    return rc;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option sf_options[] = {
    {"dashboard", SOPHIA_OPT_STRING, "data",
     "dashboard that receives a `data` update per applied change"},
    {"cache_prefix", SOPHIA_OPT_STRING, "sf:",
     "cache keys: <prefix><table>:<key values joined by ':'>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "0",
     "seconds cached rows live (<= 0: the tier's default)"},
    {"keys", SOPHIA_OPT_LIST, NULL,
     "key columns per table: entries 'TABLE=COL1,COL2'"},
    {"default_key", SOPHIA_OPT_STRING, "",
     "key columns for tables not in `keys` (\"\": METADATA$ROW_ID)"},
    {"default_table", SOPHIA_OPT_STRING, "",
     "table for events that do not name one"},
    {"offset_field", SOPHIA_OPT_STRING, "_offset",
     "dotted path of each row's feed offset (increasing per table, or per "
     "table and partition); a row at or below the committed mark is a "
     "redelivery (\"\": no marks, every row applies)"},
    {"partition_field", SOPHIA_OPT_STRING, "",
     "dotted path of the row's partition: offsets increase per table and "
     "partition (\"\": per table)"},
    {"max_scopes", SOPHIA_OPT_INT, "10000",
     "tables (x partitions) whose offset mark is kept; the oldest goes "
     "first"},
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "ignored since 1.2.0 (redelivery is recognised by offset_field, not "
     "by a set of changes); accepted so older configurations still load"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops sf_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = sf_process,
    .export_state = sf_export,
    .import_state = sf_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "snowflake",
    .version = "1.2.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Snowflake stream rows -> cache upserts/deletes and data "
                   "updates, idempotent by the feed's offset",
    .options = sf_options,
    .init = sf_init,
    .fini = sf_fini,
    .processor = &sf_ops,
};
