/*
 * durable - see durable.h.
 *
 * An append is one record holding the caller's callback and one EVAL of
 * APPEND_LUA: the body's XADDs run inside Redis, in the body's order,
 * and the one answer is the number appended. It was MULTI, an XADD per
 * event and EXEC: 52 replies for a 50-event body (a QUEUED per XADD,
 * then an id per event), each built and freed by hiredis. A script runs
 * whole, with no other client in between, like EXEC; it is all or
 * nothing as the transaction was: Redis refuses a script for OOM before
 * its first write, and every XADD targets the same key with the same
 * arguments but the text, so one that fails (a key of another type)
 * is the first. A connection lost half-way leaves nothing half-sent to
 * run: Redis runs a command only once it has all of it, and hiredis
 * then fails the callback with a NULL reply.
 *
 * The durable path used to parse every event twice: once at ingest, and
 * again from the XREADGROUP reply that hands the entry back to this node
 * (a tenth of its CPU with the default tiers). So each XADD files its
 * event with the exact JSON text it wrote, in a ring in the order sent,
 * and the source looks an entry's text up there before parsing it. By
 * text, not by stream id: the blocked XREADGROUP is often answered before
 * EVAL is, so the ids are not known yet when the entries come back.
 *
 * By place, not by a table of texts: one connection sends the appends and
 * a script runs whole, so this node's entries stand in the stream in the
 * order they were filed, and the consumer group hands new entries out in
 * stream order. The entry read back is therefore the oldest one filed and
 * not yet taken: compared at the ring's tail (its length, then its
 * bytes), it is found with no hashing (a table cost four keyed hashes of
 * the text an event: filed, looked up, removed, and looked up again when
 * the ring wrapped). Older slots it passes are dropped: the group will
 * not hand them out again (another consumer of a shared key took them,
 * or their append failed). The same text always parses to an equal event,
 * so a look-up that takes the wrong one of two equal texts, or misses,
 * can never hand over a different event, only cost a parse. A look-up
 * compares TAKE_WINDOW slots, so an entry that is not there (another
 * node wrote it, or it is delivered again) costs little; every
 * TAKE_FULL_EVERY-th look-up in a row without a match compares them all,
 * so a node whose entries another consumer of a shared key took, more
 * than the window in a row, finds its own again. A miss drops nothing: a
 * drop on a miss would lose the next entry's slot, and the next, while
 * a backlog lasts. The ring holds the stream's queue size (at least
 * 1,024) events; an entry another node reads is never taken here and
 * ages out.
 */
#include "ingest/durable.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sophia/sdk.h>

#include "lib/jsonw.h"
#include "lib/log.h"
#include "event/loop.h"
#include "event/redis.h"
#include "ingest/source_redis.h"
#include "ingest/stream.h"

struct sophia_durable {
    struct sophia_stream *st;
    struct sophia_source_redis *src;
    sophia_redis *rd;
    char *key, *field;
    size_t inflight;        /* events in appends not yet answered */
    uint64_t appended;      /* events Redis confirmed */
    uint64_t append_failed; /* events of failed appends */
    uint64_t reused;        /* entries handed back from `written` */
    int64_t warned_us;      /* last "Redis down" warning */
    /* Bodies that arrived while the connection was still being made for
     * the first time (at start, or a stream new in a reload): sent once
     * it is up, refused if the first attempt fails. */
    struct append_req *parked, *parked_tail;
    struct event *park_ev;
    struct filed *ring;   /* events sent, with their texts (see the top) */
    size_t ring_cap;
    uint64_t head, tail;  /* next slot filed; oldest slot not yet taken */
    unsigned misses;      /* look-ups in a row without a match */
};

/* An event appended and its text, in the ring at index seq % ring_cap;
 * `ev` NULL once taken or dropped. */
typedef struct filed {
    char *text;
    size_t len;
    json_t *ev;
} filed;

/* How many slots past the tail a look-up compares, and how often a run
 * of look-ups without a match compares every slot (see the top). */
#define TAKE_WINDOW 64
#define TAKE_FULL_EVERY 16

typedef struct append_req {
    sophia_durable *d;
    size_t n;
    uint64_t first;       /* the ring slot of its first event */
    sophia_durable_done_fn done;
    void *arg;
    json_t *events;       /* parked only: the body's events */
    struct append_req *next;
} append_req;

static void on_park_tick(evutil_socket_t fd, short what, void *arg);
static void fail_parked(sophia_durable *d);

