/*
 * api - see api.h.
 *
 * Its routes are one short table (sophia_api_routes), read top to
 * bottom; router.h picks among them and those of the other api_*.c.
 * Everything comes from the sophia_api the routes carry, never a global.
 * Documents are built with jansson (JSON) or open_memstream (Prometheus
 * text). Every figure is declared once, by the module that keeps it
 * (lib/statdef.h: http_stats.c, ingest/stream_stats.c, cache_stats.c,
 * memory_stats.c, ws_stats.c; the daemon's, plugins' and reloads' here),
 * and both documents are written from the declarations: this file only
 * puts the pieces together.
 */
#include "http/api.h"

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/cache.h"
#include "memory/memory.h"
#include "host/host.h"
#include "lib/bearer.h"
#include "lib/dict.h"
#include "lib/log.h"
#include "http/api_streams.h"
#include "host/correlate.h"
#include "host/output.h"
#include "http/ratelimit.h"
#include "ingest/stream.h"
#include "ws/ws.h"

typedef struct dash_file {
    char *data;
    size_t len;
    const char *ctype;
} dash_file;

struct sophia_dash {
    sophia_dict *files; /* "/name" -> dash_file */
};

static sophia_api_reload_stats reload_stats(const sophia_api *api)
{
    sophia_api_reload_stats rs = {0};
    if (api->reload_stats)
        api->reload_stats(api->reload_arg, &rs);
    return rs;
}

/* ------------------------------------------------------------ helpers */

static int ct_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char d = alen != blen;
    for (size_t i = 0; i < alen; i++)
        d |= (unsigned char)(a[i] ^ b[i < blen ? i : 0]);
    return d == 0;
}

/* Bearer tokens from server.tokens (comma-separated); open when unset. */
static int authorized(const sophia_api *api, sophia_http_req *r)
{
    const char *tokens = api->conf->server.tokens;
    if (!tokens || !*tokens)
        return 1;
    const char *tok = sophia_bearer_token(sophia_http_req_header(r, "authorization"));
    if (!tok)
        return 0;
    size_t tlen = strlen(tok);
    int ok = 0;
    for (const char *p = tokens; *p;) {
        size_t n = strcspn(p, ",");
        ok |= n > 0 && ct_equal(tok, tlen, p, n);
        p += n + (p[n] == ',');
    }
    return ok;
}

/* ------------------------------------------- the daemon, plugins, reloads */

typedef struct daemon_figs {
    int64_t uptime_s;
    uint64_t built; /* 1, sophia_build_info's value (version="...") */
} daemon_figs;

static const sophia_statdef build_defs[] = {
    SOPHIA_STATDEF(NULL, "sophia_build_info", "gauge", NULL,
                   "Version of sophiad.", offsetof(daemon_figs, built)),
};

static const sophia_statdef daemon_defs[] = {
    SOPHIA_STATDEF("uptime_s", "sophia_uptime_seconds", "gauge", NULL,
                   "Seconds since start.", offsetof(daemon_figs, uptime_s),
                   .kind = SOPHIA_STAT_I64),
};

static daemon_figs daemon_figs_of(const sophia_api *api)
{
    return (daemon_figs){(sophia_now_wall_us() - api->started_us) / 1000000, 1};
}

/* Each figure once (lib/statdef.h): per plugin instance, then the
 * reload and rate-limit counters. */
typedef struct plugin_figs {
    int64_t loaded_at;
    uint64_t reload_count, loaded; /* loaded: 1, sophia_plugin_info's value */
} plugin_figs;

static const sophia_statdef plugin_defs[] = {
    SOPHIA_STATDEF("loaded_at", NULL, NULL, NULL, NULL,
                   offsetof(plugin_figs, loaded_at), .kind = SOPHIA_STAT_I64),
    SOPHIA_STATDEF("reload_count", NULL, NULL, NULL, NULL,
                   offsetof(plugin_figs, reload_count)),
    SOPHIA_STATDEF(NULL, "sophia_plugin_info", "gauge", NULL,
                   "Loaded plugin instances.", offsetof(plugin_figs, loaded)),
};

typedef struct reload_figs {
    uint64_t plugin_load_failures, reloads, failures, rate_limited;
} reload_figs;

#define RL(f) offsetof(reload_figs, f)
static const sophia_statdef reload_defs[] = {
    SOPHIA_STATDEF("plugin_load_failures", "sophia_plugin_load_failures_total",
                   "counter", NULL, "Plugin loads refused.", RL(plugin_load_failures)),
    SOPHIA_STATDEF("reloads", "sophia_reloads_total", "counter", NULL,
                   "Successful configuration reloads.", RL(reloads)),
    SOPHIA_STATDEF("failures", "sophia_reload_failures_total", "counter", NULL,
                   "Reloads refused; the old configuration kept running.", RL(failures)),
    SOPHIA_STATDEF(NULL, "sophia_rate_limited_total", "counter", NULL,
                   "Requests answered 429 (server.rate_limit).", RL(rate_limited)),
};

