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
#include "event/tls_client.h"
#include "lib/dict.h"
#include "lib/log.h"

/* Connections kept per server: evhttp sends one request at a time on a
 * connection, so requests that overlap (an output's batches in flight)
 * each take an idle one, up to this many, then queue on the least busy. */
#define HTTP_CONNS_PER_SERVER 8

typedef struct http_conn {
    struct evhttp_connection *evcon;
    size_t pending; /* requests queued on it or out */
    int stale;      /* TLS: closed or failed; made anew once idle */
} http_conn;

typedef struct http_server { /* one scheme://host:port and way to verify */
    http_conn conns[HTTP_CONNS_PER_SERVER];
    size_t n;
    int tls;
} http_server;

typedef struct http_pending {
    struct http_pending *next, **pprev;
    sophia_http_client *c;
    http_conn *conn;
    int tls;
    sophia_http_client_cb cb;
    void *arg;
    int timed_out;
} http_pending;

struct sophia_http_client {
    struct event_base *base;
    struct evdns_base *dns;
    sophia_dict *servers; /* "host:port" (+ TLS: how) -> http_server */
    sophia_tls_clients *tls;
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
    c->tls = sophia_tls_clients_new();
    if (!c->dns || !c->servers || !c->tls) {
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
    sophia_tls_clients_free(c->tls); /* after the connections using it */
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
        char why[300] = "";
        if (p->tls) { /* its SSL is spent: the next request gets a new one */
            p->conn->stale = 1;
            sophia_tls_client_why(evhttp_connection_get_bufferevent(
                                      p->conn->evcon),
                                  why, sizeof(why));
        }
        p->cb(p->arg, p->timed_out ? SOPHIA_ETIMEDOUT : SOPHIA_EUNAVAIL, 0,
              *why ? why : NULL, strlen(why));
    } else {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
        p->cb(p->arg, 0, status, body, len);
    }
    free(p);
}

static void on_tls_close(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    ((http_conn *)arg)->stale = 1;
}

/* A connection for slot `hc`: plain, or over TLS as `s` says. NULL with
 * `why` filled. */
static struct evhttp_connection *conn_open(sophia_http_client *c,
                                           http_server *s, http_conn *hc,
                                           const char *host, int port,
                                           const sophia_http_tls *tls,
                                           char *why, size_t n)
{
    struct bufferevent *bev =
        s->tls ? sophia_tls_client_bev(c->tls, c->base, host, tls->ca_file,
                                       tls->verify, why, n)
               : NULL;
    if (s->tls && !bev)
        return NULL;
    struct evhttp_connection *evcon = evhttp_connection_base_bufferevent_new(
        c->base, c->dns, bev, host, (unsigned short)port);
    if (!evcon) { /* bev is freed with evcon only once it took it */
        if (bev)
            bufferevent_free(bev);
        snprintf(why, n, "out of memory");
        return NULL;
    }
    evhttp_connection_set_retries(evcon, 0); /* the caller retries */
    /* An SSL that closed, or whose handshake failed, cannot connect again
     * (libevent reuses it): such a connection is replaced when idle. */
    if (s->tls)
        evhttp_connection_set_closecb(evcon, on_tls_close, hc);
    return evcon;
}

/* The server entry for `key`, made on first use. */
static http_server *server_for(sophia_http_client *c, const char *key, int tls)
{
    http_server *s = sophia_dict_get(c->servers, key);
    if (s || !(s = calloc(1, sizeof(*s))))
        return s;
    s->tls = tls;
    sophia_dict_set(c->servers, key, s);
    if (sophia_dict_get(c->servers, key) != s) { /* out of memory */
        free(s);
        return NULL;
    }
    return s;
}

/* A connection to the server for one more request: an idle one, else a
 * new one while the server has fewer than HTTP_CONNS_PER_SERVER, else
 * the least busy (keep-alive: each is made on first use and kept). */
