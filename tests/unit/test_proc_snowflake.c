/*
 * test_proc_snowflake - the snowflake processor, through the real loader
 * and host, with tests/data/snowflake_cdc.ndjson and
 * snowflake_flips.ndjson:
 *
 *   - its offset marks move only when the event's effects commit (SDK 1.1
 *     host->stage): a batch whose effects are refused is applied again on
 *     redelivery, with the same outputs; ERROR (a row without
 *     METADATA$ROW_ID, or without its offset, after a good one) moves no
 *     mark;
 *   - redelivery is recognised by the feed's offset, never by content: a
 *     value flipping A->B->A->B applies every time (it was skipped as a
 *     redelivery when a change was its row id, action and data), while a
 *     replayed batch, a row repeated within a batch and a row from before
 *     the mark are duplicates; offsets past 2^53 come as decimal text;
 *   - an update that changes the key columns invalidates the old key;
 *   - reload keeps the marks;
 *   - memory: marks are bounded by max_scopes (the oldest scope goes), and
 *     100k keys in one table leave one mark (RSS per 10k keys printed);
 *   - init refuses an SDK 1.0 host (no host->stage), saying why.
 */
#include "proc_harness.h"

#include <unistd.h>

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
                      "false,\"METADATA$ROW_ID\":\"r1\",\"_offset\":7}";
    char bad[512], twice[512], *a;
    snprintf(bad, sizeof(bad),
             "{\"table\":\"T\",\"rows\":[%s,{\"ACCOUNT_ID\":\"x\","
             "\"METADATA$ACTION\":\"INSERT\",\"_offset\":8}]}",
             row);
    assert_int_equal(ph_run_unchanged(inst, bad, NULL, PH_COMMIT, NULL),
                     SOPHIA_PROCESS_ERROR);
    /* a row without its offset: ERROR too, nothing remembered */
    snprintf(bad, sizeof(bad),
             "{\"table\":\"T\",\"rows\":[%s,{\"ACCOUNT_ID\":\"x\","
             "\"METADATA$ACTION\":\"INSERT\",\"METADATA$ROW_ID\":\"r2\"}]}",
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

static void test_reload_keeps_marks(void **unused)
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

/* An insert of key a<i> at offset i into `table`, as one batch. */
static char *row_batch(char *buf, size_t len, const char *table, int i)
{
    snprintf(buf, len,
             "{\"table\":\"%s\",\"rows\":[{\"ACCOUNT_ID\":\"a%d\","
             "\"METADATA$ACTION\":\"INSERT\",\"METADATA$ISUPDATE\":false,"
             "\"METADATA$ROW_ID\":\"r%d\",\"_offset\":%d}]}",
             table, i, i, i + 1);
    return buf;
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

static void test_marks_are_bounded(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {ph_scalar("default_key", "ACCOUNT_ID"),
                           ph_scalar("max_scopes", "64")};
    sophia_instance *inst = ph_load("snowflake", o, 2);
    char b[400], t[32], *a;
    int n = 5000;
    double evicted = ph_counter("scopes_evicted");
    for (int i = 0; i < n; i++) {
        snprintf(t, sizeof(t), "T%d", i);
        ph_run(inst, row_batch(b, sizeof(b), t, i), NULL, PH_COMMIT, NULL);
    }
    /* the last 64 tables' marks are kept: every replay recognised */
    for (int i = n - 64; i < n; i++) {
        snprintf(t, sizeof(t), "T%d", i);
        ph_run(inst, row_batch(b, sizeof(b), t, i), NULL, PH_COMMIT, &a);
        if (strcmp(a, "[]"))
            fail_msg("table %s not recognised: %s", t, a);
        free(a);
    }
    assert_true(ph_counter("scopes_evicted") >= evicted + n - 64);
    /* an older table's mark was forgotten: its row applies again */
    snprintf(t, sizeof(t), "T%d", n - 65);
    ph_run(inst, row_batch(b, sizeof(b), t, n - 65), NULL, PH_COMMIT, &a);
    assert_non_null(strstr(a, "\"action\":\"insert\""));
    free(a);
    sophia_plugin_unload(inst);
}

/* 100k keys through one table: the state is one mark, whatever the
 * number of keys (the content set it replaced held up to 100k entries). */
static void test_100k_keys_one_mark(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char b[400];
    int n = 100000;
    long before = rss_bytes();
    for (int i = 0; i < n; i++)
        if (ph_run(inst, row_batch(b, sizeof(b), "T", i), NULL, PH_COMMIT,
                   NULL) != SOPHIA_PROCESS_OK)
            fail_msg("row %d refused", i);
    long after = rss_bytes();
    char *s = ph_export(inst);
    assert_string_equal(s, "{\"format\":2,\"marks\":[{\"scope\":\"T\","
                           "\"offset\":\"100000\"}]}");
    free(s);
    printf("snowflake: %d keys, RSS %+.1f KB per 10k keys\n", n,
           (double)(after - before) / 1024.0 / (n / 10000));
    sophia_plugin_unload(inst);
}

/* tests/data/snowflake_flips.ndjson line `n` through inst, committed:
 * its actions. */
static char *flips(sophia_instance *inst, int n, int fate)
{
    char *ev = ph_data("snowflake_flips.ndjson", n), *a;
    assert_int_equal(ph_run(inst, ev, NULL, fate, &a), SOPHIA_PROCESS_OK);
    free(ev);
    return a;
}

static void test_flips_apply_by_offset(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    char *a;
    double dups = ph_counter("duplicates");
    free(flips(inst, 1, PH_COMMIT)); /* insert initech 60 */
    /* 60 -> 45 -> 60 -> 45: each an update, the last two repeating the
     * first's content under new offsets */
    int want[] = {45, 60, 45};
    for (int i = 0; i < 3; i++) {
        char score[64];
        a = flips(inst, 2 + i, PH_COMMIT);
        snprintf(score, sizeof(score), "\"HEALTH_SCORE\":%d", want[i]);
        assert_int_equal(ph_count(a, "\"action\":\"update\""), 1);
        assert_non_null(strstr(a, score));
        free(a);
    }
    assert_true(ph_counter("duplicates") == dups);
    /* a replayed batch (line 2 again, offsets 102-103): nothing */
    a = flips(inst, 2, PH_COMMIT);
    assert_string_equal(a, "[]");
    free(a);
    assert_true(ph_counter("duplicates") == dups + 2);
    /* a batch from before the mark (offset 100, new content): nothing */
    a = flips(inst, 6, PH_COMMIT);
    assert_string_equal(a, "[]");
    free(a);
    /* 64-bit offsets as text: applied, then recognised */
    a = flips(inst, 7, PH_COMMIT);
    assert_non_null(strstr(a, "umbrella"));
    free(a);
    a = flips(inst, 7, PH_COMMIT);
    assert_string_equal(a, "[]");
    free(a);
    char *s = ph_export(inst);
    assert_non_null(strstr(s, "\"offset\":\"18446744073709551000\""));
    free(s);
    sophia_plugin_unload(inst);
}

static void test_key_change_invalidates_old_key(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    double moved = ph_counter("key_changes");
    free(flips(inst, 1, PH_COMMIT));
    char *a = flips(inst, 5, PH_COMMIT); /* initech -> initrode */
    const char *old = "{\"action\":\"cache_invalidate\",\"key\":"
                      "\"sf:ANALYTICS.PUBLIC.ACCOUNT_HEALTH:initech\"}";
    assert_non_null(strstr(a, old));
    assert_non_null(strstr(a, "\"key\":\"sf:ANALYTICS.PUBLIC.ACCOUNT_HEALTH:"
                              "initrode\""));
    assert_non_null(strstr(a, "\"previous_key\":\"initech\""));
    /* the old key goes before the new one is written */
    assert_true(strstr(a, old) < strstr(a, "\"action\":\"cache_put\""));
    free(a);
    assert_true(ph_counter("key_changes") == moved + 1);
    /* an update that keeps its key invalidates nothing */
    a = flips(inst, 2, PH_COMMIT);
    assert_int_equal(ph_count(a, "cache_invalidate"), 0);
    free(a);
    sophia_plugin_unload(inst);
}

static void test_reload_format_1(void **unused)
{
    (void)unused;
    sophia_instance *inst = load();
    /* an export of the content-deduped 1.1.0: loads, carries nothing */
    assert_int_equal(inst->desc->processor->import_state(
                         inst->state, "{\"format\":1,\"seen\":{\"key\":"
                                      "\"00000000000000000000000000000000\","
                                      "\"fp\":[]}}"),
                     0);
    assert_int_equal(inst->desc->processor->import_state(
                         inst->state, "{\"format\":2,\"marks\":[{\"scope\":"
                                      "\"T\",\"offset\":\"x\"}]}"),
                     SOPHIA_EPARSE);
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
    cmocka_unit_test(test_reload_keeps_marks),
    cmocka_unit_test(test_marks_are_bounded),
    cmocka_unit_test(test_100k_keys_one_mark),
    cmocka_unit_test(test_flips_apply_by_offset),
    cmocka_unit_test(test_key_change_invalidates_old_key),
    cmocka_unit_test(test_reload_format_1),
    cmocka_unit_test(test_needs_sdk_1_1),
};

PH_MAIN(tests)
