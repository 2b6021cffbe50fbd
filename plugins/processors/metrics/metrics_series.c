/*
 * metrics_series - the metrics processor's series: the bounded tables
 * that hold them, the change one point makes to its series (applied at
 * once and undone unless its event commits: SDK 1.1 stage_undoable), and
 * the hand-over of all of it to the instance a reload puts in its place.
 *
 * Bounds. At most max_series series (the oldest created makes room) and,
 * per dashboard + metric, max_series_per_metric (metrics.c refuses the
 * point that would make one more). A series costs its struct, its key
 * and its rule states; its window storage starts empty and doubles as
 * samples arrive, up to max_samples, so a series that sees a handful of
 * points holds a handful of samples rather than max_samples of them (the
 * 0.1 code allocated all 10,000 up front: ~160 KB a series); samples
 * older than the longest window plus the lateness are dropped as points
 * come, so a busy series holds what its windows can still use (its ring
 * keeps the largest size it reached).
 *
 * Undo. Changes are undone newest first, so an undo finds its series
 * exactly as its own apply left it: the ring is stepped back over the
 * push and over the samples the apply dropped as too old (they are still
 * in their slots; the one slot the push wrote is restored; a grown ring
 * keeps its capacity: it only holds what it held before), the watermark,
 * the throttle time and the rule states are restored, and a series the
 * apply created is deleted again. What a
 * bound evicted to make room for a created series is not brought back.
 */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- tables */

static void series_free(void *p)
{
    series *s = p;
    if (!s)
        return;
    metric_count *mc = s->mc;
    free(s->t);
    free(s->v);
    free(s);
    if (mc && --mc->n == 0)
        pu_table_del(mc->tbl, mc->key); /* frees mc */
}

int ms_tables_init(metrics_state *st, size_t max_series)
{
    /* A metric_count lives while one of its series does, and one more
     * may exist for a moment while a new series is being made: never
     * evicted under a series that points at it. */
    if (pu_table_init(&st->per_metric, max_series + 1, free))
        return SOPHIA_ENOMEM;
    return pu_table_init(&st->series, max_series, series_free);
}

void ms_tables_free(metrics_state *st)
{
    st->last = NULL;
    if (st->series.b)
        pu_table_free(&st->series); /* first: series release their counts */
    if (st->per_metric.b)
        pu_table_free(&st->per_metric);
}

/* The series a point names is mostly the one the point before named
 * (a POST's points to one metric), and each point looks it up twice
 * (process, then its change's apply): the last one found is kept with
 * its key, compared before the keyed hash. Every removal from the table
 * (undo, a put's eviction, the end) forgets it first, so it never
 * outlives its series. */
series *ms_series_get(metrics_state *st, const char *key)
{
    if (st->last && !strcmp(st->last_key, key))
        return st->last;
    pu_entry *e = *pu_slot(&st->series, key);
    if (!e)
        return NULL;
    st->last_key = e->key;
    return st->last = e->val;
}

/* "dashboard\x1fmetric" of "dashboard\x1fmetric[\x1flabels]" into out. */
static void metric_key(const char *key, char *out, size_t len)
{
    const char *a = strchr(key, '\x1f');
    const char *b = a ? strchr(a + 1, '\x1f') : NULL;
    size_t n = b ? (size_t)(b - key) : strlen(key);
    if (n >= len)
        n = len - 1;
    memcpy(out, key, n);
    out[n] = '\0';
}

size_t ms_series_of_metric(metrics_state *st, const char *key)
{
    char mk[1100];
    metric_key(key, mk, sizeof(mk));
    metric_count *mc = pu_table_get(&st->per_metric, mk);
    return mc ? mc->n : 0;
}

static metric_count *count_for(metrics_state *st, const char *key)
{
    char mk[1100];
    metric_key(key, mk, sizeof(mk));
    metric_count *mc = pu_table_get(&st->per_metric, mk);
    if (mc)
        return mc;
    size_t n = strlen(mk) + 1;
    if (!(mc = calloc(1, sizeof(*mc) + n)))
        return NULL;
    mc->tbl = &st->per_metric;
    memcpy(mc->key, mk, n);
    return pu_table_put(&st->per_metric, mk, mc) ? NULL : mc;
}

