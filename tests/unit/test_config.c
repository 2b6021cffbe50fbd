/*
 * test_config - the YAML loader against its contract (core/conf/config.h).
 *
 * Most cases load a small document through sophia_conf_load_string under
 * the name "t.yaml" and compare whole diagnostics, position included: the
 * point of the loader is that an operator can jump to FILE:LINE:COL, so a
 * message that lands one column off is a failure here. The shipped files in
 * config/ are loaded too, so the default configuration cannot rot. Run under
 * -DSOPHIA_SANITIZE=ON to check that every path frees what it allocates.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/config.h"
#include "http/http_tls.h"

#define ALLOWED_TOP "(allowed: server, log, redis, postgres, cache, " \
                    "websocket, cluster, memory, plugins, streams, hooks, " \
                    "correlators)"

static sophia_diag diag;

static int setup(void **state)
{
    (void)state;
    sophia_diag_init(&diag);
    unsetenv("SOPHIA_REDIS_URL");
    unsetenv("SOPHIA_PG_URL");
    unsetenv("SOPHIA_LISTEN");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    sophia_diag_free(&diag);
    return 0;
}

/* What load() passes: a test sets the TLS check it needs, then clears it. */
static sophia_conf_load_opts load_opts;

static sophia_conf *load(const char *yaml)
{
    sophia_conf *c = sophia_conf_load_string_with("t.yaml", yaml, strlen(yaml),
                                                  &load_opts, &diag);
    assert_non_null(c);
    return c;
}

static void dump_diag(void)
{
    for (size_t i = 0; i < diag.count; i++)
        print_message("  diag[%zu] %s\n", i, diag.lines[i]);
}

static void assert_count(size_t n)
{
    if (diag.count != n) {
        print_error("expected %zu diagnostics, got %zu\n", n, diag.count);
        dump_diag();
        fail();
    }
}

/* diag line i starts with prefix */
static void assert_diag(size_t i, const char *prefix)
{
    if (i >= diag.count || strncmp(diag.lines[i], prefix, strlen(prefix))) {
        print_error("diag[%zu]: want prefix \"%s\"\n", i, prefix);
        dump_diag();
        fail();
    }
}

/* Loads yaml, expects exactly one diagnostic starting with prefix. */
static void expect_one(const char *yaml, const char *prefix)
{
    sophia_diag_free(&diag);
    sophia_conf *c = load(yaml);
    assert_count(1);
    assert_diag(0, prefix);
    sophia_conf_free(c);
    sophia_diag_free(&diag);
}

static void expect_clean(const char *yaml)
{
    sophia_diag_free(&diag);
    sophia_conf *c = load(yaml);
    assert_count(0);
    sophia_conf_free(c);
}

/* ---- shipped files ---------------------------------------------------- */

/* 1-based line and column of the first occurrence of needle in file. */
static void find_in_file(const char *file, const char *needle, int *line,
                         int *col)
{
    FILE *f = fopen(file, "r");
    char buf[1024];
    assert_non_null(f);
    for (*line = 1; fgets(buf, sizeof(buf), f); (*line)++) {
        char *p = strstr(buf, needle);
        if (p && buf[strspn(buf, " ")] != '#') {
            *col = (int)(p - buf) + 1;
            fclose(f);
            return;
        }
    }
    fclose(f);
    fail_msg("'%s' not in %s", needle, file);
}

static void test_default_file(void **state)
{
    (void)state;
    const char *file = SOPHIA_TEST_SOURCE_DIR "/config/sophia.yaml";
    setenv("SOPHIA_INGEST_TOKENS", "tok-a,tok-b", 1);
    unsetenv("SOPHIA_JWT_SECRET");
    sophia_conf *c = sophia_conf_load(file, &diag);
    assert_non_null(c);
    /* No plugins.path: the bundled plugins' directory, which sophiad adds
     * before validating, is the only one, so any copy of the file works. */
    assert_int_equal(c->nplugin_path, 0);
    sophia_conf_add_plugin_dir(c, "/opt/sophia-test/plugins");
    sophia_conf_validate(c, &diag);
    assert_count(0);

    assert_string_equal(c->file, file);
    assert_string_equal(c->server.listen, "127.0.0.1:8080");
    assert_int_equal(c->server.max_body, 1 << 20);
    assert_string_equal(c->server.tokens_env, "SOPHIA_INGEST_TOKENS");
    assert_string_equal(c->server.tokens, "tok-a,tok-b");
    assert_string_equal(c->ws.auth_env, "SOPHIA_JWT_SECRET");
    assert_null(c->ws.auth_secret);
    assert_null(c->redis_url);
    assert_null(c->pg_url);

    assert_int_equal(c->nplugin_path, 1);
    assert_string_equal(c->plugin_path[0], "/opt/sophia-test/plugins");

    const sophia_conf_instance *m = sophia_conf_instance_find(c, "metrics");
    assert_non_null(m);
    assert_string_equal(m->plugin, "metrics");
    assert_int_equal(m->nopts, 1);
    assert_string_equal(m->opts[0].key, "default_dashboard");
    assert_string_equal(m->opts[0].scalar, "default");
    int line = 0, col = 0;
    find_in_file(file, "default_dashboard: default", &line, &col);
    assert_int_equal(m->opts[0].line, line);
    assert_int_equal(m->opts[0].col, col + (int)strlen("default_dashboard: "));

    assert_int_equal(c->nstreams, 5); /* metrics gong slack crm snowflake */
    assert_string_equal(c->streams[0].name, "metrics");
    assert_string_equal(c->streams[0].processor, "metrics");
    assert_int_equal(c->streams[0].queue_size, 10000);
    assert_int_equal(c->streams[0].batch_size, 256);
    sophia_conf_free(c);
    unsetenv("SOPHIA_INGEST_TOKENS");
}

static void test_example_files(void **state)
{
    (void)state;
    glob_t g;
    assert_int_equal(glob(SOPHIA_TEST_SOURCE_DIR "/config/examples/*.yaml", 0,
                          NULL, &g), 0);
    assert_true(g.gl_pathc >= 1);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        sophia_conf *c = sophia_conf_load(g.gl_pathv[i], &diag);
        assert_non_null(c);
        sophia_conf_add_plugin_dir(c, "/opt/sophia-test/plugins");
        sophia_conf_validate(c, &diag);
        if (diag.count)
            print_error("%s:\n", g.gl_pathv[i]);
        assert_count(0);
        assert_true(c->ninstances >= 1);
        sophia_conf_free(c);
    }
    globfree(&g);
}

static void test_missing_file(void **state)
{
    (void)state;
    assert_null(sophia_conf_load("/nonexistent/sophia.yaml", &diag));
    assert_count(1);
    assert_diag(0, "/nonexistent/sophia.yaml:0:0: cannot open: ");
}

/* Every prefix of the default file must load without crashing or leaking;
 * most are broken YAML, which is the point. */
static void test_truncated_default(void **state)
{
    (void)state;
    FILE *f = fopen(SOPHIA_TEST_SOURCE_DIR "/config/sophia.yaml", "r");
    char buf[16384];
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    for (size_t len = 0; len <= n; len += 7) {
        sophia_diag d;
        sophia_diag_init(&d);
        sophia_conf *c = sophia_conf_load_string("p.yaml", buf, len, &d);
        assert_non_null(c);
        sophia_conf_validate(c, &d);
        sophia_conf_free(c);
        sophia_diag_free(&d);
    }
}

/* ---- defaults and values ------------------------------------------------ */

