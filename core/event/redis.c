/*
 * redis - see redis.h.
 *
 * Every command carries a small request record so a disconnect or timeout
 * can answer its callback exactly once: hiredis calls pending callbacks
 * with a NULL reply when the context is freed.
 *
 * Event adapter: hiredis' stock libevent adapter uses one-shot events, so
 * every read re-adds the read event and every command adds a write event
 * that is removed again once the socket took the data: four epoll_ctl
 * calls and an extra loop pass per batch, which cost the L2 hit path more
 * than parsing the replies. Ours keeps the read event persistent and
 * writes commands in a deferred "flush" pass at the end of the current
 * loop iteration (all commands issued in one batch of reply callbacks
 * leave in one send()); a real EV_WRITE event is used only while
 * connecting or when the socket is full.
 *
 * Timeouts: a 500 ms tick runs while commands are pending (or a connect is
 * in progress) and counts ticks without any reply; four in a row mean the
 * server stopped answering. Replies only reset a counter, so the hot path
 * never touches the timer heap.
 *
 * Handshake: on every (re)connect, AUTH (when the URL has a password) and
 * SELECT are the first commands, pipelined without waiting; the server
 * answers in order, so nothing else can run unauthenticated. The tier is
 * up only once SELECT succeeds. A refused AUTH or SELECT (wrong password,
 * NOAUTH, no such db) disconnects and retries with backoff like any other
 * failure, with the server's reason in the log and in last_error; the URL
 * is logged in its redacted form (redis_url.h).
 */
#include "event/redis.h"

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "event/loop.h"
#include "event/redis_reply.h"
#include "lib/backoff.h"
#include "lib/log.h"
#include "lib/redis_url.h"

#define REDIS_TIMEOUT_MS 2000
#define REDIS_TICK_MS (REDIS_TIMEOUT_MS / 4)
#define REDIS_IDLE_TICKS (REDIS_TIMEOUT_MS / REDIS_TICK_MS)
#define REDIS_FREE_REQS 1024 /* finished requests kept for reuse */
#define REDIS_FMT_STACK 512  /* commands up to this size format on the stack */
#define REDIS_BACKOFF_MIN_S 0.1
#define REDIS_BACKOFF_MAX_S 5.0

struct sophia_redis {
    struct event_base *base;
    redisAsyncContext *ac;
    sophia_redis_url url;
    char safe_url[256];        /* redacted, for logs */
    char refused[256];         /* why the server refused AUTH/SELECT */
    int up;
    int was_up; /* for logging state changes once */
    sophia_backoff backoff; /* reconnect schedule, with jitter */
    struct event *retry_ev;
    struct event *watchdog_ev; /* the tick, while anything is pending */
    unsigned idle_ticks;       /* ticks since the last reply */
    int in_write;              /* inside redisAsyncHandleWrite */
    int flush_pending;         /* the deferred flush is scheduled */
    struct redis_req *free_reqs;
    unsigned nfree;
    char err[256];
    sophia_redis_stats st;
};

typedef struct redis_req {
    struct sophia_redis *r;
    sophia_redis_cb cb;
    void *arg;
} redis_req;

static void redis_connect(sophia_redis *r);

static void set_down(sophia_redis *r, const char *why)
{
    snprintf(r->err, sizeof(r->err), "%s", why ? why : "disconnected");
    r->up = 0;
    if (r->was_up || r->st.reconnects == 0) {
        char q[300];
        sophia_warn("redis", "msg=\"L2 down, retrying with backoff\" url=%s err=%s",
                    r->safe_url, sophia_log_quote(r->err, q, sizeof(q)));
    }
    r->was_up = 0;
    struct timeval tv = sophia_timeval(sophia_backoff_next(&r->backoff));
    evtimer_add(r->retry_ev, &tv);
}

/* Starts the tick unless it runs; the idle count restarts either way. */
static void arm_watchdog(sophia_redis *r)
{
    r->idle_ticks = 0;
    if (evtimer_pending(r->watchdog_ev, NULL))
        return;
    struct timeval tv = {0, REDIS_TICK_MS * 1000};
    evtimer_add(r->watchdog_ev, &tv);
}

/* ------------------------------------------------------- event adapter */

typedef struct redis_events {
    sophia_redis *r;
    redisAsyncContext *ac;
    struct event *rev;   /* persistent */
    struct event *wev;   /* one-shot: connecting, or the socket was full */
    struct event *flush; /* deferred write at the end of this loop pass */
    int reading;
} redis_events;

