/*
 * ws_client - one WebSocket connection as the router sees it: its
 * outbound queue (a ring of shared message references, grown on demand
 * up to websocket.max_queue), coalescing past coalesce_at, the close of a
 * slow consumer, the flush that writes every client given messages in one
 * loop turn with one send each, the lws callbacks (open, receive,
 * writeable, pong, closed) and the health tick (pings, pong deadlines,
 * auth deadlines, token expiry).
 *
 * Why the flush, the gather buffer and the re-arm: see "Sending" in ws.h
 * and the comments at on_rearm and ws_on_flush; they work around lws 4.1
 * on libuv, whose writeable requests can be lost or wait for an
 * unrelated event.
 */
#include "ws/ws.h"

#include <event2/event.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/dict.h"
#include "lib/jsonw.h"
#include "ws/ws_deflate.h"
#include "ws/ws_history.h"
#include "ws/ws_msgpack.h"
#include "ws/ws_priv.h"

void ws_kick(sophia_ws_router *r)
{
    r->kick_owed = 0;
    if (r->loop)
        sophia_loop_kick(r->loop);
}

void ws_kick_if_owed(sophia_ws_router *r)
{
    if (r->kick_owed)
        ws_kick(r);
}

/* Every WRITEABLE request goes through here, so the kick it needs is
 * owed (libuv applies lws's POLLOUT only in its next pass). */
static void ask_writeable(sophia_ws_client *c)
{
    lws_callback_on_writable(c->wsi);
    c->r->kick_owed = 1;
}

/* lws 4.1 on libuv re-arms its timer for a new timeout only after it
 * serviced a socket; with HTTP served outside lws that may be never, so
 * wake its service pipe to make a close deadline count. */
static void close_deadline(struct lws *wsi, int secs)
{
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, secs);
    lws_cancel_service(lws_get_context(wsi));
}

/* ------------------------------------------------------------ messages */

static ws_msg *msg_from_json(json_t *obj)
{
    size_t len;
    char *s = sophia_json_encode(obj, &len);
    if (!s)
        return NULL;
    ws_msg *m = ws_msg_new(s, len, LWS_PRE);
    free(s);
    return m;
}

/* Writes the close frame ourselves, then drops the connection: with the
 * libuv event-lib, lws 4.1 ends a connection whose callback returned -1
 * with a bare TCP shutdown, ignoring lws_close_reason() (seen with strace),
 * and the client would see 1006 instead of our code. */
static int send_close(struct lws *wsi, int code, const char *reason)
{
    unsigned char buf[LWS_PRE + 125];
    size_t n = reason ? strlen(reason) : 0;
    if (n > 123)
        n = 123;
    buf[LWS_PRE] = (unsigned char)(code >> 8);
    buf[LWS_PRE + 1] = (unsigned char)(code & 0xff);
    if (n)
        memcpy(buf + LWS_PRE + 2, reason, n);
    lws_write(wsi, buf + LWS_PRE, n + 2, WS_WRITE_CLOSE);
    return -1;
}

/* ------------------------------------------------------------- queues */

void ws_client_request_close(sophia_ws_client *c, int code,
                             const char *reason)
{
    if (c->close_code)
        return;
    c->close_code = code;
    c->close_reason = reason;
    if (!c->wsi) /* detached (sophia_ws_feed): nothing to send it on */
        return;
    ask_writeable(c);
    /* A peer that stopped reading never makes us writeable again: lws
     * drops the connection after 2 s if the close frame did not go. */
    close_deadline(c->wsi, 2);
    ws_kick(c->r);
}

/* Every caller's i is below qlen, or is qlen with room left, so below
 * qcap, as qhead is: one subtraction wraps the sum, where a division
 * did for each message queued, written and popped. */
static ws_msg **qslot(sophia_ws_client *c, size_t i)
{
    size_t k = c->qhead + i;
    return &c->q[k < c->qcap ? k : k - c->qcap];
}

