/*
 * patterns.h - what the two files of the `patterns` correlator share:
 * the rules as parsed from the `rules` option (patterns_rules.c), and
 * the per-key record a rule keeps (patterns.c).
 *
 * A rule relates events of several streams that carry the same key (a
 * deal, an account) within a window:
 *   - `steps`: in order, each a stream, the key's path in that stream's
 *     events, predicates (`match`), an optional `regresses` (the value at
 *     a path moved back in an ordered list, e.g. a CRM stage) and a
 *     `count` (that many matching events, default 1). The rule fires when
 *     the last step is met within `window` of the first matching event.
 *   - `while` (optional): a state step. An event of its stream that has
 *     the fields its predicates name sets the key's state to whether it
 *     matches; the steps only count while the state holds (a metric over
 *     a threshold while the deal is in negotiation).
 * Firing raises one alert (alert_ex) with every matched event attached,
 * and starts the key's sequence over.
 */
#ifndef PATTERNS_H
#define PATTERNS_H

#include <sophia/sdk.h>
#include <stddef.h>
#include <stdint.h>

#define PAT_MAX_STEPS 8
#define PAT_MAX_PREDS 16
#define PAT_MAX_ITEMS 32

typedef enum pat_op {
    PAT_EQUALS = 1,
    PAT_NOT_EQUALS,
    PAT_CONTAINS, /* a string containing one of the items, any case */
    PAT_IN,
    PAT_GT,
    PAT_GTE,
    PAT_LT,
    PAT_LTE,
    PAT_EXISTS
} pat_op;

typedef struct pat_pred {
    char *path; /* dotted; `*` walks every element of an array */
    pat_op op;
    char *items[PAT_MAX_ITEMS]; /* text operands (equals/in/contains) */
    size_t nitems;
    double num;  /* gt/gte/lt/lte */
    int exists;  /* exists: true/false */
} pat_pred;

typedef struct pat_step {
    char *stream;
    char *key; /* dotted path of the key in this stream's events */
    pat_pred preds[PAT_MAX_PREDS];
    size_t npreds;
    size_t count;        /* matching events needed, >= 1 */
    char *regress_path;  /* NULL: no regression test */
    char *order[PAT_MAX_ITEMS];
    size_t norder;
} pat_step;

typedef struct pat_rule {
    char *name;
    char *severity;
    char *message;
    char *topic;        /* an extra topic for the alert, or NULL */
    double window_s;    /* steps must all fall inside it */
    double keep_s;      /* a key idle this long is forgotten */
    pat_step steps[PAT_MAX_STEPS];
    size_t nsteps;
    pat_step when;      /* the `while` state step */
    int has_when;
} pat_rule;

/* Parses the rules option (JSON text of a YAML sequence). 0, or -1 with
 * a message naming the rule and what is wrong in `why`. */
int pat_rules_parse(const sophia_host *h, const char *json, pat_rule **out,
                    size_t *n, char *why, size_t whylen);
void pat_rules_free(pat_rule *r, size_t n);

/* Whether `ev` has a value at every predicate's path (a `while` state
 * changes only on events that speak of it). */
int pat_has_fields(const sophia_host *h, const pat_step *s,
                   const sophia_json *ev);
/* Whether `ev` meets every predicate of `s`. */
int pat_match(const sophia_host *h, const pat_step *s, const sophia_json *ev);
/* The key of `ev` under `s` as text in buf (strings as they are, numbers
 * printed), or NULL when absent or not a scalar. */
const char *pat_key(const sophia_host *h, const pat_step *s,
                    const sophia_json *ev, char *buf, size_t n);
/* The index of the value at s->regress_path in s->order, or -1. */
int pat_order_of(const sophia_host *h, const pat_step *s,
                 const sophia_json *ev);

#endif
