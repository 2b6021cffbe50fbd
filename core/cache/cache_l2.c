/*
 * cache_l2 - see cache_l2.h for the layout in Redis.
 */
#include "cache/cache_l2.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "event/loop.h"

#define KEYBUF 512

/* Deletes every key in the tag set, then the set; returns how many. */
static const char tag_script[] =
    "local ks = redis.call('SMEMBERS', KEYS[1]) "
    "for _, k in ipairs(ks) do redis.call('DEL', k) end "
    "redis.call('DEL', KEYS[1]) return #ks";

typedef struct l2_req {
    sophia_zstd *z; /* a get's, to unpack the value */
    sophia_l2_get_cb get_cb;
    sophia_l2_done_cb done_cb;
    void *arg;
} l2_req;

static char *prefixed(const char *prefix, const char *key, char *buf,
                      size_t n, size_t *len)
{
    size_t pl = strlen(prefix), kl = strlen(key);
    char *p = pl + kl + 1 <= n ? buf : malloc(pl + kl + 1);
    if (!p)
        return NULL;
    memcpy(p, prefix, pl);
    memcpy(p + pl, key, kl + 1);
    *len = pl + kl;
    return p;
}

char *sophia_l2_encode(const char *val, size_t len, int64_t expires_ms,
                       const char *const *tags, size_t *out_len)
{
    size_t tl = 0;
    for (size_t i = 0; tags && tags[i]; i++)
        tl += strlen(tags[i]) + 1;
    char head[32];
    int hl = snprintf(head, sizeof(head), "%" PRId64 " ", expires_ms);
    size_t n = (size_t)hl + tl + 1 + len;
    char *b = malloc(n + 1);
    if (!b)
        return NULL;
    char *w = b;
    memcpy(w, head, (size_t)hl);
    w += hl;
    for (size_t i = 0; tags && tags[i]; i++) {
        if (i)
            *w++ = '\x1f';
        size_t l = strlen(tags[i]);
        memcpy(w, tags[i], l);
        w += l;
    }
    *w++ = '\n';
    memcpy(w, val, len);
    w[len] = '\0';
    *out_len = (size_t)(w - b) + len;
    return b;
}

