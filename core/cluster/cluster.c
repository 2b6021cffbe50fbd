/*
 * cluster - see cluster.h for the design and the seq argument.
 *
 * Wire format on `sophia:ws`: "<seq>,<seq>,...\n<json>" where the JSON is
 * {"node","type","topics":[...],"dashboard_id"?,"data"} and the seqs are
 * those the publishing script's INCRs returned, one per topic in order.
 * The prefix is built by the Lua script itself so the seqs and the message
 * can never disagree.
 *
 * Peers: every node says hello on `sophia:inval` ({"node","hello":"join"}
 * once subscribed, {"node","hello":"beat"} every second, a beat at once in
 * answer to a join); invalidation handlers skip them (no key or tag). Any
 * message from another node id keeps it counted as present for
 * CLUSTER_PEER_TIMEOUT_MS; see "alone" in cluster.h.
 *
 * The SUBSCRIBE connection is our own hiredis context (pub/sub replies do
 * not fit sophia_redis), so it does its own handshake: AUTH first when the
 * URL has a password, SUBSCRIBE right behind it; a refused AUTH drops the
 * connection and retries with backoff, logged with the redacted URL.
 */
#include "cluster/cluster.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/backoff.h"
#include "lib/dict.h"
#include "lib/log.h"
#include "event/clock.h"
#include "event/loop.h"
#include "event/redis.h"
#include "lib/redis_url.h"

#define CLUSTER_BACKOFF_MIN_S 0.1
#define CLUSTER_BACKOFF_MAX_S 5.0
#define CLUSTER_CONNECT_TIMEOUT_MS 2000
#define CLUSTER_MAX_TOPICS 16
#define CLUSTER_BATCH_MAX 256  /* publishes in one EVAL */
#define CLUSTER_BATCH_KEYS 64  /* distinct topics in one EVAL */
#define CLUSTER_TURN_LATE_MS 2  /* a busy loop's turn ends after this */
#define CLUSTER_SEQ_TTL_DEFAULT 600
#define CLUSTER_BEAT_MS 1000
#define CLUSTER_PEER_TIMEOUT_MS 5000

/* One EVAL carries a loop turn's publishes (pub_flush), in their order.
 * KEYS: sophia:seq:<topic>, each topic of the batch once; ARGV: channel,
 * ttl seconds, one floor per key (the seq this node last delivered on
 * that topic), then per publish: its topic count, the index in KEYS of
 * each of its topics, its message. A node that published alone (local
 * seqs, see cluster.h) and now has peers must not see its topic's seq go
 * back, so a seq at or below the floor jumps to floor + 1.
 * A seq key lives ttl (refreshed by every batch, see cluster.h). One
 * that is new - first publish, or the topic idled past its ttl - starts
 * at Redis's clock in microseconds instead of 1, so a topic's seq never
 * goes back: a client holding a seq from before the expiry gets `resync`,
 * never a replay of different messages under numbers it already saw.
 * %d, not tostring: Lua 5.1 prints a double that large in %.14g. */
static const char publish_script[] =
    "local ttl = tonumber(ARGV[2])\n"
    "local function seq(k)\n"
    "  local v = redis.call('INCR', KEYS[k])\n"
    "  if v == 1 then\n"
    "    local t = redis.call('TIME')\n"
    "    v = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "    redis.call('SET', KEYS[k], string.format('%d', v))\n"
    "  end\n"
    "  local f = tonumber(ARGV[2 + k]) or 0\n"
    "  if v <= f then\n"
    "    v = f + 1\n"
    "    redis.call('SET', KEYS[k], string.format('%d', v))\n"
    "  end\n"
    "  return string.format('%d', v)\n"
    "end\n"
    "local i, n = 3 + #KEYS, 0\n"
    "while i <= #ARGV do\n"
    "  local nt, s = tonumber(ARGV[i]), {}\n"
    "  for j = 1, nt do s[j] = seq(tonumber(ARGV[i + j])) end\n"
    "  redis.call('PUBLISH', ARGV[1], table.concat(s, ',') .. '\\n' .. ARGV[i + nt + 1])\n"
    "  i, n = i + nt + 2, n + 1\n"
    "end\n"
    "if ttl > 0 then\n"
    "  for k = 1, #KEYS do redis.call('EXPIRE', KEYS[k], ttl) end\n"
    "end\n"
    "return n\n";

