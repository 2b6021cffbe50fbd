/*
 * main - sophiad's command line, start-up order and graceful shutdown.
 *
 * Start-up validates everything before opening a socket: configuration,
 * then every plugin (ABI, options, init), then the streams that bind them.
 * `--check` stops there. Shutdown runs the other way: stop accepting,
 * process what was accepted, send it, close WebSockets with 1001, exit 0.
 *
 * Everything the daemon holds is one sophia_server (server.h) on main()'s
 * stack, handed to each callback registered here as its void *arg: no
 * file-scope state, so what a callback may touch is what it is given.
 */
#include <getopt.h>
#include <signal.h>
#ifndef SOPHIA_WITH_JEMALLOC
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SOPHIA_WITH_JEMALLOC
/* jemalloc reads this at its first allocation (MALLOC_CONF in the
 * environment still wins). An ingest POST allocates its events' JSON,
 * their actions and Redis replies in bursts of the same few sizes and
 * frees them a loop turn or two later, in the same bursts: with
 * jemalloc's default thread cache (at most ~200 cached objects a size)
 * each burst flushed to the arena and refilled from it. Larger caches
 * keep that on the thread's free list: 4.2% fewer instructions per event
 * with the default tiers (callgrind, tests/bench/ingest.mjs's shape).
 * The cache's incremental GC ran every 64 KiB allocated, more than once a
 * 50-event POST, and each run flushed a size's objects to the arena and
 * later refilled them: little work on average (0.3% of instructions), but
 * ~160 lines of code and ~120 of data a POST touched only for that.
 * Every 4 MiB (instr.sh --footprint, tiers off): code 1,463 -> 1,301
 * lines a POST, data 1,836 -> 1,715. */
__attribute__((visibility("default"))) const char *const malloc_conf =
    "tcache_nslots_small_min:256,tcache_nslots_small_max:2048,"
    "tcache_gc_incr_bytes:4194304";
#endif

#include "http/api.h"
#include "http/api_cache.h"
#include "http/api_ingest.h"
#include "http/api_memory.h"
#include "http/api_streams.h"
#include "http/router.h"
#include "cache/cache.h"
#include "cluster/cluster.h"
#include "conf/config.h"
#include "conf/config_doc.h"
#include "lib/hash.h"
#include "host/consolidate_run.h"
#include "host/correlate.h"
#include "host/host.h"
#include "host/output.h"
#include "event/upstream.h"
#include "http/http.h"
#include "http/http_tls.h"
#include "lib/log.h"
#include "event/loop.h"
#include "memory/memory.h"
#include "lib/notify.h"
#include "lib/paths.h"
#include "plugin/plugin.h"
#include "daemon/reload.h"
#include "daemon/server.h"
#include "http/ratelimit.h"
#include "ingest/hooks.h"
#include "ingest/replay.h"
#include "daemon/replay_cli.h"
#include "ingest/stream.h"
#include "daemon/version.h"
#include "ws/ws.h"

#define SHUTDOWN_GRACE_MS 3000

typedef struct cli {
    const char *config;
    const char *listen;
    const char *log_level;
    int check;
} cli;

enum { OPT_LISTEN = 256, OPT_CHECK, OPT_LOG, OPT_VERSION, OPT_HELP, OPT_MAN,
       OPT_MAN_CONFIG };

/* The command line, once: getopt's table, --help and sophiad(8) are all
 * made from it. help == NULL: hidden (the build's man page generators). */
typedef struct cli_opt {
    const char *name;
    int id;          /* getopt's value: the short option, or OPT_* */
    const char *arg; /* argument name, NULL for a flag */
    const char *help;
} cli_opt;

