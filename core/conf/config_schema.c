/*
 * config_schema - pass 2's machinery (config.c): walking the node tree
 * against tables of fields (key, type, offset; Fluent Bit's config_map
 * idea), so unknown keys, wrong types and bad values are all found the same
 * way and each becomes one `FILE:LINE:COL: message` at the offending node.
 *
 * Here: the value parsers (sizes, durations, integers, ports, names), path
 * resolution against the file's directory, one apply function per field
 * type (F_STRING, F_SIZE, F_TTL, F_BOOL, ...), the unknown-key error that
 * lists what the section allows, and the checks shared by named entries.
 * What each section contains is in config_sections.c and
 * config_streams.c; this file knows no section.
 */
#include "conf/config_priv.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/redis_url.h"

/* ---- value parsers (pure, also used by validation) --------------------- */

/* Strict base-10 integer: whole string, no blanks. -2 on overflow. */
int conf_parse_ll(const char *s, long long *out)
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
    if (!isdigit((unsigned char)*s) || conf_parse_ll(s, &v) || v < 1 || v > 65535)
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
        *host = conf_xstrndup(h, (size_t)(hend - h));
    return 0;
}

/* ---- paths ------------------------------------------------------------- */

/* Collapses "//", "." and ".." in an absolute path, lexically. */
static char *normalize_path(const char *abs)
{
    size_t n = strlen(abs);
    char *out = conf_xrealloc(NULL, n + 2);
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
    char *s = conf_xrealloc(NULL, a + b + 2);
    memcpy(s, dir, a);
    s[a] = '/';
    memcpy(s + a + 1, rel, b + 1);
    return s;
}

/* Canonical when the path exists (symlinks resolved), else lexical. */
char *conf_absolutize(const char *base, const char *path)
{
    char *joined = path[0] == '/' ? conf_xstrdup(path) : join_path(base, path);
    char *real = realpath(joined, NULL);
    char *res = real ? conf_xstrdup(real) : normalize_path(joined);
    free(real);
    free(joined);
    return res;
}

/* Directory holding `name`, absolute. */
char *conf_base_dir_of(const char *name)
{
    const char *slash = strrchr(name, '/');
    char *dir;
    if (!slash)
        dir = conf_xstrdup(".");
    else /* "/t.yaml" lives in "/" */
        dir = conf_xstrndup(name, slash == name ? 1 : (size_t)(slash - name));
    if (dir[0] != '/') {
        char *cwd = getcwd(NULL, 0);
        char *j = join_path(cwd ? cwd : "/", dir);
        free(cwd);
        free(dir);
        dir = j;
    }
    char *res = conf_absolutize("/", dir);
    free(dir);
    return res;
}

/* ---- pass 2: the schema ------------------------------------------------ */

/* Calls fn for each well-formed pair of a mapping; a null value counts as an
 * empty mapping, so `options:` with nothing under it is fine. */
void conf_each_pair(loader *ld, const node *map, const char *path,
                    pair_fn fn, void *base, const void *arg)
{
    if (map->reported || conf_is_null(map))
        return;
    if (map->kind != NODE_MAP) {
        ERR(ld, map, "%s: expected a mapping, got %s", path, conf_kind_name(map));
        return;
    }
    for (size_t i = 0; i + 1 < map->nkids; i += 2) {
        const node *k = map->kids[i], *v = map->kids[i + 1];
        if (k->kind != NODE_SCALAR)
            ERR(ld, k, "%s: mapping keys must be scalars, got %s", path,
                conf_kind_name(k));
        else if (k->dup_of)
            ERR(ld, k, "%s: duplicate key '%s' (first at line %d column %d)",
                path, k->text, k->dup_of->line, k->dup_of->col);
        else
            fn(ld, k, v, base, arg, path);
    }
}

void conf_child_path(char *buf, size_t n, const char *path, const char *key)
{
    if (*path == '\0' || !strcmp(path, "the top level"))
        snprintf(buf, n, "%s", key);
    else
        snprintf(buf, n, "%s.%s", path, key);
}

