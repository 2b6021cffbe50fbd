/*
 * tally12 - a correlator as SDK 1.2 built it (no export_changes or
 * import_key: its ops table ends at import_state), for the test that the
 * host keeps such a one on the whole-state snapshot. It counts the events
 * of each `k` and raises a `tally` alert when a key reaches `fire_at`;
 * export_state / import_state carry the counts as {"<k>": n, ...}.
 */
#include <sophia/sdk.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TALLY_MAX 256

typedef struct tally {
    const sophia_host *h;
    long long fire_at;
    size_t n;
    char *key[TALLY_MAX];
    long long count[TALLY_MAX];
} tally;

static long long *slot(tally *t, const char *k)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->key[i], k))
            return &t->count[i];
    if (t->n == TALLY_MAX || !(t->key[t->n] = strdup(k)))
        return NULL;
    t->count[t->n] = 0;
    return &t->count[t->n++];
}

static int tally_observe(void *state, const sophia_event *ev, sophia_ctx *ctx)
{
    tally *t = state;
    const sophia_host *h = t->h;
    const char *k = h->json_string(h->json_get(ev->body, "k"));
    long long *c = k ? slot(t, k) : NULL;
    if (!c || ++*c != t->fire_at)
        return 0;
    sophia_json *data = h->json_object();
    h->json_set(data, "key", h->json_str(k));
    h->json_set(data, "count", h->json_int(*c));
    sophia_alert a = {.struct_size = sizeof(a), .alert_type = "tally",
                      .message = k};
    return h->alert_ex(ctx, &a, data);
}

static char *tally_export(void *state)
{
    tally *t = state;
    sophia_json *o = t->h->json_object();
    for (size_t i = 0; o && i < t->n; i++)
        t->h->json_set(o, t->key[i], t->h->json_int(t->count[i]));
    char *text = o ? t->h->json_dump(o) : NULL;
    t->h->json_free(o);
    return text;
}

static int tally_import(void *state, const char *json)
{
    tally *t = state;
    const sophia_host *h = t->h;
    sophia_json *o = h->json_parse(json);
    if (!o)
        return SOPHIA_EPARSE;
    for (size_t i = 0; i < h->json_size(o); i++) {
        const sophia_json *v;
        const char *k = h->json_key_at(o, i, &v);
        long long *c = k ? slot(t, k) : NULL;
        if (c)
            *c = (long long)h->json_number(v, 0);
    }
    h->json_free(o);
    return 0;
}

static int tally_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    (void)self;
    tally *t = calloc(1, sizeof(*t));
    if (!t)
        return SOPHIA_ENOMEM;
    t->h = host;
    t->fire_at = host->opt_int(opts, "fire_at");
    *state = t;
    return 0;
}

static void tally_fini(void *state)
{
    tally *t = state;
    for (size_t i = 0; t && i < t->n; i++)
        free(t->key[i]);
    free(t);
}

static const sophia_option tally_options[] = {
    {"fire_at", SOPHIA_OPT_INT, "2", "events of a key that raise the alert"},
    {NULL, 0, NULL, NULL},
};

/* As a 1.2 build had it: the table ends at import_state. */
static const sophia_correlator_ops tally_ops = {
    .struct_size = offsetof(sophia_correlator_ops, export_changes),
    .observe = tally_observe,
    .export_state = tally_export,
    .import_state = tally_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    .struct_size = sizeof(sophia_plugin),
    .abi_major = 1,
    .abi_minor = 2,
    .name = "tally12",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_CORRELATOR,
    .description = "an SDK 1.2 correlator: counts events per key",
    .options = tally_options,
    .init = tally_init,
    .fini = tally_fini,
    .correlator = &tally_ops,
};
