/*
 * cache_zstd - see cache_zstd.h for the stored form and why.
 *
 * One compression and one decompression context per handle, reused for
 * every value (creating one costs more than compressing a few KB), and
 * the dictionary digested once into a CDict/DDict. The handle belongs to
 * the loop thread like the tiers that use it.
 */
#include "cache/cache_zstd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>
#include <zdict.h>
#include <zstd.h>

#include "conf/config.h"
#include "lib/log.h"
#include "lib/statdef.h"

/* Largest dictionary file read: zstd's own trainer defaults to 110 KB. */
#define ZSTD_DICT_MAX ((size_t)4 << 20)

struct sophia_zstd {
    size_t threshold;
    int level;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    ZSTD_CDict *cdict; /* NULL: no dictionary */
    ZSTD_DDict *ddict;
    unsigned dict_id;
    unsigned warned_id; /* the missing dictionary last logged */
    sophia_zstd_stats st;
};

void sophia_zstd_free(sophia_zstd *z)
{
    if (!z)
        return;
    ZSTD_freeCCtx(z->cctx);
    ZSTD_freeDCtx(z->dctx);
    ZSTD_freeCDict(z->cdict);
    ZSTD_freeDDict(z->ddict);
    free(z);
}

sophia_zstd *sophia_zstd_new(size_t threshold, int level, const void *dict,
                             size_t dict_len, char *err, size_t errlen)
{
    sophia_zstd *z = calloc(1, sizeof(*z));
    if (!z) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    z->threshold = threshold;
    z->level = level;
    z->cctx = ZSTD_createCCtx();
    z->dctx = ZSTD_createDCtx();
    if (!z->cctx || !z->dctx) {
        snprintf(err, errlen, "out of memory for the zstd contexts");
        sophia_zstd_free(z);
        return NULL;
    }
    if (dict && dict_len) {
        z->dict_id = ZSTD_getDictID_fromDict(dict, dict_len);
        z->cdict = ZSTD_createCDict(dict, dict_len, level ? level : 3);
        z->ddict = ZSTD_createDDict(dict, dict_len);
        if (!z->dict_id || !z->cdict || !z->ddict) {
            /* A raw-content dictionary has no id: a frame written with it
             * would not say so, and a reader without it would fail
             * obscurely. Only trained (zstd format) dictionaries. */
            snprintf(err, errlen, "not a zstd dictionary (train one with "
                     "sophia-zdict or zstd --train)");
            sophia_zstd_free(z);
            return NULL;
        }
    }
    return z;
}

