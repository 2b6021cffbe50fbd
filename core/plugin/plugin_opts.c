/*
 * plugin_opts - an instance's options: the YAML values typed against the
 * plugin's option table (unknown or repeated keys, wrong types and missing
 * required values each reported at their YAML position), the getters
 * behind sophia_host.opt_*, and the table printed for `--check`. See
 * plugin.h.
 */
#include "plugin/plugin.h"
#include "plugin/plugin_priv.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Bounds the walk over an option table whose terminator went missing. */
#define MAX_OPTIONS 1024

/* One typed option value. Scalars keep their text too, so opt_string works
 * on every scalar and `--check` can show what was configured. */
typedef struct opt_value {
    char *name;
    sophia_opt_type type;
    char *text;   /* scalars */
    int64_t i;    /* INT */
    double d;     /* INT and DOUBLE */
    int b;        /* BOOL */
    char **items; /* LIST */
    size_t nitems;
} opt_value;

struct sophia_opts {
    opt_value *v;
    size_t count;
};

/* ------------------------------------------------------- scalar parsing */

/* Strict: the whole text is one base-10 integer that fits in 64 bits. */
static int parse_int(const char *s, int64_t *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* A finite number; "nan" and "inf" are not option values anyone means. */
static int parse_double(const char *s, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* The YAML 1.1 booleans operators actually write, any case. */
static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; s && i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0)
            return *out = 0, 0;
    }
    return -1;
}

/* Types `text` into `v` (whose type is set). 0, or -1 when it does not
 * parse as that type. */
static int scalar_to_value(const char *text, opt_value *v)
{
    switch (v->type) {
    case SOPHIA_OPT_INT:
        if (parse_int(text, &v->i))
            return -1;
        v->d = (double)v->i;
        break;
    case SOPHIA_OPT_DOUBLE:
        if (parse_double(text, &v->d))
            return -1;
        break;
    case SOPHIA_OPT_BOOL:
        if (parse_bool(text, &v->b))
            return -1;
        break;
    case SOPHIA_OPT_STRING:
    case SOPHIA_OPT_JSON:
        break;
    case SOPHIA_OPT_LIST:
        return -1;
    }
    v->text = strdup(text);
    return v->text ? 0 : -1;
}

static const char *type_name(sophia_opt_type t)
{
    switch (t) {
    case SOPHIA_OPT_STRING:
        return "string";
    case SOPHIA_OPT_INT:
        return "int";
    case SOPHIA_OPT_DOUBLE:
        return "double";
    case SOPHIA_OPT_BOOL:
        return "bool";
    case SOPHIA_OPT_LIST:
        return "list";
    case SOPHIA_OPT_JSON:
        return "json";
    }
    return "?";
}

static const char *type_expect(sophia_opt_type t)
{
    switch (t) {
    case SOPHIA_OPT_INT:
        return "an integer";
    case SOPHIA_OPT_DOUBLE:
        return "a number";
    case SOPHIA_OPT_BOOL:
        return "a boolean (true/false/yes/no/on/off)";
    case SOPHIA_OPT_LIST:
        return "a list (YAML sequence)";
    case SOPHIA_OPT_STRING:
    case SOPHIA_OPT_JSON:
        break;
    }
    return "a string";
}

/* --------------------------------------------------------- option values */

void plugin_opts_free(sophia_opts *o)
{
    if (!o)
        return;
    for (size_t i = 0; i < o->count; i++) {
        opt_value *v = &o->v[i];
        free(v->name);
        free(v->text);
        for (size_t j = 0; j < v->nitems; j++)
            free(v->items[j]);
        free(v->items);
    }
    free(o->v);
    free(o);
}

static const opt_value *opts_find(const sophia_opts *o, const char *name)
{
    for (size_t i = 0; o && name && i < o->count; i++)
        if (strcmp(o->v[i].name, name) == 0)
            return &o->v[i];
    return NULL;
}

const char *sophia_opts_string(const sophia_opts *o, const char *name)
{
    const opt_value *v = opts_find(o, name);
    return v ? v->text : NULL;
}

int64_t sophia_opts_int(const sophia_opts *o, const char *name)
{
    const opt_value *v = opts_find(o, name);
    return v ? v->i : 0;
}

double sophia_opts_double(const sophia_opts *o, const char *name)
{
    const opt_value *v = opts_find(o, name);
    return v ? v->d : 0.0;
}

