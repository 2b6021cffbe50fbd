/*
 * http - see http.h.
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
 *
 * server.tls adds a second listener whose connections read and write
 * through a TLS bufferevent (http_tls.h); conn_new takes the bufferevent
 * from new_bev, and every line after that is the same for both. A `/ws`
 * upgrade on TLS goes to lws through http_tls's bridge instead of dup().
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <libwebsockets.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http_tls.h"
#include "http/http_ws.h"
#include "http/router.h"
#include "lib/log.h"
#include "ws/origin.h"
#include "ws/ws.h"

#define HTTP_MAX_HEAD (16 * 1024)
#define HTTP_MAX_ARGS 32
#define HTTP_IDLE_S 30     /* keep-alive idle, and a slow head or body */
#define HTTP_LINGER_S 2    /* discard a refused body at most this idle... */
#define HTTP_LINGER_MAX (4u << 20) /* ...and this many bytes */

typedef enum conn_state { C_HEAD, C_BODY, C_WAIT, C_WRITE, C_LINGER } conn_state;

typedef struct http_conn http_conn;

struct sophia_http {
    const sophia_conf *conf;          /* the running one (set_conf) */
    sophia_loop *loop;
    const sophia_http_router *router; /* who answers what */
    char *host;                       /* the listen host */
    int port;                         /* the bound port */
    sophia_http_ws wsd;               /* /ws upgrades: lws (http_ws.h) */
    struct evconnlistener *listener;
    struct evconnlistener *tls_listener; /* server.tls, or NULL */
    sophia_tls *tls;                     /* its context and WSS bridges */
    char *tls_host;                      /* server.tls.listen's host */
    http_conn *conns;        /* every open connection, for stop */
    sophia_http_stats st;
    uint64_t requests, errors;
};

struct http_conn {
    sophia_http *h;
    struct bufferevent *bev;
    conn_state state;
    sophia_http_req *req; /* being read, handled or answered */
    int close_after;      /* Connection: close, HTTP/1.0, or refused */
    int linger;           /* refused before its body was read */
    int peer_eof;
    int tls;       /* accepted on the TLS listener */
    int tls_ready; /* its handshake completed */
    size_t lingered;
    char peer[INET6_ADDRSTRLEN];
    http_conn *prev, *next;
};

struct sophia_http_req {
    http_conn *conn; /* NULL once the connection closed */
    sophia_http *h;
    char *raw;       /* the head, parsed in place */
    sophia_http_head head;
    sophia_http_method method; /* GET for HEAD */
    int is_head;
    char *path;                /* decoded */
    char *args[HTTP_MAX_ARGS]; /* "name=value", decoded */
    int nargs;
    char *body;
    size_t body_len, body_cap;
    size_t reserved; /* bytes counted in st.body_bytes */
    sophia_http_chunked chunk;
    int retry_after;
    int replied;
    char peer[INET6_ADDRSTRLEN];
};

static void conn_close(http_conn *c);
static void conn_advance(http_conn *c);

/* ------------------------------------------------------------ requests */

static void req_free(sophia_http_req *r)
{
    if (!r)
        return;
    if (r->h)
        r->h->st.body_bytes -= r->reserved;
    for (int i = 0; i < r->nargs; i++)
        free(r->args[i]);
    free(r->path);
    free(r->raw);
    free(r->body);
    free(r);
}

/* Splits and decodes the query string; -1 on a bad %-escape. */
static int parse_args(sophia_http_req *r, char *q)
{
    while (q && *q) {
        size_t n = strcspn(q, "&");
        if (n && r->nargs < HTTP_MAX_ARGS) {
            char *a = strndup(q, n);
            if (!a)
                return -1;
            r->args[r->nargs++] = a;
            if (sophia_http_pct_decode(a, &n, 1) < 0)
                return -1;
        }
        q += n + (q[n] == '&');
    }
    return 0;
}

/* Splits the target into decoded path and arguments; 0 or 400. */
static int parse_target(sophia_http_req *r)
{
    char *t = r->head.target;
    char *q = strchr(t, '?');
    size_t plen = q ? (size_t)(q - t) : strlen(t);
    r->path = strndup(t, plen);
    if (!r->path || sophia_http_pct_decode(r->path, &plen, 0) < 0)
        return 400;
    return parse_args(r, q ? q + 1 : NULL) < 0 ? 400 : 0;
}

sophia_http_method sophia_http_req_method(const sophia_http_req *r)
{
    return r->method;
}

const char *sophia_http_req_path(const sophia_http_req *r)
{
    return r->path;
}

const char *sophia_http_req_arg(const sophia_http_req *r, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < r->nargs; i++)
        if (strncmp(r->args[i], name, n) == 0 && r->args[i][n] == '=')
            return r->args[i] + n + 1;
    return NULL;
}

