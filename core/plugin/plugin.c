/*
 * plugin - see plugin.h. Loading one instance is a pipeline of checks, each
 * of which may only trust what the previous one proved:
 *
 *   the module name: a name, never a path ('/' or '..' are refused)
 *   -> find it in each plugins.path directory in order; strict modes (the
 *      file, its directory and the path directory owned by us or root and
 *      writable by nobody else) before a byte of it runs
 *   -> open the module (libltdl)
 *   -> find `sophia_plugin_v1`
 *   -> ABI check, reading nothing but struct_size/abi_major/abi_minor
 *      (a plugin built for another major may lay the rest out differently)
 *   -> descriptor sanity (kind, ops table, option table, defaults)
 *   -> options: the YAML scalars typed against the option table
 *   -> init()
 *
 * Loading a whole set first tries every instance in a child process
 * (plugin_probe.c), so a plugin that crashes in its constructor or init()
 * is reported rather than fatal.
 *
 * Every failure becomes a `FILE:LINE:COL: message` in the caller's diag and
 * unwinds what was done so far, so a failed load leaves nothing open.
 * Modules are opened with local symbol scope: two plugins may both define
 * `parse_line` without one silently calling the other's.
 *
 * libltdl reference-counts modules by file name, so every instance holds
 * its own handle and closes exactly that one; a rebuilt `.so` is only read
 * again once every handle on the old one is closed (and it must be replaced
 * by rename, never overwritten in place, while loaded).
 */
#include "plugin/plugin.h"
#include "plugin/plugin_probe.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <ltdl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* The descriptor as SDK 1.0 defined it ends with the consolidator pointer;
 * the reserved slots are spare room, not fields the host reads. */
#define PLUGIN_SIZE_1_0                                                       \
    (offsetof(sophia_plugin, consolidator) + sizeof(void *))
/* struct_size, abi_major, abi_minor: what the ABI check may read. */
#define PLUGIN_HEADER_SIZE (offsetof(sophia_plugin, abi_minor) + sizeof(uint16_t))
/* An ops table claiming more than this is garbage, not a future minor. */
#define OPS_MAX_SIZE 65536u
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

/* What every check needs to say where and about what it complains. */
typedef struct load_ctx {
    const sophia_conf *c;
    const sophia_conf_instance *ci;
    sophia_diag *diag;
    sophia_instance *inst;
    const sophia_plugin_set *old; /* the running set during a reload */
} load_ctx;

/* ------------------------------------------------------------- helpers */

static void diag_at(const load_ctx *L, int line, int col, const char *fmt,
                    ...) SOPHIA_PRINTF(4, 5);

static void diag_at(const load_ctx *L, int line, int col, const char *fmt,
                    ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sophia_diag_add(L->diag, L->c ? L->c->file : NULL, line, col, "%s", msg);
}

/* Appends to a fixed buffer, truncating quietly: messages are for humans. */
static void buf_add(char *buf, size_t cap, const char *fmt, ...)
    SOPHIA_PRINTF(3, 4);

static void buf_add(char *buf, size_t cap, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, cap - used, fmt, ap);
    va_end(ap);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static const char *fallback_strerror(int err)
{
    switch (err) {
    case SOPHIA_OK:
        return "ok";
#define SOPHIA_ERR_STR_(name, val, str)                                       \
    case SOPHIA_##name:                                                       \
        return str;
        SOPHIA_ERRNO_MAP(SOPHIA_ERR_STR_)
#undef SOPHIA_ERR_STR_
    default:
        return "unknown error";
    }
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
    }
    return "?";
}

const char *sophia_plugin_kind_name(sophia_plugin_kind kind)
{
    switch (kind) {
    case SOPHIA_KIND_PROCESSOR:
        return "processor";
    case SOPHIA_KIND_WRITE_STRATEGY:
        return "write_strategy";
    case SOPHIA_KIND_CONSOLIDATOR:
        return "consolidator";
    }
    return "unknown";
}

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
        break;
    case SOPHIA_OPT_LIST:
        return -1;
    }
    v->text = strdup(text);
    return v->text ? 0 : -1;
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
        break;
    }
    return "a string";
}

/* --------------------------------------------------------- option values */

static void opts_free(sophia_opts *o)
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

