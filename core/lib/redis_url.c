/*
 * redis_url - see redis_url.h.
 */
#include "lib/redis_url.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define URL_FORM "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes [s, s+n) into a new string; NULL on a bad escape or a
 * decoded NUL (AUTH arguments are binary-safe, our config strings not). */
static char *pct_decode(const char *s, size_t n)
{
    char *out = malloc(n + 1), *w = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *w++ = s[i];
            continue;
        }
        if (i + 2 >= n || hexval((unsigned char)s[i + 1]) < 0 ||
            hexval((unsigned char)s[i + 2]) < 0) {
            free(out);
            return NULL;
        }
        int c = hexval((unsigned char)s[i + 1]) * 16 +
                hexval((unsigned char)s[i + 2]);
        if (c == 0) {
            free(out);
            return NULL;
        }
        *w++ = (char)c;
        i += 2;
    }
    *w = '\0';
    return out;
}

/* Digits only, in [lo, hi]; -1 otherwise. */
static long parse_num(const char *s, size_t n, long lo, long hi)
{
    if (n == 0 || n > 10)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v < lo || v > hi ? -1 : v;
}

/* USER:PASSWORD (the text before the last '@'). */
static int parse_userinfo(const char *s, size_t n, sophia_redis_url *u,
                          char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return fail(err, errlen,
                    "credentials before '@' have no ':': write "
                    "redis://:PASSWORD@HOST for a password alone, or "
                    "redis://USER:PASSWORD@HOST for an ACL user");
    size_t ul = (size_t)(colon - s), pl = n - ul - 1;
    if (pl == 0)
        return fail(err, errlen, "the password before '@' is empty");
    if (ul && !(u->user = pct_decode(s, ul)))
        return fail(err, errlen, "the user name has a bad percent-escape "
                                 "(%%XX, two hex digits, not %%00)");
    if (!(u->password = pct_decode(colon + 1, pl)))
        return fail(err, errlen, "the password has a bad percent-escape "
                                 "(%%XX, two hex digits, not %%00); write "
                                 "'%%' itself as %%25");
    return 0;
}

/* HOST[:PORT] or [V6][:PORT]. */
static int parse_hostport(const char *s, size_t n, sophia_redis_url *u,
                          char *err, size_t errlen)
{
    const char *h = s, *hend, *rest;
    if (n && *s == '[') {
        h = s + 1;
        hend = memchr(h, ']', n - 1);
        if (!hend)
            return fail(err, errlen, "'[' opens an IPv6 address without ']'");
        rest = hend + 1;
    } else {
        hend = memchr(s, ':', n);
        if (!hend)
            hend = s + n;
        rest = hend;
    }
    if (hend == h)
        return fail(err, errlen, "no host (expected " URL_FORM ")");
    for (const char *p = h; p < hend; p++)
        if (isspace((unsigned char)*p) || *p == '[' || *p == ']' ||
            (*p == ':' && *s != '['))
            return fail(err, errlen, "the host '%.*s' is not a name or an "
                                     "address (IPv6 goes in brackets)",
                        (int)(hend - h), h);
    size_t rl = (size_t)(s + n - rest);
    if (rl && *rest != ':')
        return fail(err, errlen, "unexpected '%.*s' after the host",
                    (int)rl, rest);
    if (rl) {
        long port = parse_num(rest + 1, rl - 1, 1, 65535);
        if (port < 0)
            return fail(err, errlen, "port '%.*s' is not a number in "
                                     "1..65535", (int)(rl - 1), rest + 1);
        u->port = (int)port;
    }
    u->host = strndup(h, (size_t)(hend - h));
    return u->host ? 0 : fail(err, errlen, "out of memory");
}

int sophia_redis_url_parse(const char *url, sophia_redis_url *out, char *err,
                           size_t errlen)
{
    sophia_redis_url u = {NULL, 6379, 0, NULL, NULL};
    memset(out, 0, sizeof(*out));
    if (!url || !*url)
        return fail(err, errlen, "empty URL (expected " URL_FORM ")");
    if (!strncasecmp(url, "rediss://", 9))
        return fail(err, errlen, "rediss:// (TLS) is not supported; use "
                                 "redis:// on a trusted network or a TLS "
                                 "tunnel");
    if (strncasecmp(url, "redis://", 8))
        return fail(err, errlen, "not a redis:// URL (expected " URL_FORM ")");
    const char *p = url + 8, *end = p + strlen(p);
    /* The last '@' ends the credentials: a password may hold '/' or '@'
     * unescaped, a host or db never does. */
    const char *at = strrchr(p, '@');
    if (strchr(at ? at : p, '?') || strchr(at ? at : p, '#'))
        return fail(err, errlen, "query parameters and fragments are not "
                                 "supported (expected " URL_FORM ")");
    if (at && parse_userinfo(p, (size_t)(at - p), &u, err, errlen) < 0)
        goto bad;
    const char *hp = at ? at + 1 : p;
    const char *slash = strchr(hp, '/');
    const char *hpend = slash ? slash : end;
    if (parse_hostport(hp, (size_t)(hpend - hp), &u, err, errlen) < 0)
        goto bad;
    if (slash && slash[1]) {
        long db = parse_num(slash + 1, strlen(slash + 1), 0, 2147483647L);
        if (db < 0) {
            fail(err, errlen, "database '/%s' is not a number >= 0",
                 slash + 1);
            goto bad;
        }
        u.db = (int)db;
    }
    *out = u;
    return 0;
bad:
    sophia_redis_url_clear(&u);
    return -1;
}

void sophia_redis_url_clear(sophia_redis_url *u)
{
    if (!u)
        return;
    free(u->host);
    free(u->user);
    if (u->password) /* do not leave it in freed heap memory */
        explicit_bzero(u->password, strlen(u->password));
    free(u->password);
    memset(u, 0, sizeof(*u));
}

char *sophia_redis_url_redact(const char *url, char *buf, size_t n)
{
    sophia_redis_url u;
    if (!n)
        return buf;
    if (url && sophia_redis_url_parse(url, &u, NULL, 0) == 0) {
        int v6 = strchr(u.host, ':') != NULL;
        snprintf(buf, n, "redis://%s%s%s%s%s:%d/%d", u.user ? u.user : "",
                 u.password ? ":***@" : "", v6 ? "[" : "", u.host,
                 v6 ? "]" : "", u.port, u.db);
        sophia_redis_url_clear(&u);
        return buf;
    }
    /* Unparseable: mask what could be credentials (before the last '@')
     * and any query string. */
    const char *s = url ? url : "", *sep = strstr(s, "://");
    const char *at = strrchr(s, '@'), *q = strpbrk(at ? at : s, "?#");
    int keep = q ? (int)(q - s) : (int)strlen(s);
    if (at && sep && sep < at)
        snprintf(buf, n, "%.*s://***%.*s%s", (int)(sep - s), s,
                 keep - (int)(at - s), at, q ? "?***" : "");
    else if (at)
        snprintf(buf, n, "***%.*s%s", keep - (int)(at - s), at, q ? "?***" : "");
    else
        snprintf(buf, n, "%.*s%s", keep, s, q ? "?***" : "");
    return buf;
}
