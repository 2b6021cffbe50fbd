/*
 * http_req - a request of the front door as its handler sees it: the
 * target split into a decoded path and arguments, the accessors, and the
 * one answer (status line, headers, body) it gets. See http.h for the
 * contract; the connection it arrived on is http.c's.
 */
#include "http/http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "event/loop.h"
#include "http/http_priv.h"
#include "lib/jsonw.h"

/* ------------------------------------------------------------ requests */

void http_req_free(sophia_http_req *r)
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
int http_req_parse_target(sophia_http_req *r)
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
    (void)data;
    (void)len;
    free(arg); /* the body's start: `data` may be past what was sent */
}

/* Appends s to the head being built; the head buffer is sized for the
 * longest status line and headers we write. */
static size_t put(char *h, size_t at, const char *s, size_t n)
{
    memcpy(h + at, s, n);
    return at + n;
}

static size_t put_str(char *h, size_t at, const char *s)
{
    return put(h, at, s, strlen(s));
}

static size_t put_num(char *h, size_t at, size_t v)
{
    return at + sophia_fmt_u64(h + at, v);
}

#define HEAD_MAX 512 /* status line + our headers, ctype included */

/* The status line and headers, by hand: this runs for every request and
 * evbuffer_add_printf's formatting was most of an answer's user time. */
static size_t answer_head(char *h, const http_conn *c,
                          const sophia_http_req *r, int status,
                          const char *ctype, size_t len)
{
    size_t at = put(h, 0, "HTTP/1.1 ", 9);
    at = put_num(h, at, (size_t)status);
    at = put(h, at, " ", 1);
    at = put_str(h, at, reason(status));
    at = put_str(h, at, "\r\ncontent-type: ");
    at = put(h, at, ctype, strnlen(ctype, 128));
    at = put_str(h, at, "\r\ncontent-length: ");
    at = put_num(h, at, len);
    at = put_str(h, at, "\r\ncache-control: no-store\r\n"
                        "x-content-type-options: nosniff\r\n");
    if (r->retry_after > 0) {
        at = put_str(h, at, "retry-after: ");
        at = put_num(h, at, (size_t)r->retry_after);
        at = put(h, at, "\r\n", 2);
    }
    if (c->close_after)
        at = put_str(h, at, "connection: close\r\n");
    return put(h, at, "\r\n", 2);
}

/* Writes what it can of head+body straight to the socket when nothing is
 * queued before it (plain TCP; TLS goes through its bufferevent), and
 * queues the rest for libevent. A keep-alive answer that fits the socket
 * buffer - nearly all - thus leaves without a write event: no epoll_ctl
 * to add and remove it, no extra loop turn (see sophia_http_reply).
 * 1: all of it left; 0: some is queued. */
static int write_answer(http_conn *c, const char *head, size_t hlen,
                        char *body, size_t blen)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t sent = 0;
    if (!c->tls && !c->close_after && !c->linger &&
        evbuffer_get_length(out) == 0) {
        struct iovec iov[2] = {{(void *)head, hlen}, {body, blen}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = blen ? 2 : 1};
        ssize_t n = sendmsg(bufferevent_getfd(c->bev), &mh, MSG_NOSIGNAL);
        sent = n > 0 ? (size_t)n : 0; /* an error shows on libevent's write */
    }
    if (sent >= hlen + blen) {
        free(body);
        return 1;
    }
    if (sent < hlen)
        evbuffer_add(out, head + sent, hlen - sent);
    size_t boff = sent > hlen ? sent - hlen : 0;
    if (!blen || evbuffer_add_reference(out, body + boff, blen - boff,
                                        free_body_ref, body) != 0)
        free(body);
    return 0;
}

/* ---------------------------------------------- answers after the work
 *
 * An ingest answer written at once wakes its client while the body's
 * events are still to be processed and published; on a busy core the
 * client then runs in the middle of that work, with the daemon's caches
 * going cold behind it (a trace: the 202, the client on the core for
 * ~0.7 ms, the WebSocket send after it). A held answer waits in its
 * connection for release_held: an event of the loop's lowest priority,
 * which runs once a pass has nothing else to do, or a timer, for a loop
 * that stays busy. */

#define HELD_LATE_MS 2

void sophia_http_answer_after_work(sophia_http_req *r)
{
    r->after_work = 1;
}

