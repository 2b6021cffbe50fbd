/*
 * metrics_point - see metrics_point.h.
 *
 * Hand-written parsers, no strptime or printf on the per-point path:
 * strptime depends on the locale and the feature macros, and printf's
 * format parsing was a measurable share of a point's cost (metrics.c).
 */
#include "metrics_point.h"

#include <stdint.h>
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

/* Unix seconds, or milliseconds above 1e11, into us. */
static int unix_time(double secs, int64_t *us)
{
    if (secs > 1e11)
        secs /= 1000; /* milliseconds (Prometheus, JavaScript) */
    if (!(secs >= 0 && secs < 1e11))
        return -1; /* negative, NaN, or past year 5138 */
    *us = (int64_t)(secs * 1e6);
    return 0;
}

int mp_event_time(const sophia_host *h, const sophia_json *ts, int64_t *us)
{
    const char *s = h->json_string(ts);
    char *end;
    if (!s)
        return h->json_type(ts) == SOPHIA_JSON_NUMBER
                   ? unix_time(h->json_number(ts, 0), us)
                   : -1;
    if (iso_time(s, us) == 0)
        return 0;
    double secs = strtod(s, &end); /* "1705746600" as some agents send */
    return end != s && !*end ? unix_time(secs, us) : -1;
}

/* ----------------------------------------------------------- labels */

typedef struct label {
    const char *k, *v;    /* v NULL: the text is num (no pointer into the
                             struct: qsort moves it) */
    size_t klen, vlen;
    char *dump;           /* a nested value's JSON text (owned), or NULL */
    char num[32];         /* a number's text */
} label;

/* The canonical text as it is written: into out while it fits, and into
 * an FNV-1a fingerprint all of it (unkeyed: exported keys must mean the
 * same after a reload). */
typedef struct canon_w {
    char *out;
    size_t len, off;
    uint64_t fp;
    int over;             /* did not fit */
    int odd;              /* a control byte or a nested value: key-unsafe */
} canon_w;

static void put_byte(canon_w *w, char c)
{
    w->fp = (w->fp ^ (unsigned char)c) * 1099511628211ULL;
    if ((unsigned char)c < 0x20 || c == 0x7f)
        w->odd = 1;
    if (w->off + 2 > w->len)
        w->over = 1;
    else
        w->out[w->off++] = c;
}

/* s[0..n) with '\', ',', '=', '{' and '}' escaped by '\'. */
static void put_escaped(canon_w *w, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] && strchr("\\,={}", s[i]))
            put_byte(w, '\\');
        put_byte(w, s[i]);
    }
}

/* A label value's text: a string as is, a number or boolean formatted,
 * anything else (an array, an object, null) as its JSON text. */
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
        if (!(l->dump = h->json_dump(v)))
            return -1;
        l->v = l->dump;
        break;
    }
    l->vlen = strlen(l->v);
    return 0;
}

/* Adds a label unless its key is there already (the first one wins);
 * -1 past MP_MAX_LABELS. */
static int add_label(label *ls, size_t *n, label *l)
{
    for (size_t i = 0; i < *n; i++)
        if (ls[i].klen == l->klen && !memcmp(ls[i].k, l->k, l->klen)) {
            free(l->dump);
            return 0;
        }
    if (*n == MP_MAX_LABELS) {
        free(l->dump);
        return -1;
    }
    ls[(*n)++] = *l;
    return 0;
}

