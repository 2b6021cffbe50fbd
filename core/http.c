/*
 * http - see http.h.
 *
 * Request lifecycle: LWS_CALLBACK_HTTP copies what handlers may need
 * (method, path, query args, a few headers) into a heap sophia_http_req;
 * bodies accumulate up to server.max_body (anything beyond is discarded,
 * not buffered, and answered 413 once the client finished sending, so
 * the client reads our answer instead of a reset); the request goes to
 * sophia_api_dispatch(); the answer is written from the WRITEABLE
 * callback, at most 16 KiB per turn so one big response cannot starve
 * other connections.
 */
#include "http.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "ws.h"

#define HTTP_MAX_ARGS 16
#define HTTP_WRITE_CHUNK 16384

/* Headers lws has no token for, copied at request start for handlers
 * (webhook signatures): lower-case names, as lws stores them. */
static const char *const custom_headers[] = {
    "x-slack-signature", "x-slack-request-timestamp", "x-slack-retry-num",
    "x-gong-secret"};
#define HTTP_NCUSTOM (sizeof(custom_headers) / sizeof(custom_headers[0]))

struct sophia_http_req {
    struct lws *wsi; /* NULL once the connection closed */
    sophia_http_method method;
    char path[512];
    char *args[HTTP_MAX_ARGS]; /* "name=value", URL-decoded */
    int nargs;
    char *authorization;
    char *content_type;
    char *custom[HTTP_NCUSTOM]; /* custom_headers[i] values, or NULL */
    char *body;
    size_t body_len;
    size_t body_cap;
    int body_too_big;
    /* answer */
    int replied;
    int status;
    int retry_after;
    const char *ctype;
    unsigned char *out; /* LWS_PRE headroom + body */
    size_t out_len;
    size_t out_off;
    int headers_sent;
};

/* Per-connection memory lws allocates for our protocol. */
typedef struct http_pss {
    sophia_http_req *req;
    struct sophia_ws_client *ws;
} http_pss;

