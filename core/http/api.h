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

#include "http/http.h"
#include "http/router.h"

/* The admit hook of every /api/ and /ingest/ route: the bearer token and
 * the rate limit, from the head only. 1 = go on; 0 = answered (401, 429). */
int sophia_api_admit(sophia_http_req *r, void *arg);

/* Registers /healthz, /metrics, /api/stats, /api/dashboards, a 404 for
 * other /api/ paths (admitted first) and the dashboard files (GET /...).
 * 0, or -1 when out of memory. */
int sophia_api_routes(sophia_http_router *rt, void *arg);

/* What the daemon tells /api/stats ("reload") and /metrics of reloads. */
typedef struct sophia_api_reload_stats {
    uint64_t reloads;              /* sophia_reloads_total */
    uint64_t failures;             /* sophia_reload_failures_total */
    uint64_t plugin_load_failures; /* sophia_plugin_load_failures_total */
    const char *last_error;        /* the last failure's first problem */
    int64_t last_at_us;            /* unix µs of the last attempt, 0 = never */
} sophia_api_reload_stats;
typedef void (*sophia_api_reload_fn)(void *arg, sophia_api_reload_stats *out);
/* Where they come from (the daemon, which owns reload); zeros without. */
void sophia_api_on_reload_stats(sophia_api_reload_fn fn, void *arg);

/* The /api/stats document (new reference). */
json_t *sophia_api_stats_json(void);

/* Loads the dashboard files from `dir` into memory once at start, so
 * serving them never touches the disk on the loop. */
int sophia_api_load_dashboard(sophia_server *srv, const char *dir);
void sophia_api_free_dashboard(sophia_server *srv);

#endif
