/*
 * api_cache - see api_cache.h. Values travel as JSON: a put stores the
 * compact text of "value", a get parses it back (a value some other writer
 * stored as non-JSON text comes back as a JSON string).
 */
#include "api_cache.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "cache.h"
#include "memory.h"
#include "server.h"
#include "ws.h"

#define MAX_TAGS 16

static const char *const tier_names[] = {"", "l1", "l2", "l3", "loader"};

typedef struct req_ctx {
    sophia_http_req *r;
    char *key;
    unsigned left; /* invalidate: parts outstanding */
    size_t nkeys, ntags;
    int rc;
} req_ctx;

static req_ctx *ctx_new(sophia_http_req *r, const char *key)
{
    req_ctx *x = calloc(1, sizeof(*x));
    if (x) {
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

/* %XX-decodes a path segment into a new string; NULL when malformed. */
static char *url_decode(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1), *w = d;
    if (!d)
        return NULL;
    for (; *s; s++) {
        if (*s != '%') {
            *w++ = *s;
            continue;
        }
        if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2])) {
            free(d);
            return NULL;
        }
        char hex[3] = {s[1], s[2], 0};
        *w++ = (char)strtol(hex, NULL, 16);
        s += 2;
    }
    *w = '\0';
    if (strlen(d) != (size_t)(w - d)) { /* %00 */
        free(d);
        return NULL;
    }
    return d;
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
                                "%s: invalid key or tag (1..400 bytes, tags "
                                "without newlines, at most 16)", what);
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

static void get_key(sophia_http_req *r, const char *key)
{
    /* ?dashboard=&user= name the reader: an access pattern (memory) */
    sophia_memory_note_access(sophia_srv->memory, key,
                              sophia_http_req_arg(r, "dashboard"),
                              sophia_http_req_arg(r, "user"));
    req_ctx *x = ctx_new(r, key);
    int rc = x ? sophia_cache_get(sophia_srv->cache, key, NULL, NULL, on_get,
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
                      sophia_cache_strategy_for(sophia_srv->cache, x->key)));
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

