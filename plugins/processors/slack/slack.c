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
 */
#include <sophia/sdk.h>

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
    pu_table channels;
} slack_state;

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
    if (!host || host->struct_size < sizeof(sophia_host) ||
        host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
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
    if (!rc && (!st->prefix || !st->dashboard || !st->rules ||
                pu_table_init(&st->channels, 100000, free_channel)))
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

static double rate_per_min(const slack_state *st, const slack_channel *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) {
        double t = c->ts[(c->head + SLACK_RING - 1 - i) % SLACK_RING];
        if (c->last_ts - t <= st->window)
            n++;
    }
    return (double)n * 60.0 / st->window;
}

/* Counts `<@U…>` mentions in text. */
static void count_mentions(slack_channel *c, const char *text)
{
    for (const char *p = text; (p = strstr(p, "<@")); p += 2) {
        size_t n = strcspn(p + 2, ">|");
        if (!n || n > 64 || p[2 + n] == '\0')
            continue;
        char user[80];
        snprintf(user, sizeof(user), "%.*s", (int)n, p + 2);
        intptr_t k = (intptr_t)pu_table_get(&c->mentioned, user);
        pu_table_put(&c->mentioned, user, (void *)(k + 1));
        c->mentions++;
    }
}

static sophia_json *channel_doc(const slack_state *st, const char *id,
                                const slack_channel *c)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object(), *who = h->json_object();
    pu_set_str(h, d, "channel", id);
    pu_set(h, d, "messages", h->json_int(c->messages));
    pu_set(h, d, "edits", h->json_int(c->edits));
    pu_set(h, d, "mentions", h->json_int(c->mentions));
    pu_set(h, d, "app_mentions", h->json_int(c->app_mentions));
    pu_set(h, d, "rate_per_min", h->json_num(rate_per_min(st, c)));
    pu_set(h, d, "last_ts", h->json_num(c->last_ts));
    for (const pu_entry *e = c->mentioned.oldest; e && who; e = e->newer)
        pu_set(h, who, e->key, h->json_int((intptr_t)e->val));
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
                           const char *chan, const slack_channel *c)
{
    const sophia_host *h = st->host;
    sophia_json *doc = channel_doc(st, chan, c);
    char key[400], tag[300];
    snprintf(key, sizeof(key), "%schannel:%s", st->prefix, chan);
    snprintf(tag, sizeof(tag), "channel:%s", chan);
    const char *tags[] = {"slack", tag, NULL};
    int rc = doc ? h->cache_put(ctx, key, doc, st->ttl, tags) : SOPHIA_ENOMEM;
    sophia_json *m = h->json_object(), *labels = h->json_object();
    pu_set_str(h, m, "metric", "slack_channel_messages");
    pu_set(h, m, "value", h->json_int(c->messages));
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

static sophia_verdict on_message(slack_state *st, const sophia_json *ev,
                                 sophia_ctx *ctx, int app_mention)
{
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
    slack_channel *c = channel_get(st, chan);
    if (!c)
        return SOPHIA_PROCESS_RETRY;
    const char *ts = pu_str(h, ev, "ts");
    double t = ts ? strtod(ts, NULL) : (double)h->now_us() / 1e6;
    if (t > c->last_ts)
        c->last_ts = t;
    if (edited) {
        c->edits++;
    } else if (app_mention) {
        c->app_mentions++;
    } else {
        c->messages++;
        c->ts[(c->head + c->n) % SLACK_RING] = t;
        if (c->n < SLACK_RING)
            c->n++;
        else
            c->head = (c->head + 1) % SLACK_RING;
        count_mentions(c, text);
    }
    int rc = publish_channel(st, ctx, chan, c);
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
    return rc ? SOPHIA_PROCESS_RETRY : SOPHIA_PROCESS_OK;
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
        sophia_verdict v = on_message(st, ev, ctx, !strcmp(et, "app_mention"));
        if (v == SOPHIA_PROCESS_OK)
            h->counter_add(st->self, "messages", 1);
        return v;
    }
    return SOPHIA_PROCESS_DROP; /* reactions, joins…: not ours */
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
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops slack_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = slack_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "slack",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Slack messages -> channel activity, mentions, deal "
                   "mentions, keyword alerts",
    .options = slack_options,
    .init = slack_init,
    .fini = slack_fini,
    .processor = &slack_ops,
};
