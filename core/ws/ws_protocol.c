/*
 * ws_protocol - what a client says and what it is allowed (SPEC §5):
 * parsing its JSON messages (subscribe, unsubscribe, ping, auth,
 * request), the upgrade filter (connection limit, origin, token), token
 * scopes, `since` replay from the history rings, the built-in `history`
 * and `latest` requests, and the request methods other layers register
 * with the router (the table lives in the router: see ws.h).
 *
 * A message is parsed with a depth bound first (jsonlimit.h): clients are
 * untrusted, and jansson recurses.
 */
#include "ws/ws.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/bearer.h"
#include "lib/jsonlimit.h"
#include "lib/log.h"
#include "ws/origin.h"
#include "ws/ws_history.h"
#include "ws/ws_jwt.h"
#include "ws/ws_latest.h"
#include "ws/ws_msgpack.h"
#include "ws/ws_priv.h"

/* ---------------------------------------------------------------- auth */

int ws_auth_enabled(const sophia_ws_router *r)
{
    return r->secret != NULL;
}

/* SPEC §5 scopes: with auth on, a token grants only the kinds of access
 * its claims name (`topics`, `cache`, `memory`, `stats`); a missing claim
 * grants nothing of that kind. With auth off (loopback only), all. */

/* `s` within one of the patterns of claim `name` (an array of strings,
 * checked by ws_jwt.c). */
static int pattern_permitted(const sophia_ws_client *c, const char *name,
                             const char *s)
{
    json_t *allowed = json_object_get(c->claims, name), *a;
    size_t i;
    if (!ws_auth_enabled(c->r))
        return 1;
    json_array_foreach(allowed, i, a)
        if (sophia_jwt_topic_allowed(json_string_value(a), s))
            return 1;
    return 0;
}

static int topic_permitted(const sophia_ws_client *c, const char *s)
{
    return pattern_permitted(c, "topics", s);
}

/* The `forbidden` message: which claim is missing, or that `what` is
 * outside it. */
static void scope_message(const sophia_ws_client *c, const char *claim,
                          const char *what, char *out, size_t n)
{
    if (!json_object_get(c->claims, claim))
        snprintf(out, n, "the token has no \"%s\" scope claim", claim);
    else
        snprintf(out, n, "%s is outside the token's \"%s\" scope",
                 what ? what : "the request", claim);
}

void ws_client_set_claims(sophia_ws_client *c, json_t *claims)
{
    json_decref(c->claims);
    c->claims = claims;
    c->authed = 1;
    json_t *exp = json_object_get(claims, "exp");
    c->exp = exp ? json_number_value(exp) : 0;
}

static sophia_jwt_status verify(sophia_ws_router *r, const char *token,
                                json_t **claims)
{
    sophia_jwt_policy pol = {r->jwt_require_exp, r->jwt_issuer, r->jwt_audience};
    sophia_jwt_status st = sophia_jwt_verify_policy(
        token, r->secret, sophia_now_wall_us() / 1000000, &pol, claims);
    if (st != SOPHIA_JWT_OK)
        r->st.auth_failures++;
    return st;
}

/* The token of an upgrade request: ?token= or Authorization: Bearer. */
static char *upgrade_token(struct lws *wsi)
{
    char buf[4096];
    const char *v = lws_get_urlarg_by_name(wsi, "token=", buf, sizeof(buf));
    if (v && *v)
        return strdup(v);
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n <= 0 || n >= (int)sizeof(buf) ||
        lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
        return NULL;
    const char *token = sophia_bearer_token(buf);
    return token ? strdup(token) : NULL;
}

/* Same-origin by default (origin.h): a page served by another site may
 * not open /ws in its visitor's browser unless websocket.origins lists it
 * (or "*"). Over-long headers are nobody's own origin. */
static int origin_allowed(const sophia_ws_router *r, struct lws *wsi)
{
    char o[512], h[512];
    int on = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    int hn = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    if (on <= 0)
        return 1;
    if (on >= (int)sizeof(o) || hn >= (int)sizeof(h) ||
        lws_hdr_copy(wsi, o, sizeof(o), WSI_TOKEN_ORIGIN) < 0)
        return 0;
    if (hn <= 0 || lws_hdr_copy(wsi, h, sizeof(h), WSI_TOKEN_HOST) < 0)
        h[0] = '\0';
    return sophia_origin_allowed(o, h, r->origins, r->norigins);
}

