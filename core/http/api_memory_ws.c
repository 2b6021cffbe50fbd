/*
 * api_memory_ws - the memory API as WebSocket request methods: memory.search,
 * memory.list, memory.store, memory.get, memory.history, memory.update,
 * memory.delete and memory.forget (README "Memory API").
 *
 * Token scopes. The WebSocket layer runs every memory.* method with
 * params.context narrowed to the token's `memory` scope, its keys filled
 * in (core/ws/ws_protocol.c). Here that context is the whole authority:
 * its user_id / agent_id / session_id become the scope columns' filter
 * and its other keys a context filter, so a list or a search never leaves
 * the scope; a store takes its scope from it (top-level scope fields are
 * refused: they could name another user); a method on one id first reads
 * the memory and acts only when it fits (else `not_found`, the same as a
 * missing id, so ids outside the scope say nothing); an update's new
 * context keeps the scope's keys; and forget takes only scope columns,
 * so a token scope on any other key cannot forget more than it sees.
 * Without auth the same rules apply to whatever context the client sends.
 */
#include "http/api_memory.h"

#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "memory/memory.h"
#include "ws/ws.h"

#define MAX_QUERY 4096
#define LIST_DEFAULT 50

static const char *const scope_keys[3] = {"user_id", "agent_id", "session_id"};

typedef enum ws_op { OP_GET, OP_HISTORY, OP_UPDATE, OP_DELETE } ws_op;

typedef struct ws_call {
    sophia_ws_router *ws;
    uint64_t client;
    char *req_id;
    sophia_memory *m;
    ws_op op;
    int64_t id;
    json_t *ctx; /* the narrowed params.context (by-id methods) */
    json_t *set; /* memory.update's changes */
} ws_call;

static ws_call *call_new(sophia_ws_router *ws, uint64_t client, const char *req_id,
                         sophia_memory *m)
{
    ws_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    *c = (ws_call){ws, client, req_id ? strdup(req_id) : NULL, m, 0, 0, NULL, NULL};
    return c;
}

static void call_free(ws_call *c)
{
    free(c->req_id);
    json_decref(c->ctx);
    json_decref(c->set);
    free(c);
}

static void call_error(ws_call *c, const char *code, const char *msg)
{
    sophia_ws_respond_error(c->ws, c->client, c->req_id, code, msg);
    call_free(c);
}

static void call_reply(ws_call *c, json_t *data)
{
    sophia_ws_respond(c->ws, c->client, c->req_id, data);
    call_free(c);
}

static void call_failed(ws_call *c, int err, const char *msg)
{
    call_error(c, err == SOPHIA_EINVAL ? "bad_request" : "unavailable",
               msg ? msg : "the memory store is not available");
}

/* A context value as the text a filter compares. */
static json_t *as_text(const json_t *v)
{
    if (json_is_string(v))
        return json_incref((json_t *)v);
    if (json_is_integer(v))
        return json_sprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_boolean(v))
        return json_string(json_is_true(v) ? "true" : "false");
    return NULL;
}

/* params.context -> scope (string user_id/agent_id/session_id, borrowed
 * from ctx) + a context filter of the other keys (new reference); NULL
 * with *bad when a value is not a scalar. */
static json_t *split_context(const json_t *ctx, sophia_memory_scope *sc, const char **bad)
{
    const char *k;
    json_t *v, *f = json_object();
    const char **field[3] = {&sc->user_id, &sc->agent_id, &sc->session_id};
    *sc = (sophia_memory_scope){NULL, NULL, NULL};
    if (ctx && !json_is_object(ctx)) {
        *bad = "params.context must be an object of KEY: value";
        json_decref(f);
        return NULL;
    }
    json_object_foreach((json_t *)ctx, k, v) {
        int s = -1;
        for (int i = 0; i < 3; i++)
            if (!strcmp(k, scope_keys[i]) && json_is_string(v))
                s = i;
        json_t *t = s < 0 ? as_text(v) : NULL;
        if (s >= 0) {
            *field[s] = json_string_value(v);
        } else if (!t) {
            *bad = "params.context values must be strings, integers or booleans";
            json_decref(f);
            return NULL;
        } else {
            json_object_set_new(f, k, t);
        }
    }
    return f;
}

/* Does a memory (as the store returns it) fit the narrowed context? */
static int fits(const json_t *mem, const json_t *ctx)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)ctx, k, v) {
        int col = 0;
        for (int i = 0; i < 3; i++)
            col |= !strcmp(k, scope_keys[i]) && json_is_string(v);
        json_t *have = col ? json_object_get(mem, k)
                           : json_object_get(json_object_get(mem, "context"), k);
        json_t *a = as_text(have), *b = as_text(v);
        int same = a && b && json_equal(a, b);
        json_decref(a);
        json_decref(b);
        if (!same)
            return 0;
    }
    return 1;
}

