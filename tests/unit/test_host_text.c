/*
 * test_host_text - SDK 1.4's JSON given as text: the check that keeps a
 * plugin's malformed text from reaching a client or a tier (host_text),
 * the "metric" member the router keys latest values by, and
 * publish_text / cache_put_text queueing what publish / cache_put queue
 * for the value the text parses to (sophia_ctx_actions_json compares).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "host/host.h"
#include "host/host_text.h"

/* host_text_check and host_text_check_padded (on a padded copy, as the
 * host calls it) of s[0..n): they must agree on the answer and on m. */
static int check(const char *s, size_t n, host_text_member *m)
{
    host_text_member pm = {.key = m ? m->key : NULL};
    char *copy = malloc(n + HOST_TEXT_PAD);
    assert_non_null(copy);
    if (n)
        memcpy(copy, s, n);
    memset(copy + n, 0, HOST_TEXT_PAD);
    int padded = host_text_check_padded(copy, n, m ? &pm : NULL);
    int rc = host_text_check(s, n, m);
    if (padded != rc)
        fail_msg("padded %d, unpadded %d: %.*s", padded, rc, (int)n, s);
    if (m && !rc) {
        assert_int_equal(pm.escaped, m->escaped);
        assert_int_equal(pm.at != NULL, m->at != NULL);
        if (m->at) {
            assert_int_equal(pm.at - copy, m->at - s);
            assert_int_equal(pm.len, m->len);
        }
    }
    free(copy);
    return rc;
}

static int ok(const char *s)
{
    return check(s, strlen(s), NULL) == 0;
}

static void test_check_accepts(void **unused)
{
    (void)unused;
    const char *good[] = {
        "{}", "[]", " 0 ", "-0.5e+10", "1E3", "true", "false", "null",
        "\"\"", "{\"a\":[1,{\"b\":null}],\"c\":\"x\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
        "\"\\u00e9\\ud83d\\ude00\"", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "\n\t{ \"k\" : [ ] }\r\n",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
        if (!ok(good[i]))
            fail_msg("refused %s", good[i]);
        json_t *v = json_loads(good[i], JSON_DECODE_ANY, NULL);
        assert_non_null(v); /* what passes, jansson reads back */
        json_decref(v);
    }
}

