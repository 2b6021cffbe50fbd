/*
 * config - reads sophia.yaml into the model of config.h.
 *
 * Loading is two passes over one small tree. The first pass drives libyaml's
 * event parser (not its document loader) and builds our own node tree, which
 * is what lets us refuse anchors and aliases as they appear (no alias can
 * ever be expanded, so a "billion laughs" file costs nothing), stop
 * descending past SOPHIA_CONF_MAX_DEPTH levels, and mark duplicate mapping
 * keys, which libyaml accepts silently. The second pass checks that tree
 * against tables of the keys each section allows (Fluent Bit's config_map
 * idea: key, type, offset), so unknown keys, wrong types and bad values are
 * all found the same way and each becomes one `FILE:LINE:COL: message` with
 * the position of the offending node. Loading never stops at the first
 * problem; a bad value leaves the default in place so the rest still checks.
 * A YAML syntax error is the one exception: libyaml cannot resume after it,
 * so it is reported alone and the model keeps its defaults; nesting deeper
 * than SOPHIA_CONF_MAX_DEPTH is treated the same way (see too_deep).
 *
 * Conventions the rest of the daemon can rely on:
 * - an empty URL (from the file or SOPHIA_REDIS_URL / SOPHIA_PG_URL) is
 *   stored as NULL, so "disabled" has exactly one representation;
 * - a secret env var that is unset or set to "" leaves the secret NULL;
 * - plugins.path entries, server.share_dir and server.tls.cert/key are
 *   absolute: relative ones are resolved against the directory of the YAML
 *   file (for sophia_conf_load_string, the directory part of `name`), never
 *   the cwd of whoever started the daemon;
 * - running out of memory aborts: a half-built configuration is worse than
 *   none, and there is nothing useful to do without memory at startup.
 */
#include "conf/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <regex.h>
#include <yaml.h>

#include "lib/cidr.h"
#include "http/http_tls.h"
#include "lib/log.h"
#include "lib/redis_url.h"

#define SOPHIA_CONF_MAX_DEPTH 64
#define SOPHIA_CONF_MAX_FILE (16u << 20)

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define DEFAULT_MAX_BODY_TOTAL ((size_t)64 << 20)
#define DEFAULT_HTTP_CONNECTIONS 1024
#define DEFAULT_L1_ENTRIES 100000
#define DEFAULT_L1_BYTES ((size_t)64 << 20)
#define DEFAULT_L1_TTL 300.0
#define DEFAULT_L3_POOL 4
#define DEFAULT_WS_QUEUE 1024
#define DEFAULT_WS_HISTORY 256
#define DEFAULT_WS_HISTORY_AGE 300.0
#define DEFAULT_WS_PING 25.0
#define DEFAULT_WS_PONG 10.0
#define DEFAULT_WS_AUTH_TIMEOUT 5.0
#define DEFAULT_WS_MAX_CONN 10000
#define DEFAULT_WS_MAX_SUBS 256
#define DEFAULT_WS_MAX_MESSAGE (64 * 1024)
#define DEFAULT_WS_MAX_TOPICS 100000
/* HS256 keys shorter than the hash fall to offline guessing (RFC 7518 3.2) */
#define MIN_JWT_SECRET 32
#define DEFAULT_STREAM_QUEUE 10000
#define DEFAULT_STREAM_BATCH 256

/* ---- small allocation helpers (abort on OOM, see above) ---------------- */

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("sophia: out of memory while loading configuration\n", stderr);
        abort();
    }
    return q;
}

static char *xstrndup(const char *s, size_t n)
{
    char *d = xrealloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* Arrays in the model carry no capacity, so they grow to the next power of
 * two whenever their length reaches one: amortized O(1) appends even for a
 * mapping with a million keys. */
static void *grow_array(void *arr, size_t n, size_t elem)
{
    if (n == 0 || (n & (n - 1)) == 0)
        arr = xrealloc(arr, (n ? 2 * n : 1) * elem);
    return arr;
}

/* Appends one zeroed element to the array `arr` of `n` and yields it. */
#define GROW(arr, n)                                              \
    ((arr) = grow_array((arr), (n), sizeof(*(arr))),              \
     memset(&(arr)[(n)], 0, sizeof(*(arr))), &(arr)[(n)++])

/* ---- the node tree ----------------------------------------------------- */

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

static void node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static int is_null(const node *n)
{
    if (n->kind != NODE_SCALAR || !n->plain)
        return 0;
    const char *t = n->text;
    return n->len == 0 || !strcmp(t, "~") || !strcmp(t, "null") ||
           !strcmp(t, "Null") || !strcmp(t, "NULL");
}

static const char *kind_name(const node *n)
{
    if (n->kind == NODE_MAP)
        return "a mapping";
    if (n->kind == NODE_SEQ)
        return "a sequence";
    return is_null(n) ? "nothing (null)" : "a scalar";
}

/* ---- loader state ------------------------------------------------------ */

typedef struct loader {
    yaml_parser_t parser;
    const char *name;
    const char *buf;
    size_t len;
    sophia_diag *diag;
    sophia_conf *c;
    char *basedir;   /* absolute directory of the YAML file */
    int broken;      /* syntax error or too deep: stop parsing */
} loader;

#define ERR(ld, n, ...) \
    sophia_diag_add((ld)->diag, (ld)->name, (n)->line, (n)->col, __VA_ARGS__)

/* Line and column of a byte offset, for reader errors that carry no mark. */
static void offset_pos(const loader *ld, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && i < ld->len; i++) {
        if (ld->buf[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static void report_syntax(loader *ld)
{
    yaml_parser_t *p = &ld->parser;
    int line = (int)p->problem_mark.line + 1;
    int col = (int)p->problem_mark.column + 1;
    const char *problem = p->problem ? p->problem : "unknown problem";

    ld->broken = 1;
    if (p->error == YAML_MEMORY_ERROR) {
        sophia_diag_add(ld->diag, ld->name, 0, 0, "out of memory parsing YAML");
    } else if (p->error == YAML_READER_ERROR) {
        offset_pos(ld, p->problem_offset, &line, &col);
        sophia_diag_add(ld->diag, ld->name, line, col,
                        "YAML syntax error: %s", problem);
    } else if (p->context) {
        sophia_diag_add(ld->diag, ld->name, line, col,
                        "YAML syntax error: %s (%s started at line %d "
                        "column %d)", problem, p->context,
                        (int)p->context_mark.line + 1,
                        (int)p->context_mark.column + 1);
    } else {
        sophia_diag_add(ld->diag, ld->name, line, col,
                        "YAML syntax error: %s", problem);
    }
}

static int next_event(loader *ld, yaml_event_t *ev)
{
    if (ld->broken)
        return 0;
    if (!yaml_parser_parse(&ld->parser, ev)) {
        report_syntax(ld);
        return 0;
    }
    return 1;
}

/* ---- pass 1: events -> tree -------------------------------------------- */

static node *parse_node(loader *ld, yaml_event_t *ev, int depth);

static node *node_at(node_kind kind, const yaml_mark_t *m)
{
    node *n = xrealloc(NULL, sizeof(*n));
    memset(n, 0, sizeof(*n));
    n->kind = kind;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    return n;
}

static void refuse_anchor(loader *ld, const yaml_char_t *anchor,
                          const yaml_mark_t *m)
{
    if (anchor)
        sophia_diag_add(ld->diag, ld->name, (int)m->line + 1,
                        (int)m->column + 1,
                        "anchor '&%s' refused: aliases are not allowed in "
                        "sophia configuration", (const char *)anchor);
}

static node *scalar_node(loader *ld, yaml_event_t *ev)
{
    node *n = node_at(NODE_SCALAR, &ev->start_mark);
    refuse_anchor(ld, ev->data.scalar.anchor, &ev->start_mark);
    n->len = ev->data.scalar.length;
    n->text = xstrndup((const char *)ev->data.scalar.value, n->len);
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (memchr(n->text, '\0', n->len)) {
        ERR(ld, n, "NUL characters are not allowed in values");
        n->reported = 1;
    }
    return n;
}

/* Too deep: stop reading altogether, like a syntax error. Skipping to the
 * end of the deep part instead would cost libyaml time quadratic in the
 * depth of flow collections ("[[[[..."), a cheap way to stall --check. */
static node *too_deep(loader *ld, yaml_event_t *ev)
{
    node *n = node_at(NODE_SCALAR, &ev->start_mark);
    n->text = xstrdup("");
    n->plain = 1;
    n->reported = 1;
    ERR(ld, n, "nesting is deeper than %d levels; stopped reading",
        SOPHIA_CONF_MAX_DEPTH);
    ld->broken = 1;
    return n;
}

static int key_cmp(const void *a, const void *b)
{
    const node *x = *(node *const *)a, *y = *(node *const *)b;
    size_t l = x->len < y->len ? x->len : y->len;
    int r = memcmp(x->text, y->text, l);
    if (r == 0 && x->len != y->len)
        r = x->len < y->len ? -1 : 1;
    if (r == 0) /* keep document order among equal keys */
        r = (x->line != y->line) ? (x->line < y->line ? -1 : 1)
                                 : (x->col < y->col ? -1 : x->col > y->col);
    return r;
}

/* Marks repeated scalar keys; sorting keeps huge mappings O(n log n). */
static void mark_duplicates(node *map)
{
    size_t n = 0;
    node **keys = xrealloc(NULL, (map->nkids / 2 + 1) * sizeof(*keys));
    for (size_t i = 0; i + 1 < map->nkids; i += 2)
        if (map->kids[i]->kind == NODE_SCALAR)
            keys[n++] = map->kids[i];
    qsort(keys, n, sizeof(*keys), key_cmp);
    for (size_t i = 1; i < n; i++) {
        const node *a = keys[i - 1], *b = keys[i];
        if (a->len == b->len && !memcmp(a->text, b->text, a->len))
            keys[i]->dup_of = a->dup_of ? a->dup_of : a;
    }
    free(keys);
}

static node *collection_node(loader *ld, yaml_event_t *ev, int depth)
{
    int is_map = ev->type == YAML_MAPPING_START_EVENT;
    yaml_event_type_t end = is_map ? YAML_MAPPING_END_EVENT
                                   : YAML_SEQUENCE_END_EVENT;
    refuse_anchor(ld, is_map ? ev->data.mapping_start.anchor
                             : ev->data.sequence_start.anchor,
                  &ev->start_mark);
    if (depth > SOPHIA_CONF_MAX_DEPTH)
        return too_deep(ld, ev);

    node *n = node_at(is_map ? NODE_MAP : NODE_SEQ, &ev->start_mark);
    yaml_event_t e;
    while (next_event(ld, &e)) {
        if (e.type == end) {
            yaml_event_delete(&e);
            break;
        }
        node *kid = parse_node(ld, &e, depth + 1);
        yaml_event_delete(&e);
        node **slot = GROW(n->kids, n->nkids);
        *slot = kid;
    }
    if (is_map && !ld->broken)
        mark_duplicates(n);
    return n;
}

static node *parse_node(loader *ld, yaml_event_t *ev, int depth)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar_node(ld, ev);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        return collection_node(ld, ev, depth);
    case YAML_ALIAS_EVENT: {
        node *n = node_at(NODE_SCALAR, &ev->start_mark);
        n->text = xstrdup("");
        n->plain = 1;
        n->reported = 1;
        ERR(ld, n, "alias '*%s' refused: aliases are not allowed in sophia "
                   "configuration", (const char *)ev->data.alias.anchor);
        return n;
    }
    default: { /* unreachable with a conforming parser */
        node *n = node_at(NODE_SCALAR, &ev->start_mark);
        n->text = xstrdup("");
        n->plain = 1;
        return n;
    }
    }
}

/* Reads the whole stream; returns the root of its one document or NULL. */
static node *parse_document(loader *ld)
{
    node *root = NULL;
    int docs = 0;
    yaml_event_t ev;
    while (next_event(ld, &ev)) {
        yaml_event_type_t t = ev.type;
        if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
            sophia_diag_add(ld->diag, ld->name, (int)ev.start_mark.line + 1,
                            (int)ev.start_mark.column + 1,
                            "only one YAML document is allowed");
            yaml_event_delete(&ev);
            break;
        }
        if (t == YAML_SCALAR_EVENT || t == YAML_ALIAS_EVENT ||
            t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT)
            root = parse_node(ld, &ev, 1);
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT)
            break;
    }
    return root;
}