/* A publish waiting for its turn's EVAL: its message, and its topics as
 * indexes into the batch's keys. */
typedef struct pub_item {
    char *msg;
    size_t nt;
    unsigned char key[CLUSTER_MAX_TOPICS];
} pub_item;

struct sophia_cluster {
    struct event_base *base;
    sophia_cluster_sink sink; /* route == NULL: deliver nothing */
    sophia_redis *cmd;       /* EVAL, PUBLISH */
    long seq_ttl;            /* seconds a sophia:seq:* key outlives its last publish */
    redisAsyncContext *sub;  /* SUBSCRIBE only */
    sophia_redis_url url;
    char safe_url[256];      /* redacted, for logs */
    char refused[256];       /* why the server refused AUTH, for the log */
    int subscribed;          /* both channels confirmed */
    int freeing;
    sophia_backoff backoff; /* subscriber reconnects, with jitter */
    struct event *retry_ev;
    struct event *connect_ev; /* bounds a connect that hangs */
    char node[96];
    uint64_t received;
    struct event *beat_ev;    /* our hello every CLUSTER_BEAT_MS */
    struct event *join_ev;    /* retries the join until the command link takes it */
    int64_t peer_until_us;    /* another node was heard from until then (mono) */
    int64_t grace_until_us;   /* invalidations go out regardless until then */
    sophia_clock clock;       /* alone? is asked at every publish and put */
    sophia_cluster_invalidate_fn inval_fn; /* other nodes' invalidations */
    void *inval_arg;
    uint64_t inflight;        /* own publishes sent, not yet back from the channel */
    /* Invalidations of this loop turn, one per key or tag ("k:"/"t:" +
     * name), sent by turn_ev at the turn's end or before a publish. */
    sophia_dict *inval_set;
    char **inval_q;
    size_t inval_n, inval_cap;
    /* Publishes of this loop turn, sent as one EVAL by turn_ev: a POST's
     * 50 publishes were 50 EVALs, ~50 µs of Redis each (pub_flush). */
    pub_item pub_q[CLUSTER_BATCH_MAX];
    size_t pub_n;
    char *pub_keys[CLUSTER_BATCH_KEYS]; /* sophia:seq:<topic> */
    char pub_floor[CLUSTER_BATCH_KEYS][24]; /* its topic's last local seq */
    size_t pub_nkeys;
    /* The turn's end: turn_ev runs in the first pass with nothing else
     * active (SOPHIA_PRIO_AFTER); turn_late_ev, if the loop stays busy. */
    struct event *turn_ev, *turn_late_ev;
};


static void sub_connect(sophia_cluster *c);
static void sub_refused(sophia_cluster *c, const char *cmd, const redisReply *r);
static int say_hello(sophia_cluster *c, const char *kind);
static void send_join(sophia_cluster *c);
static void turn_flush(sophia_cluster *c);
static void on_turn_end(evutil_socket_t fd, short what, void *arg);

/* Something waits for the turn's end; 0 when nothing can say when. */
static int turn_arm(sophia_cluster *c)
{
    if (!c->turn_ev || !c->turn_late_ev)
        return 0;
    if (!evtimer_pending(c->turn_late_ev, NULL)) {
        struct timeval late = {0, CLUSTER_TURN_LATE_MS * 1000};
        evtimer_add(c->turn_late_ev, &late);
        event_active(c->turn_ev, EV_TIMEOUT, 0);
    }
    return 1;
}

