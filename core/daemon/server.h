/*
 * server - what the daemon holds: configuration, loop, plugins, streams,
 * WebSocket router, cache tiers and the reload counters.
 *
 * main.c owns the one instance and hands it to reload.c; every module
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
#include "plugin/plugin.h"

struct sophia_ws_router;
struct sophia_streams;
struct sophia_cache;

typedef struct sophia_server {
    sophia_conf *conf;
    sophia_loop *loop;
    struct sophia_http *http; /* the listener and its connections */
    sophia_plugin_set *plugins;
    struct sophia_streams *streams;
    struct sophia_ws_router *ws;
    struct sophia_cache *cache;
    struct sophia_memory *memory; /* NULL when PostgreSQL is disabled */
    char *host;               /* listen host */
    int port;                 /* listen port (actual, after bind) */
    int64_t started_us;       /* wall clock */
    int shutting_down;

    /* counters for /metrics and /api/stats */
    uint64_t plugin_load_failures;
    uint64_t reloads;
    uint64_t reload_failures;
} sophia_server;

#endif
