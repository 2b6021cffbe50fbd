/*
 * http_ws - the front door's WebSocket side: the libwebsockets context
 * that /ws upgrades are handed to (http.h says why lws serves only
 * those), on the libuv loop that libevent drives (event/loop.h), with
 * one protocol whose callback feeds the WebSocket router (core/ws).
 * Internal to core/http.
 */
#ifndef SOPHIA_HTTP_WS_H
#define SOPHIA_HTTP_WS_H

#include "event/loop.h"

struct lws_context;
struct lws_vhost;
struct sophia_ws_router;

typedef struct sophia_http_ws {
    sophia_loop *loop;           /* set by the caller */
    struct sophia_ws_router *ws; /* set by the caller */
    int closing;                 /* shutdown: new WebSockets are refused */
    struct lws_context *lws;     /* the rest by sophia_http_ws_start */
    struct lws_vhost *vhost;     /* where upgrades are adopted */
} sophia_http_ws;

/* The lws context and the loop bridge; -1 on failure (stop still
 * cleans up). `w` must stay where it is: lws keeps a pointer to it. */
int sophia_http_ws_start(sophia_http_ws *w);
/* Destroys the context (open WebSockets close with 1001) and waits
 * for lws's handle-close callbacks on the loop. */
void sophia_http_ws_stop(sophia_http_ws *w);

#endif
