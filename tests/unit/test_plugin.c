/*
 * test_plugin - the plugin loader against real modules: the bundled
 * `metrics` processor, the valid `echo` test plugin and the deliberately
 * broken ones in tests/plugins (wrong ABI major/minor, no descriptor
 * symbol, failing init, truncated descriptor).
 *
 * The configuration is built in memory rather than parsed, so these tests
 * exercise only plugin.c; positions are made up and checked in the
 * diagnostics. The host table is a small jansson-backed stand-in for the
 * core's: it records publishes and cache puts in the context so process()
 * results can be asserted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "lib/diag.h"
#include "plugin/plugin.h"

#define TEST_FILE "test.yaml"
#define BROKEN_DIR SOPHIA_TEST_PLUGIN_DIR "/../test-plugins"
/* 2024-01-20T10:30:00Z */
#define FIXED_NOW_US (1705746600LL * 1000000LL)

/* ------------------------------------------------------ recording host */

enum { MAX_REC = 8 };

struct sophia_ctx {
    size_t npub;
    struct {
        sophia_update_type type;
        char *topic, *dashboard, *data;
    } pub[MAX_REC];
    size_t nput;
    struct {
        char *key, *value, *tags;
        double ttl;
    } put[MAX_REC];
};

static double counter_total;

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char *dump_sorted(json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

static void ctx_reset(sophia_ctx *ctx)
{
    for (size_t i = 0; i < ctx->npub; i++) {
        free(ctx->pub[i].topic);
        free(ctx->pub[i].dashboard);
        free(ctx->pub[i].data);
    }
    for (size_t i = 0; i < ctx->nput; i++) {
        free(ctx->put[i].key);
        free(ctx->put[i].value);
        free(ctx->put[i].tags);
    }
    memset(ctx, 0, sizeof(*ctx));
}

static void host_log(sophia_self *self, sophia_log_level level,
                     const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "level=%d plugin=%s ", (int)level,
            self ? self->name : "?");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *host_strerror(int err)
{
    switch (err) {
#define ERR_STR_(name, val, str)                                              \
    case SOPHIA_##name:                                                       \
        return str;
        SOPHIA_ERRNO_MAP(ERR_STR_)
#undef ERR_STR_
    default:
        return "unknown error";
    }
}

static sophia_json_type host_json_type(const sophia_json *v)
{
    const json_t *j = (const json_t *)v;
    if (!j)
        return SOPHIA_JSON_MISSING;
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return SOPHIA_JSON_OBJECT;
    case JSON_ARRAY:
        return SOPHIA_JSON_ARRAY;
    case JSON_STRING:
        return SOPHIA_JSON_STRING;
    case JSON_INTEGER:
    case JSON_REAL:
        return SOPHIA_JSON_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE:
        return SOPHIA_JSON_BOOL;
    case JSON_NULL:
        break;
    }
    return SOPHIA_JSON_NULL;
}

/* Dotted path: object keys, or array indices on arrays. */
static const sophia_json *host_json_get(const sophia_json *v,
                                        const char *path)
{
    json_t *j = (json_t *)v;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    char *save = NULL;
    for (char *p = strtok_r(buf, ".", &save); j && p;
         p = strtok_r(NULL, ".", &save))
        j = json_is_array(j) ? json_array_get(j, strtoul(p, NULL, 10))
                             : json_object_get(j, p);
    return (const sophia_json *)j;
}

static const char *host_json_string(const sophia_json *v)
{
    return json_string_value((const json_t *)v);
}

static double host_json_number(const sophia_json *v, double def)
{
    const json_t *j = (const json_t *)v;
    return json_is_number(j) ? json_number_value(j) : def;
}

static sophia_json *host_json_object(void)
{
    return (sophia_json *)json_object();
}

static sophia_json *host_json_str(const char *s)
{
    return (sophia_json *)json_string(s);
}

static sophia_json *host_json_copy(const sophia_json *v)
{
    return (sophia_json *)json_deep_copy((const json_t *)v);
}

static int host_json_set(sophia_json *obj, const char *key, sophia_json *v)
{
    return json_object_set_new((json_t *)obj, key, (json_t *)v) ? SOPHIA_EINVAL
                                                                 : 0;
}

static void host_json_free(sophia_json *v)
{
    json_decref((json_t *)v);
}

static int host_publish(sophia_ctx *ctx, sophia_update_type type,
                        const char *topic, const char *dashboard_id,
                        sophia_json *data)
{
    assert_true(ctx->npub < MAX_REC);
    ctx->pub[ctx->npub].type = type;
    ctx->pub[ctx->npub].topic = dup_or_null(topic);
    ctx->pub[ctx->npub].dashboard = dup_or_null(dashboard_id);
    ctx->pub[ctx->npub].data = dump_sorted((json_t *)data);
    ctx->npub++;
    json_decref((json_t *)data);
    return 0;
}

