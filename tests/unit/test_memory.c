/*
 * test_memory - the worker pool (core/event/worker.c) and the memory store
 * (core/memory/memory.c) in process, against the real PostgreSQL named by
 * SOPHIA_PG_URL (the harness starts one; unset is a failure, not a skip).
 *
 * Worker: jobs run off the loop thread and complete on it, in a later loop
 * turn; freeing the pool cancels what never started; the creator's
 * thread-init hook runs once on each thread, before its jobs. Memory: store, then
 * hybrid search finds it with score parts, feedback moves importance, and
 * a store freed with work in flight answers every callback. Each run uses
 * a table of its own.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <libpq-fe.h>

#include "memory/memory.h"
#include "memory/memory_priv.h" /* the synonym list */
#include "event/worker.h"


/* ------------------------------------------------------------ worker */

/* Set by the thread-init hook on the thread it runs on. */
static __thread int hooked_thread;

typedef struct wjob {
    pthread_t loop_thread, ran_on;
    int ran, done, cancelled, ran_hooked;
    int *finished;
    useconds_t sleep_us;
} wjob;

static void wwork(void *arg)
{
    wjob *j = arg;
    if (j->sleep_us)
        usleep(j->sleep_us);
    j->ran_on = pthread_self();
    j->ran_hooked = hooked_thread;
    j->ran = 1;
}

static void wdone(void *arg, int cancelled)
{
    wjob *j = arg;
    assert_true(pthread_equal(pthread_self(), j->loop_thread));
    j->done = 1;
    j->cancelled = cancelled;
    (*j->finished)++;
}

static void test_worker_jobs_complete_on_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_workers *w = sophia_workers_new(base, 2, "test", NULL, NULL);
    assert_non_null(w);
    enum { N = 64 };
    wjob jobs[N];
    int finished = 0;
    for (int i = 0; i < N; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].loop_thread = pthread_self();
        jobs[i].finished = &finished;
        assert_int_equal(sophia_workers_submit(w, wwork, wdone, &jobs[i]), 0);
    }
    assert_int_equal(finished, 0); /* never inside submit */
    for (int spins = 0; finished < N && spins < 100000; spins++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(finished, N);
    for (int i = 0; i < N; i++) {
        assert_true(jobs[i].ran && jobs[i].done && !jobs[i].cancelled);
        assert_false(pthread_equal(jobs[i].ran_on, pthread_self()));
    }
    sophia_workers_stats st;
    sophia_workers_get_stats(w, &st);
    assert_int_equal(st.threads, 2);
    assert_int_equal(st.done, N);
    sophia_workers_free(w);
    event_base_free(base);
}

static void test_worker_free_cancels_queued(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_workers *w = sophia_workers_new(base, 1, "test", NULL, NULL);
    enum { N = 8 };
    wjob jobs[N];
    int finished = 0;
    for (int i = 0; i < N; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].loop_thread = pthread_self();
        jobs[i].finished = &finished;
        jobs[i].sleep_us = 50000;
        sophia_workers_submit(w, wwork, wdone, &jobs[i]);
    }
    usleep(10000);
    sophia_workers_free(w); /* the running one finishes; the rest cancel */
    assert_int_equal(finished, N);
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        assert_true(jobs[i].done);
        assert_int_equal(jobs[i].cancelled, !jobs[i].ran);
        cancelled += jobs[i].cancelled;
    }
    assert_true(cancelled >= N - 2);
    assert_null(sophia_workers_new(base, 0, "bad", NULL, NULL));
    event_base_free(base);
}

static void count_init(void *arg)
{
    __atomic_fetch_add((int *)arg, 1, __ATOMIC_SEQ_CST);
    hooked_thread = 1;
}

static void test_worker_thread_init_hook(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int inits = 0;
    sophia_workers *w = sophia_workers_new(base, 3, "test", count_init, &inits);
    assert_non_null(w);
    enum { N = 16 };
    wjob jobs[N];
    int finished = 0;
    for (int i = 0; i < N; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].loop_thread = pthread_self();
        jobs[i].finished = &finished;
        jobs[i].sleep_us = 1000;
        assert_int_equal(sophia_workers_submit(w, wwork, wdone, &jobs[i]), 0);
    }
    for (int spins = 0; finished < N && spins < 100000; spins++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(finished, N);
    for (int i = 0; i < N; i++)
        assert_true(jobs[i].ran_hooked); /* the hook ran before the job */
    assert_false(hooked_thread); /* never on the creating thread */
    sophia_workers_free(w);
    assert_int_equal(__atomic_load_n(&inits, __ATOMIC_SEQ_CST), 3);
    event_base_free(base);
}

/* ------------------------------------------------------------ memory */

static char table[64], index_path[128];

