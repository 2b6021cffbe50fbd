/*
 * actions - a processor that queues whatever action its event asks for, so
 * tests can check every host action end to end (sophia_ctx_actions_json,
 * sophia-plugin-test) without a business plugin's logic in the way.
 *
 * The event is {"op": OP, ...}:
 *   put      key, value, tags?, ttl?   cache_put
 *   incr     key                       cache_peek + cache_put of value + 1
 *   del      key                       cache_invalidate
 *   deltag   tag                       cache_invalidate_tag
 *   publish  type?, topic?, dashboard?, data
 *   alert    alert_type, severity, message, data?
 *   alert_ex alert_type, severity, message, alert_id?, topic?, dashboard?,
 *            resolve?, data?    (SDK 1.1: EABI on an older host)
 *   remember content, memory_type?, context?, importance?   memory_store
 *   get      key                       cache_get, then a put of the value
 *                                      (or null) under "<key>:copy"
 *   get_ex   key                       the same with the 1.1 cache_get_ex
 *   drop | retry | fail                that verdict, after queuing a publish
 *                                      (which the host must then discard)
 * A list in "ops" runs several in order within one event.
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sophia_host *H;
static sophia_self *SELF;

static const char *str(const sophia_json *v, const char *path)
{
    return H->json_string(H->json_get(v, path));
}

static sophia_json *copy_or_null(const sophia_json *v)
{
    return v ? H->json_copy(v) : NULL;
}

static int put(sophia_ctx *ctx, const sophia_json *op)
{
    const char *tags[8] = {0};
    const sophia_json *t = H->json_get(op, "tags");
    for (size_t i = 0; i < H->json_size(t) && i < 7; i++)
        tags[i] = H->json_string(H->json_at(t, i));
    return H->cache_put(ctx, str(op, "key"),
                        copy_or_null(H->json_get(op, "value")),
                        H->json_number(H->json_get(op, "ttl"), 0), tags);
}

static int incr(sophia_ctx *ctx, const sophia_json *op)
{
    sophia_json *old = H->cache_peek(str(op, "key"));
    double n = H->json_number(old, 0);
    H->json_free(old);
    return H->cache_put(ctx, str(op, "key"), H->json_int((int64_t)n + 1), 0,
                        NULL);
}

static int publish(sophia_ctx *ctx, const sophia_json *op)
{
    static const char *const types[] = {"metric", "alert", "notification",
                                        "data"};
    const char *type = str(op, "type");
    sophia_update_type t = SOPHIA_UPDATE_DATA;
    for (int i = 0; type && i < 4; i++)
        if (strcmp(type, types[i]) == 0)
            t = (sophia_update_type)i;
    return H->publish(ctx, t, str(op, "topic"), str(op, "dashboard"),
                      copy_or_null(H->json_get(op, "data")));
}

static void got(void *arg, int rc, const sophia_json *v)
{
    *(sophia_json **)arg = rc == 0 && v ? H->json_copy(v) : NULL;
}

static int get(sophia_ctx *ctx, const sophia_json *op, int owned)
{
    char key[256];
    sophia_json *v = NULL;
    if (owned && !SOPHIA_HOST_HAS(H, cache_get_ex))
        return SOPHIA_EABI;
    /* Answered before returning here (L1, or the tool's map); a real
     * plugin's callback would usually run later. */
    int rc = owned ? H->cache_get_ex(SELF, str(op, "key"), got, &v)
                   : H->cache_get(str(op, "key"), got, &v);
    if (rc)
        return rc;
    snprintf(key, sizeof(key), "%s:copy", str(op, "key"));
    return H->cache_put(ctx, key, v ? v : H->json_str("miss"), 0, NULL);
}

static int remember(sophia_ctx *ctx, const sophia_json *op)
{
    return H->memory_store(ctx, str(op, "content"), str(op, "memory_type"),
                           copy_or_null(H->json_get(op, "context")),
                           H->json_number(H->json_get(op, "importance"), -1));
}

static int alert_ex(sophia_ctx *ctx, const sophia_json *op)
{
    if (!SOPHIA_HOST_HAS(H, alert_ex))
        return SOPHIA_EABI;
    sophia_alert a = {.struct_size = sizeof(a),
                      .alert_type = str(op, "alert_type"),
                      .severity = str(op, "severity"),
                      .message = str(op, "message"),
                      .alert_id = str(op, "alert_id"),
                      .topic = str(op, "topic"),
                      .dashboard_id = str(op, "dashboard"),
                      .resolve = H->json_bool(H->json_get(op, "resolve"), 0)};
    return H->alert_ex(ctx, &a, copy_or_null(H->json_get(op, "data")));
}

/* 0, a negative sophia_errno, or 1..3 for a verdict other than OK. */
static int run_op(sophia_ctx *ctx, const sophia_json *op)
{
    const char *name = str(op, "op");
    if (!name)
        return SOPHIA_EINVAL;
    if (!strcmp(name, "put"))
        return put(ctx, op);
    if (!strcmp(name, "incr"))
        return incr(ctx, op);
    if (!strcmp(name, "del"))
        return H->cache_invalidate(ctx, str(op, "key"));
    if (!strcmp(name, "deltag"))
        return H->cache_invalidate_tag(ctx, str(op, "tag"));
    if (!strcmp(name, "publish"))
        return publish(ctx, op);
    if (!strcmp(name, "remember"))
        return remember(ctx, op);
    if (!strcmp(name, "get") || !strcmp(name, "get_ex"))
        return get(ctx, op, !strcmp(name, "get_ex"));
    if (!strcmp(name, "alert_ex"))
        return alert_ex(ctx, op);
    if (!strcmp(name, "alert"))
        return H->alert(ctx, str(op, "alert_type"), str(op, "severity"),
                        str(op, "message"),
                        copy_or_null(H->json_get(op, "data")));
    int verdict = !strcmp(name, "drop")    ? SOPHIA_PROCESS_DROP
                  : !strcmp(name, "retry") ? SOPHIA_PROCESS_RETRY
                  : !strcmp(name, "fail")  ? SOPHIA_PROCESS_ERROR
                                           : SOPHIA_EINVAL;
    if (verdict > 0)
        H->publish(ctx, SOPHIA_UPDATE_DATA, "discarded", NULL, NULL);
    return verdict;
}

static sophia_verdict actions_process(void *state, const sophia_event *ev,
                                      sophia_ctx *ctx)
{
    (void)state;
    const sophia_json *ops = H->json_get(ev->body, "ops");
    size_t n = ops ? H->json_size(ops) : 1;
    for (size_t i = 0; i < n; i++) {
        int rc = run_op(ctx, ops ? H->json_at(ops, i) : ev->body);
        if (rc > 0)
            return (sophia_verdict)rc;
        if (rc < 0)
            return SOPHIA_PROCESS_ERROR;
    }
    return SOPHIA_PROCESS_OK;
}

static int actions_init(const sophia_host *host, sophia_self *self,
                        const sophia_opts *opts, void **state)
{
    (void)opts;
    H = host;
    SELF = self;
    *state = NULL;
    return SOPHIA_OK;
}

static const sophia_processor_ops actions_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = actions_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "actions",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "queues the host actions its events ask for",
    .init = actions_init,
    .processor = &actions_ops,
};