static int host_cache_put(sophia_ctx *ctx, const char *key, sophia_json *v,
                          double ttl_s, const char *const *tags)
{
    assert_true(ctx->nput < MAX_REC);
    json_t *t = json_array();
    for (size_t i = 0; tags && tags[i]; i++)
        json_array_append_new(t, json_string(tags[i]));
    ctx->put[ctx->nput].key = strdup(key);
    ctx->put[ctx->nput].value = dump_sorted((json_t *)v);
    ctx->put[ctx->nput].tags = dump_sorted(t);
    ctx->put[ctx->nput].ttl = ttl_s;
    ctx->nput++;
    json_decref(t);
    json_decref((json_t *)v);
    return 0;
}

/* SDK 1.4: text is recorded as the value it parses to, so the
 * expectations below hold for either way of handing data over. */
static size_t host_json_write(const sophia_json *v, char *buf, size_t cap)
{
    char *s = v ? json_dumps((const json_t *)v, JSON_COMPACT | JSON_ENCODE_ANY)
                : NULL;
    size_t n = s ? strlen(s) : 0;
    if (n < cap)
        memcpy(buf, s ? s : "", n + 1);
    free(s);
    return n;
}

static sophia_json *parse_text(const char *json, size_t len)
{
    json_t *v = json_loadb(json, len, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    return (sophia_json *)v;
}

static int host_publish_text(sophia_ctx *ctx, sophia_update_type type,
                             const char *topic, const char *dashboard_id,
                             const char *json, size_t len)
{
    return host_publish(ctx, type, topic, dashboard_id, parse_text(json, len));
}

static int host_cache_put_text(sophia_ctx *ctx, const char *key,
                               const char *json, size_t len, double ttl_s,
                               const char *const *tags)
{
    return host_cache_put(ctx, key, parse_text(json, len), ttl_s, tags);
}

static void host_counter_add(sophia_self *self, const char *name, double d)
{
    (void)self;
    (void)name;
    counter_total += d;
}

static int64_t host_now_us(void)
{
    return FIXED_NOW_US;
}

/* i-th member of an object, in order (metrics reads a point's labels). */
static const char *host_json_key_at(const sophia_json *v, size_t i,
                                    const sophia_json **value)
{
    void *it = json_object_iter((json_t *)v);
    for (; it && i; i--)
        it = json_object_iter_next((json_t *)v, it);
    if (!it)
        return NULL;
    *value = (const sophia_json *)json_object_iter_value(it);
    return json_object_iter_key(it);
}

/* SDK 1.1: an object's members in order (metrics reads a point's body). */
static void *host_json_iter(const sophia_json *obj, void *it, const char **key,
                            const sophia_json **value)
{
    json_t *o = (json_t *)obj;
    void *next = it ? json_object_iter_next(o, it) : json_object_iter(o);
    if (next) {
        *key = json_object_iter_key(next);
        *value = (const sophia_json *)json_object_iter_value(next);
    }
    return next;
}

/* SDK 1.1: these tests never commit a context, so a staged state change
 * is discarded at once (as the core does for a context freed uncommitted). */
static int host_stage(sophia_ctx *ctx, void (*apply)(void *, void *),
                      void (*discard)(void *), void *change)
{
    (void)ctx;
    (void)apply;
    if (discard)
        discard(change);
    return 0;
}

static int host_stage_undoable(sophia_ctx *ctx, void (*apply)(void *, void *),
                               void (*undo)(void *, void *),
                               void (*release)(void *), void *change)
{
    (void)ctx;
    (void)apply;
    (void)undo;
    if (release)
        release(change);
    return 0;
}

static const sophia_host test_host = {
    .struct_size = sizeof(sophia_host),
    .abi_major = SOPHIA_SDK_VERSION_MAJOR,
    .abi_minor = SOPHIA_SDK_VERSION_MINOR,
    .log = host_log,
    .strerror = host_strerror,
    .opt_string = sophia_opts_string,
    .opt_int = sophia_opts_int,
    .opt_double = sophia_opts_double,
    .opt_bool = sophia_opts_bool,
    .opt_list_len = sophia_opts_list_len,
    .opt_list_item = sophia_opts_list_item,
    .json_type = host_json_type,
    .json_get = host_json_get,
    .json_string = host_json_string,
    .json_number = host_json_number,
    .json_key_at = host_json_key_at,
    .json_object = host_json_object,
    .json_str = host_json_str,
    .json_copy = host_json_copy,
    .json_set = host_json_set,
    .json_free = host_json_free,
    .publish = host_publish,
    .cache_put = host_cache_put,
    .counter_add = host_counter_add,
    .now_us = host_now_us,
    .stage = host_stage,
    .stage_undoable = host_stage_undoable,
    .json_iter = host_json_iter,
    .json_write = host_json_write,
    .publish_text = host_publish_text,
    .cache_put_text = host_cache_put_text,
};

/* ------------------------------------------------------ config builders */

static char *plugin_dirs[] = {"/nonexistent-sophia-dir", BROKEN_DIR,
                              SOPHIA_TEST_PLUGIN_DIR};

static sophia_conf make_conf(sophia_conf_instance *insts, size_t n)
{
    sophia_conf c;
    memset(&c, 0, sizeof(c));
    c.file = TEST_FILE;
    c.plugin_path = plugin_dirs;
    c.nplugin_path = sizeof(plugin_dirs) / sizeof(plugin_dirs[0]);
    c.plugin_strict_modes = 1;
    c.plugin_init_timeout = 10;
    c.instances = insts;
    c.ninstances = n;
    return c;
}

/* `col` is the value's column; the key sits before it as in `key: value`. */
static sophia_conf_opt scalar(const char *key, const char *value, int line,
                              int col)
{
    return (sophia_conf_opt){.key = (char *)key, .scalar = (char *)value,
                             .line = line, .col = col, .key_line = line,
                             .key_col = col - (int)strlen(key) - 2};
}

static sophia_conf_opt seq(const char *key, char **items, size_t n,
                           int line, int col)
{
    return (sophia_conf_opt){.key = (char *)key, .items = items,
                             .nitems = n, .is_seq = 1, .line = line,
                             .col = col, .key_line = line,
                             .key_col = col - (int)strlen(key) - 2};
}

static sophia_conf_instance instance(const char *name, const char *module,
                                     sophia_conf_opt *opts, size_t n,
                                     int line)
{
    return (sophia_conf_instance){.name = (char *)name,
                                  .plugin = (char *)module, .opts = opts,
                                  .nopts = n, .line = line, .col = 5};
}

/* Loads one instance; on failure its diagnostics stay in `d`. */
static sophia_instance *load_one(sophia_conf_instance *ci, sophia_diag *d)
{
    sophia_conf c = make_conf(ci, 1);
    return sophia_plugin_load(&c, ci, &test_host, d);
}

/* Asserts exactly one diagnostic starting with prefix and containing each
 * of the NULL-terminated substrings. */
static void expect_one_diag(const sophia_diag *d, const char *prefix, ...)
{
    if (d->count != 1)
        sophia_diag_print(d, stderr);
    assert_int_equal(d->count, 1);
    const char *line = d->lines[0];
    fprintf(stderr, "diag: %s\n", line);
    assert_true(strncmp(line, prefix, strlen(prefix)) == 0);
    va_list ap;
    va_start(ap, prefix);
    for (const char *s; (s = va_arg(ap, const char *));) {
        if (!strstr(line, s))
            fail_msg("'%s' not in '%s'", s, line);
    }
    va_end(ap);
}

/* Some line of `d` starts with prefix and contains `needle`. */
static int has_diag(const sophia_diag *d, const char *prefix,
                    const char *needle)
{
    for (size_t i = 0; i < d->count; i++)
        if (strncmp(d->lines[i], prefix, strlen(prefix)) == 0 &&
            strstr(d->lines[i], needle))
            return 1;
    return 0;
}

static sophia_verdict run(sophia_instance *inst, const char *body_text,
                          sophia_ctx *ctx)
{
    json_t *body = json_loads(body_text, JSON_DECODE_ANY, NULL);
    assert_non_null(body);
    sophia_event ev = {.struct_size = sizeof(ev), .stream = "test",
                       .source = "http",
                       .body = (const sophia_json *)body,
                       .received_us = FIXED_NOW_US};
    sophia_verdict v = inst->desc->processor->process(inst->state, &ev, ctx);
    json_decref(body);
    return v;
}

/* ---------------------------------------------------------------- tests */

static void test_kind_names(void **unused)
{
    (void)unused;
    assert_string_equal(sophia_plugin_kind_name(SOPHIA_KIND_PROCESSOR),
                        "processor");
    assert_string_equal(sophia_plugin_kind_name(SOPHIA_KIND_WRITE_STRATEGY),
                        "write_strategy");
    assert_string_equal(sophia_plugin_kind_name(SOPHIA_KIND_CONSOLIDATOR),
                        "consolidator");
}

static void test_metrics_loads_and_prints(void **unused)
{
    (void)unused;
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf_instance ci = instance("m", "metrics", NULL, 0, 3);
    sophia_instance *inst = load_one(&ci, &d);
    sophia_diag_print(&d, stderr);
    assert_non_null(inst);
    assert_int_equal(d.count, 0);
    assert_string_equal(inst->name, "m");
    assert_string_equal(inst->module, "metrics");
    assert_string_equal(inst->desc->name, "metrics");
    assert_string_equal(inst->desc->version, "0.1.0");
    assert_int_equal(inst->desc->kind, SOPHIA_KIND_PROCESSOR);
    assert_non_null(strstr(inst->file, "metrics.so"));
    assert_true(inst->loaded_at > 1700000000);
    assert_non_null(inst->state);
    /* defaults */
    assert_string_equal(sophia_opts_string(inst->opts, "default_dashboard"),
                        "");
    assert_string_equal(sophia_opts_string(inst->opts, "cache_prefix"),
                        "metric:");
    assert_true(sophia_opts_double(inst->opts, "ttl") == 300.0);

    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    sophia_plugin_print_options(inst, out);
    fclose(out);
    fputs(buf, stderr);
    const char *want[] = {"metrics 0.1.0", "processor", "default_dashboard",
                          "cache_prefix", "metric:", "ttl", "double", "300",
                          "string", "description", "\"\""};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(buf, want[i]))
            fail_msg("'%s' not in the option table", want[i]);
    free(buf);
    sophia_plugin_unload(inst);
    sophia_diag_free(&d);
}

