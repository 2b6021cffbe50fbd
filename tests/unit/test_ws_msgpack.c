/*
 * test_ws_msgpack - the sophia.v1.msgpack encoding (ws_msgpack.h): bytes
 * as the msgpack spec writes them, a round trip of every JSON kind, the
 * binary frame header, the msgpack twin made once per message and freed
 * with it (coalescing key and pubid kept), the JSON-to-msgpack transcoder
 * giving the tree's bytes, and every refusal of the decoder with its
 * reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/jsonw.h"
#include "ws/ws_history.h"
#include "ws/ws_msgpack.h"

#define PRE 16

static void test_spec_bytes(void **state)
{
    (void)state;
    sophia_jsonw w = {0};
    json_t *v = json_pack("{s:s,s:i,s:i,s:b,s:n}", "type", "pong", "a", -1,
                          "b", 300, "c", 1, "d");
    ws_msg *m = ws_msgpack_from_json(v, &w, PRE);
    /* fixmap 5, fixstr "type", fixstr "pong", "a" -1 (negative fixint),
     * "b" uint16 300, "c" true, "d" nil */
    static const unsigned char want[] = {
        0x85, 0xa4, 't', 'y', 'p', 'e', 0xa4, 'p', 'o', 'n', 'g', 0xa1, 'a', 0xff,
        0xa1, 'b', 0xcd, 0x01, 0x2c, 0xa1, 'c', 0xc3, 0xa1, 'd', 0xc0};
    assert_non_null(m);
    assert_int_equal(m->len, sizeof(want));
    assert_memory_equal(m->buf + PRE, want, sizeof(want));
    size_t n;
    const unsigned char *f = ws_msg_frame(m, PRE, &n);
    assert_int_equal(f[0], 0x82); /* FIN + binary */
    assert_int_equal(f[1], sizeof(want));
    assert_int_equal(n, sizeof(want) + 2);
    ws_msg_unref(m);
    json_decref(v);
    sophia_jsonw_reset(&w);
}

static void test_round_trip(void **state)
{
    (void)state;
    sophia_jsonw w = {0};
    json_t *v = json_loads("{\"type\":\"metric\",\"seq\":18446744073709551,"
                           "\"neg\":-9007199254740993,\"x\":1.5,\"big\":1e300,"
                           "\"s\":\"h\\u00e9llo \\u263a\",\"a\":[1,[2,[3]],{}],"
                           "\"t\":true,\"f\":false,\"n\":null,\"e\":\"\"}",
                           0, NULL);
    assert_non_null(v);
    ws_msg *m = ws_msgpack_from_json(v, &w, PRE);
    assert_non_null(m);
    char err[128];
    json_t *back = ws_msgpack_decode(m->buf + PRE, m->len, err, sizeof(err));
    assert_non_null(back);
    assert_true(json_equal(v, back));
    /* key order kept: the first key of the map is "type" */
    assert_int_equal(m->buf[PRE + 1], 0xa4);
    assert_memory_equal(m->buf + PRE + 2, "type", 4);
    json_decref(back);
    json_decref(v);
    ws_msg_unref(m);
    sophia_jsonw_reset(&w);
}

static void test_alt_once(void **state)
{
    (void)state;
    sophia_jsonw w = {0};
    const char *text = "{\"type\":\"metric\",\"topic\":\"dashboard:x\",\"seq\":3,"
                       "\"data\":{\"metric\":\"revenue\",\"value\":2.25}}";
    ws_msg *m = ws_msg_new(text, strlen(text), PRE);
    m->pubid = 77;
    ws_msg_set_ckey(m, "dashboard:x", "revenue");
    ws_msg *b = ws_msgpack_alt(m, &w, PRE);
    assert_non_null(b);
    assert_ptr_equal(ws_msgpack_alt(m, &w, PRE), b); /* made once */
    assert_ptr_equal(ws_msgpack_alt(b, &w, PRE), b);  /* already binary */
    assert_true(b->binary);
    assert_int_equal(b->pubid, 77);
    assert_string_equal(b->ckey, m->ckey);
    assert_int_equal(b->ckey_len, m->ckey_len);
    json_t *want = json_loads(text, 0, NULL);
    json_t *got = ws_msgpack_decode(b->buf + PRE, b->len, NULL, 0);
    assert_true(json_equal(want, got));
    /* a queue's reference outlives the JSON message */
    b->refs++;
    ws_msg_unref(m);
    assert_int_equal(b->refs, 1);
    ws_msg_unref(b);
    json_decref(want);
    json_decref(got);
    sophia_jsonw_reset(&w);
}

