/*
 * metrics - the processor for metric points.
 *
 * One event is one point, a JSON object such as
 *   {"metric":"revenue","value":125000,"timestamp":"2024-01-20T10:30:00Z",
 *    "dashboard_id":"executive","labels":{"region":"emea"}}
 * (the core splits JSON arrays into one event per element; a DogStatsD
 * line arrives as such a point, its tags as labels). Each point is
 * published as a `metric` update - to the point's dashboard, or to
 * `default_dashboard` - and its latest value is cached under
 * `<cache_prefix><dashboard or _>:<metric>{<labels>}`, tagged `metrics`
 * and `dashboard:<id>` so a dashboard's values can be dropped at once.
 *
 * Series. A series is dashboard + metric + labels: the `labels` object
 * merged with a `tags` list ("region:emea", as Datadog's API sends them),
 * canonical as sorted "k=v,k2=v2" (metrics_point.c; labels that cannot
 * be part of a key - longer than 255 bytes, a control byte, a nested
 * value - as "#<64-bit fingerprint>"). Its text is part of every key the
 * series writes ("{...}" after the metric; nothing when it has no labels,
 * so unlabelled keys are those of 0.1), so `region:emea` and `region:us`
 * are two values, two windows, two alert states. Bounds:
 * `max_series` in all (the oldest series makes room) and
 * `max_series_per_metric` per dashboard + metric: a point that would make
 * one more is refused (verdict OK, counter `series_refused`), so a label
 * carrying a request id cannot grow the cache or the state without bound.
 *
 * Event time. A point's time is its `timestamp` (ISO-8601, or Unix
 * seconds/milliseconds); a point without one (statsd, a plain POST) is at
 * its arrival (the event's received_us). Per series the watermark is the
 * newest event time applied. A point is then
 *   - late, when older than the watermark minus `allowed_lateness`:
 *     dropped (verdict OK, counter `late`; not a failure, so it does not
 *     dead-letter);
 *   - out of order, when older than the watermark but within the
 *     lateness: published with its own timestamp and added to the windows
 *     at its time (counter `out_of_order`), but it neither overwrites the
 *     cached latest value nor moves an alert: both follow the newest point;
 *   - in order otherwise: all of the above, and it moves the watermark;
 *   - from the future, when more than `max_future` ahead of its arrival:
 *     dropped (counter `future`), since it would push the watermark past
 *     every real point and make them all late.
 *
 * Rolling aggregates (option `windows`, seconds): each series keeps its
 * recent samples (event time, value) in a ring that grows as samples come
 * (up to `max_samples`); at most every `aggregate_every` seconds (wall
 * clock) a series publishes, per window w, count/sum/min/max/p50/p95/p99
 * of its samples in (watermark - w, watermark] as a `data` update (kind
 * "aggregate") and caches it at
 * `<prefix>agg:<dashboard or _>:<metric>{<labels>}:<window>`. A point
 * within the lateness thus lands in the window its timestamp says.
 *
 * Threshold alerts (option `thresholds`, entries "metric>9000/8000@critical"
 * or "metric<10/12@warning"), per series, on in-order points: an alert
 * fires (alert_ex, state "firing", alert_id "<dashboard>:<metric>{labels}:
 * <rule>") when the value crosses the trigger, and resolves (same
 * alert_id and severity, `resolve` set) when it comes back past the clear
 * level (default: the trigger) - hysteresis, so a value hovering at the
 * trigger does not flap. `alert_cooldown` (event-time seconds) is the
 * least time between two firings of one rule in one series: a crossing
 * within it is muted - neither it nor its end is announced - and announced
 * after all if it still holds at the first point past the cooldown.
 * `alert_resolves: false` announces firings only.
 *
 * State and the verdict (SDK 1.1): process() only reads a series. The
 * sample it adds to the windows, the watermark it moves, the rule states
 * it changes and the time of the series' last aggregate are one change
 * handed to host->stage_undoable (metrics_series.c): applied at once, so
 * the next point is processed without waiting for this one's effects,
 * and undone when the event does not commit. So a point whose event goes
 * RETRY or ERROR, or whose effects are refused, leaves no sample and no
 * watermark behind and flips no alert: the retry sees the same state, and
 * an alert that should fire fires when the point finally commits.
 *
 * Redelivery: a point has an identity when it can have one - the event's
 * source id (a Redis entry id), else its explicit timestamp and value -
 * within its series, and the last `max_seen` identities that committed
 * are remembered. A point seen again produces nothing (verdict OK,
 * counter `duplicates`), whatever its lateness. A point with neither id
 * nor timestamp (statsd, a plain POST) cannot be told from a new one with
 * the same value, so it is always new.
 *
 * A hot reload that replaces the instance (new options, rebuilt .so)
 * hands the committed state to the new one (export_state/import_state):
 * the series with their labels, samples, watermarks and rule states
 * (firing, muted, last firing: the cooldown goes on) and the seen
 * identities.
 *
 * Like every plugin it includes only the SDK header (plus libc) and does
 * everything through the host table: it never sees Redis or a socket. Its
 * state lives in the instance, never in globals, so two `metrics`
 * instances with different options coexist in one process.
 */