int sophia_opts_bool(const sophia_opts *o, const char *name)
{
    const opt_value *v = opts_find(o, name);
    return v ? v->b : 0;
}

size_t sophia_opts_list_len(const sophia_opts *o, const char *name)
{
    const opt_value *v = opts_find(o, name);
    return v ? v->nitems : 0;
}

const char *sophia_opts_list_item(const sophia_opts *o, const char *name,
                                  size_t i)
{
    const opt_value *v = opts_find(o, name);
    return v && i < v->nitems ? v->items[i] : NULL;
}

/* -------------------------------------------------------- option tables */

/* Number of entries, or -1 when the table is malformed (reported). A
 * default that does not parse is the plugin's bug, reported as such. */
int plugin_check_option_table(load_ctx *L)
{
    const sophia_option *t = L->inst->desc->options;
    const char *mod = L->inst->module;
    int n = 0, bad = 0;
    for (; t && t[n].name; n++) {
        opt_value probe = {.type = t[n].type};
        if (n >= MAX_OPTIONS || t[n].type < SOPHIA_OPT_STRING ||
            t[n].type > SOPHIA_OPT_JSON) {
            diag_at(L, L->ci->line, L->ci->col,
                    "plugin '%s' has a broken option table (entry %d)", mod,
                    n);
            return -1;
        }
        if (t[n].def && t[n].type == SOPHIA_OPT_LIST) {
            /* Refused rather than ignored: the plugin would otherwise run
             * with an empty list its author believes has items. */
            diag_at(L, L->ci->line, L->ci->col,
                    "plugin '%s' is broken: list option '%s' has a default "
                    "('%s'), but a list's default is always empty (def must "
                    "be NULL)",
                    mod, t[n].name, t[n].def);
            bad = 1;
        } else if (t[n].def && scalar_to_value(t[n].def, &probe)) {
            diag_at(L, L->ci->line, L->ci->col,
                    "plugin '%s' is broken: default '%s' of option '%s' is "
                    "not %s",
                    mod, t[n].def, t[n].name, type_expect(t[n].type));
            bad = 1;
        }
        free(probe.text);
    }
    return bad ? -1 : n;
}

/* ------------------------------------------------------ option checking */

static const sophia_option *table_find(const sophia_option *t,
                                       const char *key)
{
    for (size_t i = 0; t && t[i].name; i++)
        if (strcmp(t[i].name, key) == 0)
            return &t[i];
    return NULL;
}

static void report_unknown(load_ctx *L, const sophia_conf_opt *o)
{
    const sophia_option *t = L->inst->desc->options;
    char valid[640] = "";
    for (size_t i = 0; t && t[i].name; i++)
        buf_add(valid, sizeof(valid), "%s%s", i ? ", " : "", t[i].name);
    if (*valid)
        diag_at(L, o->key_line, o->key_col,
                "instance '%s': unknown option '%s' for plugin '%s'; valid "
                "options: %s",
                L->ci->name, o->key, L->inst->module, valid);
    else
        diag_at(L, o->key_line, o->key_col,
                "instance '%s': unknown option '%s': plugin '%s' takes no "
                "options",
                L->ci->name, o->key, L->inst->module);
}

/* Unknown and repeated keys; values are checked per table entry. */
static int check_keys(load_ctx *L)
{
    const sophia_conf_instance *ci = L->ci;
    int bad = 0;
    for (size_t i = 0; i < ci->nopts; i++) {
        const sophia_conf_opt *o = &ci->opts[i];
        if (!table_find(L->inst->desc->options, o->key)) {
            report_unknown(L, o);
            bad = 1;
            continue;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ci->opts[j].key, o->key) == 0) {
                diag_at(L, o->line, o->col,
                        "instance '%s': option '%s' given twice (first at "
                        "line %d)",
                        ci->name, o->key, ci->opts[j].line);
                bad = 1;
                break;
            }
        }
    }
    return bad ? -1 : 0;
}

static const sophia_conf_opt *conf_find(const sophia_conf_instance *ci,
                                        const char *key)
{
    for (size_t i = 0; i < ci->nopts; i++)
        if (ci->opts[i].key && strcmp(ci->opts[i].key, key) == 0)
            return &ci->opts[i];
    return NULL;
}

static int copy_list(const sophia_conf_opt *o, opt_value *v)
{
    if (!o || o->nitems == 0)
        return 0;
    v->items = calloc(o->nitems, sizeof(*v->items));
    if (!v->items)
        return -1;
    for (size_t i = 0; i < o->nitems; i++) {
        v->items[i] = strdup(o->items[i] ? o->items[i] : "");
        if (!v->items[i])
            return -1;
        v->nitems++;
    }
    return 0;
}

