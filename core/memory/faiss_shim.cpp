/*
 * faiss C API shim: the few functions of faiss's C API that Sophia's memory
 * store calls, implemented over the faiss C++ library.
 *
 * Why it exists: Debian 12's libfaiss-dev ships the C API headers (under
 * <faiss/c_api/>) and libfaiss.a, but not the compiled C API (libfaiss_c).
 * Rather than vendor upstream's C API sources, we implement only what we
 * use, with the exact signatures those headers declare; including them here
 * lets the compiler check every definition against them.
 *
 * Conventions follow upstream's c_api: opaque handles are the C++ objects
 * reinterpret_cast'ed; every function that can fail returns 0 or a negative
 * FaissErrorCode and never lets an exception cross into C; the message of the
 * last failure is kept per thread for faiss_get_last_error(). The message is
 * copied into a fixed thread-local buffer, not a std::string, so recording an
 * error cannot itself throw or allocate, and nothing needs destroying at
 * thread exit.
 *
 * Below the upstream functions are Sophia's own (core/memory/faiss_shim.h says
 * why): FastFlat, an IndexFlat whose inner products use AVX2+FMA when the
 * CPU has them (Debian's libfaiss.a is built for baseline x86-64, so its
 * own are a scalar loop), swapped in under IDMap2/HNSW indexes; a copy of
 * stored vectors by position (background rebuilds); HNSW breadths; the
 * OpenMP team size per calling thread, and a bulk add on a team of its own;
 * one add into an HNSW graph in time of its own (sophia_faiss_add_one).
 *
 * Must be compiled with -DNDEBUG, as libfaiss.a was: faiss headers carry
 * inline and template code with assert() (utils/Heap.h, impl/ResultHandler.h)
 * which must compile identically here and in the library (one-definition
 * rule). core/CMakeLists.txt sets it for the sophia_faiss target; the #error
 * below keeps a stray build from silently differing.
 */
#ifndef NDEBUG
#error "faiss_shim.cpp must be built with -DNDEBUG, like libfaiss.a"
#endif

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <faiss/AutoTune.h>
#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/utils/Heap.h>

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <memory>
#include <vector>
#include <typeinfo>

#include "memory/faiss_shim.h"

namespace {

thread_local char last_error[1024];

void remember_error(const char *msg) noexcept
{
    std::snprintf(last_error, sizeof last_error, "%s", msg ? msg : "");
}

/* Runs body, turning any exception into the C API's error code. The
 * FaissException case comes first because it derives from std::exception. */
template <typename F> int guarded(F &&body) noexcept
{
    try {
        body();
        return OK;
    } catch (const faiss::FaissException &e) {
        remember_error(e.what());
        return FAISS_EXCEPT;
    } catch (const std::exception &e) {
        remember_error(e.what());
        return STD_EXCEPT;
    } catch (...) {
        remember_error("Unknown error");
        return UNKNOWN_EXCEPT;
    }
}

faiss::Index *cxx(FaissIndex *index)
{
    return reinterpret_cast<faiss::Index *>(index);
}

const faiss::Index *cxx(const FaissIndex *index)
{
    return reinterpret_cast<const faiss::Index *>(index);
}

FaissIndex *handle(faiss::Index *index)
{
    return reinterpret_cast<FaissIndex *>(index);
}

/* ------------------------------------------------ fast flat storage */

/* Four independent 8-lane accumulators: FMA latency is 4 cycles, so one
 * chain would leave most of the throughput idle. */
__attribute__((target("avx2,fma"))) float dot_avx2(const float *x,
                                                    const float *y, size_t d)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
    }
    for (; i + 8 <= d; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float r = _mm_cvtss_f32(h);
    for (; i < d; i++)
        r += x[i] * y[i];
    return r;
}

/* Eight independent sums, which the compiler can keep in SSE registers. */
float dot_portable(const float *x, const float *y, size_t d)
{
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= d; i += 8)
        for (int l = 0; l < 8; l++)
            a[l] += x[i + l] * y[i + l];
    float r = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < d; i++)
        r += x[i] * y[i];
    return r;
}

bool cpu_has_avx2()
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

