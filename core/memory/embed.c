/*
 * embed - the feature-hashing embedder; see embed.h for the scheme.
 *
 * Features are first collected as 64-bit hashes, then sorted so equal
 * features sit together: that gives each feature's term frequency without
 * a hash table, and makes the sum order (hence the float result) depend
 * only on the text.
 */
#include "memory/embed.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "lib/hash.h"

/* Fixed seeds per feature family, so "ab" the word and "ab" the n-gram
 * land in different buckets. Never change them: stored vectors and saved
 * indexes depend on them. */
#define SEED_WORD 0x9e3779b97f4a7c15ULL
#define SEED_BIGRAM 0xc2b2ae3d27d4eb4fULL
#define SEED_NGRAM 0x165667b19e3779f9ULL

/* Family weights: a shared word counts most, a shared word pair says the
 * phrasing matches, n-grams are many per word so each weighs less. */
#define W_WORD 1.0f
#define W_BIGRAM 0.7f
#define W_NGRAM 0.3f

#define MAX_WORD 64 /* longer "words" (base64, hashes) are cut */

typedef struct feat {
    uint64_t h;
    float w;
} feat;

typedef struct feats {
    feat *v;
    size_t n, cap;
} feats;

static int push(feats *f, uint64_t h, float w)
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
    f->v[f->n].w = w;
    f->n++;
    return 0;
}

static int is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c >= 0x80; /* UTF-8 letters */
}

/* Character 3..5-grams of "^word$". */
static int add_ngrams(feats *f, const unsigned char *w, size_t n)
{
    unsigned char buf[MAX_WORD + 2];
    buf[0] = '^';
    memcpy(buf + 1, w, n);
    buf[n + 1] = '$';
    size_t len = n + 2;
    for (size_t g = 3; g <= 5; g++)
        for (size_t i = 0; i + g <= len; i++)
            if (push(f, sophia_hash_stable(SEED_NGRAM, buf + i, g), W_NGRAM) < 0)
                return -1;
    return 0;
}

static int collect(feats *f, const char *text, size_t len)
{
    unsigned char prev[MAX_WORD], cur[MAX_WORD];
    size_t nprev = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && !is_word_byte((unsigned char)text[i]))
            i++;
        size_t n = 0;
        for (; i < len && is_word_byte((unsigned char)text[i]); i++) {
            unsigned char c = (unsigned char)text[i];
            if (n < MAX_WORD)
                cur[n++] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
        }
        if (n == 0)
            break;
        if (push(f, sophia_hash_stable(SEED_WORD, cur, n), W_WORD) < 0 ||
            add_ngrams(f, cur, n) < 0)
            return -1;
        if (nprev) {
            unsigned char pair[2 * MAX_WORD + 1];
            memcpy(pair, prev, nprev);
            pair[nprev] = ' ';
            memcpy(pair + nprev + 1, cur, n);
            uint64_t h = sophia_hash_stable(SEED_BIGRAM, pair, nprev + 1 + n);
            if (push(f, h, W_BIGRAM) < 0)
                return -1;
        }
        memcpy(prev, cur, n);
        nprev = n;
    }
    return 0;
}

static int feat_cmp(const void *a, const void *b)
{
    uint64_t x = ((const feat *)a)->h, y = ((const feat *)b)->h;
    return x < y ? -1 : x > y;
}

static int hashing_embed(const sophia_embedder *e, const char *text,
                         size_t len, float *out)
{
    feats f = {0};
    memset(out, 0, (size_t)e->dim * sizeof(*out));
    if (collect(&f, text, len) < 0) {
        free(f.v);
        return SOPHIA_ENOMEM;
    }
    if (f.n)
        qsort(f.v, f.n, sizeof(*f.v), feat_cmp);
    for (size_t i = 0; i < f.n;) {
        size_t j = i;
        while (j < f.n && f.v[j].h == f.v[i].h)
            j++;
        uint64_t h = f.v[i].h;
        float v = f.v[i].w * (1.0f + logf((float)(j - i)));
        out[h % (uint64_t)e->dim] += (h >> 63) ? -v : v;
        i = j;
    }
    free(f.v);
    double norm = 0;
    for (int k = 0; k < e->dim; k++)
        norm += (double)out[k] * out[k];
    if (norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int k = 0; k < e->dim; k++)
            out[k] *= inv;
    }
    return 0;
}

static void hashing_free(sophia_embedder *e)
{
    free(e);
}

sophia_embedder *sophia_embed_hashing_new(int dim)
{
    if (dim < 8 || dim > 4096)
        return NULL;
    sophia_embedder *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->name = "hashing";
    e->dim = dim;
    e->embed = hashing_embed;
    e->free = hashing_free;
    return e;
}

void sophia_embedder_free(sophia_embedder *e)
{
    if (e && e->free)
        e->free(e);
}

float sophia_embed_dot(const float *a, const float *b, int dim)
{
    float s = 0;
    for (int i = 0; i < dim; i++)
        s += a[i] * b[i];
    return s;
}
