/*
 * host_text - see host_text.h. A quick pass for the compact texts
 * writers produce (the end of the file), and for the rest a recursive
 * descent over the bytes, depth bounded before it recurses; the string
 * loops copy nothing and look at ASCII bytes once.
 */
#include "host/host_text.h"

#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "lib/jsonlimit.h"
#include "lib/jsonscan.h"

typedef struct scan {
    const unsigned char *s;
    size_t n, i;
    size_t klen; /* strlen of the member's key looked for */
} scan;

/* 1 for JSON's whitespace: a table, as skip_ws runs before and after
 * every token and mostly finds none. */
static const unsigned char ws[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1,
                                      ['\r'] = 1};

static void skip_ws(scan *c)
{
    size_t i = c->i;
    while (i < c->n && ws[c->s[i]])
        i++;
    c->i = i;
}

static int is_digit(const scan *c)
{
    return c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9';
}

static void digits(scan *c)
{
    size_t i = c->i;
    while (i < c->n && (unsigned)(c->s[i] - '0') <= 9)
        i++;
    c->i = i;
}

/* A multi-byte UTF-8 sequence at c->i: shortest form, no surrogate, at
 * most U+10FFFF. */
static int utf8_seq(scan *c)
{
    unsigned b = c->s[c->i], cp;
    size_t k;
    if (b >= 0xC2 && b <= 0xDF)
        k = 1, cp = b & 0x1F;
    else if (b >= 0xE0 && b <= 0xEF)
        k = 2, cp = b & 0x0F;
    else if (b >= 0xF0 && b <= 0xF4)
        k = 3, cp = b & 0x07;
    else
        return -1;
    if (c->n - c->i <= k)
        return -1;
    for (size_t m = 1; m <= k; m++) {
        unsigned x = c->s[c->i + m];
        if ((x & 0xC0) != 0x80)
            return -1;
        cp = cp << 6 | (x & 0x3F);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    c->i += k + 1;
    return 0;
}

/* \uXXXX at c->i (the backslash); -1 when not four hex digits. */
static long hex4(const scan *c, size_t at)
{
    if (c->n - at < 6 || c->s[at] != '\\' || c->s[at + 1] != 'u')
        return -1;
    long v = 0;
    for (size_t m = at + 2; m < at + 6; m++) {
        unsigned x = c->s[m];
        int d = x >= '0' && x <= '9'   ? (int)(x - '0')
                : x >= 'a' && x <= 'f' ? (int)(x - 'a' + 10)
                : x >= 'A' && x <= 'F' ? (int)(x - 'A' + 10)
                                       : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* An escape at c->i (the backslash). */
static int escape(scan *c)
{
    if (c->n - c->i < 2)
        return -1;
    unsigned e = c->s[c->i + 1];
    if (e != 'u') {
        c->i += 2;
        return e && strchr("\"\\/bfnrt", (int)e) ? 0 : -1;
    }
    long u = hex4(c, c->i);
    if (u <= 0 || (u >= 0xDC00 && u <= 0xDFFF))
        return -1; /* an escaped NUL, a lone low surrogate, or not hex */
    c->i += 6;
    if (u < 0xD800 || u > 0xDBFF)
        return 0;
    long lo = hex4(c, c->i); /* a high surrogate needs its low half */
    if (lo < 0xDC00 || lo > 0xDFFF)
        return -1;
    c->i += 6;
    return 0;
}

/* A string at c->i (its quote); *esc set when it has an escape. */
static int string(scan *c, int *esc)
{
    const unsigned char *s = c->s;
    c->i++;
    for (;;) {
        size_t i = sophia_json_plain_run(s, c->i, c->n);
        c->i = i;
        if (i >= c->n || s[i] < 0x20)
            return -1;
        if (s[i] == '"') {
            c->i++;
            return 0;
        }
        if (s[i] == '\\') {
            *esc = 1;
            if (escape(c))
                return -1;
        } else if (utf8_seq(c)) {
            return -1;
        }
    }
}

static int number(scan *c)
{
    if (c->i < c->n && c->s[c->i] == '-')
        c->i++;
    if (!is_digit(c))
        return -1;
    if (c->s[c->i++] != '0')
        digits(c);
    if (c->i < c->n && c->s[c->i] == '.') {
        c->i++;
        if (!is_digit(c))
            return -1;
        digits(c);
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-'))
            c->i++;
        if (!is_digit(c))
            return -1;
        digits(c);
    }
    return 0;
}

static int word(scan *c, const char *w, size_t n)
{
    if (c->n - c->i < n || memcmp(c->s + c->i, w, n))
        return -1;
    c->i += n;
    return 0;
}

static int value(scan *c, int depth, host_text_member *m);

/* After a member or element: 1 for a comma, 0 for the closer, -1 else. */
static int next(scan *c, unsigned char close)
{
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == ',') {
        c->i++;
        return 1;
    }
    if (c->i < c->n && c->s[c->i] == close) {
        c->i++;
        return 0;
    }
    return -1;
}

/* Notes member `key` (at depth 0 only, m set) when it is the one looked
 * for; a key or value with an escape makes the answer unsure. */
static void note(scan *c, host_text_member *m, size_t k0, size_t k1,
                 int kesc, size_t v0, int vesc)
{
    m->escaped |= kesc;
    if (kesc || k1 - k0 != c->klen ||
        memcmp(c->s + k0, m->key, k1 - k0))
        return;
    if (c->s[v0] != '"') {
        m->at = NULL; /* the last one wins, as in jansson */
        return;
    }
    m->at = (const char *)c->s + v0 + 1;
    m->len = c->i - v0 - 2;
    m->escaped |= vesc;
}

static int object(scan *c, int depth, host_text_member *m)
{
    c->i++;
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == '}') {
        c->i++;
        return 0;
    }
    int more;
    do {
        skip_ws(c);
        int kesc = 0, vesc = 0;
        size_t k0 = c->i + 1;
        if (c->i >= c->n || c->s[c->i] != '"' || string(c, &kesc))
            return -1;
        size_t k1 = c->i - 1;
        skip_ws(c);
        if (c->i >= c->n || c->s[c->i] != ':')
            return -1;
        c->i++;
        skip_ws(c);
        size_t v0 = c->i;
        if (c->i < c->n && c->s[c->i] == '"' ? string(c, &vesc)
                                              : value(c, depth + 1, NULL))
            return -1;
        if (m && m->key)
            note(c, m, k0, k1, kesc, v0, vesc);
    } while ((more = next(c, '}')) == 1);
    return more;
}

static int array(scan *c, int depth)
{
    c->i++;
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == ']') {
        c->i++;
        return 0;
    }
    int more;
    do {
        if (value(c, depth + 1, NULL))
            return -1;
    } while ((more = next(c, ']')) == 1);
    return more;
}