float (*const dot)(const float *, const float *, size_t) =
    cpu_has_avx2() ? dot_avx2 : dot_portable;

/* Inner product against the stored vectors, as faiss's own FlatIPDis. */
struct FastIPDis : faiss::FlatCodesDistanceComputer {
    const float *xb;
    size_t d;
    const float *q = nullptr;

    FastIPDis(const faiss::IndexFlat &ix)
        : faiss::FlatCodesDistanceComputer(ix.codes.data(), ix.code_size),
          xb(ix.get_xb()), d(ix.d)
    {
    }
    void set_query(const float *x) override { q = x; }
    float distance_to_code(const uint8_t *code) override
    {
        return dot(q, reinterpret_cast<const float *>(code), d);
    }
    float symmetric_dis(idx_t i, idx_t j) override
    {
        return dot(xb + i * d, xb + j * d, d);
    }
};

/* An IndexFlat (so faiss serialises it as one) whose inner-product
 * distances and brute-force scan use `dot`. Other metrics, and searches
 * with parameters (an ID selector), take faiss's own path. */
struct FastFlat : faiss::IndexFlat {
    FastFlat(idx_t d, faiss::MetricType metric) : faiss::IndexFlat(d, metric) {}

    faiss::FlatCodesDistanceComputer *get_FlatCodesDistanceComputer() const override
    {
        if (metric_type != faiss::METRIC_INNER_PRODUCT)
            return faiss::IndexFlat::get_FlatCodesDistanceComputer();
        return new FastIPDis(*this);
    }

    void search(idx_t n, const float *x, idx_t k, float *distances,
                idx_t *labels, const faiss::SearchParameters *params) const override
    {
        if (metric_type != faiss::METRIC_INNER_PRODUCT || params) {
            faiss::IndexFlat::search(n, x, k, distances, labels, params);
            return;
        }
        using C = faiss::CMin<float, idx_t>;
        const float *xb = get_xb();
        for (idx_t q = 0; q < n; q++) {
            float *D = distances + q * k;
            idx_t *I = labels + q * k;
            const float *xq = x + q * d;
            faiss::heap_heapify<C>(k, D, I);
            for (idx_t j = 0; j < ntotal; j++) {
                float v = dot(xq, xb + j * d, d);
                if (C::cmp(D[0], v))
                    faiss::heap_replace_top<C>(k, D, I, v, j);
            }
            faiss::heap_reorder<C>(k, D, I);
        }
    }
};

/* A plain IndexFlat (exact type: subclasses may have their own ideas)
 * becomes a FastFlat holding the same vectors, or back (fast = false:
 * how the benchmark measures stock faiss on the same graph). */
faiss::Index *swap_flat(faiss::Index *ix, bool fast)
{
    bool plain = ix && (typeid(*ix) == typeid(faiss::IndexFlat) ||
                        typeid(*ix) == typeid(faiss::IndexFlatIP));
    bool is_fast = ix && typeid(*ix) == typeid(FastFlat);
    if (fast ? !plain : !is_fast)
        return nullptr;
    auto *old = static_cast<faiss::IndexFlat *>(ix);
    faiss::IndexFlat *f = fast ? new FastFlat(old->d, old->metric_type)
                               : new faiss::IndexFlat(old->d, old->metric_type);
    f->codes.swap(old->codes);
    f->ntotal = old->ntotal;
    f->verbose = old->verbose;
    return f;
}

faiss::IndexHNSW *hnsw_of(faiss::Index *ix)
{
    if (auto *map = dynamic_cast<faiss::IndexIDMap *>(ix))
        ix = map->index;
    return dynamic_cast<faiss::IndexHNSW *>(ix);
}

/* HNSW builds with distances where smaller is closer: an inner-product
 * storage's are negated, as faiss's own add does. */
struct NegatedDis : faiss::DistanceComputer {
    std::unique_ptr<faiss::DistanceComputer> base;
    explicit NegatedDis(faiss::DistanceComputer *b) : base(b) {}
    void set_query(const float *x) override { base->set_query(x); }
    float operator()(idx_t i) override { return -(*base)(i); }
    float symmetric_dis(idx_t i, idx_t j) override { return -base->symmetric_dis(i, j); }
};

} // namespace