static const cli_opt cli_opts[] = {
    {"config", 'c', "FILE", "configuration file (default config/sophia.yaml; "
                            "sophiad.service passes /etc/sophia/sophia.yaml)"},
    {"listen", OPT_LISTEN, "HOST:PORT", "overrides server.listen and SOPHIA_LISTEN"},
    {"check", OPT_CHECK, NULL, "validate configuration and plugins, then exit"},
    {"log-level", OPT_LOG, "LEVEL", "overrides log.level: debug, info, warn or error"},
    {"version", OPT_VERSION, NULL, "print the version, plugin SDK ABI and the "
                                   "libraries' versions, then exit"},
    {"help", 'h', NULL, "print this help, then exit"},
    {"man", OPT_MAN, NULL, NULL},               /* roff sophiad(8) */
    {"man-config", OPT_MAN_CONFIG, NULL, NULL}, /* roff sophia.yaml(5) */
};
#define NCLI (sizeof(cli_opts) / sizeof(cli_opts[0]))

static const char *const env_help[][2] = {
    {"SOPHIA_REDIS_URL", "the L2 tier's Redis URL (empty disables L2)"},
    {"SOPHIA_PG_URL", "the L3 tier's PostgreSQL URL (empty disables L3)"},
    {"SOPHIA_LISTEN", "HOST:PORT, replaces server.listen"},
    {"SOPHIA_CLUSTER_REDIS_URL", "replaces cluster.redis"},
    {"NOTIFY_SOCKET", "set by systemd: READY=1, RELOADING=1, STOPPING=1 and "
                      "STATUS= are sent there"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sophiad [OPTION]...\n"
                 "       sophiad replay STREAM ... (sophiad replay --help)\n\n");
    for (size_t i = 0; i < NCLI; i++) {
        const cli_opt *o = &cli_opts[i];
        char flag[64];
        if (!o->help)
            continue;
        int n = o->id < 256 ? snprintf(flag, sizeof(flag), "-%c, ", o->id)
                            : snprintf(flag, sizeof(flag), "    ");
        snprintf(flag + n, sizeof(flag) - (size_t)n, "--%s%s%s", o->name,
                 o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-26s %s\n", flag, o->help);
    }
    fprintf(out, "\nenvironment:\n");
    for (size_t i = 0; i < sizeof(env_help) / sizeof(env_help[0]); i++)
        fprintf(out, "  %-26s %s\n", env_help[i][0], env_help[i][1]);
    fprintf(out, "and the secret_env variables the configuration names.\n");
}

/* roff text: '-' is a hyphen unless escaped. */
static void roff(FILE *out, const char *s)
{
    for (; *s; s++)
        fputs(*s == '-' ? "\\-" : (char[2]){*s, 0}, out);
}

/* sophiad(8), from the same table as --help. */
static void man_daemon(FILE *out)
{
    fputs(".TH SOPHIAD 8 \"\" \"sophiad " SOPHIA_VERSION "\" \"System Administration\"\n"
          ".SH NAME\nsophiad \\- Sophia real-time host daemon\n"
          ".SH SYNOPSIS\n.B sophiad\n[\\fIOPTION\\fR]...\n"
          ".SH DESCRIPTION\n"
          ".B sophiad\nreceives events over HTTP (/ingest, webhooks, Redis streams,\n"
          "StatsD), runs them through processor plugins, serves a three-tier cache\n"
          "(memory, Redis, PostgreSQL) and contextual memory, and pushes results to\n"
          "dashboards over WebSockets. Its configuration is described in\n"
          ".BR sophia.yaml (5).\n"
          ".PP\nStart-up checks the whole configuration and every plugin before\n"
          "opening a socket. SIGHUP reloads the configuration (a refused one keeps\n"
          "the running one); SIGTERM or SIGINT drains what was accepted and exits 0.\n"
          "Under systemd (Type=notify) it reports READY=1 once listening,\n"
          "RELOADING=1 and READY=1 around a reload, and STOPPING=1.\n"
          ".SH OPTIONS\n", out);
    for (size_t i = 0; i < NCLI; i++) {
        const cli_opt *o = &cli_opts[i];
        if (!o->help)
            continue;
        fputs(".TP\n", out);
        if (o->id < 256)
            fprintf(out, "\\fB\\-%c\\fR, ", o->id);
        fputs("\\fB\\-\\-", out);
        roff(out, o->name);
        fputs("\\fR", out);
        if (o->arg) {
            fputs(" \\fI", out);
            roff(out, o->arg);
            fputs("\\fR", out);
        }
        fputc('\n', out);
        roff(out, o->help);
        fputs(".\n", out);
    }
    fputs(".SH ENVIRONMENT\n", out);
    for (size_t i = 0; i < sizeof(env_help) / sizeof(env_help[0]); i++) {
        fprintf(out, ".TP\n.B %s\n", env_help[i][0]);
        roff(out, env_help[i][1]);
        fputs(".\n", out);
    }
    fputs(".PP\nand the variables the configuration's secret_env keys name.\n"
          ".SH SIGNALS\n.TP\n.B SIGHUP\nreload the configuration.\n"
          ".TP\n.B SIGTERM, SIGINT\ngraceful shutdown.\n"
          ".SH EXIT STATUS\n0 after a clean shutdown or a passing \\-\\-check;\n"
          "1 when the configuration or a plugin is refused; 2 for a bad command line.\n"
          ".SH FILES\n"
          ".TP\n.I /etc/sophia/sophia.yaml\nconfiguration (the package's).\n"
          ".TP\n.I /etc/default/sophia\nenvironment for sophiad.service.\n"
          ".TP\n.I /var/lib/sophia\nstate: the memory index.\n"
          ".TP\n.I /usr/lib/sophia/plugins\nthe bundled plugins.\n"
          ".SH SEE ALSO\n.BR sophia.yaml (5),\n.BR systemctl (1)\n", out);
}

/* Returns -1 to continue, else an exit code. */
static int parse_args(int argc, char **argv, cli *c)
{
    struct option opts[NCLI + 1];
    for (size_t i = 0; i < NCLI; i++)
        opts[i] = (struct option){cli_opts[i].name,
                                  cli_opts[i].arg ? required_argument : no_argument,
                                  NULL, cli_opts[i].id};
    opts[NCLI] = (struct option){NULL, 0, NULL, 0};
    c->config = "config/sophia.yaml";
    int o;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': c->config = optarg; break;
        case OPT_LISTEN: c->listen = optarg; break;
        case OPT_CHECK: c->check = 1; break;
        case OPT_LOG: c->log_level = optarg; break;
        case OPT_VERSION: sophia_version_print(stdout); return 0;
        case OPT_MAN: man_daemon(stdout); return 0;
        case OPT_MAN_CONFIG:
            /* Undocumented keys are named on stderr and marked in the
             * page; unit.test_config_doc fails on them, the build not. */
            sophia_conf_doc_man(stdout, stderr);
            return 0;
        case 'h':
        case OPT_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sophiad: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (c->log_level && sophia_log_parse_level(c->log_level) < 0) {
        fprintf(stderr, "sophiad: --log-level must be debug, info, warn or error\n");
        return 2;
    }
    return -1;
}

/* server.tls's files, checked by the http layer as the file loads. */
static int check_tls_files(void *arg, const char *cert, const char *key,
                           char *why, size_t n)
{
    (void)arg;
    return (int)sophia_tls_check_files(cert, key, why, n);
}

static sophia_conf *load_conf(const sophia_server *s, const cli *a,
                              sophia_diag *d)
{
    sophia_conf *c = sophia_conf_load_with(a->config, &s->load_opts, d);
    if (!c)
        return NULL;
    sophia_conf_apply_env(c, a->listen);
    sophia_conf_add_plugin_dir(c, sophia_paths_plugin_dir());
    sophia_conf_validate(c, d);
    return c;
}

static void print_check(const sophia_conf *c, const sophia_plugin_set *set)
{
    /* Where modules were looked for, in order: plugins.path, then the
     * bundled plugins' directory. */
    for (size_t i = 0; i < c->nplugin_path; i++)
        printf("plugin dir: %s%s\n", c->plugin_path[i],
               strcmp(c->plugin_path[i], sophia_paths_plugin_dir()) == 0
                   ? " (default)" : "");
    for (size_t i = 0; i < set->count; i++) {
        const sophia_instance *in = set->items[i];
        printf("%s: %s %s %s (%s)\n", in->name, sophia_plugin_kind_name(in->desc->kind),
               in->desc->name, in->desc->version, in->file);
        sophia_plugin_print_options(in, stdout);
    }
}

/* --------------------------------------------------------- shutdown */

static void on_cache_flushed(void *arg, int rc)
{
    sophia_server *s = arg;
    (void)rc;
    s->cache_flushed = 1;
}

static void on_shutdown_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sophia_server *s = arg;
    sophia_ws_stats w;
    sophia_ws_get_stats(s->ws, &w);
    int idle = w.connections == 0 && s->cache_flushed &&
               !sophia_streams_pending(s->streams);
    if (idle && !s->correlate_saved) { /* after the last commit */
        sophia_correlate_snapshot_all(s->correlate);
        s->correlate_saved = 1;
    }
    if ((idle && !sophia_correlate_writes_pending(s->correlate)) ||
        sophia_now_mono_us() > s->shutdown_deadline_us) {
        sophia_loop_stop(s->loop);
        return;
    }
    struct timeval tv = {0, 20000};
    evtimer_add(s->shutdown_ev, &tv);
}

