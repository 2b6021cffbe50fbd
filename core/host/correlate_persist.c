/*
 * correlate_persist - the correlators' state in Redis (correlate.h says
 * what is written when, and what an ack waits for).
 *
 * Per key (SDK 1.3): export_changes hands over what one event changed,
 * so the work per event follows the keys it touched, never the state's
 * size. Changes collect in the instance's `dirty` map (a key changed
 * twice in a turn is written once, with its last state) and go out from
 * a zero-delay timer, i.e. after every callback of the loop turn: one
 * HSET (and one HDEL for keys that closed) per 512 keys, pipelined on
 * one connection, one batch out per instance at a time, so a failed
 * batch can be merged back under the changes that came after it without
 * an older state overwriting a newer one in Redis. A big batch (what
 * piled up while Redis was slow, a sweep) is sent two commands at a
 * time, the next as one is answered, so no turn formats megabytes.
 *
 * Tickets: each committed event gets the next number; the changes it
 * made (or its place in the start-up buffer) carry it. An instance's
 * lowest pending ticket is the lowest among its batch out, its dirty map
 * and its held events; every ticket below the lowest of all instances is
 * durable, which the streams are told (durable_fn), and they release the
 * acks waiting on it.
 */
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/loop.h"
#include "host/correlate_priv.h"
#include "host/host.h"
#include "lib/log.h"

#define CORR_PAGE "50" /* keys per HSCAN page (patterns: 0.1-0.3 ms a key) */
#define CORR_CMD_FIELDS 512 /* fields per HSET / HDEL */
#define CORR_CMDS_OUT 2     /* of a batch's commands, out at once */

static void state_key(const sophia_correlate *k, const corr *c,
                      const char *suffix, char *buf, size_t n)
{
    snprintf(buf, n, "sophia:correlator:%s:%s%s", k->node, c->inst->name,
             suffix);
}

void corr_change_free(void *v)
{
    free(v);
}

/* ------------------------------------------------------------ changes */

typedef struct emit_ctx {
    corr *c;
    size_t n;
} emit_ctx;

static void on_emit(void *arg, const char *key, const char *json)
{
    emit_ctx *e = arg;
    size_t len = json ? strlen(json) : 0;
    corr_change *ch = key ? malloc(sizeof(*ch) + len + 1) : NULL;
    if (!ch) { /* the key keeps its older state in Redis */
        e->c->st.errors++;
        return;
    }
    ch->del = !json;
    ch->len = len;
    memcpy(ch->text, json ? json : "", len + 1);
    corr_change_free(sophia_dict_set(e->c->dirty, key, ch));
    e->n++;
}

void corr_persist_track(corr *c)
{
    emit_ctx e = {c, 0};
    if (c->per_key)
        c->ops->export_changes(c->inst->state, on_emit, &e);
}

static void schedule(sophia_correlate *k)
{
    struct timeval now = {0, 0}; /* after this turn's other callbacks */
    if (k->flush_ev && !evtimer_pending(k->flush_ev, NULL))
        evtimer_add(k->flush_ev, &now);
}

size_t corr_persist_changes(sophia_correlate *k, corr *c, uint64_t ticket)
{
    emit_ctx e = {c, 0};
    if (!c->per_key || !c->dirty)
        return 0;
    c->ops->export_changes(c->inst->state, on_emit, &e);
    if (e.n && ticket && !c->dirty_lo)
        c->dirty_lo = ticket;
    if (e.n)
        schedule(k);
    return e.n;
}