/* A message from another node: it is there for the next while. */
static void heard_peer(sophia_cluster *c)
{
    c->peer_until_us = sophia_now_mono_us() + CLUSTER_PEER_TIMEOUT_MS * 1000LL;
}

/* ------------------------------------------------------------ receive */

static void on_publish(sophia_cluster *c, const char *payload, size_t len)
{
    const char *nl = memchr(payload, '\n', len);
    uint64_t seqs[CLUSTER_MAX_TOPICS];
    size_t nseq = 0;
    if (!nl || !c->sink.route) /* no sink: a transport-only node (tests) */
        return;
    for (const char *p = payload; p < nl && nseq < CLUSTER_MAX_TOPICS;) {
        char *end;
        seqs[nseq++] = strtoull(p, &end, 10);
        p = end + 1;
    }
    json_t *m = json_loadb(nl + 1, len - (size_t)(nl + 1 - payload), 0, NULL);
    json_t *jt = json_object_get(m, "topics");
    const char *type = json_string_value(json_object_get(m, "type"));
    const char *topics[CLUSTER_MAX_TOPICS];
    size_t n = json_array_size(jt);
    if (!type || n == 0 || n != nseq) {
        sophia_warn("cluster", "msg=\"malformed message on " SOPHIA_CLUSTER_CHANNEL "\"");
        json_decref(m);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (!(topics[i] = json_string_value(json_array_get(jt, i)))) {
            json_decref(m);
            return;
        }
    const char *node = json_string_value(json_object_get(m, "node"));
    if (node && strcmp(node, c->node) == 0) {
        if (c->inflight)
            c->inflight--;
    } else {
        heard_peer(c);
    }
    c->received++;
    c->sink.route(c->sink.arg, type, topics, seqs, n,
                  json_string_value(json_object_get(m, "dashboard_id")),
                  json_object_get(m, "data"));
    json_decref(m);
}

static void on_invalidate(sophia_cluster *c, const char *payload, size_t len)
{
    json_t *m = json_loadb(payload, len, 0, NULL);
    const char *node = json_string_value(json_object_get(m, "node"));
    const char *key = json_string_value(json_object_get(m, "key"));
    const char *tag = json_string_value(json_object_get(m, "tag"));
    const char *hello = json_string_value(json_object_get(m, "hello"));
    if (!node || strcmp(node, c->node) == 0) {
        json_decref(m);
        return;
    }
    heard_peer(c);
    if (hello && strcmp(hello, "join") == 0)
        say_hello(c, "beat"); /* so the newcomer knows us at once */
    if ((key || tag) && c->inval_fn)
        c->inval_fn(key ? key : tag, key == NULL, c->inval_arg);
    json_decref(m);
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    sophia_cluster *c = privdata;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) {
        sub_refused(c, "SUBSCRIBE", r);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        if (r->element[2]->integer == 2 && !c->subscribed) {
            c->subscribed = 1;
            sophia_backoff_reset(&c->backoff);
            sophia_info("cluster", "msg=\"subscribed\" url=%s node=%s",
                        c->safe_url, c->node);
            c->grace_until_us = sophia_now_mono_us() + CLUSTER_PEER_TIMEOUT_MS * 1000LL;
            send_join(c);
        }
        return;
    }
    if (strcmp(kind, "message") != 0 || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *ch = r->element[1]->str;
    if (strcmp(ch, SOPHIA_CLUSTER_CHANNEL) == 0)
        on_publish(c, r->element[2]->str, r->element[2]->len);
    else if (strcmp(ch, SOPHIA_CLUSTER_INVAL_CHANNEL) == 0)
        on_invalidate(c, r->element[2]->str, r->element[2]->len);
}

/* ------------------------------------------------- subscribe connection */

static void sub_retry_later(sophia_cluster *c, const char *why)
{
    if (c->freeing)
        return;
    if (c->subscribed || c->backoff.prev_s == 0) /* the first failure */
        sophia_warn("cluster", "msg=\"pub/sub connection down, retrying with backoff\" url=%s err=\"%s\"",
                    c->safe_url, why ? why : "closed");
    c->subscribed = 0;
    struct timeval tv = sophia_timeval(sophia_backoff_next(&c->backoff));
    evtimer_add(c->retry_ev, &tv);
}

/* A refused AUTH (or a SUBSCRIBE refused for want of one): drop the
 * connection; on_sub_disconnect retries and logs why. */
static void sub_refused(sophia_cluster *c, const char *cmd, const redisReply *r)
{
    if (!c->refused[0])
        snprintf(c->refused, sizeof(c->refused), "%s refused: %s", cmd,
                 r->str ? r->str : "error");
    if (c->sub)
        redisAsyncDisconnect(c->sub);
}

static void on_sub_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR)
        sub_refused(privdata, "AUTH", r);
}

