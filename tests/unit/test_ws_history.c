/*
 * test_ws_history - the per-topic ring behind `since`: replay ranges,
 * resync when aged out by count or by age, contiguity after a seq gap,
 * reference counting of the shared messages, and the ring growing on
 * demand (a quiet topic does not pay for `cap` slots), a message keyed
 * in its own block, and a publish's shared tail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws/ws_history.h"

static ws_msg *msg(void)
{
    return ws_msg_new("{}", 2, 16);
}

static ws_pub *pub(void)
{
    return ws_pub_new(1, "metric", "d", "revenue", "{}", 2);
}

/* Odd seqs with a rendered message, even ones with only the shared pub
 * (a topic nobody followed when it was published). */
static void push(ws_history *h, uint64_t seq, int64_t at)
{
    ws_msg *m = seq % 2 ? msg() : NULL;
    ws_pub *p = pub();
    ws_history_push(h, seq, at, m, p);
    ws_msg_unref(m);
    ws_pub_unref(p);
}

static void test_since_ranges(void **state)
{
    (void)state;
    ws_history h;
    ws_history_init(&h, 4);
    size_t first, n;
    for (uint64_t s = 1; s <= 6; s++)
        push(&h, s, (int64_t)s);
    /* ring holds 3..6 */
    assert_int_equal(ws_history_since(&h, 4, 6, &first, &n), WS_HIST_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ws_history_at(&h, first)->seq, 5);
    assert_int_equal(ws_history_since(&h, 2, 6, &first, &n), WS_HIST_OK);
    assert_int_equal(n, 4);
    assert_int_equal(ws_history_at(&h, first)->seq, 3);
    assert_int_equal(ws_history_since(&h, 6, 6, &first, &n), WS_HIST_OK);
    assert_int_equal(n, 0);
    assert_int_equal(ws_history_since(&h, 1, 6, &first, &n), WS_HIST_RESYNC);
    assert_int_equal(ws_history_since(&h, 9, 6, &first, &n), WS_HIST_RESYNC);
    ws_history_free(&h);
}

static void test_age_and_gap(void **state)
{
    (void)state;
    ws_history h;
    ws_history_init(&h, 8);
    size_t first, n;
    push(&h, 1, 100);
    push(&h, 2, 200);
    push(&h, 3, 300);
    ws_history_prune(&h, 250, 100); /* drops what is older than 100 */
    assert_int_equal(h.len, 2);
    assert_int_equal(ws_history_since(&h, 0, 3, &first, &n), WS_HIST_RESYNC);
    assert_int_equal(ws_history_since(&h, 1, 3, &first, &n), WS_HIST_OK);
    push(&h, 7, 400); /* a gap: older entries cannot be replayed across it */
    assert_int_equal(h.len, 1);
    assert_int_equal(ws_history_since(&h, 3, 7, &first, &n), WS_HIST_RESYNC);
    assert_int_equal(ws_history_since(&h, 6, 7, &first, &n), WS_HIST_OK);
    assert_int_equal(n, 1);
    ws_history_free(&h);
}

/* ws_history_add is ws_history_prune then ws_history_push: two rings,
 * one fed each way, stay alike entry by entry (seq, time, which publish,
 * its references) through growth, a full ring turning over, gaps in the
 * seqs, entries aging out and replays that rendered an entry. */
static void test_add_is_prune_then_push(void **state)
{
    (void)state;
    ws_history a, b;
    ws_history_init(&a, 8);
    ws_history_init(&b, 8);
    uint64_t seq = 0, rnd = 1;
    int64_t now = 0;
    for (int i = 0; i < 2000; i++) {
        rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(rnd >> 33);
        seq += r % 23 == 0 ? 2 + r % 3 : 1; /* now and then a gap */
        now += r % 31 == 0 ? 60 + r % 90 : r % 7; /* and a pause */
        ws_pub *pa = ws_pub_new(seq, "metric", "d", "m", "{}", 2);
        ws_pub *pb = ws_pub_new(seq, "metric", "d", "m", "{}", 2);
        ws_history_add(&a, seq, now, 100, pa);
        ws_history_prune(&b, now, 100);
        ws_history_push(&b, seq, now, NULL, pb);
        ws_pub_unref(pa);
        ws_pub_unref(pb);
        if (r % 5 == 0 && a.len && !ws_history_at(&a, 0)->m) {
            /* a replay rendered the oldest, as ws_topic_msg does */
            ws_history_at(&a, 0)->m = msg();
            ws_history_at(&b, 0)->m = msg();
        }
        assert_int_equal(a.len, b.len);
        for (size_t k = 0; k < a.len; k++) {
            ws_hist_entry *x = ws_history_at(&a, k), *y = ws_history_at(&b, k);
            assert_int_equal(x->seq, y->seq);
            assert_int_equal(x->at_us, y->at_us);
            assert_int_equal(x->p->pubid, y->p->pubid);
            assert_int_equal(x->p->refs, 1);
            assert_int_equal(y->p->refs, 1);
            assert_int_equal(x->m != NULL, y->m != NULL);
        }
    }
    ws_history_free(&a);
    ws_history_free(&b);
}

