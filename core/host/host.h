/*
 * host - the sophia_host table handed to plugins, and the action context
 * (sophia_ctx) their callbacks fill.
 *
 * A callback never touches the cache or the router directly: each host
 * call appends an action to the context, and the core applies the list
 * only when the callback returned success. So a processor that fails
 * half-way leaves no half-applied effects, and the core decides when an
 * event's effects are durable enough to acknowledge.
 */
#ifndef SOPHIA_HOST_H
#define SOPHIA_HOST_H

#include <sophia/sdk.h>

#include "plugin/plugin.h"

const sophia_host *sophia_host_table(void);

/* A context for one callback of `inst`; `stream` may be NULL. */
sophia_ctx *sophia_ctx_new(sophia_instance *inst, const char *stream);
/* Applies the queued actions in order. */
void sophia_ctx_apply(sophia_ctx *ctx);
/* Applies the state changes staged with host->stage, in order: call it
 * once the context's actions have taken effect. Whatever is still staged
 * when the context is freed is discarded, so a context that never commits
 * leaves the plugin's state as it was. */
void sophia_ctx_commit(sophia_ctx *ctx);
int sophia_ctx_has_staged(const sophia_ctx *ctx);
void sophia_ctx_free(sophia_ctx *ctx);
/* The queued actions as a JSON array (a json_t *; json_decref it), in
 * order, without applying them: [{"action":"publish"|"alert"|"cache_put"|
 * "cache_invalidate"|"cache_invalidate_tag", ...}]. For sophia-plugin-test
 * and tests. Memory actions are kept by memory_host.c, not in this list. */
sophia_json *sophia_ctx_actions_json(const sophia_ctx *ctx);

/* Queues an update of `type` with `severity` (NULL: none) as publish()
 * would, to the topics sophia_update_topics gives. Takes `data` (NULL =
 * {}). 0, SOPHIA_EINVAL without a ctx, SOPHIA_ENOMEM. */
int sophia_ctx_push_update(sophia_ctx *ctx, const char *type,
                           const char *severity, const char *topic,
                           const char *dashboard_id, sophia_json *data);
/* host->alert_ex (host_alert.c). */
int sophia_host_alert_ex(sophia_ctx *ctx, const sophia_alert *a,
                         sophia_json *data);

/* SDK 1.1 timers (host_timer.c). bind arms them on `base`, those added
 * before too; bind(NULL) cancels every timer (shutdown). */
struct event_base;
void sophia_host_timers_bind(struct event_base *base);
int64_t sophia_host_timer_add(sophia_self *self, double delay_s,
                              double repeat_s,
                              int (*cb)(void *arg, sophia_ctx *ctx), void *arg);
int sophia_host_timer_del(sophia_self *self, int64_t id);
/* Pending timers of `inst` (NULL: of all instances). */
size_t sophia_host_timers_count(const sophia_instance *inst);
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
/* Owned reads not yet answered and not cancelled, of `inst` (NULL: all). */
size_t sophia_host_reads_pending(const sophia_instance *inst);
void sophia_host_reads_release(sophia_instance *inst);
/* Cancels everything the host holds for `inst` (its timers, its pending
 * reads), so nothing calls into its code again: plugin.h's release hook,
 * and what a reload calls for an instance it retires. */
void sophia_host_release(sophia_instance *inst);

/* Plugin counters (host->counter_add), for /metrics. */
void sophia_host_counters_each(void (*fn)(const char *instance,
                                          const char *name, double value,
                                          void *arg),
                               void *arg);
void sophia_host_shutdown(void);

/* Callbacks into plugin code the host still owes (cache_get,
 * memory_search); a reload unloads retired plugins only at zero. */
void sophia_host_callback_begin(void);
void sophia_host_callback_end(void);
size_t sophia_host_callbacks_pending(void);

/* Topics an update goes to (SPEC §5), for the core's own publishes too:
 * updates:<type>, dashboard:<id>, stream:<name>, alerts, alerts:<sev>,
 * plus `extra`. Returns the count written into `out` (at most 6); the
 * strings live in `buf`. */
size_t sophia_update_topics(const char *type, const char *dashboard_id,
                            const char *stream, const char *severity,
                            const char *extra, const char **out, char *buf,
                            size_t buflen);

#endif
