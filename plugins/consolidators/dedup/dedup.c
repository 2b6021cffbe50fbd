/*
 * dedup - the consolidator that merges near-duplicate memories.
 *
 * The host hands each run a batch of live memories, each with its nearest
 * live neighbours across the whole store and their cosine similarity (the
 * vector search is the host's job, off the loop), each neighbour with its
 * memory_type, context, content_len and scope (user_id, agent_id,
 * session_id): so a duplicate is found whether its twin is in this batch
 * or not. Two memories are duplicates when their cosine is at least
 * `threshold`, they have the same scope and the same context (all keys
 * and values) and, with `same_type`, the same memory_type. Of a pair, the
 * one with the longer ("richer") content is kept - the older one on a tie
 * - and the other is merged into it with host->memory_merge: the host
 * sums their access counts, keeps the higher importance, records
 * consolidated_into and the merge in both memories' history (and refuses
 * a merge across scopes whatever a plugin asks). A memory merged away in
 * this run is never used again in it, so chains (a~b, b~c) fold into one
 * survivor at most one step at a time, and the next pass continues.
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
    const sophia_json *row; /* a batch row, or a neighbour entry */
    const char *type;
    const char *scope[3]; /* user_id, agent_id, session_id; NULL = none */
    size_t len;
    char *ctx;    /* the context as compact JSON text */
    int in_batch; /* its neighbours are listed */
    int gone;     /* merged away in this run */
} mem;

static int mem_cmp(const void *a, const void *b)
{
    const mem *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return y->in_batch - x->in_batch; /* a batch row before its copies */
}

static mem *find(mem *v, size_t n, int64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) { /* the first entry of `id`: unique after squeeze() */
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo].id == id ? &v[lo] : NULL;
}

static int same_str(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static int same_group(const dedup_state *st, const mem *a, const mem *b)
{
    if (!a->ctx || !b->ctx || strcmp(a->ctx, b->ctx) != 0)
        return 0;
    for (int i = 0; i < 3; i++)
        if (!same_str(a->scope[i], b->scope[i]))
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

/* One mem from a batch row (in_batch) or a neighbour entry, which has
 * content_len instead of content (and, from a 1.0/1.1 host, neither
 * context nor type: such a neighbour then matches nothing). */
static void mem_from(const sophia_host *h, const sophia_json *row, int in_batch,
                     mem *m)
{
    static const char *const scope_keys[3] = {"user_id", "agent_id", "session_id"};
    const char *content = h->json_string(h->json_get(row, "content"));
    m->row = row;
    m->in_batch = in_batch;
    m->id = (int64_t)h->json_number(h->json_get(row, "id"), 0);
    m->type = h->json_string(h->json_get(row, "memory_type"));
    m->len = content ? strlen(content)
                     : (size_t)h->json_number(h->json_get(row, "content_len"), 0);
    const sophia_json *c = h->json_get(row, "context");
    m->ctx = c ? h->json_dump(c) : NULL;
    for (int i = 0; i < 3; i++)
        m->scope[i] = h->json_string(h->json_get(row, scope_keys[i]));
}

/* Sorted by id, one entry per id (the batch row when there is one). */
static size_t squeeze(const sophia_host *h, mem *v, size_t n)
{
    qsort(v, n, sizeof(*v), mem_cmp);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u && v[u - 1].id == v[i].id) {
            h->free(v[i].ctx);
            continue;
        }
        v[u++] = v[i];
    }
    return u;
}

static int dedup_run(void *state, sophia_ctx *ctx)
{
    dedup_state *st = state;
    const sophia_host *h = st->host;
    const sophia_json *batch = h->memory_batch(ctx);
    size_t n = h->json_size(batch), total = n;
    for (size_t i = 0; i < n; i++)
        total += h->json_size(h->json_get(h->json_at(batch, i), "neighbors"));
    mem *v = calloc(total ? total : 1, sizeof(*v));
    if (!v)
        return SOPHIA_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const sophia_json *row = h->json_at(batch, i);
        const sophia_json *nb = h->json_get(row, "neighbors");
        mem_from(h, row, 1, &v[k++]);
        for (size_t j = 0; j < h->json_size(nb); j++)
            mem_from(h, h->json_at(nb, j), 0, &v[k++]);
    }
    k = squeeze(h, v, k);
    for (size_t i = 0; i < k; i++)
        if (v[i].in_batch && !v[i].gone)
            merge_neighbors(st, ctx, v, k, &v[i]);
    for (size_t i = 0; i < k; i++)
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
    .version = "1.1.0",
    .kind = SOPHIA_KIND_CONSOLIDATOR,
    .description = "merges near-duplicate memories that share a scope and context",
    .options = dedup_options,
    .init = dedup_init,
    .fini = dedup_fini,
    .consolidator = &dedup_ops,
};
