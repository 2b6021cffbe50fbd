/*
 * no_symbol - a shared object that is not a Sophia plugin: it exports a
 * descriptor under the wrong name, so lookup of sophia_plugin_v1 fails.
 */
#include "broken_common.h"

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v0 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "no_symbol",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .init = broken_init,
    .processor = &broken_ops,
};
