/*
 * proc_util.h - small helpers the bundled processors share: string
 * duplication, JSON building that tolerates allocation failure, a bounded
 * string-keyed table for per-instance state, and the SDK 1.1 staging
 * helpers every processor uses for its own state.
 *
 * Header-only (static inline) so each plugin stays one self-contained .so
 * that depends on sdk.h and libc alone. The table is deliberately simple:
 * chained buckets (a power of two that grows with the entries) plus
 * insertion-order eviction once `max` entries are held (pu_table_touch
 * makes it least recently used), so a processor fed an unbounded
 * stream of ids (calls, channels, deals) keeps bounded memory. Its bucket
 * hash is SipHash-1-3 keyed with a per-table random key (getrandom):
 * keys come from peers (channel ids, deal ids, message ids), and with an
 * unkeyed hash a peer could put them all in one bucket. The key lives in
 * the table, not in a static: a plugin built from several .c files has
 * one copy of each static per file, and a table filled in one file must
 * hash the same in the others. pu_fnv stays
 * unkeyed for fingerprints that must be the same in every process (they
 * are exported across a reload).
 *
 * State and the verdict (SDK 1.1, issue 17): a processor never changes its
 * own state inside process(). It reads the committed state, computes the
 * new values, and hands them to host->stage; the host applies them when
 * the event's effects commit and discards them otherwise (RETRY, ERROR, an
 * effect refused). pu_require_stage is the init-time check; pu_seen is a
 * bounded "already applied" set whose additions are staged that way.
 *
 * Alerts (issue 19): pu_gate decides whether an alert about one condition
 * (a call's risk, a Slack thread) fires, stays quiet as a repeat, is held
 * back by a cooldown, or resolves. The gate is a plain value the
 * processor keeps in its committed state: process() calls
 * pu_gate_decide on the committed gate, raises what it says through
 * pu_alert, and stages pu_gate_next's value with the rest of the event's
 * change, so a gate moves only when the alert it describes took effect
 * (with stage_undoable, the change keeps the gate's old value for undo).
 */
#ifndef SOPHIA_PROC_UTIL_H
#define SOPHIA_PROC_UTIL_H

#include <sophia/sdk.h>

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static inline char *pu_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

/* json_set that also accepts a NULL value (allocation failure upstream). */
static inline int pu_set(const sophia_host *h, sophia_json *obj,
                         const char *key, sophia_json *v)
{
    if (!obj || !v) {
        if (v)
            h->json_free(v);
        return SOPHIA_ENOMEM;
    }
    return h->json_set(obj, key, v);
}

static inline int pu_set_str(const sophia_host *h, sophia_json *obj,
                             const char *key, const char *s)
{
    return s ? pu_set(h, obj, key, h->json_str(s)) : 0;
}

/* The string at `path`, or NULL. */
static inline const char *pu_str(const sophia_host *h, const sophia_json *v,
                                 const char *path)
{
    return h->json_string(h->json_get(v, path));
}

/* Case-insensitive substring search. */
static inline const char *pu_strcasestr(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    if (!n)
        return hay;
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return NULL;
}

