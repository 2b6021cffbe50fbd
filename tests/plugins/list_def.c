/*
 * list_def - a LIST option with a default. SDK 1.0 took it and then ran
 * the plugin with an empty list; the loader now refuses the plugin, since
 * a list's default is always empty.
 */
#include "broken_common.h"

static const sophia_option list_def_options[] = {
    {"tags", SOPHIA_OPT_LIST, "[a, b]", "a list with a default"},
    {NULL, SOPHIA_OPT_STRING, NULL, NULL},
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "list_def",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "a list option with a default",
    .options = list_def_options,
    .init = broken_init,
    .processor = &broken_ops,
};