const char *sophia_http_req_arg_at(const sophia_http_req *r, int i)
{
    return i >= 0 && i < r->nargs ? r->args[i] : NULL;
}

const char *sophia_http_req_header(const sophia_http_req *r, const char *name)
{
    return sophia_http_head_get(&r->head, name);
}

const char *sophia_http_req_body(const sophia_http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}

void sophia_http_set_retry_after(sophia_http_req *r, int secs)
{
    r->retry_after = secs;
}

const char *sophia_http_req_peer(const sophia_http_req *r, char *buf,
                                 size_t len)
{
    snprintf(buf, len, "%s", r->peer);
    return buf;
}

/* ------------------------------------------------------------- answers */

static const char *reason(int status)
{
    static const struct {
        int status;
        const char *text;
    } map[] = {{100, "Continue"}, {200, "OK"}, {201, "Created"},
               {202, "Accepted"}, {204, "No Content"}, {400, "Bad Request"},
               {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"},
               {405, "Method Not Allowed"}, {408, "Request Timeout"},
               {409, "Conflict"}, {411, "Length Required"},
               {413, "Content Too Large"}, {414, "URI Too Long"},
               {415, "Unsupported Media Type"}, {417, "Expectation Failed"},
               {421, "Misdirected Request"}, {429, "Too Many Requests"},
               {431, "Request Header Fields Too Large"},
               {500, "Internal Server Error"}, {501, "Not Implemented"},
               {502, "Bad Gateway"}, {503, "Service Unavailable"},
               {504, "Gateway Timeout"}, {505, "HTTP Version Not Supported"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (map[i].status == status)
            return map[i].text;
    return "Unknown";
}

static void free_body_ref(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

static void write_answer(http_conn *c, sophia_http_req *r, int status,
                         const char *ctype, char *body, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                        "cache-control: no-store\r\nx-content-type-options: nosniff\r\n",
                        status, reason(status), ctype ? ctype : "text/plain", len);
    if (r->retry_after > 0)
        evbuffer_add_printf(out, "retry-after: %d\r\n", r->retry_after);
    if (c->close_after)
        evbuffer_add_printf(out, "connection: close\r\n");
    evbuffer_add(out, "\r\n", 2);
    if (body && len && !r->is_head &&
        evbuffer_add_reference(out, body, len, free_body_ref, NULL) == 0)
        return;
    free(body);
}

void sophia_http_reply(sophia_http_req *r, int status, const char *ctype,
                       char *body, size_t len)
{
    if (r->replied) { /* a handler bug, but never a second answer */
        free(body);
        return;
    }
    r->replied = 1;
    if (r->h) {
        r->h->requests++;
        r->h->errors += status >= 400;
    }
    http_conn *c = r->conn;
    if (!c) { /* the client went away while we worked */
        free(body);
        req_free(r);
        return;
    }
    if (!r->head.keep_alive)
        c->close_after = 1;
    c->state = C_WRITE;
    /* Nothing is read while an answer leaves: a refused body keeps
     * arriving, and must not pile up in the input buffer meanwhile. */
    bufferevent_disable(c->bev, EV_READ);
    write_answer(c, r, status, ctype, body, len);
    /* libevent writes it from the loop; on_write moves on once it left. */
}

void sophia_http_reply_json(sophia_http_req *r, int status, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    size_t n = s ? strlen(s) : 0;
    sophia_http_reply(r, status, "application/json", s, n);
}

void sophia_http_reply_error(sophia_http_req *r, int status, const char *code,
                             const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sophia_http_reply_json(
        r, status,
        json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg));
}

/* Answers from the head and closes without reading the body. */
static void refuse(http_conn *c, int status, const char *code, const char *msg)
{
    c->h->st.refused++;
    c->close_after = 1;
    c->linger = 1;
    sophia_http_reply_error(c->req, status, code, "%s", msg);
}

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
        refuse(c, 421, "misdirected", "Host is not a loopback name and not in server.hosts");
        return 0;
    }
    if (is_write(hd->method) &&
        !sophia_origin_allowed(sophia_http_head_get(hd, "origin"), host,
                               cf->server.origins, cf->server.norigins)) {
        refuse(c, 403, "forbidden_origin",
               "a write from another web origin (add it to server.origins to allow)");
        return 0;
    }
    int has_body = hd->chunked || hd->content_length > 0;
    int wants_body = hd->method == SOPHIA_HTTP_POST || hd->method == SOPHIA_HTTP_PUT ||
                     hd->method == SOPHIA_HTTP_PATCH;
    if (wants_body && !hd->chunked && hd->content_length < 0) {
        refuse(c, 411, "length_required", "a request body needs Content-Length or chunked");
        return 0;
    }
    if (hd->content_length > (int64_t)cf->server.max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body exceeds server.max_body (%zu bytes)",
                 cf->server.max_body);
        refuse(c, 413, "body_too_large", msg);
        return 0;
    }
    if (has_body && wants_body && !json_ctype(sophia_http_head_get(hd, "content-type"))) {
        refuse(c, 415, "unsupported_media_type",
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
    c->bev = NULL; /* the bridge's now: conn_close leaves it alone */
    h->st.upgrades++;
    conn_close(c);
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
    conn_close(c);
    if (fd >= 0 && bytes && vh &&
        !lws_adopt_socket_vhost_readbuf(vh, fd, bytes, len))
        fd = -1; /* lws closed it */
    else if (fd >= 0 && (!bytes || !vh))
        close(fd);
    free(bytes);
    sophia_loop_kick(loop); /* lws asked libuv for POLLIN */
}

/* ------------------------------------------------------------- reading */

static void dispatch(http_conn *c)
{
    c->state = C_WAIT;
    bufferevent_disable(c->bev, EV_READ);
    sophia_http_router_dispatch(c->h->router, c->req);
}

/* After a head: checks, then an upgrade, a body to read, or dispatch. */
static int on_head(http_conn *c, sophia_http_req *r, size_t hlen)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    char err[160];
    int st = sophia_http_head_parse(r->raw, hlen, &r->head, err, sizeof(err));
    if (st == 0 && parse_target(r))
        st = 400, snprintf(err, sizeof(err), "bad %%-escape or NUL byte in the request target");
    if (st) {
        evbuffer_drain(in, hlen);
        refuse(c, st, "bad_request", err);
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
        refuse(c, 503, "busy", "too many request bodies in flight (server.max_body_total); retry");
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
            conn_close(c);
        return 0;
    }
    sophia_http_req *r = calloc(1, sizeof(*r));
    if (!r || !(r->raw = malloc(hlen + 1))) {
        free(r);
        conn_close(c);
        return 0;
    }
    r->conn = c;
    r->h = c->h;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    c->req = r;
    if (hlen == 0 || hlen > HTTP_MAX_HEAD) {
        refuse(c, 431, "header_too_large", "request head larger than 16 KiB");
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
        conn_close(c);
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
            refuse(c, 503, "busy", "too many request bodies in flight (server.max_body_total); retry");
            return 1;
        }
        int rc = sophia_http_chunked_feed(&r->chunk, v.iov_base, n, &used,
                                          r->body, &r->body_len);
        evbuffer_drain(in, used);
        if (rc < 0) {
            refuse(c, 400, "bad_chunked", "malformed chunked request body");
            return 1;
        }
        if (r->body_len > max) {
            char msg[128];
            snprintf(msg, sizeof(msg), "request body exceeds server.max_body (%zu bytes)", max);
            refuse(c, 413, "body_too_large", msg);
            return 1;
        }
        if (rc == 1)
            return body_done(c);
    }
    if (c->peer_eof)
        conn_close(c);
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

