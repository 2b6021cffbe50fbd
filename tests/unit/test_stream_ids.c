/*
 * test_stream_ids - the set of stream entry ids a Redis source holds:
 * ids in order in its ring, the rest (older, or not an id) in its dict,
 * and 100,000 random operations checked against a plain list; and the
 * id parser the source's trim and the write-back journal share.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/stream_ids.h"

static void test_in_order(void **u)
{
    (void)u;
    sophia_stream_ids *s = sophia_stream_ids_new();
    assert_non_null(s);
    char id[48];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "1700000000000-%d", i);
        assert_int_equal(sophia_stream_ids_add(s, id), 0);
    }
    assert_int_equal(sophia_stream_ids_size(s), 1000);
    assert_true(sophia_stream_ids_has(s, "1700000000000-0"));
    assert_true(sophia_stream_ids_has(s, "1700000000000-999"));
    assert_false(sophia_stream_ids_has(s, "1700000000000-1000"));
    assert_false(sophia_stream_ids_has(s, "1699999999999-5"));
    sophia_stream_ids_del(s, "1700000000000-500"); /* from the middle */
    assert_false(sophia_stream_ids_has(s, "1700000000000-500"));
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "1700000000000-%d", i);
        sophia_stream_ids_del(s, id);
    }
    assert_int_equal(sophia_stream_ids_size(s), 0);
    sophia_stream_ids_free(s);
}

/* Older ids (a claim), ids that are not canonical numbers, and an id
 * removed and handed back again all stay findable and removable. */
static void test_the_rest(void **u)
{
    (void)u;
    sophia_stream_ids *s = sophia_stream_ids_new();
    const char *odd[] = {"abc", "01-1", "1-01", "1-", "-1", "1", "1-2-3",
                         "18446744073709551616-0", ""};
    assert_int_equal(sophia_stream_ids_add(s, "5-5"), 0);
    assert_int_equal(sophia_stream_ids_add(s, "5-1"), 0); /* older */
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
        assert_int_equal(sophia_stream_ids_add(s, odd[i]), 0);
    assert_int_equal(sophia_stream_ids_size(s), 11);
    assert_true(sophia_stream_ids_has(s, "5-1"));
    assert_true(sophia_stream_ids_has(s, "01-1"));
    assert_false(sophia_stream_ids_has(s, "1-1")); /* not "01-1" */
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        assert_true(sophia_stream_ids_has(s, odd[i]));
        sophia_stream_ids_del(s, odd[i]);
        assert_false(sophia_stream_ids_has(s, odd[i]));
    }
    assert_int_equal(sophia_stream_ids_add(s, "6-0"), 0);
    sophia_stream_ids_del(s, "6-0"); /* the tail: removed, not yet passed */
    assert_int_equal(sophia_stream_ids_add(s, "6-0"), 0); /* back again */
    assert_true(sophia_stream_ids_has(s, "6-0"));
    sophia_stream_ids_del(s, "6-0");
    assert_false(sophia_stream_ids_has(s, "6-0"));
    assert_int_equal(sophia_stream_ids_size(s), 2); /* 5-5, 5-1 */
    sophia_stream_ids_free(s);
}

/* A head never acknowledged while 20,000 later ids come and go: the
 * ring compacts behind it, and it and the newest stay found. */
static void test_a_head_that_stays(void **u)
{
    (void)u;
    sophia_stream_ids *s = sophia_stream_ids_new();
    char id[48], keep[48] = "";
    assert_int_equal(sophia_stream_ids_add(s, "7-0"), 0);
    for (int i = 1; i <= 20000; i++) {
        snprintf(id, sizeof(id), "7-%d", i);
        assert_int_equal(sophia_stream_ids_add(s, id), 0);
        if (i % 100 == 0) {
            memcpy(keep, id, sizeof(id)); /* every 100th stays */
            continue;
        }
        sophia_stream_ids_del(s, id);
    }
    assert_int_equal(sophia_stream_ids_size(s), 201);
    assert_true(sophia_stream_ids_has(s, "7-0"));
    assert_true(sophia_stream_ids_has(s, "7-100"));
    assert_true(sophia_stream_ids_has(s, keep));
    assert_false(sophia_stream_ids_has(s, "7-19999"));
    sophia_stream_ids_free(s);
}

