/*
 * ws_history - see ws_history.h.
 */
#include "ws/ws_history.h"

#include <stdlib.h>
#include <string.h>

#include "lib/jsonw.h"

/* RFC 6455 5.2: FIN + text (1) or binary (2) opcode, then a 7, 16 or
 * 64-bit length. */
static void frame_header(ws_msg *m, size_t pre)
{
    uint64_t len = m->len;
    unsigned char h[10];
    size_t n = 2;
    h[0] = (m->binary ? 0x82 : 0x81) | (m->deflated ? 0x40 : 0);
    if (len < 126) {
        h[1] = (unsigned char)len;
    } else if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        n = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        n = 10;
    }
    memcpy(m->buf + pre - n, h, n);
    m->hl = n;
}

/* A message of len payload bytes, the payload left to the caller (data
 * NULL) or copied from data. The coalescing key, when topic is not NULL,
 * goes in the same block, after the payload's NUL: one allocation and one
 * free per message. */
static ws_msg *msg_new(const void *data, size_t len, size_t pre, int binary,
                       int deflated, const char *topic, size_t a,
                       const char *metric, size_t b)
{
    size_t kl = topic ? a + b + 2 : 0;
    ws_msg *m = malloc(sizeof(*m) + pre + len + 1 + kl);
    if (!m)
        return NULL;
    m->refs = 1;
    m->pubid = 0;
    m->ckey = NULL;
    m->ckey_len = 0;
    m->ckey_inline = 0;
    m->len = len;
    m->hl = 0;
    m->binary = binary;
    m->deflated = deflated;
    m->z_none = 0;
    m->alt = m->z = NULL;
    if (data)
        memcpy(m->buf + pre, data, len);
    m->buf[pre + len] = '\0';
    if (topic) {
        char *k = (char *)m->buf + pre + len + 1;
        memcpy(k, topic, a);
        k[a] = '\x01'; /* never in a topic: they are printable */
        memcpy(k + a + 1, metric, b);
        k[a + 1 + b] = '\0';
        m->ckey = k;
        m->ckey_len = a + b + 1;
        m->ckey_inline = 1;
    }
    if (pre >= 10)
        frame_header(m, pre);
    return m;
}

ws_msg *ws_msg_new(const char *text, size_t len, size_t pre)
{
    return msg_new(text, len, pre, 0, 0, NULL, 0, NULL, 0);
}

ws_msg *ws_msg_alloc_keyed(size_t len, size_t pre, const char *topic,
                           size_t topic_len, const char *metric,
                           size_t metric_len)
{
    return msg_new(NULL, len, pre, 0, 0, topic, topic_len, metric, metric_len);
}

ws_msg *ws_msg_new_binary(const void *data, size_t len, size_t pre)
{
    return msg_new(data, len, pre, 1, 0, NULL, 0, NULL, 0);
}

ws_msg *ws_msg_new_deflated(const ws_msg *m, const void *data, size_t len,
                            size_t pre)
{
    ws_msg *z = msg_new(data, len, pre, m->binary, 1, NULL, 0, NULL, 0);
    if (!z)
        return NULL;
    z->pubid = m->pubid;
    if (m->ckey && !(z->ckey = malloc(m->ckey_len + 1))) {
        ws_msg_unref(z); /* coalescing needs it: all or nothing */
        return NULL;
    }
    if (m->ckey) {
        memcpy(z->ckey, m->ckey, m->ckey_len + 1);
        z->ckey_len = m->ckey_len;
    }
    return z;
}

const unsigned char *ws_msg_frame(const ws_msg *m, size_t pre, size_t *n)
{
    *n = m->hl + m->len;
    return m->buf + pre - m->hl;
}

const char *ws_msg_text(const ws_msg *m, size_t pre)
{
    return (const char *)m->buf + pre;
}

void ws_msg_set_ckey(ws_msg *m, const char *topic, const char *metric)
{
    size_t a = strlen(topic), b = strlen(metric);
    if (!m->ckey_inline)
        free(m->ckey);
    m->ckey_inline = 0;
    m->ckey = malloc(a + b + 2);
    if (!m->ckey)
        return;
    memcpy(m->ckey, topic, a);
    m->ckey[a] = '\x01'; /* never in a topic: they are printable */
    memcpy(m->ckey + a + 1, metric, b + 1);
    m->ckey_len = a + b + 1;
}

void ws_msg_unref(ws_msg *m)
{
    if (m && --m->refs == 0) {
        ws_msg_unref(m->alt);
        ws_msg_unref(m->z);
        if (!m->ckey_inline)
            free(m->ckey);
        free(m);
    }
}

int ws_json_plain(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == '"' || s[i] == '\\')
            return 0;
    return 1;
}

