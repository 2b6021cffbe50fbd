/*
 * host - the sophia_host table handed to plugins, and the action context
 * (sophia_ctx) their callbacks fill.
 *
 * A callback never touches the cache or the router directly: each host
 * call appends an action to the context, and the core applies the list
 * only when the callback returned success. So a processor that fails
 * half-way leaves no half-applied effects, and the core decides when an
 * event's effects are durable enough to acknowledge.
 *
 * Applying is asynchronous with one completion (SPEC §11: the ack waits
 * for durability). Each effect reports when it is durable where its
 * write strategy says: a cache put when sophia_cache_put_async's done
 * runs (write-through: committed in L3; write-back: journaled; L1-only:
 * at once), an invalidation when the tiers confirmed it, a memory when its
 * row is committed, a stream event's records when each of its stream's
 * outputs took them (output.h). Publishes (and alerts) go to the router, which takes
 * them synchronously, at sophia_ctx_commit: once all of that is durable
 * and in the order the caller commits (a stream commits its events in
 * order), so a subscriber never hears of an event whose effects may still
 * be lost and retried (a retried event would be heard twice), and the ack
 * follows at once (a kill -9 between them replays at most one turn). The
 * apply reports 0, or the first error (an effect refused now, SOPHIA_EBUSY
 * for a full write-back set or L3 queue, or failed later): the caller then
 * retries the whole event, whose effects are idempotent by construction
 * (puts carry versions, stores of a retried event may repeat).
 *
 * Its state is a runtime handle (sophia_host_rt) the daemon creates and
 * passes down: the environment (cache, router and memory store), plugin
 * counters, owned reads, SDK 1.1 timers, and the count of callbacks still
 * owed. Plugins are loaded with the runtime's own copy of the table
 * (sophia_host_rt_table); the plugin layer records on each instance the
 * table its init() got, and every host function given a self or a
 * context reaches the runtime from there. No file-scope state, except
 * the runtime SDK 1.0's three context-free reads use (host.c).
 */
#ifndef SOPHIA_HOST_H
#define SOPHIA_HOST_H

#include <sophia/sdk.h>

#include "plugin/plugin.h"

/* The constant template: its functions act on no runtime (effects
 * skipped, counters and timers refused), so it suits tools and tests that
 * need only its pure members (JSON, strerror, free). */
const sophia_host *sophia_host_table(void);

typedef struct sophia_host_rt sophia_host_rt;
/* A runtime with no environment, no counters, no timers. */
sophia_host_rt *sophia_host_rt_new(void);
/* Cancels its timers and frees its counters. Unload the instances loaded
 * with its table first (their release runs against it). NULL is fine. */
void sophia_host_rt_free(sophia_host_rt *rt);
/* Its own table: what its plugins are loaded with. Its owner may replace
 * members before loading (sophia-plugin-test does); a plugin must be
 * loaded with this pointer, never with a copy of it. */
sophia_host *sophia_host_rt_table(sophia_host_rt *rt);
/* The runtime `inst` was loaded with; NULL for the template. */
sophia_host_rt *sophia_host_rt_of(const sophia_instance *inst);

struct sophia_cache;
struct sophia_ws_router;
struct sophia_memory;
struct sophia_upstreams;
/* Where actions go; any member may be NULL (that tier of effects is then
 * skipped, as when it is not configured). Set by the daemon at start and
 * before it frees them; copied. `upstreams` serves output plugins' I/O
 * (host->http_request, redis_command, pg_query; event/upstream.h). */
typedef struct sophia_host_env {
    struct sophia_cache *cache;
    struct sophia_ws_router *ws;
    struct sophia_memory *memory;
    struct sophia_upstreams *upstreams;
} sophia_host_env;
void sophia_host_set_env(sophia_host_rt *rt, const sophia_host_env *env);

/* A context for one callback of `inst`; `stream` may be NULL. */
sophia_ctx *sophia_ctx_new(sophia_instance *inst, const char *stream);
/* Starts the queued actions in order; done(arg, rc) runs once, when
 * every effect is durable (rc 0) or with the first error. done may run
 * before this returns; NULL = nobody waits. Freeing the context before
 * done ran cancels the report (the effects already started go on). */
typedef void (*sophia_ctx_done_fn)(void *arg, int rc);
void sophia_ctx_apply(sophia_ctx *ctx, sophia_ctx_done_fn done, void *arg);
/* An apply in progress, for the effects memory_host.c starts: begin
 * before starting one, end(apply, rc) once it is done (or refused). */
typedef struct sophia_apply sophia_apply;
void sophia_apply_begin(sophia_apply *ap);
void sophia_apply_end(void *ap, int rc);
/* memory_host.c: starts the context's queued memory stores on `ap`. */
void sophia_memory_ctx_apply(sophia_ctx *ctx, sophia_apply *ap);
/* The context's event commits: its publishes go to the router (unless an
 * apply without a done callback sent them already) and the state changes
 * staged with host->stage apply, in order. Call it once the apply
 * reported 0 (or, without effects to wait for, at once). Whatever is still staged
 * when the context is freed is discarded, and what host->stage_undoable
 * applied at once is undone, newest first, so a context that never
 * commits leaves the plugin's state as it was. */
