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
    pu_table deals;
} crm_state;

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
    free(st->prefix);
    free(st->dashboard);
    free(st->large_severity);
    free(st);
}

static int crm_init(const sophia_host *host, sophia_self *self,
                    const sophia_opts *opts, void **state)
{
    if (!host || host->struct_size < sizeof(sophia_host) ||
        host->abi_major != SOPHIA_SDK_VERSION_MAJOR)
        return SOPHIA_EABI;
    crm_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->prefix = pu_strdup(host->opt_string(opts, "cache_prefix"));
    st->dashboard = pu_strdup(host->opt_string(opts, "dashboard"));
    st->large_severity = pu_strdup(host->opt_string(opts, "large_deal_severity"));
    st->ttl = host->opt_double(opts, "ttl");
    st->large = host->opt_double(opts, "large_deal");
    if (!st->prefix || !st->dashboard || !st->large_severity ||
        pu_table_init(&st->deals, 100000, free)) {
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

/* The deal's last known state: memory, else the cached record. */
static crm_deal *deal_get(crm_state *st, const char *key)
{
    crm_deal *d = pu_table_get(&st->deals, key);
    if (d)
        return d;
    if (!(d = calloc(1, sizeof(*d))))
        return NULL;
    const sophia_host *h = st->host;
    sophia_json *cached = h->cache_peek(key);
    if (cached) {
        const char *s = pu_str(h, cached, "stage");
        if (s)
            snprintf(d->stage, sizeof(d->stage), "%s", s);
        d->has_amount = num_of(h, h->json_get(cached, "amount"), &d->amount);
        h->json_free(cached);
    }
    return pu_table_put(&st->deals, key, d) ? NULL : d;
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
    snprintf(key, sizeof(key), "%s%s:%s:%s", st->prefix, c->object, c->source,
             c->id);
    snprintf(tag, sizeof(tag), "%s:%s", c->object, c->id);
    int rc = h->cache_invalidate_tag(ctx, tag);
    if (!rc && deal && !strcmp(c->source, "salesforce")) {
        snprintf(opp, sizeof(opp), "opportunity:%s", c->id);
        rc = h->cache_invalidate_tag(ctx, opp);
    }
    if (!rc && c->kind && (!strcmp(c->kind, "deletion") ||
                           !strcmp(c->kind, "DELETE"))) {
        pu_table_del(&st->deals, key); /* the record goes with the object */
        rc = h->cache_invalidate(ctx, key);
        return rc ? rc : publish_kind(st, ctx, c, "crm_change", NULL,
                                      h->json_str("deleted"));
    }
    crm_deal *d = deal ? deal_get(st, key) : NULL;
    if (deal && !d)
        return SOPHIA_ENOMEM;
    if (!rc && d && c->stage)
        rc = stage_effects(st, ctx, c, d);
    if (!rc && d && c->has_amount)
        rc = amount_effects(st, ctx, c, d);
    if (!rc && (!d || (!c->stage && !c->has_amount)))
        rc = publish_kind(st, ctx, c, "crm_change", NULL,
                          h->json_str(c->kind ? c->kind : "change"));
    return rc ? rc : put_record(st, ctx, key, c, d, tag);
}

static sophia_verdict crm_process(void *state, const sophia_event *ev,
                                  sophia_ctx *ctx)
{
    crm_state *st = state;
    const sophia_host *h = st->host;
    crm_change c = {0};
    char idbuf[64], object[32];
    int rc = 0, n = 0;
    if (!parse_hubspot(h, ev->body, &c, idbuf, sizeof(idbuf), object,
                       sizeof(object))) {
        rc = apply_change(st, ctx, &c);
        n = 1;
    } else {
        for (size_t i = 0; !rc && !parse_salesforce(h, ev->body, i, &c); i++) {
            n++;
            rc = apply_change(st, ctx, &c);
            memset(&c, 0, sizeof(c));
        }
    }
    if (!n) {
        h->log(st->self, SOPHIA_LOG_WARN, "not a HubSpot webhook event or a "
               "Salesforce change event (stream %s)", ev->stream);
        return SOPHIA_PROCESS_ERROR;
    }
    if (rc)
        return SOPHIA_PROCESS_RETRY;
    h->counter_add(st->self, "changes", n);
    return SOPHIA_PROCESS_OK;
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
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops crm_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = crm_process,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "crm",
    .version = "1.0.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "HubSpot / Salesforce CDC changes -> stage transitions, "
                   "amount changes, deal alerts, cache invalidation",
    .options = crm_options,
    .init = crm_init,
    .fini = crm_fini,
    .processor = &crm_ops,
};
