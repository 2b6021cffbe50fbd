/*
 * hang_in_init - a valid descriptor whose init() never returns: the
 * daemon's child trial must be killed after plugins.init_timeout.
 */
#include <unistd.h>

#include "broken_common.h"

static int hang_init(const sophia_host *host, sophia_self *self,
                     const sophia_opts *opts, void **state)
{
    (void)host;
    (void)self;
    (void)opts;
    *state = 0;
    for (;;)
        pause();
    return SOPHIA_OK;
}

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "hang_in_init",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "init never returns",
    .init = hang_init,
    .processor = &broken_ops,
};