/* "[-]digits" exactly filling [s, end); the hot path's strtoll. */
static int parse_i64(const char *s, const char *end, int64_t *out)
{
    int neg = s < end && *s == '-';
    s += neg;
    if (s == end || end - s > 18)
        return -1;
    int64_t v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

/* sophia_l2_decode with the tag block in `space` when it fits (a hit
 * then allocates nothing here); *tags != space means malloc'd. */
static int decode_in(const char *buf, size_t len, const char **val,
                     size_t *vlen, int64_t *expires_ms, char ***tags,
                     void *space, size_t cap)
{
    const char *nl = memchr(buf, '\n', len);
    const char *sp = nl ? memchr(buf, ' ', (size_t)(nl - buf)) : NULL;
    int64_t e;
    if (!sp || parse_i64(buf, sp, &e) < 0)
        return SOPHIA_EPARSE;
    const char *t = sp + 1;
    size_t tl = (size_t)(nl - t), nt = tl ? 1 : 0;
    for (size_t i = 0; i < tl; i++)
        nt += t[i] == '\x1f';
    /* One block: the pointer array, then the strings. */
    size_t need = (nt + 1) * sizeof(char *) + tl + 1;
    char **v = need <= cap ? space : malloc(need);
    if (!v)
        return SOPHIA_ENOMEM;
    char *s = (char *)(v + nt + 1);
    memcpy(s, t, tl);
    s[tl] = '\0';
    for (size_t i = 0; i < nt; i++) {
        v[i] = s;
        char *sep = strchr(s, '\x1f');
        if (sep) {
            *sep = '\0';
            s = sep + 1;
        }
    }
    v[nt] = NULL;
    *tags = v;
    *expires_ms = e;
    *val = nl + 1;
    *vlen = len - (size_t)(nl + 1 - buf);
    return 0;
}

int sophia_l2_decode(const char *buf, size_t len, const char **val,
                     size_t *vlen, int64_t *expires_ms, char ***tags)
{
    return decode_in(buf, len, val, vlen, expires_ms, tags, NULL, 0);
}

static l2_req *req_new(sophia_l2_get_cb g, sophia_l2_done_cb d, void *arg)
{
    l2_req *q = malloc(sizeof(*q));
    if (q) {
        q->z = NULL;
        q->get_cb = g;
        q->done_cb = d;
        q->arg = arg;
    }
    return q;
}

static void on_get(void *arg, redisReply *rep)
{
    l2_req *q = arg;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        q->get_cb(q->arg, rep ? SOPHIA_EIO : SOPHIA_EUNAVAIL, NULL, 0, 0,
                  NULL);
    } else if (rep->type != REDIS_REPLY_STRING) {
        q->get_cb(q->arg, SOPHIA_ENOENT, NULL, 0, 0, NULL);
    } else {
        const char *val;
        size_t vlen;
        int64_t exp;
        char **tags = NULL;
        void *space[32]; /* pointer-aligned room for a few short tags */
        int rc = decode_in(rep->str, rep->len, &val, &vlen, &exp, &tags,
                           space, sizeof(space));
        /* PX expires the key on Redis' clock; ours may lag a little. */
        if (rc == 0 && exp && exp <= sophia_now_wall_us() / 1000)
            rc = SOPHIA_ENOENT;
        char *plain = NULL;
        if (rc == 0)
            rc = sophia_zstd_unpack(q->z, val, vlen, &val, &vlen, &plain);
        if (rc == 0)
            q->get_cb(q->arg, 0, val, vlen, exp, (const char *const *)tags);
        else
            q->get_cb(q->arg, rc == SOPHIA_ENOENT ? rc : SOPHIA_EIO, NULL, 0,
                      0, NULL);
        if (tags != (char **)space)
            free(tags);
        free(plain);
    }
    free(q);
}

static void on_done(void *arg, redisReply *rep)
{
    l2_req *q = arg;
    if (q->done_cb)
        q->done_cb(q->arg, !rep ? SOPHIA_EUNAVAIL
                           : rep->type == REDIS_REPLY_ERROR ? SOPHIA_EIO
                                                            : 0);
    free(q);
}

int sophia_l2_get(sophia_redis *r, sophia_zstd *z, const char *key,
                  sophia_l2_get_cb cb, void *arg)
{
    if (!sophia_redis_up(r))
        return SOPHIA_EUNAVAIL;
    char kb[KEYBUF];
    size_t kl;
    char *k = prefixed(SOPHIA_L2_PREFIX, key, kb, sizeof(kb), &kl);
    l2_req *q = req_new(cb, NULL, arg);
    int rc = k && q ? 0 : SOPHIA_ENOMEM;
    if (rc == 0) {
        q->z = z;
        const char *argv[2] = {"GET", k};
        size_t lens[2] = {3, kl};
        rc = sophia_redis_command(r, on_get, q, 2, argv, lens);
    }
    if (rc)
        free(q);
    if (k != kb)
        free(k);
    return rc;
}

/* SADD for each tag, unacknowledged: the SET's reply (sent first) or the
 * last SADD's carries the callback. */
static int add_tags(sophia_redis *r, const char *rkey, size_t kl,
                    const char *const *tags, l2_req *q)
{
    size_t n = 0;
    while (tags && tags[n])
        n++;
    for (size_t i = 0; i < n; i++) {
        char tb[KEYBUF];
        size_t tl;
        char *t = prefixed(SOPHIA_L2_TAG_PREFIX, tags[i], tb, sizeof(tb), &tl);
        if (!t)
            return SOPHIA_ENOMEM;
        const char *argv[3] = {"SADD", t, rkey};
        size_t lens[3] = {4, tl, kl};
        int last = i + 1 == n;
        int rc = sophia_redis_command(r, last ? on_done : NULL,
                                      last ? q : NULL, 3, argv, lens);
        if (t != tb)
            free(t);
        if (rc)
            return rc;
    }
    return 0;
}

