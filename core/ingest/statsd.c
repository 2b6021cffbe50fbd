/*
 * statsd - see statsd.h.
 */
#include "ingest/statsd.h"

#include <errno.h>
#include <stddef.h>
#include <event2/event.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sophia/sdk.h>

#include "lib/cidr.h"
#include "conf/config.h"
#include "lib/log.h"
#include "ingest/stream.h"

#define STATSD_MAX_DATAGRAM 65536
#define STATSD_READS_PER_WAKE 64
#define STATSD_MAX_LINES 1024

struct sophia_statsd {
    struct sophia_stream *st;
    int fd;
    struct event *ev;
    char *buf;
    sophia_cidr *allow; /* NULL: any source (a loopback listener) */
    size_t nallow;
    sophia_statsd_stats fig;
};

/* ------------------------------------------------------------ parsing */

static json_t *fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return NULL;
}

static const char *type_name(const char *t, size_t n)
{
    static const struct {
        const char *code, *name;
    } map[] = {{"c", "counter"}, {"g", "gauge"},  {"ms", "timer"},
               {"h", "histogram"}, {"d", "distribution"}, {"s", "set"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strlen(map[i].code) == n && !strncmp(map[i].code, t, n))
            return map[i].name;
    return NULL;
}

/* "#k:v,k2:v2,flag" into labels (and dashboard_id into the point). */
static void parse_tags(json_t *point, json_t *labels, const char *s, size_t n)
{
    while (n) {
        size_t k = 0;
        while (k < n && s[k] != ',')
            k++;
        const char *colon = memchr(s, ':', k);
        size_t kl = colon ? (size_t)(colon - s) : k;
        char key[256], val[512];
        snprintf(key, sizeof(key), "%.*s", (int)kl, s);
        snprintf(val, sizeof(val), "%.*s", colon ? (int)(k - kl - 1) : 0,
                 colon ? colon + 1 : "");
        if (*key && !strcmp(key, "dashboard") && *val)
            json_object_set_new(point, "dashboard_id", json_string(val));
        else if (*key)
            json_object_set_new(labels, key, json_string(val));
        s += k + (k < n);
        n -= k + (k < n);
    }
}

json_t *sophia_statsd_parse_line(const char *line, size_t len, int *skip,
                                 char *err, size_t errlen)
{
    *skip = 0;
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' '))
        len--;
    if (!len || (len >= 3 && (!strncmp(line, "_e{", 3) || !strncmp(line, "_sc|", 3)))) {
        *skip = 1;
        return NULL;
    }
    const char *colon = memchr(line, ':', len);
    const char *bar = memchr(line, '|', len);
    if (!colon || !bar || bar < colon || colon == line)
        return fail(err, errlen, "expected name:value|type");
    char name[256], num[64];
    if ((size_t)(colon - line) >= sizeof(name) ||
        (size_t)(bar - colon - 1) >= sizeof(num) || bar == colon + 1)
        return fail(err, errlen, "name or value too long or empty");
    snprintf(name, sizeof(name), "%.*s", (int)(colon - line), line);
    snprintf(num, sizeof(num), "%.*s", (int)(bar - colon - 1), colon + 1);
    const char *rest = bar + 1, *end = line + len;
    size_t tl = 0;
    while (rest + tl < end && rest[tl] != '|')
        tl++;
    const char *type = type_name(rest, tl);
    if (!type)
        return fail(err, errlen, "unknown metric type (c, g, ms, h, d, s)");
    int is_set = !strcmp(type, "set");
    char *nend;
    double value = strtod(num, &nend);
    if (!is_set && (*nend || !isfinite(value)))
        return fail(err, errlen, "value is not a number");
    double rate = 1;
    json_t *point = json_object(), *labels = json_object();
    for (const char *p = rest + tl; p < end && *p == '|';) {
        const char *f = p + 1;
        size_t fl = 0;
        while (f + fl < end && f[fl] != '|')
            fl++;
        if (fl > 1 && f[0] == '@') {
            char r[32];
            snprintf(r, sizeof(r), "%.*s", (int)(fl - 1 < 31 ? fl - 1 : 31), f + 1);
            rate = strtod(r, &nend);
            if (*nend || !(rate > 0 && rate <= 1)) {
                json_decref(point);
                json_decref(labels);
                return fail(err, errlen, "sample rate must be in (0, 1]");
            }
        } else if (fl && f[0] == '#') {
            parse_tags(point, labels, f + 1, fl - 1);
        } /* other fields (|c:container, |T timestamp) are ignored */
        p = f + fl;
    }
    if (is_set) {
        json_object_set_new(labels, "member", json_string(num));
        value = 1;
    }
    if (!strcmp(type, "counter"))
        value /= rate;
    json_object_set_new(point, "metric", json_string(name));
    json_object_set_new(point, "value", value == floor(value) && fabs(value) < 1e15
                                            ? json_integer((json_int_t)value)
                                            : json_real(value));
    json_object_set_new(point, "type", json_string(type));
    json_object_set_new(point, "sample_rate", json_real(rate));
    if (json_object_size(labels))
        json_object_set_new(point, "labels", labels);
    else
        json_decref(labels);
    return point;
}

/* ------------------------------------------------------------- socket */

