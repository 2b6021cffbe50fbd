/*
 * metrics_point.h - what the metrics processor reads out of one point
 * before it touches any state: its event time and its canonical labels.
 *
 * Kept apart from metrics.c (the state, the windows, the alerts) because
 * both are pure functions of the point's JSON: they are where a vendor's
 * payload shape ends up (ISO-8601 or Unix timestamps, a `labels` object,
 * DogStatsD/Datadog `tags` lists), and they can be read and tested
 * without the series machinery. Internal to the metrics plugin.
 */
#ifndef SOPHIA_METRICS_POINT_H
#define SOPHIA_METRICS_POINT_H

#include <sophia/sdk.h>

#include <stddef.h>
#include <stdint.h>

/* Labels a point may carry, and the canonical text's longest form. */
#define MP_MAX_LABELS 64
#define MP_LABELS_LEN 256

/* The event time of `ts` (a JSON string "2024-01-20T10:30:00Z", with
 * optional fraction and a Z or +hh:mm / -hhmm offset, no offset = UTC;
 * or a number of Unix seconds, read as milliseconds above 1e11, as a
 * JSON number or a string holding only it) in
 * microseconds since the epoch into *us: 0, or -1 when it is neither. */
int mp_event_time(const sophia_host *h, const sophia_json *ts, int64_t *us);

/* The point's labels - the `labels` object merged with a `tags` list of
 * "key:value" strings (a tag with no colon is key = "") or `tags`
 * object, `labels` winning a key both name - as canonical text
 * "k=v,k2=v2": sorted by key, '\', ',', '=', '{' and '}' escaped by '\',
 * a string value as is, a number or boolean as its text, a nested value
 * as its JSON. So two points carry the same labels exactly when their
 * texts are equal. Text that would be longer than len - 1, or hold a
 * control byte or a nested value (unfit for a cache key), is replaced by
 * "#<16 hex digits>", a 64-bit fingerprint of it (two label sets sharing
 * one, 2^-64 a pair, would share a series). "" when there are none.
 * 0, or -1 with the reason in why[why_len] (more than MP_MAX_LABELS,
 * `labels` not an object, a tag not a string). `labels`/`tags` may be
 * NULL; a label named `skip` (when not NULL) is left out. */
int mp_labels_canon(const sophia_host *h, const sophia_json *labels,
                    const sophia_json *tags, const char *skip, char *out,
                    size_t len, char *why, size_t why_len);

/* The labels to publish: a copy of `labels` plus the `tags` it does not
 * name (either may be NULL); NULL on no memory. */
sophia_json *mp_labels_json(const sophia_host *h, const sophia_json *labels,
                            const sophia_json *tags);

#endif
