/*
 * patterns_rules - the `rules` option of the patterns correlator: parsing
 * (every problem named with its rule), predicates on dotted paths with
 * `*` for every element of an array, keys and ordered values. Pure: it
 * reads JSON through the host table and keeps no state.
 */
#include "patterns.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../processors/proc_util.h"

/* --------------------------------------------------------------- paths */

/* Calls fn on every value at `path` under `v` (a `*` segment fans out
 * over an array's elements); stops at the first fn that returns 1. */
static int walk(const sophia_host *h, const sophia_json *v, const char *path,
                int (*fn)(const sophia_host *, const sophia_json *, void *),
                void *p)
{
    if (!v)
        return 0;
    if (!*path)
        return fn(h, v, p);
    const char *dot = strchr(path, '.');
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    const char *rest = dot ? dot + 1 : "";
    char seg[256];
    if (len >= sizeof(seg))
        return 0;
    memcpy(seg, path, len);
    seg[len] = '\0';
    if (strcmp(seg, "*") == 0) {
        for (size_t i = 0; i < h->json_size(v); i++)
            if (walk(h, h->json_at(v, i), rest, fn, p))
                return 1;
        return 0;
    }
    if (h->json_type(v) == SOPHIA_JSON_ARRAY) {
        char *end;
        unsigned long i = strtoul(seg, &end, 10);
        return !*end && walk(h, h->json_at(v, i), rest, fn, p);
    }
    return walk(h, h->json_get_key(v, seg), rest, fn, p);
}

/* A scalar's text: strings as they are, numbers and booleans printed. */
static const char *scalar_text(const sophia_host *h, const sophia_json *v,
                               char *buf, size_t n)
{
    switch (h->json_type(v)) {
    case SOPHIA_JSON_STRING:
        return h->json_string(v);
    case SOPHIA_JSON_NUMBER: {
        double d = h->json_number(v, 0);
        if (d == floor(d) && fabs(d) < 1e15)
            snprintf(buf, n, "%.0f", d);
        else
            snprintf(buf, n, "%.17g", d);
        return buf;
    }
    case SOPHIA_JSON_BOOL:
        return h->json_bool(v, 0) ? "true" : "false";
    default:
        return NULL;
    }
}

static int number_of(const sophia_host *h, const sophia_json *v, double *out)
{
    if (h->json_type(v) == SOPHIA_JSON_NUMBER) {
        *out = h->json_number(v, 0);
        return 0;
    }
    const char *s = h->json_string(v);
    char *end;
    if (!s || !*s)
        return -1;
    *out = strtod(s, &end);
    return *end ? -1 : 0;
}

static int one_holds(const sophia_host *h, const sophia_json *v, void *arg)
{
    const pat_pred *p = arg;
    char buf[64];
    double d;
    const char *t = scalar_text(h, v, buf, sizeof(buf));
    switch (p->op) {
    case PAT_EQUALS:
    case PAT_IN:
        for (size_t i = 0; t && i < p->nitems; i++)
            if (!strcmp(t, p->items[i]))
                return 1;
        return 0;
    case PAT_CONTAINS:
        for (size_t i = 0; t && i < p->nitems; i++)
            if (pu_strcasestr(t, p->items[i]))
                return 1;
        return 0;
    case PAT_GT:
        return number_of(h, v, &d) == 0 && d > p->num;
    case PAT_GTE:
        return number_of(h, v, &d) == 0 && d >= p->num;
    case PAT_LT:
        return number_of(h, v, &d) == 0 && d < p->num;
    case PAT_LTE:
        return number_of(h, v, &d) == 0 && d <= p->num;
    case PAT_EXISTS:
    case PAT_NOT_EQUALS:
        return 1; /* reached: decided by the caller */
    }
    return 0;
}

