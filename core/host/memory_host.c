/*
 * memory_host - the memory entries of the plugin host table (sdk.h
 * memory_*): actions a callback queues in its sophia_ctx, and the
 * asynchronous search.
 *
 * The context keeps one pointer for us (sophia_ctx_memory_slot) to a
 * mem_ctx: a JSON array of queued operations and, during a consolidator
 * run, the batch of memories it may look at. JSON keeps the queue simple
 * to copy, print and free; the volumes are a handful per callback.
 *
 * A store is one effect of the event's apply (host.h): it counts as
 * durable when memory.c reports its row committed in PostgreSQL.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "host/host.h"
#include "host/host_priv.h"
#include "lib/log.h"
#include "memory/memory.h"

#define J(v) ((json_t *)(v))

typedef struct mem_ctx {
    json_t *ops;   /* [{op:...}] */
    json_t *batch; /* borrowed; consolidators only */
} mem_ctx;

static mem_ctx *get(sophia_ctx *ctx, int create)
{
    void **slot = sophia_ctx_memory_slot(ctx);
    if (!slot)
        return NULL;
    if (!*slot && create) {
        mem_ctx *mc = calloc(1, sizeof(*mc));
        if (mc && !(mc->ops = json_array())) {
            free(mc);
            mc = NULL;
        }
        *slot = mc;
    }
    return *slot;
}

static int push(sophia_ctx *ctx, json_t *op)
{
    mem_ctx *mc = get(ctx, 1);
    if (!mc || !op) {
        json_decref(op);
        return SOPHIA_ENOMEM;
    }
    return json_array_append_new(mc->ops, op) ? SOPHIA_ENOMEM : 0;
}

int sophia_memory_host_store(sophia_ctx *ctx, const char *content,
                             const char *memory_type, sophia_json *context,
                             double importance)
{
    json_t *c = context ? J(context) : json_object();
    json_t *s = content ? json_string(content) : NULL;
    json_t *t = memory_type ? json_string(memory_type) : NULL;
    json_t *imp = importance >= 0 ? json_real(importance) : NULL;
    sophia_memory *m = sophia_host_ctx_env(ctx)->memory;
    char why[160];
    const char *bad = !m ? "memory store disabled"
                         : sophia_memory_check(m, s, t, c, imp, why, sizeof(why));
    int rc = bad ? SOPHIA_EINVAL : 0;
    if (!bad)
        rc = push(ctx, json_pack("{s:s,s:o,s:s,s:O,s:f}", "op", "store", "content",
                                 s, "memory_type", memory_type ? memory_type : "fact",
                                 "context", c, "importance",
                                 importance >= 0 ? importance : -1.0));
    else
        json_decref(s);
    json_decref(t);
    json_decref(imp);
    json_decref(c);
    return rc;
}

typedef struct search_call {
    void (*cb)(void *arg, int rc, const sophia_json *results);
    void *arg;
    sophia_host_rt *rt;
} search_call;

static void on_search(void *arg, const json_t *results, int err,
                      const char *msg)
{
    search_call *sc = arg;
    (void)msg;
    sophia_host_rt *rt = sc->rt;
    sc->cb(sc->arg, err, (const sophia_json *)results);
    free(sc);
    sophia_host_callback_end(rt);
}

int sophia_memory_host_search_rt(sophia_host_rt *rt, const char *query,
                                 const sophia_json *filter, size_t k,
                                 void (*cb)(void *arg, int rc,
                                            const sophia_json *results),
                                 void *arg)
{
    sophia_memory *m = rt ? rt->env.memory : NULL;
    if (!m)
        return SOPHIA_EUNAVAIL;
    if (!cb || !query || (filter && !json_is_object(J(filter))))
        return SOPHIA_EINVAL;
    search_call *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return SOPHIA_ENOMEM;
    *sc = (search_call){cb, arg, rt};
    sophia_host_callback_begin(rt); /* see host.h: reloads wait for it */
    int rc = sophia_memory_search(m, query, k, J(filter),
                                  on_search, sc);
    if (rc) {
        free(sc);
        sophia_host_callback_end(rt);
    }
    return rc;
}

