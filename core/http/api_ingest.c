/*
 * api_ingest - see api_ingest.h.
 *
 * Each handler checks and parses the request, hands the events to the
 * ingest layer (accept.h) and words its verdict. The verdict may come
 * now (a memory queue) or after a Redis round trip (a durable stream);
 * the callback answers either way, and the request stays valid until it
 * has (http.h). POST /ingest and Gong pass the request itself as the
 * callback's argument, so the hot path allocates nothing of its own.
 */
#include "http/api_ingest.h"

#include <stdlib.h>
#include <string.h>

#include "event/loop.h"
#include "http/api.h"
#include "ingest/accept.h"
#include "ingest/hooks.h"
#include "ingest/ingest.h"
#include "ingest/stream.h"
#include "lib/jsonw.h"
#include "lib/log.h"

/* How a full memory queue is worded: each endpoint kept its own. */
enum { FULL_INGEST, FULL_GONG, FULL_SLACK };

/* A refusal: 503 with Retry-After when a retry may succeed, else 500. */
static void reply_refused(sophia_http_req *r, const sophia_accept_verdict *v,
                          int full_wording)
{
    if (v->retry_after_s > 0)
        sophia_http_set_retry_after(r, v->retry_after_s);
    switch (v->outcome) {
    case SOPHIA_REFUSED_FULL:
        if (v->n == 0) /* refused at the head: the count is not known */
            sophia_http_reply_error(r, 503, "queue_full",
                                    "stream '%s' %s is full; retry later",
                                    v->stream, v->durable ? "backlog" : "queue");
        else if (v->durable)
            sophia_http_reply_error(r, 503, "queue_full",
                                    "stream '%s' backlog cannot take %zu more "
                                    "events; retry later", v->stream, v->n);
        else if (full_wording == FULL_SLACK)
            sophia_http_reply_error(r, 503, "queue_full",
                                    "stream '%s' queue is full; retry later",
                                    v->stream);
        else
            sophia_http_reply_error(r, 503, "queue_full",
                                    "stream '%s' queue cannot take %zu more "
                                    "events%s", v->stream, v->n,
                                    full_wording == FULL_INGEST
                                        ? "; retry later" : "");
        return;
    case SOPHIA_REFUSED_NOT_STARTED:
        sophia_http_reply_error(r, 503, "durable_unavailable",
                                "stream '%s' is durable but its Redis source "
                                "did not start", v->stream);
        return;
    case SOPHIA_REFUSED_UNAVAILABLE:
        sophia_http_reply_error(r, 503, "durable_unavailable",
                                "stream '%s' is durable and its Redis Stream "
                                "'%s' cannot be written now; nothing was "
                                "accepted, retry later", v->stream,
                                v->key ? v->key : "");
        return;
    default:
        if (v->durable)
            sophia_http_reply_error(r, 503, "internal",
                                    "out of memory appending to stream '%s'",
                                    v->stream);
        else
            sophia_http_reply_error(r, 500, "internal", "out of memory");
    }
}

/* 202 {"accepted":N} or the refusal. */
static void answer_accepted(sophia_http_req *r, const sophia_accept_verdict *v,
                            int full_wording)
{
    if (v->outcome == SOPHIA_ACCEPTED) {
        /* formatted here: json_pack and json_dumps (its snprintf) cost
         * ~2% of an ingest POST's CPU at 50 events a POST */
        char *b = malloc(48);
        size_t n = 0;
        if (b) {
            memcpy(b, "{\"accepted\":", 12);
            n = 12 + sophia_fmt_u64(b + 12, (uint64_t)v->n);
            b[n++] = '}';
        }
        sophia_http_reply(r, 202, "application/json", b, n);
    } else {
        reply_refused(r, v, full_wording);
    }
}

static void on_ingest_verdict(void *arg, const sophia_accept_verdict *v)
{
    answer_accepted(arg, v, FULL_INGEST);
}

static void on_gong_verdict(void *arg, const sophia_accept_verdict *v)
{
    answer_accepted(arg, v, FULL_GONG);
}

/* All or nothing, with where the body went wrong; with `spans`, each
 * event's text in the body as well (sophia_ingest_parse_spans). */
static json_t *parse_events(sophia_http_req *r, sophia_ingest_span **spans)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    sophia_parse_error pe;
    json_t *events = sophia_ingest_parse_spans(body, len, &pe, spans);
    if (!events)
        sophia_http_reply_json(r, 400, json_pack("{s:{s:s,s:s,s:i,s:i,s:I}}",
                                                 "error", "code", "bad_json",
                                                 "message", pe.text, "line",
                                                 pe.line, "column", pe.column,
                                                 "offset", (json_int_t)pe.offset));
    return events;
}