static void test_metrics_process(void **unused)
{
    (void)unused;
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf_opt opts[] = {scalar("default_dashboard", "main", 4, 26),
                              scalar("cache_prefix", "m:", 5, 21),
                              scalar("ttl", "60", 6, 12)};
    sophia_conf_instance ci = instance("m", "metrics", opts, 3, 3);
    sophia_instance *inst = load_one(&ci, &d);
    assert_non_null(inst);
    sophia_ctx ctx = {0};
    counter_total = 0;

    assert_int_equal(
        run(inst,
            "{\"metric\":\"revenue\",\"value\":125000,\"timestamp\":"
            "\"2024-01-20T10:30:00Z\",\"dashboard_id\":\"executive\","
            "\"labels\":{\"region\":\"emea\"}}",
            &ctx),
        SOPHIA_PROCESS_OK);
    assert_int_equal(ctx.npub, 1);
    assert_int_equal(ctx.pub[0].type, SOPHIA_UPDATE_METRIC);
    assert_null(ctx.pub[0].topic);
    assert_string_equal(ctx.pub[0].dashboard, "executive");
    assert_string_equal(ctx.pub[0].data,
                        "{\"labels\":{\"region\":\"emea\"},\"metric\":"
                        "\"revenue\",\"timestamp\":\"2024-01-20T10:30:00Z\","
                        "\"value\":125000}");
    assert_int_equal(ctx.nput, 1);
    assert_string_equal(ctx.put[0].key, "m:executive:revenue{region=emea}");
    assert_string_equal(ctx.put[0].value,
                        "{\"timestamp\":\"2024-01-20T10:30:00Z\","
                        "\"value\":125000}");
    assert_string_equal(ctx.put[0].tags,
                        "[\"metrics\",\"dashboard:executive\"]");
    assert_true(ctx.put[0].ttl == 60.0);
    ctx_reset(&ctx);

    /* no dashboard_id: the default one; no timestamp: now */
    assert_int_equal(run(inst, "{\"metric\":\"cpu\",\"value\":0.5}", &ctx),
                     SOPHIA_PROCESS_OK);
    assert_int_equal(ctx.npub, 1);
    assert_string_equal(ctx.pub[0].dashboard, "main");
    assert_string_equal(ctx.pub[0].data,
                        "{\"metric\":\"cpu\",\"timestamp\":"
                        "\"2024-01-20T10:30:00Z\",\"value\":0.5}");
    assert_string_equal(ctx.put[0].key, "m:main:cpu");
    assert_true(counter_total == 2.0);
    ctx_reset(&ctx);

    /* not points: nothing queued, not counted */
    const char *bad[] = {"{\"value\":1}", "{\"metric\":\"\",\"value\":1}",
                         "{\"metric\":\"x\",\"value\":\"1\"}",
                         "{\"metric\":\"x\"}", "[1,2]", "\"revenue\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(run(inst, bad[i], &ctx), SOPHIA_PROCESS_ERROR);
        assert_int_equal(ctx.npub + ctx.nput, 0);
    }
    assert_true(counter_total == 2.0);
    sophia_plugin_unload(inst);
    sophia_diag_free(&d);
}

