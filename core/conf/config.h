/*
 * config - the typed model of sophia.yaml, read with libyaml.
 *
 * The loader walks libyaml's document tree once, checks every key against a
 * table of the keys each section allows, and fills plain C structs. Every
 * problem (unknown key, wrong type, bad value, duplicate key, YAML syntax
 * error) is added to a sophia_diag as `FILE:LINE:COL: message` and loading
 * goes on, so one `--check` shows them all. Plugin options are kept as
 * untyped scalars with their positions: only the plugin's option table knows
 * their types, and the plugin loader validates them (plugin/plugin_opts.c).
 *
 * Secrets never live in the file: sections name environment variables
 * (`secret_env: NAME`) and the values are read at load time.
 */
#ifndef SOPHIA_CONFIG_H
#define SOPHIA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "lib/diag.h"
#include "lib/log.h"

/* A plugin option as written in YAML: a scalar or a sequence of scalars,
 * or (`nested`) a mapping or a sequence holding one, which only an option
 * of type SOPHIA_OPT_JSON takes. */
typedef struct sophia_conf_opt {
    char *key;
    char *scalar;  /* NULL for a sequence or a nested value */
    char **items;  /* sequence items (is_seq) */
    size_t nitems;
    int is_seq;
    int nested;
    char *json;    /* the value as compact JSON text, always set */
    int line, col; /* of the value */
    int key_line, key_col; /* of the key (unknown-key errors point here) */
} sophia_conf_opt;

/* plugins.instances.<name>: one loaded plugin with its options. */
typedef struct sophia_conf_instance {
    char *name;    /* instance name (the mapping key) */
    char *plugin;  /* module name, resolved on plugins.path (lt_dlopenext) */
    sophia_conf_opt *opts;
    size_t nopts;
    int line, col; /* of the instance's mapping key */
} sophia_conf_instance;

/* streams.<name>.filter: one predicate on a dotted JSON path; an event
 * passes the filter when every predicate holds. */
typedef enum sophia_pred_op {
    SOPHIA_PRED_EQUALS = 1,
    SOPHIA_PRED_NOT_EQUALS,
    SOPHIA_PRED_IN,
    SOPHIA_PRED_NOT_IN,
    SOPHIA_PRED_EXISTS,  /* value "true"/"false" */
    SOPHIA_PRED_GT,
    SOPHIA_PRED_GTE,
    SOPHIA_PRED_LT,
    SOPHIA_PRED_LTE,
    SOPHIA_PRED_MATCHES  /* POSIX extended regex */
} sophia_pred_op;

typedef struct sophia_conf_pred {
    char *path;
    sophia_pred_op op;
    char *value;   /* scalar operand (NULL for in / not_in) */
    char **items;  /* in / not_in operands */
    size_t nitems;
    double num;    /* numeric operand of gt/gte/lt/lte */
    int icase;     /* matches: case-insensitive */
    int line, col;
} sophia_conf_pred;

/* One link of streams.<name>.processors: a processor instance, or a
 * filter every event passing on to the next link must meet. */
typedef struct sophia_conf_link {
    char *processor;          /* instance name; NULL for a filter link */
    sophia_conf_pred *filter; /* a filter link's predicates */
    size_t nfilter;
    int line, col;
} sophia_conf_link;

/* streams.<name>: where events of one stream go. */
typedef struct sophia_conf_stream {
    char *name;
    char *processor;   /* instance name of a processor plugin: the only
                        * one, or the chain's first */
    sophia_conf_link *chain; /* streams.<name>.processors, or [processor] */
    size_t nchain;
    /* streams.<name>.outputs: instance names of output plugins its
     * processed events (and their alerts) are delivered to before they
     * are acknowledged; outputs_pos holds line, col of each name. */
    char **outputs;
    int *outputs_pos;
    size_t noutputs;
    size_t queue_size; /* bounded queue; full -> 503 */
    size_t batch_size; /* events processed per loop turn */
    int line, col;
    sophia_conf_pred *filter; /* streams.<name>.filter */
    size_t nfilter;
    char *dedup_key;     /* dotted path of an event's id; NULL = no dedup */
    double dedup_window; /* seconds an id is remembered, default 300 */
    size_t max_attempts; /* deliveries before the dead letter, default 3 */
    double retry_base;   /* back-off of a retried event: first wait, 0.1 s */
    double retry_cap;    /* and the longest, 10 s */
    struct {             /* streams.<name>.redis: a Redis Streams source */
        char *key;       /* the stream key; NULL = no Redis source */
        char *group;     /* consumer group, default "sophia" */
        char *consumer;  /* default <hostname>-<pid> */
        char *field;     /* entry field holding the JSON event, "data" */
        size_t count;    /* entries per XREADGROUP; 0 = 100, 1,000 durable */
        double block;    /* seconds a read blocks, default 1 (max 1.5) */
        double claim_idle; /* seconds before a pending entry is claimed, 30 */
        size_t dead_letter_after; /* deliveries before <key>:dead, 5 */
    } redis;
    char *statsd_listen; /* streams.<name>.statsd.listen HOST:PORT (UDP);
                          * a bare PORT or :PORT means 127.0.0.1:PORT */
    int statsd_line, statsd_col; /* where listen was given */
    char **statsd_allow; /* streams.<name>.statsd.allow: CIDRs senders must
                          * be in; required for a non-loopback listen */
    size_t nstatsd_allow;
    /* streams.<name>.durable: 1 true, 0 false, -1 unset (= on when Redis
     * is configured); see core/ingest/durable.h */
    int durable;
    /* streams.<name>.retention: history a durable stream keeps for replay
     * once every group processed it (source_redis.c); 0 = unset. */
    struct {
        size_t count; /* at most the newest N entries */
        double age;   /* seconds: nothing older */
    } retention;
} sophia_conf_stream;

