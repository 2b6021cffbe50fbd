/*
 * cache_l3 - see cache_l3.h for the versioning and retry rules.
 *
 * Each write is an op record holding its own copy of the parameters, so it
 * can be sent again after a lost connection without the caller's buffers.
 * An op that cannot even be re-queued (pg.c's queue is full of newer
 * writes) waits on a local list that a 100 ms timer drains.
 */
#include "cache/cache_l3.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sophia/sdk.h>

#include "lib/backoff.h"
#include "lib/dict.h"
#include "lib/log.h"
#include "event/loop.h"

#define L3_SWEEP_S 60
#define L3_RETRY_MS 100
#define L3_BACKOFF_MAX_S 10.0

static const char sql_get[] =
    "SELECT value, array_to_string(tags, chr(31)), "
    "COALESCE((extract(epoch FROM expires_at) * 1000)::bigint, 0) "
    "FROM sophia_cache WHERE key = $1 "
    "AND (expires_at IS NULL OR expires_at > now())";

#define UPSERT_TAIL                                                           \
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "               \
    "tags = EXCLUDED.tags, expires_at = EXCLUDED.expires_at, "                \
    "version = EXCLUDED.version, updated_at = now() "                         \
    "WHERE sophia_cache.version < EXCLUDED.version"

static const char sql_put[] =
    "INSERT INTO sophia_cache (key, value, tags, expires_at, version, "
    "updated_at) VALUES ($1, $2, $3::text[], CASE WHEN $4::bigint = 0 THEN "
    "NULL ELSE to_timestamp($4::bigint / 1000.0) END, $5::bigint, now())"
    UPSERT_TAIL;

/* A tombstone: ordered by version like any write, never served. */
static const char sql_del[] =
    "INSERT INTO sophia_cache (key, value, tags, expires_at, version, "
    "updated_at) VALUES ($1, '', '{}', to_timestamp(0), $2::bigint, now())"
    UPSERT_TAIL;

static const char sql_del_tag[] =
    "UPDATE sophia_cache SET value = '', tags = '{}', "
    "expires_at = to_timestamp(0), version = $2::bigint, updated_at = now() "
    "WHERE tags @> ARRAY[$1::text] AND version < $2::bigint "
    "AND (expires_at IS NULL OR expires_at > to_timestamp(0))";

static const char sql_sweep[] =
    "DELETE FROM sophia_cache WHERE expires_at < now() - interval '10 "
    "minutes'";

typedef enum { OP_PUT, OP_DEL, OP_DEL_TAG } op_kind;

static const char *const stmt_name[] = {"sophia_cache_put", "sophia_cache_del",
                                        "sophia_cache_del_tag"};
static const int stmt_nparams[] = {5, 2, 2};

typedef struct l3_op {
    struct l3_op *next; /* on the retry list */
    sophia_l3 *l3;
    op_kind kind;
    sophia_pg *pin; /* this connection; NULL = the key's (p[0]) */
    char *p[5]; /* parameters; p[1] of a put is the binary value */
    int len1;
    double backoff_s; /* last wait after a transient error; 0 = none yet */
    int64_t due_us;      /* on the delayed list: send again at (mono) */
    sophia_l3_done_cb cb;
    void *arg;
} l3_op;

struct sophia_l3 {
    sophia_pg_pool *pg;
    unsigned long long rng; /* back-off jitter */
    struct event *sweep_ev;
    struct event *retry_ev;
    l3_op *retry_head, *retry_tail;
    l3_op *delayed; /* backing off after a transient error, unordered */
    char err_state[6], err_msg[512]; /* the failing write's, for its cb */
    int closing;
    int64_t max_ttl_ms; /* cache.l3.ttl; 0 = none */
    sophia_dict *busy;  /* key -> writes not yet committed (count) */
    sophia_zstd *zstd;  /* cache.compress; NULL = plain */
    sophia_l3_stats st;
};

typedef struct l3_get {
    sophia_zstd *zstd;
    sophia_l3_get_cb cb;
    void *arg;
} l3_get;

char *sophia_l3_array_literal(const char *const *items)
{
    size_t n = 3;
    for (size_t i = 0; items && items[i]; i++)
        n += 2 * strlen(items[i]) + 3;
    char *s = malloc(n), *w = s;
    if (!s)
        return NULL;
    *w++ = '{';
    for (size_t i = 0; items && items[i]; i++) {
        if (i)
            *w++ = ',';
        *w++ = '"';
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                *w++ = '\\';
            *w++ = *c;
        }
        *w++ = '"';
    }
    *w++ = '}';
    *w = '\0';
    return s;
}

