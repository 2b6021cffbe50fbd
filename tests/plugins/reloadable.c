/*
 * reloadable - a processor for the hot-reload test, built twice from this
 * file (reload_v1, reload_v2) with a different RELOADABLE_VERSION: both
 * are the descriptor "reloadable", so replacing one file by the other and
 * sending SIGHUP must show the new version in /api/stats. Each event is
 * published unchanged on its `topic` option with the version and a
 * running count added; the count survives an upgrade through
 * export_state/import_state, which the test checks.
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef RELOADABLE_VERSION
#define RELOADABLE_VERSION "0.0.0"
#endif

typedef struct rl_state {
    const sophia_host *host;
    char topic[128];
    long long count;
} rl_state;

static int rl_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    (void)self;
    const char *topic = host->opt_string(opts, "topic");
    if (!topic || strlen(topic) >= sizeof(((rl_state *)0)->topic))
        return SOPHIA_EINVAL;
    rl_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    strcpy(st->topic, topic);
    *state = st;
    return SOPHIA_OK;
}

static void rl_fini(void *state)
{
    free(state);
}

static sophia_verdict rl_process(void *state, const sophia_event *ev,
                                 sophia_ctx *ctx)
{
    rl_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *data = h->json_copy(ev->body);
    if (!data)
        return SOPHIA_PROCESS_ERROR;
    st->count++;
    h->json_set(data, "v", h->json_str(RELOADABLE_VERSION));
    h->json_set(data, "n", h->json_int(st->count));
    if (h->publish(ctx, SOPHIA_UPDATE_DATA, st->topic, NULL, data))
        return SOPHIA_PROCESS_ERROR;
    return SOPHIA_PROCESS_OK;
}

static char *rl_export(void *state)
{
    rl_state *st = state;
    char *s = malloc(32);
    if (s)
        snprintf(s, 32, "%lld", st->count);
    return s;
}

static int rl_import(void *state, const char *json)
{
    rl_state *st = state;
    char *end;
    long long n = strtoll(json, &end, 10);
    if (*end || n < 0)
        return SOPHIA_EINVAL;
    st->count = n;
    return SOPHIA_OK;
}

static const sophia_option rl_options[] = {
    {"topic", SOPHIA_OPT_STRING, NULL, "topic to publish to (required)"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops rl_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = rl_process,
    .export_state = rl_export,
    .import_state = rl_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "reloadable",
    .version = RELOADABLE_VERSION,
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "publishes each event with its version and a count",
    .options = rl_options,
    .init = rl_init,
    .fini = rl_fini,
    .processor = &rl_ops,
};
