/*
 * cache_zstd - how L2 and L3 store large values: zstd frames behind a
 * two-byte mark, read side by side with the plain JSON stored before.
 *
 * Stored form: a value longer than cache.compress.threshold becomes
 * "\0" "\1" followed by one zstd frame (with its content size, and the
 * dictionary's id when one is configured); anything else is stored as it
 * was, plain JSON text. The mark is a NUL byte because no JSON text can
 * start with one (RFC 8259: JSON text is whitespace then a value, and raw
 * control characters are not even allowed inside strings), so an old
 * plain entry is never mistaken for a compressed one, whatever it holds.
 * The zstd magic (28 B5 2F FD) alone would also do today - '(' cannot
 * start JSON either - but the second byte names the format, so a later
 * one (another codec) can be added without guessing. A value zstd cannot
 * shrink is stored plain: reading it costs nothing.
 *
 * Readers never see the stored form: cache_l2.c and cache_l3.c unpack on
 * the way in, so L1, the cache's callers, promotion between tiers and
 * other nodes all deal in plain values. A node with compression off
 * (level 0) still reads compressed entries; one without the dictionary a
 * frame was written with reads it as a tier error (logged once per
 * dictionary id), never as a wrong value.
 *
 * The work is on the loop thread, where the tiers' callbacks run, and
 * it is small enough to stay there for values up to a few hundred KB:
 * 26 µs to compress and 11 µs to decompress a 10 KB JSON document at
 * level 1, 7 and 3 µs at 1 KB, 190 and 40 µs at 64 KB, 0.5 and 0.14 ms
 * at 256 KB (README, "wire").
 * Nothing else in it can block. The contexts are kept in the handle, so
 * no call allocates one.
 */
#ifndef SOPHIA_CACHE_ZSTD_H
#define SOPHIA_CACHE_ZSTD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SOPHIA_ZSTD_MARK '\0'
#define SOPHIA_ZSTD_FORMAT '\1' /* one zstd frame follows */
#define SOPHIA_ZSTD_HEAD 2
/* Largest value a frame may expand to: well above any value the cache
 * takes, and a bound on what a corrupt or hostile entry can allocate. */
#define SOPHIA_ZSTD_MAX_PLAIN ((size_t)256 << 20)

typedef struct sophia_zstd sophia_zstd;

typedef struct sophia_zstd_stats {
    uint64_t packed, packed_in, packed_out; /* values compressed, bytes */
    uint64_t kept_plain;  /* above the threshold but not smaller packed */
    uint64_t unpacked;    /* compressed values read */
    uint64_t failed;      /* compressed values that could not be read */
} sophia_zstd_stats;

/* Values longer than `threshold` bytes compressed at `level` (0: none
 * compressed, reads still decompress), with the dictionary `dict` (copied;
 * NULL for none). NULL with a reason in err on failure. */
sophia_zstd *sophia_zstd_new(size_t threshold, int level, const void *dict,
                             size_t dict_len, char *err, size_t errlen);
/* sophia_zstd_new with the dictionary read from `path` (NULL: none). */
sophia_zstd *sophia_zstd_open(size_t threshold, int level, const char *path,
                              char *err, size_t errlen);
/* The cache's handle from cache.compress. A dictionary that cannot be
 * loaded (the loader checked it; it changed since) is logged and left
 * out, so the node still runs and reads every frame without one; NULL
 * only without memory. */
struct sophia_conf;
sophia_zstd *sophia_zstd_from_conf(const struct sophia_conf *conf);
void sophia_zstd_free(sophia_zstd *z);

/* The form to store `val` in: *out = val when it stays plain (below the
 * threshold, compression off, or not smaller), else a malloc'd packed
 * copy, also in *owned for the caller to free (*owned NULL otherwise).
 * 0, or SOPHIA_ENOMEM (then *out = val: storing it plain is still right).
 * z NULL: always plain. */
int sophia_zstd_pack(sophia_zstd *z, const char *val, size_t len,
                     const char **out, size_t *out_len, char **owned);

/* 1 when stored bytes are packed (start with the mark). */
int sophia_zstd_packed(const char *buf, size_t len);

/* The plain value of stored bytes: *out = buf when they are not packed,
 * else a malloc'd NUL-terminated copy, also in *owned (NULL otherwise).
 * 0, SOPHIA_EPARSE (unknown format, corrupt frame, a dictionary this
 * handle lacks), SOPHIA_ETOOBIG (over SOPHIA_ZSTD_MAX_PLAIN) or
 * SOPHIA_ENOMEM. z may be NULL: frames without a dictionary are read. */
int sophia_zstd_unpack(sophia_zstd *z, const char *buf, size_t len,
                       const char **out, size_t *out_len, char **owned);

void sophia_zstd_get_stats(const sophia_zstd *z, sophia_zstd_stats *out);
/* The `cache.compress` object of /api/stats (settings and the figures)
 * and its /metrics lines, from one statdef table (lib/statdef.h). */
json_t *sophia_zstd_stats_json(const sophia_zstd *z);
void sophia_zstd_write_prom(const sophia_zstd *z, FILE *f);

/* A dictionary of at most `cap` bytes trained from n samples
 * (ZDICT_trainFromBuffer), malloc'd, its size in *dict_len; NULL with a
 * reason in err (too few or too small samples, say). */
void *sophia_zstd_train(const char *const *samples, const size_t *lens,
                        size_t n, size_t cap, size_t *dict_len, char *err,
                        size_t errlen);

#endif
