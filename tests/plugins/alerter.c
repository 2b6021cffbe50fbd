/*
 * alerter - a test processor that turns each event into an alert, so
 * tests that watch alerts (the dashboard's browser test) can raise one with
 * a chosen severity without depending on a real processor's business rules.
 *
 * An event {"severity":"critical","message":"disk full","alert_type":"ops"}
 * becomes host->alert(ctx, "ops", "critical", "disk full", NULL): published
 * by the core to `updates:alert`, `alerts` and `alerts:critical`. A missing
 * field takes the option's default; an event that is not an object fails.
 * An event with an `alert_id` or `"resolve": true` goes through
 * host->alert_ex (SDK 1.1) instead, so a test can raise an alert and then
 * resolve it.
 */
#include <sophia/sdk.h>

#include <stdlib.h>

typedef struct alerter_state {
    const sophia_host *host;
    sophia_self *self;
} alerter_state;

static int alerter_init(const sophia_host *host, sophia_self *self,
                        const sophia_opts *opts, void **state)
{
    (void)opts;
    alerter_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    *state = st;
    return SOPHIA_OK;
}

static void alerter_fini(void *state)
{
    free(state);
}

/* The event's string field, or `def` when it is absent or not a string. */
static const char *field(const sophia_host *h, const sophia_json *body,
                         const char *name, const char *def)
{
    const char *s = h->json_string(h->json_get(body, name));
    return s ? s : def;
}

static sophia_verdict alerter_process(void *state, const sophia_event *ev,
                                      sophia_ctx *ctx)
{
    alerter_state *st = state;
    const sophia_host *h = st->host;
    if (!ev->body || h->json_type(ev->body) != SOPHIA_JSON_OBJECT)
        return SOPHIA_PROCESS_ERROR;
    const sophia_alert a = {
        .struct_size = sizeof(a),
        .alert_type = field(h, ev->body, "alert_type", "test"),
        .severity = field(h, ev->body, "severity", "warning"),
        .message = field(h, ev->body, "message", ""),
        .alert_id = field(h, ev->body, "alert_id", NULL),
        .resolve = h->json_bool(h->json_get(ev->body, "resolve"), 0),
    };
    int rc = (a.alert_id || a.resolve) && SOPHIA_HOST_HAS(h, alert_ex)
                 ? h->alert_ex(ctx, &a, NULL)
                 : h->alert(ctx, a.alert_type, a.severity, a.message, NULL);
    if (rc)
        return SOPHIA_PROCESS_ERROR;
    h->counter_add(st->self, "alerts", 1);
    return SOPHIA_PROCESS_OK;
}

static const sophia_processor_ops alerter_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = alerter_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "alerter",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "raises an alert from each event's severity, message "
                   "and alert_type fields",
    .options = NULL,
    .init = alerter_init,
    .fini = alerter_fini,
    .processor = &alerter_ops,
};
