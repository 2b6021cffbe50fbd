/*
 * config - reads sophia.yaml into the model of config.h.
 *
 * Loading is two passes over one small tree. The first pass drives libyaml's
 * event parser (not its document loader) and builds our own node tree, which
 * is what lets us refuse anchors and aliases as they appear (no alias can
 * ever be expanded, so a "billion laughs" file costs nothing), stop
 * descending past SOPHIA_CONF_MAX_DEPTH levels, and mark duplicate mapping
 * keys, which libyaml accepts silently. The second pass checks that tree
 * against tables of the keys each section allows (Fluent Bit's config_map
 * idea: key, type, offset), so unknown keys, wrong types and bad values are
 * all found the same way and each becomes one `FILE:LINE:COL: message` with
 * the position of the offending node. Loading never stops at the first
 * problem; a bad value leaves the default in place so the rest still checks.
 * A YAML syntax error is the one exception: libyaml cannot resume after it,
 * so it is reported alone and the model keeps its defaults; nesting deeper
 * than SOPHIA_CONF_MAX_DEPTH is treated the same way (see too_deep).
 *
 * One role a file: the YAML tree reader (config_yaml.c), the schema walker
 * (config_schema.c), the section tables (config_sections.c, and
 * config_streams.c for `streams:`), and here the public API: defaults,
 * loading, environment overrides, cross-reference validation, freeing and
 * the key list for the manual page. What they share is config_priv.h.
 *
 * Conventions the rest of the daemon can rely on:
 * - an empty URL (from the file or SOPHIA_REDIS_URL / SOPHIA_PG_URL) is
 *   stored as NULL, so "disabled" has exactly one representation;
 * - a secret env var that is unset or set to "" leaves the secret NULL;
 * - plugins.path entries, server.share_dir and server.tls.cert/key are
 *   absolute: relative ones are resolved against the directory of the YAML
 *   file (for sophia_conf_load_string, the directory part of `name`), never
 *   the cwd of whoever started the daemon;
 * - running out of memory aborts: a half-built configuration is worse than
 *   none, and there is nothing useful to do without memory at startup.
 */
#include "conf/config.h"
#include "conf/config_priv.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "lib/cidr.h"
#include "lib/log.h"
#include "lib/redis_url.h"

#define SOPHIA_CONF_MAX_FILE (16u << 20)

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define DEFAULT_MAX_BODY_TOTAL ((size_t)64 << 20)
#define DEFAULT_HTTP_CONNECTIONS 1024
#define DEFAULT_L1_ENTRIES 100000
#define DEFAULT_L1_BYTES ((size_t)64 << 20)
#define DEFAULT_L1_TTL 300.0
#define DEFAULT_L3_POOL 4
#define DEFAULT_WS_QUEUE 1024
#define DEFAULT_WS_HISTORY 256
#define DEFAULT_WS_HISTORY_AGE 300.0
#define DEFAULT_WS_PING 25.0
#define DEFAULT_WS_PONG 10.0
#define DEFAULT_WS_AUTH_TIMEOUT 5.0
#define DEFAULT_WS_MAX_CONN 10000
#define DEFAULT_WS_MAX_SUBS 256
#define DEFAULT_WS_MAX_MESSAGE (64 * 1024)
#define DEFAULT_WS_MAX_TOPICS 100000

/* ---- public API -------------------------------------------------------- */

