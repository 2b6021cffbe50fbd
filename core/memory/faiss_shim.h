/*
 * faiss_shim - Sophia's own additions to the faiss C API shim
 * (core/memory/faiss_shim.cpp), for what upstream's C API cannot express.
 *
 * Speed. Debian's libfaiss.a is compiled for baseline x86-64, so its
 * distance code is a scalar loop: one 384-dim inner product is ~400
 * dependent additions, and an HNSW search computes thousands of them.
 * sophia_faiss_accelerate() swaps the flat storage under an index (the
 * IDMap2's Flat, or the HNSW's Flat vectors) for a subclass whose distance
 * computer and brute-force scan use AVX2+FMA when the CPU has them
 * (checked at run time; otherwise an unrolled portable loop). The data
 * and the on-disk format are unchanged: the subclass is an IndexFlat, so
 * write_index writes it as one, and a read index is accelerated again.
 *
 * Threads. faiss parallelises inside one search with OpenMP. On a small
 * machine that only adds hand-offs (and spinning threads) to every query
 * while the worker pool already runs searches side by side, so callers
 * pin the OpenMP team of their thread with sophia_faiss_set_threads(1).
 * Building a graph is the exception: one add of many vectors (the index
 * at start, a background rebuild's chunks) is long and alone, and HNSW's
 * add is parallel over vertices, so sophia_faiss_add_parallel() gives
 * that one call a team and leaves the thread pinned again after it.
 */
#ifndef SOPHIA_FAISS_SHIM_H
#define SOPHIA_FAISS_SHIM_H

#include <faiss/c_api/Index_c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* on = 1: swaps plain Flat storage for the fast one (IDMap2,Flat and
 * IDMap2,HNSWxx,Flat; anything else is left as it is); on = 0 swaps it
 * back (benchmarks). 0, or a faiss error code. */
int sophia_faiss_accelerate(FaissIndex *index, int on);

/* 1 when the CPU path is AVX2+FMA, 0 for the portable loop. */
int sophia_faiss_simd(void);

/* HNSW construction/search breadth (values <= 0 are left unchanged); the
 * index may be wrapped in IDMap2. 0, or -1 when it is not HNSW. */
int sophia_faiss_hnsw_set(FaissIndex *index, int ef_construction,
                          int ef_search);

/* faiss_Index_search with HNSW's efSearch = ef for this call alone (the
 * index may be wrapped in IDMap/IDMap2); a plain search when the index is
 * not HNSW or ef <= 0. 0, or a faiss error code. */
int sophia_faiss_search_ef(const FaissIndex *index, idx_t n, const float *x,
                           idx_t k, float *distances, idx_t *labels, int ef);

/* Copies entries from..from+n-1 of an IDMap/IDMap2 index, in storage
 * order: n vectors into vecs (n * d floats) and their ids; an IDMap2
 * entry whose id was added again later gets id -1 (superseded). vecs NULL:
 * the ids alone. 0, or a faiss error code (not an IDMap, out of range). */
int sophia_faiss_copy(const FaissIndex *index, idx_t from, idx_t n,
                      float *vecs, idx_t *ids);

/* Adds one vector under `id`, as faiss_Index_add_with_ids does, in time
 * of its own: for an IDMap2 over HNSW the per-vertex locks and visited
 * table live in `a` (sophia_faiss_adder_new), not made anew for the whole
 * graph on each call. One adder per writer: callers hold the store's
 * write lock. Any other index takes faiss's add. 0, or a faiss error code. */
typedef struct sophia_faiss_adder sophia_faiss_adder;
sophia_faiss_adder *sophia_faiss_adder_new(void);
void sophia_faiss_adder_free(sophia_faiss_adder *a);
int sophia_faiss_add_one(FaissIndex *index, sophia_faiss_adder *a,
                         const float *x, idx_t id);

/* OpenMP threads for faiss calls made from the calling thread. */
void sophia_faiss_set_threads(int n);

/* faiss_Index_add_with_ids on an OpenMP team of `threads` (the calling
 * thread and threads - 1 of OpenMP's); the calling thread's team size is
 * restored after. 0, or a faiss error code. */
int sophia_faiss_add_parallel(FaissIndex *index, idx_t n, const float *x,
                              const idx_t *ids, int threads);

/* "MAJOR.MINOR.PATCH" of the faiss headers (and libfaiss.a) built with. */
const char *sophia_faiss_version(void);

#ifdef __cplusplus
}
#endif

#endif
