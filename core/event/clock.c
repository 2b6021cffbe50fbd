/*
 * clock - see clock.h.
 */
#include "event/clock.h"

#include <event2/event.h>
#include <string.h>

#include "event/loop.h"

void sophia_clock_init(sophia_clock *c, struct event_base *base)
{
    memset(c, 0, sizeof(*c));
    c->base = base;
}

void sophia_clock_refresh(sophia_clock *c)
{
    struct timeval tv = {0, 0};
    if (c->base && event_base_gettimeofday_cached(c->base, &tv) == 0 &&
        tv.tv_sec == c->seen.tv_sec && tv.tv_usec == c->seen.tv_usec &&
        c->mono_us)
        return;
    c->seen = tv;
    c->wall_us = sophia_now_wall_us();
    c->mono_us = sophia_now_mono_us();
}