#define NDEFS(t) (sizeof(t) / sizeof((t)[0]))

static plugin_figs plugin_figs_of(const sophia_instance *in)
{
    return (plugin_figs){(int64_t)in->loaded_at, (uint64_t)in->reload_count, 1};
}

static reload_figs reload_figs_of(const sophia_api *api,
                                  const sophia_api_reload_stats *rs)
{
    return (reload_figs){rs->plugin_load_failures, rs->reloads, rs->failures,
                         sophia_ratelimit_refused(api->ratelimit)};
}

static json_t *plugins_json(const sophia_api *api)
{
    json_t *a = json_array();
    const sophia_plugin_set *set = api->plugins;
    for (size_t i = 0; set && i < set->count; i++) {
        const sophia_instance *in = set->items[i];
        plugin_figs pf = plugin_figs_of(in);
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "name", in->name,
                              "plugin", in->desc->name, "kind",
                              sophia_plugin_kind_name(in->desc->kind), "version",
                              in->desc->version, "file", in->file);
        json_object_update_new(o, sophia_statdef_json(plugin_defs,
                                                      NDEFS(plugin_defs), &pf));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *reload_json(const sophia_api *api)
{
    sophia_api_reload_stats rs = reload_stats(api);
    reload_figs rf = reload_figs_of(api, &rs);
    json_t *o = sophia_statdef_json(reload_defs, NDEFS(reload_defs), &rf);
    json_object_set_new(o, "last_error",
                        rs.last_error ? json_string(rs.last_error) : json_null());
    json_object_set_new(o, "last_at", json_integer((json_int_t)(rs.last_at_us / 1000000)));
    return o;
}

static json_t *http_stats_json(const sophia_api *api)
{
    sophia_http_stats h;
    sophia_http_get_stats(api->http, &h);
    return sophia_statdef_json(sophia_http_statdefs, sophia_http_nstatdefs, &h);
}

json_t *sophia_api_stats(const sophia_api *api)
{
    const sophia_api *s = api;
    daemon_figs df = daemon_figs_of(api);
    json_t *o = json_pack("{s:s}", "version", SOPHIA_VERSION);
    json_object_update_new(o, sophia_statdef_json(daemon_defs, NDEFS(daemon_defs), &df));
    json_t *streams = sophia_streams_stats_json(s->streams);
    sophia_api_streams_stats(api, streams); /* each stream's last replay */
    json_object_update_new(o, json_pack(
        "{s:o,s:o,s:o,s:o,s:o,s:o,s:o}",
        "http", http_stats_json(api),
        "memory", sophia_memory_stats_json(s->memory), "cache",
        s->cache ? sophia_cache_stats_json(s->cache) : json_object(), "streams",
        streams, "websocket",
        s->ws ? sophia_ws_stats_json(s->ws, 10) : json_object(),
        "plugins", plugins_json(api), "reload", reload_json(api)));
    /* each output instance's runner (host/output.h) */
    json_object_set_new(o, "outputs", sophia_host_outputs_stats_json(api->host));
    /* each correlator instance (host/correlate.h) */
    json_object_set_new(o, "correlators",
                        sophia_correlate_stats_json(api->correlate));
    return o;
}

/* ----------------------------------------------------------- /metrics */

static void prom_http(const sophia_api *api, FILE *f)
{
    sophia_http_stats h;
    sophia_http_get_stats(api->http, &h);
    sophia_statdef_prom(f, sophia_http_statdefs, sophia_http_nstatdefs, &h, NULL);
}

static void prom_ws(const sophia_api *api, FILE *f)
{
    sophia_ws_write_prom(api->ws, f);
}

/* A plugin counter (host->counter_add): its name is the plugin's, made
 * at run time, so it is declared here from what the host reports, with
 * no HELP/TYPE head (two instances may count the same name). */
static void prom_plugin_counter(const char *inst, const char *name,
                                double v, void *arg)
{
    char metric[256];
    size_t n = (size_t)snprintf(metric, sizeof(metric), "sophia_plugin_");
    for (const char *p = name; *p && n + 7 < sizeof(metric); p++) /* [a-zA-Z0-9_] */
        metric[n++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                              (*p >= '0' && *p <= '9')
                          ? *p
                          : '_';
    snprintf(metric + n, sizeof(metric) - n, "_total");
    const sophia_statdef d = SOPHIA_STATDEF(NULL, metric, NULL, NULL, NULL, 0,
                                            .kind = SOPHIA_STAT_DOUBLE);
    static const char *const label[] = {"instance"};
    const sophia_stat_row row = {&inst, &v};
    sophia_statdef_prom_family(arg, &d, 1, label, 1, &row, 1);
}

static void prom_plugins(const sophia_api *api, FILE *f)
{
    static const char *const labels[] = {"instance", "plugin", "version", "kind"};
    const sophia_plugin_set *set = api->plugins;
    size_t n = set ? set->count : 0;
    plugin_figs *pf = calloc(n ? n : 1, sizeof(*pf));
    const char **vals = calloc(4 * (n ? n : 1), sizeof(*vals));
    sophia_stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!pf || !vals || !rows)
        n = 0; /* out of memory: the head alone */
    for (size_t i = 0; i < n; i++) {
        const sophia_instance *in = set->items[i];
        pf[i] = plugin_figs_of(in);
        const char **v = &vals[4 * i];
        v[0] = in->name;
        v[1] = in->desc->name;
        v[2] = in->desc->version;
        v[3] = sophia_plugin_kind_name(in->desc->kind);
        rows[i] = (sophia_stat_row){v, &pf[i]};
    }
    sophia_statdef_prom_family(f, plugin_defs, NDEFS(plugin_defs), labels, 4, rows, n);
    free(pf);
    free(vals);
    free(rows);
    sophia_api_reload_stats rs = reload_stats(api);
    reload_figs rf = reload_figs_of(api, &rs);
    sophia_statdef_prom(f, reload_defs, NDEFS(reload_defs), &rf, NULL);
    sophia_host_counters_each(api->host, prom_plugin_counter, f);
}

static void get_metrics(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        sophia_http_reply_error(r, 500, "internal", "out of memory");
        return;
    }
    daemon_figs df = daemon_figs_of(api);
    static const char *const version_label[] = {"version"};
    static const char *const version[] = {SOPHIA_VERSION};
    const sophia_stat_row build_row = {version, &df};
    sophia_statdef_prom_family(f, build_defs, NDEFS(build_defs), version_label, 1,
                               &build_row, 1);
    sophia_statdef_prom(f, daemon_defs, NDEFS(daemon_defs), &df, NULL);
    prom_http(api, f);
    sophia_streams_write_prom(api->streams, f);
    prom_ws(api, f);
    sophia_cache_write_prom(api->cache, f);
    sophia_memory_prom(api->memory, f);
    prom_plugins(api, f);
    sophia_host_outputs_write_prom(api->host, f);
    sophia_correlate_write_prom(api->correlate, f);
    fclose(f);
    sophia_http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", buf, len);
}

