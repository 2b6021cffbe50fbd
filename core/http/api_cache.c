/*
 * api_cache - see api_cache.h. Values travel as JSON: a put stores the
 * compact text of "value", a get parses it back (a value some other writer
 * stored as non-JSON text comes back as a JSON string).
 *
 * Keys: the path after /api/cache/ is the key exactly as the HTTP layer
 * hands it over, %-decoded once there and never again here (so `a%2541`
 * is the key `a%41`, and `+` stays `+`). Every key, from a path, a
 * WebSocket cache.get or an invalidate/access body, goes through one
 * check (check_key: sophia_cache_key_check) and is refused with 400
 * bad_key saying what is wrong at which byte; an accepted key is stored
 * byte for byte in every tier.
 *
 * Reads have no side effect: a GET never records who read (a web page can
 * make a browser send one). Access patterns are recorded by an explicit
 * POST /api/cache/access, or by a WebSocket cache.get from a client whose
 * JWT names its subject (that subject is the reader).
 */
#include "http/api_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "cache/cache.h"
#include "memory/memory.h"
#include "http/api.h"
#include "ws/ws.h"

#define MAX_TAGS 16
#define MAX_ACCESS_KEYS 256
#define MAX_READER 128 /* dashboard or user name, bytes (memory_access.c) */

static const char *const tier_names[] = {"", "l1", "l2", "l3", "loader"};

typedef struct req_ctx {
    const sophia_api *api;
    sophia_http_req *r;
    char *key;
    unsigned left; /* invalidate: parts outstanding */
    size_t nkeys, ntags;
    int rc;
} req_ctx;

static req_ctx *ctx_new(const sophia_api *api, sophia_http_req *r,
                        const char *key)
{
    req_ctx *x = calloc(1, sizeof(*x));
    if (x) {
        x->api = api;
        x->r = r;
        x->key = key ? strdup(key) : NULL;
    }
    return x;
}

static void ctx_free(req_ctx *x)
{
    free(x->key);
    free(x);
}

/* 0 when key is a valid cache key; else fills why with `what` and the
 * problem (the same words for every entry point). */
static int check_key(const char *key, const char *what, char *why,
                     size_t why_len)
{
    char e[96];
    if (sophia_cache_key_check(key, e, sizeof(e)) == 0)
        return 0;
    snprintf(why, why_len, "%s: %s (a key is 1..%d bytes of UTF-8 without "
             "control bytes)", what, e, SOPHIA_CACHE_MAX_KEY);
    return -1;
}

static void reply_rc(sophia_http_req *r, int rc, const char *what)
{
    if (rc == SOPHIA_EBUSY) {
        sophia_http_set_retry_after(r, 1);
        sophia_http_reply_error(r, 503, "busy",
                                "%s: the cache's write queue is full; retry "
                                "later", what);
    } else if (rc == SOPHIA_EINVAL) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "%s: invalid tag (1..400 bytes, without "
                                "newlines, at most 16)", what);
    } else {
        sophia_http_reply_error(r, 503, "unavailable", "%s: %s", what,
                                rc == SOPHIA_EUNAVAIL ? "shutting down"
                                                      : "cache error");
    }
}

