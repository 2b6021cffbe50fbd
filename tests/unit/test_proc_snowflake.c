/*
 * test_proc_snowflake - the snowflake processor remembers an applied
 * change only when its event's effects commit (issue 17, SDK 1.1
 * host->stage), not when process() returns OK; through the real loader
 * and host, with tests/data/snowflake_cdc.ndjson:
 *
 *   - a batch whose effects are refused is not remembered: its
 *     redelivery applies it, with the same outputs (before, it was marked
 *     seen on OK and its redelivery skipped: the change was lost);
 *   - ERROR (a row without METADATA$ROW_ID after a good one) remembers
 *     nothing;
 *   - redelivery after commit queues nothing and counts duplicates; a
 *     change repeated within one batch is applied once;
 *   - reload keeps the remembered changes;
 *   - the seen set is bounded (max_seen): past it the oldest is forgotten
 *     and only that one applies again, while the rest stay recognised
 *     (pu_seen's index survives thousands of evictions);
 *   - init refuses an SDK 1.0 host (no host->stage), saying why.
 */
#include "proc_harness.h"

static sophia_conf_opt opts[1];

static sophia_instance *load(void)
{
    opts[0] = ph_scalar("default_key", "ACCOUNT_ID");
    return ph_load("snowflake", opts, 1);
}

static void test_refused_batch_applies_on_redelivery(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char *ins = ph_data("snowflake_cdc.ndjson", 1), *first;
    assert_int_equal(ph_run_unchanged(inst, ins, NULL, PH_REFUSE, &first),
                     SOPHIA_PROCESS_OK);
    assert_non_null(strstr(first, "\"action\":\"insert\""));
    assert_non_null(strstr(first, "sf:ANALYTICS.PUBLIC.ACCOUNT_HEALTH:acme"));
    ph_redelivered_commits(inst, ins, first);
    ph_redelivered_is_duplicate(inst, ins);
    free(first);
    free(ins);
    sophia_plugin_unload(inst);
}

static void test_error_and_repeats(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    const char *row = "{\"ACCOUNT_ID\":\"initech\",\"HEALTH_SCORE\":70,"
                      "\"METADATA$ACTION\":\"INSERT\",\"METADATA$ISUPDATE\":"
                      "false,\"METADATA$ROW_ID\":\"r1\"}";
    char bad[512], twice[512], *a;
    snprintf(bad, sizeof(bad),
             "{\"table\":\"T\",\"rows\":[%s,{\"ACCOUNT_ID\":\"x\","
             "\"METADATA$ACTION\":\"INSERT\"}]}",
             row);
    assert_int_equal(ph_run_unchanged(inst, bad, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    snprintf(twice, sizeof(twice), "{\"table\":\"T\",\"rows\":[%s,%s]}", row,
             row);
    /* the good row was not remembered by the failed batch; applied once */
    assert_int_equal(ph_run(inst, twice, NULL, PH_COMMIT, &a),
                     SOPHIA_PROCESS_OK);
    assert_int_equal(ph_count(a, "\"action\":\"publish\""), 1);
    free(a);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_seen(void **unused)
{
    (void)unused;
    sophia_instance *old = load();
    char *l1 = ph_data("snowflake_cdc.ndjson", 1);
    char *l2 = ph_data("snowflake_cdc.ndjson", 2);
    char *l3 = ph_data("snowflake_cdc.ndjson", 3), *a;
    ph_run(old, l1, NULL, PH_COMMIT, NULL);
    ph_run(old, l2, NULL, PH_COMMIT, NULL);
    ph_run(old, l3, NULL, PH_REFUSE, NULL); /* staged only: not carried */
    sophia_instance *inst = ph_reload(old, opts, 1);
    sophia_plugin_unload(old);
    ph_run(inst, l2, NULL, PH_COMMIT, &a);
    assert_string_equal(a, "[]");
    free(a);
    ph_run(inst, l3, NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"action\":\"delete\""));
    free(a);
    free(l1);
    free(l2);
    free(l3);
    sophia_plugin_unload(inst);
}

/* Inserts of row `i` into table T, as one batch. */
static char *row_batch(char *buf, size_t len, int i)
{
    snprintf(buf, len,
             "{\"table\":\"T\",\"rows\":[{\"ACCOUNT_ID\":\"a%d\","
             "\"METADATA$ACTION\":\"INSERT\",\"METADATA$ISUPDATE\":false,"
             "\"METADATA$ROW_ID\":\"r%d\"}]}",
             i, i);
    return buf;
}

static void test_seen_is_bounded(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {ph_scalar("default_key", "ACCOUNT_ID"),
                           ph_scalar("max_seen", "64")};
    sophia_instance *inst = ph_load("snowflake", o, 2);
    char b[300], *a;
    int n = 5000;
    for (int i = 0; i < n; i++)
        ph_run(inst, row_batch(b, sizeof(b), i), NULL, PH_COMMIT, NULL);
    /* the last 64 are recognised, every one of them */
    for (int i = n - 64; i < n; i++) {
        ph_run(inst, row_batch(b, sizeof(b), i), NULL, PH_COMMIT, &a);
        if (strcmp(a, "[]"))
            fail_msg("row %d not recognised: %s", i, a);
        free(a);
    }
    /* an older one was forgotten: it applies again */
    ph_run(inst, row_batch(b, sizeof(b), n - 65), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"action\":\"insert\""));
    free(a);
    sophia_plugin_unload(inst);
}

static void test_needs_sdk_1_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = ph_load("snowflake", NULL, 0);
    ph_refuses_sdk_1_0(inst);
    sophia_plugin_unload(inst);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_refused_batch_applies_on_redelivery),
    cmocka_unit_test(test_error_and_repeats),
    cmocka_unit_test(test_reload_keeps_seen),
    cmocka_unit_test(test_seen_is_bounded),
    cmocka_unit_test(test_needs_sdk_1_1),
};

PH_MAIN(tests)