#include <sophia/sdk.h>

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "metrics_point.h"

/* Longest dashboard or metric name, and so the series key's length. */
#define NAME_MAX_LEN 256
#define SKEY_LEN (2 * NAME_MAX_LEN + MP_LABELS_LEN + 4)

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

static int parse_lists(metrics_state *st, const sophia_opts *opts)
{
    const sophia_host *h = st->host;
    st->nwindows = h->opt_list_len(opts, "windows");
    st->nrules = h->opt_list_len(opts, "thresholds");
    st->windows = calloc(st->nwindows + 1, sizeof(*st->windows));
    st->rules = calloc(st->nrules + 1, sizeof(*st->rules));
    if (!st->windows || !st->rules)
        return SOPHIA_ENOMEM;
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
    return 0;
}

/* Option `name` >= min, else logged and -1. */
static int at_least(const metrics_state *st, const sophia_opts *opts,
                    const char *name, double min, double *out)
{
    *out = st->host->opt_double(opts, name);
    if (*out >= min && *out < 1e12)
        return 0;
    st->host->log(st->self, SOPHIA_LOG_ERROR, "%s must be at least %g "
                  "(got %g)", name, min, *out);
    return -1;
}

static int parse_bounds(metrics_state *st, const sophia_opts *opts)
{
    double samples, seen, series, per_metric, late, future, cooldown;
    if (at_least(st, opts, "max_samples", 1, &samples) ||
        at_least(st, opts, "max_seen", 1, &seen) ||
        at_least(st, opts, "max_series", 1, &series) ||
        at_least(st, opts, "max_series_per_metric", 1, &per_metric) ||
        at_least(st, opts, "allowed_lateness", 0, &late) ||
        at_least(st, opts, "max_future", 0, &future) ||
        at_least(st, opts, "alert_cooldown", 0, &cooldown))
        return SOPHIA_EINVAL;
    st->agg_every = st->host->opt_double(opts, "aggregate_every");
    st->max_samples = (size_t)samples;
    st->max_per_metric = (size_t)per_metric;
    st->lateness_us = (int64_t)(late * 1e6);
    st->future_us = (int64_t)(future * 1e6);
    st->cooldown_us = (int64_t)(cooldown * 1e6);
    double longest = 0;
    for (size_t i = 0; i < st->nwindows; i++)
        longest = st->windows[i] > longest ? st->windows[i] : longest;
    st->keep_us = (int64_t)(longest * 1e6) + st->lateness_us;
    st->resolves = st->host->opt_bool(opts, "alert_resolves");
    if (st->nwindows &&
        !(st->scratch = malloc((st->max_samples + 1) * sizeof(double))))
        return SOPHIA_ENOMEM;
    if (pu_seen_init(&st->seen, (size_t)seen))
        return SOPHIA_ENOMEM;
    return ms_tables_init(st, (size_t)series);
}

/* ------------------------------------------------------------ lifecycle */

static void metrics_fini(void *state);
static void memo_free(struct metrics_memo *m);

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
    st->cache_prefix = pu_strdup(prefix ? prefix : "metric:");
    if (dash && *dash)
        st->default_dashboard = pu_strdup(dash);
    st->ttl = host->opt_double(opts, "ttl");
    int rc = parse_lists(st, opts);
    if (!rc)
        rc = parse_bounds(st, opts);
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
    ms_tables_free(st);
    free(st->default_dashboard);
    free(st->cache_prefix);
    free(st->windows);
    free(st->rules);
    free(st->scratch);
    memo_free(st->memo);
    if (st->seen.ring)
        pu_seen_free(&st->seen);
    free(st);
}

/* ------------------------------------------------------------- process */

/* A point's parts, borrowed from the event body, and what is derived
 * from them before any state is read. */
typedef struct point {
    const char *metric;
    const sophia_json *value;
    const sophia_json *timestamp; /* NULL when absent */
    const sophia_json *labels;    /* the point's own object, or NULL */
    const sophia_json *tags;      /* NULL when absent */
    const char *dashboard;        /* NULL = none */
    size_t metric_len, dash_len;  /* their lengths (0: no dashboard) */
    int64_t t_us;                 /* event time */
    int64_t arrival_us;
    int in_order;                 /* not older than its series' watermark */
    size_t skey_len;              /* its series key's (series_key) */
    char canon[MP_LABELS_LEN];    /* canonical labels, "" = none */
} point;

static const sophia_json *present(const sophia_host *h, const sophia_json *v)
{
    sophia_json_type t = v ? h->json_type(v) : SOPHIA_JSON_MISSING;
    return t == SOPHIA_JSON_MISSING || t == SOPHIA_JSON_NULL ? NULL : v;
}

/* A metric or dashboard name fits the keys (short, no control byte):
 * its length into *len, and 1; else 0. */
static int name_ok(const char *s, size_t *len)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || n >= NAME_MAX_LEN)
            return 0;
    *len = n;
    return 1;
}

/* The body's members a point is read from, found in one walk of the
 * object (json_iter, SDK 1.1): a lookup per name hashed the name and
 * probed the object seven times a point, for bodies of three or four
 * members. */
