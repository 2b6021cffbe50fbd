/*
 * http_tls - the HTTPS/WSS listener's TLS (server.tls): the server SSL_CTX,
 * rebuilt from the certificate and key files on SIGHUP, the bufferevents
 * http.c reads requests from, and the bridge that carries a WSS connection
 * to libwebsockets.
 *
 * Why a bridge: lws can adopt a socket, but not a TLS session someone else
 * terminated. So a `/ws` upgrade on a TLS connection gets a socketpair:
 * lws adopts one end exactly like a plain upgrade (with the head bytes),
 * and this module moves the decrypted bytes both ways between the TLS
 * bufferevent and the other end. lws then sees a unix socket as its peer;
 * nothing in ws.c reads the peer address (HTTP rate limits use the request's
 * peer, which http.c takes from the TCP socket itself).
 *
 * Settings, decided here once: TLS 1.2 minimum, AEAD ciphers with forward
 * secrecy for 1.2 (1.3's are all that), the server's cipher order, no
 * compression (CRIME), no renegotiation, ALPN "http/1.1" only.
 */
#ifndef SOPHIA_HTTP_TLS_H
#define SOPHIA_HTTP_TLS_H

#include <stddef.h>

struct bufferevent;
struct event_base;
struct lws_vhost;
typedef struct ssl_ctx_st SSL_CTX;

typedef struct sophia_tls sophia_tls;

/* Which file a failed load is about, so a message can point at it. */
typedef enum { SOPHIA_TLS_OK = 0, SOPHIA_TLS_BAD_CERT, SOPHIA_TLS_BAD_KEY } sophia_tls_fault;

/* A server context from PEM files (the certificate file may hold the
 * chain); NULL with `why` (naming the file) and *fault set otherwise. */
SSL_CTX *sophia_tls_ctx_new(const char *cert, const char *key,
                            sophia_tls_fault *fault, char *why, size_t n);
/* The same checks without keeping the context (configuration load). */
sophia_tls_fault sophia_tls_check_files(const char *cert, const char *key,
                                        char *why, size_t n);

/* Takes `ctx`. */
sophia_tls *sophia_tls_new(SSL_CTX *ctx, struct event_base *base);
/* Closes every bridge and drops the context. */
void sophia_tls_free(sophia_tls *t);
/* New connections use `ctx` (taken) from now on; open ones keep theirs. */
void sophia_tls_set_ctx(sophia_tls *t, SSL_CTX *ctx);

/* A server-side TLS bufferevent on an accepted socket (closed on free);
 * NULL and fd closed on failure. Reports BEV_EVENT_CONNECTED once the
 * handshake is done. */
struct bufferevent *sophia_tls_bev_new(sophia_tls *t, int fd);
/* Sends close_notify on a connection whose handshake completed, before it
 * is freed, so the client can tell an end from a truncation. */
void sophia_tls_close_notify(struct bufferevent *bev);

/* Carries `tls` (taken; its input holds the bytes read so far, upgrade
 * head included) to lws on `vh` through a socketpair. 0, or -1 with
 * everything closed. */
int sophia_tls_bridge(sophia_tls *t, struct bufferevent *tls,
                      struct lws_vhost *vh);
/* Bridges open right now. */
size_t sophia_tls_bridges(const sophia_tls *t);

#endif