static void op_free(l3_op *op)
{
    for (int i = 0; i < 5; i++)
        free(op->p[i]);
    free(op);
}

static void on_write(void *arg, PGresult *res, const char *err);
static void arm_retry(sophia_l3 *l3);

static int op_send(l3_op *op)
{
    int formats[5] = {0, op->kind == OP_PUT, 0, 0, 0};
    int lengths[5] = {0, op->len1, 0, 0, 0};
    /* p[0] is the key: one key, one connection (a tag's ops are pinned). */
    sophia_pg *conn = op->pin ? op->pin
                              : sophia_pg_pool_pick(op->l3->pg, op->p[0]);
    return sophia_pg_query_prepared(conn, stmt_name[op->kind],
                                    stmt_nparams[op->kind],
                                    (const char *const *)op->p, lengths,
                                    formats, 0, on_write, op);
}

static void retry_later(sophia_l3 *l3, l3_op *op)
{
    op->next = NULL;
    if (l3->retry_tail)
        l3->retry_tail->next = op;
    else
        l3->retry_head = op;
    l3->retry_tail = op;
    evtimer_del(l3->retry_ev);
    arm_retry(l3);
}

/* Arms the retry timer for the earliest of: the retry list (100 ms) and
 * the first delayed op due. */
static void arm_retry(sophia_l3 *l3)
{
    int64_t now = sophia_now_mono_us(), wait = -1;
    if (l3->retry_head)
        wait = L3_RETRY_MS * 1000;
    for (l3_op *op = l3->delayed; op; op = op->next) {
        int64_t w = op->due_us > now ? op->due_us - now : 0;
        if (wait < 0 || w < wait)
            wait = w;
    }
    if (wait < 0)
        return;
    struct timeval tv = {(time_t)(wait / 1000000),
                         (suseconds_t)(wait % 1000000)};
    evtimer_add(l3->retry_ev, &tv);
}

/* Sends the delayed ops that are due; those pg.c cannot take yet join the
 * retry list. */
static void send_due(sophia_l3 *l3)
{
    int64_t now = sophia_now_mono_us();
    l3_op **pp = &l3->delayed;
    while (*pp) {
        l3_op *op = *pp;
        if (op->due_us > now) {
            pp = &op->next;
            continue;
        }
        *pp = op->next;
        if (op_send(op) != 0)
            retry_later(l3, op);
    }
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_l3 *l3 = arg;
    while (l3->retry_head) {
        l3_op *op = l3->retry_head;
        if (op_send(op) != 0) /* still full: keep order, try later */
            break;
        l3->retry_head = op->next;
        if (!l3->retry_head)
            l3->retry_tail = NULL;
    }
    send_due(l3);
    arm_retry(l3);
}

/* A transient server error: send again after a growing, jittered wait
 * (lib/backoff.h), so the ops a failover refused do not return at once. */
static void back_off(sophia_l3 *l3, l3_op *op)
{
    op->backoff_s = sophia_backoff_decorrelated(L3_RETRY_MS / 1000.0,
                                                L3_BACKOFF_MAX_S, op->backoff_s,
                                                sophia_backoff_rand(&l3->rng));
    op->due_us = sophia_now_mono_us() + (int64_t)(op->backoff_s * 1e6);
    op->next = l3->delayed;
    l3->delayed = op;
    l3->st.backoffs++;
    evtimer_del(l3->retry_ev);
    arm_retry(l3);
}

int sophia_l3_sqlstate_permanent(const char *st)
{
    static const char *const permanent[] = {"22", "23", "42", "54"};
    if (!st || strlen(st) != 5)
        return 1;
    for (size_t i = 0; i < sizeof(permanent) / sizeof(permanent[0]); i++)
        if (!strncmp(st, permanent[i], 2))
            return 1;
    return 0;
}

const char *sophia_l3_last_error(const sophia_l3 *l3, const char **sqlstate)
{
    if (sqlstate)
        *sqlstate = l3->err_state;
    return l3->err_msg;
}

/* Counts a key's uncommitted writes: a read of a busy key must queue on
 * the key's connection, behind them; any other read may go to the least
 * busy connection (at low load, always the same warm one). */
