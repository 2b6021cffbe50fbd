/*
 * bench_l1 - how fast an L1 hit is and how often the L1 hits compared with
 * an LRU of the same size.
 *
 * Latency: gets are timed with clock_gettime(CLOCK_MONOTONIC) around
 * batches (a single get is shorter than the clock's own cost), giving a
 * distribution of per-get averages per batch; a batch-of-one run is printed
 * too, with the measured clock overhead, for the tail.
 *
 * Hit rate: read-through simulation (get, put on a miss) of fixed-seed
 * traces - Zipf(0.9), Zipf(1.1), and Zipf(0.9) polluted by periodic scans of
 * keys never seen again - run against sophia_l1 and a textbook LRU of the
 * same entry count.
 *
 * Usage: bench_l1 [--quick]
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/cache_l1.h"
#include "../common/trace_ref.h"

static bool quick;

/* ---------------------------------------------------------------- helpers */


static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void oom(void)
{
    fprintf(stderr, "bench_l1: out of memory\n");
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_l1: out of memory\n");
        exit(1);
    }
    return p;
}


static void key_of(char *buf, size_t n, size_t id)
{
    snprintf(buf, n, "bench:key:%zu", id);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------- hit latency */

typedef struct lat_result {
    double gets_per_s;
    int64_t p50, p99, p999; /* ns per get */
} lat_result;

/* Times `rounds` batches of `batch` hitting gets over `keys` in the order of
 * `order`. */
static lat_result time_hits(sophia_l1 *c, char **keys, const size_t *order,
                            size_t norder, size_t batch, size_t rounds)
{
    int64_t *per = xmalloc(rounds * sizeof(*per));
    size_t pos = 0, sink = 0;
    int64_t total = 0;
    for (size_t r = 0; r < rounds; r++) {
        int64_t t0 = now_ns();
        for (size_t i = 0; i < batch; i++) {
            const void *v;
            size_t len;
            if (sophia_l1_get(c, keys[order[pos]], 1, &v, &len) != 0) {
                fprintf(stderr, "bench_l1: unexpected miss\n");
                exit(1);
            }
            sink += len + ((const unsigned char *)v)[0];
            if (++pos == norder)
                pos = 0;
        }
        int64_t dt = now_ns() - t0;
        total += dt;
        per[r] = dt / (int64_t)batch;
    }
    qsort(per, rounds, sizeof(*per), cmp_i64);
    lat_result res = {
        (double)(rounds * batch) / ((double)total / 1e9), per[rounds / 2],
        per[rounds * 99 / 100], per[rounds * 999 / 1000]};
    free(per);
    if (sink == 42)
        puts(""); /* keeps the loads alive */
    return res;
}

static int64_t clock_overhead_ns(void)
{
    int64_t t0 = now_ns();
    for (int i = 0; i < 100000; i++)
        (void)now_ns();
    return (now_ns() - t0) / 100000;
}

static void bench_latency_set(size_t nkeys, size_t vlen)
{
    sophia_l1 *c = sophia_l1_new(nkeys, (size_t)4 << 30);
    char **keys = xmalloc(nkeys * sizeof(*keys));
    unsigned char *val = xmalloc(vlen);
    memset(val, 'j', vlen);
    for (size_t i = 0; i < nkeys; i++) {
        char buf[64];
        key_of(buf, sizeof(buf), i);
        keys[i] = strdup(buf);
        if (!c || !keys[i] || sophia_l1_put(c, keys[i], val, vlen, 0, NULL, 1))
            exit(1);
    }
    size_t norder = (size_t)1 << 20;
    size_t *order = xmalloc(norder * sizeof(*order));
    uint64_t rng = 99;
    for (size_t i = 0; i < norder; i++)
        order[i] = (size_t)(rng_next(&rng) % nkeys);
    size_t scale = quick ? 4 : 1;
    time_hits(c, keys, order, norder, 64, 4096); /* warm up */
    lat_result b64 = time_hits(c, keys, order, norder, 64, 65536 / scale);
    lat_result b1 = time_hits(c, keys, order, norder, 1, 2000000 / scale);
    printf("| %8zu | %5zu | %12.1f | %7lld | %7lld | %10lld | %10lld |\n",
           nkeys, vlen, b64.gets_per_s / 1e6, (long long)b64.p50,
           (long long)b64.p99, (long long)b1.p99, (long long)b1.p999);
    for (size_t i = 0; i < nkeys; i++)
        free(keys[i]);
    free(keys);
    free(order);
    free(val);
    sophia_l1_free(c);
}

static void bench_latency(void)
{
    printf("## Hit latency (uniform random keys, all resident)\n\n");
    printf("clock_gettime overhead: %lld ns (included in batch-of-1 "
           "numbers)\n\n",
           (long long)clock_overhead_ns());
    printf("| keys     | value | Mgets/s      | p50 ns  | p99 ns  | "
           "p99 ns b=1 | p999 ns b=1|\n");
    printf("|----------|-------|--------------|---------|---------|"
           "------------|------------|\n");
    bench_latency_set(1000, 256);
    bench_latency_set(100000, 256);
    bench_latency_set(1000000, 64);
    printf("\n(p50/p99: per-get average over batches of 64 gets.)\n\n");
}

/* ------------------------------------------------------------- hit rate */

typedef struct trace {
    const char *name;
    double s;
    size_t scan_every; /* 0 = no scans */
    size_t scan_len;
} trace;

static bool l1_access(sophia_l1 *c, size_t id)
{
    char key[64];
    key_of(key, sizeof(key), id);
    if (sophia_l1_get(c, key, 1, NULL, NULL) == 0)
        return true;
    static const char val[64];
    if (sophia_l1_put(c, key, val, sizeof(val), 0, NULL, 1) != 0)
        exit(1);
    return false;
}

static void run_trace(const trace *t, const zipf *z, size_t nkeys,
                      size_t cap, size_t len)
{
    size_t scans = t->scan_every ? len / (t->scan_every + t->scan_len) + 1 : 0;
    size_t ids = nkeys + scans * t->scan_len;
    sophia_l1 *c = sophia_l1_new(cap, (size_t)4 << 30);
    lru ref;
    if (!lru_init(&ref, ids, cap))
        oom();
    uint64_t rng = 20240601;
    size_t l1_hits = 0, lru_hits = 0, next_scan_id = nkeys, since_scan = 0;
    for (size_t i = 0; i < len; i++) {
        size_t id;
        if (t->scan_every && since_scan >= t->scan_every) {
            id = next_scan_id++;
            if (++since_scan == t->scan_every + t->scan_len)
                since_scan = 0;
        } else {
            id = zipf_next(z, &rng);
            since_scan++;
        }
        l1_hits += l1_access(c, id);
        lru_hits += lru_access(&ref, id);
    }
    double a = 100.0 * (double)l1_hits / (double)len;
    double b = 100.0 * (double)lru_hits / (double)len;
    printf("| %-28s | %7zu | %6.2f%% | %6.2f%% | %+6.2f |\n", t->name, cap, a,
           b, a - b);
    lru_free(&ref);
    sophia_l1_free(c);
}

static void bench_hit_rate(void)
{
    const size_t nkeys = 100000, len = quick ? 300000 : 2000000;
    const trace traces[] = {
        {"zipf(0.9)", 0.9, 0, 0},
        {"zipf(1.1)", 1.1, 0, 0},
        {"zipf(0.9) + scans 20k/50k", 0.9, 50000, 20000},
    };
    printf("## Hit rate vs LRU (read-through, %zu keys, %zu accesses)\n\n",
           nkeys, len);
    printf("| trace                        | entries | L1      "
           "| LRU     | delta  |\n");
    printf("|------------------------------|---------|---------"
           "|---------|--------|\n");
    for (size_t i = 0; i < sizeof(traces) / sizeof(traces[0]); i++) {
        zipf z;
        if (!zipf_init(&z, nkeys, traces[i].s))
            oom();
        const size_t caps[] = {1000, 10000};
        for (size_t k = 0; k < 2; k++)
            run_trace(&traces[i], &z, nkeys, caps[k], len);
        free(z.cdf);
    }
    printf("\n(scans: after every 50k Zipf accesses, 20k keys never seen "
           "again; hit rate over all accesses.)\n");
}

int main(int argc, char **argv)
{
    quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    printf("# bench_l1 (sophia_l1, S3-FIFO)\n\n");
    bench_latency();
    bench_hit_rate();
    return 0;
}