void sophia_api_ingest_post(sophia_http_req *r, sophia_streams *streams,
                            const char *name)
{
    sophia_stream *st = streams ? sophia_streams_find(streams, name) : NULL;
    if (!st) {
        sophia_http_reply_error(r, 404, "unknown_stream",
                                "no stream named '%s' is configured", name);
        return;
    }
    sophia_http_answer_after_work(r); /* the 202 after the body's work */
    sophia_ingest_span *spans;
    json_t *events = parse_events(r, &spans);
    if (!events)
        return;
    size_t len;
    sophia_accept_body(st, events, sophia_http_req_body(r, &len), spans,
                       "http", on_ingest_verdict, r);
    free(spans);
    json_decref(events);
}

/* ------------------------------------------------------------- hooks */

static void not_configured(sophia_http_req *r, const char *hook,
                           const char *env)
{
    sophia_http_reply_error(r, 401, "not_configured",
                            "the %s hook has no secret configured: set the "
                            "environment variable %s (hooks.%s.secret_env)",
                            hook, env ? env : "?", hook);
}

static sophia_stream *hook_stream(sophia_http_req *r, sophia_streams *streams,
                                  const char *name)
{
    sophia_stream *st = streams ? sophia_streams_find(streams, name) : NULL;
    if (!st)
        sophia_http_reply_error(r, 404, "unknown_stream",
                                "no stream named '%s' is configured for this "
                                "hook", name);
    return st;
}

/* A Slack event on its way into its stream: the event_id joins the retry
 * filter only once the event is queued or stored. On a durable stream
 * the 200 waits for Redis (one round trip, far inside Slack's 3 s; a
 * Redis that does not answer trips the 2 s reply watchdog, so even then
 * Slack hears 503 in time and retries). */
typedef struct slack_pending {
    sophia_http_req *r;
    char *eid;
    sophia_slack_filter *seen;
} slack_pending;

static void on_slack_verdict(void *arg, const sophia_accept_verdict *v)
{
    slack_pending *p = arg;
    if (v->outcome == SOPHIA_ACCEPTED) {
        sophia_slack_remember(p->seen, p->eid, sophia_now_wall_us());
        sophia_http_reply_json(p->r, 200, json_pack("{s:b}", "ok", 1));
    } else {
        reply_refused(p->r, v, FULL_SLACK);
    }
    free(p->eid);
    free(p);
}

static void slack_event(sophia_http_req *r, const sophia_conf *c,
                        sophia_streams *streams, sophia_slack_filter *filter,
                        json_t *body)
{
    sophia_stream *st = hook_stream(r, streams, c->hooks.slack_stream);
    if (!st)
        return;
    const char *eid = json_string_value(json_object_get(body, "event_id"));
    int seen = sophia_slack_seen(filter, c->hooks.slack_dedup, eid,
                                 sophia_now_wall_us());
    slack_pending *p = seen ? NULL : calloc(1, sizeof(*p));
    if (seen < 0 || (!seen && (!p || (eid && !(p->eid = strdup(eid)))))) {
        if (p)
            free(p);
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    if (seen) {
        const char *retry = sophia_http_req_header(r, "x-slack-retry-num");
        sophia_debug("hooks", "msg=\"slack retry dropped\" event_id=%s retry=%s",
                     eid, retry ? retry : "-");
        sophia_http_reply_json(r, 200, json_pack("{s:b,s:b}", "ok", 1,
                                                 "duplicate", 1));
        return;
    }
    p->r = r;
    p->seen = filter;
    sophia_http_answer_after_work(r);
    sophia_accept_one(st, body, "hook", eid, on_slack_verdict, p);
}

/* The v0 signature first: nothing of an unsigned body is looked at. */
static int slack_signed(sophia_http_req *r, const char *secret,
                        const char *raw, size_t len)
{
    switch (sophia_slack_verify(secret,
                                sophia_http_req_header(r, "x-slack-request-timestamp"),
                                sophia_http_req_header(r, "x-slack-signature"),
                                raw, len, sophia_now_wall_us() / 1000000)) {
    case SOPHIA_SLACK_OK:
        return 1;
    case SOPHIA_SLACK_MISSING:
        sophia_http_reply_error(r, 401, "missing_signature",
                                "X-Slack-Signature and X-Slack-Request-Timestamp "
                                "are required");
        return 0;
    case SOPHIA_SLACK_STALE:
        sophia_http_reply_error(r, 401, "stale_request",
                                "X-Slack-Request-Timestamp is not within %d s "
                                "of now", SOPHIA_SLACK_WINDOW_S);
        return 0;
    default:
        sophia_http_reply_error(r, 401, "bad_signature",
                                "X-Slack-Signature does not match the body");
        return 0;
    }
}

void sophia_api_hooks_slack(sophia_http_req *r, const sophia_conf *c,
                            sophia_streams *streams,
                            sophia_slack_filter *filter)
{
    if (!c->hooks.slack_secret) {
        not_configured(r, "slack", c->hooks.slack_env);
        return;
    }
    size_t len;
    const char *raw = sophia_http_req_body(r, &len);
    if (!slack_signed(r, c->hooks.slack_secret, raw, len))
        return;
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
        slack_event(r, c, streams, filter, body);
    }
    json_decref(body);
}

