/*
 * floor - the least work a server must do for the ingest and fan-out
 * benchmarks (tests/bench/ingest.mjs, fanout.mjs), run in the same script
 * as sophiad and the node peer so sophiad's CPU per event and per delivery
 * can be quoted as a ratio to it, on the same machine and the same load.
 *
 * It does only what the benchmark's clients can observe, and nothing a
 * real host must also do (no validation, no state, no cache, no history):
 *   - HTTP/1.1 with Content-Length bodies, keep-alive and pipelining;
 *     `GET /healthz` 200; `POST /ingest/metrics` 202 {"accepted":N};
 *   - `GET /ws`: the RFC 6455 upgrade (Sec-WebSocket-Accept from OpenSSL's
 *     SHA-1); a client text frame with `"type":"subscribe"` is scanned for
 *     its topic names (no JSON parser) and answered `subscribed`, as
 *     sophiad does; ping gets pong, close gets close;
 *   - each point of a POST body (an NDJSON line or an element of a JSON
 *     array, found by a byte scan that only tracks strings and nesting) is
 *     wrapped, unparsed, in sophiad's metric message
 *       {"type":"metric","topic":"dashboard:ID","seq":N,
 *        "dashboard_id":"ID","data":<the point as sent>}
 *     with ID found by substring (`"dashboard_id":"`). Each frame is
 *     built once, in an arena; each subscriber's frames leave in one
 *     sendmsg() straight from it (no copy per subscriber) once every
 *     event of the wake-up is handled: a whole POST's, or those of all
 *     the POSTs one epoll_wait() returned, so two POSTs read in one
 *     wake-up cost no more sends than one. The wake-up's HTTP answers
 *     leave after its frames, as sophiad's do: the client a 202 wakes
 *     does not take the core before the frames are sent.
 * One thread, one level-triggered epoll, non-blocking sockets; an output
 * buffer per connection holds what a partial send() left, and EPOLLOUT is
 * armed only then. All state is in one floor_srv handle.
 *
 * With --redis PORT it is the floor of a durable ingest (sophiad's default
 * tiers, ingest.mjs --tiers): a POST's points are appended to a Redis
 * stream first, one `XADD floor:stream MAXLEN ~ 100000 * d <point>` each,
 * the wake-up's appends in one write, and the POST is answered 202 and
 * its points published only once Redis answered every XADD (503 when one
 * failed), the way sophiad acknowledges a durable event. The connection
 * reads no further request meanwhile, so answers keep their order. What
 * sophiad does on top (a consumer group reading the entries back and
 * XACKing them, the write-back journal of the cache, L3) is not floor
 * work: it is part of what the ratio measures.
 *
 * Usage: floor_server PORT [--redis REDIS_PORT]   (127.0.0.1 for both)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define FLOOR_HEAD_MAX (64 * 1024)        /* request line + headers */
#define FLOOR_BODY_MAX (256 * 1024 * 1024) /* a bigger body closes */
#define FLOOR_READ (64 * 1024)
#define FLOOR_IOV 64 /* spans in one sendmsg(); more are copied first */

typedef struct floor_buf {
    char *p;
    size_t off, len, cap; /* unsent or unparsed bytes are p[off..len) */
} floor_buf;

typedef struct floor_span {
    size_t off, len; /* in floor_srv.arena */
} floor_span;

typedef struct floor_conn {
    int fd;
    int ws;      /* upgraded to WebSocket */
    int dirty;   /* on the list of subscribers to flush after this wake-up */
    int owed;    /* on the list of answers to send after that */
    int polling; /* EPOLLOUT armed: the last send() was partial */
    int waiting; /* --redis: a POST of it waits for its XADDs */
    unsigned long id; /* tells a connection from a later one on its fd */
    floor_buf in, out;
    floor_span *spans; /* this wake-up's frames for it, not copied */
    size_t nspans, spans_cap;
    uint32_t *topics; /* indices into floor_srv.topics it subscribed to */
    size_t ntopics, topics_cap;
} floor_conn;

