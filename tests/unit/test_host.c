/*
 * test_host - the host table as plugins see it: JSON access by path,
 * building values, update topic routing, and actions queued in a context
 * being discarded when the callback fails; an apply reports exactly once
 * (the asynchronous case, effects waiting for PostgreSQL, is test_stream's).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "lib/dict.h"
#include "host/host.h"
#include "plugin/plugin.h"
#include "ws/ws.h"


static void test_table_header(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    assert_int_equal(h->struct_size, sizeof(sophia_host));
    assert_int_equal(h->abi_major, SOPHIA_SDK_VERSION_MAJOR);
    assert_int_equal(h->abi_minor, SOPHIA_SDK_VERSION_MINOR);
    assert_string_equal(h->strerror(SOPHIA_EBUSY), "queue full");
    assert_string_equal(h->strerror(0), "ok");
}

static void test_json_paths(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    json_t *doc = json_loads("{\"a\":{\"b\":[10,{\"c\":\"x\"}]},\"n\":2.5,\"t\":true}", 0, NULL);
    const sophia_json *root = (const sophia_json *)doc;
    assert_string_equal(h->json_string(h->json_get(root, "a.b.1.c")), "x");
    assert_true(h->json_number(h->json_get(root, "a.b.0"), -1) == 10.0);
    assert_true(h->json_number(h->json_get(root, "n"), -1) == 2.5);
    assert_int_equal(h->json_bool(h->json_get(root, "t"), 0), 1);
    assert_null(h->json_get(root, "a.b.9"));
    assert_null(h->json_get(root, "a.b.x"));
    assert_null(h->json_get(root, "n.deeper"));
    assert_int_equal(h->json_type(h->json_get(root, "missing")), SOPHIA_JSON_MISSING);
    assert_int_equal(h->json_type(h->json_get(root, "a")), SOPHIA_JSON_OBJECT);
    assert_int_equal(h->json_size(h->json_get(root, "a.b")), 2);
    const sophia_json *v;
    assert_string_equal(h->json_key_at(root, 1, &v), "n");
    assert_null(h->json_key_at(root, 3, &v));
    json_decref(doc);
}

static void test_json_build(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    sophia_json *o = h->json_object();
    assert_int_equal(h->json_set(o, "s", h->json_str("v")), 0);
    assert_int_equal(h->json_set(o, "i", h->json_int(7)), 0);
    sophia_json *a = h->json_array();
    h->json_append(a, h->json_bool_new(0));
    h->json_set(o, "a", a);
    char *s = h->json_dump(o);
    assert_string_equal(s, "{\"s\":\"v\",\"i\":7,\"a\":[false]}");
    h->free(s);
    h->json_free(o);
}

/* SDK 1.1: a map keyed by ids with dots in them can be read, changed and
 * walked, which json_get (a dotted path) and json_key_at (O(i)) could not. */
static void test_json_exact_keys(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    assert_true(SOPHIA_HOST_HAS(h, json_iter));
    sophia_json *o = h->json_object();
    assert_int_equal(h->json_set(o, "acme.io", h->json_int(3)), 0);
    assert_int_equal(h->json_set(o, "acme", h->json_object()), 0);
    assert_int_equal(h->json_set(o, "b", h->json_int(5)), 0);
    /* json_get reads "acme.io" as a path: acme -> io, absent. */
    assert_null(h->json_get(o, "acme.io"));
    assert_true(h->json_number(h->json_get_key(o, "acme.io"), -1) == 3.0);
    assert_null(h->json_get_key(o, "nope"));
    assert_null(h->json_get_key(h->json_get_key(o, "b"), "x")); /* no object */

    const char *want[] = {"acme.io", "acme", "b"};
    const char *k = NULL;
    const sophia_json *v = NULL;
    size_t n = 0;
    for (void *it = h->json_iter(o, NULL, &k, &v); it;
         it = h->json_iter(o, it, &k, &v)) {
        assert_true(n < 3);
        assert_string_equal(k, want[n]);
        assert_ptr_equal(v, h->json_get_key(o, want[n]));
        n++;
    }
    assert_int_equal(n, 3);
    assert_null(h->json_iter(h->json_get_key(o, "b"), NULL, &k, &v));

    assert_int_equal(h->json_del(o, "acme.io"), 0);
    assert_int_equal(h->json_del(o, "acme.io"), SOPHIA_ENOENT);
    assert_int_equal(h->json_del((sophia_json *)h->json_get_key(o, "b"), "x"),
                     SOPHIA_EINVAL);
    assert_int_equal(h->json_size(o), 2);
    assert_null(h->json_get_key(o, "acme.io"));
    h->json_free(o);
}

