/*
 * http_server - the front door as a server: its listeners, accepting a
 * connection (or refusing it over server.max_connections), TLS set-up and
 * reload, start and stop. See http.h for the contract; what happens on a
 * connection once accepted is http.c's.
 *
 * server.tls adds a second listener whose connections read and write
 * through a TLS bufferevent (http_tls.h); conn_new takes the bufferevent
 * from new_bev, and every line after that is the same for both. A `/ws`
 * upgrade on TLS goes to lws through http_tls's bridge instead of dup().
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http_priv.h"
#include "http/http_tls.h"
#include "http/http_ws.h"
#include "lib/log.h"

#define HTTP_IDLE_S 30     /* keep-alive idle, and a slow head or body */

/* ---------------------------------------------------------- accepting */

/* Over server.max_connections: one canned answer, sent without waiting. */
static void refuse_connection(sophia_http *h, int fd)
{
    static const char body[] = "{\"error\":{\"code\":\"busy\",\"message\":"
                               "\"too many connections (server.max_connections)\"}}";
    char buf[512];
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                     "content-length: %zu\r\nretry-after: 1\r\nconnection: close\r\n\r\n%s",
                     sizeof(body) - 1, body);
    h->st.connections_refused++;
    ssize_t sent = send(fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent;
    close(fd);
}

/* The one difference between the listeners: how bytes are carried.
 * Closes fd when it returns NULL. */
static struct bufferevent *new_bev(sophia_http *h, int fd, int tls)
{
    if (tls)
        return sophia_tls_bev_new(h->tls, fd);
    struct bufferevent *bev =
        bufferevent_socket_new(sophia_loop_base(h->loop), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        close(fd);
    return bev;
}

static int conn_new(sophia_http *h, int fd, int tls)
{
    if (h->st.connections >= h->conf->server.max_connections) {
        if (tls) { /* a plain-text answer would only be a handshake error */
            h->st.connections_refused++;
            close(fd);
        } else {
            refuse_connection(h, fd);
        }
        return -1;
    }
    http_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return -1;
    }
    if (!(c->bev = new_bev(h, fd, tls))) {
        free(c);
        return -1;
    }
    c->h = h;
    c->tls = tls;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        getnameinfo((struct sockaddr *)&ss, sl, c->peer, sizeof(c->peer), NULL, 0,
                    NI_NUMERICHOST);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->st.connections++;
    struct timeval idle = {HTTP_IDLE_S, 0};
    bufferevent_set_timeouts(c->bev, &idle, &idle);
    bufferevent_setcb(c->bev, http_on_read, http_on_write, http_on_event, c);
    bufferevent_enable(c->bev, EV_READ);
    return 0;
}

int sophia_http_adopt(sophia_http *h, int fd)
{
    return conn_new(h, fd, 0);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    conn_new(arg, fd, 0);
}

static void on_accept_tls(struct evconnlistener *l, evutil_socket_t fd,
                          struct sockaddr *sa, int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    conn_new(arg, fd, 1);
}

void sophia_http_get_stats(const sophia_http *h, sophia_http_stats *st)
{
    memset(st, 0, sizeof(*st));
    if (h) {
        *st = h->st;
        st->requests = h->requests;
        st->errors = h->errors;
    }
}

/* ----------------------------------------------------------- listening */

/* Binds host:*port (*port is set to the bound port). */
static struct evconnlistener *listen_on(sophia_http *h, const char *host,
                                        int *portp, evconnlistener_cb cb)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", *portp);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
        return NULL;
    struct evconnlistener *l = evconnlistener_new_bind(
        sophia_loop_base(h->loop), cb, h,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 511,
        ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!l)
        return NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &sl) == 0)
        *portp = ntohs(ss.ss_family == AF_INET6
                           ? ((struct sockaddr_in6 *)&ss)->sin6_port
                           : ((struct sockaddr_in *)&ss)->sin_port);
    return l;
}

/* server.tls: the context (loaded at config time, so this fails only if
 * the files changed since) and the second listener. */