void sophia_ctx_commit(sophia_ctx *ctx);
/* Around a plugin callback given `ctx` (process, a timer's, a consolidator
 * run): what the instance counts meanwhile (counter_add) is staged in ctx
 * and counted when it commits. */
void sophia_ctx_enter(sophia_ctx *ctx);
void sophia_ctx_leave(sophia_ctx *ctx);
/* The context's processor instance on `ev`, between enter and leave. */
sophia_verdict sophia_ctx_process(sophia_ctx *ctx, const sophia_event *ev);
/* Whether changes wait for the commit to apply (host->stage): the stream
 * then starts no later event until this one settles, so that process()
 * sees them. Changes applied at once (stage_undoable) do not count. */
int sophia_ctx_has_staged(const sophia_ctx *ctx);
/* The events process() emitted (host->emit), one per call from *cursor
 * (start at 0), borrowed while the context lives; NULL after the last. */
const sophia_json *sophia_ctx_emitted(const sophia_ctx *ctx, size_t *cursor);
void sophia_ctx_free(sophia_ctx *ctx);
/* For a run no event waits on (a consolidator pass, a plugin timer):
 * applies the actions and, once they are durable, commits; an effect that
 * fails discards the staged state instead. Takes ctx and frees it then. */
void sophia_ctx_apply_detached(sophia_ctx *ctx);
/* The queued actions as a JSON array (a json_t *; json_decref it), in
 * order, without applying them: [{"action":"publish"|"alert"|"cache_put"|
 * "cache_invalidate"|"cache_invalidate_tag", ...}]. For sophia-plugin-test
 * and tests. Memory actions are kept by memory_host.c, not in this list. */
sophia_json *sophia_ctx_actions_json(const sophia_ctx *ctx);
/* How many updates of `type` (e.g. "alert") `ctx` has queued. */
size_t sophia_ctx_count_updates(const sophia_ctx *ctx, const char *type);

/* Queues an update of `type` with `severity` (NULL: none) as publish()
 * would, to the topics sophia_update_topics gives. Takes `data` (NULL =
 * {}). 0, SOPHIA_EINVAL without a ctx, SOPHIA_ENOMEM. */
int sophia_ctx_push_update(sophia_ctx *ctx, const char *type,
                           const char *severity, const char *topic,
                           const char *dashboard_id, sophia_json *data);
/* host->alert_ex (host_alert.c). */
int sophia_host_alert_ex(sophia_ctx *ctx, const sophia_alert *a,
                         sophia_json *data);

/* SDK 1.1 timers (host_timer.c), per runtime. bind arms them on `base`,
 * those added before too; bind(NULL) cancels every timer (shutdown). */
struct event_base;
void sophia_host_timers_bind(sophia_host_rt *rt, struct event_base *base);
int64_t sophia_host_timer_add(sophia_self *self, double delay_s,
                              double repeat_s,
                              int (*cb)(void *arg, sophia_ctx *ctx), void *arg);
int sophia_host_timer_del(sophia_self *self, int64_t id);
/* Pending timers of `rt` of `inst` (NULL: of all its instances). */
size_t sophia_host_timers_count(const sophia_host_rt *rt,
                                const sophia_instance *inst);
void sophia_host_timers_release(sophia_instance *inst);
/* SDK 1.1 reads owned by an instance (host_read.c). */
int sophia_host_cache_get_ex(sophia_self *self, const char *key,
                             void (*cb)(void *arg, int rc,
                                        const sophia_json *value),
                             void *arg);
int sophia_host_memory_search_ex(sophia_self *self, const char *query,
                                 const sophia_json *filter, size_t k,
                                 void (*cb)(void *arg, int rc,
                                            const sophia_json *results),
                                 void *arg);
/* Owned reads of `rt` not yet answered and not cancelled, of `inst`
 * (NULL: all). */
size_t sophia_host_reads_pending(const sophia_host_rt *rt,
                                 const sophia_instance *inst);
void sophia_host_reads_release(sophia_instance *inst);
/* Cancels everything the host holds for `inst` (its timers, its pending
 * reads), so nothing calls into its code again: plugin.h's release hook,
 * and what a reload calls for an instance it retires. */
void sophia_host_release(sophia_instance *inst);

/* Plugin counters (host->counter_add) of `rt`, for /metrics. */
void sophia_host_counters_each(const sophia_host_rt *rt,
                               void (*fn)(const char *instance,
                                          const char *name, double value,
                                          void *arg),
                               void *arg);

/* Callbacks into plugin code `rt` still owes (cache_get, memory_search,
 * and applies not yet reported, whose completion commits or discards
 * staged changes); a reload unloads retired plugins only at zero. NULL
 * rt: nothing counted. */
void sophia_host_callback_begin(sophia_host_rt *rt);
void sophia_host_callback_end(sophia_host_rt *rt);
size_t sophia_host_callbacks_pending(const sophia_host_rt *rt);

/* Topics an update goes to (SPEC §5), for the core's own publishes too:
 * updates:<type>, dashboard:<id>, stream:<name>, alerts, alerts:<sev>,
 * plus `extra`. Returns the count written into `out` (at most 6); the
 * strings live in `buf`. */
size_t sophia_update_topics(const char *type, const char *dashboard_id,
                            const char *stream, const char *severity,
                            const char *extra, const char **out, char *buf,
                            size_t buflen);

#endif
