/*
 * gong - the processor for Gong calls.
 *
 * Gong sends a call's metadata (calls v2: {"metaData":…, "parties":[…
 * "speakerId", "affiliation"…], "context":[…]}) and its transcript
 * ({"callId":…, "transcript":[{"speakerId", "topic", "sentences":[{start,
 * end,text}]}]}) as separate payloads, in either order, or as one object
 * holding both. The instance keeps what it has seen of each call (bounded
 * by `max_calls`, oldest evicted) and analyses the call once a transcript
 * is known, using whatever metadata has arrived. What the analysis
 * computes (gong_rules.c): talk ratio rep vs customer by the parties'
 * `affiliation` (Internal = rep, External = customer), question counts
 * per side, the longest monologue and the longest customer monologue,
 * next steps (`action_phrases`), risk phrases (`risk_phrases`), named
 * competitors (`competitors`) and topics (Gong's own plus `topics`).
 *
 * Effects, all through the host: the analysis is cached per call
 * (`<prefix>call:<id>`) and per account (`<prefix>account:<account>`),
 * tagged `call:<id>`, `account:<account>` and `opportunity:<crm id>` so
 * the crm processor can invalidate them when the deal changes; a `data`
 * update goes to `dashboard:<dashboard>`. Once both halves of a call are
 * known, each action item and each risk sentence becomes a memory
 * (host->memory_store; types `action_item` and `risk`, context {source,
 * account, call, speaker[, phrase]}), and the call one `call_summary`
 * memory (talk ratio, questions, monologue, next steps, competitors),
 * once per call, so memory search can answer "what did we promise
 * Acme?" or "which accounts mentioned a competitor?".
 *
 * The deal_risk alert (alert_ex, alert_id `deal_risk:<call id>`): its
 * content is the set of risk phrases and competitor names the transcript
 * holds. It fires once per call; a later event of the call (the metadata
 * after the transcript, Gong's "updated" call, a replay) analyses again
 * but fires nothing while the content is the same. Different content
 * fires again (an update under the same alert_id) unless within
 * `risk_cooldown` seconds of the last firing (event time, the event's
 * received_us; counter `alerts_suppressed`). A transcript re-sent
 * without any risk resolves a firing alert (same alert_id and severity).
 * The gate (pu_gate, proc_util.h) moves with the event like the halves.
 *
 * State and the verdict (SDK 1.1): process() analyses the call as it will
 * be with this event (the committed record plus the event's half) but
 * changes nothing; the halves it brings, and that the call's memories are
 * now stored, are handed to host->stage and land when the event's effects
 * commit. So an event that goes RETRY or ERROR, or whose effects are
 * refused, leaves the call as it was: its redelivery analyses the same
 * call and stores the memories it did not store.
 *
 * Redelivery: an event that brings nothing new - every half it carries is
 * already committed, equal as JSON - produces nothing (verdict OK, counter
 * `duplicates`): no second analysis publish, deal_risk alert or memory. A
 * half that differs (Gong re-sent an edited transcript) is new and
 * analysed again; its memories are not stored twice (`remembered`).
 *
 * Reload: export_state/import_state carry the committed calls (both
 * halves, whether their memories were stored, the risk alert's gate).
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../proc_util.h"
#include "gong.h"

typedef struct gong_call {
    const sophia_host *host;
    sophia_json *meta;       /* {"metaData","parties","context"} copy or NULL */
    sophia_json *transcript; /* the transcript array copy or NULL */
    int remembered;          /* its memories were stored */
    pu_gate risk;            /* its deal_risk alert */
} gong_call;

typedef struct gong_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *severity;
    double ttl, cooldown;
    gong_rules rules;
    pu_table calls;
} gong_state;

/* ------------------------------------------------------------ lifecycle */

static void free_call(void *p)
{
    gong_call *c = p;
    if (!c)
        return;
    if (c->meta)
        c->host->json_free(c->meta);
    if (c->transcript)
        c->host->json_free(c->transcript);
    free(c);
}

/* What one event changes in its call once it commits (host->stage). */
typedef struct gong_change {
    const sophia_host *host;
    sophia_json *meta, *transcript; /* new halves (owned) or NULL */
    int remembered;                 /* its memories are now stored */
    int gate_set;                   /* the risk gate moves to `risk` */
    pu_gate risk;
    char id[];
} gong_change;

