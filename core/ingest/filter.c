/*
 * filter - see filter.h.
 */
#include "ingest/filter.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/jsonpath.h"
#include "lib/regex_size.h"

typedef struct pred {
    sophia_conf_pred conf; /* a deep copy: the filter outlives its config */
    regex_t re;
    int has_re;
} pred;

struct sophia_filter {
    pred *v;
    size_t n;
};

int sophia_json_scalar_text(const json_t *v, char *buf, size_t len)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        snprintf(buf, len, "%s", json_string_value(v));
        return 0;
    case JSON_INTEGER:
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return 0;
    case JSON_REAL:
        snprintf(buf, len, "%.17g", json_real_value(v));
        return 0;
    case JSON_TRUE:
        snprintf(buf, len, "true");
        return 0;
    case JSON_FALSE:
        snprintf(buf, len, "false");
        return 0;
    case JSON_NULL:
        snprintf(buf, len, "null");
        return 0;
    default:
        return -1;
    }
}

/* 0, or -1 on allocation failure (what was copied is freed by the
 * caller through sophia_filter_free). */
static int copy_pred(sophia_conf_pred *d, const sophia_conf_pred *s)
{
    *d = *s;
    d->path = s->path ? strdup(s->path) : NULL;
    d->value = s->value ? strdup(s->value) : NULL;
    d->items = s->nitems ? calloc(s->nitems, sizeof(*d->items)) : NULL;
    d->nitems = 0;
    if ((s->path && !d->path) || (s->value && !d->value) ||
        (s->nitems && !d->items))
        return -1;
    for (; d->nitems < s->nitems; d->nitems++)
        if (!(d->items[d->nitems] = strdup(s->items[d->nitems])))
            return -1;
    return 0;
}

sophia_filter *sophia_filter_new(const sophia_conf_pred *preds, size_t n,
                                 const char **err)
{
    *err = NULL;
    if (!n)
        return NULL;
    sophia_filter *f = calloc(1, sizeof(*f));
    if (!f || !(f->v = calloc(n, sizeof(*f->v)))) {
        free(f);
        *err = "out of memory";
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        pred *p = &f->v[f->n++]; /* counted now: free() releases its copy */
        if (copy_pred(&p->conf, &preds[i])) {
            *err = "out of memory";
            sophia_filter_free(f);
            return NULL;
        }
        if (preds[i].op != SOPHIA_PRED_MATCHES)
            continue;
        int flags = REG_EXTENDED | REG_NOSUB | (preds[i].icase ? REG_ICASE : 0);
        int large = sophia_regex_size(preds[i].value, SOPHIA_REGEX_MAX_NODES) >
                    SOPHIA_REGEX_MAX_NODES; /* the config refuses these */
        if (large || regcomp(&p->re, preds[i].value, flags)) {
            *err = large ? "regular expression too large"
                         : "bad regular expression";
            sophia_filter_free(f);
            return NULL;
        }
        p->has_re = 1;
    }
    return f;
}

void sophia_filter_free(sophia_filter *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++) {
        sophia_conf_pred *c = &f->v[i].conf;
        if (f->v[i].has_re)
            regfree(&f->v[i].re);
        free(c->path);
        free(c->value);
        for (size_t k = 0; k < c->nitems; k++)
            free(c->items[k]);
        free(c->items);
    }
    free(f->v);
    free(f);
}

/* The value as a number: JSON numbers, and strings that are numbers. */
static int as_number(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 1;
    }
    const char *s = json_string_value(v);
    char *end;
    if (!s || !*s)
        return 0;
    *out = strtod(s, &end);
    return *end == '\0' && isfinite(*out);
}

static int scalar_equals(const json_t *v, const char *operand)
{
    if (!v)
        return 0;
    if (json_is_string(v))
        return strcmp(json_string_value(v), operand) == 0;
    if (json_is_number(v)) {
        char *end;
        double d = strtod(operand, &end);
        return end != operand && !*end && d == json_number_value(v);
    }
    if (json_is_boolean(v))
        return strcasecmp(operand, json_is_true(v) ? "true" : "false") == 0;
    if (json_is_null(v))
        return strcmp(operand, "null") == 0 || strcmp(operand, "~") == 0;
    return 0;
}

static int in_items(const json_t *v, const sophia_conf_pred *c)
{
    for (size_t i = 0; i < c->nitems; i++)
        if (scalar_equals(v, c->items[i]))
            return 1;
    return 0;
}

static int pred_holds(const pred *p, const json_t *ev)
{
    const sophia_conf_pred *c = &p->conf;
    const json_t *v = sophia_json_path(ev, c->path);
    double d;
    char text[4096];
    switch (c->op) {
    case SOPHIA_PRED_EQUALS:
        return scalar_equals(v, c->value);
    case SOPHIA_PRED_NOT_EQUALS:
        return !scalar_equals(v, c->value);
    case SOPHIA_PRED_IN:
        return in_items(v, c);
    case SOPHIA_PRED_NOT_IN:
        return !in_items(v, c);
    case SOPHIA_PRED_EXISTS:
        return (v && !json_is_null(v)) == (strcasecmp(c->value, "true") == 0 ||
                                           strcasecmp(c->value, "yes") == 0 ||
                                           strcasecmp(c->value, "on") == 0);
    case SOPHIA_PRED_GT:
        return as_number(v, &d) && d > c->num;
    case SOPHIA_PRED_GTE:
        return as_number(v, &d) && d >= c->num;
    case SOPHIA_PRED_LT:
        return as_number(v, &d) && d < c->num;
    case SOPHIA_PRED_LTE:
        return as_number(v, &d) && d <= c->num;
    case SOPHIA_PRED_MATCHES:
        return v && !json_is_null(v) &&
               sophia_json_scalar_text(v, text, sizeof(text)) == 0 &&
               regexec(&p->re, text, 0, NULL, 0) == 0;
    }
    return 0;
}

int sophia_filter_match(const sophia_filter *f, const json_t *ev)
{
    for (size_t i = 0; f && i < f->n; i++)
        if (!pred_holds(&f->v[i], ev))
            return 0;
    return 1;
}