static char *hdr_dup(struct lws *wsi, enum lws_token_indexes tok)
{
    int n = lws_hdr_total_length(wsi, tok);
    if (n <= 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s && lws_hdr_copy(wsi, s, n + 1, tok) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static char *custom_dup(struct lws *wsi, const char *name)
{
    char full[64];
    int nl = snprintf(full, sizeof(full), "%s:", name);
    int n = lws_hdr_custom_length(wsi, full, nl);
    if (n < 0 || n > 4096)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s && lws_hdr_custom_copy(wsi, s, n + 1, full, nl) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void req_free(sophia_http_req *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nargs; i++)
        free(r->args[i]);
    free(r->authorization);
    free(r->content_type);
    for (size_t i = 0; i < HTTP_NCUSTOM; i++)
        free(r->custom[i]);
    free(r->body);
    free(r->out);
    free(r);
}

static sophia_http_method method_of(struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        sophia_http_method m;
    } map[] = {{WSI_TOKEN_GET_URI, SOPHIA_HTTP_GET},
               {WSI_TOKEN_POST_URI, SOPHIA_HTTP_POST},
               {WSI_TOKEN_PUT_URI, SOPHIA_HTTP_PUT},
               {WSI_TOKEN_DELETE_URI, SOPHIA_HTTP_DELETE}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (lws_hdr_total_length(wsi, map[i].tok) > 0)
            return map[i].m;
    return SOPHIA_HTTP_OTHER;
}

static sophia_http_req *req_new(struct lws *wsi, const char *path)
{
    sophia_http_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->wsi = wsi;
    r->method = method_of(wsi);
    snprintf(r->path, sizeof(r->path), "%s", path ? path : "/");
    char frag[1024];
    while (r->nargs < HTTP_MAX_ARGS &&
           lws_hdr_copy_fragment(wsi, frag, sizeof(frag),
                                 WSI_TOKEN_HTTP_URI_ARGS, r->nargs) >= 0)
        r->args[r->nargs++] = strdup(frag);
    r->authorization = hdr_dup(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    r->content_type = hdr_dup(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE);
    for (size_t i = 0; i < HTTP_NCUSTOM; i++)
        r->custom[i] = custom_dup(wsi, custom_headers[i]);
    return r;
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
        if (r->args[i] && strncmp(r->args[i], name, n) == 0 &&
            r->args[i][n] == '=')
            return r->args[i] + n + 1;
    return NULL;
}

const char *sophia_http_req_arg_at(const sophia_http_req *r, int i)
{
    return i >= 0 && i < r->nargs ? r->args[i] : NULL;
}

const char *sophia_http_req_header(const sophia_http_req *r, const char *name)
{
    if (strcmp(name, "authorization") == 0)
        return r->authorization;
    if (strcmp(name, "content-type") == 0)
        return r->content_type;
    for (size_t i = 0; i < HTTP_NCUSTOM; i++)
        if (strcmp(name, custom_headers[i]) == 0)
            return r->custom[i];
    return NULL;
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
    buf[0] = '\0';
    if (r->wsi)
        lws_get_peer_simple(r->wsi, buf, len);
    return buf;
}

void sophia_http_reply(sophia_http_req *r, int status, const char *ctype,
                       char *body, size_t len)
{
    if (r->replied) {
        free(body);
        return;
    }
    r->replied = 1;
    sophia_srv->http_requests++;
    if (status >= 400)
        sophia_srv->http_errors++;
    if (!r->wsi) { /* the client went away while we worked */
        free(body);
        req_free(r);
        return;
    }
    r->status = status;
    r->ctype = ctype;
    r->out = malloc(LWS_PRE + len + 1);
    if (r->out && len)
        memcpy(r->out + LWS_PRE, body, len);
    r->out_len = r->out ? len : 0;
    free(body);
    lws_callback_on_writable(r->wsi);
    sophia_loop_kick(sophia_srv->loop);
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

/* ------------------------------------------------------------ callbacks */

static int on_http(struct lws *wsi, http_pss *pss, const char *path)
{
    req_free(pss->req);
    pss->req = req_new(wsi, path);
    if (!pss->req)
        return -1;
    sophia_http_req *r = pss->req;
    int has_body = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
                   lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    if ((r->method == SOPHIA_HTTP_POST || r->method == SOPHIA_HTTP_PUT) &&
        has_body) {
        char cl[32] = "";
        lws_hdr_copy(wsi, cl, sizeof(cl), WSI_TOKEN_HTTP_CONTENT_LENGTH);
        if (cl[0] && strtoull(cl, NULL, 10) == 0)
            sophia_api_dispatch(r); /* Content-Length: 0, no body to wait */
        return 0; /* else wait for HTTP_BODY_COMPLETION */
    }
    sophia_api_dispatch(r);
    return 0;
}

static void on_body(http_pss *pss, const void *in, size_t len)
{
    sophia_http_req *r = pss->req;
    if (!r || r->body_too_big)
        return;
    size_t max = sophia_srv->conf->server.max_body;
    if (r->body_len + len > max) {
        r->body_too_big = 1; /* keep reading, stop buffering */
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->body_too_big = 1;
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, in, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
}

static void on_body_done(http_pss *pss)
{
    sophia_http_req *r = pss->req;
    if (!r)
        return;
    if (r->body_too_big) {
        sophia_http_reply_error(r, 413, "body_too_large",
                                "request body exceeds server.max_body (%zu bytes)",
                                sophia_srv->conf->server.max_body);
        return;
    }
    sophia_api_dispatch(r);
}

static int write_headers(struct lws *wsi, sophia_http_req *r)
{
    unsigned char buf[LWS_PRE + 1024];
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + sizeof(buf);
    if (lws_add_http_common_headers(wsi, (unsigned)r->status,
                                    r->ctype ? r->ctype : "text/plain",
                                    r->out_len, &p, end))
        return -1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end))
        return -1;
    if (r->retry_after > 0) {
        char v[16];
        int n = snprintf(v, sizeof(v), "%d", r->retry_after);
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)"retry-after:",
                                        (unsigned char *)v, n, &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    r->headers_sent = 1;
    return 0;
}

/* Returns -1 to close the connection. */
static int on_http_writeable(struct lws *wsi, http_pss *pss)
{
    sophia_http_req *r = pss->req;
    if (!r || !r->replied)
        return 0;
    if (!r->headers_sent && write_headers(wsi, r) < 0)
        return -1;
    size_t left = r->out_len - r->out_off;
    size_t n = left > HTTP_WRITE_CHUNK ? HTTP_WRITE_CHUNK : left;
    int last = n == left;
    if (n && lws_write(wsi, r->out + LWS_PRE + r->out_off, n,
                       last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return -1;
    r->out_off += n;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    int too_big = r->body_too_big;
    req_free(r);
    pss->req = NULL;
    if (too_big) /* the client may still be sending: don't reuse */
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static void on_http_closed(http_pss *pss)
{
    sophia_http_req *r = pss->req;
    pss->req = NULL;
    if (!r)
        return;
    if (r->replied)
        req_free(r);
    else
        r->wsi = NULL; /* a handler still owns it; freed on reply */
}

static int path_is_ws(struct lws *wsi)
{
    char uri[64];
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
        return 0;
    return strcmp(uri, "/ws") == 0;
}

static int sophia_lws_cb(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len)
{
    http_pss *pss = user;
    if (!pss) /* events before lws bound us to the connection */
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return on_http(wsi, pss, in);
    case LWS_CALLBACK_HTTP_BODY:
        on_body(pss, in, len);
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        on_body_done(pss);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return on_http_writeable(wsi, pss);
    case LWS_CALLBACK_CLOSED_HTTP:
        on_http_closed(pss);
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* lws chose us by subprotocol; the URL is ours to enforce. */
        if (!path_is_ws(wsi) || sophia_srv->shutting_down)
            return 1;
        return sophia_ws_filter(wsi); /* limits, origin, token */
    case LWS_CALLBACK_ESTABLISHED:
        pss->ws = sophia_ws_open(sophia_srv->ws, wsi);
        return pss->ws ? 0 : -1;
    case LWS_CALLBACK_RECEIVE:
        return pss->ws ? sophia_ws_receive(pss->ws, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return pss->ws ? sophia_ws_writeable(pss->ws) : -1;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (pss->ws)
            sophia_ws_pong(pss->ws);
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (pss->ws)
            sophia_ws_closed(pss->ws);
        pss->ws = NULL;
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    /* tx_packet_size: one send may carry a WebSocket flush (ws.c
     * WS_GATHER_MAX); with 0 lws would cut sends to rx_buffer_size. */
    {"sophia", sophia_lws_cb, sizeof(http_pss), 4096, 0, NULL, 64 * 1024},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

static void lws_log_emit(int level, const char *line)
{
    char q[512];
    size_t n = strlen(line);
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)(n && line[n - 1] == '\n' ? n - 1 : n),
             line);
    sophia_log(level == LLL_ERR ? SOPHIA_LVL_ERROR : SOPHIA_LVL_WARN, "lws",
               "msg=%s", sophia_log_quote(tmp, q, sizeof(q)));
}

int sophia_http_start(sophia_server *srv)
{
    struct lws_context_creation_info info;
    void *loops[1] = {sophia_loop_uv(srv->loop)};
    memset(&info, 0, sizeof(info));
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    info.port = srv->port;
    info.iface = srv->host;
    info.protocols = protocols;
    info.foreign_loops = loops;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    if (!strchr(srv->host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.timeout_secs = 30;
    info.pt_serv_buf_size = 32 * 1024;
    info.vhost_name = "sophia";
    info.pcontext = &srv->lws; /* lws clears it once fully destroyed */
    srv->lws = lws_create_context(&info);
    if (!srv->lws) {
        sophia_error("http", "msg=\"cannot listen\" listen=%s:%d", srv->host,
                     srv->port);
        return -1;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(srv->lws, "sophia");
    if (vh)
        srv->port = lws_get_vhost_listen_port(vh);
    return sophia_loop_bridge_start(srv->loop);
}

void sophia_http_stop(sophia_server *srv)
{
    if (!srv->lws)
        return;
    /* With a foreign loop, destruction finishes in lws's handle-close
     * callbacks: run libuv until they ran, then let lws free the rest. */
    lws_context_destroy(srv->lws);
    sophia_loop_uv_drain(srv->loop);
    if (srv->lws)
        lws_context_destroy(srv->lws);
    srv->lws = NULL;
}