/* FNV-1a: unkeyed, the same in every process; for fingerprints only. */
static inline uint64_t pu_fnv(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* The per-process SipHash key: from getrandom, else (no entropy yet, a
 * seccomp filter) from the clock, pid and an address, which still keeps a
 * remote peer from predicting it. Set once; the loop thread is the only
 * caller. */
static inline const uint64_t *pu_seed(void)
{
    static uint64_t key[2];
    static int ready;
    if (!ready) {
        if (getrandom(key, sizeof(key), GRND_NONBLOCK) != (ssize_t)sizeof(key)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^
                     (uint64_t)(uintptr_t)&ready;
            key[1] = (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 32);
        }
        ready = 1;
    }
    return key;
}

#define PU_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define PU_SIPROUND                                                           \
    do {                                                                      \
        v0 += v1; v1 = PU_ROTL(v1, 13); v1 ^= v0; v0 = PU_ROTL(v0, 32);       \
        v2 += v3; v3 = PU_ROTL(v3, 16); v3 ^= v2;                             \
        v0 += v3; v3 = PU_ROTL(v3, 21); v3 ^= v0;                             \
        v2 += v1; v1 = PU_ROTL(v1, 17); v1 ^= v2; v2 = PU_ROTL(v2, 32);       \
    } while (0)

/* SipHash-1-3 of s[0..len) under key k. */
static inline uint64_t pu_siphash(const uint64_t *k, const void *s, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k[0], v1 = 0x646f72616e646f6dULL ^ k[1],
             v2 = 0x6c7967656e657261ULL ^ k[0], v3 = 0x7465646279746573ULL ^ k[1];
    const unsigned char *p = s;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8); /* little-endian hosts; any order is a hash */
        v3 ^= m;
        PU_SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    PU_SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    PU_SIPROUND;
    PU_SIPROUND;
    PU_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* A random SipHash key into k: getrandom, else pu_seed mixed with the
 * address of k (distinct per table). */
static inline void pu_random_key(uint64_t k[2])
{
    if (getrandom(k, 2 * sizeof(*k), GRND_NONBLOCK) != (ssize_t)(2 * sizeof(*k))) {
        const uint64_t *s = pu_seed();
        k[0] = s[0] ^ (uint64_t)(uintptr_t)k;
        k[1] = s[1];
    }
}

/* ---------------------------------------------------- bounded table */

typedef struct pu_entry {
    char *key;
    void *val;
    struct pu_entry *next;      /* bucket chain */
    struct pu_entry *older, *newer; /* insertion order */
} pu_entry;

typedef struct pu_table {
    pu_entry **b;
    size_t nb, nb_max, n, max; /* buckets now, at most (a power of two) */
    uint64_t key[2];           /* the bucket hash's SipHash key */
    pu_entry *oldest, *newest;
    void (*free_val)(void *);
} pu_table;

static inline int pu_table_init(pu_table *t, size_t max,
                                void (*free_val)(void *))
{
    memset(t, 0, sizeof(*t));
    t->nb_max = 16;
    while (t->nb_max < max && t->nb_max < (1u << 20))
        t->nb_max <<= 1;
    t->nb = 16; /* grows (pu_table_grow) as entries come */
    pu_random_key(t->key);
    t->b = calloc(t->nb, sizeof(*t->b));
    t->max = max ? max : 1;
    t->free_val = free_val;
    return t->b ? 0 : SOPHIA_ENOMEM;
}

static inline pu_entry **pu_slot(pu_table *t, const char *key)
{
    pu_entry **p = &t->b[pu_siphash(t->key, key, strlen(key)) & (t->nb - 1)];
    while (*p && strcmp((*p)->key, key))
        p = &(*p)->next;
    return p;
}

static inline void *pu_table_get(pu_table *t, const char *key)
{
    pu_entry *e = *pu_slot(t, key);
    return e ? e->val : NULL;
}

static inline void pu_table_del(pu_table *t, const char *key)
{
    pu_entry **p = pu_slot(t, key), *e = *p;
    if (!e)
        return;
    *p = e->next;
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        t->newest = e->older;
    if (t->free_val)
        t->free_val(e->val);
    free(e->key);
    free(e);
    t->n--;
}

/* Doubles the buckets (at most nb_max) once entries outnumber them, so
 * chains stay short while a small table stays small. On no memory it
 * keeps the old buckets: longer chains, still correct. */
static inline void pu_table_grow(pu_table *t)
{
    if (t->n <= t->nb || t->nb >= t->nb_max)
        return;
    size_t nb = t->nb * 2;
    pu_entry **b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (pu_entry *e = t->oldest; e; e = e->newer) {
        pu_entry **p = &b[pu_siphash(t->key, e->key, strlen(e->key)) & (nb - 1)];
        e->next = *p;
        *p = e;
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

/* Inserts (or replaces) and takes `val`; evicts the oldest past max. */
static inline int pu_table_put(pu_table *t, const char *key, void *val)
{
    pu_entry **p = pu_slot(t, key);
    if (*p) {
        if (t->free_val && (*p)->val != val)
            t->free_val((*p)->val);
        (*p)->val = val;
        return 0;
    }
    pu_entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->key = pu_strdup(key))) {
        free(e);
        if (t->free_val)
            t->free_val(val);
        return SOPHIA_ENOMEM;
    }
    e->val = val;
    *p = e;
    e->older = t->newest;
    if (t->newest)
        t->newest->newer = e;
    else
        t->oldest = e;
    t->newest = e;
    if (++t->n > t->max)
        pu_table_del(t, t->oldest->key);
    pu_table_grow(t);
    return 0;
}

/* Makes `key`'s entry the newest, so eviction takes the least recently
 * touched (LRU) rather than the first inserted; no-op when absent. */
static inline void pu_table_touch(pu_table *t, const char *key)
{
    pu_entry *e = *pu_slot(t, key);
    if (!e || e == t->newest)
        return;
    if (e->older)
        e->older->newer = e->newer;
    else
        t->oldest = e->newer;
    e->newer->older = e->older;
    e->older = t->newest;
    e->newer = NULL;
    t->newest->newer = e;
    t->newest = e;
}

static inline void pu_table_free(pu_table *t)
{
    while (t->oldest)
        pu_table_del(t, t->oldest->key);
    free(t->b);
    t->b = NULL;
}

/* ------------------------------------------------ state and the verdict */

/* init's check that the host can stage state changes (SDK 1.1); logs why
 * not and returns SOPHIA_EABI, or 0. */
/* export_state's text: `doc` dumped when building it went well (rc 0),
 * else NULL; doc is freed either way. The host frees the text with
 * host->free (SDK 1.1), so json_dump's text is handed over as it is. */
static inline char *pu_export_text(const sophia_host *h, sophia_json *doc,
                                   int rc)
{
    char *text = rc ? NULL : h->json_dump(doc);
    h->json_free(doc);
    return text;
}

static inline int pu_require_stage(const sophia_host *h, sophia_self *self,
                                   const char *plugin)
{
    if (h && h->abi_major == SOPHIA_SDK_VERSION_MAJOR &&
        SOPHIA_HOST_HAS(h, stage) && h->stage)
        return 0;
    if (h && h->log)
        h->log(self, SOPHIA_LOG_ERROR, "%s needs a host with SDK 1.1 "
               "(host->stage: its state moves with the event's verdict); "
               "this host provides SDK %u.%u", plugin, (unsigned)h->abi_major,
               (unsigned)h->abi_minor);
    return SOPHIA_EABI;
}

/* ------------------------------------------------ seen set (redelivery) */

/* The ids of the last `cap` events (or changes) that committed, so a
 * redelivered one is recognised. Each id is kept as a 64-bit SipHash
 * fingerprint under a key of the set's own (random per instance, carried
 * by export so the fingerprints stay valid in the instance a reload hands
 * them to): a FIFO ring of fingerprints plus an open-addressing index
 * (linear probing, load <= 1/2, backward-shift deletion), so remembering
 * a point costs no allocation - metrics does it per point. A peer cannot
 * aim ids at one slot without the key; two ids sharing a fingerprint
 * (2^-64 for a pair) would make the second look like a redelivery. */
typedef struct pu_seen {
    uint64_t key[2];
    uint64_t *ring;  /* oldest at head */
    uint64_t *slots; /* 0 = empty */
    size_t cap, head, n, mask;
} pu_seen;

static inline int pu_seen_init(pu_seen *s, size_t cap)
{
    memset(s, 0, sizeof(*s));
    s->cap = cap ? cap : 1;
    size_t nslots = 4;
    while (nslots < 2 * s->cap)
        nslots <<= 1;
    s->mask = nslots - 1;
    pu_random_key(s->key);
    s->ring = malloc(s->cap * sizeof(*s->ring));
    s->slots = calloc(nslots, sizeof(*s->slots));
    return s->ring && s->slots ? 0 : SOPHIA_ENOMEM;
}

static inline void pu_seen_free(pu_seen *s)
{
    free(s->ring);
    free(s->slots);
    s->ring = s->slots = NULL;
}

static inline uint64_t pu_seen_fp(const pu_seen *s, const char *id)
{
    uint64_t fp = pu_siphash(s->key, id, strlen(id));
    return fp ? fp : 1; /* 0 marks an empty slot */
}

/* The slot holding fp, or the empty slot where it would go. */
static inline size_t pu_seen_slot(const pu_seen *s, uint64_t fp)
{
    size_t i = fp & s->mask;
    while (s->slots[i] && s->slots[i] != fp)
        i = (i + 1) & s->mask;
    return i;
}

/* The set is megabytes (metrics' default 100,000 ids: 2 MiB of slots)
 * and each id lands on a random line, which a loop idle between POSTs
 * finds evicted: a look-up is a miss to memory. A caller that can do
 * other work before it looks fp up asks for the line first. */
static inline void pu_seen_prefetch(const pu_seen *s, uint64_t fp)
{
    if (s->slots)
        __builtin_prefetch(&s->slots[fp & s->mask]);
}

static inline int pu_seen_has(const pu_seen *s, const char *id)
{
    return s->slots && s->slots[pu_seen_slot(s, pu_seen_fp(s, id))] != 0;
}

/* Removes fp, shifting later entries of its probe run back. */
static inline void pu_seen_del(pu_seen *s, uint64_t fp)
{
    size_t i = pu_seen_slot(s, fp), j = i;
    if (!s->slots[i])
        return;
    for (;;) {
        j = (j + 1) & s->mask;
        if (!s->slots[j])
            break;
        size_t k = s->slots[j] & s->mask; /* where it wants to be */
        if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i] = 0;
}

#define PU_SEEN_AHEAD 8 /* adds between an eviction's prefetch and it */

/* Remembers fp, forgetting the oldest past cap. */
static inline void pu_seen_add_fp(pu_seen *s, uint64_t fp)
{
    size_t i = pu_seen_slot(s, fp);
    if (s->slots[i])
        return;
    if (s->n == s->cap) {
        pu_seen_del(s, s->ring[s->head]);
        s->head = (s->head + 1) % s->cap;
        s->n--;
        i = pu_seen_slot(s, fp);
    }
    s->slots[i] = fp;
    s->ring[(s->head + s->n++) % s->cap] = fp;
    /* which fingerprint an add evicts is known in advance: the ring's
     * order. Its line is asked for PU_SEEN_AHEAD adds early, so that
     * the eviction does not wait for memory as a look-up does. */
    if (s->n == s->cap)
        pu_seen_prefetch(s, s->ring[(s->head + PU_SEEN_AHEAD) % s->cap]);
}

/* A fingerprint remembered with its event (pu_seen_stage). */
typedef struct pu_seen_add {
    pu_seen *s;
    uint64_t fp;
    int added;       /* fp was new */
    uint64_t evicted; /* the oldest, forgotten to make room, or 0 */
} pu_seen_add;

static inline void pu_seen_apply(void *state, void *change)
{
    pu_seen_add *a = change;
    pu_seen *s = a->s;
    (void)state;
    a->added = !s->slots[pu_seen_slot(s, a->fp)];
    a->evicted = a->added && s->n == s->cap ? s->ring[s->head] : 0;
    pu_seen_add_fp(s, a->fp);
}

/* Undone newest first (sdk.h stage_undoable), so fp is the ring's newest
 * entry and the evicted one goes back in front of the oldest. */
static inline void pu_seen_undo(void *state, void *change)
{
    pu_seen_add *a = change;
    pu_seen *s = a->s;
    (void)state;
    if (!a->added)
        return;
    pu_seen_del(s, a->fp);
    s->n--;
    if (a->evicted) {
        s->head = (s->head + s->cap - 1) % s->cap;
        s->ring[s->head] = a->evicted;
        s->n++;
        s->slots[pu_seen_slot(s, a->evicted)] = a->evicted;
    }
}

static inline void pu_seen_apply_once(void *state, void *change)
{
    pu_seen_apply(state, change);
    free(change);
}

/* Remembers `id` with the event: at once, undone unless it commits (so a
 * stream need not wait for this event's effects), or on a host without
 * stage_undoable at the commit. 0 or an error (then the event must not go
 * OK: its redelivery would not be recognised). */
static inline int pu_seen_stage(const sophia_host *h, sophia_ctx *ctx,
                                pu_seen *s, const char *id)
{
    pu_seen_add *a = calloc(1, sizeof(*a));
    if (!a)
        return SOPHIA_ENOMEM;
    a->s = s;
    a->fp = pu_seen_fp(s, id);
    if (SOPHIA_HOST_HAS(h, stage_undoable))
        return h->stage_undoable(ctx, pu_seen_apply, pu_seen_undo, free, a);
    return h->stage(ctx, pu_seen_apply_once, free, a);
}

/* {"key":"<32 hex>","fp":["<16 hex>", oldest first]}; NULL on no memory.
 * Hex strings: the SDK reads numbers as doubles. */
static inline sophia_json *pu_seen_export(const sophia_host *h,
                                          const pu_seen *s)
{
    char buf[40];
    sophia_json *o = h->json_object(), *a = h->json_array();
    for (size_t i = 0; a && i < s->n; i++) {
        snprintf(buf, sizeof(buf), "%016llx",
                 (unsigned long long)s->ring[(s->head + i) % s->cap]);
        if (h->json_append(a, h->json_str(buf))) {
            h->json_free(a);
            a = NULL;
        }
    }
    snprintf(buf, sizeof(buf), "%016llx%016llx", (unsigned long long)s->key[0],
             (unsigned long long)s->key[1]);
    int rc = pu_set_str(h, o, "key", buf);
    if (rc || pu_set(h, o, "fp", a)) {
        if (!rc)
            a = NULL; /* taken by the failed set */
        h->json_free(a);
        h->json_free(o);
        return NULL;
    }
    return o;
}

static inline int pu_hex64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || strlen(s) != 16)
        return -1;
    *out = strtoull(s, &end, 16);
    return *end ? -1 : 0;
}

