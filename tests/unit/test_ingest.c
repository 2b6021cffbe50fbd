/*
 * test_ingest - body parsing: object, array, NDJSON; errors with position;
 * all-or-nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ingest/ingest.h"

static json_t *parse(const char *s, sophia_parse_error *e)
{
    memset(e, 0, sizeof(*e));
    return sophia_ingest_parse(s, strlen(s), e);
}

static void test_single_object(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    json_t *v = parse("  {\"metric\":\"a\",\"value\":1}\n", &e);
    assert_non_null(v);
    assert_int_equal(json_array_size(v), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(v, 0), "metric")), "a");
    json_decref(v);
}

static void test_array_and_ndjson(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    json_t *v = parse("[{\"a\":1},{\"a\":2}]", &e);
    assert_int_equal(json_array_size(v), 2);
    json_decref(v);
    v = parse("{\"a\":1}\n{\"a\":2}\r\n\n{\"a\":3}", &e);
    assert_int_equal(json_array_size(v), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 2), "a")), 3);
    json_decref(v);
    /* An array line inside NDJSON is flattened too. */
    v = parse("{\"a\":1}\n[{\"a\":2},{\"a\":3}]\n", &e);
    assert_int_equal(json_array_size(v), 3);
    json_decref(v);
}

static void test_error_position(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    const char *body = "{\"a\":1}\n{\"a\":2}\n{\"a\": x}\n";
    assert_null(parse(body, &e));
    assert_int_equal(e.line, 3);
    assert_int_equal(e.column, 7);
    assert_int_equal(e.offset, strlen("{\"a\":1}\n{\"a\":2}\n{\"a\": "));
    assert_true(strlen(e.text) > 0);
}

static void test_rejects_non_objects(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    assert_null(parse("42", &e));
    assert_non_null(strstr(e.text, "object"));
    assert_null(parse("[{\"a\":1}, \"x\"]", &e));
    assert_non_null(strstr(e.text, "element 1"));
    assert_null(parse("   \n ", &e));
    assert_non_null(strstr(e.text, "empty"));
    assert_null(parse("{\"a\":1} trailing", &e));
    assert_int_equal(e.line, 1);
    assert_null(parse("{\"a\":1", &e));
}

/* `[{"a":` + (levels - 2) '[' + inner + ']'s + `}]`: `levels` deep. */
static char *nested(size_t levels, const char *inner)
{
    size_t n = levels - 2, len = 6 + 2 * n + strlen(inner) + 2;
    char *b = malloc(len + 1), *o = b;
    o = stpcpy(o, "[{\"a\":");
    memset(o, '[', n);
    o = stpcpy(o + n, inner);
    memset(o, ']', n);
    strcpy(o + n, "}]");
    return b;
}

/* The depth limit holds on both paths: the fast one gives up at the
 * limit (FAST_MAX_DEPTH), so only bodies within it skip the pre-scan. */
static void test_depth_limit(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    const char *inner[] = {"1", "", "{}"};
    for (size_t i = 0; i < 3; i++) {
        char *ok = nested(i == 0 ? 64 : 63, inner[i]); /* 64 levels */
        json_t *v = parse(ok, &e);
        assert_non_null(v);
        json_decref(v);
        free(ok);
        char *deep = nested(65, inner[i]);
        assert_null(parse(deep, &e));
        assert_non_null(strstr(e.text, "deeper than 64"));
        free(deep);
    }
}

/* Each span is a JSON text of its own that parses to its event, for an
 * array, NDJSON and a single object; a body jansson parses has none. */
static void test_spans(void **unused)
{
    (void)unused;
    const char *bodies[] = {
        " [ {\"a\": [1, {\"b\": [2]}]} ,{\"c\":\"x\\\"]\"}\n]",
        "{\"a\":1}\n  {\"b\":[{\"c\":2}]}\n[{\"d\":3},{\"e\":4}]\n",
        "{\"m\":\"caf\u00e9\",\"v\":1.50e2}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        sophia_parse_error e;
        sophia_ingest_span *spans = (void *)1;
        json_t *v = sophia_ingest_parse_spans(bodies[i], strlen(bodies[i]),
                                              &e, &spans);
        assert_non_null(v);
        assert_non_null(spans);
        for (size_t k = 0; k < json_array_size(v); k++) {
            json_error_t je;
            json_t *one = json_loadb(bodies[i] + spans[k].off, spans[k].len,
                                     0, &je);
            assert_non_null(one);
            assert_true(json_equal(one, json_array_get(v, k)));
            json_decref(one);
        }
        free(spans);
        json_decref(v);
    }
    /* Integers past 18 digits are left to jansson: no spans, same events. */
    const char *slow = "[{\"a\":1234567890123456789}]";
    sophia_parse_error e;
    sophia_ingest_span *spans = (void *)1;
    json_t *v = sophia_ingest_parse_spans(slow, strlen(slow), &e, &spans);
    assert_non_null(v);
    assert_null(spans);
    json_decref(v);
}