/* ---- value parsers (pure, also used by validation) --------------------- */

/* Strict base-10 integer: whole string, no blanks. -2 on overflow. */
static int parse_ll(const char *s, long long *out)
{
    if (!*s || !(isdigit((unsigned char)*s) || *s == '-'))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end)
        return -1;
    if (errno == ERANGE)
        return -2;
    *out = v;
    return 0;
}

/* "1048576", "64k", "512KiB", "2MB", "64 MiB": bare letters and *iB are
 * powers of 1024 (nginx habit), kB/MB/GB/TB powers of 1000 (SI). */
static int parse_size(const char *s, unsigned long long *out)
{
    static const struct { const char *sfx; unsigned long long mul; } units[] = {
        {"", 1}, {"b", 1},
        {"k", 1ull << 10}, {"kib", 1ull << 10}, {"kb", 1000ull},
        {"m", 1ull << 20}, {"mib", 1ull << 20}, {"mb", 1000000ull},
        {"g", 1ull << 30}, {"gib", 1ull << 30}, {"gb", 1000000000ull},
        {"t", 1ull << 40}, {"tib", 1ull << 40}, {"tb", 1000000000000ull},
    };
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -1;
    unsigned long long v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return -2;
        v = v * 10 + d;
    }
    if (*p == ' ')
        p++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(p, units[i].sfx))
            continue;
        if (v > ULLONG_MAX / units[i].mul)
            return -2;
        *out = v * units[i].mul;
        return 0;
    }
    return -1;
}

/* "300", "1.5", "250ms", "30s", "5m", "1h", "1d" -> seconds. */
static int parse_seconds(const char *s, double *out)
{
    static const struct { const char *sfx; double mul; } units[] = {
        {"", 1}, {"ms", 0.001}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400},
    };
    const char *p = s;
    int digits = 0, dots = 0;
    for (; isdigit((unsigned char)*p) || *p == '.'; p++) {
        digits += *p != '.';
        dots += *p == '.';
    }
    if (!digits || dots > 1)
        return -1;
    double v = strtod(s, NULL);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].sfx))
            continue;
        v *= units[i].mul;
        if (!isfinite(v))
            return -1;
        *out = v;
        return 0;
    }
    return -1;
}

static int valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
            return 0;
    return 1;
}

static int valid_env_name(const char *s)
{
    if (!*s || isdigit((unsigned char)*s))
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return 0;
    return 1;
}

static int parse_port(const char *s)
{
    long long v;
    if (!isdigit((unsigned char)*s) || parse_ll(s, &v) || v < 1 || v > 65535)
        return -1;
    return (int)v;
}

int sophia_conf_split_listen(const char *listen, char **host, int *port)
{
    if (host)
        *host = NULL;
    if (!listen)
        return -1;
    const char *h = listen, *hend, *colon;
    if (*listen == '[') { /* [v6]:port */
        h = listen + 1;
        hend = strchr(h, ']');
        if (!hend || hend[1] != ':')
            return -1;
        colon = hend + 1;
    } else {
        colon = strchr(listen, ':');
        if (!colon || strchr(colon + 1, ':'))
            return -1; /* bare IPv6 must be bracketed */
        hend = colon;
    }
    if (hend == h)
        return -1;
    for (const char *q = h; q < hend; q++)
        if (isspace((unsigned char)*q) || *q == '[' || *q == ']' || *q == '/')
            return -1;
    int p = parse_port(colon + 1);
    if (p < 0)
        return -1;
    if (port)
        *port = p;
    if (host)
        *host = xstrndup(h, (size_t)(hend - h));
    return 0;
}

/* ---- paths ------------------------------------------------------------- */

/* Collapses "//", "." and ".." in an absolute path, lexically. */
static char *normalize_path(const char *abs)
{
    size_t n = strlen(abs);
    char *out = xrealloc(NULL, n + 2);
    size_t o = 0;
    const char *p = abs;
    while (*p) {
        while (*p == '/')
            p++;
        const char *seg = p;
        while (*p && *p != '/')
            p++;
        size_t l = (size_t)(p - seg);
        if (l == 0 || (l == 1 && seg[0] == '.'))
            continue;
        if (l == 2 && seg[0] == '.' && seg[1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
            continue;
        }
        out[o++] = '/';
        memcpy(out + o, seg, l);
        o += l;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return out;
}

static char *join_path(const char *dir, const char *rel)
{
    size_t a = strlen(dir), b = strlen(rel);
    char *s = xrealloc(NULL, a + b + 2);
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, rel, b + 1);
    return s;
}

/* Canonical when the path exists (symlinks resolved), else lexical. */
static char *absolutize(const char *base, const char *path)
{
    char *joined = path[0] == '/' ? xstrdup(path) : join_path(base, path);
    char *real = realpath(joined, NULL);
    char *res = real ? xstrdup(real) : normalize_path(joined);
    free(real);
    free(joined);
    return res;
}

/* Directory holding `name`, absolute. */
static char *base_dir_of(const char *name)
{
    const char *slash = strrchr(name, '/');
    char *dir;
    if (!slash)
        dir = xstrdup(".");
    else /* "/t.yaml" lives in "/" */
        dir = xstrndup(name, slash == name ? 1 : (size_t)(slash - name));
    if (dir[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        char *j = join_path(cwd ? cwd : "/", dir);
        free(cwd);
        free(dir);
        dir = j;
    }
    char *res = absolutize("/", dir);
    free(dir);
    return res;
}

/* ---- pass 2: the schema ------------------------------------------------ */

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

/* Calls fn for each well-formed pair of a mapping; a null value counts as an
 * empty mapping, so `options:` with nothing under it is fine. */
static void each_pair(loader *ld, const node *map, const char *path,
                      pair_fn fn, void *base, const void *arg)
{
    if (map->reported || is_null(map))
        return;
    if (map->kind != NODE_MAP) {
        ERR(ld, map, "%s: expected a mapping, got %s", path, kind_name(map));
        return;
    }
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const node *k = map->kids[i], *v = map->kids[i + 1];
        if (k->kind != NODE_SCALAR)
            ERR(ld, k, "%s: mapping keys must be scalars, got %s", path,
                kind_name(k));
        else if (k->dup_of)
            ERR(ld, k, "%s: duplicate key '%s' (first at line %d column %d)",
                path, k->text, k->dup_of->line, k->dup_of->col);
        else
            fn(ld, k, v, base, arg, path);
    }
}

static void child_path(char *buf, size_t n, const char *path, const char *key)
{
    if (*path == '\0' || !strcmp(path, "the top level"))
        snprintf(buf, n, "%s", key);
    else
        snprintf(buf, n, "%s.%s", path, key);
}

/* A scalar that is not null, or an error naming what was expected. */
static const char *want_scalar(loader *ld, const node *v, const char *path,
                               const char *expected)
{
    if (v->kind == NODE_SCALAR && !is_null(v))
        return v->text;
    ERR(ld, v, "%s: expected %s, got %s", path, expected, kind_name(v));
    return NULL;
}

static void set_str(char **slot, char *value)
{
    free(*slot);
    *slot = value;
}

static void apply_string(loader *ld, const field *f, const node *v,
                         void *base, const char *path)
{
    const char *s = want_scalar(ld, v, path, "a string");
    if (!s)
        return;
    if (!*s) {
        ERR(ld, v, "%s: must not be empty", path);
        return;
    }
    if (f->type == F_LISTEN && sophia_conf_split_listen(s, NULL, NULL)) {
        ERR(ld, v, "%s: '%s' is not HOST:PORT (IPv6 as [::1]:8080, port "
                   "1..65535)", path, s);
        return;
    }
    if (f->type == F_DIR)
        set_str(AT(base, f->off, char *), absolutize(ld->basedir, s));
    else
        set_str(AT(base, f->off, char *), xstrdup(s));
}

static void apply_url(loader *ld, const field *f, const node *v, void *base,
                      const char *path)
{
    char **slot = AT(base, f->off, char *);
    if (is_null(v)) {
        set_str(slot, NULL);
        return;
    }
    const char *s = want_scalar(ld, v, path, "a URL string");
    sophia_redis_url u;
    char why[200], safe[256];
    if (s && *s && f->type == F_REDIS_URL &&
        sophia_redis_url_parse(s, &u, why, sizeof(why)) < 0) {
        ERR(ld, v, "%s: %s: %s", path,
            sophia_redis_url_redact(s, safe, sizeof(safe)), why);
        return;
    }
    if (s && *s && f->type == F_REDIS_URL)
        sophia_redis_url_clear(&u);
    if (s)
        set_str(slot, *s ? xstrdup(s) : NULL);
}

static void apply_integer(loader *ld, const field *f, const node *v,
                          void *base, const char *path)
{
    const char *s = want_scalar(ld, v, path, "an integer");
    long long n;
    if (!s)
        return;
    int r = parse_ll(s, &n);
    if (r) {
        ERR(ld, v, "%s: '%s' is %s", path, s,
            r == -2 ? "out of range" : "not an integer");
        return;
    }
    long long min = f->type == F_COUNT ? 1 : 0;
    if (n < min || (unsigned long long)n > SIZE_MAX) {
        ERR(ld, v, "%s: %lld is out of range (must be %s)", path, n,
            min ? "> 0" : ">= 0");
        return;
    }
    *AT(base, f->off, size_t) = (size_t)n;
}

static void apply_size(loader *ld, const field *f, const node *v, void *base,
                       const char *path)
{
    const char *s = want_scalar(ld, v, path, "a size (bytes, or e.g. 64MiB)");
    unsigned long long n;
    if (!s)
        return;
    int r = parse_size(s, &n);
    if (r == -2 || (r == 0 && n > SIZE_MAX)) {
        ERR(ld, v, "%s: '%s' is too large", path, s);
    } else if (r) {
        ERR(ld, v, "%s: '%s' is not a size (bytes, or a number with one of "
                   "k, KiB, KB, M, MiB, MB, G, GiB, GB, T, TiB, TB)", path, s);
    } else if (n == 0) {
        ERR(ld, v, "%s: must be > 0", path);
    } else {
        *AT(base, f->off, size_t) = (size_t)n;
    }
}

/* F_SECONDS and F_TTL; a cache TTL has the bound every cache TTL has (a
 * PUT's, a plugin's). */
static void apply_seconds(loader *ld, const field *f, const node *v,
                          void *base, const char *path)
{
    const char *s = want_scalar(ld, v, path, "a duration");
    double d;
    if (!s)
        return;
    if (parse_seconds(s, &d))
        ERR(ld, v, "%s: '%s' is not a duration (seconds, or a number with "
                   "ms, s, m, h or d)", path, s);
    else if (d <= 0)
        ERR(ld, v, "%s: must be > 0", path);
    else if (f->type == F_TTL && d > SOPHIA_CACHE_MAX_TTL)
        ERR(ld, v, "%s: '%s' is longer than the longest cache TTL, %.0f s "
                   "(10 years)", path, s, SOPHIA_CACHE_MAX_TTL);
    else
        *AT(base, f->off, double) = d;
}

/* 1, 0, or -1 when `s` is not a boolean. */
static int parse_bool(const char *s)
{
    if (!strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))
        return 1;
    if (!strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))
        return 0;
    return -1;
}

