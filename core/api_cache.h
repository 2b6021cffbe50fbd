/*
 * api_cache - the cache's HTTP endpoints (SPEC §4):
 *   GET/PUT/DELETE /api/cache/{key}   one key, through the write strategy
 *   POST /api/cache/invalidate        {"tags":[...]} and/or {"keys":[...]}
 *   POST /api/cache/warm              {"count":N}? -> L1 from the hot keys
 *   POST /api/cache/flush             write-back dirty set -> L2/L3 now
 * Each answers once the cache acknowledged (a put after its strategy's
 * ack), so a 200 means what the strategy promises.
 */
#ifndef SOPHIA_API_CACHE_H
#define SOPHIA_API_CACHE_H

#include "http.h"

/* 1 when the path is a cache endpoint (answered, now or later), else 0. */
int sophia_api_cache(sophia_http_req *r);

/* Registers (on) or removes the WS request method `cache.get`
 * (params {"key"}; data {"key","value","tier"}, or error not_found). */
void sophia_api_cache_ws(int on);

#endif
