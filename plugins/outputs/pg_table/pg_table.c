/*
 * pg_table - an output plugin (SDK 1.2): inserts each batch of records
 * into a PostgreSQL table in one statement, on the host's connection to
 * `url` (empty: the daemon's postgres.url):
 *
 *   INSERT INTO <table> (type, stream, event_id, received_at, record)
 *   SELECT r->>'type', coalesce(r->>'stream', ''),
 *          coalesce(r->>'id', r->>'event_id'),
 *          to_timestamp((r->>'received_ms')::float8 / 1000), r
 *   FROM jsonb_array_elements($1::jsonb) AS r
 *
 * with the batch's JSON array as its one parameter: a multi-row insert
 * that commits or fails as a whole. With `create` (the default) the table
 * is created when missing, before the first insert:
 *
 *   id bigserial primary key, type text not null, stream text not null,
 *   event_id text, received_at timestamptz, record jsonb not null,
 *   inserted_at timestamptz not null default now()
 *
 * An alert raised outside an event has no stream: its row's stream is ''.
 *
 * PostgreSQL down, a dropped connection, or a server error another try
 * may cure (by SQLSTATE: a serialization failure, a deadlock, a
 * statement_timeout, too many connections, a full disk - host->pg_query
 * says EUNAVAIL) make the host deliver the batch again after a back-off
 * (the events wait, unacknowledged); an error the statement would repeat
 * (no such table, a constraint, bad data) is a refusal for good: the
 * events are retried by their stream and dead-lettered. A
 * batch whose commit's answer was lost is inserted again: rows are at
 * least once (stream and event_id tell copies apart).
 *
 * Everything goes through the host table: the plugin includes
 * <sophia/sdk.h> and libc, and links nothing.
 */
#include <sophia/sdk.h>

#include "../output_batching.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pt_state {
    const sophia_host *host;
    sophia_self *self;
    const char *url; /* NULL: the daemon's postgres.url */
    char table[130];
    int create;
    int created;     /* the CREATE went through once */
    char *create_sql, *insert_sql;
    sophia_output_params params;
} pt_state;

typedef struct pt_run {
    pt_state *st;
    sophia_output_call *call;
    size_t waiting; /* answers not in yet, plus one while sending */
    int rc;
} pt_run;

static const sophia_option pt_options[] = {
    {"table", SOPHIA_OPT_STRING, NULL,
     "table (or schema.table) the records go to: letters, digits, _"},
    {"url", SOPHIA_OPT_STRING, "", "postgresql://... ; empty = postgres.url"},
    {"create", SOPHIA_OPT_BOOL, "true", "create the table when missing"},
    SOPHIA_OUTPUT_BATCH_OPTIONS,
    {NULL, 0, NULL, NULL},
};

/* [A-Za-z_][A-Za-z0-9_]*, optionally twice around one dot: a name safe
 * to put in SQL as it is (no quoting games). */
static int pt_valid_name(const char *s)
{
    int start = 1, dots = 0;
    if (!*s || strlen(s) > 127)
        return 0;
    for (; *s; s++) {
        int alpha = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                    *s == '_';
        int digit = *s >= '0' && *s <= '9';
        if (*s == '.' && !start && !dots++) {
            start = 1;
            continue;
        }
        if (!(alpha || (digit && !start)))
            return 0;
        start = 0;
    }
    return !start;
}

static char *pt_sql(const char *fmt, const char *table)
{
    size_t n = strlen(fmt) + strlen(table) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, table);
    return s;
}

static void pt_fini(void *state)
{
    pt_state *st = state;
    if (st) {
        free(st->create_sql);
        free(st->insert_sql);
    }
    free(st);
}

