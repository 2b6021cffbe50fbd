/*
 * ws - the WebSocket router behind `/ws`: subscriptions, per-topic
 * sequence numbers, fan-out and per-connection send queues.
 *
 * Routing cost follows subscribers, not connections: exact topics are a
 * hash index topic -> subscribers; `prefix*` patterns are a list scanned
 * per publish (few in practice; a trie can replace it without changing
 * this interface). A message matching several of one client's
 * subscriptions is delivered once, stamped with the first matching topic
 * in the publish order and that topic's seq. The JSON text of a message is
 * rendered once per topic and shared, reference-counted, by every queue
 * it sits in; a client whose queue reaches websocket.max_queue is closed
 * (1008) rather than allowed to grow memory.
 */
#ifndef SOPHIA_WS_H
#define SOPHIA_WS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct lws;
typedef struct sophia_ws_router sophia_ws_router;
typedef struct sophia_ws_client sophia_ws_client;

typedef struct sophia_ws_stats {
    uint64_t connections;    /* open now */
    uint64_t connections_total;
    uint64_t subscriptions;  /* open now, exact + pattern */
    uint64_t messages_in;
    uint64_t messages_out;
    uint64_t dropped;        /* messages lost with clients dropped as slow */
    uint64_t slow_closed;    /* clients closed for a full queue */
    uint64_t published;      /* publish calls */
} sophia_ws_stats;

sophia_ws_router *sophia_ws_router_new(size_t max_queue);
void sophia_ws_router_free(sophia_ws_router *r);

/* lws callbacks, called by http.c. receive/writeable return -1 to close. */
sophia_ws_client *sophia_ws_open(sophia_ws_router *r, struct lws *wsi);
int sophia_ws_receive(sophia_ws_client *c, const void *in, size_t len);
int sophia_ws_writeable(sophia_ws_client *c);
void sophia_ws_closed(sophia_ws_client *c);

/* Sends {"type":type,"topic":t,"seq":n,["dashboard_id":id,]"data":data}
 * to every subscriber of each of `topics` (borrowed). */
void sophia_ws_publish(sophia_ws_router *r, const char *type,
                       const char *const *topics, size_t ntopics,
                       const char *dashboard_id, json_t *data);

/* Closes every connection with 1001 (going away). */
void sophia_ws_close_all(sophia_ws_router *r);

void sophia_ws_get_stats(const sophia_ws_router *r, sophia_ws_stats *out);

#endif
