/*
 * api_ingest - the HTTP side of ingest: POST /ingest/{stream}, POST
 * /hooks/slack and POST /hooks/gong. The ingest layer checks signatures
 * (ingest/hooks.h), parses bodies (ingest/ingest.h) and takes events
 * into streams (ingest/accept.h), returning a verdict; these handlers
 * run those steps and turn the verdict into the answer:
 *   accepted       202 {"accepted":N} (Slack: 200 {"ok":true})
 *   full           503 queue_full, Retry-After
 *   unavailable    503 durable_unavailable, Retry-After (durable streams)
 *   out of memory  500 internal (503 with Retry-After on a durable stream)
 */
#ifndef SOPHIA_API_INGEST_H
#define SOPHIA_API_INGEST_H

#include "conf/config.h"
#include "http/http.h"
#include "http/router.h"

struct sophia_streams;
struct sophia_slack_filter;

/* POST /ingest/{name}: the body's events into stream `name`. */
void sophia_api_ingest_post(sophia_http_req *r, struct sophia_streams *streams,
                            const char *name);
/* POST /hooks/slack and /hooks/gong, as ingest/hooks.h describes;
 * `filter` is Slack's retry filter (the API context's). */
void sophia_api_hooks_slack(sophia_http_req *r, const sophia_conf *c,
                            struct sophia_streams *streams,
                            struct sophia_slack_filter *filter);
void sophia_api_hooks_gong(sophia_http_req *r, const sophia_conf *c,
                           struct sophia_streams *streams);

/* Registers POST /ingest/{stream} (other methods: 405; admitted by
 * sophia_api_admit, the API's token and rate check) and POST /hooks/slack
 * and /hooks/gong (each checks its own secret). 0, or -1 out of memory. */
struct sophia_api;
int sophia_api_ingest_routes(sophia_http_router *rt, struct sophia_api *api);

#endif