/* ------------------------------------------------------ opening modules */

/* Local scope and extension search (.la, then .so). */
static lt_dlhandle open_path(const char *path)
{
    lt_dladvise adv;
    if (lt_dladvise_init(&adv))
        return NULL;
    lt_dlhandle h = NULL;
    if (lt_dladvise_ext(&adv) == 0 && lt_dladvise_local(&adv) == 0)
        h = lt_dlopenadvise(path, adv);
    lt_dladvise_destroy(&adv);
    return h;
}

/* `dir/module` as libltdl would find it: the name as is when it has an
 * extension, else `.la` then `.so`. A malloc'd path of a file that
 * exists, or NULL. */
static char *find_in_dir(const char *dir, const char *module)
{
    static const char *const exts[] = {".la", ".so"};
    const char *dot = strrchr(module, '.');
    int has_ext = dot && (!strcmp(dot, ".la") || !strcmp(dot, ".so"));
    size_t n = strlen(dir) + strlen(module) + 5;
    char *path = malloc(n);
    for (size_t i = 0; path && i < (has_ext ? 1u : 2u); i++) {
        snprintf(path, n, "%s/%s%s", dir, module, has_ext ? "" : exts[i]);
        struct stat sb;
        if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
            return path;
    }
    free(path);
    return NULL;
}

/* sshd's StrictModes for one file or directory: owned by the daemon's
 * user or root and writable by nobody else, since whoever can replace a
 * plugin runs code as the daemon. NULL when fine, else why not. */
static const char *unsafe_mode(const char *path, char *why, size_t cap)
{
    struct stat sb;
    if (stat(path, &sb) < 0) {
        snprintf(why, cap, "cannot stat %s: %s", path, strerror(errno));
        return why;
    }
    if (sb.st_uid != geteuid() && sb.st_uid != 0) {
        snprintf(why, cap, "%s is owned by uid %u, not by the daemon's uid %u "
                 "or root", path, (unsigned)sb.st_uid, (unsigned)geteuid());
        return why;
    }
    mode_t w = sb.st_mode & (S_IWGRP | S_IWOTH);
    if (w) {
        snprintf(why, cap, "%s is writable by %s (mode %04o)", path,
                 w == (S_IWGRP | S_IWOTH) ? "group and others"
                 : w == S_IWGRP           ? "group"
                                          : "others",
                 (unsigned)(sb.st_mode & 07777));
        return why;
    }
    return NULL;
}

/* The file (through any symlink), the directory holding it and the
 * plugins.path directory it was found in must all be safe. */
static int check_modes(load_ctx *L, const char *dir, const char *path)
{
    if (!L->c->plugin_strict_modes)
        return 0;
    char why[PATH_MAX + 128];
    const char *bad = NULL;
    char *real = realpath(path, NULL);
    if (!real) {
        bad = unsafe_mode(path, why, sizeof(why));
    } else if (!(bad = unsafe_mode(real, why, sizeof(why)))) {
        char *slash = strrchr(real, '/');
        if (slash)
            *slash = '\0';
        bad = unsafe_mode(slash && slash != real ? real : "/", why,
                          sizeof(why));
    }
    free(real);
    if (!bad)
        bad = unsafe_mode(dir, why, sizeof(why));
    if (!bad)
        return 0;
    diag_at(L, L->ci->line, L->ci->col,
            "instance '%s': plugin '%s' refused: %s; fix its permissions "
            "or set plugins.strict_modes: false",
            L->ci->name, L->ci->plugin, bad);
    return -1;
}

/* Tries `dir/module` for one directory; on failure appends what went
 * wrong there to `tried`. Sets *refused when the file is there but
 * unsafe (reported): the search stops rather than pick another one. */
static lt_dlhandle open_in_dir(load_ctx *L, const char *dir,
                               const char *module, char *tried, size_t cap,
                               int *refused)
{
    char *path = find_in_dir(dir, module);
    if (!path) {
        buf_add(tried, cap, "%s%s (file not found)", *tried ? "; " : "", dir);
        return NULL;
    }
    lt_dlhandle h = NULL;
    if (check_modes(L, dir, path)) {
        *refused = 1;
    } else if (!(h = open_path(path))) {
        const char *err = lt_dlerror();
        buf_add(tried, cap, "%s%s (%s)", *tried ? "; " : "", dir,
                err ? err : "unknown error");
    }
    free(path);
    return h;
}