static void test_metrics_without_dashboard(void **unused)
{
    (void)unused;
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf_instance ci = instance("m", "metrics", NULL, 0, 3);
    sophia_instance *inst = load_one(&ci, &d);
    assert_non_null(inst);
    sophia_ctx ctx = {0};
    assert_int_equal(run(inst,
                         "{\"metric\":\"users\",\"value\":3,\"timestamp\":"
                         "1705746600}",
                         &ctx),
                     SOPHIA_PROCESS_OK);
    assert_null(ctx.pub[0].dashboard);
    assert_string_equal(ctx.put[0].key, "metric:_:users");
    assert_string_equal(ctx.put[0].tags, "[\"metrics\"]");
    assert_string_equal(ctx.put[0].value,
                        "{\"timestamp\":1705746600,\"value\":3}");
    assert_true(ctx.put[0].ttl == 300.0);
    ctx_reset(&ctx);
    sophia_plugin_unload(inst);
    sophia_diag_free(&d);
}

static void test_echo_two_instances(void **unused)
{
    (void)unused;
    char *tags[] = {"x", "y"};
    sophia_conf_opt o1[] = {scalar("topic", "alpha", 4, 14),
                            scalar("count", "7", 5, 14),
                            scalar("ratio", "1.5", 6, 14),
                            scalar("verbose", "On", 7, 16),
                            seq("tags", tags, 2, 8, 13)};
    sophia_conf_opt o2[] = {scalar("topic", "beta", 11, 14)};
    sophia_conf_instance insts[] = {instance("e1", "echo", o1, 5, 3),
                                    instance("e2", "echo", o2, 1, 10)};
    sophia_conf c = make_conf(insts, 2);
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_plugin_set *set = sophia_plugin_set_load(&c, &test_host, &d);
    sophia_diag_print(&d, stderr);
    assert_non_null(set);
    assert_int_equal(d.count, 0);
    assert_int_equal(set->count, 2);
    sophia_instance *e1 = sophia_plugin_set_find(set, "e1");
    sophia_instance *e2 = sophia_plugin_set_find(set, "e2");
    assert_non_null(e1);
    assert_non_null(e2);
    assert_null(sophia_plugin_set_find(set, "e3"));
    assert_ptr_not_equal(e1->state, e2->state);
    assert_non_null(strstr(e1->file, "test-plugins/echo.so"));

    assert_string_equal(sophia_opts_string(e1->opts, "topic"), "alpha");
    assert_int_equal(sophia_opts_int(e1->opts, "count"), 7);
    assert_true(sophia_opts_double(e1->opts, "ratio") == 1.5);
    assert_int_equal(sophia_opts_bool(e1->opts, "verbose"), 1);
    assert_int_equal(sophia_opts_list_len(e1->opts, "tags"), 2);
    assert_string_equal(sophia_opts_list_item(e1->opts, "tags", 0), "x");
    assert_string_equal(sophia_opts_list_item(e1->opts, "tags", 1), "y");
    assert_null(sophia_opts_list_item(e1->opts, "tags", 2));

    /* defaults */
    assert_string_equal(sophia_opts_string(e2->opts, "topic"), "beta");
    assert_int_equal(sophia_opts_int(e2->opts, "count"), 3);
    assert_true(sophia_opts_double(e2->opts, "ratio") == 0.25);
    assert_int_equal(sophia_opts_bool(e2->opts, "verbose"), 0);
    assert_int_equal(sophia_opts_list_len(e2->opts, "tags"), 0);
    assert_string_equal(sophia_opts_string(e2->opts, "count"), "3");

    /* unknown names: zero values */
    assert_null(sophia_opts_string(e2->opts, "nope"));
    assert_int_equal(sophia_opts_int(e2->opts, "nope"), 0);
    assert_true(sophia_opts_double(e2->opts, "nope") == 0.0);
    assert_int_equal(sophia_opts_bool(e2->opts, "nope"), 0);
    assert_int_equal(sophia_opts_list_len(NULL, "tags"), 0);

    /* each instance publishes with its own state */
    sophia_ctx ctx = {0};
    assert_int_equal(run(e1, "{\"a\":1}", &ctx), SOPHIA_PROCESS_OK);
    assert_int_equal(run(e2, "[true]", &ctx), SOPHIA_PROCESS_OK);
    assert_int_equal(ctx.npub, 2);
    assert_int_equal(ctx.pub[0].type, SOPHIA_UPDATE_DATA);
    assert_string_equal(ctx.pub[0].topic, "alpha");
    assert_string_equal(ctx.pub[0].data, "{\"a\":1}");
    assert_string_equal(ctx.pub[1].topic, "beta");
    assert_string_equal(ctx.pub[1].data, "[true]");
    ctx_reset(&ctx);
    sophia_plugin_set_free(set);
    sophia_diag_free(&d);
}

