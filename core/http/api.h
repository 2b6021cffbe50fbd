/*
 * api - the HTTP endpoints: routing by method and path, bearer-token
 * checks, and the JSON/Prometheus documents (/healthz, /metrics,
 * /api/stats), plus ingest (POST /ingest/{stream}) and the dashboard
 * files at /.
 */
#ifndef SOPHIA_API_H
#define SOPHIA_API_H

#include <jansson.h>

#include "http/http.h"

/* Called with the head only, before any body byte is read: the bearer
 * token and the rate limit. 1 = go on; 0 = answered (401, 429). */
int sophia_api_admit(sophia_http_req *r);

/* Answers `r` (now or later). */
void sophia_api_dispatch(sophia_http_req *r);

/* The /api/stats document (new reference). */
json_t *sophia_api_stats_json(void);
/* Registers the WebSocket `stats` request method (the same object) with
 * the router; it goes with the router. */
void sophia_api_stats_ws(struct sophia_ws_router *ws);

/* Loads the dashboard files from `dir` into memory once at start, so
 * serving them never touches the disk on the loop. */
int sophia_api_load_dashboard(sophia_server *srv, const char *dir);
void sophia_api_free_dashboard(sophia_server *srv);

#endif
