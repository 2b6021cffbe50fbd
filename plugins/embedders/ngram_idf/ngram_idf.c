/*
 * ngram_idf - words, word pairs and character 3..5-grams (features.h),
 * each weighted by how rare it is in the store: tf-idf, hashed into `dim`
 * buckets. The idf comes from the store itself: the host calls fit() on a
 * sample of stored memories (SDK 1.2 "learn from the store") and keeps
 * the document frequencies it returns as this embedder's model, saved in
 * PostgreSQL and given back on every embed. So "the", "^th" or a word
 * every memory shares weigh little, and an account name or a rare term
 * carries the vector; feature hashing (`hashing`) weighs them all alike.
 * Before the first fit (a store under 64 memories) every idf is 1.
 *
 * A feature's weight: family weight x (1 + ln tf) x idf, with
 *   idf = ln((N + 1) / (df + 1)) + 1          (N: texts in the sample)
 * and df counted per feature hash in `buckets` slots (a collision only
 * shares a count between two features, and slots are cheap).
 *
 * Options: dim (8..4096, default 1024: collisions in fewer buckets cost
 * the evaluation's vector leg 0.04 of recall@1 at 512): the vectors' size; buckets (1024..
 * 16777216, default 262144): document-frequency slots; word_weight,
 * bigram_weight, ngram_weight: the feature families' weights.
 *
 * The model's text form: "ngram_idf 1 <buckets> <N>\n" then "slot:df"
 * pairs, space-separated, for the slots that are not 0.
 */
#include <sophia/sdk.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../features.h"

#define NAME "ngram_idf"
#define VERSION "1.0.0"

typedef struct ngram {
    int dim;
    uint32_t buckets;
    float w[3]; /* per feature family (features.h) */
} ngram;

typedef struct model {
    uint32_t buckets;
    uint32_t n;   /* texts counted */
    uint32_t *df; /* per slot */
} model;

static const sophia_option options[] = {
    {"dim", SOPHIA_OPT_INT, "1024", "vector size, 8..4096"},
    {"buckets", SOPHIA_OPT_INT, "262144",
     "document-frequency slots of the idf model, 1024..16777216"},
    /* A word counts most; n-grams, many per word, each weigh less, but
     * with idf the rare ones (a name's) carry a misspelling or an
     * inflection to the right memory. Tuned on the evaluation's tuning
     * split (tests/bench/memory_eval.mjs, recall@1 + recall@5 + MRR):
     * n-grams 0.2 / 0.35 / 0.5 / 0.7 and word pairs 0.3 / 0.6. */
    {"word_weight", SOPHIA_OPT_DOUBLE, "1.0", "weight of a word"},
    {"bigram_weight", SOPHIA_OPT_DOUBLE, "0.3", "weight of a word pair"},
    {"ngram_weight", SOPHIA_OPT_DOUBLE, "0.5", "weight of a character 3..5-gram"},
    {NULL, 0, NULL, NULL},
};

static int n_init(const sophia_host *host, sophia_self *self,
                  const sophia_opts *opts, void **state)
{
    int64_t dim = host->opt_int(opts, "dim");
    int64_t buckets = host->opt_int(opts, "buckets");
    if (dim < 8 || dim > 4096 || buckets < 1024 || buckets > 16777216) {
        host->log(self, SOPHIA_LOG_ERROR, "dim %lld (8..4096) or buckets %lld "
                  "(1024..16777216) out of range", (long long)dim,
                  (long long)buckets);
        return SOPHIA_EINVAL;
    }
    ngram *g = calloc(1, sizeof(*g));
    if (!g)
        return SOPHIA_ENOMEM;
    g->dim = (int)dim;
    g->buckets = (uint32_t)buckets;
    g->w[FEAT_WORD] = (float)host->opt_double(opts, "word_weight");
    g->w[FEAT_BIGRAM] = (float)host->opt_double(opts, "bigram_weight");
    g->w[FEAT_NGRAM] = (float)host->opt_double(opts, "ngram_weight");
    *state = g;
    return 0;
}

static void n_fini(void *state)
{
    free(state);
}

static int n_dimension(void *state)
{
    return ((ngram *)state)->dim;
}

/* The slot of a feature: bits the dim bucket (low bits) does not use. */
static uint32_t slot_of(const model *md, uint64_t h)
{
    return (uint32_t)((h >> 24) % md->buckets);
}

