/*
 * loop_wait - running a libevent loop in a cmocka test until something
 * happened: run_until() fails the test with `what` after `ms`; run_for()
 * just lets the loop work for `ms`. Header-only (include after cmocka.h
 * and event2/event.h); each includer gets its own static copies.
 */
#ifndef SOPHIA_TEST_LOOP_WAIT_H
#define SOPHIA_TEST_LOOP_WAIT_H

#include <stdbool.h>

typedef bool (*pred_fn)(void *);

typedef struct guard {
    struct event_base *base;
    bool fired;
} guard;

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    guard *g = arg;
    g->fired = true;
    event_base_loopbreak(g->base);
}

/* Runs the loop until done(arg) or ms have passed (done may be NULL). */
static bool loop_wait(struct event_base *base, pred_fn done, void *arg, int ms)
{
    guard g = {base, false};
    struct event *t = evtimer_new(base, on_guard, &g);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(t, &tv);
    while (!(done && done(arg)) && !g.fired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    return done && done(arg);
}

static inline void run_until(struct event_base *base, pred_fn done, void *arg,
                             int ms, const char *what)
{
    if (!loop_wait(base, done, arg, ms))
        fail_msg("timed out after %d ms waiting for %s", ms, what);
}

static inline void run_for(struct event_base *base, int ms)
{
    loop_wait(base, NULL, NULL, ms);
}

#endif
