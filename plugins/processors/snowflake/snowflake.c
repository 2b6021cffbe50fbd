/*
 * snowflake - the processor for rows read from a Snowflake stream (CDC).
 *
 * An event is {"table": T, "rows": [...]} (or one row carrying "table"),
 * each row holding its columns plus METADATA$ACTION (INSERT / DELETE),
 * METADATA$ISUPDATE and METADATA$ROW_ID. Snowflake reports an update as
 * a DELETE of the old image and an INSERT of the new one, both with
 * ISUPDATE true and the same ROW_ID; this processor pairs them (within
 * the event) and applies:
 *   INSERT             -> cache put, `data` update action "insert"
 *   DELETE+INSERT pair -> cache put, action "update" with "previous"
 *   DELETE             -> cache invalidate, action "delete"
 * Cache keys are `<prefix><table>:<key>`, where <key> joins the values
 * of the table's key columns (`keys` option, "TABLE=COL1,COL2"), else
 * of `default_key`, else the ROW_ID; entries are tagged `snowflake` and
 * `table:<table>`.
 *
 * Idempotency: a change is identified by ROW_ID, action and the row's
 * column values; the instance remembers the last `max_seen` identities
 * and skips a change it has already applied, so a redelivered batch
 * (Redis Streams are at-least-once) publishes and writes nothing twice.
 * A change repeated within one batch is applied once too.
 *
 * State and the verdict (SDK 1.1): an identity is remembered through
 * host->stage, so only when the event's effects commit - not merely when
 * process() returns OK. A batch that goes ERROR, or whose effects are
 * refused, leaves nothing remembered and its redelivery applies every
 * change. The identity's column fingerprint is unkeyed FNV-1a (pu_fnv) so
 * that it is the same in the instance a reload hands the set to
 * (export_state/import_state carry the committed identities).
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

typedef struct sf_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *default_key, *default_table;
    double ttl;
    sf_keys *keys;
    size_t nkeys;
    pu_seen seen;  /* change identities committed */
    char **pending; /* identities staged by the event in progress */
    size_t npending, cap;
} sf_state;

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
    pu_seen_free(&st->seen);
    free(st->prefix);
    free(st->dashboard);
    free(st->default_key);
    free(st->default_table);
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
    st->ttl = host->opt_double(opts, "ttl");
    int64_t max = host->opt_int(opts, "max_seen");
    int rc = max < 1 ? SOPHIA_EINVAL : 0;
    if (!rc && (!st->prefix || !st->dashboard || !st->default_key ||
                !st->default_table || pu_seen_init(&st->seen, (size_t)max)))
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

/* The row without its METADATA$ columns. */
static sophia_json *row_data(const sophia_host *h, const sophia_json *row)
{
    sophia_json *d = h->json_object();
    const sophia_json *v;
    const char *k;
    for (size_t i = 0; d && (k = h->json_key_at(row, i, &v)); i++)
        if (strncmp(k, "METADATA$", 9))
            pu_set(h, d, k, h->json_copy(v));
    return d;
}

/* Identity of a change: ROW_ID, action and column values. */
static void change_id(const sophia_host *h, const char *table,
                      const char *rid, const char *action,
                      const sophia_json *data, char *out, size_t len)
{
    char *s = h->json_dump(data);
    uint64_t a = pu_fnv(s ? s : "", s ? strlen(s) : 0);
    h->free(s);
    snprintf(out, len, "%s|%s|%s|%016llx", table, rid, action,
             (unsigned long long)a);
}

static int is_update(const sophia_host *h, const sophia_json *row)
{
    const sophia_json *u = h->json_get(row, MD_UPDATE);
    const char *s = h->json_string(u);
    return h->json_bool(u, 0) || (s && !strcasecmp(s, "true"));
}

/* ------------------------------------------------------------ effects */

static int publish_change(const sf_state *st, sophia_ctx *ctx,
                          const char *table, const char *key,
                          const char *action, sophia_json *row,
                          sophia_json *prev)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "snowflake_change");
    pu_set_str(h, d, "table", table);
    pu_set_str(h, d, "key", key + strlen(st->prefix) + strlen(table) + 1);
    pu_set_str(h, d, "cache_key", key);
    pu_set_str(h, d, "action", action);
    if (row)
        pu_set(h, d, "row", row);
    if (prev)
        pu_set(h, d, "previous", prev);
    return d ? h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, st->dashboard, d)
             : SOPHIA_ENOMEM;
}

