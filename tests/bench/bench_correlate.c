/*
 * bench_correlate - the correlators' dispatch (host/correlate.c) and the
 * bundled `patterns` correlator: correlated events per second, and the
 * memory an open key costs with 100k of them.
 *
 * The events go through sophia_correlate_on_commit, the hook the streams
 * call after each commit, so what is timed is what a committed event
 * costs beyond its stream: a context, observe(), the apply. The rules are
 * the three (README "Correlation"); the peer in the same run is
 * an instance whose one rule listens to no stream of the workload, so
 * the ratio is the rules' own cost over the bare dispatch.
 *
 * Memory: RSS (/proc/self/statm) and heap in use (mallinfo2) before and
 * after 100k keys each left waiting for a second step, divided by the
 * keys: a key holding one attached Gong call (~1.3 KB of JSON), and one
 * holding a Slack mention.
 *
 * Usage: bench_correlate PLUGIN_DIR [--quick]  (tests/bench/correlate.sh)
 */
#include <event2/event.h>
#include <jansson.h>
#include <malloc.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "host/correlate.h"
#include "host/host.h"
#include "plugin/plugin.h"

static const char *yaml_fmt =
    "plugins:\n"
    "  path: [\"%s\"]\n"
    "  instances:\n"
    "    deals:\n"
    "      plugin: patterns\n"
    "      options:\n"
    "        max_keys: 1000000\n"
    "        rules:\n"
    "          - name: deal_at_risk\n"
    "            severity: critical\n"
    "            window: 24h\n"
    "            steps:\n"
    "              - stream: gong\n"
    "                key: context.*.objects.*.objectId\n"
    "                match: [{path: \"transcript.*.sentences.*.text\", contains: [competitor, budget, churn]}]\n"
    "              - stream: crm\n"
    "                key: data.payload.ChangeEventHeader.recordIds.0\n"
    "                regresses: {path: data.payload.StageName, order: [Prospecting, Qualification, Proposal, Negotiation]}\n"
    "          - name: churn_mentions\n"
    "            window: 1h\n"
    "            steps:\n"
    "              - {stream: slack, key: event.channel, count: 3, match: [{path: event.text, contains: churn}]}\n"
    "          - name: metric_in_negotiation\n"
    "            window: 24h\n"
    "            while: {stream: crm, key: data.payload.ChangeEventHeader.recordIds.0, match: [{path: data.payload.StageName, equals: Negotiation}]}\n"
    "            steps:\n"
    "              - {stream: metrics, key: labels.deal, match: [{path: value, gt: 20}]}\n"
    "    idle:\n"
    "      plugin: patterns\n"
    "      options:\n"
    "        rules: [{name: none, window: 1h, steps: [{stream: nothing, key: k}]}]\n"
    "streams:\n"
    "  gong: {processor: idle}\n"
    "  crm: {processor: idle}\n"
    "  slack: {processor: idle}\n"
    "  metrics: {processor: idle}\n"
    "  nothing: {processor: idle}\n"
    "correlators:\n"
    "  %s: {streams: [gong, crm, slack, metrics]}\n";

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &pages, &res) != 2)
        res = 0;
    if (f)
        fclose(f);
    return (double)res * (double)sysconf(_SC_PAGESIZE);
}

static json_t *gong(const char *deal, const char *text)
{
    return json_pack(
        "{s:{s:s,s:s,s:i},s:[{s:s,s:s},{s:s,s:s}],s:[{s:s,s:[{s:s,s:s}]}],"
        "s:[{s:s,s:[{s:i,s:i,s:s},{s:i,s:i,s:s}]}]}",
        "metaData", "id", deal, "title", "Acme Corp - Renewal discussion",
        "duration", 1860, "parties", "name", "Jane Seller", "affiliation",
        "Internal", "name", "Bob Buyer", "affiliation", "External",
        "context", "system", "Salesforce", "objects", "objectType",
        "Opportunity", "objectId", deal, "transcript", "topic", "Pricing",
        "sentences", "start", 1, "end", 2, "text",
        "Thanks for joining, let's go over the renewal pricing.", "start", 3,
        "end", 4, "text", text);
}

static json_t *crm(const char *deal, const char *stage)
{
    return json_pack("{s:{s:{s:{s:s,s:[s],s:s},s:s}}}", "data", "payload",
                     "ChangeEventHeader", "entityName", "Opportunity",
                     "recordIds", deal, "changeType", "UPDATE", "StageName",
                     stage);
}

