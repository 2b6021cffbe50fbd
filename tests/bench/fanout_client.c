/*
 * fanout_client - the receiving side of tests/bench/fanout.mjs: N
 * WebSocket clients in one single-threaded epoll process, client i
 * subscribed to `<prefix><i % ntopics>` (prefix default `dashboard:b`),
 * counting the frames that arrive and
 * sampling their delivery latency.
 *
 * Why C: with 1,000 node `ws` clients on a 2-core machine the clients, not
 * the server, were the bottleneck (both sophiad and the node peer were
 * capped at the rate node could parse frames), which hid the ratio the
 * benchmark is for. This client does one recv() per readable socket and a
 * frame walk per buffer, so the server under test gets the CPU. Both
 * servers are measured with it.
 *
 * It speaks just enough RFC 6455 for the benchmark: a fixed-key upgrade
 * (the accept hash is not checked), one masked `subscribe` text frame,
 * unmasked server frames of any length, pong for ping. A payload's
 * `"value":` number is the publisher's CLOCK_MONOTONIC time in ms (node's
 * process.hrtime), so latency is the same clock on both ends.
 *
 * Encodings: FANOUT_PROTOCOL in the environment is offered as
 * Sec-WebSocket-Protocol (sophia.v1.msgpack: binary frames, the latency
 * read from the msgpack `value`). FANOUT_DEFLATE=1 offers
 * permessage-deflate as a browser does (`client_max_window_bits`, no
 * `server_no_context_takeover`), and sends its `subscribe` compressed (a
 * stored deflate block), so the server's inflater is set up and its
 * memory counted. Compressed server frames (RSV1) are counted as they
 * came on the wire and inflated (RFC 7692 7.2.2: the payload + 00 00 ff
 * ff, raw inflate) for their latency sample. Each connection keeps its
 * own inflater across messages: unless the server's answer says
 * `server_no_context_takeover` (then it is reset before each message), a
 * message may refer to the ones before it. sophiad compresses each
 * message alone, so for it both read the same, but the client does not
 * rely on that. A connection that inflates inflates every compressed
 * frame, as a browser does (skipping one would lose the window; ~40 KiB
 * of zlib state each). But one process inflating for 1,000 clients is
 * the bottleneck (10 KB takes ~30 us: 100 publishes/s to 1,000 clients
 * is 3 s of CPU a second), which a browser inflating its own messages
 * never is; so with FANOUT_INFLATE_EVERY=k only connections i % k == 0
 * inflate (and give latency samples), the others count their frames.
 * They are spread over each fan-out's send order: an unbiased sample.
 *
 * Control, on stdin/stdout (one line each): prints `ready` once every
 * client is subscribed; `c` -> `count <frames> <bytes>` (bytes on the wire
 * of those frames, headers included); `r` -> `lat <n> <p50>
 * <p99> <max>` over the samples since the last `r` (ms); `q` exits.
 *
 * Usage: fanout_client HOST PORT N NTOPICS [PREFIX]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_CONNECTING 200
#define RX_CHUNK (256 * 1024)

typedef enum { C_CONNECTING, C_HANDSHAKE, C_SUBSCRIBING, C_OPEN } cstate;

typedef struct conn {
    int fd;
    cstate st;
    unsigned char *buf; /* bytes of an incomplete frame (or response) */
    size_t len, cap;
    z_stream *zs;     /* permessage-deflate inflater, made at first use */
    int z_no_context; /* server_no_context_takeover: reset per message */
    int z_ended;      /* the last message ended its deflate stream */
    int no_inflate;   /* FANOUT_INFLATE_EVERY skips this one: counts only */
} conn;

static conn *conns;
static size_t nconns, ntopics, started, subscribed;
static const char *host, *prefix = "dashboard:b";
static int port, ep;
static uint64_t frames, wire;
static const char *protocol; /* FANOUT_PROTOCOL, or NULL */
static int deflate_offer;    /* FANOUT_DEFLATE=1 */
static size_t inflate_every = 1; /* FANOUT_INFLATE_EVERY */
static double *lat;
static size_t nlat, lat_cap;
static unsigned char *zout; /* an inflated message (one at a time) */
static size_t zout_cap;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN)
            continue; /* tiny control frames: spin rather than buffer */
        if (w <= 0)
            die("send");
        s += w;
        n -= (size_t)w;
    }
}

/* A masked client frame (mask 0: the payload is sent as is); `opcode`
 * may carry RSV1 (0x40). */
static void send_frame(int fd, int opcode, const char *payload, size_t n)
{
    unsigned char h[8 + 4];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)(0x80 | n);
    } else {
        h[1] = 0x80 | 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    }
    memset(h + hl, 0, 4);
    send_all(fd, h, hl + 4);
    if (n)
        send_all(fd, payload, n);
}

static void start_one(size_t i)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    conn *c = &conns[i];
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("inet_pton");
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket (raise ulimit -n)");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
        die("connect");
    c->st = C_CONNECTING;
    c->no_inflate = i % inflate_every != 0;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    started++;
}

