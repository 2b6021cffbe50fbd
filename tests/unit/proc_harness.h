/*
 * proc_harness.h - what the per-processor tests (test_proc_<name>.c) share:
 * load the real built processor through the daemon's loader (plugin.c)
 * with the real host table (host.c), run one event in a real context,
 * and decide its fate as the stream does - commit (its effects took
 * effect) or free without commit (RETRY, ERROR, or an OK whose effects
 * were refused).
 *
 * The state a processor keeps is observed from the outside only: through
 * the actions later events queue (sophia_ctx_actions_json) and through
 * export_state, whose text must not move when an event does not commit.
 * ph_run_fetched runs a processor's prefetch (SDK 1.1) first, against a
 * real cache (ph_cache_new: L1, and Redis and PostgreSQL when asked), and
 * waits on its loop for the reads as a stream does.
 * Header-only and static: each test is one executable (CMake globs
 * test_*.c), and this file is not one.
 */
#ifndef SOPHIA_PROC_HARNESS_H
#define SOPHIA_PROC_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>

#include "cache/cache.h"
#include "conf/config.h"
#include "event/loop.h"
#include "host/host.h"
#include "host/prefetch.h"
#include "lib/redis_url.h"
#include "lib/diag.h"
#include "plugin/plugin.h"


/* Each test uses some of these helpers, not all. */
#define PH_STATIC static __attribute__((unused))

PH_STATIC char *ph_dirs[] = {SOPHIA_TEST_PLUGIN_DIR};
/* The host runtime the processors are loaded with (PH_MAIN makes it): its
 * counters are what ph_counter reads, its timers are theirs. */
PH_STATIC sophia_host_rt *ph_rt;

/* A scalar option "key" = "value". */
PH_STATIC sophia_conf_opt ph_scalar(const char *key, const char *value)
{
    return (sophia_conf_opt){.key = (char *)key, .scalar = (char *)value,
                             .line = 5, .col = 9, .key_line = 5, .key_col = 5};
}

/* A list option "key" = [items...]. */
PH_STATIC sophia_conf_opt ph_list(const char *key, char **items, size_t n)
{
    return (sophia_conf_opt){.key = (char *)key, .items = items, .nitems = n,
                             .is_seq = 1, .line = 5, .col = 9, .key_line = 5,
                             .key_col = 5};
}

/* Loads the bundled processor `module` as instance "t"; fails the test
 * with the loader's diagnostics when it is refused. */
PH_STATIC sophia_instance *ph_load(const char *module, sophia_conf_opt *opts,
                                size_t nopts)
{
    sophia_conf_instance ci = {.name = "t", .plugin = (char *)module,
                               .opts = opts, .nopts = nopts, .line = 4,
                               .col = 3};
    sophia_conf c = {.file = "procs.yaml", .plugin_path = ph_dirs,
                     .nplugin_path = 1, .plugin_init_timeout = 10,
                     .instances = &ci, .ninstances = 1};
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_instance *inst = sophia_plugin_load(&c, &ci,
                                               sophia_host_rt_table(ph_rt), &d);
    if (!inst)
        fail_msg("%s refused: %s", module, d.count ? d.lines[0] : "?");
    sophia_diag_free(&d);
    return inst;
}

/* Drops members named "updated_us" (wall clock) anywhere in v, so two
 * runs of the same event compare equal. */
PH_STATIC void ph_strip_clock(json_t *v)
{
    size_t i;
    json_t *x;
    const char *k;
    void *tmp;
    if (json_is_array(v))
        json_array_foreach(v, i, x) ph_strip_clock(x);
    else if (json_is_object(v))
        json_object_foreach_safe(v, tmp, k, x) {
            if (!strcmp(k, "updated_us"))
                json_object_del(v, k);
            else
                ph_strip_clock(x);
        }
}

enum { PH_REFUSE = 0, PH_COMMIT = 1 };

/* One pass of `base`'s loop, at most 20 ms long. */
PH_STATIC void ph_loop_step(struct event_base *base)
{
    struct timeval tv = {0, 20000};
    event_base_loopexit(base, &tv);
    event_base_loop(base, 0);
}

typedef struct ph_fetch {
    int done, rc;
} ph_fetch;

PH_STATIC void ph_on_fetched(void *arg, int rc)
{
    ph_fetch *f = arg;
    f->done = 1;
    f->rc = rc;
}

/* inst's prefetch for `ev` into ctx, its reads answered on `base` (within
 * 10 s): 0, or why the stream would retry the event. */
PH_STATIC int ph_prefetch(sophia_instance *inst, const sophia_event *ev,
                          sophia_ctx *ctx, struct event_base *base)
{
    ph_fetch f = {0};
    int rc = sophia_prefetch_run(inst, ctx, ev, ph_on_fetched, &f);
    if (rc)
        return rc == 1 ? 0 : rc;
    int64_t until = sophia_now_mono_us() + 10 * 1000000LL;
    while (!f.done && sophia_now_mono_us() < until)
        ph_loop_step(base);
    if (!f.done)
        fail_msg("prefetch reads did not answer within 10 s");
    return f.rc;
}

