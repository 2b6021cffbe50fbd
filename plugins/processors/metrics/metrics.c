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
 * Rolling aggregates (option `windows`, seconds): each series (dashboard +
 * metric) keeps its recent samples (receipt time, value) in a bounded ring;
 * at most every `aggregate_every` seconds a series publishes, per window,
 * count/sum/min/max/p50/p95/p99 as a `data` update (kind "aggregate") and
 * caches it at `<prefix>agg:<dashboard or _>:<metric>:<window>`. Without
 * windows (the default) a point costs what it always did.
 *
 * Threshold alerts (option `thresholds`, entries "metric>9000/8000@critical"
 * or "metric<10/12@warning"): an alert fires when the value crosses the
 * trigger, and a "resolved" alert (severity info) when it comes back past
 * the clear level (default: the trigger) - hysteresis, so a value hovering
 * at the trigger does not flap.
 *
 * State and the verdict (SDK 1.1): process() only reads a series. The
 * sample it adds to the windows, the threshold states it flips and the
 * time of the series' last aggregate are one change handed to
 * host->stage_undoable: applied at once, so the next point is processed
 * without waiting for this one's effects, and undone (the ring stepped
 * back, the replaced sample, states and time restored) when the event
 * does not commit. So a point whose event goes RETRY or ERROR, or whose
 * effects are refused, leaves no sample behind and flips no alert: the
 * retry sees the same state, and an alert that should fire fires when the
 * point finally commits.
 *
 * Redelivery: a point has an identity when it can have one - the event's
 * source id (a Redis entry id), else its explicit timestamp, value and
 * labels - and the last `max_seen` identities that committed, per series,
 * are remembered (two points of one series alike in all of these, e.g.
 * the same value twice within a second-resolution timestamp, count as
 * one). A point seen again produces nothing (verdict OK, counter
 * `duplicates`): no second sample in the windows, no second publish, and
 * no older value cached over a newer one. A point with neither id nor
 * timestamp (statsd, a plain POST) cannot be told from a new one with the
 * same value, so it is always new.
 *
 * A hot reload that replaces the instance (new options, rebuilt .so)
 * hands the committed state to the new one (export_state/import_state):
 * the rolling samples, so the windows do not restart empty; which
 * threshold rules fire, per series (matched by the rule's text, so a rule
 * the new options changed starts over); and the seen identities.
 *
 * Like every plugin it includes only the SDK header (plus libc) and does
 * everything through the host table: it never sees Redis or a socket. Its
 * state lives in the instance, never in globals, so two `metrics`
 * instances with different options coexist in one process.
 */
#include <sophia/sdk.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../proc_util.h"

typedef struct threshold {
    char spec[256];        /* as configured: matches rules across reloads */
    char metric[128];
    int above;             /* '>' (1) or '<' (0) */
    double trigger, clear;
    char severity[32];
} threshold;

typedef struct series {
    int64_t *t;            /* receipt times, us */
    double *v;
    size_t head, n, cap;
    int64_t last_agg_us;
    unsigned char *firing; /* per threshold rule */
} series;

typedef struct metrics_state {
    const sophia_host *host;
    sophia_self *self;
    char *default_dashboard; /* NULL = none */
    char *cache_prefix;
    double ttl;
    double *windows;       /* seconds */
    size_t nwindows;
    double agg_every;
    size_t max_samples;
    threshold *rules;
    size_t nrules;
    pu_table series;       /* "dashboard\x1fmetric" -> series */
    pu_seen seen;          /* "series\x1fidentity" of committed points */
    double *scratch;       /* sort buffer, max_samples long */
    int64_t ts_sec;        /* the second ts_text spells, or -1 */
    char ts_text[32];      /* "now" as ISO-8601, formatted once a second */
} metrics_state;

static void series_free(void *p)
{
    series *s = p;
    if (!s)
        return;
    free(s->t);
    free(s->v);
    free(s->firing);
    free(s);
}

