/*
 * source_redis - see source_redis.h.
 *
 * A poll drives the state machine (group created? read connection idle?
 * room in the queue?) so reconnects, NOGROUP after a Redis restart and
 * backpressure all resume the same way. It runs at once after each read's
 * reply, and every 20 ms only while no read is out: a blocking read wakes
 * the loop when entries come or its block time ends, where a timer woke
 * it 50 times a second per stream for nothing. A claim timer
 * runs XPENDING -> (XCLAIM + XADD dead + XACK) -> XAUTOCLAIM, pipelined
 * on the control connection so the dead-lettered entries are acked
 * before XAUTOCLAIM could take them again.
 */
#include "ingest/source_redis.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sophia/sdk.h>

#include "lib/backoff.h"
#include "lib/stream_ids.h"
#include "ingest/durable.h"
#include "lib/log.h"
#include "event/loop.h"
#include "event/redis.h"
#include "ingest/stream.h"

#define POLL_MS 20
#define DEAD_MAXLEN "100000" /* ~ entries a dead-letter stream keeps */
#define FLUSH_WAIT_MS 1000
/* How long a durable stream's XACKs wait for an append to ride on (see
 * sophia_source_redis_acks_ride): past one POST's gap at 50 POSTs/s. */
#define ACK_RIDE_MS 20
/* Entries per XREADGROUP unless redis.count says: a durable stream reads
 * back bodies this node appended (1,000-event POSTs at most by default),
 * and at 100 a read a turn it fell behind its own appends (a full backlog
 * and 503s at ~10-20k events/s while the loop idled half the time). */
#define SOURCE_COUNT 100
#define SOURCE_DURABLE_COUNT 1000

struct sophia_source_redis {
    struct sophia_stream *st;
    struct event_base *base;
    sophia_redis *rd, *ctl;
    char *key, *dead_key, *group, *consumer, *field;
    size_t count, dead_after;
    long block_ms, claim_idle_ms;
    int group_ready, creating, reading, claiming, freeing;
    /* XGROUP CREATE refused (say the key holds a list, or an ACL denies
     * it): retried on a back-off rather than every poll, and logged once
     * a minute rather than at each try, as the cause needs an operator. */
    sophia_backoff group_backoff;
    int64_t group_retry_us, group_logged_us;
    unsigned group_failures;
    unsigned ctl_pending; /* control commands sent, not answered */
    char cursor[64];      /* XAUTOCLAIM position */
    int history;          /* reading our own pending entries (from hist) */
    char hist[64];
    sophia_durable *du;   /* durable stream: its appender */
    char **acks;          /* ids to XACK next turn (or next append) */
    size_t nacks, acks_cap;
    int acks_ctl;         /* a dead letter among them: XACK on ctl */
    struct event *ack_ev;
    struct event *trim_ev; /* durable streams: drop what every group has */
    int trimming, trim_bad;
    unsigned trim_wait;
    sophia_xid trim_min;
    uint64_t trimmed;
    size_t keep_count;   /* retention.count, 0 = none */
    uint64_t keep_age_ms; /* retention.age, 0 = none */
    sophia_xid keep_min;  /* the retention's cut of this pass */
    sophia_stream_ids *inflight; /* ids in the local queue */
    struct event *poll_ev, *claim_ev;
    uint64_t read_entries, acked, dead, claimed;
};

static void ctl_cmd(sophia_source_redis *r, sophia_redis_cb cb, int argc,
                    const char **argv);
static void on_trimmed(void *arg, redisReply *rep);
static void trim_send(sophia_source_redis *r);

/* --------------------------------------------------------- commands */

typedef struct ctl_req {
    sophia_source_redis *r;
    sophia_redis_cb cb;
} ctl_req;

static void on_ctl(void *arg, redisReply *rep)
{
    ctl_req *q = arg;
    sophia_source_redis *r = q->r;
    r->ctl_pending--;
    if (rep && rep->type == REDIS_REPLY_ERROR && strstr(rep->str, "NOGROUP"))
        r->group_ready = 0; /* Redis lost the group (restart): recreate */
    if (q->cb)
        q->cb(r, r->freeing ? NULL : rep);
    free(q);
}

static void ctl_cmd(sophia_source_redis *r, sophia_redis_cb cb, int argc,
                    const char **argv)
{
    size_t lens[64];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    ctl_req *q = malloc(sizeof(*q));
    if (!q)
        return;
    q->r = r;
    q->cb = cb;
    if (sophia_redis_command(r->ctl, on_ctl, q, argc, argv, lens) == 0)
        r->ctl_pending++;
    else
        free(q);
}

