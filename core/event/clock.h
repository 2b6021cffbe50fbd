/*
 * clock - the loop's clocks, read once per turn of the loop.
 *
 * The path of one ingested event read the clock ten times (cache
 * versions, expiries and put latency, history ages, the dedup window):
 * ~5% of its CPU at 5,000 events/s, a vDSO read costing ~30 ns here.
 * nginx and Redis read the time once per turn of their loop; so does
 * this. A turn is recognised by libevent's own per-turn time cache:
 * while its value is the one seen at the last read, the clocks read then
 * are returned. Off the loop (start-up, tests) libevent has no cache and
 * each call reads the clocks.
 *
 * Within a turn time stands still: durations taken with it are
 * turn-granular (a put that ends in its own turn took 0 µs), and what
 * must see time pass inside one callback (a budget) reads
 * sophia_now_mono_us() instead. Each module keeps its own sophia_clock:
 * one read per turn per module, and no state shared between them.
 */
#ifndef SOPHIA_CLOCK_H
#define SOPHIA_CLOCK_H

#include <stdint.h>
#include <sys/time.h>

struct event_base;

typedef struct sophia_clock {
    struct event_base *base; /* NULL: every call reads the clocks */
    struct timeval seen;     /* libevent's cached time at the last read */
    int64_t wall_us, mono_us;
} sophia_clock;

void sophia_clock_init(sophia_clock *c, struct event_base *base);
/* Reads both clocks unless this turn's are read already. */
void sophia_clock_refresh(sophia_clock *c);

/* The wall (CLOCK_REALTIME) and monotonic clocks as of this turn, µs.
 * Inline: a hot path asks several times a turn. */
static inline int64_t sophia_clock_wall_us(sophia_clock *c)
{
    sophia_clock_refresh(c);
    return c->wall_us;
}

static inline int64_t sophia_clock_mono_us(sophia_clock *c)
{
    sophia_clock_refresh(c);
    return c->mono_us;
}

#endif
