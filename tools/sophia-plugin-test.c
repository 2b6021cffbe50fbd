/*
 * sophia-plugin-test - run one plugin without the daemon and print what it
 * does.
 *
 *   sophia-plugin-test PLUGIN.so [--options YAML] [--stream NAME]
 *                      [--now-us N] [--log-level L] < events.ndjson
 *
 * The plugin goes through the daemon's own loader (core/plugin/plugin.c: ABI
 * check, descriptor checks, options typed against its option table, init),
 * so what loads here loads in sophiad and what is refused here is refused
 * there with the same `FILE:LINE:COL: message`. --options is a YAML file,
 * or YAML text when no such file exists, holding what would sit under
 * `options:` in sophia.yaml; its positions are the ones reported.
 *
 * Each input line is one JSON event (a JSON array is split into one event
 * per element, as /ingest does). The processor's queued actions are turned
 * into JSON by the core (sophia_ctx_actions_json, the same topics
 * sophia_ctx_apply would publish to) and printed, one JSON line each,
 * followed by one verdict line per event:
 *
 *   {"event":1,"action":"publish","type":"metric","topics":[...],...}
 *   {"event":1,"verdict":"ok","actions":2}
 *
 * Nothing is applied to a real cache or router; instead the cache puts and
 * invalidations of events whose verdict is `ok` are kept in an in-memory
 * map that the plugin's cache_peek reads, so read-modify-write processors
 * behave as they would against a warm L1; cache_get (and its 1.1 form
 * cache_get_ex) reads the same map, and so does a processor's prefetch
 * (SDK 1.1): each key it names is answered from the map and printed as
 * {"event":N,"prefetch":KEY,"found":true|false} before the actions.
 *
 * Timers (SDK 1.1) run on a virtual clock that only the input moves: a
 * line `#advance SECONDS` advances it, firing every timer that falls due
 * on the way, earliest first (a repeating one as often as it falls due),
 * each printed like an event, `{"timer":ID,...}` lines then
 * `{"timer":ID,"rc":RC,"actions":N}`. Real time never fires one, so the
 * output is the same on every run; now_us() and received_us move with the
 * clock too (from --now-us, or the real clock when it is not given).
 * memory_store calls are printed as `memory_store` actions in call order
 * (the daemon keeps them apart from the ctx's list). Counters (counter_add)
 * are printed at the end. Logs from the plugin go to stderr.
 *
 * Exit status: 0; 1 when the plugin does not load or an input line is not
 * JSON; 2 on a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "conf/config.h"
#include "lib/diag.h"
#include "host/host.h"
#include "host/prefetch.h"
#include "lib/log.h"
#include "event/loop.h"
#include "plugin/plugin.h"


typedef struct tool_args {
    const char *plugin;
    const char *options; /* file or inline YAML, or NULL */
    const char *stream;
    const char *instance;
    long long now_us; /* 0 = the real clock */
} tool_args;

static json_t *cache_store; /* key -> {"value":..., "tags":[...]} */
/* memory_store calls of the current event: [{"pos":N, "action":{...}}],
 * pos = how many ctx actions preceded it, to print them in call order. */
static json_t *pending_memories;
static long long fixed_now_us;
static sophia_host *tool_host; /* a runtime's table, a few entries replaced */

/* A timer on the virtual clock (#advance moves it). */
typedef struct tool_timer {
    struct tool_timer *next;
    sophia_self *self;
    int64_t id;
    int64_t due_us, repeat_us; /* on the virtual clock; repeat 0: once */
    int (*cb)(void *arg, sophia_ctx *ctx);
    void *arg;
} tool_timer;

static tool_timer *timers;
static int64_t timer_last_id;
static int64_t vclock_us; /* advanced so far by #advance */
#define TOOL_MAX_FIRES 1000000 /* per #advance: a runaway repeat stops */

