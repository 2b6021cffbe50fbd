/*
 * bench_cache_zstd - what cache.compress costs and saves (issue 22), on
 * the real Redis and PostgreSQL named by SOPHIA_REDIS_URL / SOPHIA_PG_URL
 * (run through `bench_cache.sh --compress`, which starts throwaway ones
 * and extracts the records the bundled processors cache from the
 * samples).
 *
 * Two value sets: the samples' cached records (--records FILE, one JSON
 * value per line: crm deals, gong calls, slack channels, snowflake rows,
 * metrics; 50-800 bytes) spread over 1,000 keys, and 1,000 distinct 10 KB
 * JSON documents (records with ids, names, stages, amounts, dates and a
 * few words of notes, from a seeded generator, so every run is the same).
 * For each set, in the same run and alternating, the modes: plain (level
 * 0), zstd levels 1, 3 and 9, and level 3 with a dictionary trained from
 * that set, each with threshold 0 so every value is a candidate (the
 * default threshold's choice is what these figures decide):
 *
 *  - CPU on the loop: median µs to pack and to unpack one value;
 *  - bytes stored: the value bytes in Redis (STRLEN of every envelope)
 *    and in PostgreSQL (octet_length, and pg_column_size, which counts
 *    PostgreSQL's own pglz/TOAST compression of large plain values);
 *  - throughput and p99: sophia_l2_set/get and sophia_l3_put/get with 32
 *    in flight, as the cache calls them (L3 pool of 4), per second and
 *    the 99th percentile of issue-to-answer.
 *
 * Each mode is measured --runs times (3; 1 with --quick), rounds
 * alternating between modes, and the median reported.
 *
 * Usage: bench_cache_zstd [--quick] [--runs N] [--records FILE]
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>

#include "cache/cache_l2.h"
#include "cache/cache_l3.h"
#include "cache/cache_zstd.h"
#include "event/pg_pool.h"
#include "event/redis.h"
#include "lib/redis_url.h"

#define NKEYS 1000
#define L2_PASSES 8 /* over the keys: an L2 pass takes a few ms */
#define L3_PASSES 2
#define NOPS (NKEYS * L2_PASSES)
#define CONC 32
#define MODES 5
#define MAXRUNS 9

static struct event_base *base;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_dbl);
    return v[n / 2];
}

/* ----------------------------------------------------------- the values */

typedef struct vset {
    const char *name;
    char **v;
    size_t *len;
    size_t n;
    const struct vset *train; /* the dictionary's sample; NULL: itself */
} vset;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* A JSON document of records, about `target` bytes (at least 200). */
static char *doc(int seed, size_t target, size_t *len)
{
    static const char *const words[] = {
        "renewal", "pricing", "security", "review", "champion", "budget",
        "legal", "procurement", "pilot", "expansion", "churn", "risk",
        "onboarding", "integration", "timeline", "competitor", "discount"};
    static const char *const stages[] = {"appointmentscheduled",
                                         "qualifiedtobuy", "contractsent",
                                         "closedwon", "closedlost"};
    size_t cap = target + 400, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s, cap, "{\"account\":\"acct-%05d\",\"records\":[",
                          seed);
    for (int i = 0; n + 2 < target; i++) {
        n += (size_t)snprintf(
            s + n, cap - n,
            "%s{\"id\":\"%08x%08x\",\"name\":\"Deal %d-%u\",\"stage\":\"%s\","
            "\"amount\":%u,\"close\":\"2026-%02u-%02u\",\"owner\":\"rep%u\","
            "\"notes\":\"%s %s %s\"}",
            i ? "," : "", rnd(0xffffffffu), rnd(0xffffffffu), seed, rnd(1000),
            stages[rnd(5)], rnd(500000), 1 + rnd(12), 1 + rnd(28), rnd(40),
            words[rnd(17)], words[rnd(17)], words[rnd(17)]);
    }
    n += (size_t)snprintf(s + n, cap - n, "]}");
    *len = n;
    return s;
}

static void set_docs(vset *s, int first)
{
    s->name = "10 KB JSON documents";
    s->n = NKEYS;
    s->v = calloc(s->n, sizeof(*s->v));
    s->len = calloc(s->n, sizeof(*s->len));
    for (size_t i = 0; i < s->n; i++)
        s->v[i] = doc(first + (int)i, 10240, &s->len[i]);
}