/* Loads `module` with no options and expects one diagnostic at 7:5. */
static void expect_refused(const char *module, ...)
{
    sophia_conf_instance ci = instance("bad", module, NULL, 0, 7);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(load_one(&ci, &d));
    assert_int_equal(d.count, 1);
    fprintf(stderr, "diag: %s\n", d.lines[0]);
    assert_true(strncmp(d.lines[0], TEST_FILE ":7:5: ", 12) == 0);
    va_list ap;
    va_start(ap, module);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(d.lines[0], s))
            fail_msg("'%s' not in '%s'", s, d.lines[0]);
    va_end(ap);
    sophia_diag_free(&d);
}

/* A module is a name on plugins.path, never a path (issue #10). */
static void test_module_as_path_refused(void **unused)
{
    (void)unused;
    expect_refused(BROKEN_DIR "/echo", "plugin '" BROKEN_DIR "/echo' refused",
                   "not a path", NULL);
    expect_refused("../test-plugins/echo", "refused", "no '/' or '..'", NULL);
    expect_refused("..", "refused", "not a path", NULL);
}

/* A copy of echo.so in a fresh 0755 directory; returns the directory. */
static char *private_echo(char *dir)
{
    assert_non_null(mkdtemp(dir));
    assert_int_equal(chmod(dir, 0755), 0);
    char from[PATH_MAX], to[PATH_MAX], cmd[3 * PATH_MAX];
    snprintf(from, sizeof(from), "%s/echo.so", BROKEN_DIR);
    snprintf(to, sizeof(to), "%s/echo.so", dir);
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
    return dir;
}