/* The tail is what jansson would dump after the seq: "dashboard_id" when
 * there is one, then "data", the last member, then the closing brace. */
ws_pub *ws_pub_new(uint64_t pubid, const char *type, const char *dashboard_id,
                   const char *metric, const char *data, size_t dlen)
{
    size_t tl = strlen(type) + 1, dl = dashboard_id ? strlen(dashboard_id) : 0,
           ml = metric ? strlen(metric) + 1 : 0;
    sophia_jsonw esc = {0}; /* the dashboard escaped, when it must be */
    const char *dq = dashboard_id;
    size_t dql = dl;
    if (dashboard_id && !ws_json_plain(dashboard_id, dl)) {
        if (sophia_jsonw_str(&esc, dashboard_id, dl) < 0) {
            sophia_jsonw_reset(&esc);
            return NULL;
        }
        dq = esc.p + 1; /* without its quotes: written below */
        dql = esc.len - 2;
    }
    size_t dpart = dashboard_id ? 16 + dql + 2 : 0, tail = dpart + 8 + dlen + 1;
    ws_pub *p = malloc(sizeof(*p) + tail + tl + ml);
    if (!p) {
        if (esc.p)
            sophia_jsonw_reset(&esc);
        return NULL;
    }
    p->refs = 1;
    p->pubid = pubid;
    p->tlen = tail;
    char *w = p->text;
    if (dashboard_id) {
        memcpy(w, ",\"dashboard_id\":\"", 17);
        memcpy(w + 17, dq, dql);
        w[17 + dql] = '"';
        w += dpart;
    }
    memcpy(w, ",\"data\":", 8);
    memcpy(w + 8, data, dlen);
    w[8 + dlen] = '}';
    w += 8 + dlen + 1;
    if (esc.p)
        sophia_jsonw_reset(&esc);
    p->type_len = tl - 1;
    p->metric_len = ml ? ml - 1 : 0;
    p->type = memcpy(w, type, tl);
    w += tl;
    p->metric = metric ? memcpy(w, metric, ml) : NULL;
    return p;
}

void ws_pub_unref(ws_pub *p)
{
    if (p && --p->refs == 0)
        free(p);
}

/* Slots of a topic's first ring: most topics (one per dashboard, say) see
 * a few messages per history_age, so the ring doubles up to `cap` only
 * when a topic is busy; 100000 quiet topics hold ~4 slots each, not 256. */
#define WS_HIST_FIRST 4

void ws_history_init(ws_history *h, size_t cap)
{
    memset(h, 0, sizeof(*h));
    h->cap = cap;
}

/* head and i are both below alloc, so one subtraction wraps the sum: a
 * division per access (three or four a push, a push per topic of every
 * publish) cost more than the rest of the ring's arithmetic. */
static ws_hist_entry *slot(const ws_history *h, size_t i)
{
    size_t k = h->head + i;
    return &h->v[k < h->alloc ? k : k - h->alloc];
}

static void drop_oldest(ws_history *h)
{
    ws_hist_entry *e = &h->v[h->head];
    ws_msg_unref(e->m);
    ws_pub_unref(e->p);
    if (++h->head == h->alloc)
        h->head = 0;
    h->len--;
}

/* Moves the entries, oldest first, into a ring of n >= len slots (n = 0
 * frees it); -1 when there is no memory for it (nothing changed). */
static int realloc_ring(ws_history *h, size_t n)
{
    ws_hist_entry *v = n ? calloc(n, sizeof(*v)) : NULL;
    if (n && !v)
        return -1;
    for (size_t i = 0; i < h->len; i++)
        v[i] = *slot(h, i);
    free(h->v);
    h->v = v;
    h->alloc = n;
    h->head = 0;
    return 0;
}

void ws_history_resize(ws_history *h, size_t cap)
{
    if (cap == h->cap)
        return;
    while (h->len > cap)
        drop_oldest(h);
    if (h->alloc > cap && realloc_ring(h, cap) < 0) {
        ws_history_clear(h); /* no memory for the new ring: start it empty */
        realloc_ring(h, 0);
    }
    h->cap = cap;
}

void ws_history_clear(ws_history *h)
{
    while (h->len)
        drop_oldest(h);
    h->head = 0;
}

void ws_history_free(ws_history *h)
{
    if (h->v)
        ws_history_clear(h);
    free(h->v);
    h->v = NULL;
    h->alloc = 0;
}

static void fill(ws_hist_entry *e, uint64_t seq, int64_t now_us, ws_msg *m,
                 ws_pub *p)
{
    e->seq = seq;
    e->at_us = now_us;
    e->m = m;
    e->p = p;
    if (m)
        m->refs++;
    p->refs++;
}

