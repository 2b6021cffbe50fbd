/*
 * init_fails - a valid descriptor whose init() refuses (SOPHIA_EINVAL):
 * the load must fail with the host's name for that error.
 */
#include "broken_common.h"

static int init_fails_init(const sophia_host *host, sophia_self *self,
                           const sophia_opts *opts, void **state)
{
    (void)host;
    (void)self;
    (void)opts;
    *state = 0;
    return SOPHIA_EINVAL;
}

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "init_fails",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "init always fails",
    .init = init_fails_init,
    .processor = &broken_ops,
};