typedef struct point_fields {
    const sophia_json *metric, *value, *timestamp, *labels, *tags, *dashboard,
        *type;
} point_fields;

/* Where member k goes in f, or NULL: by its first byte, then one
 * compare (names tried in a loop cost a point about 40 instructions). */
static const sophia_json **field_slot(point_fields *f, const char *k)
{
    switch (k[0]) {
    case 'm':
        return !strcmp(k + 1, "etric") ? &f->metric : NULL;
    case 'v':
        return !strcmp(k + 1, "alue") ? &f->value : NULL;
    case 'd':
        return !strcmp(k + 1, "ashboard_id") ? &f->dashboard : NULL;
    case 'l':
        return !strcmp(k + 1, "abels") ? &f->labels : NULL;
    case 't':
        return !strcmp(k + 1, "imestamp") ? &f->timestamp
               : !strcmp(k + 1, "ags")    ? &f->tags
               : !strcmp(k + 1, "ype")    ? &f->type
                                          : NULL;
    default:
        return NULL;
    }
}

static void point_fields_of(const sophia_host *h, const sophia_json *b,
                            point_fields *f)
{
    memset(f, 0, sizeof(*f));
    const char *k;
    const sophia_json *v, **slot;
    for (void *it = h->json_iter(b, NULL, &k, &v); it;
         it = h->json_iter(b, it, &k, &v))
        if ((slot = field_slot(f, k)))
            *slot = v;
}

/* 0 when the event is a point (p filled in), else -1 and why. */
static int parse_point(const metrics_state *st, const sophia_event *ev,
                       point *p, char *why, size_t len)
{
    const sophia_host *h = st->host;
    const sophia_json *b = ev ? ev->body : NULL;
    const char *bad = NULL;
    point_fields f; /* cleared by point_fields_of, read only after it */
    int object = b && h->json_type(b) == SOPHIA_JSON_OBJECT;
    if (object)
        point_fields_of(h, b, &f);
    if (!object)
        bad = "body is not a JSON object";
    else if (!(p->metric = h->json_string(f.metric)) || !*p->metric ||
             !name_ok(p->metric, &p->metric_len))
        bad = "\"metric\" is missing or not a non-empty string of at most "
              "255 bytes without control bytes";
    else if (!(p->value = f.value) ||
             h->json_type(p->value) != SOPHIA_JSON_NUMBER)
        bad = "\"value\" is missing or not a number";
    if (bad) {
        snprintf(why, len, "%s", bad);
        return -1;
    }
    p->timestamp = present(h, f.timestamp);
    p->labels = present(h, f.labels);
    p->tags = present(h, f.tags);
    p->dashboard = h->json_string(f.dashboard);
    if (!p->dashboard || !*p->dashboard)
        p->dashboard = st->default_dashboard;
    if (p->dashboard && !name_ok(p->dashboard, &p->dash_len)) {
        snprintf(why, len, "\"dashboard_id\" is longer than 255 bytes or "
                 "has a control byte");
        return -1;
    }
    p->arrival_us = ev->received_us > 0 ? ev->received_us : h->now_us();
    p->t_us = p->arrival_us;
    if (p->timestamp && mp_event_time(h, p->timestamp, &p->t_us)) {
        snprintf(why, len, "\"timestamp\" is neither ISO-8601 "
                 "(2024-01-20T10:30:00Z) nor Unix seconds or milliseconds");
        return -1;
    }
    /* A statsd set's `member` is the value counted, not a dimension. */
    const char *type = h->json_string(f.type);
    const char *skip = type && !strcmp(type, "set") ? "member" : NULL;
    return mp_labels_canon(h, p->labels, p->tags, skip, p->canon,
                           sizeof(p->canon), why, len);
}

/* The point's arrival as ISO-8601 UTC (its timestamp when it has none),
 * or NULL. The text changes once a second, so it is formatted once a
 * second: at 20k points/s gmtime + strftime per point was a measurable
 * share. */
static const char *arrival_text(metrics_state *st, const point *p)
{
    int64_t secs = p->arrival_us / 1000000;
    if (secs != st->ts_sec) {
        time_t t = (time_t)secs;
        struct tm tm;
        size_t n;
        if (!gmtime_r(&t, &tm) ||
            !(n = strftime(st->ts_text, sizeof(st->ts_text),
                           "%Y-%m-%dT%H:%M:%SZ", &tm)))
            return NULL;
        /* strftime's digits, '-', ':', 'T', 'Z': a JSON string as they are */
        st->ts_json[0] = '"';
        memcpy(st->ts_json + 1, st->ts_text, n);
        st->ts_json[n + 1] = '"';
        st->ts_json_len = n + 2;
        st->ts_sec = secs;
    }
    return st->ts_text;
}

/* The point's timestamp, or its arrival when it has none. */
static sophia_json *timestamp_of(metrics_state *st, const point *p)
{
    const sophia_host *h = st->host;
    if (p->timestamp)
        return h->json_copy(p->timestamp);
    const char *at = arrival_text(st, p);
    return at ? h->json_str(at) : NULL;
}

