/*
 * bench_memory - the memory store at 100k memories: embedding rate, index
 * search latency for k=10 with Flat and with HNSW side by side, HNSW's
 * recall@10 against Flat on the same queries, and (with SOPHIA_PG_URL) the
 * store rate and end-to-end hybrid search latency through the real module
 * on a real PostgreSQL.
 *
 * Data: synthetic memories of 8..20 words drawn with a Zipf(1.0) law from
 * a fixed vocabulary of 20,000 pronounceable pseudo-words (fixed seed, so
 * every run sees the same text). Queries are memories of the set with one
 * word dropped and two swapped - the paraphrase case.
 *
 * Index numbers are single queries on one thread, as the store issues
 * them (one faiss search per request, on a worker), timed around each
 * call, as wall time and as the thread's CPU time (on a busy machine the
 * wall p99 is mostly time spent preempted). The peer is stock faiss on the
 * same vectors and the same HNSW graph: its own (scalar) distance code
 * with OpenMP's default team, as the store ran before core/memory/faiss_shim.h;
 * the store's rows use the shim's AVX2 storage and one OpenMP thread.
 * HNSW is built with the store's M / efConstruction (memory.h) on
 * --threads OpenMP threads (default 2, memory.workers' default: the store
 * builds on a team that size), timed as wall and process CPU time;
 * --serial-too builds it once more on one thread first, for the ratio.
 * efSearch 32..512 are shown, the store's marked. --no-stock leaves out
 * the stock-faiss rows (at 1M their scalar scans cost minutes of CPU).
 *
 * --index FILE measures searches on a saved index instead (the store's
 * memory.index, e.g. the one tests/bench/consolidate.mjs --dir leaves):
 * no build, its own vectors, queries that are 1,000 of them moved to a
 * cosine of ~0.9 - so a 1M graph that took an hour is not built again.
 *
 * Usage: bench_memory [--quick] [--n N] [--m M] [--efc EFC] [--ef EF]
 *        [--threads T] [--serial-too] [--no-stock] [--index FILE] [--nq N]
 * (BENCH_MEMORY_INDEX_ONLY=1 skips the PostgreSQL part.)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <omp.h>

#include <event2/event.h>
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>
#include <libpq-fe.h>

#include "conf/config.h"
#include "memory/embed.h"
#include "memory/faiss_shim.h"
#include "memory/memory.h"


#define DIM 384
#define SOPHIA_STR2(x) #x
#define SOPHIA_STR(x) SOPHIA_STR2(x)
#define VOCAB 20000
/* queries: 1,000 unless --nq (fewer: a 1M exact scan costs ~0.2 s each) */
static int nq_count = 1000;
#define NQ nq_count
#define K 10

static uint64_t rng = 42;
/* The store's HNSW parameters unless --m / --efc / --ef override them. */
static int hnsw_m = SOPHIA_MEM_HNSW_M;
static int ef_construction = SOPHIA_MEM_HNSW_EF_CONSTRUCTION;
static int ef_search = SOPHIA_MEM_HNSW_EF_SEARCH;
static int build_threads = 2, serial_too, no_stock;
static const char *index_file;

