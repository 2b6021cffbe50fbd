/*
 * api_streams - see api_streams.h.
 *
 * The handler only checks the request and words refusals; what a replay
 * does is ingest/replay.c's. A dry run's request stays open until its
 * replay ends (the front door keeps a request whose client left until it
 * is answered), so its lines come back in one answer; that is why a dry
 * run is bounded by `limit` (default DRY_LIMIT, at most MAX_LIMIT). A
 * replay into a target is answered at once: it may run for long, rate-
 * limited, and its progress is in /api/stats.
 */
#include "http/api_streams.h"

#include <stdlib.h>
#include <string.h>

#include "ingest/replay.h"
#include "plugin/plugin.h"

#define DEFAULT_RATE 1000.0
#define MAX_RATE 100000.0
#define DRY_LIMIT 10000
#define MAX_LIMIT 100000

static const sophia_conf_stream *conf_stream(const sophia_conf *c,
                                             const char *name, size_t len)
{
    for (size_t i = 0; i < c->nstreams; i++)
        if (strlen(c->streams[i].name) == len &&
            !strncmp(c->streams[i].name, name, len))
            return &c->streams[i];
    return NULL;
}

static sophia_instance *find_instance(void *arg, const char *name)
{
    const sophia_api *api = arg;
    return sophia_plugin_set_find(api->plugins, name);
}

static void on_dry_done(void *arg, char *lines, size_t len)
{
    sophia_http_reply(arg, 200, "application/x-ndjson", lines, len);
}

/* "MS-SEQ" / "MS" / "-" / "+" as comparable numbers. */
static void id_value(const char *id, unsigned long long *ms,
                     unsigned long long *seq, int end)
{
    if (!strcmp(id, "-") || !strcmp(id, "+")) {
        *ms = *seq = *id == '-' ? 0 : ~0ULL;
        return;
    }
    char *e;
    *ms = strtoull(id, &e, 10);
    *seq = *e == '-' ? strtoull(e + 1, NULL, 10) : end ? ~0ULL : 0;
}

/* from/to of the body into Redis ids; 0, or answered 400. */
static int range_of(sophia_http_req *r, const json_t *o, char *from,
                    char *to, size_t n)
{
    const char *names[2] = {"from", "to"};
    char *out[2] = {from, to};
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(o, names[i]);
        char text[64], why[200];
        if (!v) {
            snprintf(out[i], n, "%s", i ? "+" : "-");
            continue;
        }
        if (json_is_integer(v))
            snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
        else if (json_is_string(v))
            snprintf(text, sizeof(text), "%s", json_string_value(v));
        else
            text[0] = 0;
        if (sophia_replay_parse_id(text, out[i], n, why, sizeof(why)) < 0) {
            sophia_http_reply_error(r, 400, "bad_range", "'%s': %s", names[i],
                                    json_is_string(v) || json_is_integer(v)
                                        ? why : "must be a string or a number");
            return -1;
        }
    }
    unsigned long long fm, fs, tm, ts;
    id_value(from, &fm, &fs, 0);
    id_value(to, &tm, &ts, 1);
    if (fm > tm || (fm == tm && fs > ts)) {
        sophia_http_reply_error(r, 400, "bad_range",
                                "'from' (%s) is after 'to' (%s)", from, to);
        return -1;
    }
    return 0;
}

/* rate and limit: optional positive numbers; 0, or answered 400. */
static int numbers_of(sophia_http_req *r, const json_t *o, int dry,
                      double *rate, size_t *limit)
{
    const json_t *rv = json_object_get(o, "rate"),
                 *lv = json_object_get(o, "limit");
    *rate = rv ? json_number_value(rv) : DEFAULT_RATE;
    if (rv && (!json_is_number(rv) || *rate <= 0 || *rate > MAX_RATE)) {
        sophia_http_reply_error(r, 400, "bad_rate", "'rate' must be events "
                                "per second, > 0 and at most %.0f", MAX_RATE);
        return -1;
    }
    json_int_t l = lv ? json_integer_value(lv) : dry ? DRY_LIMIT : 0;
    if (lv && (!json_is_integer(lv) || l <= 0 || (dry && l > MAX_LIMIT))) {
        sophia_http_reply_error(r, 400, "bad_limit", "'limit' must be a whole "
                                "number > 0%s", dry ? " and at most 100000 for "
                                "a dry run" : "");
        return -1;
    }
    *limit = (size_t)l;
    return 0;
}

/* The instance that runs the events: `target`, else (dry run) the
 * stream's processor. NULL when answered 400/404. */
static const char *instance_of(sophia_http_req *r, const sophia_api *api,
                               const json_t *o, const sophia_conf_stream *cs,
                               int dry)
{
    const json_t *t = json_object_get(o, "target");
    if (t && !json_is_string(t)) {
        sophia_http_reply_error(r, 400, "bad_target", "'target' must be the "
                                "name of a processor instance");
        return NULL;
    }
    if (!t && !dry) {
        sophia_http_reply_error(r, 400, "bad_target", "say where the events "
                                "go: \"dry_run\": true, or \"target\": an "
                                "instance under plugins.instances");
        return NULL;
    }
    const char *name = t ? json_string_value(t) : cs->processor;
    const sophia_instance *in = find_instance((void *)api, name);
    if (!in) {
        sophia_http_reply_error(r, 404, "unknown_target", "no plugin instance "
                                "'%s' is loaded", name);
        return NULL;
    }
    if (in->desc->kind != SOPHIA_KIND_PROCESSOR) {
        sophia_http_reply_error(r, 400, "bad_target", "instance '%s' is a %s, "
                                "not a processor", name,
                                sophia_plugin_kind_name(in->desc->kind));
        return NULL;
    }
    return name;
}