typedef struct floor_topic {
    char *name;
    size_t len;
    uint64_t seq;
    int *subs; /* subscribers' fds */
    size_t nsubs, cap;
} floor_topic;

/* Connections with something to send after this wake-up, by fd. */
typedef struct floor_fds {
    int *fd;
    size_t n, cap;
} floor_fds;

typedef struct floor_srv {
    int ep, lfd;
    floor_conn **conns; /* by fd */
    size_t nconns;
    floor_topic *topics;
    size_t ntopics, topics_cap;
    uint32_t *slots; /* open addressing: topic index + 1, 0 = empty */
    size_t nslots;   /* a power of two, kept over twice ntopics */
    floor_fds dirty; /* frames queued in this wake-up */
    floor_fds owed;  /* an answer queued in this wake-up */
    floor_buf arena; /* every frame built in this wake-up, sent from here */
    unsigned long next_id;
    /* --redis: the connection to Redis, and the POSTs waiting for their
     * XADD replies, in the order they were sent (Redis answers in order) */
    int rfd, rpolling;
    floor_buf rout, rin;
    struct floor_wait *waits;
    size_t whead, nwaits, waits_cap;
} floor_srv;

typedef struct floor_wait {
    int fd;
    unsigned long id;  /* the connection's, to skip one closed meanwhile */
    char *body;        /* a copy: the connection's buffer moves on */
    size_t len, left;  /* XADD replies still to come */
    int failed;
} floor_wait;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die("realloc");
    return q;
}

/* fd onto list `l` once: `*on` says it is there. */
static void fds_add(floor_fds *l, int *on, int fd)
{
    if (*on)
        return;
    *on = 1;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->fd = xrealloc(l->fd, l->cap * sizeof(*l->fd));
    }
    l->fd[l->n++] = fd;
}

/* ------------------------------------------------------------ buffers */

static void buf_reserve(floor_buf *b, size_t more)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + more <= b->cap)
        return;
    if (b->off) { /* reuse the consumed front before growing */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + more <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_add(floor_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void buf_str(floor_buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* A server frame's header (FIN, opcode, unmasked length) in h; its size. */
static size_t frame_bytes(unsigned char h[10], int opcode, size_t n)
{
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)n;
        return 2;
    }
    if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        return 4;
    }
    h[1] = 127;
    for (int k = 0; k < 8; k++)
        h[2 + k] = (unsigned char)((uint64_t)n >> (56 - 8 * k));
    return 10;
}

static size_t frame_head(floor_buf *b, int opcode, size_t n)
{
    unsigned char h[10];
    size_t hl = frame_bytes(h, opcode, n);
    buf_add(b, h, hl);
    return hl;
}

/* ---------------------------------------------------------- connections */

static void conn_close(floor_srv *s, floor_conn *c);

static void set_out(floor_srv *s, floor_conn *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.fd = c->fd};
    if (c->polling != on && epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->polling = on;
}

/* One send() of everything queued; what is left waits for EPOLLOUT.
 * Returns -1 when the connection was closed. */
static int conn_flush(floor_srv *s, floor_conn *c)
{
    floor_buf *b = &c->out;
    if (b->off == b->len)
        return 0;
    ssize_t w = send(c->fd, b->p + b->off, b->len - b->off, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(s, c);
        return -1;
    }
    if (w > 0)
        b->off += (size_t)w;
    if (b->off == b->len)
        b->off = b->len = 0;
    set_out(s, c, b->off != b->len);
    return 0;
}

static void topic_unsub(floor_topic *t, int fd)
{
    for (size_t i = 0; i < t->nsubs; i++) {
        if (t->subs[i] == fd) {
            t->subs[i] = t->subs[--t->nsubs];
            return;
        }
    }
}

static void conn_close(floor_srv *s, floor_conn *c)
{
    for (size_t i = 0; i < c->ntopics; i++)
        topic_unsub(&s->topics[c->topics[i]], c->fd);
    s->conns[c->fd] = NULL;
    close(c->fd); /* also leaves the epoll set */
    free(c->in.p);
    free(c->out.p);
    free(c->spans);
    free(c->topics);
    free(c);
}

