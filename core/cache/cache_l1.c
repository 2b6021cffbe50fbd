/*
 * cache_l1 - see cache_l1.h.
 *
 * Policy: S3-FIFO (Yang et al., SOSP'23) rather than W-TinyLFU. Both beat
 * LRU on skewed traffic and resist scans; S3-FIFO wins here on the hit path:
 * a hit only bumps a 2-bit counter in the entry, with no list surgery and no
 * sketch update, which is what a loop-thread cache answering most requests
 * wants. W-TinyLFU needs a count-min sketch increment (several scattered
 * cache lines) and an LRU move on every hit, plus a tuned window size and
 * sketch aging. S3-FIFO's quality comes from three queues:
 *  - small: a probationary FIFO holding ~10% of the capacity (entries and
 *    bytes). New keys enter here. When it is over its share, its oldest entry
 *    moves to main if it was read since insertion, otherwise it leaves and
 *    only its hash goes to the ghost. One-hit wonders (scans) therefore pass
 *    through 10% of the cache and never disturb the rest.
 *  - main: a FIFO with "second chance": the oldest entry is reinserted at the
 *    head with its counter decremented while the counter is non-zero.
 *  - ghost: recently evicted-from-small hashes. A key that comes back while
 *    still remembered skips probation and enters main directly. The ghost is
 *    a 4-way set-associative table of (hash, sequence) where "in the FIFO"
 *    means "inserted within the last <entry count> insertions": no list, no
 *    deletions to chase, at most 64 bytes per cached entry.
 * Both bounds are global; eviction continues until the cache is within both.
 * The entry just written is never the victim of its own put.
 *
 * Layout: one allocation per entry (header, tag links, key, value) so a hit
 * touches the hash slot and one block. The index is our own open-addressing
 * table with linear probing and backward-shift deletion (no tombstones, so
 * probe lengths do not rot under churn), keyed by sophia_hash (hash.h:
 * SipHash under the process's random key, so keys chosen by clients
 * cannot force long probes). Tags live in a second table of the same kind, each tag
 * node owning a list of (entry, tag) links, so invalidating a tag walks only
 * the entries that carry it and removing an entry unlinks each tag in O(1).
 *
 * For cache warming each entry also keeps an access count that is halved
 * every epoch (8 x entry-count accesses); the halving is applied lazily when
 * an entry is next touched or ranked, so there is never a pause to age all
 * counters.
 */
#include "cache/cache_l1.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/hash.h"

#define L1_FREQ_MAX 3    /* S3-FIFO's 2-bit counter */
#define L1_GHOST_WAYS 4  /* ghost set associativity */
#define L1_NOT_FOUND SIZE_MAX
#define L1_REUSE_SLACK 64 /* bytes an overwrite in place may leave unused */

enum { L1_SMALL, L1_MAIN };
enum { L1_EVICTED, L1_EXPIRED, L1_INVALIDATED, L1_DROPPED };

/* First member of entries and tag nodes, so one table type indexes both. */
typedef struct l1_hkey {
    uint64_t hash;
    const char *key;
    size_t klen;
} l1_hkey;

typedef struct l1_tag l1_tag;
typedef struct l1_entry l1_entry;

/* One (entry, tag) pair, on the tag's list. */
typedef struct l1_link {
    l1_tag *tag;
    l1_entry *entry;
    struct l1_link *prev, *next;
} l1_link;

struct l1_tag {
    l1_hkey hk;
    l1_link *head;
    size_t count;
    char name[];
};

struct l1_entry {
    l1_hkey hk;
    l1_entry *prev, *next; /* in its FIFO; head = newest */
    unsigned char *val;
    size_t vlen;
    size_t charge; /* whole allocation, counted against max_bytes */
    int64_t expires_us;
    uint64_t version;
    uint32_t hits;  /* aged access count, for sophia_l1_hottest */
    uint32_t epoch; /* epoch `hits` was last aged to */
    uint8_t freq;   /* S3-FIFO counter, 0..L1_FREQ_MAX */
    uint8_t queue;  /* L1_SMALL or L1_MAIN */
    uint16_t ntags;
    l1_link links[];
};

