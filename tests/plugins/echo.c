/*
 * echo - a valid processor for the loader tests: one option of each type,
 * state per instance, and process() publishing the event body unchanged as
 * a `data` update on the topic named by its required `topic` option. Two
 * instances with different options must therefore publish to different
 * topics, which is what the tests check.
 */
#include <sophia/sdk.h>

#include <stdlib.h>
#include <string.h>

typedef struct echo_state {
    const sophia_host *host;
    sophia_self *self;
    char topic[128];
    int64_t count;
} echo_state;

/* Uses only the option getters and log: init must not need JSON. */
static int echo_init(const sophia_host *host, sophia_self *self,
                     const sophia_opts *opts, void **state)
{
    const char *topic = host->opt_string(opts, "topic");
    int64_t count = host->opt_int(opts, "count");
    if (!topic || strlen(topic) >= sizeof(((echo_state *)0)->topic) ||
        count < 0)
        return SOPHIA_EINVAL;
    echo_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    strcpy(st->topic, topic);
    st->count = count;
    host->log(self, SOPHIA_LOG_DEBUG,
              "topic=%s count=%lld ratio=%g verbose=%d tags=%zu", topic,
              (long long)count, host->opt_double(opts, "ratio"),
              host->opt_bool(opts, "verbose"),
              host->opt_list_len(opts, "tags"));
    *state = st;
    return SOPHIA_OK;
}

static void echo_fini(void *state)
{
    free(state);
}

static sophia_verdict echo_process(void *state, const sophia_event *ev,
                                   sophia_ctx *ctx)
{
    echo_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *data = h->json_copy(ev->body);
    if (!data || h->publish(ctx, SOPHIA_UPDATE_DATA, st->topic, NULL, data))
        return SOPHIA_PROCESS_ERROR;
    h->counter_add(st->self, "echoed", 1);
    return SOPHIA_PROCESS_OK;
}

static const sophia_option echo_options[] = {
    {"topic", SOPHIA_OPT_STRING, NULL, "topic to publish to (required)"},
    {"count", SOPHIA_OPT_INT, "3", "a non-negative integer"},
    {"ratio", SOPHIA_OPT_DOUBLE, "0.25", "a number"},
    {"verbose", SOPHIA_OPT_BOOL, "no", "a boolean"},
    {"tags", SOPHIA_OPT_LIST, NULL, "a list of strings"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops echo_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = echo_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "echo",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "publishes each event body as a data update",
    .options = echo_options,
    .init = echo_init,
    .fini = echo_fini,
    .processor = &echo_ops,
};