static http_conn *conn_for(sophia_http_client *c, const char *host, int port,
                           const sophia_http_tls *tls, char *why, size_t n)
{
    char key[4400];
    snprintf(key, sizeof(key), tls ? "%s:%d https %d %s" : "%s:%d", host, port,
             tls ? tls->verify : 0, tls && tls->ca_file ? tls->ca_file : "");
    http_server *s = server_for(c, key, tls != NULL);
    if (!s) {
        snprintf(why, n, "out of memory");
        return NULL;
    }
    http_conn *best = NULL;
    for (size_t i = 0; i < s->n; i++) {
        http_conn *hc = &s->conns[i];
        struct evhttp_connection *fresh =
            hc->stale && !hc->pending
                ? conn_open(c, s, hc, host, port, tls, why, n)
                : NULL;
        if (fresh) { /* else the stale one fails its request: a retry */
            evhttp_connection_free(hc->evcon);
            *hc = (http_conn){.evcon = fresh};
        }
        if (!best || hc->pending < best->pending)
            best = hc;
    }
    if (best && (!best->pending || s->n == HTTP_CONNS_PER_SERVER))
        return best;
    http_conn *hc = &s->conns[s->n];
    struct evhttp_connection *evcon =
        conn_open(c, s, hc, host, port, tls, why, n);
    if (!evcon)
        return best; /* queue behind a busy one rather than fail */
    *hc = (http_conn){.evcon = evcon};
    s->n++;
    return hc;
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
                       const char *host, int dflt_port, int port)
{
    char hv[300];
    snprintf(hv, sizeof(hv), dflt_port ? "%s" : "%s:%d", host, port);
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
                                    int dflt_port, int port,
                                    const char *const *headers,
                                    const char *body, size_t len)
{
    struct evhttp_request *req = evhttp_request_new(on_done, p);
    if (!req)
        return NULL;
    evhttp_request_set_error_cb(req, on_error);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    char cl[32];
    snprintf(cl, sizeof(cl), "%zu", len); /* evhttp adds it for POST/PUT only */
    if (add_headers(out, headers, host, dflt_port, port) < 0 ||
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
                               const sophia_http_tls *tls,
                               sophia_http_client_cb cb, void *arg)
{
    static const sophia_http_tls verify_default = {.verify = 1};
    enum evhttp_cmd_type cmd;
    if (!c || !cb || !url || method_of(method, &cmd) < 0)
        return SOPHIA_EINVAL;
    if (c->closing)
        return SOPHIA_EUNAVAIL;
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    int https = scheme && !strcmp(scheme, "https");
    if (!scheme || (strcmp(scheme, "http") && !https) || !host || !*host) {
        evhttp_uri_free(u);
        return SOPHIA_EINVAL;
    }
    int dflt = https ? 443 : 80;
    int port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : dflt;
    char target[4096];
    const char *path = evhttp_uri_get_path(u), *q = evhttp_uri_get_query(u);
    snprintf(target, sizeof(target), "%s%s%s", path && *path ? path : "/",
             q ? "?" : "", q ? q : "");
    char why[300] = "out of memory";
    http_pending *p = calloc(1, sizeof(*p));
    http_conn *hc = p ? conn_for(c, host, port,
                                 https ? (tls ? tls : &verify_default) : NULL,
                                 why, sizeof(why))
                      : NULL;
    struct evhttp_connection *conn = hc ? hc->evcon : NULL;
    struct evhttp_request *req =
        conn ? build(p, host, port == dflt, port, headers, body, len) : NULL;
    evhttp_uri_free(u);
    if (!req) {
        free(p);
        if (!conn)
            sophia_warn("http_client", "msg=\"cannot connect\" url=\"%s\" "
                        "error=\"%s\"", url, why);
        return conn ? SOPHIA_EINVAL : SOPHIA_EUNAVAIL;
    }
    struct timeval tv = sophia_timeval(timeout_s > 0 ? timeout_s : 10);
    evhttp_connection_set_timeout_tv(conn, &tv);
    no_delay(conn);
    *p = (http_pending){.c = c, .conn = hc, .tls = https, .cb = cb, .arg = arg};
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
