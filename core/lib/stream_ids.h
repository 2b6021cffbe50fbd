/*
 * stream_ids - a set of Redis Stream entry ids ("<ms>-<seq>"), for the
 * entries a consumer holds locally.
 *
 * A Redis source files every entry it reads and removes it at its XACK:
 * two keyed hashes and a key copy an event, into a table that is cold by
 * the time the ack comes (~3% of sophiad's cycles with the default
 * tiers). Entries read with ">" come in id order and are acknowledged in
 * nearly the same order, so those go into a ring sorted by id: filed at
 * the tail, removed from the head, found by binary search. Ids that do
 * not sort after the ring's last (a claim hands back older entries) or do
 * not parse go into a dict, as before.
 */
#ifndef SOPHIA_STREAM_IDS_H
#define SOPHIA_STREAM_IDS_H

#include <stddef.h>
#include <stdint.h>

/* An entry id as the two numbers it sorts by. */
typedef struct sophia_xid {
    uint64_t ms, seq;
} sophia_xid;

/* Parses an id as Redis writes it: "<ms>-<seq>", two canonical decimals
 * (no sign, no leading zero, no overflow), so one id has one text.
 * 0, or -1 (s NULL included). */
int sophia_xid_parse(const char *s, sophia_xid *out);

/* <0, 0 or >0 as a sorts before, with or after b. */
static inline int sophia_xid_cmp(sophia_xid a, sophia_xid b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    return a.seq < b.seq ? -1 : a.seq > b.seq;
}

typedef struct sophia_stream_ids sophia_stream_ids;

sophia_stream_ids *sophia_stream_ids_new(void);
void sophia_stream_ids_free(sophia_stream_ids *s);
/* Adds `id` (not in the set yet); 0, or -1 when out of memory. */
int sophia_stream_ids_add(sophia_stream_ids *s, const char *id);
int sophia_stream_ids_has(const sophia_stream_ids *s, const char *id);
/* Removes `id` when it is there. */
void sophia_stream_ids_del(sophia_stream_ids *s, const char *id);
size_t sophia_stream_ids_size(const sophia_stream_ids *s);

#endif
