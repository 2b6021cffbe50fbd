// sophia-test: cost 23
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
 *
 * Issue 19, with tests/data/gong_calls_v2.ndjson (calls v2 metadata with
 * parties and affiliations; the transcript; Gong's re-sent "updated"
 * call; the transcript edited with a new risk; edited again without
 * any):
 *   - rep vs customer by affiliation: talk ratio, questions, the longest
 *     customer monologue, next steps, competitors by name, YAML topics;
 *   - the deal_risk alert fires once per call under alert_id
 *     deal_risk:<id>: not again for the metadata after the transcript
 *     (either order), the "updated" call or a replay; changed content
 *     fires again only past risk_cooldown; a transcript without risk
 *     resolves it; the gate crosses a reload;
 *   - one call_summary memory per call;
 *   - 100k calls stay within max_calls (and the RSS per 10k is printed).
 */
#include "proc_harness.h"

#include <unistd.h>

#define V2 "gong_calls_v2.ndjson"
#define CALL "8810002233445566778"

static char *competitors[] = {"Globex", "Rival Co=rival co|rivalco"};
static char *topics[] = {"Security=security review|sso",
                         "Pricing=price|discount"};
static sophia_conf_opt v2opts[3];

/* The v2 instance: competitors and topics from YAML, `cooldown` seconds
 * of risk cooldown (NULL: the default). */
static sophia_instance *load_v2(const char *cooldown, size_t *nopts)
{
    v2opts[0] = ph_list("competitors", competitors, 2);
    v2opts[1] = ph_list("topics", topics, 2);
    *nopts = 2;
    if (cooldown)
        v2opts[(*nopts)++] = ph_scalar("risk_cooldown", cooldown);
    return ph_load("gong", v2opts, *nopts);
}

/* Runs line `n` of the v2 file, committing; the queued actions. */
static json_t *run_line(sophia_instance *inst, int n)
{
    char *body = ph_data(V2, n), *a;
    assert_int_equal(ph_run(inst, body, NULL, PH_COMMIT, &a),
                     SOPHIA_PROCESS_OK);
    json_t *v = json_loads(a, 0, NULL);
    assert_non_null(v);
    free(a);
    free(body);
    return v;
}

/* The deal_risk alerts among `actions` (its data); the first in *first. */
static int risk_alerts(json_t *actions, json_t **first)
{
    size_t i;
    json_t *x;
    int n = 0;
    json_array_foreach(actions, i, x) {
        json_t *d = json_object_get(x, "data");
        const char *t = json_string_value(json_object_get(d, "alert_type"));
        if (!strcmp(json_string_value(json_object_get(x, "action")), "alert") &&
            t && !strcmp(t, "deal_risk") && !n++ && first)
            *first = d;
    }
    return n;
}

/* The analysis published with the transcript, or fails. */
static json_t *analysis_of(json_t *actions)
{
    size_t i;
    json_t *x;
    json_array_foreach(actions, i, x) {
        json_t *d = json_object_get(x, "data");
        if (json_is_true(json_object_get(d, "transcript")) &&
            !strcmp(json_string_value(json_object_get(x, "action")), "publish"))
            return d;
    }
    fail_msg("no analysis published");
    return NULL;
}

static double num(json_t *doc, const char *a, const char *b)
{
    return json_number_value(json_object_get(json_object_get(doc, a), b));
}

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

