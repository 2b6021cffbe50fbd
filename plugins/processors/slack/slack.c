/*
 * slack - the processor for Slack Events API bodies.
 *
 * It reads `event_callback` bodies whose `event` is a `message` (plain,
 * or the `message_changed` subtype, whose new text is `event.message`)
 * or an `app_mention`; `url_verification` is the webhook's business and
 * is dropped here. Per channel the instance keeps counts (messages,
 * edits, mentions, app mentions, who was mentioned) and the timestamps of
 * recent messages, from which the rate per minute over `rate_window`
 * seconds of Slack time (`ts`, not arrival time, so replays compute the
 * same) is derived.
 *
 * Effects: the channel document cached at `<prefix>channel:<id>` (tags
 * `slack`, `channel:<id>`) and published as a `metric` update
 * (`slack_channel_messages`) to `dashboard:<dashboard>`; a `deal_mention`
 * `data` update for money amounts ("$50k", "$1.2M", "$120,000"); an
 * alert per matching `alert_rules` entry ("severity=POSIX ERE",
 * case-insensitive); a `notification` for app mentions; a
 * `user_preference` memory for explicit preferences ("prefers …",
 * "every N minutes").
 *
 * State and the verdict (SDK 1.1): process() reads the channel's committed
 * counts and publishes what they will be with this message; the message
 * itself (its kind, Slack time and text, whose mentions are counted) is
 * handed to host->stage and counted when the event's effects commit. So
 * a message whose event goes RETRY or ERROR, or whose effects are
 * refused, is not counted, and its redelivery is counted once.
 *
 * Redelivery (a crash before the ack; Slack itself retries a delivery it
 * saw no 200 for): a message's identity is its `event_id`, else its event
 * type, channel, `ts` and subtype. The last `max_seen` identities that
 * committed are remembered; one seen again produces nothing (verdict OK,
 * counter `duplicates`): not counted, published, alerted or remembered a
 * second time. A message with neither event_id nor ts is always new.
 *
 * Reload: export_state/import_state carry the committed channels (counts,
 * recent timestamps, who was mentioned) and the seen identities.
 */
#include <sophia/sdk.h>

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proc_util.h"

#define SLACK_RING 1024 /* message timestamps kept per channel */

typedef struct slack_rule {
    char *severity;
    char *pattern;
    regex_t re;
    int compiled;
} slack_rule;

typedef struct slack_channel {
    int64_t messages, edits, mentions, app_mentions;
    double ts[SLACK_RING];
    size_t head, n;
    double last_ts;
    pu_table mentioned; /* user -> (intptr_t) count */
} slack_channel;

typedef struct slack_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard;
    double ttl, window;
    slack_rule *rules;
    size_t nrules;
    regex_t amount_re, pref_re;
    int amount_ok, pref_ok;
    pu_table channels; /* channel id -> slack_channel, as committed */
    pu_seen seen;      /* message identities committed */
} slack_state;

enum { MSG_PLAIN, MSG_EDIT, MSG_APP_MENTION };

/* One message as it counts once its event commits (host->stage). */
typedef struct slack_change {
    int kind;   /* MSG_* */
    double t;   /* Slack time */
    char *chan; /* points into buf */
    char *text; /* points into buf */
    char buf[];
} slack_change;

/* ------------------------------------------------------------ lifecycle */

static void free_channel(void *p)
{
    slack_channel *c = p;
    if (!c)
        return;
    pu_table_free(&c->mentioned);
    free(c);
}

static void slack_fini(void *state)
{
    slack_state *st = state;
    if (!st)
        return;
    for (size_t i = 0; i < st->nrules; i++) {
        if (st->rules[i].compiled)
            regfree(&st->rules[i].re);
        free(st->rules[i].severity);
        free(st->rules[i].pattern);
    }
    free(st->rules);
    if (st->amount_ok)
        regfree(&st->amount_re);
    if (st->pref_ok)
        regfree(&st->pref_re);
    pu_table_free(&st->channels);
    pu_seen_free(&st->seen);
    free(st->prefix);
    free(st->dashboard);
    free(st);
}

