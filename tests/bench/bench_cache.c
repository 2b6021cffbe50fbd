/*
 * bench_cache - the tiered cache's read paths against their raw clients,
 * on the real Redis and PostgreSQL named by SOPHIA_REDIS_URL/SOPHIA_PG_URL
 * (run through bench_cache.sh, which starts throwaway ones).
 *
 *  - L1 hit: sophia_cache_get on resident keys (callback runs inline);
 *    gets/s, and p50/p99 of single timed gets (clock cost subtracted).
 *  - L2 hit: sophia_l2_get (sophia's hiredis connection on the loop, the
 *    envelope decoded) with C gets in flight, against `redis-benchmark -t
 *    get -r 1000` (keys set beforehand, so it reads hits too) on the same
 *    server and value size, pipelined (-c 1 -P C) and unpipelined (-c C).
 *  - L3 hit: sophia_l3_get (a pool of pipelined libpq connections on the
 *    loop, statements prepared per connection) with 1 and with 32 in
 *    flight, against plain blocking libpq loops of the same prepared
 *    SELECT at the same concurrency (1 thread; 32 threads, one connection
 *    each).
 *
 * Each sophia/peer pair is measured alternately --runs times (3; 1 with
 * --quick) and the medians compared, because the machine is shared; the
 * range of the per-run ratios is printed too. --only l1|l2|l3 runs one
 * tier (for profiling), --pool N sets the L3 pool (1 = the old single
 * connection).
 *
 * Usage: bench_cache [--quick] [--only l1|l2|l3] [--runs N] [--pool N]
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "cache/cache.h"
#include "cache/cache_l2.h"
#include "cache/cache_l3.h"
#include "conf/config.h"
#include "event/pg_pool.h"
#include "event/redis.h"
#include "lib/redis_url.h"


#define NKEYS 1000
#define VALUE "{\"metric\":\"revenue\",\"value\":125000,\"ts\":1700000000}"

static bool quick;
static bool no_peer; /* --no-peer: sophia's side only, for perf stat */
static struct event_base *base;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static char keys[NKEYS][48];

/* Built once: formatting a key per get would cost more than an L1 hit. */
static const char *key(int i)
{
    return keys[i];
}

/* Blocks in the loop like the daemon does (no busy polling, which would
 * steal a core from the server on a small machine). */
static void run_until(volatile bool *flag, int ms)
{
    int64_t end = now_ns() + (int64_t)ms * 1000000;
    while (!*flag && now_ns() < end)
        event_base_loop(base, EVLOOP_ONCE);
}

/* -------------------------------------------------------------- L1 */

static void on_l1(void *arg, int rc, const char *val, size_t len, int tier)
{
    (void)val;
    (void)len;
    (void)tier;
    *(int *)arg += rc == 0;
}

static void bench_l1(sophia_cache *c, double *gps, double *p50, double *p99)
{
    int hits = 0;
    long n = quick ? 2000000 : 10000000;
    int64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        sophia_cache_get(c, key((int)(i % NKEYS)), NULL, NULL, on_l1, &hits);
    *gps = (double)n / ((double)(now_ns() - t0) / 1e9);
    if (hits != n)
        fprintf(stderr, "bench_cache: L1 missed %ld times\n", n - hits);
    /* Single gets, each timed; the clock's own cost subtracted. */
    enum { S = 200000 };
    static int64_t d[S];
    int64_t clk = INT64_MAX;
    for (int i = 0; i < 1000; i++) {
        int64_t a = now_ns(), b = now_ns();
        clk = b - a < clk ? b - a : clk;
    }
    for (int i = 0; i < S; i++) {
        const char *k = key(i % NKEYS);
        int64_t a = now_ns();
        sophia_cache_get(c, k, NULL, NULL, on_l1, &hits);
        d[i] = now_ns() - a - clk;
    }
    qsort(d, S, sizeof(d[0]), cmp_i64);
    *p50 = (double)d[S / 2];
    *p99 = (double)d[S * 99 / 100];
}

