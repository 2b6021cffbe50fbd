/*
 * ratelimit - server.rate_limit: a token bucket per caller for /ingest
 * and /api, so one client (or one leaked token) cannot take the whole
 * daemon. A caller is its bearer token when server.tokens is set and the
 * request carries one, else its IP address.
 *
 * Each bucket holds up to `burst` requests and refills at `rate` per
 * second; a request finding it empty is answered 429 with Retry-After
 * (the seconds until one request's worth has refilled) and counted in
 * sophia_rate_limited_total. Off when rate is 0 (the default). Settings
 * are read from the running configuration on every request, so a reload
 * applies them at once.
 *
 * Buckets live in a fixed open-addressing table keyed by a 64-bit hash of
 * the caller (the token itself is not kept). When the table fills up,
 * buckets that have refilled completely are forgotten first (they behave
 * exactly like a new bucket); if that is not enough the table starts
 * over, which at worst lets a burst through again: memory stays bounded
 * whatever the number of callers.
 *
 * The table is a handle (192 KiB, with its sweep buffer) owned by whoever
 * serves the requests: the daemon creates one and hands it to the API
 * context, a test makes its own. Loop thread only.
 */
#ifndef SOPHIA_RATELIMIT_H
#define SOPHIA_RATELIMIT_H

#include <stdint.h>

#include "conf/config.h"
#include "http/http.h"

typedef struct sophia_ratelimit sophia_ratelimit;

/* Empty buckets, nothing refused; NULL when out of memory. */
sophia_ratelimit *sophia_ratelimit_new(void);
void sophia_ratelimit_free(sophia_ratelimit *rl);

/* 1: go on. 0: the request was over its rate (server.rate_limit of `c`)
 * and has been answered 429. A NULL `rl` admits everything. */
int sophia_ratelimit_admit(sophia_ratelimit *rl, sophia_http_req *r,
                           const sophia_conf *c);

/* The core of it, for tests and other callers: takes one request from
 * the bucket of `caller` at time `now_us`. 0 = admitted, else the seconds
 * to wait (>= 1). */
int sophia_ratelimit_take(sophia_ratelimit *rl, const char *caller,
                          double rate, double burst, int64_t now_us);

/* Requests refused so far (sophia_rate_limited_total); 0 for NULL. */
uint64_t sophia_ratelimit_refused(const sophia_ratelimit *rl);

/* Forgets every bucket. */
void sophia_ratelimit_reset(sophia_ratelimit *rl);

#endif
