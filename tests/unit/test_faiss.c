/*
 * Unit tests for core/memory/faiss_shim.cpp, written against the faiss C API headers
 * exactly as the memory store uses them: plain C, opaque handles, integer
 * error codes. They check the shim forwards to the right faiss objects
 * (exact inner-product search, removal, persistence, HNSW recall) and that
 * C++ exceptions come back as negative codes with a per-thread message.
 * Vectors are pseudo-random but seeded, so every run sees the same data.
 */
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <omp.h>

#include "memory/faiss_shim.h"

#define DIM 64
#define FLAT_N 1000
#define HNSW_N 2000
#define ID_BASE 1000
#define K 5

/* xorshift64: deterministic and independent of the libc's rand(). */
static float next_unit(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (float)((double)(x >> 11) / (double)(1ULL << 53)) * 2.0f - 1.0f;
}

/* n L2-normalised vectors, so inner product with itself is 1. */
static float *random_vectors(size_t n, uint64_t seed)
{
    float *v = malloc(n * DIM * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        float *row = v + i * DIM;
        double norm = 0;
        for (int j = 0; j < DIM; j++) {
            row[j] = next_unit(&seed);
            norm += (double)row[j] * row[j];
        }
        for (int j = 0; j < DIM; j++)
            row[j] = (float)(row[j] / sqrt(norm));
    }
    return v;
}