static void put_key(sophia_http_req *r, const char *key)
{
    json_t *j = parse_body(r);
    if (!j)
        return;
    json_t *val = json_object_get(j, "value"), *ttl = json_object_get(j, "ttl");
    const char *tags[MAX_TAGS + 1];
    if (!val) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "body needs \"value\" (any JSON)");
    } else if (ttl && (!json_is_number(ttl) || json_number_value(ttl) <= 0)) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "\"ttl\" must be a number of seconds > 0");
    } else if (read_tags(r, json_object_get(j, "tags"), tags) == 0) {
        char *s = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        req_ctx *x = s ? ctx_new(r, key) : NULL;
        int rc = x ? sophia_cache_put_async(sophia_srv->cache, key, s,
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

static void del_key(sophia_http_req *r, const char *key)
{
    req_ctx *x = ctx_new(r, key);
    int rc = x ? sophia_cache_del_async(sophia_srv->cache, key, on_del, x)
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

static void post_invalidate(sophia_http_req *r)
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
    } else if (!(x = ctx_new(r, NULL))) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
    } else {
        x->left = 1;
        for (int k = 0; k < 2; k++) {
            json_t *a = k ? tags : keys;
            for (size_t i = 0; i < json_array_size(a); i++) {
                const char *s = json_string_value(json_array_get(a, i));
                x->left++;
                int rc = k ? sophia_cache_invalidate_tag_async(
                                 sophia_srv->cache, s, on_inval_part, x)
                           : sophia_cache_del_async(sophia_srv->cache, s,
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

/* ------------------------------------------------------- warm and flush */

static void on_warm(void *arg, int found)
{
    req_ctx *x = arg;
    sophia_http_reply_json(x->r, 200, json_pack("{s:i}", "warmed", found));
    ctx_free(x);
}

static void post_warm(sophia_http_req *r)
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
    req_ctx *x = ctx_new(r, NULL);
    if (!x) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    sophia_cache_warm(sophia_srv->cache, (size_t)n, on_warm, x);
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

static void post_flush(sophia_http_req *r)
{
    req_ctx *x = ctx_new(r, NULL);
    if (!x) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    sophia_cache_flush(sophia_srv->cache, on_flushed, x);
}

/* -------------------------------------------------------------- routing */

static void key_endpoint(sophia_http_req *r, sophia_http_method m,
                         const char *raw)
{
    char *key = url_decode(raw);
    if (!key || !*key) {
        sophia_http_reply_error(r, 400, "bad_request",
                                "the key in /api/cache/{key} is empty or "
                                "badly %%-encoded");
    } else if (m == SOPHIA_HTTP_GET) {
        get_key(r, key);
    } else if (m == SOPHIA_HTTP_PUT) {
        put_key(r, key);
    } else if (m == SOPHIA_HTTP_DELETE) {
        del_key(r, key);
    } else {
        sophia_http_reply_error(r, 405, "method_not_allowed",
                                "use GET, PUT or DELETE");
    }
    free(key);
}

int sophia_api_cache(sophia_http_req *r)
{
    const char *path = sophia_http_req_path(r);
    if (strncmp(path, "/api/cache/", 11) != 0)
        return 0;
    sophia_http_method m = sophia_http_req_method(r);
    const char *rest = path + 11;
    if (!sophia_srv->cache) {
        sophia_http_reply_error(r, 503, "unavailable", "no cache");
        return 1;
    }
    static const struct {
        const char *name;
        void (*fn)(sophia_http_req *);
    } posts[] = {{"invalidate", post_invalidate},
                 {"warm", post_warm},
                 {"flush", post_flush}};
    for (size_t i = 0; i < sizeof(posts) / sizeof(posts[0]); i++) {
        if (strcmp(rest, posts[i].name) || m == SOPHIA_HTTP_GET)
            continue;
        if (m == SOPHIA_HTTP_POST)
            posts[i].fn(r);
        else
            sophia_http_reply_error(r, 405, "method_not_allowed", "use POST");
        return 1;
    }
    key_endpoint(r, m, rest);
    return 1;
}

/* ------------------------------------------------------ WS cache.get */

typedef struct ws_get {
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
        sophia_ws_respond(g->client, g->req_id,
                          json_pack("{s:s,s:o*,s:s}", "key", g->key, "value",
                                    v, "tier", tier_names[tier]));
    } else if (rc == SOPHIA_ENOENT) {
        sophia_ws_respond_error(g->client, g->req_id, "not_found",
                                "no value cached for that key");
    } else {
        sophia_ws_respond_error(g->client, g->req_id, "unavailable",
                                "the cache is not available");
    }
    free(g->req_id);
    free(g->key);
    free(g);
}

static void ws_cache_get(uint64_t client, const char *req_id, json_t *params,
                         void *arg)
{
    (void)arg;
    const char *key = json_string_value(json_object_get(params, "key"));
    if (!key || !*key) {
        sophia_ws_respond_error(client, req_id, "bad_request",
                                "cache.get needs params {\"key\": string}");
        return;
    }
    ws_get *g = calloc(1, sizeof(*g));
    int rc = SOPHIA_ENOMEM;
    if (g && sophia_srv->cache) {
        g->client = client;
        g->req_id = req_id ? strdup(req_id) : NULL;
        g->key = strdup(key);
        rc = sophia_cache_get(sophia_srv->cache, key, NULL, NULL, ws_got, g);
        /* An authenticated reader is its token's subject, whatever the
         * params say. */
        const char *user = sophia_ws_client_subject(client);
        sophia_memory_note_access(
            sophia_srv->memory, key,
            json_string_value(json_object_get(params, "dashboard")),
            user ? user : json_string_value(json_object_get(params, "user")));
    }
    if (rc == 0)
        return;
    if (g) {
        free(g->req_id);
        free(g->key);
        free(g);
    }
    sophia_ws_respond_error(client, req_id,
                            rc == SOPHIA_EINVAL ? "bad_request" : "unavailable",
                            rc == SOPHIA_EINVAL ? "invalid key (1..400 bytes)"
                                                : "the cache is not available");
}

void sophia_api_cache_ws(int on)
{
    if (on)
        sophia_ws_register_method("cache.get", ws_cache_get, NULL);
    else
        sophia_ws_unregister_method("cache.get");
}
