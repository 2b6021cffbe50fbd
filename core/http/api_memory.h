/*
 * api_memory - the memory endpoints (SPEC §4): POST /api/memory,
 * GET /api/memory/search, POST /api/memory/{id}/feedback.
 */
#ifndef SOPHIA_API_MEMORY_H
#define SOPHIA_API_MEMORY_H

#include "http/http.h"

/* Answers `r` (now or later) and returns 1 when its path is under
 * /api/memory; 0 otherwise (not answered). Auth is checked by the caller. */
int sophia_api_memory(sophia_http_req *r);

/* Registers (on = 1) or removes the WebSocket request method
 * `memory.search` (params {q, k?, context?}); the memory store calls it. */
void sophia_api_memory_ws(int on);

#endif