static int refuse(sophia_ws_router *r, struct lws *wsi, unsigned code,
                  const char *why)
{
    r->st.refused++;
    sophia_debug("ws", "msg=\"upgrade refused\" status=%u why=\"%s\"", code, why);
    lws_return_http_status(wsi, code, why);
    return 1;
}

int sophia_ws_filter(sophia_ws_router *r, struct lws *wsi)
{
    if (!r)
        return 1;
    if (r->st.connections >= r->max_conn)
        return refuse(r, wsi, 503, "too many WebSocket connections");
    if (!origin_allowed(r, wsi))
        return refuse(r, wsi, 403, "origin not allowed");
    json_decref(r->pending_claims);
    r->pending_claims = NULL;
    r->pending_wsi = NULL;
    if (!ws_auth_enabled(r))
        return 0;
    char *token = upgrade_token(wsi);
    if (!token) /* may still authenticate with a first `auth` message */
        return 0;
    json_t *claims = NULL;
    sophia_jwt_status st = verify(r, token, &claims);
    free(token);
    if (st != SOPHIA_JWT_OK)
        return refuse(r, wsi, 401, sophia_jwt_strerror(st));
    r->pending_wsi = wsi;
    r->pending_claims = claims;
    return 0;
}

static void on_auth_message(sophia_ws_client *c, json_t *msg)
{
    const char *token = json_string_value(json_object_get(msg, "token"));
    json_t *claims = NULL;
    if (!ws_auth_enabled(c->r)) {
        ws_client_send_json(c, json_pack("{s:s}", "type", "authenticated"));
        return;
    }
    sophia_jwt_status st = token ? verify(c->r, token, &claims)
                                 : SOPHIA_JWT_MALFORMED;
    if (!token)
        c->r->st.auth_failures++;
    if (st != SOPHIA_JWT_OK) {
        ws_client_request_close(c, WS_CLOSE_AUTH, sophia_jwt_strerror(st));
        return;
    }
    ws_client_set_claims(c, claims);
    json_t *ok = json_pack("{s:s}", "type", "authenticated");
    json_t *sub = json_object_get(claims, "sub");
    if (json_is_string(sub))
        json_object_set(ok, "sub", sub);
    ws_client_send_json(c, ok);
}

/* ------------------------------------------------------------ recovery */

typedef struct replay_item {
    uint64_t pubid;
    ws_msg *m;
} replay_item;

static int replay_cmp(const void *a, const void *b)
{
    uint64_t x = ((const replay_item *)a)->pubid,
             y = ((const replay_item *)b)->pubid;
    return x < y ? -1 : x > y;
}

static void send_resync(sophia_ws_client *c, const char *topic, uint64_t seq)
{
    c->r->st.resyncs++;
    ws_client_send_json(c, json_pack("{s:s,s:s,s:I}", "type", "resync", "topic",
                                     topic, "seq", (json_int_t)seq));
}

/* Collects the history newer than since[topic] for every topic the client
 * now covers; answers resync where that is gone. */
static size_t replay_collect(sophia_ws_client *c, json_t *since,
                             replay_item **out, size_t *cap)
{
    sophia_ws_router *r = c->r;
    int64_t now = sophia_now_mono_us();
    const char *topic;
    json_t *v;
    size_t n = 0;
    json_object_foreach(since, topic, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            !ws_topic_valid(topic) || ws_is_pattern(topic) || !ws_client_covers(c, topic))
            continue;
        ws_topic *t = ws_topic_get(r, topic, 0);
        uint64_t cur = t ? t->seq : 0, s = (uint64_t)json_integer_value(v);
        size_t first = 0, k = 0;
        if (t)
            ws_history_prune(&t->hist, now, r->history_age_us);
        if (!t ? s != 0 : ws_history_since(&t->hist, s, cur, &first, &k) != WS_HIST_OK) {
            send_resync(c, topic, cur);
            continue;
        }
        if (n + k > *cap) {
            size_t nc = (n + k) * 2;
            replay_item *p = realloc(*out, nc * sizeof(*p));
            if (!p)
                break;
            *out = p;
            *cap = nc;
        }
        for (size_t i = 0; i < k; i++) {
            ws_msg *m = ws_topic_msg(r, t, first + i);
            if (m)
                (*out)[n++] = (replay_item){m->pubid, m};
        }
    }
    return n;
}

