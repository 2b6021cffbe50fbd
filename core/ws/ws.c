/*
 * ws - see ws.h for the routing design.
 *
 * Lifetimes: a client exists from ESTABLISHED to CLOSED. Its subscriptions
 * are recorded twice, in the client (to clean up on close) and in the
 * router's indexes (to route), and both go together. Messages are
 * reference-counted: each queue slot and each history entry holds one.
 * Code outside lws callbacks names a client by its id (by_id), never by
 * pointer, because the connection may close in between.
 */
#include "ws/ws.h"

#include <event2/event.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "lib/bearer.h"
#include "lib/dict.h"
#include "lib/jsonlimit.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "ws/origin.h"
#include "ws/ws_history.h"
#include "ws/ws_latest.h"
#include "ws/ws_jwt.h"

#define WS_MAX_TOPIC 200
/* One send carries at most this much (http.c sets the protocol's
 * tx_packet_size to match: lws would cut larger sends into 4 KiB ones). A
 * flush or WRITEABLE turn sends at most WS_GATHERS_PER_TURN of them, so one
 * deep queue cannot hold the loop. */
#define WS_GATHER_MAX (64 * 1024)
#define WS_GATHERS_PER_TURN 16
/* A client given this many messages in one loop turn (one big ingest
 * batch) is written at once rather than at the flush: the queue is for
 * clients whose socket is full, and a fast one must not reach
 * coalesce_at or max_queue only because the turn was long. */
#define WS_FLUSH_AT 256
/* Under load, flushes would follow each other after every small turn of
 * work, one send per client for one or two messages each. So while events
 * wait in the stream queues a flush starts no sooner than the last one's
 * duration after it ended (at most about half the loop goes to flushing,
 * and messages per send grow with the load), and never more than this
 * late. With nothing waiting (a steady rate) it runs at once. */
#define WS_FLUSH_DELAY_MAX_US 5000
#define WS_MAX_METHODS 32
/* The topic sweep (see on_sweep) runs every WS_SWEEP_US for at most
 * WS_SWEEP_BUDGET_US (the clock read every 32 topics): visiting a topic
 * costs 1-3 us (cache misses), so a run holds the loop ~1 ms, 2% of it,
 * and a full pass over 100000 topics takes about 10 s. */
#define WS_SWEEP_US 50000
#define WS_SWEEP_BUDGET_US 1000
#define WS_CLOSE_AUTH 4001
/* lws's own opcode for close frames (private since 4.0, value stable;
 * lws_write() still frames it): see send_close(). */
#define WS_WRITE_CLOSE ((enum lws_write_protocol)4)

typedef struct ws_subs {
    sophia_ws_client **v;
    size_t n, cap;
} ws_subs;

typedef struct ws_topic {
    uint64_t seq;
    uint64_t base;      /* seq before its first publish (see topic_get) */
    int64_t last_us;    /* monotonic time of the last publish */
    char *name;
    struct ws_topic *prev, *next; /* router->tlist, walked by the sweep */
    ws_history hist;
    ws_subs subs;
} ws_topic;

struct sophia_ws_client {
    sophia_ws_router *r;
    struct lws *wsi;
    uint64_t id;
    sophia_ws_client *prev, *next; /* all clients, for close_all and ticks */
    char **subs;
    size_t nsubs;
    ws_msg **q; /* ring of qcap slots, grown up to max_queue on demand;
                 * NULL slots are coalesced away */
    size_t qcap, qhead, qlen, tombs;
    uint64_t qbase;        /* absolute index of q[qhead] */
    sophia_dict *coalesce; /* ckey -> absolute index + 1 */
    uint64_t stamp;        /* last publish that reached this client */
    int close_code;
    const char *close_reason;
    char *rx;
    size_t rx_len;
    /* auth */
    int authed;
    json_t *claims;
    int64_t auth_deadline_us;
    double exp;            /* token exp, 0 = none */
    /* health */
    int64_t last_rx_us;
    int64_t ping_sent_us;  /* 0 = no ping outstanding */
    int want_ping;
    int kill; /* dead peer: drop without a close frame */
    int rearm_pending; /* listed in router->rearm */
    size_t dirty_at;   /* index + 1 in router->dirty; 0 = not listed */
};

/* The scope kind a method needs when auth is on (SPEC §5), from its
 * name: see method_scope(). */
typedef enum {
    WS_SCOPE_NONE,
    WS_SCOPE_CACHE,
    WS_SCOPE_MEMORY,
    WS_SCOPE_STATS
} ws_scope;

typedef struct ws_method {
    char name[64];
    sophia_ws_method_fn fn;
    void *arg;
    ws_scope scope;
} ws_method;

struct sophia_ws_router {
    sophia_loop *loop;     /* NULL: no timers, no flush (tests, fuzzing) */
    sophia_ws_backlog_fn backlog; /* see schedule_flush */
    void *backlog_arg;
    ws_method methods[WS_MAX_METHODS]; /* registered request methods */
    sophia_dict *topics;   /* name -> ws_topic */
    sophia_dict *patterns; /* prefix -> ws_subs */
    size_t plen[WS_MAX_TOPIC + 1]; /* patterns per prefix length */
    sophia_dict *by_id;    /* "%llu" -> client */
    sophia_ws_client *clients;
    /* configuration */
    size_t max_queue, coalesce_at, history, max_conn, max_subs, max_msg;
    int64_t history_age_us, ping_us, pong_us, auth_us;
    char *secret;
    char **origins;
    size_t norigins;
    size_t max_topics;
    int jwt_require_exp;
    char *jwt_issuer, *jwt_audience;
    /* every topic, for the sweep; sweep_at is where the next run starts */
    ws_topic *tlist, *sweep_at;
    uint64_t seq_floor;     /* highest seq of a freed topic; 0 = none freed */
    struct event *sweep_ev;
    /* the token checked by the last upgrade filter, for sophia_ws_open */
    struct lws *pending_wsi;
    json_t *pending_claims;
    uint64_t stamp, pubid, next_id;
    struct event *tick;
    struct event *rearm_ev; /* see rearm_later() */
    uint64_t *rearm;        /* ids of clients whose write was cut short */
    size_t nrearm, rearm_cap;
    /* clients given messages since the last flush (see on_flush) */
    struct event *flush_ev;
    sophia_ws_client **dirty;
    size_t ndirty, dirty_cap;
    unsigned char *gather;  /* LWS_PRE + WS_GATHER_MAX, see queue_write() */
    int64_t flush_end_us, flush_cost_us; /* the last flush, see mark_dirty */
    sophia_jsonw render;    /* reused by render_msg: no malloc per message */
    sophia_cluster *cluster;
    ws_latest *latest;      /* each dashboard's latest metric updates */
    sophia_ws_stats st;
};

static void kick(const sophia_ws_router *r)
{
    if (r->loop)
        sophia_loop_kick(r->loop);
}

/* lws 4.1 on libuv re-arms its timer for a new timeout only after it
 * serviced a socket; with HTTP served outside lws that may be never, so
 * wake its service pipe to make a close deadline count. */
static void close_deadline(struct lws *wsi, int secs)
{
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, secs);
    lws_cancel_service(lws_get_context(wsi));
}

/* ------------------------------------------------------------ messages */

static ws_msg *msg_from_json(json_t *obj)
{
    size_t len;
    char *s = sophia_json_encode(obj, &len);
    if (!s)
        return NULL;
    ws_msg *m = ws_msg_new(s, len, LWS_PRE);
    free(s);
    return m;
}

/* Writes the close frame ourselves, then drops the connection: with the
 * libuv event-lib, lws 4.1 ends a connection whose callback returned -1
 * with a bare TCP shutdown, ignoring lws_close_reason() (seen with strace),
 * and the client would see 1006 instead of our code. */
static int send_close(struct lws *wsi, int code, const char *reason)
{
    unsigned char buf[LWS_PRE + 125];
    size_t n = reason ? strlen(reason) : 0;
    if (n > 123)
        n = 123;
    buf[LWS_PRE] = (unsigned char)(code >> 8);
    buf[LWS_PRE + 1] = (unsigned char)(code & 0xff);
    if (n)
        memcpy(buf + LWS_PRE + 2, reason, n);
    lws_write(wsi, buf + LWS_PRE, n + 2, WS_WRITE_CLOSE);
    return -1;
}

/* ------------------------------------------------------------- queues */

static void client_request_close(sophia_ws_client *c, int code,
                                 const char *reason)
{
    if (c->close_code)
        return;
    c->close_code = code;
    c->close_reason = reason;
    if (!c->wsi) /* detached (sophia_ws_feed): nothing to send it on */
        return;
    lws_callback_on_writable(c->wsi);
    /* A peer that stopped reading never makes us writeable again: lws
     * drops the connection after 2 s if the close frame did not go. */
    close_deadline(c->wsi, 2);
    kick(c->r);
}

static ws_msg **qslot(sophia_ws_client *c, size_t i)
{
    return &c->q[(c->qhead + i) % c->qcap];
}

static void coalesce_reset(sophia_ws_client *c)
{
    if (c->coalesce && sophia_dict_size(c->coalesce)) {
        sophia_dict_free(c->coalesce, NULL);
        c->coalesce = NULL;
    }
}

static void queue_pop(sophia_ws_client *c)
{
    ws_msg **s = qslot(c, 0);
    if (*s)
        ws_msg_unref(*s);
    else
        c->tombs--;
    *s = NULL;
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qbase++;
    c->qlen--;
}

static void queue_clear(sophia_ws_client *c)
{
    while (c->qlen)
        queue_pop(c);
    coalesce_reset(c);
}

static void coalesce_note(sophia_ws_client *c, const ws_msg *m, uint64_t abs)
{
    if (!c->coalesce && !(c->coalesce = sophia_dict_new()))
        return;
    sophia_dict_set(c->coalesce, m->ckey, (void *)(uintptr_t)(abs + 1));
}

