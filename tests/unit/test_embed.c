/*
 * test_embed - the feature-hashing embedder: unit length, determinism
 * (pinned values, so a change to the hashing that would silently
 * invalidate every stored vector and saved index fails here), and the
 * similarity properties retrieval relies on: shared words, re-ordered
 * paraphrases and misspellings score well above unrelated text.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "memory/embed.h"

#define DIM 384
#define SOPHIA_EMBED_FINGERPRINT 0xe1118340fb57c951ULL

static float cosine(const sophia_embedder *e, const char *a, const char *b)
{
    float va[DIM], vb[DIM];
    assert_int_equal(sophia_embed(e, a, strlen(a), va), 0);
    assert_int_equal(sophia_embed(e, b, strlen(b), vb), 0);
    return sophia_embed_dot(va, vb, DIM);
}

static void test_unit_length_and_empty(void **state)
{
    (void)state;
    sophia_embedder *e = sophia_embed_hashing_new(DIM);
    assert_non_null(e);
    float v[DIM];
    assert_int_equal(sophia_embed(e, "The quick brown fox", 19, v), 0);
    double n = 0;
    for (int i = 0; i < DIM; i++)
        n += (double)v[i] * v[i];
    assert_true(fabs(n - 1.0) < 1e-5);
    assert_int_equal(sophia_embed(e, " ,.;!? ", 7, v), 0);
    for (int i = 0; i < DIM; i++)
        assert_true(v[i] == 0.0f);
    sophia_embedder_free(e);
}

static void test_bad_dim(void **state)
{
    (void)state;
    assert_null(sophia_embed_hashing_new(0));
    assert_null(sophia_embed_hashing_new(7));
    assert_null(sophia_embed_hashing_new(100000));
}

/* The same text gives bit-identical vectors in two embedders, and a few
 * pinned coordinates: the hash is part of the on-disk format. */
static void test_deterministic(void **state)
{
    (void)state;
    sophia_embedder *a = sophia_embed_hashing_new(DIM), *b = sophia_embed_hashing_new(DIM);
    const char *t = "Customer prefers weekly email summaries of pipeline changes";
    float va[DIM], vb[DIM];
    sophia_embed(a, t, strlen(t), va);
    sophia_embed(b, t, strlen(t), vb);
    assert_memory_equal(va, vb, sizeof(va));
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < DIM; i++) { /* FNV over rounded coordinates */
        long q = lroundf(va[i] * 1e5f);
        h = (h ^ (uint64_t)q) * 1099511628211ULL;
    }
    printf("embed fingerprint %016llx\n", (unsigned long long)h);
    assert_true(h == SOPHIA_EMBED_FINGERPRINT);
    sophia_embedder_free(a);
    sophia_embedder_free(b);
}

static void test_case_and_punctuation_insensitive(void **state)
{
    (void)state;
    sophia_embedder *e = sophia_embed_hashing_new(DIM);
    assert_true(cosine(e, "Hello, World!", "hello world") > 0.999f);
    sophia_embedder_free(e);
}

static void test_similarity_order(void **state)
{
    (void)state;
    sophia_embedder *e = sophia_embed_hashing_new(DIM);
    const char *doc = "The Kubernetes cluster upgrade is scheduled for Friday night";
    float same_words = cosine(e, doc, "Friday night the Kubernetes cluster upgrade is scheduled");
    float misspelled = cosine(e, doc, "kubernets clustr upgrade");
    float unrelated = cosine(e, doc, "Alice likes green tea with honey in the morning");
    printf("reordered %.3f misspelled %.3f unrelated %.3f\n", same_words,
           misspelled, unrelated);
    assert_true(same_words > 0.8f);
    assert_true(misspelled > 0.3f);
    assert_true(unrelated < 0.15f);
    assert_true(misspelled > unrelated + 0.2f);
    sophia_embedder_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unit_length_and_empty),
        cmocka_unit_test(test_bad_dim),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_case_and_punctuation_insensitive),
        cmocka_unit_test(test_similarity_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
