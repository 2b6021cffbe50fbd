/*
 * test_ws_deflate - the shared permessage-deflate twin (ws_deflate.h):
 * made once per message, RSV1 in its frame header, inflating (raw, with
 * the 00 00 ff ff tail put back) to the original, coalescing key and
 * pubid kept, tried once and skipped when it would not be smaller.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "ws/ws_deflate.h"
#include "ws/ws_history.h"

#define PRE 16

static size_t inflate_payload(const unsigned char *p, size_t n, unsigned char *out,
                              size_t cap)
{
    unsigned char in[8192];
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    assert_true(n + 4 <= sizeof(in));
    memcpy(in, p, n);
    memcpy(in + n, "\x00\x00\xff\xff", 4);
    assert_int_equal(inflateInit2(&zs, -15), Z_OK);
    zs.next_in = in;
    zs.avail_in = (uInt)(n + 4);
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    int rc = inflate(&zs, Z_SYNC_FLUSH);
    assert_true(rc == Z_OK || rc == Z_BUF_ERROR);
    size_t got = cap - zs.avail_out;
    inflateEnd(&zs);
    return got;
}

static void test_twin(void **state)
{
    (void)state;
    char text[3000];
    int n = snprintf(text, sizeof(text), "{\"type\":\"metric\",\"topic\":\"dashboard:x\",\"seq\":1,\"data\":{\"note\":\"");
    memset(text + n, 'a', 2000);
    n += 2000;
    n += snprintf(text + n, sizeof(text) - (size_t)n, "\"}}");
    ws_deflater *d = ws_deflater_new();
    assert_non_null(d);
    ws_msg *m = ws_msg_new(text, (size_t)n, PRE);
    m->pubid = 9;
    ws_msg_set_ckey(m, "dashboard:x", "revenue");
    ws_msg *z = ws_deflate_twin(m, d, PRE, 1);
    assert_ptr_not_equal(z, m);
    assert_ptr_equal(ws_deflate_twin(m, d, PRE, 1), z); /* once */
    assert_ptr_equal(ws_deflate_twin(z, d, PRE, 1), z); /* already compressed */
    assert_true(z->len < 100);
    assert_int_equal(z->pubid, 9);
    assert_string_equal(z->ckey, m->ckey);
    size_t fl;
    const unsigned char *f = ws_msg_frame(z, PRE, &fl);
    assert_int_equal(f[0], 0xc1); /* FIN + RSV1 + text */
    unsigned char out[4096];
    size_t got = inflate_payload(z->buf + PRE, z->len, out, sizeof(out));
    assert_int_equal(got, (size_t)n);
    assert_memory_equal(out, text, (size_t)n);
    /* a second message through the same (reset) stream inflates alone */
    ws_msg *m2 = ws_msg_new("{\"type\":\"pong\",\"pad\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}", 67, PRE);
    ws_msg *z2 = ws_deflate_twin(m2, d, PRE, 1);
    assert_ptr_not_equal(z2, m2);
    got = inflate_payload(z2->buf + PRE, z2->len, out, sizeof(out));
    assert_int_equal(got, 67);
    assert_memory_equal(out, ws_msg_text(m2, PRE), 67);
    ws_msg_unref(m2);
    ws_msg_unref(m);
    ws_deflater_free(d);
}

/* Under websocket.compression_min a message goes as it is, once decided. */
static void test_under_min(void **state)
{
    (void)state;
    ws_deflater *d = ws_deflater_new();
    char text[600];
    memset(text, 'a', sizeof(text));
    ws_msg *m = ws_msg_new(text, sizeof(text), PRE);
    assert_ptr_equal(ws_deflate_twin(m, d, PRE, 1024), m);
    assert_true(m->z_none);
    assert_null(m->z);
    ws_msg *m2 = ws_msg_new(text, sizeof(text), PRE);
    assert_ptr_not_equal(ws_deflate_twin(m2, d, PRE, 600), m2); /* at min */
    ws_msg_unref(m2);
    ws_msg_unref(m);
    ws_deflater_free(d);
}

static void test_not_smaller(void **state)
{
    (void)state;
    ws_deflater *d = ws_deflater_new();
    ws_msg *m = ws_msg_new("{\"type\":\"pong\"}", 15, PRE);
    assert_ptr_equal(ws_deflate_twin(m, d, PRE, 1), m);
    assert_true(m->z_none);
    assert_null(m->z);
    size_t fl;
    assert_int_equal(ws_msg_frame(m, PRE, &fl)[0], 0x81); /* no RSV1 */
    ws_msg_unref(m);
    ws_deflater_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_twin),
        cmocka_unit_test(test_under_min),
        cmocka_unit_test(test_not_smaller),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
