/*
 * ws - the WebSocket router behind `/ws` (SPEC §5): subscriptions,
 * per-topic sequence numbers and history, auth, health, fan-out and
 * per-connection send queues.
 *
 * Routing cost follows subscribers, not connections: exact topics are a
 * hash index topic -> subscribers; `prefix*` patterns are a hash index
 * prefix -> subscribers probed once per prefix length in use, so a publish
 * costs O(topic length) lookups however many patterns exist. A message
 * matching several of one client's subscriptions is delivered once,
 * stamped with the first matching topic in the publish order and that
 * topic's seq. The JSON text of a message is rendered once per topic and
 * shared, reference-counted, by every queue it sits in and by the topic's
 * history ring (ws_history.h), which serves `since` and `history`.
 *
 * Encodings: JSON text frames by default; a client that negotiated
 * sophia.v1.msgpack gets each message's msgpack twin, made from the JSON
 * one on first use and shared like it (ws_msgpack.h), and may send
 * msgpack binary frames. With websocket.compression: deflate, a client
 * that offered permessage-deflate gets each message compressed once for
 * all such clients (ws_deflate.h).
 *
 * Sending: a publish only queues (a reference) per subscriber and lists
 * the client; one flush, run right after the loop callback that published
 * (a whole ingest batch, say), writes each listed client's queue with one
 * send: the frame header is built once per message (server frames are
 * unmasked, so every client gets the same bytes), a lone message goes
 * straight from its buffer, several are copied back to back into one.
 * No WRITEABLE round trip unless the socket is full.
 *
 * Slow consumers: past websocket.coalesce_at queued messages, a `metric`
 * update replaces the queued one with the same topic+metric (the old slot
 * becomes a tombstone, the new value goes to the tail, so per-topic order
 * holds); at websocket.max_queue the client is closed with 1008 and its
 * queue freed at once, so memory per client is bounded either way.
 *
 * Auth (websocket.auth with a secret): an HS256 JWT (ws_jwt.h) from
 * `?token=`, `Authorization: Bearer` on the upgrade (refused with 401 when
 * bad; lib/bearer.h reads it), or a first `{"type":"auth"}` message within websocket.auth_timeout
 * (4001 when bad, late or expired; websocket.jwt decides whether `exp` is
 * required and which `iss`/`aud` must appear). Its claims are scopes, and
 * a token without one gets nothing of that kind (`forbidden`, naming the
 * claim): `topics` bounds subscriptions and `history`; `cache` (patterns)
 * bounds the key of cache.* methods; `memory` (an object or an array of
 * objects such as {"user_id":"u1","agent_id":"a1"}) narrows the
 * params.context of memory.* methods to the first scope it fits (keys the
 * request leaves out are filled in, so a search never crosses scopes; one
 * naming another user_id fits none); `"stats": true` allows `stats`. The
 * method namespace declares the scope: whatever registers a cache.* or
 * memory.* method gets the check here. With auth off (loopback only),
 * everything is allowed.
 *
 * Origins: an upgrade carrying an Origin must come from the server's own
 * page (the Origin names the Host header's host:port, origin.h) or one
 * listed in websocket.origins ("*" = any); 403 otherwise.
 *
 * Topics: names come from event data, so they are bounded. A sweep frees,
 * a batch at a time, topics with no subscriber whose history has aged out
 * (websocket.history_age); a freed topic that comes back continues above
 * every seq it could have had (from Redis in a cluster, from a floor and
 * the clock alone), so an old `since` gets `resync`. At
 * websocket.max_topics, a publish to a new topic creates nothing: it
 * reaches pattern subscribers live with seq 0 and is counted
 * (topics_refused).
 *
 * Health: a router timer pings connections idle for ping_interval and
 * kills those that do not answer within pong_timeout; their subscriptions
 * go with them.
 *
 * Multi-node (cluster.h): with cluster.redis, a publish goes through Redis
 * and every node, this one included, delivers it when it comes back on the
 * pub/sub channel, carrying the seqs Redis assigned.
 *
 * Code: ws.c (the router), ws_client.c (a connection and its queue),
 * ws_protocol.c (messages, auth, request methods), ws_stats.c (figures);
 * ws_priv.h says what each holds and what they share.
 */
#ifndef SOPHIA_WS_H
#define SOPHIA_WS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "conf/config.h"
#include "event/loop.h"

struct lws;
typedef struct sophia_ws_router sophia_ws_router;
typedef struct sophia_ws_client sophia_ws_client;