static void on_connected(size_t i)
{
    conn *c = &conns[i];
    char req[768];
    int n = snprintf(req, sizeof(req),
                     "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "%s%s%s%s"
                     "Sec-WebSocket-Version: 13\r\n\r\n", host, port,
                     protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                     protocol ? "\r\n" : "",
                     deflate_offer ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                     "client_max_window_bits\r\n" : "");
    send_all(c->fd, req, (size_t)n);
    c->st = C_HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void keep(conn *c, const unsigned char *p, size_t n)
{
    if (c->len + n > c->cap) {
        size_t cap = (c->len + n) * 2;
        unsigned char *b = realloc(c->buf, cap);
        if (!b)
            die("realloc");
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

/* The msgpack number after the key "value" (fixstr 5): the publisher
 * sends a float64; NAN when it is not there. */
static double msgpack_value(const unsigned char *p, size_t n)
{
    const unsigned char *v = memmem(p, n, "\xa5value", 6);
    if (!v || (size_t)(p + n - v) < 6 + 9)
        return NAN;
    v += 6;
    if (*v == 0xcb) {
        uint64_t u = 0;
        double d;
        for (int i = 1; i <= 8; i++)
            u = u << 8 | v[i];
        memcpy(&d, &u, sizeof(d));
        return d;
    }
    return *v <= 0x7f ? *v : NAN;
}

static void sample(int opcode, const unsigned char *p, size_t n)
{
    double sent;
    if (opcode == 0x2) {
        if (isnan(sent = msgpack_value(p, n)))
            return;
    } else {
        const char *v = memmem(p, n, "\"value\":", 8);
        if (!v)
            return;
        sent = strtod(v + 8, NULL);
    }
    if (nlat == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        if (!(lat = realloc(lat, lat_cap * sizeof(*lat))))
            die("realloc");
    }
    lat[nlat++] = now_ms() - sent;
}

/* Inflates a compressed message's payload into zout; its length, or
 * exits (a frame that does not inflate is the server's bug, and the
 * figures would be wrong). A message may end its deflate stream (a
 * BFINAL block, RFC 7692 7.2.3.3): the next one then starts a new one. */
static size_t inflate_msg(conn *c, const unsigned char *p, size_t n)
{
    static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
    if (!c->zs) {
        if (!(c->zs = calloc(1, sizeof(*c->zs))) || inflateInit2(c->zs, -15) != Z_OK)
            die("inflateInit2");
    } else if ((c->z_no_context || c->z_ended) && inflateReset(c->zs) != Z_OK) {
        die("inflateReset");
    }
    c->z_ended = 0;
    size_t out = 0;
    for (int part = 0; part < 2 && !c->z_ended; part++) {
        c->zs->next_in = (unsigned char *)(part ? tail : p);
        c->zs->avail_in = (uInt)(part ? sizeof(tail) : n);
        while (c->zs->avail_in && !c->z_ended) {
            if (zout_cap - out < 4096) {
                zout_cap = zout_cap ? zout_cap * 2 : 65536;
                if (!(zout = realloc(zout, zout_cap)))
                    die("realloc");
            }
            c->zs->next_out = zout + out;
            c->zs->avail_out = (uInt)(zout_cap - out);
            int rc = inflate(c->zs, Z_SYNC_FLUSH);
            out = zout_cap - c->zs->avail_out;
            c->z_ended = rc == Z_STREAM_END;
            if (rc != Z_OK && rc != Z_STREAM_END) { /* Z_BUF_ERROR: stuck */
                fprintf(stderr, "fanout_client: inflate: %s\n", c->zs->msg ? c->zs->msg : "error");
                exit(1);
            }
        }
    }
    return out;
}

static void on_frame(conn *c, int b0, size_t hl, const unsigned char *p,
                     size_t n)
{
    int opcode = b0 & 0x0f;
    if (opcode == 0x9) {
        send_frame(c->fd, 0xA, (const char *)p, n);
        return;
    }
    if (opcode == 0x8) {
        fprintf(stderr, "fanout_client: server closed a connection\n");
        exit(1);
    }
    if (opcode != 0x1 && opcode != 0x2)
        return;
    size_t wire_len = hl + n;
    int sampled = 1;
    if (b0 & 0x40) { /* RSV1: compressed */
        if (c->no_inflate) {
            sampled = 0;
        } else {
            n = inflate_msg(c, p, n);
            p = zout;
        }
    }
    if (c->st == C_SUBSCRIBING) { /* the `subscribed` answer */
        c->st = C_OPEN;
        if (++subscribed == nconns) {
            printf("ready\n");
            fflush(stdout);
        }
        return;
    }
    frames++;
    wire += wire_len;
    if (sampled)
        sample(opcode, p, n);
}

/* Walks the complete frames in p[0..n); returns the bytes consumed. */
static size_t parse_frames(conn *c, const unsigned char *p, size_t n)
{
    size_t off = 0;
    while (n - off >= 2) {
        const unsigned char *f = p + off;
        uint64_t len = f[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | f[2 + k];
            hl = 10;
        }
        if (n - off - hl < len)
            break;
        on_frame(c, f[0], hl, f + hl, (size_t)len);
        off += hl + (size_t)len;
    }
    return off;
}

static void on_handshake(size_t i, conn *c)
{
    unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end)
        return;
    if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {
        fprintf(stderr, "fanout_client: upgrade refused: %.*s\n", (int)(c->len > 80 ? 80 : c->len), c->buf);
        exit(1);
    }
    c->z_no_context = memmem(c->buf, (size_t)(end - c->buf), "server_no_context_takeover", 26) != NULL;
    size_t rest = c->len - (size_t)(end + 4 - c->buf);
    memmove(c->buf, end + 4, rest);
    c->len = rest;
    char sub[128];
    int n = snprintf(sub, sizeof(sub), "{\"type\":\"subscribe\",\"subscriptions\":[\"%s%zu\"]}",
                     prefix, i % ntopics);
    if (deflate_offer) { /* BFINAL 0, BTYPE stored, LEN, NLEN, bytes */
        char z[160] = {0, (char)(n & 0xff), (char)(n >> 8), (char)(~n & 0xff),
                       (char)((~n >> 8) & 0xff)};
        memcpy(z + 5, sub, (size_t)n);
        send_frame(c->fd, 0x41, z, (size_t)n + 5);
    } else {
        send_frame(c->fd, 0x1, sub, (size_t)n);
    }
    c->st = C_SUBSCRIBING;
    if (started < nconns)
        start_one(started);
}

static void on_readable(size_t i)
{
    static unsigned char rx[RX_CHUNK];
    conn *c = &conns[i];
    for (;;) {
        ssize_t r = recv(c->fd, rx, sizeof(rx), 0);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r <= 0) {
            fprintf(stderr, "fanout_client: connection %zu lost\n", i);
            exit(1);
        }
        if (c->st == C_HANDSHAKE) {
            keep(c, rx, (size_t)r);
            on_handshake(i, c);
            if (c->st == C_HANDSHAKE)
                continue;
            size_t used = parse_frames(c, c->buf, c->len);
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
        } else if (c->len) { /* finish the frame cut in two first */
            keep(c, rx, (size_t)r);
            size_t used = parse_frames(c, c->buf, c->len);
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
        } else {
            size_t used = parse_frames(c, rx, (size_t)r);
            if (used < (size_t)r)
                keep(c, rx + used, (size_t)r - used);
        }
        if ((size_t)r < sizeof(rx))
            return;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void on_line(const char *line)
{
    if (line[0] == 'q')
        exit(0);
    if (line[0] == 'c') {
        printf("count %llu %llu\n", (unsigned long long)frames,
               (unsigned long long)wire);
    } else if (line[0] == 'r') {
        qsort(lat, nlat, sizeof(*lat), cmp_double);
        double p50 = nlat ? lat[nlat / 2] : -1, p99 = nlat ? lat[(size_t)((double)nlat * 0.99)] : -1;
        printf("lat %zu %.3f %.3f %.3f\n", nlat, p50, p99, nlat ? lat[nlat - 1] : -1);
        nlat = 0;
    }
    fflush(stdout);
}

/* Commands may arrive several per read: each complete line is one. */
static void on_command(void)
{
    static char line[256];
    static size_t len;
    ssize_t r = read(0, line + len, sizeof(line) - 1 - len);
    if (r <= 0)
        exit(0);
    len += (size_t)r;
    char *nl;
    while ((nl = memchr(line, '\n', len))) {
        *nl = '\0';
        on_line(line);
        len -= (size_t)(nl + 1 - line);
        memmove(line, nl + 1, len);
    }
    if (len == sizeof(line) - 1)
        len = 0;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: fanout_client HOST PORT N NTOPICS [PREFIX]\n");
        return 2;
    }
    if (argc == 6 && strlen(argv[5]) < 64)
        prefix = argv[5];
    protocol = getenv("FANOUT_PROTOCOL");
    if (protocol && (!*protocol || strlen(protocol) > 64))
        protocol = NULL;
    deflate_offer = getenv("FANOUT_DEFLATE") && atoi(getenv("FANOUT_DEFLATE"));
    if (getenv("FANOUT_INFLATE_EVERY") && atoi(getenv("FANOUT_INFLATE_EVERY")) > 0)
        inflate_every = (size_t)atoi(getenv("FANOUT_INFLATE_EVERY"));
    host = argv[1];
    port = atoi(argv[2]);
    nconns = strtoul(argv[3], NULL, 10);
    ntopics = strtoul(argv[4], NULL, 10);
    if (!nconns || !ntopics || !(conns = calloc(nconns, sizeof(*conns))))
        return 2;
    if ((ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    struct epoll_event in = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in);
    for (size_t i = 0; i < nconns && i < MAX_CONNECTING; i++)
        start_one(i);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(ep, evs, 512, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int k = 0; k < n; k++) {
            uint64_t i = evs[k].data.u64;
            if (i == UINT64_MAX)
                on_command();
            else if (conns[i].st == C_CONNECTING && (evs[k].events & EPOLLOUT))
                on_connected((size_t)i);
            else
                on_readable((size_t)i);
        }
    }
}
