// sophia-test: cost 14
/*
 * test_proc_metrics - the metrics processor's series state (window
 * samples, threshold alert states, seen point identities) moves with its
 * event's verdict (issue 17, SDK 1.1 host->stage), through the real
 * loader and host:
 *
 *   - a point that crosses a threshold, with its effects refused, flips
 *     nothing: its redelivery fires the same alert (the old bug: the state
 *     flipped, the event failed, and the alert never fired);
 *   - a refused point is not in the window; ERROR (bad point, or a key the
 *     cache refuses) leaves the state as it was;
 *   - redelivery after commit (same timestamp, value and labels, or same
 *     source id) queues nothing; other labels make another point; a point
 *     with neither timestamp nor id is always new;
 *   - reload keeps window samples, firing alerts and seen identities, and
 *     the samples of a 0.1.0 export (format 1) still come across;
 *   - its counters (points) count a point once, when it commits;
 *   - init refuses an SDK 1.0 host (no host->stage), saying why;
 *   - two points in flight at once over full rings (stage_undoable: their
 *     changes apply at once), neither committing: undone newest first,
 *     the exported state and the seen identities are exactly as before.
 *
 * Issue 19 (correct in the field), on vendor-shaped payloads from
 * tests/data (metrics_late.ndjson, metrics_dogstatsd.statsd, read through
 * the daemon's own DogStatsD parser):
 *   - event time: windows by the point's timestamp, an out-of-order point
 *     within allowed_lateness lands in its window without overwriting the
 *     latest value, a late one is dropped and counted, duplicates stay
 *     duplicates;
 *   - labels (tags in any order, `labels` or `tags`) split series, cache
 *     keys and aggregates, canonical (sorted, escaped); a statsd set's
 *     member does not; the per-metric and global series caps hold, and
 *     refusals are counted;
 *   - window storage grows with the samples instead of ~160 KB a series,
 *     and a busy series drops what no window can use any more (undone
 *     exactly when its point does not commit);
 *   - alerts: a cooldown mutes a flapping rule, resolves carry the
 *     alert_id and severity they fired with, resolves can be turned off;
 *   - reload carries labels, watermarks and cooldowns; a format-2 export
 *     (before issue 19) still hands its firing rules over;
 *   - 100k distinct series stay within max_series, memory flat past it
 *     (prints the heap and RSS per 10k series).
 */
#include "proc_harness.h"

#include <malloc.h>
#include <unistd.h>

#include "ingest/statsd.h"

static char *windows[] = {"60"};
static char *rules[] = {"cpu>90/80@critical"};

static sophia_instance *load(void)
{
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_list("thresholds", rules, 1),
                              ph_scalar("aggregate_every", "0")};
    return ph_load("metrics", opts, 3);
}

static sophia_instance *reload(sophia_instance *old)
{
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_list("thresholds", rules, 1),
                              ph_scalar("aggregate_every", "0")};
    return ph_reload(old, opts, 3);
}

/* A point shaped as tests/data/metrics.ndjson's. */
static char *point(char *buf, size_t len, const char *metric, double v,
                   int second)
{
    snprintf(buf, len,
             "{\"metric\":\"%s\",\"value\":%g,\"timestamp\":"
             "\"2024-01-20T10:30:%02dZ\",\"dashboard_id\":\"ops\","
             "\"labels\":{\"service\":\"api\"}}",
             metric, v, second);
    return buf;
}

static void test_refused_alert_fires_on_redelivery(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char p[256], *first;
    ph_run(inst, point(p, sizeof(p), "cpu", 50, 0), NULL, PH_COMMIT, NULL);

    double points = ph_counter("points");
    point(p, sizeof(p), "cpu", 95, 1);
    assert_int_equal(ph_run_unchanged(inst, p, NULL, PH_REFUSE, &first),
                     SOPHIA_PROCESS_OK);
    assert_int_equal(ph_count(first, "\"state\":\"firing\""), 1);
    assert_true(ph_counter("points") == points); /* counted with the commit */
    ph_redelivered_commits(inst, p, first); /* same alert, same aggregate */
    assert_true(ph_counter("points") == points + 1);

    ph_redelivered_is_duplicate(inst, p);
    free(first);

    /* still firing: 92 alerts nothing; 70 resolves */
    char *a;
    ph_run(inst, point(p, sizeof(p), "cpu", 92, 2), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "threshold"), 0);
    free(a);
    ph_run(inst, point(p, sizeof(p), "cpu", 70, 3), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"resolved\""), 1);
    free(a);
    sophia_plugin_unload(inst);
}

