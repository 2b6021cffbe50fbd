// sophia-test: cost 45
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
 *
 * Issue 19, on tests/data/crm_hubspot_ooo.ndjson and
 * crm_salesforce_cdc.ndjson (vendor-shaped, out of order):
 *   - event time orders each property: a late stage (HubSpot occurredAt,
 *     Salesforce commitTimestamp) never rewinds it (counted stale); past
 *     allowed_lateness the change is dropped whole (late_dropped);
 *   - stage velocity (days_in_stage), slipped close dates with a cooldown
 *     and a resolve when the deal closes, large_deal resolved when the
 *     amount falls;
 *   - pipeline totals per stage as metric updates, moving with the deals;
 *   - CDC GAP_* invalidate the named records and publish crm_resync, never
 *     applied as fields; GAP_OVERFLOW invalidates the entity's tag, forgets
 *     its deals and alerts;
 *   - reload carries the clocks (a late event stays late) and the totals;
 *   - max_deals bounds memory at 100k deals (RSS per 10k deals printed).
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

/* Line n of a data file through inst, committed: its actions. */
static char *line(sophia_instance *inst, const char *file, int n)
{
    char *ev = ph_data(file, n), *a;
    assert_int_equal(ph_run(inst, ev, NULL, PH_COMMIT, &a), SOPHIA_PROCESS_OK);
    free(ev);
    return a;
}

#define HS "crm_hubspot_ooo.ndjson"
#define SF "crm_salesforce_cdc.ndjson"

static void test_late_stage_never_rewinds(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    double stale = ph_counter("stale"), late = ph_counter("late_dropped");
    free(line(inst, HS, 1)); /* appointmentscheduled @T0 */
    char *a = line(inst, HS, 2); /* qualifiedtobuy @T0+2d */
    assert_non_null(strstr(a, "\"to\":\"qualifiedtobuy\""));
    assert_non_null(strstr(a, "\"days_in_stage\":2"));
    free(a);
    a = line(inst, HS, 3); /* presentationscheduled @T0+1d: late */
    assert_string_equal(a, "[]");
    free(a);
    assert_true(ph_counter("stale") == stale + 1);
    a = line(inst, HS, 4); /* contractsent @T0+5d: from qualifiedtobuy */
    assert_non_null(strstr(a, "\"from\":\"qualifiedtobuy\""));
    assert_non_null(strstr(a, "\"days_in_stage\":3"));
    free(a);
    a = line(inst, HS, 5); /* amount @T0+3d: 2 days behind, past 1 day */
    assert_string_equal(a, "[]");
    free(a);
    assert_true(ph_counter("late_dropped") == late + 1);
    /* a redelivery is the seen set's, not lateness's */
    double dups = ph_counter("duplicates");
    free(line(inst, HS, 4));
    assert_true(ph_counter("duplicates") == dups + 1);
    char *s = ph_export(inst);
    assert_non_null(strstr(s, "\"stage\":\"contractsent\""));
    assert_null(strstr(s, "\"amount\""));
    free(s);
    sophia_plugin_unload(inst);
}

static void test_salesforce_commit_order(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    free(line(inst, SF, 1));
    char *a = line(inst, SF, 2);
    assert_non_null(strstr(a, "\"to\":\"Negotiation/Review\""));
    free(a);
    a = line(inst, SF, 3); /* Qualification, committed before: late */
    assert_string_equal(a, "[]");
    free(a);
    char *s = ph_export(inst);
    assert_non_null(strstr(s, "\"stage\":\"Negotiation/Review\""));
    free(s);
    sophia_plugin_unload(inst);
}

static void test_close_date_slips_cooldown_resolve(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    double supp = ph_counter("alerts_suppressed");
    for (int i = 1; i <= 6; i++)
        free(line(inst, HS, i));
    char *a = line(inst, HS, 7); /* 2024-03-01 -> 2024-04-01 */
    assert_non_null(strstr(a, "\"alert_type\":\"close_date_slipped\""));
    assert_non_null(strstr(a, "\"from\":\"2024-03-01\""));
    assert_non_null(strstr(a, "\"to\":\"2024-04-01\""));
    assert_non_null(strstr(a, "\"days_slipped\":31"));
    assert_non_null(strstr(a, "\"state\":\"firing\""));
    free(a);
    a = line(inst, HS, 8); /* an hour later: the update, no alert */
    assert_non_null(strstr(a, "\"kind\":\"deal_close_date\""));
    assert_null(strstr(a, "close_date_slipped"));
    free(a);
    assert_true(ph_counter("alerts_suppressed") == supp + 1);
    a = line(inst, HS, 9); /* two days on: the cooldown is over */
    assert_non_null(strstr(a, "\"alert_type\":\"close_date_slipped\""));
    free(a);
    a = line(inst, HS, 10); /* closed won: the slip is resolved */
    assert_non_null(strstr(a, "deal_won"));
    assert_non_null(strstr(a, "\"state\":\"resolved\""));
    assert_non_null(strstr(a, "\"alert_id\":\"close_date_slipped:hubspot:4242\""));
    free(a);
    a = line(inst, HS, 11); /* 150000: large_deal firing */
    assert_non_null(strstr(a, "\"alert_type\":\"large_deal\""));
    assert_non_null(strstr(a, "\"state\":\"firing\""));
    free(a);
    a = line(inst, HS, 12); /* 50000: resolved */
    assert_non_null(strstr(a, "\"alert_id\":\"large_deal:hubspot:4242\""));
    assert_non_null(strstr(a, "\"state\":\"resolved\""));
    free(a);
    sophia_plugin_unload(inst);
}

