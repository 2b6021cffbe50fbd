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
 * the new one (export_state / import_state, sophia_correlate_rebind). A
 * restart finds it again in Redis: each instance's export_state is written
 * under `sophia:correlator:<node>:<instance>` every snapshot_every (30 s)
 * and at shutdown, and read back at start-up; until that read answered,
 * the instance's events wait in a bounded buffer (100k events), so none
 * is observed by a state the snapshot then overwrites. A crash loses what
 * was observed since the last snapshot: those events were acknowledged.
 */
#ifndef SOPHIA_CORRELATE_H
#define SOPHIA_CORRELATE_H

#include <stdint.h>
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
/* Writes a last snapshot (asynchronously: call while the loop still runs,
 * then let it turn) of every instance. */
void sophia_correlate_snapshot_all(sophia_correlate *k);
/* Snapshot writes not answered yet (shutdown waits for zero). */
size_t sophia_correlate_writes_pending(const sophia_correlate *k);
void sophia_correlate_free(sophia_correlate *k);

/* The streams' commit hook (stream.h): `arg` is the handle. */
void sophia_correlate_on_commit(void *arg, const sophia_event *ev);

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