static void apply_bool(loader *ld, const field *f, const node *v, void *base,
                       const char *path)
{
    const char *s = want_scalar(ld, v, path, "a boolean");
    int b = s ? parse_bool(s) : -1;
    if (s && b < 0)
        ERR(ld, v, "%s: expected a boolean (true/false), got '%s'", path, s);
    if (b >= 0)
        *AT(base, f->off, int) = b;
}

static void apply_level(loader *ld, const field *f, const node *v, void *base,
                        const char *path)
{
    const char *s = want_scalar(ld, v, path, "a log level");
    if (!s)
        return;
    int lvl = sophia_log_parse_level(s);
    if (lvl < 0)
        ERR(ld, v, "%s: unknown level '%s' (allowed: debug, info, warn, "
                   "error)", path, s);
    else
        *AT(base, f->off, sophia_log_lvl) = (sophia_log_lvl)lvl;
}

static void apply_secret(loader *ld, const field *f, const node *v,
                         void *base, const char *path)
{
    const char *s = want_scalar(ld, v, path, "an environment variable name");
    if (!s)
        return;
    if (!valid_env_name(s)) {
        ERR(ld, v, "%s: '%s' is not an environment variable name (it names "
                   "the variable holding the secret, not the secret)", path, s);
        return;
    }
    const char *val = getenv(s);
    set_str(AT(base, f->off, char *), xstrdup(s));
    set_str(AT(base, f->off2, char *), val && *val ? xstrdup(val) : NULL);
}

static void walk_section(loader *ld, const node *map, const section *sec,
                         void *base, const char *path);

static void apply_field(loader *ld, const field *f, const node *v, void *base,
                        const char *path)
{
    if (v->reported)
        return;
    switch (f->type) {
    case F_STRING:
    case F_DIR:
    case F_LISTEN:
        apply_string(ld, f, v, base, path);
        break;
    case F_URL:
    case F_REDIS_URL:
        apply_url(ld, f, v, base, path);
        break;
    case F_SIZE:
        apply_size(ld, f, v, base, path);
        break;
    case F_COUNT:
    case F_COUNT0:
        apply_integer(ld, f, v, base, path);
        break;
    case F_SECONDS:
    case F_TTL:
        apply_seconds(ld, f, v, base, path);
        break;
    case F_LEVEL:
        apply_level(ld, f, v, base, path);
        break;
    case F_BOOL:
        apply_bool(ld, f, v, base, path);
        break;
    case F_SECRET:
        apply_secret(ld, f, v, base, path);
        break;
    case F_SECTION:
        walk_section(ld, v, f->sub, base, path);
        break;
    case F_CUSTOM:
        f->fn(ld, v, base, path);
        break;
    }
}

static void unknown_key(loader *ld, const node *k, const section *sec)
{
    char allowed[512];
    size_t o = 0;
    allowed[0] = '\0';
    for (const field *f = sec->fields; f->key && o < sizeof(allowed); f++)
        o += (size_t)snprintf(allowed + o, sizeof(allowed) - o, "%s%s",
                              o ? ", " : "", f->key);
    ERR(ld, k, "unknown key '%s' %s (allowed: %s)", k->text, sec->where,
        allowed);
}

static void section_pair(loader *ld, const node *k, const node *v, void *base,
                         const void *arg, const char *path)
{
    const section *sec = arg;
    char sub[512];
    for (const field *f = sec->fields; f->key; f++) {
        if (strcmp(f->key, k->text))
            continue;
        child_path(sub, sizeof(sub), path, f->key);
        apply_field(ld, f, v, base, sub);
        return;
    }
    unknown_key(ld, k, sec);
}

static void walk_section(loader *ld, const node *map, const section *sec,
                         void *base, const char *path)
{
    each_pair(ld, map, path, section_pair, base, sec);
}

/* plugins.path */
static void walk_plugin_path(loader *ld, const node *v, void *base,
                             const char *path)
{
    sophia_conf *c = base;
    if (is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of directories, got %s", path,
            kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        if (v->kids[i]->reported)
            continue;
        const char *s = want_scalar(ld, v->kids[i], path, "a directory");
        if (!s)
            continue;
        if (!*s) {
            ERR(ld, v->kids[i], "%s: a directory must not be empty", path);
            continue;
        }
        char **slot = GROW(c->plugin_path, c->nplugin_path);
        *slot = absolutize(ld->basedir, s);
    }
}

/* The bundled plugins' directory, after plugins.path (paths.h). */
void sophia_conf_add_plugin_dir(sophia_conf *c, const char *dir)
{
    for (size_t i = 0; i < c->nplugin_path; i++)
        if (!strcmp(c->plugin_path[i], dir))
            return; /* already listed: searched where the file put it */
    char **slot = GROW(c->plugin_path, c->nplugin_path);
    *slot = xstrdup(dir);
}

/* plugins.instances.NAME.options.KEY */
static void option_pair(loader *ld, const node *k, const node *v, void *base,
                        const void *arg, const char *path)
{
    sophia_conf_instance *in = base;
    char sub[512];
    (void)arg;
    child_path(sub, sizeof(sub), path, k->text);
    if (v->reported)
        return;
    if (v->kind == NODE_MAP) {
        ERR(ld, v, "%s: option values must be a scalar or a sequence of "
                   "scalars, got a mapping", sub);
        return;
    }
    sophia_conf_opt *o = GROW(in->opts, in->nopts);
    o->key = xstrdup(k->text);
    o->line = v->line;
    o->col = v->col;
    o->key_line = k->line;
    o->key_col = k->col;
    if (v->kind == NODE_SCALAR) {
        o->scalar = xstrdup(v->text);
        return;
    }
    o->is_seq = 1;
    for (size_t i = 0; i < v->nkids; i++) {
        const node *it = v->kids[i];
        if (it->reported)
            continue;
        if (it->kind != NODE_SCALAR) {
            ERR(ld, it, "%s: sequence items must be scalars, got %s", sub,
                kind_name(it));
            continue;
        }
        char **slot = GROW(o->items, o->nitems);
        *slot = xstrdup(it->text);
    }
}

static void walk_options(loader *ld, const node *v, void *base,
                         const char *path)
{
    each_pair(ld, v, path, option_pair, base, NULL);
}

static const field instance_fields[] = {
    {"plugin", F_STRING, offsetof(sophia_conf_instance, plugin), 0, NULL, NULL},
    {"options", F_CUSTOM, 0, 0, NULL, walk_options},
    {NULL, 0, 0, 0, NULL, NULL},
};

/* ---- streams.<name>.filter: a sequence of predicate mappings ----------- */

