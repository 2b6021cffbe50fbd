/*
 * test_dict - sophia_hash (SipHash-1-3 under the process key) and the dict
 * built on it: known SipHash-1-3 values, different keys giving different
 * hashes and bucket orders for the same client keys, and the dict still
 * storing, finding, replacing and deleting under either key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/dict.h"
#include "lib/hash.h"


/* Expected values are CPython 3.11's hash() of the same bytes with
 * PYTHONHASHSEED=0 (its siphash13 under an all-zero key):
 *   PYTHONHASHSEED=0 python3 -c 'print(hex(hash(b"hello") % 2**64))' */
static void test_siphash13_vectors(void **u)
{
    (void)u;
    static const struct {
        const char *in;
        uint64_t want;
    } v[] = {
        {"a", 0x407448d2b89b1813ull},
        {"hello", 0xe2e77b41cb4e1f9eull},
        {"12345678", 0x3489982430560a87ull},
        {"0123456789abcdef", 0x1d42b30f7e060c24ull},
        {"dashboard:executive-revenue-xyz", 0x9580dec1a20f4a01ull},
        /* every length of the last partial word, short and long inputs */
        {"ab", 0x555508cbc6add439ull},
        {"abc", 0xc03bc3a0042630f2ull},
        {"abcd", 0xe3d1d5fdd52aae89ull},
        {"abcdef", 0x62207e654289df28ull},
        {"abcdefg", 0x6db12aae9070f506ull},
        {"abcdefghi", 0xf89b34a3d11eb6e5ull},
        {"abcdefghijk", 0x14215fc65e2c3bd4ull},
        {"abcdefghijklm", 0x954aa964997ae4e6ull},
        {"metric:d0:bench", 0x78c57a079f0faa6full},
        {"abcdefghijklmnopqrstuvw", 0xd9c26100b33ee39cull},
    };
    sophia_hash_key zero = {0, 0};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        assert_true(sophia_hash_keyed(&zero, v[i].in, strlen(v[i].in)) == v[i].want);
}

static void test_process_key_is_random_and_stable(void **u)
{
    (void)u;
    const sophia_hash_key *k = sophia_hash_process_key();
    assert_true(k->k0 != 0 || k->k1 != 0);
    assert_ptr_equal(sophia_hash_process_key(), k);
    sophia_hash_key copy = *k;
    assert_true(sophia_hash("topic", 5) == sophia_hash_keyed(&copy, "topic", 5));
    assert_true(sophia_hash("topic", 5) == sophia_hash("topic", 5));
}

static void test_keys_change_every_hash(void **u)
{
    (void)u;
    sophia_hash_key a = {1, 2}, b = {3, 4};
    char key[32];
    int same = 0;
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof(key), "updates:metric-%d", i);
        same += sophia_hash_keyed(&a, key, (size_t)n) ==
                sophia_hash_keyed(&b, key, (size_t)n);
    }
    assert_int_equal(same, 0);
}

static void collect(const char *key, void *val, void *arg)
{
    (void)val;
    char **out = arg;
    size_t n = 0;
    while (out[n])
        n++;
    out[n] = strdup(key);
}

#define NKEYS 64

/* The order sophia_dict_each visits NKEYS keys in: bucket order. */
static char **bucket_order(const sophia_hash_key *k)
{
    sophia_dict *d = sophia_dict_new_keyed(k);
    char key[32];
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "ws:topic:%d", i);
        assert_null(sophia_dict_set(d, key, (void *)(intptr_t)(i + 1)));
    }
    char **out = calloc(NKEYS + 1, sizeof(*out));
    sophia_dict_each(d, collect, out);
    sophia_dict_free(d, NULL);
    return out;
}

static void test_two_keys_two_bucket_orders(void **u)
{
    (void)u;
    sophia_hash_key a = {0x1111, 0x2222}, b = {0x3333, 0x4444};
    char **oa = bucket_order(&a), **oa2 = bucket_order(&a), **ob = bucket_order(&b);
    int differ = 0;
    for (int i = 0; i < NKEYS; i++) {
        assert_non_null(oa[i]);
        assert_string_equal(oa[i], oa2[i]); /* deterministic under one key */
        differ += strcmp(oa[i], ob[i]) != 0;
    }
    assert_true(differ > NKEYS / 2);
    for (int i = 0; i < NKEYS; i++) {
        free(oa[i]);
        free(oa2[i]);
        free(ob[i]);
    }
    free(oa);
    free(oa2);
    free(ob);
}

/* Set, get, replace, delete and grow, under the process key and another. */
static void exercise(sophia_dict *d)
{
    char key[32];
    assert_null(sophia_dict_get(d, "k1")); /* empty: answered unhashed */
    assert_null(sophia_dict_del(d, "k1"));
    assert_null(sophia_dict_set(d, "k1", (void *)1));
    assert_ptr_equal(sophia_dict_del(d, "k1"), (void *)1);
    assert_null(sophia_dict_get(d, "k1")); /* empty again */
    for (intptr_t i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        assert_null(sophia_dict_set(d, key, (void *)(i + 1)));
    }
    assert_int_equal(sophia_dict_size(d), 5000);
    for (intptr_t i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        assert_ptr_equal(sophia_dict_get(d, key), (void *)(i + 1));
    }
    assert_ptr_equal(sophia_dict_set(d, "k7", (void *)99), (void *)8);
    assert_ptr_equal(sophia_dict_get(d, "k7"), (void *)99);
    for (intptr_t i = 0; i < 5000; i += 2) {
        snprintf(key, sizeof(key), "k%ld", (long)i);
        assert_non_null(sophia_dict_del(d, key));
    }
    assert_int_equal(sophia_dict_size(d), 2500);
    assert_null(sophia_dict_get(d, "k0"));
    assert_ptr_equal(sophia_dict_get(d, "k1"), (void *)2);
    assert_null(sophia_dict_get(d, "absent"));
    sophia_dict_free(d, NULL);
}

static void test_dict_works_under_any_key(void **u)
{
    (void)u;
    sophia_hash_key k = {42, 43};
    exercise(sophia_dict_new());
    exercise(sophia_dict_new_keyed(&k));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash13_vectors),
        cmocka_unit_test(test_process_key_is_random_and_stable),
        cmocka_unit_test(test_keys_change_every_hash),
        cmocka_unit_test(test_two_keys_two_bucket_orders),
        cmocka_unit_test(test_dict_works_under_any_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