/* -------------------------------------------------------------- L2 */

typedef struct driver {
    long issued, done, target, failed;
    volatile bool finished;
    sophia_redis *r;
    sophia_l3 *l3;
    void (*issue)(struct driver *); /* sends the next get, if any is left */
} driver;

/* Each answer sends the next get, so `conc` gets stay in flight. */
static void on_got(void *arg, int rc, const char *val, size_t len,
                   int64_t exp, const char *const *tags)
{
    (void)val;
    (void)len;
    (void)exp;
    (void)tags;
    driver *d = arg;
    d->done++;
    d->failed += rc != 0;
    if (d->done == d->target)
        d->finished = true;
    else
        d->issue(d);
}

static void l2_issue(driver *d)
{
    if (d->issued < d->target &&
        sophia_l2_get(d->r, NULL, key((int)(d->issued % NKEYS)), on_got, d) == 0)
        d->issued++;
}

static double bench_l2(sophia_redis *r, int conc)
{
    driver d = {0};
    d.r = r;
    d.issue = l2_issue;
    d.target = quick ? 50000 : 300000;
    int64_t t0 = now_ns();
    for (int i = 0; i < conc; i++)
        l2_issue(&d);
    run_until(&d.finished, 120000);
    double s = (double)(now_ns() - t0) / 1e9;
    if (d.failed)
        fprintf(stderr, "bench_cache: %ld L2 gets failed\n", d.failed);
    return (double)d.done / s;
}

/* redis-benchmark on the same server, keyspace size and value size as
 * ours: its keys are SET first (-t set -r NKEYS), so its GETs are hits
 * returning the same bytes as sophia's, not nil replies for a missing key. */
static double redis_benchmark(const char *url, int conc, int pipeline,
                              size_t vsize)
{
    sophia_redis_url u;
    if (no_peer || sophia_redis_url_parse(url, &u, NULL, 0) < 0)
        return 0;
    const char *host = u.host;
    int port = u.port, db = u.db;
    char cmd[768];
    snprintf(cmd, sizeof(cmd),
             "redis-benchmark -h %s -p %d --dbnum %d -t set -r %d -n %d "
             "-P 50 -d %zu -q >/dev/null 2>&1; "
             "redis-benchmark -h %s -p %d --dbnum %d -t get -r %d -n %d "
             "-c %d -P %d -d %zu --csv 2>/dev/null",
             host, port, db, NKEYS, NKEYS * 20, vsize, host, port, db, NKEYS,
             quick ? 50000 : 300000, conc, pipeline, vsize);
    sophia_redis_url_clear(&u);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 0;
    char line[512];
    double rps = 0;
    while (fgets(line, sizeof(line), p)) {
        double v;
        if (sscanf(line, "\"GET\",\"%lf\"", &v) == 1)
            rps = v;
    }
    pclose(p);
    return rps;
}

/* -------------------------------------------------------------- L3 */

static void l3_issue(driver *d)
{
    if (d->issued < d->target &&
        sophia_l3_get(d->l3, key((int)(d->issued % NKEYS)), on_got, d) == 0)
        d->issued++;
}

static double bench_l3(sophia_l3 *l3, int conc)
{
    driver d = {0};
    d.l3 = l3;
    d.issue = l3_issue;
    d.target = quick ? 5000 : 30000;
    int64_t t0 = now_ns();
    for (int i = 0; i < conc; i++)
        l3_issue(&d);
    run_until(&d.finished, 120000);
    if (d.failed)
        fprintf(stderr, "bench_cache: %ld L3 gets failed\n", d.failed);
    return (double)d.done / ((double)(now_ns() - t0) / 1e9);
}

static const char sql_get[] =
    "SELECT value, array_to_string(tags, chr(31)), "
    "COALESCE((extract(epoch FROM expires_at) * 1000)::bigint, 0) "
    "FROM sophia_cache WHERE key = $1 "
    "AND (expires_at IS NULL OR expires_at > now())";