/* ---------------------------------------------------------- entries */

/* The event of an entry's field/value array (new reference), or NULL
 * when the JSON field does not parse. */
static json_t *entry_body(sophia_source_redis *r, const redisReply *f,
                          char *why, size_t whylen)
{
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->str && !strcmp(f->element[i]->str, r->field)) {
            const redisReply *v = f->element[i + 1];
            json_error_t je;
            /* an event this node appended: as it was accepted (durable.c) */
            json_t *j = v->str ? sophia_durable_take_written(r->du, v->str,
                                                             v->len)
                               : NULL;
            if (!j && v->str)
                j = json_loadb(v->str, v->len, JSON_DECODE_ANY, &je);
            if (!j)
                snprintf(why, whylen, "field '%s' is not JSON: %s", r->field,
                         v->str ? je.text : "empty");
            return j;
        }
    json_t *o = json_object();
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->str && f->element[i + 1]->str)
            json_object_set_new(o, f->element[i]->str,
                                json_stringn(f->element[i + 1]->str,
                                             f->element[i + 1]->len));
    return o;
}

/* XADD <key>:dead * <fields…> _id <id> _stream <key> _reason <why>, then
 * XACK: the entry leaves the group's pending list for good. */
static void dead_letter(sophia_source_redis *r, const char *id,
                        const redisReply *fields, const char *why)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = "XADD";
    argv[n++] = r->dead_key;
    argv[n++] = "MAXLEN";
    argv[n++] = "~";
    argv[n++] = DEAD_MAXLEN;
    argv[n++] = "*";
    for (size_t i = 0; fields && i + 1 < fields->elements && n < 54; i += 2) {
        argv[n++] = fields->element[i]->str ? fields->element[i]->str : "";
        argv[n++] = fields->element[i + 1]->str ? fields->element[i + 1]->str : "";
    }
    argv[n++] = "_id";
    argv[n++] = id;
    argv[n++] = "_stream";
    argv[n++] = r->key;
    argv[n++] = "_reason";
    argv[n++] = why;
    ctl_cmd(r, NULL, n, argv);
    const char *ack[] = {"XACK", r->key, r->group, id};
    ctl_cmd(r, NULL, 4, ack);
    r->dead++;
    sophia_warn("redis-source", "msg=\"entry dead-lettered\" stream=%s key=%s "
                "id=%s dead_key=%s reason=\"%s\"", sophia_stream_name(r->st),
                r->key, id, r->dead_key, why);
}

/* The stream gave up on an event (out of attempts, processor ERROR):
 * into the dead letter with the stream's reason, as the event it was. */
static void dead_letter_event(sophia_source_redis *r, const char *id,
                              const json_t *body, const char *why)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    const char *argv[] = {"XADD", r->key, "MAXLEN", "~", DEAD_MAXLEN, "*",
                          r->field, text ? text : "null", "_id", id,
                          "_stream", r->key, "_reason", why};
    argv[1] = r->dead_key;
    ctl_cmd(r, NULL, (int)(sizeof(argv) / sizeof(argv[0])), argv);
    free(text);
    /* Through the batched XACK: the XADD above is sent before it on the
     * same connection, so the entry is always in one stream or the other
     * (unless Redis drops the connection in between: then it stays
     * pending and comes back, delivered again). */
    r->dead++;
    sophia_warn("redis-source", "msg=\"entry dead-lettered\" stream=%s key=%s "
                "id=%s dead_key=%s reason=\"%s\"", sophia_stream_name(r->st),
                r->key, id, r->dead_key, why);
}

static void on_ack(void *arg, const char *id, const json_t *body,
                   const char *why)
{
    sophia_source_redis *r = arg;
    if (!id)
        return;
    if (why) {
        dead_letter_event(r, id, body, why);
        r->acks_ctl = 1;
    }
    if (r->nacks == r->acks_cap) {
        size_t cap = r->acks_cap * 2 + 16;
        char **grown = realloc(r->acks, cap * sizeof(*grown));
        if (!grown)
            return; /* stays pending: delivered again, not lost */
        r->acks = grown;
        r->acks_cap = cap;
    }
    if (!(r->acks[r->nacks] = strdup(id)))
        return;
    r->nacks++;
    if (r->ack_ev && (r->acks_ctl || !evtimer_pending(r->ack_ev, NULL))) {
        /* the next loop turn, or a ride on an append (see send_acks) */
        int ride = r->du && !r->acks_ctl;
        struct timeval tv = {0, ride ? ACK_RIDE_MS * 1000 : 0};
        evtimer_add(r->ack_ev, &tv);
    }
}

