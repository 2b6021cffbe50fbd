/*
 * cidr - see cidr.h.
 */
#include "lib/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sophia_cidr_parse(const char *s, sophia_cidr *out, char *err,
                      size_t errlen)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t al = slash ? (size_t)(slash - s) : strlen(s);
    memset(out, 0, sizeof(*out));
    if (al == 0 || al >= sizeof(buf)) {
        snprintf(err, errlen, "'%s' is not ADDRESS or ADDRESS/PREFIX", s);
        return -1;
    }
    memcpy(buf, s, al);
    buf[al] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
    } else {
        snprintf(err, errlen, "'%s' is not an IPv4 or IPv6 address", buf);
        return -1;
    }
    unsigned max = out->prefix;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || p < 0 || p > (long)max) {
            snprintf(err, errlen, "prefix '/%s' is not a number in 0..%u",
                     slash + 1, max);
            return -1;
        }
        out->prefix = (unsigned)p;
    }
    for (unsigned bit = out->prefix; bit < max; bit++)
        if (out->addr[bit / 8] & (0x80u >> (bit % 8))) {
            snprintf(err, errlen, "'%s' has host bits set below its /%u "
                                  "(the network is written with them zero)",
                     s, out->prefix);
            return -1;
        }
    return 0;
}

static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;
    if (memcmp(a, b, full) != 0)
        return 0;
    if (!rest)
        return 1;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

int sophia_cidr_match(const sophia_cidr *v, size_t n,
                      const struct sockaddr *sa)
{
    const uint8_t *a4 = NULL, *a6 = NULL;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (sa->sa_family == AF_INET) {
        a4 = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        a6 = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (!memcmp(a6, mapped, sizeof(mapped)))
            a4 = a6 + 12;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].family == AF_INET && a4 && prefix_equal(v[i].addr, a4, v[i].prefix))
            return 1;
        if (v[i].family == AF_INET6 && a6 && prefix_equal(v[i].addr, a6, v[i].prefix))
            return 1;
    }
    return 0;
}

int sophia_host_is_loopback(const char *host)
{
    uint8_t a[16];
    if (!host)
        return 0;
    if (!strcmp(host, "localhost"))
        return 1;
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127;
    static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    return inet_pton(AF_INET6, host, a) == 1 && !memcmp(a, one, 16);
}