static int from_object(const sophia_host *h, const sophia_json *o, label *ls,
                       size_t *n)
{
    const sophia_json *v;
    const char *k;
    for (size_t i = 0; (k = h->json_key_at(o, i, &v)); i++) {
        label l = {.k = k, .klen = strlen(k)};
        if (value_text(h, v, &l) || add_label(ls, n, &l))
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
        if (add_label(ls, n, &l))
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

/* The labels of `labels` and `tags`, unsorted, into ls (at most
 * MP_MAX_LABELS). Only json_key_at for an object: the SDK 1.0 reading
 * set, as every host has it. */
static int collect(const sophia_host *h, const sophia_json *labels,
                   const sophia_json *tags, label *ls, size_t *n,
                   char *why, size_t why_len)
{
    sophia_json_type lt = h->json_type(labels), tt = h->json_type(tags);
    if (labels && lt != SOPHIA_JSON_OBJECT) {
        snprintf(why, why_len, "\"labels\" is not an object");
        return -1;
    }
    if (tags && tt != SOPHIA_JSON_OBJECT && tt != SOPHIA_JSON_ARRAY) {
        snprintf(why, why_len, "\"tags\" is not a list or an object");
        return -1;
    }
    if ((labels && from_object(h, labels, ls, n)) ||
        (tt == SOPHIA_JSON_OBJECT && from_object(h, tags, ls, n)) ||
        (tt == SOPHIA_JSON_ARRAY &&
         from_tag_list(h, tags, ls, n, why, why_len))) {
        if (!why[0])
            snprintf(why, why_len, "more than %d labels and tags (or no "
                     "memory for a nested label's text)", MP_MAX_LABELS);
        return -1;
    }
    return 0;
}

int mp_labels_canon(const sophia_host *h, const sophia_json *labels,
                    const sophia_json *tags, const char *skip, char *out,
                    size_t len, char *why, size_t why_len)
{
    out[0] = why[0] = '\0';
    if (!labels && !tags)
        return 0; /* most points: no table of labels to set up */
    label ls[MP_MAX_LABELS];
    size_t n = 0;
    int rc = collect(h, labels, tags, ls, &n, why, why_len);
    for (size_t i = 0; !rc && skip && i < n; i++)
        if (ls[i].klen == strlen(skip) && !memcmp(ls[i].k, skip, ls[i].klen)) {
            free(ls[i].dump);
            ls[i--] = ls[--n];
        }
    if (!rc && n > 1) /* most points have one label or none */
        qsort(ls, n, sizeof(*ls), cmp_label);
    canon_w w = {.out = out, .len = len, .fp = 1469598103934665603ULL};
    for (size_t i = 0; !rc && i < n; i++) {
        if (i)
            put_byte(&w, ',');
        put_escaped(&w, ls[i].k, ls[i].klen);
        put_byte(&w, '=');
        put_escaped(&w, ls[i].v ? ls[i].v : ls[i].num, ls[i].vlen);
        w.odd |= ls[i].dump != NULL;
    }
    for (size_t i = 0; i < n; i++)
        free(ls[i].dump);
    if (rc)
        return rc;
    if (w.over || w.odd) /* a key-safe stand-in for what does not fit */
        snprintf(out, len, "#%016llx", (unsigned long long)w.fp);
    else
        out[w.off] = '\0';
    return 0;
}

/* Adds the tags of a list that `o` has no key for. */
static int merge_tags(const sophia_host *h, sophia_json *o,
                      const sophia_json *tags)
{
    for (size_t i = 0; i < h->json_size(tags); i++) {
        const char *t = h->json_string(h->json_at(tags, i));
        const char *colon = t ? strchr(t, ':') : NULL;
        char key[MP_LABELS_LEN];
        snprintf(key, sizeof(key), "%.*s",
                 (int)(colon ? (size_t)(colon - t) : t ? strlen(t) : 0),
                 t ? t : "");
        if (!*key || h->json_get_key(o, key))
            continue;
        sophia_json *v = h->json_str(colon ? colon + 1 : "");
        if (!v || h->json_set(o, key, v))
            return -1;
    }
    return 0;
}

sophia_json *mp_labels_json(const sophia_host *h, const sophia_json *labels,
                            const sophia_json *tags)
{
    sophia_json *o = labels ? h->json_copy(labels) : h->json_object();
    const char *k;
    const sophia_json *v;
    int rc = o ? 0 : -1;
    if (!rc && h->json_type(tags) == SOPHIA_JSON_ARRAY)
        rc = merge_tags(h, o, tags);
    for (size_t i = 0; !rc && h->json_type(tags) == SOPHIA_JSON_OBJECT &&
                       (k = h->json_key_at(tags, i, &v));
         i++) {
        sophia_json *c;
        if (!h->json_get_key(o, k) &&
            (!(c = h->json_copy(v)) || h->json_set(o, k, c)))
            rc = -1;
    }
    if (rc && o) {
        h->json_free(o);
        return NULL;
    }
    return o;
}
