/*
 * http - the connection state machine of the front door: a request head
 * read and checked, its body read, the request dispatched, its answer
 * written, the next one read. See http.h for the contract; a request's
 * accessors and answers are http_req.c, the listeners, accepting and the
 * connection cap are http_server.c.
 *
 * A connection is in one state at a time:
 *   HEAD   reading a request head (bounded by HTTP_MAX_HEAD);
 *   BODY   reading its body (Content-Length or chunked) into the request;
 *   WAIT   a handler holds the request; reading is off, so pipelined
 *          requests wait in the socket and the input buffer;
 *   WRITE  the answer is queued; when it has left, back to HEAD (and the
 *          bytes already buffered are parsed at once) or closed;
 *   LINGER a refused request's body may still be arriving: after our
 *          answer the write side is shut and the rest read and discarded
 *          for a short while, like nginx's lingering_close, so the client
 *          reads the answer instead of a reset.
 * Only HEAD and BODY read, and only WRITE writes, so a request can be
 * dispatched once and answered once whatever arrives meanwhile.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http_priv.h"
#include "http/http_tls.h"
#include "http/router.h"
#include "ws/origin.h"

#define HTTP_MAX_HEAD (16 * 1024)
#define HTTP_LINGER_S 2    /* discard a refused body at most this idle... */
#define HTTP_LINGER_MAX (4u << 20) /* ...and this many bytes */

/* ---------------------------------------------------- checks at the head */

static int is_loopback_name(const char *host)
{
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0 ||
        (n > 10 && strcasecmp(host + n - 10, ".localhost") == 0))
        return 1;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* The host part of a Host value ("name:port", "[v6]:port"), lower-case. */
static void host_name(const char *v, char *out, size_t cap)
{
    const char *end;
    if (*v == '[') {
        v++;
        end = strchr(v, ']');
    } else {
        end = strchr(v, ':');
    }
    size_t n = end ? (size_t)(end - v) : strlen(v);
    if (n >= cap)
        n = cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)((v[i] >= 'A' && v[i] <= 'Z') ? v[i] - 'A' + 'a' : v[i]);
    out[n] = '\0';
}

/* DNS rebinding: a page on evil.example whose name now resolves to
 * 127.0.0.1 still sends `Host: evil.example`. */
static int host_allowed(const sophia_http *h, const char *host)
{
    if (!host) /* HTTP/1.0 without Host: a local tool */
        return 1;
    char name[256];
    host_name(host, name, sizeof(name));
    if (is_loopback_name(name) || strcasecmp(name, h->host) == 0 ||
        (h->tls_host && strcasecmp(name, h->tls_host) == 0))
        return 1;
    const sophia_conf *cf = h->conf;
    for (size_t i = 0; i < cf->server.nhosts; i++)
        if (strcmp(cf->server.hosts[i], "*") == 0 ||
            strcasecmp(cf->server.hosts[i], name) == 0)
            return 1;
    return 0;
}

static int is_write(sophia_http_method m)
{
    return m != SOPHIA_HTTP_GET && m != SOPHIA_HTTP_HEAD &&
           m != SOPHIA_HTTP_OPTIONS;
}

/* A form or text/plain POST needs no CORS preflight from a browser;
 * JSON does. */
static int json_ctype(const char *ct)
{
    if (!ct)
        return 0;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
           (n == 20 && strncasecmp(ct, "application/x-ndjson", 20) == 0);
}

/* Everything decided from the head alone. 1 = read on, 0 = refused. */
static int head_checks(http_conn *c, sophia_http_req *r)
{
    const sophia_http_head *hd = &r->head;
    const sophia_conf *cf = c->h->conf;
    const char *host = hd->authority ? hd->authority : sophia_http_head_get(hd, "host");
    if (!host_allowed(c->h, host)) {
        http_refuse(c, 421, "misdirected", "Host is not a loopback name and not in server.hosts");
        return 0;
    }
    if (is_write(hd->method) &&
        !sophia_origin_allowed(sophia_http_head_get(hd, "origin"), host,
                               cf->server.origins, cf->server.norigins)) {
        http_refuse(c, 403, "forbidden_origin",
                    "a write from another web origin (add it to server.origins to allow)");
        return 0;
    }
    int has_body = hd->chunked || hd->content_length > 0;
    int wants_body = hd->method == SOPHIA_HTTP_POST || hd->method == SOPHIA_HTTP_PUT ||
                     hd->method == SOPHIA_HTTP_PATCH;
    if (wants_body && !hd->chunked && hd->content_length < 0) {
        http_refuse(c, 411, "length_required", "a request body needs Content-Length or chunked");
        return 0;
    }
    if (hd->content_length > (int64_t)cf->server.max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body exceeds server.max_body (%zu bytes)",
                 cf->server.max_body);
        http_refuse(c, 413, "body_too_large", msg);
        return 0;
    }
    if (has_body && wants_body && !json_ctype(sophia_http_head_get(hd, "content-type"))) {
        http_refuse(c, 415, "unsupported_media_type",
                    "Content-Type must be application/json or application/x-ndjson");
        return 0;
    }
    return 1;
}

