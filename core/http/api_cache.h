/*
 * api_cache - the cache's HTTP endpoints (SPEC §4):
 *   GET/PUT/DELETE /api/cache/{key}   one key, through the write strategy
 *   POST /api/cache/invalidate        {"tags":[...]} and/or {"keys":[...]}
 *   POST /api/cache/warm              {"count":N}? -> L1 from the hot keys
 *   POST /api/cache/flush             write-back dirty set -> L2/L3 now
 *   POST /api/cache/access            {"keys":[...],"dashboard","user"}:
 *                                     record readers (access patterns)
 * Keys: 400 bad_key unless sophia_cache_key_check passes; PUT ttls: 400
 * bad_ttl unless sophia_cache_ttl_ok.
 * Each answers once the cache acknowledged (a put after its strategy's
 * ack), so a 200 means what the strategy promises.
 */
#ifndef SOPHIA_API_CACHE_H
#define SOPHIA_API_CACHE_H

#include "http/api.h"

/* Registers /api/cache/ (any method; wrong ones answered 405), each
 * request admitted by sophia_api_admit first. 0, or -1 when out of
 * memory. */
int sophia_api_cache_routes(sophia_http_router *rt, sophia_api *api);

/* Registers (on) or removes the WS request method `cache.get`
 * (params {"key"}; data {"key","value","tier"}, or error not_found or
 * bad_key). A read by a JWT-authenticated client records its subject as
 * the reader (params "dashboard" too); an unauthenticated one nothing. */
void sophia_api_cache_ws(sophia_api *api, int on);

#endif
