/*
 * replay - see replay.h.
 *
 * A job's life: counting (XRANGE pages of COUNT_PAGE, only counted) ->
 * running (XRANGE pages of PAGE entries, parsed into the job's own list
 * since hiredis frees a reply after its callback; a TICK_MS timer spends
 * a token bucket of `rate` per second on them, one event in flight at a
 * time) -> done / failed / cancelled. The next page is asked for with
 * the exclusive start "(" + the last id, so an entry is never run twice.
 */
#include "ingest/replay.h"

#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sophia/sdk.h>

#include "event/loop.h"
#include "event/redis.h"
#include "host/host.h"
#include "host/prefetch.h"
#include "ingest/durable.h"
#include "ingest/filter.h"
#include "lib/dict.h"
#include "lib/log.h"
#include "plugin/plugin.h"

#define COUNT_PAGE "1000"
#define PAGE 100
#define TICK_MS 10
#define SAVE_MS 50
#define TURN_MAX 64
#define RETRY_BASE_MS 100

enum { COUNTING, RUNNING, DONE, FAILED, CANCELLED };
static const char *const state_name[] = {"counting", "running", "done",
                                         "failed", "cancelled"};

struct sophia_replays {
    struct event_base *base;
    sophia_redis *rd;
    char *url;
    sophia_dict *jobs; /* stream name -> replay_job (the last one) */
};

typedef struct entry {
    char *id;
    json_t *body; /* NULL: not JSON */
} entry;

typedef struct replay_job {
    sophia_replays *rp;
    char *stream, *key, *field, *instance, *from, *to, *error;
    int dry_run, state, busy; /* busy: a read or an event in flight */
    double rate, tokens;
    size_t limit, max_attempts, attempt;
    uint64_t total, done, applied, dropped, filtered, failed;
    char after[48]; /* the next XRANGE's start */
    entry *page;
    size_t npage, at;
    int page_last; /* the range has no more pages */
    sophia_filter *filter;
    sophia_replay_find_fn find;
    void *find_arg;
    sophia_replay_done_fn done_fn;
    void *done_arg;
    FILE *out; /* dry run: the lines */
    char *out_buf;
    size_t out_len;
    struct event *tick, *kick; /* the rate's timer; the next loop turn */
    int64_t last_us, wait_until_us;
    sophia_ctx *ctx; /* the event whose effects are in flight */
    sophia_host_rt *rt;     /* dry run: a runtime of its own, no effects */
    sophia_instance *fresh; /* dry run: a new instance loaded in it */
    sophia_event ev;
} replay_job;

/* ------------------------------------------------------------ ids */

static int parse_rfc3339(const char *s, long long *ms)
{
    struct tm tm = {0};
    int frac_ms = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
               &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n != 19)
        return -1;
    const char *p = s + n;
    if (*p == '.') {
        int digits = 0;
        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        for (; digits > 0 && digits < 3; digits++)
            frac_ms *= 10;
        if (!digits && p[-1] == '.')
            return -1;
    }
    long off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &k) != 2 || k != 5)
            return -1;
        off = (hh * 60L + mm) * 60 * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    *ms = ((long long)t - off) * 1000 + frac_ms;
    return 0;
}

int sophia_replay_parse_id(const char *s, char *out, size_t n, char *why,
                           size_t whylen)
{
    if (!s || !*s) {
        snprintf(why, whylen, "is empty");
        return -1;
    }
    if (!strcmp(s, "-") || !strcmp(s, "+")) {
        snprintf(out, n, "%s", s);
        return 0;
    }
    size_t digits = strspn(s, "0123456789");
    if (digits && digits <= 19 &&
        (!s[digits] || (s[digits] == '-' && s[digits + 1] &&
                        strspn(s + digits + 1, "0123456789") ==
                            strlen(s + digits + 1) &&
                        strlen(s + digits + 1) <= 19))) {
        snprintf(out, n, "%s", s);
        return 0;
    }
    long long ms;
    if (parse_rfc3339(s, &ms) == 0) {
        snprintf(out, n, "%lld", ms);
        return 0;
    }
    snprintf(why, whylen, "'%.60s' is neither a Redis stream id (MS or MS-SEQ, "
             "- or +) nor an RFC 3339 time (2026-12-02T09:00:00Z)", s);
    return -1;
}

