/*
 * ws_stats - the router's figures: the counters and the busiest topics
 * for /api/stats and the WebSocket `stats` request, the /metrics lines
 * api.c does not write itself, the dashboards list of /api/dashboards,
 * and the cluster link's state for /healthz. Read-only: nothing here
 * changes the router.
 */
#include "ws/ws.h"

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

int sophia_ws_cluster_state(const sophia_ws_router *r)
{
    if (!r || !r->cluster)
        return -1;
    return sophia_cluster_ready(r->cluster) ? 1 : 0;
}

json_t *sophia_ws_stats_json(const sophia_ws_router *r, size_t top_n)
{
    sophia_ws_stats st;
    const sophia_ws_stats *s = &st;
    top_acc a = {0};
    sophia_ws_get_stats(r, &st);
    sophia_dict_each(r->topics, top_topic, &a);
    if (a.n > 1)
        qsort(a.v, a.n, sizeof(*a.v), top_cmp);
    json_t *top = json_object();
    for (size_t i = 0; i < a.n && i < top_n; i++)
        json_object_set_new(top, a.v[i].name, json_integer((json_int_t)a.v[i].n));
    free(a.v);
    json_t *o = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}",
        "connections", (json_int_t)s->connections, "connections_total",
        (json_int_t)s->connections_total, "subscriptions",
        (json_int_t)s->subscriptions, "messages_in", (json_int_t)s->messages_in,
        "messages_out", (json_int_t)s->messages_out, "dropped",
        (json_int_t)s->dropped, "slow_closed", (json_int_t)s->slow_closed,
        "published", (json_int_t)s->published, "coalesced",
        (json_int_t)s->coalesced, "recovered", (json_int_t)s->recovered,
        "resyncs", (json_int_t)s->resyncs, "auth_failures",
        (json_int_t)s->auth_failures, "forbidden", (json_int_t)s->forbidden,
        "refused", (json_int_t)s->refused, "pings", (json_int_t)s->pings,
        "dead_closed", (json_int_t)s->dead_closed);
    json_object_set_new(o, "topics", json_integer((json_int_t)s->topics));
    json_object_set_new(o, "topics_freed", json_integer((json_int_t)s->topics_freed));
    json_object_set_new(o, "topics_refused", json_integer((json_int_t)s->topics_refused));
    json_object_set_new(o, "top_topics", top);
    if (r->cluster)
        json_object_set_new(o, "cluster",
                            json_pack("{s:s,s:b,s:b,s:I,s:I,s:I,s:I}", "node",
                                      sophia_cluster_node_id(r->cluster), "up",
                                      sophia_cluster_ready(r->cluster), "alone",
                                      sophia_cluster_alone(r->cluster), "out",
                                      (json_int_t)s->cluster_out, "in",
                                      (json_int_t)s->cluster_in, "fallback",
                                      (json_int_t)s->cluster_fallback, "local",
                                      (json_int_t)s->cluster_alone));
    return o;
}

static void prom_counter(FILE *f, const char *name, const char *help,
                         uint64_t v)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name,
            name, (unsigned long long)v);
}

void sophia_ws_write_prom(const sophia_ws_router *r, FILE *f)
{
    sophia_ws_stats st;
    const sophia_ws_stats *s = &st;
    sophia_ws_get_stats(r, &st);
    prom_counter(f, "sophia_ws_coalesced_total",
                 "Queued metric updates replaced by a newer value.", s->coalesced);
    prom_counter(f, "sophia_ws_recovered_total",
                 "Messages replayed to clients subscribing with since.",
                 s->recovered);
    prom_counter(f, "sophia_ws_resyncs_total",
                 "Resync answers: history aged out.", s->resyncs);
    prom_counter(f, "sophia_ws_auth_failures_total",
                 "Bad, expired or missing WebSocket tokens.", s->auth_failures);
    prom_counter(f, "sophia_ws_forbidden_total",
                 "Subscriptions and requests refused by the token's scopes.",
                 s->forbidden);
    prom_counter(f, "sophia_ws_refused_total",
                 "WebSocket upgrades refused.", s->refused);
    prom_counter(f, "sophia_ws_slow_closed_total",
                 "Clients closed for a full send queue.", s->slow_closed);
    prom_counter(f, "sophia_ws_dead_closed_total",
                 "Connections closed for a missed pong.", s->dead_closed);
    prom_counter(f, "sophia_ws_published_total", "Publish calls.", s->published);
    prom_counter(f, "sophia_ws_cluster_out_total",
                 "Publishes sent through Redis.", s->cluster_out);
    prom_counter(f, "sophia_ws_cluster_in_total",
                 "Publishes received from Redis.", s->cluster_in);
    prom_counter(f, "sophia_ws_cluster_local_total",
                 "Publishes delivered locally: no other node on the channel.",
                 s->cluster_alone);
    prom_counter(f, "sophia_ws_topics_freed_total",
                 "Idle topics freed once their history aged out.", s->topics_freed);
    prom_counter(f, "sophia_ws_topics_refused_total",
                 "Publishes to a new topic refused by websocket.max_topics "
                 "(delivered live to pattern subscribers, not recorded).",
                 s->topics_refused);
    fprintf(f, "# HELP sophia_ws_topics Topics held (seq and history).\n"
               "# TYPE sophia_ws_topics gauge\nsophia_ws_topics %llu\n",
            (unsigned long long)s->topics);
    fprintf(f, "# HELP sophia_ws_topic_subscribers Subscribers per topic (top 20).\n"
               "# TYPE sophia_ws_topic_subscribers gauge\n");
    json_t *o = sophia_ws_stats_json(r, 20);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(o, "top_topics"), k, v)
        fprintf(f, "sophia_ws_topic_subscribers{topic=\"%s\"} %lld\n", k,
                (long long)json_integer_value(v));
    json_decref(o);
}
