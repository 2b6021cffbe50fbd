/*
 * plugin - loading one instance: finding and opening its module, the ABI
 * and descriptor checks, init(), and unloading it. See plugin.h. Typing
 * its options against the option table is plugin_opts.c; the set of
 * instances and reload are plugin_set.c.
 *
 * Loading one instance is a pipeline of checks, each of which may only
 * trust what the previous one proved:
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
#include "plugin/plugin_priv.h"

#include <errno.h>
#include <limits.h>
#include <ltdl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* ------------------------------------------------------------- helpers */

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

const char *sophia_plugin_kind_name(sophia_plugin_kind kind)
{
    switch (kind) {
    case SOPHIA_KIND_PROCESSOR:
        return "processor";
    case SOPHIA_KIND_WRITE_STRATEGY:
        return "write_strategy";
    case SOPHIA_KIND_CONSOLIDATOR:
        return "consolidator";
    case SOPHIA_KIND_EMBEDDER:
        return "embedder";
    case SOPHIA_KIND_OUTPUT:
        return "output";
    case SOPHIA_KIND_CORRELATOR:
        return "correlator";
    }
    return "unknown";
}

const sophia_correlator_ops *sophia_plugin_correlator(const sophia_plugin *d)
{
    size_t need = offsetof(sophia_plugin, correlator) + sizeof(d->correlator);
    if (!d || d->kind != SOPHIA_KIND_CORRELATOR || d->abi_minor < 2 ||
        d->struct_size < need)
        return NULL;
    return d->correlator;
}

const sophia_embedder_ops *sophia_plugin_embedder(const sophia_plugin *d)
{
    if (d->abi_minor < 2 ||
        d->struct_size < offsetof(sophia_plugin, embedder) + sizeof(void *))
        return NULL;
    return d->embedder;
}

const char *sophia_verdict_name(sophia_verdict v)
{
    switch (v) {
    case SOPHIA_PROCESS_OK:
        return "ok";
    case SOPHIA_PROCESS_DROP:
        return "drop";
    case SOPHIA_PROCESS_RETRY:
        return "retry";
    case SOPHIA_PROCESS_ERROR:
        return "error";
    }
    return "invalid";
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
void plugin_file_identity(sophia_instance *inst)
{
    struct stat sb;
    if (stat(inst->file, &sb) < 0)
        return;
    inst->file_dev = (uint64_t)sb.st_dev;
    inst->file_ino = (uint64_t)sb.st_ino;
    inst->file_mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 +
                          sb.st_mtim.tv_nsec;
}

int plugin_same_identity(const sophia_instance *a, const sophia_instance *b)
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
    if (!holder || plugin_same_identity(holder, inst))
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
    plugin_file_identity(L->inst);
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
    case SOPHIA_KIND_EMBEDDER: {
        /* a 1.2 slot: a plugin built before it cannot be an embedder */
        const sophia_embedder_ops *e = sophia_plugin_embedder(d);
        *size = e ? &e->struct_size : NULL;
        *min = offsetof(sophia_embedder_ops, embed) + sizeof(void *);
        *has_fn = e && e->dimension && e->embed;
        return 0;
    }
    case SOPHIA_KIND_OUTPUT: {
        const sophia_output_ops *o = sophia_plugin_output_ops(d);
        *size = o ? &o->struct_size : NULL;
        *min = offsetof(sophia_output_ops, deliver) + sizeof(void *);
        *has_fn = o && o->deliver;
        return 0;
    }
    case SOPHIA_KIND_CORRELATOR: {
        /* A reserved slot before 1.2: read only when the plugin has it. */
        const sophia_correlator_ops *ops = sophia_plugin_correlator(d);
        *size = ops ? &ops->struct_size : NULL;
        *min = offsetof(sophia_correlator_ops, observe) + sizeof(void *);
        *has_fn = ops && ops->observe;
        return 0;
    }
    }
    return -1;
}

const sophia_output_ops *sophia_plugin_output_ops(const sophia_plugin *d)
{
    /* The slot exists for a plugin built for 1.2 on: an older one has
     * no such kind, and its slot is a reserved zero anyway. */
    if (d->abi_minor < 2 ||
        d->struct_size < offsetof(sophia_plugin, output) + sizeof(void *))
        return NULL;
    return d->output;
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
    return plugin_check_option_table(L) < 0 ? -1 : 0;
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
    plugin_opts_free(inst->opts);
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
    L->inst->opts = plugin_build_opts(L);
    return L->inst->opts ? 0 : -1;
}

sophia_instance *plugin_load_one(const sophia_conf *c,
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
    return plugin_load_one(c, ci, host, NULL, diag);
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
    if (inst->holds > 0) { /* still in use: the last drop unloads it */
        inst->unload_wanted = 1;
        return;
    }
    if (inst->release) /* nothing of the host's calls into it after fini */
        inst->release(inst);
    if (inst->desc && inst->desc->fini && inst->state)
        inst->desc->fini(inst->state);
    inst->state = NULL;
    instance_free(inst);
}

/* The plugin declares its fini safe off the loop (sdk.h). */
static int fini_off_loop(const sophia_instance *inst)
{
    const sophia_plugin *d = inst->desc;
    return d && d->fini && d->abi_minor >= 3 &&
           d->struct_size >= offsetof(sophia_plugin, flags) + sizeof(d->flags) &&
           (d->flags & SOPHIA_PLUGIN_FINI_OFF_LOOP);
}

static void fini_work(void *arg)
{
    sophia_instance *inst = arg;
    inst->desc->fini(inst->state);
    inst->state = NULL;
}

/* Back on the loop: the module is closed here, never on a worker (libltdl
 * is not thread-safe). Cancelled (the pool stopping): fini runs now. */
static void fini_done(void *arg, int cancelled)
{
    (void)cancelled;
    sophia_plugin_unload(arg);
}

void sophia_plugin_unload_off_loop(sophia_instance *inst, sophia_workers *w)
{
    if (!inst)
        return;
    if (!w || inst->holds > 0 || !inst->state || !fini_off_loop(inst)) {
        sophia_plugin_unload(inst);
        return;
    }
    if (inst->release) /* no timer, read or output of it runs from here */
        inst->release(inst);
    if (sophia_workers_submit(w, fini_work, fini_done, inst) != 0)
        sophia_plugin_unload(inst);
}

void sophia_plugin_hold(sophia_instance *inst)
{
    if (inst)
        inst->holds++;
}

void sophia_plugin_drop(sophia_instance *inst)
{
    if (inst && --inst->holds == 0 && inst->unload_wanted)
        sophia_plugin_unload(inst);
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