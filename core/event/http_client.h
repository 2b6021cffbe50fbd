/*
 * http_client - outgoing HTTP/1.1 requests on the loop (libevent's evhttp
 * client), for what plugins deliver through the host (host->http_request).
 *
 * A few keep-alive connections per host:port (requests that overlap take
 * an idle one each, evhttp sending one request at a time on a connection),
 * reused by the requests that follow; names are resolved with evdns,
 * never by a blocking lookup. https:// goes over TLS (tls_client.h),
 * verifying the server by default. A
 * request fails when connecting, sending or waiting for the answer stalls
 * longer than its timeout (evhttp's, per I/O step). The client keeps every
 * request it started, so freeing it answers each one still pending (rc
 * SOPHIA_EUNAVAIL) before the connections go: a callback runs exactly
 * once either way.
 */
#ifndef SOPHIA_HTTP_CLIENT_H
#define SOPHIA_HTTP_CLIENT_H

#include <stddef.h>

struct event_base;
typedef struct sophia_http_client sophia_http_client;

/* rc 0 with the status and body (borrowed for the call), else
 * SOPHIA_ETIMEDOUT or SOPHIA_EUNAVAIL with status 0 and, when there is
 * more to say (a TLS failure: "TLS: certificate verify failed: ..."),
 * that text as the body, else NULL. */
typedef void (*sophia_http_client_cb)(void *arg, int rc, int status,
                                      const char *body, size_t len);

sophia_http_client *sophia_http_client_new(struct event_base *base);
void sophia_http_client_free(sophia_http_client *c);

/* How an https:// request checks its server (tls_client.h). */
typedef struct sophia_http_tls {
    const char *ca_file; /* PEM bundle to verify against; NULL/"": the
                          * system's CA store */
    int verify;          /* 0: check nothing (tests only) */
} sophia_http_tls;

/* Starts `method url` with `headers` ("Name: value", NULL-terminated, or
 * NULL) and `body` (copied); an https:// url verifies as `tls` says
 * (NULL: against the system store). cb runs later, exactly once. 0, or
 * SOPHIA_EINVAL (a url that is not http[s]://host[:port]/..., a header
 * line without a colon) / SOPHIA_EUNAVAIL (no connection could be set
 * up, e.g. a CA file that does not load: logged with the url): cb not
 * called. */
int sophia_http_client_request(sophia_http_client *c, const char *method,
                               const char *url, const char *const *headers,
                               const char *body, size_t len, double timeout_s,
                               const sophia_http_tls *tls,
                               sophia_http_client_cb cb, void *arg);

/* Requests started and not answered yet. */
size_t sophia_http_client_pending(const sophia_http_client *c);

#endif