static const struct {
    const char *key;
    sophia_pred_op op;
} pred_ops[] = {
    {"equals", SOPHIA_PRED_EQUALS}, {"not_equals", SOPHIA_PRED_NOT_EQUALS},
    {"in", SOPHIA_PRED_IN},         {"not_in", SOPHIA_PRED_NOT_IN},
    {"exists", SOPHIA_PRED_EXISTS}, {"gt", SOPHIA_PRED_GT},
    {"gte", SOPHIA_PRED_GTE},       {"lt", SOPHIA_PRED_LT},
    {"lte", SOPHIA_PRED_LTE},       {"matches", SOPHIA_PRED_MATCHES},
};

/* The operand of `op` (node v) into p; reports and returns -1 if bad. */
static int pred_operand(loader *ld, sophia_conf_pred *p, const node *v,
                        const char *path)
{
    if (p->op == SOPHIA_PRED_IN || p->op == SOPHIA_PRED_NOT_IN) {
        if (v->kind != NODE_SEQ) {
            ERR(ld, v, "%s: expected a sequence of values, got %s", path,
                kind_name(v));
            return -1;
        }
        for (size_t i = 0; i < v->nkids; i++) {
            const char *s = want_scalar(ld, v->kids[i], path, "a scalar");
            if (!s)
                return -1;
            char **slot = GROW(p->items, p->nitems);
            *slot = xstrdup(s);
        }
        return 0;
    }
    const char *s = want_scalar(ld, v, path, "a scalar");
    if (!s)
        return -1;
    if (p->op == SOPHIA_PRED_EXISTS && parse_bool(s) < 0) {
        ERR(ld, v, "%s: expected true or false, got '%s'", path, s);
        return -1;
    }
    if (p->op >= SOPHIA_PRED_GT && p->op <= SOPHIA_PRED_LTE) {
        char *end;
        p->num = strtod(s, &end);
        if (end == s || *end || !isfinite(p->num)) {
            ERR(ld, v, "%s: '%s' is not a number", path, s);
            return -1;
        }
    }
    if (p->op == SOPHIA_PRED_MATCHES) {
        regex_t re;
        int rc = regcomp(&re, s, REG_EXTENDED | REG_NOSUB);
        if (rc) {
            char why[200];
            regerror(rc, &re, why, sizeof(why));
            ERR(ld, v, "%s: bad regular expression '%s': %s", path, s, why);
            return -1;
        }
        regfree(&re);
    }
    p->value = xstrdup(s);
    return 0;
}

/* One `- path: a.b` + `<op>: operand` (+ `icase: true`) mapping. */
static void filter_item(loader *ld, sophia_conf_stream *st, const node *m,
                        const char *path)
{
    if (m->kind != NODE_MAP) {
        ERR(ld, m, "%s: each filter entry is a mapping like {path: event.type, "
                   "equals: message}, got %s", path, kind_name(m));
        return;
    }
    sophia_conf_pred p = {0};
    const node *opnode = NULL;
    int bad = 0;
    p.line = m->line;
    p.col = m->col;
    for (size_t i = 0; i + 1 < m->nkids; i += 2) {
        const node *k = m->kids[i], *v = m->kids[i + 1];
        const char *key = k->kind == NODE_SCALAR ? k->text : "";
        size_t o = 0;
        while (o < sizeof(pred_ops) / sizeof(pred_ops[0]) &&
               strcmp(pred_ops[o].key, key))
            o++;
        if (!strcmp(key, "path")) {
            const char *s = want_scalar(ld, v, path, "a dotted JSON path");
            if (s)
                set_str(&p.path, xstrdup(s));
            bad |= !s;
        } else if (!strcmp(key, "icase")) {
            const char *s = want_scalar(ld, v, path, "true or false");
            p.icase = s ? parse_bool(s) == 1 : 0;
        } else if (o < sizeof(pred_ops) / sizeof(pred_ops[0]) && !opnode) {
            p.op = pred_ops[o].op;
            opnode = v;
        } else {
            ERR(ld, k, "%s: unexpected key '%s' (a filter entry has path, one "
                       "of equals, not_equals, in, not_in, exists, gt, gte, "
                       "lt, lte, matches, and icase)", path, key);
            bad = 1;
        }
    }
    if (!p.path && !bad)
        ERR(ld, m, "%s: filter entry has no 'path'", path);
    if (!opnode && !bad)
        ERR(ld, m, "%s: filter entry has no operator (equals, in, exists, gt, "
                   "matches, ...)", path);
    if (!p.path || !opnode || bad || pred_operand(ld, &p, opnode, path)) {
        free(p.path);
        free(p.value);
        for (size_t i = 0; i < p.nitems; i++)
            free(p.items[i]);
        free(p.items);
        return;
    }
    *GROW(st->filter, st->nfilter) = p;
}

static void walk_filter(loader *ld, const node *v, void *base,
                        const char *path)
{
    if (is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of predicates, got %s", path,
            kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++)
        if (!v->kids[i]->reported)
            filter_item(ld, base, v->kids[i], path);
}

#define S_OFF(member) offsetof(sophia_conf_stream, member)

static const field stream_redis_fields[] = {
    {"key", F_STRING, S_OFF(redis.key), 0, NULL, NULL},
    {"group", F_STRING, S_OFF(redis.group), 0, NULL, NULL},
    {"consumer", F_STRING, S_OFF(redis.consumer), 0, NULL, NULL},
    {"field", F_STRING, S_OFF(redis.field), 0, NULL, NULL},
    {"count", F_COUNT, S_OFF(redis.count), 0, NULL, NULL},
    {"block", F_SECONDS, S_OFF(redis.block), 0, NULL, NULL},
    {"claim_idle", F_SECONDS, S_OFF(redis.claim_idle), 0, NULL, NULL},
    {"dead_letter_after", F_COUNT, S_OFF(redis.dead_letter_after), 0, NULL,
     NULL},
    {NULL, 0, 0, 0, NULL, NULL},
};
static const section stream_redis_sec = {"in a stream's redis source",
                                         stream_redis_fields};

/* streams.<name>.statsd.listen: HOST:PORT, or PORT / :PORT on loopback
 * (a StatsD port open to the network takes datagrams from anyone). */
static void walk_statsd_listen(loader *ld, const node *v, void *base,
                               const char *path)
{
    sophia_conf_stream *st = base;
    const char *s = want_scalar(ld, v, path, "HOST:PORT or a port");
    char buf[300];
    if (!s)
        return;
    const char *p = *s == ':' ? s + 1 : s;
    if (*p && strspn(p, "0123456789") == strlen(p)) {
        snprintf(buf, sizeof(buf), "127.0.0.1:%s", p);
        s = buf;
    }
    if (sophia_conf_split_listen(s, NULL, NULL)) {
        ERR(ld, v, "%s: '%s' is not HOST:PORT or PORT (IPv6 as [::1]:8125, "
                   "port 1..65535)", path, v->text);
        return;
    }
    set_str(&st->statsd_listen, xstrdup(s));
    st->statsd_line = v->line;
    st->statsd_col = v->col;
}

/* streams.<name>.statsd.allow: [CIDR, ...] */
static void walk_statsd_allow(loader *ld, const node *v, void *base,
                              const char *path)
{
    sophia_conf_stream *st = base;
    if (is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of CIDRs such as [10.0.0.0/8, "
                   "\"fd00::/8\"], got %s", path, kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        if (v->kids[i]->reported)
            continue;
        const char *s = want_scalar(ld, v->kids[i], path, "a CIDR");
        sophia_cidr cidr;
        char why[160];
        if (s && sophia_cidr_parse(s, &cidr, why, sizeof(why)) < 0)
            ERR(ld, v->kids[i], "%s: %s", path, why);
        else if (s)
            *GROW(st->statsd_allow, st->nstatsd_allow) = xstrdup(s);
    }
}

static const field stream_statsd_fields[] = {
    {"listen", F_CUSTOM, 0, 0, NULL, walk_statsd_listen},
    {"allow", F_CUSTOM, 0, 0, NULL, walk_statsd_allow},
    {NULL, 0, 0, 0, NULL, NULL},
};
static const section stream_statsd_sec = {"in a stream's statsd source",
                                          stream_statsd_fields};

static const field stream_fields[] = {
    {"processor", F_STRING, offsetof(sophia_conf_stream, processor), 0, NULL,
     NULL},
    {"queue_size", F_COUNT, offsetof(sophia_conf_stream, queue_size), 0, NULL,
     NULL},
    {"batch_size", F_COUNT, offsetof(sophia_conf_stream, batch_size), 0, NULL,
     NULL},
    {"filter", F_CUSTOM, 0, 0, NULL, walk_filter},
    {"dedup_key", F_STRING, S_OFF(dedup_key), 0, NULL, NULL},
    {"dedup_window", F_SECONDS, S_OFF(dedup_window), 0, NULL, NULL},
    {"max_attempts", F_COUNT, S_OFF(max_attempts), 0, NULL, NULL},
    {"retry_base", F_SECONDS, S_OFF(retry_base), 0, NULL, NULL},
    {"retry_cap", F_SECONDS, S_OFF(retry_cap), 0, NULL, NULL},
    {"redis", F_SECTION, 0, 0, &stream_redis_sec, NULL},
    {"statsd", F_SECTION, 0, 0, &stream_statsd_sec, NULL},
    {"durable", F_BOOL, S_OFF(durable), 0, NULL, NULL},
    {NULL, 0, 0, 0, NULL, NULL},
};

static int has_key(const node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const node *k = map->kids[i];
        if (k->kind == NODE_SCALAR && !strcmp(k->text, key))
            return 1;
    }
    return 0;
}

/* A named entry (instance or stream): the name must be usable in URLs and
 * references, and the body must be a mapping. 0 when the body can be
 * walked. A missing required key is reported at the name by the caller,
 * only when the key is absent (a present but bad one has its own error). */
