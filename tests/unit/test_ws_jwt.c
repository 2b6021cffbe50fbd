/*
 * test_ws_jwt - HS256 verification: good tokens, every refusal reason,
 * the `alg` checks, the websocket.jwt policy (exp, iss, aud), scope claim
 * shapes, and topic pattern containment.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ws/ws_jwt.h"

#define SECRET "s3cret"
#define NOW 1700000000

static char *sign(const char *claims_json, const char *secret)
{
    json_t *c = json_loads(claims_json, 0, NULL);
    assert_non_null(c);
    char *t = sophia_jwt_sign(c, secret);
    json_decref(c);
    assert_non_null(t);
    return t;
}

static void test_good_token(void **state)
{
    (void)state;
    char *t = sign("{\"sub\":\"alice\",\"exp\":1700000100,\"topics\":[\"a*\"]}", SECRET);
    json_t *claims = NULL;
    assert_int_equal(sophia_jwt_verify(t, SECRET, NOW, &claims), SOPHIA_JWT_OK);
    assert_string_equal(json_string_value(json_object_get(claims, "sub")), "alice");
    json_decref(claims);
    free(t);
}

/* A token made by another implementation (jwt.io's HS256 example with
 * secret "your-256-bit-secret"): our encoding must not be the only one we
 * understand. */
static void test_foreign_token(void **state)
{
    (void)state;
    const char *t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
                    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    assert_int_equal(sophia_jwt_verify(t, "your-256-bit-secret", NOW, NULL),
                     SOPHIA_JWT_OK);
    assert_int_equal(sophia_jwt_verify(t, "other", NOW, NULL), SOPHIA_JWT_BAD_SIG);
}

static void test_refusals(void **state)
{
    (void)state;
    char *t = sign("{\"sub\":\"a\",\"exp\":1699999999}", SECRET);
    assert_int_equal(sophia_jwt_verify(t, SECRET, NOW, NULL), SOPHIA_JWT_EXPIRED);
    free(t);
    t = sign("{\"sub\":\"a\",\"nbf\":1700000500}", SECRET);
    assert_int_equal(sophia_jwt_verify(t, SECRET, NOW, NULL), SOPHIA_JWT_NOT_YET);
    free(t);
    t = sign("{\"sub\":\"a\",\"topics\":\"all\"}", SECRET);
    assert_int_equal(sophia_jwt_verify(t, SECRET, NOW, NULL), SOPHIA_JWT_BAD_CLAIMS);
    free(t);
    t = sign("{\"sub\":\"a\"}", "wrong");
    assert_int_equal(sophia_jwt_verify(t, SECRET, NOW, NULL), SOPHIA_JWT_BAD_SIG);
    t[strlen(t) - 1] = '\0'; /* truncated signature */
    assert_int_equal(sophia_jwt_verify(t, SECRET, NOW, NULL), SOPHIA_JWT_BAD_SIG);
    free(t);
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "!!.??.##", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(sophia_jwt_verify(bad[i], SECRET, NOW, NULL),
                         SOPHIA_JWT_MALFORMED);
    /* alg none, and a long signature that must not overflow anything */
    assert_int_equal(sophia_jwt_verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
                                       SECRET, NOW, NULL),
                     SOPHIA_JWT_BAD_ALG);
    char big[6000];
    memcpy(big, "eyJhbGciOiJIUzI1NiJ9.eyJ9.", 26);
    memset(big + 26, 'A', sizeof(big) - 27);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(sophia_jwt_verify(big, SECRET, NOW, NULL), SOPHIA_JWT_BAD_SIG);
}

static void test_topic_allowed(void **state)
{
    (void)state;
    assert_true(sophia_jwt_topic_allowed("dashboard:*", "dashboard:x"));
    assert_true(sophia_jwt_topic_allowed("dashboard:*", "dashboard:*"));
    assert_true(sophia_jwt_topic_allowed("dashboard:*", "dashboard:ex*"));
    assert_false(sophia_jwt_topic_allowed("dashboard:*", "dash*"));
    assert_false(sophia_jwt_topic_allowed("dashboard:*", "alerts"));
    assert_true(sophia_jwt_topic_allowed("alerts", "alerts"));
    assert_false(sophia_jwt_topic_allowed("alerts", "alerts*"));
    assert_false(sophia_jwt_topic_allowed("alerts", "alerts:x"));
}

static sophia_jwt_status verify_with(const char *claims, const sophia_jwt_policy *p)
{
    char *t = sign(claims, SECRET);
    sophia_jwt_status st = sophia_jwt_verify_policy(t, SECRET, NOW, p, NULL);
    free(t);
    return st;
}