series *ms_series_make(metrics_state *st, const char *key, int *created)
{
    series *s = ms_series_get(st, key);
    *created = !s;
    if (s)
        return s;
    metric_count *mc = count_for(st, key);
    if (!mc)
        return NULL;
    s = calloc(1, sizeof(*s) + st->nrules * sizeof(rule_state));
    if (!s) {
        if (!mc->n)
            pu_table_del(&st->per_metric, mc->key);
        return NULL;
    }
    s->wm_us = MS_NO_WM;
    s->mc = mc;
    mc->n++; /* before the put: its eviction may release this metric */
    st->last = NULL; /* the put may evict it */
    return pu_table_put(&st->series, key, s) ? NULL : s;
}

/* ---------------------------------------------------------- samples */

/* Doubles the ring (up to max_samples), oldest sample first; -1 when
 * there is no memory (the push then evicts instead). */
static int series_grow(series *s, size_t max)
{
    size_t cap = s->cap ? 2 * s->cap : 8;
    if (cap > max)
        cap = max;
    int64_t *t = malloc(cap * sizeof(*t));
    double *v = malloc(cap * sizeof(*v));
    if (!t || !v) {
        free(t);
        free(v);
        return -1;
    }
    for (size_t i = 0; i < s->n; i++) {
        t[i] = s->t[(s->head + i) % s->cap];
        v[i] = s->v[(s->head + i) % s->cap];
    }
    free(s->t);
    free(s->v);
    s->t = t;
    s->v = v;
    s->head = 0;
    s->cap = cap;
    return 0;
}

/* Adds (t, v); 1 when it overwrote the oldest sample (a full ring of
 * max_samples), 0 when not, -1 when there is no room at all. */
static int series_push(series *s, size_t max, int64_t t, double v)
{
    if (s->n == s->cap && s->cap < max && series_grow(s, max) && !s->cap)
        return -1;
    int full = s->n == s->cap;
    s->t[(s->head + s->n) % s->cap] = t;
    s->v[(s->head + s->n) % s->cap] = v;
    if (!full)
        s->n++;
    else
        s->head = (s->head + 1) % s->cap;
    return full;
}

/* ----------------------------------------------------------- change */

metrics_change *ms_change_new(const metrics_state *st, const char *key,
                              size_t klen)
{
    size_t rl = st->nrules * sizeof(rule_state);
    klen++; /* and its NUL */
    /* malloc and clear what needs it: calloc cost twice as much */
    metrics_change *c = malloc(sizeof(*c) + 2 * rl + klen);
    if (!c)
        return NULL;
    ms_clear(c, sizeof(*c));
    if (rl) /* no rules, no call: most configurations */
        memset(c + 1, 0, 2 * rl);
    c->rules = (rule_state *)(c + 1);
    c->old_rules = c->rules + st->nrules;
    c->key = (char *)(c->old_rules + st->nrules);
    memcpy(c->key, key, klen);
    return c;
}

/* Drops, from the oldest pushed on, the samples older than `cutoff`:
 * they can be in no window any more. Stops at the first younger one (an
 * out-of-order point may leave an older one behind it: the windows skip
 * it by its time). */
static size_t series_prune(series *s, int64_t cutoff)
{
    size_t k = 0;
    while (s->n && s->t[s->head] < cutoff) {
        s->head = (s->head + 1) % s->cap;
        s->n--;
        k++;
    }
    return k;
}

/* The point's sample into s, recording what undo needs. */
static void apply_push(metrics_state *st, series *s, metrics_change *c)
{
    int64_t wm = s->wm_us == MS_NO_WM || c->t > s->wm_us ? c->t : s->wm_us;
    c->pruned = s->cap ? series_prune(s, wm - st->keep_us) : 0;
    /* the slot the push writes, unless it grows the ring (fresh memory) */
    c->wrote_old = s->cap && !(s->n == s->cap && s->cap < st->max_samples);
    if (c->wrote_old) {
        c->slot = (s->head + s->n) % s->cap;
        c->old_t = s->t[c->slot];
        c->old_v = s->v[c->slot];
    }
    int pushed = series_push(s, st->max_samples, c->t, c->v);
    c->evicted = pushed == 1;
    c->push = pushed >= 0; /* undo steps back only what was pushed */
}