static void ev_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redis_events *e = arg;
    redisAsyncHandleRead(e->ac); /* may free e */
}

/* Both write paths: `in_write` (on r, which outlives e) tells addWrite
 * that hiredis could not write everything, so the socket is full. */
static void ev_write(redis_events *e)
{
    sophia_redis *r = e->r;
    r->in_write = 1;
    redisAsyncHandleWrite(e->ac); /* may free e */
    r->in_write = 0;
}

static void ev_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ev_write(arg);
}

static void ev_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redis_events *e = arg;
    e->r->flush_pending = 0;
    ev_write(e);
}

static void ev_add_read(void *priv)
{
    redis_events *e = priv;
    if (!e->reading && event_add(e->rev, NULL) == 0)
        e->reading = 1;
}

static void ev_del_read(void *priv)
{
    redis_events *e = priv;
    if (e->reading)
        event_del(e->rev);
    e->reading = 0;
}

static void ev_add_write(void *priv)
{
    redis_events *e = priv;
    sophia_redis *r = e->r;
    if (r->in_write || !(e->ac->c.flags & REDIS_CONNECTED)) {
        event_add(e->wev, NULL);
    } else if (!r->flush_pending) {
        r->flush_pending = 1;
        event_active(e->flush, EV_TIMEOUT, 0);
    }
}

static void ev_del_write(void *priv)
{
    redis_events *e = priv;
    event_del(e->wev);
}

static void ev_cleanup(void *priv)
{
    redis_events *e = priv;
    e->r->flush_pending = 0;
    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    free(e);
}

