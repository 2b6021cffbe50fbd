/*
 * api - the daemon's own HTTP endpoints: the bearer-token check every
 * /api/ and /ingest/ request passes at its head, the JSON/Prometheus
 * documents (/healthz, /metrics, /api/stats, /api/dashboards) and the
 * dashboard files at /. Registered into the front door's route table
 * (router.h) beside those of api_cache, api_memory and api_ingest.
 */
#ifndef SOPHIA_API_H
#define SOPHIA_API_H

#include <jansson.h>
#include <stdint.h>

#include "conf/config.h"
#include "http/http.h"
#include "http/router.h"
#include "plugin/plugin.h"

struct sophia_cache;
struct sophia_memory;
struct sophia_streams;
struct sophia_ws_router;
typedef struct sophia_dash sophia_dash;

/* What the daemon tells /api/stats ("reload") and /metrics of reloads. */
typedef struct sophia_api_reload_stats {
    uint64_t reloads;              /* sophia_reloads_total */
    uint64_t failures;             /* sophia_reload_failures_total */
    uint64_t plugin_load_failures; /* sophia_plugin_load_failures_total */
    const char *last_error;        /* the last failure's first problem */
    int64_t last_at_us;            /* unix µs of the last attempt, 0 = never */
} sophia_api_reload_stats;
typedef void (*sophia_api_reload_fn)(void *arg, sophia_api_reload_stats *out);

/* The context every API handler gets (its routes' arg): what the daemon
 * runs, handed over explicitly. The daemon fills it before registering
 * routes and keeps it current: a reload swaps `conf` and `plugins`, and
 * `memory` is NULLed before the store is freed. Handlers only read it,
 * on the loop thread. */
typedef struct sophia_api {
    const sophia_conf *conf;
    const sophia_plugin_set *plugins;
    struct sophia_streams *streams;
    struct sophia_cache *cache;     /* NULL: the cache endpoints answer 503 */
    struct sophia_memory *memory;   /* NULL when PostgreSQL is disabled */
    struct sophia_ws_router *ws;
    const sophia_http *http;        /* its counters */
    sophia_dash *dash;              /* dashboard files, or NULL */
    int64_t started_us;             /* wall clock */
    sophia_api_reload_fn reload_stats; /* NULL: zeros */
    void *reload_arg;
    struct sophia_ratelimit *ratelimit; /* the daemon's; NULL: no limit */
    struct sophia_slack_filter *slack;  /* Slack's retry filter (hooks.h) */
    struct sophia_host_rt *host;        /* plugin counters; NULL: none */
    struct sophia_replays *replays;     /* ingest/replay.h; NULL: none */
    struct sophia_correlate *correlate; /* host/correlate.h; NULL: none */
} sophia_api;

/* The admit hook of every /api/ and /ingest/ route (arg: the sophia_api):
 * the bearer token and the rate limit, from the head only. 1 = go on;
 * 0 = answered (401, 429). */
int sophia_api_admit(sophia_http_req *r, void *arg);

/* Registers /healthz, /metrics, /api/stats, /api/dashboards, a 404 for
 * other /api/ paths (admitted first) and the dashboard files (GET /...).
 * 0, or -1 when out of memory. */
int sophia_api_routes(sophia_http_router *rt, sophia_api *api);

/* The /api/stats document (new reference). */
json_t *sophia_api_stats(const sophia_api *api);
/* Registers the WebSocket `stats` request method (the same object) with
 * api->ws; it goes with the router. */
void sophia_api_stats_ws(sophia_api *api);

/* Loads the dashboard files from `dir` into memory once at start, so
 * serving them never touches the disk on the loop. NULL when `dir`
 * cannot be read. */
sophia_dash *sophia_api_load_dashboard(const char *dir);
void sophia_api_free_dashboard(sophia_dash *dash);

#endif