int sophia_durable_enabled(const sophia_conf *c, const sophia_conf_stream *cs)
{
    if (cs->durable >= 0)
        return cs->durable;
    return c->redis_url != NULL && *c->redis_url != '\0';
}

const char *sophia_durable_key(const sophia_conf *c,
                               const sophia_conf_stream *cs, char *buf,
                               size_t len)
{
    char host[128] = "sophiad";
    if (cs->redis.key) {
        snprintf(buf, len, "%s", cs->redis.key);
    } else {
        gethostname(host, sizeof(host) - 1);
        snprintf(buf, len, "sophia:stream:%s@%s/%s", cs->name, host,
                 c->server.listen ? c->server.listen : "");
    }
    return buf;
}

const char *sophia_durable_consumer(const sophia_conf_stream *cs, char *buf,
                                    size_t len)
{
    char host[128] = "sophiad";
    gethostname(host, sizeof(host) - 1);
    if (cs->redis.key) /* a shared key: one consumer per process */
        snprintf(buf, len, "%s-%d", host, (int)getpid());
    else /* the node's own key: the same name after a restart */
        snprintf(buf, len, "%s", host);
    return buf;
}

sophia_durable *sophia_durable_new(struct sophia_stream *st,
                                   struct sophia_source_redis *src,
                                   const char *url, const char *key,
                                   const char *field, struct event_base *base)
{
    sophia_durable *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->st = st;
    d->src = src;
    d->key = strdup(key);
    d->field = strdup(field ? field : "data");
    d->rd = url ? sophia_redis_new(base, url) : NULL;
    d->park_ev = event_new(base, -1, EV_PERSIST, on_park_tick, d);
    sophia_stream_stats ss;
    sophia_stream_get_stats(st, &ss);
    d->ring_cap = ss.capacity > 1024 ? ss.capacity : 1024;
    d->ring = calloc(d->ring_cap, sizeof(*d->ring));
    if (!d->key || !d->field || !d->rd || !d->park_ev || !d->ring) {
        sophia_durable_free(d);
        return NULL;
    }
    return d;
}

static filed *slot(const sophia_durable *d, uint64_t seq)
{
    return &d->ring[seq % d->ring_cap];
}

static void slot_clear(filed *f)
{
    json_decref(f->ev);
    free(f->text);
    *f = (filed){0};
}

/* Drops the slots before `seq` (taken, dropped, or given up on). */
static void drop_to(sophia_durable *d, uint64_t seq)
{
    for (; d->tail < seq; d->tail++)
        slot_clear(slot(d, d->tail));
}

void sophia_durable_free(sophia_durable *d)
{
    if (!d)
        return;
    fail_parked(d);
    if (d->park_ev)
        event_free(d->park_ev);
    sophia_redis_free(d->rd); /* fails pending appends: their callers hear 503 */
    if (d->ring)
        drop_to(d, d->head);
    free(d->ring);
    free(d->key);
    free(d->field);
    free(d);
}

int sophia_durable_up(const sophia_durable *d)
{
    return d && sophia_redis_up(d->rd);
}

/* What this node appended and has not taken in yet, plus its queue and
 * the events whose effects are still in flight (they hold queue slots). */
static size_t backlog(const sophia_durable *d, size_t *cap)
{
    sophia_stream_stats s;
    sophia_stream_get_stats(d->st, &s);
    uint64_t taken = sophia_source_redis_taken(d->src);
    size_t unread = d->appended > taken ? (size_t)(d->appended - taken) : 0;
    *cap = s.capacity;
    return d->inflight + unread + s.queued + s.inflight;
}

/* The script's XADDs, KEYS[1] = the stream, ARGV[1] = the field, one
 * event text each after it; it answers how many it appended. */
static const char APPEND_LUA[] =
    "for i=2,#ARGV do redis.call('XADD',KEYS[1],'*',ARGV[1],ARGV[i]) end "
    "return #ARGV-1";

/* EVAL answered: n appended, or anything else = not appended. */
static int append_ok(const redisReply *rep, size_t n)
{
    return rep && rep->type == REDIS_REPLY_INTEGER &&
           rep->integer == (long long)n;
}

/* Files `ev` with its text `js` (both taken) at the ring's head; a full
 * ring first drops its oldest slot. */
static void file_written(sophia_durable *d, char *js, size_t len, json_t *ev)
{
    if (d->head - d->tail == d->ring_cap)
        drop_to(d, d->tail + 1);
    *slot(d, d->head++) = (filed){js, len, ev};
}