/* ------------------------------------------------ memory.search, .list */

static void on_results(void *arg, const json_t *results, int err, const char *msg)
{
    ws_call *c = arg;
    if (err)
        call_failed(c, err, msg);
    else
        call_reply(c, json_pack("{s:O}", "results", results));
}

/* params {"q", "k"?: 1..100, "context"?} - the same search as GET
 * /api/memory/search, the context's scope keys as the scope columns. */
static void ws_search(sophia_ws_router *ws, uint64_t client, const char *req_id,
                      json_t *params, void *arg)
{
    const sophia_api *api = arg;
    const char *q = json_string_value(json_object_get(params, "q"));
    json_t *kv = json_object_get(params, "k");
    json_int_t k = kv ? (json_is_integer(kv) ? json_integer_value(kv) : 0) : 10;
    if (!q || !*q || strlen(q) > MAX_QUERY || k < 1 || k > SOPHIA_MEM_MAX_K) {
        sophia_ws_respond_error(ws, client, req_id, "bad_request",
                                "params: q (1..4096 bytes) and k (1..100) are required");
        return;
    }
    if (!api->memory) {
        sophia_ws_respond_error(ws, client, req_id, "unavailable", "memory store disabled");
        return;
    }
    sophia_memory_scope sc;
    const char *bad = NULL;
    json_t *f = split_context(json_object_get(params, "context"), &sc, &bad);
    if (!f) {
        sophia_ws_respond_error(ws, client, req_id, "bad_request", bad);
        return;
    }
    ws_call *c = call_new(ws, client, req_id, api->memory);
    int rc = c ? sophia_memory_search_scoped(api->memory, q, (size_t)k, f, &sc,
                                             SOPHIA_MEM_LEGS_ALL, on_results, c)
               : SOPHIA_ENOMEM;
    json_decref(f);
    if (rc && c)
        call_failed(c, rc, NULL);
    else if (rc)
        sophia_ws_respond_error(ws, client, req_id, "unavailable", "out of memory");
}

static void on_list(void *arg, const json_t *memories, int64_t next, int err,
                    const char *msg)
{
    ws_call *c = arg;
    if (err) {
        call_failed(c, err, msg);
        return;
    }
    json_t *o = json_pack("{s:O}", "memories", memories);
    json_object_set_new(o, "next_cursor", next ? json_sprintf("m1.%lld", (long long)next)
                                                : json_null());
    call_reply(c, o);
}

/* params {"context"?, "memory_type"?, "limit"?: 1..1000, "cursor"?} */
static void ws_list(sophia_ws_router *ws, uint64_t client, const char *req_id,
                    json_t *params, void *arg)
{
    const sophia_api *api = arg;
    sophia_memory_list_q q = {0};
    json_t *lim = json_object_get(params, "limit"), *cur = json_object_get(params, "cursor");
    const char *cs = json_string_value(cur), *bad = NULL;
    q.limit = lim ? (json_is_integer(lim) ? (size_t)json_integer_value(lim) : 0) : LIST_DEFAULT;
    q.memory_type = json_string_value(json_object_get(params, "memory_type"));
    if (cur && (!cs || strncmp(cs, "m1.", 3) || (q.before = atoll(cs + 3)) <= 0))
        bad = "params.cursor must be a next_cursor from a previous page";
    else if (q.limit < 1 || q.limit > SOPHIA_MEM_MAX_LIST)
        bad = "params.limit must be an integer from 1 to 1000";
    if (bad || !api->memory) {
        sophia_ws_respond_error(ws, client, req_id, bad ? "bad_request" : "unavailable",
                                bad ? bad : "memory store disabled");
        return;
    }
    json_t *f = split_context(json_object_get(params, "context"), &q.scope, &bad);
    if (!f) {
        sophia_ws_respond_error(ws, client, req_id, "bad_request", bad);
        return;
    }
    q.filter = f;
    ws_call *c = call_new(ws, client, req_id, api->memory);
    int rc = c ? sophia_memory_list(api->memory, &q, on_list, c) : SOPHIA_ENOMEM;
    json_decref(f);
    if (rc && c)
        call_failed(c, rc, "bad params (memory_type 1..64 bytes) or store unavailable");
    else if (rc)
        sophia_ws_respond_error(ws, client, req_id, "unavailable", "out of memory");
}

/* ------------------------------------------------------- memory.store */

static void on_stored(void *arg, int64_t id, int err, const char *msg)
{
    ws_call *c = arg;
    if (err)
        call_failed(c, err, msg);
    else
        call_reply(c, json_pack("{s:I}", "id", (json_int_t)id));
}