/* "severity=regex" -> a compiled rule; a bad one fails init. */
static int parse_rule(slack_state *st, const char *spec, slack_rule *r)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1]) {
        st->host->log(st->self, SOPHIA_LOG_ERROR,
                      "alert_rules entry '%s' is not severity=regex", spec);
        return SOPHIA_EINVAL;
    }
    r->severity = malloc((size_t)(eq - spec) + 1);
    r->pattern = pu_strdup(eq + 1);
    if (!r->severity || !r->pattern)
        return SOPHIA_ENOMEM;
    memcpy(r->severity, spec, (size_t)(eq - spec));
    r->severity[eq - spec] = '\0';
    if (regcomp(&r->re, r->pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB)) {
        st->host->log(st->self, SOPHIA_LOG_ERROR,
                      "alert_rules entry '%s': bad regular expression", spec);
        return SOPHIA_EINVAL;
    }
    r->compiled = 1;
    return 0;
}

static int slack_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    if (pu_require_stage(host, self, "slack"))
        return SOPHIA_EABI;
    slack_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->prefix = pu_strdup(host->opt_string(opts, "cache_prefix"));
    st->dashboard = pu_strdup(host->opt_string(opts, "dashboard"));
    st->ttl = host->opt_double(opts, "ttl");
    st->window = host->opt_double(opts, "rate_window");
    st->nrules = host->opt_list_len(opts, "alert_rules");
    st->rules = calloc(st->nrules ? st->nrules : 1, sizeof(*st->rules));
    int rc = regcomp(&st->amount_re,
                     "\\$ ?([0-9][0-9,]*(\\.[0-9]+)?) ?([kKmM]|[bB]n?)?",
                     REG_EXTENDED)
                 ? SOPHIA_EINVAL
                 : 0;
    st->amount_ok = !rc;
    st->pref_ok = !rc && !regcomp(&st->pref_re,
                                  "(^|[^a-z])(prefers?|i'd rather)[^a-z]|"
                                  "every [0-9]+ (second|minute|hour|day|week)s?",
                                  REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (!rc && !st->pref_ok)
        rc = SOPHIA_EINVAL;
    int64_t max_seen = host->opt_int(opts, "max_seen");
    if (!rc && max_seen < 1) {
        host->log(self, SOPHIA_LOG_ERROR, "max_seen must be at least 1");
        rc = SOPHIA_EINVAL;
    }
    if (!rc && (!st->prefix || !st->dashboard || !st->rules ||
                pu_table_init(&st->channels, 100000, free_channel) ||
                pu_seen_init(&st->seen, (size_t)max_seen)))
        rc = SOPHIA_ENOMEM;
    for (size_t i = 0; !rc && i < st->nrules; i++)
        rc = parse_rule(st, host->opt_list_item(opts, "alert_rules", i),
                        &st->rules[i]);
    if (!rc && st->window <= 0)
        rc = SOPHIA_EINVAL;
    if (rc) {
        slack_fini(st);
        return rc;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ------------------------------------------------------------ helpers */

static slack_channel *channel_get(slack_state *st, const char *id)
{
    slack_channel *c = pu_table_get(&st->channels, id);
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (!c || pu_table_init(&c->mentioned, 1000, NULL)) {
        free(c);
        return NULL;
    }
    return pu_table_put(&st->channels, id, c) ? NULL : c;
}

/* The channel's rate once `add` (a new message's Slack time, or NAN for
 * none) is counted, with `last` its newest Slack time by then. */
static double rate_per_min(const slack_state *st, const slack_channel *c,
                           double add, double last)
{
    size_t n = 0, skip = add == add && c->n == SLACK_RING; /* evicted */
    for (size_t i = skip; i < c->n; i++) { /* from the oldest kept */
        double t = c->ts[(c->head + i) % SLACK_RING];
        if (last - t <= st->window)
            n++;
    }
    if (add == add && last - add <= st->window)
        n++;
    return (double)n * 60.0 / st->window;
}

/* The next `<@U…>` mention in text at or after *p, into user; 0 at the
 * end. */
static int next_mention(const char **p, char *user, size_t len)
{
    for (; (*p = strstr(*p, "<@")); *p += 2) {
        size_t n = strcspn(*p + 2, ">|");
        if (!n || n > 64 || (*p)[2 + n] == '\0')
            continue;
        snprintf(user, len, "%.*s", (int)n, *p + 2);
        *p += 2;
        return 1;
    }
    return 0;
}

/* Counts `<@U…>` mentions in text (applying a committed message). */
static void count_mentions(slack_channel *c, const char *text)
{
    char user[80];
    for (const char *p = text; next_mention(&p, user, sizeof(user));) {
        intptr_t k = (intptr_t)pu_table_get(&c->mentioned, user);
        pu_table_put(&c->mentioned, user, (void *)(k + 1));
        c->mentions++;
    }
}

/* The member of object `o` named exactly `key` (no dotted paths: a user
 * id is data), or NULL. */
static const sophia_json *member(const sophia_host *h, const sophia_json *o,
                                 const char *key)
{
    const sophia_json *v;
    const char *k;
    for (size_t i = 0; (k = h->json_key_at(o, i, &v)); i++)
        if (!strcmp(k, key))
            return v;
    return NULL;
}

/* The channel document as it will be once `m` (NULL: none) counts:
 * committed channel `c` plus the staged message. */
static sophia_json *channel_doc(const slack_state *st, const char *id,
                                const slack_channel *c, const slack_change *m)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object(), *who = h->json_object();
    int plain = m && m->kind == MSG_PLAIN;
    double last = m && m->t > c->last_ts ? m->t : c->last_ts;
    int64_t mentions = c->mentions;
    for (const pu_entry *e = c->mentioned.oldest; e && who; e = e->newer)
        pu_set(h, who, e->key, h->json_int((intptr_t)e->val));
    char user[80];
    const char *p = plain ? m->text : "";
    while (who && next_mention(&p, user, sizeof(user))) {
        int64_t k = (int64_t)h->json_number(member(h, who, user), 0);
        pu_set(h, who, user, h->json_int(k + 1));
        mentions++;
    }
    pu_set_str(h, d, "channel", id);
    pu_set(h, d, "messages", h->json_int(c->messages + plain));
    pu_set(h, d, "edits", h->json_int(c->edits + (m && m->kind == MSG_EDIT)));
    pu_set(h, d, "mentions", h->json_int(mentions));
    pu_set(h, d, "app_mentions",
           h->json_int(c->app_mentions + (m && m->kind == MSG_APP_MENTION)));
    pu_set(h, d, "rate_per_min",
           h->json_num(rate_per_min(st, c, plain ? m->t : NAN, last)));
    pu_set(h, d, "last_ts", h->json_num(last));
    pu_set(h, d, "mentioned", who);
    return d;
}

/* "$55k" -> 55000; 0 when no amount is mentioned. */
static double amount_in(const slack_state *st, const char *text)
{
    regmatch_t m[4];
    if (regexec(&st->amount_re, text, 4, m, 0))
        return 0;
    char num[64];
    size_t n = 0;
    for (regoff_t i = m[1].rm_so; i < m[1].rm_eo && n + 1 < sizeof(num); i++)
        if (text[i] != ',')
            num[n++] = text[i];
    num[n] = '\0';
    double v = strtod(num, NULL);
    char unit = m[3].rm_so >= 0 ? text[m[3].rm_so] : 0;
    if (unit == 'k' || unit == 'K')
        v *= 1e3;
    else if (unit == 'm' || unit == 'M')
        v *= 1e6;
    else if (unit == 'b' || unit == 'B')
        v *= 1e9;
    return v;
}

/* ------------------------------------------------------------ effects */

static int publish_deal(const slack_state *st, sophia_ctx *ctx,
                        const char *chan, const char *user, const char *text,
                        double amount, int edited)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "deal_mention");
    pu_set_str(h, d, "channel", chan);
    pu_set_str(h, d, "user", user);
    pu_set(h, d, "amount", h->json_num(amount));
    pu_set_str(h, d, "text", text);
    pu_set(h, d, "edited", h->json_bool_new(edited));
    return d ? h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, st->dashboard, d)
             : SOPHIA_ENOMEM;
}

