/*
 * api_memory - HTTP in front of the memory store (core/memory/memory.h).
 *
 * Input is validated here, completely, before anything is queued: every
 * bad request gets a 400 with a message naming the field, and the store
 * only ever sees well-formed memories. Answers come later, from the store's
 * callbacks on the loop; the request object outlives its connection, so a
 * client that went away costs nothing.
 */
#include "http/api_memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "http/api.h"
#include "memory/memory.h"
#include "ws/ws.h"

#define MAX_QUERY 4096

static int status_of(int err)
{
    return err == SOPHIA_EINVAL ? 400 : err == SOPHIA_ENOMEM ? 500 : 503;
}

static sophia_memory *store_or_503(const sophia_api *api, sophia_http_req *r)
{
    if (api->memory)
        return api->memory;
    sophia_http_reply_error(r, 503, "memory_disabled",
                            "the memory store needs PostgreSQL (postgres.url / SOPHIA_PG_URL)");
    return NULL;
}

/* -------------------------------------------------------- POST /api/memory */

static void on_stored(void *arg, int64_t id, int err, const char *msg)
{
    sophia_http_req *r = arg;
    if (err)
        sophia_http_reply_error(r, status_of(err), "memory_unavailable",
                                "memory not stored: %s", msg ? msg : "unavailable");
    else
        sophia_http_reply_json(r, 201, json_pack("{s:I}", "id", (json_int_t)id));
}

static void post_memory(sophia_http_req *r, sophia_memory *m)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    json_error_t e;
    json_t *o = json_loadb(body ? body : "", len, 0, &e);
    if (!json_is_object(o)) {
        sophia_http_reply_error(r, 400, "bad_json", o ? "the body must be a JSON object"
                                                     : "invalid JSON at line %d column %d: %s",
                                e.line, e.column, e.text);
        json_decref(o);
        return;
    }
    json_t *content = json_object_get(o, "content"),
           *type = json_object_get(o, "memory_type"),
           *ctx = json_object_get(o, "context"),
           *imp = json_object_get(o, "importance");
    char why[160];
    const char *bad = sophia_memory_check(m, content, type, ctx, imp, why,
                                          sizeof(why));
    if (bad) {
        sophia_http_reply_error(r, 400, "bad_memory", "%s", bad);
        json_decref(o);
        return;
    }
    int rc = sophia_memory_store(m, json_string_value(content),
                                 json_string_value(type),
                                 json_is_object(ctx) ? ctx : NULL,
                                 json_is_number(imp) ? json_number_value(imp) : -1,
                                 on_stored, r);
    json_decref(o);
    if (rc)
        sophia_http_reply_error(r, status_of(rc), "memory_unavailable",
                                "the memory store is not available (loading or overloaded)");
}

/* --------------------------------------------------- GET /api/memory/search */

static void on_results(void *arg, const json_t *results, int err, const char *msg)
{
    sophia_http_req *r = arg;
    if (err)
        sophia_http_reply_error(r, status_of(err), "memory_unavailable",
                                "search failed: %s", msg ? msg : "unavailable");
    else
        sophia_http_reply_json(r, 200, json_pack("{s:O}", "results", results));
}

static int parse_k(const char *s, size_t *k)
{
    if (!s) {
        *k = 10;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < 1 || v > SOPHIA_MEM_MAX_K)
        return -1;
    *k = (size_t)v;
    return 0;
}

/* context.KEY=VALUE arguments -> {"KEY":"VALUE"}; NULL + message on error. */
static json_t *parse_filter(sophia_http_req *r, const char **bad)
{
    json_t *f = json_object();
    const char *a;
    for (int i = 0; (a = sophia_http_req_arg_at(r, i)); i++) {
        if (strncmp(a, "context.", 8) != 0)
            continue;
        const char *eq = strchr(a, '=');
        size_t klen = eq ? (size_t)(eq - a - 8) : 0;
        if (!eq || klen == 0 || klen > 128) {
            *bad = "context filters are context.KEY=VALUE with a 1..128 character KEY";
            json_decref(f);
            return NULL;
        }
        char key[129];
        memcpy(key, a + 8, klen);
        key[klen] = '\0';
        json_object_set_new(f, key, json_string(eq + 1));
    }
    return f;
}

