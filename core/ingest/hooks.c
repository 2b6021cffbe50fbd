/*
 * hooks - see hooks.h.
 */
#include "ingest/hooks.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sophia/sdk.h>

#include "ingest/durable.h"
#include "ingest/ingest.h"
#include "lib/bearer.h"
#include "lib/log.h"
#include "event/loop.h"
#include "daemon/server.h"
#include "ingest/stream.h"

#define SLACK_WINDOW_S 300

sophia_slack_check sophia_slack_verify(const char *secret, const char *ts,
                                       const char *sig, const char *body,
                                       size_t len, int64_t now_s)
{
    if (!ts || !sig || !*ts || !*sig)
        return SOPHIA_SLACK_MISSING;
    char *end;
    long long t = strtoll(ts, &end, 10);
    if (*end || end == ts || t < 0 || llabs(now_s - t) > SLACK_WINDOW_S)
        return SOPHIA_SLACK_STALE;
    size_t tl = strlen(ts), ml = 3 + tl + 1 + len;
    unsigned char *msg = malloc(ml ? ml : 1), mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    if (!msg)
        return SOPHIA_SLACK_BAD;
    memcpy(msg, "v0:", 3);
    memcpy(msg + 3, ts, tl);
    msg[3 + tl] = ':';
    memcpy(msg + 4 + tl, body, len);
    int ok = HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, ml, mac,
                  &maclen) != NULL;
    free(msg);
    char want[3 + 2 * EVP_MAX_MD_SIZE + 1] = "v0=";
    for (unsigned i = 0; i < maclen; i++)
        snprintf(want + 3 + 2 * i, 3, "%02x", mac[i]);
    size_t wl = strlen(want);
    if (!ok || strlen(sig) != wl || CRYPTO_memcmp(want, sig, wl) != 0)
        return SOPHIA_SLACK_BAD;
    return SOPHIA_SLACK_OK;
}

static void not_configured(sophia_http_req *r, const char *hook,
                           const char *env)
{
    sophia_http_reply_error(r, 401, "not_configured",
                            "the %s hook has no secret configured: set the "
                            "environment variable %s (hooks.%s.secret_env)",
                            hook, env ? env : "?", hook);
}

static sophia_stream *hook_stream(sophia_http_req *r, const char *name)
{
    sophia_stream *st = sophia_srv->streams
                            ? sophia_streams_find(sophia_srv->streams, name)
                            : NULL;
    if (!st)
        sophia_http_reply_error(r, 404, "unknown_stream",
                                "no stream named '%s' is configured for this "
                                "hook", name);
    return st;
}

/* Slack event ids accepted recently: one set for the process, sized by
 * hooks.slack.dedup_window (a retry arrives minutes later at most). */
static sophia_dedup *slack_seen;

/* A durable Slack stream: the 200 waits for Redis (one round trip, far
 * inside Slack's 3 s; a Redis that does not answer trips the 2 s reply
 * watchdog, so even then Slack hears 503 in time and retries). The
 * event_id joins the retry filter only once the event is stored. */
typedef struct slack_append {
    sophia_http_req *r;
    const sophia_durable *d;
    char *eid;
} slack_append;

static void on_slack_appended(void *arg, int rc)
{
    slack_append *a = arg;
    if (rc) {
        sophia_durable_reply_refused(a->r, a->d, rc, 1);
    } else {
        if (a->eid && slack_seen)
            sophia_dedup_add(slack_seen, a->eid, sophia_now_wall_us());
        sophia_http_reply_json(a->r, 200, json_pack("{s:b}", "ok", 1));
    }
    free(a->eid);
    free(a);
}

/* 1 when the stream is durable and the request was handled. */
static int slack_durable(sophia_http_req *r, sophia_stream *st, json_t *body,
                         const char *eid)
{
    sophia_durable *d;
    if (!sophia_stream_durable(st, &d))
        return 0;
    slack_append *a = calloc(1, sizeof(*a));
    int rc = SOPHIA_ENOMEM;
    if (a && (!eid || (a->eid = strdup(eid)))) {
        a->r = r;
        a->d = d;
        rc = d ? sophia_durable_append(d, &body, 1, on_slack_appended, a)
               : SOPHIA_EUNAVAIL;
    }
    if (rc) {
        if (a)
            free(a->eid);
        free(a);
        if (d)
            sophia_durable_reply_refused(r, d, rc, 1);
        else if ((sophia_http_set_retry_after(r, 1), 1))
            sophia_http_reply_error(r, 503, "durable_unavailable",
                                    "stream '%s' is durable but its Redis "
                                    "source did not start",
                                    sophia_stream_name(st));
    }
    return 1;
}

static void slack_event(sophia_http_req *r, json_t *body)
{
    const sophia_conf *c = sophia_srv->conf;
    sophia_stream *st = hook_stream(r, c->hooks.slack_stream);
    if (!st)
        return;
    const char *eid = json_string_value(json_object_get(body, "event_id"));
    int64_t now = sophia_now_wall_us();
    if (!slack_seen && !(slack_seen = sophia_dedup_new(c->hooks.slack_dedup, 100000))) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    if (eid && sophia_dedup_seen(slack_seen, eid, now)) {
        const char *retry = sophia_http_req_header(r, "x-slack-retry-num");
        sophia_debug("hooks", "msg=\"slack retry dropped\" event_id=%s retry=%s",
                     eid, retry ? retry : "-");
        sophia_http_reply_json(r, 200, json_pack("{s:b,s:b}", "ok", 1,
                                                 "duplicate", 1));
        return;
    }
    if (slack_durable(r, st, body, eid))
        return;
    if (sophia_stream_accept_one(st, body, "hook", eid, NULL, NULL)) {
        sophia_http_set_retry_after(r, 1);
        sophia_http_reply_error(r, 503, "queue_full",
                                "stream '%s' queue is full; retry later",
                                sophia_stream_name(st));
        return;
    }
    if (eid)
        sophia_dedup_add(slack_seen, eid, now);
    sophia_http_reply_json(r, 200, json_pack("{s:b}", "ok", 1));
}

