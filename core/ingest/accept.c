/*
 * accept - see accept.h.
 *
 * A memory stream answers at once; a durable one once EXEC answered (an
 * append record carries the caller's callback across the round trip).
 */
#include "ingest/accept.h"

#include <stdlib.h>

#include <sophia/sdk.h>

#include "ingest/durable.h"
#include "ingest/stream.h"

#define ACCEPT_RETRY_AFTER_S 1

typedef struct pending {
    sophia_durable *d;
    sophia_accept_verdict v;
    sophia_accept_fn done;
    void *arg;
} pending;

static sophia_accept_outcome outcome_of(int rc)
{
    switch (rc) {
    case 0:
        return SOPHIA_ACCEPTED;
    case SOPHIA_EBUSY:
        return SOPHIA_REFUSED_FULL;
    case SOPHIA_ENOMEM:
        return SOPHIA_REFUSED_NOMEM;
    default:
        return SOPHIA_REFUSED_UNAVAILABLE;
    }
}

static void on_appended(void *arg, int rc)
{
    pending *p = arg;
    p->v.outcome = outcome_of(rc);
    p->done(p->arg, &p->v);
    free(p);
}

/* The durable path; `v` already names the stream. */
static void append(sophia_durable *d, json_t *const *events, const char *body,
                   const sophia_ingest_span *spans, sophia_accept_verdict *v,
                   sophia_accept_fn done, void *arg)
{
    v->retry_after_s = ACCEPT_RETRY_AFTER_S;
    if (!d) { /* never a silent fall back to memory */
        v->outcome = SOPHIA_REFUSED_NOT_STARTED;
        done(arg, v);
        return;
    }
    v->key = sophia_durable_stream_key(d);
    if (v->n == 0) { /* nothing to make durable */
        done(arg, v);
        return;
    }
    pending *p = malloc(sizeof(*p));
    int rc = SOPHIA_ENOMEM;
    if (p) {
        *p = (pending){d, *v, done, arg};
        rc = sophia_durable_append(d, events, v->n, body, spans,
                                   on_appended, p);
    }
    if (rc) {
        free(p);
        v->outcome = outcome_of(rc);
        done(arg, v);
    }
}

void sophia_accept(sophia_stream *st, json_t *events, const char *source,
                   sophia_accept_fn done, void *arg)
{
    sophia_accept_body(st, events, NULL, NULL, source, done, arg);
}

void sophia_accept_body(sophia_stream *st, json_t *events, const char *body,
                        const sophia_ingest_span *spans, const char *source,
                        sophia_accept_fn done, void *arg)
{
    size_t n = json_array_size(events);
    sophia_accept_verdict v = {.n = n, .stream = sophia_stream_name(st)};
    json_t **ev = malloc((n ? n : 1) * sizeof(*ev));
    for (size_t i = 0; ev && i < n; i++)
        ev[i] = json_array_get(events, i);
    sophia_durable *d;
    if ((v.durable = sophia_stream_durable(st, &d))) {
        v.retry_after_s = ACCEPT_RETRY_AFTER_S;
        if (ev) {
            append(d, ev, body, spans, &v, done, arg);
        } else {
            v.outcome = SOPHIA_REFUSED_NOMEM;
            done(arg, &v);
        }
        free(ev);
        return;
    }
    int rc = ev ? sophia_stream_accept(st, ev, n, source) : SOPHIA_ENOMEM;
    free(ev);
    v.outcome = outcome_of(rc);
    v.retry_after_s = rc == SOPHIA_EBUSY ? ACCEPT_RETRY_AFTER_S : 0;
    done(arg, &v);
}

void sophia_accept_one(sophia_stream *st, json_t *ev, const char *source,
                       const char *id, sophia_accept_fn done, void *arg)
{
    sophia_accept_verdict v = {.n = 1, .stream = sophia_stream_name(st)};
    sophia_durable *d;
    if ((v.durable = sophia_stream_durable(st, &d))) {
        append(d, &ev, NULL, NULL, &v, done, arg);
        return;
    }
    if (sophia_stream_accept_one(st, ev, source, id, NULL, NULL)) {
        v.outcome = SOPHIA_REFUSED_FULL;
        v.retry_after_s = ACCEPT_RETRY_AFTER_S;
    }
    done(arg, &v);
}

int sophia_accept_has_room(sophia_stream *st, sophia_accept_verdict *v)
{
    *v = (sophia_accept_verdict){.stream = sophia_stream_name(st),
                                 .retry_after_s = ACCEPT_RETRY_AFTER_S};
    sophia_durable *d;
    int rc;
    if ((v->durable = sophia_stream_durable(st, &d))) {
        if (!d) {
            v->outcome = SOPHIA_REFUSED_NOT_STARTED;
            return 0;
        }
        v->key = sophia_durable_stream_key(d);
        rc = sophia_durable_check(d, 1);
    } else {
        rc = sophia_stream_room(st) > 0 ? 0 : SOPHIA_EBUSY;
    }
    v->outcome = outcome_of(rc);
    if (rc)
        sophia_stream_count_refused_early(st);
    return rc == 0;
}
