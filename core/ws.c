/*
 * ws - see ws.h for the routing design.
 *
 * Lifetimes: a client exists from ESTABLISHED to CLOSED. Its subscriptions
 * are recorded twice, in the client (to clean up on close) and in the
 * router's indexes (to route), and both go together. Messages are
 * reference-counted: each queue slot holds one reference.
 */
#include "ws.h"

#include <libwebsockets.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dict.h"
#include "log.h"
#include "server.h"

#define WS_MAX_MESSAGE (64 * 1024)
#define WS_MAX_SUBS 256
#define WS_MAX_TOPIC 200
#define WS_WRITES_PER_TURN 16
/* lws's own opcode for close frames (private since 4.0, value stable;
 * lws_write() still frames it): see send_close(). */
#define WS_WRITE_CLOSE ((enum lws_write_protocol)4)

typedef struct ws_msg {
    int refs;
    size_t len;
    unsigned char buf[]; /* LWS_PRE headroom, then the text */
} ws_msg;

typedef struct ws_topic {
    uint64_t seq;
    sophia_ws_client **subs;
    size_t nsubs;
    size_t cap;
} ws_topic;

typedef struct ws_pattern {
    char *prefix; /* pattern without its trailing '*' */
    size_t len;
    sophia_ws_client *client;
} ws_pattern;

struct sophia_ws_client {
    sophia_ws_router *r;
    struct lws *wsi;
    sophia_ws_client *prev, *next; /* all clients, for close_all */
    char **subs;
    size_t nsubs;
    ws_msg **q; /* ring of max_queue slots */
    size_t qhead;
    size_t qlen;
    uint64_t stamp; /* last publish that reached this client */
    int close_code;
    const char *close_reason;
    char *rx;
    size_t rx_len;
};

struct sophia_ws_router {
    sophia_dict *topics; /* name -> ws_topic */
    ws_pattern *patterns;
    size_t npatterns;
    size_t pcap;
    sophia_ws_client *clients;
    size_t max_queue;
    uint64_t stamp;
    sophia_ws_stats st;
};

/* ------------------------------------------------------------ messages */

static ws_msg *msg_new(const char *text, size_t len)
{
    ws_msg *m = malloc(sizeof(*m) + LWS_PRE + len + 1);
    if (!m)
        return NULL;
    m->refs = 1;
    m->len = len;
    memcpy(m->buf + LWS_PRE, text, len + 1);
    return m;
}

static ws_msg *msg_from_json(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s)
        return NULL;
    ws_msg *m = msg_new(s, strlen(s));
    free(s);
    return m;
}

static void msg_unref(ws_msg *m)
{
    if (m && --m->refs == 0)
        free(m);
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

static void client_request_close(sophia_ws_client *c, int code,
                                 const char *reason)
{
    if (c->close_code)
        return;
    c->close_code = code;
    c->close_reason = reason;
    lws_callback_on_writable(c->wsi);
    sophia_loop_kick(sophia_srv->loop);
}

static void queue_clear(sophia_ws_client *c)
{
    for (; c->qlen; c->qlen--) {
        msg_unref(c->q[c->qhead]);
        c->qhead = (c->qhead + 1) % c->r->max_queue;
    }
}

/* Takes a reference to `m` when queued. */
static void client_send(sophia_ws_client *c, ws_msg *m)
{
    if (c->close_code) /* closing: nothing new goes in */
        return;
    if (c->qlen == c->r->max_queue) {
        c->r->st.dropped += c->qlen + 1;
        c->r->st.slow_closed++;
        queue_clear(c);
        client_request_close(c, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                             "send queue full");
        return;
    }
    m->refs++;
    c->q[(c->qhead + c->qlen) % c->r->max_queue] = m;
    if (c->qlen++ == 0)
        lws_callback_on_writable(c->wsi);
}

static void client_send_json(sophia_ws_client *c, json_t *obj)
{
    ws_msg *m = msg_from_json(obj);
    json_decref(obj);
    if (!m)
        return;
    client_send(c, m);
    msg_unref(m);
    sophia_loop_kick(sophia_srv->loop);
}

static void client_error(sophia_ws_client *c, const char *id, const char *code,
                         const char *msg)
{
    json_t *e = json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "code",
                          code, "message", msg);
    if (id)
        json_object_set_new(e, "id", json_string(id));
    client_send_json(c, e);
}

