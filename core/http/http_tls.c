/*
 * http_tls - see http_tls.h.
 *
 * A bridge is two bufferevents, the client's TLS one and our end of the
 * socketpair lws holds the other end of, each one's input written to the
 * other's output. Backpressure: when a side's output passes BRIDGE_HIGH,
 * the side feeding it stops reading until that output drained to
 * BRIDGE_LOW (its write callback), so a slow reader on either end holds
 * the writer back through TCP or the socketpair instead of growing our
 * buffers. An end of either side first lets what the other side still
 * owes leave (a close frame, the last messages), then closes both; an
 * error closes both at once.
 */
#include "http/http_tls.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <libwebsockets.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/log.h"

#define BRIDGE_HIGH (256 * 1024)
#define BRIDGE_LOW (64 * 1024)
#define BRIDGE_DRAIN_S 5 /* at most this long for the last bytes to leave */
#define TLS_MAX_FILE (1 << 20) /* a certificate chain or key file */

/* Mozilla's "intermediate" TLS 1.2 list without DHE (no parameters to
 * manage): forward secrecy and AEAD only. TLS 1.3 suites stay OpenSSL's. */
#define TLS12_CIPHERS                                                     \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"          \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"          \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

typedef struct bridge bridge;

struct sophia_tls {
    SSL_CTX *ctx; /* for new connections */
    struct event_base *base;
    bridge *bridges; /* open ones, closed by sophia_tls_free */
    size_t nbridges;
};

struct bridge {
    sophia_tls *t;
    struct bufferevent *tls; /* the client */
    struct bufferevent *lws; /* our end of the socketpair */
    int closing;             /* one side ended: the rest is leaving */
    bridge *prev, *next;
};

/* ------------------------------------------------------------- context */

/* OpenSSL's queued error as text (the queue is cleared). */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error(); /* the first: the cause */
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* An encrypted key must not make the daemon prompt on its terminal. */
static int no_passphrase(char *buf, int size, int rw, void *arg)
{
    (void)buf;
    (void)size;
    (void)rw;
    (void)arg;
    return 0;
}

/* Only http/1.1; a client offering nothing else (h2 only) gets no ALPN
 * answer and may decide for itself. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    (void)ssl;
    (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *ctx_with_defaults(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle WSS holds no 34 KiB */
    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS);
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;
}

/* 0 when `path` is a regular file we can read, else the reason in `why`.
 * Regular and bounded: OpenSSL's PEM reader would read /dev/zero or a
 * FIFO forever, and --check with it. */
static int readable(const char *path, const char *what, char *why, size_t n)
{
    struct stat st;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(why, n, "cannot read %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    int ok = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= TLS_MAX_FILE;
    fclose(f);
    if (!ok)
        snprintf(why, n, "%s %s is not a regular file of at most 1 MiB", what, path);
    return ok ? 0 : -1;
}

static int load_cert(SSL_CTX *ctx, const char *cert, char *why, size_t n)
{
    if (readable(cert, "certificate", why, n) < 0)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(why, n, "%s is not a PEM certificate (chain): %s", cert, ssl_reason());
        return -1;
    }
    return 0;
}

static int load_key(SSL_CTX *ctx, const char *key, const char *cert, char *why,
                    size_t n)
{
    if (readable(key, "private key", why, n) < 0)
        return -1;
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        const char *r = ssl_reason();
        if (strstr(r, "mismatch"))
            snprintf(why, n, "private key %s does not match certificate %s", key, cert);
        else
            snprintf(why, n, "%s is not an unencrypted PEM private key: %s", key, r);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(why, n, "private key %s does not match certificate %s", key, cert);
        return -1;
    }
    return 0;
}

SSL_CTX *sophia_tls_ctx_new(const char *cert, const char *key,
                            sophia_tls_fault *fault, char *why, size_t n)
{
    SSL_CTX *ctx = ctx_with_defaults();
    *fault = SOPHIA_TLS_OK;
    if (!ctx) {
        snprintf(why, n, "cannot create a TLS context: %s", ssl_reason());
        *fault = SOPHIA_TLS_BAD_CERT;
        return NULL;
    }
    if (load_cert(ctx, cert, why, n) < 0)
        *fault = SOPHIA_TLS_BAD_CERT;
    else if (load_key(ctx, key, cert, why, n) < 0)
        *fault = SOPHIA_TLS_BAD_KEY;
    if (*fault) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

sophia_tls_fault sophia_tls_check_files(const char *cert, const char *key,
                                        char *why, size_t n)
{
    sophia_tls_fault fault;
    SSL_CTX_free(sophia_tls_ctx_new(cert, key, &fault, why, n));
    return fault;
}

sophia_tls *sophia_tls_new(SSL_CTX *ctx, struct event_base *base)
{
    sophia_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    t->ctx = ctx;
    t->base = base;
    return t;
}

void sophia_tls_set_ctx(sophia_tls *t, SSL_CTX *ctx)
{
    SSL_CTX_free(t->ctx); /* each open SSL holds its own reference */
    t->ctx = ctx;
}

/* ---------------------------------------------------------- connections */

struct bufferevent *sophia_tls_bev_new(sophia_tls *t, int fd)
{
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl) {
        ERR_clear_error();
        close(fd);
        return NULL;
    }
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        t->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) { /* libevent 2.1 frees neither on failure */
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    /* Most clients close without close_notify; after a whole answer that
     * is an end, not an attack (HTTP bodies are length-delimited). */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

void sophia_tls_close_notify(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl && SSL_is_init_finished(ssl))
        SSL_shutdown(ssl); /* one non-blocking try: the socket closes next */
    ERR_clear_error();
}

