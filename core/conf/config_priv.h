/*
 * config_priv - what the parts of the YAML loader share (config.c says how
 * loading works): the node tree, the loader's state, the field tables'
 * types, and the functions one part calls in another. Not for other
 * modules: they see config.h only.
 */
#ifndef SOPHIA_CONFIG_PRIV_H
#define SOPHIA_CONFIG_PRIV_H

#include <stddef.h>
#include <string.h>

#include <yaml.h>

#include "conf/config.h"

/* Appends one zeroed element to the array `arr` of `n` and yields it. */
#define GROW(arr, n)                                              \
    ((arr) = conf_grow_array((arr), (n), sizeof(*(arr))),              \
     memset(&(arr)[(n)], 0, sizeof(*(arr))), &(arr)[(n)++])

typedef enum { NODE_SCALAR, NODE_SEQ, NODE_MAP } node_kind;

typedef struct node {
    node_kind kind;
    int line, col;        /* 1-based */
    char *text;           /* scalar */
    size_t len;
    int plain;            /* unquoted scalar: may be a YAML null */
    int reported;         /* already has an error: schema stays quiet */
    const struct node *dup_of; /* set on a key that repeats an earlier one */
    struct node **kids;   /* seq: items; map: key, value, key, value... */
    size_t nkids;
} node;

typedef struct loader {
    yaml_parser_t parser;
    const char *name;
    const char *buf;
    size_t len;
    sophia_diag *diag;
    sophia_conf *c;
    char *basedir;   /* absolute directory of the YAML file */
    int broken;      /* syntax error or too deep: stop parsing */
    sophia_conf_load_opts opts; /* the caller's (config.h) */
} loader;

#define ERR(ld, n, ...) \
    sophia_diag_add((ld)->diag, (ld)->name, (n)->line, (n)->col, __VA_ARGS__)

typedef enum {
    F_STRING,   /* required non-empty string */
    F_URL,      /* string; empty or null -> NULL (disabled) */
    F_REDIS_URL, /* F_URL checked by redis_url.h */
    F_DIR,      /* string path, made absolute against the file's dir */
    F_LISTEN,   /* HOST:PORT */
    F_SIZE,     /* bytes with optional suffix, > 0 */
    F_COUNT,    /* integer > 0 */
    F_COUNT0,   /* integer >= 0 */
    F_SECONDS,  /* duration > 0 */
    F_TTL,      /* duration > 0 and <= SOPHIA_CACHE_MAX_TTL (a cache tier's) */
    F_LEVEL,    /* log level */
    F_BOOL,     /* true/false (yes/no, on/off) into an int */
    F_SECRET,   /* env var name at off, its value at off2 */
    F_SECTION,  /* nested mapping described by sub */
    F_CUSTOM,   /* fn */
} field_type;

struct section;
typedef void (*field_fn)(loader *ld, const node *val, void *base,
                         const char *path);

typedef struct field {
    const char *key;
    field_type type;
    size_t off, off2;
    const struct section *sub;
    field_fn fn;
} field;

typedef struct section {
    const char *where; /* for "unknown key 'k' WHERE": "in server" */
    const field *fields; /* terminated by key == NULL */
} section;

#define AT(base, off, T) ((T *)(void *)((char *)(base) + (off)))

typedef void (*pair_fn)(loader *ld, const node *key, const node *val,
                        void *base, const void *arg, const char *path);

/* config_yaml.c: allocation (aborts on OOM) and the tree */
void *conf_xrealloc(void *p, size_t n);
char *conf_xstrndup(const char *s, size_t n);
char *conf_xstrdup(const char *s);
void *conf_grow_array(void *arr, size_t n, size_t elem);
void conf_node_free(node *n);
int conf_is_null(const node *n);
const char *conf_kind_name(const node *n);
node *conf_parse_document(loader *ld);

/* config_schema.c: values, paths and the walker */
int conf_parse_ll(const char *s, long long *out);
char *conf_absolutize(const char *base, const char *path);
char *conf_base_dir_of(const char *name);
void conf_each_pair(loader *ld, const node *map, const char *path,
                    pair_fn fn, void *base, const void *arg);
void conf_child_path(char *buf, size_t n, const char *path, const char *key);
const char *conf_want_scalar(loader *ld, const node *v, const char *path,
                             const char *expected);
void conf_set_str(char **slot, char *value);
int conf_parse_bool(const char *s);
void conf_apply_secret(loader *ld, const field *f, const node *v,
                       void *base, const char *path);
void conf_walk_section(loader *ld, const node *map, const section *sec,
                       void *base, const char *path);
int conf_has_key(const node *map, const char *key);
int conf_check_named(loader *ld, const node *k, const node *v,
                     const char *path, const char *what);

/* config_sections.c */
extern const field conf_instance_fields[];
void conf_walk_instances(loader *ld, const node *v, void *base,
                         const char *path);
extern const field conf_consolidate_fields[];
void conf_walk_consolidate(loader *ld, const node *v, void *base,
                           const char *path);
extern const field conf_correlator_fields[];
void conf_walk_correlators(loader *ld, const node *v, void *base,
                           const char *path);
extern const section conf_top_sec;

/* config_streams.c */
extern const field conf_stream_fields[];
void conf_walk_streams(loader *ld, const node *v, void *base,
                       const char *path);

#endif