static void test_sides_by_affiliation(void **unused)
{
    (void)unused;
    size_t n;
    sophia_instance *inst = load_v2(NULL, &n);
    json_decref(run_line(inst, 1));
    json_t *a = run_line(inst, 2), *d = analysis_of(a);
    /* rep 4000+3000+6000 ms, customers 8000+10000+5000+4000, the
     * "Unknown" dial-in's 2000 ms unattributed */
    assert_true(num(d, "talk_ratio", "rep") == 0.325);
    assert_true(num(d, "talk_ratio", "customer") == 0.675);
    assert_true(num(d, "talk_ms_by_side", "customer") == 27000);
    assert_int_equal(json_integer_value(json_object_get(d, "unattributed_ms")),
                     2000);
    assert_true(num(d, "questions", "rep") == 2);
    assert_true(num(d, "questions", "customer") == 2);
    json_t *mono = json_object_get(d, "longest_customer_monologue");
    assert_string_equal(json_string_value(json_object_get(mono, "speaker")),
                        "Carl Customer");
    assert_int_equal(json_integer_value(json_object_get(mono, "ms")), 23000);
    json_t *steps = json_object_get(d, "next_steps");
    assert_int_equal(json_array_size(steps), 1);
    assert_non_null(strstr(json_string_value(json_array_get(steps, 0)),
                           "next step is a pricing call"));
    char *comp = json_dumps(json_object_get(d, "competitors"), JSON_COMPACT);
    assert_string_equal(comp, "[{\"mentions\":1,\"name\":\"Globex\"}]");
    free(comp);
    char *top = json_dumps(json_object_get(d, "topics"), JSON_COMPACT);
    assert_string_equal(top, "[\"Discovery\",\"Security\",\"Pricing\"]");
    free(top);
    assert_string_equal(json_string_value(json_object_get(d, "account")),
                        "0015000000Init01");
    json_decref(a);
    sophia_plugin_unload(inst);
}

static void test_risk_fires_once_per_call(void **unused)
{
    (void)unused;
    size_t n;
    sophia_instance *inst = load_v2(NULL, &n);
    json_t *a, *al = NULL;
    json_decref(run_line(inst, 1));
    a = run_line(inst, 2);
    assert_int_equal(risk_alerts(a, &al), 1);
    assert_string_equal(json_string_value(json_object_get(al, "alert_id")),
                        "deal_risk:" CALL);
    assert_string_equal(json_string_value(json_object_get(al, "state")), "firing");
    assert_non_null(strstr(json_string_value(json_object_get(al, "message")),
                           "competitors Globex"));
    json_decref(a);
    /* Gong re-sends the call, updated: analysed again, no second alert */
    a = run_line(inst, 3);
    assert_int_equal(risk_alerts(a, NULL), 0);
    assert_non_null(strstr(json_string_value(json_object_get(
                               analysis_of(a), "title")), "updated"));
    json_decref(a);
    /* the first metadata again (out of order: older than the update) */
    a = run_line(inst, 1);
    assert_int_equal(risk_alerts(a, NULL), 0);
    json_decref(a);
    /* the transcript edited with a new risk, within the cooldown: held */
    double held = ph_counter("alerts_suppressed");
    a = run_line(inst, 4);
    assert_int_equal(risk_alerts(a, NULL), 0);
    assert_true(ph_counter("alerts_suppressed") == held + 1);
    json_decref(a);
    /* without any risk: resolved, same alert_id and severity */
    a = run_line(inst, 5);
    assert_int_equal(risk_alerts(a, &al), 1);
    assert_string_equal(json_string_value(json_object_get(al, "state")), "resolved");
    assert_string_equal(json_string_value(json_object_get(al, "alert_id")),
                        "deal_risk:" CALL);
    assert_string_equal(json_string_value(json_object_get(al, "severity")), "warning");
    json_decref(a);
    a = run_line(inst, 5); /* a replay: nothing */
    assert_int_equal(risk_alerts(a, NULL), 0);
    json_decref(a);
    sophia_plugin_unload(inst);
}

