/*
 * slack - the processor for Slack Events API bodies.
 *
 * It reads `event_callback` bodies whose `event` is a `message` (plain,
 * a thread reply with `thread_ts`, the `message_changed` subtype whose
 * new text is `event.message`, the `message_deleted` subtype naming
 * `deleted_ts`) or an `app_mention`; `url_verification` is the webhook's
 * business and is dropped here. Per channel the instance keeps counts
 * (messages, edits, deletions, mentions, app mentions, who was
 * mentioned) and the timestamps of recent messages, from which the rate
 * per minute over `rate_window` seconds of Slack time (`ts`, not arrival
 * time, so replays compute the same) is derived.
 *
 * Effects: the channel document cached at `<prefix>channel:<id>` (tags
 * `slack`, `channel:<id>`) and published as a `metric` update
 * (`slack_channel_messages`) to `dashboard:<dashboard>`; a `deal_mention`
 * `data` update for money amounts ("$50k", "$1.2M", "$120,000"); a
 * `notification` for app mentions; a `user_preference` memory for
 * explicit preferences ("prefers …", "every N minutes"); and:
 *
 *   - keyword alerts (`slack_keyword`): one per matching `alert_rules`
 *     entry ("severity=POSIX ERE", case-insensitive). A rule alerts at
 *     most once per message: an edit (`message_changed`) of a message
 *     the rule already alerted on, or the original arriving after its
 *     edit, does not alert again (the last `max_messages` messages'
 *     alerted rules are remembered; `message_deleted` replaces them by a
 *     mark, so the message or an edit arriving after it is dropped). And
 *     per channel and rule at most once per `alert_cooldown` seconds of
 *     Slack time; a match held back counts `alerts_suppressed`.
 *   - thread escalation (`slack_thread`, alert_ex, alert_id
 *     `slack_thread:<channel>:<thread_ts>`): once a thread has
 *     `thread_replies` replies or `thread_participants` distinct
 *     repliers it fires, and each later reply updates the same alert
 *     (replies, participants). A reply matching `thread_resolve` resolves
 *     it (same alert_id and severity) and the thread stays quiet after;
 *     deleting the thread's root resolves it too and forgets the thread.
 *   - per-account rollups: `channel_accounts` ("C024BE91L=acme") maps
 *     channels to accounts; a message in a mapped channel publishes the
 *     account's totals (messages, alerts raised, keyword matches) as a
 *     `data` update (`slack_account`) cached at `<prefix>account:<name>`.
 *
 * State and the verdict (SDK 1.1): process() reads the committed state
 * and publishes what it will be with this message; the message's change
 * (its counts, the rules that alerted and their cooldowns, its thread,
 * its account's totals) is handed to host->stage and applied when the
 * event's effects commit (slack_state.c). So a message whose event goes
 * RETRY or ERROR, or whose effects are refused, changes nothing, and its
 * redelivery is counted, and alerts, once.
 *
 * Redelivery (a crash before the ack; Slack itself retries a delivery it
 * saw no 200 for, with the same event_id): a message's identity is its
 * `event_id`, else its event type, channel, `ts` and subtype. The last
 * `max_seen` identities that committed are remembered; one seen again
 * produces nothing (verdict OK, counter `duplicates`). A message with
 * neither event_id nor ts is always new. Out of order: rates use Slack
 * time; the per-message and per-thread rules do not depend on arrival
 * order (a message or edit arriving after its deletion is dropped -
 * verdict DROP - while the deletion's mark is kept).
 *
 * Memory: every table is bounded (max_channels, max_threads,
 * max_messages, max_seen; least recently touched evicted), and an idle
 * channel costs a few hundred bytes (slack.h).
 *
 * Reload: export_state/import_state (slack_state.c) carry the committed
 * channels, threads, alerted messages, accounts and seen identities.
 */
#include "slack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ lifecycle */

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
    if (st->resolve_ok)
        regfree(&st->resolve_re);
    pu_table_free(&st->channels);
    pu_table_free(&st->threads);
    pu_table_free(&st->alerted);
    pu_table_free(&st->chan_account);
    pu_table_free(&st->accounts);
    pu_seen_free(&st->seen);
    free(st->prefix);
    free(st->dashboard);
    free(st->thread_severity);
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

