/*
 * crm - the processor for CRM change events: HubSpot webhooks and
 * Salesforce Change Data Capture.
 *
 * HubSpot posts a JSON array of events; the core splits arrays, so each
 * event here is one object with `subscriptionType` (`deal.propertyChange`
 * with propertyName/propertyValue, `deal.creation`, `contact.creation`,
 * …). Salesforce CDC events carry `data.payload.ChangeEventHeader`
 * (entityName, recordIds, changeType, changedFields) beside the changed
 * fields themselves (StageName, Amount, …).
 *
 * For deals (HubSpot deals, Salesforce Opportunities) the instance knows
 * the last stage and amount of each deal - from memory, else from the
 * cached deal record - so it can report transitions: `deal_stage` and
 * `deal_amount` `data` updates, `deal_won` / `deal_lost` alerts on closed
 * stages, and a `large_deal` alert when an amount reaches `large_deal`.
 * Every change first invalidates the tags `deal:<id>` (and, for
 * Salesforce, `opportunity:<id>`, the tag the gong processor puts on call
 * analyses) so nothing derived from the old deal survives, then writes
 * the fresh record to `<prefix>deal:<source>:<id>`. A deletion
 * (`*.deletion`, CDC `DELETE`) drops the record and publishes a
 * `crm_change` with to = "deleted".
 *
 * State and the verdict (SDK 1.1): process() only reads the deals it
 * knows; each deal's new stage and amount (or its removal) is handed to
 * host->stage and lands when the event's effects commit. So an event that
 * goes RETRY, ERROR, or whose effects are refused leaves the deal where it
 * was, and its redelivery reports the same transition and alerts.
 *
 * Redelivery (the same event after its effects committed, e.g. a crash
 * before the ack; HubSpot also retries on its own): an event with an id -
 * HubSpot `eventId`, Salesforce `data.event.replayId` (with the channel),
 * else the CDC transactionKey + sequenceNumber - is remembered once it
 * commits (the last `max_seen`), and seen again it does nothing (verdict
 * OK, counter `duplicates`): no second publish, and no stale stage written
 * over a newer one when an old event comes back late. Without an id the
 * transitions are still idempotent by comparison (the same stage or
 * amount again is no transition); a non-deal `crm_change` is then
 * published again.
 *
 * Reload: export_state/import_state carry the committed deals and seen
 * ids, so the next stage change after a reload is a transition from the
 * right stage.
 *
 * Restart and other nodes (SDK 1.1 prefetch): memory knows only what this
 * instance committed, so a node that never saw a deal, or this one after a
 * restart, would report its next stage as a transition from nothing.
 * crm_prefetch names each deal's record key, the host reads it through L1,
 * L2 and L3 before process(), and deal_get prefers that record (what the
 * last commit anywhere wrote) to memory.
 */
#include <sophia/sdk.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../proc_util.h"

typedef struct crm_deal {
    char stage[64];
    double amount;
    int has_amount;
} crm_deal;

typedef struct crm_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *large_severity;
    double ttl, large;
    int has_prefetch; /* the host reads the tiers before process() */
    pu_table deals; /* cache key -> crm_deal, as committed */
    pu_seen seen;   /* event ids committed */
} crm_state;

/* A deal's state once the event commits (host->stage's change). */
typedef struct crm_deal_change {
    int deleted;
    crm_deal deal;
    char key[];
} crm_deal_change;

/* A change to one record, as both sources reduce to it. */
typedef struct crm_change {
    const char *source;  /* "hubspot" | "salesforce" */
    const char *object;  /* "deal", "contact", … */
    const char *id;
    const char *kind;    /* "creation", "propertyChange", "UPDATE", … */
    const char *stage;   /* new stage or NULL */
    double amount;
    int has_amount;
    const sophia_json *fields; /* borrowed: the changed properties */
} crm_change;

/* ------------------------------------------------------------ lifecycle */

