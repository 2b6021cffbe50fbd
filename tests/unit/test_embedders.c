/*
 * test_embedders - the bundled embedder plugins (SDK 1.2), loaded through
 * the daemon's loader: `hashing` makes the built-in embedder's vectors bit
 * for bit under the same id (so moving between them re-embeds nothing);
 * `ngram_idf` fits a model that survives export/import and makes common
 * features weigh less; both are deterministic, unit length, of their
 * configured dimension, and give the same vectors from several threads at
 * once as from one. A non-embedder instance is refused by name.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "host/host.h"
#include "lib/diag.h"
#include "memory/embed.h"
#include "plugin/plugin.h"

static char *dirs[] = {SOPHIA_TEST_PLUGIN_DIR};
static sophia_host_rt *rt;

static sophia_instance *load(const char *module, const char *opt,
                             const char *val)
{
    sophia_conf_opt o = {.key = (char *)opt, .scalar = (char *)val, .line = 5,
                         .col = 9, .key_line = 5, .key_col = 5};
    sophia_conf_instance ci = {.name = "e", .plugin = (char *)module,
                               .opts = opt ? &o : NULL, .nopts = opt ? 1 : 0,
                               .line = 4, .col = 3};
    sophia_conf c = {.file = "emb.yaml", .plugin_path = dirs, .nplugin_path = 1,
                     .plugin_init_timeout = 10, .instances = &ci, .ninstances = 1};
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_instance *in = sophia_plugin_load(&c, &ci, sophia_host_rt_table(rt), &d);
    if (!in)
        fail_msg("%s refused: %s", module, d.count ? d.lines[0] : "?");
    sophia_diag_free(&d);
    return in;
}

static sophia_embedder *wrap(sophia_instance *in)
{
    const char *why;
    sophia_embedder *e = sophia_embedder_of(in, &why);
    assert_non_null(e);
    return e;
}

static const char *const texts[] = {
    "Acme renewed their enterprise contract for three years",
    "The quarterly business review with Vamel is on Thursday",
    "Globex asked about single sign-on and the security review",
    "the the the and a of",
    "",
    "Ünïcödé wörds and numbers 12345 mixed in",
};
#define NTEXTS (sizeof(texts) / sizeof(texts[0]))

static void embed_all(const sophia_embedder *e, float *out)
{
    size_t lens[NTEXTS];
    for (size_t i = 0; i < NTEXTS; i++)
        lens[i] = strlen(texts[i]);
    assert_int_equal(sophia_embed_batch(e, texts, lens, NTEXTS, out), 0);
}

static void assert_unit_rows(const float *v, size_t n, int dim)
{
    for (size_t i = 0; i < n; i++) {
        float s = sophia_embed_dot(v + i * (size_t)dim, v + i * (size_t)dim, dim);
        assert_true(s == 0.0f || fabsf(s - 1.0f) < 1e-4f); /* "" has no features */
    }
}

static void test_hashing_is_the_builtin(void **unused)
{
    (void)unused;
    sophia_instance *in = load("hashing", "dim", "256");
    sophia_embedder *p = wrap(in), *b = sophia_embed_hashing_new(256);
    assert_int_equal(p->dim, 256);
    assert_string_equal(p->id, b->id); /* same vectors, same tag */
    float *vp = malloc(NTEXTS * 256 * sizeof(float));
    float *vb = malloc(NTEXTS * 256 * sizeof(float));
    embed_all(p, vp);
    embed_all(b, vb);
    assert_memory_equal(vp, vb, NTEXTS * 256 * sizeof(float));
    assert_unit_rows(vp, NTEXTS, 256);
    /* another dim is another embedder */
    sophia_embedder *b2 = sophia_embed_hashing_new(384);
    assert_string_not_equal(p->id, b2->id);
    sophia_embedder_free(b2);
    free(vp);
    free(vb);
    sophia_embedder_free(p);
    sophia_embedder_free(b);
    sophia_plugin_unload(in);
}

static void test_hold_defers_unload(void **unused)
{
    (void)unused;
    sophia_instance *in = load("hashing", NULL, NULL);
    sophia_embedder *e = wrap(in); /* holds the instance */
    assert_int_equal(e->dim, 384);
    sophia_plugin_unload(in);      /* a reload retiring it: deferred */
    float v[384];
    assert_int_equal(sophia_embed(e, "still loaded", 12, v), 0);
    sophia_embedder_free(e);       /* the last hold: unloads now */
}