/* Records what `file` is now, so a reload can tell a rebuilt module. */
static void file_identity(sophia_instance *inst)
{
    struct stat sb;
    if (stat(inst->file, &sb) < 0)
        return;
    inst->file_dev = (uint64_t)sb.st_dev;
    inst->file_ino = (uint64_t)sb.st_ino;
    inst->file_mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 +
                          sb.st_mtim.tv_nsec;
}

static int same_identity(const sophia_instance *a, const sophia_instance *b)
{
    return a->file_dev == b->file_dev && a->file_ino == b->file_ino &&
           a->file_mtime_ns == b->file_mtime_ns;
}

/* Copies `from` to a fresh private directory; returns the copy's path. */
static char *copy_module(const char *from)
{
    char dirt[] = "/tmp/sophia-reload-XXXXXX";
    if (!mkdtemp(dirt))
        return NULL;
    const char *base = strrchr(from, '/');
    base = base ? base + 1 : from;
    size_t n = strlen(dirt) + strlen(base) + 2;
    char *to = malloc(n);
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = to ? (snprintf(to, n, "%s/%s", dirt, base),
                    open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700))
                 : -1;
    int ok = in >= 0 && out >= 0;
    char buf[65536];
    ssize_t r;
    while (ok && (r = read(in, buf, sizeof(buf))) != 0)
        ok = r > 0 && write(out, buf, (size_t)r) == r;
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out) < 0)
        ok = 0;
    if (!ok) {
        if (to)
            unlink(to);
        rmdir(dirt);
        free(to);
        return NULL;
    }
    return to;
}

