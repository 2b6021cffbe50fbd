/*
 * jsonw - see jsonw.h.
 *
 * One growing buffer (or the caller's, never grown: sophia_json_write),
 * reserved ahead of each token so the hot loops write without bounds
 * checks; strings are copied in runs between the bytes that need
 * escaping. Reals get printf's "%.17g" digits by exact integer
 * arithmetic (put_real), and only those outside its range go through
 * snprintf, with jansson's post-processing, so the text stays identical
 * to json_dumps().
 */
#include "lib/jsonw.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow_slow(sophia_jsonw *w, size_t need)
{
    if (w->failed)
        return -1;
    if (w->fixed) { /* the caller's buffer is full */
        w->failed = 1;
        return -1;
    }
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + need + 1)
        cap *= 2;
    char *p = realloc(w->p, cap);
    if (!p) {
        w->failed = 1;
        return -1;
    }
    w->p = p;
    w->cap = cap;
    return 0;
}

/* Room for need more bytes and the NUL: the test inline, as every token
 * written asks (a frame's envelope is a dozen of them). */
static inline int grow(sophia_jsonw *w, size_t need)
{
    if (!w->failed && w->len + need + 1 <= w->cap)
        return 0;
    return grow_slow(w, need);
}

int sophia_jsonw_raw(sophia_jsonw *w, const char *s, size_t n)
{
    if (grow(w, n))
        return -1;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
    return 0;
}

/* Digits of |v| written backwards from `end`; returns the start. */
static char *u64_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static int put_int(sophia_jsonw *w, json_int_t v, int real)
{
    char buf[32];
    char *end = buf + sizeof(buf), *digits_end = end;
    if (real) { /* jansson marks an integral real with ".0" */
        *--digits_end = '0';
        *--digits_end = '.';
    }
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    char *s = u64_digits(digits_end, mag);
    if (v < 0)
        *--s = '-';
    return sophia_jsonw_raw(w, s, (size_t)(end - s));
}

size_t sophia_fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    char *s = u64_digits(tmp + sizeof(tmp), v);
    size_t n = (size_t)(tmp + sizeof(tmp) - s);
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n;
}

int sophia_jsonw_u64(sophia_jsonw *w, uint64_t v)
{
    char buf[24];
    char *s = u64_digits(buf + sizeof(buf), v);
    return sophia_jsonw_raw(w, s, (size_t)(buf + sizeof(buf) - s));
}

/* jansson's jsonp_dtostr through snprintf: "%.17g", a ".0" when neither
 * '.' nor 'e' appears, the exponent without '+' or leading zeros. */
static int put_real_slow(sophia_jsonw *w, double d)
{
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%.17g", d);
    if (n < 0 || (size_t)n >= sizeof(buf) - 3) {
        w->failed = 1;
        return -1;
    }
    size_t len = (size_t)n;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == ',') /* a locale's decimal comma */
            buf[i] = '.';
    char *e = strchr(buf, 'e');
    if (!e && !strchr(buf, '.')) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - buf) + 1);
            len -= (size_t)(end - start);
        }
    }
    return sophia_jsonw_raw(w, buf, len);
}

typedef unsigned __int128 u128;

static const uint64_t pow10_u64[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
    10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
    100000000000ULL, 1000000000000ULL, 10000000000000ULL,
    100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL,
    10000000000000000000ULL};

/* 10^k for 0 <= k <= 38, from the table (a loop of 128-bit multiplies
 * was a fifth of a real's cost). */
static u128 pow10_u128(int k)
{
    return k < 20 ? (u128)pow10_u64[k] : (u128)pow10_u64[19] * pow10_u64[k - 19];
}

/* num / den rounded half to even, as glibc's printf rounds; *trunc gets
 * the quotient before rounding. */
static u128 div_round(u128 num, u128 den, u128 *trunc)
{
    u128 q = num / den, rem = num % den;
    *trunc = q;
    if (rem > den - rem || (rem == den - rem && (q & 1)))
        q++;
    return q;
}

/* |d| = m * 2^e scaled by 10^(16-x) and rounded: the 17 significant
 * digits when 10^x <= |d| < 10^(x+1). *trunc gets the value before
 * rounding, which says whether x was right. 0 when out of the range
 * where 128-bit integers are exact. */
