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
#include <faiss/IndexIDMap.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <cstdio>
#include <exception>

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