static int pt_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    if (host->abi_major != SOPHIA_SDK_VERSION_MAJOR ||
        !SOPHIA_HOST_HAS(host, pg_query))
        return SOPHIA_EABI;
    const char *table = host->opt_string(opts, "table");
    if (!table || !pt_valid_name(table)) {
        host->log(self, SOPHIA_LOG_ERROR,
                  "table '%s' is not a plain name or schema.name",
                  table ? table : "");
        return SOPHIA_EINVAL;
    }
    pt_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    const char *url = host->opt_string(opts, "url");
    st->url = url && *url ? url : NULL;
    snprintf(st->table, sizeof(st->table), "%s", table);
    st->create = host->opt_bool(opts, "create");
    st->create_sql = pt_sql(
        "CREATE TABLE IF NOT EXISTS %s (id bigserial PRIMARY KEY, "
        "type text NOT NULL, stream text NOT NULL, event_id text, "
        "received_at timestamptz, record jsonb NOT NULL, "
        "inserted_at timestamptz NOT NULL DEFAULT now())", table);
    st->insert_sql = pt_sql(
        "INSERT INTO %s (type, stream, event_id, received_at, record) "
        "SELECT r->>'type', coalesce(r->>'stream', ''), " /* '': no stream */
        "coalesce(r->>'id', r->>'event_id'), "
        "to_timestamp((r->>'received_ms')::float8 / 1000), r "
        "FROM jsonb_array_elements($1::jsonb) AS r", table);
    if (!st->create_sql || !st->insert_sql) {
        pt_fini(st);
        return SOPHIA_ENOMEM;
    }
    if (output_batching_read(host, self, opts, &st->params) != SOPHIA_OK) {
        pt_fini(st);
        return SOPHIA_EINVAL;
    }
    *state = st;
    return SOPHIA_OK;
}

static void pt_params(void *state, sophia_output_params *p)
{
    output_batching_apply(&((const pt_state *)state)->params, p);
}

static void pt_settle(pt_run *r)
{
    if (--r->waiting)
        return;
    if (!r->rc)
        r->st->created = 1;
    r->st->host->output_done(r->call, r->rc);
    free(r);
}

static void pt_answer(void *arg, int rc, int64_t rows, const char *err)
{
    pt_run *r = arg;
    (void)rows;
    if (rc) {
        r->st->host->log(r->st->self, SOPHIA_LOG_WARN, "%s: %s", r->st->table,
                         err ? err : r->st->host->strerror(rc));
        /* EIO: an error the statement would repeat (data, integrity):
         * for good. EUNAVAIL (down, or a serialization failure, deadlock,
         * timeout - the host reads the SQLSTATE): the batch goes again. */
        if (!r->rc)
            r->rc = rc == SOPHIA_EIO ? SOPHIA_EINVAL : rc;
    }
    pt_settle(r);
}

static void pt_send(pt_run *r, const char *sql, int n, const char *const *v)
{
    if (r->rc)
        return;
    int rc = r->st->host->pg_query(r->st->self, r->st->url, sql, n, v,
                                   pt_answer, r);
    if (rc)
        r->rc = rc;
    else
        r->waiting++;
}

static void pt_deliver(void *state, const sophia_output_batch *b,
                       sophia_output_call *call)
{
    pt_state *st = state;
    pt_run *r = calloc(1, sizeof(*r));
    if (!r) {
        st->host->output_done(call, SOPHIA_ENOMEM);
        return;
    }
    *r = (pt_run){.st = st, .call = call, .waiting = 1};
    /* One connection runs its queries in order: the CREATE is done
     * before the INSERT starts. */
    if (st->create && !st->created)
        pt_send(r, st->create_sql, 0, NULL);
    const char *const params[] = {b->json};
    pt_send(r, st->insert_sql, 1, params);
    pt_settle(r); /* the hold taken above */
}

static const sophia_output_ops pt_ops = {
    .struct_size = sizeof(sophia_output_ops),
    .deliver = pt_deliver,
    .params = pt_params,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "pg_table",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_OUTPUT,
    .description = "INSERT processed events and alerts into a PostgreSQL table",
    .options = pt_options,
    .init = pt_init,
    .fini = pt_fini,
    .output = &pt_ops,
};