/* Adopts an exported set (its key and fingerprints) into an empty one;
 * NULL `o` (an export without one) leaves it empty. */
static inline int pu_seen_import(const sophia_host *h, pu_seen *s,
                                 const sophia_json *o)
{
    const char *key = pu_str(h, o, "key");
    const sophia_json *a = h->json_get(o, "fp");
    char half[17];
    if (!o)
        return 0;
    if (!key || strlen(key) != 32 || s->n)
        return SOPHIA_EPARSE;
    snprintf(half, sizeof(half), "%.16s", key);
    if (pu_hex64(half, &s->key[0]) || pu_hex64(key + 16, &s->key[1]))
        return SOPHIA_EPARSE;
    for (size_t i = 0; i < h->json_size(a); i++) {
        uint64_t fp;
        if (pu_hex64(h->json_string(h->json_at(a, i)), &fp) || !fp)
            return SOPHIA_EPARSE;
        pu_seen_add_fp(s, fp);
    }
    return 0;
}

/* ------------------------------------------------------- alert gate */

/* One alertable condition's committed gate. fp fingerprints what the
 * firing alert said (0: nothing firing); fired is when it last fired, in
 * the processor's own clock (event time, so a replay decides the same;
 * 0: never). */
typedef struct pu_gate {
    uint64_t fp;
    double fired;
} pu_gate;

