/*
 * trace_ref - what the L1 unit test and bench_l1 both measure against:
 * a splitmix64 generator, a Zipf(s) rank sampler and a textbook LRU over
 * integer ids (the policy L1 must beat). Header-only: each includer gets
 * its own static copies.
 */
#ifndef SOPHIA_TEST_TRACE_REF_H
#define SOPHIA_TEST_TRACE_REF_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}


typedef struct zipf {
    double *cdf;
    size_t n;
} zipf;

/* false when out of memory. */
static bool zipf_init(zipf *z, size_t n, double s)
{
    z->cdf = malloc(n * sizeof(double));
    if (!z->cdf)
        return false;
    z->n = n;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        z->cdf[i] = (sum += 1.0 / pow((double)(i + 1), s));
    for (size_t i = 0; i < n; i++)
        z->cdf[i] /= sum;
    return true;
}

/* Rank 0 is the most popular key. */
static size_t zipf_next(const zipf *z, uint64_t *rng)
{
    double u = (double)(rng_next(rng) >> 11) / 9007199254740992.0;
    size_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (z->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Reference LRU over integer ids: the policy L1 must beat. */
typedef struct lru {
    size_t *prev, *next;
    bool *in;
    size_t head, tail, count, cap;
} lru;

#define LRU_NIL SIZE_MAX

/* false when out of memory. */
static bool lru_init(lru *l, size_t ids, size_t cap)
{
    l->prev = malloc(ids * sizeof(size_t));
    l->next = malloc(ids * sizeof(size_t));
    l->in = calloc(ids, sizeof(bool));
    l->head = l->tail = LRU_NIL;
    l->count = 0;
    l->cap = cap;
    return l->prev && l->next && l->in;
}

static void lru_free(lru *l)
{
    free(l->prev);
    free(l->next);
    free(l->in);
}

static void lru_unlink(lru *l, size_t id)
{
    if (l->prev[id] != LRU_NIL)
        l->next[l->prev[id]] = l->next[id];
    else
        l->head = l->next[id];
    if (l->next[id] != LRU_NIL)
        l->prev[l->next[id]] = l->prev[id];
    else
        l->tail = l->prev[id];
}

static void lru_push(lru *l, size_t id)
{
    l->prev[id] = LRU_NIL;
    l->next[id] = l->head;
    if (l->head != LRU_NIL)
        l->prev[l->head] = id;
    else
        l->tail = id;
    l->head = id;
}

/* True on a hit; a miss inserts, evicting the least recently used. */
static bool lru_access(lru *l, size_t id)
{
    if (l->in[id]) {
        lru_unlink(l, id);
        lru_push(l, id);
        return true;
    }
    if (l->count == l->cap) {
        size_t victim = l->tail;
        lru_unlink(l, victim);
        l->in[victim] = false;
        l->count--;
    }
    lru_push(l, id);
    l->in[id] = true;
    l->count++;
    return false;
}

#endif