static void test_transcript_first_then_cooldown_zero(void **unused)
{
    (void)unused;
    size_t n;
    sophia_instance *inst = load_v2("0", &n);
    json_t *a, *al = NULL;
    a = run_line(inst, 2); /* the transcript before its metadata */
    assert_int_equal(risk_alerts(a, NULL), 1);
    json_decref(a);
    a = run_line(inst, 1);
    assert_int_equal(risk_alerts(a, NULL), 0);
    json_decref(a);
    /* no cooldown: the changed content fires at once, same alert_id */
    a = run_line(inst, 4);
    assert_int_equal(risk_alerts(a, &al), 1);
    assert_string_equal(json_string_value(json_object_get(al, "alert_id")),
                        "deal_risk:" CALL);
    assert_non_null(strstr(json_string_value(json_object_get(al, "message")),
                           "cancel"));
    json_decref(a);
    sophia_plugin_unload(inst);
}

static void test_reload_keeps_risk_gate(void **unused)
{
    (void)unused;
    size_t n;
    sophia_instance *old = load_v2(NULL, &n);
    json_decref(run_line(old, 1));
    json_decref(run_line(old, 2));
    sophia_instance *inst = ph_reload(old, v2opts, n);
    sophia_plugin_unload(old);
    json_t *a = run_line(inst, 3), *al = NULL;
    assert_int_equal(risk_alerts(a, NULL), 0);
    json_decref(a);
    a = run_line(inst, 5);
    assert_int_equal(risk_alerts(a, &al), 1);
    assert_string_equal(json_string_value(json_object_get(al, "state")), "resolved");
    json_decref(a);
    sophia_plugin_unload(inst);
}

static void test_one_summary_per_call(void **unused)
{
    (void)unused;
    size_t n;
    sophia_instance *inst = load_v2(NULL, &n);
    double before = ph_counter("summaries");
    json_decref(run_line(inst, 2));
    assert_true(ph_counter("summaries") == before); /* no names yet */
    json_decref(run_line(inst, 1));
    assert_true(ph_counter("summaries") == before + 1);
    for (int i = 3; i <= 5; i++)
        json_decref(run_line(inst, i));
    assert_true(ph_counter("summaries") == before + 1);
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

/* n calls' metadata, ids c<from+i>. */
static void feed_calls(sophia_instance *inst, int from, int n)
{
    char body[300];
    for (int i = from; i < from + n; i++) {
        snprintf(body, sizeof(body),
                 "{\"metaData\":{\"id\":\"c%d\",\"title\":\"Call %d\"},"
                 "\"parties\":[{\"speakerId\":\"1\",\"affiliation\":"
                 "\"Internal\",\"name\":\"Rep\"}]}", i, i);
        assert_int_equal(ph_run(inst, body, NULL, PH_COMMIT, NULL),
                         SOPHIA_PROCESS_OK);
    }
}

static void test_bounded_at_100k_calls(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {ph_scalar("max_calls", "1000")};
    sophia_instance *inst = ph_load("gong", o, 1);
    feed_calls(inst, 0, 100000);
    char *e = ph_export(inst);
    json_t *doc = json_loads(e, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(doc, "calls")), 1000);
    assert_non_null(strstr(e, "\"c99999\""));
    assert_null(strstr(e, "\"c98999\""));
    json_decref(doc);
    free(e);
    sophia_plugin_unload(inst);

    sophia_conf_opt big[] = {ph_scalar("max_calls", "100000")};
    inst = ph_load("gong", big, 1);
    feed_calls(inst, 1000000, 1000); /* warm the allocator */
    long before = rss_bytes();
    feed_calls(inst, 0, 100000);
    printf("gong: RSS per 10k calls (metadata only) %ld KB\n",
           (rss_bytes() - before) / 10 / 1024);
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
    cmocka_unit_test(test_sides_by_affiliation),
    cmocka_unit_test(test_risk_fires_once_per_call),
    cmocka_unit_test(test_transcript_first_then_cooldown_zero),
    cmocka_unit_test(test_reload_keeps_risk_gate),
    cmocka_unit_test(test_one_summary_per_call),
    cmocka_unit_test(test_bounded_at_100k_calls),
};

PH_MAIN(tests)