static int check_named(loader *ld, const node *k, const node *v,
                       const char *path, const char *what)
{
    if (!valid_name(k->text))
        ERR(ld, k, "%s: %s name '%s' may only contain letters, digits, '_', "
                   "'.' and '-'", path, what, k->text);
    if (v->reported)
        return -1;
    if (v->kind != NODE_MAP) {
        ERR(ld, v, "%s.%s: expected a mapping, got %s", path, k->text,
            kind_name(v));
        return -1;
    }
    return 0;
}

static void instance_pair(loader *ld, const node *k, const node *v,
                          void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (check_named(ld, k, v, path, "instance"))
        return;
    sophia_conf_instance *in = GROW(c->instances, c->ninstances);
    in->name = xstrdup(k->text);
    in->line = k->line;
    in->col = k->col;
    child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in plugin instance '%s'", k->text);
    section sec = {where, instance_fields};
    walk_section(ld, v, &sec, in, sub);
    if (!has_key(v, "plugin"))
        ERR(ld, k, "%s: missing required key 'plugin' (the module to load)",
            sub);
}

static void walk_instances(loader *ld, const node *v, void *base,
                           const char *path)
{
    each_pair(ld, v, path, instance_pair, base, NULL);
}

static void stream_pair(loader *ld, const node *k, const node *v, void *base,
                        const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (check_named(ld, k, v, path, "stream"))
        return;
    sophia_conf_stream *st = GROW(c->streams, c->nstreams);
    st->name = xstrdup(k->text);
    st->line = k->line;
    st->col = k->col;
    st->queue_size = DEFAULT_STREAM_QUEUE;
    st->batch_size = DEFAULT_STREAM_BATCH;
    st->dedup_window = 300;
    st->max_attempts = 3;
    st->retry_base = 0.1;
    st->retry_cap = 10;
    st->redis.count = 100;
    st->redis.block = 1;
    st->redis.claim_idle = 30;
    st->redis.dead_letter_after = 5;
    st->durable = -1;
    child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in stream '%s'", k->text);
    section sec = {where, stream_fields};
    walk_section(ld, v, &sec, st, sub);
    if (!has_key(v, "processor"))
        ERR(ld, k, "%s: missing required key 'processor' (a plugin instance "
                   "name)", sub);
}

static void walk_streams(loader *ld, const node *v, void *base,
                         const char *path)
{
    each_pair(ld, v, path, stream_pair, base, NULL);
}

#define C_OFF(member) offsetof(sophia_conf, member)
#define END {NULL, 0, 0, 0, NULL, NULL}

static const field tokens_fields[] = {
    {"secret_env", F_SECRET, C_OFF(server.tokens_env), C_OFF(server.tokens),
     NULL, NULL},
    END,
};
static const section tokens_sec = {"in server.tokens", tokens_fields};

static const field rate_limit_fields[] = {
    {"rate", F_COUNT0, C_OFF(server.rate_limit.rate), 0, NULL, NULL},
    {"burst", F_COUNT0, C_OFF(server.rate_limit.burst), 0, NULL, NULL},
    END,
};
static const section rate_limit_sec = {"in server.rate_limit",
                                       rate_limit_fields};

/* A sequence of non-empty strings appended to items[0..*n). */
static void walk_strlist(loader *ld, const node *v, const char *path,
                         const char *what, char ***items, size_t *n)
{
    if (is_null(v))
        return;
    if (v->kind != NODE_SEQ) {
        ERR(ld, v, "%s: expected a sequence of %s, got %s", path, what,
            kind_name(v));
        return;
    }
    for (size_t i = 0; i < v->nkids; i++) {
        if (v->kids[i]->reported)
            continue;
        const char *s = want_scalar(ld, v->kids[i], path, what);
        if (s && !*s)
            ERR(ld, v->kids[i], "%s: an entry must not be empty", path);
        else if (s)
            *GROW(*items, *n) = xstrdup(s);
    }
}

static void walk_server_hosts(loader *ld, const node *v, void *base,
                              const char *path)
{
    sophia_conf *c = base;
    walk_strlist(ld, v, path, "host names such as sophia.example.com",
                 &c->server.hosts, &c->server.nhosts);
}

static void walk_server_origins(loader *ld, const node *v, void *base,
                                const char *path)
{
    sophia_conf *c = base;
    walk_strlist(ld, v, path, "origins such as https://dash.example.com",
                 &c->server.origins, &c->server.norigins);
}

/* The value of `key` in a mapping, or the mapping itself. */
static const node *map_value(const node *map, const char *key)
{
    for (size_t i = 0; i + 1 < map->nkids; i += 2)
        if (map->kids[i]->kind == NODE_SCALAR && !strcmp(map->kids[i]->text, key))
            return map->kids[i + 1];
    return map;
}

static const field tls_fields[] = {
    {"listen", F_LISTEN, C_OFF(server.tls.listen), 0, NULL, NULL},
    {"cert", F_DIR, C_OFF(server.tls.cert), 0, NULL, NULL},
    {"key", F_DIR, C_OFF(server.tls.key), 0, NULL, NULL},
    END,
};
static const section tls_sec = {"in server.tls", tls_fields};

/* server.tls: all three keys, and files that load as a matching pair now,
 * so --check finds a bad certificate, not the first client (http_tls.h). */
static void walk_server_tls(loader *ld, const node *v, void *base,
                            const char *path)
{
    static const char *const required[] = {"listen", "cert", "key"};
    sophia_conf *c = base;
    int missing = 0;
    walk_section(ld, v, &tls_sec, base, path);
    if (v->kind != NODE_MAP)
        return; /* null: no TLS listener; anything else was reported */
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!has_key(v, required[i])) {
            ERR(ld, v, "%s: missing required key '%s'", path, required[i]);
            missing = 1;
        }
    if (missing || !c->server.tls.cert || !c->server.tls.key)
        return;
    char why[1024];
    sophia_tls_fault f = sophia_tls_check_files(c->server.tls.cert,
                                                c->server.tls.key, why, sizeof(why));
    const char *which = f == SOPHIA_TLS_BAD_KEY ? "key" : "cert";
    if (f)
        ERR(ld, map_value(v, which), "%s.%s: %s", path, which, why);
}

static const field server_fields[] = {
    {"listen", F_LISTEN, C_OFF(server.listen), 0, NULL, NULL},
    {"max_body", F_SIZE, C_OFF(server.max_body), 0, NULL, NULL},
    {"max_body_total", F_SIZE, C_OFF(server.max_body_total), 0, NULL, NULL},
    {"max_connections", F_COUNT, C_OFF(server.max_connections), 0, NULL, NULL},
    {"hosts", F_CUSTOM, 0, 0, NULL, walk_server_hosts},
    {"origins", F_CUSTOM, 0, 0, NULL, walk_server_origins},
    {"tokens", F_SECTION, 0, 0, &tokens_sec, NULL},
    {"share_dir", F_DIR, C_OFF(server.share_dir), 0, NULL, NULL},
    {"rate_limit", F_SECTION, 0, 0, &rate_limit_sec, NULL},
    {"tls", F_CUSTOM, 0, 0, NULL, walk_server_tls},
    END,
};
static const section server_sec = {"in server", server_fields};

static const field log_fields[] = {
    {"level", F_LEVEL, C_OFF(log_level), 0, NULL, NULL},
    END,
};
static const section log_sec = {"in log", log_fields};

static const field redis_fields[] = {
    {"url", F_REDIS_URL, C_OFF(redis_url), 0, NULL, NULL},
    END,
};
static const section redis_sec = {"in redis", redis_fields};

static const field pg_fields[] = {
    {"url", F_URL, C_OFF(pg_url), 0, NULL, NULL},
    END,
};
static const section pg_sec = {"in postgres", pg_fields};

static const field l1_fields[] = {
    {"max_entries", F_COUNT, C_OFF(l1.max_entries), 0, NULL, NULL},
    {"max_bytes", F_SIZE, C_OFF(l1.max_bytes), 0, NULL, NULL},
    {"ttl", F_TTL, C_OFF(l1.ttl), 0, NULL, NULL},
    END,
};
static const section l1_sec = {"in cache.l1", l1_fields};

static const field l2_fields[] = {
    {"ttl", F_TTL, C_OFF(l2.ttl), 0, NULL, NULL},
    END,
};
static const section l2_sec = {"in cache.l2", l2_fields};

/* cache.l3.pool: a connection count with an upper bound, which F_COUNT
 * lacks; pg_pool.h says why a few connections are enough. */
static void walk_l3_pool(loader *ld, const node *v, void *base,
                         const char *path)
{
    sophia_conf *c = base;
    const char *s = want_scalar(ld, v, path, "an integer");
    long long n;
    if (!s)
        return;
    if (parse_ll(s, &n) || n < 1 || n > SOPHIA_CONF_PG_POOL_MAX) {
        ERR(ld, v, "%s: '%s' is not a connection count from 1 to %d", path,
            s, SOPHIA_CONF_PG_POOL_MAX);
        return;
    }
    c->l3.pool = (size_t)n;
}

static const field l3_fields[] = {
    {"ttl", F_TTL, C_OFF(l3.ttl), 0, NULL, NULL},
    {"pool", F_CUSTOM, 0, 0, NULL, walk_l3_pool},
    END,
};
static const section l3_sec = {"in cache.l3", l3_fields};

/* cache.write.prefixes: "key prefix": instance name. */
static void write_prefix_pair(loader *ld, const node *k, const node *v,
                              void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512];
    (void)arg;
    child_path(sub, sizeof(sub), path, k->text);
    const char *s = want_scalar(ld, v, sub, "a write_strategy instance name");
    if (!s)
        return;
    size_t n = c->cache_write.nprefixes;
    c->cache_write.prefixes = xrealloc(c->cache_write.prefixes,
                                       (n + 1) * sizeof(char *));
    c->cache_write.instances = xrealloc(c->cache_write.instances,
                                        (n + 1) * sizeof(char *));
    c->cache_write.pos = xrealloc(c->cache_write.pos, (n + 1) * 2 * sizeof(int));
    c->cache_write.prefixes[n] = xstrdup(k->text);
    c->cache_write.instances[n] = xstrdup(s);
    c->cache_write.pos[2 * n] = v->line;
    c->cache_write.pos[2 * n + 1] = v->col;
    c->cache_write.nprefixes = n + 1;
}

