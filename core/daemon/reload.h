/*
 * reload - SIGHUP: apply a new configuration and plugin set to the running
 * daemon without losing or repeating an event (SPEC §9).
 */
#ifndef SOPHIA_RELOAD_H
#define SOPHIA_RELOAD_H

#include <stdint.h>

#include "daemon/server.h"

/* Reads `s->conf->file` again and applies it, or keeps everything as it
 * is and counts a failure. Runs on the loop thread. New and changed
 * plugins are first tried in a child process without blocking the loop,
 * so the swap may happen later; a SIGHUP meanwhile runs afterwards.
 * Returns -1 on a failure known at once, else 0. */
int sophia_reload(sophia_server *s);

/* The last failure's first problem (`FILE:LINE:COL: message`) or NULL,
 * and when the last reload attempt ran (unix µs, 0 = never). */
const char *sophia_reload_last_error(void);
int64_t sophia_reload_last_at(void);

/* Secrets policy (SPEC §3), at start and on every reload: endpoints are
 * open (no tokens, no WebSocket secret) only on a loopback `host`. */
void sophia_check_secrets(const sophia_conf *c, const char *host,
                          sophia_diag *d);

/* Called when a reload swaps in `c` and `p`, before the old ones are
 * freed, so whoever was handed them (the HTTP front door, the API
 * context) takes the new ones. One listener: the daemon's wiring. */
typedef void (*sophia_reload_swap_fn)(void *arg, const sophia_conf *c,
                                      const sophia_plugin_set *p);
void sophia_reload_on_swap(sophia_reload_swap_fn fn, void *arg);

/* Frees what reloads kept alive for the process lifetime (after the
 * memory module is freed). */
void sophia_reload_shutdown(void);

#endif