/* -------------------------------------------------------------- jobs */

static void page_clear(replay_job *j)
{
    for (size_t i = 0; i < j->npage; i++) {
        free(j->page[i].id);
        json_decref(j->page[i].body);
    }
    free(j->page);
    j->page = NULL;
    j->npage = j->at = 0;
}

static void job_free(void *p)
{
    replay_job *j = p;
    if (!j)
        return;
    if (j->tick)
        event_free(j->tick);
    if (j->kick)
        event_free(j->kick);
    sophia_ctx_free(j->ctx); /* cancels the report of effects in flight */
    if (j->fresh) {
        sophia_host_release(j->fresh);
        sophia_plugin_unload(j->fresh);
    }
    sophia_host_rt_free(j->rt); /* after its instance */
    page_clear(j);
    sophia_filter_free(j->filter);
    if (j->out)
        fclose(j->out);
    free(j->out_buf);
    free(j->stream);
    free(j->key);
    free(j->field);
    free(j->instance);
    free(j->from);
    free(j->to);
    free(j->error);
    free(j);
}

static void print_line(replay_job *j, json_t *o)
{
    /* As sophia-plugin-test prints: 0.8 as 0.8, not 0.80000000000000004. */
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY |
                                JSON_REAL_PRECISION(15));
    if (s && j->out)
        fprintf(j->out, "%s\n", s);
    free(s);
    json_decref(o);
}

/* The job ends: the dry run's caller gets its lines and a summary. */
static void finish(replay_job *j, int state, const char *error)
{
    if (j->state >= DONE)
        return;
    j->state = state;
    if (error && !j->error)
        j->error = strdup(error);
    if (j->tick)
        event_del(j->tick);
    if (j->kick)
        event_del(j->kick);
    sophia_info("replay", "msg=\"replay ended\" stream=%s state=%s done=%llu "
                "total=%llu%s%s", j->stream, state_name[state],
                (unsigned long long)j->done, (unsigned long long)j->total,
                error ? " error=" : "", error ? error : "");
    if (!j->done_fn)
        return;
    print_line(j, json_pack("{s:o}", "replay",
                            sophia_replays_stats_json(j->rp, j->stream)));
    fclose(j->out);
    j->out = NULL;
    sophia_replay_done_fn fn = j->done_fn;
    j->done_fn = NULL;
    char *buf = j->out_buf;
    j->out_buf = NULL;
    fn(j->done_arg, buf, j->out_len);
}

static void read_page(replay_job *j);

/* Runs the pump on the next loop turn, not from here: an apply may
 * report inside sophia_ctx_apply, and the next event must not start
 * inside the previous one's call stack. Without it an event that settles
 * asynchronously would wait for the next tick (100 events/s at most). A
 * one-shot event of its own: activating the persistent timer by hand
 * moves its next expiry a period further each time (measured: ticks 118
 * ms apart at 10 wakes a tick). */
static void wake(replay_job *j)
{
    if (j->kick && j->state == RUNNING)
        event_active(j->kick, EV_TIMEOUT, 0);
}

/* XRANGE's [[id, [field, value, ...]], ...]: the event of one entry, as
 * source_redis reads it (the field's JSON, else an object of fields). */
static json_t *entry_event(const replay_job *j, const redisReply *f)
{
    for (size_t k = 0; k + 1 < f->elements; k += 2)
        if (f->element[k]->str && !strcmp(f->element[k]->str, j->field))
            return json_loadb(f->element[k + 1]->str, f->element[k + 1]->len,
                              JSON_DECODE_ANY, NULL);
    json_t *o = json_object();
    for (size_t k = 0; k + 1 < f->elements; k += 2)
        if (f->element[k]->str && f->element[k + 1]->str)
            json_object_set_new(o, f->element[k]->str,
                                json_string(f->element[k + 1]->str));
    return o;
}

static int page_ok(const redisReply *rep)
{
    return rep && rep->type == REDIS_REPLY_ARRAY;
}

static const char *last_id(const redisReply *rep)
{
    const redisReply *e = rep->element[rep->elements - 1];
    return e->type == REDIS_REPLY_ARRAY && e->elements >= 1 ? e->element[0]->str
                                                            : NULL;
}