typedef struct l1_fifo {
    l1_entry *head, *tail;
    size_t count, bytes;
} l1_fifo;

typedef struct l1_slot {
    uint64_t hash;
    void *item; /* NULL = empty */
} l1_slot;

typedef struct l1_table {
    l1_slot *slots;
    size_t mask;
    size_t count;
} l1_table;

typedef struct l1_gslot {
    uint64_t hash;
    uint64_t seq; /* 0 = empty */
} l1_gslot;

struct sophia_l1 {
    l1_table entries;
    l1_table tags;
    l1_fifo small, main;
    l1_gslot *ghost;
    size_t ghost_buckets; /* power of two, or 0 before first use */
    uint64_t ghost_clock;
    size_t max_entries, max_bytes;
    size_t small_max_entries, small_max_bytes;
    sophia_hash_key hkey;
    uint64_t generation;
    uint32_t epoch;
    uint64_t epoch_ticks;
    size_t sweep_pos;
    sophia_l1_stats st; /* counters only; sizes filled on demand */
};

/* ------------------------------------------------------------------ hash */

/* The key is copied into the cache: the hot path reads it from the line
 * it already has. */
static inline uint64_t l1_hash(const sophia_hash_key *k, const char *s,
                               size_t n)
{
    return sophia_hash_keyed(k, s, n);
}

/* ----------------------------------------------------------------- table */

static int tab_init(l1_table *t, size_t cap)
{
    t->slots = calloc(cap, sizeof(*t->slots));
    t->mask = cap - 1;
    t->count = 0;
    return t->slots ? 0 : SOPHIA_ENOMEM;
}

static size_t tab_find(const l1_table *t, uint64_t hash, const char *key,
                       size_t klen)
{
    for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
        const l1_slot *s = &t->slots[i];
        if (!s->item)
            return L1_NOT_FOUND;
        const l1_hkey *hk = s->item;
        if (s->hash == hash && hk->klen == klen &&
            memcmp(hk->key, key, klen) == 0)
            return i;
    }
}

static size_t tab_index_of(const l1_table *t, uint64_t hash, const void *item)
{
    size_t i = hash & t->mask;
    while (t->slots[i].item != item)
        i = (i + 1) & t->mask;
    return i;
}

static void tab_place(l1_slot *slots, size_t mask, uint64_t hash, void *item)
{
    size_t i = hash & mask;
    while (slots[i].item)
        i = (i + 1) & mask;
    slots[i].hash = hash;
    slots[i].item = item;
}

/* Makes room for one more item, keeping the load factor under 0.7. */
static int tab_reserve(l1_table *t)
{
    size_t cap = t->mask + 1;
    if ((t->count + 1) * 10 <= cap * 7)
        return 0;
    l1_slot *ns = calloc(cap * 2, sizeof(*ns));
    if (!ns)
        return SOPHIA_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        if (t->slots[i].item)
            tab_place(ns, cap * 2 - 1, t->slots[i].hash, t->slots[i].item);
    free(t->slots);
    t->slots = ns;
    t->mask = cap * 2 - 1;
    return 0;
}

static void tab_insert(l1_table *t, uint64_t hash, void *item)
{
    tab_place(t->slots, t->mask, hash, item);
    t->count++;
}

/* Backward-shift deletion: pull later members of the probe run into the hole
 * when their home slot allows it, so lookups never need tombstones. */
static void tab_remove_at(l1_table *t, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (!t->slots[j].item)
            break;
        size_t k = t->slots[j].hash & t->mask;
        bool movable = j > i ? (k <= i || k > j) : (k <= i && k > j);
        if (movable) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i].item = NULL;
    t->slots[i].hash = 0;
    t->count--;
}

/* ----------------------------------------------------------------- fifos */

