/*
 * crash_in_init - a valid descriptor whose init() crashes: a null pointer
 * write by default, abort() with `how: abort`, exit(3) with `how: exit`.
 * The daemon must try it in a child and refuse it, never crash itself.
 */
#include <stdlib.h>
#include <string.h>

#include "broken_common.h"

/* Not instrumented: under a sanitizer build the write must still be a
 * real SIGSEGV, not a sanitizer report and exit(1). */
__attribute__((no_sanitize("address", "undefined")))
static int crash_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    (void)self;
    *state = 0;
    const char *how = host->opt_string(opts, "how");
    if (how && strcmp(how, "abort") == 0)
        abort();
    if (how && strcmp(how, "exit") == 0)
        exit(3);
    /* volatile: the compiler cannot see the null and make it a trap */
    volatile int *volatile p = NULL;
    *p = 42;
    return SOPHIA_OK;
}

static const sophia_option crash_options[] = {
    {"how", SOPHIA_OPT_STRING, "segv", "segv, abort or exit"},
    {0},
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "crash_in_init",
    .version = "0.0.1",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "init crashes",
    .options = crash_options,
    .init = crash_init,
    .processor = &broken_ops,
};