static uint64_t lo_of(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

uint64_t corr_pending_lo(const corr *c)
{
    uint64_t lo = lo_of(c->out_lo, c->dirty_lo);
    /* held events all carry a ticket (per key) or none (1.2) */
    return c->nheld ? lo_of(lo, c->held[0].ticket) : lo;
}

void corr_notify(sophia_correlate *k)
{
    uint64_t lo = 0;
    for (size_t i = 0; i < k->n; i++)
        lo = lo_of(lo, corr_pending_lo(&k->v[i]));
    uint64_t upto = lo ? lo - 1 : k->seq;
    if (upto > k->durable && k->durable_fn) {
        k->durable = upto;
        k->durable_fn(k->durable_arg, upto);
    }
}

/* ------------------------------------------------------------ batches */

/* One instance's changes out: the map taken from it, the ticket its
 * oldest change carries, and the replies still owed. */
typedef struct corr_batch {
    sophia_correlate *k;
    char *instance;
    sophia_dict *changes;
    const char **fields; /* the map's keys, borrowed from it */
    corr_change **vals;
    size_t n, nset, ndel, bytes;
    uint64_t lo;
    unsigned left;  /* commands out */
    size_t at[2];   /* where the next HSET [0] and HDEL [1] start */
    int phase;      /* 0 sets, 1 deletions, 2 all sent */
    int failed;
    char hkey[512];
    int64_t added, removed; /* new fields (HSET), fields gone (HDEL) */
    int64_t sent_us;
} corr_batch;

static void collect(const char *key, void *val, void *arg)
{
    corr_batch *b = arg;
    b->fields[b->n] = key;
    b->vals[b->n++] = val;
}

static void batch_free(corr_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->vals[i]); /* NULL once merged back */
    sophia_dict_free(b->changes, NULL);
    free(b->fields);
    free(b->vals);
    free(b->instance);
    free(b);
}

/* A failed batch's changes go back under the ones that came since (a
 * key changed again keeps its newer state), with its oldest ticket. */
static void merge_back(corr *c, corr_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        if (!sophia_dict_get(c->dirty, b->fields[i])) {
            sophia_dict_set(c->dirty, b->fields[i], b->vals[i]);
            b->vals[i] = NULL;
        }
    c->dirty_lo = lo_of(c->dirty_lo, b->lo);
    c->st.errors++;
}

static void batch_done(corr_batch *b)
{
    sophia_correlate *k = b->k;
    corr *c = k->closing ? NULL : corr_find(k, b->instance);
    k->writes_out--;
    if (c && c->per_key && c->dirty) {
        c->writing = 0;
        c->out_lo = 0;
        /* what did land, even of a failed batch: its retry finds it */
        c->st.open_keys += b->added - b->removed;
        if (b->failed) {
            merge_back(c, b); /* the tick sends it again */
        } else {
            c->st.writes++;
            c->st.keys_written += b->nset;
            c->st.keys_deleted += b->ndel;
            c->st.bytes += b->bytes;
            c->st.last_persist_ms =
                (double)(sophia_now_mono_us() - b->sent_us) / 1e3;
            if (sophia_dict_size(c->dirty))
                schedule(k); /* what came while it was out */
            else if (c->loading && !c->reading)
                corr_load(k, c); /* a reload's read, after the writes */
        }
    }
    batch_free(b);
    if (!k->closing)
        corr_notify(k);
}

/* Which command a reply answers, for the open-keys count. */
typedef struct cmd_arg {
    corr_batch *b;
    int del;
} cmd_arg;

static void pump(corr_batch *b);

/* HSET answers the fields new to the hash, HDEL those that were in it. */
static void count_reply(void *arg, redisReply *reply)
{
    cmd_arg *a = arg;
    corr_batch *b = a->b;
    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        if (a->del)
            b->removed += reply->integer;
        else
            b->added += reply->integer;
    }
    free(a);
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        if (!b->failed && !b->k->closing)
            sophia_warn("correlate", "msg=\"state not written; again in 1 s\" instance=%s error=\"%s\"",
                        b->instance, reply && reply->str ? reply->str
                                                        : "redis unavailable");
        b->failed = 1;
    }
    b->left--;
    pump(b);
}

/* Sends one HSET (or HDEL) of the sets (or deletions) among b's entries
 * from *from on, at most CORR_CMD_FIELDS, moving *from past them; 0 when
 * there was none or it went out, -1 when Redis is down. */
