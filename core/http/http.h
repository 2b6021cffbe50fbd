/*
 * http - the HTTP/1.1 front door: listener, connections, requests, answers.
 *
 * Why our own and not libwebsockets' HTTP server: lws 4.1 reads a whole
 * body before a handler may refuse it, reads Content-Length with atoll
 * (so `-1` or `5, 5` pass), has no chunked request bodies, and re-enters
 * a handler's body-completion when requests with bodies are pipelined.
 * Those are the shapes SPEC §12 says must get exactly one answer. So
 * connections are libevent bufferevents read by http_parse, one request
 * at a time; lws keeps what it is good at, WebSockets: a `/ws` upgrade is
 * handed to it with the bytes already read (lws_adopt_socket_vhost_readbuf).
 *
 * A request's life: head read and checked (Host, Origin, length, content
 * type, then the admit hook of its route: the API's token and rate
 * checks; router.h) -> body read, if any, within server.max_body and the
 * server-wide server.max_body_total -> the route's handler answers once,
 * now or later (after Redis or PostgreSQL) -> once the answer is written,
 * the next pipelined request is read. A refusal at the head is answered
 * at once and the connection closed without reading the body. Requests
 * live on the heap: if the client goes away while a handler works, the
 * request is freed when the answer arrives.
 */
#ifndef SOPHIA_HTTP_H
#define SOPHIA_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "event/loop.h"
#include "http/http_parse.h"
#include "http/router.h"
#include "lib/statdef.h"

struct sophia_ws_router;
typedef struct sophia_http sophia_http;

typedef struct sophia_http_stats {
    uint64_t connections;         /* open HTTP connections (not /ws) */
    uint64_t connections_refused; /* over server.max_connections */
    uint64_t body_bytes;          /* request body bytes held right now */
    uint64_t refused;             /* requests refused from their head */
    uint64_t upgrades;            /* connections handed to the WebSocket router */
    uint64_t requests;            /* answered */
    uint64_t errors;              /* answered 4xx or 5xx */
    uint64_t tls_handshakes_ok;     /* server.tls connections that completed one */
    uint64_t tls_handshakes_failed; /* ...closed before one completed */
} sophia_http_stats;

/* Each field above, declared once for /api/stats and /metrics
 * (http_stats.c). */
extern const sophia_statdef sophia_http_statdefs[];
extern const size_t sophia_http_nstatdefs;

/* What the front door is given by the daemon; nothing else of it is
 * reached. */
typedef struct sophia_http_opts {
    const sophia_conf *conf;         /* server.*: limits, hosts, TLS */
    sophia_loop *loop;
    struct sophia_ws_router *ws;     /* where /ws upgrades go */
    const char *host;                /* listen host (copied) */
    int port;                        /* listen port, 0 = any */
    const sophia_http_router *routes; /* kept: outlives the front door */
} sophia_http_opts;

/* NULL when out of memory. Nothing is opened yet. */
sophia_http *sophia_http_new(const sophia_http_opts *o);
/* Listens on host:port, and on server.tls.listen for HTTPS/WSS when it
 * is set. -1 on failure (sophia_http_stop still frees it). */
int sophia_http_start(sophia_http *h);
/* The bound port. */
int sophia_http_port(const sophia_http *h);
/* Reload: requests from now on see `c` (kept, not copied). */
void sophia_http_set_conf(sophia_http *h, const sophia_conf *c);
/* SIGHUP: new TLS connections use the certificate and key `c` names; open
 * ones keep theirs. -1 with the reason in `why` keeps the old ones. A
 * listener is opened or closed at start only (0, nothing done). */
int sophia_http_reload_tls(sophia_http *h, const sophia_conf *c, char *why,
                           size_t n);
/* Shutdown has begun: new WebSockets are refused. */
void sophia_http_closing(sophia_http *h);
/* Closes the listener and every connection (WebSockets with 1001) and
 * frees `h` (NULL is fine). */
void sophia_http_stop(sophia_http *h);
/* Serves an already connected socket as if accepted (tests, fuzzing). */
int sophia_http_adopt(sophia_http *h, int fd);
/* Zeros when `h` is NULL. */
void sophia_http_get_stats(const sophia_http *h, sophia_http_stats *st);

/* GET for a HEAD request: handlers answer as for GET, the body is not sent. */
sophia_http_method sophia_http_req_method(const sophia_http_req *r);
/* The path, %-decoded exactly once (never '+' -> ' '). */
const char *sophia_http_req_path(const sophia_http_req *r);
/* Decoded query argument (form rules: '+' is a space), or NULL. */
const char *sophia_http_req_arg(const sophia_http_req *r, const char *name);
/* The i-th query argument as "name=value" (decoded), or NULL past the
 * end: for endpoints that take a family of names (context.KEY=VALUE). */
const char *sophia_http_req_arg_at(const sophia_http_req *r, int i);
/* Request header value (lower-case name), or NULL. */
const char *sophia_http_req_header(const sophia_http_req *r, const char *name);
const char *sophia_http_req_body(const sophia_http_req *r, size_t *len);

/* Answers once; takes `body` (malloc'd, may be NULL). */
void sophia_http_reply(sophia_http_req *r, int status, const char *ctype,
                       char *body, size_t len);
/* Serializes and steals `obj`. */
void sophia_http_reply_json(sophia_http_req *r, int status, json_t *obj);
/* `{"error":{"code":...,"message":...}}`. */
void sophia_http_reply_error(sophia_http_req *r, int status, const char *code,
                             const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Holds the answer to `r` (call before answering) until the loop has
 * nothing else to run, so that the work the request queued - an ingest
 * body processed and published - is done before its client wakes: on a
 * busy core, a client woken first takes the core in the middle of that
 * work. A loop that stays busy sends it within 2 ms all the same. */
void sophia_http_answer_after_work(sophia_http_req *r);
/* Adds `Retry-After: secs` to the reply (call before replying). */
void sophia_http_set_retry_after(sophia_http_req *r, int secs);
/* The client's IP address as text into `buf`. */
const char *sophia_http_req_peer(const sophia_http_req *r, char *buf,
                                 size_t len);

#endif