static const char *pg_url(void)
{
    const char *u = getenv("SOPHIA_PG_URL");
    if (!u || !*u)
        fail_msg("SOPHIA_PG_URL is not set: it must name a throwaway PostgreSQL "
                 "database; the test harness exports it");
    return u;
}

typedef struct waiter {
    int done, err;
    int64_t id;
    json_t *results;
    double importance;
    int found;
} waiter;

static void on_stored(void *arg, int64_t id, int err, const char *msg)
{
    waiter *w = arg;
    (void)msg;
    w->done++;
    w->err = err;
    if (id > w->id) /* stores in flight together may answer in any order */
        w->id = id;
}

static void on_found(void *arg, const json_t *results, int err, const char *msg)
{
    waiter *w = arg;
    (void)msg;
    w->done++;
    w->err = err;
    w->results = results ? json_deep_copy(results) : NULL;
}

static void on_feedback(void *arg, int found, double imp, int err, const char *msg)
{
    waiter *w = arg;
    (void)msg;
    w->done++;
    w->err = err;
    w->found = found;
    w->importance = imp;
}

static void wait_for(struct event_base *base, waiter *w, int n)
{
    for (int i = 0; w->done < n && i < 2000000; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(100);
    assert_true(w->done >= n);
}

static sophia_memory *open_store(struct event_base *base, sophia_conf **c)
{
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "memory:\n  table: %s\n  index_path: %s\n",
             table, index_path);
    sophia_diag d;
    sophia_diag_init(&d);
    *c = sophia_conf_load_string("t.yaml", yaml, strlen(yaml), &d);
    assert_int_equal(d.count, 0);
    sophia_diag_free(&d);
    setenv("SOPHIA_PG_URL", pg_url(), 1);
    sophia_conf_apply_env(*c, NULL);
    sophia_memory *m = sophia_memory_new(*c, base, NULL, NULL);
    assert_non_null(m);
    return m;
}

static void test_memory_store_search_feedback(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_conf *c;
    sophia_memory *m = open_store(base, &c);
    json_t *ctx = json_pack("{s:s}", "user", "ursula");
    waiter w = {0};
    /* stored before the index is loaded: waits, then runs */
    assert_int_equal(sophia_memory_store(m, "Ursula manages the Lisbon data center migration",
                                         "fact", ctx, -1, on_stored, &w), 0);
    wait_for(base, &w, 1);
    assert_int_equal(w.err, 0);
    int64_t id = w.id;
    assert_true(id > 0);
    sophia_memory_store(m, "Weekly standup notes about coffee machines", "event", ctx,
                        0.3, on_stored, &w);
    wait_for(base, &w, 2);

    json_t *filter = json_pack("{s:s}", "user", "ursula");
    waiter s = {0};
    assert_int_equal(sophia_memory_search(m, "data center migration Lisbon", 5, filter,
                                          on_found, &s), 0);
    wait_for(base, &s, 1);
    assert_int_equal(s.err, 0);
    assert_true(json_array_size(s.results) == 2);
    json_t *top = json_array_get(s.results, 0);
    assert_int_equal(json_integer_value(json_object_get(top, "id")), id);
    json_t *parts = json_object_get(top, "score_parts");
    assert_true(json_real_value(json_object_get(parts, "rrf")) > 0.99);
    assert_true(json_real_value(json_object_get(parts, "vector")) > 0.5);
    json_decref(s.results);

    waiter f = {0};
    assert_int_equal(sophia_memory_feedback(m, id, 1, on_feedback, &f), 0);
    wait_for(base, &f, 1);
    assert_true(f.found && f.importance > 0.5 && f.importance <= 1.0);
    sophia_memory_feedback(m, 987654321, 0, on_feedback, &f);
    wait_for(base, &f, 2);
    assert_false(f.found);

    assert_int_equal(sophia_memory_search(m, "x", 0, NULL, on_found, &s), SOPHIA_EINVAL);
    assert_int_equal(sophia_memory_search(m, "x", 101, NULL, on_found, &s), SOPHIA_EINVAL);

    /* freed with a search in flight: its callback still runs */
    waiter late = {0};
    sophia_memory_search(m, "coffee", 3, NULL, on_found, &late);
    sophia_memory_free(m);
    assert_int_equal(late.done, 1);
    json_decref(late.results);

    json_decref(filter);
    json_decref(ctx);
    sophia_conf_free(c);
    event_base_free(base);
}

