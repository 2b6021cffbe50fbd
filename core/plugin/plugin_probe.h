/*
 * plugin_probe - tries plugin instances in a forked child before the
 * daemon loads them itself, so a plugin that crashes (SIGSEGV, abort) or
 * hangs in init() fails the load or the reload instead of the daemon.
 *
 * The child opens each new or changed instance exactly as the daemon
 * would (plugins.path lookup, strict modes, ABI check, options, init())
 * and reports its progress on a pipe; the parent reads the exit status:
 * a signal or a non-zero exit during an instance is that instance's
 * fault, named with its file ("instance 'x': plugin 'm' (/p/m.so)
 * crashed in init: SIGSEGV"). A child that outlives plugins.init_timeout
 * is killed and reported as hung. Ordinary refusals (wrong ABI, bad
 * options, init returning an error) are left to the parent's own load,
 * which reports them with positions.
 *
 * At start-up and for --check the probe is synchronous. A SIGHUP reload
 * runs on the loop, so there the probe is asynchronous: a libevent watch
 * on the pipe and a timer, and a callback when it is over.
 */
#ifndef SOPHIA_PLUGIN_PROBE_H
#define SOPHIA_PLUGIN_PROBE_H

#include <event2/event.h>
#include <sophia/sdk.h>

#include "conf/config.h"
#include "lib/diag.h"
#include "plugin/plugin.h"

typedef struct sophia_probe sophia_probe;

/* Called once with the problems found (diag->count 0 = all fine); the
 * probe is freed after it returns. */
typedef void (*sophia_probe_done)(const sophia_diag *diag, void *arg);

/* Tries every instance of `c` that a move from `old_conf`/`old` would
 * load fresh (all of them when `old` is NULL). Marks crashed[i] (one per
 * c->instances entry, may be NULL) for each one that crashed or hung,
 * adds a problem for each to `diag`. Returns how many failed. */
int sophia_plugin_probe_sync(const sophia_conf *c, const sophia_conf *old_conf,
                             const sophia_plugin_set *old,
                             const sophia_host *host, unsigned char *crashed,
                             sophia_diag *diag);

/* The same on `base`. Returns the running probe (`done` will be called),
 * or NULL when there was nothing to try (no callback then). `c`, `old`
 * and `old_conf` must stay alive until `done` or sophia_probe_cancel. */
sophia_probe *sophia_plugin_probe_start(const sophia_conf *c,
                                        const sophia_conf *old_conf,
                                        const sophia_plugin_set *old,
                                        const sophia_host *host,
                                        struct event_base *base,
                                        sophia_probe_done done, void *arg);

/* Kills and reaps the child, frees the probe; `done` is not called. */
void sophia_probe_cancel(sophia_probe *p);

#endif
