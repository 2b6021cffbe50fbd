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
 * Users: streams retrying an event (core/ingest/stream.c, full jitter),
 * and through sophia_backoff (decorrelated jitter) the reconnects of Redis
 * (core/event/redis.c), PostgreSQL (core/event/pg.c) and the cluster's
 * subscriber (core/cluster/cluster.c), and L3's retry of a transient SQL
 * error (core/cache/cache_l3.c).
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

/* A reconnect schedule: decorrelated jitter between base and cap, kept
 * per connection, so many connections that fail together (one Redis
 * restart) come back spread out instead of in one burst. */
typedef struct sophia_backoff {
    double base_s, cap_s, prev_s;
    unsigned long long rng;
} sophia_backoff;

/* seed: anything that tells connections apart (e.g. the handle's address). */
void sophia_backoff_init(sophia_backoff *b, double base_s, double cap_s,
                         unsigned long long seed);
/* The wait before the next attempt, in seconds, and the schedule moves on. */
double sophia_backoff_next(sophia_backoff *b);
/* After a success: the next failure waits about base again. */
void sophia_backoff_reset(sophia_backoff *b);

#endif
