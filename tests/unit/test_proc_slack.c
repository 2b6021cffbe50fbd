// sophia-test: cost 55
/*
 * test_proc_slack - the slack processor's channel counts move with their
 * event's verdict (issue 17, SDK 1.1 host->stage), through the real
 * loader and host, with tests/data/slack_events.ndjson:
 *
 *   - a message whose effects are refused is not counted: its redelivery
 *     publishes the same counts (the old bug: counted, RETRY, counted
 *     again); RETRY (a channel id the cache refuses as a key) and ERROR
 *     (not an event_callback, no text) leave the state as it was;
 *   - redelivery after commit (same event_id, or channel + ts) queues
 *     nothing and counts a duplicate;
 *   - reload keeps counts, mentions and seen identities;
 *   - init refuses an SDK 1.0 host (no host->stage), saying why.
 *
 * Issue 19, with tests/data/slack_threads.ndjson (Events API bodies: a
 * message, two message_changed edits of it, two more messages, its
 * message_deleted; a thread root, replies with thread_ts, a resolving
 * reply, the root deleted):
 *   - a keyword alerts once per message (an edit, or the original after
 *     its edit, does not alert again for it), once per channel and rule
 *     within alert_cooldown; a Slack retry is a duplicate; a deletion
 *     raises nothing, and the message or an edit arriving after it is
 *     dropped;
 *   - a thread escalates once (alert_id slack_thread:<chan>:<thread_ts>),
 *     is updated under that id as it grows, and resolves;
 *   - per-account totals through channel_accounts;
 *   - reload carries alerted messages, cooldowns, threads and accounts;
 *   - 100k channels and threads stay within max_channels/max_threads,
 *     and an idle channel costs a small fraction of the old 16 KB.
 */
#include "proc_harness.h"

#include <unistd.h>

#define TH "slack_threads.ndjson"
#define ROOT "1700002000.000100"

static char *v2rules[] = {"warning=churn", "critical=cancel|outage"};
static char *v2accounts[] = {"C0ACME0001=acme"};
static sophia_conf_opt v2opts[3];

static sophia_instance *load_v2(void)
{
    v2opts[0] = ph_list("alert_rules", v2rules, 2);
    v2opts[1] = ph_list("channel_accounts", v2accounts, 1);
    v2opts[2] = ph_scalar("thread_participants", "3");
    return ph_load("slack", v2opts, 3);
}

/* Runs line n of the threads file, committing; its actions (parsed). */
static json_t *run_line(sophia_instance *inst, int n)
{
    char *body = ph_data(TH, n), *a;
    assert_int_equal(ph_run(inst, body, NULL, PH_COMMIT, &a),
                     SOPHIA_PROCESS_OK);
    json_t *v = json_loads(a, 0, NULL);
    assert_non_null(v);
    free(a);
    free(body);
    return v;
}

/* The alerts of `type` among `actions`; the first one's data in *first. */
static int alerts(json_t *actions, const char *type, json_t **first)
{
    size_t i;
    json_t *x;
    int n = 0;
    json_array_foreach(actions, i, x) {
        json_t *d = json_object_get(x, "data");
        const char *t = json_string_value(json_object_get(d, "alert_type"));
        if (!strcmp(json_string_value(json_object_get(x, "action")), "alert") &&
            t && !strcmp(t, type) && !n++ && first)
            *first = d;
    }
    return n;
}

/* Runs line n and returns how many `type` alerts it raised. */
static int line_alerts(sophia_instance *inst, int n, const char *type)
{
    json_t *a = run_line(inst, n);
    int k = alerts(a, type, NULL);
    json_decref(a);
    return k;
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Whether the exported state mentions `s`. */
static int exported_has(sophia_instance *inst, const char *s)
{
    char *e = ph_export(inst);
    int has = strstr(e, s) != NULL;
    free(e);
    return has;
}

static char *rules[] = {"critical=churn|cancel"};

static sophia_conf_opt opts[1];

static sophia_instance *load(void)
{
    opts[0] = ph_list("alert_rules", rules, 1);
    return ph_load("slack", opts, 1);
}

static void test_refused_then_counted_once(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char *churn = ph_data("slack_events.ndjson", 2), *first;
    assert_int_equal(ph_run_unchanged(inst, churn, NULL, PH_REFUSE, &first),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(first, "\"messages\":1"));
    assert_non_null(strstr(first, "slack_keyword"));
    ph_redelivered_commits(inst, churn, first);

    ph_redelivered_is_duplicate(inst, churn);
    free(first);

    /* the next message counts 2, with its mention */
    char *deal = ph_data("slack_events.ndjson", 3), *a;
    ph_run(inst, deal, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"messages\":2"));
    assert_non_null(strstr(a, "\"mentioned\":{\"U2147483697\":1}"));
    assert_non_null(strstr(a, "deal_mention"));
    /* 2 messages 42 s apart in the 300 s window: 0.4 a minute */
    assert_non_null(strstr(a, "\"rate_per_min\":0.4"));
    free(a);
    /* without event_id, channel + ts identify it */
    const char *bare = "{\"type\":\"event_callback\",\"event\":{\"type\":"
                       "\"message\",\"channel\":\"C2147483705\",\"user\":"
                       "\"U1\",\"text\":\"hi\",\"ts\":\"1700000060.000300\"}}";
    ph_run(inst, bare, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"messages\":3"));
    free(a);
    ph_run(inst, bare, NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    free(churn);
    free(deal);
    sophia_plugin_unload(inst);
}