static idx_t *sequential_ids(size_t n)
{
    idx_t *ids = malloc(n * sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = ID_BASE + (idx_t)i;
    return ids;
}

static FaissIndex *new_filled_index(const char *desc, size_t n,
                                    const float *vecs)
{
    FaissIndex *index = NULL;
    assert_int_equal(
        faiss_index_factory(&index, DIM, desc, METRIC_INNER_PRODUCT), 0);
    assert_non_null(index);
    idx_t *ids = sequential_ids(n);
    assert_int_equal(faiss_Index_add_with_ids(index, (idx_t)n, vecs, ids), 0);
    free(ids);
    assert_int_equal(faiss_Index_ntotal(index), (idx_t)n);
    return index;
}

/* Searches the first nq stored vectors; each must find itself first. */
static void assert_finds_self(const FaissIndex *index, const float *vecs,
                              int nq, float *dist, idx_t *labels)
{
    assert_int_equal(faiss_Index_search(index, nq, vecs, K, dist, labels), 0);
    for (int q = 0; q < nq; q++) {
        assert_int_equal(labels[q * K], ID_BASE + q);
        assert_true(fabsf(dist[q * K] - 1.0f) < 1e-4f);
        /* Inner product: scores come best (largest) first. */
        assert_true(dist[q * K] >= dist[q * K + 1]);
    }
}

static void test_flat_self_search(void **state)
{
    (void)state;
    float *vecs = random_vectors(FLAT_N, 42);
    FaissIndex *index = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    float dist[10 * K];
    idx_t labels[10 * K];

    assert_int_equal(faiss_Index_d(index), DIM);
    assert_true(faiss_Index_is_trained(index));
    assert_finds_self(index, vecs, 10, dist, labels);

    assert_int_equal(faiss_Index_reset(index), 0);
    assert_int_equal(faiss_Index_ntotal(index), 0);
    assert_int_equal(faiss_Index_search(index, 1, vecs, K, dist, labels), 0);
    assert_int_equal(labels[0], -1);

    faiss_Index_free(index);
    free(vecs);
}

static int contains(const idx_t *ids, size_t n, idx_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

static void test_remove_ids_batch(void **state)
{
    (void)state;
    float *vecs = random_vectors(FLAT_N, 7);
    FaissIndex *index = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    idx_t gone[20];
    for (int i = 0; i < 20; i++)
        gone[i] = ID_BASE + 2 * i; /* even ids among the first 40 */

    FaissIDSelectorBatch *sel = NULL;
    assert_int_equal(faiss_IDSelectorBatch_new(&sel, 20, gone), 0);
    size_t removed = 0;
    assert_int_equal(
        faiss_Index_remove_ids(index, (FaissIDSelector *)sel, &removed), 0);
    faiss_IDSelector_free((FaissIDSelector *)sel);
    assert_int_equal(removed, 20);
    assert_int_equal(faiss_Index_ntotal(index), FLAT_N - 20);

    float dist[40 * K];
    idx_t labels[40 * K];
    assert_int_equal(faiss_Index_search(index, 40, vecs, K, dist, labels), 0);
    for (int q = 0; q < 40; q++) {
        for (int j = 0; j < K; j++)
            assert_false(contains(gone, 20, labels[q * K + j]));
        if (q % 2) /* survivors still find themselves */
            assert_int_equal(labels[q * K], ID_BASE + q);
    }
    faiss_Index_free(index);
    free(vecs);
}

static void test_remove_ids_range(void **state)
{
    (void)state;
    float *vecs = random_vectors(FLAT_N, 8);
    FaissIndex *index = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    FaissIDSelectorRange *sel = NULL;

    assert_int_equal(faiss_IDSelectorRange_new(&sel, ID_BASE, ID_BASE + 100),
                     0);
    assert_int_equal(
        faiss_Index_remove_ids(index, (FaissIDSelector *)sel, NULL), 0);
    faiss_IDSelector_free((FaissIDSelector *)sel);
    assert_int_equal(faiss_Index_ntotal(index), FLAT_N - 100);

    float dist[K];
    idx_t labels[K];
    assert_int_equal(faiss_Index_search(index, 1, vecs, K, dist, labels), 0);
    for (int j = 0; j < K; j++)
        assert_true(labels[j] >= ID_BASE + 100);
    faiss_Index_free(index);
    free(vecs);
}

static void test_write_read_roundtrip(void **state)
{
    (void)state;
    float *vecs = random_vectors(FLAT_N, 99);
    FaissIndex *index = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    char path[] = "/tmp/sophia-test-faiss-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);

    assert_int_equal(faiss_write_index_fname(index, path), 0);
    FaissIndex *back = NULL;
    assert_int_equal(faiss_read_index_fname(path, 0, &back), 0);
    unlink(path);
    assert_non_null(back);
    assert_int_equal(faiss_Index_d(back), DIM);
    assert_int_equal(faiss_Index_ntotal(back), FLAT_N);

    float d1[10 * K], d2[10 * K];
    idx_t l1[10 * K], l2[10 * K];
    assert_finds_self(index, vecs, 10, d1, l1);
    assert_finds_self(back, vecs, 10, d2, l2);
    assert_memory_equal(l1, l2, sizeof l1);
    assert_memory_equal(d1, d2, sizeof d1);

    faiss_Index_free(back);
    faiss_Index_free(index);
    free(vecs);
}

static void test_hnsw_recall(void **state)
{
    (void)state;
    float *vecs = random_vectors(HNSW_N, 1234);
    FaissIndex *index = new_filled_index("IDMap2,HNSW32,Flat", HNSW_N, vecs);
    enum { NQ = 100 };
    float *dist = malloc(NQ * K * sizeof *dist);
    idx_t *labels = malloc(NQ * K * sizeof *labels);
    assert_non_null(dist);
    assert_non_null(labels);

    /* Query every 20th stored vector, spread over the whole index. */
    float *queries = malloc(NQ * DIM * sizeof *queries);
    assert_non_null(queries);
    for (int q = 0; q < NQ; q++)
        memcpy(queries + q * DIM, vecs + (size_t)q * 20 * DIM,
               DIM * sizeof *queries);
    assert_int_equal(
        faiss_Index_search(index, NQ, queries, K, dist, labels), 0);
    int hits = 0;
    for (int q = 0; q < NQ; q++)
        hits += labels[q * K] == ID_BASE + q * 20;
    assert_true(hits >= 95);

    free(queries);
    free(labels);
    free(dist);
    faiss_Index_free(index);
    free(vecs);
}

/* Sophia's storage: the same answers as stock faiss, persisted as a plain
 * Flat and accelerated again after reading; copy and the HNSW knobs; an
 * HNSW built on it finds itself. */
static void test_accelerated_matches_stock(void **state)
{
    (void)state;
    enum { NQ = 50 };
    float *vecs = random_vectors(FLAT_N, 7);
    FaissIndex *stock = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    FaissIndex *fast = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    assert_int_equal(sophia_faiss_accelerate(fast, 1), 0);
    float d1[NQ * K], d2[NQ * K];
    idx_t l1[NQ * K], l2[NQ * K];
    assert_int_equal(faiss_Index_search(stock, NQ, vecs, K, d1, l1), 0);
    assert_int_equal(faiss_Index_search(fast, NQ, vecs, K, d2, l2), 0);
    assert_memory_equal(l1, l2, sizeof l1);
    for (int i = 0; i < NQ * K; i++)
        assert_true(fabsf(d1[i] - d2[i]) < 1e-5f);
    /* k beyond ntotal: -1 labels, as faiss */
    FaissIndex *small = new_filled_index("IDMap2,Flat", 3, vecs);
    assert_int_equal(sophia_faiss_accelerate(small, 1), 0);
    assert_int_equal(faiss_Index_search(small, 1, vecs, K, d2, l2), 0);
    assert_int_equal(l2[0], ID_BASE);
    assert_int_equal(l2[3], -1);
    faiss_Index_free(small);

    char path[] = "/tmp/sophia-test-faiss-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(faiss_write_index_fname(fast, path), 0);
    FaissIndex *back = NULL;
    assert_int_equal(faiss_read_index_fname(path, 0, &back), 0);
    unlink(path);
    assert_int_equal(sophia_faiss_accelerate(back, 1), 0);
    assert_finds_self(back, vecs, 10, d2, l2);

    /* copy: vectors and ids in storage order */
    float row[2 * DIM];
    idx_t ids[2];
    assert_int_equal(sophia_faiss_copy(back, 5, 2, row, ids), 0);
    assert_int_equal(ids[0], ID_BASE + 5);
    assert_int_equal(ids[1], ID_BASE + 6);
    assert_memory_equal(row, vecs + 5 * DIM, sizeof row);
    assert_true(sophia_faiss_copy(back, FLAT_N - 1, 2, row, ids) < 0);
    assert_int_equal(sophia_faiss_hnsw_set(back, 0, 64), -1); /* not HNSW */

    FaissIndex *h = NULL;
    assert_int_equal(faiss_index_factory(&h, DIM, "IDMap2,HNSW16,Flat",
                                         METRIC_INNER_PRODUCT), 0);
    assert_int_equal(sophia_faiss_accelerate(h, 1), 0);
    assert_int_equal(sophia_faiss_hnsw_set(h, 60, 64), 0);
    idx_t *all = sequential_ids(FLAT_N);
    assert_int_equal(faiss_Index_add_with_ids(h, FLAT_N, vecs, all), 0);
    free(all);
    assert_finds_self(h, vecs, 10, d2, l2);
    assert_int_equal(sophia_faiss_copy(h, 0, 2, row, ids), 0);
    assert_memory_equal(row, vecs, sizeof row);

    faiss_Index_free(h);
    faiss_Index_free(back);
    faiss_Index_free(fast);
    faiss_Index_free(stock);
    free(vecs);
}

/* recall@K of an accelerated IDMap2,HNSW16 index built by one
 * sophia_faiss_add_parallel on `threads`, against exact search. */
static double parallel_build_recall(const float *vecs, size_t n, int threads,
                                    const idx_t *truth, int nq)
{
    FaissIndex *h = NULL;
    assert_int_equal(faiss_index_factory(&h, DIM, "IDMap2,HNSW16,Flat",
                                         METRIC_INNER_PRODUCT), 0);
    assert_int_equal(sophia_faiss_accelerate(h, 1), 0);
    assert_int_equal(sophia_faiss_hnsw_set(h, 40, 16), 0);
    idx_t *ids = sequential_ids(n);
    assert_int_equal(sophia_faiss_add_parallel(h, (idx_t)n, vecs, ids, threads), 0);
    free(ids);
    assert_int_equal(faiss_Index_ntotal(h), (idx_t)n);
    /* the calling thread's team is pinned again */
    assert_int_equal(omp_get_max_threads(), 1);
    float *d = malloc((size_t)nq * K * sizeof *d);
    idx_t *l = malloc((size_t)nq * K * sizeof *l);
    assert_non_null(d);
    assert_non_null(l);
    /* queries: stored vectors' neighbourhoods, from the end of the set */
    assert_int_equal(faiss_Index_search(h, nq, vecs + (n - (size_t)nq) * DIM, K, d, l), 0);
    int hit = 0;
    for (int i = 0; i < nq * K; i++)
        for (int t = (i / K) * K; t < (i / K + 1) * K; t++)
            hit += l[i] == truth[t];
    free(d);
    free(l);
    faiss_Index_free(h);
    return (double)hit / (nq * K);
}

/* The store builds its graph on a team (sophia_faiss_add_parallel), each
 * OpenMP thread with its own AVX2 distance computer on the shared
 * storage: the graph built on 4 threads finds neighbours as well as the
 * one built on 1, and the caller's team size is restored. */
static void test_parallel_build(void **state)
{
    (void)state;
    enum { N = 4000, NQ = 200 };
    float *vecs = random_vectors(N, 99);
    FaissIndex *exact = new_filled_index("IDMap2,Flat", N, vecs);
    float *d = malloc(NQ * K * sizeof *d);
    idx_t *truth = malloc(NQ * K * sizeof *truth);
    assert_non_null(d);
    assert_non_null(truth);
    assert_int_equal(faiss_Index_search(exact, NQ, vecs + (N - NQ) * DIM, K, d, truth), 0);
    sophia_faiss_set_threads(1);
    double one = parallel_build_recall(vecs, N, 1, truth, NQ);
    double four = parallel_build_recall(vecs, N, 4, truth, NQ);
    print_message("recall@%d: 1 thread %.3f, 4 threads %.3f\n", K, one, four);
    assert_true(one >= 0.9);
    assert_true(four >= one - 0.03);
    /* a failing add (ids, not an IDMap's: plain HNSW refuses them) is an
     * error code, and the team size is restored all the same */
    FaissIndex *plain = NULL;
    assert_int_equal(faiss_index_factory(&plain, DIM, "HNSW16,Flat",
                                         METRIC_INNER_PRODUCT), 0);
    idx_t one_id = 1;
    assert_true(sophia_faiss_add_parallel(plain, 1, vecs, &one_id, 4) < 0);
    assert_int_equal(omp_get_max_threads(), 1);
    faiss_Index_free(plain);
    faiss_Index_free(exact);
    free(truth);
    free(d);
    free(vecs);
}

/* A search with its own efSearch: the same answers as the index's own
 * efSearch set to that value, labels translated to the IDMap2's ids, the
 * index's shared efSearch untouched; a Flat index searches as usual. */
static void test_search_ef(void **state)
{
    (void)state;
    enum { NQ = 50 };
    float *vecs = random_vectors(HNSW_N, 5);
    FaissIndex *h = new_filled_index("IDMap2,HNSW16,Flat", HNSW_N, vecs);
    assert_int_equal(sophia_faiss_accelerate(h, 1), 0);
    float d1[NQ * K], d2[NQ * K];
    idx_t l1[NQ * K], l2[NQ * K];
    assert_int_equal(sophia_faiss_hnsw_set(h, 0, 8), 0);
    assert_int_equal(faiss_Index_search(h, NQ, vecs, K, d1, l1), 0);
    assert_int_equal(sophia_faiss_hnsw_set(h, 0, 200), 0);
    assert_int_equal(sophia_faiss_search_ef(h, NQ, vecs, K, d2, l2, 8), 0);
    assert_memory_equal(l1, l2, sizeof l1);
    assert_memory_equal(d1, d2, sizeof d1);
    int self = 0, differs = 0;
    for (int q = 0; q < NQ; q++)
        self += l2[q * K] == ID_BASE + q;
    assert_true(self >= NQ - 2);
    /* efSearch 200 is still the index's: a plain search differs from ef 8
     * somewhere on these 50 random queries */
    assert_int_equal(faiss_Index_search(h, NQ, vecs, K, d2, l2), 0);
    for (int i = 0; i < NQ * K; i++)
        differs += l1[i] != l2[i];
    assert_true(differs > 0);
    faiss_Index_free(h);

    FaissIndex *flat = new_filled_index("IDMap2,Flat", FLAT_N, vecs);
    assert_int_equal(sophia_faiss_search_ef(flat, 10, vecs, K, d2, l2, 8), 0);
    assert_finds_self(flat, vecs, 10, d1, l1);
    assert_memory_equal(l1, l2, 10 * K * sizeof *l1);
    faiss_Index_free(flat);
    free(vecs);
}

/* Built by hand instead of by factory string; the map owns the flat index,
 * so freeing the map must free both (ASan's leak check verifies it). */
static void test_constructors(void **state)
{
    (void)state;
    FaissIndexFlatIP *flat = NULL;
    FaissIndexIDMap2 *map = NULL;
    assert_int_equal(faiss_IndexFlatIP_new_with(&flat, DIM), 0);
    assert_int_equal(faiss_IndexIDMap2_new(&map, flat), 0);
    assert_false(faiss_IndexIDMap2_own_fields(map));
    faiss_IndexIDMap2_set_own_fields(map, 1);
    assert_true(faiss_IndexIDMap2_own_fields(map));

    float *vecs = random_vectors(50, 5);
    idx_t *ids = sequential_ids(50);
    assert_int_equal(faiss_Index_add_with_ids(map, 50, vecs, ids), 0);
    float dist[3 * K];
    idx_t labels[3 * K];
    assert_finds_self(map, vecs, 3, dist, labels);

    faiss_Index_free(map);
    free(ids);
    free(vecs);
}

static void *error_in_fresh_thread(void *arg)
{
    (void)arg;
    return (void *)faiss_get_last_error();
}

static void assert_error_set(void)
{
    const char *msg = faiss_get_last_error();
    assert_non_null(msg);
    assert_true(msg[0] != '\0');
}

static void test_errors(void **state)
{
    (void)state;
    FaissIndex *index = NULL;
    assert_true(faiss_index_factory(&index, DIM, "NoSuchIndex",
                                    METRIC_INNER_PRODUCT) < 0);
    assert_null(index);
    assert_error_set();

    /* The message is per thread: a new thread has seen no failure. */
    pthread_t t;
    void *other = (void *)1;
    assert_int_equal(pthread_create(&t, NULL, error_in_fresh_thread, NULL), 0);
    assert_int_equal(pthread_join(t, &other), 0);
    assert_null(other);

    assert_true(faiss_read_index_fname("/nonexistent/sophia.faiss", 0,
                                       &index) < 0);
    assert_null(index);
    assert_error_set();

    /* A bare Flat index has no id map, so explicit ids are refused. */
    assert_int_equal(
        faiss_index_factory(&index, DIM, "Flat", METRIC_INNER_PRODUCT), 0);
    float v[DIM] = {1.0f};
    idx_t id = 7;
    assert_int_equal(faiss_Index_add_with_ids(index, 1, v, &id),
                     FAISS_EXCEPT);
    assert_error_set();
    assert_int_equal(faiss_Index_ntotal(index), 0);
    faiss_Index_free(index);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_self_search),
        cmocka_unit_test(test_remove_ids_batch),
        cmocka_unit_test(test_remove_ids_range),
        cmocka_unit_test(test_write_read_roundtrip),
        cmocka_unit_test(test_hnsw_recall),
        cmocka_unit_test(test_constructors),
        cmocka_unit_test(test_accelerated_matches_stock),
        cmocka_unit_test(test_parallel_build),
        cmocka_unit_test(test_search_ef),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