typedef struct ack_batch {
    sophia_source_redis *r;
    char **ids;
    size_t n;
    int on_ctl; /* counted in ctl_pending */
} ack_batch;

/* The ids leave `inflight` only now: a claim sent before this XACK on
 * the same connection answers before it, and must still skip them. */
static void on_acked(void *arg, redisReply *rep)
{
    ack_batch *b = arg;
    (void)rep;
    if (b->on_ctl)
        b->r->ctl_pending--;
    for (size_t i = 0; i < b->n; i++) {
        sophia_stream_ids_del(b->r->inflight, b->ids[i]);
        free(b->ids[i]);
    }
    free(b->ids);
    free(b);
}

/* One XACK for every event acknowledged since the last turn. The stream
 * acks an event only once its effects are durable (stream.h), so a kill
 * -9 before this XACK replays it (at least once) and one after it loses
 * nothing. Batched per turn, flushed at once, on `via`: the control
 * connection, or a durable stream's append connection (below). */
static void send_acks_on(sophia_source_redis *r, sophia_redis *via)
{
    size_t n = r->nacks;
    if (!n)
        return;
    const char **argv = malloc((n + 3) * sizeof(*argv));
    size_t *lens = malloc((n + 3) * sizeof(*lens));
    ack_batch *b = malloc(sizeof(*b));
    int sent = 0;
    if (argv && lens && b) {
        argv[0] = "XACK";
        argv[1] = r->key;
        argv[2] = r->group;
        for (size_t i = 0; i < n; i++)
            argv[3 + i] = r->acks[i];
        for (size_t i = 0; i < n + 3; i++)
            lens[i] = strlen(argv[i]);
        *b = (ack_batch){r, r->acks, n, via == r->ctl};
        sent = sophia_redis_command(via, on_acked, b, (int)(n + 3), argv,
                                    lens) == 0;
    }
    free(argv);
    free(lens);
    if (sent) { /* the ids array moved to the batch */
        r->ctl_pending += via == r->ctl;
        r->acked += n;
        r->acks = NULL;
        r->acks_cap = 0;
        if (via == r->ctl)
            sophia_redis_flush(r->ctl);
    } else { /* Redis down: the entries stay pending, claimed later */
        free(b);
        for (size_t i = 0; i < n; i++) {
            sophia_stream_ids_del(r->inflight, r->acks[i]);
            free(r->acks[i]);
        }
    }
    r->nacks = 0;
    r->acks_ctl = 0;
    if (r->ack_ev)
        evtimer_del(r->ack_ev);
}

static void send_acks(sophia_source_redis *r)
{
    send_acks_on(r, r->ctl);
}

/* A durable stream's XACKs wait up to ACK_RIDE_MS for the next append
 * and go in front of its EVAL, on its connection: one write, and their
 * answer comes in the same read as the append's, where on ctl they cost
 * a write, a wake-up and a read of their own per POST. Not when a dead
 * letter is among them: its XADD went on ctl, and its XACK must follow
 * it there (the entry is always in one stream or the other). The ids
 * stay in `inflight` until answered, as on ctl; a claim on ctl answered
 * after that would only be of entries idle for claim_idle, delivered
 * again at worst. */
void sophia_source_redis_acks_ride(sophia_source_redis *r,
                                   sophia_redis *rd)
{
    if (r && r->nacks && !r->acks_ctl && !r->freeing && sophia_redis_up(rd))
        send_acks_on(r, rd); /* else the timer sends them on ctl */
}

static void on_ack_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_acks(arg);
}

/* Queues each [id, [fields]] entry of `arr` not already in flight. */
/* fresh: read with ">", entries never delivered before, so none can be
 * in the local queue already (a look-up an event saved); a claim or a
 * re-read of the pending list may hand back what still is. */
static void take_entries(sophia_source_redis *r, const redisReply *arr,
                         int fresh)
{
    for (size_t i = 0; arr && i < arr->elements; i++) {
        const redisReply *e = arr->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || !e->element[0]->str)
            continue; /* an entry deleted from the stream */
        const char *id = e->element[0]->str;
        const redisReply *fields = e->element[1];
        if (fields->type != REDIS_REPLY_ARRAY ||
            (!fresh && sophia_stream_ids_has(r->inflight, id)))
            continue;
        char why[256] = "";
        json_t *body = entry_body(r, fields, why, sizeof(why));
        if (!body) {
            dead_letter(r, id, fields, why);
            continue;
        }
        /* Out of memory for the id: a claim may hand the entry back, so
         * it runs twice, never lost. Not accepted: it stays pending, and
         * is claimed later. */
        if (sophia_stream_accept_one(r->st, body, "redis", id, on_ack, r) == 0)
            sophia_stream_ids_add(r->inflight, id);
        json_decref(body);
        r->read_entries++;
    }
}