/* Applies one change; `prev` (taken) is the old image of an update. */
static int apply_row(sf_state *st, sophia_ctx *ctx, const char *table,
                     const sophia_json *row, const char *action,
                     sophia_json *prev, int *applied)
{
    const sophia_host *h = st->host;
    char key[600], id[700], tag[300];
    const char *rid = pu_str(h, row, MD_ROWID);
    sophia_json *data = row_data(h, row);
    if (!rid || !data || row_key(st, table, row, key, sizeof(key))) {
        h->json_free(data);
        h->json_free(prev);
        return SOPHIA_EINVAL;
    }
    change_id(h, table, rid, action, data, id, sizeof(id));
    int again = 0; /* already in this batch */
    for (size_t i = 0; i < st->npending && !again; i++)
        again = !strcmp(st->pending[i], id);
    if (again || pu_seen_has(&st->seen, id)) { /* a redelivery */
        h->json_free(data);
        h->json_free(prev);
        h->counter_add(st->self, "duplicates", 1);
        return 0;
    }
    int rc;
    snprintf(tag, sizeof(tag), "table:%s", table);
    const char *tags[] = {"snowflake", tag, NULL};
    if (!strcmp(action, "delete")) {
        rc = h->cache_invalidate(ctx, key);
        if (!rc)
            rc = publish_change(st, ctx, table, key, action, data, NULL);
        else
            h->json_free(data);
    } else {
        rc = h->cache_put(ctx, key, h->json_copy(data), st->ttl, tags);
        if (!rc)
            rc = publish_change(st, ctx, table, key, action, data, prev);
        else {
            h->json_free(data);
            h->json_free(prev);
        }
        prev = NULL;
    }
    if (prev)
        h->json_free(prev);
    if (!rc) { /* remembered only once the whole event commits */
        if (st->npending == st->cap) {
            size_t cap = st->cap ? st->cap * 2 : 16;
            char **v = realloc(st->pending, cap * sizeof(*v));
            if (!v)
                return SOPHIA_ENOMEM;
            st->pending = v;
            st->cap = cap;
        }
        if (!(st->pending[st->npending] = pu_strdup(id)))
            return SOPHIA_ENOMEM;
        st->npending++;
        (*applied)++;
    }
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

static int apply_rows(sf_state *st, sophia_ctx *ctx, const char *table,
                      const sophia_json *rows, int *applied)
{
    const sophia_host *h = st->host;
    size_t n = h->json_size(rows);
    const sophia_json **prev = calloc(n ? n : 1, sizeof(*prev));
    int rc = prev ? 0 : SOPHIA_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        const sophia_json *row = h->json_at(rows, i);
        const char *a = pu_str(h, row, MD_ACTION);
        const char *rid = pu_str(h, row, MD_ROWID);
        if (!a || !rid || h->json_type(row) != SOPHIA_JSON_OBJECT) {
            rc = SOPHIA_EINVAL;
        } else if (!strcasecmp(a, "DELETE") && is_update(h, row)) {
            size_t k = pair_of(h, rows, i, rid);
            if (k != (size_t)-1) /* the INSERT half applies the update */
                prev[k] = row;
        } else if (!strcasecmp(a, "DELETE")) {
            rc = apply_row(st, ctx, table, row, "delete", NULL, applied);
        } else if (!strcasecmp(a, "INSERT")) {
            int upd = is_update(h, row);
            rc = apply_row(st, ctx, table, row, upd ? "update" : "insert",
                           prev[i] ? row_data(h, prev[i]) : NULL, applied);
        } else {
            rc = SOPHIA_EINVAL;
        }
    }
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
    int src = 0; /* staging the identities: no memory is worth a retry */
    for (size_t i = 0; i < st->npending; i++) {
        if (!rc && !src)
            src = pu_seen_stage(h, ctx, &st->seen, st->pending[i]);
        free(st->pending[i]);
    }
    st->npending = 0;
    if (src)
        return SOPHIA_PROCESS_RETRY;
    if (rc) {
        h->log(st->self, SOPHIA_LOG_WARN, "bad Snowflake batch for %s: %s "
               "(a row lacks METADATA$ACTION/ROW_ID or a key column)",
               table, h->strerror(rc));
        return SOPHIA_PROCESS_ERROR;
    }
    h->counter_add(st->self, "rows_applied", applied);
    return SOPHIA_PROCESS_OK;
}

/* --------------------------------------------- hot reload hand-over */

/* {"format":1,"seen":pu_seen_export}: the committed identities. */
static char *sf_export(void *state)
{
    sf_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *doc = h->json_object();
    pu_set(h, doc, "format", h->json_int(1));
    int rc = pu_set(h, doc, "seen", pu_seen_export(h, &st->seen));
    return pu_export_text(h, doc, rc);
}

static int sf_import(void *state, const char *json)
{
    sf_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI;
    sophia_json *doc = h->json_parse(json);
    const sophia_json *seen = h->json_get(doc, "seen");
    int rc = !doc || h->json_number(h->json_get(doc, "format"), 0) != 1 ||
                     h->json_type(seen) != SOPHIA_JSON_OBJECT
                 ? SOPHIA_EPARSE
                 : pu_seen_import(h, &st->seen, seen);
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
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "applied changes remembered to skip redeliveries"},
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
    .version = "1.1.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Snowflake stream rows -> cache upserts/deletes and data "
                   "updates, idempotent by ROW_ID",
    .options = sf_options,
    .init = sf_init,
    .fini = sf_fini,
    .processor = &sf_ops,
};