static void begin_shutdown(sophia_server *s, int sig)
{
    if (s->shutting_down)
        return;
    s->shutting_down = 1;
    sophia_http_closing(s->http);
    sophia_notify_stopping();
    sophia_info("main", "msg=\"shutting down\" signal=%d pending=%zu", sig,
                sophia_streams_pending(s->streams));
    sophia_streams_drain(s->streams); /* what was accepted gets processed */
    sophia_ws_close_all(s->ws);
    sophia_cache_flush(s->cache, on_cache_flushed, s);
    s->shutdown_deadline_us = sophia_now_mono_us() + SHUTDOWN_GRACE_MS * 1000;
    s->shutdown_ev = evtimer_new(sophia_loop_base(s->loop), on_shutdown_tick, s);
    on_shutdown_tick(-1, 0, s);
}

static void on_signal(int sig, void *arg)
{
    sophia_server *s = arg;
    if (sig == SIGHUP) {
        if (!s->shutting_down)
            sophia_reload(s->reloader); /* one at a time: on the loop */
        return;
    }
    begin_shutdown(s, sig);
}

/* ------------------------------------------------------------ start */

static const char *find_share_dir(const sophia_conf *c)
{
    return c->server.share_dir ? c->server.share_dir : sophia_paths_share_dir();
}