/* memory.consolidate.<instance>: when a consolidator plugin runs, and
 * how many memories a run looks at (default and bound). */
#define SOPHIA_CONF_CONS_BATCH_DEFAULT 1000
#define SOPHIA_CONF_CONS_BATCH_MAX 100000
#define SOPHIA_CONF_CONS_NEIGHBORS_DEFAULT 8
#define SOPHIA_CONF_CONS_NEIGHBORS_MAX 64
typedef struct sophia_conf_consolidate {
    char *instance;   /* plugin instance name (kind consolidator) */
    double every;     /* seconds between runs; 0 = only by count */
    size_t after_new; /* run after this many new memories; 0 = off */
    size_t batch;     /* memories a run looks at (after the cursor); 0 = default */
    size_t neighbors; /* looked up per memory; 0 = none (set to the default
                         before the section is read) */
    int line, col;
} sophia_conf_consolidate;

/* correlators.<instance>: which streams' committed events a correlator
 * plugin sees, and how often its state is snapshot (host/correlate.h). */
typedef struct sophia_conf_corr_stream {
    char *name;
    int line, col;
} sophia_conf_corr_stream;

typedef struct sophia_conf_correlator {
    char *instance; /* plugin instance name (kind correlator) */
    sophia_conf_corr_stream *streams;
    size_t nstreams;
    double snapshot_every; /* seconds between snapshots; 0 = default 30 */
    int snapshot_off;      /* snapshot: false */
    int line, col;
} sophia_conf_correlator;

/* cache.compress defaults and the level's upper bound (zstd's
 * ZSTD_maxCLevel() is 22, but 20..22 need far more memory per context). */
#define SOPHIA_CONF_COMPRESS_THRESHOLD 1024
#define SOPHIA_CONF_COMPRESS_LEVEL 1
#define SOPHIA_CONF_COMPRESS_LEVEL_MAX 19

/* Upper bound of cache.l3.pool (pg_pool.h's SOPHIA_PG_POOL_MAX). */
#define SOPHIA_CONF_PG_POOL_MAX 64

/* Longest TTL, in seconds, anything may give a cache entry (10 years): a
 * PUT's "ttl", a plugin's or loader's ttl, cache.l1/l2/l3.ttl. Far below
 * what the tiers' int64 millisecond and microsecond expiries can hold. */
#define SOPHIA_CACHE_MAX_TTL 315360000.0