/* params {"content", "memory_type"?, "context"?, "importance"?}: the scope
 * comes from the context (the token's keys are in it). */
static void ws_store(sophia_ws_router *ws, uint64_t client, const char *req_id,
                     json_t *params, void *arg)
{
    const sophia_api *api = arg;
    sophia_memory *m = api->memory;
    if (!m) {
        sophia_ws_respond_error(ws, client, req_id, "unavailable", "memory store disabled");
        return;
    }
    json_t *content = json_object_get(params, "content"),
           *type = json_object_get(params, "memory_type"),
           *ctx = json_object_get(params, "context"),
           *imp = json_object_get(params, "importance");
    char why[160];
    const char *bad = sophia_memory_check(m, content, type, ctx, imp, why, sizeof(why));
    for (int i = 0; !bad && i < 3; i++)
        if (json_object_get(params, scope_keys[i]))
            bad = "over /ws, user_id, agent_id and session_id go in params.context";
    if (!bad)
        bad = sophia_memory_check_scope(json_object_get(ctx, "user_id"),
                                        json_object_get(ctx, "agent_id"),
                                        json_object_get(ctx, "session_id"));
    if (bad) {
        sophia_ws_respond_error(ws, client, req_id, "bad_request", bad);
        return;
    }
    ws_call *c = call_new(ws, client, req_id, m);
    int rc = c ? sophia_memory_store(m, json_string_value(content), json_string_value(type),
                                     json_is_object(ctx) ? ctx : NULL,
                                     json_is_number(imp) ? json_number_value(imp) : -1,
                                     on_stored, c)
               : SOPHIA_ENOMEM;
    if (rc && c)
        call_free(c); /* store_finish does not call back on a refused start */
    if (rc)
        sophia_ws_respond_error(ws, client, req_id, "unavailable",
                                "the memory store is not available (loading or overloaded)");
}

/* ------------------------- memory.get, .history, .update, .delete (by id) */

static void on_done_one(void *arg, const json_t *memory, int err, const char *msg)
{
    ws_call *c = arg;
    if (err)
        call_failed(c, err, msg);
    else if (!memory)
        call_error(c, "not_found", "no live memory with that id in your scope");
    else
        call_reply(c, c->op == OP_HISTORY ? json_pack("{s:I,s:O}", "id", (json_int_t)c->id,
                                                      "history", memory)
                                          : json_deep_copy(memory));
}

static void on_deleted(void *arg, size_t deleted, int err, const char *msg)
{
    ws_call *c = arg;
    if (err)
        call_failed(c, err, msg);
    else
        call_reply(c, json_pack("{s:I}", "deleted", (json_int_t)deleted));
}

/* The new context keeps the scope: every key of the narrowed context is
 * set to its value (an update cannot move a memory out of the scope). */
static const char *update_change(ws_call *c, sophia_memory_change *ch)
{
    json_t *content = json_object_get(c->set, "content"),
           *type = json_object_get(c->set, "memory_type"),
           *ctx = json_object_get(c->set, "context"),
           *imp = json_object_get(c->set, "importance");
    static const char *const ok[] = {"content", "memory_type", "context", "importance"};
    const char *k;
    json_t *v;
    json_object_foreach(c->set, k, v) {
        int known = 0;
        for (int i = 0; i < 4; i++)
            known |= !strcmp(k, ok[i]);
        if (!known)
            return "params.set takes content, memory_type, context and importance";
    }
    if (!json_object_size(c->set))
        return "params.set is empty: nothing to change";
    if (ctx)
        json_object_update(ctx, c->ctx);
    json_t *probe = content ? NULL : json_string("x");
    char why[160];
    const char *bad = sophia_memory_check(c->m, content ? content : probe, type, ctx, imp,
                                          why, sizeof(why));
    json_decref(probe);
    if (bad)
        return bad == why ? "content is longer than memory.max_content" : bad;
    if ((type && json_is_null(type)) || (ctx && json_is_null(ctx)) || (imp && json_is_null(imp)))
        return "memory_type, context and importance cannot be null";
    *ch = (sophia_memory_change){json_string_value(content), json_string_value(type), ctx,
                                 imp ? json_number_value(imp) : -1};
    return NULL;
}

/* Step 2: the memory was read; act only when it fits the scope. */
static void on_checked(void *arg, const json_t *memory, int err, const char *msg)
{
    ws_call *c = arg;
    if (err || !memory || !fits(memory, c->ctx)) {
        on_done_one(c, NULL, err, msg);
        return;
    }
    int rc = 0;
    const char *bad = NULL;
    sophia_memory_change ch;
    if (c->op == OP_GET)
        call_reply(c, json_deep_copy(memory));
    else if (c->op == OP_HISTORY)
        rc = sophia_memory_history(c->m, c->id, on_done_one, c);
    else if (c->op == OP_DELETE)
        rc = sophia_memory_delete(c->m, c->id, on_deleted, c);
    else if ((bad = update_change(c, &ch)))
        call_error(c, "bad_request", bad);
    else
        rc = sophia_memory_patch(c->m, c->id, &ch, on_done_one, c);
    if (rc)
        call_failed(c, rc, NULL);
}