/* Cross-node L1 coherence: the cache tells the cluster what it dropped,
 * the cluster tells the cache what other nodes dropped. Both ends are
 * no-ops without cluster.redis. */
static void cache_to_cluster(void *ws, const char *key_or_tag, int is_tag)
{
    sophia_cluster_broadcast_invalidate(sophia_ws_cluster(ws), key_or_tag,
                                        is_tag);
}

static void cluster_to_cache(const char *key_or_tag, int is_tag, void *arg)
{
    sophia_cache_l1_invalidate_local(arg, key_or_tag, is_tag);
}

/* Flushes to WebSocket clients are paced while events wait (ws.h). */
static int streams_backlog(void *streams)
{
    return sophia_streams_pending(streams) > 0;
}

/* /api/stats "reload" and the reload counters of /metrics. */
static void reload_stats(void *arg, sophia_api_reload_stats *out)
{
    const sophia_server *s = arg;
    *out = (sophia_api_reload_stats){
        .reloads = s->reloads,
        .failures = s->reload_failures,
        .plugin_load_failures = s->plugin_load_failures,
        .last_error = sophia_reload_last_error(s->reloader),
        .last_at_us = sophia_reload_last_at(s->reloader),
    };
}

/* A reload swapped configuration and plugins: the holders take them. */
static void on_reload_swap(void *arg, const sophia_conf *c,
                           const sophia_plugin_set *p)
{
    sophia_server *s = arg;
    s->api.conf = c;
    s->api.plugins = p;
    sophia_http_set_conf(s->http, c);
    if (sophia_upstreams_set_defaults(s->upstreams, c->redis_url, c->pg_url) < 0)
        sophia_warn("reload", "msg=\"outputs keep the old redis.url and postgres.url: out of memory\"");
}

