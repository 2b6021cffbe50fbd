/*
 * planner - a write strategy with the SDK 1.1 plan_put_ex, for the tests
 * of what a plan sees: a value over `max_sync_bytes` is written to L1 now
 * and to L2/L3 later; one tagged `volatile` stays out of L3; one whose
 * ttl is under 60 s is not written to L3; anything else goes through.
 * It counts what it was told (`planned_bytes`, `planned_tags`,
 * `planned_ex`) so a test can see the cache handed it the put's size and
 * tags. Its 1.0 plan_put (still required) writes through.
 */
#include <sophia/sdk.h>

#include <stdlib.h>
#include <string.h>

typedef struct planner {
    const sophia_host *h;
    sophia_self *self;
    double max_sync;
} planner;

#define ALL (SOPHIA_TIER_L1 | SOPHIA_TIER_L2 | SOPHIA_TIER_L3)

static void plan_put(void *state, const char *key, unsigned *sync,
                     unsigned *deferred, unsigned *inval)
{
    (void)state;
    (void)key;
    *sync = ALL;
    *deferred = *inval = 0;
}

static int tagged(const char *const *tags, const char *tag)
{
    for (size_t i = 0; tags && tags[i]; i++)
        if (!strcmp(tags[i], tag))
            return 1;
    return 0;
}

static void plan_put_ex(void *state, const char *key,
                        const sophia_put_info *info, unsigned *sync,
                        unsigned *deferred, unsigned *inval)
{
    planner *p = state;
    size_t ntags = 0;
    while (info->tags && info->tags[ntags])
        ntags++;
    p->h->counter_add(p->self, "planned_ex", 1);
    p->h->counter_add(p->self, "planned_bytes", (double)info->size);
    p->h->counter_add(p->self, "planned_tags", (double)ntags);
    plan_put(state, key, sync, deferred, inval);
    if ((double)info->size > p->max_sync) {
        *sync = SOPHIA_TIER_L1;
        *deferred = SOPHIA_TIER_L2 | SOPHIA_TIER_L3;
    } else if (tagged(info->tags, "volatile")) {
        *sync = SOPHIA_TIER_L1 | SOPHIA_TIER_L2;
        *inval = SOPHIA_TIER_L3;
    } else if (info->ttl_s > 0 && info->ttl_s < 60) {
        *sync = SOPHIA_TIER_L1 | SOPHIA_TIER_L2;
    }
}

static int planner_init(const sophia_host *h, sophia_self *self,
                        const sophia_opts *opts, void **state)
{
    planner *p = calloc(1, sizeof(*p));
    if (!p)
        return SOPHIA_ENOMEM;
    p->h = h;
    p->self = self;
    p->max_sync = h->opt_double(opts, "max_sync_bytes");
    *state = p;
    return SOPHIA_OK;
}

static void planner_fini(void *state)
{
    free(state);
}

static const sophia_option planner_options[] = {
    {"max_sync_bytes", SOPHIA_OPT_INT, "64",
     "larger values reach L2/L3 later"},
    {NULL, SOPHIA_OPT_STRING, NULL, NULL},
};

static const sophia_write_ops planner_ops = {
    .struct_size = sizeof(sophia_write_ops),
    .plan_put = plan_put,
    .plan_put_ex = plan_put_ex,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "planner",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_WRITE_STRATEGY,
    .description = "plans by a put's size, tags and ttl (plan_put_ex)",
    .options = planner_options,
    .init = planner_init,
    .fini = planner_fini,
    .write_strategy = &planner_ops,
};
