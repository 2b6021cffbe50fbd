/*
 * config_sections - the field tables of sophia.yaml's sections (server,
 * log, redis, postgres, cache, websocket, cluster, memory, plugins, hooks,
 * and the top level), with the walkers of keys that need more than a type:
 * lists, secrets, TLS files, write-strategy prefixes, consolidators,
 * plugin instances and their options.
 *
 * Tables, not code, so the manual page (sophia_conf_each_key) is made from
 * exactly what the loader accepts. Streams have their own file
 * (config_streams.c): they are the largest section and the only one with
 * a grammar of its own (filters).
 */
#include "conf/config_priv.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* HS256 keys shorter than the hash fall to offline guessing (RFC 7518 3.2) */
#define MIN_JWT_SECRET 32

/* plugins.path */
static void walk_plugin_path(loader *ld, const node *v, void *base,
                             const char *path)
{
    sophia_conf *c = base;
    if (conf_is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of directories, got %s", path,
            conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        if (v->kids[i]->reported)
            continue;
        const char *s = conf_want_scalar(ld, v->kids[i], path, "a directory");
        if (!s)
            continue;
        if (!*s) {
            ERR(ld, v->kids[i], "%s: a directory must not be empty", path);
            continue;
        }
        char **slot = GROW(c->plugin_path, c->nplugin_path);
        *slot = conf_absolutize(ld->basedir, s);
    }
}

/* The bundled plugins' directory, after plugins.path (paths.h). */
void sophia_conf_add_plugin_dir(sophia_conf *c, const char *dir)
{
    for (size_t i = 0; i < c->nplugin_path; i++)
        if (!strcmp(c->plugin_path[i], dir))
            return; /* already listed: searched where the file put it */
    char **slot = GROW(c->plugin_path, c->nplugin_path);
    *slot = conf_xstrdup(dir);
}

/* A plain scalar as YAML 1.2's core schema reads it; quoted: a string. */
static json_t *scalar_json(const node *n)
{
    long long ll;
    char *end;
    if (!n->plain)
        return json_stringn(n->text, n->len);
    if (conf_is_null(n))
        return json_null();
    if (!strcmp(n->text, "true") || !strcmp(n->text, "false"))
        return json_boolean(n->text[0] == 't');
    if (conf_parse_ll(n->text, &ll) == 0)
        return json_integer(ll);
    errno = 0;
    double d = strtod(n->text, &end);
    if (*n->text && !*end && !errno && isfinite(d))
        return json_real(d);
    return json_stringn(n->text, n->len);
}

/* Any YAML value as JSON, for an option of type SOPHIA_OPT_JSON. */
static json_t *node_json(const node *n)
{
    if (n->kind == NODE_SCALAR)
        return scalar_json(n);
    json_t *out = n->kind == NODE_SEQ ? json_array() : json_object();
    for (size_t i = 0; out && i < n->nkids; i++) {
        if (n->kind == NODE_SEQ) {
            json_array_append_new(out, node_json(n->kids[i]));
        } else if (i % 2 == 0 && n->kids[i]->kind == NODE_SCALAR &&
                   i + 1 < n->nkids) {
            json_object_set_new(out, n->kids[i]->text,
                                node_json(n->kids[i + 1]));
        }
    }
    return out;
}

/* Every option's value as JSON text too: what a SOPHIA_OPT_JSON option
 * hands over, and how a nested value is compared across a reload. */
static void option_set_json(sophia_conf_opt *o, const node *v)
{
    json_t *j = node_json(v);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    o->json = conf_xstrdup(text ? text : "null");
    free(text);
}

static int is_nested(const node *v)
{
    if (v->kind == NODE_MAP)
        return 1;
    for (size_t i = 0; v->kind == NODE_SEQ && i < v->nkids; i++)
        if (v->kids[i]->kind != NODE_SCALAR)
            return 1;
    return 0;
}

