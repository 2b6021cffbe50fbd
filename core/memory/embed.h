/*
 * embed - the memory store's view of an embedder: an SDK 1.2 embedder
 * plugin instance (memory.embedder), or the built-in feature hashing a
 * configuration without memory.embedder gets, with the model it was
 * fitted to, if any. Vectors are L2-normalized (or all zeros), so inner
 * product is cosine similarity.
 *
 * Identity. An embedder's `id` names everything its vectors depend on:
 * plugin name and version, dimension, a hash of its effective options,
 * of its fingerprint (sophia_embedder_ops.fingerprint) and of its model.
 * The memory store tags its index and its stored embeddings with it; a
 * different id means the store must be re-embedded (memory_reembed.c).
 * The built-in embedder's id is that of the bundled `hashing` plugin with
 * the same dim: both compute plugins/embedders/hashing/hashing_embed.h.
 *
 * Threads. sophia_embed / sophia_embed_batch / sophia_embed_fit run on
 * worker threads (several at once: the plugin's ops are thread-safe by
 * contract); creating and freeing run on the loop. An embedder never
 * unloads the plugin instance it wraps itself: the plugin set owns it,
 * and each wrapper holds it (sophia_plugin_hold) so that a reload that
 * retires it leaves it loaded until the last wrapper is freed.
 */
#ifndef SOPHIA_EMBED_H
#define SOPHIA_EMBED_H

#include <stddef.h>

#include "plugin/plugin.h"

#define SOPHIA_EMBED_ID_MAX 160

typedef struct sophia_embedder {
    const sophia_embedder_ops *ops;
    void *state;            /* the plugin's (or the built-in's) */
    void *model;            /* fitted model (owned), or NULL */
    sophia_instance *inst;  /* NULL: built in */
    const char *name;       /* plugin name, e.g. "hashing" */
    int dim;
    char id[SOPHIA_EMBED_ID_MAX];
    unsigned refs; /* the memory store's holders (loop thread) */
} sophia_embedder;

/* The built-in feature hashing; dim in 8..4096. NULL on a bad dim or no
 * memory. */
sophia_embedder *sophia_embed_hashing_new(int dim);
/* Wraps an embedder plugin instance (kind SOPHIA_KIND_EMBEDDER); NULL
 * when it is none, or its dimension is out of 8..4096 (*why says which). */
sophia_embedder *sophia_embedder_of(sophia_instance *in, const char **why);
/* The same embedder with `model` (taken; NULL = none): a new identity. */
sophia_embedder *sophia_embedder_with_model(const sophia_embedder *e,
                                            void *model);
/* Frees the wrapper and its model, and ends its hold on the instance
 * (sophia_plugin_drop: a retired one unloads then). NULL is fine. */
void sophia_embedder_free(sophia_embedder *e);

/* n texts into n rows of e->dim floats (worker thread). 0, or a negative
 * sophia_errno. */
int sophia_embed_batch(const sophia_embedder *e, const char *const *texts,
                       const size_t *lens, size_t n, float *out);
static inline int sophia_embed(const sophia_embedder *e, const char *text,
                               size_t len, float *out)
{
    return sophia_embed_batch(e, &text, &len, 1, out);
}

/* 1 when the embedder learns from the store (fit and the model calls). */
int sophia_embed_can_fit(const sophia_embedder *e);
/* fit on a sample (worker thread): a new model, or NULL. */
void *sophia_embed_fit(const sophia_embedder *e, const char *const *texts,
                       const size_t *lens, size_t n);
/* The model as text (malloc'd) / a model from text (NULL: refused). */
char *sophia_embed_model_export(const sophia_embedder *e);
void *sophia_embed_model_import(const sophia_embedder *e, const char *text);

/* Inner product of two dim-vectors (cosine for normalized ones). */
float sophia_embed_dot(const float *a, const float *b, int dim);

#endif
