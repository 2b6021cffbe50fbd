/*
 * ws - the router (ws.h for the design): topics and their subscribers,
 * publish and route (one rendering per topic, shared by every queue and
 * the history ring), seqs, the sweep that frees idle topics, and the
 * router's life: create, reconfigure on reload, free.
 *
 * The router is built from handles, not from daemon state: the loop and
 * configuration it is created with, the backlog callback the daemon sets,
 * and the request methods other layers register. The cluster, a layer
 * below, delivers back into it through the sink handed to
 * sophia_cluster_new. ws_priv.h lists the files beside this one.
 */
#include "ws/ws.h"

#include <event2/event.h>
#include <inttypes.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "lib/dict.h"
#include "lib/jsonw.h"
#include "lib/log.h"
#include "ws/ws_deflate.h"
#include "ws/ws_history.h"
#include "ws/ws_jwt.h"
#include "ws/ws_latest.h"
#include "ws/ws_namehash.h"
#include "ws/ws_priv.h"

/* ------------------------------------------------------- subscriptions */

int ws_topic_valid(const char *t)
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

int ws_is_pattern(const char *t)
{
    return t[strlen(t) - 1] == '*';
}

static void topic_free(void *p);

/* Where a new topic's seq starts. A seq must never go back while a client
 * may hold an old one for `since`: until the sweep has freed a published
 * topic, topics start at 0 (first message seq 1); from then on a new
 * topic - maybe a freed one coming back - starts above every seq ever
 * freed and at least at the wall clock in microseconds, as the cluster's
 * Redis script does, so a `since` from an earlier life of the topic finds
 * a gap and gets `resync`, never a replay that silently skips messages. */
static uint64_t topic_base(const sophia_ws_router *r)
{
    if (!r->seq_floor)
        return 0;
    uint64_t now = (uint64_t)sophia_now_wall_us();
    return now > r->seq_floor ? now : r->seq_floor + 1;
}

/* A publish looks its topics up by name, three per metric point, and
 * mostly the same few names again and again: a direct-mapped cache of
 * recently used topics, indexed by a cheap hash of the name
 * (ws_namehash.h), answers before the dict's keyed hash. Made-up names
 * can only make it miss, never wrong: a slot is checked by name and
 * cleared when its topic goes (topic_remove). */
static ws_topic **recent_slot(sophia_ws_router *r, uint64_t h)
{
    return &r->recent[ws_namehash_slot(h, WS_RECENT_BITS)];
}

ws_topic *ws_topic_get(sophia_ws_router *r, const char *name, int create)
{
    size_t n = strlen(name);
    uint64_t h = ws_namehash_n(0, name, n);
    ws_topic **slot = recent_slot(r, h);
    if (*slot && strcmp((*slot)->name, name) == 0)
        return *slot;
    ws_topic *t = sophia_dict_get(r->topics, name);
    if (t)
        *slot = t;
    if (t || !create)
        return t;
    t = calloc(1, sizeof(*t));
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return NULL;
    }
    t->name_len = n;
    t->name_hash = h;
    t->seq = t->base = topic_base(r);
    t->dashboard = strncmp(name, "dashboard:", 10) == 0;
    ws_history_init(&t->hist, r->history);
    sophia_dict_set(r->topics, name, t);
    *slot = t;
    t->next = r->tlist;
    if (r->tlist)
        r->tlist->prev = t;
    r->tlist = t;
    return t;
}

static void topic_remove(sophia_ws_router *r, ws_topic *t)
{
    if (r->sweep_at == t)
        r->sweep_at = t->next;
    if (t->prev)
        t->prev->next = t->next;
    else
        r->tlist = t->next;
    if (t->next)
        t->next->prev = t->prev;
    ws_topic **slot = recent_slot(r, t->name_hash);
    if (*slot == t)
        *slot = NULL;
    for (size_t i = 0; i < WS_LAST_TOPICS; i++)
        if (r->last[i] == t)
            r->last[i] = NULL;
    sophia_dict_del(r->topics, t->name);
    topic_free(t);
}

