/*
 * source_redis - a Redis Streams source for a stream: a consumer group
 * read with XREADGROUP, acknowledged with XACK only once an event's
 * effects are durable (stream.h), with XAUTOCLAIM of entries a dead
 * consumer left pending and a dead-letter stream `<key>:dead` (fields
 * `data` or the entry's own, `_id`, `_stream`, `_reason`; MAXLEN ~
 * 100000) for: entries whose JSON does not parse (at once), events the
 * stream gave up on (processor ERROR, or out of max_attempts; the stream
 * retries with back-off itself), and entries claimed from pending
 * `dead_letter_after` times (a consumer that keeps dying on them).
 *
 * Two connections per source, both sophia_redis (reconnect, watchdog):
 * one only ever carries the blocking XREADGROUP (a BLOCK read occupies its
 * connection, and anything pipelined behind it would wait), the other
 * carries XGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM and XADD. Reads are
 * issued only while the stream queue has room for a whole batch, so a
 * full queue pauses reading instead of refusing entries (backpressure).
 *
 * Entries: the field `field` (default "data") holds the event as JSON;
 * an entry without it becomes an object of its fields. An entry whose
 * JSON does not parse is dead-lettered at once. Entries currently in the
 * local queue are remembered so a claim pass never takes them twice.
 *
 * Pending entries of this consumer are read first (XREADGROUP from id 0,
 * then ">"): a sophiad restarted under the same `consumer` name takes up
 * at once what its previous process held when it died; entries of a
 * consumer name that never comes back are taken by XAUTOCLAIM after
 * claim_idle. When the stream is durable (durable.h) the source also owns
 * its appender and uses the default key when `key` is not set.
 *
 * claim_idle must exceed the longest time an entry waits in the local
 * queue: XAUTOCLAIM cannot skip the entries this consumer still holds, so
 * with a too-small value they gain a delivery (counted towards
 * dead_letter_after) although they are not processed twice.
 */
#ifndef SOPHIA_SOURCE_REDIS_H
#define SOPHIA_SOURCE_REDIS_H

#include <jansson.h>
#include <stdint.h>

#include "conf/config.h"
#include "event/redis.h"

struct event_base;
struct sophia_stream;
typedef struct sophia_source_redis sophia_source_redis;

sophia_source_redis *sophia_source_redis_new(struct sophia_stream *st,
                                             const sophia_conf *c,
                                             const sophia_conf_stream *cs,
                                             struct event_base *base);
/* The durable appender of a durable stream (durable.h), else NULL. */
struct sophia_durable *sophia_source_redis_durable(const sophia_source_redis *r);
/* Entries taken from Redis so far (read, claimed or re-read). */
uint64_t sophia_source_redis_taken(const sophia_source_redis *r);
/* 1 when its connections (and a durable stream's appender) are up and
 * the consumer group exists. */
int sophia_source_redis_up(const sophia_source_redis *r);
/* {"key","group","consumer","up","read","acked","claimed","dead"} */
json_t *sophia_source_redis_stats_json(const sophia_source_redis *r);
/* Sends the XACKs waiting for their turn on `rd` now (a durable append's
 * connection, right before its EVAL), unless they must go on the source's
 * own control connection. */
void sophia_source_redis_acks_ride(sophia_source_redis *r,
                                   sophia_redis *rd);
/* Flushes XACKs still being sent (bounded wait), then closes. */
void sophia_source_redis_free(sophia_source_redis *r);

#endif
