/*
 * failer - a processor for the streams tests that misbehaves on request.
 *
 * Each event is published as a `data` update on the `topic` option and
 * cached under `<prefix><n>` (n: the event's "n" field), so a test can
 * count effects. Marker fields change that: "fail": true returns ERROR
 * (dead-letter tests), "retry": true returns RETRY, and "sleep_ms": N
 * blocks the loop for N ms before processing - a stand-in for a slow
 * processor, so a test can kill the daemon while a batch is in flight.
 *
 * With the option `stage` (SDK 1.1) it also keeps a counter of committed
 * events, read in process() and moved on with host->stage: each cached
 * value carries "seen", the count process() saw. Events processed before
 * the earlier ones committed would see the same count twice, so a test
 * can tell whether the stream kept staged events in order. With the option
 * `undoable` the counter moves with host->stage_undoable instead (at once,
 * undone unless the event commits), and the marker "retry_once": true
 * returns RETRY, after staging, the first time an event's "n" is seen
 * (that memory is the test plugin's own, deliberately not staged).
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct failer_state {
    const sophia_host *host;
    sophia_self *self;
    char topic[128];
    char prefix[64];
    int sleep; /* honour sleep_ms markers */
    int stage; /* keep a committed-event counter through host->stage */
    int undoable; /* ... or through host->stage_undoable */
    long seen; /* events committed so far */
    unsigned char retried[1024]; /* by n: retry_once was honoured */
} failer_state;

static void set_seen(void *state, void *change)
{
    ((failer_state *)state)->seen = *(long *)change;
    free(change);
}

static void seen_up(void *state, void *change)
{
    (void)change;
    ((failer_state *)state)->seen++;
}

static void seen_down(void *state, void *change)
{
    (void)change;
    ((failer_state *)state)->seen--;
}

/* RETRY the first delivery of an event marked retry_once. */
static int retry_once(failer_state *st, const sophia_event *ev)
{
    const sophia_host *h = st->host;
    double n = h->json_number(h->json_get(ev->body, "n"), -1);
    if (!h->json_bool(h->json_get(ev->body, "retry_once"), 0) || n < 0 ||
        n >= (double)sizeof(st->retried) || st->retried[(size_t)n])
        return 0;
    st->retried[(size_t)n] = 1;
    return 1;
}

static int failer_init(const sophia_host *host, sophia_self *self,
                       const sophia_opts *opts, void **state)
{
    failer_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    snprintf(st->topic, sizeof(st->topic), "%s", host->opt_string(opts, "topic"));
    snprintf(st->prefix, sizeof(st->prefix), "%s", host->opt_string(opts, "cache_prefix"));
    st->sleep = host->opt_bool(opts, "sleep");
    st->stage = host->opt_bool(opts, "stage") && SOPHIA_HOST_HAS(host, stage);
    st->undoable = host->opt_bool(opts, "undoable") &&
                   SOPHIA_HOST_HAS(host, stage_undoable);
    *state = st;
    return SOPHIA_OK;
}

static void failer_fini(void *state)
{
    free(state);
}

static sophia_verdict failer_process(void *state, const sophia_event *ev,
                                     sophia_ctx *ctx)
{
    failer_state *st = state;
    const sophia_host *h = st->host;
    double ms = h->json_number(h->json_get(ev->body, "sleep_ms"), 0);
    if (ms > 0 && st->sleep) {
        struct timespec ts = {(time_t)(ms / 1000), (long)((int64_t)ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (h->json_bool(h->json_get(ev->body, "fail"), 0))
        return SOPHIA_PROCESS_ERROR;
    if (h->json_bool(h->json_get(ev->body, "retry"), 0))
        return SOPHIA_PROCESS_RETRY;
    sophia_json *data = h->json_copy(ev->body);
    if (!data || h->publish(ctx, SOPHIA_UPDATE_DATA, st->topic, NULL, data))
        return SOPHIA_PROCESS_ERROR;
    char key[160];
    snprintf(key, sizeof(key), "%s%.0f", st->prefix,
             h->json_number(h->json_get(ev->body, "n"), -1));
    sophia_json *val = h->json_copy(ev->body);
    if (st->stage) {
        long *next = malloc(sizeof(*next));
        if (!next)
            return SOPHIA_PROCESS_RETRY;
        *next = st->seen + 1;
        h->json_set(val, "seen", h->json_int(st->seen));
        if (h->stage(ctx, set_seen, free, next))
            return SOPHIA_PROCESS_RETRY;
    } else if (st->undoable) {
        h->json_set(val, "seen", h->json_int(st->seen));
        if (h->stage_undoable(ctx, seen_up, seen_down, NULL, NULL))
            return SOPHIA_PROCESS_RETRY;
    }
    if (h->cache_put(ctx, key, val, 0, NULL))
        return SOPHIA_PROCESS_ERROR;
    /* after staging: the host must take the change back */
    return retry_once(st, ev) ? SOPHIA_PROCESS_RETRY : SOPHIA_PROCESS_OK;
}

static const sophia_option failer_options[] = {
    {"topic", SOPHIA_OPT_STRING, "failer", "extra topic of each update"},
    {"cache_prefix", SOPHIA_OPT_STRING, "failer:", "cache key prefix"},
    {"sleep", SOPHIA_OPT_BOOL, "yes", "honour sleep_ms markers"},
    {"stage", SOPHIA_OPT_BOOL, "no", "count committed events via host->stage"},
    {"undoable", SOPHIA_OPT_BOOL, "no", "count events via host->stage_undoable"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops failer_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = failer_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "failer",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "publishes each event; fails, retries or stalls on markers",
    .options = failer_options,
    .init = failer_init,
    .fini = failer_fini,
    .processor = &failer_ops,
};