static void on_page(void *arg, redisReply *rep)
{
    replay_job *j = arg;
    j->busy = 0;
    if (j->state >= DONE)
        return;
    if (!page_ok(rep)) {
        finish(j, FAILED, rep && rep->type == REDIS_REPLY_ERROR
                              ? rep->str : "Redis went away during the replay");
        return;
    }
    if (j->state == COUNTING) {
        j->total += rep->elements;
        if (rep->elements && last_id(rep))
            snprintf(j->after, sizeof(j->after), "(%s", last_id(rep));
        if (rep->elements < (size_t)atoi(COUNT_PAGE) ||
            (j->limit && j->total >= j->limit)) {
            if (j->limit && j->total > j->limit)
                j->total = j->limit;
            j->state = RUNNING;
            snprintf(j->after, sizeof(j->after), "%s", j->from);
        }
        read_page(j);
        return;
    }
    page_clear(j);
    j->page = calloc(rep->elements ? rep->elements : 1, sizeof(*j->page));
    for (size_t i = 0; j->page && i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            !e->element[0]->str)
            continue;
        j->page[j->npage].id = strdup(e->element[0]->str);
        j->page[j->npage++].body = entry_event(j, e->element[1]);
    }
    j->page_last = rep->elements < PAGE;
    if (rep->elements && last_id(rep))
        snprintf(j->after, sizeof(j->after), "(%s", last_id(rep));
    wake(j);
}

static void read_page(replay_job *j)
{
    const char *count = j->state == COUNTING ? COUNT_PAGE : "100";
    const char *argv[] = {"XRANGE", j->key, j->after, j->to, "COUNT", count};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    if (sophia_redis_command(j->rp->rd, on_page, j, 6, argv, lens) < 0) {
        finish(j, FAILED, "Redis is down");
        return;
    }
    j->busy = 1;
}

/* ------------------------------------------------------------ events */

static void verdict_line(replay_job *j, const char *id, const char *verdict,
                         size_t nactions)
{
    if (j->dry_run)
        print_line(j, json_pack("{s:I,s:s,s:s,s:I}", "event",
                                (json_int_t)j->done + 1, "id", id, "verdict",
                                verdict, "actions", (json_int_t)nactions));
}

/* The current entry is settled: on to the next. */
static void advance(replay_job *j)
{
    j->done++;
    j->at++;
    j->attempt = 0;
    j->busy = 0;
    wake(j);
}

/* A RETRY or a failed effect: again after a back-off, or counted failed
 * after max_attempts (dry runs never retry: nothing was applied). */
static void retry_or_fail(replay_job *j, const char *id, const char *why)
{
    if (!j->dry_run && ++j->attempt < j->max_attempts) {
        j->wait_until_us = sophia_now_mono_us() +
                           (int64_t)RETRY_BASE_MS * 1000 * (1LL << j->attempt);
        j->busy = 0;
        return;
    }
    sophia_warn("replay", "msg=\"event failed\" stream=%s id=%s why=\"%s\"",
                j->stream, id, why);
    j->failed++;
    advance(j);
}

static void on_applied(void *arg, int rc)
{
    replay_job *j = arg;
    entry *e = &j->page[j->at];
    if (rc == 0) {
        sophia_ctx_commit(j->ctx);
        j->applied++;
    }
    sophia_ctx_free(j->ctx);
    j->ctx = NULL;
    if (rc == 0)
        advance(j);
    else
        retry_or_fail(j, e->id, "an effect could not be made durable");
}