static int value(scan *c, int depth, host_text_member *m)
{
    int esc = 0;
    skip_ws(c);
    if (c->i >= c->n)
        return -1;
    switch (c->s[c->i]) {
    case '{':
        return depth >= SOPHIA_JSON_MAX_DEPTH ? -1 : object(c, depth, m);
    case '[':
        return depth >= SOPHIA_JSON_MAX_DEPTH ? -1 : array(c, depth);
    case '"':
        return string(c, &esc);
    case 't':
        return word(c, "true", 4);
    case 'f':
        return word(c, "false", 5);
    case 'n':
        return word(c, "null", 4);
    default:
        return number(c);
    }
}

/* ---- the quick pass (host_text_check_padded) -----------------------
 *
 * What a plugin's writer produces: no whitespace, no escapes, numbers and
 * short strings. One loop over such a text, its position and open
 * containers in registers (a bit each: object or array), where the walk
 * above pays a call per token and keeps its position in memory; and no
 * bound to test: the text is the host's copy, a NUL after it (which no
 * token takes, so every scan stops there) and HOST_TEXT_PAD - 1 readable
 * bytes after that (a string is read sixteen bytes a step, SSE2's
 * width, or eight, to its end). It
 * accepts a text only when it is well-formed, and gives up ("unsure", 0)
 * at anything else - whitespace, an escape, a byte out of place - for the
 * walk to decide: it has to be right when it accepts, not to accept
 * everything that is right. */

/* The UTF-8 sequence at s[i]: the index after it, or 0. Out of line:
 * the quick pass's strings are mostly ASCII, and calling it inline made
 * every string pay for its registers. */
__attribute__((noinline)) static size_t quick_utf8(const unsigned char *s,
                                                   size_t i, size_t n)
{
    scan c = {s, n, i, 0};
    return utf8_seq(&c) ? 0 : c.i;
}

/* sophia_json_plain_run without its bound: the NUL after the text stops
 * it (a control byte), and what it reads past that NUL is padding. */
static inline size_t quick_run(const unsigned char *s, size_t i)
{
#if defined(__SSE2__)
    /* sixteen bytes a step: a signed compare with 0x20 finds both the
     * control bytes and the high ones (negative as signed) */
    const __m128i sp = _mm_set1_epi8(0x20), q = _mm_set1_epi8('"'),
                  bs = _mm_set1_epi8('\\');
    for (;; i += 16) {
        __m128i w = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        unsigned hit = (unsigned)_mm_movemask_epi8(_mm_or_si128(
            _mm_cmplt_epi8(w, sp),
            _mm_or_si128(_mm_cmpeq_epi8(w, q), _mm_cmpeq_epi8(w, bs))));
        if (hit)
            return i + (size_t)__builtin_ctz(hit);
    }
#else
    return sophia_json_plain_run(s, i, SIZE_MAX); /* eight bytes a step */
#endif
}

