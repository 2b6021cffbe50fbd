/*
 * test_jsonw - the fast writer produces exactly json_dumps(JSON_COMPACT |
 * JSON_ENCODE_ANY): hand-picked edge cases (reals, escapes, NUL bytes,
 * empty containers) and thousands of generated trees compared byte for
 * byte; the depth cap refuses instead of recursing without bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lib/jsonw.h"

static void assert_same(const json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t len = 0;
    char *got = sophia_json_encode(v, &len);
    assert_non_null(want);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(want);
    free(got);
}

static void test_scalars(void **unused)
{
    (void)unused;
    const double reals[] = {0.0, -0.0, 1.0, -1.0, 0.1, -2.5, 1e-7, 1e-300,
                            1e300, 1e16, 1e17, 123456789012345678.0,
                            99999999999999984.0, 1.5e17, 3.141592653589793,
                            1732540000123.4567, -9007199254740993.0,
                            4.9e-324, 1.7976931348623157e308, 100, 1e21,
                            1e28 /* 9.9999999999999996e27 */, 9.5e22};
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        json_t *r = json_real(reals[i]);
        assert_same(r);
        json_decref(r);
    }
    const json_int_t ints[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN, -1000000};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        json_t *n = json_integer(ints[i]);
        assert_same(n);
        json_decref(n);
    }
    assert_same(json_true());
    assert_same(json_false());
    assert_same(json_null());
}

/* One double through both writers. */
static void assert_same_real(double d)
{
    json_t *r = json_real(d);
    if (!r) /* NaN and infinities are not JSON */
        return;
    assert_same(r);
    json_decref(r);
}

/* The exact fast path for reals against printf's "%.17g" via jansson:
 * random bit patterns (every exponent), event-like magnitudes and the
 * neighbours of powers of ten, where digit counts and rounding flip. */
static void test_reals_against_printf(void **unused)
{
    (void)unused;
    unsigned seed = 777;
    for (int i = 0; i < 40000; i++) {
        uint64_t bits = ((uint64_t)rand_r(&seed) << 33) ^
                        ((uint64_t)rand_r(&seed) << 11) ^ (uint64_t)rand_r(&seed);
        double d;
        memcpy(&d, &bits, sizeof(d));
        assert_same_real(d);
        double mag = pow(10.0, (double)(rand_r(&seed) % 40) - 10.0);
        assert_same_real(mag * ((double)rand_r(&seed) / RAND_MAX - 0.5));
        assert_same_real((double)rand_r(&seed) / 1000.0 + 1e-7 * (rand_r(&seed) % 999));
        /* large integral values, where the digits come from a division */
        assert_same_real((double)rand_r(&seed) * pow(10.0, 8 + rand_r(&seed) % 25));
    }
    for (int k = -30; k <= 30; k++) {
        double p = pow(10.0, k), lo = p, hi = p;
        assert_same_real(p);
        assert_same_real(-p * 3);
        for (int i = 0; i < 50; i++) {
            lo = nextafter(lo, 0);
            hi = nextafter(hi, INFINITY);
            assert_same_real(lo);
            assert_same_real(hi);
            assert_same_real(-hi);
        }
        assert_same_real(p * 0.5);
        assert_same_real(p * 1.5);
    }
}

/* Values with few bits after the binary point (1020.25), which put_real
 * writes from their exact expansion: every count of such bits around
 * the path's limit, integral parts of every length around where the
 * digits stop fitting 17, both signs. */
static void test_reals_dyadic(void **unused)
{
    (void)unused;
    unsigned seed = 99;
    for (int b = 1; b <= 20; b++)
        for (int i = 0; i < 3000; i++) {
            uint64_t ip = ((uint64_t)rand_r(&seed) << 31 | (uint64_t)rand_r(&seed)) %
                          (uint64_t)pow(10.0, 1 + rand_r(&seed) % 17);
            double f = (double)(rand_r(&seed) | 1) / pow(2.0, 31);
            double d = (double)ip + ldexp(floor(ldexp(f, b)), -b);
            assert_same_real(d);
            assert_same_real(-d);
            assert_same_real(nextafter(d, INFINITY));
        }
    for (int k = 0; k <= 17; k++) /* 17 digits and one more */
        for (int b = 1; b <= 16; b++) {
            double d = pow(10.0, k) - 1 + ldexp(1, -b);
            assert_same_real(d);
            assert_same_real(d + 2);
        }
}