static uint64_t rnd(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------- the data */

static char vocab[VOCAB][16];
static double zipf_cdf[VOCAB];

static void make_vocab(void)
{
    static const char *syl[] = {"ka", "lo", "mi", "ne", "ru", "ta", "so", "vi",
                                "der", "mon", "tal", "pre", "qu", "bar", "zen",
                                "fi", "go", "ha", "ja", "wex"};
    double sum = 0;
    for (int i = 0; i < VOCAB; i++) {
        int n = 2 + (int)(rnd() % 3);
        vocab[i][0] = '\0';
        for (int s = 0; s < n; s++)
            strcat(vocab[i], syl[rnd() % 20]);
        sum += 1.0 / (i + 1);
        zipf_cdf[i] = sum;
    }
    for (int i = 0; i < VOCAB; i++)
        zipf_cdf[i] /= sum;
}

static int zipf_word(void)
{
    double u = (double)(rnd() >> 11) / 9007199254740992.0;
    int lo = 0, hi = VOCAB - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (zipf_cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static char *make_doc(int *words, int *nw)
{
    *nw = 8 + (int)(rnd() % 13);
    char *s = malloc(*nw * 16 + 1);
    s[0] = '\0';
    for (int i = 0; i < *nw; i++) {
        words[i] = zipf_word();
        if (i)
            strcat(s, " ");
        strcat(s, vocab[words[i]]);
    }
    return s;
}

/* One word dropped, two neighbours swapped. */
static char *make_query(const int *words, int nw)
{
    int w[32], n = 0, drop = (int)(rnd() % (unsigned)nw);
    for (int i = 0; i < nw; i++)
        if (i != drop)
            w[n++] = words[i];
    int s = (int)(rnd() % (unsigned)(n - 1));
    int t = w[s];
    w[s] = w[s + 1];
    w[s + 1] = t;
    char *q = malloc(32 * 16);
    q[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(q, " ");
        strcat(q, vocab[w[i]]);
    }
    return q;
}

/* ------------------------------------------------------------ the index */

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double q)
{
    qsort(v, n, sizeof(*v), dcmp);
    return v[(size_t)(q * (double)(n - 1))];
}

static double proc_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One add of all n on a team of `threads`, as the store builds. */
static FaissIndex *build(const char *desc, const float *x, const int64_t *ids,
                         size_t n, int threads, double *secs, double *cpu)
{
    FaissIndex *ix = NULL;
    faiss_index_factory(&ix, DIM, desc, METRIC_INNER_PRODUCT);
    sophia_faiss_accelerate(ix, 1);
    sophia_faiss_hnsw_set(ix, ef_construction, 0);
    double t0 = now_s(), c0 = proc_cpu_s();
    sophia_faiss_add_parallel(ix, (idx_t)n, x, (const idx_t *)ids, threads);
    *secs = now_s() - t0;
    if (cpu)
        *cpu = proc_cpu_s() - c0;
    return ix;
}

static void print_load(const char *when)
{
    FILE *la = fopen("/proc/loadavg", "r");
    char load[64] = "?";
    if (la && fgets(load, sizeof(load), la))
        load[strcspn(load, "\n")] = '\0';
    if (la)
        fclose(la);
    printf("load average %s: %s\n", when, load);
}

/* Peak and current resident set, MiB. */
static void print_rss(const char *when)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%*d %ld", &pages) != 1)
        pages = 0;
    if (f)
        fclose(f);
    printf("RSS %s: %.0f MiB (peak %.0f MiB)\n", when,
           (double)pages * (double)sysconf(_SC_PAGESIZE) / 1048576.0,
           (double)ru.ru_maxrss / 1024.0);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wall time per search, and this thread's CPU time: on a loaded machine
 * the wall p99 is mostly time spent preempted, the CPU p99 is the work. */
static void search_all(FaissIndex *ix, const float *q, idx_t *labels,
                       double *lat_us, double *cpu_us)
{
    float d[K];
    for (int i = 0; i < NQ; i++) {
        double t0 = now_s(), c0 = cpu_s();
        faiss_Index_search(ix, 1, q + (size_t)i * DIM, K, d, labels + (size_t)i * K);
        cpu_us[i] = (cpu_s() - c0) * 1e6;
        lat_us[i] = (now_s() - t0) * 1e6;
    }
}

static double recall(const idx_t *truth, const idx_t *got)
{
    size_t hit = 0;
    for (int i = 0; i < NQ; i++)
        for (int a = 0; a < K; a++)
            for (int b = 0; b < K; b++)
                if (got[i * K + a] == truth[i * K + b] && truth[i * K + b] >= 0) {
                    hit++;
                    break;
                }
    return (double)hit / (NQ * K);
}

/* ------------------------------------------------- through the module */

typedef struct e2e {
    size_t outstanding, done, errors;
} e2e;

static void on_store(void *arg, int64_t id, int err, const char *msg)
{
    e2e *e = arg;
    (void)id;
    (void)msg;
    e->outstanding--;
    e->done++;
    e->errors += err != 0;
}

static void on_search(void *arg, const json_t *r, int err, const char *msg)
{
    on_store(arg, 0, err, msg);
    (void)r;
}

static void pump(struct event_base *base, e2e *e, size_t max_out)
{
    while (e->outstanding > max_out)
        event_base_loop(base, EVLOOP_ONCE);
}

static void drop_table(const char *url, const char *table)
{
    PGconn *c = PQconnectdb(url);
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s", table);
    PQclear(PQexec(c, sql));
    PQfinish(c);
}

static sophia_memory *open_store(const char *table, const char *path,
                                 struct event_base *base, sophia_conf **c)
{
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "memory:\n  table: %s\n  index: auto\n  "
             "hnsw_threshold: 50000\n  index_path: %s\n  workers: 2\n",
             table, path);
    sophia_diag d;
    sophia_diag_init(&d);
    *c = sophia_conf_load_string("bench.yaml", yaml, strlen(yaml), &d);
    sophia_conf_apply_env(*c, NULL);
    sophia_diag_free(&d);
    sophia_memory *m = sophia_memory_new(*c, base, NULL, NULL);
    while (!sophia_memory_ready(m))
        event_base_loop(base, EVLOOP_ONCE);
    return m;
}

/* One at a time (latency, not throughput), timed here around each. */
static double hybrid_searches_n(sophia_memory *m, struct event_base *base,
                                char **queries, int nq, double *p50, double *p99)
{
    e2e e = {0};
    double *lat = malloc((size_t)nq * sizeof(*lat));
    double t0 = now_s();
    for (int i = 0; i < nq; i++) {
        double s0 = now_s();
        if (sophia_memory_search(m, queries[i], K, NULL, on_search, &e) == 0)
            e.outstanding++;
        pump(base, &e, 0);
        lat[i] = (now_s() - s0) * 1000;
    }
    double secs = now_s() - t0;
    *p50 = pct(lat, (size_t)nq, 0.5);
    *p99 = pct(lat, (size_t)nq, 0.99);
    free(lat);
    return nq / secs;
}

static double hybrid_searches(sophia_memory *m, struct event_base *base,
                              char **queries, double *p50, double *p99)
{
    return hybrid_searches_n(m, base, queries, NQ, p50, p99);
}

/* Queries of three of the ten most frequent words: the full-text leg's
 * worst case (each word matches a large part of the table). */
#define NQ_COMMON 200
static char **common_queries(void)
{
    char **q = malloc(NQ_COMMON * sizeof(*q));
    for (int i = 0; i < NQ_COMMON; i++) {
        q[i] = malloc(64);
        snprintf(q[i], 64, "%s %s %s", vocab[rnd() % 10], vocab[rnd() % 10],
                 vocab[rnd() % 10]);
    }
    return q;
}

/* Stores every memory through the module (the index starts empty, so
 * Flat), searches, then restarts: the index file is deleted so the start
 * rebuilds from PostgreSQL, now as HNSW (auto, >= 50,000 rows). */
static void through_module(char **docs, char **queries, size_t n)
{
    const char *url = getenv("SOPHIA_PG_URL");
    if (!url || !*url) {
        printf("\n(SOPHIA_PG_URL unset: store rate and end-to-end search skipped)\n");
        return;
    }
    char table[64], path[128];
    snprintf(table, sizeof(table), "bench_mem_%d", (int)getpid());
    snprintf(path, sizeof(path), "/tmp/bench_memory_%d.index", (int)getpid());
    struct event_base *base = event_base_new();
    sophia_conf *c;
    sophia_memory *m = open_store(table, path, base, &c);
    e2e e = {0};
    json_t *ctx = json_pack("{s:s}", "user", "bench");
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        pump(base, &e, 512);
        if (sophia_memory_store(m, docs[i], "fact", ctx, -1, on_store, &e) == 0)
            e.outstanding++;
    }
    pump(base, &e, 0);
    double store_rate = (double)n / (now_s() - t0);
    double fp50, fp99, hp50, hp99, cp50, cp99;
    double frate = hybrid_searches(m, base, queries, &fp50, &fp99);
    char **common = common_queries();
    double crate = hybrid_searches_n(m, base, common, NQ_COMMON, &cp50, &cp99);
    for (int i = 0; i < NQ_COMMON; i++)
        free(common[i]);
    free(common);
    sophia_memory_free(m);
    sophia_conf_free(c);
    unlink(path);
    t0 = now_s();
    m = open_store(table, path, base, &c);
    double rebuild_s = now_s() - t0;
    double hrate = hybrid_searches(m, base, queries, &hp50, &hp99);
    json_t *st = sophia_memory_stats_json(m);
    const char *kind = json_string_value(json_object_get(st, "index"));
    printf("\nThrough the module, real PostgreSQL (hybrid = faiss k*4 + full-text "
           "k*4 + row fetch + RRF blend):\n\n");
    printf("| operation | rate | p50 | p99 |\n|---|---|---|---|\n");
    printf("| store: embed + INSERT + faiss add (%zu, 512 in flight) | %.0f /s | | |\n",
           n, store_rate);
    printf("| hybrid search k=10, Flat index | %.0f /s | %.2f ms | %.2f ms |\n",
           frate, fp50, fp99);
    printf("| hybrid search k=10, Flat index, 3 of the 10 commonest words | %.0f /s | "
           "%.2f ms | %.2f ms |\n", crate, cp50, cp99);
    printf("| hybrid search k=10, %s index after a rebuild (%.1f s) | %.0f /s | "
           "%.2f ms | %.2f ms |\n", kind, rebuild_s, hrate, hp50, hp99);
    if (e.errors)
        printf("(%zu store errors)\n", e.errors);
    json_decref(st);
    json_decref(ctx);
    sophia_memory_free(m);
    event_base_free(base);
    sophia_conf_free(c);
    unlink(path);
    drop_table(url, table);
}