/* The whole of a small file, malloc'd; NULL with the reason in err. */
static void *read_file(const char *path, size_t *len, char *err,
                       size_t errlen)
{
    FILE *f = fopen(path, "rb");
    void *buf = NULL;
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n <= 0 || (size_t)n > ZSTD_DICT_MAX)
        snprintf(err, errlen, "%s: %s", path,
                 n < 0 ? strerror(errno) : "not 1 byte to 4 MiB");
    else if (fseek(f, 0, SEEK_SET) || !(buf = malloc((size_t)n)) ||
             fread(buf, 1, (size_t)n, f) != (size_t)n) {
        snprintf(err, errlen, "%s: cannot read it", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

sophia_zstd *sophia_zstd_open(size_t threshold, int level, const char *path,
                              char *err, size_t errlen)
{
    if (!path || !*path)
        return sophia_zstd_new(threshold, level, NULL, 0, err, errlen);
    size_t len = 0;
    char why[256];
    void *dict = read_file(path, &len, err, errlen);
    if (!dict)
        return NULL;
    sophia_zstd *z = sophia_zstd_new(threshold, level, dict, len, why,
                                     sizeof(why));
    if (!z)
        snprintf(err, errlen, "%s: %s", path, why);
    free(dict);
    return z;
}

sophia_zstd *sophia_zstd_from_conf(const sophia_conf *conf)
{
    char err[512];
    size_t t = conf->compress.threshold;
    int level = conf->compress.level;
    sophia_zstd *z = sophia_zstd_open(t, level, conf->compress.dictionary,
                                      err, sizeof(err));
    if (z)
        return z;
    sophia_error("cache", "msg=\"zstd dictionary not loaded; compressing "
                 "without it\" err=\"%s\"", err);
    return sophia_zstd_new(t, level, NULL, 0, err, sizeof(err));
}

int sophia_zstd_packed(const char *buf, size_t len)
{
    return len > 0 && buf[0] == SOPHIA_ZSTD_MARK;
}

int sophia_zstd_pack(sophia_zstd *z, const char *val, size_t len,
                     const char **out, size_t *out_len, char **owned)
{
    *out = val;
    *out_len = len;
    *owned = NULL;
    if (!z || !z->level || len <= z->threshold)
        return 0;
    size_t cap = SOPHIA_ZSTD_HEAD + ZSTD_compressBound(len);
    char *b = malloc(cap);
    if (!b)
        return SOPHIA_ENOMEM;
    char *dst = b + SOPHIA_ZSTD_HEAD;
    size_t room = cap - SOPHIA_ZSTD_HEAD;
    size_t n = z->cdict
                   ? ZSTD_compress_usingCDict(z->cctx, dst, room, val, len,
                                              z->cdict)
                   : ZSTD_compressCCtx(z->cctx, dst, room, val, len, z->level);
    if (ZSTD_isError(n) || n + SOPHIA_ZSTD_HEAD >= len) {
        z->st.kept_plain++; /* incompressible (or an error): plain is fine */
        free(b);
        return 0;
    }
    b[0] = SOPHIA_ZSTD_MARK;
    b[1] = SOPHIA_ZSTD_FORMAT;
    z->st.packed++;
    z->st.packed_in += len;
    z->st.packed_out += n + SOPHIA_ZSTD_HEAD;
    *out = b;
    *out_len = n + SOPHIA_ZSTD_HEAD;
    *owned = b;
    return 0;
}

/* The frame's dictionary, or why it cannot be read: NULL and *rc set
 * (0 means no dictionary is needed). */
static const ZSTD_DDict *frame_dict(sophia_zstd *z, const void *f, size_t n,
                                    int *rc)
{
    unsigned id = ZSTD_getDictID_fromFrame(f, n);
    *rc = 0;
    if (!id)
        return NULL;
    if (z && z->ddict && id == z->dict_id)
        return z->ddict;
    if (z && z->warned_id != id) {
        z->warned_id = id;
        sophia_warn("cache", "msg=\"a compressed value needs a zstd "
                    "dictionary this node lacks (cache.compress.dictionary)\" "
                    "dict_id=%u have=%u", id, z->dict_id);
    }
    *rc = SOPHIA_EPARSE;
    return NULL;
}

static size_t decompress(sophia_zstd *z, const ZSTD_DDict *dd, char *dst,
                         size_t cap, const void *src, size_t n)
{
    if (!z)
        return ZSTD_decompress(dst, cap, src, n);
    if (dd)
        return ZSTD_decompress_usingDDict(z->dctx, dst, cap, src, n, dd);
    return ZSTD_decompressDCtx(z->dctx, dst, cap, src, n);
}

/* The plain size of a packed value's frame, or an error rc. */
static int frame_size(const char *buf, size_t len, size_t *plain)
{
    if (len < SOPHIA_ZSTD_HEAD || buf[1] != SOPHIA_ZSTD_FORMAT)
        return SOPHIA_EPARSE; /* a format this build does not know */
    unsigned long long n = ZSTD_getFrameContentSize(buf + SOPHIA_ZSTD_HEAD,
                                                    len - SOPHIA_ZSTD_HEAD);
    if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN)
        return SOPHIA_EPARSE; /* not a frame sophia_zstd_pack wrote */
    if (n > SOPHIA_ZSTD_MAX_PLAIN)
        return SOPHIA_ETOOBIG;
    *plain = (size_t)n;
    return 0;
}

/* A packed value's plain bytes, malloc'd into *out. */
static int unpack_frame(sophia_zstd *z, const char *buf, size_t len,
                        char **out, size_t *plain)
{
    const char *f = buf + SOPHIA_ZSTD_HEAD;
    size_t n = len - SOPHIA_ZSTD_HEAD;
    int rc = frame_size(buf, len, plain);
    if (rc)
        return rc;
    const ZSTD_DDict *dd = frame_dict(z, f, len - SOPHIA_ZSTD_HEAD, &rc);
    if (rc)
        return rc;
    char *b = malloc(*plain + 1);
    if (!b)
        return SOPHIA_ENOMEM;
    if (decompress(z, dd, b, *plain, f, n) != *plain) {
        free(b); /* corrupt, truncated, or a content size that lies */
        return SOPHIA_EPARSE;
    }
    b[*plain] = '\0';
    *out = b;
    return 0;
}

int sophia_zstd_unpack(sophia_zstd *z, const char *buf, size_t len,
                       const char **out, size_t *out_len, char **owned)
{
    *out = buf;
    *out_len = len;
    *owned = NULL;
    if (!sophia_zstd_packed(buf, len))
        return 0;
    char *b = NULL;
    size_t plain = 0;
    int rc = unpack_frame(z, buf, len, &b, &plain);
    if (z && rc)
        z->st.failed++;
    else if (z)
        z->st.unpacked++;
    if (rc)
        return rc;
    *out = b;
    *out_len = plain;
    *owned = b;
    return 0;
}

void sophia_zstd_get_stats(const sophia_zstd *z, sophia_zstd_stats *out)
{
    if (z)
        *out = z->st;
    else
        memset(out, 0, sizeof(*out));
}

typedef struct zstd_figs {
    sophia_zstd_stats st;
    size_t threshold;
    uint64_t level;
    int dictionary;
} zstd_figs;

#define OFF(f) offsetof(zstd_figs, f)

/* `packed` counts each tier's copy: a put to L2 and L3 packs twice. */
static const sophia_statdef zstd_defs[] = {
    SOPHIA_STATDEF("threshold", NULL, NULL, NULL, NULL, OFF(threshold),
                   .kind = SOPHIA_STAT_SIZE),
    SOPHIA_STATDEF("level", NULL, NULL, NULL, NULL, OFF(level)),
    SOPHIA_STATDEF("dictionary", NULL, NULL, NULL, NULL, OFF(dictionary),
                   .kind = SOPHIA_STAT_BOOL),
    SOPHIA_STATDEF("packed", "sophia_cache_compressed_total", "counter", NULL,
                   "Values stored compressed in L2 or L3 (once per tier).",
                   OFF(st.packed)),
    SOPHIA_STATDEF("packed_bytes_in", "sophia_cache_compress_in_bytes_total",
                   "counter", NULL, "Plain bytes of the values compressed.",
                   OFF(st.packed_in)),
    SOPHIA_STATDEF("packed_bytes_out", "sophia_cache_compress_out_bytes_total",
                   "counter", NULL, "Stored bytes of the values compressed.",
                   OFF(st.packed_out)),
    SOPHIA_STATDEF("kept_plain", NULL, NULL, NULL, NULL, OFF(st.kept_plain)),
    SOPHIA_STATDEF("unpacked", NULL, NULL, NULL, NULL, OFF(st.unpacked)),
    SOPHIA_STATDEF("unpack_failed", "sophia_cache_decompress_failed_total",
                   "counter", NULL,
                   "Compressed values L2 or L3 returned that could not be "
                   "read (corrupt, or a dictionary this node lacks).",
                   OFF(st.failed)),
};

#define NDEFS (sizeof(zstd_defs) / sizeof(zstd_defs[0]))

static zstd_figs figs_of(const sophia_zstd *z)
{
    zstd_figs f = {{0}, 0, 0, 0};
    if (z) {
        f.st = z->st;
        f.threshold = z->threshold;
        f.level = (uint64_t)z->level;
        f.dictionary = z->ddict != NULL;
    }
    return f;
}

json_t *sophia_zstd_stats_json(const sophia_zstd *z)
{
    zstd_figs f = figs_of(z);
    return sophia_statdef_json(zstd_defs, NDEFS, &f);
}

void sophia_zstd_write_prom(const sophia_zstd *z, FILE *f)
{
    zstd_figs figs = figs_of(z);
    sophia_statdef_prom(f, zstd_defs, NDEFS, &figs, NULL);
}

void *sophia_zstd_train(const char *const *samples, const size_t *lens,
                        size_t n, size_t cap, size_t *dict_len, char *err,
                        size_t errlen)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    char *all = malloc(total ? total : 1), *w = all;
    void *dict = malloc(cap);
    if (!all || !dict || n > UINT32_MAX) {
        snprintf(err, errlen, "out of memory");
        free(all);
        free(dict);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(w, samples[i], lens[i]);
        w += lens[i];
    }
    size_t r = ZDICT_trainFromBuffer(dict, cap, all, lens, (unsigned)n);
    free(all);
    if (ZDICT_isError(r)) {
        snprintf(err, errlen, "zstd could not train a dictionary from %zu "
                 "values (%zu bytes): %s", n, total, ZDICT_getErrorName(r));
        free(dict);
        return NULL;
    }
    *dict_len = r;
    return dict;
}
