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

sophia_redis *sophia_upstreams_redis(sophia_upstreams *u, const char *url)
{
    if (!u || !(url = url ? url : u->redis_url))
        return NULL;
    sophia_redis *r = sophia_dict_get(u->redis, url);
    if (r || !(r = sophia_redis_new(u->base, url)))
        return r;
    sophia_dict_set(u->redis, url, r);
    if (sophia_dict_get(u->redis, url) != r) { /* out of memory */
        sophia_redis_free(r);
        r = NULL;
    }
    return r;
}

sophia_pg *sophia_upstreams_pg(sophia_upstreams *u, const char *conninfo)
{
    if (!u || !(conninfo = conninfo ? conninfo : u->pg_url))
        return NULL;
    sophia_pg *p = sophia_dict_get(u->pg, conninfo);
    if (p || !(p = sophia_pg_new(u->base, conninfo)))
        return p;
    sophia_dict_set(u->pg, conninfo, p);
    if (sophia_dict_get(u->pg, conninfo) != p) { /* out of memory */
        sophia_pg_free(p);
        p = NULL;
    }
    return p;
}