static sophia_conf *conf_defaults(const char *name)
{
    sophia_conf *c = conf_xrealloc(NULL, sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->file = conf_xstrdup(name);
    c->server.listen = conf_xstrdup(DEFAULT_LISTEN);
    c->server.max_body = DEFAULT_MAX_BODY;
    c->server.max_body_total = DEFAULT_MAX_BODY_TOTAL;
    c->server.max_connections = DEFAULT_HTTP_CONNECTIONS;
    c->plugin_strict_modes = 1;
    c->plugin_init_timeout = 10.0;
    c->log_level = SOPHIA_LVL_INFO;
    c->l1.max_entries = DEFAULT_L1_ENTRIES;
    c->l1.max_bytes = DEFAULT_L1_BYTES;
    c->l1.ttl = DEFAULT_L1_TTL;
    c->l3.pool = DEFAULT_L3_POOL;
    c->compress.threshold = SOPHIA_CONF_COMPRESS_THRESHOLD;
    c->compress.level = SOPHIA_CONF_COMPRESS_LEVEL;
    c->ws.max_queue = DEFAULT_WS_QUEUE;
    c->ws.history = DEFAULT_WS_HISTORY;
    c->hooks.slack_env = conf_xstrdup("SOPHIA_SLACK_SIGNING_SECRET");
    c->hooks.gong_env = conf_xstrdup("SOPHIA_GONG_SECRET");
    const char *hs = getenv(c->hooks.slack_env), *hg = getenv(c->hooks.gong_env);
    c->hooks.slack_secret = hs && *hs ? conf_xstrdup(hs) : NULL;
    c->hooks.gong_secret = hg && *hg ? conf_xstrdup(hg) : NULL;
    c->hooks.slack_stream = conf_xstrdup("slack");
    c->hooks.gong_stream = conf_xstrdup("gong");
    c->hooks.slack_dedup = 3600;
    c->memory.dim = 384;
    c->memory.index = conf_xstrdup("auto");
    c->memory.hnsw_threshold = 50000;
    c->memory.table = conf_xstrdup("sophia_memory");
    c->memory.half_life = 7 * 86400.0;
    c->memory.max_content = 64 * 1024;
    c->memory.workers = 2;
    c->memory.rebuild_removed_pct = 20;
    c->ws.history_age = DEFAULT_WS_HISTORY_AGE;
    c->ws.ping_interval = DEFAULT_WS_PING;
    c->ws.pong_timeout = DEFAULT_WS_PONG;
    c->ws.auth_timeout = DEFAULT_WS_AUTH_TIMEOUT;
    c->ws.max_connections = DEFAULT_WS_MAX_CONN;
    c->ws.max_subscriptions = DEFAULT_WS_MAX_SUBS;
    c->ws.max_message = DEFAULT_WS_MAX_MESSAGE;
    c->ws.max_topics = DEFAULT_WS_MAX_TOPICS;
    c->ws.compression_min = 1024;
    c->ws.jwt_require_exp = 1;
    c->cluster.enabled = -1;
    return c;
}

sophia_conf *sophia_conf_load_string(const char *name, const char *yaml,
                                     size_t len, sophia_diag *diag)
{
    return sophia_conf_load_string_with(name, yaml, len, NULL, diag);
}

sophia_conf *sophia_conf_load_string_with(const char *name, const char *yaml,
                                          size_t len,
                                          const sophia_conf_load_opts *o,
                                          sophia_diag *diag)
{
    loader ld;
    memset(&ld, 0, sizeof(ld));
    if (o)
        ld.opts = *o;
    ld.name = name ? name : "-";
    ld.buf = yaml;
    ld.len = len;
    ld.diag = diag;
    ld.c = conf_defaults(ld.name);
    if (!yaml_parser_initialize(&ld.parser)) {
        sophia_diag_add(diag, ld.name, 0, 0, "cannot initialize YAML parser");
        return ld.c;
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)yaml, len);
    node *root = conf_parse_document(&ld);
    yaml_parser_delete(&ld.parser);

    if (root && !ld.broken) {
        ld.basedir = conf_base_dir_of(ld.name);
        if (root->kind != NODE_MAP && !conf_is_null(root))
            ERR(&ld, root, "the top level must be a mapping of sections, got "
                           "%s", conf_kind_name(root));
        else
            conf_walk_section(&ld, root, &conf_top_sec, ld.c, "the top level");
        free(ld.basedir);
    }
    conf_node_free(root);
    return ld.c;
}