static void test_window_and_error(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char p[256], *a;
    ph_run(inst, point(p, sizeof(p), "lat", 10, 0), NULL, PH_COMMIT, NULL);
    ph_run(inst, point(p, sizeof(p), "lat", 1000, 1), NULL, PH_REFUSE, NULL);
    /* ERROR: not a point; a dashboard the cache refuses as a key */
    assert_int_equal(ph_run_unchanged(inst, "{\"metric\":\"lat\"}", NULL,
                                      PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    assert_int_equal(
        ph_run_unchanged(inst,
                         "{\"metric\":\"cpu\",\"value\":99,\"timestamp\":"
                         "\"2024-01-20T10:31:00Z\",\"dashboard_id\":\"o\\u0001\"}",
                         NULL, PH_COMMIT, NULL),
        SOPHIA_PROCESS_ERROR);
    ph_run(inst, point(p, sizeof(p), "lat", 20, 2), NULL, PH_COMMIT, &a);
    /* the window holds 10 and 20, not the refused 1000 */
    assert_non_null(strstr(a, "\"count\":2"));
    assert_non_null(strstr(a, "\"max\":20"));
    free(a);

    /* by source id when there is no timestamp; neither: always new */
    const char *bare = "{\"metric\":\"q\",\"value\":1,\"dashboard_id\":\"ops\"}";
    ph_run(inst, bare, "1700000000000-0", PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":1"));
    free(a);
    ph_run(inst, bare, "1700000000000-0", PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    ph_run(inst, bare, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":2"));
    free(a);
    ph_run(inst, bare, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":3"));
    free(a);
    /* same metric, second and value from two hosts: two series, each
     * with its own window (labels are part of the series) */
    const char *h1 = "{\"metric\":\"q\",\"value\":1,\"dashboard_id\":\"ops\","
                     "\"timestamp\":\"2024-01-20T10:30:00Z\",\"labels\":"
                     "{\"host\":\"a\"}}";
    const char *h2 = "{\"metric\":\"q\",\"value\":1,\"dashboard_id\":\"ops\","
                     "\"timestamp\":\"2024-01-20T10:30:00Z\",\"labels\":"
                     "{\"host\":\"b\"}}";
    ph_run(inst, h1, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":1"));
    assert_non_null(strstr(a, "metric:agg:ops:q{host=a}:60"));
    free(a);
    ph_run(inst, h2, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":1"));
    assert_non_null(strstr(a, "metric:agg:ops:q{host=b}:60"));
    free(a);
    ph_run(inst, h2, NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_state(void **unused)
{
    (void)unused;
    sophia_instance *old = load();
    char p[256], *a;
    ph_run(old, point(p, sizeof(p), "cpu", 40, 0), NULL, PH_COMMIT, NULL);
    ph_run(old, point(p, sizeof(p), "cpu", 95, 1), NULL, PH_COMMIT, NULL);
    ph_run(old, point(p, sizeof(p), "cpu", 99, 2), NULL, PH_REFUSE, NULL);
    sophia_instance *inst = reload(old);
    sophia_plugin_unload(old);

    /* firing carried over: 70 resolves; the window had 40 and 95 */
    ph_run(inst, point(p, sizeof(p), "cpu", 70, 3), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"resolved\""), 1);
    assert_non_null(strstr(a, "\"count\":3"));
    assert_non_null(strstr(a, "\"max\":95"));
    free(a);
    /* seen carried over */
    ph_run(inst, point(p, sizeof(p), "cpu", 95, 1), NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    sophia_plugin_unload(inst);
}

static void test_needs_sdk_1_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("metrics", NULL, 0);
    ph_refuses_sdk_1_0(inst);
    sophia_plugin_unload(inst);
}

/* What metrics 0.1.0 (before SDK 1.1) exported still hands its window
 * samples over: a rolling upgrade must not empty the windows. */
static void test_imports_format_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char doc[256], p[256], *a;
    /* its times were receipt times; a point's now are event times */
    long long now = 1705746600LL * 1000000LL; /* 10:30:00Z */
    snprintf(doc, sizeof(doc),
             "{\"format\":1,\"series\":[{\"key\":\"ops\\u001flat\","
             "\"t\":[%lld,%lld],\"v\":[7,9]}]}",
             now - 1000000, now - 500000);
    assert_int_equal(inst->desc->processor->import_state(inst->state, doc), 0);
    snprintf(p, sizeof(p), "{\"metric\":\"lat\",\"value\":8,\"timestamp\":"
             "\"2024-01-20T10:30:00Z\",\"dashboard_id\":\"ops\"}");
    ph_run(inst, p, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":3"));
    assert_non_null(strstr(a, "\"sum\":24"));
    free(a);
    sophia_plugin_unload(inst);
}

/* Starts process() for `body` in a stream context left open (the event
 * in flight); its changes apply at once (stage_undoable). */
static sophia_ctx *in_flight(sophia_instance *inst, const char *body)
{
    json_t *b = json_loads(body, 0, NULL);
    sophia_event ev = {.struct_size = sizeof(ev), .stream = "s",
                       .source = "test", .body = (const sophia_json *)b,
                       .received_us = 1705746600LL * 1000000LL};
    sophia_ctx *ctx = sophia_ctx_new(inst, "s");
    assert_int_equal(inst->desc->processor->process(inst->state, &ev, ctx),
                     SOPHIA_PROCESS_OK);
    json_decref(b);
    return ctx;
}

/* Full rings (2 samples, 2 seen identities): two points in flight at
 * once each evict the oldest sample and identity, and the second already
 * sees the first's sample and alert state. Neither commits: undone newest
 * first, the state is exactly the committed one again. */
