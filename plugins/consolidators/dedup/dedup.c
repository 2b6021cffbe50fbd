/*
 * dedup - the consolidator that merges near-duplicate memories.
 *
 * The host hands each run a batch of live memories, each with its nearest
 * live neighbours and their cosine similarity (the vector search is the
 * host's job, off the loop). Two memories are duplicates when their cosine
 * is at least `threshold`, they have the same context (all keys and
 * values) and, with `same_type`, the same memory_type. Of a pair, the one
 * with the longer ("richer") content is kept - the older one on a tie - and
 * the other is merged into it with host->memory_merge: the host sums their
 * access counts, keeps the higher importance and records
 * consolidated_into. A memory merged away in this run is never used again
 * in it, so chains (a~b, b~c) fold into one survivor at most one step at a
 * time, and the next run continues.
 */
#include <sophia/sdk.h>

#include <stdlib.h>
#include <string.h>

typedef struct dedup_state {
    const sophia_host *host;
    sophia_self *self;
    double threshold;
    int same_type;
} dedup_state;

static const sophia_option dedup_options[] = {
    {"threshold", SOPHIA_OPT_DOUBLE, "0.92",
     "cosine similarity (0..1) from which two memories are duplicates"},
    {"same_type", SOPHIA_OPT_BOOL, "true",
     "only merge memories of the same memory_type"},
    {NULL, 0, NULL, NULL},
};

static int dedup_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    /* memory_expire is the newest member used (1.0): any 1.x host. */
    if (!host || host->abi_major != SOPHIA_SDK_VERSION_MAJOR ||
        !SOPHIA_HOST_HAS(host, memory_expire))
        return SOPHIA_EABI;
    double t = host->opt_double(opts, "threshold");
    if (!(t > 0 && t <= 1)) {
        host->log(self, SOPHIA_LOG_ERROR, "threshold must be in (0, 1], got %g", t);
        return SOPHIA_EINVAL;
    }
    dedup_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->threshold = t;
    st->same_type = host->opt_bool(opts, "same_type");
    *state = st;
    return SOPHIA_OK;
}

static void dedup_fini(void *state)
{
    free(state);
}

typedef struct mem {
    int64_t id;
    const sophia_json *row;
    const char *type;
    size_t len;
    char *ctx; /* the context as compact JSON text */
    int gone;  /* merged away in this run */
} mem;

static int mem_cmp(const void *a, const void *b)
{
    int64_t x = ((const mem *)a)->id, y = ((const mem *)b)->id;
    return x < y ? -1 : x > y;
}

static mem *find(mem *v, size_t n, int64_t id)
{
    mem key = {.id = id};
    return bsearch(&key, v, n, sizeof(*v), mem_cmp);
}

static int same_group(const dedup_state *st, const mem *a, const mem *b)
{
    if (!a->ctx || !b->ctx || strcmp(a->ctx, b->ctx) != 0)
        return 0;
    return !st->same_type || (a->type && b->type && !strcmp(a->type, b->type));
}

/* Considers a's neighbours; returns 1 when a itself was merged away. */
static int merge_neighbors(dedup_state *st, sophia_ctx *ctx, mem *v, size_t n,
                           mem *a)
{
    const sophia_host *h = st->host;
    const sophia_json *nb = h->json_get(a->row, "neighbors");
    for (size_t k = 0; k < h->json_size(nb); k++) {
        const sophia_json *e = h->json_at(nb, k);
        double cos = h->json_number(h->json_get(e, "cosine"), 0);
        mem *b = find(v, n, (int64_t)h->json_number(h->json_get(e, "id"), 0));
        if (cos < st->threshold || !b || b == a || b->gone || !same_group(st, a, b))
            continue;
        int keep_a = a->len > b->len || (a->len == b->len && a->id < b->id);
        mem *keep = keep_a ? a : b, *drop = keep_a ? b : a;
        if (h->memory_merge(ctx, keep->id, drop->id) != 0)
            continue;
        drop->gone = 1;
        h->counter_add(st->self, "merged", 1);
        if (drop == a)
            return 1;
    }
    return 0;
}

static int dedup_run(void *state, sophia_ctx *ctx)
{
    dedup_state *st = state;
    const sophia_host *h = st->host;
    const sophia_json *batch = h->memory_batch(ctx);
    size_t n = h->json_size(batch);
    mem *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const sophia_json *row = h->json_at(batch, i);
        const char *content = h->json_string(h->json_get(row, "content"));
        v[i].row = row;
        v[i].id = (int64_t)h->json_number(h->json_get(row, "id"), 0);
        v[i].type = h->json_string(h->json_get(row, "memory_type"));
        v[i].len = content ? strlen(content) : 0;
        v[i].ctx = h->json_dump(h->json_get(row, "context"));
    }
    qsort(v, n, sizeof(*v), mem_cmp);
    for (size_t i = 0; i < n; i++)
        if (!v[i].gone)
            merge_neighbors(st, ctx, v, n, &v[i]);
    for (size_t i = 0; i < n; i++)
        h->free(v[i].ctx);
    free(v);
    return SOPHIA_OK;
}

static const sophia_consolidator_ops dedup_ops = {
    .struct_size = sizeof(sophia_consolidator_ops),
    .run = dedup_run,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "dedup",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_CONSOLIDATOR,
    .description = "merges near-duplicate memories that share a context",
    .options = dedup_options,
    .init = dedup_init,
    .fini = dedup_fini,
    .consolidator = &dedup_ops,
};