/* The values metrics carry: short decimals read from text (strtod's
 * nearest double, as the ingest parser makes them), with 1 to 17
 * significant digits and the point anywhere, their binary neighbours,
 * and every binary exponent of the fast range with a random mantissa.
 * Each is compared with printf's digits through jansson, and its text
 * must read back as the same double. */
static void assert_same_roundtrip(double d)
{
    assert_same_real(d);
    json_t *r = json_real(d);
    if (!r)
        return;
    char *got = sophia_json_encode(r, NULL);
    assert_non_null(got);
    assert_true(strtod(got, NULL) == d);
    free(got);
    json_decref(r);
}

static void test_reals_short_decimals(void **unused)
{
    (void)unused;
    unsigned seed = 4242;
    for (int i = 0; i < 60000; i++) {
        int nd = 1 + rand_r(&seed) % 17, point = rand_r(&seed) % (nd + 8);
        char text[48], *o = text;
        if (rand_r(&seed) & 1)
            *o++ = '-';
        for (int k = 0; k < nd; k++) {
            if (k == point)
                *o++ = '.';
            *o++ = (char)('0' + (k ? rand_r(&seed) % 10 : 1 + rand_r(&seed) % 9));
        }
        *o = '\0';
        char num[64];
        int exp = rand_r(&seed) % 12 - 8; /* 1e-8 .. 1e3 around it */
        snprintf(num, sizeof(num), "%se%d", text, exp);
        double d = strtod(num, NULL);
        assert_same_roundtrip(d);
        assert_same_roundtrip(nextafter(d, INFINITY));
        assert_same_roundtrip(nextafter(d, -INFINITY));
    }
    for (int e = -140; e <= 80; e++) {
        for (int i = 0; i < 200; i++) {
            uint64_t m = (((uint64_t)rand_r(&seed) << 31) ^ (uint64_t)rand_r(&seed)) &
                         ((1ULL << 52) - 1);
            assert_same_roundtrip(ldexp((double)(m | (1ULL << 52)), e));
        }
        assert_same_roundtrip(ldexp(1.0, e));
        assert_same_roundtrip(nextafter(ldexp(1.0, e), 0));
    }
    const double fixed[] = {1000.25, 1000.1, 0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3,
                            123.456, 99.99, 9.95, 0.000123, 1e-5, 1.5e-6,
                            999999.9999999999, 0.9999999999999999,
                            9999999999999998.0 + 0.5, 1e16 - 0.5};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(*fixed); i++) {
        assert_same_roundtrip(fixed[i]);
        assert_same_roundtrip(-fixed[i]);
    }
}

static void test_strings(void **unused)
{
    (void)unused;
    const char *texts[] = {"", "plain", "quote\" back\\ slash/",
                           "\b\f\n\r\t\x01\x1f\x7f", "é ü 漢字 😀",
                           "\xe2\x80\xa8 line sep"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *s = json_string(texts[i]);
        assert_non_null(s);
        assert_same(s);
        json_decref(s);
    }
    json_t *nul = json_stringn("a\0b", 3);
    assert_same(nul);
    json_t *o = json_object();
    json_object_set_new(o, "k\"e\ny", json_string("v"));
    assert_same(o);
    json_decref(o);
    json_decref(nul);
}

static void test_containers(void **unused)
{
    (void)unused;
    json_t *v = json_pack("{s:[],s:{},s:[i,f,s,n,b],s:{s:{s:[[]]}}}", "a", "b",
                          "c", 1, 2.5, "x", 1, "d", "e", "f");
    assert_non_null(v);
    assert_same(v);
    json_decref(v);
    json_t *event = json_loads("{\"metric\":\"bench\",\"value\":17,\"timestamp\":"
                               "\"2026-11-25T13:45:00Z\",\"labels\":{\"t\":"
                               "1234.5678900003433}}", 0, NULL);
    assert_same(event);
    json_decref(event);
}