static char *read_file(const char *file, size_t *len, sophia_diag *diag)
{
    FILE *f = fopen(file, "rb");
    if (!f) {
        sophia_diag_add(diag, file, 0, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8192;
            buf = conf_xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n > SOPHIA_CONF_MAX_FILE) {
            sophia_diag_add(diag, file, 0, 0, "file is larger than %u bytes",
                            SOPHIA_CONF_MAX_FILE);
            break;
        }
        if (r == 0)
            break;
    }
    int bad = ferror(f) || n > SOPHIA_CONF_MAX_FILE;
    if (ferror(f))
        sophia_diag_add(diag, file, 0, 0, "cannot read: %s", strerror(errno));
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

sophia_conf *sophia_conf_load(const char *file, sophia_diag *diag)
{
    return sophia_conf_load_with(file, NULL, diag);
}

sophia_conf *sophia_conf_load_with(const char *file,
                                   const sophia_conf_load_opts *o,
                                   sophia_diag *diag)
{
    size_t len = 0;
    char *buf = read_file(file, &len, diag);
    if (!buf)
        return NULL;
    sophia_conf *c = sophia_conf_load_string_with(file, buf, len, o, diag);
    free(buf);
    return c;
}

/* Set -> replace; set to "" -> NULL (disabled, see the file comment). */
static void env_url(char **slot, const char *var)
{
    const char *v = getenv(var);
    if (v)
        conf_set_str(slot, *v ? conf_xstrdup(v) : NULL);
}

void sophia_conf_apply_env(sophia_conf *c, const char *listen_override)
{
    if (!c)
        return;
    env_url(&c->redis_url, "SOPHIA_REDIS_URL");
    env_url(&c->pg_url, "SOPHIA_PG_URL");
    env_url(&c->cluster.redis, "SOPHIA_CLUSTER_REDIS_URL");
    const char *cl = getenv("SOPHIA_CLUSTER_REDIS_URL");
    if (cl && !*cl)
        c->cluster.enabled = 0; /* "" = no cluster, not "fall back to redis.url" */
    const char *l = getenv("SOPHIA_LISTEN");
    if (l && *l)
        conf_set_str(&c->server.listen, conf_xstrdup(l));
    if (listen_override)
        conf_set_str(&c->server.listen, conf_xstrdup(listen_override));
}

/* memory.*: values whose meaning depends on more than their type. */
static void memory_validate(const sophia_conf *c, const char *file,
                            sophia_diag *diag)
{
    const char *ix = c->memory.index, *t = c->memory.table;
    if (strcmp(ix, "auto") && strcmp(ix, "flat") && strcmp(ix, "hnsw"))
        sophia_diag_add(diag, file, 0, 0, "memory.index: '%s' is not one of "
                        "auto, flat, hnsw", ix);
    int ok = (isalpha((unsigned char)*t) || *t == '_') && strlen(t) <= 48;
    for (const char *p = t; *p; p++)
        ok &= isalnum((unsigned char)*p) || *p == '_';
    if (!ok)
        sophia_diag_add(diag, file, 0, 0, "memory.table: '%s' is not a plain "
                        "SQL identifier (letters, digits, '_', at most 48)", t);
    if (c->memory.dim < 8 || c->memory.dim > 4096)
        sophia_diag_add(diag, file, 0, 0, "memory.dim: %zu is out of range "
                        "(8..4096)", c->memory.dim);
    if (c->memory.workers > 64)
        sophia_diag_add(diag, file, 0, 0, "memory.workers: at most 64");
    if (c->memory.embedder && !sophia_conf_instance_find(c, c->memory.embedder))
        sophia_diag_add(diag, file, c->memory.embedder_line,
                        c->memory.embedder_col,
                        "memory.embedder: '%s' is not a plugin instance "
                        "declared under plugins.instances", c->memory.embedder);
    for (size_t i = 0; i < c->memory.nconsolidate; i++) {
        const sophia_conf_consolidate *cc = &c->memory.consolidate[i];
        if (!sophia_conf_instance_find(c, cc->instance))
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "memory.consolidate.%s: not a plugin instance "
                            "declared under plugins.instances", cc->instance);
        else if (cc->every <= 0 && cc->after_new == 0)
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "memory.consolidate.%s: set 'every' (a duration) "
                            "or 'after_new' (a count), or both", cc->instance);
        else if (cc->batch > SOPHIA_CONF_CONS_BATCH_MAX)
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "memory.consolidate.%s.batch: at most %d",
                            cc->instance, SOPHIA_CONF_CONS_BATCH_MAX);
        else if (cc->neighbors > SOPHIA_CONF_CONS_NEIGHBORS_MAX)
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "memory.consolidate.%s.neighbors: at most %d",
                            cc->instance, SOPHIA_CONF_CONS_NEIGHBORS_MAX);
    }
}