static void conn_accept(floor_srv *s)
{
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                perror("floor: accept4");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if ((size_t)fd >= s->nconns) {
            size_t n = s->nconns ? s->nconns : 1024;
            while (n <= (size_t)fd)
                n *= 2;
            s->conns = xrealloc(s->conns, n * sizeof(*s->conns));
            memset(s->conns + s->nconns, 0, (n - s->nconns) * sizeof(*s->conns));
            s->nconns = n;
        }
        floor_conn *c = xrealloc(NULL, sizeof(*c));
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->id = ++s->next_id;
        s->conns[fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }
}

/* --------------------------------------------------------------- topics */

static uint64_t hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h;
}

static uint32_t *slot_of(floor_srv *s, const char *name, size_t len)
{
    size_t mask = s->nslots - 1, i = (size_t)hash(name, len) & mask;
    for (;; i = (i + 1) & mask) {
        uint32_t k = s->slots[i];
        if (!k)
            return &s->slots[i];
        floor_topic *t = &s->topics[k - 1];
        if (t->len == len && memcmp(t->name, name, len) == 0)
            return &s->slots[i];
    }
}

static void rehash(floor_srv *s)
{
    free(s->slots);
    s->nslots = s->nslots ? s->nslots * 2 : 256;
    s->slots = xrealloc(NULL, s->nslots * sizeof(*s->slots));
    memset(s->slots, 0, s->nslots * sizeof(*s->slots));
    for (size_t i = 0; i < s->ntopics; i++)
        *slot_of(s, s->topics[i].name, s->topics[i].len) = (uint32_t)i + 1;
}

/* The topic called name[0..len), or NULL; created when `create`. */
static floor_topic *topic_get(floor_srv *s, const char *name, size_t len, int create)
{
    uint32_t *slot = slot_of(s, name, len);
    if (*slot || !create)
        return *slot ? &s->topics[*slot - 1] : NULL;
    if (s->ntopics == s->topics_cap) {
        s->topics_cap = s->topics_cap ? s->topics_cap * 2 : 64;
        s->topics = xrealloc(s->topics, s->topics_cap * sizeof(*s->topics));
    }
    floor_topic *t = &s->topics[s->ntopics++];
    memset(t, 0, sizeof(*t));
    t->name = xrealloc(NULL, len);
    memcpy(t->name, name, len);
    t->len = len;
    *slot = (uint32_t)s->ntopics;
    if (s->ntopics * 2 > s->nslots)
        rehash(s);
    return t;
}

static void subscribe(floor_srv *s, floor_conn *c, const char *name, size_t len)
{
    floor_topic *t = topic_get(s, name, len, 1);
    uint32_t idx = (uint32_t)(t - s->topics);
    for (size_t i = 0; i < c->ntopics; i++)
        if (c->topics[i] == idx)
            return;
    if (t->nsubs == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->subs = xrealloc(t->subs, t->cap * sizeof(*t->subs));
    }
    t->subs[t->nsubs++] = c->fd;
    if (c->ntopics == c->topics_cap) {
        c->topics_cap = c->topics_cap ? c->topics_cap * 2 : 4;
        c->topics = xrealloc(c->topics, c->topics_cap * sizeof(*c->topics));
    }
    c->topics[c->ntopics++] = idx;
}

/* ------------------------------------------------------------ WebSocket */

/* `{"type":"subscribe","subscriptions":["a","b"]}`: each quoted name in
 * the array is a topic; the answer echoes the array as sophiad does. */