json_t *sophia_durable_take_written(sophia_durable *d, const char *text,
                                    size_t len)
{
    if (!d)
        return NULL;
    while (d->tail < d->head && !slot(d, d->tail)->ev)
        drop_to(d, d->tail + 1); /* a failed append's */
    uint64_t end = d->head;
    if (++d->misses % TAKE_FULL_EVERY && end - d->tail > TAKE_WINDOW)
        end = d->tail + TAKE_WINDOW;
    for (uint64_t seq = d->tail; seq < end; seq++) {
        filed *f = slot(d, seq);
        if (f->ev && f->len == len && memcmp(f->text, text, len) == 0) {
            json_t *ev = f->ev;
            f->ev = NULL;
            drop_to(d, seq + 1);
            d->misses = 0;
            d->reused++;
            return ev;
        }
    }
    return NULL;
}

/* A failed append's slots: their entries are not in the stream (or, if
 * the script ran and only its answer was lost, are parsed when read). */
static void drop_failed(sophia_durable *d, const append_req *q)
{
    for (uint64_t seq = q->first; seq < q->first + q->n; seq++)
        if (seq >= d->tail && seq < d->head) {
            filed *f = slot(d, seq);
            json_decref(f->ev);
            f->ev = NULL;
        }
}

static void on_appended(void *arg, redisReply *rep)
{
    append_req *q = arg;
    sophia_durable *d = q->d;
    d->inflight -= q->n;
    int ok = append_ok(rep, q->n);
    if (ok) {
        d->appended += q->n;
    } else {
        d->append_failed += q->n;
        drop_failed(d, q);
        sophia_warn("durable", "msg=\"append failed; answered 503\" stream=%s "
                    "key=%s events=%zu err=\"%s\"", sophia_stream_name(d->st),
                    d->key, q->n,
                    rep && rep->type == REDIS_REPLY_ERROR ? rep->str
                    : rep ? "unexpected answer to the append script"
                          : "no answer (Redis down or timed out)");
    }
    q->done(q->arg, ok ? 0 : SOPHIA_EUNAVAIL);
    free(q);
}

/* The event's JSON text: its own text in the body it came in, when that
 * is known (the fast parser's span: a JSON text that parses to the
 * event), else the event encoded. Taken from the body, a value is not
 * formatted a second time; number and escape spellings stay the
 * client's, which parse to the same event. */
static char *event_text(json_t *ev, const char *body,
                        const sophia_ingest_span *span, size_t *len)
{
    if (!body || !span)
        return sophia_json_encode(ev, len);
    char *js = malloc(span->len + 1);
    if (js) {
        memcpy(js, body + span->off, span->len);
        js[span->len] = '\0';
        *len = span->len;
    }
    return js;
}

/* EVAL APPEND_LUA 1 key field <json>...; hiredis copies the arguments
 * into its output buffer, and each text is filed with its event once
 * sent (see the top). On success q belongs to on_appended. */
static int send_body(sophia_durable *d, append_req *q, json_t *const *events,
                     const char *body, const sophia_ingest_span *spans)
{
    size_t argc = q->n + 5, made = 0;
    const char **argv = malloc(argc * sizeof(*argv));
    size_t *lens = malloc(argc * sizeof(*lens));
    int rc = argv && lens ? 0 : SOPHIA_ENOMEM;
    while (rc == 0 && made < q->n) {
        size_t i = made;
        argv[5 + i] = event_text(events[i], body, spans ? &spans[i] : NULL,
                                 &lens[5 + i]);
        if (argv[5 + i])
            made++;
        else
            rc = SOPHIA_ENOMEM;
    }
    if (rc == 0) {
        argv[0] = "EVAL";
        argv[1] = APPEND_LUA;
        argv[2] = "1";
        argv[3] = d->key;
        argv[4] = d->field;
        lens[0] = 4;
        lens[1] = sizeof(APPEND_LUA) - 1;
        lens[2] = 1;
        lens[3] = strlen(d->key);
        lens[4] = strlen(d->field);
        sophia_source_redis_acks_ride(d->src, d->rd); /* one write */
        rc = sophia_redis_command(d->rd, on_appended, q, (int)argc, argv, lens);
    }
    q->first = d->head;
    for (size_t i = 0; i < made; i++) {
        char *js = (char *)argv[5 + i]; /* event_text's, made here */
        if (rc == 0)
            file_written(d, js, lens[5 + i], json_incref(events[i]));
        else
            free(js);
    }
    free(argv);
    free(lens);
    return rc;
}

