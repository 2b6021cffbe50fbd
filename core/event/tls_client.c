/*
 * tls_client - see tls_client.h. Few contexts (one per CA file an output
 * names, plus the system store's and the unverified one), so they sit in
 * one dict keyed by how they verify.
 */
#include "event/tls_client.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/dict.h"

struct sophia_tls_clients {
    sophia_dict *ctxs; /* "v:<ca_file>" / "-" -> SSL_CTX */
};

sophia_tls_clients *sophia_tls_clients_new(void)
{
    sophia_tls_clients *t = calloc(1, sizeof(*t));
    if (t && !(t->ctxs = sophia_dict_new())) {
        free(t);
        return NULL;
    }
    return t;
}

static void ctx_free(void *v)
{
    SSL_CTX_free(v);
}

void sophia_tls_clients_free(sophia_tls_clients *t)
{
    if (!t)
        return;
    sophia_dict_free(t->ctxs, ctx_free);
    free(t);
}

/* OpenSSL's first queued error as text (the queue is cleared). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

static SSL_CTX *ctx_new(const char *ca_file, int verify, char *why, size_t n)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(why, n, "cannot create a TLS context: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    int ok = !verify ? 1
             : ca_file && *ca_file
                 ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(why, n, "cannot load the CA certificates of %s: %s",
                 ca_file && *ca_file ? ca_file : "the system store",
                 ssl_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The context for this way of verifying, made on first use and kept. */
static SSL_CTX *ctx_for(sophia_tls_clients *t, const char *ca_file,
                        int verify, char *why, size_t n)
{
    char key[4200];
    snprintf(key, sizeof(key), verify ? "v:%s" : "-", ca_file ? ca_file : "");
    SSL_CTX *ctx = sophia_dict_get(t->ctxs, key);
    if (ctx)
        return ctx;
    if (!(ctx = ctx_new(ca_file, verify, why, n)))
        return NULL;
    sophia_dict_set(t->ctxs, key, ctx);
    if (sophia_dict_get(t->ctxs, key) != ctx) {
        SSL_CTX_free(ctx);
        snprintf(why, n, "out of memory");
        return NULL;
    }
    return ctx;
}

static int is_ip(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 ||
           inet_pton(AF_INET6, host, buf) == 1;
}

/* SNI and the name to check: a host name is sent and matched against
 * the certificate's DNS names, an address against its IP addresses. */
static int ssl_name(SSL *ssl, const char *host, int verify)
{
    if (is_ip(host))
        return !verify ||
               X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
    return SSL_set_tlsext_host_name(ssl, host) == 1 &&
           (!verify || SSL_set1_host(ssl, host) == 1);
}

struct bufferevent *sophia_tls_client_bev(sophia_tls_clients *t,
                                          struct event_base *base,
                                          const char *host,
                                          const char *ca_file, int verify,
                                          char *why, size_t n)
{
    SSL_CTX *ctx = ctx_for(t, ca_file, verify, why, n);
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (!ssl || !ssl_name(ssl, host, verify)) {
        if (ctx)
            snprintf(why, n, "cannot set up TLS for %s: %s", host,
                     ssl_reason());
        SSL_free(ssl);
        return NULL;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
        BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        snprintf(why, n, "out of memory");
        return NULL;
    }
    /* Servers often close without close_notify; the answer was complete
     * (Content-Length) or the request fails anyway. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void sophia_tls_client_why(struct bufferevent *bev, char *out, size_t n)
{
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    unsigned long first = 0, e;
    while (bev && (e = bufferevent_get_openssl_error(bev)))
        if (!first)
            first = e;
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    const char *r = first ? ERR_reason_error_string(first) : NULL;
    if (v != X509_V_OK)
        snprintf(out, n, "TLS: certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
    else if (first)
        snprintf(out, n, "TLS: %s", r ? r : "handshake failed");
    else
        *out = 0;
}