/* Fills `v` from the YAML value `o` (or the default when `o` is NULL);
 * reports and returns -1 on a wrong type or a missing required value. */
static int fill_value(load_ctx *L, const sophia_option *t,
                      const sophia_conf_opt *o, opt_value *v)
{
    const char *inst = L->ci->name;
    if (t->type == SOPHIA_OPT_JSON && (o || t->def)) /* any value */
        return scalar_to_value(o ? o->json : t->def, v);
    if (o && o->nested) {
        diag_at(L, o->line, o->col,
                "instance '%s': option '%s' must be %s, got a mapping or a "
                "sequence of them",
                inst, t->name, type_expect(t->type));
        return -1;
    }
    if (t->type == SOPHIA_OPT_LIST) {
        if (o && !o->is_seq) {
            diag_at(L, o->line, o->col,
                    "instance '%s': option '%s' must be a list (YAML "
                    "sequence), got '%s'",
                    inst, t->name, o->scalar ? o->scalar : "");
            return -1;
        }
        return copy_list(o, v);
    }
    if (o && o->is_seq) {
        diag_at(L, o->line, o->col,
                "instance '%s': option '%s' must be %s, not a list", inst,
                t->name, type_expect(t->type));
        return -1;
    }
    const char *text = o ? o->scalar : t->def;
    if (!text && !o) {
        diag_at(L, L->ci->line, L->ci->col,
                "instance '%s': missing required option '%s' (%s) for "
                "plugin '%s'",
                inst, t->name, type_name(t->type), L->inst->module);
        return -1;
    }
    if (scalar_to_value(text ? text : "", v)) {
        diag_at(L, o ? o->line : L->ci->line, o ? o->col : L->ci->col,
                "instance '%s': option '%s' must be %s, got '%s'", inst,
                t->name, type_expect(t->type), text ? text : "");
        return -1;
    }
    return 0;
}

/* The typed options of the instance, or NULL (each problem reported). */
sophia_opts *plugin_build_opts(load_ctx *L)
{
    const sophia_option *t = L->inst->desc->options;
    int bad = check_keys(L);
    size_t n = 0;
    while (t && t[n].name)
        n++;

    sophia_opts *o = calloc(1, sizeof(*o));
    if (!o || (n && !(o->v = calloc(n, sizeof(*o->v))))) {
        free(o);
        diag_at(L, L->ci->line, L->ci->col, "instance '%s': out of memory",
                L->ci->name);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        opt_value *v = &o->v[o->count++];
        v->type = t[i].type;
        v->name = strdup(t[i].name);
        if (!v->name || fill_value(L, &t[i], conf_find(L->ci, t[i].name), v))
            bad = 1;
    }
    if (bad) {
        plugin_opts_free(o);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------- --check */

static const char *default_text(const sophia_option *t)
{
    if (t->type == SOPHIA_OPT_LIST)
        return "[]";
    if (!t->def)
        return "(required)";
    return *t->def ? t->def : "\"\"";
}

void sophia_plugin_print_options(const sophia_instance *inst, FILE *out)
{
    if (!inst || !inst->desc)
        return;
    const sophia_plugin *d = inst->desc;
    fprintf(out, "instance '%s': plugin %s %s (%s), %s\n", inst->name,
            d->name, d->version, sophia_plugin_kind_name(d->kind),
            inst->file);
    if (d->description)
        fprintf(out, "  %s\n", d->description);
    const sophia_option *t = d->options;
    if (!t || !t->name) {
        fprintf(out, "  (no options)\n");
        return;
    }
    int wn = (int)strlen("option"), wd = (int)strlen("default");
    for (size_t i = 0; t[i].name; i++) {
        int n = (int)strlen(t[i].name), dl = (int)strlen(default_text(&t[i]));
        wn = n > wn ? n : wn;
        wd = dl > wd ? dl : wd;
    }
    fprintf(out, "  %-*s  %-6s  %-*s  %s\n", wn, "option", "type", wd,
            "default", "description");
    for (size_t i = 0; t[i].name; i++)
        fprintf(out, "  %-*s  %-6s  %-*s  %s\n", wn, t[i].name,
                type_name(t[i].type), wd, default_text(&t[i]),
                t[i].description ? t[i].description : "");
}
