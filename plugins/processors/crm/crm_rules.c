/*
 * crm_rules.c - the crm processor's business rules (see crm.c's comment
 * for what they are): the effects of a deal's stage, amount and close
 * date changes (transition updates, won/lost, large_deal and
 * close_date_slipped alerts with their cooldowns, stage velocity), the
 * per-stage pipeline totals and their metric updates, and the number and
 * date helpers they and the parsers share.
 *
 * Kept apart from crm.c, which reads events and keeps the deals, so the rules
 * can be read (and changed) on their own. They only compute and publish:
 * the deal they change is the caller's copy, staged by crm.c, and the
 * totals move only when a staged deal commits (crm_total_add from crm.c's
 * apply) - crm_total_touch notes an event's moves for crm_publish_totals.
 * The `totals` table is touched only here.
 */
#include "crm.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAY_MS 86400000.0

/* ------------------------------------------------------------ helpers */

/* "Closed Won" / "closedwon" / "closed_won" -> "closedwon". */
static void norm_stage(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (; s && *s && n + 1 < len; s++)
        if (isalnum((unsigned char)*s))
            out[n++] = (char)tolower((unsigned char)*s);
    out[n] = '\0';
}

int crm_num_of(const sophia_host *h, const sophia_json *v, double *out)
{
    if (h->json_type(v) == SOPHIA_JSON_NUMBER) {
        *out = h->json_number(v, 0);
        return 1;
    }
    const char *s = h->json_string(v);
    char *end;
    if (!s || !*s)
        return 0;
    *out = strtod(s, &end);
    return *end == '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard
 * Hinnant's days_from_civil): no timegm, no TZ. */
static int64_t days_of(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* A close date: ms since the epoch (HubSpot: a number or its text) or
 * "YYYY-MM-DD" (Salesforce), into *ms; 0 when it is neither. */
int crm_date_of(const sophia_host *h, const sophia_json *v, int64_t *ms)
{
    const char *s = h->json_string(v);
    int y, m, d, n = 0;
    double x;
    if (s && sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) == 3 && n == 10 &&
        m >= 1 && m <= 12 && d >= 1 && d <= 31) {
        *ms = days_of(y, m, d) * 86400000LL;
        return 1;
    }
    if (!crm_num_of(h, v, &x) || !(x > 0) || x > 9e15)
        return 0;
    *ms = (int64_t)x;
    return 1;
}

/* ------------------------------------------------------------ totals */

int crm_totals_init(crm_state *st)
{
    return pu_table_init(&st->totals, 4096, free);
}

void crm_totals_free(crm_state *st)
{
    pu_table_free(&st->totals);
}

/* "<source>\x1f<stage>" of a deal that has a stage, else "". */
static void total_key(const crm_deal *d, char *out, size_t len)
{
    if (d->stage[0])
        snprintf(out, len, "%s\x1f%s", d->salesforce ? "salesforce" : "hubspot",
                 d->stage);
    else
        out[0] = '\0';
}

/* Moves the committed total of `d`'s stage by sign x its contribution. */
void crm_total_add(crm_state *st, const crm_deal *d, int sign)
{
    char key[80];
    total_key(d, key, sizeof(key));
    if (!key[0])
        return;
    crm_total *t = pu_table_get(&st->totals, key);
    if (!t && sign > 0 && (t = calloc(1, sizeof(*t))) &&
        pu_table_put(&st->totals, key, t))
        return; /* no memory: the stage goes untotalled */
    if (!t)
        return;
    t->deals += sign;
    t->amount += sign * (d->has_amount ? d->amount : 0);
    if (t->deals <= 0)
        pu_table_del(&st->totals, key);
}

/* Notes that this event moves `d`'s stage total by sign x its part, for
 * the publish at the event's end. */
void crm_total_touch(crm_state *st, const crm_deal *d, int sign)
{
    char key[80];
    total_key(d, key, sizeof(key));
    if (!key[0])
        return;
    size_t i = 0;
    while (i < st->ntouched && strcmp(st->touched[i].key, key))
        i++;
    if (i == st->ntouched) {
        if (i == CRM_TOUCHES)
            return; /* more stages in one event: they show at their next */
        memset(&st->touched[i], 0, sizeof(st->touched[i]));
        snprintf(st->touched[i].key, sizeof(st->touched[i].key), "%s", key);
        st->ntouched++;
    }
    st->touched[i].delta.deals += sign;
    st->touched[i].delta.amount += sign * (d->has_amount ? d->amount : 0);
}

static int publish_total(const crm_state *st, sophia_ctx *ctx,
                         const char *key, const char *metric, double v)
{
    const sophia_host *h = st->host;
    const char *sep = strchr(key, '\x1f');
    char source[16];
    snprintf(source, sizeof(source), "%.*s", (int)(sep - key), key);
    sophia_json *d = h->json_object(), *labels = h->json_object();
    pu_set_str(h, labels, "source", source);
    pu_set_str(h, labels, "stage", sep + 1);
    pu_set_str(h, d, "metric", metric);
    pu_set(h, d, "value", h->json_num(v));
    if (pu_set(h, d, "labels", labels))
        return SOPHIA_ENOMEM;
    return h->publish(ctx, SOPHIA_UPDATE_METRIC, NULL, st->dashboard, d);
}

/* The totals of the stages this event touched, as they stand once it
 * commits. */
int crm_publish_totals(crm_state *st, sophia_ctx *ctx)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < st->ntouched; i++) {
        const crm_touch *t = &st->touched[i];
        const crm_total *c = pu_table_get(&st->totals, t->key);
        crm_total v = {(c ? c->amount : 0) + t->delta.amount,
                       (c ? c->deals : 0) + t->delta.deals};
        rc = publish_total(st, ctx, t->key, "crm_pipeline_deals",
                           (double)v.deals);
        if (!rc)
            rc = publish_total(st, ctx, t->key, "crm_pipeline_amount",
                               v.amount);
    }
    return rc;
}