/* Random adds (mostly in order, some older), removals in and out of
 * order, and a head that stays for long (compaction), against a list. */
static void test_against_a_list(void **u)
{
    (void)u;
    enum { OPS = 100000, MAX = 1024 };
    char **list = calloc(MAX, sizeof(*list));
    size_t n = 0;
    uint64_t ms = 1000, seq = 0, rng = 42;
    sophia_stream_ids *s = sophia_stream_ids_new();
    char id[48];
    for (int op = 0; op < OPS; op++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(rng >> 33);
        if (r % 100 < 55 && n < MAX) {
            if (r % 7 == 0 && ms > 1000) /* an older one, as a claim */
                snprintf(id, sizeof(id), "%llu-%u", (unsigned long long)(ms - 1),
                         r % 1000 + 100000);
            else
                snprintf(id, sizeof(id), "%llu-%llu", (unsigned long long)ms,
                         (unsigned long long)seq++);
            if (r % 11 == 0)
                ms++, seq = 0;
            int dup = 0;
            for (size_t i = 0; i < n && !dup; i++)
                dup = !strcmp(list[i], id);
            if (dup)
                continue;
            assert_int_equal(sophia_stream_ids_add(s, id), 0);
            list[n++] = strdup(id);
        } else if (n) {
            /* mostly the oldest but the first (which stays a while) */
            size_t i = r % 4 ? (n > 1 ? 1 : 0) : r % n;
            if (r % 997 == 0)
                i = 0;
            assert_true(sophia_stream_ids_has(s, list[i]));
            sophia_stream_ids_del(s, list[i]);
            assert_false(sophia_stream_ids_has(s, list[i]));
            free(list[i]);
            memmove(list + i, list + i + 1, (n - i - 1) * sizeof(*list));
            n--;
        }
        assert_int_equal(sophia_stream_ids_size(s), n);
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(sophia_stream_ids_has(s, list[i]));
        free(list[i]);
    }
    free(list);
    sophia_stream_ids_free(s);
}

/* Ids as Redis writes them parse; anything else is refused, so one id
 * has one text (the ring's numbers stand for the dict's strings). */
static void test_xid_parse(void **u)
{
    (void)u;
    sophia_xid v;
    assert_int_equal(sophia_xid_parse("1733212800000-7", &v), 0);
    assert_true(v.ms == 1733212800000ULL && v.seq == 7);
    assert_int_equal(sophia_xid_parse("0-0", &v), 0);
    assert_true(v.ms == 0 && v.seq == 0);
    assert_int_equal(sophia_xid_parse("18446744073709551615-1", &v), 0);
    assert_true(v.ms == UINT64_MAX);
    const char *bad[] = {"", "1", "1-", "-1", "01-2", "1-02", "1-2x", "+1-2",
                         " 1-2", "1--2", "18446744073709551616-0",
                         "18446744073709551620-0", "99999999999999999999-0",
                         "100000000000000000000-0", "1-18446744073709551616"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sophia_xid_parse(bad[i], &v), -1);
    assert_int_equal(sophia_xid_parse(NULL, &v), -1);
    /* every length up to 20 digits, both halves, against printf */
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 4000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t ms = i < 2 ? UINT64_MAX - (uint64_t)i : x >> (i % 64);
        uint64_t seq = x >> ((i * 7) % 64);
        char t[48];
        snprintf(t, sizeof(t), "%llu-%llu", (unsigned long long)ms,
                 (unsigned long long)seq);
        assert_int_equal(sophia_xid_parse(t, &v), 0);
        assert_true(v.ms == ms && v.seq == seq);
    }

    sophia_xid a = {5, 9}, b = {6, 0}, c = {6, 1};
    assert_true(sophia_xid_cmp(a, b) < 0 && sophia_xid_cmp(b, a) > 0);
    assert_true(sophia_xid_cmp(b, c) < 0 && sophia_xid_cmp(c, c) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_the_rest),
        cmocka_unit_test(test_a_head_that_stays),
        cmocka_unit_test(test_against_a_list),
        cmocka_unit_test(test_xid_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
