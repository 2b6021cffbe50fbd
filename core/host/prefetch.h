/*
 * prefetch - a read through all tiers before process() (SDK 1.1): the
 * host->prefetch / host->prefetched members, and the reads a processor's
 * prefetch member asks for.
 *
 * process() is synchronous, the tiers below L1 are not. So a processor
 * that needs a previous value (crm: a deal's last stage, on a node that
 * never saw the deal or after a restart) names its keys first; the
 * caller (ingest/stream_prefetch.c for streams) runs
 * sophia_prefetch_run, waits for its answer, and then calls process()
 * with the same context, in which the answers are kept. An L1 hit answers
 * inside the call, so a warm key costs no loop turn.
 */
#ifndef SOPHIA_PREFETCH_H
#define SOPHIA_PREFETCH_H

#include <sophia/sdk.h>

#include "plugin/plugin.h"

/* The table members (host.c lists them). */
int sophia_host_prefetch(sophia_ctx *ctx, const char *key);
int sophia_host_prefetched(sophia_ctx *ctx, const char *key,
                           const sophia_json **value);

/* 1 when `inst` is a processor with a prefetch member its ABI minor and
 * its ops table's struct_size let the host read (sdk.h growth rule). */
int sophia_prefetch_wanted(const sophia_instance *inst);

/* rc 0: the context is ready for process(); otherwise why the event must
 * be retried (a read refused, a tier down, the processor's own error). */
typedef void (*sophia_prefetch_done_fn)(void *arg, int rc);

/* Runs inst's prefetch for `ev` and reads the keys it named through the
 * tiers into `ctx` (fresh, of `inst`, for this event's process()).
 * Returns 1 when ctx is ready now (nothing to read, or every key answered
 * inside the call), 0 when done(arg, rc) runs later, or a negative
 * sophia_errno now (done not called). Freeing ctx cancels the reads
 * still out: done is then never called. */
int sophia_prefetch_run(sophia_instance *inst, sophia_ctx *ctx,
                        const sophia_event *ev, sophia_prefetch_done_fn done,
                        void *arg);

/* The same in two halves, for a caller that answers from elsewhere
 * (sophia-plugin-test, from its in-memory cache): collect runs inst's
 * prefetch and keeps the keys it named in ctx, unread (0, or the error
 * that makes the event a RETRY); key(ctx, i) walks them (NULL past the
 * end); answer(ctx, key, value) records one answer, value NULL for "no
 * tier holds it" (copied; 0, SOPHIA_EINVAL for a key not named). */
int sophia_prefetch_collect(sophia_instance *inst, sophia_ctx *ctx,
                            const sophia_event *ev);
const char *sophia_prefetch_key(sophia_ctx *ctx, size_t i);
int sophia_prefetch_answer(sophia_ctx *ctx, const char *key,
                           const sophia_json *value);

/* The context's slot for its prefetch answers (host.c), and what
 * sophia_ctx_free calls to drop them. */
void **sophia_ctx_prefetch_slot(sophia_ctx *ctx);
void sophia_prefetch_ctx_free(sophia_ctx *ctx);

#endif