static int pred_holds(const sophia_host *h, const pat_pred *p,
                      const sophia_json *ev)
{
    if (p->op == PAT_EXISTS)
        return walk(h, ev, p->path, one_holds, (void *)p) == p->exists;
    if (p->op == PAT_NOT_EQUALS) { /* no value at the path equals one */
        pat_pred eq = *p;
        eq.op = PAT_EQUALS;
        return !walk(h, ev, p->path, one_holds, &eq);
    }
    return walk(h, ev, p->path, one_holds, (void *)p);
}

static const sophia_json *first_at(const sophia_host *h,
                                   const sophia_json *ev, const char *path);

int pat_has_fields(const sophia_host *h, const pat_step *s,
                   const sophia_json *ev)
{
    for (size_t i = 0; i < s->npreds; i++)
        if (!first_at(h, ev, s->preds[i].path))
            return 0;
    return 1;
}

int pat_match(const sophia_host *h, const pat_step *s, const sophia_json *ev)
{
    for (size_t i = 0; i < s->npreds; i++)
        if (!pred_holds(h, &s->preds[i], ev))
            return 0;
    return 1;
}

/* The first value at `path` (walk's fn for a lookup). */
static int take_first(const sophia_host *h, const sophia_json *v, void *arg)
{
    (void)h;
    *(const sophia_json **)arg = v;
    return 1;
}

static const sophia_json *first_at(const sophia_host *h,
                                   const sophia_json *ev, const char *path)
{
    const sophia_json *v = NULL;
    walk(h, ev, path, take_first, &v);
    return v;
}

const char *pat_key(const sophia_host *h, const pat_step *s,
                    const sophia_json *ev, char *buf, size_t n)
{
    const char *t = scalar_text(h, first_at(h, ev, s->key), buf, n);
    return t && *t ? t : NULL;
}

int pat_order_of(const sophia_host *h, const pat_step *s,
                 const sophia_json *ev)
{
    char buf[64];
    const char *t = scalar_text(h, first_at(h, ev, s->regress_path), buf,
                                sizeof(buf));
    for (size_t i = 0; t && i < s->norder; i++)
        if (!strcasecmp(t, s->order[i]))
            return (int)i;
    return -1;
}

/* ------------------------------------------------------------- parsing */

typedef struct parse_ctx {
    const sophia_host *h;
    char *why;
    size_t whylen;
    const char *rule; /* the rule's name, or "#N" */
} parse_ctx;

static int fail(parse_ctx *P, const char *fmt, ...) SOPHIA_PRINTF(2, 3);