/* process() on the prepared context; a dry run prints, a target applies. */
static void run_process(replay_job *j)
{
    entry *e = &j->page[j->at];
    sophia_ctx_enter(j->ctx);
    sophia_verdict v = sophia_ctx_process(j->ctx, &j->ev);
    sophia_ctx_leave(j->ctx);
    json_t *actions = (json_t *)sophia_ctx_actions_json(j->ctx);
    size_t na = json_array_size(actions);
    if (j->dry_run) {
        size_t i;
        json_t *a;
        json_array_foreach(actions, i, a) {
            json_t *line = json_pack("{s:I,s:s}", "event",
                                     (json_int_t)j->done + 1, "id", e->id);
            json_object_update(line, a);
            print_line(j, line);
        }
    }
    json_decref(actions);
    verdict_line(j, e->id, sophia_verdict_name(v), na);
    if (j->dry_run || v != SOPHIA_PROCESS_OK) {
        if (j->dry_run && v == SOPHIA_PROCESS_OK)
            sophia_ctx_commit(j->ctx); /* the fresh instance's own state,
                                        * as sophia-plugin-test commits */
        sophia_ctx_free(j->ctx); /* staged state discarded */
        j->ctx = NULL;
        if (v == SOPHIA_PROCESS_DROP)
            j->dropped++;
        if (v == SOPHIA_PROCESS_RETRY && !j->dry_run)
            retry_or_fail(j, e->id, "the processor asked for a retry");
        else if (v == SOPHIA_PROCESS_ERROR)
            retry_or_fail(j, e->id, "the processor failed the event");
        else
            advance(j);
        return;
    }
    j->busy = 1;
    sophia_ctx_apply(j->ctx, on_applied, j);
}

static void on_prefetched(void *arg, int rc)
{
    replay_job *j = arg;
    j->busy = 0;
    if (j->state >= DONE) { /* cancelled while its reads were out */
        sophia_ctx_free(j->ctx);
        j->ctx = NULL;
        return;
    }
    if (rc == 0) {
        run_process(j);
        return;
    }
    sophia_ctx_free(j->ctx);
    j->ctx = NULL;
    retry_or_fail(j, j->page[j->at].id, "a prefetch read failed");
}

/* The entry at j->at, through the filter, prefetch and process(). */
static void run_entry(replay_job *j)
{
    entry *e = &j->page[j->at];
    if (!e->body) {
        verdict_line(j, e->id, "not_json", 0);
        j->failed++;
        advance(j);
        return;
    }
    if (!sophia_filter_match(j->filter, e->body)) {
        verdict_line(j, e->id, "filtered", 0);
        j->filtered++;
        advance(j);
        return;
    }
    sophia_instance *inst = j->fresh ? j->fresh
                                     : j->find(j->find_arg, j->instance);
    if (!inst || inst->desc->kind != SOPHIA_KIND_PROCESSOR) {
        finish(j, FAILED, "the target instance went away (reload)");
        return;
    }
    j->ev = (sophia_event){
        .struct_size = sizeof(sophia_event),
        .stream = j->stream,
        .id = e->id,
        .source = "replay",
        .body = (const sophia_json *)e->body,
        .received_us = strtoll(e->id, NULL, 10) * 1000,
    };
    j->ctx = sophia_ctx_new(inst, j->stream);
    if (!j->ctx) {
        finish(j, FAILED, "out of memory");
        return;
    }
    int rc = sophia_prefetch_wanted(inst)
                 ? sophia_prefetch_run(inst, j->ctx, &j->ev, on_prefetched, j)
                 : 1;
    if (rc == 1) {
        run_process(j);
    } else if (rc == 0) {
        j->busy = 1;
    } else {
        sophia_ctx_free(j->ctx);
        j->ctx = NULL;
        retry_or_fail(j, e->id, "a prefetch read was refused");
    }
}

/* The token bucket: `rate` events a second, at most SAVE_MS' worth saved
 * up (a tick late under load loses nothing; a burst stays short), and at
 * most TURN_MAX events a loop turn, so live traffic interleaves. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    replay_job *j = arg;
    int64_t now = sophia_now_mono_us();
    double cap = j->rate * SAVE_MS / 1000.0;
    int turn = 0;
    j->tokens += j->rate * (double)(now - j->last_us) / 1e6;
    if (j->tokens > (cap < 1 ? 1 : cap))
        j->tokens = cap < 1 ? 1 : cap;
    j->last_us = now;
    while (j->state == RUNNING && !j->busy && now >= j->wait_until_us) {
        if (j->limit && j->done >= j->limit) {
            finish(j, DONE, NULL);
            return;
        }
        if (j->at >= j->npage) {
            if (j->page && j->page_last) {
                finish(j, DONE, NULL);
                return;
            }
            read_page(j);
            return;
        }
        if (j->tokens < 1)
            return;
        if (++turn > TURN_MAX) { /* the rest after live traffic had a go */
            wake(j);
            return;
        }
        j->tokens -= 1;
        run_entry(j);
    }
}