/* --------------------------------------------------------------- bridge */

static void bridge_free(bridge *b)
{
    sophia_tls *t = b->t;
    if (b->prev)
        b->prev->next = b->next;
    else
        t->bridges = b->next;
    if (b->next)
        b->next->prev = b->prev;
    t->nbridges--;
    sophia_tls_close_notify(b->tls);
    bufferevent_free(b->tls);
    bufferevent_free(b->lws);
    free(b);
}

static struct bufferevent *other_side(const bridge *b, const struct bufferevent *bev)
{
    return bev == b->tls ? b->lws : b->tls;
}

static size_t out_len(struct bufferevent *bev)
{
    return evbuffer_get_length(bufferevent_get_output(bev));
}

/* What `from` read goes to `to`; `from` pauses while `to` is backed up. */
static void pump(struct bufferevent *from, struct bufferevent *to)
{
    bufferevent_write_buffer(to, bufferevent_get_input(from));
    if (out_len(to) > BRIDGE_HIGH)
        bufferevent_disable(from, EV_READ);
}

static void bridge_on_read(struct bufferevent *bev, void *arg)
{
    bridge *b = arg;
    pump(bev, other_side(b, bev));
}

/* `bev`'s output drained to BRIDGE_LOW (or, closing, to nothing). */
static void bridge_on_write(struct bufferevent *bev, void *arg)
{
    bridge *b = arg;
    if (b->closing) {
        if (out_len(bev) == 0)
            bridge_free(b);
        return;
    }
    bufferevent_enable(other_side(b, bev), EV_READ);
}

/* `from` ended: let what it sent reach `to`, then close both. */
static void bridge_finish(bridge *b, struct bufferevent *from)
{
    struct bufferevent *to = other_side(b, from);
    pump(from, to);
    b->closing = 1;
    bufferevent_disable(b->tls, EV_READ);
    bufferevent_disable(b->lws, EV_READ);
    if (out_len(to) == 0) {
        bridge_free(b);
        return;
    }
    struct timeval tv = {BRIDGE_DRAIN_S, 0};
    bufferevent_setwatermark(to, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(to, NULL, &tv);
}

static void bridge_on_event(struct bufferevent *bev, short what, void *arg)
{
    bridge *b = arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !b->closing)
        bridge_finish(b, bev);
    else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        bridge_free(b);
}

/* The bytes `tls` read so far (upgrade head, maybe a first frame), taken
 * out of it for lws to re-read. */
static char *take_input(struct bufferevent *tls, size_t *len)
{
    struct evbuffer *in = bufferevent_get_input(tls);
    *len = evbuffer_get_length(in);
    char *bytes = malloc(*len ? *len : 1);
    if (bytes)
        evbuffer_remove(in, bytes, *len);
    return bytes;
}

static void bridge_start(bridge *b)
{
    sophia_tls *t = b->t;
    b->next = t->bridges;
    if (t->bridges)
        t->bridges->prev = b;
    t->bridges = b;
    t->nbridges++;
    bufferevent_set_timeouts(b->tls, NULL, NULL); /* lws pings idle sockets */
    bufferevent_setwatermark(b->tls, EV_WRITE, BRIDGE_LOW, 0);
    bufferevent_setwatermark(b->lws, EV_WRITE, BRIDGE_LOW, 0);
    bufferevent_setcb(b->tls, bridge_on_read, bridge_on_write, bridge_on_event, b);
    bufferevent_setcb(b->lws, bridge_on_read, bridge_on_write, bridge_on_event, b);
    bufferevent_enable(b->tls, EV_READ | EV_WRITE);
    bufferevent_enable(b->lws, EV_READ | EV_WRITE);
    /* The TLS side may hold decrypted bytes lws has not seen (a frame
     * sent right after the upgrade arrived after we copied the head). */
    if (evbuffer_get_length(bufferevent_get_input(b->tls)))
        pump(b->tls, b->lws);
}

int sophia_tls_bridge(sophia_tls *t, struct bufferevent *tls, struct lws_vhost *vh)
{
    int sv[2];
    size_t len;
    bridge *b = calloc(1, sizeof(*b));
    char *bytes = take_input(tls, &len);
    bufferevent_setcb(tls, NULL, NULL, NULL, NULL); /* no longer http.c's */
    if (!b || !bytes || !vh ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        goto fail;
    b->t = t;
    b->tls = tls;
    b->lws = bufferevent_socket_new(t->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    if (!b->lws) {
        close(sv[0]);
        close(sv[1]);
        goto fail;
    }
    if (!lws_adopt_socket_vhost_readbuf(vh, sv[1], bytes, len)) { /* closed sv[1] */
        bufferevent_free(b->lws);
        goto fail;
    }
    free(bytes);
    bridge_start(b);
    return 0;
fail:
    sophia_warn("http", "msg=\"cannot bridge a WSS upgrade to the WebSocket server\" err=%s",
                strerror(errno));
    free(bytes);
    free(b);
    bufferevent_free(tls);
    return -1;
}

size_t sophia_tls_bridges(const sophia_tls *t)
{
    return t ? t->nbridges : 0;
}

void sophia_tls_free(sophia_tls *t)
{
    if (!t)
        return;
    while (t->bridges)
        bridge_free(t->bridges);
    SSL_CTX_free(t->ctx);
    free(t);
}