static void test_overlapping_points_undone(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_list("thresholds", rules, 1),
                              ph_scalar("aggregate_every", "0"),
                              ph_scalar("max_samples", "2"),
                              ph_scalar("max_seen", "2")};
    sophia_instance *inst = ph_load("metrics", opts, 5);
    char p[256], *a;
    for (int i = 0; i < 3; i++)
        ph_run(inst, point(p, sizeof(p), "cpu", 10 + i, i), NULL, PH_COMMIT, NULL);
    char *before = ph_export(inst);
    sophia_ctx *c1 = in_flight(inst, point(p, sizeof(p), "cpu", 95, 3));
    sophia_ctx *c2 = in_flight(inst, point(p, sizeof(p), "cpu", 97, 4));
    json_t *j = (json_t *)sophia_ctx_actions_json(c2);
    a = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_int_equal(ph_count(a, "\"state\":\"firing\""), 0); /* c1 fired */
    assert_non_null(strstr(a, "\"min\":95")); /* 11 and 12 evicted */
    free(a);
    sophia_ctx_free(c2); /* the stream frees the youngest first */
    sophia_ctx_free(c1);
    char *after = ph_export(inst);
    assert_string_equal(before, after);
    free(before);
    free(after);
    /* the identity c2 evicted is back: its redelivery is a duplicate */
    ph_run(inst, point(p, sizeof(p), "cpu", 11, 1), NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    /* and the first point again is new, not a duplicate: it fires */
    ph_run(inst, point(p, sizeof(p), "cpu", 95, 3), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"firing\""), 1);
    free(a);
    sophia_plugin_unload(inst);
}

/* ------------------------------------------------------------ issue 19 */

/* Line n of tests/data/metrics_dogstatsd.statsd as the point the daemon's
 * DogStatsD listener makes of it (JSON text; free it). */
static char *statsd_point(int n)
{
    char *line = ph_data("metrics_dogstatsd.statsd", n), err[128];
    int skip = 0;
    json_t *p = sophia_statsd_parse_line(line, strlen(line), &skip, err,
                                         sizeof(err));
    if (!p)
        fail_msg("statsd line %d: %s", n, err);
    char *text = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    free(line);
    return text;
}

/* Runs line n of tests/data/<file> (committed), its actions into *a. */
static sophia_verdict run_line(sophia_instance *inst, const char *file, int n,
                               char **a)
{
    char *line = ph_data(file, n);
    sophia_verdict v = ph_run(inst, line, NULL, PH_COMMIT, a);
    free(line);
    return v;
}

/* Event time: tests/data/metrics_late.ndjson - in order, out of order
 * within the lateness, a redelivery, a late point, another region, then
 * the same series as a Datadog `tags` list with Unix timestamps. */
static void test_event_time_and_lateness(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_scalar("aggregate_every", "0"),
                              ph_scalar("allowed_lateness", "60")};
    sophia_instance *inst = ph_load("metrics", opts, 3);
    const char *f = "metrics_late.ndjson";
    const char *latest = "metric:ops:api.latency_ms{region=emea,service=api}";
    char *a;
    double late = ph_counter("late"), ooo = ph_counter("out_of_order");
    run_line(inst, f, 1, &a); /* 10:30:00 120 */
    assert_non_null(strstr(a, latest));
    free(a);
    run_line(inst, f, 2, &a); /* 10:30:30 180 */
    assert_non_null(strstr(a, "\"count\":2"));
    free(a);
    /* 10:30:10 150 (as +01:00), after 10:30:30: in its window, published
     * with its own time, but the latest value stays 10:30:30's */
    assert_int_equal(run_line(inst, f, 3, &a), SOPHIA_PROCESS_OK);
    assert_non_null(strstr(a, "\"count\":3"));
    assert_non_null(strstr(a, "\"sum\":450"));
    assert_non_null(strstr(a, "\"timestamp\":\"2024-01-20T11:30:10+01:00\""));
    assert_null(strstr(a, "\"key\":\"metric:ops:api.latency_ms{"));
    assert_true(ph_counter("out_of_order") == ooo + 1);
    free(a);
    /* line 2 again, its labels in another order: a duplicate */
    char *line = ph_data(f, 4);
    ph_redelivered_is_duplicate(inst, line);
    free(line);
    /* 10:29:00: older than 10:30:30 - 60 s: dropped, counted, not an error */
    line = ph_data(f, 5);
    assert_int_equal(ph_run_unchanged(inst, line, NULL, PH_COMMIT, &a),
                     SOPHIA_PROCESS_OK);
    assert_string_equal(a, "[]");
    assert_true(ph_counter("late") == late + 1);
    free(a);
    free(line);
    /* us: a series of its own, its window only its point */
    run_line(inst, f, 6, &a);
    assert_non_null(strstr(a, "metric:ops:api.latency_ms{region=us,service=api}"));
    assert_non_null(strstr(a, "\"count\":1"));
    free(a);
    /* tags list, Unix seconds 10:31:00: emea's window (10:30:00..10:31:00]
     * holds 120 (at its edge), 180, 150, 200 */
    run_line(inst, f, 7, &a);
    assert_non_null(strstr(a, latest));
    assert_non_null(strstr(a, "\"count\":4"));
    assert_non_null(strstr(a, "\"sum\":650"));
    free(a);
    /* Unix milliseconds 10:31:01.5: 120 has left the window */
    run_line(inst, f, 8, &a);
    assert_non_null(strstr(a, "\"count\":4"));
    assert_non_null(strstr(a, "\"sum\":740"));
    assert_non_null(strstr(a, "\"min\":150"));
    free(a);
    /* a timestamp that is not one is a bad point, named */
    const char *bad_ts[] = {"\"yesterday\"", "\"2024-13-01T00:00:00Z\"",
                            "\"2024-01-20T10:30:00+25:00\"", "-5", "true"};
    for (size_t i = 0; i < sizeof(bad_ts) / sizeof(bad_ts[0]); i++) {
        char b[160];
        snprintf(b, sizeof(b), "{\"metric\":\"x\",\"value\":1,"
                 "\"timestamp\":%s}", bad_ts[i]);
        assert_int_equal(ph_run(inst, b, NULL, PH_COMMIT, NULL),
                         SOPHIA_PROCESS_ERROR);
    }
    /* Unix seconds as a string (some agents): 10:30:01; then 10:30:00.5
     * west of UTC: within the lateness (out of order), not late */
    assert_int_equal(ph_run(inst, "{\"metric\":\"x\",\"value\":1,"
                                  "\"timestamp\":\"1705746601\"}", NULL,
                            PH_COMMIT, NULL),
                     SOPHIA_PROCESS_OK);
    ooo = ph_counter("out_of_order");
    ph_run(inst, "{\"metric\":\"x\",\"value\":2,\"timestamp\":"
                 "\"2024-01-20T09:00:00.5-01:30\"}", NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"value\":2"));
    assert_true(ph_counter("out_of_order") == ooo + 1);
    free(a);
    /* far ahead of its arrival (10:30:00): dropped, counted */
    double future = ph_counter("future");
    ph_run(inst, "{\"metric\":\"x\",\"value\":1,\"timestamp\":"
                 "\"2024-01-20T11:30:00Z\"}", NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    assert_true(ph_counter("future") == future + 1);
    free(a);
    sophia_plugin_unload(inst);
}