static json_t *slack(const char *channel, const char *text)
{
    return json_pack("{s:s,s:{s:s,s:s,s:s}}", "type", "event_callback",
                     "event", "type", "message", "channel", channel, "text",
                     text);
}

static json_t *metric(const char *deal, double v)
{
    return json_pack("{s:s,s:f,s:{s:s}}", "metric", "discount_pct", "value",
                     v, "labels", "deal", deal);
}

typedef struct workload {
    json_t **ev;
    const char **stream;
    size_t n;
} workload;

static void add(workload *w, const char *stream, json_t *ev)
{
    w->ev = realloc(w->ev, (w->n + 1) * sizeof(*w->ev));
    w->stream = realloc(w->stream, (w->n + 1) * sizeof(*w->stream));
    if (!w->ev || !w->stream || !ev)
        abort();
    w->ev[w->n] = ev;
    w->stream[w->n++] = stream;
}

/* Per deal: negotiation, a risk call, a metric, a regression (fires two
 * rules); per channel three churn mentions (fires one). */
static workload mixed(size_t deals)
{
    workload w = {0};
    char k[64];
    for (size_t i = 0; i < deals; i++) {
        snprintf(k, sizeof(k), "D%zu", i);
        add(&w, "crm", crm(k, "Negotiation"));
        add(&w, "gong", gong(k, "Honestly the budget is tight."));
        add(&w, "metrics", metric(k, 30));
        add(&w, "crm", crm(k, "Qualification"));
        snprintf(k, sizeof(k), "C%zu", i);
        for (int j = 0; j < 3; j++)
            add(&w, "slack", slack(k, "they may churn"));
    }
    return w;
}

static void feed(sophia_correlate *k, const workload *w, int64_t t0_us)
{
    for (size_t i = 0; i < w->n; i++) {
        sophia_event ev = {.struct_size = sizeof(ev), .stream = w->stream[i],
                           .source = "http",
                           .body = (const sophia_json *)w->ev[i],
                           .received_us = t0_us + (int64_t)i};
        sophia_correlate_on_commit(k, &ev);
    }
}

/* One correlator set as the daemon would build it, without a loop run. */
typedef struct bench_env {
    sophia_host_rt *rt;
    struct event_base *base;
    sophia_conf *conf;
    sophia_plugin_set *set;
    sophia_correlate *k;
} bench_env;

static sophia_correlate *build(const char *dir, const char *which,
                               sophia_host_rt *rt, struct event_base *base,
                               sophia_conf **cp, sophia_plugin_set **sp)
{
    char yaml[8192];
    sophia_diag d;
    sophia_diag_init(&d);
    snprintf(yaml, sizeof(yaml), yaml_fmt, dir, which);
    sophia_conf *c = sophia_conf_load_string("bench.yaml", yaml,
                                             strlen(yaml), &d);
    sophia_conf_validate(c, &d);
    sophia_plugin_set *set =
        d.count ? NULL : sophia_plugin_set_load(c, sophia_host_rt_table(rt), &d);
    sophia_correlate *k = set ? sophia_correlate_new(c, set, base, &d) : NULL;
    if (!k) {
        sophia_diag_print(&d, stderr);
        exit(1);
    }
    sophia_diag_free(&d);
    *cp = c;
    *sp = set;
    return k;
}

static bench_env env_new(const char *dir, const char *which)
{
    bench_env e = {.rt = sophia_host_rt_new(), .base = event_base_new()};
    sophia_host_timers_bind(e.rt, e.base);
    e.k = build(dir, which, e.rt, e.base, &e.conf, &e.set);
    return e;
}

static void env_free(bench_env *e)
{
    sophia_correlate_free(e->k);
    sophia_host_timers_bind(e->rt, NULL);
    sophia_plugin_set_free(e->set);
    sophia_host_rt_free(e->rt);
    sophia_conf_free(e->conf);
    event_base_free(e->base);
}

static double rate(const char *dir, const char *which, const workload *w,
                   int rounds)
{
    bench_env e = env_new(dir, which);
    int64_t t = now_ns();
    for (int r = 0; r < rounds; r++)
        feed(e.k, w, (int64_t)r * 1000000);
    double s = (double)(now_ns() - t) / 1e9;
    env_free(&e);
    return (double)w->n * rounds / s;
}

