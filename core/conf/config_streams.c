/*
 * config_streams - the `streams:` section: each named stream's fields, its
 * redis and statsd sources, its processor chain, and its filters (each a
 * sequence of predicate mappings turned into sophia_conf_pred, regexes
 * compiled here so a bad one is an error at its position, not at the
 * first event).
 *
 * Stream defaults (queue, batch, dedup window, Redis reading) are set here
 * when an entry is created, so a stream that names only its processor is
 * complete.
 */
#include "conf/config_priv.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/cidr.h"
#include "lib/regex_size.h"

#define DEFAULT_STREAM_QUEUE 10000
#define DEFAULT_STREAM_BATCH 256

/* ---- streams.<name>.filter: a sequence of predicate mappings ----------- */

static const struct {
    const char *key;
    sophia_pred_op op;
} pred_ops[] = {
    {"equals", SOPHIA_PRED_EQUALS}, {"not_equals", SOPHIA_PRED_NOT_EQUALS},
    {"in", SOPHIA_PRED_IN},         {"not_in", SOPHIA_PRED_NOT_IN},
    {"exists", SOPHIA_PRED_EXISTS}, {"gt", SOPHIA_PRED_GT},
    {"gte", SOPHIA_PRED_GTE},       {"lt", SOPHIA_PRED_LT},
    {"lte", SOPHIA_PRED_LTE},       {"matches", SOPHIA_PRED_MATCHES},
};

/* The operand of `op` (node v) into p; reports and returns -1 if bad. */
static int pred_operand(loader *ld, sophia_conf_pred *p, const node *v,
                        const char *path)
{
    if (p->op == SOPHIA_PRED_IN || p->op == SOPHIA_PRED_NOT_IN) {
        if (v->kind != NODE_SEQ) {
            ERR(ld, v, "%s: expected a sequence of values, got %s", path,
                conf_kind_name(v));
            return -1;
        }
        for (size_t i = 0; i < v->nkids; i++) {
            const char *s = conf_want_scalar(ld, v->kids[i], path, "a scalar");
            if (!s)
                return -1;
            char **slot = GROW(p->items, p->nitems);
            *slot = conf_xstrdup(s);
        }
        return 0;
    }
    const char *s = conf_want_scalar(ld, v, path, "a scalar");
    if (!s)
        return -1;
    if (p->op == SOPHIA_PRED_EXISTS && conf_parse_bool(s) < 0) {
        ERR(ld, v, "%s: expected true or false, got '%s'", path, s);
        return -1;
    }
    if (p->op >= SOPHIA_PRED_GT && p->op <= SOPHIA_PRED_LTE) {
        char *end;
        p->num = strtod(s, &end);
        if (end == s || *end || !isfinite(p->num)) {
            ERR(ld, v, "%s: '%s' is not a number", path, s);
            return -1;
        }
    }
    if (p->op == SOPHIA_PRED_MATCHES) {
        if (sophia_regex_size(s, SOPHIA_REGEX_MAX_NODES) > SOPHIA_REGEX_MAX_NODES) {
            ERR(ld, v, "%s: regular expression '%.80s' is too large: its "
                       "repetitions expand past %d nodes (a repetition of a "
                       "repetition multiplies)", path, s, SOPHIA_REGEX_MAX_NODES);
            return -1;
        }
        regex_t re;
        int rc = regcomp(&re, s, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char why[200];
            regerror(rc, &re, why, sizeof(why));
            ERR(ld, v, "%s: bad regular expression '%s': %s", path, s, why);
            return -1;
        }
        regfree(&re);
    }
    p->value = conf_xstrdup(s);
    return 0;
}

/* One `- path: a.b` + `<op>: operand` (+ `icase: true`) mapping, added
 * to the predicates *arr (*n of them). */
