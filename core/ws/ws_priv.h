/*
 * ws_priv - what the WebSocket router's files share (ws.h says what the
 * router does): the router, client and topic structures, the limits, and
 * the few functions one file calls in another. Nothing outside core/ws
 * includes it.
 *
 *   ws.c          the router: topics, subscriptions, publish and route,
 *                 seqs and history, the topic sweep, create/reconfigure/free
 *   ws_client.c   one connection: its outbound queue, coalescing and the
 *                 slow-consumer bound, the flush, the lws callbacks, health
 *   ws_protocol.c what clients say: parsing messages, auth and the upgrade
 *                 filter, `since` replay, request methods and their scopes
 *   ws_msgpack.c  the sophia.v1.msgpack encoding of messages, both ways
 *   ws_deflate.c  permessage-deflate: each message compressed once
 *   ws_stats.c    the router's figures for /api/stats, /metrics and
 *                 /api/dashboards
 *
 * Lifetimes: a client exists from ESTABLISHED to CLOSED. Its subscriptions
 * are recorded twice, in the client (to clean up on close) and in the
 * router's indexes (to route), and both go together. Messages are
 * reference-counted: each queue slot and each history entry holds one.
 * Code outside lws callbacks names a client by its id (by_id), never by
 * pointer, because the connection may close in between.
 */
#ifndef SOPHIA_WS_PRIV_H
#define SOPHIA_WS_PRIV_H

#include <event2/event.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "event/clock.h"
#include "lib/dict.h"
#include "lib/jsonw.h"
#include "ws/ws.h"
#include "ws/ws_history.h"
#include "ws/ws_latest.h"

#define WS_MAX_TOPIC 200
/* Slots of the router's cache of recently used topics (ws_topic_get):
 * 2^WS_RECENT_BITS. */
#define WS_RECENT_BITS 6
#define WS_RECENT_TOPICS (1u << WS_RECENT_BITS)
/* Topics of the last publish the router keeps by position (route_text):
 * as many as an update has (sophia_update_topics). */
#define WS_LAST_TOPICS 6
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
 * and a full pass over 100000 topics takes about 10 s. A finished pass
 * waits WS_SWEEP_PASS_S for the next: with a few topics every run was a
 * whole pass, and twenty wake-ups a second were most of an idle
 * daemon's, and 1.3 ms of CPU a second (0.25 us an event at 5,000/s). */
#define WS_SWEEP_US 50000
#define WS_SWEEP_PASS_S 1
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
    uint64_t base;      /* seq before its first publish (see ws_topic_get) */
    int64_t last_us;    /* monotonic time of the last publish */
    char *name;
    size_t name_len;
    uint64_t name_hash; /* ws_namehash(0, name): the recent caches' */
    struct ws_topic *prev, *next; /* router->tlist, walked by the sweep */
    ws_history hist;
    ws_subs subs;
    /* {"type":<type>,"topic":<name>,"seq": as the last render wrote it
     * (topic_head), so the next one of the same type starts with it */
    char *head;
    size_t head_len, head_tl;
    /* the last seq rendered, as decimal text (seq_text_len 0: none yet),
     * so the next one, usually seq + 1, is that text plus a carry
     * (topic_seq_text) */
    uint64_t seq_text_of;
    char seq_text[24];
    size_t seq_text_len;
    int dashboard; /* a dashboard:* topic: keeps latest values */
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
    int msgpack; /* sophia.v1.msgpack: sent msgpack binary frames */
    int deflate; /* permessage-deflate negotiated: sent `z` twins */
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
    sophia_clock clock;    /* a publish's ages and times: once per turn */
    sophia_ws_backlog_fn backlog; /* see schedule_flush */
    void *backlog_arg;
    ws_method methods[WS_MAX_METHODS]; /* registered request methods */
    sophia_dict *topics;   /* name -> ws_topic */
    sophia_dict *patterns; /* prefix -> ws_subs */
    size_t plen[WS_MAX_TOPIC + 1]; /* patterns per prefix length */
    size_t npatterns; /* their sum: 0 skips the per-publish prefix walk */
    ws_topic *recent[WS_RECENT_TOPICS]; /* see ws_topic_get */
    ws_topic *last[WS_LAST_TOPICS];     /* see route_text */
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
    /* clients given messages since the last flush (see ws_on_flush) */
    struct event *flush_ev;
    sophia_ws_client **dirty;
    size_t ndirty, dirty_cap;
    unsigned char *gather;  /* LWS_PRE + WS_GATHER_MAX, see queue_write() */
    int64_t flush_end_us, flush_cost_us; /* the last flush, see mark_dirty */
    int kick_owed; /* lws was asked for something since the last kick */
    sophia_jsonw render;    /* reused by render_msg: no malloc per message */
    sophia_jsonw data;      /* the same for a publish's data (sophia_ws_route) */
    sophia_jsonw mpack;     /* the same for msgpack twins (ws_msgpack.h) */
    int compression;        /* websocket.compression: deflate offered */
    size_t compression_min; /* smaller messages go as they are */
    struct ws_deflater *deflater; /* made for the first deflate client */
    sophia_cluster *cluster;
    ws_latest *latest;      /* each dashboard's latest metric updates */
    sophia_ws_stats st;
};

