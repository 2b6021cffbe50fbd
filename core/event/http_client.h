/*
 * http_client - outgoing HTTP/1.1 requests on the loop (libevent's evhttp
 * client), for what plugins deliver through the host (host->http_request).
 *
 * One keep-alive connection per host:port, reused by the requests that
 * follow; names are resolved with evdns, never by a blocking lookup. A
 * request fails when connecting, sending or waiting for the answer stalls
 * longer than its timeout (evhttp's, per I/O step). The client keeps every
 * request it started, so freeing it answers each one still pending (rc
 * SOPHIA_EUNAVAIL) before the connections go: a callback runs exactly
 * once either way. Plain http:// only.
 */
#ifndef SOPHIA_HTTP_CLIENT_H
#define SOPHIA_HTTP_CLIENT_H

#include <stddef.h>

struct event_base;
typedef struct sophia_http_client sophia_http_client;

/* rc 0 with the status and body (borrowed for the call), else
 * SOPHIA_ETIMEDOUT or SOPHIA_EUNAVAIL with status 0. */
typedef void (*sophia_http_client_cb)(void *arg, int rc, int status,
                                      const char *body, size_t len);

sophia_http_client *sophia_http_client_new(struct event_base *base);
void sophia_http_client_free(sophia_http_client *c);

/* Starts `method url` with `headers` ("Name: value", NULL-terminated, or
 * NULL) and `body` (copied). cb runs later, exactly once. 0, or
 * SOPHIA_EINVAL (a url that is not http://host[:port]/..., a header line
 * without a colon) / SOPHIA_ENOMEM: cb not called. */
int sophia_http_client_request(sophia_http_client *c, const char *method,
                               const char *url, const char *const *headers,
                               const char *body, size_t len, double timeout_s,
                               sophia_http_client_cb cb, void *arg);

/* Requests started and not answered yet. */
size_t sophia_http_client_pending(const sophia_http_client *c);

#endif
