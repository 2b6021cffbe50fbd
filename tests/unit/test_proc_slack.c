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
 */
#include "proc_harness.h"

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
};

PH_MAIN(tests)
