/*
 * consolidate_run - see consolidate_run.h. Kept apart from host.c: it is
 * the one place memory's consolidation meets the action context, and the
 * only code memory needs from the host.
 */
#include "host/consolidate_run.h"

#include <sophia/sdk.h>

#include "host/host.h"
#include "memory/memory.h"

int sophia_host_consolidate_run(void *arg, sophia_instance *in, json_t *batch,
                                json_t **ops)
{
    (void)arg;
    *ops = NULL;
    sophia_ctx *ctx = sophia_ctx_new(in, NULL);
    if (!ctx)
        return SOPHIA_ENOMEM;
    sophia_memory_ctx_set_batch(ctx, batch);
    sophia_ctx_enter(ctx);
    int rc = in->desc->consolidator->run(in->state, ctx);
    sophia_ctx_leave(ctx);
    sophia_memory_ctx_set_batch(ctx, NULL);
    *ops = sophia_memory_ctx_take_ops(ctx);
    if (rc == 0) /* its other actions (publish, alerts...), then its state */
        sophia_ctx_apply_detached(ctx);
    else
        sophia_ctx_free(ctx);
    return rc;
}
