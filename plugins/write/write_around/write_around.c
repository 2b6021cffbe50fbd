/*
 * write_around - a put goes to L3 (PostgreSQL) only and is acknowledged
 * once committed there; L1 and L2 drop the key instead of taking the
 * value, so the next read loads it from L3 and promotes it. For data
 * written often and read rarely, which would only evict hotter entries.
 */
#include <sophia/sdk.h>

static int wa_init(const sophia_host *host, sophia_self *self,
                   const sophia_opts *opts, void **state)
{
    (void)self;
    (void)opts;
    if (!host || host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    *state = NULL;
    return 0;
}

static void wa_fini(void *state)
{
    (void)state;
}

static void wa_plan(void *state, const char *key, unsigned *sync,
                    unsigned *deferred, unsigned *invalidate)
{
    (void)state;
    (void)key;
    *sync = SOPHIA_TIER_L3;
    *deferred = 0;
    *invalidate = SOPHIA_TIER_L1 | SOPHIA_TIER_L2;
}

static const sophia_write_ops wa_ops = {
    .struct_size = sizeof(sophia_write_ops),
    .plan_put = wa_plan,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "write_around",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_WRITE_STRATEGY,
    .description = "write L3 only; invalidate L1 and L2",
    .init = wa_init,
    .fini = wa_fini,
    .write_strategy = &wa_ops,
};
