/*
 * api_memory - the memory endpoints (SPEC §4, §13; README "Memory API"):
 * /api/memory (store, list, forget a scope), /api/memory/search,
 * /api/memory/{id} (get, patch, delete) and its /feedback and /history
 * (api_memory.c); the same operations as WebSocket request methods
 * (api_memory_ws.c).
 */
#ifndef SOPHIA_API_MEMORY_H
#define SOPHIA_API_MEMORY_H

#include "http/api.h"

/* Registers /api/memory and /api/memory/... (any method; wrong ones
 * answered 405), each request admitted by sophia_api_admit first. 0, or
 * -1 when out of memory. */
int sophia_api_memory_routes(sophia_http_router *rt, sophia_api *api);

/* Registers (on = 1) or removes the WebSocket request methods
 * memory.search, .list, .store, .get, .history, .update, .delete and
 * .forget; the daemon calls it once the store is made (api->memory set)
 * and before it is freed. */
void sophia_api_memory_ws(sophia_api *api, int on);

#endif
