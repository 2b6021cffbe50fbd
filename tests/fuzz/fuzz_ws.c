/*
 * fuzz_ws - libFuzzer target for the WebSocket message handler
 * (core/ws/ws_protocol.c, with the queues of ws_client.c): the input is a
 * session of client messages, one per line, fed to a detached client (no
 * lws connection: replies stay in its queue) of a fresh router, with a
 * publish between messages so subscriptions, `since` replays, coalescing
 * and the queue bound all run. Any input must be answered or refused
 * without crashing, leaking (LeakSanitizer) or letting the queue pass
 * max_queue.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws/ws.h"

#define FUZZ_MAX_QUEUE 32

static void publish(sophia_ws_router *r, unsigned n)
{
    static const char *const topics[] = {"dashboard:x", "updates:metric", "alerts"};
    json_t *data = json_pack("{s:s,s:i}", "metric", n % 2 ? "a" : "b", "value", (int)n);
    sophia_ws_route(r, n % 3 ? "metric" : "alert", topics, NULL, 1 + n % 3,
                    "x", data);
    json_decref(data);
}

/* A registered method, as the http layer's stats is: the registry, the
 * scope check and the response path run too. */
static void method_echo(sophia_ws_router *r, uint64_t client, const char *req_id,
                        json_t *params, void *arg)
{
    (void)arg;
    sophia_ws_respond(r, client, req_id, params ? json_deep_copy(params) : NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* no loop, no configuration: defaults, no timers, no cluster */
    sophia_ws_router *r = sophia_ws_router_new(NULL, NULL, FUZZ_MAX_QUEUE);
    if (!r)
        return 0;
    sophia_ws_register_method(r, "stats", method_echo, NULL);
    sophia_ws_register_method(r, "cache.get", method_echo, NULL);
    sophia_ws_client *c = sophia_ws_open(r, NULL);
    const char *p = (const char *)data, *end = p + size;
    for (unsigned n = 0; c && p < end; n++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        sophia_ws_feed(c, p, len);
        publish(r, n);
        if (sophia_ws_queued(c) > FUZZ_MAX_QUEUE)
            abort(); /* the queue bound is the slow-consumer guarantee */
        p += len + 1;
    }
    if (c)
        sophia_ws_closed(c);
    sophia_ws_router_free(r);
    return 0;
}
