/*
 * crm.h - what the crm processor's two files share: the deal, the change
 * both sources reduce to, the instance's state, and the rules' entry
 * points.
 *
 * crm.c reads events (parsing, redelivery, prefetch), keeps the deals'
 * committed state (stage, apply, reload hand-over) and writes records;
 * crm_rules.c holds the business rules an event's changes go through (the
 * effects, the alerts, the pipeline totals) and the number and date
 * helpers. The plugin stays one .so built against sdk.h alone: this header
 * is private to it, its functions are hidden (the plugin builds with
 * hidden visibility) and prefixed crm_.
 *
 * Each file owns one table: `deals` is crm.c's, `totals` crm_rules.c's
 * (crm_totals_init / crm_totals_free), so the totals' bookkeeping stays in
 * one place. (proc_util.h keeps each table's hash key in the table, so a
 * table would also hash alike from both files.)
 */
#ifndef SOPHIA_CRM_H
#define SOPHIA_CRM_H

#include <sophia/sdk.h>

#include <stddef.h>
#include <stdint.h>

#include "../proc_util.h"

typedef struct crm_deal {
    char stage[64];
    double amount;
    int has_amount;
    int salesforce;  /* the source, for the totals' labels */
    int slip_open, large_open; /* alerts firing, to resolve */
    int64_t close_ms; /* the close date (ms since the epoch), 0 unknown */
    /* event times (ms) of the change each property holds, 0 none */
    int64_t stage_at, amount_at, close_at;
    int64_t since;   /* when the deal entered its stage, 0 unknown */
    int64_t seen_at; /* the latest event time applied */
    int64_t slip_alert_at, large_alert_at; /* last raise, for cooldowns */
} crm_deal;

/* One stage's pipeline total. */
typedef struct crm_total {
    double amount;
    int64_t deals;
} crm_total;

/* A stage an event changed: its total moves by this much (max 16). */
typedef struct crm_touch {
    char key[80]; /* "<source>\x1f<stage>" */
    crm_total delta;
} crm_touch;

#define CRM_TOUCHES 16

typedef struct crm_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *large_severity;
    double ttl, large, lateness_ms, cooldown_ms;
    int has_prefetch; /* the host reads the tiers before process() */
    int has_alert_ex;
    pu_table deals;  /* cache key -> crm_deal, as committed */
    pu_table totals; /* "<source>\x1f<stage>" -> crm_total, of `deals` */
    pu_seen seen;    /* event ids committed */
    crm_touch touched[CRM_TOUCHES]; /* the event in progress's stages */
    size_t ntouched;
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
    int64_t close_ms;    /* new close date, or 0 */
    int64_t at;          /* event time (ms), 0 when the event has none */
    const sophia_json *fields; /* borrowed: the changed properties */
} crm_change;

/* ------------------------------------------------ crm_rules.c: helpers */

/* A number, or a numeric string, into *out: 1, else 0. */
int crm_num_of(const sophia_host *h, const sophia_json *v, double *out);
/* A close date (ms since the epoch, or "YYYY-MM-DD") into *ms: 1, else 0. */
int crm_date_of(const sophia_host *h, const sophia_json *v, int64_t *ms);

/* ------------------------------------------------- crm_rules.c: totals */

int crm_totals_init(crm_state *st);
void crm_totals_free(crm_state *st);
void crm_total_add(crm_state *st, const crm_deal *d, int sign);
void crm_total_touch(crm_state *st, const crm_deal *d, int sign);
int crm_publish_totals(crm_state *st, sophia_ctx *ctx);

/* ------------------------------------------------ crm_rules.c: effects */

int crm_publish_kind(const crm_state *st, sophia_ctx *ctx,
                     const crm_change *c, const char *kind,
                     sophia_json *from, sophia_json *to, double days);
int crm_deal_condition(const crm_state *st, sophia_ctx *ctx,
                       const crm_change *c, const char *type,
                       const char *severity, const char *what, int resolve,
                       sophia_json *data);
int crm_deal_effects(crm_state *st, sophia_ctx *ctx, const crm_change *c,
                     crm_deal *d, int *moved);

#endif
