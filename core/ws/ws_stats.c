/*
 * ws_stats - the router's figures: the counters and the busiest topics
 * for /api/stats and the WebSocket `stats` request and the sophia_ws_*
 * lines of /metrics, each figure declared once (lib/statdef.h); the
 * dashboards list of /api/dashboards, and the cluster link's state for
 * /healthz. Read-only: nothing here changes the router.
 */
#include "ws/ws.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster/cluster.h"
#include "lib/dict.h"
#include "lib/statdef.h"
#include "ws/ws_latest.h"
#include "ws/ws_priv.h"

void sophia_ws_get_stats(const sophia_ws_router *r, sophia_ws_stats *out)
{
    *out = r->st;
    out->cluster_in = sophia_cluster_received(r->cluster);
    out->topics = sophia_dict_size(r->topics);
}

/* ------------------------------------------------------------ figures */

/* Each figure of sophia_ws_stats, declared once for both /api/stats and
 * /metrics (lib/statdef.h): the `websocket` object's, then those of its
 * `cluster` object (only with a cluster). prom NULL: /api/stats only. */
#define WS_FIG(key, prom, type, help, field)                                 \
    SOPHIA_STATDEF(key, prom, type, NULL, help, offsetof(sophia_ws_stats, field))

static const sophia_statdef figures[] = {
    WS_FIG("connections", "sophia_ws_connections", "gauge",
           "Open WebSocket connections.", connections),
    WS_FIG("connections_msgpack", "sophia_ws_connections_msgpack", "gauge",
           "Open WebSocket connections speaking sophia.v1.msgpack.",
           connections_msgpack),
    WS_FIG("connections_deflate", "sophia_ws_connections_deflate", "gauge",
           "Open WebSocket connections with permessage-deflate.",
           connections_deflate),
    WS_FIG("connections_total", NULL, "counter",
           NULL, connections_total),
    WS_FIG("subscriptions", "sophia_ws_subscriptions", "gauge",
           "Open subscriptions.", subscriptions),
    WS_FIG("messages_in", "sophia_ws_messages_in_total", "counter",
           "Messages received from clients.", messages_in),
    WS_FIG("messages_out", "sophia_ws_messages_out_total", "counter",
           "Messages written to clients.", messages_out),
    WS_FIG("dropped", "sophia_ws_dropped_total", "counter",
           "Messages dropped with slow clients.", dropped),
    WS_FIG("slow_closed", "sophia_ws_slow_closed_total", "counter",
           "Clients closed for a full send queue.", slow_closed),
    WS_FIG("published", "sophia_ws_published_total", "counter",
           "Publish calls.", published),
    WS_FIG("coalesced", "sophia_ws_coalesced_total", "counter",
           "Queued metric updates replaced by a newer value.", coalesced),
    WS_FIG("recovered", "sophia_ws_recovered_total", "counter",
           "Messages replayed to clients subscribing with since.", recovered),
    WS_FIG("resyncs", "sophia_ws_resyncs_total", "counter",
           "Resync answers: history aged out.", resyncs),
    WS_FIG("auth_failures", "sophia_ws_auth_failures_total", "counter",
           "Bad, expired or missing WebSocket tokens.", auth_failures),
    WS_FIG("forbidden", "sophia_ws_forbidden_total", "counter",
           "Subscriptions and requests refused by the token's scopes.", forbidden),
    WS_FIG("refused", "sophia_ws_refused_total", "counter",
           "WebSocket upgrades refused.", refused),
    WS_FIG("pings", NULL, "counter",
           NULL, pings),
    WS_FIG("dead_closed", "sophia_ws_dead_closed_total", "counter",
           "Connections closed for a missed pong.", dead_closed),
    WS_FIG("topics", "sophia_ws_topics", "gauge",
           "Topics held (seq and history).", topics),
    WS_FIG("topics_freed", "sophia_ws_topics_freed_total", "counter",
           "Idle topics freed once their history aged out.", topics_freed),
    WS_FIG("topics_refused", "sophia_ws_topics_refused_total", "counter",
           "Publishes to a new topic refused by websocket.max_topics "
           "(delivered live to pattern subscribers, not recorded).", topics_refused),
};

static const sophia_statdef cluster_figures[] = {
    WS_FIG("out", "sophia_ws_cluster_out_total", "counter",
           "Publishes sent through Redis.", cluster_out),
    WS_FIG("in", "sophia_ws_cluster_in_total", "counter",
           "Publishes received from Redis.", cluster_in),
    WS_FIG("fallback", NULL, "counter",
           NULL, cluster_fallback),
    WS_FIG("local", "sophia_ws_cluster_local_total", "counter",
           "Publishes delivered locally: no other node on the channel.", cluster_alone),
};

/* Per topic, the 20 with most subscribers: topic="...". */
static const sophia_statdef topic_figures[] = {
    SOPHIA_STATDEF(NULL, "sophia_ws_topic_subscribers", "gauge", NULL,
                   "Subscribers per topic (top 20).", 0),
};

#define NFIG(t) (sizeof(t) / sizeof((t)[0]))

/* A field added to sophia_ws_stats without a line above fails here. */
_Static_assert(NFIG(figures) + NFIG(cluster_figures) ==
                   sizeof(sophia_ws_stats) / sizeof(uint64_t),
               "every sophia_ws_stats field is declared once above");

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
    json_t *o = sophia_statdef_json(figures, NFIG(figures), &st), *cl = NULL;
    if (r->cluster)
        cl = json_pack("{s:s,s:b,s:b}", "node", sophia_cluster_node_id(r->cluster),
                       "up", sophia_cluster_ready(r->cluster), "alone",
                       sophia_cluster_alone(r->cluster));
    if (cl)
        json_object_update_new(cl, sophia_statdef_json(cluster_figures,
                                                       NFIG(cluster_figures), &st));
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
    sophia_statdef_prom(f, figures, NFIG(figures), &st, NULL);
    sophia_statdef_prom(f, cluster_figures, NFIG(cluster_figures), &st, NULL);
    top_acc a = {0};
    if (r)
        sophia_dict_each(r->topics, top_topic, &a);
    if (a.n > 1)
        qsort(a.v, a.n, sizeof(*a.v), top_cmp);
    size_t n = a.n < 20 ? a.n : 20;
    uint64_t *subs = calloc(n ? n : 1, sizeof(*subs));
    sophia_stat_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!subs || !rows)
        n = 0; /* out of memory: the head alone */
    for (size_t i = 0; i < n; i++) {
        subs[i] = a.v[i].n;
        rows[i] = (sophia_stat_row){&a.v[i].name, &subs[i]};
    }
    static const char *const label[] = {"topic"};
    sophia_statdef_prom_family(f, topic_figures, NFIG(topic_figures), label, 1,
                               rows, n);
    free(subs);
    free(rows);
    free(a.v);
}