/* DogStatsD lines (tests/data/metrics_dogstatsd.statsd) through the
 * daemon's parser: a region per series whatever the tag order, sample
 * rates scaled by the parser, a set's members one series. */
static void test_dogstatsd_labels(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_scalar("aggregate_every", "0")};
    sophia_instance *inst = ph_load("metrics", opts, 2);
    char *p, *a;
    const char *emea = "metric:_:api.requests{region=emea,service=api}";
    ph_run(inst, p = statsd_point(1), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, emea));
    assert_non_null(strstr(a, "\"value\":10")); /* 1 at @0.1 */
    free(a);
    free(p);
    ph_run(inst, p = statsd_point(2), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "metric:_:api.requests{region=us,service=api}"));
    assert_non_null(strstr(a, "\"count\":1")); /* not emea's window */
    free(a);
    free(p);
    ph_run(inst, p = statsd_point(3), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, emea)); /* tags in the other order */
    assert_non_null(strstr(a, "\"count\":2"));
    assert_non_null(strstr(a, "\"sum\":14"));
    assert_non_null(strstr(a, "metric:agg:_:api.requests{region=emea,"
                              "service=api}:60"));
    free(a);
    free(p);
    ph_run(inst, p = statsd_point(4), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "metric:ops:api.latency_ms{region=emea}"));
    free(a);
    free(p);
    ph_run(inst, p = statsd_point(5), NULL, PH_COMMIT, NULL);
    free(p);
    ph_run(inst, p = statsd_point(6), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "metric:_:checkout.users{region=emea}\""));
    assert_non_null(strstr(a, "\"count\":2"));
    free(a);
    free(p);
    sophia_plugin_unload(inst);
}

/* Cache keys whatever the prefix's length: a short one and one too long
 * for the key's buffer on the stack (written on the heap instead), for
 * the latest value and an aggregate, with labels and with the default
 * dashboard; and the dashboard's tag. */
static void test_cache_keys_any_prefix(void **unused)
{
    (void)unused;
    char longp[900]; /* past the key buffer on the stack (836 bytes) */
    memset(longp, 'p', sizeof(longp) - 2);
    longp[sizeof(longp) - 2] = ':';
    longp[sizeof(longp) - 1] = '\0';
    const char *prefixes[] = {"m:", longp};
    for (size_t i = 0; i < 2; i++) {
        sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                                  ph_scalar("aggregate_every", "0"),
                                  ph_scalar("cache_prefix", prefixes[i])};
        sophia_instance *inst = ph_load("metrics", opts, 3);
        char buf[256], want[1024], *a;
        ph_run(inst, point(buf, sizeof(buf), "cpu", 1, 1), NULL, PH_COMMIT, &a);
        snprintf(want, sizeof(want), "\"key\":\"%sops:cpu{service=api}\"",
                 prefixes[i]);
        assert_non_null(strstr(a, want));
        snprintf(want, sizeof(want), "\"key\":\"%sagg:ops:cpu{service=api}:60\"",
                 prefixes[i]);
        assert_non_null(strstr(a, want));
        assert_non_null(strstr(a, "\"dashboard:ops\""));
        free(a);
        ph_run(inst, "{\"metric\":\"q\",\"value\":2}", NULL, PH_COMMIT, &a);
        snprintf(want, sizeof(want), "\"key\":\"%s_:q\"", prefixes[i]);
        assert_non_null(strstr(a, want));
        assert_null(strstr(a, "dashboard:"));
        free(a);
        sophia_plugin_unload(inst);
    }
}

