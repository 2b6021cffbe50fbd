/*
 * statsd - a DogStatsD UDP source for a stream (usually `metrics`).
 *
 * Each datagram holds one or more lines `name:value|type[|@rate][|#tags]`
 * (types c, g, ms, h, d, s). A line becomes one metric point, the JSON
 * the metrics processor reads:
 *   {"metric":name, "value":v, "type":"counter"|"gauge"|"timer"|
 *    "histogram"|"distribution"|"set", "sample_rate":r,
 *    "labels":{tag:value…}, "dashboard_id":id}
 * A counter's value is scaled by 1/rate (what was counted, not what was
 * sent); a tag `dashboard:<id>` becomes dashboard_id instead of a label.
 * Service checks and events (`_sc|`, `_e{`) are skipped.
 *
 * The socket is non-blocking and read on the loop, at most a bounded
 * number of datagrams per wake-up so a flood cannot starve HTTP and
 * WebSocket work. UDP has no backpressure: a datagram whose points do
 * not fit in the stream's queue is dropped whole and counted as rejected.
 */
#ifndef SOPHIA_STATSD_H
#define SOPHIA_STATSD_H

#include <jansson.h>
#include <stddef.h>

struct event_base;
struct sophia_stream;
typedef struct sophia_statsd sophia_statsd;

/* Binds `listen` (HOST:PORT) and feeds `st`; NULL (logged) on failure. */
sophia_statsd *sophia_statsd_new(struct sophia_stream *st, const char *listen,
                                 struct event_base *base);
void sophia_statsd_free(sophia_statsd *s);

/* {"datagrams","points","bad_lines","dropped"} */
json_t *sophia_statsd_stats_json(const sophia_statsd *s);

/* Parses one line into a point (new reference) or NULL with `err` set;
 * *skip is set for lines that are valid but not metrics (events, service
 * checks, blank lines). */
json_t *sophia_statsd_parse_line(const char *line, size_t len, int *skip,
                                 char *err, size_t errlen);

#endif
