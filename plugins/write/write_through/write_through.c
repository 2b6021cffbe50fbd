/*
 * write_through - a put is acknowledged once every tier has it: L1 at
 * once, L2 (Redis) and L3 (PostgreSQL) when they answered. The safest
 * strategy and the slowest to acknowledge; what a key without a configured
 * strategy gets anyway. A tier that is down is skipped for L2 and waited
 * for (retried) for L3: the core never drops a write that must reach L3.
 */
#include <sophia/sdk.h>

#include <stdlib.h>

typedef struct wt_state {
    unsigned tiers;
} wt_state;

static const sophia_option wt_options[] = {
    {"l2", SOPHIA_OPT_BOOL, "true", "also write Redis (L2) before the ack"},
    {NULL, 0, NULL, NULL},
};

static int wt_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    (void)self;
    if (!host || host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    wt_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->tiers = SOPHIA_TIER_L1 | SOPHIA_TIER_L3 |
                (host->opt_bool(opts, "l2") ? SOPHIA_TIER_L2 : 0);
    *state = st;
    return 0;
}

static void wt_fini(void *state)
{
    free(state);
}

static void wt_plan(void *state, const char *key, unsigned *sync,
                    unsigned *deferred, unsigned *invalidate)
{
    (void)key;
    const wt_state *st = state;
    *sync = st->tiers;
    *deferred = 0;
    /* Without L2 in the plan, an older copy there must not be served. */
    *invalidate = st->tiers & SOPHIA_TIER_L2 ? 0 : SOPHIA_TIER_L2;
}

static const sophia_write_ops wt_ops = {
    .struct_size = sizeof(sophia_write_ops),
    .plan_put = wt_plan,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "write_through",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_WRITE_STRATEGY,
    .description = "ack after L1, L2 and L3 all have the value",
    .options = wt_options,
    .init = wt_init,
    .fini = wt_fini,
    .write_strategy = &wt_ops,
};