static void walk_write_prefixes(loader *ld, const node *v, void *base,
                                const char *path)
{
    each_pair(ld, v, path, write_prefix_pair, base, NULL);
}

static void walk_write_default(loader *ld, const node *v, void *base,
                               const char *path)
{
    sophia_conf *c = base;
    const char *s = want_scalar(ld, v, path, "a write_strategy instance name");
    if (!s)
        return;
    set_str(&c->cache_write.def, xstrdup(s));
    c->cache_write.def_line = v->line;
    c->cache_write.def_col = v->col;
}

static const field write_fields[] = {
    {"default", F_CUSTOM, 0, 0, NULL, walk_write_default},
    {"prefixes", F_CUSTOM, 0, 0, NULL, walk_write_prefixes},
    END,
};
static const section write_sec = {"in cache.write", write_fields};

static const field cache_fields[] = {
    {"l1", F_SECTION, 0, 0, &l1_sec, NULL},
    {"l2", F_SECTION, 0, 0, &l2_sec, NULL},
    {"l3", F_SECTION, 0, 0, &l3_sec, NULL},
    {"write", F_SECTION, 0, 0, &write_sec, NULL},
    END,
};
static const section cache_sec = {"in cache", cache_fields};

/* websocket.auth.secret_env: read like every secret_env, then held to
 * MIN_JWT_SECRET bytes, so a guessable key stops the start (and --check). */
static void walk_ws_secret(loader *ld, const node *v, void *base,
                           const char *path)
{
    static const field f = {"secret_env", F_SECRET, C_OFF(ws.auth_env),
                            C_OFF(ws.auth_secret), NULL, NULL};
    sophia_conf *c = base;
    apply_secret(ld, &f, v, base, path);
    size_t n = c->ws.auth_secret ? strlen(c->ws.auth_secret) : 0;
    if (n && n < MIN_JWT_SECRET)
        ERR(ld, v, "%s: the WebSocket JWT secret in %s is %zu bytes; HS256 "
                   "needs at least %d (e.g. openssl rand -base64 48)",
            path, c->ws.auth_env, n, MIN_JWT_SECRET);
}

static const field auth_fields[] = {
    {"secret_env", F_CUSTOM, 0, 0, NULL, walk_ws_secret},
    END,
};
static const section auth_sec = {"in websocket.auth", auth_fields};

static const field jwt_fields[] = {
    {"require_exp", F_BOOL, C_OFF(ws.jwt_require_exp), 0, NULL, NULL},
    {"issuer", F_STRING, C_OFF(ws.jwt_issuer), 0, NULL, NULL},
    {"audience", F_STRING, C_OFF(ws.jwt_audience), 0, NULL, NULL},
    END,
};
static const section jwt_sec = {"in websocket.jwt", jwt_fields};

/* websocket.origins: a sequence of exact Origin header values. */
static void walk_ws_origins(loader *ld, const node *v, void *base,
                            const char *path)
{
    sophia_conf *c = base;
    walk_strlist(ld, v, path, "origins such as https://dash.example.com",
                 &c->ws.origins, &c->ws.norigins);
}

static const field ws_fields[] = {
    {"max_queue", F_COUNT, C_OFF(ws.max_queue), 0, NULL, NULL},
    {"history", F_COUNT0, C_OFF(ws.history), 0, NULL, NULL},
    {"history_age", F_SECONDS, C_OFF(ws.history_age), 0, NULL, NULL},
    {"ping_interval", F_SECONDS, C_OFF(ws.ping_interval), 0, NULL, NULL},
    {"pong_timeout", F_SECONDS, C_OFF(ws.pong_timeout), 0, NULL, NULL},
    {"auth_timeout", F_SECONDS, C_OFF(ws.auth_timeout), 0, NULL, NULL},
    {"max_connections", F_COUNT, C_OFF(ws.max_connections), 0, NULL, NULL},
    {"max_subscriptions", F_COUNT, C_OFF(ws.max_subscriptions), 0, NULL, NULL},
    {"max_message", F_SIZE, C_OFF(ws.max_message), 0, NULL, NULL},
    {"coalesce_at", F_COUNT0, C_OFF(ws.coalesce_at), 0, NULL, NULL},
    {"origins", F_CUSTOM, 0, 0, NULL, walk_ws_origins},
    {"auth", F_SECTION, 0, 0, &auth_sec, NULL},
    {"jwt", F_SECTION, 0, 0, &jwt_sec, NULL},
    {"max_topics", F_COUNT, C_OFF(ws.max_topics), 0, NULL, NULL},
    END,
};
static const section ws_sec = {"in websocket", ws_fields};

static const field cluster_fields[] = {
    {"redis", F_REDIS_URL, C_OFF(cluster.redis), 0, NULL, NULL},
    {"node_id", F_STRING, C_OFF(cluster.node_id), 0, NULL, NULL},
    {"enabled", F_BOOL, C_OFF(cluster.enabled), 0, NULL, NULL},
    END,
};
static const section cluster_sec = {"in cluster", cluster_fields};

static const field consolidate_fields[] = {
    {"every", F_SECONDS, offsetof(sophia_conf_consolidate, every), 0, NULL,
     NULL},
    {"after_new", F_COUNT, offsetof(sophia_conf_consolidate, after_new), 0,
     NULL, NULL},
    END,
};

/* memory.consolidate.INSTANCE: {every, after_new} */
static void consolidate_pair(loader *ld, const node *k, const node *v,
                             void *base, const void *arg, const char *path)
{
    sophia_conf *c = base;
    char sub[512], where[600];
    (void)arg;
    if (check_named(ld, k, v, path, "consolidator instance"))
        return;
    sophia_conf_consolidate *cc =
        GROW(c->memory.consolidate, c->memory.nconsolidate);
    cc->instance = xstrdup(k->text);
    cc->line = k->line;
    cc->col = k->col;
    child_path(sub, sizeof(sub), path, k->text);
    snprintf(where, sizeof(where), "in memory.consolidate.%s", k->text);
    section sec = {where, consolidate_fields};
    walk_section(ld, v, &sec, cc, sub);
}

static void walk_consolidate(loader *ld, const node *v, void *base,
                             const char *path)
{
    each_pair(ld, v, path, consolidate_pair, base, NULL);
}

static const field memory_fields[] = {
    {"dim", F_COUNT, C_OFF(memory.dim), 0, NULL, NULL},
    {"index", F_STRING, C_OFF(memory.index), 0, NULL, NULL},
    {"hnsw_threshold", F_COUNT, C_OFF(memory.hnsw_threshold), 0, NULL, NULL},
    {"index_path", F_DIR, C_OFF(memory.index_path), 0, NULL, NULL},
    {"table", F_STRING, C_OFF(memory.table), 0, NULL, NULL},
    {"half_life", F_SECONDS, C_OFF(memory.half_life), 0, NULL, NULL},
    {"max_content", F_SIZE, C_OFF(memory.max_content), 0, NULL, NULL},
    {"workers", F_COUNT, C_OFF(memory.workers), 0, NULL, NULL},
    {"rebuild_removed_pct", F_COUNT0, C_OFF(memory.rebuild_removed_pct), 0, NULL, NULL},
    {"consolidate", F_CUSTOM, 0, 0, NULL, walk_consolidate},
    END,
};
static const section memory_sec = {"in memory", memory_fields};

static const field plugins_fields[] = {
    {"path", F_CUSTOM, 0, 0, NULL, walk_plugin_path},
    {"instances", F_CUSTOM, 0, 0, NULL, walk_instances},
    {"strict_modes", F_BOOL, C_OFF(plugin_strict_modes), 0, NULL, NULL},
    {"init_timeout", F_SECONDS, C_OFF(plugin_init_timeout), 0, NULL, NULL},
    END,
};
static const section plugins_sec = {"in plugins", plugins_fields};

#define H_OFF(member) C_OFF(hooks.member)
static const field hook_slack_fields[] = {
    {"secret_env", F_SECRET, H_OFF(slack_env), H_OFF(slack_secret), NULL, NULL},
    {"stream", F_STRING, H_OFF(slack_stream), 0, NULL, NULL},
    {"dedup_window", F_SECONDS, H_OFF(slack_dedup), 0, NULL, NULL},
    END,
};
static const section hook_slack_sec = {"in hooks.slack", hook_slack_fields};

static const field hook_gong_fields[] = {
    {"secret_env", F_SECRET, H_OFF(gong_env), H_OFF(gong_secret), NULL, NULL},
    {"stream", F_STRING, H_OFF(gong_stream), 0, NULL, NULL},
    {"allow_query_key", F_BOOL, C_OFF(hooks.gong_query_key), 0, NULL, NULL},
    END,
};
static const section hook_gong_sec = {"in hooks.gong", hook_gong_fields};

static const field hooks_fields[] = {
    {"slack", F_SECTION, 0, 0, &hook_slack_sec, NULL},
    {"gong", F_SECTION, 0, 0, &hook_gong_sec, NULL},
    END,
};
static const section hooks_sec = {"in hooks", hooks_fields};

static const field top_fields[] = {
    {"server", F_SECTION, 0, 0, &server_sec, NULL},
    {"log", F_SECTION, 0, 0, &log_sec, NULL},
    {"redis", F_SECTION, 0, 0, &redis_sec, NULL},
    {"postgres", F_SECTION, 0, 0, &pg_sec, NULL},
    {"cache", F_SECTION, 0, 0, &cache_sec, NULL},
    {"websocket", F_SECTION, 0, 0, &ws_sec, NULL},
    {"cluster", F_SECTION, 0, 0, &cluster_sec, NULL},
    {"memory", F_SECTION, 0, 0, &memory_sec, NULL},
    {"plugins", F_SECTION, 0, 0, &plugins_sec, NULL},
    {"streams", F_CUSTOM, 0, 0, NULL, walk_streams},
    {"hooks", F_SECTION, 0, 0, &hooks_sec, NULL},
    END,
};
static const section top_sec = {"at the top level", top_fields};

/* ---- public API -------------------------------------------------------- */