/* A HubSpot stage (and amount) change of `deal` at `at` ms. */
static char *hs_event(char *buf, size_t len, int id, int deal, long long at,
                      const char *prop, const char *value)
{
    snprintf(buf, len,
             "{\"eventId\":%d,\"occurredAt\":%lld,\"subscriptionType\":"
             "\"deal.propertyChange\",\"objectId\":%d,\"propertyName\":\"%s\","
             "\"propertyValue\":\"%s\"}",
             id, at, deal, prop, value);
    return buf;
}

/* The value of metric `m` for stage `stage` in actions `a`, or -1. */
static double metric_of(const char *a, const char *m, const char *stage)
{
    json_t *arr = json_loads(a, 0, NULL), *x;
    size_t i;
    double v = -1;
    json_array_foreach(arr, i, x) {
        json_t *d = json_object_get(x, "data");
        if (!strcmp(json_string_value(json_object_get(x, "type")) ?: "",
                    "metric") &&
            !strcmp(json_string_value(json_object_get(d, "metric")) ?: "", m) &&
            !strcmp(json_string_value(json_object_get(
                        json_object_get(d, "labels"), "stage")) ?: "",
                    stage))
            v = json_number_value(json_object_get(d, "value"));
    }
    json_decref(arr);
    return v;
}

static void test_pipeline_totals(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    char ev[400], *a;
    long long t = 1704067200000LL;
    ph_run(inst, hs_event(ev, sizeof(ev), 1, 1, t, "amount", "1000"), NULL,
           PH_COMMIT, NULL);
    a = NULL;
    ph_run(inst, hs_event(ev, sizeof(ev), 2, 1, t, "dealstage", "qualified"),
           NULL, PH_COMMIT, &a);
    assert_true(metric_of(a, "crm_pipeline_deals", "qualified") == 1);
    assert_true(metric_of(a, "crm_pipeline_amount", "qualified") == 1000);
    free(a);
    ph_run(inst, hs_event(ev, sizeof(ev), 3, 2, t, "amount", "500"), NULL,
           PH_COMMIT, NULL);
    ph_run(inst, hs_event(ev, sizeof(ev), 4, 2, t, "dealstage", "qualified"),
           NULL, PH_COMMIT, &a);
    assert_true(metric_of(a, "crm_pipeline_deals", "qualified") == 2);
    assert_true(metric_of(a, "crm_pipeline_amount", "qualified") == 1500);
    free(a);
    /* deal 1 moves on: qualified loses it, contractsent gains it */
    ph_run(inst, hs_event(ev, sizeof(ev), 5, 1, t + 1, "dealstage",
                          "contractsent"), NULL, PH_COMMIT, &a);
    assert_true(metric_of(a, "crm_pipeline_amount", "qualified") == 500);
    assert_true(metric_of(a, "crm_pipeline_deals", "contractsent") == 1);
    free(a);
    /* an amount change moves its stage's sum; refused, it moves nothing */
    hs_event(ev, sizeof(ev), 6, 2, t + 1, "amount", "700");
    ph_run(inst, ev, NULL, PH_REFUSE, &a);
    assert_true(metric_of(a, "crm_pipeline_amount", "qualified") == 700);
    free(a);
    ph_run(inst, ev, NULL, PH_COMMIT, &a);
    assert_true(metric_of(a, "crm_pipeline_amount", "qualified") == 700);
    free(a);
    /* a reload rebuilds the totals from the deals */
    sophia_instance *re = ph_reload(inst, NULL, 0);
    sophia_plugin_unload(inst);
    ph_run(re, hs_event(ev, sizeof(ev), 7, 3, t, "dealstage", "qualified"),
           NULL, PH_COMMIT, &a);
    assert_true(metric_of(a, "crm_pipeline_deals", "qualified") == 2);
    assert_true(metric_of(a, "crm_pipeline_amount", "qualified") == 700);
    free(a);
    sophia_plugin_unload(re);
}

