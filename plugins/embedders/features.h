/*
 * features - the text features both bundled embedders hash: lower-cased
 * words, word bigrams, and the character 3..5-grams of each word with
 * boundary marks (so "^cat" differs from "cat" inside "concatenate").
 * Character n-grams are what give a misspelled word most of the vector of
 * the right one.
 *
 * Each feature is a 64-bit hash under a fixed per-family seed (64-bit
 * FNV-1a with a final mix, the same function as core/lib/hash.c's
 * sophia_hash_stable, so the core's built-in embedder and the bundled
 * `hashing` plugin make identical vectors). Features are collected, then
 * sorted so equal ones sit together: that gives term frequencies without
 * a hash table and makes every float sum's order depend only on the text.
 *
 * libc only, static functions: included by plugins/embedders/hashing,
 * plugins/embedders/ngram_idf and core/memory/embed.c.
 */
#ifndef SOPHIA_EMBED_FEATURES_H
#define SOPHIA_EMBED_FEATURES_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Fixed seeds per feature family, so "ab" the word and "ab" the n-gram
 * land in different buckets. Never change them: stored vectors and saved
 * indexes depend on them. */
#define FEAT_SEED_WORD 0x9e3779b97f4a7c15ULL
#define FEAT_SEED_BIGRAM 0xc2b2ae3d27d4eb4fULL
#define FEAT_SEED_NGRAM 0x165667b19e3779f9ULL

#define FEAT_MAX_WORD 64 /* longer "words" (base64, hashes) are cut */

typedef enum feat_family { FEAT_WORD = 0, FEAT_BIGRAM, FEAT_NGRAM } feat_family;

typedef struct feat {
    uint64_t h;
    int family;
} feat;

typedef struct feats {
    feat *v;
    size_t n, cap;
} feats;

static inline uint64_t feat_hash(uint64_t seed, const unsigned char *p,
                                 size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

static inline int feat_push(feats *f, uint64_t h, int family)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 256;
        feat *v = realloc(f->v, cap * sizeof(*v));
        if (!v)
            return -1;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n].h = h;
    f->v[f->n].family = family;
    f->n++;
    return 0;
}

static inline int feat_is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c >= 0x80; /* UTF-8 letters */
}

/* Character 3..5-grams of "^word$". */
static inline int feat_ngrams(feats *f, const unsigned char *w, size_t n)
{
    unsigned char buf[FEAT_MAX_WORD + 2];
    buf[0] = '^';
    memcpy(buf + 1, w, n);
    buf[n + 1] = '$';
    size_t len = n + 2;
    for (size_t g = 3; g <= 5; g++)
        for (size_t i = 0; i + g <= len; i++)
            if (feat_push(f, feat_hash(FEAT_SEED_NGRAM, buf + i, g), FEAT_NGRAM) < 0)
                return -1;
    return 0;
}

/* Appends the features of text[0..len) to f; -1 when out of memory. */
static inline int feat_collect(feats *f, const char *text, size_t len)
{
    unsigned char prev[FEAT_MAX_WORD], cur[FEAT_MAX_WORD];
    size_t nprev = 0, i = 0;
    while (i < len) {
        while (i < len && !feat_is_word_byte((unsigned char)text[i]))
            i++;
        size_t n = 0;
        for (; i < len && feat_is_word_byte((unsigned char)text[i]); i++) {
            unsigned char c = (unsigned char)text[i];
            if (n < FEAT_MAX_WORD)
                cur[n++] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
        }
        if (n == 0)
            break;
        if (feat_push(f, feat_hash(FEAT_SEED_WORD, cur, n), FEAT_WORD) < 0 ||
            feat_ngrams(f, cur, n) < 0)
            return -1;
        if (nprev) {
            unsigned char pair[2 * FEAT_MAX_WORD + 1];
            memcpy(pair, prev, nprev);
            pair[nprev] = ' ';
            memcpy(pair + nprev + 1, cur, n);
            if (feat_push(f, feat_hash(FEAT_SEED_BIGRAM, pair, nprev + 1 + n),
                          FEAT_BIGRAM) < 0)
                return -1;
        }
        memcpy(prev, cur, n);
        nprev = n;
    }
    return 0;
}

static inline int feat_cmp(const void *a, const void *b)
{
    uint64_t x = ((const feat *)a)->h, y = ((const feat *)b)->h;
    return x < y ? -1 : x > y;
}

/* The features of a text, sorted by hash (equal ones adjacent). */
static inline int feat_sorted(feats *f, const char *text, size_t len)
{
    if (feat_collect(f, text, len) < 0)
        return -1;
    if (f->n)
        qsort(f->v, f->n, sizeof(*f->v), feat_cmp);
    return 0;
}

/* Adds +-v to the bucket the low bits of h pick (one more bit, the top,
 * picks the sign: collisions then cancel on average instead of piling
 * up). */
static inline void feat_bucket_add(float *out, int dim, uint64_t h, float v)
{
    out[h % (uint64_t)dim] += (h >> 63) ? -v : v;
}

/* Scales out[0..dim) to unit length (all zeros stay zeros); the float
 * arithmetic is the 1.1 in-core embedder's, bit for bit. */
static inline void feat_normalize(float *out, int dim)
{
    double norm = 0;
    for (int k = 0; k < dim; k++)
        norm += (double)out[k] * out[k];
    if (norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int k = 0; k < dim; k++)
            out[k] *= inv;
    }
}

/* The embedding both bundled embedders make: each distinct feature adds
 * weight(arg, family, hash) x (1 + ln tf) to its bucket, then the vector
 * is normalized. 0, or -1 when out of memory. */
static inline int feat_embed(const char *text, size_t len, int dim,
                             float (*weight)(const void *arg, int family,
                                             uint64_t h),
                             const void *arg, float *out)
{
    feats f = {0};
    memset(out, 0, (size_t)dim * sizeof(*out));
    if (feat_sorted(&f, text, len) < 0) {
        free(f.v);
        return -1;
    }
    for (size_t i = 0; i < f.n;) {
        size_t j = i;
        while (j < f.n && f.v[j].h == f.v[i].h)
            j++;
        float v = weight(arg, f.v[i].family, f.v[i].h) * (1.0f + logf((float)(j - i)));
        feat_bucket_add(out, dim, f.v[i].h, v);
        i = j;
    }
    free(f.v);
    feat_normalize(out, dim);
    return 0;
}

#endif