static void test_disabled_and_refs(void **state)
{
    (void)state;
    ws_history h;
    size_t first, n;
    ws_history_init(&h, 0);
    ws_msg *m = msg();
    ws_pub *p = pub();
    ws_history_push(&h, 1, 0, m, p);
    assert_int_equal(m->refs, 1);
    assert_int_equal(p->refs, 1);
    assert_int_equal(ws_history_since(&h, 0, 1, &first, &n), WS_HIST_RESYNC);
    ws_history_free(&h);
    ws_history_init(&h, 2);
    ws_history_push(&h, 1, 0, m, p);
    ws_history_push(&h, 2, 0, NULL, p); /* shares the pub, not rendered */
    assert_int_equal(m->refs, 2);
    assert_int_equal(p->refs, 3);
    assert_null(ws_history_at(&h, 1)->m);
    assert_string_equal(ws_history_at(&h, 1)->p->metric, "revenue");
    ws_msg_set_ckey(m, "t", "revenue");
    assert_string_equal(m->ckey, "t\x01revenue");
    ws_history_free(&h);
    assert_int_equal(m->refs, 1);
    assert_int_equal(p->refs, 1);
    ws_msg_unref(m);
    ws_pub_unref(p);
}

/* Reload: shrinking keeps the newest entries in order, growing keeps all
 * and leaves room; pushes after either continue the ring. */
static void test_resize(void **state)
{
    (void)state;
    ws_history h;
    ws_history_init(&h, 4);
    size_t first, n;
    for (uint64_t s = 1; s <= 6; s++) /* wraps: holds 3..6 */
        push(&h, s, (int64_t)s);
    ws_history_resize(&h, 2);
    assert_int_equal(h.len, 2);
    assert_int_equal(ws_history_at(&h, 0)->seq, 5);
    assert_int_equal(ws_history_at(&h, 1)->seq, 6);
    ws_history_resize(&h, 5);
    for (uint64_t s = 7; s <= 9; s++)
        push(&h, s, (int64_t)s);
    assert_int_equal(h.len, 5);
    assert_int_equal(ws_history_since(&h, 4, 9, &first, &n), WS_HIST_OK);
    assert_int_equal(n, 5);
    assert_int_equal(ws_history_at(&h, first)->seq, 5);
    ws_history_resize(&h, 0); /* history off: everything goes */
    assert_int_equal(h.len, 0);
    push(&h, 10, 10);
    assert_int_equal(h.len, 0);
    ws_history_free(&h);
}

static void test_grows_on_demand(void **state)
{
    (void)state;
    ws_history h;
    ws_history_init(&h, 100);
    size_t first, n;
    push(&h, 1, 1);
    assert_int_equal(h.alloc, 4);
    /* wrap inside the small ring, then grow across the wrap */
    for (uint64_t s = 2; s <= 4; s++)
        push(&h, s, (int64_t)s);
    ws_history_prune(&h, 12, 10); /* drops seq 1 */
    push(&h, 5, 5);
    assert_int_equal(h.alloc, 4);
    push(&h, 6, 6);
    assert_int_equal(h.alloc, 8);
    assert_int_equal(ws_history_since(&h, 1, 6, &first, &n), WS_HIST_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ws_history_at(&h, first + i)->seq, 2 + i);
    for (uint64_t s = 7; s <= 150; s++)
        push(&h, s, (int64_t)s);
    assert_int_equal(h.alloc, 100); /* never past cap */
    assert_int_equal(h.len, 100);
    assert_int_equal(ws_history_at(&h, 0)->seq, 51);
    assert_int_equal(ws_history_at(&h, 99)->seq, 150);
    /* shrinking gives the slots back */
    ws_history_resize(&h, 10);
    assert_int_equal(h.alloc, 10);
    assert_int_equal(ws_history_at(&h, 0)->seq, 141);
    ws_history_free(&h);
}

