/*
 * reload - SIGHUP: apply a new configuration and plugin set to the running
 * daemon without losing or repeating an event (SPEC §9).
 *
 * What a reload keeps between signals (the probe in progress, a SIGHUP
 * that came meanwhile, the last failure, retired plugin sets waiting for
 * their callbacks, the swap listener) is one sophia_reloader, created by
 * main() for its server and passed to whoever needs it.
 */
#ifndef SOPHIA_RELOAD_H
#define SOPHIA_RELOAD_H

#include <stdint.h>

#include "daemon/server.h"

typedef struct sophia_reloader sophia_reloader;

/* Reloads of `s` (kept; it must outlive the reloader). NULL when out of
 * memory. */
sophia_reloader *sophia_reloader_new(sophia_server *s);
/* Frees what reloads kept alive for the process lifetime: a probe in
 * progress, retired plugin sets, the configuration the memory module
 * points into. Call it after the memory module is freed and before the
 * loop goes. NULL is fine. */
void sophia_reloader_free(sophia_reloader *rl);

/* Reads the server's `conf->file` again and applies it, or keeps
 * everything as it is and counts a failure. Runs on the loop thread. New
 * and changed plugins are first tried in a child process without blocking
 * the loop, so the swap may happen later; a SIGHUP meanwhile runs
 * afterwards. Returns -1 on a failure known at once, else 0. */
int sophia_reload(sophia_reloader *rl);

/* The last failure's first problem (`FILE:LINE:COL: message`) or NULL,
 * and when the last reload attempt ran (unix µs, 0 = never). */
const char *sophia_reload_last_error(const sophia_reloader *rl);
int64_t sophia_reload_last_at(const sophia_reloader *rl);

/* Secrets policy (SPEC §3), at start and on every reload: endpoints are
 * open (no tokens, no WebSocket secret) only on a loopback `host`. */
void sophia_check_secrets(const sophia_conf *c, const char *host,
                          sophia_diag *d);

/* Called when a reload swaps in `c` and `p`, before the old ones are
 * freed, so whoever was handed them (the HTTP front door, the API
 * context) takes the new ones. One listener: the daemon's wiring. */
typedef void (*sophia_reload_swap_fn)(void *arg, const sophia_conf *c,
                                      const sophia_plugin_set *p);
void sophia_reload_on_swap(sophia_reloader *rl, sophia_reload_swap_fn fn,
                           void *arg);

#endif