/* The labels as published: the point's own object when it had no tags,
 * else the merged ones; NULL when there are none. */
static sophia_json *labels_of(const sophia_host *h, const point *p)
{
    if (!p->canon[0])
        return NULL;
    if (p->labels && !p->tags)
        return h->json_copy(p->labels);
    return mp_labels_json(h, p->labels, p->tags);
}

/* JSON text assembled for publish_text and cache_put_text (SDK 1.4): a
 * point's update and latest value are small, so the stack unless they
 * are not. Building them as values cost a jansson object, a member per
 * field and a deep copy of each, then the host's encoding of both. */
typedef struct text {
    char *p;
    size_t len, cap;
    int failed;
    char local[512];
} text;

static void text_init(text *t)
{
    t->p = t->local;
    t->len = 0;
    t->cap = sizeof(t->local);
    t->failed = 0;
}

static void text_free(text *t)
{
    if (t->p != t->local)
        free(t->p);
}

/* Room for n more bytes and a NUL; 0, or -1 (failed) out of memory. */
static inline int text_room(text *t, size_t n)
{
    if (t->failed)
        return -1;
    if (t->len + n + 1 <= t->cap)
        return 0;
    size_t cap = t->cap * 2 > t->len + n + 1 ? t->cap * 2 : t->len + n + 1;
    char *q = t->p == t->local ? malloc(cap) : realloc(t->p, cap);
    if (!q) {
        t->failed = 1;
        return -1;
    }
    if (t->p == t->local)
        memcpy(q, t->local, t->len);
    t->p = q;
    t->cap = cap;
    return 0;
}

/* inline: most parts are literals, whose copy then needs no call */
static inline void text_add(text *t, const char *s, size_t n)
{
    if (text_room(t, n) == 0) {
        memcpy(t->p + t->len, s, n);
        t->len += n;
    }
}

/* A JSON string of s, escaped as json_dump escapes ('"', '\\' and
 * control bytes; the rest, UTF-8 included, as it is). */
static void text_str(text *t, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    static const char shorts[] = "\bb\ff\nn\rr\tt"; /* byte, its letter */
    const char *e;
    size_t n = strlen(s);
    if (text_room(t, n * 6 + 2))
        return;
    char *o = t->p + t->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c && c < 0x20 && (e = strchr(shorts, c))) {
            *o++ = '\\';
            *o++ = e[1];
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    t->len = (size_t)(o - t->p);
}

/* v's JSON text, as the host writes it. */
static void text_value(text *t, const sophia_host *h, const sophia_json *v)
{
    size_t room = t->failed ? 0 : t->cap - t->len;
    size_t n = room ? h->json_write(v, t->p + t->len, room) : 0;
    if (n >= room) {
        if (text_room(t, n))
            return;
        h->json_write(v, t->p + t->len, n + 1);
    }
    t->len += n;
}

/* timestamp_of as JSON text. */
static int timestamp_text(metrics_state *st, const point *p, text *t)
{
    const char *at = p->timestamp ? NULL : arrival_text(st, p);
    if (p->timestamp) {
        text_value(t, st->host, p->timestamp);
    } else if (at) {
        text_add(t, st->ts_json, st->ts_json_len);
    }
    return t->failed || (!p->timestamp && !at) ? SOPHIA_ENOMEM : 0;
}

/* dst = a b c d (NUL-terminated), cut to len; the per-point path avoids
 * printf (its format parsing cost more than the copy). The parts are a
 * few bytes each (names, separators), and a point joins about eight
 * times: copied byte by byte, not by a strlen and a memcpy call each. */
static void join4(char *dst, size_t len, const char *a, const char *b,
                  const char *c, const char *d)
{
    const char *parts[] = {a, b, c, d};
    size_t off = 0;
    if (!len)
        return;
    for (size_t i = 0; i < 4; i++)
        for (const char *q = parts[i]; *q && off + 1 < len; q++)
            dst[off++] = *q;
    dst[off] = '\0';
}

/* "dashboard\x1fmetric[\x1flabels]": the series' key in the state, in
 * out[SKEY_LEN] (the names are under NAME_MAX_LEN, the labels under
 * MP_LABELS_LEN). Copied by the lengths parse_point measured. */
static size_t series_key(const point *p, char out[SKEY_LEN])
{
    size_t o = p->dash_len;
    memcpy(out, p->dashboard ? p->dashboard : "", o);
    out[o++] = '\x1f';
    memcpy(out + o, p->metric, p->metric_len);
    o += p->metric_len;
    if (p->canon[0]) {
        size_t n = strlen(p->canon);
        out[o++] = '\x1f';
        memcpy(out + o, p->canon, n);
        o += n;
    }
    out[o] = '\0';
    return o;
}

/* "<dashboard or _>:<metric>[{labels}]": the series in cache keys and
 * alert ids (fits SKEY_LEN). */
static void series_name(const point *p, char *out, size_t len)
{
    join4(out, len, p->dashboard ? p->dashboard : "_", ":", p->metric,
          p->canon[0] ? "{" : "");
    if (p->canon[0]) {
        size_t off = strlen(out);
        join4(out + off, len - off, p->canon, "}", "", "");
    }
}