/* Squeezes the tombstones out; absolute indexes change, so the coalescing
 * index is rebuilt. Runs only when the ring is full of them. */
static void queue_compact(sophia_ws_client *c)
{
    size_t w = 0, n = c->qlen;
    coalesce_reset(c);
    for (size_t i = 0; i < n; i++) {
        ws_msg *m = *qslot(c, i);
        *qslot(c, i) = NULL;
        if (!m)
            continue;
        *qslot(c, w) = m;
        if (m->ckey)
            coalesce_note(c, m, c->qbase + w);
        w++;
    }
    c->qlen = w;
    c->tombs = 0;
}

/* Past the high-water mark, the queued update of the same topic+metric
 * (if still queued) gives way to `m`. */
static void coalesce_old(sophia_ws_client *c, const ws_msg *m)
{
    uintptr_t v = c->coalesce ? (uintptr_t)sophia_dict_get(c->coalesce, m->ckey)
                              : 0;
    if (!v)
        return;
    uint64_t abs = v - 1;
    if (abs < c->qbase || abs >= c->qbase + c->qlen)
        return;
    ws_msg **s = qslot(c, (size_t)(abs - c->qbase));
    if (!*s || !(*s)->ckey || strcmp((*s)->ckey, m->ckey) != 0)
        return;
    ws_msg_unref(*s);
    *s = NULL;
    c->tombs++;
    c->r->st.coalesced++;
}

static void client_drop_slow(sophia_ws_client *c)
{
    c->r->st.dropped += c->qlen - c->tombs + 1;
    c->r->st.slow_closed++;
    queue_clear(c);
    client_request_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                         "send queue full");
}

/* Doubles the ring (most clients never queue more than a few messages,
 * so they never pay for max_queue slots). */
static int queue_grow(sophia_ws_client *c)
{
    size_t cap = c->qcap * 2 > c->r->max_queue ? c->r->max_queue : c->qcap * 2;
    ws_msg **q = calloc(cap, sizeof(*q));
    if (!q)
        return -1;
    for (size_t i = 0; i < c->qlen; i++)
        q[i] = *qslot(c, i);
    free(c->q);
    c->q = q;
    c->qcap = cap;
    c->qhead = 0;
    return 0;
}

static void rearm_later(sophia_ws_client *c);
static void mark_dirty(sophia_ws_client *c);
static void client_flush(sophia_ws_client *c);

/* Takes a reference to `m` when queued. Nothing is written here: the
 * client is listed for the flush that runs once the current loop callback
 * (a whole ingest batch, say) is done, so every message a client got in
 * that turn leaves in one send (see on_flush). */
static void client_send(sophia_ws_client *c, ws_msg *m)
{
    sophia_ws_router *r = c->r;
    if (c->close_code) /* closing: nothing new goes in */
        return;
    int co = m->ckey && c->qlen >= r->coalesce_at;
    if (co)
        coalesce_old(c, m);
    if (c->qlen >= r->max_queue && c->tombs)
        queue_compact(c);
    if (c->qlen == c->qcap && c->qcap < r->max_queue && queue_grow(c) < 0)
        return;
    if (c->qlen >= r->max_queue || c->qlen == c->qcap) {
        client_drop_slow(c);
        return;
    }
    m->refs++;
    *qslot(c, c->qlen) = m;
    if (co)
        coalesce_note(c, m, c->qbase + c->qlen);
    c->qlen++;
    mark_dirty(c);
    if ((c->qlen >= WS_FLUSH_AT || c->qlen * 2 >= r->coalesce_at) &&
        c->wsi && r->flush_ev && !lws_partial_buffered(c->wsi))
        client_flush(c);
}

static void client_send_json(sophia_ws_client *c, json_t *obj)
{
    ws_msg *m = msg_from_json(obj);
    json_decref(obj);
    if (!m)
        return;
    client_send(c, m);
    ws_msg_unref(m);
    kick(c->r);
}

static void client_error(sophia_ws_client *c, const char *id, const char *code,
                         const char *msg)
{
    json_t *e = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "code",
                          code, "message", msg);
    if (id)
        json_object_set_new(e, "id", json_string(id));
    client_send_json(c, e);
}

static sophia_ws_client *client_by_id(sophia_ws_router *r, uint64_t id)
{
    char k[24];
    if (!r)
        return NULL;
    snprintf(k, sizeof(k), "%" PRIu64, id);
    return sophia_dict_get(r->by_id, k);
}

/* ------------------------------------------------------- subscriptions */

static int topic_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > WS_MAX_TOPIC)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || t[i] == '"' || t[i] == '\\' ||
            (t[i] == '*' && i != n - 1))
            return 0;
    return 1;
}

static int is_pattern(const char *t)
{
    return t[strlen(t) - 1] == '*';
}

static void topic_free(void *p);

/* Where a new topic's seq starts. A seq must never go back while a client
 * may hold an old one for `since`: until the sweep has freed a published
 * topic, topics start at 0 (first message seq 1); from then on a new
 * topic - maybe a freed one coming back - starts above every seq ever
 * freed and at least at the wall clock in microseconds, as the cluster's
 * Redis script does, so a `since` from an earlier life of the topic finds
 * a gap and gets `resync`, never a replay that silently skips messages. */
static uint64_t topic_base(const sophia_ws_router *r)
{
    if (!r->seq_floor)
        return 0;
    uint64_t now = (uint64_t)sophia_now_wall_us();
    return now > r->seq_floor ? now : r->seq_floor + 1;
}

static ws_topic *topic_get(sophia_ws_router *r, const char *name, int create)
{
    ws_topic *t = sophia_dict_get(r->topics, name);
    if (t || !create)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return NULL;
    }
    t->seq = t->base = topic_base(r);
    ws_history_init(&t->hist, r->history);
    sophia_dict_set(r->topics, name, t);
    t->next = r->tlist;
    if (r->tlist)
        r->tlist->prev = t;
    r->tlist = t;
    return t;
}

static void topic_remove(sophia_ws_router *r, ws_topic *t)
{
    if (r->sweep_at == t)
        r->sweep_at = t->next;
    if (t->prev)
        t->prev->next = t->next;
    else
        r->tlist = t->next;
    if (t->next)
        t->next->prev = t->prev;
    sophia_dict_del(r->topics, t->name);
    topic_free(t);
}

static int subs_add(ws_subs *s, sophia_ws_client *c)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        sophia_ws_client **v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = c;
    return 0;
}

static void subs_del(ws_subs *s, sophia_ws_client *c)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (s->v[i] == c) {
            s->v[i] = s->v[--s->n];
            return;
        }
}

static void subs_free(void *p)
{
    ws_subs *s = p;
    free(s->v);
    free(s);
}

static int index_add(sophia_ws_router *r, sophia_ws_client *c, const char *s)
{
    if (!is_pattern(s)) {
        ws_topic *t = topic_get(r, s, 1);
        return t ? subs_add(&t->subs, c) : -1;
    }
    size_t n = strlen(s) - 1;
    char prefix[WS_MAX_TOPIC + 1];
    memcpy(prefix, s, n);
    prefix[n] = '\0';
    ws_subs *ps = sophia_dict_get(r->patterns, prefix);
    if (!ps) {
        if (!(ps = calloc(1, sizeof(*ps))))
            return -1;
        sophia_dict_set(r->patterns, prefix, ps);
    }
    if (subs_add(ps, c) < 0)
        return -1;
    r->plen[n]++;
    return 0;
}

static void index_del(sophia_ws_router *r, sophia_ws_client *c, const char *s)
{
    if (!is_pattern(s)) {
        ws_topic *t = topic_get(r, s, 0);
        if (!t)
            return;
        subs_del(&t->subs, c);
        /* Never published to: nothing to keep. Without this, a client
         * cycling through made-up topic names would grow the index for
         * ever. Published topics wait for the sweep (their history). */
        if (t->subs.n == 0 && t->seq == t->base)
            topic_remove(r, t);
        return;
    }
    size_t n = strlen(s) - 1;
    char prefix[WS_MAX_TOPIC + 1];
    memcpy(prefix, s, n);
    prefix[n] = '\0';
    ws_subs *ps = sophia_dict_get(r->patterns, prefix);
    if (!ps)
        return;
    subs_del(ps, c);
    r->plen[n]--;
    if (ps->n == 0)
        subs_free(sophia_dict_del(r->patterns, prefix));
}

static ssize_t client_sub_find(const sophia_ws_client *c, const char *s)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (strcmp(c->subs[i], s) == 0)
            return (ssize_t)i;
    return -1;
}

static int client_subscribe(sophia_ws_client *c, const char *s)
{
    if (client_sub_find(c, s) >= 0)
        return 0;
    if (c->nsubs >= c->r->max_subs)
        return -1;
    char **v = realloc(c->subs, (c->nsubs + 1) * sizeof(*v));
    if (!v)
        return -1;
    c->subs = v;
    if (!(c->subs[c->nsubs] = strdup(s)) || index_add(c->r, c, s) < 0) {
        free(c->subs[c->nsubs]);
        return -1;
    }
    c->nsubs++;
    c->r->st.subscriptions++;
    return 0;
}

static void client_unsubscribe(sophia_ws_client *c, const char *s)
{
    ssize_t i = client_sub_find(c, s);
    if (i < 0)
        return;
    index_del(c->r, c, s);
    free(c->subs[i]);
    c->subs[i] = c->subs[--c->nsubs];
    c->r->st.subscriptions--;
}

/* 1 when topic `t` is covered by one of the client's subscriptions. */
static int client_covers(const sophia_ws_client *c, const char *t)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (sophia_jwt_topic_allowed(c->subs[i], t))
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- auth */

static int auth_enabled(const sophia_ws_router *r)
{
    return r->secret != NULL;
}

/* SPEC §5 scopes: with auth on, a token grants only the kinds of access
 * its claims name (`topics`, `cache`, `memory`, `stats`); a missing claim
 * grants nothing of that kind. With auth off (loopback only), all. */

