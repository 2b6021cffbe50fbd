/*
 * hooks - the webhook endpoints: POST /hooks/slack (Slack Events API) and
 * POST /hooks/gong (Gong), each feeding a stream.
 *
 * Slack: every request must carry X-Slack-Request-Timestamp within 300 s
 * of now and X-Slack-Signature = "v0=" + hex(HMAC-SHA256(signing secret,
 * "v0:" + timestamp + ":" + raw body)), compared in constant time. A
 * `url_verification` body is answered with its challenge; an event is
 * queued and acknowledged at once (200) - processing happens later on the
 * loop, so the answer never waits for a processor and Slack's 3 s limit
 * holds whatever the processor does. A delivery whose `event_id` was
 * accepted inside hooks.slack.dedup_window (Slack retries carry
 * X-Slack-Retry-Num and the same event_id) is acknowledged and dropped.
 * A full queue answers 503 so Slack retries later. On a durable stream
 * (durable.h) the 200 waits until the event is stored in Redis, and
 * Redis being unreachable answers 503 too (within the 2 s Redis reply
 * watchdog, so still inside Slack's 3 s).
 *
 * Gong: authenticated by a shared secret given as `Authorization: Bearer
 * <secret>` or `X-Gong-Secret: <secret>`; `?key=<secret>` only with
 * hooks.gong.allow_query_key: true (query strings end up in proxy logs;
 * without it such a request gets a 401 saying so). The body (a call
 * object, array or NDJSON) is queued all-or-nothing, 202.
 *
 * A hook whose secret variable is unset refuses every request with 401
 * and names the variable, so a misconfiguration is obvious from outside.
 */
#ifndef SOPHIA_HOOKS_H
#define SOPHIA_HOOKS_H

#include <stddef.h>
#include <stdint.h>

#include "http/http.h"

void sophia_hooks_slack(sophia_http_req *r);
void sophia_hooks_gong(sophia_http_req *r);

typedef enum sophia_slack_check {
    SOPHIA_SLACK_OK = 0,
    SOPHIA_SLACK_MISSING, /* no signature or timestamp header */
    SOPHIA_SLACK_STALE,   /* timestamp malformed or outside 300 s */
    SOPHIA_SLACK_BAD      /* signature does not match */
} sophia_slack_check;

/* The Slack v0 check on its own (unit-tested). */
sophia_slack_check sophia_slack_verify(const char *secret, const char *ts,
                                       const char *sig, const char *body,
                                       size_t len, int64_t now_s);

#endif
