/*
 * embed - turning text into fixed-size vectors for the memory store.
 *
 * An embedder is a small table of function pointers, so the default one
 * below (no model, no network) can later be replaced by a client of a
 * model server without touching the store. The contract every embedder
 * keeps: `embed` is pure and thread-safe (worker threads call it
 * concurrently), writes exactly `dim` floats, and returns an L2-normalized
 * vector (or all zeros for text with no features), so inner product is
 * cosine similarity.
 *
 * The default is feature hashing ("the hashing trick"): lower-cased words,
 * word bigrams and the character 3..5-grams of each word (with boundary
 * marks, so "^cat" differs from "cat" inside "concatenate") are hashed with
 * lib/hash's stable hash (64-bit FNV-1a) under a fixed per-family seed; the low bits pick one of
 * `dim` buckets, one more bit the sign (which makes collisions cancel on
 * average instead of piling up). Each feature adds weight x (1 + ln tf).
 * Character n-grams are what give a misspelled word most of the vector of
 * the right one. Everything is fixed arithmetic over bytes, so a text maps
 * to the same vector on every run and every machine.
 */
#ifndef SOPHIA_EMBED_H
#define SOPHIA_EMBED_H

#include <stddef.h>

typedef struct sophia_embedder sophia_embedder;

struct sophia_embedder {
    const char *name; /* "hashing" */
    int dim;
    /* Writes dim floats to out. 0, or a negative sophia_errno. */
    int (*embed)(const sophia_embedder *e, const char *text, size_t len,
                 float *out);
    void (*free)(sophia_embedder *e);
    void *state;
};

/* The default embedder; dim in 8..4096. NULL on a bad dim or no memory. */
sophia_embedder *sophia_embed_hashing_new(int dim);

static inline int sophia_embed(const sophia_embedder *e, const char *text,
                               size_t len, float *out)
{
    return e->embed(e, text, len, out);
}

void sophia_embedder_free(sophia_embedder *e);

/* Inner product of two dim-vectors (cosine for normalized ones). */
float sophia_embed_dot(const float *a, const float *b, int dim);

#endif
