/*
 * correlate - the correlator plugins (SDK 1.2, `correlators:` in the
 * YAML): each committed event of the streams a correlator listens to is
 * handed to its observe(), on the loop right after the commit, with a
 * context of its own whose actions (alerts, publishes, cache puts) are
 * applied like a timer's.
 *
 * The ingest layer knows nothing of this: the daemon gives the streams
 * sophia_correlate_on_commit as their commit hook (stream.h) with this
 * handle as its argument, and the streams call it with each committed
 * event, once. What a correlator sees is the event as the stream took it
 * in (after dedup and the stream's filter, before its processors), so a
 * rule reads the source's own fields whatever the chain emits.
 *
 * State: a reload that replaces a correlator instance hands its state to
 * the new one (sophia_correlate_rebind): per key with Redis up, the new
 * one reads the hash (below) once the old one's last changes are
 * written; else export_state / import_state, whole, on the loop. A
 * restart finds it again in Redis, in one of two ways:
 *   - per key (SDK 1.3 correlators, export_changes/import_key): right
 *     after each observe() the plugin hands over the keys that event
 *     changed; the changes of a loop turn go out in one pipeline (HSET
 *     and HDEL on the hash `sophia:correlator:<node>:<instance>:keys`),
 *     one batch out per instance at a time, and the event's ack waits
 *     for it: the commit hook returns a ticket and the streams hold the
 *     ack until the durable callback reports that ticket (an event is
 *     acknowledged only once its effects are durable, and the
 *     correlator's state change is one of them). A failed write goes
 *     again from the 1 s tick, its acks still held. At start-up the hash
 *     is read back with HSCAN, a page (50 keys) per loop turn. So a
 *     kill -9 loses no acknowledged event's observation; an event
 *     observed but not acknowledged is delivered again and observed
 *     again (at least once).
 *   - whole state (1.2 correlators): export_state is written under
 *     `sophia:correlator:<node>:<instance>` every snapshot_every (30 s)
 *     and at shutdown, on the loop (it takes as long as the plugin's
 *     export: seconds for 100k big keys), and acks do not wait for it: a
 *     crash loses what was observed since the last snapshot.
 * Until the start-up (or reload) read finished, an instance's events
 * wait in a bounded buffer (100k events), so none is observed by a state
 * the read then overwrites; a read that got no answer in 10 s starts the
 * instance empty.
 */
#ifndef SOPHIA_CORRELATE_H
#define SOPHIA_CORRELATE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <sophia/sdk.h>

#include "conf/config.h"
#include "lib/diag.h"
#include "plugin/plugin.h"

typedef struct sophia_correlate sophia_correlate;
struct event_base;

/* Checks `c`'s correlators against `plugins` (each a loaded instance of
 * kind correlator; positions from the YAML in diag) and, when `base` is
 * not NULL, builds them on that loop: NULL on a problem or when none is
 * configured (the streams' hook then stays unset, so the hot path pays
 * one NULL check). Without Redis (c->redis_url) there are no snapshots. */
sophia_correlate *sophia_correlate_new(const sophia_conf *c,
                                       const sophia_plugin_set *plugins,
                                       struct event_base *base,
                                       sophia_diag *diag);
/* Writes what is left (asynchronously: call while the loop still runs,
 * then let it turn): each per-key instance's changes, each 1.2
 * instance's whole state. */
void sophia_correlate_snapshot_all(sophia_correlate *k);
/* Snapshot writes not answered yet (shutdown waits for zero). */
size_t sophia_correlate_writes_pending(const sophia_correlate *k);
void sophia_correlate_free(sophia_correlate *k);

/* The streams' commit hook (stream.h): `arg` is the handle. Returns the
 * ticket the event's ack must wait for (see the durable callback), or 0
 * when it need not wait (no per-key correlator changed anything). */
uint64_t sophia_correlate_on_commit(void *arg, const sophia_event *ev);

/* Told `upto` when every ticket up to it is durable (the streams'
 * sophia_streams_durable); set at wiring time, kept across rebinds. */
typedef void (*sophia_correlate_durable_fn)(void *arg, uint64_t upto);
void sophia_correlate_on_durable(sophia_correlate *k,
                                 sophia_correlate_durable_fn fn, void *arg);

/* One instance's figures (/api/stats `correlators.<instance>`,
 * correlate_stats.c declares each). */
typedef struct sophia_correlate_stats {
    uint64_t observed;     /* events given to observe() */
    uint64_t failed;       /* observe() returned an error */
    uint64_t missed;       /* not observed: the start-up buffer was full */
    uint64_t alerts;       /* alerts observe() raised */
    int64_t open_keys;     /* per key: keys in its Redis hash */
    uint64_t writes;       /* write batches (pipelines) answered */
    uint64_t keys_written; /* keys set by them */
    uint64_t keys_deleted; /* keys deleted by them (closed, expired) */
    uint64_t bytes;        /* state bytes written */
    uint64_t errors;       /* writes that failed (sent again) */
    double last_persist_ms; /* the last batch, sent to answered */
    size_t dirty;          /* keys changed, not sent yet */
    int per_key;           /* persisted by key (else whole state, or none) */
    int restoring;         /* its state is being read at start-up */
} sophia_correlate_stats;

/* The figures of each instance: {"<instance>": {...}}; {} for NULL. */
json_t *sophia_correlate_stats_json(const sophia_correlate *k);
void sophia_correlate_write_prom(const sophia_correlate *k, FILE *f);

/* Reload: the correlators of `c` over `next` (checked before with a
 * sophia_correlate_new without base). An instance `next` replaces hands
 * its state to its successor; call while the old set is still loaded.
 * Returns the handle the streams' hook must now get: `k` itself, a new
 * one (when there was none), or NULL (none configured; `k` freed). */
sophia_correlate *sophia_correlate_rebind(sophia_correlate *k,
                                          const sophia_conf *c,
                                          const sophia_plugin_set *next,
                                          struct event_base *base);

#endif
