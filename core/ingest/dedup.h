/*
 * dedup - ids remembered for a time window, bounded: what a stream's
 * `dedup_key`/`dedup_window` and the Slack hook's retry detection use to
 * skip an event seen before.
 */
#ifndef SOPHIA_DEDUP_H
#define SOPHIA_DEDUP_H

#include <stddef.h>
#include <stdint.h>

typedef struct sophia_dedup sophia_dedup;

/* window_s > 0; at most `max` ids are held (the oldest go first). */
sophia_dedup *sophia_dedup_new(double window_s, size_t max);
void sophia_dedup_free(sophia_dedup *d);
/* 1 when `id` was added less than window_s ago. */
int sophia_dedup_seen(sophia_dedup *d, const char *id, int64_t now_us);
void sophia_dedup_add(sophia_dedup *d, const char *id, int64_t now_us);
size_t sophia_dedup_size(const sophia_dedup *d);

#endif
