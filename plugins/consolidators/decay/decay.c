/*
 * decay - the consolidator that expires memories by retention policy and
 * by strength.
 *
 * `retention` lists one rule per memory type, "TYPE:TTL" or
 * "TYPE:TTL:MIN_IMPORTANCE" (TTL as 90s, 30m, 12h, 30d; TYPE `*` for every
 * type without its own rule). A memory older than its type's TTL (since it
 * was created) expires, unless its importance is at least MIN_IMPORTANCE:
 * what users marked useful outlives the TTL. A type with no rule (and no
 * `*`) is kept forever by this rule.
 *
 * With `half_life` set, a memory's importance also decays: halved every
 * half_life it goes unused (since its last access, its creation, or the
 * last decay written back, whichever is latest), and written back to the
 * store (host->memory_set_importance, SDK 1.2) when it fell by at least
 * 0.001, which stamps the row's decayed_at: so a pass decays only the
 * time since the one before, and passes never count the same time twice.
 * A read resets the idle time (the decay stops) and raises the strength,
 * what expiry judges:
 *     importance' = importance * 0.5^(idle / half_life)
 *     strength    = importance' + access_boost * log2(1 + access_count)
 * One whose strength is under `floor` expires. On a 1.0/1.1 host (no
 * memory_set_importance) nothing is written back: strength is judged from
 * the stored importance and the idle time since the last access.
 *
 * Expiring is host->memory_expire: the host deletes the row from
 * PostgreSQL and the vector from the faiss index together, and records the
 * deletion in the memory's history.
 */
#include <sophia/sdk.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RULES 64

typedef struct rule {
    char type[65];
    double ttl_s;
    double min_importance; /* > 1 = none survive the TTL */
} rule;

typedef struct decay_state {
    const sophia_host *host;
    sophia_self *self;
    rule rules[MAX_RULES];
    size_t nrules;
    double half_life_s; /* 0 = no strength rule */
    double access_boost, floor;
} decay_state;

static const sophia_option decay_options[] = {
    {"retention", SOPHIA_OPT_LIST, NULL,
     "rules TYPE:TTL[:MIN_IMPORTANCE], e.g. event:30d or fact:365d:0.8; TYPE * is the default"},
    {"half_life", SOPHIA_OPT_STRING, "",
     "strength halves every half_life unused (e.g. 30d); empty = no strength rule"},
    {"access_boost", SOPHIA_OPT_DOUBLE, "0.05",
     "strength added per doubling of the access count"},
    {"floor", SOPHIA_OPT_DOUBLE, "0.05",
     "a memory whose strength falls under this expires (0..1)"},
    {NULL, 0, NULL, NULL},
};

/* "90", "90s", "30m", "12h", "30d", "500ms" -> seconds; -1 when bad. */
static double parse_ttl(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    if (!strcmp(end, "") || !strcmp(end, "s"))
        return v;
    if (!strcmp(end, "ms"))
        return v / 1000;
    if (!strcmp(end, "m"))
        return v * 60;
    if (!strcmp(end, "h"))
        return v * 3600;
    if (!strcmp(end, "d"))
        return v * 86400;
    return -1;
}

static int parse_rule(const char *item, rule *r)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", item);
    char *type = strtok_r(buf, ":", &save), *ttl = strtok_r(NULL, ":", &save);
    char *imp = strtok_r(NULL, ":", &save);
    if (!type || !ttl || strtok_r(NULL, ":", &save) || strlen(type) > 64)
        return -1;
    snprintf(r->type, sizeof(r->type), "%s", type);
    r->ttl_s = parse_ttl(ttl);
    r->min_importance = 2;
    if (imp) {
        char *end;
        r->min_importance = strtod(imp, &end);
        if (end == imp || *end || r->min_importance < 0 || r->min_importance > 1)
            return -1;
    }
    return r->ttl_s < 0 ? -1 : 0;
}

/* half_life, access_boost, floor: 0, or -1 after saying what is wrong. */
static int strength_opts(const sophia_host *host, sophia_self *self,
                         const sophia_opts *opts, decay_state *st)
{
    const char *hl = host->opt_string(opts, "half_life");
    st->half_life_s = hl && *hl ? parse_ttl(hl) : 0;
    st->access_boost = host->opt_double(opts, "access_boost");
    st->floor = host->opt_double(opts, "floor");
    if (hl && *hl && !(st->half_life_s > 0)) {
        host->log(self, SOPHIA_LOG_ERROR, "half_life '%s' is not a duration "
                  "over 0 (like 30d, 12h)", hl);
        return -1;
    }
    if (!(st->access_boost >= 0 && st->access_boost <= 1) ||
        !(st->floor >= 0 && st->floor <= 1)) {
        host->log(self, SOPHIA_LOG_ERROR, "access_boost and floor must be in "
                  "0..1, got %g and %g", st->access_boost, st->floor);
        return -1;
    }
    return 0;
}

