/*
 * test_cache_l1 - the L1 cache against its contract: values round-trip,
 * TTL follows the caller's clock, both bounds hold after every put, tags
 * invalidate exactly their entries, counters add up, the policy survives a
 * scan and beats LRU on a Zipf trace, and a long random run agrees with a
 * trivial reference model.
 *
 * Traces use a fixed-seed generator so a failure reproduces exactly.
 */
#include <malloc.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache/cache_l1.h"
#include "../common/trace_ref.h"

#define BIG ((size_t)64 << 20)

/* ------------------------------------------------------------- helpers */

static size_t rng_below(uint64_t *s, size_t n)
{
    return (size_t)(rng_next(s) % n);
}

/* Read-through on the L1: get, and put on a miss. True on a hit. */
static bool l1_access(sophia_l1 *c, size_t id)
{
    char key[32];
    snprintf(key, sizeof(key), "key:%zu", id);
    if (sophia_l1_get(c, key, 1, NULL, NULL) == 0)
        return true;
    char val[32];
    memset(val, 'v', sizeof(val));
    assert_int_equal(sophia_l1_put(c, key, val, sizeof(val), 0, NULL, 1), 0);
    return false;
}

static void put_str(sophia_l1 *c, const char *k, const char *v,
                    int64_t expires, const char *const *tags, int64_t now)
{
    assert_int_equal(sophia_l1_put(c, k, v, strlen(v), expires, tags, now), 0);
}

static void assert_value(sophia_l1 *c, const char *k, const char *want,
                         int64_t now)
{
    const void *v = NULL;
    size_t len = 0;
    assert_int_equal(sophia_l1_get(c, k, now, &v, &len), 0);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
}

static void assert_miss(sophia_l1 *c, const char *k, int64_t now)
{
    assert_int_equal(sophia_l1_get(c, k, now, NULL, NULL), SOPHIA_ENOENT);
}

static sophia_l1_stats stats_of(const sophia_l1 *c)
{
    sophia_l1_stats st;
    sophia_l1_get_stats(c, &st);
    return st;
}

/* --------------------------------------------------------------- tests */

static void test_new_rejects_zero_bounds(void **state)
{
    (void)state;
    assert_null(sophia_l1_new(0, 1024));
    assert_null(sophia_l1_new(10, 0));
    sophia_l1_free(NULL);
}

