/*
 * origin - see origin.h.
 */
#include "ws/origin.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

/* host[:port] split out of a string, borrowed. */
typedef struct {
    const char *host;
    size_t hlen;
    long port; /* -1 = none given */
} origin_hostport;

/* Parses "host", "host:port", "[v6]" or "[v6]:port" (the whole of s..end).
 * Returns 0, or -1 when it is not exactly that shape. */
static int parse_hostport(const char *s, const char *end, origin_hostport *out)
{
    const char *p;
    out->port = -1;
    if (s >= end)
        return -1;
    if (*s == '[') {
        const char *close = memchr(s, ']', (size_t)(end - s));
        if (!close || close == s + 1)
            return -1;
        out->host = s;
        out->hlen = (size_t)(close + 1 - s);
        p = close + 1;
        if (p == end)
            return 0;
        if (*p != ':')
            return -1;
    } else {
        const char *colon = memchr(s, ':', (size_t)(end - s));
        p = colon ? colon : end;
        out->host = s;
        out->hlen = (size_t)(p - s);
        if (out->hlen == 0)
            return -1;
        /* a host name never holds these; their presence means the string
         * smuggles a path, query, user info or a second colon */
        for (const char *q = s; q < p; q++)
            if (*q == '/' || *q == '@' || *q == '?' || *q == '#' || *q == '\\' ||
                *q == ' ' || *q == '[' || *q == ']')
                return -1;
        if (p == end)
            return 0;
    }
    /* p at ':' : the port is 1..5 digits, up to 65535, and the end */
    p++;
    if (p == end || end - p > 5)
        return -1;
    long port = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        port = port * 10 + (*p - '0');
    }
    if (port > 65535)
        return -1;
    out->port = port;
    return 0;
}

static int same_origin(const char *origin, const char *host)
{
    long def;
    const char *rest;
    if (strncasecmp(origin, "http://", 7) == 0) {
        def = 80;
        rest = origin + 7;
    } else if (strncasecmp(origin, "https://", 8) == 0) {
        def = 443;
        rest = origin + 8;
    } else {
        return 0; /* "null" and other schemes: never our own page */
    }
    origin_hostport o, h;
    if (parse_hostport(rest, rest + strlen(rest), &o) < 0 ||
        parse_hostport(host, host + strlen(host), &h) < 0)
        return 0;
    if (o.hlen != h.hlen || strncasecmp(o.host, h.host, o.hlen) != 0)
        return 0;
    long op = o.port < 0 ? def : o.port;
    long hp = h.port < 0 ? def : h.port;
    return op == hp;
}

int sophia_origin_allowed(const char *origin, const char *host,
                          char *const *allowed, size_t nallowed)
{
    if (!origin || !*origin)
        return 1;
    for (size_t i = 0; i < nallowed; i++)
        if (allowed[i] && (strcmp(allowed[i], "*") == 0 ||
                           strcasecmp(allowed[i], origin) == 0))
            return 1;
    return host && *host && same_origin(origin, host);
}
