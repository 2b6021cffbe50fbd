/*
 * http_ws - see http_ws.h.
 *
 * lws is told about no socket of its own (CONTEXT_PORT_NO_LISTEN_SERVER):
 * every connection it sees was adopted by http.c after the upgrade head
 * was read, so its HTTP callback refuses anything that is not a
 * WebSocket, and its one protocol hands frames to the router (core/ws).
 */
#include "http/http_ws.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>

#include "lib/log.h"
#include "ws/ws.h"

/* lws's per-connection user space: the router's client from ESTABLISHED,
 * and whether permessage-deflate was accepted during the handshake. */
typedef struct ws_session {
    struct sophia_ws_client *c;
    int deflate;
} ws_session;

static int sophia_lws_cb(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len)
{
    ws_session *s = user;
    struct sophia_ws_client **pc = s ? &s->c : NULL;
    sophia_http_ws *h = lws_context_user(lws_get_context(wsi));
    if (!pc) /* events before lws bound us to the connection */
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_CONFIRM_EXTENSION_OKAY: /* 0 accepts the offer */
        if (!in || strcmp(in, "permessage-deflate") != 0 ||
            !sophia_ws_compression(h->ws))
            return 1;
        s->deflate = 1;
        return 0;
    case LWS_CALLBACK_HTTP:
        return -1; /* only upgrades are handed to lws */
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (h->closing)
            return 1;
        return sophia_ws_filter(h->ws, wsi); /* limits, origin, token */
    case LWS_CALLBACK_ESTABLISHED:
        *pc = sophia_ws_open(h->ws, wsi);
        if (*pc && lws_get_protocol(wsi) &&
            strcmp(lws_get_protocol(wsi)->name, SOPHIA_WS_PROTO_MSGPACK) == 0)
            sophia_ws_set_msgpack(*pc);
        if (*pc && s->deflate)
            sophia_ws_set_deflate(*pc);
        return *pc ? 0 : -1;
    case LWS_CALLBACK_RECEIVE:
        return *pc ? sophia_ws_receive(*pc, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return *pc ? sophia_ws_writeable(*pc) : -1;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (*pc)
            sophia_ws_pong(*pc);
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (*pc)
            sophia_ws_closed(*pc);
        *pc = NULL;
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* tx_packet_size: one send may carry a WebSocket flush (ws.c
 * WS_GATHER_MAX); with 0 lws would cut sends to rx_buffer_size. */
#define SOPHIA_PROTOCOL(name) \
    {name, sophia_lws_cb, sizeof(ws_session), 4096, 0, NULL, \
     64 * 1024}

/* lws 4.1 answers an upgrade with the first of the client's offered
 * Sec-WebSocket-Protocol names it finds here (and echoes it), and uses
 * the first entry when none is offered: JSON. The encoding is read back
 * from the chosen name at ESTABLISHED. */
static const struct lws_protocols protocols[] = {
    SOPHIA_PROTOCOL("sophia"), SOPHIA_PROTOCOL(SOPHIA_WS_PROTO_JSON),
    SOPHIA_PROTOCOL(SOPHIA_WS_PROTO_MSGPACK),
    {NULL, NULL, 0, 0, 0, NULL, 0}};

/* Offered to every client; accepted only while websocket.compression is
 * deflate (CONFIRM_EXTENSION_OKAY above), so a reload can turn it on or
 * off for new connections. lws inflates what clients send; what we send
 * is compressed by the router, once per message (ws/ws_deflate.h). */
static const struct lws_extension extensions[] = {
    {"permessage-deflate", lws_extension_callback_pm_deflate,
     "permessage-deflate; client_no_context_takeover; client_max_window_bits"},
    {NULL, NULL, NULL}};

static void lws_log_emit(int level, const char *line)
{
    /* lws 4.1 logs every adoption with a read buffer at error level. */
    if (strstr(line, "adopt_socket_readbuf"))
        return;
    char q[512];
    size_t n = strlen(line);
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%.*s", (int)(n && line[n - 1] == '\n' ? n - 1 : n),
             line);
    sophia_log(level == LLL_ERR ? SOPHIA_LVL_ERROR : SOPHIA_LVL_WARN, "lws",
               "msg=%s", sophia_log_quote(tmp, q, sizeof(q)));
}

int sophia_http_ws_start(sophia_http_ws *h)
{
    struct lws_context_creation_info info;
    void *loops[1] = {sophia_loop_uv(h->loop)};
    memset(&info, 0, sizeof(info));
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* sockets come from us */
    info.protocols = protocols;
    info.extensions = extensions;
    info.foreign_loops = loops;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.timeout_secs = 30;
    info.pt_serv_buf_size = 32 * 1024;
    info.vhost_name = "sophia";
    info.user = h; /* for sophia_lws_cb */
    info.pcontext = &h->lws; /* lws clears it once fully destroyed */
    h->lws = lws_create_context(&info);
    if (!h->lws)
        return -1;
    h->vhost = lws_get_vhost_by_name(h->lws, "sophia");
    return h->vhost ? sophia_loop_bridge_start(h->loop) : -1;
}

void sophia_http_ws_stop(sophia_http_ws *h)
{
    if (!h->lws)
        return;
    /* With a foreign loop, destruction finishes in lws's handle-close
     * callbacks: run libuv until they ran, then let lws free the rest. */
    lws_context_destroy(h->lws);
    sophia_loop_uv_drain(h->loop);
    if (h->lws)
        lws_context_destroy(h->lws);
    h->lws = NULL;
}