static u128 scaled17(uint64_t m, int e, int x, u128 *trunc)
{
    int k = 16 - x; /* |d| * 10^k has 17 integer digits */
    if (k >= 0 && k <= 22 && e < 0 && e >= -127) {
        u128 num = (u128)m * pow10_u128(k), q = num >> -e;
        u128 rem = num - (q << -e), half = (u128)1 << (-e - 1);
        *trunc = q;
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return q;
    }
    if (k < 0 && k >= -38 && e >= 0 && e <= 74)
        return div_round((u128)m << e, pow10_u128(-k), trunc);
    return 0;
}

/* "00" to "99": two digits per division by 100. */
static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

/* v's last n decimal digits, zero-padded, written backwards from end. */
static void put_digits(char *end, uint32_t v, int n)
{
    for (; n >= 2; n -= 2, v /= 100) {
        end -= 2;
        memcpy(end, digit_pairs + 2 * (v % 100), 2);
    }
    if (n)
        *--end = (char)('0' + v % 10);
}

/* The 17 digits of q < 10^17, as two halves in 32-bit arithmetic; how
 * many are left once trailing zeros go (at least 1). */
static int digits17(char dig[17], uint64_t q)
{
    uint32_t hi = (uint32_t)(q / 100000000), lo = (uint32_t)(q % 100000000);
    put_digits(dig + 9, hi, 9);
    put_digits(dig + 17, lo, 8);
    int nd = lo ? 17 : 9;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    return nd;
}

/* |d| >= 1 with at most DYADIC_BITS bits after the binary point (1020.25,
 * 3.5: a counter, a price in quarters): its decimal expansion is exact
 * and short, i.e. int.frac with frac = f * 5^b over b digits, ending in
 * 5. When int and frac together have at most 17 digits that is what
 * "%.17g" prints, so it is written without the 128-bit scaling; 0 when
 * d is not such a value (the general path decides). */
#define DYADIC_BITS 16
static int put_dyadic(sophia_jsonw *w, double d, uint64_t m, int e)
{
    if (e >= 0 || e < -52)
        return 0; /* integral (put_int's), or |d| < 1 */
    int b = -e - __builtin_ctzll(m); /* bits after the point */
    if (b <= 0 || b > DYADIC_BITS)
        return 0;
    uint64_t ip = m >> -e, frac = (m & ((1ULL << -e) - 1)) >> (-e - b);
    if (ip >= pow10_u64[17 - b])
        return 0; /* more than 17 digits: rounded by the general path */
    uint64_t fd = frac;
    for (int i = 0; i < b; i++)
        fd *= 5; /* frac / 2^b = frac * 5^b / 10^b: b digits, exact */
    /* the integral part's digits: from its bit length (log10 2 ~ 1233 /
     * 4096), one less when under that power of ten */
    int ni = ((64 - __builtin_clzll(ip)) * 1233 >> 12) + 1;
    ni -= ip < pow10_u64[ni - 1];
    if (grow(w, 48)) /* written in place, backwards: at most 19 bytes */
        return -1;
    char *out = w->p + w->len, *end = out + (d < 0) + ni + 1 + b;
    put_digits(end, (uint32_t)(fd % 100000000), b < 8 ? b : 8);
    if (b > 8)
        put_digits(end - 8, (uint32_t)(fd / 100000000), b - 8);
    char *dot = end - b - 1;
    *dot = '.';
    put_digits(dot, (uint32_t)(ip % 100000000), ni < 8 ? ni : 8);
    if (ni > 8)
        put_digits(dot - 8, (uint32_t)(ip / 100000000), ni - 8);
    if (d < 0)
        *out = '-';
    w->len += (size_t)(end - out);
    w->p[w->len] = '\0';
    return 1;
}

/* "%.17g" of d as jansson post-processes it, without printf's
 * multi-precision path: the value is m * 2^e exactly (read from its
 * bits), and for the ranges events use |d| * 10^k fits 128 bits, so the
 * 17 digits come from one exact multiplication and shift. The decimal
 * exponent is first estimated from the binary one (log10 was a libm
 * call per value) and corrected by the digits' count. Anything else goes
 * to snprintf. */