static void coalesce_reset(sophia_ws_client *c)
{
    if (c->coalesce && sophia_dict_size(c->coalesce)) {
        sophia_dict_free(c->coalesce, NULL);
        c->coalesce = NULL;
    }
}

static void queue_pop(sophia_ws_client *c)
{
    ws_msg **s = qslot(c, 0);
    if (*s)
        ws_msg_unref(*s);
    else
        c->tombs--;
    *s = NULL;
    if (++c->qhead == c->qcap)
        c->qhead = 0;
    c->qbase++;
    c->qlen--;
}

static void queue_clear(sophia_ws_client *c)
{
    while (c->qlen)
        queue_pop(c);
    coalesce_reset(c);
}

static void coalesce_note(sophia_ws_client *c, const ws_msg *m, uint64_t abs)
{
    if (!c->coalesce && !(c->coalesce = sophia_dict_new()))
        return;
    sophia_dict_set(c->coalesce, m->ckey, (void *)(uintptr_t)(abs + 1));
}

/* Squeezes the tombstones out; absolute indexes change, so the coalescing
 * index is rebuilt. Runs only when the ring is full of them. */
static void queue_compact(sophia_ws_client *c)
{
    size_t w = 0, n = c->qlen;
    coalesce_reset(c);
    for (size_t i = 0; i < n; i++) {
        ws_msg *m = *qslot(c, i);
        *qslot(c, i) = NULL;
        if (!m)
            continue;
        *qslot(c, w) = m;
        if (m->ckey)
            coalesce_note(c, m, c->qbase + w);
        w++;
    }
    c->qlen = w;
    c->tombs = 0;
}

/* Past the high-water mark, the queued update of the same topic+metric
 * (if still queued) gives way to `m`. */
static void coalesce_old(sophia_ws_client *c, const ws_msg *m)
{
    uintptr_t v = c->coalesce ? (uintptr_t)sophia_dict_get(c->coalesce, m->ckey)
                              : 0;
    if (!v)
        return;
    uint64_t abs = v - 1;
    if (abs < c->qbase || abs >= c->qbase + c->qlen)
        return;
    ws_msg **s = qslot(c, (size_t)(abs - c->qbase));
    if (!*s || !(*s)->ckey || strcmp((*s)->ckey, m->ckey) != 0)
        return;
    ws_msg_unref(*s);
    *s = NULL;
    c->tombs++;
    c->r->st.coalesced++;
}

void ws_client_drop_slow(sophia_ws_client *c)
{
    c->r->st.dropped += c->qlen - c->tombs + 1;
    c->r->st.slow_closed++;
    queue_clear(c);
    ws_client_request_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                            "send queue full");
}

/* Doubles the ring (most clients never queue more than a few messages,
 * so they never pay for max_queue slots). */
static int queue_grow(sophia_ws_client *c)
{
    size_t cap = c->qcap * 2 > c->r->max_queue ? c->r->max_queue : c->qcap * 2;
    ws_msg **q = calloc(cap, sizeof(*q));
    if (!q)
        return -1;
    for (size_t i = 0; i < c->qlen; i++)
        q[i] = *qslot(c, i);
    free(c->q);
    c->q = q;
    c->qcap = cap;
    c->qhead = 0;
    return 0;
}

static void rearm_later(sophia_ws_client *c);
static void mark_dirty(sophia_ws_client *c);
static void client_flush(sophia_ws_client *c);

/* Takes a reference to `m` when queued. Nothing is written here: the
 * client is listed for the flush that runs once the current loop callback
 * (a whole ingest batch, say) is done, so every message a client got in
 * that turn leaves in one send (see ws_on_flush). */