static int subs_add(ws_subs *s, sophia_ws_client *c)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4;
        sophia_ws_client **v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = c;
    return 0;
}

static void subs_del(ws_subs *s, sophia_ws_client *c)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (s->v[i] == c) {
            s->v[i] = s->v[--s->n];
            return;
        }
}

static void subs_free(void *p)
{
    ws_subs *s = p;
    free(s->v);
    free(s);
}

static int index_add(sophia_ws_router *r, sophia_ws_client *c, const char *s)
{
    if (!ws_is_pattern(s)) {
        ws_topic *t = ws_topic_get(r, s, 1);
        return t ? subs_add(&t->subs, c) : -1;
    }
    size_t n = strlen(s) - 1;
    char prefix[WS_MAX_TOPIC + 1];
    memcpy(prefix, s, n);
    prefix[n] = '\0';
    ws_subs *ps = sophia_dict_get(r->patterns, prefix);
    if (!ps) {
        if (!(ps = calloc(1, sizeof(*ps))))
            return -1;
        sophia_dict_set(r->patterns, prefix, ps);
    }
    if (subs_add(ps, c) < 0)
        return -1;
    r->plen[n]++;
    r->npatterns++;
    return 0;
}

static void index_del(sophia_ws_router *r, sophia_ws_client *c, const char *s)
{
    if (!ws_is_pattern(s)) {
        ws_topic *t = ws_topic_get(r, s, 0);
        if (!t)
            return;
        subs_del(&t->subs, c);
        /* Never published to: nothing to keep. Without this, a client
         * cycling through made-up topic names would grow the index for
         * ever. Published topics wait for the sweep (their history). */
        if (t->subs.n == 0 && t->seq == t->base)
            topic_remove(r, t);
        return;
    }
    size_t n = strlen(s) - 1;
    char prefix[WS_MAX_TOPIC + 1];
    memcpy(prefix, s, n);
    prefix[n] = '\0';
    ws_subs *ps = sophia_dict_get(r->patterns, prefix);
    if (!ps)
        return;
    subs_del(ps, c);
    r->plen[n]--;
    r->npatterns--;
    if (ps->n == 0)
        subs_free(sophia_dict_del(r->patterns, prefix));
}

static ssize_t client_sub_find(const sophia_ws_client *c, const char *s)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (strcmp(c->subs[i], s) == 0)
            return (ssize_t)i;
    return -1;
}

int ws_client_subscribe(sophia_ws_client *c, const char *s)
{
    if (client_sub_find(c, s) >= 0)
        return 0;
    if (c->nsubs >= c->r->max_subs)
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

void ws_client_unsubscribe(sophia_ws_client *c, const char *s)
{
    ssize_t i = client_sub_find(c, s);
    if (i < 0)
        return;
    index_del(c->r, c, s);
    free(c->subs[i]);
    c->subs[i] = c->subs[--c->nsubs];
    c->r->st.subscriptions--;
}

/* 1 when topic `t` is covered by one of the client's subscriptions. */
int ws_client_covers(const sophia_ws_client *c, const char *t)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (sophia_jwt_topic_allowed(c->subs[i], t))
            return 1;
    return 0;
}

/* ------------------------------------------------------------ publish */

/* One topic's copy of a publish: the envelope is rendered per topic and
 * `data`, the bulk of the message and the same for every topic, is
 * spliced in as text encoded once per publish (sophia_ws_route). The
 * bytes are what dumping the whole object would give: jansson keeps
 * insertion order and "data" is the last member. */
static void render_head(sophia_jsonw *w, const char *type, size_t tl,
                        const char *topic, size_t nl)
{
    sophia_jsonw_raw(w, "{\"type\":", 8);
    sophia_jsonw_str(w, type, tl);
    sophia_jsonw_raw(w, ",\"topic\":", 9);
    sophia_jsonw_str(w, topic, nl);
    sophia_jsonw_raw(w, ",\"seq\":", 7);
}