enum {
    PU_GATE_QUIET,   /* the condition does not hold, nothing firing */
    PU_GATE_FIRE,    /* raise (or update) the alert */
    PU_GATE_SAME,    /* already firing with this content: say nothing */
    PU_GATE_COOLING, /* new content within the cooldown: held back */
    PU_GATE_RESOLVE  /* it was firing and ended: resolve */
};

/* What to do about a condition whose content now fingerprints to `fp`
 * (0: it does not hold) at time `t`: a condition fires once; while it
 * fires, only different content fires again (an update under the same
 * alert_id), and not within `cooldown` seconds of the last firing. */
static inline int pu_gate_decide(const pu_gate *g, uint64_t fp, double t,
                                 double cooldown)
{
    if (!fp)
        return g->fp ? PU_GATE_RESOLVE : PU_GATE_QUIET;
    if (g->fp == fp)
        return PU_GATE_SAME;
    if (g->fired != 0 && fabs(t - g->fired) < cooldown)
        return PU_GATE_COOLING;
    return PU_GATE_FIRE;
}

/* The gate once decision `d` (about fp at t) took effect: what the
 * processor stages. */
static inline pu_gate pu_gate_next(pu_gate g, int d, uint64_t fp, double t)
{
    if (d == PU_GATE_FIRE) {
        g.fp = fp;
        g.fired = t;
    } else if (d == PU_GATE_RESOLVE) {
        g.fp = 0;
    }
    return g;
}

