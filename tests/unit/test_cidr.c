/*
 * test_cidr - allow-list ranges (IPv4, IPv6, IPv4-mapped sources), the
 * loopback test, and the StatsD listen/allow keys at config load: a bare
 * port on loopback, a non-loopback listen refused without allow, bad
 * CIDRs refused with their position.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "lib/cidr.h"
#include "conf/config.h"
#include "lib/diag.h"


static int match(const char *range, const char *addr)
{
    sophia_cidr c;
    char err[160];
    if (sophia_cidr_parse(range, &c, err, sizeof(err)) < 0)
        fail_msg("%s: %s", range, err);
    struct sockaddr_storage ss = {0};
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
    }
    return sophia_cidr_match(&c, 1, (struct sockaddr *)&ss);
}

static void test_match(void **u)
{
    (void)u;
    assert_true(match("127.0.0.0/8", "127.0.0.1"));
    assert_true(match("127.0.0.0/8", "127.255.0.9"));
    assert_false(match("127.0.0.0/8", "128.0.0.1"));
    assert_true(match("127.0.0.2/32", "127.0.0.2"));
    assert_false(match("127.0.0.2/32", "127.0.0.1"));
    assert_true(match("127.0.0.2", "127.0.0.2")); /* bare address: one host */
    assert_true(match("10.1.0.0/17", "10.1.127.255"));
    assert_false(match("10.1.0.0/17", "10.1.128.0"));
    assert_true(match("0.0.0.0/0", "203.0.113.9"));
    assert_true(match("fd00::/8", "fd12::1"));
    assert_false(match("fd00::/8", "fe80::1"));
    assert_true(match("::1/128", "::1"));
    assert_false(match("::1/128", "127.0.0.1"));
    /* a dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d */
    assert_true(match("10.0.0.0/8", "::ffff:10.2.3.4"));
    assert_false(match("10.0.0.0/8", "::ffff:11.2.3.4"));
    assert_false(match("fd00::/8", "10.0.0.1"));
}

static void bad(const char *range, const char *want)
{
    sophia_cidr c;
    char err[160] = "";
    assert_int_equal(sophia_cidr_parse(range, &c, err, sizeof(err)), -1);
    if (!strstr(err, want))
        fail_msg("%s: \"%s\" lacks \"%s\"", range, err, want);
}

static void test_bad_ranges(void **u)
{
    (void)u;
    bad("", "is not ADDRESS or ADDRESS/PREFIX");
    bad("/8", "is not ADDRESS or ADDRESS/PREFIX");
    bad("10.0.0/8", "'10.0.0' is not an IPv4 or IPv6 address");
    bad("example.com/8", "is not an IPv4 or IPv6 address");
    bad("10.0.0.0/33", "prefix '/33' is not a number in 0..32");
    bad("fd00::/129", "prefix '/129' is not a number in 0..128");
    bad("10.0.0.0/", "prefix '/'");
    bad("10.0.0.0/8x", "prefix '/8x'");
    bad("10.1.2.3/8", "has host bits set below its /8");
    bad("fd00::1/8", "has host bits set");
}

static void test_loopback(void **u)
{
    (void)u;
    assert_true(sophia_host_is_loopback("127.0.0.1"));
    assert_true(sophia_host_is_loopback("127.8.9.10"));
    assert_true(sophia_host_is_loopback("::1"));
    assert_true(sophia_host_is_loopback("localhost"));
    assert_false(sophia_host_is_loopback("0.0.0.0"));
    assert_false(sophia_host_is_loopback("::"));
    assert_false(sophia_host_is_loopback("10.0.0.1"));
    assert_false(sophia_host_is_loopback("127.example.com"));
    assert_false(sophia_host_is_loopback("metrics.internal"));
}

/* Loads a streams.m.statsd section and validates; returns the conf. */
static sophia_conf *load_statsd(const char *statsd, sophia_diag *d)
{
    char y[600];
    snprintf(y, sizeof(y),
             "plugins:\n  path: [/nonexistent]\n  instances:\n"
             "    p: {plugin: metrics}\n"
             "streams:\n  m:\n    processor: p\n    statsd:\n%s", statsd);
    sophia_diag_init(d);
    sophia_conf *c = sophia_conf_load_string("t.yaml", y, strlen(y), d);
    assert_non_null(c);
    sophia_conf_validate(c, d);
    return c;
}

static void test_config(void **u)
{
    (void)u;
    sophia_diag d;
    sophia_conf *c = load_statsd("      listen: 8125\n", &d);
    assert_int_equal(d.count, 0);
    assert_string_equal(c->streams[0].statsd_listen, "127.0.0.1:8125");
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: \":9125\"\n", &d);
    assert_int_equal(d.count, 0);
    assert_string_equal(c->streams[0].statsd_listen, "127.0.0.1:9125");
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: \"[::1]:8125\"\n", &d);
    assert_int_equal(d.count, 0);
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: 0.0.0.0:8125\n", &d);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.lines[0],
                        "t.yaml:9:15: streams.m.statsd.listen 0.0.0.0:8125 is "
                        "not loopback but no allow-list is set "
                        "(streams.m.statsd.allow: [CIDR, ...])");
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: \"[::]:8125\"\n"
                    "      allow: [10.0.0.0/8, \"fd00::/8\"]\n", &d);
    assert_int_equal(d.count, 0);
    assert_int_equal(c->streams[0].nstatsd_allow, 2);
    assert_string_equal(c->streams[0].statsd_allow[1], "fd00::/8");
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: 8125\n      allow: [10.0.0.0/8, nope, 1.2.3.4/40]\n", &d);
    assert_int_equal(d.count, 2);
    assert_string_equal(d.lines[0], "t.yaml:10:27: streams.m.statsd.allow: "
                                    "'nope' is not an IPv4 or IPv6 address");
    assert_string_equal(d.lines[1], "t.yaml:10:33: streams.m.statsd.allow: "
                                    "prefix '/40' is not a number in 0..32");
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: 8125\n      allow: 10.0.0.0/8\n", &d);
    assert_int_equal(d.count, 1);
    assert_non_null(strstr(d.lines[0], "t.yaml:10:14: streams.m.statsd.allow: "
                                       "expected a sequence of CIDRs"));
    sophia_conf_free(c);
    sophia_diag_free(&d);

    c = load_statsd("      listen: \"host:port\"\n", &d);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.lines[0], "t.yaml:9:15: streams.m.statsd.listen: "
                                    "'host:port' is not HOST:PORT or PORT (IPv6 "
                                    "as [::1]:8125, port 1..65535)");
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_bad_ranges),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
