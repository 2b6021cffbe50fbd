/*
 * pagerduty - an example third-party Sophia processor, built out of tree
 * against the installed SDK alone (see CMakeLists.txt and Makefile here).
 *
 * Input: PagerDuty V3 webhook payloads, as PagerDuty POSTs them, e.g.
 *   {"event":{"id":"01DEN...","event_type":"incident.triggered",
 *    "occurred_at":"2024-01-20T10:30:00Z",
 *    "data":{"id":"PGR0VU2","number":2,"title":"API latency",
 *            "status":"triggered","urgency":"high",
 *            "html_url":"https://acme.pagerduty.com/incidents/PGR0VU2",
 *            "service":{"id":"PF9KMXH","summary":"API Service"},
 *            "priority":{"summary":"P1"}}}}
 *
 * For each incident.* event it
 *   - publishes a `data` update {"source":"pagerduty","event_type",...,
 *     "incident":{...},"open_incidents":N} to the configured dashboard and
 *     to the extra topic `pagerduty`;
 *   - caches the incident under `pagerduty:incident:<id>` (tags `pagerduty`,
 *     `pagerduty:service:<service id>`);
 *   - keeps the number of open incidents per service in the cache (read
 *     with cache_peek, written back with cache_put);
 *   - raises a `critical` alert when an incident of `alert_urgency` is
 *     triggered, and resolves it when the incident is (SDK 1.1 alert_ex;
 *     on a 1.0 host it only raises, with the 1.0 alert()).
 * Other event types (pagey.ping, service.updated, ...) are dropped, and so
 * are services listed in `ignore_services`; a payload that is not a
 * PagerDuty event is an error.
 *
 * Everything goes through the host table handed to init(): the plugin
 * includes <sophia/sdk.h> and libc, and links nothing.
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pd_state {
    const sophia_host *host; /* valid until fini */
    sophia_self *self;
    const sophia_opts *opts; /* valid until fini: read lists lazily */
    char dashboard[128];
    char alert_urgency[32];
    double ttl;
} pd_state;

/* The parts of one event this plugin reads, borrowed from the body. */
typedef struct pd_incident {
    const char *event_type, *occurred_at;
    const char *id, *title, *status, *urgency, *url;
    const char *service_id, *service, *priority;
    double number;
} pd_incident;

static int pd_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    /* Every host function used here exists since 1.0, except alert_ex
     * (1.1), which is checked where it is used: SOPHIA_HOST_HAS. */
    if (host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    pd_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->opts = opts;
    snprintf(st->dashboard, sizeof(st->dashboard), "%s",
             host->opt_string(opts, "dashboard"));
    snprintf(st->alert_urgency, sizeof(st->alert_urgency), "%s",
             host->opt_string(opts, "alert_urgency"));
    st->ttl = host->opt_double(opts, "ttl");
    *state = st;
    return SOPHIA_OK;
}

static void pd_fini(void *state)
{
    free(state);
}

/* A string member at `path`, or `def`. */
static const char *str_at(const sophia_host *h, const sophia_json *v,
                          const char *path, const char *def)
{
    const char *s = h->json_string(h->json_get(v, path));
    return s ? s : def;
}

/* 0 when `body` is a PagerDuty incident event, filling `in`. */
static int parse(const sophia_host *h, const sophia_json *body,
                 pd_incident *in)
{
    const sophia_json *ev = h->json_get(body, "event");
    const sophia_json *d = h->json_get(ev, "data");
    in->event_type = str_at(h, ev, "event_type", NULL);
    in->id = str_at(h, d, "id", NULL);
    if (!in->event_type || !d)
        return -1;
    in->occurred_at = str_at(h, ev, "occurred_at", "");
    in->title = str_at(h, d, "title", "");
    in->status = str_at(h, d, "status", "");
    in->urgency = str_at(h, d, "urgency", "");
    in->url = str_at(h, d, "html_url", "");
    in->service_id = str_at(h, d, "service.id", "unknown");
    in->service = str_at(h, d, "service.summary", in->service_id);
    in->priority = str_at(h, d, "priority.summary", "");
    in->number = h->json_number(h->json_get(d, "number"), 0);
    return 0;
}

static int ignored(const pd_state *st, const pd_incident *in)
{
    const sophia_host *h = st->host;
    size_t n = h->opt_list_len(st->opts, "ignore_services");
    for (size_t i = 0; i < n; i++) {
        const char *s = h->opt_list_item(st->opts, "ignore_services", i);
        if (strcmp(s, in->service_id) == 0 || strcmp(s, in->service) == 0)
            return 1;
    }
    return 0;
}

/* The incident as published and cached. */
static sophia_json *incident_json(const sophia_host *h, const pd_incident *in)
{
    sophia_json *o = h->json_object();
    if (!o)
        return NULL;
    h->json_set(o, "id", h->json_str(in->id));
    h->json_set(o, "number", h->json_int((int64_t)in->number));
    h->json_set(o, "title", h->json_str(in->title));
    h->json_set(o, "status", h->json_str(in->status));
    h->json_set(o, "urgency", h->json_str(in->urgency));
    h->json_set(o, "priority", h->json_str(in->priority));
    h->json_set(o, "service", h->json_str(in->service));
    h->json_set(o, "url", h->json_str(in->url));
    return o;
}