static void replay(sophia_ws_client *c, json_t *since)
{
    replay_item *items = NULL;
    size_t cap = 0, n = replay_collect(c, since, &items, &cap);
    if (n > 1)
        qsort(items, n, sizeof(*items), replay_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i && items[i].pubid == items[i - 1].pubid)
            continue; /* the same publish, replayed for another topic */
        ws_client_send(c, items[i].m);
        c->r->st.recovered++;
    }
    free(items);
    ws_kick(c->r);
}

/* --------------------------------------------------------- protocol */

/* 1 when the token's `topics` scope covers `topic`; else answers request
 * `id` (NULL for a subscription) with `forbidden` and returns 0. */
static int topic_allowed(sophia_ws_client *c, const char *id, const char *topic)
{
    char m[300], what[240];
    if (topic_permitted(c, topic))
        return 1;
    c->r->st.forbidden++;
    snprintf(what, sizeof(what), "topic '%s'", topic);
    scope_message(c, "topics", what, m, sizeof(m));
    ws_client_error(c, id, "forbidden", m);
    return 0;
}

static int sub_one(sophia_ws_client *c, const char *s)
{
    char m[300];
    if (!topic_allowed(c, NULL, s))
        return -1;
    if (ws_client_subscribe(c, s) < 0) {
        snprintf(m, sizeof(m), "at most %zu subscriptions per connection",
                 c->r->max_subs);
        ws_client_error(c, NULL, "too_many_subscriptions", m);
        return -1;
    }
    return 0;
}

/* subscribe/unsubscribe share the validation and the answer's shape. */
static void on_sub_message(sophia_ws_client *c, json_t *msg, int subscribe)
{
    json_t *subs = json_object_get(msg, "subscriptions");
    json_t *since = subscribe ? json_object_get(msg, "since") : NULL;
    if (!json_is_array(subs) || (since && !json_is_object(since))) {
        ws_client_error(c, NULL, "bad_request",
                        "\"subscriptions\" must be an array of topic strings "
                     "and \"since\" an object of topic: seq");
        return;
    }
    json_t *done = json_array(), *v;
    size_t i;
    json_array_foreach(subs, i, v) {
        const char *s = json_string_value(v);
        if (!s || !ws_topic_valid(s)) {
            ws_client_error(c, NULL, "bad_topic",
                            "topics are 1-200 printable characters; '*' only at the end");
            continue;
        }
        if (!subscribe)
            ws_client_unsubscribe(c, s);
        else if (sub_one(c, s) < 0)
            continue;
        json_array_append(done, v);
    }
    ws_client_send_json(c, json_pack("{s:s,s:o}", "type",
                                     subscribe ? "subscribed" : "unsubscribed",
                                  "subscriptions", done));
    if (since)
        replay(c, since);
}

static void respond(sophia_ws_client *c, const char *id, json_t *data)
{
    json_t *res = json_pack("{s:s,s:o}", "type", "response", "data",
                            data ? data : json_null());
    if (id)
        json_object_set_new(res, "id", json_string(id));
    ws_client_send_json(c, res);
}