/* Sends a parked body, or answers it when that fails. */
static void send_parked(sophia_durable *d, append_req *q)
{
    json_t **v = malloc(q->n * sizeof(*v));
    for (size_t i = 0; v && i < q->n; i++)
        v[i] = json_array_get(q->events, i);
    int rc = v ? send_body(d, q, v, NULL, NULL) : SOPHIA_ENOMEM;
    free(v);
    json_decref(q->events);
    q->events = NULL;
    if (rc) {
        d->inflight -= q->n;
        d->append_failed += q->n;
        q->done(q->arg, rc);
        free(q);
    }
}

static void fail_parked(sophia_durable *d)
{
    while (d->parked) {
        append_req *q = d->parked;
        d->parked = q->next;
        d->inflight -= q->n;
        d->append_failed += q->n;
        json_decref(q->events);
        q->done(q->arg, SOPHIA_EUNAVAIL);
        free(q);
    }
    d->parked_tail = NULL;
}

/* The first connection is still being made (redis.c's initial state):
 * worth waiting for, unlike a Redis that was up and went away. */
static int first_connect(const sophia_durable *d)
{
    return !sophia_redis_up(d->rd) &&
           strcmp(sophia_redis_last_error(d->rd), "connecting") == 0;
}

static void on_park_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_durable *d = arg;
    if (first_connect(d))
        return; /* redis.c's watchdog bounds the attempt (2 s) */
    event_del(d->park_ev);
    if (!sophia_redis_up(d->rd)) {
        fail_parked(d);
        return;
    }
    append_req *q = d->parked;
    d->parked = d->parked_tail = NULL;
    while (q) {
        append_req *next = q->next;
        send_parked(d, q);
        q = next;
    }
}

static int park(sophia_durable *d, json_t *const *events, append_req *q)
{
    if (!(q->events = json_array()))
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < q->n; i++)
        json_array_append(q->events, events[i]);
    if (d->parked_tail)
        d->parked_tail->next = q;
    else
        d->parked = q;
    d->parked_tail = q;
    struct timeval tv = {0, 5000};
    if (!event_pending(d->park_ev, EV_TIMEOUT, NULL))
        event_add(d->park_ev, &tv);
    return 0;
}

static void warn_down(sophia_durable *d)
{
    int64_t now = sophia_now_mono_us();
    if (now - d->warned_us > 1000000) { /* once a second at most */
        d->warned_us = now;
        sophia_warn("durable", "msg=\"Redis down: ingest answers 503\" "
                    "stream=%s key=%s err=\"%s\"", sophia_stream_name(d->st),
                    d->key, sophia_redis_last_error(d->rd));
    }
}

int sophia_durable_check(sophia_durable *d, size_t n)
{
    size_t cap, used = backlog(d, &cap);
    if (used + n > cap)
        return SOPHIA_EBUSY;
    if (!sophia_redis_up(d->rd) && !first_connect(d)) {
        warn_down(d);
        return SOPHIA_EUNAVAIL;
    }
    return 0;
}

int sophia_durable_append(sophia_durable *d, json_t *const *events, size_t n,
                          const char *body, const sophia_ingest_span *spans,
                          sophia_durable_done_fn done, void *arg)
{
    int rc = sophia_durable_check(d, n);
    if (rc == SOPHIA_EBUSY)
        sophia_stream_count_rejected(d->st, n);
    if (rc)
        return rc;
    append_req *q = calloc(1, sizeof(*q));
    if (!q)
        return SOPHIA_ENOMEM;
    *q = (append_req){.d = d, .n = n, .done = done, .arg = arg};
    rc = sophia_redis_up(d->rd) && !d->parked
             ? send_body(d, q, events, body, spans)
             : park(d, events, q); /* first connect: encoded when sent */
    if (rc) {
        free(q);
        return rc;
    }
    d->inflight += n;
    return 0;
}

const char *sophia_durable_stream_key(const sophia_durable *d)
{
    return d->key;
}

json_t *sophia_durable_stats_json(const sophia_durable *d)
{
    size_t cap, used = backlog(d, &cap);
    return json_pack("{s:s,s:b,s:I,s:I,s:I,s:I}", "key", d->key, "up",
                     sophia_durable_up(d), "appended", (json_int_t)d->appended,
                     "append_failed", (json_int_t)d->append_failed, "backlog",
                     (json_int_t)used, "reused", (json_int_t)d->reused);
}