/* Where a cache put of point p goes: the key <prefix><a><series><b>
 * (on the stack, unless the prefix is unusually long) and its tags,
 * metrics + dashboard:<id>. */
typedef struct put_at {
    char *key;
    const char *tags[3];
    char tag[NAME_MAX_LEN + 16];
    char kbuf[SKEY_LEN + 64];
} put_at;

/* Appends s at dst[*off], keeping room for the NUL in cap; -1 when it
 * does not fit (dst then holds no key). */
static int cat(char *dst, size_t cap, size_t *off, const char *s)
{
    size_t o = *off;
    for (; *s; s++) {
        if (o + 1 >= cap)
            return -1;
        dst[o++] = *s;
    }
    *off = o;
    return 0;
}

/* <prefix><a><series name><b> into dst (cap bytes) in one pass; -1 when
 * it does not fit. */
static int key_into(const metrics_state *st, const point *p, const char *a,
                    const char *b, char *dst, size_t cap)
{
    size_t off = 0;
    if (cat(dst, cap, &off, st->cache_prefix) || cat(dst, cap, &off, a) ||
        cat(dst, cap, &off, p->dashboard ? p->dashboard : "_") ||
        cat(dst, cap, &off, ":") || cat(dst, cap, &off, p->metric) ||
        (p->canon[0] && (cat(dst, cap, &off, "{") ||
                         cat(dst, cap, &off, p->canon) ||
                         cat(dst, cap, &off, "}"))) ||
        cat(dst, cap, &off, b))
        return -1;
    dst[off] = '\0';
    return 0;
}

/* The key is written once, straight into kbuf (a point writes one or
 * two): joining the series name first, then measuring and joining the
 * key, was a tenth of a point's processing. */
static int put_at_make(const metrics_state *st, const point *p, const char *a,
                       const char *b, put_at *at)
{
    at->key = at->kbuf;
    if (key_into(st, p, a, b, at->kbuf, sizeof(at->kbuf))) {
        char name[SKEY_LEN]; /* an unusually long prefix: on the heap */
        series_name(p, name, sizeof(name));
        size_t klen = strlen(st->cache_prefix) + strlen(a) + strlen(name) +
                      strlen(b) + 1;
        if (!(at->key = malloc(klen)))
            return SOPHIA_ENOMEM;
        join4(at->key, klen, st->cache_prefix, a, name, b);
    }
    size_t off = 0;
    cat(at->tag, sizeof(at->tag), &off, "dashboard:"); /* a name fits */
    cat(at->tag, sizeof(at->tag), &off, p->dashboard ? p->dashboard : "_");
    at->tag[off] = '\0';
    at->tags[0] = "metrics";
    at->tags[1] = p->dashboard ? at->tag : NULL;
    at->tags[2] = NULL;
    return 0;
}

static void put_at_free(put_at *at)
{
    if (at->key != at->kbuf)
        free(at->key);
}

/* cache_put of point p's `value` (taken) under <prefix><a><b>. */
static int put(const metrics_state *st, const point *p, const char *a,
               const char *b, sophia_json *value, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    put_at at;
    if (put_at_make(st, p, a, b, &at)) {
        h->json_free(value);
        return SOPHIA_ENOMEM;
    }
    int rc = h->cache_put(ctx, at.key, value, st->ttl, at.tags);
    put_at_free(&at);
    return rc;
}

/* What a series' name makes of its points' texts: the update's start
 * and the latest value's key and tags, all functions of the series key.
 * Kept for the last series a point went to (a POST's points mostly go to
 * one): writing the key and the tag byte by byte and escaping the metric
 * name cost a point about 350 instructions. */
struct metrics_memo {
    char skey[SKEY_LEN]; /* "" before the first point */
    size_t skey_len;
    text head;           /* {"metric":<name>,"value": */
    put_at at;           /* <prefix><dashboard or _>:<metric>[{labels}] */
};

static void memo_free(struct metrics_memo *m)
{
    if (m && m->skey[0]) {
        text_free(&m->head);
        put_at_free(&m->at);
    }
    free(m);
}

/* The memo of point p's series `skey`, made when it is another's; NULL
 * on no memory. */
static const struct metrics_memo *memo_of(metrics_state *st, const point *p,
                                          const char *skey)
{
    struct metrics_memo *m = st->memo;
    if (m && m->skey[0] && m->skey_len == p->skey_len &&
        !memcmp(m->skey, skey, p->skey_len))
        return m;
    if (!m && !(m = st->memo = calloc(1, sizeof(*m))))
        return NULL;
    if (m->skey[0]) {
        text_free(&m->head);
        put_at_free(&m->at);
        m->skey[0] = '\0';
    }
    text_init(&m->head);
    text_add(&m->head, "{\"metric\":", 10);
    text_str(&m->head, p->metric);
    text_add(&m->head, ",\"value\":", 9);
    if (m->head.failed || put_at_make(st, p, "", "", &m->at)) {
        text_free(&m->head);
        return NULL;
    }
    memcpy(m->skey, skey, p->skey_len + 1);
    m->skey_len = p->skey_len;
    return m;
}

