/*
 * plugin - loading `.so` plugins with libltdl, checking their ABI,
 * validating their YAML options against their option table, and keeping
 * the set of live instances.
 *
 * A plugin module may back several instances (e.g. two `metrics`
 * processors with different options); each instance has its own options
 * and state, and its own libltdl handle (libltdl reference-counts the
 * module, so the last close unloads it).
 *
 * The instance struct is the `sophia_self` handle the SDK hands to a
 * plugin's init(): plugins see it as opaque, the core reads it directly.
 */
#ifndef SOPHIA_PLUGIN_H
#define SOPHIA_PLUGIN_H

#include <stdint.h>
#include <sophia/sdk.h>

#include "conf/config.h"
#include "event/worker.h"
#include "lib/diag.h"

struct sophia_self {
    char *name;     /* instance name from YAML */
    char *module;   /* module name from YAML (`plugin:`) */
    char *file;     /* resolved path of the .so */
    void *handle;   /* lt_dlhandle */
    const sophia_plugin *desc;
    sophia_opts *opts;
    void *state;    /* what init() returned */
    void *running;  /* the sophia_ctx whose callback runs now (host.h) */
    int64_t loaded_at;      /* unix seconds */
    unsigned reload_count;
    /* identity of `file` when loaded: a reload reloads it when changed */
    uint64_t file_dev, file_ino;
    int64_t file_mtime_ns;
    /* The table init() was given: the host finds its runtime from it
     * (host.h), so what a plugin calls acts on that runtime's state. */
    const sophia_host *host;
    /* Set by the host while it holds something for this instance (SDK
     * 1.1 timers, reads it owns): runs before the instance's code goes
     * (before fini, or when a failed load frees it), so nothing calls
     * into it afterwards. It may run more than once. */
    void (*release)(struct sophia_self *inst);
    /* sophia_plugin_hold's count (loop thread): an unload while it is
     * above 0 only sets unload_wanted, and the last drop unloads. */
    unsigned holds;
    int unload_wanted;
};
typedef struct sophia_self sophia_instance;

/* A set of instances, built from a configuration as a whole. */
typedef struct sophia_plugin_set {
    sophia_instance **items;
    size_t count;
} sophia_plugin_set;

/* lt_dlinit / lt_dlexit; call once per process. */
int sophia_plugin_system_init(void);
void sophia_plugin_system_shutdown(void);

/* Loads, ABI-checks, validates options, and init()s one instance. On any
 * problem adds `FILE:LINE:COL: message` lines (positions from the YAML) to
 * `diag` and returns NULL, leaving nothing loaded. */
sophia_instance *sophia_plugin_load(const sophia_conf *c,
                                    const sophia_conf_instance *ci,
                                    const sophia_host *host,
                                    sophia_diag *diag);

/* For the probe child (plugin_probe.c): loads `ci` as a reload next to
 * `old` would and calls init(), writing "I <file>\n" to `fd` just before
 * init. Reports nothing and frees nothing: the child exits after it. */
void sophia_plugin_trial_load(const sophia_conf *c,
                              const sophia_conf_instance *ci,
                              const sophia_host *host,
                              const sophia_plugin_set *old, int fd);

/* 1 when a reload from `old_conf`/`old` to `c` would share instance `ci`
 * with the running set (same module, options and file), 0 when it loads
 * it fresh. */
int sophia_plugin_reusable(const sophia_conf *c,
                           const sophia_conf_instance *ci,
                           const sophia_conf *old_conf,
                           const sophia_plugin_set *old);

/* fini() then lt_dlclose(). NULL is fine. Deferred while held. */
void sophia_plugin_unload(sophia_instance *inst);
/* As sophia_plugin_unload, but the fini of a plugin that allows it
 * (SOPHIA_PLUGIN_FINI_OFF_LOOP) runs on a thread of `w`, and the module
 * is closed back on the loop: a reload retiring a large state does not
 * stall the loop. Held instances, other plugins and w NULL unload now. */
void sophia_plugin_unload_off_loop(sophia_instance *inst, sophia_workers *w);
/* Keeps `inst` loaded past its set's retirement (a reload), for a user
 * that must finish with it first: the memory store's old embedder serves
 * searches until the store is re-embedded with the new one. Each hold
 * is ended by one drop; the drop that ends the last hold of a retired
 * instance unloads it. Loop thread. NULL is fine. */