static int tls_start(sophia_http *h)
{
    const sophia_conf *cf = h->conf;
    char why[1024];
    sophia_tls_fault fault;
    int port;
    SSL_CTX *ctx = sophia_tls_ctx_new(cf->server.tls.cert, cf->server.tls.key, &fault,
                                      why, sizeof(why));
    if (!ctx || sophia_conf_split_listen(cf->server.tls.listen, &h->tls_host, &port) < 0) {
        char q[1100];
        sophia_error("http", "msg=\"cannot load server.tls\" err=%s",
                     sophia_log_quote(ctx ? "bad server.tls.listen" : why, q, sizeof(q)));
        SSL_CTX_free(ctx);
        return -1;
    }
    h->tls = sophia_tls_new(ctx, sophia_loop_base(h->loop));
    if (!h->tls)
        return -1;
    if (!(h->tls_listener = listen_on(h, h->tls_host, &port, on_accept_tls))) {
        sophia_error("http", "msg=\"cannot listen\" tls_listen=%s err=%s",
                     cf->server.tls.listen, strerror(errno));
        return -1;
    }
    sophia_info("http", "msg=\"listening for TLS\" addr=%s:%d cert=%s", h->tls_host, port,
                cf->server.tls.cert);
    return 0;
}

int sophia_http_reload_tls(sophia_http *h, const sophia_conf *c, char *why,
                           size_t n)
{
    sophia_tls_fault fault;
    const char *was = h ? h->conf->server.tls.listen : NULL;
    const char *now = c->server.tls.listen;
    if (h && (!was != !now || (was && now && strcmp(was, now))))
        sophia_warn("http", "msg=\"server.tls.listen changed; takes effect after a restart\" "
                            "running=%s new=%s", was ? was : "none", now ? now : "none");
    if (!h || !h->tls || !now)
        return 0; /* a listener is opened or closed at start only */
    SSL_CTX *ctx = sophia_tls_ctx_new(c->server.tls.cert, c->server.tls.key, &fault,
                                      why, n);
    if (!ctx)
        return -1;
    sophia_tls_set_ctx(h->tls, ctx);
    return 0;
}

sophia_http *sophia_http_new(const sophia_http_opts *o)
{
    sophia_http *h = calloc(1, sizeof(*h));
    if (!h || !(h->host = strdup(o->host))) {
        free(h);
        return NULL;
    }
    h->conf = o->conf;
    h->loop = o->loop;
    h->wsd.ws = o->ws;
    h->wsd.loop = o->loop;
    h->router = o->routes;
    h->port = o->port;
    return h;
}

int sophia_http_start(sophia_http *h)
{
    if (sophia_http_ws_start(&h->wsd) < 0) {
        sophia_error("http", "msg=\"cannot start the WebSocket server\"");
        return -1;
    }
    if (!(h->listener = listen_on(h, h->host, &h->port, on_accept))) {
        sophia_error("http", "msg=\"cannot listen\" listen=%s:%d err=%s", h->host,
                     h->port, strerror(errno));
        return -1;
    }
    return h->conf->server.tls.listen ? tls_start(h) : 0;
}

int sophia_http_port(const sophia_http *h)
{
    return h->port;
}

void sophia_http_set_conf(sophia_http *h, const sophia_conf *c)
{
    if (h)
        h->conf = c;
}

void sophia_http_closing(sophia_http *h)
{
    if (h)
        h->wsd.closing = 1;
}

void sophia_http_stop(sophia_http *h)
{
    if (!h)
        return;
    if (h->listener)
        evconnlistener_free(h->listener);
    if (h->tls_listener)
        evconnlistener_free(h->tls_listener);
    for (http_conn *c = h->conns; c; c = c->next)
        if (c->state == C_WAIT) /* answered after we are gone */
            c->req->h = NULL;
    http_held_stop(h);
    while (h->conns)
        http_conn_close(h->conns);
    sophia_tls_free(h->tls); /* its bridges: lws sees their ends close */
    free(h->tls_host);
    sophia_http_ws_stop(&h->wsd);
    free(h->host);
    free(h);
}