static void crm_fini(void *state)
{
    crm_state *st = state;
    if (!st)
        return;
    pu_table_free(&st->deals);
    pu_seen_free(&st->seen);
    free(st->prefix);
    free(st->dashboard);
    free(st->large_severity);
    free(st);
}

static int crm_init(const sophia_host *host, sophia_self *self,
                    const sophia_opts *opts, void **state)
{
    if (pu_require_stage(host, self, "crm"))
        return SOPHIA_EABI;
    crm_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->has_prefetch = SOPHIA_HOST_HAS(host, prefetched);
    st->prefix = pu_strdup(host->opt_string(opts, "cache_prefix"));
    st->dashboard = pu_strdup(host->opt_string(opts, "dashboard"));
    st->large_severity = pu_strdup(host->opt_string(opts, "large_deal_severity"));
    st->ttl = host->opt_double(opts, "ttl");
    st->large = host->opt_double(opts, "large_deal");
    int64_t max_seen = host->opt_int(opts, "max_seen");
    if (max_seen < 1) {
        host->log(self, SOPHIA_LOG_ERROR, "max_seen must be at least 1");
        crm_fini(st);
        return SOPHIA_EINVAL;
    }
    if (!st->prefix || !st->dashboard || !st->large_severity ||
        pu_table_init(&st->deals, 100000, free) ||
        pu_seen_init(&st->seen, (size_t)max_seen)) {
        crm_fini(st);
        return SOPHIA_ENOMEM;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ------------------------------------------------------------ parsing */

/* "Closed Won" / "closedwon" / "closed_won" -> "closedwon". */
static void norm_stage(const char *s, char *out, size_t len)
{
    size_t n = 0;
    for (; s && *s && n + 1 < len; s++)
        if (isalnum((unsigned char)*s))
            out[n++] = (char)tolower((unsigned char)*s);
    out[n] = '\0';
}

static int num_of(const sophia_host *h, const sophia_json *v, double *out)
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
        c->has_amount = num_of(h, val, &c->amount);
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
    c->has_amount = num_of(h, h->json_get(p, "Amount"), &c->amount);
    return c->id ? 0 : -1;
}

/* ------------------------------------------------------------ effects */

/* The cache key of a change's record. */
static void record_key(const crm_state *st, const crm_change *c, char *key,
                       size_t len)
{
    snprintf(key, len, "%s%s:%s:%s", st->prefix, c->object, c->source, c->id);
}

static void deal_from_record(const sophia_host *h, const sophia_json *r,
                             crm_deal *d)
{
    const char *s = pu_str(h, r, "stage");
    if (s)
        snprintf(d->stage, sizeof(d->stage), "%s", s);
    d->has_amount = num_of(h, h->json_get(r, "amount"), &d->amount);
}

/* The deal's committed state into *d. First the record the prefetch read
 * through every tier (crm_prefetch): it is what the last commit wrote,
 * on this node or on another sharing the tiers, and it survives a
 * restart. Then memory, then (no prefetch ran: a 1.0 host, a tool) the
 * L1 record, else empty. Only reads: the new state is staged. */
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
}

static void deal_apply(void *state, void *change)
{
    crm_state *st = state;
    crm_deal_change *c = change;
    crm_deal *d = c->deleted ? NULL : malloc(sizeof(*d));
    if (c->deleted) {
        pu_table_del(&st->deals, c->key);
    } else if (d) {
        *d = c->deal;
        pu_table_put(&st->deals, c->key, d); /* takes d */
    }
    free(c);
}

/* The deal under `key` becomes `d` (or goes, d NULL) when the event
 * commits. */
static int stage_deal(crm_state *st, sophia_ctx *ctx, const char *key,
                      const crm_deal *d)
{
    size_t n = strlen(key) + 1;
    crm_deal_change *c = calloc(1, sizeof(*c) + n);
    if (!c)
        return SOPHIA_ENOMEM;
    c->deleted = !d;
    if (d)
        c->deal = *d;
    memcpy(c->key, key, n);
    return st->host->stage(ctx, deal_apply, free, c);
}