static void on_sub_connect(const redisAsyncContext *ac, int status)
{
    sophia_cluster *c = ac->data;
    evtimer_del(c->connect_ev);
    if (status != REDIS_OK) {
        c->sub = NULL; /* hiredis frees it after this callback */
        sub_retry_later(c, ac->errstr);
        return;
    }
    c->refused[0] = '\0';
    if (c->url.password) {
        const char *argv[3] = {"AUTH", c->url.user ? c->url.user : c->url.password,
                               c->url.password};
        size_t lens[3] = {4, strlen(argv[1]), strlen(c->url.password)};
        redisAsyncCommandArgv(c->sub, on_sub_auth, c, c->url.user ? 3 : 2,
                              argv, lens);
    }
    redisAsyncCommand(c->sub, on_sub_reply, c, "SUBSCRIBE %s %s",
                      SOPHIA_CLUSTER_CHANNEL, SOPHIA_CLUSTER_INVAL_CHANNEL);
}

static void on_sub_disconnect(const redisAsyncContext *ac, int status)
{
    sophia_cluster *c = ac->data;
    c->sub = NULL;
    c->inflight = 0; /* what was in flight will not come back to us */
    sub_retry_later(c, c->refused[0]       ? c->refused
                       : status == REDIS_OK ? "closed"
                                            : ac->errstr);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub_connect(arg);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_cluster *c = arg;
    redisAsyncContext *ac = c->sub;
    if (!ac)
        return;
    c->sub = NULL;
    redisAsyncFree(ac); /* not connected: no disconnect callback */
    sub_retry_later(c, "connect timed out");
}

static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_cluster *c = arg;
    if (c->subscribed)
        say_hello(c, "beat");
}

/* The subscription may be confirmed before the command connection is up:
 * the join waits for it, so the others hear of us at once, not a beat
 * later. */
static void on_join_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_join(arg);
}

static void send_join(sophia_cluster *c)
{
    struct timeval tv = {0, 20 * 1000};
    if (c->subscribed && say_hello(c, "join") != 0 && c->join_ev)
        evtimer_add(c->join_ev, &tv);
}

static void sub_connect(sophia_cluster *c)
{
    c->sub = redisAsyncConnect(c->url.host, c->url.port);
    if (!c->sub || c->sub->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", c->sub ? c->sub->errstr : "out of memory");
        if (c->sub)
            redisAsyncFree(c->sub);
        c->sub = NULL;
        sub_retry_later(c, why);
        return;
    }
    c->sub->data = c;
    redisLibeventAttach(c->sub, c->base);
    redisAsyncSetConnectCallback(c->sub, on_sub_connect);
    redisAsyncSetDisconnectCallback(c->sub, on_sub_disconnect);
    struct timeval tv = {CLUSTER_CONNECT_TIMEOUT_MS / 1000,
                         (CLUSTER_CONNECT_TIMEOUT_MS % 1000) * 1000};
    evtimer_add(c->connect_ev, &tv);
}

