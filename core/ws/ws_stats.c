/*
 * ws_stats - the router's figures: the counters and the busiest topics
 * for /api/stats and the WebSocket `stats` request, the /metrics lines
 * api.c does not write itself, the dashboards list of /api/dashboards,
 * and the cluster link's state for /healthz. Read-only: nothing here
 * changes the router.
 */
#include "ws/ws.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "lib/dict.h"
#include "ws/ws_latest.h"
#include "ws/ws_priv.h"

void sophia_ws_get_stats(const sophia_ws_router *r, sophia_ws_stats *out)
{
    *out = r->st;
    out->cluster_in = sophia_cluster_received(r->cluster);
    out->topics = sophia_dict_size(r->topics);
}

/* ------------------------------------------------------------ figures */

/* Each figure of sophia_ws_stats, declared once for both /api/stats (the
 * `websocket` object, or its `cluster` object) and /metrics, in the order
 * both list them. prom NULL: /api/stats only. */
typedef struct ws_figure {
    const char *key;  /* /api/stats name */
    int cluster;      /* in websocket.cluster (only with a cluster) */
    const char *prom; /* /metrics name */
    int gauge;        /* else a counter */
    const char *help;
    size_t off;       /* in sophia_ws_stats */
} ws_figure;

#define WS_FIG(key, cl, prom, gauge, help, field)                            \
    {key, cl, prom, gauge, help, offsetof(sophia_ws_stats, field)}

static const ws_figure figures[] = {
    WS_FIG("connections", 0, "sophia_ws_connections", 1,
           "Open WebSocket connections.", connections),
    WS_FIG("connections_total", 0, NULL, 0, NULL, connections_total),
    WS_FIG("subscriptions", 0, "sophia_ws_subscriptions", 1,
           "Open subscriptions.", subscriptions),
    WS_FIG("messages_in", 0, "sophia_ws_messages_in_total", 0,
           "Messages received from clients.", messages_in),
    WS_FIG("messages_out", 0, "sophia_ws_messages_out_total", 0,
           "Messages written to clients.", messages_out),
    WS_FIG("dropped", 0, "sophia_ws_dropped_total", 0,
           "Messages dropped with slow clients.", dropped),
    WS_FIG("slow_closed", 0, "sophia_ws_slow_closed_total", 0,
           "Clients closed for a full send queue.", slow_closed),
    WS_FIG("published", 0, "sophia_ws_published_total", 0, "Publish calls.",
           published),
    WS_FIG("coalesced", 0, "sophia_ws_coalesced_total", 0,
           "Queued metric updates replaced by a newer value.", coalesced),
    WS_FIG("recovered", 0, "sophia_ws_recovered_total", 0,
           "Messages replayed to clients subscribing with since.", recovered),
    WS_FIG("resyncs", 0, "sophia_ws_resyncs_total", 0,
           "Resync answers: history aged out.", resyncs),
    WS_FIG("auth_failures", 0, "sophia_ws_auth_failures_total", 0,
           "Bad, expired or missing WebSocket tokens.", auth_failures),
    WS_FIG("forbidden", 0, "sophia_ws_forbidden_total", 0,
           "Subscriptions and requests refused by the token's scopes.", forbidden),
    WS_FIG("refused", 0, "sophia_ws_refused_total", 0,
           "WebSocket upgrades refused.", refused),
    WS_FIG("pings", 0, NULL, 0, NULL, pings),
    WS_FIG("dead_closed", 0, "sophia_ws_dead_closed_total", 0,
           "Connections closed for a missed pong.", dead_closed),
    WS_FIG("out", 1, "sophia_ws_cluster_out_total", 0,
           "Publishes sent through Redis.", cluster_out),
    WS_FIG("in", 1, "sophia_ws_cluster_in_total", 0,
           "Publishes received from Redis.", cluster_in),
    WS_FIG("fallback", 1, NULL, 0, NULL, cluster_fallback),
    WS_FIG("local", 1, "sophia_ws_cluster_local_total", 0,
           "Publishes delivered locally: no other node on the channel.",
           cluster_alone),
    WS_FIG("topics", 0, "sophia_ws_topics", 1,
           "Topics held (seq and history).", topics),
    WS_FIG("topics_freed", 0, "sophia_ws_topics_freed_total", 0,
           "Idle topics freed once their history aged out.", topics_freed),
    WS_FIG("topics_refused", 0, "sophia_ws_topics_refused_total", 0,
           "Publishes to a new topic refused by websocket.max_topics "
           "(delivered live to pattern subscribers, not recorded).",
           topics_refused),
};

/* A field added to sophia_ws_stats without a line above fails here. */
_Static_assert(sizeof(figures) / sizeof(figures[0]) ==
                   sizeof(sophia_ws_stats) / sizeof(uint64_t),
               "every sophia_ws_stats field is declared in figures[]");

static uint64_t figure_value(const sophia_ws_stats *st, const ws_figure *fg)
{
    return *(const uint64_t *)((const char *)st + fg->off);
}

/* ---------------------------------------------------------- stats JSON */