static void test_put_get_overwrite(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(100, BIG);
    assert_non_null(c);
    assert_miss(c, "a", 0);
    put_str(c, "a", "{\"x\":1}", 0, NULL, 0);
    assert_value(c, "a", "{\"x\":1}", 0);

    sophia_l1_hit h1, h2;
    assert_int_equal(sophia_l1_lookup(c, "a", 0, &h1), 0);
    put_str(c, "a", "{\"x\":22}", 500, NULL, 0);
    assert_value(c, "a", "{\"x\":22}", 0);
    assert_int_equal(sophia_l1_lookup(c, "a", 0, &h2), 0);
    assert_true(h2.version > h1.version);
    assert_int_equal(h2.expires_us, 500);
    assert_int_equal(h2.version, sophia_l1_generation(c));

    /* Empty values and binary bytes are values like any other. */
    assert_int_equal(sophia_l1_put(c, "empty", NULL, 0, 0, NULL, 0), 0);
    size_t len = 99;
    assert_int_equal(sophia_l1_get(c, "empty", 0, NULL, &len), 0);
    assert_int_equal(len, 0);
    const unsigned char bin[4] = {0, 255, 0, 7};
    assert_int_equal(sophia_l1_put(c, "bin", bin, 4, 0, NULL, 0), 0);
    const void *v;
    assert_int_equal(sophia_l1_get(c, "bin", 0, &v, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(v, bin, 4);

    assert_int_equal(stats_of(c).entries, 3);
    assert_int_equal(sophia_l1_put(c, NULL, "x", 1, 0, NULL, 0),
                     SOPHIA_EINVAL);
    assert_int_equal(sophia_l1_put(c, "k", NULL, 3, 0, NULL, 0),
                     SOPHIA_EINVAL);
    sophia_l1_free(c);
}

/* An overwrite with the same tags and a value of about the same size
 * reuses the entry in place (cache_l1.c l1_fits): the new value, length,
 * expiry and version are what a read sees, the tags still find it, and
 * changed tags or a much smaller value take a new entry. */
static void test_overwrite_in_place(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(100, BIG);
    const char *tags[] = {"metrics", "dashboard:d0", NULL};
    put_str(c, "m", "{\"value\":12345.5}", 0, tags, 0);
    size_t bytes = stats_of(c).bytes;
    sophia_l1_hit h1, h2;
    assert_int_equal(sophia_l1_lookup(c, "m", 0, &h1), 0);
    put_str(c, "m", "{\"value\":7}", 900, tags, 0); /* shorter */
    assert_value(c, "m", "{\"value\":7}", 0);
    assert_int_equal(sophia_l1_lookup(c, "m", 0, &h2), 0);
    assert_true(h2.version > h1.version);
    assert_int_equal(h2.expires_us, 900);
    assert_int_equal(stats_of(c).bytes, bytes); /* the same allocation */
    put_str(c, "m", "{\"value\":12345.75}", 0, tags, 0); /* longer again */
    assert_value(c, "m", "{\"value\":12345.75}", 0);
    assert_int_equal(stats_of(c).entries, 1);
    assert_int_equal(sophia_l1_invalidate_tag(c, "dashboard:d0"), 1);
    assert_miss(c, "m", 0);

    /* Other tags: the old ones no longer find it, the new ones do. */
    put_str(c, "m", "{\"value\":1}", 0, tags, 0);
    const char *other[] = {"metrics", "dashboard:d1", NULL};
    put_str(c, "m", "{\"value\":2}", 0, other, 0);
    assert_int_equal(sophia_l1_invalidate_tag(c, "dashboard:d0"), 0);
    assert_value(c, "m", "{\"value\":2}", 0);
    assert_int_equal(sophia_l1_invalidate_tag(c, "dashboard:d1"), 1);

    /* A value much smaller than the entry holds takes a smaller one. */
    char big[512];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    put_str(c, "b", big, 0, NULL, 0);
    bytes = stats_of(c).bytes;
    put_str(c, "b", "y", 0, NULL, 0);
    assert_value(c, "b", "y", 0);
    assert_true(stats_of(c).bytes < bytes);
    sophia_l1_free(c);
}

static void test_too_big_and_bad_tags_drop_stale_value(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(100, 8192);
    assert_non_null(c);
    char big[2048];
    memset(big, 'x', sizeof(big));
    put_str(c, "k", "old", 0, NULL, 0);
    assert_int_equal(sophia_l1_put(c, "k", big, sizeof(big), 0, NULL, 0),
                     SOPHIA_ETOOBIG);
    assert_miss(c, "k", 0);
    assert_int_equal(stats_of(c).rejections, 1);
    assert_int_equal(stats_of(c).entries, 0);

    const char *many[SOPHIA_L1_MAX_TAGS + 2];
    char names[SOPHIA_L1_MAX_TAGS + 1][16];
    for (int i = 0; i <= SOPHIA_L1_MAX_TAGS; i++) {
        snprintf(names[i], sizeof(names[i]), "t%d", i);
        many[i] = names[i];
    }
    many[SOPHIA_L1_MAX_TAGS + 1] = NULL;
    put_str(c, "k", "old", 0, NULL, 0);
    assert_int_equal(sophia_l1_put(c, "k", "new", 3, 0, many, 0),
                     SOPHIA_EINVAL);
    assert_miss(c, "k", 0);
    /* Exactly the limit is fine, duplicates do not count. */
    many[SOPHIA_L1_MAX_TAGS] = "t0";
    put_str(c, "k", "new", 0, many, 0);
    assert_value(c, "k", "new", 0);
    assert_int_equal(sophia_l1_invalidate_tag(c, "t15"), 1);
    sophia_l1_free(c);
}

static void test_ttl_follows_caller_clock(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(100, BIG);
    assert_non_null(c);
    put_str(c, "short", "s", 1000, NULL, 0);
    put_str(c, "forever", "f", 0, NULL, 0);
    assert_value(c, "short", "s", 999);
    assert_miss(c, "short", 1000);
    assert_miss(c, "short", 500); /* gone for good once seen expired */
    assert_value(c, "forever", "f", INT64_MAX);
    sophia_l1_stats st = stats_of(c);
    assert_int_equal(st.expirations, 1);
    assert_int_equal(st.entries, 1);

    /* Overwriting an expired key starts fresh. */
    put_str(c, "again", "1", 100, NULL, 0);
    put_str(c, "again", "2", 300, NULL, 200);
    assert_value(c, "again", "2", 250);
    assert_int_equal(stats_of(c).expirations, 2);

    /* Sweep reclaims expired entries nobody asks for. */
    char k[32];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "ttl%d", i);
        put_str(c, k, "v", 5000 + (i % 2) * 100000, NULL, 0);
    }
    assert_int_equal(sophia_l1_sweep(c, 4000, 1 << 20), 1); /* "again" */
    size_t removed = 0;
    for (int round = 0; round < 100; round++)
        removed += sophia_l1_sweep(c, 6000, 16);
    assert_int_equal(removed, 25); /* the even ttl keys, in small steps */
    assert_int_equal(stats_of(c).entries, 26); /* odd ones + "forever" */
    assert_int_equal(stats_of(c).expirations, 28);
    assert_value(c, "ttl1", "v", 6000);
    sophia_l1_free(c);
}