static void on_text(floor_srv *s, floor_conn *c, const char *p, size_t n)
{
    const char *arr;
    if (!memmem(p, n, "\"subscribe\"", 11) ||
        !(arr = memmem(p, n, "\"subscriptions\":[", 17)))
        return;
    arr += 16;
    const char *end = memchr(arr, ']', (size_t)(p + n - arr));
    if (!end)
        return;
    for (const char *q = arr; q < end;) {
        const char *a = memchr(q, '"', (size_t)(end - q)), *b;
        if (!a || !(b = memchr(a + 1, '"', (size_t)(end - a - 1))))
            break;
        subscribe(s, c, a + 1, (size_t)(b - a - 1));
        q = b + 1;
    }
    static const char head[] = "{\"type\":\"subscribed\",\"subscriptions\":";
    size_t alen = (size_t)(end + 1 - arr);
    frame_head(&c->out, 0x1, sizeof(head) - 1 + alen + 1);
    buf_add(&c->out, head, sizeof(head) - 1);
    buf_add(&c->out, arr, alen);
    buf_add(&c->out, "}", 1);
}

/* Complete client frames in c->in (masked, unfragmented); returns -1 to
 * close. */
static int on_ws(floor_srv *s, floor_conn *c)
{
    floor_buf *b = &c->in;
    while (b->len - b->off >= 2) {
        unsigned char *f = (unsigned char *)b->p + b->off;
        size_t avail = b->len - b->off, hl = 2;
        uint64_t len = f[1] & 0x7f;
        if (!(f[1] & 0x80))
            return -1; /* clients must mask */
        if (len == 126) {
            if (avail < 4)
                return 0;
            len = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                return 0;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | f[2 + k];
            hl = 10;
        }
        if (len > FLOOR_HEAD_MAX)
            return -1;
        if (avail < hl + 4 + len)
            return 0;
        unsigned char *key = f + hl, *p = key + 4;
        for (size_t i = 0; i < len; i++)
            p[i] ^= key[i & 3];
        int op = f[0] & 0x0f;
        if (op == 0x1) {
            on_text(s, c, (const char *)p, (size_t)len);
        } else if (op == 0x9) {
            frame_head(&c->out, 0xA, (size_t)len);
            buf_add(&c->out, p, (size_t)len);
        } else if (op == 0x8) {
            send(c->fd, "\x88\x00", 2, MSG_NOSIGNAL); /* the close answer */
            return -1;
        }
        b->off += hl + 4 + (size_t)len;
    }
    return 0;
}

/* The 101 answer: Sec-WebSocket-Accept = base64(SHA-1(key + GUID)). */
static int upgrade(floor_conn *c, const char *key, size_t klen)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[128];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char acc[64];
    if (klen > sizeof(in) - sizeof(guid))
        return -1;
    memcpy(in, key, klen);
    memcpy(in + klen, guid, sizeof(guid) - 1);
    if (!EVP_Digest(in, klen + sizeof(guid) - 1, md, &mdlen, EVP_sha1(), NULL))
        return -1;
    EVP_EncodeBlock((unsigned char *)acc, md, (int)mdlen);
    buf_str(&c->out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    buf_str(&c->out, acc);
    buf_str(&c->out, "\r\n\r\n");
    c->ws = 1;
    return 0;
}

/* ----------------------------------------------------------------- ingest */

/* The next point of an NDJSON body or a JSON array's body at *pos: its
 * span in [*start, *start + *len); 0 at the end. Only strings and nesting
 * are tracked, so a comma or newline inside a value does not cut it. */
static int next_point(const char *p, size_t n, int array, size_t *pos,
                      size_t *start, size_t *len)
{
    size_t i = *pos;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n' ||
                     p[i] == ',' || (array && (p[i] == '[' || p[i] == ']'))))
        i++;
    if (i == n)
        return 0;
    *start = i;
    int depth = 0, str = 0;
    for (; i < n; i++) {
        char ch = p[i];
        if (str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                str = 0;
        } else if (ch == '"') {
            str = 1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth <= 0) {
                i += depth == 0;
                break;
            }
        } else if (depth == 0 && (ch == ',' || ch == '\n')) {
            break;
        }
    }
    *len = (i > n ? n : i) - *start;
    *pos = i > n ? n : i;
    return 1;
}

/* Frame arena[at..at+len) is for c: it extends c's last span when it
 * follows it (one topic: one span per wake-up), else starts one. */