/* Writes the held answers. `advance`: each connection then moves on to
 * its next request at once, as nothing holds its request any more; not
 * while stopping, where the answers only leave before the close. */
static void write_held(sophia_http *h, int advance)
{
    /* Answers held from here on (a pipelined body) wait for their own
     * pass; a connection closed meanwhile leaves `releasing` itself. */
    h->releasing = h->held;
    h->held = NULL;
    if (h->held_ev) {
        event_del(h->held_ev);
        event_del(h->held_late_ev);
    }
    http_conn *c;
    while ((c = h->releasing)) {
        h->releasing = c->held_next;
        char *a = c->held;
        c->held = NULL;
        c->held_next = NULL;
        int left = write_answer(c, a, c->held_len, NULL, 0);
        if (advance && left)
            http_on_write(c->bev, c);
        else if (advance) /* libevent writes the rest: as sophia_http_reply */
            bufferevent_disable(c->bev, EV_READ);
        free(a);
    }
}

static void release_held(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_held(arg, 1);
}

static void held_free(sophia_http *h)
{
    if (h->held_ev)
        event_free(h->held_ev);
    if (h->held_late_ev)
        event_free(h->held_late_ev);
    h->held_ev = h->held_late_ev = NULL;
}

static int held_events(sophia_http *h)
{
    if (h->held_ev)
        return 1;
    struct event_base *base = sophia_loop_base(h->loop);
    h->held_ev = event_new(base, -1, 0, release_held, h);
    h->held_late_ev = evtimer_new(base, release_held, h);
    if (!h->held_ev || !h->held_late_ev) {
        held_free(h);
        return 0;
    }
    /* a base without the priorities (a test's): runs as any event */
    event_priority_set(h->held_ev, SOPHIA_PRIO_AFTER);
    return 1;
}

/* Keeps head and body (taken) in c for release_held; only answers that
 * write_answer would send at once. 0: not held, send it now. */
static int hold_answer(http_conn *c, const char *head, size_t hlen,
                       char *body, size_t blen)
{
    sophia_http *h = c->h;
    if (c->tls || c->close_after || c->linger || !held_events(h))
        return 0;
    char *a = malloc(hlen + blen);
    if (!a)
        return 0;
    memcpy(a, head, hlen);
    if (blen)
        memcpy(a + hlen, body, blen);
    free(body);
    c->held = a;
    c->held_len = hlen + blen;
    if (!h->held) {
        struct timeval late = {0, HELD_LATE_MS * 1000};
        event_active(h->held_ev, EV_TIMEOUT, 0);
        evtimer_add(h->held_late_ev, &late);
    }
    c->held_next = h->held;
    h->held = c;
    return 1;
}

static void unlink_held(http_conn **list, http_conn *c)
{
    for (http_conn **p = list; *p; p = &(*p)->held_next)
        if (*p == c) {
            *p = c->held_next;
            return;
        }
}

void http_held_drop(http_conn *c)
{
    if (!c->held)
        return;
    unlink_held(&c->h->held, c);
    unlink_held(&c->h->releasing, c);
    free(c->held);
    c->held = NULL;
}

void http_held_stop(sophia_http *h)
{
    write_held(h, 0); /* accepted bodies get their answer */
    held_free(h);
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
        http_req_free(r);
        return;
    }
    if (!r->head.keep_alive)
        c->close_after = 1;
    c->state = C_WRITE;
    char head[HEAD_MAX];
    size_t hlen = answer_head(head, c, r, status,
                              ctype ? ctype : "text/plain", len);
    if (r->is_head || !body)
        free(body), body = NULL, len = 0;
    if (r->after_work && hold_answer(c, head, hlen, body, len))
        return;
    if (write_answer(c, head, hlen, body, len)) {
        http_conn_answered(c); /* r stays valid until the caller returns */
        return;
    }
    /* Nothing is read while an answer leaves: a refused body keeps
     * arriving, and must not pile up in the input buffer meanwhile.
     * libevent writes the rest; http_on_write moves on once it left. */
    bufferevent_disable(c->bev, EV_READ);
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
void http_refuse(http_conn *c, int status, const char *code, const char *msg)
{
    c->h->st.refused++;
    c->close_after = 1;
    c->linger = 1;
    sophia_http_reply_error(c->req, status, code, "%s", msg);
}
