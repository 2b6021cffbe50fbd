/*
 * hashing - the bundled feature-hashing embedder (hashing_embed.h): no
 * model and nothing to learn, so it is fast (a few microseconds per short
 * text) and needs nothing but its `dim`. The vector leg it gives has no
 * idf: common words weigh as much as rare ones (ngram_idf learns that).
 *
 * Options: dim (8..4096, default 384): the vectors' size.
 */
#include <sophia/sdk.h>

#include <stdint.h>
#include <stdlib.h>

#include "hashing_embed.h"

typedef struct hashing {
    int dim;
} hashing;

static const sophia_option options[] = {
    {"dim", SOPHIA_OPT_INT, "384", "vector size, 8..4096"},
    {NULL, 0, NULL, NULL},
};

static int h_init(const sophia_host *host, sophia_self *self,
                  const sophia_opts *opts, void **state)
{
    int64_t dim = host->opt_int(opts, "dim");
    if (dim < HASHING_DIM_MIN || dim > HASHING_DIM_MAX) {
        host->log(self, SOPHIA_LOG_ERROR, "dim %lld is out of range (8..4096)",
                  (long long)dim);
        return SOPHIA_EINVAL;
    }
    hashing *h = calloc(1, sizeof(*h));
    if (!h)
        return SOPHIA_ENOMEM;
    h->dim = (int)dim;
    *state = h;
    return 0;
}

static void h_fini(void *state)
{
    free(state);
}

static int h_dimension(void *state)
{
    return ((hashing *)state)->dim;
}

static int h_embed(void *state, const void *model, const char *const *texts,
                   const size_t *lens, size_t n, float *out)
{
    (void)model;
    return hashing_embed_batch(((hashing *)state)->dim, texts, lens, n, out)
               ? SOPHIA_ENOMEM
               : 0;
}

static const sophia_embedder_ops ops = {
    .struct_size = sizeof(sophia_embedder_ops),
    .dimension = h_dimension,
    .embed = h_embed,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = HASHING_NAME,
    .version = HASHING_VERSION,
    .kind = SOPHIA_KIND_EMBEDDER,
    .description = "feature hashing of words, word pairs and character "
                   "n-grams (no model)",
    .options = options,
    .init = h_init,
    .fini = h_fini,
    .embedder = &ops,
};
