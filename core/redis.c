/*
 * redis - see redis.h.
 *
 * Every command carries a small request record so a disconnect or timeout
 * can answer its callback exactly once: hiredis calls pending callbacks
 * with a NULL reply when the context is freed, and the request's `done`
 * flag keeps a late answer from firing twice.
 */
#include "redis.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "log.h"

#define REDIS_TIMEOUT_MS 2000
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 5000

struct sophia_redis {
    struct event_base *base;
    redisAsyncContext *ac;
    char *host;
    int port;
    int db;
    int up;
    int was_up; /* for logging state changes once */
    int backoff_ms;
    struct event *retry_ev;
    struct event *watchdog_ev; /* fires when the oldest command is overdue */
    char err[256];
    sophia_redis_stats st;
};

typedef struct redis_req {
    sophia_redis *r;
    sophia_redis_cb cb;
    void *arg;
} redis_req;

static void redis_connect(sophia_redis *r);

int sophia_redis_parse_url(const char *url, char **host, int *port, int *db)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0)
        return -1;
    p += 8;
    const char *at = strchr(p, '@'); /* user:pass@ is not supported yet */
    if (at)
        return -1;
    size_t hl = strcspn(p, ":/");
    if (hl == 0)
        return -1;
    *port = 6379;
    *db = 0;
    const char *rest = p + hl;
    if (*rest == ':') {
        char *end;
        long v = strtol(rest + 1, &end, 10);
        if (v < 1 || v > 65535 || (*end && *end != '/'))
            return -1;
        *port = (int)v;
        rest = end;
    }
    if (*rest == '/' && rest[1]) {
        char *end;
        long v = strtol(rest + 1, &end, 10);
        if (v < 0 || *end)
            return -1;
        *db = (int)v;
    }
    *host = strndup(p, hl);
    return *host ? 0 : -1;
}

static void set_down(sophia_redis *r, const char *why)
{
    snprintf(r->err, sizeof(r->err), "%s", why ? why : "disconnected");
    r->up = 0;
    if (r->was_up || r->st.reconnects == 0) {
        char q[300];
        sophia_warn("redis", "msg=\"L2 down, retrying with backoff\" addr=%s:%d err=%s",
                    r->host, r->port, sophia_log_quote(r->err, q, sizeof(q)));
    }
    r->was_up = 0;
    struct timeval tv = {r->backoff_ms / 1000, (r->backoff_ms % 1000) * 1000};
    evtimer_add(r->retry_ev, &tv);
    r->backoff_ms = r->backoff_ms * 2 > REDIS_BACKOFF_MAX_MS
                        ? REDIS_BACKOFF_MAX_MS
                        : r->backoff_ms * 2;
}

static void arm_watchdog(sophia_redis *r)
{
    struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(r->watchdog_ev, &tv);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redis_req *q = privdata;
    sophia_redis *r = q->r;
    if (r->st.pending)
        r->st.pending--;
    if (r->st.pending == 0)
        evtimer_del(r->watchdog_ev);
    else
        arm_watchdog(r); /* progress: give the rest a fresh window */
    redisReply *rep = reply;
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        r->st.errors++;
    if (q->cb)
        q->cb(q->arg, rep);
    free(q);
}

static void on_select(void *arg, redisReply *reply)
{
    sophia_redis *r = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        return; /* the disconnect path reports it */
    r->up = 1;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
    r->err[0] = '\0';
    if (!r->was_up)
        sophia_info("redis", "msg=\"L2 up\" addr=%s:%d db=%d", r->host, r->port,
                    r->db);
    r->was_up = 1;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sophia_redis *r = ac->data;
    if (status != REDIS_OK) {
        r->ac = NULL; /* hiredis frees the context after this callback */
        set_down(r, ac->errstr);
        return;
    }
    /* Up only once the server answers: SELECT doubles as the first ping. */
    char db[16];
    snprintf(db, sizeof(db), "%d", r->db);
    const char *argv[2] = {"SELECT", db};
    size_t lens[2] = {6, strlen(db)};
    redis_req *q = calloc(1, sizeof(*q));
    if (!q)
        return;
    q->r = r;
    q->cb = on_select;
    q->arg = r;
    if (redisAsyncCommandArgv(r->ac, on_reply, q, 2, argv, lens) != REDIS_OK) {
        free(q);
        return;
    }
    r->st.pending++;
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
    set_down(r, status == REDIS_OK ? "connection closed" : ac->errstr);
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
    r->ac = redisAsyncConnect(r->host, r->port);
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
    redisLibeventAttach(r->ac, r->base);
    redisAsyncSetConnectCallback(r->ac, on_connect);
    redisAsyncSetDisconnectCallback(r->ac, on_disconnect);
    arm_watchdog(r); /* bounds the connect itself */
}

sophia_redis *sophia_redis_new(struct event_base *base, const char *url)
{
    sophia_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (sophia_redis_parse_url(url, &r->host, &r->port, &r->db) < 0) {
        free(r);
        return NULL;
    }
    r->base = base;
    r->backoff_ms = REDIS_BACKOFF_MIN_MS;
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
    free(r->host);
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

int sophia_redis_command(sophia_redis *r, sophia_redis_cb cb, void *arg,
                         int argc, const char **argv, const size_t *argvlen)
{
    if (!r->up || !r->ac)
        return SOPHIA_EUNAVAIL;
    redis_req *q = calloc(1, sizeof(*q));
    if (!q)
        return SOPHIA_ENOMEM;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    if (redisAsyncCommandArgv(r->ac, on_reply, q, argc, argv, argvlen) !=
        REDIS_OK) {
        free(q);
        return SOPHIA_EUNAVAIL;
    }
    if (r->st.pending++ == 0)
        arm_watchdog(r);
    r->st.commands++;
    return 0;
}

void sophia_redis_get_stats(const sophia_redis *r, sophia_redis_stats *out)
{
    *out = r->st;
    out->up = r->up;
}