/* ------------------------------------------------------------ effects */

/* `days` < 0: no days_in_stage member. */
int crm_publish_kind(const crm_state *st, sophia_ctx *ctx,
                     const crm_change *c, const char *kind,
                     sophia_json *from, sophia_json *to, double days)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", kind);
    pu_set_str(h, d, "source", c->source);
    pu_set_str(h, d, "object", c->object);
    pu_set_str(h, d, "id", c->id);
    pu_set(h, d, "from", from ? from : h->json_bool_new(0));
    pu_set(h, d, "to", to ? to : h->json_bool_new(0));
    if (days >= 0)
        pu_set(h, d, "days_in_stage", h->json_num(round(days * 100) / 100));
    return d ? h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, st->dashboard, d)
             : SOPHIA_ENOMEM;
}

static int deal_alert(const crm_state *st, sophia_ctx *ctx,
                      const crm_change *c, const char *type,
                      const char *severity, const char *what, double amount)
{
    const sophia_host *h = st->host;
    char msg[300];
    snprintf(msg, sizeof(msg), "%s deal %s %s", c->source, c->id, what);
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "source", c->source);
    pu_set_str(h, d, "deal_id", c->id);
    if (amount > 0)
        pu_set(h, d, "amount", h->json_num(amount));
    return h->alert(ctx, type, severity, msg, d);
}

/* A condition alert on the deal (alert_id "<type>:<source>:<id>") raised
 * or resolved; takes `data`. A host without alert_ex raises it plainly
 * and has no resolve. */
int crm_deal_condition(const crm_state *st, sophia_ctx *ctx,
                       const crm_change *c, const char *type,
                       const char *severity, const char *what,
                       int resolve, sophia_json *data)
{
    const sophia_host *h = st->host;
    char msg[300], id[300];
    snprintf(msg, sizeof(msg), "%s deal %s %s", c->source, c->id, what);
    snprintf(id, sizeof(id), "%s:%s:%s", type, c->source, c->id);
    pu_set_str(h, data, "source", c->source);
    pu_set_str(h, data, "deal_id", c->id);
    if (!st->has_alert_ex) {
        if (!resolve)
            return h->alert(ctx, type, severity, msg, data);
        h->json_free(data);
        return 0;
    }
    sophia_alert a = {.struct_size = sizeof(a), .alert_type = type,
                      .severity = severity, .message = msg, .alert_id = id,
                      .dashboard_id = st->dashboard, .resolve = resolve};
    return h->alert_ex(ctx, &a, data);
}

/* The time the change's rules count in: its event time, else now. */
static int64_t now_of(const crm_state *st, const crm_change *c)
{
    return c->at ? c->at : st->host->now_us() / 1000;
}

/* A cooldown that started at `last` (0: never) is over at `now`. */
static int cooled(const crm_state *st, int64_t last, int64_t now)
{
    return !last || (double)(now - last) >= st->cooldown_ms;
}

static int closed(const char *norm)
{
    return !strcmp(norm, "closedwon") || !strcmp(norm, "closedlost");
}

static int stage_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                         crm_deal *d)
{
    const sophia_host *h = st->host;
    char was[64], now[64];
    norm_stage(d->stage, was, sizeof(was));
    norm_stage(c->stage, now, sizeof(now));
    if (!strcmp(was, now))
        return 0;
    double days = d->stage[0] && d->since && c->at && c->at >= d->since
                      ? (double)(c->at - d->since) / DAY_MS
                      : -1;
    int rc = crm_publish_kind(st, ctx, c, "deal_stage",
                              d->stage[0] ? h->json_str(d->stage) : NULL,
                              h->json_str(c->stage), days);
    double amt = c->has_amount ? c->amount : d->amount;
    if (!rc && !strcmp(now, "closedwon"))
        rc = deal_alert(st, ctx, c, "deal_won", "info", "closed won", amt);
    else if (!rc && !strcmp(now, "closedlost"))
        rc = deal_alert(st, ctx, c, "deal_lost", "warning", "closed lost", amt);
    if (!rc && closed(now) && d->slip_open) { /* no close date to slip */
        rc = crm_deal_condition(st, ctx, c, "close_date_slipped", "warning",
                                "closed", 1, h->json_object());
        d->slip_open = 0;
    }
    snprintf(d->stage, sizeof(d->stage), "%s", c->stage);
    d->since = c->at;
    return rc;
}