void ws_client_send(sophia_ws_client *c, ws_msg *m)
{
    sophia_ws_router *r = c->r;
    if (c->close_code) /* closing: nothing new goes in */
        return;
    if (c->msgpack && !(m = ws_msgpack_alt(m, &r->mpack, LWS_PRE)))
        return; /* out of memory: as for a failed render */
    if (c->deflate && r->deflater)
        m = ws_deflate_twin(m, r->deflater, LWS_PRE, r->compression_min);
    int co = m->ckey && c->qlen >= r->coalesce_at;
    if (co)
        coalesce_old(c, m);
    if (c->qlen >= r->max_queue && c->tombs)
        queue_compact(c);
    if (c->qlen == c->qcap && c->qcap < r->max_queue && queue_grow(c) < 0)
        return;
    if (c->qlen >= r->max_queue || c->qlen == c->qcap) {
        ws_client_drop_slow(c);
        return;
    }
    m->refs++;
    *qslot(c, c->qlen) = m;
    if (co)
        coalesce_note(c, m, c->qbase + c->qlen);
    c->qlen++;
    mark_dirty(c);
    if ((c->qlen >= WS_FLUSH_AT || c->qlen * 2 >= r->coalesce_at) &&
        c->wsi && r->flush_ev && !lws_partial_buffered(c->wsi))
        client_flush(c);
}

void ws_client_send_json(sophia_ws_client *c, json_t *obj)
{
    ws_msg *m = c->msgpack ? ws_msgpack_from_json(obj, &c->r->mpack, LWS_PRE)
                           : msg_from_json(obj);
    json_decref(obj);
    if (!m)
        return;
    ws_client_send(c, m);
    ws_msg_unref(m);
    ws_kick(c->r);
}

void ws_client_error(sophia_ws_client *c, const char *id, const char *code,
                     const char *msg)
{
    json_t *e = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "code",
                          code, "message", msg);
    if (id)
        json_object_set_new(e, "id", json_string(id));
    ws_client_send_json(c, e);
}

sophia_ws_client *ws_client_by_id(sophia_ws_router *r, uint64_t id)
{
    char k[24];
    if (!r)
        return NULL;
    snprintf(k, sizeof(k), "%" PRIu64, id);
    return sophia_dict_get(r->by_id, k);
}

/* ------------------------------------------------------ lws callbacks */

static void client_index(sophia_ws_router *r, sophia_ws_client *c)
{
    char k[24];
    c->id = ++r->next_id;
    snprintf(k, sizeof(k), "%" PRIu64, c->id);
    sophia_dict_set(r->by_id, k, c);
    c->next = r->clients;
    if (r->clients)
        r->clients->prev = c;
    r->clients = c;
}

sophia_ws_client *sophia_ws_open(sophia_ws_router *r, struct lws *wsi)
{
    sophia_ws_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->qcap = r->max_queue < 16 ? r->max_queue : 16;
    c->q = calloc(c->qcap, sizeof(*c->q));
    if (!c->q) {
        free(c);
        return NULL;
    }
    c->r = r;
    c->wsi = wsi;
    c->last_rx_us = sophia_now_mono_us();
    if (ws_auth_enabled(r) && r->pending_wsi == wsi && r->pending_claims) {
        ws_client_set_claims(c, r->pending_claims);
        r->pending_claims = NULL;
    } else if (ws_auth_enabled(r)) {
        c->auth_deadline_us = c->last_rx_us + r->auth_us;
    }
    r->pending_wsi = NULL;
    client_index(r, c);
    r->st.connections++;
    r->st.connections_total++;
    return c;
}

int sophia_ws_receive(sophia_ws_client *c, const void *in, size_t len)
{
    c->last_rx_us = sophia_now_mono_us();
    if (c->rx_len + len > c->r->max_msg)
        return send_close(c->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                          "message too large (websocket.max_message)");
    char *rx = realloc(c->rx, c->rx_len + len + 1);
    if (!rx)
        return -1;
    c->rx = rx;
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(c->wsi) || lws_remaining_packet_payload(c->wsi))
        return 0;
    if (c->msgpack && lws_frame_is_binary(c->wsi))
        ws_on_binary(c, c->rx, c->rx_len);
    else
        ws_on_message(c, c->rx, c->rx_len);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    return 0;
}

