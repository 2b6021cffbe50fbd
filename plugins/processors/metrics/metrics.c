/*
 * metrics - the processor for metric points.
 *
 * One event is one point, a JSON object such as
 *   {"metric":"revenue","value":125000,"timestamp":"2024-01-20T10:30:00Z",
 *    "dashboard_id":"executive","labels":{"region":"emea"}}
 * (the core splits JSON arrays into one event per element). Each point is
 * published as a `metric` update - to the point's dashboard, or to
 * `default_dashboard` - and its latest value is cached under
 * `<cache_prefix><dashboard or _>:<metric>`, tagged `metrics` and
 * `dashboard:<id>` so a dashboard's values can be dropped at once.
 *
 * Like every plugin it includes only the SDK header (plus libc) and does
 * everything through the host table: it never sees Redis or a socket. Its
 * state lives in the instance, never in globals, so two `metrics`
 * instances with different options coexist in one process.
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct metrics_state {
    const sophia_host *host;
    sophia_self *self;
    char *default_dashboard; /* NULL = none */
    char *cache_prefix;
    double ttl;
} metrics_state;

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

/* ------------------------------------------------------------ lifecycle */

/* Only the option getters are used here: init runs at `--check` time too,
 * before any event exists. */
static int metrics_init(const sophia_host *host, sophia_self *self,
                        const sophia_opts *opts, void **state)
{
    if (!host || host->struct_size < sizeof(sophia_host) ||
        host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    metrics_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    const char *dash = host->opt_string(opts, "default_dashboard");
    const char *prefix = host->opt_string(opts, "cache_prefix");
    st->cache_prefix = dup_str(prefix ? prefix : "metric:");
    if (dash && *dash)
        st->default_dashboard = dup_str(dash);
    st->ttl = host->opt_double(opts, "ttl");
    if (!st->cache_prefix || (dash && *dash && !st->default_dashboard)) {
        free(st->cache_prefix);
        free(st->default_dashboard);
        free(st);
        return SOPHIA_ENOMEM;
    }
    *state = st;
    return SOPHIA_OK;
}

static void metrics_fini(void *state)
{
    metrics_state *st = state;
    if (!st)
        return;
    free(st->default_dashboard);
    free(st->cache_prefix);
    free(st);
}

/* ------------------------------------------------------------- process */

/* A point's parts, borrowed from the event body. */
typedef struct point {
    const char *metric;
    const sophia_json *value;
    const sophia_json *timestamp; /* NULL when absent */
    const sophia_json *labels;    /* NULL when absent */
    const char *dashboard;        /* NULL = none */
} point;

static const sophia_json *present(const sophia_host *h, const sophia_json *v)
{
    sophia_json_type t = v ? h->json_type(v) : SOPHIA_JSON_MISSING;
    return t == SOPHIA_JSON_MISSING || t == SOPHIA_JSON_NULL ? NULL : v;
}

/* NULL when the body is a point, else why not. */
static const char *parse_point(const metrics_state *st, const sophia_json *b,
                               point *p)
{
    const sophia_host *h = st->host;
    if (!b || h->json_type(b) != SOPHIA_JSON_OBJECT)
        return "body is not a JSON object";
    p->metric = h->json_string(h->json_get(b, "metric"));
    if (!p->metric || !*p->metric)
        return "\"metric\" is missing or not a non-empty string";
    p->value = h->json_get(b, "value");
    if (!p->value || h->json_type(p->value) != SOPHIA_JSON_NUMBER)
        return "\"value\" is missing or not a number";
    p->timestamp = present(h, h->json_get(b, "timestamp"));
    p->labels = present(h, h->json_get(b, "labels"));
    p->dashboard = h->json_string(h->json_get(b, "dashboard_id"));
    if (!p->dashboard || !*p->dashboard)
        p->dashboard = st->default_dashboard;
    return NULL;
}

/* The point's timestamp, or now as ISO-8601 UTC when it has none. */
static sophia_json *timestamp_of(const metrics_state *st, const point *p)
{
    const sophia_host *h = st->host;
    if (p->timestamp)
        return h->json_copy(p->timestamp);
    time_t secs = (time_t)(h->now_us() / 1000000);
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&secs, &tm) ||
        !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
        return NULL;
    return h->json_str(buf);
}

