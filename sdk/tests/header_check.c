/*
 * header_check - compiled, never run, by the sdk.header_* tests: once as
 * strict C99 and once as C++11, both with -pedantic -Werror, so sdk.h stays
 * includable from either. It touches every kind of declaration the header
 * has (the error X-macro, enums, the descriptor and its convenience macro,
 * each ops table) the way a plugin would.
 */
#include <sophia/sdk.h>

#include <stddef.h>

static const char *err_name(int err)
{
    switch (err) {
#define CHECK_ERR_(name, val, str)                                            \
    case SOPHIA_##name:                                                       \
        return str;
        SOPHIA_ERRNO_MAP(CHECK_ERR_)
#undef CHECK_ERR_
    default:
        return "?";
    }
}

static sophia_verdict check_process(void *state, const sophia_event *ev,
                                    sophia_ctx *ctx)
{
    (void)state;
    (void)ev;
    (void)ctx;
    return SOPHIA_PROCESS_OK;
}

static int check_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    (void)self;
    *state = NULL;
    if (!host || host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    return host->opt_bool(opts, "on") ? SOPHIA_OK : SOPHIA_EINVAL;
}

static const sophia_option check_options[] = {
    {"on", SOPHIA_OPT_BOOL, "true", "a boolean"},
    {NULL, SOPHIA_OPT_STRING, NULL, NULL},
};

#ifndef __cplusplus
/* C99 designated initializers, as plugins are meant to be written. */
static const sophia_processor_ops check_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = check_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "header_check",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "compiles, never runs",
    .options = check_options,
    .init = check_init,
    .processor = &check_ops,
};
#else
/* C++ before C++20 has no designated initializers: fill a copy by hand. */
extern "C" SOPHIA_EXPORT sophia_plugin sophia_plugin_v1;
sophia_plugin sophia_plugin_v1;
static sophia_processor_ops check_ops;

struct check_fill {
    check_fill()
    {
        check_ops.struct_size = sizeof(sophia_processor_ops);
        check_ops.process = check_process;
        sophia_plugin_v1.struct_size = sizeof(sophia_plugin);
        sophia_plugin_v1.abi_major = SOPHIA_SDK_VERSION_MAJOR;
        sophia_plugin_v1.abi_minor = SOPHIA_SDK_VERSION_MINOR;
        sophia_plugin_v1.name = "header_check";
        sophia_plugin_v1.version = "1.0.0";
        sophia_plugin_v1.kind = SOPHIA_KIND_PROCESSOR;
        sophia_plugin_v1.options = check_options;
        sophia_plugin_v1.init = check_init;
        sophia_plugin_v1.processor = &check_ops;
    }
};
static check_fill check_filled;
#endif

/* Referenced so -Wunused-function stays quiet in both languages. */
const char *(*header_check_err_name)(int) = err_name;