static json_t *parse_body(sophia_http_req *r)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    json_error_t e;
    json_t *j = json_loadb(body ? body : "", len, 0, &e);
    if (!j || !json_is_object(j)) {
        sophia_http_reply_error(r, 400, "bad_json",
                                "body must be a JSON object%s%s",
                                j ? "" : ": ", j ? "" : e.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* ------------------------------------------------------------------ GET */

static void on_get(void *arg, int rc, const char *val, size_t len, int tier)
{
    req_ctx *x = arg;
    if (rc == SOPHIA_ENOENT) {
        sophia_http_reply_error(x->r, 404, "not_found",
                                "no value cached for key '%s'", x->key);
    } else if (rc != 0) {
        reply_rc(x->r, rc, "get");
    } else {
        json_t *v = json_loadb(val, len, JSON_DECODE_ANY, NULL);
        if (!v)
            v = json_stringn(val, len);
        sophia_http_reply_json(x->r, 200,
                               json_pack("{s:s,s:o*,s:s}", "key", x->key,
                                         "value", v, "tier",
                                         tier_names[tier]));
    }
    ctx_free(x);
}

/* No side effect: ?dashboard=&user= are ignored (POST /api/cache/access
 * records a reader). */
static void get_key(const sophia_api *api, sophia_http_req *r,
                    const char *key)
{
    req_ctx *x = ctx_new(api, r, key);
    int rc = x ? sophia_cache_get(api->cache, key, NULL, NULL, on_get,
                                  x)
               : SOPHIA_ENOMEM;
    if (rc) {
        if (x)
            ctx_free(x);
        reply_rc(r, rc, "get");
    }
}

/* ------------------------------------------------------------------ PUT */

static void on_put(void *arg, int rc)
{
    req_ctx *x = arg;
    if (rc)
        reply_rc(x->r, rc, "put");
    else
        sophia_http_reply_json(
            x->r, 200,
            json_pack("{s:s,s:b,s:s}", "key", x->key, "stored", 1, "strategy",
                      sophia_cache_strategy_for(x->api->cache, x->key)));
    ctx_free(x);
}

/* tags -> out (borrowed from j); -1 with the reply sent when malformed. */
static int read_tags(sophia_http_req *r, const json_t *tags,
                     const char **out)
{
    size_t n = 0;
    if (tags && !json_is_array(tags))
        goto bad;
    if (json_array_size(tags) > MAX_TAGS)
        goto bad;
    for (size_t i = 0; i < json_array_size(tags); i++) {
        const char *t = json_string_value(json_array_get(tags, i));
        if (!t || !*t)
            goto bad;
        out[n++] = t;
    }
    out[n] = NULL;
    return 0;
bad:
    sophia_http_reply_error(r, 400, "bad_request",
                            "\"tags\" must be an array of at most %d "
                            "non-empty strings", MAX_TAGS);
    return -1;
}

static void put_key(const sophia_api *api, sophia_http_req *r,
                    const char *key)
{
    json_t *j = parse_body(r);
    if (!j)
        return;
    json_t *val = json_object_get(j, "value"), *ttl = json_object_get(j, "ttl");
    const char *tags[MAX_TAGS + 1];
    if (!val) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "body needs \"value\" (any JSON)");
    } else if (ttl && (!json_is_number(ttl) ||
                       !sophia_cache_ttl_ok(json_number_value(ttl)))) {
        sophia_http_reply_error(r, 400, "bad_ttl",
                                "\"ttl\" must be a number of seconds > 0 "
                                "and at most %.0f (10 years)",
                                SOPHIA_CACHE_MAX_TTL);
    } else if (read_tags(r, json_object_get(j, "tags"), tags) == 0) {
        char *s = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        req_ctx *x = s ? ctx_new(api, r, key) : NULL;
        int rc = x ? sophia_cache_put_async(api->cache, key, s,
                                            strlen(s),
                                            ttl ? json_number_value(ttl) : 0,
                                            tags, on_put, x)
                   : SOPHIA_ENOMEM;
        if (rc) {
            if (x)
                ctx_free(x);
            reply_rc(r, rc, "put");
        }
        free(s);
    }
    json_decref(j);
}

/* --------------------------------------------------------------- DELETE */

static void on_del(void *arg, int rc)
{
    req_ctx *x = arg;
    if (rc)
        reply_rc(x->r, rc, "delete");
    else
        sophia_http_reply_json(x->r, 200, json_pack("{s:s,s:b}", "key", x->key,
                                                    "deleted", 1));
    ctx_free(x);
}

static void del_key(const sophia_api *api, sophia_http_req *r,
                    const char *key)
{
    req_ctx *x = ctx_new(api, r, key);
    int rc = x ? sophia_cache_del_async(api->cache, key, on_del, x)
               : SOPHIA_ENOMEM;
    if (rc) {
        if (x)
            ctx_free(x);
        reply_rc(r, rc, "delete");
    }
}

/* ----------------------------------------------------------- invalidate */

static void on_inval_part(void *arg, int rc)
{
    req_ctx *x = arg;
    if (rc && !x->rc)
        x->rc = rc;
    if (--x->left)
        return;
    if (x->rc)
        reply_rc(x->r, x->rc, "invalidate");
    else
        sophia_http_reply_json(
            x->r, 200,
            json_pack("{s:{s:I,s:I}}", "invalidated", "keys",
                      (json_int_t)x->nkeys, "tags", (json_int_t)x->ntags));
    ctx_free(x);
}

static int check_strings(const json_t *a)
{
    if (a && !json_is_array(a))
        return -1;
    for (size_t i = 0; i < json_array_size(a); i++)
        if (!json_is_string(json_array_get(a, i)))
            return -1;
    return 0;
}

/* 0 when every string of the array is a valid key; else replies 400. */
static int check_keys(sophia_http_req *r, const json_t *a)
{
    char why[256], what[32];
    for (size_t i = 0; i < json_array_size(a); i++) {
        snprintf(what, sizeof(what), "keys[%zu]", i);
        if (check_key(json_string_value(json_array_get(a, i)), what, why,
                      sizeof(why))) {
            sophia_http_reply_error(r, 400, "bad_key", "%s", why);
            return -1;
        }
    }
    return 0;
}

