/*
 * slack_state.c - the slack processor's committed state: applying a
 * message's change once its event commits, and the reload hand-over.
 *
 * Only slack_apply (host->stage's apply) and slack_import write the
 * state; slack.c reads it. Bounds: every table evicts its least
 * recently touched entry past its option (max_channels, max_threads,
 * max_messages); a channel's timestamp ring holds what rate_window can
 * still count and grows (to SLACK_RING) only for a busy channel; its
 * mention counts exist once someone is mentioned there.
 */
#include "slack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- channels */

void slack_free_channel(void *p)
{
    slack_channel *c = p;
    if (!c)
        return;
    if (c->mentioned)
        pu_table_free(c->mentioned);
    free(c->mentioned);
    free(c->ts);
    free(c);
}

/* The committed channel `id`, created (and made the newest) when absent;
 * NULL on no memory. */
static slack_channel *channel_get(slack_state *st, const char *id)
{
    slack_channel *c = pu_table_get(&st->channels, id);
    if (c) {
        pu_table_touch(&st->channels, id);
        return c;
    }
    c = calloc(1, sizeof(*c) + st->nrules * sizeof(double));
    return c && !pu_table_put(&st->channels, id, c) ? c : NULL;
}

double slack_rate(const slack_state *st, const slack_channel *c, double add,
                  double last)
{
    size_t n = 0, skip = add == add && c->n == SLACK_RING; /* evicted */
    for (size_t i = skip; i < c->n; i++) { /* from the oldest kept */
        double t = c->ts[(c->head + i) % c->cap];
        if (last - t <= st->window)
            n++;
    }
    if (add == add && last - add <= st->window)
        n++;
    return (double)n * 60.0 / st->window;
}

/* Room for one more timestamp: the ring doubles up to SLACK_RING (its
 * entries unrolled oldest first); 0, or -1 when it cannot grow. */
static int ring_grow(slack_channel *c)
{
    if (c->n < c->cap || c->cap >= SLACK_RING)
        return c->cap ? 0 : -1;
    uint32_t cap = c->cap ? c->cap * 2 : 4;
    double *v = malloc(cap * sizeof(*v));
    if (!v)
        return c->cap ? 0 : -1; /* a full ring overwrites its oldest */
    for (uint32_t i = 0; i < c->n; i++)
        v[i] = c->ts[(c->head + i) % c->cap];
    free(c->ts);
    c->ts = v;
    c->cap = cap;
    c->head = 0;
    return 0;
}

/* Adds Slack time t, first dropping the oldest kept ones the window can
 * no longer count (last_ts only grows, so they never count again). */
static void ring_push(const slack_state *st, slack_channel *c, double t)
{
    while (c->n && c->last_ts - c->ts[c->head] > st->window) {
        c->head = (c->head + 1) % c->cap;
        c->n--;
    }
    if (ring_grow(c))
        return;
    if (c->n == c->cap) { /* SLACK_RING: the oldest goes */
        c->head = (c->head + 1) % c->cap;
        c->n--;
    }
    c->ts[(c->head + c->n++) % c->cap] = t;
}

/* The next `<@U…>` mention is counted by slack.c too; this is the apply
 * side: adds one to `user` in the channel's (lazily made) table. */
static int mention_add(slack_channel *c, const char *user, intptr_t k)
{
    if (!c->mentioned) {
        if (!(c->mentioned = malloc(sizeof(*c->mentioned))) ||
            pu_table_init(c->mentioned, SLACK_MENTIONED, NULL)) {
            free(c->mentioned);
            c->mentioned = NULL;
            return SOPHIA_ENOMEM;
        }
    }
    intptr_t had = (intptr_t)pu_table_get(c->mentioned, user);
    return pu_table_put(c->mentioned, user, (void *)(had + k));
}

static void count_mentions(slack_channel *c, const char *text)
{
    for (const char *p = text; (p = strstr(p, "<@")); p += 2) {
        size_t n = strcspn(p + 2, ">|");
        char user[80];
        if (!n || n > 64 || p[2 + n] == '\0')
            continue;
        snprintf(user, sizeof(user), "%.*s", (int)n, p + 2);
        if (!mention_add(c, user, 1))
            c->mentions++;
    }
}

