/*
 * output_batching - the batching and retry options every bundled output
 * plugin takes, and how they become the host's sophia_output_params.
 * Header-only and SDK-only (sdk.h and libc), so each output still builds
 * from its own folder plus this file.
 *
 * Use: put SOPHIA_OUTPUT_BATCH_OPTIONS in the option table, keep a
 * sophia_output_params in the state, fill it in init with
 * output_batching_read, and return it from
 * ops->params with output_batching_apply.
 */
#ifndef SOPHIA_OUTPUT_BATCHING_H
#define SOPHIA_OUTPUT_BATCHING_H

#include <sophia/sdk.h>

#include <stddef.h>

#define SOPHIA_OUTPUT_BATCH_OPTIONS                                            \
    {"batch_size", SOPHIA_OPT_INT, "100", "records per delivery at most"},    \
    {"batch_bytes", SOPHIA_OPT_INT, "1048576",                                \
     "JSON bytes per delivery at most (a bigger record goes alone)"},         \
    {"flush_interval", SOPHIA_OPT_DOUBLE, "0.2",                              \
     "seconds a partial batch waits for more records"},                       \
    {"retry_base", SOPHIA_OPT_DOUBLE, "0.2",                                  \
     "first wait before a failed delivery is tried again"},                   \
    {"retry_cap", SOPHIA_OPT_DOUBLE, "30", "longest wait between two tries"}, \
    {"max_inflight", SOPHIA_OPT_INT, "4",                                     \
     "deliveries in progress at once, 1..64 (1: batches arrive in order)"}

/* Fills `p` from the options; SOPHIA_EINVAL (logged) for a value it
 * cannot use, else SOPHIA_OK. */
static inline int output_batching_read(const sophia_host *h,
                                       sophia_self *self,
                                       const sophia_opts *o,
                                       sophia_output_params *p)
{
    int64_t batch = h->opt_int(o, "batch_size");
    int64_t bytes = h->opt_int(o, "batch_bytes");
    int64_t inflight = h->opt_int(o, "max_inflight");
    if (inflight < 1 || inflight > 64) {
        h->log(self, SOPHIA_LOG_ERROR, "max_inflight must be 1..64, not %lld",
               (long long)inflight);
        return SOPHIA_EINVAL;
    }
    p->batch = batch > 0 ? (size_t)batch : 0; /* 0: the host's default */
    p->batch_bytes = bytes > 0 ? (size_t)bytes : 0;
    p->flush_interval = h->opt_double(o, "flush_interval");
    p->retry_base = h->opt_double(o, "retry_base");
    p->retry_cap = h->opt_double(o, "retry_cap");
    p->max_inflight = (size_t)inflight;
    return SOPHIA_OK;
}

/* Copies the members, not the struct: `to` is the host's, whose
 * struct_size is its own. */
static inline void output_batching_apply(const sophia_output_params *from,
                                         sophia_output_params *to)
{
    to->batch = from->batch;
    to->batch_bytes = from->batch_bytes;
    to->flush_interval = from->flush_interval;
    to->retry_base = from->retry_base;
    to->retry_cap = from->retry_cap;
    if (to->struct_size >= offsetof(sophia_output_params, max_inflight) +
                               sizeof(to->max_inflight)) /* a newer host */
        to->max_inflight = from->max_inflight;
}

#endif