/* SDK 1.0's memory_search names no instance (host.c: sdk10_rt). */
int sophia_memory_host_search(const char *query, const sophia_json *filter,
                              size_t k,
                              void (*cb)(void *arg, int rc,
                                         const sophia_json *results),
                              void *arg)
{
    return sophia_memory_host_search_rt(sophia_host_sdk10_rt(), query, filter,
                                        k, cb, arg);
}

const sophia_json *sophia_memory_host_batch(sophia_ctx *ctx)
{
    mem_ctx *mc = get(ctx, 0);
    return mc ? (const sophia_json *)mc->batch : NULL;
}

int sophia_memory_host_merge(sophia_ctx *ctx, int64_t keep_id, int64_t drop_id)
{
    if (keep_id <= 0 || drop_id <= 0 || keep_id == drop_id)
        return SOPHIA_EINVAL;
    return push(ctx, json_pack("{s:s,s:I,s:I}", "op", "merge", "keep",
                               (json_int_t)keep_id, "drop", (json_int_t)drop_id));
}

int sophia_memory_host_expire(sophia_ctx *ctx, int64_t id)
{
    if (id <= 0)
        return SOPHIA_EINVAL;
    return push(ctx, json_pack("{s:s,s:I}", "op", "expire", "id", (json_int_t)id));
}

int sophia_memory_host_set_importance(sophia_ctx *ctx, int64_t id,
                                      double importance)
{
    if (id <= 0 || !(importance >= 0 && importance <= 1))
        return SOPHIA_EINVAL;
    return push(ctx, json_pack("{s:s,s:I,s:f}", "op", "importance", "id",
                               (json_int_t)id, "importance", importance));
}

void sophia_memory_ctx_set_batch(sophia_ctx *ctx, json_t *batch)
{
    mem_ctx *mc = get(ctx, 1);
    if (mc)
        mc->batch = batch;
}

json_t *sophia_memory_ctx_take_ops(sophia_ctx *ctx)
{
    mem_ctx *mc = get(ctx, 0);
    json_t *out = json_array(), *keep = json_array();
    size_t i;
    json_t *op;
    json_array_foreach(mc ? mc->ops : NULL, i, op) {
        const char *kind = json_string_value(json_object_get(op, "op"));
        json_array_append(strcmp(kind, "store") ? out : keep, op);
    }
    if (mc) {
        json_decref(mc->ops);
        mc->ops = keep;
    } else {
        json_decref(keep);
    }
    return out;
}

/* A store is done (durable) when memory.c reports its row committed. */
static void on_stored(void *arg, int64_t id, int err, const char *msg)
{
    (void)id;
    if (err)
        sophia_warn("memory", "msg=\"plugin memory not stored\" error=\"%s\"",
                    msg ? msg : "?");
    sophia_apply_end(arg, err);
}

void sophia_memory_ctx_apply(sophia_ctx *ctx, sophia_apply *ap)
{
    mem_ctx *mc = get(ctx, 0);
    sophia_memory *m = sophia_host_ctx_env(ctx)->memory;
    size_t i;
    json_t *op;
    if (!mc || !m)
        return;
    json_array_foreach(mc->ops, i, op) {
        if (strcmp(json_string_value(json_object_get(op, "op")), "store"))
            continue; /* merges/expiries outside a consolidator run: ignored */
        json_t *imp = json_object_get(op, "importance");
        sophia_apply_begin(ap);
        /* A refusal now (memory.c calls no callback then) ends it here. */
        int rc = sophia_memory_store(
            m, json_string_value(json_object_get(op, "content")),
            json_string_value(json_object_get(op, "memory_type")),
            json_object_get(op, "context"), json_number_value(imp),
            on_stored, ap);
        if (rc)
            sophia_apply_end(ap, rc);
    }
}

void sophia_memory_ctx_free(sophia_ctx *ctx)
{
    void **slot = sophia_ctx_memory_slot(ctx);
    mem_ctx *mc = slot ? *slot : NULL;
    if (!mc)
        return;
    json_decref(mc->ops);
    free(mc);
    *slot = NULL;
}