/* Reserves the body's bytes against server.max_body_total. */
static int reserve(sophia_http_req *r, size_t n)
{
    sophia_http *h = r->h;
    if (h->st.body_bytes + n > h->conf->server.max_body_total)
        return -1;
    h->st.body_bytes += n;
    r->reserved += n;
    return 0;
}

/* ---------------------------------------------------------- WebSockets */

static int is_ws_upgrade(const sophia_http_req *r)
{
    return r->head.upgrade_ws && r->head.method == SOPHIA_HTTP_GET &&
           strcmp(r->path, "/ws") == 0;
}

/* TLS: lws gets a socketpair end, the bridge carries the bytes. */
static void bridge_to_lws(http_conn *c)
{
    struct bufferevent *bev = c->bev;
    sophia_http *h = c->h;
    c->bev = NULL; /* the bridge's now: http_conn_close leaves it alone */
    h->st.upgrades++;
    http_conn_close(c);
    sophia_tls_bridge(h->tls, bev, h->wsd.vhost);
    sophia_loop_kick(h->loop); /* lws asked libuv for POLLIN */
}

/* lws takes the socket and re-reads the head we peeked at. */
static void hand_to_lws(http_conn *c)
{
    if (c->tls) {
        bridge_to_lws(c);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t len = evbuffer_get_length(in);
    char *bytes = malloc(len ? len : 1);
    int fd = dup(bufferevent_getfd(c->bev));
    struct lws_vhost *vh = c->h->wsd.vhost;
    sophia_loop *loop = c->h->loop;
    if (bytes)
        evbuffer_copyout(in, bytes, len);
    c->h->st.upgrades++;
    http_conn_close(c);
    if (fd >= 0 && bytes && vh &&
        !lws_adopt_socket_vhost_readbuf(vh, fd, bytes, len))
        fd = -1; /* lws closed it */
    else if (fd >= 0 && (!bytes || !vh))
        close(fd);
    free(bytes);
    sophia_loop_kick(loop); /* lws asked libuv for POLLIN */
}

/* ------------------------------------------------------------- reading */

static int answer_left(http_conn *c);

/* Reading stops only for a handler that answers later: one that answers
 * at once has its answer written by the time dispatch returns, and
 * turning reading off and on again would cost two epoll_ctl a request.
 * Such an answer's request is freed here, after the handler returned. */
static void dispatch(http_conn *c)
{
    c->state = C_WAIT;
    c->dispatching = 1;
    sophia_http_router_dispatch(c->h->router, c->req);
    c->dispatching = 0;
    if (c->answered) {
        c->answered = 0;
        answer_left(c); /* keep-alive: back to HEAD, conn_advance reads on */
    } else if (c->state == C_WAIT) {
        bufferevent_disable(c->bev, EV_READ);
    }
}

/* After a head: checks, then an upgrade, a body to read, or dispatch. */
static int on_head(http_conn *c, sophia_http_req *r, size_t hlen)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    char err[160];
    int st = sophia_http_head_parse(r->raw, hlen, &r->head, err, sizeof(err));
    if (st == 0 && http_req_parse_target(r))
        st = 400, snprintf(err, sizeof(err), "bad %%-escape or NUL byte in the request target");
    if (st) {
        evbuffer_drain(in, hlen);
        http_refuse(c, st, "bad_request", err);
        return 1;
    }
    r->method = r->head.method == SOPHIA_HTTP_HEAD ? SOPHIA_HTTP_GET : r->head.method;
    r->is_head = r->head.method == SOPHIA_HTTP_HEAD;
    if (!head_checks(c, r)) {
        evbuffer_drain(in, hlen);
        return 1;
    }
    if (is_ws_upgrade(r)) {
        hand_to_lws(c); /* before draining: lws reads the head itself */
        return 0;
    }
    evbuffer_drain(in, hlen);
    c->close_after = c->linger = 1; /* if the API refuses, that answer closes */
    if (!sophia_http_router_admit(c->h->router, r)) { /* answered */
        c->h->st.refused++;
        return 1;
    }
    c->close_after = c->linger = 0;
    int64_t cl = r->head.content_length;
    if (!r->head.chunked && cl <= 0) {
        dispatch(c);
        return 1;
    }
    size_t want = r->head.chunked ? 0 : (size_t)cl;
    if (reserve(r, want) < 0 || !(r->body = malloc(want + 1))) {
        sophia_http_set_retry_after(r, 1);
        http_refuse(c, 503, "busy", "too many request bodies in flight (server.max_body_total); retry");
        return 1;
    }
    r->body_cap = want + 1;
    r->body[0] = '\0';
    if (r->head.expect_continue)
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    c->state = C_BODY;
    return 1;
}