/* A StatsD port reachable from the network needs an allow-list (as the
 * HTTP listener needs tokens; reload.c's sophia_check_secrets). */
static void statsd_validate(const sophia_conf_stream *s, const char *file,
                            sophia_diag *diag)
{
    char *host = NULL;
    if (!s->statsd_listen || s->nstatsd_allow ||
        sophia_conf_split_listen(s->statsd_listen, &host, NULL) < 0)
        return;
    if (!sophia_host_is_loopback(host))
        sophia_diag_add(diag, file, s->statsd_line, s->statsd_col,
                        "streams.%s.statsd.listen %s is not loopback but no "
                        "allow-list is set (streams.%s.statsd.allow: "
                        "[CIDR, ...])", s->name, s->statsd_listen, s->name);
    free(host);
}

static void redis_url_validate(const char *url, const char *what,
                               const char *file, sophia_diag *diag)
{
    sophia_redis_url u;
    char why[200], safe[256];
    if (!url)
        return;
    if (sophia_redis_url_parse(url, &u, why, sizeof(why)) < 0)
        sophia_diag_add(diag, file, 0, 0, "%s: %s: %s", what,
                        sophia_redis_url_redact(url, safe, sizeof(safe)), why);
    else
        sophia_redis_url_clear(&u);
}

static int has_stream(const sophia_conf *c, const char *name)
{
    for (size_t i = 0; i < c->nstreams; i++)
        if (!strcmp(c->streams[i].name, name))
            return 1;
    return 0;
}

/* correlators.<instance>: a declared instance (its kind is checked once
 * loaded, host/correlate.c), over declared streams. */
static void correlators_validate(const sophia_conf *c, const char *file,
                                 sophia_diag *diag)
{
    for (size_t i = 0; i < c->ncorrelators; i++) {
        const sophia_conf_correlator *cc = &c->correlators[i];
        if (!sophia_conf_instance_find(c, cc->instance))
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "correlators.%s: not a plugin instance declared "
                            "under plugins.instances", cc->instance);
        for (size_t j = 0; j < cc->nstreams; j++)
            if (!has_stream(c, cc->streams[j].name))
                sophia_diag_add(diag, file, cc->streams[j].line,
                                cc->streams[j].col,
                                "correlators.%s.streams: '%s' is not a "
                                "stream declared under streams",
                                cc->instance, cc->streams[j].name);
    }
}