static void on_correlate_durable(void *arg, uint64_t upto)
{
    sophia_streams_durable(arg, upto);
}

void sophia_server_wire_correlate(sophia_server *s)
{
    /* NULL: the streams' hook stays NULL, so the hot path pays one check */
    sophia_streams_on_commit(s->streams,
                             s->correlate ? sophia_correlate_on_commit : NULL,
                             s->correlate);
    sophia_correlate_on_durable(s->correlate, on_correlate_durable,
                                s->streams);
    s->api.correlate = s->correlate;
}

/* The API's view of the daemon, then each owner registers its endpoints
 * (the token check guards /api/ and /ingest/) and WebSocket methods. */
static int wire_api(sophia_server *s)
{
    sophia_api *api = &s->api;
    *api = (sophia_api){.conf = s->conf, .plugins = s->plugins,
                        .streams = s->streams, .cache = s->cache,
                        .memory = s->memory, .ws = s->ws, .dash = api->dash,
                        .reload_stats = reload_stats, .reload_arg = s,
                        .host = s->host_rt,
                        .ratelimit = sophia_ratelimit_new(),
                        .replays = sophia_replays_new(
                            sophia_loop_base(s->loop), s->conf->redis_url),
                        .slack = sophia_slack_filter_new()};
    if (!(s->reloader = sophia_reloader_new(s)) || !api->ratelimit ||
        !api->slack || !api->replays)
        return -1;
    sophia_reload_on_swap(s->reloader, on_reload_swap, s);
    sophia_api_stats_ws(api);    /* WS request method stats */
    sophia_api_cache_ws(api, 1); /* WS request method cache.get */
    if (s->memory)
        sophia_api_memory_ws(api, 1); /* memory.search */
    s->routes = sophia_http_router_new();
    return s->routes && sophia_api_routes(s->routes, api) == 0 &&
                   sophia_api_ingest_routes(s->routes, api) == 0 &&
                   sophia_api_cache_routes(s->routes, api) == 0 &&
                   sophia_api_memory_routes(s->routes, api) == 0 &&
                   sophia_api_streams_routes(s->routes, api) == 0
               ? 0
               : -1;
}

static int start_http(sophia_server *s)
{
    sophia_http_opts o = {.conf = s->conf, .loop = s->loop, .ws = s->ws,
                          .host = s->host, .port = s->port, .routes = s->routes};
    if (!(s->http = sophia_http_new(&o)) || sophia_http_start(s->http) < 0)
        return -1;
    s->port = sophia_http_port(s->http);
    s->api.http = s->http;
    return 0;
}