static void test_bounded_by_entries(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(100, BIG);
    assert_non_null(c);
    char k[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "e%d", i);
        put_str(c, k, "value", 0, NULL, 0);
        assert_true(stats_of(c).entries <= 100);
        assert_value(c, k, "value", 0); /* a put never evicts itself */
    }
    sophia_l1_stats st = stats_of(c);
    assert_int_equal(st.entries, 100);
    assert_int_equal(st.evictions, 9900);
    assert_int_equal(st.inserts, 10000);
    sophia_l1_free(c);
}

static void test_bounded_by_bytes(void **state)
{
    (void)state;
    const size_t max_bytes = 64 * 1024;
    sophia_l1 *c = sophia_l1_new(1000000, max_bytes);
    assert_non_null(c);
    uint64_t rng = 42;
    char k[32], v[1500];
    memset(v, 'b', sizeof(v));
    size_t payload = 0;
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof(k), "b%zu", rng_below(&rng, 3000));
        size_t len = rng_below(&rng, 1000);
        const char *tags[] = {"t", i % 2 ? "odd" : "even", NULL};
        assert_int_equal(sophia_l1_put(c, k, v, len, 0, tags, 0), 0);
        sophia_l1_stats st = stats_of(c);
        assert_true(st.bytes <= max_bytes);
        /* Charged bytes include the key, the value and the overhead. */
        assert_true(st.bytes >= len + strlen(k));
        payload += len;
        /* Fetching a value just put must work (and reads are accesses). */
        if (i % 3 == 0) {
            size_t got;
            assert_int_equal(sophia_l1_get(c, k, 0, NULL, &got), 0);
            assert_int_equal(got, len);
        }
    }
    sophia_l1_stats st = stats_of(c);
    assert_true(st.evictions > 0);
    assert_true(st.bytes > max_bytes / 2); /* it is used, not emptied */
    assert_true(payload > max_bytes);
    /* Tag invalidation of everything empties the byte count exactly. */
    sophia_l1_invalidate_tag(c, "t");
    assert_int_equal(stats_of(c).bytes, 0);
    assert_int_equal(stats_of(c).entries, 0);
    sophia_l1_free(c);
}