/* A string's closing quote from s[i] (after its opening one), UTF-8
 * checked; the index after it, or 0 (unsure) at an escape, a control
 * byte or the end. */
static inline size_t quick_string(const unsigned char *s, size_t i, size_t n)
{
    for (;;) {
        i = quick_run(s, i);
        if (s[i] == '"')
            return i + 1;
        if (s[i] < 0x80 || !(i = quick_utf8(s, i, n)))
            return 0;
    }
}

static inline int quick_digit(unsigned char c)
{
    return (unsigned)(c - '0') <= 9;
}

/* A number at s[i]; the index after it, or 0 (unsure). */
static size_t quick_number(const unsigned char *s, size_t i)
{
    if (s[i] == '-')
        i++;
    if (s[i] == '0')
        i++;
    else if ((unsigned)(s[i] - '1') <= 8)
        while (quick_digit(s[++i]))
            ;
    else
        return 0;
    if (s[i] == '.') {
        if (!quick_digit(s[++i]))
            return 0;
        while (quick_digit(s[++i]))
            ;
    }
    if ((s[i] | 0x20) == 'e') {
        if (s[++i] == '+' || s[i] == '-')
            i++;
        if (!quick_digit(s[i]))
            return 0;
        while (quick_digit(s[++i]))
            ;
    }
    return i;
}

/* 1 when s[0..n) is one well-formed value in the quick pass's subset (m
 * filled in as host_text_check says, m->escaped 0); 0 when unsure. */
static int quick(const unsigned char *s, size_t n, host_text_member *m,
                 size_t klen)
{
    uint64_t objs = 0; /* bit k: the k-th open container is an object */
    unsigned depth = 0;
    size_t i = 0, k0;
value:
    switch (s[i]) {
    case '{':
    case '[':
        if (depth >= 63) /* deeper: the walk knows the limit */
            return 0;
        objs = objs << 1 | (s[i] == '{');
        depth++;
        if (s[++i] == (objs & 1 ? '}' : ']')) {
            i++;
            depth--;
            objs >>= 1;
            goto after;
        }
        if (objs & 1)
            goto key;
        goto value;
    case '"':
        i = quick_string(s, i + 1, n);
        break;
    case 't':
        i = !memcmp(s + i, "true", 4) ? i + 4 : 0;
        break;
    case 'f':
        i = !memcmp(s + i, "false", 5) ? i + 5 : 0;
        break;
    case 'n':
        i = !memcmp(s + i, "null", 4) ? i + 4 : 0;
        break;
    default:
        i = quick_number(s, i);
        break;
    }
    if (!i)
        return 0;
after:
    if (!depth)
        return i == n;
    if (s[i] == ',') {
        i++;
        if (objs & 1)
            goto key;
        goto value;
    }
    if (s[i] != (objs & 1 ? '}' : ']'))
        return 0;
    i++;
    depth--;
    objs >>= 1;
    goto after;
key:
    if (s[i] != '"')
        return 0;
    k0 = i + 1;
    if (!(i = quick_string(s, k0, n)) || s[i] != ':')
        return 0;
    i++;
    if (depth == 1 && m && i - 2 - k0 == klen &&
        !memcmp(s + k0, m->key, klen)) { /* the member looked for */
        if (s[i] != '"') {
            m->at = NULL; /* the last one wins, as in jansson */
            goto value;
        }
        size_t v0 = i + 1;
        if (!(i = quick_string(s, v0, n)))
            return 0;
        m->at = (const char *)s + v0;
        m->len = i - 1 - v0;
        goto after;
    }
    goto value;
}

static void member_reset(host_text_member *m)
{
    if (m) {
        m->at = NULL;
        m->len = 0;
        m->escaped = 0;
    }
}

int host_text_check(const char *s, size_t len, host_text_member *m)
{
    member_reset(m);
    if (!s)
        return -1;
    scan c = {(const unsigned char *)s, len, 0, m && m->key ? strlen(m->key) : 0};
    if (value(&c, 0, m))
        return -1;
    skip_ws(&c);
    return c.i == c.n ? 0 : -1;
}

int host_text_check_padded(const char *s, size_t len, host_text_member *m)
{
    member_reset(m);
    if (s && quick((const unsigned char *)s, len, m && m->key ? m : NULL,
                   m && m->key ? strlen(m->key) : 0))
        return 0;
    return host_text_check(s, len, m);
}