/* ------------------------------------------------------------ reading */

/* The next history read starts after the last entry of `arr` (entries
 * deleted from the stream come back as [id, nil] and are skipped too). */
static void history_advance(sophia_source_redis *r, const redisReply *arr)
{
    if (!arr || arr->type != REDIS_REPLY_ARRAY || arr->elements == 0)
        return;
    const redisReply *e = arr->element[arr->elements - 1];
    if (e->type == REDIS_REPLY_ARRAY && e->elements >= 1 && e->element[0]->str)
        snprintf(r->hist, sizeof(r->hist), "%s", e->element[0]->str);
}

/* The next poll in POLL_MS, for when no read is out to wake the source
 * with its reply. */
static void poll_later(sophia_source_redis *r)
{
    struct timeval tv = {0, POLL_MS * 1000};
    if (r->poll_ev) /* NULL while closing */
        event_add(r->poll_ev, &tv);
}

static void on_read(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    r->reading = 0;
    if (r->freeing)
        return;
    if (!rep) { /* the connection went: the poll waits for it */
        poll_later(r);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strstr(rep->str, "NOGROUP"))
            r->group_ready = 0;
        sophia_warn("redis-source", "msg=\"XREADGROUP failed\" key=%s err=\"%s\"",
                    r->key, rep->str);
        poll_later(r);
        return;
    }
    /* [[key, [[id, [f, v, …]], …]]] or nil on timeout */
    size_t got = 0;
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const redisReply *s = rep->element[i];
        if (s->type == REDIS_REPLY_ARRAY && s->elements == 2) {
            if (r->history)
                history_advance(r, s->element[1]);
            if (s->element[1]->type == REDIS_REPLY_ARRAY)
                got += s->element[1]->elements;
            take_entries(r, s->element[1], !r->history);
        }
    }
    if (r->history && got == 0) {
        r->history = 0; /* our pending list is read: new entries from now */
        if (strcmp(r->hist, "0") != 0)
            sophia_info("redis-source", "msg=\"re-read own pending entries\" "
                        "key=%s consumer=%s", r->key, r->consumer);
    }
    if (r->poll_ev) /* NULL while closing */
        event_active(r->poll_ev, EV_TIMEOUT, 0); /* read again at once */
}

static void start_read(sophia_source_redis *r)
{
    size_t room = sophia_stream_room(r->st);
    if (room == 0)
        return; /* backpressure: the poll timer retries */
    char cnt[24], blk[24];
    snprintf(cnt, sizeof(cnt), "%zu", room < r->count ? room : r->count);
    snprintf(blk, sizeof(blk), "%ld", r->block_ms);
    const char *argv[] = {"XREADGROUP", "GROUP", r->group, r->consumer, "COUNT",
                          cnt, "BLOCK", blk, "STREAMS", r->key,
                          r->history ? r->hist : ">"};
    size_t lens[11];
    for (int i = 0; i < 11; i++)
        lens[i] = strlen(argv[i]);
    if (sophia_redis_command(r->rd, on_read, r, 11, argv, lens) == 0)
        r->reading = 1;
}

#define GROUP_LOG_EVERY_US (60 * 1000000LL)

static void group_failed(sophia_source_redis *r, const char *err)
{
    int64_t now = sophia_now_mono_us();
    r->group_failures++;
    r->group_retry_us = now + (int64_t)(sophia_backoff_next(&r->group_backoff) * 1e6);
    if (r->group_failures > 1 && now - r->group_logged_us < GROUP_LOG_EVERY_US)
        return;
    r->group_logged_us = now;
    sophia_error("redis-source", "msg=\"cannot create consumer group\" "
                 "key=%s group=%s err=\"%s\" failures=%u", r->key, r->group,
                 err, r->group_failures);
}

