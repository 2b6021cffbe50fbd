/*
 * loop - see loop.h for why libuv is bridged into libevent.
 *
 * The bridge is three libevent events: the uv backend fd (read), a timer
 * mirroring uv_backend_timeout(), and a "kick" event activated by hand.
 * All three call uv_service(), which runs libuv without blocking and
 * re-arms the timer from libuv's next deadline.
 */
#include "event/loop.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/log.h"

struct sophia_loop {
    struct event_base *base;
    uv_loop_t uv;
    struct event *uv_io;
    struct event *uv_timer;
    struct event *uv_kick;
    struct event *sig[3];
    sophia_signal_cb sig_cb;
    void *sig_arg;
    int running; /* inside sophia_loop_run */
};

static void uv_service(sophia_loop *l)
{
    uv_run(&l->uv, UV_RUN_NOWAIT);
    int ms = uv_backend_timeout(&l->uv);
    if (ms < 0) {
        evtimer_del(l->uv_timer);
        return;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(l->uv_timer, &tv);
}

static void on_uv_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    uv_service(arg);
}

sophia_loop *sophia_loop_new(void)
{
    sophia_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->base = event_base_new();
    if (!l->base || event_base_priority_init(l->base, SOPHIA_PRIO_AFTER + 1) ||
        uv_loop_init(&l->uv) != 0) {
        if (l->base)
            event_base_free(l->base);
        free(l);
        return NULL;
    }
    l->uv_timer = evtimer_new(l->base, on_uv_event, l);
    l->uv_kick = event_new(l->base, -1, 0, on_uv_event, l);
    return l;
}

int sophia_loop_bridge_start(sophia_loop *l)
{
    l->uv_io = event_new(l->base, uv_backend_fd(&l->uv), EV_READ | EV_PERSIST,
                         on_uv_event, l);
    if (!l->uv_io || event_add(l->uv_io, NULL) != 0)
        return -1;
    sophia_loop_kick(l);
    return 0;
}

void sophia_loop_kick(sophia_loop *l)
{
    if (!event_pending(l->uv_kick, EV_TIMEOUT, NULL))
        event_active(l->uv_kick, EV_TIMEOUT, 0);
}

struct event_base *sophia_loop_base(sophia_loop *l)
{
    return l->base;
}

uv_loop_t *sophia_loop_uv(sophia_loop *l)
{
    return &l->uv;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    sophia_loop *l = arg;
    if (l->sig_cb)
        l->sig_cb((int)sig, l->sig_arg);
}

int sophia_loop_signals(sophia_loop *l, sophia_signal_cb cb, void *arg)
{
    static const int sigs[3] = {SIGTERM, SIGINT, SIGHUP};
    signal(SIGPIPE, SIG_IGN);
    l->sig_cb = cb;
    l->sig_arg = arg;
    for (int i = 0; i < 3; i++) {
        l->sig[i] = evsignal_new(l->base, sigs[i], on_signal, l);
        if (!l->sig[i] || evsignal_add(l->sig[i], NULL) != 0)
            return -1;
    }
    return 0;
}

int sophia_loop_run(sophia_loop *l)
{
    l->running = 1;
    int rc = event_base_dispatch(l->base);
    l->running = 0;
    return rc;
}

int sophia_loop_running(const sophia_loop *l)
{
    return l && l->running;
}

void sophia_loop_stop(sophia_loop *l)
{
    event_base_loopbreak(l->base);
}

void sophia_loop_uv_drain(sophia_loop *l)
{
    /* lws closes its uv handles asynchronously; bounded so a stuck handle
     * cannot hang shutdown. */
    for (int i = 0; i < 1000 && uv_loop_alive(&l->uv); i++)
        uv_run(&l->uv, UV_RUN_NOWAIT);
}

void sophia_loop_free(sophia_loop *l)
{
    if (!l)
        return;
    for (int i = 0; i < 3; i++)
        if (l->sig[i])
            event_free(l->sig[i]);
    if (l->uv_io)
        event_free(l->uv_io);
    event_free(l->uv_timer);
    event_free(l->uv_kick);
    sophia_loop_uv_drain(l);
    if (uv_loop_close(&l->uv) != 0)
        sophia_warn("loop", "msg=\"libuv loop still had open handles\"");
    /* A bufferevent freed while its deferred callback was queued (a TLS
     * request cancelled at stop) keeps a reference that only that
     * callback drops: event_base_free would discard it unrun and leak
     * the bufferevent with its SSL. Every module has freed its own
     * events by now, so one pass runs only libevent's own. */
    event_base_loop(l->base, EVLOOP_NONBLOCK);
    event_base_free(l->base);
    free(l);
}

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sophia_now_mono_us(void)
{
    return clock_us(CLOCK_MONOTONIC);
}

int64_t sophia_now_wall_us(void)
{
    return clock_us(CLOCK_REALTIME);
}

struct timeval sophia_timeval(double s)
{
    struct timeval tv = {.tv_sec = (time_t)s};
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}