/* json_set takes the value even when it fails; a NULL value is ENOMEM. */
static int set(const sophia_host *h, sophia_json *obj, const char *key,
               sophia_json *v)
{
    if (!v)
        return SOPHIA_ENOMEM;
    return h->json_set(obj, key, v);
}

static int publish_point(const metrics_state *st, const point *p,
                         sophia_json *ts, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    sophia_json *data = h->json_object();
    if (!data)
        return SOPHIA_ENOMEM;
    int rc = set(h, data, "metric", h->json_str(p->metric));
    if (!rc)
        rc = set(h, data, "value", h->json_copy(p->value));
    if (!rc)
        rc = set(h, data, "timestamp", h->json_copy(ts));
    if (!rc && p->labels)
        rc = set(h, data, "labels", h->json_copy(p->labels));
    if (rc) {
        h->json_free(data);
        return rc;
    }
    return h->publish(ctx, SOPHIA_UPDATE_METRIC, NULL, p->dashboard, data);
}

static int cache_point(const metrics_state *st, const point *p,
                       sophia_json *ts, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    const char *dash = p->dashboard ? p->dashboard : "_";
    size_t klen = strlen(st->cache_prefix) + strlen(dash) +
                  strlen(p->metric) + 2;
    size_t tlen = strlen("dashboard:") + strlen(dash) + 1;
    char *key = malloc(klen), *tag = malloc(tlen);
    sophia_json *value = h->json_object();
    int rc = key && tag && value ? 0 : SOPHIA_ENOMEM;
    if (!rc)
        rc = set(h, value, "value", h->json_copy(p->value));
    if (!rc)
        rc = set(h, value, "timestamp", ts);
    else
        h->json_free(ts);
    if (!rc) {
        snprintf(key, klen, "%s%s:%s", st->cache_prefix, dash, p->metric);
        snprintf(tag, tlen, "dashboard:%s", dash);
        const char *tags[] = {"metrics", p->dashboard ? tag : NULL, NULL};
        rc = h->cache_put(ctx, key, value, st->ttl, tags);
        value = NULL; /* taken */
    }
    if (value)
        h->json_free(value);
    free(key);
    free(tag);
    return rc;
}

static sophia_verdict metrics_process(void *state, const sophia_event *ev,
                                      sophia_ctx *ctx)
{
    metrics_state *st = state;
    const sophia_host *h = st->host;
    point p = {0};
    const char *why = parse_point(st, ev ? ev->body : NULL, &p);
    if (why) {
        h->log(st->self, SOPHIA_LOG_WARN, "bad metric point (stream %s): %s",
               ev && ev->stream ? ev->stream : "?", why);
        return SOPHIA_PROCESS_ERROR;
    }
    sophia_json *ts = timestamp_of(st, &p);
    int rc = ts ? publish_point(st, &p, ts, ctx) : SOPHIA_ENOMEM;
    if (!rc)
        rc = cache_point(st, &p, ts, ctx); /* takes ts */
    else if (ts)
        h->json_free(ts);
    if (rc) {
        h->log(st->self, SOPHIA_LOG_WARN, "metric %s not queued: %s",
               p.metric, h->strerror(rc));
        return SOPHIA_PROCESS_ERROR;
    }
    h->counter_add(st->self, "points", 1);
    return SOPHIA_PROCESS_OK;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option metrics_options[] = {
    {"default_dashboard", SOPHIA_OPT_STRING, "",
     "dashboard for points without a dashboard_id (\"\" = none)"},
    {"cache_prefix", SOPHIA_OPT_STRING, "metric:",
     "cache key prefix; keys are <prefix><dashboard or _>:<metric>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "300",
     "seconds a cached latest value lives (<= 0: the tier's default)"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops metrics_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = metrics_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "metrics",
    .version = "0.1.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "metric points -> metric updates on their dashboard and "
                   "the latest value per metric in the cache",
    .options = metrics_options,
    .init = metrics_init,
    .fini = metrics_fini,
    .processor = &metrics_ops,
};