static int send_cmd(sophia_correlate *k, corr_batch *b, int del,
                    size_t *from)
{
    size_t cap = 2 + (del ? 1 : 2) * CORR_CMD_FIELDS, argc = 2;
    const char **argv = malloc(cap * sizeof(*argv));
    size_t *lens = malloc(cap * sizeof(*lens));
    cmd_arg *a = malloc(sizeof(*a));
    int rc = -1;
    if (argv && lens && a) {
        argv[0] = del ? "HDEL" : "HSET";
        argv[1] = b->hkey;
        for (; *from < b->n && argc + 2 <= cap; ++*from) {
            const corr_change *ch = b->vals[*from];
            if (ch->del != del)
                continue;
            argv[argc++] = b->fields[*from];
            if (!del)
                argv[argc++] = ch->text;
            b->bytes += strlen(b->fields[*from]) + ch->len;
        }
        for (size_t i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        *a = (cmd_arg){b, del};
        rc = argc == 2 ? 0
                       : sophia_redis_command(k->redis, count_reply, a,
                                              (int)argc, argv, lens);
        if (rc == 0 && argc > 2) {
            b->left++;
            a = NULL;
        }
    }
    free(a);
    free(argv);
    free(lens);
    return rc;
}

/* The next commands of `b`, up to CORR_CMDS_OUT out; once all are sent
 * (or one failed: Redis is down) and answered, the batch is done. */
static void pump(corr_batch *b)
{
    int sent = 0;
    while (!b->failed && b->phase < 2 && b->left < CORR_CMDS_OUT) {
        size_t *at = &b->at[b->phase];
        unsigned was = b->left;
        if (*at >= b->n)
            b->phase++;
        else if (send_cmd(b->k, b, b->phase, at) < 0)
            b->failed = 1; /* down: nothing more goes out */
        sent |= b->left > was;
    }
    if (sent)
        sophia_redis_flush(b->k->redis);
    if (!b->left && (b->failed || b->phase == 2))
        batch_done(b);
}

static void send_batch(sophia_correlate *k, corr *c)
{
    corr_batch *b = calloc(1, sizeof(*b));
    size_t n = sophia_dict_size(c->dirty);
    sophia_dict *fresh = sophia_dict_new();
    if (!b || !fresh || !(b->instance = strdup(c->inst->name)) ||
        !(b->fields = malloc(n * sizeof(*b->fields))) ||
        !(b->vals = malloc(n * sizeof(*b->vals)))) {
        if (b) {
            free(b->fields);
            free(b->instance);
        }
        free(b);
        sophia_dict_free(fresh, NULL);
        return; /* out of memory: the tick tries again */
    }
    *b = (corr_batch){.k = k, .instance = b->instance, .changes = c->dirty,
                      .fields = b->fields, .vals = b->vals, .lo = c->dirty_lo,
                      .sent_us = sophia_now_mono_us()};
    sophia_dict_each(c->dirty, collect, b);
    for (size_t i = 0; i < b->n; i++)
        b->vals[i]->del ? b->ndel++ : b->nset++;
    c->dirty = fresh;
    c->out_lo = c->dirty_lo;
    c->dirty_lo = 0;
    c->writing = 1;
    k->writes_out++;
    state_key(k, c, ":keys", b->hkey, sizeof(b->hkey));
    pump(b);
}

void corr_flush(sophia_correlate *k)
{
    for (size_t i = 0; k->redis && i < k->n; i++) {
        corr *c = &k->v[i];
        if (c->per_key && !c->writing && c->dirty &&
            sophia_dict_size(c->dirty))
            send_batch(k, c);
    }
}

void corr_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    corr_flush(arg);
}

/* ------------------------------------------------------------- loading */

/* What a read of the state answers; the arg names the instance, so a
 * reload meanwhile finds the one of that name (or none). */
typedef struct load_req {
    sophia_correlate *k;
    char *instance;
} load_req;

static corr *load_target(load_req *q)
{
    corr *c = q->k->closing ? NULL : corr_find(q->k, q->instance);
    free(q->instance);
    free(q);
    if (!c || !c->loading)
        return NULL;
    c->reading = 0;
    return c;
}

/* 1.2: the whole state, from GET. */
static void on_snapshot(void *arg, redisReply *reply)
{
    sophia_correlate *k = ((load_req *)arg)->k;
    corr *c = load_target(arg);
    if (!c || !reply || reply->type == REDIS_REPLY_ERROR)
        return; /* down or refused: the tick asks again */
    if (reply->type == REDIS_REPLY_STRING)
        corr_import_text(c, reply->str, "snapshot");
    corr_loaded(k, c);
}