static void post_invalidate(const sophia_api *api, sophia_http_req *r)
{
    json_t *j = parse_body(r);
    if (!j)
        return;
    json_t *keys = json_object_get(j, "keys"), *tags = json_object_get(j, "tags");
    req_ctx *x = NULL;
    if ((!keys && !tags) || check_strings(keys) || check_strings(tags)) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "body needs \"tags\" and/or \"keys\": arrays "
                                "of strings");
    } else if (check_keys(r, keys)) {
        /* answered */
    } else if (!(x = ctx_new(api, r, NULL))) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
    } else {
        x->left = 1;
        for (int k = 0; k < 2; k++) {
            json_t *a = k ? tags : keys;
            for (size_t i = 0; i < json_array_size(a); i++) {
                const char *s = json_string_value(json_array_get(a, i));
                x->left++;
                int rc = k ? sophia_cache_invalidate_tag_async(
                                 api->cache, s, on_inval_part, x)
                           : sophia_cache_del_async(api->cache, s,
                                                    on_inval_part, x);
                if (rc) {
                    x->left--;
                    x->rc = x->rc ? x->rc : rc;
                }
            }
        }
        x->nkeys = json_array_size(keys);
        x->ntags = json_array_size(tags);
        on_inval_part(x, 0);
    }
    json_decref(j);
}

/* --------------------------------------------------------------- access */

/* A reader's name: absent, or a string of 1..MAX_READER bytes. */
static int reader_ok(const json_t *v)
{
    return !v || (json_is_string(v) && json_string_length(v) > 0 &&
                  json_string_length(v) <= MAX_READER &&
                  strlen(json_string_value(v)) == json_string_length(v));
}

/* POST /api/cache/access {"keys":[…],"dashboard":"…","user":"…"}: the
 * explicit way to say who read which keys (access patterns, memory). */
static void post_access(const sophia_api *api, sophia_http_req *r)
{
    json_t *j = parse_body(r);
    if (!j)
        return;
    json_t *keys = json_object_get(j, "keys"),
           *dash = json_object_get(j, "dashboard"),
           *user = json_object_get(j, "user");
    if (!json_is_array(keys) || !json_array_size(keys) ||
        json_array_size(keys) > MAX_ACCESS_KEYS || check_strings(keys)) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "\"keys\" must be an array of 1..%d strings",
                                MAX_ACCESS_KEYS);
    } else if ((!dash && !user) || !reader_ok(dash) || !reader_ok(user)) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "body needs \"dashboard\" and/or \"user\": "
                                "strings of 1..%d bytes", MAX_READER);
    } else if (check_keys(r, keys)) {
        /* answered */
    } else if (!api->memory) {
        sophia_http_reply_error(r, 503, "unavailable",
                                "access: no memory store to record into");
    } else {
        for (size_t i = 0; i < json_array_size(keys); i++)
            sophia_memory_note_access(
                api->memory, json_string_value(json_array_get(keys, i)),
                json_string_value(dash), json_string_value(user));
        sophia_http_reply_json(r, 200,
                               json_pack("{s:I}", "recorded",
                                         (json_int_t)json_array_size(keys)));
    }
    json_decref(j);
}

/* ------------------------------------------------------- warm and flush */

static void on_warm(void *arg, int found)
{
    req_ctx *x = arg;
    sophia_http_reply_json(x->r, 200, json_pack("{s:i}", "warmed", found));
    ctx_free(x);
}

static void post_warm(const sophia_api *api, sophia_http_req *r)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    json_int_t n = 256;
    if (len) {
        json_t *j = parse_body(r);
        if (!j)
            return;
        json_t *c = json_object_get(j, "count");
        n = json_is_integer(c) ? json_integer_value(c) : -1;
        json_decref(j);
        if (n < 1 || n > 100000) {
            sophia_http_reply_error(r, 400, "bad_request",
                                    "\"count\" must be an integer in "
                                    "1..100000");
            return;
        }
    }
    (void)body;
    req_ctx *x = ctx_new(api, r, NULL);
    if (!x) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    sophia_cache_warm(api->cache, (size_t)n, on_warm, x);
}

static void on_flushed(void *arg, int rc)
{
    req_ctx *x = arg;
    if (rc)
        reply_rc(x->r, rc, "flush");
    else
        sophia_http_reply_json(x->r, 200, json_pack("{s:b}", "flushed", 1));
    ctx_free(x);
}

static void post_flush(const sophia_api *api, sophia_http_req *r)
{
    req_ctx *x = ctx_new(api, r, NULL);
    if (!x) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    sophia_cache_flush(api->cache, on_flushed, x);
}

/* -------------------------------------------------------------- routing */