/* request `history`: {topic, since = 0, limit = 100}. */
static void method_history(sophia_ws_client *c, const char *id, json_t *p)
{
    const char *topic = json_string_value(json_object_get(p, "topic"));
    json_t *js = json_object_get(p, "since"), *jl = json_object_get(p, "limit");
    if (!topic || !ws_topic_valid(topic) || ws_is_pattern(topic) ||
        (js && !json_is_integer(js)) || (jl && !json_is_integer(jl))) {
        ws_client_error(c, id, "bad_request", "history needs params {\"topic\": "
                        "an exact topic, \"since\"?: seq, \"limit\"?: count}");
        return;
    }
    if (!topic_allowed(c, id, topic))
        return;
    ws_topic *t = ws_topic_get(c->r, topic, 0);
    json_int_t since = js ? json_integer_value(js) : 0;
    json_int_t limit = jl ? json_integer_value(jl) : 100;
    json_t *msgs = json_array();
    int complete = 1;
    if (t) {
        ws_history_prune(&t->hist, sophia_now_mono_us(), c->r->history_age_us);
        size_t first = 0, n = 0;
        uint64_t s = since < 0 ? 0 : (uint64_t)since;
        if (ws_history_since(&t->hist, s, t->seq, &first, &n) != WS_HIST_OK) {
            complete = 0; /* give what is left */
            first = 0;
            n = t->hist.len;
        }
        for (size_t i = 0; i < n && (json_int_t)i < limit; i++) {
            const ws_hist_entry *e = ws_history_at(&t->hist, first + i);
            ws_msg *m = e->seq > s ? ws_topic_msg(c->r, t, first + i) : NULL;
            if (m)
                json_array_append_new(msgs, json_loads(ws_msg_text(m, LWS_PRE),
                                                       0, NULL));
        }
        if ((json_int_t)n > limit)
            complete = 0;
    }
    respond(c, id, json_pack("{s:s,s:I,s:o,s:b}", "topic", topic, "seq",
                             (json_int_t)(t ? t->seq : 0), "messages", msgs,
                             "complete", complete));
}

/* request `latest`: {topic} - a dashboard topic's latest update of each
 * metric (ws_latest.h), oldest first, each as it was sent (with its seq),
 * and the topic's seq now. What history has aged out of is still here. */
static void method_latest(sophia_ws_client *c, const char *id, json_t *p)
{
    const char *topic = json_string_value(json_object_get(p, "topic"));
    if (!topic || !ws_topic_valid(topic) || ws_is_pattern(topic)) {
        ws_client_error(c, id, "bad_request",
                        "latest needs params {\"topic\": an exact topic}");
        return;
    }
    if (!topic_allowed(c, id, topic))
        return;
    ws_msg **v = NULL;
    size_t n = ws_latest_get(c->r->latest, topic, &v);
    json_t *msgs = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(msgs, json_loads(ws_msg_text(v[i], LWS_PRE), 0, NULL));
    free(v);
    const ws_topic *t = ws_topic_get(c->r, topic, 0);
    respond(c, id, json_pack("{s:s,s:I,s:o}", "topic", topic, "seq",
                             (json_int_t)(t ? t->seq : 0), "messages", msgs));
}

static const ws_method *method_find(const sophia_ws_router *r, const char *name)
{
    for (size_t i = 0; i < WS_MAX_METHODS; i++)
        if (r->methods[i].fn && strcmp(r->methods[i].name, name) == 0)
            return &r->methods[i];
    return NULL;
}

/* Lists stats first when registered, as before it was: the names clients
 * were told stay in the order they were. */
static void unknown_method(sophia_ws_client *c, const char *id)
{
    const ws_method *v = c->r->methods;
    char m[1024] = "method must be one of: ";
    size_t o = strlen(m);
    o += (size_t)snprintf(m + o, sizeof(m) - o, "%shistory, latest",
                          method_find(c->r, "stats") ? "stats, " : "");
    for (size_t i = 0; i < WS_MAX_METHODS && o < sizeof(m); i++)
        if (v[i].fn && strcmp(v[i].name, "stats") != 0)
            o += (size_t)snprintf(m + o, sizeof(m) - o, ", %s", v[i].name);
    ws_client_error(c, id, "unknown_method", m);
}

/* A method's scope kind follows its name, so whoever registers stats, a
 * cache.* or a memory.* method gets the check without asking for it. */
static ws_scope method_scope(const char *name)
{
    if (strcmp(name, "stats") == 0)
        return WS_SCOPE_STATS;
    if (strncmp(name, "cache.", 6) == 0)
        return WS_SCOPE_CACHE;
    if (strncmp(name, "memory.", 7) == 0)
        return WS_SCOPE_MEMORY;
    return WS_SCOPE_NONE;
}

/* A context value as text, the form memory search filters compare. */
static const char *scalar_text(const json_t *v, char *buf, size_t n)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf;
    }
    if (json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    return NULL;
}

