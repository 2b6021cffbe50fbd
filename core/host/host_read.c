/*
 * host_read - host->cache_get_ex / memory_search_ex (SDK 1.1): the
 * asynchronous reads of 1.0, owned by the instance that asked.
 *
 * A 1.0 read's callback is plugin code the host must still call when the
 * answer comes, so a reload keeps every retired instance loaded until no
 * read is pending (reload.c). An owned read is recorded with its
 * instance instead, and sophia_host_release() (before the instance's fini,
 * and when a reload retires it) cancels it: when the answer comes, the
 * host drops it without calling into the plugin. The read itself is the
 * 1.0 one, wrapped: the tiers and the memory store are asked exactly as
 * before, and the answer is borrowed for the callback as before.
 *
 * Pending reads are few (one per event being processed, at most), so
 * they are one list, in the runtime of the instance that asked.
 */
#include "host/host.h"
#include "host/host_priv.h"

#include <stdlib.h>


typedef struct owned_read {
    struct owned_read *next, **pprev;
    sophia_instance *inst; /* NULL once cancelled */
    void (*cb)(void *arg, int rc, const sophia_json *value);
    void *arg;
} owned_read;

static owned_read *read_new(sophia_host_rt *rt, sophia_instance *inst,
                            void (*cb)(void *, int, const sophia_json *),
                            void *arg)
{
    owned_read *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->inst = inst;
    r->cb = cb;
    r->arg = arg;
    r->next = rt->reads;
    r->pprev = &rt->reads;
    if (rt->reads)
        rt->reads->pprev = &r->next;
    rt->reads = r;
    inst->release = sophia_host_release;
    return r;
}

static void read_free(owned_read *r)
{
    *r->pprev = r->next;
    if (r->next)
        r->next->pprev = r->pprev;
    free(r);
}

/* The 1.0 read's callback: hands the answer on unless cancelled. */
static void on_answer(void *arg, int rc, const sophia_json *value)
{
    owned_read *r = arg;
    if (r->inst)
        r->cb(r->arg, rc, value);
    read_free(r);
}

int sophia_host_cache_get_ex(sophia_self *self, const char *key,
                             void (*cb)(void *arg, int rc,
                                        const sophia_json *value),
                             void *arg)
{
    sophia_host_rt *rt = sophia_host_rt_of(self);
    if (!self || !key || !cb)
        return SOPHIA_EINVAL;
    if (!rt)
        return SOPHIA_EUNAVAIL;
    owned_read *r = read_new(rt, self, cb, arg);
    if (!r)
        return SOPHIA_ENOMEM;
    int rc = sophia_host_rt_cache_get(rt, key, on_answer, r);
    if (rc) /* cb not called, on_answer neither: r is still ours */
        read_free(r);
    return rc;
}

int sophia_host_memory_search_ex(sophia_self *self, const char *query,
                                 const sophia_json *filter, size_t k,
                                 void (*cb)(void *arg, int rc,
                                            const sophia_json *results),
                                 void *arg)
{
    sophia_host_rt *rt = sophia_host_rt_of(self);
    if (!self || !cb)
        return SOPHIA_EINVAL;
    if (!rt)
        return SOPHIA_EUNAVAIL;
    owned_read *r = read_new(rt, self, cb, arg);
    if (!r)
        return SOPHIA_ENOMEM;
    int rc = sophia_memory_host_search_rt(rt, query, filter, k, on_answer, r);
    if (rc)
        read_free(r);
    return rc;
}

size_t sophia_host_reads_pending(const sophia_host_rt *rt,
                                 const sophia_instance *inst)
{
    size_t n = 0;
    for (const owned_read *r = rt ? rt->reads : NULL; r; r = r->next)
        n += r->inst && (!inst || r->inst == inst);
    return n;
}

void sophia_host_reads_release(sophia_instance *inst)
{
    sophia_host_rt *rt = sophia_host_rt_of(inst);
    for (owned_read *r = rt ? rt->reads : NULL; r; r = r->next)
        if (r->inst == inst)
            r->inst = NULL; /* freed when its answer comes */
}
