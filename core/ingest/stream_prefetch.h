/*
 * stream_prefetch - holds a stream's head event while the reads its
 * processor's prefetch asked for are out (host/prefetch.h, SDK 1.1).
 *
 * Kept out of stream.c on purpose: the stream only asks "give me the
 * context for this event's process()" and, while the answer is "wait",
 * starts nothing (sophia_stream_prefetch_waiting), so events still reach
 * process() in order. A processor without a prefetch member costs one
 * check and no allocation.
 */
#ifndef SOPHIA_STREAM_PREFETCH_H
#define SOPHIA_STREAM_PREFETCH_H

#include <sophia/sdk.h>

#include "plugin/plugin.h"

typedef struct sophia_stream_prefetch sophia_stream_prefetch;

/* The context in which `inst` processes `ev` (of stream `stream`) into
 * *out. Returns 0 with *out set (ready: the prefetched answers are in it,
 * or the processor has no prefetch; *out NULL only on out of memory), 1
 * when the event must wait at the head (ready(arg) runs once its reads
 * answered: call again then), or a negative sophia_errno: the reads
 * failed, so the event is a RETRY. *pp is created on first need. */
int sophia_stream_prefetch_ctx(sophia_stream_prefetch **pp,
                               sophia_instance *inst, const char *stream,
                               const sophia_event *ev,
                               void (*ready)(void *arg), void *arg,
                               sophia_ctx **out);
/* 1 while an event's reads are out: the stream starts nothing. */
int sophia_stream_prefetch_waiting(const sophia_stream_prefetch *p);
/* Cancels reads still out (ready is not called). NULL is fine. */
void sophia_stream_prefetch_free(sophia_stream_prefetch *p);

#endif
