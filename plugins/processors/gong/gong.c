/*
 * gong - the processor for Gong calls.
 *
 * Gong sends a call's metadata ({"metaData":…, "parties":[…],
 * "context":[…]}) and its transcript ({"callId":…, "transcript":[{
 * "speakerId", "topic", "sentences":[{start,end,text}]}]}) as separate
 * payloads, in either order, or as one object holding both. The instance
 * keeps what it has seen of each call (bounded, oldest evicted) and runs
 * the analysis once a transcript is known, using whatever metadata has
 * arrived: talk time and ratio per party, the longest monologue (a run of
 * consecutive segments by one speaker), topics, action items ("I will …",
 * "next step" …) and risk phrases (the `risk_phrases` option).
 *
 * Effects, all through the host: the analysis is cached per call
 * (`<prefix>call:<id>`) and per account (`<prefix>account:<account>`),
 * tagged `call:<id>`, `account:<account>` and `opportunity:<crm id>` so
 * the crm processor can invalidate them when the deal changes; a `data`
 * update goes to `dashboard:<dashboard>`; any risk phrase raises a
 * `deal_risk` alert. Once both halves of a call are known, each action
 * item and each risk sentence becomes a memory (host->memory_store; types
 * `action_item` and `risk`, context {source, account, call, speaker[,
 * phrase]}), once per call, so memory search can answer "what did we
 * promise Acme?" or "which accounts mentioned a competitor?".
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
 * halves and whether their memories were stored).
 */
#include <sophia/sdk.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../proc_util.h"

typedef struct gong_call {
    const sophia_host *host;
    sophia_json *meta;       /* {"metaData","parties","context"} copy or NULL */
    sophia_json *transcript; /* the transcript array copy or NULL */
    int remembered;          /* its memories were stored */
} gong_call;

typedef struct gong_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *severity;
    double ttl;
    char **risks, **actions;
    size_t nrisks, nactions;
    pu_table calls;
} gong_state;

/* ------------------------------------------------------------ lifecycle */

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

/* The list option `name`, or `def` (NULL-terminated) when it is empty:
 * the host gives list options no default of their own. */
static char **copy_list(const sophia_host *h, const sophia_opts *o,
                        const char *name, const char *const *def, size_t *n)
{
    size_t given = h->opt_list_len(o, name), ndef = 0;
    while (def[ndef])
        ndef++;
    *n = given ? given : ndef;
    char **v = calloc(*n ? *n : 1, sizeof(*v));
    for (size_t i = 0; v && i < *n; i++)
        v[i] = pu_strdup(given ? h->opt_list_item(o, name, i) : def[i]);
    return v;
}

static const char *const default_risks[] = {
    "competitor", "budget", "churn", "cancel", "too expensive",
    "legal review", NULL};
static const char *const default_actions[] = {
    "i will", "i'll", "next step", "follow up", NULL};

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
    free_list(st->risks, st->nrisks);
    free_list(st->actions, st->nactions);
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
    st->risks = copy_list(host, opts, "risk_phrases", default_risks,
                          &st->nrisks);
    st->actions = copy_list(host, opts, "action_phrases", default_actions,
                            &st->nactions);
    int64_t max = host->opt_int(opts, "max_calls");
    if (!st->prefix || !st->dashboard || !st->severity || !st->risks ||
        !st->actions || max < 1 ||
        pu_table_init(&st->calls, (size_t)max, free_call)) {
        gong_fini(st);
        return max < 1 ? SOPHIA_EINVAL : SOPHIA_ENOMEM;
    }
    *state = st;
    return SOPHIA_OK;
}

/* ----------------------------------------------------------- analysis */

/* `phrase` in `text`, case-insensitively, starting at a word boundary. */
static int has_phrase(const char *text, const char *phrase)
{
    for (const char *p = text; (p = pu_strcasestr(p, phrase)); p++)
        if (p == text || !isalnum((unsigned char)p[-1]))
            return 1;
    return 0;
}

/* The party (object) whose speakerId is `sid`, or NULL. */
static const sophia_json *party_of(const sophia_host *h,
                                   const sophia_json *meta, const char *sid)
{
    const sophia_json *parties = meta ? h->json_get(meta, "parties") : NULL;
    for (size_t i = 0; sid && i < h->json_size(parties); i++) {
        const sophia_json *p = h->json_at(parties, i);
        const char *s = pu_str(h, p, "speakerId");
        if (s && !strcmp(s, sid))
            return p;
    }
    return NULL;
}