static void busy_add(sophia_l3 *l3, const char *key, int d)
{
    uintptr_t n = (uintptr_t)sophia_dict_get(l3->busy, key);
    n = d > 0 ? n + 1 : n - 1;
    if (n)
        sophia_dict_set(l3->busy, key, (void *)n);
    else
        sophia_dict_del(l3->busy, key);
}

static void op_finish(l3_op *op, int rc)
{
    sophia_l3 *l3 = op->l3;
    l3->st.pending--;
    if (op->kind != OP_DEL_TAG)
        busy_add(l3, op->p[0], -1);
    if (op->cb)
        op->cb(op->arg, rc);
    op_free(op);
}

static void on_write(void *arg, PGresult *res, const char *err)
{
    l3_op *op = arg;
    sophia_l3 *l3 = op->l3;
    if (!res && !l3->closing) { /* lost with the connection: send again */
        l3->st.retries++;
        if (op_send(op) != 0)
            retry_later(l3, op);
        return;
    }
    if (err) {
        char q[600];
        const char *st =
            res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (res && !l3->closing && !sophia_l3_sqlstate_permanent(st)) {
            sophia_warn("cache", "msg=\"L3 write failed, will retry\" "
                        "key=%s sqlstate=%s err=%s", op->p[0], st,
                        sophia_log_quote(err, q, sizeof(q)));
            back_off(l3, op);
            return;
        }
        if (res)
            l3->st.failed++;
        snprintf(l3->err_state, sizeof(l3->err_state), "%s", st ? st : "");
        snprintf(l3->err_msg, sizeof(l3->err_msg), "%s", err);
        sophia_error("cache", "msg=\"L3 write failed\" key=%s sqlstate=%s "
                     "err=%s", op->p[0], st ? st : "-",
                     sophia_log_quote(err, q, sizeof(q)));
        op_finish(op, res ? SOPHIA_EIO : SOPHIA_EUNAVAIL);
        return;
    }
    l3->st.writes++;
    op_finish(op, 0);
}

static int op_submit(sophia_l3 *l3, l3_op *op)
{
    if (!op->p[0] || (op->kind != OP_DEL_TAG && !op->p[op->kind == OP_PUT ? 4 : 1])) {
        op_free(op);
        return SOPHIA_ENOMEM;
    }
    int rc = op_send(op);
    if (rc != 0) {
        op_free(op);
        return rc;
    }
    l3->st.pending++;
    if (op->kind != OP_DEL_TAG)
        busy_add(l3, op->p[0], +1);
    return 0;
}

static l3_op *op_new(sophia_l3 *l3, op_kind kind, sophia_l3_done_cb cb,
                     void *arg)
{
    l3_op *op = calloc(1, sizeof(*op));
    if (op) {
        op->l3 = l3;
        op->kind = kind;
        op->cb = cb;
        op->arg = arg;
    }
    return op;
}

static char *u64_str(uint64_t v)
{
    char b[32];
    snprintf(b, sizeof(b), "%" PRIu64, v);
    return strdup(b);
}

int sophia_l3_put(sophia_l3 *l3, const char *key, const char *val,
                  size_t len, int64_t expires_ms, const char *const *tags,
                  uint64_t version, sophia_l3_done_cb cb, void *arg)
{
    if (len > INT32_MAX)
        return SOPHIA_ETOOBIG;
    l3_op *op = op_new(l3, OP_PUT, cb, arg);
    if (!op)
        return SOPHIA_ENOMEM;
    char e[32];
    expires_ms = sophia_tier_expiry(expires_ms, l3->max_ttl_ms,
                                    sophia_now_wall_us() / 1000);
    snprintf(e, sizeof(e), "%" PRId64, expires_ms);
    op->p[0] = strdup(key);
    char *packed; /* the op keeps the packed copy as its parameter */
    sophia_zstd_pack(l3->zstd, val, len, &val, &len, &packed);
    op->p[1] = packed ? packed : malloc(len ? len : 1);
    if (op->p[1] && !packed)
        memcpy(op->p[1], val, len);
    op->len1 = (int)len;
    op->p[2] = sophia_l3_array_literal(tags);
    op->p[3] = strdup(e);
    op->p[4] = u64_str(version);
    if (!op->p[1] || !op->p[2] || !op->p[3]) {
        op_free(op);
        return SOPHIA_ENOMEM;
    }
    return op_submit(l3, op);
}

