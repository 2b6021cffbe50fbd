/*
 * broken_common.h - the parts every deliberately broken test plugin shares:
 * a do-nothing processor, so that each broken plugin differs from a valid
 * one in exactly the one way its name says.
 */
#ifndef SOPHIA_TEST_BROKEN_COMMON_H
#define SOPHIA_TEST_BROKEN_COMMON_H

#include <sophia/sdk.h>

static sophia_verdict broken_process(void *state, const sophia_event *ev,
                                     sophia_ctx *ctx)
{
    (void)state;
    (void)ev;
    (void)ctx;
    return SOPHIA_PROCESS_OK;
}

/* unused by init_fails, which brings its own */
__attribute__((unused)) static int broken_init(const sophia_host *host, sophia_self *self,
                       const sophia_opts *opts, void **state)
{
    (void)host;
    (void)self;
    (void)opts;
    *state = 0;
    return SOPHIA_OK;
}

static const sophia_processor_ops broken_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = broken_process,
};

#endif