static void add_span(floor_srv *s, floor_conn *c, size_t at, size_t len)
{
    floor_span *last = c->nspans ? &c->spans[c->nspans - 1] : NULL;
    if (last && last->off + last->len == at) {
        last->len += len;
    } else {
        if (c->nspans == c->spans_cap) {
            c->spans_cap = c->spans_cap ? c->spans_cap * 2 : 8;
            c->spans = xrealloc(c->spans, c->spans_cap * sizeof(*c->spans));
        }
        c->spans[c->nspans++] = (floor_span){at, len};
    }
    fds_add(&s->dirty, &c->dirty, c->fd);
}

/* One point: its frame is built once in s->arena and noted (a span) for
 * each subscriber of dashboard:ID; nothing is copied or sent yet. */
static void route_point(floor_srv *s, const char *p, size_t n)
{
    static const char key[] = "\"dashboard_id\":\"";
    const char *id = memmem(p, n, key, sizeof(key) - 1), *q;
    if (!id)
        return;
    id += sizeof(key) - 1;
    if (!(q = memchr(id, '"', (size_t)(p + n - id))))
        return;
    size_t idlen = (size_t)(q - id);
    char topic[256];
    if (idlen > sizeof(topic) - 10)
        return;
    memcpy(topic, "dashboard:", 10);
    memcpy(topic + 10, id, idlen);
    floor_topic *t = topic_get(s, topic, 10 + idlen, 0);
    if (!t || !t->nsubs)
        return;
    char num[32];
    int nl = snprintf(num, sizeof(num), ",\"seq\":%" PRIu64, ++t->seq);
    size_t plen = 26 + 10 + idlen + 1 + (size_t)nl + 17 + idlen + 9 + n + 1;
    floor_buf *a = &s->arena;
    size_t at = a->len, hl = frame_head(a, 0x1, plen);
    buf_add(a, "{\"type\":\"metric\",\"topic\":\"", 26);
    buf_add(a, topic, 10 + idlen);
    buf_add(a, "\"", 1);
    buf_add(a, num, (size_t)nl);
    buf_add(a, ",\"dashboard_id\":\"", 17);
    buf_add(a, id, idlen);
    buf_add(a, "\",\"data\":", 9);
    buf_add(a, p, n);
    buf_add(a, "}", 1);
    if (a->len - at != hl + plen) {
        fprintf(stderr, "floor: frame length %zu, header says %zu\n", a->len - at - hl, plen);
        abort();
    }
    for (size_t i = 0; i < t->nsubs; i++)
        add_span(s, s->conns[t->subs[i]], at, hl + plen);
}

/* A POST body: every point routed (queued, not sent); the number of
 * points. */
static size_t on_body(floor_srv *s, const char *p, size_t n)
{
    size_t pos = 0, start, len, accepted = 0;
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\r' || p[i] == '\t'))
        i++;
    int array = i < n && p[i] == '[';
    while (next_point(p, n, array, &pos, &start, &len)) {
        route_point(s, p + start, len);
        accepted++;
    }
    return accepted;
}

/* c's frames of this wake-up in one sendmsg() straight from the arena;
 * what it did not take is copied to c->out for EPOLLOUT. Behind bytes
 * still waiting there, or with more spans than one call takes, they are
 * copied first and leave in one send(). */
static void send_spans(floor_srv *s, floor_conn *c)
{
    size_t n = c->nspans, sent = 0;
    int direct = c->out.off == c->out.len && n <= FLOOR_IOV;
    c->nspans = 0;
    if (direct) {
        struct iovec iov[FLOOR_IOV];
        for (size_t i = 0; i < n; i++)
            iov[i] = (struct iovec){s->arena.p + c->spans[i].off, c->spans[i].len};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            conn_close(s, c);
            return;
        }
        sent = w > 0 ? (size_t)w : 0;
    }
    for (size_t i = 0; i < n; i++) {
        const floor_span *sp = &c->spans[i];
        if (sent >= sp->len) {
            sent -= sp->len;
            continue;
        }
        buf_add(&c->out, s->arena.p + sp->off + sent, sp->len - sent);
        sent = 0;
    }
    if (direct)
        set_out(s, c, c->out.off != c->out.len);
    else if (!c->polling)
        conn_flush(s, c);
}

