/*
 * test_sdk - the SDK's binary contract, seen from real modules through the
 * real loader (plugin.c) and the real host table (host.c):
 *
 *   - ABI rules: a descriptor from an older minor (abi_1_0: shorter than
 *     this SDK's sophia_plugin) loads and runs; a newer minor or another
 *     major is refused naming both versions; a truncated descriptor is
 *     refused for its struct_size.
 *   - The host table: its header matches sdk.h and every slot up to its
 *     struct_size is filled (an appended member without an implementation
 *     would hand plugins a NULL to call).
 *   - sophia_ctx_actions_json, which sophia-plugin-test prints: every
 *     action kind, in order, with the topics the core would publish to.
 */
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
#include <math.h>
#include <stdbool.h>
#include <unistd.h>

#include "cache/cache.h"
#include "conf/config.h"
#include "lib/diag.h"
#include "lib/redis_url.h"
#include "host/host.h"
#include "plugin/plugin.h"


#include "../common/loop_wait.h"

#define TEST_DIR SOPHIA_TEST_PLUGIN_DIR "/../test-plugins"

static char *plugin_dirs[] = {TEST_DIR};
/* The host runtime the tests' plugins are loaded with (made in main). */
static sophia_host_rt *rt;

/* Loads `module` as instance "t" (YAML position 4:3); NULL on refusal,
 * with the diagnostics in *d. */
static sophia_instance *load(const char *module, sophia_diag *d)
{
    sophia_conf_instance ci = {.name = "t", .plugin = (char *)module,
                               .line = 4, .col = 3};
    sophia_conf c = {.file = "sdk.yaml", .plugin_path = plugin_dirs,
                     .nplugin_path = 1, .instances = &ci, .ninstances = 1};
    sophia_diag_init(d);
    return sophia_plugin_load(&c, &ci, sophia_host_rt_table(rt), d);
}