static int run_rules(const slack_state *st, sophia_ctx *ctx, const char *chan,
                     const char *user, const char *text)
{
    const sophia_host *h = st->host;
    for (size_t i = 0; i < st->nrules; i++) {
        if (regexec(&st->rules[i].re, text, 0, NULL, 0))
            continue;
        char msg[600];
        snprintf(msg, sizeof(msg), "Slack #%s: %.500s", chan, text);
        sophia_json *d = h->json_object();
        pu_set_str(h, d, "channel", chan);
        pu_set_str(h, d, "user", user);
        pu_set_str(h, d, "rule", st->rules[i].pattern);
        int rc = h->alert(ctx, "slack_keyword", st->rules[i].severity, msg, d);
        if (rc)
            return rc;
    }
    return 0;
}

static int publish_channel(const slack_state *st, sophia_ctx *ctx,
                           const char *chan, const slack_channel *c,
                           const slack_change *msg)
{
    const sophia_host *h = st->host;
    sophia_json *doc = channel_doc(st, chan, c, msg);
    char key[400], tag[300];
    snprintf(key, sizeof(key), "%schannel:%s", st->prefix, chan);
    snprintf(tag, sizeof(tag), "channel:%s", chan);
    const char *tags[] = {"slack", tag, NULL};
    int rc = doc ? h->cache_put(ctx, key, doc, st->ttl, tags) : SOPHIA_ENOMEM;
    sophia_json *m = h->json_object(), *labels = h->json_object();
    pu_set_str(h, m, "metric", "slack_channel_messages");
    pu_set(h, m, "value",
           h->json_int(c->messages + (msg->kind == MSG_PLAIN)));
    pu_set_str(h, labels, "channel", chan);
    pu_set(h, m, "labels", labels);
    if (!rc && m)
        return h->publish(ctx, SOPHIA_UPDATE_METRIC, NULL, st->dashboard, m);
    if (m)
        h->json_free(m);
    return rc ? rc : SOPHIA_ENOMEM;
}