/* ------------------------------------------------------------- public */

sophia_cluster *sophia_cluster_new(struct event_base *base, const char *url,
                                   const char *node_id,
                                   const sophia_cluster_sink *sink)
{
    sophia_cluster *c = calloc(1, sizeof(*c));
    char why[200];
    if (!c)
        return NULL;
    sophia_redis_url_redact(url, c->safe_url, sizeof(c->safe_url));
    if (sophia_redis_url_parse(url, &c->url, why, sizeof(why)) < 0 ||
        !(c->cmd = sophia_redis_new(base, url))) {
        sophia_error("cluster", "msg=\"bad cluster.redis URL; running single-node\" url=%s err=\"%s\"",
                     c->safe_url, c->url.host ? "cannot connect" : why);
        sophia_redis_url_clear(&c->url);
        free(c);
        return NULL;
    }
    c->base = base;
    sophia_clock_init(&c->clock, base);
    if (sink)
        c->sink = *sink;
    sophia_backoff_init(&c->backoff, CLUSTER_BACKOFF_MIN_S,
                        CLUSTER_BACKOFF_MAX_S, (unsigned long long)(uintptr_t)c);
    c->seq_ttl = CLUSTER_SEQ_TTL_DEFAULT;
    if (node_id && *node_id) {
        snprintf(c->node, sizeof(c->node), "%s", node_id);
    } else {
        char host[64] = "node";
        gethostname(host, sizeof(host) - 1);
        snprintf(c->node, sizeof(c->node), "%s:%d", host, (int)getpid());
    }
    c->retry_ev = evtimer_new(base, on_retry, c);
    c->connect_ev = evtimer_new(base, on_connect_timeout, c);
    c->beat_ev = event_new(base, -1, EV_PERSIST, on_beat, c);
    c->join_ev = evtimer_new(base, on_join_retry, c);
    c->turn_ev = event_new(base, -1, 0, on_turn_end, c);
    c->turn_late_ev = evtimer_new(base, on_turn_end, c);
    if (c->turn_ev)
        event_priority_set(c->turn_ev, SOPHIA_PRIO_AFTER);
    c->inval_set = sophia_dict_new();
    if (c->beat_ev) {
        struct timeval tv = {CLUSTER_BEAT_MS / 1000, (CLUSTER_BEAT_MS % 1000) * 1000};
        event_add(c->beat_ev, &tv);
    }
    sub_connect(c);
    return c;
}

void sophia_cluster_free(sophia_cluster *c)
{
    if (!c)
        return;
    c->freeing = 1;
    if (c->sub)
        redisAsyncFree(c->sub);
    event_free(c->retry_ev);
    event_free(c->connect_ev);
    if (c->beat_ev)
        event_free(c->beat_ev);
    if (c->join_ev)
        event_free(c->join_ev);
    turn_flush(c); /* into the command link's buffer, as before the queue */
    if (c->turn_ev)
        event_free(c->turn_ev);
    if (c->turn_late_ev)
        event_free(c->turn_late_ev);
    sophia_dict_free(c->inval_set, NULL);
    free(c->inval_q);
    sophia_redis_free(c->cmd);
    sophia_redis_url_clear(&c->url);
    free(c);
}

int sophia_cluster_ready(const sophia_cluster *c)
{
    return c && c->subscribed && sophia_redis_up(c->cmd);
}

const char *sophia_cluster_node_id(const sophia_cluster *c)
{
    return c->node;
}

uint64_t sophia_cluster_received(const sophia_cluster *c)
{
    return c ? c->received : 0;
}

int sophia_cluster_alone(sophia_cluster *c)
{
    return c && c->inflight == 0 &&
           sophia_clock_mono_us(&c->clock) >= c->peer_until_us;
}

/* {"node","hello":kind} on the invalidation channel, fire and forget;
 * -1 when the command connection is down. */