static void by_id(sophia_ws_router *ws, uint64_t client, const char *req_id,
                  json_t *params, const sophia_api *api, ws_op op)
{
    json_t *idv = json_object_get(params, "id"), *ctx = json_object_get(params, "context");
    json_t *set = json_object_get(params, "set");
    const char *bad = !json_is_integer(idv) || json_integer_value(idv) <= 0
                          ? "params.id (a memory id) is required"
                      : ctx && !json_is_object(ctx) ? "params.context must be an object"
                      : op == OP_UPDATE && !json_is_object(set)
                          ? "params.set {content?, memory_type?, context?, importance?} is required"
                          : NULL;
    if (bad || !api->memory) {
        sophia_ws_respond_error(ws, client, req_id, bad ? "bad_request" : "unavailable",
                                bad ? bad : "memory store disabled");
        return;
    }
    ws_call *c = call_new(ws, client, req_id, api->memory);
    if (!c) {
        sophia_ws_respond_error(ws, client, req_id, "unavailable", "out of memory");
        return;
    }
    c->op = op;
    c->id = json_integer_value(idv);
    c->ctx = ctx ? json_deep_copy(ctx) : json_object();
    c->set = set ? json_deep_copy(set) : NULL;
    int rc = sophia_memory_get(c->m, c->id, on_checked, c);
    if (rc)
        call_failed(c, rc, NULL);
}

static void ws_get(sophia_ws_router *ws, uint64_t client, const char *req_id,
                   json_t *params, void *arg)
{
    by_id(ws, client, req_id, params, arg, OP_GET);
}

static void ws_history(sophia_ws_router *ws, uint64_t client, const char *req_id,
                       json_t *params, void *arg)
{
    by_id(ws, client, req_id, params, arg, OP_HISTORY);
}

static void ws_update(sophia_ws_router *ws, uint64_t client, const char *req_id,
                      json_t *params, void *arg)
{
    by_id(ws, client, req_id, params, arg, OP_UPDATE);
}

static void ws_delete(sophia_ws_router *ws, uint64_t client, const char *req_id,
                      json_t *params, void *arg)
{
    by_id(ws, client, req_id, params, arg, OP_DELETE);
}

/* ------------------------------------------------------ memory.forget */

/* params {"context": {user_id?, agent_id?, session_id?}}: only scope
 * columns, at least one. */
static void ws_forget(sophia_ws_router *ws, uint64_t client, const char *req_id,
                      json_t *params, void *arg)
{
    const sophia_api *api = arg;
    sophia_memory_scope sc;
    const char *bad = NULL;
    json_t *f = split_context(json_object_get(params, "context"), &sc, &bad);
    if (f && json_object_size(f))
        bad = "memory.forget takes only user_id, agent_id and session_id (as strings) "
              "in params.context";
    else if (f && !sc.user_id && !sc.agent_id && !sc.session_id)
        bad = "memory.forget needs at least one of user_id, agent_id, session_id in "
              "params.context";
    json_decref(f);
    if (bad || !api->memory) {
        sophia_ws_respond_error(ws, client, req_id, bad ? "bad_request" : "unavailable",
                                bad ? bad : "memory store disabled");
        return;
    }
    ws_call *c = call_new(ws, client, req_id, api->memory);
    int rc = c ? sophia_memory_forget(api->memory, &sc, on_deleted, c) : SOPHIA_ENOMEM;
    if (rc && c)
        call_failed(c, rc, NULL);
    else if (rc)
        sophia_ws_respond_error(ws, client, req_id, "unavailable", "out of memory");
}

/* ------------------------------------------------------- registration */

static const struct {
    const char *name;
    sophia_ws_method_fn fn;
} methods[] = {
    {"memory.search", ws_search}, {"memory.list", ws_list},
    {"memory.store", ws_store},   {"memory.get", ws_get},
    {"memory.history", ws_history}, {"memory.update", ws_update},
    {"memory.delete", ws_delete}, {"memory.forget", ws_forget},
};

void sophia_api_memory_ws(sophia_api *api, int on)
{
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (on)
            sophia_ws_register_method(api->ws, methods[i].name, methods[i].fn, api);
        else
            sophia_ws_unregister_method(api->ws, methods[i].name);
    }
}
