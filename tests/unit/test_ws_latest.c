/*
 * test_ws_latest - the table behind the `latest` request and GET
 * /api/dashboards: one message per metric (replaced, with the old one's
 * reference dropped), oldest update first, the bounds making room by
 * least recent update, a put to a pair the bounds dropped (the cache of
 * recent pairs must not keep the freed entry: ASan in --sanitize), and
 * the per-topic listing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws/ws_latest.h"

#define PRE 16

static ws_msg *msg(const char *text)
{
    return ws_msg_new(text, strlen(text), PRE);
}

/* Puts a fresh message and drops the caller's reference. */
static ws_msg *put(ws_latest *l, const char *topic, const char *metric,
                   const char *text, int64_t ms)
{
    ws_msg *m = msg(text);
    ws_latest_put(l, topic, metric, m, ms);
    ws_msg_unref(m);
    return m;
}

static char *texts(const ws_latest *l, const char *topic)
{
    static char buf[256];
    ws_msg **v;
    size_t n = ws_latest_get(l, topic, &v);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(buf, ws_msg_text(v[i], PRE));
        strcat(buf, i + 1 < n ? " " : "");
    }
    free(v);
    return buf;
}

static void test_latest_per_metric_oldest_first(void **state)
{
    (void)state;
    ws_latest *l = ws_latest_new(8, 8);
    put(l, "dashboard:a", "rev", "r1", 1);
    put(l, "dashboard:a", "users", "u1", 2);
    assert_string_equal(texts(l, "dashboard:a"), "r1 u1");
    ws_msg *kept = put(l, "dashboard:a", "rev", "r2", 3);
    assert_int_equal(kept->refs, 1); /* the table's reference only */
    assert_string_equal(texts(l, "dashboard:a"), "u1 r2");
    assert_string_equal(texts(l, "dashboard:none"), "");
    ws_latest_free(l);
}

static void test_bounds_make_room_by_least_recent(void **state)
{
    (void)state;
    ws_latest *l = ws_latest_new(2, 2);
    put(l, "dashboard:a", "m1", "a1", 1);
    put(l, "dashboard:a", "m2", "a2", 2);
    put(l, "dashboard:a", "m1", "a1b", 3); /* m2 is now the oldest */
    put(l, "dashboard:a", "m3", "a3", 4);
    assert_string_equal(texts(l, "dashboard:a"), "a1b a3");
    put(l, "dashboard:b", "m", "b", 5);
    put(l, "dashboard:a", "m1", "a1c", 6); /* b is the least recent topic */
    put(l, "dashboard:c", "m", "c", 7);
    assert_int_equal(ws_latest_topics(l), 2);
    assert_string_equal(texts(l, "dashboard:b"), "");
    assert_string_equal(texts(l, "dashboard:c"), "c");
    assert_string_equal(texts(l, "dashboard:a"), "a3 a1c");
    ws_latest_free(l);
}

static void test_dropped_pairs_are_made_again(void **state)
{
    (void)state;
    ws_latest *l = ws_latest_new(1, 1);
    put(l, "dashboard:a", "m1", "x", 1);
    put(l, "dashboard:a", "m2", "y", 2); /* m1 makes room */
    ws_msg *z = put(l, "dashboard:a", "m1", "z", 3); /* m2 makes room */
    assert_string_equal(texts(l, "dashboard:a"), "z");
    assert_int_equal(z->refs, 1);
    put(l, "dashboard:b", "m1", "b", 4); /* topic a makes room */
    put(l, "dashboard:a", "m1", "a2", 5); /* topic b makes room */
    assert_int_equal(ws_latest_topics(l), 1);
    assert_string_equal(texts(l, "dashboard:a"), "a2");
    assert_string_equal(texts(l, "dashboard:b"), "");
    ws_latest_free(l);
}

typedef struct seen {
    char names[4][32];
    size_t metrics[4];
    int64_t ms[4];
    size_t n;
} seen;

static void collect(const char *topic, size_t metrics, int64_t ms, void *arg)
{
    seen *s = arg;
    snprintf(s->names[s->n], sizeof(s->names[0]), "%s", topic);
    s->metrics[s->n] = metrics;
    s->ms[s->n++] = ms;
}

static void test_each_topic(void **state)
{
    (void)state;
    ws_latest *l = ws_latest_new(0, 0); /* defaults */
    put(l, "dashboard:x", "m1", "1", 1000);
    put(l, "dashboard:x", "m2", "2", 2500);
    seen s = {0};
    ws_latest_each(l, collect, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.names[0], "dashboard:x");
    assert_int_equal(s.metrics[0], 2);
    assert_int_equal(s.ms[0], 2500);
    ws_latest_free(l);
    ws_latest_each(NULL, collect, &s); /* no table: nothing */
    assert_int_equal(s.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latest_per_metric_oldest_first),
        cmocka_unit_test(test_bounds_make_room_by_least_recent),
        cmocka_unit_test(test_dropped_pairs_are_made_again),
        cmocka_unit_test(test_each_topic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
