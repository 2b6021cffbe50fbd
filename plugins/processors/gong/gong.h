/*
 * gong.h - what the gong processor's two files share: gong.c keeps the
 * calls, applies the event contract and raises the effects; gong_rules.c
 * reads the rule options (phrases, competitors, topics) and turns one
 * call (metadata + transcript) into the analysis document. The split
 * keeps the analysis a pure function of the call and the rules: it reads
 * no instance state, so process() can run it on the call as it will be
 * without changing anything.
 */
#ifndef SOPHIA_GONG_H
#define SOPHIA_GONG_H

#include <sophia/sdk.h>

#include <stddef.h>
#include <stdint.h>

/* A named rule: "Name" (matches itself) or "Name=phrase|phrase". */
typedef struct gong_term {
    char *name;
    char **alts;
    size_t nalts;
} gong_term;

/* The rules the options give, read-only after init. */
typedef struct gong_rules {
    char **risks, **actions;
    size_t nrisks, nactions;
    gong_term *competitors, *topics;
    size_t ncompetitors, ntopics;
} gong_rules;

/* Reads risk_phrases, action_phrases, competitors and topics; logs what
 * is wrong (option and entry) and returns SOPHIA_EINVAL, or ENOMEM. */
int gong_rules_init(const sophia_host *h, sophia_self *self,
                    const sophia_opts *o, gong_rules *r);
void gong_rules_free(gong_rules *r);

/* The analysis document of call `id` (see gong.c's header for its
 * fields); `tr` NULL gives the metadata-only document. NULL on no
 * memory. */
sophia_json *gong_call_doc(const sophia_host *h, const gong_rules *r,
                           const char *id, const sophia_json *meta,
                           const sophia_json *tr, const char *account,
                           const char *opp);

/* What the call's deal_risk alert says, as a fingerprint independent of
 * order: its risk phrases and competitors; 0 when there are none. */
uint64_t gong_risk_fp(const sophia_host *h, const sophia_json *doc);

/* The call's one-paragraph summary (malloc'd), from its document. */
char *gong_summary(const sophia_host *h, const sophia_json *doc);

#endif