/* ---------------------------------------------------------- handlers */

static void get_healthz(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    json_t *down = json_array(), *tiers = json_object();
    const char *err;
    const char *names[2] = {"l2", "l3"};
    int states[2] = {-1, -1};
    if (api->cache) {
        states[0] = sophia_cache_l2_state(api->cache, &err);
        states[1] = sophia_cache_l3_state(api->cache, &err);
    }
    json_object_set_new(tiers, "l1", json_string("up"));
    for (int i = 0; i < 2; i++) {
        json_object_set_new(tiers, names[i],
                            json_string(states[i] < 0 ? "disabled"
                                        : states[i]   ? "up"
                                                      : "down"));
        if (states[i] == 0)
            json_array_append_new(down, json_string(names[i]));
    }
    sophia_streams_sources_down(api->streams, down); /* "redis:<stream>" */
    int cl = sophia_ws_cluster_state(api->ws);
    if (cl >= 0)
        json_object_set_new(tiers, "cluster", json_string(cl ? "up" : "down"));
    if (cl == 0)
        json_array_append_new(down, json_string("cluster"));
    int ok = json_array_size(down) == 0;
    sophia_http_reply_json(
        r, ok ? 200 : 503,
        json_pack("{s:s,s:o,s:o,s:s}", "status", ok ? "ok" : "degraded", "tiers",
                  tiers, "down", down, "version", SOPHIA_VERSION));
}

static void get_stats(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    sophia_http_reply_json(r, 200, sophia_api_stats(api));
}

/* The dashboards that have metric data, for the page's picker (SPEC §13). */
static void get_dashboards(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    sophia_http_reply_json(r, 200, sophia_ws_dashboards_json(api->ws));
}

