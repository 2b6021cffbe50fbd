/*
 * api_streams - POST /api/streams/{name}/replay (SPEC §13): a range of a
 * stream's Redis history run again through a processor instance
 * (ingest/replay.h), as a dry run answered with the actions as JSON
 * lines, or into a named instance with its effects applied (answered
 * 202 at once; progress in /api/stats streams.<name>.replay).
 */
#ifndef SOPHIA_API_STREAMS_H
#define SOPHIA_API_STREAMS_H

#include "http/api.h"
#include "http/router.h"

/* Registers /api/streams/ (admitted as every /api/ route). 0, or -1. */
int sophia_api_streams_routes(sophia_http_router *rt, sophia_api *api);
/* Adds "replay" (the last replay's progress) to each stream of `streams`
 * (/api/stats' object) that had one. */
void sophia_api_streams_stats(const sophia_api *api, json_t *streams);

#endif
