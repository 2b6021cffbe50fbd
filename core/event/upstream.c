/*
 * upstream - see upstream.h. Connections are few (one per server an
 * output names), so each kind is one dict keyed by its URL.
 */
#include "event/upstream.h"

#include <stdlib.h>
#include <string.h>

#include "lib/dict.h"

struct sophia_upstreams {
    struct event_base *base;
    sophia_http_client *http;
    sophia_dict *redis; /* url -> sophia_redis */
    sophia_dict *pg;    /* conninfo -> sophia_pg */
    char *redis_url, *pg_url;
};

sophia_upstreams *sophia_upstreams_new(struct event_base *base,
                                       const char *redis_url,
                                       const char *pg_url)
{
    sophia_upstreams *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->base = base;
    u->http = sophia_http_client_new(base);
    u->redis = sophia_dict_new();
    u->pg = sophia_dict_new();
    if (!u->http || !u->redis || !u->pg ||
        sophia_upstreams_set_defaults(u, redis_url, pg_url) < 0) {
        sophia_upstreams_free(u);
        return NULL;
    }
    return u;
}

static void redis_free(void *v)
{
    sophia_redis_free(v);
}

static void pg_free(void *v)
{
    sophia_pg_free(v);
}

void sophia_upstreams_free(sophia_upstreams *u)
{
    if (!u)
        return;
    /* each fails what it has pending, with its callbacks (upstream.h) */
    sophia_http_client_free(u->http);
    sophia_dict_free(u->redis, redis_free);
    sophia_dict_free(u->pg, pg_free);
    free(u->redis_url);
    free(u->pg_url);
    free(u);
}

static int set_str(char **dst, const char *s)
{
    char *c = s && *s ? strdup(s) : NULL;
    if (s && *s && !c)
        return -1;
    free(*dst);
    *dst = c;
    return 0;
}

int sophia_upstreams_set_defaults(sophia_upstreams *u, const char *redis_url,
                                  const char *pg_url)
{
    return set_str(&u->redis_url, redis_url) < 0 ||
                   set_str(&u->pg_url, pg_url) < 0
               ? -1
               : 0;
}

sophia_http_client *sophia_upstreams_http(sophia_upstreams *u)
{
    return u ? u->http : NULL;
}

/* The connection in `d` under `url`, made with `make` on first use. */
static void *conn_get(sophia_dict *d, const char *url,
                      void *(*make)(struct event_base *, const char *),
                      void (*drop)(void *), struct event_base *base)
{
    void *c = sophia_dict_get(d, url);
    if (c || !(c = make(base, url)))
        return c;
    sophia_dict_set(d, url, c);
    if (sophia_dict_get(d, url) != c) { /* out of memory */
        drop(c);
        c = NULL;
    }
    return c;
}

static void *redis_make(struct event_base *base, const char *url)
{
    return sophia_redis_new(base, url);
}

static void *pg_make(struct event_base *base, const char *conninfo)
{
    return sophia_pg_new(base, conninfo);
}

sophia_redis *sophia_upstreams_redis(sophia_upstreams *u, const char *url)
{
    if (!u || !(url = url ? url : u->redis_url))
        return NULL;
    return conn_get(u->redis, url, redis_make, redis_free, u->base);
}

sophia_pg *sophia_upstreams_pg(sophia_upstreams *u, const char *conninfo)
{
    if (!u || !(conninfo = conninfo ? conninfo : u->pg_url))
        return NULL;
    return conn_get(u->pg, conninfo, pg_make, pg_free, u->base);
}
