/*
 * histogram - see histogram.h. Bucket i covers (lo(i-1), lo(i)] with
 * lo(i) = 2^(i/4) µs; bucket 0 takes everything up to 1 µs.
 */
#include "lib/histogram.h"

#include <math.h>

static unsigned bucket_of(double us)
{
    if (!(us > 1.0))
        return 0;
    int e;
    double m = frexp(us, &e); /* us = m * 2^e, m in [0.5, 1) */
    /* Quarter octave inside [2^(e-1), 2^e): m*2 in [1,2). */
    double f = m * 2.0;
    if (f == 1.0) /* exactly 2^(e-1): the top of the octave below */
        return (unsigned)(e - 1) * 4 < SOPHIA_HIST_BUCKETS
                   ? (unsigned)(e - 1) * 4
                   : SOPHIA_HIST_BUCKETS - 1;
    unsigned q = f <= 1.189207115 ? 0 : f <= 1.414213562 ? 1
                 : f <= 1.681792831 ? 2 : 3;
    unsigned i = (unsigned)(e - 1) * 4 + q + 1;
    return i < SOPHIA_HIST_BUCKETS ? i : SOPHIA_HIST_BUCKETS - 1;
}

void sophia_hist_record(sophia_hist *h, double us)
{
    h->b[bucket_of(us)]++;
    h->count++;
    h->sum_us += us;
}

double sophia_hist_quantile(const sophia_hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->count);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < SOPHIA_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want)
            return i == 0 ? 1.0 : pow(2.0, (double)i / 4.0);
    }
    return pow(2.0, (double)(SOPHIA_HIST_BUCKETS - 1) / 4.0);
}