/* plugins.instances.NAME.options.KEY */
static void option_pair(loader *ld, const node *k, const node *v, void *base,
                        const void *arg, const char *path)
{
    sophia_conf_instance *in = base;
    (void)ld;
    (void)arg;
    (void)path;
    if (v->reported)
        return;
    sophia_conf_opt *o = GROW(in->opts, in->nopts);
    o->key = conf_xstrdup(k->text);
    o->line = v->line;
    o->col = v->col;
    o->key_line = k->line;
    o->key_col = k->col;
    option_set_json(o, v);
    /* A mapping, or a sequence of them: only a JSON option takes it (the
     * plugin loader says so otherwise, knowing the option's type). */
    if ((o->nested = is_nested(v)))
        return;
    if (v->kind == NODE_SCALAR) {
        o->scalar = conf_xstrdup(v->text);
        return;
    }
    o->is_seq = 1;
    for (size_t i = 0; i < v->nkids; i++) {
        char **slot = GROW(o->items, o->nitems);
        *slot = conf_xstrdup(v->kids[i]->text);
    }
}

static void walk_options(loader *ld, const node *v, void *base,
                         const char *path)
{
    conf_each_pair(ld, v, path, option_pair, base, NULL);
}

const field conf_instance_fields[] = {
    {"plugin", F_STRING, offsetof(sophia_conf_instance, plugin), 0, NULL, NULL},
    {"options", F_CUSTOM, 0, 0, NULL, walk_options},
    {NULL, 0, 0, 0, NULL, NULL},
};

static void instance_pair(loader *ld, const node *k, const node *v,
                          void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (conf_check_named(ld, k, v, path, "instance"))
        return;
    sophia_conf_instance *in = GROW(c->instances, c->ninstances);
    in->name = conf_xstrdup(k->text);
    in->line = k->line;
    in->col = k->col;
    conf_child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in plugin instance '%s'", k->text);
    section sec = {where, conf_instance_fields};
    conf_walk_section(ld, v, &sec, in, sub);
    if (!conf_has_key(v, "plugin"))
        ERR(ld, k, "%s: missing required key 'plugin' (the module to load)",
            sub);
}

void conf_walk_instances(loader *ld, const node *v, void *base,
                         const char *path)
{
    conf_each_pair(ld, v, path, instance_pair, base, NULL);
}

#define C_OFF(member) offsetof(sophia_conf, member)
#define END {NULL, 0, 0, 0, NULL, NULL}

static const field tokens_fields[] = {
    {"secret_env", F_SECRET, C_OFF(server.tokens_env), C_OFF(server.tokens),
     NULL, NULL},
    END,
};
static const section tokens_sec = {"in server.tokens", tokens_fields};

static const field rate_limit_fields[] = {
    {"rate", F_COUNT0, C_OFF(server.rate_limit.rate), 0, NULL, NULL},
    {"burst", F_COUNT0, C_OFF(server.rate_limit.burst), 0, NULL, NULL},
    END,
};
static const section rate_limit_sec = {"in server.rate_limit",
                                       rate_limit_fields};

/* A sequence of non-empty strings appended to items[0..*n). */
static void walk_strlist(loader *ld, const node *v, const char *path,
                         const char *what, char ***items, size_t *n)
{
    if (conf_is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of %s, got %s", path, what,
            conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        if (v->kids[i]->reported)
            continue;
        const char *s = conf_want_scalar(ld, v->kids[i], path, what);
        if (s && !*s)
            ERR(ld, v->kids[i], "%s: an entry must not be empty", path);
        else if (s)
            *GROW(*items, *n) = conf_xstrdup(s);
    }
}

static void walk_server_hosts(loader *ld, const node *v, void *base,
                              const char *path)
{
    sophia_conf *c = base;
    walk_strlist(ld, v, path, "host names such as sophia.example.com",
                 &c->server.hosts, &c->server.nhosts);
}

static void walk_server_origins(loader *ld, const node *v, void *base,
                                const char *path)
{
    sophia_conf *c = base;
    walk_strlist(ld, v, path, "origins such as https://dash.example.com",
                 &c->server.origins, &c->server.norigins);
}

/* The value of `key` in a mapping, or the mapping itself. */
static const node *map_value(const node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2)
        if (map->kids[i]->kind == NODE_SCALAR && !strcmp(map->kids[i]->text, key))
            return map->kids[i + 1];
    return map;
}

static const field tls_fields[] = {
    {"listen", F_LISTEN, C_OFF(server.tls.listen), 0, NULL, NULL},
    {"cert", F_DIR, C_OFF(server.tls.cert), 0, NULL, NULL},
    {"key", F_DIR, C_OFF(server.tls.key), 0, NULL, NULL},
    END,
};
static const section tls_sec = {"in server.tls", tls_fields};

/* server.tls: all three keys, and files that load as a matching pair now,
 * so --check finds a bad certificate, not the first client (http_tls.h). */
