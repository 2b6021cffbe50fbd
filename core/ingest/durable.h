/*
 * durable - durable acceptance for a stream: the events of an HTTP or
 * webhook body are appended to the stream's Redis Stream before the
 * client hears 202, and processing reads them back through the consumer
 * group (source_redis.c: XREADGROUP, XACK after the effects, XAUTOCLAIM,
 * dead letter). A sophiad killed with -9 after a 202 therefore loses
 * nothing: the entry waits in Redis, unread or pending, for the next
 * consumer.
 *
 * `streams.<name>.durable` is on by default when Redis is configured and
 * may be set to false to keep today's in-memory queue. The Redis Stream
 * is `streams.<name>.redis.key`, or when none is set the node's own
 * `sophia:stream:<name>@<hostname>/<listen address>`: two sophiad sharing
 * a Redis do not split each other's events unless they name one key (a
 * cluster that should share the work does), and a restart on the same
 * host and address finds its backlog. The consumer group and its options
 * come from the same `redis:` section. A durable stream never falls back to memory: while Redis is
 * unreachable, or a body cannot be appended, the body is refused whole
 * (accept.h: the http layer answers 503 with Retry-After).
 *
 * A body that arrives while the appender's first connection is still
 * being made (just after start, or for a stream a reload added) waits
 * for it (at most redis.c's 2 s connect timeout) instead of being
 * refused; once Redis was reached, down means 503 at once.
 *
 * One body is appended all or nothing: one EVAL of a script running an
 * XADD per event, in order (durable.c), on a connection of its own
 * (appends never queue behind the source's control traffic). The 202 is
 * sent only when the script answered that it appended every event.
 *
 * Backpressure: a durable stream's queue is the Redis Stream, so the
 * local queue_size bounds what this node has appended but not yet taken
 * in (appends in flight + appended - read, plus the local queue); a body
 * that would go past it is refused (SOPHIA_EBUSY), as for a memory queue.
 */
#ifndef SOPHIA_DURABLE_H
#define SOPHIA_DURABLE_H

#include <jansson.h>
#include <stddef.h>

#include "conf/config.h"
#include "ingest/ingest.h"

struct event_base;
struct sophia_stream;
struct sophia_source_redis;
typedef struct sophia_durable sophia_durable;

/* 1 when stream `cs` accepts durably under configuration `c`. */
int sophia_durable_enabled(const sophia_conf *c, const sophia_conf_stream *cs);
/* The Redis Stream key of `cs` in buf: its redis.key, or the node's own
 * default, sophia:stream:<name>@<hostname>/<listen address>. */
const char *sophia_durable_key(const sophia_conf *c,
                               const sophia_conf_stream *cs, char *buf,
                               size_t len);
/* The default consumer name: <hostname> on the node's own key (so a
 * restarted process re-reads what its predecessor held at once),
 * <hostname>-<pid> on a configured, possibly shared, key. */
const char *sophia_durable_consumer(const sophia_conf_stream *cs, char *buf,
                                    size_t len);

/* An appender for `key`; `src` is the stream's consumer (for the
 * backlog). NULL when out of memory or the URL is bad. */
sophia_durable *sophia_durable_new(struct sophia_stream *st,
                                   struct sophia_source_redis *src,
                                   const char *url, const char *key,
                                   const char *field, struct event_base *base);
/* Pending appends are answered as failed (SOPHIA_EUNAVAIL). */
void sophia_durable_free(sophia_durable *d);
int sophia_durable_up(const sophia_durable *d);

/* Called once per started append: rc 0 when every event was appended,
 * SOPHIA_EUNAVAIL when none was (Redis down, error, timeout). */
typedef void (*sophia_durable_done_fn)(void *arg, int rc);
/* What an append of `n` events would be refused with now (SOPHIA_EBUSY:
 * the backlog is full; SOPHIA_EUNAVAIL: Redis is down), or 0; counts
 * nothing. */
int sophia_durable_check(sophia_durable *d, size_t n);
/* Starts appending `n` events. 0: `done` will be called once, later.
 * SOPHIA_EBUSY (backlog full, counted as rejected), SOPHIA_EUNAVAIL or
 * SOPHIA_ENOMEM: nothing was sent and `done` is not called. With `body`
 * and `spans` (sophia_ingest_parse_spans; both may be NULL), each event
 * is appended as its text in the body instead of encoded again. */
int sophia_durable_append(sophia_durable *d, json_t *const *events, size_t n,
                          const char *body, const sophia_ingest_span *spans,
                          sophia_durable_done_fn done, void *arg);

/* The event this process appended as the JSON text `text` of `len` bytes
 * (a new reference, removed from the appender), or NULL: entries the
 * consumer group hands back to the node that wrote them - nearly all, on
 * a node's own key - are taken as they were accepted instead of parsed
 * again. Found by their place: the oldest filed and not yet taken (see
 * durable.c). The appender keeps the events of its last `capacity` (the
 * stream's queue size, at least 1,024) XADDs; older ones, and entries
 * another node wrote, are parsed as before. */
json_t *sophia_durable_take_written(sophia_durable *d, const char *text,
                                    size_t len);

/* The Redis Stream key this appender writes to. */
const char *sophia_durable_stream_key(const sophia_durable *d);

/* {"key","up","appended","append_failed","backlog","reused"} */
json_t *sophia_durable_stats_json(const sophia_durable *d);

#endif