/* The frame header sits right before the text: 7-bit, 16-bit lengths. */
static void test_frame_header(void **state)
{
    (void)state;
    size_t n;
    ws_msg *m = ws_msg_new("{}", 2, 16);
    const unsigned char *f = ws_msg_frame(m, 16, &n);
    assert_int_equal(n, 4);
    assert_int_equal(f[0], 0x81);
    assert_int_equal(f[1], 2);
    assert_memory_equal(f + 2, "{}", 2);
    ws_msg_unref(m);
    char big[300];
    memset(big, 'x', sizeof(big));
    m = ws_msg_new(big, sizeof(big), 16);
    f = ws_msg_frame(m, 16, &n);
    assert_int_equal(n, 304);
    assert_int_equal(f[1], 126);
    assert_int_equal(f[2] << 8 | f[3], 300);
    ws_msg_unref(m);
}

/* A keyed message carries the key in its own block: the same key and
 * length ws_msg_set_ckey gives, the payload and its NUL untouched, and a
 * later set_ckey replaces it (ASan checks the inline one is not freed). */
static void test_keyed(void **state)
{
    (void)state;
    size_t n;
    ws_msg *m = ws_msg_alloc_keyed(7, 16, "dashboard:x", 11, "revenue", 7);
    memcpy(m->buf + 16, "{\"a\":1}", 7);
    assert_string_equal(m->ckey, "dashboard:x\x01revenue");
    assert_int_equal(m->ckey_len, 19);
    assert_string_equal(ws_msg_text(m, 16), "{\"a\":1}");
    assert_memory_equal(ws_msg_frame(m, 16, &n) + 2, "{\"a\":1}", 7);
    assert_int_equal(n, 9);
    ws_msg_set_ckey(m, "t", "cpu");
    assert_string_equal(m->ckey, "t\x01" "cpu");
    ws_msg_unref(m);
    m = ws_msg_alloc_keyed(2, 16, NULL, 0, NULL, 0);
    assert_null(m->ckey);
    ws_msg_unref(m);
}

/* A pub's tail is the message after its seq, as dumping the whole object
 * would end it: the dashboard (escaped when it must be), then data. */
static void test_pub_tail(void **state)
{
    (void)state;
    ws_pub *p = ws_pub_new(7, "metric", "d0", "cpu", "{\"v\":1}", 7);
    assert_int_equal(p->tlen, strlen(",\"dashboard_id\":\"d0\",\"data\":{\"v\":1}}"));
    assert_memory_equal(p->text, ",\"dashboard_id\":\"d0\",\"data\":{\"v\":1}}", p->tlen);
    assert_string_equal(p->type, "metric");
    assert_int_equal(p->type_len, 6);
    assert_string_equal(p->metric, "cpu");
    assert_int_equal(p->metric_len, 3);
    ws_pub_unref(p);
    p = ws_pub_new(8, "alert", "a\"b\\c", NULL, "null", 4);
    assert_int_equal(p->tlen, strlen(",\"dashboard_id\":\"a\\\"b\\\\c\",\"data\":null}"));
    assert_memory_equal(p->text, ",\"dashboard_id\":\"a\\\"b\\\\c\",\"data\":null}", p->tlen);
    assert_null(p->metric);
    assert_int_equal(p->metric_len, 0);
    ws_pub_unref(p);
    p = ws_pub_new(9, "log", NULL, NULL, "[]", 2);
    assert_int_equal(p->tlen, 11);
    assert_memory_equal(p->text, ",\"data\":[]}", 11);
    ws_pub_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_since_ranges),
        cmocka_unit_test(test_add_is_prune_then_push),
        cmocka_unit_test(test_age_and_gap),
        cmocka_unit_test(test_disabled_and_refs),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_grows_on_demand),
        cmocka_unit_test(test_frame_header),
        cmocka_unit_test(test_keyed),
        cmocka_unit_test(test_pub_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