static sophia_instance *load_from(const char *dir, sophia_diag *d,
                                  int strict)
{
    char *dirs[] = {(char *)dir};
    sophia_conf_opt o[] = {scalar("topic", "t", 4, 14)};
    sophia_conf_instance ci = instance("e", "echo", o, 1, 3);
    sophia_conf c = make_conf(&ci, 1);
    c.plugin_path = dirs;
    c.nplugin_path = 1;
    c.plugin_strict_modes = strict;
    return sophia_plugin_load(&c, &ci, &test_host, d);
}

static void test_strict_modes(void **unused)
{
    (void)unused;
    char dir[] = "/tmp/sophia-test-modes-XXXXXX", so[PATH_MAX];
    private_echo(dir);
    snprintf(so, sizeof(so), "%s/echo.so", dir);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_int_equal(chmod(so, 0644), 0);
    sophia_instance *in = load_from(dir, &d, 1);
    assert_non_null(in);
    sophia_plugin_unload(in);

    assert_int_equal(chmod(so, 0646), 0);
    assert_null(load_from(dir, &d, 1));
    expect_one_diag(&d, TEST_FILE ":3:5: ", "plugin 'echo' refused", so,
                    "writable by others (mode 0646)",
                    "plugins.strict_modes: false", NULL);
    sophia_diag_free(&d);
    sophia_diag_init(&d);
    in = load_from(dir, &d, 0); /* turned off */
    assert_non_null(in);
    sophia_plugin_unload(in);

    assert_int_equal(chmod(so, 0644), 0);
    assert_int_equal(chmod(dir, 0775), 0);
    assert_null(load_from(dir, &d, 1));
    expect_one_diag(&d, TEST_FILE ":3:5: ", dir, "writable by group", NULL);
    sophia_diag_free(&d);
    unlink(so);
    rmdir(dir);
}

/* A plugin crashing in init() is caught in the probe child. */
static void test_set_load_survives_crash(void **unused)
{
    (void)unused;
    sophia_conf_opt ok[] = {scalar("topic", "t", 4, 14)};
    sophia_conf_instance insts[] = {
        instance("e", "echo", ok, 1, 3),
        instance("boom", "crash_in_init", NULL, 0, 8),
    };
    sophia_conf c = make_conf(insts, 2);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(sophia_plugin_set_load(&c, &test_host, &d));
    expect_one_diag(&d, TEST_FILE ":8:5: ", "instance 'boom'",
                    "crash_in_init.so) crashed in init: SIGSEGV", NULL);
    sophia_diag_free(&d);
}