/* The exported state's number of series. */
static size_t series_count(sophia_instance *inst)
{
    char *s = ph_export(inst);
    json_t *doc = json_loads(s, 0, NULL);
    size_t n = json_array_size(json_object_get(doc, "series"));
    json_decref(doc);
    free(s);
    return n;
}

static char *host_point(char *buf, size_t len, const char *metric, int host)
{
    snprintf(buf, len, "{\"metric\":\"%s\",\"value\":1,\"dashboard_id\":"
             "\"ops\",\"labels\":{\"host\":\"h%d\"}}", metric, host);
    return buf;
}

/* max_series_per_metric refuses a third host of one metric (counted,
 * verdict OK, nothing queued, state unchanged); other metrics and known
 * series go on; max_series evicts the oldest series; a series made by a
 * point that does not commit is undone. */
static void test_series_caps(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_scalar("max_series_per_metric", "2"),
                              ph_scalar("max_series", "4")};
    sophia_instance *inst = ph_load("metrics", opts, 2);
    char p[256], *a;
    double refused = ph_counter("series_refused");
    /* a new series whose point does not commit is not kept, and does not
     * take a place under the cap */
    ph_run_unchanged(inst, host_point(p, sizeof(p), "cpu", 9), NULL,
                     PH_REFUSE, NULL);
    assert_int_equal(series_count(inst), 0);
    ph_run(inst, host_point(p, sizeof(p), "cpu", 1), NULL, PH_COMMIT, NULL);
    ph_run(inst, host_point(p, sizeof(p), "cpu", 2), NULL, PH_COMMIT, NULL);
    assert_int_equal(ph_run_unchanged(inst, host_point(p, sizeof(p), "cpu", 3),
                                      NULL, PH_COMMIT, &a),
                     SOPHIA_PROCESS_OK);
    assert_string_equal(a, "[]");
    free(a);
    assert_true(ph_counter("series_refused") == refused + 1);
    ph_run(inst, host_point(p, sizeof(p), "cpu", 1), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "metric:ops:cpu{host=h1}"));
    free(a);
    ph_run(inst, host_point(p, sizeof(p), "mem", 3), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "metric:ops:mem{host=h3}"));
    free(a);
    assert_int_equal(series_count(inst), 3);
    /* two more series: four at most, the oldest (cpu h1) made room, and
     * with it cpu has room for another host again */
    ph_run(inst, host_point(p, sizeof(p), "mem", 4), NULL, PH_COMMIT, NULL);
    ph_run(inst, host_point(p, sizeof(p), "disk", 1), NULL, PH_COMMIT, NULL);
    assert_int_equal(series_count(inst), 4);
    ph_run(inst, host_point(p, sizeof(p), "cpu", 3), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "metric:ops:cpu{host=h3}"));
    free(a);
    assert_true(ph_counter("series_refused") == refused + 1);
    sophia_plugin_unload(inst);
}

/* Heap bytes in use (glibc). */
static double heap_bytes(void)
{
    return (double)mallinfo2().uordblks;
}

/* Resident set size, bytes. */
static double rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
        fail_msg("cannot read /proc/self/statm");
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* One committed point per series "m<i % mod>{host=h<i>}" for i in
 * [from, to); the stream's calls without the harness's action dump (100k
 * of them). */
static void feed_series(sophia_instance *inst, int from, int to, int mod)
{
    char p[256];
    for (int i = from; i < to; i++) {
        snprintf(p, sizeof(p), "{\"metric\":\"m%d\",\"value\":%d,"
                 "\"timestamp\":\"2024-01-20T10:30:00Z\",\"dashboard_id\":"
                 "\"ops\",\"labels\":{\"host\":\"h%d\"}}", i % mod, i, i);
        json_t *b = json_loads(p, 0, NULL);
        sophia_event ev = {.struct_size = sizeof(ev), .stream = "s",
                           .source = "test", .body = (const sophia_json *)b,
                           .received_us = 1705746600LL * 1000000LL};
        sophia_ctx *ctx = sophia_ctx_new(inst, "s");
        assert_int_equal(sophia_ctx_process(ctx, &ev), SOPHIA_PROCESS_OK);
        sophia_ctx_commit(ctx);
        sophia_ctx_free(ctx);
        json_decref(b);
    }
}

static char *bound_rules[] = {"m1>1000000"};