static const char *speaker_name(const sophia_host *h, const sophia_json *meta,
                                const char *sid)
{
    const sophia_json *p = party_of(h, meta, sid);
    const char *n = p ? pu_str(h, p, "name") : NULL;
    if (!n && p)
        n = pu_str(h, p, "emailAddress");
    return n ? n : (sid ? sid : "unknown");
}

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

typedef struct talk {
    const char *name;
    double ms;
} talk;

/* Adds `ms` to the speaker's total in v (at most 64 speakers). */
static void add_talk(talk *v, size_t *n, const char *name, double ms)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(v[i].name, name)) {
            v[i].ms += ms;
            return;
        }
    if (*n < 64)
        v[(*n)++] = (talk){name, ms};
}

static int list_has(const sophia_host *h, const sophia_json *arr,
                    const char *s)
{
    for (size_t i = 0; i < h->json_size(arr); i++) {
        const char *x = h->json_string(h->json_at(arr, i));
        if (x && !strcmp(x, s))
            return 1;
    }
    return 0;
}

typedef struct analysis {
    talk t[64];
    size_t nt;
    double total_ms, mono_ms;
    const char *mono_speaker;
    sophia_json *topics, *actions, *risks, *risk_phrases;
} analysis;

static void scan_sentence(const gong_state *st, analysis *a, const char *who,
                          const char *text)
{
    const sophia_host *h = st->host;
    for (size_t i = 0; i < st->nactions; i++)
        if (has_phrase(text, st->actions[i])) {
            sophia_json *o = h->json_object();
            pu_set_str(h, o, "speaker", who);
            pu_set_str(h, o, "text", text);
            h->json_append(a->actions, o);
            break;
        }
    for (size_t i = 0; i < st->nrisks; i++) {
        if (!has_phrase(text, st->risks[i]))
            continue;
        sophia_json *o = h->json_object();
        pu_set_str(h, o, "phrase", st->risks[i]);
        pu_set_str(h, o, "speaker", who);
        pu_set_str(h, o, "text", text);
        h->json_append(a->risks, o);
        if (!list_has(h, a->risk_phrases, st->risks[i]))
            h->json_append(a->risk_phrases, h->json_str(st->risks[i]));
    }
}

/* Walks the transcript once: talk time, monologues, topics, phrases. */
static void analyze(const gong_state *st, const sophia_json *meta,
                    const sophia_json *tr, analysis *a)
{
    const sophia_host *h = st->host;
    const char *run_sid = NULL;
    double run_start = 0, run_end = 0;
    for (size_t i = 0; i < h->json_size(tr); i++) {
        const sophia_json *seg = h->json_at(tr, i);
        const char *sid = pu_str(h, seg, "speakerId");
        const char *who = speaker_name(h, meta, sid);
        const char *topic = pu_str(h, seg, "topic");
        if (topic && !list_has(h, a->topics, topic))
            h->json_append(a->topics, h->json_str(topic));
        const sophia_json *ss = h->json_get(seg, "sentences");
        for (size_t k = 0; k < h->json_size(ss); k++) {
            const sophia_json *s = h->json_at(ss, k);
            double b = h->json_number(h->json_get(s, "start"), 0);
            double e = h->json_number(h->json_get(s, "end"), b);
            if (e > b) {
                add_talk(a->t, &a->nt, who, e - b);
                a->total_ms += e - b;
            }
            if (!run_sid || !sid || strcmp(run_sid, sid)) {
                run_sid = sid;
                run_start = b;
            }
            run_end = e;
            if (run_end - run_start > a->mono_ms) {
                a->mono_ms = run_end - run_start;
                a->mono_speaker = who;
            }
            const char *text = pu_str(h, s, "text");
            if (text)
                scan_sentence(st, a, who, text);
        }
    }
}