static void test_tag_invalidation_is_exact(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(1000, BIG);
    assert_non_null(c);
    char k[32];
    for (int i = 0; i < 100; i++) {
        const char *tags[3] = {NULL, NULL, NULL};
        int n = 0;
        if (i % 2 == 0)
            tags[n++] = "even";
        if (i % 3 == 0)
            tags[n++] = "three";
        snprintf(k, sizeof(k), "k%d", i);
        put_str(c, k, k, 0, tags, 0);
    }
    /* k3 is re-put without its tag; k4 gains "three". */
    put_str(c, "k3", "k3b", 0, NULL, 0);
    const char *t3[] = {"three", "even", NULL};
    put_str(c, "k4", "k4b", 0, t3, 0);

    assert_int_equal(sophia_l1_invalidate_tag(c, "nope"), 0);
    /* multiples of 3 in 0..99: 34; minus k3, plus k4. */
    assert_int_equal(sophia_l1_invalidate_tag(c, "three"), 34);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        bool gone = (i % 3 == 0 && i != 3) || i == 4;
        if (gone)
            assert_miss(c, k, 0);
        else
            assert_int_equal(sophia_l1_get(c, k, 0, NULL, NULL), 0);
    }
    assert_value(c, "k3", "k3b", 0);
    /* evens left: 50 minus the 17 even multiples of 3 (0,6,..,96), minus k4 */
    assert_int_equal(sophia_l1_invalidate_tag(c, "even"), 32);
    assert_int_equal(sophia_l1_invalidate_tag(c, "even"), 0);
    assert_int_equal(stats_of(c).entries, 100 - 34 - 32);
    assert_int_equal(stats_of(c).invalidations, 66);
    sophia_l1_free(c);
}

static void test_delete(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(10, BIG);
    assert_non_null(c);
    const char *tags[] = {"grp", NULL};
    put_str(c, "a", "1", 0, tags, 0);
    put_str(c, "b", "2", 0, tags, 0);
    assert_int_equal(sophia_l1_del(c, "a"), 0);
    assert_int_equal(sophia_l1_del(c, "a"), SOPHIA_ENOENT);
    assert_int_equal(sophia_l1_del(c, "zzz"), SOPHIA_ENOENT);
    assert_miss(c, "a", 0);
    assert_value(c, "b", "2", 0);
    /* The deleted key no longer belongs to its tag. */
    assert_int_equal(sophia_l1_invalidate_tag(c, "grp"), 1);
    put_str(c, "c", "3", 0, NULL, 0);
    sophia_l1_clear(c);
    assert_miss(c, "c", 0);
    assert_int_equal(stats_of(c).entries, 0);
    sophia_l1_free(c);
}

static void test_stats_count(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(3, BIG);
    assert_non_null(c);
    put_str(c, "a", "1", 0, NULL, 0);
    put_str(c, "b", "2", 10, NULL, 0);
    put_str(c, "a", "11", 0, NULL, 0);
    assert_int_equal(sophia_l1_get(c, "a", 0, NULL, NULL), 0);
    assert_int_equal(sophia_l1_get(c, "a", 0, NULL, NULL), 0);
    assert_miss(c, "x", 0);
    assert_miss(c, "b", 20);
    put_str(c, "c", "3", 0, NULL, 0);
    put_str(c, "d", "4", 0, NULL, 0);
    put_str(c, "e", "5", 0, NULL, 0); /* 4 live keys > 3: one eviction */
    assert_int_equal(sophia_l1_del(c, "a"), 0);
    sophia_l1_stats st = stats_of(c);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.expirations, 1);
    assert_int_equal(st.inserts, 6);
    assert_int_equal(st.evictions, 1);
    assert_int_equal(st.invalidations, 1);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.small_entries + st.main_entries, 2);
    assert_int_equal(st.max_entries, 3);
    assert_true(st.bytes > 2 * 2 && st.bytes < 1024);
    sophia_l1_free(c);
}

static void test_hits_do_not_allocate(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(100, BIG);
    assert_non_null(c);
    put_str(c, "k", "value", 0, NULL, 0);
    const void *first, *v;
    assert_int_equal(sophia_l1_get(c, "k", 0, &first, NULL), 0);
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(sophia_l1_get(c, "k", 0, &v, NULL), 0);
        assert_ptr_equal(v, first);
    }
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(after.uordblks, before.uordblks);
    assert_int_equal(after.hblkhd, before.hblkhd);
    sophia_l1_free(c);
}

/* The failure LRU is known for: one pass over cold keys flushes the hot
 * working set. */
