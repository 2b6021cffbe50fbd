/*
 * metrics.h - the metrics processor's state, shared by its files:
 * metrics.c (options, process: points, windows, alerts),
 * metrics_series.c (the series table, its bounds, the staged change that
 * moves a series with the event's verdict, and the reload hand-over) and
 * metrics_point.c (event time and labels of one point).
 *
 * Internal to the plugin: the .so exports only its descriptor. Every
 * pu_table call on the series tables stays in metrics_series.c:
 * proc_util.h is header-only, so each file has its own copy of the
 * bucket hash's seed, and a lookup from another file would miss.
 */
#ifndef SOPHIA_METRICS_H
#define SOPHIA_METRICS_H

#include <sophia/sdk.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../proc_util.h"

/* A series' watermark before its first point. */
#define MS_NO_WM INT64_MIN

typedef struct threshold {
    char spec[256];        /* as configured: matches rules across reloads */
    char metric[128];
    int above;             /* '>' (1) or '<' (0) */
    double trigger, clear;
    char severity[32];
} threshold;

/* One rule's state in one series. */
typedef struct rule_state {
    unsigned char firing;  /* the condition holds */
    unsigned char muted;   /* it began within the cooldown: not announced,
                              and so its end is not announced either */
    int64_t fired_us;      /* event time it was last announced, 0 = never */
} rule_state;

/* How many series one dashboard + metric has (max_series_per_metric). */
typedef struct metric_count {
    size_t n;
    pu_table *tbl;         /* the table holding it, under key */
    char key[];            /* "dashboard\x1fmetric" */
} metric_count;

/* One series: dashboard + metric + canonical labels. Its window storage
 * starts empty and doubles as samples come, up to max_samples. */
typedef struct series {
    metric_count *mc;
    int64_t *t;            /* event times, us */
    double *v;
    size_t head, n, cap;
    int64_t last_agg_us;   /* wall clock: aggregate_every's throttle */
    int64_t wm_us;         /* watermark: newest event time applied */
    rule_state rules[];    /* per threshold rule */
} series;

typedef struct metrics_state {
    const sophia_host *host;
    sophia_self *self;
    char *default_dashboard; /* NULL = none */
    char *cache_prefix;
    double ttl;
    double *windows;       /* seconds */
    size_t nwindows;
    double agg_every;
    size_t max_samples;
    threshold *rules;
    size_t nrules;
    int64_t lateness_us;   /* allowed_lateness */
    int64_t future_us;     /* max_future */
    int64_t cooldown_us;   /* alert_cooldown */
    int resolves;          /* alert_resolves */
    size_t max_per_metric; /* max_series_per_metric */
    int64_t keep_us;       /* the longest window + the lateness: older
                              samples can be in no window again */
    pu_table series;       /* "dashboard\x1fmetric[\x1flabels]" -> series */
    series *last;          /* the series last found in it, or NULL ... */
    const char *last_key;  /* ... under this key (the table's copy) */
    pu_table per_metric;   /* "dashboard\x1fmetric" -> metric_count */
    pu_seen seen;          /* "series\x1fidentity" of committed points */
    double *scratch;       /* sort buffer, max_samples long */
    struct metrics_memo *memo; /* the last series' texts (metrics.c) */
    int64_t ts_sec;        /* the second ts_text spells, or -1 */
    char ts_text[32];      /* arrival time as ISO-8601, once a second */
    char ts_json[34];      /* the same as a JSON string, quoted ... */
    size_t ts_json_len;    /* ... and measured */
} metrics_state;

/* What one point changes in its series, and what it replaced there (so
 * that an event that does not commit can be undone). */
typedef struct metrics_change {
    int push;              /* add (t, v) to the windows */
    int64_t t;             /* the point's event time */
    double v;
    int64_t agg_us;        /* the series' new last aggregate, or 0 */
    rule_state *rules;     /* per rule, the state after this point */
    char *key;             /* the series */
    int applied;           /* the fields below hold what apply replaced */
    int created;           /* apply created the series */
    size_t pruned;         /* samples apply dropped as out of every window */
    int evicted;           /* the push overwrote the oldest sample */
    int wrote_old;         /* the push wrote a slot that held old_t/old_v */
    size_t slot;           /* (a live sample's, or a pruned one's) */
    int64_t old_t;
    double old_v;
    int64_t old_agg_us;
    int64_t old_wm_us;
    rule_state *old_rules;
    pu_seen_add seen;      /* the point's identity, remembered with the
                              change (seen.s NULL: it has none) */
} metrics_change;

/* The series tables (max_series, max_series_per_metric); 0 or ENOMEM. */
int ms_tables_init(metrics_state *st, size_t max_series);
void ms_tables_free(metrics_state *st);

/* The series `key`, or NULL. */
series *ms_series_get(metrics_state *st, const char *key);
/* How many series the dashboard + metric of series `key` has. */
size_t ms_series_of_metric(metrics_state *st, const char *key);
/* The series `key`, created (empty, *created set) when new; NULL on no
 * memory. May evict the oldest series past max_series. */
series *ms_series_make(metrics_state *st, const char *key, int *created);

/* memset(p, 0, n) for a small struct (a point, a change), in parts of
 * at most 64 bytes: gcc writes those as a few vector stores, where one
 * memset of the whole became rep stos (about 40 instructions as
 * callgrind counts them, and a slow start). */
static inline void ms_clear(void *p, size_t n)
{
    char *c = p;
    for (; n > 64; c += 64, n -= 64)
        memset(c, 0, 64);
    memset(c, 0, n);
}

/* A change of one point, with room for the rule states and the key
 * (klen bytes, its strlen). */
metrics_change *ms_change_new(const metrics_state *st, const char *key,
                              size_t klen);
/* stage_undoable's apply and undo; apply_once is stage's apply. */
void ms_apply(void *state, void *change);
void ms_undo(void *state, void *change);
void ms_apply_once(void *state, void *change);

/* export_state / import_state (see metrics_series.c). */
char *ms_export(void *state);
int ms_import(void *state, const char *json);

#endif