void ms_apply(void *state, void *change)
{
    metrics_state *st = state;
    metrics_change *c = change;
    size_t rl = st->nrules * sizeof(rule_state);
    if (c->seen.s) /* its own set: independent of the series */
        pu_seen_apply(NULL, &c->seen);
    series *s = ms_series_make(st, c->key, &c->created);
    if (!s)
        return;
    c->applied = 1;
    c->old_agg_us = s->last_agg_us;
    c->old_wm_us = s->wm_us;
    if (rl)
        memcpy(c->old_rules, s->rules, rl);
    if (c->push)
        apply_push(st, s, c);
    if (c->agg_us)
        s->last_agg_us = c->agg_us;
    if (s->wm_us == MS_NO_WM || c->t > s->wm_us)
        s->wm_us = c->t;
    if (rl)
        memcpy(s->rules, c->rules, rl);
}

/* Steps the ring back over the push and the pruning. */
static void undo_push(series *s, const metrics_change *c)
{
    if (c->evicted)
        s->head = (s->head + s->cap - 1) % s->cap;
    else
        s->n--;
    if (c->wrote_old) {
        s->t[c->slot] = c->old_t;
        s->v[c->slot] = c->old_v;
    }
    s->head = (s->head + s->cap - c->pruned % s->cap) % s->cap;
    s->n += c->pruned;
}

void ms_undo(void *state, void *change)
{
    metrics_state *st = state;
    metrics_change *c = change;
    if (c->seen.s) /* applied whatever became of the series */
        pu_seen_undo(NULL, &c->seen);
    series *s = c->applied ? ms_series_get(st, c->key) : NULL;
    if (!s)
        return;
    if (c->created) {
        st->last = NULL;
        pu_table_del(&st->series, c->key);
        return;
    }
    if (c->push)
        undo_push(s, c);
    s->last_agg_us = c->old_agg_us;
    s->wm_us = c->old_wm_us;
    memcpy(s->rules, c->old_rules, st->nrules * sizeof(rule_state));
}

/* For a host without stage_undoable: applied at the commit. */
void ms_apply_once(void *state, void *change)
{
    ms_apply(state, change);
    free(change);
}

/* --------------------------------------------- hot reload hand-over */

/* A rule state as {"spec","firing","muted","fired_us"}. */
static sophia_json *rule_json(const sophia_host *h, const threshold *r,
                              const rule_state *rs)
{
    sophia_json *o = h->json_object();
    pu_set_str(h, o, "spec", r->spec);
    pu_set(h, o, "firing", h->json_bool_new(rs->firing));
    pu_set(h, o, "muted", h->json_bool_new(rs->muted));
    if (pu_set(h, o, "fired_us", h->json_int(rs->fired_us)) && o) {
        h->json_free(o);
        return NULL;
    }
    return o;
}

/* One series as {"key","t":[us...],"v":[...],"wm":us,"rules":[...]}
 * ("wm" absent before its first point; "rules" only the rules whose
 * state is not the initial one). */
static sophia_json *series_json(const metrics_state *st, const char *key,
                                const series *s)
{
    const sophia_host *h = st->host;
    sophia_json *o = h->json_object(), *t = h->json_array(),
                *v = h->json_array(), *r = h->json_array();
    for (size_t i = 0; t && v && i < s->n; i++) {
        size_t k = (s->head + i) % s->cap;
        h->json_append(t, h->json_int(s->t[k]));
        h->json_append(v, h->json_num(s->v[k]));
    }
    for (size_t i = 0; r && i < st->nrules; i++) {
        const rule_state *rs = &s->rules[i];
        if ((rs->firing || rs->muted || rs->fired_us) &&
            h->json_append(r, rule_json(h, &st->rules[i], rs))) {
            h->json_free(r);
            r = NULL;
        }
    }
    pu_set_str(h, o, "key", key);
    if (s->wm_us != MS_NO_WM)
        pu_set(h, o, "wm", h->json_int(s->wm_us));
    int rc = pu_set(h, o, "t", t); /* takes t, whatever it returns */
    if (!rc) {
        rc = pu_set(h, o, "v", v);
        v = NULL;
    }
    if (!rc) {
        rc = pu_set(h, o, "rules", r);
        r = NULL;
    }
    if (v)
        h->json_free(v);
    if (r)
        h->json_free(r);
    if (rc && o) {
        h->json_free(o);
        return NULL;
    }
    return o;
}

