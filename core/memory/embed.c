/*
 * embed - embedders as the memory store sees them (embed.h): a plugin
 * instance's ops, or the built-in hashing, plus a model and an identity.
 */
#include "memory/embed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "embedders/hashing/hashing_embed.h"

/* ------------------------------------------------ the built-in hashing */

/* The built-in's state is its dim: the same code as the bundled plugin. */
static int builtin_dimension(void *state)
{
    return *(int *)state;
}

static int builtin_embed(void *state, const void *model,
                         const char *const *texts, const size_t *lens,
                         size_t n, float *out)
{
    (void)model;
    return hashing_embed_batch(*(int *)state, texts, lens, n, out)
               ? SOPHIA_ENOMEM
               : 0;
}

static const sophia_embedder_ops builtin_ops = {
    .struct_size = sizeof(sophia_embedder_ops),
    .dimension = builtin_dimension,
    .embed = builtin_embed,
};

/* ------------------------------------------------------------ identity */

static uint64_t text_hash(uint64_t h, const char *s)
{
    return s ? feat_hash(h, (const unsigned char *)s, strlen(s)) : h;
}

/* "<name>/<version>/<dim>/o<options>[/f<fingerprint>][/m<model>]", the
 * hashes 64-bit hex: what the index and the stored vectors are tagged
 * with. `opts` is the canonical "key=value\n" text of every option. */
static void make_id(sophia_embedder *e, const char *version, const char *opts,
                    const char *fingerprint, const char *model)
{
    int n = snprintf(e->id, sizeof(e->id), "%s/%s/%d/o%016llx", e->name,
                     version, e->dim,
                     (unsigned long long)text_hash(0, opts));
    if (fingerprint && n > 0 && (size_t)n < sizeof(e->id))
        n += snprintf(e->id + n, sizeof(e->id) - (size_t)n, "/f%016llx",
                      (unsigned long long)text_hash(0, fingerprint));
    if (model && n > 0 && (size_t)n < sizeof(e->id))
        snprintf(e->id + n, sizeof(e->id) - (size_t)n, "/m%016llx",
                 (unsigned long long)text_hash(0, model));
}

/* The effective options (defaults included) as "key=value\n" lines, in
 * the option table's order: equal for equal settings however spelled. */
static char *canonical_opts(const sophia_instance *in)
{
    size_t cap = 256, len = 0;
    char *buf = calloc(1, cap);
    const sophia_option *o = in->desc->options;
    for (; buf && o && o->name; o++) {
        char val[64];
        const char *v = val;
        switch (o->type) {
        case SOPHIA_OPT_INT:
            snprintf(val, sizeof(val), "%lld",
                     (long long)sophia_opts_int(in->opts, o->name));
            break;
        case SOPHIA_OPT_DOUBLE:
            snprintf(val, sizeof(val), "%.17g", sophia_opts_double(in->opts, o->name));
            break;
        case SOPHIA_OPT_BOOL:
            snprintf(val, sizeof(val), "%d", sophia_opts_bool(in->opts, o->name));
            break;
        case SOPHIA_OPT_LIST:
            v = NULL;
            break;
        default:
            v = sophia_opts_string(in->opts, o->name);
        }
        size_t nitems = v ? 1 : sophia_opts_list_len(in->opts, o->name);
        for (size_t i = 0; buf && i <= nitems; i++) {
            const char *part = i == 0 ? o->name
                               : v    ? v
                                      : sophia_opts_list_item(in->opts, o->name, i - 1);
            size_t need = len + strlen(part ? part : "") + 3;
            if (need > cap) {
                char *g = realloc(buf, cap = need * 2);
                if (!g) {
                    free(buf);
                    return NULL;
                }
                buf = g;
            }
            len += (size_t)sprintf(buf + len, "%s%s", part ? part : "",
                                   i == 0 ? "=" : i == nitems ? "\n" : ",");
        }
    }
    return buf;
}

/* --------------------------------------------------------- the wrapper */

