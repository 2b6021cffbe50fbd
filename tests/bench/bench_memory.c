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
 * call. HNSW is faiss's HNSW32 with efSearch = 256, as core/memory.c sets
 * (64 and 128 are shown too).
 *
 * Usage: bench_memory [--quick] [--n N]
 * (BENCH_MEMORY_INDEX_ONLY=1 skips the PostgreSQL part.)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <libpq-fe.h>

#include "config.h"
#include "embed.h"
#include "memory.h"
#include "server.h"

sophia_server *sophia_srv; /* the daemon defines it in main.c */

#define DIM 384
#define VOCAB 20000
#define NQ 1000
#define K 10

static uint64_t rng = 42;

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

static FaissIndex *build(const char *desc, const float *x, const int64_t *ids,
                         size_t n, double *secs)
{
    FaissIndex *ix = NULL;
    faiss_index_factory(&ix, DIM, desc, METRIC_INNER_PRODUCT);
    if (strstr(desc, "HNSW")) {
        FaissParameterSpace *ps = NULL;
        faiss_ParameterSpace_new(&ps);
        faiss_ParameterSpace_set_index_parameter(ps, ix, "efSearch", 256);
        faiss_ParameterSpace_free(ps);
    }
    double t0 = now_s();
    faiss_Index_add_with_ids(ix, (idx_t)n, x, (const idx_t *)ids);
    *secs = now_s() - t0;
    return ix;
}

static void search_all(FaissIndex *ix, const float *q, idx_t *labels,
                       double *lat_us)
{
    float d[K];
    for (int i = 0; i < NQ; i++) {
        double t0 = now_s();
        faiss_Index_search(ix, 1, q + (size_t)i * DIM, K, d, labels + (size_t)i * K);
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
    sophia_memory *m = sophia_memory_new(*c, base, NULL);
    while (!sophia_memory_ready(m))
        event_base_loop(base, EVLOOP_ONCE);
    return m;
}

static double hybrid_searches(sophia_memory *m, struct event_base *base,
                              char **queries, double *p50, double *p99)
{
    e2e e = {0};
    double t0 = now_s();
    for (int i = 0; i < NQ; i++) {
        pump(base, &e, 0); /* one at a time: latency, not throughput */
        if (sophia_memory_search(m, queries[i], K, NULL, on_search, &e) == 0)
            e.outstanding++;
    }
    pump(base, &e, 0);
    double secs = now_s() - t0;
    json_t *st = sophia_memory_stats_json(m);
    *p50 = json_number_value(json_object_get(st, "p50_us")) / 1000;
    *p99 = json_number_value(json_object_get(st, "p99_us")) / 1000;
    json_decref(st);
    return NQ / secs;
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
    double fp50, fp99, hp50, hp99;
    double frate = hybrid_searches(m, base, queries, &fp50, &fp99);
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

int main(int argc, char **argv)
{
    size_t n = 100000;
    setvbuf(stdout, NULL, _IOLBF, 0); /* tables appear as they are measured */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            n = 10000;
        else if (!strcmp(argv[i], "--n") && i + 1 < argc)
            n = (size_t)atol(argv[++i]);
    }
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
    double flat_build, hnsw_build, lf[NQ], lh[NQ];
    FaissIndex *flat = build("IDMap2,Flat", x, ids, n, &flat_build);
    FaissIndex *hnsw = build("IDMap2,HNSW32,Flat", x, ids, n, &hnsw_build);
    idx_t *tf = malloc(NQ * K * sizeof(idx_t)), *th = malloc(NQ * K * sizeof(idx_t));
    search_all(flat, q, tf, lf);
    /* efSearch 256 is what the store uses; the others show the trade-off. */
    static const int efs[] = {64, 128, 256};
    double ef_p50[3], ef_p99[3], ef_rec[3];
    for (int e = 0; e < 3; e++) {
        FaissParameterSpace *ps = NULL;
        faiss_ParameterSpace_new(&ps);
        faiss_ParameterSpace_set_index_parameter(ps, hnsw, "efSearch", efs[e]);
        faiss_ParameterSpace_free(ps);
        search_all(hnsw, q, th, lh);
        ef_rec[e] = recall(tf, th);
        ef_p50[e] = pct(lh, NQ, 0.5);
        ef_p99[e] = pct(lh, NQ, 0.99);
    }
    double rec = ef_rec[2];

    printf("bench_memory: %zu memories, dim %d, %d queries, k=%d\n\n", n, DIM, NQ, K);
    printf("embedding (feature hashing): %.0f memories/s on one thread\n\n",
           (double)n / embed_s);
    printf("| index | build | search p50 | search p99 | recall@10 vs flat |\n");
    printf("|---|---|---|---|---|\n");
    printf("| IDMap2,Flat (exact) | %.1f s | %.0f µs | %.0f µs | 1.000 |\n",
           flat_build, pct(lf, NQ, 0.5), pct(lf, NQ, 0.99));
    for (int e = 0; e < 3; e++)
        printf("| IDMap2,HNSW32,Flat (efSearch %d%s) | %.1f s | %.0f µs | %.0f µs | %.3f |\n",
               efs[e], efs[e] == 256 ? ", the store's" : "", hnsw_build,
               ef_p50[e], ef_p99[e], ef_rec[e]);
    printf("\ntargets: HNSW p99 < 2 ms (%s), recall@10 >= 0.95 (%s)\n",
           ef_p99[2] < 2000 ? "met" : "MISSED", rec >= 0.95 ? "met" : "MISSED");
    faiss_Index_free(flat);
    faiss_Index_free(hnsw);
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
    free(tf);
    free(th);
    sophia_embedder_free(emb);
    return 0;
}