static l1_fifo *fifo_of(sophia_l1 *c, const l1_entry *e)
{
    return e->queue == L1_MAIN ? &c->main : &c->small;
}

static void fifo_push(l1_fifo *q, l1_entry *e)
{
    e->prev = NULL;
    e->next = q->head;
    if (q->head)
        q->head->prev = e;
    else
        q->tail = e;
    q->head = e;
    q->count++;
    q->bytes += e->charge;
}

static void fifo_unlink(l1_fifo *q, l1_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        q->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        q->tail = e->prev;
    q->count--;
    q->bytes -= e->charge;
}

/* Puts `nu` exactly where `old` was (an overwrite keeps its place). */
static void fifo_replace(l1_fifo *q, l1_entry *old, l1_entry *nu)
{
    nu->prev = old->prev;
    nu->next = old->next;
    if (nu->prev)
        nu->prev->next = nu;
    else
        q->head = nu;
    if (nu->next)
        nu->next->prev = nu;
    else
        q->tail = nu;
    q->bytes = q->bytes - old->charge + nu->charge;
}

static void fifo_move(sophia_l1 *c, l1_entry *e, int queue)
{
    fifo_unlink(fifo_of(c, e), e);
    e->queue = (uint8_t)queue;
    fifo_push(fifo_of(c, e), e);
}

/* ----------------------------------------------------------------- ghost */

static size_t l1_count(const sophia_l1 *c)
{
    return c->small.count + c->main.count;
}

/* How many recent evictions the ghost remembers: about main's size. */
static uint64_t ghost_window(const sophia_l1 *c)
{
    size_t n = l1_count(c);
    return n < 16 ? 16 : n;
}

static bool ghost_live(const sophia_l1 *c, const l1_gslot *g, uint64_t win)
{
    return g->seq != 0 && g->seq + win > c->ghost_clock;
}

static void ghost_place(sophia_l1 *c, l1_gslot *tab, size_t nb, l1_gslot gs)
{
    l1_gslot *b = &tab[(gs.hash >> 32 & (nb - 1)) * L1_GHOST_WAYS];
    l1_gslot *victim = &b[0];
    for (int w = 0; w < L1_GHOST_WAYS; w++) {
        if (!ghost_live(c, &b[w], ghost_window(c))) {
            victim = &b[w];
            break;
        }
        if (b[w].seq < victim->seq)
            victim = &b[w];
    }
    *victim = gs;
}

/* Grows the ghost to two slots per remembered hash; failure is harmless. */
static void ghost_fit(sophia_l1 *c)
{
    uint64_t win = ghost_window(c);
    size_t nb = c->ghost_buckets ? c->ghost_buckets : 8;
    while ((uint64_t)nb * L1_GHOST_WAYS < 2 * win)
        nb *= 2;
    if (nb == c->ghost_buckets)
        return;
    l1_gslot *ng = calloc(nb * L1_GHOST_WAYS, sizeof(*ng));
    if (!ng)
        return;
    for (size_t i = 0; i < c->ghost_buckets * L1_GHOST_WAYS; i++)
        if (ghost_live(c, &c->ghost[i], win))
            ghost_place(c, ng, nb, c->ghost[i]);
    free(c->ghost);
    c->ghost = ng;
    c->ghost_buckets = nb;
}

static void ghost_add(sophia_l1 *c, uint64_t hash)
{
    ghost_fit(c);
    if (!c->ghost)
        return;
    l1_gslot gs = {hash, ++c->ghost_clock};
    ghost_place(c, c->ghost, c->ghost_buckets, gs);
}