/* ---------------------------------------------------------- registry */

sophia_replays *sophia_replays_new(struct event_base *base, const char *url)
{
    sophia_replays *rp = calloc(1, sizeof(*rp));
    if (!rp)
        return NULL;
    rp->base = base;
    if (url && *url) { /* connected now, so the first replay finds it up */
        rp->url = strdup(url);
        rp->rd = sophia_redis_new(base, url);
    }
    if (!(rp->jobs = sophia_dict_new())) {
        free(rp);
        return NULL;
    }
    return rp;
}

static void cancel_one(const char *key, void *val, void *arg)
{
    (void)key;
    (void)arg;
    finish(val, CANCELLED, "sophiad is stopping");
}

void sophia_replays_free(sophia_replays *rp)
{
    if (!rp)
        return;
    sophia_dict_each(rp->jobs, cancel_one, NULL);
    /* Reads still out are answered NULL now, to jobs already cancelled. */
    sophia_redis_free(rp->rd);
    sophia_dict_free(rp->jobs, job_free);
    free(rp->url);
    free(rp);
}

static void count_running(const char *key, void *val, void *arg)
{
    (void)key;
    const replay_job *j = val;
    *(int *)arg += j->state < DONE;
}

/* One connection for every replay, made again when redis.url changed
 * (only when no replay reads on the old one). 0, or an HTTP status. */