/* The analysis document published and cached for one call. */
static sophia_json *call_doc(const gong_state *st, const char *id,
                             const sophia_json *meta, const char *account,
                             const char *opp, analysis *a)
{
    const sophia_host *h = st->host;
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "gong_call");
    pu_set_str(h, d, "call_id", id);
    pu_set_str(h, d, "title", meta ? pu_str(h, meta, "metaData.title") : NULL);
    pu_set_str(h, d, "started", meta ? pu_str(h, meta, "metaData.started") : NULL);
    if (*account)
        pu_set_str(h, d, "account", account);
    pu_set_str(h, d, "opportunity", opp);
    if (!a) {
        pu_set(h, d, "transcript", h->json_bool_new(0));
        return d;
    }
    sophia_json *ratio = h->json_object(), *ms = h->json_object();
    for (size_t i = 0; i < a->nt; i++) {
        double r = a->total_ms > 0 ? a->t[i].ms / a->total_ms : 0;
        pu_set(h, ratio, a->t[i].name, h->json_num((double)(int)(r * 1000 + 0.5) / 1000));
        pu_set(h, ms, a->t[i].name, h->json_int((int64_t)a->t[i].ms));
    }
    pu_set(h, d, "transcript", h->json_bool_new(1));
    pu_set(h, d, "talk_ratio", ratio);
    pu_set(h, d, "talk_ms", ms);
    sophia_json *mono = h->json_object();
    pu_set_str(h, mono, "speaker", a->mono_speaker ? a->mono_speaker : "");
    pu_set(h, mono, "ms", h->json_int((int64_t)a->mono_ms));
    pu_set(h, d, "longest_monologue", mono);
    pu_set(h, d, "topics", a->topics);
    pu_set(h, d, "action_items", a->actions);
    pu_set(h, d, "risks", a->risks);
    pu_set(h, d, "risk_phrases", h->json_copy(a->risk_phrases));
    a->topics = a->actions = a->risks = NULL; /* taken */
    return d;
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

static int risk_alert(const gong_state *st, sophia_ctx *ctx,
                      const sophia_json *doc)
{
    const sophia_host *h = st->host;
    const sophia_json *rp = h->json_get(doc, "risk_phrases");
    if (!h->json_size(rp))
        return 0;
    char msg[512];
    size_t off = 0;
    const char *title = pu_str(h, doc, "title");
    off += (size_t)snprintf(msg, sizeof(msg), "%s: risk phrases",
                            title ? title : pu_str(h, doc, "call_id"));
    for (size_t i = 0; i < h->json_size(rp) && off < sizeof(msg); i++)
        off += (size_t)snprintf(msg + off, sizeof(msg) - off, "%s %s",
                                i ? "," : "", h->json_string(h->json_at(rp, i)));
    sophia_json *data = h->json_object();
    pu_set_str(h, data, "call_id", pu_str(h, doc, "call_id"));
    pu_set_str(h, data, "account", pu_str(h, doc, "account"));
    pu_set_str(h, data, "opportunity", pu_str(h, doc, "opportunity"));
    pu_set(h, data, "risk_phrases", h->json_copy(rp));
    return h->alert(ctx, "deal_risk", st->severity, msg, data);
}

/* ------------------------------------------------------------ process */

/* One memory per action item / risk of the analysis `doc`; returns how
 * many were queued (they apply with the event's other effects). */
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
    return n;
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
 * alerted, and its memories stored once both halves are known. */
static int analyse(gong_state *st, sophia_ctx *ctx, const gong_call *c,
                   gong_change *g)
{
    const sophia_host *h = st->host;
    const sophia_json *meta = g->meta ? g->meta : c ? c->meta : NULL;
    const sophia_json *tr = g->transcript ? g->transcript
                            : c           ? c->transcript
                                          : NULL;
    char account[256];
    account_of(h, meta, account, sizeof(account));
    const char *opp = crm_object(h, meta, "Opportunity");
    analysis a = {0};
    if (tr) {
        a.topics = h->json_array();
        a.actions = h->json_array();
        a.risks = h->json_array();
        a.risk_phrases = h->json_array();
        analyze(st, meta, tr, &a);
    }
    sophia_json *doc = call_doc(st, g->id, meta, account, opp, tr ? &a : NULL);
    if (a.risk_phrases)
        h->json_free(a.risk_phrases);
    if (!doc)
        return SOPHIA_ENOMEM;
    int rc = cache_doc(st, ctx, g->id, account, opp, doc);
    if (!rc && tr)
        rc = risk_alert(st, ctx, doc);
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
        if (g->remembered)
            h->counter_add(st->self, "memories", nmem);
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
    int rc = analyse(st, ctx, c, g);
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
 * "remembered"}]} (a half not known yet is null). */
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
     "phrases that make a sentence an action item (empty: i will, i'll, "
     "next step, follow up)"},
    {"risk_severity", SOPHIA_OPT_STRING, "warning",
     "severity of deal_risk alerts"},
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
    .version = "1.1.0",
    .kind = SOPHIA_KIND_PROCESSOR,
    .description = "Gong calls and transcripts -> talk ratios, monologues, "
                   "topics, action items, risk alerts",
    .options = gong_options,
    .init = gong_init,
    .fini = gong_fini,
    .processor = &gong_ops,
};