static int put_real(sophia_jsonw *w, double d)
{
    const u128 lo = (u128)10000000000000000ULL, hi = lo * 10;
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    int be = (int)(bits >> 52) & 0x7ff;
    uint64_t m = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    int e = be - 1075; /* |d| = m * 2^e, 2^52 <= m < 2^53 (normal d) */
    /* integral (its fraction bits zero; 0 too), as floor(d) == d says */
    int integral = be == 0 ? !(bits << 1)
                   : be == 0x7ff ? 0
                   : e >= 0 || (e > -53 && !(m & ((1ULL << -e) - 1)));
    if (integral && fabs(d) < 1e17) {
        if (d == 0 && signbit(d))
            return sophia_jsonw_raw(w, "-0.0", 4);
        return put_int(w, (json_int_t)d, 1); /* %.17g prints it exactly */
    }
    if (be == 0 || be == 0x7ff) /* subnormal (far from the fast range) */
        return put_real_slow(w, d);
    int dy = put_dyadic(w, d, m, e);
    if (dy)
        return dy < 0 ? -1 : 0;
    /* 2^(e+52) <= |d| < 2^(e+53): x is floor((e+52) log10 2) or one more
     * (78913 / 2^18 is log10 2 to within what matters here; a shift of a
     * negative number floors, as gcc and clang do it). */
    int x = ((e + 52) * 78913) >> 18;
    u128 trunc = 0, q = scaled17(m, e, x, &trunc);
    if (q && trunc >= hi) /* |d| >= 10^(x+1): one more */
        q = scaled17(m, e, ++x, &trunc);
    if (!q || trunc < lo || trunc >= hi)
        return put_real_slow(w, d);
    if (q == hi) { /* 9.99...95 rounds up to the next power of ten */
        q = lo;
        x++;
    }
    char dig[17];
    int nd = digits17(dig, (uint64_t)q);
    if (grow(w, 48)) /* the text is written in place: at most 24 bytes */
        return -1;
    char *out = w->p + w->len, *o = out;
    if (d < 0)
        *o++ = '-';
    if (x < -4 || x >= 17) { /* d.ddde[-]x */
        *o++ = dig[0];
        if (nd > 1) {
            *o++ = '.';
            memcpy(o, dig + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        *o++ = 'e';
        if (x < 0)
            *o++ = '-';
        char eb[8], *es = u64_digits(eb + sizeof(eb), (uint64_t)(x < 0 ? -x : x));
        memcpy(o, es, (size_t)(eb + sizeof(eb) - es));
        o += eb + sizeof(eb) - es;
    } else if (x >= 0) { /* ddd.ddd, or ddd.0 */
        memcpy(o, dig, (size_t)x + 1);
        o += x + 1;
        *o++ = '.';
        if (nd > x + 1) {
            memcpy(o, dig + x + 1, (size_t)(nd - x - 1));
            o += nd - x - 1;
        } else {
            *o++ = '0';
        }
    } else { /* 0.000ddd */
        *o++ = '0';
        *o++ = '.';
        for (int i = -1; i > x; i--)
            *o++ = '0';
        memcpy(o, dig, (size_t)nd);
        o += nd;
    }
    w->len += (size_t)(o - out);
    w->p[w->len] = '\0';
    return 0;
}

static const char hex[] = "0123456789ABCDEF";

/* 1 for the bytes json_dumps escapes: '"', '\\' and controls; a table,
 * as the run loop below tests every byte of every string written. */
#define ESC8 1, 1, 1, 1, 1, 1, 1, 1
static const unsigned char escapes[256] = {
    ESC8, ESC8, ESC8, ESC8, /* 0x00-0x1f */
    ['"'] = 1, ['\\'] = 1,
};
#undef ESC8

static int needs_escape(unsigned char c)
{
    return escapes[c];
}

static size_t put_escape(char *o, unsigned char c)
{
    o[0] = '\\';
    switch (c) {
    case '"': o[1] = '"'; return 2;
    case '\\': o[1] = '\\'; return 2;
    case '\b': o[1] = 'b'; return 2;
    case '\f': o[1] = 'f'; return 2;
    case '\n': o[1] = 'n'; return 2;
    case '\r': o[1] = 'r'; return 2;
    case '\t': o[1] = 't'; return 2;
    default:
        memcpy(o + 1, "u00", 3);
        o[4] = hex[c >> 4];
        o[5] = hex[c & 15];
        return 6;
    }
}

int sophia_jsonw_str(sophia_jsonw *w, const char *s, size_t n)
{
    if (grow(w, n * 6 + 2)) /* worst case: every byte \u00XX */
        return -1;
    char *o = w->p + w->len;
    *o++ = '"';
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && !needs_escape((unsigned char)s[run]))
            run++;
        memcpy(o, s + i, run - i);
        o += run - i;
        if (run == n)
            break;
        o += put_escape(o, (unsigned char)s[run]);
        i = run + 1;
    }
    *o++ = '"';
    *o = '\0';
    w->len = (size_t)(o - w->p);
    return 0;
}