void sophia_api_hooks_gong(sophia_http_req *r, const sophia_conf *c,
                           sophia_streams *streams)
{
    if (!c->hooks.gong_secret) {
        not_configured(r, "gong", c->hooks.gong_env);
        return;
    }
    switch (sophia_gong_verify(c->hooks.gong_secret,
                               sophia_http_req_header(r, "authorization"),
                               sophia_http_req_header(r, "x-gong-secret"),
                               sophia_http_req_arg(r, "key"),
                               c->hooks.gong_query_key)) {
    case SOPHIA_GONG_OK:
        break;
    case SOPHIA_GONG_QUERY_OFF:
        sophia_http_reply_error(r, 401, "query_key_disabled",
                                "the Gong secret in ?key= is not accepted "
                                "(query strings end up in proxy logs): send "
                                "it as Authorization: Bearer or X-Gong-Secret, "
                                "or set hooks.gong.allow_query_key: true");
        return;
    default:
        sophia_http_reply_error(r, 401, "unauthorized",
                                "missing or wrong Gong secret (Authorization: "
                                "Bearer or X-Gong-Secret%s)",
                                c->hooks.gong_query_key ? ", or ?key=" : "");
        return;
    }
    sophia_stream *st = hook_stream(r, streams, c->hooks.gong_stream);
    if (!st)
        return;
    json_t *events = parse_events(r, NULL);
    if (!events)
        return;
    sophia_http_answer_after_work(r);
    sophia_accept(st, events, "hook", on_gong_verdict, r);
    json_decref(events);
}

/* ------------------------------------------------------------ routes */

static void route_ingest(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    if (sophia_http_req_method(r) != SOPHIA_HTTP_POST)
        sophia_http_reply_error(r, 405, "method_not_allowed", "use POST");
    else
        sophia_api_ingest_post(r, api->streams, sophia_http_req_path(r) + 8);
}

/* At the head: the token and rate limit, then a stream that could not
 * take one event now is answered 503 before its body is read (and the
 * connection closed, as every refusal at the head), rather than after
 * reading and parsing a body it would refuse whole. */
static int admit_ingest(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    if (!sophia_api_admit(r, arg))
        return 0;
    sophia_stream *st = sophia_http_req_method(r) == SOPHIA_HTTP_POST && api->streams
                            ? sophia_streams_find(api->streams, sophia_http_req_path(r) + 8)
                            : NULL;
    sophia_accept_verdict v;
    if (!st || sophia_accept_has_room(st, &v))
        return 1;
    reply_refused(r, &v, FULL_INGEST);
    return 0;
}

static void route_slack(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    sophia_api_hooks_slack(r, api->conf, api->streams, api->slack);
}

static void route_gong(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    sophia_api_hooks_gong(r, api->conf, api->streams);
}

int sophia_api_ingest_routes(sophia_http_router *rt, sophia_api *api)
{
    void *arg = api;
    /* /ingest reports a body's errors with line and column itself */
    const sophia_http_route routes[] = {
        {SOPHIA_HTTP_ANY, "/ingest/", SOPHIA_ROUTE_PREFIX | SOPHIA_ROUTE_RAW_BODY,
         route_ingest, admit_ingest, arg},
        {SOPHIA_HTTP_POST, "/hooks/slack", 0, route_slack, NULL, arg},
        {SOPHIA_HTTP_POST, "/hooks/gong", 0, route_gong, NULL, arg},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (sophia_http_route_add(rt, &routes[i]) < 0)
            return -1;
    return 0;
}