/* `s` within one of the patterns of claim `name` (an array of strings,
 * checked by ws_jwt.c). */
static int pattern_permitted(const sophia_ws_client *c, const char *name,
                             const char *s)
{
    json_t *allowed = json_object_get(c->claims, name), *a;
    size_t i;
    if (!auth_enabled(c->r))
        return 1;
    json_array_foreach(allowed, i, a)
        if (sophia_jwt_topic_allowed(json_string_value(a), s))
            return 1;
    return 0;
}

static int topic_permitted(const sophia_ws_client *c, const char *s)
{
    return pattern_permitted(c, "topics", s);
}

/* The `forbidden` message: which claim is missing, or that `what` is
 * outside it. */
static void scope_message(const sophia_ws_client *c, const char *claim,
                          const char *what, char *out, size_t n)
{
    if (!json_object_get(c->claims, claim))
        snprintf(out, n, "the token has no \"%s\" scope claim", claim);
    else
        snprintf(out, n, "%s is outside the token's \"%s\" scope",
                 what ? what : "the request", claim);
}

static void client_set_claims(sophia_ws_client *c, json_t *claims)
{
    json_decref(c->claims);
    c->claims = claims;
    c->authed = 1;
    json_t *exp = json_object_get(claims, "exp");
    c->exp = exp ? json_number_value(exp) : 0;
}

static sophia_jwt_status verify(sophia_ws_router *r, const char *token,
                                json_t **claims)
{
    sophia_jwt_policy pol = {r->jwt_require_exp, r->jwt_issuer, r->jwt_audience};
    sophia_jwt_status st = sophia_jwt_verify_policy(
        token, r->secret, sophia_now_wall_us() / 1000000, &pol, claims);
    if (st != SOPHIA_JWT_OK)
        r->st.auth_failures++;
    return st;
}

/* The token of an upgrade request: ?token= or Authorization: Bearer. */
static char *upgrade_token(struct lws *wsi)
{
    char buf[4096];
    const char *v = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof(buf));
    if (v && *v)
        return strdup(v);
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 0 || n >= (int)sizeof(buf) ||
        lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        return NULL;
    const char *token = sophia_bearer_token(buf);
    return token ? strdup(token) : NULL;
}

/* Same-origin by default (origin.h): a page served by another site may
 * not open /ws in its visitor's browser unless websocket.origins lists it
 * (or "*"). Over-long headers are nobody's own origin. */
static int origin_allowed(const sophia_ws_router *r, struct lws *wsi)
{
    char o[512], h[512];
    int on = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    int hn = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    if (on <= 0)
        return 1;
    if (on >= (int)sizeof(o) || hn >= (int)sizeof(h) ||
        lws_hdr_copy(wsi, o, sizeof(o), WSI_TOKEN_ORIGIN) < 0)
        return 0;
    if (hn <= 0 || lws_hdr_copy(wsi, h, sizeof(h), WSI_TOKEN_HOST) < 0)
        h[0] = '\0';
    return sophia_origin_allowed(o, h, r->origins, r->norigins);
}

static int refuse(sophia_ws_router *r, struct lws *wsi, unsigned code,
                  const char *why)
{
    r->st.refused++;
    sophia_debug("ws", "msg=\"upgrade refused\" status=%u why=\"%s\"", code, why);
    lws_return_http_status(wsi, code, why);
    return 1;
}

int sophia_ws_filter(sophia_ws_router *r, struct lws *wsi)
{
    if (!r)
        return 1;
    if (r->st.connections >= r->max_conn)
        return refuse(r, wsi, 503, "too many WebSocket connections");
    if (!origin_allowed(r, wsi))
        return refuse(r, wsi, 403, "origin not allowed");
    json_decref(r->pending_claims);
    r->pending_claims = NULL;
    r->pending_wsi = NULL;
    if (!auth_enabled(r))
        return 0;
    char *token = upgrade_token(wsi);
    if (!token) /* may still authenticate with a first `auth` message */
        return 0;
    json_t *claims = NULL;
    sophia_jwt_status st = verify(r, token, &claims);
    free(token);
    if (st != SOPHIA_JWT_OK)
        return refuse(r, wsi, 401, sophia_jwt_strerror(st));
    r->pending_wsi = wsi;
    r->pending_claims = claims;
    return 0;
}

static void on_auth_message(sophia_ws_client *c, json_t *msg)
{
    const char *token = json_string_value(json_object_get(msg, "token"));
    json_t *claims = NULL;
    if (!auth_enabled(c->r)) {
        client_send_json(c, json_pack("{s:s}", "type", "authenticated"));
        return;
    }
    sophia_jwt_status st = token ? verify(c->r, token, &claims)
                                 : SOPHIA_JWT_MALFORMED;
    if (!token)
        c->r->st.auth_failures++;
    if (st != SOPHIA_JWT_OK) {
        client_request_close(c, WS_CLOSE_AUTH, sophia_jwt_strerror(st));
        return;
    }
    client_set_claims(c, claims);
    json_t *ok = json_pack("{s:s}", "type", "authenticated");
    json_t *sub = json_object_get(claims, "sub");
    if (json_is_string(sub))
        json_object_set(ok, "sub", sub);
    client_send_json(c, ok);
}

/* ------------------------------------------------------------ recovery */

typedef struct replay_item {
    uint64_t pubid;
    ws_msg *m;
} replay_item;

static int replay_cmp(const void *a, const void *b)
{
    uint64_t x = ((const replay_item *)a)->pubid,
             y = ((const replay_item *)b)->pubid;
    return x < y ? -1 : x > y;
}

static void send_resync(sophia_ws_client *c, const char *topic, uint64_t seq)
{
    c->r->st.resyncs++;
    client_send_json(c, json_pack("{s:s,s:s,s:I}", "type", "resync", "topic",
                                  topic, "seq", (json_int_t)seq));
}

/* Collects the history newer than since[topic] for every topic the client
 * now covers; answers resync where that is gone. */
static size_t replay_collect(sophia_ws_client *c, json_t *since,
                             replay_item **out, size_t *cap)
{
    sophia_ws_router *r = c->r;
    int64_t now = sophia_now_mono_us();
    const char *topic;
    json_t *v;
    size_t n = 0;
    json_object_foreach(since, topic, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            !topic_valid(topic) || is_pattern(topic) || !client_covers(c, topic))
            continue;
        ws_topic *t = topic_get(r, topic, 0);
        uint64_t cur = t ? t->seq : 0, s = (uint64_t)json_integer_value(v);
        size_t first = 0, k = 0;
        if (t)
            ws_history_prune(&t->hist, now, r->history_age_us);
        if (!t ? s != 0 : ws_history_since(&t->hist, s, cur, &first, &k) != WS_HIST_OK) {
            send_resync(c, topic, cur);
            continue;
        }
        if (n + k > *cap) {
            size_t nc = (n + k) * 2;
            replay_item *p = realloc(*out, nc * sizeof(*p));
            if (!p)
                break;
            *out = p;
            *cap = nc;
        }
        for (size_t i = 0; i < k; i++) {
            ws_msg *m = ws_history_at(&t->hist, first + i)->m;
            (*out)[n++] = (replay_item){m->pubid, m};
        }
    }
    return n;
}

static void replay(sophia_ws_client *c, json_t *since)
{
    replay_item *items = NULL;
    size_t cap = 0, n = replay_collect(c, since, &items, &cap);
    if (n > 1)
        qsort(items, n, sizeof(*items), replay_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i && items[i].pubid == items[i - 1].pubid)
            continue; /* the same publish, replayed for another topic */
        client_send(c, items[i].m);
        c->r->st.recovered++;
    }
    free(items);
    kick(c->r);
}

/* --------------------------------------------------------- protocol */

/* 1 when the token's `topics` scope covers `topic`; else answers request
 * `id` (NULL for a subscription) with `forbidden` and returns 0. */
static int topic_allowed(sophia_ws_client *c, const char *id, const char *topic)
{
    char m[300], what[240];
    if (topic_permitted(c, topic))
        return 1;
    c->r->st.forbidden++;
    snprintf(what, sizeof(what), "topic '%s'", topic);
    scope_message(c, "topics", what, m, sizeof(m));
    client_error(c, id, "forbidden", m);
    return 0;
}

static int sub_one(sophia_ws_client *c, const char *s)
{
    char m[300];
    if (!topic_allowed(c, NULL, s))
        return -1;
    if (client_subscribe(c, s) < 0) {
        snprintf(m, sizeof(m), "at most %zu subscriptions per connection",
                 c->r->max_subs);
        client_error(c, NULL, "too_many_subscriptions", m);
        return -1;
    }
    return 0;
}

/* subscribe/unsubscribe share the validation and the answer's shape. */
static void on_sub_message(sophia_ws_client *c, json_t *msg, int subscribe)
{
    json_t *subs = json_object_get(msg, "subscriptions");
    json_t *since = subscribe ? json_object_get(msg, "since") : NULL;
    if (!json_is_array(subs) || (since && !json_is_object(since))) {
        client_error(c, NULL, "bad_request",
                     "\"subscriptions\" must be an array of topic strings "
                     "and \"since\" an object of topic: seq");
        return;
    }
    json_t *done = json_array(), *v;
    size_t i;
    json_array_foreach(subs, i, v) {
        const char *s = json_string_value(v);
        if (!s || !topic_valid(s)) {
            client_error(c, NULL, "bad_topic",
                         "topics are 1-200 printable characters; '*' only at the end");
            continue;
        }
        if (!subscribe)
            client_unsubscribe(c, s);
        else if (sub_one(c, s) < 0)
            continue;
        json_array_append(done, v);
    }
    client_send_json(c, json_pack("{s:s,s:o}", "type",
                                  subscribe ? "subscribed" : "unsubscribed",
                                  "subscriptions", done));
    if (since)
        replay(c, since);
}