static void test_memory_check(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    sophia_conf *c;
    sophia_memory *m = open_store(base, &c);
    json_t *ok = json_string("fine"), *empty = json_string(""), *num = json_integer(3);
    json_t *ctx_bad = json_pack("{s:[i]}", "a", 1), *imp_bad = json_real(1.5);
    char why[160];
    assert_null(sophia_memory_check(m, ok, NULL, NULL, NULL, why, sizeof(why)));
    assert_non_null(sophia_memory_check(m, empty, NULL, NULL, NULL, why, sizeof(why)));
    assert_non_null(sophia_memory_check(m, num, NULL, NULL, NULL, why, sizeof(why)));
    assert_non_null(sophia_memory_check(m, ok, num, NULL, NULL, why, sizeof(why)));
    assert_non_null(sophia_memory_check(m, ok, NULL, ctx_bad, NULL, why, sizeof(why)));
    assert_non_null(sophia_memory_check(m, ok, NULL, ok, NULL, why, sizeof(why)));
    assert_non_null(sophia_memory_check(m, ok, NULL, NULL, imp_bad, why, sizeof(why)));
    json_decref(ok);
    json_decref(empty);
    json_decref(num);
    json_decref(ctx_bad);
    json_decref(imp_bad);
    sophia_memory_free(m);
    sophia_conf_free(c);
    event_base_free(base);
}

/* ------------------------------------------- scopes, get, list, delete */

typedef struct crud_w {
    int done, err;
    json_t *got;  /* a memory or a page (deep copies) */
    int64_t next;
    size_t deleted;
} crud_w;

static void on_got(void *arg, const json_t *memory, int err, const char *msg)
{
    crud_w *w = arg;
    (void)msg;
    w->done++;
    w->err = err;
    json_decref(w->got);
    w->got = memory ? json_deep_copy(memory) : NULL;
}

static void on_page(void *arg, const json_t *memories, int64_t next, int err,
                    const char *msg)
{
    on_got(arg, memories, err, msg);
    ((crud_w *)arg)->next = next;
}

static void on_gone(void *arg, size_t deleted, int err, const char *msg)
{
    crud_w *w = arg;
    (void)msg;
    w->done++;
    w->err = err;
    w->deleted = deleted;
}

static void crud_wait(struct event_base *base, crud_w *w, int n)
{
    for (int i = 0; w->done < n && i < 2000000; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(100);
    assert_true(w->done >= n);
    assert_int_equal(w->err, 0);
}

static void test_memory_scope_crud(void **state)
{
    (void)state;
    json_t *good = json_string("u1"), *empty = json_string(""), *num = json_integer(1);
    assert_null(sophia_memory_check_scope(good, NULL, json_null()));
    assert_string_equal(sophia_memory_check_scope(empty, NULL, NULL),
                        "user_id must be a string of 1..128 bytes");
    assert_string_equal(sophia_memory_check_scope(NULL, good, num),
                        "session_id must be a string of 1..128 bytes");

    /* context filters: scalars, in, ranges on numbers and ISO dates */
    char why[200];
    const char *fine[] = {"{\"a\":\"x\",\"n\":3,\"b\":true}",
                          "{\"t\":{\"in\":[\"gold\",2]}}",
                          "{\"s\":{\"gte\":10,\"lt\":50.5}}",
                          "{\"d\":{\"gt\":\"2026-03-01T00:00:00Z\"}}"};
    const char *bad[][2] = {{"{\"s\":{\"foo\":1}}", "unknown operator foo"},
                            {"{\"s\":{}}", "needs in, gt"},
                            {"{\"s\":{\"gte\":\"soon\"}}", "gte must be a number"},
                            {"{\"s\":{\"in\":[]}}", "array of 1..100"},
                            {"{\"s\":{\"in\":[[1]]}}", "in values must be"},
                            {"{\"s\":null}", "a value must be"}};
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
        json_t *f = json_loads(fine[i], 0, NULL);
        assert_null(sophia_memory_check_filter(f, why, sizeof(why)));
        json_decref(f);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *f = json_loads(bad[i][0], 0, NULL);
        const char *e = sophia_memory_check_filter(f, why, sizeof(why));
        assert_non_null(e);
        assert_non_null(strstr(e, bad[i][1]));
        json_decref(f);
    }

    struct event_base *base = event_base_new();
    sophia_conf *c;
    sophia_memory *m = open_store(base, &c);
    /* agent_id from the context, user_id given (wins over the context's) */
    json_t *ctx = json_pack("{s:s,s:s}", "agent_id", "bot7", "user_id", "ignored");
    sophia_memory_scope sc = {"scoped-user", NULL, "sess"};
    waiter w = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(sophia_memory_store_scoped(m, "Ines plans the Porto offsite",
                                                    "fact", ctx, -1, &sc, on_stored, &w), 0);
    wait_for(base, &w, 3);
    int64_t last = w.id;

    crud_w g = {0};
    assert_int_equal(sophia_memory_get(m, last, on_got, &g), 0);
    crud_wait(base, &g, 1);
    assert_string_equal(json_string_value(json_object_get(g.got, "user_id")), "scoped-user");
    assert_string_equal(json_string_value(json_object_get(g.got, "agent_id")), "bot7");
    assert_string_equal(json_string_value(json_object_get(g.got, "session_id")), "sess");

    /* two pages of 2 + 1, newest first */
    sophia_memory_list_q q = {.scope = {"scoped-user", NULL, NULL}, .limit = 2};
    assert_int_equal(sophia_memory_list(m, &q, on_page, &g), 0);
    crud_wait(base, &g, 2);
    assert_int_equal(json_array_size(g.got), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(g.got, 0), "id")), last);
    assert_true(g.next > 0);
    q.before = g.next;
    assert_int_equal(sophia_memory_list(m, &q, on_page, &g), 0);
    crud_wait(base, &g, 3);
    assert_int_equal(json_array_size(g.got), 1);
    assert_int_equal(g.next, 0);
    q.limit = 0;
    assert_int_equal(sophia_memory_list(m, &q, on_page, &g), SOPHIA_EINVAL);

    sophia_memory_change ch = {NULL, NULL, NULL, 0.25};
    assert_int_equal(sophia_memory_patch(m, last, &ch, on_got, &g), 0);
    crud_wait(base, &g, 4);
    assert_true(fabs(json_real_value(json_object_get(g.got, "importance")) - 0.25) < 1e-6);

    sophia_memory_scope none = {NULL, NULL, NULL};
    assert_int_equal(sophia_memory_forget(m, &none, on_gone, &g), SOPHIA_EINVAL);
    assert_int_equal(sophia_memory_delete(m, last, on_gone, &g), 0);
    crud_wait(base, &g, 5);
    assert_int_equal(g.deleted, 1);
    assert_int_equal(sophia_memory_forget(m, &sc, on_gone, &g), 0);
    crud_wait(base, &g, 6);
    assert_int_equal(g.deleted, 2);
    assert_int_equal(sophia_memory_get(m, last, on_got, &g), 0);
    crud_wait(base, &g, 7);
    assert_null(g.got);

    json_decref(good);
    json_decref(empty);
    json_decref(num);
    json_decref(ctx);
    sophia_memory_free(m);
    sophia_conf_free(c);
    event_base_free(base);
}

