/*
 * router - see router.h.
 *
 * A flat array searched from the top: a daemon has a dozen routes, and a
 * linear scan of short strings costs less than the request's parse. The
 * route is looked up twice (head, then body) rather than kept on the
 * request, so http.c holds no route state.
 */
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "lib/jsonlimit.h"

struct sophia_http_router {
    sophia_http_route *routes;
    size_t n, cap;
};

sophia_http_router *sophia_http_router_new(void)
{
    return calloc(1, sizeof(sophia_http_router));
}

void sophia_http_router_free(sophia_http_router *rt)
{
    if (!rt)
        return;
    free(rt->routes);
    free(rt);
}

int sophia_http_route_add(sophia_http_router *rt, const sophia_http_route *r)
{
    if (rt->n == rt->cap) {
        size_t cap = rt->cap ? 2 * rt->cap : 16;
        sophia_http_route *v = realloc(rt->routes, cap * sizeof(*v));
        if (!v)
            return -1;
        rt->routes = v;
        rt->cap = cap;
    }
    rt->routes[rt->n++] = *r;
    return 0;
}

/* How well `r` takes `path`: 0 not at all, else exact above any prefix,
 * a longer prefix above a shorter one. */
static size_t score(const sophia_http_route *r, const char *path)
{
    size_t len = strlen(r->path);
    if (!(r->flags & SOPHIA_ROUTE_PREFIX))
        return strcmp(path, r->path) == 0 ? (size_t)-1 : 0;
    return strncmp(path, r->path, len) == 0 ? len + 1 : 0;
}

const sophia_http_route *sophia_http_router_match(const sophia_http_router *rt,
                                                  sophia_http_method m,
                                                  const char *path)
{
    const sophia_http_route *best = NULL;
    size_t best_score = 0;
    for (size_t i = 0; rt && i < rt->n; i++) {
        const sophia_http_route *r = &rt->routes[i];
        if (r->method != SOPHIA_HTTP_ANY && r->method != m)
            continue;
        size_t s = score(r, path);
        if (s > best_score) {
            best = r;
            best_score = s;
        }
    }
    return best;
}

static const sophia_http_route *route_of(const sophia_http_router *rt,
                                         sophia_http_req *r)
{
    return sophia_http_router_match(rt, sophia_http_req_method(r),
                                    sophia_http_req_path(r));
}

int sophia_http_router_admit(const sophia_http_router *rt, sophia_http_req *r)
{
    const sophia_http_route *route = route_of(rt, r);
    return !route || !route->admit || route->admit(r, route->arg);
}

/* 1 when the body may go to a handler; else answered 400. */
static int depth_ok(sophia_http_req *r)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    size_t at = sophia_json_too_deep(body, len, SOPHIA_JSON_MAX_DEPTH);
    if (at)
        sophia_http_reply_error(r, 400, "too_deep",
                                "JSON nested deeper than %d levels (at byte %zu)",
                                SOPHIA_JSON_MAX_DEPTH, at - 1);
    return at == 0;
}

void sophia_http_router_dispatch(const sophia_http_router *rt,
                                 sophia_http_req *r)
{
    const sophia_http_route *route = route_of(rt, r);
    if (!(route && (route->flags & SOPHIA_ROUTE_RAW_BODY)) && !depth_ok(r))
        return;
    if (route)
        route->handler(r, route->arg);
    else
        sophia_http_reply_error(r, 404, "not_found", "no endpoint %s",
                                sophia_http_req_path(r));
}