static void respond(sophia_ws_client *c, const char *id, json_t *data)
{
    json_t *res = json_pack("{s:s,s:o}", "type", "response", "data",
                            data ? data : json_null());
    if (id)
        json_object_set_new(res, "id", json_string(id));
    client_send_json(c, res);
}

/* request `history`: {topic, since = 0, limit = 100}. */
static void method_history(sophia_ws_client *c, const char *id, json_t *p)
{
    const char *topic = json_string_value(json_object_get(p, "topic"));
    json_t *js = json_object_get(p, "since"), *jl = json_object_get(p, "limit");
    if (!topic || !topic_valid(topic) || is_pattern(topic) ||
        (js && !json_is_integer(js)) || (jl && !json_is_integer(jl))) {
        client_error(c, id, "bad_request", "history needs params {\"topic\": "
                     "an exact topic, \"since\"?: seq, \"limit\"?: count}");
        return;
    }
    if (!topic_allowed(c, id, topic))
        return;
    ws_topic *t = topic_get(c->r, topic, 0);
    json_int_t since = js ? json_integer_value(js) : 0;
    json_int_t limit = jl ? json_integer_value(jl) : 100;
    json_t *msgs = json_array();
    int complete = 1;
    if (t) {
        ws_history_prune(&t->hist, sophia_now_mono_us(), c->r->history_age_us);
        size_t first = 0, n = 0;
        uint64_t s = since < 0 ? 0 : (uint64_t)since;
        if (ws_history_since(&t->hist, s, t->seq, &first, &n) != WS_HIST_OK) {
            complete = 0; /* give what is left */
            first = 0;
            n = t->hist.len;
        }
        for (size_t i = 0; i < n && (json_int_t)i < limit; i++) {
            const ws_hist_entry *e = ws_history_at(&t->hist, first + i);
            if (e->seq <= s)
                continue;
            json_array_append_new(msgs, json_loads(ws_msg_text(e->m, LWS_PRE),
                                                   0, NULL));
        }
        if ((json_int_t)n > limit)
            complete = 0;
    }
    respond(c, id, json_pack("{s:s,s:I,s:o,s:b}", "topic", topic, "seq",
                             (json_int_t)(t ? t->seq : 0), "messages", msgs,
                             "complete", complete));
}

/* request `latest`: {topic} - a dashboard topic's latest update of each
 * metric (ws_latest.h), oldest first, each as it was sent (with its seq),
 * and the topic's seq now. What history has aged out of is still here. */
static void method_latest(sophia_ws_client *c, const char *id, json_t *p)
{
    const char *topic = json_string_value(json_object_get(p, "topic"));
    if (!topic || !topic_valid(topic) || is_pattern(topic)) {
        client_error(c, id, "bad_request",
                     "latest needs params {\"topic\": an exact topic}");
        return;
    }
    if (!topic_allowed(c, id, topic))
        return;
    ws_msg **v = NULL;
    size_t n = ws_latest_get(c->r->latest, topic, &v);
    json_t *msgs = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(msgs, json_loads(ws_msg_text(v[i], LWS_PRE), 0, NULL));
    free(v);
    const ws_topic *t = topic_get(c->r, topic, 0);
    respond(c, id, json_pack("{s:s,s:I,s:o}", "topic", topic, "seq",
                             (json_int_t)(t ? t->seq : 0), "messages", msgs));
}

static const ws_method *method_find(const sophia_ws_router *r, const char *name)
{
    for (size_t i = 0; i < WS_MAX_METHODS; i++)
        if (r->methods[i].fn && strcmp(r->methods[i].name, name) == 0)
            return &r->methods[i];
    return NULL;
}

/* Lists stats first when registered, as before it was: the names clients
 * were told stay in the order they were. */
static void unknown_method(sophia_ws_client *c, const char *id)
{
    const ws_method *v = c->r->methods;
    char m[1024] = "method must be one of: ";
    size_t o = strlen(m);
    o += (size_t)snprintf(m + o, sizeof(m) - o, "%shistory, latest",
                          method_find(c->r, "stats") ? "stats, " : "");
    for (size_t i = 0; i < WS_MAX_METHODS && o < sizeof(m); i++)
        if (v[i].fn && strcmp(v[i].name, "stats") != 0)
            o += (size_t)snprintf(m + o, sizeof(m) - o, ", %s", v[i].name);
    client_error(c, id, "unknown_method", m);
}

/* A method's scope kind follows its name, so whoever registers stats, a
 * cache.* or a memory.* method gets the check without asking for it. */
static ws_scope method_scope(const char *name)
{
    if (strcmp(name, "stats") == 0)
        return WS_SCOPE_STATS;
    if (strncmp(name, "cache.", 6) == 0)
        return WS_SCOPE_CACHE;
    if (strncmp(name, "memory.", 7) == 0)
        return WS_SCOPE_MEMORY;
    return WS_SCOPE_NONE;
}

/* A context value as text, the form memory search filters compare. */
static const char *scalar_text(const json_t *v, char *buf, size_t n)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    return NULL;
}

/* 1 when every key of `scope` is absent from `ctx` or has the same value
 * there. */
static int scope_fits(const json_t *scope, const json_t *ctx)
{
    const char *k;
    json_t *sv;
    json_object_foreach((json_t *)scope, k, sv) {
        json_t *cv = json_object_get(ctx, k);
        char a[32], b[32];
        const char *st = scalar_text(sv, a, sizeof(a)), *ct;
        if (cv && (!(ct = scalar_text(cv, b, sizeof(b))) || !st || strcmp(st, ct)))
            return 0;
    }
    return 1;
}

/* The params a memory.* method runs with: params.context narrowed to the
 * first of the token's `memory` scopes it fits, the scope's keys filled
 * in, so a search without a context is filtered to that scope and one
 * naming another user_id fits none. NULL (with *code and `why`) when
 * refused; otherwise a new reference. */
static json_t *memory_params(const sophia_ws_client *c, json_t *params,
                             const char **code, char *why, size_t n)
{
    json_t *scopes = json_object_get(c->claims, "memory"), *sc;
    json_t *ctx = json_object_get(params, "context");
    size_t i;
    *code = "forbidden";
    if (!scopes) {
        scope_message(c, "memory", NULL, why, n);
        return NULL;
    }
    if ((params && !json_is_object(params)) || (ctx && !json_is_object(ctx))) {
        *code = "bad_request";
        snprintf(why, n, "params and params.context must be objects");
        return NULL;
    }
    for (i = 0; i < (json_is_array(scopes) ? json_array_size(scopes) : 1); i++) {
        sc = json_is_array(scopes) ? json_array_get(scopes, i) : scopes;
        if (!scope_fits(sc, ctx))
            continue;
        json_t *p = params ? json_deep_copy(params) : json_object();
        json_t *nc = ctx ? json_deep_copy(ctx) : json_object();
        json_object_update(nc, sc);
        json_object_set_new(p, "context", nc);
        return p;
    }
    scope_message(c, "memory", "params.context", why, n);
    return NULL;
}

/* Runs a registered method once the token's scope allows it. */
static void call_method(sophia_ws_client *c, const ws_method *m, const char *id,
                        json_t *params)
{
    char why[600], what[480];
    const char *code = "forbidden";
    json_t *own = NULL;
    if (auth_enabled(c->r) && m->scope == WS_SCOPE_CACHE) {
        const char *key = json_string_value(json_object_get(params, "key"));
        snprintf(what, sizeof(what), "key '%.400s'", key ? key : "");
        if (!json_object_get(c->claims, "cache") ||
            (key && !pattern_permitted(c, "cache", key))) {
            scope_message(c, "cache", what, why, sizeof(why));
            goto refuse;
        }
    } else if (auth_enabled(c->r) && m->scope == WS_SCOPE_MEMORY) {
        if (!(own = memory_params(c, params, &code, why, sizeof(why))))
            goto refuse;
        params = own;
    } else if (auth_enabled(c->r) && m->scope == WS_SCOPE_STATS &&
               !json_is_true(json_object_get(c->claims, "stats"))) {
        snprintf(why, sizeof(why), "stats needs \"stats\": true in the token "
                 "(the \"stats\" scope claim)");
        goto refuse;
    }
    m->fn(c->r, c->id, id, params, m->arg);
    json_decref(own);
    return;
refuse:
    if (strcmp(code, "forbidden") == 0)
        c->r->st.forbidden++;
    client_error(c, id, code, why);
}

static void on_request(sophia_ws_client *c, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    const ws_method *m = method ? method_find(c->r, method) : NULL;
    if (method && strcmp(method, "history") == 0)
        method_history(c, id, params);
    else if (method && strcmp(method, "latest") == 0)
        method_latest(c, id, params);
    else if (m)
        call_method(c, m, id, params);
    else
        unknown_method(c, id);
}

static void dispatch(sophia_ws_client *c, const char *type, json_t *msg)
{
    if (strcmp(type, "auth") == 0)
        on_auth_message(c, msg);
    else if (auth_enabled(c->r) && !c->authed)
        client_request_close(c, WS_CLOSE_AUTH,
                             "authenticate first: {\"type\":\"auth\",\"token\":...}");
    else if (strcmp(type, "subscribe") == 0)
        on_sub_message(c, msg, 1);
    else if (strcmp(type, "unsubscribe") == 0)
        on_sub_message(c, msg, 0);
    else if (strcmp(type, "ping") == 0)
        client_send_json(c, json_pack("{s:s}", "type", "pong"));
    else if (strcmp(type, "request") == 0)
        on_request(c, msg);
    else
        client_error(c, NULL, "unknown_type",
                     "type must be subscribe, unsubscribe, ping, auth or request");
}