/* A scalar that is not null, or an error naming what was expected. */
const char *conf_want_scalar(loader *ld, const node *v, const char *path,
                             const char *expected)
{
    if (v->kind == NODE_SCALAR && !conf_is_null(v))
        return v->text;
    ERR(ld, v, "%s: expected %s, got %s", path, expected, conf_kind_name(v));
    return NULL;
}

void conf_set_str(char **slot, char *value)
{
    free(*slot);
    *slot = value;
}

static void apply_string(loader *ld, const field *f, const node *v,
                         void *base, const char *path)
{
    const char *s = conf_want_scalar(ld, v, path, "a string");
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
        conf_set_str(AT(base, f->off, char *), conf_absolutize(ld->basedir, s));
    else
        conf_set_str(AT(base, f->off, char *), conf_xstrdup(s));
}

static void apply_url(loader *ld, const field *f, const node *v, void *base,
                      const char *path)
{
    char **slot = AT(base, f->off, char *);
    if (conf_is_null(v)) {
        conf_set_str(slot, NULL);
        return;
    }
    const char *s = conf_want_scalar(ld, v, path, "a URL string");
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
        conf_set_str(slot, *s ? conf_xstrdup(s) : NULL);
}

static void apply_integer(loader *ld, const field *f, const node *v,
                          void *base, const char *path)
{
    const char *s = conf_want_scalar(ld, v, path, "an integer");
    long long n;
    if (!s)
        return;
    int r = conf_parse_ll(s, &n);
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
    const char *s = conf_want_scalar(ld, v, path, "a size (bytes, or e.g. 64MiB)");
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
    const char *s = conf_want_scalar(ld, v, path, "a duration");
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
int conf_parse_bool(const char *s)
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
    const char *s = conf_want_scalar(ld, v, path, "a boolean");
    int b = s ? conf_parse_bool(s) : -1;
    if (s && b < 0)
        ERR(ld, v, "%s: expected a boolean (true/false), got '%s'", path, s);
    if (b >= 0)
        *AT(base, f->off, int) = b;
}

static void apply_level(loader *ld, const field *f, const node *v, void *base,
                        const char *path)
{
    const char *s = conf_want_scalar(ld, v, path, "a log level");
    if (!s)
        return;
    int lvl = sophia_log_parse_level(s);
    if (lvl < 0)
        ERR(ld, v, "%s: unknown level '%s' (allowed: debug, info, warn, "
                   "error)", path, s);
    else
        *AT(base, f->off, sophia_log_lvl) = (sophia_log_lvl)lvl;
}

void conf_apply_secret(loader *ld, const field *f, const node *v,
                       void *base, const char *path)
{
    const char *s = conf_want_scalar(ld, v, path, "an environment variable name");
    if (!s)
        return;
    if (!valid_env_name(s)) {
        ERR(ld, v, "%s: '%s' is not an environment variable name (it names "
                   "the variable holding the secret, not the secret)", path, s);
        return;
    }
    const char *val = getenv(s);
    conf_set_str(AT(base, f->off, char *), conf_xstrdup(s));
    conf_set_str(AT(base, f->off2, char *), val && *val ? conf_xstrdup(val) : NULL);
}

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
        conf_apply_secret(ld, f, v, base, path);
        break;
    case F_SECTION:
        conf_walk_section(ld, v, f->sub, base, path);
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
        conf_child_path(sub, sizeof(sub), path, f->key);
        apply_field(ld, f, v, base, sub);
        return;
    }
    unknown_key(ld, k, sec);
}

void conf_walk_section(loader *ld, const node *map, const section *sec,
                       void *base, const char *path)
{
    conf_each_pair(ld, map, path, section_pair, base, sec);
}

int conf_has_key(const node *map, const char *key)
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
int conf_check_named(loader *ld, const node *k, const node *v,
                     const char *path, const char *what)
{
    if (!valid_name(k->text))
        ERR(ld, k, "%s: %s name '%s' may only contain letters, digits, '_', "
                   "'.' and '-'", path, what, k->text);
    if (v->reported)
        return -1;
    if (v->kind != NODE_MAP) {
        ERR(ld, v, "%s.%s: expected a mapping, got %s", path, k->text,
            conf_kind_name(v));
        return -1;
    }
    return 0;
}