/* One JSON value per line of `path`; 0 when there is none. */
static int set_records(vset *s, const char *path)
{
    FILE *f = path ? fopen(path, "r") : NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    s->name = "samples' cached records";
    while (f && (n = getline(&line, &cap, f)) > 1) {
        s->v = realloc(s->v, (s->n + 1) * sizeof(*s->v));
        s->len = realloc(s->len, (s->n + 1) * sizeof(*s->len));
        s->len[s->n] = (size_t)n - (line[n - 1] == '\n');
        s->v[s->n] = strndup(line, s->len[s->n]);
        s->n++;
    }
    free(line);
    if (f)
        fclose(f);
    return s->n > 0;
}

/* ------------------------------------------------------------ the modes */

typedef struct mode {
    const char *name;
    int level, dict;
    sophia_zstd *z;
} mode;

static void modes_open(mode *m, const vset *s)
{
    static const mode proto[MODES] = {{"plain", 0, 0, NULL},
                                      {"zstd 1", 1, 0, NULL},
                                      {"zstd 3", 3, 0, NULL},
                                      {"zstd 9", 9, 0, NULL},
                                      {"zstd 3 + dictionary", 3, 1, NULL}};
    char err[300];
    size_t dlen = 0;
    /* The dictionary's sample: other documents of the same shape, as
     * sophia-zdict reads them from L3 before these were written; for the
     * 36 records, the records themselves (replicated as their keys are),
     * so that row is an upper bound. */
    const vset *t = s->train ? s->train : s;
    const char **samp = malloc(NKEYS * sizeof(*samp));
    size_t *lens = malloc(NKEYS * sizeof(*lens));
    for (size_t i = 0; i < NKEYS; i++) {
        samp[i] = t->v[i % t->n];
        lens[i] = t->len[i % t->n];
    }
    void *dict = sophia_zstd_train(samp, lens, NKEYS, 16384, &dlen, err,
                                   sizeof(err));
    if (!dict)
        fprintf(stderr, "bench_cache_zstd: %s: no dictionary: %s\n", s->name,
                err);
    for (int i = 0; i < MODES; i++) {
        m[i] = proto[i];
        m[i].z = sophia_zstd_new(0, m[i].level, m[i].dict ? dict : NULL,
                                 m[i].dict ? dlen : 0, err, sizeof(err));
    }
    free(dict);
    free(samp);
    free(lens);
}

/* ------------------------------------------------------------- CPU time */

/* Median ns to pack, and to unpack, one value of the set. */
static void cpu(const mode *m, const vset *s, double *pack, double *unpack)
{
    size_t n = s->n < 400 ? 400 : s->n;
    double *p = malloc(n * sizeof(*p)), *u = malloc(n * sizeof(*u));
    for (size_t i = 0; i < n; i++) {
        const char *out, *back;
        size_t ol, bl;
        char *owned, *plain;
        int64_t t0 = now_ns();
        sophia_zstd_pack(m->z, s->v[i % s->n], s->len[i % s->n], &out, &ol,
                         &owned);
        int64_t t1 = now_ns();
        sophia_zstd_unpack(m->z, out, ol, &back, &bl, &plain);
        int64_t t2 = now_ns();
        p[i] = (double)(t1 - t0);
        u[i] = (double)(t2 - t1);
        free(owned);
        free(plain);
    }
    *pack = median(p, (int)n);
    *unpack = median(u, (int)n);
    free(p);
    free(u);
}

/* Stored size (% of plain) and CPU per value by value size, levels 1
 * and 3: where compression starts to pay, for the threshold. */
static void sweep(void)
{
    static const size_t sizes[] = {256,  512,   1024,  2048,
                                   4096, 10240, 65536, 262144};
    char err[200];
    sophia_zstd *z1 = sophia_zstd_new(0, 1, NULL, 0, err, sizeof(err));
    sophia_zstd *z3 = sophia_zstd_new(0, 3, NULL, 0, err, sizeof(err));
    printf("\n#### By value size (documents as below, 200 each)\n\n"
           "| size | stored, level 1 / 3 | pack, level 1 / 3 | unpack |\n"
           "|---|---|---|---|\n");
    for (size_t k = 0; k < sizeof(sizes) / sizeof(*sizes); k++) {
        vset s = {.n = 200};
        s.v = calloc(s.n, sizeof(*s.v));
        s.len = calloc(s.n, sizeof(*s.len));
        double in = 0, out1 = 0, out3 = 0, p1, u1, p3, u3;
        for (size_t i = 0; i < s.n; i++) {
            s.v[i] = doc((int)(i + 5000), sizes[k], &s.len[i]);
            const char *o;
            size_t ol;
            char *own;
            in += (double)s.len[i];
            sophia_zstd_pack(z1, s.v[i], s.len[i], &o, &ol, &own);
            out1 += (double)ol;
            free(own);
            sophia_zstd_pack(z3, s.v[i], s.len[i], &o, &ol, &own);
            out3 += (double)ol;
            free(own);
        }
        mode m1 = {"1", 1, 0, z1}, m3 = {"3", 3, 0, z3};
        cpu(&m1, &s, &p1, &u1);
        cpu(&m3, &s, &p3, &u3);
        printf("| %zu B | %.0f%% / %.0f%% | %.1f / %.1f µs | %.1f µs |\n",
               sizes[k], 100 * out1 / in, 100 * out3 / in, p1 / 1e3,
               p3 / 1e3, u3 / 1e3);
        for (size_t i = 0; i < s.n; i++)
            free(s.v[i]);
        free(s.v);
        free(s.len);
    }
    sophia_zstd_free(z1);
    sophia_zstd_free(z3);
}