/* ---- ws_client.c ---------------------------------------------------- */

/* Wakes the loop after lws was asked for something outside its callbacks
 * (see loop.h). */
void ws_kick(sophia_ws_router *r);
/* Entry i of t's history as a message, rendered now if it never was
 * (ws_history.h); NULL when out of memory. */
ws_msg *ws_topic_msg(sophia_ws_router *r, const ws_topic *t, size_t i);
/* ws_kick only when lws was asked for something (a WRITEABLE callback, a
 * POLLOUT for a cut-short send) since the last kick: a publish or flush
 * whose sends all went out needs no libuv pass, which is an epoll_wait. */
void ws_kick_if_owed(sophia_ws_router *r);
void ws_client_request_close(sophia_ws_client *c, int code,
                             const char *reason);
/* Queues `m` (takes a reference); written at the next flush. */
void ws_client_send(sophia_ws_client *c, ws_msg *m);
void ws_client_send_json(sophia_ws_client *c, json_t *obj); /* steals obj */
void ws_client_error(sophia_ws_client *c, const char *id, const char *code,
                     const char *msg);
sophia_ws_client *ws_client_by_id(sophia_ws_router *r, uint64_t id);
/* Closes a client whose queue is full (1008), its queue freed at once. */
void ws_client_drop_slow(sophia_ws_client *c);
void ws_on_flush(evutil_socket_t fd, short what, void *arg); /* flush_ev */
void ws_on_tick(evutil_socket_t fd, short what, void *arg);  /* tick */

/* ---- ws_protocol.c -------------------------------------------------- */

/* One complete text message from the client. */
void ws_on_message(sophia_ws_client *c, const char *text, size_t len);
/* One complete binary message from a msgpack client. */
void ws_on_binary(sophia_ws_client *c, const void *data, size_t len);
int ws_auth_enabled(const sophia_ws_router *r);
void ws_client_set_claims(sophia_ws_client *c, json_t *claims);

/* ---- ws.c ----------------------------------------------------------- */

int ws_topic_valid(const char *t);
int ws_is_pattern(const char *t);
/* NULL when absent and !create (or out of memory). */
ws_topic *ws_topic_get(sophia_ws_router *r, const char *name, int create);
int ws_client_subscribe(sophia_ws_client *c, const char *s);
void ws_client_unsubscribe(sophia_ws_client *c, const char *s);
/* 1 when topic `t` is covered by one of the client's subscriptions. */
int ws_client_covers(const sophia_ws_client *c, const char *t);

#endif