static void apply_channel(slack_state *st, slack_channel *c,
                          const slack_change *m)
{
    if (m->t > c->last_ts)
        c->last_ts = m->t;
    if (m->kind == MSG_EDIT) {
        c->edits++;
    } else if (m->kind == MSG_APP_MENTION) {
        c->app_mentions++;
    } else if (m->kind == MSG_DELETE) {
        c->deleted++;
    } else {
        c->messages++;
        ring_push(st, c, m->t);
        count_mentions(c, m->text);
    }
    for (size_t i = 0; i < st->nrules; i++)
        if (m->fired >> i & 1)
            c->fired[i] = m->t;
}

/* ------------------------------------------------ threads and accounts */

static void apply_thread(slack_state *st, const slack_change *m)
{
    if (m->thread_op == TH_DEL) {
        pu_table_del(&st->threads, m->thread_key);
        return;
    }
    slack_thread *t = pu_table_get(&st->threads, m->thread_key);
    if (t) {
        pu_table_touch(&st->threads, m->thread_key);
    } else if (!(t = malloc(sizeof(*t))) ||
               pu_table_put(&st->threads, m->thread_key, t)) {
        return; /* no memory: the thread starts over */
    }
    *t = m->thread;
}

static slack_account *account_get(slack_state *st, const char *name)
{
    slack_account *a = pu_table_get(&st->accounts, name);
    if (a || !(a = calloc(1, sizeof(*a))))
        return a;
    return pu_table_put(&st->accounts, name, a) ? NULL : a;
}

void slack_apply(void *state, void *change)
{
    slack_state *st = state;
    slack_change *m = change;
    slack_channel *c = channel_get(st, m->chan);
    if (c)
        apply_channel(st, c, m);
    if (m->msg_key && m->kind == MSG_DELETE) /* its rules give way to a mark */
        pu_table_put(&st->alerted, m->msg_key, (void *)(uintptr_t)SLACK_DELETED);
    else if (m->msg_key && m->mask)
        pu_table_put(&st->alerted, m->msg_key, (void *)(uintptr_t)m->mask);
    if (m->thread_op != TH_NONE)
        apply_thread(st, m);
    slack_account *a = m->account ? account_get(st, m->account) : NULL;
    if (a) {
        a->messages += m->kind == MSG_PLAIN;
        a->keywords += m->keywords;
        a->alerts += m->alerts;
    }
    free(m);
}

/* --------------------------------------------- hot reload hand-over */

static char *hex64(uint64_t v, char *buf)
{
    snprintf(buf, 17, "%016llx", (unsigned long long)v);
    return buf;
}

/* One channel: {"id", "messages", "edits", "mentions", "app_mentions",
 * "deleted", "last_ts", "ts":[oldest first], "mentioned":[[user, count]
 * ...], "fired":{"<rule pattern>": Slack time}}. */
static sophia_json *channel_json(const slack_state *st, const char *id,
                                 const slack_channel *c)
{
    const sophia_host *h = st->host;
    sophia_json *o = h->json_object(), *ts = h->json_array(),
                *who = h->json_array(), *fired = h->json_object();
    for (size_t i = 0; ts && i < c->n; i++)
        h->json_append(ts, h->json_num(c->ts[(c->head + i) % c->cap]));
    for (const pu_entry *e = c->mentioned ? c->mentioned->oldest : NULL;
         who && e; e = e->newer) {
        sophia_json *pair = h->json_array();
        if (pair) {
            h->json_append(pair, h->json_str(e->key));
            h->json_append(pair, h->json_int((intptr_t)e->val));
        }
        h->json_append(who, pair);
    }
    for (size_t i = 0; i < st->nrules; i++)
        if (c->fired[i] != 0)
            pu_set(h, fired, st->rules[i].pattern, h->json_num(c->fired[i]));
    pu_set_str(h, o, "id", id);
    pu_set(h, o, "messages", h->json_int(c->messages));
    pu_set(h, o, "edits", h->json_int(c->edits));
    pu_set(h, o, "mentions", h->json_int(c->mentions));
    pu_set(h, o, "app_mentions", h->json_int(c->app_mentions));
    pu_set(h, o, "deleted", h->json_int(c->deleted));
    pu_set(h, o, "last_ts", h->json_num(c->last_ts));
    pu_set(h, o, "ts", ts);
    pu_set(h, o, "mentioned", who);
    pu_set(h, o, "fired", fired);
    return o;
}

