/*
 * hooks - the webhooks' checks: POST /hooks/slack (Slack Events API) and
 * POST /hooks/gong (Gong), each feeding a stream. The checks are pure
 * functions here; the HTTP handlers that run them, queue the event
 * (accept.h) and answer are in core/http/api_ingest.c.
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

/* Seconds a Slack request timestamp may be away from now. */
#define SOPHIA_SLACK_WINDOW_S 300

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

/* Slack's retry filter: event ids accepted recently. A handle owned by
 * whoever serves /hooks/slack (the daemon makes one for the API context:
 * a Slack retry may come after a reload, so it lives as long as the
 * daemon, not a configuration). Its set is sized by
 * hooks.slack.dedup_window (`window_s`, read when the set is first used;
 * a retry arrives minutes later at most). Loop thread only. */
typedef struct sophia_slack_filter sophia_slack_filter;
sophia_slack_filter *sophia_slack_filter_new(void);
void sophia_slack_filter_free(sophia_slack_filter *f);
/* 1 when `eid` was accepted inside the window, 0 when not, -1 when the
 * set cannot be made (out of memory, or no filter). */
int sophia_slack_seen(sophia_slack_filter *f, double window_s,
                      const char *eid, int64_t now_us);
/* Remembers `eid` as accepted (once the event is queued or stored). */
void sophia_slack_remember(sophia_slack_filter *f, const char *eid,
                           int64_t now_us);

typedef enum sophia_gong_check {
    SOPHIA_GONG_OK = 0,
    SOPHIA_GONG_BAD,      /* missing or wrong secret */
    SOPHIA_GONG_QUERY_OFF /* the only secret given was a ?key= that
                           * hooks.gong.allow_query_key does not allow */
} sophia_gong_check;

/* The Gong secret as presented: the `authorization` header's bearer
 * token, else `x_gong_secret`, else the ?key= argument `query_key` when
 * `allow_query` (a query string lands in proxy and access logs);
 * compared in constant time. Each may be NULL. */
sophia_gong_check sophia_gong_verify(const char *secret,
                                     const char *authorization,
                                     const char *x_gong_secret,
                                     const char *query_key, int allow_query);

#endif
