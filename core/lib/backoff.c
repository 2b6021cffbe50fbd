/*
 * backoff - see backoff.h. No clock, no global state: every figure comes
 * from the arguments, so the same inputs always give the same wait.
 */
#include "lib/backoff.h"

#include <math.h>

double sophia_backoff_plain(double base_s, double cap_s, unsigned failures)
{
    if (failures == 0 || !(base_s > 0))
        return 0;
    if (!(cap_s > 0))
        cap_s = base_s;
    /* 2^63 already dwarfs any cap: no overflow past that. */
    double d = ldexp(base_s, failures > 63 ? 63 : (int)failures - 1);
    return d < cap_s ? d : cap_s;
}

static double clamp01(double u)
{
    return u >= 0 && u < 1 ? u : u >= 1 ? nextafter(1.0, 0.0) : 0;
}

double sophia_backoff_full(double base_s, double cap_s, unsigned failures,
                           double u)
{
    return clamp01(u) * sophia_backoff_plain(base_s, cap_s, failures);
}

double sophia_backoff_decorrelated(double base_s, double cap_s, double prev_s,
                                   double u)
{
    if (!(base_s > 0))
        return 0;
    if (!(cap_s >= base_s))
        cap_s = base_s;
    double hi = (prev_s > base_s ? prev_s : base_s) * 3;
    if (hi > cap_s)
        hi = cap_s;
    return base_s + clamp01(u) * (hi - base_s);
}

double sophia_backoff_rand(unsigned long long *state)
{
    unsigned long long x = *state ? *state : 0x9e3779b97f4a7c15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    /* The top 53 bits of the xorshift64* output as a double in [0, 1). */
    return (double)((x * 0x2545f4914f6cdd1dULL) >> 11) * 0x1.0p-53;
}

void sophia_backoff_init(sophia_backoff *b, double base_s, double cap_s,
                         unsigned long long seed)
{
    *b = (sophia_backoff){.base_s = base_s, .cap_s = cap_s,
                          .rng = seed ^ 0x9e3779b97f4a7c15ULL};
}

double sophia_backoff_next(sophia_backoff *b)
{
    b->prev_s = sophia_backoff_decorrelated(b->base_s, b->cap_s, b->prev_s,
                                            sophia_backoff_rand(&b->rng));
    return b->prev_s;
}

void sophia_backoff_reset(sophia_backoff *b)
{
    b->prev_s = 0;
}