static void assert_defaults(const sophia_conf *c)
{
    assert_string_equal(c->server.listen, "127.0.0.1:8080");
    assert_int_equal(c->server.max_body, 1048576);
    assert_null(c->server.tokens_env);
    assert_null(c->server.tokens);
    assert_null(c->server.share_dir);
    assert_int_equal(c->log_level, SOPHIA_LVL_INFO);
    assert_null(c->redis_url);
    assert_null(c->pg_url);
    assert_int_equal(c->l1.max_entries, 100000);
    assert_int_equal(c->l1.max_bytes, 64u << 20);
    assert_true(c->l1.ttl == 300.0);
    assert_int_equal(c->ws.max_queue, 1024);
    assert_int_equal(c->ws.history, 256);
    assert_null(c->ws.auth_env);
    assert_null(c->ws.auth_secret);
    assert_int_equal(c->nplugin_path, 0);
    assert_int_equal(c->ninstances, 0);
    assert_int_equal(c->nstreams, 0);
}

static void test_defaults(void **state)
{
    (void)state;
    const char *docs[] = {"", "# nothing but a comment\n", "~\n", "---\n",
                          "server:\nlog:\ncache:\n  l1:\nplugins:\n"};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        sophia_conf *c = load(docs[i]);
        assert_count(0);
        assert_defaults(c);
        sophia_conf_validate(c, &diag);
        assert_count(0);
        sophia_conf_free(c);
    }
}

static void test_values(void **state)
{
    (void)state;
    sophia_conf *c = load("server:\n"
                          "  listen: \"[::1]:9090\"\n"
                          "  max_body: 64k\n"
                          "  share_dir: /srv/share\n"
                          "log: {level: debug}\n"
                          "redis: {url: \"redis://r:6379/1\"}\n"
                          "postgres: {url: \"\"}\n"
                          "cache:\n"
                          "  l1: {max_entries: 5, max_bytes: 2MB, ttl: 250ms}\n"
                          "websocket: {max_queue: 7, history: 0}\n");
    assert_count(0);
    assert_string_equal(c->server.listen, "[::1]:9090");
    assert_int_equal(c->server.max_body, 65536);
    assert_string_equal(c->server.share_dir, "/srv/share");
    assert_int_equal(c->log_level, SOPHIA_LVL_DEBUG);
    assert_string_equal(c->redis_url, "redis://r:6379/1");
    assert_null(c->pg_url); /* "" is stored as NULL: disabled */
    assert_int_equal(c->l1.max_entries, 5);
    assert_int_equal(c->l1.max_bytes, 2000000);
    assert_true(c->l1.ttl == 0.25);
    assert_int_equal(c->ws.max_queue, 7);
    assert_int_equal(c->ws.history, 0);
    sophia_conf_free(c);
}

/* Issue #10: plugins.strict_modes / init_timeout, server.rate_limit. */
static void test_safety_options(void **state)
{
    (void)state;
    sophia_conf *c = load("");
    assert_int_equal(c->plugin_strict_modes, 1);
    assert_true(c->plugin_init_timeout == 10.0);
    assert_int_equal(c->server.rate_limit.rate, 0); /* off */
    sophia_conf_free(c);
    c = load("plugins:\n  strict_modes: off\n  init_timeout: 500ms\n"
             "server:\n  rate_limit: {rate: 100, burst: 250}\n");
    assert_count(0);
    assert_int_equal(c->plugin_strict_modes, 0);
    assert_true(c->plugin_init_timeout == 0.5);
    assert_int_equal(c->server.rate_limit.rate, 100);
    assert_int_equal(c->server.rate_limit.burst, 250);
    sophia_conf_free(c);
    expect_one("plugins:\n  strict_modes: maybe\n",
               "t.yaml:2:17: plugins.strict_modes: expected a boolean "
               "(true/false), got 'maybe'");
    expect_one("server:\n  rate_limit: {rate: fast}\n",
               "t.yaml:2:22: server.rate_limit.rate: 'fast' is not an integer");
    expect_one("server:\n  rate_limit: {rate: 1, per: token}\n",
               "t.yaml:2:25: unknown key 'per' in server.rate_limit (allowed: rate, burst)");
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct { const char *in; size_t want; } cases[] = {
        {"1048576", 1048576}, {"64k", 65536}, {"64K", 65536},
        {"512KiB", 524288}, {"2MB", 2000000}, {"1MiB", 1048576},
        {"\"64 MiB\"", 64u << 20}, {"1g", 1u << 30}, {"3kb", 3000},
        {"10B", 10},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char y[128];
        snprintf(y, sizeof(y), "server:\n  max_body: %s\n", cases[i].in);
        sophia_conf *c = load(y);
        assert_count(0);
        assert_int_equal(c->server.max_body, cases[i].want);
        sophia_conf_free(c);
    }
}