/* Raises (resolve 0) or resolves (1) alert `alert_id` through alert_ex;
 * takes `data`. On a host without alert_ex it raises through alert() and
 * cannot resolve (0, nothing queued). Resolve with the severity raised. */
static inline int pu_alert(const sophia_host *h, sophia_ctx *ctx,
                           const char *type, const char *severity,
                           const char *message, const char *alert_id,
                           int resolve, sophia_json *data)
{
    if (SOPHIA_HOST_HAS(h, alert_ex) && h->alert_ex) {
        sophia_alert a = {.struct_size = sizeof(a), .alert_type = type,
                          .severity = severity, .message = message,
                          .alert_id = alert_id, .resolve = resolve};
        return h->alert_ex(ctx, &a, data);
    }
    if (resolve) {
        h->json_free(data);
        return 0;
    }
    return h->alert(ctx, type, severity, message, data);
}

/* {"fp":"<16 hex>","fired":t} / back; NULL on no memory. */
static inline sophia_json *pu_gate_export(const sophia_host *h,
                                          const pu_gate *g)
{
    char buf[20];
    sophia_json *o = h->json_object();
    snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)g->fp);
    if (pu_set_str(h, o, "fp", buf) || pu_set(h, o, "fired", h->json_num(g->fired))) {
        h->json_free(o);
        return NULL;
    }
    return o;
}

/* NULL `o` (an export from before gates) leaves g closed. */
static inline int pu_gate_import(const sophia_host *h, pu_gate *g,
                                 const sophia_json *o)
{
    uint64_t fp = 0;
    if (!o)
        return 0;
    if (pu_hex64(pu_str(h, o, "fp"), &fp))
        return SOPHIA_EPARSE;
    g->fp = fp;
    g->fired = h->json_number(h->json_get(o, "fired"), 0);
    return 0;
}

/* A host with json_parse (import_state needs it). */
static inline int pu_has_parse(const sophia_host *h)
{
    return SOPHIA_HOST_HAS(h, json_parse) && h->json_parse;
}

#endif
