/*
 * cluster - publishes and L1 invalidations shared by every sophiad that
 * names the same Redis in cluster.redis (or SOPHIA_CLUSTER_REDIS_URL), or
 * by default in redis.url.
 *
 * Two hiredis connections of our own: a command connection (the shared
 * sophia_redis module: timeouts, reconnect with backoff) and a SUBSCRIBE
 * connection, since RESP2 (hiredis 0.14) allows nothing else on a
 * connection once it subscribed; it reconnects with backoff too.
 *
 * Seq consistency: a loop turn's publishes are one EVAL of a small Lua
 * script that, for each publish in order, INCRs `sophia:seq:<topic>` for
 * each of its topics and PUBLISHes the message with those seqs on
 * `sophia:ws`, atomically. Redis runs scripts one at a
 * time and delivers a channel's messages to every subscriber in one order,
 * so every node, including the publishing one (which delivers its own
 * publish when it comes back from the channel rather than at once), sees
 * the same messages in the same order with the same seqs, and a node that
 * joins late picks the counters up from Redis. The cost is one Redis round
 * trip of latency per publish (no extra round trip: INCR and PUBLISH share
 * it). While either connection is down, publishes are delivered locally
 * with local seqs (counted as cluster_fallback); a seq that does not follow
 * the previous one empties that topic's history, so `since` answers
 * `resync` instead of replaying across a hole.
 *
 * The `sophia:seq:<topic>` keys expire 2 x websocket.history_age (at least
 * 10 s) after a topic's last publish, when no node can replay it anyway,
 * so topics that come and go do not pile up in Redis. A key created anew
 * starts at Redis's clock in microseconds, not 1, which keeps every
 * topic's seq increasing across an expiry (see publish_script).
 *
 * Alone: a node that has heard no other node for 5 s (their hellos, see
 * cluster.c) and has none of its own publishes in flight delivers its
 * publishes at once with local seqs, as without a cluster, so a single
 * node pays no Redis round trip per publish (and loses none in flight when
 * Redis goes away). The first hello of a newcomer turns that off on every
 * node within one round trip; publishes made in that round trip reach only
 * the publishing node's subscribers. The script takes each topic's last
 * local seq as a floor, so a topic's seq still never goes back when a node
 * leaves being alone. Invalidations are skipped alone too, except in a
 * node's first 5 s after subscribing: a newcomer tells everything it
 * writes before it heard the others, who may already cache those keys.
 *
 * Default: with redis.url set and no cluster section, the cluster runs on
 * redis.url (credentials included); `cluster: {enabled: false}` (or
 * SOPHIA_CLUSTER_REDIS_URL="") keeps a node on its own.
 *
 * Invalidations go on `sophia:inval` as {"node","key"|"tag"}; each node
 * skips its own (by node id) and hands the others to the hook the cache
 * registered.
 */
#ifndef SOPHIA_CLUSTER_H
#define SOPHIA_CLUSTER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
typedef struct sophia_cluster sophia_cluster;

#define SOPHIA_CLUSTER_CHANNEL "sophia:ws"
#define SOPHIA_CLUSTER_INVAL_CHANNEL "sophia:inval"

/* Where publishes coming back from the channel go: the WebSocket router
 * hands these in (the cluster sits below ws and knows it only by them).
 * route delivers with the seqs Redis assigned (seqs[i] for topics[i]);
 * topic_seq gives a topic's last local seq (0 = none), the floor sent
 * with each publish. */
typedef struct sophia_cluster_sink {
    void (*route)(void *arg, const char *type, const char *const *topics,
                  const uint64_t *seqs, size_t ntopics,
                  const char *dashboard_id, json_t *data);
    uint64_t (*topic_seq)(void *arg, const char *topic);
    void *arg;
} sophia_cluster_sink;

/* url: redis://host:port/db. NULL on a malformed URL (logged). sink
 * (copied) NULL: a transport-only node that delivers nothing (tests). */
sophia_cluster *sophia_cluster_new(struct event_base *base, const char *url,
                                   const char *node_id,
                                   const sophia_cluster_sink *sink);
void sophia_cluster_free(sophia_cluster *c);

/* Both connections up and subscribed. */
int sophia_cluster_ready(const sophia_cluster *c);
const char *sophia_cluster_node_id(const sophia_cluster *c);
/* No other node heard from lately and nothing in flight: publish locally. */
int sophia_cluster_alone(sophia_cluster *c);
/* Publishes received from the channel (this node's own included). */
uint64_t sophia_cluster_received(const sophia_cluster *c);

/* Sends a publish through Redis. 0 when sent (delivery follows from the
 * channel); -1 when the caller must deliver locally. */
int sophia_cluster_publish(sophia_cluster *c, const char *type,
                           const char *const *topics, size_t ntopics,
                           const char *dashboard_id, json_t *data);

/* The seq keys' TTL from websocket.history_age (seconds). */
void sophia_cluster_set_seq_ttl(sophia_cluster *c, double history_age);

/* ---- L1 invalidation transport (for the cache) ---------------------- */
typedef void (*sophia_cluster_invalidate_fn)(const char *key_or_tag,
                                             int is_tag, void *arg);
/* The hook called for invalidations from other nodes (one per cluster;
 * NULL clears; c NULL: nothing). */
void sophia_cluster_on_invalidate(sophia_cluster *c,
                                  sophia_cluster_invalidate_fn fn, void *arg);
/* Tells the other nodes, once per key or tag and loop turn (sent at the
 * turn's end, or before a publish); 0 queued or nobody to tell, -1 no
 * cluster (c NULL), Redis down or no memory. */
int sophia_cluster_broadcast_invalidate(sophia_cluster *c,
                                        const char *key_or_tag, int is_tag);

#endif
