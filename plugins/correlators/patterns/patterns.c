/*
 * patterns - a correlator (SDK 1.3) running rules written in YAML over the
 * committed events of several streams (patterns.h says what a rule is).
 *
 * Per rule, one record per key (the entity the rule's key paths name)
 * holds where the key's sequence stands, the events it matched so far
 * (copies, at most `max_events`), the last ordered value each `regresses`
 * step saw and the `while` state. Records live in an LRU table bounded by
 * `max_keys` (the least recently seen key goes first); a repeating timer
 * (`sweep`) forgets keys idle longer than the rule's `keep` (default: its
 * window), so memory follows the keys that are live, not every key ever
 * seen. Time is the event's receipt time (received_us), so events held
 * while the snapshot loads, or replayed, keep their spacing.
 *
 * observe() changes the records directly: the host calls it after the
 * event committed, once, and nothing puts it back. Each record it
 * changes (or a sweep or eviction drops) is remembered, and
 * export_changes (SDK 1.3) hands the host just those records, which it
 * writes to Redis before the event is acknowledged; import_key takes
 * them back one by one at start-up. The whole state goes out as JSON
 * (export_state) for a reload, and comes back in import_state, rule by
 * rule (by name: a rule renamed or removed starts empty, the others
 * keep their keys).
 */
#include "patterns.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../processors/proc_util.h"

typedef struct hit {
    char *stream;
    int64_t at_us;
    sophia_json *event; /* a copy, NULL with attach: false */
} hit;

typedef struct rec {
    const sophia_host *h; /* to free its events (pu_table's free_val) */
    size_t stage, in_stage; /* the step it waits for, its matches so far */
    hit *hits;
    size_t nhits;
    int64_t first_us, last_us;
    int prev[PAT_MAX_STEPS]; /* regresses: last index seen, -1 none */
    int on;                  /* the `while` state */
} rec;

/* A key whose record changed since the last export_changes. */
typedef struct dirty {
    size_t rule;
    char *key;
} dirty;

typedef struct pat_state {
    const sophia_host *h;
    sophia_self *self;
    pat_rule *rules;
    size_t nrules;
    pu_table *keys; /* one per rule: key -> rec */
    size_t max_keys, max_events;
    int attach;
    int tracking; /* export_changes was called: keep `dirty` */
    dirty *dirty;
    size_t ndirty, capdirty;
} pat_state;

/* ------------------------------------------------------------ records */

/* Remembers that rule `ri`'s record of `key` changed (or went): what the
 * next export_changes emits. Only once the host asked for changes (a
 * 1.2 host never does, and the list would only grow). */
static void mark(pat_state *st, size_t ri, const char *key)
{
    if (!st->tracking)
        return;
    if (st->ndirty && st->dirty[st->ndirty - 1].rule == ri &&
        !strcmp(st->dirty[st->ndirty - 1].key, key))
        return; /* the same key twice in a row: one event's steps */
    if (st->ndirty == st->capdirty) {
        size_t cap = st->capdirty ? st->capdirty * 2 : 16;
        dirty *g = realloc(st->dirty, cap * sizeof(*g));
        if (!g)
            return; /* written at its next change */
        st->dirty = g;
        st->capdirty = cap;
    }
    char *k = pu_strdup(key);
    if (k)
        st->dirty[st->ndirty++] = (dirty){ri, k};
}

static void hits_clear(rec *r)
{
    for (size_t i = 0; i < r->nhits; i++) {
        free(r->hits[i].stream);
        r->h->json_free(r->hits[i].event);
    }
    r->nhits = r->stage = r->in_stage = 0;
    r->first_us = 0;
}

static void rec_free(void *v)
{
    rec *r = v;
    hits_clear(r);
    free(r->hits);
    free(r);
}

