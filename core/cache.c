/*
 * cache - see cache.h for what this cut covers.
 */
#include "cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sophia/sdk.h>

#include "cache_l1.h"
#include "log.h"
#include "loop.h"
#include "pg.h"
#include "redis.h"

struct sophia_cache {
    sophia_l1 *l1;
    sophia_redis *l2; /* NULL = disabled */
    sophia_pg *l3;    /* NULL = disabled */
    double default_ttl;
    uint64_t l2_writes;
    uint64_t l2_skipped; /* puts made while L2 was down */
};

sophia_cache *sophia_cache_new(const sophia_conf *conf, struct event_base *base)
{
    sophia_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->default_ttl = conf->l1.ttl > 0 ? conf->l1.ttl : 300;
    c->l1 = sophia_l1_new(conf->l1.max_entries, conf->l1.max_bytes);
    if (!c->l1) {
        free(c);
        return NULL;
    }
    if (conf->redis_url && *conf->redis_url) {
        c->l2 = sophia_redis_new(base, conf->redis_url);
        if (!c->l2)
            sophia_error("cache", "msg=\"bad redis url, L2 disabled\" url=%s",
                         conf->redis_url);
    }
    if (conf->pg_url && *conf->pg_url)
        c->l3 = sophia_pg_new(base, conf->pg_url);
    return c;
}

void sophia_cache_free(sophia_cache *c)
{
    if (!c)
        return;
    sophia_redis_free(c->l2);
    sophia_pg_free(c->l3);
    sophia_l1_free(c->l1);
    free(c);
}

static void l2_put(sophia_cache *c, const char *key, const char *val,
                   size_t len, double ttl_s)
{
    char ms[32];
    snprintf(ms, sizeof(ms), "%lld", (long long)(ttl_s * 1000.0));
    const char *argv[5] = {"SET", key, val, "PX", ms};
    size_t lens[5] = {3, strlen(key), len, 2, strlen(ms)};
    if (sophia_redis_command(c->l2, NULL, NULL, 5, argv, lens) == 0)
        c->l2_writes++;
    else
        c->l2_skipped++;
}

int sophia_cache_put(sophia_cache *c, const char *key, const char *val,
                     size_t len, double ttl_s, const char *const *tags)
{
    if (ttl_s <= 0)
        ttl_s = c->default_ttl;
    int64_t now = sophia_now_mono_us();
    int rc = sophia_l1_put(c->l1, key, val, len, now + (int64_t)(ttl_s * 1e6),
                           tags, now);
    if (c->l2)
        l2_put(c, key, val, len, ttl_s);
    return rc;
}

int sophia_cache_peek(sophia_cache *c, const char *key, const char **val,
                      size_t *len)
{
    const void *v;
    int rc = sophia_l1_get(c->l1, key, sophia_now_mono_us(), &v, len);
    *val = rc == 0 ? v : NULL;
    return rc;
}

int sophia_cache_del(sophia_cache *c, const char *key)
{
    if (c->l2) {
        const char *argv[2] = {"DEL", key};
        size_t lens[2] = {3, strlen(key)};
        sophia_redis_command(c->l2, NULL, NULL, 2, argv, lens);
    }
    return sophia_l1_del(c->l1, key);
}

size_t sophia_cache_invalidate_tag(sophia_cache *c, const char *tag)
{
    return sophia_l1_invalidate_tag(c->l1, tag);
}

int sophia_cache_l2_state(const sophia_cache *c, const char **err)
{
    if (!c->l2) {
        *err = "disabled";
        return -1;
    }
    *err = sophia_redis_last_error(c->l2);
    return sophia_redis_up(c->l2);
}

int sophia_cache_l3_state(const sophia_cache *c, const char **err)
{
    if (!c->l3) {
        *err = "disabled";
        return -1;
    }
    *err = sophia_pg_last_error(c->l3);
    return sophia_pg_up(c->l3);
}

static json_t *tier_state_json(int state, const char *err)
{
    const char *s = state < 0 ? "disabled" : state ? "up" : "down";
    json_t *o = json_pack("{s:s}", "status", s);
    if (state == 0)
        json_object_set_new(o, "error", json_string(err));
    return o;
}

json_t *sophia_cache_stats_json(const sophia_cache *c)
{
    sophia_l1_stats s;
    sophia_l1_get_stats(c->l1, &s);
    uint64_t lookups = s.hits + s.misses;
    json_t *l1 = json_pack(
        "{s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:I}", "hits", (json_int_t)s.hits,
        "misses", (json_int_t)s.misses, "hit_rate",
        lookups ? (double)s.hits / (double)lookups : 0.0, "entries",
        (json_int_t)s.entries, "bytes", (json_int_t)s.bytes, "evictions",
        (json_int_t)s.evictions, "max_entries", (json_int_t)s.max_entries,
        "max_bytes", (json_int_t)s.max_bytes);
    const char *err;
    int st = sophia_cache_l2_state(c, &err);
    json_t *l2 = tier_state_json(st, err);
    if (c->l2) {
        sophia_redis_stats rs;
        sophia_redis_get_stats(c->l2, &rs);
        json_object_set_new(l2, "writes", json_integer((json_int_t)c->l2_writes));
        json_object_set_new(l2, "skipped_down", json_integer((json_int_t)c->l2_skipped));
        json_object_set_new(l2, "errors", json_integer((json_int_t)rs.errors));
        json_object_set_new(l2, "reconnects", json_integer((json_int_t)rs.reconnects));
    }
    st = sophia_cache_l3_state(c, &err);
    return json_pack("{s:o,s:o,s:o}", "l1", l1, "l2", l2, "l3",
                     tier_state_json(st, err));
}