static void on_group(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    r->creating = 0;
    if (!rep)
        return;
    if (rep->type == REDIS_REPLY_ERROR && !strstr(rep->str, "BUSYGROUP")) {
        group_failed(r, rep->str);
        return;
    }
    r->group_failures = 0;
    sophia_backoff_reset(&r->group_backoff);
    if (!r->group_ready) {
        sophia_info("redis-source", "msg=\"reading\" stream=%s key=%s group=%s "
                    "consumer=%s durable=%d", sophia_stream_name(r->st), r->key,
                    r->group, r->consumer, r->du != NULL);
        r->history = 1; /* what this consumer name held before, first */
        snprintf(r->hist, sizeof(r->hist), "0");
    }
    r->group_ready = 1;
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_source_redis *r = arg;
    if (!r->group_ready) {
        if (!r->creating && sophia_redis_up(r->ctl) &&
            sophia_now_mono_us() >= r->group_retry_us) {
            const char *argv[] = {"XGROUP", "CREATE", r->key, r->group, "0",
                                  "MKSTREAM"};
            r->creating = 1;
            ctl_cmd(r, on_group, 6, argv);
            if (!r->ctl_pending)
                r->creating = 0;
        }
        poll_later(r);
        return;
    }
    /* Shutting down: what is still in Redis waits there for the next run. */
    if (!r->reading && sophia_redis_up(r->rd) &&
        !sophia_stream_closing(r->st))
        start_read(r);
    if (!r->reading) /* down, closing or full: nothing out to wake us */
        poll_later(r);
}

/* ----------------------------------------------------------- claiming */

static void on_autoclaim(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    r->claiming = 0;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 2)
        return;
    /* [next-cursor, [entries], [deleted ids]] */
    const redisReply *next = rep->element[0];
    snprintf(r->cursor, sizeof(r->cursor), "%s", next->str ? next->str : "0-0");
    size_t before = r->read_entries;
    take_entries(r, rep->element[1], 0);
    if (r->read_entries > before) {
        r->claimed += r->read_entries - before;
        sophia_info("redis-source", "msg=\"claimed pending entries\" key=%s n=%zu",
                    r->key, (size_t)(r->read_entries - before));
    }
}

static void autoclaim(sophia_source_redis *r)
{
    size_t room = sophia_stream_room(r->st);
    char idle[24], cnt[24];
    snprintf(idle, sizeof(idle), "%ld", r->claim_idle_ms);
    snprintf(cnt, sizeof(cnt), "%zu", room < r->count ? room : r->count);
    if (room == 0) {
        r->claiming = 0;
        return;
    }
    const char *argv[] = {"XAUTOCLAIM", r->key, r->group, r->consumer, idle,
                          r->cursor, "COUNT", cnt};
    ctl_cmd(r, on_autoclaim, 8, argv);
}

static void on_dead_claim(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && e->element[0]->str) {
            char why[96];
            snprintf(why, sizeof(why), "delivered %zu times without success",
                     r->dead_after);
            dead_letter(r, e->element[0]->str, e->element[1], why);
        }
    }
}

/* XPENDING rows [id, consumer, idle, deliveries]: entries delivered
 * dead_after times are claimed (for their fields) and dead-lettered;
 * then XAUTOCLAIM, pipelined behind, takes the rest. */
static void on_pending(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        r->claiming = 0;
        return;
    }
    const char *argv[64] = {"XCLAIM", r->key, r->group, r->consumer, "0"};
    int n = 5;
    for (size_t i = 0; i < rep->elements && n < 64; i++) {
        const redisReply *p = rep->element[i];
        if (p->type != REDIS_REPLY_ARRAY || p->elements < 4 || !p->element[0]->str)
            continue;
        if (sophia_stream_ids_has(r->inflight, p->element[0]->str))
            continue;
        if ((size_t)p->element[3]->integer >= r->dead_after)
            argv[n++] = p->element[0]->str;
    }
    if (n > 5)
        ctl_cmd(r, on_dead_claim, n, argv);
    autoclaim(r);
}

static void on_claim_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_source_redis *r = arg;
    if (!r->group_ready || r->claiming || !sophia_redis_up(r->ctl))
        return;
    char idle[24], cnt[24];
    snprintf(idle, sizeof(idle), "%ld", r->claim_idle_ms);
    snprintf(cnt, sizeof(cnt), "%d", 59);
    const char *argv[] = {"XPENDING", r->key, r->group, "IDLE", idle, "-", "+",
                          cnt};
    r->claiming = 1;
    ctl_cmd(r, on_pending, 8, argv);
    if (!r->ctl_pending)
        r->claiming = 0;
}

/* ----------------------------------------------------------- trimming */