/* The committed state, so windows, watermarks, alert states and
 * redelivery checks survive an upgrade:
 * {"format":3,"series":[series_json...],"seen":{pu_seen_export}}.
 * Format 2 (0.1 on SDK 1.1) had "firing":[rule specs] and no watermark
 * or cooldown; format 1 (before SDK 1.1) had neither firing nor seen. */
char *ms_export(void *state)
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
    pu_set(h, doc, "format", h->json_int(3));
    int rc = pu_set(h, doc, "series", all);
    if (!rc)
        rc = pu_set(h, doc, "seen", pu_seen_export(h, &st->seen));
    return pu_export_text(h, doc, rc);
}

static const threshold *rule_by_spec(const metrics_state *st, const char *spec,
                                     size_t *i)
{
    for (*i = 0; spec && *i < st->nrules; (*i)++)
        if (!strcmp(st->rules[*i].spec, spec))
            return &st->rules[*i];
    return NULL;
}

/* Rule states whose spec this instance also has (a rule the new options
 * changed starts over): format 3's "rules", format 2's "firing". */
static void import_rules(metrics_state *st, series *s, const sophia_json *o)
{
    const sophia_host *h = st->host;
    const sophia_json *r = h->json_get(o, "rules"), *f = h->json_get(o, "firing");
    size_t i;
    for (size_t k = 0; k < h->json_size(r); k++) {
        const sophia_json *x = h->json_at(r, k);
        if (!rule_by_spec(st, h->json_string(h->json_get(x, "spec")), &i))
            continue;
        s->rules[i].firing = (unsigned char)h->json_bool(h->json_get(x, "firing"), 0);
        s->rules[i].muted = (unsigned char)h->json_bool(h->json_get(x, "muted"), 0);
        s->rules[i].fired_us = (int64_t)h->json_number(h->json_get(x, "fired_us"), 0);
    }
    for (size_t k = 0; k < h->json_size(f); k++)
        if (rule_by_spec(st, h->json_string(h->json_at(f, k)), &i))
            s->rules[i].firing = 1;
}

/* One exported series into this instance, within its bounds: a series
 * its metric has no room for stays out. Formats 1 and 2 held receipt
 * times and no watermark: the samples come across and the first point
 * sets the watermark. */
static void import_series(metrics_state *st, const sophia_json *o)
{
    const sophia_host *h = st->host;
    const char *key = h->json_string(h->json_get(o, "key"));
    const sophia_json *t = h->json_get(o, "t"), *v = h->json_get(o, "v");
    const sophia_json *wm = h->json_get(o, "wm");
    if (!key || (!ms_series_get(st, key) &&
                 ms_series_of_metric(st, key) >= st->max_per_metric))
        return;
    int created;
    series *s = ms_series_make(st, key, &created);
    if (!s)
        return;
    size_t n = h->json_size(t);
    for (size_t k = 0; st->nwindows && k < n && k < h->json_size(v); k++)
        series_push(s, st->max_samples,
                    (int64_t)h->json_number(h->json_at(t, k), 0),
                    h->json_number(h->json_at(v, k), 0));
    if (h->json_type(wm) == SOPHIA_JSON_NUMBER)
        s->wm_us = (int64_t)h->json_number(wm, 0);
    import_rules(st, s, o);
}

int ms_import(void *state, const char *json)
{
    metrics_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI; /* a host without json_parse */
    sophia_json *doc = h->json_parse(json);
    const sophia_json *all = h->json_get(doc, "series");
    double format = h->json_number(h->json_get(doc, "format"), 0);
    if (!doc || (format != 1 && format != 2 && format != 3) ||
        h->json_type(all) != SOPHIA_JSON_ARRAY) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    for (size_t i = 0; i < h->json_size(all); i++)
        import_series(st, h->json_at(all, i));
    int rc = pu_seen_import(h, &st->seen, h->json_get(doc, "seen"));
    h->json_free(doc);
    return rc;
}
