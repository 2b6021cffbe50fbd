/*
 * http - the HTTP and WebSocket front door, on libwebsockets.
 *
 * One lws protocol handles both plain HTTP requests and the `/ws`
 * WebSocket: lws binds a WebSocket to a protocol by its subprotocol name,
 * not by URL, so the URL is enforced here at upgrade time. HTTP requests
 * become sophia_http_req objects that live on the heap, not in lws's
 * per-session memory, so a handler may answer later (after a Redis or
 * PostgreSQL round trip); a request whose connection went away is simply
 * freed when the answer arrives.
 */
#ifndef SOPHIA_HTTP_H
#define SOPHIA_HTTP_H

#include <jansson.h>
#include <stddef.h>

#include "server.h"

typedef enum sophia_http_method {
    SOPHIA_HTTP_OTHER = 0,
    SOPHIA_HTTP_GET,
    SOPHIA_HTTP_POST,
    SOPHIA_HTTP_PUT,
    SOPHIA_HTTP_DELETE
} sophia_http_method;

typedef struct sophia_http_req sophia_http_req;

/* Starts listening on srv->host:srv->port, on srv->loop. */
int sophia_http_start(sophia_server *srv);
/* Closes the listener and every connection (WebSockets with 1001). */
void sophia_http_stop(sophia_server *srv);

sophia_http_method sophia_http_req_method(const sophia_http_req *r);
const char *sophia_http_req_path(const sophia_http_req *r);
/* URL-decoded query argument, or NULL. */
const char *sophia_http_req_arg(const sophia_http_req *r, const char *name);
/* The i-th query argument as "name=value" (URL-decoded), or NULL past the
 * end: for endpoints that take a family of names (context.KEY=VALUE). */
const char *sophia_http_req_arg_at(const sophia_http_req *r, int i);
/* Request header value (lower-case name without ':'), or NULL. Headers
 * available: authorization, content-type, and the custom ones listed in
 * http.c (x-slack-signature, x-slack-request-timestamp,
 * x-slack-retry-num, x-gong-secret). */
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
/* Adds `Retry-After: secs` to the reply (call before replying). */
void sophia_http_set_retry_after(sophia_http_req *r, int secs);
/* The client's IP address as text into `buf` ("" once it is gone). */
const char *sophia_http_req_peer(const sophia_http_req *r, char *buf,
                                 size_t len);

#endif
