/*
 * host_priv - the host runtime (host.h's sophia_host_rt) as the host's
 * files share it: host.c (effects, counters, owed callbacks), host_timer.c
 * (SDK 1.1 timers) and host_read.c (reads owned by an instance).
 *
 * The runtime embeds its own copy of the host table as its first member:
 * the plugin layer records on each instance the table its init() was given
 * (plugin.h), and that pointer is how a host function that gets a self or
 * a context finds the runtime it acts on (sophia_host_rt_of). The constant
 * template (sophia_host_table()) belongs to no runtime.
 */
#ifndef SOPHIA_HOST_PRIV_H
#define SOPHIA_HOST_PRIV_H

#include <stdint.h>

#include "host/host.h"
#include "lib/dict.h"

struct owned_read;
struct host_timer;

#define HOST_COUNTER_HITS 4

/* The topics of the last update published without a severity or an
 * extra topic, kept with what they were built from (host.c's
 * publish_topics): updates:<type>, then dashboard:<id> and stream:<name>
 * when there are. `n` 0: nothing kept. */
typedef struct host_pub_topics {
    const char *type;   /* the update's type as given, see same_type() */
    const char *dash;   /* the id inside buf, or NULL */
    const char *stream; /* the name inside buf, or NULL */
    const char *v[6];
    size_t n;
    char buf[1024]; /* as apply_publish's: the same names fit */
} host_pub_topics;

struct sophia_host_rt {
    sophia_host table;   /* first: an instance's `host` points here */
    sophia_host_env env; /* what actions are applied to */
    sophia_dict *counters; /* "instance\x1fname" -> double* */
    /* The counter slots looked up last, by key (counter_slot): a plugin
     * counts the same few names for every event. Slots live as long as
     * the runtime, so an entry never dangles. */
    struct {
        char key[64];
        size_t wl; /* of key, the instance name's length */
        double *slot;
    } counter_hits[HOST_COUNTER_HITS];
    unsigned counter_next;
    /* Plugin callbacks still owed (host.h): a reload keeps retired
     * plugin code loaded until this is back to zero. */
    size_t callbacks_pending;
    struct owned_read *reads; /* host_read.c */
    host_pub_topics pub_topics; /* apply_publish's, see publish_topics */
    /* host_timer.c: the loop they run on (NULL until bound), every
     * pending timer, and the last id given out. */
    struct event_base *tbase;
    struct host_timer *timers;
    int64_t last_timer_id;
    struct sophia_output *outputs; /* output.c: one runner per output */
    /* output.c: where alerts raised outside an event go (the streams') */
    size_t (*alert_route)(void *arg, const sophia_instance *inst,
                          struct sophia_output **out, size_t max);
    void *alert_route_arg;
};

/* The runtime SDK 1.0's context-free reads use (host.c says why). */
sophia_host_rt *sophia_host_sdk10_rt(void);
/* The environment `ctx`'s runtime applies to (all NULL without one). */
const sophia_host_env *sophia_host_ctx_env(const sophia_ctx *ctx);

/* The 1.0 cache_get, for the owned read that wraps it (host_read.c). */
int sophia_host_rt_cache_get(sophia_host_rt *rt, const char *key,
                             void (*cb)(void *arg, int rc,
                                        const sophia_json *value),
                             void *arg);
/* The 1.0 memory_search on `rt` (memory_host.c). */
int sophia_memory_host_search_rt(sophia_host_rt *rt, const char *query,
                                 const sophia_json *filter, size_t k,
                                 void (*cb)(void *arg, int rc,
                                            const sophia_json *results),
                                 void *arg);

/* host_io.c: the SDK 1.2 I/O members of the table. */
int sophia_host_http_request(sophia_self *self, const sophia_http_request *req,
                             void (*cb)(void *arg, int rc, int status,
                                        const char *body, size_t len),
                             void *arg);
int sophia_host_redis_command(sophia_self *self, const char *url, int argc,
                              const char *const *argv, const size_t *argvlen,
                              void (*cb)(void *arg, int rc,
                                         const sophia_json *reply),
                              void *arg);
int sophia_host_pg_query(sophia_self *self, const char *conninfo,
                         const char *sql, int nparams,
                         const char *const *values,
                         void (*cb)(void *arg, int rc, int64_t rows,
                                    const char *err),
                         void *arg);
int sophia_host_hmac_sha256_hex(const void *key, size_t key_len,
                                const void *data, size_t len, char hex[65]);

#endif