int sophia_l3_del(sophia_l3 *l3, const char *key, uint64_t version,
                  sophia_l3_done_cb cb, void *arg)
{
    l3_op *op = op_new(l3, OP_DEL, cb, arg);
    if (!op)
        return SOPHIA_ENOMEM;
    op->p[0] = strdup(key);
    op->p[1] = u64_str(version);
    return op_submit(l3, op);
}

/* A tag invalidation runs on every connection: each UPDATE commits after
 * whatever was issued before it on its connection, so it is ordered after
 * every earlier write and before every later read of any key, as on one
 * connection. The version guard makes the copies after the first no-ops. */
typedef struct l3_fan {
    unsigned left;
    int rc;
    sophia_l3_done_cb cb;
    void *arg;
} l3_fan;

static void fan_part(void *arg, int rc)
{
    l3_fan *f = arg;
    if (rc && !f->rc)
        f->rc = rc;
    if (--f->left)
        return;
    if (f->cb)
        f->cb(f->arg, f->rc);
    free(f);
}

static int del_tag_on(sophia_l3 *l3, sophia_pg *conn, const char *tag,
                      uint64_t version, l3_fan *f)
{
    l3_op *op = op_new(l3, OP_DEL_TAG, fan_part, f);
    if (!op)
        return SOPHIA_ENOMEM;
    op->pin = conn;
    op->p[0] = strdup(tag);
    op->p[1] = u64_str(version);
    if (!op->p[1]) {
        op_free(op);
        return SOPHIA_ENOMEM;
    }
    return op_submit(l3, op);
}

int sophia_l3_del_tag(sophia_l3 *l3, const char *tag, uint64_t version,
                      sophia_l3_done_cb cb, void *arg)
{
    l3_fan *f = calloc(1, sizeof(*f));
    if (!f)
        return SOPHIA_ENOMEM;
    f->cb = cb;
    f->arg = arg;
    f->left = 1; /* held until every part was submitted */
    size_t n = sophia_pg_pool_size(l3->pg);
    for (size_t i = 0; i < n; i++) {
        int rc = del_tag_on(l3, sophia_pg_pool_conn(l3->pg, i), tag, version,
                            f);
        if (rc == 0)
            f->left++;
        else if (i == 0) { /* nothing sent: the caller sees the error */
            free(f);
            return rc;
        } else if (!f->rc) {
            f->rc = rc;
        }
    }
    fan_part(f, 0);
    return 0;
}

/* ---------------------------------------------------------------- reads */

static char **split_tags(const char *s)
{
    size_t n = *s ? 1 : 0, len = strlen(s);
    for (const char *c = s; *c; c++)
        n += *c == '\x1f';
    char **v = malloc((n + 1) * sizeof(char *) + len + 1);
    if (!v)
        return NULL;
    char *w = (char *)(v + n + 1);
    memcpy(w, s, len + 1);
    for (size_t i = 0; i < n; i++) {
        v[i] = w;
        char *sep = strchr(w, '\x1f');
        if (sep) {
            *sep = '\0';
            w = sep + 1;
        }
    }
    v[n] = NULL;
    return v;
}