static int decay_init(const sophia_host *host, sophia_self *self,
                      const sophia_opts *opts, void **state)
{
    /* memory_expire is the newest member used (1.0): any 1.x host. */
    if (!host || host->abi_major != SOPHIA_SDK_VERSION_MAJOR ||
        !SOPHIA_HOST_HAS(host, memory_expire))
        return SOPHIA_EABI;
    decay_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    if (strength_opts(host, self, opts, st) < 0) {
        free(st);
        return SOPHIA_EINVAL;
    }
    size_t n = host->opt_list_len(opts, "retention");
    for (size_t i = 0; i < n; i++) {
        const char *item = host->opt_list_item(opts, "retention", i);
        if (st->nrules == MAX_RULES || parse_rule(item, &st->rules[st->nrules]) < 0) {
            host->log(self, SOPHIA_LOG_ERROR, "retention rule '%s' is not "
                      "TYPE:TTL[:MIN_IMPORTANCE] (TTL like 30d, importance 0..1; "
                      "at most %d rules)", item, MAX_RULES);
            free(st);
            return SOPHIA_EINVAL;
        }
        st->nrules++;
    }
    *state = st;
    return SOPHIA_OK;
}

static void decay_fini(void *state)
{
    free(state);
}

static const rule *rule_for(const decay_state *st, const char *type)
{
    const rule *any = NULL;
    for (size_t i = 0; i < st->nrules; i++) {
        if (type && !strcmp(st->rules[i].type, type))
            return &st->rules[i];
        if (!strcmp(st->rules[i].type, "*"))
            any = &st->rules[i];
    }
    return any;
}

static int can_write_back(const sophia_host *h)
{
    return SOPHIA_HOST_HAS(h, memory_set_importance);
}

/* See the top: the importance halved per half_life idle. */
static double decayed(const decay_state *st, const sophia_host *h,
                      const sophia_json *row, double now)
{
    double imp = h->json_number(h->json_get(row, "importance"), 0);
    double since = h->json_number(h->json_get(row, "created_at"), now);
    double last = h->json_number(h->json_get(row, "last_access"), now);
    double stamp = can_write_back(h) ? h->json_number(h->json_get(row, "decayed_at"), 0) : 0;
    since = last > since ? last : since;
    since = stamp > since ? stamp : since;
    double idle = now - since;
    return imp * pow(0.5, (idle > 0 ? idle : 0) / st->half_life_s);
}

static double strength(const decay_state *st, const sophia_host *h,
                       const sophia_json *row, double imp)
{
    double uses = h->json_number(h->json_get(row, "access_count"), 0);
    return imp + st->access_boost * log2(1 + (uses > 0 ? uses : 0));
}

static int by_retention(const decay_state *st, const sophia_host *h,
                        const sophia_json *row)
{
    const rule *r = rule_for(st, h->json_string(h->json_get(row, "memory_type")));
    double age = h->json_number(h->json_get(row, "age_s"), 0);
    double imp = h->json_number(h->json_get(row, "importance"), 0);
    return r && age > r->ttl_s && imp < r->min_importance;
}

static int decay_run(void *state, sophia_ctx *ctx)
{
    decay_state *st = state;
    const sophia_host *h = st->host;
    const sophia_json *batch = h->memory_batch(ctx);
    double now = (double)h->now_us() / 1e6;
    for (size_t i = 0; i < h->json_size(batch); i++) {
        const sophia_json *row = h->json_at(batch, i);
        int64_t id = (int64_t)h->json_number(h->json_get(row, "id"), 0);
        double imp = h->json_number(h->json_get(row, "importance"), 0);
        double now_imp = st->half_life_s > 0 ? decayed(st, h, row, now) : imp;
        if (by_retention(st, h, row) ||
            (st->half_life_s > 0 && strength(st, h, row, now_imp) < st->floor)) {
            if (h->memory_expire(ctx, id) == 0)
                h->counter_add(st->self, "expired", 1);
        } else if (now_imp <= imp - 0.001 && can_write_back(h) &&
                   h->memory_set_importance(ctx, id, now_imp) == 0) {
            h->counter_add(st->self, "decayed", 1);
        }
    }
    return SOPHIA_OK;
}

static const sophia_consolidator_ops decay_ops = {
    .struct_size = sizeof(sophia_consolidator_ops),
    .run = decay_run,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "decay",
    .version = "1.2.0",
    .kind = SOPHIA_KIND_CONSOLIDATOR,
    .description = "expires memories by per-type retention (TTL, minimum importance) and by strength (age, use); writes decayed importance back",
    .options = decay_options,
    .init = decay_init,
    .fini = decay_fini,
    .consolidator = &decay_ops,
};