/* Window storage grows with the samples: a series with one sample costs
 * a few hundred bytes, not max_samples (10,000) of them up front. */
static void test_series_storage_is_lazy(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_list("thresholds", bound_rules, 1)};
    sophia_instance *inst = ph_load("metrics", opts, 2);
    /* a metric each: series apart with or without labels in the key */
    feed_series(inst, 0, 100, 1 << 30); /* tables and buffers warmed up */
    double before = heap_bytes();
    feed_series(inst, 100, 2100, 1 << 30);
    double per_series = (heap_bytes() - before) / 2000;
    print_message("heap per series with windows: %.0f bytes\n", per_series);
    assert_true(per_series < 2048);
    sophia_plugin_unload(inst);
}

/* 100k distinct series against max_series 50,000: the count stops at the
 * bound and the heap stops growing with it. Prints the heap and RSS per
 * 10k series below the bound (README's figure). */
static void test_memory_bound_100k(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_list("thresholds", bound_rules, 1),
                              ph_scalar("max_series", "50000"),
                              ph_scalar("aggregate_every", "0")};
    sophia_instance *inst = ph_load("metrics", opts, 4);
    feed_series(inst, 0, 10000, 100);
    double heap10 = heap_bytes(), rss10 = rss_bytes();
    feed_series(inst, 10000, 50000, 100);
    double heap50 = heap_bytes(), rss50 = rss_bytes();
    feed_series(inst, 50000, 100000, 100);
    double heap100 = heap_bytes();
    print_message("per 10k series: heap %.2f MB, RSS %.2f MB; heap at "
                  "50k %.1f MB, at 100k %.1f MB\n",
                  (heap50 - heap10) / 4 / 1e6, (rss50 - rss10) / 4 / 1e6,
                  heap50 / 1e6, heap100 / 1e6);
    assert_int_equal(series_count(inst), 50000);
    assert_true(heap100 < heap50 * 1.02 + 1e6);
    /* the newest are the ones kept */
    char p[256], *a;
    ph_run(inst, host_point(p, sizeof(p), "m99", 99999), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":2"));
    free(a);
    sophia_plugin_unload(inst);
}

static char *flap_rules[] = {"cpu>90/80@critical"};

static char *cpu_at(char *buf, size_t len, double v, const char *hms)
{
    snprintf(buf, len, "{\"metric\":\"cpu\",\"value\":%g,\"timestamp\":"
             "\"2024-01-20T%sZ\",\"dashboard_id\":\"ops\",\"labels\":"
             "{\"host\":\"a\"}}", v, hms);
    return buf;
}

/* The alert update's `field` (string) in actions text a. */
static char *alert_field(const char *a, const char *field)
{
    json_t *all = json_loads(a, 0, NULL), *x;
    size_t i;
    char *out = NULL;
    json_array_foreach(all, i, x) {
        json_t *d = json_object_get(x, "data");
        const char *s = json_string_value(json_object_get(d, field));
        if (json_object_get(d, "alert_type") && s && !out)
            out = strdup(s);
    }
    json_decref(all);
    return out;
}

/* A flapping threshold within alert_cooldown (60 s): fired once,
 * resolved with the alert_id and severity it fired with, the crossings
 * within the cooldown muted (and their ends), announced after it if
 * still past the trigger. */
static void test_alert_cooldown_and_resolve(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("thresholds", flap_rules, 1),
                              ph_scalar("alert_cooldown", "60")};
    sophia_instance *inst = ph_load("metrics", opts, 2);
    char p[256], *a;
    ph_run(inst, cpu_at(p, sizeof(p), 95, "10:30:00"), NULL, PH_COMMIT, &a);
    char *id = alert_field(a, "alert_id");
    assert_non_null(id);
    assert_string_equal(id, "ops:cpu{host=a}:cpu>90/80@critical");
    free(a);
    ph_run(inst, cpu_at(p, sizeof(p), 70, "10:30:10"), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"resolved\""), 1);
    char *rid = alert_field(a, "alert_id"), *sev = alert_field(a, "severity");
    assert_string_equal(rid, id);
    assert_string_equal(sev, "critical");
    free(rid);
    free(sev);
    free(a);
    double muted = ph_counter("alerts_muted");
    const char *flaps[][2] = {{"95", "10:30:20"}, {"70", "10:30:30"},
                              {"96", "10:30:40"}, {"97", "10:30:50"}};
    for (size_t i = 0; i < 4; i++) {
        ph_run(inst, cpu_at(p, sizeof(p), atof(flaps[i][0]), flaps[i][1]),
               NULL, PH_COMMIT, &a);
        assert_int_equal(ph_count(a, "threshold"), 0);
        free(a);
    }
    assert_true(ph_counter("alerts_muted") == muted + 2);
    /* 10:31:05: the cooldown from 10:30:00 is over, still past: fires */
    ph_run(inst, cpu_at(p, sizeof(p), 98, "10:31:05"), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"firing\""), 1);
    free(a);
    free(id);
    sophia_plugin_unload(inst);

    /* alert_resolves: false - the firing only */
    sophia_conf_opt quiet[] = {ph_list("thresholds", flap_rules, 1),
                               ph_scalar("alert_resolves", "false")};
    inst = ph_load("metrics", quiet, 2);
    ph_run(inst, cpu_at(p, sizeof(p), 95, "10:30:00"), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"firing\""), 1);
    free(a);
    ph_run(inst, cpu_at(p, sizeof(p), 70, "10:30:10"), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "threshold"), 0);
    free(a);
    sophia_plugin_unload(inst);
}

