/*
 * api_memory - HTTP in front of the memory store (core/memory/memory.h).
 *
 * Input is validated here, completely, before anything is queued: every
 * bad request gets a 400 with a message naming the field, and the store
 * only ever sees well-formed memories. Answers come later, from the store's
 * callbacks on the loop; the request object outlives its connection, so a
 * client that went away costs nothing.
 *
 * Routes: /api/memory (POST store, GET list, DELETE forget a scope),
 * /api/memory/search, /api/memory/{id} (GET, PATCH, DELETE) and
 * /api/memory/{id}/feedback. A list's cursor is opaque to clients
 * ("m1.<id>": the page goes on below that id); only this file reads it.
 */
#include "http/api_memory.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "http/api.h"
#include "memory/memory.h"

#define MAX_QUERY 4096
#define LIST_DEFAULT 50
#define CURSOR_PREFIX "m1."

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
           *imp = json_object_get(o, "importance"),
           *uid = json_object_get(o, "user_id"),
           *aid = json_object_get(o, "agent_id"),
           *sid = json_object_get(o, "session_id");
    char why[160];
    const char *bad = sophia_memory_check(m, content, type, ctx, imp, why,
                                          sizeof(why));
    if (!bad)
        bad = sophia_memory_check_scope(uid, aid, sid);
    if (bad) {
        sophia_http_reply_error(r, 400, "bad_memory", "%s", bad);
        json_decref(o);
        return;
    }
    sophia_memory_scope sc = {json_string_value(uid), json_string_value(aid),
                              json_string_value(sid)};
    int rc = sophia_memory_store_scoped(m, json_string_value(content),
                                        json_string_value(type),
                                        json_is_object(ctx) ? ctx : NULL,
                                        json_is_number(imp) ? json_number_value(imp) : -1,
                                        &sc, on_stored, r);
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

/* A range bound as the store takes it: a number, else the text itself
 * (sophia_memory_check_filter then wants an ISO 8601 date). */
static json_t *bound_value(const char *v)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (*v && !*end && !errno && isfinite(d))
        return json_real(d);
    return json_string(v);
}

/* "a,b,c" -> ["a","b","c"] (empty items kept: a value may be ""). */
static json_t *split_in(const char *v)
{
    json_t *a = json_array();
    for (const char *p = v;;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        json_array_append_new(a, json_stringn(p, len));
        if (!c)
            return a;
        p = c + 1;
    }
}

/* One context.KEY[op]=V argument into f; -1 with the message in bad. */
static int add_filter_arg(json_t *f, const char *a, char *bad, size_t n)
{
    const char *eq = strchr(a, '=');
    const char *name = a + 8, *op = NULL;
    size_t klen = eq ? (size_t)(eq - name) : 0, olen = 0;
    if (klen > 2 && name[klen - 1] == ']') {
        const char *br = memchr(name, '[', klen);
        if (br) {
            op = br + 1;
            olen = (size_t)(name + klen - 1 - op);
            klen = (size_t)(br - name);
        }
    }
    if (!eq || klen == 0 || klen > 128) {
        snprintf(bad, n, "context filters are context.KEY=VALUE or "
                 "context.KEY[in|gt|gte|lt|lte]=VALUE with a 1..128 character KEY");
        return -1;
    }
    char key[129], opn[8] = "";
    memcpy(key, name, klen);
    key[klen] = '\0';
    if (op && (olen == 0 || olen >= sizeof(opn))) {
        snprintf(bad, n, "context.%s: unknown operator (in, gt, gte, lt, lte)", key);
        return -1;
    }
    if (op)
        memcpy(opn, op, olen), opn[olen] = '\0';
    json_t *cur = json_object_get(f, key);
    if (cur && (!op || !json_is_object(cur))) {
        snprintf(bad, n, "context.%s: give either one value or operators, once each", key);
        return -1;
    }
    if (!op)
        return json_object_set_new(f, key, json_string(eq + 1));
    if (!cur)
        json_object_set_new(f, key, cur = json_object());
    return json_object_set_new(cur, opn, !strcmp(opn, "in") ? split_in(eq + 1)
                                                             : bound_value(eq + 1));
}

/* context.KEY=VALUE and context.KEY[op]=VALUE arguments -> a context
 * filter (memory.h); NULL with the message in bad. */
