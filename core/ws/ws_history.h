/*
 * ws_history - the rendered WebSocket message and the per-topic history
 * ring that makes `subscribe` with `since` and the `history` request work.
 *
 * A ws_msg is one JSON text frame, rendered once and shared, by reference
 * count, between every client queue it sits in and the history ring of the
 * topic it was rendered for. It remembers the publish it came from
 * (`pubid`, one per sophia_ws_publish call, so a replay spanning several
 * topics can skip a message it already sent for another one) and, for
 * `metric` updates, the coalescing key "topic\x01metric" that lets a slow
 * client's queue keep only the latest value of each metric.
 *
 * A client that negotiated sophia.v1.msgpack gets the message's `alt`,
 * the same message as a binary msgpack frame, made from the JSON one the
 * first time such a client is sent it (ws_msgpack.h) and kept on it, so
 * it too is made once per message however many msgpack clients take it.
 *
 * A ws_pub is what one publish shares between the topics it went to: its
 * type and metric, and the text every topic's message of it
 * ends with after the seq (the dashboard and `data`, rendered once). A
 * history entry keeps the pub; the message a live publish rendered (for
 * a subscriber, a pattern, a dashboard's latest value) is not kept there,
 * so it is freed by the last queue that sent it, still in cache, rather
 * than by the ring a history's turn later (at 5,000 events/s a 256-entry
 * ring turns over in ~50 ms).
 * A replay renders an entry's message when it asks for it (ws_topic_msg,
 * ws_priv.h) and the entry keeps that one for the next. A metric publish
 * goes to three topics and usually one is followed, so this renders once
 * where it rendered three times, and the ring drops one shared block
 * instead of three messages.
 *
 * The ring keeps the last `cap` messages of a topic, and only while they
 * are younger than the configured age. Its seqs are contiguous by
 * construction: a push whose seq does not follow the newest one (a seq
 * adopted from another node after a gap) empties the ring first, so
 * "the ring holds since+1" is enough to promise a replay without a gap.
 */
#ifndef SOPHIA_WS_HISTORY_H
#define SOPHIA_WS_HISTORY_H

#include <stddef.h>
#include <stdint.h>

typedef struct ws_msg {
    int refs;
    uint64_t pubid;   /* the publish it came from; 0 for control messages */
    char *ckey;       /* coalescing key "topic\x01metric", or NULL */
    size_t ckey_len;
    int ckey_inline;  /* ckey is in this block (ws_msg_alloc_keyed) */
    size_t len;
    size_t hl;        /* bytes of WebSocket frame header ending at buf+pre */
    int binary;       /* a binary frame (msgpack), not a text one */
    int deflated;     /* payload compressed (RSV1 set): ws_deflate.h */
    int z_none;       /* compressing it did not make it smaller */
    /* The same message in msgpack (ws_msgpack.h), made on the first
     * msgpack client's send and shared by the rest: one reference held
     * here. NULL until then, so JSON-only deployments never make one. */
    struct ws_msg *alt;
    struct ws_msg *z; /* its permessage-deflate twin, the same way */
    unsigned char buf[]; /* LWS_PRE headroom, then the payload and a NUL */
} ws_msg;

/* `pre` is the headroom lws needs before the payload (LWS_PRE). The
 * unmasked server text-frame header is built once, at the end of that
 * headroom (when pre >= 10), so every client's send of the message is one
 * contiguous span: ws_msg_frame(). */
ws_msg *ws_msg_new(const char *text, size_t len, size_t pre);
/* A text message of len bytes whose payload the caller writes at
 * buf + pre, with the coalescing key "topic\x01metric" (topic NULL: none)
 * in the message's own block: what ws_msg_set_ckey would give, without a
 * second allocation. The names' lengths are given, as the router keeps
 * them. */
ws_msg *ws_msg_alloc_keyed(size_t len, size_t pre, const char *topic,
                           size_t topic_len, const char *metric,
                           size_t metric_len);
/* The same for a binary frame (opcode 2): a msgpack payload. */
ws_msg *ws_msg_new_binary(const void *data, size_t len, size_t pre);
/* A compressed payload for a frame of m's kind, RSV1 set; pubid and ckey
 * copied from m. */
ws_msg *ws_msg_new_deflated(const ws_msg *m, const void *data, size_t len,
                            size_t pre);
const unsigned char *ws_msg_frame(const ws_msg *m, size_t pre, size_t *n);
const char *ws_msg_text(const ws_msg *m, size_t pre);
void ws_msg_set_ckey(ws_msg *m, const char *topic, const char *metric);
void ws_msg_unref(ws_msg *m);

typedef struct ws_pub {
    int refs;
    uint64_t pubid;
    const char *type, *metric; /* in `text`, or NULL */
    size_t type_len, metric_len; /* strlen of type and metric (0: none) */
    /* text[0..tlen): what every topic's message of the publish has after
     * its seq, ,"dashboard_id":..,"data":<data>} - rendered once */
    size_t tlen;
    char text[];  /* the tail, then type and metric, NUL-ended */
} ws_pub;

/* NULL when out of memory; dashboard_id and metric may be NULL. */
ws_pub *ws_pub_new(uint64_t pubid, const char *type, const char *dashboard_id,
                   const char *metric, const char *data, size_t dlen);
void ws_pub_unref(ws_pub *p);
/* 1 when JSON writes the n bytes of s as they are, without escapes (the
 * type names and dashboard ids the host uses). */
int ws_json_plain(const char *s, size_t n);

typedef struct ws_hist_entry {
    uint64_t seq;
    int64_t at_us; /* monotonic time it was published */
    ws_msg *m;     /* rendered, or NULL until a replay needs it */
    ws_pub *p;
} ws_hist_entry;

typedef struct ws_history {
    ws_hist_entry *v; /* ring of alloc slots: allocated on first push and
                       * doubled as it fills, up to cap */
    size_t cap, alloc, head, len;
} ws_history;

typedef enum {
    WS_HIST_OK,     /* everything after `since` is in the ring */
    WS_HIST_RESYNC, /* some of it aged out (or since is from the future) */
} ws_hist_result;

void ws_history_init(ws_history *h, size_t cap);
/* A new capacity (reload): keeps the newest min(len, cap) entries. */
void ws_history_resize(ws_history *h, size_t cap);
void ws_history_clear(ws_history *h);
void ws_history_free(ws_history *h);
/* Takes a reference to p and, when not NULL, to m (the router passes
 * NULL: see above). */
void ws_history_push(ws_history *h, uint64_t seq, int64_t now_us, ws_msg *m,
                     ws_pub *p);
/* Drops entries published before now_us - max_age_us. */
void ws_history_prune(ws_history *h, int64_t now_us, int64_t max_age_us);
/* A publish's entry: ws_history_prune, then ws_history_push of p (no
 * message), in one call whose usual case, a full ring whose oldest entry
 * has not aged out, is one step (see the function). */
void ws_history_add(ws_history *h, uint64_t seq, int64_t now_us,
                    int64_t max_age_us, ws_pub *p);

/* Entries newer than `since`, oldest first, given the topic's current seq:
 * sets *first to the index (for ws_history_at) of the first one and *n to
 * how many. */
ws_hist_result ws_history_since(const ws_history *h, uint64_t since,
                                uint64_t cur_seq, size_t *first, size_t *n);
ws_hist_entry *ws_history_at(const ws_history *h, size_t i);

#endif
