/*
 * cache - see cache.h for the read and write paths.
 *
 * Layout: this file holds versions and strategy choice, the read path
 * (flights), puts, invalidation and the lifecycle; cache_warm.c the
 * write-back glue and warming; cache_stats.c the figures; cache_priv.h
 * what they share.
 *
 * Time: L1 runs on the monotonic clock (sophia_l1 takes `now` from us);
 * L2 and L3 store absolute wall-clock expiries in milliseconds, which
 * survive restarts and are shared between nodes.
 *
 * Per-tier TTLs: cache.l1.ttl, cache.l2.ttl and cache.l3.ttl each cap how
 * long that tier keeps an entry (an unset l2/l3 ttl caps nothing). A put
 * whose ttl is longer than a tier's ttl lives there only the tier's ttl; a
 * put without a ttl gets the longest configured tier ttl, so each tier
 * then keeps it exactly its own ttl. A value promoted into a tier keeps
 * its remaining lifetime, capped by that tier's ttl: the fast tiers hold
 * short-lived copies, the big tiers long-lived ones.
 *
 * Write strategies are resolved when the cache is bound to a plugin set
 * (sophia_cache_bind_plugins, at start and on every reload), not looked up
 * by name on each put: the cache never reaches for the daemon's plugins,
 * and a put costs one prefix match. Until bound, every put writes through.
 */
#include "cache/cache.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sophia/sdk.h>

#include "cache/cache_priv.h"
#include "lib/log.h"
#include "lib/strv.h"
#include "event/clock.h"
#include "event/loop.h"
#include "event/pg_pool.h"

/* ------------------------------------------------------------- helpers */

/* This turn's clocks (sophia_clock), read once by whatever needs both. */
typedef struct now_pair {
    int64_t wall_us, mono_us;
} now_pair;

static now_pair now_of(sophia_cache *c)
{
    sophia_clock_refresh(&c->clock);
    return (now_pair){c->clock.wall_us, c->clock.mono_us};
}

static uint64_t next_version(sophia_cache *c, int64_t wall_us)
{
    uint64_t now = (uint64_t)wall_us;
    c->last_version = now > c->last_version ? now : c->last_version + 1;
    return c->last_version;
}

/* L1's absolute expiry for a wall-clock one, capped at cache.l1.ttl
 * (saturating: see sophia_l1_expiry). */
static int64_t l1_expiry(const sophia_cache *c, int64_t expires_ms,
                         now_pair now)
{
    return sophia_l1_expiry(expires_ms, now.wall_us / 1000, now.mono_us,
                            c->l1_cap_us);
}

/* L2's wall-clock expiry for an entry's, capped at cache.l2.ttl. */
static int64_t l2_expiry(sophia_cache *c, int64_t expires_ms)
{
    return sophia_tier_expiry(expires_ms, c->l2_max_ttl_ms,
                              sophia_clock_wall_us(&c->clock) / 1000);
}

/* Length of the UTF-8 sequence at s (1..4), 0 when it is not one:
 * overlong forms, surrogates and code points past U+10FFFF are refused. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    unsigned cp = c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

int sophia_cache_key_check(const char *key, char *why, size_t why_len)
{
    size_t len;
    return sophia_cache_key_check_len(key, why, why_len, &len);
}

/* ---- a key checked a word at a time: every put's key is checked by
 * the plugin host, and a byte a step was most of the check. A test says
 * only whether some byte of a word is one it looks for, exactly (the
 * borrows of the subtractions only follow a byte that is), and bytes
 * seen twice change no such answer. (A tag, shorter, is checked faster
 * byte by byte: tag_len.) */
#define BYTES_01 0x0101010101010101ULL
#define BYTES_80 0x8080808080808080ULL

static inline uint64_t has_zero(uint64_t w)
{
    return (w - BYTES_01) & ~w & BYTES_80;
}