static float idf(const model *md, uint64_t h)
{
    if (!md || !md->n)
        return 1.0f;
    return logf(((float)md->n + 1.0f) / ((float)md->df[slot_of(md, h)] + 1.0f)) + 1.0f;
}

typedef struct weigh {
    const ngram *g;
    const model *md;
} weigh;

static float weight(const void *arg, int family, uint64_t h)
{
    const weigh *w = arg;
    return w->g->w[family] * idf(w->md, h);
}

static int n_embed(void *state, const void *mdl, const char *const *texts,
                   const size_t *lens, size_t n, float *out)
{
    const ngram *g = state;
    weigh w = {g, mdl};
    for (size_t i = 0; i < n; i++)
        if (feat_embed(texts[i], lens[i], g->dim, weight, &w,
                       out + i * (size_t)g->dim) < 0)
            return SOPHIA_ENOMEM;
    return 0;
}

static model *model_new(uint32_t buckets)
{
    model *md = calloc(1, sizeof(*md));
    if (md && !(md->df = calloc(buckets, sizeof(*md->df)))) {
        free(md);
        return NULL;
    }
    if (md)
        md->buckets = buckets;
    return md;
}

static void n_model_free(void *state, void *mdl)
{
    (void)state;
    model *md = mdl;
    if (md)
        free(md->df);
    free(md);
}

/* Each text counts once per slot it has a feature in. */
static void *n_fit(void *state, const char *const *texts, const size_t *lens,
                   size_t n)
{
    const ngram *g = state;
    model *md = model_new(g->buckets);
    if (!md)
        return NULL;
    uint32_t *seen = calloc(g->buckets, sizeof(*seen)); /* text index + 1 */
    for (size_t t = 0; seen && t < n && md->n < UINT32_MAX; t++) {
        feats f = {0};
        if (feat_collect(&f, texts[t], lens[t]) < 0) {
            free(f.v);
            break;
        }
        for (size_t i = 0; i < f.n; i++) {
            uint32_t s = slot_of(md, f.v[i].h);
            if (seen[s] != (uint32_t)t + 1) {
                seen[s] = (uint32_t)t + 1;
                md->df[s]++;
            }
        }
        free(f.v);
        md->n++;
    }
    free(seen);
    if (!md->n) {
        n_model_free(state, md);
        return NULL;
    }
    return md;
}

static char *n_model_export(void *state, const void *mdl)
{
    (void)state;
    const model *md = mdl;
    size_t cap = 64, len = 0;
    for (uint32_t i = 0; i < md->buckets; i++)
        cap += md->df[i] ? 22 : 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    len = (size_t)snprintf(s, cap, "ngram_idf 1 %" PRIu32 " %" PRIu32 "\n",
                           md->buckets, md->n);
    for (uint32_t i = 0; i < md->buckets; i++)
        if (md->df[i])
            len += (size_t)snprintf(s + len, cap - len, "%" PRIu32 ":%" PRIu32 " ",
                                    i, md->df[i]);
    return s;
}

static void *n_model_import(void *state, const char *text)
{
    const ngram *g = state;
    unsigned long buckets, n;
    int used = 0;
    if (sscanf(text, "ngram_idf 1 %lu %lu\n%n", &buckets, &n, &used) != 2 ||
        buckets != g->buckets || n > UINT32_MAX)
        return NULL; /* another version or another buckets: fit again */
    model *md = model_new(g->buckets);
    if (!md)
        return NULL;
    md->n = (uint32_t)n;
    const char *p = text + used;
    while (*p) {
        char *end;
        unsigned long slot = strtoul(p, &end, 10);
        if (end == p || *end != ':' || slot >= buckets)
            break;
        p = end + 1;
        unsigned long df = strtoul(p, &end, 10);
        if (end == p || df > UINT32_MAX)
            break;
        md->df[slot] = (uint32_t)df;
        p = end;
        while (*p == ' ')
            p++;
    }
    if (*p) {
        n_model_free(state, md);
        return NULL;
    }
    return md;
}

static const sophia_embedder_ops ops = {
    .struct_size = sizeof(sophia_embedder_ops),
    .dimension = n_dimension,
    .embed = n_embed,
    .fit = n_fit,
    .model_export = n_model_export,
    .model_import = n_model_import,
    .model_free = n_model_free,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = NAME,
    .version = VERSION,
    .kind = SOPHIA_KIND_EMBEDDER,
    .description = "tf-idf of words, word pairs and character n-grams, idf "
                   "learnt from the store",
    .options = options,
    .init = n_init,
    .fini = n_fini,
    .embedder = &ops,
};
