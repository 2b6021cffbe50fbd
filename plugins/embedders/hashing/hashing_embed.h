/*
 * hashing_embed - feature hashing ("the hashing trick"), the embedder
 * Sophia always had: each feature of features.h adds its family's weight
 * x (1 + ln tf) to one of `dim` buckets, then the vector is normalized.
 * No model, no fitting: a text maps to the same vector on every run and
 * every machine.
 *
 * Shared by the bundled `hashing` plugin (hashing.c) and the core's
 * built-in embedder (core/memory/embed.c, for a configuration without
 * memory.embedder), so both make the same vectors and moving from one to
 * the other re-embeds nothing.
 */
#ifndef SOPHIA_HASHING_EMBED_H
#define SOPHIA_HASHING_EMBED_H

#include "../features.h"

/* Family weights: a shared word counts most, a shared word pair says the
 * phrasing matches, n-grams are many per word so each weighs less. */
static const float hashing_family_w[3] = {1.0f, 0.7f, 0.3f};

#define HASHING_NAME "hashing"
#define HASHING_VERSION "1.0.0"
#define HASHING_DIM_MIN 8
#define HASHING_DIM_MAX 4096

static inline float hashing_weight(const void *arg, int family, uint64_t h)
{
    (void)arg;
    (void)h;
    return hashing_family_w[family];
}

/* One text into dim floats; 0 or -1 (out of memory). */
static inline int hashing_embed_one(int dim, const char *text, size_t len,
                                    float *out)
{
    return feat_embed(text, len, dim, hashing_weight, NULL, out);
}

/* A batch (the SDK's embed): rows of dim floats. */
static inline int hashing_embed_batch(int dim, const char *const *texts,
                                      const size_t *lens, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        if (hashing_embed_one(dim, texts[i], lens[i], out + i * (size_t)dim) < 0)
            return -1;
    return 0;
}

#endif