/* ------------------------------------------------ tier throughput, p99 */

typedef enum { L2_SET, L2_GET, L3_PUT, L3_GET } op_kind;

typedef struct drive {
    op_kind kind;
    const mode *m;
    const vset *s;
    sophia_redis *r;
    sophia_l3 *l3;
    uint64_t version;
    long issued, done, failed;
    long nops;
    int64_t start[NOPS];
    double lat[NOPS];
    char key[NKEYS][48];
} drive;

typedef struct slot {
    drive *d;
    long i;
} slot;

static slot slots[NOPS];

static void issue(drive *d);

static void answered(drive *d, long i, int rc)
{
    d->lat[i] = (double)(now_ns() - d->start[i]);
    d->failed += rc != 0;
    d->done++;
    issue(d);
}

static void on_done(void *arg, int rc)
{
    slot *s = arg;
    answered(s->d, s->i, rc);
}

static void on_get(void *arg, int rc, const char *val, size_t len,
                   int64_t exp, const char *const *tags)
{
    slot *s = arg;
    (void)exp;
    (void)tags;
    /* A hit must be the value put: the bench checks what it measures. */
    size_t j = (size_t)(s->i % NKEYS) % s->d->s->n;
    if (rc == 0 && (len != s->d->s->len[j] || memcmp(val, s->d->s->v[j], len)))
        rc = -1;
    answered(s->d, s->i, rc);
}

static void issue(drive *d)
{
    if (d->issued == d->nops)
        return;
    long i = d->issued++;
    size_t j = (size_t)(i % NKEYS) % d->s->n;
    const char *key = d->key[i % NKEYS];
    slot *s = &slots[i];
    s->d = d;
    s->i = i;
    d->start[i] = now_ns();
    int rc = -1;
    if (d->kind == L2_SET)
        rc = sophia_l2_set(d->r, d->m->z, key, d->s->v[j], d->s->len[j], 0,
                           NULL, on_done, s);
    else if (d->kind == L2_GET)
        rc = sophia_l2_get(d->r, d->m->z, key, on_get, s);
    else if (d->kind == L3_PUT)
        rc = sophia_l3_put(d->l3, key, d->s->v[j], d->s->len[j], 0, NULL,
                           d->version + (uint64_t)i, on_done, s);
    else
        rc = sophia_l3_get(d->l3, key, on_get, s);
    if (rc)
        answered(d, i, rc);
}

/* Ops/s and p99 (µs) of the kind's passes over the keys, CONC in
 * flight. */
static void run_ops(drive *d, op_kind kind, double *ops, double *p99)
{
    d->kind = kind;
    d->issued = d->done = d->failed = 0;
    d->nops = NKEYS * (kind == L3_PUT || kind == L3_GET ? L3_PASSES
                                                        : L2_PASSES);
    d->version += NOPS;
    if (d->l3)
        sophia_l3_set_zstd(d->l3, d->m->z);
    int64_t t0 = now_ns();
    for (int i = 0; i < CONC; i++)
        issue(d);
    while (d->done < d->nops)
        event_base_loop(base, EVLOOP_ONCE);
    *ops = (double)d->nops / ((double)(now_ns() - t0) / 1e9);
    qsort(d->lat, (size_t)d->nops, sizeof(d->lat[0]), cmp_dbl);
    *p99 = d->lat[d->nops * 99 / 100] / 1e3;
    if (d->failed)
        fprintf(stderr, "bench_cache_zstd: %s %s: %ld of %ld failed\n",
                d->m->name, kind == L2_SET   ? "L2 set"
                            : kind == L2_GET ? "L2 get"
                            : kind == L3_PUT ? "L3 put"
                                             : "L3 get",
                d->failed, d->nops);
}