static int ev_attach(sophia_redis *r, redisAsyncContext *ac)
{
    redis_events *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    e->r = r;
    e->ac = ac;
    evutil_socket_t fd = ac->c.fd;
    e->rev = event_new(r->base, fd, EV_READ | EV_PERSIST, ev_on_read, e);
    e->wev = event_new(r->base, fd, EV_WRITE, ev_on_write, e);
    e->flush = event_new(r->base, -1, 0, ev_on_flush, e);
    if (!e->rev || !e->wev || !e->flush) {
        if (e->rev)
            event_free(e->rev);
        if (e->wev)
            event_free(e->wev);
        if (e->flush)
            event_free(e->flush);
        free(e);
        return -1;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = e;
    ev_add_read(e);
    event_add(e->wev, NULL); /* writable = the connect finished */
    return 0;
}

/* Finished requests are kept for reuse (malloc/free per command showed
 * in the L2 profile); `arg` links the free list. */
static void req_put(sophia_redis *r, redis_req *q)
{
    if (r->nfree >= REDIS_FREE_REQS) {
        free(q);
        return;
    }
    q->arg = r->free_reqs;
    r->free_reqs = q;
    r->nfree++;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redis_req *q = privdata;
    sophia_redis *r = q->r;
    if (r->st.pending)
        r->st.pending--;
    r->idle_ticks = 0; /* progress: the tick stops itself when idle */
    redisReply *rep = reply;
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        r->st.errors++;
    if (q->cb)
        q->cb(q->arg, rep);
    req_put(r, q);
}

/* AUTH or SELECT refused: remember why (the disconnect reports it) and
 * drop the connection; hiredis closes it once the pending replies are in. */
static void handshake_refused(sophia_redis *r, const char *cmd,
                              const redisReply *reply)
{
    if (!r->refused[0])
        snprintf(r->refused, sizeof(r->refused), "%s refused: %s%s", cmd,
                 reply->str ? reply->str : "error",
                 !r->url.password && reply->str &&
                         !strncmp(reply->str, "NOAUTH", 6)
                     ? " (the URL has no password: redis://:PASSWORD@HOST "
                       "or redis://USER:PASSWORD@HOST)"
                     : "");
    if (r->ac)
        redisAsyncDisconnect(r->ac);
}

static void on_auth(void *arg, redisReply *reply)
{
    sophia_redis *r = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        handshake_refused(r, "AUTH", reply);
}

static void on_select(void *arg, redisReply *reply)
{
    sophia_redis *r = arg;
    if (!reply)
        return; /* the disconnect path reports it */
    if (reply->type == REDIS_REPLY_ERROR || r->refused[0]) {
        handshake_refused(r, "SELECT", reply);
        return;
    }
    r->up = 1;
    sophia_backoff_reset(&r->backoff);
    r->err[0] = '\0';
    if (!r->was_up)
        sophia_info("redis", "msg=\"L2 up\" url=%s", r->safe_url);
    r->was_up = 1;
}

/* One handshake command; 0 or -1. */
static int send_handshake(sophia_redis *r, sophia_redis_cb cb, int argc,
                          const char **argv)
{
    size_t lens[3];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    redis_req *q = calloc(1, sizeof(*q));
    if (!q)
        return -1;
    q->r = r;
    q->cb = cb;
    q->arg = r;
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, lens) != REDIS_OK) {
        free(q);
        return -1;
    }
    r->st.pending++;
    return 0;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sophia_redis *r = ac->data;
    if (status != REDIS_OK) {
        r->ac = NULL; /* hiredis frees the context after this callback */
        set_down(r, ac->errstr);
        return;
    }
    /* AUTH first, then SELECT, which doubles as the first ping: up only
     * once the server answers it. */
    r->refused[0] = '\0';
    char db[16];
    snprintf(db, sizeof(db), "%d", r->url.db);
    const char *auth[3] = {"AUTH", r->url.user ? r->url.user : r->url.password,
                           r->url.password};
    const char *sel[2] = {"SELECT", db};
    if ((r->url.password &&
         send_handshake(r, on_auth, r->url.user ? 3 : 2, auth) < 0) ||
        send_handshake(r, on_select, 2, sel) < 0) {
        snprintf(r->refused, sizeof(r->refused), "out of memory");
        redisAsyncDisconnect(r->ac); /* retried with backoff */
        return;
    }
    arm_watchdog(r);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    sophia_redis *r = ac->data;
    r->ac = NULL;
    evtimer_del(r->watchdog_ev);
    r->st.pending = 0;
    if (!r->retry_ev) /* freeing */
        return;
    set_down(r, r->refused[0]            ? r->refused
                : status == REDIS_OK ? "connection closed"
                                     : ac->errstr);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_redis *r = arg;
    r->st.reconnects++;
    redis_connect(r);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_redis *r = arg;
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    int waiting = r->st.pending > 0 || !(ac->c.flags & REDIS_CONNECTED);
    if (!waiting)
        return; /* idle: re-armed by the next command */
    if (++r->idle_ticks < REDIS_IDLE_TICKS) {
        struct timeval tv = {0, REDIS_TICK_MS * 1000};
        evtimer_add(r->watchdog_ev, &tv);
        return;
    }
    /* A server that accepts but never answers. redisAsyncDisconnect would
     * wait for the replies, so free: pending callbacks get NULL, and a
     * connected context reports through on_disconnect. */
    int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
    if (!connected)
        r->ac = NULL;
    redisAsyncFree(ac);
    if (!connected)
        set_down(r, "connect timed out");
}

static void redis_connect(sophia_redis *r)
{
    r->ac = redisAsyncConnect(r->url.host, r->url.port);
    if (!r->ac || r->ac->err) {
        const char *e = r->ac ? r->ac->errstr : "out of memory";
        char why[256];
        snprintf(why, sizeof(why), "%s", e);
        if (r->ac)
            redisAsyncFree(r->ac);
        r->ac = NULL;
        set_down(r, why);
        return;
    }
    r->ac->data = r;
    r->ac->c.reader->fn = sophia_redis_reply_fns(); /* one arena a reply */
    if (ev_attach(r, r->ac) < 0) {
        redisAsyncFree(r->ac);
        r->ac = NULL;
        set_down(r, "out of memory");
        return;
    }
    redisAsyncSetConnectCallback(r->ac, on_connect);
    redisAsyncSetDisconnectCallback(r->ac, on_disconnect);
    arm_watchdog(r); /* bounds the connect itself */
}