/* 1 when every key of `scope` is absent from `ctx` or has the same value
 * there. */
static int scope_fits(const json_t *scope, const json_t *ctx)
{
    const char *k;
    json_t *sv;
    json_object_foreach((json_t *)scope, k, sv) {
        json_t *cv = json_object_get(ctx, k);
        char a[32], b[32];
        const char *st = scalar_text(sv, a, sizeof(a)), *ct;
        if (cv && (!(ct = scalar_text(cv, b, sizeof(b))) || !st || strcmp(st, ct)))
            return 0;
    }
    return 1;
}

/* The params a memory.* method runs with: params.context narrowed to the
 * first of the token's `memory` scopes it fits, the scope's keys filled
 * in, so a search without a context is filtered to that scope and one
 * naming another user_id fits none. NULL (with *code and `why`) when
 * refused; otherwise a new reference. */
static json_t *memory_params(const sophia_ws_client *c, json_t *params,
                             const char **code, char *why, size_t n)
{
    json_t *scopes = json_object_get(c->claims, "memory"), *sc;
    json_t *ctx = json_object_get(params, "context");
    size_t i;
    *code = "forbidden";
    if (!scopes) {
        scope_message(c, "memory", NULL, why, n);
        return NULL;
    }
    if ((params && !json_is_object(params)) || (ctx && !json_is_object(ctx))) {
        *code = "bad_request";
        snprintf(why, n, "params and params.context must be objects");
        return NULL;
    }
    for (i = 0; i < (json_is_array(scopes) ? json_array_size(scopes) : 1); i++) {
        sc = json_is_array(scopes) ? json_array_get(scopes, i) : scopes;
        if (!scope_fits(sc, ctx))
            continue;
        json_t *p = params ? json_deep_copy(params) : json_object();
        json_t *nc = ctx ? json_deep_copy(ctx) : json_object();
        json_object_update(nc, sc);
        json_object_set_new(p, "context", nc);
        return p;
    }
    scope_message(c, "memory", "params.context", why, n);
    return NULL;
}

/* Runs a registered method once the token's scope allows it. */
static void call_method(sophia_ws_client *c, const ws_method *m, const char *id,
                        json_t *params)
{
    char why[600], what[480];
    const char *code = "forbidden";
    json_t *own = NULL;
    if (ws_auth_enabled(c->r) && m->scope == WS_SCOPE_CACHE) {
        const char *key = json_string_value(json_object_get(params, "key"));
        snprintf(what, sizeof(what), "key '%.400s'", key ? key : "");
        if (!json_object_get(c->claims, "cache") ||
            (key && !pattern_permitted(c, "cache", key))) {
            scope_message(c, "cache", what, why, sizeof(why));
            goto refuse;
        }
    } else if (ws_auth_enabled(c->r) && m->scope == WS_SCOPE_MEMORY) {
        if (!(own = memory_params(c, params, &code, why, sizeof(why))))
            goto refuse;
        params = own;
    } else if (ws_auth_enabled(c->r) && m->scope == WS_SCOPE_STATS &&
               !json_is_true(json_object_get(c->claims, "stats"))) {
        snprintf(why, sizeof(why), "stats needs \"stats\": true in the token "
                 "(the \"stats\" scope claim)");
        goto refuse;
    }
    m->fn(c->r, c->id, id, params, m->arg);
    json_decref(own);
    return;
refuse:
    if (strcmp(code, "forbidden") == 0)
        c->r->st.forbidden++;
    ws_client_error(c, id, code, why);
}

static void on_request(sophia_ws_client *c, json_t *msg)
{
    const char *id = json_string_value(json_object_get(msg, "id"));
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    const ws_method *m = method ? method_find(c->r, method) : NULL;
    if (method && strcmp(method, "history") == 0)
        method_history(c, id, params);
    else if (method && strcmp(method, "latest") == 0)
        method_latest(c, id, params);
    else if (m)
        call_method(c, m, id, params);
    else
        unknown_method(c, id);
}