static int fail(parse_ctx *P, const char *fmt, ...)
{
    int n = snprintf(P->why, P->whylen, "rule %s: ", P->rule);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < P->whylen)
        vsnprintf(P->why + n, P->whylen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

/* A duration: seconds as a number, or text such as 250ms, 30s, 5m, 1h, 7d. */
static int duration(const sophia_host *h, const sophia_json *v, double *out)
{
    if (h->json_type(v) == SOPHIA_JSON_NUMBER) {
        *out = h->json_number(v, -1);
        return *out > 0 ? 0 : -1;
    }
    const char *s = h->json_string(v);
    char *end;
    if (!s)
        return -1;
    double d = strtod(s, &end);
    static const struct { const char *u; double mul; } units[] = {
        {"", 1}, {"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
    for (size_t i = 0; end != s && i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(end, units[i].u) && d > 0 && isfinite(d)) {
            *out = d * units[i].mul;
            return 0;
        }
    return -1;
}

static char *text_of(const sophia_host *h, const sophia_json *v)
{
    char buf[64];
    const char *t = v ? scalar_text(h, v, buf, sizeof(buf)) : NULL;
    return t ? pu_strdup(t) : NULL;
}

/* Items of a scalar or a sequence of scalars into items/n. */
static int items_of(parse_ctx *P, const sophia_json *v, char **items,
                    size_t *n, const char *what)
{
    const sophia_host *h = P->h;
    int seq = h->json_type(v) == SOPHIA_JSON_ARRAY;
    size_t len = seq ? h->json_size(v) : 1;
    if (len == 0 || len > PAT_MAX_ITEMS)
        return fail(P, "%s takes 1 to %d values", what, PAT_MAX_ITEMS);
    for (size_t i = 0; i < len; i++) {
        char *t = text_of(h, seq ? h->json_at(v, i) : v);
        if (!t)
            return fail(P, "%s: values must be scalars", what);
        items[(*n)++] = t;
    }
    return 0;
}

static const struct {
    const char *name;
    pat_op op;
} ops[] = {{"equals", PAT_EQUALS}, {"not_equals", PAT_NOT_EQUALS},
           {"contains", PAT_CONTAINS}, {"in", PAT_IN}, {"gt", PAT_GT},
           {"gte", PAT_GTE}, {"lt", PAT_LT}, {"lte", PAT_LTE},
           {"exists", PAT_EXISTS}};

/* {path: P, <op>: operand} */
static int parse_pred(parse_ctx *P, const sophia_json *o, pat_pred *p)
{
    const sophia_host *h = P->h;
    const char *k;
    const sophia_json *v;
    if (!(p->path = text_of(h, h->json_get_key(o, "path"))))
        return fail(P, "a predicate needs a path");
    for (void *it = h->json_iter(o, NULL, &k, &v); it;
         it = h->json_iter(o, it, &k, &v)) {
        if (!strcmp(k, "path"))
            continue;
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
            if (!strcmp(k, ops[i].name))
                p->op = ops[i].op;
        if (!p->op)
            return fail(P, "unknown predicate '%s' on %s (equals, "
                           "not_equals, contains, in, gt, gte, lt, lte, "
                           "exists)", k, p->path);
        if (p->op >= PAT_GT && p->op <= PAT_LTE)
            return number_of(h, v, &p->num) ? fail(P, "%s on %s needs a "
                                                  "number", k, p->path)
                                            : 0;
        if (p->op == PAT_EXISTS)
            return (p->exists = h->json_bool(v, -1)) < 0
                       ? fail(P, "exists on %s needs true or false", p->path)
                       : 0;
        return items_of(P, v, p->items, &p->nitems, k);
    }
    return fail(P, "the predicate on %s names no test", p->path);
}

static int parse_step(parse_ctx *P, const sophia_json *o, pat_step *s)
{
    const sophia_host *h = P->h;
    if (h->json_type(o) != SOPHIA_JSON_OBJECT)
        return fail(P, "a step must be a mapping {stream, key, match...}");
    if (!(s->stream = text_of(h, h->json_get_key(o, "stream"))) ||
        !(s->key = text_of(h, h->json_get_key(o, "key"))))
        return fail(P, "a step needs a stream and a key (dotted path)");
    const sophia_json *m = h->json_get_key(o, "match");
    size_t nm = m ? h->json_size(m) : 0;
    if (m && (h->json_type(m) != SOPHIA_JSON_ARRAY || nm > PAT_MAX_PREDS))
        return fail(P, "match must be a sequence of at most %d predicates",
                    PAT_MAX_PREDS);
    for (size_t i = 0; i < nm; i++)
        if (parse_pred(P, h->json_at(m, i), &s->preds[s->npreds++]))
            return -1;
    const sophia_json *c = h->json_get_key(o, "count");
    s->count = c ? (size_t)h->json_number(c, 0) : 1;
    if (s->count < 1 || s->count > 1000)
        return fail(P, "count must be 1 to 1000");
    const sophia_json *r = h->json_get_key(o, "regresses");
    if (!r)
        return 0;
    if (!(s->regress_path = text_of(h, h->json_get_key(r, "path"))) ||
        !h->json_get_key(r, "order"))
        return fail(P, "regresses needs {path, order: [first, ..., last]}");
    return items_of(P, h->json_get_key(r, "order"), s->order, &s->norder,
                    "regresses.order");
}

static int parse_rule(parse_ctx *P, const sophia_json *o, pat_rule *r)
{
    const sophia_host *h = P->h;
    if (h->json_type(o) != SOPHIA_JSON_OBJECT)
        return fail(P, "must be a mapping");
    if (!(r->name = text_of(h, h->json_get_key(o, "name"))))
        return fail(P, "needs a name");
    P->rule = r->name;
    if (strchr(r->name, 0x1f)) /* it separates rule and key (patterns.c) */
        return fail(P, "a name may not contain the character 0x1f");
    r->severity = text_of(h, h->json_get_key(o, "severity"));
    r->message = text_of(h, h->json_get_key(o, "message"));
    r->topic = text_of(h, h->json_get_key(o, "topic"));
    if (!r->severity)
        r->severity = pu_strdup("warning");
    const sophia_json *w = h->json_get_key(o, "window");
    if (!w || duration(h, w, &r->window_s))
        return fail(P, "needs a window (a duration: 30s, 1h, 24h...)");
    const sophia_json *k = h->json_get_key(o, "keep");
    r->keep_s = r->window_s;
    if (k && duration(h, k, &r->keep_s))
        return fail(P, "keep must be a duration");
    const sophia_json *st = h->json_get_key(o, "steps");
    size_t n = st ? h->json_size(st) : 0;
    if (!st || h->json_type(st) != SOPHIA_JSON_ARRAY || n == 0 ||
        n > PAT_MAX_STEPS)
        return fail(P, "needs steps: a sequence of 1 to %d steps",
                    PAT_MAX_STEPS);
    for (size_t i = 0; i < n; i++)
        if (parse_step(P, h->json_at(st, i), &r->steps[r->nsteps++]))
            return -1;
    const sophia_json *wh = h->json_get_key(o, "while");
    if (wh && (r->has_when = 1) && parse_step(P, wh, &r->when))
        return -1;
    if (r->has_when && r->when.regress_path)
        return fail(P, "while takes no regresses");
    return 0;
}

int pat_rules_parse(const sophia_host *h, const char *json, pat_rule **out,
                    size_t *n, char *why, size_t whylen)
{
    parse_ctx P = {h, why, whylen, "?"};
    sophia_json *doc = json ? h->json_parse(json) : NULL;
    size_t len = doc ? h->json_size(doc) : 0;
    *out = NULL;
    *n = 0;
    if (!doc || h->json_type(doc) != SOPHIA_JSON_ARRAY || len == 0) {
        h->json_free(doc);
        snprintf(why, whylen, "rules must be a sequence of rules");
        return -1;
    }
    pat_rule *r = calloc(len, sizeof(*r));
    int rc = r ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < len; i++) {
        char label[32];
        snprintf(label, sizeof(label), "#%zu", i + 1);
        P.rule = label;
        rc = parse_rule(&P, h->json_at(doc, i), &r[(*n)++]);
        for (size_t j = 0; rc == 0 && j + 1 < *n; j++)
            if (!strcmp(r[j].name, r[*n - 1].name))
                rc = fail(&P, "name given twice");
    }
    h->json_free(doc);
    if (rc) {
        pat_rules_free(r, *n);
        *n = 0;
        return -1;
    }
    *out = r;
    return 0;
}

static void step_free(pat_step *s)
{
    free(s->stream);
    free(s->key);
    free(s->regress_path);
    for (size_t i = 0; i < s->norder; i++)
        free(s->order[i]);
    for (size_t i = 0; i < s->npreds; i++) {
        free(s->preds[i].path);
        for (size_t j = 0; j < s->preds[i].nitems; j++)
            free(s->preds[i].items[j]);
    }
}

void pat_rules_free(pat_rule *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].name);
        free(r[i].severity);
        free(r[i].message);
        free(r[i].topic);
        for (size_t j = 0; j < r[i].nsteps; j++)
            step_free(&r[i].steps[j]);
        if (r[i].has_when)
            step_free(&r[i].when);
    }
    free(r);
}