static int publish_kind(const crm_state *st, sophia_ctx *ctx,
                        const crm_change *c, const char *kind,
                        sophia_json *from, sophia_json *to)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", kind);
    pu_set_str(h, d, "source", c->source);
    pu_set_str(h, d, "object", c->object);
    pu_set_str(h, d, "id", c->id);
    pu_set(h, d, "from", from ? from : h->json_bool_new(0));
    pu_set(h, d, "to", to ? to : h->json_bool_new(0));
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

static int stage_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                         crm_deal *d)
{
    const sophia_host *h = st->host;
    char was[64], now[64];
    norm_stage(d->stage, was, sizeof(was));
    norm_stage(c->stage, now, sizeof(now));
    if (!strcmp(was, now))
        return 0;
    int rc = publish_kind(st, ctx, c, "deal_stage",
                          d->stage[0] ? h->json_str(d->stage) : NULL,
                          h->json_str(c->stage));
    double amt = c->has_amount ? c->amount : d->amount;
    if (!rc && !strcmp(now, "closedwon"))
        rc = deal_alert(st, ctx, c, "deal_won", "info", "closed won", amt);
    else if (!rc && !strcmp(now, "closedlost"))
        rc = deal_alert(st, ctx, c, "deal_lost", "warning", "closed lost", amt);
    snprintf(d->stage, sizeof(d->stage), "%s", c->stage);
    return rc;
}

static int amount_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                          crm_deal *d)
{
    const sophia_host *h = st->host;
    if (d->has_amount && d->amount == c->amount)
        return 0;
    int rc = publish_kind(st, ctx, c, "deal_amount",
                          d->has_amount ? h->json_num(d->amount) : NULL,
                          h->json_num(c->amount));
    if (!rc && st->large > 0 && c->amount >= st->large &&
        (!d->has_amount || d->amount < st->large)) {
        char what[100];
        snprintf(what, sizeof(what), "reached %.0f", c->amount);
        rc = deal_alert(st, ctx, c, "large_deal", st->large_severity, what,
                        c->amount);
    }
    d->amount = c->amount;
    d->has_amount = 1;
    return rc;
}

static int put_record(const crm_state *st, sophia_ctx *ctx, const char *key,
                      const crm_change *c, const crm_deal *d, const char *tag)
{
    const sophia_host *h = st->host;
    sophia_json *r = h->json_object();
    pu_set_str(h, r, "source", c->source);
    pu_set_str(h, r, "object", c->object);
    pu_set_str(h, r, "id", c->id);
    if (d && d->stage[0])
        pu_set_str(h, r, "stage", d->stage);
    if (d && d->has_amount)
        pu_set(h, r, "amount", h->json_num(d->amount));
    pu_set_str(h, r, "last_change", c->kind);
    pu_set(h, r, "updated_us", h->json_int(h->now_us()));
    const char *tags[] = {"crm", tag, NULL};
    return r ? h->cache_put(ctx, key, r, st->ttl, tags) : SOPHIA_ENOMEM;
}

