/*
 * slow_embed - a test embedder (SDK 1.2) that takes `delay_us` per text:
 * words hashed into `dim` buckets, then a sleep. It makes a background
 * re-embed last long enough for memory_embedder.test.mjs to search while
 * it runs, whatever the machine's speed.
 */
#include <sophia/sdk.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slow {
    int dim;
    int64_t delay_us;
} slow;

static const sophia_option options[] = {
    {"dim", SOPHIA_OPT_INT, "64", "vector size"},
    {"delay_us", SOPHIA_OPT_INT, "2000", "time each text takes"},
    {NULL, 0, NULL, NULL},
};

static int s_init(const sophia_host *host, sophia_self *self,
                  const sophia_opts *opts, void **state)
{
    (void)self;
    slow *s = calloc(1, sizeof(*s));
    if (!s)
        return SOPHIA_ENOMEM;
    s->dim = (int)host->opt_int(opts, "dim");
    s->delay_us = host->opt_int(opts, "delay_us");
    *state = s;
    return 0;
}

static void s_fini(void *state)
{
    free(state);
}

static int s_dimension(void *state)
{
    return ((slow *)state)->dim;
}

static void one(const slow *s, const char *t, size_t len, float *out)
{
    memset(out, 0, (size_t)s->dim * sizeof(*out));
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = i < len ? (unsigned char)t[i] : ' ';
        if (c == ' ' || c == ',' || c == '.') {
            if (h != 1469598103934665603ULL)
                out[h % (uint64_t)s->dim] += (h >> 63) ? -1.0f : 1.0f;
            h = 1469598103934665603ULL;
        } else {
            h = (h ^ (c | 0x20)) * 1099511628211ULL;
        }
    }
    double n = 0;
    for (int k = 0; k < s->dim; k++)
        n += (double)out[k] * out[k];
    for (int k = 0; n > 0 && k < s->dim; k++)
        out[k] = (float)(out[k] / sqrt(n));
    struct timespec ts = {(time_t)(s->delay_us / 1000000),
                          (long)(s->delay_us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int s_embed(void *state, const void *model, const char *const *texts,
                   const size_t *lens, size_t n, float *out)
{
    (void)model;
    const slow *s = state;
    for (size_t i = 0; i < n; i++)
        one(s, texts[i], lens[i], out + i * (size_t)s->dim);
    return 0;
}

static const sophia_embedder_ops ops = {
    .struct_size = sizeof(sophia_embedder_ops),
    .dimension = s_dimension,
    .embed = s_embed,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "slow_embed",
    .version = "0.1.0",
    .kind = SOPHIA_KIND_EMBEDDER,
    .description = "test embedder: hashed words, delay_us per text",
    .options = options,
    .init = s_init,
    .fini = s_fini,
    .embedder = &ops,
};