/* After a wake-up's events: each subscriber that got frames gets them
 * (send_spans), then the arena is empty again. A subscriber closed
 * meanwhile left a NULL; a connection accepted since on its fd has no
 * spans. */
static void flush_dirty(floor_srv *s)
{
    for (size_t k = 0; k < s->dirty.n; k++) {
        floor_conn *c = s->conns[s->dirty.fd[k]];
        if (!c || !c->dirty)
            continue;
        c->dirty = 0;
        send_spans(s, c);
    }
    s->dirty.n = 0;
    s->arena.len = 0;
}

/* ------------------------------------------------------------------ HTTP */

static void reply(floor_conn *c, const char *status, const char *body)
{
    char head[160];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n", status, strlen(body));
    buf_add(&c->out, head, (size_t)n);
    buf_str(&c->out, body);
}

/* The value of header `name` (with its colon) in head[0..n), or NULL. */
static const char *header(const char *head, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *l = memchr(head, '\n', n); l && l + 1 < head + n;
         l = memchr(l + 1, '\n', (size_t)(head + n - l - 1))) {
        const char *v = l + 1;
        if ((size_t)(head + n - v) < nl || strncasecmp(v, name, nl) != 0)
            continue;
        v += nl;
        while (*v == ' ' || *v == '\t')
            v++;
        const char *e = v;
        while (*e != '\r' && *e != '\n')
            e++;
        *vlen = (size_t)(e - v);
        return v;
    }
    return NULL;
}

static void durable_post(floor_srv *s, floor_conn *c, const char *body, size_t n);

/* One request, if complete, at c->in's front: 1 handled, 0 needs more
 * bytes, -1 close. */
static int on_request(floor_srv *s, floor_conn *c)
{
    floor_buf *b = &c->in;
    const char *p = b->p + b->off;
    size_t avail = b->len - b->off, vlen = 0;
    const char *end = memmem(p, avail, "\r\n\r\n", 4);
    if (!end)
        return avail > FLOOR_HEAD_MAX ? -1 : 0;
    size_t hlen = (size_t)(end + 4 - p);
    const char *v = header(p, hlen, "content-length:", &vlen);
    size_t clen = v ? strtoul(v, NULL, 10) : 0;
    if (clen > FLOOR_BODY_MAX)
        return -1;
    if (avail < hlen + clen)
        return 0;
    b->off += hlen + clen;
    if (strncmp(p, "POST /ingest/metrics ", 21) == 0 && s->rfd >= 0) {
        durable_post(s, c, p + hlen, clen); /* answered when Redis has it */
    } else if (strncmp(p, "POST /ingest/metrics ", 21) == 0) {
        char ans[48];
        snprintf(ans, sizeof(ans), "{\"accepted\":%zu}", on_body(s, p + hlen, clen));
        reply(c, "202 Accepted", ans);
    } else if (strncmp(p, "GET /healthz ", 13) == 0) {
        reply(c, "200 OK", "{\"status\":\"ok\"}");
    } else if (strncmp(p, "GET /ws ", 8) == 0 &&
               (v = header(p, hlen, "sec-websocket-key:", &vlen))) {
        return upgrade(c, v, vlen) < 0 ? -1 : 1;
    } else {
        reply(c, "404 Not Found", "{\"error\":\"not_found\"}");
    }
    return 1;
}

static void serve(floor_srv *s, floor_conn *c);

static void on_readable(floor_srv *s, floor_conn *c)
{
    for (;;) {
        /* small until a connection posts: 10,000 subscribers then hold
         * 4 KiB each, not 64 */
        size_t want = c->ws || !c->in.cap ? 4096 : FLOOR_READ;
        buf_reserve(&c->in, want);
        ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0) {
            conn_close(s, c);
            return;
        }
        c->in.len += (size_t)r;
        if ((size_t)r < want)
            break;
    }
    serve(s, c);
}