static int say_hello(sophia_cluster *c, const char *kind)
{
    json_t *o = json_pack("{s:s,s:s}", "node", c->node, "hello", kind);
    char *msg = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!msg)
        return -1;
    const char *argv[3] = {"PUBLISH", SOPHIA_CLUSTER_INVAL_CHANNEL, msg};
    size_t lens[3] = {7, strlen(SOPHIA_CLUSTER_INVAL_CHANNEL), strlen(msg)};
    int rc = sophia_redis_command(c->cmd, NULL, NULL, 3, argv, lens);
    free(msg);
    return rc == 0 ? 0 : -1;
}

/* A batch's EVAL in flight: how many publishes it carries. */
typedef struct pub_sent {
    sophia_cluster *c;
    size_t n;
} pub_sent;

/* n publishes that will not come back from the channel. */
static void pub_lost(sophia_cluster *c, size_t n, const char *err)
{
    c->inflight = c->inflight > n ? c->inflight - n : 0;
    if (!c->freeing)
        sophia_warn("cluster", "msg=\"publish through Redis failed\" "
                    "publishes=%zu err=\"%s\"", n, err);
}

/* A failed EVAL published nothing (a script runs whole or not at all). */
static void on_eval(void *arg, redisReply *reply)
{
    pub_sent *ps = arg;
    if (!reply || reply->type == REDIS_REPLY_ERROR)
        pub_lost(ps->c, ps->n, reply ? reply->str : "no reply");
    free(ps);
}