typedef struct sophia_ws_stats {
    uint64_t connections;    /* open now */
    uint64_t connections_msgpack; /* of which sophia.v1.msgpack, now */
    uint64_t connections_deflate; /* of which permessage-deflate, now */
    uint64_t connections_total;
    uint64_t subscriptions;  /* open now, exact + pattern */
    uint64_t messages_in;
    uint64_t messages_out;
    uint64_t dropped;        /* messages lost with clients dropped as slow */
    uint64_t slow_closed;    /* clients closed for a full queue */
    uint64_t published;      /* publish calls */
    uint64_t coalesced;      /* queued metric updates replaced by newer ones */
    uint64_t recovered;      /* messages replayed for `since` */
    uint64_t resyncs;        /* `resync` answers */
    uint64_t auth_failures;  /* bad, expired or missing tokens */
    uint64_t forbidden;      /* subscriptions and requests refused by token scopes */
    uint64_t refused;        /* upgrades refused (limit, origin, token) */
    uint64_t pings;          /* server pings sent */
    uint64_t dead_closed;    /* connections closed for a missed pong */
    uint64_t cluster_out;    /* publishes sent through Redis */
    uint64_t cluster_in;     /* publishes received from Redis */
    uint64_t cluster_fallback; /* delivered locally: Redis unavailable */
    uint64_t cluster_alone;  /* delivered locally: no other node (cluster.h) */
    uint64_t topics;         /* topics held now (seq + history) */
    uint64_t topics_freed;   /* idle topics freed by the sweep */
    uint64_t topics_refused; /* publishes to a new topic over max_topics */
} sophia_ws_stats;

/* Takes max_queue and reads the rest of websocket.* and cluster.* from
 * `conf` (copied: nothing of it is kept; NULL = defaults, as in unit
 * tests). `loop` runs the router's timers and flushes and is kicked after
 * writes from outside lws callbacks; NULL (fuzzing, tests): no timers, no
 * cluster, clients written only from WRITEABLE. */
sophia_ws_router *sophia_ws_router_new(sophia_loop *loop, const sophia_conf *conf,
                                       size_t max_queue);
void sophia_ws_router_free(sophia_ws_router *r);
/* Reload: reads websocket.* from `conf` again (limits, queue and history
 * sizes, ping/pong/auth timeouts, origins, max_topics, secret, jwt).
 * Existing connections keep going under the new values; a changed secret
 * or websocket.jwt makes them authenticate again (4001). cluster.* stays
 * as started. */
void sophia_ws_reconfigure(sophia_ws_router *r, const sophia_conf *conf);

/* The backlog signal that paces flushes under load (see ws_on_flush in
 * ws_client.c): fn(arg) != 0 while events wait to be processed. Whoever
 * owns the queues sets it (the daemon: its streams); unset = never. */
typedef int (*sophia_ws_backlog_fn)(void *arg);
void sophia_ws_set_backlog(sophia_ws_router *r, sophia_ws_backlog_fn fn,
                           void *arg);

/* lws callbacks, called by http/http_ws.c. receive/writeable return -1 to close. */
/* FILTER_PROTOCOL_CONNECTION: 0 accepts the upgrade; 1 refuses it (with an
 * HTTP status already written: 401 bad token, 403 origin, 503 full). */
int sophia_ws_filter(sophia_ws_router *r, struct lws *wsi);
sophia_ws_client *sophia_ws_open(sophia_ws_router *r, struct lws *wsi);
int sophia_ws_receive(sophia_ws_client *c, const void *in, size_t len);
int sophia_ws_writeable(sophia_ws_client *c);
void sophia_ws_pong(sophia_ws_client *c); /* RECEIVE_PONG */
void sophia_ws_closed(sophia_ws_client *c);

/* The subprotocols a client may offer in Sec-WebSocket-Protocol (SPEC
 * §5): none or SOPHIA_WS_PROTO_JSON gets JSON text frames; SOPHIA_WS_PROTO_MSGPACK
 * the same messages as msgpack binary frames (ws_msgpack.h), set on the
 * client by whoever saw the handshake, before it is sent anything. */
#define SOPHIA_WS_PROTO_JSON "sophia.v1.json"
#define SOPHIA_WS_PROTO_MSGPACK "sophia.v1.msgpack"
void sophia_ws_set_msgpack(sophia_ws_client *c);
/* permessage-deflate (ws_deflate.h): whoever negotiates extensions asks
 * sophia_ws_compression (websocket.compression: deflate, read again on
 * reload, for new connections) before accepting the client's offer, and
 * marks the client that got it. */
int sophia_ws_compression(const sophia_ws_router *r);
void sophia_ws_set_deflate(sophia_ws_client *c);

/* Without a connection (fuzzing, tests): sophia_ws_open(r, NULL) makes a
 * detached client. What it is sent stays in its queue (bounded by
 * max_queue as usual) and a close is only recorded; sophia_ws_closed
 * frees it. sophia_ws_feed hands it one complete text message, as the
 * lws receive path does once a message is whole. */
