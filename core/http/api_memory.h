/*
 * api_memory - the memory endpoints (SPEC §4): POST /api/memory,
 * GET /api/memory/search, POST /api/memory/{id}/feedback.
 */
#ifndef SOPHIA_API_MEMORY_H
#define SOPHIA_API_MEMORY_H

#include "http/api.h"

/* Registers /api/memory and /api/memory/... (any method; wrong ones
 * answered 405), each request admitted by sophia_api_admit first. 0, or
 * -1 when out of memory. */
int sophia_api_memory_routes(sophia_http_router *rt, sophia_api *api);

/* Registers (on = 1) or removes the WebSocket request method
 * `memory.search` (params {q, k?, context?}); the daemon calls it once
 * the store is made (api->memory set) and before it is freed. */
void sophia_api_memory_ws(sophia_api *api, int on);

#endif