/* The point's update, {"metric":..,"value":..,"timestamp":..[,"labels":
 * ..]} - the members, in that order, of the value this published before
 * 1.4, so subscribers get the same bytes - and, for an in-order point,
 * its series' latest value for the cache, {"value":..,"timestamp":..}:
 * the update's middle. So both are one text, written once: the update is
 * published (the host copies it), then the comma before its "value" and
 * the byte after its timestamp become the braces of the latest value. */
static int publish_and_cache(metrics_state *st, const point *p,
                             const struct metrics_memo *m, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    text t;
    text_init(&t);
    text_add(&t, m->head.p, m->head.len);
    size_t from = t.len - 9; /* the comma of ,"value": */
    text_value(&t, h, p->value);
    text_add(&t, ",\"timestamp\":", 13);
    int rc = timestamp_text(st, p, &t);
    size_t to = t.len; /* after the timestamp */
    if (!rc && p->canon[0]) {
        sophia_json *labels = labels_of(h, p);
        if (!labels)
            t.failed = 1;
        text_add(&t, ",\"labels\":", 10);
        text_value(&t, h, labels);
        h->json_free(labels);
    }
    text_add(&t, "}", 1);
    if (!rc)
        rc = t.failed ? SOPHIA_ENOMEM
                      : h->publish_text(ctx, SOPHIA_UPDATE_METRIC, NULL,
                                        p->dashboard, t.p, t.len);
    if (!rc && p->in_order) {
        t.p[from] = '{';
        t.p[to] = '}';
        rc = h->cache_put_text(ctx, m->at.key, t.p + from, to + 1 - from,
                               st->ttl, m->at.tags);
    }
    text_free(&t);
    return rc;
}

/* ------------------------------------------------ aggregates, alerts */

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

/* The series' samples, as they will be once sample (t, v) is pushed,
 * that fall in window w ending at `end` (the watermark after the point);
 * published and cached as an aggregate. The committed series `s` may be
 * NULL (its first point). */
static int publish_window(metrics_state *st, const point *p, const series *s,
                          int64_t end, double v, double w, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    size_t n = 0;
    double sum = 0;
    int64_t from_us = end - (int64_t)(w * 1e6);
    /* the push evicts the oldest sample of a full ring */
    size_t from = s && s->n == st->max_samples ? 1 : 0;
    for (size_t i = from; s && i < s->n; i++) {
        size_t k = (s->head + i) % s->cap;
        if (s->t[k] >= from_us) {
            st->scratch[n++] = s->v[k];
            sum += s->v[k];
        }
    }
    if (p->t_us >= from_us) {
        st->scratch[n++] = v;
        sum += v;
    }
    if (!n)
        return 0; /* a late point before every window: nothing to say */
    qsort(st->scratch, n, sizeof(double), cmp_double);
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "aggregate");
    pu_set_str(h, d, "metric", p->metric);
    if (p->canon[0])
        pu_set(h, d, "labels", labels_of(h, p));
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
    char wtext[40];
    snprintf(wtext, sizeof(wtext), ":%g", w);
    int rc = put(st, p, "agg:", wtext, h->json_copy(d), ctx);
    if (rc) {
        h->json_free(d);
        return rc;
    }
    return h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, p->dashboard, d);
}

/* Announces rule r's firing, or its end, for point p's series. */
static int announce(metrics_state *st, const point *p, const threshold *r,
                    double v, int resolve, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    char name[SKEY_LEN], id[SKEY_LEN + 260], msg[SKEY_LEN + 100];
    series_name(p, name, sizeof(name));
    join4(id, sizeof(id), name, ":", r->spec, "");
    double level = resolve ? r->clear : r->trigger;
    snprintf(msg, sizeof(msg), "%s = %g is %s%s %g", name, v,
             resolve ? "back " : "", r->above != resolve ? "above" : "below",
             level);
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "metric", p->metric);
    pu_set(h, d, "value", h->json_num(v));
    pu_set(h, d, "threshold", h->json_num(level));
    pu_set_str(h, d, "dashboard_id", p->dashboard);
    if (p->canon[0])
        pu_set(h, d, "labels", labels_of(h, p));
    sophia_json *ts = timestamp_of(st, p);
    pu_set(h, d, "timestamp", ts);
    if (!SOPHIA_HOST_HAS(h, alert_ex) || !h->alert_ex)
        return h->alert(ctx, "threshold", resolve ? "info" : r->severity, msg, d);
    sophia_alert a = {.struct_size = sizeof(a), .alert_type = "threshold",
                      .severity = r->severity, .message = msg, .alert_id = id,
                      .dashboard_id = p->dashboard, .resolve = resolve};
    return h->alert_ex(ctx, &a, d);
}

/* Rule i against value v at event time p->t_us; changes rs (the staged
 * copy) and announces what the cooldown and alert_resolves let through
 * (see the top of the file). */