/* A key the plugin refused (a rule gone, say) leaves the hash. */
static void import_one(corr *c, const redisReply *f, const redisReply *v)
{
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
        return;
    c->st.open_keys++;
    if (c->ops->import_key(c->inst->state, f->str, v->str) == 0)
        return;
    corr_change *ch = malloc(sizeof(*ch) + 1);
    if (ch) {
        *ch = (corr_change){.del = 1};
        ch->text[0] = 0;
        corr_change_free(sophia_dict_set(c->dirty, f->str, ch));
    }
}

/* Per key: one HSCAN page, then the next one at once (a page per turn). */
static void on_page(void *arg, redisReply *reply)
{
    sophia_correlate *k = ((load_req *)arg)->k;
    corr *c = load_target(arg);
    if (!c || !reply || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != 2 || reply->element[0]->type != REDIS_REPLY_STRING)
        return; /* down or refused: the tick asks again, from the cursor */
    const redisReply *kv = reply->element[1];
    for (size_t i = 0; kv->type == REDIS_REPLY_ARRAY && i + 1 < kv->elements;
         i += 2)
        import_one(c, kv->element[i], kv->element[i + 1]);
    snprintf(c->cursor, sizeof(c->cursor), "%s", reply->element[0]->str);
    if (strcmp(c->cursor, "0") != 0) {
        corr_load(k, c);
        return;
    }
    sophia_info("correlate", "msg=\"state restored\" instance=%s from=redis keys=%lld",
                c->inst->name, (long long)c->st.open_keys);
    corr_loaded(k, c);
    schedule(k); /* the keys refused, if any */
}

void corr_load(sophia_correlate *k, corr *c)
{
    if (c->per_key && (c->writing || sophia_dict_size(c->dirty))) {
        corr_flush(k); /* the hash first takes what is still owed */
        return;
    }
    char key[512];
    load_req *q = calloc(1, sizeof(*q));
    state_key(k, c, c->per_key ? ":keys" : "", key, sizeof(key));
    if (!q || !(q->instance = strdup(c->inst->name))) {
        free(q);
        return;
    }
    q->k = k;
    const char *get[] = {"GET", key};
    const size_t get_len[] = {3, strlen(key)};
    const char *scan[] = {"HSCAN", key, c->cursor, "COUNT", CORR_PAGE};
    const size_t scan_len[] = {5, strlen(key), strlen(c->cursor), 5,
                               strlen(CORR_PAGE)};
    int rc = c->per_key
                 ? sophia_redis_command(k->redis, on_page, q, 5, scan, scan_len)
                 : sophia_redis_command(k->redis, on_snapshot, q, 2, get,
                                        get_len);
    if (rc == 0) {
        c->reading = 1;
        return;
    }
    free(q->instance);
    free(q);
}

/* ---------------------------------------------------- 1.2: whole state */

static void on_written(void *arg, redisReply *reply)
{
    sophia_correlate *k = arg;
    k->writes_out--;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        sophia_warn("correlate", "msg=\"snapshot not written\" error=%s",
                    reply ? reply->str : "redis unavailable");
}

void corr_write_snapshot(sophia_correlate *k, corr *c)
{
    if (!k->redis || !c->snapshot || c->loading || !corr_can_export(c))
        return;
    int64_t t0 = sophia_now_mono_us();
    char *json = c->ops->export_state(c->inst->state);
    if (!json)
        return;
    char key[512];
    state_key(k, c, "", key, sizeof(key));
    const char *argv[] = {"SET", key, json};
    const size_t len[] = {3, strlen(key), strlen(json)};
    if (sophia_redis_command(k->redis, on_written, k, 3, argv, len) == 0) {
        k->writes_out++;
        c->st.writes++;
        c->st.bytes += len[2];
    } else {
        c->st.errors++;
    }
    c->st.last_persist_ms = (double)(sophia_now_mono_us() - t0) / 1e3;
    sophia_host_table()->free(json); /* the SDK's rule: host->free */
}
