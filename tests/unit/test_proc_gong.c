/*
 * test_proc_gong - the gong processor's call records (the metadata and
 * transcript halves, and whether the call's memories were stored) move
 * with their event's verdict (issue 17, SDK 1.1 host->stage), through the
 * real loader and host, with tests/data/gong_calls.ndjson:
 *
 *   - a transcript whose effects are refused is not kept: its redelivery
 *     publishes the same analysis and deal_risk alert; RETRY (a call id
 *     the cache refuses as a key) and ERROR (not a call) leave the state
 *     as it was;
 *   - redelivery after commit (a half equal to the committed one) queues
 *     nothing and counts a duplicate;
 *   - reload keeps both halves: a transcript after the reload is analysed
 *     with the speaker names the metadata before it gave;
 *   - init refuses an SDK 1.0 host (no host->stage), saying why.
 */
#include "proc_harness.h"

static void test_refused_transcript_then_redelivery(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("gong", NULL, 0);
    char *meta = ph_data("gong_calls.ndjson", 1);
    char *tr = ph_data("gong_calls.ndjson", 2), *first;
    assert_int_equal(ph_run(inst, meta, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_OK);
    assert_int_equal(ph_run_unchanged(inst, tr, NULL, PH_REFUSE, &first),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(first, "\"transcript\":true"));
    assert_non_null(strstr(first, "Bob Buyer"));
    assert_non_null(strstr(first, "deal_risk"));
    ph_redelivered_commits(inst, tr, first);

    ph_redelivered_is_duplicate(inst, tr);
    ph_redelivered_is_duplicate(inst, meta);
    free(first);
    free(meta);
    free(tr);
    sophia_plugin_unload(inst);
}

static void test_retry_and_error_keep_state(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("gong", NULL, 0);
    char *meta = ph_data("gong_calls.ndjson", 1), *a;
    ph_run(inst, meta, NULL, PH_COMMIT, NULL);
    const char *bad = "{\"callId\":\"c\\u0001\",\"transcript\":[{\"speakerId\":"
                      "\"s1\",\"sentences\":[{\"start\":0,\"end\":1000,"
                      "\"text\":\"we may cancel\"}]}]}";
    assert_int_equal(ph_run_unchanged(inst, bad, NULL, PH_COMMIT, &a),
                     SOPHIA_PROCESS_RETRY);
    free(a);
    assert_int_equal(ph_run_unchanged(inst, "{\"callId\":\"x\"}", NULL,
                                      PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    assert_int_equal(ph_run_unchanged(inst, "[1]", NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    free(meta);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_calls(void **unused)
{
    (void)unused;
    sophia_instance *old = ph_load("gong", NULL, 0);
    char *meta = ph_data("gong_calls.ndjson", 1);
    char *tr = ph_data("gong_calls.ndjson", 2), *a;
    ph_run(old, meta, NULL, PH_COMMIT, NULL);
    ph_run(old, tr, NULL, PH_REFUSE, NULL); /* staged only: not carried */
    sophia_instance *inst = ph_reload(old, NULL, 0);
    sophia_plugin_unload(old);

    ph_run(inst, meta, NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]"); /* the metadata came across */
    free(a);
    ph_run(inst, tr, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"transcript\":true"));
    assert_non_null(strstr(a, "Bob Buyer"));
    free(a);
    free(meta);
    free(tr);
    sophia_plugin_unload(inst);
}

static void test_needs_sdk_1_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("gong", NULL, 0);
    ph_refuses_sdk_1_0(inst);
    sophia_plugin_unload(inst);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refused_transcript_then_redelivery),
    cmocka_unit_test(test_retry_and_error_keep_state),
    cmocka_unit_test(test_reload_keeps_calls),
    cmocka_unit_test(test_needs_sdk_1_1),
};

PH_MAIN(tests)