/* In a full ring the slot a push overwrites, and the pub it drops (shared
 * by the publish's topics: its count is read), were last touched a ring's
 * turn ago, ~50 ms at 5,000 events/s with 256 entries: cold, and the next
 * push's prune and drop stalled on them. A push asks for the ring's line
 * WS_HIST_AHEAD entries on and for the pub the next push drops (its slot
 * asked for that way before), so their misses overlap the work up to the
 * next publish (a POST's events are published one after the other). A
 * macro, not a function: GCC finds a function of prefetches alone free of
 * side effects and deletes its call. */
#define WS_HIST_AHEAD 4
#define PREFETCH_AHEAD(h)                                                      \
    do {                                                                       \
        __builtin_prefetch(slot((h), WS_HIST_AHEAD));                          \
        __builtin_prefetch((h)->v[(h)->head].p);                               \
    } while (0)

void ws_history_push(ws_history *h, uint64_t seq, int64_t now_us, ws_msg *m,
                     ws_pub *p)
{
    if (h->cap == 0)
        return;
    if (h->len && slot(h, h->len - 1)->seq + 1 != seq)
        ws_history_clear(h); /* a gap: keep the ring contiguous */
    if (h->len == h->cap && h->alloc == h->cap) {
        /* a busy topic's steady state: the new entry takes the oldest's
         * slot, which becomes the newest, in one step */
        ws_hist_entry *e = &h->v[h->head];
        ws_msg_unref(e->m);
        ws_pub_unref(e->p);
        fill(e, seq, now_us, m, p);
        if (++h->head == h->alloc)
            h->head = 0;
        if (h->len > WS_HIST_AHEAD)
            PREFETCH_AHEAD(h);
        return;
    }
    if (h->len == h->cap) {
        drop_oldest(h);
    } else if (h->len == h->alloc) {
        size_t n = h->alloc ? h->alloc * 2 : WS_HIST_FIRST;
        if (realloc_ring(h, n < h->cap ? n : h->cap) < 0) {
            if (!h->len)
                return;
            drop_oldest(h); /* stay within what we have */
        }
    }
    fill(slot(h, h->len++), seq, now_us, m, p);
}

void ws_history_prune(ws_history *h, int64_t now_us, int64_t max_age_us)
{
    while (h->len && now_us - slot(h, 0)->at_us > max_age_us)
        drop_oldest(h);
}

__attribute__((noinline)) static void add_slow(ws_history *h, uint64_t seq,
                                               int64_t now_us,
                                               int64_t max_age_us, ws_pub *p)
{
    ws_history_prune(h, now_us, max_age_us);
    ws_history_push(h, seq, now_us, NULL, p);
}

/* A busy topic's every publish: its ring is full (and longer than the
 * prefetch reaches), its oldest entry young enough to stay, never
 * rendered, and its newest seq the one before. The prune then drops
 * nothing and the push overwrites the oldest slot, which becomes the
 * newest: done here as that, without the two calls' checks and ring
 * arithmetic (three pushes and three prunes were about 420 instructions
 * a metric publish). Anything else takes the two calls, in add_slow:
 * out of line, so that this path makes no call but its last free, and
 * saves and restores no registers. */
void ws_history_add(ws_history *h, uint64_t seq, int64_t now_us,
                    int64_t max_age_us, ws_pub *p)
{
    size_t head = h->head;
    if (h->len == h->cap && h->alloc == h->cap && h->cap > WS_HIST_AHEAD) {
        ws_hist_entry *e = &h->v[head];
        const ws_hist_entry *newest = &h->v[head ? head - 1 : h->alloc - 1];
        if (now_us - e->at_us <= max_age_us && newest->seq + 1 == seq &&
            !e->m) {
            ws_pub *old = e->p;
            e->seq = seq;
            e->at_us = now_us;
            e->p = p;
            p->refs++;
            h->head = head + 1 == h->alloc ? 0 : head + 1;
            PREFETCH_AHEAD(h);
            if (--old->refs == 0)
                free(old);
            return;
        }
    }
    add_slow(h, seq, now_us, max_age_us, p);
}

ws_hist_result ws_history_since(const ws_history *h, uint64_t since,
                                uint64_t cur_seq, size_t *first, size_t *n)
{
    *first = 0;
    *n = 0;
    if (since == cur_seq)
        return WS_HIST_OK;
    if (since > cur_seq || h->len == 0)
        return WS_HIST_RESYNC;
    uint64_t oldest = slot(h, 0)->seq, newest = slot(h, h->len - 1)->seq;
    if (oldest > since + 1 || newest != cur_seq)
        return WS_HIST_RESYNC;
    *first = (size_t)(since + 1 - oldest);
    *n = (size_t)(cur_seq - since);
    return WS_HIST_OK;
}

ws_hist_entry *ws_history_at(const ws_history *h, size_t i)
{
    return i < h->len ? slot(h, i) : NULL;
}
