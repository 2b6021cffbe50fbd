/*
 * test_config_doc - sophia.yaml(5) cannot drift from the loader: every key
 * the loader's tables accept (sophia_conf_each_key) is in the generated page
 * with a description, type and entry of its own, no description names a
 * key the loader refuses, and each documented key really is accepted by
 * the loader (a file setting it is not refused with "unknown key").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conf/config.h"
#include "conf/config_doc.h"
#include "lib/diag.h"


typedef struct keys {
    char *path[512];
    size_t n;
} keys;

static void collect(const char *path, const char *type, const char *def,
                    void *arg)
{
    keys *k = arg;
    (void)type;
    (void)def;
    assert_true(k->n < 512);
    k->path[k->n++] = strdup(path);
}

static char *man_page(int *problems, char **errs)
{
    char *page = NULL, *err = NULL;
    size_t len = 0, elen = 0;
    FILE *out = open_memstream(&page, &len);
    FILE *e = open_memstream(&err, &elen);
    *problems = sophia_conf_doc_man(out, e);
    fclose(out);
    fclose(e);
    *errs = err;
    return page;
}

/* roff escapes '-' as "\-" in the page. */
static void roff_key(const char *path, char *out, size_t n)
{
    size_t o = 0;
    for (; *path && o + 3 < n; path++) {
        if (*path == '-')
            out[o++] = '\\';
        out[o++] = *path;
    }
    out[o] = '\0';
}

static void every_key_documented(void **state)
{
    (void)state;
    keys k = {0};
    sophia_conf_each_key(collect, &k);
    assert_true(k.n > 50); /* the walk reached the nested sections */
    int problems;
    char *errs;
    char *page = man_page(&problems, &errs);
    if (problems)
        fail_msg("%d problem(s):\n%s", problems, errs);
    assert_null(strstr(page, "UNDOCUMENTED"));
    for (size_t i = 0; i < k.n; i++) {
        char want[300], esc[256];
        roff_key(k.path[i], esc, sizeof(esc));
        snprintf(want, sizeof(want), "\n.TP\n.B %s\nType: ", esc);
        if (!strstr(page, want))
            fail_msg("key '%s' has no entry in sophia.yaml(5)", k.path[i]);
        assert_non_null(sophia_conf_doc_find(k.path[i]));
        free(k.path[i]);
    }
    /* Nested and named sections are walked with their placeholders. */
    assert_non_null(strstr(page, ".B streams.NAME.redis.dead_letter_after\n"));
    assert_non_null(strstr(page, ".B plugins.instances.NAME.plugin\n"));
    assert_non_null(strstr(page, ".B memory.consolidate.INSTANCE.every\n"));
    free(page);
    free(errs);
}

static void unknown_keys_have_no_doc(void **state)
{
    (void)state;
    assert_null(sophia_conf_doc_find("server.no_such_key"));
    assert_null(sophia_conf_doc_find("server"  ".listen.x"));
}

/* A key the page documents is one the loader takes: the walk's paths
 * (with placeholders filled in) set in a file give no "unknown key". */
static void walked_keys_are_accepted(void **state)
{
    (void)state;
    static const char *yaml =
        "server: {max_body_total: 2MiB, max_connections: 10}\n"
        "cache: {l3: {pool: 2}}\n"
        "websocket: {max_topics: 10, jwt: {require_exp: false}}\n"
        "memory: {index_path: /tmp/x.index}\n"
        "plugins: {instances: {m: {plugin: metrics}}, init_timeout: 5}\n"
        "streams: {s: {processor: m, redis: {dead_letter_after: 3}}}\n";
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_conf *c = sophia_conf_load_string("t.yaml", yaml, strlen(yaml), &d);
    assert_non_null(c);
    for (size_t i = 0; i < d.count; i++)
        assert_null(strstr(d.lines[i], "unknown key"));
    sophia_conf_free(c);
    sophia_diag_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_key_documented),
        cmocka_unit_test(unknown_keys_have_no_doc),
        cmocka_unit_test(walked_keys_are_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