/* The start of a message, up to the seq, and its length; NULL when out of
 * memory. It is the same for every publish of one type to a topic, so t
 * (NULL: render it all) keeps it for a type written as it is (the head
 * then has it verbatim after {"type":", which is what the comparison
 * reads); any other type is rendered each time, into r->render. */
static const char *topic_head(sophia_ws_router *r, ws_topic *t,
                              const char *type, size_t tl, const char *topic,
                              size_t nl, size_t *n)
{
    if (t && t->head && t->head_tl == tl &&
        memcmp(t->head + 9, type, tl) == 0) {
        *n = t->head_len;
        return t->head;
    }
    sophia_jsonw *w = &r->render;
    sophia_jsonw_clear(w);
    render_head(w, type, tl, topic, nl);
    if (w->failed)
        return NULL;
    *n = w->len;
    char *h = t && ws_json_plain(type, tl) ? malloc(w->len) : NULL;
    if (!h)
        return w->p;
    memcpy(h, w->p, w->len);
    free(t->head);
    t->head = h;
    t->head_len = w->len;
    t->head_tl = tl;
    return h;
}

/* Adds one to the decimal number s[0..*n). */
static void decimal_inc(char *s, size_t *n)
{
    size_t i = *n;
    while (i && s[i - 1] == '9')
        s[--i] = '0';
    if (i) {
        s[i - 1]++;
        return;
    }
    memmove(s + 1, s, *n); /* 9..9 + 1: one digit more */
    s[0] = '1';
    (*n)++;
}

/* seq as decimal text, in t when there is one (*n bytes, not NUL-ended).
 * A topic's messages are rendered mostly in seq order, one apart, so the
 * last one's text plus a carry gives the next: about a tenth of what a
 * conversion costs (sophia_fmt_u64, 90 instructions); any other seq
 * (a cluster's, a replay's with t NULL) is converted. */
static const char *seq_text(ws_topic *t, uint64_t seq, char *buf, size_t *n)
{
    if (!t) {
        *n = sophia_fmt_u64(buf, seq);
        return buf;
    }
    if (t->seq_text_len && t->seq_text_of + 1 == seq)
        decimal_inc(t->seq_text, &t->seq_text_len);
    else if (!t->seq_text_len || t->seq_text_of != seq)
        t->seq_text_len = sophia_fmt_u64(t->seq_text, seq);
    t->seq_text_of = seq;
    *n = t->seq_text_len;
    return t->seq_text;
}

/* One topic's message for publish p: its head, the seq, and the tail
 * every topic's message of p shares (ws_pub), written straight into the
 * message's block. t: as for topic_head. */
static ws_msg *render_msg(sophia_ws_router *r, const ws_pub *p,
                          const char *topic, ws_topic *t, uint64_t seq)
{
    size_t hl, nl = t ? t->name_len : strlen(topic);
    const char *head = topic_head(r, t, p->type, p->type_len, topic, nl, &hl);
    char buf[24];
    size_t nd;
    const char *digits = seq_text(t, seq, buf, &nd);
    ws_msg *m = head ? ws_msg_alloc_keyed(hl + nd + p->tlen, LWS_PRE,
                                          p->metric ? topic : NULL, nl,
                                          p->metric, p->metric_len)
                     : NULL;
    if (!m)
        return NULL;
    char *b = (char *)m->buf + LWS_PRE;
    memcpy(b, head, hl);
    memcpy(b + hl, digits, nd);
    memcpy(b + hl + nd, p->text, p->tlen);
    m->pubid = p->pubid;
    return m;
}

ws_msg *ws_topic_msg(sophia_ws_router *r, const ws_topic *t, size_t i)
{
    ws_hist_entry *e = ws_history_at(&t->hist, i);
    if (e && !e->m)
        e->m = render_msg(r, e->p, t->name, NULL, e->seq); /* kept for the next */
    return e ? e->m : NULL;
}