static void test_ngram_idf_fit_and_model(void **unused)
{
    (void)unused;
    sophia_instance *in = load("ngram_idf", "dim", "512");
    sophia_embedder *base = wrap(in);
    assert_int_equal(base->dim, 512);
    assert_true(sophia_embed_can_fit(base));
    /* a corpus where "renewal" is everywhere and the account names rare */
    const char *corpus[64];
    size_t lens[64];
    char buf[64][80];
    for (int i = 0; i < 64; i++) {
        snprintf(buf[i], sizeof(buf[i]), "renewal notes for account%d contract", i);
        corpus[i] = buf[i];
        lens[i] = strlen(buf[i]);
    }
    void *model = sophia_embed_fit(base, corpus, lens, 64);
    assert_non_null(model);
    sophia_embedder *fitted = sophia_embedder_with_model(base, model);
    assert_non_null(fitted);
    assert_string_not_equal(fitted->id, base->id); /* a new model re-embeds */
    /* export/import: the same model, the same id, the same vectors */
    char *text = sophia_embed_model_export(fitted);
    assert_non_null(text);
    sophia_embedder *again = sophia_embedder_with_model(base, sophia_embed_model_import(base, text));
    assert_non_null(again);
    assert_string_equal(again->id, fitted->id);
    float *va = malloc(NTEXTS * 512 * sizeof(float)), *vb = malloc(NTEXTS * 512 * sizeof(float));
    embed_all(fitted, va);
    embed_all(again, vb);
    assert_memory_equal(va, vb, NTEXTS * 512 * sizeof(float));
    assert_unit_rows(va, NTEXTS, 512);
    assert_null(sophia_embed_model_import(base, "not a model"));
    /* the shared words weigh less once fitted: two notes of different
     * accounts are further apart */
    float a[512], b[512];
    const char *x = "renewal notes for account7 contract",
               *y = "renewal notes for account9 contract";
    sophia_embed(base, x, strlen(x), a);
    sophia_embed(base, y, strlen(y), b);
    float before = sophia_embed_dot(a, b, 512);
    sophia_embed(fitted, x, strlen(x), a);
    sophia_embed(fitted, y, strlen(y), b);
    float after = sophia_embed_dot(a, b, 512);
    print_message("shared-words cosine: unfitted %.3f, fitted %.3f\n", before, after);
    assert_true(after < before - 0.1f);
    free(text);
    free(va);
    free(vb);
    sophia_embedder_free(again);
    sophia_embedder_free(fitted);
    sophia_embedder_free(base);
    sophia_plugin_unload(in);
}

typedef struct thr {
    const sophia_embedder *e;
    float *out;
} thr;

static void *thr_run(void *arg)
{
    thr *t = arg;
    for (int r = 0; r < 50; r++)
        embed_all(t->e, t->out);
    return NULL;
}

/* embed runs on worker threads at once: the same vectors as alone */
static void test_threads_agree(void **unused)
{
    (void)unused;
    const char *mods[] = {"hashing", "ngram_idf"};
    for (int k = 0; k < 2; k++) {
        sophia_instance *in = load(mods[k], NULL, NULL);
        sophia_embedder *e = wrap(in);
        size_t n = NTEXTS * (size_t)e->dim;
        float *alone = malloc(n * sizeof(float));
        embed_all(e, alone);
        pthread_t th[4];
        thr t[4];
        for (int i = 0; i < 4; i++) {
            t[i] = (thr){e, malloc(n * sizeof(float))};
            assert_int_equal(pthread_create(&th[i], NULL, thr_run, &t[i]), 0);
        }
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            assert_memory_equal(t[i].out, alone, n * sizeof(float));
            free(t[i].out);
        }
        free(alone);
        sophia_embedder_free(e);
        sophia_plugin_unload(in);
    }
}

static void test_refuses_other_kinds_and_bad_dims(void **unused)
{
    (void)unused;
    sophia_instance *in = load("decay", NULL, NULL);
    const char *why = NULL;
    assert_null(sophia_embedder_of(in, &why));
    assert_string_equal(why, "is not an embedder");
    assert_string_equal(sophia_plugin_kind_name(SOPHIA_KIND_EMBEDDER), "embedder");
    sophia_plugin_unload(in);
    /* dim out of range: init fails, so the load does */
    sophia_conf_opt o = {.key = "dim", .scalar = "4", .line = 5, .col = 9,
                         .key_line = 5, .key_col = 5};
    sophia_conf_instance ci = {.name = "e", .plugin = "hashing", .opts = &o,
                               .nopts = 1, .line = 4, .col = 3};
    sophia_conf c = {.file = "emb.yaml", .plugin_path = dirs, .nplugin_path = 1,
                     .plugin_init_timeout = 10, .instances = &ci, .ninstances = 1};
    sophia_diag d;
    sophia_diag_init(&d);
    assert_null(sophia_plugin_load(&c, &ci, sophia_host_rt_table(rt), &d));
    assert_true(d.count > 0);
    sophia_diag_free(&d);
}

int main(void)
{
    sophia_plugin_system_init();
    rt = sophia_host_rt_new();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hashing_is_the_builtin),
        cmocka_unit_test(test_hold_defers_unload),
        cmocka_unit_test(test_ngram_idf_fit_and_model),
        cmocka_unit_test(test_threads_agree),
        cmocka_unit_test(test_refuses_other_kinds_and_bad_dims),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    sophia_host_rt_free(rt);
    sophia_plugin_system_shutdown();
    return rc;
}