static void on_message(sophia_ws_client *c, const char *text, size_t len)
{
    if (sophia_json_too_deep(text, len, SOPHIA_JSON_MAX_DEPTH)) { /* jsonlimit.h */
        client_error(c, NULL, "too_deep", "message nested deeper than 64 levels");
        return;
    }
    json_error_t err;
    json_t *msg = json_loadb(text, len, 0, &err);
    c->r->st.messages_in++;
    if (!json_is_object(msg)) {
        char m[256];
        snprintf(m, sizeof(m), "message must be a JSON object (%s at %d:%d)",
                 msg ? "not an object" : err.text, err.line, err.column);
        client_error(c, NULL, "bad_json", m);
        json_decref(msg);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!type)
        client_error(c, NULL, "bad_request", "message needs a \"type\"");
    else
        dispatch(c, type, msg);
    json_decref(msg);
}

/* ------------------------------------------------------ lws callbacks */

static void client_index(sophia_ws_router *r, sophia_ws_client *c)
{
    char k[24];
    c->id = ++r->next_id;
    snprintf(k, sizeof(k), "%" PRIu64, c->id);
    sophia_dict_set(r->by_id, k, c);
    c->next = r->clients;
    if (r->clients)
        r->clients->prev = c;
    r->clients = c;
}

sophia_ws_client *sophia_ws_open(sophia_ws_router *r, struct lws *wsi)
{
    sophia_ws_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->qcap = r->max_queue < 16 ? r->max_queue : 16;
    c->q = calloc(c->qcap, sizeof(*c->q));
    if (!c->q) {
        free(c);
        return NULL;
    }
    c->r = r;
    c->wsi = wsi;
    c->last_rx_us = sophia_now_mono_us();
    if (auth_enabled(r) && r->pending_wsi == wsi && r->pending_claims) {
        client_set_claims(c, r->pending_claims);
        r->pending_claims = NULL;
    } else if (auth_enabled(r)) {
        c->auth_deadline_us = c->last_rx_us + r->auth_us;
    }
    r->pending_wsi = NULL;
    client_index(r, c);
    r->st.connections++;
    r->st.connections_total++;
    return c;
}

int sophia_ws_receive(sophia_ws_client *c, const void *in, size_t len)
{
    c->last_rx_us = sophia_now_mono_us();
    if (c->rx_len + len > c->r->max_msg)
        return send_close(c->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                          "message too large (websocket.max_message)");
    char *rx = realloc(c->rx, c->rx_len + len + 1);
    if (!rx)
        return -1;
    c->rx = rx;
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(c->wsi) || lws_remaining_packet_payload(c->wsi))
        return 0;
    on_message(c, c->rx, c->rx_len);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    return 0;
}

void sophia_ws_feed(sophia_ws_client *c, const char *text, size_t len)
{
    on_message(c, text, len);
}

size_t sophia_ws_queued(const sophia_ws_client *c)
{
    return c->qlen - c->tombs;
}

int sophia_ws_close_code(const sophia_ws_client *c)
{
    return c->close_code;
}

void sophia_ws_pong(sophia_ws_client *c)
{
    c->last_rx_us = sophia_now_mono_us();
    c->ping_sent_us = 0;
}

static int write_ping(sophia_ws_client *c)
{
    unsigned char buf[LWS_PRE + 4];
    c->want_ping = 0;
    c->ping_sent_us = sophia_now_mono_us();
    c->r->st.pings++;
    memcpy(buf + LWS_PRE, "sph", 3); /* lws 4.1 drops empty pings */
    return lws_write(c->wsi, buf + LWS_PRE, 3, LWS_WRITE_PING) < 0 ? -1 : 0;
}

/* After a short write lws buffers the rest and flushes it on POLLOUT,
 * but with 4.1 on libuv that flush can consume our pending writeable
 * request, and the queue would wait for an unrelated event. So a client
 * whose write was cut short asks again 2 ms later. Ids, not pointers:
 * the client may close meanwhile. */
static void on_rearm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    size_t n = r->nrearm;
    r->nrearm = 0;
    for (size_t i = 0; i < n; i++) {
        char k[24];
        snprintf(k, sizeof(k), "%" PRIu64, r->rearm[i]);
        sophia_ws_client *c = sophia_dict_get(r->by_id, k);
        if (!c)
            continue;
        c->rearm_pending = 0;
        if (c->qlen || c->close_code)
            lws_callback_on_writable(c->wsi);
    }
    kick(r);
}

static void rearm_later(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    if (c->rearm_pending || !r->loop)
        return;
    if (!r->rearm_ev &&
        !(r->rearm_ev = evtimer_new(sophia_loop_base(r->loop), on_rearm, r)))
        return;
    if (r->nrearm == r->rearm_cap) {
        size_t cap = r->rearm_cap ? r->rearm_cap * 2 : 64;
        uint64_t *v = realloc(r->rearm, cap * sizeof(*v));
        if (!v)
            return;
        r->rearm = v;
        r->rearm_cap = cap;
    }
    r->rearm[r->nrearm++] = c->id;
    c->rearm_pending = 1;
    if (!evtimer_pending(r->rearm_ev, NULL)) {
        struct timeval tv = {0, 2000};
        evtimer_add(r->rearm_ev, &tv);
    }
}

/* One send of the head of the queue: a lone message straight from its
 * buffer (its frame header is already in place, ws_history.h), several
 * copied back to back into the router's gather buffer - frames delimit
 * themselves, so the peer still sees separate messages. lws_write with
 * LWS_WRITE_RAW adds no framing; what the socket does not take lws keeps
 * in its buflist_out and flushes on POLLOUT, and nothing more may be
 * written until it has (lws_partial_buffered). -1: the socket failed. */
static int queue_write(sophia_ws_client *c)
{
    unsigned char *out = c->r->gather + LWS_PRE;
    size_t len = 0, n, frames = 0;
    while (c->qlen && !*qslot(c, 0))
        queue_pop(c); /* tombstones */
    if (!c->qlen)
        return 0;
    const unsigned char *f = ws_msg_frame(*qslot(c, 0), LWS_PRE, &n);
    if (c->qlen == 1 || n >= WS_GATHER_MAX) {
        int w = lws_write(c->wsi, (unsigned char *)f, n, LWS_WRITE_RAW);
        queue_pop(c);
        c->r->st.messages_out++;
        return w < (int)n ? -1 : 0;
    }
    while (c->qlen) {
        ws_msg *m = *qslot(c, 0);
        if (m) {
            f = ws_msg_frame(m, LWS_PRE, &n);
            if (len + n > WS_GATHER_MAX)
                break;
            memcpy(out + len, f, n);
            len += n;
            frames++;
        }
        queue_pop(c);
    }
    c->r->st.messages_out += frames;
    return lws_write(c->wsi, out, len, LWS_WRITE_RAW) < (int)len ? -1 : 0;
}

/* Sends until the queue is empty, the socket is full (lws buffered a
 * remainder) or the turn's share is used. */
static int queue_drain(sophia_ws_client *c)
{
    for (int k = 0; k < WS_GATHERS_PER_TURN && c->qlen &&
                    !lws_partial_buffered(c->wsi); k++)
        if (queue_write(c) < 0)
            return -1;
    return 0;
}

/* The rest waits for WRITEABLE; see on_rearm for the short-write case. */
static void want_writeable(sophia_ws_client *c)
{
    lws_callback_on_writable(c->wsi);
    if (lws_partial_buffered(c->wsi))
        rearm_later(c);
}

/* A client whose messages are written from the flush, outside any lws
 * callback: it cannot be closed from here, so a failed socket is marked
 * and lws is asked for the WRITEABLE callback that closes it. */
static void client_flush(sophia_ws_client *c)
{
    if (!c->qlen || !c->wsi || !c->r->flush_ev)
        return; /* detached, or no loop: WRITEABLE only */
    if (c->close_code || c->want_ping || lws_partial_buffered(c->wsi)) {
        want_writeable(c);
        return;
    }
    if (queue_drain(c) < 0) {
        c->close_code = 1006;
        c->kill = 1; /* nothing more can be written */
        lws_callback_on_writable(c->wsi);
        close_deadline(c->wsi, 1);
        return;
    }
    if (c->qlen)
        want_writeable(c);
}

/* Runs as an active libevent event, so after the callback that published
 * (an ingest batch, a Redis message, a request) and in the same loop
 * iteration: the batch's messages go out at once, one send per client,
 * without a WRITEABLE round trip (with lws on libuv that costs two
 * epoll_ctl calls and a wake-up per client). */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    if (!r->ndirty)
        return;
    int64_t t0 = sophia_now_mono_us();
    for (size_t i = 0; i < r->ndirty; i++) {
        sophia_ws_client *c = r->dirty[i];
        if (!c)
            continue; /* closed meanwhile */
        c->dirty_at = 0;
        client_flush(c);
    }
    r->ndirty = 0;
    r->flush_end_us = sophia_now_mono_us();
    r->flush_cost_us = r->flush_end_us - t0;
    kick(r);
}

static void schedule_flush(sophia_ws_router *r)
{
    int64_t wait = r->flush_end_us + r->flush_cost_us - sophia_now_mono_us();
    int backlog = r->backlog && r->backlog(r->backlog_arg);
    if (wait <= 0 || !backlog) {
        event_active(r->flush_ev, EV_TIMEOUT, 0);
        return;
    }
    if (wait > WS_FLUSH_DELAY_MAX_US)
        wait = WS_FLUSH_DELAY_MAX_US;
    struct timeval tv = {0, (suseconds_t)wait};
    event_add(r->flush_ev, &tv);
}

static void mark_dirty(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    if (c->dirty_at || !c->wsi) /* a detached client keeps its queue */
        return;
    if (!r->flush_ev) { /* no loop (tests): the WRITEABLE path only */
        lws_callback_on_writable(c->wsi);
        return;
    }
    if (r->ndirty == r->dirty_cap) {
        size_t cap = r->dirty_cap ? r->dirty_cap * 2 : 256;
        sophia_ws_client **v = realloc(r->dirty, cap * sizeof(*v));
        if (!v) {
            lws_callback_on_writable(c->wsi);
            return;
        }
        r->dirty = v;
        r->dirty_cap = cap;
    }
    r->dirty[r->ndirty++] = c;
    c->dirty_at = r->ndirty;
    if (r->ndirty == 1)
        schedule_flush(r);
}