int sophia_l2_set(sophia_redis *r, sophia_zstd *z, const char *key,
                  const char *val, size_t len, int64_t expires_ms,
                  const char *const *tags, sophia_l2_done_cb cb, void *arg)
{
    if (!sophia_redis_up(r))
        return SOPHIA_EUNAVAIL;
    int64_t ttl_ms = 0;
    if (expires_ms) {
        ttl_ms = expires_ms - sophia_now_wall_us() / 1000;
        if (ttl_ms <= 0)
            return sophia_l2_del(r, key, cb, arg);
    }
    char kb[KEYBUF], ms[32], *packed;
    size_t kl = 0, el = 0; /* set with k and env; read only when both are */
    char *k = prefixed(SOPHIA_L2_PREFIX, key, kb, sizeof(kb), &kl);
    /* ENOMEM while packing leaves val plain, which reads back the same. */
    sophia_zstd_pack(z, val, len, &val, &len, &packed);
    char *env = sophia_l2_encode(val, len, expires_ms, tags, &el);
    free(packed);
    l2_req *q = req_new(NULL, cb, arg);
    int rc = k && env && q ? 0 : SOPHIA_ENOMEM;
    int has_tags = tags && tags[0];
    if (rc == 0) {
        snprintf(ms, sizeof(ms), "%" PRId64, ttl_ms);
        const char *argv[5] = {"SET", k, env, "PX", ms};
        size_t lens[5] = {3, kl, el, 2, strlen(ms)};
        rc = sophia_redis_command(r, has_tags ? NULL : on_done,
                                  has_tags ? NULL : q, ttl_ms ? 5 : 3, argv,
                                  lens);
    }
    /* A failed SADD is the caller's error (it sees L2 as skipped); the
     * callback is only ever on the last command, so q is unowned then. */
    if (rc == 0 && has_tags)
        rc = add_tags(r, k, kl, tags, q);
    if (rc == 0)
        q = NULL; /* owned by the reply */
    free(q);
    free(env);
    if (k != kb)
        free(k);
    return rc;
}

static int send_keyed(sophia_redis *r, int argc, const char **argv,
                      size_t *lens, sophia_l2_done_cb cb, void *arg)
{
    if (!sophia_redis_up(r))
        return SOPHIA_EUNAVAIL;
    l2_req *q = req_new(NULL, cb, arg);
    if (!q)
        return SOPHIA_ENOMEM;
    int rc = sophia_redis_command(r, on_done, q, argc, argv, lens);
    if (rc)
        free(q);
    return rc;
}

int sophia_l2_del(sophia_redis *r, const char *key, sophia_l2_done_cb cb,
                  void *arg)
{
    char kb[KEYBUF];
    size_t kl;
    char *k = prefixed(SOPHIA_L2_PREFIX, key, kb, sizeof(kb), &kl);
    if (!k)
        return SOPHIA_ENOMEM;
    const char *argv[2] = {"DEL", k};
    size_t lens[2] = {3, kl};
    int rc = send_keyed(r, 2, argv, lens, cb, arg);
    if (k != kb)
        free(k);
    return rc;
}

int sophia_l2_del_tag(sophia_redis *r, const char *tag, sophia_l2_done_cb cb,
                      void *arg)
{
    char tb[KEYBUF];
    size_t tl;
    char *t = prefixed(SOPHIA_L2_TAG_PREFIX, tag, tb, sizeof(tb), &tl);
    if (!t)
        return SOPHIA_ENOMEM;
    const char *argv[4] = {"EVAL", tag_script, "1", t};
    size_t lens[4] = {4, sizeof(tag_script) - 1, 1, tl};
    int rc = send_keyed(r, 4, argv, lens, cb, arg);
    if (t != tb)
        free(t);
    return rc;
}