static void deliver(sophia_ws_router *r, sophia_ws_client *c, ws_msg *m)
{
    if (c->stamp == r->stamp)
        return;
    c->stamp = r->stamp;
    ws_client_send(c, m);
}

/* Subscribers of `topic` (t, or NULL when it is not recorded) through
 * patterns: one lookup per prefix length some pattern uses. The message
 * is rendered for the first of them, if *m is not yet (the topic had no
 * direct subscriber). */
static void deliver_patterns(sophia_ws_router *r, const char *topic,
                             ws_topic *t, uint64_t seq, const ws_pub *p,
                             ws_msg **m)
{
    if (!r->npatterns)
        return; /* the usual case: a walk of the topic's length for nothing */
    char prefix[WS_MAX_TOPIC + 1];
    size_t len = strlen(topic);
    for (size_t n = 0; n <= len && n <= WS_MAX_TOPIC; n++) {
        if (!r->plen[n])
            continue;
        memcpy(prefix, topic, n);
        prefix[n] = '\0';
        ws_subs *ps = sophia_dict_get(r->patterns, prefix);
        if (ps && ps->n && !*m && !(*m = render_msg(r, p, topic, t, seq)))
            return;
        for (size_t k = 0; ps && k < ps->n; k++)
            deliver(r, ps->v[k], *m);
    }
}

/* A publish to a topic that does not exist while websocket.max_topics
 * are held (topic names come from event data, so this is what a flood of
 * made-up names meets): no topic, seq or history is created; the message
 * still reaches the pattern subscribers live (an exact subscriber would
 * have created the topic), with the cluster's seq or 0 = not recorded,
 * nothing to replay. */
static void unrecorded(sophia_ws_router *r, const ws_pub *p, const char *topic,
                       uint64_t seq)
{
    r->st.topics_refused++;
    ws_msg *m = NULL;
    deliver_patterns(r, topic, NULL, seq, p, &m);
    ws_msg_unref(m);
}

/* One topic's share of a publish: rendered only for whoever takes it now
 * (subscribers, patterns, a dashboard's latest value); the history keeps
 * only the shared pub (ws_history.h), so the message goes with the last
 * queue or latest value holding it, while it is still in cache, not when
 * the ring drops the entry a history's turn later. */
static void route_topic(sophia_ws_router *r, ws_topic *t, const ws_pub *p,
                        int64_t now)
{
    ws_msg *m = t->subs.n ? render_msg(r, p, t->name, t, t->seq) : NULL;
    for (size_t k = 0; m && k < t->subs.n; k++)
        deliver(r, t->subs.v[k], m);
    if (r->npatterns) /* the usual case is none: no call */
        deliver_patterns(r, t->name, t, t->seq, p, &m);
    if (p->metric && t->dashboard &&
        (m || (m = render_msg(r, p, t->name, t, t->seq))))
        ws_latest_put_hashed(r->latest, t->name, t->name_hash, p->metric,
                             p->metric_len, m,
                             sophia_clock_wall_us(&r->clock) / 1000);
    ws_history_add(&t->hist, t->seq, now, r->history_age_us, (ws_pub *)p);
    ws_msg_unref(m);
}

/* The i-th topic of a publish, named `name`: the last publish's i-th
 * when it has that name, else as ws_topic_get finds it (NULL: none).
 * The host's updates name their topics in one order, mostly the same
 * ones publish after publish, so one comparison answers where the
 * recent cache hashes the name first. topic_remove clears a slot whose
 * topic goes. */
static ws_topic *topic_at(sophia_ws_router *r, size_t i, const char *name)
{
    ws_topic *t = i < WS_LAST_TOPICS ? r->last[i] : NULL;
    return t && strcmp(t->name, name) == 0 ? t : ws_topic_get(r, name, 0);
}

