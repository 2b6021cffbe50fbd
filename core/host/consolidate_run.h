/*
 * consolidate_run - how memory's consolidation runs call a consolidator
 * plugin: in a host action context (host.h), so the plugin reads its batch
 * with host->memory_batch and queues merges, expiries and any other action
 * the usual way.
 *
 * Memory sits below the host in the layers: it picks the batch and applies
 * the merges, and the daemon's wiring registers this function with it
 * (sophia_memory_set_cons_runner), so memory never includes the host.
 */
#ifndef SOPHIA_CONSOLIDATE_RUN_H
#define SOPHIA_CONSOLIDATE_RUN_H

#include <jansson.h>

#include "plugin/plugin.h"

/* A sophia_memory_cons_runner (memory.h); arg is unused. */
int sophia_host_consolidate_run(void *arg, sophia_instance *in, json_t *batch,
                                json_t **ops);

#endif