/* A durable stream's key only grows (XADD never trims: a MAXLEN could cut
 * entries not yet processed). Every TRIM_MS, entries older than what
 * every group of the key still needs go: the oldest entry pending in a
 * group, or its last-delivered-id when nothing is pending. XINFO GROUPS,
 * one XPENDING summary per group with pending entries, then XTRIM MINID ~
 * (approximate: whole nodes only, never past the id).
 *
 * A retention (streams.<name>.retention, for replay) keeps history: an
 * entry goes once it is processed by every group AND outside the
 * retention - past the newest `count` or older than `age`, either one,
 * as XADD's MAXLEN and MINID would cut. So the trim id is the lower of
 * the two cuts. Not XADD MAXLEN/MINID itself: those cut whatever they
 * reach, and a backlog (a slow processor, PostgreSQL down) would lose
 * accepted, unprocessed events - the 202 promised them. The count's cut
 * is the id of the (len - count + 1)-th oldest entry: XLEN, then XRANGE
 * - + COUNT that many, at most TRIM_SCAN (trimming every second keeps the
 * excess small; a bigger one is caught up TRIM_SCAN a pass). */
#define TRIM_MS 1000
#define TRIM_SCAN 10000

static void xid_min(sophia_xid *min, const char *s, int *bad)
{
    sophia_xid v;
    if (sophia_xid_parse(s, &v) < 0) {
        *bad = 1;
        return;
    }
    if (sophia_xid_cmp(v, *min) < 0)
        *min = v;
}

/* [[id, fields], ...]: the last one is the first entry the count keeps. */
static void on_trim_range(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    sophia_xid v;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements == 0 ||
        rep->element[rep->elements - 1]->type != REDIS_REPLY_ARRAY ||
        rep->element[rep->elements - 1]->elements < 1 ||
        sophia_xid_parse(rep->element[rep->elements - 1]->element[0]->str,
                         &v) < 0) {
        r->trimming = 0;
        return;
    }
    if (sophia_xid_cmp(r->keep_min, v) < 0)
        r->keep_min = v; /* the stricter of age and count */
    trim_send(r);
}

static void on_trim_len(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        r->trimming = 0;
        return;
    }
    if ((unsigned long long)rep->integer <= r->keep_count) {
        trim_send(r); /* the count keeps everything; the age may not */
        return;
    }
    unsigned long long over = (unsigned long long)rep->integer - r->keep_count;
    char n[32];
    snprintf(n, sizeof(n), "%llu", (over > TRIM_SCAN ? TRIM_SCAN : over) + 1);
    const char *argv[] = {"XRANGE", r->key, "-", "+", "COUNT", n};
    unsigned before = r->ctl_pending;
    ctl_cmd(r, on_trim_range, 6, argv);
    if (r->ctl_pending == before)
        r->trimming = 0;
}

/* The processed cut is known; with a retention, find its cut first. */
static void trim_apply(sophia_source_redis *r)
{
    if (r->trim_bad || r->trim_min.ms == 0 || r->trim_min.ms == UINT64_MAX) {
        r->trimming = 0;
        return;
    }
    if (!r->keep_count && !r->keep_age_ms) {
        r->keep_min = r->trim_min;
        trim_send(r);
        return;
    }
    r->keep_min = (sophia_xid){0, 0};
    if (r->keep_age_ms) {
        uint64_t now_ms = (uint64_t)(sophia_now_wall_us() / 1000);
        r->keep_min.ms = now_ms > r->keep_age_ms ? now_ms - r->keep_age_ms : 0;
    }
    if (!r->keep_count) {
        trim_send(r);
        return;
    }
    const char *argv[] = {"XLEN", r->key};
    unsigned before = r->ctl_pending;
    ctl_cmd(r, on_trim_len, 2, argv);
    if (r->ctl_pending == before)
        r->trimming = 0;
}

/* XTRIM MINID ~ the lower of the processed and the retention cuts. */
static void trim_send(sophia_source_redis *r)
{
    r->trimming = 0;
    sophia_xid cut =
        sophia_xid_cmp(r->keep_min, r->trim_min) < 0 ? r->keep_min : r->trim_min;
    if (cut.ms == 0)
        return;
    char id[64];
    snprintf(id, sizeof(id), "%" PRIu64 "-%" PRIu64, cut.ms, cut.seq);
    const char *argv[] = {"XTRIM", r->key, "MINID", "~", id};
    ctl_cmd(r, on_trimmed, 5, argv);
}

static void on_trimmed(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    if (rep && rep->type == REDIS_REPLY_INTEGER)
        r->trimmed += (uint64_t)rep->integer;
}

/* [count, smallest id, greatest id, consumers] */
static void on_trim_pending(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2 &&
        rep->element[1]->str)
        xid_min(&r->trim_min, rep->element[1]->str, &r->trim_bad);
    else if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
             rep->element[0]->integer != 0)
        r->trim_bad = 1; /* unknown: trim nothing this time */
    if (--r->trim_wait == 0)
        trim_apply(r);
}