void sophia_conf_validate(const sophia_conf *c, sophia_diag *diag)
{
    if (!c)
        return;
    const char *file = c->file ? c->file : "-";
    memory_validate(c, file, diag);
    correlators_validate(c, file, diag);
    /* A bad listen in the file was refused at load (the default stayed), so
     * a bad value here came from SOPHIA_LISTEN or --listen: no position. */
    if (sophia_conf_split_listen(c->server.listen, NULL, NULL))
        sophia_diag_add(diag, file, 0, 0,
                        "listen address '%s' (from SOPHIA_LISTEN or --listen) "
                        "is not HOST:PORT (IPv6 as [::1]:8080, port 1..65535)",
                        c->server.listen ? c->server.listen : "");
    for (size_t i = 0; i < c->nstreams; i++) {
        const sophia_conf_stream *s = &c->streams[i];
        for (size_t k = 0; k < s->nchain; k++) {
            const sophia_conf_link *l = &s->chain[k];
            if (l->processor && !sophia_conf_instance_find(c, l->processor))
                sophia_diag_add(diag, file, l->line, l->col,
                                "streams.%s: processor '%s' is not a plugin "
                                "instance declared under plugins.instances",
                                s->name, l->processor);
        }
        if (s->redis.key && !c->redis_url)
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.redis reads a Redis stream but no "
                            "Redis is configured (redis.url or "
                            "SOPHIA_REDIS_URL)", s->name);
        if (s->durable == 1 && !c->redis_url)
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.durable: true needs Redis (redis.url "
                            "or SOPHIA_REDIS_URL); set durable: false to keep "
                            "accepted events in memory only", s->name);
        if ((s->retention.count || s->retention.age > 0) &&
            (s->durable == 0 || !c->redis_url))
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.retention: only a durable stream "
                            "keeps history (needs Redis and durable not "
                            "false)", s->name);
        statsd_validate(s, file, diag);
        if (s->redis.block > 1.5)
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.redis.block: at most 1.5 s (a read "
                            "that blocks longer trips the connection's "
                            "2 s reply watchdog)", s->name);
    }
    if (c->cache_write.def && !sophia_conf_instance_find(c, c->cache_write.def))
        sophia_diag_add(diag, file, c->cache_write.def_line,
                        c->cache_write.def_col,
                        "cache.write.default: '%s' is not a plugin instance "
                        "declared under plugins.instances", c->cache_write.def);
    for (size_t i = 0; i < c->cache_write.nprefixes; i++)
        if (!sophia_conf_instance_find(c, c->cache_write.instances[i]))
            sophia_diag_add(diag, file, c->cache_write.pos[2 * i],
                            c->cache_write.pos[2 * i + 1],
                            "cache.write.prefixes \"%s\": '%s' is not a plugin "
                            "instance declared under plugins.instances",
                            c->cache_write.prefixes[i],
                            c->cache_write.instances[i]);
    /* A bad URL in the file was refused at load with its position, so a
     * bad one here came from the environment. */
    redis_url_validate(c->redis_url, "redis.url (or SOPHIA_REDIS_URL)", file,
                       diag);
    redis_url_validate(c->cluster.redis,
                       "cluster.redis (or SOPHIA_CLUSTER_REDIS_URL)", file,
                       diag);
    if (c->cluster.enabled == 1 && !c->cluster.redis && !c->redis_url)
        sophia_diag_add(diag, file, 0, 0, "cluster.enabled is true but there "
                        "is no Redis: set cluster.redis or redis.url (or "
                        "SOPHIA_REDIS_URL)");
    if (c->ninstances > 0 && c->nplugin_path == 0)
        sophia_diag_add(diag, file, c->instances[0].line, c->instances[0].col,
                        "plugins.path is empty, so plugin instance '%s' "
                        "cannot be loaded; list the plugin directories",
                        c->instances[0].name);
}

const sophia_conf_instance *sophia_conf_instance_find(const sophia_conf *c,
                                                      const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->ninstances; i++)
        if (!strcmp(c->instances[i].name, name))
            return &c->instances[i];
    return NULL;
}

static void free_instance(sophia_conf_instance *in)
{
    for (size_t j = 0; j < in->nopts; j++) {
        sophia_conf_opt *o = &in->opts[j];
        for (size_t k = 0; k < o->nitems; k++)
            free(o->items[k]);
        free(o->items);
        free(o->scalar);
        free(o->json);
        free(o->key);
    }
    free(in->opts);
    free(in->name);
    free(in->plugin);
}

static void free_preds(sophia_conf_pred *v, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        free(v[k].path);
        free(v[k].value);
        for (size_t j = 0; j < v[k].nitems; j++)
            free(v[k].items[j]);
        free(v[k].items);
    }
    free(v);
}