/* key: the rest of the path, already %-decoded once by the HTTP layer. */
static void key_endpoint(const sophia_api *api, sophia_http_req *r,
                         sophia_http_method m, const char *key)
{
    char why[256];
    if (check_key(key, "the key in /api/cache/{key}", why, sizeof(why))) {
        sophia_http_reply_error(r, 400, "bad_key", "%s", why);
    } else if (m == SOPHIA_HTTP_GET) {
        get_key(api, r, key);
    } else if (m == SOPHIA_HTTP_PUT) {
        put_key(api, r, key);
    } else if (m == SOPHIA_HTTP_DELETE) {
        del_key(api, r, key);
    } else {
        sophia_http_reply_error(r, 405, "method_not_allowed",
                                "use GET, PUT or DELETE");
    }
}

static void route_cache(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    const char *path = sophia_http_req_path(r);
    sophia_http_method m = sophia_http_req_method(r);
    const char *rest = path + 11;
    if (!api->cache) {
        sophia_http_reply_error(r, 503, "unavailable", "no cache");
        return;
    }
    static const struct {
        const char *name;
        void (*fn)(const sophia_api *, sophia_http_req *);
    } posts[] = {{"invalidate", post_invalidate},
                 {"access", post_access},
                 {"warm", post_warm},
                 {"flush", post_flush}};
    for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++) {
        if (strcmp(rest, posts[i].name) || m == SOPHIA_HTTP_GET)
            continue;
        if (m == SOPHIA_HTTP_POST)
            posts[i].fn(api, r);
        else
            sophia_http_reply_error(r, 405, "method_not_allowed", "use POST");
        return;
    }
    key_endpoint(api, r, m, rest);
}

int sophia_api_cache_routes(sophia_http_router *rt, sophia_api *api)
{
    sophia_http_route route = {SOPHIA_HTTP_ANY, "/api/cache/",
                               SOPHIA_ROUTE_PREFIX, route_cache,
                               sophia_api_admit, api};
    return sophia_http_route_add(rt, &route);
}

/* ------------------------------------------------------ WS cache.get */

typedef struct ws_get {
    sophia_ws_router *ws;
    uint64_t client;
    char *req_id;
    char *key;
} ws_get;

static void ws_got(void *arg, int rc, const char *val, size_t len, int tier)
{
    ws_get *g = arg;
    if (rc == 0) {
        json_t *v = json_loadb(val, len, JSON_DECODE_ANY, NULL);
        if (!v)
            v = json_stringn(val, len);
        sophia_ws_respond(g->ws, g->client, g->req_id,
                          json_pack("{s:s,s:o*,s:s}", "key", g->key, "value",
                                    v, "tier", tier_names[tier]));
    } else if (rc == SOPHIA_ENOENT) {
        sophia_ws_respond_error(g->ws, g->client, g->req_id, "not_found",
                                "no value cached for that key");
    } else {
        sophia_ws_respond_error(g->ws, g->client, g->req_id, "unavailable",
                                "the cache is not available");
    }
    free(g->req_id);
    free(g->key);
    free(g);
}

static void ws_cache_get(sophia_ws_router *ws, uint64_t client,
                         const char *req_id, json_t *params, void *arg)
{
    const sophia_api *api = arg;
    const char *key = json_string_value(json_object_get(params, "key"));
    char why[256];
    if (!key) {
        sophia_ws_respond_error(ws, client, req_id, "bad_request",
                                "cache.get needs params {\"key\": string}");
        return;
    }
    if (check_key(key, "params.key", why, sizeof(why))) {
        sophia_ws_respond_error(ws, client, req_id, "bad_key", why);
        return;
    }
    ws_get *g = calloc(1, sizeof(*g));
    int rc = SOPHIA_ENOMEM;
    if (g && api->cache) {
        g->ws = ws;
        g->client = client;
        g->req_id = req_id ? strdup(req_id) : NULL;
        g->key = strdup(key);
        rc = sophia_cache_get(api->cache, key, NULL, NULL, ws_got, g);
        /* Only an authenticated read records a reader, and the reader is
         * its token's subject, whatever the params say. */
        const char *user = sophia_ws_client_subject(ws, client);
        if (rc == 0 && user)
            sophia_memory_note_access(
                api->memory, key,
                json_string_value(json_object_get(params, "dashboard")),
                user);
    }
    if (rc == 0)
        return;
    if (g) {
        free(g->req_id);
        free(g->key);
        free(g);
    }
    sophia_ws_respond_error(ws, client, req_id,
                            rc == SOPHIA_EINVAL ? "bad_request" : "unavailable",
                            rc == SOPHIA_EINVAL ? "invalid key"
                                                : "the cache is not available");
}

void sophia_api_cache_ws(sophia_api *api, int on)
{
    if (on)
        sophia_ws_register_method(api->ws, "cache.get", ws_cache_get, api);
    else
        sophia_ws_unregister_method(api->ws, "cache.get");
}
