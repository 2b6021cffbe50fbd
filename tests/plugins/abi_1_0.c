/*
 * abi_1_0 - stands for a plugin built against an older minor of the SDK.
 *
 * The host is at 1.0, so there is no older minor yet; what an older-minor
 * plugin looks like to a newer host is a descriptor whose `struct_size`
 * is smaller than the host's sizeof(sophia_plugin), carrying an older
 * `abi_minor`. This one is exactly the 1.0 members and nothing after them
 * (no spare slots): its own struct type, exported under the descriptor
 * symbol. A host that read a byte past `struct_size` would read past this
 * object - under the sanitized build, an ASan global-buffer-overflow.
 * The loader must accept it and the plugin must work.
 */
#include <sophia/sdk.h>

#include <stddef.h>

/* sophia_plugin as SDK 1.0 defined its members, without `reserved`. */
typedef struct plugin_1_0 {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;
    const char *name;
    const char *version;
    sophia_plugin_kind kind;
    const char *description;
    const sophia_option *options;
    int (*init)(const sophia_host *host, sophia_self *self,
                const sophia_opts *opts, void **state);
    void (*fini)(void *state);
    const sophia_processor_ops *processor;
    const sophia_write_ops *write_strategy;
    const sophia_consolidator_ops *consolidator;
} plugin_1_0;

_Static_assert(offsetof(plugin_1_0, consolidator) ==
                   offsetof(sophia_plugin, consolidator),
               "plugin_1_0 must lay out like the head of sophia_plugin");
_Static_assert(sizeof(plugin_1_0) < sizeof(sophia_plugin),
               "plugin_1_0 must be shorter than this SDK's descriptor");

static sophia_verdict v10_process(void *state, const sophia_event *ev,
                                  sophia_ctx *ctx)
{
    const sophia_host *h = state;
    sophia_json *data = h->json_copy(ev->body);
    if (!data || h->publish(ctx, SOPHIA_UPDATE_DATA, "abi_1_0", NULL, data))
        return SOPHIA_PROCESS_ERROR;
    return SOPHIA_PROCESS_OK;
}

static int v10_init(const sophia_host *host, sophia_self *self,
                    const sophia_opts *opts, void **state)
{
    (void)self;
    (void)opts;
    *state = (void *)host;
    return host->abi_major == 1 ? SOPHIA_OK : SOPHIA_EABI;
}

static const sophia_processor_ops v10_ops = {
    .struct_size = offsetof(sophia_processor_ops, process) + sizeof(void *),
    .process = v10_process,
};

SOPHIA_EXPORT const plugin_1_0 sophia_plugin_v1 = {
    .struct_size = sizeof(plugin_1_0),
    .abi_major = 1,
    .abi_minor = 0,
    .name = "abi_1_0",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "a 1.0 descriptor without spare slots",
    .init = v10_init,
    .processor = &v10_ops,
};