/* An explicit preference ("prefers …", "every 5 minutes") becomes a
 * user_preference memory. Best effort: a host without a memory store
 * (or with it disabled) does not fail the message. */
static void remember_preference(const slack_state *st, sophia_ctx *ctx,
                                const char *chan, const char *user,
                                const char *text)
{
    const sophia_host *h = st->host;
    if (!h->memory_store || regexec(&st->pref_re, text, 0, NULL, 0))
        return;
    sophia_json *c = h->json_object();
    pu_set_str(h, c, "source", "slack");
    pu_set_str(h, c, "channel", chan);
    pu_set_str(h, c, "user", user);
    if (h->memory_store(ctx, text, "user_preference", c, 0.7) == 0)
        h->counter_add(st->self, "preferences", 1);
}

/* ------------------------------------------------------------ process */

/* Counts a committed message into its channel. */
static void message_apply(void *state, void *change)
{
    slack_state *st = state;
    slack_change *m = change;
    slack_channel *c = channel_get(st, m->chan);
    if (c) {
        if (m->t > c->last_ts)
            c->last_ts = m->t;
        if (m->kind == MSG_EDIT) {
            c->edits++;
        } else if (m->kind == MSG_APP_MENTION) {
            c->app_mentions++;
        } else {
            c->messages++;
            c->ts[(c->head + c->n) % SLACK_RING] = m->t;
            if (c->n < SLACK_RING)
                c->n++;
            else
                c->head = (c->head + 1) % SLACK_RING;
            count_mentions(c, m->text);
        }
    }
    free(m);
}

static slack_change *change_new(int kind, double t, const char *chan,
                                const char *text)
{
    size_t nc = strlen(chan) + 1, nt = strlen(text) + 1;
    slack_change *m = malloc(sizeof(*m) + nc + nt);
    if (!m)
        return NULL;
    m->kind = kind;
    m->t = t;
    m->chan = memcpy(m->buf, chan, nc);
    m->text = memcpy(m->buf + nc, text, nt);
    return m;
}

