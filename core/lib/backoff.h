/*
 * backoff - the one exponential back-off with jitter of the core: how long
 * to wait before attempt n+1 of something that failed n times (an event
 * whose effects could not be taken, a reconnect).
 *
 * Pure functions: the random draw `u` (uniform in [0, 1)) is an argument,
 * so callers choose their generator and tests pin the result. Jitter
 * matters because failures come in bursts (a tier goes down, every event
 * in flight fails at once): without it they would all retry in the same
 * instant and fail together again.
 *
 * - full jitter: uniform in [0, min(cap, base * 2^(n-1))] (AWS's "full
 *   jitter"); the spread grows with n, the mean is half the plain delay.
 * - decorrelated jitter: uniform in [base, min(cap, prev * 3)], each wait
 *   derived from the previous one rather than from n.
 *
 * Callers still using their own doubling schedules without jitter (to
 * switch later): core/event/redis.c reconnect (backoff_ms, REDIS_BACKOFF_*),
 * core/event/pg.c reconnect (backoff_ms), core/cache/cache_l3.c retry of a
 * transient SQL error (L3_BACKOFF_MAX_MS), core/cluster/cluster.c subscriber
 * reconnect (CLUSTER_BACKOFF_*). Streams (core/ingest/stream.c)
 * use this one.
 */
#ifndef SOPHIA_BACKOFF_H
#define SOPHIA_BACKOFF_H

typedef enum sophia_jitter {
    SOPHIA_JITTER_FULL,
    SOPHIA_JITTER_DECORRELATED
} sophia_jitter;

/* The plain exponential delay after `failures` failures (>= 1): base *
 * 2^(failures-1), never above cap. 0 for failures 0. Seconds. */
double sophia_backoff_plain(double base_s, double cap_s, unsigned failures);
/* Full jitter: u * sophia_backoff_plain(...). */
double sophia_backoff_full(double base_s, double cap_s, unsigned failures,
                           double u);
/* Decorrelated jitter: base + u * (min(cap, prev * 3) - base); prev <= 0
 * (the first wait) counts as base. */
double sophia_backoff_decorrelated(double base_s, double cap_s, double prev_s,
                                   double u);
/* A uniform draw in [0, 1) from a caller-held xorshift64* state (seeded
 * with anything non-zero; 0 is replaced by a fixed seed). */
double sophia_backoff_rand(unsigned long long *state);

#endif
