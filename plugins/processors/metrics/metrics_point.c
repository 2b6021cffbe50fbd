/*
 * metrics_point - see metrics_point.h.
 *
 * Hand-written parsers, no strptime or printf on the per-point path:
 * strptime depends on the locale and the feature macros, and printf's
 * format parsing was a measurable share of a point's cost (metrics.c).
 */
#include "metrics_point.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- event time */

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's
 * days_from_civil), so no timegm and no TZ environment. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* n decimal digits at *s into *out; advances *s. */
static int digits(const char **s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if ((*s)[i] < '0' || (*s)[i] > '9')
            return -1;
        v = v * 10 + ((*s)[i] - '0');
    }
    *s += n;
    *out = v;
    return 0;
}

/* "Z", "", "+hh:mm", "+hhmm", "+hh" (or '-') into seconds east of UTC. */
static int zone_offset(const char *s, int64_t *off)
{
    int hh = 0, mm = 0;
    *off = 0;
    if (!*s || ((*s == 'Z' || *s == 'z') && !s[1]))
        return 0;
    if (*s != '+' && *s != '-')
        return -1;
    int sign = *s++ == '-' ? -1 : 1;
    if (digits(&s, 2, &hh))
        return -1;
    if (*s == ':')
        s++;
    if (*s && digits(&s, 2, &mm))
        return -1;
    if (*s || hh > 23 || mm > 59)
        return -1;
    *off = sign * (hh * 3600 + mm * 60);
    return 0;
}

static int iso_time(const char *s, int64_t *us)
{
    int y, mo, d, hh, mi, ss;
    if (digits(&s, 4, &y) || *s++ != '-' || digits(&s, 2, &mo) ||
        *s++ != '-' || digits(&s, 2, &d) || (*s != 'T' && *s != 't' &&
                                             *s != ' ') ||
        (s++, digits(&s, 2, &hh)) || *s++ != ':' || digits(&s, 2, &mi) ||
        *s++ != ':' || digits(&s, 2, &ss))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || hh > 23 || mi > 59 || ss > 60)
        return -1;
    int64_t frac = 0, scale = 1000000;
    if (*s == '.' || *s == ',') {
        s++;
        if (*s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++)
            if (scale > 1) {
                scale /= 10;
                frac += (*s - '0') * scale;
            }
    }
    int64_t off;
    if (zone_offset(s, &off))
        return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 +
                   ss - off;
    *us = secs * 1000000 + frac;
    return 0;
}

int mp_event_time(const sophia_host *h, const sophia_json *ts, int64_t *us)
{
    const char *s = h->json_string(ts);
    if (s)
        return iso_time(s, us);
    if (h->json_type(ts) != SOPHIA_JSON_NUMBER)
        return -1;
    double secs = h->json_number(ts, 0);
    if (secs > 1e11)
        secs /= 1000; /* milliseconds (Prometheus, JavaScript) */
    if (!(secs >= 0 && secs < 1e11))
        return -1; /* negative, NaN, or past year 5138 */
    *us = (int64_t)(secs * 1e6);
    return 0;
}

/* ----------------------------------------------------------- labels */

typedef struct label {
    const char *k, *v;    /* v NULL: the text is num (no pointer into the
                             struct: qsort moves it) */
    size_t klen, vlen;
    char num[32];         /* a number's text */
} label;

/* Appends s[0..n) escaped to out at *off; -1 when it does not fit. */
static int put_escaped(char *out, size_t len, size_t *off, const char *s,
                       size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int esc = strchr("\\,={}", s[i]) != NULL && s[i];
        if (*off + (size_t)esc + 2 > len)
            return -1;
        if (esc)
            out[(*off)++] = '\\';
        out[(*off)++] = s[i];
    }
    return 0;
}

static int put_char(char *out, size_t len, size_t *off, char c)
{
    if (*off + 2 > len)
        return -1;
    out[(*off)++] = c;
    return 0;
}

/* A label value's text: a string as is, a number or boolean formatted;
 * -1 for another type. */
static int value_text(const sophia_host *h, const sophia_json *v, label *l)
{
    switch (h->json_type(v)) {
    case SOPHIA_JSON_STRING:
        l->v = h->json_string(v);
        break;
    case SOPHIA_JSON_NUMBER:
        snprintf(l->num, sizeof(l->num), "%.17g", h->json_number(v, 0));
        l->vlen = strlen(l->num);
        return 0;
    case SOPHIA_JSON_BOOL:
        l->v = h->json_bool(v, 0) ? "true" : "false";
        break;
    default:
        return -1;
    }
    l->vlen = strlen(l->v);
    return 0;
}

