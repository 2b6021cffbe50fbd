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
 * With SOPHIA_REDIS_URL set (correlate.sh starts a throwaway Redis), the
 * same again with the correlators' per-key persistence (SDK 1.3): every
 * event's changed keys written to Redis in one pipeline per loop turn,
 * the loop turning between batches of 256 events as a stream's drain
 * does, timed until the last write answered. And the loop stalls while
 * 100k keys are opened and written: the longest single callback (a
 * batch's observes and exports, or a flush / its replies), against what
 * the 1.2 whole-state snapshot (export_state) and a reload's
 * export_state + import_state take at that size.
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
    "  %s: {streams: [gong, crm, slack, metrics]}\n"
    "%s";

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

/* `node`: NULL, or persist per key to SOPHIA_REDIS_URL under that node
 * id (a hash of its own for each measurement). */
static sophia_correlate *build(const char *dir, const char *which,
                               const char *node, sophia_host_rt *rt,
                               struct event_base *base, sophia_conf **cp,
                               sophia_plugin_set **sp)
{
    char yaml[8192], extra[1024] = "";
    sophia_diag d;
    sophia_diag_init(&d);
    if (node)
        snprintf(extra, sizeof(extra),
                 "redis: {url: \"%s\"}\ncluster: {node_id: %s}\n",
                 getenv("SOPHIA_REDIS_URL"), node);
    snprintf(yaml, sizeof(yaml), yaml_fmt, dir, which, extra);
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

static bench_env env_new(const char *dir, const char *which,
                         const char *node)
{
    bench_env e = {.rt = sophia_host_rt_new(), .base = event_base_new()};
    sophia_host_timers_bind(e.rt, e.base);
    e.k = build(dir, which, node, e.rt, e.base, &e.conf, &e.set);
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
    bench_env e = env_new(dir, which, NULL);
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
    bench_env e = env_new(dir, "deals", NULL);
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

/* ------------------------------------------------ per-key persistence */

/* Receipt times from now on: the rules' sweep forgets keys idle past
 * their window by the wall clock, so a time near 0 would empty them. */
static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double ms_since(int64_t t)
{
    return (double)(now_ns() - t) / 1e6;
}

/* This thread's CPU time: on a loaded machine a turn's wall time also
 * counts the time the scheduler gave to others. */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The longest wall and CPU time of what was timed, ms. */
typedef struct stall {
    double wall, cpu;
} stall;

static void stall_add(stall *s, int64_t wall0, int64_t cpu0)
{
    double w = ms_since(wall0), c = (double)(cpu_ns() - cpu0) / 1e6;
    s->wall = w > s->wall ? w : s->wall;
    s->cpu = c > s->cpu ? c : s->cpu;
}

/* One loop turn without waiting (what is ready runs: the flush timer,
 * Redis replies), its length into `s` (may be NULL). */
static void turn(bench_env *e, stall *s)
{
    int64_t t = now_ns(), c = cpu_ns();
    event_base_loop(e->base, EVLOOP_NONBLOCK);
    if (s)
        stall_add(s, t, c);
}

static int restoring(const sophia_correlate *k)
{
    json_t *st = sophia_correlate_stats_json(k);
    json_t *one = json_object_get(st, "deals");
    int r = json_is_true(json_object_get(one, "restoring"));
    json_decref(st);
    return r;
}

/* A persisted env whose start-up read is done (its hash is empty). */
static bench_env env_persisted(const char *dir, const char *node)
{
    bench_env e = env_new(dir, "deals", node);
    int64_t t = now_ns();
    while (restoring(e.k) && ms_since(t) < 10000)
        event_base_loop(e.base, EVLOOP_ONCE);
    return e;
}

/* Turns until every write is answered. */
static void drain(bench_env *e, stall *s)
{
    int64_t t = now_ns();
    while (sophia_correlate_writes_pending(e->k) && ms_since(t) < 60000)
        turn(e, s);
}

#define BATCH 256 /* events per loop turn, a stream's default batch */

/* rate() with per-key persistence: a batch, a turn; done when the last
 * write answered. */
static double rate_persisted(const char *dir, const workload *w, int rounds,
                             const char *node)
{
    bench_env e = env_persisted(dir, node);
    int64_t t = now_ns(), t0_us = wall_us();
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < w->n; i += BATCH) {
            workload part = {w->ev + i, w->stream + i,
                             w->n - i < BATCH ? w->n - i : BATCH};
            feed(e.k, &part, t0_us + (int64_t)r * 1000000 + (int64_t)i);
            turn(&e, NULL);
        }
    drain(&e, NULL);
    double s = (double)(now_ns() - t) / 1e9;
    env_free(&e);
    return (double)w->n * rounds / s;
}

/* `keys` keys opened by Gong calls, a batch per turn, persisted: the
 * longest batch (observe + export_changes of its events) and the longest
 * other turn (flush, replies); then what a reload does with that state,
 * whole, on the loop: export_state out[0] and import_state into a fresh
 * instance out[1], ms; out[2] the whole run, s. */
typedef struct keys_run {
    stall batch, turn, restore;
    double export_ms, import_ms, fini_ms, run_s, restore_s;
} keys_run;

/* A second instance on the same node reads the hash back (start-up, and
 * a per-key reload): how long, and its longest turn. */
static void restore(const char *dir, const char *node, keys_run *out)
{
    bench_env e = env_new(dir, "deals", node);
    int64_t t = now_ns();
    while (restoring(e.k) && ms_since(t) < 120000)
        turn(&e, &out->restore);
    out->restore_s = (double)(now_ns() - t) / 1e9;
    env_free(&e);
}

static void persisted_keys(const char *dir, size_t keys, keys_run *out)
{
    bench_env e = env_persisted(dir, "bench-keys");
    memset(out, 0, sizeof(*out));
    char key[64];
    json_t *batch[BATCH];
    const char *streams[BATCH];
    int64_t t0 = now_ns(), t0_us = wall_us();
    for (size_t i = 0; i < keys; i += BATCH) {
        size_t n = keys - i < BATCH ? keys - i : BATCH;
        for (size_t j = 0; j < n; j++) {
            snprintf(key, sizeof(key), "K%zu", i + j);
            batch[j] = gong(key, "a competitor is cheaper");
            streams[j] = "gong";
        }
        workload part = {batch, streams, n};
        int64_t t = now_ns(), c = cpu_ns();
        feed(e.k, &part, t0_us + (int64_t)i);
        stall_add(&out->batch, t, c);
        turn(&e, &out->turn);
        for (size_t j = 0; j < n; j++)
            json_decref(batch[j]);
    }
    drain(&e, &out->turn);
    out->run_s = (double)(now_ns() - t0) / 1e9;
    restore(dir, "bench-keys", out);
    sophia_instance *in = sophia_plugin_set_find(e.set, "deals");
    const sophia_correlator_ops *ops = sophia_plugin_correlator(in->desc);
    int64_t t = now_ns();
    char *text = ops->export_state(in->state);
    out->export_ms = ms_since(t);
    bench_env fresh = env_new(dir, "deals", NULL);
    sophia_instance *to = sophia_plugin_set_find(fresh.set, "deals");
    t = now_ns();
    if (text)
        ops->import_state(to->state, text);
    out->import_ms = ms_since(t);
    free(text);
    t = now_ns();
    env_free(&fresh); /* the instance's fini: what a reload's retire pays */
    out->fini_ms = ms_since(t);
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
    if (getenv("SOPHIA_REDIS_URL") && *getenv("SOPHIA_REDIS_URL")) {
        double with = rate_persisted(argv[1], &w, rounds, "bench-rate");
        printf("correlated events/s, per-key persistence to Redis (a "
               "pipeline per turn of %d events): %.0f (%.2f of without)\n",
               BATCH, with, with / full);
        keys_run p;
        persisted_keys(argv[1], keys, &p);
        printf("%zu keys opened (Gong calls) and persisted in %.1f s; "
               "longest loop stall, wall (CPU): a batch of %d events %.1f "
               "(%.1f) ms, another turn (flush, replies) %.1f (%.1f) ms\n",
               keys, p.run_s, BATCH, p.batch.wall, p.batch.cpu, p.turn.wall,
               p.turn.cpu);
        printf("  read back (start-up, or a reload of a per-key correlator "
               "with Redis up): %.1f s, longest turn %.1f (%.1f) ms\n",
               p.restore_s, p.restore.wall, p.restore.cpu);
        printf("  a whole-state hand-over (a reload with Redis down, or of "
               "an SDK 1.2 correlator), on the loop: export_state %.0f ms, "
               "import_state %.0f ms; freeing that instance (fini) %.0f ms\n",
               p.export_ms, p.import_ms, p.fini_ms);
    }
    for (size_t i = 0; i < w.n; i++)
        json_decref(w.ev[i]);
    free(w.ev);
    free(w.stream);
    sophia_plugin_system_shutdown();
    return 0;
}