static void test_update_topics(void **unused)
{
    (void)unused;
    const char *t[6];
    char buf[256];
    size_t n = sophia_update_topics("metric", "exec", "metrics", NULL, NULL, t, buf, sizeof(buf));
    assert_int_equal(n, 3);
    assert_string_equal(t[0], "updates:metric");
    assert_string_equal(t[1], "dashboard:exec");
    assert_string_equal(t[2], "stream:metrics");
    n = sophia_update_topics("alert", NULL, NULL, "warning", "custom", t, buf, sizeof(buf));
    assert_int_equal(n, 4);
    assert_string_equal(t[1], "alerts");
    assert_string_equal(t[2], "alerts:warning");
    assert_string_equal(t[3], "custom");
    /* Too small a buffer stops early instead of overflowing. */
    n = sophia_update_topics("metric", "a-very-long-dashboard-name", NULL, NULL, NULL, t, buf, 20);
    assert_int_equal(n, 1);
}

/* One update applied and committed as a stream does, from instance inst
 * on `stream`: as text, or as a value when json is NULL. */
static void publish_one(sophia_instance *inst, const char *stream,
                        sophia_update_type type, const char *topic,
                        const char *dash, const char *text)
{
    const sophia_host *h = inst->host;
    sophia_ctx *ctx = sophia_ctx_new(inst, stream);
    if (text)
        assert_int_equal(h->publish_text(ctx, type, topic, dash, text,
                                         strlen(text)), 0);
    else
        assert_int_equal(h->publish(ctx, type, topic, dash, h->json_object()), 0);
    sophia_ctx_apply(ctx, NULL, NULL);
    sophia_ctx_commit(ctx);
    sophia_ctx_free(ctx);
}

/* The runtime keeps the last update's topics while type, dashboard and
 * stream stay the same: every update still reaches exactly its own
 * topics when any of them changes, also to a name of the same length
 * (a dashboard's copy may land where the last one's was). A topic's seq
 * counts the publishes it took. */