void sophia_ws_feed(sophia_ws_client *c, const char *text, size_t len)
{
    ws_on_message(c, text, len);
}

void sophia_ws_set_msgpack(sophia_ws_client *c)
{
    if (!c->msgpack)
        c->r->st.connections_msgpack++;
    c->msgpack = 1;
}

int sophia_ws_compression(const sophia_ws_router *r)
{
    return r && r->compression;
}

void sophia_ws_set_deflate(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    if (!r->deflater && !(r->deflater = ws_deflater_new()))
        return; /* frames without RSV1 are still valid on the connection */
    if (!c->deflate)
        r->st.connections_deflate++;
    c->deflate = 1;
}

size_t sophia_ws_queued(const sophia_ws_client *c)
{
    return c->qlen - c->tombs;
}

int sophia_ws_close_code(const sophia_ws_client *c)
{
    return c->close_code;
}

void sophia_ws_pong(sophia_ws_client *c)
{
    c->last_rx_us = sophia_now_mono_us();
    c->ping_sent_us = 0;
}

static int write_ping(sophia_ws_client *c)
{
    unsigned char buf[LWS_PRE + 4];
    c->want_ping = 0;
    c->ping_sent_us = sophia_now_mono_us();
    c->r->st.pings++;
    memcpy(buf + LWS_PRE, "sph", 3); /* lws 4.1 drops empty pings */
    return lws_write(c->wsi, buf + LWS_PRE, 3, LWS_WRITE_PING) < 0 ? -1 : 0;
}

/* After a short write lws buffers the rest and flushes it on POLLOUT,
 * but with 4.1 on libuv that flush can consume our pending writeable
 * request, and the queue would wait for an unrelated event. So a client
 * whose write was cut short asks again 2 ms later. Ids, not pointers:
 * the client may close meanwhile. */
static void on_rearm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    size_t n = r->nrearm;
    r->nrearm = 0;
    for (size_t i = 0; i < n; i++) {
        char k[24];
        snprintf(k, sizeof(k), "%" PRIu64, r->rearm[i]);
        sophia_ws_client *c = sophia_dict_get(r->by_id, k);
        if (!c)
            continue;
        c->rearm_pending = 0;
        if (c->qlen || c->close_code)
            ask_writeable(c);
    }
    ws_kick(r);
}

static void rearm_later(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    if (c->rearm_pending || !r->loop)
        return;
    if (!r->rearm_ev &&
        !(r->rearm_ev = evtimer_new(sophia_loop_base(r->loop), on_rearm, r)))
        return;
    if (r->nrearm == r->rearm_cap) {
        size_t cap = r->rearm_cap ? r->rearm_cap * 2 : 64;
        uint64_t *v = realloc(r->rearm, cap * sizeof(*v));
        if (!v)
            return;
        r->rearm = v;
        r->rearm_cap = cap;
    }
    r->rearm[r->nrearm++] = c->id;
    c->rearm_pending = 1;
    if (!evtimer_pending(r->rearm_ev, NULL)) {
        struct timeval tv = {0, 2000};
        evtimer_add(r->rearm_ev, &tv);
    }
}

/* One send of the head of the queue: a lone message straight from its
 * buffer (its frame header is already in place, ws_history.h), several
 * copied back to back into the router's gather buffer - frames delimit
 * themselves, so the peer still sees separate messages. lws_write with
 * LWS_WRITE_RAW adds no framing; what the socket does not take lws keeps
 * in its buflist_out and flushes on POLLOUT, and nothing more may be
 * written until it has (lws_partial_buffered). -1: the socket failed. */
