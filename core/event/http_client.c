/*
 * http_client - see http_client.h.
 *
 * evhttp calls a request's callback with NULL when it fails (after its
 * error callback said why), and frees its requests silently when their
 * connection is freed: so every request started here is also on the
 * client's own list, and sophia_http_client_free answers those itself.
 */
#include "event/http_client.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sophia/sdk.h>

#include "event/loop.h"
#include "lib/dict.h"

/* Connections kept per server: evhttp sends one request at a time on a
 * connection, so requests that overlap (an output's batches in flight)
 * each take an idle one, up to this many, then queue on the least busy. */
#define HTTP_CONNS_PER_SERVER 8

typedef struct http_conn {
    struct evhttp_connection *evcon;
    size_t pending; /* requests queued on it or out */
} http_conn;

typedef struct http_server { /* one host:port */
    http_conn conns[HTTP_CONNS_PER_SERVER];
    size_t n;
} http_server;

typedef struct http_pending {
    struct http_pending *next, **pprev;
    sophia_http_client *c;
    http_conn *conn;
    sophia_http_client_cb cb;
    void *arg;
    int timed_out;
} http_pending;

struct sophia_http_client {
    struct event_base *base;
    struct evdns_base *dns;
    sophia_dict *servers; /* "host:port" -> http_server */
    http_pending *pending;
    size_t npending;
    int closing;
};

sophia_http_client *sophia_http_client_new(struct event_base *base)
{
    sophia_http_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    c->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    c->servers = sophia_dict_new();
    if (!c->dns || !c->servers) {
        sophia_http_client_free(c);
        return NULL;
    }
    return c;
}

static void pending_unlink(http_pending *p)
{
    *p->pprev = p->next;
    if (p->next)
        p->next->pprev = p->pprev;
    p->c->npending--;
    p->conn->pending--;
}

static void server_free(void *v)
{
    http_server *s = v;
    for (size_t i = 0; i < s->n; i++)
        evhttp_connection_free(s->conns[i].evcon);
    free(s);
}

void sophia_http_client_free(sophia_http_client *c)
{
    if (!c)
        return;
    c->closing = 1; /* what a callback below asks is refused */
    while (c->pending) {
        http_pending *p = c->pending;
        pending_unlink(p);
        p->cb(p->arg, SOPHIA_EUNAVAIL, 0, NULL, 0);
        p->cb = NULL; /* its request is freed with the connection, silently */
        p->c = NULL;
        free(p);
    }
    sophia_dict_free(c->servers, server_free);
    if (c->dns)
        evdns_base_free(c->dns, 0);
    free(c);
}

size_t sophia_http_client_pending(const sophia_http_client *c)
{
    return c ? c->npending : 0;
}

static void on_error(enum evhttp_request_error err, void *arg)
{
    http_pending *p = arg;
    if (err == EVREQ_HTTP_TIMEOUT)
        p->timed_out = 1;
}

static void on_done(struct evhttp_request *req, void *arg)
{
    http_pending *p = arg;
    pending_unlink(p);
    int status = req ? evhttp_request_get_response_code(req) : 0;
    if (!status) {
        p->cb(p->arg, p->timed_out ? SOPHIA_ETIMEDOUT : SOPHIA_EUNAVAIL, 0,
              NULL, 0);
    } else {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
        p->cb(p->arg, 0, status, body, len);
    }
    free(p);
}

/* A connection to host:port for one more request: an idle one, else a
 * new one while the server has fewer than HTTP_CONNS_PER_SERVER, else
 * the least busy (keep-alive: each is made on first use and kept). */
static http_conn *conn_for(sophia_http_client *c, const char *host, int port)
{
    char key[300];
    snprintf(key, sizeof(key), "%s:%d", host, port);
    http_server *s = sophia_dict_get(c->servers, key);
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return NULL;
        sophia_dict_set(c->servers, key, s);
        if (sophia_dict_get(c->servers, key) != s) { /* out of memory */
            free(s);
            return NULL;
        }
    }
    http_conn *best = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (!best || s->conns[i].pending < best->pending)
            best = &s->conns[i];
    if (best && (!best->pending || s->n == HTTP_CONNS_PER_SERVER))
        return best;
    struct evhttp_connection *evcon =
        evhttp_connection_base_new(c->base, c->dns, host, (unsigned short)port);
    if (!evcon)
        return best; /* queue behind a busy one rather than fail */
    evhttp_connection_set_retries(evcon, 0); /* the caller retries */
    s->conns[s->n] = (http_conn){.evcon = evcon};
    return &s->conns[s->n++];
}