/* ------------------------------------------------------- subscriptions */

static int topic_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > WS_MAX_TOPIC)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= ' ' || t[i] == '"' || t[i] == '\\' ||
            (t[i] == '*' && i != n - 1))
            return 0;
    return 1;
}

static int is_pattern(const char *t)
{
    return t[strlen(t) - 1] == '*';
}

static ws_topic *topic_get(sophia_ws_router *r, const char *name, int create)
{
    ws_topic *t = sophia_dict_get(r->topics, name);
    if (!t && create) {
        t = calloc(1, sizeof(*t));
        if (t)
            sophia_dict_set(r->topics, name, t);
    }
    return t;
}

static int index_add(sophia_ws_router *r, sophia_ws_client *c, const char *s)
{
    if (is_pattern(s)) {
        if (r->npatterns == r->pcap) {
            size_t cap = r->pcap ? r->pcap * 2 : 16;
            ws_pattern *p = realloc(r->patterns, cap * sizeof(*p));
            if (!p)
                return -1;
            r->patterns = p;
            r->pcap = cap;
        }
        ws_pattern *p = &r->patterns[r->npatterns];
        p->prefix = strndup(s, strlen(s) - 1);
        if (!p->prefix)
            return -1;
        p->len = strlen(p->prefix);
        p->client = c;
        r->npatterns++;
        return 0;
    }
    ws_topic *t = topic_get(r, s, 1);
    if (!t)
        return -1;
    if (t->nsubs == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4;
        sophia_ws_client **v = realloc(t->subs, cap * sizeof(*v));
        if (!v)
            return -1;
        t->subs = v;
        t->cap = cap;
    }
    t->subs[t->nsubs++] = c;
    return 0;
}

static void index_del(sophia_ws_router *r, sophia_ws_client *c, const char *s)
{
    if (is_pattern(s)) {
        size_t n = strlen(s) - 1;
        for (size_t i = 0; i < r->npatterns; i++) {
            ws_pattern *p = &r->patterns[i];
            if (p->client == c && p->len == n && memcmp(p->prefix, s, n) == 0) {
                free(p->prefix);
                *p = r->patterns[--r->npatterns];
                return;
            }
        }
        return;
    }
    ws_topic *t = topic_get(r, s, 0);
    for (size_t i = 0; t && i < t->nsubs; i++)
        if (t->subs[i] == c) {
            t->subs[i] = t->subs[--t->nsubs];
            return;
        }
}

static ssize_t client_sub_find(const sophia_ws_client *c, const char *s)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (strcmp(c->subs[i], s) == 0)
            return (ssize_t)i;
    return -1;
}

static int client_subscribe(sophia_ws_client *c, const char *s)
{
    if (client_sub_find(c, s) >= 0)
        return 0;
    if (c->nsubs == WS_MAX_SUBS)
        return -1;
    char **v = realloc(c->subs, (c->nsubs + 1) * sizeof(*v));
    if (!v)
        return -1;
    c->subs = v;
    if (!(c->subs[c->nsubs] = strdup(s)) || index_add(c->r, c, s) < 0) {
        free(c->subs[c->nsubs]);
        return -1;
    }
    c->nsubs++;
    c->r->st.subscriptions++;
    return 0;
}

static void client_unsubscribe(sophia_ws_client *c, const char *s)
{
    ssize_t i = client_sub_find(c, s);
    if (i < 0)
        return;
    index_del(c->r, c, s);
    free(c->subs[i]);
    c->subs[i] = c->subs[--c->nsubs];
    c->r->st.subscriptions--;
}

/* --------------------------------------------------------- protocol */

