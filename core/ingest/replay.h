/*
 * replay - runs a range of a stream's Redis history (a durable stream's
 * key, kept by streams.<name>.retention, or a redis.key) through a
 * processor instance again, for POST /api/streams/{name}/replay (SPEC
 * §13) and `sophiad replay`.
 *
 * Two targets. A dry run loads a fresh instance of the target (the
 * stream's processor by default) with its configured options, in a host
 * runtime of its own that has no environment and no loop: the actions of
 * each event are never applied, only turned into JSON lines in
 * sophia-plugin-test's format (host.h's sophia_ctx_actions_json,
 * `{"event":N,"id":ID,"action":...}` then `{"event":N,"id":ID,
 * "verdict":...,"actions":K}`), and an OK event commits into that fresh
 * instance only, as the tool does, so later events see its state. Why a
 * fresh instance: the live one remembers what it already processed (the
 * metrics processor skips an entry id it has seen), so it would answer
 * nothing for history; and nothing of the live daemon changes. Its cache
 * reads (1.1 cache_get_ex, prefetch) find nothing - a node with an empty
 * cache, like the tool's empty map - except SDK 1.0's cache_peek, which
 * reads the daemon's L1. A named target applies the
 * actions as a stream does (apply, commit once durable; a RETRY or a
 * failed effect is tried again with back-off up to the stream's
 * max_attempts), one event at a time, in stream order.
 *
 * Why it is built this way: the range is read with XRANGE in pages on a
 * connection of its own (never a blocking read, never the loop), a
 * first pass counts the range so progress has a total, and a timer
 * hands out events at `rate` per second so the live streams keep their
 * latency. The instance is looked up by name before every event (through
 * the caller's find callback), so a reload that replaces it is followed;
 * a context in flight keeps the old instance loaded (the reloader waits
 * for pending callbacks). One replay per stream at a time; the last one
 * stays visible in /api/stats.
 *
 * Events are built as the live path builds them (the stream's field, the
 * stream's filter applied first: a filtered event gets verdict
 * "filtered"), with received_us = the entry id's time, so a replay does
 * what the original run did with the same state. Memory stores a
 * processor asks for are not listed in a dry run's lines (memory_host.c
 * keeps them apart from the actions).
 */
#ifndef SOPHIA_REPLAY_H
#define SOPHIA_REPLAY_H

#include <jansson.h>
#include <stddef.h>

#include "conf/config.h"
#include "plugin/plugin.h"

struct event_base;
typedef struct sophia_replays sophia_replays;

/* Connects to `url` (redis.url; NULL = none yet) at once. */
sophia_replays *sophia_replays_new(struct event_base *base, const char *url);
/* Cancels running replays (a dry run's caller is told, state
 * "cancelled"). NULL is fine. */
void sophia_replays_free(sophia_replays *rp);

/* `from`/`to` as given: "-", "+", a Redis id (MS or MS-SEQ), or an
 * RFC 3339 time (2026-12-02T09:00:00Z, .fff and +HH:MM allowed). Into a
 * Redis id for XRANGE; 0, or -1 with why. */
int sophia_replay_parse_id(const char *s, char *out, size_t n, char *why,
                           size_t whylen);

typedef sophia_instance *(*sophia_replay_find_fn)(void *arg, const char *name);
/* A dry run's end: `lines` (NDJSON, malloc'd, taken) and its length. */
typedef void (*sophia_replay_done_fn)(void *arg, char *lines, size_t len);

typedef struct sophia_replay_spec {
    const sophia_conf *conf;
    const sophia_conf_stream *stream;
    const char *from, *to; /* Redis ids (sophia_replay_parse_id) */
    const char *instance;  /* what runs the events */
    int dry_run;
    double rate;           /* events per second */
    size_t limit;          /* most events (0 = no limit) */
    sophia_replay_find_fn find;
    void *find_arg;
    sophia_replay_done_fn done; /* dry run: called once, at the end */
    void *done_arg;
} sophia_replay_spec;

/* Outcome of a start: 0 started; otherwise an HTTP status and why. */
int sophia_replay_start(sophia_replays *rp, const sophia_replay_spec *spec,
                        char *why, size_t n);
/* Stops the stream's running replay: state "cancelled", a dry run's
 * caller gets the lines so far and the summary. An event whose effects
 * are being applied still settles (its commit follows its effects), so
 * `applied` may grow by one after; a new replay of the stream is refused
 * (409) until it has. 0, or -1 when none is running. */
int sophia_replay_cancel(sophia_replays *rp, const char *stream);

/* The stream's last replay, {"from","to","target","dry_run","done",
 * "total","applied","dropped","filtered","failed","state","error"?}, or
 * NULL when it had none. state: counting, running, done, failed,
 * cancelled. */
json_t *sophia_replays_stats_json(const sophia_replays *rp, const char *stream);

#endif
