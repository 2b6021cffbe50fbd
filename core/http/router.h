/*
 * router - the route table of the HTTP front door: whoever owns an
 * endpoint registers it (api.c its documents, api_cache.c, api_memory.c,
 * api_ingest.c), so http.c dispatches without knowing any of them.
 *
 * A route is a method (or any), a path matched exactly or as a prefix, a
 * handler, and an optional head-time admit hook: called with the head
 * only, before any body byte is read (the bearer token and the rate
 * limit), it answers and returns 0 to refuse. For a request, an exact
 * path beats a prefix and a longer prefix a shorter one; among equals
 * the first registered wins. A request no route takes is answered 404
 * `no endpoint <path>`.
 *
 * Every JSON body is refused past SOPHIA_JSON_MAX_DEPTH levels before a
 * handler parses it (jsonlimit.h), unless its route says it reports
 * errors itself (SOPHIA_ROUTE_RAW_BODY, e.g. /ingest with line and
 * column).
 */
#ifndef SOPHIA_ROUTER_H
#define SOPHIA_ROUTER_H

#include "http/http_parse.h"

typedef struct sophia_http_req sophia_http_req;
typedef struct sophia_http_router sophia_http_router;

/* Answers `r`, now or later. */
typedef void (*sophia_http_handler)(sophia_http_req *r, void *arg);
/* 1 = go on; 0 = answered (401, 429, ...). */
typedef int (*sophia_http_admit_fn)(sophia_http_req *r, void *arg);

#define SOPHIA_HTTP_ANY ((sophia_http_method)-1)

enum {
    SOPHIA_ROUTE_PREFIX = 1,  /* `path` is a prefix */
    SOPHIA_ROUTE_RAW_BODY = 2 /* no depth check: the handler reports */
};

typedef struct sophia_http_route {
    sophia_http_method method; /* SOPHIA_HTTP_ANY: every method (the
                                * handler answers 405 itself) */
    const char *path;          /* static: not copied */
    int flags;
    sophia_http_handler handler;
    sophia_http_admit_fn admit; /* NULL: admitted */
    void *arg;                  /* for both */
} sophia_http_route;

sophia_http_router *sophia_http_router_new(void);
void sophia_http_router_free(sophia_http_router *rt);
/* 0, or -1 when out of memory. */
int sophia_http_route_add(sophia_http_router *rt, const sophia_http_route *r);

/* The route for a request, or NULL. */
const sophia_http_route *sophia_http_router_match(const sophia_http_router *rt,
                                                  sophia_http_method m,
                                                  const char *path);
/* At the head: the route's admit hook. 1 = go on, 0 = answered. */
int sophia_http_router_admit(const sophia_http_router *rt, sophia_http_req *r);
/* With the body: the depth check, then the route's handler or 404. */
void sophia_http_router_dispatch(const sophia_http_router *rt,
                                 sophia_http_req *r);

#endif