/* Routes one publish whose data is `text` (len bytes of JSON, NULL when
 * out of memory) to each of `topics`. */
static void route_text(sophia_ws_router *r, const char *type,
                       const char *const *topics, const uint64_t *seqs,
                       size_t ntopics, const char *dashboard_id,
                       const char *metric, const char *text, size_t len)
{
    int64_t now = sophia_clock_mono_us(&r->clock);
    r->stamp++;
    r->pubid++;
    ws_pub *p = text ? ws_pub_new(r->pubid, type, dashboard_id, metric, text,
                                  len)
                     : NULL;
    for (size_t i = 0; p && i < ntopics; i++) {
        ws_topic *t = topic_at(r, i, topics[i]);
        if (!t && sophia_dict_size(r->topics) >= r->max_topics) {
            unrecorded(r, p, topics[i], seqs ? seqs[i] : 0);
            continue;
        }
        if (!t && !(t = ws_topic_get(r, topics[i], 1)))
            continue;
        if (i < WS_LAST_TOPICS)
            r->last[i] = t;
        t->seq = seqs ? seqs[i] : t->seq + 1;
        t->last_us = now;
        route_topic(r, t, p, now);
    }
    ws_pub_unref(p);
    ws_kick_if_owed(r);
}

void sophia_ws_route(sophia_ws_router *r, const char *type,
                     const char *const *topics, const uint64_t *seqs,
                     size_t ntopics, const char *dashboard_id, json_t *data)
{
    /* encoded into a buffer the router keeps: ws_pub_new copies it */
    sophia_jsonw *w = &r->data;
    sophia_jsonw_clear(w);
    sophia_jsonw_append(w, data ? data : json_null());
    const char *metric = strcmp(type, "metric") == 0
                             ? json_string_value(json_object_get(data, "metric"))
                             : NULL;
    route_text(r, type, topics, seqs, ntopics, dashboard_id, metric,
               w->failed ? NULL : w->p, w->len);
}

/* 1 when the publish goes through the cluster (delivered here when it
 * comes back from the channel), 0 when this node routes it now. */
static int via_cluster(sophia_ws_router *r)
{
    if (!r->cluster)
        return 0;
    if (!sophia_cluster_ready(r->cluster)) {
        r->st.cluster_fallback++;
        return 0;
    }
    if (sophia_cluster_alone(r->cluster)) {
        r->st.cluster_alone++; /* nobody else to tell: see cluster.h */
        return 0;
    }
    return 1;
}

/* 0 when the cluster took it, else -1: route it here. */
static int cluster_publish(sophia_ws_router *r, const char *type,
                           const char *const *topics, size_t ntopics,
                           const char *dashboard_id, json_t *data)
{
    if (data && sophia_cluster_publish(r->cluster, type, topics, ntopics,
                                       dashboard_id, data) == 0) {
        r->st.cluster_out++;
        return 0;
    }
    r->st.cluster_fallback++;
    return -1;
}

void sophia_ws_publish(sophia_ws_router *r, const char *type,
                       const char *const *topics, size_t ntopics,
                       const char *dashboard_id, json_t *data)
{
    r->st.published++;
    if (via_cluster(r) &&
        cluster_publish(r, type, topics, ntopics, dashboard_id, data) == 0)
        return;
    sophia_ws_route(r, type, topics, NULL, ntopics, dashboard_id, data);
}

void sophia_ws_publish_text(sophia_ws_router *r, const char *type,
                            const char *const *topics, size_t ntopics,
                            const char *dashboard_id, const char *metric,
                            const char *text, size_t len)
{
    r->st.published++;
    if (via_cluster(r)) { /* the channel carries a value: parsed for it */
        json_t *data = json_loadb(text, len, JSON_DECODE_ANY, NULL);
        int rc = cluster_publish(r, type, topics, ntopics, dashboard_id, data);
        json_decref(data);
        if (rc == 0)
            return;
    }
    route_text(r, type, topics, NULL, ntopics, dashboard_id, metric, text, len);
}

