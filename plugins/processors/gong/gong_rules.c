/*
 * gong_rules.c - the gong processor's rules and its reading of one call.
 *
 * Every figure is rule-based and explainable, configured in YAML:
 *   - sides: a speaker is the rep when its party's `affiliation` is
 *     "Internal", the customer when "External"; anything else (no party
 *     yet, "Unknown") is unattributed. Talk ratio is rep and customer
 *     talk time (sum of sentence end - start, ms) over their sum; per
 *     speaker name only as detail (`talk_ms`).
 *   - questions: sentences whose text ends with '?', per side.
 *   - monologue: a run of consecutive sentences by one speakerId, from
 *     its first start to its last end; the longest overall and the
 *     longest by a customer speaker.
 *   - next steps (`action_items`, `next_steps`): sentences holding one of
 *     `action_phrases`.
 *   - risks: sentences holding one of `risk_phrases`.
 *   - competitors: sentences naming an entry of `competitors` ("Name" or
 *     "Name=alias|alias"), counted per competitor by name.
 *   - topics: Gong's own segment topics, then each `topics` entry
 *     ("Name=phrase|phrase") whose phrase a sentence holds.
 * A phrase matches case-insensitively where a word starts.
 *
 * Pure: nothing here reads or writes instance state, so gong.c can
 * analyse the call as it will be with an event before the event commits.
 */
#include "gong.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../proc_util.h"

/* ------------------------------------------------------------- rules */

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

static void free_terms(gong_term *t, size_t n)
{
    for (size_t i = 0; t && i < n; i++) {
        free(t[i].name);
        free_list(t[i].alts, t[i].nalts);
    }
    free(t);
}

/* "Name" or "Name=a|b" into t; `need_alts`: the phrases are required. */
static int parse_term(const char *spec, int need_alts, gong_term *t)
{
    const char *eq = strchr(spec, '=');
    size_t nlen = eq ? (size_t)(eq - spec) : strlen(spec);
    if (!nlen || (eq && !eq[1]) || (need_alts && !eq))
        return SOPHIA_EINVAL;
    const char *alts = eq ? eq + 1 : spec;
    size_t n = 1;
    for (const char *p = alts; *p; p++)
        n += *p == '|';
    if (!(t->name = malloc(nlen + 1)) || !(t->alts = calloc(n, sizeof(char *))))
        return SOPHIA_ENOMEM;
    memcpy(t->name, spec, nlen);
    t->name[nlen] = '\0';
    for (const char *p = eq ? alts : t->name; t->nalts < n; p++) {
        size_t len = strcspn(p, "|");
        if (!len || !(t->alts[t->nalts] = malloc(len + 1)))
            return len ? SOPHIA_ENOMEM : SOPHIA_EINVAL;
        memcpy(t->alts[t->nalts], p, len);
        t->alts[t->nalts++][len] = '\0';
        p += len;
        if (!*p)
            break;
    }
    return 0;
}

static int read_terms(const sophia_host *h, sophia_self *self,
                      const sophia_opts *o, const char *opt, int need_alts,
                      gong_term **out, size_t *n)
{
    *n = h->opt_list_len(o, opt);
    if (!(*out = calloc(*n ? *n : 1, sizeof(**out))))
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        const char *spec = h->opt_list_item(o, opt, i);
        int rc = parse_term(spec ? spec : "", need_alts, &(*out)[i]);
        if (rc == SOPHIA_EINVAL)
            h->log(self, SOPHIA_LOG_ERROR, "%s entry %zu '%s' is not %s", opt,
                   i + 1, spec ? spec : "",
                   need_alts ? "Name=phrase|phrase" : "Name or Name=alias|alias");
        if (rc)
            return rc;
    }
    return 0;
}

int gong_rules_init(const sophia_host *h, sophia_self *self,
                    const sophia_opts *o, gong_rules *r)
{
    memset(r, 0, sizeof(*r));
    r->risks = copy_list(h, o, "risk_phrases", default_risks, &r->nrisks);
    r->actions = copy_list(h, o, "action_phrases", default_actions,
                           &r->nactions);
    if (!r->risks || !r->actions)
        return SOPHIA_ENOMEM;
    int rc = read_terms(h, self, o, "competitors", 0, &r->competitors,
                        &r->ncompetitors);
    return rc ? rc : read_terms(h, self, o, "topics", 1, &r->topics, &r->ntopics);
}