void sophia_conf_free(sophia_conf *c)
{
    if (!c)
        return;
    free(c->file);
    free(c->server.listen);
    free(c->server.tokens_env);
    free(c->server.tokens);
    free(c->server.share_dir);
    free(c->server.tls.listen);
    free(c->server.tls.cert);
    free(c->server.tls.key);
    free(c->redis_url);
    free(c->pg_url);
    free(c->cache_write.def);
    for (size_t i = 0; i < c->cache_write.nprefixes; i++) {
        free(c->cache_write.prefixes[i]);
        free(c->cache_write.instances[i]);
    }
    free(c->cache_write.prefixes);
    free(c->cache_write.instances);
    free(c->cache_write.pos);
    free(c->ws.auth_env);
    free(c->ws.auth_secret);
    free(c->ws.jwt_issuer);
    free(c->ws.jwt_audience);
    for (size_t i = 0; i < c->ws.norigins; i++)
        free(c->ws.origins[i]);
    free(c->ws.origins);
    for (size_t i = 0; i < c->server.nhosts; i++)
        free(c->server.hosts[i]);
    free(c->server.hosts);
    for (size_t i = 0; i < c->server.norigins; i++)
        free(c->server.origins[i]);
    free(c->server.origins);
    free(c->cluster.redis);
    free(c->cluster.node_id);
    free(c->memory.index);
    free(c->memory.index_path);
    free(c->compress.dictionary);
    free(c->memory.table);
    for (size_t i = 0; i < c->memory.nconsolidate; i++)
        free(c->memory.consolidate[i].instance);
    free(c->memory.consolidate);
    for (size_t i = 0; i < c->ncorrelators; i++) {
        sophia_conf_correlator *cc = &c->correlators[i];
        for (size_t j = 0; j < cc->nstreams; j++)
            free(cc->streams[j].name);
        free(cc->streams);
        free(cc->instance);
    }
    free(c->correlators);
    free(c->memory.embedder);
    for (size_t i = 0; i < c->nplugin_path; i++)
        free(c->plugin_path[i]);
    free(c->plugin_path);
    for (size_t i = 0; i < c->ninstances; i++)
        free_instance(&c->instances[i]);
    free(c->instances);
    for (size_t i = 0; i < c->nstreams; i++) {
        sophia_conf_stream *st = &c->streams[i];
        free(st->name);
        free(st->processor);
        free_preds(st->filter, st->nfilter);
        for (size_t k = 0; k < st->nchain; k++) {
            free(st->chain[k].processor);
            free_preds(st->chain[k].filter, st->chain[k].nfilter);
        }
        free(st->chain);
        free(st->dedup_key);
        free(st->redis.key);
        free(st->redis.group);
        free(st->redis.consumer);
        free(st->redis.field);
        free(st->statsd_listen);
        for (size_t k = 0; k < st->nstatsd_allow; k++)
            free(st->statsd_allow[k]);
        free(st->statsd_allow);
        for (size_t k = 0; k < st->noutputs; k++)
            free(st->outputs[k]);
        free(st->outputs);
        free(st->outputs_pos);
    }
    free(c->hooks.slack_env);
    free(c->hooks.slack_secret);
    free(c->hooks.slack_stream);
    free(c->hooks.gong_env);
    free(c->hooks.gong_secret);
    free(c->hooks.gong_stream);
    free(c->streams);
    free(c);
}

/* ---- the schema, for the manual page (config_doc.c) -------------------- */

static const char *field_type_name(field_type t)
{
    switch (t) {
    case F_STRING: return "string";
    case F_URL: return "URL (empty disables)";
    case F_REDIS_URL: return "Redis URL (empty disables)";
    case F_DIR: return "path (relative to the file's directory)";
    case F_LISTEN: return "HOST:PORT";
    case F_SIZE: return "size (bytes, or 64KiB, 1MB, ...)";
    case F_COUNT: return "integer > 0";
    case F_COUNT0: return "integer >= 0";
    case F_SECONDS: return "duration (seconds, or 250ms, 5m, 1h, 7d)";
    case F_TTL: return "duration, at most 10 years";
    case F_LEVEL: return "debug | info | warn | error";
    case F_BOOL: return "boolean";
    case F_SECRET: return "environment variable name";
    case F_SECTION: return "mapping";
    case F_CUSTOM: break;
    }
    return NULL;
}