/* A reload hands over the labelled series, their watermark (a late point
 * stays late) and the cooldown (a crossing within it stays muted). */
static void test_reload_carries_watermark_and_cooldown(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_list("thresholds", flap_rules, 1),
                              ph_scalar("aggregate_every", "0"),
                              ph_scalar("alert_cooldown", "60")};
    sophia_instance *old = ph_load("metrics", opts, 4);
    char p[256], *a;
    ph_run(old, cpu_at(p, sizeof(p), 95, "10:30:00"), NULL, PH_COMMIT, NULL);
    ph_run(old, cpu_at(p, sizeof(p), 70, "10:30:10"), NULL, PH_COMMIT, NULL);
    ph_run(old, cpu_at(p, sizeof(p), 50, "10:31:30"), NULL, PH_COMMIT, NULL);
    sophia_instance *inst = ph_reload(old, opts, 4);
    sophia_plugin_unload(old);
    double late = ph_counter("late");
    /* 10:30:20 is older than 10:31:30 - 60 s */
    ph_run(inst, cpu_at(p, sizeof(p), 99, "10:30:20"), NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    assert_true(ph_counter("late") == late + 1);
    free(a);
    /* 10:31:31 is past the 10:30:00 firing's cooldown: it fires; after
     * another reload, a flap within 60 s of it is muted */
    ph_run(inst, cpu_at(p, sizeof(p), 95, "10:31:31"), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"firing\""), 1);
    assert_non_null(strstr(a, "\"count\":2")); /* 50 and 95, same series */
    free(a);
    ph_run(inst, cpu_at(p, sizeof(p), 70, "10:31:40"), NULL, PH_COMMIT, NULL);
    sophia_instance *again = ph_reload(inst, opts, 4);
    sophia_plugin_unload(inst);
    ph_run(again, cpu_at(p, sizeof(p), 95, "10:31:50"), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "threshold"), 0); /* cooldown carried */
    free(a);
    sophia_plugin_unload(again);
}

/* Canonical labels: sorted, escaped so that a value holding ',' or '='
 * is not two labels, numbers and booleans as text, what does not fit a
 * key as a fingerprint; what is not labels is a bad point, named. */