typedef struct sophia_conf {
    char *file; /* path it was read from */

    struct {
        char *listen;       /* "HOST:PORT", default "127.0.0.1:8080" */
        size_t max_body;    /* bytes, default 1 MiB */
        char *tokens_env;   /* env var with comma-separated bearer tokens */
        char *tokens;       /* its value at load time, or NULL */
        char *share_dir;    /* dashboard files; NULL = built-in default */
        /* server.rate_limit: token bucket per bearer token (or client IP)
         * for /ingest and /api; rate 0 = off (ratelimit.c) */
        struct {
            size_t rate;  /* requests per second refilled */
            size_t burst; /* bucket size; 0 = rate */
        } rate_limit;
        /* Against web pages (http.c): Host names served besides loopback
         * ones (DNS rebinding), and Origins allowed to write besides the
         * server's own; "*" in either allows any. */
        char **hosts;
        size_t nhosts;
        char **origins;
        size_t norigins;
        size_t max_connections; /* open HTTP connections, default 1024 */
        size_t max_body_total;  /* body bytes buffered at once, 64 MiB */
        /* server.tls: a second listener speaking HTTPS and WSS
         * (http_tls.h); listen NULL = none. cert/key are absolute, and
         * were loadable and matching when the file was read. */
        struct {
            char *listen; /* "HOST:PORT" */
            char *cert;   /* PEM certificate, chain after it */
            char *key;    /* PEM private key, unencrypted */
        } tls;
    } server;

    sophia_log_lvl log_level; /* log.level, default info */

    char *redis_url; /* redis.url; NULL/"" = L2 disabled */
    char *pg_url;    /* postgres.url; NULL/"" = L3 disabled */

    struct {
        size_t max_entries; /* default 100000 */
        size_t max_bytes;   /* default 64 MiB */
        double ttl;         /* seconds, default 300 */
    } l1;

    /* cache.l2 / cache.l3: the tier's ttl caps how long it keeps an entry
     * (0 = unset: the entry's own lifetime); l3.pool = connections. */
    struct {
        double ttl;
    } l2;
    struct {
        double ttl;
        size_t pool; /* default 4, 1..SOPHIA_CONF_PG_POOL_MAX */
    } l3;

    /* cache.compress: values above `threshold` bytes are stored in L2 and
     * L3 as zstd frames at `level` (0 = never compress; reads decompress
     * whatever they find), with the zstd dictionary file `dictionary`
     * when set (NULL = none). core/cache/cache_zstd.h has the format. */
    struct {
        size_t threshold; /* default SOPHIA_CONF_COMPRESS_THRESHOLD */
        int level;        /* 0..SOPHIA_CONF_COMPRESS_LEVEL_MAX, default 1 */
        char *dictionary;
    } compress;

    /* cache.write: which write_strategy instance a put goes through. */
    struct {
        char *def;        /* default instance; NULL = built-in write-through */
        char **prefixes;  /* cache.write.prefixes keys; longest match wins */
        char **instances; /* the instance named for each prefix */
        int *pos;         /* line, col of each instance name (2 per prefix) */
        size_t nprefixes;
        int def_line, def_col;
    } cache_write;

    struct {
        size_t max_queue;     /* per-connection messages, default 1024 */
        size_t history;       /* per-topic ring size, default 256 */
        char *auth_env;       /* websocket.auth.secret_env */
        char *auth_secret;    /* its value at load time, or NULL */
        double history_age;   /* seconds a message stays replayable, 300 */
        double ping_interval; /* idle seconds before a ping, default 25 */
        double pong_timeout;  /* seconds to answer a ping, default 10 */
        double auth_timeout;  /* seconds for a first `auth` message, 5 */
        size_t max_connections;   /* default 10000 */
        size_t max_subscriptions; /* per connection, default 256 */
        size_t max_message;       /* bytes per client message, 64 KiB */
        size_t coalesce_at;   /* queue depth where metrics coalesce; 0 = half */
        char **origins;       /* allowed Origin values besides the server's own; "*" = any */
        size_t norigins;
        size_t max_topics;    /* topics with seq/history, default 100000 */
        int jwt_require_exp;  /* websocket.jwt.require_exp, default 1 */
        char *jwt_issuer;     /* websocket.jwt.issuer: `iss` must equal; NULL = any */
        char *jwt_audience;   /* websocket.jwt.audience: `aud` must hold; NULL = any */
        int compression;      /* websocket.compression: 0 off, 1 deflate */
        size_t compression_min; /* smaller messages go uncompressed */
    } ws;

    struct {
        char *redis;   /* cluster.redis: redis:// URL; NULL = redis.url */
        char *node_id; /* cluster.node_id; NULL = host:pid */
        int enabled;   /* cluster.enabled: -1 unset (on when any Redis URL), 0, 1 */
    } cluster;

    struct {                 /* hooks: webhook endpoints (hooks.c) */
        char *slack_env;     /* hooks.slack.secret_env */
        char *slack_secret;  /* its value at load time, or NULL */
        char *slack_stream;  /* default "slack" */
        double slack_dedup;  /* seconds event_ids are remembered, 3600 */
        char *gong_env;      /* hooks.gong.secret_env */
        char *gong_secret;
        char *gong_stream;   /* default "gong" */
        int gong_query_key;  /* hooks.gong.allow_query_key: ?key= accepted, default 0 */
    } hooks;

    struct {
        size_t dim;            /* memory.dim: embedding size, default 384 */
        char *index;           /* memory.index: auto (default), flat, hnsw */
        size_t hnsw_threshold; /* auto: HNSW from this many rows, 50000 */
        char *index_path;      /* memory.index_path; NULL = <conf dir>/data/memory.index */
        char *table;           /* memory.table, default sophia_memory */
        double half_life;      /* memory.half_life: recency, default 7 d */
        size_t max_content;    /* memory.max_content bytes, default 64 KiB */
        size_t workers;        /* memory.workers: threads, default 2 */
        size_t rebuild_removed_pct; /* memory.rebuild_removed_pct: rebuild at this % tombstones, 20; 0 = never */
        struct sophia_conf_consolidate *consolidate; /* memory.consolidate */
        size_t nconsolidate;
        /* memory.embedder: an instance of kind embedder (plugins.instances);
         * NULL = the built-in feature hashing at memory.dim */
        char *embedder;
        int embedder_line, embedder_col;
    } memory;

    char **plugin_path; /* plugins.path: directories searched in order,
                           then sophia_conf_add_plugin_dir's */
    size_t nplugin_path;
    int plugin_strict_modes;    /* plugins.strict_modes, default 1 (plugin.c) */
    double plugin_init_timeout; /* plugins.init_timeout s, default 10 */
    sophia_conf_instance *instances;
    size_t ninstances;
    sophia_conf_stream *streams;
    size_t nstreams;
    sophia_conf_correlator *correlators; /* correlators.<instance> */
    size_t ncorrelators;
} sophia_conf;