/* The raw peer at a given concurrency: that many threads, each with its
 * own connection running a blocking PQexecPrepared loop (the way a plain
 * libpq program gets concurrency), sharing out the same number of gets. */
typedef struct peer {
    const char *url;
    long n;
    int ok;
    pthread_t th;
} peer;

static void *peer_run(void *arg)
{
    peer *p = arg;
    PGconn *c = PQconnectdb(p->url);
    if (PQstatus(c) == CONNECTION_OK) {
        PQclear(PQprepare(c, "g", sql_get, 1, NULL));
        p->ok = 1;
        for (long i = 0; i < p->n; i++) {
            const char *v[1] = {key((int)(i % NKEYS))};
            PGresult *r = PQexecPrepared(c, "g", 1, v, NULL, NULL, 0);
            if (PQntuples(r) != 1)
                p->ok = 0;
            PQclear(r);
        }
    }
    PQfinish(c);
    return NULL;
}

static double libpq_loop(const char *url, int conc)
{
    long n = quick ? 5000 : 30000;
    if (no_peer)
        return 0;
    peer *ps = calloc((size_t)conc, sizeof(*ps));
    int64_t t0 = now_ns();
    for (int i = 0; i < conc; i++) {
        ps[i].url = url;
        ps[i].n = n / conc;
        pthread_create(&ps[i].th, NULL, peer_run, &ps[i]);
    }
    long done = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(ps[i].th, NULL);
        done += ps[i].ok ? ps[i].n : 0;
        if (!ps[i].ok)
            fprintf(stderr, "bench_cache: libpq peer %d failed\n", i);
    }
    double s = (double)(now_ns() - t0) / 1e9;
    free(ps);
    return (double)done / s;
}

/* ------------------------------------------------------------- setup */

static void on_ack(void *arg, int rc)
{
    (void)rc;
    (*(int *)arg)++;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_dbl);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_RUNS 15

/* One table row: sophia and its peer measured alternately `runs` times,
 * medians compared; the spread of the per-run ratios shows the noise. */
typedef struct pair {
    double s[MAX_RUNS], p[MAX_RUNS], ratio[MAX_RUNS];
    int n;
} pair;

static void pair_add(pair *pr, double s, double p)
{
    pr->s[pr->n] = s;
    pr->p[pr->n] = p;
    pr->ratio[pr->n] = p > 0 ? s / p : 0;
    pr->n++;
}

static void pair_row(pair *pr, const char *path, const char *peer_name)
{
    double s = median(pr->s, pr->n), p = median(pr->p, pr->n);
    qsort(pr->ratio, (size_t)pr->n, sizeof(double), cmp_dbl);
    printf("| %s | %.0f /s | %s: %.0f /s | %.2f (runs %.2f-%.2f) |\n", path,
           s, peer_name, p, p > 0 ? s / p : 0, pr->ratio[0],
           pr->ratio[pr->n - 1]);
}

static int only(const char *what, const char *tier)
{
    return !what || !strcmp(what, tier);
}