static void test_retry_and_error_keep_state(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char *churn = ph_data("slack_events.ndjson", 2), *a;
    ph_run(inst, churn, NULL, PH_COMMIT, NULL);
    /* a channel the cache refuses as a key: RETRY, not counted, not seen */
    const char *bad = "{\"type\":\"event_callback\",\"event_id\":\"EvX\","
                      "\"event\":{\"type\":\"message\",\"channel\":\"C\\u0001\","
                      "\"user\":\"U1\",\"text\":\"cancel now\",\"ts\":\"1.0\"}}";
    assert_int_equal(ph_run_unchanged(inst, bad, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_RETRY);
    assert_int_equal(ph_run_unchanged(inst, bad, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_RETRY);
    assert_int_equal(ph_run_unchanged(inst, "{\"type\":\"nope\"}", NULL,
                                      PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    assert_int_equal(
        ph_run_unchanged(inst,
                         "{\"type\":\"event_callback\",\"event\":{\"type\":"
                         "\"message\",\"channel\":\"C2147483705\"}}",
                         NULL, PH_COMMIT, NULL),
        SOPHIA_PROCESS_ERROR);
    char *deal = ph_data("slack_events.ndjson", 3);
    ph_run(inst, deal, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"messages\":2"));
    free(a);
    free(deal);
    free(churn);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_counts(void **unused)
{
    (void)unused;
    sophia_instance *old = load();
    char *l2 = ph_data("slack_events.ndjson", 2);
    char *l3 = ph_data("slack_events.ndjson", 3);
    char *edit = ph_data("slack_events.ndjson", 4), *a;
    ph_run(old, l2, NULL, PH_COMMIT, NULL);
    ph_run(old, l3, NULL, PH_COMMIT, NULL);
    ph_run(old, edit, NULL, PH_REFUSE, NULL); /* staged only: not carried */
    sophia_instance *inst = ph_reload(old, opts, 1);
    sophia_plugin_unload(old);

    ph_run(inst, edit, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"messages\":2"));
    assert_non_null(strstr(a, "\"edits\":1"));
    assert_non_null(strstr(a, "\"mentioned\":{\"U2147483697\":1}"));
    free(a);
    ph_run(inst, l3, NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    free(l2);
    free(l3);
    free(edit);
    sophia_plugin_unload(inst);
}

static void test_keyword_once_per_message_and_cooldown(void **unused)
{
    (void)unused;
    sophia_instance *inst = load_v2();
    json_t *a, *al = NULL;
    assert_int_equal(line_alerts(inst, 1, "slack_keyword"), 1);
    /* edited, the keyword still there: not again */
    assert_int_equal(line_alerts(inst, 2, "slack_keyword"), 0);
    /* edited to add another rule's keyword: that rule only */
    a = run_line(inst, 3);
    assert_int_equal(alerts(a, "slack_keyword", &al), 1);
    assert_string_equal(str(al, "rule"), "cancel|outage");
    json_decref(a);
    /* churn in another message 60 s later: within the 300 s cooldown */
    double held = ph_counter("alerts_suppressed");
    assert_int_equal(line_alerts(inst, 4, "slack_keyword"), 0);
    assert_true(ph_counter("alerts_suppressed") == held + 1);
    /* 400 s after the first: alerts */
    assert_int_equal(line_alerts(inst, 5, "slack_keyword"), 1);
    /* Slack retries line 5 (same event_id): a duplicate */
    char *retry = ph_data(TH, 5);
    ph_redelivered_is_duplicate(inst, retry);
    free(retry);
    /* the first message deleted: nothing raised, its rules (cancel and
     * churn: 3) give way to the deletion's mark */
    assert_true(exported_has(inst, "[\"C0ACME0001 1700001000.000100\","
                                   "\"0000000000000003\"]"));
    a = run_line(inst, 6);
    assert_int_equal(alerts(a, "slack_keyword", NULL), 0);
    json_decref(a);
    assert_true(exported_has(inst, "[\"C0ACME0001 1700001000.000100\","
                                   "\"8000000000000000\"]"));
    assert_true(exported_has(inst, "\"deleted\":1"));
    sophia_plugin_unload(inst);
}

static void test_edit_before_its_message(void **unused)
{
    (void)unused;
    sophia_instance *inst = load_v2();
    assert_int_equal(line_alerts(inst, 2, "slack_keyword"), 1);
    assert_int_equal(line_alerts(inst, 1, "slack_keyword"), 0);
    sophia_plugin_unload(inst);

    /* the deletion first: the message and its edit arrive after it */
    inst = load_v2();
    json_decref(run_line(inst, 6));
    for (int n = 1; n <= 2; n++) {
        char *body = ph_data(TH, n), *a;
        assert_int_equal(ph_run_unchanged(inst, body, NULL, PH_COMMIT, &a),
                         SOPHIA_PROCESS_DROP);
        assert_string_equal(a, "[]");
        free(a);
        free(body);
    }
    sophia_plugin_unload(inst);
}

static void test_thread_escalates_once_and_resolves(void **unused)
{
    (void)unused;
    sophia_instance *inst = load_v2();
    json_t *a, *al = NULL;
    for (int i = 7; i <= 9; i++) /* the root and two replies */
        assert_int_equal(line_alerts(inst, i, "slack_thread"), 0);
    a = run_line(inst, 10); /* a third replier */
    assert_int_equal(alerts(a, "slack_thread", &al), 1);
    assert_string_equal(str(al, "alert_id"), "slack_thread:C0ACME0001:" ROOT);
    assert_string_equal(str(al, "state"), "firing");
    assert_int_equal(json_integer_value(json_object_get(al, "participants")), 3);
    json_decref(a);
    a = run_line(inst, 11); /* grows: the same alert, updated */
    assert_int_equal(alerts(a, "slack_thread", &al), 1);
    assert_string_equal(str(al, "alert_id"), "slack_thread:C0ACME0001:" ROOT);
    assert_int_equal(json_integer_value(json_object_get(al, "replies")), 4);
    assert_int_equal(json_integer_value(json_object_get(al, "participants")), 3);
    json_decref(a);
    a = run_line(inst, 12); /* "Fixed now, resolved" */
    assert_int_equal(alerts(a, "slack_thread", &al), 1);
    assert_string_equal(str(al, "state"), "resolved");
    assert_string_equal(str(al, "severity"), "warning");
    json_decref(a);
    assert_int_equal(line_alerts(inst, 13, "slack_thread"), 0);
    assert_true(exported_has(inst, "\"key\":\"C0ACME0001 " ROOT));
    assert_int_equal(line_alerts(inst, 14, "slack_thread"), 0);
    assert_false(exported_has(inst, "\"key\":\"C0ACME0001 " ROOT));
    sophia_plugin_unload(inst);

    /* the root deleted while the thread fires: resolved */
    inst = load_v2();
    for (int i = 7; i <= 10; i++)
        json_decref(run_line(inst, i));
    a = run_line(inst, 14);
    assert_int_equal(alerts(a, "slack_thread", &al), 1);
    assert_string_equal(str(al, "state"), "resolved");
    json_decref(a);
    sophia_plugin_unload(inst);
}

/* The slack_account update among actions, or fails. */
static json_t *account_of(json_t *actions)
{
    size_t i;
    json_t *x;
    json_array_foreach(actions, i, x) {
        json_t *d = json_object_get(x, "data");
        if (!strcmp(str(x, "action"), "publish") && str(d, "kind") &&
            !strcmp(str(d, "kind"), "slack_account"))
            return d;
    }
    fail_msg("no slack_account published");
    return NULL;
}

static void test_account_rollup(void **unused)
{
    (void)unused;
    sophia_instance *inst = load_v2();
    json_decref(run_line(inst, 1));
    json_decref(run_line(inst, 4));
    json_t *a = run_line(inst, 7), *d = account_of(a);
    assert_string_equal(str(d, "account"), "acme");
    assert_int_equal(json_integer_value(json_object_get(d, "messages")), 3);
    assert_int_equal(json_integer_value(json_object_get(d, "alerts")), 1);
    assert_int_equal(json_integer_value(json_object_get(d, "keywords")), 2);
    char *txt = json_dumps(a, JSON_COMPACT);
    assert_non_null(strstr(txt, "\"key\":\"slack:account:acme\""));
    free(txt);
    json_decref(a);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_new_state(void **unused)
{
    (void)unused;
    sophia_instance *old = load_v2();
    json_decref(run_line(old, 1));
    for (int i = 7; i <= 10; i++)
        json_decref(run_line(old, i));
    sophia_instance *inst = ph_reload(old, v2opts, 3);
    sophia_plugin_unload(old);
    assert_int_equal(line_alerts(inst, 2, "slack_keyword"), 0); /* alerted */
    assert_int_equal(line_alerts(inst, 4, "slack_keyword"), 0); /* cooldown */
    json_t *a = run_line(inst, 11), *al = NULL;
    assert_int_equal(alerts(a, "slack_thread", &al), 1);
    assert_int_equal(json_integer_value(json_object_get(al, "replies")), 4);
    /* 6 messages before the reload, this one the 7th */
    assert_int_equal(json_integer_value(json_object_get(account_of(a),
                                                        "messages")), 7);
    json_decref(a);
    sophia_plugin_unload(inst);
}

/* Resident set size in bytes. */
static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%ld %ld", &pages, &rss), 2);
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

/* n messages, each in channel C<from+i>; with `threads` each a reply in
 * its own thread. */
static void feed(sophia_instance *inst, int from, int n, int threads)
{
    char body[400];
    for (int i = from; i < from + n; i++) {
        snprintf(body, sizeof(body),
                 "{\"type\":\"event_callback\",\"event\":{\"type\":\"message\","
                 "\"channel\":\"C%08d\",\"user\":\"U%d\",\"text\":\"hello\","
                 "\"ts\":\"1700000%03d.%06d\"%s}}",
                 i, i % 50, i % 1000, i,
                 threads ? ",\"thread_ts\":\"1700000000.000001\"" : "");
        assert_int_equal(ph_run(inst, body, NULL, PH_COMMIT, NULL),
                         SOPHIA_PROCESS_OK);
    }
}

static size_t exported_count(sophia_instance *inst, const char *table)
{
    char *e = ph_export(inst);
    json_t *doc = json_loads(e, 0, NULL);
    size_t n = json_array_size(json_object_get(doc, table));
    json_decref(doc);
    free(e);
    return n;
}

static void test_bounded_at_100k_channels_and_threads(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {ph_scalar("max_channels", "1000"),
                           ph_scalar("max_threads", "1000"),
                           ph_scalar("max_seen", "1000")};
    sophia_instance *inst = ph_load("slack", o, 3);
    feed(inst, 0, 20000, 1);
    long mid = rss_bytes();
    feed(inst, 20000, 80000, 1);
    long grew = rss_bytes() - mid;
    assert_int_equal(exported_count(inst, "channels"), 1000);
    assert_int_equal(exported_count(inst, "threads"), 1000);
    assert_true(exported_has(inst, "C00099999"));
    assert_false(exported_has(inst, "C00098999"));
    printf("slack: 80k more channels and threads past the bound grew RSS "
           "by %ld KB\n", grew / 1024);
#if !defined(__SANITIZE_ADDRESS__) /* ASan quarantines what is freed */
    assert_true(grew < 4L * 1024 * 1024);
#endif
    sophia_plugin_unload(inst);
}

static void test_rss_per_10k_channels(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {ph_scalar("max_channels", "100000"),
                           ph_scalar("max_threads", "100000"),
                           ph_scalar("max_seen", "1")};
    sophia_instance *inst = ph_load("slack", o, 3);
    feed(inst, 1000000, 1000, 1); /* warm the allocator */
    long before = rss_bytes();
    feed(inst, 0, 100000, 0);
    long mid = rss_bytes();
    feed(inst, 200000, 100000, 1); /* threads; these channels replace the first */
    long per10k = (mid - before) / 10, threads10k = (rss_bytes() - mid) / 10;
    assert_int_equal(exported_count(inst, "channels"), 100000);
    assert_int_equal(exported_count(inst, "threads"), 100000);
    printf("slack: RSS per 10k channels %ld KB; per 10k threads %ld KB "
           "(channels replaced at the bound)\n", per10k / 1024,
           threads10k / 1024);
#if !defined(__SANITIZE_ADDRESS__)
    assert_true(per10k < 20L * 1024 * 1024); /* was 16 KB x 10k = 160 MB */
#endif
    sophia_plugin_unload(inst);
}

static void test_needs_sdk_1_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("slack", NULL, 0);
    ph_refuses_sdk_1_0(inst);
    sophia_plugin_unload(inst);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refused_then_counted_once),
    cmocka_unit_test(test_retry_and_error_keep_state),
    cmocka_unit_test(test_reload_keeps_counts),
    cmocka_unit_test(test_needs_sdk_1_1),
    cmocka_unit_test(test_keyword_once_per_message_and_cooldown),
    cmocka_unit_test(test_edit_before_its_message),
    cmocka_unit_test(test_thread_escalates_once_and_resolves),
    cmocka_unit_test(test_account_rollup),
    cmocka_unit_test(test_reload_keeps_new_state),
    cmocka_unit_test(test_bounded_at_100k_channels_and_threads),
    cmocka_unit_test(test_rss_per_10k_channels),
};

PH_MAIN(tests)