/* subscribe/unsubscribe share the validation and the answer's shape. */
static void on_sub_message(sophia_ws_client *c, json_t *msg, int subscribe)
{
    json_t *subs = json_object_get(msg, "subscriptions");
    if (!json_is_array(subs)) {
        client_error(c, NULL, "bad_request",
                     "\"subscriptions\" must be an array of topic strings");
        return;
    }
    json_t *done = json_array(), *v;
    size_t i;
    json_array_foreach(subs, i, v) {
        const char *s = json_string_value(v);
        if (!s || !topic_valid(s)) {
            client_error(c, NULL, "bad_topic",
                         "topics are 1-200 printable characters; '*' only at the end");
            continue;
        }
        if (!subscribe)
            client_unsubscribe(c, s);
        else if (client_subscribe(c, s) < 0) {
            client_error(c, NULL, "too_many_subscriptions",
                         "at most 256 subscriptions per connection");
            continue;
        }
        json_array_append(done, v);
    }
    client_send_json(c, json_pack("{s:s,s:o}", "type",
                                  subscribe ? "subscribed" : "unsubscribed",
                                  "subscriptions", done));
}

static void on_request(sophia_ws_client *c, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *method = json_string_value(json_object_get(msg, "method"));
    if (method && strcmp(method, "stats") == 0) {
        json_t *res = json_pack("{s:s,s:o}", "type", "response", "data",
                                sophia_api_stats_json());
        if (id)
            json_object_set_new(res, "id", json_string(id));
        client_send_json(c, res);
        return;
    }
    client_error(c, id, "unknown_method",
                 "method must be one of: stats");
}

static void on_message(sophia_ws_client *c, const char *text, size_t len)
{
    json_error_t err;
    json_t *msg = json_loadb(text, len, 0, &err);
    c->r->st.messages_in++;
    if (!json_is_object(msg)) {
        char m[256];
        snprintf(m, sizeof(m), "message must be a JSON object (%s at %d:%d)",
                 msg ? "not an object" : err.text, err.line, err.column);
        client_error(c, NULL, "bad_json", m);
        json_decref(msg);
        return;
    }
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!type)
        client_error(c, NULL, "bad_request", "message needs a \"type\"");
    else if (strcmp(type, "subscribe") == 0)
        on_sub_message(c, msg, 1);
    else if (strcmp(type, "unsubscribe") == 0)
        on_sub_message(c, msg, 0);
    else if (strcmp(type, "ping") == 0)
        client_send_json(c, json_pack("{s:s}", "type", "pong"));
    else if (strcmp(type, "request") == 0)
        on_request(c, msg);
    else
        client_error(c, NULL, "unknown_type",
                     "type must be subscribe, unsubscribe, ping or request");
    json_decref(msg);
}

/* ------------------------------------------------------ lws callbacks */

sophia_ws_client *sophia_ws_open(sophia_ws_router *r, struct lws *wsi)
{
    sophia_ws_client *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->q = calloc(r->max_queue, sizeof(*c->q));
    if (!c->q) {
        free(c);
        return NULL;
    }
    c->r = r;
    c->wsi = wsi;
    c->next = r->clients;
    if (r->clients)
        r->clients->prev = c;
    r->clients = c;
    r->st.connections++;
    r->st.connections_total++;
    return c;
}

int sophia_ws_receive(sophia_ws_client *c, const void *in, size_t len)
{
    if (c->rx_len + len > WS_MAX_MESSAGE)
        return send_close(c->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                          "message too large");
    char *rx = realloc(c->rx, c->rx_len + len + 1);
    if (!rx)
        return -1;
    c->rx = rx;
    memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(c->wsi) || lws_remaining_packet_payload(c->wsi))
        return 0;
    on_message(c, c->rx, c->rx_len);
    free(c->rx);
    c->rx = NULL;
    c->rx_len = 0;
    return 0;
}