static void conn_close(http_conn *c)
{
    sophia_http *h = c->h;
    if (c->req) {
        if (c->state == C_WAIT) /* a handler owns it: freed on its answer */
            c->req->conn = NULL;
        else
            req_free(c->req);
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

static void on_read(struct bufferevent *bev, void *arg)
{
    http_conn *c = arg;
    if (c->state == C_LINGER) {
        struct evbuffer *in = bufferevent_get_input(bev);
        c->lingered += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->lingered > HTTP_LINGER_MAX)
            conn_close(c);
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
    on_read(c->bev, c);
}

/* The answer has left: next request, or close. */
static void on_write(struct bufferevent *bev, void *arg)
{
    http_conn *c = arg;
    (void)bev;
    if (c->state != C_WRITE)
        return; /* a 100 Continue left */
    req_free(c->req);
    c->req = NULL;
    if (c->linger && !c->peer_eof) {
        start_linger(c);
        return;
    }
    if (c->close_after) {
        conn_close(c);
        return;
    }
    c->state = C_HEAD;
    if (!c->peer_eof)
        bufferevent_enable(c->bev, EV_READ);
    conn_advance(c); /* a pipelined request may be buffered already */
}

static void on_event(struct bufferevent *bev, short what, void *arg)
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
    conn_close(c); /* errors, timeouts, EOF while lingering */
}

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
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
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
    while (h->conns)
        conn_close(h->conns);
    sophia_tls_free(h->tls); /* its bridges: lws sees their ends close */
    free(h->tls_host);
    sophia_http_ws_stop(&h->wsd);
    free(h->host);
    free(h);
}