/* The wake-up's answers, once its frames left (flush_dirty), as sophiad's
 * ingest answers do: the client an answer wakes does not take the core
 * before the frames are sent. */
static void flush_owed(floor_srv *s)
{
    for (size_t k = 0; k < s->owed.n; k++) {
        floor_conn *c = s->conns[s->owed.fd[k]];
        if (!c || !c->owed)
            continue;
        c->owed = 0;
        if (!c->polling)
            conn_flush(s, c);
    }
    s->owed.n = 0;
}

/* The requests or frames complete in c->in; what they answered is sent
 * after the wake-up's frames. A POST waiting for Redis stops it until it
 * is answered. */
static void serve(floor_srv *s, floor_conn *c)
{
    int rc = 0;
    while (!c->ws && !c->waiting && (rc = on_request(s, c)) > 0)
        ;
    if ((!c->ws && rc < 0) || (c->ws && on_ws(s, c) < 0)) {
        conn_close(s, c);
        return;
    }
    if (c->in.off == c->in.len)
        c->in.off = c->in.len = 0;
    fds_add(&s->owed, &c->owed, c->fd);
}

/* --------------------------------------------------- --redis: durable */

static void redis_connect(floor_srv *s, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("floor: connect to redis");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
        die("fcntl");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl");
    s->rfd = fd;
}

/* Each point of the body becomes one XADD in s->rout (sent after the
 * wake-up); c waits for the replies. */
static void durable_post(floor_srv *s, floor_conn *c, const char *body, size_t n)
{
    static const char cmd[] = "*8\r\n$4\r\nXADD\r\n$12\r\nfloor:stream\r\n"
                              "$6\r\nMAXLEN\r\n$1\r\n~\r\n$6\r\n100000\r\n"
                              "$1\r\n*\r\n$1\r\nd\r\n";
    if (s->nwaits == s->waits_cap && s->whead) { /* reuse the answered front */
        memmove(s->waits, s->waits + s->whead, (s->nwaits - s->whead) * sizeof(*s->waits));
        s->nwaits -= s->whead;
        s->whead = 0;
    }
    if (s->nwaits == s->waits_cap) {
        s->waits_cap = s->waits_cap ? s->waits_cap * 2 : 64;
        s->waits = xrealloc(s->waits, s->waits_cap * sizeof(*s->waits));
    }
    floor_wait *w = &s->waits[s->nwaits++];
    *w = (floor_wait){.fd = c->fd, .id = c->id, .len = n};
    w->body = xrealloc(NULL, n);
    memcpy(w->body, body, n);
    size_t i = 0, pos = 0, start, len;
    while (i < n && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    int array = i < n && body[i] == '[';
    while (next_point(body, n, array, &pos, &start, &len)) {
        char hd[32];
        buf_add(&s->rout, cmd, sizeof(cmd) - 1);
        buf_add(&s->rout, hd, (size_t)snprintf(hd, sizeof(hd), "$%zu\r\n", len));
        buf_add(&s->rout, body + start, len);
        buf_add(&s->rout, "\r\n", 2);
        w->left++;
    }
    if (w->left == 0) { /* nothing to append */
        free(w->body);
        s->nwaits--;
        reply(c, "202 Accepted", "{\"accepted\":0}");
        return;
    }
    c->waiting = 1;
}

static void redis_flush(floor_srv *s)
{
    floor_buf *b = &s->rout;
    if (b->off == b->len)
        return;
    ssize_t w = send(s->rfd, b->p + b->off, b->len - b->off, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR)
        die("floor: send to redis");
    if (w > 0)
        b->off += (size_t)w;
    int on = b->off != b->len;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.fd = s->rfd};
    if (s->rpolling != on && epoll_ctl(s->ep, EPOLL_CTL_MOD, s->rfd, &ev) == 0)
        s->rpolling = on;
}