sophia_redis *sophia_redis_new(struct event_base *base, const char *url)
{
    sophia_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    char why[200];
    if (sophia_redis_url_parse(url, &r->url, why, sizeof(why)) < 0) {
        char safe[256];
        sophia_error("redis", "msg=\"bad Redis URL\" url=%s err=\"%s\"",
                     sophia_redis_url_redact(url, safe, sizeof(safe)), why);
        free(r);
        return NULL;
    }
    sophia_redis_url_redact(url, r->safe_url, sizeof(r->safe_url));
    r->base = base;
    sophia_backoff_init(&r->backoff, REDIS_BACKOFF_MIN_S, REDIS_BACKOFF_MAX_S,
                        (unsigned long long)(uintptr_t)r);
    r->retry_ev = evtimer_new(base, on_retry, r);
    r->watchdog_ev = evtimer_new(base, on_watchdog, r);
    snprintf(r->err, sizeof(r->err), "connecting");
    redis_connect(r);
    return r;
}

void sophia_redis_free(sophia_redis *r)
{
    if (!r)
        return;
    event_free(r->retry_ev);
    r->retry_ev = NULL;
    if (r->ac)
        redisAsyncFree(r->ac); /* fails pending callbacks with NULL */
    event_free(r->watchdog_ev);
    while (r->free_reqs) {
        redis_req *q = r->free_reqs;
        r->free_reqs = (redis_req *)q->arg;
        free(q);
    }
    sophia_redis_url_clear(&r->url);
    free(r);
}

int sophia_redis_up(const sophia_redis *r)
{
    return r && r->up;
}

const char *sophia_redis_last_error(const sophia_redis *r)
{
    return r ? r->err : "disabled";
}

/* Decimal digits of v, written backwards from `end`; returns the start. */
static char *fmt_u(char *end, size_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* "<c><v>\r\n" at w; returns the end. */
static char *fmt_head(char *w, char c, size_t v)
{
    char num[24], *s = fmt_u(num + sizeof(num), v);
    size_t n = (size_t)(num + sizeof(num) - s);
    *w++ = c;
    memcpy(w, s, n);
    w += n;
    *w++ = '\r';
    *w++ = '\n';
    return w;
}

/* The RESP encoding of argv: hiredis' own formatter (sdscatfmt per
 * argument into a fresh sds) cost more than the rest of a GET together. */
static char *format_command(int argc, const char **argv,
                            const size_t *argvlen, char *stack, size_t cap,
                            size_t *len)
{
    size_t n = 16;
    for (int i = 0; i < argc; i++)
        n += argvlen[i] + 24 + 2;
    char *buf = n <= cap ? stack : malloc(n), *w = buf;
    if (!buf)
        return NULL;
    w = fmt_head(w, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        w = fmt_head(w, '$', argvlen[i]);
        memcpy(w, argv[i], argvlen[i]);
        w += argvlen[i];
        *w++ = '\r';
        *w++ = '\n';
    }
    *len = (size_t)(w - buf);
    return buf;
}

static redis_req *req_get(sophia_redis *r)
{
    redis_req *q = r->free_reqs;
    if (q) {
        r->free_reqs = (redis_req *)q->arg;
        r->nfree--;
        return q;
    }
    return malloc(sizeof(*q));
}

int sophia_redis_command(sophia_redis *r, sophia_redis_cb cb, void *arg,
                         int argc, const char **argv, const size_t *argvlen)
{
    if (!r->up || !r->ac)
        return SOPHIA_EUNAVAIL;
    char stack[REDIS_FMT_STACK];
    size_t len;
    char *cmd = format_command(argc, argv, argvlen, stack, sizeof(stack),
                               &len);
    redis_req *q = cmd ? req_get(r) : NULL;
    if (!q) {
        if (cmd != stack)
            free(cmd);
        return SOPHIA_ENOMEM;
    }
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    int rc = redisAsyncFormattedCommand(r->ac, on_reply, q, cmd, len);
    if (cmd != stack)
        free(cmd);
    if (rc != REDIS_OK) {
        free(q);
        return SOPHIA_EUNAVAIL;
    }
    if (r->st.pending++ == 0)
        arm_watchdog(r);
    r->st.commands++;
    return 0;
}

void sophia_redis_flush(sophia_redis *r)
{
    if (!r || !r->up || !r->ac || !(r->ac->c.flags & REDIS_CONNECTED))
        return;
    r->in_write = 1; /* a full socket falls back to EV_WRITE (ev_add_write) */
    redisAsyncHandleWrite(r->ac);
    r->in_write = 0;
}

void sophia_redis_get_stats(const sophia_redis *r, sophia_redis_stats *out)
{
    *out = r->st;
    out->up = r->up;
}

const char *sophia_redis_safe_url(const sophia_redis *r)
{
    return r ? r->safe_url : "";
}