static void walk_server_tls(loader *ld, const node *v, void *base,
                            const char *path)
{
    static const char *const required[] = {"listen", "cert", "key"};
    sophia_conf *c = base;
    int missing = 0;
    conf_walk_section(ld, v, &tls_sec, base, path);
    if (v->kind != NODE_MAP)
        return; /* null: no TLS listener; anything else was reported */
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!conf_has_key(v, required[i])) {
            ERR(ld, v, "%s: missing required key '%s'", path, required[i]);
            missing = 1;
        }
    /* The check the caller passed with the load (config.h says why). */
    sophia_conf_tls_check check = ld->opts.tls_check;
    if (missing || !c->server.tls.cert || !c->server.tls.key || !check)
        return;
    char why[1024];
    int f = check(ld->opts.tls_check_arg, c->server.tls.cert,
                  c->server.tls.key, why, sizeof(why));
    const char *which = f == SOPHIA_CONF_TLS_BAD_KEY ? "key" : "cert";
    if (f)
        ERR(ld, map_value(v, which), "%s.%s: %s", path, which, why);
}

static const field server_fields[] = {
    {"listen", F_LISTEN, C_OFF(server.listen), 0, NULL, NULL},
    {"max_body", F_SIZE, C_OFF(server.max_body), 0, NULL, NULL},
    {"max_body_total", F_SIZE, C_OFF(server.max_body_total), 0, NULL, NULL},
    {"max_connections", F_COUNT, C_OFF(server.max_connections), 0, NULL, NULL},
    {"hosts", F_CUSTOM, 0, 0, NULL, walk_server_hosts},
    {"origins", F_CUSTOM, 0, 0, NULL, walk_server_origins},
    {"tokens", F_SECTION, 0, 0, &tokens_sec, NULL},
    {"share_dir", F_DIR, C_OFF(server.share_dir), 0, NULL, NULL},
    {"rate_limit", F_SECTION, 0, 0, &rate_limit_sec, NULL},
    {"tls", F_CUSTOM, 0, 0, NULL, walk_server_tls},
    END,
};
static const section server_sec = {"in server", server_fields};

static const field log_fields[] = {
    {"level", F_LEVEL, C_OFF(log_level), 0, NULL, NULL},
    END,
};
static const section log_sec = {"in log", log_fields};

static const field redis_fields[] = {
    {"url", F_REDIS_URL, C_OFF(redis_url), 0, NULL, NULL},
    END,
};
static const section redis_sec = {"in redis", redis_fields};

static const field pg_fields[] = {
    {"url", F_URL, C_OFF(pg_url), 0, NULL, NULL},
    END,
};
static const section pg_sec = {"in postgres", pg_fields};

static const field l1_fields[] = {
    {"max_entries", F_COUNT, C_OFF(l1.max_entries), 0, NULL, NULL},
    {"max_bytes", F_SIZE, C_OFF(l1.max_bytes), 0, NULL, NULL},
    {"ttl", F_TTL, C_OFF(l1.ttl), 0, NULL, NULL},
    END,
};
static const section l1_sec = {"in cache.l1", l1_fields};

static const field l2_fields[] = {
    {"ttl", F_TTL, C_OFF(l2.ttl), 0, NULL, NULL},
    END,
};
static const section l2_sec = {"in cache.l2", l2_fields};

/* cache.l3.pool: a connection count with an upper bound, which F_COUNT
 * lacks; pg_pool.h says why a few connections are enough. */
static void walk_l3_pool(loader *ld, const node *v, void *base,
                         const char *path)
{
    sophia_conf *c = base;
    const char *s = conf_want_scalar(ld, v, path, "an integer");
    long long n;
    if (!s)
        return;
    if (conf_parse_ll(s, &n) || n < 1 || n > SOPHIA_CONF_PG_POOL_MAX) {
        ERR(ld, v, "%s: '%s' is not a connection count from 1 to %d", path,
            s, SOPHIA_CONF_PG_POOL_MAX);
        return;
    }
    c->l3.pool = (size_t)n;
}

static const field l3_fields[] = {
    {"ttl", F_TTL, C_OFF(l3.ttl), 0, NULL, NULL},
    {"pool", F_CUSTOM, 0, 0, NULL, walk_l3_pool},
    END,
};
static const section l3_sec = {"in cache.l3", l3_fields};