/* -------------------------------------------------------- bytes stored */

static redisContext *redis_sync(const char *url)
{
    sophia_redis_url u;
    if (sophia_redis_url_parse(url, &u, NULL, 0) < 0)
        return NULL;
    redisContext *rc = redisConnect(u.host, u.port);
    if (rc && !rc->err && u.db)
        freeReplyObject(redisCommand(rc, "SELECT %d", u.db));
    sophia_redis_url_clear(&u);
    return rc;
}

static double redis_bytes(redisContext *rc, const drive *d)
{
    for (int i = 0; i < NKEYS; i++)
        redisAppendCommand(rc, "STRLEN %s%s", SOPHIA_L2_PREFIX, d->key[i]);
    double sum = 0;
    for (int i = 0; i < NKEYS; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rc, (void **)&r) == REDIS_OK && r)
            sum += (double)r->integer;
        freeReplyObject(r);
    }
    return sum;
}

/* Value bytes, and what PostgreSQL keeps of them (pglz/TOAST counted). */
static void pg_bytes(PGconn *pg, const char *prefix, double *raw,
                     double *kept)
{
    const char *vals[1] = {prefix};
    PGresult *r = PQexecParams(
        pg, "SELECT sum(octet_length(value)), sum(pg_column_size(value)) "
            "FROM sophia_cache WHERE starts_with(key, $1)",
        1, NULL, vals, NULL, NULL, 0);
    *raw = PQntuples(r) ? atof(PQgetvalue(r, 0, 0)) : 0;
    *kept = PQntuples(r) ? atof(PQgetvalue(r, 0, 1)) : 0;
    PQclear(r);
}

/* ---------------------------------------------------------------- main */

enum { F_PACK, F_UNPACK, F_L2SET, F_L2SET99, F_L2GET, F_L2GET99, F_L3PUT,
       F_L3PUT99, F_L3GET, F_L3GET99, F_REDIS, F_PGRAW, F_PGKEPT, NF };

static void measure(drive *d, redisContext *rc, PGconn *pg, double *f)
{
    char prefix[48];
    cpu(d->m, d->s, &f[F_PACK], &f[F_UNPACK]);
    run_ops(d, L2_SET, &f[F_L2SET], &f[F_L2SET99]);
    run_ops(d, L2_GET, &f[F_L2GET], &f[F_L2GET99]);
    run_ops(d, L3_PUT, &f[F_L3PUT], &f[F_L3PUT99]);
    run_ops(d, L3_GET, &f[F_L3GET], &f[F_L3GET99]);
    f[F_REDIS] = redis_bytes(rc, d);
    snprintf(prefix, sizeof(prefix), "%.*s", (int)(strrchr(d->key[0], ':') -
                                                   d->key[0] + 1), d->key[0]);
    pg_bytes(pg, prefix, &f[F_PGRAW], &f[F_PGKEPT]);
}

static void report(const vset *s, const mode *m, double fig[MODES][NF][MAXRUNS],
                   int runs)
{
    double med[MODES][NF];
    for (int i = 0; i < MODES; i++)
        for (int f = 0; f < NF; f++)
            med[i][f] = median(fig[i][f], runs);
    double total = 0;
    for (size_t i = 0; i < NKEYS; i++)
        total += (double)s->len[i % s->n];
    printf("\n#### %s (%zu distinct, %.0f bytes on average)\n\n", s->name,
           s->n, total / NKEYS);
    printf("| mode | pack / unpack per value | Redis bytes | PostgreSQL "
           "bytes (kept) | L2 set/s (p99) | L2 get/s (p99) | L3 put/s (p99) "
           "| L3 get/s (p99) |\n|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < MODES; i++) {
        const double *v = med[i];
        printf("| %s | %.1f / %.1f µs | %.0f%% | %.0f%% (%.0f%%) | %.0fk "
               "(%.2f ms) | %.0fk (%.2f ms) | %.1fk (%.1f ms) | %.1fk (%.1f "
               "ms) |\n",
               m[i].name, v[F_PACK] / 1e3, v[F_UNPACK] / 1e3,
               100 * v[F_REDIS] / med[0][F_REDIS],
               100 * v[F_PGRAW] / med[0][F_PGRAW],
               100 * v[F_PGKEPT] / med[0][F_PGRAW], v[F_L2SET] / 1e3,
               v[F_L2SET99] / 1e3, v[F_L2GET] / 1e3, v[F_L2GET99] / 1e3,
               v[F_L3PUT] / 1e3, v[F_L3PUT99] / 1e3, v[F_L3GET] / 1e3,
               v[F_L3GET99] / 1e3);
    }
    printf("\nplain: Redis %.0f KB, PostgreSQL %.0f KB of values (%.0f KB "
           "kept after its own compression)\n", med[0][F_REDIS] / 1e3,
           med[0][F_PGRAW] / 1e3, med[0][F_PGKEPT] / 1e3);
}