static void test_scan_does_not_flush_hot_set(void **state)
{
    (void)state;
    const size_t cap = 1000, hot = 100, scan = 5000;
    sophia_l1 *c = sophia_l1_new(cap, BIG);
    assert_non_null(c);
    lru ref;
    assert_true(lru_init(&ref, hot + scan, cap));
    for (int round = 0; round < 5; round++)
        for (size_t id = 0; id < hot; id++) {
            l1_access(c, id);
            lru_access(&ref, id);
        }
    for (size_t id = hot; id < hot + scan; id++) {
        assert_false(l1_access(c, id));
        assert_false(lru_access(&ref, id));
    }
    size_t l1_hits = 0, lru_hits = 0;
    for (size_t id = 0; id < hot; id++) {
        l1_hits += l1_access(c, id);
        lru_hits += lru_access(&ref, id);
    }
    assert_int_equal(l1_hits, hot);
    assert_int_equal(lru_hits, 0);
    assert_true(stats_of(c).entries <= cap);
    lru_free(&ref);
    sophia_l1_free(c);
}

/* Keys reused at a distance longer than the probationary queue but within
 * the cache get in through the ghost (and push out main entries nobody
 * reads any more) instead of cycling through probation forever. */
static void test_ghost_admits_medium_reuse(void **state)
{
    (void)state;
    const size_t cap = 1000, old = 900, hot = 300;
    sophia_l1 *c = sophia_l1_new(cap, BIG);
    assert_non_null(c);
    for (int round = 0; round < 3; round++) /* main fills with "old" */
        for (size_t id = 0; id < old; id++)
            l1_access(c, id);
    size_t unique = 1000000, last_pass_hits = 0;
    for (int pass = 0; pass < 10; pass++) {
        last_pass_hits = 0;
        for (size_t id = old; id < old + hot; id++) {
            last_pass_hits += l1_access(c, id);
            l1_access(c, unique++);
        }
    }
    assert_int_equal(last_pass_hits, hot);
    sophia_l1_free(c);
}

static void hit_rates(double s, size_t keys, size_t cap, size_t len,
                      double *l1_rate, double *lru_rate)
{
    zipf z;
    assert_true(zipf_init(&z, keys, s));
    sophia_l1 *c = sophia_l1_new(cap, BIG);
    assert_non_null(c);
    lru ref;
    assert_true(lru_init(&ref, keys, cap));
    uint64_t rng = 20240601;
    size_t l1_hits = 0, lru_hits = 0;
    for (size_t i = 0; i < len; i++) {
        size_t id = zipf_next(&z, &rng);
        l1_hits += l1_access(c, id);
        lru_hits += lru_access(&ref, id);
    }
    *l1_rate = (double)l1_hits / (double)len;
    *lru_rate = (double)lru_hits / (double)len;
    lru_free(&ref);
    sophia_l1_free(c);
    free(z.cdf);
}

static void test_zipf_beats_lru(void **state)
{
    (void)state;
    double l1, ref;
    hit_rates(0.9, 20000, 1000, 300000, &l1, &ref);
    print_message("zipf(0.9) 20000 keys, 1000 entries: l1 %.4f lru %.4f\n",
                  l1, ref);
    assert_true(l1 > ref + 0.05);
    hit_rates(0.9, 20000, 200, 300000, &l1, &ref);
    print_message("zipf(0.9) 20000 keys, 200 entries: l1 %.4f lru %.4f\n", l1,
                  ref);
    assert_true(l1 > ref + 0.05);
}

static void test_hottest_ranks_by_recent_use(void **state)
{
    (void)state;
    sophia_l1 *c = sophia_l1_new(1000, BIG);
    assert_non_null(c);
    char k[32];
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof(k), "c%d", i);
        put_str(c, k, "cold", 0, NULL, 0);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "h%d", i);
        put_str(c, k, "v", i == 19 ? 50 : 0, NULL, 0);
        for (int j = 0; j < (i + 1) * 3; j++)
            assert_int_equal(sophia_l1_get(c, k, 0, NULL, NULL), 0);
    }
    const char *keys[5];
    /* h19 is the hottest but expired at t=60: skipped. */
    assert_int_equal(sophia_l1_hottest(c, 60, keys, 5), 5);
    assert_string_equal(keys[0], "h18");
    assert_string_equal(keys[1], "h17");
    assert_string_equal(keys[4], "h14");
    const char *all[64];
    assert_int_equal(sophia_l1_hottest(c, 0, all, 64), 64);
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof(k), "h%d", 19 - i);
        assert_string_equal(all[i], k);
    }
    assert_int_equal(all[20][0], 'c');

    /* Old popularity fades: after epochs of traffic on the cold keys (40
     * reads each), 30 recent reads of h1 outrank h18's 57 and theirs. */
    for (int round = 0; round < 40; round++)
        for (int i = 0; i < 200; i++) {
            snprintf(k, sizeof(k), "c%d", i);
            assert_int_equal(sophia_l1_get(c, k, 0, NULL, NULL), 0);
        }
    for (int j = 0; j < 30; j++)
        assert_int_equal(sophia_l1_get(c, "h1", 0, NULL, NULL), 0);
    assert_int_equal(sophia_l1_hottest(c, 60, keys, 1), 1);
    assert_string_equal(keys[0], "h1");
    sophia_l1_free(c);
}