int sophia_ws_writeable(sophia_ws_client *c)
{
    if (c->kill)
        return -1;
    /* Control frames too wait until lws has flushed a cut-short send:
     * they must not land in the middle of it. */
    if (lws_partial_buffered(c->wsi)) {
        want_writeable(c);
        kick(c->r);
        return 0;
    }
    if (c->want_ping && !c->close_code && write_ping(c) < 0)
        return -1;
    /* Queued messages go out before a requested close (shutdown sends
     * what was published, then 1001); a slow client's queue was already
     * emptied when its close was requested. */
    if (queue_drain(c) < 0)
        return -1;
    if (c->qlen) {
        want_writeable(c);
        /* libuv applies the POLLOUT request only in its next run: without
         * a kick that run waits for an unrelated event (see loop.h). */
        kick(c->r);
        return 0;
    }
    coalesce_reset(c);
    if (c->close_code)
        return send_close(c->wsi, c->close_code, c->close_reason);
    return 0;
}

void sophia_ws_closed(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    char k[24];
    while (c->nsubs)
        client_unsubscribe(c, c->subs[c->nsubs - 1]);
    queue_clear(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    snprintf(k, sizeof(k), "%" PRIu64, c->id);
    sophia_dict_del(r->by_id, k);
    if (c->dirty_at)
        r->dirty[c->dirty_at - 1] = NULL;
    r->st.connections--;
    json_decref(c->claims);
    free(c->subs);
    free(c->q);
    free(c->rx);
    free(c);
}

/* ------------------------------------------------------------ publish */

/* One topic's copy of a publish: the envelope is rendered per topic and
 * `data`, the bulk of the message and the same for every topic, is
 * spliced in as text encoded once per publish (sophia_ws_route). The
 * bytes are what dumping the whole object would give: jansson keeps
 * insertion order and "data" is the last member. */
static ws_msg *render_msg(sophia_ws_router *r, const char *type,
                          const char *topic, uint64_t seq,
                          const char *dashboard_id, const char *dtext,
                          size_t dlen, const char *metric)
{
    sophia_jsonw *w = &r->render;
    char num[32];
    int n = snprintf(num, sizeof(num), ",\"seq\":%" PRIu64, seq);
    sophia_jsonw_clear(w);
    sophia_jsonw_raw(w, "{\"type\":", 8);
    sophia_jsonw_str(w, type, strlen(type));
    sophia_jsonw_raw(w, ",\"topic\":", 9);
    sophia_jsonw_str(w, topic, strlen(topic));
    sophia_jsonw_raw(w, num, (size_t)n);
    if (dashboard_id) {
        sophia_jsonw_raw(w, ",\"dashboard_id\":", 16);
        sophia_jsonw_str(w, dashboard_id, strlen(dashboard_id));
    }
    sophia_jsonw_raw(w, ",\"data\":", 8);
    sophia_jsonw_raw(w, dtext, dlen);
    sophia_jsonw_raw(w, "}", 1);
    ws_msg *m = w->failed ? NULL : ws_msg_new(w->p, w->len, LWS_PRE);
    if (!m)
        return NULL;
    m->pubid = r->pubid;
    if (metric)
        ws_msg_set_ckey(m, topic, metric);
    return m;
}

static void deliver(sophia_ws_router *r, sophia_ws_client *c, ws_msg *m)
{
    if (c->stamp == r->stamp)
        return;
    c->stamp = r->stamp;
    client_send(c, m);
}

/* Subscribers of `topic` through patterns: one lookup per prefix length
 * some pattern uses. */
static void deliver_patterns(sophia_ws_router *r, const char *topic, ws_msg *m)
{
    char prefix[WS_MAX_TOPIC + 1];
    size_t len = strlen(topic);
    for (size_t n = 0; n <= len && n <= WS_MAX_TOPIC; n++) {
        if (!r->plen[n])
            continue;
        memcpy(prefix, topic, n);
        prefix[n] = '\0';
        ws_subs *ps = sophia_dict_get(r->patterns, prefix);
        for (size_t k = 0; ps && k < ps->n; k++)
            deliver(r, ps->v[k], m);
    }
}

/* A publish to a topic that does not exist while websocket.max_topics
 * are held (topic names come from event data, so this is what a flood of
 * made-up names meets): no topic, seq or history is created; the message
 * still reaches the pattern subscribers live (an exact subscriber would
 * have created the topic), with the cluster's seq or 0 = not recorded,
 * nothing to replay. */
static void unrecorded(sophia_ws_router *r, const char *type, const char *topic,
                       uint64_t seq, const char *dashboard_id, const char *dtext,
                       size_t dlen, const char *metric)
{
    r->st.topics_refused++;
    ws_msg *m = render_msg(r, type, topic, seq, dashboard_id, dtext, dlen, metric);
    if (!m)
        return;
    deliver_patterns(r, topic, m);
    ws_msg_unref(m);
}

void sophia_ws_route(sophia_ws_router *r, const char *type,
                     const char *const *topics, const uint64_t *seqs,
                     size_t ntopics, const char *dashboard_id, json_t *data)
{
    int64_t now = sophia_now_mono_us();
    size_t dlen = 0;
    char *dtext = sophia_json_encode(data ? data : json_null(), &dlen);
    const char *metric = strcmp(type, "metric") == 0
                             ? json_string_value(json_object_get(data, "metric"))
                             : NULL;
    r->stamp++;
    r->pubid++;
    for (size_t i = 0; dtext && i < ntopics; i++) {
        ws_topic *t = topic_get(r, topics[i], 0);
        if (!t && sophia_dict_size(r->topics) >= r->max_topics) {
            unrecorded(r, type, topics[i], seqs ? seqs[i] : 0, dashboard_id,
                       dtext, dlen, metric);
            continue;
        }
        if (!t && !(t = topic_get(r, topics[i], 1)))
            continue;
        t->seq = seqs ? seqs[i] : t->seq + 1;
        t->last_us = now;
        ws_msg *m = render_msg(r, type, topics[i], t->seq, dashboard_id, dtext,
                               dlen, metric);
        if (!m)
            continue;
        ws_history_prune(&t->hist, now, r->history_age_us);
        ws_history_push(&t->hist, t->seq, now, m);
        if (metric && strncmp(topics[i], "dashboard:", 10) == 0)
            ws_latest_put(r->latest, topics[i], metric, m,
                          sophia_now_wall_us() / 1000);
        for (size_t k = 0; k < t->subs.n; k++)
            deliver(r, t->subs.v[k], m);
        deliver_patterns(r, topics[i], m);
        ws_msg_unref(m);
    }
    free(dtext);
    kick(r);
}

void sophia_ws_publish(sophia_ws_router *r, const char *type,
                       const char *const *topics, size_t ntopics,
                       const char *dashboard_id, json_t *data)
{
    r->st.published++;
    if (r->cluster && sophia_cluster_ready(r->cluster) &&
        sophia_cluster_alone(r->cluster)) {
        r->st.cluster_alone++; /* nobody else to tell: see cluster.h */
        sophia_ws_route(r, type, topics, NULL, ntopics, dashboard_id, data);
        return;
    }
    if (r->cluster && sophia_cluster_ready(r->cluster) &&
        sophia_cluster_publish(r->cluster, type, topics, ntopics, dashboard_id,
                               data) == 0) {
        r->st.cluster_out++;
        return; /* delivered when it comes back from the channel */
    }
    if (r->cluster)
        r->st.cluster_fallback++;
    sophia_ws_route(r, type, topics, NULL, ntopics, dashboard_id, data);
}

/* --------------------------------------------------------------- health */

static void tick_client(sophia_ws_client *c, int64_t now)
{
    sophia_ws_router *r = c->r;
    if (c->close_code || !c->wsi)
        return;
    if (c->auth_deadline_us && !c->authed && now > c->auth_deadline_us) {
        r->st.auth_failures++;
        client_request_close(c, WS_CLOSE_AUTH, "no auth message in time");
    } else if (c->exp && c->exp <= (double)(sophia_now_wall_us() / 1000000)) {
        r->st.auth_failures++;
        client_request_close(c, WS_CLOSE_AUTH, "token expired");
    } else if (c->ping_sent_us && now - c->ping_sent_us > r->pong_us) {
        /* Dead: a close frame would not be read either. */
        r->st.dead_closed++;
        c->close_code = 1006;
        c->kill = 1;
        queue_clear(c);
        lws_callback_on_writable(c->wsi);
        close_deadline(c->wsi, 1);
    } else if (!c->ping_sent_us && now - c->last_rx_us > r->ping_us) {
        c->want_ping = 1;
        lws_callback_on_writable(c->wsi);
    } else if (c->qlen) {
        /* Safety net: after flushing a short write lws 4.1 can drop a
         * pending writeable request; a queue never stalls past a tick. */
        lws_callback_on_writable(c->wsi);
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    int64_t now = sophia_now_mono_us();
    for (sophia_ws_client *c = r->clients; c; c = c->next)
        tick_client(c, now);
    kick(r);
}

/* A topic nobody subscribes to whose history has aged out holds nothing
 * a client could still ask for. */
static int topic_idle(const sophia_ws_router *r, ws_topic *t, int64_t now)
{
    if (t->subs.n)
        return 0;
    ws_history_prune(&t->hist, now, r->history_age_us);
    return t->hist.len == 0 && now - t->last_us >= r->history_age_us;
}

/* Frees idle topics for WS_SWEEP_BUDGET_US per run, resuming where the
 * last run stopped; the seq floor keeps a freed topic's seqs from coming
 * back (topic_base). */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    int64_t now = sophia_now_mono_us();
    ws_topic *t = r->sweep_at ? r->sweep_at : r->tlist;
    for (unsigned n = 1; t; n++) {
        ws_topic *next = t->next;
        if (topic_idle(r, t, now)) {
            if (t->seq > r->seq_floor)
                r->seq_floor = t->seq;
            r->st.topics_freed++;
            topic_remove(r, t);
        }
        t = next;
        if (n % 32 == 0 && sophia_now_mono_us() - now >= WS_SWEEP_BUDGET_US)
            break;
    }
    r->sweep_at = t;
}

/* ------------------------------------------------------------- router */

static int64_t secs_us(double s)
{
    return (int64_t)(s * 1e6);
}

static void router_free_settings(sophia_ws_router *r)
{
    for (size_t i = 0; i < r->norigins; i++)
        free(r->origins[i]);
    free(r->origins);
    free(r->secret);
    free(r->jwt_issuer);
    free(r->jwt_audience);
    r->origins = NULL;
    r->norigins = 0;
    r->secret = NULL;
    r->jwt_issuer = r->jwt_audience = NULL;
}

static void router_configure(sophia_ws_router *r, const sophia_conf *cf)
{
    router_free_settings(r);
    r->history = 256;
    r->history_age_us = secs_us(300);
    r->ping_us = secs_us(25);
    r->pong_us = secs_us(10);
    r->auth_us = secs_us(5);
    r->max_conn = 10000;
    r->max_subs = 256;
    r->max_msg = 64 * 1024;
    r->max_topics = 100000;
    r->jwt_require_exp = 1;
    if (cf) {
        r->history = cf->ws.history;
        r->history_age_us = secs_us(cf->ws.history_age);
        r->ping_us = secs_us(cf->ws.ping_interval);
        r->pong_us = secs_us(cf->ws.pong_timeout);
        r->auth_us = secs_us(cf->ws.auth_timeout);
        r->max_conn = cf->ws.max_connections;
        r->max_subs = cf->ws.max_subscriptions;
        r->max_msg = cf->ws.max_message;
        r->coalesce_at = cf->ws.coalesce_at;
        r->max_topics = cf->ws.max_topics;
        r->jwt_require_exp = cf->ws.jwt_require_exp;
        if (cf->ws.jwt_issuer)
            r->jwt_issuer = strdup(cf->ws.jwt_issuer);
        if (cf->ws.jwt_audience)
            r->jwt_audience = strdup(cf->ws.jwt_audience);
        if (cf->ws.auth_secret && *cf->ws.auth_secret)
            r->secret = strdup(cf->ws.auth_secret);
        /* copied: a reload may free the configuration we were built from */
        r->origins = calloc(cf->ws.norigins + 1, sizeof(char *));
        for (size_t i = 0; r->origins && i < cf->ws.norigins; i++)
            if ((r->origins[r->norigins] = strdup(cf->ws.origins[i])))
                r->norigins++;
    }
    if (!r->coalesce_at || r->coalesce_at > r->max_queue)
        r->coalesce_at = r->max_queue / 2;
}

/* The tick runs often enough to honour the shortest deadline to ~25%. */
static void router_start_timer(sophia_ws_router *r)
{
    if (!r->loop)
        return;
    int64_t us = r->ping_us < r->pong_us ? r->ping_us : r->pong_us;
    if (r->secret && r->auth_us < us)
        us = r->auth_us;
    us /= 4;
    if (us < 20000)
        us = 20000;
    if (us > 1000000)
        us = 1000000;
    if (r->tick)
        event_free(r->tick);
    r->tick = event_new(sophia_loop_base(r->loop), -1, EV_PERSIST, on_tick, r);
    struct timeval tv = {us / 1000000, us % 1000000};
    if (r->tick)
        event_add(r->tick, &tv);
}

/* cluster.redis, else redis.url unless cluster.enabled is false: nodes
 * sharing a Redis are one cluster by default (cluster.h). */
static const char *cluster_url(const sophia_conf *cf)
{
    if (cf->cluster.enabled == 0)
        return NULL;
    if (cf->cluster.redis && *cf->cluster.redis)
        return cf->cluster.redis;
    return cf->redis_url && *cf->redis_url ? cf->redis_url : NULL;
}

/* The cluster delivers to the router through these (cluster.h). */
static void sink_route(void *arg, const char *type, const char *const *topics,
                       const uint64_t *seqs, size_t ntopics,
                       const char *dashboard_id, json_t *data)
{
    sophia_ws_route(arg, type, topics, seqs, ntopics, dashboard_id, data);
}

static uint64_t sink_topic_seq(void *arg, const char *topic)
{
    return sophia_ws_topic_seq(arg, topic);
}

static void router_start_cluster(sophia_ws_router *r, const sophia_conf *cf)
{
    const char *url = cf ? cluster_url(cf) : NULL;
    sophia_cluster_sink sink = {sink_route, sink_topic_seq, r};
    if (!url || !r->loop)
        return;
    r->cluster = sophia_cluster_new(sophia_loop_base(r->loop), url,
                                    cf->cluster.node_id, &sink);
    sophia_cluster_set_seq_ttl(r->cluster, (double)r->history_age_us / 1e6);
}

sophia_ws_router *sophia_ws_router_new(sophia_loop *loop, const sophia_conf *conf,
                                       size_t max_queue)
{
    sophia_ws_router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->max_queue = max_queue ? max_queue : 1024;
    router_configure(r, conf);
    r->topics = sophia_dict_new();
    r->patterns = sophia_dict_new();
    r->by_id = sophia_dict_new();
    r->latest = ws_latest_new(WS_LATEST_TOPICS, WS_LATEST_METRICS);
    r->gather = malloc(LWS_PRE + WS_GATHER_MAX);
    if (loop) {
        struct timeval tv = {0, WS_SWEEP_US};
        r->flush_ev = event_new(sophia_loop_base(loop), -1, 0, on_flush, r);
        r->sweep_ev = event_new(sophia_loop_base(loop), -1, EV_PERSIST,
                                on_sweep, r);
        if (r->sweep_ev)
            event_add(r->sweep_ev, &tv);
    }
    if (!r->topics || !r->patterns || !r->by_id || !r->latest || !r->gather) {
        sophia_ws_router_free(r);
        return NULL;
    }
    router_start_timer(r);
    router_start_cluster(r, conf);
    return r;
}

void sophia_ws_set_backlog(sophia_ws_router *r, sophia_ws_backlog_fn fn,
                           void *arg)
{
    r->backlog = fn;
    r->backlog_arg = arg;
}

static void topic_resize(const char *name, void *val, void *arg)
{
    (void)name;
    ws_history_resize(&((ws_topic *)val)->hist, *(size_t *)arg);
}

static int secret_changed(const char *was, const char *now)
{
    return (was == NULL) != (now == NULL) || (was && strcmp(was, now) != 0);
}

/* The secret and websocket.jwt as one comparable text: tokens accepted
 * under other rules are re-checked (a tightened policy must not leave old
 * tokens connected). */
static char *auth_rules(const sophia_ws_router *r)
{
    char *s = NULL;
    if (!r->secret)
        return NULL;
    if (asprintf(&s, "%s\n%d\n%s\n%s", r->secret, r->jwt_require_exp,
                 r->jwt_issuer ? r->jwt_issuer : "", r->jwt_audience ? r->jwt_audience : "") < 0)
        return NULL;
    return s;
}

/* Existing connections under the new settings: a queue longer than the
 * new max_queue goes as for a slow client; with a new (or first) secret
 * nobody's standing is known, so everyone authenticates again (4001 makes
 * the dashboard ask for, or resend, its token). */
static void reconfigure_clients(sophia_ws_router *r, int reauth)
{
    for (sophia_ws_client *c = r->clients; c; c = c->next) {
        if (c->close_code)
            continue;
        if (reauth) {
            client_request_close(c, WS_CLOSE_AUTH,
                                 "auth settings changed: authenticate again");
            continue;
        }
        if (c->qlen - c->tombs > r->max_queue)
            client_drop_slow(c);
    }
}

void sophia_ws_reconfigure(sophia_ws_router *r, const sophia_conf *cf)
{
    char *was_rules = auth_rules(r);
    size_t was_history = r->history;
    if (cf && cf->ws.max_queue)
        r->max_queue = cf->ws.max_queue;
    router_configure(r, cf);
    if (r->history != was_history)
        sophia_dict_each(r->topics, topic_resize, &r->history);
    router_start_timer(r);
    sophia_cluster_set_seq_ttl(r->cluster, (double)r->history_age_us / 1e6);
    char *rules = auth_rules(r);
    reconfigure_clients(r, rules && secret_changed(was_rules, rules));
    free(was_rules);
    free(rules);
    kick(r);
    sophia_info("ws", "msg=\"settings reloaded\" max_queue=%zu history=%zu auth=%s origins=%zu",
                r->max_queue, r->history, r->secret ? "on" : "off", r->norigins);
}

static void topic_free(void *p)
{
    ws_topic *t = p;
    ws_history_free(&t->hist);
    free(t->subs.v);
    free(t->name);
    free(t);
}

void sophia_ws_router_free(sophia_ws_router *r)
{
    if (!r)
        return;
    while (r->clients) /* lws is gone: nothing more will call us */
        sophia_ws_closed(r->clients);
    sophia_cluster_free(r->cluster);
    if (r->tick)
        event_free(r->tick);
    if (r->rearm_ev)
        event_free(r->rearm_ev);
    if (r->flush_ev)
        event_free(r->flush_ev);
    if (r->sweep_ev)
        event_free(r->sweep_ev);
    free(r->rearm);
    free(r->dirty);
    free(r->gather);
    sophia_jsonw_reset(&r->render);
    if (r->topics)
        sophia_dict_free(r->topics, topic_free);
    if (r->patterns)
        sophia_dict_free(r->patterns, subs_free);
    if (r->by_id)
        sophia_dict_free(r->by_id, NULL);
    ws_latest_free(r->latest);
    json_decref(r->pending_claims);
    router_free_settings(r);
    free(r);
}

void sophia_ws_close_all(sophia_ws_router *r)
{
    for (sophia_ws_client *c = r->clients; c; c = c->next)
        client_request_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutdown");
}

void sophia_ws_get_stats(const sophia_ws_router *r, sophia_ws_stats *out)
{
    *out = r->st;
    out->cluster_in = sophia_cluster_received(r->cluster);
    out->topics = sophia_dict_size(r->topics);
}

/* ---------------------------------------------------------- stats JSON */

typedef struct topic_count {
    const char *name;
    size_t n;
} topic_count;

typedef struct top_acc {
    topic_count *v;
    size_t n, cap;
} top_acc;

static void top_add(top_acc *a, const char *name, size_t n)
{
    if (n == 0)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        topic_count *v = realloc(a->v, cap * sizeof(*v));
        if (!v)
            return;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = (topic_count){name, n};
}

static void top_topic(const char *key, void *val, void *arg)
{
    top_add(arg, key, ((ws_topic *)val)->subs.n);
}

static int top_cmp(const void *a, const void *b)
{
    size_t x = ((const topic_count *)a)->n, y = ((const topic_count *)b)->n;
    return x > y ? -1 : x < y;
}

static void dashboard_entry(const char *topic, size_t metrics,
                            int64_t updated_ms, void *arg)
{
    char when[40];
    time_t sec = (time_t)(updated_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)(updated_ms % 1000));
    json_array_append_new(arg, json_pack("{s:s,s:I,s:s}", "id", topic + 10,
                                         "metrics", (json_int_t)metrics,
                                         "updated_at", when));
}