void sophia_ws_feed(sophia_ws_client *c, const char *text, size_t len);
size_t sophia_ws_queued(const sophia_ws_client *c);
int sophia_ws_close_code(const sophia_ws_client *c); /* 0 = open */

/* Sends {"type":type,"topic":t,"seq":n,["dashboard_id":id,]"data":data}
 * to every subscriber of each of `topics` (borrowed). */
void sophia_ws_publish(sophia_ws_router *r, const char *type,
                       const char *const *topics, size_t ntopics,
                       const char *dashboard_id, json_t *data);

/* The same with `data` already JSON text (len bytes, borrowed; what
 * jsonw would write for it) and, for a "metric" update, its "metric"
 * member (or NULL): no tree is built or encoded unless the cluster
 * carries the publish. */
void sophia_ws_publish_text(sophia_ws_router *r, const char *type,
                            const char *const *topics, size_t ntopics,
                            const char *dashboard_id, const char *metric,
                            const char *text, size_t len);

/* Local delivery with seqs decided elsewhere (the cluster: seqs[i] for
 * topics[i]); seqs NULL = assign the next local seq. */
void sophia_ws_route(sophia_ws_router *r, const char *type,
                     const char *const *topics, const uint64_t *seqs,
                     size_t ntopics, const char *dashboard_id, json_t *data);

/* Closes every connection with 1001 (going away). */
void sophia_ws_close_all(sophia_ws_router *r);

void sophia_ws_get_stats(const sophia_ws_router *r, sophia_ws_stats *out);
/* The /api/stats `websocket` object: counters plus the top `top_n` topics
 * by subscribers. */
json_t *sophia_ws_stats_json(const sophia_ws_router *r, size_t top_n);

/* The cluster link for /healthz: -1 not configured, 0 down (Redis
 * unreachable, AUTH refused, not subscribed yet), 1 up. */
int sophia_ws_cluster_state(const sophia_ws_router *r);
/* GET /api/dashboards: {"dashboards":[{"id","metrics","updated_at"}]},
 * by id: the dashboard topics with metric updates (ws_latest.h). */
json_t *sophia_ws_dashboards_json(const sophia_ws_router *r);
/* The cluster link the router runs (cluster.h), NULL without one: the
 * daemon hands it the cache's L1 invalidations. */
struct sophia_cluster *sophia_ws_cluster(const sophia_ws_router *r);
/* A topic's last seq (0 = no such topic); the cluster's seq floor. */
uint64_t sophia_ws_topic_seq(const sophia_ws_router *r, const char *topic);
/* The /metrics lines of the router's figures (ws_stats.c declares each
 * once, for this and sophia_ws_stats_json) and subscribers per topic;
 * r NULL: the figures at 0. */
void sophia_ws_write_prom(const sophia_ws_router *r, FILE *f);

/* ---- request methods ------------------------------------------------
 * Whoever owns a `request` method registers it with the router (the http
 * layer: stats, cache.get, memory.search); the router itself answers only
 * history and latest. A handler gets the router, the client's id (a
 * number never reused, so an answer that arrives after the client left is
 * dropped, not sent to a stranger), the request id (may be NULL) and the
 * params (borrowed; may be NULL), and answers now or later with
 * sophia_ws_respond / sophia_ws_respond_error on that router.
 */
typedef void (*sophia_ws_method_fn)(sophia_ws_router *r, uint64_t client,
                                    const char *req_id, json_t *params,
                                    void *arg);

/* 0, or -1 when the name is taken (history and latest are), the table is
 * full (32 methods) or there is no router. The name declares the scope a
 * method needs when auth is on: `stats` runs only for a token with
 * "stats": true, a cache.* method only for a token whose `cache`
 * patterns cover params.key, a memory.* method only with a `memory`
 * scope and with params.context narrowed to it (see the Auth paragraph
 * above); others need no scope beyond an authenticated token. */
int sophia_ws_register_method(sophia_ws_router *r, const char *name,
                              sophia_ws_method_fn fn, void *arg);
void sophia_ws_unregister_method(sophia_ws_router *r, const char *name);
/* {"type":"response","id":req_id,"data":data}; steals `data`. Returns -1
 * when the client is gone. */
int sophia_ws_respond(sophia_ws_router *r, uint64_t client, const char *req_id,
                      json_t *data);
int sophia_ws_respond_error(sophia_ws_router *r, uint64_t client,
                            const char *req_id, const char *code,
                            const char *message);
/* The `sub` of the token a client authenticated with; NULL without one
 * (or when the client is gone). Valid until the callback returns. */
const char *sophia_ws_client_subject(sophia_ws_router *r, uint64_t client);

#endif