/* ---------------------------------------------------------------- sweep */

/* A topic nobody subscribes to whose history has aged out holds nothing
 * a client could still ask for. */
static int topic_idle(const sophia_ws_router *r, ws_topic *t, int64_t now)
{
    if (t->subs.n)
        return 0;
    ws_history_prune(&t->hist, now, r->history_age_us);
    return t->hist.len == 0 && now - t->last_us >= r->history_age_us;
}

/* Frees idle topics for WS_SWEEP_BUDGET_US per run, resuming where the
 * last run stopped; the seq floor keeps a freed topic's seqs from coming
 * back (topic_base). */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_ws_router *r = arg;
    int64_t now = sophia_now_mono_us();
    ws_topic *t = r->sweep_at ? r->sweep_at : r->tlist;
    for (unsigned n = 1; t; n++) {
        ws_topic *next = t->next;
        if (topic_idle(r, t, now)) {
            if (t->seq > r->seq_floor)
                r->seq_floor = t->seq;
            r->st.topics_freed++;
            topic_remove(r, t);
        }
        t = next;
        if (n % 32 == 0 && sophia_now_mono_us() - now >= WS_SWEEP_BUDGET_US)
            break;
    }
    r->sweep_at = t;
    struct timeval soon = {0, WS_SWEEP_US}, later = {WS_SWEEP_PASS_S, 0};
    event_add(r->sweep_ev, t ? &soon : &later); /* more to visit, or done */
}

/* ------------------------------------------------------------- router */

static int64_t secs_us(double s)
{
    return (int64_t)(s * 1e6);
}

static void router_free_settings(sophia_ws_router *r)
{
    for (size_t i = 0; i < r->norigins; i++)
        free(r->origins[i]);
    free(r->origins);
    free(r->secret);
    free(r->jwt_issuer);
    free(r->jwt_audience);
    r->origins = NULL;
    r->norigins = 0;
    r->secret = NULL;
    r->jwt_issuer = r->jwt_audience = NULL;
}

static void router_configure(sophia_ws_router *r, const sophia_conf *cf)
{
    router_free_settings(r);
    r->history = 256;
    r->history_age_us = secs_us(300);
    r->ping_us = secs_us(25);
    r->pong_us = secs_us(10);
    r->auth_us = secs_us(5);
    r->max_conn = 10000;
    r->max_subs = 256;
    r->max_msg = 64 * 1024;
    r->max_topics = 100000;
    r->jwt_require_exp = 1;
    if (cf) {
        r->history = cf->ws.history;
        r->history_age_us = secs_us(cf->ws.history_age);
        r->ping_us = secs_us(cf->ws.ping_interval);
        r->pong_us = secs_us(cf->ws.pong_timeout);
        r->auth_us = secs_us(cf->ws.auth_timeout);
        r->max_conn = cf->ws.max_connections;
        r->max_subs = cf->ws.max_subscriptions;
        r->max_msg = cf->ws.max_message;
        r->coalesce_at = cf->ws.coalesce_at;
        r->max_topics = cf->ws.max_topics;
        r->jwt_require_exp = cf->ws.jwt_require_exp;
        r->compression = cf->ws.compression;
        r->compression_min = cf->ws.compression_min;
        if (cf->ws.jwt_issuer)
            r->jwt_issuer = strdup(cf->ws.jwt_issuer);
        if (cf->ws.jwt_audience)
            r->jwt_audience = strdup(cf->ws.jwt_audience);
        if (cf->ws.auth_secret && *cf->ws.auth_secret)
            r->secret = strdup(cf->ws.auth_secret);
        /* copied: a reload may free the configuration we were built from */
        r->origins = calloc(cf->ws.norigins + 1, sizeof(char *));
        for (size_t i = 0; r->origins && i < cf->ws.norigins; i++)
            if ((r->origins[r->norigins] = strdup(cf->ws.origins[i])))
                r->norigins++;
    }
    if (!r->coalesce_at || r->coalesce_at > r->max_queue)
        r->coalesce_at = r->max_queue / 2;
}

