/*
 * ws_latest - the latest `metric` update of each metric of each dashboard
 * topic, so a dashboard opened now shows its current values at once.
 *
 * Why not the topic history: it holds the last websocket.history messages
 * for websocket.history_age, so a metric that has not changed for a while
 * is no longer in it, and an idle topic is freed. Why not the cache: the
 * keys a processor caches under (`metric:<dashboard>:<metric>` for the
 * bundled one) are that plugin's business, and the cache cannot list keys
 * by prefix. The router sees every metric update of every node (cluster
 * included) in one shape, so it keeps this table itself: per topic
 * `dashboard:<id>`, per data.metric, the rendered message (a reference to
 * the frame the subscribers got, with its seq), kept until it is replaced,
 * independent of history and topic freeing.
 *
 * Bounded: WS_LATEST_TOPICS topics, WS_LATEST_METRICS metrics each; past
 * that the least recently updated topic (or the topic's least recently
 * updated metric) makes room. Process memory only: a restart starts it
 * empty, as it starts the history empty.
 */
#ifndef SOPHIA_WS_LATEST_H
#define SOPHIA_WS_LATEST_H

#include <stddef.h>
#include <stdint.h>

#include "ws/ws_history.h"

#define WS_LATEST_TOPICS 512
#define WS_LATEST_METRICS 200

typedef struct ws_latest ws_latest;

ws_latest *ws_latest_new(size_t max_topics, size_t max_metrics);
void ws_latest_free(ws_latest *l);

/* m becomes topic's latest for metric (one more reference is taken). */
void ws_latest_put(ws_latest *l, const char *topic, const char *metric,
                   ws_msg *m, int64_t wall_ms);
/* The same, given ws_namehash(0, topic) and metric's length, as the
 * router keeps them. */
void ws_latest_put_hashed(ws_latest *l, const char *topic, uint64_t topic_hash,
                          const char *metric, size_t metric_len, ws_msg *m,
                          int64_t wall_ms);

/* The topic's latest messages, oldest update first, in *out (malloc'd,
 * not referenced: valid until the next put). Returns the count. */
size_t ws_latest_get(const ws_latest *l, const char *topic, ws_msg ***out);

/* Every topic: name, metric count, wall time of its last update (ms). */
void ws_latest_each(const ws_latest *l,
                    void (*fn)(const char *topic, size_t metrics,
                               int64_t updated_ms, void *arg),
                    void *arg);
size_t ws_latest_topics(const ws_latest *l);

#endif