/* Each group: a flat [name, v, consumers, v, pending, v,
 * last-delivered-id, v, ...]. */
static void on_trim_groups(void *arg, redisReply *rep)
{
    sophia_source_redis *r = arg;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
        r->trimming = 0;
        return;
    }
    r->trim_min = (sophia_xid){UINT64_MAX, UINT64_MAX};
    r->trim_bad = 0;
    r->trim_wait = 1; /* held until every XPENDING is sent */
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *g = rep->element[i];
        const char *name = NULL, *last = NULL;
        long long pending = -1;
        for (size_t k = 0; g->type == REDIS_REPLY_ARRAY && k + 1 < g->elements; k += 2) {
            const char *f = g->element[k]->str;
            const redisReply *v = g->element[k + 1];
            if (!f)
                continue;
            if (!strcmp(f, "name"))
                name = v->str;
            else if (!strcmp(f, "pending"))
                pending = v->integer;
            else if (!strcmp(f, "last-delivered-id"))
                last = v->str;
        }
        if (!name || pending < 0) {
            r->trim_bad = 1;
            continue;
        }
        xid_min(&r->trim_min, last, &r->trim_bad);
        if (pending > 0) {
            const char *argv[] = {"XPENDING", r->key, name};
            r->trim_wait++;
            unsigned before = r->ctl_pending;
            ctl_cmd(r, on_trim_pending, 3, argv);
            if (r->ctl_pending == before) { /* not sent */
                r->trim_wait--;
                r->trim_bad = 1;
            }
        }
    }
    if (--r->trim_wait == 0)
        trim_apply(r);
}

static void on_trim_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_source_redis *r = arg;
    if (!r->group_ready || r->trimming || !sophia_redis_up(r->ctl))
        return;
    const char *argv[] = {"XINFO", "GROUPS", r->key};
    unsigned before = r->ctl_pending;
    r->trimming = 1;
    ctl_cmd(r, on_trim_groups, 3, argv);
    if (r->ctl_pending == before)
        r->trimming = 0;
}

/* -------------------------------------------------------- lifecycle */

sophia_source_redis *sophia_source_redis_new(struct sophia_stream *st,
                                             const sophia_conf *c,
                                             const sophia_conf_stream *cs,
                                             struct event_base *base)
{
    sophia_source_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    char key[512];
    r->st = st;
    r->base = base;
    char who[200];
    r->key = strdup(sophia_durable_key(c, cs, key, sizeof(key)));
    r->group = strdup(cs->redis.group ? cs->redis.group : "sophia");
    r->consumer = strdup(cs->redis.consumer ? cs->redis.consumer
                         : sophia_durable_consumer(cs, who, sizeof(who)));
    r->field = strdup(cs->redis.field ? cs->redis.field : "data");
    r->count = cs->redis.count ? cs->redis.count
               : sophia_durable_enabled(c, cs) ? SOURCE_DURABLE_COUNT
                                               : SOURCE_COUNT;
    r->dead_after = cs->redis.dead_letter_after ? cs->redis.dead_letter_after : 5;
    r->block_ms = (long)(cs->redis.block * 1000);
    r->claim_idle_ms = (long)(cs->redis.claim_idle * 1000);
    r->keep_count = cs->retention.count;
    r->keep_age_ms = (uint64_t)(cs->retention.age * 1000);
    snprintf(r->cursor, sizeof(r->cursor), "0-0");
    sophia_backoff_init(&r->group_backoff, 0.1, 5.0, (unsigned long long)(uintptr_t)r);
    size_t dl = r->key ? strlen(r->key) + 6 : 0;
    r->dead_key = dl ? malloc(dl) : NULL;
    if (r->dead_key)
        snprintf(r->dead_key, dl, "%s:dead", r->key);
    r->inflight = sophia_stream_ids_new();
    r->rd = c->redis_url ? sophia_redis_new(base, c->redis_url) : NULL;
    r->ctl = c->redis_url ? sophia_redis_new(base, c->redis_url) : NULL;
    r->poll_ev = evtimer_new(base, on_poll, r);
    r->claim_ev = event_new(base, -1, EV_PERSIST, on_claim_tick, r);
    r->ack_ev = evtimer_new(base, on_ack_tick, r);
    int durable = sophia_durable_enabled(c, cs);
    if (durable && r->key && r->field)
        r->du = sophia_durable_new(st, r, c->redis_url, r->key, r->field, base);
    r->trim_ev = durable ? event_new(base, -1, EV_PERSIST, on_trim_tick, r) : NULL;
    if ((durable && (!r->du || !r->trim_ev)) || !r->ack_ev || !r->key || !r->group || !r->consumer || !r->field || !r->dead_key ||
        !r->inflight || !r->rd || !r->ctl || !r->poll_ev || !r->claim_ev) {
        sophia_error("redis-source", "msg=\"cannot start\" stream=%s key=%s",
                     sophia_stream_name(st), r->key ? r->key : "?");
        sophia_source_redis_free(r);
        return NULL;
    }
    struct timeval poll = {0, POLL_MS * 1000};
    long half = r->claim_idle_ms / 2 < 50 ? 50 : r->claim_idle_ms / 2;
    if (half > 5000)
        half = 5000;
    struct timeval claim = {half / 1000, (half % 1000) * 1000};
    event_add(r->poll_ev, &poll);
    event_add(r->claim_ev, &claim);
    struct timeval trim = {TRIM_MS / 1000, (TRIM_MS % 1000) * 1000};
    if (r->trim_ev)
        event_add(r->trim_ev, &trim);
    return r;
}

