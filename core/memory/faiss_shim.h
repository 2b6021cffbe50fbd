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

/* Copies entries from..from+n-1 of an IDMap/IDMap2 index, in storage
 * order: n vectors into vecs (n * d floats) and their ids; an IDMap2
 * entry whose id was added again later gets id -1 (superseded). 0, or a
 * faiss error code (not an IDMap, out of range). */
int sophia_faiss_copy(const FaissIndex *index, idx_t from, idx_t n,
                      float *vecs, idx_t *ids);

/* OpenMP threads for faiss calls made from the calling thread. */
void sophia_faiss_set_threads(int n);

/* "MAJOR.MINOR.PATCH" of the faiss headers (and libfaiss.a) built with. */
const char *sophia_faiss_version(void);

#ifdef __cplusplus
}
#endif

#endif