/* Open incidents of the service after this event: the cached count, plus
 * one on trigger, minus one on resolve. Queues the new count. */
static int64_t count_open(const pd_state *st, const pd_incident *in,
                          sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    char key[256];
    snprintf(key, sizeof(key), "pagerduty:open:%s", in->service_id);
    sophia_json *old = h->cache_peek(key); /* a copy, ours to free */
    int64_t n = (int64_t)h->json_number(old, 0);
    h->json_free(old);
    if (strcmp(in->event_type, "incident.triggered") == 0)
        n++;
    else if (strcmp(in->event_type, "incident.resolved") == 0 && n > 0)
        n--;
    const char *tags[] = {"pagerduty", NULL};
    h->cache_put(ctx, key, h->json_int(n), 0, tags);
    return n;
}

/* A critical alert for a triggered incident of alert_urgency, and its
 * resolution when the incident is resolved: one alert_id per incident
 * pairs the two. A 1.0 host has no alert_ex: raise only. */
static int queue_alert(const pd_state *st, const pd_incident *in,
                       sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    int triggered = strcmp(in->event_type, "incident.triggered") == 0;
    int resolved = strcmp(in->event_type, "incident.resolved") == 0;
    if (!(triggered || resolved) || strcmp(in->urgency, st->alert_urgency))
        return 0;
    char msg[512], id[160];
    snprintf(msg, sizeof(msg), "%s incident #%lld on %s: %s",
             *in->priority ? in->priority : in->urgency,
             (long long)in->number, in->service, in->title);
    if (!SOPHIA_HOST_HAS(h, alert_ex))
        return triggered ? h->alert(ctx, "pagerduty_incident", "critical",
                                    msg, incident_json(h, in))
                         : 0;
    snprintf(id, sizeof(id), "pagerduty:%s", in->id);
    sophia_alert a = {.struct_size = sizeof(a),
                      .alert_type = "pagerduty_incident",
                      .severity = "critical", /* resolved with the same */
                      .message = msg,
                      .alert_id = id,
                      .dashboard_id = *st->dashboard ? st->dashboard : NULL,
                      .resolve = resolved};
    return h->alert_ex(ctx, &a, incident_json(h, in));
}

static int queue_actions(const pd_state *st, const pd_incident *in,
                         sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    char key[256], tag[256];
    snprintf(key, sizeof(key), "pagerduty:incident:%s", in->id);
    snprintf(tag, sizeof(tag), "pagerduty:service:%s", in->service_id);
    const char *tags[] = {"pagerduty", tag, NULL};
    int rc = h->cache_put(ctx, key, incident_json(h, in), st->ttl, tags);

    sophia_json *data = h->json_object();
    if (!data)
        return SOPHIA_ENOMEM;
    h->json_set(data, "source", h->json_str("pagerduty"));
    h->json_set(data, "event_type", h->json_str(in->event_type));
    h->json_set(data, "occurred_at", h->json_str(in->occurred_at));
    h->json_set(data, "incident", incident_json(h, in));
    h->json_set(data, "open_incidents", h->json_int(count_open(st, in, ctx)));
    if (!rc)
        rc = h->publish(ctx, SOPHIA_UPDATE_DATA, "pagerduty",
                        *st->dashboard ? st->dashboard : NULL, data);
    else
        h->json_free(data);

    return rc ? rc : queue_alert(st, in, ctx);
}

static sophia_verdict pd_process(void *state, const sophia_event *ev,
                                 sophia_ctx *ctx)
{
    pd_state *st = state;
    const sophia_host *h = st->host;
    pd_incident in;
    if (parse(h, ev->body, &in)) {
        h->log(st->self, SOPHIA_LOG_WARN, "not a PagerDuty webhook event "
               "(stream %s)", ev->stream);
        return SOPHIA_PROCESS_ERROR;
    }
    if (strncmp(in.event_type, "incident.", 9) != 0 || ignored(st, &in))
        return SOPHIA_PROCESS_DROP;
    int rc = queue_actions(st, &in, ctx);
    if (rc) {
        h->log(st->self, SOPHIA_LOG_WARN, "incident %s not queued: %s",
               in.id, h->strerror(rc));
        return SOPHIA_PROCESS_ERROR;
    }
    h->counter_add(st->self, "incidents", 1);
    return SOPHIA_PROCESS_OK;
}

static const sophia_option pd_options[] = {
    {"dashboard", SOPHIA_OPT_STRING, "incidents",
     "dashboard the incident updates go to (\"\" = none)"},
    {"alert_urgency", SOPHIA_OPT_STRING, "high",
     "urgency whose triggered incidents raise a critical alert"},
    {"ignore_services", SOPHIA_OPT_LIST, NULL,
     "service ids or names whose events are dropped"},
    {"ttl", SOPHIA_OPT_DOUBLE, "86400",
     "seconds a cached incident lives (<= 0: the tier's default)"},
    {NULL, SOPHIA_OPT_STRING, NULL, NULL},
};

static const sophia_processor_ops pd_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = pd_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "pagerduty",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "PagerDuty V3 incident webhooks -> data updates, alerts",
    .options = pd_options,
    .init = pd_init,
    .fini = pd_fini,
    .processor = &pd_ops,
};
