/*
 * upstream - the connections the core keeps on behalf of output plugins
 * (Fluent Bit's model: a plugin says where, the core owns the socket):
 * one Redis connection per URL and one PostgreSQL connection per conninfo,
 * opened on first use and kept with their own reconnects (redis.h, pg.h),
 * and the outgoing HTTP client (http_client.h).
 *
 * A request names its server, or NULL for the daemon's own (redis.url,
 * postgres.url, given at creation and after a reload). Requests are
 * refused at once while their server is down (SOPHIA_EUNAVAIL), never
 * queued behind a dead link: the caller retries with its own back-off.
 * Freeing the set fails every request still pending, each callback
 * exactly once, before anything is gone.
 */
#ifndef SOPHIA_UPSTREAM_H
#define SOPHIA_UPSTREAM_H

#include <stddef.h>

#include "event/http_client.h"
#include "event/pg.h"
#include "event/redis.h"

struct event_base;
typedef struct sophia_upstreams sophia_upstreams;

sophia_upstreams *sophia_upstreams_new(struct event_base *base,
                                       const char *redis_url,
                                       const char *pg_url);
void sophia_upstreams_free(sophia_upstreams *u);
/* The daemon's own servers (after a reload); NULL = none. Connections
 * already open stay, keyed by their URL. */
int sophia_upstreams_set_defaults(sophia_upstreams *u, const char *redis_url,
                                  const char *pg_url);

sophia_http_client *sophia_upstreams_http(sophia_upstreams *u);
/* The connection to `url` (NULL: the default), made on first use; NULL
 * when there is none to make (no default, a malformed URL). */
sophia_redis *sophia_upstreams_redis(sophia_upstreams *u, const char *url);
sophia_pg *sophia_upstreams_pg(sophia_upstreams *u, const char *conninfo);

#endif