static json_t *parse_filter(sophia_http_req *r, char *bad, size_t n)
{
    json_t *f = json_object();
    const char *a;
    for (int i = 0; f && (a = sophia_http_req_arg_at(r, i)); i++) {
        if (strncmp(a, "context.", 8) != 0)
            continue;
        if (add_filter_arg(f, a, bad, n) < 0) {
            json_decref(f);
            return NULL;
        }
    }
    const char *e = f ? sophia_memory_check_filter(f, bad, n) : "out of memory";
    if (e) {
        if (e != bad)
            snprintf(bad, n, "%s", e);
        json_decref(f);
        return NULL;
    }
    return f;
}

/* ?user_id=&agent_id=&session_id= -> scope (borrowed from r); -1 and a
 * 400 sent when one is empty or too long. */
static int parse_scope(sophia_http_req *r, sophia_memory_scope *sc)
{
    static const char *const names[3] = {"user_id", "agent_id", "session_id"};
    const char *v[3];
    for (int i = 0; i < 3; i++) {
        v[i] = sophia_http_req_arg(r, names[i]);
        if (v[i] && (!*v[i] || strlen(v[i]) > SOPHIA_MEM_MAX_SCOPE)) {
            sophia_http_reply_error(r, 400, "bad_filter",
                                    "%s must be 1..%d bytes (query argument %s)",
                                    names[i], SOPHIA_MEM_MAX_SCOPE, names[i]);
            return -1;
        }
    }
    *sc = (sophia_memory_scope){v[0], v[1], v[2]};
    return 0;
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
    sophia_memory_scope sc;
    if (parse_scope(r, &sc) < 0)
        return;
    char bad[256];
    json_t *filter = parse_filter(r, bad, sizeof(bad));
    if (!filter) {
        sophia_http_reply_error(r, 400, "bad_filter", "%s", bad);
        return;
    }
    int rc = json_is_object(filter)
                 ? sophia_memory_search_scoped(m, q, k, filter, &sc, legs, on_results, r)
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

/* ------------------------------------------ /api/memory/{id}: one memory */

static void reply_unavailable(sophia_http_req *r, int rc)
{
    sophia_http_reply_error(r, status_of(rc), "memory_unavailable",
                            "the memory store is not available (loading or overloaded)");
}

static void on_one(void *arg, const json_t *memory, int err, const char *msg)
{
    sophia_http_req *r = arg;
    if (err)
        sophia_http_reply_error(r, status_of(err), "memory_unavailable",
                                "memory not read: %s", msg ? msg : "unavailable");
    else if (!memory)
        sophia_http_reply_error(r, 404, "not_found", "no live memory with that id");
    else
        sophia_http_reply_json(r, 200, json_deep_copy(memory));
}

static void on_deleted(void *arg, size_t deleted, int err, const char *msg)
{
    sophia_http_req *r = arg;
    if (err)
        sophia_http_reply_error(r, status_of(err), "memory_unavailable",
                                "not deleted: %s", msg ? msg : "unavailable");
    else
        sophia_http_reply_json(r, 200, json_pack("{s:I}", "deleted", (json_int_t)deleted));
}

static void on_deleted_one(void *arg, size_t deleted, int err, const char *msg)
{
    if (!err && !deleted)
        sophia_http_reply_error(arg, 404, "not_found", "no memory with that id");
    else
        on_deleted(arg, deleted, err, msg);
}

/* PATCH {content?, memory_type?, context?, importance?}: at least one, each
 * checked as a store checks it; anything else is named in a 400. */
static void patch_memory(sophia_http_req *r, sophia_memory *m, int64_t id)
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
    const char *k;
    json_t *v, *content = json_object_get(o, "content"),
               *type = json_object_get(o, "memory_type"),
               *ctx = json_object_get(o, "context"), *imp = json_object_get(o, "importance");
    json_object_foreach(o, k, v) {
        if (strcmp(k, "content") && strcmp(k, "memory_type") && strcmp(k, "context") &&
            strcmp(k, "importance")) {
            sophia_http_reply_error(r, 400, "bad_memory", "field %s cannot be patched "
                                    "(content, memory_type, context, importance)", k);
            json_decref(o);
            return;
        }
    }
    char why[160];
    /* The content check needs a string: an absent one is checked as "x". */
    json_t *probe = content ? NULL : json_string("x");
    const char *bad = json_object_size(o) == 0
                          ? "nothing to change: give content, memory_type, context or importance"
                          : sophia_memory_check(m, content ? content : probe, type,
                                                ctx, imp, why, sizeof(why));
    json_decref(probe);
    if (!bad && ((type && json_is_null(type)) || (ctx && json_is_null(ctx)) ||
                 (imp && json_is_null(imp))))
        bad = "memory_type, context and importance cannot be null";
    if (bad) {
        sophia_http_reply_error(r, 400, "bad_memory", "%s", bad);
        json_decref(o);
        return;
    }
    sophia_memory_change c = {json_string_value(content), json_string_value(type),
                              ctx, imp ? json_number_value(imp) : -1};
    int rc = sophia_memory_patch(m, id, &c, on_one, r);
    json_decref(o);
    if (rc)
        reply_unavailable(r, rc);
}

