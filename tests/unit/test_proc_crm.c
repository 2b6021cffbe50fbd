/*
 * test_proc_crm - the crm processor's state moves with its event's verdict
 * (issue 17, SDK 1.1 host->stage), through the real loader and host:
 *
 *   - an OK whose effects are refused (context freed uncommitted) leaves
 *     the deal's stage as it was, so the redelivered event reports the same
 *     transition and alert as the first attempt did;
 *   - RETRY (a host call refused: a deal id with a control byte makes its
 *     cache key invalid) and ERROR (not a CRM event) leave the state as it
 *     was (export_state text unchanged);
 *   - redelivery after commit (same HubSpot eventId or Salesforce replayId)
 *     queues nothing and counts a duplicate; without an event id the same
 *     stage again is no transition;
 *   - reload: the next stage change on the new instance is a transition
 *     from the stage the old one committed, and seen ids carry over;
 *   - init refuses an SDK 1.0 host (no host->stage), saying why.
 */
#include "proc_harness.h"

/* A HubSpot deal.propertyChange (tests/data/crm_updates.ndjson's shape). */
static char *stage_event(char *buf, size_t len, int event_id, const char *deal,
                         const char *stage)
{
    snprintf(buf, len,
             "{\"eventId\":%d,\"subscriptionId\":2101,\"portalId\":62515,"
             "\"occurredAt\":1700000000000,\"subscriptionType\":"
             "\"deal.propertyChange\",\"attemptNumber\":0,\"objectId\":%s,"
             "\"propertyName\":\"dealstage\",\"propertyValue\":\"%s\","
             "\"changeSource\":\"CRM\"}",
             event_id, deal, stage);
    return buf;
}

/* The same without an eventId. */
static char *stage_event_no_id(char *buf, size_t len, const char *stage)
{
    snprintf(buf, len,
             "{\"subscriptionType\":\"deal.propertyChange\",\"objectId\":"
             "777,\"propertyName\":\"dealstage\",\"propertyValue\":\"%s\"}",
             stage);
    return buf;
}

static void test_refused_ok_then_redelivery(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    char ev[512], *first;
    assert_int_equal(ph_run(inst, stage_event(ev, sizeof(ev), 1, "123456",
                                              "appointmentscheduled"),
                            NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_OK);

    /* closedwon, effects refused: state untouched */
    stage_event(ev, sizeof(ev), 2, "123456", "closedwon");
    assert_int_equal(ph_run_unchanged(inst, ev, NULL, PH_REFUSE, &first),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(first, "\"from\":\"appointmentscheduled\""));
    assert_non_null(strstr(first, "\"to\":\"closedwon\""));
    assert_non_null(strstr(first, "\"alert_type\":\"deal_won\""));

    /* redelivered: the same transition and alert, then it commits */
    ph_redelivered_commits(inst, ev, first);

    /* redelivered after commit: nothing, counted as a duplicate */
    ph_redelivered_is_duplicate(inst, ev);
    free(first);

    /* without an event id: the same stage again is no transition */
    char *a, *b;
    stage_event_no_id(ev, sizeof(ev), "qualified");
    ph_run(inst, ev, NULL, PH_COMMIT, &a);
    ph_run(inst, ev, NULL, PH_COMMIT, &b);
    assert_int_equal(ph_count(a, "\"deal_stage\""), 1);
    assert_int_equal(ph_count(b, "\"deal_stage\""), 0);
    free(a);
    free(b);
    sophia_plugin_unload(inst);
}

static void test_retry_and_error_keep_state(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    char ev[512], *acts;
    ph_run(inst, stage_event(ev, sizeof(ev), 10, "\"d1\"", "qualified"), NULL,
           PH_COMMIT, NULL);

    /* a deal id the cache refuses as a key: RETRY after the transition was
     * computed; neither the stage nor the event id is recorded */
    stage_event(ev, sizeof(ev), 11, "\"d\\u0001\"", "closedwon");
    assert_int_equal(ph_run_unchanged(inst, ev, NULL, PH_COMMIT, &acts),
                     SOPHIA_PROCESS_RETRY);
    assert_non_null(strstr(acts, "deal_won")); /* it was computed... */
    free(acts);
    assert_int_equal(ph_run_unchanged(inst, ev, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_RETRY); /* ...and is again: not seen */

    /* not a CRM event: ERROR, nothing recorded */
    assert_int_equal(ph_run_unchanged(inst, "{\"eventId\":12,\"foo\":1}", NULL,
                                      PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);

    /* d1 still moves from qualified */
    ph_run(inst, stage_event(ev, sizeof(ev), 13, "\"d1\"", "closedlost"), NULL,
           PH_COMMIT, &acts);
    assert_non_null(strstr(acts, "\"from\":\"qualified\""));
    assert_non_null(strstr(acts, "deal_lost"));
    free(acts);
    sophia_plugin_unload(inst);
}

static void test_salesforce_redelivery(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    char *ev = ph_data("crm_updates.ndjson", 3), *a, *b;
    assert_int_equal(ph_run(inst, ev, "1700000010000-0", PH_COMMIT, &a),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(a, "\"to\":\"Closed Lost\""));
    assert_non_null(strstr(a, "deal_lost"));
    assert_int_equal(ph_run(inst, ev, "1700000010000-0", PH_COMMIT, &b),
                     SOPHIA_PROCESS_OK);
    assert_string_equal(b, "[]");
    free(a);
    free(b);
    free(ev);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_stage(void **unused)
{
    (void)unused;
    sophia_instance *old = ph_load("crm", NULL, 0);
    char ev[512], *acts;
    ph_run(old, stage_event(ev, sizeof(ev), 20, "555", "presentationscheduled"),
           NULL, PH_COMMIT, NULL);
    /* staged but never committed: must not travel */
    ph_run(old, stage_event(ev, sizeof(ev), 21, "555", "closedwon"), NULL,
           PH_REFUSE, NULL);
    sophia_instance *inst = ph_reload(old, NULL, 0);
    sophia_plugin_unload(old);

    ph_run(inst, stage_event(ev, sizeof(ev), 22, "555", "contractsent"), NULL,
           PH_COMMIT, &acts);
    assert_non_null(strstr(acts, "\"from\":\"presentationscheduled\""));
    assert_non_null(strstr(acts, "\"to\":\"contractsent\""));
    free(acts);
    /* event 20 was seen by the old instance: a duplicate here */
    ph_run(inst, stage_event(ev, sizeof(ev), 20, "555", "presentationscheduled"),
           NULL, PH_COMMIT, &acts);
    assert_string_equal(acts, "[]");
    free(acts);
    sophia_plugin_unload(inst);
}

static void test_needs_sdk_1_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    ph_refuses_sdk_1_0(inst);
    sophia_plugin_unload(inst);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refused_ok_then_redelivery),
    cmocka_unit_test(test_retry_and_error_keep_state),
    cmocka_unit_test(test_salesforce_redelivery),
    cmocka_unit_test(test_reload_keeps_stage),
    cmocka_unit_test(test_needs_sdk_1_1),
};

PH_MAIN(tests)
