/*
 * redis - one hiredis async connection on the loop, for the L2 cache tier.
 *
 * hiredis 0.14 has no async timeouts and no reconnect: this module adds
 * both. A connection attempt or a command that gets no answer within the
 * timeout marks the server down; while down, commands are refused at once
 * (the L2 tier is skipped, never waited for) and a timer reconnects with
 * exponential backoff (100 ms doubling to 5 s).
 */
#ifndef SOPHIA_REDIS_H
#define SOPHIA_REDIS_H

#include <hiredis/hiredis.h>
#include <stdint.h>

struct event_base;
typedef struct sophia_redis sophia_redis;

/* Reply is NULL when the command failed (down, timeout, disconnect). */
typedef void (*sophia_redis_cb)(void *arg, redisReply *reply);

typedef struct sophia_redis_stats {
    int up;
    uint64_t commands;
    uint64_t errors;
    uint64_t reconnects;
    unsigned pending;
} sophia_redis_stats;

/* url: redis://[[user]:password@]host:port/db (redis_url.h). Starts
 * connecting; never blocks. On every connect AUTH (when the URL has a
 * password) and SELECT go first. NULL on a malformed URL (logged,
 * redacted). */
sophia_redis *sophia_redis_new(struct event_base *base, const char *url);
void sophia_redis_free(sophia_redis *r);
int sophia_redis_up(const sophia_redis *r);
const char *sophia_redis_last_error(const sophia_redis *r);

/* Sends argv (binary-safe). cb may be NULL. Returns 0, or SOPHIA_EUNAVAIL
 * when down (cb is not called). */
int sophia_redis_command(sophia_redis *r, sophia_redis_cb cb, void *arg,
                         int argc, const char **argv, const size_t *argvlen);

void sophia_redis_get_stats(const sophia_redis *r, sophia_redis_stats *out);

/* Writes the commands sent so far to the socket now (non-blocking; what
 * the socket does not take goes out on the next writable event), instead
 * of at the next loop turn: for a reply-less command that must reach
 * Redis before the caller's next side effect (an XACK before the next
 * WebSocket frame). */
void sophia_redis_flush(sophia_redis *r);

/* The URL as it may be logged or shown: password replaced by ***. */
const char *sophia_redis_safe_url(const sophia_redis *r);

#endif