/* "name>9000/8000@critical" -> a rule; -1 when malformed. */
static int parse_threshold(const char *spec, threshold *r)
{
    if (strlen(spec) >= sizeof(r->spec))
        return -1;
    snprintf(r->spec, sizeof(r->spec), "%s", spec);
    const char *op = strpbrk(spec, "<>");
    if (!op || op == spec || (size_t)(op - spec) >= sizeof(r->metric))
        return -1;
    memcpy(r->metric, spec, (size_t)(op - spec));
    r->metric[op - spec] = '\0';
    r->above = *op == '>';
    char *end;
    r->trigger = strtod(op + 1, &end);
    if (end == op + 1)
        return -1;
    r->clear = r->trigger;
    if (*end == '/') {
        const char *c = end + 1;
        r->clear = strtod(c, &end);
        if (end == c || (r->above ? r->clear > r->trigger : r->clear < r->trigger))
            return -1; /* hysteresis must point back past the trigger */
    }
    snprintf(r->severity, sizeof(r->severity), "%s", *end == '@' ? end + 1 : "warning");
    return (*end && *end != '@') || !r->severity[0] ? -1 : 0;
}

static int parse_extensions(metrics_state *st, const sophia_opts *opts)
{
    const sophia_host *h = st->host;
    st->nwindows = h->opt_list_len(opts, "windows");
    st->nrules = h->opt_list_len(opts, "thresholds");
    st->windows = calloc(st->nwindows + 1, sizeof(*st->windows));
    st->rules = calloc(st->nrules + 1, sizeof(*st->rules));
    st->agg_every = h->opt_double(opts, "aggregate_every");
    int64_t max = h->opt_int(opts, "max_samples");
    if (!st->windows || !st->rules || max < 1)
        return max < 1 ? SOPHIA_EINVAL : SOPHIA_ENOMEM;
    st->max_samples = (size_t)max;
    for (size_t i = 0; i < st->nwindows; i++) {
        const char *w = h->opt_list_item(opts, "windows", i);
        char *end;
        st->windows[i] = strtod(w, &end);
        if (*end || !(st->windows[i] > 0)) {
            h->log(st->self, SOPHIA_LOG_ERROR, "windows: '%s' is not a "
                   "positive number of seconds", w);
            return SOPHIA_EINVAL;
        }
    }
    for (size_t i = 0; i < st->nrules; i++) {
        const char *spec = h->opt_list_item(opts, "thresholds", i);
        if (parse_threshold(spec, &st->rules[i])) {
            h->log(st->self, SOPHIA_LOG_ERROR, "thresholds: '%s' is not "
                   "metric>trigger[/clear][@severity] (or <)", spec);
            return SOPHIA_EINVAL;
        }
    }
    if (st->nwindows &&
        !(st->scratch = malloc((st->max_samples + 1) * sizeof(double))))
        return SOPHIA_ENOMEM;
    int64_t seen = h->opt_int(opts, "max_seen");
    if (seen < 1) {
        h->log(st->self, SOPHIA_LOG_ERROR, "max_seen must be at least 1");
        return SOPHIA_EINVAL;
    }
    if (pu_seen_init(&st->seen, (size_t)seen))
        return SOPHIA_ENOMEM;
    return pu_table_init(&st->series, 100000, series_free);
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

/* ------------------------------------------------------------ lifecycle */

static void metrics_fini(void *state);

/* Only the option getters are used here: init runs at `--check` time too,
 * before any event exists. */
static int metrics_init(const sophia_host *host, sophia_self *self,
                        const sophia_opts *opts, void **state)
{
    if (pu_require_stage(host, self, "metrics"))
        return SOPHIA_EABI;
    metrics_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->ts_sec = -1;
    const char *dash = host->opt_string(opts, "default_dashboard");
    const char *prefix = host->opt_string(opts, "cache_prefix");
    st->cache_prefix = dup_str(prefix ? prefix : "metric:");
    if (dash && *dash)
        st->default_dashboard = dup_str(dash);
    st->ttl = host->opt_double(opts, "ttl");
    int rc = parse_extensions(st, opts);
    if (rc || !st->cache_prefix || (dash && *dash && !st->default_dashboard)) {
        metrics_fini(st);
        return rc ? rc : SOPHIA_ENOMEM;
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
    free(st->windows);
    free(st->rules);
    free(st->scratch);
    if (st->series.b)
        pu_table_free(&st->series);
    if (st->seen.ring)
        pu_seen_free(&st->seen);
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

/* The point's timestamp, or now as ISO-8601 UTC when it has none. The
 * text changes once a second, so it is formatted once a second: at 20k
 * points/s gmtime + strftime per point was a measurable share. */
static sophia_json *timestamp_of(metrics_state *st, const point *p)
{
    const sophia_host *h = st->host;
    if (p->timestamp)
        return h->json_copy(p->timestamp);
    int64_t secs = h->now_us() / 1000000;
    if (secs != st->ts_sec) {
        time_t t = (time_t)secs;
        struct tm tm;
        if (!gmtime_r(&t, &tm) || !strftime(st->ts_text, sizeof(st->ts_text),
                                             "%Y-%m-%dT%H:%M:%SZ", &tm))
            return NULL;
        st->ts_sec = secs;
    }
    return h->json_str(st->ts_text);
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

/* dst = a b c d; dst was sized for them (snprintf's format parsing cost
 * more than the copy on the per-point path). */
static void join4(char *dst, const char *a, const char *b, const char *c,
                  const char *d)
{
    const char *parts[] = {a, b, c, d};
    for (size_t i = 0; i < 4; i++) {
        size_t n = strlen(parts[i]);
        memcpy(dst, parts[i], n);
        dst += n;
    }
    *dst = '\0';
}

static int cache_point(const metrics_state *st, const point *p,
                       sophia_json *ts, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    const char *dash = p->dashboard ? p->dashboard : "_";
    size_t klen = strlen(st->cache_prefix) + strlen(dash) +
                  strlen(p->metric) + 2;
    size_t tlen = strlen("dashboard:") + strlen(dash) + 1;
    /* Keys are short: the stack, unless a name is unusually long. */
    char kbuf[256], tbuf[160];
    char *key = klen <= sizeof(kbuf) ? kbuf : malloc(klen);
    char *tag = tlen <= sizeof(tbuf) ? tbuf : malloc(tlen);
    sophia_json *value = h->json_object();
    int rc = key && tag && value ? 0 : SOPHIA_ENOMEM;
    if (!rc)
        rc = set(h, value, "value", h->json_copy(p->value));
    if (!rc)
        rc = set(h, value, "timestamp", ts);
    else
        h->json_free(ts);
    if (!rc) {
        join4(key, st->cache_prefix, dash, ":", p->metric);
        join4(tag, "dashboard:", dash, "", "");
        const char *tags[] = {"metrics", p->dashboard ? tag : NULL, NULL};
        rc = h->cache_put(ctx, key, value, st->ttl, tags);
        value = NULL; /* taken */
    }
    if (value)
        h->json_free(value);
    if (key != kbuf)
        free(key);
    if (tag != tbuf)
        free(tag);
    return rc;
}

/* ------------------------------------------------ aggregates, alerts */

static series *series_by_key(metrics_state *st, const char *key)
{
    series *s = pu_table_get(&st->series, key);
    if (s)
        return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->cap = st->nwindows ? st->max_samples : 0;
    s->t = calloc(s->cap + 1, sizeof(*s->t));
    s->v = calloc(s->cap + 1, sizeof(*s->v));
    s->firing = calloc(st->nrules + 1, 1);
    if (!s->t || !s->v || !s->firing) {
        series_free(s);
        return NULL;
    }
    return pu_table_put(&st->series, key, s) ? NULL : s;
}

static void series_push(series *s, int64_t t, double v)
{
    s->t[(s->head + s->n) % s->cap] = t;
    s->v[(s->head + s->n) % s->cap] = v;
    if (s->n < s->cap)
        s->n++;
    else
        s->head = (s->head + 1) % s->cap;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    return v[r ? r - 1 : 0];
}

/* What one point changes in its series, and what it replaced there (so
 * that an event that does not commit can be undone). */
typedef struct metrics_change {
    int push;             /* add (t, v) to the windows */
    int64_t t;
    double v;
    int64_t agg_us;       /* the series' new last aggregate, or 0 */
    unsigned char *firing; /* per rule, the state after this point */
    char *key;            /* the series */
    int applied;          /* the fields below hold what apply replaced */
    int evicted;          /* the push overwrote the oldest sample: */
    int64_t old_t;        /* its time and value */
    double old_v;
    int64_t old_agg_us;
    unsigned char *old_firing;
} metrics_change;

static void metrics_apply(void *state, void *change)
{
    metrics_state *st = state;
    metrics_change *c = change;
    series *s = series_by_key(st, c->key);
    if (!s)
        return;
    c->applied = 1;
    c->old_agg_us = s->last_agg_us;
    memcpy(c->old_firing, s->firing, st->nrules);
    if (c->push) {
        c->evicted = s->n == s->cap;
        c->old_t = s->t[s->head]; /* where a full ring writes */
        c->old_v = s->v[s->head];
        series_push(s, c->t, c->v);
    }
    if (c->agg_us)
        s->last_agg_us = c->agg_us;
    memcpy(s->firing, c->firing, st->nrules);
}

/* Changes are undone newest first, so the series is exactly as this
 * change's apply left it: step the ring back and restore what the push
 * overwrote. */
static void metrics_undo(void *state, void *change)
{
    metrics_state *st = state;
    metrics_change *c = change;
    series *s = c->applied ? pu_table_get(&st->series, c->key) : NULL;
    if (!s)
        return;
    if (c->push && c->evicted) {
        s->head = (s->head + s->cap - 1) % s->cap;
        s->t[s->head] = c->old_t;
        s->v[s->head] = c->old_v;
    } else if (c->push) {
        s->n--;
    }
    s->last_agg_us = c->old_agg_us;
    memcpy(s->firing, c->old_firing, st->nrules);
}

/* For a host without stage_undoable: applied at the commit. */
static void metrics_apply_once(void *state, void *change)
{
    metrics_apply(state, change);
    free(change);
}

/* The series' samples, as they will be once sample (t, v) is pushed,
 * that fall in window w; published and cached as an aggregate. The
 * committed series `s` may be NULL (its first point). */
static int publish_window(metrics_state *st, const point *p, const series *s,
                          int64_t t, double v, double w, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    size_t n = 0;
    double sum = 0;
    size_t from = s && s->n == s->cap ? 1 : 0; /* the push evicts it */
    for (size_t i = from; s && i < s->n; i++) {
        size_t k = (s->head + i) % s->cap;
        if ((double)(t - s->t[k]) <= w * 1e6) {
            st->scratch[n++] = s->v[k];
            sum += s->v[k];
        }
    }
    st->scratch[n++] = v;
    sum += v;
    qsort(st->scratch, n, sizeof(double), cmp_double);
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "aggregate");
    pu_set_str(h, d, "metric", p->metric);
    pu_set(h, d, "window_s", h->json_num(w));
    pu_set(h, d, "count", h->json_int((int64_t)n));
    pu_set(h, d, "sum", h->json_num(sum));
    pu_set(h, d, "min", h->json_num(st->scratch[0]));
    pu_set(h, d, "max", h->json_num(st->scratch[n - 1]));
    pu_set(h, d, "p50", h->json_num(pct(st->scratch, n, 0.50)));
    pu_set(h, d, "p95", h->json_num(pct(st->scratch, n, 0.95)));
    pu_set(h, d, "p99", h->json_num(pct(st->scratch, n, 0.99)));
    if (!d)
        return SOPHIA_ENOMEM;
    char key[512], tag[300];
    snprintf(key, sizeof(key), "%sagg:%s:%s:%g", st->cache_prefix,
             p->dashboard ? p->dashboard : "_", p->metric, w);
    snprintf(tag, sizeof(tag), "dashboard:%s", p->dashboard ? p->dashboard : "_");
    const char *tags[] = {"metrics", tag, NULL};
    int rc = h->cache_put(ctx, key, h->json_copy(d), st->ttl, tags);
    if (rc) {
        h->json_free(d);
        return rc;
    }
    return h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, p->dashboard, d);
}

/* Rule i against value v; flips firing[i] (the staged copy) when it
 * crosses. */
static int check_rule(metrics_state *st, const point *p,
                      unsigned char *firing, size_t i, double v,
                      sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    const threshold *r = &st->rules[i];
    int past = r->above ? v > r->trigger : v < r->trigger;
    int back = r->above ? v < r->clear : v > r->clear;
    if (firing[i] ? !back : !past)
        return 0;
    firing[i] = !firing[i];
    char msg[300];
    snprintf(msg, sizeof(msg), firing[i] ? "%s = %g is %s %g"
                                         : "%s = %g is back %s %g",
             p->metric, v, firing[i] == r->above ? "above" : "below",
             firing[i] ? r->trigger : r->clear);
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "metric", p->metric);
    pu_set(h, d, "value", h->json_num(v));
    pu_set(h, d, "threshold", h->json_num(firing[i] ? r->trigger : r->clear));
    pu_set_str(h, d, "state", firing[i] ? "firing" : "resolved");
    pu_set_str(h, d, "dashboard_id", p->dashboard);
    return h->alert(ctx, "threshold", firing[i] ? r->severity : "info", msg, d);
}

/* Rules and windows for one point of series `skey`: the alerts and
 * aggregates go into ctx, the series' new state into one staged change. */
static int track(metrics_state *st, const point *p, const char *skey,
                 sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    const series *s = pu_table_get(&st->series, skey);
    size_t klen = strlen(skey) + 1;
    metrics_change *c = calloc(1, sizeof(*c) + 2 * st->nrules + klen);
    if (!c)
        return SOPHIA_ENOMEM;
    c->firing = (unsigned char *)(c + 1);
    c->old_firing = c->firing + st->nrules;
    c->key = (char *)c->old_firing + st->nrules;
    memcpy(c->key, skey, klen);
    if (s)
        memcpy(c->firing, s->firing, st->nrules);
    double v = h->json_number(p->value, 0);
    int64_t now = h->now_us();
    int rc = 0;
    for (size_t i = 0; !rc && i < st->nrules; i++)
        if (!strcmp(st->rules[i].metric, p->metric))
            rc = check_rule(st, p, c->firing, i, v, ctx);
    if (!rc && st->nwindows) {
        c->push = 1;
        c->t = now;
        c->v = v;
        if (!s || !s->last_agg_us ||
            (double)(now - s->last_agg_us) >= st->agg_every * 1e6) {
            c->agg_us = now;
            for (size_t i = 0; !rc && i < st->nwindows; i++)
                rc = publish_window(st, p, s, now, v, st->windows[i], ctx);
        }
    }
    if (rc) {
        free(c);
        return rc;
    }
    /* Applied at once: the stream goes on to the next point without
     * waiting for this one's cache puts (see sdk.h stage_undoable). */
    if (SOPHIA_HOST_HAS(h, stage_undoable))
        return h->stage_undoable(ctx, metrics_apply, metrics_undo, free, c);
    return h->stage(ctx, metrics_apply_once, free, c);
}

/* dst = a b c (NUL-terminated), cut to len; the per-point path avoids
 * printf (its number formatting was the largest share of the identity). */
static void join3(char *dst, size_t len, const char *a, const char *b,
                  const char *c)
{
    const char *parts[] = {a, b, c};
    size_t off = 0;
    for (size_t i = 0; i < 3 && len; i++) {
        size_t n = strlen(parts[i]);
        if (n > len - 1 - off)
            n = len - 1 - off;
        memcpy(dst + off, parts[i], n);
        off += n;
    }
    if (len)
        dst[off] = '\0';
}

/* "ts:<timestamp text or number bits>\x1f<value bits as hex>" plus
 * "\x1f<label>=<value>" per label. */
static void stamp_text(const sophia_host *h, const point *p, char *out,
                       size_t len)
{
    static const char hex[] = "0123456789abcdef";
    double nums[2] = {h->json_number(p->timestamp, 0),
                      h->json_number(p->value, 0)};
    const char *ts = h->json_string(p->timestamp);
    char bits[2][17];
    for (size_t k = 0; k < 2; k++) {
        uint64_t u;
        memcpy(&u, &nums[k], sizeof(u));
        for (int i = 15; i >= 0; i--, u >>= 4)
            bits[k][i] = hex[u & 15];
        bits[k][16] = '\0';
    }
    char tail[40];
    join3(tail, sizeof(tail), "\x1f", bits[1], "");
    join3(out, len, "ts:", ts ? ts : bits[0], tail);
    /* Labels too: hosts reporting the same metric, second and value are
     * different points. Rare and short: printf is fine here. */
    const sophia_json *v;
    const char *k;
    size_t off = strlen(out);
    for (size_t i = 0; p->labels && off + 1 < len &&
                       (k = h->json_key_at(p->labels, i, &v));
         i++) {
        const char *sv = h->json_string(v);
        int n = sv ? snprintf(out + off, len - off, "\x1f%s=%s", k, sv)
                   : snprintf(out + off, len - off, "\x1f%s#%.17g", k,
                              h->json_number(v, 0));
        off = n < 0 || (size_t)n >= len - off ? len - 1 : off + (size_t)n;
    }
}

/* The point's identity within its series (see the top of the file) into
 * out, or "" when it has none. */
static void point_identity(const metrics_state *st, const sophia_event *ev,
                           const point *p, const char *skey, char *out,
                           size_t len)
{
    char what[300];
    out[0] = '\0';
    if (ev->id && *ev->id) {
        join3(what, sizeof(what), "id:", ev->id, "");
    } else if (p->timestamp) {
        stamp_text(st->host, p, what, sizeof(what));
    } else {
        return;
    }
    join3(out, len, skey, "\x1f", what);
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
    char skey[400], id[700];
    id[0] = '\0';
    /* The series key only when something needs it: the plain path (no
     * id, no timestamp, no windows or rules) stays as cheap as before. */
    if ((ev->id && *ev->id) || p.timestamp || st->nwindows || st->nrules) {
        join3(skey, sizeof(skey), p.dashboard ? p.dashboard : "", "\x1f",
              p.metric);
        point_identity(st, ev, &p, skey, id, sizeof(id));
    }
    if (id[0] && pu_seen_has(&st->seen, id)) {
        h->counter_add(st->self, "duplicates", 1);
        return SOPHIA_PROCESS_OK; /* committed before: nothing again */
    }
    sophia_json *ts = timestamp_of(st, &p);
    int rc = ts ? publish_point(st, &p, ts, ctx) : SOPHIA_ENOMEM;
    if (!rc)
        rc = cache_point(st, &p, ts, ctx); /* takes ts */
    else if (ts)
        h->json_free(ts);
    if (!rc && (st->nwindows || st->nrules))
        rc = track(st, &p, skey, ctx);
    if (!rc && id[0])
        rc = pu_seen_stage(h, ctx, &st->seen, id);
    if (rc) {
        h->log(st->self, SOPHIA_LOG_WARN, "metric %s not queued: %s",
               p.metric, h->strerror(rc));
        return SOPHIA_PROCESS_ERROR;
    }
    h->counter_add(st->self, "points", 1);
    return SOPHIA_PROCESS_OK;
}

/* --------------------------------------------- hot reload hand-over */

/* One series as {"key","t":[us...],"v":[...],"firing":[rule specs]}. */
static sophia_json *series_json(const metrics_state *st, const char *key,
                                const series *s)
{
    const sophia_host *h = st->host;
    sophia_json *o = h->json_object(), *t = h->json_array(),
                *v = h->json_array(), *f = h->json_array();
    for (size_t i = 0; t && v && i < s->n; i++) {
        size_t k = (s->head + i) % s->cap;
        h->json_append(t, h->json_int(s->t[k]));
        h->json_append(v, h->json_num(s->v[k]));
    }
    for (size_t i = 0; f && i < st->nrules; i++)
        if (s->firing[i])
            h->json_append(f, h->json_str(st->rules[i].spec));
    pu_set_str(h, o, "key", key);
    int rc = pu_set(h, o, "t", t);
    if (rc)
        h->json_free(v);
    else
        rc = pu_set(h, o, "v", v);
    if (rc)
        h->json_free(f);
    else
        rc = pu_set(h, o, "firing", f);
    if (rc && o) {
        h->json_free(o);
        return NULL;
    }
    return o;
}

/* The committed state, so windows, alert states and redelivery checks
 * survive an upgrade: {"format":2,"series":[series_json...],
 * "seen":{pu_seen_export}}
 * (format 1, from before SDK 1.1, had no firing and no seen). */
static char *metrics_export(void *state)
{
    metrics_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *all = h->json_array();
    for (pu_entry *e = st->series.oldest; all && e; e = e->newer) {
        sophia_json *o = series_json(st, e->key, e->val);
        if (!o || h->json_append(all, o)) {
            h->json_free(all);
            all = NULL;
        }
    }
    sophia_json *doc = h->json_object();
    pu_set(h, doc, "format", h->json_int(2));
    int rc = pu_set(h, doc, "series", all);
    if (!rc)
        rc = pu_set(h, doc, "seen", pu_seen_export(h, &st->seen));
    return pu_export_text(h, doc, rc);
}

/* Rule specs in `firing` that this instance also has fire here too. */
static void import_firing(metrics_state *st, series *s, const sophia_json *f)
{
    const sophia_host *h = st->host;
    for (size_t k = 0; k < h->json_size(f); k++) {
        const char *spec = h->json_string(h->json_at(f, k));
        for (size_t i = 0; spec && i < st->nrules; i++)
            if (!strcmp(st->rules[i].spec, spec))
                s->firing[i] = 1;
    }
}

static int metrics_import(void *state, const char *json)
{
    metrics_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI; /* a host without json_parse */
    sophia_json *doc = h->json_parse(json);
    const sophia_json *all = h->json_get(doc, "series");
    double format = h->json_number(h->json_get(doc, "format"), 0);
    if (!doc || (format != 1 && format != 2) ||
        h->json_type(all) != SOPHIA_JSON_ARRAY) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    for (size_t i = 0; i < h->json_size(all); i++) {
        const sophia_json *o = h->json_at(all, i);
        const char *key = h->json_string(h->json_get(o, "key"));
        const sophia_json *t = h->json_get(o, "t"), *v = h->json_get(o, "v");
        const sophia_json *f = h->json_get(o, "firing");
        if (!key || (!st->nwindows && !h->json_size(f)))
            continue; /* nothing this instance keeps */
        series *s = series_by_key(st, key);
        size_t n = h->json_size(t);
        for (size_t k = 0; s && st->nwindows && k < n && k < h->json_size(v); k++)
            series_push(s, (int64_t)h->json_number(h->json_at(t, k), 0),
                        h->json_number(h->json_at(v, k), 0));
        if (s)
            import_firing(st, s, f);
    }
    int rc = pu_seen_import(h, &st->seen, h->json_get(doc, "seen"));
    h->json_free(doc);
    return rc;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option metrics_options[] = {
    {"default_dashboard", SOPHIA_OPT_STRING, "",
     "dashboard for points without a dashboard_id (\"\" = none)"},
    {"cache_prefix", SOPHIA_OPT_STRING, "metric:",
     "cache key prefix; keys are <prefix><dashboard or _>:<metric>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "300",
     "seconds a cached latest value lives (<= 0: the tier's default)"},
    {"windows", SOPHIA_OPT_LIST, NULL,
     "rolling aggregate windows in seconds, e.g. [60, 300] (empty: none)"},
    {"aggregate_every", SOPHIA_OPT_DOUBLE, "1",
     "seconds between aggregate updates of one series"},
    {"max_samples", SOPHIA_OPT_INT, "10000",
     "samples kept per series for the windows"},
    {"thresholds", SOPHIA_OPT_LIST, NULL,
     "alerts: entries 'metric>trigger[/clear][@severity]' or with '<'"},
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "point identities (source id, else timestamp + value) remembered to "
     "skip redeliveries"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops metrics_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = metrics_process,
    .export_state = metrics_export,
    .import_state = metrics_import,
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
