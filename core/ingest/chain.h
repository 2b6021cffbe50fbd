/*
 * chain - a stream's processors in order (streams.<name>.processors), with
 * filters anywhere between them; `processor: a` is the chain [a].
 *
 * Each link sees the events the link before it emitted (host->emit, SDK
 * 1.2), or, when that link emitted none, the event it processed: so a
 * processor that only observes (publishes, caches) passes events on as
 * they came, one that rewrites emits the new form, one that splits emits
 * several, and DROP ends that event's way through the chain. A filter link
 * passes on the events that meet its predicates.
 *
 * One event's run is all or nothing under the event contract (stream.h):
 * the contexts of every link that said OK are applied together and commit
 * together, in link order, once all are durable; a RETRY or ERROR at any
 * link discards every context of the run (their staged state with them)
 * and is the event's verdict. A run that ends with no OK context is a DROP
 * (or filtered, when a filter link took the last events).
 *
 * Why a run is synchronous: process() is, and a link's output is only
 * known when it returns. Only the first processor link's reads can be
 * prefetched (the stream's prefetch holds the head event); later links
 * read with cache_get_ex or cache_peek.
 */
#ifndef SOPHIA_CHAIN_H
#define SOPHIA_CHAIN_H

#include <sophia/sdk.h>
#include <jansson.h>
#include <stddef.h>

#include "conf/config.h"
#include "host/host.h"
#include "plugin/plugin.h"

typedef struct sophia_chain sophia_chain;

/* The chain of `cs` over the instances of `plugins`. NULL with why: a
 * link that is not a loaded processor instance, a bad filter, no memory. */
sophia_chain *sophia_chain_new(const sophia_conf_stream *cs,
                               const sophia_plugin_set *plugins, char *why,
                               size_t whylen);
void sophia_chain_free(sophia_chain *ch);

/* The first processor link's instance (its prefetch runs on the head). */
sophia_instance *sophia_chain_first(const sophia_chain *ch);
/* Whether `inst` is one of the chain's processor links. */
int sophia_chain_has(const sophia_chain *ch, const sophia_instance *inst);
/* Whether `plugins` holds another instance than the chain's under one of
 * its links' names (a reload replacing a link). */
int sophia_chain_replaced(const sophia_chain *ch,
                          const sophia_plugin_set *plugins);

/* What one run left: the OK contexts in link order (`one` holds a single
 * one, so a one-processor chain allocates nothing), for the caller to
 * apply and commit or free. */
typedef struct sophia_chain_run {
    sophia_ctx **ctx;
    size_t n;
    sophia_ctx *one;
    int filtered; /* a DROP because a filter link took the last events */
    /* OK: the events that left the chain (what its last link emitted or
     * passed on; none when it dropped them), a reference each, for the
     * stream's outputs: sophia_chain_run_left. */
    json_t **left;
    json_t *left_one; /* left's storage for one event */
    size_t nleft;
} sophia_chain_run;

/* Runs `ev` through the chain. `first`: the first link's context, made
 * by the caller's prefetch (taken), or NULL to make one. OK fills *run;
 * any other verdict leaves it empty, every context freed. */
sophia_verdict sophia_chain_process(const sophia_chain *ch, const char *stream,
                                    const sophia_event *ev, sophia_ctx *first,
                                    sophia_chain_run *run);
/* The run's i-th context, in link order. */
sophia_ctx *sophia_chain_run_ctx(const sophia_chain_run *run, size_t i);
/* The events that left the chain (run->nleft of them), borrowed. */
json_t *const *sophia_chain_run_left(const sophia_chain_run *run);
/* Frees the contexts of a run (newest first, so undos find the state as
 * their apply left it) and its array. */
void sophia_chain_run_free(sophia_chain_run *run);

#endif