void gong_rules_free(gong_rules *r)
{
    free_list(r->risks, r->nrisks);
    free_list(r->actions, r->nactions);
    free_terms(r->competitors, r->ncompetitors);
    free_terms(r->topics, r->ntopics);
    memset(r, 0, sizeof(*r));
}

/* ---------------------------------------------------------- analysis */

/* `phrase` in `text`, case-insensitively, starting at a word boundary. */
static int has_phrase(const char *text, const char *phrase)
{
    for (const char *p = text; (p = pu_strcasestr(p, phrase)); p++)
        if (p == text || !isalnum((unsigned char)p[-1]))
            return 1;
    return 0;
}

static int term_in(const gong_term *t, const char *text)
{
    for (size_t i = 0; i < t->nalts; i++)
        if (has_phrase(text, t->alts[i]))
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

static const char *speaker_name(const sophia_host *h, const sophia_json *p,
                                const char *sid)
{
    const char *n = p ? pu_str(h, p, "name") : NULL;
    if (!n && p)
        n = pu_str(h, p, "emailAddress");
    return n ? n : (sid ? sid : "unknown");
}

enum { SIDE_REP, SIDE_CUSTOMER, SIDE_OTHER };

static int side_of(const sophia_host *h, const sophia_json *party)
{
    const char *aff = party ? pu_str(h, party, "affiliation") : NULL;
    if (aff && !strcasecmp(aff, "Internal"))
        return SIDE_REP;
    if (aff && !strcasecmp(aff, "External"))
        return SIDE_CUSTOMER;
    return SIDE_OTHER;
}

typedef struct talk {
    const char *name;
    double ms;
} talk;

typedef struct analysis {
    talk t[64];
    size_t nt;
    double side_ms[3];
    int64_t questions[3];
    double mono_ms, cust_mono_ms;
    const char *mono_speaker, *cust_mono_speaker;
    int64_t *comp_hits;
    sophia_json *topics, *actions, *next_steps, *risks, *risk_phrases;
} analysis;

/* Adds `ms` to the speaker's total in v (at most 64 speakers). */
static void add_talk(analysis *a, const char *name, double ms)
{
    for (size_t i = 0; i < a->nt; i++)
        if (!strcmp(a->t[i].name, name)) {
            a->t[i].ms += ms;
            return;
        }
    if (a->nt < 64)
        a->t[a->nt++] = (talk){name, ms};
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

static void add_unique(const sophia_host *h, sophia_json *arr, const char *s)
{
    if (!list_has(h, arr, s))
        h->json_append(arr, h->json_str(s));
}

/* A question: the text's last non-blank character is '?'. */
static int is_question(const char *text)
{
    size_t n = strlen(text);
    while (n && isspace((unsigned char)text[n - 1]))
        n--;
    return n && text[n - 1] == '?';
}

static void scan_sentence(const sophia_host *h, const gong_rules *r,
                          analysis *a, const char *who, int side,
                          const char *text)
{
    a->questions[side] += is_question(text);
    for (size_t i = 0; i < r->nactions; i++)
        if (has_phrase(text, r->actions[i])) {
            sophia_json *o = h->json_object();
            pu_set_str(h, o, "speaker", who);
            pu_set_str(h, o, "text", text);
            h->json_append(a->actions, o);
            h->json_append(a->next_steps, h->json_str(text));
            break;
        }
    for (size_t i = 0; i < r->nrisks; i++) {
        if (!has_phrase(text, r->risks[i]))
            continue;
        sophia_json *o = h->json_object();
        pu_set_str(h, o, "phrase", r->risks[i]);
        pu_set_str(h, o, "speaker", who);
        pu_set_str(h, o, "text", text);
        h->json_append(a->risks, o);
        add_unique(h, a->risk_phrases, r->risks[i]);
    }
    for (size_t i = 0; i < r->ncompetitors; i++)
        a->comp_hits[i] += term_in(&r->competitors[i], text);
    for (size_t i = 0; i < r->ntopics; i++)
        if (term_in(&r->topics[i], text))
            add_unique(h, a->topics, r->topics[i].name);
}

/* The run of consecutive sentences by one speaker being walked. */
typedef struct run {
    const char *sid, *who;
    int side;
    double start, end;
} run;

static void end_sentence(analysis *a, const run *m)
{
    double len = m->end - m->start;
    if (len > a->mono_ms) {
        a->mono_ms = len;
        a->mono_speaker = m->who;
    }
    if (m->side == SIDE_CUSTOMER && len > a->cust_mono_ms) {
        a->cust_mono_ms = len;
        a->cust_mono_speaker = m->who;
    }
}

/* Walks the transcript once: talk time, questions, monologues, topics,
 * phrases. */
static void analyze(const sophia_host *h, const gong_rules *r,
                    const sophia_json *meta, const sophia_json *tr,
                    analysis *a)
{
    run m = {0};
    for (size_t i = 0; i < h->json_size(tr); i++) {
        const sophia_json *seg = h->json_at(tr, i);
        const char *sid = pu_str(h, seg, "speakerId");
        const sophia_json *party = party_of(h, meta, sid);
        const char *who = speaker_name(h, party, sid);
        int side = side_of(h, party);
        const char *topic = pu_str(h, seg, "topic");
        if (topic)
            add_unique(h, a->topics, topic);
        const sophia_json *ss = h->json_get(seg, "sentences");
        for (size_t k = 0; k < h->json_size(ss); k++) {
            const sophia_json *s = h->json_at(ss, k);
            double b = h->json_number(h->json_get(s, "start"), 0);
            double e = h->json_number(h->json_get(s, "end"), b);
            if (e > b) {
                add_talk(a, who, e - b);
                a->side_ms[side] += e - b;
            }
            if (!m.sid || !sid || strcmp(m.sid, sid))
                m = (run){sid, who, side, b, e};
            m.end = e;
            end_sentence(a, &m);
            const char *text = pu_str(h, s, "text");
            if (text)
                scan_sentence(h, r, a, who, side, text);
        }
    }
}

/* ---------------------------------------------------------- document */

static double round3(double x)
{
    return (double)(int64_t)(x * 1000 + 0.5) / 1000;
}

/* {"rep": rep, "customer": cust}; takes both. */
static sophia_json *pair(const sophia_host *h, sophia_json *rep,
                         sophia_json *cust)
{
    sophia_json *o = h->json_object();
    pu_set(h, o, "rep", rep);
    pu_set(h, o, "customer", cust);
    return o;
}

static sophia_json *monologue(const sophia_host *h, const char *who, double ms)
{
    sophia_json *o = h->json_object();
    pu_set_str(h, o, "speaker", who ? who : "");
    pu_set(h, o, "ms", h->json_int((int64_t)ms));
    return o;
}

/* The transcript's figures into d; takes a's arrays. */
static void put_figures(const sophia_host *h, const gong_rules *r,
                        sophia_json *d, analysis *a)
{
    double rep = a->side_ms[SIDE_REP], cust = a->side_ms[SIDE_CUSTOMER];
    double both = rep + cust;
    sophia_json *ms = h->json_object(), *comp = h->json_array();
    for (size_t i = 0; i < a->nt; i++)
        pu_set(h, ms, a->t[i].name, h->json_int((int64_t)a->t[i].ms));
    for (size_t i = 0; i < r->ncompetitors; i++) {
        if (!a->comp_hits[i])
            continue;
        sophia_json *o = h->json_object();
        pu_set_str(h, o, "name", r->competitors[i].name);
        pu_set(h, o, "mentions", h->json_int(a->comp_hits[i]));
        h->json_append(comp, o);
    }
    pu_set(h, d, "transcript", h->json_bool_new(1));
    pu_set(h, d, "talk_ratio",
           pair(h, h->json_num(both > 0 ? round3(rep / both) : 0),
                h->json_num(both > 0 ? round3(cust / both) : 0)));
    pu_set(h, d, "talk_ms_by_side", pair(h, h->json_int((int64_t)rep),
                                         h->json_int((int64_t)cust)));
    pu_set(h, d, "unattributed_ms", h->json_int((int64_t)a->side_ms[SIDE_OTHER]));
    pu_set(h, d, "talk_ms", ms);
    pu_set(h, d, "questions", pair(h, h->json_int(a->questions[SIDE_REP]),
                                   h->json_int(a->questions[SIDE_CUSTOMER])));
    pu_set(h, d, "longest_monologue", monologue(h, a->mono_speaker, a->mono_ms));
    pu_set(h, d, "longest_customer_monologue",
           monologue(h, a->cust_mono_speaker, a->cust_mono_ms));
    pu_set(h, d, "topics", a->topics);
    pu_set(h, d, "action_items", a->actions);
    pu_set(h, d, "next_steps", a->next_steps);
    pu_set(h, d, "risks", a->risks);
    pu_set(h, d, "risk_phrases", a->risk_phrases);
    pu_set(h, d, "competitors", comp);
    a->topics = a->actions = a->next_steps = a->risks = a->risk_phrases = NULL;
}

sophia_json *gong_call_doc(const sophia_host *h, const gong_rules *r,
                           const char *id, const sophia_json *meta,
                           const sophia_json *tr, const char *account,
                           const char *opp)
{
    sophia_json *d = h->json_object();
    pu_set_str(h, d, "kind", "gong_call");
    pu_set_str(h, d, "call_id", id);
    pu_set_str(h, d, "title", meta ? pu_str(h, meta, "metaData.title") : NULL);
    pu_set_str(h, d, "started", meta ? pu_str(h, meta, "metaData.started") : NULL);
    if (*account)
        pu_set_str(h, d, "account", account);
    pu_set_str(h, d, "opportunity", opp);
    if (!tr) {
        pu_set(h, d, "transcript", h->json_bool_new(0));
        return d;
    }
    analysis a = {.topics = h->json_array(), .actions = h->json_array(),
                  .next_steps = h->json_array(), .risks = h->json_array(),
                  .risk_phrases = h->json_array(),
                  .comp_hits = calloc(r->ncompetitors + 1, sizeof(int64_t))};
    if (a.comp_hits && a.topics && a.actions && a.next_steps && a.risks &&
        a.risk_phrases) {
        analyze(h, r, meta, tr, &a);
        put_figures(h, r, d, &a);
    } else {
        h->json_free(d);
        d = NULL;
    }
    free(a.comp_hits);
    sophia_json *left[] = {a.topics, a.actions, a.next_steps, a.risks,
                           a.risk_phrases};
    for (size_t i = 0; i < 5; i++)
        h->json_free(left[i]);
    return d;
}

/* ------------------------------------------------- alert and summary */

uint64_t gong_risk_fp(const sophia_host *h, const sophia_json *doc)
{
    const sophia_json *rp = h->json_get(doc, "risk_phrases");
    const sophia_json *comp = h->json_get(doc, "competitors");
    uint64_t fp = 0;
    for (size_t i = 0; i < h->json_size(rp); i++) {
        const char *s = h->json_string(h->json_at(rp, i));
        fp += s ? pu_fnv(s, strlen(s)) : 0;
    }
    for (size_t i = 0; i < h->json_size(comp); i++) {
        const char *s = pu_str(h, h->json_at(comp, i), "name");
        fp += s ? pu_fnv(s, strlen(s)) * 31 : 0; /* "x" the phrase != x the name */
    }
    return fp || !(h->json_size(rp) + h->json_size(comp)) ? fp : 1;
}

static size_t names_into(const sophia_host *h, const sophia_json *arr,
                         const char *field, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < h->json_size(arr) && off < len; i++) {
        const sophia_json *x = h->json_at(arr, i);
        const char *s = field ? pu_str(h, x, field) : h->json_string(x);
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
                                s ? s : "");
    }
    return off;
}