typedef struct topic_count {
    const char *name;
    size_t n;
} topic_count;

typedef struct top_acc {
    topic_count *v;
    size_t n, cap;
} top_acc;

static void top_add(top_acc *a, const char *name, size_t n)
{
    if (n == 0)
        return;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        topic_count *v = realloc(a->v, cap * sizeof(*v));
        if (!v)
            return;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = (topic_count){name, n};
}

static void top_topic(const char *key, void *val, void *arg)
{
    top_add(arg, key, ((ws_topic *)val)->subs.n);
}

static int top_cmp(const void *a, const void *b)
{
    size_t x = ((const topic_count *)a)->n, y = ((const topic_count *)b)->n;
    return x > y ? -1 : x < y;
}

static void dashboard_entry(const char *topic, size_t metrics,
                            int64_t updated_ms, void *arg)
{
    char when[40];
    time_t sec = (time_t)(updated_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03dZ", (int)(updated_ms % 1000));
    json_array_append_new(arg, json_pack("{s:s,s:I,s:s}", "id", topic + 10,
                                         "metrics", (json_int_t)metrics,
                                         "updated_at", when));
}

static int by_id(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "id")));
}

json_t *sophia_ws_dashboards_json(const sophia_ws_router *r)
{
    json_t *list = json_array(), *sorted = json_array();
    ws_latest_each(r ? r->latest : NULL, dashboard_entry, list);
    size_t n = json_array_size(list);
    json_t **v = n ? calloc(n, sizeof(*v)) : NULL;
    for (size_t i = 0; v && i < n; i++)
        v[i] = json_array_get(list, i);
    if (v)
        qsort(v, n, sizeof(*v), by_id);
    for (size_t i = 0; v && i < n; i++)
        json_array_append(sorted, v[i]);
    free(v);
    json_decref(list);
    return json_pack("{s:o}", "dashboards", sorted);
}

uint64_t sophia_ws_topic_seq(const sophia_ws_router *r, const char *topic)
{
    const ws_topic *t = sophia_dict_get(r->topics, topic);
    return t ? t->seq : 0;
}

struct sophia_cluster *sophia_ws_cluster(const sophia_ws_router *r)
{
    return r ? r->cluster : NULL;
}

int sophia_ws_cluster_state(const sophia_ws_router *r)
{
    if (!r || !r->cluster)
        return -1;
    return sophia_cluster_ready(r->cluster) ? 1 : 0;
}

/* top_n topics by subscribers as {topic: subscribers}. */
static json_t *top_topics_json(const sophia_ws_router *r, size_t top_n)
{
    top_acc a = {0};
    sophia_dict_each(r->topics, top_topic, &a);
    if (a.n > 1)
        qsort(a.v, a.n, sizeof(*a.v), top_cmp);
    json_t *top = json_object();
    for (size_t i = 0; i < a.n && i < top_n; i++)
        json_object_set_new(top, a.v[i].name, json_integer((json_int_t)a.v[i].n));
    free(a.v);
    return top;
}

json_t *sophia_ws_stats_json(const sophia_ws_router *r, size_t top_n)
{
    sophia_ws_stats st;
    sophia_ws_get_stats(r, &st);
    json_t *o = json_object(), *cl = NULL;
    if (r->cluster)
        cl = json_pack("{s:s,s:b,s:b}", "node", sophia_cluster_node_id(r->cluster),
                       "up", sophia_cluster_ready(r->cluster), "alone",
                       sophia_cluster_alone(r->cluster));
    for (size_t i = 0; i < sizeof(figures) / sizeof(figures[0]); i++) {
        const ws_figure *fg = &figures[i];
        json_t *into = fg->cluster ? cl : o;
        if (into)
            json_object_set_new(into, fg->key,
                                json_integer((json_int_t)figure_value(&st, fg)));
    }
    json_object_set_new(o, "top_topics", top_topics_json(r, top_n));
    if (cl)
        json_object_set_new(o, "cluster", cl);
    return o;
}

void sophia_ws_write_prom(const sophia_ws_router *r, FILE *f)
{
    sophia_ws_stats st = {0};
    if (r)
        sophia_ws_get_stats(r, &st);
    for (size_t i = 0; i < sizeof(figures) / sizeof(figures[0]); i++) {
        const ws_figure *fg = &figures[i];
        if (!fg->prom)
            continue;
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", fg->prom, fg->help,
                fg->prom, fg->gauge ? "gauge" : "counter", fg->prom,
                (unsigned long long)figure_value(&st, fg));
    }
    fprintf(f, "# HELP sophia_ws_topic_subscribers Subscribers per topic (top 20).\n"
               "# TYPE sophia_ws_topic_subscribers gauge\n");
    if (!r)
        return;
    json_t *top = top_topics_json(r, 20);
    const char *k;
    json_t *v;
    json_object_foreach(top, k, v)
        fprintf(f, "sophia_ws_topic_subscribers{topic=\"%s\"} %lld\n", k,
                (long long)json_integer_value(v));
    json_decref(top);
}