static void test_labels_canonical(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("metrics", NULL, 0);
    char *a;
    ph_run(inst, "{\"metric\":\"q\",\"value\":1,\"labels\":{\"b\":\"2\","
                 "\"a\":\"x,b=y\"}}", NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"metric:_:q{a=x\\\\,b\\\\=y,b=2}\""));
    free(a);
    ph_run(inst, "{\"metric\":\"q\",\"value\":1,\"labels\":{\"a\":\"x\","
                 "\"b\":\"y\"}}", NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"metric:_:q{a=x,b=y}\""));
    free(a);
    ph_run(inst, "{\"metric\":\"q\",\"value\":1,\"labels\":{\"ok\":true,"
                 "\"n\":3},\"tags\":{\"zone\":\"b\"}}", NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"metric:_:q{n=3,ok=true,zone=b}\""));
    free(a);
    /* a nested value, a control byte, a long value: a fingerprint in the
     * key (two of them, two series), the labels published as they came */
    const char *odd[] = {
        "{\"metric\":\"q\",\"value\":1,\"labels\":{\"k\":[1,{\"x\":\"}\"}]}}",
        "{\"metric\":\"q\",\"value\":1,\"labels\":{\"note\":\"a,}]\\n\"}}"};
    char *k[2];
    for (size_t i = 0; i < 2; i++) {
        ph_run(inst, odd[i], NULL, PH_COMMIT, &a);
        const char *at = strstr(a, "\"metric:_:q{#");
        assert_non_null(at);
        k[i] = strndup(at, 31);
        assert_int_equal(k[i][30], '"'); /* {#<16 hex>} */
        assert_non_null(strstr(a, i ? "\"labels\":{\"note\":\"a,}]\\n\"}"
                                    : "\"labels\":{\"k\":[1,{\"x\":\"}\"}]}"));
        free(a);
    }
    assert_string_not_equal(k[0], k[1]);
    free(k[0]);
    free(k[1]);
    char pad[1024];
    snprintf(pad, sizeof(pad), "{\"metric\":\"q\",\"value\":1,\"labels\":"
             "{\"pad\":\"%0600d\"}}", 7);
    ph_run(inst, pad, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"metric:_:q{#"));
    free(a);
    const char *bad[] = {
        "{\"metric\":\"q\",\"value\":1,\"labels\":[\"a\"]}",
        "{\"metric\":\"q\",\"value\":1,\"tags\":[\":x\"]}",
        "{\"metric\":\"q\",\"value\":1,\"tags\":\"a:b\"}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ph_run_unchanged(inst, bad[i], NULL, PH_COMMIT, NULL),
                         SOPHIA_PROCESS_ERROR);
    char many[2048] = "{\"metric\":\"q\",\"value\":1,\"tags\":[";
    for (int i = 0; i < 65; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many),
                 "%s\"k%d:v\"", i ? "," : "", i);
    strcat(many, "]}");
    assert_int_equal(ph_run(inst, many, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    sophia_plugin_unload(inst);
}

/* What metrics exported on SDK 1.1 before issue 19 (format 2: firing
 * rule specs, no watermark) still hands its alert states over. */
static void test_imports_format_2(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char p[256], *a;
    const char *doc = "{\"format\":2,\"series\":[{\"key\":\"ops\\u001fcpu"
                      "\\u001fservice=api\",\"t\":[],\"v\":[],\"firing\":"
                      "[\"cpu>90/80@critical\",\"gone<1\"]}]}";
    assert_int_equal(inst->desc->processor->import_state(inst->state, doc), 0);
    ph_run(inst, point(p, sizeof(p), "cpu", 70, 0), NULL, PH_COMMIT, &a);
    assert_int_equal(ph_count(a, "\"state\":\"resolved\""), 1);
    free(a);
    sophia_plugin_unload(inst);
}

/* The exported state's sample count of its first series. */
static size_t samples_kept(sophia_instance *inst)
{
    char *s = ph_export(inst);
    json_t *doc = json_loads(s, 0, NULL);
    json_t *first = json_array_get(json_object_get(doc, "series"), 0);
    size_t n = json_array_size(json_object_get(first, "t"));
    json_decref(doc);
    free(s);
    return n;
}

static char *at_second(char *buf, size_t len, int sec, double v)
{
    snprintf(buf, len, "{\"metric\":\"rps\",\"value\":%g,\"timestamp\":%d}", v,
             1705746600 + sec);
    return buf;
}

/* A busy series holds what its windows can still use: a point a second
 * for five minutes leaves about a minute of samples (window 60 s, no
 * lateness), not 300; a point that drops them all and does not commit
 * gives them all back. */
static void test_busy_series_drops_old_samples(void **unused)
{
    (void)unused;
    sophia_conf_opt opts[] = {ph_list("windows", windows, 1),
                              ph_scalar("aggregate_every", "0"),
                              ph_scalar("allowed_lateness", "0"),
                              ph_scalar("max_future", "100000")};
    sophia_instance *inst = ph_load("metrics", opts, 4);
    char p[160], *a;
    for (int i = 0; i < 300; i++)
        ph_run(inst, at_second(p, sizeof(p), i, i), NULL, PH_COMMIT, NULL);
    size_t kept = samples_kept(inst);
    assert_true(kept >= 60 && kept <= 62);
    /* 10 minutes on: every sample is out of every window */
    ph_run_unchanged(inst, at_second(p, sizeof(p), 900, 7), NULL, PH_REFUSE,
                     NULL);
    assert_int_equal(samples_kept(inst), kept);
    ph_run(inst, at_second(p, sizeof(p), 900, 7), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"count\":1"));
    free(a);
    assert_int_equal(samples_kept(inst), 1);
    sophia_plugin_unload(inst);

    /* a full ring (8 samples): the push writes into a dropped sample's
     * slot, which the undo restores too */
    sophia_conf_opt full[] = {ph_list("windows", windows, 1),
                              ph_scalar("aggregate_every", "0"),
                              ph_scalar("allowed_lateness", "0"),
                              ph_scalar("max_future", "100000"),
                              ph_scalar("max_samples", "8")};
    inst = ph_load("metrics", full, 5);
    for (int i = 0; i < 20; i++)
        ph_run(inst, at_second(p, sizeof(p), i, i), NULL, PH_COMMIT, NULL);
    assert_int_equal(samples_kept(inst), 8);
    ph_run_unchanged(inst, at_second(p, sizeof(p), 900, 7), NULL, PH_REFUSE,
                     NULL);
    sophia_plugin_unload(inst);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_overlapping_points_undone),
    cmocka_unit_test(test_refused_alert_fires_on_redelivery),
    cmocka_unit_test(test_window_and_error),
    cmocka_unit_test(test_reload_keeps_state),
    cmocka_unit_test(test_imports_format_1),
    cmocka_unit_test(test_needs_sdk_1_1),
    cmocka_unit_test(test_event_time_and_lateness),
    cmocka_unit_test(test_dogstatsd_labels),
    cmocka_unit_test(test_cache_keys_any_prefix),
    cmocka_unit_test(test_series_caps),
    cmocka_unit_test(test_series_storage_is_lazy),
    cmocka_unit_test(test_memory_bound_100k),
    cmocka_unit_test(test_alert_cooldown_and_resolve),
    cmocka_unit_test(test_reload_carries_watermark_and_cooldown),
    cmocka_unit_test(test_labels_canonical),
    cmocka_unit_test(test_imports_format_2),
    cmocka_unit_test(test_busy_series_drops_old_samples),
};

PH_MAIN(tests)