static sophia_conf *conf_defaults(const char *name)
{
    sophia_conf *c = xrealloc(NULL, sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->file = xstrdup(name);
    c->server.listen = xstrdup(DEFAULT_LISTEN);
    c->server.max_body = DEFAULT_MAX_BODY;
    c->server.max_body_total = DEFAULT_MAX_BODY_TOTAL;
    c->server.max_connections = DEFAULT_HTTP_CONNECTIONS;
    c->plugin_strict_modes = 1;
    c->plugin_init_timeout = 10.0;
    c->log_level = SOPHIA_LVL_INFO;
    c->l1.max_entries = DEFAULT_L1_ENTRIES;
    c->l1.max_bytes = DEFAULT_L1_BYTES;
    c->l1.ttl = DEFAULT_L1_TTL;
    c->l3.pool = DEFAULT_L3_POOL;
    c->ws.max_queue = DEFAULT_WS_QUEUE;
    c->ws.history = DEFAULT_WS_HISTORY;
    c->hooks.slack_env = xstrdup("SOPHIA_SLACK_SIGNING_SECRET");
    c->hooks.gong_env = xstrdup("SOPHIA_GONG_SECRET");
    const char *hs = getenv(c->hooks.slack_env), *hg = getenv(c->hooks.gong_env);
    c->hooks.slack_secret = hs && *hs ? xstrdup(hs) : NULL;
    c->hooks.gong_secret = hg && *hg ? xstrdup(hg) : NULL;
    c->hooks.slack_stream = xstrdup("slack");
    c->hooks.gong_stream = xstrdup("gong");
    c->hooks.slack_dedup = 3600;
    c->memory.dim = 384;
    c->memory.index = xstrdup("auto");
    c->memory.hnsw_threshold = 50000;
    c->memory.table = xstrdup("sophia_memory");
    c->memory.half_life = 7 * 86400.0;
    c->memory.max_content = 64 * 1024;
    c->memory.workers = 2;
    c->memory.rebuild_removed_pct = 20;
    c->ws.history_age = DEFAULT_WS_HISTORY_AGE;
    c->ws.ping_interval = DEFAULT_WS_PING;
    c->ws.pong_timeout = DEFAULT_WS_PONG;
    c->ws.auth_timeout = DEFAULT_WS_AUTH_TIMEOUT;
    c->ws.max_connections = DEFAULT_WS_MAX_CONN;
    c->ws.max_subscriptions = DEFAULT_WS_MAX_SUBS;
    c->ws.max_message = DEFAULT_WS_MAX_MESSAGE;
    c->ws.max_topics = DEFAULT_WS_MAX_TOPICS;
    c->ws.jwt_require_exp = 1;
    c->cluster.enabled = -1;
    return c;
}

sophia_conf *sophia_conf_load_string(const char *name, const char *yaml,
                                     size_t len, sophia_diag *diag)
{
    loader ld;
    memset(&ld, 0, sizeof(ld));
    ld.name = name ? name : "-";
    ld.buf = yaml;
    ld.len = len;
    ld.diag = diag;
    ld.c = conf_defaults(ld.name);
    if (!yaml_parser_initialize(&ld.parser)) {
        sophia_diag_add(diag, ld.name, 0, 0, "cannot initialize YAML parser");
        return ld.c;
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)yaml, len);
    node *root = parse_document(&ld);
    yaml_parser_delete(&ld.parser);

    if (root && !ld.broken) {
        ld.basedir = base_dir_of(ld.name);
        if (root->kind != NODE_MAP && !is_null(root))
            ERR(&ld, root, "the top level must be a mapping of sections, got "
                           "%s", kind_name(root));
        else
            walk_section(&ld, root, &top_sec, ld.c, "the top level");
        free(ld.basedir);
    }
    node_free(root);
    return ld.c;
}

static char *read_file(const char *file, size_t *len, sophia_diag *diag)
{
    FILE *f = fopen(file, "rb");
    if (!f) {
        sophia_diag_add(diag, file, 0, 0, "cannot open: %s", strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8192;
            buf = xrealloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n > SOPHIA_CONF_MAX_FILE) {
            sophia_diag_add(diag, file, 0, 0, "file is larger than %u bytes",
                            SOPHIA_CONF_MAX_FILE);
            break;
        }
        if (r == 0)
            break;
    }
    int bad = ferror(f) || n > SOPHIA_CONF_MAX_FILE;
    if (ferror(f))
        sophia_diag_add(diag, file, 0, 0, "cannot read: %s", strerror(errno));
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

sophia_conf *sophia_conf_load(const char *file, sophia_diag *diag)
{
    size_t len = 0;
    char *buf = read_file(file, &len, diag);
    if (!buf)
        return NULL;
    sophia_conf *c = sophia_conf_load_string(file, buf, len, diag);
    free(buf);
    return c;
}

/* Set -> replace; set to "" -> NULL (disabled, see the file comment). */
static void env_url(char **slot, const char *var)
{
    const char *v = getenv(var);
    if (v)
        set_str(slot, *v ? xstrdup(v) : NULL);
}

void sophia_conf_apply_env(sophia_conf *c, const char *listen_override)
{
    if (!c)
        return;
    env_url(&c->redis_url, "SOPHIA_REDIS_URL");
    env_url(&c->pg_url, "SOPHIA_PG_URL");
    env_url(&c->cluster.redis, "SOPHIA_CLUSTER_REDIS_URL");
    const char *cl = getenv("SOPHIA_CLUSTER_REDIS_URL");
    if (cl && !*cl)
        c->cluster.enabled = 0; /* "" = no cluster, not "fall back to redis.url" */
    const char *l = getenv("SOPHIA_LISTEN");
    if (l && *l)
        set_str(&c->server.listen, xstrdup(l));
    if (listen_override)
        set_str(&c->server.listen, xstrdup(listen_override));
}

/* memory.*: values whose meaning depends on more than their type. */
static void memory_validate(const sophia_conf *c, const char *file,
                            sophia_diag *diag)
{
    const char *ix = c->memory.index, *t = c->memory.table;
    if (strcmp(ix, "auto") && strcmp(ix, "flat") && strcmp(ix, "hnsw"))
        sophia_diag_add(diag, file, 0, 0, "memory.index: '%s' is not one of "
                        "auto, flat, hnsw", ix);
    int ok = (isalpha((unsigned char)*t) || *t == '_') && strlen(t) <= 48;
    for (const char *p = t; *p; p++)
        ok &= isalnum((unsigned char)*p) || *p == '_';
    if (!ok)
        sophia_diag_add(diag, file, 0, 0, "memory.table: '%s' is not a plain "
                        "SQL identifier (letters, digits, '_', at most 48)", t);
    if (c->memory.dim < 8 || c->memory.dim > 4096)
        sophia_diag_add(diag, file, 0, 0, "memory.dim: %zu is out of range "
                        "(8..4096)", c->memory.dim);
    if (c->memory.workers > 64)
        sophia_diag_add(diag, file, 0, 0, "memory.workers: at most 64");
    for (size_t i = 0; i < c->memory.nconsolidate; i++) {
        const sophia_conf_consolidate *cc = &c->memory.consolidate[i];
        if (!sophia_conf_instance_find(c, cc->instance))
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "memory.consolidate.%s: not a plugin instance "
                            "declared under plugins.instances", cc->instance);
        else if (cc->every <= 0 && cc->after_new == 0)
            sophia_diag_add(diag, file, cc->line, cc->col,
                            "memory.consolidate.%s: set 'every' (a duration) "
                            "or 'after_new' (a count), or both", cc->instance);
    }
}

/* A StatsD port reachable from the network needs an allow-list (as the
 * HTTP listener needs tokens; reload.c's sophia_check_secrets). */
static void statsd_validate(const sophia_conf_stream *s, const char *file,
                            sophia_diag *diag)
{
    char *host = NULL;
    if (!s->statsd_listen || s->nstatsd_allow ||
        sophia_conf_split_listen(s->statsd_listen, &host, NULL) < 0)
        return;
    if (!sophia_host_is_loopback(host))
        sophia_diag_add(diag, file, s->statsd_line, s->statsd_col,
                        "streams.%s.statsd.listen %s is not loopback but no "
                        "allow-list is set (streams.%s.statsd.allow: "
                        "[CIDR, ...])", s->name, s->statsd_listen, s->name);
    free(host);
}

static void redis_url_validate(const char *url, const char *what,
                               const char *file, sophia_diag *diag)
{
    sophia_redis_url u;
    char why[200], safe[256];
    if (!url)
        return;
    if (sophia_redis_url_parse(url, &u, why, sizeof(why)) < 0)
        sophia_diag_add(diag, file, 0, 0, "%s: %s: %s", what,
                        sophia_redis_url_redact(url, safe, sizeof(safe)), why);
    else
        sophia_redis_url_clear(&u);
}

