/*
 * crm - the processor for CRM change events: HubSpot webhooks and
 * Salesforce Change Data Capture.
 *
 * HubSpot posts a JSON array of events; the core splits arrays, so each
 * event here is one object with `subscriptionType` (`deal.propertyChange`
 * with propertyName/propertyValue, `deal.creation`, `contact.creation`,
 * …) and `occurredAt` (ms). Salesforce CDC events carry
 * `data.payload.ChangeEventHeader` (entityName, recordIds, changeType,
 * changedFields, commitTimestamp in ms) beside the changed fields
 * themselves (StageName, Amount, CloseDate, …).
 *
 * For deals (HubSpot deals, Salesforce Opportunities) the instance knows
 * the last stage, amount and close date of each deal - from memory, else
 * from the cached deal record - so it can report transitions: `deal_stage`,
 * `deal_amount` and `deal_close_date` `data` updates, `deal_won` /
 * `deal_lost` alerts on closed stages, and a `large_deal` alert when an
 * amount reaches `large_deal`. Every change first invalidates the tags
 * `deal:<id>` (and, for Salesforce, `opportunity:<id>`, the tag the gong
 * processor puts on call analyses) so nothing derived from the old deal
 * survives, then writes the fresh record to `<prefix>deal:<source>:<id>`
 * (tagged `crm`, `deal:<id>` and `crm:<source>:<object>`). A deletion
 * (`*.deletion`, CDC `DELETE`) drops the record and publishes a
 * `crm_change` with to = "deleted".
 *
 * Event time, not arrival: a change's time is HubSpot `occurredAt` or the
 * CDC header's `commitTimestamp` (ms). Each deal keeps, per property
 * (stage, amount, close date), the time of the change it holds, and the
 * latest time applied to it. A change older than the property's time is
 * late: it does not rewind the property (counter `stale`), while a newer
 * property in the same event still applies. A change older than the
 * deal's latest time by more than `allowed_lateness` seconds is dropped
 * whole (counter `late_dropped`): nothing is published for it. Equal
 * times apply in arrival order. A change without a time (neither field)
 * applies as it arrives and moves no clock. Duplicates are the
 * redelivery set's (below), not this rule's.
 *
 * Business rules (all per deal, in event time):
 *   - stage velocity: a `deal_stage` update carries `days_in_stage`, the
 *     days between entering the stage it leaves and leaving it (absent
 *     when that entry was not seen with a time);
 *   - slipped close date: a close date (HubSpot `closedate` in ms,
 *     Salesforce `CloseDate` YYYY-MM-DD) moved later raises
 *     `close_date_slipped` (alert_id `close_date_slipped:<source>:<id>`,
 *     with from, to, days_slipped); at most once per `alert_cooldown`
 *     seconds per deal (later slips inside it counted
 *     `alerts_suppressed`, their `deal_close_date` update still sent),
 *     resolved when the deal reaches a closed stage or is deleted;
 *   - large deal: `large_deal` fires when the amount reaches `large_deal`
 *     (alert_id `large_deal:<source>:<id>`), at most once per cooldown,
 *     and is resolved when the amount falls below it again;
 *   - pipeline totals: per source and stage, the number and summed amount
 *     of the deals this instance tracks, published as `metric` updates
 *     `crm_pipeline_deals` and `crm_pipeline_amount` (labels source,
 *     stage) for each stage an event changes; the values include the
 *     event's own changes. A deal evicted by `max_deals` leaves the totals
 *     at its commit, seen at the stage's next publish.
 *
 * Salesforce gaps: CDC changeType GAP_CREATE / GAP_UPDATE / GAP_DELETE /
 * GAP_UNDELETE say a change happened that the event cannot describe (its
 * fields are missing): re-read the record. So its cached record is
 * invalidated (with its tags), the deal is forgotten (its state is unknown
 * until the re-read posts it again) and a `crm_resync` `data` update names
 * it; no field of the event is applied. GAP_OVERFLOW (too many changes in
 * one transaction; its recordIds are not the records) does that for the
 * whole entity: tag `crm:salesforce:<object>` is invalidated, every
 * Salesforce deal of it forgotten, and a `crm_resync` alert raised.
 * Counter `resyncs`.
 *
 * State and the verdict (SDK 1.1): process() only reads the deals it
 * knows; each deal's new state (or its removal) is handed to host->stage
 * and lands when the event's effects commit, the pipeline totals with it.
 * So an event that goes RETRY, ERROR, or whose effects are refused leaves
 * the deal where it was, and its redelivery reports the same transition
 * and alerts.
 *
 * Redelivery (the same event after its effects committed, e.g. a crash
 * before the ack; HubSpot also retries on its own): an event with an id -
 * HubSpot `eventId`, Salesforce `data.event.replayId` (with the channel),
 * else the CDC transactionKey + sequenceNumber - is remembered once it
 * commits (the last `max_seen`), and seen again it does nothing (verdict
 * OK, counter `duplicates`). Without an id the transitions are still
 * idempotent by comparison (the same stage or amount again is no
 * transition); a non-deal `crm_change` is then published again.
 *
 * Memory: at most `max_deals` deals (the least recently created goes
 * first; a deal seen again after that starts from its cached record when
 * the prefetch finds it). About 0.3 KB per deal (README's figures).
 *
 * Reload: export_state/import_state carry the committed deals (with their
 * clocks and open alerts) and seen ids; the totals are rebuilt from the
 * deals.
 *
 * Restart and other nodes (SDK 1.1 prefetch): memory knows only what this
 * instance committed, so a node that never saw a deal, or this one after a
 * restart, would report its next stage as a transition from nothing.
 * crm_prefetch names each deal's record key, the host reads it through L1,
 * L2 and L3 before process(), and deal_get prefers that record (what the
 * last commit anywhere wrote, clocks included) to memory.
 *
 * Files: this one reads events, keeps the deals and writes their records;
 * crm_rules.c holds the business rules and the pipeline totals; crm.h is
 * what they share.
 */