static int start(sophia_server *s)
{
    const char *share = find_share_dir(s->conf);
    if (!(s->api.dash = sophia_api_load_dashboard(share)))
        sophia_warn("main", "msg=\"no dashboard files\" dir=%s", share);
    s->loop = sophia_loop_new();
    if (!s->loop)
        return -1;
    struct event_base *base = sophia_loop_base(s->loop);
    sophia_host_timers_bind(s->host_rt, base); /* plugins' timers (SDK 1.1) */
    s->ws = sophia_ws_router_new(s->loop, s->conf, s->conf->ws.max_queue);
    s->cache = sophia_cache_new(s->conf, base);
    sophia_cache_bind_plugins(s->cache, s->plugins);
    sophia_cache_on_invalidate(s->cache, cache_to_cluster, s->ws);
    sophia_cluster_on_invalidate(sophia_ws_cluster(s->ws), cluster_to_cache,
                                 s->cache);
    s->memory = sophia_memory_new(s->conf, base, s->plugins, s->cache);
    sophia_memory_set_cons_runner(s->memory, sophia_host_consolidate_run, NULL);
    s->upstreams = sophia_upstreams_new(base, s->conf->redis_url,
                                        s->conf->pg_url);
    sophia_host_set_env(s->host_rt, &(sophia_host_env){s->cache, s->ws,
                                                       s->memory, s->upstreams});
    sophia_diag d;
    sophia_diag_init(&d);
    s->streams = sophia_streams_new(s->conf, s->plugins, s->loop, base, &d);
    s->correlate = sophia_correlate_new(s->conf, s->plugins, base, &d);
    sophia_diag_free(&d); /* already validated by --check's path */
    if (!s->ws || !s->cache || !s->streams || !s->upstreams ||
        (s->conf->ncorrelators && !s->correlate))
        return -1;
    sophia_ws_set_backlog(s->ws, streams_backlog, s->streams);
    sophia_host_set_alert_route(s->host_rt, sophia_streams_alert_outputs,
                                s->streams);
    if (wire_api(s) < 0 || sophia_loop_signals(s->loop, on_signal, s) < 0)
        return -1;
    sophia_server_wire_correlate(s); /* after wire_api: s->api filled */
    if (start_http(s) < 0)
        return -1;
    s->started_us = s->api.started_us = sophia_now_wall_us();
    sophia_info("main", "msg=\"listening\" addr=%s:%d plugins=%zu streams=%zu version=%s",
                s->host, s->port, s->plugins->count,
                sophia_streams_count(s->streams), SOPHIA_VERSION);
    /* Only now: the socket accepts and every plugin passed init(). */
    sophia_notify_ready("running on %s:%d (%zu plugins, %zu streams)", s->host,
                        s->port, s->plugins->count,
                        sophia_streams_count(s->streams));
    return 0;
}

static void stop(sophia_server *s)
{
    sophia_api *api = &s->api;
    sophia_replays_free(api->replays); /* answers dry runs: before http */
    api->replays = NULL;
    sophia_api_memory_ws(api, 0);
    api->memory = NULL;
    sophia_host_set_env(s->host_rt, &(sophia_host_env){s->cache, s->ws, NULL,
                                                       s->upstreams});
    sophia_memory_free(s->memory); /* answers what it still holds */
    s->memory = NULL;
    sophia_http_stop(s->http);
    s->http = NULL;
    api->http = NULL;
    sophia_http_router_free(s->routes);
    s->routes = NULL;
    sophia_ws_set_backlog(s->ws, NULL, NULL); /* the streams go first */
    sophia_host_set_alert_route(s->host_rt, NULL, NULL);
    sophia_streams_free(s->streams);
    sophia_correlate_free(s->correlate); /* no commit reaches it now */
    s->correlate = NULL;
    api->correlate = NULL;
    /* Outputs' requests answered (each plugin hears of it), then their
     * runners end what they hold; the loop is still there for both. */
    sophia_host_set_env(s->host_rt,
                        &(sophia_host_env){s->cache, s->ws, NULL, NULL});
    sophia_upstreams_free(s->upstreams);
    s->upstreams = NULL;
    sophia_host_outputs_free(s->host_rt);
    sophia_api_cache_ws(api, 0); /* before its router goes */
    if (s->cache)
        sophia_cache_on_invalidate(s->cache, NULL, NULL); /* and the cluster */
    sophia_host_set_env(s->host_rt, NULL); /* nothing queued reaches them now */
    sophia_ws_router_free(s->ws); /* and its cluster, hook and all */
    sophia_cache_free(s->cache);
    if (s->shutdown_ev)
        event_free(s->shutdown_ev);
    s->shutdown_ev = NULL;
    /* retired plugins (their callbacks ran), before the loop goes */
    sophia_reloader_free(s->reloader);
    s->reloader = NULL;
    sophia_host_timers_bind(s->host_rt, NULL);
    sophia_loop_free(s->loop);
    sophia_api_free_dashboard(api->dash);
    api->dash = NULL;
    sophia_ratelimit_free(api->ratelimit);
    api->ratelimit = NULL;
    sophia_slack_filter_free(api->slack);
    api->slack = NULL;
}