static sophia_json *thread_json(const sophia_host *h, const char *key,
                                const slack_thread *t)
{
    char buf[20];
    sophia_json *o = h->json_object(), *users = h->json_array();
    for (uint32_t i = 0; users && i < t->nusers; i++)
        h->json_append(users, h->json_str(hex64(t->users[i], buf)));
    pu_set_str(h, o, "key", key);
    pu_set(h, o, "replies", h->json_int(t->replies));
    pu_set(h, o, "users", users);
    pu_set(h, o, "resolved", h->json_bool_new(t->resolved));
    pu_set(h, o, "gate", pu_gate_export(h, &t->gate));
    return o;
}

static sophia_json *account_json(const sophia_host *h, const char *name,
                                 const slack_account *a)
{
    sophia_json *o = h->json_object();
    pu_set_str(h, o, "account", name);
    pu_set(h, o, "messages", h->json_int(a->messages));
    pu_set(h, o, "alerts", h->json_int(a->alerts));
    pu_set(h, o, "keywords", h->json_int(a->keywords));
    return o;
}

/* Appends each entry of `t` as what `fn` makes of it; -1 on no memory. */
static int table_json(const slack_state *st, const pu_table *t,
                      sophia_json *arr, int kind)
{
    const sophia_host *h = st->host;
    char buf[20];
    for (const pu_entry *e = t->oldest; arr && e; e = e->newer) {
        sophia_json *o = NULL;
        if (kind == 0)
            o = channel_json(st, e->key, e->val);
        else if (kind == 1)
            o = thread_json(h, e->key, e->val);
        else if (kind == 2)
            o = account_json(h, e->key, e->val);
        else if ((o = h->json_array())) {
            h->json_append(o, h->json_str(e->key));
            h->json_append(o, h->json_str(hex64((uintptr_t)e->val, buf)));
        }
        if (!o || h->json_append(arr, o))
            return -1;
    }
    return arr ? 0 : -1;
}

/* {"format":2,"channels":[channel_json...],"threads":[thread_json...],
 * "alerted":[[key, "<mask hex>"]...],"accounts":[account_json...],
 * "seen":pu_seen_export}, each table oldest first. */
char *slack_export(void *state)
{
    slack_state *st = state;
    const sophia_host *h = st->host;
    static const char *const names[] = {"channels", "threads", "accounts",
                                        "alerted"};
    const pu_table *tables[] = {&st->channels, &st->threads, &st->accounts,
                                &st->alerted};
    sophia_json *doc = h->json_object();
    int rc = pu_set(h, doc, "format", h->json_int(2));
    for (int k = 0; !rc && k < 4; k++) {
        sophia_json *arr = h->json_array();
        rc = table_json(st, tables[k], arr, k) ? SOPHIA_ENOMEM : 0;
        if (rc)
            h->json_free(arr);
        else
            rc = pu_set(h, doc, names[k], arr);
    }
    if (!rc)
        rc = pu_set(h, doc, "seen", pu_seen_export(h, &st->seen));
    return pu_export_text(h, doc, rc);
}