/* Mappings of user-chosen names, each entry walked with its own fields. */
static const struct {
    field_fn fn;
    const char *name; /* the placeholder in the documented path */
    const field *fields;
} named_sections[] = {
    {conf_walk_instances, "NAME", conf_instance_fields},
    {conf_walk_streams, "NAME", conf_stream_fields},
    {conf_walk_consolidate, "INSTANCE", conf_consolidate_fields},
    {conf_walk_correlators, "INSTANCE", conf_correlator_fields},
};

/* A typed field's value in `dflt` (conf_defaults) as sophia.yaml would
 * write it, or NULL when the loader leaves it unset (0 or no string):
 * then a default applied at use time is described in config_doc.c. */
static const char *default_text(const field *f, const void *dflt, char *buf,
                                size_t cap)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    if (!dflt)
        return NULL;
    switch (f->type) {
    case F_SIZE: {
        size_t v = *AT(dflt, f->off, size_t);
        static const char *const units[] = {"GiB", "MiB", "KiB"};
        for (int i = 0; v && i < 3; i++)
            if (v % ((size_t)1 << (30 - 10 * i)) == 0) {
                snprintf(buf, cap, "%zu%s", v >> (30 - 10 * i), units[i]);
                return buf;
            }
        snprintf(buf, cap, "%zu", v);
        return v ? buf : NULL;
    }
    case F_COUNT:
    case F_COUNT0:
        snprintf(buf, cap, "%zu", *AT(dflt, f->off, size_t));
        return *AT(dflt, f->off, size_t) ? buf : NULL;
    case F_SECONDS:
    case F_TTL: {
        double v = *AT(dflt, f->off, double);
        if (v >= 86400 && v == (long long)v && (long long)v % 86400 == 0)
            snprintf(buf, cap, "%lldd", (long long)v / 86400);
        else if (v >= 3600 && v == (long long)v && (long long)v % 3600 == 0)
            snprintf(buf, cap, "%lldh", (long long)v / 3600);
        else
            snprintf(buf, cap, "%g", v);
        return v != 0 ? buf : NULL;
    }
    case F_LEVEL:
        return levels[*AT(dflt, f->off, sophia_log_lvl)];
    case F_BOOL: /* -1: decided at start-up, described in config_doc.c */
        return *AT(dflt, f->off, int) < 0 ? NULL : *AT(dflt, f->off, int) ? "true" : "false";
    case F_STRING:
    case F_LISTEN:
    case F_SECRET:
        return *AT(dflt, f->off, char *);
    default:
        return NULL;
    }
}

static void each_key(const field *fields, const char *prefix,
                     const void *dflt, sophia_conf_key_fn fn, void *arg)
{
    char path[256], def[64];
    for (const field *f = fields; f->key; f++) {
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "",
                 f->key);
        fn(path, field_type_name(f->type), default_text(f, dflt, def, sizeof(def)), arg);
        if (f->type == F_SECTION)
            each_key(f->sub->fields, path, dflt, fn, arg);
        for (size_t i = 0; f->type == F_CUSTOM &&
                           i < sizeof(named_sections) / sizeof(named_sections[0]); i++) {
            if (named_sections[i].fn != f->fn)
                continue;
            char sub[300];
            snprintf(sub, sizeof(sub), "%s.%s", path, named_sections[i].name);
            each_key(named_sections[i].fields, sub, NULL, fn, arg);
        }
    }
}

void sophia_conf_each_key(sophia_conf_key_fn fn, void *arg)
{
    sophia_conf *dflt = conf_defaults("defaults");
    each_key(conf_top_sec.fields, "", dflt, fn, arg);
    sophia_conf_free(dflt);
}