/* ------------------------------------------------------------ synonyms */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_memory_synonyms(void **state)
{
    (void)state;
    char path[64], err[256];
    snprintf(path, sizeof(path), "/tmp/test_memory_syn_%d.txt", (int)getpid());
    write_file(path, "# comment\n\ndeal, opportunity, contract # trailing\n"
               "price cut, discount\n");
    mem_syn *s = mem_syn_load(path, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(mem_syn_groups(s), 2);
    char *rest;
    char *x = mem_syn_expand(s, "Where does the ACME Opportunity stand?", &rest);
    /* the whole group, one phrase a line, as one concept (group 0); the
     * member leaves the question's words */
    assert_string_equal(x, "0\tdeal\n0\topportunity\n0\tcontract\n");
    assert_string_equal(rest, "Where does the ACME             stand?");
    free(x);
    free(rest);
    x = mem_syn_expand(s, "a price cut for Acme", &rest); /* a phrase */
    assert_string_equal(x, "1\tprice <-> cut\n1\tdiscount\n");
    assert_string_equal(rest, "a           for Acme");
    free(x);
    free(rest);
    x = mem_syn_expand(s, "dealing with opportunityless contracts", &rest); /* whole words only */
    assert_string_equal(x, "");
    assert_string_equal(rest, "dealing with opportunityless contracts");
    free(x);
    free(rest);
    x = mem_syn_expand(NULL, "deal", &rest); /* no list: no expansion */
    assert_string_equal(x, "");
    assert_string_equal(rest, "deal");
    free(x);
    free(rest);
    mem_syn_free(s);

    /* a group of one says which line */
    write_file(path, "deal, opportunity\nlonely\n");
    assert_null(mem_syn_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, ":2: a group needs two or more"));
    unlink(path);
    assert_null(mem_syn_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, path));
}

static int cleanup(void **state)
{
    (void)state;
    PGconn *c = PQconnectdb(pg_url());
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP TABLE IF EXISTS %s, %s_stats, %s_words",
             table, table, table);
    PQclear(PQexec(c, sql));
    PQfinish(c);
    unlink(index_path);
    return 0;
}

int main(void)
{
    snprintf(table, sizeof(table), "test_memory_%d", (int)getpid());
    snprintf(index_path, sizeof(index_path), "/tmp/test_memory_%d.index", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_jobs_complete_on_loop),
        cmocka_unit_test(test_worker_free_cancels_queued),
        cmocka_unit_test(test_worker_thread_init_hook),
        cmocka_unit_test(test_memory_store_search_feedback),
        cmocka_unit_test(test_memory_check),
        cmocka_unit_test(test_memory_scope_crud),
        cmocka_unit_test(test_memory_synonyms),
    };
    return cmocka_run_group_tests(tests, NULL, cleanup);
}
