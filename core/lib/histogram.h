/*
 * histogram - a fixed-size latency histogram with logarithmic buckets, for
 * p50/p99 figures in /api/stats without keeping samples.
 *
 * Buckets grow by a factor of 2^(1/4) (four per octave, so a quantile is
 * off by at most ~19%) from 1 µs up to ~2^32 µs; recording is a
 * count-leading-zeros and two increments, cheap enough for every cache
 * lookup. Values are in microseconds as doubles so sub-microsecond L1
 * lookups still land in the first bucket rather than vanish.
 */
#ifndef SOPHIA_HISTOGRAM_H
#define SOPHIA_HISTOGRAM_H

#include <stdint.h>

#define SOPHIA_HIST_BUCKETS 132 /* 33 octaves x 4 */

typedef struct sophia_hist {
    uint64_t count;
    double sum_us;
    uint64_t b[SOPHIA_HIST_BUCKETS];
} sophia_hist;

void sophia_hist_record(sophia_hist *h, double us);
/* The q-quantile (0..1) in µs, the upper bound of its bucket; 0 if empty. */
double sophia_hist_quantile(const sophia_hist *h, double q);

#endif