void sophia_hooks_slack(sophia_http_req *r)
{
    const sophia_conf *c = sophia_srv->conf;
    if (!c->hooks.slack_secret) {
        not_configured(r, "slack", c->hooks.slack_env);
        return;
    }
    size_t len;
    const char *raw = sophia_http_req_body(r, &len);
    switch (sophia_slack_verify(c->hooks.slack_secret,
                                sophia_http_req_header(r, "x-slack-request-timestamp"),
                                sophia_http_req_header(r, "x-slack-signature"),
                                raw, len, sophia_now_wall_us() / 1000000)) {
    case SOPHIA_SLACK_OK:
        break;
    case SOPHIA_SLACK_MISSING:
        sophia_http_reply_error(r, 401, "missing_signature",
                                "X-Slack-Signature and X-Slack-Request-Timestamp "
                                "are required");
        return;
    case SOPHIA_SLACK_STALE:
        sophia_http_reply_error(r, 401, "stale_request",
                                "X-Slack-Request-Timestamp is not within %d s "
                                "of now", SLACK_WINDOW_S);
        return;
    default:
        sophia_http_reply_error(r, 401, "bad_signature",
                                "X-Slack-Signature does not match the body");
        return;
    }
    json_error_t je;
    json_t *body = json_loadb(raw, len, 0, &je);
    if (!body) {
        sophia_http_reply_error(r, 400, "bad_json", "%s (line %d, column %d)",
                                je.text, je.line, je.column);
        return;
    }
    const char *type = json_string_value(json_object_get(body, "type"));
    if (type && !strcmp(type, "url_verification")) {
        const char *ch = json_string_value(json_object_get(body, "challenge"));
        sophia_http_reply_json(r, 200, json_pack("{s:s}", "challenge", ch ? ch : ""));
    } else {
        slack_event(r, body);
    }
    json_decref(body);
}

/* The secret as presented: bearer token or X-Gong-Secret, and ?key= only
 * when hooks.gong.allow_query_key is on (a query string lands in proxy
 * and access logs). GONG_QUERY_OFF: the only secret given was a ?key=
 * that is not allowed, so the 401 can say how to turn it on. */
enum { GONG_OK, GONG_BAD, GONG_QUERY_OFF };

static int gong_authorized(sophia_http_req *r, const char *secret,
                           int allow_query)
{
    const char *given = sophia_bearer_token(sophia_http_req_header(r, "authorization"));
    if (!given)
        given = sophia_http_req_header(r, "x-gong-secret");
    if (!given) {
        const char *key = sophia_http_req_arg(r, "key");
        if (key && !allow_query)
            return GONG_QUERY_OFF;
        given = key;
    }
    size_t gl = given ? strlen(given) : 0, sl = strlen(secret);
    return given && gl == sl && CRYPTO_memcmp(given, secret, sl) == 0
               ? GONG_OK
               : GONG_BAD;
}

void sophia_hooks_gong(sophia_http_req *r)
{
    const sophia_conf *c = sophia_srv->conf;
    if (!c->hooks.gong_secret) {
        not_configured(r, "gong", c->hooks.gong_env);
        return;
    }
    int auth = gong_authorized(r, c->hooks.gong_secret, c->hooks.gong_query_key);
    if (auth == GONG_QUERY_OFF) {
        sophia_http_reply_error(r, 401, "query_key_disabled",
                                "the Gong secret in ?key= is not accepted "
                                "(query strings end up in proxy logs): send "
                                "it as Authorization: Bearer or X-Gong-Secret, "
                                "or set hooks.gong.allow_query_key: true");
        return;
    }
    if (auth != GONG_OK) {
        sophia_http_reply_error(r, 401, "unauthorized",
                                "missing or wrong Gong secret (Authorization: "
                                "Bearer or X-Gong-Secret%s)",
                                c->hooks.gong_query_key ? ", or ?key=" : "");
        return;
    }
    sophia_stream *st = hook_stream(r, c->hooks.gong_stream);
    if (!st)
        return;
    size_t len;
    const char *raw = sophia_http_req_body(r, &len);
    sophia_parse_error pe;
    json_t *events = sophia_ingest_parse(raw, len, &pe);
    if (!events) {
        sophia_http_reply_json(r, 400, json_pack("{s:{s:s,s:s,s:i,s:i,s:I}}",
                                                 "error", "code", "bad_json",
                                                 "message", pe.text, "line",
                                                 pe.line, "column", pe.column,
                                                 "offset", (json_int_t)pe.offset));
        return;
    }
    if (sophia_durable_ingest(r, st, events)) {
        json_decref(events);
        return;
    }
    size_t n = json_array_size(events);
    json_t **v = malloc((n ? n : 1) * sizeof(*v));
    for (size_t i = 0; v && i < n; i++)
        v[i] = json_array_get(events, i);
    int rc = v ? sophia_stream_accept(st, v, n, "hook") : SOPHIA_ENOMEM;
    free(v);
    json_decref(events);
    if (rc == SOPHIA_EBUSY) {
        sophia_http_set_retry_after(r, 1);
        sophia_http_reply_error(r, 503, "queue_full",
                                "stream '%s' queue cannot take %zu more events",
                                sophia_stream_name(st), n);
    } else if (rc) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
    } else {
        sophia_http_reply_json(r, 202, json_pack("{s:I}", "accepted", (json_int_t)n));
    }
}