static void on_datagram(sophia_statsd *s, const char *buf, size_t n)
{
    json_t *pts[STATSD_MAX_LINES];
    size_t np = 0;
    for (size_t off = 0; off < n && np < STATSD_MAX_LINES;) {
        const char *nl = memchr(buf + off, '\n', n - off);
        size_t ll = nl ? (size_t)(nl - buf - off) : n - off;
        char err[128];
        int skip;
        json_t *p = sophia_statsd_parse_line(buf + off, ll, &skip, err, sizeof(err));
        if (p) {
            pts[np++] = p;
        } else if (!skip) {
            s->fig.bad_lines++;
            sophia_debug("statsd", "msg=\"bad line\" why=\"%s\"", err);
        }
        off += ll + 1;
    }
    if (np && sophia_stream_accept(s->st, pts, np, "statsd") == 0)
        s->fig.points += np;
    else if (np)
        s->fig.dropped += np; /* counted as rejected by the stream too */
    for (size_t i = 0; i < np; i++)
        json_decref(pts[i]);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    sophia_statsd *s = arg;
    for (int i = 0; i < STATSD_READS_PER_WAKE; i++) {
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(fd, s->buf, STATSD_MAX_DATAGRAM, 0,
                             (struct sockaddr *)&from, &fl);
        if (n < 0)
            return; /* EAGAIN, or an error a later read will show again */
        if (s->nallow &&
            !sophia_cidr_match(s->allow, s->nallow, (struct sockaddr *)&from)) {
            s->fig.refused++; /* counted, not logged: a flood must not fill the log */
            continue;
        }
        s->fig.datagrams++;
        on_datagram(s, s->buf, (size_t)n);
    }
}

static int bind_udp(const char *listen)
{
    char *host = NULL;
    int port = 0;
    if (sophia_conf_split_listen(listen, &host, &port) < 0)
        return -1;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host, ps, &hints, &ai);
    free(host);
    if (rc)
        return -1;
    int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* The allow-list as parsed ranges; config_streams.c checked every entry. */
static int load_allow(sophia_statsd *s, char *const *allow, size_t n)
{
    if (!n)
        return 0;
    if (!(s->allow = calloc(n, sizeof(*s->allow))))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char why[160];
        if (sophia_cidr_parse(allow[i], &s->allow[s->nallow], why, sizeof(why)) == 0)
            s->nallow++;
        else
            sophia_error("statsd", "msg=\"bad allow entry\" err=\"%s\"", why);
    }
    return s->nallow ? 0 : -1; /* all bad: refuse rather than allow all */
}

sophia_statsd *sophia_statsd_new(struct sophia_stream *st, const char *listen,
                                 char *const *allow, size_t nallow,
                                 struct event_base *base)
{
    sophia_statsd *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->st = st;
    s->fd = -1;
    if (load_allow(s, allow, nallow) < 0) {
        sophia_statsd_free(s);
        return NULL;
    }
    s->fd = bind_udp(listen);
    s->buf = malloc(STATSD_MAX_DATAGRAM);
    if (s->fd < 0 || !s->buf ||
        !(s->ev = event_new(base, s->fd, EV_READ | EV_PERSIST, on_read, s)) ||
        event_add(s->ev, NULL) < 0) {
        sophia_error("statsd", "msg=\"cannot listen for StatsD\" listen=%s "
                     "stream=%s err=\"%s\"", listen, sophia_stream_name(st),
                     strerror(errno));
        sophia_statsd_free(s);
        return NULL;
    }
    sophia_info("statsd", "msg=\"listening (udp)\" listen=%s stream=%s allow=%zu",
                listen, sophia_stream_name(st), s->nallow);
    return s;
}

/* ------------------------------------------------------------ figures */

#define OFF(f) offsetof(sophia_statsd_stats, f)

/* Each figure once, for both outputs (lib/statdef.h); prom NULL: only in
 * /api/stats. The stream writes these per stream (stream="..."). */
const sophia_statdef sophia_statsd_statdefs[] = {
    SOPHIA_STATDEF("datagrams", NULL, NULL, NULL, NULL, OFF(datagrams)),
    SOPHIA_STATDEF("points", NULL, NULL, NULL, NULL, OFF(points)),
    SOPHIA_STATDEF("bad_lines", NULL, NULL, NULL, NULL, OFF(bad_lines)),
    SOPHIA_STATDEF("dropped", NULL, NULL, NULL, NULL, OFF(dropped)),
    SOPHIA_STATDEF("refused", "sophia_statsd_refused_total", "counter", NULL,
     "StatsD datagrams dropped: source outside statsd.allow.", OFF(refused)),
};

const size_t sophia_statsd_nstatdefs =
    sizeof(sophia_statsd_statdefs) / sizeof(sophia_statsd_statdefs[0]);

_Static_assert(sizeof(sophia_statsd_statdefs) / sizeof(sophia_statsd_statdefs[0]) ==
                   sizeof(sophia_statsd_stats) / sizeof(uint64_t),
               "every sophia_statsd_stats field is declared once above");

void sophia_statsd_get_stats(const sophia_statsd *s, sophia_statsd_stats *out)
{
    *out = s->fig;
}

json_t *sophia_statsd_stats_json(const sophia_statsd *s)
{
    return sophia_statdef_json(sophia_statsd_statdefs, sophia_statsd_nstatdefs,
                               &s->fig);
}

void sophia_statsd_free(sophia_statsd *s)
{
    if (!s)
        return;
    if (s->ev)
        event_free(s->ev);
    if (s->fd >= 0)
        close(s->fd);
    free(s->buf);
    free(s->allow);
    free(s);
}