static void test_gap_events_resync(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("crm", NULL, 0);
    double resyncs = ph_counter("resyncs");
    free(line(inst, SF, 1));
    free(line(inst, SF, 6));
    char *a = line(inst, SF, 4); /* GAP_UPDATE of both */
    assert_non_null(strstr(a, "{\"action\":\"cache_invalidate\",\"key\":"
                              "\"crm:deal:salesforce:0065e00000AbCdEAAA\"}"));
    assert_non_null(strstr(a, "{\"action\":\"cache_invalidate\",\"key\":"
                              "\"crm:deal:salesforce:0065e00000AbCdFAAA\"}"));
    assert_int_equal(ph_count(a, "\"kind\":\"crm_resync\""), 2);
    assert_non_null(strstr(a, "\"to\":\"GAP_UPDATE\""));
    assert_null(strstr(a, "cache_put"));  /* never applied as fields */
    assert_null(strstr(a, "crm_change"));
    free(a);
    assert_true(ph_counter("resyncs") == resyncs + 2);
    char *s = ph_export(inst);
    assert_non_null(strstr(s, "\"deals\":[]"));
    free(s);
    /* the next change is from nothing: the state was forgotten */
    free(line(inst, SF, 1));
    free(line(inst, SF, 6));
    a = line(inst, SF, 5); /* GAP_OVERFLOW: the entity */
    assert_non_null(strstr(a, "{\"action\":\"cache_invalidate_tag\",\"tag\":"
                              "\"crm:salesforce:deal\"}"));
    assert_non_null(strstr(a, "\"alert_type\":\"crm_resync\""));
    assert_null(strstr(a, "000000000000000AAA"));
    free(a);
    s = ph_export(inst);
    assert_non_null(strstr(s, "\"deals\":[]"));
    free(s);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_clocks(void **unused)
{
    (void)unused;
    sophia_instance *old = ph_load("crm", NULL, 0);
    free(line(old, HS, 1));
    free(line(old, HS, 2));
    sophia_instance *inst = ph_reload(old, NULL, 0);
    sophia_plugin_unload(old);
    char *a = line(inst, HS, 3); /* still late after the reload */
    assert_string_equal(a, "[]");
    free(a);
    a = line(inst, HS, 4); /* and the stage's entry time came along */
    assert_non_null(strstr(a, "\"days_in_stage\":3"));
    free(a);
    sophia_plugin_unload(inst);
}

/* The process's resident set in bytes (/proc/self/statm). */
static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

/* n deals, one stage change each, through inst. */
static void many_deals(sophia_instance *inst, int n)
{
    char ev[400];
    for (int i = 0; i < n; i++)
        if (ph_run(inst, hs_event(ev, sizeof(ev), 100000 + i, 1000000 + i,
                                  1704067200000LL, "dealstage", "qualified"),
                   NULL, PH_COMMIT, NULL) != SOPHIA_PROCESS_OK)
            fail_msg("deal %d refused", i);
}

static void test_deals_bounded_100k(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {ph_scalar("max_deals", "10000")};
    sophia_instance *inst = ph_load("crm", o, 1);
    many_deals(inst, 100000);
    char *s = ph_export(inst), ev[400], *a;
    assert_int_equal(ph_count(s, "\"stage\":\"qualified\""), 10000);
    free(s);
    /* the totals follow the bound: 10000 deals in the stage, not 100k */
    ph_run(inst, hs_event(ev, sizeof(ev), 99, 1099999, 1704067200000LL + 1,
                          "dealstage", "contractsent"), NULL, PH_COMMIT, &a);
    assert_true(metric_of(a, "crm_pipeline_deals", "qualified") == 9999);
    free(a);
    sophia_plugin_unload(inst);

    /* RSS per 10k deals, all 100k kept */
    inst = ph_load("crm", NULL, 0);
    long before = rss_bytes();
    many_deals(inst, 100000);
    long after = rss_bytes();
    printf("crm: 100000 deals kept, RSS %+.0f KB per 10k deals\n",
           (double)(after - before) / 1024.0 / 10);
    sophia_plugin_unload(inst);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refused_ok_then_redelivery),
    cmocka_unit_test(test_retry_and_error_keep_state),
    cmocka_unit_test(test_salesforce_redelivery),
    cmocka_unit_test(test_reload_keeps_stage),
    cmocka_unit_test(test_needs_sdk_1_1),
    cmocka_unit_test(test_prefetch_other_node),
    cmocka_unit_test(test_prefetch_tier_down_retries),
    cmocka_unit_test(test_late_stage_never_rewinds),
    cmocka_unit_test(test_salesforce_commit_order),
    cmocka_unit_test(test_close_date_slips_cooldown_resolve),
    cmocka_unit_test(test_pipeline_totals),
    cmocka_unit_test(test_gap_events_resync),
    cmocka_unit_test(test_reload_keeps_clocks),
    cmocka_unit_test(test_deals_bounded_100k),
};

PH_MAIN(tests)