/* ---------------------------------------------------------- arguments */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sophia-plugin-test PLUGIN.so [--options YAML] "
            "[--stream NAME]\n"
            "                          [--instance NAME] [--now-us N] "
            "[--log-level L] < events.ndjson\n"
            "\n"
            "Loads PLUGIN.so through sophiad's loader, feeds it one event "
            "per input\nline (NDJSON) and prints every action it queues, "
            "then its verdict, as\nJSON lines. --options is a YAML file "
            "or inline YAML: the mapping that\nwould sit under `options:` "
            "in sophia.yaml.\nA line `#advance SECONDS` moves the virtual "
            "clock on, firing the timers\n(host->timer_add) that fall due "
            "on the way.\n");
}

static int parse_args(int argc, char **argv, tool_args *a)
{
    static const struct option longopts[] = {
        {"options", required_argument, NULL, 'o'},
        {"stream", required_argument, NULL, 's'},
        {"instance", required_argument, NULL, 'i'},
        {"now-us", required_argument, NULL, 'n'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, lvl;
    char *end;
    while ((c = getopt_long(argc, argv, "o:s:i:n:l:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o':
            a->options = optarg;
            break;
        case 's':
            a->stream = optarg;
            break;
        case 'i':
            a->instance = optarg;
            break;
        case 'n':
            errno = 0;
            a->now_us = strtoll(optarg, &end, 10);
            if (errno || *end || a->now_us <= 0) {
                fprintf(stderr, "sophia-plugin-test: --now-us wants a "
                                "positive integer, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'l':
            if ((lvl = sophia_log_parse_level(optarg)) < 0) {
                fprintf(stderr, "sophia-plugin-test: unknown log level "
                                "'%s'\n", optarg);
                return 2;
            }
            sophia_log_set_level((sophia_log_lvl)lvl);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    a->plugin = argv[optind];
    return 0;
}

/* ------------------------------------------------------------ options */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t cap = 0;
    FILE *mem = open_memstream(&buf, &cap);
    char chunk[4096];
    size_t n;
    while (mem && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        fwrite(chunk, 1, n, mem);
    fclose(f);
    if (!mem)
        return NULL;
    fclose(mem);
    *len = cap;
    return buf;
}

static void set_pos(int *line, int *col, const yaml_node_t *n)
{
    *line = (int)n->start_mark.line + 1;
    *col = (int)n->start_mark.column + 1;
}

/* One `key: value` of the options mapping into `o`; -1 when the value is
 * neither a scalar nor a sequence of scalars (reported). */
static int option_from_yaml(yaml_document_t *doc, yaml_node_pair_t *p,
                            const char *file, sophia_conf_opt *o,
                            sophia_diag *d)
{
    yaml_node_t *k = yaml_document_get_node(doc, p->key);
    yaml_node_t *v = yaml_document_get_node(doc, p->value);
    set_pos(&o->key_line, &o->key_col, k);
    set_pos(&o->line, &o->col, v);
    if (k->type != YAML_SCALAR_NODE) {
        sophia_diag_add(d, file, o->key_line, o->key_col,
                        "option names must be scalars");
        return -1;
    }
    o->key = strdup((const char *)k->data.scalar.value);
    if (v->type == YAML_SCALAR_NODE) {
        o->scalar = strdup((const char *)v->data.scalar.value);
        return 0;
    }
    if (v->type == YAML_SEQUENCE_NODE) {
        o->is_seq = 1;
        yaml_node_item_t *it = v->data.sequence.items.start;
        size_t n = (size_t)(v->data.sequence.items.top - it);
        o->items = calloc(n + 1, sizeof(char *));
        for (size_t i = 0; o->items && i < n; i++) {
            yaml_node_t *e = yaml_document_get_node(doc, it[i]);
            if (e->type != YAML_SCALAR_NODE) {
                int l, c;
                set_pos(&l, &c, e);
                sophia_diag_add(d, file, l, c, "option '%s': sequence items "
                                "must be scalars", o->key);
                return -1;
            }
            o->items[o->nitems++] = strdup((const char *)e->data.scalar.value);
        }
        return 0;
    }
    sophia_diag_add(d, file, o->line, o->col, "option '%s': values must be a "
                    "scalar or a sequence of scalars, got a mapping", o->key);
    return -1;
}

/* The options mapping of `yaml` into `ci`; 0, or -1 with diagnostics. */
static int options_from_text(const char *file, const char *yaml, size_t len,
                             sophia_conf_instance *ci, sophia_diag *d)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = -1;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        sophia_diag_add(d, file, (int)parser.problem_mark.line + 1,
                        (int)parser.problem_mark.column + 1, "YAML: %s",
                        parser.problem ? parser.problem : "syntax error");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || (root->type == YAML_SCALAR_NODE &&
                  !*(const char *)root->data.scalar.value)) {
        rc = 0; /* empty: no options */
    } else if (root->type != YAML_MAPPING_NODE) {
        int l, c;
        set_pos(&l, &c, root);
        sophia_diag_add(d, file, l, c, "options must be a mapping of option "
                        "names to values");
    } else {
        set_pos(&ci->line, &ci->col, root);
        yaml_node_pair_t *p = root->data.mapping.pairs.start;
        size_t n = (size_t)(root->data.mapping.pairs.top - p);
        ci->opts = calloc(n + 1, sizeof(*ci->opts));
        rc = ci->opts ? 0 : -1;
        for (size_t i = 0; ci->opts && i < n; i++)
            if (option_from_yaml(&doc, &p[i], file, &ci->opts[ci->nopts++], d))
                rc = -1;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

static int load_options(const char *arg, sophia_conf *c,
                        sophia_conf_instance *ci, sophia_diag *d)
{
    struct stat st;
    if (!arg)
        return 0;
    if (stat(arg, &st) == 0 && S_ISREG(st.st_mode)) {
        size_t len;
        char *text = read_file(arg, &len);
        if (!text) {
            sophia_diag_add(d, arg, 0, 0, "cannot read: %s", strerror(errno));
            return -1;
        }
        c->file = strdup(arg);
        int rc = options_from_text(c->file, text, len, ci, d);
        free(text);
        return rc;
    }
    c->file = strdup("<options>");
    return options_from_text(c->file, arg, strlen(arg), ci, d);
}

/* c->plugin_path's one entry: the directory of PLUGIN.so */
static char *plugin_dir;

static void options_free(sophia_conf *c, sophia_conf_instance *ci)
{
    for (size_t i = 0; i < ci->nopts; i++) {
        free(ci->opts[i].key);
        free(ci->opts[i].scalar);
        for (size_t k = 0; k < ci->opts[i].nitems; k++)
            free(ci->opts[i].items[k]);
        free(ci->opts[i].items);
    }
    free(ci->opts);
    free(ci->plugin);
    free(c->file);
    free(plugin_dir);
    plugin_dir = NULL;
}

/* ------------------------------------------------- the replaced host calls */

/* Through the tiers, here the in-memory map: answered before returning,
 * which the SDK allows. */
static int tool_cache_get(const char *key,
                          void (*cb)(void *arg, int rc, const sophia_json *v),
                          void *arg)
{
    if (!key || !cb)
        return SOPHIA_EINVAL;
    json_t *e = json_object_get(cache_store, key);
    cb(arg, e ? 0 : SOPHIA_ENOENT,
       e ? (const sophia_json *)json_object_get(e, "value") : NULL);
    return 0;
}

/* The 1.1 form: the same map, answered at once, so nothing is pending
 * when the instance goes. */
static int tool_cache_get_ex(sophia_self *self, const char *key,
                             void (*cb)(void *arg, int rc, const sophia_json *v),
                             void *arg)
{
    return self ? tool_cache_get(key, cb, arg) : SOPHIA_EINVAL;
}

/* The daemon's memory_store keeps its actions out of the ctx's list (and
 * refuses without a memory store), so the tool records them itself. */
static int tool_memory_store(sophia_ctx *ctx, const char *content,
                             const char *memory_type, sophia_json *context,
                             double importance)
{
    json_t *c = context ? (json_t *)context : json_object();
    if (!content || !json_is_object(c)) {
        json_decref(c);
        return SOPHIA_EINVAL;
    }
    json_t *before = (json_t *)sophia_ctx_actions_json(ctx);
    json_t *a = json_pack("{s:s, s:s, s:s, s:o}", "action", "memory_store",
                          "content", content, "memory_type",
                          memory_type ? memory_type : "fact", "context", c);
    if (a && importance >= 0)
        json_object_set_new(a, "importance", json_real(importance));
    json_array_append_new(pending_memories,
                          json_pack("{s:I, s:o}", "pos",
                                    (json_int_t)json_array_size(before),
                                    "action", a));
    json_decref(before);
    return a ? 0 : SOPHIA_ENOMEM;
}

/* The ctx's actions with the recorded memory_store calls in call order;
 * takes `actions`, empties pending_memories. */
static json_t *with_memories(json_t *actions)
{
    json_t *out = json_array(), *a, *m;
    size_t i, next = 0, nmem = json_array_size(pending_memories);
    json_array_foreach(actions, i, a) {
        while (next < nmem &&
               json_integer_value(json_object_get(
                   m = json_array_get(pending_memories, next), "pos")) <=
                   (json_int_t)i) {
            json_array_append(out, json_object_get(m, "action"));
            next++;
        }
        json_array_append(out, a);
    }
    for (; next < nmem; next++)
        json_array_append(out, json_object_get(
                                   json_array_get(pending_memories, next),
                                   "action"));
    json_array_clear(pending_memories);
    json_decref(actions);
    return out;
}

static sophia_json *tool_cache_peek(const char *key)
{
    json_t *e = key ? json_object_get(cache_store, key) : NULL;
    return e ? (sophia_json *)json_deep_copy(json_object_get(e, "value"))
             : NULL;
}

static int64_t tool_now_us(void)
{
    return (fixed_now_us ? fixed_now_us : sophia_now_wall_us()) + vclock_us;
}

/* Keys carrying `tag`, dropped from the in-memory cache. */
static void store_drop_tag(const char *tag)
{
    const char *key;
    json_t *e, *t;
    void *tmp;
    size_t i;
    json_object_foreach_safe(cache_store, tmp, key, e) {
        json_array_foreach(json_object_get(e, "tags"), i, t) {
            if (json_is_string(t) && strcmp(json_string_value(t), tag) == 0) {
                json_object_del(cache_store, key);
                break;
            }
        }
    }
}

/* What sophia_ctx_apply would do to the cache, done to the map. */
static void store_apply(json_t *actions)
{
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a) {
        const char *kind = json_string_value(json_object_get(a, "action"));
        if (!kind)
            continue;
        if (strcmp(kind, "cache_put") == 0)
            json_object_set_new(cache_store,
                                json_string_value(json_object_get(a, "key")),
                                json_pack("{s:O, s:O}", "value",
                                          json_object_get(a, "value"), "tags",
                                          json_object_get(a, "tags")));
        else if (strcmp(kind, "cache_invalidate") == 0)
            json_object_del(cache_store,
                            json_string_value(json_object_get(a, "key")));
        else if (strcmp(kind, "cache_invalidate_tag") == 0)
            store_drop_tag(json_string_value(json_object_get(a, "tag")));
    }
}

/* ------------------------------------------------------------- timers */

/* As host_timer.c bounds them: 0 .. 10 years, a repeat of at least 1 ms. */
static int tool_bad_seconds(double v)
{
    return !(v >= 0 && v <= SOPHIA_CACHE_MAX_TTL);
}

static int64_t tool_timer_add(sophia_self *self, double delay_s,
                              double repeat_s,
                              int (*cb)(void *arg, sophia_ctx *ctx), void *arg)
{
    if (!self || !cb || tool_bad_seconds(delay_s) ||
        tool_bad_seconds(repeat_s) || (repeat_s > 0 && repeat_s < 0.001))
        return SOPHIA_EINVAL;
    tool_timer *t = calloc(1, sizeof(*t));
    if (!t)
        return SOPHIA_ENOMEM;
    *t = (tool_timer){.self = self, .id = ++timer_last_id, .cb = cb,
                      .arg = arg, .due_us = vclock_us + (int64_t)(delay_s * 1e6),
                      .repeat_us = (int64_t)(repeat_s * 1e6)};
    t->next = timers;
    timers = t;
    return t->id;
}

/* Unlinks timer `id` of `self` (any instance's when self is NULL). */
static tool_timer *timer_take(const sophia_self *self, int64_t id)
{
    for (tool_timer **p = &timers; *p; p = &(*p)->next) {
        tool_timer *t = *p;
        if (t->id == id && (!self || t->self == self)) {
            *p = t->next;
            return t;
        }
    }
    return NULL;
}

static int tool_timer_del(sophia_self *self, int64_t id)
{
    tool_timer *t = timer_take(self, id);
    free(t);
    return t ? 0 : SOPHIA_ENOENT;
}

static void timers_free(void)
{
    while (timers) {
        tool_timer *t = timers;
        timers = t->next;
        free(t);
    }
}

/* The timer due first at or before `until_us` (ties: the older id). */
static tool_timer *timer_next_due(int64_t until_us)
{
    tool_timer *best = NULL;
    for (tool_timer *t = timers; t; t = t->next)
        if (t->due_us <= until_us &&
            (!best || t->due_us < best->due_us ||
             (t->due_us == best->due_us && t->id < best->id)))
            best = t;
    return best;
}

static void print_actions(json_t *actions, const char *what, int64_t id);
static void print_line(json_t *o);

/* Fires timer t at its due time, as host_timer.c does: re-armed (or
 * removed) first, since the callback may delete it; its actions are
 * applied (here: to the map) and its staged state committed when it
 * returns 0. */
static void timer_fire(sophia_instance *inst, tool_timer *t)
{
    vclock_us = t->due_us;
    int64_t id = t->id;
    int (*cb)(void *, sophia_ctx *) = t->cb;
    void *arg = t->arg;
    if (t->repeat_us > 0)
        t->due_us += t->repeat_us;
    else
        free(timer_take(NULL, id));
    sophia_ctx *ctx = sophia_ctx_new(inst, NULL);
    int rc = ctx ? cb(arg, ctx) : SOPHIA_ENOMEM;
    json_t *actions = with_memories((json_t *)sophia_ctx_actions_json(ctx));
    if (rc == 0)
        sophia_ctx_commit(ctx);
    sophia_ctx_free(ctx);
    print_actions(actions, "timer", id);
    if (rc == 0)
        store_apply(actions);
    print_line(json_pack("{s:I, s:I, s:i, s:I}", "timer", (json_int_t)id,
                         "at_us", (json_int_t)tool_now_us(), "rc", rc,
                         "actions", (json_int_t)json_array_size(actions)));
    json_decref(actions);
    fflush(stdout);
}

/* `#advance SECONDS`: 0, or -1 when SECONDS is not a number of seconds
 * in 0 .. 10 years or a timer keeps falling due (reported). */
static int run_advance(sophia_instance *inst, const char *arg, size_t lineno)
{
    char *end;
    double s = strtod(arg, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == arg || *end || tool_bad_seconds(s)) {
        fprintf(stderr, "<stdin>:%zu: #advance wants seconds (0 .. "
                "315360000), got '%s'\n", lineno, arg);
        return -1;
    }
    int64_t until = vclock_us + (int64_t)(s * 1e6);
    tool_timer *t;
    for (size_t n = 0; (t = timer_next_due(until)); n++) {
        if (n == TOOL_MAX_FIRES) {
            fprintf(stderr, "<stdin>:%zu: #advance stopped after %d timer "
                    "callbacks\n", lineno, TOOL_MAX_FIRES);
            return -1;
        }
        timer_fire(inst, t);
    }
    vclock_us = until;
    return 0;
}

/* -------------------------------------------------------------- events */

static void print_line(json_t *o)
{
    /* 15 digits: 0.8 prints as 0.8, not 0.80000000000000004. */
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY |
                                JSON_REAL_PRECISION(15));
    if (s)
        puts(s);
    free(s);
    json_decref(o);
}

/* One line per action, led by {"<what>": id}. */
static void print_actions(json_t *actions, const char *what, int64_t id)
{
    size_t i;
    json_t *a;
    json_array_foreach(actions, i, a) {
        json_t *line = json_pack("{s:I}", what, (json_int_t)id);
        json_object_update(line, a);
        print_line(line);
    }
}

/* A processor's prefetch (SDK 1.1), answered from the in-memory cache as
 * the tiers would answer it, one {"event":N,"prefetch":KEY,"found":B}
 * line a key. 0, or the prefetch's error (the event is then a retry). */
static int prefetch_from_map(sophia_instance *inst, sophia_ctx *ctx,
                             const sophia_event *ev, size_t seq)
{
    if (!sophia_prefetch_wanted(inst))
        return 0;
    int rc = sophia_prefetch_collect(inst, ctx, ev);
    const char *key;
    for (size_t i = 0; !rc && (key = sophia_prefetch_key(ctx, i)); i++) {
        json_t *e = json_object_get(cache_store, key);
        sophia_prefetch_answer(ctx, key,
                               (const sophia_json *)json_object_get(e, "value"));
        print_line(json_pack("{s:I, s:s, s:b}", "event", (json_int_t)seq,
                             "prefetch", key, "found", e != NULL));
    }
    return rc;
}

/* Runs one event through process() and prints its actions and verdict. */
static void run_event(sophia_instance *inst, const char *stream,
                      const json_t *body, size_t seq)
{
    sophia_event ev = {
        .struct_size = sizeof(sophia_event),
        .stream = stream,
        .id = NULL,
        .source = "test",
        .body = (const sophia_json *)body,
        .received_us = tool_now_us(),
    };
    sophia_ctx *ctx = sophia_ctx_new(inst, stream);
    sophia_verdict v = prefetch_from_map(inst, ctx, &ev, seq)
                           ? SOPHIA_PROCESS_RETRY
                           : sophia_ctx_process(ctx, &ev);
    json_t *actions = with_memories((json_t *)sophia_ctx_actions_json(ctx));
    if (v == SOPHIA_PROCESS_OK) /* as the host does once effects commit */
        sophia_ctx_commit(ctx);
    sophia_ctx_free(ctx); /* otherwise staged state is discarded */

    print_actions(actions, "event", (int64_t)seq);
    if (v == SOPHIA_PROCESS_OK)
        store_apply(actions);
    print_line(json_pack("{s:I, s:s, s:I}", "event", (json_int_t)seq,
                         "verdict", sophia_verdict_name(v), "actions",
                         (json_int_t)json_array_size(actions)));
    json_decref(actions);
    fflush(stdout);
}

/* One NDJSON line: an event, or an array of events. 0, or -1 when the
 * line is not JSON (reported on stderr with its line number). */
static int run_line(sophia_instance *inst, const char *stream,
                    const char *line, size_t lineno, size_t *seq)
{
    if (!strncmp(line, "#advance ", 9))
        return run_advance(inst, line + 9, lineno);
    json_error_t err;
    json_t *v = json_loads(line, JSON_DECODE_ANY, &err);
    if (!v) {
        fprintf(stderr, "<stdin>:%zu:%d: not JSON: %s\n", lineno, err.column,
                err.text);
        return -1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) run_event(inst, stream, e, ++*seq);
    } else {
        run_event(inst, stream, v, ++*seq);
    }
    json_decref(v);
    return 0;
}

static int run_input(sophia_instance *inst, const char *stream, FILE *in)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0, seq = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strspn(line, " \t") == (size_t)n)
            continue;
        if (run_line(inst, stream, line, lineno, &seq))
            rc = 1;
    }
    free(line);
    return rc;
}

static void print_counter(const char *instance, const char *name,
                          double value, void *arg)
{
    (void)arg;
    print_line(json_pack("{s:s, s:s, s:f}", "counter", name, "instance",
                         instance, "value", value));
}

/* ---------------------------------------------------------------- main */

/* The loader takes a module name and looks it up on plugins.path (never
 * a path: see plugin.c), so PLUGIN.so becomes that name in its directory. */

static char *module_path(const char *arg, sophia_conf *c)
{
    const char *slash = strrchr(arg, '/');
    free(plugin_dir);
    plugin_dir = !slash ? strdup(".")
                 : slash == arg ? strdup("/")
                                : strndup(arg, (size_t)(slash - arg));
    c->plugin_path = &plugin_dir;
    c->nplugin_path = plugin_dir ? 1 : 0;
    return strdup(slash ? slash + 1 : arg);
}

static sophia_instance *load(const tool_args *a, sophia_conf *c,
                             sophia_conf_instance *ci)
{
    sophia_diag d;
    sophia_diag_init(&d);
    sophia_instance *inst = NULL;
    ci->name = (char *)(a->instance ? a->instance : "test");
    ci->plugin = module_path(a->plugin, c);
    c->instances = ci;
    c->ninstances = 1;
    if (ci->plugin && load_options(a->options, c, ci, &d) == 0) {
        if (!c->file)
            c->file = strdup("<command line>");
        inst = sophia_plugin_load(c, ci, tool_host, &d);
    }
    if (inst && inst->desc->kind != SOPHIA_KIND_PROCESSOR) {
        sophia_diag_add(&d, c->file, 0, 0, "plugin '%s' is a %s: "
                        "sophia-plugin-test runs processors only",
                        inst->desc->name,
                        sophia_plugin_kind_name(inst->desc->kind));
        sophia_plugin_unload(inst);
        inst = NULL;
    }
    sophia_diag_print(&d, stderr);
    sophia_diag_free(&d);
    return inst;
}

int main(int argc, char **argv)
{
    tool_args a = {.stream = "test"};
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    fixed_now_us = a.now_us;
    sophia_host_rt *rt = sophia_host_rt_new();
    if (!(tool_host = sophia_host_rt_table(rt))) {
        fprintf(stderr, "sophia-plugin-test: out of memory\n");
        return 1;
    }
    tool_host->cache_peek = tool_cache_peek;
    tool_host->now_us = tool_now_us;
    tool_host->cache_get = tool_cache_get;
    tool_host->cache_get_ex = tool_cache_get_ex;
    tool_host->memory_store = tool_memory_store;
    tool_host->timer_add = tool_timer_add;
    tool_host->timer_del = tool_timer_del;
    if (!(cache_store = json_object()) ||
        !(pending_memories = json_array()) || sophia_plugin_system_init()) {
        fprintf(stderr, "sophia-plugin-test: cannot initialize\n");
        return 1;
    }

    sophia_conf c = {0};
    sophia_conf_instance ci = {0};
    sophia_instance *inst = load(&a, &c, &ci);
    if (inst) {
        rc = run_input(inst, a.stream, stdin);
        sophia_host_counters_each(rt, print_counter, NULL);
        timers_free(); /* before fini: as the host cancels an instance's */
        sophia_plugin_unload(inst);
    } else {
        rc = 1;
    }
    options_free(&c, &ci);
    sophia_host_rt_free(rt);
    sophia_plugin_system_shutdown();
    json_decref(cache_store);
    json_decref(pending_memories);
    return rc;
}