void sophia_plugin_hold(sophia_instance *inst);
void sophia_plugin_drop(sophia_instance *inst);

/* Every instance of `c`; on any problem the whole set is unloaded and
 * NULL returned (each problem in diag). Every instance is first tried in
 * a child process (plugin_probe.h), so one that crashes or hangs in init
 * is reported instead of taking the caller down. */
sophia_plugin_set *sophia_plugin_set_load(const sophia_conf *c,
                                          const sophia_host *host,
                                          sophia_diag *diag);
void sophia_plugin_set_free(sophia_plugin_set *set);
/* The same, each instance through sophia_plugin_unload_off_loop. */
void sophia_plugin_set_free_off_loop(sophia_plugin_set *set, sophia_workers *w);

/* Reload: builds the set of `c` next to the running `old` set (built from
 * `old_conf`) without touching it. An instance whose name, module, plugin
 * path, options and module file (device, inode, mtime) are unchanged is
 * shared with `old` (same object, state kept); every other one is loaded
 * and init()ed fresh (reload_count = old one's + 1). A rebuilt module that
 * is still open in `old` is loaded through a private copy, since dlopen
 * would hand back the old mapping for the same path. NULL on any problem
 * (in diag); then nothing of `old` was touched. */
sophia_plugin_set *sophia_plugin_set_load_next(const sophia_conf *c,
                                               const sophia_conf *old_conf,
                                               const sophia_plugin_set *old,
                                               const sophia_host *host,
                                               sophia_diag *diag);
/* After a successful load_next: frees what of `old` is not shared with
 * `next` (fini + close). */
void sophia_plugin_set_retire(sophia_plugin_set *old,
                              const sophia_plugin_set *next);
/* 1 when `in` is (shared) in `set`. */
int sophia_plugin_set_has(const sophia_plugin_set *set,
                          const sophia_instance *in);
sophia_instance *sophia_plugin_set_find(const sophia_plugin_set *set,
                                        const char *name);

const char *sophia_plugin_kind_name(sophia_plugin_kind kind);
/* An embedder's ops (SDK 1.2 slot), or NULL when the descriptor predates
 * it or has none. */
const sophia_embedder_ops *sophia_plugin_embedder(const sophia_plugin *d);
/* An output plugin's ops (SDK 1.2's first descriptor slot), or NULL when
 * the descriptor is older or has none. */
const sophia_output_ops *sophia_plugin_output_ops(const sophia_plugin *d);
/* A correlator's ops (SDK 1.2), or NULL for any other descriptor or one
 * built before its slot existed. */
const sophia_correlator_ops *sophia_plugin_correlator(const sophia_plugin *d);
/* "ok", "drop", "retry", "error": a processor verdict as printed by
 * sophia-plugin-test and a replay's dry run. */
const char *sophia_verdict_name(sophia_verdict v);

/* A write strategy's plan for one put of `size` bytes: its plan_put_ex
 * (SDK 1.1) with the size, ttl and tags when its ops table has one, else
 * its plan_put. The cache's one call into a strategy's planning. */
void sophia_plugin_plan_put(const sophia_instance *in, const char *key,
                            size_t size, double ttl_s,
                            const char *const *tags, unsigned *sync,
                            unsigned *deferred, unsigned *inval);

/* Option getters behind sophia_host.opt_* (names must be in the table;
 * an unknown name returns the zero value). */
const char *sophia_opts_string(const sophia_opts *o, const char *name);
int64_t sophia_opts_int(const sophia_opts *o, const char *name);
double sophia_opts_double(const sophia_opts *o, const char *name);
int sophia_opts_bool(const sophia_opts *o, const char *name);
size_t sophia_opts_list_len(const sophia_opts *o, const char *name);
const char *sophia_opts_list_item(const sophia_opts *o, const char *name,
                                  size_t i);

/* Prints an instance's option table (name, type, default, description)
 * for `--check`. */
void sophia_plugin_print_options(const sophia_instance *inst, FILE *out);

#endif