#include "crm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A deal's state once the event commits (host->stage's change): the deal
 * `key` becomes `deal`, or goes (deleted), or every deal whose key starts
 * with `key` goes (prefix: GAP_OVERFLOW). */
typedef struct crm_deal_change {
    int deleted, prefix;
    crm_deal deal;
    char key[];
} crm_deal_change;

/* ------------------------------------------------------------ lifecycle */

static void crm_fini(void *state)
{
    crm_state *st = state;
    if (!st)
        return;
    pu_table_free(&st->deals);
    crm_totals_free(st);
    pu_seen_free(&st->seen);
    free(st->prefix);
    free(st->dashboard);
    free(st->large_severity);
    free(st);
}

/* The options that must be positive or not negative: 0, or EINVAL
 * logged with the option's name. */
static int check_opts(const sophia_host *h, sophia_self *self,
                      const sophia_opts *opts)
{
    const char *bad = NULL;
    if (h->opt_int(opts, "max_seen") < 1)
        bad = "max_seen must be at least 1";
    else if (h->opt_int(opts, "max_deals") < 1)
        bad = "max_deals must be at least 1";
    else if (!(h->opt_double(opts, "allowed_lateness") >= 0))
        bad = "allowed_lateness must be 0 or more seconds";
    else if (!(h->opt_double(opts, "alert_cooldown") >= 0))
        bad = "alert_cooldown must be 0 or more seconds";
    if (bad)
        h->log(self, SOPHIA_LOG_ERROR, "%s", bad);
    return bad ? SOPHIA_EINVAL : 0;
}