static void test_embedded_nul_is_an_error(void **unused)
{
    (void)unused;
    sophia_parse_error e;
    const char body[] = "{\"a\":1}\0{\"b\":2}";
    assert_null(sophia_ingest_parse(body, sizeof(body) - 1, &e));
    assert_int_equal(e.offset, 7);
}

/* ------------------------------------------ fast path vs jansson */

/* The body as jansson alone reads it (the parser before the fast path). */
static json_t *reference(const char *body, size_t len)
{
    json_t *events = json_array();
    size_t pos = 0;
    while (pos < len && strchr(" \t\r\n", body[pos]))
        pos++;
    if (pos == len) {
        json_decref(events);
        return NULL;
    }
    while (pos < len) {
        json_error_t je;
        json_t *v = json_loadb(body + pos, len - pos,
                               JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
        int ok = v && (json_is_object(v) || json_is_array(v));
        for (size_t i = 0; ok && json_is_array(v) && i < json_array_size(v); i++)
            ok = json_is_object(json_array_get(v, i));
        if (!ok) {
            json_decref(v);
            json_decref(events);
            return NULL;
        }
        if (json_is_object(v))
            json_array_append_new(events, v);
        else {
            json_array_extend(events, v);
            json_decref(v);
        }
        pos += (size_t)je.position;
        while (pos < len && strchr(" \t\r\n", body[pos]))
            pos++;
    }
    return events;
}

/* Whatever the fast path accepts, jansson accepts with an equal tree
 * (same values, same key order); returns 1 when the fast path took it. */
static int check_same(const char *body, size_t len)
{
    json_t *fast = sophia_ingest_parse_fast(body, len);
    if (!fast)
        return 0;
    json_t *ref = reference(body, len);
    if (!ref)
        fail_msg("fast path accepted what jansson refuses: %.*s", (int)len, body);
    assert_true(json_equal(fast, ref));
    char *a = json_dumps(fast, JSON_COMPACT), *b = json_dumps(ref, JSON_COMPACT);
    assert_string_equal(a, b);
    free(a);
    free(b);
    json_decref(fast);
    json_decref(ref);
    return 1;
}

static json_t *gen_value(unsigned *seed, int depth)
{
    static const char *const strs[] = {"", "cpu", "a\"b\\c/d", "tab\there\n",
                                       "\x01\x1f", "é漢😀", "\xe2\x80\xa8"};
    switch (rand_r(seed) % (depth > 2 ? 5 : 7)) {
    case 0: return json_integer((json_int_t)rand_r(seed) * (rand_r(seed) % 3 - 1));
    case 1: return json_real((double)rand_r(seed) / (1 + rand_r(seed) % 1000) *
                             (rand_r(seed) % 2 ? 1e-9 : 1e9));
    case 2: return json_string(strs[rand_r(seed) % 7]);
    case 3: return json_boolean(rand_r(seed) % 2);
    case 4: return json_null();
    case 5: {
        json_t *a = json_array();
        for (int i = rand_r(seed) % 4; i > 0; i--)
            json_array_append_new(a, gen_value(seed, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (int i = rand_r(seed) % 5; i > 0; i--)
            json_object_set_new(o, strs[rand_r(seed) % 7], gen_value(seed, depth + 1));
        return o;
    }
    }
}

/* A body of a few events, in one of the layouts and encodings clients
 * send (array or NDJSON; compact, indented, ASCII-escaped). */
static char *gen_body(unsigned *seed)
{
    static const size_t flags[] = {JSON_COMPACT, JSON_INDENT(2),
                                   JSON_COMPACT | JSON_ENSURE_ASCII,
                                   JSON_COMPACT | JSON_ESCAPE_SLASH};
    size_t fl = flags[rand_r(seed) % 4];
    json_t *events = json_array();
    for (int i = 1 + rand_r(seed) % 4; i > 0; i--) {
        json_t *ev = json_object();
        json_object_set_new(ev, "metric", json_string("m"));
        json_object_set_new(ev, "x", gen_value(seed, 0));
        json_object_set_new(ev, "y", gen_value(seed, 0));
        json_array_append_new(events, ev);
    }
    char *body;
    if (rand_r(seed) % 2) {
        body = json_dumps(events, fl);
    } else { /* NDJSON */
        size_t cap = 1 << 16, off = 0;
        body = calloc(1, cap);
        for (size_t i = 0; i < json_array_size(events); i++) {
            char *line = json_dumps(json_array_get(events, i), fl);
            off += (size_t)snprintf(body + off, cap - off, "%s\n", line);
            free(line);
        }
    }
    json_decref(events);
    return body;
}

static void test_fast_path_matches_jansson(void **unused)
{
    (void)unused;
    unsigned seed = 4242;
    int taken = 0;
    for (int i = 0; i < 3000; i++) {
        char *body = gen_body(&seed);
        if (!check_same(body, strlen(body))) /* valid: the fast path takes it */
            fail_msg("fast path gave up on a valid body: %s", body);
        taken++;
        free(body);
    }
    /* Mutated bodies: the fast path may give up, never disagree. */
    static const char bytes[] = "{}[],:\"\\ u0eE.-+9x\x01\x80\xc3\xed\xa0";
    for (int i = 0; i < 10000; i++) {
        char *body = gen_body(&seed);
        size_t len = strlen(body);
        for (int k = 1 + rand_r(&seed) % 3; k > 0 && len; k--) {
            size_t at = (size_t)rand_r(&seed) % len;
            int op = rand_r(&seed) % 3;
            char b = bytes[rand_r(&seed) % (sizeof(bytes) - 1)];
            if (op == 0)
                body[at] = b;
            else if (op == 1)
                memmove(body + at, body + at + 1, len-- - at);
            else
                body[at] = body[at] == '"' ? '\\' : body[at]; /* escapes */
        }
        taken += check_same(body, len);
        free(body);
    }
    const char *edge[] = {"[]", "[] {}", "{\"a\":-0}", "{\"a\":-0.0}",
                          "{\"a\":1e400}", "{\"a\":1e-400}", "{\"a\":01}",
                          "{\"a\":1234567890123456789}", "{\"a\":\"\\u0000\"}",
                          "{\"a\":\"\\ud83d\\ude00\"}", "{\"a\":\"\\ud83d\"}",
                          "{\"a\":\"\\ude00\"}", "{\"a\":1,\"a\":2}", "{\"\xc3\xa9\":1}",
                          "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":tru}", "{\"a\":1.}",
                          "{\"a\":.5}", "{\"a\":\"x\"}{\"b\":2}", "{\"a\":[1,]}"};
    for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
        check_same(edge[i], strlen(edge[i]));
    assert_true(taken > 3000);
}

/* Short decimals take a division instead of strtod: the same double,
 * bit for bit (check_same compares values exactly), for every digit
 * count and point position around the 15-digit edge. */
static void test_short_decimals(void **unused)
{
    (void)unused;
    unsigned seed = 77;
    char body[64], num[40];
    for (int i = 0; i < 20000; i++) {
        int nd = 1 + rand_r(&seed) % 17, point = rand_r(&seed) % (nd + 1);
        size_t o = 0;
        if (rand_r(&seed) % 3 == 0)
            num[o++] = '-';
        for (int k = 0; k < nd; k++) {
            if (k == point && k)
                num[o++] = '.';
            num[o++] = (char)('0' + (k == 0 && point != 1 ? 1 + rand_r(&seed) % 9
                                                          : rand_r(&seed) % 10));
        }
        if (point == 0 || point == nd) {
            memcpy(num + o, ".5", 2);
            o += 2;
        }
        num[o] = '\0';
        snprintf(body, sizeof(body), "{\"v\":%s}", num);
        if (!check_same(body, strlen(body)))
            fail_msg("fast path gave up on %s", body);
    }
    const char *edge[] = {"{\"v\":1000.25}", "{\"v\":-0.0}", "{\"v\":0.1}",
                          "{\"v\":999999999999999.9}", "{\"v\":0.000000000000001}",
                          "{\"v\":9007199254740993.0}", "{\"v\":123456789012345.6}"};
    for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
        assert_true(check_same(edge[i], strlen(edge[i])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_object),
        cmocka_unit_test(test_array_and_ndjson),
        cmocka_unit_test(test_error_position),
        cmocka_unit_test(test_rejects_non_objects),
        cmocka_unit_test(test_embedded_nul_is_an_error),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_spans),
        cmocka_unit_test(test_fast_path_matches_jansson),
        cmocka_unit_test(test_short_decimals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