static void test_require_exp(void **state)
{
    (void)state;
    sophia_jwt_policy strict = {1, NULL, NULL}, lax = {0, NULL, NULL};
    assert_int_equal(verify_with("{\"sub\":\"a\"}", &strict), SOPHIA_JWT_NO_EXP);
    assert_int_equal(verify_with("{\"sub\":\"a\"}", &lax), SOPHIA_JWT_OK);
    assert_int_equal(verify_with("{\"sub\":\"a\"}", NULL), SOPHIA_JWT_OK);
    assert_int_equal(verify_with("{\"sub\":\"a\",\"exp\":1700000100}", &strict), SOPHIA_JWT_OK);
    /* a present exp still counts when it is not required */
    assert_int_equal(verify_with("{\"sub\":\"a\",\"exp\":1600000000}", &lax), SOPHIA_JWT_EXPIRED);
    assert_int_equal(verify_with("{\"exp\":null}", &strict), SOPHIA_JWT_BAD_CLAIMS);
    assert_int_equal(verify_with("{\"exp\":\"1700000100\"}", &lax), SOPHIA_JWT_BAD_CLAIMS);
    assert_string_equal(sophia_jwt_strerror(SOPHIA_JWT_NO_EXP),
                        "token has no exp (websocket.jwt.require_exp)");
}

static void test_issuer_audience(void **state)
{
    (void)state;
    sophia_jwt_policy p = {1, "https://id.example.com", "sophia"};
#define CL(x) "{\"exp\":1700000100" x "}"
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\",\"aud\":\"sophia\""), &p),
                     SOPHIA_JWT_OK);
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\",\"aud\":[\"x\",\"sophia\"]"), &p),
                     SOPHIA_JWT_OK);
    assert_int_equal(verify_with(CL(",\"aud\":\"sophia\""), &p), SOPHIA_JWT_BAD_ISS);
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com.evil\",\"aud\":\"sophia\""), &p),
                     SOPHIA_JWT_BAD_ISS);
    assert_int_equal(verify_with(CL(",\"iss\":7,\"aud\":\"sophia\""), &p), SOPHIA_JWT_BAD_ISS);
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\""), &p), SOPHIA_JWT_BAD_AUD);
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\",\"aud\":\"sophia2\""), &p),
                     SOPHIA_JWT_BAD_AUD);
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\",\"aud\":[\"x\",1]"), &p),
                     SOPHIA_JWT_BAD_AUD);
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\",\"aud\":[]"), &p),
                     SOPHIA_JWT_BAD_AUD);
    /* only what is configured is checked */
    sophia_jwt_policy iss_only = {1, "https://id.example.com", NULL};
    assert_int_equal(verify_with(CL(",\"iss\":\"https://id.example.com\",\"aud\":\"any\""), &iss_only),
                     SOPHIA_JWT_OK);
#undef CL
}

static void test_scope_shapes(void **state)
{
    (void)state;
    const char *ok[] = {
        "{\"cache\":[\"dash:*\"],\"stats\":true}",
        "{\"memory\":{\"user_id\":\"u1\",\"agent_id\":\"a1\"}}",
        "{\"memory\":[{\"user_id\":\"u1\"},{\"user_id\":42}]}",
        "{\"topics\":[],\"cache\":[],\"memory\":[]}",
        NULL,
    };
    const char *bad[] = {
        "{\"cache\":\"dash:*\"}",
        "{\"cache\":[1]}",
        "{\"topics\":[null]}",
        "{\"stats\":\"yes\"}",
        "{\"memory\":\"u1\"}",
        "{\"memory\":{}}",
        "{\"memory\":{\"user_id\":[\"u1\",\"u2\"]}}",
        "{\"memory\":[{\"user_id\":\"u1\"},\"u2\"]}",
        "{\"memory\":{\"user_id\":null}}",
        NULL,
    };
    for (int i = 0; ok[i]; i++)
        assert_int_equal(verify_with(ok[i], NULL), SOPHIA_JWT_OK);
    for (int i = 0; bad[i]; i++)
        assert_int_equal(verify_with(bad[i], NULL), SOPHIA_JWT_BAD_CLAIMS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_token),
        cmocka_unit_test(test_foreign_token),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_topic_allowed),
        cmocka_unit_test(test_require_exp),
        cmocka_unit_test(test_issuer_audience),
        cmocka_unit_test(test_scope_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