static sophia_verdict on_message(slack_state *st, const sophia_json *ev,
                                 sophia_ctx *ctx, int app_mention)
{
    static const slack_channel none; /* a channel not seen yet */
    const sophia_host *h = st->host;
    const char *chan = pu_str(h, ev, "channel");
    const char *sub = pu_str(h, ev, "subtype");
    int edited = sub && !strcmp(sub, "message_changed");
    if (sub && !edited && strcmp(sub, "bot_message") && strcmp(sub, "thread_broadcast"))
        return SOPHIA_PROCESS_DROP; /* joins, topic changes, deletions… */
    const sophia_json *msg = edited ? h->json_get(ev, "message") : ev;
    const char *text = pu_str(h, msg, "text");
    const char *user = pu_str(h, msg, "user");
    if (!chan || !text)
        return SOPHIA_PROCESS_ERROR;
    const slack_channel *c = pu_table_get(&st->channels, chan);
    const char *ts = pu_str(h, ev, "ts");
    double t = ts ? strtod(ts, NULL) : (double)h->now_us() / 1e6;
    slack_change *m = change_new(edited        ? MSG_EDIT
                                 : app_mention ? MSG_APP_MENTION
                                               : MSG_PLAIN,
                                 t, chan, text);
    if (!m)
        return SOPHIA_PROCESS_RETRY;
    int rc = publish_channel(st, ctx, chan, c ? c : &none, m);
    double amount = amount_in(st, text);
    if (!rc && amount > 0)
        rc = publish_deal(st, ctx, chan, user, text, amount, edited);
    if (!rc)
        rc = run_rules(st, ctx, chan, user, text);
    if (!rc)
        remember_preference(st, ctx, chan, user, text);
    if (!rc && app_mention) {
        sophia_json *n = h->json_object();
        pu_set_str(h, n, "kind", "app_mention");
        pu_set_str(h, n, "channel", chan);
        pu_set_str(h, n, "user", user);
        pu_set_str(h, n, "text", text);
        rc = h->publish(ctx, SOPHIA_UPDATE_NOTIFICATION, NULL, st->dashboard, n);
    }
    if (rc)
        free(m);
    else
        rc = h->stage(ctx, message_apply, free, m);
    return rc ? SOPHIA_PROCESS_RETRY : SOPHIA_PROCESS_OK;
}

/* The message's identity for redelivery into out ("" when none). */
static void message_id(const sophia_host *h, const sophia_json *body,
                       const char *et, const sophia_json *ev, char *out,
                       size_t len)
{
    const char *eid = pu_str(h, body, "event_id");
    const char *chan = pu_str(h, ev, "channel"), *ts = pu_str(h, ev, "ts");
    const char *sub = pu_str(h, ev, "subtype");
    out[0] = '\0';
    if (eid)
        snprintf(out, len, "ev:%s", eid);
    else if (chan && ts)
        snprintf(out, len, "%s:%s:%s:%s", et, chan, ts, sub ? sub : "");
}

static sophia_verdict slack_process(void *state, const sophia_event *e,
                                    sophia_ctx *ctx)
{
    slack_state *st = state;
    const sophia_host *h = st->host;
    const char *type = pu_str(h, e->body, "type");
    if (type && !strcmp(type, "url_verification"))
        return SOPHIA_PROCESS_DROP;
    const sophia_json *ev = h->json_get(e->body, "event");
    const char *et = pu_str(h, ev, "type");
    if (!type || strcmp(type, "event_callback") || !et) {
        h->log(st->self, SOPHIA_LOG_WARN,
               "not a Slack event_callback with an event.type");
        return SOPHIA_PROCESS_ERROR;
    }
    if (!strcmp(et, "message") || !strcmp(et, "app_mention")) {
        char id[400];
        message_id(h, e->body, et, ev, id, sizeof(id));
        if (id[0] && pu_seen_has(&st->seen, id)) {
            h->counter_add(st->self, "duplicates", 1);
            return SOPHIA_PROCESS_OK; /* counted before: nothing again */
        }
        sophia_verdict v = on_message(st, ev, ctx, !strcmp(et, "app_mention"));
        if (v == SOPHIA_PROCESS_OK && id[0] &&
            pu_seen_stage(h, ctx, &st->seen, id))
            v = SOPHIA_PROCESS_RETRY; /* could not remember it: not yet */
        if (v == SOPHIA_PROCESS_OK)
            h->counter_add(st->self, "messages", 1);
        return v;
    }
    return SOPHIA_PROCESS_DROP; /* reactions, joins…: not ours */
}

/* --------------------------------------------- hot reload hand-over */

/* One channel: {"id", "messages", "edits", "mentions", "app_mentions",
 * "last_ts", "ts":[oldest first], "mentioned":[[user, count]...]}. */