static void test_publish_topics_follow_updates(void **unused)
{
    (void)unused;
    sophia_host_rt *rt = sophia_host_rt_new();
    sophia_ws_router *ws = sophia_ws_router_new(NULL, NULL, 0);
    sophia_host_set_env(rt, &(sophia_host_env){.ws = ws});
    sophia_instance inst = {.name = "t", .host = sophia_host_rt_table(rt)};
    const char *m = "{\"metric\":\"x\",\"value\":1}";
    publish_one(&inst, "s1", SOPHIA_UPDATE_METRIC, NULL, "d1", m);
    publish_one(&inst, "s1", SOPHIA_UPDATE_METRIC, NULL, "d1", m);
    publish_one(&inst, "s1", SOPHIA_UPDATE_METRIC, NULL, "d2", m);
    publish_one(&inst, "s2", SOPHIA_UPDATE_METRIC, NULL, "d2", m);
    publish_one(&inst, "s2", SOPHIA_UPDATE_DATA, NULL, "d2", "{}");
    publish_one(&inst, "s2", SOPHIA_UPDATE_DATA, NULL, NULL, "{}");
    publish_one(&inst, NULL, SOPHIA_UPDATE_DATA, NULL, NULL, "{}");
    publish_one(&inst, NULL, SOPHIA_UPDATE_DATA, NULL, "d1", NULL);
    publish_one(&inst, "s1", SOPHIA_UPDATE_DATA, "extra", "d1", NULL);
    publish_one(&inst, "s1", SOPHIA_UPDATE_METRIC, NULL, "d1", m);
    publish_one(&inst, "s1", SOPHIA_UPDATE_METRIC, NULL, "", m);
    static const struct {
        const char *topic;
        uint64_t seq;
    } want[] = {
        {"updates:metric", 6}, {"updates:data", 5}, {"dashboard:d1", 5},
        {"dashboard:d2", 3},   {"dashboard:", 1},   {"stream:s1", 6},
        {"stream:s2", 3},      {"extra", 1},        {"updates:alert", 0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (sophia_ws_topic_seq(ws, want[i].topic) != want[i].seq)
            fail_msg("%s: seq %llu, want %llu", want[i].topic,
                     (unsigned long long)sophia_ws_topic_seq(ws, want[i].topic),
                     (unsigned long long)want[i].seq);
    sophia_host_set_env(rt, NULL);
    sophia_ws_router_free(ws);
    sophia_host_rt_free(rt);
}

static void test_actions_discarded_unless_applied(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    sophia_ctx *ctx = sophia_ctx_new(NULL, "s");
    assert_int_equal(h->publish(ctx, SOPHIA_UPDATE_METRIC, NULL, "d", h->json_object()), 0);
    const char *tags[] = {"t1", NULL};
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 10, tags), 0);
    assert_int_equal(h->alert(ctx, "system", "warning", "m", NULL), 0);
    assert_int_equal(h->publish(ctx, (sophia_update_type)99, NULL, NULL, h->json_object()),
                     SOPHIA_EINVAL);
    assert_int_equal(h->cache_put(ctx, NULL, h->json_int(1), 0, NULL), SOPHIA_EINVAL);
    /* A plugin's key, tags and ttl have a PUT's rules, told at the call
     * (the apply does not check them again). */
    assert_int_equal(h->cache_put(ctx, "a\r\nb", h->json_int(1), 0, NULL), SOPHIA_EINVAL);
    assert_int_equal(h->cache_put(ctx, "bad\xff", h->json_int(1), 0, NULL), SOPHIA_EINVAL);
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 1e16, NULL), SOPHIA_EINVAL);
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), NAN, NULL), SOPHIA_EINVAL);
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 315360000, NULL), 0);
    const char *bad_tags[][3] = {{"", NULL}, {"a", "b\nc", NULL}, {"x\x1fy", NULL}};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 0, bad_tags[i]),
                         SOPHIA_EINVAL);
    const char *many[18] = {0};
    for (size_t i = 0; i < 17; i++)
        many[i] = "t";
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 0, many), SOPHIA_EINVAL);
    many[16] = NULL; /* 16: as many as L1 keeps */
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 0, many), 0);
    /* Freed without apply: nothing leaks (ASan checks), nothing applied. */
    sophia_ctx_free(ctx);
}

/* SDK 1.1 stage: a change is applied on commit, in order, or discarded. */
static void add_change(void *state, void *change)
{
    int *log = state;
    log[log[0]++ + 1] = *(int *)change;
    free(change);
}

static void drop_change(void *change)
{
    free(change);
}

static int *change_of(int v)
{
    int *c = malloc(sizeof(*c));
    *c = v;
    return c;
}

static void test_stage(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    assert_true(SOPHIA_HOST_HAS(h, stage));
    int log[8] = {0};
    struct sophia_self inst = {.name = "inst", .state = log};

    sophia_ctx *ctx = sophia_ctx_new(&inst, "s");
    assert_false(sophia_ctx_has_staged(ctx));
    assert_int_equal(h->stage(ctx, add_change, drop_change, change_of(1)), 0);
    assert_int_equal(h->stage(ctx, add_change, drop_change, change_of(2)), 0);
    assert_true(sophia_ctx_has_staged(ctx));
    assert_int_equal(log[0], 0); /* nothing moves before the commit */
    sophia_ctx_commit(ctx);
    assert_int_equal(log[0], 2);
    assert_int_equal(log[1], 1);
    assert_int_equal(log[2], 2);
    sophia_ctx_free(ctx); /* committed changes are not discarded again */

    ctx = sophia_ctx_new(&inst, "s");
    assert_int_equal(h->stage(ctx, add_change, drop_change, change_of(3)), 0);
    sophia_ctx_free(ctx); /* never committed: discarded (ASan: no leak) */
    assert_int_equal(log[0], 2);

    int *c = change_of(4); /* refused: discard runs, so nothing leaks */
    assert_int_equal(h->stage(NULL, add_change, drop_change, c), SOPHIA_EINVAL);
}

/* Counters belong to the runtime an instance was loaded with: another
 * runtime does not see them, and the template's instances count nothing. */