/* cache.compress.level: 0 (off) to SOPHIA_CONF_COMPRESS_LEVEL_MAX. */
static void walk_compress_level(loader *ld, const node *v, void *base,
                                const char *path)
{
    sophia_conf *c = base;
    const char *s = conf_want_scalar(ld, v, path, "an integer");
    long long n;
    if (!s)
        return;
    if (conf_parse_ll(s, &n) || n < 0 || n > SOPHIA_CONF_COMPRESS_LEVEL_MAX) {
        ERR(ld, v, "%s: '%s' is not a zstd level from 1 to %d (0 = off)",
            path, s, SOPHIA_CONF_COMPRESS_LEVEL_MAX);
        return;
    }
    c->compress.level = (int)n;
}

/* cache.compress.dictionary: made absolute and checked to be a zstd
 * dictionary here, so a wrong path stops the start (and --check) instead
 * of every compressed read; empty = none. */
static void walk_compress_dict(loader *ld, const node *v, void *base,
                               const char *path)
{
    sophia_conf *c = base;
    const char *s = conf_want_scalar(ld, v, path, "a file path");
    if (!s || !*s)
        return;
    char *abs = conf_absolutize(ld->basedir, s);
    unsigned char magic[4] = {0};
    FILE *f = fopen(abs, "rb");
    int e = errno;
    size_t n = f ? fread(magic, 1, sizeof(magic), f) : 0;
    if (f)
        fclose(f);
    if (!f)
        ERR(ld, v, "%s: cannot open '%s': %s", path, abs, strerror(e));
    else if (n != 4 || memcmp(magic, "\x37\xa4\x30\xec", 4))
        ERR(ld, v, "%s: '%s' is not a zstd dictionary (sophia-zdict or "
            "zstd --train make one)", path, abs);
    conf_set_str(&c->compress.dictionary, abs);
}

static const field compress_fields[] = {
    {"threshold", F_SIZE, C_OFF(compress.threshold), 0, NULL, NULL},
    {"level", F_CUSTOM, 0, 0, NULL, walk_compress_level},
    {"dictionary", F_CUSTOM, 0, 0, NULL, walk_compress_dict},
    END,
};
static const section compress_sec = {"in cache.compress", compress_fields};

/* cache.write.prefixes: "key prefix": instance name. */
static void write_prefix_pair(loader *ld, const node *k, const node *v,
                              void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512];
    (void)arg;
    conf_child_path(sub, sizeof(sub), path, k->text);
    const char *s = conf_want_scalar(ld, v, sub, "a write_strategy instance name");
    if (!s)
        return;
    size_t n = c->cache_write.nprefixes;
    c->cache_write.prefixes = conf_xrealloc(c->cache_write.prefixes,
                                       (n + 1) * sizeof(char *));
    c->cache_write.instances = conf_xrealloc(c->cache_write.instances,
                                        (n + 1) * sizeof(char *));
    c->cache_write.pos = conf_xrealloc(c->cache_write.pos, (n + 1) * 2 * sizeof(int));
    c->cache_write.prefixes[n] = conf_xstrdup(k->text);
    c->cache_write.instances[n] = conf_xstrdup(s);
    c->cache_write.pos[2 * n] = v->line;
    c->cache_write.pos[2 * n + 1] = v->col;
    c->cache_write.nprefixes = n + 1;
}

static void walk_write_prefixes(loader *ld, const node *v, void *base,
                                const char *path)
{
    conf_each_pair(ld, v, path, write_prefix_pair, base, NULL);
}

static void walk_write_default(loader *ld, const node *v, void *base,
                               const char *path)
{
    sophia_conf *c = base;
    const char *s = conf_want_scalar(ld, v, path, "a write_strategy instance name");
    if (!s)
        return;
    conf_set_str(&c->cache_write.def, conf_xstrdup(s));
    c->cache_write.def_line = v->line;
    c->cache_write.def_col = v->col;
}

static const field write_fields[] = {
    {"default", F_CUSTOM, 0, 0, NULL, walk_write_default},
    {"prefixes", F_CUSTOM, 0, 0, NULL, walk_write_prefixes},
    END,
};
static const section write_sec = {"in cache.write", write_fields};

static const field cache_fields[] = {
    {"l1", F_SECTION, 0, 0, &l1_sec, NULL},
    {"l2", F_SECTION, 0, 0, &l2_sec, NULL},
    {"l3", F_SECTION, 0, 0, &l3_sec, NULL},
    {"compress", F_SECTION, 0, 0, &compress_sec, NULL},
    {"write", F_SECTION, 0, 0, &write_sec, NULL},
    END,
};
static const section cache_sec = {"in cache", cache_fields};