/* What one add into an HNSW graph needs besides the graph, kept between
 * adds: a lock and a visited flag per vertex. faiss's own add makes both
 * anew for all ntotal vertices on every call, O(ntotal) for one vector:
 * at 1M memories, ~45% of a store's CPU. Grown by doubling. */
struct sophia_faiss_adder {
    std::vector<omp_lock_t> locks;
    std::unique_ptr<faiss::VisitedTable> vt;

    void reserve(size_t n)
    {
        if (locks.size() < n) {
            for (auto &l : locks)
                omp_destroy_lock(&l);
            locks.assign(std::max(n, 2 * locks.size()), omp_lock_t());
            for (auto &l : locks)
                omp_init_lock(&l);
        }
        if (!vt || vt->visited.size() < n)
            vt.reset(new faiss::VisitedTable((int)locks.size()));
    }
    ~sophia_faiss_adder()
    {
        for (auto &l : locks)
            omp_destroy_lock(&l);
    }
};

namespace {

/* IndexHNSW::add for one vector, with the adder's locks and table (as
 * faiss's hnsw_add_vertices does it for one point). */
void hnsw_add_one(faiss::IndexHNSW *h, sophia_faiss_adder *a, const float *x)
{
    idx_t n0 = h->ntotal;
    h->storage->add(1, x);
    h->ntotal = h->storage->ntotal;
    h->hnsw.prepare_level_tab(1, (idx_t)h->hnsw.levels.size() == h->ntotal);
    a->reserve((size_t)h->ntotal);
    faiss::DistanceComputer *raw = h->storage->get_distance_computer();
    std::unique_ptr<faiss::DistanceComputer> dis(
        h->storage->metric_type == faiss::METRIC_INNER_PRODUCT
            ? new NegatedDis(raw) : raw);
    dis->set_query(x);
    h->hnsw.add_with_locks(*dis, h->hnsw.levels[n0] - 1, (int)n0, a->locks, *a->vt);
}

} // namespace