static rec *rec_get(pat_state *st, size_t rule, const char *key)
{
    pu_table *t = &st->keys[rule];
    rec *r = pu_table_get(t, key);
    if (r) {
        pu_table_touch(t, key);
        return r;
    }
    if (!(r = calloc(1, sizeof(*r))) ||
        !(r->hits = calloc(st->max_events, sizeof(*r->hits)))) {
        free(r);
        return NULL;
    }
    r->h = st->h;
    for (size_t i = 0; i < PAT_MAX_STEPS; i++)
        r->prev[i] = -1;
    if (t->n >= t->max && t->oldest) /* the put evicts it: it goes */
        mark(st, rule, t->oldest->key);
    return pu_table_put(t, key, r) == 0 ? r : NULL;
}

/* Drops the hits that fell out of the window: while on the first step
 * the window slides (a count of N within it), later the sequence starts
 * over. */
static void expire(const pat_rule *ru, rec *r, int64_t now)
{
    int64_t win = (int64_t)(ru->window_s * 1e6);
    if (!r->nhits || now - r->first_us <= win)
        return;
    if (r->stage > 0) {
        hits_clear(r);
        return;
    }
    size_t drop = 0;
    while (drop < r->nhits && now - r->hits[drop].at_us > win)
        drop++;
    for (size_t i = 0; i < drop; i++) {
        free(r->hits[i].stream);
        r->h->json_free(r->hits[i].event);
    }
    memmove(r->hits, r->hits + drop, (r->nhits - drop) * sizeof(*r->hits));
    r->nhits -= drop;
    r->in_stage = r->nhits;
    r->first_us = r->nhits ? r->hits[0].at_us : 0;
}

static void add_hit(pat_state *st, rec *r, const sophia_event *ev)
{
    if (!r->nhits)
        r->first_us = ev->received_us;
    if (r->nhits == st->max_events) { /* the oldest attachment goes */
        free(r->hits[0].stream);
        st->h->json_free(r->hits[0].event);
        memmove(r->hits, r->hits + 1, (r->nhits - 1) * sizeof(*r->hits));
        r->nhits--;
    }
    r->hits[r->nhits++] = (hit){
        .stream = pu_strdup(ev->stream), .at_us = ev->received_us,
        .event = st->attach ? st->h->json_copy(ev->body) : NULL};
}

/* ------------------------------------------------------------- firing */

/* The hits as [{stream, received_us, event}]: the events copied, or
 * moved out of `r` when `take` (a firing hands them to its alert rather
 * than copy what is dropped right after: copies are most of the cost). */
static sophia_json *hits_json(const sophia_host *h, rec *r, int take)
{
    sophia_json *a = h->json_array();
    for (size_t i = 0; a && i < r->nhits; i++) {
        sophia_json *o = h->json_object();
        hit *x = &r->hits[i];
        pu_set_str(h, o, "stream", x->stream);
        pu_set(h, o, "received_us", h->json_int(x->at_us));
        if (x->event)
            pu_set(h, o, "event", take ? x->event : h->json_copy(x->event));
        if (take)
            x->event = NULL;
        h->json_append(a, o);
    }
    return a;
}

static int fire(pat_state *st, const pat_rule *ru, rec *r, const char *key,
                sophia_ctx *ctx)
{
    const sophia_host *h = st->h;
    char aid[512];
    snprintf(aid, sizeof(aid), "%s:%s", ru->name, key);
    sophia_json *data = h->json_object();
    pu_set_str(h, data, "rule", ru->name);
    pu_set_str(h, data, "key", key);
    pu_set(h, data, "events", hits_json(h, r, 1));
    sophia_alert a = {.struct_size = sizeof(a), .alert_type = "correlation",
                      .severity = ru->severity,
                      .message = ru->message ? ru->message : ru->name,
                      .alert_id = aid, .topic = ru->topic};
    int rc = h->alert_ex(ctx, &a, data);
    h->counter_add(st->self, "fired", 1);
    hits_clear(r);
    return rc;
}