static void filter_item(loader *ld, sophia_conf_pred **arr, size_t *n,
                        const node *m, const char *path)
{
    if (m->kind != NODE_MAP) {
        ERR(ld, m, "%s: each filter entry is a mapping like {path: event.type, "
                   "equals: message}, got %s", path, conf_kind_name(m));
        return;
    }
    sophia_conf_pred p = {0};
    const node *opnode = NULL;
    int bad = 0;
    p.line = m->line;
    p.col = m->col;
    for (size_t i = 0; i + 1 < m->nkids; i += 2) {
        const node *k = m->kids[i], *v = m->kids[i + 1];
        const char *key = k->kind == NODE_SCALAR ? k->text : "";
        size_t o = 0;
        while (o < sizeof(pred_ops) / sizeof(pred_ops[0]) &&
               strcmp(pred_ops[o].key, key))
            o++;
        if (!strcmp(key, "path")) {
            const char *s = conf_want_scalar(ld, v, path, "a dotted JSON path");
            if (s)
                conf_set_str(&p.path, conf_xstrdup(s));
            bad |= !s;
        } else if (!strcmp(key, "icase")) {
            const char *s = conf_want_scalar(ld, v, path, "true or false");
            p.icase = s ? conf_parse_bool(s) == 1 : 0;
        } else if (o < sizeof(pred_ops) / sizeof(pred_ops[0]) && !opnode) {
            p.op = pred_ops[o].op;
            opnode = v;
        } else {
            ERR(ld, k, "%s: unexpected key '%s' (a filter entry has path, one "
                       "of equals, not_equals, in, not_in, exists, gt, gte, "
                       "lt, lte, matches, and icase)", path, key);
            bad = 1;
        }
    }
    if (!p.path && !bad)
        ERR(ld, m, "%s: filter entry has no 'path'", path);
    if (!opnode && !bad)
        ERR(ld, m, "%s: filter entry has no operator (equals, in, exists, gt, "
                   "matches, ...)", path);
    if (!p.path || !opnode || bad || pred_operand(ld, &p, opnode, path)) {
        free(p.path);
        free(p.value);
        for (size_t i = 0; i < p.nitems; i++)
            free(p.items[i]);
        free(p.items);
        return;
    }
    *GROW(*arr, *n) = p;
}

static void filter_seq(loader *ld, const node *v, sophia_conf_pred **arr,
                       size_t *n, const char *path)
{
    if (conf_is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of predicates, got %s", path,
            conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++)
        if (!v->kids[i]->reported)
            filter_item(ld, arr, n, v->kids[i], path);
}

static void walk_filter(loader *ld, const node *v, void *base,
                        const char *path)
{
    sophia_conf_stream *st = base;
    filter_seq(ld, v, &st->filter, &st->nfilter, path);
}

/* ---- streams.<name>.processors: the chain ------------------------------ */

/* One link: an instance name, or {filter: [predicates]}. */
static void chain_link(loader *ld, sophia_conf_stream *st, const node *m,
                       const char *path)
{
    sophia_conf_link *l = GROW(st->chain, st->nchain);
    l->line = m->line;
    l->col = m->col;
    if (m->kind == NODE_SCALAR) {
        l->processor = conf_xstrdup(m->text);
        return;
    }
    if (m->kind != NODE_MAP || m->nkids != 2 ||
        m->kids[0]->kind != NODE_SCALAR || strcmp(m->kids[0]->text, "filter")) {
        ERR(ld, m, "%s: each link is a processor instance name or "
                   "{filter: [predicates]}, got %s", path, conf_kind_name(m));
        return;
    }
    filter_seq(ld, m->kids[1], &l->filter, &l->nfilter, path);
}

