/*
 * config - the typed model of sophia.yaml, read with libyaml.
 *
 * The loader walks libyaml's document tree once, checks every key against a
 * table of the keys each section allows, and fills plain C structs. Every
 * problem (unknown key, wrong type, bad value, duplicate key, YAML syntax
 * error) is added to a sophia_diag as `FILE:LINE:COL: message` and loading
 * goes on, so one `--check` shows them all. Plugin options are kept as
 * untyped scalars with their positions: only the plugin's option table knows
 * their types, and the plugin loader validates them (plugin.c).
 *
 * Secrets never live in the file: sections name environment variables
 * (`secret_env: NAME`) and the values are read at load time.
 */
#ifndef SOPHIA_CONFIG_H
#define SOPHIA_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "diag.h"

/* A plugin option as written in YAML: a scalar or a sequence of scalars. */
typedef struct sophia_conf_opt {
    char *key;
    char *scalar;  /* NULL for a sequence */
    char **items;  /* sequence items (is_seq) */
    size_t nitems;
    int is_seq;
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

/* streams.<name>: where events of one stream go. */
typedef struct sophia_conf_stream {
    char *name;
    char *processor;   /* instance name of a processor plugin */
    size_t queue_size; /* bounded queue; full -> 503 */
    size_t batch_size; /* events processed per loop turn */
    int line, col;
} sophia_conf_stream;

typedef enum sophia_log_lvl {
    SOPHIA_LVL_DEBUG = 0,
    SOPHIA_LVL_INFO,
    SOPHIA_LVL_WARN,
    SOPHIA_LVL_ERROR
} sophia_log_lvl;

typedef struct sophia_conf {
    char *file; /* path it was read from */

    struct {
        char *listen;       /* "HOST:PORT", default "127.0.0.1:8080" */
        size_t max_body;    /* bytes, default 1 MiB */
        char *tokens_env;   /* env var with comma-separated bearer tokens */
        char *tokens;       /* its value at load time, or NULL */
        char *share_dir;    /* dashboard files; NULL = built-in default */
    } server;

    sophia_log_lvl log_level; /* log.level, default info */

    char *redis_url; /* redis.url; NULL/"" = L2 disabled */
    char *pg_url;    /* postgres.url; NULL/"" = L3 disabled */

    struct {
        size_t max_entries; /* default 100000 */
        size_t max_bytes;   /* default 64 MiB */
        double ttl;         /* seconds, default 300 */
    } l1;

    struct {
        size_t max_queue;     /* per-connection messages, default 1024 */
        size_t history;       /* per-topic ring size, default 256 */
        char *auth_env;       /* websocket.auth.secret_env */
        char *auth_secret;    /* its value at load time, or NULL */
    } ws;

    char **plugin_path; /* plugins.path: directories searched in order */
    size_t nplugin_path;
    sophia_conf_instance *instances;
    size_t ninstances;
    sophia_conf_stream *streams;
    size_t nstreams;
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

/* Cross-reference checks that need the whole model: a stream's processor
 * names an instance, listen parses as HOST:PORT, names are unique... */
void sophia_conf_validate(const sophia_conf *c, sophia_diag *diag);

const sophia_conf_instance *sophia_conf_instance_find(const sophia_conf *c,
                                                      const char *name);

void sophia_conf_free(sophia_conf *c);

/* "HOST:PORT" -> host (malloc'd) and port; 0 or -1 when malformed. */
int sophia_conf_split_listen(const char *listen, char **host, int *port);

#endif