/* Adds a label unless its key is there already (the first one wins). */
static int add_label(label *ls, size_t *n, const label *l, char *why,
                     size_t why_len)
{
    for (size_t i = 0; i < *n; i++)
        if (ls[i].klen == l->klen && !memcmp(ls[i].k, l->k, l->klen))
            return 0;
    if (*n == MP_MAX_LABELS) {
        snprintf(why, why_len, "more than %d labels", MP_MAX_LABELS);
        return -1;
    }
    ls[(*n)++] = *l;
    return 0;
}

static int from_object(const sophia_host *h, const sophia_json *o,
                       const char *what, label *ls, size_t *n, char *why,
                       size_t why_len)
{
    const sophia_json *v;
    const char *k;
    for (size_t i = 0; (k = h->json_key_at(o, i, &v)); i++) {
        label l = {.k = k, .klen = strlen(k)};
        if (!*k || value_text(h, v, &l)) {
            snprintf(why, why_len, "\"%s\".\"%.40s\" is not a string, number "
                     "or boolean under a non-empty key", what, k);
            return -1;
        }
        if (add_label(ls, n, &l, why, why_len))
            return -1;
    }
    return 0;
}

/* ["region:emea", "canary"]: DogStatsD / Datadog API tags. */
static int from_tag_list(const sophia_host *h, const sophia_json *a,
                         label *ls, size_t *n, char *why, size_t why_len)
{
    for (size_t i = 0; i < h->json_size(a); i++) {
        const char *t = h->json_string(h->json_at(a, i));
        if (!t || !*t || *t == ':') {
            snprintf(why, why_len, "\"tags\"[%zu] is not a \"key:value\" "
                     "string", i);
            return -1;
        }
        const char *colon = strchr(t, ':');
        label l = {.k = t, .klen = colon ? (size_t)(colon - t) : strlen(t),
                   .v = colon ? colon + 1 : ""};
        l.vlen = strlen(l.v);
        if (add_label(ls, n, &l, why, why_len))
            return -1;
    }
    return 0;
}

static int cmp_label(const void *a, const void *b)
{
    const label *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->k, y->k, n);
    return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

int mp_labels_canon(const sophia_host *h, const sophia_json *labels,
                    const sophia_json *tags, const char *skip, char *out,
                    size_t len, char *why, size_t why_len)
{
    label ls[MP_MAX_LABELS];
    size_t n = 0, off = 0;
    out[0] = '\0';
    sophia_json_type lt = h->json_type(labels), tt = h->json_type(tags);
    if (labels && lt != SOPHIA_JSON_OBJECT) {
        snprintf(why, why_len, "\"labels\" is not an object");
        return -1;
    }
    if (tags && tt != SOPHIA_JSON_OBJECT && tt != SOPHIA_JSON_ARRAY) {
        snprintf(why, why_len, "\"tags\" is not a list or an object");
        return -1;
    }
    if ((labels && from_object(h, labels, "labels", ls, &n, why, why_len)) ||
        (tt == SOPHIA_JSON_OBJECT &&
         from_object(h, tags, "tags", ls, &n, why, why_len)) ||
        (tt == SOPHIA_JSON_ARRAY &&
         from_tag_list(h, tags, ls, &n, why, why_len)))
        return -1;
    for (size_t i = 0; skip && i < n; i++)
        if (ls[i].klen == strlen(skip) && !memcmp(ls[i].k, skip, ls[i].klen))
            ls[i--] = ls[--n];
    qsort(ls, n, sizeof(*ls), cmp_label);
    for (size_t i = 0; i < n; i++)
        if ((i && put_char(out, len, &off, ',')) ||
            put_escaped(out, len, &off, ls[i].k, ls[i].klen) ||
            put_char(out, len, &off, '=') ||
            put_escaped(out, len, &off, ls[i].v ? ls[i].v : ls[i].num,
                        ls[i].vlen)) {
            snprintf(why, why_len, "labels are longer than %zu bytes", len - 1);
            out[0] = '\0';
            return -1;
        }
    out[off] = '\0';
    return 0;
}

/* The next unescaped `stop` (or the end) from s; unescaped copy into
 * dst. */
static const char *unescape(const char *s, char stop, char *dst)
{
    while (*s && *s != stop) {
        if (*s == '\\' && s[1])
            s++;
        *dst++ = *s++;
    }
    *dst = '\0';
    return s;
}

sophia_json *mp_labels_json(const sophia_host *h, const char *canon)
{
    sophia_json *o = h->json_object();
    char k[MP_LABELS_LEN], v[MP_LABELS_LEN];
    const char *s = canon;
    while (o && *s) {
        s = unescape(s, '=', k);
        s = unescape(*s ? s + 1 : s, ',', v);
        sophia_json *val = h->json_str(v);
        if (!val || h->json_set(o, k, val)) {
            h->json_free(o);
            return NULL;
        }
        if (*s)
            s++;
    }
    return o;
}
