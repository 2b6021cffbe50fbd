/*
 * tls_client - the client side of TLS for outgoing connections on the
 * loop (http_client.h's https:// requests): OpenSSL contexts, one per way
 * of verifying, and a non-blocking bufferevent per connection
 * (libevent's bufferevent_openssl, the handshake driven by the loop).
 *
 * Verifying is the default: the server's chain against the system's CA
 * store, or against the PEM bundle `ca_file` names, and its name (DNS or
 * IP address, as the URL has it) against the certificate. `verify` = 0
 * checks nothing - for tests against a throwaway certificate only; the
 * caller says so in its log.
 */
#ifndef SOPHIA_TLS_CLIENT_H
#define SOPHIA_TLS_CLIENT_H

#include <stddef.h>

struct bufferevent;
struct event_base;
typedef struct sophia_tls_clients sophia_tls_clients;

sophia_tls_clients *sophia_tls_clients_new(void);
void sophia_tls_clients_free(sophia_tls_clients *t);

/* A client bufferevent (no socket yet: evhttp connects it) that will
 * shake hands with `host` (SNI) and verify it as above. NULL with `why`
 * filled (a CA file that does not load, out of memory). */
struct bufferevent *sophia_tls_client_bev(sophia_tls_clients *t,
                                          struct event_base *base,
                                          const char *host,
                                          const char *ca_file, int verify,
                                          char *why, size_t n);

/* Why the connection on `bev` failed, as a short phrase ("certificate
 * verify failed: self-signed certificate", "wrong version number"), or
 * "" when TLS has nothing to say (a refused connection, a timeout).
 * Clears OpenSSL's queue of errors for `bev`. */
void sophia_tls_client_why(struct bufferevent *bev, char *out, size_t n);

#endif
