/*
 * slack.h - what the slack processor's two files share: slack.c reads
 * events, decides the effects and stages one slack_change per message;
 * slack_state.c owns the committed state (channels, threads, accounts,
 * which rules alerted on which message), applies a committed change to
 * it and carries it across a reload. Every table is bounded by an option
 * (max_channels, max_threads, max_messages; accounts by the channel map),
 * and a channel costs a few hundred bytes until it is busy: its recent
 * timestamps grow with its traffic, its mention counts with its mentions.
 */
#ifndef SOPHIA_SLACK_H
#define SOPHIA_SLACK_H

#include <sophia/sdk.h>

#include <regex.h>
#include <stdint.h>

#include "../proc_util.h"

#define SLACK_RING 1024        /* message timestamps kept per channel, at most */
#define SLACK_MENTIONED 1000   /* mentioned users counted per channel */
#define SLACK_THREAD_USERS 16  /* repliers told apart per thread */
#define SLACK_MAX_RULES 63     /* a message's alerted rules are a bit mask */
#define SLACK_DELETED (1ULL << 63) /* ... whose top bit marks it deleted */

typedef struct slack_rule {
    char *severity;
    char *pattern;
    regex_t re;
    int compiled;
} slack_rule;

typedef struct slack_channel {
    int64_t messages, edits, mentions, app_mentions, deleted;
    double last_ts;
    double *ts;          /* ring of recent Slack times (rate_window) */
    uint32_t cap, head, n;
    pu_table *mentioned; /* user -> (intptr_t) count; at the first mention */
    double fired[];      /* per alert rule: Slack time it last alerted */
} slack_channel;

typedef struct slack_thread {
    int64_t replies;
    uint64_t users[SLACK_THREAD_USERS]; /* repliers' fingerprints */
    uint32_t nusers;
    int resolved;
    pu_gate gate; /* its slack_thread alert */
} slack_thread;

typedef struct slack_account {
    int64_t messages, alerts, keywords;
} slack_account;

typedef struct slack_state {
    const sophia_host *host;
    sophia_self *self;
    char *prefix, *dashboard, *thread_severity;
    double ttl, window, cooldown;
    int64_t thread_replies, thread_participants;
    slack_rule *rules;
    size_t nrules;
    regex_t amount_re, pref_re, resolve_re;
    int amount_ok, pref_ok, resolve_ok;
    pu_table channels;     /* channel id -> slack_channel, as committed */
    pu_table threads;      /* "<channel> <thread_ts>" -> slack_thread */
    pu_table alerted;      /* "<channel> <ts>" -> (uintptr_t) rule mask,
                            * or SLACK_DELETED */
    pu_table chan_account; /* channel id -> account name (the YAML map) */
    pu_table accounts;     /* account name -> slack_account */
    pu_seen seen;          /* message identities committed */
} slack_state;

enum { MSG_PLAIN, MSG_EDIT, MSG_APP_MENTION, MSG_DELETE };
enum { TH_NONE, TH_PUT, TH_DEL };

/* What one message changes once its event commits (host->stage). The
 * strings point into buf; msg_key, thread_key and account may be NULL. */
typedef struct slack_change {
    int kind;        /* MSG_* */
    double t;        /* Slack time */
    uint64_t fired;  /* rules that alerted: their cooldown starts at t */
    uint64_t mask;   /* rules alerted on msg_key, all told (0: none) */
    int64_t keywords, alerts; /* for the channel's account */
    int thread_op;   /* TH_* */
    slack_thread thread; /* the thread as it will be (TH_PUT) */
    char *chan, *text, *msg_key, *thread_key, *account;
    char buf[];
} slack_change;

/* A channel's destructor (the channels table's free_val). */
void slack_free_channel(void *p);

/* Applies a committed change (host->stage's apply) and frees it. */
void slack_apply(void *state, void *change);

/* The channel's rate per minute once a message at Slack time `add` (NAN:
 * none) counts, `last` its newest Slack time by then. */
double slack_rate(const slack_state *st, const slack_channel *c, double add,
                  double last);

/* The committed state as export_state's text, and back. */
char *slack_export(void *state);
int slack_import(void *state, const char *json);

#endif