/* memory.consolidate.INSTANCE: batch and neighbors, defaults and bounds. */
static void test_consolidate(void **state)
{
    (void)state;
    const char *head = "plugins:\n  path: [/tmp]\n  instances:\n    d: {plugin: decay}\n"
                       "memory:\n  consolidate:\n";
    char y[512];
    snprintf(y, sizeof(y), "%s    d: {every: 1m}\n", head);
    sophia_conf *c = load(y);
    assert_count(0);
    assert_int_equal(c->memory.consolidate[0].batch, 0); /* the default, 1000 */
    assert_int_equal(c->memory.consolidate[0].neighbors,
                     SOPHIA_CONF_CONS_NEIGHBORS_DEFAULT);
    sophia_conf_free(c);
    snprintf(y, sizeof(y), "%s    d: {every: 1m, batch: 50, neighbors: 0}\n", head);
    c = load(y);
    assert_count(0);
    assert_int_equal(c->memory.consolidate[0].batch, 50);
    assert_int_equal(c->memory.consolidate[0].neighbors, 0);
    sophia_conf_free(c);
    /* The bounds are checked with the rest (sophia_conf_validate). */
    const char *bad[][2] = {
        {"batch: 100001", "t.yaml:7:5: memory.consolidate.d.batch: at most 100000"},
        {"neighbors: 65", "t.yaml:7:5: memory.consolidate.d.neighbors: at most 64"},
        {"batch: 0", "t.yaml:7:"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sophia_diag_free(&diag);
        snprintf(y, sizeof(y), "%s    d: {every: 1m, %s}\n", head, bad[i][0]);
        c = load(y);
        sophia_conf_validate(c, &diag);
        assert_count(1);
        assert_diag(0, bad[i][1]);
        sophia_conf_free(c);
    }
}

static void test_durations(void **state)
{
    (void)state;
    static const struct { const char *in; double want; } cases[] = {
        {"300", 300}, {"1.5", 1.5}, {"250ms", 0.25}, {"30s", 30},
        {"5m", 300}, {"1h", 3600}, {"\"2d\"", 172800},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char y[128];
        snprintf(y, sizeof(y), "cache:\n  l1:\n    ttl: %s\n", cases[i].in);
        sophia_conf *c = load(y);
        assert_count(0);
        assert_true(c->l1.ttl == cases[i].want);
        sophia_conf_free(c);
    }
    expect_one("cache:\n  l1:\n    ttl: 5 minutes\n",
               "t.yaml:3:10: cache.l1.ttl: '5 minutes' is not a duration");
    expect_one("cache:\n  l1:\n    ttl: -1\n",
               "t.yaml:3:10: cache.l1.ttl: '-1' is not a duration");
    expect_one("cache:\n  l1:\n    ttl: 0ms\n",
               "t.yaml:3:10: cache.l1.ttl: must be > 0");
    expect_one("cache:\n  l1:\n    ttl: 1.2.3\n",
               "t.yaml:3:10: cache.l1.ttl: '1.2.3' is not a duration");
    /* Every cache ttl has the same bound as a PUT's: 10 years. */
    expect_clean("cache:\n  l3:\n    ttl: 315360000\n");
    expect_one("cache:\n  l1:\n    ttl: 3651d\n",
               "t.yaml:3:10: cache.l1.ttl: '3651d' is longer than the "
               "longest cache TTL, 315360000 s (10 years)");
    expect_one("cache:\n  l2:\n    ttl: 1e16\n",
               "t.yaml:3:10: cache.l2.ttl: '1e16' is not a duration");
    expect_one("cache:\n  l3:\n    ttl: 99999999999999999999\n",
               "t.yaml:3:10: cache.l3.ttl: '99999999999999999999' is longer");
}

/* ---- one test per error class ------------------------------------------ */

static void test_unknown_key(void **state)
{
    (void)state;
    expect_one("server:\n  listen: \"127.0.0.1:1\"\n  bogus: 1\n",
               "t.yaml:3:3: unknown key 'bogus' in server (allowed: listen, "
               "max_body, max_body_total, max_connections, hosts, origins, "
               "tokens, share_dir, rate_limit, tls)");
    expect_one("\nlisten: 1\n",
               "t.yaml:2:1: unknown key 'listen' at the top level "
               ALLOWED_TOP);
    expect_one("cache:\n  l1:\n    max_entries: 3\n    maxbytes: 4\n",
               "t.yaml:4:5: unknown key 'maxbytes' in cache.l1 (allowed: "
               "max_entries, max_bytes, ttl)");
    expect_one("websocket:\n  auth: {secret_env: X, secret: y}\n",
               "t.yaml:2:25: unknown key 'secret' in websocket.auth "
               "(allowed: secret_env)");
    expect_one("plugins:\n  path: [p]\n  instances:\n    m:\n"
               "      plugin: metrics\n      opts: {}\n",
               "t.yaml:6:7: unknown key 'opts' in plugin instance 'm' "
               "(allowed: plugin, options)");
    expect_one("streams:\n  s:\n    processor: p\n    queue: 5\n",
               "t.yaml:4:5: unknown key 'queue' in stream 's' (allowed: "
               "processor, processors, outputs, queue_size, batch_size, filter, dedup_key, "
               "dedup_window, max_attempts, retry_base, retry_cap, redis, statsd, "
               "durable, retention)");
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect_one("server: 5\n",
               "t.yaml:1:9: server: expected a mapping, got a scalar");
    expect_one("server:\n  listen: [a]\n",
               "t.yaml:2:11: server.listen: expected a string, got a "
               "sequence");
    expect_one("log:\n  - level\n",
               "t.yaml:2:3: log: expected a mapping, got a sequence");
    expect_one("plugins:\n  path: build\n",
               "t.yaml:2:9: plugins.path: expected a sequence of "
               "directories, got a scalar");
    expect_one("plugins:\n  path: [{a: 1}]\n",
               "t.yaml:2:10: plugins.path: expected a directory, got a "
               "mapping");
    expect_one("cache:\n  l1:\n    max_bytes: {a: 1}\n",
               "t.yaml:3:16: cache.l1.max_bytes: expected a size");
    expect_one("streams:\n  s: metrics\n",
               "t.yaml:2:6: streams.s: expected a mapping, got a scalar");
    expect_one("server:\n  tokens: SOPHIA_INGEST_TOKENS\n",
               "t.yaml:2:11: server.tokens: expected a mapping, got a scalar");
    expect_one("server:\n  tokens:\n    secret_env:\n",
               "t.yaml:3:16: server.tokens.secret_env: expected an "
               "environment variable name, got nothing (null)");
    expect_one("log: {level: loud}\n",
               "t.yaml:1:14: log.level: unknown level 'loud' (allowed: "
               "debug, info, warn, error)");
    expect_one("just a string\n",
               "t.yaml:1:1: the top level must be a mapping");
    expect_one("? [a]\n: 1\n",
               "t.yaml:1:3: the top level: mapping keys must be scalars, "
               "got a sequence");
    expect_one("log:\n  level: \"de\\0bug\"\n",
               "t.yaml:2:10: NUL characters are not allowed in values");
}

static void test_bad_integer(void **state)
{
    (void)state;
    expect_one("websocket:\n  max_queue: 12x\n",
               "t.yaml:2:14: websocket.max_queue: '12x' is not an integer");
    expect_one("websocket:\n  max_queue: 0x10\n",
               "t.yaml:2:14: websocket.max_queue: '0x10' is not an integer");
    expect_one("websocket:\n  max_queue: \" 5\"\n",
               "t.yaml:2:14: websocket.max_queue: ' 5' is not an integer");
    expect_one("websocket:\n  max_queue: 99999999999999999999\n",
               "t.yaml:2:14: websocket.max_queue: '99999999999999999999' is "
               "out of range");
    expect_one("websocket:\n  max_queue: 0\n",
               "t.yaml:2:14: websocket.max_queue: 0 is out of range (must be "
               "> 0)");
    expect_one("websocket:\n  history: -1\n",
               "t.yaml:2:12: websocket.history: -1 is out of range (must be "
               ">= 0)");
    expect_one("streams:\n  s:\n    processor: p\n    batch_size: 1.5\n",
               "t.yaml:4:17: streams.s.batch_size: '1.5' is not an integer");
}

static void test_bad_size(void **state)
{
    (void)state;
    expect_one("server:\n  max_body: 12QB\n",
               "t.yaml:2:13: server.max_body: '12QB' is not a size");
    expect_one("server:\n  max_body: 1.5MiB\n",
               "t.yaml:2:13: server.max_body: '1.5MiB' is not a size");
    expect_one("server:\n  max_body: MiB\n",
               "t.yaml:2:13: server.max_body: 'MiB' is not a size");
    expect_one("server:\n  max_body: 0k\n",
               "t.yaml:2:13: server.max_body: must be > 0");
    expect_one("server:\n  max_body: 99999999999TiB\n",
               "t.yaml:2:13: server.max_body: '99999999999TiB' is too large");
    expect_one("server:\n  max_body: 99999999999999999999999\n",
               "t.yaml:2:13: server.max_body: '99999999999999999999999' is "
               "too large");
}

static void test_bad_listen(void **state)
{
    (void)state;
    const char *bad[] = {"localhost", "127.0.0.1:0", "127.0.0.1:65536",
                         ":8080", "::1:8080", "[::1]8080", "h:80x", "h: 80",
                         "[::1]:", "a b:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char y[128], want[160];
        snprintf(y, sizeof(y), "server:\n  listen: \"%s\"\n", bad[i]);
        snprintf(want, sizeof(want),
                 "t.yaml:2:11: server.listen: '%s' is not HOST:PORT", bad[i]);
        sophia_diag_free(&diag);
        sophia_conf *c = load(y);
        assert_count(1);
        assert_diag(0, want);
        /* the bad value is refused, the default stays */
        assert_string_equal(c->server.listen, "127.0.0.1:8080");
        sophia_conf_free(c);
    }
}

static void test_split_listen(void **state)
{
    (void)state;
    char *host = NULL;
    int port = 0;
    assert_int_equal(sophia_conf_split_listen("127.0.0.1:8080", &host, &port),
                     0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    free(host);
    assert_int_equal(sophia_conf_split_listen("[::1]:65535", &host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    free(host);
    assert_int_equal(sophia_conf_split_listen("localhost:1", &host, &port), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 1);
    free(host);
    assert_int_equal(sophia_conf_split_listen("localhost", &host, &port), -1);
    assert_null(host);
    assert_int_equal(sophia_conf_split_listen("[::1:80", &host, &port), -1);
    assert_int_equal(sophia_conf_split_listen("[]:80", &host, &port), -1);
    assert_int_equal(sophia_conf_split_listen("h:-1", &host, &port), -1);
    assert_int_equal(sophia_conf_split_listen(NULL, &host, &port), -1);
    assert_null(host);
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_one("server:\n  max_body: 1\n  listen: \"h:1\"\n  max_body: 2\n",
               "t.yaml:4:3: server: duplicate key 'max_body' (first at line 2 "
               "column 3)");
    expect_one("log: {level: info}\nlog: {level: warn}\n",
               "t.yaml:2:1: the top level: duplicate key 'log' (first at "
               "line 1 column 1)");
    /* options and instance names are checked too */
    sophia_diag_free(&diag);
    sophia_conf *c = load("plugins:\n  path: [p]\n  instances:\n"
                          "    m: {plugin: a, options: {x: 1, x: 2}}\n"
                          "    m: {plugin: b}\n");
    assert_count(2);
    assert_diag(0, "t.yaml:4:36: plugins.instances.m.options: duplicate key "
                   "'x' (first at line 4 column 30)");
    assert_diag(1, "t.yaml:5:5: plugins.instances: duplicate key 'm' (first "
                   "at line 4 column 5)");
    assert_int_equal(c->ninstances, 1);
    assert_string_equal(c->instances[0].plugin, "a");
    assert_int_equal(c->instances[0].nopts, 1);
    sophia_conf_free(c);
}

static void test_syntax_error(void **state)
{
    (void)state;
    /* unclosed bracket: reported where the parser gave up, with context */
    expect_one("server:\n  listen: x\nplugins:\n  path: [a, b\n",
               "t.yaml:5:1: YAML syntax error: did not find expected ',' or "
               "']' (while parsing a flow sequence started at line 4 "
               "column 9)");
    /* bad indentation */
    expect_one("server:\n  listen: \"h:1\"\n bad: 1\n",
               "t.yaml:3:2: YAML syntax error: did not find expected key "
               "(while parsing a block mapping started at line 1 column 1)");
    expect_one("server:\n  listen: \"h:1\"\n    max_body: 3\n",
               "t.yaml:3:5: YAML syntax error: did not find expected key "
               "(while parsing a block mapping started at line 2 column 3)");
    expect_one("server:\n  listen: a: b\n",
               "t.yaml:2:12: YAML syntax error: mapping values are not "
               "allowed in this context");
    expect_one("key: \"unterminated\n",
               "t.yaml:2:1: YAML syntax error: found unexpected end of "
               "stream (while scanning a quoted scalar started at line 1 "
               "column 6)");
    expect_one("\t- a\n",
               "t.yaml:1:1: YAML syntax error: found character that cannot "
               "start any token");
    /* invalid UTF-8: a reader error, positioned from its byte offset */
    expect_one("log:\n  level: \xff\n",
               "t.yaml:2:10: YAML syntax error: invalid leading UTF-8 octet");
    expect_one("log: {level: info}\n---\nlog: {level: warn}\n",
               "t.yaml:2:1: only one YAML document is allowed");
    /* a syntax error stops everything: no schema errors, defaults kept */
    sophia_diag_free(&diag);
    sophia_conf *c = load("bogus: 1\nserver:\n  max_body: 5\n  x: [\n");
    assert_count(1);
    assert_diag(0, "t.yaml:5:1: YAML syntax error: ");
    assert_defaults(c);
    sophia_conf_free(c);
}

static void test_alias_refused(void **state)
{
    (void)state;
    sophia_conf *c = load("server: &s\n  listen: \"127.0.0.1:1\"\n"
                          "log: *s\n");
    assert_count(2);
    assert_diag(0, "t.yaml:1:9: anchor '&s' refused: aliases are not "
                   "allowed");
    assert_diag(1, "t.yaml:3:6: alias '*s' refused: aliases are not "
                   "allowed");
    /* the anchored section itself still counts; the alias adds no noise */
    assert_string_equal(c->server.listen, "127.0.0.1:1");
    sophia_conf_free(c);

    /* billion laughs: every anchor and alias refused, nothing expanded */
    sophia_diag_free(&diag);
    c = load("a: &a [\"lol\", \"lol\"]\nb: &b [*a, *a]\nc: [*b, *b]\n");
    assert_count(2 + 4 + 3); /* anchors, aliases, unknown keys a b c */
    assert_diag(0, "t.yaml:1:4: anchor '&a' refused: aliases are not allowed");
    assert_diag(1, "t.yaml:2:4: anchor '&b' refused: aliases are not allowed");
    assert_diag(2, "t.yaml:2:8: alias '*a' refused: aliases are not allowed");
    assert_diag(3, "t.yaml:2:12: alias '*a' refused: aliases are not allowed");
    sophia_conf_free(c);
    sophia_diag_free(&diag);
    c = load("plugins:\n  instances:\n    m:\n      plugin: p\n"
             "      options: {x: *lol}\n");
    assert_count(1);
    assert_diag(0, "t.yaml:5:20: alias '*lol' refused: aliases are not "
                   "allowed");
    assert_int_equal(c->instances[0].nopts, 0);
    sophia_conf_free(c);
}

static char *nested(const char *prefix, int depth)
{
    size_t n = strlen(prefix);
    char *s = malloc(n + 2 * (size_t)depth + 2);
    assert_non_null(s);
    memcpy(s, prefix, n);
    memset(s + n, '[', (size_t)depth);
    memset(s + n + depth, ']', (size_t)depth);
    strcpy(s + n + 2 * depth, "\n");
    return s;
}

static void test_nesting_depth(void **state)
{
    (void)state;
    /* the root mapping is level 1, so 63 brackets reach exactly 64: only the
     * unknown key is wrong */
    char *ok = nested("x: ", 63);
    expect_one(ok, "t.yaml:1:1: unknown key 'x' at the top level");
    free(ok);

    /* level 65 is the 64th bracket, at column 3 + 64 */
    char *deep = nested("x: ", 64);
    expect_one(deep, "t.yaml:1:67: nesting is deeper than 64 levels");
    free(deep);

    /* very deep input stops at once instead of walking all of it */
    char *huge = nested("plugins: ", 200000);
    expect_one(huge, "t.yaml:1:73: nesting is deeper than 64 levels");
    free(huge);
}

static void test_stream_missing_instance(void **state)
{
    (void)state;
    sophia_conf *c = load("plugins:\n"
                          "  path: [p]\n"
                          "  instances:\n"
                          "    m:\n"
                          "      plugin: metrics\n"
                          "streams:\n"
                          "  good:\n"
                          "    processor: m\n"
                          "  bad:\n"
                          "    processor: nope\n");
    assert_count(0);
    sophia_conf_validate(c, &diag);
    assert_count(1);
    assert_diag(0, "t.yaml:9:3: streams.bad: processor 'nope' is not a plugin "
                   "instance declared under plugins.instances");
    sophia_conf_free(c);
}

static void test_required_keys(void **state)
{
    (void)state;
    sophia_conf *c = load("plugins:\n  path: [p]\n  instances:\n"
                          "    m:\n      options: {a: 1}\n"
                          "streams:\n  s:\n    queue_size: 5\n");
    assert_count(2);
    assert_diag(0, "t.yaml:4:5: plugins.instances.m: missing required key "
                   "'plugin'");
    assert_diag(1, "t.yaml:7:3: streams.s: missing required key 'processor'");
    assert_int_equal(c->streams[0].queue_size, 5);
    assert_int_equal(c->streams[0].batch_size, 256);
    sophia_conf_free(c);

    expect_one("plugins:\n  instances:\n    \"a b\": {plugin: p}\n",
               "t.yaml:3:5: plugins.instances: instance name 'a b' may only "
               "contain letters, digits");
    expect_one("plugins:\n  instances:\n    m: {plugin: \"\"}\n",
               "t.yaml:3:17: plugins.instances.m.plugin: must not be empty");
}

/* streams.<name>.processors: names and filter links in order, the first
 * processor as `processor`; each wrong shape said where it is. */
static void test_stream_chain(void **state)
{
    (void)state;
    sophia_diag_free(&diag);
    sophia_diag_init(&diag);
    sophia_conf *c = load("plugins:\n  path: [p]\n  instances:\n    a: {plugin: p}\n"
                          "    b: {plugin: p}\n"
                          "streams:\n  s:\n    processors:\n"
                          "      - {filter: [{path: kind, equals: x}]}\n"
                          "      - a\n      - {filter: [{path: n, gt: 2}]}\n"
                          "      - b\n  t:\n    processor: b\n");
    assert_count(0);
    const sophia_conf_stream *s = &c->streams[0];
    assert_int_equal(s->nchain, 4);
    assert_null(s->chain[0].processor);
    assert_int_equal(s->chain[0].nfilter, 1);
    assert_string_equal(s->chain[1].processor, "a");
    assert_int_equal(s->chain[2].filter[0].op, SOPHIA_PRED_GT);
    assert_string_equal(s->chain[3].processor, "b");
    assert_int_equal(s->chain[3].line, 12);
    assert_string_equal(s->processor, "a");
    assert_int_equal(c->streams[1].nchain, 1);
    assert_string_equal(c->streams[1].chain[0].processor, "b");
    sophia_conf_validate(c, &diag);
    assert_count(0);
    sophia_conf_free(c);

    c = load("plugins:\n  path: [p]\n  instances:\n    a: {plugin: p}\n"
             "streams:\n  s:\n    processors: [a, ghost]\n");
    sophia_conf_validate(c, &diag);
    assert_count(1);
    assert_diag(0, "t.yaml:7:21: streams.s: processor 'ghost' is not a plugin "
                   "instance declared under plugins.instances");
    sophia_conf_free(c);

    expect_one("streams:\n  s:\n    processor: a\n    processors: [a]\n",
               "t.yaml:2:3: streams.s: give 'processor' or 'processors', not "
               "both");
    expect_one("streams:\n  s:\n    processors: []\n",
               "t.yaml:3:17: streams.s.processors: expected a sequence of "
               "processor instance names (and {filter: ...} links), got an "
               "empty one");
    expect_one("streams:\n  s:\n    processors: [{filter: []}]\n",
               "t.yaml:2:3: streams.s.processors: a chain needs at least one "
               "processor, not only filters");
    expect_one("streams:\n  s:\n    processors: [a, {map: 1}]\n",
               "t.yaml:3:21: streams.s.processors: each link is a processor "
               "instance name or {filter: [predicates]}, got a mapping");
    /* a repetition of a repetition: regcomp would copy the tree for each
     * (fuzz_config took it past 2 GB); refused before it is compiled */
    expect_one("streams:\n  s:\n    processor: a\n    filter: [{path: m, "
               "matches: 'P++++++++++++++++++++++++++++++'}]\n",
               "t.yaml:4:33: streams.s.filter: regular expression "
               "'P++++++++++++++++++++++++++++++' is too large: its "
               "repetitions expand past 20000 nodes");
}

/* correlators.<instance>: streams with positions, snapshot settings; a
 * nested option value kept as JSON text (for an option of type json). */
static void test_correlators(void **state)
{
    (void)state;
    sophia_diag_free(&diag);
    sophia_conf *c = load(
        "plugins:\n  path: [/p]\n  instances:\n    k:\n      plugin: patterns\n"
        "      options:\n        rules: [{name: r, window: 1h, n: 3, q: '3', "
        "t: true, steps: [{stream: s, key: a.b}]}]\n"
        "streams:\n  s: {processor: k}\n"
        "correlators:\n  k: {streams: [s], snapshot: false, "
        "snapshot_every: 5s}\n");
    assert_count(0);
    assert_int_equal(c->ncorrelators, 1);
    assert_string_equal(c->correlators[0].instance, "k");
    assert_int_equal(c->correlators[0].nstreams, 1);
    assert_int_equal(c->correlators[0].streams[0].line, 11);
    assert_true(c->correlators[0].snapshot_off);
    assert_true(c->correlators[0].snapshot_every == 5);
    const sophia_conf_opt *o = &c->instances[0].opts[0];
    assert_true(o->nested);
    assert_null(o->scalar);
    assert_string_equal(o->json, "[{\"name\":\"r\",\"window\":\"1h\",\"n\":3,"
                                 "\"q\":\"3\",\"t\":true,\"steps\":"
                                 "[{\"stream\":\"s\",\"key\":\"a.b\"}]}]");
    sophia_conf_validate(c, &diag);
    assert_count(0);
    sophia_conf_free(c);

    c = load("plugins:\n  path: [/p]\n  instances:\n    p: {plugin: p}\n"
             "streams:\n  s: {processor: p}\n"
             "correlators:\n  ghost: {streams: [s, nope]}\n");
    sophia_conf_validate(c, &diag);
    assert_count(2);
    assert_diag(0, "t.yaml:8:3: correlators.ghost: not a plugin instance");
    assert_diag(1, "t.yaml:8:24: correlators.ghost.streams: 'nope' is not a "
                   "stream declared under streams");
    sophia_conf_free(c);
    expect_one("correlators:\n  k: {snapshot: true}\n",
               "t.yaml:2:3: correlators.k: missing required key 'streams'");
}

/* streams.<name>.retention: count and age parse; a stream that cannot be
 * durable (no Redis) is told it keeps no history. */
static void test_stream_retention(void **state)
{
    (void)state;
    sophia_diag_free(&diag);
    sophia_conf *c = load("streams:\n  s:\n    processor: p\n"
                          "    retention: {count: 500, age: 24h}\n");
    assert_count(0);
    assert_int_equal(c->streams[0].retention.count, 500);
    assert_true(c->streams[0].retention.age == 86400);
    sophia_conf_validate(c, &diag);
    int found = 0;
    for (size_t i = 0; i < diag.count; i++)
        found |= strstr(diag.lines[i], "streams.s.retention: only a durable "
                                       "stream keeps history") != NULL;
    assert_true(found);
    sophia_conf_free(c);
    sophia_diag_free(&diag);
    expect_one("streams:\n  s:\n    processor: p\n    retention: {count: 0}\n",
               "t.yaml:4:24: streams.s.retention.count: 0 is out of range");
}

static void test_validate(void **state)
{
    (void)state;
    /* instances but nowhere to load them from */
    sophia_conf *c = load("plugins:\n  instances:\n    m: {plugin: x}\n");
    assert_count(0);
    sophia_conf_validate(c, &diag);
    assert_count(1);
    assert_diag(0, "t.yaml:3:5: plugins.path is empty, so plugin instance 'm' "
                   "cannot be loaded");
    sophia_conf_free(c);

    /* a bad listen from the command line has no position in the file */
    sophia_diag_free(&diag);
    c = load("");
    sophia_conf_apply_env(c, "nonsense");
    sophia_conf_validate(c, &diag);
    assert_count(1);
    assert_diag(0, "t.yaml:0:0: listen address 'nonsense' (from "
                   "SOPHIA_LISTEN or --listen) is not HOST:PORT");
    sophia_conf_free(c);
}

static void test_multiple_errors(void **state)
{
    (void)state;
    sophia_conf *c = load("server:\n"                  /* 1 */
                          "  bogus: 1\n"               /* 2 */
                          "  listen: nowhere\n"        /* 3 */
                          "  max_body: lots\n"         /* 4 */
                          "log:\n"                     /* 5 */
                          "  level: loud\n"            /* 6 */
                          "cache:\n"                   /* 7 */
                          "  l1:\n"                    /* 8 */
                          "    max_entries: -3\n"      /* 9 */
                          "websocket: 3\n"             /* 10 */
                          "streams:\n"                 /* 11 */
                          "  s: {processor: p, batch_size: x}\n" /* 12 */
                          "extra: {}\n");              /* 13 */
    assert_count(8);
    assert_diag(0, "t.yaml:2:3: unknown key 'bogus' in server");
    assert_diag(1, "t.yaml:3:11: server.listen: 'nowhere' is not HOST:PORT");
    assert_diag(2, "t.yaml:4:13: server.max_body: 'lots' is not a size");
    assert_diag(3, "t.yaml:6:10: log.level: unknown level 'loud'");
    assert_diag(4, "t.yaml:9:18: cache.l1.max_entries: -3 is out of range");
    assert_diag(5, "t.yaml:10:12: websocket: expected a mapping");
    assert_diag(6, "t.yaml:12:33: streams.s.batch_size: 'x' is not an "
                   "integer");
    assert_diag(7, "t.yaml:13:1: unknown key 'extra' at the top level");
    /* what was valid is kept; what was not keeps its default */
    assert_int_equal(c->server.max_body, 1048576);
    assert_string_equal(c->streams[0].processor, "p");
    sophia_conf_free(c);
}

/* ---- environment --------------------------------------------------------- */

static void test_env_overrides(void **state)
{
    (void)state;
    const char *y = "server: {listen: \"127.0.0.1:1\"}\n"
                    "redis: {url: \"redis://file:6379/0\"}\n"
                    "postgres: {url: \"postgresql://file/db\"}\n";
    /* unset: the file's values stay */
    sophia_conf *c = load(y);
    sophia_conf_apply_env(c, NULL);
    assert_string_equal(c->server.listen, "127.0.0.1:1");
    assert_string_equal(c->redis_url, "redis://file:6379/0");
    assert_string_equal(c->pg_url, "postgresql://file/db");
    sophia_conf_free(c);

    /* set: the environment wins */
    setenv("SOPHIA_REDIS_URL", "redis://env:6380/2", 1);
    setenv("SOPHIA_PG_URL", "host=env dbname=x", 1);
    setenv("SOPHIA_LISTEN", "0.0.0.0:9000", 1);
    c = load(y);
    sophia_conf_apply_env(c, NULL);
    assert_string_equal(c->server.listen, "0.0.0.0:9000");
    assert_string_equal(c->redis_url, "redis://env:6380/2");
    assert_string_equal(c->pg_url, "host=env dbname=x");
    /* --listen beats SOPHIA_LISTEN */
    sophia_conf_apply_env(c, "[::1]:7000");
    assert_string_equal(c->server.listen, "[::1]:7000");
    sophia_conf_validate(c, &diag);
    assert_count(0);
    sophia_conf_free(c);

    /* set but empty: L2/L3 disabled (NULL); an empty SOPHIA_LISTEN is
     * ignored */
    setenv("SOPHIA_REDIS_URL", "", 1);
    setenv("SOPHIA_PG_URL", "", 1);
    setenv("SOPHIA_LISTEN", "", 1);
    c = load(y);
    sophia_conf_apply_env(c, NULL);
    assert_null(c->redis_url);
    assert_null(c->pg_url);
    assert_string_equal(c->server.listen, "127.0.0.1:1");
    sophia_conf_free(c);

    unsetenv("SOPHIA_REDIS_URL");
    unsetenv("SOPHIA_PG_URL");
    unsetenv("SOPHIA_LISTEN");
    sophia_conf_apply_env(NULL, "x"); /* harmless */
}

/* cluster.enabled: unset (-1: on whenever there is a Redis URL), a
 * boolean, "" in SOPHIA_CLUSTER_REDIS_URL as false, and true with no
 * Redis at all refused. */
static void test_cluster_enabled(void **state)
{
    (void)state;
    unsetenv("SOPHIA_CLUSTER_REDIS_URL");
    sophia_conf *c = load("redis: {url: \"redis://h:6379/0\"}\n");
    sophia_conf_apply_env(c, NULL);
    assert_int_equal(c->cluster.enabled, -1);
    assert_null(c->cluster.redis);
    sophia_conf_free(c);
    c = load("cluster:\n  enabled: false\n");
    assert_count(0);
    assert_int_equal(c->cluster.enabled, 0);
    sophia_conf_free(c);
    expect_one("cluster:\n  enabled: sometimes\n",
               "t.yaml:2:12: cluster.enabled: expected a boolean "
               "(true/false), got 'sometimes'");

    setenv("SOPHIA_CLUSTER_REDIS_URL", "", 1);
    c = load("redis: {url: \"redis://h:6379/0\"}\ncluster: {enabled: true}\n");
    sophia_conf_apply_env(c, NULL);
    assert_int_equal(c->cluster.enabled, 0);
    sophia_conf_free(c);
    unsetenv("SOPHIA_CLUSTER_REDIS_URL");

    c = load("cluster: {enabled: yes}\n");
    assert_int_equal(c->cluster.enabled, 1);
    sophia_conf_validate(c, &diag);
    assert_count(1);
    assert_diag(0, "t.yaml:0:0: cluster.enabled is true but there is no "
                   "Redis: set cluster.redis or redis.url (or SOPHIA_REDIS_URL)");
    sophia_conf_free(c);
}

static void test_secret_env(void **state)
{
    (void)state;
    const char *y = "server: {tokens: {secret_env: SOPHIA_TEST_TOKENS}}\n"
                    "websocket: {auth: {secret_env: SOPHIA_TEST_JWT}}\n";
    setenv("SOPHIA_TEST_TOKENS", "a,b", 1);
    setenv("SOPHIA_TEST_JWT", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t", 1);
    sophia_conf *c = load(y);
    assert_count(0);
    assert_string_equal(c->server.tokens_env, "SOPHIA_TEST_TOKENS");
    assert_string_equal(c->server.tokens, "a,b");
    assert_string_equal(c->ws.auth_env, "SOPHIA_TEST_JWT");
    assert_string_equal(c->ws.auth_secret, "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t");
    sophia_conf_free(c);

    /* a JWT secret short enough to guess is refused, naming the variable */
    setenv("SOPHIA_TEST_JWT", "s3cr3t", 1);
    expect_one("websocket: {auth: {secret_env: SOPHIA_TEST_JWT}}\n",
               "t.yaml:1:32: websocket.auth.secret_env: the WebSocket JWT "
               "secret in SOPHIA_TEST_JWT is 6 bytes; HS256 needs at least 32 "
               "(e.g. openssl rand -base64 48)");

    unsetenv("SOPHIA_TEST_TOKENS");
    setenv("SOPHIA_TEST_JWT", "", 1);
    c = load(y);
    assert_count(0);
    assert_string_equal(c->server.tokens_env, "SOPHIA_TEST_TOKENS");
    assert_null(c->server.tokens);
    assert_null(c->ws.auth_secret); /* empty counts as unset */
    sophia_conf_free(c);
    unsetenv("SOPHIA_TEST_JWT");

    /* the file names the variable; a secret pasted in is refused */
    expect_one("server:\n  tokens:\n    secret_env: \"tok-a,tok-b\"\n",
               "t.yaml:3:17: server.tokens.secret_env: 'tok-a,tok-b' is not "
               "an environment variable name");
}

/* ---- plugins ------------------------------------------------------------ */

static void test_relative_paths_lexical(void **state)
{
    (void)state;
    /* a directory that does not exist: resolved lexically against the
     * directory of `name`, never the cwd */
    const char *y = "server: {share_dir: ../share}\n"
                    "plugins:\n  path: [../plugins, ./a/../b, /abs//dir/, "
                    "rel, \"..\"]\n";
    sophia_conf *c = sophia_conf_load_string(
        "/nonexistent-sophia-test/conf/t.yaml", y, strlen(y), &diag);
    assert_count(0);
    assert_int_equal(c->nplugin_path, 5);
    assert_string_equal(c->plugin_path[0], "/nonexistent-sophia-test/plugins");
    assert_string_equal(c->plugin_path[1], "/nonexistent-sophia-test/conf/b");
    assert_string_equal(c->plugin_path[2], "/abs/dir");
    assert_string_equal(c->plugin_path[3], "/nonexistent-sophia-test/conf/rel");
    assert_string_equal(c->plugin_path[4], "/nonexistent-sophia-test");
    assert_string_equal(c->server.share_dir, "/nonexistent-sophia-test/share");
    sophia_conf_free(c);

    expect_one("plugins:\n  path: [a, \"\"]\n",
               "t.yaml:2:13: plugins.path: a directory must not be empty");
}

/* The bundled plugins' directory comes after plugins.path, once. */
static void test_add_plugin_dir(void **state)
{
    (void)state;
    const char *y = "plugins:\n  path: [/site/plugins, /usr/lib/sophia/plugins]\n";
    sophia_conf *c = sophia_conf_load_string("/etc/sophia/t.yaml", y,
                                             strlen(y), &diag);
    assert_count(0);
    sophia_conf_add_plugin_dir(c, "/opt/sophia/lib/plugins");
    assert_int_equal(c->nplugin_path, 3);
    assert_string_equal(c->plugin_path[0], "/site/plugins");
    assert_string_equal(c->plugin_path[1], "/usr/lib/sophia/plugins");
    assert_string_equal(c->plugin_path[2], "/opt/sophia/lib/plugins");
    /* already listed by the file: searched where the file put it */
    sophia_conf_add_plugin_dir(c, "/usr/lib/sophia/plugins");
    assert_int_equal(c->nplugin_path, 3);
    sophia_conf_free(c);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_relative_paths_file(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/sophia-test-config-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char root[PATH_MAX], dir[PATH_MAX + 8], plugs[PATH_MAX + 16];
    char file[PATH_MAX + 32], cwd[PATH_MAX];
    assert_non_null(realpath(tmpl, root));
    snprintf(dir, sizeof(dir), "%s/conf", root);
    snprintf(plugs, sizeof(plugs), "%s/plugins", root);
    snprintf(file, sizeof(file), "%s/sophia.yaml", dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(plugs, 0700), 0);
    write_file(file, "plugins:\n  path: [../plugins, ../missing]\n");
    assert_non_null(getcwd(cwd, sizeof(cwd)));

    /* the cwd does not matter: absolute file name from "/" ... */
    assert_int_equal(chdir("/"), 0);
    sophia_conf *c = sophia_conf_load(file, &diag);
    assert_count(0);
    assert_int_equal(c->nplugin_path, 2);
    char miss[PATH_MAX + 16];
    snprintf(miss, sizeof(miss), "%s/missing", root);
    assert_string_equal(c->plugin_path[0], plugs);
    assert_string_equal(c->plugin_path[1], miss);
    sophia_conf_free(c);

    /* ... or a relative file name from elsewhere */
    assert_int_equal(chdir(root), 0);
    c = sophia_conf_load("conf/sophia.yaml", &diag);
    assert_count(0);
    assert_string_equal(c->plugin_path[0], plugs);
    assert_string_equal(c->plugin_path[1], miss);
    sophia_conf_free(c);

    assert_int_equal(chdir(cwd), 0);
    unlink(file);
    rmdir(dir);
    rmdir(plugs);
    rmdir(root);
}

/* The http layer's check, registered the way sophiad's main.c does. */
static int http_tls_check(void *arg, const char *cert, const char *key,
                          char *why, size_t n)
{
    (void)arg;
    return (int)sophia_tls_check_files(cert, key, why, n);
}

/* server.tls: all keys required, paths against the file's directory,
 * files loaded at once so a bad one is an error at its key. (A key that
 * does not match its certificate: integration.tls, with real ones.) */
static void test_server_tls(void **state)
{
    (void)state;
    load_opts = (sophia_conf_load_opts){.tls_check = http_tls_check};
    expect_clean("server:\n  tls:\n");
    sophia_diag_free(&diag);
    const char *y = "server:\n  tls:\n    listen: \"127.0.0.1:8443\"\n"
                    "    cert: tls/c.pem\n    key: /k.pem\n";
    sophia_conf *c = sophia_conf_load_string_with(
        "/nonexistent-sophia-test/conf/t.yaml", y, strlen(y), &load_opts, &diag);
    assert_count(1);
    assert_diag(0, "/nonexistent-sophia-test/conf/t.yaml:4:11: server.tls.cert: "
                   "cannot read certificate /nonexistent-sophia-test/conf/tls/c.pem: "
                   "No such file or directory");
    assert_string_equal(c->server.tls.cert, "/nonexistent-sophia-test/conf/tls/c.pem");
    assert_string_equal(c->server.tls.listen, "127.0.0.1:8443");
    sophia_conf_free(c);
    sophia_diag_free(&diag);

    c = load("server:\n  tls: {listen: \"127.0.0.1:8443\"}\n");
    assert_count(2);
    assert_diag(0, "t.yaml:2:8: server.tls: missing required key 'cert'");
    assert_diag(1, "t.yaml:2:8: server.tls: missing required key 'key'");
    sophia_conf_free(c);
    /* /dev/zero would keep OpenSSL's PEM reader busy forever */
    expect_one("server:\n  tls: {listen: \"127.0.0.1:1\", cert: /dev/zero, key: /dev/zero}\n",
               "t.yaml:2:38: server.tls.cert: certificate /dev/zero is not a regular file");
    sophia_diag_free(&diag);
    c = load("server:\n  tls: {listen: \"127.0.0.1:1\", cert: /a, key: /b, ca: c}\n");
    assert_count(2);
    assert_diag(0, "t.yaml:2:51: unknown key 'ca' in server.tls (allowed: listen, cert, key)");
    assert_diag(1, "t.yaml:2:38: server.tls.cert: cannot read certificate /a:");
    sophia_conf_free(c);

    char tmpl[] = "/tmp/sophia-test-tls-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char file[PATH_MAX], junk[PATH_MAX + 16];
    snprintf(file, sizeof(file), "%s/t.yaml", tmpl);
    snprintf(junk, sizeof(junk), "%s/junk.pem", tmpl);
    write_file(junk, "not a certificate\n");
    write_file(file, "server:\n  tls: {listen: \"127.0.0.1:1\", cert: junk.pem, key: junk.pem}\n");
    sophia_diag_free(&diag);
    c = sophia_conf_load_with(file, &load_opts, &diag);
    assert_count(1);
    char want[PATH_MAX * 3 + 128];
    snprintf(want, sizeof(want), "%s:2:38: server.tls.cert: %s is not a PEM "
             "certificate (chain): no start line", file, junk);
    assert_diag(0, want);
    sophia_conf_free(c);
    unlink(junk);
    unlink(file);
    rmdir(tmpl);
    load_opts = (sophia_conf_load_opts){0};
}

typedef struct tls_seen {
    int calls;
    char cert[64], key[64];
} tls_seen;

static int key_is_bad(void *arg, const char *cert, const char *key,
                      char *why, size_t n)
{
    tls_seen *s = arg;
    s->calls++;
    snprintf(s->cert, sizeof(s->cert), "%s", cert);
    snprintf(s->key, sizeof(s->key), "%s", key);
    snprintf(why, n, "key %s does not match certificate %s", key, cert);
    return SOPHIA_CONF_TLS_BAD_KEY;
}

/* The loader opens no certificate itself: without a registered check the
 * paths are only resolved; with one, it gets the resolved paths and its
 * verdict lands on the key it names, with that key's position. */
static void test_server_tls_check_hook(void **state)
{
    (void)state;
    const char *y = "server:\n  tls: {listen: \"127.0.0.1:1\", cert: /a, key: b}\n";
    sophia_conf *c = sophia_conf_load_string("/d/t.yaml", y, strlen(y), &diag);
    assert_count(0);
    assert_string_equal(c->server.tls.key, "/d/b");
    sophia_conf_free(c);
    tls_seen seen = {0};
    sophia_conf_load_opts o = {.tls_check = key_is_bad, .tls_check_arg = &seen};
    c = sophia_conf_load_string_with("/d/t.yaml", y, strlen(y), &o, &diag);
    assert_int_equal(seen.calls, 1);
    assert_string_equal(seen.cert, "/a");
    assert_string_equal(seen.key, "/d/b");
    assert_count(1);
    assert_diag(0, "/d/t.yaml:2:47: server.tls.key: key /d/b does not match "
                   "certificate /a");
    sophia_conf_free(c);
}

static void test_options(void **state)
{
    (void)state;
    sophia_conf *c = load(
        "plugins:\n"                              /* 1 */
        "  path: [/p]\n"                          /* 2 */
        "  instances:\n"                          /* 3 */
        "    dash:\n"                             /* 4 */
        "      plugin: metrics\n"                 /* 5 */
        "      options:\n"                        /* 6 */
        "        dashboard: executive\n"          /* 7 */
        "        tags: [a, \"b c\", 3]\n"         /* 8 */
        "        list:\n"                         /* 9 */
        "          - x\n"                         /* 10 */
        "          - y\n"                         /* 11 */
        "        empty:\n"                        /* 12 */
        "        quoted: \"\"\n"                  /* 13 */
        "    other: {plugin: metrics}\n");        /* 14 */
    assert_count(0);
    assert_int_equal(c->ninstances, 2);
    const sophia_conf_instance *in = sophia_conf_instance_find(c, "dash");
    assert_ptr_equal(in, &c->instances[0]);
    assert_int_equal(in->line, 4);
    assert_int_equal(in->col, 5);
    assert_int_equal(in->nopts, 5);

    const sophia_conf_opt *o = &in->opts[0];
    assert_string_equal(o->key, "dashboard");
    assert_false(o->is_seq);
    assert_string_equal(o->scalar, "executive");
    assert_int_equal(o->line, 7);
    assert_int_equal(o->col, 20);

    o = &in->opts[1];
    assert_string_equal(o->key, "tags");
    assert_true(o->is_seq);
    assert_null(o->scalar);
    assert_int_equal(o->nitems, 3);
    assert_string_equal(o->items[0], "a");
    assert_string_equal(o->items[1], "b c");
    assert_string_equal(o->items[2], "3");
    assert_int_equal(o->line, 8);
    assert_int_equal(o->col, 15);

    o = &in->opts[2];
    assert_true(o->is_seq);
    assert_int_equal(o->nitems, 2);
    assert_string_equal(o->items[1], "y");
    assert_int_equal(o->line, 10);
    assert_int_equal(o->col, 11);

    o = &in->opts[3]; /* a null value is kept as written, for the plugin */
    assert_string_equal(o->key, "empty");
    assert_string_equal(o->scalar, "");
    o = &in->opts[4];
    assert_string_equal(o->scalar, "");

    in = sophia_conf_instance_find(c, "other");
    assert_non_null(in);
    assert_int_equal(in->nopts, 0);
    assert_null(sophia_conf_instance_find(c, "nope"));
    assert_null(sophia_conf_instance_find(NULL, "dash"));
    assert_null(sophia_conf_instance_find(c, NULL));
    sophia_conf_free(c);

    /* Nested values load (as JSON text): only the plugin's table says
     * whether the option takes one (plugin_opts.c refuses it otherwise). */
    c = load("plugins:\n  path: [/p]\n  instances:\n    m:\n      plugin: p\n"
             "      options:\n        nested: {a: 1}\n        l: [a, [b]]\n");
    assert_count(0);
    assert_true(c->instances[0].opts[0].nested);
    assert_string_equal(c->instances[0].opts[0].json, "{\"a\":1}");
    assert_true(c->instances[0].opts[1].nested);
    assert_false(c->instances[0].opts[1].is_seq);
    assert_string_equal(c->instances[0].opts[1].json, "[\"a\",[\"b\"]]");
    sophia_conf_free(c);
    expect_one("plugins:\n  instances:\n    m:\n      plugin: p\n"
               "      options: [a]\n",
               "t.yaml:5:16: plugins.instances.m.options: expected a "
               "mapping, got a sequence");
}

static void test_free_null(void **state)
{
    (void)state;
    sophia_conf_free(NULL);
    sophia_conf_validate(NULL, &diag);
    expect_clean("streams: {}\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_default_file),
        T(test_example_files),
        T(test_missing_file),
        T(test_truncated_default),
        T(test_defaults),
        T(test_values),
        T(test_safety_options),
        T(test_sizes),
        T(test_durations),
        T(test_consolidate),
        T(test_unknown_key),
        T(test_wrong_type),
        T(test_bad_integer),
        T(test_bad_size),
        T(test_bad_listen),
        T(test_split_listen),
        T(test_duplicate_key),
        T(test_syntax_error),
        T(test_alias_refused),
        T(test_nesting_depth),
        T(test_stream_missing_instance),
        T(test_stream_chain),
        T(test_required_keys),
        T(test_validate),
        T(test_correlators),
        T(test_stream_retention),
        T(test_multiple_errors),
        T(test_env_overrides),
        T(test_cluster_enabled),
        T(test_secret_env),
        T(test_relative_paths_lexical),
        T(test_add_plugin_dir),
        T(test_relative_paths_file),
        T(test_server_tls),
        T(test_server_tls_check_hook),
        T(test_options),
        T(test_free_null),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