/* websocket.auth.secret_env: read like every secret_env, then held to
 * MIN_JWT_SECRET bytes, so a guessable key stops the start (and --check). */
static void walk_ws_secret(loader *ld, const node *v, void *base,
                           const char *path)
{
    static const field f = {"secret_env", F_SECRET, C_OFF(ws.auth_env),
                            C_OFF(ws.auth_secret), NULL, NULL};
    sophia_conf *c = base;
    conf_apply_secret(ld, &f, v, base, path);
    size_t n = c->ws.auth_secret ? strlen(c->ws.auth_secret) : 0;
    if (n && n < MIN_JWT_SECRET)
        ERR(ld, v, "%s: the WebSocket JWT secret in %s is %zu bytes; HS256 "
                   "needs at least %d (e.g. openssl rand -base64 48)",
            path, c->ws.auth_env, n, MIN_JWT_SECRET);
}

static const field auth_fields[] = {
    {"secret_env", F_CUSTOM, 0, 0, NULL, walk_ws_secret},
    END,
};
static const section auth_sec = {"in websocket.auth", auth_fields};

static const field jwt_fields[] = {
    {"require_exp", F_BOOL, C_OFF(ws.jwt_require_exp), 0, NULL, NULL},
    {"issuer", F_STRING, C_OFF(ws.jwt_issuer), 0, NULL, NULL},
    {"audience", F_STRING, C_OFF(ws.jwt_audience), 0, NULL, NULL},
    END,
};
static const section jwt_sec = {"in websocket.jwt", jwt_fields};

/* websocket.origins: a sequence of exact Origin header values. */
static void walk_ws_origins(loader *ld, const node *v, void *base,
                            const char *path)
{
    sophia_conf *c = base;
    walk_strlist(ld, v, path, "origins such as https://dash.example.com",
                 &c->ws.origins, &c->ws.norigins);
}

/* websocket.compression: off | deflate (permessage-deflate, ws.h). */
static void walk_ws_compression(loader *ld, const node *v, void *base,
                                const char *path)
{
    sophia_conf *c = base;
    const char *s = conf_want_scalar(ld, v, path, "off or deflate");
    if (!s)
        return;
    if (strcmp(s, "off") != 0 && strcmp(s, "deflate") != 0) {
        ERR(ld, v, "%s: '%s' is not off or deflate", path, s);
        return;
    }
    c->ws.compression = strcmp(s, "deflate") == 0;
}

static const field ws_fields[] = {
    {"max_queue", F_COUNT, C_OFF(ws.max_queue), 0, NULL, NULL},
    {"history", F_COUNT0, C_OFF(ws.history), 0, NULL, NULL},
    {"history_age", F_SECONDS, C_OFF(ws.history_age), 0, NULL, NULL},
    {"ping_interval", F_SECONDS, C_OFF(ws.ping_interval), 0, NULL, NULL},
    {"pong_timeout", F_SECONDS, C_OFF(ws.pong_timeout), 0, NULL, NULL},
    {"auth_timeout", F_SECONDS, C_OFF(ws.auth_timeout), 0, NULL, NULL},
    {"max_connections", F_COUNT, C_OFF(ws.max_connections), 0, NULL, NULL},
    {"max_subscriptions", F_COUNT, C_OFF(ws.max_subscriptions), 0, NULL, NULL},
    {"max_message", F_SIZE, C_OFF(ws.max_message), 0, NULL, NULL},
    {"coalesce_at", F_COUNT0, C_OFF(ws.coalesce_at), 0, NULL, NULL},
    {"origins", F_CUSTOM, 0, 0, NULL, walk_ws_origins},
    {"auth", F_SECTION, 0, 0, &auth_sec, NULL},
    {"jwt", F_SECTION, 0, 0, &jwt_sec, NULL},
    {"max_topics", F_COUNT, C_OFF(ws.max_topics), 0, NULL, NULL},
    {"compression", F_CUSTOM, 0, 0, NULL, walk_ws_compression},
    {"compression_min", F_SIZE, C_OFF(ws.compression_min), 0, NULL, NULL},
    END,
};
static const section ws_sec = {"in websocket", ws_fields};

