/*
 * server - the daemon's one shared state: configuration, loop, plugins,
 * streams, WebSocket router, cache tiers and counters.
 *
 * Like Redis's `server`, there is exactly one, reachable as `sophia_srv`,
 * because host-API callbacks handed to plugins carry no context pointer of
 * ours beyond the instance. Everything in it is touched on the loop thread
 * only.
 */
#ifndef SOPHIA_SERVER_H
#define SOPHIA_SERVER_H

#include <stdint.h>

#include "conf/config.h"
#include "event/loop.h"
#include "plugin/plugin.h"

struct lws_context;
struct sophia_ws_router;
struct sophia_streams;
struct sophia_cache;
struct sophia_dash;

typedef struct sophia_server {
    sophia_conf *conf;
    sophia_loop *loop;
    struct lws_context *lws;  /* WebSockets only (http.h says why) */
    struct sophia_http *http; /* the listener and its connections */
    sophia_plugin_set *plugins;
    struct sophia_streams *streams;
    struct sophia_ws_router *ws;
    struct sophia_cache *cache;
    struct sophia_memory *memory; /* NULL when PostgreSQL is disabled */
    struct sophia_dash *dash; /* dashboard files served at / */
    char *host;               /* listen host */
    int port;                 /* listen port (actual, after bind) */
    int64_t started_us;       /* wall clock */
    int shutting_down;

    /* counters for /metrics and /api/stats */
    uint64_t plugin_load_failures;
    uint64_t reloads;
    uint64_t reload_failures;
} sophia_server;

extern sophia_server *sophia_srv;

#endif