/* ph_run, with the processor's prefetch run first on `base` when base is
 * not NULL; a failed prefetch is a RETRY (process() not called), as in
 * the stream. */
PH_STATIC sophia_verdict ph_run_on(sophia_instance *inst, const char *body,
                                   const char *id, int fate, char **actions,
                                   struct event_base *base)
{
    json_t *b = json_loads(body, JSON_DECODE_ANY, NULL);
    if (!b)
        fail_msg("test body is not JSON: %.80s", body);
    sophia_event ev = {.struct_size = sizeof(ev), .stream = "s", .id = id,
                       .source = "test", .body = (const sophia_json *)b,
                       .received_us = 1705746600LL * 1000000LL};
    sophia_ctx *ctx = sophia_ctx_new(inst, "s");
    assert_non_null(ctx);
    sophia_verdict v = SOPHIA_PROCESS_RETRY;
    if (!base || ph_prefetch(inst, &ev, ctx, base) == 0)
        v = sophia_ctx_process(ctx, &ev);
    json_t *a = (json_t *)sophia_ctx_actions_json(ctx);
    ph_strip_clock(a);
    if (actions)
        *actions = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(a);
    if (v == SOPHIA_PROCESS_OK && fate == PH_COMMIT)
        sophia_ctx_commit(ctx);
    sophia_ctx_free(ctx);
    json_decref(b);
    return v;
}

/* Runs `body` (JSON text; `id` the event's source id or NULL) through
 * process(). With PH_COMMIT an OK context commits, as the stream does once
 * the effects are durable; anything else is freed uncommitted (RETRY,
 * ERROR, or with PH_REFUSE an OK whose effects were refused). *actions
 * (may be NULL) receives the queued actions as sorted JSON text, wall
 * clock stripped; free it. No prefetch runs (a host without one). */
PH_STATIC sophia_verdict ph_run(sophia_instance *inst, const char *body,
                             const char *id, int fate, char **actions)
{
    return ph_run_on(inst, body, id, fate, actions, NULL);
}

/* ph_run as a stream runs it: the processor's prefetch reads its keys
 * through the cache in the host's environment, on `base`, first. */
PH_STATIC sophia_verdict ph_run_fetched(sophia_instance *inst,
                                        const char *body, int fate,
                                        char **actions,
                                        struct event_base *base)
{
    return ph_run_on(inst, body, NULL, fate, actions, base);
}

/* A real cache on `base`, set as the host's environment: L1, plus the
 * harness's Redis (database 11) when `redis` and its PostgreSQL when
 * `pg` (or `pg` itself when it is a URL: a server that is down). Waits
 * (10 s at most) until the tiers asked for are up, unless pg is a URL.
 * Free with ph_cache_free. */
PH_STATIC sophia_cache *ph_cache_new(struct event_base *base, int redis,
                                     const char *pg, sophia_conf **conf)
{
    const char *y = "cache: {l1: {max_entries: 1000, ttl: 60}}\n";
    sophia_diag d;
    sophia_diag_init(&d);
    *conf = sophia_conf_load_string("/tmp/ph.yaml", y, strlen(y), &d);
    if (!*conf || d.count)
        fail_msg("config: %s", d.count ? d.lines[0] : "?");
    sophia_diag_free(&d);
    free((*conf)->redis_url);
    free((*conf)->pg_url);
    (*conf)->redis_url = (*conf)->pg_url = NULL;
    const char *ru = getenv("SOPHIA_REDIS_URL"), *pu = getenv("SOPHIA_PG_URL");
    if ((redis && !ru) || (pg && !strcmp(pg, "harness") && !pu))
        fail_msg("SOPHIA_REDIS_URL / SOPHIA_PG_URL: the test harness sets them");
    if (redis) {
        sophia_redis_url u;
        char why[200], url[300];
        if (sophia_redis_url_parse(ru, &u, why, sizeof(why)) < 0)
            fail_msg("SOPHIA_REDIS_URL: %s", why);
        snprintf(url, sizeof(url), "redis://%s:%d/11", u.host, u.port);
        sophia_redis_url_clear(&u);
        (*conf)->redis_url = strdup(url);
    }
    int harness_pg = pg && !strcmp(pg, "harness");
    if (pg)
        (*conf)->pg_url = strdup(harness_pg ? pu : pg);
    sophia_cache *c = sophia_cache_new(*conf, base);
    assert_non_null(c);
    sophia_host_set_env(ph_rt, &(sophia_host_env){.cache = c});
    const char *e;
    int64_t until = sophia_now_mono_us() + 10 * 1000000LL;
    while ((redis && sophia_cache_l2_state(c, &e) != 1) ||
           (harness_pg && sophia_cache_l3_state(c, &e) != 1)) {
        if (sophia_now_mono_us() > until)
            fail_msg("cache tiers not up within 10 s");
        ph_loop_step(base);
    }
    return c;
}