/* ------------------------------------------------------- reference model */

#define M_KEYS 200
#define M_TAGS 6
#define M_VMAX 300

typedef struct model_entry {
    bool present;
    unsigned char val[M_VMAX];
    size_t len;
    int64_t expires;
    unsigned tags; /* bitmask over tag_names */
} model_entry;

static const char *const tag_names[M_TAGS] = {"ta", "tb", "tc",
                                              "td", "te", "tf"};

static bool model_live(const model_entry *m, int64_t now)
{
    return m->present && (m->expires == 0 || now < m->expires);
}

static void model_check_get(sophia_l1 *c, model_entry *m, const char *k,
                            int64_t now)
{
    const void *v;
    size_t len;
    int rc = sophia_l1_get(c, k, now, &v, &len);
    if (rc == SOPHIA_ENOENT)
        return; /* evictions make misses legal at any time */
    assert_int_equal(rc, 0);
    assert_true(model_live(m, now));
    assert_int_equal(len, m->len);
    if (len)
        assert_memory_equal(v, m->val, len);
}

static void model_put(sophia_l1 *c, model_entry *m, const char *k,
                      uint64_t *rng, int64_t now)
{
    m->len = rng_below(rng, M_VMAX);
    for (size_t i = 0; i < m->len; i++)
        m->val[i] = (unsigned char)rng_next(rng);
    m->expires = rng_below(rng, 3) ? 0 : now + (int64_t)rng_below(rng, 5000);
    m->tags = (unsigned)rng_below(rng, 1u << M_TAGS) &
              (unsigned)rng_below(rng, 1u << M_TAGS);
    const char *tags[M_TAGS + 1];
    size_t n = 0;
    for (int t = 0; t < M_TAGS; t++)
        if (m->tags & (1u << t))
            tags[n++] = tag_names[t];
    tags[n] = NULL;
    assert_int_equal(
        sophia_l1_put(c, k, m->val, m->len, m->expires, tags, now), 0);
    m->present = true;
}

static void model_invalidate(sophia_l1 *c, model_entry *model, int t)
{
    size_t tagged = 0;
    for (int i = 0; i < M_KEYS; i++)
        if (model[i].present && (model[i].tags & (1u << t))) {
            tagged++;
            model[i].present = false;
        }
    assert_true(sophia_l1_invalidate_tag(c, tag_names[t]) <= tagged);
}