/* The transcoder gives the bytes the tree does, whatever the JSON's
 * spacing and escapes. */
static void same_as_tree(const char *text)
{
    sophia_jsonw a = {0}, b = {0};
    json_t *v = json_loads(text, JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    ws_msg *m = ws_msgpack_from_json(v, &a, PRE);
    assert_non_null(m);
    if (ws_msgpack_transcode(text, strlen(text), &b) != 0)
        fail_msg("transcode refused %s", text);
    if (b.len != m->len || memcmp(b.p, m->buf + PRE, m->len) != 0)
        fail_msg("transcode differs for %s", text);
    ws_msg_unref(m);
    json_decref(v);
    sophia_jsonw_reset(&a);
    sophia_jsonw_reset(&b);
}

static void test_transcode(void **state)
{
    (void)state;
    same_as_tree("{\"type\":\"metric\",\"topic\":\"dashboard:x\",\"seq\":42,"
                 "\"dashboard_id\":\"x\",\"data\":{\"metric\":\"revenue\","
                 "\"value\":125000.5,\"timestamp\":\"2024-01-20T10:30:00Z\"}}");
    same_as_tree(" { \"a\" : [ 1 , -2 , 3e2 , -0.5E-3 , true , false , null , [ ] , { } ] } ");
    same_as_tree("{\"s\":\"q\\\"b\\\\s\\/ \\b\\f\\n\\r\\t \\u00e9\\u263a\\ud83d\\ude00 \\u0000x\"}");
    same_as_tree("{\"big\":9223372036854775807,\"neg\":-9223372036854775808,\"k\":\"\"}");
    same_as_tree("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
    same_as_tree("\"only a string\"");
    same_as_tree("[1.3523e-309,4.9406564584124654e-324]"); /* denormals: fuzz_ws_msgpack */
    sophia_jsonw w = {0};
    const char *bad[] = {"{\"a\":1", "{\"a\" 1}", "[1,]x", "\"\\ud800\"", "\"\\uZZZZ\"",
                         "99999999999999999999", "", "[1] 2", "{1:2}", "tru"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (ws_msgpack_transcode(bad[i], strlen(bad[i]), &w) == 0)
            fail_msg("transcode accepted %s", bad[i]);
    sophia_jsonw_reset(&w);
}

static void refused(const void *data, size_t len, const char *why)
{
    char err[128] = "";
    json_t *v = ws_msgpack_decode(data, len, err, sizeof(err));
    if (v)
        fail_msg("accepted, wanted: %s", why);
    if (!strstr(err, why))
        fail_msg("reason '%s', wanted '%s'", err, why);
}

static void test_refusals(void **state)
{
    (void)state;
    unsigned char deep[40];
    memset(deep, 0x91, sizeof(deep)); /* [[[[...]]]] without an end */
    refused(deep, sizeof(deep), "deeper than 32");
    refused("\xc1", 1, "not accepted");
    refused("\xc4\x01\x00", 3, "not accepted");          /* bin8 */
    refused("\xd4\x01\x00", 3, "not accepted");          /* fixext1 */
    refused("\xdd\xff\xff\xff\xff\x01", 6, "truncated"); /* array32 of 4G */
    refused("\xdf\x7f\xff\xff\xff", 5, "truncated");     /* map32 */
    refused("\xdb\x00\x00\x01\x00" "ab", 7, "truncated"); /* str32 of 256 */
    refused("\xcb\x00", 2, "truncated");                /* float64 */
    refused("", 0, "truncated");
    refused("\x80\x80", 2, "more than one value");
    refused("\x81\x01\x02", 3, "map keys must be strings");
    refused("\x81\xa1" "a\xa2\xff\xfe", 6, "UTF-8");
    refused("\x81\xa2\xff\xfe\x01", 5, "UTF-8");
    refused("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, "64 signed bits");
    refused("\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", 9, "finite"); /* NaN */
    /* empty strings, as value and key, in both str16 and fixstr */
    json_t *e = ws_msgpack_decode("\x81\xa0\xda\x00\x00", 5, NULL, 0);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "")), "");
    json_decref(e);
    e = ws_msgpack_decode("\xa0", 1, NULL, 0); /* found by fuzz_ws_msgpack */
    assert_non_null(e);
    json_decref(e);
    /* 32 levels are fine */
    memset(deep, 0x91, 31);
    deep[31] = 0x90;
    json_t *ok = ws_msgpack_decode(deep, 32, NULL, 0);
    assert_non_null(ok);
    json_decref(ok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_bytes),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_alt_once),
        cmocka_unit_test(test_transcode),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
