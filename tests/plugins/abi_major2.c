/*
 * abi_major2 - a plugin that claims SDK 2.0: the host must refuse it naming
 * both versions, without reading any field past the ABI header.
 */
#include "broken_common.h"

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    .struct_size = sizeof(sophia_plugin),
    .abi_major = 2,
    .abi_minor = 0,
    .name = "abi_major2",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "built for a future major SDK",
    .init = broken_init,
    .processor = &broken_ops,
};