/* channel_accounts: "channel=account" entries into st->chan_account. */
static int read_accounts(slack_state *st, const sophia_opts *opts)
{
    const sophia_host *h = st->host;
    size_t n = h->opt_list_len(opts, "channel_accounts");
    if (pu_table_init(&st->chan_account, n ? n : 1, free) ||
        pu_table_init(&st->accounts, n ? n : 1, free))
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *spec = h->opt_list_item(opts, "channel_accounts", i);
        const char *eq = spec ? strchr(spec, '=') : NULL;
        if (!eq || eq == spec || !eq[1]) {
            h->log(st->self, SOPHIA_LOG_ERROR, "channel_accounts entry %zu "
                   "'%s' is not channel=account", i + 1, spec ? spec : "");
            return SOPHIA_EINVAL;
        }
        char chan[256];
        snprintf(chan, sizeof(chan), "%.*s", (int)(eq - spec), spec);
        char *acc = pu_strdup(eq + 1);
        if (!acc || pu_table_put(&st->chan_account, chan, acc))
            return SOPHIA_ENOMEM;
    }
    return 0;
}

/* The numeric options' bounds; logs the one that is out and says so. */
static int check_numbers(slack_state *st, const sophia_opts *opts)
{
    const sophia_host *h = st->host;
    static const char *const at_least_1[] = {
        "max_seen", "max_channels", "max_threads", "max_messages",
        "thread_replies", "thread_participants"};
    for (size_t i = 0; i < sizeof(at_least_1) / sizeof(*at_least_1); i++)
        if (h->opt_int(opts, at_least_1[i]) < 1) {
            h->log(st->self, SOPHIA_LOG_ERROR, "%s must be at least 1",
                   at_least_1[i]);
            return SOPHIA_EINVAL;
        }
    if (!(st->window > 0) || !(st->cooldown >= 0)) {
        h->log(st->self, SOPHIA_LOG_ERROR, "%s", st->window > 0
               ? "alert_cooldown must be 0 or more seconds"
               : "rate_window must be more than 0 seconds");
        return SOPHIA_EINVAL;
    }
    if (st->nrules > SLACK_MAX_RULES) {
        h->log(st->self, SOPHIA_LOG_ERROR, "alert_rules has %zu entries; at "
               "most %d", st->nrules, SLACK_MAX_RULES);
        return SOPHIA_EINVAL;
    }
    return 0;
}

/* The fixed regular expressions: amounts, preferences, and the
 * configurable thread_resolve. */