/* ------------------------------------------------------------ observe */

/* Step `i` of rule `ru` on `ev` for key record `r`; 1 when it matched. */
static int step_on(pat_state *st, const pat_rule *ru, size_t i, rec *r,
                   const sophia_event *ev)
{
    const pat_step *s = &ru->steps[i];
    int ok = 1;
    if (s->regress_path) { /* remembered whatever the sequence's stage */
        int idx = pat_order_of(st->h, s, ev->body);
        ok = idx >= 0 && r->prev[i] >= 0 && idx < r->prev[i];
        if (idx >= 0)
            r->prev[i] = idx;
    }
    return ok && i == r->stage && (!ru->has_when || r->on) &&
           pat_match(st->h, s, ev->body);
}

/* The record step `i` works on for `key`: made only when the step must
 * remember the key (a regression's last value) or would start its
 * sequence, so events that match nothing cost no memory. A rule with a
 * `while` state has its records made by that state's step. */
static rec *step_rec(pat_state *st, size_t ri, size_t i, const char *key,
                     const sophia_event *ev)
{
    const pat_rule *ru = &st->rules[ri];
    const pat_step *s = &ru->steps[i];
    rec *r = pu_table_get(&st->keys[ri], key);
    if (r) {
        pu_table_touch(&st->keys[ri], key);
        return r;
    }
    if (s->regress_path ||
        (i == 0 && !ru->has_when && pat_match(st->h, s, ev->body)))
        return rec_get(st, ri, key);
    return NULL;
}

static int rule_on(pat_state *st, size_t ri, const sophia_event *ev,
                   sophia_ctx *ctx)
{
    const pat_rule *ru = &st->rules[ri];
    const sophia_host *h = st->h;
    char buf[256];
    const char *key;
    rec *r;
    if (ru->has_when && !strcmp(ru->when.stream, ev->stream) &&
        pat_has_fields(h, &ru->when, ev->body) &&
        (key = pat_key(h, &ru->when, ev->body, buf, sizeof(buf)))) {
        int on = pat_match(h, &ru->when, ev->body);
        /* A key whose state never held is not worth a record. */
        r = on ? rec_get(st, ri, key) : pu_table_get(&st->keys[ri], key);
        if (r) {
            r->on = on;
            r->last_us = ev->received_us;
            mark(st, ri, key);
        }
    }
    for (size_t i = 0; i < ru->nsteps; i++) {
        const pat_step *s = &ru->steps[i];
        if (strcmp(s->stream, ev->stream) ||
            !(key = pat_key(h, s, ev->body, buf, sizeof(buf))))
            continue;
        if (!(r = step_rec(st, ri, i, key, ev)))
            continue;
        r->last_us = ev->received_us;
        mark(st, ri, key); /* exported after observe: its final state */
        expire(ru, r, ev->received_us);
        if (!step_on(st, ru, i, r, ev))
            continue;
        add_hit(st, r, ev);
        if (++r->in_stage >= s->count) {
            r->in_stage = 0;
            if (++r->stage == ru->nsteps)
                return fire(st, ru, r, key, ctx);
        }
        break; /* one event moves a sequence one step */
    }
    return 0;
}

static int pat_observe(void *state, const sophia_event *ev, sophia_ctx *ctx)
{
    pat_state *st = state;
    int rc = 0;
    for (size_t i = 0; i < st->nrules && rc == 0; i++)
        rc = rule_on(st, i, ev, ctx);
    return rc;
}

/* Forgets the keys idle past their rule's `keep`, least recent first. */
static int pat_sweep(void *arg, sophia_ctx *ctx)
{
    pat_state *st = arg;
    (void)ctx;
    int64_t now = st->h->now_us();
    size_t gone = 0;
    for (size_t i = 0; i < st->nrules; i++) {
        pu_table *t = &st->keys[i];
        int64_t keep = (int64_t)(st->rules[i].keep_s * 1e6);
        while (t->oldest && now - ((rec *)t->oldest->val)->last_us > keep) {
            mark(st, i, t->oldest->key);
            pu_table_del(t, t->oldest->key);
            gone++;
        }
    }
    if (gone)
        st->h->counter_add(st->self, "keys_expired", (double)gone);
    return 0;
}

