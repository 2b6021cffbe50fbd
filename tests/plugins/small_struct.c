/*
 * small_struct - a descriptor whose struct_size says it ends before the
 * fields SDK 1.0 defines (as if built against a truncated sdk.h): the host
 * must refuse it rather than read past its end.
 */
#include <stddef.h>

#include "broken_common.h"

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    .struct_size = offsetof(sophia_plugin, init),
    .abi_major = SOPHIA_SDK_VERSION_MAJOR,
    .abi_minor = SOPHIA_SDK_VERSION_MINOR,
    .name = "small_struct",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .init = broken_init,
    .processor = &broken_ops,
};