static void dispatch(sophia_ws_client *c, const char *type, json_t *msg)
{
    if (strcmp(type, "auth") == 0)
        on_auth_message(c, msg);
    else if (ws_auth_enabled(c->r) && !c->authed)
        ws_client_request_close(c, WS_CLOSE_AUTH,
                                "authenticate first: {\"type\":\"auth\",\"token\":...}");
    else if (strcmp(type, "subscribe") == 0)
        on_sub_message(c, msg, 1);
    else if (strcmp(type, "unsubscribe") == 0)
        on_sub_message(c, msg, 0);
    else if (strcmp(type, "ping") == 0)
        ws_client_send_json(c, json_pack("{s:s}", "type", "pong"));
    else if (strcmp(type, "request") == 0)
        on_request(c, msg);
    else
        ws_client_error(c, NULL, "unknown_type",
                        "type must be subscribe, unsubscribe, ping, auth or request");
}

/* A message as an object, whichever encoding it came in. */
static void on_object(sophia_ws_client *c, json_t *msg)
{
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!type)
        ws_client_error(c, NULL, "bad_request", "message needs a \"type\"");
    else
        dispatch(c, type, msg);
}

void ws_on_message(sophia_ws_client *c, const char *text, size_t len)
{
    if (sophia_json_too_deep(text, len, SOPHIA_JSON_MAX_DEPTH)) { /* jsonlimit.h */
        ws_client_error(c, NULL, "too_deep", "message nested deeper than 64 levels");
        return;
    }
    json_error_t err;
    json_t *msg = json_loadb(text, len, 0, &err);
    c->r->st.messages_in++;
    if (!json_is_object(msg)) {
        char m[256];
        snprintf(m, sizeof(m), "message must be a JSON object (%s at %d:%d)",
                 msg ? "not an object" : err.text, err.line, err.column);
        ws_client_error(c, NULL, "bad_json", m);
        json_decref(msg);
        return;
    }
    on_object(c, msg);
    json_decref(msg);
}

void ws_on_binary(sophia_ws_client *c, const void *data, size_t len)
{
    char why[128], m[200];
    json_t *msg = ws_msgpack_decode(data, len, why, sizeof(why));
    c->r->st.messages_in++;
    if (!json_is_object(msg)) {
        snprintf(m, sizeof(m), "message must be a msgpack map (%s)",
                 msg ? "not a map" : why);
        ws_client_error(c, NULL, "bad_msgpack", m);
    } else {
        on_object(c, msg);
    }
    json_decref(msg);
}

/* -------------------------------------------------------------- methods */

int sophia_ws_register_method(sophia_ws_router *r, const char *name,
                              sophia_ws_method_fn fn, void *arg)
{
    if (!r || !name || !fn || strlen(name) >= sizeof(r->methods[0].name) ||
        strcmp(name, "history") == 0 || strcmp(name, "latest") == 0 ||
        method_find(r, name))
        return -1;
    for (size_t i = 0; i < WS_MAX_METHODS; i++) {
        ws_method *m = &r->methods[i];
        if (!m->fn) {
            snprintf(m->name, sizeof(m->name), "%s", name);
            m->fn = fn;
            m->arg = arg;
            m->scope = method_scope(name);
            return 0;
        }
    }
    return -1;
}

void sophia_ws_unregister_method(sophia_ws_router *r, const char *name)
{
    ws_method *m = r ? (ws_method *)method_find(r, name) : NULL;
    if (m)
        memset(m, 0, sizeof(*m));
}

const char *sophia_ws_client_subject(sophia_ws_router *r, uint64_t client)
{
    sophia_ws_client *c = r ? ws_client_by_id(r, client) : NULL;
    return c ? json_string_value(json_object_get(c->claims, "sub")) : NULL;
}

int sophia_ws_respond(sophia_ws_router *r, uint64_t client, const char *req_id,
                      json_t *data)
{
    sophia_ws_client *c = r ? ws_client_by_id(r, client) : NULL;
    if (!c) {
        json_decref(data);
        return -1;
    }
    respond(c, req_id, data);
    return 0;
}

int sophia_ws_respond_error(sophia_ws_router *r, uint64_t client,
                            const char *req_id, const char *code,
                            const char *message)
{
    sophia_ws_client *c = r ? ws_client_by_id(r, client) : NULL;
    if (!c)
        return -1;
    ws_client_error(c, req_id, code, message);
    return 0;
}