static void test_random_ops_match_model(void **state)
{
    (void)state;
    const size_t max_entries = 64, max_bytes = 16 * 1024;
    sophia_l1 *c = sophia_l1_new(max_entries, max_bytes);
    assert_non_null(c);
    model_entry *model = calloc(M_KEYS, sizeof(*model));
    assert_non_null(model);
    uint64_t rng = 7;
    int64_t now = 1;
    size_t hits = 0;
    for (int op = 0; op < 200000; op++) {
        size_t i = rng_below(&rng, M_KEYS);
        char k[32];
        snprintf(k, sizeof(k), "m%zu", i);
        size_t r = rng_below(&rng, 100);
        if (r < 45) {
            uint64_t before = stats_of(c).hits;
            model_check_get(c, &model[i], k, now);
            hits += stats_of(c).hits - before;
        } else if (r < 80) {
            model_put(c, &model[i], k, &rng, now);
        } else if (r < 88) {
            int rc = sophia_l1_del(c, k);
            assert_true(rc == SOPHIA_ENOENT || (rc == 0 && model[i].present));
            model[i].present = false;
        } else if (r < 91) {
            model_invalidate(c, model, (int)rng_below(&rng, M_TAGS));
        } else if (r < 99) {
            now += (int64_t)rng_below(&rng, 200);
        } else {
            sophia_l1_sweep(c, now, 32);
        }
        sophia_l1_stats st = stats_of(c);
        assert_true(st.entries <= max_entries);
        assert_true(st.bytes <= max_bytes);
    }
    /* Whatever is still cached must be what the model says. */
    for (size_t i = 0; i < M_KEYS; i++) {
        char k[32];
        snprintf(k, sizeof(k), "m%zu", i);
        model_check_get(c, &model[i], k, now);
    }
    assert_true(hits > 1000); /* the run exercised hits, not just misses */
    free(model);
    sophia_l1_free(c);
}

/* sophia_l1_expiry saturates: a TTL of 1e16 s (expires_ms near 1e19, as
 * a put once computed) lands at "never reached", not in the past. */
static void test_expiry_saturates(void **state)
{
    (void)state;
    const int64_t wall = 1700000000000, mono = 5000000, cap = 300000000;
    /* the common case: min(left, cap) */
    assert_int_equal(sophia_l1_expiry(wall + 2000, wall, mono, cap),
                     mono + 2000000);
    assert_int_equal(sophia_l1_expiry(wall + 3600000, wall, mono, cap),
                     mono + cap);
    assert_int_equal(sophia_l1_expiry(0, wall, mono, cap), mono + cap);
    /* already past: now (never hits), not a wrapped future */
    assert_int_equal(sophia_l1_expiry(wall - 5, wall, mono, cap), mono);
    assert_int_equal(sophia_l1_expiry(INT64_MIN + 1, wall, mono, cap), mono);
    /* overflow in every step: ms difference, ×1000, mono + left */
    assert_int_equal(sophia_l1_expiry(INT64_MAX, -wall, mono, INT64_MAX),
                     INT64_MAX);
    assert_int_equal(sophia_l1_expiry(INT64_MAX / 10, wall, mono, INT64_MAX),
                     INT64_MAX);
    assert_int_equal(sophia_l1_expiry(wall + 10, wall, INT64_MAX - 5,
                                      INT64_MAX),
                     INT64_MAX);
    assert_int_equal(sophia_l1_expiry(INT64_MAX, wall, mono, cap), mono + cap);
    /* a non-positive cap keeps nothing */
    assert_int_equal(sophia_l1_expiry(wall + 2000, wall, mono, -1), mono);
    /* and an entry put with the saturated expiry is served */
    sophia_l1 *c = sophia_l1_new(16, 1 << 20);
    assert_int_equal(sophia_l1_put(c, "k", "v", 1,
                                   sophia_l1_expiry(INT64_MAX, wall, mono,
                                                    INT64_MAX),
                                   NULL, mono),
                     0);
    assert_int_equal(sophia_l1_get(c, "k", mono + 1000000, NULL, NULL), 0);
    sophia_l1_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_zero_bounds),
        cmocka_unit_test(test_put_get_overwrite),
        cmocka_unit_test(test_overwrite_in_place),
        cmocka_unit_test(test_too_big_and_bad_tags_drop_stale_value),
        cmocka_unit_test(test_ttl_follows_caller_clock),
        cmocka_unit_test(test_bounded_by_entries),
        cmocka_unit_test(test_bounded_by_bytes),
        cmocka_unit_test(test_tag_invalidation_is_exact),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_stats_count),
        cmocka_unit_test(test_hits_do_not_allocate),
        cmocka_unit_test(test_scan_does_not_flush_hot_set),
        cmocka_unit_test(test_ghost_admits_medium_reuse),
        cmocka_unit_test(test_zipf_beats_lru),
        cmocka_unit_test(test_hottest_ranks_by_recent_use),
        cmocka_unit_test(test_random_ops_match_model),
        cmocka_unit_test(test_expiry_saturates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