/* A random tree of bounded size; keys repeat so objects also overwrite. */
static json_t *gen(unsigned *seed, int depth)
{
    int kind = rand_r(seed) % (depth > 3 ? 6 : 8);
    switch (kind) {
    case 0: return json_integer((json_int_t)rand_r(seed) - RAND_MAX / 2);
    case 1: return json_real(((double)rand_r(seed) - RAND_MAX / 2) /
                             (double)(1 + rand_r(seed) % 100000));
    case 2: {
        char s[12];
        size_t n = (size_t)(rand_r(seed) % 11);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)(1 + rand_r(seed) % 126); /* ASCII incl. controls */
        return json_stringn(s, n);
    }
    case 3: return json_boolean(rand_r(seed) & 1);
    case 4: return json_null();
    case 5: return json_real((double)(rand_r(seed) % 2000) * 1e10);
    case 6: {
        json_t *a = json_array();
        for (int i = rand_r(seed) % 5; i > 0; i--)
            json_array_append_new(a, gen(seed, depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        char key[8];
        for (int i = rand_r(seed) % 5; i > 0; i--) {
            snprintf(key, sizeof(key), "k%d", rand_r(seed) % 7);
            json_object_set_new(o, key, gen(seed, depth + 1));
        }
        return o;
    }
    }
}

/* sophia_json_write into a caller's buffer: the text when it fits (one
 * byte for the NUL), else its length, like snprintf. */
static void assert_writes(const json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = strlen(want);
    char *buf = malloc(n + 8);
    assert_non_null(buf);
    for (size_t cap = n > 3 ? n - 3 : 0; cap <= n + 2; cap++) {
        memset(buf, 'x', n + 8);
        assert_int_equal(sophia_json_write(v, buf, cap), n);
        if (cap > n)
            assert_string_equal(buf, want);
        assert_int_equal(buf[cap], 'x'); /* nothing past cap */
    }
    free(buf);
    free(want);
}

static void test_generated_trees(void **unused)
{
    (void)unused;
    unsigned seed = 12345;
    for (int i = 0; i < 5000; i++) {
        json_t *v = gen(&seed, 0);
        assert_non_null(v);
        assert_same(v);
        assert_writes(v);
        json_decref(v);
    }
    char one[4] = "abc";
    assert_int_equal(sophia_json_write(NULL, one, sizeof(one)), 0);
    assert_string_equal(one, "");
}

static void test_depth_cap_and_envelope(void **unused)
{
    (void)unused;
    json_t *root = json_array(), *cur = root;
    for (int i = 0; i < SOPHIA_JSONW_MAX_DEPTH + 10; i++) {
        json_t *next = json_array();
        json_array_append_new(cur, next);
        cur = next;
    }
    assert_null(sophia_json_encode(root, NULL));
    json_decref(root);

    /* An envelope around a pre-encoded part, as a frame builder would. */
    sophia_jsonw w = {0};
    json_t *data = json_pack("{s:i}", "v", 7);
    assert_int_equal(sophia_jsonw_raw(&w, "{\"topic\":", 9), 0);
    assert_int_equal(sophia_jsonw_str(&w, "a\"b", 3), 0);
    assert_int_equal(sophia_jsonw_raw(&w, ",\"data\":", 8), 0);
    assert_int_equal(sophia_jsonw_append(&w, data), 0);
    assert_int_equal(sophia_jsonw_raw(&w, "}", 1), 0);
    size_t len;
    char *text = sophia_jsonw_take(&w, &len);
    assert_string_equal(text, "{\"topic\":\"a\\\"b\",\"data\":{\"v\":7}}");
    assert_int_equal(len, strlen(text));
    assert_null(w.p);
    free(text);
    json_decref(data);
}

/* The decimal writers against printf, at the edges of uint64_t. */
static void test_u64(void **unused)
{
    (void)unused;
    const uint64_t v[] = {0, 7, 10, 99, 1000, 4294967296ull, UINT64_MAX};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char want[32], got[32];
        snprintf(want, sizeof(want), "%" PRIu64, v[i]);
        assert_int_equal(sophia_fmt_u64(got, v[i]), strlen(want));
        assert_string_equal(got, want);
        sophia_jsonw w = {0};
        assert_int_equal(sophia_jsonw_u64(&w, v[i]), 0);
        assert_string_equal(w.p, want);
        sophia_jsonw_reset(&w);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_reals_against_printf),
        cmocka_unit_test(test_reals_dyadic),
        cmocka_unit_test(test_reals_short_decimals),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_containers),
        cmocka_unit_test(test_generated_trees),
        cmocka_unit_test(test_depth_cap_and_envelope),
        cmocka_unit_test(test_u64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