char *gong_summary(const sophia_host *h, const sophia_json *doc)
{
    char comp[256], *out = malloc(1024);
    if (!out)
        return NULL;
    const char *title = pu_str(h, doc, "title");
    const char *acc = pu_str(h, doc, "account");
    names_into(h, h->json_get(doc, "competitors"), "name", comp, sizeof(comp));
    snprintf(out, 1024,
             "Call summary: %s%s%s%s. Rep talked %.0f%%, customer %.0f%%. "
             "Questions asked: rep %.0f, customer %.0f. Longest customer "
             "monologue %.1f s. Next steps: %zu. Competitors named: %s. "
             "Risk phrases: %zu.",
             title ? title : pu_str(h, doc, "call_id"), acc ? " (" : "",
             acc ? acc : "", acc ? ")" : "",
             100 * h->json_number(h->json_get(doc, "talk_ratio.rep"), 0),
             100 * h->json_number(h->json_get(doc, "talk_ratio.customer"), 0),
             h->json_number(h->json_get(doc, "questions.rep"), 0),
             h->json_number(h->json_get(doc, "questions.customer"), 0),
             h->json_number(h->json_get(doc, "longest_customer_monologue.ms"), 0) / 1000,
             h->json_size(h->json_get(doc, "next_steps")),
             comp[0] ? comp : "none",
             h->json_size(h->json_get(doc, "risk_phrases")));
    return out;
}