static int import_channel(slack_state *st, const sophia_json *o)
{
    const sophia_host *h = st->host;
    const char *id = pu_str(h, o, "id");
    slack_channel *c = id ? channel_get(st, id) : NULL;
    if (!id)
        return 0;
    if (!c)
        return SOPHIA_ENOMEM;
    c->messages = (int64_t)h->json_number(h->json_get(o, "messages"), 0);
    c->edits = (int64_t)h->json_number(h->json_get(o, "edits"), 0);
    c->mentions = (int64_t)h->json_number(h->json_get(o, "mentions"), 0);
    c->app_mentions = (int64_t)h->json_number(h->json_get(o, "app_mentions"), 0);
    c->deleted = (int64_t)h->json_number(h->json_get(o, "deleted"), 0);
    c->last_ts = h->json_number(h->json_get(o, "last_ts"), 0);
    const sophia_json *ts = h->json_get(o, "ts");
    const sophia_json *who = h->json_get(o, "mentioned");
    const sophia_json *fired = h->json_get(o, "fired");
    size_t n = h->json_size(ts), from = n > SLACK_RING ? n - SLACK_RING : 0;
    for (size_t i = from; i < n; i++)
        ring_push(st, c, h->json_number(h->json_at(ts, i), 0));
    for (size_t i = 0; i < h->json_size(who); i++) {
        const sophia_json *pair = h->json_at(who, i);
        const char *user = h->json_string(h->json_at(pair, 0));
        intptr_t k = (intptr_t)h->json_number(h->json_at(pair, 1), 0);
        if (user && mention_add(c, user, k))
            return SOPHIA_ENOMEM;
    }
    for (size_t i = 0; i < st->nrules; i++) /* rules matched by pattern */
        c->fired[i] = h->json_number(
            h->json_get_key(fired, st->rules[i].pattern), 0);
    return 0;
}

static int import_thread(slack_state *st, const sophia_json *o)
{
    const sophia_host *h = st->host;
    const char *key = pu_str(h, o, "key");
    const sophia_json *users = h->json_get(o, "users");
    slack_thread t = {.replies = (int64_t)h->json_number(
                          h->json_get(o, "replies"), 0),
                      .resolved = h->json_bool(h->json_get(o, "resolved"), 0)};
    for (size_t i = 0; i < h->json_size(users) && t.nusers < SLACK_THREAD_USERS; i++)
        if (pu_hex64(h->json_string(h->json_at(users, i)), &t.users[t.nusers++]))
            return SOPHIA_EPARSE;
    if (!key || pu_gate_import(h, &t.gate, h->json_get(o, "gate")))
        return SOPHIA_EPARSE;
    slack_thread *v = malloc(sizeof(*v));
    if (!v)
        return SOPHIA_ENOMEM;
    *v = t;
    return pu_table_put(&st->threads, key, v);
}

static int import_row(slack_state *st, int kind, const sophia_json *o)
{
    const sophia_host *h = st->host;
    if (kind == 0)
        return import_channel(st, o);
    if (kind == 1)
        return import_thread(st, o);
    if (kind == 2) {
        const char *name = pu_str(h, o, "account");
        slack_account *a = name ? account_get(st, name) : NULL;
        if (!a)
            return name ? SOPHIA_ENOMEM : SOPHIA_EPARSE;
        a->messages = (int64_t)h->json_number(h->json_get(o, "messages"), 0);
        a->alerts = (int64_t)h->json_number(h->json_get(o, "alerts"), 0);
        a->keywords = (int64_t)h->json_number(h->json_get(o, "keywords"), 0);
        return 0;
    }
    uint64_t mask;
    const char *key = h->json_string(h->json_at(o, 0));
    if (!key || pu_hex64(h->json_string(h->json_at(o, 1)), &mask))
        return SOPHIA_EPARSE;
    return mask ? pu_table_put(&st->alerted, key, (void *)(uintptr_t)mask) : 0;
}

/* Format 2, or format 1 (channels and seen identities only). */
int slack_import(void *state, const char *json)
{
    slack_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI;
    sophia_json *doc = h->json_parse(json);
    double format = h->json_number(h->json_get(doc, "format"), 0);
    if (!doc || (format != 1 && format != 2) ||
        h->json_type(h->json_get(doc, "channels")) != SOPHIA_JSON_ARRAY) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    static const char *const names[] = {"channels", "threads", "accounts",
                                        "alerted"};
    int rc = 0;
    for (int k = 0; !rc && k < 4; k++) {
        const sophia_json *arr = h->json_get(doc, names[k]);
        for (size_t i = 0; !rc && i < h->json_size(arr); i++)
            rc = import_row(st, k, h->json_at(arr, i));
    }
    if (!rc)
        rc = pu_seen_import(h, &st->seen, h->json_get(doc, "seen"));
    h->json_free(doc);
    return rc;
}