void sophia_conf_validate(const sophia_conf *c, sophia_diag *diag)
{
    if (!c)
        return;
    const char *file = c->file ? c->file : "-";
    memory_validate(c, file, diag);
    /* A bad listen in the file was refused at load (the default stayed), so
     * a bad value here came from SOPHIA_LISTEN or --listen: no position. */
    if (sophia_conf_split_listen(c->server.listen, NULL, NULL))
        sophia_diag_add(diag, file, 0, 0,
                        "listen address '%s' (from SOPHIA_LISTEN or --listen) "
                        "is not HOST:PORT (IPv6 as [::1]:8080, port 1..65535)",
                        c->server.listen ? c->server.listen : "");
    for (size_t i = 0; i < c->nstreams; i++) {
        const sophia_conf_stream *s = &c->streams[i];
        if (s->processor && !sophia_conf_instance_find(c, s->processor))
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s: processor '%s' is not a plugin "
                            "instance declared under plugins.instances",
                            s->name, s->processor);
        if (s->redis.key && !c->redis_url)
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.redis reads a Redis stream but no "
                            "Redis is configured (redis.url or "
                            "SOPHIA_REDIS_URL)", s->name);
        if (s->durable == 1 && !c->redis_url)
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.durable: true needs Redis (redis.url "
                            "or SOPHIA_REDIS_URL); set durable: false to keep "
                            "accepted events in memory only", s->name);
        statsd_validate(s, file, diag);
        if (s->redis.block > 1.5)
            sophia_diag_add(diag, file, s->line, s->col,
                            "streams.%s.redis.block: at most 1.5 s (a read "
                            "that blocks longer trips the connection's "
                            "2 s reply watchdog)", s->name);
    }
    if (c->cache_write.def && !sophia_conf_instance_find(c, c->cache_write.def))
        sophia_diag_add(diag, file, c->cache_write.def_line,
                        c->cache_write.def_col,
                        "cache.write.default: '%s' is not a plugin instance "
                        "declared under plugins.instances", c->cache_write.def);
    for (size_t i = 0; i < c->cache_write.nprefixes; i++)
        if (!sophia_conf_instance_find(c, c->cache_write.instances[i]))
            sophia_diag_add(diag, file, c->cache_write.pos[2 * i],
                            c->cache_write.pos[2 * i + 1],
                            "cache.write.prefixes \"%s\": '%s' is not a plugin "
                            "instance declared under plugins.instances",
                            c->cache_write.prefixes[i],
                            c->cache_write.instances[i]);
    /* A bad URL in the file was refused at load with its position, so a
     * bad one here came from the environment. */
    redis_url_validate(c->redis_url, "redis.url (or SOPHIA_REDIS_URL)", file,
                       diag);
    redis_url_validate(c->cluster.redis,
                       "cluster.redis (or SOPHIA_CLUSTER_REDIS_URL)", file,
                       diag);
    if (c->cluster.enabled == 1 && !c->cluster.redis && !c->redis_url)
        sophia_diag_add(diag, file, 0, 0, "cluster.enabled is true but there "
                        "is no Redis: set cluster.redis or redis.url (or "
                        "SOPHIA_REDIS_URL)");
    if (c->ninstances > 0 && c->nplugin_path == 0)
        sophia_diag_add(diag, file, c->instances[0].line, c->instances[0].col,
                        "plugins.path is empty, so plugin instance '%s' "
                        "cannot be loaded; list the plugin directories",
                        c->instances[0].name);
}

const sophia_conf_instance *sophia_conf_instance_find(const sophia_conf *c,
                                                      const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->ninstances; i++)
        if (!strcmp(c->instances[i].name, name))
            return &c->instances[i];
    return NULL;
}

static void free_instance(sophia_conf_instance *in)
{
    for (size_t j = 0; j < in->nopts; j++) {
        sophia_conf_opt *o = &in->opts[j];
        for (size_t k = 0; k < o->nitems; k++)
            free(o->items[k]);
        free(o->items);
        free(o->scalar);
        free(o->key);
    }
    free(in->opts);
    free(in->name);
    free(in->plugin);
}

void sophia_conf_free(sophia_conf *c)
{
    if (!c)
        return;
    free(c->file);
    free(c->server.listen);
    free(c->server.tokens_env);
    free(c->server.tokens);
    free(c->server.share_dir);
    free(c->server.tls.listen);
    free(c->server.tls.cert);
    free(c->server.tls.key);
    free(c->redis_url);
    free(c->pg_url);
    free(c->cache_write.def);
    for (size_t i = 0; i < c->cache_write.nprefixes; i++) {
        free(c->cache_write.prefixes[i]);
        free(c->cache_write.instances[i]);
    }
    free(c->cache_write.prefixes);
    free(c->cache_write.instances);
    free(c->cache_write.pos);
    free(c->ws.auth_env);
    free(c->ws.auth_secret);
    free(c->ws.jwt_issuer);
    free(c->ws.jwt_audience);
    for (size_t i = 0; i < c->ws.norigins; i++)
        free(c->ws.origins[i]);
    free(c->ws.origins);
    for (size_t i = 0; i < c->server.nhosts; i++)
        free(c->server.hosts[i]);
    free(c->server.hosts);
    for (size_t i = 0; i < c->server.norigins; i++)
        free(c->server.origins[i]);
    free(c->server.origins);
    free(c->cluster.redis);
    free(c->cluster.node_id);
    free(c->memory.index);
    free(c->memory.index_path);
    free(c->memory.table);
    for (size_t i = 0; i < c->memory.nconsolidate; i++)
        free(c->memory.consolidate[i].instance);
    free(c->memory.consolidate);
    for (size_t i = 0; i < c->nplugin_path; i++)
        free(c->plugin_path[i]);
    free(c->plugin_path);
    for (size_t i = 0; i < c->ninstances; i++)
        free_instance(&c->instances[i]);
    free(c->instances);
    for (size_t i = 0; i < c->nstreams; i++) {
        sophia_conf_stream *st = &c->streams[i];
        free(st->name);
        free(st->processor);
        for (size_t k = 0; k < st->nfilter; k++) {
            sophia_conf_pred *p = &st->filter[k];
            free(p->path);
            free(p->value);
            for (size_t j = 0; j < p->nitems; j++)
                free(p->items[j]);
            free(p->items);
        }
        free(st->filter);
        free(st->dedup_key);
        free(st->redis.key);
        free(st->redis.group);
        free(st->redis.consumer);
        free(st->redis.field);
        free(st->statsd_listen);
        for (size_t k = 0; k < st->nstatsd_allow; k++)
            free(st->statsd_allow[k]);
        free(st->statsd_allow);
    }
    free(c->hooks.slack_env);
    free(c->hooks.slack_secret);
    free(c->hooks.slack_stream);
    free(c->hooks.gong_env);
    free(c->hooks.gong_secret);
    free(c->hooks.gong_stream);
    free(c->streams);
    free(c);
}

/* ---- the schema, for the manual page (config_doc.c) -------------------- */

static const char *field_type_name(field_type t)
{
    switch (t) {
    case F_STRING: return "string";
    case F_URL: return "URL (empty disables)";
    case F_REDIS_URL: return "Redis URL (empty disables)";
    case F_DIR: return "path (relative to the file's directory)";
    case F_LISTEN: return "HOST:PORT";
    case F_SIZE: return "size (bytes, or 64KiB, 1MB, ...)";
    case F_COUNT: return "integer > 0";
    case F_COUNT0: return "integer >= 0";
    case F_SECONDS: return "duration (seconds, or 250ms, 5m, 1h, 7d)";
    case F_TTL: return "duration, at most 10 years";
    case F_LEVEL: return "debug | info | warn | error";
    case F_BOOL: return "boolean";
    case F_SECRET: return "environment variable name";
    case F_SECTION: return "mapping";
    case F_CUSTOM: break;
    }
    return NULL;
}

/* Mappings of user-chosen names, each entry walked with its own fields. */
static const struct {
    field_fn fn;
    const char *name; /* the placeholder in the documented path */
    const field *fields;
} named_sections[] = {
    {walk_instances, "NAME", instance_fields},
    {walk_streams, "NAME", stream_fields},
    {walk_consolidate, "INSTANCE", consolidate_fields},
};

/* A typed field's value in `dflt` (conf_defaults) as sophia.yaml would
 * write it, or NULL when the loader leaves it unset (0 or no string):
 * then a default applied at use time is described in config_doc.c. */
static const char *default_text(const field *f, const void *dflt, char *buf,
                                size_t cap)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    if (!dflt)
        return NULL;
    switch (f->type) {
    case F_SIZE: {
        size_t v = *AT(dflt, f->off, size_t);
        static const char *const units[] = {"GiB", "MiB", "KiB"};
        for (int i = 0; v && i < 3; i++)
            if (v % ((size_t)1 << (30 - 10 * i)) == 0) {
                snprintf(buf, cap, "%zu%s", v >> (30 - 10 * i), units[i]);
                return buf;
            }
        snprintf(buf, cap, "%zu", v);
        return v ? buf : NULL;
    }
    case F_COUNT:
    case F_COUNT0:
        snprintf(buf, cap, "%zu", *AT(dflt, f->off, size_t));
        return *AT(dflt, f->off, size_t) ? buf : NULL;
    case F_SECONDS:
    case F_TTL: {
        double v = *AT(dflt, f->off, double);
        if (v >= 86400 && v == (long long)v && (long long)v % 86400 == 0)
            snprintf(buf, cap, "%lldd", (long long)v / 86400);
        else if (v >= 3600 && v == (long long)v && (long long)v % 3600 == 0)
            snprintf(buf, cap, "%lldh", (long long)v / 3600);
        else
            snprintf(buf, cap, "%g", v);
        return v != 0 ? buf : NULL;
    }
    case F_LEVEL:
        return levels[*AT(dflt, f->off, sophia_log_lvl)];
    case F_BOOL: /* -1: decided at start-up, described in config_doc.c */
        return *AT(dflt, f->off, int) < 0 ? NULL : *AT(dflt, f->off, int) ? "true" : "false";
    case F_STRING:
    case F_LISTEN:
    case F_SECRET:
        return *AT(dflt, f->off, char *);
    default:
        return NULL;
    }
}

static void each_key(const field *fields, const char *prefix,
                     const void *dflt, sophia_conf_key_fn fn, void *arg)
{
    char path[256], def[64];
    for (const field *f = fields; f->key; f++) {
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "",
                 f->key);
        fn(path, field_type_name(f->type), default_text(f, dflt, def, sizeof(def)), arg);
        if (f->type == F_SECTION)
            each_key(f->sub->fields, path, dflt, fn, arg);
        for (size_t i = 0; f->type == F_CUSTOM &&
                           i < sizeof(named_sections) / sizeof(named_sections[0]); i++) {
            if (named_sections[i].fn != f->fn)
                continue;
            char sub[300];
            snprintf(sub, sizeof(sub), "%s.%s", path, named_sections[i].name);
            each_key(named_sections[i].fields, sub, NULL, fn, arg);
        }
    }
}

void sophia_conf_each_key(sophia_conf_key_fn fn, void *arg)
{
    sophia_conf *dflt = conf_defaults("defaults");
    each_key(top_sec.fields, "", dflt, fn, arg);
    sophia_conf_free(dflt);
}