static char *encode_publish(const sophia_cluster *c, const char *type,
                            const char *const *topics, size_t n,
                            const char *dashboard_id, json_t *data)
{
    json_t *jt = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(jt, json_string(topics[i]));
    json_t *o = json_pack("{s:s,s:s,s:o}", "node", c->node, "type", type,
                          "topics", jt);
    if (dashboard_id)
        json_object_set_new(o, "dashboard_id", json_string(dashboard_id));
    json_object_set(o, "data", data ? data : json_null());
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* The batch's index of topic's seq key, added if new with its floor
 * (pub_queue made room); -1 out of memory. The floor
 * read now holds at the flush: while a publish is queued the node is not
 * alone, so it delivers nothing with a local seq in between. */
static int pub_key(sophia_cluster *c, const char *topic)
{
    for (size_t k = 0; k < c->pub_nkeys; k++)
        if (strcmp(c->pub_keys[k] + 11, topic) == 0) /* after "sophia:seq:" */
            return (int)k;
    if (asprintf(&c->pub_keys[c->pub_nkeys], "sophia:seq:%s", topic) < 0)
        return -1;
    uint64_t low = c->sink.topic_seq ? c->sink.topic_seq(c->sink.arg, topic) : 0;
    snprintf(c->pub_floor[c->pub_nkeys], sizeof(c->pub_floor[0]), "%llu",
             (unsigned long long)low);
    return (int)c->pub_nkeys++;
}

static void pub_clear(sophia_cluster *c)
{
    for (size_t i = 0; i < c->pub_n; i++)
        free(c->pub_q[i].msg);
    for (size_t k = 0; k < c->pub_nkeys; k++)
        free(c->pub_keys[k]);
    c->pub_n = c->pub_nkeys = 0;
}

/* EVAL publish_script with the queued publishes, in their order. */
static void pub_flush(sophia_cluster *c)
{
    static const char *const idx[] = {
        "0",  "1",  "2",  "3",  "4",  "5",  "6",  "7",  "8",  "9",  "10",
        "11", "12", "13", "14", "15", "16", "17", "18", "19", "20", "21",
        "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
        "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43",
        "44", "45", "46", "47", "48", "49", "50", "51", "52", "53", "54",
        "55", "56", "57", "58", "59", "60", "61", "62", "63", "64"};
    _Static_assert(sizeof(idx) / sizeof(idx[0]) > CLUSTER_BATCH_KEYS, "idx");
    if (!c->pub_n) {
        pub_clear(c); /* keys left by a publish that ran out of memory */
        return;
    }
    size_t nk = c->pub_nkeys, max = 6 + 2 * nk + c->pub_n * (CLUSTER_MAX_TOPICS + 2);
    const char **argv = malloc(max * sizeof(*argv));
    size_t *lens = malloc(max * sizeof(*lens));
    pub_sent *ps = malloc(sizeof(*ps));
    char ttl[24];
    int argc = 0;
    if (argv && lens && ps) {
        argv[argc++] = "EVAL";
        argv[argc++] = publish_script;
        argv[argc++] = idx[nk];
        for (size_t k = 0; k < nk; k++)
            argv[argc++] = c->pub_keys[k];
        argv[argc++] = SOPHIA_CLUSTER_CHANNEL;
        snprintf(ttl, sizeof(ttl), "%ld", c->seq_ttl);
        argv[argc++] = ttl;
        for (size_t k = 0; k < nk; k++)
            argv[argc++] = c->pub_floor[k];
        for (size_t i = 0; i < c->pub_n; i++) {
            const pub_item *p = &c->pub_q[i];
            argv[argc++] = idx[p->nt];
            for (size_t t = 0; t < p->nt; t++)
                argv[argc++] = idx[p->key[t] + 1]; /* Lua counts from 1 */
            argv[argc++] = p->msg;
        }
        for (int i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        *ps = (pub_sent){c, c->pub_n};
    }
    if (!argc || sophia_redis_command(c->cmd, on_eval, ps, argc, argv, lens)) {
        pub_lost(c, c->pub_n, argc ? "Redis down" : "out of memory");
        free(ps);
    }
    free(argv);
    free(lens);
    pub_clear(c);
}

/* Queues a publish for the turn's EVAL; -1 (nothing queued) out of
 * memory. A batch without room for it, whatever its topics, goes first. */
static int pub_queue(sophia_cluster *c, char *msg, const char *const *topics,
                     size_t ntopics)
{
    if (c->pub_n == CLUSTER_BATCH_MAX ||
        c->pub_nkeys + ntopics > CLUSTER_BATCH_KEYS)
        pub_flush(c);
    pub_item *p = &c->pub_q[c->pub_n];
    for (size_t t = 0; t < ntopics; t++) {
        int k = pub_key(c, topics[t]);
        if (k < 0) /* keys it added stay: an EXPIRE too many at the flush */
            return -1;
        p->key[t] = (unsigned char)k;
    }
    p->msg = msg;
    p->nt = ntopics;
    c->pub_n++;
    if (!turn_arm(c))
        pub_flush(c); /* no memory at start: send now */
    return 0;
}

int sophia_cluster_publish(sophia_cluster *c, const char *type,
                           const char *const *topics, size_t ntopics,
                           const char *dashboard_id, json_t *data)
{
    if (!sophia_cluster_ready(c) || ntopics == 0 || ntopics > CLUSTER_MAX_TOPICS)
        return -1;
    if (c->inval_n) /* a publish never overtakes an invalidation before it */
        turn_flush(c);
    char *msg = encode_publish(c, type, topics, ntopics, dashboard_id, data);
    c->inflight++; /* first: a flush inside pub_queue may count it lost */
    if (!msg || pub_queue(c, msg, topics, ntopics)) {
        c->inflight--;
        free(msg);
        return -1;
    }
    return 0;
}

void sophia_cluster_set_seq_ttl(sophia_cluster *c, double history_age)
{
    if (!c)
        return;
    long ttl = (long)(2 * history_age + 0.999);
    c->seq_ttl = ttl < 10 ? 10 : ttl;
}

void sophia_cluster_on_invalidate(sophia_cluster *c,
                                  sophia_cluster_invalidate_fn fn, void *arg)
{
    if (!c)
        return;
    c->inval_fn = fn;
    c->inval_arg = arg;
}

/* Nobody to tell: subscribed, alone, and past the grace after joining.
 * The grace covers a newcomer's first round trips, when it has not heard
 * the others' answer to its join yet but they may already cache what it
 * writes. An old node tells again one round trip after a newcomer
 * subscribed (its join): that widens by one round trip the window the
 * newcomer already had, of keys it loaded before it was subscribed. */
static int nobody_listens(sophia_cluster *c)
{
    return c->subscribed && sophia_cluster_alone(c) &&
           sophia_clock_mono_us(&c->clock) >= c->grace_until_us;
}

/* PUBLISH {"node","key"|"tag"} for one queued "k:"/"t:" name. */
static void inval_send(sophia_cluster *c, const char *kn)
{
    json_t *o = json_pack("{s:s,s:s}", "node", c->node,
                          kn[0] == 't' ? "tag" : "key", kn + 2);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s)
        return;
    const char *argv[3] = {"PUBLISH", SOPHIA_CLUSTER_INVAL_CHANNEL, s};
    size_t lens[3] = {7, strlen(SOPHIA_CLUSTER_INVAL_CHANNEL), strlen(s)};
    sophia_redis_command(c->cmd, NULL, NULL, 3, argv, lens);
    free(s);
}

/* Sends this turn's invalidations, in the order of their first call. */
static void inval_flush(sophia_cluster *c)
{
    for (size_t i = 0; i < c->inval_n; i++) {
        inval_send(c, c->inval_q[i]);
        free(sophia_dict_del(c->inval_set, c->inval_q[i]));
    }
    c->inval_n = 0;
}

/* The turn's publishes, then its invalidations: one queued after a
 * publish does not overtake it (one queued before went at the publish). */
static void turn_flush(sophia_cluster *c)
{
    if (c->turn_ev)
        event_del(c->turn_ev);
    if (c->turn_late_ev)
        event_del(c->turn_late_ev);
    pub_flush(c);
    inval_flush(c);
}

static void on_turn_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    turn_flush(arg);
}