sophia_durable *sophia_source_redis_durable(const sophia_source_redis *r)
{
    return r ? r->du : NULL;
}

uint64_t sophia_source_redis_taken(const sophia_source_redis *r)
{
    return r ? r->read_entries : 0;
}

int sophia_source_redis_up(const sophia_source_redis *r)
{
    return r && r->group_ready && sophia_redis_up(r->rd) &&
           sophia_redis_up(r->ctl) && (!r->du || sophia_durable_up(r->du));
}

json_t *sophia_source_redis_stats_json(const sophia_source_redis *r)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I}", "key", r->key,
                          "group", r->group, "consumer", r->consumer, "up",
                          sophia_source_redis_up(r), "read",
                          (json_int_t)r->read_entries, "acked",
                          (json_int_t)r->acked, "claimed",
                          (json_int_t)r->claimed, "dead", (json_int_t)r->dead);
    if (o && r->du) {
        json_t *du = sophia_durable_stats_json(r->du);
        json_object_set_new(du, "trimmed", json_integer((json_int_t)r->trimmed));
        json_object_set_new(o, "durable", du);
    }
    return o;
}

/* XACKs queued by the shutdown drain have not been written yet when the
 * loop stops; run the loop briefly so they reach Redis (else the entries
 * would be delivered again to another consumer: safe, but avoidable).
 * A stream dropped by a reload is freed inside a loop callback, where the
 * loop cannot run: the XACKs are written now and their replies not waited
 * for (waiting held the loop for FLUSH_WAIT_MS). */
static void flush_acks(sophia_source_redis *r)
{
    sophia_redis_flush(r->ctl);
    sophia_loop *live = sophia_stream_live_loop(r->st);
    if (live && sophia_loop_running(live))
        return;
    int64_t deadline = sophia_now_mono_us() + FLUSH_WAIT_MS * 1000;
    while (r->ctl_pending && sophia_redis_up(r->ctl) &&
           sophia_now_mono_us() < deadline) {
        /* ONCE too: NONBLOCK alone returns only after a pass with
         * nothing active, and a zero timer each pass re-arms (a stream
         * still draining) kept it from returning, so the deadline was
         * never looked at: shutdowns that hung for minutes. */
        event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        if (r->ctl_pending)
            usleep(1000);
    }
}

void sophia_source_redis_free(sophia_source_redis *r)
{
    if (!r)
        return;
    if (r->poll_ev)
        event_free(r->poll_ev);
    if (r->claim_ev)
        event_free(r->claim_ev);
    r->poll_ev = r->claim_ev = NULL;
    sophia_durable_free(r->du); /* appends still waiting are answered 503 */
    r->du = NULL;
    if (r->ack_ev)
        event_free(r->ack_ev);
    if (r->trim_ev)
        event_free(r->trim_ev);
    r->ack_ev = r->trim_ev = NULL;
    if (r->ctl) {
        send_acks(r); /* what the shutdown drain processed */
        flush_acks(r);
    }
    r->freeing = 1; /* callbacks fired by the frees below see NULL */
    sophia_redis_free(r->rd);
    sophia_redis_free(r->ctl);
    sophia_stream_ids_free(r->inflight);
    for (size_t i = 0; i < r->nacks; i++) /* ctl was never made */
        free(r->acks[i]);
    free(r->acks);
    free(r->key);
    free(r->dead_key);
    free(r->group);
    free(r->consumer);
    free(r->field);
    free(r);
}