static void one_memory(sophia_http_req *r, sophia_memory *m, int64_t id,
                       sophia_http_method meth)
{
    int rc = 0;
    if (meth == SOPHIA_HTTP_GET)
        rc = sophia_memory_get(m, id, on_one, r);
    else if (meth == SOPHIA_HTTP_DELETE)
        rc = sophia_memory_delete(m, id, on_deleted_one, r);
    else
        patch_memory(r, m, id);
    if (rc)
        reply_unavailable(r, rc);
}

/* ------------------------------------------ GET /api/memory/{id}/history */

typedef struct hist_req {
    sophia_http_req *r;
    int64_t id;
} hist_req;

static void on_history(void *arg, const json_t *events, int err, const char *msg)
{
    hist_req *h = arg;
    if (err)
        sophia_http_reply_error(h->r, status_of(err), "memory_unavailable",
                                "history not read: %s", msg ? msg : "unavailable");
    else if (!events)
        sophia_http_reply_error(h->r, 404, "not_found", "no history for memory %lld "
                                "(unknown id, or its scope was forgotten)", (long long)h->id);
    else
        sophia_http_reply_json(h->r, 200, json_pack("{s:I,s:O}", "id", (json_int_t)h->id,
                                                     "history", events));
    free(h);
}

static void get_history(sophia_http_req *r, sophia_memory *m, int64_t id)
{
    hist_req *h = calloc(1, sizeof(*h));
    int rc = SOPHIA_ENOMEM;
    if (h) {
        h->r = r;
        h->id = id;
        rc = sophia_memory_history(m, id, on_history, h);
        if (rc)
            free(h);
    }
    if (rc)
        reply_unavailable(r, rc);
}

/* ------------------------------------------ GET/DELETE /api/memory (scopes) */

static void on_list(void *arg, const json_t *memories, int64_t next, int err,
                    const char *msg)
{
    sophia_http_req *r = arg;
    if (err) {
        sophia_http_reply_error(r, status_of(err), "memory_unavailable",
                                "list failed: %s", msg ? msg : "unavailable");
        return;
    }
    json_t *o = json_pack("{s:O}", "memories", memories);
    json_object_set_new(o, "next_cursor",
                        next ? json_sprintf(CURSOR_PREFIX "%lld", (long long)next)
                             : json_null());
    sophia_http_reply_json(r, 200, o);
}

/* limit (1..1000, default 50) and cursor; -1 with a 400 sent. */
static int parse_page(sophia_http_req *r, sophia_memory_list_q *q)
{
    const char *l = sophia_http_req_arg(r, "limit"), *c = sophia_http_req_arg(r, "cursor");
    char *end;
    q->limit = LIST_DEFAULT;
    if (l) {
        errno = 0;
        long v = strtol(l, &end, 10);
        if (!*l || *end || errno || v < 1 || v > SOPHIA_MEM_MAX_LIST) {
            sophia_http_reply_error(r, 400, "bad_limit", "limit must be an integer "
                                    "from 1 to %d", SOPHIA_MEM_MAX_LIST);
            return -1;
        }
        q->limit = (size_t)v;
    }
    if (c) {
        size_t pl = strlen(CURSOR_PREFIX);
        errno = 0;
        long long v = strncmp(c, CURSOR_PREFIX, pl) ? 0 : strtoll(c + pl, &end, 10);
        if (v <= 0 || *end || errno || !c[pl]) {
            sophia_http_reply_error(r, 400, "bad_cursor", "cursor must be a "
                                    "next_cursor from a previous page");
            return -1;
        }
        q->before = v;
    }
    return 0;
}