typedef struct row {
    char name[96];
    double build, p50, p99, cpu99, rec;
} row;

static void measure(row *r, FaissIndex *ix, const float *q, const idx_t *truth,
                    idx_t *got)
{
    double lat[NQ], cpu[NQ];
    search_all(ix, q, got, lat, cpu);
    r->cpu99 = pct(cpu, NQ, 0.99);
    r->rec = truth ? recall(truth, got) : 1.0;
    r->p50 = pct(lat, NQ, 0.5);
    r->p99 = pct(lat, NQ, 0.99);
}

static void set_ef_search(FaissIndex *ix, int ef)
{
    FaissParameterSpace *ps = NULL;
    faiss_ParameterSpace_new(&ps);
    faiss_ParameterSpace_set_index_parameter(ps, ix, "efSearch", ef);
    faiss_ParameterSpace_free(ps);
}

/* Stock faiss (its scalar distance code, OpenMP's default team, as the
 * store ran before) and the store's set-up (the shim's AVX2 storage, one
 * OpenMP thread) on the same vectors and the same HNSW graph. */
static void index_table(const float *x, const int64_t *ids, size_t n,
                        const float *q, FaissIndex *given)
{
    row r[12];
    int nr = 0, store_row = -1;
    idx_t *truth = malloc(NQ * K * sizeof(idx_t)), *got = malloc(NQ * K * sizeof(idx_t));
    int omp_default = omp_get_max_threads();
    sophia_faiss_set_threads(1);
    double flat_build;
    FaissIndex *flat = build("IDMap2,Flat", x, ids, n, 1, &flat_build, NULL);
    if (!no_stock) {
        sophia_faiss_accelerate(flat, 0);
        sophia_faiss_set_threads(omp_default);
        r[nr].build = flat_build;
        snprintf(r[nr].name, sizeof(r[nr].name), "Flat, stock faiss, %d OpenMP threads",
                 omp_default);
        measure(&r[nr++], flat, q, NULL, truth);
        sophia_faiss_accelerate(flat, 1);
        sophia_faiss_set_threads(1);
    }
    int fast_flat = nr;
    r[nr].build = flat_build;
    snprintf(r[nr].name, sizeof(r[nr].name), "Flat, Sophia's storage, 1 thread");
    measure(&r[nr++], flat, q, no_stock ? NULL : truth, no_stock ? truth : got);
    faiss_Index_free(flat);
    printf("exact search done (n %zu)\n", n);

    char desc[64];
    snprintf(desc, sizeof(desc), "IDMap2,HNSW%d,Flat", hnsw_m);
    double hb = 0, hcpu = 0, sb = 0, scpu = 0;
    FaissIndex *hnsw = given;
    if (given)
        goto built;
    if (serial_too) {
        print_load("before the 1-thread build");
        faiss_Index_free(build(desc, x, ids, n, 1, &sb, &scpu));
        printf("HNSW build on 1 thread: %.1f s wall, %.1f s CPU\n", sb, scpu);
    }
    print_load("before the build");
    hnsw = build(desc, x, ids, n, build_threads, &hb, &hcpu);
    printf("HNSW build on %d threads: %.1f s wall, %.1f s CPU\n", build_threads, hb, hcpu);
    print_load("after the build");
built:
    print_rss("with the HNSW index");
    static const int efs[] = {32, 64, 128, 192, 256, 384, 512};
    for (size_t e = 0; e < sizeof(efs) / sizeof(efs[0]); e++) {
        set_ef_search(hnsw, efs[e]);
        r[nr].build = hb;
        if (efs[e] == ef_search)
            store_row = nr;
        snprintf(r[nr].name, sizeof(r[nr].name), "HNSW%d efC %d, efSearch %d, 1 thread%s",
                 hnsw_m, ef_construction, efs[e], efs[e] == ef_search ? " (the store's)" : "");
        measure(&r[nr++], hnsw, q, truth, got);
    }
    int before = -1;
    if (no_stock)
        goto report;
    /* the same graph through stock faiss: the store before this change */
    sophia_faiss_accelerate(hnsw, 0);
    sophia_faiss_set_threads(omp_default);
    set_ef_search(hnsw, 256);
    r[nr].build = hb;
    snprintf(r[nr].name, sizeof(r[nr].name), "same graph, efSearch 256, stock faiss, "
             "%d OpenMP threads (before)", omp_default);
    before = nr;
    measure(&r[nr++], hnsw, q, truth, got);
    sophia_faiss_set_threads(1);
report:
    faiss_Index_free(hnsw);

    printf("bench_memory: %zu memories, dim %d, %d queries, k=%d; distance code: %s; ",
           n, DIM, NQ, K, sophia_faiss_simd() ? "AVX2+FMA" : "portable");
    if (given)
        printf("HNSW read from %s", index_file);
    else
        printf("HNSW build on %d threads: %.1f s, %.1f s CPU", build_threads, hb, hcpu);
    if (serial_too)
        printf(" (1 thread: %.1f s, %.1f s CPU; %.2fx faster)", sb, scpu, sb / hb);
    printf("\n\n");
    printf("| index | build | search p50 | search p99 | p99 CPU time | recall@10 vs flat |\n");
    printf("|---|---|---|---|---|---|\n");
    for (int i = 0; i < nr; i++)
        printf("| %s | %.1f s | %.0f µs | %.0f µs | %.0f µs | %.3f |\n", r[i].name,
               r[i].build, r[i].p50, r[i].p99, r[i].cpu99, r[i].rec);
    if (store_row >= 0 && before >= 0)
        printf("\nstore's HNSW vs before: p99 %.1fx faster, p50 %.1fx; Flat p99 %.1fx\n",
               r[before].p99 / r[store_row].p99, r[before].p50 / r[store_row].p50,
               r[0].p99 / r[fast_flat].p99);
    if (store_row >= 0) {
        printf("targets: HNSW p99 < 2 ms (%s; CPU time %s), recall@10 >= 0.95 (%s)\n",
               r[store_row].p99 < 2000 ? "met" : "MISSED",
               r[store_row].cpu99 < 2000 ? "met" : "MISSED",
               r[store_row].rec >= 0.95 ? "met" : "MISSED");
    }
    free(truth);
    free(got);
}

