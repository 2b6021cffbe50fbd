/*
 * fuzz_http - libFuzzer target for the HTTP front door as a whole: the
 * connection state machine of core/http/http.c, its parser, the API routing
 * behind it and the hand-over of /ws upgrades to libwebsockets, on a real
 * event loop. Not only the parser: the input is a client's side of one
 * connection, written in pieces with loop turns between them, so heads
 * and bodies arrive split anywhere, requests are pipelined, bodies are
 * refused mid-way and the client half-closes or vanishes.
 *
 * Input: byte 0 holds flags (bit 0: half-close after the last piece,
 * else close at once; bit 1: read nothing back until the end, so answers
 * pile up in the socket); the rest is split into pieces at "\xfe\xff".
 * Checked: no sanitizer finding (a second dispatch or answer of one
 * request is a use-after-free), every connection is freed when the input
 * ends, and the client never sees more final answers than request lines
 * it sent, plus one (a refusal of bytes that were no request at all).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/api.h"
#include "http/api_cache.h"
#include "http/api_ingest.h"
#include "http/api_memory.h"
#include "cache/cache.h"
#include "conf/config.h"
#include "http/http.h"
#include "lib/log.h"
#include "daemon/server.h"
#include "ws/ws.h"


static const char conf_yaml[] = "server:\n"
                                "  listen: \"127.0.0.1:1\"\n"
                                "  max_body: 2k\n"
                                "  max_body_total: 8k\n"
                                "  max_connections: 16\n"
                                "  hosts: [fuzz.test]\n"
                                "websocket:\n"
                                "  max_connections: 16\n";

static sophia_server srv;
static sophia_api api; /* as sophiad wires it (main.c) */

static void setup(void)
{
    sophia_diag d;
    sophia_diag_init(&d);
    srv.conf = sophia_conf_load_string("fuzz.yaml", conf_yaml, sizeof(conf_yaml) - 1, &d);
    sophia_diag_free(&d);
    if (!srv.conf)
        abort();
    sophia_log_set_level(SOPHIA_LVL_ERROR + 1); /* quiet */
    srv.loop = sophia_loop_new();
    srv.ws = sophia_ws_router_new(srv.loop, srv.conf, srv.conf->ws.max_queue);
    srv.cache = sophia_cache_new(srv.conf, sophia_loop_base(srv.loop)); /* L1 only */
    srv.host = strdup("127.0.0.1");
    srv.port = 0;
    api = (sophia_api){.conf = srv.conf, .cache = srv.cache, .ws = srv.ws};
    sophia_http_router *rt = sophia_http_router_new(); /* as sophiad's */
    if (!rt || sophia_api_routes(rt, &api) < 0 ||
        sophia_api_ingest_routes(rt, &api) < 0 ||
        sophia_api_cache_routes(rt, &api) < 0 ||
        sophia_api_memory_routes(rt, &api) < 0)
        abort();
    sophia_http_opts o = {.conf = srv.conf, .loop = srv.loop, .ws = srv.ws,
                          .host = srv.host, .port = 0, .routes = rt};
    if (!srv.loop || !srv.ws || !srv.cache || !(srv.http = sophia_http_new(&o)) ||
        sophia_http_start(srv.http) < 0)
        abort();
    api.http = srv.http;
}

static void turn(int n)
{
    struct event_base *base = sophia_loop_base(srv.loop);
    for (int i = 0; i < n; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Final answers in what the client read: status lines other than 100. */
static size_t answers(const char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i + 13 <= len; i++)
        if (memcmp(buf + i, "HTTP/1.1 ", 9) == 0 && (i == 0 || buf[i - 1] == '\n') &&
            memcmp(buf + i + 9, "100", 3) != 0)
            n++;
    return n;
}

static uint64_t ws_connections(void)
{
    sophia_ws_stats ws;
    sophia_ws_get_stats(srv.ws, &ws);
    return ws.connections;
}

static size_t request_lines(const uint8_t *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i + 7 <= len; i++)
        n += memcmp(p + i, " HTTP/1", 7) == 0;
    return n;
}

typedef struct client {
    int fd;
    char *got;
    size_t len, cap;
    int eof;
} client;

static void drain(client *c)
{
    for (;;) {
        if (c->len + 4096 > c->cap) {
            c->cap = c->cap ? c->cap * 2 : 16384;
            c->got = realloc(c->got, c->cap);
        }
        ssize_t n = recv(c->fd, c->got + c->len, c->cap - c->len, MSG_DONTWAIT);
        if (n > 0) {
            c->len += (size_t)n;
            continue;
        }
        if (n == 0)
            c->eof = 1;
        return;
    }
}

static void send_piece(client *c, const uint8_t *p, size_t len, int read_back)
{
    size_t off = 0;
    for (int tries = 0; off < len && tries < 64; tries++) {
        ssize_t n = send(c->fd, p + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EAGAIN)
            return; /* the server closed on us */
        turn(2);
        if (read_back)
            drain(c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv.conf)
        setup();
    if (size < 1)
        return 0;
    int flags = data[0];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return 0;
    client c = {.fd = sv[1]};
    if (sophia_http_adopt(srv.http, sv[0]) < 0) {
        close(sv[1]);
        return 0;
    }
    const uint8_t *p = data + 1, *end = data + size;
    while (p < end) {
        const uint8_t *sep = memmem(p, (size_t)(end - p), "\xfe\xff", 2);
        size_t n = sep ? (size_t)(sep - p) : (size_t)(end - p);
        send_piece(&c, p, n, !(flags & 2));
        p += n + (sep ? 2 : 0);
    }
    if (flags & 1) {
        shutdown(c.fd, SHUT_WR);
        for (int i = 0; i < 200 && !c.eof; i++) {
            turn(2);
            drain(&c);
        }
    }
    drain(&c);
    if (answers(c.got, c.len) > request_lines(data + 1, size - 1) + 1)
        abort(); /* more answers than requests */
    close(c.fd);
    free(c.got);
    sophia_http_stats st;
    for (int i = 0; i < 200; i++) {
        turn(1);
        sophia_http_get_stats(srv.http, &st);
        if (st.connections == 0 && ws_connections() == 0)
            break;
    }
    sophia_http_get_stats(srv.http, &st);
    if (st.connections != 0 || st.body_bytes != 0)
        abort(); /* a connection or its body outlived its client */
    return 0;
}