/* Validates config, plugins and streams; every problem goes to `d`. */
static int prepare(sophia_server *s, const cli *a, sophia_diag *d)
{
    s->conf = load_conf(s, a, d);
    if (!s->conf || d->count)
        return -1;
    if (!a->log_level)
        sophia_log_set_level(s->conf->log_level);
    if (sophia_conf_split_listen(s->conf->server.listen, &s->host, &s->port) < 0)
        return -1;
    sophia_check_secrets(s->conf, s->host, d);
    if (d->count)
        return -1;
    s->plugins = sophia_plugin_set_load(s->conf,
                                        sophia_host_rt_table(s->host_rt), d);
    if (!s->plugins) {
        s->plugin_load_failures++;
        return -1;
    }
    /* Streams need the loaded set to check processor kinds. */
    struct event_base *probe = event_base_new();
    sophia_streams *st = sophia_streams_new(s->conf, s->plugins, NULL, probe, d);
    sophia_streams_free(st);
    /* Correlators need it to check their kinds (builds nothing). */
    sophia_correlate_free(sophia_correlate_new(s->conf, s->plugins, NULL, d));
    event_base_free(probe);
    sophia_memory_check_embedder(s->conf, s->plugins, d);
    return d->count ? -1 : 0;
}

int main(int argc, char **argv)
{
#ifndef SOPHIA_WITH_JEMALLOC
    /* Built without jemalloc (cmake/SophiaDeps.cmake): no fastbins. lws
     * allocates each HTTP request's header table (>1 KiB), and glibc
     * first consolidates every fastbin chunk the previous batch's JSON
     * frees left - 6% of the CPU at 20k events/s in 100-event POSTs.
     * tcache still serves the small sizes; -8% CPU per event measured. */
    mallopt(M_MXFAST, 0);
#endif
    if (argc > 1 && !strcmp(argv[1], "replay")) /* a client, not a daemon */
        return sophia_replay_cli(argc - 1, argv + 1);
    cli a = {0};
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if (a.log_level)
        sophia_log_set_level((sophia_log_lvl)sophia_log_parse_level(a.log_level));

    /* The hash key of every client-keyed table (hash.h), read once now,
     * before any worker thread or table exists. */
    (void)sophia_hash_process_key();
    sophia_server srv = {.load_opts = {.tls_check = check_tls_files}};
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_plugin_system_init();
    if (!(srv.host_rt = sophia_host_rt_new())) {
        fprintf(stderr, "sophiad: out of memory\n");
        return 1;
    }
    rc = prepare(&srv, &a, &d);
    if (rc < 0 || a.check) {
        if (rc < 0) {
            sophia_diag_print(&d, stderr);
            if (!d.count)
                fprintf(stderr, "%s: invalid configuration\n", a.config);
        } else {
            print_check(srv.conf, srv.plugins);
            printf("%s: ok\n", a.config);
        }
    } else if ((rc = start(&srv)) == 0) {
        if (!srv.conf->server.tokens)
            sophia_warn("main", "msg=\"ingest and API are open: no tokens configured (loopback only)\"");
        rc = sophia_loop_run(srv.loop) < 0 ? -1 : 0;
        sophia_info("main", "msg=\"stopped\"");
    }
    if (!a.check && srv.loop)
        stop(&srv);
    sophia_reloader_free(srv.reloader); /* a start that failed early */
    sophia_plugin_set_free(srv.plugins);
    sophia_plugin_system_shutdown();
    sophia_host_rt_free(srv.host_rt); /* after its plugins: their release */
    sophia_conf_free(srv.conf);
    free(srv.host);
    sophia_diag_free(&d);
    return rc < 0 ? 1 : 0;
}