/* --------------------------------------------------------------- state */

static sophia_json *rec_json(const sophia_host *h, const char *key,
                             rec *r, size_t nsteps)
{
    sophia_json *o = h->json_object(), *prev = h->json_array();
    pu_set_str(h, o, "k", key);
    pu_set(h, o, "stage", h->json_int((int64_t)r->stage));
    pu_set(h, o, "in_stage", h->json_int((int64_t)r->in_stage));
    pu_set(h, o, "first_us", h->json_int(r->first_us));
    pu_set(h, o, "last_us", h->json_int(r->last_us));
    pu_set(h, o, "on", h->json_bool_new(r->on));
    for (size_t i = 0; prev && i < nsteps; i++)
        h->json_append(prev, h->json_int(r->prev[i]));
    pu_set(h, o, "prev", prev);
    pu_set(h, o, "hits", hits_json(h, r, 0));
    return o;
}

static char *pat_export(void *state)
{
    pat_state *st = state;
    const sophia_host *h = st->h;
    sophia_json *doc = h->json_object(), *rules = h->json_object();
    int rc = doc && rules ? 0 : SOPHIA_ENOMEM;
    for (size_t i = 0; rc == 0 && i < st->nrules; i++) {
        sophia_json *a = h->json_array();
        for (pu_entry *e = st->keys[i].oldest; a && e; e = e->newer)
            h->json_append(a, rec_json(h, e->key, e->val,
                                       st->rules[i].nsteps));
        rc = a ? h->json_set(rules, st->rules[i].name, a) : SOPHIA_ENOMEM;
    }
    if (doc) {
        pu_set(h, doc, "v", h->json_int(1));
        rc = rc ? rc : h->json_set(doc, "rules", rules);
    }
    return pu_export_text(h, doc, rc);
}

static int64_t int_at(const sophia_host *h, const sophia_json *o,
                      const char *k)
{
    return (int64_t)h->json_number(h->json_get_key(o, k), 0);
}

static void hit_import(pat_state *st, rec *r, const sophia_json *o)
{
    const sophia_host *h = st->h;
    const char *s = h->json_string(h->json_get_key(o, "stream"));
    const sophia_json *ev = h->json_get_key(o, "event");
    if (!s || r->nhits == st->max_events)
        return;
    r->hits[r->nhits++] = (hit){.stream = pu_strdup(s),
                                .at_us = int_at(h, o, "received_us"),
                                .event = ev ? h->json_copy(ev) : NULL};
}

static void rec_import(pat_state *st, size_t ri, const sophia_json *o)
{
    const sophia_host *h = st->h;
    const char *key = h->json_string(h->json_get_key(o, "k"));
    rec *r = key ? rec_get(st, ri, key) : NULL;
    if (!r)
        return;
    hits_clear(r);
    r->stage = (size_t)int_at(h, o, "stage");
    if (r->stage >= st->rules[ri].nsteps)
        r->stage = 0;
    r->in_stage = (size_t)int_at(h, o, "in_stage");
    r->first_us = int_at(h, o, "first_us");
    r->last_us = int_at(h, o, "last_us");
    r->on = h->json_bool(h->json_get_key(o, "on"), 0);
    const sophia_json *prev = h->json_get_key(o, "prev");
    for (size_t i = 0; i < st->rules[ri].nsteps && i < h->json_size(prev); i++)
        r->prev[i] = (int)h->json_number(h->json_at(prev, i), -1);
    const sophia_json *hits = h->json_get_key(o, "hits");
    for (size_t i = 0; i < h->json_size(hits); i++)
        hit_import(st, r, h->json_at(hits, i));
}

