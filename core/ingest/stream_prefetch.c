/*
 * stream_prefetch - see stream_prefetch.h.
 *
 * One event at a time is prepared: the head's. Its context is kept with
 * a reference to its body and the instance it was prepared for, and handed
 * out only to that same event on that same instance; anything else (the
 * head changed because failed flights went back before it, a reload
 * swapped the processor) drops it and prepares anew, so process() never
 * runs on answers read for another event or another instance.
 */
#include "ingest/stream_prefetch.h"

#include <jansson.h>
#include <stdlib.h>

#include "host/host.h"
#include "host/prefetch.h"

struct sophia_stream_prefetch {
    json_t *body;            /* the event prepared (a reference), or NULL */
    sophia_instance *inst;   /* the processor it was prepared for */
    sophia_ctx *ctx;         /* its context: reads out, or answered */
    int waiting;             /* reads out */
    int rc;                  /* their outcome once answered */
    void (*ready)(void *arg);
    void *arg;
};

static void held_drop(sophia_stream_prefetch *p)
{
    sophia_ctx_free(p->ctx); /* cancels reads still out */
    json_decref(p->body);
    p->ctx = NULL;
    p->body = NULL;
    p->inst = NULL;
    p->waiting = 0;
    p->rc = 0;
}

void sophia_stream_prefetch_free(sophia_stream_prefetch *p)
{
    if (!p)
        return;
    held_drop(p);
    free(p);
}

int sophia_stream_prefetch_waiting(const sophia_stream_prefetch *p)
{
    return p && p->waiting;
}

static void on_answered(void *arg, int rc)
{
    sophia_stream_prefetch *p = arg;
    p->waiting = 0;
    p->rc = rc;
    p->ready(p->arg);
}

/* The held context (prepared for this event and instance): 1 while its
 * reads are out, else its outcome, with *out set on success. */
static int take_held(sophia_stream_prefetch *p, sophia_ctx **out)
{
    if (p->waiting)
        return 1;
    int rc = p->rc;
    if (!rc) {
        *out = p->ctx;
        p->ctx = NULL;
    }
    held_drop(p);
    return rc;
}

int sophia_stream_prefetch_ctx(sophia_stream_prefetch **pp,
                               sophia_instance *inst, const char *stream,
                               const sophia_event *ev,
                               void (*ready)(void *arg), void *arg,
                               sophia_ctx **out)
{
    *out = NULL;
    if (!sophia_prefetch_wanted(inst)) {
        *out = sophia_ctx_new(inst, stream);
        return 0;
    }
    if (!*pp && !(*pp = calloc(1, sizeof(**pp))))
        return SOPHIA_ENOMEM;
    sophia_stream_prefetch *p = *pp;
    if (p->ctx && p->body == (const json_t *)ev->body && p->inst == inst)
        return take_held(p, out);
    held_drop(p); /* prepared for another event or instance */
    sophia_ctx *ctx = sophia_ctx_new(inst, stream);
    if (!ctx)
        return SOPHIA_ENOMEM;
    p->ready = ready;
    p->arg = arg;
    int rc = sophia_prefetch_run(inst, ctx, ev, on_answered, p);
    if (rc == 1) { /* answered inside the call: no wait */
        *out = ctx;
        return 0;
    }
    if (rc < 0) {
        sophia_ctx_free(ctx);
        return rc;
    }
    p->body = json_incref((json_t *)ev->body);
    p->inst = inst;
    p->ctx = ctx;
    p->waiting = 1;
    return 1;
}
