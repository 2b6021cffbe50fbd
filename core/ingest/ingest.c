/*
 * ingest - see ingest.h.
 */
#include "ingest/ingest.h"
#include "lib/jsonlimit.h"
#include "lib/jsonscan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 for JSON's whitespace: a table, as the parser skips it around every
 * token and mostly finds none. */
static const unsigned char ws[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1,
                                      ['\r'] = 1};

static size_t skip_ws(const char *s, size_t len, size_t pos)
{
    while (pos < len && ws[(unsigned char)s[pos]])
        pos++;
    return pos;
}

static json_t *fail(sophia_parse_error *err, const char *body, size_t off,
                    const char *text, json_t *events)
{
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (body[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(err->text, sizeof(err->text), "%s", text);
    err->line = line;
    err->column = col;
    err->offset = off;
    json_decref(events);
    return NULL;
}

/* ------------------------------------------------------ fast path
 *
 * jansson's parser cost ~5 us per typical metric point (a lexer that
 * pulls one byte at a time through a UTF-8 checking stream, a string
 * buffer per token), more than processing the point. This one walks the
 * body in place and builds the same jansson values. It only has to be
 * right about valid bodies: anything it is not sure of (any syntax
 * error, a non-object event, integers past 18 digits, \u0000, invalid
 * UTF-8, deep nesting) makes it give up, and the jansson path below
 * parses the body again and produces the error with its position. So a
 * body is accepted by the fast path only if jansson would accept it, with
 * an equal tree (tests/unit/test_ingest.c checks both on generated and
 * mutated bodies). */

/* The fast path gives up deeper than the ingest limit, so whatever it
 * accepts is within it and only the jansson path needs the pre-scan. */
#define FAST_MAX_DEPTH SOPHIA_JSON_MAX_DEPTH

#define FAST_INTERN 16     /* slots of fast_str's table */
#define FAST_INTERN_MAX 32 /* longest string shared */

typedef struct fast {
    const char *s;
    size_t len, pos;
    int depth;
    char *buf; /* decoded strings with escapes */
    size_t cap;
    sophia_ingest_span *spans; /* each event's text, when asked for */
    size_t nspans, spans_cap;
    int want_spans, spans_failed;
    int not_object; /* a top-level array held something else than an object */
    json_t *intern[FAST_INTERN]; /* recent short strings, one ref each */
} fast;

/* A string value: the same short text again (a metric's name, a
 * dashboard id: most of a batch repeats a few) shares the one already
 * made, one reference more, where a new string cost two allocations
 * and, when its event went, two frees. Nothing changes a string once
 * parsed: plugins see events read-only (the SDK's const body). */
static json_t *fast_str(fast *f, const char *s, size_t n, int ascii)
{
    if (!ascii)
        return json_stringn(s, n); /* checks the UTF-8 */
    if (n == 0 || n > FAST_INTERN_MAX)
        return json_stringn_nocheck(s, n);
    size_t h = (n + (unsigned char)s[0] * 7u + (unsigned char)s[n - 1]) %
               FAST_INTERN;
    json_t *v = f->intern[h];
    if (v && json_string_length(v) == n && !memcmp(json_string_value(v), s, n))
        return json_incref(v);
    if ((v = json_stringn_nocheck(s, n))) {
        json_decref(f->intern[h]);
        f->intern[h] = json_incref(v);
    }
    return v;
}

static void fast_done(fast *f)
{
    for (size_t i = 0; i < FAST_INTERN; i++)
        json_decref(f->intern[i]);
    free(f->buf);
}

/* Notes the event that spans body[off, f->pos). */
static void fast_span(fast *f, size_t off)
{
    if (!f->want_spans || f->spans_failed)
        return;
    if (f->nspans == f->spans_cap) {
        size_t cap = f->spans_cap ? f->spans_cap * 2 : 64;
        sophia_ingest_span *v = realloc(f->spans, cap * sizeof(*v));
        if (!v) {
            f->spans_failed = 1; /* the events are fine without */
            return;
        }
        f->spans = v;
        f->spans_cap = cap;
    }
    f->spans[f->nspans++] = (sophia_ingest_span){off, f->pos - off};
}

static void fast_ws(fast *f)
{
    f->pos = skip_ws(f->s, f->len, f->pos);
}

static int fast_room(fast *f, size_t n)
{
    if (n <= f->cap)
        return 0;
    size_t cap = f->cap ? f->cap : 64;
    while (cap < n)
        cap *= 2;
    char *b = realloc(f->buf, cap);
    if (!b)
        return -1;
    f->buf = b;
    f->cap = cap;
    return 0;
}

static int hex4(const char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One escape at s[*i] (after the backslash) into o; bytes written or 0. */
static size_t fast_escape(const char *s, size_t end, size_t *i, char *o)
{
    static const char plain[] = "\"\\/bfnrt", real[] = "\"\\/\b\f\n\r\t";
    const char *e = *i < end ? strchr(plain, s[*i]) : NULL;
    if (e && *e) {
        (*i)++;
        *o = real[e - plain];
        return 1;
    }
    unsigned cp, lo;
    if (*i + 5 > end || s[*i] != 'u' || hex4(s + *i + 1, &cp) || cp == 0)
        return 0; /* \u0000: jansson refuses it without JSON_ALLOW_NUL */
    *i += 5;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return 0; /* a lone low surrogate */
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (*i + 6 > end || s[*i] != '\\' || s[*i + 1] != 'u' ||
            hex4(s + *i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return 0;
        *i += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return utf8_put(o, cp);
}

/* A string token at f->pos ('"'): its text (in the body when it has no
 * escapes, else in f->buf) and length through out and n; ascii = 1 when
 * every byte is ASCII. -1 on anything unusual. */
static int fast_string(fast *f, const char **out, size_t *n, int *ascii)
{
    const unsigned char *u = (const unsigned char *)f->s;
    size_t i = f->pos + 1, start = i;
    unsigned char hi = 0;
    /* plain runs eight bytes a step; a UTF-8 byte only clears `ascii` */
    while ((i = sophia_json_plain_run(u, i, f->len)) < f->len && u[i] >= 0x80)
        hi |= u[i++];
    if (i < f->len && f->s[i] == '"') { /* no escapes: the body's bytes */
        *out = f->s + start;
        *n = i - start;
        *ascii = hi < 0x80;
        f->pos = i + 1;
        return 0;
    }
    if (fast_room(f, (i - start) + (f->len - i) + 1)) /* decoded <= raw */
        return -1;
    memcpy(f->buf, f->s + start, i - start);
    size_t o = i - start;
    while (i < f->len && f->s[i] != '"') {
        unsigned char c = (unsigned char)f->s[i];
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            i++;
            size_t w = fast_escape(f->s, f->len, &i, f->buf + o);
            if (!w)
                return -1;
            hi |= w > 1 ? 0x80 : 0;
            o += w;
            continue;
        }
        hi |= c;
        f->buf[o++] = (char)c;
        i++;
    }
    if (i >= f->len)
        return -1;
    *out = f->buf;
    *n = o;
    *ascii = hi < 0x80;
    f->pos = i + 1;
    return 0;
}

/* jansson's number grammar; integers as json_integer (18 digits at most,
 * so no overflow to think about), others through strtod like jansson.
 *
 * But a decimal without exponent and with at most 15 digits, d..d.d..d,
 * is its digits as an integer (exact below 2^53) over a power of ten
 * (exact to 10^22): one IEEE division, correctly rounded, gives the
 * double nearest the text - strtod's answer - without strtod's general
 * path, which was the largest part of parsing a metric point
 * ("1000.25"). The digits are gathered as the grammar is checked. */
static json_t *fast_number(fast *f)
{
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6,
                                   1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13,
                                   1e14, 1e15};
    const char *s = f->s;
    size_t i = f->pos, end = f->len, digits = 0, frac = 0;
    int neg = i < end && s[i] == '-', real = 0, exp = 0;
    i += (size_t)neg;
    if (i >= end || s[i] < '0' || s[i] > '9')
        return NULL;
    if (s[i] == '0' && i + 1 < end && s[i + 1] >= '0' && s[i + 1] <= '9')
        return NULL; /* a leading zero */
    json_int_t v = 0; /* the first 18 digits, the fraction's included */
    for (; i < end && s[i] >= '0' && s[i] <= '9'; i++, digits++)
        if (digits < 18) /* longer ones are refused below: no overflow */
            v = v * 10 + (s[i] - '0');
    if (i < end && s[i] == '.') {
        real = 1;
        size_t d0 = ++i;
        for (; i < end && s[i] >= '0' && s[i] <= '9'; i++)
            if (digits + frac++ < 18)
                v = v * 10 + (s[i] - '0');
        if (i == d0)
            return NULL;
    }
    if (i < end && (s[i] == 'e' || s[i] == 'E')) {
        real = exp = 1;
        i += (i + 1 < end && (s[i + 1] == '+' || s[i + 1] == '-')) ? 2 : 1;
        size_t d0 = i;
        while (i < end && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d0)
            return NULL;
    }
    size_t start = f->pos;
    f->pos = i;
    if (!real)
        return digits <= 18 ? json_integer(neg ? -v : v) : NULL;
    if (!exp && digits + frac <= 15) {
        double d = (double)v / pow10[frac];
        return json_real(neg ? -d : d);
    }
    char tmp[64];
    if (i - start >= sizeof(tmp))
        return NULL;
    memcpy(tmp, s + start, i - start);
    tmp[i - start] = '\0';
    double d = strtod(tmp, NULL);
    return isinf(d) ? NULL : json_real(d); /* jansson: "real number overflow" */
}

static json_t *fast_value(fast *f);

/* After a member or element: 1 past a ',' (more follow), 0 past `close`
 * (the container is complete), -1 on anything else. */
static int fast_next(fast *f, char close)
{
    fast_ws(f);
    if (f->pos < f->len && f->s[f->pos] == ',') {
        f->pos++;
        fast_ws(f);
        return 1;
    }
    if (f->pos < f->len && f->s[f->pos] == close) {
        f->pos++;
        return 0;
    }
    return -1;
}

static json_t *fast_object(fast *f)
{
    json_t *o = json_object();
    f->pos++; /* '{' */
    fast_ws(f);
    if (f->pos < f->len && f->s[f->pos] == '}') {
        f->pos++;
        return o;
    }
    while (o) {
        const char *k;
        size_t kn;
        int ascii;
        if (f->pos >= f->len || f->s[f->pos] != '"' ||
            fast_string(f, &k, &kn, &ascii))
            break;
        /* A key with escapes sits in f->buf, which the value can
         * overwrite: copied then; else it stays in the body (jansson
         * takes a key by its length). */
        char kbuf[128], *copy = NULL;
        const char *key = k;
        if (k == f->buf) {
            if (!(copy = kn < sizeof(kbuf) ? kbuf : malloc(kn + 1)))
                break;
            memcpy(copy, k, kn);
            copy[kn] = '\0';
            key = copy;
        }
        fast_ws(f);
        json_t *v = NULL;
        if (f->pos < f->len && f->s[f->pos] == ':') {
            f->pos++;
            fast_ws(f);
            v = fast_value(f);
        }
        int rc = !v ? -1
                 : ascii ? json_object_setn_new_nocheck(o, key, kn, v)
                         : json_object_setn_new(o, key, kn, v); /* checks UTF-8 */
        if (copy && copy != kbuf)
            free(copy);
        if (rc)
            break;
        int more = fast_next(f, '}');
        if (more == 0)
            return o;
        if (more < 0)
            break;
    }
    json_decref(o);
    return NULL;
}

static json_t *fast_array(fast *f)
{
    json_t *a = json_array();
    f->pos++; /* '[' */
    fast_ws(f);
    if (f->pos < f->len && f->s[f->pos] == ']') {
        f->pos++;
        return a;
    }
    while (a) {
        size_t at = f->pos;
        json_t *v = fast_value(f);
        if (!v || json_array_append_new(a, v))
            break;
        if (f->depth == 1) { /* an element of a top-level array: an event */
            f->not_object |= !json_is_object(v);
            fast_span(f, at);
        }
        int more = fast_next(f, ']');
        if (more == 0)
            return a;
        if (more < 0)
            break;
    }
    json_decref(a);
    return NULL;
}

static int fast_word(fast *f, const char *w, size_t n)
{
    if (f->len - f->pos < n || memcmp(f->s + f->pos, w, n))
        return 0;
    f->pos += n;
    return 1;
}

static json_t *fast_value(fast *f)
{
    if (f->pos >= f->len || f->depth >= FAST_MAX_DEPTH)
        return NULL;
    char c = f->s[f->pos];
    json_t *v = NULL;
    if (c == '{' || c == '[') {
        f->depth++;
        v = c == '{' ? fast_object(f) : fast_array(f);
        f->depth--;
    } else if (c == '"') {
        const char *s;
        size_t n;
        int ascii;
        if (!fast_string(f, &s, &n, &ascii))
            v = fast_str(f, s, n, ascii);
    } else if (c == 't') {
        v = fast_word(f, "true", 4) ? json_true() : NULL;
    } else if (c == 'f') {
        v = fast_word(f, "false", 5) ? json_false() : NULL;
    } else if (c == 'n') {
        v = fast_word(f, "null", 4) ? json_null() : NULL;
    } else {
        v = fast_number(f);
    }
    return v;
}

json_t *sophia_ingest_parse_fast_spans(const char *body, size_t len,
                                       sophia_ingest_span **spans)
{
    fast f = {.s = body, .len = len, .want_spans = spans != NULL};
    json_t *events = json_array();
    fast_ws(&f);
    while (events && f.pos < f.len) {
        char c = f.s[f.pos];
        size_t at = f.pos;
        json_t *v = c == '{' || c == '[' ? fast_value(&f) : NULL;
        if (!v || f.not_object) {
            json_decref(v);
            json_decref(events);
            events = NULL;
            break;
        }
        if (json_is_object(v)) {
            json_array_append_new(events, v);
            fast_span(&f, at);
        } else {
            json_array_extend(events, v);
            json_decref(v);
        }
        fast_ws(&f);
    }
    fast_done(&f);
    if (events && !json_array_size(events) && f.len == skip_ws(body, len, 0)) {
        json_decref(events); /* an empty body: jansson words the error */
        events = NULL;
    }
    if (spans && events && !f.spans_failed &&
        f.nspans == json_array_size(events)) {
        *spans = f.spans;
    } else {
        free(f.spans);
        if (spans)
            *spans = NULL;
    }
    return events;
}

json_t *sophia_ingest_parse_fast(const char *body, size_t len)
{
    return sophia_ingest_parse_fast_spans(body, len, NULL);
}

/* ------------------------------------------------------ jansson path */

/* Appends `v` (an object, or an array of objects) to events; takes v. */
static int add_value(json_t *events, json_t *v, char *why, size_t whylen)
{
    if (json_is_object(v)) {
        json_array_append_new(events, v);
        return 0;
    }
    if (!json_is_array(v)) {
        snprintf(why, whylen, "expected a JSON object or an array of objects");
        json_decref(v);
        return -1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_object(e)) {
            snprintf(why, whylen, "array element %zu is not a JSON object", i);
            json_decref(v);
            return -1;
        }
    }
    json_array_extend(events, v);
    json_decref(v);
    return 0;
}

json_t *sophia_ingest_parse(const char *body, size_t len,
                            sophia_parse_error *err)
{
    return sophia_ingest_parse_spans(body, len, err, NULL);
}

json_t *sophia_ingest_parse_spans(const char *body, size_t len,
                                  sophia_parse_error *err,
                                  sophia_ingest_span **spans)
{
    if (spans)
        *spans = NULL;
    json_t *events = json_array();
    size_t pos = skip_ws(body, len, 0);
    if (pos == len)
        return fail(err, body, pos, "empty body: expected JSON", events);
    json_t *quick = sophia_ingest_parse_fast_spans(body, len, spans);
    if (quick) { /* within SOPHIA_JSON_MAX_DEPTH: see FAST_MAX_DEPTH */
        json_decref(events);
        return quick;
    }
    size_t deep = sophia_json_too_deep(body, len, SOPHIA_JSON_MAX_DEPTH);
    if (deep) /* before jansson recurses into it (jsonlimit.h) */
        return fail(err, body, deep - 1, "JSON nested deeper than 64 levels", events);
    while (pos < len) {
        json_error_t je;
        json_t *v = json_loadb(body + pos, len - pos,
                               JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        if (!v) {
            size_t at = pos + (je.position > 0 ? (size_t)je.position - 1 : 0);
            return fail(err, body, at < len ? at : len, je.text, events);
        }
        char why[200];
        if (add_value(events, v, why, sizeof(why)) < 0)
            return fail(err, body, pos, why, events);
        pos = skip_ws(body, len, pos + (size_t)je.position);
    }
    return events;
}