static int queue_write(sophia_ws_client *c)
{
    unsigned char *out = c->r->gather + LWS_PRE;
    size_t len = 0, n, frames = 0;
    while (c->qlen && !*qslot(c, 0))
        queue_pop(c); /* tombstones */
    if (!c->qlen)
        return 0;
    const unsigned char *f = ws_msg_frame(*qslot(c, 0), LWS_PRE, &n);
    if (c->qlen == 1 || n >= WS_GATHER_MAX) {
        int w = lws_write(c->wsi, (unsigned char *)f, n, LWS_WRITE_RAW);
        if (lws_partial_buffered(c->wsi))
            c->r->kick_owed = 1; /* lws asked libuv for POLLOUT */
        queue_pop(c);
        c->r->st.messages_out++;
        return w < (int)n ? -1 : 0;
    }
    while (c->qlen) {
        ws_msg *m = *qslot(c, 0);
        if (m) {
            f = ws_msg_frame(m, LWS_PRE, &n);
            if (len + n > WS_GATHER_MAX)
                break;
            memcpy(out + len, f, n);
            len += n;
            frames++;
        }
        queue_pop(c);
    }
    c->r->st.messages_out += frames;
    int w = lws_write(c->wsi, out, len, LWS_WRITE_RAW);
    if (lws_partial_buffered(c->wsi))
        c->r->kick_owed = 1;
    return w < (int)len ? -1 : 0;
}

/* Sends until the queue is empty, the socket is full (lws buffered a
 * remainder) or the turn's share is used. */
static int queue_drain(sophia_ws_client *c)
{
    for (int k = 0; k < WS_GATHERS_PER_TURN && c->qlen &&
                    !lws_partial_buffered(c->wsi); k++)
        if (queue_write(c) < 0)
            return -1;
    return 0;
}

/* The rest waits for WRITEABLE; see on_rearm for the short-write case. */
static void want_writeable(sophia_ws_client *c)
{
    ask_writeable(c);
    if (lws_partial_buffered(c->wsi))
        rearm_later(c);
}

/* A client whose messages are written from the flush, outside any lws
 * callback: it cannot be closed from here, so a failed socket is marked
 * and lws is asked for the WRITEABLE callback that closes it. */
static void client_flush(sophia_ws_client *c)
{
    if (!c->qlen || !c->wsi || !c->r->flush_ev)
        return; /* detached, or no loop: WRITEABLE only */
    if (c->close_code || c->want_ping || lws_partial_buffered(c->wsi)) {
        want_writeable(c);
        return;
    }
    if (queue_drain(c) < 0) {
        c->close_code = 1006;
        c->kill = 1; /* nothing more can be written */
        ask_writeable(c);
        close_deadline(c->wsi, 1);
        return;
    }
    if (c->qlen)
        want_writeable(c);
}

/* Runs as an active libevent event, so after the callback that published
 * (an ingest batch, a Redis message, a request) and in the same loop
 * iteration: the batch's messages go out at once, one send per client,
 * without a WRITEABLE round trip (with lws on libuv that costs two
 * epoll_ctl calls and a wake-up per client). */
void ws_on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    if (!r->ndirty)
        return;
    int64_t t0 = sophia_now_mono_us();
    for (size_t i = 0; i < r->ndirty; i++) {
        sophia_ws_client *c = r->dirty[i];
        if (!c)
            continue; /* closed meanwhile */
        c->dirty_at = 0;
        client_flush(c);
    }
    r->ndirty = 0;
    r->flush_end_us = sophia_now_mono_us();
    r->flush_cost_us = r->flush_end_us - t0;
    ws_kick_if_owed(r);
}

static void schedule_flush(sophia_ws_router *r)
{
    int64_t wait = r->flush_end_us + r->flush_cost_us - sophia_now_mono_us();
    int backlog = r->backlog && r->backlog(r->backlog_arg);
    if (wait <= 0 || !backlog) {
        event_active(r->flush_ev, EV_TIMEOUT, 0);
        return;
    }
    if (wait > WS_FLUSH_DELAY_MAX_US)
        wait = WS_FLUSH_DELAY_MAX_US;
    struct timeval tv = {0, (suseconds_t)wait};
    event_add(r->flush_ev, &tv);
}

