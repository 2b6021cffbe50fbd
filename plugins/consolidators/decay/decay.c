/*
 * decay - the consolidator that expires memories by retention policy.
 *
 * `retention` lists one rule per memory type, "TYPE:TTL" or
 * "TYPE:TTL:MIN_IMPORTANCE" (TTL as 90s, 30m, 12h, 30d; TYPE `*` for every
 * type without its own rule). A memory older than its type's TTL (since it
 * was created) expires, unless its importance is at least MIN_IMPORTANCE:
 * what users marked useful outlives the TTL. A type with no rule (and no
 * `*`) is kept forever. Expiring is host->memory_expire: the host deletes
 * the row from PostgreSQL and the vector from the faiss index together.
 */
#include <sophia/sdk.h>

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
} decay_state;

static const sophia_option decay_options[] = {
    {"retention", SOPHIA_OPT_LIST, NULL,
     "rules TYPE:TTL[:MIN_IMPORTANCE], e.g. event:30d or fact:365d:0.8; TYPE * is the default"},
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

static int decay_run(void *state, sophia_ctx *ctx)
{
    decay_state *st = state;
    const sophia_host *h = st->host;
    const sophia_json *batch = h->memory_batch(ctx);
    for (size_t i = 0; i < h->json_size(batch); i++) {
        const sophia_json *row = h->json_at(batch, i);
        const rule *r = rule_for(st, h->json_string(h->json_get(row, "memory_type")));
        double age = h->json_number(h->json_get(row, "age_s"), 0);
        double imp = h->json_number(h->json_get(row, "importance"), 0);
        if (!r || age <= r->ttl_s || imp >= r->min_importance)
            continue;
        if (h->memory_expire(ctx, (int64_t)h->json_number(h->json_get(row, "id"), 0)) == 0)
            h->counter_add(st->self, "expired", 1);
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
    .version = "1.0.0",
    .kind = SOPHIA_KIND_CONSOLIDATOR,
    .description = "expires memories by per-type retention (TTL, minimum importance)",
    .options = decay_options,
    .init = decay_init,
    .fini = decay_fini,
    .consolidator = &decay_ops,
};