static void list_memories(sophia_http_req *r, sophia_memory *m)
{
    sophia_memory_list_q q = {0};
    if (parse_scope(r, &q.scope) < 0 || parse_page(r, &q) < 0)
        return;
    q.memory_type = sophia_http_req_arg(r, "memory_type");
    if (!q.memory_type)
        q.memory_type = sophia_http_req_arg(r, "type");
    if (q.memory_type && (!*q.memory_type || strlen(q.memory_type) > SOPHIA_MEM_MAX_TYPE)) {
        sophia_http_reply_error(r, 400, "bad_filter", "memory_type must be 1..%d bytes",
                                SOPHIA_MEM_MAX_TYPE);
        return;
    }
    char bad[256];
    json_t *filter = parse_filter(r, bad, sizeof(bad));
    if (!filter) {
        sophia_http_reply_error(r, 400, "bad_filter", "%s", bad);
        return;
    }
    q.filter = filter;
    int rc = sophia_memory_list(m, &q, on_list, r);
    json_decref(filter);
    if (rc)
        reply_unavailable(r, rc);
}

/* Forgetting needs a scope: a DELETE /api/memory without one would be
 * "forget everything", which is not an API call. */
static void forget_scope(sophia_http_req *r, sophia_memory *m)
{
    sophia_memory_scope sc;
    if (parse_scope(r, &sc) < 0)
        return;
    if (!sc.user_id && !sc.agent_id && !sc.session_id) {
        sophia_http_reply_error(r, 400, "bad_filter", "DELETE /api/memory needs at "
                                "least one of user_id, agent_id, session_id");
        return;
    }
    int rc = sophia_memory_forget(m, &sc, on_deleted, r);
    if (rc)
        reply_unavailable(r, rc);
}

/* ------------------------------------------------------------- routing */

typedef enum mem_route {
    R_NONE = 0, R_ROOT, R_SEARCH, R_ONE, R_FEEDBACK, R_HISTORY
} mem_route;

/* "/api/memory/123[/feedback|/history]" -> R_ONE / R_FEEDBACK / R_HISTORY
 * and 123. */
static mem_route parse_path(const char *path, int64_t *id)
{
    if (strcmp(path, "/api/memory") == 0)
        return R_ROOT;
    if (strcmp(path, "/api/memory/search") == 0)
        return R_SEARCH;
    const char *p = path + strlen("/api/memory/");
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno || v <= 0 || *p == '+' || *p == '-' || *p == ' ')
        return R_NONE;
    *id = v;
    return !*end                          ? R_ONE
           : !strcmp(end, "/feedback") ? R_FEEDBACK
           : !strcmp(end, "/history")  ? R_HISTORY
                                       : R_NONE;
}

static const char *allowed(mem_route rt, sophia_http_method meth)
{
    switch (rt) {
    case R_ROOT:
        return meth == SOPHIA_HTTP_POST || meth == SOPHIA_HTTP_GET ||
                       meth == SOPHIA_HTTP_DELETE
                   ? NULL
                   : "GET, POST or DELETE";
    case R_SEARCH:
    case R_HISTORY:
        return meth == SOPHIA_HTTP_GET ? NULL : "GET";
    case R_ONE:
        return meth == SOPHIA_HTTP_GET || meth == SOPHIA_HTTP_PATCH ||
                       meth == SOPHIA_HTTP_DELETE
                   ? NULL
                   : "GET, PATCH or DELETE";
    default:
        return meth == SOPHIA_HTTP_POST ? NULL : "POST";
    }
}

static void route_memory(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    const char *path = sophia_http_req_path(r);
    sophia_http_method meth = sophia_http_req_method(r);
    int64_t id = 0;
    mem_route rt = parse_path(path, &id);
    if (rt == R_NONE) {
        sophia_http_reply_error(r, 404, "not_found", "no endpoint %s", path);
        return;
    }
    const char *use = allowed(rt, meth);
    if (use) {
        sophia_http_reply_error(r, 405, "method_not_allowed", "use %s", use);
        return;
    }
    sophia_memory *m = store_or_503(api, r);
    if (!m)
        return;
    if (rt == R_SEARCH)
        get_search(r, m);
    else if (rt == R_ONE)
        one_memory(r, m, id, meth);
    else if (rt == R_FEEDBACK)
        post_feedback(r, m, id);
    else if (rt == R_HISTORY)
        get_history(r, m, id);
    else if (meth == SOPHIA_HTTP_POST)
        post_memory(r, m);
    else if (meth == SOPHIA_HTTP_GET)
        list_memories(r, m);
    else
        forget_scope(r, m);
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
