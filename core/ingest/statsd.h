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
 *
 * Who may send: UDP has no handshake, so anyone who reaches the port can
 * inject metrics and trigger alerts. The listener binds to loopback unless
 * told otherwise (a bare port means 127.0.0.1), config_streams.c refuses a
 * non-loopback listen without streams.<name>.statsd.allow, and with an
 * allow-list a datagram from a source outside it is dropped unparsed and
 * counted (`refused`, sophia_statsd_refused_total).
 */
#ifndef SOPHIA_STATSD_H
#define SOPHIA_STATSD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/statdef.h"

struct event_base;
struct sophia_stream;
typedef struct sophia_statsd sophia_statsd;

/* Binds `listen` (HOST:PORT) and feeds `st`, taking datagrams only from
 * the `nallow` CIDRs in `allow` (cidr.h) when nallow > 0; NULL (logged) on
 * failure. */
sophia_statsd *sophia_statsd_new(struct sophia_stream *st, const char *listen,
                                 char *const *allow, size_t nallow,
                                 struct event_base *base);
void sophia_statsd_free(sophia_statsd *s);

/* The source's figures, each declared once (sophia_statsd_statdefs):
 * /api/stats `sources.statsd` and, per stream, sophia_statsd_* lines. */
typedef struct sophia_statsd_stats {
    uint64_t datagrams; /* taken from an allowed source */
    uint64_t points;    /* metric lines handed to the stream */
    uint64_t bad_lines; /* lines that did not parse */
    uint64_t dropped;   /* points the stream refused (queue full) */
    uint64_t refused;   /* datagrams from outside the allow-list */
} sophia_statsd_stats;

extern const sophia_statdef sophia_statsd_statdefs[];
extern const size_t sophia_statsd_nstatdefs;

void sophia_statsd_get_stats(const sophia_statsd *s, sophia_statsd_stats *out);
/* {"datagrams","points","bad_lines","dropped","refused"} */
json_t *sophia_statsd_stats_json(const sophia_statsd *s);

/* Parses one line into a point (new reference) or NULL with `err` set;
 * *skip is set for lines that are valid but not metrics (events, service
 * checks, blank lines). */
json_t *sophia_statsd_parse_line(const char *line, size_t len, int *skip,
                                 char *err, size_t errlen);

#endif