static int crm_init(const sophia_host *host, sophia_self *self,
                    const sophia_opts *opts, void **state)
{
    if (pu_require_stage(host, self, "crm"))
        return SOPHIA_EABI;
    if (check_opts(host, self, opts))
        return SOPHIA_EINVAL;
    crm_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->has_prefetch = SOPHIA_HOST_HAS(host, prefetched);
    st->has_alert_ex = SOPHIA_HOST_HAS(host, alert_ex) && host->alert_ex;
    st->prefix = pu_strdup(host->opt_string(opts, "cache_prefix"));
    st->dashboard = pu_strdup(host->opt_string(opts, "dashboard"));
    st->large_severity = pu_strdup(host->opt_string(opts, "large_deal_severity"));
    st->ttl = host->opt_double(opts, "ttl");
    st->large = host->opt_double(opts, "large_deal");
    st->lateness_ms = host->opt_double(opts, "allowed_lateness") * 1000.0;
    st->cooldown_ms = host->opt_double(opts, "alert_cooldown") * 1000.0;
    if (!st->prefix || !st->dashboard || !st->large_severity ||
        pu_table_init(&st->deals, (size_t)host->opt_int(opts, "max_deals"),
                      free) ||
        crm_totals_init(st) ||
        pu_seen_init(&st->seen, (size_t)host->opt_int(opts, "max_seen"))) {
        crm_fini(st);
        return SOPHIA_ENOMEM;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ------------------------------------------------------------ parsing */

/* An event time in ms (a number > 0), or 0. */
static int64_t time_of(const sophia_host *h, const sophia_json *v)
{
    double x = h->json_number(v, 0);
    return x > 0 && x < 9e15 ? (int64_t)x : 0;
}

static int parse_hubspot(const sophia_host *h, const sophia_json *b,
                         crm_change *c, char *idbuf, size_t idlen,
                         char *object, size_t objlen)
{
    const char *sub = pu_str(h, b, "subscriptionType");
    const char *dot = sub ? strchr(sub, '.') : NULL;
    const sophia_json *oid = h->json_get(b, "objectId");
    if (!dot || !oid)
        return -1;
    snprintf(object, objlen, "%.*s", (int)(dot - sub), sub);
    if (h->json_type(oid) == SOPHIA_JSON_NUMBER)
        snprintf(idbuf, idlen, "%lld", (long long)h->json_number(oid, 0));
    else if (h->json_string(oid))
        snprintf(idbuf, idlen, "%s", h->json_string(oid));
    else
        return -1;
    c->source = "hubspot";
    c->object = object;
    c->id = idbuf;
    c->kind = dot + 1;
    c->fields = b;
    const char *prop = pu_str(h, b, "propertyName");
    const sophia_json *val = h->json_get(b, "propertyValue");
    if (prop && !strcmp(prop, "dealstage"))
        c->stage = h->json_string(val);
    else if (prop && !strcmp(prop, "amount"))
        c->has_amount = crm_num_of(h, val, &c->amount);
    else if (prop && !strcmp(prop, "closedate") &&
             !crm_date_of(h, val, &c->close_ms))
        c->close_ms = 0;
    c->at = time_of(h, h->json_get(b, "occurredAt"));
    return 0;
}

/* One Salesforce CDC event may name several records; `i` picks one. */
static int parse_salesforce(const sophia_host *h, const sophia_json *b,
                            size_t i, crm_change *c)
{
    const sophia_json *p = h->json_get(b, "data.payload");
    if (!p)
        p = h->json_get(b, "payload");
    const sophia_json *hdr = h->json_get(p, "ChangeEventHeader");
    const char *entity = pu_str(h, hdr, "entityName");
    const sophia_json *ids = h->json_get(hdr, "recordIds");
    if (!entity || i >= h->json_size(ids))
        return -1;
    c->source = "salesforce";
    c->object = !strcmp(entity, "Opportunity") ? "deal" : entity;
    c->id = h->json_string(h->json_at(ids, i));
    c->kind = pu_str(h, hdr, "changeType");
    c->fields = p;
    c->stage = pu_str(h, p, "StageName");
    c->has_amount = crm_num_of(h, h->json_get(p, "Amount"), &c->amount);
    if (!crm_date_of(h, h->json_get(p, "CloseDate"), &c->close_ms))
        c->close_ms = 0;
    c->at = time_of(h, h->json_get(hdr, "commitTimestamp"));
    return c->id ? 0 : -1;
}

/* ------------------------------------------------------------ effects */

/* The cache key of a change's record. */
static void record_key(const crm_state *st, const crm_change *c, char *key,
                       size_t len)
{
    snprintf(key, len, "%s%s:%s:%s", st->prefix, c->object, c->source, c->id);
}

static int64_t int_of(const sophia_host *h, const sophia_json *r,
                      const char *k)
{
    return (int64_t)h->json_number(h->json_get(r, k), 0);
}

/* The deal a record (put_record's, or an export's entry) describes. */
static void deal_from_record(const sophia_host *h, const sophia_json *r,
                             crm_deal *d)
{
    const char *s = pu_str(h, r, "stage"), *src = pu_str(h, r, "source");
    if (s)
        snprintf(d->stage, sizeof(d->stage), "%s", s);
    d->has_amount = crm_num_of(h, h->json_get(r, "amount"), &d->amount);
    d->salesforce = src && !strcmp(src, "salesforce");
    d->close_ms = int_of(h, r, "close_date");
    d->stage_at = int_of(h, r, "stage_at");
    d->amount_at = int_of(h, r, "amount_at");
    d->close_at = int_of(h, r, "close_at");
    d->since = int_of(h, r, "stage_since");
    d->seen_at = int_of(h, r, "seen_at");
    d->slip_alert_at = int_of(h, r, "slip_alert_at");
    d->large_alert_at = int_of(h, r, "large_alert_at");
    d->slip_open = h->json_bool(h->json_get(r, "slip_open"), 0);
    d->large_open = h->json_bool(h->json_get(r, "large_open"), 0);
}

/* The deal's committed state into *d. First the record the prefetch read
 * through every tier (crm_prefetch): it is what the last commit wrote,
 * on this node or on another sharing the tiers, and it survives a
 * restart. Then memory, then (no prefetch ran: a 1.0 host, a tool) the
 * L1 record, else empty. Only reads: the new state is staged. The
 * alerts' state is this instance's, so it comes from memory. */
static void deal_get(crm_state *st, sophia_ctx *ctx, const char *key,
                     crm_deal *d)
{
    const sophia_host *h = st->host;
    const sophia_json *read = NULL;
    int rc = st->has_prefetch ? h->prefetched(ctx, key, &read)
                              : SOPHIA_EINVAL;
    const crm_deal *known = pu_table_get(&st->deals, key);
    memset(d, 0, sizeof(*d));
    if (rc == 0) {
        deal_from_record(h, read, d);
    } else if (known) {
        *d = *known;
    } else if (rc != SOPHIA_ENOENT) { /* no tier read: L1 is all there is */
        sophia_json *cached = h->cache_peek(key);
        if (cached)
            deal_from_record(h, cached, d);
        h->json_free(cached);
    }
    if (known) {
        d->slip_open = known->slip_open;
        d->large_open = known->large_open;
        d->slip_alert_at = known->slip_alert_at;
        d->large_alert_at = known->large_alert_at;
    }
}

/* Drops every deal whose key starts with `prefix` (GAP_OVERFLOW). */
static void deals_drop_prefix(crm_state *st, const char *prefix)
{
    size_t n = strlen(prefix);
    for (pu_entry *e = st->deals.oldest, *next; e; e = next) {
        next = e->newer;
        if (!strncmp(e->key, prefix, n)) {
            crm_total_add(st, e->val, -1);
            pu_table_del(&st->deals, e->key);
        }
    }
}

static void deal_apply(void *state, void *change)
{
    crm_state *st = state;
    crm_deal_change *c = change;
    crm_deal *old = c->prefix ? NULL : pu_table_get(&st->deals, c->key);
    crm_deal *d = c->deleted || c->prefix ? NULL : malloc(sizeof(*d));
    if (c->prefix) {
        deals_drop_prefix(st, c->key);
        free(c);
        return;
    }
    if (old)
        crm_total_add(st, old, -1);
    if (c->deleted) {
        pu_table_del(&st->deals, c->key);
    } else if (d) {
        *d = c->deal;
        if (!old && st->deals.n == st->deals.max) /* the oldest goes */
            crm_total_add(st, st->deals.oldest->val, -1);
        crm_total_add(st, d, 1);
        pu_table_put(&st->deals, c->key, d); /* takes d */
    }
    free(c);
}

/* The deal under `key` becomes `d` (or goes, d NULL; or with `prefix`
 * every deal under that key prefix goes) when the event commits. */
static int stage_deal(crm_state *st, sophia_ctx *ctx, const char *key,
                      const crm_deal *d, int prefix)
{
    size_t n = strlen(key) + 1;
    crm_deal_change *c = calloc(1, sizeof(*c) + n);
    if (!c)
        return SOPHIA_ENOMEM;
    c->deleted = !d;
    c->prefix = prefix;
    if (d)
        c->deal = *d;
    memcpy(c->key, key, n);
    if (!prefix) { /* the totals this moves, for crm_publish_totals */
        const crm_deal *old = pu_table_get(&st->deals, key);
        if (old)
            crm_total_touch(st, old, -1);
        if (d)
            crm_total_touch(st, d, 1);
    }
    return st->host->stage(ctx, deal_apply, free, c);
}

static int put_record(const crm_state *st, sophia_ctx *ctx, const char *key,
                      const crm_change *c, const crm_deal *d, const char *tag)
{
    const sophia_host *h = st->host;
    sophia_json *r = h->json_object();
    char entity[300];
    pu_set_str(h, r, "source", c->source);
    pu_set_str(h, r, "object", c->object);
    pu_set_str(h, r, "id", c->id);
    if (d && d->stage[0])
        pu_set_str(h, r, "stage", d->stage);
    if (d && d->has_amount)
        pu_set(h, r, "amount", h->json_num(d->amount));
    const int64_t *times[] = {d ? &d->close_ms : NULL, d ? &d->stage_at : NULL,
                              d ? &d->amount_at : NULL,
                              d ? &d->close_at : NULL, d ? &d->since : NULL,
                              d ? &d->seen_at : NULL};
    const char *names[] = {"close_date", "stage_at", "amount_at", "close_at",
                           "stage_since", "seen_at"};
    for (size_t i = 0; d && i < sizeof(names) / sizeof(*names); i++)
        if (*times[i])
            pu_set(h, r, names[i], h->json_int(*times[i]));
    pu_set_str(h, r, "last_change", c->kind);
    pu_set(h, r, "updated_us", h->json_int(h->now_us()));
    snprintf(entity, sizeof(entity), "crm:%s:%s", c->source, c->object);
    const char *tags[] = {"crm", tag, entity, NULL};
    return r ? h->cache_put(ctx, key, r, st->ttl, tags) : SOPHIA_ENOMEM;
}

static int is_kind(const crm_change *c, const char *a, const char *b)
{
    return c->kind && (!strcmp(c->kind, a) || (b && !strcmp(c->kind, b)));
}

/* CDC GAP_CREATE/UPDATE/DELETE/UNDELETE: the record changed in a way the
 * event does not carry. Its record goes (the tags went already), the
 * deal is forgotten, a crm_resync names it. */
static int resync_record(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                         const char *key)
{
    const sophia_host *h = st->host;
    int rc = h->cache_invalidate(ctx, key);
    if (!rc && !strcmp(c->object, "deal"))
        rc = stage_deal(st, ctx, key, NULL, 0);
    if (!rc)
        rc = crm_publish_kind(st, ctx, c, "crm_resync", NULL,
                              h->json_str(c->kind), -1);
    if (!rc)
        h->counter_add(st->self, "resyncs", 1);
    return rc;
}

/* Drops the tags of everything derived from the record: `deal:<id>`,
 * and for Salesforce deals `opportunity:<id>` (gong's). Before the
 * record's put, which carries the first tag itself. */
static int invalidate_tags(crm_state *st, sophia_ctx *ctx,
                           const crm_change *c, const char *tag)
{
    char opp[300];
    int rc = st->host->cache_invalidate_tag(ctx, tag);
    if (!rc && !strcmp(c->object, "deal") && !strcmp(c->source, "salesforce")) {
        snprintf(opp, sizeof(opp), "opportunity:%s", c->id);
        rc = st->host->cache_invalidate_tag(ctx, opp);
    }
    return rc;
}

static int delete_record(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                         const char *key, const crm_deal *d)
{
    const sophia_host *h = st->host;
    int rc = h->cache_invalidate(ctx, key);
    if (!rc && d && d->slip_open)
        rc = crm_deal_condition(st, ctx, c, "close_date_slipped", "warning",
                                "deleted", 1, h->json_object());
    if (!rc && d) /* the record goes with the object */
        rc = stage_deal(st, ctx, key, NULL, 0);
    return rc ? rc : crm_publish_kind(st, ctx, c, "crm_change", NULL,
                                      h->json_str("deleted"), -1);
}

static int apply_change(crm_state *st, sophia_ctx *ctx, const crm_change *c)
{
    const sophia_host *h = st->host;
    int deal = !strcmp(c->object, "deal");
    int gap = c->kind && !strncmp(c->kind, "GAP_", 4);
    char key[400], tag[300];
    record_key(st, c, key, sizeof(key));
    snprintf(tag, sizeof(tag), "%s:%s", c->object, c->id);
    crm_deal nd, *d = deal ? &nd : NULL; /* the deal after this change */
    if (d)
        deal_get(st, ctx, key, d);
    if (gap) { /* whatever its time: the record must be read again */
        int rc = invalidate_tags(st, ctx, c, tag);
        return rc ? rc : resync_record(st, ctx, c, key);
    }
    if (d && c->at && d->seen_at &&
        (double)(d->seen_at - c->at) > st->lateness_ms) {
        h->counter_add(st->self, "late_dropped", 1);
        return 0; /* too late to mean anything: nothing at all */
    }
    if (is_kind(c, "deletion", "DELETE")) {
        int rc = invalidate_tags(st, ctx, c, tag);
        return rc ? rc : delete_record(st, ctx, c, key, d);
    }
    int moved = 0, props = c->stage || c->has_amount || c->close_ms;
    int rc = d ? crm_deal_effects(st, ctx, c, d, &moved) : 0;
    if (!rc && d && props && !moved)
        return 0; /* every property was stale: the deal is as it was */
    if (!rc && (!d || !props))
        rc = crm_publish_kind(st, ctx, c, "crm_change", NULL,
                              h->json_str(c->kind ? c->kind : "change"), -1);
    if (!rc)
        rc = invalidate_tags(st, ctx, c, tag);
    if (!rc)
        rc = put_record(st, ctx, key, c, d, tag);
    return rc || !d ? rc : stage_deal(st, ctx, key, d, 0);
}

/* CDC GAP_OVERFLOW: too many changes to describe; its recordIds do not
 * name them. Everything cached of the entity goes (by its tag), every
 * Salesforce deal of it is forgotten, and a crm_resync alert says so. */
static int resync_entity(crm_state *st, sophia_ctx *ctx, const char *entity)
{
    const sophia_host *h = st->host;
    const char *object = !strcmp(entity, "Opportunity") ? "deal" : entity;
    char tag[300], prefix[400], msg[300];
    crm_change c = {.source = "salesforce", .object = object, .id = "*",
                    .kind = "GAP_OVERFLOW"};
    snprintf(tag, sizeof(tag), "crm:salesforce:%s", object);
    snprintf(prefix, sizeof(prefix), "%s%s:salesforce:", st->prefix, object);
    int rc = h->cache_invalidate_tag(ctx, tag);
    if (!rc && !strcmp(object, "deal"))
        rc = stage_deal(st, ctx, prefix, NULL, 1);
    if (!rc)
        rc = crm_publish_kind(st, ctx, &c, "crm_resync", NULL,
                              h->json_str(c.kind), -1);
    snprintf(msg, sizeof(msg), "Salesforce %s changes overflowed: re-read "
             "every record", entity);
    sophia_json *data = h->json_object();
    pu_set_str(h, data, "entity", entity);
    if (!rc && st->has_alert_ex) {
        sophia_alert a = {.struct_size = sizeof(a), .alert_type = "crm_resync",
                          .severity = "warning", .message = msg,
                          .dashboard_id = st->dashboard};
        rc = h->alert_ex(ctx, &a, data);
    } else if (!rc) {
        rc = h->alert(ctx, "crm_resync", "warning", msg, data);
    } else {
        h->json_free(data);
    }
    if (!rc)
        h->counter_add(st->self, "resyncs", 1);
    return rc;
}

/* The entity of a GAP_OVERFLOW event, or NULL. */
static const char *overflow_of(const sophia_host *h, const sophia_json *b)
{
    const sophia_json *hdr = h->json_get(b, "data.payload.ChangeEventHeader");
    if (!hdr)
        hdr = h->json_get(b, "payload.ChangeEventHeader");
    const char *type = pu_str(h, hdr, "changeType");
    return type && !strcmp(type, "GAP_OVERFLOW") ? pu_str(h, hdr, "entityName")
                                                 : NULL;
}

/* The event's id for redelivery ("" when it has none): HubSpot eventId,
 * Salesforce channel + replayId, else transactionKey + sequenceNumber. */
static void event_id(const sophia_host *h, const sophia_json *b, char *out,
                     size_t len)
{
    const sophia_json *v = h->json_get(b, "eventId");
    const char *chan = pu_str(h, b, "channel");
    const sophia_json *replay = h->json_get(b, "data.event.replayId");
    const sophia_json *hdr = h->json_get(b, "data.payload.ChangeEventHeader");
    const char *tk = pu_str(h, hdr, "transactionKey");
    out[0] = '\0';
    if (h->json_type(v) == SOPHIA_JSON_NUMBER)
        snprintf(out, len, "hubspot:%.17g", h->json_number(v, 0));
    else if (h->json_string(v))
        snprintf(out, len, "hubspot:%s", h->json_string(v));
    else if (h->json_type(replay) == SOPHIA_JSON_NUMBER)
        snprintf(out, len, "salesforce:%s:%.17g", chan ? chan : "",
                 h->json_number(replay, 0));
    else if (tk)
        snprintf(out, len, "salesforce:%s:%.17g", tk,
                 h->json_number(h->json_get(hdr, "sequenceNumber"), 0));
}

/* Calls fn for each change the event holds (a HubSpot event is one, a
 * Salesforce CDC event one per record id), stopping at fn's first error,
 * left in *rc. Returns how many changes it found: 0 is no CRM event. */
static int each_change(crm_state *st, const sophia_json *b,
                       int (*fn)(crm_state *st, void *arg, const crm_change *c),
                       void *arg, int *rc)
{
    const sophia_host *h = st->host;
    crm_change c = {0};
    char idbuf[64], object[32];
    int n = 0;
    *rc = 0;
    if (!parse_hubspot(h, b, &c, idbuf, sizeof(idbuf), object,
                       sizeof(object))) {
        *rc = fn(st, arg, &c);
        return 1;
    }
    for (size_t i = 0; !*rc && !parse_salesforce(h, b, i, &c); i++) {
        n++;
        *rc = fn(st, arg, &c);
        memset(&c, 0, sizeof(c));
    }
    return n;
}

static int change_apply(crm_state *st, void *ctx, const crm_change *c)
{
    return apply_change(st, ctx, c);
}

/* A deal's record is read for every change but a deletion: a host error
 * naming a key (an id with a control byte) is left for process() to
 * meet, so such an event fails there as it always did. */
static int change_prefetch(crm_state *st, void *ctx, const crm_change *c)
{
    char key[400];
    if (strcmp(c->object, "deal") || is_kind(c, "deletion", "DELETE"))
        return 0; /* a GAP_ change reads it: its alerts' state is memory's */
    record_key(st, c, key, sizeof(key));
    int rc = st->host->prefetch(ctx, key);
    return rc == SOPHIA_EINVAL ? 0 : rc;
}

/* SDK 1.1: the deals' records, read through every tier before
 * process(), so a transition is reported from the right stage on a node
 * that never saw the deal, or after a restart. */
static int crm_prefetch(void *state, const sophia_event *ev, sophia_ctx *ctx)
{
    crm_state *st = state;
    char eid[300];
    int rc;
    event_id(st->host, ev->body, eid, sizeof(eid));
    if ((eid[0] && pu_seen_has(&st->seen, eid)) ||
        overflow_of(st->host, ev->body))
        return 0; /* a duplicate reads nothing, nor does an overflow */
    each_change(st, ev->body, change_prefetch, ctx, &rc);
    return rc;
}

static sophia_verdict crm_process(void *state, const sophia_event *ev,
                                  sophia_ctx *ctx)
{
    crm_state *st = state;
    const sophia_host *h = st->host;
    char eid[300];
    int rc;
    event_id(h, ev->body, eid, sizeof(eid));
    if (eid[0] && pu_seen_has(&st->seen, eid)) {
        h->counter_add(st->self, "duplicates", 1);
        return SOPHIA_PROCESS_OK; /* applied before: nothing again */
    }
    const char *overflow = overflow_of(h, ev->body);
    st->ntouched = 0;
    int n = 1;
    if (overflow)
        rc = resync_entity(st, ctx, overflow);
    else
        n = each_change(st, ev->body, change_apply, ctx, &rc);
    if (!rc && n)
        rc = crm_publish_totals(st, ctx);
    if (!n) {
        h->log(st->self, SOPHIA_LOG_WARN, "not a HubSpot webhook event or a "
               "Salesforce change event (stream %s)", ev->stream);
        return SOPHIA_PROCESS_ERROR;
    }
    if (!rc && eid[0])
        rc = pu_seen_stage(h, ctx, &st->seen, eid);
    if (rc)
        return SOPHIA_PROCESS_RETRY;
    h->counter_add(st->self, "changes", n);
    return SOPHIA_PROCESS_OK;
}

/* --------------------------------------------- hot reload hand-over */

/* A deal as deal_from_record reads it back: its properties, clocks and
 * alerts' state (the members that are 0 left out). */
static sophia_json *deal_json(const sophia_host *h, const char *key,
                              const crm_deal *d)
{
    sophia_json *o = h->json_object();
    pu_set_str(h, o, "key", key);
    pu_set_str(h, o, "source", d->salesforce ? "salesforce" : "hubspot");
    pu_set_str(h, o, "stage", d->stage);
    if (d->has_amount)
        pu_set(h, o, "amount", h->json_num(d->amount));
    const struct {
        const char *name;
        int64_t v;
    } f[] = {{"close_date", d->close_ms},       {"stage_at", d->stage_at},
             {"amount_at", d->amount_at},       {"close_at", d->close_at},
             {"stage_since", d->since},         {"seen_at", d->seen_at},
             {"slip_alert_at", d->slip_alert_at},
             {"large_alert_at", d->large_alert_at}};
    for (size_t i = 0; i < sizeof(f) / sizeof(*f); i++)
        if (f[i].v)
            pu_set(h, o, f[i].name, h->json_int(f[i].v));
    if (d->slip_open)
        pu_set(h, o, "slip_open", h->json_bool_new(1));
    if (d->large_open)
        pu_set(h, o, "large_open", h->json_bool_new(1));
    return o;
}

/* {"format":1,"deals":[deal_json, oldest first],"seen":{pu_seen}}: the
 * committed state only (staged changes belong to events in flight). The
 * totals are not exported: they follow from the deals. */
static char *crm_export(void *state)
{
    crm_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *doc = h->json_object(), *deals = h->json_array();
    for (const pu_entry *e = st->deals.oldest; deals && e; e = e->newer) {
        sophia_json *o = deal_json(h, e->key, e->val);
        if (!o || h->json_append(deals, o)) {
            h->json_free(deals);
            deals = NULL;
        }
    }
    pu_set(h, doc, "format", h->json_int(1));
    int rc = pu_set(h, doc, "deals", deals);
    if (!rc)
        rc = pu_set(h, doc, "seen", pu_seen_export(h, &st->seen));
    return pu_export_text(h, doc, rc);
}

/* An export's deals (1.1's: stage and amount only; 1.2's: deal_json),
 * into memory and the totals. */
static int import_deals(crm_state *st, const sophia_json *deals)
{
    const sophia_host *h = st->host;
    for (size_t i = 0; i < h->json_size(deals); i++) {
        const sophia_json *o = h->json_at(deals, i);
        const char *key = pu_str(h, o, "key");
        crm_deal *d = key ? calloc(1, sizeof(*d)) : NULL;
        if (!key)
            continue;
        if (!d)
            return SOPHIA_ENOMEM;
        deal_from_record(h, o, d);
        const crm_deal *old = pu_table_get(&st->deals, key);
        if (old)
            crm_total_add(st, old, -1);
        else if (st->deals.n == st->deals.max) /* the oldest goes */
            crm_total_add(st, st->deals.oldest->val, -1);
        crm_total_add(st, d, 1);
        if (pu_table_put(&st->deals, key, d))
            return SOPHIA_ENOMEM;
    }
    return 0;
}

static int crm_import(void *state, const char *json)
{
    crm_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI;
    sophia_json *doc = h->json_parse(json);
    const sophia_json *deals = h->json_get(doc, "deals");
    if (!doc || h->json_number(h->json_get(doc, "format"), 0) != 1 ||
        h->json_type(deals) != SOPHIA_JSON_ARRAY) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    int rc = import_deals(st, deals);
    if (!rc)
        rc = pu_seen_import(h, &st->seen, h->json_get(doc, "seen"));
    h->json_free(doc);
    return rc;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option crm_options[] = {
    {"dashboard", SOPHIA_OPT_STRING, "sales",
     "dashboard that receives deal_stage / deal_amount / deal_close_date / "
     "crm_change / crm_resync updates and the crm_pipeline_* metrics"},
    {"cache_prefix", SOPHIA_OPT_STRING, "crm:",
     "cache keys: <prefix><object>:<source>:<id>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "604800", "seconds cached records live"},
    {"large_deal", SOPHIA_OPT_DOUBLE, "100000",
     "amount at or above which a large_deal alert fires (<= 0: never)"},
    {"large_deal_severity", SOPHIA_OPT_STRING, "info",
     "severity of large_deal alerts"},
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "event ids remembered to skip redeliveries"},
    {"max_deals", SOPHIA_OPT_INT, "100000",
     "deals whose state is kept in memory; the oldest goes first"},
    {"allowed_lateness", SOPHIA_OPT_DOUBLE, "86400",
     "seconds (event time) a deal's change may lag its newest before it is "
     "dropped; a late change inside it never rewinds a property"},
    {"alert_cooldown", SOPHIA_OPT_DOUBLE, "86400",
     "seconds (event time) between two close_date_slipped or large_deal "
     "alerts of one deal"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops crm_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = crm_process,
    .export_state = crm_export,
    .import_state = crm_import,
    .prefetch = crm_prefetch,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "crm",
    .version = "1.3.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "HubSpot / Salesforce CDC changes, in event time -> stage "
                   "transitions and velocity, amounts, slipped close dates, "
                   "pipeline totals, deal alerts, CDC gap resyncs",
    .options = crm_options,
    .init = crm_init,
    .fini = crm_fini,
    .processor = &crm_ops,
};