static void mark_dirty(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    if (c->dirty_at || !c->wsi) /* a detached client keeps its queue */
        return;
    if (!r->flush_ev) { /* no loop (tests): the WRITEABLE path only */
        ask_writeable(c);
        return;
    }
    if (r->ndirty == r->dirty_cap) {
        size_t cap = r->dirty_cap ? r->dirty_cap * 2 : 256;
        sophia_ws_client **v = realloc(r->dirty, cap * sizeof(*v));
        if (!v) {
            ask_writeable(c);
            return;
        }
        r->dirty = v;
        r->dirty_cap = cap;
    }
    r->dirty[r->ndirty++] = c;
    c->dirty_at = r->ndirty;
    if (r->ndirty == 1)
        schedule_flush(r);
}

int sophia_ws_writeable(sophia_ws_client *c)
{
    if (c->kill)
        return -1;
    /* Control frames too wait until lws has flushed a cut-short send:
     * they must not land in the middle of it. */
    if (lws_partial_buffered(c->wsi)) {
        want_writeable(c);
        ws_kick(c->r);
        return 0;
    }
    if (c->want_ping && !c->close_code && write_ping(c) < 0)
        return -1;
    /* Queued messages go out before a requested close (shutdown sends
     * what was published, then 1001); a slow client's queue was already
     * emptied when its close was requested. */
    if (queue_drain(c) < 0)
        return -1;
    if (c->qlen) {
        want_writeable(c);
        /* libuv applies the POLLOUT request only in its next run: without
         * a kick that run waits for an unrelated event (see loop.h). */
        ws_kick(c->r);
        return 0;
    }
    coalesce_reset(c);
    if (c->close_code)
        return send_close(c->wsi, c->close_code, c->close_reason);
    return 0;
}

void sophia_ws_closed(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    char k[24];
    while (c->nsubs)
        ws_client_unsubscribe(c, c->subs[c->nsubs - 1]);
    queue_clear(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    snprintf(k, sizeof(k), "%" PRIu64, c->id);
    sophia_dict_del(r->by_id, k);
    if (c->dirty_at)
        r->dirty[c->dirty_at - 1] = NULL;
    r->st.connections--;
    if (c->msgpack)
        r->st.connections_msgpack--;
    if (c->deflate)
        r->st.connections_deflate--;
    json_decref(c->claims);
    free(c->subs);
    free(c->q);
    free(c->rx);
    free(c);
}

/* --------------------------------------------------------------- health */

static void tick_client(sophia_ws_client *c, int64_t now)
{
    sophia_ws_router *r = c->r;
    if (c->close_code || !c->wsi)
        return;
    if (c->auth_deadline_us && !c->authed && now > c->auth_deadline_us) {
        r->st.auth_failures++;
        ws_client_request_close(c, WS_CLOSE_AUTH, "no auth message in time");
    } else if (c->exp && c->exp <= (double)(sophia_now_wall_us() / 1000000)) {
        r->st.auth_failures++;
        ws_client_request_close(c, WS_CLOSE_AUTH, "token expired");
    } else if (c->ping_sent_us && now - c->ping_sent_us > r->pong_us) {
        /* Dead: a close frame would not be read either. */
        r->st.dead_closed++;
        c->close_code = 1006;
        c->kill = 1;
        queue_clear(c);
        ask_writeable(c);
        close_deadline(c->wsi, 1);
    } else if (!c->ping_sent_us && now - c->last_rx_us > r->ping_us) {
        c->want_ping = 1;
        ask_writeable(c);
    } else if (c->qlen) {
        /* Safety net: after flushing a short write lws 4.1 can drop a
         * pending writeable request; a queue never stalls past a tick. */
        ask_writeable(c);
    }
}

void ws_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    int64_t now = sophia_now_mono_us();
    for (sophia_ws_client *c = r->clients; c; c = c->next)
        tick_client(c, now);
    ws_kick(r);
}