static void get_search(sophia_http_req *r, sophia_memory *m)
{
    const char *q = sophia_http_req_arg(r, "q");
    size_t k;
    if (!q || !*q || strspn(q, " \t") == strlen(q)) {
        sophia_http_reply_error(r, 400, "bad_query", "q (the search text) is required");
        return;
    }
    if (strlen(q) > MAX_QUERY) {
        sophia_http_reply_error(r, 400, "bad_query", "q is longer than %d bytes", MAX_QUERY);
        return;
    }
    if (parse_k(sophia_http_req_arg(r, "k"), &k) < 0) {
        sophia_http_reply_error(r, 400, "bad_k", "k must be an integer from 1 to %d",
                                SOPHIA_MEM_MAX_K);
        return;
    }
    /* legs=vector|text: that list alone, not fused (tests/bench/memory_eval) */
    const char *ls = sophia_http_req_arg(r, "legs");
    int legs = !ls || !strcmp(ls, "all") ? SOPHIA_MEM_LEGS_ALL
               : !strcmp(ls, "vector")   ? SOPHIA_MEM_LEG_VECTOR
               : !strcmp(ls, "text")     ? SOPHIA_MEM_LEG_TEXT
                                         : 0;
    if (!legs) {
        sophia_http_reply_error(r, 400, "bad_legs", "legs must be all, vector or text");
        return;
    }
    const char *bad = NULL;
    json_t *filter = parse_filter(r, &bad);
    if (!filter) {
        sophia_http_reply_error(r, 400, "bad_filter", "%s", bad);
        return;
    }
    int rc = json_is_object(filter)
                 ? sophia_memory_search_legs(m, q, k, filter, legs, on_results, r)
                 : SOPHIA_ENOMEM;
    json_decref(filter);
    if (rc)
        sophia_http_reply_error(r, status_of(rc), "memory_unavailable",
                                "the memory store is not available (loading or overloaded)");
}

/* --------------------------------------- POST /api/memory/{id}/feedback */

static void on_feedback(void *arg, int found, double importance, int err,
                        const char *msg)
{
    sophia_http_req *r = arg;
    if (err)
        sophia_http_reply_error(r, status_of(err), "memory_unavailable",
                                "feedback not recorded: %s", msg ? msg : "unavailable");
    else if (!found)
        sophia_http_reply_error(r, 404, "not_found", "no live memory with that id");
    else
        sophia_http_reply_json(r, 200, json_pack("{s:f}", "importance", importance));
}

static void post_feedback(sophia_http_req *r, sophia_memory *m, int64_t id)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    json_t *o = json_loadb(body ? body : "", len, 0, NULL);
    json_t *useful = json_object_get(o, "useful");
    if (!json_is_boolean(useful)) {
        sophia_http_reply_error(r, 400, "bad_feedback",
                                "the body must be {\"useful\": true|false}");
        json_decref(o);
        return;
    }
    int rc = sophia_memory_feedback(m, id, json_is_true(useful), on_feedback, r);
    json_decref(o);
    if (rc)
        sophia_http_reply_error(r, status_of(rc), "memory_unavailable",
                                "the memory store is not available");
}

/* "/api/memory/123/feedback" -> 123; 0 when the path is not that. */
static int64_t feedback_id(const char *path)
{
    const char *p = path + strlen("/api/memory/");
    char *end;
    errno = 0;
    long long id = strtoll(p, &end, 10);
    if (end == p || errno || id <= 0 || strcmp(end, "/feedback") != 0)
        return 0;
    return id;
}