/* A binary-format bigint: 8 bytes, most significant first. */
static int64_t be_i64(const char *p, int len)
{
    uint64_t v = 0;
    for (int i = 0; i < 8 && len == 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return (int64_t)v;
}

/* The row comes in binary format: the bytea as its own bytes (text format
 * would send them hex-escaped, twice as long, then unescaped here), the
 * tags as their text, the expiry as a big-endian bigint. */
static void on_get(void *arg, PGresult *res, const char *err)
{
    l3_get *g = arg;
    if (err || !res) {
        g->cb(g->arg, res ? SOPHIA_EIO : SOPHIA_EUNAVAIL, NULL, 0, 0, NULL);
    } else if (PQntuples(res) == 0) {
        g->cb(g->arg, SOPHIA_ENOENT, NULL, 0, 0, NULL);
    } else {
        size_t len = (size_t)PQgetlength(res, 0, 0);
        const char *val = PQgetvalue(res, 0, 0);
        char **tags = split_tags(PQgetvalue(res, 0, 1));
        int64_t exp = be_i64(PQgetvalue(res, 0, 2), PQgetlength(res, 0, 2));
        char *plain = NULL;
        int rc = tags ? sophia_zstd_unpack(g->zstd, val, len, &val, &len,
                                           &plain)
                      : SOPHIA_ENOMEM;
        if (rc == 0)
            g->cb(g->arg, 0, val, len, exp, (const char *const *)tags);
        else
            g->cb(g->arg, rc == SOPHIA_ENOMEM ? rc : SOPHIA_EIO, NULL, 0, 0,
                  NULL);
        free(plain);
        free(tags);
    }
    free(g);
}

int sophia_l3_get(sophia_l3 *l3, const char *key, sophia_l3_get_cb cb,
                  void *arg)
{
    /* Behind the key's uncommitted writes if it has any (a tag's
     * invalidation is on every connection, so any one is behind it). */
    sophia_pg *conn = sophia_pg_pool_pick(
        l3->pg, sophia_dict_get(l3->busy, key) ? key : NULL);
    if (!sophia_pg_up(conn))
        return SOPHIA_EUNAVAIL; /* a read never waits for a reconnect */
    l3_get *g = malloc(sizeof(*g));
    if (!g)
        return SOPHIA_ENOMEM;
    g->zstd = l3->zstd;
    g->cb = cb;
    g->arg = arg;
    const char *vals[1] = {key};
    int rc = sophia_pg_query_prepared(conn, "sophia_cache_get", 1, vals, NULL,
                                      NULL, 1, on_get, g);
    if (rc)
        free(g);
    return rc;
}

/* ------------------------------------------------------------ lifecycle */

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_l3 *l3 = arg;
    if (sophia_pg_pool_up(l3->pg))
        sophia_pg_pool_query_prepared(l3->pg, NULL, "sophia_cache_sweep", 0,
                                      NULL, NULL, NULL, 0, NULL, NULL);
}

sophia_l3 *sophia_l3_new(sophia_pg_pool *pg, struct event_base *base)
{
    sophia_l3 *l3 = pg ? calloc(1, sizeof(*l3)) : NULL;
    if (!l3) {
        sophia_pg_pool_free(pg);
        return NULL;
    }
    l3->pg = pg;
    l3->rng = (unsigned long long)(uintptr_t)l3;
    l3->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, l3);
    l3->retry_ev = evtimer_new(base, on_retry, l3);
    l3->busy = sophia_dict_new();
    if (!l3->sweep_ev || !l3->retry_ev || !l3->busy ||
        sophia_pg_pool_prepare(pg, "sophia_cache_get", sql_get, 1) ||
        sophia_pg_pool_prepare(pg, "sophia_cache_put", sql_put, 5) ||
        sophia_pg_pool_prepare(pg, "sophia_cache_del", sql_del, 2) ||
        sophia_pg_pool_prepare(pg, "sophia_cache_del_tag", sql_del_tag, 2) ||
        sophia_pg_pool_prepare(pg, "sophia_cache_sweep", sql_sweep, 0)) {
        sophia_l3_free(l3);
        return NULL;
    }
    struct timeval tv = {L3_SWEEP_S, 0};
    event_add(l3->sweep_ev, &tv);
    return l3;
}

/* The ops pg.c still holds are answered "closed" by sophia_pg_pool_free and,
 * with `closing` set, finished instead of retried. */
void sophia_l3_free(sophia_l3 *l3)
{
    if (!l3)
        return;
    l3->closing = 1;
    l3_op *op;
    while ((op = l3->retry_head)) {
        l3->retry_head = op->next;
        op_finish(op, SOPHIA_EUNAVAIL);
    }
    while ((op = l3->delayed)) {
        l3->delayed = op->next;
        op_finish(op, SOPHIA_EUNAVAIL);
    }
    sophia_pg_pool_free(l3->pg);
    if (l3->sweep_ev)
        event_free(l3->sweep_ev);
    if (l3->retry_ev)
        event_free(l3->retry_ev);
    sophia_dict_free(l3->busy, NULL);
    free(l3);
}

void sophia_l3_get_stats(const sophia_l3 *l3, sophia_l3_stats *out)
{
    *out = l3->st;
}

void sophia_l3_set_max_ttl(sophia_l3 *l3, int64_t max_ttl_ms)
{
    l3->max_ttl_ms = max_ttl_ms > 0 ? max_ttl_ms : 0;
}

void sophia_l3_set_zstd(sophia_l3 *l3, sophia_zstd *z)
{
    l3->zstd = z;
}

sophia_pg_pool *sophia_l3_pool(const sophia_l3 *l3)
{
    return l3->pg;
}
