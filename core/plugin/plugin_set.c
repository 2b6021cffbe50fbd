/*
 * plugin_set - the set of live instances built from one configuration,
 * and reload: the next set built next to the running one, sharing every
 * instance whose module, options and file are unchanged. See plugin.h;
 * loading one instance is plugin.c.
 *
 * Loading a whole set first tries every instance in a child process
 * (plugin_probe.c), so a plugin that crashes in its constructor or init()
 * is reported rather than fatal.
 */
#include "plugin/plugin.h"
#include "plugin/plugin_priv.h"
#include "plugin/plugin_probe.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- sets */

/* An empty set with room for every instance `c` declares. */
static sophia_plugin_set *set_alloc(const sophia_conf *c)
{
    sophia_plugin_set *set = calloc(1, sizeof(*set));
    if (set && c->ninstances &&
        !(set->items = calloc(c->ninstances, sizeof(*set->items)))) {
        free(set);
        return NULL;
    }
    return set;
}

sophia_plugin_set *sophia_plugin_set_load(const sophia_conf *c,
                                          const sophia_host *host,
                                          sophia_diag *diag)
{
    sophia_plugin_set *set = set_alloc(c);
    if (!set)
        return NULL;
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

void sophia_plugin_set_free_off_loop(sophia_plugin_set *set, sophia_workers *w)
{
    if (!set)
        return;
    /* Reverse order: an instance loaded later may rely on earlier ones. */
    for (size_t i = set->count; i > 0; i--)
        sophia_plugin_unload_off_loop(set->items[i - 1], w);
    free(set->items);
    free(set);
}

void sophia_plugin_set_free(sophia_plugin_set *set)
{
    sophia_plugin_set_free_off_loop(set, NULL);
}

/* ------------------------------------------------------------- reload */

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int conf_opt_eq(const sophia_conf_opt *a, const sophia_conf_opt *b)
{
    if (!str_eq(a->key, b->key) || !str_eq(a->scalar, b->scalar) ||
        !str_eq(a->json, b->json) ||
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
    plugin_file_identity(&now);
    return plugin_same_identity(&now, in);
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
    sophia_plugin_set *set = set_alloc(c);
    if (!set)
        return NULL;
    int bad = 0;
    for (size_t i = 0; i < c->ninstances; i++) {
        const sophia_conf_instance *ci = &c->instances[i];
        sophia_instance *prev = sophia_plugin_set_find(old, ci->name);
        sophia_instance *inst = NULL;
        if (prev && unchanged(c, ci, old_conf, prev)) {
            inst = prev; /* shared: state kept */
        } else if ((inst = plugin_load_one(c, ci, host, old, diag)) && prev) {
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