static void route_memory(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    const char *path = sophia_http_req_path(r);
    sophia_http_method meth = sophia_http_req_method(r);
    int is_search = strcmp(path, "/api/memory/search") == 0;
    int is_root = strcmp(path, "/api/memory") == 0;
    int64_t fid = is_search || is_root ? 0 : feedback_id(path);
    if (!is_search && !is_root && !fid) {
        sophia_http_reply_error(r, 404, "not_found", "no endpoint %s", path);
        return;
    }
    if ((is_search && meth != SOPHIA_HTTP_GET) || (!is_search && meth != SOPHIA_HTTP_POST)) {
        sophia_http_reply_error(r, 405, "method_not_allowed", "use %s",
                                is_search ? "GET" : "POST");
        return;
    }
    sophia_memory *m = store_or_503(api, r);
    if (!m)
        return;
    if (is_root)
        post_memory(r, m);
    else if (is_search)
        get_search(r, m);
    else
        post_feedback(r, m, fid);
}

int sophia_api_memory_routes(sophia_http_router *rt, sophia_api *api)
{
    sophia_http_route root = {SOPHIA_HTTP_ANY, "/api/memory", 0, route_memory,
                              sophia_api_admit, api};
    sophia_http_route rest = {SOPHIA_HTTP_ANY, "/api/memory/",
                              SOPHIA_ROUTE_PREFIX, route_memory,
                              sophia_api_admit, api};
    return sophia_http_route_add(rt, &root) < 0 ||
                   sophia_http_route_add(rt, &rest) < 0
               ? -1
               : 0;
}

/* ------------------------------------------- WebSocket memory.search */

typedef struct ws_call {
    sophia_ws_router *ws;
    uint64_t client;
    char *req_id;
} ws_call;

static void ws_results(void *arg, const json_t *results, int err, const char *msg)
{
    ws_call *c = arg;
    if (err)
        sophia_ws_respond_error(c->ws, c->client, c->req_id, "unavailable",
                                msg ? msg : "memory search failed");
    else
        sophia_ws_respond(c->ws, c->client, c->req_id, json_pack("{s:O}", "results", results));
    free(c->req_id);
    free(c);
}

/* params {"q": text, "k"?: 1..100, "context"?: {KEY: scalar}} - the same
 * search as GET /api/memory/search. */
static const char *ws_filter(const json_t *ctx, json_t *f)
{
    const char *key;
    json_t *v;
    if (ctx && !json_is_object(ctx))
        return "params.context must be an object of KEY: value";
    json_object_foreach((json_t *)ctx, key, v) {
        if (json_is_string(v))
            json_object_set(f, key, v);
        else if (json_is_integer(v))
            json_object_set_new(f, key, json_sprintf("%" JSON_INTEGER_FORMAT,
                                                     json_integer_value(v)));
        else if (json_is_boolean(v))
            json_object_set_new(f, key, json_string(json_is_true(v) ? "true" : "false"));
        else
            return "params.context values must be strings, integers or booleans";
    }
    return NULL;
}

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
    json_t *f = json_object();
    const char *bad = ws_filter(json_object_get(params, "context"), f);
    ws_call *c = bad ? NULL : calloc(1, sizeof(*c));
    int rc = SOPHIA_ENOMEM;
    if (c) {
        c->ws = ws;
        c->client = client;
        c->req_id = req_id ? strdup(req_id) : NULL;
        rc = sophia_memory_search(api->memory, q, (size_t)k, f, ws_results, c);
        if (rc) {
            free(c->req_id);
            free(c);
        }
    }
    json_decref(f);
    if (bad)
        sophia_ws_respond_error(ws, client, req_id, "bad_request", bad);
    else if (rc)
        sophia_ws_respond_error(ws, client, req_id, "unavailable",
                                "the memory store is not available");
}

void sophia_api_memory_ws(sophia_api *api, int on)
{
    if (on)
        sophia_ws_register_method(api->ws, "memory.search", ws_search, api);
    else
        sophia_ws_unregister_method(api->ws, "memory.search");
}
