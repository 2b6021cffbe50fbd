/*
 * correlate_priv - what the files of the correlators' host share: the
 * dispatch and its reload (correlate.c), their state in Redis
 * (correlate_persist.c) and their figures (correlate_stats.c).
 */
#ifndef SOPHIA_CORRELATE_PRIV_H
#define SOPHIA_CORRELATE_PRIV_H

#include <event2/util.h>
#include <jansson.h>
#include <stdint.h>

#include "event/redis.h"
#include "host/correlate.h"
#include "lib/dict.h"

struct event;

/* An event that came while the instance's state was being read, with
 * the ticket its ack waits on (0: none). */
typedef struct held_event {
    json_t *body;
    char *stream, *id;
    const char *source; /* a static string (stream.h) */
    int64_t received_us;
    uint64_t ticket;
} held_event;

typedef struct corr {
    sophia_instance *inst;
    const sophia_correlator_ops *ops;
    char **streams;
    size_t nstreams;
    int snapshot;          /* its state lives in Redis */
    int per_key;           /* SDK 1.3 export_changes/import_key: by key */
    double every;          /* 1.2: seconds between whole-state writes */
    int64_t next_write_us; /* monotonic */
    int loading;           /* the start-up read has not finished yet */
    int reading;           /* a read of it is out */
    int64_t load_since_us; /* monotonic: the read began (10 s, then empty) */
    char cursor[32];       /* per key: the HSCAN position ("0" first) */
    held_event *held;
    size_t nheld, capheld;
    /* per key: changes not sent yet (field -> corr_change), and the
     * lowest ticket among them; the batch out and its lowest ticket */
    sophia_dict *dirty;
    uint64_t dirty_lo;
    int writing;
    uint64_t out_lo;
    uint64_t observed_at_write; /* 1.2: nothing new since, no snapshot */
    sophia_correlate_stats st;
} corr;

/* A key's change: its state as text, or `del` when it is gone. */
typedef struct corr_change {
    int del;
    size_t len;
    char text[];
} corr_change;

struct sophia_correlate {
    corr *v;
    size_t n;
    struct event_base *base;
    struct event *tick;
    struct event *flush_ev; /* the end of the turn: one pipeline */
    sophia_redis *redis;    /* NULL: nothing persisted */
    char *redis_url;
    char node[128];
    int64_t started_us;
    size_t writes_out; /* writes not answered yet */
    uint64_t seq;      /* the last ticket handed out */
    uint64_t durable;  /* the last reported to durable_fn */
    sophia_correlate_durable_fn durable_fn;
    void *durable_arg;
    int closing;
};

corr *corr_find(sophia_correlate *k, const char *instance);
int corr_can_export(const corr *c);
int corr_can_import(const corr *c);
void corr_import_text(corr *c, const char *json, const char *why);
/* The held events, observed in order: the state is in (or will not come). */
void corr_loaded(sophia_correlate *k, corr *c);

/* correlate_persist.c */
/* Starts the plugin's change tracking (per key), with nothing emitted. */
void corr_persist_track(corr *c);
/* What observe (or a timer) changed into c->dirty, tagged with `ticket`
 * (0: none waits), and the flush scheduled: the keys emitted. */
size_t corr_persist_changes(sophia_correlate *k, corr *c, uint64_t ticket);
/* The lowest ticket `c` has not made durable yet, 0 when none. */
uint64_t corr_pending_lo(const corr *c);
/* Reports the tickets now durable to the streams, when that advanced. */
void corr_notify(sophia_correlate *k);
/* The start-up read (whole state, or the next HSCAN page). */
void corr_load(sophia_correlate *k, corr *c);
/* 1.2 correlators: one whole-state snapshot write. */
void corr_write_snapshot(sophia_correlate *k, corr *c);
/* The loop turn's changes of every instance, each instance's in one
 * pipeline (the flush event's callback, also called at shutdown). */
void corr_flush(sophia_correlate *k);
void corr_on_flush(evutil_socket_t fd, short what, void *arg);
void corr_change_free(void *v);

#endif