static int apply_change(crm_state *st, sophia_ctx *ctx, const crm_change *c)
{
    const sophia_host *h = st->host;
    int deal = !strcmp(c->object, "deal");
    char key[400], tag[300], opp[300];
    record_key(st, c, key, sizeof(key));
    snprintf(tag, sizeof(tag), "%s:%s", c->object, c->id);
    int rc = h->cache_invalidate_tag(ctx, tag);
    if (!rc && deal && !strcmp(c->source, "salesforce")) {
        snprintf(opp, sizeof(opp), "opportunity:%s", c->id);
        rc = h->cache_invalidate_tag(ctx, opp);
    }
    if (!rc && c->kind && (!strcmp(c->kind, "deletion") ||
                           !strcmp(c->kind, "DELETE"))) {
        rc = h->cache_invalidate(ctx, key);
        if (!rc && deal) /* the record goes with the object */
            rc = stage_deal(st, ctx, key, NULL);
        return rc ? rc : publish_kind(st, ctx, c, "crm_change", NULL,
                                      h->json_str("deleted"));
    }
    crm_deal nd, *d = deal ? &nd : NULL; /* the deal after this change */
    if (d)
        deal_get(st, ctx, key, d);
    if (!rc && d && c->stage)
        rc = stage_effects(st, ctx, c, d);
    if (!rc && d && c->has_amount)
        rc = amount_effects(st, ctx, c, d);
    if (!rc && (!d || (!c->stage && !c->has_amount)))
        rc = publish_kind(st, ctx, c, "crm_change", NULL,
                          h->json_str(c->kind ? c->kind : "change"));
    if (!rc)
        rc = put_record(st, ctx, key, c, d, tag);
    return rc || !d ? rc : stage_deal(st, ctx, key, d);
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
    if (strcmp(c->object, "deal") ||
        (c->kind && (!strcmp(c->kind, "deletion") ||
                     !strcmp(c->kind, "DELETE"))))
        return 0;
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
    if (eid[0] && pu_seen_has(&st->seen, eid))
        return 0; /* a duplicate reads nothing */
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
    int n = each_change(st, ev->body, change_apply, ctx, &rc);
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

/* {"format":1,"deals":[{"key","stage","amount"?}],"seen":{pu_seen}}:
 * the committed state only (staged changes belong to events in flight). */
static char *crm_export(void *state)
{
    crm_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *doc = h->json_object(), *deals = h->json_array();
    for (const pu_entry *e = st->deals.oldest; deals && e; e = e->newer) {
        const crm_deal *d = e->val;
        sophia_json *o = h->json_object();
        pu_set_str(h, o, "key", e->key);
        pu_set_str(h, o, "stage", d->stage);
        if (d->has_amount)
            pu_set(h, o, "amount", h->json_num(d->amount));
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
    int rc = 0;
    for (size_t i = 0; !rc && i < h->json_size(deals); i++) {
        const sophia_json *o = h->json_at(deals, i);
        const char *key = pu_str(h, o, "key");
        crm_deal *d = key ? calloc(1, sizeof(*d)) : NULL;
        if (!key)
            continue;
        if (!d) {
            rc = SOPHIA_ENOMEM;
            break;
        }
        snprintf(d->stage, sizeof(d->stage), "%s",
                 pu_str(h, o, "stage") ? pu_str(h, o, "stage") : "");
        d->has_amount = num_of(h, h->json_get(o, "amount"), &d->amount);
        rc = pu_table_put(&st->deals, key, d);
    }
    if (!rc)
        rc = pu_seen_import(h, &st->seen, h->json_get(doc, "seen"));
    h->json_free(doc);
    return rc;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option crm_options[] = {
    {"dashboard", SOPHIA_OPT_STRING, "sales",
     "dashboard that receives deal_stage / deal_amount / crm_change updates"},
    {"cache_prefix", SOPHIA_OPT_STRING, "crm:",
     "cache keys: <prefix><object>:<source>:<id>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "604800", "seconds cached records live"},
    {"large_deal", SOPHIA_OPT_DOUBLE, "100000",
     "amount at or above which a large_deal alert fires (<= 0: never)"},
    {"large_deal_severity", SOPHIA_OPT_STRING, "info",
     "severity of large_deal alerts"},
    {"max_seen", SOPHIA_OPT_INT, "100000",
     "event ids remembered to skip redeliveries"},
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
    .version = "1.2.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "HubSpot / Salesforce CDC changes -> stage transitions, "
                   "amount changes, deal alerts, cache invalidation",
    .options = crm_options,
    .init = crm_init,
    .fini = crm_fini,
    .processor = &crm_ops,
};