/* GET of anything else: a dashboard file, or 404. */
static void get_dashboard(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    const char *path = sophia_http_req_path(r);
    dash_file *f = api->dash
                       ? sophia_dict_get(api->dash->files,
                                         strcmp(path, "/") == 0 ? "/index.html" : path)
                       : NULL;
    if (!f) {
        sophia_http_reply_error(r, 404, "not_found", "no endpoint %s", path);
        return;
    }
    char *copy = malloc(f->len ? f->len : 1);
    if (copy)
        memcpy(copy, f->data, f->len);
    sophia_http_reply(r, 200, f->ctype, copy, copy ? f->len : 0);
}

/* /api/ paths no route takes: admitted first, as every /api/ request. */
static void not_found(sophia_http_req *r, void *arg)
{
    (void)arg;
    sophia_http_reply_error(r, 404, "not_found", "no endpoint %s",
                            sophia_http_req_path(r));
}

int sophia_api_admit(sophia_http_req *r, void *arg)
{
    const sophia_api *api = arg;
    if (!authorized(api, r)) {
        sophia_http_reply_error(r, 401, "unauthorized",
                                "missing or wrong bearer token (Authorization: Bearer <token>)");
        return 0;
    }
    return sophia_ratelimit_admit(api->ratelimit, r, api->conf); /* or 429 */
}

int sophia_api_routes(sophia_http_router *rt, sophia_api *api)
{
    void *arg = api;
    const sophia_http_route routes[] = {
        {SOPHIA_HTTP_GET, "/healthz", 0, get_healthz, NULL, arg},
        {SOPHIA_HTTP_GET, "/metrics", 0, get_metrics, NULL, arg},
        {SOPHIA_HTTP_GET, "/api/stats", 0, get_stats, sophia_api_admit, arg},
        {SOPHIA_HTTP_GET, "/api/dashboards", 0, get_dashboards,
         sophia_api_admit, arg},
        {SOPHIA_HTTP_ANY, "/api/", SOPHIA_ROUTE_PREFIX, not_found,
         sophia_api_admit, arg},
        {SOPHIA_HTTP_GET, "/", SOPHIA_ROUTE_PREFIX, get_dashboard, NULL, arg},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        if (sophia_http_route_add(rt, &routes[i]) < 0)
            return -1;
    return 0;
}

/* --------------------------------------------------------- dashboard */

static const char *ctype_of(const char *name)
{
    static const struct {
        const char *ext, *ctype;
    } map[] = {{".html", "text/html; charset=utf-8"},
               {".js", "text/javascript; charset=utf-8"},
               {".css", "text/css; charset=utf-8"},
               {".svg", "image/svg+xml"},
               {".png", "image/png"},
               {".ico", "image/x-icon"},
               {".json", "application/json"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(dot, map[i].ext) == 0)
            return map[i].ctype;
    return "application/octet-stream";
}

static dash_file *read_file(const char *path, const char *name)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    dash_file *f = calloc(1, sizeof(*f));
    struct stat sb;
    if (!f || fstat(fileno(fp), &sb) != 0 || sb.st_size > 8 * 1024 * 1024 ||
        !(f->data = malloc((size_t)sb.st_size + 1)) ||
        fread(f->data, 1, (size_t)sb.st_size, fp) != (size_t)sb.st_size) {
        if (f)
            free(f->data);
        free(f);
        fclose(fp);
        return NULL;
    }
    fclose(fp);
    f->len = (size_t)sb.st_size;
    f->ctype = ctype_of(name);
    return f;
}

static void dash_file_free(void *p)
{
    dash_file *f = p;
    free(f->data);
    free(f);
}

sophia_dash *sophia_api_load_dashboard(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    sophia_dash *dash = calloc(1, sizeof(*dash));
    if (!dash || !(dash->files = sophia_dict_new())) {
        free(dash);
        closedir(d);
        return NULL;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096], key[300];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(key, sizeof(key), "/%s", e->d_name);
        dash_file *f = read_file(path, e->d_name);
        if (f)
            sophia_dict_set(dash->files, key, f);
    }
    closedir(d);
    return dash;
}

void sophia_api_free_dashboard(sophia_dash *dash)
{
    if (!dash)
        return;
    sophia_dict_free(dash->files, dash_file_free);
    free(dash);
}

/* The WebSocket `stats` request: what GET /api/stats answers (the router
 * checks the token's "stats" scope first). */
static void ws_stats(sophia_ws_router *ws, uint64_t client, const char *req_id,
                     json_t *params, void *arg)
{
    (void)params;
    sophia_ws_respond(ws, client, req_id, sophia_api_stats(arg));
}

void sophia_api_stats_ws(sophia_api *api)
{
    sophia_ws_register_method(api->ws, "stats", ws_stats, api);
}