/* RSS and heap in use (mallinfo2) per key once `keys` keys each wait
 * for their second step, out[0] and out[1]; what export_state (a
 * snapshot, on the loop) then takes: out[2] ms, out[3] bytes. */
static void per_key(const char *dir, size_t keys, int gong_calls, double *out)
{
    bench_env e = env_new(dir, "deals");
    double before = rss_bytes();
    double heap0 = (double)mallinfo2().uordblks;
    char key[64];
    for (size_t i = 0; i < keys; i++) {
        snprintf(key, sizeof(key), "K%zu", i);
        json_t *ev = gong_calls ? gong(key, "a competitor is cheaper")
                                : slack(key, "churn");
        sophia_event c = {.struct_size = sizeof(c),
                          .stream = gong_calls ? "gong" : "slack",
                          .body = (const sophia_json *)ev,
                          .received_us = (int64_t)i};
        sophia_correlate_on_commit(e.k, &c);
        json_decref(ev);
    }
    out[0] = (rss_bytes() - before) / (double)keys;
    out[1] = ((double)mallinfo2().uordblks - heap0) / (double)keys;
    sophia_instance *in = sophia_plugin_set_find(e.set, "deals");
    int64_t t = now_ns();
    char *text = sophia_plugin_correlator(in->desc)->export_state(in->state);
    out[2] = (double)(now_ns() - t) / 1e6;
    out[3] = text ? (double)strlen(text) : 0;
    free(text);
    env_free(&e);
}

/* per_key in a child of its own, so the RSS is not pages an earlier
 * measurement freed and the heap kept. */
static void per_key_fresh(const char *dir, size_t keys, int gong_calls,
                          double *out)
{
    int fd[2];
    size_t n = 4 * sizeof(*out);
    out[0] = out[1] = out[2] = out[3] = -1;
    if (pipe(fd) < 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        per_key(dir, keys, gong_calls, out);
        _exit(write(fd[1], out, n) == (ssize_t)n ? 0 : 1);
    }
    close(fd[1]);
    if (pid > 0 && read(fd[0], out, n) != (ssize_t)n)
        out[0] = out[1] = -1;
    close(fd[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_correlate PLUGIN_DIR [--quick]\n");
        return 2;
    }
    int quick = argc > 2 && !strcmp(argv[2], "--quick");
    sophia_plugin_system_init();
    size_t keys = quick ? 10000 : 100000;
    /* First, in children forked from a heap still small: a child of a
     * process that ran the rates would reuse pages they freed. */
    double m[4];
    per_key_fresh(argv[1], keys, 1, m);
    printf("per open key, %zu keys, each holding a Gong call: RSS %.0f B, "
           "heap %.0f B; export_state %.0f ms, %.1f MB\n", keys, m[0], m[1],
           m[2], m[3] / 1e6);
    per_key_fresh(argv[1], keys, 0, m);
    printf("per open key, %zu keys, each holding a Slack mention: RSS "
           "%.0f B, heap %.0f B; export_state %.0f ms, %.1f MB\n", keys, m[0],
           m[1], m[2], m[3] / 1e6);
    workload w = mixed(quick ? 2000 : 20000);
    int rounds = quick ? 1 : 3;
    double full = rate(argv[1], "deals", &w, rounds);
    double bare = rate(argv[1], "idle", &w, rounds);
    printf("correlated events/s (3 rules, %zu events x %d): %.0f\n", w.n,
           rounds, full);
    printf("dispatch only (a rule on no stream of them):    %.0f\n", bare);
    printf("rules / dispatch-only time ratio: %.2f\n", bare / full);
    static const char *const streams[] = {"gong", "crm", "slack", "metrics"};
    for (size_t i = 0; i < 4; i++) { /* which events cost what */
        workload one = {0};
        for (size_t j = 0; j < w.n; j++)
            if (!strcmp(w.stream[j], streams[i]))
                add(&one, streams[i], json_incref(w.ev[j]));
        printf("  %s events only: %.0f/s\n", streams[i],
               rate(argv[1], "deals", &one, rounds));
        for (size_t j = 0; j < one.n; j++)
            json_decref(one.ev[j]);
        free(one.ev);
        free(one.stream);
    }
    for (size_t i = 0; i < w.n; i++)
        json_decref(w.ev[i]);
    free(w.ev);
    free(w.stream);
    sophia_plugin_system_shutdown();
    return 0;
}