static void post_replay(sophia_http_req *r, sophia_api *api,
                        const sophia_conf_stream *cs)
{
    size_t len;
    const char *body = sophia_http_req_body(r, &len);
    json_error_t e;
    json_t *o = json_loadb(body ? body : "", len, 0, &e);
    if (!json_is_object(o)) {
        sophia_http_reply_error(r, 400, "bad_json", o ? "the body must be a "
                                "JSON object" : "invalid JSON at line %d "
                                "column %d: %s", e.line, e.column, e.text);
        json_decref(o);
        return;
    }
    const json_t *dv = json_object_get(o, "dry_run");
    int dry = json_is_true(dv);
    char from[64], to[64], why[300];
    double rate;
    size_t limit;
    const char *inst;
    if (dv && !json_is_boolean(dv)) {
        sophia_http_reply_error(r, 400, "bad_dry_run", "'dry_run' must be "
                                "true or false");
        json_decref(o);
        return;
    }
    if (range_of(r, o, from, to, sizeof(from)) < 0 ||
        numbers_of(r, o, dry, &rate, &limit) < 0 ||
        !(inst = instance_of(r, api, o, cs, dry))) {
        json_decref(o);
        return;
    }
    sophia_replay_spec sp = {.conf = api->conf, .stream = cs, .from = from,
                             .to = to, .instance = inst, .dry_run = dry,
                             .rate = rate, .limit = limit,
                             .find = find_instance, .find_arg = api,
                             .done = on_dry_done, .done_arg = r};
    int rc = sophia_replay_start(api->replays, &sp, why, sizeof(why));
    json_decref(o);
    if (rc == 503)
        sophia_http_set_retry_after(r, 1);
    if (rc)
        sophia_http_reply_error(r, rc, rc == 409 ? "replay_running"
                                : rc == 503 ? "unavailable" : "bad_replay",
                                "%s", why);
    else if (!dry)
        sophia_http_reply_json(r, 202, json_pack("{s:o}", "replay",
            sophia_replays_stats_json(api->replays, cs->name)));
}

/* Cancels the stream's running replay; 200 with its state, or 404. */
static void delete_replay(sophia_http_req *r, sophia_api *api,
                          const sophia_conf_stream *cs)
{
    if (sophia_replay_cancel(api->replays, cs->name) < 0) {
        sophia_http_reply_error(r, 404, "no_replay", "no replay of stream "
                                "'%s' is running", cs->name);
        return;
    }
    sophia_http_reply_json(r, 200, json_pack("{s:o}", "replay",
        sophia_replays_stats_json(api->replays, cs->name)));
}

/* /api/streams/{name}/replay */
static void route_streams(sophia_http_req *r, void *arg)
{
    sophia_api *api = arg;
    const char *path = sophia_http_req_path(r) + strlen("/api/streams/");
    const char *slash = strchr(path, '/');
    if (!slash || strcmp(slash, "/replay")) {
        sophia_http_reply_error(r, 404, "not_found", "no endpoint %s (POST "
                                "or DELETE /api/streams/{name}/replay)",
                                sophia_http_req_path(r));
        return;
    }
    int method = sophia_http_req_method(r);
    if (method != SOPHIA_HTTP_POST && method != SOPHIA_HTTP_DELETE) {
        sophia_http_reply_error(r, 405, "method_not_allowed", "replay is a "
                                "POST (start) or a DELETE (cancel)");
        return;
    }
    const sophia_conf_stream *cs =
        conf_stream(api->conf, path, (size_t)(slash - path));
    if (!cs) {
        sophia_http_reply_error(r, 404, "unknown_stream", "no stream '%.*s' "
                                "(streams: in the configuration)",
                                (int)(slash - path), path);
        return;
    }
    if (!api->replays) {
        sophia_http_reply_error(r, 503, "unavailable", "replays are not "
                                "running");
        return;
    }
    if (method == SOPHIA_HTTP_POST)
        post_replay(r, api, cs);
    else
        delete_replay(r, api, cs);
}

void sophia_api_streams_stats(const sophia_api *api, json_t *streams)
{
    const char *name;
    json_t *st;
    json_object_foreach(streams, name, st) {
        json_t *rp = sophia_replays_stats_json(api->replays, name);
        if (rp)
            json_object_set_new(st, "replay", rp);
    }
}

int sophia_api_streams_routes(sophia_http_router *rt, sophia_api *api)
{
    sophia_http_route route = {SOPHIA_HTTP_ANY, "/api/streams/",
                               SOPHIA_ROUTE_PREFIX, route_streams,
                               sophia_api_admit, api};
    return sophia_http_route_add(rt, &route) < 0 ? -1 : 0;
}