/* Parses `file`. Returns the model (possibly partial) and adds each problem
 * to `diag`; the configuration is valid only when diag->count is 0. Returns
 * NULL only when the file cannot be read at all (also reported in diag). */
sophia_conf *sophia_conf_load(const char *file, sophia_diag *diag);

/* Same, from a buffer; `name` is used in messages (tests, fuzzing). */
sophia_conf *sophia_conf_load_string(const char *name, const char *yaml,
                                     size_t len, sophia_diag *diag);

/* Applies SOPHIA_REDIS_URL, SOPHIA_PG_URL, SOPHIA_LISTEN (set-but-empty
 * disables L2/L3), then `listen_override` when not NULL. */
void sophia_conf_apply_env(sophia_conf *c, const char *listen_override);

/* Appends `dir` (absolute) to the plugin directories unless listed
 * already: sophiad's bundled plugins, searched after plugins.path. */
void sophia_conf_add_plugin_dir(sophia_conf *c, const char *dir);

/* server.tls's certificate and key are checked as the file is loaded, so
 * --check and a reload name a bad one with its FILE:LINE:COL, by a
 * function the http layer owns (conf sits below it): the daemon passes it
 * with each load (sophia_conf_load_with). It returns SOPHIA_CONF_TLS_OK
 * when the files load as a pair, else which one is bad with `why` (naming
 * the file). Without one (unit tests, the fuzzer): the paths are not
 * opened. */
enum { SOPHIA_CONF_TLS_OK = 0, SOPHIA_CONF_TLS_BAD_CERT, SOPHIA_CONF_TLS_BAD_KEY };
typedef int (*sophia_conf_tls_check)(void *arg, const char *cert,
                                     const char *key, char *why, size_t n);

/* What a load may be given beyond the text; NULL or zeroed = nothing. */
typedef struct sophia_conf_load_opts {
    sophia_conf_tls_check tls_check; /* NULL: TLS paths only resolved */
    void *tls_check_arg;
} sophia_conf_load_opts;
/* sophia_conf_load and sophia_conf_load_string with `o`. */
sophia_conf *sophia_conf_load_with(const char *file,
                                   const sophia_conf_load_opts *o,
                                   sophia_diag *diag);
sophia_conf *sophia_conf_load_string_with(const char *name, const char *yaml,
                                          size_t len,
                                          const sophia_conf_load_opts *o,
                                          sophia_diag *diag);

/* Cross-reference checks that need the whole model: a stream's processor
 * names an instance, listen parses as HOST:PORT, names are unique... */
void sophia_conf_validate(const sophia_conf *c, sophia_diag *diag);

const sophia_conf_instance *sophia_conf_instance_find(const sophia_conf *c,
                                                      const char *name);

void sophia_conf_free(sophia_conf *c);

/* "HOST:PORT" -> host (malloc'd) and port; 0 or -1 when malformed. */
int sophia_conf_split_listen(const char *listen, char **host, int *port);

/* Every key the loader accepts, depth first in table order, as a dotted
 * path ("server.listen"; user-chosen names as NAME or INSTANCE:
 * "streams.NAME.processor") with its type's description, or NULL for a
 * key with its own parser (its documentation says), and the default the
 * loader itself sets, as YAML would write it, or NULL. The manual page
 * (config_doc.h) is made from this, so it lists what the loader takes. */
typedef void (*sophia_conf_key_fn)(const char *path, const char *type,
                                   const char *def, void *arg);
void sophia_conf_each_key(sophia_conf_key_fn fn, void *arg);

#endif