static int compile_fixed(slack_state *st, const sophia_opts *opts)
{
    st->amount_ok = !regcomp(&st->amount_re,
                             "\\$ ?([0-9][0-9,]*(\\.[0-9]+)?) ?([kKmM]|[bB]n?)?",
                             REG_EXTENDED);
    st->pref_ok = !regcomp(&st->pref_re,
                           "(^|[^a-z])(prefers?|i'd rather)[^a-z]|"
                           "every [0-9]+ (second|minute|hour|day|week)s?",
                           REG_EXTENDED | REG_ICASE | REG_NOSUB);
    const char *res = st->host->opt_string(opts, "thread_resolve");
    st->resolve_ok = res && !regcomp(&st->resolve_re, res,
                                     REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (res && !st->resolve_ok)
        st->host->log(st->self, SOPHIA_LOG_ERROR,
                      "thread_resolve '%s': bad regular expression", res);
    return st->amount_ok && st->pref_ok && st->resolve_ok ? 0 : SOPHIA_EINVAL;
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
    st->thread_severity = pu_strdup(host->opt_string(opts, "thread_severity"));
    st->ttl = host->opt_double(opts, "ttl");
    st->window = host->opt_double(opts, "rate_window");
    st->cooldown = host->opt_double(opts, "alert_cooldown");
    st->thread_replies = host->opt_int(opts, "thread_replies");
    st->thread_participants = host->opt_int(opts, "thread_participants");
    st->nrules = host->opt_list_len(opts, "alert_rules");
    st->rules = calloc(st->nrules ? st->nrules : 1, sizeof(*st->rules));
    int rc = check_numbers(st, opts);
    if (!rc)
        rc = compile_fixed(st, opts);
    if (!rc && (!st->prefix || !st->dashboard || !st->thread_severity ||
                !st->rules ||
                pu_table_init(&st->channels,
                              (size_t)host->opt_int(opts, "max_channels"),
                              slack_free_channel) ||
                pu_table_init(&st->threads,
                              (size_t)host->opt_int(opts, "max_threads"), free) ||
                pu_table_init(&st->alerted,
                              (size_t)host->opt_int(opts, "max_messages"), NULL) ||
                pu_seen_init(&st->seen, (size_t)host->opt_int(opts, "max_seen"))))
        rc = SOPHIA_ENOMEM;
    if (!rc)
        rc = read_accounts(st, opts);
    for (size_t i = 0; !rc && i < st->nrules; i++)
        rc = parse_rule(st, host->opt_list_item(opts, "alert_rules", i),
                        &st->rules[i]);
    if (rc) {
        slack_fini(st);
        return rc;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ------------------------------------------------------------ helpers */

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
    for (const pu_entry *e = c->mentioned ? c->mentioned->oldest : NULL;
         e && who; e = e->newer)
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
    pu_set(h, d, "deleted",
           h->json_int(c->deleted + (m && m->kind == MSG_DELETE)));
    pu_set(h, d, "rate_per_min",
           h->json_num(slack_rate(st, c, plain ? m->t : NAN, last)));
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

/* The alert_rules that match text: counted as keywords; each alerts
 * unless it already alerted on this message (m->msg_key: the original
 * and its edits are one message) or on channel `c` (NULL: new) within
 * alert_cooldown seconds of Slack time. What alerted goes into m. */
static int run_rules(slack_state *st, sophia_ctx *ctx, const slack_channel *c,
                     slack_change *m, const char *user)
{
    const sophia_host *h = st->host;
    uint64_t had = m->msg_key
                       ? (uint64_t)(uintptr_t)pu_table_get(&st->alerted, m->msg_key)
                       : 0;
    for (size_t i = 0; i < st->nrules; i++) {
        if (regexec(&st->rules[i].re, m->text, 0, NULL, 0))
            continue;
        m->keywords++;
        if (had >> i & 1)
            continue; /* this message alerted on it already */
        if (c && c->fired[i] != 0 && fabs(m->t - c->fired[i]) < st->cooldown) {
            h->counter_add(st->self, "alerts_suppressed", 1);
            continue;
        }
        char msg[600];
        snprintf(msg, sizeof(msg), "Slack #%s: %.500s", m->chan, m->text);
        sophia_json *d = h->json_object();
        pu_set_str(h, d, "channel", m->chan);
        pu_set_str(h, d, "user", user);
        pu_set_str(h, d, "rule", st->rules[i].pattern);
        pu_set_str(h, d, "account", m->account);
        int rc = h->alert(ctx, "slack_keyword", st->rules[i].severity, msg, d);
        if (rc)
            return rc;
        m->fired |= 1ULL << i;
        m->alerts++;
    }
    m->mask = m->fired ? had | m->fired : 0;
    return 0;
}

/* The thread alert (alert_ex, alert_id slack_thread:<channel>:<ts>):
 * fired or updated with the thread's size, or resolved. */
static int thread_alert(const slack_state *st, sophia_ctx *ctx,
                        const slack_change *m, const slack_thread *t, int d)
{
    const sophia_host *h = st->host;
    const char *tts = m->thread_key + strlen(m->chan) + 1;
    char msg[400], aid[400];
    if (d == PU_GATE_RESOLVE)
        snprintf(msg, sizeof(msg), "Slack #%s thread %s resolved after %lld "
                 "replies", m->chan, tts, (long long)t->replies);
    else
        snprintf(msg, sizeof(msg), "Slack #%s thread %s: %lld replies from "
                 "%u people", m->chan, tts, (long long)t->replies, t->nusers);
    snprintf(aid, sizeof(aid), "slack_thread:%s:%s", m->chan, tts);
    sophia_json *data = h->json_object();
    pu_set_str(h, data, "channel", m->chan);
    pu_set_str(h, data, "thread_ts", tts);
    pu_set(h, data, "replies", h->json_int(t->replies));
    pu_set(h, data, "participants", h->json_int(t->nusers));
    pu_set_str(h, data, "account", m->account);
    if (!data)
        return SOPHIA_ENOMEM;
    int rc = pu_alert(h, ctx, "slack_thread", st->thread_severity, msg, aid,
                      d == PU_GATE_RESOLVE, data);
    if (!rc)
        h->counter_add(st->self, d == PU_GATE_RESOLVE ? "threads_resolved"
                                                      : "thread_alerts", 1);
    return rc;
}

/* A reply counts into its thread (m->thread_key): escalated once it has
 * thread_replies replies or thread_participants repliers, updated on
 * each reply after, resolved by a reply matching thread_resolve. */
static int thread_step(slack_state *st, sophia_ctx *ctx, slack_change *m,
                       const char *user)
{
    const slack_thread *old = pu_table_get(&st->threads, m->thread_key);
    slack_thread t = old ? *old : (slack_thread){0};
    uint64_t who = user ? pu_fnv(user, strlen(user)) : 0;
    int known = !user;
    for (uint32_t i = 0; i < t.nusers && !known; i++)
        known = t.users[i] == who;
    if (!known && t.nusers < SLACK_THREAD_USERS)
        t.users[t.nusers++] = who;
    t.replies++;
    m->thread_op = TH_PUT;
    if (t.resolved) {
        m->thread = t; /* resolved stays quiet */
        return 0;
    }
    int resolving = t.gate.fp && !regexec(&st->resolve_re, m->text, 0, NULL, 0);
    int escalated = t.replies >= st->thread_replies ||
                    t.nusers >= (uint64_t)st->thread_participants;
    uint64_t fp = resolving || !escalated
                      ? 0
                      : ((uint64_t)t.replies << 8 | t.nusers) + 1;
    int d = pu_gate_decide(&t.gate, fp, m->t, 0);
    if (d == PU_GATE_FIRE && !t.gate.fp)
        m->alerts++; /* the first firing is an alert; updates are not */
    t.resolved = d == PU_GATE_RESOLVE;
    t.gate = pu_gate_next(t.gate, d, fp, m->t);
    m->thread = t;
    return d == PU_GATE_FIRE || d == PU_GATE_RESOLVE
               ? thread_alert(st, ctx, m, &t, d)
               : 0;
}

/* The account's totals as they will be with m: cached and published. */
static int publish_account(slack_state *st, sophia_ctx *ctx,
                           const slack_change *m)
{
    const sophia_host *h = st->host;
    const slack_account *a = pu_table_get(&st->accounts, m->account);
    slack_account now = a ? *a : (slack_account){0};
    now.messages += m->kind == MSG_PLAIN;
    now.keywords += m->keywords;
    now.alerts += m->alerts;
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "slack_account");
    pu_set_str(h, d, "account", m->account);
    pu_set(h, d, "messages", h->json_int(now.messages));
    pu_set(h, d, "alerts", h->json_int(now.alerts));
    pu_set(h, d, "keywords", h->json_int(now.keywords));
    char key[400], tag[300];
    snprintf(key, sizeof(key), "%saccount:%s", st->prefix, m->account);
    snprintf(tag, sizeof(tag), "account:%s", m->account);
    const char *tags[] = {"slack", tag, NULL};
    sophia_json *copy = d ? h->json_copy(d) : NULL;
    int rc = copy ? h->cache_put(ctx, key, copy, st->ttl, tags) : SOPHIA_ENOMEM;
    if (!rc)
        return h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, st->dashboard, d);
    h->json_free(d);
    return rc;
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
    pu_set(h, m, "value", h->json_int(c->messages + (msg->kind == MSG_PLAIN)));
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

/* A change for one message; msg_ts and thread_ts (NULL: none) key the
 * message and its thread within chan. NULL on no memory. */
static slack_change *change_new(int kind, double t, const char *chan,
                                const char *text, const char *msg_ts,
                                const char *thread_ts, const char *account)
{
    size_t nc = strlen(chan) + 1, nt = strlen(text) + 1;
    size_t nm = msg_ts ? nc + strlen(msg_ts) + 1 : 0;
    size_t nth = thread_ts ? nc + strlen(thread_ts) + 1 : 0;
    size_t na = account ? strlen(account) + 1 : 0;
    slack_change *m = calloc(1, sizeof(*m) + nc + nt + nm + nth + na);
    if (!m)
        return NULL;
    char *p = m->buf;
    m->kind = kind;
    m->t = t;
    m->chan = memcpy(p, chan, nc);
    m->text = memcpy(p += nc, text, nt);
    p += nt;
    if (msg_ts) {
        m->msg_key = p;
        p += sprintf(p, "%s %s", chan, msg_ts) + 1;
    }
    if (thread_ts) {
        m->thread_key = p;
        p += sprintf(p, "%s %s", chan, thread_ts) + 1;
    }
    if (account)
        m->account = memcpy(p, account, na);
    return m;
}

/* Slack time `ts` (seconds.micros), else now. */
static double slack_time(const sophia_host *h, const char *ts)
{
    return ts ? strtod(ts, NULL) : (double)h->now_us() / 1e6;
}

/* message_deleted: no alert; the message's alerted rules are forgotten,
 * and a thread it was the root of is resolved (when firing) and
 * forgotten. The channel counts the deletion. */
static sophia_verdict on_delete(slack_state *st, const sophia_json *ev,
                                sophia_ctx *ctx)
{
    static const slack_channel none;
    const sophia_host *h = st->host;
    const char *chan = pu_str(h, ev, "channel");
    const char *dts = pu_str(h, ev, "deleted_ts");
    if (!dts)
        dts = pu_str(h, ev, "previous_message.ts");
    if (!chan || !dts)
        return SOPHIA_PROCESS_ERROR;
    slack_change *m = change_new(MSG_DELETE, slack_time(h, pu_str(h, ev, "ts")),
                                 chan, "", dts, dts, NULL);
    if (!m)
        return SOPHIA_PROCESS_RETRY;
    const slack_channel *c = pu_table_get(&st->channels, chan);
    const slack_thread *t = pu_table_get(&st->threads, m->thread_key);
    int rc = publish_channel(st, ctx, chan, c ? c : &none, m);
    if (t)
        m->thread_op = TH_DEL;
    if (!rc && t && t->gate.fp)
        rc = thread_alert(st, ctx, m, t, PU_GATE_RESOLVE);
    if (rc)
        free(m);
    else
        rc = h->stage(ctx, slack_apply, free, m);
    return rc ? SOPHIA_PROCESS_RETRY : SOPHIA_PROCESS_OK;
}

/* The effects of a message (plain, reply, edit, app mention) into ctx;
 * c is its committed channel (NULL: new). */
static int message_effects(slack_state *st, sophia_ctx *ctx,
                           const slack_channel *c, slack_change *m,
                           const char *user, int edited)
{
    static const slack_channel none; /* a channel not seen yet */
    const sophia_host *h = st->host;
    int rc = publish_channel(st, ctx, m->chan, c ? c : &none, m);
    double amount = amount_in(st, m->text);
    if (!rc && amount > 0)
        rc = publish_deal(st, ctx, m->chan, user, m->text, amount, edited);
    if (!rc)
        rc = run_rules(st, ctx, c, m, user);
    if (!rc && m->thread_key)
        rc = thread_step(st, ctx, m, user);
    if (!rc)
        remember_preference(st, ctx, m->chan, user, m->text);
    if (!rc && m->kind == MSG_APP_MENTION) {
        sophia_json *n = h->json_object();
        pu_set_str(h, n, "kind", "app_mention");
        pu_set_str(h, n, "channel", m->chan);
        pu_set_str(h, n, "user", user);
        pu_set_str(h, n, "text", m->text);
        rc = h->publish(ctx, SOPHIA_UPDATE_NOTIFICATION, NULL, st->dashboard, n);
    }
    if (!rc && m->account)
        rc = publish_account(st, ctx, m);
    return rc;
}

/* 1 when message `ts` of `chan` was deleted (the mark its deletion left
 * among the last max_messages). */
static int deleted_before(slack_state *st, const char *chan, const char *ts)
{
    char key[400];
    if (!ts || snprintf(key, sizeof(key), "%s %s", chan, ts) >= (int)sizeof(key))
        return 0;
    return ((uintptr_t)pu_table_get(&st->alerted, key) & SLACK_DELETED) != 0;
}

static sophia_verdict on_message(slack_state *st, const sophia_json *ev,
                                 sophia_ctx *ctx, int app_mention)
{
    const sophia_host *h = st->host;
    const char *chan = pu_str(h, ev, "channel");
    const char *sub = pu_str(h, ev, "subtype");
    if (sub && !strcmp(sub, "message_deleted"))
        return on_delete(st, ev, ctx);
    int edited = sub && !strcmp(sub, "message_changed");
    if (sub && !edited && strcmp(sub, "bot_message") && strcmp(sub, "thread_broadcast"))
        return SOPHIA_PROCESS_DROP; /* joins, topic changes… */
    const sophia_json *msg = edited ? h->json_get(ev, "message") : ev;
    const char *text = pu_str(h, msg, "text");
    const char *user = pu_str(h, msg, "user");
    if (!chan || !text)
        return SOPHIA_PROCESS_ERROR;
    const char *ts = pu_str(h, ev, "ts"), *mts = pu_str(h, msg, "ts");
    const char *tts = pu_str(h, msg, "thread_ts");
    int reply = !edited && !app_mention && tts && mts && strcmp(tts, mts);
    if (deleted_before(st, chan, mts))
        return SOPHIA_PROCESS_DROP; /* it arrived after its deletion */
    slack_change *m = change_new(edited        ? MSG_EDIT
                                 : app_mention ? MSG_APP_MENTION
                                               : MSG_PLAIN,
                                 slack_time(h, ts), chan, text, mts,
                                 reply ? tts : NULL,
                                 pu_table_get(&st->chan_account, chan));
    if (!m)
        return SOPHIA_PROCESS_RETRY;
    int rc = message_effects(st, ctx, pu_table_get(&st->channels, chan), m,
                             user, edited);
    if (rc)
        free(m);
    else
        rc = h->stage(ctx, slack_apply, free, m);
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
    {"alert_cooldown", SOPHIA_OPT_DOUBLE, "300",
     "seconds of Slack time an alert rule stays quiet in a channel after "
     "it alerted there (0: none)"},
    {"max_channels", SOPHIA_OPT_INT, "10000",
     "channels whose counts are kept (least recently active forgotten)"},
    {"max_threads", SOPHIA_OPT_INT, "10000",
     "threads whose replies and escalation are kept"},
    {"max_messages", SOPHIA_OPT_INT, "10000",
     "messages whose alerted rules are kept, so an edit does not alert "
     "again"},
    {"thread_replies", SOPHIA_OPT_INT, "10",
     "replies from which a thread raises a slack_thread alert"},
    {"thread_participants", SOPHIA_OPT_INT, "5",
     "distinct repliers from which a thread raises a slack_thread alert"},
    {"thread_resolve", SOPHIA_OPT_STRING,
     "(^|[^a-z])(resolved|fixed|closed)([^a-z]|$)",
     "POSIX ERE (case-insensitive): a reply matching it resolves its "
     "thread's alert"},
    {"thread_severity", SOPHIA_OPT_STRING, "warning",
     "severity of slack_thread alerts (and of their resolution)"},
    {"channel_accounts", SOPHIA_OPT_LIST, NULL,
     "channel to account map, entries 'C024BE91L=acme': per-account "
     "totals (messages, alerts, keyword matches) are published"},
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
    .version = "1.2.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Slack messages -> channel activity, mentions, deal "
                   "mentions, keyword alerts, thread escalation, account "
                   "rollups",
    .options = slack_options,
    .init = slack_init,
    .fini = slack_fini,
    .processor = &slack_ops,
};