static int check_rule(metrics_state *st, const point *p, rule_state *rs,
                      size_t i, double v, sophia_ctx *ctx)
{
    const threshold *r = &st->rules[i];
    int past = r->above ? v > r->trigger : v < r->trigger;
    int back = r->above ? v < r->clear : v > r->clear;
    int cooled = !rs->fired_us || p->t_us - rs->fired_us >= st->cooldown_us;
    if (!rs->firing && past) {
        rs->firing = 1;
        if (!cooled) {
            rs->muted = 1;
            st->host->counter_add(st->self, "alerts_muted", 1);
            return 0;
        }
    } else if (rs->firing && back) {
        int announced = !rs->muted;
        rs->firing = rs->muted = 0;
        return announced && st->resolves ? announce(st, p, r, v, 1, ctx) : 0;
    } else if (!(rs->firing && rs->muted && cooled)) {
        return 0; /* no change, or still muted */
    }
    rs->muted = 0; /* announced now: at the crossing, or after a mute */
    rs->fired_us = p->t_us;
    return announce(st, p, r, v, 0, ctx);
}

/* Rules and windows for one point of series `skey` (committed state s,
 * NULL when new): the alerts and aggregates go into ctx, the series' new
 * state and the point's identity (fingerprint fp, 0 = none) into one
 * staged change: one allocation and one staged entry a point, where the
 * identity had its own. */
static int track(metrics_state *st, const point *p, const series *s,
                 const char *skey, uint64_t fp, sophia_ctx *ctx)
{
    const sophia_host *h = st->host;
    metrics_change *c = ms_change_new(st, skey, p->skey_len);
    if (!c)
        return SOPHIA_ENOMEM;
    if (fp) {
        c->seen.s = &st->seen;
        c->seen.fp = fp;
    }
    if (s && st->nrules)
        memcpy(c->rules, s->rules, st->nrules * sizeof(rule_state));
    double v = h->json_number(p->value, 0);
    c->t = p->t_us;
    c->v = v;
    int rc = 0;
    for (size_t i = 0; p->in_order && !rc && i < st->nrules; i++)
        if (!strcmp(st->rules[i].metric, p->metric))
            rc = check_rule(st, p, &c->rules[i], i, v, ctx);
    if (!rc && st->nwindows) {
        int64_t now = h->now_us(); /* the windows' throttle only */
        c->push = 1;
        int64_t end = p->in_order ? p->t_us : s->wm_us;
        if (!s || !s->last_agg_us ||
            (double)(now - s->last_agg_us) >= st->agg_every * 1e6) {
            c->agg_us = now;
            for (size_t i = 0; !rc && i < st->nwindows; i++)
                rc = publish_window(st, p, s, end, v, st->windows[i], ctx);
        }
    }
    if (rc) {
        free(c);
        return rc;
    }
    /* Applied at once: the stream goes on to the next point without
     * waiting for this one's cache puts (see sdk.h stage_undoable). */
    if (SOPHIA_HOST_HAS(h, stage_undoable))
        return h->stage_undoable(ctx, ms_apply, ms_undo, free, c);
    return h->stage(ctx, ms_apply_once, free, c);
}

/* "ts:<timestamp text or number bits>\x1f<value bits as hex>". */
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
    join4(out, len, "ts:", ts ? ts : bits[0], "\x1f", bits[1]);
}

/* Room for a point's identity: the series key, a separator and what
 * identifies the point in it, at most IDENT_WHAT - 1 bytes. */
#define IDENT_WHAT 300
#define IDENT_LEN (SKEY_LEN + 1 + IDENT_WHAT)

/* The point's identity within its series (see the top of the file) into
 * out[IDENT_LEN], or "" when it has none: "<series key>\x1f<what>", what
 * being "id:<source id>" or stamp_text, cut to IDENT_WHAT - 1 bytes as it
 * always was (the fingerprints a reload hands over stay valid). The
 * series key (klen bytes) carries the labels, so hosts reporting the
 * same metric, second and value are two points. */
static void point_identity(const metrics_state *st, const sophia_event *ev,
                           const point *p, const char *skey, size_t klen,
                           char *out)
{
    char *what = out + klen + 1;
    out[0] = '\0';
    if (ev->id && *ev->id) {
        size_t n = strnlen(ev->id, IDENT_WHAT - 4);
        memcpy(what, "id:", 3);
        memcpy(what + 3, ev->id, n);
        what[3 + n] = '\0';
    } else if (p->timestamp) {
        stamp_text(st->host, p, what, IDENT_WHAT);
    } else {
        return;
    }
    memcpy(out, skey, klen);
    out[klen] = '\x1f';
}

/* The counter naming why the point is dropped before any effect, or NULL
 * when it goes on (the rules at the top of the file). */
static const char *dropped(metrics_state *st, const point *p, const series *s,
                           const char *skey)
{
    if (p->t_us > p->arrival_us + st->future_us)
        return "future";
    if (s && s->wm_us != MS_NO_WM && p->t_us < s->wm_us - st->lateness_us)
        return "late";
    if (!s && ms_series_of_metric(st, skey) >= st->max_per_metric)
        return "series_refused";
    return NULL;
}

