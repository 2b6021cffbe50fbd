/*
 * write_back - a put is acknowledged once it is in L1 and in the durable
 * journal (a Redis stream); L2 and L3 get it later, in coalesced batches,
 * every flush_interval or when flush_batch entries wait. At most
 * max_dirty entries wait; beyond that puts are refused (HTTP 503) until a
 * flush catches up. The core flushes on SIGTERM and replays the journal
 * after a crash, so an acknowledged write reaches L3 either way. Without
 * Redis (no journal) puts fall back to write-through.
 */
#include <sophia/sdk.h>

#include <stdlib.h>

typedef struct wb_state {
    double interval_s;
    size_t batch, max_dirty;
} wb_state;

static const sophia_option wb_options[] = {
    {"flush_interval", SOPHIA_OPT_DOUBLE, "0.1",
     "seconds between flushes of the dirty set"},
    {"flush_batch", SOPHIA_OPT_INT, "256",
     "flush as soon as this many entries are dirty"},
    {"max_dirty", SOPHIA_OPT_INT, "100000",
     "most entries waiting for a flush; more puts are refused"},
    {NULL, 0, NULL, NULL},
};

static int wb_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    if (!host || host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    double iv = host->opt_double(opts, "flush_interval");
    int64_t batch = host->opt_int(opts, "flush_batch");
    int64_t max = host->opt_int(opts, "max_dirty");
    if (!(iv > 0 && iv <= 3600) || batch < 1 || max < 1) {
        host->log(self, SOPHIA_LOG_ERROR,
                  "flush_interval must be in (0, 3600] seconds, flush_batch "
                  "and max_dirty at least 1");
        return SOPHIA_EINVAL;
    }
    wb_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->interval_s = iv;
    st->batch = (size_t)batch;
    st->max_dirty = (size_t)max;
    *state = st;
    return 0;
}

static void wb_fini(void *state)
{
    free(state);
}

static void wb_plan(void *state, const char *key, unsigned *sync,
                    unsigned *deferred, unsigned *invalidate)
{
    (void)state;
    (void)key;
    *sync = SOPHIA_TIER_L1;
    *deferred = SOPHIA_TIER_L2 | SOPHIA_TIER_L3;
    *invalidate = 0;
}

static void wb_flush_params(void *state, double *interval_s, size_t *batch,
                            size_t *max_dirty)
{
    const wb_state *st = state;
    *interval_s = st->interval_s;
    *batch = st->batch;
    *max_dirty = st->max_dirty;
}

static const sophia_write_ops wb_ops = {
    .struct_size = sizeof(sophia_write_ops),
    .plan_put = wb_plan,
    .flush_params = wb_flush_params,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "write_back",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_WRITE_STRATEGY,
    .description = "ack after L1 + journal; flush to L2/L3 in batches",
    .options = wb_options,
    .init = wb_init,
    .fini = wb_fini,
    .write_strategy = &wb_ops,
};