extern "C" {

/* NULL until some call on this thread has failed, as upstream. */
const char *faiss_get_last_error()
{
    return last_error[0] ? last_error : nullptr;
}

int faiss_index_factory(FaissIndex **p_index, int d, const char *description,
                        FaissMetricType metric)
{
    return guarded([&] {
        *p_index = handle(faiss::index_factory(
            d, description, static_cast<faiss::MetricType>(metric)));
    });
}

void faiss_Index_free(FaissIndex *obj)
{
    delete cxx(obj);
}

int faiss_Index_d(const FaissIndex *obj)
{
    return cxx(obj)->d;
}

int faiss_Index_is_trained(const FaissIndex *obj)
{
    return cxx(obj)->is_trained;
}

idx_t faiss_Index_ntotal(const FaissIndex *obj)
{
    return cxx(obj)->ntotal;
}

int faiss_Index_train(FaissIndex *index, idx_t n, const float *x)
{
    return guarded([&] { cxx(index)->train(n, x); });
}

int faiss_Index_add(FaissIndex *index, idx_t n, const float *x)
{
    return guarded([&] { cxx(index)->add(n, x); });
}

int faiss_Index_add_with_ids(FaissIndex *index, idx_t n, const float *x,
                             const idx_t *xids)
{
    return guarded([&] { cxx(index)->add_with_ids(n, x, xids); });
}

int faiss_Index_search(const FaissIndex *index, idx_t n, const float *x,
                       idx_t k, float *distances, idx_t *labels)
{
    return guarded([&] { cxx(index)->search(n, x, k, distances, labels); });
}

int faiss_Index_reset(FaissIndex *index)
{
    return guarded([&] { cxx(index)->reset(); });
}

/* n_removed may be NULL, as upstream allows. */
int faiss_Index_remove_ids(FaissIndex *index, const FaissIDSelector *sel,
                           size_t *n_removed)
{
    return guarded([&] {
        size_t n = cxx(index)->remove_ids(
            *reinterpret_cast<const faiss::IDSelector *>(sel));
        if (n_removed)
            *n_removed = n;
    });
}

int faiss_IDSelectorBatch_new(FaissIDSelectorBatch **p_sel, size_t n,
                              const idx_t *indices)
{
    return guarded([&] {
        *p_sel = reinterpret_cast<FaissIDSelectorBatch *>(
            new faiss::IDSelectorBatch(n, indices));
    });
}

int faiss_IDSelectorRange_new(FaissIDSelectorRange **p_sel, idx_t imin,
                              idx_t imax)
{
    return guarded([&] {
        *p_sel = reinterpret_cast<FaissIDSelectorRange *>(
            new faiss::IDSelectorRange(imin, imax));
    });
}

/* Frees any selector: callers cast Batch/Range handles to FaissIDSelector,
 * and IDSelector's destructor is virtual. */
void faiss_IDSelector_free(FaissIDSelector *obj)
{
    delete reinterpret_cast<faiss::IDSelector *>(obj);
}

int faiss_write_index_fname(const FaissIndex *idx, const char *fname)
{
    return guarded([&] { faiss::write_index(cxx(idx), fname); });
}

int faiss_read_index_fname(const char *fname, int io_flags,
                           FaissIndex **p_out)
{
    return guarded(
        [&] { *p_out = handle(faiss::read_index(fname, io_flags)); });
}

int faiss_IndexFlatIP_new_with(FaissIndexFlatIP **p_index, idx_t d)
{
    return guarded([&] { *p_index = handle(new faiss::IndexFlatIP(d)); });
}

/* Like upstream, the map does not own the sub-index until
 * faiss_IndexIDMap2_set_own_fields(map, 1). */
int faiss_IndexIDMap2_new(FaissIndexIDMap2 **p_index, FaissIndex *index)
{
    return guarded(
        [&] { *p_index = handle(new faiss::IndexIDMap2(cxx(index))); });
}

int faiss_IndexIDMap2_own_fields(const FaissIndexIDMap2 *obj)
{
    return static_cast<const faiss::IndexIDMap2 *>(cxx(obj))->own_fields;
}

void faiss_IndexIDMap2_set_own_fields(FaissIndexIDMap2 *obj, int own)
{
    static_cast<faiss::IndexIDMap2 *>(cxx(obj))->own_fields = own != 0;
}

/* ParameterSpace: how the memory store sets HNSW's efSearch through the
 * IDMap2 wrapper (set_index_parameter descends into IndexIDMap). */
int faiss_ParameterSpace_new(FaissParameterSpace **space)
{
    return guarded([&] {
        *space = reinterpret_cast<FaissParameterSpace *>(
            new faiss::ParameterSpace());
    });
}

void faiss_ParameterSpace_free(FaissParameterSpace *space)
{
    delete reinterpret_cast<faiss::ParameterSpace *>(space);
}

int faiss_ParameterSpace_set_index_parameter(const FaissParameterSpace *space,
                                             FaissIndex *index,
                                             const char *name, double value)
{
    return guarded([&] {
        reinterpret_cast<const faiss::ParameterSpace *>(space)
            ->set_index_parameter(cxx(index), name, value);
    });
}

} // extern "C"

/* ------------------------------------------- Sophia's additions */