/* Reads the head once it is whole. 1 = state changed, 0 = wait. */
static int read_head(http_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    unsigned char *p;
    while (evbuffer_get_length(in) >= 2 && (p = evbuffer_pullup(in, 2)) &&
           p[0] == '\r' && p[1] == '\n')
        evbuffer_drain(in, 2); /* RFC 9112 §2.2: stray CRLFs between requests */
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    /* A head ended by bare LFs is found too, so that it is refused at
     * once instead of waiting for a CRLF CRLF that never comes. */
    struct evbuffer_ptr lf = evbuffer_search(in, "\n\n", 2, NULL);
    size_t hlen = end.pos >= 0 ? (size_t)end.pos + 4 : 0;
    if (lf.pos >= 0 && (end.pos < 0 || lf.pos + 2 < end.pos + 4))
        hlen = (size_t)lf.pos + 2;
    if (hlen == 0 && evbuffer_get_length(in) <= HTTP_MAX_HEAD) {
        if (c->peer_eof)
            http_conn_close(c);
        return 0;
    }
    sophia_http_req *r = calloc(1, sizeof(*r));
    if (!r || !(r->raw = malloc(hlen + 1))) {
        free(r);
        http_conn_close(c);
        return 0;
    }
    r->conn = c;
    r->h = c->h;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    c->req = r;
    if (hlen == 0 || hlen > HTTP_MAX_HEAD) {
        http_refuse(c, 431, "header_too_large", "request head larger than 16 KiB");
        return 1;
    }
    evbuffer_copyout(in, r->raw, hlen);
    r->raw[hlen] = '\0';
    return on_head(c, r, hlen);
}

static int body_done(http_conn *c)
{
    c->req->body[c->req->body_len] = '\0';
    dispatch(c);
    return 1;
}

static int read_length_body(http_conn *c, struct evbuffer *in)
{
    sophia_http_req *r = c->req;
    size_t want = (size_t)r->head.content_length - r->body_len;
    int n = evbuffer_remove(in, r->body + r->body_len, want);
    if (n > 0)
        r->body_len += (size_t)n;
    if (r->body_len == (size_t)r->head.content_length)
        return body_done(c);
    if (c->peer_eof)
        http_conn_close(c);
    return 0;
}

/* Grows the body for chunked data, within max_body and max_body_total. */
static int chunk_room(http_conn *c, size_t n)
{
    sophia_http_req *r = c->req;
    size_t max = c->h->conf->server.max_body;
    size_t need = r->body_len + n + 1;
    if (need > max + 1)
        need = max + 1;
    if (need <= r->body_cap)
        return 0;
    size_t cap = r->body_cap * 2 > need ? r->body_cap * 2 : need;
    if (cap > max + 1)
        cap = max + 1;
    char *b = reserve(r, cap - r->body_cap) == 0 ? realloc(r->body, cap) : NULL;
    if (!b)
        return -1;
    r->body = b;
    r->body_cap = cap;
    return 0;
}