static const field cluster_fields[] = {
    {"redis", F_REDIS_URL, C_OFF(cluster.redis), 0, NULL, NULL},
    {"node_id", F_STRING, C_OFF(cluster.node_id), 0, NULL, NULL},
    {"enabled", F_BOOL, C_OFF(cluster.enabled), 0, NULL, NULL},
    END,
};
static const section cluster_sec = {"in cluster", cluster_fields};

const field conf_consolidate_fields[] = {
    {"every", F_SECONDS, offsetof(sophia_conf_consolidate, every), 0, NULL,
     NULL},
    {"after_new", F_COUNT, offsetof(sophia_conf_consolidate, after_new), 0,
     NULL, NULL},
    {"batch", F_COUNT, offsetof(sophia_conf_consolidate, batch), 0, NULL,
     NULL},
    {"neighbors", F_COUNT0, offsetof(sophia_conf_consolidate, neighbors), 0,
     NULL, NULL},
    END,
};

/* memory.consolidate.INSTANCE: {every, after_new, batch, neighbors} */
static void consolidate_pair(loader *ld, const node *k, const node *v,
                             void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (conf_check_named(ld, k, v, path, "consolidator instance"))
        return;
    sophia_conf_consolidate *cc =
        GROW(c->memory.consolidate, c->memory.nconsolidate);
    cc->instance = conf_xstrdup(k->text);
    cc->neighbors = SOPHIA_CONF_CONS_NEIGHBORS_DEFAULT;
    cc->line = k->line;
    cc->col = k->col;
    conf_child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in memory.consolidate.%s", k->text);
    section sec = {where, conf_consolidate_fields};
    conf_walk_section(ld, v, &sec, cc, sub);
}

void conf_walk_consolidate(loader *ld, const node *v, void *base,
                           const char *path)
{
    conf_each_pair(ld, v, path, consolidate_pair, base, NULL);
}

/* correlators.INSTANCE.streams: [stream, ...] */
static void walk_corr_streams(loader *ld, const node *v, void *base,
                              const char *path)
{
    sophia_conf_correlator *cc = base;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of stream names, got %s", path,
            conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        const char *s = v->kids[i]->reported
                            ? NULL
                            : conf_want_scalar(ld, v->kids[i], path,
                                               "a stream name");
        if (!s)
            continue;
        sophia_conf_corr_stream *cs = GROW(cc->streams, cc->nstreams);
        cs->name = conf_xstrdup(s);
        cs->line = v->kids[i]->line;
        cs->col = v->kids[i]->col;
    }
}

/* correlators.INSTANCE.snapshot: true (default) or false */
static void walk_corr_snapshot(loader *ld, const node *v, void *base,
                               const char *path)
{
    sophia_conf_correlator *cc = base;
    const char *s = conf_want_scalar(ld, v, path, "true or false");
    int b = s ? conf_parse_bool(s) : 1;
    if (b < 0)
        ERR(ld, v, "%s: expected true or false, got '%s'", path, s);
    cc->snapshot_off = b == 0;
}

const field conf_correlator_fields[] = {
    {"streams", F_CUSTOM, 0, 0, NULL, walk_corr_streams},
    {"snapshot", F_CUSTOM, 0, 0, NULL, walk_corr_snapshot},
    {"snapshot_every", F_SECONDS,
     offsetof(sophia_conf_correlator, snapshot_every), 0, NULL, NULL},
    END,
};

/* correlators.INSTANCE: {streams, snapshot, snapshot_every} */
static void correlator_pair(loader *ld, const node *k, const node *v,
                            void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (conf_check_named(ld, k, v, path, "correlator instance"))
        return;
    sophia_conf_correlator *cc = GROW(c->correlators, c->ncorrelators);
    cc->instance = conf_xstrdup(k->text);
    cc->line = k->line;
    cc->col = k->col;
    conf_child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in correlators.%s", k->text);
    section sec = {where, conf_correlator_fields};
    conf_walk_section(ld, v, &sec, cc, sub);
    if (!conf_has_key(v, "streams"))
        ERR(ld, k, "%s: missing required key 'streams' (the streams whose "
                   "events it sees)", sub);
}

void conf_walk_correlators(loader *ld, const node *v, void *base,
                           const char *path)
{
    conf_each_pair(ld, v, path, correlator_pair, base, NULL);
}