static sophia_json *channel_json(const sophia_host *h, const char *id,
                                 const slack_channel *c)
{
    sophia_json *o = h->json_object(), *ts = h->json_array(),
                *who = h->json_array();
    for (size_t i = 0; ts && i < c->n; i++)
        h->json_append(ts, h->json_num(c->ts[(c->head + i) % SLACK_RING]));
    for (const pu_entry *e = c->mentioned.oldest; who && e; e = e->newer) {
        sophia_json *pair = h->json_array();
        if (pair) {
            h->json_append(pair, h->json_str(e->key));
            h->json_append(pair, h->json_int((intptr_t)e->val));
        }
        h->json_append(who, pair);
    }
    pu_set_str(h, o, "id", id);
    pu_set(h, o, "messages", h->json_int(c->messages));
    pu_set(h, o, "edits", h->json_int(c->edits));
    pu_set(h, o, "mentions", h->json_int(c->mentions));
    pu_set(h, o, "app_mentions", h->json_int(c->app_mentions));
    pu_set(h, o, "last_ts", h->json_num(c->last_ts));
    pu_set(h, o, "ts", ts);
    pu_set(h, o, "mentioned", who);
    return o;
}

/* The committed channels and seen identities:
 * {"format":1,"channels":[channel_json...],"seen":pu_seen_export}. */
static char *slack_export(void *state)
{
    slack_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *doc = h->json_object(), *all = h->json_array();
    for (const pu_entry *e = st->channels.oldest; all && e; e = e->newer) {
        sophia_json *o = channel_json(h, e->key, e->val);
        if (!o || h->json_append(all, o)) {
            h->json_free(all);
            all = NULL;
        }
    }
    pu_set(h, doc, "format", h->json_int(1));
    int rc = pu_set(h, doc, "channels", all);
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
    c->last_ts = h->json_number(h->json_get(o, "last_ts"), 0);
    const sophia_json *ts = h->json_get(o, "ts");
    const sophia_json *who = h->json_get(o, "mentioned");
    size_t n = h->json_size(ts), from = n > SLACK_RING ? n - SLACK_RING : 0;
    c->head = 0;
    c->n = 0;
    for (size_t i = from; i < n; i++)
        c->ts[c->n++] = h->json_number(h->json_at(ts, i), 0);
    for (size_t i = 0; i < h->json_size(who); i++) {
        const sophia_json *pair = h->json_at(who, i);
        const char *user = h->json_string(h->json_at(pair, 0));
        intptr_t k = (intptr_t)h->json_number(h->json_at(pair, 1), 0);
        if (user && pu_table_put(&c->mentioned, user, (void *)k))
            return SOPHIA_ENOMEM;
    }
    return 0;
}

static int slack_import(void *state, const char *json)
{
    slack_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI;
    sophia_json *doc = h->json_parse(json);
    const sophia_json *all = h->json_get(doc, "channels");
    if (!doc || h->json_number(h->json_get(doc, "format"), 0) != 1 ||
        h->json_type(all) != SOPHIA_JSON_ARRAY) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    int rc = 0;
    for (size_t i = 0; !rc && i < h->json_size(all); i++)
        rc = import_channel(st, h->json_at(all, i));
    if (!rc)
        rc = pu_seen_import(h, &st->seen, h->json_get(doc, "seen"));
    h->json_free(doc);
    return rc;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option slack_options[] = {
    {"dashboard", SOPHIA_OPT_STRING, "team",
     "dashboard for channel metrics, deal mentions and app mentions"},
    {"cache_prefix", SOPHIA_OPT_STRING, "slack:",
     "cache keys: <prefix>channel:<id>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "86400", "seconds channel documents live"},
    {"rate_window", SOPHIA_OPT_DOUBLE, "300",
     "seconds of Slack time the messages-per-minute rate looks back"},
    {"alert_rules", SOPHIA_OPT_LIST, NULL,
     "alerts: entries 'severity=POSIX ERE', matched case-insensitively "
     "against message text, e.g. 'critical=churn|cancel'"},
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "message identities (event_id, else channel + ts) remembered to skip "
     "redeliveries"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops slack_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = slack_process,
    .export_state = slack_export,
    .import_state = slack_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "slack",
    .version = "1.1.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Slack messages -> channel activity, mentions, deal "
                   "mentions, keyword alerts",
    .options = slack_options,
    .init = slack_init,
    .fini = slack_fini,
    .processor = &slack_ops,
};