static int put_value(sophia_jsonw *w, const json_t *v, int depth);

static int put_object(sophia_jsonw *w, const json_t *v, int depth)
{
    const char *key;
    json_t *val;
    int first = 1;
    if (sophia_jsonw_raw(w, "{", 1))
        return -1;
    json_object_foreach((json_t *)v, key, val) {
        if ((!first && sophia_jsonw_raw(w, ",", 1)) ||
            sophia_jsonw_str(w, key, strlen(key)) ||
            sophia_jsonw_raw(w, ":", 1) || put_value(w, val, depth + 1))
            return -1;
        first = 0;
    }
    return sophia_jsonw_raw(w, "}", 1);
}

static int put_array(sophia_jsonw *w, const json_t *v, int depth)
{
    size_t n = json_array_size(v);
    if (sophia_jsonw_raw(w, "[", 1))
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((i && sophia_jsonw_raw(w, ",", 1)) ||
            put_value(w, json_array_get(v, i), depth + 1))
            return -1;
    return sophia_jsonw_raw(w, "]", 1);
}

static int put_value(sophia_jsonw *w, const json_t *v, int depth)
{
    if (!v || depth > SOPHIA_JSONW_MAX_DEPTH) {
        w->failed = 1;
        return -1;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return put_object(w, v, depth);
    case JSON_ARRAY:
        return put_array(w, v, depth);
    case JSON_STRING:
        return sophia_jsonw_str(w, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return put_int(w, json_integer_value(v), 0);
    case JSON_REAL:
        return put_real(w, json_real_value(v));
    case JSON_TRUE:
        return sophia_jsonw_raw(w, "true", 4);
    case JSON_FALSE:
        return sophia_jsonw_raw(w, "false", 5);
    default:
        return sophia_jsonw_raw(w, "null", 4);
    }
}

int sophia_jsonw_append(sophia_jsonw *w, const json_t *v)
{
    return put_value(w, v, 0);
}

void sophia_jsonw_clear(sophia_jsonw *w)
{
    w->len = 0;
    w->failed = 0;
}

void sophia_jsonw_reset(sophia_jsonw *w)
{
    free(w->p);
    memset(w, 0, sizeof(*w));
}

char *sophia_jsonw_take(sophia_jsonw *w, size_t *len)
{
    if (w->failed || grow(w, 0)) {
        sophia_jsonw_reset(w);
        return NULL;
    }
    w->p[w->len] = '\0';
    char *p = w->p;
    if (len)
        *len = w->len;
    memset(w, 0, sizeof(*w));
    return p;
}

char *sophia_json_encode(const json_t *v, size_t *len)
{
    sophia_jsonw w = {0};
    sophia_jsonw_append(&w, v);
    return sophia_jsonw_take(&w, len);
}

size_t sophia_json_write(const json_t *v, char *buf, size_t cap)
{
    if (cap) {
        sophia_jsonw w = {.p = buf, .cap = cap, .fixed = 1};
        buf[0] = '\0';
        if (v && sophia_jsonw_append(&w, v) == 0)
            return w.len;
    }
    /* Too small for the text, or for a string's worst case (each byte
     * escaped), or too deep: a copy on the heap says which, and how long
     * the text is. */
    size_t n = 0;
    char *s = v ? sophia_json_encode(v, &n) : NULL;
    if (!s) {
        if (cap)
            buf[0] = '\0';
        return 0;
    }
    if (n < cap)
        memcpy(buf, s, n + 1);
    free(s);
    return n;
}