/* The actions `inst` queues for `body` (JSON text), as sorted JSON text. */
static char *run(sophia_instance *inst, const char *body,
                 sophia_verdict *verdict)
{
    json_t *b = json_loads(body, 0, NULL);
    assert_non_null(b);
    sophia_event ev = {.struct_size = sizeof(ev), .stream = "s",
                       .source = "test", .body = (const sophia_json *)b};
    sophia_ctx *ctx = sophia_ctx_new(inst, "s");
    *verdict = inst->desc->processor->process(inst->state, &ev, ctx);
    json_t *actions = (json_t *)sophia_ctx_actions_json(ctx);
    char *s = json_dumps(actions, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(actions);
    sophia_ctx_free(ctx);
    json_decref(b);
    return s;
}

static void expect_refused(const char *module, const char *want1,
                           const char *want2)
{
    sophia_diag d;
    assert_null(load(module, &d));
    assert_int_equal(d.count, 1);
    if (strncmp(d.lines[0], "sdk.yaml:4:3: ", 14) || !strstr(d.lines[0], want1) ||
        !strstr(d.lines[0], want2))
        fail_msg("unexpected diagnostic: %s", d.lines[0]);
    sophia_diag_free(&d);
}

/* ------------------------------------------------------------ ABI rules */

static void test_older_minor_descriptor_loads(void **unused)
{
    (void)unused;
    sophia_diag d;
    sophia_instance *inst = load("abi_1_0", &d);
    if (!inst)
        fail_msg("refused: %s", d.count ? d.lines[0] : "?");
    assert_int_equal(d.count, 0);
    assert_true(inst->desc->struct_size < sizeof(sophia_plugin));
    assert_int_equal(inst->desc->abi_minor, 0);

    sophia_verdict v;
    char *s = run(inst, "{\"x\":1}", &v);
    assert_int_equal(v, SOPHIA_PROCESS_OK);
    assert_string_equal(s, "[{\"action\":\"publish\",\"data\":{\"x\":1},"
                           "\"topics\":[\"updates:data\",\"stream:s\","
                           "\"abi_1_0\"],\"type\":\"data\"}]");
    free(s);
    sophia_plugin_unload(inst);
    sophia_diag_free(&d);
}

static void test_newer_minor_refused(void **unused)
{
    (void)unused;
    char need[32], have[32];
    snprintf(need, sizeof(need), "needs SDK %d.%d", SOPHIA_SDK_VERSION_MAJOR,
             SOPHIA_SDK_VERSION_MINOR + 1);
    snprintf(have, sizeof(have), "provides SDK %d.%d",
             SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
    expect_refused("abi_minor_newer", need, have);
}

static void test_other_major_refused(void **unused)
{
    (void)unused;
    char have[32];
    snprintf(have, sizeof(have), "provides SDK %d.%d",
             SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
    expect_refused("abi_major2", "built for SDK 2.0", have);
}

/* A list's default is always empty: one in the table is refused, not
 * silently ignored. */
static void test_list_default_refused(void **unused)
{
    (void)unused;
    expect_refused("list_def", "list option 'tags' has a default ('[a, b]')",
                   "def must be NULL");
}

static void test_truncated_descriptor_refused(void **unused)
{
    (void)unused;
    expect_refused("small_struct", "descriptor", "struct size too small");
}

/* ---------------------------------------------------------- host table */

static void test_host_table_is_complete(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    assert_int_equal(h->struct_size, sizeof(sophia_host));
    assert_int_equal(h->abi_major, SOPHIA_SDK_VERSION_MAJOR);
    assert_int_equal(h->abi_minor, SOPHIA_SDK_VERSION_MINOR);
    /* After the header, the table is function pointers only. */
    size_t first = offsetof(sophia_host, log);
    assert_int_equal((h->struct_size - first) % sizeof(void (*)(void)), 0);
    for (size_t off = first; off < h->struct_size;
         off += sizeof(void (*)(void))) {
        void (*fn)(void);
        memcpy(&fn, (const char *)h + off, sizeof(fn));
        if (!fn)
            fail_msg("sophia_host slot at offset %zu is NULL", off);
    }
}

/* ------------------------------------------------ errors, descriptor */

/* SOPHIA_ERRNO_LAST_ is one below the lowest code, the codes run from -1
 * down without a gap, and strerror names each one and nothing past it. */
static void test_errno_last(void **unused)
{
    (void)unused;
    static const int codes[] = {
#define XX(name, val, str) SOPHIA_##name,
        SOPHIA_ERRNO_MAP(XX)
#undef XX
    };
    size_t n = sizeof(codes) / sizeof(codes[0]);
    const sophia_host *h = sophia_host_table();
    assert_int_equal(SOPHIA_ERRNO_LAST_, -(int)n - 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(codes[i], -(int)i - 1);
        assert_true(codes[i] > SOPHIA_ERRNO_LAST_);
        assert_string_not_equal(h->strerror(codes[i]), "unknown error");
    }
    assert_string_equal(h->strerror(SOPHIA_ERRNO_LAST_), "unknown error");
    assert_true(SOPHIA_ERRNO_LAST_ < SOPHIA_EPARSE);
}

/* The descriptor grows into its reserved slots (sdk.h), so its size is
 * the 1.0 members plus eight pointers, whatever the minor. */
static void test_descriptor_size_fixed(void **unused)
{
    (void)unused;
    size_t v1_0 = offsetof(sophia_plugin, consolidator) + sizeof(void *);
    assert_int_equal(sizeof(sophia_plugin), v1_0 + 8 * sizeof(void *));
}

/* ---------------------------------------------------- actions as JSON */

static void test_actions_json_every_kind(void **unused)
{
    (void)unused;
    sophia_diag d;
    sophia_instance *inst = load("actions", &d);
    assert_non_null(inst);
    sophia_verdict v;
    char *s = run(inst,
                  "{\"ops\":["
                  "{\"op\":\"put\",\"key\":\"k\",\"value\":{\"a\":1},"
                  "\"tags\":[\"t1\",\"t2\"],\"ttl\":5},"
                  "{\"op\":\"del\",\"key\":\"k2\"},"
                  "{\"op\":\"deltag\",\"tag\":\"t1\"},"
                  "{\"op\":\"publish\",\"type\":\"metric\",\"dashboard\":"
                  "\"exec\",\"topic\":\"extra\",\"data\":{\"v\":2}},"
                  "{\"op\":\"alert\",\"alert_type\":\"system\",\"severity\":"
                  "\"warning\",\"message\":\"m\"}]}",
                  &v);
    assert_int_equal(v, SOPHIA_PROCESS_OK);
    assert_string_equal(
        s,
        "[{\"action\":\"cache_put\",\"key\":\"k\",\"tags\":[\"t1\",\"t2\"],"
        "\"ttl\":5.0,\"value\":{\"a\":1}},"
        "{\"action\":\"cache_invalidate\",\"key\":\"k2\"},"
        "{\"action\":\"cache_invalidate_tag\",\"tag\":\"t1\"},"
        "{\"action\":\"publish\",\"dashboard_id\":\"exec\",\"data\":"
        "{\"v\":2},\"topics\":[\"updates:metric\",\"dashboard:exec\","
        "\"stream:s\",\"extra\"],\"type\":\"metric\"},"
        "{\"action\":\"alert\",\"data\":{\"alert_type\":\"system\","
        "\"message\":\"m\",\"severity\":\"warning\"},\"topics\":"
        "[\"updates:alert\",\"stream:s\",\"alerts\",\"alerts:warning\"],"
        "\"type\":\"alert\"}]");
    free(s);

    /* alert_ex (1.1): a topic, a dashboard, and a resolve that names the
     * alert it ends; the same SPEC §5 alert update with a state. */
    s = run(inst,
            "{\"ops\":["
            "{\"op\":\"alert_ex\",\"alert_type\":\"urgent\",\"severity\":"
            "\"critical\",\"message\":\"m\",\"alert_id\":\"org:a.b\","
            "\"topic\":\"tickets\",\"dashboard\":\"ops\",\"data\":{\"n\":5}},"
            "{\"op\":\"alert_ex\",\"severity\":\"critical\",\"alert_id\":"
            "\"org:a.b\",\"resolve\":true}]}",
            &v);
    assert_int_equal(v, SOPHIA_PROCESS_OK);
    assert_string_equal(
        s,
        "[{\"action\":\"alert\",\"dashboard_id\":\"ops\",\"data\":"
        "{\"alert_id\":\"org:a.b\",\"alert_type\":\"urgent\",\"message\":"
        "\"m\",\"n\":5,\"severity\":\"critical\",\"state\":\"firing\"},"
        "\"topics\":[\"updates:alert\",\"dashboard:ops\",\"stream:s\","
        "\"alerts\",\"alerts:critical\",\"tickets\"],\"type\":\"alert\"},"
        "{\"action\":\"alert\",\"data\":{\"alert_id\":\"org:a.b\","
        "\"alert_type\":\"system\",\"message\":\"\",\"severity\":"
        "\"critical\",\"state\":\"resolved\"},\"topics\":[\"updates:alert\","
        "\"stream:s\",\"alerts\",\"alerts:critical\"],\"type\":\"alert\"}]");
    free(s);

    /* A verdict other than OK: the actions are still listed (the caller
     * decides to discard them), the verdict says so. */
    s = run(inst, "{\"op\":\"retry\"}", &v);
    assert_int_equal(v, SOPHIA_PROCESS_RETRY);
    assert_non_null(strstr(s, "\"discarded\""));
    free(s);
    sophia_plugin_unload(inst);
    sophia_diag_free(&d);
}

/* ------------------------------------------------------ timers (1.1) */

typedef struct counter_q {
    const char *inst, *name;
    double v;
} counter_q;

static void visit(const char *i, const char *n, double v, void *arg)
{
    counter_q *q = arg;
    if (!strcmp(i, q->inst) && !strcmp(n, q->name))
        q->v = v;
}

/* A plugin counter's value, or -1 when it was never added to. */
static double counter_of(const char *inst, const char *name)
{
    counter_q q = {inst, name, -1};
    sophia_host_counters_each(rt, visit, &q);
    return q.v;
}

static void spin(struct event_base *base, int ms)
{
    struct timeval tv = {0, ms * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* One event through process() and, on OK, applied and committed as the
 * stream does. */
static void feed(sophia_instance *inst, const char *body)
{
    json_t *b = json_loads(body, 0, NULL);
    sophia_event ev = {.struct_size = sizeof(ev), .stream = "s",
                       .source = "test", .body = (const sophia_json *)b};
    sophia_ctx *ctx = sophia_ctx_new(inst, "s");
    if (inst->desc->processor->process(inst->state, &ev, ctx) ==
        SOPHIA_PROCESS_OK) {
        sophia_ctx_apply(ctx, NULL, NULL);
        sophia_ctx_commit(ctx);
    }
    sophia_ctx_free(ctx);
    json_decref(b);
}

/* A window closes on its timer, with no event after it; once the
 * instance is unloaded its timer is gone (a run after that would be a
 * use after free the sanitized build reports). */
static void test_timer_closes_window(void **unused)
{
    (void)unused;
    sophia_host_set_env(rt, NULL); /* no ws, cache or memory: applies nothing */
    struct event_base *base = event_base_new();
    sophia_host_timers_bind(rt, base);
    sophia_conf_opt o = {.key = "window_s", .scalar = "0.02", .line = 5,
                         .col = 5};
    sophia_conf_instance ci = {.name = "win", .plugin = "window",
                               .opts = &o, .nopts = 1, .line = 4, .col = 3};
    sophia_conf c = {.file = "sdk.yaml", .plugin_path = plugin_dirs,
                     .nplugin_path = 1, .instances = &ci, .ninstances = 1};
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_instance *inst = sophia_plugin_load(&c, &ci,
                                               sophia_host_rt_table(rt), &d);
    if (!inst)
        fail_msg("refused: %s", d.count ? d.lines[0] : "?");
    assert_int_equal(sophia_host_timers_count(rt, inst), 1);
    feed(inst, "{\"v\":2}");
    feed(inst, "{\"v\":3}");
    assert_true(counter_of("win", "windows_closed") <= 0);
    spin(base, 120);
    /* Closed once: the window was empty at every later tick. */
    assert_true(counter_of("win", "windows_closed") == 1);
    feed(inst, "{\"v\":1}");
    spin(base, 120);
    assert_true(counter_of("win", "windows_closed") == 2);
    feed(inst, "{\"v\":1}");
    sophia_plugin_unload(inst);
    assert_int_equal(sophia_host_timers_count(rt, NULL), 0);
    spin(base, 60);
    assert_true(counter_of("win", "windows_closed") == 2);
    sophia_host_timers_bind(rt, NULL);
    event_base_free(base);
    sophia_diag_free(&d);
}

static int fired;

static void count_discard(void *change)
{
    (*(int *)change)--;
}

static void count_apply(void *state, void *change)
{
    (void)state;
    (*(int *)change)++;
}

/* Stages +1 (applied) or -1 (discarded) on the int at arg, and fails
 * when that int says so. */
static int tick(void *arg, sophia_ctx *ctx)
{
    fired++;
    const sophia_host *h = sophia_host_table();
    int *box = arg;
    h->stage(ctx, count_apply, count_discard, box);
    return box[1];
}

static void test_timer_rules(void **unused)
{
    (void)unused;
    sophia_host_set_env(rt, NULL);
    const sophia_host *h = sophia_host_rt_table(rt);
    assert_true(SOPHIA_HOST_HAS(h, timer_del));
    struct sophia_self a = {.name = "a", .host = h}, b = {.name = "b", .host = h};
    int box[2] = {0, 0};
    /* An instance of the template has no runtime, so no loop to run on. */
    struct sophia_self bare = {.name = "bare", .host = sophia_host_table()};
    assert_int_equal(h->timer_add(&bare, 1, 0, tick, box), SOPHIA_EUNAVAIL);
    assert_int_equal(h->timer_add(&a, -1, 0, tick, box), SOPHIA_EINVAL);
    assert_int_equal(h->timer_add(&a, NAN, 0, tick, box), SOPHIA_EINVAL);
    assert_int_equal(h->timer_add(&a, 1, 4e8, tick, box), SOPHIA_EINVAL);
    assert_int_equal(h->timer_add(&a, 1, 0.0001, tick, box), SOPHIA_EINVAL);
    assert_int_equal(h->timer_add(&a, 1, 0, NULL, box), SOPHIA_EINVAL);
    assert_int_equal(h->timer_add(NULL, 1, 0, tick, box), SOPHIA_EINVAL);

    /* Added before the loop exists: armed when it is bound. */
    int64_t once = h->timer_add(&a, 0.01, 0, tick, box);
    int64_t never = h->timer_add(&a, 0.01, 0, tick, box);
    assert_true(once > 0 && never > once);
    assert_int_equal(h->timer_del(&b, never), SOPHIA_ENOENT); /* not b's */
    assert_int_equal(h->timer_del(&a, never), 0);
    assert_int_equal(h->timer_del(&a, never), SOPHIA_ENOENT);
    struct event_base *base = event_base_new();
    sophia_host_timers_bind(rt, base);
    spin(base, 60);
    assert_int_equal(fired, 1);  /* the one-shot ran once */
    assert_int_equal(box[0], 1); /* its staged change applied */
    assert_int_equal(h->timer_del(&a, once), SOPHIA_ENOENT); /* it is gone */
    assert_int_equal(sophia_host_timers_count(rt, &a), 0);

    /* A failing callback: its staged change is discarded. */
    box[1] = -1;
    assert_true(h->timer_add(&a, 0.01, 0, tick, box) > 0);
    spin(base, 60);
    assert_int_equal(fired, 2);
    assert_int_equal(box[0], 0);

    /* A repeating one runs until released with its instance. */
    box[1] = 0;
    assert_true(h->timer_add(&b, 0.005, 0.005, tick, box) > 0);
    spin(base, 80);
    assert_true(fired >= 4);
    sophia_host_release(&b);
    int was = fired;
    spin(base, 40);
    assert_int_equal(fired, was);
    sophia_host_timers_bind(rt, NULL);
    event_base_free(base);
}

/* ------------------------------------------- owned async reads (1.1) */

static const char *env_url(const char *name)
{
    const char *u = getenv(name);
    if (!u || !*u)
        fail_msg("%s is not set: the test harness exports it", name);
    return u;
}

typedef struct answer {
    int calls, rc;
} answer;

static void on_answer(void *arg, int rc, const sophia_json *value)
{
    (void)value;
    answer *a = arg;
    a->calls++;
    a->rc = rc;
}

static bool no_callbacks(void *arg)
{
    (void)arg;
    return sophia_host_callbacks_pending(rt) == 0;
}

static bool tiers_up(void *arg)
{
    const char *e;
    return sophia_cache_l2_state(arg, &e) == 1 &&
           sophia_cache_l3_state(arg, &e) == 1;
}

/* `yaml` loaded, pointed at the harness's Redis (database 9, as
 * test_cache) and PostgreSQL. */
static sophia_conf *cache_conf(const char *yaml)
{
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *conf = sophia_conf_load_string("/tmp/t.yaml", yaml,
                                                strlen(yaml), &d);
    if (!conf || d.count)
        fail_msg("config: %s", d.count ? d.lines[0] : "?");
    sophia_diag_free(&d);
    sophia_redis_url u;
    char why[200], url[300];
    if (sophia_redis_url_parse(env_url("SOPHIA_REDIS_URL"), &u, why,
                               sizeof(why)) < 0)
        fail_msg("SOPHIA_REDIS_URL: %s", why);
    snprintf(url, sizeof(url), "redis://%s:%d/9", u.host, u.port);
    sophia_redis_url_clear(&u);
    free(conf->redis_url);
    free(conf->pg_url);
    conf->redis_url = strdup(url);
    conf->pg_url = strdup(env_url("SOPHIA_PG_URL"));
    return conf;
}

/* A cache_get_ex still waiting for Redis when its instance goes is
 * cancelled: the answer comes and the plugin's callback never runs. The
 * same read not cancelled gets its answer (a miss). A callback into a
 * freed state would be what ASan reports here. */
static void test_owned_read_cancelled(void **unused)
{
    (void)unused;
    sophia_conf *conf = cache_conf("cache: {l1: {max_entries: 100, ttl: 60}}\n");
    struct event_base *base = event_base_new();
    sophia_cache *cache = sophia_cache_new(conf, base);
    assert_non_null(cache);
    sophia_host_set_env(rt, &(sophia_host_env){.cache = cache});
    run_until(base, tiers_up, cache, 15000, "L2 and L3 up");

    const sophia_host *h = sophia_host_rt_table(rt);
    assert_true(SOPHIA_HOST_HAS(h, memory_search_ex));
    struct sophia_self a = {.name = "a", .host = h}, b = {.name = "b", .host = h};
    char key[64];
    snprintf(key, sizeof(key), "sdk-owned-%d", (int)getpid());
    answer got_a = {0}, got_b = {0};
    assert_int_equal(h->cache_get_ex(NULL, key, on_answer, &got_a), SOPHIA_EINVAL);
    assert_int_equal(h->cache_get_ex(&a, key, on_answer, &got_a), 0);
    assert_int_equal(h->cache_get_ex(&b, key, on_answer, &got_b), 0);
    assert_int_equal(sophia_host_reads_pending(rt, NULL), 2); /* not in L1 */
    sophia_host_release(&a);
    assert_int_equal(sophia_host_reads_pending(rt, &a), 0);
    assert_int_equal(sophia_host_reads_pending(rt, &b), 1);
    run_until(base, no_callbacks, NULL, 15000, "the tiers answered");
    assert_int_equal(got_a.calls, 0);
    assert_int_equal(got_b.calls, 1);
    assert_int_equal(got_b.rc, SOPHIA_ENOENT);
    assert_int_equal(sophia_host_reads_pending(rt, NULL), 0);
    /* No memory store here: refused at the call, callback not owed. */
    assert_int_equal(h->memory_search_ex(&b, "q", NULL, 5, on_answer, &got_b),
                     SOPHIA_EUNAVAIL);
    assert_int_equal(sophia_host_reads_pending(rt, NULL), 0);

    sophia_host_set_env(rt, NULL);
    sophia_cache_free(cache);
    sophia_conf_free(conf);
    event_base_free(base);
}

/* --------------------------------------------------- plan_put_ex (1.1) */

static sophia_instance *load_from(const char *dir, const char *module)
{
    char *dirs[] = {(char *)dir};
    sophia_conf_instance ci = {.name = (char *)module,
                               .plugin = (char *)module, .line = 4, .col = 3};
    sophia_conf c = {.file = "sdk.yaml", .plugin_path = dirs,
                     .nplugin_path = 1, .instances = &ci, .ninstances = 1};
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_instance *in = sophia_plugin_load(&c, &ci, sophia_host_rt_table(rt),
                                             &d);
    if (!in)
        fail_msg("%s refused: %s", module, d.count ? d.lines[0] : "?");
    sophia_diag_free(&d);
    return in;
}

#define L1 SOPHIA_TIER_L1
#define L2 SOPHIA_TIER_L2
#define L3 SOPHIA_TIER_L3

static void expect_plan(const sophia_instance *in, size_t size, double ttl,
                        const char *const *tags, unsigned sync,
                        unsigned deferred, unsigned inval)
{
    unsigned s = 99, d = 99, i = 99;
    sophia_plugin_plan_put(in, "k", size, ttl, tags, &s, &d, &i);
    assert_int_equal(s, sync);
    assert_int_equal(d, deferred);
    assert_int_equal(i, inval);
}

/* plan_put_ex decides on the size, tags and ttl it is told; a 1.0
 * strategy (the bundled write_through) still gets its plan_put. */
static void test_plan_put_ex(void **unused)
{
    (void)unused;
    sophia_instance *p = load_from(TEST_DIR, "planner");
    const char *volatile_tags[] = {"a", "volatile", NULL};
    expect_plan(p, 10, 0, NULL, L1 | L2 | L3, 0, 0);
    expect_plan(p, 65, 0, NULL, L1, L2 | L3, 0);
    expect_plan(p, 10, 0, volatile_tags, L1 | L2, 0, L3);
    expect_plan(p, 10, 30, NULL, L1 | L2, 0, 0);
    expect_plan(p, 10, 300, NULL, L1 | L2 | L3, 0, 0);
    assert_true(counter_of("planner", "planned_ex") == 5);
    sophia_plugin_unload(p);

    sophia_instance *wt = load_from(SOPHIA_TEST_PLUGIN_DIR, "write_through");
    const sophia_write_ops *ops = wt->desc->write_strategy;
    assert_true(ops->struct_size < offsetof(sophia_write_ops, plan_put_ex) +
                                       sizeof(void *) ||
                !ops->plan_put_ex);
    expect_plan(wt, 1000, 30, volatile_tags, L1 | L2 | L3, 0, 0);
    sophia_plugin_unload(wt);
}

static void on_put(void *arg, int rc)
{
    int *done = arg;
    *done = rc == 0 ? 1 : -1;
}

static bool put_done(void *arg)
{
    return *(int *)arg != 0;
}

/* The cache hands a strategy's plan_put_ex the put's size and tags. */
static void test_cache_calls_plan_put_ex(void **unused)
{
    (void)unused;
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             "plugins: {path: [\"%s\"], instances: {plan: {plugin: planner, "
             "options: {max_sync_bytes: 100000}}}}\n"
             "cache: {write: {default: plan}}\n",
             TEST_DIR);
    sophia_conf *conf = cache_conf(yaml);
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_instance *p = sophia_plugin_load(conf, &conf->instances[0],
                                            sophia_host_rt_table(rt), &d);
    if (!p)
        fail_msg("planner refused: %s", d.count ? d.lines[0] : "?");
    sophia_diag_free(&d);
    sophia_instance *items[] = {p};
    sophia_plugin_set set = {items, 1};
    struct event_base *base = event_base_new();
    sophia_cache *cache = sophia_cache_new(conf, base);
    assert_non_null(cache);
    sophia_host_set_env(rt, &(sophia_host_env){.cache = cache});
    sophia_cache_bind_plugins(cache, &set); /* strategies resolved here */
    run_until(base, tiers_up, cache, 15000, "L2 and L3 up");

    char key[64];
    snprintf(key, sizeof(key), "sdk-plan-%d", (int)getpid());
    const char *val = "{\"v\":[1,2,3]}";
    const char *tags[] = {"t1", "t2", NULL};
    int done = 0;
    assert_int_equal(sophia_cache_put_async(cache, key, val, strlen(val),
                                            120, tags, on_put, &done),
                     0);
    assert_true(counter_of("plan", "planned_ex") == 1);
    assert_true(counter_of("plan", "planned_bytes") == (double)strlen(val));
    assert_true(counter_of("plan", "planned_tags") == 2);
    run_until(base, put_done, &done, 15000, "the put landed");
    assert_int_equal(done, 1);

    sophia_host_set_env(rt, NULL);
    sophia_cache_free(cache);
    sophia_plugin_unload(p);
    sophia_conf_free(conf);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_older_minor_descriptor_loads),
        cmocka_unit_test(test_newer_minor_refused),
        cmocka_unit_test(test_other_major_refused),
        cmocka_unit_test(test_truncated_descriptor_refused),
        cmocka_unit_test(test_list_default_refused),
        cmocka_unit_test(test_host_table_is_complete),
        cmocka_unit_test(test_errno_last),
        cmocka_unit_test(test_descriptor_size_fixed),
        cmocka_unit_test(test_actions_json_every_kind),
        cmocka_unit_test(test_timer_closes_window),
        cmocka_unit_test(test_timer_rules),
        cmocka_unit_test(test_owned_read_cancelled),
        cmocka_unit_test(test_plan_put_ex),
        cmocka_unit_test(test_cache_calls_plan_put_ex),
    };
    if (sophia_plugin_system_init() || !(rt = sophia_host_rt_new()))
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sophia_host_rt_free(rt);
    sophia_plugin_system_shutdown();
    return rc;
}
