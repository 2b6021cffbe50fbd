/*
 * test_stream - the dedup window streams and the Slack hook share: ids
 * seen inside the window, expiry by time, the size bound, re-adds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/server.h"

#include "ingest/stream.h"


sophia_server *sophia_srv; /* the daemon defines it in main.c */
static void test_window(void **u)
{
    (void)u;
    sophia_dedup *d = sophia_dedup_new(10, 100);
    int64_t t = 1000000000;
    assert_false(sophia_dedup_seen(d, "a", t));
    sophia_dedup_add(d, "a", t);
    assert_true(sophia_dedup_seen(d, "a", t + 9999999));
    assert_false(sophia_dedup_seen(d, "a", t + 10000000));
    assert_int_equal(sophia_dedup_size(d), 0);
    sophia_dedup_free(d);
}

static void test_bound_and_readd(void **u)
{
    (void)u;
    sophia_dedup *d = sophia_dedup_new(3600, 3);
    char id[16];
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "e%d", i);
        sophia_dedup_add(d, id, 1);
    }
    assert_int_equal(sophia_dedup_size(d), 3);
    assert_false(sophia_dedup_seen(d, "e0", 2));
    assert_true(sophia_dedup_seen(d, "e4", 2));
    /* a re-add refreshes the id; the old node expiring must not drop it */
    sophia_dedup *w = sophia_dedup_new(10, 100);
    sophia_dedup_add(w, "x", 0);
    sophia_dedup_add(w, "x", 5000000);
    assert_true(sophia_dedup_seen(w, "x", 12000000));
    assert_false(sophia_dedup_seen(w, "x", 15000000));
    sophia_dedup_free(w);
    sophia_dedup_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window),
        cmocka_unit_test(test_bound_and_readd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