static void test_counters(void **unused)
{
    (void)unused;
    sophia_host_rt *rt = sophia_host_rt_new(), *other = sophia_host_rt_new();
    const sophia_host *h = sophia_host_rt_table(rt);
    struct sophia_self self = {.name = "inst", .host = h};
    assert_ptr_equal(sophia_host_rt_of(&self), rt);
    h->counter_add(&self, "points", 2);
    h->counter_add(&self, "points", 3);
    struct sophia_self bare = {.name = "inst", .host = sophia_host_table()};
    assert_null(sophia_host_rt_of(&bare));
    h->counter_add(&bare, "points", 100); /* no runtime: dropped */
    double got = 0, elsewhere = 0;
    void fn(const char *i, const char *n, double v, void *arg);
    void fn4(const char *i, const char *n, double v, void *arg);
    sophia_host_counters_each(rt, fn, &got);
    assert_true(got == 5.0);
    sophia_host_counters_each(other, fn, &elsewhere);
    assert_true(elsewhere == 0.0);
    /* Names that are prefixes of each other, and an instance whose name
     * runs into the counter's, are counted apart (the recent slots are
     * matched on instance and name). */
    struct sophia_self ins = {.name = "ins", .host = h};
    h->counter_add(&self, "point", 7);
    h->counter_add(&self, "points2", 11);
    h->counter_add(&ins, "tpoints", 13);
    h->counter_add(&self, "points", 1);
    h->counter_add(&ins, "points", 17);
    double four[4] = {0};
    sophia_host_counters_each(rt, fn4, four);
    assert_true(four[0] == 6.0 && four[1] == 7.0 && four[2] == 11.0 &&
                four[3] == 13.0 + 17.0);
    sophia_host_rt_free(other);
    sophia_host_rt_free(rt);
}

/* inst's points, point and points2, and every count of ins, into arg[4]. */
void fn4(const char *i, const char *n, double v, void *arg)
{
    double *out = arg;
    if (strcmp(i, "inst") == 0)
        out[strcmp(n, "points") == 0 ? 0 : strcmp(n, "point") == 0 ? 1 : 2] += v;
    else if (strcmp(i, "ins") == 0)
        out[3] += v;
}

void fn(const char *i, const char *n, double v, void *arg)
{
    if (strcmp(i, "inst") == 0 && strcmp(n, "points") == 0)
        *(double *)arg = v;
}

static void test_dict(void **unused)
{
    (void)unused;
    sophia_dict *d = sophia_dict_new();
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_null(sophia_dict_set(d, key, (void *)(long)(i + 1)));
    }
    assert_int_equal(sophia_dict_size(d), 1000);
    assert_int_equal((long)sophia_dict_get(d, "k500"), 501);
    assert_int_equal((long)sophia_dict_set(d, "k500", (void *)7L), 501);
    assert_int_equal((long)sophia_dict_del(d, "k500"), 7);
    assert_null(sophia_dict_get(d, "k500"));
    assert_int_equal(sophia_dict_size(d), 999);
    sophia_dict_free(d, NULL);
}

static void on_applied(void *arg, int rc)
{
    int *r = arg;
    r[0]++;
    r[1] = rc;
}

static void test_apply_reports_once(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    /* no instance, so no runtime: no cache, router or memory to wait for */
    sophia_ctx *ctx = sophia_ctx_new(NULL, "s");
    assert_int_equal(h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, NULL, h->json_object()), 0);
    assert_int_equal(h->cache_put(ctx, "k", h->json_int(1), 0, NULL), 0);
    assert_int_equal(h->cache_invalidate(ctx, "k"), 0);
    int r[2] = {0, -1};
    sophia_ctx_apply(ctx, on_applied, r);
    assert_int_equal(r[0], 1); /* once, before returning */
    assert_int_equal(r[1], 0);
    sophia_ctx_free(ctx);
    assert_int_equal(r[0], 1);

    ctx = sophia_ctx_new(NULL, "s"); /* no actions at all */
    sophia_ctx_apply(ctx, NULL, NULL); /* nobody waits: fine too */
    sophia_ctx_apply(ctx, on_applied, r);
    assert_int_equal(r[0], 2);
    sophia_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_header),
        cmocka_unit_test(test_json_paths),
        cmocka_unit_test(test_json_build),
        cmocka_unit_test(test_json_exact_keys),
        cmocka_unit_test(test_update_topics),
        cmocka_unit_test(test_publish_topics_follow_updates),
        cmocka_unit_test(test_actions_discarded_unless_applied),
        cmocka_unit_test(test_stage),
        cmocka_unit_test(test_apply_reports_once),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_dict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