int sophia_ws_writeable(sophia_ws_client *c)
{
    /* Queued messages go out before a requested close (shutdown sends
     * what was published, then 1001); a slow client's queue was already
     * emptied when its close was requested. */
    for (int n = 0; c->qlen && n < WS_WRITES_PER_TURN; n++) {
        ws_msg *m = c->q[c->qhead];
        if (lws_write(c->wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT) <
            (int)m->len)
            return -1;
        msg_unref(m);
        c->qhead = (c->qhead + 1) % c->r->max_queue;
        c->qlen--;
        c->r->st.messages_out++;
        if (lws_send_pipe_choked(c->wsi))
            break;
    }
    if (c->qlen) {
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    if (c->close_code)
        return send_close(c->wsi, c->close_code, c->close_reason);
    return 0;
}

void sophia_ws_closed(sophia_ws_client *c)
{
    sophia_ws_router *r = c->r;
    while (c->nsubs)
        client_unsubscribe(c, c->subs[c->nsubs - 1]);
    queue_clear(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    r->st.connections--;
    free(c->subs);
    free(c->q);
    free(c->rx);
    free(c);
}

/* ------------------------------------------------------------ publish */

static json_t *render(const char *type, const char *topic, uint64_t seq,
                      const char *dashboard_id, json_t *data)
{
    json_t *o = json_pack("{s:s,s:s,s:I}", "type", type, "topic", topic,
                          "seq", (json_int_t)seq);
    if (dashboard_id)
        json_object_set_new(o, "dashboard_id", json_string(dashboard_id));
    json_object_set(o, "data", data ? data : json_null());
    return o;
}

/* Sends `m` (created on first need) to `c` unless it already has it. */
static void deliver(sophia_ws_router *r, sophia_ws_client *c, ws_msg **m,
                    const char *type, const char *topic, uint64_t seq,
                    const char *dashboard_id, json_t *data)
{
    if (c->stamp == r->stamp)
        return;
    c->stamp = r->stamp;
    if (!*m) {
        json_t *o = render(type, topic, seq, dashboard_id, data);
        *m = msg_from_json(o);
        json_decref(o);
        if (!*m)
            return;
    }
    client_send(c, *m);
}

void sophia_ws_publish(sophia_ws_router *r, const char *type,
                       const char *const *topics, size_t ntopics,
                       const char *dashboard_id, json_t *data)
{
    r->stamp++;
    r->st.published++;
    for (size_t i = 0; i < ntopics; i++) {
        ws_topic *t = topic_get(r, topics[i], 1);
        if (!t)
            continue;
        uint64_t seq = ++t->seq;
        ws_msg *m = NULL;
        for (size_t k = 0; k < t->nsubs; k++)
            deliver(r, t->subs[k], &m, type, topics[i], seq, dashboard_id, data);
        for (size_t k = 0; k < r->npatterns; k++) {
            ws_pattern *p = &r->patterns[k];
            if (strncmp(topics[i], p->prefix, p->len) == 0)
                deliver(r, p->client, &m, type, topics[i], seq, dashboard_id,
                        data);
        }
        msg_unref(m);
    }
    sophia_loop_kick(sophia_srv->loop);
}

/* ------------------------------------------------------------- router */

sophia_ws_router *sophia_ws_router_new(size_t max_queue)
{
    sophia_ws_router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->max_queue = max_queue ? max_queue : 1024;
    r->topics = sophia_dict_new();
    if (!r->topics) {
        free(r);
        return NULL;
    }
    return r;
}

static void topic_free(void *p)
{
    ws_topic *t = p;
    free(t->subs);
    free(t);
}

void sophia_ws_router_free(sophia_ws_router *r)
{
    if (!r)
        return;
    while (r->clients) /* lws is gone: nothing more will call us */
        sophia_ws_closed(r->clients);
    sophia_dict_free(r->topics, topic_free);
    free(r->patterns);
    free(r);
}

void sophia_ws_close_all(sophia_ws_router *r)
{
    for (sophia_ws_client *c = r->clients; c; c = c->next)
        client_request_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutdown");
}

void sophia_ws_get_stats(const sophia_ws_router *r, sophia_ws_stats *out)
{
    *out = r->st;
}
