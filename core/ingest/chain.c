/*
 * chain - see chain.h.
 */
#include "ingest/chain.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/filter.h"
#include "lib/log.h"

/* Events one link may pass on for one event: a processor that emits in a
 * loop must not turn one event into an unbounded run. */
#define CHAIN_MAX_EVENTS 1024

typedef struct chain_link {
    sophia_instance *inst; /* NULL for a filter link */
    sophia_filter *filter;
} chain_link;

struct sophia_chain {
    chain_link *v;
    size_t n;
    size_t first; /* the first processor link */
};

int sophia_chain_has(const sophia_chain *ch, const sophia_instance *inst)
{
    for (size_t i = 0; ch && i < ch->n; i++)
        if (ch->v[i].inst == inst)
            return 1;
    return 0;
}

/* Borrowed events, the input or output of one link: most links take
 * and pass on one event, so a few fit inline (two reallocs and frees an
 * event otherwise). */
typedef struct evlist {
    const json_t **v; /* local, or malloc'd past it */
    size_t n, cap;
    const json_t *local[4];
} evlist;

static void evlist_init(evlist *l)
{
    l->v = l->local;
    l->n = 0;
    l->cap = sizeof(l->local) / sizeof(l->local[0]);
}

static void evlist_free(evlist *l)
{
    if (l->v != l->local)
        free(l->v);
}

static int evlist_push(evlist *l, const json_t *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap * 2;
        const json_t **v = malloc(cap * sizeof(*v));
        if (!v)
            return -1;
        memcpy(v, l->v, l->n * sizeof(*v));
        evlist_free(l);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = e;
    return 0;
}

static int link_set(chain_link *l, const sophia_conf_link *cl,
                    const sophia_plugin_set *plugins, char *why, size_t n)
{
    if (!cl->processor) {
        const char *err = NULL;
        l->filter = sophia_filter_new(cl->filter, cl->nfilter, &err);
        if (err)
            snprintf(why, n, "filter: %s", err);
        return err || !l->filter ? -1 : 0;
    }
    l->inst = sophia_plugin_set_find(plugins, cl->processor);
    if (!l->inst || l->inst->desc->kind != SOPHIA_KIND_PROCESSOR) {
        snprintf(why, n, "'%s' is not a loaded processor instance",
                 cl->processor);
        return -1;
    }
    return 0;
}