static void walk_memory_embedder(loader *ld, const node *v, void *base,
                                 const char *path)
{
    sophia_conf *c = base;
    const char *s = conf_want_scalar(ld, v, path, "an embedder instance name");
    if (!s)
        return;
    conf_set_str(&c->memory.embedder, conf_xstrdup(s));
    c->memory.embedder_line = v->line;
    c->memory.embedder_col = v->col;
}

static const field memory_fields[] = {
    {"dim", F_COUNT, C_OFF(memory.dim), 0, NULL, NULL},
    {"index", F_STRING, C_OFF(memory.index), 0, NULL, NULL},
    {"hnsw_threshold", F_COUNT, C_OFF(memory.hnsw_threshold), 0, NULL, NULL},
    {"index_path", F_DIR, C_OFF(memory.index_path), 0, NULL, NULL},
    {"table", F_STRING, C_OFF(memory.table), 0, NULL, NULL},
    {"half_life", F_SECONDS, C_OFF(memory.half_life), 0, NULL, NULL},
    {"max_content", F_SIZE, C_OFF(memory.max_content), 0, NULL, NULL},
    {"workers", F_COUNT, C_OFF(memory.workers), 0, NULL, NULL},
    {"rebuild_removed_pct", F_COUNT0, C_OFF(memory.rebuild_removed_pct), 0, NULL, NULL},
    {"consolidate", F_CUSTOM, 0, 0, NULL, conf_walk_consolidate},
    {"embedder", F_CUSTOM, 0, 0, NULL, walk_memory_embedder},
    END,
};
static const section memory_sec = {"in memory", memory_fields};

static const field plugins_fields[] = {
    {"path", F_CUSTOM, 0, 0, NULL, walk_plugin_path},
    {"instances", F_CUSTOM, 0, 0, NULL, conf_walk_instances},
    {"strict_modes", F_BOOL, C_OFF(plugin_strict_modes), 0, NULL, NULL},
    {"init_timeout", F_SECONDS, C_OFF(plugin_init_timeout), 0, NULL, NULL},
    END,
};
static const section plugins_sec = {"in plugins", plugins_fields};

#define H_OFF(member) C_OFF(hooks.member)
static const field hook_slack_fields[] = {
    {"secret_env", F_SECRET, H_OFF(slack_env), H_OFF(slack_secret), NULL, NULL},
    {"stream", F_STRING, H_OFF(slack_stream), 0, NULL, NULL},
    {"dedup_window", F_SECONDS, H_OFF(slack_dedup), 0, NULL, NULL},
    END,
};
static const section hook_slack_sec = {"in hooks.slack", hook_slack_fields};

static const field hook_gong_fields[] = {
    {"secret_env", F_SECRET, H_OFF(gong_env), H_OFF(gong_secret), NULL, NULL},
    {"stream", F_STRING, H_OFF(gong_stream), 0, NULL, NULL},
    {"allow_query_key", F_BOOL, C_OFF(hooks.gong_query_key), 0, NULL, NULL},
    END,
};
static const section hook_gong_sec = {"in hooks.gong", hook_gong_fields};

static const field hooks_fields[] = {
    {"slack", F_SECTION, 0, 0, &hook_slack_sec, NULL},
    {"gong", F_SECTION, 0, 0, &hook_gong_sec, NULL},
    END,
};
static const section hooks_sec = {"in hooks", hooks_fields};

static const field top_fields[] = {
    {"server", F_SECTION, 0, 0, &server_sec, NULL},
    {"log", F_SECTION, 0, 0, &log_sec, NULL},
    {"redis", F_SECTION, 0, 0, &redis_sec, NULL},
    {"postgres", F_SECTION, 0, 0, &pg_sec, NULL},
    {"cache", F_SECTION, 0, 0, &cache_sec, NULL},
    {"websocket", F_SECTION, 0, 0, &ws_sec, NULL},
    {"cluster", F_SECTION, 0, 0, &cluster_sec, NULL},
    {"memory", F_SECTION, 0, 0, &memory_sec, NULL},
    {"plugins", F_SECTION, 0, 0, &plugins_sec, NULL},
    {"streams", F_CUSTOM, 0, 0, NULL, conf_walk_streams},
    {"hooks", F_SECTION, 0, 0, &hooks_sec, NULL},
    {"correlators", F_CUSTOM, 0, 0, NULL, conf_walk_correlators},
    END,
};
const section conf_top_sec = {"at the top level", top_fields};
