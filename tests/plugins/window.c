/*
 * window - a tumbling window closed by a timer (SDK 1.1), for the timer
 * tests: events add their `v` to the open window; every `window_s`
 * seconds a timer publishes {"metric":"window_sum","value":SUM,
 * "count":N,"label":LABEL} as a `metric` update to dashboard:<dashboard>
 * (only when the window has events), without waiting for an event.
 *
 * The window's contents move with the verdict (host->stage), and across a
 * reload through export_state/import_state; the timer is the instance's
 * own, armed in init, so a replacing instance closes the window it was
 * handed. Each committed close counts `windows_closed`. With `alert_over`,
 * a close whose sum is above it also raises a `window_over` alert - one
 * raised outside any event, for the outputs tests.
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>

typedef struct win_state {
    const sophia_host *h;
    sophia_self *self;
    const char *label, *dashboard;
    double sum, alert_over;
    long long count;
} win_state;

typedef struct win_change {
    double sum;
    long long count;
} win_change;

static void win_apply(void *state, void *change)
{
    win_state *st = state;
    win_change *c = change;
    st->sum += c->sum;
    st->count += c->count;
    free(c);
}

static int win_stage(win_state *st, sophia_ctx *ctx, double sum,
                     long long count)
{
    win_change *c = malloc(sizeof(*c));
    if (!c)
        return SOPHIA_ENOMEM;
    c->sum = sum;
    c->count = count;
    return st->h->stage(ctx, win_apply, free, c);
}

/* The timer: publish the window and empty it, both only if committed. */
static int win_close(void *arg, sophia_ctx *ctx)
{
    win_state *st = arg;
    const sophia_host *h = st->h;
    if (!st->count)
        return 0;
    sophia_json *d = h->json_object();
    h->json_set(d, "metric", h->json_str("window_sum"));
    h->json_set(d, "value", h->json_num(st->sum));
    h->json_set(d, "count", h->json_int(st->count));
    h->json_set(d, "label", h->json_str(st->label));
    int rc = h->publish(ctx, SOPHIA_UPDATE_METRIC, NULL, st->dashboard, d);
    if (!rc && st->alert_over > 0 && st->sum > st->alert_over) {
        char msg[128]; /* an alert outside an event: it reaches outputs */
        snprintf(msg, sizeof(msg), "window %s summed %g", st->label, st->sum);
        rc = h->alert(ctx, "window_over", "warning", msg, NULL);
    }
    if (!rc)
        rc = win_stage(st, ctx, -st->sum, -st->count);
    if (!rc)
        h->counter_add(st->self, "windows_closed", 1);
    return rc;
}

static sophia_verdict win_process(void *state, const sophia_event *ev,
                                  sophia_ctx *ctx)
{
    win_state *st = state;
    const sophia_json *v = st->h->json_get(ev->body, "v");
    if (st->h->json_type(v) != SOPHIA_JSON_NUMBER)
        return SOPHIA_PROCESS_DROP;
    return win_stage(st, ctx, st->h->json_number(v, 0), 1)
               ? SOPHIA_PROCESS_ERROR
               : SOPHIA_PROCESS_OK;
}

/* {"sum":S,"count":N}, json_dump's text, freed by the host. */
static char *win_export(void *state)
{
    win_state *st = state;
    const sophia_host *h = st->h;
    sophia_json *o = h->json_object();
    h->json_set(o, "sum", h->json_num(st->sum));
    h->json_set(o, "count", h->json_int(st->count));
    char *s = h->json_dump(o);
    h->json_free(o);
    return s;
}

static int win_import(void *state, const char *json)
{
    win_state *st = state;
    const sophia_host *h = st->h;
    sophia_json *o = h->json_parse(json);
    if (!o)
        return SOPHIA_EPARSE;
    st->sum = h->json_number(h->json_get_key(o, "sum"), 0);
    st->count = (long long)h->json_number(h->json_get_key(o, "count"), 0);
    h->json_free(o);
    return SOPHIA_OK;
}

static int win_init(const sophia_host *h, sophia_self *self,
                    const sophia_opts *opts, void **state)
{
    if (!SOPHIA_HOST_HAS(h, timer_add) || !SOPHIA_HOST_HAS(h, json_get_key))
        return SOPHIA_EABI; /* needs SDK 1.1 */
    double every = h->opt_double(opts, "window_s");
    if (!(every > 0))
        return SOPHIA_EINVAL;
    win_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->h = h;
    st->self = self;
    st->label = h->opt_string(opts, "label");
    st->dashboard = h->opt_string(opts, "dashboard");
    st->alert_over = h->opt_double(opts, "alert_over");
    int64_t id = h->timer_add(self, every, every, win_close, st);
    if (id < 0) {
        free(st);
        return (int)id;
    }
    *state = st;
    return SOPHIA_OK;
}

static void win_fini(void *state)
{
    free(state); /* the host cancelled the timer before this */
}

static const sophia_option win_options[] = {
    {"window_s", SOPHIA_OPT_DOUBLE, "1", "window length, seconds"},
    {"label", SOPHIA_OPT_STRING, "w", "carried in each close"},
    {"dashboard", SOPHIA_OPT_STRING, "win", "dashboard of the closes"},
    {"alert_over", SOPHIA_OPT_DOUBLE, "0",
     "a close whose sum is above this also raises an alert; 0 = never"},
    {NULL, SOPHIA_OPT_STRING, NULL, NULL},
};

static const sophia_processor_ops win_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = win_process,
    .export_state = win_export,
    .import_state = win_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "window",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "a tumbling window closed by a timer",
    .options = win_options,
    .init = win_init,
    .fini = win_fini,
    .processor = &win_ops,
};