/* A POST whose XADDs were all answered: published and 202, or 503. */
static void wait_done(floor_srv *s, floor_wait w)
{
    floor_conn *c = (size_t)w.fd < s->nconns ? s->conns[w.fd] : NULL;
    if (c && c->id == w.id) {
        char ans[48];
        if (w.failed) {
            reply(c, "503 Service Unavailable", "{\"error\":\"unavailable\"}");
        } else {
            snprintf(ans, sizeof(ans), "{\"accepted\":%zu}", on_body(s, w.body, w.len));
            reply(c, "202 Accepted", ans);
        }
        c->waiting = 0;
        serve(s, c); /* may queue waits: s->waits can move */
    }
    free(w.body);
}

/* One RESP reply at b's front: its length, 0 when incomplete; *err for
 * an error reply. An XADD answers an id ($) or an error (-). */
static size_t resp_reply(const floor_buf *b, int *err)
{
    const char *p = b->p + b->off, *nl = memchr(p, '\n', b->len - b->off);
    if (!nl)
        return 0;
    size_t head = (size_t)(nl + 1 - p);
    *err = p[0] == '-';
    if (p[0] != '$')
        return head;
    long n = strtol(p + 1, NULL, 10);
    size_t need = head + (n < 0 ? 0 : (size_t)n + 2);
    return b->len - b->off >= need ? need : 0;
}

static void redis_readable(floor_srv *s)
{
    floor_buf *b = &s->rin;
    for (;;) {
        buf_reserve(b, FLOOR_READ);
        ssize_t r = recv(s->rfd, b->p + b->len, b->cap - b->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0)
            die("floor: redis closed");
        b->len += (size_t)r;
    }
    size_t n;
    int err = 0;
    while (s->whead < s->nwaits && (n = resp_reply(b, &err)) > 0) {
        b->off += n;
        floor_wait *w = &s->waits[s->whead];
        w->failed |= err;
        if (--w->left == 0) {
            s->whead++;
            wait_done(s, *w);
        }
    }
    if (s->whead == s->nwaits)
        s->whead = s->nwaits = 0;
}

/* ------------------------------------------------------------------ main */

static int listen_on(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("bind");
    if (listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

int main(int argc, char **argv)
{
    char *end = NULL, *rend = NULL;
    long port = argc >= 2 ? strtol(argv[1], &end, 10) : 0;
    long rport = argc == 4 && !strcmp(argv[2], "--redis") ? strtol(argv[3], &rend, 10) : 0;
    if ((argc != 2 && argc != 4) || *end || port <= 0 || port > 65535 ||
        (argc == 4 && (!rend || *rend || rport <= 0 || rport > 65535))) {
        fprintf(stderr, "usage: floor_server PORT [--redis REDIS_PORT] (127.0.0.1)\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    floor_srv s = {.lfd = listen_on((int)port), .rfd = -1};
    if ((s.ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    if (rport)
        redis_connect(&s, (int)rport);
    rehash(&s);
    /* OpenSSL 3 loads its provider on first use: a few MiB, here rather
     * than in the first upgrade, where fanout.mjs's RSS per connection
     * would count it */
    unsigned char md[EVP_MAX_MD_SIZE];
    if (!EVP_Digest("", 0, md, NULL, EVP_sha1(), NULL))
        die("EVP_Digest");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s.lfd};
    if (epoll_ctl(s.ep, EPOLL_CTL_ADD, s.lfd, &ev) < 0)
        die("epoll_ctl");
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(s.ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (fd == s.lfd) {
                conn_accept(&s);
                continue;
            }
            if (fd == s.rfd) {
                if (evs[k].events & EPOLLOUT)
                    redis_flush(&s);
                if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    redis_readable(&s);
                continue;
            }
            floor_conn *c = (size_t)fd < s.nconns ? s.conns[fd] : NULL;
            if (c && (evs[k].events & EPOLLOUT) && conn_flush(&s, c) < 0)
                continue;
            if (c && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                on_readable(&s, c);
        }
        if (s.rfd >= 0)
            redis_flush(&s); /* the wake-up's XADDs in one write */
        flush_dirty(&s);
        flush_owed(&s);
    }
}