PH_STATIC void ph_cache_free(sophia_cache *c, sophia_conf *conf)
{
    sophia_host_set_env(ph_rt, NULL);
    sophia_cache_free(c);
    sophia_conf_free(conf);
}

/* The instance's exported state (malloc'd text; the host would free()). */
PH_STATIC char *ph_export(sophia_instance *inst)
{
    char *s = inst->desc->processor->export_state(inst->state);
    assert_non_null(s);
    return s;
}

/* A new instance of the same module with the same options that imported
 * `from`'s exported state: what a reload does. */
PH_STATIC sophia_instance *ph_reload(sophia_instance *from, sophia_conf_opt *opts,
                                  size_t nopts)
{
    char *s = ph_export(from);
    sophia_instance *to = ph_load(from->module, opts, nopts);
    assert_int_equal(to->desc->processor->import_state(to->state, s), 0);
    free(s);
    return to;
}

/* Asserts that running `body` leaves the exported state as it was and
 * returns the verdict. */
PH_STATIC sophia_verdict ph_run_unchanged(sophia_instance *inst, const char *body,
                                       const char *id, int fate,
                                       char **actions)
{
    char *before = ph_export(inst);
    sophia_verdict v = ph_run(inst, body, id, fate, actions);
    char *after = ph_export(inst);
    assert_string_equal(before, after);
    free(before);
    free(after);
    return v;
}

typedef struct ph_counter_q {
    const char *name;
    double value;
} ph_counter_q;

PH_STATIC void ph_counter_visit(const char *inst, const char *name, double v,
                             void *arg)
{
    ph_counter_q *q = arg;
    if (!strcmp(inst, "t") && !strcmp(name, q->name))
        q->value = v;
}

/* Instance "t"'s counter `name` (host->counter_add), 0 when never added. */
PH_STATIC double ph_counter(const char *name)
{
    ph_counter_q q = {name, 0};
    sophia_host_counters_each(ph_rt, ph_counter_visit, &q);
    return q.value;
}

/* `body` delivered again after its effects were refused: it gives the
 * actions `first` held again, and this time it commits. */
PH_STATIC void ph_redelivered_commits(sophia_instance *inst, const char *body,
                                      const char *first)
{
    char *again;
    assert_int_equal(ph_run(inst, body, NULL, PH_COMMIT, &again),
                     SOPHIA_PROCESS_OK);
    assert_string_equal(first, again);
    free(again);
}

/* `body` delivered again after it committed: no actions, the state as it
 * was, and one more `duplicates`. */
PH_STATIC void ph_redelivered_is_duplicate(sophia_instance *inst,
                                           const char *body)
{
    char *dup;
    double dups = ph_counter("duplicates");
    assert_int_equal(ph_run_unchanged(inst, body, NULL, PH_COMMIT, &dup),
                     SOPHIA_PROCESS_OK);
    assert_string_equal(dup, "[]");
    assert_true(ph_counter("duplicates") == dups + 1);
    free(dup);
}

/* Line `n` (1-based) of tests/data/<file>, malloc'd, without its newline. */
PH_STATIC char *ph_data(const char *file, int n)
{
    char path[512], *line = NULL;
    size_t cap = 0;
    snprintf(path, sizeof(path), "%s/tests/data/%s", SOPHIA_TEST_SOURCE_DIR,
             file);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    for (int i = 0; i < n; i++)
        if (getline(&line, &cap, f) < 0)
            fail_msg("%s has no line %d", path, n);
    fclose(f);
    line[strcspn(line, "\n")] = '\0';
    return line;
}

/* Number of occurrences of `needle` in `hay`. */
PH_STATIC int ph_count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* `inst`'s module refuses an SDK 1.0 host (a table that ends before
 * `stage`): its init fails with SOPHIA_EABI instead of running without
 * a way to move its state with the verdict. */
PH_STATIC void ph_refuses_sdk_1_0(sophia_instance *inst)
{
    sophia_host h10 = *sophia_host_table();
    h10.struct_size = (uint32_t)offsetof(sophia_host, stage);
    h10.abi_minor = 0;
    void *state = NULL;
    assert_int_equal(inst->desc->init(&h10, NULL, NULL, &state), SOPHIA_EABI);
    assert_null(state);
}

/* main() of a test_proc_* executable: the loader's and host's setup and
 * teardown around cmocka. */
#define PH_MAIN(tests)                                                        \
    int main(void)                                                            \
    {                                                                         \
        if (sophia_plugin_system_init() || !(ph_rt = sophia_host_rt_new()))  \
            return 1;                                                         \
        int rc_ = cmocka_run_group_tests(tests, NULL, NULL);                  \
        sophia_host_rt_free(ph_rt);                                           \
        sophia_plugin_system_shutdown();                                      \
        return rc_;                                                           \
    }

#endif