sophia_embedder *sophia_embed_hashing_new(int dim)
{
    if (dim < HASHING_DIM_MIN || dim > HASHING_DIM_MAX)
        return NULL;
    sophia_embedder *e = calloc(1, sizeof(*e) + sizeof(int));
    if (!e)
        return NULL;
    e->state = e + 1;
    *(int *)e->state = dim;
    e->ops = &builtin_ops;
    e->name = HASHING_NAME;
    e->dim = dim;
    char opts[32];
    snprintf(opts, sizeof(opts), "dim=%d\n", dim); /* as the plugin's table */
    make_id(e, HASHING_VERSION, opts, NULL, NULL);
    return e;
}

sophia_embedder *sophia_embedder_of(sophia_instance *in, const char **why)
{
    const sophia_embedder_ops *ops = in ? sophia_plugin_embedder(in->desc) : NULL;
    *why = NULL;
    if (!in || in->desc->kind != SOPHIA_KIND_EMBEDDER || !ops) {
        *why = "is not an embedder";
        return NULL;
    }
    int dim = ops->dimension(in->state);
    if (dim < 8 || dim > 4096) {
        *why = "has a dimension out of 8..4096";
        return NULL;
    }
    sophia_embedder *e = calloc(1, sizeof(*e));
    char *opts = canonical_opts(in);
    if (!e || !opts) {
        free(e);
        free(opts);
        *why = "out of memory";
        return NULL;
    }
    e->ops = ops;
    e->state = in->state;
    e->inst = in;
    sophia_plugin_hold(in);
    e->name = in->desc->name;
    e->dim = dim;
    const char *fp = ops->struct_size >= offsetof(sophia_embedder_ops, fingerprint) +
                                             sizeof(void *) && ops->fingerprint
                         ? ops->fingerprint(in->state)
                         : NULL;
    make_id(e, in->desc->version, opts, fp, NULL);
    free(opts);
    return e;
}

int sophia_embed_can_fit(const sophia_embedder *e)
{
    const sophia_embedder_ops *o = e->ops;
    return o->struct_size >= offsetof(sophia_embedder_ops, model_free) + sizeof(void *) &&
           o->fit && o->model_export && o->model_import && o->model_free;
}

sophia_embedder *sophia_embedder_with_model(const sophia_embedder *e,
                                            void *model)
{
    sophia_embedder *n = malloc(sizeof(*n));
    char *text = model ? e->ops->model_export(e->state, model) : NULL;
    if (!n || (model && !text)) {
        free(n);
        free(text);
        if (model)
            e->ops->model_free(e->state, model);
        return NULL;
    }
    *n = *e;
    n->model = model;
    n->refs = 0;
    sophia_plugin_hold(n->inst);
    /* the model's hash replaces the one e may have had */
    char *m = strstr(n->id, "/m");
    if (m)
        *m = '\0';
    size_t len = strlen(n->id);
    if (text)
        snprintf(n->id + len, sizeof(n->id) - len, "/m%016llx",
                 (unsigned long long)text_hash(0, text));
    free(text);
    return n;
}

void sophia_embedder_free(sophia_embedder *e)
{
    if (!e)
        return;
    if (e->model)
        e->ops->model_free(e->state, e->model);
    sophia_instance *in = e->inst;
    free(e);
    sophia_plugin_drop(in); /* after the model: fini may free what it used */
}

int sophia_embed_batch(const sophia_embedder *e, const char *const *texts,
                       const size_t *lens, size_t n, float *out)
{
    return n ? e->ops->embed(e->state, e->model, texts, lens, n, out) : 0;
}

void *sophia_embed_fit(const sophia_embedder *e, const char *const *texts,
                       const size_t *lens, size_t n)
{
    return sophia_embed_can_fit(e) ? e->ops->fit(e->state, texts, lens, n) : NULL;
}

char *sophia_embed_model_export(const sophia_embedder *e)
{
    return e->model ? e->ops->model_export(e->state, e->model) : NULL;
}

void *sophia_embed_model_import(const sophia_embedder *e, const char *text)
{
    return sophia_embed_can_fit(e) ? e->ops->model_import(e->state, text) : NULL;
}

float sophia_embed_dot(const float *a, const float *b, int dim)
{
    float s = 0;
    for (int i = 0; i < dim; i++)
        s += a[i] * b[i];
    return s;
}