sophia_chain *sophia_chain_new(const sophia_conf_stream *cs,
                               const sophia_plugin_set *plugins, char *why,
                               size_t whylen)
{
    /* A model built in code may name only its processor. */
    sophia_conf_link only = {.processor = cs->processor};
    const sophia_conf_link *links = cs->nchain ? cs->chain : &only;
    size_t n = cs->nchain ? cs->nchain : 1;
    sophia_chain *ch = calloc(1, sizeof(*ch));
    if (!ch || !(ch->v = calloc(n, sizeof(*ch->v)))) {
        free(ch);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    ch->n = n;
    ch->first = n;
    for (size_t i = 0; i < n; i++) {
        if (link_set(&ch->v[i], &links[i], plugins, why, whylen) < 0) {
            sophia_chain_free(ch);
            return NULL;
        }
        if (ch->v[i].inst && ch->first == n)
            ch->first = i;
    }
    if (ch->first == n) {
        snprintf(why, whylen, "the chain has no processor");
        sophia_chain_free(ch);
        return NULL;
    }
    return ch;
}

void sophia_chain_free(sophia_chain *ch)
{
    if (!ch)
        return;
    for (size_t i = 0; i < ch->n; i++)
        sophia_filter_free(ch->v[i].filter);
    free(ch->v);
    free(ch);
}

sophia_instance *sophia_chain_first(const sophia_chain *ch)
{
    return ch->v[ch->first].inst;
}

int sophia_chain_replaced(const sophia_chain *ch,
                          const sophia_plugin_set *plugins)
{
    for (size_t i = 0; i < ch->n; i++)
        if (ch->v[i].inst &&
            sophia_plugin_set_find(plugins, ch->v[i].inst->name) != ch->v[i].inst)
            return 1;
    return 0;
}

/* ------------------------------------------------------------- runs */

static int run_push(sophia_chain_run *run, sophia_ctx *ctx)
{
    if (!run->n) {
        run->one = ctx;
        run->n = 1;
        return 0;
    }
    sophia_ctx **v = realloc(run->ctx, (run->n + 1) * sizeof(*v));
    if (!v)
        return -1;
    if (run->n == 1)
        v[0] = run->one;
    v[run->n++] = ctx;
    run->ctx = v;
    return 0;
}

sophia_ctx *sophia_chain_run_ctx(const sophia_chain_run *run, size_t i)
{
    return run->n == 1 ? run->one : run->ctx[i];
}

json_t *const *sophia_chain_run_left(const sophia_chain_run *run)
{
    return run->nleft > 1 ? run->left : &run->left_one;
}

/* Keeps a reference to each event of `in`, what left the chain. */
static int keep_left(sophia_chain_run *run, const evlist *in)
{
    if (in->n > 1 && !(run->left = malloc(in->n * sizeof(*run->left))))
        return -1;
    json_t **v = in->n > 1 ? run->left : &run->left_one;
    for (size_t i = 0; i < in->n; i++)
        v[i] = json_incref((json_t *)(uintptr_t)in->v[i]);
    run->nleft = in->n;
    return 0;
}

void sophia_chain_run_free(sophia_chain_run *run)
{
    for (size_t i = run->n; i-- > 0;)
        sophia_ctx_free(sophia_chain_run_ctx(run, i));
    json_t *const *left = sophia_chain_run_left(run);
    for (size_t i = 0; i < run->nleft; i++)
        json_decref(left[i]);
    free(run->ctx);
    free(run->left);
    memset(run, 0, sizeof(*run));
}

/* What an OK context hands the next link: what it emitted, else the
 * event it processed. -1 past CHAIN_MAX_EVENTS or out of memory. */
static int pass_on(const sophia_ctx *ctx, const json_t *in, evlist *out)
{
    size_t cursor = 0, n = 0;
    const json_t *e;
    while ((e = (const json_t *)sophia_ctx_emitted(ctx, &cursor))) {
        if (++n > CHAIN_MAX_EVENTS || evlist_push(out, e) < 0)
            return -1;
    }
    return n ? 0 : evlist_push(out, in);
}

/* One processor link over its input events. `first`: a context made for
 * this link's first event, taken (set to NULL) when used. */
static sophia_verdict run_link(const chain_link *l, const char *stream,
                               const sophia_event *orig, const evlist *in,
                               sophia_ctx **first, sophia_chain_run *run,
                               evlist *out)
{
    for (size_t i = 0; i < in->n; i++) {
        sophia_event ev = *orig;
        ev.body = (const sophia_json *)in->v[i];
        sophia_ctx *ctx = *first ? *first : sophia_ctx_new(l->inst, stream);
        *first = NULL;
        if (!ctx)
            return SOPHIA_PROCESS_RETRY; /* out of memory: again later */
        sophia_verdict v = sophia_ctx_process(ctx, &ev);
        if (v != SOPHIA_PROCESS_OK) {
            sophia_ctx_free(ctx);
            if (v == SOPHIA_PROCESS_DROP)
                continue;
            return v;
        }
        if (run_push(run, ctx) < 0) {
            sophia_ctx_free(ctx);
            return SOPHIA_PROCESS_RETRY;
        }
        if (pass_on(ctx, in->v[i], out) < 0) {
            sophia_warn("stream", "msg=\"chain link emitted too many events\" "
                        "stream=%s instance=%s max=%d", stream, l->inst->name,
                        CHAIN_MAX_EVENTS);
            return SOPHIA_PROCESS_ERROR;
        }
    }
    return SOPHIA_PROCESS_OK;
}

sophia_verdict sophia_chain_process(const sophia_chain *ch, const char *stream,
                                    const sophia_event *ev, sophia_ctx *first,
                                    sophia_chain_run *run)
{
    memset(run, 0, sizeof(*run));
    evlist a, b, *in = &a, *out = &b;
    evlist_init(&a);
    evlist_init(&b);
    sophia_verdict v = evlist_push(in, (const json_t *)ev->body) < 0
                           ? SOPHIA_PROCESS_RETRY : SOPHIA_PROCESS_OK;
    int filtered = 0;
    for (size_t k = 0; k < ch->n && in->n && v == SOPHIA_PROCESS_OK; k++) {
        const chain_link *l = &ch->v[k];
        out->n = 0;
        if (l->filter) {
            for (size_t i = 0; i < in->n && v == SOPHIA_PROCESS_OK; i++)
                if (sophia_filter_match(l->filter, in->v[i]) &&
                    evlist_push(out, in->v[i]) < 0)
                    v = SOPHIA_PROCESS_RETRY;
            filtered = !out->n;
        } else {
            sophia_ctx *none = NULL;
            v = run_link(l, stream, ev, in, k == ch->first ? &first : &none,
                         run, out);
            filtered = 0;
        }
        evlist *t = in;
        in = out;
        out = t;
    }
    if (v == SOPHIA_PROCESS_OK && run->n && keep_left(run, in) < 0)
        v = SOPHIA_PROCESS_RETRY; /* out of memory: again later */
    evlist_free(&a);
    evlist_free(&b);
    sophia_ctx_free(first); /* not reached: a filter before it took the event */
    if (v != SOPHIA_PROCESS_OK) {
        sophia_chain_run_free(run);
        return v;
    }
    if (!run->n) {
        run->filtered = filtered;
        return SOPHIA_PROCESS_DROP;
    }
    return SOPHIA_PROCESS_OK;
}