static void test_check_refuses(void **unused)
{
    (void)unused;
    const char *bad[] = {
        "", " ", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.",
        ".5", "-", "1e", "+1", "tru", "nul", "\"abc", "\"a\nb\"", "\"\\x\"",
        "\"\\u12\"", "\"\\u0000\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\ud800\\u0041\"", "\"\xff\"", "\"\xc0\xaf\"", "\"\xe0\x80\x80\"",
        "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xc3\"", "1 2", "{} x",
        "[1]]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (ok(bad[i]))
            fail_msg("accepted %s", bad[i]);
    assert_int_equal(host_text_check(NULL, 0, NULL), -1);
    assert_int_equal(host_text_check_padded(NULL, 0, NULL), -1);
    /* a NUL inside the length is a control byte in a string, or junk */
    assert_int_equal(check("\"a\0b\"", 5, NULL), -1);
    assert_int_equal(check("1\0", 2, NULL), -1);
}

/* The check and jansson agree on strings long enough for the scan's
 * eight-byte steps: one odd byte (or UTF-8 sequence, escape) at every
 * position of strings of every length up to 40, then random strings
 * mixing them. */
static void assert_agrees(const char *s, size_t n)
{
    json_t *v = json_loadb(s, n, JSON_DECODE_ANY, NULL);
    int mine = check(s, n, NULL) == 0;
    if (mine != (v != NULL))
        fail_msg("check %s, jansson %s: %.*s", mine ? "accepts" : "refuses",
                 v ? "accepts" : "refuses", (int)n, s);
    json_decref(v);
}

static void test_check_long_strings(void **unused)
{
    (void)unused;
    static const char *const odd[] = {
        "\x01", "\x1f", "\x7f", " ", "\"", "\\", "\\n", "\\u00e9", "\x80",
        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc3", "\xff",
        "\xed\xa0\x80", "\\ud83d\\ude00", "\x9f", "\xa0", "!", "#", "[", "]",
    };
    char s[128];
    for (size_t len = 0; len <= 40; len++)
        for (size_t k = 0; k <= len; k++)
            for (size_t j = 0; j < sizeof(odd) / sizeof(*odd); j++) {
                size_t o = 0, l = strlen(odd[j]);
                s[o++] = '"';
                memset(s + o, 'a', k);
                o += k;
                memcpy(s + o, odd[j], l);
                o += l;
                memset(s + o, 'b', len - k);
                o += len - k;
                s[o++] = '"';
                assert_agrees(s, o);
                assert_agrees(s, o - 1); /* unterminated */
            }
    unsigned seed = 99;
    for (int i = 0; i < 20000; i++) {
        size_t o = 0;
        s[o++] = '"';
        for (int n = rand_r(&seed) % 12; n > 0; n--) {
            const char *p = rand_r(&seed) % 3 ? "plain ascii"
                                              : odd[rand_r(&seed) % (sizeof(odd) / sizeof(*odd))];
            size_t l = strlen(p) - (size_t)rand_r(&seed) % (strlen(p) > 3 ? 3 : 1);
            memcpy(s + o, p, l);
            o += l;
        }
        s[o++] = '"';
        assert_agrees(s, o);
    }
}

/* Random JSON texts (objects, arrays, strings with escapes and UTF-8,
 * numbers, literals, whitespace) and one-byte mutations of them: the
 * check accepts exactly what jansson reads, but for numbers jansson
 * cannot hold (a check of text need not), and finds the "metric" member
 * jansson finds. */
static void gen_text(unsigned *seed, int depth, char *o, size_t *n, size_t cap)
{
    static const char *const atoms[] = {
        "0", "-1", "12.5e-3", "1E+2", "true", "false", "null", "\"\"",
        "\"plain\"", "\"a\\\"b\\\\c\\/\\n\"", "\"\\u00e9\\ud83d\\ude00\"",
        "\"caf\xc3\xa9 \xe2\x82\xac\"", "\"a long string of plain ascii text\"",
    };
    int kind = depth > 4 ? 0 : rand_r(seed) % 4;
    if (*n + 64 >= cap)
        kind = 0;
    if (kind == 0) {
        const char *a = atoms[rand_r(seed) % (sizeof(atoms) / sizeof(*atoms))];
        size_t l = strlen(a);
        if (*n + l + 1 < cap) {
            memcpy(o + *n, a, l);
            *n += l;
        }
        return;
    }
    int obj = kind == 1;
    o[(*n)++] = obj ? '{' : '[';
    for (int k = rand_r(seed) % 4; k > 0 && *n + 64 < cap; k--) {
        if (rand_r(seed) % 5 == 0)
            o[(*n)++] = ' ';
        if (obj) {
            const char *key = rand_r(seed) % 3 ? "\"metric\"" : "\"k\\u0031\"";
            memcpy(o + *n, key, strlen(key));
            *n += strlen(key);
            o[(*n)++] = ':';
        }
        gen_text(seed, depth + 1, o, n, cap);
        if (k > 1)
            o[(*n)++] = ',';
    }
    o[(*n)++] = obj ? '}' : ']';
}

static void test_check_random_texts(void **unused)
{
    (void)unused;
    static const char mut[] = "{}[]\",:\\ 0.e-tu\x01\x80\xc3";
    unsigned seed = 2024;
    char s[4096];
    for (int i = 0; i < 30000; i++) {
        size_t n = 0;
        gen_text(&seed, 0, s, &n, sizeof(s));
        if (i % 2) { /* a byte replaced, dropped or added */
            size_t at = (size_t)rand_r(&seed) % n;
            char c = mut[rand_r(&seed) % (sizeof(mut) - 1)];
            switch (rand_r(&seed) % 3) {
            case 0: s[at] = c; break;
            case 1: memmove(s + at, s + at + 1, n - at - 1); n--; break;
            default: memmove(s + at + 1, s + at, n - at); s[at] = c; n++;
            }
        }
        json_error_t je;
        json_t *v = json_loadb(s, n, JSON_DECODE_ANY, &je);
        host_text_member m = {.key = "metric"};
        int mine = check(s, n, &m) == 0;
        if (!v && mine && (strstr(je.text, "overflow") || strstr(je.text, "too big")))
            continue; /* a number jansson cannot hold */
        if (mine != (v != NULL))
            fail_msg("check %s, jansson %s (%s): %.*s", mine ? "accepts" : "refuses",
                     v ? "accepts" : "refuses", v ? "" : je.text, (int)n, s);
        json_t *want = json_is_object(v) ? json_object_get(v, "metric") : NULL;
        if (mine && !m.escaped) {
            if (json_is_string(want)) {
                assert_non_null(m.at);
                assert_int_equal(m.len, json_string_length(want));
                assert_memory_equal(m.at, json_string_value(want), m.len);
            } else {
                assert_null(m.at);
            }
        }
        json_decref(v);
    }
}

static void test_check_depth(void **unused)
{
    (void)unused;
    char deep[2 * 66 + 1];
    for (size_t n = 64; n <= 65; n++) {
        memset(deep, '[', n);
        memset(deep + n, ']', n);
        deep[2 * n] = '\0';
        assert_int_equal(ok(deep), n == 64);
    }
}

static void test_member(void **unused)
{
    (void)unused;
    host_text_member m = {.key = "metric"};
    const char *s = "{\"x\":{\"metric\":\"inner\"},\"metric\":\"a\",\"metric\":\"cpu\"}";
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_int_equal(m.len, 3);
    assert_memory_equal(m.at, "cpu", 3); /* the last one, at the top */
    assert_int_equal(m.escaped, 0);
    s = "{\"metric\":\"c\\\"u\"}";
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_int_equal(m.escaped, 1);
    s = "{\"m\\u0065tric\":\"x\"}"; /* the key itself is unsure */
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_null(m.at);
    assert_int_equal(m.escaped, 1);
    s = "{\"metric\":\"a\",\"metric\":5}";
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_null(m.at);
    s = "[\"metric\"]";
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_null(m.at);
    /* compact (the quick pass), with UTF-8 and nesting */
    s = "{\"l\":{\"metric\":\"x\"},\"metric\":\"caf\xc3\xa9\",\"v\":-0.5e3}";
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_int_equal(m.len, 5);
    assert_memory_equal(m.at, "caf\xc3\xa9", 5);
    assert_int_equal(m.escaped, 0);
    s = "{\"metric\":\"a\",\"metric\":[]}";
    assert_int_equal(check(s, strlen(s), &m), 0);
    assert_null(m.at);
}

/* The actions of one context as text, for comparing two of them. */
static char *actions_text(const sophia_ctx *ctx)
{
    json_t *a = (json_t *)sophia_ctx_actions_json(ctx);
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

static void test_actions_as_values(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    assert_true(SOPHIA_HOST_HAS(h, cache_put_text));
    const char *tags[] = {"metrics", "dashboard:d", NULL};
    const char *data = "{\"metric\":\"c\\\"pu\",\"value\":1.5,\"l\":[1,2]}";
    const char *val = "{\"value\":1.5,\"timestamp\":\"2024-01-20T10:30:00Z\"}";

    sophia_ctx *tree = sophia_ctx_new(NULL, "s");
    assert_int_equal(h->publish(tree, SOPHIA_UPDATE_METRIC, "x", "d",
                                (sophia_json *)json_loads(data, 0, NULL)), 0);
    assert_int_equal(h->cache_put(tree, "k", (sophia_json *)json_loads(val, 0, NULL),
                                  60, tags), 0);
    sophia_ctx *text = sophia_ctx_new(NULL, "s");
    assert_int_equal(h->publish_text(text, SOPHIA_UPDATE_METRIC, "x", "d", data,
                                     strlen(data)), 0);
    assert_int_equal(h->cache_put_text(text, "k", val, strlen(val), 60, tags), 0);
    char *a = actions_text(tree), *b = actions_text(text);
    assert_string_equal(a, b);
    free(a);
    free(b);

    /* refused at the call, nothing queued: bad text, key, ttl or type */
    assert_int_equal(h->publish_text(text, SOPHIA_UPDATE_DATA, NULL, NULL,
                                     "{\"a\":", 5), SOPHIA_EINVAL);
    assert_int_equal(h->publish_text(text, (sophia_update_type)99, NULL, NULL,
                                     "{}", 2), SOPHIA_EINVAL);
    assert_int_equal(h->cache_put_text(text, "k", "\"\xff\"", 3, 0, NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(h->cache_put_text(text, "a\r\nb", "1", 1, 0, NULL),
                     SOPHIA_EINVAL);
    assert_int_equal(h->cache_put_text(text, "k", "1", 1, 1e16, NULL),
                     SOPHIA_EINVAL);
    a = actions_text(text);
    b = actions_text(tree);
    assert_string_equal(a, b);
    free(a);
    free(b);
    sophia_ctx_free(tree); /* never applied: nothing leaks (ASan) */
    sophia_ctx_free(text);
}

/* Puts whose blocks fill the context's room and go on to the heap, one
 * refused in between: each action keeps its own key, tags and value,
 * and freeing the context frees what was allocated (ASan). */
static void test_cache_put_blocks(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    const char *tags[] = {"metrics", "dashboard:d", NULL};
    sophia_ctx *ctx = sophia_ctx_new(NULL, "s");
    char key[16], val[256];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        int n = snprintf(val, sizeof(val), "{\"value\":%d,\"pad\":\"%0*d\"}", i,
                         40 + 20 * i, i);
        assert_true(n > 0 && (size_t)n < sizeof(val));
        assert_int_equal(h->cache_put_text(ctx, key, val, (size_t)n, 60, tags), 0);
        if (i == 2)
            assert_int_equal(h->cache_put_text(ctx, "bad", "{\"a\":", 5, 60, tags),
                             SOPHIA_EINVAL);
    }
    char *all = actions_text(ctx);
    for (int i = 0; i < 6; i++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "\"key\":\"key-%d\",\"value\":{\"value\":%d,\"pad\":\"%0*d\"}",
                 i, i, 40 + 20 * i, i);
        assert_non_null(strstr(all, want));
    }
    assert_null(strstr(all, "\"bad\""));
    free(all);
    sophia_ctx_free(ctx);
}

static void test_json_write(void **unused)
{
    (void)unused;
    const sophia_host *h = sophia_host_table();
    json_t *v = json_loads("{\"a\":[1.25,\"\\u00e9\"],\"b\":null}", 0, NULL);
    char *dump = h->json_dump((const sophia_json *)v);
    char buf[64], small[8];
    size_t n = h->json_write((const sophia_json *)v, buf, sizeof(buf));
    assert_int_equal(n, strlen(dump));
    assert_string_equal(buf, dump);
    assert_int_equal(h->json_write((const sophia_json *)v, small, sizeof(small)), n);
    assert_int_equal(h->json_write(NULL, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    h->free(dump);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_accepts),
        cmocka_unit_test(test_check_refuses),
        cmocka_unit_test(test_check_depth),
        cmocka_unit_test(test_check_long_strings),
        cmocka_unit_test(test_check_random_texts),
        cmocka_unit_test(test_member),
        cmocka_unit_test(test_actions_as_values),
        cmocka_unit_test(test_cache_put_blocks),
        cmocka_unit_test(test_json_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