static void walk_processors(loader *ld, const node *v, void *base,
                            const char *path)
{
    sophia_conf_stream *st = base;
    if (v->kind != NODE_SEQ || !v->nkids) {
        ERR(ld, v, "%s: expected a sequence of processor instance names (and "
                   "{filter: ...} links), got %s", path,
            v->kind == NODE_SEQ ? "an empty one" : conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++)
        chain_link(ld, st, v->kids[i], path);
}

/* After the walk: `processor: a` is the chain [a]; `processors` names the
 * first processor link as st->processor (the dry run's default target,
 * /api/stats). Exactly one of the two, and a chain with a processor. */
static void chain_finish(loader *ld, sophia_conf_stream *st, const node *k,
                         const node *v, const char *path)
{
    int one = conf_has_key(v, "processor"), many = conf_has_key(v, "processors");
    if (one && many) {
        ERR(ld, k, "%s: give 'processor' or 'processors', not both", path);
        return;
    }
    if (!one && !many) {
        ERR(ld, k, "%s: missing required key 'processor' (a plugin instance "
                   "name) or 'processors' (a chain of them)", path);
        return;
    }
    if (one && st->processor) {
        sophia_conf_link *l = GROW(st->chain, st->nchain);
        l->processor = conf_xstrdup(st->processor);
        l->line = k->line;
        l->col = k->col;
        return;
    }
    for (size_t i = 0; i < st->nchain && !st->processor; i++)
        if (st->chain[i].processor)
            st->processor = conf_xstrdup(st->chain[i].processor);
    if (many && st->nchain && !st->processor)
        ERR(ld, k, "%s.processors: a chain needs at least one processor, not "
                   "only filters", path);
}

#define S_OFF(member) offsetof(sophia_conf_stream, member)

static const field stream_redis_fields[] = {
    {"key", F_STRING, S_OFF(redis.key), 0, NULL, NULL},
    {"group", F_STRING, S_OFF(redis.group), 0, NULL, NULL},
    {"consumer", F_STRING, S_OFF(redis.consumer), 0, NULL, NULL},
    {"field", F_STRING, S_OFF(redis.field), 0, NULL, NULL},
    {"count", F_COUNT, S_OFF(redis.count), 0, NULL, NULL},
    {"block", F_SECONDS, S_OFF(redis.block), 0, NULL, NULL},
    {"claim_idle", F_SECONDS, S_OFF(redis.claim_idle), 0, NULL, NULL},
    {"dead_letter_after", F_COUNT, S_OFF(redis.dead_letter_after), 0, NULL,
     NULL},
    {NULL, 0, 0, 0, NULL, NULL},
};
static const section stream_redis_sec = {"in a stream's redis source",
                                         stream_redis_fields};

static const field stream_retention_fields[] = {
    {"count", F_COUNT, S_OFF(retention.count), 0, NULL, NULL},
    {"age", F_SECONDS, S_OFF(retention.age), 0, NULL, NULL},
    {NULL, 0, 0, 0, NULL, NULL},
};
static const section stream_retention_sec = {"in a stream's retention",
                                             stream_retention_fields};

/* streams.<name>.statsd.listen: HOST:PORT, or PORT / :PORT on loopback
 * (a StatsD port open to the network takes datagrams from anyone). */
static void walk_statsd_listen(loader *ld, const node *v, void *base,
                               const char *path)
{
    sophia_conf_stream *st = base;
    const char *s = conf_want_scalar(ld, v, path, "HOST:PORT or a port");
    char buf[300];
    if (!s)
        return;
    const char *p = *s == ':' ? s + 1 : s;
    if (*p && strspn(p, "0123456789") == strlen(p)) {
        snprintf(buf, sizeof(buf), "127.0.0.1:%s", p);
        s = buf;
    }
    if (sophia_conf_split_listen(s, NULL, NULL)) {
        ERR(ld, v, "%s: '%s' is not HOST:PORT or PORT (IPv6 as [::1]:8125, "
                   "port 1..65535)", path, v->text);
        return;
    }
    conf_set_str(&st->statsd_listen, conf_xstrdup(s));
    st->statsd_line = v->line;
    st->statsd_col = v->col;
}

/* streams.<name>.statsd.allow: [CIDR, ...] */
static void walk_statsd_allow(loader *ld, const node *v, void *base,
                              const char *path)
{
    sophia_conf_stream *st = base;
    if (conf_is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of CIDRs such as [10.0.0.0/8, "
                   "\"fd00::/8\"], got %s", path, conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        if (v->kids[i]->reported)
            continue;
        const char *s = conf_want_scalar(ld, v->kids[i], path, "a CIDR");
        sophia_cidr cidr;
        char why[160];
        if (s && sophia_cidr_parse(s, &cidr, why, sizeof(why)) < 0)
            ERR(ld, v->kids[i], "%s: %s", path, why);
        else if (s)
            *GROW(st->statsd_allow, st->nstatsd_allow) = conf_xstrdup(s);
    }
}

/* streams.<name>.outputs: [instance, ...]; whether each names an output
 * instance is checked where the instances are known (ingest/stream.c). */
static void walk_outputs(loader *ld, const node *v, void *base,
                         const char *path)
{
    sophia_conf_stream *st = base;
    if (conf_is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of output instance names such "
                   "as [audit_hook], got %s", path, conf_kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        const node *k = v->kids[i];
        if (k->reported)
            continue;
        const char *s = conf_want_scalar(ld, k, path, "an instance name");
        if (!s)
            continue;
        int *pos = realloc(st->outputs_pos,
                           2 * (st->noutputs + 1) * sizeof(*pos));
        if (!pos)
            continue;
        st->outputs_pos = pos;
        pos[2 * st->noutputs] = k->line;
        pos[2 * st->noutputs + 1] = k->col;
        *GROW(st->outputs, st->noutputs) = conf_xstrdup(s);
    }
}

static const field stream_statsd_fields[] = {
    {"listen", F_CUSTOM, 0, 0, NULL, walk_statsd_listen},
    {"allow", F_CUSTOM, 0, 0, NULL, walk_statsd_allow},
    {NULL, 0, 0, 0, NULL, NULL},
};
static const section stream_statsd_sec = {"in a stream's statsd source",
                                          stream_statsd_fields};

const field conf_stream_fields[] = {
    {"processor", F_STRING, offsetof(sophia_conf_stream, processor), 0, NULL,
     NULL},
    {"processors", F_CUSTOM, 0, 0, NULL, walk_processors},
    {"outputs", F_CUSTOM, 0, 0, NULL, walk_outputs},
    {"queue_size", F_COUNT, offsetof(sophia_conf_stream, queue_size), 0, NULL,
     NULL},
    {"batch_size", F_COUNT, offsetof(sophia_conf_stream, batch_size), 0, NULL,
     NULL},
    {"filter", F_CUSTOM, 0, 0, NULL, walk_filter},
    {"dedup_key", F_STRING, S_OFF(dedup_key), 0, NULL, NULL},
    {"dedup_window", F_SECONDS, S_OFF(dedup_window), 0, NULL, NULL},
    {"max_attempts", F_COUNT, S_OFF(max_attempts), 0, NULL, NULL},
    {"retry_base", F_SECONDS, S_OFF(retry_base), 0, NULL, NULL},
    {"retry_cap", F_SECONDS, S_OFF(retry_cap), 0, NULL, NULL},
    {"redis", F_SECTION, 0, 0, &stream_redis_sec, NULL},
    {"statsd", F_SECTION, 0, 0, &stream_statsd_sec, NULL},
    {"durable", F_BOOL, S_OFF(durable), 0, NULL, NULL},
    {"retention", F_SECTION, 0, 0, &stream_retention_sec, NULL},
    {NULL, 0, 0, 0, NULL, NULL},
};

static void stream_pair(loader *ld, const node *k, const node *v, void *base,
                        const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (conf_check_named(ld, k, v, path, "stream"))
        return;
    sophia_conf_stream *st = GROW(c->streams, c->nstreams);
    st->name = conf_xstrdup(k->text);
    st->line = k->line;
    st->col = k->col;
    st->queue_size = DEFAULT_STREAM_QUEUE;
    st->batch_size = DEFAULT_STREAM_BATCH;
    st->dedup_window = 300;
    st->max_attempts = 3;
    st->retry_base = 0.1;
    st->retry_cap = 10;
    st->redis.block = 1;
    st->redis.claim_idle = 30;
    st->redis.dead_letter_after = 5;
    st->durable = -1;
    conf_child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in stream '%s'", k->text);
    section sec = {where, conf_stream_fields};
    conf_walk_section(ld, v, &sec, st, sub);
    chain_finish(ld, st, k, v, sub);
}

void conf_walk_streams(loader *ld, const node *v, void *base,
                       const char *path)
{
    conf_each_pair(ld, v, path, stream_pair, base, NULL);
}
