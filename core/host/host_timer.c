/*
 * host_timer - host->timer_add / timer_del (SDK 1.1): a plugin's timers on
 * the one loop, so a rolling window closes and a pending pair expires
 * without waiting for the next event.
 *
 * Each timer belongs to an instance. A callback gets its own context, run
 * like a consolidator's: its actions are applied and its staged state
 * committed when it returns 0, all discarded otherwise. The plugin layer
 * calls sophia_host_release() before an instance goes (plugin.h's release
 * hook), which cancels its timers, so a timer never calls into unloaded
 * code or a freed state. Nothing is carried across a reload by the host:
 * the replacing instance arms its own timers (init, import_state), since
 * the old callbacks are the old module's code.
 *
 * The timers are few (a handful per instance), so one list per runtime
 * (the instance's, host_priv.h), walked on add/del/release, is enough.
 * Timers added before the loop exists (init at start-up, --check) wait
 * unarmed until sophia_host_timers_bind.
 */
#include "host/host.h"
#include "host/host_priv.h"
#include "host/output.h"

#include <event2/event.h>
#include <math.h>
#include <stdlib.h>

#include "event/loop.h"
#include "lib/log.h"

typedef struct host_timer {
    struct host_timer *next;
    sophia_host_rt *rt;
    sophia_instance *inst;
    int64_t id;
    double delay_s, repeat_s;
    int (*cb)(void *arg, sophia_ctx *ctx);
    void *arg;
    struct event *ev; /* NULL until bound to a loop */
} host_timer;

static void timer_free(host_timer *t)
{
    if (t->ev)
        event_free(t->ev);
    free(t);
}

/* Unlinks and returns the timer `id` of `inst`, or NULL. */
static host_timer *timer_take(sophia_host_rt *rt, const sophia_instance *inst,
                              int64_t id)
{
    for (host_timer **p = &rt->timers; *p; p = &(*p)->next) {
        host_timer *t = *p;
        if (t->id == id && t->inst == inst) {
            *p = t->next;
            return t;
        }
    }
    return NULL;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    host_timer *t = arg;
    sophia_instance *inst = t->inst;
    int (*cb)(void *, sophia_ctx *) = t->cb;
    void *cb_arg = t->arg;
    if (t->repeat_s > 0) { /* re-armed first: cb may delete it */
        struct timeval tv = sophia_timeval(t->repeat_s);
        evtimer_add(t->ev, &tv);
    } else {
        timer_free(timer_take(t->rt, inst, t->id));
    }
    sophia_ctx *ctx = sophia_ctx_new(inst, NULL);
    if (!ctx)
        return;
    sophia_ctx_enter(ctx);
    int rc = cb(cb_arg, ctx);
    sophia_ctx_leave(ctx);
    if (rc == 0) {
        sophia_ctx_apply_detached(ctx); /* commits once durable */
        return;
    }
    sophia_debug("plugin", "msg=\"timer callback failed; its actions "
                 "discarded\" instance=%s rc=%d", inst->name, rc);
    sophia_ctx_free(ctx);
}

static int timer_arm(host_timer *t)
{
    if (!(t->ev = evtimer_new(t->rt->tbase, on_timer, t)))
        return SOPHIA_ENOMEM;
    struct timeval tv = sophia_timeval(t->delay_s);
    return evtimer_add(t->ev, &tv) == 0 ? 0 : SOPHIA_EIO;
}

/* SOPHIA_CACHE_MAX_TTL (conf/config.h): the one "10 years" bound. */
static int bad_seconds(double s)
{
    return isnan(s) || s < 0 || s > SOPHIA_CACHE_MAX_TTL;
}

int64_t sophia_host_timer_add(sophia_self *self, double delay_s,
                              double repeat_s,
                              int (*cb)(void *arg, sophia_ctx *ctx), void *arg)
{
    /* A repeat under 1 ms would keep the loop busy with one plugin. */
    sophia_host_rt *rt = sophia_host_rt_of(self);
    if (!self || !cb || bad_seconds(delay_s) || bad_seconds(repeat_s) ||
        (repeat_s > 0 && repeat_s < 0.001))
        return SOPHIA_EINVAL;
    if (!rt) /* loaded with the template: no loop will ever run it */
        return SOPHIA_EUNAVAIL;
    host_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return SOPHIA_ENOMEM;
    *t = (host_timer){.rt = rt, .inst = self, .id = ++rt->last_timer_id,
                      .delay_s = delay_s, .repeat_s = repeat_s, .cb = cb,
                      .arg = arg};
    int rc = rt->tbase ? timer_arm(t) : 0;
    if (rc) {
        timer_free(t);
        return rc;
    }
    self->release = sophia_host_release;
    t->next = rt->timers;
    rt->timers = t;
    return t->id;
}

int sophia_host_timer_del(sophia_self *self, int64_t id)
{
    sophia_host_rt *rt = sophia_host_rt_of(self);
    host_timer *t = rt ? timer_take(rt, self, id) : NULL;
    if (!t)
        return SOPHIA_ENOENT;
    timer_free(t);
    return 0;
}

size_t sophia_host_timers_count(const sophia_host_rt *rt,
                                const sophia_instance *inst)
{
    size_t n = 0;
    for (const host_timer *t = rt ? rt->timers : NULL; t; t = t->next)
        n += !inst || t->inst == inst;
    return n;
}

void sophia_host_timers_release(sophia_instance *inst)
{
    sophia_host_rt *rt = sophia_host_rt_of(inst);
    for (host_timer **p = rt ? &rt->timers : NULL; p && *p;) {
        host_timer *t = *p;
        if (t->inst == inst) {
            *p = t->next;
            timer_free(t);
        } else {
            p = &t->next;
        }
    }
}

void sophia_host_timers_bind(sophia_host_rt *rt, struct event_base *base)
{
    if (!rt)
        return;
    if (!base) { /* shutdown: the loop goes, and so do the timers */
        while (rt->timers) {
            host_timer *t = rt->timers;
            rt->timers = t->next;
            timer_free(t);
        }
        rt->tbase = NULL;
        return;
    }
    rt->tbase = base;
    for (host_timer *t = rt->timers; t; t = t->next)
        if (!t->ev && timer_arm(t))
            sophia_warn("plugin", "msg=\"cannot arm a timer\" instance=%s",
                        t->inst->name);
}

void sophia_host_release(sophia_instance *inst)
{
    sophia_host_timers_release(inst);
    sophia_host_reads_release(inst);
    sophia_host_outputs_release(inst);
}