/* The tick runs often enough to honour the shortest deadline to ~25%. */
static void router_start_timer(sophia_ws_router *r)
{
    if (!r->loop)
        return;
    int64_t us = r->ping_us < r->pong_us ? r->ping_us : r->pong_us;
    if (r->secret && r->auth_us < us)
        us = r->auth_us;
    us /= 4;
    if (us < 20000)
        us = 20000;
    if (us > 1000000)
        us = 1000000;
    if (r->tick)
        event_free(r->tick);
    r->tick = event_new(sophia_loop_base(r->loop), -1, EV_PERSIST, ws_on_tick, r);
    struct timeval tv = {us / 1000000, us % 1000000};
    if (r->tick)
        event_add(r->tick, &tv);
}

/* cluster.redis, else redis.url unless cluster.enabled is false: nodes
 * sharing a Redis are one cluster by default (cluster.h). */
static const char *cluster_url(const sophia_conf *cf)
{
    if (cf->cluster.enabled == 0)
        return NULL;
    if (cf->cluster.redis && *cf->cluster.redis)
        return cf->cluster.redis;
    return cf->redis_url && *cf->redis_url ? cf->redis_url : NULL;
}

/* The cluster delivers to the router through these (cluster.h). */
static void sink_route(void *arg, const char *type, const char *const *topics,
                       const uint64_t *seqs, size_t ntopics,
                       const char *dashboard_id, json_t *data)
{
    sophia_ws_route(arg, type, topics, seqs, ntopics, dashboard_id, data);
}

static uint64_t sink_topic_seq(void *arg, const char *topic)
{
    return sophia_ws_topic_seq(arg, topic);
}

static void router_start_cluster(sophia_ws_router *r, const sophia_conf *cf)
{
    const char *url = cf ? cluster_url(cf) : NULL;
    sophia_cluster_sink sink = {sink_route, sink_topic_seq, r};
    if (!url || !r->loop)
        return;
    r->cluster = sophia_cluster_new(sophia_loop_base(r->loop), url,
                                    cf->cluster.node_id, &sink);
    sophia_cluster_set_seq_ttl(r->cluster, (double)r->history_age_us / 1e6);
}

sophia_ws_router *sophia_ws_router_new(sophia_loop *loop, const sophia_conf *conf,
                                       size_t max_queue)
{
    sophia_ws_router *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    sophia_clock_init(&r->clock, loop ? sophia_loop_base(loop) : NULL);
    r->max_queue = max_queue ? max_queue : 1024;
    router_configure(r, conf);
    r->topics = sophia_dict_new();
    r->patterns = sophia_dict_new();
    r->by_id = sophia_dict_new();
    r->latest = ws_latest_new(WS_LATEST_TOPICS, WS_LATEST_METRICS);
    r->gather = malloc(LWS_PRE + WS_GATHER_MAX);
    if (loop) {
        struct timeval tv = {0, WS_SWEEP_US};
        r->flush_ev = event_new(sophia_loop_base(loop), -1, 0, ws_on_flush, r);
        r->sweep_ev = event_new(sophia_loop_base(loop), -1, 0, on_sweep, r);
        if (r->sweep_ev)
            event_add(r->sweep_ev, &tv);
    }
    if (!r->topics || !r->patterns || !r->by_id || !r->latest || !r->gather) {
        sophia_ws_router_free(r);
        return NULL;
    }
    router_start_timer(r);
    router_start_cluster(r, conf);
    return r;
}

void sophia_ws_set_backlog(sophia_ws_router *r, sophia_ws_backlog_fn fn,
                           void *arg)
{
    r->backlog = fn;
    r->backlog_arg = arg;
}

static void topic_resize(const char *name, void *val, void *arg)
{
    (void)name;
    ws_history_resize(&((ws_topic *)val)->hist, *(size_t *)arg);
}