/* Queues "k:"/"t:" + name once per turn: the puts of one key in a loop
 * turn (a metric's latest value, 50 times a POST) are one message, as
 * they share one journal XADD (cache_wb.c). The other nodes drop their
 * L1 copy on it; a second message in the same turn would drop nothing
 * more. Sent in the same write to Redis as before, at the turn's end. */
static int inval_queue(sophia_cluster *c, const char *key_or_tag, int is_tag)
{
    size_t len = strlen(key_or_tag);
    char *kn = malloc(len + 3);
    if (!kn)
        return -1;
    kn[0] = is_tag ? 't' : 'k';
    kn[1] = ':';
    memcpy(kn + 2, key_or_tag, len + 1);
    if (!c->turn_ev || !c->turn_late_ev || !c->inval_set) { /* no memory: now */
        inval_send(c, kn);
        free(kn);
        return 0;
    }
    if (sophia_dict_get(c->inval_set, kn)) {
        free(kn);
        return 0;
    }
    if (c->inval_n == c->inval_cap) {
        size_t cap = c->inval_cap ? c->inval_cap * 2 : 16;
        char **q = realloc(c->inval_q, cap * sizeof(*q));
        if (!q) {
            free(kn);
            return -1;
        }
        c->inval_q = q;
        c->inval_cap = cap;
    }
    sophia_dict_set(c->inval_set, kn, kn); /* the dict copies the key */
    c->inval_q[c->inval_n++] = kn;
    turn_arm(c);
    return 0;
}

int sophia_cluster_broadcast_invalidate(sophia_cluster *c,
                                        const char *key_or_tag, int is_tag)
{
    if (!c || !sophia_redis_up(c->cmd) || !key_or_tag)
        return -1;
    if (nobody_listens(c))
        return 0;
    return inval_queue(c, key_or_tag, is_tag);
}