/* A body's last segment must not wait for the ACK of the one before
 * (Nagle's algorithm against the receiver's delayed ACK: 40 ms a
 * request). evhttp makes the socket when it connects, so a connection's
 * first request goes before this can see it; the ones after reuse it. */
static void no_delay(struct evhttp_connection *conn)
{
    evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(conn));
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Adds the caller's header lines and Host; -1 on a line without ':'. */
static int add_headers(struct evkeyvalq *out, const char *const *headers,
                       const char *host, int port)
{
    char hv[300];
    snprintf(hv, sizeof(hv), port == 80 ? "%s" : "%s:%d", host, port);
    evhttp_add_header(out, "Host", hv);
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *colon = strchr(headers[i], ':');
        if (!colon || colon == headers[i] || colon - headers[i] > 255)
            return -1;
        char name[256];
        memcpy(name, headers[i], (size_t)(colon - headers[i]));
        name[colon - headers[i]] = 0;
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (!strcasecmp(name, "host") || !strcasecmp(name, "content-length"))
            continue;
        if (evhttp_add_header(out, name, v) < 0)
            return -1;
    }
    return 0;
}

static int method_of(const char *m, enum evhttp_cmd_type *out)
{
    static const struct {
        const char *name;
        enum evhttp_cmd_type cmd;
    } map[] = {{"GET", EVHTTP_REQ_GET}, {"POST", EVHTTP_REQ_POST},
               {"PUT", EVHTTP_REQ_PUT}, {"PATCH", EVHTTP_REQ_PATCH},
               {"DELETE", EVHTTP_REQ_DELETE}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(m ? m : "POST", map[i].name)) {
            *out = map[i].cmd;
            return 0;
        }
    return -1;
}

/* Builds the request on `p`; it owns nothing of the caller's after. */
static struct evhttp_request *build(http_pending *p, const char *host,
                                    int port, const char *const *headers,
                                    const char *body, size_t len)
{
    struct evhttp_request *req = evhttp_request_new(on_done, p);
    if (!req)
        return NULL;
    evhttp_request_set_error_cb(req, on_error);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    char cl[32];
    snprintf(cl, sizeof(cl), "%zu", len); /* evhttp adds it for POST/PUT only */
    if (add_headers(out, headers, host, port) < 0 ||
        evhttp_add_header(out, "Content-Length", cl) < 0 ||
        (len && evbuffer_add(evhttp_request_get_output_buffer(req), body,
                             len) < 0)) {
        evhttp_request_free(req);
        return NULL;
    }
    return req;
}

int sophia_http_client_request(sophia_http_client *c, const char *method,
                               const char *url, const char *const *headers,
                               const char *body, size_t len, double timeout_s,
                               sophia_http_client_cb cb, void *arg)
{
    enum evhttp_cmd_type cmd;
    if (!c || !cb || !url || method_of(method, &cmd) < 0)
        return SOPHIA_EINVAL;
    if (c->closing)
        return SOPHIA_EUNAVAIL;
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    if (!scheme || strcmp(scheme, "http") || !host || !*host) {
        evhttp_uri_free(u);
        return SOPHIA_EINVAL;
    }
    int port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    char target[4096];
    const char *path = evhttp_uri_get_path(u), *q = evhttp_uri_get_query(u);
    snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/",
             q ? "?" : "", q ? q : "");
    http_pending *p = calloc(1, sizeof(*p));
    http_conn *hc = p ? conn_for(c, host, port) : NULL;
    struct evhttp_connection *conn = hc ? hc->evcon : NULL;
    struct evhttp_request *req =
        conn ? build(p, host, port, headers, body, len) : NULL;
    evhttp_uri_free(u);
    if (!req) {
        free(p);
        return conn ? SOPHIA_EINVAL : SOPHIA_ENOMEM;
    }
    struct timeval tv = sophia_timeval(timeout_s > 0 ? timeout_s : 10);
    evhttp_connection_set_timeout_tv(conn, &tv);
    no_delay(conn);
    *p = (http_pending){.c = c, .conn = hc, .cb = cb, .arg = arg};
    if (evhttp_make_request(conn, req, cmd, target) < 0) {
        free(p); /* evhttp freed the request */
        return SOPHIA_EUNAVAIL;
    }
    hc->pending++;
    p->next = c->pending;
    if (p->next)
        p->next->pprev = &p->next;
    p->pprev = &c->pending;
    c->pending = p;
    c->npending++;
    return 0;
}
