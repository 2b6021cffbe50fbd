/*
 * loop - the one event loop: a libevent event_base that also drives the
 * libuv loop libwebsockets runs on.
 *
 * Why two libraries on one thread: Debian's libwebsockets 4.1 is built
 * without libevent and without external-poll support, but with its libuv
 * event-lib. So lws gets a libuv "foreign" loop that we own, and libevent
 * watches that loop's backend (epoll) fd plus a timer set from
 * uv_backend_timeout(); whenever either fires we run uv_run(UV_RUN_NOWAIT).
 * Everything stays on one thread, with no locks and no hand-off queues:
 * hiredis, libpq, signals and timers are plain libevent events, lws is one
 * more readiness source among them. A second loop thread would need a
 * cross-thread queue for every publish and was not needed: see the
 * measurements in the README's benchmark section.
 *
 * libuv applies watcher changes (e.g. lws asking for POLLOUT after we queue
 * a WebSocket message from a libevent callback) only inside uv_run, so code
 * that calls into lws from outside an lws callback calls sophia_loop_kick()
 * to run libuv once more on this loop turn.
 */
#ifndef SOPHIA_LOOP_H
#define SOPHIA_LOOP_H

#include <event2/event.h>
#include <uv.h>

typedef struct sophia_loop sophia_loop;

typedef void (*sophia_signal_cb)(int signum, void *arg);

sophia_loop *sophia_loop_new(void);
void sophia_loop_free(sophia_loop *l);

struct event_base *sophia_loop_base(sophia_loop *l);
uv_loop_t *sophia_loop_uv(sophia_loop *l);

/* libevent priorities on the loop's base. Events run at SOPHIA_PRIO_WORK
 * (the base gives new events its middle queue) unless they say otherwise;
 * a SOPHIA_PRIO_AFTER event runs only in a pass where nothing else is
 * active: after the work of the pass that activated it. */
enum { SOPHIA_PRIO_WORK = 1, SOPHIA_PRIO_AFTER = 2 };

/* Starts watching libuv's backend; call after lws has joined the uv loop. */
int sophia_loop_bridge_start(sophia_loop *l);
/* Runs pending libuv work soon (on this loop turn). */
void sophia_loop_kick(sophia_loop *l);

/* SIGTERM, SIGINT and SIGHUP go to `cb`; SIGPIPE is ignored. */
int sophia_loop_signals(sophia_loop *l, sophia_signal_cb cb, void *arg);

int sophia_loop_run(sophia_loop *l);
void sophia_loop_stop(sophia_loop *l);
/* True from a callback of the running loop, false before and after it
 * (start-up, shutdown): whether code may still wait by running it. */
int sophia_loop_running(const sophia_loop *l);

/* After lws_context_destroy(): runs libuv until lws closed its handles. */
void sophia_loop_uv_drain(sophia_loop *l);

/* Monotonic and wall clocks in microseconds. */
int64_t sophia_now_mono_us(void);
int64_t sophia_now_wall_us(void);
/* `s` seconds (>= 0) as the timeval libevent's timers take. */
struct timeval sophia_timeval(double s);

#endif
