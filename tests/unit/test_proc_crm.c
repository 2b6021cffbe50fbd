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
 *   - init refuses an SDK 1.0 host (no host->stage), saying why;
 *   - prefetch (SDK 1.1): a fresh instance on another node (its own L1,
 *     the same Redis and PostgreSQL) reports a transition from the stage
 *     node A's record holds, read from L2 or from L3; without the prefetch
 *     it could not (from false). With L3 down a miss is not believed: the
 *     event is a RETRY and the state does not move; an L1 hit still
 *     answers at once.
 */
#include "proc_harness.h"

#include <unistd.h>

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

/* A deal record as crm's put_record writes it, put on `c` through the
 * tiers in `sync` (L1 is written unless `l1` is 0), waited for on base. */
static void put_record(sophia_cache *c, struct event_base *base,
                       const char *key, const char *deal, const char *stage,
                       unsigned sync, int l1)
{
    char rec[300];
    snprintf(rec, sizeof(rec),
             "{\"source\":\"hubspot\",\"object\":\"deal\",\"id\":\"%s\","
             "\"stage\":\"%s\",\"amount\":5000}", deal, stage);
    ph_fetch f = {0};
    unsigned inval = l1 ? 0 : SOPHIA_TIER_L1 | (sync & SOPHIA_TIER_L2 ? 0
                                                   : SOPHIA_TIER_L2);
    assert_int_equal(sophia_cache_put_plan(c, key, rec, strlen(rec), 600,
                                           NULL, sync, 0, inval,
                                           ph_on_fetched, &f),
                     0);
    for (int i = 0; i < 500 && !f.done; i++)
        ph_loop_step(base);
    assert_true(f.done);
    assert_int_equal(f.rc, 0);
}

static void test_prefetch_other_node(void **unused)
{
    (void)unused;
    struct event_base *base = event_base_new();
    sophia_conf *ca, *cb;
    sophia_cache *a = ph_cache_new(base, 1, "harness", &ca);
    sophia_cache *b = ph_cache_new(base, 1, "harness", &cb); /* env: b */
    char deal[32], deal3[40], key[128], key3[128], ev[512], *acts;
    snprintf(deal, sizeof(deal), "%d%06d", (int)getpid(),
             (int)(sophia_now_wall_us() % 1000000));
    snprintf(deal3, sizeof(deal3), "%s3", deal);
    snprintf(key, sizeof(key), "crm:deal:hubspot:%s", deal);
    snprintf(key3, sizeof(key3), "crm:deal:hubspot:%s", deal3);
    /* node A committed the deal at presentationscheduled: every tier */
    put_record(a, base, key, deal, "presentationscheduled",
               SOPHIA_TIER_L1 | SOPHIA_TIER_L2 | SOPHIA_TIER_L3, 1);
    const char *v;
    size_t len;
    assert_int_equal(sophia_cache_peek(b, key, &v, &len), SOPHIA_ENOENT);

    /* node B's crm never saw it; without a prefetch, from nothing */
    sophia_instance *inst = ph_load("crm", NULL, 0);
    stage_event(ev, sizeof(ev), 30, deal, "closedwon");
    assert_int_equal(ph_run(inst, ev, NULL, PH_REFUSE, &acts),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(acts, "\"from\":false"));
    free(acts);

    /* with it: read from L2, the transition from A's stage, the amount */
    assert_int_equal(ph_run_fetched(inst, ev, PH_COMMIT, &acts, base),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(acts, "\"from\":\"presentationscheduled\""));
    assert_non_null(strstr(acts, "\"to\":\"closedwon\""));
    assert_non_null(strstr(acts, "\"amount\":5000"));
    assert_non_null(strstr(acts, "deal_won"));
    free(acts);
    assert_int_equal(sophia_cache_peek(b, key, &v, &len), 0); /* promoted */

    /* a record only L3 holds (L1 and L2 dropped) is read from L3 */
    put_record(a, base, key3, deal3, "contractsent", SOPHIA_TIER_L3, 0);
    assert_int_equal(sophia_cache_peek(a, key3, &v, &len), SOPHIA_ENOENT);
    stage_event(ev, sizeof(ev), 31, deal3, "closedlost");
    assert_int_equal(ph_run_fetched(inst, ev, PH_COMMIT, &acts, base),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(acts, "\"from\":\"contractsent\""));
    assert_non_null(strstr(acts, "deal_lost"));
    free(acts);
    sophia_plugin_unload(inst);
    ph_cache_free(a, ca);
    ph_cache_free(b, cb);
    event_base_free(base);
}

static void test_prefetch_tier_down_retries(void **unused)
{
    (void)unused;
    struct event_base *base = event_base_new();
    sophia_conf *conf;
    sophia_cache *c =
        ph_cache_new(base, 0, "postgresql://postgres@127.0.0.1:1/none", &conf);
    const char *e;
    for (int i = 0; i < 500 && sophia_cache_l3_state(c, &e) != 0; i++)
        ph_loop_step(base);
    assert_int_equal(sophia_cache_l3_state(c, &e), 0);

    sophia_instance *inst = ph_load("crm", NULL, 0);
    char ev[512], *acts;
    stage_event(ev, sizeof(ev), 40, "4040", "closedwon");
    /* L1 misses and L3 cannot be asked: not "no such deal", a RETRY */
    char *before = ph_export(inst);
    assert_int_equal(ph_run_fetched(inst, ev, PH_COMMIT, &acts, base),
                     SOPHIA_PROCESS_RETRY);
    assert_string_equal(acts, "[]"); /* process() never ran */
    free(acts);
    char *after = ph_export(inst);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* an L1 hit answers inside the call, tier down or not */
    put_record(c, base, "crm:deal:hubspot:4040", "4040", "qualified",
               SOPHIA_TIER_L1, 1);
    assert_int_equal(ph_run_fetched(inst, ev, PH_COMMIT, &acts, base),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(acts, "\"from\":\"qualified\""));
    free(acts);
    sophia_plugin_unload(inst);
    ph_cache_free(c, conf);
    event_base_free(base);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refused_ok_then_redelivery),
    cmocka_unit_test(test_retry_and_error_keep_state),
    cmocka_unit_test(test_salesforce_redelivery),
    cmocka_unit_test(test_reload_keeps_stage),
    cmocka_unit_test(test_needs_sdk_1_1),
    cmocka_unit_test(test_prefetch_other_node),
    cmocka_unit_test(test_prefetch_tier_down_retries),
};

PH_MAIN(tests)
