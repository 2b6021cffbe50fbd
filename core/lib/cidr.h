/*
 * cidr - IPv4 and IPv6 address ranges for allow-lists (the StatsD
 * listener's streams.<name>.statsd.allow), and the loopback test that
 * decides whether a listener needs one.
 *
 * A range is ADDRESS/PREFIX (10.0.0.0/8, fd00::/8) or a bare ADDRESS (one
 * host). Host bits set below the prefix (10.1.2.3/8) are refused as a
 * likely typo. An IPv4-mapped IPv6 source (::ffff:10.1.2.3, what a
 * dual-stack socket reports) matches IPv4 ranges.
 */
#ifndef SOPHIA_CIDR_H
#define SOPHIA_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct sophia_cidr {
    int family;         /* AF_INET or AF_INET6 */
    uint8_t addr[16];   /* network byte order; 4 bytes used for AF_INET */
    unsigned prefix;    /* 0..32 or 0..128 */
} sophia_cidr;

/* 0, or -1 with the reason in err. */
int sophia_cidr_parse(const char *s, sophia_cidr *out, char *err,
                      size_t errlen);

/* 1 when the address (AF_INET or AF_INET6 sockaddr) is in any of the n
 * ranges. */
int sophia_cidr_match(const sophia_cidr *v, size_t n,
                      const struct sockaddr *sa);

/* 1 for "localhost", 127.0.0.0/8 and ::1 (a listen host). */
int sophia_host_is_loopback(const char *host);

#endif