static void test_abi_major_refused(void **unused)
{
    (void)unused;
    char have[32];
    snprintf(have, sizeof(have), "provides SDK %d.%d",
             SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
    expect_refused("abi_major2", "plugin 'abi_major2'", "abi_major2.so",
                   "SDK 2.0", have, "major", NULL);
}

static void test_abi_minor_refused(void **unused)
{
    (void)unused;
    char need[32], have[32];
    snprintf(need, sizeof(need), "needs SDK %d.%d", SOPHIA_SDK_VERSION_MAJOR,
             SOPHIA_SDK_VERSION_MINOR + 1);
    snprintf(have, sizeof(have), "provides SDK %d.%d",
             SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
    expect_refused("abi_minor_newer", need, have, NULL);
}

static void test_no_symbol_refused(void **unused)
{
    (void)unused;
    expect_refused("no_symbol", "no_symbol.so", "sophia_plugin_v1",
                   "not a Sophia plugin", NULL);
}

static void test_init_failure_refused(void **unused)
{
    (void)unused;
    expect_refused("init_fails", "init failed", "invalid argument", NULL);
}

static void test_small_struct_refused(void **unused)
{
    (void)unused;
    char have[32], need[48];
    snprintf(have, sizeof(have), "%zu-byte descriptor",
             offsetof(sophia_plugin, init));
    snprintf(need, sizeof(need), "at least %zu bytes",
             offsetof(sophia_plugin, consolidator) + sizeof(void *));
    expect_refused("small_struct", have, need, "struct size", NULL);
}

static void test_missing_module(void **unused)
{
    (void)unused;
    expect_refused("nosuch", "cannot load plugin 'nosuch'",
                   "/nonexistent-sophia-dir", BROKEN_DIR,
                   SOPHIA_TEST_PLUGIN_DIR " (", "not found", NULL);
}

static void test_empty_plugin_path(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {scalar("topic", "t", 4, 14)};
    sophia_conf_instance ci = instance("e", "echo", o, 1, 3);
    sophia_conf c = make_conf(&ci, 1);
    c.nplugin_path = 0;
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(sophia_plugin_load(&c, &ci, &test_host, &d));
    expect_one_diag(&d, TEST_FILE ":3:5: ", "cannot load plugin 'echo'",
                    "plugins.path is empty", NULL);
    sophia_diag_free(&d);
}

static void test_unknown_option(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {scalar("topic", "t", 4, 14),
                           scalar("colour", "red", 12, 17)};
    sophia_conf_instance ci = instance("e", "echo", o, 2, 3);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(load_one(&ci, &d));
    expect_one_diag(&d, TEST_FILE ":12:9: ", "unknown option 'colour'",
                    "valid options: topic, count, ratio, verbose, tags",
                    NULL);
    sophia_diag_free(&d);
}

static void test_wrong_types(void **unused)
{
    (void)unused;
    char *items[] = {"a"};
    sophia_conf_opt o[] = {seq("topic", items, 1, 4, 14),
                           scalar("count", "12x", 5, 14),
                           scalar("ratio", "fast", 6, 14),
                           scalar("verbose", "maybe", 7, 16),
                           scalar("tags", "a,b", 8, 13)};
    sophia_conf_instance ci = instance("e", "echo", o, 5, 3);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(load_one(&ci, &d));
    sophia_diag_print(&d, stderr);
    assert_int_equal(d.count, 5); /* every problem, not just the first */
    assert_true(has_diag(&d, TEST_FILE ":4:14: ", "'topic' must be a string"));
    assert_true(has_diag(&d, TEST_FILE ":5:14: ", "an integer, got '12x'"));
    assert_true(has_diag(&d, TEST_FILE ":6:14: ", "a number, got 'fast'"));
    assert_true(has_diag(&d, TEST_FILE ":7:16: ", "a boolean"));
    assert_true(has_diag(&d, TEST_FILE ":8:13: ", "must be a list"));
    sophia_diag_free(&d);
}

static void test_strict_numbers(void **unused)
{
    (void)unused;
    const char *ints[] = {"", " 5", "5 ", "1.0", "0x10",
                          "99999999999999999999"};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        sophia_conf_opt o[] = {scalar("topic", "t", 4, 14),
                               scalar("count", ints[i], 5, 14)};
        sophia_conf_instance ci = instance("e", "echo", o, 2, 3);
        sophia_diag d;
        sophia_diag_init(&d);
        assert_null(load_one(&ci, &d));
        expect_one_diag(&d, TEST_FILE ":5:14: ", "'count' must be an integer",
                        NULL);
        sophia_diag_free(&d);
    }
    const char *dbls[] = {"nan", "inf", "1e", "1,5"};
    for (size_t i = 0; i < sizeof(dbls) / sizeof(dbls[0]); i++) {
        sophia_conf_opt o[] = {scalar("topic", "t", 4, 14),
                               scalar("ratio", dbls[i], 6, 14)};
        sophia_conf_instance ci = instance("e", "echo", o, 2, 3);
        sophia_diag d;
        sophia_diag_init(&d);
        assert_null(load_one(&ci, &d));
        expect_one_diag(&d, TEST_FILE ":6:14: ", "'ratio' must be a number",
                        NULL);
        sophia_diag_free(&d);
    }
    /* accepted by the loader, refused by the plugin's own init */
    sophia_conf_opt o[] = {scalar("topic", "t", 4, 14),
                           scalar("count", "-5", 5, 14),
                           scalar("ratio", "-2e3", 6, 14)};
    sophia_conf_instance ci = instance("e", "echo", o, 3, 3);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(load_one(&ci, &d));
    expect_one_diag(&d, TEST_FILE ":3:5: ", "init failed", NULL);
    sophia_diag_free(&d);
}

static void test_missing_required(void **unused)
{
    (void)unused;
    sophia_conf_opt o[] = {scalar("count", "1", 5, 14)};
    sophia_conf_instance ci = instance("e", "echo", o, 1, 3);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(load_one(&ci, &d));
    expect_one_diag(&d, TEST_FILE ":3:5: ",
                    "missing required option 'topic'", NULL);
    sophia_diag_free(&d);
}

static void test_set_load_reports_every_bad_instance(void **unused)
{
    (void)unused;
    sophia_conf_opt ok[] = {scalar("topic", "t", 4, 14)};
    sophia_conf_opt unknown[] = {scalar("topic", "t", 14, 14),
                                 scalar("nope", "1", 15, 20)};
    sophia_conf_instance insts[] = {
        instance("m", "metrics", NULL, 0, 2),
        instance("e", "echo", ok, 1, 3),
        instance("old", "abi_major2", NULL, 0, 10),
        instance("e2", "echo", unknown, 2, 13),
    };
    sophia_conf c = make_conf(insts, 4);
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(sophia_plugin_set_load(&c, &test_host, &d));
    sophia_diag_print(&d, stderr);
    assert_int_equal(d.count, 2);
    assert_true(has_diag(&d, TEST_FILE ":10:5: ", "SDK 2.0"));
    assert_true(has_diag(&d, TEST_FILE ":15:14: ", "unknown option 'nope'"));
    sophia_diag_free(&d);

    /* the good ones alone load as a set */
    c.ninstances = 2;
    sophia_diag_init(&d);
    sophia_plugin_set *set = sophia_plugin_set_load(&c, &test_host, &d);
    assert_non_null(set);
    assert_int_equal(set->count, 2);
    assert_int_equal(d.count, 0);
    sophia_plugin_set_free(set);
    sophia_plugin_set_free(NULL);
    sophia_plugin_unload(NULL);
    sophia_diag_free(&d);
}

/* Reload: unchanged instances are shared (state kept), changed ones are
 * fresh with reload_count + 1, and a failed next set leaves the old one. */
static void test_set_load_next(void **unused)
{
    (void)unused;
    sophia_conf_opt a1[] = {scalar("topic", "alpha", 4, 14)};
    sophia_conf_opt a2[] = {scalar("topic", "beta", 6, 14)};
    sophia_conf_opt b2[] = {scalar("topic", "gamma", 6, 14)};
    sophia_conf_instance ia[] = {instance("e1", "echo", a1, 1, 3),
                                 instance("e2", "echo", a2, 1, 5)};
    sophia_conf_instance ib[] = {instance("e1", "echo", a1, 1, 3),
                                 instance("e2", "echo", b2, 1, 5),
                                 instance("e3", "echo", a1, 1, 7)};
    sophia_conf_instance ic[] = {instance("e1", "echo", a1, 1, 3),
                                 instance("bad", "abi_major2", NULL, 0, 9)};
    sophia_conf ca = make_conf(ia, 2), cb = make_conf(ib, 3),
                cc = make_conf(ic, 2);
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_plugin_set *old = sophia_plugin_set_load(&ca, &test_host, &d);
    assert_non_null(old);
    sophia_plugin_set *next =
        sophia_plugin_set_load_next(&cb, &ca, old, &test_host, &d);
    sophia_diag_print(&d, stderr);
    assert_non_null(next);
    assert_int_equal(next->count, 3);
    sophia_instance *e1 = sophia_plugin_set_find(next, "e1");
    sophia_instance *e2 = sophia_plugin_set_find(next, "e2");
    assert_ptr_equal(e1, sophia_plugin_set_find(old, "e1"));
    assert_ptr_not_equal(e2, sophia_plugin_set_find(old, "e2"));
    assert_int_equal(e1->reload_count, 0);
    assert_int_equal(e2->reload_count, 1);
    assert_int_equal(sophia_plugin_set_find(next, "e3")->reload_count, 0);
    assert_true(sophia_plugin_set_has(next, e1));
    sophia_plugin_set_retire(old, next);

    /* a bad instance: NULL, and the running set is untouched */
    assert_null(sophia_plugin_set_load_next(&cc, &cb, next, &test_host, &d));
    assert_true(has_diag(&d, TEST_FILE ":9:5: ", "SDK 2.0"));
    sophia_ctx ctx = {0};
    assert_int_equal(run(e1, "{\"a\":1}", &ctx), SOPHIA_PROCESS_OK);
    assert_int_equal(run(e2, "{\"a\":2}", &ctx), SOPHIA_PROCESS_OK);
    assert_string_equal(ctx.pub[0].topic, "alpha");
    assert_string_equal(ctx.pub[1].topic, "gamma");
    ctx_reset(&ctx);
    sophia_plugin_set_free(next);
    sophia_diag_free(&d);
}

static int setup(void **unused)
{
    (void)unused;
    return sophia_plugin_system_init();
}

static int teardown(void **unused)
{
    (void)unused;
    sophia_plugin_system_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_set_load_next),
        cmocka_unit_test(test_metrics_loads_and_prints),
        cmocka_unit_test(test_metrics_process),
        cmocka_unit_test(test_metrics_without_dashboard),
        cmocka_unit_test(test_echo_two_instances),
        cmocka_unit_test(test_module_as_path_refused),
        cmocka_unit_test(test_strict_modes),
        cmocka_unit_test(test_set_load_survives_crash),
        cmocka_unit_test(test_abi_major_refused),
        cmocka_unit_test(test_abi_minor_refused),
        cmocka_unit_test(test_no_symbol_refused),
        cmocka_unit_test(test_init_failure_refused),
        cmocka_unit_test(test_small_struct_refused),
        cmocka_unit_test(test_missing_module),
        cmocka_unit_test(test_empty_plugin_path),
        cmocka_unit_test(test_unknown_option),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_strict_numbers),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_set_load_reports_every_bad_instance),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