static void remove_copy(char *path)
{
    unlink(path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    rmdir(path);
    free(path);
}

/* libltdl and dlopen both hand back the open module for a path already
 * open, even when the file was since replaced by a rebuilt one. During a
 * reload such a stale handle is dropped and the new file is opened via
 * a private copy (unlinked once mapped), so old and new code coexist
 * until the old set is retired. */
static int reopen_if_stale(load_ctx *L)
{
    sophia_instance *inst = L->inst;
    const sophia_instance *holder = NULL;
    for (size_t i = 0; L->old && i < L->old->count; i++)
        if (L->old->items[i]->handle == inst->handle)
            holder = L->old->items[i];
    if (!holder || same_identity(holder, inst))
        return 0;
    lt_dlclose((lt_dlhandle)inst->handle);
    inst->handle = NULL;
    char *copy = copy_module(inst->file);
    lt_dlhandle h = copy ? open_path(copy) : NULL;
    const char *err = h ? NULL : copy ? lt_dlerror() : strerror(errno);
    if (!h)
        diag_at(L, L->ci->line, L->ci->col,
                "instance '%s': cannot load rebuilt plugin '%s' (%s)",
                L->ci->name, inst->file, err ? err : "unknown error");
    if (copy)
        remove_copy(copy);
    inst->handle = h;
    return h ? 0 : -1;
}

/* A module is a name looked up on plugins.path, never a path: a '/' or
 * a '..' could reach any file on the machine. */
static int check_module_name(load_ctx *L, const char *module)
{
    if (!strchr(module, '/') && !strstr(module, ".."))
        return 0;
    diag_at(L, L->ci->line, L->ci->col,
            "instance '%s': plugin '%s' refused: a plugin is a module name "
            "looked up in the plugins.path directories, not a path (no '/' "
            "or '..')",
            L->ci->name, module);
    return -1;
}

/* plugins.path in order. */
static int open_module(load_ctx *L)
{
    const sophia_conf *c = L->c;
    const char *module = L->ci->plugin;
    char tried[768] = "";
    lt_dlhandle h = NULL;
    int refused = 0;

    if (check_module_name(L, module))
        return -1;
    if (c->nplugin_path == 0)
        buf_add(tried, sizeof(tried), "nothing (plugins.path is empty)");
    for (size_t i = 0; !h && !refused && i < c->nplugin_path; i++)
        h = open_in_dir(L, c->plugin_path[i], module, tried, sizeof(tried),
                        &refused);
    if (refused)
        return -1;
    if (!h) {
        diag_at(L, L->ci->line, L->ci->col,
                "instance '%s': cannot load plugin '%s'; tried: %s",
                L->ci->name, module, tried);
        return -1;
    }
    /* The canonical path: it is what /api/stats and messages show. */
    const lt_dlinfo *info = lt_dlgetinfo(h);
    const char *name = info && info->filename ? info->filename : module;
    L->inst->handle = h;
    L->inst->file = realpath(name, NULL);
    if (!L->inst->file)
        L->inst->file = xstrdup(name);
    if (!L->inst->file)
        return -1;
    file_identity(L->inst);
    return reopen_if_stale(L);
}

/* ---------------------------------------------------- descriptor checks */

static int find_descriptor(load_ctx *L)
{
    sophia_instance *inst = L->inst;
    inst->desc = lt_dlsym((lt_dlhandle)inst->handle, SOPHIA_PLUGIN_SYMBOL);
    if (inst->desc)
        return 0;
    diag_at(L, L->ci->line, L->ci->col,
            "plugin '%s' (%s) does not export %s (not a Sophia plugin?)",
            inst->module, inst->file, SOPHIA_PLUGIN_SYMBOL);
    return -1;
}

/* Reads only the three header fields: nothing after them is known to be
 * laid out the way this host expects until they check out. */
static int check_abi(load_ctx *L)
{
    const sophia_plugin *d = L->inst->desc;
    const char *mod = L->inst->module, *file = L->inst->file;
    int line = L->ci->line, col = L->ci->col;

    if (d->struct_size < PLUGIN_HEADER_SIZE) {
        diag_at(L, line, col,
                "plugin '%s' (%s) has a %u-byte descriptor, too small to "
                "hold even an ABI version",
                mod, file, (unsigned)d->struct_size);
        return -1;
    }
    if (d->abi_major != SOPHIA_SDK_VERSION_MAJOR) {
        diag_at(L, line, col,
                "plugin '%s' (%s) was built for SDK %u.%u; this sophiad "
                "provides SDK %d.%d (major differs)",
                mod, file, d->abi_major, d->abi_minor,
                SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
        return -1;
    }
    if (d->abi_minor > SOPHIA_SDK_VERSION_MINOR) {
        diag_at(L, line, col,
                "plugin '%s' (%s) needs SDK %u.%u, this sophiad provides "
                "SDK %d.%d (minor is newer; upgrade sophiad)",
                mod, file, d->abi_major, d->abi_minor,
                SOPHIA_SDK_VERSION_MAJOR, SOPHIA_SDK_VERSION_MINOR);
        return -1;
    }
    if (d->struct_size < PLUGIN_SIZE_1_0) {
        diag_at(L, line, col,
                "plugin '%s' (%s) has a %u-byte descriptor; SDK %u.0 needs "
                "at least %zu bytes (struct size too small: built against a "
                "damaged sdk.h?)",
                mod, file, (unsigned)d->struct_size, d->abi_major,
                (size_t)PLUGIN_SIZE_1_0);
        return -1;
    }
    return 0;
}

/* The ops table matching `kind`: its address, its 1.0 size and whether its
 * one callback is set. */
static int ops_of(const sophia_plugin *d, const uint32_t **size,
                  size_t *min, int *has_fn)
{
    switch (d->kind) {
    case SOPHIA_KIND_PROCESSOR:
        *size = d->processor ? &d->processor->struct_size : NULL;
        *min = offsetof(sophia_processor_ops, process) + sizeof(void *);
        *has_fn = d->processor && d->processor->process;
        return 0;
    case SOPHIA_KIND_WRITE_STRATEGY:
        *size = d->write_strategy ? &d->write_strategy->struct_size : NULL;
        *min = offsetof(sophia_write_ops, plan_put) + sizeof(void *);
        *has_fn = d->write_strategy && d->write_strategy->plan_put;
        return 0;
    case SOPHIA_KIND_CONSOLIDATOR:
        *size = d->consolidator ? &d->consolidator->struct_size : NULL;
        *min = offsetof(sophia_consolidator_ops, run) + sizeof(void *);
        *has_fn = d->consolidator && d->consolidator->run;
        return 0;
    }
    return -1;
}

static int check_ops(load_ctx *L)
{
    const sophia_plugin *d = L->inst->desc;
    const uint32_t *size;
    size_t min;
    int has_fn;

    if (ops_of(d, &size, &min, &has_fn)) {
        diag_at(L, L->ci->line, L->ci->col,
                "plugin '%s' (%s) has an invalid kind %d", L->inst->module,
                L->inst->file, (int)d->kind);
        return -1;
    }
    const char *kind = sophia_plugin_kind_name(d->kind);
    if (!size || *size < min || *size > OPS_MAX_SIZE || !has_fn) {
        diag_at(L, L->ci->line, L->ci->col,
                "plugin '%s' (%s) is a %s but its %s ops table is %s",
                L->inst->module, L->inst->file, kind, kind,
                !size ? "missing"
                : (*size < min || *size > OPS_MAX_SIZE)
                    ? "of an impossible size"
                    : "missing its callback");
        return -1;
    }
    return 0;
}

/* Number of entries, or -1 when the table is malformed (reported). A
 * default that does not parse is the plugin's bug, reported as such. */
static int check_option_table(load_ctx *L)
{
    const sophia_option *t = L->inst->desc->options;
    const char *mod = L->inst->module;
    int n = 0, bad = 0;
    for (; t && t[n].name; n++) {
        opt_value probe = {.type = t[n].type};
        if (n >= MAX_OPTIONS || t[n].type < SOPHIA_OPT_STRING ||
            t[n].type > SOPHIA_OPT_LIST) {
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

static int check_descriptor(load_ctx *L)
{
    const sophia_plugin *d = L->inst->desc;
    if (!d->name || !d->version) {
        diag_at(L, L->ci->line, L->ci->col,
                "plugin '%s' (%s) has no %s in its descriptor",
                L->inst->module, L->inst->file, !d->name ? "name" : "version");
        return -1;
    }
    if (check_ops(L))
        return -1;
    return check_option_table(L) < 0 ? -1 : 0;
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
static sophia_opts *build_opts(load_ctx *L)
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
        opts_free(o);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------- load/unload */

static void instance_free(sophia_instance *inst)
{
    if (!inst)
        return;
    if (inst->release) /* also for a failed init that had added a timer */
        inst->release(inst);
    if (inst->handle)
        lt_dlclose((lt_dlhandle)inst->handle);
    opts_free(inst->opts);
    free(inst->name);
    free(inst->module);
    free(inst->file);
    free(inst);
}

static int call_init(load_ctx *L, const sophia_host *host)
{
    sophia_instance *inst = L->inst;
    inst->host = host;
    if (!inst->desc->init)
        return 0;
    int rc = inst->desc->init(host, inst, inst->opts, &inst->state);
    if (rc == 0)
        return 0;
    const char *why = host && host->strerror ? host->strerror(rc)
                                             : fallback_strerror(rc);
    diag_at(L, L->ci->line, L->ci->col,
            "instance '%s': plugin '%s' (%s) init failed: %s (%d)",
            inst->name, inst->module, inst->file, why ? why : "?", rc);
    inst->state = NULL;
    return -1;
}

/* Open, find, check, type the options. */
static int prepare(load_ctx *L)
{
    if (!L->ci->plugin || !*L->ci->plugin) {
        diag_at(L, L->ci->line, L->ci->col,
                "instance '%s': no plugin module given ('plugin:')",
                L->ci->name);
        return -1;
    }
    if (open_module(L) || find_descriptor(L) || check_abi(L) ||
        check_descriptor(L))
        return -1;
    L->inst->opts = build_opts(L);
    return L->inst->opts ? 0 : -1;
}

static sophia_instance *load_one(const sophia_conf *c,
                                 const sophia_conf_instance *ci,
                                 const sophia_host *host,
                                 const sophia_plugin_set *old,
                                 sophia_diag *diag)
{
    load_ctx L = {c, ci, diag, calloc(1, sizeof(sophia_instance)), old};
    if (!L.inst)
        return NULL;
    L.inst->name = xstrdup(ci->name ? ci->name : "");
    L.inst->module = xstrdup(ci->plugin ? ci->plugin : "");
    if (!L.inst->name || !L.inst->module) {
        instance_free(L.inst);
        return NULL;
    }
    if (prepare(&L) || call_init(&L, host)) {
        instance_free(L.inst);
        return NULL;
    }
    L.inst->loaded_at = (int64_t)time(NULL);
    return L.inst;
}

sophia_instance *sophia_plugin_load(const sophia_conf *c,
                                    const sophia_conf_instance *ci,
                                    const sophia_host *host,
                                    sophia_diag *diag)
{
    return load_one(c, ci, host, NULL, diag);
}

void sophia_plugin_trial_load(const sophia_conf *c,
                              const sophia_conf_instance *ci,
                              const sophia_host *host,
                              const sophia_plugin_set *old, int fd)
{
    sophia_diag diag;
    sophia_diag_init(&diag);
    load_ctx L = {c, ci, &diag, calloc(1, sizeof(sophia_instance)), old};
    if (L.inst && (L.inst->module = xstrdup(ci->plugin ? ci->plugin : "")) &&
        (L.inst->name = xstrdup(ci->name ? ci->name : "")) && !prepare(&L)) {
        /* The parent names the file when the child dies after this. */
        dprintf(fd, "I %s\n", L.inst->file);
        call_init(&L, host);
    }
    /* Nothing is freed: the child _exits right after its last trial. */
    sophia_diag_free(&diag);
}

void sophia_plugin_unload(sophia_instance *inst)
{
    if (!inst)
        return;
    if (inst->release) /* nothing of the host's calls into it after fini */
        inst->release(inst);
    if (inst->desc && inst->desc->fini && inst->state)
        inst->desc->fini(inst->state);
    inst->state = NULL;
    instance_free(inst);
}

/* ---------------------------------------------------------------- sets */

sophia_plugin_set *sophia_plugin_set_load(const sophia_conf *c,
                                          const sophia_host *host,
                                          sophia_diag *diag)
{
    sophia_plugin_set *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    if (c->ninstances &&
        !(set->items = calloc(c->ninstances, sizeof(*set->items)))) {
        free(set);
        return NULL;
    }
    /* Whatever crashes in a child is not loaded here (plugin_probe.c). */
    unsigned char *crashed = c->ninstances ? calloc(c->ninstances, 1) : NULL;
    int bad = sophia_plugin_probe_sync(c, NULL, NULL, host, crashed, diag);
    /* Keep going after a failure: one --check run shows every problem. */
    for (size_t i = 0; i < c->ninstances; i++) {
        if (crashed && crashed[i])
            continue;
        sophia_instance *inst =
            sophia_plugin_load(c, &c->instances[i], host, diag);
        if (inst)
            set->items[set->count++] = inst;
        else
            bad = 1;
    }
    free(crashed);
    if (bad) {
        sophia_plugin_set_free(set);
        return NULL;
    }
    return set;
}

void sophia_plugin_set_free(sophia_plugin_set *set)
{
    if (!set)
        return;
    /* Reverse order: an instance loaded later may rely on earlier ones. */
    for (size_t i = set->count; i > 0; i--)
        sophia_plugin_unload(set->items[i - 1]);
    free(set->items);
    free(set);
}

/* ------------------------------------------------------------- reload */

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int conf_opt_eq(const sophia_conf_opt *a, const sophia_conf_opt *b)
{
    if (!str_eq(a->key, b->key) || !str_eq(a->scalar, b->scalar) ||
        a->is_seq != b->is_seq || a->nitems != b->nitems)
        return 0;
    for (size_t i = 0; i < a->nitems; i++)
        if (!str_eq(a->items[i], b->items[i]))
            return 0;
    return 1;
}

static const sophia_conf_instance *conf_instance(const sophia_conf *c,
                                                 const char *name)
{
    for (size_t i = 0; i < c->ninstances; i++)
        if (str_eq(c->instances[i].name, name))
            return &c->instances[i];
    return NULL;
}

/* Same module resolution, same options, same file on disk. */
static int unchanged(const sophia_conf *c, const sophia_conf_instance *ci,
                     const sophia_conf *oc, const sophia_instance *in)
{
    const sophia_conf_instance *oi = conf_instance(oc, ci->name);
    if (!oi || !str_eq(ci->plugin, oi->plugin) || ci->nopts != oi->nopts ||
        c->nplugin_path != oc->nplugin_path)
        return 0;
    for (size_t i = 0; i < c->nplugin_path; i++)
        if (!str_eq(c->plugin_path[i], oc->plugin_path[i]))
            return 0;
    for (size_t i = 0; i < ci->nopts; i++)
        if (!conf_opt_eq(&ci->opts[i], &oi->opts[i]))
            return 0;
    sophia_instance now = {.file = in->file};
    file_identity(&now);
    return same_identity(&now, in);
}

int sophia_plugin_reusable(const sophia_conf *c,
                           const sophia_conf_instance *ci,
                           const sophia_conf *old_conf,
                           const sophia_plugin_set *old)
{
    sophia_instance *prev = sophia_plugin_set_find(old, ci->name);
    return prev && old_conf && unchanged(c, ci, old_conf, prev);
}

int sophia_plugin_set_has(const sophia_plugin_set *set,
                          const sophia_instance *in)
{
    for (size_t i = 0; set && i < set->count; i++)
        if (set->items[i] == in)
            return 1;
    return 0;
}

/* Frees what `set` holds that `keep` does not. */
static void set_free_except(sophia_plugin_set *set,
                            const sophia_plugin_set *keep)
{
    if (!set)
        return;
    for (size_t i = set->count; i > 0; i--)
        if (!sophia_plugin_set_has(keep, set->items[i - 1]))
            sophia_plugin_unload(set->items[i - 1]);
    free(set->items);
    free(set);
}

sophia_plugin_set *sophia_plugin_set_load_next(const sophia_conf *c,
                                               const sophia_conf *old_conf,
                                               const sophia_plugin_set *old,
                                               const sophia_host *host,
                                               sophia_diag *diag)
{
    sophia_plugin_set *set = calloc(1, sizeof(*set));
    if (!set)
        return NULL;
    if (c->ninstances &&
        !(set->items = calloc(c->ninstances, sizeof(*set->items)))) {
        free(set);
        return NULL;
    }
    int bad = 0;
    for (size_t i = 0; i < c->ninstances; i++) {
        const sophia_conf_instance *ci = &c->instances[i];
        sophia_instance *prev = sophia_plugin_set_find(old, ci->name);
        sophia_instance *inst = NULL;
        if (prev && unchanged(c, ci, old_conf, prev)) {
            inst = prev; /* shared: state kept */
        } else if ((inst = load_one(c, ci, host, old, diag)) && prev) {
            inst->reload_count = prev->reload_count + 1;
        }
        if (inst)
            set->items[set->count++] = inst;
        else
            bad = 1;
    }
    if (bad) {
        set_free_except(set, old);
        return NULL;
    }
    return set;
}

void sophia_plugin_set_retire(sophia_plugin_set *old,
                              const sophia_plugin_set *next)
{
    set_free_except(old, next);
}

sophia_instance *sophia_plugin_set_find(const sophia_plugin_set *set,
                                        const char *name)
{
    for (size_t i = 0; set && name && i < set->count; i++)
        if (strcmp(set->items[i]->name, name) == 0)
            return set->items[i];
    return NULL;
}

/* -------------------------------------------------- write strategies */

void sophia_plugin_plan_put(const sophia_instance *in, const char *key,
                            size_t size, double ttl_s,
                            const char *const *tags, unsigned *sync,
                            unsigned *deferred, unsigned *inval)
{
    const sophia_write_ops *ops = in->desc->write_strategy;
    /* Read only as far as the plugin's table reaches (a 1.0 one ends at
     * flush_params). */
    if (ops->struct_size >= offsetof(sophia_write_ops, plan_put_ex) +
                               sizeof(ops->plan_put_ex) &&
        ops->plan_put_ex) {
        sophia_put_info info = {.struct_size = sizeof(info), .size = size,
                                .ttl_s = ttl_s, .tags = tags};
        ops->plan_put_ex(in->state, key, &info, sync, deferred, inval);
        return;
    }
    ops->plan_put(in->state, key, sync, deferred, inval);
}

/* -------------------------------------------------------------- system */

int sophia_plugin_system_init(void)
{
    return lt_dlinit() == 0 ? 0 : SOPHIA_EIO;
}

void sophia_plugin_system_shutdown(void)
{
    lt_dlexit();
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