static int by_id(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "id")));
}

json_t *sophia_ws_dashboards_json(const sophia_ws_router *r)
{
    json_t *list = json_array(), *sorted = json_array();
    ws_latest_each(r ? r->latest : NULL, dashboard_entry, list);
    size_t n = json_array_size(list);
    json_t **v = n ? calloc(n, sizeof(*v)) : NULL;
    for (size_t i = 0; v && i < n; i++)
        v[i] = json_array_get(list, i);
    if (v)
        qsort(v, n, sizeof(*v), by_id);
    for (size_t i = 0; v && i < n; i++)
        json_array_append(sorted, v[i]);
    free(v);
    json_decref(list);
    return json_pack("{s:o}", "dashboards", sorted);
}

uint64_t sophia_ws_topic_seq(const sophia_ws_router *r, const char *topic)
{
    const ws_topic *t = sophia_dict_get(r->topics, topic);
    return t ? t->seq : 0;
}

int sophia_ws_cluster_state(const sophia_ws_router *r)
{
    if (!r || !r->cluster)
        return -1;
    return sophia_cluster_ready(r->cluster) ? 1 : 0;
}

json_t *sophia_ws_stats_json(const sophia_ws_router *r, size_t top_n)
{
    sophia_ws_stats st;
    const sophia_ws_stats *s = &st;
    top_acc a = {0};
    sophia_ws_get_stats(r, &st);
    sophia_dict_each(r->topics, top_topic, &a);
    if (a.n > 1)
        qsort(a.v, a.n, sizeof(*a.v), top_cmp);
    json_t *top = json_object();
    for (size_t i = 0; i < a.n && i < top_n; i++)
        json_object_set_new(top, a.v[i].name, json_integer((json_int_t)a.v[i].n));
    free(a.v);
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
        "connections", (json_int_t)s->connections, "connections_total",
        (json_int_t)s->connections_total, "subscriptions",
        (json_int_t)s->subscriptions, "messages_in", (json_int_t)s->messages_in,
        "messages_out", (json_int_t)s->messages_out, "dropped",
        (json_int_t)s->dropped, "slow_closed", (json_int_t)s->slow_closed,
        "published", (json_int_t)s->published, "coalesced",
        (json_int_t)s->coalesced, "recovered", (json_int_t)s->recovered,
        "resyncs", (json_int_t)s->resyncs, "auth_failures",
        (json_int_t)s->auth_failures, "forbidden", (json_int_t)s->forbidden,
        "refused", (json_int_t)s->refused, "pings", (json_int_t)s->pings,
        "dead_closed", (json_int_t)s->dead_closed);
    json_object_set_new(o, "topics", json_integer((json_int_t)s->topics));
    json_object_set_new(o, "topics_freed", json_integer((json_int_t)s->topics_freed));
    json_object_set_new(o, "topics_refused", json_integer((json_int_t)s->topics_refused));
    json_object_set_new(o, "top_topics", top);
    if (r->cluster)
        json_object_set_new(o, "cluster",
                            json_pack("{s:s,s:b,s:b,s:I,s:I,s:I,s:I}", "node",
                                      sophia_cluster_node_id(r->cluster), "up",
                                      sophia_cluster_ready(r->cluster), "alone",
                                      sophia_cluster_alone(r->cluster), "out",
                                      (json_int_t)s->cluster_out, "in",
                                      (json_int_t)s->cluster_in, "fallback",
                                      (json_int_t)s->cluster_fallback, "local",
                                      (json_int_t)s->cluster_alone));
    return o;
}