/* The field a key is persisted under: the rule's name, a unit separator
 * (0x1f, refused in rule names) and the key, unique in the instance. */
static char *field_of(const pat_rule *ru, const char *key)
{
    size_t a = strlen(ru->name), b = strlen(key);
    char *f = malloc(a + b + 2);
    if (f) {
        memcpy(f, ru->name, a);
        f[a] = '\x1f';
        memcpy(f + a + 1, key, b + 1);
    }
    return f;
}

/* Each key changed since the last call: its record as rec_json (plus
 * the rule's name, "r"), or NULL when it is gone. Only those keys: the
 * cost follows what the event changed, not the state's size. */
static int pat_export_changes(void *state,
                              void (*emit)(void *, const char *, const char *),
                              void *arg)
{
    pat_state *st = state;
    const sophia_host *h = st->h;
    st->tracking = 1;
    for (size_t i = 0; i < st->ndirty; i++) {
        dirty *d = &st->dirty[i];
        const pat_rule *ru = &st->rules[d->rule];
        rec *r = pu_table_get(&st->keys[d->rule], d->key);
        char *field = field_of(ru, d->key), *text = NULL;
        if (r) {
            sophia_json *o = rec_json(h, d->key, r, ru->nsteps);
            pu_set_str(h, o, "r", ru->name);
            text = pu_export_text(h, o, o ? 0 : SOPHIA_ENOMEM);
        }
        if (field && (!r || text))
            emit(arg, field, text);
        h->free(text);
        free(field);
        free(d->key);
    }
    st->ndirty = 0;
    return 0;
}

static int pat_import_key(void *state, const char *key, const char *json)
{
    pat_state *st = state;
    const sophia_host *h = st->h;
    (void)key; /* the record names its rule and key itself */
    sophia_json *o = h->json_parse(json);
    const char *rule = o ? h->json_string(h->json_get_key(o, "r")) : NULL;
    int rc = SOPHIA_EPARSE;
    for (size_t i = 0; rule && i < st->nrules; i++)
        if (!strcmp(st->rules[i].name, rule)) {
            rec_import(st, i, o);
            rc = 0;
        }
    if (rule && rc) /* a rule renamed or removed: its keys start empty */
        rc = SOPHIA_ENOENT;
    h->json_free(o);
    return rc;
}

static int pat_import(void *state, const char *json)
{
    pat_state *st = state;
    const sophia_host *h = st->h;
    sophia_json *doc = h->json_parse(json);
    const sophia_json *rules = doc ? h->json_get_key(doc, "rules") : NULL;
    if (!rules || h->json_type(rules) != SOPHIA_JSON_OBJECT) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    for (size_t i = 0; i < st->nrules; i++) {
        const sophia_json *a = h->json_get_key(rules, st->rules[i].name);
        for (size_t j = 0; j < h->json_size(a); j++) /* oldest first */
            rec_import(st, i, h->json_at(a, j));
    }
    h->json_free(doc);
    return 0;
}

/* ---------------------------------------------------------- lifecycle */

static void pat_fini(void *state)
{
    pat_state *st = state;
    if (!st)
        return;
    for (size_t i = 0; st->keys && i < st->nrules; i++)
        pu_table_free(&st->keys[i]);
    free(st->keys);
    for (size_t i = 0; i < st->ndirty; i++)
        free(st->dirty[i].key);
    free(st->dirty);
    pat_rules_free(st->rules, st->nrules);
    free(st);
}