static int secret_changed(const char *was, const char *now)
{
    return (was == NULL) != (now == NULL) || (was && strcmp(was, now) != 0);
}

/* The secret and websocket.jwt as one comparable text: tokens accepted
 * under other rules are re-checked (a tightened policy must not leave old
 * tokens connected). */
static char *auth_rules(const sophia_ws_router *r)
{
    char *s = NULL;
    if (!r->secret)
        return NULL;
    if (asprintf(&s, "%s\n%d\n%s\n%s", r->secret, r->jwt_require_exp,
                 r->jwt_issuer ? r->jwt_issuer : "", r->jwt_audience ? r->jwt_audience : "") < 0)
        return NULL;
    return s;
}

/* Existing connections under the new settings: a queue longer than the
 * new max_queue goes as for a slow client; with a new (or first) secret
 * nobody's standing is known, so everyone authenticates again (4001 makes
 * the dashboard ask for, or resend, its token). */
static void reconfigure_clients(sophia_ws_router *r, int reauth)
{
    for (sophia_ws_client *c = r->clients; c; c = c->next) {
        if (c->close_code)
            continue;
        if (reauth) {
            ws_client_request_close(c, WS_CLOSE_AUTH,
                                    "auth settings changed: authenticate again");
            continue;
        }
        if (c->qlen - c->tombs > r->max_queue)
            ws_client_drop_slow(c);
    }
}

void sophia_ws_reconfigure(sophia_ws_router *r, const sophia_conf *cf)
{
    char *was_rules = auth_rules(r);
    size_t was_history = r->history;
    if (cf && cf->ws.max_queue)
        r->max_queue = cf->ws.max_queue;
    router_configure(r, cf);
    if (r->history != was_history)
        sophia_dict_each(r->topics, topic_resize, &r->history);
    router_start_timer(r);
    sophia_cluster_set_seq_ttl(r->cluster, (double)r->history_age_us / 1e6);
    char *rules = auth_rules(r);
    reconfigure_clients(r, rules && secret_changed(was_rules, rules));
    free(was_rules);
    free(rules);
    ws_kick(r);
    sophia_info("ws", "msg=\"settings reloaded\" max_queue=%zu history=%zu auth=%s origins=%zu",
                r->max_queue, r->history, r->secret ? "on" : "off", r->norigins);
}

static void topic_free(void *p)
{
    ws_topic *t = p;
    ws_history_free(&t->hist);
    free(t->subs.v);
    free(t->name);
    free(t->head);
    free(t);
}

void sophia_ws_router_free(sophia_ws_router *r)
{
    if (!r)
        return;
    while (r->clients) /* lws is gone: nothing more will call us */
        sophia_ws_closed(r->clients);
    sophia_cluster_free(r->cluster);
    if (r->tick)
        event_free(r->tick);
    if (r->rearm_ev)
        event_free(r->rearm_ev);
    if (r->flush_ev)
        event_free(r->flush_ev);
    if (r->sweep_ev)
        event_free(r->sweep_ev);
    free(r->rearm);
    free(r->dirty);
    free(r->gather);
    sophia_jsonw_reset(&r->render);
    sophia_jsonw_reset(&r->data);
    sophia_jsonw_reset(&r->mpack);
    ws_deflater_free(r->deflater);
    if (r->topics)
        sophia_dict_free(r->topics, topic_free);
    if (r->patterns)
        sophia_dict_free(r->patterns, subs_free);
    if (r->by_id)
        sophia_dict_free(r->by_id, NULL);
    ws_latest_free(r->latest);
    json_decref(r->pending_claims);
    router_free_settings(r);
    free(r);
}

void sophia_ws_close_all(sophia_ws_router *r)
{
    for (sophia_ws_client *c = r->clients; c; c = c->next)
        ws_client_request_close(c, LWS_CLOSE_STATUS_GOINGAWAY, "server shutdown");
}