static int connect_redis(sophia_replays *rp, const char *url)
{
    if (!url || !*url)
        return 400;
    if (rp->rd && rp->url && !strcmp(rp->url, url))
        return 0;
    int running = 0;
    sophia_dict_each(rp->jobs, count_running, &running);
    if (running)
        return 409;
    sophia_redis_free(rp->rd);
    free(rp->url);
    rp->url = strdup(url);
    rp->rd = sophia_redis_new(rp->base, url);
    return rp->rd && rp->url ? 0 : 500;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* A dry run's own instance of the target, loaded in a runtime with no
 * environment: its state starts empty, what it stages only ever changes
 * it, its timers never run (the runtime is bound to no loop), and an
 * applied effect would go nowhere. 1, or 0 with the reason logged. */
static int load_fresh(replay_job *j, const sophia_replay_spec *sp)
{
    const sophia_conf_instance *ci =
        sophia_conf_instance_find(sp->conf, sp->instance);
    sophia_diag d;
    sophia_diag_init(&d);
    j->rt = ci ? sophia_host_rt_new() : NULL;
    j->fresh = j->rt ? sophia_plugin_load(sp->conf, ci,
                                          sophia_host_rt_table(j->rt), &d)
                     : NULL;
    if (!j->fresh)
        sophia_error("replay", "msg=\"cannot load a fresh instance\" "
                     "instance=%s why=\"%s\"", sp->instance,
                     d.count ? d.lines[0] : "no such instance");
    sophia_diag_free(&d);
    return j->fresh != NULL;
}

static replay_job *job_new(sophia_replays *rp, const sophia_replay_spec *sp,
                           const char *key)
{
    replay_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    const sophia_conf_stream *cs = sp->stream;
    j->rp = rp;
    j->stream = xstrdup(cs->name);
    j->key = xstrdup(key);
    j->field = xstrdup(cs->redis.field ? cs->redis.field : "data");
    j->instance = xstrdup(sp->instance);
    j->from = xstrdup(sp->from);
    j->to = xstrdup(sp->to);
    j->dry_run = sp->dry_run;
    j->rate = sp->rate;
    j->limit = sp->limit;
    j->max_attempts = cs->max_attempts ? cs->max_attempts : 3;
    j->find = sp->find;
    j->find_arg = sp->find_arg;
    j->state = COUNTING;
    snprintf(j->after, sizeof(j->after), "%s", sp->from);
    const char *err = NULL;
    j->filter = sophia_filter_new(cs->filter, cs->nfilter, &err);
    j->tick = event_new(rp->base, -1, EV_PERSIST, on_tick, j);
    j->kick = event_new(rp->base, -1, 0, on_tick, j);
    if (sp->dry_run && !load_fresh(j, sp)) {
        job_free(j);
        return NULL;
    }
    if (sp->dry_run) {
        j->done_fn = sp->done;
        j->done_arg = sp->done_arg;
        j->out = open_memstream(&j->out_buf, &j->out_len);
    }
    if (!j->stream || !j->key || !j->field || !j->instance || !j->from ||
        !j->to || err || !j->tick || !j->kick || (sp->dry_run && !j->out)) {
        j->done_fn = NULL;
        job_free(j);
        return NULL;
    }
    return j;
}

int sophia_replay_start(sophia_replays *rp, const sophia_replay_spec *sp,
                        char *why, size_t n)
{
    const sophia_conf_stream *cs = sp->stream;
    char key[512];
    if (!sophia_durable_enabled(sp->conf, cs) && !cs->redis.key) {
        snprintf(why, n, "stream '%s' keeps no history to replay: it is "
                 "neither durable nor fed by a Redis stream", cs->name);
        return 400;
    }
    const replay_job *was = sophia_dict_get(rp->jobs, cs->name);
    if (was && was->state < DONE) {
        snprintf(why, n, "a replay of stream '%s' is already running (%llu "
                 "of %llu done)", cs->name, (unsigned long long)was->done,
                 (unsigned long long)was->total);
        return 409;
    }
    if (was && was->busy) { /* a cancelled one's read or apply is out */
        snprintf(why, n, "the cancelled replay of stream '%s' is settling "
                 "its last event; retry in a moment", cs->name);
        return 409;
    }
    int rc = connect_redis(rp, sp->conf->redis_url);
    if (rc) {
        snprintf(why, n, rc == 409 ? "redis.url changed while a replay "
                 "runs; retry once it ended" : rc == 400 ? "no Redis is "
                 "configured" : "out of memory");
        return rc;
    }
    if (!sophia_redis_up(rp->rd)) {
        snprintf(why, n, "Redis is unreachable for the replay: %s",
                 sophia_redis_last_error(rp->rd) ? sophia_redis_last_error(rp->rd)
                                                 : "not connected yet");
        return 503;
    }
    replay_job *j = job_new(rp, sp, sophia_durable_key(sp->conf, cs, key,
                                                       sizeof(key)));
    if (!j) {
        snprintf(why, n, "cannot start the replay: %s", sp->dry_run
                 ? "a fresh instance of the target did not load (see the "
                   "log)" : "out of memory");
        return 500;
    }
    job_free(sophia_dict_set(rp->jobs, cs->name, j));
    j->last_us = sophia_now_mono_us();
    struct timeval tv = {0, TICK_MS * 1000};
    event_add(j->tick, &tv);
    read_page(j);
    if (j->state == FAILED) {
        snprintf(why, n, "Redis is unreachable: %s",
                 sophia_redis_last_error(rp->rd) ? sophia_redis_last_error(rp->rd)
                                                 : "not connected");
        j->done_fn = NULL;
        return 503;
    }
    sophia_info("replay", "msg=\"replay started\" stream=%s key=%s from=%s "
                "to=%s instance=%s dry_run=%d rate=%g", j->stream, j->key,
                j->from, j->to, j->instance, j->dry_run, j->rate);
    return 0;
}

int sophia_replay_cancel(sophia_replays *rp, const char *stream)
{
    replay_job *j = rp ? sophia_dict_get(rp->jobs, stream) : NULL;
    if (!j || j->state >= DONE)
        return -1;
    finish(j, CANCELLED, "cancelled by request");
    return 0;
}

json_t *sophia_replays_stats_json(const sophia_replays *rp, const char *stream)
{
    const replay_job *j = rp ? sophia_dict_get(rp->jobs, stream) : NULL;
    if (!j)
        return NULL;
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:f}", "from", j->from,
        "to", j->to, "target", j->instance, "dry_run", j->dry_run, "done",
        (json_int_t)j->done, "total", (json_int_t)j->total, "applied",
        (json_int_t)j->applied, "dropped", (json_int_t)j->dropped, "filtered",
        (json_int_t)j->filtered, "failed", (json_int_t)j->failed, "state",
        state_name[j->state], "rate", j->rate);
    if (o && j->error)
        json_object_set_new(o, "error", json_string(j->error));
    return o;
}