/* A byte below 0x20, 0x7f, or 0x80 and above (not printable ASCII). */
static inline uint64_t unprintable(uint64_t w)
{
    return (w & BYTES_80) | ((w - 0x20 * BYTES_01) & ~w & BYTES_80) |
           has_zero(w ^ 0x7f * BYTES_01);
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t load32(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

/* 1 when s[0..n), n >= 1, is printable ASCII, read only within those
 * bytes: the words at 0, 8, ... and the one ending at s[n]; under 8
 * bytes one word of two overlapping halves, or of the first, middle and
 * last bytes. */
static int printable(const unsigned char *s, size_t n)
{
    if (n < 4) {
        uint64_t b = s[0] | (uint64_t)s[n / 2] << 8 |
                     (uint64_t)s[n - 1] << 16 | (uint64_t)s[0] << 24;
        return !unprintable(b | b << 32);
    }
    if (n < 8)
        return !unprintable(load32(s) | load32(s + n - 4) << 32);
    uint64_t bad = 0;
    for (size_t i = 0; i + 8 < n; i += 8)
        bad |= unprintable(load64(s + i));
    return !(bad | unprintable(load64(s + n - 8)));
}

int sophia_cache_key_check_len(const char *key, char *why, size_t why_len,
                               size_t *len)
{
    const unsigned char *k = (const unsigned char *)(key ? key : "");
    size_t n = strlen((const char *)k);
    if (n && n <= SOPHIA_CACHE_MAX_KEY && printable(k, n)) {
        *len = n; /* printable ASCII, most keys */
        return 0;
    }
    /* the rest, byte by byte: UTF-8, and what is wrong where */
    size_t i = 0;
    if (!*k) {
        snprintf(why, why_len, "the key is empty");
        return -1;
    }
    while (k[i] && i <= SOPHIA_CACHE_MAX_KEY) {
        /* printable ASCII, most keys: one compare a byte (the plugin
         * host and the cache both check every put's key) */
        while ((unsigned char)(k[i] - 0x20) < 0x5f)
            i++;
        if (!k[i] || i > SOPHIA_CACHE_MAX_KEY)
            break;
        if (k[i] < 0x20 || k[i] == 0x7f) {
            snprintf(why, why_len, "byte %zu is a control byte (0x%02x)", i,
                     k[i]);
            return -1;
        }
        size_t n = utf8_seq(k + i);
        if (!n) {
            snprintf(why, why_len, "byte %zu (0x%02x) is not valid UTF-8", i,
                     k[i]);
            return -1;
        }
        i += n;
    }
    if (i > SOPHIA_CACHE_MAX_KEY) {
        snprintf(why, why_len, "the key is longer than %d bytes",
                 SOPHIA_CACHE_MAX_KEY);
        return -1;
    }
    *len = i;
    return 0;
}

int sophia_cache_ttl_ok(double ttl_s)
{
    return ttl_s > 0 && ttl_s <= SOPHIA_CACHE_MAX_TTL; /* NaN fails both */
}

static int valid_key(const char *key)
{
    char why[8];
    return sophia_cache_key_check(key, why, sizeof(why)) == 0;
}

/* A tag's length, or 0 when it has '\n' or 0x1f (or is empty). One pass
 * with one compare a byte for the usual printable tag: strpbrk and then
 * strlen cost a put about 120 instructions for its two tags (and for
 * tags this short, a strlen and word tests cost more than the loop). */
static size_t tag_len(const char *tag)
{
    const unsigned char *s = (const unsigned char *)tag;
    size_t i = 0;
    for (;; i++) {
        while (s[i] >= 0x20)
            i++;
        if (!s[i])
            return i;
        if (s[i] == '\n' || s[i] == 0x1f)
            return 0;
    }
}

int sophia_cache_tags_measure(const char *const *tags,
                              size_t lens[SOPHIA_L1_MAX_TAGS])
{
    int n = 0;
    for (; tags && tags[n]; n++) {
        size_t l = n < SOPHIA_L1_MAX_TAGS ? tag_len(tags[n]) : 0;
        if (!l || l > CACHE_MAX_TAG)
            return -1;
        lens[n] = l;
    }
    return n;
}

int sophia_cache_tags_ok(const char *const *tags)
{
    size_t lens[SOPHIA_L1_MAX_TAGS];
    return sophia_cache_tags_measure(tags, lens) >= 0;
}

static double since_us(int64_t t0)
{
    return (double)(sophia_now_mono_us() - t0);
}

static void broadcast(const sophia_cache *c, const char *key_or_tag,
                      int is_tag)
{
    if (c->on_inval)
        c->on_inval(c->on_inval_arg, key_or_tag, is_tag);
}

void sophia_cache_on_invalidate(sophia_cache *c, sophia_cache_inval_fn fn,
                                void *arg)
{
    c->on_inval = fn;
    c->on_inval_arg = arg;
}

/* ------------------------------------------------------------ strategy */

/* Index of the longest cache.write.prefixes entry matching key, or
 * nprefixes for cache.write.default. */
static size_t strategy_slot(const sophia_cache *c, const char *key)
{
    size_t best = 0, slot = c->nprefixes;
    for (size_t i = 0; i < c->nprefixes; i++) {
        size_t l = strlen(c->prefixes[i]);
        if (l >= best && !strncmp(key, c->prefixes[i], l)) {
            best = l;
            slot = i;
        }
    }
    return slot;
}

static const char *slot_name(const sophia_cache *c, size_t slot)
{
    return slot < c->nprefixes ? c->prefix_inst[slot] : c->write_def;
}

const char *sophia_cache_strategy_for(const sophia_cache *c, const char *key)
{
    const char *n = slot_name(c, strategy_slot(c, key));
    return n ? n : "write_through (built-in)";
}

static const sophia_instance *strategy_instance(const sophia_plugin_set *set,
                                                const char *name)
{
    if (!name || !set)
        return NULL;
    const sophia_instance *in = sophia_plugin_set_find(set, name);
    if (!in || in->desc->kind != SOPHIA_KIND_WRITE_STRATEGY ||
        !in->desc->write_strategy || !in->desc->write_strategy->plan_put)
        return NULL;
    return in;
}

/* The plan for a key; write-through when no usable strategy is named. */
static void plan_for(sophia_cache *c, const char *key, size_t len,
                     double ttl_s, const char *const *tags, unsigned *sync,
                     unsigned *deferred, unsigned *inval)
{
    *sync = ALL_TIERS;
    *deferred = *inval = 0;
    /* no prefixes (most configurations): the default's slot, no call */
    size_t slot = c->nprefixes ? strategy_slot(c, key) : 0;
    const char *name = slot_name(c, slot);
    const sophia_instance *in = c->resolved[slot];
    if (!in) {
        if (name && !c->warned_strategy++) /* once, not per put */
            sophia_warn("cache", "msg=\"write strategy is not a loaded "
                                 "write_strategy instance, writing through\" "
                                 "instance=%s", name);
        return;
    }
    const sophia_write_ops *ops = in->desc->write_strategy;
    sophia_plugin_plan_put(in, key, len, ttl_s, tags, sync, deferred, inval);
    size_t have = ops->struct_size;
    if (*deferred && c->wb &&
        have >= offsetof(sophia_write_ops, flush_params) + sizeof(void *) &&
        ops->flush_params) {
        double iv = 0;
        size_t batch = 0, max = 0;
        ops->flush_params(in->state, &iv, &batch, &max);
        sophia_wb_set_params(c->wb, iv, batch, max);
    }
}

/* ------------------------------------------------------------- flights */

static void flight_finish(flight *f, int rc, const char *val, size_t len,
                          int tier)
{
    sophia_cache *c = f->c;
    if (sophia_dict_get(c->flights, f->key) == f)
        sophia_dict_del(c->flights, f->key);
    for (size_t i = 0; i < f->nw; i++)
        f->w[i].cb(f->w[i].arg, c->closing && rc == 0 ? SOPHIA_EUNAVAIL : rc,
                   val, len, tier);
    free(f->w);
    free(f->key);
    free(f);
}

static void promote_l1(flight *f, const char *val, size_t len,
                       int64_t expires_ms, const char *const *tags)
{
    sophia_cache *c = f->c;
    if (f->stale || c->closing)
        return;
    now_pair now = now_of(c);
    sophia_l1_put(c->l1, f->key, val, len, l1_expiry(c, expires_ms, now),
                  tags, now.mono_us);
}

static void flight_l3(flight *f);
static void flight_load(flight *f);

static void on_l2_get(void *arg, int rc, const char *val, size_t len,
                      int64_t expires_ms, const char *const *tags)
{
    flight *f = arg;
    sophia_cache *c = f->c;
    sophia_hist_record(&c->t2.lat, since_us(f->t0));
    if (rc == 0) {
        c->t2.hits++;
        promote_l1(f, val, len, expires_ms, tags);
        flight_finish(f, 0, val, len, SOPHIA_CACHE_L2);
        return;
    }
    if (rc == SOPHIA_ENOENT)
        c->t2.misses++;
    else
        c->t2.errors++;
    if (c->closing)
        flight_finish(f, SOPHIA_EUNAVAIL, NULL, 0, 0);
    else
        flight_l3(f);
}

static void flight_l2(flight *f)
{
    sophia_cache *c = f->c;
    f->t0 = sophia_now_mono_us();
    if (c->l2 && sophia_l2_get(c->l2, c->zstd, f->key, on_l2_get, f) == 0)
        return;
    if (c->l2)
        c->t2.skipped++;
    flight_l3(f);
}

static void on_l3_get(void *arg, int rc, const char *val, size_t len,
                      int64_t expires_ms, const char *const *tags)
{
    flight *f = arg;
    sophia_cache *c = f->c;
    sophia_hist_record(&c->t3.lat, since_us(f->t0));
    if (rc == 0) {
        c->t3.hits++;
        if (!f->stale && !c->closing && c->l2)
            sophia_l2_set(c->l2, c->zstd, f->key, val, len,
                          l2_expiry(c, expires_ms), tags, NULL, NULL);
        promote_l1(f, val, len, expires_ms, tags);
        flight_finish(f, 0, val, len, SOPHIA_CACHE_L3);
        return;
    }
    if (rc == SOPHIA_ENOENT)
        c->t3.misses++;
    else
        c->t3.errors++;
    if (c->closing)
        flight_finish(f, SOPHIA_EUNAVAIL, NULL, 0, 0);
    else
        flight_load(f);
}

static void flight_l3(flight *f)
{
    sophia_cache *c = f->c;
    f->t0 = sophia_now_mono_us();
    if (c->l3 && sophia_l3_get(c->l3, f->key, on_l3_get, f) == 0)
        return;
    if (c->l3)
        c->t3.skipped++;
    flight_load(f);
}

static void on_loaded(void *token, int rc, const char *val, size_t len,
                      double ttl_s, const char *const *tags)
{
    flight *f = token;
    sophia_cache *c = f->c;
    sophia_hist_record(&c->tl.lat, since_us(f->t0));
    if (rc != 0 || !sophia_cache_tags_ok(tags)) {
        c->tl.misses++;
        flight_finish(f, rc ? rc : SOPHIA_EINVAL, NULL, 0, 0);
        return;
    }
    c->tl.hits++;
    /* The loader is the source of truth: every tier gets the value (no
     * ack to wait for), unless the key was invalidated meanwhile. */
    if (!f->stale && !c->closing)
        sophia_cache_put_plan(c, f->key, val, len, ttl_s, tags, ALL_TIERS, 0,
                              0, NULL, NULL);
    flight_finish(f, 0, val, len, SOPHIA_CACHE_LOADER);
}

static void flight_load(flight *f)
{
    if (!f->loader) {
        flight_finish(f, SOPHIA_ENOENT, NULL, 0, 0);
        return;
    }
    f->c->tl.writes++; /* loader calls */
    f->t0 = sophia_now_mono_us();
    f->loader(f->loader_arg, f->key, on_loaded, f);
}

static int flight_wait(flight *f, sophia_cache_get_cb cb, void *arg)
{
    if (f->nw == f->capw) {
        size_t cap = f->capw ? f->capw * 2 : 4;
        waiter *w = realloc(f->w, cap * sizeof(*w));
        if (!w)
            return SOPHIA_ENOMEM;
        f->w = w;
        f->capw = cap;
    }
    f->w[f->nw++] = (waiter){cb, arg};
    return 0;
}

/* Uniform in (0, 1], xorshift64*: cheap, and only steers refreshes. */
static double xfetch_rand(sophia_cache *c)
{
    uint64_t x = c->rng ? c->rng : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return ((double)((x * 0x2545f4914f6cdd1dull) >> 11) + 1.0) /
           9007199254740992.0;
}

/* XFetch (Vattani et al.): refresh early with a probability that grows as
 * expiry nears, scaled by what a load costs (the loader's median), so a
 * hot key is usually reloaded once, before it expires, instead of missing
 * for everyone at once. */
static int xfetch_due(sophia_cache *c, int64_t now, int64_t expires_us)
{
    if (!expires_us)
        return 0;
    double delta = c->tl.lat.count ? sophia_hist_quantile(&c->tl.lat, 0.5)
                                   : 1000.0;
    return (double)now - delta * XFETCH_BETA * log(xfetch_rand(c)) >=
           (double)expires_us;
}

/* A flight with no waiters, straight to the loader; its result is stored
 * like any load. */
static void start_refresh(sophia_cache *c, const char *key,
                          sophia_cache_loader loader, void *loader_arg)
{
    if (sophia_dict_get(c->flights, key))
        return;
    flight *f = calloc(1, sizeof(*f));
    if (!f || !(f->key = strdup(key))) {
        free(f);
        return;
    }
    f->c = c;
    f->loader = loader;
    f->loader_arg = loader_arg;
    sophia_dict_set(c->flights, key, f);
    c->refreshes++;
    flight_load(f);
}

static int l1_hit(sophia_cache *c, const char *key, sophia_cache_loader loader,
                  void *loader_arg, sophia_cache_get_cb cb, void *arg)
{
    int64_t t0 = sophia_now_mono_us();
    sophia_l1_hit h;
    if (sophia_l1_lookup(c->l1, key, t0, &h) != 0)
        return 0;
    /* The clock costs as much as the hit: time one hit in 16. */
    if ((c->l1_timed++ & 15) == 0)
        sophia_hist_record(&c->t1.lat, since_us(t0));
    cb(arg, 0, h.val, h.len, SOPHIA_CACHE_L1);
    /* After the callback: a refresh may change L1, which h.val points into. */
    if (loader && xfetch_due(c, t0, h.expires_us))
        start_refresh(c, key, loader, loader_arg);
    return 1;
}

int sophia_cache_get(sophia_cache *c, const char *key,
                     sophia_cache_loader loader, void *loader_arg,
                     sophia_cache_get_cb cb, void *arg)
{
    if (!valid_key(key) || !cb)
        return SOPHIA_EINVAL;
    if (c->closing)
        return SOPHIA_EUNAVAIL;
    if (l1_hit(c, key, loader, loader_arg, cb, arg))
        return 0;
    const char *dv;
    size_t dlen;
    int64_t dexp;
    if (sophia_wb_lookup(c->wb, key, &dv, &dlen, &dexp) == 0) {
        cb(arg, 0, dv, dlen, SOPHIA_CACHE_L1); /* dirty: newest there is */
        return 0;
    }
    flight *f = sophia_dict_get(c->flights, key);
    if (f)
        return flight_wait(f, cb, arg);
    f = calloc(1, sizeof(*f));
    if (!f || !(f->key = strdup(key)) || flight_wait(f, cb, arg) != 0) {
        if (f)
            free(f->key);
        free(f);
        return SOPHIA_ENOMEM;
    }
    f->c = c;
    f->loader = loader;
    f->loader_arg = loader_arg;
    sophia_dict_set(c->flights, key, f);
    flight_l2(f);
    return 0;
}

int sophia_cache_peek(sophia_cache *c, const char *key, const char **val,
                      size_t *len)
{
    const void *v;
    int rc = sophia_l1_get(c->l1, key, sophia_now_mono_us(), &v, len);
    *val = rc == 0 ? v : NULL;
    return rc;
}

static void mark_stale(const char *key, void *val, void *arg)
{
    (void)key;
    (void)arg;
    ((flight *)val)->stale = 1;
}

static void flights_stale(sophia_cache *c, const char *key)
{
    if (!key) {
        sophia_dict_each(c->flights, mark_stale, NULL);
        return;
    }
    flight *f = sophia_dict_get(c->flights, key);
    if (f)
        f->stale = 1;
}

/* ----------------------------------------------------------------- puts */

/* One put in progress: acknowledged when `left` reaches 0. */
typedef struct put_op {
    sophia_cache *c;
    unsigned left;
    int rc;
    int64_t t0;
    sophia_cache_done_cb done;
    void *arg;
    /* For a journal failure: the write falls back to L3 synchronously. */
    const char *key, *val;
    size_t len;
    int64_t expires_ms;
    const char *const *tags;
    uint64_t version;
} put_op;

/* The key, value and tags live in the op's own allocation (put_op_new). */
static void put_op_free(put_op *op)
{
    free(op);
}

static void put_part_done(void *arg, int rc)
{
    put_op *op = arg;
    if (rc && rc != SOPHIA_EUNAVAIL && !op->rc)
        op->rc = rc;
    if (--op->left)
        return;
    sophia_cache *c = op->c;
    /* turn-granular, as its start (put_plan) */
    sophia_hist_record(&c->put_lat,
                       (double)(sophia_clock_mono_us(&c->clock) - op->t0));
    if (op->rc)
        c->put_errors++;
    if (op->done)
        op->done(op->arg, c->closing && !op->rc ? SOPHIA_EUNAVAIL : op->rc);
    put_op_free(op);
}

static void on_l2_part(void *arg, int rc)
{
    put_op *op = arg;
    if (rc == 0)
        op->c->t2.writes++;
    else
        op->c->t2.errors++;
    put_part_done(arg, 0); /* L2 is best effort: never fails a put */
}

/* The journal could not take it (Redis went away): make the write
 * durable in L3 before acknowledging instead. */
static void on_journal_part(void *arg, int rc)
{
    put_op *op = arg;
    sophia_cache *c = op->c;
    if (rc != 0 && c->l3 && !c->closing &&
        sophia_l3_put(c->l3, op->key, op->val, op->len, op->expires_ms,
                      op->tags, op->version,
                      put_part_done, op) == 0)
        return; /* that part now ends in put_part_done */
    put_part_done(op, rc == SOPHIA_EUNAVAIL ? 0 : rc);
}

static put_op *put_op_new(sophia_cache *c, const char *key, const char *val,
                          size_t len, int64_t expires_ms,
                          const char *const *tags, uint64_t version,
                          sophia_cache_done_cb done, void *arg)
{
    /* One allocation for the op and its copies (tags, key, value), where
     * there were three plus one per tag. */
    size_t tb = sophia_strv_packed_size(tags), kl = strlen(key) + 1;
    put_op *op = malloc(sizeof(*op) + tb + kl + (len ? len : 1));
    if (!op)
        return NULL;
    char *block = (char *)(op + 1);
    *op = (put_op){.c = c,
                   .left = 1, /* held by sophia_cache_put_plan until it returns */
                   .done = done,
                   .arg = arg,
                   .tags = (const char *const *)sophia_strv_pack(block, tags),
                   .key = memcpy(block + tb, key, kl),
                   .val = memcpy(block + tb + kl, val, len),
                   .len = len,
                   .expires_ms = expires_ms,
                   .version = version};
    return op;
}

static void invalidate_tiers(sophia_cache *c, const char *key, unsigned inv,
                             uint64_t version)
{
    if (inv & SOPHIA_TIER_L1)
        sophia_l1_del(c->l1, key);
    if ((inv & SOPHIA_TIER_L2) && c->l2)
        sophia_l2_del(c->l2, key, NULL, NULL);
    if ((inv & SOPHIA_TIER_L3) && c->l3)
        sophia_l3_del(c->l3, key, version - 1, NULL, NULL);
    if (inv & SOPHIA_TIER_L1)
        broadcast(c, key, 0);
}

/* A put's part in this process, once its tiers are under way: what reads
 * may be waiting on the key is stale, the plan's invalidations, and L1
 * (unless the plan invalidates it). */
static void put_local(sophia_cache *c, const char *key, const char *val,
                      size_t len, int64_t exp, const char *const *tags,
                      uint64_t version, now_pair now, unsigned inv)
{
    flights_stale(c, key);
    invalidate_tiers(c, key, inv, version);
    if (!(inv & SOPHIA_TIER_L1)) { /* L1 always takes the write */
        if (sophia_l1_put(c->l1, key, val, len, l1_expiry(c, exp, now), tags,
                          now.mono_us) == 0)
            c->t1.writes++;
        broadcast(c, key, 0); /* other nodes' L1 copies are now stale */
    }
    c->puts++;
}

/* put_plan's end for a put that writes no tier but L1 (the tiers off, or
 * a plan that names L1 only): it is done before this returns, so it
 * needs no op to wait on, and its latency by the turn clock is 0 (an op
 * on the stack and a second clock read were about 90 instructions a
 * put). What it does is what put_plan does for an op with no tier to
 * wait for. */
static int put_now(sophia_cache *c, const char *key, const char *val,
                   size_t len, int64_t exp, const char *const *tags,
                   uint64_t version, now_pair now, unsigned inv,
                   sophia_cache_done_cb done, void *arg)
{
    sophia_wb_forget(c->wb, key); /* superseded */
    put_local(c, key, val, len, exp, tags, version, now, inv);
    sophia_hist_record(&c->put_lat, 0);
    if (done)
        done(arg, c->closing ? SOPHIA_EUNAVAIL : 0);
    return 0;
}

/* sophia_cache_put_plan for a key and tags already checked (the put
 * path checks them before a strategy's plan sees them: once is enough). */
static int put_plan(sophia_cache *c, const char *key, const char *val,
                    size_t len, double ttl_s, const char *const *tags,
                    unsigned sync, unsigned deferred, unsigned inv,
                    sophia_cache_done_cb done, void *arg)
{
    if (!val && len)
        return SOPHIA_EINVAL;
    if (isnan(ttl_s) || ttl_s > SOPHIA_CACHE_MAX_TTL)
        return SOPHIA_EINVAL; /* ttl_s * 1000 must fit an int64 */
    if (c->closing)
        return SOPHIA_EUNAVAIL;
    if (ttl_s <= 0)
        ttl_s = c->default_ttl;
    now_pair now = now_of(c);
    int64_t exp = now.wall_us / 1000 + (int64_t)(ttl_s * 1000.0);
    /* Tiers the plan both writes and invalidates are written. */
    inv &= ~(sync | deferred);
    if (!c->wb || !(deferred & ~SOPHIA_TIER_L1))
        sync |= deferred & ~SOPHIA_TIER_L1; /* no journal: write now */
    deferred &= c->wb ? ~SOPHIA_TIER_L1 : 0;
    /* An invalidation with the same version as the write would lose to it
     * in L3; invalidate_tiers uses version - 1 for that reason. */
    uint64_t version = next_version(c, now.wall_us);
    int later = deferred || ((sync & SOPHIA_TIER_L3) && c->l3) ||
                ((sync & SOPHIA_TIER_L2) && c->l2);
    if (!later)
        return put_now(c, key, val ? val : "", len, exp, tags, version, now,
                       inv, done, arg);
    put_op *op = put_op_new(c, key, val ? val : "", len, exp, tags, version,
                            done, arg);
    if (!op)
        return SOPHIA_ENOMEM;
    op->t0 = now.mono_us;
    int rc = 0;
    if (deferred) {
        op->left++;
        rc = sophia_wb_put(c->wb, key, op->val, len, exp, tags, version,
                           deferred, on_journal_part, op);
        if (rc) {
            op->left--;
            if (rc != SOPHIA_EUNAVAIL) {
                put_op_free(op);
                return rc; /* EBUSY: nothing was written */
            }
            sync |= deferred; /* Redis down: no journal, write through */
            rc = 0;
        }
    } else {
        sophia_wb_forget(c->wb, key); /* superseded */
    }
    if ((sync & SOPHIA_TIER_L3) && c->l3) {
        op->left++;
        rc = sophia_l3_put(c->l3, key, op->val, len, exp, tags, version,
                           put_part_done, op);
        if (rc) {
            op->left--;
            if (op->left == 1 && !deferred) {
                put_op_free(op);
                return rc; /* EBUSY before anything else happened */
            }
            op->rc = rc;
        }
    }
    if ((sync & SOPHIA_TIER_L2) && c->l2) {
        op->left++;
        if (sophia_l2_set(c->l2, c->zstd, key, op->val, len,
                          l2_expiry(c, exp), tags, on_l2_part, op) != 0) {
            op->left--;
            c->t2.skipped++;
        }
    }
    put_local(c, key, op->val, len, exp, tags, version, now, inv);
    put_part_done(op, 0);
    return 0;
}

int sophia_cache_put_plan(sophia_cache *c, const char *key, const char *val,
                          size_t len, double ttl_s, const char *const *tags,
                          unsigned sync, unsigned deferred, unsigned inv,
                          sophia_cache_done_cb done, void *arg)
{
    if (!valid_key(key) || !sophia_cache_tags_ok(tags))
        return SOPHIA_EINVAL;
    return put_plan(c, key, val, len, ttl_s, tags, sync, deferred, inv, done,
                    arg);
}

int sophia_cache_put_checked_async(sophia_cache *c, const char *key,
                                   const char *val, size_t len, double ttl_s,
                                   const char *const *tags,
                                   sophia_cache_done_cb done, void *arg)
{
    unsigned sync, deferred, inv;
    plan_for(c, key, len, ttl_s, tags, &sync, &deferred, &inv);
    return put_plan(c, key, val, len, ttl_s, tags, sync, deferred, inv, done,
                    arg);
}

int sophia_cache_put_async(sophia_cache *c, const char *key, const char *val,
                           size_t len, double ttl_s, const char *const *tags,
                           sophia_cache_done_cb done, void *arg)
{
    if (!valid_key(key) || !sophia_cache_tags_ok(tags))
        return SOPHIA_EINVAL;
    return sophia_cache_put_checked_async(c, key, val, len, ttl_s, tags, done,
                                          arg);
}

int sophia_cache_put(sophia_cache *c, const char *key, const char *val,
                     size_t len, double ttl_s, const char *const *tags)
{
    return sophia_cache_put_async(c, key, val, len, ttl_s, tags, NULL, NULL);
}

/* ---------------------------------------------------------- invalidation */

typedef struct inval_op {
    unsigned left;
    int rc;
    sophia_cache_done_cb done;
    void *arg;
} inval_op;

static void inval_part(void *arg, int rc)
{
    inval_op *op = arg;
    if (rc && rc != SOPHIA_EUNAVAIL && !op->rc)
        op->rc = rc;
    if (--op->left)
        return;
    if (op->done)
        op->done(op->arg, op->rc);
    free(op);
}

static int run_inval(sophia_cache *c, const char *s, int is_tag,
                     sophia_cache_done_cb done, void *arg)
{
    if (is_tag ? !sophia_cache_tags_ok((const char *const[]){s, NULL})
               : !valid_key(s))
        return SOPHIA_EINVAL;
    inval_op *op = calloc(1, sizeof(*op));
    if (!op)
        return SOPHIA_ENOMEM;
    op->left = 1;
    op->done = done;
    op->arg = arg;
    uint64_t version = next_version(c, sophia_clock_wall_us(&c->clock));
    if (c->l3) {
        op->left++;
        int rc = is_tag ? sophia_l3_del_tag(c->l3, s, version, inval_part, op)
                        : sophia_l3_del(c->l3, s, version, inval_part, op);
        if (rc) {
            op->left--;
            op->rc = rc;
        }
    }
    if (c->l2) {
        op->left++;
        int rc = is_tag ? sophia_l2_del_tag(c->l2, s, inval_part, op)
                        : sophia_l2_del(c->l2, s, inval_part, op);
        if (rc)
            op->left--;
    }
    if (is_tag) {
        sophia_wb_forget_tag(c->wb, s);
        flights_stale(c, NULL);
        sophia_l1_invalidate_tag(c->l1, s);
        c->tag_invalidations++;
    } else {
        sophia_wb_forget(c->wb, s);
        flights_stale(c, s);
        sophia_l1_del(c->l1, s);
        c->dels++;
    }
    broadcast(c, s, is_tag);
    inval_part(op, 0);
    return 0;
}

int sophia_cache_del_async(sophia_cache *c, const char *key,
                           sophia_cache_done_cb done, void *arg)
{
    return run_inval(c, key, 0, done, arg);
}

int sophia_cache_invalidate_tag_async(sophia_cache *c, const char *tag,
                                      sophia_cache_done_cb done, void *arg)
{
    return run_inval(c, tag, 1, done, arg);
}

int sophia_cache_del(sophia_cache *c, const char *key)
{
    int had = sophia_l1_del(c->l1, key);
    int rc = run_inval(c, key, 0, NULL, NULL);
    return rc ? rc : had;
}

size_t sophia_cache_invalidate_tag(sophia_cache *c, const char *tag)
{
    sophia_l1_stats before, after;
    sophia_l1_get_stats(c->l1, &before);
    run_inval(c, tag, 1, NULL, NULL);
    sophia_l1_get_stats(c->l1, &after);
    return after.invalidations - before.invalidations;
}

void sophia_cache_l1_invalidate_local(sophia_cache *c, const char *key_or_tag,
                                      int is_tag)
{
    if (!c || !key_or_tag)
        return;
    if (is_tag) {
        sophia_l1_invalidate_tag(c->l1, key_or_tag);
        flights_stale(c, NULL);
    } else {
        sophia_l1_del(c->l1, key_or_tag);
        flights_stale(c, key_or_tag);
    }
}

/* ------------------------------------------------------------ lifecycle */

static int copy_write_conf(sophia_cache *c, const sophia_conf *conf)
{
    size_t n = conf->cache_write.nprefixes;
    c->write_def = conf->cache_write.def ? strdup(conf->cache_write.def)
                                         : NULL;
    c->prefixes = calloc(n + 1, sizeof(char *));
    c->prefix_inst = calloc(n + 1, sizeof(char *));
    c->resolved = calloc(n + 1, sizeof(*c->resolved));
    if (!c->prefixes || !c->prefix_inst || !c->resolved)
        return -1;
    for (size_t i = 0; i < n; i++) {
        c->prefixes[i] = strdup(conf->cache_write.prefixes[i]);
        c->prefix_inst[i] = strdup(conf->cache_write.instances[i]);
        c->nprefixes++;
        if (!c->prefixes[i] || !c->prefix_inst[i])
            return -1;
    }
    return 0;
}

/* A name that is not a write_strategy instance is caught here, when the
 * set is bound, rather than discovered by the first put. */
void sophia_cache_bind_plugins(sophia_cache *c, const sophia_plugin_set *plugins)
{
    if (!c)
        return;
    for (size_t i = 0; i <= c->nprefixes; i++) {
        const char *n = slot_name(c, i);
        c->resolved[i] = strategy_instance(plugins, n);
        if (n && plugins && !c->resolved[i])
            sophia_error("cache", "msg=\"not a loaded write_strategy "
                                  "instance; puts will write through\" "
                                  "instance=%s", n);
    }
}

sophia_cache *sophia_cache_new(const sophia_conf *conf, struct event_base *base)
{
    sophia_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->base = base;
    sophia_clock_init(&c->clock, base);
    c->l1_ttl = conf->l1.ttl > 0 ? conf->l1.ttl : 300;
    c->l1_cap_us = (int64_t)(fmin(c->l1_ttl, SOPHIA_CACHE_MAX_TTL) * 1e6);
    c->default_ttl = fmax(c->l1_ttl, fmax(conf->l2.ttl, conf->l3.ttl));
    c->l2_max_ttl_ms = (int64_t)(conf->l2.ttl * 1000.0);
    c->l1 = sophia_l1_new(conf->l1.max_entries, conf->l1.max_bytes);
    c->flights = sophia_dict_new();
    c->hot_ev = event_new(base, -1, EV_PERSIST, cache_on_hot_tick, c);
    c->zstd = sophia_zstd_from_conf(conf);
    if (!c->l1 || !c->flights || !c->hot_ev || !c->zstd ||
        copy_write_conf(c, conf)) {
        sophia_cache_free(c);
        return NULL;
    }
    if (conf->redis_url && *conf->redis_url) {
        c->l2 = sophia_redis_new(base, conf->redis_url);
        if (!c->l2) /* a bad URL was logged, redacted, by redis.c */
            sophia_error("cache", "msg=\"L2 disabled\"");
    }
    if (conf->pg_url && *conf->pg_url) {
        size_t n = conf->l3.pool ? conf->l3.pool : SOPHIA_PG_POOL_DEFAULT;
        c->l3 = sophia_l3_new(sophia_pg_pool_new(base, conf->pg_url, n), base);
        if (c->l3)
            sophia_l3_set_max_ttl(c->l3, (int64_t)(conf->l3.ttl * 1000.0));
        if (c->l3)
            sophia_l3_set_zstd(c->l3, c->zstd);
    }
    if (c->l2)
        c->wb = sophia_wb_new(base, c->l2, c->l3, cache_on_replayed, c);
    if (c->wb)
        sophia_wb_set_l2_max_ttl(c->wb, c->l2_max_ttl_ms);
    if (c->wb)
        sophia_wb_set_zstd(c->wb, c->zstd);
    struct timeval first = {0, 200000}; /* polls until the tiers are up */
    if (c->l2)
        event_add(c->hot_ev, &first);
    return c;
}

static void fail_flight(const char *key, void *val, void *arg)
{
    (void)key;
    (void)arg;
    flight *f = val;
    for (size_t i = 0; i < f->nw; i++)
        f->w[i].cb(f->w[i].arg, SOPHIA_EUNAVAIL, NULL, 0, 0);
    free(f->w);
    free(f->key);
    free(f);
}

void sophia_cache_free(sophia_cache *c)
{
    if (!c)
        return;
    c->closing = 1;
    if (c->hot_ev)
        event_free(c->hot_ev);
    sophia_wb_close(c->wb);
    sophia_redis_free(c->l2); /* answers pending callbacks with NULL */
    c->l2 = NULL;
    sophia_l3_free(c->l3);
    c->l3 = NULL;
    sophia_wb_free(c->wb);
    sophia_zstd_free(c->zstd); /* after every tier that packs with it */
    if (c->flights) { /* loaders still out: their waiters hear so */
        sophia_dict_each(c->flights, fail_flight, NULL);
        sophia_dict_free(c->flights, NULL);
    }
    sophia_l1_free(c->l1);
    free(c->write_def);
    for (size_t i = 0; i < c->nprefixes; i++) {
        free(c->prefixes[i]);
        free(c->prefix_inst[i]);
    }
    free(c->prefixes);
    free(c->prefix_inst);
    free(c->resolved);
    free(c);
}