/* Publish, cache (an in-order point only) and track one point (its
 * identity's fingerprint fp, 0 = none). */
static int handle(metrics_state *st, point *p, const series *s,
                  const char *skey, uint64_t fp, sophia_ctx *ctx)
{
    const struct metrics_memo *m = memo_of(st, p, skey);
    int rc = m ? publish_and_cache(st, p, m, ctx) : SOPHIA_ENOMEM;
    return rc ? rc : track(st, p, s, skey, fp, ctx);
}

static sophia_verdict metrics_process(void *state, const sophia_event *ev,
                                      sophia_ctx *ctx)
{
    metrics_state *st = state;
    const sophia_host *h = st->host;
    point p; /* cleared but for the labels' buffer: its first byte will do */
    ms_clear(&p, offsetof(point, canon));
    p.canon[0] = '\0';
    char why[200];
    if (parse_point(st, ev, &p, why, sizeof(why))) {
        h->log(st->self, SOPHIA_LOG_WARN, "bad metric point (stream %s): %s",
               ev && ev->stream ? ev->stream : "?", why);
        return SOPHIA_PROCESS_ERROR;
    }
    char skey[SKEY_LEN], id[IDENT_LEN];
    p.skey_len = series_key(&p, skey);
    point_identity(st, ev, &p, skey, p.skey_len, id);
    uint64_t fp = id[0] ? pu_seen_fp(&st->seen, id) : 0;
    if (fp) /* its line comes in during the series look-up */
        pu_seen_prefetch(&st->seen, fp);
    const series *s = ms_series_get(st, skey);
    if (fp && st->seen.slots[pu_seen_slot(&st->seen, fp)]) {
        h->counter_add(st->self, "duplicates", 1);
        return SOPHIA_PROCESS_OK; /* committed before: nothing again */
    }
    const char *drop = dropped(st, &p, s, skey);
    if (drop) {
        h->counter_add(st->self, drop, 1);
        return SOPHIA_PROCESS_OK; /* counted, not a failure */
    }
    p.in_order = !s || s->wm_us == MS_NO_WM || p.t_us >= s->wm_us;
    int rc = handle(st, &p, s, skey, fp, ctx);
    if (rc) {
        h->log(st->self, SOPHIA_LOG_WARN, "metric %s not queued: %s",
               p.metric, h->strerror(rc));
        return SOPHIA_PROCESS_ERROR;
    }
    h->counter_add(st->self, "points", 1);
    if (!p.in_order)
        h->counter_add(st->self, "out_of_order", 1);
    return SOPHIA_PROCESS_OK;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option metrics_options[] = {
    {"default_dashboard", SOPHIA_OPT_STRING, "",
     "dashboard for points without a dashboard_id (\"\" = none)"},
    {"cache_prefix", SOPHIA_OPT_STRING, "metric:",
     "cache key prefix; keys are <prefix><dashboard or _>:<metric>"
     "[{<labels>}]"},
    {"ttl", SOPHIA_OPT_DOUBLE, "300",
     "seconds a cached latest value lives (<= 0: the tier's default)"},
    {"windows", SOPHIA_OPT_LIST, NULL,
     "rolling aggregate windows in seconds of event time, e.g. [60, 300] "
     "(empty: none)"},
    {"aggregate_every", SOPHIA_OPT_DOUBLE, "1",
     "seconds between aggregate updates of one series"},
    {"max_samples", SOPHIA_OPT_INT, "10000",
     "samples kept per series for the windows (storage grows to it; "
     "those older than the longest window + allowed_lateness go)"},
    {"thresholds", SOPHIA_OPT_LIST, NULL,
     "alerts: entries 'metric>trigger[/clear][@severity]' or with '<'"},
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "point identities (source id, else timestamp + value) remembered to "
     "skip redeliveries"},
    {"allowed_lateness", SOPHIA_OPT_DOUBLE, "60",
     "seconds a point may be older than its series' newest and still "
     "count; older ones are dropped (counter late)"},
    {"max_future", SOPHIA_OPT_DOUBLE, "300",
     "seconds a point's timestamp may be ahead of its arrival; further "
     "ones are dropped (counter future)"},
    {"max_series", SOPHIA_OPT_INT, "100000",
     "series (dashboard + metric + labels) kept; the oldest makes room"},
    {"max_series_per_metric", SOPHIA_OPT_INT, "1000",
     "series per dashboard + metric; a point making one more is dropped "
     "(counter series_refused)"},
    {"alert_cooldown", SOPHIA_OPT_DOUBLE, "300",
     "least seconds (event time) between two firings of one threshold "
     "rule in one series"},
    {"alert_resolves", SOPHIA_OPT_BOOL, "true",
     "announce a threshold alert's end (state resolved, same alert_id)"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops metrics_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = metrics_process,
    .export_state = ms_export,
    .import_state = ms_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "metrics",
    .version = "0.1.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "metric points -> metric updates on their dashboard, "
                   "the latest value per series in the cache, rolling "
                   "windows and threshold alerts in event time",
    .options = metrics_options,
    .init = metrics_init,
    .fini = metrics_fini,
    .processor = &metrics_ops,
};