static void prom_counter(FILE *f, const char *name, const char *help,
                         uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name,
            name, (unsigned long long)v);
}

void sophia_ws_write_prom(const sophia_ws_router *r, FILE *f)
{
    sophia_ws_stats st;
    const sophia_ws_stats *s = &st;
    sophia_ws_get_stats(r, &st);
    prom_counter(f, "sophia_ws_coalesced_total",
                 "Queued metric updates replaced by a newer value.", s->coalesced);
    prom_counter(f, "sophia_ws_recovered_total",
                 "Messages replayed to clients subscribing with since.",
                 s->recovered);
    prom_counter(f, "sophia_ws_resyncs_total",
                 "Resync answers: history aged out.", s->resyncs);
    prom_counter(f, "sophia_ws_auth_failures_total",
                 "Bad, expired or missing WebSocket tokens.", s->auth_failures);
    prom_counter(f, "sophia_ws_forbidden_total",
                 "Subscriptions and requests refused by the token's scopes.",
                 s->forbidden);
    prom_counter(f, "sophia_ws_refused_total",
                 "WebSocket upgrades refused.", s->refused);
    prom_counter(f, "sophia_ws_slow_closed_total",
                 "Clients closed for a full send queue.", s->slow_closed);
    prom_counter(f, "sophia_ws_dead_closed_total",
                 "Connections closed for a missed pong.", s->dead_closed);
    prom_counter(f, "sophia_ws_published_total", "Publish calls.", s->published);
    prom_counter(f, "sophia_ws_cluster_out_total",
                 "Publishes sent through Redis.", s->cluster_out);
    prom_counter(f, "sophia_ws_cluster_in_total",
                 "Publishes received from Redis.", s->cluster_in);
    prom_counter(f, "sophia_ws_cluster_local_total",
                 "Publishes delivered locally: no other node on the channel.",
                 s->cluster_alone);
    prom_counter(f, "sophia_ws_topics_freed_total",
                 "Idle topics freed once their history aged out.", s->topics_freed);
    prom_counter(f, "sophia_ws_topics_refused_total",
                 "Publishes to a new topic refused by websocket.max_topics "
                 "(delivered live to pattern subscribers, not recorded).",
                 s->topics_refused);
    fprintf(f, "# HELP sophia_ws_topics Topics held (seq and history).\n"
               "# TYPE sophia_ws_topics gauge\nsophia_ws_topics %llu\n",
            (unsigned long long)s->topics);
    fprintf(f, "# HELP sophia_ws_topic_subscribers Subscribers per topic (top 20).\n"
               "# TYPE sophia_ws_topic_subscribers gauge\n");
    json_t *o = sophia_ws_stats_json(r, 20);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "top_topics"), k, v)
        fprintf(f, "sophia_ws_topic_subscribers{topic=\"%s\"} %lld\n", k,
                (long long)json_integer_value(v));
    json_decref(o);
}

/* -------------------------------------------------------------- methods */

int sophia_ws_register_method(sophia_ws_router *r, const char *name,
                              sophia_ws_method_fn fn, void *arg)
{
    if (!r || !name || !fn || strlen(name) >= sizeof(r->methods[0].name) ||
        strcmp(name, "history") == 0 || strcmp(name, "latest") == 0 ||
        method_find(r, name))
        return -1;
    for (size_t i = 0; i < WS_MAX_METHODS; i++) {
        ws_method *m = &r->methods[i];
        if (!m->fn) {
            snprintf(m->name, sizeof(m->name), "%s", name);
            m->fn = fn;
            m->arg = arg;
            m->scope = method_scope(name);
            return 0;
        }
    }
    return -1;
}

void sophia_ws_unregister_method(sophia_ws_router *r, const char *name)
{
    ws_method *m = r ? (ws_method *)method_find(r, name) : NULL;
    if (m)
        memset(m, 0, sizeof(*m));
}

const char *sophia_ws_client_subject(sophia_ws_router *r, uint64_t client)
{
    sophia_ws_client *c = r ? client_by_id(r, client) : NULL;
    return c ? json_string_value(json_object_get(c->claims, "sub")) : NULL;
}

int sophia_ws_respond(sophia_ws_router *r, uint64_t client, const char *req_id,
                      json_t *data)
{
    sophia_ws_client *c = r ? client_by_id(r, client) : NULL;
    if (!c) {
        json_decref(data);
        return -1;
    }
    respond(c, req_id, data);
    return 0;
}

int sophia_ws_respond_error(sophia_ws_router *r, uint64_t client,
                            const char *req_id, const char *code,
                            const char *message)
{
    sophia_ws_client *c = r ? client_by_id(r, client) : NULL;
    if (!c)
        return -1;
    client_error(c, req_id, code, message);
    return 0;
}
