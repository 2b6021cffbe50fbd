/*
 * abi_minor_newer - a plugin built for a newer minor than the host's: it
 * may call host functions this host lacks, so the host must refuse it.
 */
#include "broken_common.h"

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    .struct_size = sizeof(sophia_plugin),
    .abi_major = SOPHIA_SDK_VERSION_MAJOR,
    .abi_minor = SOPHIA_SDK_VERSION_MINOR + 1,
    .name = "abi_minor_newer",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "built for a newer minor SDK",
    .init = broken_init,
    .processor = &broken_ops,
};