/* True (and forgets it) when `hash` was evicted recently. */
static bool ghost_take(sophia_l1 *c, uint64_t hash)
{
    if (!c->ghost)
        return false;
    size_t nb = c->ghost_buckets;
    l1_gslot *b = &c->ghost[(hash >> 32 & (nb - 1)) * L1_GHOST_WAYS];
    for (int w = 0; w < L1_GHOST_WAYS; w++) {
        if (b[w].hash == hash && ghost_live(c, &b[w], ghost_window(c))) {
            b[w].seq = 0;
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ tags */

static int tag_link(sophia_l1 *c, l1_link *l, l1_entry *e, const char *name)
{
    size_t n = strlen(name);
    uint64_t h = l1_hash(&c->hkey, name, n);
    size_t i = tab_find(&c->tags, h, name, n);
    l1_tag *t;
    if (i != L1_NOT_FOUND) {
        t = c->tags.slots[i].item;
    } else {
        if (tab_reserve(&c->tags) != 0 || !(t = malloc(sizeof(*t) + n + 1)))
            return SOPHIA_ENOMEM;
        memcpy(t->name, name, n + 1);
        t->hk = (l1_hkey){h, t->name, n};
        t->head = NULL;
        t->count = 0;
        tab_insert(&c->tags, h, t);
    }
    l->tag = t;
    l->entry = e;
    l->prev = NULL;
    l->next = t->head;
    if (t->head)
        t->head->prev = l;
    t->head = l;
    t->count++;
    return 0;
}

/* Tag nodes live exactly as long as some entry carries them. */
static void tag_unlink(sophia_l1 *c, l1_link *l)
{
    l1_tag *t = l->tag;
    if (l->prev)
        l->prev->next = l->next;
    else
        t->head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    if (--t->count == 0) {
        tab_remove_at(&c->tags, tab_index_of(&c->tags, t->hk.hash, t));
        free(t);
    }
}

static void tags_unlink_n(sophia_l1 *c, l1_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tag_unlink(c, &e->links[i]);
}

/* Copies the NULL-terminated list without duplicates. */
static int tags_collect(const char *const *tags, const char **out, size_t *n)
{
    *n = 0;
    for (size_t i = 0; tags && tags[i]; i++) {
        bool dup = false;
        for (size_t j = 0; j < *n && !dup; j++) /* first bytes: no call */
            dup = out[j][0] == tags[i][0] && strcmp(out[j], tags[i]) == 0;
        if (dup)
            continue;
        if (*n == SOPHIA_L1_MAX_TAGS)
            return SOPHIA_EINVAL;
        out[(*n)++] = tags[i];
    }
    return 0;
}

/* --------------------------------------------------------------- entries */

/* a + b clamped to [INT64_MIN, INT64_MAX]. */
static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

int64_t sophia_l1_expiry(int64_t expires_ms, int64_t now_wall_ms,
                         int64_t now_mono_us, int64_t cap_us)
{
    int64_t left = cap_us > 0 ? cap_us : 0, ms, us;
    if (expires_ms) {
        /* Either step overflowing means "further than any cap" or "long
         * past": the sign tells which. */
        if (__builtin_sub_overflow(expires_ms, now_wall_ms, &ms))
            ms = expires_ms > 0 ? INT64_MAX : INT64_MIN;
        if (__builtin_mul_overflow(ms, (int64_t)1000, &us))
            us = ms > 0 ? INT64_MAX : INT64_MIN;
        if (us < left)
            left = us > 0 ? us : 0;
    }
    return sat_add(now_mono_us, left);
}

static bool l1_expired(const l1_entry *e, int64_t now_us)
{
    return e->expires_us != 0 && now_us >= e->expires_us;
}

static size_t entry_val_offset(size_t ntags, size_t klen)
{
    size_t off = sizeof(l1_entry) + ntags * sizeof(l1_link) + klen + 1;
    return (off + 7) & ~(size_t)7;
}

/* Allocation size, or SIZE_MAX when it would overflow. */
static size_t entry_charge(size_t ntags, size_t klen, size_t vlen)
{
    if (klen > SIZE_MAX / 4 || vlen > SIZE_MAX / 4)
        return SIZE_MAX;
    return entry_val_offset(ntags, klen) + vlen;
}

static l1_entry *entry_new(const char *key, size_t klen, uint64_t hash,
                           const void *val, size_t vlen, size_t ntags,
                           size_t charge)
{
    l1_entry *e = malloc(charge);
    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    char *k = (char *)&e->links[ntags];
    memcpy(k, key, klen + 1);
    e->hk = (l1_hkey){hash, k, klen};
    e->val = (unsigned char *)e + entry_val_offset(ntags, klen);
    if (vlen)
        memcpy(e->val, val, vlen);
    e->vlen = vlen;
    e->charge = charge;
    e->ntags = (uint16_t)ntags;
    return e;
}

static int entry_link_tags(sophia_l1 *c, l1_entry *e, const char **tags)
{
    for (size_t i = 0; i < e->ntags; i++) {
        if (tag_link(c, &e->links[i], e, tags[i]) != 0) {
            tags_unlink_n(c, e, i);
            return SOPHIA_ENOMEM;
        }
    }
    return 0;
}

static void entry_remove(sophia_l1 *c, l1_entry *e, int why)
{
    fifo_unlink(fifo_of(c, e), e);
    tags_unlink_n(c, e, e->ntags);
    tab_remove_at(&c->entries, tab_index_of(&c->entries, e->hk.hash, e));
    if (why == L1_EVICTED)
        c->st.evictions++;
    else if (why == L1_EXPIRED)
        c->st.expirations++;
    else if (why == L1_INVALIDATED)
        c->st.invalidations++;
    free(e);
}

/* Applies the halvings of the epochs `e` missed. */
static uint32_t entry_hits(const sophia_l1 *c, const l1_entry *e)
{
    uint32_t age = c->epoch - e->epoch;
    return age >= 32 ? 0 : e->hits >> age;
}

static void entry_touch(sophia_l1 *c, l1_entry *e)
{
    if (e->freq < L1_FREQ_MAX)
        e->freq++;
    e->hits = entry_hits(c, e);
    e->epoch = c->epoch;
    if (e->hits < UINT32_MAX)
        e->hits++;
    if (++c->epoch_ticks >= 8 * (uint64_t)l1_count(c) + 64) {
        c->epoch_ticks = 0;
        c->epoch++;
    }
}

/* -------------------------------------------------------------- eviction */

static bool l1_over(const sophia_l1 *c)
{
    return l1_count(c) > c->max_entries ||
           c->small.bytes + c->main.bytes > c->max_bytes;
}

static bool small_over_share(const sophia_l1 *c)
{
    return c->small.count > c->small_max_entries ||
           c->small.bytes > c->small_max_bytes;
}

/* Oldest probationary entry: graduates if it was read, else leaves and is
 * remembered by hash. False when nothing but `keep` could go. */
static bool evict_small(sophia_l1 *c, l1_entry *keep, int64_t now_us)
{
    l1_entry *e;
    while ((e = c->small.tail) != NULL) {
        if (e == keep) {
            if (c->small.count == 1)
                return false;
            fifo_move(c, e, L1_SMALL);
        } else if (l1_expired(e, now_us)) {
            entry_remove(c, e, L1_EXPIRED);
            return true;
        } else if (e->freq > 0) {
            e->freq = 0;
            fifo_move(c, e, L1_MAIN);
        } else {
            ghost_add(c, e->hk.hash);
            entry_remove(c, e, L1_EVICTED);
            return true;
        }
    }
    return false;
}

/* Oldest main entry: second chance while its counter is non-zero. */
static bool evict_main(sophia_l1 *c, l1_entry *keep, int64_t now_us)
{
    l1_entry *e;
    while ((e = c->main.tail) != NULL) {
        if (e == keep) {
            if (c->main.count == 1)
                return false;
            fifo_move(c, e, L1_MAIN);
        } else if (l1_expired(e, now_us)) {
            entry_remove(c, e, L1_EXPIRED);
            return true;
        } else if (e->freq > 0) {
            e->freq--;
            fifo_move(c, e, L1_MAIN);
        } else {
            entry_remove(c, e, L1_EVICTED);
            return true;
        }
    }
    return false;
}

static bool main_has_victim(const sophia_l1 *c, const l1_entry *keep)
{
    return c->main.count > 1 || (c->main.count == 1 && c->main.head != keep);
}

static bool evict_one(sophia_l1 *c, l1_entry *keep, int64_t now_us)
{
    bool small_first = small_over_share(c) || !main_has_victim(c, keep);
    if (small_first && evict_small(c, keep, now_us))
        return true;
    return evict_main(c, keep, now_us);
}

/* Evicts until both bounds hold; `keep` (the entry just put) is spared. */
static void make_room(sophia_l1 *c, l1_entry *keep, int64_t now_us)
{
    while (l1_over(c) && evict_one(c, keep, now_us))
        ;
}

/* ------------------------------------------------------------------- api */

sophia_l1 *sophia_l1_new(size_t max_entries, size_t max_bytes)
{
    if (max_entries == 0 || max_bytes == 0)
        return NULL;
    sophia_l1 *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (tab_init(&c->entries, 64) != 0 || tab_init(&c->tags, 16) != 0) {
        free(c->entries.slots);
        free(c);
        return NULL;
    }
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->small_max_entries = max_entries / 10 ? max_entries / 10 : 1;
    c->small_max_bytes = max_bytes / 10;
    c->hkey = *sophia_hash_process_key();
    return c;
}

static void l1_drop_all(sophia_l1 *c, int why)
{
    while (c->small.head)
        entry_remove(c, c->small.head, why);
    while (c->main.head)
        entry_remove(c, c->main.head, why);
}

void sophia_l1_free(sophia_l1 *c)
{
    if (!c)
        return;
    l1_drop_all(c, L1_DROPPED);
    free(c->entries.slots);
    free(c->tags.slots);
    free(c->ghost);
    free(c);
}

static void l1_insert_new(sophia_l1 *c, l1_entry *e)
{
    e->queue = ghost_take(c, e->hk.hash) ? L1_MAIN : L1_SMALL;
    fifo_push(fifo_of(c, e), e);
    tab_insert(&c->entries, e->hk.hash, e);
}

/* An overwrite keeps the old entry's queue place and counts as an access. */
static void l1_replace(sophia_l1 *c, size_t slot, l1_entry *old, l1_entry *e)
{
    c->entries.slots[slot].item = e;
    e->queue = old->queue;
    fifo_replace(fifo_of(c, old), old, e);
    e->freq = old->freq < L1_FREQ_MAX ? old->freq + 1 : L1_FREQ_MAX;
    e->hits = old->hits;
    e->epoch = old->epoch;
    tags_unlink_n(c, old, old->ntags);
    free(old);
}

/* True when a put of `charge` bytes with these (deduplicated) tags can
 * overwrite `old` where it is: the same tags in the same order, and an
 * allocation that holds the value without wasting more than a little.
 * A metric's latest value is put again and again under one key with
 * the same tags and a value of nearly the same size: a new entry each
 * time (malloc, hashing and linking each tag, unlinking the old ones,
 * free) was most of an L1 put. */
static bool l1_fits(const l1_entry *old, const char *const *tags,
                    size_t ntags, size_t charge)
{
    if (old->ntags != ntags || charge > old->charge ||
        old->charge - charge > L1_REUSE_SLACK)
        return false;
    for (size_t i = 0; i < ntags; i++)
        if (strcmp(old->links[i].tag->name, tags[i]) != 0)
            return false;
    return true;
}

/* Checks and allocates everything a put needs before touching the cache;
 * *out = old itself when the put can overwrite it in place. */
static int l1_prepare(sophia_l1 *c, const char *key, size_t klen,
                      uint64_t hash, const void *val, size_t len,
                      const char *const *tags, l1_entry *old, l1_entry **out)
{
    const char *uniq[SOPHIA_L1_MAX_TAGS];
    size_t ntags;
    int rc = tags_collect(tags, uniq, &ntags);
    if (rc != 0)
        return rc;
    size_t charge = entry_charge(ntags, klen, len);
    if (charge > c->max_bytes / 8) {
        c->st.rejections++;
        return SOPHIA_ETOOBIG;
    }
    if (old && l1_fits(old, uniq, ntags, charge)) {
        if (len)
            memcpy(old->val, val, len);
        old->vlen = len;
        *out = old;
        return 0;
    }
    if (!old && tab_reserve(&c->entries) != 0)
        return SOPHIA_ENOMEM;
    l1_entry *e = entry_new(key, klen, hash, val, len, ntags, charge);
    if (!e)
        return SOPHIA_ENOMEM;
    if (entry_link_tags(c, e, uniq) != 0) {
        free(e);
        return SOPHIA_ENOMEM;
    }
    *out = e;
    return 0;
}

int sophia_l1_put(sophia_l1 *c, const char *key, const void *val, size_t len,
                  int64_t expires_us, const char *const *tags, int64_t now_us)
{
    if (!c || !key || (len && !val))
        return SOPHIA_EINVAL;
    size_t klen = strlen(key);
    uint64_t h = l1_hash(&c->hkey, key, klen);
    size_t slot = tab_find(&c->entries, h, key, klen);
    l1_entry *old = slot == L1_NOT_FOUND ? NULL : c->entries.slots[slot].item;
    if (old && l1_expired(old, now_us)) {
        entry_remove(c, old, L1_EXPIRED);
        old = NULL;
    }
    l1_entry *e = NULL;
    int rc = l1_prepare(c, key, klen, h, val, len, tags, old, &e);
    if (rc != 0) {
        if (old)
            entry_remove(c, old, L1_INVALIDATED);
        return rc;
    }
    e->expires_us = expires_us;
    e->version = ++c->generation;
    if (e == old) /* overwritten in place: an access, as l1_replace */
        e->freq = e->freq < L1_FREQ_MAX ? e->freq + 1 : L1_FREQ_MAX;
    else if (old)
        l1_replace(c, slot, old, e);
    else
        l1_insert_new(c, e);
    c->st.inserts++;
    make_room(c, e, now_us);
    return 0;
}

int sophia_l1_lookup(sophia_l1 *c, const char *key, int64_t now_us,
                     sophia_l1_hit *out)
{
    if (!c || !key)
        return SOPHIA_EINVAL;
    size_t klen = strlen(key);
    uint64_t h = l1_hash(&c->hkey, key, klen);
    size_t slot = tab_find(&c->entries, h, key, klen);
    if (slot == L1_NOT_FOUND) {
        c->st.misses++;
        return SOPHIA_ENOENT;
    }
    l1_entry *e = c->entries.slots[slot].item;
    if (l1_expired(e, now_us)) {
        entry_remove(c, e, L1_EXPIRED);
        c->st.misses++;
        return SOPHIA_ENOENT;
    }
    entry_touch(c, e);
    c->st.hits++;
    if (out)
        *out = (sophia_l1_hit){e->val, e->vlen, e->expires_us, e->version};
    return 0;
}

int sophia_l1_get(sophia_l1 *c, const char *key, int64_t now_us,
                  const void **val, size_t *len)
{
    sophia_l1_hit hit;
    int rc = sophia_l1_lookup(c, key, now_us, &hit);
    if (rc == 0) {
        if (val)
            *val = hit.val;
        if (len)
            *len = hit.len;
    }
    return rc;
}

int sophia_l1_del(sophia_l1 *c, const char *key)
{
    if (!c || !key)
        return SOPHIA_EINVAL;
    size_t klen = strlen(key);
    uint64_t h = l1_hash(&c->hkey, key, klen);
    size_t slot = tab_find(&c->entries, h, key, klen);
    if (slot == L1_NOT_FOUND)
        return SOPHIA_ENOENT;
    entry_remove(c, c->entries.slots[slot].item, L1_INVALIDATED);
    return 0;
}

size_t sophia_l1_invalidate_tag(sophia_l1 *c, const char *tag)
{
    if (!c || !tag)
        return 0;
    size_t n = strlen(tag);
    size_t slot = tab_find(&c->tags, l1_hash(&c->hkey, tag, n), tag, n);
    if (slot == L1_NOT_FOUND)
        return 0;
    l1_tag *t = c->tags.slots[slot].item;
    /* The node is freed with its last link: count first, never re-read it
     * after the final removal. */
    size_t count = t->count;
    for (size_t i = 0; i < count; i++)
        entry_remove(c, t->head->entry, L1_INVALIDATED);
    return count;
}

void sophia_l1_clear(sophia_l1 *c)
{
    if (c)
        l1_drop_all(c, L1_INVALIDATED);
}

size_t sophia_l1_sweep(sophia_l1 *c, int64_t now_us, size_t budget)
{
    size_t removed = 0;
    for (size_t n = 0; c && n < budget && l1_count(c) > 0; n++) {
        size_t i = c->sweep_pos & c->entries.mask;
        l1_entry *e = c->entries.slots[i].item;
        if (e && l1_expired(e, now_us)) {
            /* Backward shift may pull a neighbour into this slot: look at
             * the same slot again next round. */
            entry_remove(c, e, L1_EXPIRED);
            removed++;
            continue;
        }
        c->sweep_pos = i + 1;
    }
    return removed;
}

/* Min-heap on aged hits, so the root is the weakest of the current top. */
static bool hot_less(const sophia_l1 *c, const l1_entry *a, const l1_entry *b)
{
    return entry_hits(c, a) < entry_hits(c, b);
}

static void hot_sift_down(const sophia_l1 *c, l1_entry **h, size_t n, size_t i)
{
    for (;;) {
        size_t m = i, l = 2 * i + 1, r = l + 1;
        if (l < n && hot_less(c, h[l], h[m]))
            m = l;
        if (r < n && hot_less(c, h[r], h[m]))
            m = r;
        if (m == i)
            return;
        l1_entry *t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static void hot_sift_up(const sophia_l1 *c, l1_entry **h, size_t i)
{
    while (i > 0 && hot_less(c, h[i], h[(i - 1) / 2])) {
        l1_entry *t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

size_t sophia_l1_hottest(sophia_l1 *c, int64_t now_us, const char **keys,
                         size_t max)
{
    if (!c || !keys || max == 0)
        return 0;
    l1_entry **heap = malloc(max * sizeof(*heap));
    if (!heap)
        return 0;
    size_t n = 0;
    for (size_t i = 0; i <= c->entries.mask; i++) {
        l1_entry *e = c->entries.slots[i].item;
        if (!e || l1_expired(e, now_us))
            continue;
        if (n < max) {
            heap[n] = e;
            hot_sift_up(c, heap, n++);
        } else if (hot_less(c, heap[0], e)) {
            heap[0] = e;
            hot_sift_down(c, heap, n, 0);
        }
    }
    /* Pop weakest first into the tail of `keys`: hottest ends up first. */
    for (size_t k = n; k > 0; k--) {
        keys[k - 1] = heap[0]->hk.key;
        heap[0] = heap[k - 1];
        hot_sift_down(c, heap, k - 1, 0);
    }
    free(heap);
    return n;
}

void sophia_l1_get_stats(const sophia_l1 *c, sophia_l1_stats *out)
{
    *out = c->st;
    out->entries = l1_count(c);
    out->bytes = c->small.bytes + c->main.bytes;
    out->max_entries = c->max_entries;
    out->max_bytes = c->max_bytes;
    out->small_entries = c->small.count;
    out->main_entries = c->main.count;
}

uint64_t sophia_l1_generation(const sophia_l1 *c)
{
    return c->generation;
}