/* Options and rules into `st`; 0 or why not (logged). */
static int pat_setup(pat_state *st, const sophia_opts *opts)
{
    const sophia_host *host = st->h;
    char why[512];
    st->max_keys = (size_t)host->opt_int(opts, "max_keys");
    st->max_events = (size_t)host->opt_int(opts, "max_events");
    st->attach = host->opt_bool(opts, "attach");
    if (st->max_keys < 1 || st->max_events < 1 || st->max_events > 1000) {
        host->log(st->self, SOPHIA_LOG_ERROR,
                  "max_keys must be >= 1 and max_events 1..1000");
        return SOPHIA_EINVAL;
    }
    if (pat_rules_parse(host, host->opt_string(opts, "rules"), &st->rules,
                        &st->nrules, why, sizeof(why))) {
        host->log(st->self, SOPHIA_LOG_ERROR, "rules: %s", why);
        return SOPHIA_EINVAL;
    }
    if (!(st->keys = calloc(st->nrules, sizeof(*st->keys))))
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < st->nrules; i++) {
        size_t need = 0;
        for (size_t j = 0; j < st->rules[i].nsteps; j++)
            need += st->rules[i].steps[j].count;
        if (need > st->max_events) { /* a window must see all it counts */
            host->log(st->self, SOPHIA_LOG_ERROR, "rules: rule %s needs %zu "
                      "events, more than max_events (%zu)",
                      st->rules[i].name, need, st->max_events);
            return SOPHIA_EINVAL;
        }
        if (st->rules[i].keep_s < st->rules[i].window_s)
            st->rules[i].keep_s = st->rules[i].window_s;
        if (pu_table_init(&st->keys[i], st->max_keys, rec_free))
            return SOPHIA_ENOMEM;
    }
    double sweep = host->opt_double(opts, "sweep");
    if (!(sweep >= 0.01)) {
        host->log(st->self, SOPHIA_LOG_ERROR, "sweep must be >= 0.01 s");
        return SOPHIA_EINVAL;
    }
    int64_t t = host->timer_add(st->self, sweep, sweep, pat_sweep, st);
    return t > 0 ? 0 : (int)t;
}

static int pat_init(const sophia_host *host, sophia_self *self,
                    const sophia_opts *opts, void **state)
{
    if (!SOPHIA_HOST_HAS(host, timer_add) || !SOPHIA_HOST_HAS(host, alert_ex))
        return SOPHIA_EABI;
    pat_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->h = host;
    st->self = self;
    int rc = pat_setup(st, opts);
    if (rc) { /* no fini after a failed init: free it here */
        pat_fini(st);
        return rc;
    }
    *state = st;
    return 0;
}

static const sophia_option pat_options[] = {
    {"rules", SOPHIA_OPT_JSON, NULL,
     "the rules: a sequence of {name, severity, message, window, keep, "
     "steps: [{stream, key, match, count, regresses}], while} (README)"},
    {"max_keys", SOPHIA_OPT_INT, "1000000",
     "keys kept per rule; past it the least recently seen is forgotten"},
    {"max_events", SOPHIA_OPT_INT, "16",
     "matched events kept (and attached to the alert) per key"},
    {"attach", SOPHIA_OPT_BOOL, "true",
     "attach the matched events to the alert (false: stream and time only)"},
    {"sweep", SOPHIA_OPT_DOUBLE, "1",
     "seconds between passes that forget idle keys"},
    {NULL, 0, NULL, NULL},
};

static const sophia_correlator_ops pat_ops = {
    .struct_size = sizeof(sophia_correlator_ops),
    .observe = pat_observe,
    .export_state = pat_export,
    .import_state = pat_import,
    .export_changes = pat_export_changes,
    .import_key = pat_import_key,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "patterns",
    .version = "1.1.0",
    .kind = SOPHIA_KIND_CORRELATOR,
    .description = "correlates events of several streams by key with rules "
                   "(sequences, counts, regressions, while) in YAML",
    .options = pat_options,
    .init = pat_init,
    .fini = pat_fini,
    .correlator = &pat_ops,
    /* pat_fini frees only its own records (events are deep copies): 100k
     * keys take seconds, which a reload need not spend on the loop */
    .flags = SOPHIA_PLUGIN_FINI_OFF_LOOP,
};