static void change_discard(void *change)
{
    gong_change *g = change;
    if (g->meta)
        g->host->json_free(g->meta);
    if (g->transcript)
        g->host->json_free(g->transcript);
    free(g);
}

/* The committed call `id`, created when absent; NULL on no memory. */
static gong_call *call_get(gong_state *st, const char *id)
{
    gong_call *c = pu_table_get(&st->calls, id);
    if (c)
        return c;
    if (!(c = calloc(1, sizeof(*c))))
        return NULL;
    c->host = st->host;
    return pu_table_put(&st->calls, id, c) ? NULL : c;
}

static void change_apply(void *state, void *change)
{
    gong_state *st = state;
    gong_change *g = change;
    gong_call *c = call_get(st, g->id);
    if (c && g->meta) {
        if (c->meta)
            g->host->json_free(c->meta);
        c->meta = g->meta;
        g->meta = NULL;
    }
    if (c && g->transcript) {
        if (c->transcript)
            g->host->json_free(c->transcript);
        c->transcript = g->transcript;
        g->transcript = NULL;
    }
    if (c && g->remembered)
        c->remembered = 1;
    if (c && g->gate_set)
        c->risk = g->risk;
    change_discard(g); /* frees what was not taken (no memory for c) */
}

static void gong_fini(void *state)
{
    gong_state *st = state;
    if (!st)
        return;
    pu_table_free(&st->calls);
    free(st->prefix);
    free(st->dashboard);
    free(st->severity);
    gong_rules_free(&st->rules);
    free(st);
}