int main(int argc, char **argv)
{
    const char *what = NULL;
    int runs = 0, pool = SOPHIA_PG_POOL_DEFAULT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--no-peer"))
            no_peer = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            what = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pool") && i + 1 < argc)
            pool = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_cache [--quick] [--only l1|l2|l3] "
                            "[--runs N] [--pool N] [--no-peer]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > MAX_RUNS)
        runs = quick ? 1 : 3;
    if (pool < 1 || pool > SOPHIA_PG_POOL_MAX)
        pool = SOPHIA_PG_POOL_DEFAULT;
    const char *ru = getenv("SOPHIA_REDIS_URL"), *pu = getenv("SOPHIA_PG_URL");
    if (!ru || !*ru || !pu || !*pu) {
        fprintf(stderr, "bench_cache: needs SOPHIA_REDIS_URL and "
                        "SOPHIA_PG_URL (run tests/bench/bench_cache.sh)\n");
        return 2;
    }
    for (int i = 0; i < NKEYS; i++)
        snprintf(keys[i], sizeof(keys[i]), "bench:%d:%d", (int)getpid(), i);
    base = event_base_new();
    sophia_diag d;
    sophia_diag_init(&d);
    const char *y = "cache: {l1: {max_entries: 10000, ttl: 1h}}\n";
    sophia_conf *conf = sophia_conf_load_string("/tmp/b.yaml", y, strlen(y), &d);
    conf->redis_url = strdup(ru);
    conf->pg_url = strdup(pu);
    sophia_cache *c = sophia_cache_new(conf, base);
    const char *err;
    int64_t end = now_ns() + 15000000000LL;
    while ((sophia_cache_l2_state(c, &err) != 1 ||
            sophia_cache_l3_state(c, &err) != 1) && now_ns() < end)
        event_base_loop(base, EVLOOP_ONCE);
    int acks = 0;
    for (int i = 0; i < NKEYS; i++)
        sophia_cache_put_async(c, key(i), VALUE, strlen(VALUE), 3600, NULL,
                               on_ack, &acks);
    while (acks < NKEYS)
        event_base_loop(base, EVLOOP_ONCE);

    double gps = 0, p50 = 0, p99 = 0;
    if (only(what, "l1"))
        bench_l1(c, &gps, &p50, &p99);

    sophia_redis *r = sophia_redis_new(base, ru);
    sophia_pg_pool *pg = sophia_pg_pool_new(base, pu, (size_t)pool);
    sophia_l3 *l3 = sophia_l3_new(pg, base);
    while ((!sophia_redis_up(r) || sophia_pg_pool_nup(pg) < (size_t)pool) &&
           now_ns() < end + 5000000000LL)
        event_base_loop(base, EVLOOP_ONCE);
    int conc = 50;
    size_t env_len;
    char *env = sophia_l2_encode(VALUE, strlen(VALUE), 0, NULL, &env_len);
    pair l2p = {0}, l2c = {0}, l3a = {0}, l3b = {0};
    for (int i = 0; i < runs && only(what, "l2"); i++) {
        double s2 = bench_l2(r, conc);
        pair_add(&l2p, s2, redis_benchmark(ru, 1, conc, env_len));
        if (i == 0)
            pair_add(&l2c, s2, redis_benchmark(ru, conc, 1, env_len));
    }
    for (int i = 0; i < runs && only(what, "l3"); i++) {
        pair_add(&l3a, bench_l3(l3, 1), libpq_loop(pu, 1));
        pair_add(&l3b, bench_l3(l3, 32), libpq_loop(pu, 32));
    }
    free(env);

    printf("\n### Cache tiers (bench_cache)%s, %d run%s, L3 pool %d\n\n",
           quick ? " [quick]" : "", runs, runs > 1 ? "s" : "", pool);
    printf("| path | sophia | raw client | ratio |\n|---|---|---|---|\n");
    if (only(what, "l1"))
        printf("| L1 hit, get/s (1,000 keys) | %.1f M/s (p50 %.0f ns, p99 %.0f ns) | - | - |\n",
               gps / 1e6, p50, p99);
    char peer_name[96];
    if (only(what, "l2")) {
        snprintf(peer_name, sizeof(peer_name),
                 "redis-benchmark -t get -r 1000 -c 1 -P %d", conc);
        pair_row(&l2p, "L2 hit, 50 in flight", peer_name);
        snprintf(peer_name, sizeof(peer_name),
                 "redis-benchmark -t get -r 1000 -c %d", conc);
        pair_row(&l2c, "L2 hit, 50 in flight", peer_name);
    }
    if (only(what, "l3")) {
        pair_row(&l3a, "L3 hit, 1 in flight",
                 "libpq PQexecPrepared loop, 1 connection");
        pair_row(&l3b, "L3 hit, 32 in flight",
                 "libpq PQexecPrepared loops, 32 threads/connections");
    }

    sophia_l3_free(l3);
    sophia_redis_free(r);
    sophia_cache_free(c);
    sophia_conf_free(conf);
    sophia_diag_free(&d);
    event_base_free(base);
    return 0;
}