extern "C" {

int sophia_faiss_accelerate(FaissIndex *index, int on)
{
    return guarded([&] {
        faiss::Index *ix = cxx(index);
        auto *map = dynamic_cast<faiss::IndexIDMap *>(ix);
        if (map && map->own_fields) {
            if (faiss::Index *f = swap_flat(map->index, on != 0)) {
                delete map->index;
                map->index = f;
                return;
            }
        }
        faiss::IndexHNSW *h = hnsw_of(ix);
        if (h && h->own_fields) {
            if (faiss::Index *f = swap_flat(h->storage, on != 0)) {
                delete h->storage;
                h->storage = f;
            }
        }
    });
}

int sophia_faiss_simd(void)
{
    return dot == dot_avx2;
}

int sophia_faiss_hnsw_set(FaissIndex *index, int ef_construction, int ef_search)
{
    faiss::IndexHNSW *h = hnsw_of(cxx(index));
    if (!h)
        return -1;
    if (ef_construction > 0)
        h->hnsw.efConstruction = ef_construction;
    if (ef_search > 0)
        h->hnsw.efSearch = ef_search;
    return 0;
}

int sophia_faiss_search_ef(const FaissIndex *index, idx_t n, const float *x,
                           idx_t k, float *distances, idx_t *labels, int ef)
{
    return guarded([&] {
        const faiss::Index *ix = cxx(index);
        auto *map = dynamic_cast<const faiss::IndexIDMap *>(ix);
        auto *h = dynamic_cast<const faiss::IndexHNSW *>(map ? map->index : ix);
        if (!h || ef <= 0) {
            ix->search(n, x, k, distances, labels);
            return;
        }
        /* the breadth for this call only: hnsw.efSearch is shared by the
         * searches other workers run meanwhile */
        faiss::SearchParametersHNSW p;
        p.efSearch = ef;
        h->search(n, x, k, distances, labels, &p);
        for (idx_t i = 0; map && i < n * k; i++)
            if (labels[i] >= 0)
                labels[i] = map->id_map[labels[i]]; /* as IndexIDMap::search */
    });
}

int sophia_faiss_copy(const FaissIndex *index, idx_t from, idx_t n,
                      float *vecs, idx_t *ids)
{
    return guarded([&] {
        auto *map = dynamic_cast<const faiss::IndexIDMap *>(cxx(index));
        if (!map || from < 0 || n < 0 || from + n > map->ntotal)
            throw faiss::FaissException("sophia_faiss_copy: not an IDMap or out of range");
        if (n && vecs)
            map->index->reconstruct_n(from, n, vecs);
        for (idx_t i = 0; i < n; i++)
            ids[i] = map->id_map[from + i];
        /* IDMap2: an id added again maps to its newest entry; an older
         * one is superseded (-1). */
        auto *map2 = dynamic_cast<const faiss::IndexIDMap2 *>(map);
        for (idx_t i = 0; map2 && i < n; i++) {
            auto it = map2->rev_map.find(ids[i]);
            if (it != map2->rev_map.end() && it->second != from + i)
                ids[i] = -1;
        }
    });
}

sophia_faiss_adder *sophia_faiss_adder_new(void)
{
    return new (std::nothrow) sophia_faiss_adder();
}

void sophia_faiss_adder_free(sophia_faiss_adder *a)
{
    delete a;
}

int sophia_faiss_add_one(FaissIndex *index, sophia_faiss_adder *a,
                         const float *x, idx_t id)
{
    return guarded([&] {
        auto *map2 = dynamic_cast<faiss::IndexIDMap2 *>(cxx(index));
        faiss::IndexHNSW *h = map2 ? hnsw_of(map2) : nullptr;
        if (!a || !h || !h->storage) {
            cxx(index)->add_with_ids(1, x, &id);
            return;
        }
        hnsw_add_one(h, a, x);
        map2->id_map.push_back(id);
        map2->rev_map[id] = map2->ntotal;
        map2->ntotal = h->ntotal;
    });
}

void sophia_faiss_set_threads(int n)
{
    omp_set_num_threads(n > 0 ? n : 1);
}

/* The team size is an ICV of the calling thread alone: raising it here
 * leaves the other workers pinned, and restoring it leaves this one as
 * it was. HNSW's add is parallel over the vertices of each level, each
 * OpenMP thread with a distance computer of its own (FastIPDis holds only
 * pointers to the storage and its own query). */
int sophia_faiss_add_parallel(FaissIndex *index, idx_t n, const float *x,
                              const idx_t *ids, int threads)
{
    int before = omp_get_max_threads();
    omp_set_num_threads(threads > 0 ? threads : 1);
    int rc = guarded([&] { cxx(index)->add_with_ids(n, x, ids); });
    omp_set_num_threads(before);
    return rc;
}

const char *sophia_faiss_version(void)
{
#define SOPHIA_STR2(x) #x
#define SOPHIA_STR(x) SOPHIA_STR2(x)
    return SOPHIA_STR(FAISS_VERSION_MAJOR) "." SOPHIA_STR(FAISS_VERSION_MINOR) "." SOPHIA_STR(FAISS_VERSION_PATCH);
}

} // extern "C"