static double gauss(void)
{
    double u = ((double)(rnd() >> 11) + 1) / 9007199254740993.0;
    double v = (double)(rnd() >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* --index: the saved graph, its own vectors (copied out of its storage)
 * for the exact answers, and stored vectors moved by noise of norm 0.5
 * (cosine ~0.9 to where they came from) as the queries. */
static int saved_index(const char *path)
{
    FaissIndex *ix = NULL;
    double t0 = now_s();
    if (faiss_read_index_fname(path, 0, &ix) != 0 || faiss_Index_d(ix) != DIM) {
        fprintf(stderr, "bench_memory: %s: %s\n", path,
                ix ? "not of dim " SOPHIA_STR(DIM) : faiss_get_last_error());
        return 1;
    }
    sophia_faiss_accelerate(ix, 1);
    size_t n = (size_t)faiss_Index_ntotal(ix);
    printf("%s: %zu vectors read in %.1f s\n", path, n, now_s() - t0);
    float *x = malloc(n * DIM * sizeof(float)), *q = malloc(NQ * DIM * sizeof(float));
    int64_t *ids = malloc(n * sizeof(*ids));
    if (sophia_faiss_copy(ix, 0, (idx_t)n, x, (idx_t *)ids) != 0) {
        fprintf(stderr, "bench_memory: %s: %s\n", path, faiss_get_last_error());
        return 1;
    }
    for (int i = 0; i < NQ; i++) {
        const float *src = x + (rnd() % n) * DIM;
        float *v = q + (size_t)i * DIM;
        double norm = 0;
        for (int d = 0; d < DIM; d++) {
            v[d] = src[d] + (float)(0.5 * gauss() / sqrt(DIM));
            norm += (double)v[d] * v[d];
        }
        for (int d = 0; d < DIM; d++)
            v[d] = (float)(v[d] / sqrt(norm));
    }
    index_table(x, ids, n, q, ix);
    print_load("at the end");
    free(x);
    free(q);
    free(ids);
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = 100000;
    setvbuf(stdout, NULL, _IOLBF, 0); /* tables appear as they are measured */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            n = 10000;
        else if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--m") && i + 1 < argc)
            hnsw_m = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--efc") && i + 1 < argc)
            ef_construction = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ef") && i + 1 < argc)
            ef_search = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            build_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--serial-too"))
            serial_too = 1;
        else if (!strcmp(argv[i], "--no-stock"))
            no_stock = 1;
        else if (!strcmp(argv[i], "--index") && i + 1 < argc)
            index_file = argv[++i];
        else if (!strcmp(argv[i], "--nq") && i + 1 < argc)
            nq_count = atoi(argv[++i]) > 0 && atoi(argv[i]) <= 1000 ? atoi(argv[i]) : 1000;
    }
    if (index_file)
        return saved_index(index_file);
    make_vocab();
    sophia_embedder *emb = sophia_embed_hashing_new(DIM);
    char **docs = malloc(n * sizeof(*docs)), **queries = malloc(NQ * sizeof(*queries));
    float *x = malloc(n * DIM * sizeof(float)), *q = malloc(NQ * DIM * sizeof(float));
    int64_t *ids = malloc(n * sizeof(*ids));
    int (*words)[32] = malloc(n * sizeof(*words));
    int *nw = malloc(n * sizeof(*nw));
    for (size_t i = 0; i < n; i++) {
        docs[i] = make_doc(words[i], &nw[i]);
        ids[i] = (int64_t)i + 1;
    }
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        sophia_embed(emb, docs[i], strlen(docs[i]), x + i * DIM);
    double embed_s = now_s() - t0;
    for (int i = 0; i < NQ; i++) {
        size_t src = rnd() % n;
        queries[i] = make_query(words[src], nw[src]);
        sophia_embed(emb, queries[i], strlen(queries[i]), q + (size_t)i * DIM);
    }
    index_table(x, ids, n, q, NULL);
    print_load("at the end");
    printf("\nembedding (feature hashing): %.0f memories/s on one thread\n",
           (double)n / embed_s);
    if (!getenv("BENCH_MEMORY_INDEX_ONLY"))
        through_module(docs, queries, n);
    for (size_t i = 0; i < n; i++)
        free(docs[i]);
    for (int i = 0; i < NQ; i++)
        free(queries[i]);
    free(docs);
    free(queries);
    free(x);
    free(q);
    free(ids);
    free(words);
    free(nw);
    sophia_embedder_free(emb);
    return 0;
}