static int read_chunked_body(http_conn *c, struct evbuffer *in)
{
    sophia_http_req *r = c->req;
    size_t max = c->h->conf->server.max_body;
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = v.iov_len, used = 0;
        if (n > max + 1 - r->body_len)
            n = max + 1 - r->body_len; /* data out never exceeds bytes in */
        if (chunk_room(c, n) < 0) {
            sophia_http_set_retry_after(r, 1);
            http_refuse(c, 503, "busy", "too many request bodies in flight (server.max_body_total); retry");
            return 1;
        }
        int rc = sophia_http_chunked_feed(&r->chunk, v.iov_base, n, &used,
                                          r->body, &r->body_len);
        evbuffer_drain(in, used);
        if (rc < 0) {
            http_refuse(c, 400, "bad_chunked", "malformed chunked request body");
            return 1;
        }
        if (r->body_len > max) {
            char msg[128];
            snprintf(msg, sizeof(msg), "request body exceeds server.max_body (%zu bytes)", max);
            http_refuse(c, 413, "body_too_large", msg);
            return 1;
        }
        if (rc == 1)
            return body_done(c);
    }
    if (c->peer_eof)
        http_conn_close(c);
    return 0;
}

static int read_body(http_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    return c->req->head.chunked ? read_chunked_body(c, in)
                                : read_length_body(c, in);
}

/* Runs the state machine over what is buffered. */
static void conn_advance(http_conn *c)
{
    for (;;) {
        int moved = 0;
        if (c->state == C_HEAD)
            moved = read_head(c);
        else if (c->state == C_BODY)
            moved = read_body(c);
        if (!moved)
            return;
    }
}

/* ---------------------------------------------------------- connections */

void http_conn_close(http_conn *c)
{
    sophia_http *h = c->h;
    http_held_drop(c);
    if (c->req) {
        if (c->state == C_WAIT) /* a handler owns it: freed on its answer */
            c->req->conn = NULL;
        else
            http_req_free(c->req);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->st.connections--;
    if (c->tls && !c->tls_ready)
        h->st.tls_handshakes_failed++; /* not TLS, bad or no handshake */
    if (c->bev && c->tls_ready)
        sophia_tls_close_notify(c->bev);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

void http_on_read(struct bufferevent *bev, void *arg)
{
    http_conn *c = arg;
    if (c->state == C_LINGER) {
        struct evbuffer *in = bufferevent_get_input(bev);
        c->lingered += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->lingered > HTTP_LINGER_MAX)
            http_conn_close(c);
        return;
    }
    if (c->held) { /* more came while its answer waits: no more for now */
        bufferevent_disable(bev, EV_READ);
        return;
    }
    conn_advance(c);
}

/* After a refusal: stop writing, read what the client still sends. */
static void start_linger(http_conn *c)
{
    struct timeval tv = {HTTP_LINGER_S, 0};
    shutdown(bufferevent_getfd(c->bev), SHUT_WR);
    c->state = C_LINGER;
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ);
    http_on_read(c->bev, c);
}

/* The answer has left: linger, close, or back to HEAD (1). */
static int answer_left(http_conn *c)
{
    http_req_free(c->req);
    c->req = NULL;
    if (c->linger && !c->peer_eof) {
        start_linger(c);
        return 0;
    }
    if (c->close_after) {
        http_conn_close(c);
        return 0;
    }
    c->state = C_HEAD;
    if (!c->peer_eof)
        bufferevent_enable(c->bev, EV_READ);
    return 1;
}

void http_on_write(struct bufferevent *bev, void *arg)
{
    http_conn *c = arg;
    (void)bev;
    if (c->state != C_WRITE)
        return; /* a 100 Continue left */
    if (answer_left(c))
        conn_advance(c); /* a pipelined request may be buffered already */
}

/* Written whole by sophia_http_reply, which does so only for keep-alive
 * answers that do not linger, so `c` stays open. Nothing is freed here:
 * the code that answered may still look at its request (and a second
 * answer must still find r->replied). From dispatch(), dispatch moves on
 * when the handler returned; from a later callback (an asynchronous
 * handler), the write callback is run deferred, as if libevent had
 * written the answer: no syscall, one loop pass. */
void http_conn_answered(http_conn *c)
{
    if (c->dispatching)
        c->answered = 1;
    else
        bufferevent_trigger(c->bev, EV_WRITE,
                            BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

void http_on_event(struct bufferevent *bev, short what, void *arg)
{
    http_conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        c->tls_ready = 1;
        c->h->st.tls_handshakes_ok++;
        return;
    }
    /* A half-close after a whole request still gets its answer. */
    if ((what & BEV_EVENT_EOF) && (c->state == C_HEAD || c->state == C_BODY)) {
        c->peer_eof = 1;
        bufferevent_disable(c->bev, EV_READ);
        conn_advance(c);
        return;
    }
    if ((what & BEV_EVENT_EOF) && c->state == C_WRITE) {
        c->peer_eof = 1;
        return;
    }
    http_conn_close(c); /* errors, timeouts, EOF while lingering */
}