static int gong_init(const sophia_host *host, sophia_self *self,
                     const sophia_opts *opts, void **state)
{
    if (pu_require_stage(host, self, "gong"))
        return SOPHIA_EABI;
    gong_state *st = calloc(1, sizeof(*st));
    if (!st)
        return SOPHIA_ENOMEM;
    st->host = host;
    st->self = self;
    st->prefix = pu_strdup(host->opt_string(opts, "cache_prefix"));
    st->dashboard = pu_strdup(host->opt_string(opts, "dashboard"));
    st->severity = pu_strdup(host->opt_string(opts, "risk_severity"));
    st->ttl = host->opt_double(opts, "ttl");
    st->cooldown = host->opt_double(opts, "risk_cooldown");
    int64_t max = host->opt_int(opts, "max_calls");
    int rc = gong_rules_init(host, self, opts, &st->rules);
    if (!rc && (max < 1 || !(st->cooldown >= 0))) {
        host->log(self, SOPHIA_LOG_ERROR, "%s", max < 1
                  ? "max_calls must be at least 1"
                  : "risk_cooldown must be 0 or more seconds");
        rc = SOPHIA_EINVAL;
    }
    if (!rc && (!st->prefix || !st->dashboard || !st->severity ||
                pu_table_init(&st->calls, (size_t)max, free_call)))
        rc = SOPHIA_ENOMEM;
    if (rc) {
        gong_fini(st);
        return rc;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ----------------------------------------------------------- analysis */

/* A CRM object id of `type` from the call's context, or NULL. */
static const char *crm_object(const sophia_host *h, const sophia_json *meta,
                              const char *type)
{
    const sophia_json *ctxs = meta ? h->json_get(meta, "context") : NULL;
    for (size_t i = 0; i < h->json_size(ctxs); i++) {
        const sophia_json *objs = h->json_get(h->json_at(ctxs, i), "objects");
        for (size_t k = 0; k < h->json_size(objs); k++) {
            const sophia_json *o = h->json_at(objs, k);
            const char *t = pu_str(h, o, "objectType");
            if (t && !strcasecmp(t, type))
                return pu_str(h, o, "objectId");
        }
    }
    return NULL;
}

/* Account: the CRM Account id, else the first external party's e-mail
 * domain without its suffix (bob@acme.com -> acme). */
static void account_of(const sophia_host *h, const sophia_json *meta,
                       char *buf, size_t len)
{
    buf[0] = '\0';
    const char *acc = crm_object(h, meta, "Account");
    if (acc) {
        snprintf(buf, len, "%s", acc);
        return;
    }
    const sophia_json *parties = meta ? h->json_get(meta, "parties") : NULL;
    for (size_t i = 0; i < h->json_size(parties); i++) {
        const sophia_json *p = h->json_at(parties, i);
        const char *aff = pu_str(h, p, "affiliation");
        const char *mail = pu_str(h, p, "emailAddress");
        const char *at = mail ? strchr(mail, '@') : NULL;
        if (aff && !strcasecmp(aff, "External") && at && at[1]) {
            size_t n = strcspn(at + 1, ".");
            snprintf(buf, len, "%.*s", (int)n, at + 1);
            for (char *c = buf; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            return;
        }
    }
}

static int cache_doc(const gong_state *st, sophia_ctx *ctx, const char *id,
                     const char *account, const char *opp,
                     const sophia_json *doc)
{
    const sophia_host *h = st->host;
    char key[512], t_call[300], t_acc[300], t_opp[300];
    const char *tags[5] = {"gong", t_call, NULL, NULL, NULL};
    size_t n = 2;
    snprintf(t_call, sizeof(t_call), "call:%s", id);
    if (*account) {
        snprintf(t_acc, sizeof(t_acc), "account:%s", account);
        tags[n++] = t_acc;
    }
    if (opp) {
        snprintf(t_opp, sizeof(t_opp), "opportunity:%s", opp);
        tags[n++] = t_opp;
    }
    snprintf(key, sizeof(key), "%scall:%s", st->prefix, id);
    int rc = h->cache_put(ctx, key, h->json_copy(doc), st->ttl, tags);
    if (!rc && *account) {
        snprintf(key, sizeof(key), "%saccount:%s", st->prefix, account);
        rc = h->cache_put(ctx, key, h->json_copy(doc), st->ttl, tags);
    }
    return rc;
}

/* The deal_risk alert of the analysis `doc` as the gate decided `d`:
 * raised (or updated, with new content) or resolved under alert_id
 * deal_risk:<call>, with the configured severity either way. */
static int risk_alert(const gong_state *st, sophia_ctx *ctx,
                      const sophia_json *doc, int d)
{
    const sophia_host *h = st->host;
    const sophia_json *rp = h->json_get(doc, "risk_phrases");
    const sophia_json *comp = h->json_get(doc, "competitors");
    const char *id = pu_str(h, doc, "call_id");
    const char *title = pu_str(h, doc, "title");
    char msg[600], aid[300];
    size_t off = (size_t)snprintf(msg, sizeof(msg), "%s: ", title ? title : id);
    if (d == PU_GATE_RESOLVE)
        snprintf(msg + off, sizeof(msg) - off, "no risk phrases any more");
    else
        off += (size_t)snprintf(msg + off, sizeof(msg) - off, "risk phrases");
    for (size_t i = 0; d != PU_GATE_RESOLVE && i < h->json_size(rp) &&
                       off < sizeof(msg); i++)
        off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s %s",
                                i ? "," : "", h->json_string(h->json_at(rp, i)));
    for (size_t i = 0; d != PU_GATE_RESOLVE && i < h->json_size(comp) &&
                       off < sizeof(msg); i++)
        off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s %s",
                                i ? "," : "; competitors",
                                pu_str(h, h->json_at(comp, i), "name"));
    snprintf(aid, sizeof(aid), "deal_risk:%s", id);
    sophia_json *data = h->json_object();
    pu_set_str(h, data, "call_id", id);
    pu_set_str(h, data, "account", pu_str(h, doc, "account"));
    pu_set_str(h, data, "opportunity", pu_str(h, doc, "opportunity"));
    pu_set(h, data, "risk_phrases", h->json_copy(rp));
    pu_set(h, data, "competitors", h->json_copy(comp));
    if (!data)
        return SOPHIA_ENOMEM;
    return pu_alert(h, ctx, "deal_risk", st->severity, msg, aid,
                    d == PU_GATE_RESOLVE, data);
}

/* The call's risk alert for this event (the transcript known): decided
 * on the committed gate, the gate's next value into g. */
static int gate_risk(const gong_state *st, sophia_ctx *ctx, const gong_call *c,
                     gong_change *g, const sophia_json *doc, double t)
{
    pu_gate gate = c ? c->risk : (pu_gate){0};
    uint64_t fp = gong_risk_fp(st->host, doc);
    int d = pu_gate_decide(&gate, fp, t, st->cooldown);
    if (d == PU_GATE_COOLING)
        st->host->counter_add(st->self, "alerts_suppressed", 1);
    if (d != PU_GATE_FIRE && d != PU_GATE_RESOLVE)
        return 0;
    g->gate_set = 1;
    g->risk = pu_gate_next(gate, d, fp, t);
    int rc = risk_alert(st, ctx, doc, d);
    if (!rc)
        st->host->counter_add(st->self, d == PU_GATE_FIRE ? "risk_alerts"
                                                          : "risk_resolved", 1);
    return rc;
}

/* ------------------------------------------------------------ process */

/* The call's summary record (type call_summary): 1 when queued. Its
 * text names counts, not the risk phrases themselves, so a search for a
 * risk finds the sentence that said it first. */
static int store_summary(const gong_state *st, sophia_ctx *ctx,
                         const char *id, const char *account,
                         const sophia_json *doc)
{
    const sophia_host *h = st->host;
    char *text = gong_summary(h, doc);
    sophia_json *c = h->json_object();
    pu_set_str(h, c, "source", "gong");
    pu_set_str(h, c, "call", id);
    if (*account)
        pu_set_str(h, c, "account", account);
    int ok = text && c && h->memory_store(ctx, text, "call_summary", c, 0.7) == 0;
    if (!text || !c)
        h->json_free(c);
    free(text);
    return ok;
}

/* One memory per action item / risk of the analysis `doc`, and the
 * call's summary; returns how many were queued (they apply with the
 * event's other effects). */
static int store_memories(const gong_state *st, sophia_ctx *ctx,
                          const char *id, const char *account,
                          const sophia_json *doc)
{
    const sophia_host *h = st->host;
    static const struct {
        const char *field, *type;
        double importance;
    } kinds[] = {{"action_items", "action_item", 0.6}, {"risks", "risk", 0.8}};
    int n = 0;
    for (size_t k = 0; h->memory_store && k < 2; k++) {
        const sophia_json *arr = h->json_get(doc, kinds[k].field);
        for (size_t i = 0; i < h->json_size(arr); i++) {
            const sophia_json *it = h->json_at(arr, i);
            const char *text = pu_str(h, it, "text");
            if (!text || !*text)
                continue;
            sophia_json *c = h->json_object();
            pu_set_str(h, c, "source", "gong");
            pu_set_str(h, c, "call", id);
            if (*account)
                pu_set_str(h, c, "account", account);
            pu_set_str(h, c, "speaker", pu_str(h, it, "speaker"));
            pu_set_str(h, c, "phrase", pu_str(h, it, "phrase"));
            if (h->memory_store(ctx, text, kinds[k].type, c, kinds[k].importance) == 0)
                n++;
        }
    }
    return n + store_summary(st, ctx, id, account, doc);
}

/* 1 when `a` and `b` are the same JSON (compact dumps compared). */
static int same_json(const sophia_host *h, const sophia_json *a,
                     const sophia_json *b)
{
    char *x = h->json_dump(a), *y = h->json_dump(b);
    int same = x && y && !strcmp(x, y);
    h->free(x);
    h->free(y);
    return same;
}

/* The event's halves as a change to its call (the call's id in *id, the
 * committed record in *c, NULL when new); NULL when the event is not a
 * Gong call or transcript, or on no memory (*bad says which). */
static gong_change *read_event(gong_state *st, const sophia_json *b,
                               const gong_call **c, int *bad)
{
    const sophia_host *h = st->host;
    const char *id = pu_str(h, b, "metaData.id");
    if (!id)
        id = pu_str(h, b, "callId");
    const sophia_json *tr = h->json_get(b, "transcript");
    int has_meta = h->json_type(h->json_get(b, "metaData")) == SOPHIA_JSON_OBJECT;
    int has_tr = h->json_type(tr) == SOPHIA_JSON_ARRAY;
    *bad = !id || (!has_meta && !has_tr);
    if (*bad)
        return NULL;
    size_t n = strlen(id) + 1;
    gong_change *g = calloc(1, sizeof(*g) + n);
    if (!g)
        return NULL;
    g->host = h;
    memcpy(g->id, id, n);
    *c = pu_table_get(&st->calls, id);
    if (has_meta && !(*c && (*c)->meta && same_json(h, (*c)->meta, b)) &&
        !(g->meta = h->json_copy(b)))
        *bad = -1;
    if (has_tr && !(*c && (*c)->transcript && same_json(h, (*c)->transcript, tr)) &&
        !(g->transcript = h->json_copy(tr)))
        *bad = -1;
    if (*bad) {
        change_discard(g);
        return NULL;
    }
    return g;
}

/* The analysis of the call as it is with change g: published, cached,
 * alerted (once per risk content, t the event's time), and its memories
 * stored once both halves are known. */
static int analyse(gong_state *st, sophia_ctx *ctx, const gong_call *c,
                   gong_change *g, double t)
{
    const sophia_host *h = st->host;
    const sophia_json *meta = g->meta ? g->meta : c ? c->meta : NULL;
    const sophia_json *tr = g->transcript ? g->transcript
                            : c           ? c->transcript
                                          : NULL;
    char account[256];
    account_of(h, meta, account, sizeof(account));
    const char *opp = crm_object(h, meta, "Opportunity");
    sophia_json *doc = gong_call_doc(h, &st->rules, g->id, meta, tr, account,
                                     opp);
    if (!doc)
        return SOPHIA_ENOMEM;
    int rc = cache_doc(st, ctx, g->id, account, opp, doc);
    if (!rc && tr)
        rc = gate_risk(st, ctx, c, g, doc, t);
    /* Both halves: speaker names and the account are known by now. */
    g->remembered = meta && tr && !(c && c->remembered);
    int nmem = !rc && g->remembered
                   ? store_memories(st, ctx, g->id, account, doc)
                   : 0;
    if (!rc)
        rc = h->publish(ctx, SOPHIA_UPDATE_DATA, NULL, st->dashboard, doc);
    else
        h->json_free(doc);
    if (!rc) {
        h->counter_add(st->self, tr ? "calls_analyzed" : "calls_seen", 1);
        if (g->remembered) {
            h->counter_add(st->self, "memories", nmem);
            h->counter_add(st->self, "summaries", 1);
        }
    }
    return rc;
}

static sophia_verdict gong_process(void *state, const sophia_event *ev,
                                   sophia_ctx *ctx)
{
    gong_state *st = state;
    const sophia_host *h = st->host;
    const gong_call *c = NULL;
    int bad = 0;
    gong_change *g = read_event(st, ev->body, &c, &bad);
    if (!g && bad > 0) {
        h->log(st->self, SOPHIA_LOG_WARN, "not a Gong call or transcript "
               "(needs metaData.id or callId + transcript)");
        return SOPHIA_PROCESS_ERROR;
    }
    if (!g)
        return SOPHIA_PROCESS_RETRY;
    if (c && !g->meta && !g->transcript) {
        change_discard(g);
        h->counter_add(st->self, "duplicates", 1);
        return SOPHIA_PROCESS_OK; /* nothing new: analysed before */
    }
    int64_t us = ev->received_us ? ev->received_us : h->now_us();
    int rc = analyse(st, ctx, c, g, (double)us / 1e6);
    if (rc) {
        change_discard(g);
        return SOPHIA_PROCESS_RETRY;
    }
    return h->stage(ctx, change_apply, change_discard, g)
               ? SOPHIA_PROCESS_RETRY
               : SOPHIA_PROCESS_OK;
}

/* --------------------------------------------- hot reload hand-over */

/* The committed calls: {"format":1,"calls":[{"id","meta","transcript",
 * "remembered","risk":pu_gate_export}]} (a half not known yet is {}). */
static char *gong_export(void *state)
{
    gong_state *st = state;
    const sophia_host *h = st->host;
    sophia_json *doc = h->json_object(), *all = h->json_array();
    for (const pu_entry *e = st->calls.oldest; all && e; e = e->newer) {
        const gong_call *c = e->val;
        sophia_json *o = h->json_object();
        pu_set_str(h, o, "id", e->key);
        pu_set(h, o, "meta", c->meta ? h->json_copy(c->meta) : h->json_object());
        pu_set(h, o, "transcript",
               c->transcript ? h->json_copy(c->transcript) : h->json_object());
        pu_set(h, o, "remembered", h->json_bool_new(c->remembered));
        pu_set(h, o, "risk", pu_gate_export(h, &c->risk));
        if (!o || h->json_append(all, o)) {
            h->json_free(all);
            all = NULL;
        }
    }
    pu_set(h, doc, "format", h->json_int(1));
    int rc = pu_set(h, doc, "calls", all);
    return pu_export_text(h, doc, rc);
}

static int gong_import(void *state, const char *json)
{
    gong_state *st = state;
    const sophia_host *h = st->host;
    if (!pu_has_parse(h))
        return SOPHIA_EABI;
    sophia_json *doc = h->json_parse(json);
    const sophia_json *all = h->json_get(doc, "calls");
    if (!doc || h->json_number(h->json_get(doc, "format"), 0) != 1 ||
        h->json_type(all) != SOPHIA_JSON_ARRAY) {
        h->json_free(doc);
        return SOPHIA_EPARSE;
    }
    int rc = 0;
    for (size_t i = 0; !rc && i < h->json_size(all); i++) {
        const sophia_json *o = h->json_at(all, i);
        const char *id = pu_str(h, o, "id");
        const sophia_json *m = h->json_get(o, "meta");
        const sophia_json *t = h->json_get(o, "transcript");
        gong_call *c = id ? call_get(st, id) : NULL;
        if (id && !c)
            rc = SOPHIA_ENOMEM;
        if (!c)
            continue;
        if (h->json_type(h->json_get(m, "metaData")) == SOPHIA_JSON_OBJECT) {
            h->json_free(c->meta);
            c->meta = h->json_copy(m);
        }
        if (h->json_type(t) == SOPHIA_JSON_ARRAY) {
            h->json_free(c->transcript);
            c->transcript = h->json_copy(t);
        }
        c->remembered = h->json_bool(h->json_get(o, "remembered"), 0);
        if (pu_gate_import(h, &c->risk, h->json_get(o, "risk")))
            rc = SOPHIA_EPARSE;
    }
    h->json_free(doc);
    return rc;
}

/* ----------------------------------------------------------- descriptor */

static const sophia_option gong_options[] = {
    {"dashboard", SOPHIA_OPT_STRING, "sales",
     "dashboard that receives a `data` update per call"},
    {"cache_prefix", SOPHIA_OPT_STRING, "gong:",
     "cache keys: <prefix>call:<id> and <prefix>account:<account>"},
    {"ttl", SOPHIA_OPT_DOUBLE, "86400", "seconds cached analyses live"},
    {"risk_phrases", SOPHIA_OPT_LIST, NULL,
     "phrases that raise a deal_risk alert, case-insensitive (empty: "
     "competitor, budget, churn, cancel, too expensive, legal review)"},
    {"action_phrases", SOPHIA_OPT_LIST, NULL,
     "phrases that make a sentence a next step / action item (empty: i "
     "will, i'll, next step, follow up)"},
    {"risk_severity", SOPHIA_OPT_STRING, "warning",
     "severity of deal_risk alerts (and of their resolution)"},
    {"risk_cooldown", SOPHIA_OPT_DOUBLE, "3600",
     "seconds (event time) after a call's deal_risk alert fired during "
     "which changed risk content of that call does not fire again"},
    {"competitors", SOPHIA_OPT_LIST, NULL,
     "competitors named in transcripts: 'Name' or 'Name=alias|alias', "
     "matched case-insensitively; a mention is a deal risk"},
    {"topics", SOPHIA_OPT_LIST, NULL,
     "topics beyond Gong's own: 'Name=phrase|phrase'; a sentence holding "
     "a phrase puts Name in the call's topics"},
    {"max_calls", SOPHIA_OPT_INT, "10000",
     "calls remembered while waiting for their other half"},
    {NULL, 0, NULL, NULL},
};

static const sophia_processor_ops gong_ops = {
    .struct_size = sizeof(sophia_processor_ops),
    .process = gong_process,
    .export_state = gong_export,
    .import_state = gong_import,
};

SOPHIA_EXPORT const sophia_plugin sophia_plugin_v1 = {
    SOPHIA_PLUGIN_HEADER,
    .name = "gong",
    .version = "1.2.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Gong calls and transcripts -> rep/customer talk ratio, "
                   "questions, monologues, topics, next steps, competitors, "
                   "risk alerts, call summaries",
    .options = gong_options,
    .init = gong_init,
    .fini = gong_fini,
    .processor = &gong_ops,
};
