/*
 * server - what the daemon holds: configuration, loop, plugins, streams,
 * WebSocket router, cache tiers, the API context and routes, the reloader,
 * the shutdown's progress and the reload counters.
 *
 * main() owns the one instance (on its stack) and hands it to reload.c
 * and to every callback it registers (their void *arg); every module
 * below the daemon gets the handles it needs when it is created or wired
 * (docs/ARCHITECTURE.md), so nothing else includes this file and no
 * global points at it. Everything in it is touched on the loop thread
 * only.
 */
#ifndef SOPHIA_SERVER_H
#define SOPHIA_SERVER_H

#include <stdint.h>

#include "conf/config.h"
#include "event/loop.h"
#include "http/api.h"
#include "plugin/plugin.h"

struct sophia_ws_router;
struct sophia_streams;
struct sophia_cache;
struct sophia_http_router;
struct sophia_reloader;
struct sophia_host_rt;
struct event;

typedef struct sophia_server {
    sophia_conf *conf;
    sophia_loop *loop;
    struct sophia_http *http; /* the listener and its connections */
    sophia_plugin_set *plugins;
    struct sophia_host_rt *host_rt; /* what the plugins' host calls act on */
    struct sophia_streams *streams;
    struct sophia_ws_router *ws;
    struct sophia_cache *cache;
    struct sophia_memory *memory; /* NULL when PostgreSQL is disabled */
    struct sophia_correlate *correlate; /* NULL when none is configured */
    struct sophia_upstreams *upstreams; /* output plugins' connections */
    char *host;               /* listen host */
    int port;                 /* listen port (actual, after bind) */
    int64_t started_us;       /* wall clock */
    /* What every load of the file is given: the http layer's TLS check. */
    sophia_conf_load_opts load_opts;

    struct sophia_http_router *routes; /* every HTTP endpoint, by its owner */
    sophia_api api;                    /* what the API handlers are handed */
    struct sophia_reloader *reloader;  /* SIGHUP (reload.h) */

    /* graceful shutdown (main.c) */
    int shutting_down;
    struct event *shutdown_ev;
    int64_t shutdown_deadline_us;
    int cache_flushed; /* write-back reached L2/L3 (bounded by the grace) */
    int correlate_saved; /* the correlators' last snapshot was sent */

    /* counters for /metrics and /api/stats */
    uint64_t plugin_load_failures;
    uint64_t reloads;
    uint64_t reload_failures;
} sophia_server;

/* Hands the current correlators (s->correlate, maybe NULL) to the
 * streams' commit hook, the streams to their durable callback, and them
 * to the API's figures: at start-up and after each reload (main.c). */
void sophia_server_wire_correlate(sophia_server *s);

#endif