static void bench_set(const vset *s, int set_no, sophia_redis *r,
                      sophia_l3 *l3, redisContext *rc, PGconn *pg, int runs)
{
    static double fig[MODES][NF][MAXRUNS];
    static drive d[MODES];
    mode m[MODES];
    modes_open(m, s);
    for (int i = 0; i < MODES; i++) {
        memset(&d[i], 0, sizeof(d[i]));
        d[i].m = &m[i];
        d[i].s = s;
        d[i].r = r;
        d[i].l3 = l3;
        d[i].version = (uint64_t)time(NULL) * 1000;
        for (int k = 0; k < NKEYS; k++)
            snprintf(d[i].key[k], sizeof(d[i].key[k]), "bz%d:%d:%d:k%d",
                     (int)getpid(), set_no, i, k);
    }
    for (int run = 0; run < runs; run++) /* rounds alternate the modes */
        for (int i = 0; i < MODES; i++) {
            double f[NF];
            measure(&d[i], rc, pg, f);
            for (int k = 0; k < NF; k++)
                fig[i][k][run] = f[k];
        }
    report(s, m, fig, runs);
    for (int i = 0; i < MODES; i++) {
        for (int k = 0; k < NKEYS; k++)
            freeReplyObject(redisCommand(rc, "DEL %s%s", SOPHIA_L2_PREFIX,
                                         d[i].key[k]));
        sophia_zstd_free(m[i].z);
    }
    char sql[96];
    snprintf(sql, sizeof(sql), "DELETE FROM sophia_cache WHERE key LIKE "
             "'bz%d:%%'", (int)getpid());
    PQclear(PQexec(pg, sql));
}

int main(int argc, char **argv)
{
    int runs = 3;
    const char *records = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            runs = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--records") && i + 1 < argc)
            records = argv[++i];
    }
    runs = runs < 1 ? 1 : runs > MAXRUNS ? MAXRUNS : runs;
    const char *ru = getenv("SOPHIA_REDIS_URL"), *pu = getenv("SOPHIA_PG_URL");
    if (!ru || !pu) {
        fprintf(stderr, "bench_cache_zstd: SOPHIA_REDIS_URL and "
                        "SOPHIA_PG_URL must be set (bench_cache.sh does)\n");
        return 2;
    }
    base = event_base_new();
    sophia_redis *r = sophia_redis_new(base, ru);
    sophia_pg_pool *pool = sophia_pg_pool_new(base, pu, 4);
    sophia_l3 *l3 = sophia_l3_new(pool, base);
    int64_t end = now_ns() + 15000000000LL;
    while ((!sophia_redis_up(r) || sophia_pg_pool_nup(pool) < 4) &&
           now_ns() < end)
        event_base_loop(base, EVLOOP_ONCE);
    redisContext *rc = redis_sync(ru);
    PGconn *pg = PQconnectdb(pu);
    if (!rc || rc->err || PQstatus(pg) != CONNECTION_OK ||
        !sophia_redis_up(r)) {
        fprintf(stderr, "bench_cache_zstd: servers not reachable\n");
        return 1;
    }
    vset recs = {0}, docs = {0}, train = {0};
    printf("\n### Compression in L2/L3 (bench_cache_zstd)%s, %d run%s, "
           "%d in flight, %d keys, L3 pool 4\n", runs == 1 ? " [quick]" : "",
           runs, runs > 1 ? "s" : "", CONC, NKEYS);
    if (set_records(&recs, records))
        bench_set(&recs, 1, r, l3, rc, pg, runs);
    else
        fprintf(stderr, "bench_cache_zstd: no --records file: the samples' "
                        "records are left out\n");
    set_docs(&docs, 0);
    set_docs(&train, 100000);
    docs.train = &train;
    bench_set(&docs, 2, r, l3, rc, pg, runs);
    sweep();
    printf("\nRedis and PostgreSQL bytes: %% of plain; L2/L3 rates: "
           "thousands of operations/s, p99 issue-to-answer\n\n");
    sophia_l3_free(l3);
    sophia_redis_free(r);
    redisFree(rc);
    PQfinish(pg);
    event_base_free(base);
    return 0;
}