static int amount_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                          crm_deal *d)
{
    const sophia_host *h = st->host;
    if (d->has_amount && d->amount == c->amount)
        return 0;
    int rc = crm_publish_kind(st, ctx, c, "deal_amount",
                              d->has_amount ? h->json_num(d->amount) : NULL,
                              h->json_num(c->amount), -1);
    int64_t now = now_of(st, c);
    char what[100];
    if (!rc && st->large > 0 && c->amount >= st->large && !d->large_open) {
        if (cooled(st, d->large_alert_at, now)) {
            sophia_json *data = h->json_object();
            pu_set(h, data, "amount", h->json_num(c->amount));
            snprintf(what, sizeof(what), "reached %.0f", c->amount);
            rc = crm_deal_condition(st, ctx, c, "large_deal",
                                    st->large_severity, what, 0, data);
            d->large_alert_at = now;
            d->large_open = 1;
        } else {
            h->counter_add(st->self, "alerts_suppressed", 1);
        }
    } else if (!rc && d->large_open && c->amount < st->large) {
        sophia_json *data = h->json_object();
        pu_set(h, data, "amount", h->json_num(c->amount));
        snprintf(what, sizeof(what), "fell to %.0f", c->amount);
        rc = crm_deal_condition(st, ctx, c, "large_deal",
                                st->large_severity, what, 1, data);
        d->large_open = 0;
    }
    d->amount = c->amount;
    d->has_amount = 1;
    return rc;
}

/* "YYYY-MM-DD" of ms since the epoch (UTC). */
static sophia_json *date_json(const sophia_host *h, int64_t ms)
{
    int64_t z = (ms >= 0 ? ms : ms - 86399999) / 86400000 + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    char buf[32];
    snprintf(buf, sizeof(buf), "%04lld-%02d-%02d",
             (long long)(yoe + era * 400 + (m <= 2)), m, d);
    return h->json_str(buf);
}

/* A close date moved later while the deal is open: close_date_slipped,
 * once per cooldown. */
static int slip_alert(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                      crm_deal *d)
{
    const sophia_host *h = st->host;
    int64_t now = now_of(st, c);
    char stage[64], what[120];
    norm_stage(d->stage, stage, sizeof(stage));
    if (closed(stage))
        return 0;
    if (!cooled(st, d->slip_alert_at, now)) {
        h->counter_add(st->self, "alerts_suppressed", 1);
        return 0;
    }
    double days = (double)(c->close_ms - d->close_ms) / DAY_MS;
    sophia_json *data = h->json_object();
    pu_set(h, data, "from", date_json(h, d->close_ms));
    pu_set(h, data, "to", date_json(h, c->close_ms));
    pu_set(h, data, "days_slipped", h->json_num(round(days * 100) / 100));
    snprintf(what, sizeof(what), "close date slipped %.0f days", days);
    d->slip_alert_at = now;
    d->slip_open = 1;
    return crm_deal_condition(st, ctx, c, "close_date_slipped", "warning",
                              what, 0, data);
}

static int close_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                         crm_deal *d)
{
    const sophia_host *h = st->host;
    if (d->close_ms == c->close_ms)
        return 0;
    int rc = crm_publish_kind(st, ctx, c, "deal_close_date",
                              d->close_ms ? date_json(h, d->close_ms) : NULL,
                              date_json(h, c->close_ms), -1);
    if (!rc && d->close_ms && c->close_ms > d->close_ms)
        rc = slip_alert(st, ctx, c, d);
    d->close_ms = c->close_ms;
    return rc;
}

/* The deal's properties the change carries, each applied only when it is
 * not older than the one the deal holds (else counted `stale`). */
int crm_deal_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                     crm_deal *d, int *moved)
{
    const sophia_host *h = st->host;
    int rc = 0;
    struct {
        int has;
        int64_t *at;
        int (*fn)(crm_state *, sophia_ctx *, const crm_change *, crm_deal *);
    } props[] = {{c->stage != NULL, &d->stage_at, stage_effects},
                 {c->has_amount, &d->amount_at, amount_effects},
                 {c->close_ms != 0, &d->close_at, close_effects}};
    for (size_t i = 0; !rc && i < sizeof(props) / sizeof(*props); i++) {
        if (!props[i].has)
            continue;
        if (c->at && c->at < *props[i].at) {
            h->counter_add(st->self, "stale", 1);
            continue;
        }
        rc = props[i].fn(st, ctx, c, d);
        if (c->at)
            *props[i].at = c->at;
        (*moved)++;
    }
    if (c->at > d->seen_at)
        d->seen_at = c->at;
    d->salesforce = !strcmp(c->source, "salesforce");
    return rc;
}
